//! Mount namespaces of the tree's own (`unshare -m`, a container): their mounts, as the
//! root's /proc/PID/mountinfo lists them, and where restore gets each one from.
//!
//! Each mount is one of:
//! - **external**: its file system is mounted in ckpt's namespace too (the host's root,
//!   /proc, a host directory bound in, a container's root file system): recorded with
//!   the host path that shows the same directory and its (device, inode); restore binds
//!   that path again (or the one `restore --external-mount POINT=SOURCE` gives), after
//!   checking it is still the same file;
//! - **fresh**: a file system only the namespace has (tmpfs, proc, sysfs, devpts,
//!   mqueue, cgroup2), mounted anew with its options; a tmpfs's files (data and holes,
//!   directories, symbolic links, device nodes, FIFOs, hard links, modes, owners,
//!   times, extended attributes) are kept in the image, at most [`TMPFS_CAP`] bytes;
//! - **bind**: another mount of a fresh file system of the namespace (a read-only
//!   re-bind, a directory of a tmpfs bound elsewhere), bound again from it.
//!
//! Anything else (overlay, fuse, a block device's file system not mounted on the
//! host...) is refused at dump, naming the mount point and the type, and so are a slave
//! of a mount outside the namespace and a tree with a PID namespace of its own too when
//! it has a cgroup namespace of its own. With a user namespace of the tree's own, the
//! mount namespace is one it owns (made by its helper, `kinds::userns`), where ckpt
//! replays the mounts with its own privileges.
//! Propagation between the namespace's mounts (peer groups, slaves) is restored
//! ([`PropPlan`]). With a PID namespace of the tree's own, its init is made while the
//! namespace is built and the proc mounts from inside it (see [`enter_new`]).
//!
//! Restore builds the namespace before plan opens any file, on ckpt's main thread
//! (every process it starts afterwards is in it): a new mount namespace with every
//! mount private (nothing reaches the host's), a staging tmpfs, the mounts replayed
//! below it parent first, their flags, `pivot_root` into the namespace's root (which
//! detaches the host's mounts), then their propagation. A failed restore leaves nothing
//! on the host: the namespace ends with ckpt and the processes started in it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use crate::error::{DumpError, DumpResult, Problem, RestoreError, RestoreResult};
use crate::kinds::check::p;
use crate::model::{Checkpoint, Mount, MountOrigin, MountTree};
use crate::sys;
use crate::sys::mount::MountLine;

/// The most data a namespace's tmpfs mounts may hold together for the image to keep it.
pub(crate) const TMPFS_CAP: u64 = 64 << 20;

/// File systems a namespace may have of its own: restore mounts them anew.
const FRESH: [&str; 6] = ["tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup2"];

// ---- collect (dump) ----

/// The longest-rooted mount of `host` (ckpt's mounts) of device `dev` whose root holds
/// `root`: the host path that shows `root` of that file system.
fn host_path(host: &[MountLine], dev: u64, root: &[u8]) -> Option<Vec<u8>> {
    let under = |r: &[u8]| -> Option<Vec<u8>> {
        if r == b"/" {
            return Some(if root == b"/" {
                Vec::new()
            } else {
                root.to_vec()
            });
        }
        let rest = root.strip_prefix(r)?;
        (rest.is_empty() || rest.first() == Some(&b'/')).then(|| rest.to_vec())
    };
    let (m, rest) = host
        .iter()
        .filter(|m| m.dev() == dev)
        .filter_map(|m| under(&m.root).map(|rest| (m, rest)))
        .min_by_key(|(_, rest)| rest.len())?;
    let mut p = m.point.clone();
    if p == b"/" && !rest.is_empty() {
        p.clear();
    }
    p.extend(rest);
    if p.is_empty() {
        p.push(b'/');
    }
    Some(p)
}

/// How restore gives the namespace's mounts their propagation, once they are all there
/// (private): each peer group's leader (the member with the widest root) is made shared,
/// after it is made a slave of its own master group if it has one; the other members
/// join its group (`MOVE_MOUNT_SET_GROUP`); a mount that is only a slave joins its
/// master group's leader and is made a slave. Indices are places in the mount list.
#[derive(Debug, Default, PartialEq, Eq)]
struct PropPlan {
    /// (group, its leader, the group it is a slave of, the other members), masters
    /// before their slaves.
    groups: Vec<(String, usize, Option<String>, Vec<usize>)>,
    /// (a mount that is a slave only, its master group).
    slaves: Vec<(usize, String)>,
    unbindable: Vec<usize>,
}

/// One mount as [`prop_plan`] sees it: device, root, optional fields.
type PropIn<'a> = (u64, &'a [u8], &'a [String]);

/// Whether `root` is `top` or below it.
fn within(root: &[u8], top: &[u8]) -> bool {
    top == b"/" || root == top || (root.starts_with(top) && root.get(top.len()) == Some(&b'/'))
}

