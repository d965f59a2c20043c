//! Collect (dump): which namespaces each process is in, and the state of those the
//! tree owns (UTS names, IPC limits, time clocks, cgroup roots; network in
//! [`super::net`], mounts in `kinds::mnt`, user in `kinds::userns`).

use std::collections::{BTreeMap, BTreeSet};

use super::net::own_net;
use super::{IPC_LIMITS, JOINABLE, KINDS, MIXABLE, RESTORED, title};
use crate::error::{DumpError, DumpResult};
use crate::model::{IpcLimits, Namespace, TimeClocks, UtsNames};
use crate::sys;

// ---- collect (dump) ----

/// Each process's (kind, inode) list, and every namespace once.
pub(crate) type Collected = (Vec<Vec<(String, u64)>>, Vec<Namespace>);

/// [`collect`] for the dumped `processes` (in `pids` order, the root first): each gets
/// the namespaces it is in; returns those the tree holds. The System V segments the
/// processes attach are what an IPC namespace of the tree's own may hold.
pub(crate) fn collect_into(
    processes: &mut [crate::model::Process],
    pids: &[(i32, bool)],
    root_parent: i32,
    ckpts: &OwnNamespaces,
) -> DumpResult<Vec<crate::model::Namespace>> {
    let (per_proc, namespaces) = collect(pids, root_parent, ckpts)?;
    for (p, ns) in processes.iter_mut().zip(per_proc) {
        p.namespaces = ns;
    }
    Ok(namespaces)
}

/// The namespaces of the (frozen) processes `pids` (host PIDs, the root first, with
/// whether each is alive: a zombie has none left; the root's parent `root_parent` is
/// outside the tree): each process's (kind, inode) list, in the order of `pids`, and
/// every namespace once. Refuses what restore cannot bring back (see the module's
/// comment), naming the process.
pub(crate) fn collect(
    pids: &[(i32, bool)],
    root_parent: i32,
    ckpts: &OwnNamespaces,
) -> DumpResult<Collected> {
    let Some(&(root, _)) = pids.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let refuse = |pid: i32, why: String| DumpError::Unsupported { pid, why };
    let mut per_proc: Vec<Vec<(String, u64)>> = vec![Vec::new(); pids.len()];
    // The user namespace the tree's own namespaces must be owned by: the tree's, or
    // ckpt's (restore makes them there).
    let ckpts_user = ckpts.get("user").copied().unwrap_or(0);
    let tree_user = TreeUser {
        inode: sys::ns::inode(root, "user")?,
        ckpts: ckpts_user,
    };
    let mut all = Vec::new();
    for kind in KINDS {
        let own = ckpts.get(kind).copied().unwrap_or(0);
        let root_ns = sys::ns::inode(root, kind)?;
        for (i, &(pid, live)) in pids.iter().enumerate() {
            if !live {
                continue;
            }
            let ino = sys::ns::inode(pid, kind)?;
            if ino != root_ns && ino != own && MIXABLE.contains(&kind) {
                // Checked below, once every process's is known.
                per_proc[i].push((kind.to_string(), ino));
                continue;
            }
            if ino != root_ns && ino != own {
                return Err(refuse(
                    pid,
                    format!(
                        "it is in another {} namespace ({kind}:[{ino}]) than the tree's \
                         root ({kind}:[{root_ns}]); processes of a tree in different \
                         {} namespaces are not restored yet",
                        title(kind),
                        title(kind)
                    ),
                ));
            }
            if ino != root_ns {
                return Err(refuse(
                    pid,
                    format!(
                        "it is in ckpt's {} namespace while the tree's root is in one of \
                         its own ({kind}:[{root_ns}]); processes of a tree in different \
                         {} namespaces are not restored yet",
                        title(kind),
                        title(kind)
                    ),
                ));
            }
            if kind == "time" {
                let kids = sys::ns::inode(pid, "time_for_children")?;
                if kids != ino && !has_child_in(pids, pid, kids)? {
                    return Err(refuse(
                        pid,
                        format!(
                            "it made a new time namespace for its children \
                             (time:[{kids}]) that none of them has entered yet; this \
                             is not restored yet"
                        ),
                    ));
                }
            }
            per_proc[i].push((kind.to_string(), ino));
        }
        all.extend(child_namespaces(
            pids, &per_proc, kind, root_ns, ckpts, &tree_user,
        )?);
        if root_ns == own {
            all.push(Namespace {
                kind: kind.to_string(),
                inode: root_ns,
                external: true,
                ..Default::default()
            });
            continue;
        }
        // The tree's root is in a namespace other than ckpt's: the tree must have
        // made it (nothing outside the tree is in it, its parent first, nor is it
        // bind-mounted), or restore joins one given for it.
        let tree: BTreeSet<i32> = pids.iter().map(|&(p, _)| p).collect();
        let outside = made_outside(kind, root_ns, root_parent, &tree);
        if let Some(why) = outside {
            if JOINABLE.contains(&kind) {
                all.push(Namespace {
                    kind: kind.to_string(),
                    inode: root_ns,
                    external: true,
                    foreign: true,
                    ..Default::default()
                });
                continue;
            }
            return Err(refuse(
                root,
                format!(
                    "it runs in a {} namespace ({kind}:[{root_ns}]) that is not ckpt's \
                     and that the tree did not make ({why}); restore joins only {} \
                     namespaces made outside the tree (--join-ns); run ckpt inside that \
                     namespace",
                    title(kind),
                    JOINABLE.map(title).join(", ")
                ),
            ));
        }
        if !RESTORED.contains(&kind) {
            return Err(refuse(
                root,
                format!(
                    "it runs in a {} namespace of its own ({kind}:[{root_ns}]); {} \
                     namespaces are not restored yet (run ckpt inside it)",
                    title(kind),
                    title(kind)
                ),
            ));
        }
        all.push(own_namespace(root, kind, root_ns, &tree_user, false)?);
    }
    below_root_users(pids, &per_proc, &all, &tree_user)?;
    // A PID namespace of the tree's own is made by its user namespace of its own.
    if tree_user.inode != tree_user.ckpts {
        let ckpts_pid = sys::ns::inode(std::process::id() as i32, "pid")?;
        let root_pid = sys::ns::inode(root, "pid")?;
        if root_pid != ckpts_pid {
            crate::kinds::userns::check_owner(root, "pid", root_pid, tree_user.inode, true)?;
        }
    }
    Ok((per_proc, all))
}

