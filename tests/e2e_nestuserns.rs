//! User namespaces made below the tree's root, and nested ones (issue 15: a rootless
//! container that runs a sandbox): a child that made a user namespace (and a UTS
//! namespace in it) is restored into a new one, nested where its was (in the host's,
//! or in the tree's own user namespace: two levels), with the same maps, setgroups
//! state and creator, its UTS namespace owned by it, and every process of it root with
//! every capability there again. The state oracle (`ctx.dump`/`ctx.restore`) compares
//! which processes share which namespace, who owns each (NS_GET_USERNS; a user
//! namespace's parent), the creators (NS_GET_OWNER_UID), the maps and
//! /proc/PID/status (Cap*, NSpid); the programs check their capabilities by using them
//! (renaming their host). IPC and network namespaces a child made in its user namespace
//! come back owned by the new one, with their state (msgmax, a System V segment, the
//! loopback and a UDP socket), which the processes check, and so does a cgroup
//! namespace made there (rooted at a cgroup of the test's: /proc/self/cgroup at "/"),
//! one level deep and two (in a user namespace nested in the tree's own). What restore
//! cannot do (a mount namespace, a time namespace made for the children there) is
//! refused at dump, naming it; a failed restore leaves nothing (no process, user
//! namespace or cgroup it made). Target: `tests/targets/nestuserns.c`. Needs root.

mod common;

use std::os::unix::fs::MetadataExt;

use common::more::*;
use common::*;

