//! PID namespaces nested inside the dumped tree: a process of the tree that made one
//! (unshare(CLONE_NEWPID) then fork, or clone(CLONE_NEWPID)) and the processes in it.
//!
//! Every ID of the image stays the one the tree's own PID namespace gives (`pid`,
//! `ppid`, `pgid`...: ckpt speaks those); a process of a nested namespace also records
//! its IDs below that level (`Process::nspid`, `Thread::nstid`), its namespace
//! (`Process::pid_ns`, numbering `Checkpoint::pid_namespaces`) and, when it called
//! unshare(CLONE_NEWPID), the one its next children go to (`pid_ns_for_children`).
//! Restore makes a nested namespace again the way the kernel allows: the parent's stub
//! calls unshare(CLONE_NEWPID) before it forks the namespace's init, and every process
//! and thread of it is created with clone3 and a `set_tid` array holding one ID per
//! level, innermost first, the tree's level last. IDs a nested process names itself
//! (its process group, the targets of its pidfds, the owners of its descriptors' I/O
//! signals, the threads its POSIX timers signal) are recorded as the tree's IDs, which
//! name processes and threads of the image, and given by restore as the process's own
//! namespace numbers them (`id_seen_by`, `tid_seen_by`, `own_tid`): the injected
//! pidfd_open, fcntl(F_SETOWN_EX) and timer_create run in the process.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use crate::error::{DumpResult, Problem};
use crate::kinds::{check, unsupported};
use crate::model::{Checkpoint, FOwner, FdKind, NestedPidNs, Process};
use crate::sys;

// ---- collect (dump) ----

/// The inode of namespace link `link` (`pid`, `pid_for_children`) of process `pid`;
/// `None` when the kernel shows none (pid_for_children of a process that called
/// unshare(CLONE_NEWPID) and has not forked since).
fn ns_inode(pid: i32, link: &str) -> DumpResult<Option<u64>> {
    let p = format!("/proc/{pid}/ns/{link}");
    match std::fs::metadata(&p) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(sys::SysError::io(format!("stat {p}"), e).into()),
    }
}

/// Whether (frozen) child `child` of `parent` is to be listed before its siblings that
/// are not: children in their parent's own PID namespace first, then the init of a
/// nested namespace (PID 1 there), then the rest (restore forks in image order, and a
/// namespace's init must be its first process).
pub(crate) fn fork_rank(parent: i32, child: i32) -> u8 {
    let levels = |p| sys::proc::status(p).map(|s| s.nspid).unwrap_or_default();
    let (pl, cl) = (levels(parent), levels(child));
    if cl.len() <= pl.len() {
        0
    } else if cl.last() == Some(&1) {
        1
    } else {
        2
    }
}

