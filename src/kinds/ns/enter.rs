//! Restore (stage): join the namespaces made outside the tree, make the tree's own anew
//! (UTS names, IPC limits, time offsets, cgroup roots, network) before its first
//! process starts, and those a process below the root made, in its stub.

use super::net::{own_net_state, set_up_net};
use super::{MIXABLE, any_owned, owned, title};
use crate::model::Checkpoint;
use crate::sys;

// ---- restore (stage) ----

/// In the stub of process `p` (just forked from its parent `parent`, before its own
/// children are), make the namespaces it made below the tree's root: those `below`
/// holds (made beforehand, owned by a user namespace of the tree's) it joins (its
/// descriptor taken from ckpt, injected `setns`); the others by an injected `unshare`
/// (a cgroup namespace once ckpt moved the stub into its root cgroups, below
/// `cgroups.0` if given, made when missing into `cgroups.1`), then their state set
/// from a thread of ckpt that joins them (UTS names, IPC limits, the network's
/// loopback). (A user namespace it made it joins at the credentials step,
/// `restore::stage`; a time namespace its parent made for it is made in the parent,
/// [`make_time_for_children`].)
pub(crate) fn enter_child_namespaces(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    parent: &crate::model::Process,
    below: &crate::kinds::userns::Below,
    cgroups: (Option<&str>, &mut crate::kinds::cgroup::MadeCgroups),
) -> crate::error::RestoreResult<()> {
    use std::os::fd::AsRawFd;
    let p = cx.proc_;
    let (cgroup_root, made_cgroups) = cgroups;
    enter_below_mnt(cx, ckpt, parent, cgroup_root, made_cgroups)?;
    let mut flags = 0;
    let mut made = Vec::new();
    for (kind, inode) in &p.namespaces {
        if parent.namespaces.contains(&(kind.clone(), *inode))
            || !MIXABLE.contains(&kind.as_str())
            || kind == "user"
            || kind == "time"
            || kind == "mnt"
        {
            continue;
        }
        let Some(ns) = ckpt
            .namespaces
            .iter()
            .find(|n| n.kind == *kind && n.inode == *inode && !n.external)
        else {
            continue;
        };
        let flag = sys::ns::clone_flag(kind).unwrap_or(0);
        if let Some(f) = below.others.get(&(kind.clone(), *inode)) {
            let ckpt_pid = std::process::id() as i32;
            let fd = crate::remote::take_remote_fd(
                cx,
                ckpt_pid,
                f.as_raw_fd() as u64,
                "take a namespace made below the root",
            )?;
            cx.call(
                "setns (a namespace a process made in a user namespace)",
                crate::arch::native::nr::SETNS,
                [fd, flag as u64, 0, 0, 0, 0],
            )?;
            cx.call("close", crate::arch::native::nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
            continue;
        }
        flags |= flag;
        made.push(ns);
    }
    if flags == 0 {
        return Ok(());
    }
    crate::error::fault_point("make a namespace a process below the root made")?;
    // A cgroup namespace is rooted where its maker is when it makes it.
    for c in made.iter().filter_map(|n| n.cgroup.as_ref()) {
        for d in crate::kinds::cgroup::namespace_roots(&c.roots, cgroup_root, made_cgroups)? {
            sys::cgroup::move_into(&d, p.pid)?;
        }
    }
    cx.call(
        "unshare (a namespace a process made)",
        crate::arch::native::nr::UNSHARE,
        [flags as u64, 0, 0, 0, 0, 0],
    )?;
    for ns in made {
        if let Some(u) = &ns.uts {
            let (h, d) = (u.hostname.clone(), u.domainname.clone());
            sys::ns::inside(p.pid, &["uts"], move || sys::ns::set_uts_names(&h, &d))?;
        }
        if let Some(l) = &ns.ipc {
            sys::ns::inside(p.pid, &["ipc"], || {
                for (k, v) in &l.values {
                    sys::ns::write_sysctl(k, v)?;
                }
                Ok(())
            })?;
        }
        if let Some(n) = &ns.net {
            sys::ns::inside(p.pid, &["net"], || Ok(set_up_net(n)))??;
        }
    }
    Ok(())
}

/// In the stub of process `cx.proc_` (just forked from `parent`): if it made a mount
/// namespace (below the tree's root), build it on a thread of ckpt's
/// (`kinds::mnt::make_below`, its cgroup mounts' cgroups made into `made_cgroups`,
/// below `cgroup_root`) and join it there (its descriptor taken from ckpt, injected
/// `setns`): its root and working directory are the namespace's root until
/// `attrs::set_cwd_root` looks its own up there; its children are forked in it.
fn enter_below_mnt(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    parent: &crate::model::Process,
    cgroup_root: Option<&str>,
    made_cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> crate::error::RestoreResult<()> {
    use std::os::fd::AsRawFd;
    let mine = super::inode_of(cx.proc_, "mnt");
    if mine.is_none() || mine == super::inode_of(parent, "mnt") {
        return Ok(());
    }
    let Some(tree) = ckpt
        .namespaces
        .iter()
        .find(|n| n.kind == "mnt" && Some(n.inode) == mine && !n.external)
        .and_then(|n| n.mounts.as_ref())
    else {
        return Ok(());
    };
    // Two deep: the parent's namespace (made below the root too, which its stub,
    // forked with the parent's PID, is in by now) is the one it is copied from.
    let root_mnt = ckpt
        .processes
        .first()
        .and_then(|r| super::inode_of(r, "mnt"));
    let parents = super::inode_of(parent, "mnt");
    let base = match parents != root_mnt {
        true => ckpt
            .namespaces
            .iter()
            .find(|n| n.kind == "mnt" && Some(n.inode) == parents && !n.external)
            .and_then(|n| n.mounts.as_ref())
            .map(|t| (parent.pid, t)),
        false => None,
    };
    let ns = crate::kinds::mnt::make_below(ckpt, tree, base, cgroup_root, made_cgroups)?;
    // (Made, its peer groups joined: a failure now drops it.)
    crate::error::fault_point("join a mount namespace a process below the root made")?;
    let fd = crate::remote::take_remote_fd(
        cx,
        std::process::id() as i32,
        ns.as_raw_fd() as u64,
        "take a mount namespace made below the root",
    )?;
    cx.call(
        "setns (a mount namespace a process below the root made)",
        crate::arch::native::nr::SETNS,
        [fd, libc::CLONE_NEWNS as u64, 0, 0, 0, 0],
    )?;
    cx.call("close", crate::arch::native::nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    Ok(())
}

/// In the stub of process `cx.proc_`, before it forks its child `child`: if that
/// child is in a time namespace its parent made for its children (not the parent's
/// own) and the stub has not made it yet (`made`), make it (an injected
/// `unshare(CLONE_NEWTIME)`) with offsets for which its clocks continue from the
/// values dumped (ckpt writes them before any process is in it). Every child forked
/// afterwards is in it (plan checked that those forked before are not).
pub(crate) fn make_time_for_children(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    child: &crate::model::Process,
    made: &mut bool,
) -> crate::error::RestoreResult<()> {
    let (Some(mine), Some(theirs)) = (
        super::inode_of(cx.proc_, "time"),
        super::inode_of(child, "time"),
    ) else {
        return Ok(());
    };
    // (One its parent made in a user namespace of the tree's is made later, by the
    // parent's stub once it joined that namespace: [`make_time_in_userns`].)
    if *made || mine == theirs || time_maker_in_userns(ckpt, theirs).is_some() {
        return Ok(());
    }
    let Some(t) = ckpt
        .namespaces
        .iter()
        .find(|n| n.kind == "time" && n.inode == theirs && !n.external)
        .and_then(|n| n.time)
    else {
        return Err(crate::error::RestoreError::Malformed(format!(
            "process {} is in time:[{theirs}], which the image does not describe",
            child.pid
        )));
    };
    crate::error::fault_point("make a time namespace a process made for its children")?;
    cx.call(
        "unshare (a time namespace for its children)",
        crate::arch::native::nr::UNSHARE,
        [libc::CLONE_NEWTIME as u64, 0, 0, 0, 0, 0],
    )?;
    *made = true;
    let now = sys::ns::host_clocks()?;
    sys::ns::write_timens_offsets(
        cx.proc_.pid,
        t.monotonic_ns.saturating_sub(now.0),
        t.boottime_ns.saturating_sub(now.1),
    )?;
    Ok(())
}

/// The process of the image that made time namespace `inode` for its children while
/// it was in a user namespace of the tree's (which owns it), if that is how it was
/// made (not the root's, nor ckpt's): the parent of the first process in it whose
/// parent is not.
pub(crate) fn time_maker_in_userns(
    ckpt: &Checkpoint,
    inode: u64,
) -> Option<&crate::model::Process> {
    let root = ckpt.processes.first()?;
    if super::inode_of(root, "time") == Some(inode)
        || !ckpt
            .namespaces
            .iter()
            .any(|n| n.kind == "time" && n.inode == inode && !n.external)
    {
        return None;
    }
    let first = crate::kinds::userns::creator(ckpt, "time", inode)?;
    let maker = ckpt.processes.iter().find(|q| q.pid == first.ppid)?;
    crate::kinds::userns::of_process(ckpt, maker).map(|_| maker)
}

/// The time namespace process `p` made for its children while in a user namespace of
/// the tree's ([`time_maker_in_userns`]), if it did.
pub(crate) fn time_made_in_userns<'a>(
    ckpt: &'a Checkpoint,
    p: &crate::model::Process,
) -> Option<&'a crate::model::Namespace> {
    let mine = super::inode_of(p, "time");
    ckpt.processes
        .iter()
        .filter(|k| k.ppid == p.pid && !k.is_zombie())
        .filter_map(|k| super::inode_of(k, "time"))
        .filter(|&t| Some(t) != mine)
        .find(|&t| time_maker_in_userns(ckpt, t).is_some_and(|m| m.pid == p.pid))
        .and_then(|t| {
            ckpt.namespaces
                .iter()
                .find(|n| n.kind == "time" && n.inode == t && !n.external)
        })
}

/// In the stub of process `cx.proc_`, once it joined its user namespace (of the
/// tree's) and before its threads are made: if it made a time namespace for its
/// children there ([`time_made_in_userns`]), make it again the same way (an injected
/// `unshare(CLONE_NEWTIME)`: owned by that user namespace, for its children only, the
/// stub staying in its own), with offsets for which its clocks continue from the
/// values dumped (ckpt writes them before anything is in it), and keep ckpt's
/// descriptor of it in `times` (by its inode at dump) for the processes of the image
/// in it to join ([`enter_time_made_in_userns`]). Its children were forked before
/// (with their PIDs, which takes ckpt's privileges), in its own.
pub(crate) fn make_time_in_userns(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    times: &mut std::collections::BTreeMap<u64, std::os::fd::OwnedFd>,
) -> crate::error::RestoreResult<()> {
    let Some(ns) = time_made_in_userns(ckpt, cx.proc_) else {
        return Ok(());
    };
    let Some(t) = ns.time else {
        return Err(crate::error::RestoreError::Malformed(format!(
            "time:[{}] has no recorded clocks",
            ns.inode
        )));
    };
    crate::error::fault_point("make a time namespace a process made in a user namespace")?;
    cx.call(
        "unshare (a time namespace for its children, in its user namespace)",
        crate::arch::native::nr::UNSHARE,
        [libc::CLONE_NEWTIME as u64, 0, 0, 0, 0, 0],
    )?;
    let now = sys::ns::host_clocks()?;
    sys::ns::write_timens_offsets(
        cx.proc_.pid,
        t.monotonic_ns.saturating_sub(now.0),
        t.boottime_ns.saturating_sub(now.1),
    )?;
    times.insert(
        ns.inode,
        sys::ns::open_of(cx.proc_.pid, "time_for_children")?,
    );
    Ok(())
}

/// In the stub of process `cx.proc_`, first of its build (before its descriptors,
/// timers and threads, which take the clocks of the time namespace they are made
/// in): if it is in a time namespace a process made in a user namespace of the
/// tree's ([`time_maker_in_userns`]), join it (ckpt's descriptor in `times`, made by
/// the maker's stub, whose build came first: parents are built before their
/// children; injected `setns`, the stub single-threaded, still with ckpt's
/// privileges). It was forked in its parent's before that namespace existed.
pub(crate) fn enter_time_made_in_userns(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    times: &std::collections::BTreeMap<u64, std::os::fd::OwnedFd>,
) -> crate::error::RestoreResult<()> {
    use std::os::fd::AsRawFd;
    let Some(t) = super::inode_of(cx.proc_, "time") else {
        return Ok(());
    };
    if time_maker_in_userns(ckpt, t).is_none() {
        return Ok(());
    }
    let Some(f) = times.get(&t) else {
        return Err(crate::error::RestoreError::Stage(format!(
            "time:[{t}] of process {} was not made",
            cx.proc_.pid
        )));
    };
    crate::error::fault_point("join a time namespace a process made in a user namespace")?;
    let fd = crate::remote::take_remote_fd(
        cx,
        std::process::id() as i32,
        f.as_raw_fd() as u64,
        "take a time namespace made in a user namespace",
    )?;
    cx.call(
        "setns (a time namespace a process made in a user namespace)",
        crate::arch::native::nr::SETNS,
        [fd, libc::CLONE_NEWTIME as u64, 0, 0, 0, 0],
    )?;
    cx.call("close", crate::arch::native::nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    Ok(())
}

/// Make the calling thread join the namespaces made outside the tree that the image
/// names, each from its `--join-ns` (kind, path) in `joins` (plan checked that there is
/// one of the right kind for each).
fn join_foreign(
    ckpt: &Checkpoint,
    joins: &[(String, std::path::PathBuf)],
) -> crate::error::RestoreResult<()> {
    for ns in ckpt.namespaces.iter().filter(|n| n.foreign) {
        let Some((_, path)) = joins.iter().find(|(k, _)| *k == ns.kind) else {
            return Err(crate::error::RestoreError::Stage(format!(
                "no --join-ns for the {} namespace {}:[{}]",
                title(&ns.kind),
                ns.kind,
                ns.inode
            )));
        };
        crate::error::fault_point("join a namespace made outside the tree")?;
        let (f, t) = sys::ns::open_ns_file(path)?;
        if Some(t) != sys::ns::clone_flag(&ns.kind) {
            return Err(crate::error::RestoreError::Stage(format!(
                "{} is not a {} namespace",
                path.display(),
                title(&ns.kind)
            )));
        }
        sys::ns::join_file(&f, t, &path.display().to_string())?;
    }
    Ok(())
}

/// What the calling thread does to put the tree in new namespaces: the CLONE_NEW*
/// flags, the UTS names, the /proc/sys values, the time offsets for `now`
/// (monotonic, boottime readings of this host, nanoseconds).
pub(crate) type NewNamespaces<'a> = (
    libc::c_int,
    Option<(&'a [u8], &'a [u8])>,
    Vec<(String, String)>,
    Option<(i64, i64)>,
);

/// The new namespaces the tree needs (see [`NewNamespaces`]), given this host's clocks.
pub(crate) fn new_namespaces(ckpt: &Checkpoint, now: (i64, i64)) -> NewNamespaces<'_> {
    let mut flags = 0;
    let mut names = None;
    let mut sysctls = Vec::new();
    let mut offsets = None;
    // (A cgroup namespace is made by `enter_new`, rooted elsewhere.)
    for ns in owned(ckpt).into_iter().filter(|n| n.kind != "cgroup") {
        flags |= sys::ns::clone_flag(&ns.kind).unwrap_or(0);
        if let Some(u) = &ns.uts {
            names = Some((u.hostname.as_slice(), u.domainname.as_slice()));
        }
        if let Some(l) = &ns.ipc {
            sysctls.extend(l.values.iter().cloned());
        }
        if let Some(t) = ns.time {
            offsets = Some((
                t.monotonic_ns.saturating_sub(now.0),
                t.boottime_ns.saturating_sub(now.1),
            ));
        }
    }
    (flags, names, sysctls, offsets)
}