/// The inode of namespace `kind` of process `pid` (`self` for the test).
fn ns(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// /proc/PID/`file` of process `pid`, blanks squeezed.
fn proc_text(pid: i32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of line "Name:" of /proc/PID/status, blanks squeezed.
fn status(pid: i32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Every capability this kernel knows, as /proc/PID/status shows a set.
fn full_caps() -> String {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("cap_last_cap");
    format!("{:016x}", (1u128 << (last + 1)) - 1)
}

/// The shape of `tree` (root, child, grandchild, and with `joiner` a second child):
/// the child and grandchild share a user namespace that is neither the root's nor the
/// test's, nested in the root's (`root_map`: the root's uid_map, its own when not the
/// test's), mapped by `child_map`, owned by it a UTS namespace the root does not share,
/// and they are root with every capability there; the joiner entered that user
/// namespace (setns) and stayed in the root's UTS namespace.
fn assert_shape(tree: &[i32], root_map: Option<&str>, child_map: &str, joiner: bool, what: &str) {
    let n = if joiner { 4 } else { 3 };
    assert_eq!(tree.len(), n, "{what}: the tree: {tree:?}");
    let r = tree[0].to_string();
    let me = ns("self", "user");
    match root_map {
        Some(m) => {
            assert_ne!(ns(&r, "user"), me, "{what}: the root's user namespace");
            assert_eq!(proc_text(tree[0], "uid_map"), m, "{what}: root's uid_map");
        }
        None => assert_eq!(ns(&r, "user"), me, "{what}: the root is in ours"),
    }
    let (stay, own): (Vec<i32>, Vec<i32>) = tree[1..]
        .iter()
        .partition(|p| ns(&p.to_string(), "uts") == ns(&r, "uts"));
    assert_eq!(
        own.len(),
        2,
        "{what}: child and grandchild in a UTS namespace: {own:?}"
    );
    assert_eq!(
        stay.len(),
        n - 3,
        "{what}: the joiner in the root's: {stay:?}"
    );
    let (c, g) = match status(own[0], "PPid") == r {
        true => (own[0], own[1]),
        false => (own[1], own[0]),
    };
    assert_eq!(status(c, "PPid"), r, "{what}: the child {c} is the root's");
    let [cs, gs] = [c, g].map(|p| p.to_string());
    let user = ns(&cs, "user");
    assert_ne!(user, ns(&r, "user"), "{what}: the child's is its own");
    assert_eq!(ns(&gs, "user"), user, "{what}: the grandchild shares it");
    assert_eq!(
        oracle::ns_owner(c, "user"),
        Some(ns(&r, "user")),
        "{what}: nested in the root's"
    );
    let uts = ns(&cs, "uts");
    assert_eq!(
        ns(&gs, "uts"),
        uts,
        "{what}: the grandchild's UTS namespace"
    );
    assert_eq!(
        oracle::ns_owner(c, "uts"),
        Some(user),
        "{what}: the UTS namespace is owned by the child's user namespace"
    );
    for &p in [c, g].iter().chain(&stay) {
        assert_eq!(ns(&p.to_string(), "user"), user, "{what}: {p} is in it");
        assert_eq!(proc_text(p, "uid_map"), child_map, "{what}: uid_map of {p}");
        assert_eq!(proc_text(p, "gid_map"), child_map, "{what}: gid_map of {p}");
        assert_eq!(
            proc_text(p, "setgroups"),
            "deny",
            "{what}: setgroups of {p}"
        );
        assert_eq!(status(p, "CapEff"), full_caps(), "{what}: CapEff of {p}");
    }
}

/// Check the tree of `n` processes that `spec` makes with `check` ("original"), then
/// dump and restore it (`dump_restore_compare`: the oracle, and the output of an
/// uninterrupted run) and check the restored tree the same way ("restored").
fn round_trip(ctx: &Ctx, spec: &Spec, n: usize, tag: &str, check: &dyn Fn(&[i32], &str)) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(2);
    let tree = wait_process_tree(t.pid, n, tag);
    check(&tree, "original");
    // (Its other processes first: they run on, orphaned, until they are told to stop.)
    for &p in &tree[1..] {
        send_signal(p, libc::SIGKILL);
    }
    t.kill();
    let mut checked = false;
    dump_restore_compare(ctx, spec, spec, 6, &[], tag, &mut |pid| {
        check(
            &wait_process_tree(pid, n, &format!("restored {tag}")),
            "restored",
        );
        checked = true;
    });
    assert!(checked);
}

/// A tree in the test's user namespace whose child made a user namespace (root mapped
/// to root) and a UTS namespace in it, and forked a grandchild: restored with the
/// child's user namespace nested in ours and its UTS namespace owned by it; the child
/// and grandchild keep renaming their host (they would exit if they could not), and
/// the root's output continues.
#[test]
fn a_user_namespace_a_child_made_is_restored() {
    let ctx = Ctx::new("a_user_namespace_a_child_made_is_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("uts")
        .arg("grand");
    round_trip(&ctx, &spec, 3, "nestuserns", &|tree, what| {
        assert_shape(tree, None, "0 0 1", false, what);
    });
}

/// The child and grandchild of `tree` (`nestuserns ... ipcnet grand`, no joiner) share
/// IPC and network namespaces that the root does not, both owned (NS_GET_USERNS) by the
/// child's user namespace.
fn assert_ipcnet(tree: &[i32], what: &str) {
    let r = tree[0].to_string();
    let c = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == r)
        .expect("the child");
    let g = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == c.to_string())
        .expect("the grandchild");
    let user = ns(&c.to_string(), "user");
    for kind in ["ipc", "net"] {
        let mine = ns(&c.to_string(), kind);
        assert_ne!(mine, ns(&r, kind), "{what}: the child's own {kind}");
        assert_eq!(ns(&g.to_string(), kind), mine, "{what}: {kind} shared");
        assert_eq!(
            oracle::ns_owner(c, kind),
            Some(user),
            "{what}: the {kind} namespace is owned by the child's user namespace"
        );
    }
}

/// A child that made a user namespace and, in it, UTS, IPC (msgmax set, a System V
/// segment attached) and network namespaces (loopback up, a UDP socket bound), shared
/// with its grandchild: restored with all three made again owned by the new user
/// namespace (the oracle compares owners and sharing), the IPC limit and segment and
/// the network's loopback and socket there (the child and grandchild check them, and
/// that they may write msgmax as the namespace's root, at every step: the output
/// continues as the uninterrupted run's).
#[test]
fn ipc_and_network_namespaces_made_in_a_childs_user_namespace_are_restored() {
    let ctx = Ctx::new("ipc_and_network_namespaces_made_in_a_childs_user_namespace_are_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("uts")
        .arg("ipcnet")
        .arg("grand");
    round_trip(&ctx, &spec, 3, "nestuserns-ipcnet", &|tree, what| {
        assert_shape(tree, None, "0 0 1", false, what);
        assert_ipcnet(tree, what);
    });
}

/// Restores of that tree failing while those namespaces are made in the new user
/// namespace, or when the child's stub joins them, leave no process and nothing in a
/// user namespace; the next restore runs on.
#[test]
fn failed_restores_of_ipc_and_network_namespaces_in_a_user_namespace_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_ipc_and_network_namespaces_in_a_user_namespace");
    let spec = Spec::new(target("nestuserns"))
        .arg("60")
        .arg("sleep=40")
        .arg("ipcnet")
        .arg("grand");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let tree = wait_process_tree(t.pid, 3, "nestuserns ipcnet");
    let img = ctx.path("ipcnet.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "nestuserns ipcnet after the dump");
    for f in [
        "create a namespace in a user namespace below the root",
        "setns (a namespace a process made in a user namespace)",
        "fill memory",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    let tree = wait_process_tree(tree[0], 3, "restored after the failures");
    assert_ipcnet(&tree, "restored after the failures");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored after the failures: {}",
        text(&fin.stdout)
    );
}

/// The child and grandchild of `tree` (`nestuserns ... cgroup=DIR grand`, no joiner)
/// share a cgroup namespace the root does not, owned (NS_GET_USERNS) by the child's
/// user namespace, and are in cgroup `dir` (as the host's v2 hierarchy shows it).
fn assert_cgroupns(tree: &[i32], dir: &std::path::Path, what: &str) {
    let r = tree[0].to_string();
    let c = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == r)
        .expect("the child");
    let g = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == c.to_string())
        .expect("the grandchild");
    let mine = ns(&c.to_string(), "cgroup");
    assert_ne!(
        mine,
        ns(&r, "cgroup"),
        "{what}: the child's own cgroup namespace"
    );
    assert_eq!(
        ns(&g.to_string(), "cgroup"),
        mine,
        "{what}: cgroup namespace shared"
    );
    assert_eq!(
        oracle::ns_owner(c, "cgroup"),
        Some(ns(&c.to_string(), "user")),
        "{what}: the cgroup namespace is owned by the child's user namespace"
    );
    let rel = dir
        .strip_prefix(cgroup_v2())
        .expect("the test's cgroup below the v2 hierarchy");
    for p in [c, g] {
        let line = std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("0::"))
            .map(str::to_string);
        assert_eq!(
            line,
            Some(format!("0::/{}", rel.display())),
            "{what}: the cgroup of {p} as the host sees it"
        );
    }
}