/// Record the PID namespaces nested inside the tree (`processes` in tree order, with
/// their host IDs, before the image's IDs are made the tree namespace's): each
/// process's and thread's IDs below the root's level, its namespace and where its next
/// children go. What restore could not make again is refused, naming the process.
pub(crate) fn collect_nested(processes: &mut [Process]) -> DumpResult<Vec<NestedPidNs>> {
    let Some(root) = processes.first() else {
        return Ok(Vec::new());
    };
    let level = sys::proc::status(root.pid)?.nspid.len();
    let root_ns = ns_inode(root.pid, "pid")?.unwrap_or(0);
    // namespace inode -> its number (0: the tree's)
    let mut number: BTreeMap<u64, u32> = BTreeMap::from([(root_ns, 0)]);
    let mut nss: Vec<NestedPidNs> = Vec::new();
    for i in 0..processes.len() {
        let pid = processes[i].pid;
        let st = sys::proc::status(pid)?;
        let below = st.nspid.get(level..).unwrap_or_default().to_vec();
        if below.is_empty() {
            continue;
        }
        let ino = ns_inode(pid, "pid")?.ok_or_else(|| {
            unsupported(pid, "its PID namespace cannot be read (/proc/PID/ns/pid)")
        })?;
        let k = match number.get(&ino) {
            Some(&k) => k,
            None => {
                // A new namespace: its parent is its parent process's, one level up.
                let parent = processes[..i]
                    .iter()
                    .find(|q| q.pid == processes[i].ppid)
                    .map(|q| (q.pid_ns, q.nspid.len()));
                let parent = match parent {
                    Some((ns, depth)) if depth + 1 == below.len() => ns,
                    _ => {
                        return Err(unsupported(
                            pid,
                            format!(
                                "it is in a PID namespace nested inside the dumped tree \
                                 (NSpid {:?}) that is not a child of its parent's \
                                 namespace; only namespaces made by unshare(CLONE_NEWPID) \
                                 or clone(CLONE_NEWPID) in the tree are restored",
                                st.nspid
                            ),
                        ));
                    }
                };
                nss.push(NestedPidNs { parent });
                let k = nss.len() as u32;
                number.insert(ino, k);
                k
            }
        };
        let p = &mut processes[i];
        p.nspid = below;
        p.pid_ns = k;
        for t in p.threads.iter_mut().skip(1) {
            let ids = sys::proc::thread_nspid(pid, t.tid)?;
            t.nstid = ids.get(level..).unwrap_or_default().to_vec();
            if t.nstid.len() != p.nspid.len() {
                return Err(unsupported(
                    pid,
                    format!("the namespace IDs of its thread {} cannot be read", t.tid),
                ));
            }
        }
    }
    // Where each live process's next children go.
    for p in processes.iter_mut() {
        if p.is_zombie() {
            continue;
        }
        let pid = p.pid;
        let own = p.pid_ns;
        let kids = match ns_inode(pid, "pid_for_children")? {
            // None: it called unshare(CLONE_NEWPID) and has not forked since; its next
            // child is the init of a namespace below its own, which restore makes too.
            None => {
                nss.push(NestedPidNs { parent: own });
                Some(nss.len() as u32)
            }
            Some(ino) => match number.get(&ino) {
                Some(&k) if k == own => None,
                Some(&k) if nss.get(k as usize - 1).map(|n| n.parent) == Some(own) => Some(k),
                _ => {
                    return Err(unsupported(
                        pid,
                        format!(
                            "its next children go to PID namespace pid:[{ino}], which is \
                             not its own and no process of the dumped tree is in it with \
                             its init (the namespace's init exited, or the process joined \
                             a namespace made outside the tree with setns); restore could \
                             not make it again"
                        ),
                    ));
                }
            },
        };
        p.pid_ns_for_children = kids;
    }
    Ok(nss)
}

// ---- checks (plan) ----

/// How many levels namespace `k` is below the tree's (0 for the tree's); None for a
/// number the image does not list, or a loop.
pub(crate) fn depth(nss: &[NestedPidNs], k: u32) -> Option<usize> {
    let mut d = 0;
    let mut cur = k;
    while cur != 0 {
        cur = nss.get(cur as usize - 1)?.parent;
        d += 1;
        if d > nss.len() {
            return None;
        }
    }
    Some(d)
}

/// Whether a process of namespace `viewer` sees the processes of namespace `target`
/// (the same one, or one below it).
pub(crate) fn sees(nss: &[NestedPidNs], viewer: u32, target: u32) -> bool {
    let mut cur = target;
    for _ in 0..=nss.len() {
        if cur == viewer {
            return true;
        }
        if cur == 0 {
            return false;
        }
        match nss.get(cur as usize - 1) {
            Some(n) => cur = n.parent,
            None => return false,
        }
    }
    false
}

/// Process `p`'s IDs from the tree's namespace inward (`pid`, then `nspid`).
pub(crate) fn ids(p: &Process) -> Vec<i32> {
    std::iter::once(p.pid)
        .chain(p.nspid.iter().copied())
        .collect()
}

