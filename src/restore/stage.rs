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

/// Owns the half-built process tree: dropping it before commit kills and reaps every
/// process and thread it created.
pub struct Stub {
    /// (process ID, IDs of its other threads), in creation order; the first is the root,
    /// ckpt's own child.
    pub procs: Vec<(i32, Vec<i32>)>,
    committed: bool,
    /// The root is the init of the PID namespace we live in ([`RootStub::Seize`]): we
    /// cannot kill it (an init ignores SIGKILL from inside its namespace). It dies with
    /// us (PTRACE_O_EXITKILL) and its parent, ckpt outside, reaps it; the namespace's
    /// other processes die with it.
    root_seized: bool,
}

/// Where the root of the tree comes from.
pub enum RootStub {
    /// A new child of ours, created with the root's PID.
    Spawn,
    /// A child of ours already created with the root's PID ([`RootStub::spawn_now`]).
    Spawned(SpawnedRoot),
    /// An existing process (see `sys::process::spawn_pidns_init_stub`): we seize it and
    /// write a byte to `go`, after which it stops itself.
    Seize { pid: i32, go: std::os::fd::OwnedFd },
    /// A new child of our parent (a sibling of ours), created with the root's PID: the
    /// restored root becomes our caller's child (`criu`'s `rst_sibling`).
    Sibling,
}

impl RootStub {
    /// Create the root's stub now (a fork of ckpt), before ckpt grows threads and
    /// buffers: a fork then copies less, and no page ckpt writes meanwhile is shared
    /// copy-on-write with the stub until the stub unmaps it. (`Spawn` otherwise.)
    pub fn spawn_now(self, plan: &Plan) -> Result<Self> {
        match self {
            RootStub::Spawn => {
                let root =
                    plan.ckpt.processes.first().ok_or_else(|| {
                        RestoreError::Malformed("the image holds no process".into())
                    })?;
                fault_point("create process")?;
                let pid = spawn_root(root, &plan.ckpt.processes)?;
                Ok(RootStub::Spawned(SpawnedRoot { pid }))
            }
            other => Ok(other),
        }
    }
}

/// The root's stub created ahead of `stage`: killed and reaped if dropped before
/// stage takes it over.
pub struct SpawnedRoot {
    pid: i32,
}

impl SpawnedRoot {
    /// Hand the process over (to stage's [`Stub`] guard).
    fn take(self) -> i32 {
        let pid = self.pid;
        std::mem::forget(self);
        pid
    }
}

impl Drop for SpawnedRoot {
    fn drop(&mut self) {
        sys::process::kill_and_reap(self.pid, &[]);
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if !self.committed && self.root_seized {
            for (pid, _) in self.procs.iter().skip(1) {
                let _ = sys::process::kill(*pid, libc::SIGKILL);
            }
        } else if !self.committed {
            for (pid, _) in &self.procs {
                let _ = sys::process::kill(*pid, libc::SIGKILL);
            }
            // Parents first: when the root (our child) is gone, its children are
            // reparented to us (restore makes ckpt a child subreaper), so that we, their
            // tracer and now parent, reap them completely. (Without blocking on one: see
            // `kill_and_reap_all`.)
            sys::process::kill_and_reap_all(&self.procs);
        }
    }
}

/// Where the helper area may go: gaps in the image's memory maps, below `limit` (4 GiB
/// when an ia32 task must reach it).
fn stub_candidates(vmas: &[(u64, u64)], limit: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut prev = 0x1000_0000u64; // stay clear of low memory
    for v in vmas
        .iter()
        .copied()
        .filter(|v| v.0 < limit)
        .chain([(limit, limit)])
    {
        // leave a page of gap on both sides so nothing merges with the stub area
        if v.0 > prev + STUB_SIZE + 2 * 4096 {
            out.push(prev + 4096);
            out.push(v.0 - STUB_SIZE - 4096);
        }
        prev = prev.max(v.1);
    }
    out
}