/// A child that moved into a cgroup of the test's, made a user namespace and, in it,
/// a cgroup namespace (rooted at that cgroup), shared with its grandchild: restored
/// with the cgroup namespace made again owned by the new user namespace, rooted at the
/// same cgroup (the child and grandchild check at every step that /proc/self/cgroup
/// shows every hierarchy at "/", and that they are not in the root's cgroup
/// namespace; the oracle compares owners, sharing and /proc/PID/cgroup), the output
/// that of an uninterrupted run.
#[test]
fn a_cgroup_namespace_made_in_a_childs_user_namespace_is_restored() {
    let ctx = Ctx::new("a_cgroup_namespace_made_in_a_childs_user_namespace_is_restored");
    let cg = TestCgroup::make("nestuserns-one");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("uts")
        .arg(format!("cgroup={}", cg.0.display()))
        .arg("grand");
    round_trip(&ctx, &spec, 3, "nestuserns-cgroup", &|tree, what| {
        assert_shape(tree, None, "0 0 1", false, what);
        assert_cgroupns(tree, &cg.0, what);
    });
}

/// Two levels (issue 15): the root made a user namespace of its own (0-65535 mapped
/// to 123400-188935), its child one nested in it, and in that UTS, IPC (msgmax, a
/// System V segment), network (loopback up, a UDP socket) and cgroup namespaces,
/// shared with its grandchild: restored with each made again owned by the new nested
/// user namespace, with its state, which the child and grandchild check at every step
/// (as the one-level tests above), the oracle comparing owners, parents and sharing.
#[test]
fn ipc_network_and_cgroup_namespaces_two_user_namespaces_deep_are_restored() {
    let ctx = Ctx::new("ipc_network_and_cgroup_namespaces_two_user_namespaces_deep");
    let cg = TestCgroup::make("nestuserns-two");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("top")
        .arg("wide")
        .arg("uts")
        .arg("ipcnet")
        .arg(format!("cgroup={}", cg.0.display()))
        .arg("grand");
    let wide = "0 123400 65536";
    round_trip(&ctx, &spec, 3, "nestuserns-deep", &|tree, what| {
        assert_shape(tree, Some(wide), "0 123400 1", false, what);
        assert_ipcnet(tree, what);
        assert_cgroupns(tree, &cg.0, what);
    });
}

