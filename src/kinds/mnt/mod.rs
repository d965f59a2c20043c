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
//! host...) is refused at dump, naming the mount point and the type, and so is a tree
//! with a PID namespace of its own too when it has a cgroup namespace of its own. With a user namespace of the tree's own, the
//! mount namespace is one it owns (made by its helper, `kinds::userns`), where ckpt
//! replays the mounts with its own privileges.
//! Propagation between the namespace's mounts (peer groups, slaves) is restored
//! ([`prop::PropPlan`]), and so are its mounts' peer groups shared with ckpt's
//! namespace, or their masters there (`unshare -m --propagation unchanged` or `slave`):
//! recorded in `MountTree::outside` with a mount of ckpt's in (or a slave of) each
//! group, through which restore joins it again (`MOVE_MOUNT_SET_GROUP`); a group none
//! of ckpt's mounts gives (none holds the mount's directory, uncovered) is refused at
//! dump, and so is one in a namespace a user namespace of the tree's owns. With a PID namespace of the tree's own, its init is made while the
//! namespace is built and the proc mounts from inside it (see [`enter_new`]).
//!
//! Restore builds the namespace before plan opens any file, on ckpt's main thread
//! (every process it starts afterwards is in it): a new mount namespace with every
//! mount private (nothing reaches the host's), a staging tmpfs, the mounts replayed
//! below it parent first, their flags, `pivot_root` into the namespace's root (which
//! detaches the host's mounts), then their propagation. A failed restore leaves nothing
//! on the host: the namespace ends with ckpt and the processes started in it.
//!
//! A mount namespace a process below the tree's root made is recorded the same way and
//! built by the same builder, on a thread of ckpt's, for that process's stub to join
//! ([`below`]: what dump refuses of it, and how restore makes it).
//!
//! The files: [`collect`] reads the mounts at dump, [`checks`] checks an image's tree at
//! plan, [`external`] finds the external mounts' sources again, [`build`] makes the
//! namespace at restore; [`prop`] is the mounts' propagation (dump and restore);
//! [`below`] a namespace a process below the root made.

mod below;
mod build;
mod checks;
mod collect;
mod external;
mod prop;

use crate::model::{Checkpoint, MountTree};

pub(crate) use below::check_below;
pub(crate) use build::{
    KeptMounts, OtherPidns, PidnsInit, enter_new, make_below, release_kept, unstack_proc,
};
#[cfg(test)]
use checks::{PidnsWay, pidns_way};
pub(crate) use checks::{
    check_tree, external_points, fresh_devs, manifest, own_cgroup_mount_sources, tree_manifest,
};
pub(crate) use collect::collect;
pub(crate) use external::copied_devs;
pub use external::set_external_mounts;

/// The most data a namespace's tmpfs mounts may hold together for the image to keep it.
pub(crate) const TMPFS_CAP: u64 = 64 << 20;

/// File systems a namespace may have of its own: restore mounts them anew.
const FRESH: [&str; 6] = ["tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup2"];

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

#[cfg(test)]
mod tests;
