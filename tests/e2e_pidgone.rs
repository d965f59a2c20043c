//! End-to-end tests of pidfds restore used to refuse (issue 14). A pidfd of one thread
//! (`pidfd_open(tid, PIDFD_THREAD)`, Linux 6.9) and a dup of it come back on that
//! thread once it exists: fdinfo's Pid and NSpid are its ID (the state oracle compares
//! them inside dump and restore), a signal sent through it lands on that thread, poll
//! says readable once the thread ends. Pidfds of children that exited and were reaped
//! (one by exit code 3, one by SIGTERM, non-blocking with PIDFD_THREAD) come back as
//! pidfds of processes ckpt makes to end the same way and reaps: fdinfo shows "Pid: -1"
//! and "NSpid: -1", poll says readable and hung up, pidfd_send_signal fails with ESRCH,
//! waitid(P_PIDFD) with ECHILD, and PIDFD_GET_INFO tells the same exit status. A
//! restore failing as it makes such a process leaves nothing. A reaped process that
//! exited in another cgroup (one the test makes) comes back made in that cgroup, so
//! PIDFD_GET_INFO tells its cgroup ID; if that cgroup is gone by the restore, in ckpt's.
//! (A pidfd of a process outside the tree stays refused: tests/e2e_descs.rs.)
//!
//! The target is `tests/targets/pidgone.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use common::*;

/// `pidgone MODE...` dumped mid-run and restored finishes like an uninterrupted run that
/// says each of `want`; a restore failing at `fault` first leaves nothing.
fn comes_back(tag: &str, mode: &[&str], want: &[&str], fault: Option<&str>) {
    let ctx = Ctx::new(tag);
    let spec = mode
        .iter()
        .fold(Spec::new(target("pidgone")).arg("60"), |s, a| s.arg(a));
    let reference = ctx.spawn(&spec).finish();
    for w in want {
        assert!(
            text(&reference.stdout).contains(w),
            "{tag}: the reference run should say {w:?}:\n{}",
            text(&reference.stdout)
        );
    }
    let (pid, img, before) = run_and_dump(&ctx, &spec, tag);
    assert_has_kinds(&ctx, &img, &["Pidfd"], tag);
    if let Some(fault) = fault {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &[pid], &[]);
    }
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        &format!("{tag} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &[pid],
    );
}

/// A run of `spec` dumped (killed) at its third step, once gone: its PID, the image and
/// what it printed.
fn run_and_dump(ctx: &Ctx, spec: &Spec, tag: &str) -> (i32, std::path::PathBuf, Vec<u8>) {
    let mut t = ctx.spawn(spec);
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("pidgone.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    (pid, img, before)
}

#[test]
fn a_pidfd_of_one_thread_comes_back_on_that_thread() {
    comes_back(
        "a_pidfd_of_one_thread_comes_back_on_that_thread",
        &["thread"],
        &[
            "thread pidfd: flags 202, Pid is the thread's: yes, NSpid is the thread's: yes",
            "while it runs: poll 0\n",
            "the signal went to: the thread",
            "once it ended: poll 0x11, Pid -1",
            "the dup is the same description: yes",
        ],
        None,
    );
}

#[test]
fn pidfds_of_reaped_processes_come_back_reaped() {
    comes_back(
        "pidfds_of_reaped_processes_come_back_reaped",
        &["reaped"],
        &[
            "exited: flags 2, Pid -1, NSpid -1, poll 0x11",
            "exited: pidfd_send_signal ESRCH",
            "exited: waitid ECHILD",
            "killed: flags 4202, Pid -1, NSpid -1, poll 0x11",
        ],
        Some("make a reaped process's pidfd"),
    );
}

/// The child that exited with code 3 had moved itself into a cgroup of its own: the
/// process ckpt makes to end the same way is made in that cgroup (clone3 with
/// CLONE_INTO_CGROUP), so PIDFD_GET_INFO tells the same cgroup ID; the other one ended
/// in the target's cgroup, and its process is made there.
#[test]
fn a_reaped_pidfd_comes_back_in_the_cgroup_its_process_exited_in() {
    let cg = TestCgroup::make("pidgone-cg");
    let dir = cg.0.display().to_string();
    comes_back(
        "a_reaped_pidfd_comes_back_in_the_cgroup_its_process_exited_in",
        &["reapedcg", &dir],
        &[
            "exited: exit status 0x300",
            "exited: cgroup ID is CGROUP's: yes",
            "killed: cgroup ID is CGROUP's: no",
        ],
        None,
    );
}

/// That cgroup removed between dump and restore: the restore goes on, the process made
/// in ckpt's cgroup (what the README lists as coming back different), and the pidfd
/// tells the same exit status.
#[test]
fn a_reaped_pidfd_whose_cgroup_is_gone_comes_back_in_ckpts() {
    let tag = "a_reaped_pidfd_whose_cgroup_is_gone_comes_back_in_ckpts";
    let ctx = Ctx::new(tag);
    let cg = TestCgroup::make("pidgone-gone");
    let spec = Spec::new(target("pidgone"))
        .arg("60")
        .arg("reapedcg")
        .arg(&cg.0);
    let (_, img, _) = run_and_dump(&ctx, &spec, tag);
    drop(cg);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_eq!(fin.status.code(), Some(0), "{tag}: {}", text(&fin.stderr));
    let out = text(&fin.stdout);
    for w in [
        "exited: exit status 0x300",
        "killed: exit status 0xf",
        "done",
    ] {
        assert!(
            out.contains(w),
            "{tag}: the restored run should say {w:?}:\n{out}"
        );
    }
    assert!(
        !out.contains("cgroup ID is CGROUP's"),
        "{tag}: the cgroup is gone:\n{out}"
    );
}
