//! A mount namespace a process below the tree's root made for itself and its children
//! (`unshare -m cmd`, a sandboxed helper): dump checks what restore can make again of
//! it ([`check_below`]); restore builds it on a thread of ckpt's own ([`make_below`],
//! with `build`'s builder) and the process's stub joins it before its children are
//! forked (`kinds::ns::enter_child_namespaces`).
//!
//! Restored: one made in ckpt's user and PID namespaces, copied from the root's mount
//! namespace (ckpt's, or the tree's own: the *base*, [`base_of`]), its mounts copied
//! from the base's private ones or made inside it (tmpfs with their files, binds of host
//! directories, propagation between its own mounts), and mounts in a peer group of the
//! base, which it was copied from (`unshare(CLONE_NEWNS)` keeps shared mounts' copies in
//! their groups: recorded in `MountTree::outside` by `collect`, joined again at restore
//! from a mount of the base, `prop::propagate`); the working and root directories of
//! its processes, looked up in it by path. With the tree's own namespace as its base,
//! restore builds that one first (ckpt's main thread is in it when the process's stub
//! is made), so the mounts this one shares with it are found there, by the dump's
//! paths in the base: a file system restore made anew there (a tmpfs) is bound from
//! it, not made again (`build`: `made_anew`), and its groups joined from it. Two deep
//! (a process in one made below the root makes another): restored as a copy of its
//! parent's, built on a thread that joined that one (the parent's stub is in it by
//! then), its mounts found there by the dump's paths, those of file systems made anew
//! there bound from them. Refused, naming the process: one nested three deep, or two
//! deep sharing peer groups with the one it was copied from, one made in another user
//! or PID namespace, and files its processes hold open or map that ckpt would not find
//! again at the same path from the base (on a file system of the namespace's own, or
//! bound elsewhere).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use crate::error::{DumpError, DumpResult};
use crate::sys;

// ---- collect (dump) ----

/// Checks, at dump, the mount namespace `mnt:[ino]` process `pid` made below the tree's
/// root (whose own is `root_mnt`, its parent's; ckpt's namespaces are `ckpts`), `members` the
/// processes of the tree in it; refuses what restore cannot make again (see the
/// module's comment), naming the process.
pub(crate) fn check_below(
    pid: i32,
    ino: u64,
    root_mnt: u64,
    ckpts: &crate::kinds::ns::OwnNamespaces,
    members: &[i32],
) -> DumpResult<()> {
    let refuse = |pid: i32, why: String| Err(DumpError::Unsupported { pid, why });
    let ckpt_ns = |kind: &str| ckpts.get(kind).copied().unwrap_or(0);
    for kind in ["user", "pid"] {
        let mine = sys::ns::inode(pid, kind)?;
        // (ckpt's PID namespace is not among those read at the start: it never joins
        // another.)
        let ckpts = match kind {
            "pid" => sys::ns::inode(0, "pid")?,
            _ => ckpt_ns(kind),
        };
        if mine != ckpts {
            return refuse(
                pid,
                format!(
                    "it made a mount namespace (mnt:[{ino}]) in a {kind} namespace \
                     ({kind}:[{mine}]) other than ckpt's ({kind}:[{ckpts}]); a mount namespace \
                     made below the root is restored only in ckpt's user and PID \
                     namespaces yet"
                ),
            );
        }
    }
    let ppid = sys::proc::status(pid)?.ppid;
    let lines = sys::mount::mountinfo(pid)?;
    let parent_mnt = sys::ns::inode(ppid, "mnt")?;
    // (Made in the tree's root's, ckpt's or the tree's own: the one restore builds
    // first and then builds this one in; or, two deep, in one its parent's maker made
    // there, which restore builds before its parent's children are forked.)
    if parent_mnt != root_mnt {
        let gp = sys::proc::status(ppid)?.ppid;
        let gp_mnt = sys::ns::inode(gp, "mnt")?;
        if gp_mnt != root_mnt && gp_mnt != parent_mnt {
            return refuse(
                pid,
                format!(
                    "it made a mount namespace (mnt:[{ino}]) inside another one a process \
                     of the tree made (mnt:[{parent_mnt}], its parent's, PID {ppid}), \
                     itself made inside another one (mnt:[{gp_mnt}]); mount namespaces \
                     nested more than two deep are not restored yet"
                ),
            );
        }
        let theirs = sys::mount::mountinfo(ppid)?;
        let groups = |ls: &[sys::mount::MountLine]| -> BTreeSet<String> {
            ls.iter()
                .flat_map(|l| &l.optional)
                .filter_map(|o| o.split_once(':').map(|(_, g)| g.to_string()))
                .collect()
        };
        let shared = groups(&lines);
        if let Some(g) = groups(&theirs).intersection(&shared).next() {
            return refuse(
                pid,
                format!(
                    "it made a mount namespace (mnt:[{ino}]) inside another one a process \
                     of the tree made (mnt:[{parent_mnt}], its parent's, PID {ppid}) whose \
                     mounts are in (or slaves of) its peer group {g}; mount namespaces \
                     nested two deep are restored only apart from the one they were \
                     copied from, propagation between them is not restored yet"
                ),
            );
        }
    }
    let base = base_of(pid)?;
    // The devices of file systems only the namespace has: nothing on them is found
    // from the host (ckpt's namespace, or the tree's its parent is in).
    let host = sys::mount::mountinfo(base.unwrap_or(0))?;
    let host_devs: BTreeSet<u64> = host.iter().map(|l| l.dev()).collect();
    let own_devs: BTreeSet<u64> = lines
        .iter()
        .map(|l| l.dev())
        .filter(|d| !host_devs.contains(d))
        .collect();
    for &m in members {
        check_files(m, ino, &own_devs, base)?;
    }
    Ok(())
}

