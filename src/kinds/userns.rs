//! A user namespace of the tree's own (`unshare -U`, a rootless container): its ID maps,
//! its setgroups state and its owner, and the tree's other namespaces it owns.
//!
//! Restore makes it again with a helper forked from ckpt (`sys::userns::make`): the
//! helper takes the owner's IDs and unshares CLONE_NEWUSER, ckpt writes setgroups,
//! uid_map and gid_map from the parent namespace, the helper (root in it) unshares the
//! tree's UTS, IPC, network, mount and PID namespaces, so that the new user namespace
//! owns them, and ckpt's main thread joins those (it stays in its own user namespace,
//! with its privileges there); ckpt builds the tree's mounts in that mount namespace,
//! and makes the PID namespace's init (opened through a pidfd of the helper: it has no
//! process yet). Every stub is then forked in them, and builds its process with ckpt's
//! privileges as usual; at the credentials step each stub takes the image's
//! supplementary groups, joins the user namespace (injected `setns`) and sets its IDs,
//! translated through the maps (the image holds them as ckpt saw them), and its
//! capabilities, which are relative to the namespace. A multi-threaded process joins it
//! before its threads are made (their IDs in the tree's PID namespace, which the user
//! namespace owns, or set from outside), and each thread gets its credentials
//! translated the same way; so does a process that made a time namespace for its
//! children there, which its stub makes again once in it (`kinds::ns::
//! make_time_in_userns`).
//!
//! The tree's cgroup and time namespaces are made by the same helper, owned by it:
//! it first moves itself into the cgroup namespace's root cgroups (with ckpt's
//! privileges), ckpt writes the time namespace's offsets before anything is in it,
//! and ckpt's main thread joins both (the time namespace last: ckpt is in it then).
//!
//! **Below the root** (a rootless container running a sandbox, `unshare -U -r` in a
//! child): the user namespaces processes below the root made, and the namespaces made
//! in them, are the `below` module's.
//!
//!
//! Refused (plan, so at dump too), naming what: the tree's root in a user namespace
//! nested in another than ckpt's; a user namespace made below the root nested in one
//! that is neither ckpt's nor the tree's, whose maps or creator its parent does not
//! map, holding a multi-threaded process whose threads have IDs at more than one
//! level, owning a PID namespace, or in a tree with a PID namespace of its own (the
//! builder in it makes the tree); a time namespace made in a user namespace of the
//! tree's in such a tree too; a mount namespace made below the root in a user
//! namespace of the tree's; a PID namespace
//! of the tree's own that it does not own (dump); a namespace made below the root
//! owned by another user namespace than its maker's; a
//! namespace of the tree's own not owned by the tree's user namespace; a process with
//! more than one thread with IDs at more than one level without a PID namespace of the
//! tree's own (clone3(set_tid) there needs privileges that a process inside the user
//! namespace lacks, and only a single-threaded process may join one; at one level,
//! ckpt's, the IDs are set from outside through ns_last_pid:
//! `threads::create_threads`); a user or group ID of a process that the maps do not
//! map.

mod below;

pub(crate) use below::{Below, below, creator, make_below};
#[cfg(test)]
use below::{below_spec, translate_map};
use below::{check_below, made_below_in_own_user};

use crate::error::{DumpError, DumpResult, Problem, RestoreError, RestoreResult};
use crate::kinds::check::p;
use crate::kinds::task::creds::Own;
use crate::model::{Checkpoint, Creds, Namespace, Process, UserNsState};
use crate::sys;

/// The kinds of namespace of the tree's own that restore makes owned by the tree's
/// user namespace (the helper unshares them; ckpt's main thread joins them); mount and
/// PID namespaces are made by it too (see [`enter_new`]).
pub(crate) const OWNED: [&str; 3] = ["uts", "ipc", "net"];

/// The other kinds of namespace of the tree's own made owned by its user namespace:
/// by [`enter_new`] apart from [`OWNED`] (mount: a copy of ckpt's; cgroup: rooted
/// at the tree's cgroups; time: with its offsets, which ckpt's main thread joins).
const WITH_USER: [&str; 3] = ["mnt", "cgroup", "time"];

/// At most this many lines in an ID map (the kernel's limit since Linux 4.15).
pub(crate) const MAX_MAP_LINES: usize = 340;

// ---- collect (dump) ----

