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

/// `pidnest nest2`: the root R forks C, which unshares CLONE_NEWPID and forks G (PID 1
/// of the nested namespace), whose child P (PID 2 there) unshares again and forks Q
/// (PID 1 of a third level), whose child S (PID 2 there) prints its IDs every step. The
/// whole tree is dumped and restored in the test's PID namespace: every process comes
/// back with its ID at every level (NSpid), in namespaces nested as before
/// (NS_GET_PARENT), S's steps go on as an uninterrupted run's and its orphan made after
/// the restore is reaped by Q. Then P alone (a process inside a namespace without its
/// init, with a namespace of its own below it) is dumped and restored below a reaper.
#[test]
fn nested_pid_namespaces_come_back_at_every_level() {
    let ctx = Ctx::new("nested_pid_namespaces_come_back_at_every_level");
    let spec = Spec::new(target("pidnest"))
        .arg("40")
        .arg("sleep=30")
        .arg("nest2");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 6, "pidnest nest2: R, C, G, P, Q, S");
    for &p in &tree {
        ctx.track(p);
    }
    let levels: Vec<Vec<i32>> = tree.iter().map(|&p| nspids(p)).collect();
    let (g, p, q, s) = (tree[2], tree[3], tree[4], tree[5]);
    assert_eq!(nspids(g), vec![g, 1], "G is PID 1 of the nested namespace");
    assert_eq!(nspids(p), vec![p, 2], "P is PID 2 there");
    assert_eq!(nspids(q)[2], 1, "Q is PID 1 a level further down");
    assert_eq!(nspids(s)[2], 2, "S is PID 2 there");
    // The parent of each one's PID namespace: ours, or the first process's in it.
    let rel = |x: i32| {
        let parent = pid_ns_parent(x);
        if parent == Some(ns("self", "pid")) {
            return "host".to_string();
        }
        tree.iter()
            .position(|&y| Some(ns(&y.to_string(), "pid")) == parent)
            .map_or(format!("other {}", parent.is_some()), |i| format!("#{i}"))
    };
    let parents: Vec<String> = tree.iter().map(|&x| rel(x)).collect();
    assert_eq!(parents[4], "#2", "Q's namespace is below G's");
    let img = ctx.path("nest2.img");
    ctx.dump(tree[0], &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree, "pidnest nest2 after its dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 7, "ckpt restore and pidnest nest2");
    assert_eq!(&restored[1..], &tree[..], "the same host PIDs");
    for (k, &x) in tree.iter().enumerate() {
        assert_eq!(nspids(x), levels[k], "process {x}: its ID at every level");
        assert_eq!(tracer(x), 0, "process {x} is not traced");
        assert_eq!(
            rel(x),
            parents[k],
            "process {x}: the parent of its PID namespace"
        );
    }
    assert_eq!(
        ns(&tree[1].to_string(), "pid_for_children"),
        ns(&g.to_string(), "pid"),
        "C's next children go to G's namespace"
    );
    assert_eq!(
        ns(&p.to_string(), "pid_for_children"),
        ns(&q.to_string(), "pid"),
        "P's next children go to Q's namespace"
    );
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let reference = rp.finish();
    let got = [before, fin.stdout].concat();
    assert!(
        String::from_utf8_lossy(&got).contains("orphan reaped: yes"),
        "S's orphan is reaped by Q:\n{}",
        String::from_utf8_lossy(&got)
    );
    assert_same_output(
        "pidnest nest2, dumped and restored",
        &reference.stdout,
        &got,
    );

    // P alone: a process inside a PID namespace without its init.
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 6, "pidnest nest2: R, C, G, P, Q, S");
    for &x in &tree {
        ctx.track(x);
    }
    let img = ctx.path("p.img");
    // A dump that finds a process between its opening and closing /proc/self/status
    // (each step reads it) is refused, the tree running on: the descriptor names it by
    // the PID ckpt's /proc shows, which it will not have below the reaper. Tried again.
    // (The oracle does not compare this restore: the tree never ran whole in its PID
    // namespace, see the note it prints.)
    for attempt in 1.. {
        let r = ctx.try_dump(tree[3], &img);
        if r.status.success() {
            break;
        }
        assert!(
            attempt < 5 && r.stderr.contains("the /proc entry of process"),
            "dump of P (attempt {attempt}): {}",
            r.stderr
        );
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 5, "ckpt restore, its reaper, P, Q and S");
    assert_eq!(nspids(restored[2])[1], 2, "the restored P is PID 2 again");
    assert_eq!(nspids(restored[3])[2], 1, "Q is PID 1 below it");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore of P; stderr:\n{}",
        text(&fin.stderr)
    );
    let original = t.finish();
    let reference = ctx.reference(&spec);
    assert_eq!(
        steps(&[original.stdout, fin.stdout].concat()),
        steps(&reference.stdout),
        "S's steps, dumped with P and restored, are an uninterrupted run's"
    );
}

