//! Pipes (issues 13 and 14): pipes whose other end every process closed (kept, with
//! their data: reads give it and then end of file, writes EPIPE and SIGPIPE), a pipe end
//! opened a second time through /proc/self/fd (a description of its own, with its own
//! flags), a pipe whose other end a process outside the tree holds (refused, saying so,
//! and accepted once that end is closed), and a real `make -j2` dumped mid-build.
//! Every restore is compared with the original by the state oracle (`Ctx::dump` /
//! `Ctx::restore`) and by the program's own behaviour.
//!
//! Needs root (ptrace, restoring PIDs, pidfd_getfd). Run with cargo-nextest, one process
//! per test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// The lines of `out` that start with `prefix`.
fn lines_with(out: &str, prefix: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The `halfpipe` target: its pipes A (read end, writer closed, data queued) and B (write
/// end, reader closed, data queued), and C with a second description of each end, in a
/// parent and its child. Dumped at rest, restored; the restored program's descriptor
/// flags and its reads and writes (data then EOF; EPIPE with SIGPIPE; the second
/// description non-blocking, the first blocking) are those of an uninterrupted run.
#[test]
fn pipes_closed_at_one_end_and_second_descriptions_survive_restore() {
    let name = "pipes_closed_at_one_end_and_second_descriptions_survive_restore";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("halfpipe")).stdin(In::Pipe);

    let mut reference = ctx.spawn(&spec);
    reference.wait_for("ready\n");
    reference.write_stdin(b"flags\ncheck\nexit\n");
    let reference = reference.finish();
    assert_eq!(reference.status.code(), Some(0), "halfpipe: reference run");
    let want = text(&reference.stdout);
    assert!(
        want.contains("A: queued without a writer\neof\n")
            && want.contains("B: write=-1 errno=Broken pipe sigpipe=1\n")
            && want.contains("C via 14 again: -1 Resource temporarily unavailable\n"),
        "halfpipe: the reference run does not behave as the test expects:\n{want}"
    );

    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let tree = wait_process_tree(pid, 2, "halfpipe and its child");
    t.write_stdin(b"flags\n");
    t.wait_lines(9);
    let img = ctx.path("halfpipe.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("halfpipe: original");
    wait_pids_gone(&tree, name);

    // Both half-closed pipes are in the image as pipes (not refused, not connected to
    // ckpt's own descriptors), with their data, and inspect says which end is gone.
    let j = ctx.inspect_json(&img);
    let fds = j["processes"][0]["fds"].as_array().expect("fds").clone();
    for n in [8, 9, 10, 11, 12, 13, 14, 15] {
        let f = fds
            .iter()
            .find(|f| f["fd"] == n)
            .unwrap_or_else(|| panic!("halfpipe: no descriptor {n} in the image: {j}"));
        assert!(
            f["kind"]["Pipe"].is_object(),
            "halfpipe: descriptor {n} should be a pipe end: {f}"
        );
    }
    let shown = ctx.ckpt(&[OsStr::new("inspect"), img.as_os_str()]);
    shown.assert_ok();
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("no writer: end of file after them")
            && shown.contains("no reader: writes fail with EPIPE"),
        "halfpipe: inspect should say which pipe lost its other end:\n{shown}"
    );

    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"flags\ncheck\nexit\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "halfpipe: restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = text(&[before, fin.stdout].concat());
    // the flags before the dump, after it, and the behaviour after it
    let flags = lines_with(&want, "flags:");
    assert_eq!(
        lines_with(&got, "flags:"),
        [flags.clone(), flags].concat(),
        "halfpipe: descriptor flags before and after restore"
    );
    for p in ["A:", "B:", "C via"] {
        assert_eq!(
            lines_with(&got, p),
            lines_with(&want, p),
            "halfpipe: what {p} does after restore\n{got}"
        );
    }
    for p in tree {
        assert_no_process(p, name);
    }
}

/// A pipe whose write end the test holds (outside the tree) is refused at dump, saying
/// the other end is held outside, and so is a pipe whose both ends the tree holds while
/// the test holds one too (restore would give the tree a pipe the test no longer
/// shares); the process runs on. Once the test closes its ends, the first pipe (no
/// writer left) is dumped and restored with its data.
#[test]
fn pipe_held_outside_is_refused_and_accepted_once_closed() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let name = "pipe_held_outside_is_refused_and_accepted_once_closed";
    let ctx = Ctx::new(name);
    // (numbers above those the target uses)
    let high = |fd: std::os::fd::OwnedFd| rustix::io::fcntl_dupfd_cloexec(&fd, 40).expect("dup");
    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe2");
    let (r, w) = pipe();
    let (r, w) = (high(r), high(w));
    let mut w = fs::File::from(w);
    w.write_all(b"sent from outside\n").expect("write the pipe");
    let (r2, w2) = pipe();
    let (r2, w2) = (high(r2), high(w2));
    let fd = r.as_raw_fd();
    let spec = Spec::new(target("halfpipe"))
        .stdin(In::Pipe)
        .keep_fd(fd)
        .keep_fd(r2.as_raw_fd())
        .keep_fd(w2.as_raw_fd());
    let mut t = ctx.spawn(&spec);
    drop(r);
    drop(r2);
    t.wait_for("ready\n");
    let pid = t.pid;
    let tree = wait_process_tree(pid, 2, "halfpipe and its child");
    let img = ctx.path("outside.img");
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&[
            "is an end of a pipe",
            &format!(
                "that process {} outside the dumped tree holds open too",
                std::process::id()
            ),
        ]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(pid, "halfpipe after a refused dump");
    drop(w2);
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&[
            &format!("file descriptor {fd} is the read end of a pipe"),
            "write end is held by a process outside the dumped tree",
        ]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(pid, "halfpipe after a refused dump");

    drop(w);
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"exit\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    // (the data the test sent is still there for the restored process: the oracle
    // compared the pipe's queue; its descriptor is a pipe in the image)
    let j = ctx.inspect_json(&img);
    let f = j["processes"][0]["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .find(|f| f["fd"] == fd)
        .cloned()
        .unwrap_or_default();
    assert!(
        f["kind"]["Pipe"].is_object(),
        "{name}: descriptor {fd}: {f}"
    );
    let pipe_id = f["kind"]["Pipe"]["id"].clone();
    let pipe = j["pipes"]
        .as_array()
        .expect("pipes")
        .iter()
        .find(|p| p["id"] == pipe_id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        pipe["data"].as_array().map(Vec::len),
        Some("sent from outside\n".len()),
        "{name}: the data queued in the pipe is in the image: {pipe}"
    );
}

/// A process of user 65534 (run through `setpriv`) with pipes, a unix socket pair and a
/// UDP socket: the restored ones belong to that user as the originals did (the state
/// oracle compares each descriptor's `fstat` owner), not to root who restored them.
#[test]
fn pipes_and_sockets_of_another_user_keep_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let name = "pipes_and_sockets_of_another_user_keep_their_owner";
    let ctx = Ctx::new(name);
    let ok = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "setpriv not found (apt-get install util-linux)");
    // a copy user 65534 can run (the build directory may not let it)
    let public = std::env::temp_dir().join(format!("ckpt-e2e-{name}-{}", std::process::id()));
    fs::create_dir_all(&public).expect("mkdir");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = public.join("halfpipe");
    fs::copy(target("halfpipe"), &bin).expect("copy halfpipe");
    let spec = ["--reuid", "65534", "--regid", "65534", "--clear-groups"]
        .iter()
        .fold(Spec::new("setpriv"), |s, a| s.arg(a))
        .arg(&bin)
        .arg("sockets")
        .stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let tree = wait_process_tree(pid, 2, "halfpipe and its child");
    let owner = |fd: i32| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{pid}/fd/{fd}")).map(|m| (m.uid(), m.gid()))
    };
    for fd in [10, 16, 18] {
        assert_eq!(
            owner(fd).ok(),
            Some((65534, 65534)),
            "{name}: descriptor {fd} of the original"
        );
    }
    let img = ctx.path("owner.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    // (the oracle compared the owners once the tree ran)
    for fd in [10, 11, 12, 15, 16, 17, 18] {
        assert_eq!(
            owner(fd).ok(),
            Some((65534, 65534)),
            "{name}: descriptor {fd} of the restored process"
        );
    }
    r.write_stdin(b"exit\n");
    let fin = r.finish();
    let _ = fs::remove_dir_all(&public);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: restored run; stderr:\n{}",
        text(&fin.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// make -j2

/// GNU make, wherever PATH has it; a clear failure when it is missing.
fn make() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("make"))
        .find(|p| p.is_file())
        .expect("make not found in PATH (apt-get install make)")
}