/// Give the calling thread (ckpt's main thread, before it starts the tree's first
/// process) the namespaces made outside the tree it is to join (`joins`, from
/// `--join-ns`) and the new namespaces the tree had of its own, in their dumped state
/// (a cgroup namespace rooted at its root cgroups, below `cgroup_root` if given, made
/// when missing: returned, removed again unless kept): every process started
/// afterwards is in them. They end with ckpt and the processes
/// started in them, so a failed restore leaves none behind. A user namespace of the
/// tree's own is made first and owns the others (`kinds::userns::enter_new`; the
/// calling thread stays in its own): returned too, for the stubs to join, with the
/// tree's PID namespace it owns (for the tree's root to be made its init) and, if
/// `mnt` (called by `kinds::mnt::enter_new`, which builds it next), with a mount
/// namespace it owns that the calling thread joined.
pub(crate) fn enter_new(
    ckpt: &Checkpoint,
    joins: &[(String, std::path::PathBuf)],
    cgroup_root: Option<&str>,
    mnt: bool,
) -> crate::error::RestoreResult<(
    crate::kinds::cgroup::MadeCgroups,
    Option<crate::kinds::userns::Made>,
)> {
    let mut made = crate::kinds::cgroup::MadeCgroups::default();
    join_foreign(ckpt, joins)?;
    if !any_owned(ckpt) {
        return Ok((made, None));
    }
    crate::error::fault_point("create the tree's namespaces")?;
    // (With a user namespace of the tree's own, its cgroup namespace is made by the
    // helper that makes the user namespace, so that it owns it.)
    let with_user = crate::kinds::userns::owned(ckpt).is_some();
    let mut cgroup_dirs = None;
    if let Some(c) = owned(ckpt).into_iter().find_map(|n| n.cgroup.as_ref()) {
        if with_user {
            cgroup_dirs = Some(crate::kinds::cgroup::namespace_roots(
                &c.roots,
                cgroup_root,
                &mut made,
            )?);
        } else {
            crate::kinds::cgroup::enter_new_namespace(&c.roots, cgroup_root, &mut made)?;
        }
    }
    let now = sys::ns::host_clocks()?;
    let (flags, names, sysctls, offsets) = new_namespaces(ckpt, now);
    // A user namespace of the tree's own owns the others: made first, they with it.
    let (flags, userns) = crate::kinds::userns::enter_new(
        ckpt,
        flags,
        ckpt.own_pid_namespace,
        mnt,
        cgroup_dirs.as_deref(),
        offsets,
    )?;
    let sysctls = match userns {
        // (Its IPC namespace's limits are its root's to write; its time namespace was
        // made with it.)
        Some(_) => {
            sys::ns::unshare_new(flags, names, &[], None)?;
            sysctls
        }
        None => {
            sys::ns::unshare_new(flags, names, &sysctls, offsets)?;
            Vec::new()
        }
    };
    if !sysctls.is_empty() {
        crate::kinds::userns::write_ipc_limits(ckpt, &sysctls)?;
    }
    if let Some(n) = own_net_state(ckpt) {
        set_up_net(n)?;
    }
    Ok((made, userns))
}