/// The ID process `viewer` sees for the process of the image with (tree) ID `id`, or for
/// an ID of the outside world (`id` itself, for a viewer in the tree's namespace); None
/// when its namespace does not show that process.
pub(crate) fn id_seen_by(ckpt: &Checkpoint, viewer: &Process, id: i32) -> Option<i32> {
    if viewer.pid_ns == 0 {
        return Some(id);
    }
    let target = ckpt.processes.iter().find(|q| q.pid == id)?;
    if !sees(&ckpt.pid_namespaces, viewer.pid_ns, target.pid_ns) {
        return None;
    }
    ids(target).get(viewer.nspid.len()).copied()
}

/// The ID process `viewer` sees for thread `tid` of the image (a process's main thread,
/// named by its PID, or another of its threads), or for an ID of the outside world
/// (`tid` itself, for a viewer in the tree's namespace); None when its namespace does
/// not show that thread.
pub(crate) fn tid_seen_by(ckpt: &Checkpoint, viewer: &Process, tid: i32) -> Option<i32> {
    if viewer.pid_ns == 0 || ckpt.processes.iter().any(|q| q.pid == tid) {
        return id_seen_by(ckpt, viewer, tid);
    }
    let (q, t) = ckpt.processes.iter().find_map(|q| {
        q.threads
            .iter()
            .skip(1)
            .find(|t| t.tid == tid)
            .map(|t| (q, t))
    })?;
    if !sees(&ckpt.pid_namespaces, viewer.pid_ns, q.pid_ns) {
        return None;
    }
    std::iter::once(t.tid)
        .chain(t.nstid.iter().copied())
        .nth(viewer.nspid.len())
}

/// The ID process `p` gives itself for its own thread `tid` (its main thread by its PID,
/// or another of its threads): the innermost of its namespace's IDs. None for a thread
/// that is not one of its own.
pub(crate) fn own_tid(p: &Process, tid: i32) -> Option<i32> {
    if tid == p.pid {
        return Some(p.nspid.last().copied().unwrap_or(p.pid));
    }
    let t = p.threads.iter().skip(1).find(|t| t.tid == tid)?;
    Some(t.nstid.last().copied().unwrap_or(t.tid))
}

/// The ID process `viewer` passes to F_SETOWN_EX for signal owner `o` (of type
/// F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP: a thread, a process, or a group named by
/// its leader's ID), as its PID namespace numbers it; None when it does not show it.
pub(crate) fn owner_seen_by(ckpt: &Checkpoint, viewer: &Process, o: &FOwner) -> Option<i32> {
    use linux_raw_sys::general::F_OWNER_TID;
    if o.kind as u32 == F_OWNER_TID {
        tid_seen_by(ckpt, viewer, o.pid)
    } else {
        id_seen_by(ckpt, viewer, o.pid)
    }
}

/// The `set_tid` array that creates a task with IDs `ids` (the tree's first): innermost
/// first.
pub(crate) fn set_tid_array(ids: &[i32]) -> Vec<i32> {
    ids.iter().rev().copied().collect()
}