/// The state of the user namespace of the tree's own (`inode`) that process `pid` is
/// in: the root's (`below` false), whose parent must be ckpt's user namespace
/// (`ckpts`), or one a process below the root made (its parent is checked with the
/// others', `kinds::ns`).
pub(crate) fn collect(pid: i32, inode: u64, ckpts: u64, below: bool) -> DumpResult<UserNsState> {
    let parent = sys::userns::parent_ino(pid)?;
    if parent != ckpts && !below {
        return Err(DumpError::Unsupported {
            pid,
            why: format!(
                "it runs in a user namespace of its own (user:[{inode}]) nested in another \
                 one (user:[{parent}]) than ckpt's (user:[{ckpts}]); only a user namespace \
                 made directly in ckpt's is restored (run ckpt in user:[{parent}])"
            ),
        });
    }
    let uid_map = sys::userns::read_file(pid, "uid_map")?;
    let gid_map = sys::userns::read_file(pid, "gid_map")?;
    let setgroups = sys::userns::read_file(pid, "setgroups")?.trim() == "allow";
    for (name, text) in [("uid_map", &uid_map), ("gid_map", &gid_map)] {
        if parse_map(text).is_none() {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "its user namespace of its own (user:[{inode}]) has a {name} ckpt cannot \
                     read back: {text:?}"
                ),
            });
        }
    }
    Ok(UserNsState {
        uid_map,
        gid_map,
        setgroups,
        owner_uid: sys::userns::owner_uid(pid)?,
        parent,
    })
}

/// A namespace of the tree's own, of kind `kind`, that process `pid` is in (`inode`),
/// is owned by the user namespace restore makes it in (`tree_user`: the tree's own user
/// namespace, else ckpt's); refuses it otherwise.
pub(crate) fn check_owner(
    pid: i32,
    kind: &str,
    inode: u64,
    tree_user: u64,
    tree_owns_user: bool,
) -> DumpResult<()> {
    let owner = sys::userns::owner_ino(pid, kind)?;
    if owner == tree_user {
        return Ok(());
    }
    let whose = if tree_owns_user {
        "the tree's own user namespace"
    } else {
        "ckpt's user namespace"
    };
    Err(DumpError::Unsupported {
        pid,
        why: format!(
            "its {kind} namespace of its own ({kind}:[{inode}]) is owned by user:[{owner}], \
             not by {whose} (user:[{tree_user}]); restore makes the tree's namespaces in \
             {whose}, so this is not restored"
        ),
    })
}

// ---- checks (plan) ----

/// One line of an ID map: (first ID inside, first ID outside, count).
pub(crate) type MapLine = (u32, u32, u32);

/// The lines of an ID map's text ("INSIDE OUTSIDE COUNT" per line; none: no map yet),
/// or `None` if the kernel would not take it back: a line of another shape, a count of
/// 0, a range past 2^32 - 1, more than 340 lines, ranges that overlap inside or outside.
pub(crate) fn parse_map(text: &str) -> Option<Vec<MapLine>> {
    let mut out: Vec<MapLine> = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let [i, o, n] = w.as_slice() else {
            return None;
        };
        let (i, o, n): (u32, u32, u32) = (i.parse().ok()?, o.parse().ok()?, n.parse().ok()?);
        if n == 0 || i.checked_add(n - 1).is_none() || o.checked_add(n - 1).is_none() {
            return None;
        }
        for &(i2, o2, n2) in &out {
            let overlap = |a: u32, an: u32, b: u32, bn: u32| a <= b + (bn - 1) && b <= a + (an - 1);
            if overlap(i, n, i2, n2) || overlap(o, n, o2, n2) {
                return None;
            }
        }
        out.push((i, o, n));
    }
    (out.len() <= MAX_MAP_LINES).then_some(out)
}

/// The ID inside the namespace that outside ID `id` maps to.
pub(crate) fn to_inside(map: &[MapLine], id: u32) -> Option<u32> {
    map.iter()
        .find(|&&(_, o, n)| id >= o && id - o < n)
        .map(|&(i, o, _)| i + (id - o))
}

/// The outside ID that ID `id` inside the namespace maps to.
pub(crate) fn to_outside(map: &[MapLine], id: u32) -> Option<u32> {
    map.iter()
        .find(|&&(i, _, n)| id >= i && id - i < n)
        .map(|&(i, o, _)| o + (id - i))
}

/// The user namespace of the tree's own in the image (its root's), if any.
pub(crate) fn owned(ckpt: &Checkpoint) -> Option<&Namespace> {
    let root = ckpt.processes.first()?;
    ckpt.namespaces.iter().find(|ns| {
        ns.kind == "user" && !ns.external && root.namespaces.contains(&(ns.kind.clone(), ns.inode))
    })
}

/// Whether the recorded state is one restore can write: both maps read back.
pub(crate) fn state_ok(u: &UserNsState) -> bool {
    parse_map(&u.uid_map).is_some() && parse_map(&u.gid_map).is_some()
}

/// Every user namespace of the tree's own in the image: its root's (if any) and those
/// processes below the root made.
pub(crate) fn all_own(ckpt: &Checkpoint) -> impl Iterator<Item = &Namespace> {
    ckpt.namespaces
        .iter()
        .filter(|n| n.kind == "user" && !n.external)
}

/// The user namespace of the tree's own that process `p` is in, if any.
pub(crate) fn of_process<'a>(ckpt: &'a Checkpoint, p: &Process) -> Option<&'a Namespace> {
    let (_, ino) = p.namespaces.iter().find(|(k, _)| k == "user")?;
    all_own(ckpt).find(|n| n.inode == *ino)
}

