//! `ckpt dump --freeze-cgroup` (issue 15: a tree that is a whole cgroup, frozen with the
//! cgroup freezer, v2 and v1). Each test puts `tests/targets/freezer.c` in a cgroup of
//! its own (made at the root of the hierarchy, removed at the end) and checks the
//! program's behaviour and the state oracle's snapshot (restore), that a cgroup holding
//! a stranger or a tree reaching outside its cgroup is refused with the tree running on
//! and the cgroup thawed, that a cgroup its owner froze stays frozen, and that a dump
//! killed while the cgroup is frozen leaves it as it was (the guard process).
//!
//! Needs root. Run with cargo-nextest, one process per test.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::arch::ckpt_env;
use common::oracle::{self, Cmp, Snapshot};
use common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum V {
    V2,
    V1,
}

/// A cgroup made for a test (removed, thawed, when dropped), with the v1 freezer
/// hierarchy mounted for it if the host has none (unmounted at the end).
struct Cg {
    v: V,
    dir: PathBuf,
    mounted: Option<PathBuf>,
}

/// Where a hierarchy is mounted (fstype cgroup2, or cgroup with option `opt`).
fn mount_of(fstype: &str, opt: Option<&str>) -> Option<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (a, b) = l.split_once(" - ")?;
        let mut bf = b.split_whitespace();
        if bf.next()? != fstype {
            return None;
        }
        let _src = bf.next()?;
        let sopts = bf.next().unwrap_or("");
        if let Some(o) = opt {
            if !sopts.split(',').any(|x| x == o) {
                return None;
            }
        }
        Some(PathBuf::from(a.split_whitespace().nth(4)?))
    })
}