/// One staged process: its injector (the leader's) and its other threads'.
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
    let below = crate::kinds::userns::make_below(&plan.ckpt, plan.userns.as_ref())?;
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
        let threads = build_process(cx, plan, &mut shared, tids, tty, &ptys)?;
        staged.push(Some(threads));
    }
    pages.finish()?;
    let Shared {
        sysv,
        pipe_holders,
        files,
        ..
    } = shared;
    link_processes(
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

/// Create (or seize) the root's stub and wait until it stops, traced; the guard that
/// kills the tree unless it commits starts with it.
/// Whether the tree starts from the ia32 stub executable ([`spawn_root`]): every thread
/// of every process is ia32, and the root is a new child of ckpt.
fn starts_ia32(procs: &[Process], root_stub: &RootStub) -> bool {
    matches!(root_stub, RootStub::Spawn | RootStub::Spawned(_))
        && !procs.is_empty()
        && procs
            .iter()
            .flat_map(|p| p.threads.iter())
            .all(|t| t.arch.abi() == Abi::Ia32)
}

/// The root's stub, a new child of ckpt with the root's PID. For a tree of ia32
/// processes only, the child executes a tiny ia32 executable first
/// (`arch::native::compat::ia32_stub_elf`, from a memfd): only `execve` of a 32-bit ELF
/// gives a memory map the kernel treats as a compat one (no `[vsyscall]` area, the
/// 32-bit address-space limit), as the dumped processes had; the children forked from
/// it inherit that.
fn spawn_root(root: &Process, procs: &[Process]) -> Result<i32> {
    let ia32 = starts_ia32(procs, &RootStub::Spawn);
    let elf = if ia32 {
        let (bytes, _) = ax::compat::ia32_stub_elf();
        let mut f = sys::process::memfd("ckpt-ia32-stub")?;
        std::io::Write::write_all(&mut f, &bytes)
            .map_err(|e| sys::SysError::io("write the ia32 stub executable", e))?;
        Some(f)
    } else {
        None
    };
    tree::once_released(root.pid, || {
        Ok(sys::process::spawn_traced_stub(
            Some(root.pid),
            elf.as_ref().map(std::os::fd::AsFd::as_fd),
        )?)
    })
}

fn start_root(procs: &[Process], root_stub: RootStub, ia32: bool) -> Result<Stub> {
    let root = &procs[0];
    let (pid, root_seized) = match root_stub {
        RootStub::Spawn => {
            fault_point("create process")?;
            (spawn_root(root, procs)?, false)
        }
        RootStub::Spawned(r) => (r.take(), false),
        RootStub::Sibling => {
            fault_point("create process")?;
            let (pid, go) =
                tree::once_released(root.pid, || Ok(sys::process::spawn_sibling_stub(root.pid)?))?;
            // Killed with us from the start: it is not our child, nothing else would.
            let seized = ptrace::seize(pid, libc::PTRACE_O_EXITKILL).and_then(|()| {
                std::io::Write::write_all(&mut std::fs::File::from(go), b"g")
                    .map_err(|e| sys::SysError::io("wake the new process", e))
            });
            if let Err(e) = seized {
                let _ = sys::process::kill(pid, libc::SIGKILL);
                return Err(e.into());
            }
            (pid, false)
        }
        RootStub::Seize { pid, go } => {
            ptrace::seize(pid, 0)?;
            std::io::Write::write_all(&mut std::fs::File::from(go), b"g")
                .map_err(|e| sys::SysError::io("wake the namespace's init", e))?;
            (pid, true)
        }
    };
    let stub = Stub {
        procs: vec![(pid, Vec::new())],
        committed: false,
        root_seized,
    };
    if ia32 {
        // The exec's SIGTRAP, then the stub executable's own stop.
        match ptrace::wait(pid)? {
            Stop::Signal(libc::SIGTRAP) => ptrace::cont(pid, 0)?,
            other => {
                return Err(RestoreError::Stage(format!(
                    "the new process did not start the ia32 stub executable ({other:?})"
                )));
            }
        }
    }
    match ptrace::wait(pid)? {
        Stop::Signal(libc::SIGSTOP) => {}
        other => {
            return Err(RestoreError::Stage(format!(
                "the new process did not stop as expected ({other:?})"
            )));
        }
    }
    ptrace::set_options(
        pid,
        libc::PTRACE_O_EXITKILL
            | libc::PTRACE_O_TRACESYSGOOD
            | libc::PTRACE_O_TRACECLONE
            | libc::PTRACE_O_TRACEFORK,
    )?;
    // Every signal blocked while the stubs are built, but SIGTRAP: the breakpoint after
    // each injected call raises it (see `Injector::trap_after`), and were it blocked
    // when the program's handler is already installed, the kernel would reset that
    // handler (the first forced SIGTRAP also unblocks it; this says so plainly).
    ptrace::set_sigmask(pid, !sigbit(libc::SIGTRAP))?;
    Ok(stub)
}

/// Map the helper area into the root's stub (`pid`) and write its code; returns the
/// root's context and the area's address.
fn helper_area(pid: i32, procs: &[Process], bootstrap: Option<u64>) -> Result<(Ctx<'_>, u64)> {
    let base = ptrace::get_regs(pid)?;

    // Bootstrap: the stub is a copy of us, so our own vDSO's syscall instruction is at
    // the same address in it; or it runs the ia32 stub executable, which has one at
    // `bootstrap`.
    let gadget = match bootstrap {
        Some(g) => g,
        None => {
            let (vstart, vlen) = own_vdso_range()?;
            let code = sys::process::read_own(vstart, vlen as usize)?;
            find_gadget(&code, vstart)
                .ok_or_else(|| RestoreError::Stage("no syscall instruction in the vDSO".into()))?
        }
    };
    let mut inj = Injector::new(pid, gadget, base);
    let mem = RemoteMem::open(pid)?;

    // The helper area is inherited by every process forked from the root stub: it must
    // be free in all of their memory maps.
    // (and of the AIO rings restore puts back at their addresses).
    let mut all_vmas: Vec<(u64, u64)> = procs
        .iter()
        .flat_map(|p| {
            let rings = p.aio.iter().map(|r| (r.addr, r.addr + r.len));
            p.vmas.iter().map(|v| (v.start, v.end)).chain(rings)
        })
        .collect();
    all_vmas.sort_unstable();
    let mut stub_addr = None;
    let any_ia32 = procs
        .iter()
        .flat_map(|p| p.threads.iter())
        .any(|t| t.arch.abi() == Abi::Ia32);
    let limit = if any_ia32 { 0xffff_e000 } else { TASK_SIZE };
    for cand in stub_candidates(&all_vmas, limit) {
        let r = inj.raw(
            nr::MMAP,
            [
                cand,
                STUB_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )?;
        if r as u64 == cand {
            stub_addr = Some(cand);
            break;
        }
    }
    let stub_addr = stub_addr.ok_or_else(|| {
        RestoreError::Stage("no free address range for the restore helper area".into())
    })?;
    // syscall; int3; int3; int $0x80; int3..., and the batch executor.
    let mut code = ax::SYSCALL_INSN.to_vec();
    code.extend_from_slice(&[0xcc; 2]);
    code.extend_from_slice(&ax::INT80_INSN);
    code.resize(BATCH_CODE_OFFSET as usize, 0xcc);
    code.extend_from_slice(&ax::BATCH_CODE);
    mem.write(stub_addr, &code)?;
    // Both gadgets of the helper area are followed by int3: one stop per injected call
    // and batches of calls, unless a process of the image ignores SIGTRAP (the
    // breakpoint would reset that).
    let trap = trap_mode(procs);
    let inj = helper_injector(pid, stub_addr, base, trap);
    let cx = Ctx::live(inj, mem, stub_addr, &procs[0]);
    Ok((cx, stub_addr))
}

/// Leave nothing of ckpt in the root's stub: rseq registration, memory, descriptors (but
/// 0-2, which processes of the image may inherit). With `new_tty`, the root leads a new
/// session.
fn clean_stub(cx: &mut Ctx<'_>, stub_addr: u64, new_tty: bool) -> Result<()> {
    let root = cx.proc_;
    let pid = cx.pid();
    // One batch: the executor and its table are in the helper area, and it uses no
    // stack (the stub's is among what goes).
    let mut calls = Vec::new();
    let (rseq, rseq_len, rseq_sig, _) = ptrace::get_rseq(pid)?;
    if rseq != 0 {
        calls.push(Call::new(
            "rseq unregister",
            nr::RSEQ,
            [rseq, u64::from(rseq_len), 1, u64::from(rseq_sig), 0, 0],
        ));
    }
    let after = stub_addr + STUB_SIZE;
    calls.push(Call::new("munmap", nr::MUNMAP, [0, stub_addr, 0, 0, 0, 0]));
    calls.push(Call::new(
        "munmap",
        nr::MUNMAP,
        [after, cx.space_end - after, 0, 0, 0, 0],
    ));
    calls.push(Call::new(
        "close_range",
        nr::CLOSE_RANGE,
        [3, u64::from(u32::MAX), 0, 0, 0, 0],
    ));
    // With a new terminal the root leads a new session even if its session was led
    // from outside (the old shell's): the terminal belongs to that session.
    if root.sid == root.pid || new_tty {
        calls.push(Call::new("setsid", nr::SETSID, [0; 6]));
    }
    cx.batch(&BatchArgs::new(), &calls)?;
    Ok(())
}

/// The memory built while the tree is forked: for the processes whose children inherit
/// pages from them (`kinds::mem::cow`), and, the page data coming in image order, those
/// before them.
struct EarlyMemory<'p, 'r, 's> {
    pages: &'p mut PageStream<'r>,
    sh: &'s mut Shared,
    /// Per process of the image: its memory is built.
    built: Vec<bool>,
    bytes: u64,
}

/// The tree, parents first: each process is forked from its parent's stub (so it is
/// that parent's child), and takes its session before its own children are forked. A
/// process that inherits pages from its parent is forked once the parent's memory is
/// built (and that of every process before it, in image order); a process forked from
/// a parent that is no longer a clean stub keeps only the helper area and what it
/// inherits (`cow::trim_inherited`).
// (What it forks from and into, each its own: bundling them would only rename them.)
#[allow(clippy::too_many_arguments)]
fn fork_tree<'a>(
    ctxs: &mut Vec<Ctx<'a>>,
    stub: &mut Stub,
    stub_addr: u64,
    plan: &'a Plan,
    ptys: &fd::tty::PtyMasters,
    early: &mut EarlyMemory<'_, '_, '_>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
    below: &crate::kinds::userns::Below,
) -> Result<()> {
    let procs = &plan.ckpt.processes;
    // Per process: its memory is no longer the clean stub's.
    let mut dirty = vec![false; procs.len()];
    // Per process: its stub called unshare(CLONE_NEWPID) (`kinds::task::pidns`).
    let mut unshared = vec![false; procs.len()];
    // Per process: its stub made the time namespace for its children.
    let mut time_made = vec![false; procs.len()];
    // Where stubs keep their pidfd of ckpt for nested PID namespaces: above every
    // descriptor of the image and the temporaries of its pipes and socket pairs
    // (`fd::pipe_tmp_base`).
    let pairs =
        (plan.ckpt.pipes.len() + plan.ckpt.socketpairs.len() + plan.ckpt.fifos.len()) as u64;
    let pidfd_at = procs.iter().map(fd::pipe_tmp_base).max().unwrap_or(3) + 2 * pairs + 8;
    for (i, p) in procs.iter().enumerate().skip(1) {
        let parent = procs
            .iter()
            .position(|q| q.pid == p.ppid)
            .ok_or_else(|| RestoreError::Malformed(format!("no parent for process {}", p.pid)))?;
        if cow::inherits(p) {
            // The processes forked so far go into their cgroups first, so that the
            // memory built now is charged there.
            let pids: Vec<i32> = stub.procs.iter().map(|(p, _)| *p).collect();
            if plan.cgroup_mode != crate::kinds::cglimits::CgroupMode::Ignore {
                crate::kinds::cgroup::place(
                    &plan.ckpt,
                    &pids,
                    plan.cgroup_root.as_deref(),
                    cgroups,
                )?;
            }
            for k in 0..=parent {
                if !early.built[k] && !procs[k].is_zombie() {
                    early.bytes += build_memory(&mut ctxs[k], early.pages, early.sh)?;
                    early.built[k] = true;
                    dirty[k] = true;
                }
            }
        }
        tree::group_before_fork(ctxs, &plan.ckpt, i, parent)?;
        tree::prepare_nested_fork(&mut ctxs[parent], p, &mut unshared[parent], pidfd_at)?;
        crate::kinds::ns::make_time_for_children(
            &mut ctxs[parent],
            &plan.ckpt,
            p,
            &mut time_made[parent],
        )?;
        // Sharing its parent's descriptor table or filesystem information, which the
        // parent leaves after the last of siblings that share what it does not.
        let inj = tree::fork_process(&mut ctxs[parent], p, share::fork_flags(procs, i))?;
        stub.procs.push((p.pid, Vec::new()));
        let leave = share::unshare_after(procs, i);
        if leave != 0 {
            ctxs[parent].call(
                "unshare (a descriptor table or filesystem information its children share)",
                nr::UNSHARE,
                [leave, 0, 0, 0, 0, 0],
            )?;
        }
        let mem = RemoteMem::open(p.pid)?;
        let mut cx = Ctx::live(inj, mem, stub_addr, p);
        // Forked from its parent's stub: the same kind of memory map.
        cx.space_end = ctxs[parent].space_end;
        if p.pid_ns != 0 {
            cx.ckpt_pidfd = ctxs[parent].ckpt_pidfd;
        }
        crate::kinds::ns::enter_child_namespaces(
            &mut cx,
            &plan.ckpt,
            &procs[parent],
            below,
            (plan.cgroup_root.as_deref(), &mut *cgroups),
        )?;
        // Before its own children are forked (they may share it).
        crate::kinds::ipc::make_undo_list(&mut cx)?;
        if dirty[parent] {
            cow::trim_inherited(&mut cx, stub_addr)?;
            dirty[i] = true;
        }
        if p.sid == p.pid {
            cx.call("setsid", nr::SETSID, [0; 6])?;
            tree::set_session_tty(&mut cx, &plan.ckpt, ptys)?;
        }
        ctxs.push(cx);
    }
    // Processes that called unshare(CLONE_NEWPID) and have not forked since.
    for (i, cx) in ctxs.iter_mut().enumerate() {
        if cx.proc_.pid_ns_for_children.is_some() && !unshared[i] && !cx.proc_.is_zombie() {
            tree::unshare_pid_ns(cx)?;
        }
    }
    Ok(())
}

