//! IDs held by a process of a PID namespace nested inside the tree (issue 14): pidfds of
//! processes of the tree, signal owners of descriptors (F_SETOWN / F_SETOWN_EX: a
//! process, a process group, a thread; on a pipe and a socket), POSIX timers that signal
//! a thread by its ID (SIGEV_THREAD_ID, and glibc's SIGEV_THREAD through its helper
//! thread), senders of queued unix messages (SCM_CREDENTIALS). Restore gives them from
//! inside the process, as its own namespace numbers them. Each restore is compared with
//! the original through the state oracle (fdinfo Pid/NSpid of the pidfds, F_GETOWN_EX,
//! /proc/PID/timers) and through the program's behaviour (the pidfds reach the right
//! processes, the I/O signals their owners, the timers' signals the right thread, the
//! message's sender reads as its ID there). Owners, targets and senders the holder's
//! namespace does not show, or outside the tree, are refused at dump and the tree runs
//! on.
//!
//! The target is `tests/targets/nestids.c`. Needs root (unshare, ptrace, clone3 set_tid).

mod common;

use std::fs;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// The lines of one `check` round of nestids (everything N printed for it).
fn check_block(out: &str, round: usize) -> String {
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for l in out.lines() {
        if l.starts_with("pidfd ")
            || l.starts_with("fd ")
            || l.starts_with("timer ")
            || l.starts_with("checked ")
        {
            cur.push_str(l);
            cur.push('\n');
        }
        if l.starts_with("checked ") {
            blocks.push(std::mem::take(&mut cur));
        }
    }
    blocks.get(round - 1).cloned().unwrap_or_default()
}

