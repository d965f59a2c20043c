//! Seccomp filters installed while the program still had CAP_SYS_ADMIN, without
//! no_new_privs, then CAP_SYS_ADMIN dropped (issues 15 and 16: what runc does for every
//! container under Docker's or Podman's default seccomp profile). The restore installs
//! such filters before the credentials and gives the threads their credentials under
//! them; dump refuses filters that would deny one of those calls, naming it.
//!
//! The target is `tests/targets/seccap.c`: two threads under a filter shared through
//! TSYNC (uname fails with EPERM, mknodat with EACCES), the worker under one of its own
//! too (getppid fails with EACCES); each thread drops CAP_SYS_ADMIN (staying root, or
//! becoming user 1000 with two capabilities kept). Each test compares the restored
//! program's behaviour (its own report: which calls fail with which errno, its status
//! lines), its kernel-visible state (the state oracle's snapshot: /proc status of every
//! thread, Seccomp, Seccomp_filters, NoNewPrivs, Cap*, Uid...) and the filters read
//! back through ptrace, with the original's.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// Each thread's filters, in thread order.
fn all_filters(pid: i32) -> Vec<Vec<(Vec<u8>, u64)>> {
    tasks(pid).into_iter().map(filters_of).collect()
}

/// The "report:" lines `p` prints for its `nth` report (two per report: main, worker).
fn report(p: &mut Proc, nth: usize) -> String {
    report_of(p, nth, 2)
}

