//! Namespaces (other than PID namespaces, which `restore::pidns` handles): which ones
//! each process is in, and the state of those the tree owns.
//!
//! A namespace is either ckpt's own at dump ("external": the host's, joined again at
//! restore by starting the tree in ckpt's), one made outside the tree that is not
//! ckpt's ("foreign", e.g. another container's network namespace: restore joins the
//! one `--join-ns KIND:PATH` names, for the kinds in [`JOINABLE`]), or one the tree
//! created (its root is in it and the root's parent, outside the tree, is not), which
//! restore creates anew before the first process is started: UTS (its names), IPC (its
//! limits and POSIX message queues; its System V objects are `kinds::ipc`'s), time (its clocks continue from the dumped
//! values), network (only its loopback interface, up or down, with its MTU and
//! addresses, and the network settings of /proc/sys/net that differ from a new
//! namespace's; every socket of the tree is made again inside it) and cgroup (rooted
//! at the same cgroups, see `kinds::cgroup`); a mount namespace is built by
//! `kinds::mnt`, before plan (one a process below the root made: in its stub,
//! `kinds::mnt::below`), a user namespace (and the namespaces it owns) by
//! `kinds::userns`. Everything else is refused at dump, naming the process and the
//! namespace: a namespace of the tree's own that another user namespace than the
//! tree's owns, a network namespace with
//! another interface, a route the kernel did not make for an address, firewall tables
//! or settings a new namespace does not take, a foreign namespace of a kind restore
//! cannot join, processes of the tree in different namespaces of one kind, and a time
//! namespace made for children nobody entered yet.
//!
//! The files: [`collect`] reads them at dump, [`checks`] checks an image's at plan,
//! [`enter`] makes and joins them at restore; [`net`] is a network namespace of the
//! tree's own, in all three.

mod checks;
mod collect;
mod enter;
mod net;

use crate::model::{Checkpoint, Namespace, Process};

pub use checks::manifest;
pub(crate) use checks::{check_joins, check_namespaces};
pub(crate) use collect::{
    OwnNamespaces, collect_into, join_own_ipc, join_tree_net, made_outside, own_namespaces,
};
pub(crate) use enter::{
    enter_child_namespaces, enter_new, enter_time_made_in_userns, make_time_for_children,
    make_time_in_userns, time_made_in_userns, time_maker_in_userns,
};
pub(crate) use net::set_up_net;

/// The kinds of namespace recorded (as in /proc/PID/ns/), PID namespaces aside.
pub(crate) const KINDS: [&str; 7] = ["uts", "ipc", "net", "mnt", "cgroup", "time", "user"];

/// Kinds a tree's own namespace of which restore creates.
pub(crate) const RESTORED: [&str; 7] = ["uts", "ipc", "time", "net", "cgroup", "mnt", "user"];

/// Kinds of namespace a process of the tree below its root may have made for itself
/// and its descendants (restore makes it again in that process's stub before its
/// children are forked, or, owned by a user namespace of the tree's, beforehand, and
/// the stub joins it then; a user namespace is made beforehand and joined by each of
/// its processes at the credentials step: `kinds::userns`). A time namespace is the
/// one a process made for its children (`unshare(CLONE_NEWTIME)` leaves the caller
/// where it was): its parent's stub makes it before it forks the first of them. A mount
/// namespace is built on a thread of ckpt's and joined by the stub (`kinds::mnt::below`).
pub(crate) const MIXABLE: [&str; 7] = ["uts", "user", "ipc", "net", "cgroup", "time", "mnt"];

/// Of [`MIXABLE`], the kinds a process below the root may have made in a user namespace
/// of the tree's that are made beforehand owned by it, with their state
/// (`kinds::userns::make_below`: a cgroup namespace by a helper that moved into its
/// root cgroups first). (A time namespace made in one is made by its maker's stub once
/// it joined it, [`make_time_in_userns`]: the kernel gives a process one for its
/// children apart from its own only through `unshare(CLONE_NEWTIME)`, owned by the
/// user namespace it is in then, and `setns` would move the maker in too. A mount
/// namespace made in one is refused: see `kinds::mnt::below`.)
pub(crate) const IN_TREE_USER: [&str; 5] = ["uts", "user", "ipc", "net", "cgroup"];

/// Kinds of a namespace made outside the tree that restore joins (`--join-ns`): those
/// a thread of ckpt may join alone.
pub(crate) const JOINABLE: [&str; 3] = ["uts", "ipc", "net"];

/// The per-namespace limits of an IPC namespace (under /proc/sys).
pub(crate) const IPC_LIMITS: [&str; 12] = [
    "kernel/shmmax",
    "kernel/shmall",
    "kernel/shmmni",
    "kernel/shm_rmid_forced",
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/msgmni",
    "kernel/sem",
    "fs/mqueue/queues_max",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_max",
    "fs/mqueue/msg_default",
];

/// What a kind of namespace is called in messages.
fn title(kind: &str) -> &'static str {
    match kind {
        "uts" => "UTS",
        "ipc" => "IPC",
        "net" => "network",
        "mnt" => "mount",
        "cgroup" => "cgroup",
        "time" => "time",
        "user" => "user",
        _ => "unknown",
    }
}

// ---- the tree's own namespaces in the image (dump, plan, stage) ----

/// The namespaces of the tree's own in the image (restore creates them), those of
/// its root.
fn owned(ckpt: &Checkpoint) -> Vec<&Namespace> {
    let Some(root) = ckpt.processes.first() else {
        return Vec::new();
    };
    ckpt.namespaces
        .iter()
        .filter(|ns| !ns.external && root.namespaces.contains(&(ns.kind.clone(), ns.inode)))
        .collect()
}

