//! The stubs: the root's (spawned, seized or a sibling) and the guard that kills the
//! half-built tree unless it commits; the helper area each stub gets.

use super::*;

/// Owns the half-built process tree: dropping it before commit kills and reaps every
/// process and thread it created.
pub struct Stub {
    /// (process ID, IDs of its other threads), in creation order; the first is the root,
    /// ckpt's own child.
    pub procs: Vec<(i32, Vec<i32>)>,
    pub(super) committed: bool,
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
pub(super) fn stub_candidates(vmas: &[(u64, u64)], limit: u64) -> Vec<u64> {
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

/// Whether the tree starts from the ia32 stub executable ([`spawn_root`]): every thread
/// of every process is ia32, and the root is a new child of ckpt.
pub(super) fn starts_ia32(procs: &[Process], root_stub: &RootStub) -> bool {
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
pub(super) fn spawn_root(root: &Process, procs: &[Process]) -> Result<i32> {
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

/// Create (or seize) the root's stub and wait until it stops, traced; the guard that
/// kills the tree unless it commits starts with it.
pub(super) fn start_root(procs: &[Process], root_stub: RootStub, ia32: bool) -> Result<Stub> {
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
pub(super) fn helper_area(
    pid: i32,
    procs: &[Process],
    bootstrap: Option<u64>,
) -> Result<(Ctx<'_>, u64)> {
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
pub(super) fn clean_stub(cx: &mut Ctx<'_>, stub_addr: u64, new_tty: bool) -> Result<()> {
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
