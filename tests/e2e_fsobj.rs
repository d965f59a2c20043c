//! End-to-end tests of file-system objects held by descriptors: FIFOs (named pipes)
//! shared by the processes of a tree with data in flight, file locks (flock, POSIX and
//! OFD record locks) taken again at restore, O_PATH descriptors, inotify watches. Each
//! run is dumped mid-way and restored, and its whole output compared byte for byte with
//! an uninterrupted run's; refusals are checked to leave nothing behind.
//!
//! The targets are `tests/targets/{fifo,locks,opath,inotify}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Length of a byte string of `inspect --json` (an array of numbers, or a string).
fn json_bytes_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::String(s) => s.len(),
        _ => 0,
    }
}

/// A fresh directory for one run of a target (outside the test directory when it must
/// survive the test's own listing checks).
fn run_dir(ctx: &Ctx, sub: &str) -> PathBuf {
    let d = ctx.path(sub);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

/// Start `spec` and wait for `k` lines, with its tree (`n` processes); dump it (which
/// kills it) and return (image, pids, output before the dump).
fn dump_tree(
    ctx: &Ctx,
    spec: &Spec,
    k: usize,
    n: usize,
    tag: &str,
) -> (PathBuf, Vec<i32>, Vec<u8>) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pids = wait_process_tree(t.pid, n, tag);
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&pids, tag);
    (img, pids, before)
}

/// `ckpt restore IMG` must exit 1 mentioning one of `words` and leave no process of
/// `pids` and no stray child (but those in `except`, e.g. a reference run); `ckpt check
/// IMG` must refuse with one of `words` too.
fn assert_refused(ctx: &Ctx, img: &Path, pids: &[i32], except: &[i32], words: &[&str], what: &str) {
    ctx.check(img).assert_fails(1).assert_stderr_mentions(words);
    let r = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1).assert_stderr_mentions(words);
    for &p in pids {
        assert_no_process(p, what);
    }
    let strays = stray_children(except);
    assert!(
        strays.is_empty(),
        "{what}: failed restore left processes behind: {strays:?}"
    );
}

// ---------------------------------------------------------------------------------------
// FIFOs

#[test]
fn fifo_between_two_processes_keeps_data_in_flight_and_capacity() {
    let ctx = Ctx::new("fifo_between_two_processes_keeps_data_in_flight_and_capacity");
    const STEPS: u32 = 60;
    const AHEAD: u32 = 6;
    let spec_in = |d: &Path| {
        Spec::new(target("fifo"))
            .arg(STEPS.to_string())
            .arg(AHEAD.to_string())
            .arg(d)
            .arg("sleep=15")
    };
    let rdir = run_dir(&ctx, "ref");
    let dir = run_dir(&ctx, "run");
    let mut rp = ctx.spawn(&spec_in(&rdir));
    let (img, pids, before) = dump_tree(&ctx, &spec_in(&dir), 10, 2, "fifo");
    assert_has_kinds(&ctx, &img, &["Fifo"], "fifo");
    let j = ctx.inspect_json(&img);
    let fifos = j["fifos"]
        .as_array()
        .unwrap_or_else(|| panic!("fifo: no fifos array in the image: {j}"));
    assert_eq!(
        fifos.len(),
        1,
        "fifo: one FIFO shared by the tree: {fifos:?}"
    );
    assert_eq!(fifos[0]["capacity"], 16384, "fifo: capacity in the image");
    let buffered = json_bytes_len(&fifos[0]["data"]);
    assert!(
        buffered >= 32 * 2 && buffered % 32 == 0,
        "fifo: whole records should be in flight at the dump; the image holds {buffered} bytes"
    );

    // The FIFO must exist, as a FIFO, at restore: moved away, then a regular file in its
    // place, restore is refused (by plan, naming it) and leaves nothing behind.
    let chan = dir.join("chan");
    let aside = dir.join("chan.aside");
    fs::rename(&chan, &aside).expect("move the FIFO away");
    assert_refused(&ctx, &img, &pids, &[rp.pid], &["chan"], "fifo missing");
    fs::write(&chan, b"not a fifo").expect("write a regular file");
    assert_refused(
        &ctx,
        &img,
        &pids,
        &[rp.pid],
        &["chan"],
        "fifo replaced by a file",
    );
    fs::remove_file(&chan).expect("remove the regular file");
    fs::rename(&aside, &chan).expect("put the FIFO back");
    // A FIFO that someone else has open now would be shared with them: refused too.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _other = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&chan)
            .expect("open the FIFO from outside");
        assert_refused(
            &ctx,
            &img,
            &pids,
            &[rp.pid],
            &["chan"],
            "fifo open by another process",
        );
    }
    // A restore failing once the data is back in the FIFO (at the first reopen through
    // the holder) leaves it unused and empty: the next one works.
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "open /proc/", &pids, &[rp.pid]);

    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "fifo: reference run");
    assert_tree_finished_like_reference("fifo", &reference.stdout, before, &fin, &pids);
}

