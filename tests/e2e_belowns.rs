//! Namespaces made by processes below the tree's root (issue 15): network (with its
//! loopback up, a UDP socket and a TCP listener bound in it, shared by a grandchild,
//! and another nested in it), IPC (its limits), time (made by a process for its
//! children, clocks 100 days ahead) and cgroup namespaces (rooted at a cgroup the
//! maker moved into). Restored, each is made again by the process that made it, before
//! its children are forked: the processes check their own state (the sockets answer,
//! the limit, the clocks continue, /proc/self/cgroup), and the state oracle compares
//! the kernel's view (which processes share which namespace, sockets, cgroups).
//! Connections between processes in such a network namespace (TCP over its loopback, a
//! unix pair, an abstract listener and its accepted client), with data queued both
//! ways, come back there. What is not restored is refused at dump, naming the process
//! and the namespace.
//!
//! The target is `tests/targets/belowns.c`. Needs root (unshare, ptrace, cgroups).

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::testcgroup::TestCgroup;
use common::*;

/// Every check of `belowns net ipc time cgroup` passing.
const ALL_OK: &str = "report: net=ok nested-net=ok ipc=ok time=ok cgroup=ok";

/// The last line of `p`'s output that starts with "report:" (the `nth`), after asking.
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

/// The inode of namespace `kind` of process `pid`.
fn ns(pid: i32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The processes of the tree of `root` (8 of them) by what they are: the net child
/// and its two children (the one that stays, the one that made its own), the ipc
/// child, the time child and its child, the cgroup child. Checks the namespaces they
/// are in against each other.
fn assert_shape(root: i32, what: &str) {
    let tree = wait_process_tree(root, 8, what);
    let kids = |p: i32| children_in(&tree, p);
    let top = kids(root);
    assert_eq!(top.len(), 4, "{what}: the root's children: {top:?}");
    let (net, ipc, time, cg) = (top[0], top[1], top[2], top[3]);
    let nk = kids(net);
    assert_eq!(nk.len(), 2, "{what}: the net child's children");
    assert_ne!(
        ns(net, "net"),
        ns(root, "net"),
        "{what}: the net child's own"
    );
    assert_eq!(
        ns(nk[0], "net"),
        ns(net, "net"),
        "{what}: shared by its child"
    );
    assert_ne!(ns(nk[1], "net"), ns(net, "net"), "{what}: nested one");
    assert_ne!(ns(nk[1], "net"), ns(root, "net"), "{what}: nested one");
    assert_ne!(
        ns(ipc, "ipc"),
        ns(root, "ipc"),
        "{what}: the ipc child's own"
    );
    let tk = kids(time);
    assert_eq!(tk.len(), 1, "{what}: the time child's child");
    assert_eq!(ns(time, "time"), ns(root, "time"), "{what}: time child");
    assert_eq!(
        ns(time, "time_for_children"),
        ns(tk[0], "time"),
        "{what}: the time namespace made for its child"
    );
    assert_ne!(
        ns(tk[0], "time"),
        ns(root, "time"),
        "{what}: time grandchild"
    );
    assert_ne!(
        ns(cg, "cgroup"),
        ns(root, "cgroup"),
        "{what}: the cgroup child's own"
    );
    for &p in &tree {
        for kind in ["uts", "mnt", "user"] {
            assert_eq!(ns(p, kind), ns(root, kind), "{what}: {kind} of {p}");
        }
    }
}

/// The processes of `tree` whose parent is `p`, by PID.
fn children_in(tree: &[i32], p: i32) -> Vec<i32> {
    let mut k: Vec<i32> = tree
        .iter()
        .copied()
        .filter(|&q| q != p && ppid_of(q) == p)
        .collect();
    k.sort();
    k
}

/// Restore `img` (stdin a pipe) and wait until the tree of `before` runs again.
fn restore_up(ctx: &Ctx, img: &std::path::Path, before: &Snapshot, name: &str) -> Proc {
    let mut r = ctx.restore(img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(before) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    r
}

/// Tell the restored `belowns` tree of `r` to exit; it must end with status 0.
fn exit_ok(mut r: Proc, name: &str) {
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: the restored tree's exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

fn ppid_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Network (with sockets, shared, nested), IPC, time and cgroup namespaces made below
/// the root: restored each in the process that made it (the time namespace in the
/// parent, before its child), with the same sharing; every process's own check passes
/// before and after (the sockets answer on the restored loopback, msgmax, the clocks
/// continue 100 days ahead, /proc/self/cgroup at the namespace's root), and the oracle
/// sees the same kernel state.
#[test]
fn namespaces_made_below_the_root_are_restored() {
    let name = "namespaces_made_below_the_root_are_restored";
    let ctx = Ctx::new(name);
    let cg = TestCgroup::make("belowns", "all");
    let spec = Spec::new(target("belowns"))
        .arg("net")
        .arg("ipc")
        .arg("time")
        .arg("cgroup")
        .arg(format!("cgroup={}", cg.0.display()))
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    assert_shape(pid, "original");
    let said = report(&mut t, 1);
    assert_eq!(said, ALL_OK, "the original's own checks");
    let before = Snapshot::at_rest(pid, name).with_report(pid, &said);
    let pids = process_tree(pid);
    let img = ctx.path("belowns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let mut r = restore_up(&ctx, &img, &before, name);
    assert_shape(pid, "restored");
    let after = Snapshot::at_rest(pid, name);
    let said = report(&mut r, 1);
    assert_eq!(said, ALL_OK, "the restored tree's own checks");
    let after = after.with_report(pid, &said);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: belowns net ipc time cgroup"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    // Checked again: the time grandchild's clock went on from the restored value.
    assert_eq!(
        report(&mut r, 2),
        ALL_OK,
        "the restored tree's second checks"
    );
    exit_ok(r, name);
}

/// Restores of that tree failing once a namespace below the root was made (in a
/// child's stub, in a parent's for its child's time namespace) leave no process.
#[test]
fn failed_restores_after_a_namespace_below_the_root_leave_nothing() {
    let name = "failed_restores_after_a_namespace_below_the_root_leave_nothing";
    let ctx = Ctx::new(name);
    let cg = TestCgroup::make("belowns", "fail");
    let spec = Spec::new(target("belowns"))
        .arg("net")
        .arg("ipc")
        .arg("time")
        .arg("cgroup")
        .arg(format!("cgroup={}", cg.0.display()))
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let tree = wait_process_tree(pid, 8, name);
    let img = ctx.path("belowns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    for f in [
        "make a namespace a process below the root made",
        "make a time namespace a process made for its children",
        "fill memory",
        "remove helper area",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    assert_shape(pid, "restored after the failures");
    assert_eq!(report(&mut r, 1), ALL_OK, "restored after the failures");
    exit_ok(r, name);
}

/// The named POSIX queue `belowns ipc sysv` makes in its IPC namespace.
const BELOW_QUEUES: [&str; 1] = ["/belowq"];

/// The tree of `belowns ipc sysv` (the root, the ipc child) at rest, with what the
/// kernel shows inside the child's IPC namespace (`common::ipcview`).
fn ipc_at_rest(root: i32, child: i32, what: &str, report: &str) -> Snapshot {
    let mut s = Snapshot::at_rest(root, what).with_report(root, report);
    common::ipcview::add_view(&mut s, child, root, &BELOW_QUEUES);
    s
}

/// Nothing of the child's IPC namespace is in the host's: no System V object with its
/// keys, no queue /belowq.
fn assert_ipc_nothing_on_host(what: &str) {
    let shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let msg = std::fs::read_to_string("/proc/sysvipc/msg").unwrap_or_default();
    let keyed = |text: &str, key: i32| {
        text.lines()
            .any(|l| l.split_whitespace().next() == Some(key.to_string().as_str()))
    };
    assert!(
        !keyed(&shm, 0x4242) && !keyed(&msg, 0x4343),
        "{what}: the namespace's objects are on the host:\n{shm}\n{msg}"
    );
    assert!(
        common::ipcview::mq_line("/belowq").is_none(),
        "{what}: queue /belowq is on the host"
    );
}

/// The ipc child of the tree of `root` (its only child) and the tree, once it made its
/// IPC namespace.
fn ipc_child(root: i32, what: &str) -> (i32, Vec<i32>) {
    let tree = wait_process_tree(root, 2, what);
    let child = tree
        .iter()
        .copied()
        .find(|&p| ppid_of(p) == root)
        .expect("the ipc child");
    assert_ne!(
        ns(child, "ipc"),
        ns(root, "ipc"),
        "{what}: its own IPC namespace"
    );
    (child, tree)
}

/// The System V objects (a segment attached, one attached by no one, a semaphore set,
/// a message queue with messages) and a named POSIX queue (held open, with a message)
/// of an IPC namespace a process below the root made come back in the namespace its
/// restored stub makes, under their IDs, keys, owners, modes and contents, and nothing
/// of them in the host's: the oracle compares /proc/sysvipc, the limits and the queue
/// as read inside that namespace before and after, and the process finds them and
/// goes on using them (counting in the segment, semop, msgsnd/msgrcv, mq_open).
#[test]
fn objects_of_an_ipc_namespace_made_below_the_root_come_back() {
    let name = "objects_of_an_ipc_namespace_made_below_the_root_come_back";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("ipc")
        .arg("sysv")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let (child, pids) = ipc_child(pid, "original");
    let said = report(&mut t, 1);
    assert_eq!(said, "report: ipc=ok", "the original's own checks");
    let before = ipc_at_rest(pid, child, name, &said);
    for k in ["shm", "sem", "msg"] {
        assert!(
            before
                .entries
                .keys()
                .any(|e| e.starts_with(&format!("ipcns.sysvipc.{k}."))),
            "the view inside the namespace has its {k} objects: {:?}",
            before
                .entries
                .keys()
                .filter(|e| e.starts_with("ipcns."))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        before.entries["ipcns.mqueue./belowq"].0 == oracle::Kind::Config
            && before.entries["ipcns.mqueue./belowq"].1.contains("cur=1"),
        "the queue inside the namespace: {:?}",
        before.entries["ipcns.mqueue./belowq"]
    );
    assert_ipc_nothing_on_host("original");
    let img = ctx.path("belowipc.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let mut r = restore_up(&ctx, &img, &before, name);
    let (rchild, _) = ipc_child(pid, "restored");
    assert_eq!(rchild, child, "the ipc child keeps its PID");
    let said = report(&mut r, 1);
    assert_eq!(said, "report: ipc=ok", "the restored tree's own checks");
    let after = ipc_at_rest(pid, child, name, &said);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: belowns ipc sysv"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    assert_ipc_nothing_on_host("restored");
    assert_eq!(
        report(&mut r, 2),
        "report: ipc=ok",
        "the restored tree's second checks"
    );
    exit_ok(r, name);
}

/// Restores of that tree failing while the namespace's objects are made (a System V
/// object, the named queue) or after (its memory, the segment's pages) leave no process
/// and no object anywhere; a restore after them works.
#[test]
fn failed_restores_of_objects_below_the_root_leave_nothing() {
    let name = "failed_restores_of_objects_below_the_root_leave_nothing";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("ipc")
        .arg("sysv")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let (_, tree) = ipc_child(t.pid, name);
    let img = ctx.path("belowipc.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    for f in [
        "create System V object",
        "make a POSIX message queue of the namespace",
        "fill memory",
        "remove helper area",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_ipc_nothing_on_host(f);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    ipc_child(t.pid, "restored after the failures");
    assert_eq!(
        report(&mut r, 1),
        "report: ipc=ok",
        "restored after the failures"
    );
    exit_ok(r, name);
}

/// A semaphore undo adjustment (SEM_UNDO) in an IPC namespace a process below the root
/// made comes back there: the child raised semaphore 1 of its set by 2 with SEM_UNDO
/// (5 to 7); restored, the namespace as read inside it is the original's (the oracle),
/// the value is 7 still, and when the child exits the kernel takes the adjustment back
/// exactly: the value read inside the namespace (kept by its file) is 5 again, as it is
/// when the original exits undisturbed (without the adjustment restored it stays 7).
#[test]
fn undo_adjustment_in_an_ipc_namespace_made_below_the_root_comes_back() {
    let name = "undo_adjustment_in_an_ipc_namespace_made_below_the_root_comes_back";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("ipc")
        .arg("semundo")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let values = |ns: &std::fs::File| -> Vec<Vec<i32>> {
        common::ipcview::sem_values_in(ns).into_values().collect()
    };
    // The original, undisturbed: its exit undoes the adjustment.
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let (child, _) = ipc_child(t.pid, "undisturbed");
    let ns = common::ipcview::ipc_ns_file(child);
    assert_eq!(values(&ns), vec![vec![3, 7, 7]], "undisturbed, running");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
    assert_eq!(
        values(&ns),
        vec![vec![3, 5, 7]],
        "undisturbed, after its exit"
    );
    // Dumped and restored.
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let (child, pids) = ipc_child(pid, "original");
    let said = report(&mut t, 1);
    assert_eq!(said, "report: ipc=ok", "the original's own checks");
    let before = ipc_at_rest(pid, child, name, &said);
    let img = ctx.path("undo.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_restored_up(&before, &mut r, name);
    let (rchild, _) = ipc_child(pid, "restored");
    assert_eq!(rchild, child, "the ipc child keeps its PID");
    let said = report(&mut r, 1);
    assert_eq!(said, "report: ipc=ok", "the restored tree's own checks");
    let after = ipc_at_rest(pid, child, name, &said);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: belowns ipc semundo"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    assert_ipc_nothing_on_host("restored");
    let ns = common::ipcview::ipc_ns_file(child);
    assert_eq!(values(&ns), vec![vec![3, 7, 7]], "restored, running");
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: the restored tree's exit; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        values(&ns),
        vec![vec![3, 5, 7]],
        "after the restored child's exit: its undo adjustment taken back exactly"
    );
}

/// A unix socket pair a process made in the root's network namespace and holds in one it
/// made below the root is refused at dump (restore makes a socket in its holder's
/// namespace), naming the process and the descriptor; the tree runs on.
#[test]
fn socket_made_outside_a_network_namespace_made_below_the_root_is_refused() {
    let name = "socket_made_outside_a_network_namespace_made_below_the_root_is_refused";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("net")
        .arg("unixsock")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 4, name);
    let net_child = tree
        .iter()
        .copied()
        .find(|&p| ppid_of(p) == t.pid)
        .expect("the net child");
    let r = ctx.try_dump(t.pid, &ctx.path("unix.img"));
    r.assert_fails(1);
    assert!(
        r.stderr.contains(&format!("process {net_child}"))
            && r.stderr.contains("was made in another network namespace")
            && r.stderr
                .contains(&format!("net:[{}]", ns(net_child, "net"))),
        "dump of a tree whose child holds a unix socket made before its network namespace: {}",
        r.stderr
    );
    for &p in &tree {
        assert_running_untraced(p, "after the refused dump");
    }
    assert_eq!(
        report(&mut t, 1),
        "report: net=ok nested-net=ok",
        "after the refused dump"
    );
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
}

/// Every check of `belowns net conns` passing.
const CONNS_OK: &str = "report: net=ok nested-net=ok net-peer=ok";

/// The tree of `belowns net conns` (4 processes): the net child (the root's only
/// child) and its child that stays in its network namespace (the one whose PID comes
/// first: forked first), checked against the root's and each other's namespaces.
fn conns_shape(root: i32, what: &str) -> (Vec<i32>, i32, i32) {
    let tree = wait_process_tree(root, 4, what);
    let kids = |p: i32| children_in(&tree, p);
    let net = kids(root)[0];
    let grand = kids(net);
    assert_eq!(grand.len(), 2, "{what}: the net child's children");
    let peer = grand
        .iter()
        .copied()
        .find(|&g| ns(g, "net") == ns(net, "net"))
        .expect("the child that stays in the net child's namespace");
    assert_ne!(
        ns(net, "net"),
        ns(root, "net"),
        "{what}: the net child's own"
    );
    (tree, net, peer)
}

/// Whether the abstract unix name @belowns-abs is bound in the test's (ckpt's) network
/// namespace: /proc/net/unix lists the reader's.
fn abstract_name_on_host() -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .any(|l| l.ends_with(" @belowns-abs"))
}

/// How many of the snapshot's entries end with `suffix` and have the value `value`.
fn count_entries(s: &Snapshot, suffix: &str, value: &str) -> usize {
    s.entries
        .iter()
        .filter(|(k, (_, v))| k.ends_with(suffix) && v == value)
        .count()
}

/// A TCP connection over the loopback of a network namespace a process below the root
/// made, a unix stream pair and a client accepted on an abstract name there, their
/// ends split between two processes, each with 8 bytes queued for the other way, come
/// back in the namespace the restored net child makes: the processes read what the
/// other side queued before the dump and go on exchanging (twice), the abstract
/// listener takes a new client there, the name is not bound in ckpt's namespace, and
/// the oracle sees the same sockets (sock_diag in that namespace: states, peers,
/// queues; TCP_INFO, FIONREAD) before and after.
#[test]
fn connections_in_a_network_namespace_made_below_the_root_come_back() {
    let name = "connections_in_a_network_namespace_made_below_the_root_come_back";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("net")
        .arg("conns")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let (pids, net, peer) = conns_shape(pid, "original");
    let said = report(&mut t, 1);
    assert_eq!(said, CONNS_OK, "the original's own checks");
    assert!(!abstract_name_on_host(), "@belowns-abs in ckpt's namespace");
    let before = Snapshot::at_rest(pid, name).with_report(pid, &said);
    // The oracle sees them: 4 unix ends and 2 TCP ones with a message queued each.
    assert_eq!(
        count_entries(&before, ".sock.unix.rqlen", "8"),
        4,
        "unix ends with a message queued"
    );
    assert_eq!(
        count_entries(&before, ".sock.inq", "8"),
        6,
        "ends with a message queued (FIONREAD)"
    );
    assert!(
        count_entries(&before, ".sock.tcp_state", "1") >= 2,
        "established TCP connections"
    );
    let img = ctx.path("conns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let mut r = restore_up(&ctx, &img, &before, name);
    let (_, rnet, rpeer) = conns_shape(pid, "restored");
    assert_eq!((rnet, rpeer), (net, peer), "the same processes");
    let after = Snapshot::at_rest(pid, name);
    assert!(!abstract_name_on_host(), "@belowns-abs in ckpt's namespace");
    let said = report(&mut r, 1);
    assert_eq!(said, CONNS_OK, "the restored tree's own checks");
    let after = after.with_report(pid, &said);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: belowns net conns"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    assert_eq!(
        report(&mut r, 2),
        CONNS_OK,
        "the restored tree's second checks"
    );
    exit_ok(r, name);
}

/// Restores of that tree failing once its connections are being made in the namespace
/// (a TCP connection in repair mode, the accepted abstract connection) or after (just
/// before the point of no return) leave no process and nothing bound on ckpt's side; a
/// restore after them works.
#[test]
fn failed_restores_of_connections_below_the_root_leave_nothing() {
    let name = "failed_restores_of_connections_below_the_root_leave_nothing";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("belowns"))
        .arg("net")
        .arg("conns")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let (tree, _, _) = conns_shape(t.pid, name);
    let img = ctx.path("conns.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    for f in [
        "connect (repair)",
        "listen to accept a connection",
        "detach",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert!(
            !abstract_name_on_host(),
            "{f}: @belowns-abs in ckpt's namespace"
        );
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    conns_shape(t.pid, "restored after the failures");
    assert_eq!(report(&mut r, 1), CONNS_OK, "restored after the failures");
    exit_ok(r, name);
}