/// Restores of the two-level tree with IPC, network and cgroup namespaces in the
/// nested user namespace, its cgroup removed after the dump (so that the restore makes
/// it), failing while those namespaces are made, when the child's stub joins them or
/// later, leave no process, nothing in a user namespace and not the cgroup; the next
/// restore runs on in it.
#[test]
fn failed_restores_of_namespaces_two_user_namespaces_deep_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_namespaces_two_user_namespaces_deep");
    let cg = TestCgroup::make("nestuserns-fail");
    let spec = Spec::new(target("nestuserns"))
        .arg("60")
        .arg("sleep=40")
        .arg("top")
        .arg("wide")
        .arg("base=423400")
        .arg("ipcnet")
        .arg(format!("cgroup={}", cg.0.display()))
        .arg("grand");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let tree = wait_process_tree(t.pid, 3, "nestuserns deep");
    let img = ctx.path("deep.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "nestuserns deep after the dump");
    std::fs::remove_dir(&cg.0).unwrap_or_else(|e| panic!("rmdir {}: {e}", cg.0.display()));
    for f in [
        "create a namespace in a user namespace below the root",
        "setns (a namespace a process made in a user namespace)",
        "setns (the tree's user namespace)",
        "fill memory",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_eq!(
            namespaces_with_our_map("423400"),
            Vec::<i32>::new(),
            "restore failing at {f} left a process in a user namespace"
        );
        assert!(
            !cg.0.exists(),
            "restore failing at {f} left the cgroup {} it made",
            cg.0.display()
        );
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    let tree = wait_process_tree(tree[0], 3, "restored after the failures");
    assert_ipcnet(&tree, "restored after the failures");
    assert_cgroupns(&tree, &cg.0, "restored after the failures");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored after the failures: {}",
        text(&fin.stdout)
    );
}