/// For process `pid`, in a mount namespace a process below the tree's root made: its
/// parent, when that is in a mount namespace of the tree's own (the root's: restore
/// builds it first, and this one as a copy of it), whose view the namespace's mounts
/// and files are found from, as ckpt's would be otherwise (`None`).
pub(super) fn base_of(pid: i32) -> DumpResult<Option<i32>> {
    let ppid = sys::proc::status(pid)?.ppid;
    Ok((sys::ns::inode(ppid, "mnt")? != sys::ns::inode(0, "mnt")?).then_some(ppid))
}

/// The files process `pid` (in the mount namespace `mnt:[ino]` a process below the root
/// made, whose own file systems are `own_devs`) holds open or maps are found again at
/// their paths from the host (or from the tree's namespace process `base` is in, see
/// [`base_of`]), which is where plan opens them; its working and root directories
/// (looked up in the namespace at restore) are not removed.
fn check_files(pid: i32, ino: u64, own_devs: &BTreeSet<u64>, base: Option<i32>) -> DumpResult<()> {
    let refuse = |what: String, why: &str| {
        Err(DumpError::Unsupported {
            pid,
            why: format!(
                "{what}, in the mount namespace mnt:[{ino}] a process below the tree's \
                 root made, {why}; only files found at the same path from the host (or \
                 from the tree's mount namespace it was copied from) are restored there \
                 yet"
            ),
        })
    };
    for (name, what) in [("cwd", "working directory"), ("root", "root directory")] {
        let p = sys::proc::readlink(&format!("/proc/{pid}/{name}"))?;
        if p.ends_with(b" (deleted)") {
            return refuse(
                format!("its {what} {}", String::from_utf8_lossy(&p)),
                "was removed",
            );
        }
    }
    let mut held = Vec::new();
    for fd in sys::proc::fds(pid)? {
        let link = format!("/proc/{pid}/fd/{fd}");
        // (Gone since it was listed: nothing to find again.)
        let Ok(path) = sys::proc::readlink(&link) else {
            continue;
        };
        if path.first() != Some(&b'/') {
            continue;
        }
        let Ok(f) = sys::proc::file_id(std::path::Path::new(&link), &path) else {
            continue;
        };
        held.push((format!("its descriptor {fd}"), path, f.dev, f.ino));
    }
    for m in sys::proc::maps(pid)? {
        if m.inode != 0 && m.path.first() == Some(&b'/') {
            let dev = libc::makedev(m.dev_major, m.dev_minor);
            held.push(("its memory mapping of".into(), m.path, dev, m.inode));
        }
    }
    for (what, path, dev, ino) in held {
        let shown = format!("{what} {}", String::from_utf8_lossy(&path));
        if own_devs.contains(&dev) {
            return refuse(shown, "is on a file system of that namespace's own");
        }
        // (A removed file, a memfd, a System V segment: not looked up by path.)
        if path.ends_with(b" (deleted)") {
            continue;
        }
        let mut seen = base.map_or(Vec::new(), |b| format!("/proc/{b}/root").into_bytes());
        seen.extend(&path);
        let os = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&seen);
        let same = std::fs::metadata(os).is_ok_and(|h| h.dev() == dev && h.ino() == ino);
        if !same {
            return refuse(shown, "is another file at that path from the host");
        }
    }
    Ok(())
}
