//! Namespaces of the tree's own (issue 15, first part): UTS, IPC and time namespaces
//! made by the tree are recreated at restore with their names, limits and clocks, every
//! process in the right one; namespaces ckpt does not restore yet, or that the tree did
//! not make, are refused at dump, naming them, and the tree runs on.
//!
//! The target is `tests/targets/nsown.c`. Needs root (unshare, setns, ptrace).
#![allow(unsafe_code)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::more::*;
use common::*;

/// The inode of namespace `kind` of process `pid` (`self` for the test).
fn ns(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// Assert that the processes of `tree` (root first) share their UTS, IPC and time
/// namespaces, none of them the test's, and are in the test's other ones.
fn assert_own_namespaces(tree: &[i32], what: &str) {
    assert_eq!(tree.len(), 2, "{what}: the root and its child: {tree:?}");
    let (root, child) = (tree[0].to_string(), tree[1].to_string());
    for kind in ["uts", "ipc", "time"] {
        let r = ns(&root, kind);
        assert_eq!(r, ns(&child, kind), "{what}: root and child share {kind}");
        assert_ne!(r, ns("self", kind), "{what}: {kind} is the tree's own");
    }
    for kind in ["net", "mnt", "cgroup", "user"] {
        assert_eq!(
            ns(&root, kind),
            ns("self", kind),
            "{what}: {kind} is ckpt's"
        );
        assert_eq!(
            ns(&child, kind),
            ns("self", kind),
            "{what}: {kind} is ckpt's"
        );
    }
}

/// A tree with UTS, IPC and time namespaces of its own: the restored processes are in
/// new ones (shared by both, not ckpt's), with the host and domain names and the IPC
/// limit they set, and clocks that continue from the dumped values (10 days ahead of
/// the host's, no jump); the output is an uninterrupted run's.
#[test]
fn tree_with_own_uts_ipc_time_namespaces_is_restored_in_new_ones() {
    let ctx = Ctx::new("tree_with_own_uts_ipc_time_namespaces_is_restored_in_new_ones");
    let spec = Spec::new(target("nsown")).arg("60").arg("sleep=40");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 6, &[], "nsown", &mut |pid| {
        let tree = wait_process_tree(pid, 2, "nsown");
        assert_own_namespaces(&tree, "restored nsown");
        checked = true;
    });
    assert!(checked);
}

/// The same with a System V segment made in the tree's IPC namespace, attached by both
/// processes: it comes back in the new namespace, with its ID and its contents.
#[test]
fn sysv_segment_in_the_trees_own_ipc_namespace_is_restored_there() {
    let ctx = Ctx::new("sysv_segment_in_the_trees_own_ipc_namespace_is_restored_there");
    let spec = Spec::new(target("nsown"))
        .arg("40")
        .arg("sleep=40")
        .arg("shm");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 8, &[], "nsown-shm", &mut |pid| {
        let tree = wait_process_tree(pid, 2, "nsown");
        assert_own_namespaces(&tree, "restored nsown with a SysV segment");
        checked = true;
    });
    assert!(checked);
}

/// The original's namespaces are as the restored ones must be (the check above can
/// tell), and a dump of the child alone is refused: its namespaces were made by its
/// parent, outside what is dumped, and its time namespace cannot be joined (its UTS
/// and IPC ones could, with --join-ns); the child runs on.
#[test]
fn namespaces_the_tree_did_not_make_are_refused() {
    let ctx = Ctx::new("namespaces_the_tree_did_not_make_are_refused");
    let spec = Spec::new(target("nsown")).arg("200").arg("sleep=40");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let tree = wait_process_tree(t.pid, 2, "nsown");
    for &p in &tree {
        ctx.track(p);
    }
    assert_own_namespaces(&tree, "original nsown");
    let child = tree[1];
    let r = ctx.try_dump(child, &ctx.path("child.img"));
    r.assert_fails(1);
    assert!(
        r.stderr.contains("time namespace") && r.stderr.contains("did not make"),
        "dump of a process in its parent's namespaces: {}",
        r.stderr
    );
    assert_running_untraced(child, "the child after the refused dump");
    assert_running_untraced(t.pid, "the root after the refused dump");
}

/// A POSIX message queue only the tree's own IPC namespace holds (no process has it
/// open) comes back in the new namespace, with its attributes, owner and mode (it was
/// refused at dump before: it would have been lost).
#[test]
fn message_queue_in_the_trees_own_ipc_namespace_comes_back() {
    let ctx = Ctx::new("message_queue_in_the_trees_own_ipc_namespace_comes_back");
    let spec = Spec::new(target("nsown"))
        .arg("40")
        .arg("sleep=40")
        .arg("mq");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 6, &[], "nsown-mq", &mut |pid| {
        let tree = wait_process_tree(pid, 2, "nsown");
        assert_own_namespaces(&tree, "restored nsown with a queue");
        let f = std::fs::File::open(format!("/proc/{}/ns/ipc", tree[0])).unwrap();
        let found = std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns with a namespace file held open changes this thread's
                // IPC namespace only; mq_open takes a NUL-terminated name.
                unsafe {
                    assert_eq!(libc::setns(f.as_raw_fd(), libc::CLONE_NEWIPC), 0);
                    let q = libc::mq_open(c"/ckpt-ns-q".as_ptr(), libc::O_RDONLY);
                    let mut st: libc::stat = std::mem::zeroed();
                    let ok = q >= 0 && libc::fstat(q, &mut st) == 0;
                    (ok, st.st_mode & 0o7777)
                }
            })
            .join()
            .unwrap()
        });
        assert_eq!(found, (true, 0o600), "the queue in the restored namespace");
        checked = true;
    });
    assert!(checked);
}

