use super::*;
use crate::kinds::testutil::{checkpoint, process};
use std::collections::BTreeSet;

use super::build::data_of;
use super::collect::host_path;
use crate::model::{Mount, MountOrigin, Namespace};
use crate::sys::mount::MountLine;

fn line(id: u32, parent: u32, dev: u32, root: &str, point: &str) -> MountLine {
    MountLine {
        id,
        parent,
        major: 0,
        minor: dev,
        root: root.into(),
        point: point.into(),
        ..Default::default()
    }
}

#[test]
fn host_paths_of_directories_of_host_file_systems() {
    let host = vec![
        line(1, 0, 1, "/", "/"),
        line(2, 1, 2, "/", "/proc"),
        line(3, 1, 1, "/srv/data", "/data"),
    ];
    assert_eq!(host_path(&host, 1, b"/"), Some(b"/".to_vec()));
    assert_eq!(host_path(&host, 1, b"/home/x"), Some(b"/home/x".to_vec()));
    // The host's bind of /srv/data shows its files with a shorter rest.
    assert_eq!(
        host_path(&host, 1, b"/srv/data/f"),
        Some(b"/data/f".to_vec())
    );
    assert_eq!(host_path(&host, 2, b"/"), Some(b"/proc".to_vec()));
    assert_eq!(host_path(&host, 9, b"/"), None);
    // A root of the same prefix but another name is not under it.
    assert_eq!(
        host_path(&host, 1, b"/srv/database"),
        Some(b"/srv/database".to_vec())
    );
}

fn mount(id: u32, parent: u32, point: &str, origin: MountOrigin) -> Mount {
    Mount {
        id,
        parent,
        dev: u64::from(id),
        root: b"/".to_vec(),
        point: point.into(),
        options: vec!["rw".into()],
        fstype: "tmpfs".into(),
        origin,
        ..Default::default()
    }
}

fn image(mounts: Vec<Mount>) -> Checkpoint {
    let mut r = process(10);
    r.namespaces = vec![("mnt".into(), 4)];
    let mut ck = checkpoint(vec![r]);
    ck.namespaces = vec![Namespace {
        kind: "mnt".into(),
        inode: 4,
        mounts: Some(MountTree {
            mounts,
            ..MountTree::default()
        }),
        ..Default::default()
    }];
    ck
}

fn problems(ck: &Checkpoint, new_pidns: bool) -> Vec<String> {
    let mut v = Vec::new();
    check_tree(ck, new_pidns, &mut v);
    v.into_iter().map(|p| p.message).collect()
}

#[test]
fn trees_restore_can_build_or_not() {
    let ext = MountOrigin::External {
        host_path: b"/".to_vec(),
        dev: 1,
        ino: 2,
        born_ns: 0,
    };
    let fresh = MountOrigin::Fresh { files: Vec::new() };
    let good = vec![
        mount(1, 0, "/", ext.clone()),
        mount(2, 1, "/mnt/t", fresh.clone()),
        mount(3, 1, "/mnt/ro", MountOrigin::Bind { of: 2 }),
    ];
    assert!(problems(&image(good.clone()), false).is_empty());
    assert_eq!(fresh_devs(&image(good.clone())), BTreeSet::from([2]));
    // (--new-pidns: a new PID namespace below ckpt's reaper, the proc mounts made
    // from inside it.)
    assert!(problems(&image(good.clone()), true).is_empty());

    let mut bad = good.clone();
    bad[2].origin = MountOrigin::Bind { of: 1 };
    bad[1].point = b"/mnt/../etc".to_vec();
    bad[1].options.push("lazytime".into());
    let p = problems(&image(bad), false);
    assert_eq!(p.len(), 3, "{p:?}");
    let mut bad = good;
    bad.swap(1, 2);
    bad[0].parent = 3;
    assert!(!problems(&image(bad), false).is_empty());
}