/// The [`PropPlan`] of mounts, or the place of one restore cannot give its
/// propagation, and why.
fn prop_plan(mounts: &[PropIn]) -> std::result::Result<PropPlan, (usize, String)> {
    let field = |i: usize, k: &str| {
        mounts[i]
            .2
            .iter()
            .find_map(|o| o.strip_prefix(k))
            .map(str::to_string)
    };
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut plan = PropPlan::default();
    for (i, (_, _, opts)) in mounts.iter().enumerate() {
        for o in opts.iter() {
            if let Some(g) = o.strip_prefix("shared:") {
                members.entry(g.to_string()).or_default().push(i);
            } else if o == "unbindable" {
                plan.unbindable.push(i);
            } else if !o.starts_with("master:") {
                return Err((i, format!("its propagation ({o}) is not restored yet")));
            }
        }
    }
    // Each group's leader: the widest root, which holds every member's, on one device.
    let mut leader = BTreeMap::new();
    for (g, ms) in &members {
        let l = ms
            .iter()
            .copied()
            .min_by_key(|&i| mounts[i].1.len())
            .unwrap_or_default();
        if let Some(&x) = ms
            .iter()
            .find(|&&x| mounts[x].0 != mounts[l].0 || !within(mounts[x].1, mounts[l].1))
        {
            return Err((
                x,
                format!(
                    "its peer group {g} has mounts of different directories none of which                      holds the others; this is not restored yet"
                ),
            ));
        }
        leader.insert(g.clone(), l);
    }
    let master_of = |i: usize| -> std::result::Result<Option<String>, (usize, String)> {
        let Some(n) = field(i, "master:") else {
            return Ok(None);
        };
        let Some(&l) = leader.get(&n) else {
            return Err((
                i,
                format!(
                    "it is a slave of a mount outside the namespace (master:{n}); this is                      not restored yet"
                ),
            ));
        };
        if mounts[l].0 != mounts[i].0 || !within(mounts[i].1, mounts[l].1) {
            return Err((
                i,
                format!("its master group {n} does not hold its root; this is not restored yet"),
            ));
        }
        Ok(Some(n))
    };
    // Groups in an order where a master group comes before its slaves.
    let mut done = BTreeSet::new();
    while done.len() < members.len() {
        let before = done.len();
        for (g, ms) in &members {
            let l = leader[g];
            let master = master_of(l)?;
            if done.contains(g) || master.as_ref().is_some_and(|n| !done.contains(n)) {
                continue;
            }
            let others = ms.iter().copied().filter(|&x| x != l).collect();
            plan.groups.push((g.clone(), l, master, others));
            done.insert(g.clone());
        }
        if done.len() == before {
            return Err((
                0,
                "its peer groups are slaves of each other in a cycle".into(),
            ));
        }
    }
    for i in 0..mounts.len() {
        if field(i, "shared:").is_none() {
            if let Some(n) = master_of(i)? {
                plan.slaves.push((i, n));
            }
        }
    }
    Ok(plan)
}

/// The mounts of the mount namespace of process `pid` (the tree's root, in a namespace
/// of the tree's own), each with where restore gets it from. Refuses, naming the mount,
/// what restore cannot bring back.
pub(crate) fn collect(pid: i32) -> DumpResult<MountTree> {
    let lines = sys::mount::mountinfo(pid)?;
    let host = sys::mount::mountinfo(0)?;
    let refuse = |m: &MountLine, why: String| DumpError::Unsupported {
        pid,
        why: format!(
            "its mount namespace has {} mounted on {}: {why}",
            m.fstype,
            String::from_utf8_lossy(&m.point)
        ),
    };
    let ids: BTreeSet<u32> = lines.iter().map(|l| l.id).collect();
    let prop: Vec<PropIn> = lines
        .iter()
        .map(|l| (l.dev(), l.root.as_slice(), l.optional.as_slice()))
        .collect();
    if let Err((i, why)) = prop_plan(&prop) {
        if let Some(l) = lines.get(i) {
            return Err(refuse(l, why));
        }
    }
    let mut done = BTreeSet::new();
    let mut fresh: BTreeMap<u64, u32> = BTreeMap::new();
    let mut mounts = Vec::new();
    let mut left = TMPFS_CAP;
    if !lines
        .iter()
        .any(|l| l.point == b"/proc" && l.fstype == "proc")
    {
        return Err(DumpError::Unsupported {
            pid,
            why: "its mount namespace has no proc file system on /proc, which restore \
                  needs"
                .into(),
        });
    }
    for (i, l) in lines.iter().enumerate() {
        if i == 0 {
            if l.point != b"/" || ids.contains(&l.parent) {
                return Err(refuse(
                    l,
                    "the namespace's first mount is not its root".into(),
                ));
            }
        } else if !done.contains(&l.parent) {
            return Err(refuse(
                l,
                "it is listed before the mount it is on; such an order is not restored \
                 yet"
                .into(),
            ));
        }
        done.insert(l.id);
        if let Some(o) = l
            .options
            .iter()
            .find(|o| !sys::mount::known_mount_option(o))
        {
            return Err(refuse(
                l,
                format!("its mount option {o} is not restored yet"),
            ));
        }
        let dev = l.dev();
        let origin = if let Some(hp) = host_path(&host, dev, &l.root) {
            let found = sys::mount::in_private_copy(|| {
                sys::mount::open_uncovered(&hp, dev)?
                    .map(|f| sys::mount::dev_ino(&f))
                    .transpose()
            });
            let (d, ino) = match found {
                Ok(Some(x)) => x,
                Ok(None) => {
                    return Err(refuse(
                        l,
                        format!(
                            "its source on the host, {}, is on another device now",
                            String::from_utf8_lossy(&hp)
                        ),
                    ));
                }
                Err(e) => {
                    return Err(refuse(
                        l,
                        format!(
                            "its source on the host, {}, cannot be opened: {e}",
                            String::from_utf8_lossy(&hp)
                        ),
                    ));
                }
            };
            MountOrigin::External {
                host_path: hp,
                dev: d,
                ino,
            }
        } else if let Some(&of) = fresh.get(&dev) {
            MountOrigin::Bind { of }
        } else if FRESH.contains(&l.fstype.as_str()) {
            if l.root != b"/" {
                return Err(refuse(
                    l,
                    format!(
                        "only its directory {} is mounted, and the namespace has no mount \
                         of its whole file system; this is not restored yet",
                        String::from_utf8_lossy(&l.root)
                    ),
                ));
            }
            fresh.insert(dev, l.id);
            let files = if l.fstype == "tmpfs" {
                let files = sys::mount::read_files(pid, &l.point, left)
                    .map_err(|e| refuse(l, format!("its files cannot be kept: {e}")))?;
                let bytes: u64 = files
                    .iter()
                    .flat_map(|f| &f.extents)
                    .map(|(_, d)| d.len() as u64)
                    .sum();
                left = left.saturating_sub(bytes);
                files
            } else {
                Vec::new()
            };
            MountOrigin::Fresh { files }
        } else {
            return Err(refuse(
                l,
                format!(
                    "a {} file system of its own (from {}) is not restored (only {} are, \
                     and binds of what the host has mounted)",
                    l.fstype,
                    String::from_utf8_lossy(&l.source),
                    FRESH.join(", ")
                ),
            ));
        };
        mounts.push(Mount {
            id: l.id,
            parent: l.parent,
            dev,
            root: l.root.clone(),
            point: l.point.clone(),
            options: l.options.clone(),
            propagation: l.optional.clone(),
            fstype: l.fstype.clone(),
            source: l.source.clone(),
            super_options: l.super_options.clone(),
            origin,
        });
    }
    Ok(MountTree { mounts })
}

