//! Namespaces processes below the tree's root made in a user namespace: the user
//! namespaces themselves, and the others made in one (see `kinds::userns`).
//!
//! **Below the root** (a rootless container running a sandbox, `unshare -U -r` in a
//! child): a user namespace a process below the tree's root made, nested in ckpt's, in
//! the tree's own or in another such one (`UserNsState::parent`), is recorded the same
//! way, and so are UTS, IPC and network namespaces a process made in one (owned by it: dump checks
//! that a namespace a process made below the root is owned by the user namespace that
//! process is in). Restore makes them before the stubs ([`make_below`]), parents first:
//! a helper joins the parent (ckpt's needs no join), takes the creator's IDs as the
//! parent shows them and unshares CLONE_NEWUSER; the kernel takes a map only from a
//! process in the namespace's parent, so for a nested one a second helper that joined
//! the parent writes setgroups and the maps, their outside IDs translated through the
//! parent's maps ([`translate_map`]). A UTS, IPC or network namespace made in one is
//! made by a helper that joined it (`sys::userns::make_owned`, a UTS one named there)
//! and given its state by a thread of ckpt that joins it ([`set_state`]: the
//! network's loopback, the IPC limits). The stub of the process that made it joins
//! that namespace right after its fork, before its children
//! are forked (`kinds::ns::enter_child_namespaces`), and every process of a user
//! namespace joins its own at the credentials step, as for the tree's own (so one
//! that entered it with setns comes back in it too).

use super::{MAX_MAP_LINES, MapLine, all_own, of_process, owned, parse_map, to_inside};
use crate::error::{Problem, RestoreError, RestoreResult};
use crate::kinds::check::p;
use crate::model::{Checkpoint, Namespace, Process, UserNsState};
use crate::sys;

// ---- checks (plan) ----

/// The user namespace of the tree's own that `u` is nested in (else it is nested in
/// ckpt's).
fn parent_of<'a>(ckpt: &'a Checkpoint, u: &UserNsState) -> Option<&'a Namespace> {
    all_own(ckpt).find(|n| n.inode == u.parent && u.parent != 0)
}

/// The user namespaces processes below the root made, each after the one it is nested
/// in (one nested in another in a cycle, which no kernel makes, is left out: plan
/// refuses it).
pub(crate) fn below(ckpt: &Checkpoint) -> Vec<&Namespace> {
    let root = owned(ckpt).map(|n| n.inode);
    let mut left: Vec<&Namespace> = all_own(ckpt).filter(|n| Some(n.inode) != root).collect();
    let mut out: Vec<&Namespace> = Vec::new();
    loop {
        let (ready, rest): (Vec<&Namespace>, Vec<&Namespace>) = left.into_iter().partition(|n| {
            n.user.as_ref().is_some_and(|u| match parent_of(ckpt, u) {
                None => true,
                Some(p) => Some(p.inode) == root || out.iter().any(|o| o.inode == p.inode),
            })
        });
        left = rest;
        if ready.is_empty() {
            return out;
        }
        out.extend(ready);
    }
}

/// The namespaces processes below the root made in a user namespace of the tree's
/// (which [`make_below`] makes): user namespaces, and the others whose maker is in one.
pub(super) fn made_below_in_own_user(ckpt: &Checkpoint) -> Vec<&Namespace> {
    let root = ckpt.processes.first();
    ckpt.namespaces
        .iter()
        .filter(|n| !n.external && crate::kinds::ns::IN_TREE_USER.contains(&n.kind.as_str()))
        .filter(|n| !root.is_some_and(|r| r.namespaces.contains(&(n.kind.clone(), n.inode))))
        .filter(|n| {
            n.kind == "user"
                || creator(ckpt, &n.kind, n.inode).is_some_and(|c| of_process(ckpt, c).is_some())
        })
        .collect()
}

/// The process of the image that made namespace `kind:[inode]` below the root: the
/// first in it whose parent is not in it.
pub(crate) fn creator<'a>(ckpt: &'a Checkpoint, kind: &str, inode: u64) -> Option<&'a Process> {
    let in_it = |p: &Process| p.namespaces.iter().any(|(k, i)| k == kind && *i == inode);
    ckpt.processes
        .iter()
        .skip(1)
        .find(|p| in_it(p) && !ckpt.processes.iter().any(|q| q.pid == p.ppid && in_it(q)))
}

/// The map `text` (outside IDs as ckpt's user namespace shows them) with its outside
/// IDs as the user namespace of map `parent` (also as ckpt's shows it) shows them:
/// what a process in that namespace writes. `None` if the parent does not map them
/// all, or the result would have more lines than the kernel takes.
pub(crate) fn translate_map(text: &str, parent: &[MapLine]) -> Option<String> {
    let mut out = String::new();
    let mut lines = 0;
    for (inside, outside, count) in parse_map(text)? {
        let (mut ins, mut cur, mut rem) = (inside as u64, outside as u64, count as u64);
        while rem > 0 {
            let &(pi, po, pn) = parent
                .iter()
                .find(|&&(_, po, pn)| cur >= po as u64 && cur - (po as u64) < pn as u64)?;
            let k = rem.min(po as u64 + pn as u64 - cur);
            out.push_str(&format!("{ins} {} {k}\n", pi as u64 + (cur - po as u64)));
            lines += 1;
            ins += k;
            cur += k;
            rem -= k;
        }
    }
    (lines <= MAX_MAP_LINES).then_some(out)
}

