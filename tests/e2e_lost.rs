//! End-to-end tests of processes that a dump once recorded and killed and a restore then
//! refused or failed to bring back (issue 13). Each case must end either restored right
//! (output byte for byte the uninterrupted run's, and the kernel's view of the restored
//! state the original's) or refused at dump, before anything is killed, with the target
//! running on untouched. `ckpt check` runs before each restore and must agree with it.
//!
//! The target is `tests/targets/lost.c` (one mode per case). Needs root. Run with
//! cargo-nextest, one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const STEPS: u32 = 30;

/// `lost MODE GO [STEPS]`.
fn spec(mode: &str, go: &Path) -> Spec {
    Spec::new(target("lost"))
        .arg(mode)
        .arg(go)
        .arg(STEPS.to_string())
}

/// A run of `mode` with its GO file there from the start: the reference output.
fn reference(ctx: &Ctx, mode: &str) -> Finished {
    let go = ctx.path(&format!("{mode}-refgo"));
    fs::write(&go, "").expect("create go file");
    let r = ctx.reference(&spec(mode, &go).cwd(ctx.path("")));
    assert_eq!(
        r.status.code(),
        Some(0),
        "{mode}: reference run; stderr:\n{}",
        text(&r.stderr)
    );
    assert!(
        text(&r.stdout).ends_with("done\n"),
        "{mode}: reference output:\n{}",
        text(&r.stdout)
    );
    r
}

struct Dumped {
    img: PathBuf,
    go: PathBuf,
    before: Vec<u8>,
    pids: Vec<i32>,
}

/// Start `mode` (a tree of `n` live processes), wait for `k` lines, dump it (which kills
/// it) and wait until it is gone.
fn start_and_dump(ctx: &Ctx, mode: &str, n: usize, k: usize) -> Dumped {
    let go = ctx.path(&format!("{mode}-go"));
    let mut t = ctx.spawn(&spec(mode, &go).cwd(ctx.path("")));
    t.wait_lines(k);
    wait_process_tree(t.pid, n, mode);
    // Zombies too: they are ours to reap once the dump killed their parent.
    let pids = process_tree(t.pid);
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{mode}.img"));
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{mode}: original"));
    wait_pids_gone(&pids, &format!("{mode}: original after the dump"));
    Dumped {
        img,
        go,
        before,
        pids,
    }
}

/// `ckpt check` says the image can be restored here.
fn assert_check_ok(ctx: &Ctx, d: &Dumped, mode: &str) {
    let c = ctx.check(&d.img);
    assert_eq!(
        c.code(),
        Some(0),
        "{mode}: check before restore must accept the image:\n{}",
        c.stderr
    );
}

/// Restore `d`; `inspect` looks at the restored tree once it printed a line (before GO);
/// then the whole output must be the reference's.
fn restore_and_finish(
    ctx: &Ctx,
    d: &Dumped,
    reference: &Finished,
    mode: &str,
    inspect: impl FnOnce(),
) {
    assert_check_ok(ctx, d, mode);
    let mut r = ctx.restore(&d.img, &[], In::Null);
    r.wait_lines(1);
    inspect();
    fs::write(&d.go, "").expect("create go file");
    let fin = r.finish();
    assert_tree_finished_like_reference(mode, &reference.stdout, d.before.clone(), &fin, &d.pids);
}

/// A refused dump: exit 1 naming one of `words`, the target untouched (running, not
/// traced) and then finishing exactly like the reference.
fn assert_refused_and_runs_on(ctx: &Ctx, mode: &str, n: usize, words: &[&str]) {
    let reference = reference(ctx, mode);
    let go = ctx.path(&format!("{mode}-go"));
    let mut t = ctx.spawn(&spec(mode, &go).cwd(ctx.path("")));
    t.wait_lines(5);
    let pids = wait_process_tree(t.pid, n, mode);
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{mode}.img"));
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(words);
    assert!(!img.exists(), "{mode}: a refused dump left an image");
    for &p in &pids {
        assert_running_untraced(p, &format!("{mode} after the refused dump"));
    }
    fs::write(&go, "").expect("create go file");
    let fin = t.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{mode}: the original after a refused dump"
    );
    assert_same_output(mode, &reference.stdout, &fin.stdout);
}

/// Field `n` (1-based, as proc(5) numbers them) of /proc/PID/stat.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// A line of /proc/PID/task/TID/status, e.g. "SigPnd".
fn task_status(pid: i32, tid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_string())
    })
}

