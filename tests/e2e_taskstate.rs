//! End-to-end tests of task state that belongs to each thread or to a process's run
//! state (issues 13 and 14): threads with credentials and names of their own, and
//! processes stopped by job control. Each test compares the restored program's output
//! with an uninterrupted run's, and the state oracle compares what the kernel shows of
//! the restored tree with the original's (`Ctx::dump` and `Ctx::restore` take and compare
//! its snapshots, /proc/PID/task/TID/status of every thread among them).
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::*;

/// The lines of /proc/PID/task/TID/status that hold credentials, and the thread's name.
fn thread_creds(pid: i32, tid: i32) -> Vec<String> {
    let keys = [
        "Name:",
        "Uid:",
        "Gid:",
        "Groups:",
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
    ];
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/task/{tid}/status: {e}"));
    s.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect()
}

/// Every thread's credential lines, by thread ID.
fn all_thread_creds(pid: i32) -> Vec<(i32, Vec<String>)> {
    tasks(pid)
        .into_iter()
        .map(|t| (t, thread_creds(pid, t)))
        .collect()
}

/// Three threads that changed their own credentials with raw system calls (user and
/// group IDs and groups; capability sets and the bounding set; securebits and
/// no_new_privs) and named themselves: each keeps them, as each thread's own report and
/// /proc/PID/task/TID/status show after restore.
#[test]
fn threads_with_their_own_credentials_and_names_survive_restore() {
    let ctx = Ctx::new("threads_with_their_own_credentials_and_names_survive_restore");
    let spec = Spec::new(target("threadcreds")).arg("30").arg("sleep=10");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0), "reference run");
    let out = text(&reference.stdout);
    assert!(
        out.contains("  uids: name=uids secbits=0 nnp=0 Uid=1000,1001,1002,1001 Gid=100,101,102,101 Groups=5,6 ")
            && out.contains("  secbits: name=secbits secbits=0x11 nnp=1 "),
        "threadcreds did not set up its threads:\n{out}"
    );
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 5/");
    let pid = t.pid;
    let creds_before = all_thread_creds(pid);
    assert_eq!(creds_before.len(), 4, "threads: {creds_before:?}");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&[pid], "threadcreds after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    let n = r.stdout.lines();
    r.wait_lines(n + 1);
    assert_eq!(
        all_thread_creds(pid),
        creds_before,
        "the restored threads' names and credentials (left) differ from the original's"
    );
    let fin = r.finish();
    assert_tree_finished_like_reference("threadcreds", &reference.stdout, before, &fin, &[pid]);
}