/// With a PID namespace of its own, the mount namespace is restored (its proc mounts
/// made from inside the new PID namespace) when the tree has no other namespace of
/// its own and joins none; else refused, naming them.
#[test]
fn own_pid_namespace_with_the_mount_namespace_alone() {
    let good = vec![mount(1, 0, "/", MountOrigin::Fresh { files: Vec::new() })];
    let mut ck = image(good);
    ck.own_pid_namespace = true;
    assert!(problems(&ck, false).is_empty());
    // (--new-pidns with an image that had its own: the image's own is made.)
    assert!(problems(&ck, true).is_empty());
    let mut uts = ck.clone();
    for (kind, inode) in [("uts", 7), ("cgroup", 9)] {
        uts.processes[0].namespaces.push((kind.into(), inode));
        uts.namespaces.push(Namespace {
            kind: kind.into(),
            inode,
            ..Default::default()
        });
    }
    let p = problems(&uts, false);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("other namespaces (cgroup)"), "{p:?}");
    let mut joined = ck;
    joined.namespaces.push(Namespace {
        kind: "net".into(),
        inode: 8,
        foreign: true,
        ..Default::default()
    });
    // (Joined before the init is made: `--join-ns` is honoured.)
    assert!(problems(&joined, false).is_empty());
    let mut user = uts;
    user.processes[0].namespaces.push(("user".into(), 11));
    user.namespaces.push(Namespace {
        kind: "user".into(),
        inode: 11,
        ..Default::default()
    });
    // (A cgroup namespace too: the user namespace's helper makes it.)
    assert!(problems(&user, false).is_empty());
    user.processes[0].namespaces.retain(|(k, _)| k != "user");
    user.namespaces.retain(|n| n.kind != "user");
    user.processes[0].namespaces.retain(|(k, _)| k != "cgroup");
    user.namespaces.retain(|n| n.kind != "cgroup");
    user.processes[0].namespaces.push(("user".into(), 11));
    user.namespaces.push(Namespace {
        kind: "user".into(),
        inode: 11,
        ..Default::default()
    });
    assert!(problems(&user, false).is_empty());
    // An external mount after one made inside the namespace, with the user
    // namespace: refused, naming it.
    let n = user
        .namespaces
        .iter()
        .position(|n| n.kind == "mnt")
        .unwrap();
    let tree = user.namespaces[n].mounts.as_mut().unwrap();
    let ext = MountOrigin::External {
        host_path: b"/srv".to_vec(),
        dev: 5,
        ino: 6,
        born_ns: 0,
    };
    let mut late = mount(90, 1, "/late", ext);
    late.fstype = "ext4".into();
    tree.mounts.push(late);
    let p = problems(&user, false);
    assert!(
        p.len() == 1 && p[0].contains("/late (ext4)") && p[0].contains("follows mounts made"),
        "{p:?}"
    );
}

/// A tree that ran in a PID namespace without its init (restored below ckpt's reaper in
/// a new PID namespace), one recorded as external (restored in the one given), and
/// `--new-pidns` (below a reaper too) are restored with a mount namespace of the tree's
/// own; not with a user namespace of its own, nor with a cgroup namespace of its own
/// (the tree's namespaces are entered before the mounts are made): refused, naming what.
#[test]
fn pid_namespaces_not_the_trees_own_with_a_mount_namespace() {
    let good = vec![mount(1, 0, "/", MountOrigin::Fresh { files: Vec::new() })];
    let outside = {
        let mut ck = image(good.clone());
        ck.pid_namespace_init_outside = true;
        ck
    };
    let external = {
        let mut ck = outside.clone();
        ck.external_pid_namespace = Some(crate::model::ExternalPidNs {
            inode: 9,
            key: "pod".into(),
        });
        ck
    };
    let plain = image(good);
    for (ck, new_pidns, way) in [
        (&outside, false, PidnsWay::Reaper),
        (&outside, true, PidnsWay::Reaper),
        (&external, false, PidnsWay::External),
        (&plain, true, PidnsWay::Reaper),
        (&plain, false, PidnsWay::Ours),
    ] {
        assert_eq!(pidns_way(ck, new_pidns), way);
        let p = problems(ck, new_pidns);
        assert!(p.is_empty(), "{way:?}: {p:?}");
        let mut user = ck.clone();
        user.processes[0].namespaces.push(("user".into(), 11));
        user.namespaces.push(Namespace {
            kind: "user".into(),
            inode: 11,
            ..Default::default()
        });
        let p = problems(&user, new_pidns);
        if way == PidnsWay::Ours {
            assert!(p.is_empty(), "{p:?}");
        } else {
            assert_eq!(p.len(), 1, "{way:?}: {p:?}");
            assert!(p[0].contains("mount and user namespaces"), "{p:?}");
        }
        let mut cg = ck.clone();
        cg.processes[0].namespaces.push(("cgroup".into(), 12));
        cg.namespaces.push(Namespace {
            kind: "cgroup".into(),
            inode: 12,
            ..Default::default()
        });
        let p = problems(&cg, new_pidns);
        if way == PidnsWay::Ours {
            assert!(p.is_empty(), "{way:?}: {p:?}");
        } else {
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains("(cgroup)"), "{p:?}");
        }
    }
}

#[test]
fn mount_data_of_fresh_file_systems() {
    let mut m = mount(1, 0, "/dev/pts", MountOrigin::Fresh { files: Vec::new() });
    m.fstype = "devpts".into();
    m.super_options = "rw,gid=5,mode=620,ptmxmode=666".into();
    assert_eq!(data_of(&m), "gid=5,mode=620,ptmxmode=666,newinstance");
    m.fstype = "tmpfs".into();
    m.super_options = "ro,size=1024k,inode64".into();
    assert_eq!(data_of(&m), "size=1024k,inode64");
}