/// Item 1: a child killed by SIGKILL and not reaped comes back as a zombie with that
/// status (restore used to try to reset SIGKILL's disposition: EINVAL).
#[test]
fn zombie_killed_by_sigkill_is_restored() {
    let ctx = Ctx::new("zombie_killed_by_sigkill_is_restored");
    let reference = reference(&ctx, "killedzombie");
    let d = start_and_dump(&ctx, "killedzombie", 1, 5);
    let root = d.pids[0];
    restore_and_finish(&ctx, &d, &reference, "killedzombie", || {
        let kids = process_tree(root);
        let z: Vec<i32> = kids.into_iter().filter(|&p| p != root).collect();
        assert_eq!(
            z.len(),
            1,
            "killedzombie: the restored root's children: {z:?}"
        );
        assert_eq!(
            proc_stat(z[0]).map(|s| s.0),
            Some('Z'),
            "killedzombie: the child"
        );
        assert_eq!(
            stat_field(z[0], 52).as_deref(),
            Some("9"),
            "killedzombie: the zombie's exit status (killed by SIGKILL)"
        );
    });
}

/// Item 7: a signal pending on one thread (not the main one) is queued to that thread
/// again (it used to be queued before the thread existed: ESRCH).
#[test]
fn signal_pending_on_one_thread_is_restored_to_that_thread() {
    let ctx = Ctx::new("signal_pending_on_one_thread_is_restored_to_that_thread");
    let reference = reference(&ctx, "threadsig");
    assert!(
        text(&reference.stdout).contains("thread: took signal 10 value 4242"),
        "threadsig reference:\n{}",
        text(&reference.stdout)
    );
    let d = start_and_dump(&ctx, "threadsig", 1, 5);
    let root = d.pids[0];
    restore_and_finish(&ctx, &d, &reference, "threadsig", || {
        let tids = tasks(root);
        assert_eq!(tids.len(), 2, "threadsig: restored threads {tids:?}");
        let usr1 = format!("{:016x}", 1u64 << (libc::SIGUSR1 - 1));
        for &tid in &tids {
            let pnd = task_status(root, tid, "SigPnd");
            let want = if tid == root {
                "0000000000000000"
            } else {
                usr1.as_str()
            };
            assert_eq!(
                pnd.as_deref(),
                Some(want),
                "threadsig: SigPnd of thread {tid}"
            );
        }
        assert_eq!(
            task_status(root, root, "ShdPnd").as_deref(),
            Some("0000000000000000"),
            "threadsig: nothing pending process-wide"
        );
    });
}

/// Item 2: a process in a group whose leader has exited and been reaped: the group
/// cannot be created again without its leader, so dump refuses it (it used to succeed,
/// kill the tree and leave an image that plan refused).
#[test]
fn process_in_a_group_whose_leader_is_gone_is_refused_at_dump() {
    let ctx = Ctx::new("process_in_a_group_whose_leader_is_gone_is_refused_at_dump");
    assert_refused_and_runs_on(&ctx, "orphangroup", 2, &["leader has exited"]);
}

/// Item 6: a descriptor on a directory that was removed comes back on a removed
/// directory (it used to succeed, and restore found nothing under the path; then it was
/// refused): /proc shows it " (deleted)", with no links, as the original's.
#[test]
fn descriptor_on_a_removed_directory_comes_back_removed() {
    let ctx = Ctx::new("descriptor_on_a_removed_directory_comes_back_removed");
    let reference = reference(&ctx, "rmdir");
    let d = start_and_dump(&ctx, "rmdir", 1, 3);
    let root = d.pids[0];
    restore_and_finish(&ctx, &d, &reference, "rmdir", || {
        let link = fs::read_link(format!("/proc/{root}/fd/3")).expect("fd 3 of the root");
        assert!(
            link.to_string_lossy().ends_with(" (deleted)"),
            "rmdir: the root's descriptor 3 leads to {}",
            link.display()
        );
    });
}

/// The sockets process `pid` holds, as the kernel lists them in /proc/net/`table`
/// ("tcp", "udp"): local address, remote address, state, and with `queues` the send and
/// receive queue lengths; sorted.
fn inet_sockets(pid: i32, table: &str, queues: bool) -> Vec<String> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
    let mut v: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if !inodes.iter().any(|i| Some(&i.as_str()) == w.get(9)) {
                return None;
            }
            let mut s = format!("{} {} {}", w.get(1)?, w.get(2)?, w.get(3)?);
            if queues {
                s += &format!(" {}", w.get(4)?);
            }
            Some(s)
        })
        .collect();
    v.sort();
    v
}