// ---- checks (plan) ----

/// The image's mount namespace of the tree's own, if it has one.
pub(crate) fn owned_tree(ckpt: &Checkpoint) -> Option<&MountTree> {
    let root = ckpt.processes.first()?;
    ckpt.namespaces
        .iter()
        .filter(|ns| ns.kind == "mnt" && !ns.external)
        .filter(|ns| root.namespaces.contains(&(ns.kind.clone(), ns.inode)))
        .find_map(|ns| ns.mounts.as_ref())
}

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
    owned_tree(ckpt)
        .map(|t| {
            t.mounts
                .iter()
                .filter(|m| matches!(m.origin, MountOrigin::Fresh { .. }))
                .map(|m| m.dev)
                .collect()
        })
        .unwrap_or_default()
}

/// The devices of the external mounts restore binds from another file than at the
/// dump (`--external-mount POINT=SOURCE` naming a copy, e.g. the root file system of
/// another container made from the same image, as `podman container restore --import`
/// gives), as `open_sources` found them: a file on one is another inode after restore
/// (compared by type, size and times only, as across a reboot).
pub(crate) fn copied_devs() -> BTreeSet<u64> {
    COPIED.lock().map(|c| c.clone()).unwrap_or_default()
}

/// A path of the image that is absolute and has no "." or ".." part.
fn clean_abs(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && !p.contains(&0)
        && p.split(|c| *c == b'/')
            .skip(1)
            .all(|c| c != b"." && c != b"..")
}

