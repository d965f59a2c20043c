//! The state oracle (tests/common/oracle/) against losses ckpt's own state comparison
//! cannot see (issue 13): each test runs `tests/targets/oracle.c` in one mode, which sets
//! up one piece of kernel state and waits, quiescent; dumps it, restores it, and compares
//! the oracle's snapshots of the original and of the restored tree, together with what
//! the task says of itself (`report`: prctl values, EINTRs of epoll_wait). A difference
//! fails the test unless it is a known loss of that test (KNOWN_LOSSES), which must then
//! still be there.
//!
//! Needs root (ptrace, restoring PIDs, pidfd_getfd, pagemap frame numbers). Run with
//! cargo-nextest, one process per test.

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// The last line of `p`'s output that starts with "report:", after asking for one.
fn report(p: &mut Proc, nth: usize) -> String {
    p.write_stdin(b"report\n");
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let out = p.stdout.text();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("report:")).collect();
        if lines.len() >= nth {
            return lines[nth - 1].to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no report from {}: {out}",
            p.label
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The oracle's snapshot of the tree of `pid` once it is at rest (a thread may still be
/// on its way to sleep, e.g. glibc's timer helper thread, just after "ready").
fn at_rest(pid: i32, what: &str) -> Snapshot {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let s = Snapshot::take(pid);
        if s.still() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the target never came to rest (moving: {:?}; states: {:?})",
            s.volatile,
            s.entries
                .iter()
                .filter(|(k, _)| k.ends_with(".stat.state"))
                .map(|(k, v)| format!("{k}={}", v.1))
                .collect::<Vec<_>>()
        );
    }
}

