//! Collect: read everything about the frozen task into a `model::Checkpoint`. Each kind
//! of state is read by its module under `kinds/`; this file orders the steps for one
//! process and puts the tree's results together.

use super::{DumpError, Frozen, Result};
use crate::kinds::check::Held;
use crate::kinds::fd::{fd_entry, file};
use crate::kinds::mem::pages::Run;
use crate::kinds::mem::shmem::SharedSeen;
use crate::kinds::mem::{self, MemoryMap};
use crate::kinds::task::query::{Ask, Injected, ThreadInjected, injected_state};
use crate::kinds::task::threads::{ThreadOutside, thread_image, thread_outside};
use crate::kinds::task::{attrs, creds, seccomp, signals, tree};
use crate::model::{Checkpoint, Fd, JobStop, PendingSignal, ProcMisc, Process, Thread};
use crate::sys::mem::RemoteMem;
use crate::sys::proc::{self as procfs, MapEntry};

/// What the frozen tree holds now (see `check::Held`): its IDs, the sockets its
/// descriptors lead to, the System V segments that go with it and its file locks.
/// `processes` are the tree's, with host PIDs, in `tree`'s order.
pub(crate) fn held(tree: &super::FrozenTree, processes: &[Process]) -> Result<Held> {
    let mut held = Held {
        live: true,
        ..Held::default()
    };
    for (pid, fr) in &tree.nodes {
        held.pids.insert(*pid);
        if let Some(fr) = fr {
            held.pids.extend(fr.threads.iter().map(|t| t.tid));
        }
    }
    let with_locks = processes
        .iter()
        .any(|p| p.fds.iter().any(|f| !f.locks.is_empty()));
    for p in processes.iter().filter(|p| !p.is_zombie()) {
        held.sockets
            .extend(crate::kinds::fd::unix::socket_inodes(p.pid)?);
        if with_locks {
            held.locks
                .extend(crate::kinds::fd::lock::held_locks(p.pid, &p.fds)?);
        }
    }
    held.sysv = crate::kinds::mem::shmem::held_segments(&in_root_ipc(processes))?;
    Ok(held)
}

/// The processes of the tree in its root's IPC namespace (the others are in one a
/// process below the root made: `kinds::ipc::collect_below_root`).
fn in_root_ipc(processes: &[Process]) -> Vec<&Process> {
    processes
        .iter()
        .filter(|p| !crate::kinds::ns::ipc_below_root(processes, p))
        .collect()
}

/// The System V objects that belong to the tree (`kinds::ipc`; all of its IPC
/// namespace's if it has one of its own, `own_ipc`), and `held` told they go with it.
/// (Those of IPC namespaces processes below the root made are read with them.)
pub(crate) fn sysv_objects(
    processes: &[Process],
    held: &mut Held,
    own_ipc: bool,
) -> Result<crate::model::SysvIpc> {
    let tree: std::collections::BTreeSet<i32> = processes.iter().map(|p| p.pid).collect();
    let ipc = crate::kinds::ipc::collect(&in_root_ipc(processes), &tree, own_ipc)?;
    held.sysv.extend(ipc.shm.iter().map(|s| s.perm.id));
    held.sysv_ipc = crate::kinds::ipc::held_ids(&ipc);
    Ok(ipc)
}

pub(crate) struct Collected {
    pub ckpt: Checkpoint,
    /// Page runs of each (live) process, by PID, in image order.
    pub runs: Vec<(i32, Vec<Run>)>,
    /// The host PID of each process whose image PID differs (a tree with its own PID
    /// namespace): /proc and ptrace take host PIDs.
    pub host_pids: std::collections::BTreeMap<i32, i32>,
    /// The contents of memfds and deleted files only in flight (`kinds::fd::inflight`),
    /// read through ckpt's own copies: (data ID, copy).
    pub in_flight_data: Vec<(u64, std::os::fd::OwnedFd)>,
}

impl Collected {
    /// The PID under which ckpt reaches process `pid` of the image.
    pub fn host_pid(&self, pid: i32) -> i32 {
        self.host_pids.get(&pid).copied().unwrap_or(pid)
    }

    /// Turn every ID into what the tree's PID namespace sees (see
    /// `Checkpoint::own_pid_namespace`, and `pid_namespace_init_outside` when `own_init`
    /// is false); IDs of tasks outside the tree become 0.
    pub fn use_namespace_pids(&mut self, own_init: bool) -> Result<()> {
        let map = tree::namespace_pids(&self.ckpt.processes)?;
        let f = |id: i32| map.get(&id).copied().unwrap_or(0);
        self.ckpt.map_pids(&f);
        for (pid, _) in &mut self.runs {
            *pid = f(*pid);
        }
        self.host_pids = map.iter().map(|(&host, &local)| (local, host)).collect();
        self.ckpt.own_pid_namespace = own_init;
        self.ckpt.pid_namespace_init_outside = !own_init;
        Ok(())
    }
}

