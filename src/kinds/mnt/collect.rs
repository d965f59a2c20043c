//! Collect (dump): the mounts of the tree's mount namespace, each with where restore
//! gets it from (external, fresh, bind), refusing what it cannot.

use std::collections::{BTreeMap, BTreeSet};

use super::prop::{PropIn, prop_plan};
use super::{FRESH, TMPFS_CAP};
use crate::error::{DumpError, DumpResult};
use crate::model::{Mount, MountOrigin, MountTree, OutsidePeer};
use crate::sys;
use crate::sys::mount::MountLine;

// ---- collect (dump) ----

/// The longest-rooted mount of `host` (ckpt's mounts) of device `dev` whose root holds
/// `root`: the host path that shows `root` of that file system.
pub(super) fn host_path(host: &[MountLine], dev: u64, root: &[u8]) -> Option<Vec<u8>> {
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

/// The mounts of the mount namespace of process `pid` (the tree's root, in a namespace
/// of the tree's own; `below`: one a process below the root made, copied from ckpt's),
/// each with where restore gets it from, and the peer groups of ckpt's namespace its
/// mounts are in or slaves of ([`outside_peers`]). Refuses, naming the mount, what
/// restore cannot bring back.
pub(crate) fn collect(pid: i32, below: bool) -> DumpResult<MountTree> {
    let lines = sys::mount::mountinfo(pid)?;
    // Whose mounts it was copied from and restore finds its external mounts in: ckpt's,
    // or (one a process below the root made in the tree's own) its maker's parent's.
    let base = match below {
        true => super::below::base_of(pid)?,
        false => None,
    };
    let host = sys::mount::mountinfo(base.unwrap_or(0))?;
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
    // The peer groups its mounts share with ckpt's namespace (or are slaves of there):
    // one a process below the root made, copied from ckpt's; the tree's own, made with
    // its propagation unchanged or as slaves (`unshare -m --propagation unchanged|slave`).
    let outside =
        outside_peers(&lines, &host, base.is_some()).map_err(|(i, why)| match lines.get(i) {
            Some(l) => refuse(l, why),
            None => DumpError::Unsupported { pid, why },
        })?;
    if let Some(o) = outside.first() {
        // With a user namespace of the tree's own, restore makes the mount namespace by
        // copying one of ckpt's into it, where the kernel makes shared mounts slaves.
        if !below && sys::ns::inode(pid, "user")? != sys::ns::inode(0, "user")? {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "its mount namespace, owned by a user namespace of the tree's own, has \
                     mounts in (or slaves of) peer group {} of ckpt's mount namespace \
                     (mounted on {} there); propagation from outside a user namespace of \
                     the tree's is not restored yet",
                    o.group,
                    String::from_utf8_lossy(&o.point)
                ),
            });
        }
    }
    let keys: BTreeSet<String> = outside.iter().map(|o| o.group.clone()).collect();
    if let Err((i, why)) = prop_plan(&prop, &keys) {
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
            let open = || {
                sys::mount::in_private_copy(|| {
                    sys::mount::open_uncovered(&hp, dev)?
                        .map(|f| {
                            sys::mount::dev_ino(&f).map(|(d, i)| (d, i, sys::mount::born_ns(&f)))
                        })
                        .transpose()
                })
            };
            let found = match base {
                Some(b) => sys::mount::in_mount_ns(b, open).and_then(|r| r),
                None => open(),
            };
            let (d, ino, born_ns) = match found {
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
                born_ns,
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
            if l.fstype == "proc" {
                check_proc_pidns(pid, l).map_err(|why| refuse(l, why))?;
            }
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
        // (A group of ckpt's namespace is joined through a mount of the same file
        // system: one restore makes anew cannot join it.)
        if !matches!(origin, MountOrigin::External { .. }) {
            if let Some(o) = outside.iter().find(|o| {
                l.optional
                    .iter()
                    .any(|f| f.split_once(':').map(|x| x.1) == Some(o.group.as_str()))
            }) {
                return Err(refuse(
                    l,
                    format!(
                        "it is in (or a slave of) peer group {} of ckpt's mount namespace, \
                         and restore mounts its file system anew, which cannot join that \
                         group",
                        o.group
                    ),
                ));
            }
        }
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
    Ok(MountTree { mounts, outside })
}

/// The peer groups the mounts `lines` (of the tree's mount namespace, or of one a
/// process below the root made) share with ckpt's namespace (`host`), or are slaves of
/// there, each with the mount of
/// ckpt's that restore takes it from: of the same file system, its root holding the
/// roots of every mount of `lines` in or below that group, the last mount on its
/// point (what opening that path finds); a member of the group, else (for a group
/// the namespace's mounts are slaves of only) a slave of it that is not shared. A group
/// none of ckpt's mounts can give is the place of the first mount in it, and why.
/// `by_id`: `host` is the tree's own namespace (the base of one a process below the
/// root made), whose mounts restore makes and keeps by their dump IDs: a mount covered
/// by another on its point gives its group too (recorded with its ID, `OutsidePeer::mount`).
fn outside_peers(
    lines: &[MountLine],
    host: &[MountLine],
    by_id: bool,
) -> std::result::Result<Vec<OutsidePeer>, (usize, String)> {
    let field = |l: &MountLine, k: &str| -> Option<String> {
        l.optional
            .iter()
            .find_map(|o| o.strip_prefix(k))
            .map(str::to_string)
    };
    let in_host = |k: &str, n: &str| host.iter().any(|h| field(h, k).as_deref() == Some(n));
    // The groups: those of the namespace's mounts ckpt's has too (shared), and the
    // master groups of its slaves ckpt's has a mount in or a slave of.
    let mut wanted: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        for k in ["shared:", "master:"] {
            if let Some(n) = field(l, k) {
                if in_host("shared:", &n) || (k == "master:" && in_host("master:", &n)) {
                    wanted.entry(n).or_default().push(i);
                }
            }
        }
    }
    let covered =
        |h: &MountLine| !by_id && host.iter().any(|o| o.parent == h.id && o.point == h.point);
    let mut out = Vec::new();
    for (n, users) in wanted {
        let first = users.first().copied().unwrap_or_default();
        let dev = lines[first].dev();
        let holds = |h: &MountLine| {
            h.dev() == dev
                && users
                    .iter()
                    .all(|&i| lines[i].dev() == dev && super::prop::within(&lines[i].root, &h.root))
        };
        let member = |h: &MountLine| field(h, "shared:").as_deref() == Some(n.as_str());
        let slave = |h: &MountLine| {
            field(h, "master:").as_deref() == Some(n.as_str()) && field(h, "shared:").is_none()
        };
        let pick = |want: &dyn Fn(&MountLine) -> bool| {
            host.iter()
                .filter(|h| want(h) && holds(h) && !covered(h))
                .min_by_key(|h| h.root.len())
        };
        let (h, is_member) = match (pick(&member), pick(&slave)) {
            (Some(h), _) => (h, true),
            (None, Some(h)) => (h, false),
            (None, None) => {
                return Err((
                    first,
                    format!(
                        "it is in (or a slave of) peer group {n} of ckpt's mount namespace, \
                         and no mount of that namespace in the group shows a directory \
                         holding its root, uncovered, for restore to take the group \
                         from; this is not restored"
                    ),
                ));
            }
        };
        out.push(OutsidePeer {
            group: n,
            point: h.point.clone(),
            root: h.root.clone(),
            dev,
            member: is_member,
            mount: if by_id { h.id } else { 0 },
        });
    }
    Ok(out)
}

/// A proc of the namespace's own shows the PID namespace of the tree's root: restore
/// mounts it anew for the root's namespace (its own made again, the one given for an
/// external one, a new one below ckpt's reaper, or ckpt's), from inside it. One that
/// does not show the root under its ID there (mounted for a namespace above or below
/// the root's) is refused.
fn check_proc_pidns(pid: i32, l: &MountLine) -> Result<(), String> {
    let ids = sys::proc::thread_nspid(pid, pid).map_err(|e| e.to_string())?;
    let id = ids
        .last()
        .copied()
        .ok_or_else(|| "the tree's root has no ID (no NSpid)".to_string())?;
    match sys::mount::proc_shows_as(pid, &l.point, id) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "it does not show the tree's root as {id}, its ID in its PID namespace: it \
             was mounted for another PID namespace, and restore mounts a proc for the \
             root's only"
        )),
        Err(e) => Err(format!("cannot tell which PID namespace it shows: {e}")),
    }
}
