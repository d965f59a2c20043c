//! End-to-end tests: a dump is invisible to the program. Threads blocked in epoll_wait,
//! poll, select, nanosleep, read, futex, rt_sigtimedwait (and their signal-mask forms)
//! go on waiting through `ckpt dump --leave-running`, through a dump that is refused
//! after the tree was frozen and queried, and through dump and restore: none of the
//! calls fails with EINTR or returns before it is fed (`tests/targets/blockers.c`).
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// What `blockers` prints when every call completed as fed.
const ALL_OK: &str = "ready\n\
    epoll_wait: ok\n\
    epoll_wait timeout: ok\n\
    epoll_pwait sigmask: ok\n\
    poll: ok\n\
    poll timeout: ok\n\
    ppoll sigmask: ok\n\
    select: ok\n\
    select timeout: ok\n\
    nanosleep: ok\n\
    read: ok\n\
    futex: ok\n\
    futex timeout: ok\n\
    sigtimedwait: ok\n\
    futex bitset: ok\n\
    done\n";

/// The system calls the threads of `blockers` block in: the main thread's read of stdin,
/// then one per blocker thread.
const BLOCKED_IN: &[i64] = &[
    libc::SYS_read,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_select,
    libc::SYS_nanosleep,
    libc::SYS_read,
    libc::SYS_futex,
    libc::SYS_futex,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_futex,
];

/// (state, syscall) of every thread of `pid`.
fn threads_in(pid: i32) -> Vec<(char, Option<i64>)> {
    tasks(pid)
        .into_iter()
        .map(|tid| {
            let stat =
                fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .unwrap_or('?');
            let nr = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            (state, nr)
        })
        .collect()
}