/// The image's nested PID namespaces are ones restore can make again, in an order it
/// can: each process is in its parent's namespace or in the one its parent's next
/// children go to (a child of the parent's), a namespace's first process is its init
/// (PID 1 there) and lives, the IDs are as deep as the namespace, and the processes and
/// threads a nested process names by an ID (pidfds, signal owners, timers) are ones its
/// namespace shows.
pub(crate) fn check_nested(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let nss = &ckpt.pid_namespaces;
    let procs = &ckpt.processes;
    let bad = |problems: &mut Vec<Problem>, m: String| check::p(problems, "malformed", m);
    if nss.len() > procs.len() + 1 || nss.iter().any(|n| n.parent as usize > nss.len()) {
        bad(
            problems,
            "the image's nested PID namespaces do not hold together".into(),
        );
        return;
    }
    for (k, _) in nss.iter().enumerate() {
        if depth(nss, k as u32 + 1).is_none_or(|d| d > 31) {
            bad(
                problems,
                format!("nested PID namespace {} has no valid parent", k + 1),
            );
            return;
        }
    }
    if !nss.is_empty() {
        check_queued_credentials(ckpt, problems);
    }
    let mut first: BTreeMap<u32, &Process> = BTreeMap::new();
    for (i, p) in procs.iter().enumerate() {
        if depth(nss, p.pid_ns) != Some(p.nspid.len())
            || p.nspid.iter().any(|&x| x <= 0)
            || p.threads
                .iter()
                .skip(1)
                .any(|t| t.nstid.len() != p.nspid.len())
        {
            bad(
                problems,
                format!("process {}: its IDs do not match its PID namespace", p.pid),
            );
            continue;
        }
        if let Some(k) = p.pid_ns_for_children {
            if nss.get(k as usize - 1).map(|n| n.parent) != Some(p.pid_ns) || k == 0 {
                bad(
                    problems,
                    format!(
                        "process {}: its children's PID namespace is not a child of its own",
                        p.pid
                    ),
                );
            }
        }
        if p.pid_ns != 0 && !first.contains_key(&p.pid_ns) {
            first.insert(p.pid_ns, p);
            if p.nspid.last() != Some(&1) {
                bad(
                    problems,
                    format!(
                        "process {} is the first of its PID namespace but not its init",
                        p.pid
                    ),
                );
            } else if p.is_zombie() && procs.iter().filter(|q| q.pid_ns == p.pid_ns).count() > 1 {
                bad(
                    problems,
                    format!(
                        "process {} is the init of a nested PID namespace and a zombie, with \
                         other processes in it",
                        p.pid
                    ),
                );
            }
        }
        if i > 0 {
            if let Some(parent) = procs[..i].iter().find(|q| q.pid == p.ppid) {
                if p.pid_ns != parent.pid_ns && Some(p.pid_ns) != parent.pid_ns_for_children {
                    bad(
                        problems,
                        format!(
                            "process {} is neither in its parent's PID namespace nor in the \
                             one its parent's children go to",
                            p.pid
                        ),
                    );
                }
                // Restore forks a parent's children in image order: those of its own
                // namespace before it calls unshare(CLONE_NEWPID).
                if p.pid_ns == parent.pid_ns
                    && parent.pid_ns_for_children.is_some()
                    && procs[..i]
                        .iter()
                        .any(|q| q.ppid == parent.pid && q.pid_ns != parent.pid_ns)
                {
                    bad(
                        problems,
                        format!(
                            "process {} comes after a sibling in a nested PID namespace",
                            p.pid
                        ),
                    );
                }
            }
            if p.pid_ns != 0 {
                check_group_reachable(ckpt, i, problems);
            }
        }
        if p.pid_ns != 0 {
            check_held_ids(ckpt, p, problems);
        }
    }
}

/// Queued unix messages are sent again with their senders' credentials from a process
/// that holds the receiving socket (a pair's first holder; for a datagram, the named
/// sender's socket or, unnamed, the receiver's), which gives the sender's ID as its own
/// PID namespace numbers it: every process that may send must see the sender. One that
/// does not (a nested process holding a pair whose messages came from outside its
/// namespace) is refused, naming it, its descriptor and the sender.
fn check_queued_credentials(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let mut refuse = |p: &Process, fd: i32, sender: i32| {
        check::p(
            problems,
            "unsupported",
            format!(
                "descriptor {fd} of process {} (in a PID namespace nested inside the tree) \
                 is a unix socket with a message queued with the credentials \
                 (SCM_CREDENTIALS) of process {sender}, which that namespace does not \
                 show: restore sends it again from there and could not name its sender",
                p.pid
            ),
        )
    };
    for sp in &ckpt.socketpairs {
        let senders: Vec<i32> = sp
            .msgs0
            .iter()
            .chain(sp.msgs1.iter())
            .filter_map(|m| m.creds)
            .chain(
                sp.runs0
                    .iter()
                    .chain(sp.runs1.iter())
                    .filter_map(|r| r.creds),
            )
            .map(|c| c.pid)
            .collect();
        for p in &ckpt.processes {
            for f in &p.fds {
                if !matches!(f.kind, FdKind::UnixPair { id, .. } if id == sp.id) {
                    continue;
                }
                if let Some(&c) = senders.iter().find(|&&c| id_seen_by(ckpt, p, c).is_none()) {
                    refuse(p, f.fd, c);
                }
            }
        }
    }
    for p in &ckpt.processes {
        for f in &p.fds {
            let FdKind::UnixDgram { sock, .. } = &f.kind else {
                continue;
            };
            for m in &sock.msgs {
                let Some(c) = m.creds else { continue };
                // The sending processes: the receiver's, or those holding the sender.
                let mut from: Vec<(&Process, i32)> = Vec::new();
                if m.from.is_empty() {
                    from.push((p, f.fd));
                } else {
                    for q in &ckpt.processes {
                        for g in &q.fds {
                            if matches!(&g.kind, FdKind::UnixDgram { sock: s, .. } if s.name == m.from)
                            {
                                from.push((q, g.fd));
                            }
                        }
                    }
                }
                if let Some((q, fd)) = from
                    .into_iter()
                    .find(|(q, _)| id_seen_by(ckpt, q, c.pid).is_none())
                {
                    refuse(q, fd, c.pid);
                }
            }
        }
    }
}

