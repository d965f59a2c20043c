//! Checks (plan): an image's mount tree is one restore can build; what others ask of
//! it (external mount points, fresh devices, cgroup mounts) and what `ckpt check
//! --json` lists.

use std::collections::{BTreeMap, BTreeSet};

use super::build::copied_prefix;
use super::prop::{prop_in, prop_plan};
use super::{FRESH, owned_tree};
use crate::error::Problem;
use crate::kinds::check::p;
use crate::model::{Checkpoint, MountOrigin, MountTree};
use crate::sys;

// ---- checks (plan) ----

/// The mount points of the external mounts of the tree's own mount namespace (the
/// names `restore --external-mount` takes).
pub(crate) fn external_points(ckpt: &Checkpoint) -> Vec<String> {
    owned_tree(ckpt)
        .map(|t| {
            t.mounts
                .iter()
                .filter(|m| matches!(m.origin, MountOrigin::External { .. }))
                .map(|m| String::from_utf8_lossy(&m.point).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// For a restore that leaves the tree in ckpt's own cgroups, made by the caller for it:
/// the cgroup mounts (external) that bound the root's cgroup at dump, each with ckpt's
/// own cgroup of that hierarchy as its source (see `cgroup::own_mount_source`).
pub(crate) fn own_cgroup_mount_sources(ckpt: &Checkpoint) -> Vec<(String, String)> {
    let Some(t) = owned_tree(ckpt) else {
        return Vec::new();
    };
    t.mounts
        .iter()
        .filter(|m| crate::kinds::cgroup::is_cgroup_fs(&m.fstype))
        .filter_map(|m| match &m.origin {
            MountOrigin::External { host_path, .. } => {
                let src = crate::kinds::cgroup::own_mount_source(ckpt, host_path)?;
                Some((
                    String::from_utf8_lossy(&m.point).into_owned(),
                    String::from_utf8(src).ok()?,
                ))
            }
            _ => None,
        })
        .collect()
}

/// The devices of the file systems restore mounts anew: a file on one is another inode
/// after restore (compared by type, size and times only).
pub(crate) fn fresh_devs(ckpt: &Checkpoint) -> BTreeSet<u64> {
    owned_tree(ckpt).map(fresh_devs_of).unwrap_or_default()
}

/// The devices at dump of the file systems restore makes anew in the mount namespace
/// `t`.
pub(super) fn fresh_devs_of(t: &MountTree) -> BTreeSet<u64> {
    t.mounts
        .iter()
        .filter(|m| matches!(m.origin, MountOrigin::Fresh { .. }))
        .map(|m| m.dev)
        .collect()
}

/// A path of the image that is absolute and has no "." or ".." part.
fn clean_abs(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && !p.contains(&0)
        && p.split(|c| *c == b'/')
            .skip(1)
            .all(|c| c != b"." && c != b"..")
}

/// How the tree's PID namespace is restored with a mount namespace of its own: what
/// the proc mounts are made from inside of (see `build::enter_new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidnsWay {
    /// The tree's root is the init of a PID namespace of its own, made again.
    Own,
    /// The PID namespace was made outside the tree and recorded as external: the tree
    /// is restored in the one given for it.
    External,
    /// A new PID namespace whose init is a reaper of ckpt's: the tree ran in one whose
    /// init was outside it (not recorded as external), or `--new-pidns` asks for one.
    Reaper,
    /// ckpt's own PID namespace.
    Ours,
}

/// See [`PidnsWay`].
pub(crate) fn pidns_way(ckpt: &Checkpoint, new_pidns: bool) -> PidnsWay {
    if ckpt.own_pid_namespace {
        PidnsWay::Own
    } else if ckpt.external_pid_namespace.is_some() {
        PidnsWay::External
    } else if ckpt.pid_namespace_init_outside || new_pidns {
        PidnsWay::Reaper
    } else {
        PidnsWay::Ours
    }
}

/// The image's mount tree is one restore can build: the root first, every mount on one
/// before it, clean paths, known types and options; with a PID namespace of the tree's
/// own, an external one, or a new one below ckpt's reaper, only with the other
/// namespaces those are restored together with yet.
pub(crate) fn check_tree(ckpt: &Checkpoint, new_pidns: bool, problems: &mut Vec<Problem>) {
    let Some(tree) = owned_tree(ckpt) else {
        return;
    };
    let way = pidns_way(ckpt, new_pidns);
    // (Made or joined before the init, in `enter_new`: UTS, IPC, network, time, user;
    // cgroup with a user namespace, whose helper makes it: tests/e2e_rootless.rs.)
    let with_user = crate::kinds::userns::owned(ckpt).is_some();
    if with_user && matches!(way, PidnsWay::External | PidnsWay::Reaper) {
        let what = match way {
            PidnsWay::External => "ran in a PID namespace made outside it (recorded as external)",
            _ if ckpt.pid_namespace_init_outside => {
                "ran in a PID namespace whose init was outside it (restored into a new \
                 one with a reaper of ckpt's as its init)"
            }
            _ => "is restored in a new PID namespace (--new-pidns)",
        };
        p(
            problems,
            "namespace",
            format!(
                "the tree has mount and user namespaces of its own and {what}; these are \
                 not restored together yet"
            ),
        );
    }
    let others: Vec<String> = crate::kinds::ns::owned_kinds(ckpt)
        .into_iter()
        .filter(|k| !["mnt", "uts", "ipc", "net", "time", "user"].contains(&k.as_str()))
        .filter(|k| !(with_user && k == "cgroup"))
        .collect();
    if way != PidnsWay::Ours && !others.is_empty() {
        let pid = match way {
            PidnsWay::Own => "a PID namespace of its own",
            PidnsWay::External => "the PID namespace given for its external one",
            _ => "a new PID namespace below a reaper of ckpt's",
        };
        p(
            problems,
            "namespace",
            format!(
                "the tree has a mount namespace of its own, is restored in {pid}, and has \
                 other namespaces ({}); mount and PID namespaces are restored together only \
                 with UTS, IPC, network, time and user namespaces of the tree's own \
                 (and joined ones; cgroup ones with a user namespace) yet",
                others.join(", ")
            ),
        );
    }
    // (A copy into a user namespace makes shared mounts slaves: dump refuses this.)
    if with_user && !tree.outside.is_empty() {
        p(
            problems,
            "namespace",
            "the tree's mount namespace, owned by a user namespace of the tree's own, has \
             mounts in peer groups of ckpt's mount namespace; this is not restored yet"
                .into(),
        );
    }
    // With a user namespace of the tree's own, the external mounts are those the
    // namespace was copied with (locked); one made inside it afterwards is not locked,
    // which restore cannot tell (see `enter_new`).
    if crate::kinds::userns::owned(ckpt).is_some() {
        for m in tree.mounts.iter().skip(copied_prefix(tree)) {
            if matches!(m.origin, MountOrigin::External { .. }) {
                p(
                    problems,
                    "namespace",
                    format!(
                        "the mount on {} ({}) comes from outside the tree's mount namespace \
                         but follows mounts made inside it, in a user namespace of the \
                         tree's own: bound from outside by the tree, not copied with the \
                         namespace, it is not locked, which restore does not reproduce yet",
                        String::from_utf8_lossy(&m.point),
                        m.fstype
                    ),
                );
            }
        }
    }
    let mut seen = BTreeMap::new();
    for (i, m) in tree.mounts.iter().enumerate() {
        let show = String::from_utf8_lossy(&m.point);
        let bad = |why: &str| format!("the image's mount on {show} cannot be restored: {why}");
        if !clean_abs(&m.point) || !clean_abs(&m.root) {
            p(problems, "malformed", bad("a bad path"));
        }
        if i == 0 && m.point != b"/" {
            p(
                problems,
                "malformed",
                bad("the first mount is not the root"),
            );
        }
        if i > 0 && !seen.contains_key(&m.parent) {
            p(problems, "malformed", bad("its parent comes after it"));
        }
        if m.options.iter().any(|o| !sys::mount::known_mount_option(o)) {
            p(problems, "malformed", bad("unknown mount options"));
        }
        match &m.origin {
            MountOrigin::Fresh { files } => {
                if !FRESH.contains(&m.fstype.as_str()) || m.root != b"/" {
                    p(problems, "malformed", bad("an unknown file system"));
                }
                if !files.is_empty() && m.fstype != "tmpfs" {
                    p(
                        problems,
                        "malformed",
                        bad("files for a file system not a tmpfs"),
                    );
                }
            }
            MountOrigin::Bind { of } => {
                if !seen.get(of).is_some_and(|fresh| *fresh) {
                    p(
                        problems,
                        "malformed",
                        bad("a bind of no earlier file system"),
                    );
                }
            }
            MountOrigin::External { host_path, .. } => {
                if !clean_abs(host_path) {
                    p(problems, "malformed", bad("a bad source path"));
                }
            }
            MountOrigin::Unknown => p(problems, "malformed", bad("no origin")),
        }
        seen.insert(m.id, matches!(m.origin, MountOrigin::Fresh { .. }));
    }
    let outside = tree.outside.iter().map(|o| o.group.clone()).collect();
    if let Err((i, why)) = prop_plan(&prop_in(tree), &outside) {
        let at = tree
            .mounts
            .get(i)
            .map(|m| String::from_utf8_lossy(&m.point));
        p(
            problems,
            "malformed",
            format!(
                "the image's mount on {} cannot be restored: {why}",
                at.unwrap_or_default()
            ),
        );
    }
}

/// What the image's mount namespace needs of a host (`ckpt check --json`): each
/// external mount (where it is mounted, the host path it is bound from by default, the
/// device and inode that path had, whether it binds a cgroup, known by its path), the
/// file systems mounted anew, and the mounts of ckpt's namespace whose peer groups (or
/// masters) its mounts join ("peers": the dump's group, where it is mounted, whether a
/// member of the group or a slave of it).
pub(crate) fn manifest(ckpt: &Checkpoint) -> Option<serde_json::Value> {
    owned_tree(ckpt).map(tree_manifest)
}

/// What the mount tree `tree` needs of a host (see [`manifest`]; also a mount namespace
/// a process below the root made, `kinds::ns::manifest`).
pub(crate) fn tree_manifest(tree: &MountTree) -> serde_json::Value {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let external: Vec<serde_json::Value> = tree
        .mounts
        .iter()
        .filter_map(|m| match &m.origin {
            MountOrigin::External {
                host_path,
                dev,
                ino,
                ..
            } => Some(serde_json::json!({
                "point": show(&m.point),
                "source": show(host_path),
                "fstype": m.fstype,
                "dev": format!("{}:{}", libc::major(*dev), libc::minor(*dev)),
                "ino": ino,
                "cgroup": crate::kinds::cgroup::is_cgroup_fs(&m.fstype),
            })),
            _ => None,
        })
        .collect();
    let fresh: BTreeSet<&str> = tree
        .mounts
        .iter()
        .filter(|m| matches!(m.origin, MountOrigin::Fresh { .. }))
        .map(|m| m.fstype.as_str())
        .collect();
    // The mounts of ckpt's namespace whose peer groups the tree's mounts join again.
    let peers: Vec<serde_json::Value> = tree
        .outside
        .iter()
        .map(|o| {
            serde_json::json!({
                "group": o.group,
                "point": show(&o.point),
                "member": o.member,
            })
        })
        .collect();
    serde_json::json!({ "external": external, "filesystems": fresh, "peers": peers })
}
