//! A mount namespace a process below the tree's root made (issue 15): the child of the
//! root calls unshare(CLONE_NEWNS), makes its copy's mounts private, mounts a tmpfs with
//! files, binds a host directory into it, works there (its working directory in the
//! tmpfs, counting into a file there) and forks a grandchild that stays in it. Restored,
//! the namespace is built again and joined by the child's stub before the grandchild is
//! forked: the processes check themselves (the count goes on and its file holds it, the
//! bind shows the host's file, the working directory is on the tmpfs), the mounts seen
//! from inside (mountinfo, normalised by the state oracle), the tmpfs's files and the
//! namespace relations (root and child apart, the grandchild with the child) are the
//! original's, and `ckpt check --json` lists the namespace as made below the root. A
//! copy that keeps ckpt's shared mounts in their peer groups (the test's thread in a
//! mount namespace of its own, with a shared tmpfs) comes back in them: mounts made on
//! either side propagate as before; so does one copied from the tree's own mount
//! namespace (the root's, with a shared mount the child's tmpfs propagates back into).
//! A namespace nested two deep (the grandchild's private copy of the child's) is
//! restored as a copy of the child's restored one. What is not restored (one nested
//! two deep with peers in its parent's) is refused at dump, the tree running on; a
//! restore that fails while building a namespace leaves nothing.
//!
//! The target is `tests/targets/belowmnt.c`. Needs root (unshare, mount, ptrace).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::mntprop::{
    Prop, assert_propagates, assert_propagates_between, mount, mountinfo_of, optional_at,
    thread_mount_ns,
};
use common::oracle::{self, Cmp, Snapshot};
use common::*;

const ALL_OK: &str = "report: child=ok grandchild=ok";

/// The directories the target mounts on and binds (in the test's directory, on the
/// host, where nothing is mounted: the mounts are in the child's namespace).
fn layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("inner")).expect("mkdir inner");
    std::fs::create_dir_all(dir.join("host")).expect("mkdir host");
    std::fs::write(dir.join("host/host.txt"), "host\n").expect("write host.txt");
}

/// The target started in `ctx`'s directory with `mode` ("" for the restorable one),
/// once ready, with its root, child and grandchild.
fn start(ctx: &Ctx, mode: &str) -> (Proc, [i32; 3]) {
    layout(&ctx.dir);
    let mut spec = Spec::new(target("belowmnt"))
        .arg(&ctx.dir)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    if !mode.is_empty() {
        spec = spec.arg(mode);
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "belowmnt");
    (t, shape(tree[0], "original"))
}

fn ppid(pid: i32) -> i32 {
    proc_stat(pid).map(|(_, p)| p).unwrap_or(0)
}

/// The root, its child and grandchild; checks their mount namespaces: the root in ours,
/// the child's not the root's, the grandchild in the child's.
fn shape(root: i32, what: &str) -> [i32; 3] {
    shape_in(root, what, false)
}

/// [`shape`], the root in a mount namespace of its own (`own`) or in ours.
fn shape_in(root: i32, what: &str, own: bool) -> [i32; 3] {
    let tree = wait_process_tree(root, 3, what);
    let child = tree.iter().copied().find(|&p| ppid(p) == root);
    let child = child.unwrap_or_else(|| panic!("{what}: no child of {root}: {tree:?}"));
    let grandchild = tree.iter().copied().find(|&p| ppid(p) == child);
    let grandchild = grandchild.unwrap_or_else(|| panic!("{what}: no grandchild: {tree:?}"));
    let mnt = |p: i32| ns_inode(&p.to_string(), "mnt");
    // (This thread's: a test may have given it one of its own, `thread_mount_ns`.)
    assert_eq!(
        mnt(root) == ns_inode("thread-self", "mnt"),
        !own,
        "{what}: the root in ours, or in its own ({own})"
    );
    assert_ne!(mnt(child), mnt(root), "{what}: the child's own");
    [root, child, grandchild]
}

/// The last line of `p`'s output starting with "report:" (the `nth`), after asking.
fn report(p: &mut Proc, nth: usize) -> String {
    p.write_stdin(b"report\n");
    p.wait_until("a report", |p| {
        p.stdout
            .text()
            .lines()
            .filter(|l| l.starts_with("report:"))
            .count()
            >= nth
    });
    let out = p.stdout.text();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("report:")).collect();
    lines[nth - 1].to_string()
}