/// Build one (live) process in its stub, its memory built ([`build_memory`]):
/// descriptors, attributes, threads (their IDs go to `tids`), timers. Returns its
/// threads' injectors.
fn build_process(
    cx: &mut Ctx<'_>,
    plan: &Plan,
    sh: &mut Shared,
    tids: &mut Vec<i32>,
    tty: Option<(&super::plan::TtyPlan, i32)>,
    ptys: &fd::tty::PtyMasters,
) -> Result<Vec<Injector>> {
    // A shared descriptor table's descriptors are restored once, by its first sharer.
    if share::restores_fds(cx.proc_) {
        fd::restore_fds(
            cx,
            &plan.ckpt,
            &plan.inherit,
            &mut sh.pipe_holders,
            &mut sh.files,
            tty.map(|t| t.1),
            ptys,
        )?;
    }
    // AIO contexts once the memory areas are in place (their rings go between them).
    mem::aio::restore_rings(cx)?;
    // Shared working and root directories once, by their last sharer (the others'
    // steps above use paths from the host's root).
    if share::restores_fs(&plan.ckpt.processes, cx.proc_.pid) {
        attrs::set_cwd_root(cx, &sh.files)?;
    }
    lock::restore_locks(cx)?;
    attrs::restore_attrs(cx)?;
    // AMX tile data is enabled per process on request; ask again if it was.
    const XFEATURE_XTILEDATA: u64 = 18;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    if plan.request_amx {
        cx.call(
            "arch_prctl(ARCH_REQ_XCOMP_PERM)",
            nr::ARCH_PRCTL,
            [ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0, 0, 0, 0],
        )?;
    }
    // In a user namespace of the tree's own, a process's threads are made inside it
    // (their IDs in the tree's PID namespace, which it owns): the process joins it
    // first, while it is single-threaded (see `kinds::userns`).
    let p = cx.proc_;
    let mut by_last_pid = false;
    let in_tree_userns = crate::kinds::userns::of_process(&plan.ckpt, p).map(|n| n.inode)
        == crate::kinds::userns::owned(&plan.ckpt).map(|n| n.inode);
    if p.threads.len() > 1 && in_tree_userns {
        if let Some((fd, _)) = tree_userns(plan) {
            let own = creds::Own::detect()?;
            crate::kinds::userns::enter(cx, &own, &p.creds.groups, fd)?;
            // (In ckpt's PID namespace, which the user namespace does not own, its
            // threads' IDs are set from outside.)
            by_last_pid = !plan.ckpt.own_pid_namespace;
        }
    }
    // Threads after the memory they run on, before credentials change.
    let threads = threads::create_threads(cx, tids, by_last_pid)?;
    // Pidfds of its own threads, which exist now.
    if share::restores_fds(cx.proc_) {
        fd::pidfd::open_after_threads(cx, &plan.ckpt)?;
    }
    // Pending signals after the threads exist (a signal pending on one thread is queued
    // to that thread), under the dispositions restore_attrs gave.
    signals::queue_pending(cx)?;
    // Timers may signal a particular thread: after the threads exist.
    timers::restore_timers(cx)?;
    crate::kinds::ipc::restore_undo(cx)?;
    Ok(threads)
}

