//! End-to-end tests of pidfds restore used to refuse (issue 14). A pidfd of one thread
//! (`pidfd_open(tid, PIDFD_THREAD)`, Linux 6.9) and a dup of it come back on that
//! thread once it exists: fdinfo's Pid and NSpid are its ID (the state oracle compares
//! them inside dump and restore), a signal sent through it lands on that thread, poll
//! says readable once the thread ends. Pidfds of children that exited and were reaped
//! (one by exit code 3, one by SIGTERM, non-blocking with PIDFD_THREAD) come back as
//! pidfds of processes ckpt makes to end the same way and reaps: fdinfo shows "Pid: -1"
//! and "NSpid: -1", poll says readable and hung up, pidfd_send_signal fails with ESRCH,
//! waitid(P_PIDFD) with ECHILD, and PIDFD_GET_INFO tells the same exit status. A
//! restore failing as it makes such a process leaves nothing. (A pidfd of a process
//! outside the tree stays refused: tests/e2e_descs.rs.)
//!
//! The target is `tests/targets/pidgone.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use common::*;

/// `pidgone MODE` dumped mid-run and restored finishes like an uninterrupted run that
/// says each of `want`; a restore failing at `fault` first leaves nothing.
fn comes_back(tag: &str, mode: &str, want: &[&str], fault: Option<&str>) {
    let ctx = Ctx::new(tag);
    let spec = Spec::new(target("pidgone")).arg("60").arg(mode);
    let reference = ctx.spawn(&spec).finish();
    for w in want {
        assert!(
            text(&reference.stdout).contains(w),
            "{tag}: the reference run should say {w:?}:\n{}",
            text(&reference.stdout)
        );
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("pidgone.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
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

#[test]
fn a_pidfd_of_one_thread_comes_back_on_that_thread() {
    comes_back(
        "a_pidfd_of_one_thread_comes_back_on_that_thread",
        "thread",
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
        "reaped",
        &[
            "exited: flags 2, Pid -1, NSpid -1, poll 0x11",
            "exited: pidfd_send_signal ESRCH",
            "exited: waitid ECHILD",
            "killed: flags 4202, Pid -1, NSpid -1, poll 0x11",
        ],
        Some("make a reaped process's pidfd"),
    );
}