/// What is collected of one process besides its `model::Process` (nothing, for a
/// zombie).
#[derive(Default)]
pub(crate) struct ProcCollected {
    /// ARCH_GET_XCOMP_PERM: xsave components the process was permitted (AMX...).
    pub xcomp_perm: u64,
    pub runs: Vec<Run>,
    /// (hash, size) of the vDSO text and size of the vvar area, if mapped.
    pub vdso: Option<(u64, u64, u64)>,
    /// Its children stopped by job control whose stop it has not collected yet.
    pub unreported_stops: Vec<i32>,
}

/// What is read of the threads of a process before its memory map: from outside, by
/// the injected queries, and their pending signals.
struct ThreadsRead {
    outside: Vec<ThreadOutside>,
    inj: Injected,
    thread_inj: Vec<ThreadInjected>,
    shared_pending: Vec<PendingSignal>,
    thread_pending: Vec<Vec<PendingSignal>>,
}

fn read_threads(fr: &mut Frozen, mem: &RemoteMem, ask: &Ask<'_>) -> Result<ThreadsRead> {
    let pid = fr.pid;
    let mut outside = Vec::new();
    for t in &fr.threads {
        outside.push(thread_outside(pid, t.tid, &t.orig_regs)?);
    }
    let (inj, thread_inj) = injected_state(pid, &mut fr.threads, mem, ask)?;
    // Signals keep arriving while the task is stopped (its timers run on). Pending
    // signals are read after the timers, so that a timer which expired before it was
    // read has its signal in the image.
    let shared_pending = signals::pending_signals(pid, true)?;
    let mut thread_pending = Vec::new();
    for t in &fr.threads {
        thread_pending.push(signals::pending_signals(t.tid, false)?);
    }
    Ok(ThreadsRead {
        outside,
        inj,
        thread_inj,
        shared_pending,
        thread_pending,
    })
}

