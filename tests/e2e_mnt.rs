//! Mount namespaces of the tree's own (issue 15, the mount tree): a tree started with
//! `unshare -m --propagation private` that mounts a tmpfs with files, a read-only bind
//! of it, a bind of a host directory and a proc comes back in a new mount namespace
//! with the same mounts (its mountinfo, normalised: mount IDs, peer group numbers and
//! the device numbers of the file systems made anew differ), the tmpfs's files, and
//! its descriptors and working directory in them; what restore cannot rebuild (an
//! overlay) is refused at dump, naming it; failed restores leave no mount on the host.
//! With a PID namespace of the tree's own too (`unshare -p -f unshare -m --mount-proc`),
//! the restored /proc shows the new PID namespace. Made with `--propagation unchanged`
//! or `slave` (in a mount namespace of the test's own with a shared tmpfs), its copy
//! of that tmpfs comes back in its peer group, or a slave of it, and mounts propagate
//! as before.
//!
//! The targets are `tests/targets/mntns.c` and `tests/targets/mntpid.c`. Needs root (unshare, mount, ptrace).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::mntprop::{Prop, assert_propagates, mount, mountinfo_of, thread_mount_ns, umount};
use common::*;

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// A base directory for the target below the test's directory, with the host
/// directory it binds (host/h.txt).
fn base(ctx: &Ctx, name: &str) -> PathBuf {
    let b = ctx.dir.join(name);
    std::fs::create_dir_all(b.join("host")).expect("mkdir host");
    std::fs::write(b.join("host/h.txt"), "host file\n").expect("write h.txt");
    b
}

fn spec(base: &Path, steps: u32, more: &[&str]) -> Spec {
    spec_prop(base, steps, "private", more)
}

/// [`spec`] with `unshare --propagation prop`.
fn spec_prop(base: &Path, steps: u32, prop: &str, more: &[&str]) -> Spec {
    let mut s = Spec::new(unshare())
        .arg("-m")
        .arg("--propagation")
        .arg(prop)
        .arg(target("mntns"))
        .arg(base)
        .arg(steps.to_string())
        .arg("sleep=40");
    for m in more {
        s = s.arg(m);
    }
    s
}

