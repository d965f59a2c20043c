//! PID namespaces around and inside the dumped tree (issue 14): a tree inside a PID
//! namespace whose init is not part of it (restored into a new namespace whose init is a
//! reaper of ckpt's, every process with its namespace ID again), and PID namespaces
//! nested inside the tree.
//!
//! The target is `tests/targets/pidnest.c`. Needs root (unshare, ptrace, clone3 set_tid).

// ioctl(NS_GET_PARENT) on the test's own descriptors.
#![allow(unsafe_code)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// The inode of namespace `kind` of process `pid` (`self` for the test).
fn ns(pid: &str, kind: &str) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A process inside a PID namespace that is not its init (`unshare -p -f pidnest
/// inside`: pidnest is the init, PID 1; it forks the dumped root R, PID 2, whose child
/// C is PID 3) is dumped alone, without the namespace's init. Restored, R and C are in a
/// new PID namespace (a child of the test's), as PIDs 2 and 3 again, below an init that
/// is ckpt's reaper (PID 1, named so); the tree stays in the test's mount namespace; C's
/// orphan made after the restore is reaped by that init; the output of the two runs
/// together is an uninterrupted run's and ckpt restore exits with the root's status.
#[test]
fn process_inside_a_pid_namespace_without_its_init_is_restored_below_a_reaper() {
    let ctx =
        Ctx::new("process_inside_a_pid_namespace_without_its_init_is_restored_below_a_reaper");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(target("pidnest"))
        .arg("40")
        .arg("sleep=30")
        .arg("inside");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(8);
    let tree = wait_process_tree(t.pid, 4, "unshare, pidnest's init, root and child");
    for &p in &tree {
        ctx.track(p);
    }
    let (init, root, child) = (tree[1], tree[2], tree[3]);
    assert_eq!(nspids(init), vec![init, 1], "pidnest's init is PID 1");
    assert_eq!(nspids(root), vec![root, 2], "the root is PID 2 there");
    assert_eq!(nspids(child), vec![child, 3], "its child is PID 3 there");
    let img = ctx.path("inside.img");
    let d = ctx.dump(root, &img);
    assert!(
        d.stderr.contains("whose init is not part of it")
            && d.stderr.contains("a reaper of ckpt's"),
        "the dump says how the tree will come back:\n{}",
        d.stderr
    );
    let before = t.finish().stdout;
    wait_pids_gone(&[root, child], "pidnest's root and child after their dump");
    // The image says so, and holds the namespace's IDs.
    let j = ctx.inspect_json(&img);
    assert_eq!(
        j["pid_namespace_init_outside"],
        Value::Bool(true),
        "inspect --json"
    );
    assert_eq!(j["own_pid_namespace"], Value::Bool(false), "inspect --json");
    let ids: Vec<i64> = j["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["pid"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![2, 3], "the image's process IDs");
    ctx.ckpt(&[OsStr::new("check"), img.as_os_str()])
        .assert_ok();

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 4, "ckpt restore, its reaper, root and child");
    let (reaper, root2, child2) = (restored[1], restored[2], restored[3]);
    assert_eq!(nspids(reaper), vec![reaper, 1], "the reaper is PID 1");
    assert_eq!(
        comm(reaper),
        "ckpt",
        "the namespace's init is ckpt's reaper"
    );
    assert_eq!(
        nspids(root2),
        vec![root2, 2],
        "the restored root is PID 2 again"
    );
    assert_eq!(
        nspids(child2),
        vec![child2, 3],
        "the restored child is PID 3 again"
    );
    let pidns = ns(&root2.to_string(), "pid");
    assert_ne!(pidns, ns("self", "pid"), "a new PID namespace");
    assert_eq!(
        pidns,
        ns(&child2.to_string(), "pid"),
        "root and child share it"
    );
    assert_eq!(pidns, ns(&reaper.to_string(), "pid"), "with the reaper");
    assert_eq!(
        pid_ns_parent(root2),
        Some(ns("self", "pid")),
        "the new namespace is a child of the test's (NS_GET_PARENT)"
    );
    for p in [root2, child2] {
        assert_eq!(
            ns(&p.to_string(), "mnt"),
            ns("self", "mnt"),
            "the restored tree stays in the test's mount namespace (its /proc is ours)"
        );
    }
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert!(
        String::from_utf8_lossy(&got).contains("child: status 0"),
        "the child's checks (its IDs, its orphan reaped):\n{}",
        String::from_utf8_lossy(&got)
    );
    assert_same_output(
        "pidnest inside, dumped and restored",
        &reference.stdout,
        &got,
    );
}

/// The inode of the parent of process `pid`'s PID namespace (ioctl NS_GET_PARENT on
/// /proc/PID/ns/pid), None for the initial one.
fn pid_ns_parent(pid: i32) -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // linux/nsfs.h: NS_GET_PARENT = _IO(0xb7, 0x2)
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    let f = fs::File::open(format!("/proc/{pid}/ns/pid")).ok()?;
    // SAFETY: an ioctl on our own descriptor; it returns a new descriptor or -1.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_PARENT) };
    if r < 0 {
        return None;
    }
    // SAFETY: `r` is a new descriptor of ours that nothing else owns.
    let parent = unsafe { OwnedFd::from_raw_fd(r) };
    fs::File::from(parent).metadata().ok().map(|m| m.ino())
}