/// The tracer of process `pid` (TracerPid of its status).
fn tracer(pid: i32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(-1)
}

/// Whether process `pid`'s next children go to a PID namespace that has no init yet (it
/// called unshare(CLONE_NEWPID) and has not forked since: the kernel shows no
/// pid_for_children then).
fn unshared_without_child(pid: i32) -> bool {
    fs::read_link(format!("/proc/{pid}/ns/pid_for_children"))
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
}

/// The processes of `pidnested` (see tests/targets/pidnested.c): R, C, U, G, P2, P3 by
/// what they are, found among `tree` through their IDs.
struct Nested {
    r: i32,
    c: i32,
    u: i32,
    g: i32,
    p2: i32,
    p3: i32,
}

fn nested(tree: &[i32]) -> Nested {
    let base = nspids(tree[0]).len();
    let at = |depth: usize, id: Option<i32>| {
        tree.iter()
            .copied()
            .find(|&p| {
                let v = nspids(p);
                v.len() == base + depth && id.is_none_or(|i| v.last() == Some(&i))
            })
            .unwrap_or_else(|| panic!("no process at depth {depth} with ID {id:?} in {tree:?}"))
    };
    let r = tree[0];
    let kids: Vec<i32> = tree.iter().copied().filter(|&p| ppid(p) == r).collect();
    let u = kids
        .iter()
        .copied()
        .find(|&p| unshared_without_child(p))
        .unwrap_or_else(|| panic!("no process of {kids:?} unshared without a child"));
    let c = kids.iter().copied().find(|&p| p != u).unwrap_or(0);
    Nested {
        r,
        c,
        u,
        g: at(1, Some(1)),
        p2: at(1, Some(2)),
        p3: at(1, Some(3)),
    }
}