/// The tree of `unshare -m` (the target, after exec) with its mounts and files is
/// restored in a new mount namespace: same mountinfo (normalised), and its output is
/// an uninterrupted run's (it reads and writes its tmpfs through descriptors and
/// paths, sees the read-only bind, the hole, the link, the FIFO, owners, modes, the
/// device node, the attribute, the host file and its working directory there).
#[test]
fn tree_with_own_mount_namespace_is_restored_with_its_mounts_and_files() {
    let ctx = Ctx::new("tree_with_own_mount_namespace_is_restored_with_its_mounts_and_files");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let steps = 40;
    let mut rp = ctx.spawn(&spec(&rb, steps, &[]));
    let mut t = ctx.spawn(&spec(&b, steps, &[]));
    t.wait_lines(5);
    let pid = t.pid;
    let before = mountinfo(pid);
    assert!(
        before.iter().any(|l| l.contains(" tmpfs ckpt-mnt ")),
        "the target's tmpfs: {before:#?}"
    );
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let img = ctx.path("mntns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let out_before = t.stdout.finish("mntns: original");
    wait_pids_gone(&[pid], "mntns after the dump");

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let after = mountinfo(pid);
    assert_eq!(
        before, after,
        "the restored tree's mounts (normalised mountinfo)"
    );
    assert_ne!(
        std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
            .ok(),
        std::fs::metadata("/proc/self/ns/mnt")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
            .ok(),
        "the restored tree is in a mount namespace of its own"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "reference run");
    assert_same_output(
        "mntns (dumped, restored)",
        &reference.stdout,
        &[out_before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&fin.stderr)
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        host_before,
        "the host's mounts are as before"
    );
}

/// An overlay mounted in the tree's namespace is refused at dump, naming its mount
/// point and type; the tree runs on.
#[test]
fn overlay_in_the_trees_mount_namespace_is_refused() {
    let ctx = Ctx::new("overlay_in_the_trees_mount_namespace_is_refused");
    let b = base(&ctx, "m");
    let mut t = ctx.spawn(&spec(&b, 400, &["overlay"]));
    t.wait_lines(2);
    let r = ctx.try_dump(t.pid, &ctx.path("ov.img"));
    r.assert_fails(1);
    let point = b.join("ov");
    assert!(
        r.stderr
            .contains(&format!("overlay mounted on {}", point.display()))
            && r.stderr.contains("is not restored"),
        "dump of a tree with an overlay mounted: {}",
        r.stderr
    );
    assert_running_untraced(t.pid, "the target after the refused dump");
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
}

/// A tmpfs of the tree's holding more data than an image keeps (65 MiB) is refused at
/// dump, naming its mount point; the tree runs on.
#[test]
fn tmpfs_with_too_much_data_is_refused() {
    let ctx = Ctx::new("tmpfs_with_too_much_data_is_refused");
    let b = base(&ctx, "m");
    let mut t = ctx.spawn(&spec(&b, 400, &["big"]));
    t.wait_lines(2);
    let r = ctx.try_dump(t.pid, &ctx.path("big.img"));
    r.assert_fails(1);
    assert!(
        r.stderr
            .contains(&format!("tmpfs mounted on {}", b.join("t").display()))
            && r.stderr.contains("more than 64 MiB"),
        "dump of a tree with a big tmpfs: {}",
        r.stderr
    );
    assert_running_untraced(t.pid, "the target after the refused dump");
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
}

/// Restores that fail at each step of building the namespace and at sampled steps
/// after leave no mount on the host and no process; the next restore succeeds with
/// the same output as an uninterrupted run.
#[test]
fn failed_restores_of_a_tree_with_own_mount_namespace_leave_no_mount() {
    let ctx = Ctx::new("failed_restores_of_a_tree_with_own_mount_namespace_leave_no_mount");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let reference = ctx.reference(&spec(&rb, 20, &[]));
    let mut t = ctx.spawn(&spec(&b, 20, &[]));
    t.wait_lines(4);
    let pid = t.pid;
    let img = ctx.path("mntns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("mntns: original");
    wait_pids_gone(&[pid], "mntns after the dump");
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    // Every step of building the namespace (the mounts are the first steps), then some.
    RestoreWalk {
        name: "mntns",
        img: &img,
        reference: &reference.stdout,
        before: &before,
        pids: &[pid],
        min: 20,
        must: "mount the tree's file systems",
        named: &[
            "create the tree's mount namespace",
            "mount the tree's file systems",
            "set the tree's mount flags",
        ],
    }
    .run(
        &ctx,
        |n, total| n <= 30 || n % 13 == 0 || n == total,
        |f| {
            assert_eq!(
                std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
                host,
                "restore failing at {f} left a mount on the host"
            )
        },
    );
}

/// An external mount whose host source is gone (the host directory bound in was
/// renamed after the dump): restore refuses, naming the mount and the option that
/// gives it, and leaves nothing; with `--external-mount POINT=SOURCE` naming the new
/// place, the tree comes back and runs as an uninterrupted run.
#[test]
fn external_mount_is_given_at_restore_when_its_source_moved() {
    let ctx = Ctx::new("external_mount_is_given_at_restore_when_its_source_moved");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let reference = ctx.reference(&spec(&rb, 16, &[]));
    let mut t = ctx.spawn(&spec(&b, 16, &[]));
    t.wait_lines(4);
    let pid = t.pid;
    let mounts = mountinfo(pid);
    let img = ctx.path("mntns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("mntns: original");
    wait_pids_gone(&[pid], "mntns after the dump");
    let moved = ctx.dir.join("moved-host");
    std::fs::rename(b.join("host"), &moved).expect("move the host directory");
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let point = b.join("hb");
    // `ckpt check --json` lists the external mounts and the missing source.
    let check = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("check")
                .arg("--json")
                .arg(&img)
                .cwd(&ctx.dir),
        )
        .finish();
    let json: serde_json::Value = serde_json::from_slice(&check.stdout)
        .unwrap_or_else(|e| panic!("ckpt check --json: {e}: {}", text(&check.stdout)));
    let external = &json["requirements"]["mounts"]["external"];
    assert!(
        external.as_array().is_some_and(|a| a.iter().any(|m| {
            m["point"] == point.display().to_string()
                && m["source"] == b.join("host").display().to_string()
        })),
        "ckpt check --json lists the external mounts: {json}"
    );
    assert!(
        json["problems"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["code"] == "external-mount")),
        "ckpt check --json names the missing source: {json}"
    );
    let refused = ctx
        .spawn(&Spec::new(ckpt_bin()).arg("restore").arg(&img).cwd(&ctx.dir))
        .finish();
    let err = text(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "restore without the source: {err}"
    );
    assert!(
        err.contains(&format!("the source of the mount on {}", point.display()))
            && err.contains(&format!("--external-mount {}=SOURCE", point.display())),
        "restore without the external mount's source: {err}"
    );
    assert!(
        refused.stdout.is_empty(),
        "the tree ran: {}",
        text(&refused.stdout)
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        host,
        "the refused restore left a mount on the host"
    );
    let given = format!("{}={}", point.display(), moved.display());
    // Not `ctx.restore`: its oracle would see the bind's root change, which is what was
    // asked; the mounts are compared here with that one root replaced.
    let mut r = ctx.spawn(
        &Spec::new(ckpt_bin())
            .arg("restore")
            .arg(&img)
            .arg("--external-mount")
            .arg(&given)
            .cwd(&ctx.dir),
    );
    r.wait_lines(1);
    let want: Vec<String> = mounts
        .iter()
        .map(|l| {
            l.replace(
                &format!("root {} ", b.join("host").display()),
                &format!("root {} ", moved.display()),
            )
        })
        .collect();
    assert_ne!(want, mounts, "the bind of the host directory is listed");
    assert_eq!(
        mountinfo(pid),
        want,
        "the restored mounts, the bind's root given"
    );
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restore with --external-mount: {}",
        text(&fin.stderr)
    );
    assert_same_output(
        "mntns: restored with its host directory moved",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// Propagation between the namespace's mounts: a shared tmpfs, a peer bind of it and a
/// slave bind, and a tmpfs mounted on it that propagated to both, come back with the
/// same peer groups and master (the same mountinfo, normalised), and a mount made
/// after the restore propagates as in an uninterrupted run (to the peer and the slave
/// from the shared one, to neither from the slave).
#[test]
fn shared_and_slave_mounts_keep_their_propagation() {
    let ctx = Ctx::new("shared_and_slave_mounts_keep_their_propagation");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let reference = ctx.reference(&spec(&rb, 14, &["shared"]));
    let mut t = ctx.spawn(&spec(&b, 14, &["shared"]));
    t.wait_lines(6);
    let pid = t.pid;
    let before = mountinfo(pid);
    assert!(
        before.iter().any(|l| l.contains("[shared:"))
            && before.iter().any(|l| l.contains("[master:")),
        "the target's shared and slave mounts: {before:#?}"
    );
    let img = ctx.path("mntns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let out_before = t.stdout.finish("mntns shared: original");
    wait_pids_gone(&[pid], "mntns after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let after = mountinfo(pid);
    assert_eq!(
        before,
        after[..before.len().min(after.len())],
        "the restored mounts"
    );
    assert_tree_finished_like_reference(
        "mntns shared (dumped, restored)",
        &reference.stdout,
        out_before,
        &r.finish(),
        &[],
    );
}

/// `unshare -m --propagation unchanged` (`Prop::Peer`) or `slave` in a mount namespace
/// of the test's own ([`thread_mount_ns`]) whose tmpfs on DIR/peer is shared: the tree's
/// copy of it is in its peer group, or a slave of it. Restored, it is again (the
/// relation of the optional fields, the group renumbered: the test's peer's number at
/// restore), and mounts made on either side propagate as before (both ways for a peer,
/// from the test's side only for a slave); the tree's mounts (normalised mountinfo)
/// and output are an uninterrupted run's. Restores that fail before and after the
/// group is joined leave no process and nothing mounted in the test's namespace; one
/// whose peer there was made private is refused, naming it; `ckpt check --json` lists
/// that mount under requirements.mounts.peers. For the slave case, a dump
/// while the test's peer is covered (no mount of the group shows the directory) is
/// refused, naming the mount, the tree running on.
fn propagation_from_outside_is_restored(name: &str, prop: Prop) {
    let ctx = Ctx::new(name);
    let peer = thread_mount_ns(&ctx.dir);
    let how = match prop {
        Prop::Peer => "unchanged",
        Prop::Slave => "slave",
    };
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let steps = 80;
    let reference = ctx.reference(&spec_prop(&rb, steps, how, &[]));
    let mut t = ctx.spawn(&spec_prop(&b, steps, how, &[]));
    t.wait_lines(4);
    let pid = t.pid;
    assert_propagates(pid, &peer, prop, "original");
    if prop == Prop::Slave {
        // Covered here (the cover propagates to the tree's copy): no mount of the
        // group shows the directory its copy shows.
        mount(Some("cover"), &peer, Some("tmpfs"), 0);
        let r = ctx.try_dump(pid, &ctx.path("covered.img"));
        r.assert_fails(1);
        assert!(
            r.stderr
                .contains(&format!("tmpfs mounted on {}", peer.display()))
                && r.stderr.contains("no mount of that namespace in the group"),
            "dump with the peer covered: {}",
            r.stderr
        );
        assert_running_untraced(pid, "the target after the refused dump");
        umount(&peer);
    }
    let before = mountinfo(pid);
    let img = ctx.path("mntprop.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let out_before = t.stdout.finish("mntns: original");
    wait_pids_gone(&[pid], "mntns after the dump");
    // `ckpt check --json` names the mount of ours the group is joined through.
    let m = common::arch::check_json(&ctx, &img, &[], &[]);
    let peers = m["requirements"]["mounts"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        peers
            .iter()
            .any(|p| p["point"].as_str() == peer.to_str() && p["member"] == true),
        "check --json lists {} under requirements.mounts.peers: {m}",
        peer.display()
    );
    let ours = mountinfo_of("thread-self");
    for f in ["set the tree's mount propagation", "fill memory"] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &[pid], &[]);
        assert_eq!(mountinfo_of("thread-self"), ours, "{f}: our mounts");
    }
    mount(None, &peer, None, libc::MS_PRIVATE);
    let r = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1).assert_stderr_mentions(&[
        peer.to_str().unwrap_or_default(),
        "the tree's mount namespace",
        "not shared now",
    ]);
    assert_no_process(pid, "the refused restore");
    mount(None, &peer, None, libc::MS_SHARED);
    let ours = mountinfo_of("thread-self");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_propagates(pid, &peer, prop, "restored");
    assert_eq!(mountinfo(pid), before, "the restored tree's mounts");
    assert_tree_finished_like_reference(
        &format!("mntns --propagation {how} (dumped, restored)"),
        &reference.stdout,
        out_before,
        &r.finish(),
        &[],
    );
    assert_eq!(
        mountinfo_of("thread-self"),
        ours,
        "our mounts after the run"
    );
}

#[test]
fn trees_namespace_keeps_its_peers_outside_it() {
    propagation_from_outside_is_restored("trees_namespace_keeps_its_peers_outside_it", Prop::Peer);
}

#[test]
fn trees_namespace_keeps_its_masters_outside_it() {
    propagation_from_outside_is_restored(
        "trees_namespace_keeps_its_masters_outside_it",
        Prop::Slave,
    );
}

/// A tree run without address randomization (`setarch -R`) makes ckpt restore execute
/// itself again to match, from inside the namespace the first run built (the second run
/// uses it as it is); the output is an uninterrupted run's and the mounts the same.
#[test]
fn restore_executing_itself_again_stays_in_the_built_namespace() {
    let ctx = Ctx::new("restore_executing_itself_again_stays_in_the_built_namespace");
    let setarch = ["/usr/bin/setarch", "/bin/setarch"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("setarch (util-linux) not found");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let norand = |base: &Path| {
        let s = spec(base, 16, &[]);
        let mut n = Spec::new(&setarch).arg("-R").arg(&s.prog);
        for a in &s.args {
            n = n.arg(a);
        }
        n
    };
    let reference = ctx.reference(&norand(&rb));
    let mut t = ctx.spawn(&norand(&b));
    t.wait_lines(6);
    let pid = t.pid;
    let before = mountinfo(pid);
    let img = ctx.path("mntns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let out_before = t.stdout.finish("mntns -R: original");
    wait_pids_gone(&[pid], "mntns after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_eq!(mountinfo(pid), before, "the restored mounts");
    assert_tree_finished_like_reference(
        "mntns -R (dumped, restored)",
        &reference.stdout,
        out_before,
        &r.finish(),
        &[],
    );
}

/// `unshare -p -f unshare -m --mount-proc`: the target is PID 1 of a PID namespace of
/// its own, in a mount namespace it made (the inner unshare, which it executed) whose
/// /proc is that PID namespace's. (With a single `unshare -m -p -f`, unshare itself
/// stays in the mount namespace, outside the tree: refused at dump.)
fn mntpid_spec(base: &Path, steps: u32, more: &[&str]) -> Spec {
    more.iter()
        .fold(
            Spec::new(unshare())
                .arg("-p")
                .arg("-f")
                .arg(unshare())
                .arg("-m"),
            |s, m| s.arg(m),
        )
        .arg("--mount-proc")
        .arg("--propagation")
        .arg("private")
        .arg(target("mntpid"))
        .arg(base)
        .arg(steps.to_string())
        .arg("sleep=40")
}

/// Mount and PID namespaces of the tree's own, as every container has (`unshare -p -f
/// unshare -m --mount-proc`, the target mounting a tmpfs with a file): restored, the target is
/// PID 1 of a new PID namespace, in a new mount namespace with the same mounts
/// (normalised mountinfo), whose /proc shows that PID namespace (the target prints its
/// PID as /proc/self/stat and /proc/self show it and the PIDs /proc lists: a proc of
/// ckpt's would show ours); its output is an uninterrupted run's. Restores that fail at
/// each step of building the namespaces and at sampled steps after leave no mount on
/// the host and no process, and the next one succeeds.
#[test]
fn mount_namespace_with_own_pid_namespace_is_restored_with_its_proc() {
    let ctx = Ctx::new("mount_namespace_with_own_pid_namespace_is_restored_with_its_proc");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let steps = 40;
    let reference = ctx.reference(&mntpid_spec(&rb, steps, &[]));
    assert!(
        text(&reference.stdout).contains("stat 1 self 1 proc 1\n"),
        "the reference sees its own PID namespace in /proc:\n{}",
        text(&reference.stdout)
    );
    let mut t = ctx.spawn(&mntpid_spec(&b, steps, &[]));
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "unshare and mntpid");
    for &p in &tree {
        ctx.track(p);
    }
    assert_eq!(
        nspids(tree[1]),
        vec![tree[1], 1],
        "mntpid is PID 1 of its own"
    );
    let before = mountinfo(tree[1]);
    assert!(
        before.iter().any(|l| l.contains(" tmpfs ckpt-mntpid ")),
        "the target's tmpfs: {before:#?}"
    );
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let img = ctx.path("mntpid.img");
    ctx.dump(tree[1], &img);
    let out_before = t.finish().stdout;
    wait_pids_gone(&tree[1..], "mntpid after its dump");

    let (trace, steps) = traced_restore(&ctx, &img, 10, "create the tree's PID namespace");
    let total = steps.len();
    assert_same_output(
        "mntpid: the traced restore",
        &reference.stdout,
        &[out_before.clone(), trace.stdout].concat(),
    );
    let faults = fault_walk(
        &[
            "create the tree's mount namespace",
            "create the tree's PID namespace",
            "mount the tree's file systems",
            "set the tree's mount flags",
            "set the tree's mount propagation",
        ],
        total,
        |n| n <= 20 || n % 13 == 0 || n == total,
    );
    for f in &faults {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &[tree[1]], &[]);
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
            host,
            "restore failing at {f} left a mount on the host"
        );
    }
    eprintln!("{} failing restores of {total} steps", faults.len());

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and the restored mntpid");
    assert_eq!(
        nspids(restored[1]),
        vec![restored[1], 1],
        "restored as PID 1"
    );
    assert_eq!(
        mountinfo(restored[1]),
        before,
        "the restored tree's mounts (normalised mountinfo)"
    );
    assert_tree_finished_like_reference(
        "mntpid (dumped, restored)",
        &reference.stdout,
        out_before,
        &r.finish(),
        &[],
    );
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        host,
        "the host's mounts are as before"
    );
}

/// Mount and PID namespaces of the tree's own with UTS, IPC and network ones too
/// (`unshare -p -f unshare -m -u -i -n --mount-proc`): restored, in new ones of each
/// (made before the PID namespace's init, which is made with the mount namespace), the
/// target PID 1 again, with the same mounts and an uninterrupted run's output.
#[test]
fn mount_and_pid_namespaces_with_uts_ipc_net_ones_are_restored() {
    let ctx = Ctx::new("mount_and_pid_namespaces_with_uts_ipc_net_ones_are_restored");
    let b = base(&ctx, "m");
    let rb = base(&ctx, "r");
    let more = ["-u", "-i", "-n"];
    let reference = ctx.reference(&mntpid_spec(&rb, 30, &more));
    let mut t = ctx.spawn(&mntpid_spec(&b, 30, &more));
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "unshare and mntpid");
    for &p in &tree {
        ctx.track(p);
    }
    let ns = |pid: i32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    let before = mountinfo(tree[1]);
    let img = ctx.path("mntpid.img");
    ctx.dump(tree[1], &img);
    let out_before = t.finish().stdout;
    wait_pids_gone(&tree[1..], "mntpid after its dump");
    // The builder lingers 200 ms after it released the tree: the tree must not see it
    // (mntpid prints how many processes its /proc lists: 1).
    let linger = [("CKPT_LINGER", "builder released the tree:200")];
    let mut r = ctx.restore_with(&img, &[], In::Null, &[], &linger);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and the restored mntpid");
    assert_eq!(
        nspids(restored[1]),
        vec![restored[1], 1],
        "restored as PID 1"
    );
    for kind in ["uts", "ipc", "net", "mnt", "pid"] {
        assert_ne!(
            ns(restored[1], kind),
            ns(std::process::id() as i32, kind),
            "the restored target's {kind} namespace is its own"
        );
    }
    assert_eq!(mountinfo(restored[1]), before, "the restored tree's mounts");
    assert_tree_finished_like_reference(
        "mntpid with UTS, IPC, network namespaces (dumped, restored)",
        &reference.stdout,
        out_before,
        &r.finish(),
        &[],
    );
}