/// Mount points of namespace files (nsfs) the host shows: a namespace kept alive by a
/// bind mount would be one.
fn nsfs_mounts() -> usize {
    std::fs::read_to_string("/proc/1/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - nsfs "))
        .count()
}

/// Restores of a tree with namespaces of its own that fail at each step (creating the
/// namespaces, and every step after, sampled) leave no process behind (the namespaces
/// end with them) and no namespace file mounted; the next restore succeeds and the
/// tree finishes as an uninterrupted run.
#[test]
fn failed_restores_of_a_tree_with_own_namespaces_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_tree_with_own_namespaces_leave_nothing");
    let spec = Spec::new(target("nsown")).arg("30").arg("sleep=20");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let tree = wait_process_tree(t.pid, 2, "nsown");
    let img = ctx.path("nsown.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("nsown: original");
    wait_pids_gone(&tree, "nsown after the dump");
    let mounts = nsfs_mounts();
    RestoreWalk {
        name: "nsown",
        img: &img,
        reference: &reference.stdout,
        before: &before,
        pids: &tree,
        min: 20,
        must: "create the tree's namespaces",
        named: &["create the tree's namespaces"],
    }
    .run(
        &ctx,
        |n, total| n <= 8 || n % 11 == 0 || n == total,
        |f| {
            assert_eq!(
                nsfs_mounts(),
                mounts,
                "restore failing at {f} left a namespace file mounted"
            )
        },
    );
}

/// With a PID namespace of its own too (`unshare -p -f`: the root is PID 1 there), the
/// tree comes back in a new PID namespace and new UTS, IPC and time ones, its System V
/// segment with it; the output of the two runs is an uninterrupted run's.
#[test]
fn own_namespaces_with_an_own_pid_namespace_are_restored() {
    let ctx = Ctx::new("own_namespaces_with_an_own_pid_namespace_are_restored");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(target("nsown"))
        .arg("40")
        .arg("sleep=30")
        .arg("shm");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(7);
    let tree = wait_process_tree(t.pid, 3, "unshare and nsown");
    for &p in &tree {
        ctx.track(p);
    }
    assert_eq!(
        nspids(tree[1]),
        vec![tree[1], 1],
        "nsown is PID 1 of its own"
    );
    let img = ctx.path("pidns.img");
    ctx.dump(tree[1], &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree[1..], "nsown after its dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 3, "ckpt restore and the restored nsown");
    assert_eq!(
        nspids(restored[1]),
        vec![restored[1], 1],
        "restored as PID 1"
    );
    assert_own_namespaces(&restored[1..], "restored nsown in a PID namespace");
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        "nsown in a PID namespace, dumped and restored",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// Processes of one tree in different UTS namespaces (issue 15, mixed arrangements):
/// the root in one of its own, its child in one it made below it, shared with the
/// grandchild. Restored, each process is in a new namespace of the same pattern (the
/// child's made in its stub before the grandchild is forked) with its host name; the
/// output is an uninterrupted run's (the child and grandchild checked their names all
/// along).
#[test]
fn processes_in_uts_namespaces_made_below_the_root_are_restored() {
    let ctx = Ctx::new("processes_in_uts_namespaces_made_below_the_root_are_restored");
    let script = format!(
        "hostname ckpt-root && exec {} 40 sleep=40",
        target("nsmixed").display()
    );
    let spec = Spec::new(unshare())
        .arg("--uts")
        .arg("sh")
        .arg("-c")
        .arg(script);
    let check = |tree: &[i32], what: &str| {
        assert_eq!(tree.len(), 3, "{what}: root, child, grandchild: {tree:?}");
        let u: Vec<u64> = tree.iter().map(|p| ns(&p.to_string(), "uts")).collect();
        assert_ne!(
            u[0],
            ns("self", "uts"),
            "{what}: the root's UTS namespace is its own"
        );
        assert_ne!(u[1], u[0], "{what}: the child made one below the root");
        assert_eq!(u[2], u[1], "{what}: the grandchild shares the child's");
    };
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    check(&wait_process_tree(t.pid, 3, "nsmixed"), "original");
    t.kill();
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 6, &[], "nsmixed", &mut |pid| {
        check(&wait_process_tree(pid, 3, "nsmixed"), "restored");
        checked = true;
    });
    assert!(checked);
}