/// The kinds of the namespaces restore creates for the tree.
pub(crate) fn owned_kinds(ckpt: &Checkpoint) -> Vec<String> {
    owned(ckpt).into_iter().map(|n| n.kind.clone()).collect()
}

/// Whether restore creates a namespace of kind `kind` for the tree.
pub(crate) fn owns(ckpt: &Checkpoint, kind: &str) -> bool {
    owned(ckpt).iter().any(|ns| ns.kind == kind)
}

/// The tree's network namespace a restore joins (`--join-ns`, or the criu front end's
/// `inherit_fd`) when the image's was made outside the tree and held TCP connections
/// the dump locked there, with the dump's lock rules in it (`sys::netlock::TreeNet`):
/// taken before the restore enters the tree's mount namespace. None otherwise.
pub(crate) fn joined_net(
    ckpt: &Checkpoint,
    joins: &[(String, std::path::PathBuf)],
) -> crate::error::RestoreResult<Option<crate::sys::netlock::TreeNet>> {
    if !ckpt.namespaces.iter().any(|n| n.foreign && n.kind == "net")
        || locked_connections(ckpt).is_empty()
    {
        return Ok(None);
    }
    let Some((_, path)) = joins.iter().find(|(k, _)| k == "net") else {
        return Ok(None);
    };
    let (f, _) = crate::sys::ns::open_ns_file(path)?;
    Ok(Some(crate::sys::netlock::TreeNet::open(f)?))
}

/// The IPC namespace of the tree's own, if restore creates one: its limits and POSIX
/// message queues.
pub(crate) fn own_ipc(ckpt: &Checkpoint) -> Option<&crate::model::IpcLimits> {
    owned(ckpt).into_iter().find_map(|n| n.ipc.as_ref())
}

/// Whether restore creates namespaces for the tree.
pub(crate) fn any_owned(ckpt: &Checkpoint) -> bool {
    !owned(ckpt).is_empty()
}

/// Whether the tree's network is not ckpt's at restore: a new network namespace of its
/// own (where every address and abstract name is free, and its TCP connections need no
/// lock: the dump's namespace ended with the tree) or one `--join-ns` gives.
pub(crate) fn net_elsewhere(ckpt: &Checkpoint) -> bool {
    owns(ckpt, "net") || ckpt.namespaces.iter().any(|n| n.foreign && n.kind == "net")
}

/// The inode of the namespace of kind `kind` process `p` is in, if recorded.
pub(crate) fn inode_of(p: &Process, kind: &str) -> Option<u64> {
    p.namespaces
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, i)| *i)
}

/// Whether process `p` of `procs` (the root first) is in another network namespace
/// than the root: one a process below the root made (its names and addresses are
/// that namespace's; its sockets were made there).
pub(crate) fn net_below_root(procs: &[Process], p: &Process) -> bool {
    below_root(procs, p, "net")
}

/// Whether process `p` of `procs` (the root first) is in another IPC namespace than the
/// root: one a process below the root made, whose System V objects and named POSIX
/// message queues are that namespace's (`IpcLimits::sysv`, `IpcLimits::mqueues`), not
/// the tree's (`Checkpoint::sysv`) nor the host's.
pub(crate) fn ipc_below_root(procs: &[Process], p: &Process) -> bool {
    below_root(procs, p, "ipc")
}

/// Whether process `p` of `procs` (the root first) is in another namespace of kind
/// `kind` than the root.
fn below_root(procs: &[Process], p: &Process, kind: &str) -> bool {
    let root = procs.first().and_then(|r| inode_of(r, kind));
    let mine = inode_of(p, kind);
    mine.is_some() && root.is_some() && mine != root
}

/// The IPC namespaces processes below the root made, with their state (limits, named
/// queues, System V objects), each with the processes of `ckpt` in it.
pub(crate) fn below_ipc(ckpt: &Checkpoint) -> Vec<(&Namespace, Vec<&Process>)> {
    let root = ckpt.processes.first().and_then(|r| inode_of(r, "ipc"));
    ckpt.namespaces
        .iter()
        .filter(|n| n.kind == "ipc" && !n.external && Some(n.inode) != root && n.ipc.is_some())
        .map(|n| {
            let procs = ckpt
                .processes
                .iter()
                .filter(|p| inode_of(p, "ipc") == Some(n.inode))
                .collect();
            (n, procs)
        })
        .collect()
}

/// Whether process `p` of `procs` (the root first) is in another mount namespace than
/// the root: one a process below the root made (`kinds::mnt::below`; the root's is then
/// ckpt's), where paths (its working and root directories) are looked up in it.
pub(crate) fn mnt_below_root(procs: &[Process], p: &Process) -> bool {
    let root = procs.first().and_then(|r| inode_of(r, "mnt"));
    let mine = inode_of(p, "mnt");
    mine.is_some() && root.is_some() && mine != root
}

/// The TCP connections of the image that the dump locked (`sys::netlock`): none when
/// the tree had a network namespace of its own (it ended with the tree), nor those of
/// processes in a network namespace a process below the root made (the same: every
/// peer is in the tree there, see `fd::belownet`).
pub(crate) fn locked_connections(ckpt: &Checkpoint) -> Vec<(Vec<u8>, Vec<u8>)> {
    lockable_connections(&ckpt.processes, owns(ckpt, "net"))
}

/// The TCP connections of `procs` (the root first) a lock in the root's network
/// namespace covers: none if that is the tree's own (`own_net`), and none of a process
/// in a network namespace a process below the root made.
pub(crate) fn lockable_connections(procs: &[Process], own_net: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    if own_net {
        return Vec::new();
    }
    procs
        .iter()
        .filter(|p| !net_below_root(procs, p))
        .flat_map(|p| p.tcp_connections())
        .collect()
}

#[cfg(test)]
mod tests;