/// What a user namespace made below the tree's root is made with: its maps, its
/// creator's user and group IDs, as its parent shows them (ckpt's, or one of the
/// tree's: translated through that one's maps). `None` when the parent does not map
/// them (plan refuses that).
pub(crate) fn below_spec(ckpt: &Checkpoint, ns: &Namespace) -> Option<(String, String, u32, u32)> {
    let u = ns.user.as_ref()?;
    let gid = creator(ckpt, "user", ns.inode)?.creds.gid[0];
    match parent_of(ckpt, u).and_then(|p| p.user.as_ref()) {
        None => Some((u.uid_map.clone(), u.gid_map.clone(), u.owner_uid, gid)),
        Some(pu) => {
            let (pu_map, pg_map) = (parse_map(&pu.uid_map)?, parse_map(&pu.gid_map)?);
            Some((
                translate_map(&u.uid_map, &pu_map)?,
                translate_map(&u.gid_map, &pg_map)?,
                to_inside(&pu_map, u.owner_uid)?,
                to_inside(&pg_map, gid)?,
            ))
        }
    }
}

/// A user namespace a process below the root made (`ns`): its maps and creator fit
/// its parent's, and its multi-threaded processes have their threads' IDs at one
/// level (ckpt's PID namespace: set from outside once the process joined it, before
/// its threads are made, `restore::stage`).
pub(super) fn check_below(ckpt: &Checkpoint, ns: &Namespace, problems: &mut Vec<Problem>) {
    let this = format!(
        "user namespace user:[{}] that a process below the tree's root made",
        ns.inode
    );
    if creator(ckpt, "user", ns.inode).is_none() {
        // (check_namespaces says no process of the tree made it.)
        return;
    }
    if below_spec(ckpt, ns).is_none() {
        p(
            problems,
            "namespace",
            format!(
                "the {this} maps IDs, or was made by a user or group, that the user \
                 namespace it is nested in does not map; it cannot be made there again"
            ),
        );
    }
    for proc_ in ckpt.processes.iter().filter(|p| !p.is_zombie()) {
        if proc_.threads.len() > 1
            && proc_.threads.iter().any(|t| !t.nstid.is_empty())
            && of_process(ckpt, proc_).is_some_and(|n| n.inode == ns.inode)
        {
            p(
                problems,
                "namespace",
                format!(
                    "process {} ({}) has {} threads and is in the {this} and in a PID \
                     namespace nested in ckpt's: its threads would have to be made inside \
                     the user namespace with their IDs at more than one level, which \
                     needs privileges there that it does not have",
                    proc_.pid,
                    String::from_utf8_lossy(&proc_.comm),
                    proc_.threads.len()
                ),
            );
        }
    }
}

// ---- restore (stage) ----

/// The namespaces made below the tree's root that [`make_below`] made before the
/// stubs: each held by a descriptor of its namespace file.
#[derive(Debug, Default)]
pub(crate) struct Below {
    /// The user namespaces processes below the root made, by their inode at dump:
    /// each of their processes joins its own at the credentials step.
    pub(crate) users: std::collections::BTreeMap<u64, std::os::fd::OwnedFd>,
    /// The namespaces of other kinds ([`crate::kinds::ns::IN_TREE_USER`]) a process below
    /// the root made in a user namespace of the tree's, owned by that one, by (kind,
    /// inode at dump): the stub of the process that made it joins it right after it
    /// is forked (`kinds::ns::enter_child_namespaces`).
    pub(crate) others: std::collections::BTreeMap<(String, u64), std::os::fd::OwnedFd>,
    /// The time namespaces processes made for their children in a user namespace of
    /// the tree's, by their inode at dump: not made here but by the maker's stub, once
    /// it joined that user namespace (`kinds::ns::make_time_in_userns`), then joined
    /// by the processes in them (`kinds::ns::enter_time_made_in_userns`).
    pub(crate) times: std::collections::BTreeMap<u64, std::os::fd::OwnedFd>,
}

