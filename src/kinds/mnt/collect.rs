//! Collect (dump): the mounts of the tree's mount namespace, each with where restore
//! gets it from (external, fresh, bind), refusing what it cannot.

use std::collections::{BTreeMap, BTreeSet};

use super::prop::{PropIn, prop_plan};
use super::{FRESH, TMPFS_CAP};
use crate::error::{DumpError, DumpResult};
use crate::model::{Mount, MountOrigin, MountTree};
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
                    .map(|f| sys::mount::dev_ino(&f).map(|(d, i)| (d, i, sys::mount::born_ns(&f))))
                    .transpose()
            });
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
