//! The image file: mode 0600 whatever the umask, no name until it is complete (a dump
//! killed at any moment leaves nothing next to the output), and what `-o` does to an
//! existing file or symlink (replaces it, never follows it).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A directory's entries, sorted.
fn entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `ckpt dump --leave-running` under umask 000 writes a 0600 image, in a directory
/// where only the image appears.
#[test]
fn image_is_0600_whatever_the_umask() {
    let ctx = Ctx::new("image_is_0600_whatever_the_umask");
    let out = ctx.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut p = ctx.spawn(&counter_spec(&ctx, "counter-static", 40, &["sleep=50"]));
    p.wait_lines(2);
    let img = out.join("img");
    let st = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" dump \"$1\" -o \"$2\" --leave-running")
        .arg(ckpt_bin())
        .arg(p.pid.to_string())
        .arg(&img)
        .stdin(Stdio::null())
        .output()
        .expect("run ckpt dump");
    assert!(st.status.success(), "dump: {}", text(&st.stderr));
    let m = fs::metadata(&img).expect("stat image");
    assert_eq!(m.mode() & 0o7777, 0o600, "image mode");
    assert_eq!(entries(&out), ["img"]);
    p.kill();
}

/// `-o` naming a symlink replaces the symlink itself: the file it pointed to keeps its
/// contents, and an existing image is replaced whole.
#[test]
fn output_replaces_a_symlink_or_file_never_follows_it() {
    let ctx = Ctx::new("output_replaces_a_symlink_or_file_never_follows_it");
    let mut p = ctx.spawn(&counter_spec(&ctx, "counter-static", 40, &["sleep=50"]));
    p.wait_lines(2);
    let victim = ctx.path("victim");
    fs::write(&victim, b"precious").expect("write victim");
    let link = ctx.path("img");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    ctx.dump_leave_running(p.pid, &link);
    assert_eq!(fs::read(&victim).expect("read victim"), b"precious");
    assert!(
        !fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink(),
        "the symlink was replaced by the image"
    );
    let first = fs::metadata(&link).expect("stat").ino();
    ctx.dump_leave_running(p.pid, &link);
    assert_ne!(
        fs::metadata(&link).expect("stat").ino(),
        first,
        "a new image replaces the old one whole"
    );
    // Every checksum of the whole image holds (the process still runs, so its PIDs
    // are taken: the only problem check may report).
    let r = ctx.ckpt(&[
        std::ffi::OsStr::new("check"),
        std::ffi::OsStr::new("--json"),
        link.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("check --json");
    let codes: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["code"].as_str())
        .collect();
    assert!(
        codes.iter().all(|c| *c == "pid-taken"),
        "the replaced image is complete: {codes:?}"
    );
    p.kill();
}

/// `ckpt dump` killed with SIGKILL at moments spread over a 64 MiB dump leaves no file
/// in the output directory: the image has no name until it is complete.
#[test]
fn killed_dump_leaves_no_file() {
    let ctx = Ctx::new("killed_dump_leaves_no_file");
    let out = ctx.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    let mut p = ctx.spawn(&counter_spec(
        &ctx,
        "counter",
        2000,
        &["heap=65536", "sleep=20"],
    ));
    p.wait_lines(2);
    let img = out.join("img");
    // How long a whole dump takes: the kills are spread over it, and a little past.
    let t0 = std::time::Instant::now();
    ctx.dump_leave_running(p.pid, &img);
    let whole = t0.elapsed();
    fs::remove_file(&img).expect("rm image");
    let mut complete = 0;
    for i in 0..24u32 {
        let mut c = Command::new(ckpt_bin())
            .args(["dump", &p.pid.to_string(), "-o"])
            .arg(&img)
            .arg("--leave-running")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ckpt dump");
        std::thread::sleep(whole * i / 20);
        let _ = c.kill();
        let st = c.wait().expect("wait ckpt");
        let names = entries(&out);
        if st.success() {
            // It finished before the kill: the complete image, nothing else.
            assert_eq!(names, ["img"], "after a complete dump");
            complete += 1;
            fs::remove_file(&img).expect("rm image");
        } else if names.is_empty() {
            // Killed before the image was complete: nothing has a name.
        } else {
            // Killed after it linked the complete image, before it exited: the image
            // is there whole (every checksum holds), and nothing else is.
            assert_eq!(names, ["img"], "a killed dump left {names:?}");
            let r = ctx.ckpt(&[
                std::ffi::OsStr::new("check"),
                std::ffi::OsStr::new("--json"),
                img.as_os_str(),
            ]);
            let v: serde_json::Value =
                serde_json::from_slice(&r.stdout).expect("check --json of the named image");
            let codes: Vec<&str> = v["problems"]
                .as_array()
                .expect("problems")
                .iter()
                .filter_map(|p| p["code"].as_str())
                .collect();
            assert!(
                codes.iter().all(|c| *c == "pid-taken"),
                "a killed dump named an incomplete image: {codes:?}"
            );
            fs::remove_file(&img).expect("rm image");
        }
        // Whatever happened to the dump, the target is let go (PTRACE_SEIZE detaches
        // when the tracer dies).
        wait_untraced(p.pid);
    }
    eprintln!("{complete} of 24 dumps finished before their kill (a dump: {whole:?})");
    p.kill();
}

/// Wait until no tracer holds `pid` (the kernel detaches a dead tracer's tracees).
fn wait_untraced(pid: i32) {
    let until = std::time::Instant::now() + timeout();
    while tracer_pid(pid).unwrap_or(0) != 0 {
        assert!(std::time::Instant::now() < until, "{pid} stays traced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A setuid-root copy of ckpt run by another user refuses to run at all (it could read
/// and change any process for them); root running it, or the user running a copy
/// without the bit, is served as usual.
#[test]
fn setuid_copy_refuses_a_non_root_caller() {
    // In a directory of its own under /tmp, which every user may traverse (the test
    // directory's ancestors may not be).
    let dir = std::path::PathBuf::from(format!("/tmp/ckpt-e2e-suid-{}", my_pid()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir");
    // Removed however the test ends (a copy of ckpt is tens of MB).
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.join("ckpt");
    fs::copy(ckpt_bin(), &copy).expect("copy ckpt");
    let as_nobody = |what: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{what}: run setpriv: {e}"))
    };
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let plain = as_nobody("without the bit");
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
    let suid = as_nobody("setuid");
    assert_eq!(suid.status.code(), Some(1), "{}", text(&suid.stderr));
    assert!(
        text(&suid.stderr).contains("refusing to run: started setuid"),
        "{}",
        text(&suid.stderr)
    );
    assert!(
        suid.stdout.is_empty(),
        "nothing done: {}",
        text(&suid.stdout)
    );
    let root = Command::new(&copy)
        .arg("--version")
        .output()
        .expect("run as root");
    assert_eq!(root.status.code(), Some(0), "{}", text(&root.stderr));
}