/// The image's mount tree is one restore can build: the root first, every mount on one
/// before it, clean paths, known types and options; not with `--new-pidns`, nor with a
/// PID namespace of the tree's own when the tree has other namespaces too (not restored
/// together yet).
pub(crate) fn check_tree(ckpt: &Checkpoint, new_pidns: bool, problems: &mut Vec<Problem>) {
    let Some(tree) = owned_tree(ckpt) else {
        return;
    };
    if ckpt.pid_namespace_init_outside {
        p(
            problems,
            "namespace",
            "the tree has a mount namespace of its own and ran in a PID namespace whose \
             init was outside it (restored into a new PID namespace with a reaper of \
             ckpt's as its init); the two are not restored together yet"
                .into(),
        );
    } else if new_pidns && !ckpt.own_pid_namespace {
        p(
            problems,
            "namespace",
            "the tree has a mount namespace of its own and --new-pidns asks for a new PID \
             namespace; the two are not restored together yet"
                .into(),
        );
    }
    // (Made or joined before the init, in `enter_new`: UTS, IPC, network, time, user.)
    let others: Vec<String> = crate::kinds::ns::owned_kinds(ckpt)
        .into_iter()
        .filter(|k| !["mnt", "uts", "ipc", "net", "time", "user"].contains(&k.as_str()))
        .collect();
    if ckpt.own_pid_namespace && !others.is_empty() {
        p(
            problems,
            "namespace",
            format!(
                "the tree has a mount namespace and a PID namespace of its own, and other \
                 namespaces ({}); mount and PID namespaces are restored together only \
                 with UTS, IPC, network, time and user namespaces of the tree's own \
                 (and joined ones) yet",
                others.join(", ")
            ),
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
    if let Err((i, why)) = prop_plan(&prop_in(tree)) {
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

/// The tree's mounts as [`prop_plan`] takes them.
fn prop_in(tree: &MountTree) -> Vec<PropIn<'_>> {
    tree.mounts
        .iter()
        .map(|m| (m.dev, m.root.as_slice(), m.propagation.as_slice()))
        .collect()
}

/// What the image's mount namespace needs of a host (`ckpt check --json`): each
/// external mount (where it is mounted, the host path it is bound from by default, the
/// device and inode that path had, whether it binds a cgroup, known by its path) and
/// the file systems mounted anew.
pub(crate) fn manifest(ckpt: &Checkpoint) -> Option<serde_json::Value> {
    let tree = owned_tree(ckpt)?;
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let external: Vec<serde_json::Value> = tree
        .mounts
        .iter()
        .filter_map(|m| match &m.origin {
            MountOrigin::External {
                host_path,
                dev,
                ino,
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
    Some(serde_json::json!({ "external": external, "filesystems": fresh }))
}

/// `restore --external-mount POINT=SOURCE` pairs, set once by the command line.
static EXTERNAL: Mutex<Vec<(Vec<u8>, Vec<u8>)>> = Mutex::new(Vec::new());

/// See [`copied_devs`].
static COPIED: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// Give the external mounts' sources (`restore --external-mount POINT=SOURCE`): the
/// mount on POINT (as the namespace's processes saw it) is bound from SOURCE (a host
/// path) instead of the path it had at dump.
pub fn set_external_mounts(pairs: Vec<(Vec<u8>, Vec<u8>)>) {
    if let Ok(mut g) = EXTERNAL.lock() {
        *g = pairs;
    }
}

/// The external sources, opened (`O_PATH`) and checked: the given one for a mount
/// `--external-mount` names, else the path of the dump, the same file (device and
/// inode, on the dump's boot). By mount ID: (a detached copy of its mount from that
/// file, to attach; the file).
fn open_sources(
    tree: &MountTree,
    same_boot: bool,
    given: &[(Vec<u8>, Vec<u8>)],
    problems: &mut Vec<Problem>,
) -> BTreeMap<u32, (OwnedFd, OwnedFd)> {
    for (point, _) in given {
        if !tree
            .mounts
            .iter()
            .any(|m| &m.point == point && matches!(m.origin, MountOrigin::External { .. }))
        {
            p(
                problems,
                "external-mount",
                format!(
                    "--external-mount names {}, which is no external mount of the image",
                    String::from_utf8_lossy(point)
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    // First every source its path shows as it is, then those covered by another mount
    // (uncovering one hides no source found before).
    let mut first = BTreeMap::new();
    for m in &tree.mounts {
        if let MountOrigin::External { host_path, dev, .. } = &m.origin {
            if given.iter().all(|(pt, _)| *pt != m.point) {
                if let Ok(fd) = sys::mount::open_path(host_path) {
                    if sys::mount::dev_ino(&fd).is_ok_and(|(d, _)| d == *dev) {
                        if let Ok(c) = sys::mount::clone_of(&fd) {
                            first.insert(m.id, (fd, c));
                        }
                    }
                }
            }
        }
    }
    for m in &tree.mounts {
        let MountOrigin::External {
            host_path,
            dev,
            ino,
        } = &m.origin
        else {
            continue;
        };
        let mapped = given.iter().rev().find(|(pt, _)| *pt == m.point);
        let src = mapped.map_or(host_path, |(_, s)| s);
        let show = |x: &[u8]| String::from_utf8_lossy(x).into_owned();
        let opened = if mapped.is_some() {
            sys::mount::open_path(src).map(Some)
        } else if let Some((fd, c)) = first.remove(&m.id) {
            out.insert(m.id, (c, fd));
            continue;
        } else {
            sys::mount::open_uncovered(src, *dev)
        };
        let fd = match opened {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                p(
                    problems,
                    "external-mount",
                    format!(
                        "the source of the mount on {}, {}, is on another device than at                          the dump; give it with --external-mount {}=SOURCE",
                        show(&m.point),
                        show(src),
                        show(&m.point)
                    ),
                );
                continue;
            }
            Err(e) => {
                p(
                    problems,
                    "external-mount",
                    format!(
                        "the source of the mount on {}, {}, cannot be opened ({e}); give \
                         another with --external-mount {}=SOURCE",
                        show(&m.point),
                        show(src),
                        show(&m.point)
                    ),
                );
                continue;
            }
        };
        if mapped.is_some() {
            if let Ok(now) = sys::mount::dev_ino(&fd) {
                if now != (*dev, *ino) {
                    if let Ok(mut c) = COPIED.lock() {
                        c.insert(*dev);
                    }
                }
            }
        }
        // A cgroup is known by its path (one made again is another inode).
        if mapped.is_none() && same_boot && !crate::kinds::cgroup::is_cgroup_fs(&m.fstype) {
            match sys::mount::dev_ino(&fd) {
                Ok(now) if now == (*dev, *ino) => {}
                Ok(_) => {
                    p(
                        problems,
                        "external-mount",
                        format!(
                            "the source of the mount on {}, {}, is another file than at \
                             the dump; give it with --external-mount {}=SOURCE",
                            show(&m.point),
                            show(src),
                            show(&m.point)
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    p(problems, "external-mount", e.to_string());
                    continue;
                }
            }
        }
        match sys::mount::clone_of(&fd) {
            Ok(c) => {
                out.insert(m.id, (c, fd));
            }
            Err(e) => p(problems, "external-mount", e.to_string()),
        }
    }
    out
}

// ---- restore (stage) ----

/// Where the namespace is staged: the first of these that is a directory (a tmpfs is
/// mounted on it in ckpt's private copy of the host's namespace, never in the host's).
const STAGES: [&[u8]; 5] = [b"/tmp", b"/mnt", b"/var/tmp", b"/run", b"/dev"];

/// A file system's options for mount(2): those mountinfo shows, but "ro"/"rw" (made
/// flags) and, for devpts, with a new instance.
fn data_of(m: &Mount) -> String {
    let mut v: Vec<&str> = m
        .super_options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
        .collect();
    if m.fstype == "devpts" && !v.contains(&"newinstance") {
        v.push("newinstance");
    }
    v.join(",")
}

/// The init of the tree's new PID namespace, made while its mount namespace is built
/// (its proc mounts must be made from inside that PID namespace): a stub
/// (`sys::process::spawn_pidns_init_stub`) that restore's builder seizes and makes the
/// tree's root. Killed (and reaped) when dropped before [`PidnsInit::take`].
#[derive(Debug)]
pub(crate) struct PidnsInit {
    pid: i32,
    go: Option<OwnedFd>,
    /// A proc of ckpt's is stacked on the namespace's /proc ([`unstack_proc`]).
    proc_stacked: bool,
    /// A child of our parent (`rst_sibling`), which our parent reaps.
    sibling: bool,
}

impl PidnsInit {
    /// Its PID here, the write end of the pipe it waits on (it is the caller's now) and
    /// whether a proc of ckpt's is stacked on /proc.
    pub(crate) fn take(mut self) -> (i32, Option<OwnedFd>, bool) {
        (self.pid, self.go.take(), self.proc_stacked)
    }

    /// Whether it was made a child of our parent (`rst_sibling`).
    pub(crate) fn is_sibling(&self) -> bool {
        self.sibling
    }
}

impl Drop for PidnsInit {
    fn drop(&mut self) {
        if self.go.take().is_some() {
            let _ = sys::process::kill(self.pid, libc::SIGKILL);
            // A sibling is our parent's to reap.
            if !self.sibling {
                let _ = sys::process::wait_exit(self.pid);
            }
        }
    }
}

/// What [`enter_new`] made for the tree before its processes: the init of its PID
/// namespace, and the namespaces it entered (`kinds::ns::enter_new`: the cgroups made
/// for a cgroup namespace, the tree's user namespace with its PID namespace).
#[derive(Default)]
pub(crate) struct Entered {
    pub(crate) init: Option<PidnsInit>,
    pub(crate) namespaces: Option<(
        crate::kinds::cgroup::MadeCgroups,
        Option<crate::kinds::userns::Made>,
    )>,
}

/// Mount a proc on `target` from inside the PID namespace of `init` (a proc shows the
/// PID namespace of the process that mounts it): by a helper forked into it as
/// `spare`, which exits once it is done (and frees that ID).
fn mount_proc_in(init: i32, spare: i32, m: &Mount, target: &[u8]) -> RestoreResult<()> {
    let at = String::from_utf8_lossy(target).into_owned();
    match sys::process::fork_into_pid_namespace_of(init, spare)? {
        None => {
            // The helper: single-threaded, in our mount namespace.
            let code = match sys::mount::mount_new(&m.source, target, "proc", false, &data_of(m)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ckpt: mount a proc on {at} in the tree's PID namespace: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some(helper) => match sys::process::wait_exit(helper)? {
            0 => Ok(()),
            _ => Err(RestoreError::Reported(format!(
                "mount a proc on {at} from inside the tree's new PID namespace failed"
            ))),
        },
    }
}

/// Build the tree's mount namespace, if it had one of its own, and move ckpt's main
/// thread (the calling thread) into it, at its root; every process started afterwards
/// is in it. Checks what it can first (the image's tree, the external sources) and
/// returns them as problems, before anything is made.
///
/// `pidns_init`: when the tree had a PID namespace of its own too, make its init now
/// (in the namespace being built) and the proc mounts from inside its PID namespace,
/// in their place in the mount order; it is returned, for `Prepared::launch`. (Without
/// it, for `ckpt check`, the proc mounts are ckpt's.) `sibling`: that init is made a
/// child of our parent (`Prepared::launch_as_sibling`). With it, when the tree has a PID
/// or a user namespace of its own, the tree's other namespaces are entered first
/// (`kinds::ns::enter_new`, with the `--join-ns` joins `joins`): the init is made in
/// them, and a user namespace of the tree's own owns the mount namespace built here
/// (made by its helper, joined by ckpt's main thread, which builds the mounts in it
/// with its own privileges); what that made is returned too ([`Entered`]).
pub(crate) fn enter_new(
    ckpt: &Checkpoint,
    new_pidns: bool,
    pidns_init: bool,
    sibling: bool,
    joins: &[(String, std::path::PathBuf)],
    cgroup_root: Option<&str>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> RestoreResult<Entered> {
    let Some(tree) = owned_tree(ckpt) else {
        return Ok(Entered::default());
    };
    // A restore that executed itself again (`Prepared::take_randomization`) did so
    // from inside the namespace it had built: it is there already (never with a PID
    // namespace of the tree's own, whose init did not survive the execution: refused
    // there).
    if std::env::var_os(crate::restore::RANDOMIZATION_MARK).is_some() {
        return Ok(Entered::default());
    }
    let mut problems = Vec::new();
    check_tree(ckpt, new_pidns, &mut problems);
    // (The joins are made below, before plan would check them.)
    if pidns_init {
        crate::kinds::ns::check_joins(ckpt, joins, &mut problems);
    }
    let same_boot = !ckpt.info.boot_id.is_empty() && ckpt.info.boot_id == sys::process::boot_id();
    if !problems.is_empty() {
        return Err(RestoreError::Problems(problems));
    }
    crate::error::fault_point("create the tree's mount namespace")?;
    // ckpt's working directory stays where it was (the host's, detached below), for
    // the relative paths of its command line.
    let cwd = sys::mount::open_path(b".")?;
    // Everything below is made in a private copy of the host's namespace (what is done
    // there, such as uncovering stacked mounts, never reaches the host).
    sys::mount::unshare_private()?;
    // The cgroups its cgroup mounts bind, made again if they went with the tree (a
    // container's, removed by `runc delete`): a cgroup is known by its path, not its
    // inode (removed again if the restore fails).
    // With `--cgroup-root`, those below it instead (unless `--external-mount` names the
    // mount).
    let mut given = EXTERNAL.lock().map(|g| g.clone()).unwrap_or_default();
    for m in &tree.mounts {
        if let MountOrigin::External { host_path, .. } = &m.origin {
            // (One whose source is given is bound from that: nothing is made.)
            if crate::kinds::cgroup::is_cgroup_fs(&m.fstype)
                && given.iter().all(|(pt, _)| *pt != m.point)
            {
                let moved = cgroup_root
                    .and_then(|r| crate::kinds::cgroup::relocated_mount_source(host_path, r));
                crate::kinds::cgroup::make_mounted(moved.as_deref().unwrap_or(host_path), cgroups)?;
                if let Some(src) = moved {
                    given.push((m.point.clone(), src));
                }
            }
        }
    }
    let sources = open_sources(tree, same_boot, &given, &mut problems);
    if !problems.is_empty() {
        return Err(RestoreError::Problems(problems));
    }
    // The tree's other namespaces first (the joined ones, UTS, IPC, network, time, a
    // user namespace and those it owns; `check_tree` refuses the rest), for ckpt's main
    // thread, as `Prepared::launch` makes them otherwise: the PID namespace's init is
    // made in them, and a user namespace's mount namespace is the one built below.
    let early =
        pidns_init && (ckpt.own_pid_namespace || crate::kinds::userns::owned(ckpt).is_some());
    let namespaces = if early {
        Some(crate::kinds::ns::enter_new(
            ckpt,
            joins,
            cgroup_root,
            false,
        )?)
    } else {
        None
    };
    let userns = namespaces
        .as_ref()
        .and_then(|(_, u)| u.as_ref())
        .map(|u| &u.user);
    // With a user namespace, the mounts the tree's namespace got from the one it was
    // copied from (the first ones, external, each below another of them: the host's
    // that `unshare -U -m` copied) are made first, in a namespace of ckpt's; a copy of
    // that, owned by the user namespace, locks them as the kernel locked the original's
    // (`sys::userns::copy_mount_ns`); the rest (the mounts made inside it) are made in
    // the copy.
    let first = match userns {
        Some(_) => copied_prefix(tree),
        None => tree.mounts.len(),
    };
    // The tree's PID namespace's init, in the mount namespace it is to be in: it
    // follows the pivot below, as ckpt does.
    let make_init = || -> RestoreResult<Option<PidnsInit>> {
        if !(pidns_init && ckpt.own_pid_namespace) {
            return Ok(None);
        }
        crate::error::fault_point("create the tree's PID namespace")?;
        // (In the one the tree's user namespace owns, if any.)
        let ns = namespaces
            .as_ref()
            .and_then(|(_, u)| u.as_ref())
            .and_then(|u| u.pid.as_ref());
        let (pid, go) = sys::process::spawn_pidns_init_stub(sibling, ns)?;
        Ok(Some(PidnsInit {
            pid,
            go: Some(go),
            proc_stacked: false,
            sibling,
        }))
    };
    let mut init = match userns {
        Some(_) => None,
        None => make_init()?,
    };
    let spare = crate::restore::spare_pid_of(ckpt);
    let stage = STAGES
        .iter()
        .find(|s| sys::mount::is_dir(s))
        .ok_or_else(|| RestoreError::Reported("no directory to stage the mounts on".into()))?;
    sys::mount::mount_tmpfs(stage)?;
    let mut base = stage.to_vec();
    base.extend(b"/root");
    let mut scratch = stage.to_vec();
    scratch.extend(b"/scratch");
    let mut scratch_file = stage.to_vec();
    scratch_file.extend(b"/scratch-file");
    let os = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes;
    let made = std::fs::create_dir(os(&base))
        .and_then(|()| std::fs::create_dir(os(&scratch)))
        .and_then(|()| std::fs::write(os(&scratch_file), b""));
    made.map_err(|e| RestoreError::Reported(format!("make the staging directories: {e}")))?;
    let mut roots: BTreeMap<u32, OwnedFd> = BTreeMap::new();
    // Mount `m` on `target` (the scratch points are in ckpt's staging, kept until the
    // copy: external mounts come first). After the pivot (`pivoted`), a bind's source
    // is named by its mount point, not through our /proc, which the tree's may cover.
    let mount_one = |m: &Mount,
                     target: &[u8],
                     init: &Option<PidnsInit>,
                     roots: &BTreeMap<u32, OwnedFd>,
                     pivoted: bool|
     -> RestoreResult<()> {
        crate::error::fault_point("mount the tree's file systems")?;
        match &m.origin {
            MountOrigin::External { .. } => {
                let src = sources
                    .get(&m.id)
                    .ok_or_else(|| RestoreError::Reported("an external source went".into()))?;
                // Bound from a scratch point, so that the mount is made now, in the
                // namespace's order (mountinfo lists mounts as they were made).
                let at = if sys::mount::fd_is_dir(&src.1)? {
                    &scratch
                } else {
                    &scratch_file
                };
                sys::mount::attach(&src.0, at)?;
                sys::mount::bind(at, target)?;
                sys::mount::detach(at)?;
            }
            MountOrigin::Fresh { files } => {
                let ro = m.super_options.split(',').any(|o| o == "ro");
                match init {
                    Some(init) if m.fstype == "proc" => {
                        mount_proc_in(init.pid, spare, m, target)?;
                    }
                    _ => sys::mount::mount_new(&m.source, target, &m.fstype, false, &data_of(m))?,
                }
                if !files.is_empty() {
                    sys::mount::write_files(target, files)?;
                }
                if ro {
                    sys::mount::set_super_ro(target)?;
                }
            }
            MountOrigin::Bind { of } => {
                let from = roots
                    .get(of)
                    .ok_or_else(|| RestoreError::Reported("a bind's source went".into()))?;
                let mut src = match tree.mounts.iter().find(|x| x.id == *of) {
                    Some(x) if pivoted => x.point.clone(),
                    _ => sys::mount::fd_path(from),
                };
                if m.root != b"/" {
                    src.extend(&m.root);
                }
                sys::mount::bind(&src, target)?;
            }
            MountOrigin::Unknown => {
                return Err(RestoreError::Reported("a mount of unknown origin".into()));
            }
        }
        Ok(())
    };
    for (i, m) in tree.mounts.iter().enumerate().take(first) {
        let mut target = base.clone();
        if i > 0 {
            target.extend(&m.point);
        }
        mount_one(m, &target, &init, &roots, false)?;
        roots.insert(m.id, sys::mount::open_path(&target)?);
    }
    // Flags and propagation once every mount is there (a read-only parent stays
    // writable while its children's mount points are made), the root's after the pivot
    // (pivot_root refuses a shared root).
    crate::error::fault_point("set the tree's mount flags")?;
    let set_flags = |ms: &[Mount], roots: &BTreeMap<u32, OwnedFd>| -> RestoreResult<()> {
        for m in ms {
            let fd = roots
                .get(&m.id)
                .ok_or_else(|| RestoreError::Reported("a mount went".into()))?;
            let at = sys::mount::fd_path(fd);
            sys::mount::set_mount_flags(&at, sys::mount::mount_flags(&m.options))?;
        }
        Ok(())
    };
    let (copied, inside) = tree.mounts.split_at(first);
    set_flags(copied, &roots)?;
    if let Some(user) = userns {
        // The mounts made inside come after the copy, below the pivoted root: those
        // copied first, with their flags (their locks are taken from them).
        sys::mount::pivot_into(&base)?;
        crate::error::fault_point("copy the tree's mount namespace into its user namespace")?;
        let copy = sys::userns::copy_mount_ns(user)?;
        sys::userns::join(&copy, libc::CLONE_NEWNS)?;
        // Our descriptors named the mounts of the namespace left behind: those of the
        // copy, by their mount points (the last one made on a point shows).
        roots.clear();
        for m in copied {
            roots.insert(m.id, sys::mount::open_path(&m.point)?);
        }
        init = make_init()?;
        // (The scratch points went with ckpt's staging: inside, the external mounts
        // are bound from a staging tmpfs of the copy's.)
        for m in inside {
            if matches!(m.origin, MountOrigin::External { .. }) {
                return Err(RestoreError::Reported(format!(
                    "the mount on {} comes from outside the namespace after mounts made \
                     inside it",
                    String::from_utf8_lossy(&m.point)
                )));
            }
            mount_one(m, &m.point, &init, &roots, true)?;
            roots.insert(m.id, sys::mount::open_path(&m.point)?);
            // (By its point, while it is the last mount there.)
            sys::mount::set_mount_flags(&m.point, sys::mount::mount_flags(&m.options))?;
        }
    } else {
        sys::mount::pivot_into(&base)?;
    }
    // The namespace's /proc is the tree's PID namespace's, where ckpt has no ID (no
    // /proc/self): a proc of ckpt's own is stacked on it for ckpt's work, which the
    // builder takes off before the tree runs (`unstack_proc`).
    if let Some(init) = &mut init {
        sys::mount::mount_new(b"proc", b"/proc", "proc", false, "")?;
        init.proc_stacked = true;
    }
    // After the pivot (pivot_root refuses a shared root): our descriptors of the mounts
    // name them, through the namespace's /proc.
    crate::error::fault_point("set the tree's mount propagation")?;
    let fds: Vec<&OwnedFd> = tree
        .mounts
        .iter()
        .map(|m| {
            roots
                .get(&m.id)
                .ok_or_else(|| RestoreError::Reported("a mount went".into()))
        })
        .collect::<RestoreResult<_>>()?;
    propagate(&prop_in(tree), &fds)?;
    drop(roots);
    sys::mount::fchdir(&cwd)?;
    Ok(Entered { init, namespaces })
}

/// How many of the tree's first mounts came with the copy its mount namespace was
/// made from (see [`enter_new`]): the first ones that are external, each below another
/// of them (the root first).
fn copied_prefix(tree: &MountTree) -> usize {
    let mut ids = BTreeSet::new();
    for (i, m) in tree.mounts.iter().enumerate() {
        let below = i == 0 || ids.contains(&m.parent);
        if !(below && matches!(m.origin, MountOrigin::External { .. })) {
            return i;
        }
        ids.insert(m.id);
    }
    tree.mounts.len()
}

/// Take off the proc of ckpt's that [`enter_new`] stacked on the namespace's /proc: the
/// tree's builder does it, from the namespace, before anything of the tree runs.
pub(crate) fn unstack_proc() -> RestoreResult<()> {
    Ok(sys::mount::detach(b"/proc")?)
}

/// Give the mounts (all private, `fds` their roots, in the tree's order) their
/// propagation (see [`PropPlan`]).
fn propagate(mounts: &[PropIn], fds: &[&OwnedFd]) -> RestoreResult<()> {
    let plan = prop_plan(mounts).map_err(|(_, why)| RestoreError::Reported(why))?;
    let fd = |i: usize| {
        fds.get(i)
            .copied()
            .ok_or_else(|| RestoreError::Reported("a mount went".into()))
    };
    let path = |i: usize| fd(i).map(sys::mount::fd_path);
    let leader: BTreeMap<&str, usize> = plan
        .groups
        .iter()
        .map(|(g, l, _, _)| (g.as_str(), *l))
        .collect();
    let leader_of = |n: &str| {
        leader
            .get(n)
            .copied()
            .ok_or_else(|| RestoreError::Reported(format!("no peer group {n}")))
    };
    for (_, l, master, others) in &plan.groups {
        if let Some(n) = master {
            sys::mount::set_group(fd(leader_of(n)?)?, fd(*l)?)?;
            sys::mount::set_propagation(&path(*l)?, "slave")?;
        }
        sys::mount::set_propagation(&path(*l)?, "shared")?;
        for &x in others {
            sys::mount::set_group(fd(*l)?, fd(x)?)?;
        }
    }
    for (m, n) in &plan.slaves {
        sys::mount::set_group(fd(leader_of(n)?)?, fd(*m)?)?;
        sys::mount::set_propagation(&path(*m)?, "slave")?;
    }
    for &u in &plan.unbindable {
        sys::mount::set_propagation(&path(u)?, "unbindable")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, process};
    use crate::model::Namespace;

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

    #[test]
    fn propagation_plans() {
        let o = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let (a, b, c, d, e) = (
            o("shared:5"),
            o("shared:5"),
            o("master:5"),
            o("shared:7 master:5"),
            o("unbindable"),
        );
        let f = o("shared:7");
        let mounts: Vec<PropIn> = vec![
            (1, b"/", &a),
            (1, b"/x", &b),
            (1, b"/x/y", &c),
            (1, b"/z", &d),
            (2, b"/", &e),
            (1, b"/z/w", &f),
        ];
        let plan = prop_plan(&mounts).expect("restorable");
        assert_eq!(
            plan.groups,
            vec![
                ("5".into(), 0, None, vec![1]),
                ("7".into(), 3, Some("5".into()), vec![5]),
            ]
        );
        assert_eq!(plan.slaves, vec![(2, "5".to_string())]);
        assert_eq!(plan.unbindable, vec![4]);
        // A slave of a group outside the namespace; a group whose roots do not nest;
        // propagate_from.
        let m = o("master:9");
        assert!(prop_plan(&[(1, b"/", &m)]).is_err_and(|(i, w)| i == 0 && w.contains("outside")));
        assert!(prop_plan(&[(1, b"/a", &a), (1, b"/b", &b)]).is_err());
        assert!(prop_plan(&[(1, b"/a", &a), (2, b"/a", &b)]).is_err());
        let pf = o("master:5 propagate_from:2");
        assert!(prop_plan(&[(1, b"/", &a), (1, b"/", &pf)]).is_err());
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
            mounts: Some(MountTree { mounts }),
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
        };
        let fresh = MountOrigin::Fresh { files: Vec::new() };
        let good = vec![
            mount(1, 0, "/", ext.clone()),
            mount(2, 1, "/mnt/t", fresh.clone()),
            mount(3, 1, "/mnt/ro", MountOrigin::Bind { of: 2 }),
        ];
        assert!(problems(&image(good.clone()), false).is_empty());
        assert_eq!(fresh_devs(&image(good.clone())), BTreeSet::from([2]));
        assert!(problems(&image(good.clone()), true)[0].contains("new PID namespace"));

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

    /// A tree that ran in a PID namespace without its init is restored below ckpt's
    /// reaper in a new PID namespace: not together with a mount namespace of its own.
    #[test]
    fn pid_namespace_without_its_init_with_a_mount_namespace_is_refused() {
        let good = vec![mount(1, 0, "/", MountOrigin::Fresh { files: Vec::new() })];
        let mut ck = image(good);
        ck.pid_namespace_init_outside = true;
        for new_pidns in [false, true] {
            let p = problems(&ck, new_pidns);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains("whose init was outside it"), "{p:?}");
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
}