/// Wait until every thread of `blockers` sleeps in its call: the calls of [`BLOCKED_IN`],
/// where a call the kernel restarted through its restart block shows as restart_syscall.
/// Err once a thread is gone (its call returned) or after the timeout. `started`: all
/// the threads exist already (a restored process may still be creating them).
fn all_blocked(pid: i32, calls: &[i64], mut started: bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout();
    loop {
        let now = threads_in(pid);
        started |= now.len() == calls.len();
        if started && now.len() < calls.len() {
            return Err(format!(
                "only {} of its {} threads are left: a call returned (now (state, syscall): \
                 {now:?})",
                now.len(),
                calls.len()
            ));
        }
        let mut nrs: Vec<i64> = now.iter().filter_map(|t| t.1).collect();
        let sleeping = now.iter().all(|t| t.0 == 'S');
        let restarted = nrs
            .iter()
            .filter(|&&n| n == libc::SYS_restart_syscall)
            .count();
        nrs.retain(|&n| n != libc::SYS_restart_syscall);
        let mut missing = calls.to_vec();
        for n in &nrs {
            if let Some(i) = missing.iter().position(|m| m == n) {
                missing.remove(i);
            }
        }
        if sleeping && now.len() == calls.len() && missing.len() == restarted {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "its threads never all blocked in their calls (now (state, syscall): {now:?})"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// [`all_blocked`] for `blockers` (PID `pid`), or feed it through `p` (itself or the
/// `ckpt restore` that restored it) and fail with what it says went wrong.
fn wait_all_blocked(p: &mut Proc, pid: i32, started: bool, what: &str) {
    wait_blocked_in(p, pid, BLOCKED_IN, started, what)
}

/// [`wait_all_blocked`] for a `blockers` whose threads block in `calls`.
fn wait_blocked_in(p: &mut Proc, pid: i32, calls: &[i64], started: bool, what: &str) {
    if let Err(e) = all_blocked(pid, calls, started) {
        p.write_stdin(b"go\n");
        p.close_stdin();
        let fin = p.finish();
        panic!(
            "{what}: {e}\nits output:\n{}",
            String::from_utf8_lossy(&fin.stdout)
        );
    }
}

/// `ckpt dump PID -o IMG --leave-running` with `CKPT_FAULT=dump: collected`: refused
/// after every thread was frozen and queried; the process must run on untraced.
fn refused_dump(ctx: &Ctx, pid: i32, img: &Path) {
    let spec = Spec::new(ckpt_bin())
        .arg("dump")
        .arg(pid.to_string())
        .arg("-o")
        .arg(img)
        .arg("--leave-running")
        .env("CKPT_FAULT", "dump: collected")
        .cwd(&ctx.dir);
    let fin = ctx.spawn(&spec).finish();
    let stderr = String::from_utf8_lossy(&fin.stderr);
    assert!(
        !fin.status.success() && stderr.contains("injected fault"),
        "the dump with an injected fault must fail naming it ({:?}); stderr:\n{stderr}",
        fin.status
    );
    assert!(!img.exists(), "a refused dump left {}", img.display());
    assert_running_untraced(pid, "after a refused dump");
}

#[test]
fn blocked_calls_see_no_eintr_from_leave_running_and_refused_dumps() {
    let ctx = Ctx::new("blocked_calls_see_no_eintr_from_leave_running_and_refused_dumps");
    // nanosleep lasts long enough to be asleep through every dump.
    let spec = Spec::new(target("blockers")).arg("15").stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_lines(1);
    wait_all_blocked(&mut t, pid, true, "blockers");
    refused_dump(&ctx, pid, &ctx.path("refused.img"));
    wait_all_blocked(&mut t, pid, true, "blockers after a refused dump");
    for i in 0..3 {
        let img = ctx.path(&format!("run{i}.img"));
        ctx.dump_leave_running(pid, &img);
        wait_all_blocked(
            &mut t,
            pid,
            true,
            &format!("blockers after dump --leave-running #{i}"),
        );
    }
    refused_dump(&ctx, pid, &ctx.path("refused2.img"));
    wait_all_blocked(&mut t, pid, true, "blockers after a second refused dump");
    let last = ctx.dump_leave_running(pid, &ctx.path("last.img"));
    // poll and FUTEX_WAIT with a relative timeout are resumed through restart_syscall,
    // which an image cannot hold: the dump says so (twice).
    assert_eq!(
        last.stderr.matches("restart_syscall").count(),
        2,
        "the dump must warn about the two calls in restart_syscall; stderr:\n{}",
        last.stderr
    );
    wait_all_blocked(
        &mut t,
        pid,
        true,
        "blockers after the last dump --leave-running",
    );
    t.write_stdin(b"go\n");
    t.close_stdin();
    let fin = t.finish();
    assert_same_output(
        "blockers through dumps (--leave-running and refused)",
        ALL_OK.as_bytes(),
        &fin.stdout,
    );
    assert_eq!(fin.status.code(), Some(0), "exit status of blockers");
}

#[test]
fn blocked_calls_continue_after_restore_without_eintr() {
    let ctx = Ctx::new("blocked_calls_continue_after_restore_without_eintr");
    let spec = Spec::new(target("blockers")).arg("5").stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_lines(1);
    wait_all_blocked(&mut t, pid, true, "blockers");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_all_blocked(&mut r, pid, false, "restored blockers");
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_same_output(
        "blockers dumped and restored",
        ALL_OK.as_bytes(),
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "exit status of the restored blockers; stderr:\n{}",
        String::from_utf8_lossy(&fin.stderr)
    );
}

/// Start `ckpt dump PID --leave-running` and send `sig` to `pid` while the dump holds it
/// stopped (after the freeze, before the release); the dump must succeed.
fn signal_during_dump(ctx: &Ctx, pid: i32, sig: i32, img: &Path) {
    let spec = Spec::new(ckpt_bin())
        .arg("dump")
        .arg(pid.to_string())
        .arg("-o")
        .arg(img)
        .arg("--leave-running")
        .cwd(&ctx.dir);
    let mut dump = ctx.spawn(&spec);
    let deadline = Instant::now() + timeout();
    loop {
        let frozen =
            tracer_pid(pid) == Some(dump.pid) && proc_stat(pid).is_some_and(|s| s.0 == 't');
        if frozen {
            break;
        }
        assert!(
            Instant::now() < deadline && dump.try_wait().is_none(),
            "the dump of {pid} ended (or never froze it) before the signal could be sent"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(send_signal(pid, sig), "send signal {sig} to {pid}");
    let held = tracer_pid(pid) == Some(dump.pid);
    let fin = dump.finish();
    assert!(
        fin.status.success(),
        "dump --leave-running failed: {}",
        String::from_utf8_lossy(&fin.stderr)
    );
    assert!(
        held,
        "the dump released {pid} before the signal was sent: the test proves nothing \
         (make the process bigger)"
    );
    assert_running_untraced(pid, "after dump --leave-running");
}

#[test]
fn a_signal_handled_during_a_dump_still_interrupts_the_blocked_call() {
    let ctx = Ctx::new("a_signal_handled_during_a_dump_still_interrupts_the_blocked_call");
    let spec = Spec::new(target("blockers")).arg("handler").arg("128");
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    ctx.track(pid);
    t.wait_lines(1);
    wait_in_syscall(pid, libc::SYS_epoll_wait, "blockers handler");
    signal_during_dump(&ctx, pid, libc::SIGUSR1, &ctx.path("epoll.img"));
    t.wait_lines(2);
    wait_in_syscall(pid, libc::SYS_poll, "blockers handler");
    signal_during_dump(&ctx, pid, libc::SIGUSR1, &ctx.path("poll.img"));
    let fin = t.finish();
    assert_same_output(
        "blockers handler: a signal with a handler during each dump",
        b"ready\nepoll_wait: EINTR after the handler\npoll: EINTR after the handler\n",
        &fin.stdout,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "exit status of blockers handler"
    );
}

#[test]
fn calls_resumed_by_an_earlier_dump_continue_after_restore() {
    // A --leave-running dump, then a dump and restore: the calls the first dump
    // interrupted must still be restorable (not in restart_syscall, whose restart block
    // no image holds). poll and FUTEX_WAIT with a relative timeout are left out: the
    // kernel resumes them through restart_syscall (the dump warns).
    let ctx = Ctx::new("calls_resumed_by_an_earlier_dump_continue_after_restore");
    let spec = Spec::new(target("blockers"))
        .arg("8")
        .arg("exact")
        .stdin(In::Pipe);
    let calls: Vec<i64> = {
        let mut v = BLOCKED_IN.to_vec();
        for gone in [libc::SYS_poll, libc::SYS_futex] {
            if let Some(i) = v.iter().position(|&n| n == gone) {
                v.remove(i);
            }
        }
        v
    };
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_lines(1);
    wait_blocked_in(&mut t, pid, &calls, true, "blockers exact");
    ctx.dump_leave_running(pid, &ctx.path("first.img"));
    wait_blocked_in(
        &mut t,
        pid,
        &calls,
        true,
        "blockers after dump --leave-running",
    );
    let stuck: Vec<i32> = tasks(pid)
        .into_iter()
        .filter(|tid| {
            fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                .is_ok_and(|s| s.starts_with(&format!("{} ", libc::SYS_restart_syscall)))
        })
        .collect();
    assert!(
        stuck.is_empty(),
        "threads {stuck:?} were left in restart_syscall by dump --leave-running"
    );
    let img = ctx.path("img");
    let run = ctx.dump(pid, &img);
    assert!(
        !run.stderr.contains("restart_syscall"),
        "unexpected warning: {}",
        run.stderr
    );
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_blocked_in(&mut r, pid, &calls, false, "restored blockers");
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    let expected: String = ALL_OK
        .lines()
        .filter(|l| !l.starts_with("poll timeout") && !l.starts_with("futex timeout"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_same_output(
        "blockers exact: dump --leave-running, then dump and restore",
        expected.as_bytes(),
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "exit status of the restored blockers"
    );
}