/// What a check round prints when every ID reaches what it named.
const ALL_RIGHT: &str = "pidfd 20: send 0, K answers s
pidfd 21: send 0, N got it 1
pidfd 20: waitid 0 (K is N's child, running)
fd 22 (owner N): signal 1
fd 24 (owner group 1): N 1, K answers g
fd 26 (owner N's main thread): signal 1 on main 1
timer SIGEV_THREAD_ID: on T 1
timer SIGEV_THREAD: callback 1 c
";

/// N (PID 1 of the nested namespace) among the processes of `tree`, by its IDs.
fn find_n(tree: &[i32]) -> i32 {
    let base = nspids(tree[0]).len();
    tree.iter()
        .copied()
        .find(|&p| {
            let v = nspids(p);
            v.len() == base + 1 && v.last() == Some(&1)
        })
        .unwrap_or_else(|| panic!("no PID 1 of a nested namespace in {tree:?}"))
}

/// The entries of `s` about N's held IDs that the comparison must cover (so that it
/// cannot pass for want of them): the pidfds' fdinfo, the owners, the timers.
fn assert_covers(s: &Snapshot, n: &str, what: &str) {
    for key in [
        format!("{n}.fd20.fdinfo.NSpid"),
        format!("{n}.fd21.fdinfo.Pid"),
        format!("{n}.fd22.owner"),
        format!("{n}.fd24.owner"),
        format!("{n}.fd26.owner"),
        format!("{n}.timers"),
    ] {
        assert!(s.get(&key).is_some(), "{what}: the oracle reads no {key}");
    }
    let timers = s.get(&format!("{n}.timers")).unwrap_or("");
    assert_eq!(
        timers.matches("/tid.").count(),
        2,
        "{what}: N's two timers signal threads by their IDs:\n{timers}"
    );
}

/// Ask N for the message K queued before it started (with SCM_CREDENTIALS) and return
/// what it printed of it.
fn read_creds(p: &mut Proc) -> String {
    p.write_stdin(b"creds\n");
    p.wait_for("creds: ");
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let out = p.stdout.text();
        if let Some(l) = out
            .lines()
            .find(|l| l.starts_with("creds: ") && out.contains(&format!("{l}\n")))
        {
            return l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no creds line: {out}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What N reads of K's message: K's ID in N's namespace, root's uid and gid.
const K_CREDS: &str = "creds: 'from K' from pid 2 uid 0 gid 0";

/// Ask for a check round, the `round`th of the program (its `nth` in `p`'s output), and
/// return what it printed.
fn send_check(p: &mut Proc, round: usize, nth: usize) -> String {
    p.write_stdin(b"check\n");
    p.wait_for(&format!("checked {round}\n"));
    check_block(&p.stdout.text(), nth)
}

/// `nestids` in the test's PID namespace: R unshared CLONE_NEWPID and forked N (PID 1
/// there), whose child is K (PID 2). N's pidfds (of K, of itself), its descriptors' signal
/// owners (itself, its group -1, its main thread) and its timers (SIGEV_THREAD_ID to its
/// thread T, SIGEV_THREAD) come back: the oracle finds the same fdinfo, F_GETOWN_EX and
/// /proc/PID/timers as the original's, and each of them reaches what it named.
#[test]
fn ids_held_in_a_nested_pid_namespace_come_back() {
    let ctx = Ctx::new("ids_held_in_a_nested_pid_namespace_come_back");
    let spec = Spec::new(target("nestids")).stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "nestids: R, N, K");
    for &p in &tree {
        ctx.track(p);
    }
    let first = send_check(&mut t, 1, 1);
    assert_eq!(first, format!("{ALL_RIGHT}checked 1\n"), "the original");
    let n = find_n(&tree);
    let before = Snapshot::at_rest(t.pid, "nestids");
    assert_covers(&before, &format!("p{n}"), "before");
    let img = ctx.path("nestids.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "nestids after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let after = Snapshot::at_rest(t.pid, "restored nestids");
    assert_covers(&after, &format!("p{n}"), "after");
    oracle::assert_same_kernel_state(
        "ids_held_in_a_nested_pid_namespace_come_back",
        "nestids, restored",
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    let again = send_check(&mut r, 2, 1);
    assert_eq!(
        again,
        format!("{ALL_RIGHT}checked 2\n"),
        "the restored tree's IDs reach what they named"
    );
    assert_eq!(
        read_creds(&mut r),
        K_CREDS,
        "the message K queued keeps its sender (SCM_CREDENTIALS) as N's namespace shows it"
    );
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    assert!(
        String::from_utf8_lossy(&fin.stdout).contains("R: N exited 0"),
        "N ends right:\n{}",
        String::from_utf8_lossy(&fin.stdout)
    );
}

/// `unshare -p -f nestids`: the tree has a PID namespace of its own (R is its init), so
/// N's namespace is two levels below the test's. Restored into a new namespace, the
/// oracle finds the same state as the tree's own namespace sees it, and every ID N holds
/// reaches what it named.
#[test]
fn ids_held_in_a_nested_pid_namespace_of_a_tree_with_its_own_come_back() {
    let name = "ids_held_in_a_nested_pid_namespace_of_a_tree_with_its_own_come_back";
    let ctx = Ctx::new(name);
    let unshare = std::path::PathBuf::from("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let spec = Spec::new(unshare)
        .arg("-p")
        .arg("-f")
        .arg(target("nestids"))
        .stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 4, "unshare and nestids: R, N, K");
    for &p in &tree {
        ctx.track(p);
    }
    let root = tree[1];
    assert_eq!(nspids(root)[1], 1, "R is PID 1 of its own namespace");
    let first = send_check(&mut t, 1, 1);
    assert_eq!(first, format!("{ALL_RIGHT}checked 1\n"), "the original");
    let before = Snapshot::at_rest(root, name);
    let img = ctx.path("own.img");
    ctx.dump(root, &img);
    wait_pids_gone(&tree[1..], "nestids after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    let root2 = loop {
        if let Some(x) = oracle::restored_tree_in_pid_namespace(&before, r.pid) {
            break x;
        }
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let after = Snapshot::at_rest(root2, name);
    let (b, a) = (
        before.as_seen_in_its_pid_namespace(),
        after.as_seen_in_its_pid_namespace(),
    );
    // N is PID 2 of the tree's namespace (R's first child).
    assert_covers(&b, "p2", "before");
    assert_covers(&a, "p2", "after");
    oracle::assert_same_kernel_state(
        name,
        "unshare -p -f nestids, restored",
        Cmp::Restored,
        &b,
        &a,
        &[],
    );
    let again = send_check(&mut r, 2, 1);
    assert_eq!(
        again,
        format!("{ALL_RIGHT}checked 2\n"),
        "the restored tree's IDs reach what they named"
    );
    assert_eq!(
        read_creds(&mut r),
        K_CREDS,
        "the message K queued keeps its sender (SCM_CREDENTIALS) as N's namespace shows it"
    );
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    t.finish();
}

/// `nestids MODE`: N holds a descriptor (`fd`) naming a process its namespace does not
/// show or one outside the tree: dump refuses, naming N, the descriptor and `why`,
/// before anything is killed; the tree runs on untraced and its IDs still work.
fn refused(mode: &str, fd: i32, why: &[&str]) {
    let name = format!("nestids_{}_is_refused", mode.replace('-', "_"));
    let ctx = Ctx::new(&name);
    let spec = Spec::new(target("nestids")).arg(mode).stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "nestids: R, N, K");
    for &p in &tree {
        ctx.track(p);
    }
    let n = find_n(&tree);
    assert!(
        fs::read_link(format!("/proc/{n}/fd/{fd}")).is_ok(),
        "N holds descriptor {fd}"
    );
    let img = ctx.path("refused.img");
    let d = ctx.try_dump(t.pid, &img);
    d.assert_fails(1);
    let named = format!("process {n}");
    let desc = format!("descriptor {fd}");
    assert!(
        d.stderr.contains(&named)
            && d.stderr.contains(&desc)
            && why.iter().all(|w| d.stderr.contains(w)),
        "{mode}: the refusal names N, descriptor {fd} and why ({why:?}):\n{}",
        d.stderr
    );
    assert!(!img.exists(), "no image after a refused dump");
    for &q in &tree {
        assert_running_untraced(q, "nestids after the refused dump");
    }
    let first = send_check(&mut t, 1, 1);
    assert_eq!(first, format!("{ALL_RIGHT}checked 1\n"), "the tree runs on");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    assert!(
        String::from_utf8_lossy(&fin.stdout).contains("R: N exited 0"),
        "{}",
        String::from_utf8_lossy(&fin.stdout)
    );
}

#[test]
fn a_nested_pidfd_of_a_process_its_namespace_hides_is_refused() {
    refused("hidden", 30, &["a pidfd of process", "does not show"]);
}

#[test]
fn a_nested_pidfd_of_a_process_outside_the_tree_is_refused() {
    refused("outside", 30, &["pidfd", "outside the dumped tree"]);
}

#[test]
fn a_nested_message_from_a_sender_its_namespace_hides_is_refused() {
    refused(
        "creds-hidden",
        32,
        &["SCM_CREDENTIALS", "does not show", "unix socket"],
    );
}

#[test]
fn a_nested_signal_owner_outside_the_tree_is_refused() {
    refused("owner-outside", 31, &["F_SETOWN", "not one of the tree"]);
}