/// Two levels: the root made a user namespace of its own (0-65535 mapped to
/// 123400-188935 from outside), and its child one nested in it (root inside mapped to
/// the root's root: 123400 on the host, written as 0 from inside the root's) with a
/// UTS namespace, which a second child of the root entered with setns: restored with
/// both, the child's nested in the root's new one (its map written from there), the
/// same maps as the host reads them, the UTS namespace owned by the child's, the
/// second child in the child's user namespace and the root's UTS namespace.
#[test]
fn a_user_namespace_nested_in_the_trees_is_restored() {
    let ctx = Ctx::new("a_user_namespace_nested_in_the_trees_is_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("top")
        .arg("wide")
        .arg("uts")
        .arg("grand")
        .arg("join");
    let wide = "0 123400 65536";
    round_trip(&ctx, &spec, 4, "nestuserns-top", &|tree, what| {
        assert_shape(tree, Some(wide), "0 123400 1", true, what);
    });
}

/// A child that made a mount namespace in the user namespace it made: refused at dump,
/// naming the mount namespace, and the tree runs on.
#[test]
fn a_mount_namespace_made_in_a_nested_user_namespace_is_refused() {
    let ctx = Ctx::new("a_mount_namespace_made_in_a_nested_user_namespace_is_refused");
    let spec = Spec::new(target("nestuserns"))
        .arg("200")
        .arg("sleep=40")
        .arg("mnt");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(1);
    let tree = wait_process_tree(t.pid, 2, "nestuserns mnt");
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path("refused.img");
    let r = ctx.try_dump(t.pid, &img);
    r.assert_fails(1);
    assert!(
        r.stderr.contains("mount namespace") && r.stderr.contains(&tree[1].to_string()),
        "dump: {}",
        r.stderr
    );
    assert!(!img.exists());
    for &p in &tree {
        assert_running_untraced(p, "after the refused dump");
    }
    t.kill();
}

/// The child and grandchild of `tree` (`nestuserns ... time grand`, no joiner): the
/// child in the root's time namespace, its grandchild in the one the child made for
/// its children (the child's `time_for_children`), owned (NS_GET_USERNS) by the
/// child's user namespace, its clocks 100 days ahead of the host's (its offsets, as
/// /proc/PID/timens_offsets shows them: at least 99 days, the dump's downtime aside).
fn assert_time(tree: &[i32], what: &str) {
    let r = tree[0].to_string();
    let c = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == r)
        .expect("the child");
    let g = tree
        .iter()
        .copied()
        .find(|&p| status(p, "PPid") == c.to_string())
        .expect("the grandchild");
    let (cs, gs) = (c.to_string(), g.to_string());
    let t = ns(&gs, "time");
    assert_eq!(ns(&cs, "time"), ns(&r, "time"), "{what}: the child's own");
    assert_ne!(t, ns(&r, "time"), "{what}: the grandchild's is another");
    assert_eq!(
        ns(&cs, "time_for_children"),
        t,
        "{what}: the one the child made for its children"
    );
    assert_eq!(
        oracle::ns_owner(g, "time"),
        Some(ns(&cs, "user")),
        "{what}: the time namespace is owned by the child's user namespace"
    );
    let offsets = proc_text(g, "timens_offsets");
    let secs: Vec<i64> = offsets
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .step_by(2)
        .collect();
    assert!(
        secs.len() == 2 && secs.iter().all(|s| (99 * 86400..=100 * 86400).contains(s)),
        "{what}: the grandchild's offsets: {offsets}"
    );
}