/// A small project: four targets that each sleep a little and write a file, and one
/// that joins them.
fn write_project(dir: &Path) {
    fs::create_dir_all(dir).expect("project dir");
    let mut mk = String::from("all: out.txt\n\n");
    let parts = ["p1", "p2", "p3", "p4"];
    mk += &format!(
        "out.txt: {}\n\tcat $^ > $@\n\n",
        parts.map(|p| format!("{p}.part")).join(" ")
    );
    for (i, p) in parts.iter().enumerate() {
        mk += &format!(
            "{p}.part:\n\tsleep 1.{}; echo {p} built > $@\n\n",
            2 * (i % 2)
        );
    }
    fs::write(dir.join("Makefile"), mk).expect("write Makefile");
}

/// Every file of `dir` with its contents.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("read project dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read a built file"),
            )
        })
        .collect();
    v.sort();
    v
}

/// `make -j2` of a small project is dumped while two jobs run (make's second job has
/// make's dummy stdin: a pipe whose write end make closed, which make holds too), and
/// restored: the build finishes and leaves exactly the files of an undisturbed build.
#[test]
fn make_j2_dumped_mid_build_finishes_after_restore() {
    let name = "make_j2_dumped_mid_build_finishes_after_restore";
    let ctx = Ctx::new(name);
    let make = make();
    let (ref_dir, run_dir) = (ctx.path("reference"), ctx.path("run"));
    write_project(&ref_dir);
    write_project(&run_dir);
    let spec = |dir: &Path| Spec::new(&make).arg("-s").arg("-j2").cwd(dir);

    let reference = ctx.reference(&spec(&ref_dir));
    assert_eq!(
        reference.status.code(),
        Some(0),
        "make: reference build; stderr:\n{}",
        text(&reference.stderr)
    );

    let mut t = ctx.spawn(&spec(&run_dir));
    let pid = t.pid;
    // make, two shells and their two sleeps
    let tree = wait_process_tree(pid, 5, "make -j2 with two jobs");
    let stdin_pipes = tree
        .iter()
        .filter(|&&p| {
            fs::read_link(format!("/proc/{p}/fd/0"))
                .is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"))
        })
        .count();
    assert!(
        stdin_pipes > 0,
        "make: no job has make's dummy stdin pipe (the case under test)"
    );
    let img = ctx.path("make.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    assert!(
        !run_dir.join("out.txt").exists(),
        "make: the build finished before the dump; the test proves nothing"
    );

    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "make: the restored build's exit; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        files_of(&run_dir),
        files_of(&ref_dir),
        "make: the restored build's files against an undisturbed build's"
    );
    for p in tree {
        assert_no_process(p, name);
    }
}

use std::ffi::OsStr;