/// Run `oracle MODES`, dump it once ready (killing it), restore it, and compare the
/// oracle's snapshots (and the task's own reports) of the original and the restored
/// tree, at the same quiescent point. Then let it exit. Returns the restored run's end.
fn oracle_case(name: &str, modes: &[&str], procs: usize) -> Finished {
    let ctx = Ctx::new(name);
    let mut spec = Spec::new(target("oracle")).stdin(In::Pipe).cwd(&ctx.dir);
    for m in modes {
        spec = spec.arg(m);
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    wait_process_tree(pid, procs, name);
    let said = report(&mut t, 1);
    let before = at_rest(pid, name).with_report(pid, &said);
    let img = ctx.path("oracle.img");
    // the harness's own snapshot and comparison run inside dump and restore too
    let pids = process_tree(pid);
    ctx.dump(pid, &img);
    t.expect_killed();
    // children killed after their parent are ours to reap
    wait_pids_gone(&pids, name);
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
    let after = at_rest(pid, name);
    let said = report(&mut r, 1);
    let after = after.with_report(pid, &said);
    assert!(
        before.still() && after.still(),
        "{name}: the target should be quiescent on both sides (moving: {:?} / {:?})",
        before.volatile,
        after.volatile
    );
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: oracle target {modes:?}"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    r.write_stdin(b"exit\n");
    r.close_stdin();
    r.finish()
}

fn assert_exit_0(name: &str, fin: &Finished) {
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: the restored tree's exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

#[test]
fn oracle_nonblock_of_a_second_pipe_description() {
    let n = "oracle_nonblock_of_a_second_pipe_description";
    assert_exit_0(n, &oracle_case(n, &["nonblock"], 1));
}

#[test]
fn oracle_oom_score_adj() {
    let n = "oracle_oom_score_adj";
    assert_exit_0(n, &oracle_case(n, &["oom"], 1));
}

#[test]
fn oracle_map_noreserve() {
    let n = "oracle_map_noreserve";
    assert_exit_0(n, &oracle_case(n, &["noreserve"], 1));
}

#[test]
fn oracle_map_droppable() {
    let n = "oracle_map_droppable";
    assert_exit_0(n, &oracle_case(n, &["droppable"], 1));
}

#[test]
fn oracle_thp_disable() {
    let n = "oracle_thp_disable";
    assert_exit_0(n, &oracle_case(n, &["thp"], 1));
}

#[test]
fn oracle_cow_pages_shared_with_a_child() {
    let n = "oracle_cow_pages_shared_with_a_child";
    assert_exit_0(n, &oracle_case(n, &["cow"], 2));
}

#[test]
fn oracle_memfd_mode() {
    let n = "oracle_memfd_mode";
    assert_exit_0(n, &oracle_case(n, &["memfd"], 1));
}

#[test]
fn oracle_deleted_file_owner_and_holes() {
    let n = "oracle_deleted_file_owner_and_holes";
    assert_exit_0(n, &oracle_case(n, &["deleted"], 1));
}

/// Two processes sharing one descriptor table (CLONE_FILES) come back sharing it (the
/// oracle compares kcmp KCMP_FILES between them; tests/e2e_clonefiles.rs has more).
#[test]
fn oracle_clone_files_shared_table() {
    let n = "oracle_clone_files_shared_table";
    assert_exit_0(n, &oracle_case(n, &["clonefiles"], 2));
}

#[test]
fn oracle_sigev_thread_timer() {
    let n = "oracle_sigev_thread_timer";
    oracle_case(n, &["sigevthread"], 1);
}

/// The restored SIGEV_THREAD timer still runs its function (glibc's helper thread gets
/// its signal 32): the process neither dies of that signal nor stops ticking.
#[test]
fn sigev_thread_timer_keeps_running_its_function_after_restore() {
    let ctx = Ctx::new("sigev_thread_timer_keeps_running_its_function_after_restore");
    let spec = Spec::new(target("oracle"))
        .arg("sigevfast")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(b"ticks\n");
    t.wait_for("ticking\n");
    let pid = t.pid;
    let img = ctx.path("timer.img");
    // Dumped without the state oracle's snapshot: the timer makes a thread every 20 ms,
    // whose stack glibc maps and unmaps as it goes, so the memory map moves while no
    // task is seen running (a CI run saw a new stack area). `oracle_sigev_thread_timer`
    // compares the same program with an hourly timer.
    ctx.track(pid);
    ctx.try_dump(pid, &img).assert_ok();
    t.expect_killed();
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"ticks\nexit\n");
    let fin = r.finish();
    assert_eq!(
        text(&fin.stdout),
        "ticking\nbye\n",
        "the restored timer; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_exit_0("sigev_thread_timer", &fin);
}

#[test]
fn oracle_unix_socketpair_shutdown() {
    let n = "oracle_unix_socketpair_shutdown";
    assert_exit_0(n, &oracle_case(n, &["sockshut"], 1));
}

#[test]
fn oracle_pipe_owner_and_signal() {
    let n = "oracle_pipe_owner_and_signal";
    assert_exit_0(n, &oracle_case(n, &["setown"], 1));
}

#[test]
fn oracle_epoll_wait_across_the_freeze() {
    let n = "oracle_epoll_wait_across_the_freeze";
    assert_exit_0(n, &oracle_case(n, &[], 1));
}

/// `dump --leave-running` must be invisible to the original: compare it (and what it
/// says of itself, e.g. whether its epoll_wait failed with EINTR) before and after.
#[test]
fn oracle_epoll_wait_across_a_leave_running_dump() {
    let n = "oracle_epoll_wait_across_a_leave_running_dump";
    let ctx = Ctx::new(n);
    let spec = Spec::new(target("oracle")).stdin(In::Pipe).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let said = report(&mut t, 1);
    let before = Snapshot::take(pid).with_report(pid, &said);
    // the harness compares the original before and after inside this call too
    ctx.dump_leave_running(pid, &ctx.path("oracle.img"));
    let said = report(&mut t, 2);
    let after = Snapshot::take(pid).with_report(pid, &said);
    oracle::assert_same_kernel_state(
        n,
        &format!("{n}: the original after dump --leave-running"),
        Cmp::LeftRunning,
        &before,
        &after,
        &[],
    );
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_exit_0(n, &t.finish());
}

#[test]
fn oracle_prctl_state() {
    let n = "oracle_prctl_state";
    assert_exit_0(n, &oracle_case(n, &["prctl"], 1));
}