// ---------------------------------------------------------------------------------------
// File locks

/// `fcntl(fd, cmd, {type, SEEK_SET, start, len})`; returns the struct (for F_GETLK) or
/// the error.
fn fcntl_lock(
    f: &fs::File,
    cmd: i32,
    typ: i32,
    start: i64,
    len: i64,
) -> std::io::Result<libc::flock> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: zeroed plain-data struct, filled in below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fcntl with a valid descriptor and a pointer to a live flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl)
}

/// flock(LOCK_EX|LOCK_NB) on a fresh description of `path`: Ok(file holding the lock)
/// or the error (EWOULDBLOCK when someone holds a lock on it).
fn try_flock(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

#[test]
fn file_locks_are_taken_again_at_restore_and_a_lock_taken_meanwhile_refuses_it() {
    let ctx =
        Ctx::new("file_locks_are_taken_again_at_restore_and_a_lock_taken_meanwhile_refuses_it");
    const STEPS: u32 = 60;
    let setup = |sub: &str| {
        let d = run_dir(&ctx, sub);
        write_pattern_file(&d.join("locked.dat"), 1000, 7);
        d
    };
    let spec_in = |d: &Path| {
        Spec::new(target("locks"))
            .arg(d)
            .arg(STEPS.to_string())
            .arg("sleep=15")
    };
    let rdir = setup("ref");
    let dir = setup("run");
    let file = dir.join("locked.dat");
    let mut rp = ctx.spawn(&spec_in(&rdir));
    let (img, pids, before) = dump_tree(&ctx, &spec_in(&dir), 6, 2, "locks");
    assert!(
        text(&before).contains("0 W:self; 99 W:self; 100 W:ofd"),
        "locks: the original should see its locks:\n{}",
        text(&before)
    );
    // The image records each kind of lock.
    let j = ctx.inspect_json(&img);
    let mut kinds = Vec::new();
    for p in j["processes"].as_array().expect("processes") {
        for fd in p["fds"].as_array().expect("fds") {
            for l in fd["locks"].as_array().cloned().unwrap_or_default() {
                kinds.push(l["kind"].as_str().unwrap_or("?").to_string());
            }
        }
    }
    for k in ["Flock", "Posix", "Ofd"] {
        assert!(
            kinds.iter().any(|x| x == k),
            "locks: no {k} lock in the image: {kinds:?}"
        );
    }
    // Nothing holds them while the tree is gone.
    drop(try_flock(&file).expect("the file is unlocked while the tree is gone"));

    // 1. Someone else took the flock meanwhile: refused, nothing left behind.
    {
        let _held = try_flock(&file).expect("take the flock from outside");
        assert_refused(&ctx, &img, &pids, &[rp.pid], &["lock"], "flock taken");
    }
    // 2. Someone else holds a POSIX read lock inside the child's write-locked range.
    {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .expect("open the locked file");
        fcntl_lock(&f, libc::F_SETLK, libc::F_RDLCK, 160, 10).expect("take a POSIX lock");
        assert_refused(&ctx, &img, &pids, &[rp.pid], &["lock"], "POSIX range taken");
    }

    // 3. A restore failing after some locks were taken again releases them.
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take the OFD", &pids, &[rp.pid]);
    drop(try_flock(&file).expect("the flock is free after the failed restore"));

    // 4. Free again: restore takes every lock back, in the right processes.
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(2);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("open the locked file");
    for (at, typ, pid) in [
        (50, libc::F_WRLCK, pids[0]),
        (170, libc::F_WRLCK, pids[1]),
        (500, libc::F_RDLCK, pids[0]),
    ] {
        let fl = fcntl_lock(&f, libc::F_GETLK, libc::F_WRLCK, at, 1).expect("F_GETLK");
        assert_eq!(
            (i32::from(fl.l_type), fl.l_pid),
            (typ, pid),
            "locks: F_GETLK at byte {at} after restore"
        );
    }
    let fl = fcntl_lock(&f, libc::F_OFD_GETLK, libc::F_WRLCK, 120, 1).expect("F_OFD_GETLK");
    assert_eq!(
        (i32::from(fl.l_type), fl.l_pid),
        (libc::F_WRLCK, -1),
        "locks: the OFD lock at byte 120 after restore"
    );
    let e = try_flock(&file).expect_err("the flock is held again after restore");
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "flock: {e}");
    let e = try_flock(&dir).expect_err("the directory's flock is held again after restore");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EWOULDBLOCK),
        "flock on the dir: {e}"
    );
    drop(f);

    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "locks: reference run");
    assert_tree_finished_like_reference("locks", &reference.stdout, before, &fin, &pids);
}