/// The restored tree's own checks (its first report) and its kernel state, through the
/// state oracle, compared with `before` (the original's, with its report).
fn assert_restored_state(name: &str, what: &str, root: i32, r: &mut Proc, before: &Snapshot) {
    let after = Snapshot::at_rest(root, name);
    let said = report(r, 1);
    assert_eq!(said, ALL_OK, "the restored tree's own checks");
    let after = after.with_report(root, &said);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: {what}"),
        Cmp::Restored,
        before,
        &after,
        &[],
    );
}

/// Tell the restored tree to exit; `ckpt restore` exits 0.
fn exit_ok(name: &str, mut r: Proc) {
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

/// The file `name` of the child's tmpfs, read through its namespace (/proc/PID/root).
fn tmpfs_file(child: i32, dir: &Path, name: &str) -> String {
    let p = PathBuf::from(format!("/proc/{child}/root")).join(dir.strip_prefix("/").unwrap_or(dir));
    std::fs::read_to_string(p.join("inner").join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The restorable case: restored with its mounts, files, relations and behaviour.
#[test]
fn mount_namespace_made_below_the_root_is_restored() {
    let name = "mount_namespace_made_below_the_root_is_restored";
    let ctx = Ctx::new(name);
    let (mut t, [root, child, grandchild]) = start(&ctx, "");
    assert_eq!(
        ns_inode(&grandchild.to_string(), "mnt"),
        ns_inode(&child.to_string(), "mnt")
    );
    let said = report(&mut t, 1);
    assert_eq!(said, ALL_OK, "the original's own checks");
    assert_eq!(tmpfs_file(child, &ctx.dir, "notes.txt"), "made inside\n");
    let before = Snapshot::at_rest(root, name).with_report(root, &said);
    let mi_before = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap_or_default();
    assert!(
        mi_before.contains(" - tmpfs belowmnt "),
        "the child's tmpfs: {mi_before}"
    );
    let pids = process_tree(root);
    let child_mnt = ns_inode(&child.to_string(), "mnt");
    let img = ctx.path("belowmnt.img");
    ctx.dump(root, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    assert_below_in_manifest(&ctx, &img, child, child_mnt);
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
    let [_, c2, g2] = shape(root, "restored");
    assert_eq!((c2, g2), (child, grandchild), "the same PIDs");
    assert_eq!(
        ns_inode(&grandchild.to_string(), "mnt"),
        ns_inode(&child.to_string(), "mnt")
    );
    // (The oracle compares each process's mountinfo, seen from inside its namespace
    // and normalised: mount IDs by place, file systems made anew numbered.)
    assert_restored_state(name, "belowmnt", root, &mut r, &before);
    assert_eq!(
        tmpfs_file(child, &ctx.dir, "notes.txt"),
        "made inside\n",
        "the tmpfs's files"
    );
    assert_eq!(
        report(&mut r, 2),
        ALL_OK,
        "the restored tree's second checks"
    );
    // Nothing of the namespace reached ours.
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !ours.contains(" - tmpfs belowmnt "),
        "a tmpfs of the child's in ours: {ours}"
    );
    exit_ok(name, r);
}

/// `ckpt check IMG --json` lists the child's mount namespace (`mnt:[ino]`, made by
/// `child`) under requirements.namespaces as one a process below the root made, with
/// what its mounts need of the host: the host directory bound in (external) and the
/// tmpfs made anew; the others are not "below".
fn assert_below_in_manifest(ctx: &Ctx, img: &Path, child: i32, ino: u64) {
    let m = common::arch::check_json(ctx, img, &[], &[]);
    let list = m["requirements"]["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("check --json has no requirements.namespaces: {m}"));
    let below: Vec<_> = list.iter().filter(|n| n["below"] == true).collect();
    assert_eq!(
        below.len(),
        1,
        "one namespace made below the root: {list:?}"
    );
    let n = below[0];
    assert_eq!(
        (n["kind"].as_str(), n["inode"].as_u64(), n["as"].as_str()),
        (Some("mnt"), Some(ino), Some("own")),
        "{n}"
    );
    assert_eq!(n["made_by"].as_i64(), Some(i64::from(child)), "{n}");
    let host = ctx.dir.join("host");
    let external = n["mounts"]["external"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        external
            .iter()
            .any(|e| e["source"].as_str() == host.to_str()),
        "the bind of {} among the external mounts: {n}",
        host.display()
    );
    let fs = n["mounts"]["filesystems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(fs.iter().any(|f| f == "tmpfs"), "the tmpfs made anew: {n}");
    assert!(
        list.iter().all(|x| x["below"] == false || x == n),
        "the others are not below: {list:?}"
    );
}

/// Restores failing while the namespace is built (before, while mounting, while giving
/// propagation) and after leave no process, and nothing mounted in ours.
#[test]
fn failed_restores_of_a_mount_namespace_below_the_root_leave_nothing() {
    let name = "failed_restores_of_a_mount_namespace_below_the_root_leave_nothing";
    let ctx = Ctx::new(name);
    let (mut t, tree) = start(&ctx, "");
    let img = ctx.path("belowmnt.img");
    ctx.dump(tree[0], &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .count()
    };
    for f in [
        "make a mount namespace a process below the root made",
        "mount the tree's file systems",
        "set the tree's mount propagation",
        "fill memory",
    ] {
        let n = mounts();
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !ours.contains(" - tmpfs belowmnt ") && !ours.contains("ckpt-stage"),
            "{f}: {ours}"
        );
        assert!(mounts() <= n, "{f}: a mount left in ours");
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    shape(tree[0], "restored after the failures");
    assert_eq!(report(&mut r, 1), ALL_OK, "restored after the failures");
    r.write_stdin(b"exit\n");
    r.close_stdin();
    assert_eq!(r.finish().status.code(), Some(0));
}

/// A child's mount namespace copied with unshare(CLONE_NEWNS) from ckpt's (here the
/// test thread's own, `thread_mount_ns`) keeps its copy of a shared tmpfs in that
/// mount's peer group: restored, the copy joins the group again (MOVE_MOUNT_SET_GROUP
/// from ckpt's mount), and propagation works both ways as before (checked before the
/// dump and after the restore); the mounts seen from inside (oracle), the processes'
/// own checks and the tmpfs's files are the original's.
#[test]
fn mount_namespace_sharing_peers_with_ckpts_is_restored() {
    let name = "mount_namespace_sharing_peers_with_ckpts_is_restored";
    let ctx = Ctx::new(name);
    let peer = thread_mount_ns(&ctx.dir);
    let (mut t, [root, child, _]) = start(&ctx, "peers");
    let said = report(&mut t, 1);
    assert_eq!(said, ALL_OK, "the original's own checks");
    assert_propagates(child, &peer, Prop::Peer, "original");
    let before = Snapshot::at_rest(root, name).with_report(root, &said);
    let pids = process_tree(root);
    let img = ctx.path("belowpeers.img");
    ctx.dump(root, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_restored_up(&before, &mut r, name);
    let [_, c2, _] = shape(root, "restored");
    assert_eq!(c2, child, "the same PIDs");
    assert_restored_state(name, "belowmnt peers", root, &mut r, &before);
    assert_propagates(child, &peer, Prop::Peer, "restored");
    assert_eq!(tmpfs_file(child, &ctx.dir, "notes.txt"), "made inside\n");
    exit_ok(name, r);
}

/// Restores of that tree failing while its namespace is built (while mounting, while
/// joining the peer group) and after (memory) leave no process and no mount in ckpt's
/// namespace; one whose peer in ckpt's namespace is no longer shared is refused before
/// anything is made, naming the mount point; a restore after them works, with
/// propagation both ways.
#[test]
fn failed_restores_of_a_namespace_sharing_peers_leave_nothing() {
    let name = "failed_restores_of_a_namespace_sharing_peers_leave_nothing";
    let ctx = Ctx::new(name);
    let peer = thread_mount_ns(&ctx.dir);
    let (mut t, tree) = start(&ctx, "peers");
    let img = ctx.path("belowpeers.img");
    ctx.dump(tree[0], &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    let ours = || mountinfo_of("thread-self");
    let before = ours();
    for f in [
        "mount the tree's file systems",
        "set the tree's mount propagation",
        "fill memory",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_eq!(ours(), before, "{f}: our mounts");
    }
    mount(None, &peer, None, libc::MS_PRIVATE);
    let r = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1)
        .assert_stderr_mentions(&[peer.to_str().unwrap_or_default(), "not shared now"]);
    for &p in &tree {
        assert_no_process(p, "the refused restore");
    }
    mount(None, &peer, None, libc::MS_SHARED);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let [_, child, _] = shape(tree[0], "restored after the failures");
    assert_eq!(report(&mut r, 1), ALL_OK, "restored after the failures");
    assert_propagates(child, &peer, Prop::Peer, "restored after the failures");
    r.write_stdin(b"exit\n");
    r.close_stdin();
    assert_eq!(r.finish().status.code(), Some(0));
}

/// The optional fields of every mount of the processes `pids`' namespaces, by mount
/// point, their group numbers renumbered in order of appearance across all of them: the
/// relation between the namespaces' mounts (peers, masters), not the kernel's numbers.
fn joint_groups(pids: &[i32]) -> Vec<Vec<String>> {
    let mut n: std::collections::BTreeMap<String, usize> = Default::default();
    pids.iter()
        .map(|p| {
            mountinfo_of(&p.to_string())
                .lines()
                .map(|l| {
                    let head = l.split(" - ").next().unwrap_or_default();
                    let w: Vec<&str> = head.split(' ').collect();
                    let opt: Vec<String> = w
                        .get(6..)
                        .unwrap_or_default()
                        .iter()
                        .map(|o| match o.split_once(':') {
                            Some((k, g)) => {
                                let next = n.len();
                                format!("{k}:{}", *n.entry(g.to_string()).or_insert(next))
                            }
                            None => o.to_string(),
                        })
                        .collect();
                    format!("{} [{}]", w.get(4).unwrap_or(&""), opt.join(" "))
                })
                .collect()
        })
        .collect()
}

/// `unshare -m` then DIR bound on itself and made shared, `belowmnt DIR peers`: the
/// tree's root in a mount namespace of its own with a shared mount; its child's copy of
/// it keeps that in its peer group, so its tmpfs on DIR/inner and the bind in it propagate back to
/// the root's namespace (one file system seen from both). Restored, the root's
/// namespace is built first and the child's as a copy of it, its mounts joining the
/// groups of the root's (the tmpfs bound from the root's restored one, not made again):
/// see [`round_trip_sharing_with_the_trees_own`].
#[test]
fn mount_namespace_sharing_peers_with_the_trees_own_is_restored() {
    round_trip_sharing_with_the_trees_own(
        "mount_namespace_sharing_peers_with_the_trees_own_is_restored",
        "private",
        "mount --bind {d} {d} && mount --make-shared {d}",
        false,
    );
}

/// The same with every mount of the root's namespace shared (`unshare -m --propagation
/// shared`, the simplest set-up) and two tmpfs stacked on DIR/stack there (each with a
/// file `which` saying "under" or "over"), as this host stacks two on /dev/shm: the
/// child's copies of both stay in the root's mounts' groups, the covered one's too,
/// whose mount in the root's namespace no path opens. Restore takes the groups from the
/// mounts it made for the root's namespace, kept by their dump IDs, not by path: the
/// joint peer groups of both namespaces, the stacked one's included, are the
/// original's.
#[test]
fn mount_namespace_sharing_stacked_mounts_with_the_trees_own_is_restored() {
    round_trip_sharing_with_the_trees_own(
        "mount_namespace_sharing_stacked_mounts_with_the_trees_own_is_restored",
        "shared",
        "mkdir -p {d}/stack && mount -t tmpfs stack-under {d}/stack && echo under > \
         {d}/stack/which && mount -t tmpfs stack-over {d}/stack && echo over > {d}/stack/which",
        true,
    );
}

/// The file `rel` (below the test's directory `dir`) as process `p`'s mount namespace
/// shows it.
fn seen_by(p: i32, dir: &Path, rel: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{p}/root"))
        .join(dir.strip_prefix("/").unwrap_or(dir))
        .join(rel)
}

/// The tree `unshare -m --propagation PROPAGATION sh -c "SETUP && exec belowmnt DIR
/// peers"` (`{d}` in SETUP is the test's directory): the root in a mount namespace of
/// its own, its child's copy of it keeping the root's shared mounts in their groups
/// (`stacked`: with the two tmpfs SETUP stacked on DIR/stack). Dumped and restored: the
/// joint optional fields of both namespaces (groups renumbered) are the original's, a
/// mount made in either on DIR/inner shows in the other as before, a file written
/// through the child's view shows in the root's, the stacked mounts show the top one's
/// file to both, the processes' own checks and the oracle's comparison hold. Restores
/// failing while the child's namespace is built, once its groups are joined (before its
/// maker's stub enters it) and later leave no process and nothing mounted in ours.
fn round_trip_sharing_with_the_trees_own(
    name: &str,
    propagation: &str,
    setup: &str,
    stacked: bool,
) {
    let ctx = Ctx::new(name);
    layout(&ctx.dir);
    let d = ctx.dir.to_str().unwrap_or_default();
    let setup = setup.replace("{d}", d);
    let spec = Spec::new("/usr/bin/unshare")
        .arg("-m")
        .arg("--propagation")
        .arg(propagation)
        .arg("sh")
        .arg("-c")
        .arg(format!("{setup} && exec \"$0\" {d} peers"))
        .arg(target("belowmnt"))
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let [root, child, grandchild] = shape_in(t.pid, "original", true);
    let inner = ctx.dir.join("inner");
    let said = report(&mut t, 1);
    assert_eq!(said, ALL_OK, "the original's own checks");
    let shared_in = |p: i32| optional_at(&mountinfo_of(&p.to_string()), &inner);
    assert!(
        shared_in(root).is_some_and(|o| o.starts_with("shared:"))
            && shared_in(root) == shared_in(child),
        "the child's tmpfs propagated to the root's namespace, as its peer: {:?} {:?}",
        shared_in(root),
        shared_in(child)
    );
    assert_propagates_between(Some(root), child, &inner, Prop::Peer, "original");
    let which = |p: i32| std::fs::read_to_string(seen_by(p, &ctx.dir, "stack/which")).ok();
    let stack = ctx.dir.join("stack");
    if stacked {
        let mi = mountinfo_of(&child.to_string());
        let on_stack = mi
            .lines()
            .filter(|l| l.split(' ').nth(4) == stack.to_str())
            .count();
        assert_eq!(on_stack, 2, "two mounts stacked in the child's copy: {mi}");
        assert_eq!(which(child).as_deref(), Some("over\n"), "the top one shows");
        assert_propagates_between(Some(root), child, &stack, Prop::Peer, "original stack");
    }
    let groups = joint_groups(&[root, child]);
    let before = Snapshot::at_rest(root, name).with_report(root, &said);
    let ours = mountinfo_of("thread-self");
    let img = ctx.path("belowtree.img");
    ctx.dump(root, &img);
    t.expect_killed();
    let tree = [root, child, grandchild];
    wait_pids_gone(&tree, name);
    for f in [
        "make a mount namespace a process below the root made",
        "set the tree's mount propagation",
        "join a mount namespace a process below the root made",
        "fill memory",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_eq!(mountinfo_of("thread-self"), ours, "{f}: our mounts");
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_restored_up(&before, &mut r, name);
    assert_eq!(
        shape_in(root, "restored", true),
        tree,
        "the same PIDs, namespaces apart"
    );
    assert_restored_state(name, "belowmnt in the tree's own", root, &mut r, &before);
    assert_eq!(
        joint_groups(&[root, child]),
        groups,
        "the two namespaces' peer groups and masters (renumbered)"
    );
    assert_propagates_between(Some(root), child, &inner, Prop::Peer, "restored");
    if stacked {
        assert_eq!(
            (which(root).as_deref(), which(child).as_deref()),
            (Some("over\n"), Some("over\n")),
            "the top stacked mount shows in both"
        );
        assert_propagates_between(Some(root), child, &stack, Prop::Peer, "restored stack");
    }
    std::fs::write(
        seen_by(child, &ctx.dir, "inner/late.txt"),
        "one file system\n",
    )
    .expect("write late.txt");
    assert_eq!(
        std::fs::read_to_string(seen_by(root, &ctx.dir, "inner/late.txt"))
            .ok()
            .as_deref(),
        Some("one file system\n"),
        "the child's tmpfs and the root's are one"
    );
    assert_eq!(tmpfs_file(child, &ctx.dir, "notes.txt"), "made inside\n");
    assert_eq!(mountinfo_of("thread-self"), ours, "our mounts");
    exit_ok(name, r);
}

/// Dump of the target in `mode` refused, naming the grandchild and with `words`; the
/// tree runs on and still works.
fn refused(name: &str, mode: &str, words: &[&str]) {
    let ctx = Ctx::new(name);
    let (mut t, [_, _, grandchild]) = start(&ctx, mode);
    let r = ctx.try_dump(t.pid, &ctx.path("refused.img"));
    r.assert_fails(1);
    assert!(
        r.stderr.contains(&format!("process {grandchild}"))
            && words.iter().all(|w| r.stderr.contains(w)),
        "dump of belowmnt {mode}: {}",
        r.stderr
    );
    for p in process_tree(t.pid) {
        assert_running_untraced(p, "after the refused dump");
    }
    assert_eq!(report(&mut t, 1), ALL_OK, "after the refused dump");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0));
}

/// unshare(CLONE_NEWNS) keeps a shared mount's copy in its peer group: the
/// grandchild's copy of the child's shared tmpfs, nested in the child's namespace, is
/// refused (two deep, sharing a peer group with the one it was copied from).
#[test]
fn mount_namespace_sharing_peers_with_its_parents_is_refused() {
    refused(
        "mount_namespace_sharing_peers_with_its_parents_is_refused",
        "shared",
        &["nested two deep", "not restored yet"],
    );
}

/// A mount namespace made inside another one a process below the root made (two deep:
/// the grandchild's private copy of the child's, `belowmnt DIR nested`): restored as a
/// copy of the child's restored namespace, with its copies of the child's tmpfs (bound
/// from the child's restored one: a file written through the grandchild's view shows
/// in the child's, one file system as before) and of the host directory bound in it;
/// the three namespaces apart as before, the mounts seen from inside each (the
/// oracle's mountinfo), the processes' own checks and the tmpfs's files are the
/// original's. Restores failing while the child's or the grandchild's namespace is
/// built, or after, leave no process and nothing mounted in ours.
#[test]
fn mount_namespace_nested_two_deep_is_restored() {
    let name = "mount_namespace_nested_two_deep_is_restored";
    let ctx = Ctx::new(name);
    let (mut t, tree) = start(&ctx, "nested");
    let [root, child, grandchild] = tree;
    let mnt = |p: i32| ns_inode(&p.to_string(), "mnt");
    assert_ne!(mnt(grandchild), mnt(child), "the grandchild's own");
    let said = report(&mut t, 1);
    assert_eq!(said, ALL_OK, "the original's own checks");
    let before = Snapshot::at_rest(root, name).with_report(root, &said);
    let img = ctx.path("nested.img");
    ctx.dump(root, &img);
    t.expect_killed();
    wait_pids_gone(&tree, name);
    let ours = mountinfo_of("thread-self");
    for f in [
        "make a mount namespace a process below the root made",
        "make a mount namespace nested two deep",
        "fill memory",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert_eq!(mountinfo_of("thread-self"), ours, "{f}: our mounts");
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_restored_up(&before, &mut r, name);
    assert_eq!(shape(root, "restored"), tree, "the same PIDs");
    assert!(
        mnt(grandchild) != mnt(child) && mnt(child) != mnt(root),
        "three namespaces apart"
    );
    assert_restored_state(name, "belowmnt nested", root, &mut r, &before);
    std::fs::write(
        seen_by(grandchild, &ctx.dir, "inner/late.txt"),
        "one file system\n",
    )
    .expect("write late.txt");
    assert_eq!(
        tmpfs_file(child, &ctx.dir, "late.txt"),
        "one file system\n",
        "the grandchild's copy of the child's tmpfs is the child's"
    );
    assert_eq!(tmpfs_file(child, &ctx.dir, "notes.txt"), "made inside\n");
    assert_eq!(mountinfo_of("thread-self"), ours, "our mounts");
    exit_ok(name, r);
}