impl Cg {
    fn new(v: V, name: &str) -> Cg {
        let (base, mounted) = match v {
            V::V2 => (
                mount_of("cgroup2", None).expect("no cgroup2 hierarchy mounted"),
                None,
            ),
            V::V1 => match mount_of("cgroup", Some("freezer")) {
                Some(m) => (m, None),
                None => {
                    let m = std::env::temp_dir().join(format!("ckpt-freezer-v1-{name}"));
                    fs::create_dir_all(&m).expect("mkdir the freezer mount point");
                    let ok = std::process::Command::new("mount")
                        .args(["-t", "cgroup", "-o", "freezer", "ckpt-freezer"])
                        .arg(&m)
                        .status()
                        .expect("run mount");
                    assert!(ok.success(), "cannot mount a v1 freezer hierarchy");
                    (m.clone(), Some(m))
                }
            },
        };
        let dir = base.join(format!("ckpt-test-{name}"));
        // Left by an earlier run that was killed: emptied and removed.
        if dir.exists() {
            drop(Cg {
                v,
                dir: dir.clone(),
                mounted: None,
            });
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cg { v, dir, mounted }
    }

    fn arg(&self) -> String {
        format!("--freeze-cgroup={}", self.dir.display())
    }

    fn add(&self, pid: i32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move into the cgroup");
    }

    fn procs(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    fn set_frozen(&self, on: bool) {
        let (f, v) = match (self.v, on) {
            (V::V2, true) => ("cgroup.freeze", "1"),
            (V::V2, false) => ("cgroup.freeze", "0"),
            (V::V1, true) => ("freezer.state", "FROZEN"),
            (V::V1, false) => ("freezer.state", "THAWED"),
        };
        fs::write(self.dir.join(f), v).expect("write the freezer");
        let deadline = Instant::now() + timeout();
        while self.frozen() != on {
            assert!(Instant::now() < deadline, "the cgroup does not (un)freeze");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Frozen (and asked so), as the kernel shows it.
    fn frozen(&self) -> bool {
        match self.v {
            V::V2 => fs::read_to_string(self.dir.join("cgroup.events"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == "frozen 1"),
            V::V1 => {
                fs::read_to_string(self.dir.join("freezer.state")).unwrap_or_default() == "FROZEN\n"
            }
        }
    }

    /// Thawed and asked to be: what a dump must leave behind for an unfrozen cgroup.
    fn assert_thawed(&self, what: &str) {
        let asked = match self.v {
            V::V2 => fs::read_to_string(self.dir.join("cgroup.freeze")).unwrap_or_default(),
            V::V1 => fs::read_to_string(self.dir.join("freezer.state")).unwrap_or_default(),
        };
        assert!(
            !self.frozen() && (asked == "0\n" || asked == "THAWED\n"),
            "{what}: the cgroup {} is left frozen ({asked:?})",
            self.dir.display()
        );
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = match self.v {
            V::V2 => fs::write(self.dir.join("cgroup.freeze"), "0"),
            V::V1 => fs::write(self.dir.join("freezer.state"), "THAWED"),
        };
        for p in self.procs() {
            send_signal(p, libc::SIGKILL);
        }
        for _ in 0..200 {
            if fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(m) = &self.mounted {
            let _ = std::process::Command::new("umount").arg(m).status();
            let _ = fs::remove_dir(m);
        }
    }
}

/// The last "report:" line of `p` after asking for one.
fn report(p: &mut Proc) -> String {
    let n = p
        .stdout
        .text()
        .lines()
        .filter(|l| l.starts_with("report:"))
        .count();
    p.write_stdin(b"report\n");
    let deadline = Instant::now() + timeout();
    loop {
        let out = p.stdout.text();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("report:")).collect();
        if lines.len() > n {
            return lines[n].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no report from {}: {out}",
            p.label
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn forks_of(report: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix("forks="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forks= in {report:?}"))
}

/// `freezer MODE N` started, moved into `cg`, its N workers started.
fn start(ctx: &Ctx, cg: &Cg, mode: &str, n: usize) -> Proc {
    let spec = Spec::new(target("freezer"))
        .arg(mode)
        .arg(n.to_string())
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    ctx.track(t.pid);
    cg.add(t.pid);
    t.write_stdin(b"go\n");
    t.wait_for("ready\n");
    if mode == "quiet" {
        wait_process_tree(t.pid, n + 1, &ctx.name);
    }
    t
}

fn dump_args(pid: i32, img: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "dump".to_string(),
        pid.to_string(),
        "-o".into(),
        img.display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Dump (killing) a quiet tree in its own cgroup with the cgroup freezer, restore it,
/// compare the oracle's snapshots and the program's answers; it runs on and exits 0.
fn dump_restore(v: V, name: &str) {
    let ctx = Ctx::new(name);
    let cg = Cg::new(v, name);
    let mut t = start(&ctx, &cg, "quiet", 3);
    let pid = t.pid;
    let said = report(&mut t);
    assert_eq!(said, "report: workers=3 alive=3 forks=0");
    let before = Snapshot::at_rest(pid, name);
    let pids = process_tree(pid);
    let img = ctx.path("tree.img");
    let r = ctx.ckpt(&dump_args(pid, &img, &[&cg.arg(), "--json"]));
    r.assert_ok();
    let stats = r.stdout_text();
    assert!(
        stats.contains("\"cgroup_freeze\"") && stats.contains("\"frozen_before\": false"),
        "{stats}"
    );
    t.expect_killed();
    wait_pids_gone(&pids, name);
    cg.assert_thawed("after the dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run: {}",
            r.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = Snapshot::at_rest(pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: freezer tree"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    let mut in_cg = cg.procs();
    in_cg.sort_unstable();
    let mut want = pids.clone();
    want.sort_unstable();
    assert_eq!(in_cg, want, "the restored tree is back in its cgroup");
    assert_eq!(report(&mut r), "report: workers=3 alive=3 forks=0");
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
    assert!(text(&fin.stdout).ends_with("bye\n"));
}

#[test]
fn v2_tree_dump_restore() {
    dump_restore(V::V2, "freezer_v2_restore");
}

#[test]
fn v1_tree_dump_restore() {
    dump_restore(V::V1, "freezer_v1_restore");
}

/// A tree of 50 processes forking constantly: the cgroup freeze stops it at once; the
/// ptrace freeze is timed too (bounded: it may not converge). The tree runs on after
/// each --leave-running dump.
fn forking(v: V, name: &str) {
    let ctx = Ctx::new(name);
    let cg = Cg::new(v, name);
    let mut t = start(&ctx, &cg, "fork", 50);
    let pid = t.pid;
    let f0 = forks_of(&report(&mut t));
    let img = ctx.path("fork.img");
    let mut times = Vec::new();
    for _ in 0..3 {
        let r = ctx.ckpt(&dump_args(
            pid,
            &img,
            &[&cg.arg(), "--leave-running", "--json"],
        ));
        r.assert_ok();
        let s = r.stdout_text();
        times.push(s.clone());
        cg.assert_thawed("after a --leave-running dump");
        assert_running_untraced(pid, "after the dump");
    }
    let f1 = forks_of(&report(&mut t));
    std::thread::sleep(Duration::from_millis(100));
    let f2 = forks_of(&report(&mut t));
    assert!(f0 < f1 && f1 < f2, "the workers fork on: {f0} {f1} {f2}");
    // How long stopping every thread took (of which the cgroup's freeze), and the whole
    // time the tree was stopped.
    let frozen_ms = |s: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(s).expect("json stats");
        let f = v["frozen"]["secs"].as_f64().unwrap_or(0.0) * 1e3
            + v["frozen"]["nanos"].as_f64().unwrap_or(0.0) / 1e6;
        format!(
            "stopping {:.1} ms (cgroup {:.1} ms), frozen {f:.1} ms",
            v["freezing_us"].as_f64().unwrap_or(0.0) / 1e3,
            v["cgroup_freeze"]["freezing_us"].as_f64().unwrap_or(0.0) / 1e3
        )
    };
    let cg_ms: Vec<String> = times.iter().map(|s| frozen_ms(s)).collect();
    // The ptrace freeze of the same tree, for comparison (a failure is reported, not
    // asserted: it may not converge on a fast forker).
    let t0 = Instant::now();
    let r = ctx.ckpt(&dump_args(pid, &img, &["--leave-running", "--json"]));
    let pt = if r.status.success() {
        frozen_ms(&r.stdout_text())
    } else {
        format!(
            "failed after {:?}: {}",
            t0.elapsed(),
            r.stderr.lines().next().unwrap_or("")
        )
    };
    eprintln!("{name}: 50 forking workers: cgroup freeze {cg_ms:?}; ptrace freeze {pt}");
    assert_running_untraced(pid, "after the dumps");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
}

#[test]
fn v2_forking_tree() {
    forking(V::V2, "freezer_v2_fork");
}

#[test]
fn v1_forking_tree() {
    forking(V::V1, "freezer_v1_fork");
}

/// A cgroup holding a process outside the tree is refused, naming it; a tree with a
/// process outside the cgroup too. The tree runs on, the cgroup thawed, no image.
fn refusals(v: V, name: &str) {
    let ctx = Ctx::new(name);
    let cg = Cg::new(v, name);
    let mut t = start(&ctx, &cg, "quiet", 2);
    let pid = t.pid;
    let stranger = ctx.spawn(&Spec::new("/bin/sleep").arg("1000"));
    ctx.track(stranger.pid);
    cg.add(stranger.pid);
    let img = ctx.path("no.img");
    let r = ctx.ckpt(&dump_args(pid, &img, &[&cg.arg()]));
    r.assert_fails(1);
    r.assert_stderr_mentions(&["not in the dumped tree", &stranger.pid.to_string(), "sleep"]);
    assert!(!img.exists());
    cg.assert_thawed("after a refused dump");
    assert_running_untraced(pid, "after a refused dump");
    assert_eq!(report(&mut t), "report: workers=2 alive=2 forks=0");
    // The same through the criu front end (`--freeze-cgroup PATH`, as runc's
    // freeze_cgroup): mapped onto the engine's option, so refused the same way.
    let dir = ctx.path("cr");
    fs::create_dir_all(&dir).expect("mkdir cr");
    let cgdir = cg.dir.display().to_string();
    let pids = pid.to_string();
    let dirs = dir.display().to_string();
    let r = ctx.ckpt(&[
        "criu",
        "dump",
        "-t",
        &pids,
        "-D",
        &dirs,
        "-o",
        "d.log",
        "--freeze-cgroup",
        &cgdir,
    ]);
    assert_eq!(r.status.code(), Some(1));
    let log = fs::read_to_string(dir.join("d.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("Error") && l.contains("not in the dumped tree")),
        "{log}"
    );
    cg.assert_thawed("after a refused criu dump");
    assert_running_untraced(pid, "after a refused criu dump");
    send_signal(stranger.pid, libc::SIGKILL);
    // A worker moved out of the cgroup (to the hierarchy's root).
    let worker = process_tree(pid)
        .into_iter()
        .find(|&p| p != pid)
        .expect("a worker");
    let root = cg.dir.parent().expect("the hierarchy's root");
    fs::write(root.join("cgroup.procs"), worker.to_string()).expect("move out");
    let r = ctx.ckpt(&dump_args(pid, &img, &[&cg.arg()]));
    r.assert_fails(1);
    r.assert_stderr_mentions(&["not in that cgroup", &worker.to_string()]);
    assert!(!img.exists());
    cg.assert_thawed("after a refused dump");
    assert_running_untraced(pid, "after a refused dump");
    assert_running_untraced(worker, "after a refused dump");
    assert_eq!(report(&mut t), "report: workers=2 alive=2 forks=0");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
}

#[test]
fn v2_refusals() {
    refusals(V::V2, "freezer_v2_refused");
}

#[test]
fn v1_refusals() {
    refusals(V::V1, "freezer_v1_refused");
}

/// A cgroup its owner froze before the dump is frozen after a --leave-running dump, and
/// after a dump that fails once the tree is collected (a fault point); the tree runs
/// once its owner thaws it.
fn frozen_before(v: V, name: &str) {
    let ctx = Ctx::new(name);
    let cg = Cg::new(v, name);
    let mut t = start(&ctx, &cg, "fork", 4);
    let pid = t.pid;
    cg.set_frozen(true);
    let f0 = forks_of(&report_when_thawed(&mut t, &cg));
    cg.set_frozen(true);
    let img = ctx.path("frozen.img");
    let r = ctx.ckpt(&dump_args(
        pid,
        &img,
        &[&cg.arg(), "--leave-running", "--json"],
    ));
    r.assert_ok();
    assert!(r.stdout_text().contains("\"frozen_before\": true"));
    assert!(cg.frozen(), "the cgroup its owner froze is left frozen");
    // Still frozen a moment later: nothing forks.
    std::thread::sleep(Duration::from_millis(100));
    assert!(cg.frozen());
    // A dump that fails after the freeze (the fault point once the tree is collected).
    let r = ckpt_env(
        &ctx,
        &[
            "dump".as_ref(),
            pid.to_string().as_ref(),
            "-o".as_ref(),
            ctx.path("fail.img").as_os_str(),
            cg.arg().as_ref(),
        ],
        &[("CKPT_FAULT", "dump: collected")],
    );
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    assert!(cg.frozen(), "a failed dump leaves the owner's freeze");
    let f1 = forks_of(&report_when_thawed(&mut t, &cg));
    assert!(f1 >= f0);
    std::thread::sleep(Duration::from_millis(100));
    let f2 = forks_of(&report(&mut t));
    assert!(f2 > f1, "the tree runs once its owner thaws it: {f1} {f2}");
    assert_running_untraced(pid, "after thawing");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
}

/// Thaw the cgroup and ask for a report.
fn report_when_thawed(t: &mut Proc, cg: &Cg) -> String {
    cg.set_frozen(false);
    report(t)
}

#[test]
fn v2_frozen_before() {
    frozen_before(V::V2, "freezer_v2_frozen_before");
}

#[test]
fn v1_frozen_before() {
    frozen_before(V::V1, "freezer_v1_frozen_before");
}

/// ckpt killed (SIGKILL) while the cgroup is frozen, while threads are seized in it,
/// once it is thawed, and in the middle of the injected queries: the cgroup is back as
/// it was (thawed; or frozen when its owner had frozen it) and the tree runs on.
fn killed(v: V, name: &str) {
    let ctx = Ctx::new(name);
    let cg = Cg::new(v, name);
    let mut t = start(&ctx, &cg, "fork", 8);
    let pid = t.pid;
    let img = ctx.path("killed.img");
    for (at, owner_frozen) in [
        ("name:freezer: cgroup frozen", false),
        ("name:freezer: thread seized", false),
        ("name:freezer: cgroup thawed", false),
        ("60", false),
        ("name:freezer: thread seized", true),
        ("name:freezer: cgroup thawed", true),
    ] {
        if owner_frozen {
            cg.set_frozen(true);
        }
        let r = ckpt_env(
            &ctx,
            &[
                "dump".as_ref(),
                pid.to_string().as_ref(),
                "-o".as_ref(),
                img.as_os_str(),
                cg.arg().as_ref(),
            ],
            &[("CKPT_DIE_AT", at)],
        );
        assert_eq!(r.status.signal(), Some(libc::SIGKILL), "CKPT_DIE_AT={at}");
        // The guard acts once ckpt is gone.
        let deadline = Instant::now() + timeout();
        while cg.frozen() != owner_frozen {
            assert!(
                Instant::now() < deadline,
                "CKPT_DIE_AT={at}: the cgroup is {} after ckpt died",
                if owner_frozen { "thawed" } else { "frozen" }
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if owner_frozen {
            std::thread::sleep(Duration::from_millis(50));
            assert!(cg.frozen(), "CKPT_DIE_AT={at}: the owner's freeze stays");
            cg.set_frozen(false);
        }
        cg.assert_thawed(&format!("CKPT_DIE_AT={at}"));
        assert!(!img.exists());
        let deadline = Instant::now() + timeout();
        while tracer_pid(pid).unwrap_or(0) != 0 {
            assert!(Instant::now() < deadline, "still traced");
            std::thread::sleep(Duration::from_millis(5));
        }
        let f0 = forks_of(&report(&mut t));
        std::thread::sleep(Duration::from_millis(50));
        let f1 = forks_of(&report(&mut t));
        assert!(f1 > f0, "CKPT_DIE_AT={at}: the tree runs on ({f0} {f1})");
    }
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
}

#[test]
fn v2_killed_dump() {
    killed(V::V2, "freezer_v2_killed");
}

#[test]
fn v1_killed_dump() {
    killed(V::V1, "freezer_v1_killed");
}

/// `ckpt dump --freeze-cgroup ARGS`, failing the test if it runs longer than `timeout()`
/// (a seize of a thread that cannot trap waits for ever).
fn dump_within_timeout(args: &[String], what: &str) -> std::process::Output {
    let mut c = std::process::Command::new(ckpt_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ckpt dump");
    let deadline = Instant::now() + timeout();
    while c.try_wait().expect("wait ckpt").is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().expect("wait ckpt");
            panic!("{what}: ckpt dump hangs: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    c.wait_with_output().expect("wait ckpt")
}

/// A v1 cgroup its owner froze with a worker in it stopped by job control (SIGSTOP
/// before the freeze): /proc shows every frozen task alike, and a seize of the stopped
/// one waits for a trap it takes only once thawed (ckpt hung there). The dump
/// (`--leave-running`) finishes, leaves the cgroup frozen and the worker stopped
/// (SIGCONT continues it), the oracle sees the tree as before; a dump that kills and a
/// restore bring the worker back stopped.
#[test]
fn v1_frozen_before_with_a_worker_stopped_by_job_control() {
    let name = "freezer_v1_frozen_before_with_a_stopped_worker";
    let ctx = Ctx::new(name);
    let cg = Cg::new(V::V1, name);
    let mut t = start(&ctx, &cg, "quiet", 3);
    let pid = t.pid;
    let worker = *process_tree(pid)
        .iter()
        .find(|&&p| p != pid)
        .expect("a worker");
    send_signal(worker, libc::SIGSTOP);
    let deadline = Instant::now() + timeout();
    while proc_stat(worker).map(|s| s.0) != Some('T') {
        assert!(Instant::now() < deadline, "the worker does not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
    let before = Snapshot::at_rest(pid, name);
    cg.set_frozen(true);
    let img = ctx.path("left.img");
    let out = dump_within_timeout(
        &dump_args(pid, &img, &[&cg.arg(), "--leave-running", "--json"]),
        name,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"frozen_before\": true"));
    assert!(cg.frozen(), "the cgroup its owner froze is left frozen");
    cg.set_frozen(false);
    let after = Snapshot::at_rest(pid, name);
    assert_eq!(
        proc_stat(worker).map(|s| s.0),
        Some('T'),
        "the worker is still stopped once thawed"
    );
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: left running"),
        Cmp::LeftRunning,
        &before,
        &after,
        &[],
    );

    // Dumped again (killed) while frozen, and restored (into the thawed cgroup); the
    // restored tree is compared with the tree as it was right before that dump (the
    // first dump ran its threads: their rseq areas and stack pages are written, which
    // ends their sharing with the other processes' copies).
    let before = after;
    let pids = process_tree(pid);
    cg.set_frozen(true);
    let img = ctx.path("tree.img");
    let out = dump_within_timeout(&dump_args(pid, &img, &[&cg.arg()]), name);
    assert!(out.status.success(), "{}", text(&out.stderr));
    t.expect_killed();
    wait_pids_gone(&pids, name);
    cg.set_frozen(false);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run: {}",
            r.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let restored = Snapshot::at_rest(pid, name);
    assert_eq!(
        proc_stat(worker).map(|s| s.0),
        Some('T'),
        "restored stopped"
    );
    // Pages the workers still share with each other but no longer with their parent
    // (it ran in the first dump) come back as copies (README, "Known to come back
    // different"): allowed between workers only.
    let workers: Vec<i32> = pids.iter().copied().filter(|&p| p != pid).collect();
    let mut sibling_pages = Vec::new();
    for a in &workers {
        for b in &workers {
            sibling_pages.push(format!("p{a}.smaps.*.pages_shared_with_p{b}"));
        }
    }
    let sibling_pages: Vec<&str> = sibling_pages.iter().map(String::as_str).collect();
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: restored"),
        Cmp::Restored,
        &before,
        &restored,
        &sibling_pages,
    );
    send_signal(worker, libc::SIGCONT);
    assert_eq!(report(&mut r), "report: workers=3 alive=3 forks=0");
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
}