/// The target's lines `step N: ...` of `out`, without the other lines.
fn steps(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `pidnest nest`: the root R forks C, which unshares CLONE_NEWPID and forks G (PID 1
/// of the nested namespace), whose child P (PID 2 there) prints. Dumping R is refused
/// before anything is killed, naming G and its namespace (nested PID namespaces are not
/// restored yet), and the tree runs on untouched: its output is an uninterrupted run's.
/// P alone, a process inside a namespace without its init, is dumped and restored below
/// a reaper, where it goes on as PID 2 whose parent is PID 1 and whose orphan is reaped.
#[test]
fn nested_pid_namespaces_are_refused_and_a_process_of_one_is_restored_alone() {
    let ctx = Ctx::new("nested_pid_namespaces_are_refused_and_a_process_of_one_is_restored_alone");
    let spec = Spec::new(target("pidnest"))
        .arg("40")
        .arg("sleep=30")
        .arg("nest");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 4, "pidnest nest: R, C, G, P");
    for &p in &tree {
        ctx.track(p);
    }
    let (g, p) = (tree[2], tree[3]);
    assert_eq!(nspids(g), vec![g, 1], "G is PID 1 of the nested namespace");
    assert_eq!(nspids(p), vec![p, 2], "P is PID 2 there");
    let img = ctx.path("nest.img");
    let r = ctx.try_dump(tree[0], &img);
    r.assert_fails(1);
    assert!(
        r.stderr.contains(&format!("process {g}"))
            && r.stderr.contains("nested inside the dumped tree")
            && r.stderr.contains(&format!("NSpid [{g}, 1]")),
        "the refusal names G and its nesting:\n{}",
        r.stderr
    );
    assert!(!img.exists(), "no image after a refused dump");
    for &q in &tree {
        assert_running_untraced(q, "pidnest nest after the refused dump");
    }

    // P alone: a process inside a PID namespace without its init.
    let img = ctx.path("p.img");
    ctx.dump(p, &img);
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 3, "ckpt restore, its reaper and P");
    let (reaper, p2) = (restored[1], restored[2]);
    assert_eq!(nspids(reaper), vec![reaper, 1], "the reaper is PID 1");
    assert_eq!(nspids(p2), vec![p2, 2], "the restored P is PID 2 again");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore of P; stderr:\n{}",
        text(&fin.stderr)
    );
    let original = t.finish();
    let reference = rp.finish();
    assert!(
        String::from_utf8_lossy(&fin.stdout).ends_with("orphan reaped: yes\n"),
        "P's orphan made after the restore is reaped by the reaper:\n{}",
        String::from_utf8_lossy(&fin.stdout)
    );
    assert_eq!(
        steps(&[original.stdout, fin.stdout].concat()),
        steps(&reference.stdout),
        "P's steps, dumped and restored, are an uninterrupted run's"
    );
}