/// The recorded state of the user namespace of the tree's own that process `p` is in.
pub(crate) fn state_of<'a>(ckpt: &'a Checkpoint, p: &Process) -> Option<&'a UserNsState> {
    of_process(ckpt, p).and_then(|n| n.user.as_ref())
}

/// What a tree with user namespaces of its own asks that restore cannot do (see the
/// module's comment), and IDs their maps do not map.
pub(crate) fn check(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let below_ok: Vec<u64> = below(ckpt).iter().map(|n| n.inode).collect();
    let root_user = owned(ckpt).map(|n| n.inode);
    if ckpt.own_pid_namespace {
        // (Made by the builder in the tree's PID namespace, which `make_below` is not
        // written for.)
        for ns in made_below_in_own_user(ckpt) {
            p(
                problems,
                "namespace",
                format!(
                    "a process below the tree's root made the {} namespace {}:[{}] in a \
                     user namespace of the tree's, and the tree has a PID namespace of its \
                     own; the two together are not restored yet",
                    ns.kind, ns.kind, ns.inode
                ),
            );
        }
        // (Made by their makers' stubs, which the builder there makes.)
        for ns in ckpt
            .namespaces
            .iter()
            .filter(|n| n.kind == "time" && !n.external)
            .filter(|n| crate::kinds::ns::time_maker_in_userns(ckpt, n.inode).is_some())
        {
            p(
                problems,
                "namespace",
                format!(
                    "a process below the tree's root made the time namespace time:[{}] \
                     for its children in a user namespace of the tree's, and the tree has \
                     a PID namespace of its own; the two together are not restored yet",
                    ns.inode
                ),
            );
        }
    }
    for ns in all_own(ckpt) {
        let Some(u) = ns.user.as_ref().filter(|u| state_ok(u)) else {
            // (check_namespaces says the namespace cannot be created.)
            continue;
        };
        let this = format!("user namespace of its own (user:[{}])", ns.inode);
        if Some(ns.inode) == root_user {
            check_root_user(ckpt, &this, problems);
        } else if !below_ok.contains(&ns.inode) {
            p(
                problems,
                "malformed",
                format!("the tree's user:[{}] is nested in a cycle", ns.inode),
            );
            continue;
        } else {
            check_below(ckpt, ns, problems);
        }
        let (Some(uids), Some(gids)) = (parse_map(&u.uid_map), parse_map(&u.gid_map)) else {
            continue;
        };
        for proc_ in ckpt
            .processes
            .iter()
            .filter(|p| !p.is_zombie())
            .filter(|p| of_process(ckpt, p).is_some_and(|n| n.inode == ns.inode))
        {
            let who = format!(
                "process {} ({})",
                proc_.pid,
                String::from_utf8_lossy(&proc_.comm)
            );
            let c = &proc_.creds;
            let unmapped: Vec<String> = c
                .uid
                .iter()
                .filter(|&&id| to_inside(&uids, id).is_none())
                .map(|id| format!("user ID {id}"))
                .chain(
                    c.gid
                        .iter()
                        .filter(|&&id| to_inside(&gids, id).is_none())
                        .map(|id| format!("group ID {id}")),
                )
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !unmapped.is_empty() {
                p(
                    problems,
                    "namespace",
                    format!(
                        "{who} has {} that the maps of the tree's {this} do not map; it \
                         cannot take them again inside the namespace",
                        unmapped.join(", ")
                    ),
                );
            }
        }
    }
}

/// The tree's own user namespace (its root's, `this` in messages): the namespaces of
/// the tree it can own, and threads it can hold.
fn check_root_user(ckpt: &Checkpoint, this: &str, problems: &mut Vec<Problem>) {
    let root = &ckpt.processes[0];
    for other in &ckpt.namespaces {
        if other.external || other.kind == "user" {
            continue;
        }
        let key = (other.kind.clone(), other.inode);
        if !root.namespaces.contains(&key) {
            // (A time namespace a process made for its children in it is made by that
            // process's stub: `kinds::ns::make_time_in_userns`.)
            if !crate::kinds::ns::IN_TREE_USER.contains(&other.kind.as_str())
                && other.kind != "time"
            {
                p(
                    problems,
                    "namespace",
                    format!(
                        "the tree has a {this}, and a process below its root made a {} \
                         namespace ({}:[{}]); with a user namespace of the tree's own this \
                         is not restored yet",
                        other.kind, other.kind, other.inode
                    ),
                );
            }
        } else if !OWNED.contains(&other.kind.as_str()) && !WITH_USER.contains(&other.kind.as_str())
        {
            p(
                problems,
                "namespace",
                format!(
                    "the tree has a {this} and a {} namespace of its own ({}:[{}]); the two \
                     together are not restored yet (only UTS, IPC, network, mount, cgroup, \
                     time and PID namespaces are made owned by a user namespace)",
                    other.kind, other.kind, other.inode
                ),
            );
        }
    }
    for proc_ in ckpt.processes.iter().filter(|p| !p.is_zombie()) {
        // (Without a PID namespace of the tree's own, the threads' IDs are set from
        // outside, `/proc/sys/kernel/ns_last_pid`, one level only.)
        if proc_.threads.len() > 1
            && !ckpt.own_pid_namespace
            && proc_.threads.iter().any(|t| !t.nstid.is_empty())
        {
            p(
                problems,
                "namespace",
                format!(
                    "process {} ({}) has {} threads and is in the tree's {this} and in a \
                     PID namespace nested in ckpt's: its threads would have to be made \
                     inside the user namespace with their IDs at more than one level, \
                     which needs privileges there (a multi-threaded process is restored \
                     in a user namespace of the tree's own in ckpt's PID namespace, or \
                     with a PID namespace of the tree's own, which the user namespace \
                     owns)",
                    proc_.pid,
                    String::from_utf8_lossy(&proc_.comm),
                    proc_.threads.len()
                ),
            );
        }
    }
}