/// A process waiting for a lock is not a lock holder: the freeze interrupts its flock(2)
/// (the kernel takes it off the lock's wait list), and after restore the call is made
/// again and waits on. It gets the lock once the outside holder lets go.
#[test]
fn a_process_waiting_for_a_file_lock_waits_again_after_restore() {
    let ctx = Ctx::new("a_process_waiting_for_a_file_lock_waits_again_after_restore");
    let file = ctx.path("wanted.lock");
    fs::write(&file, b"").expect("create the lock file");
    let held = try_flock(&file).expect("take the flock");
    // flock(1) from util-linux waits in flock(2), then runs echo once it has the lock.
    let mut t = ctx.spawn(
        &Spec::new("flock")
            .arg(&file)
            .arg("echo")
            .arg("got the lock"),
    );
    let pid = t.pid;
    wait_in_syscall(pid, libc::SYS_flock, "flock(1) waiting");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("flock(1): original");
    assert!(before.is_empty(), "flock(1) printed before it had the lock");
    wait_pids_gone(&[pid], "flock(1)");

    let mut r = ctx.restore(&img, &[], In::Null);
    wait_in_syscall(pid, libc::SYS_flock, "restored flock(1) waiting again");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        r.stdout.bytes().is_empty(),
        "restored flock(1) went on while the lock was still held"
    );
    drop(held);
    let fin = r.finish();
    assert_eq!(
        text(&fin.stdout),
        "got the lock\n",
        "flock(1) gets its lock in the end"
    );
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
    assert_no_process(pid, "flock(1)");
}

// ---------------------------------------------------------------------------------------
// O_PATH descriptors

#[test]
fn o_path_descriptors_on_a_file_and_a_directory_work_after_restore() {
    let ctx = Ctx::new("o_path_descriptors_on_a_file_and_a_directory_work_after_restore");
    const STEPS: u32 = 40;
    let setup = |sub: &str| {
        let d = run_dir(&ctx, sub);
        fs::write(d.join("data.txt"), b"data of the O_PATH file\n").expect("data.txt");
        fs::create_dir(d.join("sub")).expect("mkdir sub");
        fs::write(d.join("sub/inner.txt"), b"inner file\n").expect("inner.txt");
        d
    };
    let spec_in = |d: &Path| {
        Spec::new(target("opath"))
            .arg(d)
            .arg(STEPS.to_string())
            .arg("sleep=10")
    };
    let rdir = setup("ref");
    let dir = setup("run");
    let mut rp = ctx.spawn(&spec_in(&rdir));
    let (img, pids, before) = dump_tree(&ctx, &spec_in(&dir), 5, 1, "opath");
    assert_has_kinds(&ctx, &img, &["File", "Dir"], "opath");
    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "opath: reference run");
    assert_tree_finished_like_reference("opath", &reference.stdout, before, &fin, &pids);
}

