//! End-to-end tests of the `criu`-compatible front end (issue 16): ckpt run as `criu`
//! (a symlink named so) with the command lines CRaC uses, and `criu swrk` spoken to as
//! runc does (protobuf `criu_req`/`criu_resp` over a SOCK_SEQPACKET socket pair, with
//! notifications acknowledged); each restored program's output is byte for byte that of
//! an uninterrupted run, and the state oracle compares the kernel's view of it with the
//! original's. CRIU's files in the image directory are decoded and checked; what ckpt
//! cannot honour is refused by name, and a refused or aborted dump leaves the program
//! running.
//!
//! Needs root. Run with cargo-nextest, one process per test.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ckpt::criu::images;
use ckpt::criu::rpc::{self, ReqType};
use common::oracle::{self, Cmp, Snapshot};
use common::*;
use prost::Message;

/// A link named `criu` to the ckpt under test, in the test's directory.
fn criu_link(ctx: &Ctx) -> PathBuf {
    let l = ctx.path("criu");
    if !l.exists() {
        std::os::unix::fs::symlink(ckpt_bin(), &l).expect("symlink criu -> ckpt");
    }
    l
}

/// Run `criu ARGS` (through the link) in the test's directory, to its end.
fn criu(ctx: &Ctx, args: &[&str]) -> std::process::Output {
    let out = Command::new(criu_link(ctx))
        .args(args)
        .current_dir(&ctx.dir)
        .stdin(Stdio::null())
        .output()
        .expect("run criu");
    eprintln!(
        "criu {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The oracle's comparison of the restored tree with `before` once it runs whole.
fn oracle_restored(name: &str, before: &Snapshot) {
    let deadline = Instant::now() + timeout();
    while !oracle::restored_tree_up(before) {
        assert!(
            Instant::now() < deadline,
            "{name}: the restored tree never ran whole"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let after = Snapshot::take(before.root).moved(true);
    oracle::assert_same_kernel_state(name, "criu restore", Cmp::Restored, before, &after, &[]);
}

/// CRIU's files of a dump in `dir`: the inventory and the dump statistics, decoded.
fn check_dump_files(dir: &Path) -> rpc::DumpStatsEntry {
    let raw = fs::read(dir.join("inventory.img")).expect("inventory.img");
    assert_eq!(&raw[..4], &0x5831_3116u32.to_le_bytes(), "inventory magic");
    let inv = images::read_inventory(dir).expect("decode inventory.img");
    assert_eq!(inv.img_version, 2, "images v1.1");
    let raw = fs::read(dir.join("stats-dump")).expect("stats-dump");
    assert_eq!(&raw[..4], &0x5510_5940u32.to_le_bytes(), "service magic");
    assert_eq!(&raw[4..8], &0x5709_3306u32.to_le_bytes(), "stats magic");
    let st = images::read_stats(dir, "stats-dump").expect("decode stats-dump");
    let d = st.dump.expect("stats-dump holds dump statistics");
    assert!(d.pages_written > 0, "pages written: {d:?}");
    assert!(d.pages_scanned >= d.pages_written, "{d:?}");
    assert!(
        d.frozen_time > 0 && d.frozen_time >= d.freezing_time,
        "{d:?}"
    );
    eprintln!("stats-dump: {d:?}");
    d
}

fn check_restore_stats(dir: &Path) {
    let st = images::read_stats(dir, "stats-restore").expect("decode stats-restore");
    let r = st.restore.expect("stats-restore holds restore statistics");
    assert!(r.restore_time > 0, "{r:?}");
    assert!(
        r.forking_time > 0 && r.forking_time <= r.restore_time,
        "forking time: {r:?}"
    );
    assert!(r.pages_restored.is_some_and(|p| p > 0), "{r:?}");
    eprintln!("stats-restore: {r:?}");
}

// ---------------------------------------------------------------------------------------
// The command line, as CRaC uses it

/// CRaC's checkpoint (`criu dump -t PID -D DIR --shell-job -v4 -o dump4.log`) and
/// restore (`criu restore -W . --shell-job -D DIR -d`): the program continues as if
/// nothing happened, and the action script saw CRIU's actions in CRIU's order.
#[test]
fn crac_command_lines_round_trip() {
    let name = "crac_command_lines_round_trip";
    let ctx = Ctx::new(name);
    let spec = counter_spec(&ctx, "counter", 40, &[]).cwd(&ctx.dir);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("cr");
    fs::create_dir(&img).expect("mkdir cr");
    let script = ctx.path("actions.sh");
    fs::write(
        &script,
        "echo \"$CRTOOLS_SCRIPT_ACTION ${CRTOOLS_INIT_PID:-none} $CRTOOLS_IMAGE_DIR\" >> actions.log\n",
    )
    .expect("write script");
    let before = Snapshot::take_once(pid);
    let script_arg = format!("sh {}", script.display());
    let out = criu(
        &ctx,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            "cr",
            "--shell-job",
            "-v4",
            "-o",
            "dump4.log",
            "--action-script",
            &script_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "criu dump failed");
    t.expect_killed();
    let printed = t.stdout.finish("original");
    let log = fs::read_to_string(img.join("dump4.log")).expect("dump4.log");
    assert!(!log.contains("Error"), "dump log has errors:\n{log}");
    assert!(img.join("ckpt.img").exists());
    check_dump_files(&img);

    let restore = Spec::new(criu_link(&ctx))
        .arg("restore")
        .arg("-W")
        .arg(".")
        .arg("--shell-job")
        .arg("-D")
        .arg("cr")
        .arg("-d")
        .arg("-o")
        .arg("restore.log")
        .arg("--pidfile")
        .arg("restored.pid")
        .arg("--action-script")
        .arg(&script_arg)
        .cwd(&ctx.dir);
    let mut r = ctx.spawn(&restore);
    let st = r.wait();
    let log = fs::read_to_string(ctx.path("restore.log")).unwrap_or_default();
    assert_eq!(st.code(), Some(0), "criu restore -d failed:\n{log}");
    let pidfile = fs::read_to_string(ctx.path("restored.pid")).expect("pid file");
    assert_eq!(
        pidfile.trim(),
        pid.to_string(),
        "the pid file names the restored root"
    );
    oracle_restored(name, &before);
    let status = wait_pid(pid, timeout()).expect("the restored counter's status");
    let rest = r.stdout.finish("restored");
    assert_same_output(
        "counter dumped by criu dump, restored by criu restore -d",
        &reference.stdout,
        &[printed, rest].concat(),
    );
    assert_eq!(status.code(), reference.status.code(), "exit status");
    check_restore_stats(&img);

    let dir = fs::canonicalize(&img).expect("canonical images dir");
    let expected: Vec<String> = [
        ("pre-dump", None),
        ("network-lock", None),
        ("post-dump", None),
        ("setup-namespaces", Some(pid)),
        ("post-setup-namespaces", Some(pid)),
        ("post-restore", Some(pid)),
        ("pre-resume", Some(pid)),
        ("network-unlock", Some(pid)),
        ("post-resume", Some(pid)),
    ]
    .iter()
    .map(|(a, p)| {
        format!(
            "{a} {} {}",
            p.map_or("none".to_string(), |p| p.to_string()),
            dir.display()
        )
    })
    .collect();
    let got = fs::read_to_string(ctx.path("actions.log")).expect("actions.log");
    let got: Vec<String> = got
        .lines()
        .map(|l| {
            // CRTOOLS_IMAGE_DIR may be relative to the working directory: compare resolved.
            let mut w: Vec<String> = l.splitn(3, ' ').map(String::from).collect();
            if let Some(d) = w.get_mut(2) {
                *d = fs::canonicalize(ctx.path(d)).map_or(d.clone(), |p| p.display().to_string());
            }
            w.join(" ")
        })
        .collect();
    assert_eq!(got, expected, "action script calls");
}

/// CRaC's restore with `--exec-cmd -- CMD`: once the tree runs, `criu restore`
/// becomes CMD, whose child the restored root is (here a python3 that waits for its
/// child and exits with its status).
#[test]
fn restore_exec_cmd_becomes_the_parent() {
    let ctx = Ctx::new("restore_exec_cmd_becomes_the_parent");
    let spec = counter_spec(&ctx, "counter", 30, &[]).cwd(&ctx.dir);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(8);
    let pid = t.pid;
    ctx.track(pid);
    fs::create_dir(ctx.path("cr")).expect("mkdir");
    let out = criu(
        &ctx,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            "cr",
            "--shell-job",
            "-o",
            "d.log",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    t.expect_killed();
    let printed = t.stdout.finish("original");
    let waiter = "import os, sys\n\
                  p, s = os.wait()\n\
                  sys.exit(os.waitstatus_to_exitcode(s) if p == int(sys.argv[1]) else 99)";
    let restore = Spec::new(criu_link(&ctx))
        .arg("restore")
        .arg("-W")
        .arg(".")
        .arg("--shell-job")
        .arg("-D")
        .arg("cr")
        .arg("-o")
        .arg("r.log")
        .arg("--exec-cmd")
        .arg("--")
        .arg("python3")
        .arg("-c")
        .arg(waiter)
        .arg(pid.to_string())
        .cwd(&ctx.dir);
    let mut r = ctx.spawn(&restore);
    let fin = r.finish();
    let log = fs::read_to_string(ctx.path("r.log")).unwrap_or_default();
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "criu restore --exec-cmd must become python3, which exits with its child's status \
         (the restored counter's):\n{log}\n{}",
        String::from_utf8_lossy(&fin.stderr)
    );
    assert_same_output(
        "counter restored under --exec-cmd",
        &reference.stdout,
        &[printed, fin.stdout].concat(),
    );
}

/// `criu dump -R` (CRaC's `--leave-running`): the program runs on, untraced, and the
/// network is unlocked after the dump.
#[test]
fn dump_leave_running_keeps_the_program() {
    let ctx = Ctx::new("dump_leave_running_keeps_the_program");
    let spec = counter_spec(&ctx, "counter", 300, &[]).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    fs::create_dir(ctx.path("cr")).expect("mkdir");
    let out = criu(
        &ctx,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            "cr",
            "-R",
            "--shell-job",
            "-o",
            "d.log",
            "--action-script",
            "echo $CRTOOLS_SCRIPT_ACTION >> actions.log",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_running_untraced(pid, "after criu dump -R");
    assert!(ctx.path("cr/ckpt.img").exists());
    check_dump_files(&ctx.path("cr"));
    let actions = fs::read_to_string(ctx.path("actions.log")).expect("actions.log");
    assert_eq!(
        actions.lines().collect::<Vec<_>>(),
        ["pre-dump", "network-lock", "post-dump", "network-unlock"]
    );
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
    t.kill();
}

/// A failing action script at post-dump aborts the dump: the program runs on untouched,
/// no image is left, and the log says "Error" naming the script.
#[test]
fn failing_post_dump_script_leaves_the_program_running() {
    let ctx = Ctx::new("failing_post_dump_script_leaves_the_program_running");
    let spec = counter_spec(&ctx, "counter", 200, &[]).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    fs::create_dir(ctx.path("cr")).expect("mkdir");
    let out = criu(
        &ctx,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            "cr",
            "-o",
            "d.log",
            "--action-script",
            "test \"$CRTOOLS_SCRIPT_ACTION\" != post-dump",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let log = fs::read_to_string(ctx.path("cr/d.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("Error") && l.contains("post-dump")),
        "{log}"
    );
    assert!(!ctx.path("cr/ckpt.img").exists(), "an image was left");
    assert!(
        !ctx.path("cr/inventory.img").exists(),
        "an inventory was left"
    );
    assert_running_untraced(pid, "after a dump aborted at post-dump");
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
    t.kill();
}

/// Options ckpt does not have or cannot honour are refused by name, with an "Error"
/// line, before the process is touched; `criu check` and its features answer.
#[test]
fn cli_refusals_check_and_version() {
    let ctx = Ctx::new("cli_refusals_check_and_version");
    let out = criu(&ctx, &["--version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Version: 3.19");
    let out = Command::new(ckpt_bin())
        .args(["criu", "--version"])
        .output()
        .expect("ckpt criu --version");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Version: 3.19");
    assert_eq!(criu(&ctx, &["check"]).status.code(), Some(0));
    for (f, ok) in [
        ("mem_dirty_track", false),
        ("uffd-noncoop", false),
        ("lazy_pages", false),
        ("tcp_half_closed", false),
        ("timens", Path::new("/proc/self/ns/time").exists()),
    ] {
        let out = criu(&ctx, &["check", "--feature", f]);
        assert_eq!(out.status.success(), ok, "feature {f}");
    }
    assert_eq!(
        criu(&ctx, &["check", "--feature", "no_such_thing"])
            .status
            .code(),
        Some(1)
    );

    let spec = counter_spec(&ctx, "counter", 200, &[]).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let pid = t.pid.to_string();
    fs::create_dir(ctx.path("cr")).expect("mkdir");
    let out = criu(&ctx, &["dump", "-t", &pid, "-D", "cr", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error") && err.contains("--frobnicate"),
        "{err}"
    );
    for (opt, name) in [
        ("--ext-mount-map=/a:/b", "--ext-mount-map"),
        ("--manage-cgroups=hard", "--manage-cgroups=hard"),
        // (Taken, but not the namespace the process is in: refused so.)
        ("--external=pid[1]:extRootPidNS", "external pid[1]"),
        ("--freeze-cgroup=/x", "--freeze-cgroup"),
        ("--ghost-limit=1M", "--ghost-limit"),
    ] {
        let out = criu(&ctx, &["dump", "-t", &pid, "-D", "cr", "-o", "r.log", opt]);
        assert_eq!(out.status.code(), Some(1), "{opt}");
        let log = fs::read_to_string(ctx.path("cr/r.log")).expect("log");
        assert!(
            log.lines().any(|l| l.contains("Error") && l.contains(name)),
            "{opt}: {log}"
        );
    }
    assert!(!ctx.path("cr/ckpt.img").exists());
    assert_running_untraced(pid.parse().unwrap_or(0), "after refused dumps");
    t.kill();
}

// ---------------------------------------------------------------------------------------
// The RPC, as runc uses it

/// A `criu swrk 3` with our end of a SOCK_SEQPACKET pair.
struct Swrk {
    sock: OwnedFd,
    child: std::process::Child,
}

impl Swrk {
    fn start(ctx: &Ctx, stdout: Stdio) -> Swrk {
        Swrk::start_with(ctx, stdout, None)
    }

    /// With our descriptor `extra.0` as the service's descriptor `extra.1` (> 3).
    fn start_with(ctx: &Ctx, stdout: Stdio, extra: Option<(i32, i32)>) -> Swrk {
        let mut fds = [0; 2];
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "socketpair");
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let t = theirs.as_raw_fd();
        let mut cmd = Command::new(criu_link(ctx));
        cmd.args(["swrk", "3"])
            .current_dir(&ctx.dir)
            .stdin(Stdio::null())
            .stdout(stdout);
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first (high numbers), then in place: no copy clobbers
                // a source that sits at the other's target.
                let hi_t = libc::fcntl(t, libc::F_DUPFD, 200);
                let hi_x = extra.map(|(src, _)| libc::fcntl(src, libc::F_DUPFD, 200));
                if hi_t < 0 || libc::dup2(hi_t, 3) != 3 {
                    return Err(std::io::Error::last_os_error());
                }
                if let (Some(h), Some((_, dst))) = (hi_x, extra) {
                    if h < 0 || libc::dup2(h, dst) != dst {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn criu swrk");
        drop(theirs);
        Swrk { sock: ours, child }
    }

    fn send(&self, req: &rpc::Req) {
        let b = req.encode_to_vec();
        let n = unsafe { libc::send(self.sock.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
        assert_eq!(n, b.len() as isize, "send to swrk");
    }

    fn recv(&self) -> rpc::Resp {
        let mut buf = vec![0u8; 1 << 16];
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout().as_millis() as i32;
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, ms) },
            1,
            "swrk did not answer"
        );
        let n = unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n > 0, "swrk closed the socket without an answer");
        rpc::Resp::decode(&buf[..n as usize]).expect("a criu_resp")
    }

    /// Send `req`, acknowledge every notification (`ack` says how: true is success;
    /// `on` runs first), and return the notifications' names and the final answer.
    fn transact(
        &self,
        req: &rpc::Req,
        mut on: impl FnMut(&rpc::Notify) -> bool,
    ) -> (Vec<String>, rpc::Resp) {
        self.send(req);
        let mut seen = Vec::new();
        loop {
            let resp = self.recv();
            if resp.r#type != ReqType::Notify as i32 {
                return (seen, resp);
            }
            let n = resp.notify.clone().unwrap_or_default();
            seen.push(n.script.clone().unwrap_or_default());
            let ok = on(&n);
            self.send(&rpc::Req {
                r#type: ReqType::Notify as i32,
                notify_success: Some(ok),
                ..Default::default()
            });
        }
    }

    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.sock);
        let deadline = Instant::now() + timeout();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait swrk") {
                return st;
            }
            assert!(Instant::now() < deadline, "criu swrk did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn opts(dir: &fs::File) -> rpc::Opts {
    rpc::Opts {
        images_dir_fd: dir.as_raw_fd(),
        log_level: Some(4),
        ..Default::default()
    }
}

/// The parent of process `pid` (field 4 of its stat).
fn ppid(pid: i32) -> i32 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, a)| a);
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// runc's conversation: VERSION, FEATURE_CHECK, DUMP with notify scripts acknowledged,
/// RESTORE with rst_sibling (the restored root is OUR child, already while the service
/// runs) — the program continues byte for byte and the oracle finds it the same.
#[test]
fn rpc_like_runc() {
    let name = "rpc_like_runc";
    let ctx = Ctx::new(name);

    let s = Swrk::start(&ctx, Stdio::null());
    s.send(&rpc::Req {
        r#type: ReqType::Version as i32,
        ..Default::default()
    });
    let v = s.recv();
    assert!(v.success);
    let v = v.version.expect("a version");
    assert!((v.major_number, v.minor_number) >= (3, 16), "{v:?}");
    assert!(s.finish().success());

    let s = Swrk::start(&ctx, Stdio::null());
    s.send(&rpc::Req {
        r#type: ReqType::FeatureCheck as i32,
        features: Some(rpc::Features {
            mem_track: Some(true),
            lazy_pages: Some(true),
            pidfd_store: None,
        }),
        ..Default::default()
    });
    let f = s.recv();
    assert!(f.success);
    let f = f.features.expect("features");
    assert_eq!(
        (f.mem_track, f.lazy_pages, f.pidfd_store),
        (Some(false), Some(false), None)
    );
    s.finish();

    let s = Swrk::start(&ctx, Stdio::null());
    s.send(&rpc::Req {
        r#type: ReqType::Check as i32,
        ..Default::default()
    });
    let c = s.recv();
    assert!(c.success, "CHECK: {:?}", c.cr_errmsg);
    s.finish();

    let spec = counter_spec(&ctx, "counter", 40, &[]).cwd(&ctx.dir);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    ctx.track(pid);
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let stdout_key = fs::read_link(format!("/proc/{pid}/fd/1"))
        .expect("the counter's stdout")
        .display()
        .to_string();
    assert!(stdout_key.starts_with("pipe:["), "{stdout_key}");
    let before = Snapshot::take_once(pid);
    let s = Swrk::start(&ctx, Stdio::null());
    let (seen, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Dump as i32,
            opts: Some(rpc::Opts {
                pid: Some(pid),
                shell_job: Some(true),
                notify_scripts: Some(true),
                log_file: Some("dump.log".into()),
                manage_cgroups_mode: Some(rpc::CgMode::Ignore as i32),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img/dump.log")).unwrap_or_default();
    assert!(resp.success, "DUMP failed: {:?}\n{log}", resp.cr_errmsg);
    assert_eq!(seen, ["pre-dump", "network-lock", "post-dump"]);
    assert_eq!(resp.r#type, ReqType::Dump as i32);
    assert!(s.finish().success());
    t.expect_killed();
    let printed = t.stdout.finish("original");
    check_dump_files(&ctx.path("img"));

    // A restore the caller fails at post-restore is undone: the half-built root (our
    // child) is killed before it ran, and nothing else is left.
    let s = Swrk::start(&ctx, Stdio::null());
    let (seen, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(rpc::Opts {
                shell_job: Some(true),
                notify_scripts: Some(true),
                rst_sibling: Some(true),
                log_file: Some("failed-restore.log".into()),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |n| n.script.as_deref() != Some("post-restore"),
    );
    assert!(
        !resp.success,
        "a restore whose post-restore failed succeeded"
    );
    assert_eq!(
        seen,
        ["setup-namespaces", "post-setup-namespaces", "post-restore"]
    );
    assert!(!s.finish().success());
    let st = wait_pid(pid, timeout()).expect("the undone root, our child, is reaped by us");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "{st:?}"
    );
    assert!(!pid_exists(pid), "the undone restore left process {pid}");
    assert!(stray_children(&[]).is_empty(), "{:?}", stray_children(&[]));

    // The restored program's standard output was a pipe: as runc does, a new pipe takes
    // its place (`inherit_fd` with the old pipe's name, the new one as the service's
    // descriptor 4), read to its end here.
    let mut p = [0; 2];
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = unsafe { (fs::File::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let s = Swrk::start_with(&ctx, Stdio::null(), Some((wr.as_raw_fd(), 4)));
    drop(wr);
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut rd = rd;
        let _ = std::io::Read::read_to_end(&mut rd, &mut v);
        v
    });
    let me = my_pid();
    let mut parent_at_post_restore = 0;
    let (seen, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(rpc::Opts {
                shell_job: Some(true),
                notify_scripts: Some(true),
                rst_sibling: Some(true),
                log_file: Some("restore.log".into()),
                inherit_fd: vec![rpc::InheritFd {
                    key: stdout_key.clone(),
                    fd: 4,
                }],
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |n| {
            if n.script.as_deref() == Some("post-restore") {
                parent_at_post_restore = ppid(n.pid.unwrap_or(0));
            }
            true
        },
    );
    let log = fs::read_to_string(ctx.path("img/restore.log")).unwrap_or_default();
    assert!(resp.success, "RESTORE failed: {:?}\n{log}", resp.cr_errmsg);
    assert_eq!(
        seen,
        [
            "setup-namespaces",
            "post-setup-namespaces",
            "post-restore",
            "pre-resume",
            "network-unlock",
            "post-resume"
        ]
    );
    assert_eq!(resp.restore.as_ref().map(|r| r.pid), Some(pid));
    assert_eq!(
        parent_at_post_restore, me,
        "rst_sibling: the restored root must be the caller's child"
    );
    assert!(s.finish().success());
    oracle_restored(name, &before);
    let status = wait_pid(pid, timeout()).expect("our child's status");
    let rest = reader.join().expect("the reader of the restored output");
    assert_same_output(
        "counter dumped and restored over criu swrk",
        &reference.stdout,
        &[printed, rest].concat(),
    );
    assert_eq!(status.code(), reference.status.code());
    check_restore_stats(&ctx.path("img"));
}

/// What ckpt cannot honour in a request is refused by name (success false, cr_errmsg,
/// an "Error" line in the log) before the process is touched; a caller's failed
/// post-dump notification aborts the dump, the process running on.
#[test]
fn rpc_refusals_and_aborted_dump() {
    let ctx = Ctx::new("rpc_refusals_and_aborted_dump");
    let spec = counter_spec(&ctx, "counter", 400, &[]).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let pid = t.pid;
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");

    let s = Swrk::start(&ctx, Stdio::null());
    let (seen, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Dump as i32,
            opts: Some(rpc::Opts {
                pid: Some(pid),
                notify_scripts: Some(true),
                log_file: Some("refused.log".into()),
                ext_mnt: vec![rpc::ExtMountMap {
                    key: "/etc/hosts".into(),
                    val: "hosts".into(),
                }],
                empty_ns: Some(libc::CLONE_NEWUTS as u32),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |_| true,
    );
    assert!(!resp.success);
    assert!(seen.is_empty(), "notified {seen:?} before refusing");
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("ext_mnt") && msg.contains("empty_ns"), "{msg}");
    assert!(resp.cr_errno.is_some_and(|e| e != 0));
    let log = fs::read_to_string(ctx.path("img/refused.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("Error") && l.contains("ext_mnt")),
        "{log}"
    );
    assert!(!s.finish().success());
    assert_running_untraced(pid, "after a refused DUMP");

    // An unknown request type.
    let s = Swrk::start(&ctx, Stdio::null());
    s.send(&rpc::Req {
        r#type: ReqType::PageServer as i32,
        ..Default::default()
    });
    let r = s.recv();
    assert!(!r.success && r.cr_errmsg.unwrap_or_default().contains("PageServer"));
    s.finish();

    let s = Swrk::start(&ctx, Stdio::null());
    let (seen, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Dump as i32,
            opts: Some(rpc::Opts {
                pid: Some(pid),
                notify_scripts: Some(true),
                log_file: Some("aborted.log".into()),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |n| n.script.as_deref() != Some("post-dump"),
    );
    assert!(!resp.success);
    assert_eq!(
        seen,
        ["pre-dump", "network-lock", "post-dump", "network-unlock"]
    );
    assert!(resp.cr_errmsg.unwrap_or_default().contains("post-dump"));
    assert!(!ctx.path("img/ckpt.img").exists(), "an image was left");
    s.finish();
    assert_running_untraced(pid, "after a DUMP aborted at post-dump");
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
    t.kill();
}

/// A tree with a PID namespace of its own (a container's shape: `unshare -p -f`), dumped
/// and restored over RPC with `rst_sibling`: the new namespace's init is the caller's
/// child, PID 1 there, and the program continues byte for byte.
#[test]
fn rpc_restore_sibling_of_a_tree_with_its_own_pid_namespace() {
    let ctx = Ctx::new("rpc_restore_sibling_of_a_tree_with_its_own_pid_namespace");
    let unshare = PathBuf::from("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let nstree = ctx.path("nstree");
    fs::copy(target("nstree"), &nstree).expect("copy nstree");
    let spec = Spec::new(&unshare)
        .arg("-p")
        .arg("-f")
        .arg(&nstree)
        .arg("40")
        .arg("sleep=30")
        .arg("show-pids");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(9);
    let tree = wait_process_tree(t.pid, 3, "unshare and nstree");
    let root = tree[1];
    assert_eq!(
        nspids(root),
        vec![root, 1],
        "nstree's root is PID 1 of its namespace"
    );
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let s = Swrk::start(&ctx, Stdio::null());
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Dump as i32,
            opts: Some(rpc::Opts {
                pid: Some(root),
                log_file: Some("dump.log".into()),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |_| true,
    );
    assert!(resp.success, "DUMP: {:?}", resp.cr_errmsg);
    s.finish();
    let before = t.stdout.finish("original");
    t.wait();

    let mut s = Swrk::start(&ctx, Stdio::piped());
    let mut out = s.child.stdout.take().expect("swrk's stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let me = my_pid();
    let mut parent = 0;
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(rpc::Opts {
                rst_sibling: Some(true),
                notify_scripts: Some(true),
                log_file: Some("restore.log".into()),
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |n| {
            if n.script.as_deref() == Some("post-restore") {
                parent = ppid(n.pid.unwrap_or(0));
            }
            true
        },
    );
    let log = fs::read_to_string(ctx.path("img/restore.log")).unwrap_or_default();
    assert!(resp.success, "RESTORE: {:?}\n{log}", resp.cr_errmsg);
    let pid = resp.restore.map(|r| r.pid).unwrap_or(0);
    ctx.track(pid);
    assert_eq!(parent, me, "the new namespace's init is the caller's child");
    assert_eq!(
        nspids(pid),
        vec![pid, 1],
        "the restored root is PID 1 of its namespace"
    );
    assert!(s.finish().success());
    let st = wait_pid(pid, timeout()).expect("our child's status");
    let rest = reader.join().expect("reader");
    assert_eq!(st.code(), reference.status.code(), "exit status");
    assert_same_output(
        "nstree in its own PID namespace, restored as the caller's child",
        &reference.stdout,
        &[before, rest].concat(),
    );
}

// ---------------------------------------------------------------------------------------
// Mount, namespace and cgroup options mapped onto ckpt's engine

/// The root (in its file system) of the mount on `point` as process `pid` sees it.
fn mount_root(pid: i32, point: &str) -> Option<String> {
    let mi = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    mi.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&point)).then(|| f.get(3).map(|s| s.to_string()))?
    })
}

/// A program of util-linux or iproute2 the test needs, found where Debian puts it.
fn tool(name: &str) -> PathBuf {
    for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = PathBuf::from(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("needs {name} (apt-get install util-linux iproute2)");
}

/// The inode of namespace `kind` of process `pid`.
fn ns_inode(pid: i32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// Kill our child `pid` (a restored root, rst_sibling) and reap it.
fn kill_child(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_pid(pid, timeout()).expect("the killed child's status");
}

/// One RPC request to a new `criu swrk` (notifications acknowledged), with our
/// descriptor `extra.0` as its descriptor `extra.1`; the answer and the log.
fn rpc_once(
    ctx: &Ctx,
    ty: ReqType,
    o: rpc::Opts,
    extra: Option<(i32, i32)>,
    stdout: Stdio,
) -> (rpc::Resp, String, Swrk) {
    let log = o.log_file.clone().unwrap_or_default();
    let s = Swrk::start_with(ctx, stdout, extra);
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ty as i32,
            opts: Some(o),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img").join(log)).unwrap_or_default();
    (resp, log, s)
}

/// runc's external bind mounts: a tree in a mount namespace of its own with a bind of a
/// host directory is dumped over RPC with `ext_mnt` naming that mount by its mount
/// point (key = value, as runc sends it); the host directory is moved; a RESTORE
/// without `ext_mnt` is refused naming the mount; with `ext_mnt` {mount point: new
/// place} the tree comes back with the bind's root at the new place (its mountinfo)
/// and prints what an uninterrupted run prints.
#[test]
fn rpc_ext_mnt_gives_a_bind_mount_its_new_source() {
    let ctx = Ctx::new("rpc_ext_mnt_gives_a_bind_mount_its_new_source");
    let unshare = PathBuf::from("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let base = |name: &str| {
        let b = ctx.dir.join(name);
        fs::create_dir_all(b.join("host")).expect("mkdir host");
        fs::write(b.join("host/h.txt"), "host file\n").expect("write h.txt");
        b
    };
    let spec = |b: &Path| {
        Spec::new(&unshare)
            .arg("-m")
            .arg("--propagation")
            .arg("private")
            .arg(target("mntns"))
            .arg(b)
            .arg("16")
            .arg("sleep=40")
    };
    let (b, rb) = (base("m"), base("r"));
    let reference = ctx.reference(&spec(&rb));
    let mut t = ctx.spawn(&spec(&b));
    t.wait_lines(4);
    let pid = t.pid;
    let point = b.join("hb").display().to_string();
    let root = mount_root(pid, &point).expect("the bind of the host directory");
    assert!(root.ends_with("/m/host"), "{root}");
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Dump,
        rpc::Opts {
            pid: Some(pid),
            log_file: Some("dump.log".into()),
            ext_mnt: vec![rpc::ExtMountMap {
                key: point.clone(),
                val: point.clone(),
            }],
            ..opts(&dir)
        },
        None,
        Stdio::null(),
    );
    assert!(resp.success, "DUMP: {:?}\n{log}", resp.cr_errmsg);
    s.finish();
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&[pid], "mntns after the dump");
    let moved = ctx.dir.join("moved-host");
    fs::rename(b.join("host"), &moved).expect("move the host directory");

    let restore = |ext: Vec<rpc::ExtMountMap>, log: &str| rpc::Opts {
        rst_sibling: Some(true),
        log_file: Some(log.into()),
        ext_mnt: ext,
        ..opts(&dir)
    };
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Restore,
        restore(Vec::new(), "refused.log"),
        None,
        Stdio::null(),
    );
    assert!(!resp.success, "restored without the mount's source:\n{log}");
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(
        msg.contains(&format!("the source of the mount on {point}")),
        "{msg}"
    );
    s.finish();
    assert!(!pid_exists(pid), "the refused restore left process {pid}");

    let mut s = Swrk::start_with(&ctx, Stdio::piped(), None);
    let mut out = s.child.stdout.take().expect("swrk's stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(restore(
                vec![rpc::ExtMountMap {
                    key: point.clone(),
                    val: moved.display().to_string(),
                }],
                "restore.log",
            )),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img/restore.log")).unwrap_or_default();
    assert!(resp.success, "RESTORE: {:?}\n{log}", resp.cr_errmsg);
    assert_eq!(resp.restore.map(|r| r.pid), Some(pid));
    ctx.track(pid);
    s.finish();
    let root = mount_root(pid, &point).expect("the restored bind");
    assert!(
        root.ends_with("/moved-host"),
        "the restored bind's root is the new source: {root}"
    );
    let st = wait_pid(pid, timeout()).expect("our child's status");
    let rest = reader.join().expect("reader");
    assert_eq!(st.code(), reference.status.code(), "exit status");
    assert_same_output(
        "mntns over RPC, its host directory given with ext_mnt",
        &reference.stdout,
        &[before, rest].concat(),
    );
}

/// runc's network namespace given to a container (made outside it, held by another
/// process): the DUMP names it in `external` (`net[INODE]:extRootNetNS`; a wrong inode
/// is refused, the program running on); a RESTORE without it is refused naming it, one
/// with an `extra_opt` refused by name; with `inherit_fd` {extRootNetNS: a descriptor
/// of the namespace} (runc's way) the program is restored in that namespace
/// (/proc/PID/ns/net); killed, and restored again with `join_ns` {net: the holder's
/// PID} (crun's way), in it again, running to its end as an uninterrupted run.
#[test]
fn rpc_network_namespace_made_outside_is_joined() {
    let ctx = Ctx::new("rpc_network_namespace_made_outside_is_joined");
    let mut holder = ctx.spawn(
        &Spec::new(tool("unshare"))
            .arg("--net")
            .arg("sh")
            .arg("-c")
            .arg("ip link set lo up && echo up && exec sleep 600"),
    );
    holder.wait_for("up\n");
    let path = format!("/proc/{}/ns/net", holder.pid);
    let inode = ns_inode(holder.pid, "net");
    assert_ne!(inode, ns_inode(my_pid(), "net"));
    let plain = counter_spec(&ctx, "counter", 60, &[]).cwd(&ctx.dir);
    let reference = ctx.reference(&plain);
    let spec = Spec::new(tool("nsenter"))
        .arg(format!("--net={path}"))
        .arg(target("counter"))
        .arg("60")
        .arg(ctx.path("map.bin"))
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    assert_eq!(ns_inode(pid, "net"), inode);
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let dump = |ext: &str, log: &str| rpc::Opts {
        pid: Some(pid),
        log_file: Some(log.into()),
        external: vec![ext.to_string()],
        ..opts(&dir)
    };
    let (resp, _, s) = rpc_once(
        &ctx,
        ReqType::Dump,
        dump("net[1]:extRootNetNS", "wrong.log"),
        None,
        Stdio::null(),
    );
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(!resp.success && msg.contains("external net[1]"), "{msg}");
    s.finish();
    assert_running_untraced(pid, "after a DUMP naming another namespace");
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Dump,
        dump(&format!("net[{inode}]:extRootNetNS"), "dump.log"),
        None,
        Stdio::null(),
    );
    assert!(resp.success, "DUMP: {:?}\n{log}", resp.cr_errmsg);
    s.finish();
    t.expect_killed();
    let printed = t.stdout.finish("original");
    wait_pids_gone(&[pid], "after the dump");

    let restore = |log: &str| rpc::Opts {
        rst_sibling: Some(true),
        log_file: Some(log.into()),
        ..opts(&dir)
    };
    let (resp, _, s) = rpc_once(
        &ctx,
        ReqType::Restore,
        restore("r0.log"),
        None,
        Stdio::null(),
    );
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(
        !resp.success && msg.contains(&format!("net:[{inode}]")),
        "{msg}"
    );
    s.finish();
    let (resp, _, s) = rpc_once(
        &ctx,
        ReqType::Restore,
        rpc::Opts {
            join_ns: vec![rpc::JoinNamespace {
                ns: "net".into(),
                ns_file: path.clone(),
                extra_opt: Some("a,b".into()),
            }],
            ..restore("r1.log")
        },
        None,
        Stdio::null(),
    );
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(
        !resp.success && msg.contains("opts.join_ns net") && msg.contains("extra option"),
        "{msg}"
    );
    s.finish();
    assert!(!pid_exists(pid));

    // runc: inherit_fd of the namespace's descriptor.
    let nsf = fs::File::open(&path).expect("open the namespace");
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Restore,
        rpc::Opts {
            inherit_fd: vec![rpc::InheritFd {
                key: "extRootNetNS".into(),
                fd: 4,
            }],
            ..restore("r2.log")
        },
        Some((nsf.as_raw_fd(), 4)),
        Stdio::null(),
    );
    assert!(
        resp.success,
        "RESTORE with inherit_fd: {:?}\n{log}",
        resp.cr_errmsg
    );
    s.finish();
    ctx.track(pid);
    assert_eq!(
        ns_inode(pid, "net"),
        inode,
        "restored in the given namespace"
    );
    kill_child(pid);

    // crun/libcriu: join_ns with the holder's PID.
    let mut s = Swrk::start_with(&ctx, Stdio::piped(), None);
    let mut out = s.child.stdout.take().expect("swrk's stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(rpc::Opts {
                join_ns: vec![rpc::JoinNamespace {
                    ns: "net".into(),
                    ns_file: holder.pid.to_string(),
                    extra_opt: None,
                }],
                ..restore("r3.log")
            }),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img/r3.log")).unwrap_or_default();
    assert!(
        resp.success,
        "RESTORE with join_ns: {:?}\n{log}",
        resp.cr_errmsg
    );
    s.finish();
    assert_eq!(
        ns_inode(pid, "net"),
        inode,
        "restored in the joined namespace"
    );
    let st = wait_pid(pid, timeout()).expect("our child's status");
    let rest = reader.join().expect("reader");
    assert_eq!(st.code(), reference.status.code(), "exit status");
    assert_same_output(
        "counter in a namespace made outside it, restored with join_ns",
        &reference.stdout,
        &[printed, rest].concat(),
    );
    holder.kill();
}

/// Where the hierarchy with controller `ctrl` is mounted: the cgroup v2 one if it has
/// the controller, else the v1 one that has it; and whether it is v2.
fn hierarchy_with(ctrl: &str) -> (PathBuf, bool) {
    let mi = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut v1 = None;
    for l in mi.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = PathBuf::from(pre.split(' ').nth(4).unwrap_or_default());
        let mut post = post.split(' ');
        match post.next() {
            Some("cgroup2") => {
                let c = fs::read_to_string(mp.join("cgroup.controllers")).unwrap_or_default();
                if c.split_whitespace().any(|x| x == ctrl) {
                    return (mp, true);
                }
            }
            Some("cgroup")
                if v1.is_none() && post.nth(1).is_some_and(|o| o.split(',').any(|x| x == ctrl)) =>
            {
                v1 = Some(mp)
            }
            _ => {}
        }
    }
    (
        v1.unwrap_or_else(|| panic!("needs a cgroup hierarchy with the {ctrl} controller")),
        false,
    )
}

/// Cgroup directories removed (deepest first, after their processes are gone) at the
/// end.
struct CgDirs(Vec<PathBuf>);

impl CgDirs {
    fn clean(&self) {
        let mut all = self.0.clone();
        all.sort();
        for d in all.iter().rev() {
            for _ in 0..100 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for CgDirs {
    fn drop(&mut self) {
        self.clean();
    }
}

/// CRIU's cgroup modes and roots over RPC, checked in /proc/PID/cgroup and the cgroups'
/// files: a program in a cgroup with a memory limit and pids.max (cgroup v2, or the v1
/// memory and pids hierarchies) is dumped; IGNORE restores it in the caller's cgroups,
/// not the recorded ones; with the cgroup removed, CG_NONE is refused naming it (it
/// must exist); SOFT with `cg_root` puts it below that root, in a cgroup made with the
/// recorded limits; FULL makes the removed cgroup again with the same limits and puts
/// the program in it (ckpt's `restore --manage-cgroups`); STRICT, with the cgroup
/// there, is refused naming it.
#[test]
fn rpc_cgroup_modes_roots_and_limits() {
    // Before the context: removed after its processes are killed.
    let mut dirs = CgDirs(Vec::new());
    let ctx = Ctx::new("rpc_cgroup_modes_roots_and_limits");
    let (mem, v2) = hierarchy_with("memory");
    let pids_h = hierarchy_with("pids").0;
    let name = format!("ckpt-e2e-lim-{}", std::process::id());
    let other = format!("ckpt-e2e-root-{}", std::process::id());
    let mut hiers = vec![mem.clone()];
    if pids_h != mem {
        hiers.push(pids_h.clone());
    }
    for h in &hiers {
        dirs.0.push(h.join(&name));
        dirs.0.push(h.join(&other));
        dirs.0.push(h.join(&other).join(&name));
    }
    let mem_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limits = [
        (mem.clone(), mem_file, "268435456"),
        (pids_h.clone(), "pids.max", "77"),
    ];
    let make = |under: &str| {
        for h in &hiers {
            fs::create_dir_all(h.join(under).join(&name)).expect("mkdir the cgroup");
        }
    };
    make("");
    for (h, f, v) in &limits {
        fs::write(h.join(&name).join(f), v).unwrap_or_else(|e| panic!("set {f}: {e}"));
    }
    let moves: String = hiers
        .iter()
        .map(|h| format!("echo $$ > {}/cgroup.procs && ", h.join(&name).display()))
        .collect();
    counter_spec(&ctx, "counter", 1, &[]);
    let spec = Spec::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{moves}exec {} 600 {}",
            target("counter").display(),
            ctx.path("map.bin").display()
        ))
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    let cg = |p: i32| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
    let before = cg(pid);
    assert!(before.contains(&format!(":/{name}\n")), "{before}");
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Dump,
        rpc::Opts {
            pid: Some(pid),
            log_file: Some("dump.log".into()),
            manage_cgroups_mode: Some(rpc::CgMode::Soft as i32),
            ..opts(&dir)
        },
        None,
        Stdio::null(),
    );
    assert!(resp.success, "DUMP: {:?}\n{log}", resp.cr_errmsg);
    s.finish();
    t.expect_killed();
    wait_pids_gone(&[pid], "after the dump");

    let restore = |mode: rpc::CgMode, log: &str| rpc::Opts {
        rst_sibling: Some(true),
        log_file: Some(log.into()),
        manage_cgroups_mode: Some(mode as i32),
        ..opts(&dir)
    };
    let ok = |o: rpc::Opts, what: &str| {
        let log = o.log_file.clone().unwrap_or_default();
        let (resp, _, s) = rpc_once(&ctx, ReqType::Restore, o, None, Stdio::null());
        let text = fs::read_to_string(ctx.path("img").join(log)).unwrap_or_default();
        assert!(resp.success, "{what}: {:?}\n{text}", resp.cr_errmsg);
        s.finish();
        assert_eq!(resp.restore.map(|r| r.pid), Some(pid), "{what}");
        ctx.track(pid);
    };
    let refused = |o: rpc::Opts, what: &str, needle: &str| {
        let (resp, _, s) = rpc_once(&ctx, ReqType::Restore, o, None, Stdio::null());
        let msg = resp.cr_errmsg.unwrap_or_default();
        assert!(!resp.success && msg.contains(needle), "{what}: {msg}");
        s.finish();
        assert!(!pid_exists(pid), "{what}: left process {pid}");
    };
    let read = |d: &Path, f: &str| {
        fs::read_to_string(d.join(f))
            .unwrap_or_else(|e| panic!("read {}: {e}", d.join(f).display()))
            .trim()
            .to_string()
    };

    // IGNORE: the caller's cgroups (ours: the service is our child).
    ok(restore(rpc::CgMode::Ignore, "ignore.log"), "IGNORE");
    assert_eq!(
        cg(pid),
        cg(my_pid()),
        "IGNORE leaves it in the caller's cgroups"
    );
    kill_child(pid);

    // The cgroup removed: CG_NONE needs it.
    for h in &hiers {
        fs::remove_dir(h.join(&name)).expect("remove the cgroup");
    }
    refused(
        restore(rpc::CgMode::CgNone, "none.log"),
        "CG_NONE",
        &format!("/{name} does not exist"),
    );
    assert!(!mem.join(&name).exists(), "CG_NONE made the cgroup");

    // SOFT below cg_root: made there, with the limits.
    ok(
        rpc::Opts {
            cg_root: vec![rpc::CgroupRoot {
                ctrl: None,
                path: format!("/{other}"),
            }],
            ..restore(rpc::CgMode::Soft, "soft.log")
        },
        "SOFT with cg_root",
    );
    let now = cg(pid);
    assert!(now.contains(&format!(":/{other}/{name}\n")), "{now}");
    assert!(!now.contains(&format!(":/{name}\n")), "{now}");
    for (h, f, v) in &limits {
        assert_eq!(
            read(&h.join(&other).join(&name), f),
            *v,
            "{f} below cg_root"
        );
    }
    kill_child(pid);

    // FULL: the removed cgroup made again, with its limits, the program in it.
    ok(restore(rpc::CgMode::Full, "full.log"), "FULL");
    assert_eq!(cg(pid), before, "FULL: back in its cgroups");
    for (h, f, v) in &limits {
        assert_eq!(read(&h.join(&name), f), *v, "{f} made again");
    }
    kill_child(pid);

    // STRICT: the cgroup must not exist.
    refused(
        restore(rpc::CgMode::Strict, "strict.log"),
        "STRICT",
        &format!("/{name} exists already"),
    );

    // The engine's own command line: `ckpt restore` makes the removed cgroup without
    // the limits, `ckpt restore --manage-cgroups` with them.
    let img = ctx.path("img/ckpt.img");
    for manage in [false, true] {
        for h in &hiers {
            fs::remove_dir(h.join(&name)).expect("remove the cgroup");
        }
        let mut args = vec!["restore", "--detach"];
        if manage {
            args.push("--manage-cgroups");
        }
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push(img.as_os_str());
        let r = ctx.ckpt(&args);
        assert_eq!(r.code(), Some(0), "ckpt {args:?}: {}", r.stderr);
        ctx.track(pid);
        assert_eq!(cg(pid), before, "ckpt restore: back in its cgroups");
        for (h, f, v) in &limits {
            let now = read(&h.join(&name), f);
            if manage {
                assert_eq!(now, *v, "{f} with --manage-cgroups");
            } else {
                assert_ne!(now, *v, "{f} without --manage-cgroups");
            }
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_pids_gone(&[pid], "the restored counter, killed");
    }
}

impl Swrk {
    /// The next answer, with the descriptor attached to it (SCM_RIGHTS), if any.
    fn recv_with_fd(&self) -> (rpc::Resp, Option<OwnedFd>) {
        let mut buf = vec![0u8; 1 << 16];
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout().as_millis() as i32;
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, ms) },
            1,
            "swrk did not answer"
        );
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert!(n > 0, "swrk closed the socket without an answer");
        let mut fd = None;
        let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        if !c.is_null() {
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                let raw = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()) };
                fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        let resp = rpc::Resp::decode(&buf[..n as usize]).expect("a criu_resp");
        (resp, fd)
    }
}

/// runc's terminal: a program whose standard descriptors are a pty's slave (the master
/// held outside the tree, here by the test) is dumped; a RESTORE with
/// `orphan_pts_master` gives it a new pty's slave and sends the new master with the
/// `orphan-pts-master` notification (attached with SCM_RIGHTS), between
/// post-setup-namespaces and post-restore; the program's output goes on on that master,
/// its descriptors lead to the new pty (/proc/PID/fd).
#[test]
fn rpc_orphan_pts_master_sends_the_new_terminal() {
    let ctx = Ctx::new("rpc_orphan_pts_master_sends_the_new_terminal");
    let (master, slave_path) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let p = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (fs::File::from_raw_fd(m), p)
    };
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .expect("open the pty's slave");
    counter_spec(&ctx, "counter", 1, &[]);
    let mut cmd = Command::new(target("counter"));
    unsafe {
        // Only the pty: no descriptor of the test harness goes along.
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd
        .arg("400")
        .arg(ctx.path("map.bin"))
        .current_dir(&ctx.dir)
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn counter on the pty");
    // Its copies of the slave go: the old master ends once the counter is gone.
    drop(cmd);
    let pid = child.id() as i32;
    ctx.track(pid);
    // Read the old master until the program is gone.
    let old = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &master, &mut v);
        v
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|l| l == Path::new(&slave_path)),
        "the counter writes to {slave_path}"
    );
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let (resp, log, s) = rpc_once(
        &ctx,
        ReqType::Dump,
        rpc::Opts {
            pid: Some(pid),
            shell_job: Some(true),
            log_file: Some("dump.log".into()),
            ..opts(&dir)
        },
        None,
        Stdio::null(),
    );
    assert!(resp.success, "DUMP: {:?}\n{log}", resp.cr_errmsg);
    s.finish();
    let st = child.wait().expect("wait the dumped counter");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    let deadline = Instant::now() + timeout();
    while !old.is_finished() {
        assert!(Instant::now() < deadline, "the old master never ended");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let before = old.join().expect("the old master's reader");
    assert!(!before.is_empty(), "the counter printed on the pty");

    let s = Swrk::start(&ctx, Stdio::null());
    s.send(&rpc::Req {
        r#type: ReqType::Restore as i32,
        opts: Some(rpc::Opts {
            shell_job: Some(true),
            rst_sibling: Some(true),
            notify_scripts: Some(true),
            orphan_pts_master: Some(true),
            log_file: Some("restore.log".into()),
            ..opts(&dir)
        }),
        ..Default::default()
    });
    let mut seen = Vec::new();
    let mut new_master = None;
    let resp = loop {
        let (resp, fd) = s.recv_with_fd();
        if resp.r#type != ReqType::Notify as i32 {
            break resp;
        }
        let name = resp
            .notify
            .as_ref()
            .and_then(|n| n.script.clone())
            .unwrap_or_default();
        if name == "orphan-pts-master" {
            new_master = Some(fd.expect("the master is attached to orphan-pts-master"));
        } else {
            assert!(fd.is_none(), "a descriptor attached to {name}");
        }
        seen.push(name);
        s.send(&rpc::Req {
            r#type: ReqType::Notify as i32,
            notify_success: Some(true),
            ..Default::default()
        });
    };
    let log = fs::read_to_string(ctx.path("img/restore.log")).unwrap_or_default();
    assert!(resp.success, "RESTORE: {:?}\n{log}", resp.cr_errmsg);
    assert_eq!(
        seen,
        [
            "setup-namespaces",
            "post-setup-namespaces",
            "orphan-pts-master",
            "post-restore",
            "pre-resume",
            "network-unlock",
            "post-resume"
        ]
    );
    assert!(s.finish().success());
    let new_master = fs::File::from(new_master.expect("a new master"));
    let now = fs::read_link(format!("/proc/{pid}/fd/1"))
        .expect("the restored counter's stdout")
        .display()
        .to_string();
    // The pty of the master sent (its number; the old one's may be reused).
    let mut n: libc::c_uint = 0;
    assert_eq!(
        unsafe { libc::ioctl(new_master.as_raw_fd(), libc::TIOCGPTN, &mut n) },
        0,
        "TIOCGPTN"
    );
    assert_eq!(
        now,
        format!("/dev/pts/{n}"),
        "the restored counter writes to the pty whose master was sent"
    );
    // Its output goes on on the new master.
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    let deadline = Instant::now() + timeout();
    while got.iter().filter(|&&c| c == b'\n').count() < 3 {
        assert!(Instant::now() < deadline, "nothing on the new master");
        let mut pfd = libc::pollfd {
            fd: new_master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, 100) } != 1 {
            continue;
        }
        let n = std::io::Read::read(&mut &new_master, &mut b).expect("read the new master");
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        String::from_utf8_lossy(&got).contains("step"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    kill_child(pid);
}

/// runc's way with a container that joined another's PID namespace: DUMP with `external`
/// `pid[INO]:extRootPidNS`, RESTORE with `rst_sibling` and `inherit_fd` {extRootPidNS: a
/// descriptor of the namespace}. `counter` started with `nsenter -p` in a namespace a
/// holder made (PID 2 there) comes back inside that namespace, as the caller's child,
/// with its ID there (it checks its getpid() every step), and its output is an
/// uninterrupted run's.
#[test]
fn rpc_restore_sibling_in_an_external_pid_namespace() {
    let ctx = Ctx::new("rpc_restore_sibling_in_an_external_pid_namespace");
    let holder = ctx.spawn(
        &Spec::new("/usr/bin/unshare")
            .arg("-p")
            .arg("-f")
            .arg("--kill-child")
            .arg(target("extpidns"))
            .arg("hold"),
    );
    let h = wait_process_tree(holder.pid, 2, "unshare and its holder");
    for &p in &h {
        ctx.track(p);
    }
    let init = h[1];
    let ino = ns_inode(init, "pid");
    let counter = counter_spec(&ctx, "counter", 120, &["sleep=20"]).cwd(&ctx.dir);
    let reference = ctx.reference(&counter);
    let spec = Spec::new("/usr/bin/nsenter")
        .arg("-t")
        .arg(init.to_string())
        .arg("-p")
        .arg(target("counter"))
        .arg("120")
        .arg(ctx.path("map.bin"))
        .arg("sleep=20")
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let tree = wait_process_tree(t.pid, 2, "nsenter and counter");
    let root = tree[1];
    ctx.track(root);
    assert_eq!(
        nspids(root)[1],
        2,
        "counter is PID 2 of the holder's namespace"
    );
    fs::create_dir(ctx.path("img")).expect("mkdir");
    let dir = fs::File::open(ctx.path("img")).expect("open img");
    let s = Swrk::start(&ctx, Stdio::null());
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Dump as i32,
            opts: Some(rpc::Opts {
                pid: Some(root),
                log_file: Some("dump.log".into()),
                external: vec![format!("pid[{ino}]:extRootPidNS")],
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img/dump.log")).unwrap_or_default();
    assert!(resp.success, "DUMP: {:?}\n{log}", resp.cr_errmsg);
    s.finish();
    let before = t.stdout.finish("original");
    t.wait();

    let nsf = fs::File::open(format!("/proc/{init}/ns/pid")).expect("open the namespace");
    let mut s = Swrk::start_with(&ctx, Stdio::piped(), Some((nsf.as_raw_fd(), 4)));
    let mut out = s.child.stdout.take().expect("swrk's stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let (_, resp) = s.transact(
        &rpc::Req {
            r#type: ReqType::Restore as i32,
            opts: Some(rpc::Opts {
                rst_sibling: Some(true),
                log_file: Some("restore.log".into()),
                inherit_fd: vec![rpc::InheritFd {
                    key: "extRootPidNS".into(),
                    fd: 4,
                }],
                ..opts(&dir)
            }),
            ..Default::default()
        },
        |_| true,
    );
    let log = fs::read_to_string(ctx.path("img/restore.log")).unwrap_or_default();
    assert!(resp.success, "RESTORE: {:?}\n{log}", resp.cr_errmsg);
    let pid = resp.restore.map(|r| r.pid).unwrap_or(0);
    ctx.track(pid);
    assert_eq!(
        ppid(pid),
        my_pid(),
        "the restored root is the caller's child"
    );
    assert_eq!(ns_inode(pid, "pid"), ino, "inside the holder's namespace");
    assert_eq!(nspids(pid)[1], 2, "PID 2 there again");
    assert!(s.finish().success());
    let st = wait_pid(pid, timeout()).expect("our child's status");
    let rest = reader.join().expect("reader");
    assert_eq!(st.code(), reference.status.code(), "exit status");
    assert_same_output(
        "counter in an external PID namespace, restored as the caller's child",
        &reference.stdout,
        &[before, rest].concat(),
    );
    drop(nsf);
}