/// This host lets ckpt make the tree's user namespace: /proc/sys/user/
/// max_user_namespaces is not 0.
pub(crate) fn check_host(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let Some(ns) = owned(ckpt) else {
        return;
    };
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if max == Some(0) {
        p(
            problems,
            "namespace",
            format!(
                "the tree has a user namespace of its own (user:[{}]), and this host allows \
                 none (user.max_user_namespaces is 0)",
                ns.inode
            ),
        );
    }
    if ckpt.own_pid_namespace && !sys::userns::can_open_empty_pid_namespaces() {
        p(
            problems,
            "namespace",
            format!(
                "the tree has a user namespace (user:[{}]) and a PID namespace of its own, \
                 and this kernel cannot hand ckpt a PID namespace before its init exists \
                 (PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE, Linux 6.11): the tree's root could \
                 not be made its init with ckpt's privileges",
                ns.inode
            ),
        );
    }
}

// ---- restore (stage) ----

/// The CLONE_NEW* flags among `flags` of the kinds a new user namespace owns
/// ([`OWNED`]), by kind.
fn owned_flags(flags: libc::c_int) -> Vec<(&'static str, libc::c_int)> {
    OWNED
        .iter()
        .filter_map(|k| sys::ns::clone_flag(k).map(|f| (*k, f)))
        .filter(|(_, f)| flags & f != 0)
        .collect()
}

/// The tree's user namespace as [`enter_new`] made it: held by descriptors of its
/// namespace files (the helper that made them is gone).
#[derive(Debug)]
pub(crate) struct Made {
    /// The user namespace, which every stub joins (see [`enter`]).
    pub(crate) user: std::os::fd::OwnedFd,
    /// The tree's PID namespace, owned by it, with no process yet: its init is made
    /// there (`sys::process::spawn_pidns_init_stub`), ckpt's child with ckpt's
    /// credentials, which becomes the tree's root.
    pub(crate) pid: Option<std::os::fd::OwnedFd>,
}

/// Make the tree's user namespace (if the image has one) and, owned by it, the
/// namespaces of `flags` (CLONE_NEW* of the tree's other namespaces), its PID namespace
/// with its init if `pid` and its mount namespace if `mnt` (a copy of the calling
/// thread's, where ckpt then builds the tree's mounts: `kinds::mnt::enter_new`); the
/// calling thread joins them, but the user and PID namespaces (returned). Returns the
/// flags still to unshare (none when a user namespace was made: plan refused the other
/// kinds with it).
pub(crate) fn enter_new(
    ckpt: &Checkpoint,
    flags: libc::c_int,
    pid: bool,
    mnt: bool,
    cgroups: Option<&[sys::cgroup::CgroupDir]>,
    offsets: Option<(i64, i64)>,
) -> RestoreResult<(libc::c_int, Option<Made>)> {
    let Some(ns) = owned(ckpt) else {
        return Ok((flags, None));
    };
    let Some(u) = ns.user.as_ref() else {
        return Err(RestoreError::Stage(format!(
            "the user namespace user:[{}] has no recorded state",
            ns.inode
        )));
    };
    let mut others = owned_flags(flags);
    let mut left = others.iter().fold(flags, |a, (_, f)| a & !f);
    if offsets.is_some() {
        left &= !libc::CLONE_NEWTIME;
    }
    if left != 0 {
        return Err(RestoreError::Stage(format!(
            "namespaces ({left:#x}) that a user namespace of the tree's own cannot own yet"
        )));
    }
    // The mount namespace is a copy of ckpt's (private) one, made less privileged:
    // ckpt builds the tree's mounts in it, with its own privileges (it has them in
    // every namespace the new user namespace owns).
    if mnt {
        others.push(("mnt", libc::CLONE_NEWNS));
    }
    // The cgroup namespace is rooted where the helper is when it makes it.
    if cgroups.is_some() {
        others.push(("cgroup", libc::CLONE_NEWCGROUP));
    }
    let targets = match cgroups {
        Some(dirs) => sys::cgroup::procs_targets(dirs)?,
        None => Vec::new(),
    };
    crate::error::fault_point("create the tree's user namespace")?;
    // Its owner's group: the root's at dump (its real group ID), the closest the
    // kernel shows of the creator's.
    let made = sys::userns::make(&sys::userns::UserNsSpec {
        owner_uid: u.owner_uid,
        owner_gid: ckpt.processes.first().map_or(0, |p| p.creds.gid[0]),
        uid_map: &u.uid_map,
        gid_map: &u.gid_map,
        setgroups: u.setgroups,
        others: &others,
        pid,
        cgroups: &targets,
        time: offsets,
        parent: None,
    })?;
    crate::error::fault_point("join the namespaces the tree's user namespace owns")?;
    if cgroups.is_some() {
        sys::cgroup::keep_own_ns()?;
    }
    for (flag, f) in &made.others {
        sys::userns::join(f, *flag)?;
    }
    // Last: ckpt's clocks are the tree's from here on, as its children's.
    if let Some(t) = &made.time {
        crate::error::fault_point("join the tree's time namespace")?;
        sys::userns::join(t, libc::CLONE_NEWTIME)?;
    }
    Ok((
        0,
        Some(Made {
            user: made.user,
            pid: made.pid,
        }),
    ))
}

