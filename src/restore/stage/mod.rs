//! Stage and commit: build the process in a traced stub, then let it go.
//!
//! The stub is a fork of ckpt created with clone3(set_tid) at the image's PID; it traces
//! itself to us (PTRACE_TRACEME, PTRACE_O_EXITKILL: if ckpt dies, so does the stub) and
//! stops. Everything is then done by system calls injected into it: its own memory is
//! unmapped (but for a small "stub area" holding a syscall instruction and scratch data at
//! an address the image does not use), the image's memory map, files and attributes are
//! built, page data is written as it streams in (each record's checksum already checked),
//! and finally the stub area is unmapped, the saved registers are set and the task is
//! detached: the point of no return. Until then, dropping the [`Stub`] kills it.

mod build;
mod commit;
mod stub;

use build::*;
pub use commit::commit;
pub(crate) use commit::trap_mode;
use commit::*;
use stub::*;
pub use stub::{RootStub, Stub};

use std::collections::BTreeMap;

use super::gate::{Gate, gate_threads, park_at_gate};
use super::plan::{Plan, TASK_SIZE};
use super::source::RecordSource;
use super::{RestoreError, Result, fault_point};
use crate::arch::Abi;
use crate::arch::native::{self as ax, nr};
use crate::kinds::fd::file::FileData;
use crate::kinds::fd::{self, PipeHolders, lock, udp, unix};
use crate::kinds::mem;
use crate::kinds::mem::cow;
use crate::kinds::mem::pages::{PageSink, PageStream};
use crate::kinds::mem::shmem::{self, ShmOwners, SysvCreated};
use crate::kinds::task::{attrs, creds, seccomp, share, signals, threads, timers, tree};
use crate::model::Process;
use crate::remote::{BATCH_CODE_OFFSET, BatchArgs, Ctx, STUB_SIZE, helper_injector};
use crate::sys::inject::{Call, Injector, find_gadget};
use crate::sys::mem::RemoteMem;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, proc as procfs};

struct StagedProc {
    inj: Injector,
    threads: Vec<Injector>,
}

/// What stage hands to commit.
pub struct Staged {
    pub stub: Stub,
    /// The cgroups made for the tree (removed after the stub's processes are killed).
    cgroups: crate::kinds::cgroup::MadeCgroups,
    sysv: SysvCreated,
    stub_addr: u64,
    /// Per process of the image (zombies have none).
    procs: Vec<Option<StagedProc>>,
    pub bytes: u64,
    /// How long making the processes took (the root's stub to the last fork).
    pub(crate) forking: std::time::Duration,
    /// The release gate of each process (zombies have none), if the threads wait on it.
    gates: Option<Vec<Option<Gate>>>,
    /// ckpt's copies of the TCP connections only in flight (process, descriptor, copy),
    /// in repair mode until commit (the processes do not hold them).
    in_flight_conns: Vec<(i32, i32, std::os::fd::OwnedFd)>,
}

impl Staged {
    /// The helper area's address (the same in every process of the tree).
    pub(crate) fn stub_addr(&self) -> u64 {
        self.stub_addr
    }
}