/// The namespaces of kind `kind` that processes of the tree below its root made (each
/// process's namespaces so far in `per_proc`, in `pids` order: parents first): each
/// made by one process (its parent is not in it), every other process in it below
/// that one (but a user namespace, which other processes of the tree may have
/// entered with setns), nothing outside the tree in it. Returns them described; refuses anything
/// else, naming the process.
fn child_namespaces(
    pids: &[(i32, bool)],
    per_proc: &[Vec<(String, u64)>],
    kind: &str,
    root_ns: u64,
    ckpts: &OwnNamespaces,
    tree_user: &TreeUser,
) -> DumpResult<Vec<Namespace>> {
    let own = ckpts.get(kind).copied().unwrap_or(0);
    let ino_of = |i: usize| per_proc[i].iter().find(|(k, _)| k == kind).map(|(_, n)| *n);
    let mut made: BTreeMap<u64, i32> = BTreeMap::new();
    for (i, &(pid, live)) in pids.iter().enumerate() {
        let Some(ino) = ino_of(i).filter(|n| live && *n != root_ns && *n != own) else {
            continue;
        };
        let ppid = sys::proc::status(pid)?.ppid;
        let parent_ns = pids.iter().position(|&(p, _)| p == ppid).and_then(ino_of);
        if parent_ns == Some(ino) {
            continue;
        }
        // (Each process joins its user namespace alone at restore: one that entered
        // it with setns is restored like one forked in it. The first is its maker.)
        if kind == "user" && made.contains_key(&ino) {
            continue;
        }
        // (A time namespace is its parent's for its children: the children of that
        // one in it are each forked in it.)
        if kind == "time" {
            if let Some(&first) = made.get(&ino) {
                if sys::proc::status(first)?.ppid == ppid {
                    continue;
                }
            }
        }
        if let Some(first) = made.insert(ino, pid) {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "it entered the {} namespace {kind}:[{ino}] that process {first} of \
                     the tree made, not from it; this is not restored",
                    title(kind)
                ),
            });
        }
    }
    let tree: BTreeSet<i32> = pids.iter().map(|&(p, _)| p).collect();
    let mut out = Vec::new();
    for (ino, pid) in made {
        if let Some(why) = sys::ns::held_outside(kind, ino, &tree) {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "it is in a {} namespace ({kind}:[{ino}]) other than the tree's \
                     root's that the tree did not make ({why}); this is not restored",
                    title(kind)
                ),
            });
        }
        if kind == "mnt" {
            let members: Vec<i32> = pids
                .iter()
                .enumerate()
                .filter(|&(i, &(_, live))| live && ino_of(i) == Some(ino))
                .map(|(_, &(p, _))| p)
                .collect();
            crate::kinds::mnt::check_below(pid, ino, root_ns, ckpts, &members)?;
        }
        out.push(own_namespace(pid, kind, ino, tree_user, true)?);
    }
    Ok(out)
}