// ---------------------------------------------------------------------------------------
// inotify

/// The watches of inotify descriptor `fd` of `pid` as fdinfo shows them: (wd, mask),
/// in wd order (fdinfo lists the newest first).
fn inotify_watches(pid: i32, fd: i32) -> Vec<(String, String)> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("fdinfo of {pid}/{fd}: {e}"));
    let mut v: Vec<(String, String)> = info
        .lines()
        .filter(|l| l.starts_with("inotify "))
        .map(|l| {
            let get = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            (get("wd:"), get("mask:"))
        })
        .collect();
    v.sort_by_key(|w| i64::from_str_radix(&w.0, 16).unwrap_or(-1));
    v
}

#[test]
fn inotify_watches_keep_their_numbers_and_events_after_restore() {
    let ctx = Ctx::new("inotify_watches_keep_their_numbers_and_events_after_restore");
    const STEPS: u32 = 24;
    let spec_in = |d: &Path| {
        Spec::new(target("inotify"))
            .arg(d)
            .arg(STEPS.to_string())
            .arg("sleep=60")
    };
    let rdir = run_dir(&ctx, "ref");
    let dir = run_dir(&ctx, "run");
    let mut rp = ctx.spawn(&spec_in(&rdir));
    let mut t = ctx.spawn(&spec_in(&dir));
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let before_watches = inotify_watches(pid, 3);
    assert_eq!(
        before_watches
            .iter()
            .map(|w| w.0.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "4"],
        "inotify: watches of the original"
    );
    // Dump while it sleeps with no event queued (an instance with unread events is
    // refused, which leaves it running: then try again at its next sleep).
    let img = ctx.path("inotify.img");
    let mut dumped = false;
    for _ in 0..10 {
        wait_in_any_syscall(
            pid,
            &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep],
            "inotify target asleep",
        );
        let r = ctx.try_dump(pid, &img);
        if r.code() == Some(0) {
            dumped = true;
            break;
        }
        r.assert_fails(1).assert_stderr_mentions(&["not read yet"]);
        assert_running_untraced(pid, "inotify target after a refused dump");
    }
    assert!(dumped, "inotify: never dumped with an empty event queue");
    t.expect_killed();
    let before = t.stdout.finish("inotify: original");
    wait_pids_gone(&[pid], "inotify");
    assert_has_kinds(&ctx, &img, &["Inotify"], "inotify");
    assert!(
        !text(&before).contains("new watch"),
        "inotify: dumped too late:\n{}",
        text(&before)
    );

    // A watched directory gone: restore refused, naming it.
    let d = dir.join("d");
    let aside = dir.join("d.aside");
    fs::rename(&d, &aside).expect("move d away");
    assert_refused(
        &ctx,
        &img,
        &[pid],
        &[rp.pid],
        &["d: it does not exist", "/d"],
        "watched dir gone",
    );
    fs::rename(&aside, &d).expect("put d back");
    // Failing while a watch number is being skipped leaves nothing behind.
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "inotify_rm_watch", &[pid], &[rp.pid]);

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_eq!(
        inotify_watches(pid, 3),
        before_watches,
        "inotify: the restored instance's watches (numbers and masks)"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "inotify: reference run");
    assert!(
        text(&reference.stdout).contains("new watch on e: wd 5\n"),
        "inotify: reference output"
    );
    assert_tree_finished_like_reference("inotify", &reference.stdout, before, &fin, &[pid]);
}
