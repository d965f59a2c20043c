//! System V IPC objects that belong to the tree: shared memory segments, semaphore sets
//! and message queues of the host's IPC namespace (or all of the tree's own), saved with their IDs, keys, owners,
//! creators, modes and contents, and made again under the same IDs at restore.
//!
//! **Which objects belong to the tree** (the host's IPC namespace is shared with
//! everyone, so the tree's objects must be picked out; a tree with an IPC namespace of
//! its own would simply take all of them):
//! - a segment attached by a process of the tree (all of its attachments must be the
//!   tree's: one also attached outside is refused, naming it), or attached by no one and
//!   created by a process of the tree (`cpid`);
//! - a semaphore set on which a process of the tree made the last operation of some
//!   semaphore (`sempid`); refused if another semaphore's last operation was made by a
//!   live process outside the tree;
//! - a queue a process of the tree sent to or received from last (`lspid`/`lrpid`);
//!   refused if the other one is a live process outside the tree.
//!
//! Objects the tree never touched that way (a set created but never operated on, a queue
//! never used) are not the tree's: they stay on the host, as its files do, and the
//! restored program finds them there.
//!
//! **In an IPC namespace of the tree's own** (a container's, `unshare --ipc`) every
//! object is the tree's: all are saved (segments attached or not, sets, queues), and
//! restore makes them in the new namespace (ckpt's restoring thread is in it, see
//! `kinds::ns::enter_new`) under their IDs, through that namespace's
//! `/proc/sys/kernel/*_next_id`; its limits were written there first, and plan checks
//! that the objects fit them ([`check_limits`]).
//!
//! **Semaphore undo adjustments** (SEM_UNDO) have no read interface; dump finds each by
//! asking the process itself (see [`probe_undo`]) and restore sets them again with
//! value-neutral semops made by the restored process.
//!
//! A dump that kills the tree removes its objects once the image is written (they would
//! outlive it, their IDs taken, and the restore would be refused); with
//! `--leave-running` they stay with the running tree.

use crate::arch::native::nr;
use crate::error::{DumpError, DumpResult, Problem, RestoreError, RestoreResult};
use crate::kinds::check::{self, Held};
use crate::kinds::mem::shmem::SysvCreated;
use crate::model::{
    IpcPerm, Process, SemUndo, SemUndoList, SysvIpc, SysvMsg, SysvMsgQueue, SysvSem, SysvShm,
    VmaKind,
};
use crate::remote::Ctx;
use crate::sys::inject::Injector;
use crate::sys::ipc::{self as sysipc, IpcKind, IpcObject, NewObject};
use crate::sys::mem::RemoteMem;
use std::collections::{BTreeMap, BTreeSet};

/// SHM_LOCKED in a segment's mode (linux/shm.h).
pub(crate) const SHM_LOCKED: u32 = 0o2000;
/// SHM_DEST in a segment's mode (linux/shm.h).
pub(crate) const SHM_DEST: u32 = 0o1000;
/// Contents of a segment attached by no process of the tree are kept in the metadata;
/// larger ones are refused.
const MAX_UNATTACHED: u64 = 256 << 20;

// ---- collect (dump) ----