/// Start `mode`, wait for `k` lines, take `before(root)`, dump it; then restore it,
/// compare `before` with the same view of the restored process (before GO), and the
/// whole output with the reference.
fn dump_restore_compare<T: std::fmt::Debug + PartialEq>(
    ctx: &Ctx,
    mode: &str,
    k: usize,
    view: impl Fn(i32) -> T,
) {
    let reference = reference(ctx, mode);
    let go = ctx.path(&format!("{mode}-go"));
    let mut t = ctx.spawn(&spec(mode, &go).cwd(ctx.path("")));
    t.wait_lines(k);
    let root = t.pid;
    ctx.track(root);
    let before = view(root);
    let img = ctx.path(&format!("{mode}.img"));
    ctx.dump(root, &img);
    t.expect_killed();
    let out = t.stdout.finish(&format!("{mode}: original"));
    wait_pids_gone(&[root], mode);
    let d = Dumped {
        img,
        go,
        before: out,
        pids: vec![root],
    };
    restore_and_finish(ctx, &d, &reference, mode, || {
        // The restored program has printed its remaining steps and waits for GO.
        let deadline = std::time::Instant::now() + timeout();
        loop {
            let now = view(root);
            if now == before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: the kernel's view of the restored process (left) is not the \
                 original's (right)\n{now:#?}\n{before:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
}

/// Item 5: a TCP listener whose descriptor is above that of a connection it accepted
/// (same port): the listener is created first, so both bind (restore used to fail with
/// "bind TCP listener: Address already in use"); the listener then accepts again.
#[test]
fn tcp_listener_above_its_accepted_connection_is_restored() {
    let ctx = Ctx::new("tcp_listener_above_its_accepted_connection_is_restored");
    dump_restore_compare(&ctx, "tcpsame", 6, |pid| inet_sockets(pid, "tcp", false));
}

/// Item 8: a TCP connection with megabytes queued in both of its ends: restore puts
/// every byte back without blocking (it used to hang in the stub's send) and the
/// kernel shows the same queue lengths.
#[test]
fn tcp_connection_with_megabytes_queued_is_restored() {
    let ctx = Ctx::new("tcp_connection_with_megabytes_queued_is_restored");
    dump_restore_compare(&ctx, "bigq", 3, |pid| inet_sockets(pid, "tcp", true));
}

/// Item 4: a UDP socket bound with IP_FREEBIND to an address the host does not have:
/// dump records the option, check accepts the address, restore sets it before bind.
#[test]
fn udp_socket_bound_with_freebind_to_a_foreign_address_is_restored() {
    let ctx = Ctx::new("udp_socket_bound_with_freebind_to_a_foreign_address_is_restored");
    dump_restore_compare(&ctx, "freebind", 3, |pid| {
        let v = inet_sockets(pid, "udp", false);
        // 192.0.2.77:47391, as /proc/net/udp writes it.
        assert!(
            v.iter().any(|s| s.starts_with("4D0200C0:B91F ")),
            "freebind: the socket should be bound to 192.0.2.77:47391: {v:?}"
        );
        v
    });
}

/// Item 3: a descriptor on /proc/CHILD/comm of a process of its own tree is reopened
/// under the restored PIDs (check used to report the file missing, the original being
/// gone): it reads the restored child's name.
#[test]
fn descriptor_on_proc_of_a_process_of_the_tree_is_restored() {
    let ctx = Ctx::new("descriptor_on_proc_of_a_process_of_the_tree_is_restored");
    let reference = reference(&ctx, "procfd");
    let d = start_and_dump(&ctx, "procfd", 2, 5);
    let (root, child) = (d.pids[0], d.pids[1]);
    restore_and_finish(&ctx, &d, &reference, "procfd", || {
        let link = fs::read_link(format!("/proc/{root}/fd/3")).expect("fd 3 of the root");
        assert_eq!(
            link,
            PathBuf::from(format!("/proc/{child}/comm")),
            "procfd: the root's descriptor 3"
        );
        assert_eq!(
            fs::read_to_string(&link).ok().as_deref(),
            Some("lostchild\n"),
            "procfd: the restored child's name"
        );
    });
}

/// Item 3, the part restore cannot do: a descriptor on the /proc entry of one of the
/// tree's threads (threads are created after the descriptors) is refused at dump.
#[test]
fn descriptor_on_proc_of_a_thread_of_the_tree_is_refused_at_dump() {
    let ctx = Ctx::new("descriptor_on_proc_of_a_thread_of_the_tree_is_refused_at_dump");
    assert_refused_and_runs_on(&ctx, "procthread", 1, &["entry of a thread"]);
}

/// A descriptor whose I/O signals go to a process outside the tree (F_SETOWN to its
/// parent): restore could not give that owner back, so dump refuses, naming it.
#[test]
fn descriptor_owned_by_a_process_outside_the_tree_is_refused_at_dump() {
    let ctx = Ctx::new("descriptor_owned_by_a_process_outside_the_tree_is_refused_at_dump");
    assert_refused_and_runs_on(&ctx, "setownout", 1, &["F_SETOWN", "not one of the tree"]);
}