/// Create the stub tree and build every process in it (everything but commit).
pub(crate) fn stage(
    plan: &Plan,
    reader: &mut dyn RecordSource,
    root_stub: RootStub,
    tty: Option<(&super::plan::TtyPlan, i32)>,
) -> Result<Staged> {
    let procs = &plan.ckpt.processes;
    let root = &procs[0];
    // Declared before the stub: on failure it goes after the stub's processes.
    let mut cgroups = crate::kinds::cgroup::MadeCgroups::default();
    // `--manage-cgroups`: the cgroups with their limits, before any process is in them.
    crate::kinds::cglimits::restore(
        &plan.ckpt,
        plan.cgroup_root.as_deref(),
        plan.cgroup_mode,
        plan.cgroup_limits,
        &mut cgroups,
    )?;
    // The namespaces processes below the root made in user namespaces of the tree's,
    // before any stub (see `kinds::userns`).
    let mut below = crate::kinds::userns::make_below(
        &plan.ckpt,
        plan.userns.as_ref(),
        plan.cgroup_root.as_deref(),
        &mut cgroups,
    )?;
    let forking_from = std::time::Instant::now();
    let ia32 = starts_ia32(procs, &root_stub);
    let mut stub = start_root(procs, root_stub, ia32)?;
    // Pseudo-terminal pairs of the image, held by ckpt until every process has its
    // descriptors of them.
    let ptys = fd::tty::open_ptys(&plan.ckpt)?;
    let bootstrap = ia32.then(|| ax::compat::ia32_stub_elf().1);
    let (mut root_cx, stub_addr) = helper_area(stub.procs[0].0, procs, bootstrap)?;
    if ia32 {
        root_cx.space_end = crate::arch::debugreg::IA32_TASK_SIZE;
    }
    let mut ctxs: Vec<Ctx<'_>> = vec![root_cx];
    clean_stub(&mut ctxs[0], stub_addr, tty.is_some())?;
    crate::kinds::ipc::make_undo_list(&mut ctxs[0])?;
    if tty.is_none() && root.sid == root.pid {
        tree::set_session_tty(&mut ctxs[0], &plan.ckpt, &ptys)?;
    }
    // --new-tty: the new terminal becomes the controlling terminal of the root's new
    // session before any process of it is forked (they inherit it).
    if let Some((tp, slave)) = tty {
        if tp.controlling {
            tree::set_controlling_tty(&mut ctxs[0], slave)?;
        }
    }
    let mut shared = Shared {
        files: FileData::default(),
        pipe_holders: PipeHolders::new(),
        sysv: SysvCreated::default(),
        shm: ShmOwners::new(),
        shm_sizes: shmem::shm_sizes(procs),
        lazy: None,
    };
    crate::kinds::ipc::create_objects(&plan.ckpt.sysv, &mut shared.sysv)?;
    // The named POSIX message queues of an IPC namespace of the tree's own, in the new
    // one (ckpt's, since `kinds::ns::enter_new`), before a process opens one by name.
    if let Some(l) = crate::kinds::ns::own_ipc(&plan.ckpt) {
        fd::mqueue::make_namespace_queues(&l.mqueues)?;
    }
    let mut pages = PageStream::new(reader);
    shared.files = pages.read_file_data(true)?;
    shared.files.held = plan.held.fds();
    // Files opened by a name removed since: held under that name (kept until the end).
    let _aliases = fd::file::alias_unlinked(procs, &mut shared.files.held)?;
    shared.files.memfd_modes = fd::file::memfd_modes(procs);
    fd::file::check_file_data(procs, &shared.files)?;
    // The memory of a process whose child inherits pages from it is built before that
    // child is forked (`kinds::mem::cow`); the others' in the loop below.
    let mut early = EarlyMemory {
        pages: &mut pages,
        sh: &mut shared,
        built: vec![false; procs.len()],
        bytes: 0,
    };
    fork_tree(
        &mut ctxs,
        &mut stub,
        stub_addr,
        plan,
        &ptys,
        &mut early,
        &mut cgroups,
        &below,
    )?;
    // (The tree's mounts kept for the namespaces made below the root are not needed
    // any more: none stays held while the tree runs.)
    crate::kinds::mnt::release_kept();
    let forking = forking_from.elapsed();
    let EarlyMemory {
        built: mem_built,
        mut bytes,
        ..
    } = early;
    shared.lazy = plan.lazy.clone();
    // Into their cgroups before their memory is filled, so that it is charged there
    // (those whose memory `fork_tree` built went in before it).
    let pids: Vec<i32> = stub.procs.iter().map(|(p, _)| *p).collect();
    if plan.cgroup_mode != crate::kinds::cglimits::CgroupMode::Ignore {
        crate::kinds::cgroup::place(&plan.ckpt, &pids, plan.cgroup_root.as_deref(), &mut cgroups)?;
    }
    tree::set_process_groups(&mut ctxs, &plan.ckpt)?;
    tree::set_foreground_groups(&mut ctxs, &plan.ckpt, &ptys)?;
    // --new-tty: the new terminal gets the image's foreground group (every group exists
    // by now).
    // (The group as the root's PID namespace numbers it: a tree with a namespace of its
    // own sees its groups by their IDs there.)
    if let Some((tp, slave)) = tty {
        if tp.controlling {
            let fg = crate::kinds::task::pidns::id_seen_by(&plan.ckpt, ctxs[0].proc_, tp.fg_pgid)
                .ok_or_else(|| {
                RestoreError::Malformed(format!(
                    "the new terminal's foreground group {} is not visible to the root",
                    tp.fg_pgid
                ))
            })?;
            tree::set_tty_foreground(&mut ctxs[0], slave, fg)?;
        }
    }
    // Zombies exit now, before their parents' pending signals are queued; processes
    // stopped by job control stop.
    tree::make_zombies(&mut ctxs, procs)?;
    tree::stop_jobs(&mut ctxs, procs)?;

    fd::create_accepted_pairs(
        &mut ctxs,
        &plan.ckpt,
        &mut shared.pipe_holders,
        &shared.files.held,
    )?;
    fd::tcp::create_queued(&mut ctxs, &plan.ckpt, &mut shared.pipe_holders)?;
    let mut staged = Vec::new();
    for (i, cx) in ctxs.iter_mut().enumerate() {
        if cx.proc_.is_zombie() {
            staged.push(None);
            continue;
        }
        let tids = &mut stub.procs[i].1;
        if !mem_built[i] {
            bytes += build_memory(cx, &mut pages, &mut shared)?;
        }
        let threads = build_process(cx, plan, &mut shared, tids, tty, &ptys, &mut below)?;
        staged.push(Some(threads));
    }
    pages.finish()?;
    let Shared {
        sysv,
        pipe_holders,
        files,
        ..
    } = shared;
    let in_flight_conns = link_processes(
        &mut ctxs,
        &plan.ckpt,
        procs,
        &plan.ckpt.socketpairs,
        pipe_holders,
        &files.held,
    )?;
    fd::tty::finish_ptys(&plan.ckpt, &ptys)?;
    drop(ptys);
    // While the stubs still have ckpt's credentials (they take the gate from it).
    let gates = match plan.release_gate {
        Some(gate) => gate_threads(&mut ctxs, plan, stub_addr, gate)?,
        None => None,
    };
    tree::close_ckpt_pidfds(&mut ctxs)?;
    let own = creds::Own::detect()?;
    enter_tree_userns(&mut ctxs, &staged, plan, &own, &below)?;
    seccomp::install_before_creds(&mut ctxs, &mut staged, &plan.ckpt, &own, stub_addr)?;
    restore_all_creds(&mut ctxs, &mut staged, plan, &own)?;
    seccomp::install_after_creds(&mut ctxs, &mut staged, stub_addr)?;
    let procs_staged = ctxs
        .into_iter()
        .zip(staged)
        .map(|(cx, t)| match (t, cx.task.into_live()) {
            (Some(threads), Some(live)) => Ok(Some(StagedProc {
                inj: live.inj,
                threads,
            })),
            (None, _) => Ok(None),
            (Some(_), None) => Err(RestoreError::Stage("commit needs live processes".into())),
        })
        .collect::<Result<_>>()?;
    Ok(Staged {
        stub,
        cgroups,
        sysv,
        stub_addr,
        procs: procs_staged,
        bytes,
        forking,
        gates,
        in_flight_conns,
    })
}

/// What the processes being built share: the objects created so far, for the next
/// process that has them too.
/// (Fields drop in this order on failure: the recreated deleted files go first.)
struct Shared {
    files: FileData,
    pipe_holders: PipeHolders,
    sysv: SysvCreated,
    shm: ShmOwners,
    /// The size of each shared anonymous memory object.
    shm_sizes: BTreeMap<u64, u64>,
    /// `restore --lazy`, once every process is forked (a fork from a stub with lazy
    /// areas would wait for the server; memory built before, for a child that
    /// inherits pages, is filled at once).
    lazy: Option<std::sync::Arc<super::lazy::Lazy>>,
}
