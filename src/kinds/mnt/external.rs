//! The external mounts' sources at restore: the paths of the dump or those
//! `restore --external-mount POINT=SOURCE` gives, opened and checked to be the same
//! files.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use crate::error::Problem;
use crate::kinds::check::p;
use crate::model::{MountOrigin, MountTree};
use crate::sys;

/// `restore --external-mount POINT=SOURCE` pairs, set once by the command line.
pub(super) static EXTERNAL: Mutex<Vec<(Vec<u8>, Vec<u8>)>> = Mutex::new(Vec::new());

/// See [`copied_devs`].
static COPIED: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// The devices of the external mounts restore binds from another file than at the
/// dump (`--external-mount POINT=SOURCE` naming a copy, e.g. the root file system of
/// another container made from the same image, as `podman container restore --import`
/// gives), as `open_sources` found them: a file on one is another inode after restore
/// (compared by type, size and times only, as across a reboot).
pub(crate) fn copied_devs() -> BTreeSet<u64> {
    COPIED.lock().map(|c| c.clone()).unwrap_or_default()
}

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
/// file, to attach; the file). `made_anew`: the dump's devices of file systems restore
/// made anew in the namespace the sources are found in (the tree's, for one a process
/// below the root made in it), with their devices now where known (`renewed`, from the
/// mounts restore made there): found as the file system of that device (uncovered, as
/// any other), else by path alone.
pub(super) fn open_sources(
    tree: &MountTree,
    same_boot: bool,
    given: &[(Vec<u8>, Vec<u8>)],
    (made_anew, renewed): (&BTreeSet<u64>, &BTreeMap<u64, u64>),
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
                let dev = renewed.get(dev).unwrap_or(dev);
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
            born_ns,
        } = &m.origin
        else {
            continue;
        };
        let mapped = given.iter().rev().find(|(pt, _)| *pt == m.point);
        let src = mapped.map_or(host_path, |(_, s)| s);
        let show = |x: &[u8]| String::from_utf8_lossy(x).into_owned();
        let anew = made_anew.contains(dev);
        let opened = if mapped.is_some() || (anew && !renewed.contains_key(dev)) {
            sys::mount::open_path(src).map(Some)
        } else if let Some((fd, c)) = first.remove(&m.id) {
            out.insert(m.id, (c, fd));
            continue;
        } else {
            sys::mount::open_uncovered(src, *renewed.get(dev).unwrap_or(dev))
        };
        let fd = match opened {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                p(
                    problems,
                    "external-mount",
                    format!(
                        "the source of the mount on {}, {}, is on another device than at \
                         the dump; give it with --external-mount {}=SOURCE",
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
                // (A directory made since the dump can have the number of the dump's,
                // removed meanwhile, as the new root containerd copies for a restore
                // right after the old one's removal: its birth time tells them apart.)
                let reborn = *born_ns != 0 && sys::mount::born_ns(&fd) != *born_ns;
                if now != (*dev, *ino) || reborn {
                    if let Ok(mut c) = COPIED.lock() {
                        c.insert(*dev);
                    }
                }
            }
        }
        // A cgroup is known by its path (one made again is another inode).
        if mapped.is_none() && !anew && same_boot && !crate::kinds::cgroup::is_cgroup_fs(&m.fstype)
        {
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