fn perm(o: &IpcObject) -> IpcPerm {
    IpcPerm {
        key: o.key,
        id: o.id,
        uid: o.uid,
        gid: o.gid,
        cuid: o.cuid,
        cgid: o.cgid,
        mode: o.mode,
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A live process outside the tree among `pids`, if any.
fn outsider(pids: &[i32], tree: &BTreeSet<i32>) -> Option<i32> {
    pids.iter()
        .copied()
        .find(|&p| p > 0 && !tree.contains(&p) && alive(p))
}

/// The System V objects that belong to the tree (see the module's rule), read from the
/// IPC namespace of the calling thread with their contents. `processes` are those of
/// the tree in that namespace, with host PIDs; `tree` the PIDs of all. With `whole_ns`, the calling thread is in the IPC namespace of the tree's own
/// (`kinds::ns::join_own_ipc`), whose objects are all the tree's. An object the tree
/// shares with a live process outside it, or undo adjustments it cannot bring back,
/// refuse the dump (nothing is changed).
pub(crate) fn collect(
    processes: &[&Process],
    tree: &BTreeSet<i32>,
    whole_ns: bool,
) -> DumpResult<SysvIpc> {
    let refuse = |pid: i32, why: String| DumpError::Unsupported { pid, why };
    let mut out = SysvIpc::default();
    // Attachments (areas) of each segment in the tree, and the first process with one.
    let mut attached: BTreeMap<i32, (u64, i32)> = BTreeMap::new();
    for p in processes {
        for v in &p.vmas {
            if let VmaKind::SysvShm { shmid, .. } = v.kind {
                attached.entry(shmid).or_insert((0, p.pid)).0 += 1;
            }
        }
    }
    for o in sysipc::list(IpcKind::Shm)? {
        let data = match attached.get(&o.id) {
            Some(&(n, pid)) => {
                if o.count > n {
                    return Err(refuse(
                        pid,
                        format!(
                            "System V shared memory segment {} (key {:#x}) is also attached \
                             outside the dumped tree ({} attachments, {n} of them the \
                             tree's); it cannot be restored while others use it",
                            o.id, o.key, o.count
                        ),
                    ));
                }
                Vec::new()
            }
            None if o.count == 0 && (whole_ns || tree.contains(&o.pid1)) => {
                if o.size > MAX_UNATTACHED {
                    return Err(refuse(
                        o.pid1,
                        format!(
                            "System V shared memory segment {} (key {:#x}), created by the \
                             process and attached by none, is {} bytes: more than the {} \
                             ckpt keeps of an unattached segment",
                            o.id, o.key, o.size, MAX_UNATTACHED
                        ),
                    ));
                }
                let mut d = sysipc::shm_read(o.id, o.size as usize)?;
                let used = d.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                d.truncate(used);
                d
            }
            None if whole_ns => {
                return Err(refuse(
                    processes.first().map_or(0, |p| p.pid),
                    format!(
                        "System V shared memory segment {} (key {:#x}) of its IPC \
                         namespace of its own is attached by {} processes outside the \
                         dumped tree; it cannot be restored while others use it",
                        o.id, o.key, o.count
                    ),
                ));
            }
            None => continue,
        };
        out.shm.push(SysvShm {
            perm: perm(&o),
            size: o.size,
            data,
        });
    }
    for o in sysipc::list(IpcKind::Sem)? {
        let pids = sysipc::sem_pids(o.id, o.size as usize)?;
        let ours = pids.iter().copied().find(|p| tree.contains(p));
        let Some(ours) = ours.or(whole_ns.then_some(0)) else {
            continue;
        };
        if let Some(other) = outsider(&pids, tree).filter(|_| !whole_ns) {
            return Err(refuse(
                ours,
                format!(
                    "System V semaphore set {} (key {:#x}) is also used by process {other} \
                     outside the dumped tree; it cannot be restored while others use it",
                    o.id, o.key
                ),
            ));
        }
        out.sem.push(SysvSem {
            perm: perm(&o),
            values: sysipc::sem_values(o.id, o.size as usize)?,
        });
    }
    for o in sysipc::list(IpcKind::Msg)? {
        let pids = [o.pid1, o.pid2];
        let ours = pids.iter().copied().find(|p| tree.contains(p));
        let Some(ours) = ours.or(whole_ns.then_some(0)) else {
            continue;
        };
        if let Some(other) = outsider(&pids, tree).filter(|_| !whole_ns) {
            return Err(refuse(
                ours,
                format!(
                    "System V message queue {} (key {:#x}) is also used by process {other} \
                     outside the dumped tree; it cannot be restored while others use it",
                    o.id, o.key
                ),
            ));
        }
        let messages = sysipc::msg_copy_all(o.id, o.count, o.size)?
            .into_iter()
            .map(|(mtype, text)| SysvMsg { mtype, text })
            .collect();
        out.msg.push(SysvMsgQueue {
            perm: perm(&o),
            qbytes: sysipc::msg_qbytes(o.id)?,
            messages,
        });
    }
    // Undo adjustments go back with their set, which must be the tree's.
    for p in processes.iter().filter(|p| !p.sem_undo.is_empty()) {
        for u in &p.sem_undo {
            if !out.sem.iter().any(|s| s.perm.id == u.semid) {
                return Err(refuse(
                    p.pid,
                    format!(
                        "it has undo adjustments (SEM_UNDO) on System V semaphore set {}, \
                         which is not the tree's (its last operations were made outside \
                         it)",
                        u.semid
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The System V objects of each IPC namespace a process below the tree's root made
/// (in `namespaces`, the tree's, with its limits and named queues read already), read
/// from a thread of ckpt that joins it: all of them are the tree's (nothing outside it
/// is in that namespace, `kinds::ns` checked), saved in the namespace's `IpcLimits`,
/// with those of the segments the processes in it (`processes`, host PIDs, each with
/// its namespaces) attach, and the semaphore undo adjustments they have there (asked
/// of each by [`probe_undo`] on the namespace's sets, restored by [`restore_undo`]).
/// Refused, naming the process: a descriptor of a named queue that is not the
/// namespace's.
pub(crate) fn collect_below_root(
    processes: &[Process],
    namespaces: &mut [crate::model::Namespace],
) -> DumpResult<()> {
    let tree: BTreeSet<i32> = processes.iter().map(|p| p.pid).collect();
    for ns in namespaces.iter_mut() {
        if ns.kind != "ipc" || ns.external {
            continue;
        }
        let in_ns: Vec<&Process> = processes
            .iter()
            .filter(|p| p.namespaces.contains(&("ipc".to_string(), ns.inode)))
            .filter(|p| crate::kinds::ns::ipc_below_root(processes, p))
            .collect();
        let (Some(maker), Some(l)) = (in_ns.first(), ns.ipc.as_mut()) else {
            continue;
        };
        crate::kinds::fd::mqueue::refuse_outside_namespace(in_ns.iter().copied(), &l.mqueues)?;
        let objects =
            crate::sys::ns::inside(maker.pid, &["ipc"], || Ok(collect(&in_ns, &tree, true)))??;
        l.sysv = objects;
    }
    Ok(())
}

/// Record each live process's System V semaphore undo list (`Process::sem_undo_list`):
/// whether it has one (kcmp KCMP_SYSVSEM against `reference`, which has none), and the
/// first process before it in `processes` (host PIDs) with the same one. A sharer's
/// adjustments are those of that process (asked of each, the same): they are kept once,
/// there. A thread whose list is not its process's (made by clone with CLONE_THREAD but
/// not CLONE_SYSVSEM, after the process had one, or the other way round) refuses the
/// dump: restore gives every thread its process's.
pub(crate) fn collect_undo_lists(
    processes: &mut [Process],
    reference: &sysipc::NoUndoList,
) -> DumpResult<()> {
    let pids: BTreeSet<i32> = processes.iter().map(|p| p.pid).collect();
    // The live processes seen so far that have a list.
    let mut seen: Vec<i32> = Vec::new();
    for p in processes.iter_mut().filter(|p| !p.is_zombie()) {
        let has = reference.has(p.pid)?;
        // The root's parent is not restored: a list shared with it would come back as
        // the root's alone (and its adjustments applied when the root exits).
        if has
            && p.ppid > 0
            && !pids.contains(&p.ppid)
            && sysipc::same_sem_undo(p.pid, p.ppid).unwrap_or(false)
        {
            return Err(DumpError::Unsupported {
                pid: p.pid,
                why: format!(
                    "it shares its System V semaphore undo list with its parent {}, \
                     outside the dumped tree (clone with CLONE_SYSVSEM); restore would \
                     give it one of its own",
                    p.ppid
                ),
            });
        }
        for t in p.threads.iter().filter(|t| t.tid != p.pid) {
            if !sysipc::same_sem_undo(t.tid, p.pid)? {
                return Err(DumpError::Unsupported {
                    pid: p.pid,
                    why: format!(
                        "its thread {} has a System V semaphore undo list other than the \
                         process's (a thread made without CLONE_SYSVSEM); restore gives \
                         every thread the process's",
                        t.tid
                    ),
                });
            }
        }
        let list = if !has {
            SemUndoList::Absent
        } else {
            let mut first = None;
            for &q in &seen {
                if sysipc::same_sem_undo(p.pid, q)? {
                    first = Some(q);
                    break;
                }
            }
            match first {
                Some(q) => {
                    p.sem_undo.clear();
                    SemUndoList::Shared(q)
                }
                None => SemUndoList::Own,
            }
        };
        if has {
            seen.push(p.pid);
        }
        p.sem_undo_list = Some(list);
    }
    Ok(())
}

/// The IDs of the tree's objects, by kind: free once the tree is gone (`Held`).
pub(crate) fn held_ids(ipc: &SysvIpc) -> BTreeSet<(u8, i32)> {
    let mut s = BTreeSet::new();
    s.extend(ipc.shm.iter().map(|o| (0u8, o.perm.id)));
    s.extend(ipc.sem.iter().map(|o| (1u8, o.perm.id)));
    s.extend(ipc.msg.iter().map(|o| (2u8, o.perm.id)));
    s
}

fn kind_code(k: IpcKind) -> u8 {
    match k {
        IpcKind::Shm => 0,
        IpcKind::Sem => 1,
        IpcKind::Msg => 2,
    }
}

/// After the tree was killed (the image is written): remove its objects, and wait a
/// little for segments its dying processes still attach to go. Returns warnings.
pub(crate) fn remove_owned(ipc: &SysvIpc) -> Vec<String> {
    let mut warn = Vec::new();
    let all = ipc
        .shm
        .iter()
        .map(|o| (IpcKind::Shm, &o.perm))
        .chain(ipc.sem.iter().map(|o| (IpcKind::Sem, &o.perm)))
        .chain(ipc.msg.iter().map(|o| (IpcKind::Msg, &o.perm)));
    for (kind, p) in all {
        // A segment removed while attached (SHM_DEST) goes with the last detach.
        if kind == IpcKind::Shm && p.mode & SHM_DEST != 0 {
            continue;
        }
        if let Err(e) = sysipc::remove(kind, p.id) {
            warn.push(format!(
                "the tree's System V {} {} (key {:#x}) was not removed ({e}); a restore on \
                 this host is refused while it is there",
                kind_name(kind),
                p.id,
                p.key
            ));
        }
    }
    let ids: BTreeSet<i32> = ipc.shm.iter().map(|o| o.perm.id).collect();
    if !ids.is_empty() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            match sysipc::list(IpcKind::Shm) {
                Ok(l) if l.iter().any(|o| ids.contains(&o.id)) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
    }
    warn
}

fn kind_name(k: IpcKind) -> &'static str {
    match k {
        IpcKind::Shm => "shared memory segment",
        IpcKind::Sem => "semaphore set",
        IpcKind::Msg => "message queue",
    }
}

/// One semop operation: (semaphore, operation, flags).
pub(crate) type SemOp = (u16, i16, i16);

/// Operations on semaphore `num` (whose value is `value` now) that change the caller's
/// undo adjustment of it by `-d` and leave its value as it was: the value is first
/// brought to where each SEM_UNDO step has room (0 for steps up, 16384 for steps
/// down), each step of at most 16384 is taken back by a plain operation, and the value
/// is put back. With `probe`, a last operation that always blocks (-32768) ends the
/// list instead, so the kernel undoes everything: with IPC_NOWAIT it then fails with
/// EAGAIN if every step fitted the undo range (-32768..=32767) and ERANGE if one did
/// not. Repeating one semaphore makes the kernel apply the operations in order,
/// each checked against the result of the ones before (its "dupsop" path).
pub(crate) fn undo_ops(num: u16, value: i32, d: i32, probe: bool) -> Vec<SemOp> {
    let nowait = libc::IPC_NOWAIT as i16;
    let undo = libc::SEM_UNDO as i16;
    let base = if d > 0 { 0 } else { 16384 };
    let mut ops = Vec::new();
    if base != value {
        ops.push((num, (base - value) as i16, nowait));
    }
    let mut left = d;
    while left != 0 {
        let x = left.clamp(-16384, 16384);
        ops.push((num, x as i16, nowait | undo));
        ops.push((num, (-x) as i16, nowait));
        left -= x;
    }
    if probe {
        ops.push((num, i16::MIN, nowait));
    } else if value != base {
        ops.push((num, (value - base) as i16, nowait));
    }
    ops
}

/// `ops` as the kernel's struct sembuf array.
pub(crate) fn sembufs(ops: &[SemOp]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ops.len() * 6);
    for (n, op, fl) in ops {
        b.extend_from_slice(&n.to_ne_bytes());
        b.extend_from_slice(&op.to_ne_bytes());
        b.extend_from_slice(&fl.to_ne_bytes());
    }
    b
}

/// The undo adjustment found by `probe(d)` (whether the adjustment minus `d` stays in
/// -32768..=32767; `None`: the set cannot be asked), by bisection: the largest `d` in
/// 0..=65535 that fits is the adjustment plus 32768. The usual 0 takes two questions
/// (32768 fits, 32769 does not), any other at most 17.
pub(crate) fn search_adj(
    probe: &mut dyn FnMut(i32) -> DumpResult<Option<bool>>,
) -> DumpResult<Option<i16>> {
    let (mut lo, mut hi) = match probe(32768)? {
        None => return Ok(None),
        Some(false) => (0i32, 32767i32),
        Some(true) => match probe(32769)? {
            None => return Ok(None),
            Some(false) => return Ok(Some(0)),
            Some(true) => (32769, 65535),
        },
    };
    while lo < hi {
        let mid = (lo + hi + 1) / 2;
        match probe(mid)? {
            Some(true) => lo = mid,
            Some(false) => hi = mid - 1,
            None => return Ok(None),
        }
    }
    Ok(Some((lo - 32768) as i16))
}

/// The semaphore sets whose undo adjustments are asked of the tree's processes: those
/// on which a process of the tree (`tree`, host PIDs) made the last operation of some
/// semaphore, i.e. the sets that can be the tree's. (A SEM_UNDO operation makes its
/// process the last one; adjustments on a set every semaphore of which was operated on
/// outside the tree since are not seen.)
pub(crate) fn undo_candidates(tree: &BTreeSet<i32>) -> DumpResult<Vec<i32>> {
    let mut out = Vec::new();
    for o in sysipc::list(IpcKind::Sem)? {
        if let Ok(pids) = sysipc::sem_pids(o.id, o.size as usize) {
            if pids.iter().any(|p| tree.contains(p)) {
                out.push(o.id);
            }
        }
    }
    Ok(out)
}

/// The undo adjustments of the process `inj` drives (stopped, its own calls injected;
/// `out` is memory of it for the operations) on the semaphore sets `sets`. Only a
/// process with an undo list (kcmp KCMP_SYSVSEM) is asked: one that made a SEM_UNDO
/// operation, and every multi-threaded one (CLONE_SYSVSEM, which pthread_create passes,
/// gives the process a list). Each question is a semop made by the process that always
/// fails (see [`undo_ops`]), so nothing changes: no value, no adjustment, no
/// last-operation PID, no wakeup. Two calls per semaphore without an adjustment, up to
/// 17 with one. A set whose values change meanwhile (someone outside the tree works on
/// it) is asked again; the third time the dump is refused.
pub(crate) fn probe_undo(
    inj: &mut Injector,
    mem: &RemoteMem,
    out: u64,
    (sets, elsewhere): (&[i32], bool),
    has_list: bool,
) -> DumpResult<Vec<SemUndo>> {
    let pid = inj.pid();
    if sets.is_empty() || !has_list {
        return Ok(Vec::new());
    }
    // The sets and their values as the process's IPC namespace shows them: read from a
    // thread that joins it when it is not ckpt's (`elsewhere`: one a process below the
    // root made). The questions themselves are the process's calls, made in its own.
    let list = || match elsewhere {
        true => crate::sys::ns::inside(pid, &["ipc"], || sysipc::list(IpcKind::Sem)),
        false => sysipc::list(IpcKind::Sem),
    };
    let values_of = |id: i32, n: usize| match elsewhere {
        true => crate::sys::ns::inside(pid, &["ipc"], || sysipc::sem_values(id, n)),
        false => sysipc::sem_values(id, n),
    };
    'attempt: for _ in 0..3 {
        let mut found = Vec::new();
        for o in list()?.into_iter().filter(|o| sets.contains(&o.id)) {
            let n = o.size as usize;
            let Ok(values) = values_of(o.id, n) else {
                continue;
            };
            let mut adj = vec![0i16; n];
            let mut asked = true;
            for (num, a) in adj.iter_mut().enumerate() {
                let mut probe = |d: i32| -> DumpResult<Option<bool>> {
                    let ops = undo_ops(num as u16, i32::from(values[num]), d, true);
                    mem.write(out, &sembufs(&ops))?;
                    let r = inj.raw(nr::SEMOP, [o.id as u64, out, ops.len() as u64, 0, 0, 0])?;
                    match (-r) as i32 {
                        libc::EAGAIN => Ok(Some(true)),
                        libc::ERANGE => Ok(Some(false)),
                        // Not its to operate on (then it made no adjustment since), or
                        // gone.
                        libc::EACCES | libc::EINVAL | libc::EIDRM => Ok(None),
                        e => Err(DumpError::Sys(crate::sys::SysError::Other(format!(
                            "reading the undo adjustments of System V semaphore set {} in \
                             process {pid}: semop returned {e}",
                            o.id
                        )))),
                    }
                };
                match search_adj(&mut probe)? {
                    Some(v) => *a = v,
                    None => {
                        asked = false;
                        break;
                    }
                }
            }
            if !asked {
                continue;
            }
            if values_of(o.id, n).ok().as_deref() != Some(&values[..]) {
                continue 'attempt;
            }
            if adj.iter().any(|&a| a != 0) {
                found.push(SemUndo { semid: o.id, adj });
            }
        }
        return Ok(found);
    }
    Err(DumpError::Unsupported {
        pid,
        why: "its System V semaphore undo adjustments could not be read: the sets kept \
              changing meanwhile (used outside the tree)"
            .into(),
    })
}

// ---- checks (plan) ----

/// The image's objects can be made again here: this kernel lets ckpt choose their IDs,
/// and no object of this host (but the dumped tree's own, `held`) has their IDs or keys.
/// `on_host`: the objects come back in this host's IPC namespace, where their IDs and
/// keys must be free (not in a new one the restore makes, where every ID is).
pub(crate) fn check_objects(
    ipc: &SysvIpc,
    held: &Held,
    on_host: bool,
    problems: &mut Vec<Problem>,
) {
    let kinds = [
        (
            IpcKind::Shm,
            ipc.shm.iter().map(|o| &o.perm).collect::<Vec<_>>(),
        ),
        (IpcKind::Sem, ipc.sem.iter().map(|o| &o.perm).collect()),
        (IpcKind::Msg, ipc.msg.iter().map(|o| &o.perm).collect()),
    ];
    for (kind, perms) in kinds {
        if perms.is_empty() {
            continue;
        }
        if !sysipc::next_id_settable(kind) {
            check::p(
                problems,
                "sysv-ids",
                format!(
                    "the image has System V {}s, which come back under their IDs through \
                     /proc/sys/kernel/{}_next_id; it cannot be written here (a kernel \
                     without CONFIG_CHECKPOINT_RESTORE, or not root)",
                    kind_name(kind),
                    match kind {
                        IpcKind::Shm => "shm",
                        IpcKind::Sem => "sem",
                        IpcKind::Msg => "msg",
                    }
                ),
            );
        }
        if !on_host {
            continue;
        }
        match sysipc::list(kind) {
            Ok(mut host) => {
                host.retain(|o| !held.sysv_ipc.contains(&(kind_code(kind), o.id)));
                check_ids(kind, &perms, &host, problems);
            }
            Err(e) => check::p(problems, "sysv-ids", format!("{e}")),
        }
    }
}

/// Every undo adjustment of the image's processes is on a set of the image, with one
/// adjustment per semaphore; a segment's data fits in it.
pub(crate) fn check_undo(ipc: &SysvIpc, procs: &[&Process], problems: &mut Vec<Problem>) {
    for s in ipc.shm.iter().filter(|s| s.data.len() as u64 > s.size) {
        check::p(
            problems,
            "malformed",
            format!(
                "System V segment {} holds {} bytes of data but is {} bytes",
                s.perm.id,
                s.data.len(),
                s.size
            ),
        );
    }
    for p in procs {
        match p.sem_undo_list {
            Some(SemUndoList::Absent | SemUndoList::Shared(_)) if !p.sem_undo.is_empty() => {
                check::p(
                    problems,
                    "malformed",
                    format!(
                        "process {} has undo adjustments but no System V semaphore undo \
                         list of its own",
                        p.pid
                    ),
                );
            }
            Some(SemUndoList::Shared(q)) => {
                let parent = procs.iter().find(|x| x.pid == p.ppid);
                let parents = parent.and_then(|x| match x.sem_undo_list {
                    Some(SemUndoList::Own) => Some(x.pid),
                    Some(SemUndoList::Shared(r)) => Some(r),
                    _ => None,
                });
                if parents != Some(q) {
                    check::p(
                        problems,
                        "sysv-undo-shared",
                        format!(
                            "process {} shares its System V semaphore undo list with \
                             process {q}, but not through its parent {}: restore makes a \
                             shared list only by forking a process from its parent with \
                             CLONE_SYSVSEM",
                            p.pid, p.ppid
                        ),
                    );
                }
            }
            _ => {}
        }
        for u in &p.sem_undo {
            let n = ipc
                .sem
                .iter()
                .find(|s| s.perm.id == u.semid)
                .map(|s| s.values.len());
            if n != Some(u.adj.len()) {
                check::p(
                    problems,
                    "malformed",
                    format!(
                        "process {} has undo adjustments on System V semaphore set {} that \
                         the image does not hold as such",
                        p.pid, u.semid
                    ),
                );
            }
        }
    }
}

/// The objects of each IPC namespace processes below the tree's root made can be made
/// again there (in a new namespace every ID is free: only whether this kernel lets ckpt
/// choose them), fit its limits, and are those its processes use: each segment one of
/// them attaches is among them, its processes' undo adjustments on its sets, its named
/// queues well formed and those its processes open.
pub(crate) fn check_below_root(ckpt: &crate::model::Checkpoint, problems: &mut Vec<Problem>) {
    for (ns, procs) in crate::kinds::ns::below_ipc(ckpt) {
        let Some(l) = &ns.ipc else {
            continue;
        };
        check_objects(&l.sysv, &Held::default(), false, problems);
        check_limits(&l.sysv, &l.values, problems);
        check_undo(&l.sysv, &procs, problems);
        crate::kinds::fd::mqueue::check_namespace(procs.iter().copied(), &l.mqueues, problems);
        for p in procs {
            for v in &p.vmas {
                if let VmaKind::SysvShm { shmid, .. } = v.kind {
                    if !l.sysv.shm.iter().any(|s| s.perm.id == shmid) {
                        check::p(
                            problems,
                            "malformed",
                            format!(
                                "process {} attaches System V segment {shmid}, which the \
                                 image does not hold in its IPC namespace ipc:[{}]",
                                p.pid, ns.inode
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// A limit of an IPC namespace (`limits`: file under /proc/sys, text), its `n`-th
/// number.
fn limit(limits: &[(String, String)], file: &str, n: usize) -> Option<u64> {
    limits
        .iter()
        .find(|(k, _)| k == file)
        .and_then(|(_, v)| v.split_whitespace().nth(n))
        .and_then(|v| v.parse().ok())
}

/// In a new IPC namespace of the tree's own, whose limits (`limits`, as dumped) restore
/// writes before it makes the objects: every object fits them (a limit lowered after
/// the objects were made would have them refused: the kernel checks sizes and counts
/// at creation, and a message's size at sending); no segment, if the namespace removes
/// segments with no creator alive (`shm_rmid_forced`: ckpt makes them, and the
/// creating thread of ckpt ends at once).
pub(crate) fn check_limits(
    ipc: &SysvIpc,
    limits: &[(String, String)],
    problems: &mut Vec<Problem>,
) {
    let mut over = |what: String, file: &str, value: u64| {
        check::p(
            problems,
            "ipc-limits",
            format!(
                "{what}, over its IPC namespace's limit {file} ({value}), which restore \
                 writes before it makes the objects again"
            ),
        )
    };
    let page = crate::sys::mem::page_size() as u64;
    let shm_n = ipc.shm.len() as u64;
    let shm_pages: u64 = ipc.shm.iter().map(|s| s.size.div_ceil(page)).sum();
    if let Some(max) = limit(limits, "kernel/shmmax", 0) {
        for s in ipc.shm.iter().filter(|s| s.size > max) {
            over(
                format!("System V segment {} is {} bytes", s.perm.id, s.size),
                "kernel.shmmax",
                max,
            );
        }
    }
    if let Some(max) = limit(limits, "kernel/shmmni", 0).filter(|&m| shm_n > m) {
        over(format!("{shm_n} System V segments"), "kernel.shmmni", max);
    }
    if let Some(max) = limit(limits, "kernel/shmall", 0).filter(|&m| shm_pages > m) {
        over(
            format!("the System V segments take {shm_pages} pages"),
            "kernel.shmall",
            max,
        );
    }
    if let Some(max) = limit(limits, "kernel/msgmax", 0) {
        for q in &ipc.msg {
            if let Some(m) = q.messages.iter().find(|m| m.text.len() as u64 > max) {
                over(
                    format!(
                        "System V message queue {} holds a message of {} bytes",
                        q.perm.id,
                        m.text.len()
                    ),
                    "kernel.msgmax",
                    max,
                );
            }
        }
    }
    let msg_n = ipc.msg.len() as u64;
    if let Some(max) = limit(limits, "kernel/msgmni", 0).filter(|&m| msg_n > m) {
        over(
            format!("{msg_n} System V message queues"),
            "kernel.msgmni",
            max,
        );
    }
    // kernel/sem: SEMMSL SEMMNS SEMOPM SEMMNI
    if let Some(max) = limit(limits, "kernel/sem", 0) {
        for s in ipc.sem.iter().filter(|s| s.values.len() as u64 > max) {
            over(
                format!(
                    "System V semaphore set {} has {} semaphores",
                    s.perm.id,
                    s.values.len()
                ),
                "kernel.sem (SEMMSL)",
                max,
            );
        }
    }
    let sems: u64 = ipc.sem.iter().map(|s| s.values.len() as u64).sum();
    if let Some(max) = limit(limits, "kernel/sem", 1).filter(|&m| sems > m) {
        over(
            format!("{sems} System V semaphores"),
            "kernel.sem (SEMMNS)",
            max,
        );
    }
    let sets = ipc.sem.len() as u64;
    if let Some(max) = limit(limits, "kernel/sem", 3).filter(|&m| sets > m) {
        over(
            format!("{sets} System V semaphore sets"),
            "kernel.sem (SEMMNI)",
            max,
        );
    }
    if shm_n > 0 && limit(limits, "kernel/shm_rmid_forced", 0).is_some_and(|v| v != 0) {
        check::p(
            problems,
            "ipc-limits",
            format!(
                "the tree's IPC namespace removes segments whose creator is gone \
                 (kernel.shm_rmid_forced = 1) and holds {shm_n} System V segments: \
                 restore makes them from ckpt, whose creating thread ends at once, so \
                 the kernel would remove them; not restored yet"
            ),
        );
    }
}

/// No object of `host` has the ID or the (non-private) key of one of `image`'s.
pub(crate) fn check_ids(
    kind: IpcKind,
    image: &[&IpcPerm],
    host: &[IpcObject],
    problems: &mut Vec<Problem>,
) {
    let opt = match kind {
        IpcKind::Shm => "-m",
        IpcKind::Sem => "-s",
        IpcKind::Msg => "-q",
    };
    for p in image {
        for o in host {
            if o.id == p.id || (p.key != 0 && o.key == p.key) {
                let what = if o.id == p.id {
                    format!("ID {}", p.id)
                } else {
                    format!("key {:#x}", p.key)
                };
                check::p(
                    problems,
                    "sysv-taken",
                    format!(
                        "System V {} {what} is in use on this host (by object {} of user \
                         {}, key {:#x}): the dumped program still running \
                         (--leave-running), or another program's; if nothing uses it, \
                         `ipcrm {opt} {}` removes it",
                        kind_name(kind),
                        o.id,
                        o.uid,
                        o.key,
                        o.id
                    ),
                );
            }
        }
    }
}

// ---- restore (stage) ----

/// Make every object of the image again (before any process attaches a segment), as
/// its creator, under its ID and key, with its owner, mode and contents; `created`
/// removes them again unless the restore commits.
pub(crate) fn create_objects(ipc: &SysvIpc, created: &mut SysvCreated) -> RestoreResult<()> {
    for s in &ipc.shm {
        if s.data.len() as u64 > s.size {
            return Err(RestoreError::Malformed(format!(
                "System V segment {} holds more data than its size",
                s.perm.id
            )));
        }
        make(IpcKind::Shm, &s.perm, s.size, created)?;
        created.pre.insert(s.perm.id);
        if !s.data.is_empty() {
            sysipc::shm_write(s.perm.id, &s.data)?;
        }
        if s.perm.mode & SHM_LOCKED != 0 {
            sysipc::shm_lock(s.perm.id)?;
        }
        sysipc::set_owner(
            IpcKind::Shm,
            s.perm.id,
            s.perm.uid,
            s.perm.gid,
            s.perm.mode,
            0,
        )?;
    }
    for s in &ipc.sem {
        make(IpcKind::Sem, &s.perm, s.values.len() as u64, created)?;
        sysipc::sem_set_values(s.perm.id, &s.values)?;
        sysipc::set_owner(
            IpcKind::Sem,
            s.perm.id,
            s.perm.uid,
            s.perm.gid,
            s.perm.mode,
            0,
        )?;
    }
    for q in &ipc.msg {
        make(IpcKind::Msg, &q.perm, 0, created)?;
        let p = &q.perm;
        sysipc::set_owner(IpcKind::Msg, p.id, p.uid, p.gid, p.mode, q.qbytes)?;
        for m in &q.messages {
            sysipc::msg_send(p.id, m.mtype, &m.text)?;
        }
    }
    Ok(())
}

/// In the stub of process `cx.proc_` (of `ckpt`; just forked from `parent`, its
/// namespaces entered, `kinds::ns::enter_child_namespaces`): if it made an IPC
/// namespace below the tree's root, make that namespace's System V objects and named
/// POSIX message queues again in it, from a thread of ckpt that joins it (limits
/// written already), before any process of it attaches a segment or opens a queue by
/// name. Its segments go to `created.pre_in`. A failure part way removes what was made
/// (and the rest ends with the namespace, when the stubs are killed).
pub(crate) fn create_below_root(
    cx: &Ctx<'_>,
    ckpt: &crate::model::Checkpoint,
    parent: &Process,
    created: &mut SysvCreated,
) -> RestoreResult<()> {
    let p = cx.proc_;
    let Some(ino) = crate::kinds::ns::inode_of(p, "ipc") else {
        return Ok(());
    };
    if crate::kinds::ns::inode_of(parent, "ipc") == Some(ino) {
        return Ok(());
    }
    let Some(l) = crate::kinds::ns::below_ipc(ckpt)
        .into_iter()
        .find(|(n, _)| n.inode == ino)
        .and_then(|(n, _)| n.ipc.as_ref())
    else {
        return Ok(());
    };
    let pre = crate::sys::ns::inside(p.pid, &["ipc"], || {
        let made = (|| -> RestoreResult<BTreeSet<i32>> {
            let mut here = SysvCreated::default();
            create_objects(&l.sysv, &mut here)?;
            crate::kinds::fd::mqueue::make_namespace_queues(&l.mqueues)?;
            here.keep = true;
            Ok(std::mem::take(&mut here.pre))
        })();
        Ok(made)
    })??;
    created.pre_in.insert(ino, pre);
    Ok(())
}

/// The process's semaphore undo adjustments, set again by semops it makes itself (its
/// own undo list; threads made with CLONE_SYSVSEM share it), each leaving the value as
/// it is (see [`undo_ops`]). `elsewhere`: it is in an IPC namespace a process below the
/// root made, whose sets' values ckpt reads from a thread that joins it.
pub(crate) fn restore_undo(cx: &mut Ctx<'_>, elsewhere: bool) -> RestoreResult<()> {
    let undo = cx.proc_.sem_undo.clone();
    let pid = cx.pid();
    for u in &undo {
        let n = u.adj.len();
        let values = match elsewhere {
            true => crate::sys::ns::inside(pid, &["ipc"], || sysipc::sem_values(u.semid, n))?,
            false => sysipc::sem_values(u.semid, n)?,
        };
        for (num, &a) in u.adj.iter().enumerate() {
            if a == 0 {
                continue;
            }
            let v = values.get(num).copied().unwrap_or_default();
            let ops = undo_ops(num as u16, i32::from(v), -i32::from(a), false);
            let addr = cx.put(0, &sembufs(&ops))?;
            cx.call(
                &format!(
                    "semop (undo adjustment of semaphore {num} of set {})",
                    u.semid
                ),
                nr::SEMOP,
                [u.semid as u64, addr, ops.len() as u64, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// The semaphore set ID and number [`make_undo_list`] operates on: no set can have that
/// semaphore (a set has at most SEMMSL, 32000, of them), and that ID is the largest.
const NO_SET: (u64, u16) = (i32::MAX as u64, u16::MAX);

/// Give the process its undo list if it had one of its own (`SemUndoList::Own`, even
/// empty), before any child that shares it is forked (with CLONE_SYSVSEM) and after it
/// entered its IPC namespace (a change of IPC namespace drops the list). The kernel makes
/// the list as the first step of a SEM_UNDO semop, before it looks at the set: the call
/// then fails (EINVAL: no set with that ID; EFBIG: no such semaphore in it) and changes
/// nothing else.
pub(crate) fn make_undo_list(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    if cx.proc_.sem_undo_list != Some(SemUndoList::Own) {
        return Ok(());
    }
    let (semid, num) = NO_SET;
    let flags = (libc::SEM_UNDO | libc::IPC_NOWAIT) as i16;
    let addr = cx.put(0, &sembufs(&[(num, 0, flags)]))?;
    match cx.call(
        "semop (make the System V semaphore undo list)",
        nr::SEMOP,
        [semid, addr, 1, 0, 0, 0],
    ) {
        Err(RestoreError::Sys(e))
            if matches!(e.errno(), Some(libc::EINVAL | libc::EFBIG | libc::EIDRM)) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// The clone flag a process is forked with to share its parent's undo list.
pub(crate) fn fork_flags(p: &Process) -> u64 {
    match p.sem_undo_list {
        Some(SemUndoList::Shared(_)) => libc::CLONE_SYSVSEM as u64,
        _ => 0,
    }
}

/// The clone flag the process's threads are made with: CLONE_SYSVSEM (they share its
/// undo list, and give it one), but for a process that had none.
pub(crate) fn thread_flags(p: &Process) -> u64 {
    match p.sem_undo_list {
        Some(SemUndoList::Absent) => 0,
        _ => libc::CLONE_SYSVSEM as u64,
    }
}

fn make(kind: IpcKind, p: &IpcPerm, size: u64, created: &mut SysvCreated) -> RestoreResult<()> {
    crate::error::fault_point("create System V object")?;
    let got = sysipc::create(NewObject {
        kind,
        key: p.key,
        id: p.id,
        cuid: p.cuid,
        cgid: p.cgid,
        size,
    })?;
    created.objs.push((kind, got));
    if got != p.id {
        return Err(RestoreError::Stage(format!(
            "System V {} {}: the kernel gave it ID {got}; the program would use the wrong one",
            kind_name(kind),
            p.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0      32769   600                  4096 30465 30465      0     0     0     0     0 1796568844 1796568844 1796568844                  4096                     0
   5432001          4  1600                    56   900   901      6   104   105   104   105          0          0          0                  4096                     0
";
    const SEM: &str =
        "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
         0          2   660          3 65534 65534     0     0          0 1796568844
";
    const MSG: &str = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
         0          1   620         23          2   700   701 65534 65534 65534 65534 1796568844          0 1796568844
";

    #[test]
    fn proc_sysvipc_lines_parse() {
        let shm = sysipc::parse_list(IpcKind::Shm, SHM).unwrap();
        assert_eq!(shm.len(), 2);
        let s = &shm[1];
        assert_eq!((s.key, s.id, s.mode, s.size), (5432001, 4, 0o1600, 56));
        assert_eq!((s.pid1, s.pid2, s.count), (900, 901, 6));
        assert_eq!((s.uid, s.gid, s.cuid, s.cgid), (104, 105, 104, 105));
        let sem = sysipc::parse_list(IpcKind::Sem, SEM).unwrap();
        assert_eq!(
            (sem[0].id, sem[0].size, sem[0].uid, sem[0].cuid),
            (2, 3, 65534, 0)
        );
        assert_eq!(sem[0].mode, 0o660);
        let msg = sysipc::parse_list(IpcKind::Msg, MSG).unwrap();
        let m = &msg[0];
        assert_eq!(
            (m.size, m.count, m.pid1, m.pid2, m.cuid),
            (23, 2, 700, 701, 65534)
        );
        assert!(sysipc::parse_list(IpcKind::Shm, "header\n1 2 zz\n").is_none());
    }

    fn perm(key: i32, id: i32) -> IpcPerm {
        IpcPerm {
            key,
            id,
            ..Default::default()
        }
    }

    #[test]
    fn taken_ids_and_keys_are_problems_naming_how_to_remove_them() {
        let host = sysipc::parse_list(IpcKind::Shm, SHM).unwrap();
        let run = |p: IpcPerm| {
            let mut v = Vec::new();
            check_ids(IpcKind::Shm, &[&p], &host, &mut v);
            v
        };
        assert!(run(perm(0, 5)).is_empty());
        // IPC_PRIVATE keys never clash.
        assert!(run(perm(0, 7)).is_empty());
        let v = run(perm(0x99, 4));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].code, "sysv-taken");
        assert!(v[0].message.contains("ID 4 is in use"), "{}", v[0].message);
        assert!(v[0].message.contains("ipcrm -m 4"), "{}", v[0].message);
        let v = run(perm(5432001, 9));
        assert!(v[0].message.contains("key 0x52e2c1"), "{}", v[0].message);
        let q = sysipc::parse_list(IpcKind::Msg, MSG).unwrap();
        let mut v = Vec::new();
        check_ids(IpcKind::Msg, &[&perm(0, 1)], &q, &mut v);
        assert!(v[0].message.contains("ipcrm -q 1"), "{}", v[0].message);
    }

    #[test]
    fn objects_over_the_namespace_s_limits_are_problems_naming_the_limit() {
        let lim = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ipc = SysvIpc {
            shm: vec![SysvShm {
                perm: perm(0, 0),
                size: 3 * 4096,
                data: Vec::new(),
            }],
            sem: vec![SysvSem {
                perm: perm(0, 0),
                values: vec![0; 3],
            }],
            msg: vec![SysvMsgQueue {
                perm: perm(0, 0),
                qbytes: 1000,
                messages: vec![SysvMsg {
                    mtype: 1,
                    text: vec![b'x'; 100],
                }],
            }],
        };
        let run = |l: &[(String, String)]| {
            let mut v = Vec::new();
            check_limits(&ipc, l, &mut v);
            v
        };
        // A namespace's defaults take them all.
        let ok = lim(&[
            ("kernel/shmmax", "18446744073692774399"),
            ("kernel/shmall", "18446744073692774399"),
            ("kernel/shmmni", "4096"),
            ("kernel/shm_rmid_forced", "0"),
            ("kernel/msgmax", "8192"),
            ("kernel/msgmni", "32000"),
            ("kernel/sem", "32000\t1024000000\t500\t32000"),
        ]);
        assert!(run(&ok).is_empty(), "{:?}", run(&ok));
        for (k, v, says) in [
            ("kernel/shmmax", "4096", "kernel.shmmax"),
            ("kernel/shmall", "2", "kernel.shmall"),
            ("kernel/shmmni", "0", "kernel.shmmni"),
            ("kernel/msgmax", "99", "kernel.msgmax"),
            ("kernel/msgmni", "0", "kernel.msgmni"),
            ("kernel/sem", "2 1024000000 500 32000", "SEMMSL"),
            ("kernel/sem", "32000 2 500 32000", "SEMMNS"),
            ("kernel/sem", "32000 1024000000 500 0", "SEMMNI"),
            ("kernel/shm_rmid_forced", "1", "shm_rmid_forced"),
        ] {
            let mut l = ok.clone();
            l.retain(|(x, _)| x != k);
            l.push((k.to_string(), v.to_string()));
            let v = run(&l);
            assert_eq!(v.len(), 1, "{k}: {v:?}");
            assert_eq!(v[0].code, "ipc-limits");
            assert!(v[0].message.contains(says), "{k}: {}", v[0].message);
        }
    }

    #[test]
    fn the_tree_s_own_objects_count_as_free_at_dump() {
        let ipc = SysvIpc {
            sem: vec![SysvSem {
                perm: perm(0, 2),
                values: vec![0; 3],
            }],
            ..Default::default()
        };
        let held = Held {
            sysv_ipc: held_ids(&ipc),
            ..Default::default()
        };
        let mut v = Vec::new();
        check_objects(&ipc, &held, true, &mut v);
        assert!(v.iter().all(|p| p.code != "sysv-taken"), "{v:?}");
    }

    /// The kernel's semop on the dupsop path (operations applied in order, each checked
    /// against the results before it, everything undone on failure), for one caller.
    fn kernel_semop(vals: &mut [i32], adj: &mut [i32], ops: &[SemOp]) -> Result<(), i32> {
        let (v0, a0) = (vals.to_vec(), adj.to_vec());
        let fail = |e: i32, vals: &mut [i32], adj: &mut [i32]| {
            vals.copy_from_slice(&v0);
            adj.copy_from_slice(&a0);
            Err(e)
        };
        for &(n, op, fl) in ops {
            let n = n as usize;
            let r = vals[n] + i32::from(op);
            if (op == 0 && vals[n] != 0) || r < 0 {
                return fail(libc::EAGAIN, vals, adj);
            }
            if r > 32767 {
                return fail(libc::ERANGE, vals, adj);
            }
            if fl & libc::SEM_UNDO as i16 != 0 {
                let u = adj[n] - i32::from(op);
                if !(-32768..=32767).contains(&u) {
                    return fail(libc::ERANGE, vals, adj);
                }
                adj[n] = u;
            }
            vals[n] = r;
        }
        Ok(())
    }

    #[test]
    fn undo_adjustments_are_found_without_changing_anything_and_set_again() {
        let values = [0, 1, 2, 100, 16384, 30000, 32766, 32767];
        let adjs = [
            -32768, -32767, -16385, -100, -2, -1, 0, 1, 2, 5, 16384, 32766, 32767,
        ];
        for &v in &values {
            for &a in &adjs {
                let (mut vals, mut adj) = ([v, 7], [a, -3]);
                let mut calls = 0;
                let mut probe = |d: i32| -> DumpResult<Option<bool>> {
                    calls += 1;
                    let ops = undo_ops(0, vals[0], d, true);
                    assert!(ops.len() <= 12, "{ops:?}");
                    match kernel_semop(&mut vals, &mut adj, &ops) {
                        Err(libc::EAGAIN) => Ok(Some(true)),
                        Err(libc::ERANGE) => Ok(Some(false)),
                        r => panic!("a probe must fail: {r:?}"),
                    }
                };
                let got = search_adj(&mut probe).unwrap();
                assert_eq!(got, Some(a as i16), "value {v} adjustment {a}");
                assert!(calls <= 17, "{calls} probes");
                if a == 0 {
                    assert_eq!(calls, 2, "no adjustment takes two questions");
                }
                assert_eq!((vals, adj), ([v, 7], [a, -3]), "probing changes nothing");
                // Restore: a fresh list (0) gets the adjustment, the value stays.
                let (mut vals, mut adj) = ([v, 7], [0, 0]);
                let ops = undo_ops(0, v, -a, false);
                assert_eq!(kernel_semop(&mut vals, &mut adj, &ops), Ok(()), "{ops:?}");
                assert_eq!((vals, adj), ([v, 7], [a, 0]), "value {v} adjustment {a}");
            }
        }
        assert_eq!(
            sembufs(&[(1, -2, 0x1800)]),
            [1, 0, 0xfe, 0xff, 0x00, 0x18],
            "struct sembuf {{ u16 num; i16 op; i16 flg }}"
        );
    }

    #[test]
    fn malformed_undo_and_segment_data_are_problems() {
        let ipc = SysvIpc {
            shm: vec![SysvShm {
                perm: perm(0, 3),
                size: 4,
                data: vec![1; 5],
            }],
            sem: vec![SysvSem {
                perm: perm(0, 2),
                values: vec![0; 3],
            }],
            ..Default::default()
        };
        let mut p = crate::kinds::testutil::process(10);
        p.sem_undo = vec![
            SemUndo {
                semid: 2,
                adj: vec![1, 0, 0],
            },
            SemUndo {
                semid: 2,
                adj: vec![1],
            },
            SemUndo {
                semid: 9,
                adj: vec![1],
            },
        ];
        let mut v = Vec::new();
        check_undo(&ipc, &[&p], &mut v);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|p| p.code == "malformed"), "{v:?}");
    }

    fn listed(pid: i32, ppid: i32, list: Option<SemUndoList>) -> Process {
        let mut p = crate::kinds::testutil::process(pid);
        p.ppid = ppid;
        p.sem_undo_list = list;
        p
    }

    #[test]
    fn a_list_is_shared_only_through_the_parent() {
        use SemUndoList::*;
        let run = |procs: &[Process]| {
            let mut v = Vec::new();
            let procs: Vec<&Process> = procs.iter().collect();
            check_undo(&SysvIpc::default(), &procs, &mut v);
            v
        };
        // 10 owns it, 11 (its child) and 12 (11's child) share it: made by forking with
        // CLONE_SYSVSEM down the tree.
        let tree = [
            listed(10, 1, Some(Own)),
            listed(11, 10, Some(Shared(10))),
            listed(12, 11, Some(Shared(10))),
            listed(13, 10, Some(Absent)),
        ];
        assert!(run(&tree).is_empty(), "{:?}", run(&tree));
        // 14 and 15 share a list their parent 13 does not have.
        let apart = [
            listed(13, 1, Some(Absent)),
            listed(14, 13, Some(Own)),
            listed(15, 13, Some(Shared(14))),
        ];
        let v = run(&apart);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].code, "sysv-undo-shared");
        assert!(
            v[0].message.contains("process 15 shares"),
            "{}",
            v[0].message
        );
        // A list shared with a parent that is not in the image.
        let v = run(&[listed(20, 1, Some(Shared(1)))]);
        assert_eq!(v[0].code, "sysv-undo-shared", "{v:?}");
        // Adjustments belong to a process with a list of its own.
        let mut p = listed(10, 1, Some(Absent));
        p.sem_undo = vec![SemUndo {
            semid: 2,
            adj: vec![1],
        }];
        let v = run(&[p]);
        assert!(v.iter().any(|p| p.code == "malformed"), "{v:?}");
    }

    #[test]
    fn an_empty_list_is_made_by_one_failing_semop_and_forks_share_it() {
        use crate::remote::{Ctx, Recorder};
        use SemUndoList::*;
        for (list, made) in [
            (Some(Own), true),
            (Some(Absent), false),
            (Some(Shared(3)), false),
            (None, false),
        ] {
            let p = listed(10, 1, list);
            for errno in [libc::EINVAL, libc::EFBIG] {
                let rec = Recorder::new(10).answer(nr::SEMOP, -i64::from(errno));
                let mut cx = Ctx::double(&rec, 0x10000, &p);
                make_undo_list(&mut cx).unwrap();
                let calls = rec.calls();
                assert_eq!(calls.len(), usize::from(made), "{list:?}: {calls:?}");
                if let Some(c) = calls.first() {
                    assert_eq!(c.nr, nr::SEMOP);
                    assert_eq!((c.args[0], c.args[2]), (i32::MAX as u64, 1));
                    let flags = (libc::SEM_UNDO | libc::IPC_NOWAIT) as i16;
                    assert_eq!(c.bytes(c.args[1], 6), sembufs(&[(u16::MAX, 0, flags)]));
                }
            }
            let shares = matches!(list, Some(Shared(_)));
            assert_eq!(fork_flags(&p) == libc::CLONE_SYSVSEM as u64, shares);
            let absent = list == Some(Absent);
            assert_eq!(thread_flags(&p) == 0, absent);
        }
        // Any other failure is the restore's.
        let p = listed(10, 1, Some(Own));
        let rec = Recorder::new(10).answer(nr::SEMOP, -i64::from(libc::ENOMEM));
        let mut cx = Ctx::double(&rec, 0x10000, &p);
        assert!(make_undo_list(&mut cx).is_err());
    }
}