/// Build the memory of one (live) process in its stub: mm fields, areas, pages,
/// protections and advice. Returns the page bytes written.
fn build_memory(cx: &mut Ctx<'_>, pages: &mut PageStream<'_>, sh: &mut Shared) -> Result<u64> {
    let p = cx.proc_;
    attrs::set_thp_disable(cx)?;
    // mm fields and exe link before the image's memory exists: the kernel refuses
    // to replace the exe link while the old executable is mapped, and the image may
    // map the very file ckpt runs from.
    attrs::set_mm(cx, &sh.files)?;
    mem::map_memory(cx, &mut sh.sysv, &mut sh.shm, &sh.shm_sizes, &mut sh.files)?;
    fault_point("fill memory")?;
    let lazy = sh.lazy.clone();
    let sink = match &lazy {
        Some(l) => PageSink::new_lazy(cx, l)?,
        None => PageSink::new(cx)?,
    };
    let bytes = pages.load(p, Some(&sink))?;
    sink.finish()?;
    mem::finish_memory(cx)?;
    Ok(bytes)
}

/// Once every process has its descriptors: what links processes to each other (unix
/// datagram peers and queues, UDP queues), System V segments removed at dump, and the
/// pipe holders' temporaries.
fn link_processes(
    ctxs: &mut [Ctx<'_>],
    ckpt: &crate::model::Checkpoint,
    procs: &[Process],
    pairs: &[crate::model::SocketPairState],
    pipe_holders: PipeHolders,
    dirs: &unix::HeldDirs,
) -> Result<()> {
    unix::fill_deferred_pairs(ctxs, ckpt, pairs, &pipe_holders)?;
    unix::unix_dgram_links(ctxs, ckpt)?;
    unix::connect_pending(ctxs, ckpt, dirs)?;
    // Every message is queued again: what only they held is theirs alone again.
    fd::inflight::close_in_flight(ctxs)?;
    udp::requeue_udp(procs)?;
    let mut removed = std::collections::BTreeSet::new();
    for cx in ctxs.iter_mut().filter(|c| !c.proc_.is_zombie()) {
        shmem::remove_destroyed_sysv(cx, &mut removed)?;
    }
    // Every process has its pipe ends now: the holders drop their temporaries.
    fd::close_holders(ctxs, pipe_holders)
}

/// The user namespace of the tree's own that the stubs join: ckpt's descriptor of it
/// and its recorded state.
fn tree_userns(plan: &Plan) -> Option<(i32, &crate::model::UserNsState)> {
    use std::os::fd::AsRawFd;
    match (&plan.userns, crate::kinds::userns::owned(&plan.ckpt)) {
        (Some(fd), Some(ns)) => ns.user.as_ref().map(|u| (fd.as_raw_fd(), u)),
        _ => None,
    }
}

/// In a user namespace of the tree's own, each single-threaded process joins it (a
/// multi-threaded one joined it before its threads were made, `build_process`), before
/// its seccomp filters and credentials; a process in one a process below the root made
/// joins that one (`below`, made before the stubs).
fn enter_tree_userns(
    ctxs: &mut [Ctx<'_>],
    staged: &[Option<Vec<Injector>>],
    plan: &Plan,
    ckpt_own: &creds::Own,
    below: &crate::kinds::userns::Below,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let tree = tree_userns(plan).map(|(fd, _)| fd);
    let root_user = crate::kinds::userns::owned(&plan.ckpt).map(|n| n.inode);
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter()) {
        if !threads.as_ref().is_some_and(|t| t.is_empty()) {
            continue;
        }
        let Some(ns) = crate::kinds::userns::of_process(&plan.ckpt, cx.proc_) else {
            continue;
        };
        let fd = if Some(ns.inode) == root_user {
            tree
        } else {
            below.users.get(&ns.inode).map(|f| f.as_raw_fd())
        };
        let Some(fd) = fd else {
            return Err(RestoreError::Stage(format!(
                "the user namespace user:[{}] of process {} was not made",
                ns.inode, cx.proc_.pid
            )));
        };
        let groups = cx.proc_.creds.groups.clone();
        crate::kinds::userns::enter(cx, ckpt_own, &groups, fd)?;
    }
    Ok(())
}

/// Credentials last: creating processes, PIDs and mm fields needs ckpt's privileges.
/// Every thread of a process gets them (each has its own), the main thread last. In a
/// user namespace of the tree's own, each process (which joined it already,
/// [`enter_tree_userns`]) takes its IDs as the namespace's maps show them
/// (`kinds::userns`). `ckpt_own`: ckpt's own credentials.
fn restore_all_creds(
    ctxs: &mut [Ctx<'_>],
    staged: &mut [Option<Vec<Injector>>],
    plan: &Plan,
    ckpt_own: &creds::Own,
) -> Result<()> {
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter_mut()) {
        let Some(threads) = threads else {
            continue;
        };
        let mut changed = false;
        let p = cx.proc_;
        let userns = crate::kinds::userns::state_of(&plan.ckpt, p);
        let (me, want) = match userns {
            Some(u) => {
                // (It joined the namespace already: `enter_tree_userns`.)
                let (me, want) = crate::kinds::userns::inside(ckpt_own, &p.creds, u)?;
                (me, std::borrow::Cow::Owned(want))
            }
            None => (ckpt_own.clone(), std::borrow::Cow::Borrowed(&p.creds)),
        };
        let me = &me;
        for (t, image) in threads.iter_mut().zip(p.threads.iter().skip(1)) {
            let c = image.creds.as_ref().unwrap_or(&p.creds);
            // Each thread's IDs as the namespace's maps show them too.
            let c = match userns {
                Some(u) => std::borrow::Cow::Owned(crate::kinds::userns::inside(ckpt_own, c, u)?.1),
                None => std::borrow::Cow::Borrowed(c),
            };
            std::mem::swap(&mut cx.live_task("set credentials")?.inj, t);
            let r = creds::restore_creds(cx, me, &c);
            std::mem::swap(&mut cx.live_task("set credentials")?.inj, t);
            changed |= r?;
        }
        if creds::restore_creds(cx, me, &want)? || changed {
            creds::after_creds(cx)?;
        }
    }
    Ok(())
}

/// The bit of signal `sig` in a signal mask.
fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Whether injected calls may stop on the helper area's breakpoint: not if a process of
/// the image ignores SIGTRAP (see `Injector::trap_after`), has one pending (it is queued
/// during stage, when SIGTRAP is not blocked) or a timer that sends one.
fn trap_mode(procs: &[Process]) -> bool {
    let trap = libc::SIGTRAP as u32;
    !procs.iter().any(|p| {
        p.sigactions
            .iter()
            .any(|a| a.signo == trap && a.handler == libc::SIG_IGN as u64)
            || p.shared_pending.iter().any(|s| s.signo == trap)
            || p.threads
                .iter()
                .any(|t| t.pending.iter().any(|s| s.signo == trap))
            || p.posix_timers.iter().any(|t| t.signo == libc::SIGTRAP)
            || p.zombie
                .is_some_and(|z| z.ignored & sigbit(libc::SIGTRAP) != 0)
    })
}

fn own_vdso_range() -> Result<(u64, u64)> {
    let start = sys::process::own_vdso();
    let maps = procfs::maps(std::process::id() as i32)?;
    maps.iter()
        .find(|m| m.path == b"[vdso]" && m.start == start)
        .map(|m| (m.start, m.end - m.start))
        .ok_or_else(|| RestoreError::Stage("ckpt itself has no vDSO".into()))
}

/// The point of no return: remove the helper area, set the saved registers, hand the
/// network lock over to ourselves, let go. Returns the root's PID and the lock of the
/// tree's TCP connections, which lasts until it is released or ckpt exits.
pub fn commit(mut s: Staged, plan: &Plan) -> Result<(i32, Option<sys::netlock::Handover>)> {
    let procs = &plan.ckpt.processes;
    fault_point("remove helper area")?;
    for sp in s.procs.iter_mut().flatten() {
        // The breakpoints and the executor go with the area.
        sp.inj.stop_trapping();
        sp.inj.clear_executor();
        sp.inj.call(
            "munmap helper area",
            nr::MUNMAP,
            [s.stub_addr, STUB_SIZE, 0, 0, 0, 0],
        )?;
    }
    // Seccomp strict mode only now: it leaves the threads no other call.
    fault_point("seccomp strict mode")?;
    if procs.iter().any(|p| {
        p.threads
            .iter()
            .any(|t| t.creds.as_ref().unwrap_or(&p.creds).seccomp == libc::SECCOMP_MODE_STRICT)
    }) {
        let (vstart, vlen) = own_vdso_range()?;
        let code = sys::process::read_own(vstart, vlen as usize)?;
        let gadget = find_gadget(&code, 0)
            .ok_or_else(|| RestoreError::Stage("no syscall instruction in the vDSO".into()))?;
        for p in procs.iter().filter(|p| !p.is_zombie()) {
            seccomp::enter_strict_mode(p, gadget)?;
        }
    }
    fault_point("set registers")?;
    // Signal masks only now: until the helper area is gone every signal stays blocked,
    // so that a timer firing cannot interrupt an injected call.
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        for t in &p.threads {
            ptrace::set_sigmask(t.tid, t.sigmask)?;
            // Converted to this host's xsave layout in plan.
            let xsave = plan.xsave.get(&t.tid).unwrap_or(&t.arch.xsave);
            threads::set_thread_state(t.tid, t, xsave)?;
        }
    }
    // Behind the release gate, if there is one: from the detach below the threads
    // wait in it, running nothing of their own until ckpt outside opens it.
    for (p, g) in procs.iter().zip(s.gates.iter().flatten()) {
        let Some(g) = g else { continue };
        let mem = RemoteMem::open(p.pid)?;
        for (t, fd) in p.threads.iter().zip(&g.fds) {
            park_at_gate(&mem, t, *fd, g)?;
        }
    }
    // The restored TCP connections, still in repair mode: ours to take out of it.
    let mut conns = Vec::new();
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            if let crate::model::FdKind::TcpConn { conn, .. } = &f.kind {
                conns.push((sys::process::steal_fd(p.pid, f.fd)?, conn));
            }
        }
    }
    // The point of no return comes next, in three short steps, each with only fast
    // system calls: (1) the restored connections leave repair mode; (2) no thread is
    // killed with ckpt any more (PTRACE_O_EXITKILL cleared): from here a ckpt that dies
    // leaves the tree running (the kernel lets its tracees go where they stand, with
    // their final registers); (3) the dump's netfilter rules of the tree's connections
    // are replaced, in one nf_tables transaction, by a table of ours that the kernel
    // removes when ckpt exits (`sys::netlock::Handover`; listed and built before, the
    // answer read after). A ckpt killed before (1) leaves nothing and the dump's lock
    // for another try; between (2) and (3), the tree runs and the dump's rules wait for
    // `ckpt unlock`; after (3), the lock never outlives ckpt. Killed inside (1)-(2), a
    // few microseconds, the tree dies with ckpt and its connections are lost. (A kernel
    // without owned tables: the dump's rules stay until `unlock` after commit.)
    let tcp: Vec<_> = if crate::kinds::ns::owns(&plan.ckpt, "net") {
        Vec::new()
    } else {
        procs.iter().flat_map(|p| p.tcp_connections()).collect()
    };
    let prepared = sys::netlock::Handover::prepare(&tcp).ok().flatten();
    fault_point("detach")?;
    sys::deferred::die_point("before the point of no return");
    for (sock, c) in &conns {
        fd::tcp::finish_conn(sock, c);
    }
    sys::deferred::die_point("out of repair mode");
    let survive =
        libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK;
    let mut first_err = None;
    for sp in s.procs.iter().flatten() {
        for t in sp.threads.iter().map(|i| i.pid()).chain([sp.inj.pid()]) {
            if let Err(e) = ptrace::set_options(t, survive) {
                first_err.get_or_insert(e);
            }
        }
    }
    // Nothing below can fail in a way we could still undo; let every thread go.
    s.stub.committed = true;
    s.sysv.keep = true;
    s.cgroups.keep = true;
    sys::deferred::die_point("the tree outlives ckpt");
    let sent = prepared.and_then(|p| p.send().ok());
    sys::deferred::die_point("lock handed over");
    for sp in s.procs.iter().flatten() {
        for t in sp.threads.iter().map(|i| i.pid()).chain([sp.inj.pid()]) {
            if let Err(e) = ptrace::detach(t, 0) {
                first_err.get_or_insert(e);
            }
        }
    }
    drop(conns);
    sys::deferred::die_point("let go");
    let handover = sent.and_then(|h| h.confirm().ok());
    if let Some(e) = first_err {
        // A thread we could not detach is still stopped: kill the tree rather than
        // leave it half-running.
        s.stub.committed = false;
        drop(s.stub);
        return Err(e.into());
    }
    sys::deferred::die_point("committed");
    Ok((procs[0].pid, handover))
}
