//! Namespaces (other than PID namespaces, which `restore::pidns` handles): which ones
//! each process is in, and the state of those the tree owns.
//!
//! A namespace is either ckpt's own at dump ("external": the host's, joined again at
//! restore by starting the tree in ckpt's), one made outside the tree that is not
//! ckpt's ("foreign", e.g. another container's network namespace: restore joins the
//! one `--join-ns KIND:PATH` names, for the kinds in [`JOINABLE`]), or one the tree
//! created (its root is in it and the root's parent, outside the tree, is not), which
//! restore creates anew before the first process is started: UTS (its names), IPC (its
//! limits; it must hold no SysV object yet), time (its clocks continue from the dumped
//! values), network (only its loopback interface, up or down, with its MTU and
//! addresses, and the network settings of /proc/sys/net that differ from a new
//! namespace's; every socket of the tree is made again inside it) and cgroup (rooted
//! at the same cgroups, see `kinds::cgroup`); a mount namespace is built by
//! `kinds::mnt`, before plan, a user namespace (and the namespaces it owns) by
//! `kinds::userns`. Everything else is refused at dump, naming the process and the
//! namespace: a namespace of the tree's own that another user namespace than the
//! tree's owns, a network namespace with
//! another interface, a route the kernel did not make for an address, firewall tables
//! or settings a new namespace does not take, a foreign namespace of a kind restore
//! cannot join, processes of the tree in different namespaces of one kind, and a time
//! namespace made for children nobody entered yet.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{DumpError, DumpResult, Problem};
use crate::kinds::check::p;
use crate::model::{Checkpoint, IpcLimits, Namespace, NetAddr, NetState, TimeClocks, UtsNames};
use crate::sys;

/// The kinds of namespace recorded (as in /proc/PID/ns/), PID namespaces aside.
pub(crate) const KINDS: [&str; 7] = ["uts", "ipc", "net", "mnt", "cgroup", "time", "user"];

/// Kinds a tree's own namespace of which restore creates.
pub(crate) const RESTORED: [&str; 7] = ["uts", "ipc", "time", "net", "cgroup", "mnt", "user"];

/// Kinds of namespace a process of the tree below its root may have made for itself
/// and its descendants (restore makes it again in that process's stub before its
/// children are forked).
pub(crate) const MIXABLE: [&str; 1] = ["uts"];

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

// ---- collect (dump) ----

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

/// Each process's (kind, inode) list, and every namespace once.
pub(crate) type Collected = (Vec<Vec<(String, u64)>>, Vec<Namespace>);

/// The namespaces of the (frozen) processes `pids` (host PIDs, the root first, with
/// whether each is alive: a zombie has none left; the root's parent `root_parent` is
/// outside the tree): each process's (kind, inode) list, in the order of `pids`, and
/// every namespace once. Refuses what restore cannot bring back (see the module's
/// [`collect`] for the dumped `processes` (in `pids` order, the root first): each gets
/// the namespaces it is in; returns those the tree holds. The System V segments the
/// processes attach are what an IPC namespace of the tree's own may hold.
pub(crate) fn collect_into(
    processes: &mut [crate::model::Process],
    pids: &[(i32, bool)],
    root_parent: i32,
    ckpts: &OwnNamespaces,
) -> DumpResult<Vec<crate::model::Namespace>> {
    let attached: BTreeSet<i32> = processes
        .iter()
        .flat_map(|p| &p.vmas)
        .filter_map(|v| match v.kind {
            crate::model::VmaKind::SysvShm { shmid, .. } => Some(shmid),
            _ => None,
        })
        .collect();
    let (per_proc, namespaces) = collect(pids, root_parent, &attached, ckpts)?;
    for (p, ns) in processes.iter_mut().zip(per_proc) {
        p.namespaces = ns;
    }
    Ok(namespaces)
}