/// The memory map and the descriptors of process `pid` (whose resident pages `rss`
/// decide whether smaps is read on a thread of its own). `early`: its smaps read before
/// the freeze and still true (`kinds::mem::early`), used if /proc/PID/maps lists the
/// same areas; `*early_used` counts the processes that used it.
///
/// Only /proc/PID/smaps has the VmFlags, and making it walks the page tables of every
/// area (16-24 ms per GiB resident here). In a big process a second thread reads it
/// while this one reads /proc/PID/maps (no walk), finds the pages to store
/// (PAGEMAP_SCAN, the other walk) and reads the descriptors; in a small one, waking the
/// other CPU costs more than that hides, and smaps is the list. Either way it is read
/// only now that the scratch area is gone, so it shows neither that area nor a
/// neighbour the kernel merged it with.
fn memory_and_fds(
    pid: i32,
    mem: &RemoteMem,
    rss: u64,
    seen: &mut SharedSeen,
    early: Option<Vec<MapEntry>>,
    early_used: &mut usize,
) -> Result<(MemoryMap, Vec<Fd>)> {
    let early = early.and_then(|e| mem::early::take_early(pid, e));
    if early.is_some() {
        *early_used += 1;
        crate::error::time_mark("collect: VmFlags from before the freeze");
    }
    let on_thread = early.is_none() && rss >= mem::SMAPS_THREAD_PAGES;
    let pm = procfs::Pagemap::open(pid)?;
    let (mut maps, mut map, fds, smaps) = std::thread::scope(|s| -> Result<_> {
        let reading = on_thread.then(|| s.spawn(move || procfs::smaps(pid)));
        let maps = match early {
            Some(m) => m,
            None if on_thread => procfs::maps(pid)?,
            None => procfs::smaps(pid)?,
        };
        let map = mem::memory_map(pid, mem, &pm, &maps, seen);
        // Held back, like any error of `memory_map`, until the areas' flags are checked.
        let fds = if map.failed.is_none() {
            procfs::fds(pid)
                .map_err(DumpError::from)
                .and_then(|list| list.into_iter().map(|fd| fd_entry(pid, fd)).collect())
        } else {
            Ok(Vec::new())
        };
        let smaps = reading.map(|r| {
            r.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        Ok((maps, map, fds, smaps))
    })?;
    if let Some(smaps) = smaps {
        // Both lists describe the same stopped process: they must agree.
        procfs::merge_vmflags(pid, &mut maps, smaps?)?;
    }
    check_areas(pid, &mut map, &mut maps)?;
    Ok((map, fds?))
}

/// Give the areas of `map` their VmFlags (from `maps`) and refuse special ones, then
/// return the error that stopped the listing, if any.
fn check_areas(pid: i32, map: &mut MemoryMap, maps: &mut [MapEntry]) -> Result<()> {
    for (vma, &i) in map.vmas.iter_mut().zip(&map.entries) {
        if let Some(m) = maps.get_mut(i) {
            vma.vmflags = std::mem::take(&mut m.vmflags);
        }
    }
    // In the order they were met, as if each area's flags were checked right after it
    // was classified: a special area is refused by name even if something later failed.
    for vma in &map.vmas {
        mem::refuse_special(pid, vma)?;
    }
    match map.failed.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Collect one frozen process; `ask`: its children stopped by job control (whether it
/// has collected their stops is asked of it) and the System V semaphore sets the tree
/// works on (its undo adjustments on them).
pub(crate) fn collect_process(
    fr: &mut Frozen,
    seen: &mut SharedSeen,
    early: Option<Vec<MapEntry>>,
    early_used: &mut usize,
    ask: &Ask<'_>,
) -> Result<(Process, ProcCollected)> {
    let pid = fr.pid;
    let mem = RemoteMem::open(pid)?;
    let read = read_threads(fr, &mem, ask)?;
    crate::error::time_mark("collect: threads read");
    let inj = read.inj;

    let status = procfs::status(pid)?;
    let stat = procfs::stat(pid)?;
    let creds = creds::creds_of(&status, read.thread_inj.first().map_or(0, |t| t.securebits));
    let thread_creds = creds::thread_creds(&fr.threads, &creds, &read.thread_inj)?;
    let mm = attrs::mm_info(pid, &stat, inj.brk)?;

    let (map, fds) = memory_and_fds(pid, &mem, stat.field(24), seen, early, early_used)?;
    crate::error::time_mark("collect: memory map and descriptors read");
    let MemoryMap {
        vmas,
        runs,
        vdso_hash,
        vdso_size,
        vvar_size,
        aio,
        ..
    } = map;

    let mut threads: Vec<Thread> = Vec::new();
    for ((((t, o), ti), pending), tc) in fr
        .threads
        .iter()
        .zip(read.outside)
        .zip(read.thread_inj)
        .zip(read.thread_pending)
        .zip(thread_creds)
    {
        let mode = tc.as_ref().map_or(creds.seccomp, |c| c.seccomp);
        let mut th = thread_image(&mem, t, o, ti, pending, tc)?;
        if mode == libc::SECCOMP_MODE_FILTER {
            th.seccomp_filters = seccomp::read_filters(t.tid)?;
        }
        threads.push(th);
    }
    let (cwd, cwd_removed) = file::collect_dir_link(pid, "cwd")?;
    let (root, root_removed) = file::collect_dir_link(pid, "root")?;
    let process = Process {
        pid,
        ppid: stat.field(4) as i32,
        pgid: stat.field(5) as i32,
        sid: stat.field(6) as i32,
        comm: stat.comm.clone(),
        cwd,
        root,
        umask: status.umask,
        personality: procfs::personality(pid)?,
        creds,
        rlimits: inj.rlimits,
        misc: ProcMisc {
            pdeathsig: inj.pdeathsig,
            dumpable: inj.dumpable,
            child_subreaper: inj.child_subreaper,
            timerslack_ns: procfs::timerslack_ns(pid)?,
            oom_score_adj: Some(procfs::oom_score_adj(pid)?),
            thp_disable: inj.thp_disable,
        },
        mm,
        vmas,
        fds,
        sigactions: inj.sigactions,
        shared_pending: read.shared_pending,
        threads,
        vdso_hash,
        vdso_size,
        itimers: inj.itimers,
        posix_timers: inj.posix_timers,
        exit_status: None,
        zombie: None,
        randomized: Some(stat.randomized()),
        namespaces: Vec::new(),
        cgroups: Vec::new(),
        nspid: Vec::new(),
        pid_ns: 0,
        pid_ns_for_children: None,
        cow_from_parent: Vec::new(),
        inherited: Vec::new(),
        files_shared_with: None,
        fs_shared_with: None,
        cwd_removed,
        root_removed,
        aio,
        stopped: fr
            .threads
            .iter()
            .find_map(|t| t.group_stop)
            .map(|signo| JobStop {
                signo,
                unreported: false,
            }),
        sem_undo: inj.sem_undo,
        // Once every process is collected (`kinds::ipc::collect_undo_lists`).
        sem_undo_list: None,
    };
    let vdso = (vdso_size != 0).then_some((vdso_hash, vdso_size, vvar_size));
    Ok((
        process,
        ProcCollected {
            xcomp_perm: inj.xcomp_perm,
            runs,
            vdso,
            unreported_stops: inj.unreported_stops,
        },
    ))
}

/// A zombie of the tree: only its IDs and the status its parent will collect.
pub(crate) fn zombie_process(pid: i32) -> Result<(Process, ProcCollected)> {
    Ok((tree::zombie_process(pid)?, ProcCollected::default()))
}

/// The image metadata for a collected tree (`processes` in tree order, root first, and
/// what else was collected of each, `procs`).
pub(crate) fn assemble(
    root: i32,
    processes: Vec<Process>,
    procs: Vec<ProcCollected>,
) -> Result<Collected> {
    let xcomp_perm = procs.iter().fold(0, |a, p| a | p.xcomp_perm);
    let root_vdso = procs.first().and_then(|p| p.vdso);
    let runs = processes
        .iter()
        .zip(procs)
        .filter(|(process, _)| !process.is_zombie())
        .map(|(process, p)| (process.pid, p.runs))
        .collect();
    let ckpt = tree::checkpoint(root, processes, xcomp_perm, root_vdso);
    Ok(Collected {
        ckpt,
        runs,
        host_pids: Default::default(),
        in_flight_data: Vec::new(),
    })
}
