//! Namespaces (other than PID namespaces, which `restore::pidns` handles): which ones
//! each process is in, and the state of those the tree owns.
//!
//! A namespace is either ckpt's own at dump ("external": the host's, joined again at
//! restore by starting the tree in ckpt's) or one the tree created (its root is in it
//! and the root's parent, outside the tree, is not), which restore creates anew before
//! the first process is started: UTS (its names), IPC (its limits; it must hold no
//! SysV object yet) and time (its clocks continue from the dumped values); a mount
//! namespace is built by `kinds::mnt`, before plan. Everything else is refused at dump,
//! naming the process and the namespace: another kind of namespace of the tree's own
//! (net, cgroup, user), a namespace made outside the
//! tree (another container's), processes of the tree in different namespaces of one
//! kind, and a time namespace made for children nobody entered yet.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{DumpError, DumpResult, Problem};
use crate::kinds::check::p;
use crate::model::{Checkpoint, IpcLimits, Namespace, TimeClocks, UtsNames};
use crate::sys;

/// The kinds of namespace recorded (as in /proc/PID/ns/), PID namespaces aside.
pub(crate) const KINDS: [&str; 7] = ["uts", "ipc", "net", "mnt", "cgroup", "time", "user"];

/// Kinds a tree's own namespace of which restore creates.
pub(crate) const RESTORED: [&str; 4] = ["uts", "ipc", "time", "mnt"];

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
    let mut all = Vec::new();
    for kind in KINDS {
        let own = ckpts.get(kind).copied().unwrap_or(0);
        let root_ns = sys::ns::inode(root, kind)?;
        for (i, &(pid, live)) in pids.iter().enumerate() {
            if !live {
                continue;
            }
            let ino = sys::ns::inode(pid, kind)?;
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
        // made it (its parent, outside the tree, is not in it).
        if root_parent > 0 && sys::ns::inode(root_parent, kind).ok() == Some(root_ns) {
            return Err(refuse(
                root,
                format!(
                    "it runs in a {} namespace ({kind}:[{root_ns}]) that is not ckpt's \
                     and that the tree did not make (its parent, PID {root_parent}, \
                     outside the tree, is in it too); run ckpt inside that namespace",
                    title(kind)
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
        all.push(own_namespace(root, kind, root_ns, attached)?);
    }
    Ok((per_proc, all))
}

/// ckpt's own namespaces (inode by kind), as they were when the dump began.
pub(crate) type OwnNamespaces = BTreeMap<&'static str, u64>;

/// ckpt's own namespaces, read before it joins any of the tree's.
pub(crate) fn own_namespaces() -> DumpResult<OwnNamespaces> {
    let mut m = OwnNamespaces::new();
    for kind in KINDS {
        m.insert(kind, sys::ns::inode(0, kind)?);
    }
    Ok(m)
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

/// The state of a namespace of kind `kind` (one of `RESTORED`) the tree owns, read
/// through its process `pid`.
fn own_namespace(
    pid: i32,
    kind: &str,
    inode: u64,
    attached: &BTreeSet<i32>,
) -> DumpResult<Namespace> {
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
        _ => {}
    }
    Ok(ns)
}

// ---- checks (plan) ----

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
            if !ns.external && !root.namespaces.contains(&(kind.clone(), *inode)) {
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

// ---- restore (stage) ----

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

/// Whether restore creates a namespace of kind `kind` for the tree.
pub(crate) fn owns(ckpt: &Checkpoint, kind: &str) -> bool {
    owned(ckpt).iter().any(|ns| ns.kind == kind)
}

/// Whether restore creates namespaces for the tree.
pub(crate) fn any_owned(ckpt: &Checkpoint) -> bool {
    !owned(ckpt).is_empty()
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
    for ns in owned(ckpt) {
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
/// process) the new namespaces the tree had of its own, in their dumped state: every
/// process started afterwards is in them. They end with ckpt and the processes
/// started in them, so a failed restore leaves none behind.
pub(crate) fn enter_new(ckpt: &Checkpoint) -> crate::error::RestoreResult<()> {
    if !any_owned(ckpt) {
        return Ok(());
    }
    crate::error::fault_point("create the tree's namespaces")?;
    let now = (
        sys::ns::clock_ns(libc::CLOCK_MONOTONIC)?,
        sys::ns::clock_ns(libc::CLOCK_BOOTTIME)?,
    );
    let (flags, names, sysctls, offsets) = new_namespaces(ckpt, now);
    sys::ns::unshare_new(flags, names, &sysctls, offsets)?;
    Ok(())
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
        assert!(problems(&ck)[0].contains("process 11 is in another UTS namespace"));

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