/// Make the namespaces processes below the tree's root made in a user namespace of
/// the tree's (`tree_user`: ckpt's descriptor of the tree's own user namespace, made
/// already, if it has one): each user namespace nested in its parent (ckpt's, the
/// tree's own or another made here first) with its maps and creator
/// (`sys::userns::make` with that parent), then each other namespace a process made
/// in one of them, owned by it (`sys::userns::make_owned`, a UTS namespace named).
/// They last as long as the returned descriptors and the processes that join them.
pub(crate) fn make_below(
    ckpt: &Checkpoint,
    tree_user: Option<&std::os::fd::OwnedFd>,
    cgroup_root: Option<&str>,
    made_cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> RestoreResult<Below> {
    let mut out = Below::default();
    let root_user = owned(ckpt).map(|n| n.inode);
    for ns in below(ckpt) {
        let (Some(u), Some((uid_map, gid_map, owner_uid, owner_gid))) =
            (ns.user.as_ref(), below_spec(ckpt, ns))
        else {
            return Err(RestoreError::Stage(format!(
                "the user namespace user:[{}] cannot be made in its parent",
                ns.inode
            )));
        };
        crate::error::fault_point("create a user namespace below the tree's root")?;
        let parent =
            match parent_of(ckpt, u) {
                Some(pn) if Some(pn.inode) == root_user => Some(tree_user.ok_or_else(|| {
                    RestoreError::Stage("the tree's user namespace was not made".into())
                })?),
                Some(pn) => Some(out.users.get(&pn.inode).ok_or_else(|| {
                    RestoreError::Stage(format!("user:[{}] was not made", pn.inode))
                })?),
                None => None,
            };
        let made = sys::userns::make(&sys::userns::UserNsSpec {
            owner_uid,
            owner_gid,
            uid_map: &uid_map,
            gid_map: &gid_map,
            setgroups: u.setgroups,
            others: &[],
            pid: false,
            cgroups: &[],
            time: None,
            parent,
        })?;
        out.users.insert(ns.inode, made.user);
    }
    for ns in ckpt.namespaces.iter().filter(|n| {
        !n.external && n.kind != "user" && crate::kinds::ns::IN_TREE_USER.contains(&n.kind.as_str())
    }) {
        let Some(maker) = creator(ckpt, &ns.kind, ns.inode) else {
            continue;
        };
        let Some(user) = of_process(ckpt, maker) else {
            // (Made in ckpt's user namespace: the stub unshares it.)
            continue;
        };
        let Some(flag) = sys::ns::clone_flag(&ns.kind) else {
            continue;
        };
        crate::error::fault_point("create a namespace in a user namespace below the root")?;
        let names = ns
            .uts
            .as_ref()
            .map(|u| (u.hostname.as_slice(), u.domainname.as_slice()));
        // A cgroup namespace is rooted where its maker is when it makes it: the
        // helper moves into its root cgroups first (made when missing; `dirs` holds
        // their hierarchies' descriptors open until then).
        let dirs = match &ns.cgroup {
            Some(c) => crate::kinds::cgroup::namespace_roots(&c.roots, cgroup_root, made_cgroups)?,
            None => Vec::new(),
        };
        let targets = sys::cgroup::procs_targets(&dirs)?;
        let kinds = [(ns.kind.as_str(), flag)];
        let made = match out.users.get(&user.inode) {
            Some(f) => sys::userns::make_owned(f, &kinds, names, &targets)?,
            None => match tree_user {
                Some(f) if Some(user.inode) == root_user => {
                    sys::userns::make_owned(f, &kinds, names, &targets)?
                }
                _ => {
                    return Err(RestoreError::Stage(format!(
                        "the user namespace user:[{}] that owns {}:[{}] was not made",
                        user.inode, ns.kind, ns.inode
                    )));
                }
            },
        };
        for (_, f) in made {
            set_state(ns, user, &f, flag)?;
            out.others.insert((ns.kind.clone(), ns.inode), f);
        }
    }
    Ok(out)
}

/// Give namespace `ns` (made anew, `fd`, of CLONE_NEW* kind `flag`, owned by the user
/// namespace `user` of the tree's; nothing is in it yet) its dumped state, from a thread
/// of ckpt that joins it: a network namespace's loopback and settings
/// (`kinds::ns::set_up_net`), an IPC namespace's limits, which only the namespace's
/// root may write (as its effective user ID, the outside ID `user` maps 0 to: else
/// ckpt's own). (Its System V objects and queues are made once its maker's stub is in
/// it, `kinds::ipc::create_below_root`; a UTS namespace was named by its maker.)
fn set_state(
    ns: &Namespace,
    user: &Namespace,
    fd: &std::os::fd::OwnedFd,
    flag: libc::c_int,
) -> RestoreResult<()> {
    if ns.net.is_none() && ns.ipc.is_none() {
        return Ok(());
    }
    let file =
        std::fs::File::from(fd.try_clone().map_err(|e| {
            RestoreError::Stage(format!("duplicate a namespace's descriptor: {e}"))
        })?);
    let root = user
        .user
        .as_ref()
        .and_then(|u| parse_map(&u.uid_map))
        .and_then(|m| super::to_outside(&m, 0))
        .unwrap_or(0);
    let what = format!("{}:[{}], made again", ns.kind, ns.inode);
    std::thread::scope(|s| {
        s.spawn(|| -> RestoreResult<()> {
            sys::ns::join_file(&file, flag, &what)?;
            if let Some(n) = &ns.net {
                crate::kinds::ns::set_up_net(n)?;
            }
            if let Some(l) = &ns.ipc {
                if root == 0 {
                    for (k, v) in &l.values {
                        sys::ns::write_sysctl(k, v)?;
                    }
                } else {
                    sys::userns::write_sysctls_as(root, &l.values)?;
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| RestoreError::Stage(format!("the thread setting up {what} panicked")))?
    })
}