fn ppid(pid: i32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The kernel-visible shape of a `pidnested` tree: each process's IDs at every level,
/// where its next children go, and its process group and session as its namespace
/// shows them (NSpgid, NSsid).
fn nested_shape(n: &Nested) -> Vec<String> {
    let field = |p: i32, f: &str| {
        fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(&format!("{f}:")))
                    .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (name, p) in [
        ("R", n.r),
        ("C", n.c),
        ("U", n.u),
        ("G", n.g),
        ("P2", n.p2),
        ("P3", n.p3),
    ] {
        out.push(format!(
            "{name}: NSpid {} NSpgid {} NSsid {}",
            field(p, "NSpid"),
            field(p, "NSpgid"),
            field(p, "NSsid")
        ));
    }
    out.push(format!(
        "C's children go to G's namespace: {}",
        ns(&n.c.to_string(), "pid_for_children") == ns(&n.g.to_string(), "pid")
    ));
    out.push(format!(
        "U unshared without a child: {}",
        unshared_without_child(n.u)
    ));
    out.push(format!(
        "G's namespace is a child of R's: {}",
        pid_ns_parent(n.g) == Some(ns(&n.r.to_string(), "pid"))
    ));
    out
}

/// A tree with a PID namespace nested inside it (`pidnested`: C unshared CLONE_NEWPID and
/// forked G, PID 1 there, a counter whose children are PIDs 2 and 3; U unshared without
/// forking): dumped and restored in the test's PID namespace, every process has its ID
/// at every level, its group and session as its namespace shows them, C's next
/// children still go to G's namespace and U's to a new one; the state oracle finds the
/// kernel's view the same (NSpid, namespaces, kcmp...); and the program goes on as an
/// uninterrupted run: the counter still sees itself as PID 1 with children 2 and 3, and
/// U's next child is PID 1 of a new namespace.
#[test]
fn a_pid_namespace_nested_inside_the_tree_comes_back() {
    let ctx = Ctx::new("a_pid_namespace_nested_inside_the_tree_comes_back");
    let spec = Spec::new(target("pidnested")).stdin(In::Pipe);
    let (first, rest) = (b"step\nstep\n", b"step\nfork\nstep\nexit\n");
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(&[&first[..], &rest[..]].concat());
    rp.close_stdin();
    let reference = rp.finish();
    assert!(
        String::from_utf8_lossy(&reference.stdout).contains("G 3: pid 1 ppid 0"),
        "the reference run:\n{}",
        String::from_utf8_lossy(&reference.stdout)
    );
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(first);
    t.wait_for("ack 2\n");
    let tree = wait_process_tree(t.pid, 6, "pidnested: R, C, U, G, P2, P3");
    let n = nested(&tree);
    assert_eq!(
        nspids(n.g),
        vec![n.g, 1],
        "G is PID 1 of the nested namespace"
    );
    assert_eq!(nspids(n.p2), vec![n.p2, 2]);
    assert_eq!(nspids(n.p3), vec![n.p3, 3]);
    let shape = nested_shape(&n);
    let snap = oracle::Snapshot::take(t.pid);
    assert!(snap.still(), "pidnested at rest: {:?}", snap.volatile);
    let img = ctx.path("nested.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&tree, "pidnested after its dump");

    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(&snap) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(nested_shape(&n), shape, "the kernel's view of the nesting");
    let after = oracle::Snapshot::take(t.pid);
    oracle::assert_same_kernel_state(
        "a_pid_namespace_nested_inside_the_tree_comes_back",
        "pidnested restored",
        oracle::Cmp::Restored,
        &snap,
        &after,
        &[],
    );
    r.write_stdin(rest);
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout.clone()].concat();
    let out = String::from_utf8_lossy(&fin.stdout);
    assert!(
        out.contains("X: pid 1 ppid 0 depth 1") && out.contains("G 3: pid 1 ppid 0"),
        "after the restore U's child is PID 1 of a new namespace and G still PID 1:\n{out}"
    );
    assert_same_output("pidnested, dumped and restored", &reference.stdout, &got);
}

/// A process that called unshare(CLONE_NEWPID) and has not forked since (`unshare -p`
/// without `-f` executes the program in the caller's namespace) is dumped, and comes
/// back the same: in the test's PID namespace, its next children going to a new one
/// that has no init yet.
#[test]
fn a_process_whose_children_go_to_a_new_pid_namespace_comes_back_so() {
    let ctx = Ctx::new("a_process_whose_children_go_to_a_new_pid_namespace_comes_back_so");
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
    assert!(
        unshared_without_child(t.pid),
        "sleep's children go to a new namespace"
    );
    let img = ctx.path("sleep.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&[t.pid], "sleep after its dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and sleep");
    let s = restored[1];
    let deadline = std::time::Instant::now() + timeout();
    while tracer(s) != 0 {
        assert!(std::time::Instant::now() < deadline, "sleep stays traced");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(s, t.pid, "the same PID");
    assert_eq!(
        ns(&s.to_string(), "pid"),
        ns("self", "pid"),
        "in our PID namespace"
    );
    assert!(
        unshared_without_child(s),
        "its next children go to a new namespace again"
    );
    r.kill();
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
    let (trace, names) = traced_restore(&ctx, &img, 20, "");
    let total = names.len();
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
    let fin = restore_env(&ctx, &img, &[]);
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

/// `pidnested` as PID 1 of a PID namespace of its own (`unshare -p -f pidnested`), so
/// that its nested namespace is two levels below the test's: restored through the
/// builder in a new namespace (released through the gate), every process has its IDs
/// at every level below ours again, the oracle finds the same state as the tree's own
/// namespace sees it, and the program goes on as an uninterrupted run.
#[test]
fn a_pid_namespace_nested_in_a_tree_with_its_own_comes_back() {
    let ctx = Ctx::new("a_pid_namespace_nested_in_a_tree_with_its_own_comes_back");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(target("pidnested"))
        .stdin(In::Pipe);
    let (first, rest) = (b"step\n", b"step\nfork\nexit\n");
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(&[&first[..], &rest[..]].concat());
    rp.close_stdin();
    let reference = rp.finish();
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(first);
    t.wait_for("ack 1\n");
    let tree = wait_process_tree(t.pid, 7, "unshare and pidnested: R, C, U, G, P2, P3");
    for &p in &tree {
        ctx.track(p);
    }
    let root = tree[1];
    assert_eq!(nspids(root)[1], 1, "R is PID 1 of its own namespace");
    let inner = |p: i32| nspids(p).into_iter().skip(1).collect::<Vec<i32>>();
    let before_ids: Vec<Vec<i32>> = tree[1..].iter().map(|&p| inner(p)).collect();
    assert!(
        before_ids.iter().any(|v| v.len() == 2 && v[1] == 1),
        "G is PID 1 two levels below ours: {before_ids:?}"
    );
    let img = ctx.path("own.img");
    ctx.dump(root, &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree[1..], "pidnested after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    let restored = loop {
        let all = process_tree(r.pid);
        let ours: Vec<i32> = all.iter().copied().skip(1).collect();
        if ours.len() == 6 && ours.iter().all(|&p| tracer(p) == 0) {
            break ours;
        }
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "the restored tree does not run: {all:?}; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut after_ids: Vec<Vec<i32>> = restored.iter().map(|&p| inner(p)).collect();
    let mut want = before_ids.clone();
    after_ids.sort();
    want.sort();
    assert_eq!(after_ids, want, "every process's IDs below ours");
    r.write_stdin(rest);
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert_same_output(
        "unshare -p -f pidnested, dumped and restored",
        &reference.stdout,
        &got,
    );
}

/// A tree with a PID namespace nested inside it (`pidnested`): restores made to fail at
/// steps along the way (the first twelve, those around the nested namespace's making,
/// then a sample of the rest) each exit 1 saying why, print nothing of the program, and
/// leave nothing behind (no process of it, none of ckpt's stubs, though the namespace's
/// init waits for its children to be reaped as it dies); then the image restores and
/// the program ends as an uninterrupted run.
#[test]
fn failed_restores_of_a_nested_pid_namespace_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_nested_pid_namespace_leave_nothing");
    let exe = own_copy(&ctx, "pidnested");
    let spec = Spec::new(&exe).stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(b"step\nstep\n");
    rp.close_stdin();
    let reference = rp.finish();
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(b"step\nstep\n");
    t.wait_for("ack 2\n");
    let tree = wait_process_tree(t.pid, 6, "pidnested: R, C, U, G, P2, P3");
    let img = ctx.path("nested.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&tree, "pidnested after its dump");
    let (_trace, names) = traced_restore(&ctx, &img, 20, "unshare(CLONE_NEWPID)");
    let total = names.len();
    // The steps that make the nested namespace and its first processes, and those of
    // the nested processes' descriptors (taken through ckpt).
    let nested: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("unshare(CLONE_NEWPID)") || l.contains("F_DUPFD_CLOEXEC"))
        .map(|(i, _)| i + 1)
        .collect();
    let mut tried = 0;
    for n in (1..=total).filter(|n| {
        *n <= 12 || n % 29 == 0 || *n == total || nested.iter().any(|k| n.abs_diff(*k) <= 1)
    }) {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], &format!("#{n}"), &tree, &[]);
        let left = running_exe(&exe);
        assert!(
            left.is_empty(),
            "restore failing at step #{n} left {left:?}"
        );
        tried += 1;
    }
    eprintln!("{tried} failing restores of {total} steps");
    let fin = restore_env(&ctx, &img, &[]);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the final restore: {}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert_same_output(
        "pidnested after the failed restores",
        &reference.stdout,
        &got,
    );
}

/// A process of a nested PID namespace holding a pidfd (`pidnested pidfd`: P2, PID 2 in
/// it, holds one of itself at descriptor 20) is dumped and restored: its pidfd names it
/// again (fdinfo Pid and NSpid, as before), and the tree goes on as an uninterrupted
/// run. (tests/e2e_nestids.rs covers the other IDs such a process holds.)
#[test]
fn a_nested_process_holding_a_pidfd_of_itself_comes_back() {
    let ctx = Ctx::new("a_nested_process_holding_a_pidfd_of_itself_comes_back");
    let spec = Spec::new(target("pidnested")).arg("pidfd").stdin(In::Pipe);
    let (first, rest) = (b"step\n", b"step\nexit\n");
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(&[&first[..], &rest[..]].concat());
    rp.close_stdin();
    let reference = rp.finish();
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(first);
    t.wait_for("ack 1\n");
    let tree = wait_process_tree(t.pid, 6, "pidnested: R, C, U, G, P2, P3");
    for &p in &tree {
        ctx.track(p);
    }
    let n = nested(&tree);
    let pidfd_of = |p: i32| {
        let info = fs::read_to_string(format!("/proc/{p}/fdinfo/20")).unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("Pid:") || l.starts_with("NSpid:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    let before_fd = pidfd_of(n.p2);
    assert_eq!(
        before_fd,
        vec![format!("Pid: {}", n.p2), format!("NSpid: {} 2", n.p2)],
        "P2's pidfd of itself"
    );
    let img = ctx.path("pidfd.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&tree, "pidnested after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while pidfd_of(n.p2).is_empty() || tracer(n.p2) != 0 {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "P2 does not run again: {}",
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(pidfd_of(n.p2), before_fd, "P2's pidfd names it again");
    r.write_stdin(rest);
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert_same_output(
        "pidnested pidfd, dumped and restored",
        &reference.stdout,
        &got,
    );
}

/// `pidnested` inside a PID namespace without its init (`unshare -p -f sh -c
/// 'pidnested; ...'`: sh is PID 1, R PID 2): dumped alone, it is restored below ckpt's
/// reaper with its nested namespace two levels below the test's, every process with its
/// IDs below ours again, and the program goes on as an uninterrupted run.
#[test]
fn a_pid_namespace_nested_in_a_tree_without_its_init_comes_back() {
    let ctx = Ctx::new("a_pid_namespace_nested_in_a_tree_without_its_init_comes_back");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "{} && echo sh: done",
            target("pidnested").display()
        ))
        .stdin(In::Pipe);
    let (first, rest) = (b"step\n", b"step\nfork\nexit\n");
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(&[&first[..], &rest[..]].concat());
    rp.close_stdin();
    let reference = rp.finish();
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(first);
    t.wait_for("ack 1\n");
    let tree = wait_process_tree(t.pid, 8, "unshare, sh and pidnested: R, C, U, G, P2, P3");
    for &p in &tree {
        ctx.track(p);
    }
    let root = tree[2];
    assert_eq!(
        nspids(root)[1],
        2,
        "R is PID 2 of the namespace sh is the init of"
    );
    let inner = |p: i32| nspids(p).into_iter().skip(1).collect::<Vec<i32>>();
    let mut want: Vec<Vec<i32>> = tree[2..].iter().map(|&p| inner(p)).collect();
    let img = ctx.path("inside.img");
    ctx.dump(root, &img);
    wait_pids_gone(&tree[2..], "pidnested after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    let restored = loop {
        let all = process_tree(r.pid);
        // ckpt restore, its reaper, then the tree
        let ours: Vec<i32> = all.iter().copied().skip(2).collect();
        if ours.len() == 6 && ours.iter().all(|&p| tracer(p) == 0) {
            break ours;
        }
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "the restored tree does not run: {all:?}; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut got_ids: Vec<Vec<i32>> = restored.iter().map(|&p| inner(p)).collect();
    got_ids.sort();
    want.sort();
    assert_eq!(got_ids, want, "every process's IDs below ours");
    r.write_stdin(rest);
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let before = t.finish().stdout;
    let got = [before, fin.stdout].concat();
    let want_out = String::from_utf8_lossy(&reference.stdout).replace("sh: done\n", "");
    assert_same_output(
        "pidnested inside a namespace without its init, dumped and restored",
        want_out.as_bytes(),
        &got,
    );
}

/// The thread IDs of process `pid` at every PID namespace level (NSpid of each task),
/// sorted.
fn thread_nspids(pid: i32) -> Vec<Vec<i32>> {
    let mut out: Vec<Vec<i32>> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
                .filter_map(|s| {
                    s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|v| {
                        v.split_whitespace()
                            .filter_map(|x| x.parse().ok())
                            .collect()
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A multi-threaded process of a nested PID namespace (`pidnested thread`: G, PID 1
/// there, runs a second thread): its thread comes back with its ID at every level, and
/// still sees its own ID in the nested namespace; the run goes on as an uninterrupted
/// one.
#[test]
fn a_thread_of_a_nested_process_keeps_its_ids() {
    let ctx = Ctx::new("a_thread_of_a_nested_process_keeps_its_ids");
    let spec = Spec::new(target("pidnested")).arg("thread").stdin(In::Pipe);
    let (first, rest) = (b"step\n", b"step\nexit\n");
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(&[&first[..], &rest[..]].concat());
    rp.close_stdin();
    let reference = rp.finish();
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t.write_stdin(first);
    t.wait_for("ack 1\n");
    let tree = wait_process_tree(t.pid, 6, "pidnested: R, C, U, G, P2, P3");
    let n = nested(&tree);
    let threads = thread_nspids(n.g);
    assert_eq!(threads.len(), 2, "G has two threads: {threads:?}");
    let img = ctx.path("thread.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&tree, "pidnested after its dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while thread_nspids(n.g).len() != 2 || tracer(n.g) != 0 {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "G does not run again: {}",
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        thread_nspids(n.g),
        threads,
        "G's threads' IDs at every level"
    );
    r.write_stdin(rest);
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert_same_output(
        "pidnested thread, dumped and restored",
        &reference.stdout,
        &got,
    );
}