/// comment), naming the process.
pub(crate) fn collect(
    pids: &[(i32, bool)],
    root_parent: i32,
    attached: &BTreeSet<i32>,
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
                if kids != ino {
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
            pids, &per_proc, kind, root_ns, own, attached, &tree_user,
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
        let outside = if root_parent > 0 && sys::ns::inode(root_parent, kind).ok() == Some(root_ns)
        {
            Some(format!(
                "its parent, PID {root_parent}, outside the tree, is in it too"
            ))
        } else {
            let tree: BTreeSet<i32> = pids.iter().map(|&(p, _)| p).collect();
            sys::ns::held_outside(kind, root_ns, &tree)
        };
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
        all.push(own_namespace(root, kind, root_ns, attached, &tree_user)?);
    }
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
/// that one, nothing outside the tree in it. Returns them described; refuses anything
/// else, naming the process.
fn child_namespaces(
    pids: &[(i32, bool)],
    per_proc: &[Vec<(String, u64)>],
    kind: &str,
    root_ns: u64,
    own: u64,
    attached: &BTreeSet<i32>,
    tree_user: &TreeUser,
) -> DumpResult<Vec<Namespace>> {
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
        out.push(own_namespace(pid, kind, ino, attached, tree_user)?);
    }
    Ok(out)
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
    attached: &BTreeSet<i32>,
    tree_user: &TreeUser,
) -> DumpResult<Namespace> {
    if kind != "user" {
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
            let (objects, values) = sys::ns::inside(pid, &["ipc"], || {
                let objects = sys::ns::sysv_objects()?;
                let mut values = Vec::new();
                for k in IPC_LIMITS {
                    values.push((k.to_string(), sys::ns::read_sysctl(k)?));
                }
                Ok((objects, values))
            })?;
            // Segments the tree has attached come back with it (the memory kind,
            // in the new namespace); anything else is not restored yet.
            let objects: Vec<String> = objects
                .into_iter()
                .filter(|o| {
                    o.strip_prefix("shm ")
                        .and_then(|id| id.parse::<i32>().ok())
                        .is_none_or(|id| !attached.contains(&id))
                })
                .collect();
            let queues = sys::ns::mqueues_of(pid)?;
            if !queues.is_empty() {
                return Err(DumpError::Unsupported {
                    pid,
                    why: format!(
                        "its IPC namespace of its own (ipc:[{inode}]) holds POSIX message \
                         queues (/{}); they are not restored yet",
                        queues.join(", /")
                    ),
                });
            }
            if !objects.is_empty() {
                return Err(DumpError::Unsupported {
                    pid,
                    why: format!(
                        "its IPC namespace of its own (ipc:[{inode}]) holds SysV objects \
                         ({}) that no process of the tree has attached; such SysV \
                         objects (message queues, semaphore sets, unattached shared \
                         memory) are not restored yet",
                        objects.join(", ")
                    ),
                });
            }
            ns.ipc = Some(IpcLimits { values });
        }
        "net" => ns.net = Some(own_net(pid, inode)?),
        "cgroup" => ns.cgroup = Some(own_cgroup(pid, inode)?),
        "time" => {
            let (mo, bo) = sys::ns::timens_offsets(pid)?;
            let m = sys::ns::clock_ns(libc::CLOCK_MONOTONIC)?;
            let b = sys::ns::clock_ns(libc::CLOCK_BOOTTIME)?;
            ns.time = Some(TimeClocks {
                monotonic_ns: m.saturating_add(mo),
                boottime_ns: b.saturating_add(bo),
            });
        }
        "mnt" => ns.mounts = Some(crate::kinds::mnt::collect(pid)?),
        "user" => ns.user = Some(crate::kinds::userns::collect(pid, inode, tree_user.ckpts)?),
        _ => {}
    }
    Ok(ns)
}

/// What a network namespace holds, read from inside it.
struct NetRead {
    links: Vec<sys::rtnl::Link>,
    addrs: Vec<sys::rtnl::Addr>,
    routes: Vec<sys::rtnl::Route>,
    tables: Vec<String>,
    sysctls: Vec<(String, String)>,
}