/// A child that made a user namespace and, in it, a time namespace for its children
/// (100 days ahead), which its grandchild is in: restored with the time namespace made
/// again by the child's stub once in its new user namespace (so owned by it), for its
/// children only, the grandchild in it; the grandchild checks at every step that its
/// clocks never go back and stay 100 days ahead, the child that its own do not (the
/// oracle compares which process is in which time namespace, the children's ones and
/// their owners), the output that of an uninterrupted run.
#[test]
fn a_time_namespace_made_in_a_childs_user_namespace_is_restored() {
    let ctx = Ctx::new("a_time_namespace_made_in_a_childs_user_namespace_is_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("uts")
        .arg("time")
        .arg("grand");
    round_trip(&ctx, &spec, 3, "nestuserns-time", &|tree, what| {
        assert_shape(tree, None, "0 0 1", false, what);
        assert_time(tree, what);
    });
}

/// Two levels: the root made a user namespace of its own, its child one nested in it
/// and there a time namespace for its children (100 days ahead), with threads in the
/// child and the grandchild: restored as one level deep, the time namespace owned by
/// the nested user namespace, every thread root with every capability there (each
/// checks its own credentials at every step).
#[test]
fn a_time_namespace_and_threads_two_user_namespaces_deep_are_restored() {
    let ctx = Ctx::new("a_time_namespace_and_threads_two_user_namespaces_deep_are_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("top")
        .arg("wide")
        .arg("uts")
        .arg("time")
        .arg("grand")
        .arg("threads");
    let wide = "0 123400 65536";
    round_trip(&ctx, &spec, 3, "nestuserns-time-deep", &|tree, what| {
        assert_shape(tree, Some(wide), "0 123400 1", false, what);
        assert_time(tree, what);
        assert_threads(tree, what);
    });
}

/// The child and grandchild of `tree` have two threads each.
fn assert_threads(tree: &[i32], what: &str) {
    for &p in &tree[1..] {
        assert_eq!(status(p, "Threads"), "2", "{what}: threads of {p}");
    }
}

/// A child that made a user namespace, and it and its grandchild with a thread each:
/// restored with each process joining the new user namespace before its thread is
/// made (its ID set from outside), every thread root with every capability there
/// (each checks its own at every step; the oracle compares each thread's status:
/// IDs, capabilities, NSpid), the output that of an uninterrupted run.
#[test]
fn threads_in_a_childs_user_namespace_are_restored() {
    let ctx = Ctx::new("threads_in_a_childs_user_namespace_are_restored");
    let spec = Spec::new(target("nestuserns"))
        .arg("40")
        .arg("sleep=40")
        .arg("uts")
        .arg("grand")
        .arg("threads");
    round_trip(&ctx, &spec, 3, "nestuserns-threads", &|tree, what| {
        assert_shape(tree, None, "0 0 1", false, what);
        assert_threads(tree, what);
    });
}

/// Restores of the tree with a time namespace made in a child's user namespace failing
/// when the child's stub makes it, when the grandchild's joins it or
/// later leave no process and nothing in a user namespace; the next restore runs on.
#[test]
fn failed_restores_of_a_time_namespace_in_a_user_namespace_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_time_namespace_in_a_user_namespace");
    let spec = Spec::new(target("nestuserns"))
        .arg("60")
        .arg("sleep=40")
        .arg("top")
        .arg("wide")
        .arg("base=523400")
        .arg("time")
        .arg("grand");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let tree = wait_process_tree(t.pid, 3, "nestuserns time");
    let img = ctx.path("time.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "nestuserns time after the dump");
    for f in [
        "make a time namespace a process made in a user namespace",
        "join a time namespace a process made in a user namespace",
        "setns (the tree's user namespace)",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_eq!(
            namespaces_with_our_map("523400"),
            Vec::<i32>::new(),
            "restore failing at {f} left a process in a user namespace"
        );
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    let tree = wait_process_tree(tree[0], 3, "restored after the failures");
    assert_time(&tree, "restored after the failures");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored after the failures: {}",
        text(&fin.stdout)
    );
}

/// Processes on the host whose user namespace maps IDs from `base` (a test's map):
/// none once a restore failed.
fn namespaces_with_our_map(base: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        if map.split_whitespace().nth(1) == Some(base) {
            out.push(pid);
        }
    }
    out
}

/// Restores of the two-level tree that fail at each new step (making the nested user
/// namespace, the UTS namespace in it, a stub joining that, a stub joining its user
/// namespace) and at sampled others leave no process and no user namespace behind;
/// the next restore succeeds and continues the output.
#[test]
fn failed_restores_of_nested_user_namespaces_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_nested_user_namespaces_leave_nothing");
    let spec = Spec::new(target("nestuserns"))
        .arg("25")
        .arg("sleep=20")
        .arg("top")
        .arg("wide")
        .arg("base=323400")
        .arg("uts")
        .arg("grand");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let tree = wait_process_tree(t.pid, 3, "nestuserns");
    let img = ctx.path("nested.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("nestuserns: original");
    wait_pids_gone(&tree, "nestuserns after the dump");
    assert_eq!(
        namespaces_with_our_map("323400"),
        Vec::<i32>::new(),
        "after the dump"
    );
    RestoreWalk {
        name: "nestuserns",
        img: &img,
        reference: &reference.stdout,
        before: &before,
        pids: &tree,
        min: 20,
        must: "create a user namespace below the tree's root",
        named: &[
            "create a user namespace below the tree's root",
            "create a namespace in a user namespace below the root",
            "take a namespace made below the root",
            "setns (a namespace a process made in a user namespace)",
            "setns (the tree's user namespace)",
        ],
    }
    .run(
        &ctx,
        |n, total| n <= 4 || n % 17 == 0 || n == total,
        |f| {
            assert_eq!(
                namespaces_with_our_map("323400"),
                Vec::<i32>::new(),
                "restore failing at {f} left a process in a user namespace"
            )
        },
    );
}