/// Write the IPC limits `sysctls` of the IPC namespace the tree's user namespace owns
/// (the calling thread joined it, [`enter_new`]): as its root (the outside ID user 0
/// maps to, if mapped; else the kernel lets ckpt's root write them).
pub(crate) fn write_ipc_limits(
    ckpt: &Checkpoint,
    sysctls: &[(String, String)],
) -> RestoreResult<()> {
    let root = owned(ckpt)
        .and_then(|n| n.user.as_ref())
        .and_then(|u| parse_map(&u.uid_map))
        .and_then(|m| to_outside(&m, 0))
        .unwrap_or(0);
    if root == 0 {
        for (k, v) in sysctls {
            sys::ns::write_sysctl(k, v)?;
        }
        return Ok(());
    }
    Ok(sys::userns::write_sysctls_as(root, sysctls)?)
}

/// The credentials a stub has once it joined a user namespace (every capability of
/// this kernel, no securebits; its IDs unchanged, as `me` has them), and the image's
/// credentials `c`, each with its IDs as the namespace's maps show them (an ID they do
/// not map: u32::MAX, which no credential has). Plan checked that `c`'s are mapped.
pub(crate) fn inside(me: &Own, c: &Creds, u: &UserNsState) -> RestoreResult<(Own, Creds)> {
    let (Some(uids), Some(gids)) = (parse_map(&u.uid_map), parse_map(&u.gid_map)) else {
        return Err(RestoreError::Malformed(
            "the user namespace's maps do not parse".into(),
        ));
    };
    let full = match sys::userns::cap_last_cap()? {
        n if n >= 63 => u64::MAX,
        n => (1u64 << (n + 1)) - 1,
    };
    let ids = |m: &[MapLine], v: &[u32; 4]| v.map(|id| to_inside(m, id).unwrap_or(u32::MAX));
    let groups = |v: &[u32]| -> Vec<u32> {
        v.iter()
            .map(|&g| to_inside(&gids, g).unwrap_or(u32::MAX))
            .collect()
    };
    let mut own = me.clone();
    own.creds = Creds {
        uid: ids(&uids, &me.creds.uid),
        gid: ids(&gids, &me.creds.gid),
        // Given before the stub joins (see [`enter`]).
        groups: groups(&c.groups),
        cap_inh: 0,
        cap_prm: full,
        cap_eff: full,
        cap_bnd: full,
        cap_amb: 0,
        securebits: 0,
        ..me.creds.clone()
    };
    let want = Creds {
        uid: ids(&uids, &c.uid),
        gid: ids(&gids, &c.gid),
        groups: groups(&c.groups),
        ..c.clone()
    };
    Ok((own, want))
}

/// Credentials of a stub that is in the tree's user namespace, for plan's checks:
/// every capability (see [`inside`]).
pub(crate) fn own_inside(me: &Own) -> Own {
    let full = match sys::userns::cap_last_cap() {
        Ok(n) if n < 63 => (1u64 << (n + 1)) - 1,
        _ => u64::MAX,
    };
    let mut own = me.clone();
    own.creds.cap_prm = full;
    own.creds.cap_eff = full;
    own.creds.cap_bnd = full;
    own.creds.cap_inh = 0;
    own.creds.cap_amb = 0;
    own.creds.securebits = 0;
    own
}