/// The `per` "report:" lines `p` prints for its `nth` report.
fn report_of(p: &mut Proc, nth: usize, per: usize) -> String {
    p.write_stdin(b"report\n");
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let out = p.stdout.text();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("report:")).collect();
        if lines.len() >= per * nth {
            return lines[per * (nth - 1)..per * nth].join("\n");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no report from {}: {out}",
            p.label
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `seccap MODE` dumped once set up and restored (after a restore failing at step
/// `fault`, which must leave nothing): the restored threads report the same (`expect`:
/// the original's lines, checked first), the oracle sees the same kernel state, and
/// the filters read back are the original's.
fn restored_like_original(name: &str, mode: &str, expect: &[&str], fault: &str) {
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("seccap"))
        .arg(mode)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    ctx.track(pid);
    let said = report(&mut t, 1);
    for e in expect {
        assert!(
            said.contains(e),
            "seccap {mode} did not set up ({e:?}):\n{said}"
        );
    }
    let filters = all_filters(pid);
    assert_eq!(filters.len(), 2, "threads: {filters:?}");
    assert_eq!((filters[0].len(), filters[1].len()), (1, 2), "{filters:?}");
    let before = Snapshot::at_rest(pid, name).with_report(pid, &said);
    let img = ctx.path("seccap.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &[pid], &[]);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let after = Snapshot::at_rest(pid, name);
    assert_eq!(
        all_filters(pid),
        filters,
        "{name}: the restored threads' filters (left) differ from the original's"
    );
    let said_after = report(&mut r, 1);
    assert_eq!(said_after, said, "{name}: the restored program's report");
    let after = after.with_report(pid, &said_after);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: seccap {mode}"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: the restored program's exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

/// Root threads that dropped CAP_SYS_ADMIN (bounding, effective, permitted) after
/// installing their filters come back under the same filters, without no_new_privs,
/// without CAP_SYS_ADMIN: uname still fails with EPERM, mknodat with EACCES, the
/// worker's getppid with EACCES; getpid works.
#[test]
fn filters_installed_before_dropping_cap_sys_admin_come_back() {
    restored_like_original(
        "filters_installed_before_dropping_cap_sys_admin_come_back",
        "capdrop",
        &[
            "report: main uname=-1/1 getppid=ok getpid=ok mknod=-1/13 Uid=0,0,0,0 \
             CapPrm=000001fffedfffff CapEff=000001fffedfffff CapBnd=000001fffedfffff \
             NoNewPrivs=0 Seccomp=2 Seccomp_filters=1",
            "report: worker uname=-1/1 getppid=-1/13 getpid=ok mknod=-1/13",
        ],
        "capset",
    );
}

/// Threads that became user 1000 (groups, keep_caps, two capabilities kept) after
/// installing their filters come back so, under the same filters.
#[test]
fn filters_installed_before_becoming_another_user_come_back() {
    restored_like_original(
        "filters_installed_before_becoming_another_user_come_back",
        "user",
        &[
            "report: main uname=-1/1 getppid=ok getpid=ok mknod=-1/13 Uid=1000,1000,1000,1000 \
             CapPrm=0000000000000420 CapEff=0000000000000420",
            "report: worker uname=-1/1 getppid=-1/13 getpid=ok mknod=-1/13 \
             Uid=1000,1000,1000,1000",
            "NoNewPrivs=0 Seccomp=2 Seccomp_filters=2",
        ],
        "seccomp(SECCOMP_SET_MODE_FILTER)",
    );
}

/// The same in a user namespace of the tree's own (`unshare -U -r`, as a rootless
/// container's runtime makes one), one thread: root there installed the filter with
/// CAP_SYS_ADMIN in the namespace, then dropped it. The restore joins the new user
/// namespace first, installs the filter there (with CAP_SYS_ADMIN in it), then sets
/// the credentials under it. (`ctx.dump` and `ctx.restore` compare the oracle's
/// snapshots: /proc status, the namespace's maps and owner...)
#[test]
fn filters_installed_before_the_drop_in_a_user_namespace_come_back() {
    let name = "filters_installed_before_the_drop_in_a_user_namespace_come_back";
    let ctx = Ctx::new(name);
    let unshare = std::path::PathBuf::from("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let spec = Spec::new(unshare)
        .arg("-U")
        .arg("-r")
        .arg(target("seccap"))
        .arg("solo")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    ctx.track(pid);
    let said = report_of(&mut t, 1, 1);
    let e = "report: main uname=-1/1 getppid=ok getpid=ok mknod=-1/13 Uid=0,0,0,0 \
             CapPrm=000001ffffdfffff CapEff=000001ffffdfffff CapBnd=000001ffffdfffff \
             NoNewPrivs=0 Seccomp=2 Seccomp_filters=1";
    assert!(said.contains(e), "seccap did not set up ({e:?}):\n{said}");
    let filters = all_filters(pid);
    assert_eq!(filters.len(), 1, "{filters:?}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).ok(),
        std::fs::read_link("/proc/self/ns/user").ok(),
        "seccap runs in a user namespace of its own"
    );
    let img = ctx.path("seccap.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "capset", &[pid], &[]);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and the restored seccap");
    assert_eq!(restored[1], pid, "restored with its PID");
    assert_eq!(
        all_filters(pid),
        filters,
        "the restored thread's filter (left) differs from the original's"
    );
    assert_eq!(
        report_of(&mut r, 1, 1),
        said,
        "the restored program's report"
    );
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the restored program's exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

/// A filter that denies capset, which the restore needs under it, is refused at dump
/// naming the call; the program runs on, untouched.
#[test]
fn a_filter_denying_the_restores_capset_is_refused_at_dump() {
    let name = "a_filter_denying_the_restores_capset_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("seccap"))
        .arg("denycapset")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    ctx.track(pid);
    let said = report(&mut t, 1);
    let img = ctx.path("img");
    let r = ctx.try_dump(pid, &img);
    let err = r.stderr.clone();
    assert_eq!(
        r.status.code(),
        Some(1),
        "the dump should be refused; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for w in [
        &format!("process {pid}") as &str,
        "before dropping CAP_SYS_ADMIN",
        "capset",
        "SECCOMP_RET_ERRNO (errno 1)",
    ] {
        assert!(err.contains(w), "the refusal should say {w:?}:\n{err}");
    }
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    assert_running_untraced(pid, "the program after the refused dump");
    assert_eq!(
        report(&mut t, 2),
        said,
        "the program's report after the refusal"
    );
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "exit status");
}