/// A nested process's group is one it can join: led by a process its namespace shows
/// (it joins with setpgid), or its parent's (it is forked in it; its parent joins first,
/// which needs the leader to be created before it).
fn check_group_reachable(ckpt: &Checkpoint, i: usize, problems: &mut Vec<Problem>) {
    let procs = &ckpt.processes;
    let p = &procs[i];
    if p.sid == p.pid || p.pgid == p.pid || id_seen_by(ckpt, p, p.pgid).is_some() {
        return;
    }
    let parent = procs[..i].iter().find(|q| q.pid == p.ppid);
    let leader = procs.iter().position(|q| q.pid == p.pgid);
    let ok = parent.is_some_and(|q| q.pgid == p.pgid) && leader.is_none_or(|l| l < i);
    if !ok {
        check::p(
            problems,
            "unsupported",
            format!(
                "process {} (in a nested PID namespace) is in process group {}, whose \
                 leader its namespace does not show and which is not its parent's: \
                 restore cannot put it there",
                p.pid, p.pgid
            ),
        );
    }
}

/// What a nested process holds that names another process or thread by an ID, which
/// restore gives from inside the process (the injected fcntl, pidfd_open, timer_create
/// take IDs as its PID namespace numbers them): that namespace must show it. (Owners and
/// targets outside the tree are refused by their kinds' checks.)
fn check_held_ids(ckpt: &Checkpoint, p: &Process, problems: &mut Vec<Problem>) {
    let in_image = |id: i32| ckpt.processes.iter().any(|q| q.pid == id);
    let mut refuse = |what: String| {
        check::p(
            problems,
            "unsupported",
            format!(
                "process {} (in a PID namespace nested inside the tree) holds {what}, \
                 which its PID namespace does not show: restore gives that ID from inside \
                 the process and could not name it",
                p.pid
            ),
        )
    };
    for fd in &p.fds {
        if let Some(o) = &fd.owner {
            let known = if o.kind as u32 == linux_raw_sys::general::F_OWNER_PGRP {
                ckpt.processes.iter().any(|q| q.pgid == o.pid)
            } else {
                ckpt.processes
                    .iter()
                    .any(|q| q.threads.iter().any(|t| t.tid == o.pid) || q.pid == o.pid)
            };
            if o.pid > 0 && known && owner_seen_by(ckpt, p, o).is_none() {
                let what = match o.kind as u32 {
                    linux_raw_sys::general::F_OWNER_PGRP => "process group",
                    linux_raw_sys::general::F_OWNER_TID => "thread",
                    _ => "process",
                };
                refuse(format!(
                    "descriptor {} whose I/O signals (F_SETOWN) go to {what} {}",
                    fd.fd, o.pid
                ));
            }
        }
        if let FdKind::Pidfd { pid, .. } = fd.kind {
            if in_image(pid) && id_seen_by(ckpt, p, pid).is_none() {
                refuse(format!("descriptor {}, a pidfd of process {pid}", fd.fd));
            }
        }
    }
    for t in &p.posix_timers {
        if t.notify_tid != 0 && own_tid(p, t.notify_tid).is_none() {
            check::p(
                problems,
                "malformed",
                format!(
                    "process {}: POSIX timer {} signals thread {}, which is not one of its own",
                    p.pid, t.id, t.notify_tid
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil;

    fn proc_(pid: i32, ppid: i32, nspid: &[i32], ns: u32) -> Process {
        let mut p = testutil::process(pid);
        p.ppid = ppid;
        p.pgid = 1;
        p.sid = 1;
        p.nspid = nspid.to_vec();
        p.pid_ns = ns;
        p
    }

    /// R (1) -> C (2, unshared) -> G (3; PID 1 below) -> P (4; PID 2 below).
    fn nest() -> Checkpoint {
        let mut ck = testutil::checkpoint(vec![
            proc_(1, 0, &[], 0),
            proc_(2, 1, &[], 0),
            proc_(3, 2, &[1], 1),
            proc_(4, 3, &[2], 1),
        ]);
        ck.processes[1].pid_ns_for_children = Some(1);
        ck.pid_namespaces = vec![NestedPidNs { parent: 0 }];
        ck
    }

    fn problems(ck: &Checkpoint) -> Vec<String> {
        let mut v = Vec::new();
        check_nested(ck, &mut v);
        v.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn a_namespace_made_in_the_tree_passes() {
        assert_eq!(problems(&nest()), Vec::<String>::new());
    }

    #[test]
    fn ids_are_seen_at_each_level() {
        let ck = nest();
        let (c, g, p) = (&ck.processes[1], &ck.processes[2], &ck.processes[3]);
        assert_eq!(id_seen_by(&ck, c, 4), Some(4));
        assert_eq!(id_seen_by(&ck, g, 4), Some(2));
        assert_eq!(id_seen_by(&ck, p, 3), Some(1));
        assert_eq!(id_seen_by(&ck, g, 2), None, "C is outside G's namespace");
        assert_eq!(set_tid_array(&ids(p)), vec![2, 4]);
        assert_eq!(depth(&ck.pid_namespaces, 1), Some(1));
    }

    #[test]
    fn the_first_process_of_a_namespace_must_be_its_init() {
        let mut ck = nest();
        ck.processes[2].nspid = vec![2];
        ck.processes[3].nspid = vec![1];
        assert!(problems(&ck)[0].contains("the first of its PID namespace but not its init"));
    }

    #[test]
    fn a_child_in_a_namespace_its_parent_did_not_make_is_refused() {
        let mut ck = nest();
        ck.processes[1].pid_ns_for_children = None;
        assert!(problems(&ck)[0].contains("neither in its parent's PID namespace"));
    }

    #[test]
    fn ids_deeper_than_the_namespace_are_malformed() {
        let mut ck = nest();
        ck.processes[3].nspid = vec![2, 5];
        assert!(problems(&ck)[0].contains("do not match its PID namespace"));
        let mut ck = nest();
        ck.pid_namespaces = vec![NestedPidNs { parent: 1 }];
        assert!(problems(&ck)[0].contains("no valid parent"));
    }

    #[test]
    fn a_nested_process_naming_what_its_namespace_shows_passes() {
        use crate::model::FOwner;
        use linux_raw_sys::general::{F_OWNER_PGRP, F_OWNER_TID};
        let mut ck = nest();
        ck.processes[2].pgid = 3;
        ck.processes[3].pgid = 3;
        ck.processes[3].threads.push(testutil::thread(5));
        ck.processes[3].threads[1].nstid = vec![3];
        let p = &mut ck.processes[3];
        p.fds.push(testutil::fd(
            5,
            FdKind::Pidfd {
                pid: 3,
                flags: 0,
                reaped: None,
            },
        ));
        p.fds.push(testutil::fd(
            6,
            FdKind::Pidfd {
                pid: 4,
                flags: 0,
                reaped: None,
            },
        ));
        let mut f = testutil::fd(7, testutil::eventfd());
        f.owner = Some(FOwner {
            kind: F_OWNER_PGRP as i32,
            pid: 3,
            sig: 0,
        });
        p.fds.push(f);
        let mut f = testutil::fd(8, testutil::eventfd());
        f.owner = Some(FOwner {
            kind: F_OWNER_TID as i32,
            pid: 5,
            sig: 0,
        });
        p.fds.push(f);
        p.posix_timers.push(crate::model::PosixTimer {
            id: 0,
            clock: 1,
            signo: 10,
            sigev_value: 0,
            notify: 4,
            notify_tid: 5,
            value_ns: 0,
            interval_ns: 0,
            overrun: 0,
        });
        assert_eq!(problems(&ck), Vec::<String>::new());
        let (g, p) = (&ck.processes[2], &ck.processes[3]);
        assert_eq!(tid_seen_by(&ck, g, 5), Some(3));
        assert_eq!(tid_seen_by(&ck, g, 4), Some(2));
        assert_eq!(own_tid(p, 5), Some(3));
        assert_eq!(own_tid(p, 4), Some(2));
        assert_eq!(own_tid(p, 3), None, "not its thread");
    }

    #[test]
    fn a_nested_process_naming_what_its_namespace_hides_is_refused() {
        use crate::model::FOwner;
        let mut ck = nest();
        ck.processes[3].fds.push(testutil::fd(
            5,
            FdKind::Pidfd {
                pid: 2,
                flags: 0,
                reaped: None,
            },
        ));
        let mut f = testutil::fd(7, testutil::eventfd());
        f.owner = Some(FOwner {
            kind: linux_raw_sys::general::F_OWNER_PGRP as i32,
            pid: 1,
            sig: 0,
        });
        ck.processes[3].fds.push(f);
        let v = problems(&ck);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("descriptor 5, a pidfd of process 2"), "{v:?}");
        assert!(v[1].contains("go to process group 1"), "{v:?}");
        assert!(v.iter().all(|m| m.contains("does not show")), "{v:?}");
    }

    #[test]
    fn queued_credentials_must_name_a_sender_the_holder_sees() {
        use crate::model::{SockCreds, SocketPairState, StreamRun};
        let mut ck = nest();
        let run = |pid| StreamRun {
            len: 3,
            creds: Some(SockCreds {
                pid,
                uid: 0,
                gid: 0,
            }),
            rights: Vec::new(),
        };
        ck.socketpairs = vec![SocketPairState {
            id: 9,
            runs0: vec![run(4)],
            ..SocketPairState::default()
        }];
        for (fd, end) in [(5, 0), (6, 1)] {
            ck.processes[2].fds.push(testutil::fd(
                fd,
                FdKind::UnixPair {
                    id: 9,
                    end,
                    flags: 2,
                },
            ));
        }
        // From P (4), which G's namespace shows: sent again as 2 there.
        assert_eq!(problems(&ck), Vec::<String>::new());
        // From C (2), which it does not.
        ck.socketpairs[0].runs0 = vec![run(2)];
        let v = problems(&ck);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].contains("descriptor 5 of process 3")
                && v[0].contains("SCM_CREDENTIALS")
                && v[0].contains("of process 2"),
            "{v:?}"
        );
    }

    #[test]
    fn a_group_whose_leader_is_hidden_must_be_the_parents() {
        let mut ck = nest();
        // G and P in R's group (R is hidden from them): inherited from C, fine.
        assert!(problems(&ck).is_empty());
        // P in C's group, G in R's: P cannot get there.
        ck.processes[1].pgid = 2;
        ck.processes[3].pgid = 2;
        assert!(problems(&ck)[0].contains("whose leader its namespace does not show"));
    }
}