/// In the (single-threaded) stub behind `cx`, before its credentials are set: its
/// supplementary groups `groups` (as ckpt's namespace shows them, set while it still
/// has ckpt's privileges: a namespace with setgroups denied takes none), then it joins
/// the tree's user namespace, ckpt's descriptor `userns` (taken with pidfd_getfd).
pub(crate) fn enter(
    cx: &mut crate::remote::Ctx<'_>,
    me: &Own,
    groups: &[u32],
    userns: i32,
) -> RestoreResult<()> {
    use crate::arch::native::nr;
    if groups != me.creds.groups.as_slice() {
        cx.set_groups(groups)?;
    }
    let ckpt = std::process::id() as i32;
    let fd = crate::remote::take_remote_fd(cx, ckpt, userns as u64, "take the user namespace")?;
    cx.call(
        "setns (the tree's user namespace)",
        nr::SETNS,
        [fd, libc::CLONE_NEWUSER as u64, 0, 0, 0, 0],
    )?;
    cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, child, process};

    #[test]
    fn maps_parse_and_translate() {
        let m = parse_map("         0     100000      65536\n").unwrap();
        assert_eq!(m, vec![(0, 100_000, 65_536)]);
        assert_eq!(to_inside(&m, 100_000), Some(0));
        assert_eq!(to_inside(&m, 165_535), Some(65_535));
        assert_eq!(to_inside(&m, 165_536), None);
        assert_eq!(to_inside(&m, 0), None);
        assert_eq!(to_outside(&m, 1000), Some(101_000));
        assert_eq!(to_outside(&m, 65_536), None);
        let two = parse_map("0 0 1\n1 200000 1000\n").unwrap();
        assert_eq!(to_inside(&two, 0), Some(0));
        assert_eq!(to_inside(&two, 200_999), Some(1000));
        assert_eq!(parse_map(""), Some(Vec::new()));
        // Not a map the kernel takes back.
        for bad in [
            "0 0\n",
            "0 0 0\n",
            "a 0 1\n",
            "0 4294967295 2\n",
            "0 0 10\n5 100 1\n",
            "0 0 10\n100 5 1\n",
        ] {
            assert_eq!(parse_map(bad), None, "{bad:?}");
        }
        let many: String = (0..341).map(|i| format!("{i} {i} 1\n")).collect();
        assert_eq!(parse_map(&many), None);
    }

    fn image() -> Checkpoint {
        let mut r = process(10);
        let mut c = child(11, 10, 10, 10);
        for p in [&mut r, &mut c] {
            p.namespaces = vec![("user".into(), 7), ("uts".into(), 8)];
            p.creds.uid = [100_000; 4];
            p.creds.gid = [100_000; 4];
        }
        let mut ck = checkpoint(vec![r, c]);
        ck.namespaces = vec![
            Namespace {
                kind: "user".into(),
                inode: 7,
                user: Some(UserNsState {
                    uid_map: "0 100000 65536\n".into(),
                    gid_map: "0 100000 65536\n".into(),
                    setgroups: true,
                    owner_uid: 0,
                    parent: 0,
                }),
                ..Default::default()
            },
            Namespace {
                kind: "uts".into(),
                inode: 8,
                uts: Some(crate::model::UtsNames::default()),
                ..Default::default()
            },
        ];
        ck
    }

    fn problems(ck: &Checkpoint) -> Vec<String> {
        let mut v = Vec::new();
        check(ck, &mut v);
        crate::kinds::ns::check_namespaces(ck, &mut v);
        v.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn a_user_namespace_with_a_uts_one_passes() {
        assert_eq!(problems(&image()), Vec::<String>::new());
        assert!(owned(&image()).is_some());
        assert!(owned(&checkpoint(vec![process(3)])).is_none());
    }

    #[test]
    fn pid_and_mount_namespaces_and_threads_pass_with_a_pid_namespace() {
        let mut ck = image();
        ck.own_pid_namespace = true;
        for p in &mut ck.processes {
            p.namespaces.push(("mnt".into(), 12));
        }
        ck.namespaces.push(Namespace {
            kind: "mnt".into(),
            inode: 12,
            ..Default::default()
        });
        let t = ck.processes[0].threads[0].clone();
        ck.processes[0].threads.push(t);
        let mut v = Vec::new();
        check(&ck, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn cgroup_and_time_namespaces_of_the_tree_pass_with_a_user_namespace() {
        let mut ck = image();
        for p in &mut ck.processes {
            p.namespaces.push(("time".into(), 9));
            p.namespaces.push(("cgroup".into(), 13));
        }
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: 9,
            time: Some(crate::model::TimeClocks::default()),
            ..Default::default()
        });
        ck.namespaces.push(Namespace {
            kind: "cgroup".into(),
            inode: 13,
            cgroup: Some(crate::model::CgroupNsRoots::default()),
            ..Default::default()
        });
        let mut v = Vec::new();
        check(&ck, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn what_a_user_namespace_cannot_come_back_with_is_refused() {
        let mut ck = image();
        ck.processes[1].creds.uid[2] = 5;
        let p = problems(&ck);
        assert!(
            p[0].contains("process 11") && p[0].contains("user ID 5"),
            "{p:?}"
        );
        // Threads in ckpt's PID namespace pass (their IDs set from outside); with IDs
        // in a nested PID namespace too, refused.
        let mut ck = image();
        let t = ck.processes[0].threads[0].clone();
        ck.processes[0].threads.push(t);
        assert_eq!(problems(&ck), Vec::<String>::new());
        ck.processes[0].threads[1].nstid = vec![2];
        let p = problems(&ck);
        assert!(
            p[0].contains("2 threads") && p[0].contains("nested in ckpt's"),
            "{p:?}"
        );
        // A time namespace the root made for its child in it passes: the root's stub
        // makes it once it joined the user namespace.
        let mut ck = image();
        ck.processes[1].namespaces.push(("time".into(), 9));
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: 9,
            time: Some(crate::model::TimeClocks::default()),
            ..Default::default()
        });
        assert_eq!(problems(&ck), Vec::<String>::new());
        let maker = crate::kinds::ns::time_maker_in_userns(&ck, 9).map(|p| p.pid);
        assert_eq!(maker, Some(10));
        let made = crate::kinds::ns::time_made_in_userns(&ck, &ck.processes[0]);
        assert_eq!(made.map(|n| n.inode), Some(9));
        assert!(crate::kinds::ns::time_made_in_userns(&ck, &ck.processes[1]).is_none());
        // Not with a PID namespace of the tree's own.
        ck.own_pid_namespace = true;
        let p = problems(&ck);
        assert!(
            p.iter()
                .any(|m| m.contains("time:[9]") && m.contains("PID namespace of its own")),
            "{p:?}"
        );
        // Another kind of namespace a process below the root made.
        let mut ck = image();
        ck.processes[1].namespaces.push(("mnt".into(), 9));
        ck.namespaces.push(Namespace {
            kind: "mnt".into(),
            inode: 9,
            ..Default::default()
        });
        let p = problems(&ck);
        assert!(
            p.iter()
                .any(|m| m.contains("below its root made a mnt namespace")),
            "{p:?}"
        );
        let mut ck = image();
        ck.namespaces[0].user.as_mut().unwrap().uid_map = "0 0\n".into();
        let p = problems(&ck);
        assert!(
            p.len() == 1 && p[0].contains("user namespace of the tree's own (user:[7])"),
            "{p:?}"
        );
    }

    #[test]
    fn credentials_inside_are_translated() {
        let ck = image();
        let u = ck.namespaces[0].user.clone().unwrap();
        let mut me = Own::default();
        me.creds.groups = vec![0];
        let mut c = ck.processes[0].creds.clone();
        c.groups = vec![100_005, 7];
        c.cap_eff = 1;
        let (own, want) = inside(&me, &c, &u).unwrap();
        assert_eq!(want.uid, [0; 4]);
        assert_eq!(want.groups, vec![5, u32::MAX]);
        assert_eq!(want.cap_eff, 1);
        // ckpt's user ID 0 is not mapped here: it differs from every image's.
        assert_eq!(own.creds.uid, [u32::MAX; 4]);
        assert_eq!(own.creds.groups, want.groups);
        assert!(own.creds.cap_eff & 1 << 21 != 0 && own.creds.securebits == 0);
    }

    #[test]
    fn maps_are_translated_into_a_parent_namespace() {
        let parent = parse_map("0 100000 1000\n1000 300000 1000\n").unwrap();
        assert_eq!(
            translate_map("0 100000 1\n", &parent).as_deref(),
            Some("0 0 1\n")
        );
        // A range the parent maps only in part.
        assert_eq!(
            translate_map("5 100990 20\n", &parent),
            None,
            "100990-101009: the parent maps only up to 100999"
        );
        let two = parse_map("0 100000 10\n10 200000 10\n").unwrap();
        assert_eq!(
            translate_map("0 100005 5\n5 200000 3\n", &two).as_deref(),
            Some("0 5 5\n5 10 3\n")
        );
        let adjacent = parse_map("0 100000 10\n10 100010 10\n").unwrap();
        assert_eq!(
            translate_map("0 100008 4\n", &adjacent).as_deref(),
            Some("0 8 2\n2 10 2\n")
        );
        assert_eq!(translate_map("0 5 1\n", &parent), None);
        assert_eq!(translate_map("", &parent).as_deref(), Some(""));
    }

    /// A tree whose root is in the user namespace of its own 7 (root 0 is 100000
    /// outside) and whose child 11 made user namespace 20 nested in it (root inside is
    /// 100000 outside) and UTS namespace 21 in that, and a grandchild 12 in both.
    fn nested_image() -> Checkpoint {
        let mut ck = image();
        let mut g = child(12, 11, 10, 10);
        g.creds.uid = [100_000; 4];
        g.creds.gid = [100_000; 4];
        ck.processes.push(g);
        for p in &mut ck.processes[1..] {
            p.namespaces = vec![("user".into(), 20), ("uts".into(), 21)];
        }
        ck.namespaces.push(Namespace {
            kind: "user".into(),
            inode: 20,
            user: Some(UserNsState {
                uid_map: "0 100000 1\n".into(),
                gid_map: "0 100000 1\n".into(),
                setgroups: false,
                owner_uid: 100_000,
                parent: 7,
            }),
            ..Default::default()
        });
        ck.namespaces.push(Namespace {
            kind: "uts".into(),
            inode: 21,
            uts: Some(crate::model::UtsNames::default()),
            ..Default::default()
        });
        ck
    }

    #[test]
    fn a_user_namespace_nested_below_the_root_passes() {
        let ck = nested_image();
        assert_eq!(problems(&ck), Vec::<String>::new());
        let b: Vec<u64> = below(&ck).iter().map(|n| n.inode).collect();
        assert_eq!(b, vec![20]);
        assert_eq!(creator(&ck, "user", 20).map(|p| p.pid), Some(11));
        assert_eq!(of_process(&ck, &ck.processes[2]).map(|n| n.inode), Some(20));
        assert_eq!(of_process(&ck, &ck.processes[0]).map(|n| n.inode), Some(7));
        // Made from the root's namespace: its maps and creator as that one shows them.
        let spec = below_spec(&ck, &ck.namespaces[2]).unwrap();
        assert_eq!(spec, ("0 0 1\n".into(), "0 0 1\n".into(), 0, 0));
        assert_eq!(made_below_in_own_user(&ck).len(), 2);
        // Another child of the root that entered it with setns (in the root's UTS
        // namespace): it joins it at restore like the others.
        let mut ck = nested_image();
        let mut d = child(13, 10, 10, 10);
        d.creds.uid = [100_000; 4];
        d.creds.gid = [100_000; 4];
        d.namespaces = vec![("user".into(), 20), ("uts".into(), 8)];
        ck.processes.push(d);
        assert_eq!(problems(&ck), Vec::<String>::new());
        assert_eq!(creator(&ck, "user", 20).map(|p| p.pid), Some(11));
    }

    #[test]
    fn cgroup_and_time_namespaces_in_a_nested_user_namespace_pass() {
        // The child made cgroup namespace 22 in user namespace 20, shared with the
        // grandchild: made beforehand in that one, like its UTS namespace.
        let mut ck = nested_image();
        ck.processes[0].namespaces.push(("cgroup".into(), 5));
        for p in &mut ck.processes[1..] {
            p.namespaces.push(("cgroup".into(), 22));
        }
        ck.namespaces.push(Namespace {
            kind: "cgroup".into(),
            inode: 5,
            external: true,
            ..Default::default()
        });
        ck.namespaces.push(Namespace {
            kind: "cgroup".into(),
            inode: 22,
            cgroup: Some(crate::model::CgroupNsRoots::default()),
            ..Default::default()
        });
        assert_eq!(problems(&ck), Vec::<String>::new());
        assert!(
            made_below_in_own_user(&ck)
                .iter()
                .any(|n| n.kind == "cgroup" && n.inode == 22)
        );
        // The child made time namespace 23 for its child there: its stub makes it.
        let mut ck = nested_image();
        for (i, p) in ck.processes.iter_mut().enumerate() {
            p.namespaces
                .push(("time".into(), if i == 2 { 23 } else { 6 }));
        }
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: 6,
            external: true,
            ..Default::default()
        });
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: 23,
            time: Some(crate::model::TimeClocks::default()),
            ..Default::default()
        });
        assert_eq!(problems(&ck), Vec::<String>::new());
        let maker = crate::kinds::ns::time_maker_in_userns(&ck, 23).map(|p| p.pid);
        assert_eq!(maker, Some(11));
        // (Not one the root's user namespace's helper makes, nor an external one.)
        assert!(crate::kinds::ns::time_maker_in_userns(&ck, 6).is_none());
        let made = crate::kinds::ns::time_made_in_userns(&ck, &ck.processes[1]);
        assert_eq!(made.map(|n| n.inode), Some(23));
    }

    #[test]
    fn what_a_nested_user_namespace_cannot_come_back_with_is_refused() {
        // A map its parent does not map.
        let mut ck = nested_image();
        ck.namespaces[2].user.as_mut().unwrap().uid_map = "0 900000 1\n".into();
        let p = problems(&ck);
        assert!(
            p.iter()
                .any(|m| m.contains("user:[20]") && m.contains("does not map")),
            "{p:?}"
        );
        // A multi-threaded process in it passes; with its threads' IDs at two levels,
        // refused.
        let mut ck = nested_image();
        let t = ck.processes[2].threads[0].clone();
        ck.processes[2].threads.push(t);
        assert_eq!(problems(&ck), Vec::<String>::new());
        ck.processes[2].threads[1].nstid = vec![3];
        let p = problems(&ck);
        assert!(
            p.iter()
                .any(|m| m.contains("process 12") && m.contains("2 threads")),
            "{p:?}"
        );
        // With a PID namespace of the tree's own.
        let mut ck = nested_image();
        ck.own_pid_namespace = true;
        let p = problems(&ck);
        assert!(
            p.iter()
                .any(|m| m.contains("user:[20]") && m.contains("PID namespace of its own")),
            "{p:?}"
        );
        // Nested in each other: no kernel makes that.
        let mut ck = nested_image();
        let mut other = ck.namespaces[2].clone();
        other.inode = 30;
        other.user.as_mut().unwrap().parent = 20;
        ck.namespaces[2].user.as_mut().unwrap().parent = 30;
        ck.namespaces.push(other);
        ck.processes[2].namespaces[0].1 = 30;
        assert!(below(&ck).is_empty());
        let p = problems(&ck);
        assert!(p.iter().any(|m| m.contains("cycle")), "{p:?}");
    }
}