/// A process that called unshare(CLONE_NEWPID) without forking since (`unshare -p` without
/// `-f` executes the program in the caller's namespace; its next child would be PID 1 of
/// a new one) is refused, saying so, and runs on.
#[test]
fn a_process_whose_children_go_to_another_pid_namespace_is_refused() {
    let ctx = Ctx::new("a_process_whose_children_go_to_another_pid_namespace_is_refused");
    let spec = Spec::new(unshare()).arg("-p").arg("sleep").arg("60");
    let mut t = ctx.spawn(&spec);
    ctx.track(t.pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while comm(t.pid) != "sleep" {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare -p sleep never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let img = ctx.path("sleep.img");
    let r = ctx.try_dump(t.pid, &img);
    r.assert_fails(1);
    assert!(
        r.stderr
            .contains("called unshare(CLONE_NEWPID) and has not forked since"),
        "the refusal says why:\n{}",
        r.stderr
    );
    assert_running_untraced(t.pid, "sleep after the refused dump");
    t.kill();
}

/// A copy of target `name` in the test's directory: processes running it are this
/// test's (see [`running_exe`]), whatever other tests run at the same time.
fn own_copy(ctx: &Ctx, name: &str) -> PathBuf {
    let p = ctx.path(name);
    fs::copy(target(name), &p).expect("copy the target");
    p
}

/// Processes whose executable is `exe`.
fn running_exe(exe: &std::path::Path) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|l| l == exe))
        .collect()
}

/// The tree inside a PID namespace without its init: restores made to fail at steps
/// along the way (the first twelve, then a sample of the rest) each exit 1 saying why,
/// print nothing of the program, and leave nothing behind (no process of it, no reaper
/// or builder of ckpt's orphaned to us); then the image restores and continues.
#[test]
fn failed_restores_below_a_reaper_leave_nothing() {
    let ctx = Ctx::new("failed_restores_below_a_reaper_leave_nothing");
    let exe = own_copy(&ctx, "pidnest");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(&exe)
        .arg("30")
        .arg("sleep=20")
        .arg("inside");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(6);
    let tree = wait_process_tree(t.pid, 4, "unshare, pidnest's init, root and child");
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path("inside.img");
    ctx.dump(tree[2], &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree[2..], "pidnest's root and child after their dump");
    let with_env = |env: &[(&str, &str)]| {
        let mut s = Spec::new(ckpt_bin()).arg("restore").arg(&img).cwd(&ctx.dir);
        for (k, v) in env {
            s = s.env(k, v);
        }
        ctx.spawn(&s).finish()
    };
    let trace = with_env(&[("CKPT_FAULT", "no such step"), ("CKPT_FAULT_TRACE", "1")]);
    let trace_text = text(&trace.stderr);
    let total = trace_text
        .lines()
        .filter(|l| l.starts_with("ckpt: step #"))
        .count();
    assert!(
        total > 20,
        "too few traced steps (fault-injection feature on?):\n{trace_text}"
    );
    assert_eq!(
        trace.status.code(),
        Some(0),
        "the traced restore: {trace_text}"
    );
    let mut tried = 0;
    for n in (1..=total).filter(|n| *n <= 12 || n % 13 == 0 || *n == total) {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], &format!("#{n}"), &[], &[]);
        let left = running_exe(&exe);
        assert!(
            left.is_empty(),
            "restore failing at step #{n} left {left:?}"
        );
        tried += 1;
    }
    eprintln!("{tried} failing restores of {total} steps");
    let fin = with_env(&[]);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the final restore: {}",
        text(&fin.stderr)
    );
    let got = [before.clone(), fin.stdout].concat();
    assert_same_output("pidnest after the failed restores", &reference.stdout, &got);
    let traced = [before, trace.stdout].concat();
    assert_same_output("pidnest, traced restore", &reference.stdout, &traced);
}