/// Whether a process of `pids` (the tree, host PIDs) whose parent is `pid` is in the
/// time namespace `time` (the one `pid` made for its children).
fn has_child_in(pids: &[(i32, bool)], pid: i32, time: u64) -> DumpResult<bool> {
    for &(q, live) in pids {
        if live
            && q != pid
            && sys::proc::status(q)?.ppid == pid
            && sys::ns::inode(q, "time")? == time
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The user namespaces processes below the tree's root made (in `all`, the tree's
/// namespaces): each nested in ckpt's or in another of the tree's, and no process in
/// one in a PID namespace it owns (restore makes the tree's PID namespaces outside
/// them). Refuses anything else, naming the process.
fn below_root_users(
    pids: &[(i32, bool)],
    per_proc: &[Vec<(String, u64)>],
    all: &[Namespace],
    tree_user: &TreeUser,
) -> DumpResult<()> {
    let ours: BTreeSet<u64> = all
        .iter()
        .filter(|n| n.kind == "user" && !n.external)
        .map(|n| n.inode)
        .collect();
    let below: BTreeMap<u64, u64> = all
        .iter()
        .filter(|n| n.kind == "user" && !n.external && n.inode != tree_user.inode)
        .filter_map(|n| n.user.as_ref().map(|u| (n.inode, u.parent)))
        .collect();
    for (i, &(pid, live)) in pids.iter().enumerate() {
        if !live {
            continue;
        }
        let Some(&(_, ino)) = per_proc[i].iter().find(|(k, _)| k == "user") else {
            continue;
        };
        let Some(&parent) = below.get(&ino) else {
            continue;
        };
        if parent != tree_user.ckpts && !ours.contains(&parent) {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "it is in a user namespace (user:[{ino}]) a process of the tree made \
                     in user:[{parent}], which is neither ckpt's (user:[{}]) nor one of \
                     the tree's; this is not restored",
                    tree_user.ckpts
                ),
            });
        }
        for kind in ["pid", "pid_for_children"] {
            if sys::userns::owner_ino(pid, kind).ok() == Some(ino) {
                return Err(DumpError::Unsupported {
                    pid,
                    why: format!(
                        "it is in (or made for its children) a PID namespace owned by the \
                         user namespace user:[{ino}] that a process below the tree's root \
                         made; restore makes the tree's PID namespaces outside such user \
                         namespaces, so this is not restored yet"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Why the namespace `kind:[root_ns]` of a tree's root, not ckpt's, was made outside
/// the tree (`tree`, whose root's parent is `root_parent`): its parent is in it too, or
/// it is bind-mounted, or another process outside the tree is in it (Podman's network
/// namespace under /run/netns, a namespace entered with `nsenter`, a pod's). None: the
/// tree made it (nothing outside the tree holds it).
pub(crate) fn made_outside(
    kind: &str,
    root_ns: u64,
    root_parent: i32,
    tree: &BTreeSet<i32>,
) -> Option<String> {
    if root_parent > 0 && sys::ns::inode(root_parent, kind).ok() == Some(root_ns) {
        return Some(format!(
            "its parent, PID {root_parent}, outside the tree, is in it too"
        ));
    }
    sys::ns::held_outside(kind, root_ns, tree)
}

/// ckpt's own namespaces (inode by kind), as they were when the dump began.
pub(crate) type OwnNamespaces = BTreeMap<&'static str, u64>;

/// ckpt's own namespaces, read before it joins any of the tree's (the first reading
/// is kept: a dump tried again has joined the tree's IPC and network namespaces).
pub(crate) fn own_namespaces() -> DumpResult<OwnNamespaces> {
    static FIRST: std::sync::OnceLock<OwnNamespaces> = std::sync::OnceLock::new();
    if let Some(m) = FIRST.get() {
        return Ok(m.clone());
    }
    let mut m = OwnNamespaces::new();
    for kind in KINDS {
        m.insert(kind, sys::ns::inode(0, kind)?);
    }
    Ok(FIRST.get_or_init(|| m).clone())
}

/// Whether the tree of `root` is in a network namespace other than ckpt's: then
/// ckpt's dumping thread joins it (`sys::ns::join`), so that what it reads of the
/// tree's sockets through sock_diag, and the checks restore's plan makes of their
/// names and addresses, are that namespace's; a TCP lock for a namespace made outside
/// the tree is made there too (its `nft` runs from this thread).
pub(crate) fn join_tree_net(root: i32, ckpts: &OwnNamespaces) -> DumpResult<()> {
    let ns = sys::ns::inode(root, "net")?;
    if Some(&ns) != ckpts.get("net") {
        sys::ns::join(root, "net")?;
    }
    Ok(())
}

/// Whether the tree of `root` (whose parent `root_parent` is outside it) owns the IPC
/// namespace it is in: then ckpt's dumping thread joins it (`sys::ns::join`), so that
/// what the memory kind reads of System V segments (/proc/sysvipc) is the tree's.
pub(crate) fn join_own_ipc(root: i32, root_parent: i32, ckpts: &OwnNamespaces) -> DumpResult<()> {
    let ns = sys::ns::inode(root, "ipc")?;
    if Some(&ns) != ckpts.get("ipc")
        && (root_parent <= 0 || sys::ns::inode(root_parent, "ipc").ok() != Some(ns))
    {
        sys::ns::join(root, "ipc")?;
    }
    Ok(())
}

/// The user namespace of the tree's root and ckpt's (inodes): a namespace of the tree's
/// own is owned by the former, which is the tree's own if it differs from ckpt's.
pub(crate) struct TreeUser {
    inode: u64,
    ckpts: u64,
}

/// The state of a namespace of kind `kind` (one of `RESTORED`) the tree owns, read
/// through its process `pid`; it must be owned by the tree's user namespace.
fn own_namespace(
    pid: i32,
    kind: &str,
    inode: u64,
    tree_user: &TreeUser,
    below: bool,
) -> DumpResult<Namespace> {
    // The process that made it (a time namespace: the parent of `pid`, which made it
    // for its children; its offsets are read there, as /proc/PID/timens_offsets shows
    // those of the namespace for a process's children).
    let maker = if below && kind == "time" {
        sys::proc::status(pid)?.ppid
    } else {
        pid
    };
    if below && kind != "user" {
        // Made below the root by `maker`: restore makes it again owned by the user
        // namespace that process is in (see `kinds::userns::make_below`).
        let owner = sys::userns::owner_ino(pid, kind)?;
        let user = sys::ns::inode(maker, "user")?;
        if owner != user {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "it made a {} namespace ({kind}:[{inode}]) owned by user:[{owner}], \
                     not by the user namespace it is in (user:[{user}]); restore makes a \
                     namespace a process below the root made owned by that process's \
                     user namespace, so this is not restored",
                    title(kind)
                ),
            });
        }
    } else if kind != "user" {
        crate::kinds::userns::check_owner(
            pid,
            kind,
            inode,
            tree_user.inode,
            tree_user.inode != tree_user.ckpts,
        )?;
    }
    let mut ns = Namespace {
        kind: kind.to_string(),
        inode,
        external: false,
        ..Default::default()
    };
    match kind {
        "uts" => {
            let (hostname, domainname) = sys::ns::inside(pid, &["uts"], sys::ns::uts_names)?;
            ns.uts = Some(UtsNames {
                hostname,
                domainname,
            });
        }
        "ipc" => {
            let values = sys::ns::inside(pid, &["ipc"], || {
                let mut values = Vec::new();
                for k in IPC_LIMITS {
                    values.push((k.to_string(), sys::ns::read_sysctl(k)?));
                }
                Ok(values)
            })?;
            // Its POSIX message queues are the namespace's, saved with it; its System V
            // objects, of the root's namespace `kinds::ipc::collect`'s, of one a process
            // below the root made `kinds::ipc::collect_below_root`'s (once the
            // processes' memory maps are known).
            let names = sys::ns::mqueues_of(pid)?;
            let mqueues = crate::kinds::fd::mqueue::collect_namespace(pid, &names)?;
            ns.ipc = Some(IpcLimits {
                values,
                mqueues,
                ..Default::default()
            });
        }
        "net" => ns.net = Some(own_net(pid, inode)?),
        "cgroup" => ns.cgroup = Some(own_cgroup(pid, inode)?),
        "time" => {
            let (mo, bo) = sys::ns::timens_offsets(maker)?;
            // (CLOCK_MONOTONIC first: see `sys::ns::host_clocks`.)
            let m = sys::ns::clock_ns(libc::CLOCK_MONOTONIC)?;
            let b = sys::ns::clock_ns(libc::CLOCK_BOOTTIME)?;
            ns.time = Some(TimeClocks {
                monotonic_ns: m.saturating_add(mo),
                boottime_ns: b.saturating_add(bo),
            });
        }
        "mnt" => ns.mounts = Some(crate::kinds::mnt::collect(pid, below)?),
        "user" => {
            ns.user = Some(crate::kinds::userns::collect(
                pid,
                inode,
                tree_user.ckpts,
                below,
            )?)
        }
        _ => {}
    }
    Ok(ns)
}

/// The cgroup namespace of the tree's own (`inode`) that process `pid` is in: its root
/// in each hierarchy, the cgroup `pid` is in as ckpt sees it less what its namespace
/// shows (a thread of ckpt that joined it reads /proc/PID/cgroup).
fn own_cgroup(pid: i32, inode: u64) -> DumpResult<crate::model::CgroupNsRoots> {
    let host = sys::cgroup::membership(pid)?;
    let inside = sys::ns::inside(pid, &["cgroup"], || sys::cgroup::membership(pid))?;
    let mut roots = Vec::new();
    for (c, hpath) in &host {
        let npath = inside
            .iter()
            .find(|(k, _)| k == c)
            .map(|(_, p)| p.as_str())
            .unwrap_or("/");
        let root = if npath == "/" {
            Some(hpath.as_str())
        } else if npath.starts_with("/..") {
            None
        } else {
            hpath.strip_suffix(npath)
        };
        let Some(root) = root else {
            return Err(DumpError::Unsupported {
                pid,
                why: format!(
                    "it is in a cgroup ({hpath}) outside the root of its cgroup namespace \
                     of its own (cgroup:[{inode}], where it reads {npath}); this is not \
                     restored"
                ),
            });
        };
        roots.push((
            c.clone(),
            if root.is_empty() { "/" } else { root }.to_string(),
        ));
    }
    let ckpts = sys::cgroup::membership(0)?;
    Ok(crate::model::CgroupNsRoots {
        roots: crate::kinds::cgroup::places(&roots, &ckpts),
    })
}