/// The network namespace of the tree's own (`inode`) that process `pid` is in: its
/// loopback interface and the settings restore writes again; anything restore cannot
/// make again is refused, naming it.
fn own_net(pid: i32, inode: u64) -> DumpResult<NetState> {
    let read = sys::ns::inside(pid, &["net"], || {
        let mut tables = sys::rtnl::nft_tables()?;
        tables.extend(sys::ns::legacy_tables());
        Ok(NetRead {
            links: sys::rtnl::links()?,
            addrs: sys::rtnl::addrs()?,
            routes: sys::rtnl::routes()?,
            tables,
            sysctls: sys::ns::net_sysctls()?,
        })
    })?;
    let refuse = |why: String| DumpError::Unsupported {
        pid,
        why: format!("its network namespace of its own (net:[{inode}]) {why}"),
    };
    let others: Vec<String> = read
        .links
        .iter()
        .filter(|l| !l.is_loopback())
        .map(|l| {
            if l.kind.is_empty() {
                l.name.clone()
            } else {
                format!("{} ({})", l.name, l.kind)
            }
        })
        .collect();
    if !others.is_empty() {
        return Err(refuse(format!(
            "has the network interface(s) {}; only a namespace with nothing but its \
             loopback interface is restored yet",
            others.join(", ")
        )));
    }
    let Some(lo) = read.links.iter().find(|l| l.is_loopback()) else {
        return Err(refuse("has no loopback interface".into()));
    };
    let made: Vec<String> = read
        .routes
        .iter()
        .filter(|r| r.protocol != libc::RTPROT_KERNEL)
        .map(show_route)
        .collect();
    if !made.is_empty() {
        return Err(refuse(format!(
            "has route(s) the kernel did not make for its addresses ({}); routes are \
             not restored yet",
            made.join(", ")
        )));
    }
    if !read.tables.is_empty() {
        return Err(refuse(format!(
            "has firewall tables ({}); nf_tables and iptables rules are not restored yet",
            read.tables.join(", ")
        )));
    }
    // The settings that differ from what a new namespace starts with, and whether a new
    // namespace takes them (written in order, each reads back as written).
    let changed = sys::ns::in_new_net(|| {
        let fresh: BTreeMap<String, String> = sys::ns::net_sysctls()?.into_iter().collect();
        let changed: Vec<(String, String)> = read
            .sysctls
            .iter()
            .filter(|(k, v)| fresh.get(k) != Some(v))
            .cloned()
            .collect();
        for (k, v) in &changed {
            let _ = sys::ns::write_sysctl(k, v);
        }
        let lost: Vec<String> = changed
            .iter()
            .filter(|(k, v)| sys::ns::read_sysctl(k).ok().as_ref() != Some(v))
            .map(|(k, v)| format!("{} = {v}", k.replace('/', ".")))
            .collect();
        Ok((changed, lost))
    })?;
    let (sysctls, lost) = changed;
    if !lost.is_empty() {
        return Err(refuse(format!(
            "has settings a new network namespace does not take back ({}); they are \
             not restored",
            lost.join(", ")
        )));
    }
    Ok(NetState {
        lo_up: lo.is_up(),
        lo_mtu: lo.mtu,
        addrs: read
            .addrs
            .iter()
            .filter(|a| a.index == lo.index)
            .map(|a| NetAddr {
                family: a.family,
                prefixlen: a.prefixlen,
                flags: a.flags,
                scope: a.scope,
                local: a.local.clone(),
                address: a.address.clone(),
                label: a.label.clone(),
            })
            .collect(),
        sysctls,
    })
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

/// A route as messages show it.
fn show_route(r: &sys::rtnl::Route) -> String {
    let a = sys::rtnl::Addr {
        family: r.family,
        prefixlen: r.dst_len,
        address: r.dst.clone(),
        ..Default::default()
    };
    let dst = if r.dst.is_empty() {
        "default".to_string()
    } else {
        a.show()
    };
    format!("{dst} table {} proto {}", r.table, r.protocol)
}

// ---- checks (plan) ----

/// Whether a network namespace's recorded state is one restore can set.
fn net_ok(n: &NetState) -> bool {
    n.addrs.iter().all(|a| {
        let len = match i32::from(a.family) {
            libc::AF_INET => 4,
            libc::AF_INET6 => 16,
            _ => return false,
        };
        (a.local.is_empty() || a.local.len() == len)
            && a.address.len() == len
            && usize::from(a.prefixlen) <= len * 8
            && a.label.len() < 16
            && !a.label.contains('\0')
    }) && n.sysctls.iter().all(|(k, v)| {
        k.starts_with("net/")
            && !k.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && !k.contains('\0')
            && !v.contains('\0')
    })
}

/// The namespaces made outside the tree in the image have each a `--join-ns` of their
/// kind (`joins`: kind, path), which names a namespace file of that kind; and each
/// `--join-ns` is for one of them.
pub(crate) fn check_joins(
    ckpt: &Checkpoint,
    joins: &[(String, std::path::PathBuf)],
    problems: &mut Vec<Problem>,
) {
    let foreign: Vec<&Namespace> = ckpt.namespaces.iter().filter(|n| n.foreign).collect();
    for ns in &foreign {
        if !JOINABLE.contains(&ns.kind.as_str()) {
            p(
                problems,
                "namespace",
                format!(
                    "the tree was in a {} namespace made outside it ({}:[{}]), which \
                     restore cannot join",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode
                ),
            );
        } else if !joins.iter().any(|(k, _)| *k == ns.kind) {
            p(
                problems,
                "namespace",
                format!(
                    "the tree was in a {} namespace made outside it ({}:[{}]): give the \
                     one to restore it in with --join-ns {}:PATH (e.g. /proc/PID/ns/{} \
                     or a bind-mounted namespace file such as /run/netns/NAME)",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode,
                    ns.kind,
                    ns.kind
                ),
            );
        }
    }
    for (kind, path) in joins {
        if !foreign.iter().any(|n| n.kind == *kind) {
            p(
                problems,
                "namespace",
                format!(
                    "--join-ns {kind}:{}: the image has no {} namespace made outside \
                     the tree",
                    path.display(),
                    title(kind)
                ),
            );
            continue;
        }
        match sys::ns::open_ns_file(path) {
            Ok((_, t)) if Some(t) == sys::ns::clone_flag(kind) => {}
            Ok(_) => p(
                problems,
                "namespace",
                format!(
                    "--join-ns {kind}:{}: not a {} namespace",
                    path.display(),
                    title(kind)
                ),
            ),
            Err(e) => p(
                problems,
                "namespace",
                format!("--join-ns {kind}:{}: {e}", path.display()),
            ),
        }
    }
}

/// What `ckpt check --json` lists of the image's namespaces: each with its kind and
/// whether the tree owns it ("own": restore creates it), joins it ("external": made
/// outside the tree, `--join-ns`) or shares ckpt's ("host"); a user namespace of the
/// tree's own with its ID maps ("INSIDE OUTSIDE COUNT" lines), setgroups and owner;
/// a PID namespace of the tree's own as kind "pid", "own".
pub fn manifest(ckpt: &Checkpoint) -> serde_json::Value {
    let list: Vec<serde_json::Value> = ckpt
        .namespaces
        .iter()
        .map(|ns| {
            let how = match (ns.external, ns.foreign) {
                (false, _) => "own",
                (true, true) => "external",
                (true, false) => "host",
            };
            let mut v = serde_json::json!({"kind": ns.kind, "inode": ns.inode, "as": how});
            if let (Some(u), Some(o)) = (&ns.user, v.as_object_mut()) {
                let lines = |m: &str| -> Vec<String> {
                    m.lines()
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                        .filter(|l| !l.is_empty())
                        .collect()
                };
                o.insert("uid_map".into(), lines(&u.uid_map).into());
                o.insert("gid_map".into(), lines(&u.gid_map).into());
                o.insert("setgroups".into(), u.setgroups.into());
                o.insert("owner_uid".into(), u.owner_uid.into());
            }
            v
        })
        .collect();
    let mut list = list;
    if ckpt.own_pid_namespace {
        // (made anew, its root PID 1 again; its inode is not recorded)
        list.push(serde_json::json!({"kind": "pid", "as": "own"}));
    }
    serde_json::Value::Array(list)
}

/// The image's namespaces are consistent and restorable: every process names each of
/// its namespaces once and each is described; a namespace of the tree's own is of a
/// kind restore creates, with its state, and all processes share the root's.
pub(crate) fn check_namespaces(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let mut described: BTreeMap<(&str, u64), &Namespace> = BTreeMap::new();
    for ns in &ckpt.namespaces {
        if described.insert((ns.kind.as_str(), ns.inode), ns).is_some() {
            p(
                problems,
                "malformed",
                format!("namespace {}:[{}] is described twice", ns.kind, ns.inode),
            );
        }
        if ns.external {
            continue;
        }
        let ok = match ns.kind.as_str() {
            "uts" => ns.uts.as_ref().is_some_and(|u| {
                u.hostname.len() <= 64
                    && u.domainname.len() <= 64
                    && !u.hostname.contains(&0)
                    && !u.domainname.contains(&0)
            }),
            "ipc" => ns.ipc.as_ref().is_some_and(|l| {
                l.values.iter().all(|(k, v)| {
                    IPC_LIMITS.contains(&k.as_str())
                        && !v.is_empty()
                        && v.bytes()
                            .all(|c| c.is_ascii_digit() || c == b' ' || c == b'\t')
                })
            }),
            "time" => ns
                .time
                .is_some_and(|t| t.monotonic_ns >= 0 && t.boottime_ns >= 0),
            "mnt" => ns.mounts.is_some(),
            "net" => ns.net.as_ref().is_some_and(net_ok),
            "cgroup" => ns
                .cgroup
                .as_ref()
                .is_some_and(|c| c.roots.iter().all(crate::kinds::cgroup::path_ok)),
            "user" => ns.user.as_ref().is_some_and(crate::kinds::userns::state_ok),
            _ => false,
        };
        if !ok {
            p(
                problems,
                "namespace",
                format!(
                    "the image has a {} namespace of the tree's own ({}:[{}]) that restore \
                     cannot create",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode
                ),
            );
        }
    }
    crate::kinds::userns::check(ckpt, problems);
    let Some(root) = ckpt.processes.first() else {
        return;
    };
    for proc_ in &ckpt.processes {
        for (kind, inode) in &proc_.namespaces {
            let Some(ns) = described.get(&(kind.as_str(), *inode)) else {
                p(
                    problems,
                    "malformed",
                    format!(
                        "process {} is in namespace {kind}:[{inode}], which the image does \
                         not describe",
                        proc_.pid
                    ),
                );
                continue;
            };
            if !ns.external
                && !root.namespaces.contains(&(kind.clone(), *inode))
                && !made_below_root(ckpt, kind, *inode)
            {
                p(
                    problems,
                    "namespace",
                    format!(
                        "process {} is in another {} namespace than the tree's root",
                        proc_.pid,
                        title(kind)
                    ),
                );
            }
        }
    }
}

/// Whether namespace `kind:[inode]` (not the root's) is one a process below the root
/// made, of a kind restore makes there ([`MIXABLE`]): exactly one process of the image
/// is in it while its parent is not.
fn made_below_root(ckpt: &Checkpoint, kind: &str, inode: u64) -> bool {
    if !MIXABLE.contains(&kind) {
        return false;
    }
    let key = (kind.to_string(), inode);
    let in_it = |p: &crate::model::Process| p.namespaces.contains(&key);
    let creators = ckpt
        .processes
        .iter()
        .skip(1)
        .filter(|p| in_it(p))
        .filter(|p| !ckpt.processes.iter().any(|q| q.pid == p.ppid && in_it(q)))
        .count();
    creators == 1
}

// ---- restore (stage) ----

/// In the stub of process `p` (just forked from its parent `parent`, before its own
/// children are), make the namespaces it made below the tree's root: injected
/// `unshare`, then their state set from a thread of ckpt that joins them.
pub(crate) fn enter_child_namespaces(
    cx: &mut crate::remote::Ctx<'_>,
    ckpt: &Checkpoint,
    parent: &crate::model::Process,
) -> crate::error::RestoreResult<()> {
    let p = cx.proc_;
    let mut flags = 0;
    let mut made = Vec::new();
    for (kind, inode) in &p.namespaces {
        if parent.namespaces.contains(&(kind.clone(), *inode)) || !MIXABLE.contains(&kind.as_str())
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
        flags |= sys::ns::clone_flag(kind).unwrap_or(0);
        made.push(ns);
    }
    if flags == 0 {
        return Ok(());
    }
    cx.call(
        "unshare (a namespace a process made)",
        crate::arch::native::nr::UNSHARE,
        [flags as u64, 0, 0, 0, 0, 0],
    )?;
    for ns in made {
        if let Some(u) = &ns.uts {
            let (h, d) = (u.hostname.clone(), u.domainname.clone());
            sys::ns::inside(p.pid, &["uts"], move || {
                rustix::system::sethostname(&h)
                    .map_err(|e| sys::SysError::io("sethostname", e.into()))?;
                rustix::system::setdomainname(&d)
                    .map_err(|e| sys::SysError::io("setdomainname", e.into()))
            })?;
        }
    }
    Ok(())
}

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

/// The TCP connections of the image that the dump locked (`sys::netlock`): none when
/// the tree had a network namespace of its own (it ended with the tree).
pub(crate) fn locked_connections(ckpt: &Checkpoint) -> Vec<(Vec<u8>, Vec<u8>)> {
    if owns(ckpt, "net") {
        return Vec::new();
    }
    ckpt.processes
        .iter()
        .flat_map(|p| p.tcp_connections())
        .collect()
}

/// The state of the tree's own network namespace, if it had one.
fn own_net_state(ckpt: &Checkpoint) -> Option<&NetState> {
    owned(ckpt).into_iter().find_map(|n| n.net.as_ref())
}

/// The flags restore gives an address it adds (`IFA_F_*` of linux/if_addr.h): NODAD
/// 0x02, HOMEADDRESS 0x10, MANAGETEMPADDR 0x100, NOPREFIXROUTE 0x200, MCAUTOJOIN
/// 0x400; the others are the kernel's to set.
const ADDR_FLAGS: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

/// An address of the image as rtnetlink takes it, on interface `index`.
fn rtnl_addr(a: &NetAddr, index: i32) -> sys::rtnl::Addr {
    sys::rtnl::Addr {
        family: a.family,
        prefixlen: a.prefixlen,
        flags: a.flags & ADDR_FLAGS,
        scope: a.scope,
        index,
        local: a.local.clone(),
        address: a.address.clone(),
        label: a.label.clone(),
    }
}

/// The same address (family, address, prefix length).
fn same_addr(a: &sys::rtnl::Addr, b: &sys::rtnl::Addr) -> bool {
    let key = |x: &sys::rtnl::Addr| {
        (
            x.family,
            x.prefixlen,
            if x.local.is_empty() {
                x.address.clone()
            } else {
                x.local.clone()
            },
        )
    };
    key(a) == key(b)
}

/// Give the calling thread's new network namespace the dumped one's state: its
/// settings, its loopback interface up or down with its MTU, exactly its addresses
/// (those the kernel added when it went up and the dump had not are removed); the
/// settings are read back.
fn set_up_net(n: &NetState) -> crate::error::RestoreResult<()> {
    for (k, v) in &n.sysctls {
        sys::ns::write_sysctl(k, v)?;
    }
    let links = sys::rtnl::links()?;
    let Some(lo) = links.iter().find(|l| l.is_loopback()) else {
        return Err(crate::error::RestoreError::Stage(
            "the new network namespace has no loopback interface".into(),
        ));
    };
    sys::rtnl::set_link(lo.index, n.lo_up, n.lo_mtu)?;
    let want: Vec<sys::rtnl::Addr> = n.addrs.iter().map(|a| rtnl_addr(a, lo.index)).collect();
    let have: Vec<sys::rtnl::Addr> = sys::rtnl::addrs()?
        .into_iter()
        .filter(|a| a.index == lo.index)
        .collect();
    for h in &have {
        if !want.iter().any(|w| same_addr(w, h)) {
            sys::rtnl::del_addr(h)?;
        }
    }
    for w in &want {
        if !have.iter().any(|h| same_addr(w, h)) {
            sys::rtnl::add_addr(w)?;
        }
    }
    for (k, v) in &n.sysctls {
        let now = sys::ns::read_sysctl(k)?;
        if now != *v {
            return Err(crate::error::RestoreError::Stage(format!(
                "/proc/sys/{k} in the new network namespace reads {now:?}, not {v:?}"
            )));
        }
    }
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
    if let Some(c) = owned(ckpt).into_iter().find_map(|n| n.cgroup.as_ref()) {
        crate::kinds::cgroup::enter_new_namespace(&c.roots, cgroup_root, &mut made)?;
    }
    let now = (
        sys::ns::clock_ns(libc::CLOCK_MONOTONIC)?,
        sys::ns::clock_ns(libc::CLOCK_BOOTTIME)?,
    );
    let (flags, names, sysctls, offsets) = new_namespaces(ckpt, now);
    // A user namespace of the tree's own owns the others: made first, they with it.
    let (flags, userns) =
        crate::kinds::userns::enter_new(ckpt, flags, ckpt.own_pid_namespace, mnt)?;
    let sysctls = match userns {
        // (Its IPC namespace's limits are its root's to write.)
        Some(_) => {
            sys::ns::unshare_new(flags, names, &[], offsets)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, child, process};

    fn ext(kind: &str, inode: u64) -> Namespace {
        Namespace {
            kind: kind.into(),
            inode,
            external: true,
            ..Default::default()
        }
    }

    /// A root and its child in UTS namespace 7 and time namespace 9 of their own, and
    /// in ckpt's IPC namespace 1.
    fn image() -> Checkpoint {
        let mut r = process(10);
        let mut c = child(11, 10, 10, 10);
        for p in [&mut r, &mut c] {
            p.namespaces = vec![("uts".into(), 7), ("ipc".into(), 1), ("time".into(), 9)];
        }
        let mut ck = checkpoint(vec![r, c]);
        ck.namespaces = vec![
            Namespace {
                kind: "uts".into(),
                inode: 7,
                uts: Some(UtsNames {
                    hostname: b"box".to_vec(),
                    domainname: b"(none)".to_vec(),
                }),
                ..Default::default()
            },
            ext("ipc", 1),
            Namespace {
                kind: "time".into(),
                inode: 9,
                time: Some(TimeClocks {
                    monotonic_ns: 5_000,
                    boottime_ns: 8_000,
                }),
                ..Default::default()
            },
        ];
        ck
    }

    fn problems(ck: &Checkpoint) -> Vec<String> {
        let mut v = Vec::new();
        check_namespaces(ck, &mut v);
        v.into_iter()
            .map(|p| format!("{}: {}", p.code, p.message))
            .collect()
    }

    #[test]
    fn a_consistent_image_passes() {
        assert_eq!(problems(&image()), Vec::<String>::new());
        assert!(problems(&checkpoint(vec![process(3)])).is_empty());
    }

    #[test]
    fn inconsistent_or_unrestorable_namespaces_are_problems() {
        let mut ck = image();
        ck.processes[1].namespaces[0].1 = 8;
        assert!(problems(&ck)[0].contains("uts:[8], which the image does not describe"));
        ck.namespaces.push(Namespace {
            kind: "uts".into(),
            inode: 8,
            uts: ck.namespaces[0].uts.clone(),
            ..Default::default()
        });
        // A UTS namespace the child made below the root is restored in its stub.
        assert_eq!(problems(&ck), Vec::<String>::new());
        // Not a time namespace.
        let mut ck = image();
        ck.processes[1].namespaces[2].1 = 8;
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: 8,
            time: ck.namespaces[2].time,
            ..Default::default()
        });
        assert!(problems(&ck)[0].contains("process 11 is in another time namespace"));
        // Nor one two processes entered apart (the root's second child too).
        let mut ck = image();
        ck.processes[1].namespaces[0].1 = 8;
        let mut c2 = child(12, 10, 10, 10);
        c2.namespaces = ck.processes[1].namespaces.clone();
        ck.processes.push(c2);
        ck.namespaces.push(Namespace {
            kind: "uts".into(),
            inode: 8,
            uts: ck.namespaces[0].uts.clone(),
            ..Default::default()
        });
        assert!(problems(&ck)[0].contains("in another UTS namespace"));

        let mut ck = image();
        ck.namespaces.push(Namespace {
            kind: "net".into(),
            inode: 4,
            ..Default::default()
        });
        assert!(problems(&ck)[0].contains("network namespace of the tree's own (net:[4])"));

        let mut ck = image();
        ck.namespaces[0].uts = Some(UtsNames {
            hostname: vec![b'a'; 65],
            domainname: Vec::new(),
        });
        ck.namespaces[2].time = Some(TimeClocks {
            monotonic_ns: -1,
            boottime_ns: 0,
        });
        ck.namespaces.push(ext("uts", 7));
        let p = problems(&ck);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|x| x.contains("described twice")));
    }

    fn net_image() -> Checkpoint {
        let mut ck = image();
        for p in &mut ck.processes {
            p.namespaces.push(("net".into(), 4));
        }
        ck.namespaces.push(Namespace {
            kind: "net".into(),
            inode: 4,
            net: Some(NetState {
                lo_up: true,
                lo_mtu: 65536,
                addrs: vec![NetAddr {
                    family: libc::AF_INET as u8,
                    prefixlen: 24,
                    local: vec![10, 77, 0, 1],
                    address: vec![10, 77, 0, 1],
                    label: "lo".into(),
                    ..Default::default()
                }],
                sysctls: vec![("net/ipv4/ip_local_port_range".into(), "20000\t30000".into())],
            }),
            ..Default::default()
        });
        ck
    }

    #[test]
    fn a_network_namespace_of_the_trees_own_is_checked_and_created() {
        let ck = net_image();
        assert_eq!(problems(&ck), Vec::<String>::new());
        assert!(owns(&ck, "net") && net_elsewhere(&ck));
        assert!(locked_connections(&ck).is_empty());
        let (flags, ..) = new_namespaces(&ck, (0, 0));
        assert_eq!(
            flags,
            libc::CLONE_NEWUTS | libc::CLONE_NEWTIME | libc::CLONE_NEWNET
        );
        // An address of the wrong length, a setting outside /proc/sys/net: refused.
        for bad in 0..3 {
            let mut ck = net_image();
            let n = ck.namespaces[3].net.as_mut().unwrap();
            match bad {
                0 => n.addrs[0].local = vec![1, 2, 3],
                1 => n.sysctls[0].0 = "net/../kernel/hostname".into(),
                _ => n.sysctls[0].0 = "kernel/hostname".into(),
            }
            assert!(
                problems(&ck)[0].contains("network namespace of the tree's own (net:[4])"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_namespace_made_outside_the_tree_needs_a_join() {
        let mut ck = image();
        for p in &mut ck.processes {
            p.namespaces.push(("net".into(), 5));
        }
        ck.namespaces.push(Namespace {
            kind: "net".into(),
            inode: 5,
            external: true,
            foreign: true,
            ..Default::default()
        });
        assert_eq!(problems(&ck), Vec::<String>::new());
        assert!(net_elsewhere(&ck) && !owns(&ck, "net"));
        let joins = |j: &[(&str, &str)]| {
            let j: Vec<(String, std::path::PathBuf)> =
                j.iter().map(|(k, p)| (k.to_string(), p.into())).collect();
            let mut v = Vec::new();
            check_joins(&ck, &j, &mut v);
            v.into_iter().map(|p| p.message).collect::<Vec<_>>()
        };
        let none = joins(&[]);
        assert!(
            none.len() == 1
                && none[0].contains("net:[5]")
                && none[0].contains("--join-ns net:PATH"),
            "{none:?}"
        );
        assert_eq!(joins(&[("net", "/proc/self/ns/net")]), Vec::<String>::new());
        let wrong = joins(&[("net", "/proc/self/ns/uts")]);
        assert!(wrong[0].contains("not a network namespace"), "{wrong:?}");
        let extra = joins(&[("net", "/proc/self/ns/net"), ("uts", "/proc/self/ns/uts")]);
        assert!(
            extra[0].contains("no UTS namespace made outside"),
            "{extra:?}"
        );
        let m = manifest(&ck);
        assert_eq!(m[0]["as"], "own");
        assert_eq!(m[1]["as"], "host");
        assert_eq!(m[3]["as"], "external");
    }

    #[test]
    fn new_namespaces_for_the_owned_ones() {
        let ck = image();
        let (flags, names, sysctls, offsets) = new_namespaces(&ck, (1_000, 10_000));
        assert_eq!(flags, libc::CLONE_NEWUTS | libc::CLONE_NEWTIME);
        assert_eq!(names, Some((&b"box"[..], &b"(none)"[..])));
        assert!(sysctls.is_empty());
        // The clocks continue from the dumped values: 5000 and 8000 on a host at 1000
        // and 10000.
        assert_eq!(offsets, Some((4_000, -2_000)));
        assert!(any_owned(&ck));
        assert!(!any_owned(&checkpoint(vec![process(3)])));
    }
}
