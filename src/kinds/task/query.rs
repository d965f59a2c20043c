//! Queries run inside the stopped task: what only the process or thread itself can tell
//! (signal dispositions, timers, rlimits, prctl state, sigaltstack...), asked by injected
//! system calls through a signal frame on each thread's stack (an ia32 one for an ia32
//! thread), or, where the task does not allow that, in a scratch area mapped for the
//! purpose. Each kind builds its calls and decodes their results; this module orders
//! them and owns the frames and the scratch area.

use super::threads::FrozenThread;
use super::{attrs, padding, signals, timers};
use crate::arch::{self, native::nr, sigframe};
use crate::error::{DumpError, DumpResult};
use crate::kinds::unsupported;
use crate::model::{ITimer, PosixTimer, Rlimit, SigAction, SigAltStack};
use crate::sys::inject::{Call, Injector, find_gadget, find_gadget32};
use crate::sys::mem::RemoteMem;
use crate::sys::proc as procfs;
use crate::sys::{self, ptrace};

// ---- collect (dump) ----

/// What only the task itself can tell, read by injected syscalls.
pub(crate) struct Injected {
    pub(crate) sigactions: Vec<SigAction>,
    pub(crate) pdeathsig: i32,
    pub(crate) dumpable: i32,
    pub(crate) child_subreaper: bool,
    pub(crate) brk: u64,
    pub(crate) itimers: Vec<ITimer>,
    pub(crate) posix_timers: Vec<PosixTimer>,
    pub(crate) xcomp_perm: u64,
    pub(crate) rlimits: Vec<Rlimit>,
    /// PR_GET_THP_DISABLE (see [`crate::model::ProcMisc::thp_disable`]).
    pub(crate) thp_disable: u32,
    /// Those of the children asked about (stopped by job control) whose stop the
    /// process has not collected yet.
    pub(crate) unreported_stops: Vec<i32>,
    /// System V semaphore undo adjustments (`kinds::ipc::probe_undo`).
    pub(crate) sem_undo: Vec<crate::model::SemUndo>,
}

/// What the dump asks each process about others: its children stopped by job control
/// (whether it collected their stops) and the System V semaphore sets the tree works on
/// (its undo adjustments on them, `kinds::ipc::undo_candidates`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Ask<'a> {
    pub(crate) stopped_children: &'a [i32],
    pub(crate) undo_sets: &'a [i32],
    /// Those sets are of another IPC namespace than ckpt's (one a process below the
    /// root made, the process's): read from a thread that joins it.
    pub(crate) undo_elsewhere: bool,
    /// A task without an undo list, to tell the processes that have one (only those
    /// are asked).
    pub(crate) undo_ref: Option<&'a crate::sys::ipc::NoUndoList>,
}

/// Per-thread state that only the thread itself can tell.
#[derive(Clone, Copy, Default)]
pub(crate) struct ThreadInjected {
    pub(crate) altstack: SigAltStack,
    pub(crate) clear_child_tid: u64,
    /// The compat (ia32) robust list, for an ia32 thread.
    pub(crate) robust32: Option<(u64, u64)>,
    /// PR_GET_SECUREBITS (part of each thread's credentials).
    pub(crate) securebits: u32,
}

/// The scratch area mapped in the task while it is queried: the batch executor's code
/// at its start, then the queries' results, then the executor's table.
const SCRATCH_LEN: u64 = 32 << 10;
const SCRATCH_OUT: u64 = 4096;
const SCRATCH_OUT_LEN: usize = 12 << 10;
const SCRATCH_TABLE: u64 = 16 << 10;
const SCRATCH_TABLE_CAP: usize = (16 << 10) / arch::native::BATCH_ENTRY_LEN as usize;

pub(crate) fn word(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|w| w.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default()
}

/// The 32 bytes of results slot `i` (results written to memory land 32 bytes per call).
pub(crate) fn slot_bytes(b: &[u8], i: usize) -> &[u8] {
    &b[32 * i..32 * i + 32]
}

/// The process's queries; results written to memory land at `out` (`out_len` bytes of
/// the task's memory, room for a slot per query but POSIX timers, which take turns), 32 bytes per call.
fn inject_queries(
    inj: &mut Injector,
    mem: &RemoteMem,
    (out, out_len): (u64, usize),
    ask: &Ask<'_>,
) -> DumpResult<Injected> {
    let sigs = signals::queried_signals();
    let slots = sigs.len() + 6 + attrs::RLIM_NLIMITS as usize;
    if slots > out_len / 32 {
        return Err(DumpError::Sys(sys::SysError::Other(format!(
            "{slots} query results do not fit in {out_len} bytes"
        ))));
    }
    mem.write(out, &vec![0u8; out_len])?;
    let slot = |i: usize| out + 32 * i as u64;
    let mut calls: Vec<Call> = signals::sigaction_queries(&sigs, &slot);
    let n = sigs.len();
    calls.extend(attrs::prctl_calls(n, &slot));
    calls.extend(timers::itimer_calls(n + 3, &slot));
    calls.extend(attrs::rlimit_calls(n + 6, &slot));
    let res = inj.batch(mem, &calls)?;
    let r = |i: usize| res.get(i).copied().unwrap_or(-1);
    let mut b = vec![0u8; 32 * (n + 6 + attrs::RLIM_NLIMITS as usize)];
    mem.read(out, &mut b)?;
    let at = |i: usize| slot_bytes(&b, i);
    let sigactions = signals::sigactions(&sigs, &b);
    let pdeathsig = word(at(n), 0) as u32 as i32;
    let dumpable = r(n + 1) as i32;
    let child_subreaper = word(at(n + 1), 0) as u32 != 0;
    let brk = r(n + 3) as u64;
    let xcomp_perm = if r(n + 4) == 0 { word(at(n + 2), 0) } else { 0 };
    let thp_disable = attrs::thp_disable(r(n + 5))?;
    let itimers = timers::itimers(&b, n + 3);
    let rlimits = attrs::rlimits(&b, n + 6);
    let posix_timers = timers::posix_timers(inj, mem, (out, out_len))?;
    let unreported_stops =
        super::tree::unreported_stops(inj, mem, (out, out_len), ask.stopped_children)?;
    // Without a reference that has no list, every process is asked.
    let has_list = match ask.undo_ref {
        Some(r) => r.has(inj.pid())?,
        None => true,
    };
    let sem_undo = crate::kinds::ipc::probe_undo(
        inj,
        mem,
        out,
        (ask.undo_sets, ask.undo_elsewhere),
        has_list,
    )?;
    Ok(Injected {
        unreported_stops,
        sem_undo,
        xcomp_perm,
        thp_disable,
        rlimits,
        sigactions,
        pdeathsig,
        dumpable,
        child_subreaper,
        brk,
        itimers,
        posix_timers,
    })
}

/// A thread's queries, results at `out` (96 bytes).
fn inject_thread_queries(
    inj: &mut Injector,
    mem: &RemoteMem,
    out: u64,
    abi: arch::Abi,
) -> DumpResult<ThreadInjected> {
    mem.write(out, &[0u8; 96])?;
    let res = inj.batch(
        mem,
        &[
            Call::new("sigaltstack", nr::SIGALTSTACK, [0, out, 0, 0, 0, 0]),
            Call::new(
                "prctl(PR_GET_TID_ADDRESS)",
                nr::PRCTL,
                [libc::PR_GET_TID_ADDRESS as u64, out + 32, 0, 0, 0, 0],
            ),
            // Part of each thread's credentials.
            Call::new(
                "prctl(PR_GET_SECUREBITS)",
                nr::PRCTL,
                [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
            ),
        ],
    )?;
    let securebits = res.get(2).copied().unwrap_or_default() as u32;
    let mut b = [0u8; 96];
    mem.read(out, &mut b)?;
    // stack_t { void *ss_sp; int ss_flags; size_t ss_size; }
    let altstack = SigAltStack {
        sp: word(&b, 0),
        flags: word(&b, 1) as u32 as i32,
        size: word(&b, 2),
    };
    let clear_child_tid = word(&b, 4);
    // An ia32 thread registered its robust list through the compat syscall, which the
    // kernel keeps apart from the native one: ask the same way (4-byte head and length).
    let robust32 = if abi == arch::Abi::Ia32 {
        inj.call32(
            "get_robust_list (ia32)",
            arch::native::nr32::GET_ROBUST_LIST,
            [0, out + 64, out + 68, 0, 0, 0],
        )?;
        mem.read(out + 64, &mut b[..8])?;
        Some((
            u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default())),
            u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default())),
        ))
    } else {
        None
    };
    Ok(ThreadInjected {
        altstack,
        clear_child_tid,
        robust32,
        securebits,
    })
}

/// The `syscall` instruction of the task's own vDSO through which the queries run, and
/// for a task with ia32 threads also its `int $0x80` (0 otherwise).
fn find_gadgets(pid: i32, mem: &RemoteMem, ia32: bool) -> DumpResult<(u64, u64)> {
    let maps = procfs::maps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.path == b"[vdso]")
        .ok_or_else(|| unsupported(pid, "it has no vDSO mapped (needed to run queries)"))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    mem.read(vdso.start, &mut code)?;
    let gadget = find_gadget(&code, vdso.start)
        .ok_or_else(|| unsupported(pid, "no syscall instruction found in its vDSO"))?;
    // ia32 tasks also need `int $0x80` (the 32-bit vDSO has one) and a scratch page
    // below 4 GiB.
    let gadget32 = if ia32 {
        find_gadget32(&code, vdso.start)
            .filter(|g| *g < 1 << 32)
            .ok_or_else(|| unsupported(pid, "no int $0x80 instruction found in its vDSO"))?
    } else {
        0
    };
    Ok((gadget, gadget32))
}

/// Map the scratch area (below 4 GiB for an ia32 task): executable if the queries are
/// to run in batches and a security policy allows it, else they run one call per stop.
/// Returns its address and whether batches run.
fn map_scratch(inj: &mut Injector, mut batch: bool, ia32: bool) -> DumpResult<(u64, bool)> {
    let low = if ia32 { libc::MAP_32BIT } else { 0 };
    let map = |inj: &mut Injector, prot: i32| {
        inj.raw(
            nr::MMAP,
            [
                0,
                SCRATCH_LEN,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | low) as u64,
                u64::MAX,
                0,
            ],
        )
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut scratch = -1;
    if batch {
        // A security policy may forbid executable anonymous memory: then no batches.
        scratch = map(inj, rw | libc::PROT_EXEC)?;
        batch = !(-4095..0).contains(&scratch);
    }
    if !batch {
        scratch = map(inj, rw)?;
    }
    if (-4095..0).contains(&scratch) {
        return Err(sys::SysError::Remote {
            what: "mmap scratch area".into(),
            errno: (-scratch) as i32,
        }
        .into());
    }
    Ok((scratch as u64, batch))
}

/// The queries of the process (through `inj`) and of each thread, in the scratch area.
fn run_queries(
    threads: &[FrozenThread],
    mem: &RemoteMem,
    inj: &mut Injector,
    scratch: u64,
    batch: bool,
    (gadget, gadget32): (u64, u64),
    ask: &Ask<'_>,
) -> DumpResult<(Injected, Vec<ThreadInjected>)> {
    let executor = |inj: &mut Injector| -> DumpResult<()> {
        if batch {
            inj.set_executor(scratch, scratch + SCRATCH_TABLE, SCRATCH_TABLE_CAP);
        }
        Ok(())
    };
    (if batch {
        mem.write(scratch, &arch::native::BATCH_CODE)
            .map_err(DumpError::from)
    } else {
        Ok(())
    })
    .and_then(|()| executor(inj))
    .and_then(|()| inject_queries(inj, mem, (scratch + SCRATCH_OUT, SCRATCH_OUT_LEN), ask))
    .and_then(|p| {
        let mut per = Vec::new();
        for t in threads {
            let mut ti = Injector::new(t.tid, gadget, t.orig_regs);
            ti.set_gadget32(gadget32);
            executor(&mut ti)?;
            per.push(inject_thread_queries(
                &mut ti,
                mem,
                scratch + SCRATCH_OUT,
                t.orig_regs.abi(),
            )?);
        }
        Ok((p, per))
    })
}

/// Room for the results of the queries, below each thread's signal frame: the
/// process's queries need 32 bytes per signal, prctl, itimer and rlimit query (fewer
/// than 128 slots), POSIX timers take as many turns as they need.
const FRAME_OUT_LEN: u64 = 4096;

/// The ELF note header of a Go build ID (`.note.go.buildid`): name size 4, then
/// (after the descriptor size) type 4 and the name "Go".
const GO_NOTE: [u8; 8] = [4, 0, 0, 0, b'G', b'o', 0, 0];

/// Whether the task runs Go code: a mapping of a file's start holds a Go build-ID
/// note. Go runs goroutines on small stacks (its signal handlers use an alternate
/// stack), where a signal frame below the stack pointer could reach another
/// goroutine's stack.
fn runs_go(maps: &[procfs::MapEntry], mem: &RemoteMem) -> bool {
    maps.iter()
        .filter(|m| m.read && m.offset == 0 && m.path.first() == Some(&b'/'))
        .any(|m| {
            let mut head = vec![0u8; (m.end - m.start).min(8 << 10) as usize];
            mem.read(m.start, &mut head).is_ok() && has_go_note(&head)
        })
}

fn has_go_note(head: &[u8]) -> bool {
    head.windows(16)
        .any(|w| w[12..16] == GO_NOTE[4..] && w[8..12] == GO_NOTE[..4] && w[..4] == GO_NOTE[..4])
}

/// The instructions of the task that the signal frames need, for each ABI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Returns {
    /// x86-64: a `syscall; ret` (the injected calls run there) and a `rt_sigreturn`
    /// (the frames' return address).
    native: Option<(u64, u64)>,
    /// ia32, all below 4 GiB: an `int $0x80` followed by a `ret` (and the words popped
    /// before it, see [`sigframe::IA32_SYSCALL_RET_INSNS`]), and an ia32 `rt_sigreturn`.
    ia32: Option<(u64, u64, u64)>,
}

/// Find the [`Returns`] of the task for the ABIs its threads use (`ia32`: whether one
/// is an ia32 thread, `native`: whether one is not).
fn find_returns(
    maps: &[procfs::MapEntry],
    mem: &RemoteMem,
    (native, ia32): (bool, bool),
) -> DumpResult<Returns> {
    let mut areas: Vec<_> = maps
        .iter()
        .filter(|m| m.exec && m.read && m.end - m.start <= 64 << 20)
        .filter(|m| m.path != b"[vsyscall]")
        .collect();
    // The vDSO first (it has a `syscall; ret`), then the smaller areas.
    areas.sort_by_key(|m| (m.path != b"[vdso]", m.end - m.start));
    let (mut gadget, mut sigreturn) = (None, None);
    let (mut gadget32, mut sigreturn32) = (None, None);
    for m in areas {
        let mut code = vec![0u8; (m.end - m.start) as usize];
        if mem.read(m.start, &mut code).is_err() {
            continue;
        }
        let find = |pat: &[u8]| {
            code.windows(pat.len())
                .position(|w| w == pat)
                .map(|i| m.start + i as u64)
        };
        gadget = gadget.or_else(|| find(&sigframe::SYSCALL_RET_INSN));
        sigreturn = sigreturn.or_else(|| sigframe::SIGRETURN_INSNS.iter().find_map(|p| find(p)));
        if m.end <= 1 << 32 {
            gadget32 = gadget32.or_else(|| {
                sigframe::IA32_SYSCALL_RET_INSNS
                    .iter()
                    .find_map(|(p, pops)| find(p).map(|g| (g, *pops)))
            });
            sigreturn32 =
                sigreturn32.or_else(|| sigframe::IA32_SIGRETURN_INSNS.iter().find_map(|p| find(p)));
        }
        // No more code read than the threads need.
        let done = (!native || gadget.is_some() && sigreturn.is_some())
            && (!ia32 || gadget32.is_some() && sigreturn32.is_some());
        if done {
            break;
        }
    }
    Ok(Returns {
        native: gadget.zip(sigreturn),
        ia32: gadget32.zip(sigreturn32).map(|((g, pops), s)| (g, pops, s)),
    })
}

/// The `syscall; ret` and `rt_sigreturn` instructions of an x86-64 task (a restored one,
/// whose maps are `maps`: see `restore::gate::gate_threads`); None if it has none or
/// runs Go (whose goroutine stacks [`frame_fits`] cannot tell from thread stacks).
pub(crate) fn native_returns(maps: &[procfs::MapEntry], mem: &RemoteMem) -> Option<(u64, u64)> {
    if runs_go(maps, mem) {
        return None;
    }
    find_returns(maps, mem, (true, false)).ok()?.native
}

/// Whether a frame at `lo` below stack pointer `sp` lies in a thread's own stack (see
/// [`on_thread_stack`]).
pub(crate) fn frame_fits(maps: &[procfs::MapEntry], lo: u64, sp: u64) -> bool {
    on_thread_stack(maps, lo, sp, false)
}

/// Whether `lo..sp` (a frame and its results under stack pointer `sp`) lies in a
/// thread's own stack: the main thread's `[stack]`, or a private anonymous read-write
/// area right above a PROT_NONE guard, as glibc and musl make thread stacks (the guard
/// stops a write that would not fit). Anything else (a sigaltstack in the heap, stacks
/// a runtime carves out of its own memory) may have other data right below, which a
/// frame must not overwrite. In a task running Go (`go`) only the main thread's
/// `[stack]`: Go reserves its heap with PROT_NONE mappings, so a goroutine stack in the
/// heap may lie right above one.
fn on_thread_stack(maps: &[procfs::MapEntry], lo: u64, sp: u64, go: bool) -> bool {
    let Some(m) = maps.iter().find(|m| m.start <= lo && sp <= m.end) else {
        return false;
    };
    if m.path == b"[stack]" {
        return true;
    }
    !go && guarded_stack(maps, m)
}

/// Whether `m` is a private anonymous read-write area right above a PROT_NONE guard (a
/// thread stack as glibc and musl make them).
fn guarded_stack(maps: &[procfs::MapEntry], m: &procfs::MapEntry) -> bool {
    let guarded = maps
        .iter()
        .any(|g| g.end == m.start && !g.read && !g.write && !g.exec);
    guarded && m.path.is_empty() && m.read && m.write && !m.shared
}

/// Where each thread's signal frame is (see [`framed_queries`]).
struct Frames {
    /// The instructions the frames and queries use.
    returns: Returns,
    /// Each thread's frame, in the order of the threads.
    at: Vec<u64>,
    /// Where each frame lies.
    place: Vec<Place>,
    /// The instructions ckpt wrote into the padding after the task's code, for a task
    /// that has none of its own ([`padding`]; x86-64 ones, ia32 ones, or both): removed
    /// again once every thread has its own registers back.
    patches: Vec<padding::Patch>,
}

/// Where a thread's signal frame and the results of its queries lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Below the red zone under its stack pointer, on its own stack (see
    /// [`on_thread_stack`]).
    Stack,
    /// At the end of its alternate signal stack `lo..hi`, which it is not on: where the
    /// kernel would write a frame for a signal handler with `SA_ONSTACK` at this moment.
    /// A Go thread's, which its runtime tells ([`go_altstack`]); checked against what
    /// `sigaltstack` answers ([`Place::altstack`]).
    AltStack { lo: u64, hi: u64 },
    /// In a slot `lo..hi` at the bottom of another thread's stack, just above its guard
    /// ([`host_slots`]): a thread without room on its own stack.
    Hosted { lo: u64, hi: u64 },
}

impl Place {
    /// The end under which the frame goes, for a thread whose stack pointer is `sp`.
    fn top(self, sp: u64) -> Option<u64> {
        match self {
            Place::Stack => sp.checked_sub(sigframe::RED_ZONE),
            Place::AltStack { hi, .. } | Place::Hosted { hi, .. } => Some(hi),
        }
    }

    /// Whether a frame at `at` and its results below it fit (for a thread whose stack
    /// pointer is `sp`).
    fn fits(self, maps: &[procfs::MapEntry], at: u64, sp: u64, go: bool) -> bool {
        let Some(lo) = at.checked_sub(FRAME_OUT_LEN) else {
            return false;
        };
        match self {
            Place::Stack => on_thread_stack(maps, lo, sp, go),
            Place::AltStack { lo: l, .. } | Place::Hosted { lo: l, .. } => l <= lo,
        }
    }

    /// The thread's alternate signal stack as it is in its own context (stack pointer
    /// `sp`), from what `sigaltstack` answered with the stack pointer at the frame: the
    /// kernel says SS_ONSTACK from where the stack pointer is. A frame on the alternate
    /// stack must be on the one the thread has, which it was not on.
    fn altstack(self, tid: i32, got: SigAltStack, sp: u64) -> DumpResult<SigAltStack> {
        const SS_ONSTACK: i32 = libc::SS_ONSTACK; // <signal.h>
        if let Place::AltStack { lo, hi } = self {
            let on = got.flags & SS_ONSTACK != 0;
            if got.sp != lo || got.size != hi - lo || !on {
                return Err(DumpError::Sys(sys::SysError::Other(format!(
                    "thread {tid}: its alternate signal stack is {:#x}+{:#x} (flags {:#x}), \
                     not {lo:#x}..{hi:#x} as its Go runtime says",
                    got.sp, got.size, got.flags
                ))));
            }
        }
        if self == Place::Stack || got.flags & libc::SS_DISABLE != 0 || got.size == 0 {
            return Ok(got);
        }
        // The kernel's on_sig_stack().
        let on = sp > got.sp && sp - got.sp <= got.size;
        let flags = (got.flags & !SS_ONSTACK) | if on { SS_ONSTACK } else { 0 };
        Ok(SigAltStack { flags, ..got })
    }
}

impl Frames {
    /// The registers with which `t` runs `rt_sigreturn` through its frame at `at` (in
    /// its own ABI), and those of its queries: the same but for the stack pointer,
    /// placed so that the `ret` after the call pops the frame's `pretcode`.
    fn regs(&self, t: &FrozenThread, at: u64) -> Option<(arch::Regs, arch::Regs)> {
        match t.orig_regs.abi() {
            arch::Abi::X86_64 => {
                let (_, sigreturn) = self.returns.native?;
                let parked = sigframe::parked(&t.orig_regs, at, sigreturn);
                Some((parked, arch::Regs { rsp: at, ..parked }))
            }
            arch::Abi::Ia32 => {
                let (_, pops, sigreturn) = self.returns.ia32?;
                let parked = sigframe::parked_ia32(&t.orig_regs, at, sigreturn);
                let rsp = at.checked_sub(4 * pops)?;
                Some((parked, arch::Regs { rsp, ..parked }))
            }
        }
    }

    /// An injector for `t`'s queries, in its own ABI (an ia32 thread makes them as
    /// ia32 calls, see [`Injector::ia32_queries`]).
    fn injector(&self, t: &FrozenThread, at: u64) -> DumpResult<Injector> {
        let (_, base) = self.regs(t, at).ok_or_else(|| {
            DumpError::Sys(sys::SysError::Other(format!(
                "thread {} has no signal frame",
                t.tid
            )))
        })?;
        Ok(
            match (t.orig_regs.abi(), self.returns.native, self.returns.ia32) {
                (arch::Abi::Ia32, _, Some((g32, _, _))) => {
                    let mut inj = Injector::new(t.tid, 0, base);
                    inj.set_gadget32(g32);
                    inj.ia32_queries();
                    inj
                }
                (_, Some((g, _)), _) => Injector::new(t.tid, g, base),
                _ => Injector::new(t.tid, 0, base),
            },
        )
    }
}

/// Write for each thread a signal frame that returns to its own context (an ia32 frame
/// for an ia32 thread), with room for the results of its queries below it: on its stack
/// below its red zone, else (x86-64 threads) at the end of its alternate signal stack
/// when its Go runtime tells where that is, else in a slot at the bottom of another
/// thread's stack ([`Place`]). None (and nothing written) when the task does not allow
/// it: a thread with a shadow stack, no instructions for its ABI's calls and
/// `rt_sigreturn` in the task, or a thread with no such place. The xsave area is cut to
/// the size of the thread's own signal frames ([`sigframe::sized_xstate`]: on an AMX
/// host, only a thread that used AMX has it all).
fn write_frames(pid: i32, threads: &[FrozenThread], mem: &RemoteMem) -> DumpResult<Option<Frames>> {
    for t in threads {
        if procfs::shadow_stack(pid, t.tid)? {
            return Ok(None);
        }
    }
    let maps = procfs::maps(pid)?;
    let go = runs_go(&maps, mem);
    let abis = |abi| threads.iter().any(|t| t.orig_regs.abi() == abi);
    let mut returns = find_returns(&maps, mem, (abis(arch::Abi::X86_64), abis(arch::Abi::Ia32)))?;
    // No `rt_sigreturn` or no `syscall; ret` for the x86-64 threads (no ia32 ones below
    // 4 GiB for the ia32 threads): ckpt's own, in the padding after the task's code
    // (written below, once every thread has its place).
    let mut patches = Vec::new();
    if abis(arch::Abi::X86_64) && returns.native.is_none() {
        let Some(p) = padding::find(pid, &maps, mem, false) else {
            return Ok(None);
        };
        returns.native = Some((p.syscall_ret(), p.sigreturn()));
        patches.push(p);
    }
    if abis(arch::Abi::Ia32) && returns.ia32.is_none() {
        let Some(p) = padding::find(pid, &maps, mem, true) else {
            return Ok(None);
        };
        // `int $0x80; ret`: no words popped before the `ret`.
        returns.ia32 = Some((p.syscall_ret(), 0, p.sigreturn()));
        patches.push(p);
    }
    let mut slots = host_slots(&maps, threads, go).into_iter();
    let mut frames = Vec::new();
    let mut place = Vec::new();
    for t in threads {
        // Cut to the size of the thread's own signal frames (AMX hosts).
        let Some(xstate) = sigframe::sized_xstate(&ptrace::get_xstate(t.tid, 1 << 16)?, || {
            arch::XsaveLayout::of_host(&arch::HostCaps::detect())
        }) else {
            return Ok(None);
        };
        // A thread interrupted in a call with a restart block goes back into that call
        // from its arguments: rt_sigreturn forgets the restart block.
        let ctx = arch::native::resume_regs(&t.orig_regs);
        let sp = t.orig_regs.rsp;
        let built = match (t.orig_regs.abi(), returns.native, returns.ia32) {
            (arch::Abi::X86_64, Some((_, sigreturn)), _) => {
                // A thread of C code in a Go task on its C library's thread stack:
                // its frame goes below its stack pointer, as in a C program.
                let c_stack = go && c_thread_stack(&maps, |a| mem.read_u64(a).ok(), &t.orig_regs);
                let build = |p: Place| {
                    let f = sigframe::build_below(
                        &ctx,
                        p.top(sp)?,
                        t.orig_sigmask,
                        &xstate,
                        sigreturn,
                    )?;
                    p.fits(&maps, f.at, sp, go && !c_stack).then_some((f, p))
                };
                let alt = if go {
                    go_altstack(&maps, |a| mem.read_u64(a).ok(), &t.orig_regs)
                        .map(|(lo, hi)| Place::AltStack { lo, hi })
                } else {
                    None
                };
                alt.and_then(build)
                    .or_else(|| build(Place::Stack))
                    .or_else(|| slots.next().and_then(build))
            }
            (arch::Abi::Ia32, _, Some((_, _, sigreturn))) => {
                let build = |p: Place| {
                    let f = sigframe::build_ia32_below(
                        &ctx,
                        p.top(sp)?,
                        t.orig_sigmask,
                        &xstate,
                        sigreturn,
                    )?;
                    p.fits(&maps, f.at, sp, go).then_some((f, p))
                };
                // A slot above 4 GiB cannot hold an ia32 frame (it is passed over).
                build(Place::Stack).or_else(|| slots.find_map(build))
            }
            _ => None,
        };
        match built {
            Some((f, p)) => {
                frames.push(f);
                place.push(p);
            }
            None => return Ok(None),
        }
    }
    // Nothing is written unless every thread has its place.
    let undo = |patches: &[padding::Patch]| {
        for p in patches {
            // Best effort: the gadgets are in padding no code reaches.
            let _ = p.undo(mem);
        }
    };
    for (i, p) in patches.iter().enumerate() {
        if p.apply(mem).is_err() {
            undo(&patches[..=i]);
            return Ok(None);
        }
        sys::deferred::die_point("gadgets written");
    }
    let mut at = Vec::new();
    for f in &frames {
        let zero = vec![0u8; FRAME_OUT_LEN as usize];
        if mem.write(f.at - FRAME_OUT_LEN, &zero).is_err() || mem.write(f.at, &f.bytes).is_err() {
            undo(&patches);
            return Ok(None);
        }
        at.push(f.at);
    }
    Ok(Some(Frames {
        returns,
        at,
        place,
        patches,
    }))
}

/// The size of a slot for another thread's frame ([`Place::Hosted`]): a frame with the
/// largest xsave area (AMX tiles in use, about 11 KiB) and the results below it.
const HOST_SLOT: u64 = 32 << 10;
/// How far above the slots the stack pointer of the thread whose stack holds them must
/// be (its own frame and results, and a margin).
const HOST_MARGIN: u64 = 256 << 10;

/// Slots for the frames of threads that have no room on their own stack, at the bottom
/// of other threads' stacks: areas just above the PROT_NONE guard of a thread stack (as
/// glibc and musl make them, [`guarded_stack`]) whose thread's stack pointer is well
/// above them. A thread reaches the bottom of its stack only just before it would
/// overflow it, so while a hosted thread may still return through its frame there (from
/// the moment the frame is written until the thread's registers are its own again,
/// including after a ckpt killed meanwhile, when both threads run on at once) the
/// owner of that stack does not write there. Not in a task running Go (see
/// [`on_thread_stack`]), nor on the main thread's `[stack]`, which grows on demand
/// (its bottom is not near an overflow).
fn host_slots(maps: &[procfs::MapEntry], threads: &[FrozenThread], go: bool) -> Vec<Place> {
    if go {
        return Vec::new();
    }
    let mut slots = Vec::new();
    let mut seen = Vec::new();
    for t in threads {
        let sp = t.orig_regs.rsp;
        let Some(m) = maps.iter().find(|m| m.start < sp && sp <= m.end) else {
            continue;
        };
        if seen.contains(&m.start) || !guarded_stack(maps, m) {
            continue;
        }
        seen.push(m.start);
        let room = sp.saturating_sub(HOST_MARGIN).saturating_sub(m.start);
        for i in 0..(room / HOST_SLOT).min(threads.len() as u64) {
            let lo = m.start + i * HOST_SLOT;
            slots.push(Place::Hosted {
                lo,
                hi: lo + HOST_SLOT,
            });
        }
    }
    slots
}

/// Whether a thread of a Go task runs on a thread stack its C library made (a thread
/// that C code of the program started and that never ran Go code, whose runtime data
/// tell nothing: [`go_altstack`]): its stack pointer in a private anonymous read-write
/// area right above a PROT_NONE guard ([`guarded_stack`]), and its thread pointer
/// (`fs_base`) in that same area above it, at a thread control block that starts with
/// its own address (glibc's `tcbhead_t.tcb`, musl's `pthread.self`): glibc and musl
/// put that block at the top of the area they map for a thread's stack. Go's heap,
/// where goroutine stacks lie, holds no such block: the thread pointer of a thread
/// running Go code is in another area (its `m.tls`, or its C library's block at the
/// top of its own stack, while it runs on a goroutine stack in Go's heap), and a
/// block found there while the thread runs on its C stack (its `g0` stack) only
/// says what is true: below its stack pointer is its own free stack.
fn c_thread_stack(
    maps: &[procfs::MapEntry],
    read: impl Fn(u64) -> Option<u64>,
    regs: &arch::Regs,
) -> bool {
    let (sp, tp) = (regs.rsp, regs.fs_base);
    let Some(m) = maps.iter().find(|m| m.start < sp && sp <= m.end) else {
        return false;
    };
    guarded_stack(maps, m) && sp < tp && tp < m.end && read(tp) == Some(tp)
}

/// A Go thread's alternate signal stack `lo..hi`, as its runtime tells it, when the
/// thread is not on it; `read` reads a word of the task's memory. The runtime's `g` of
/// the thread (x86-64: at `%fs:-8`, or in r14 in Go code) starts with the bounds of the
/// stack the thread is on, which must hold its stack pointer; its `m` (the word at
/// offset 48 of `g`) starts with its `g0`, whose `m` is the same; the first `g` after
/// `m.morebuf` (offsets 8..64) whose `m` is that `m` is `m.gsignal`, the `g` of its
/// signal handlers, whose stack bounds are the thread's alternate signal stack (Go sets
/// one per thread, or takes the one a C thread had); it must be a system stack
/// (`stackguard1` inside it: ~0 on goroutine stacks), not hold the stack pointer, and lie
/// in one private read-write area. The layout of these fields has been the same since
/// Go 1.4; a runtime that does not match finds nothing.
fn go_altstack(
    maps: &[procfs::MapEntry],
    read: impl Fn(u64) -> Option<u64>,
    regs: &arch::Regs,
) -> Option<(u64, u64)> {
    let sp = regs.rsp;
    let in_area = |lo: u64, hi: u64| {
        maps.iter()
            .any(|m| m.start <= lo && hi <= m.end && m.read && m.write && !m.shared)
    };
    // A g: its stack bounds, stackguard1 and m.
    let g_of = |g: u64| -> Option<(u64, u64, u64, u64)> {
        if g == 0 || g % 8 != 0 {
            return None;
        }
        let (lo, hi) = (read(g)?, read(g.checked_add(8)?)?);
        (lo < hi && hi - lo <= 1 << 30).then_some(())?;
        Some((lo, hi, read(g + 24)?, read(g + 48)?))
    };
    let from_g = |g: u64| -> Option<(u64, u64)> {
        let (lo, hi, _, m) = g_of(g)?;
        if !(lo < sp && sp <= hi) || m == 0 {
            return None;
        }
        let g0 = read(m)?;
        if g_of(g0)?.3 != m {
            return None;
        }
        let gsignal = (64..=256)
            .step_by(8)
            .filter_map(|off| read(m + off))
            .find(|&p| p != g0 && g_of(p).is_some_and(|x| x.3 == m))?;
        let (lo, hi, guard1, _) = g_of(gsignal)?;
        let system = lo < guard1 && guard1 < hi;
        let free = !(lo <= sp && sp <= hi);
        (system && free && in_area(lo, hi)).then_some((lo, hi))
    };
    let tls = regs.fs_base.checked_sub(8).and_then(&read);
    tls.and_then(from_g).or_else(|| from_g(regs.r14))
}

/// The queries, run so that a thread let go at any moment (ckpt killed, even by
/// SIGKILL: the kernel then detaches it where it stands) returns to its own context.
///
/// Every thread gets registers that run `rt_sigreturn` through its frame before its
/// signals are blocked. Each query runs at the task's `syscall; ret` with the stack
/// pointer at the frame, whose first word (pretcode) is the task's `rt_sigreturn`: a
/// thread let go before, inside or after the call returns through the frame, which
/// restores its registers, xsave state and signal mask. Nothing is mapped in the task,
/// no breakpoint is used (an `int3` would kill a task no longer traced), and every
/// query only reads. At the end each thread gets its mask back, then its registers.
fn framed_queries(
    threads: &mut [FrozenThread],
    mem: &RemoteMem,
    fr: &Frames,
    ask: &Ask<'_>,
) -> DumpResult<(Injected, Vec<ThreadInjected>)> {
    framed(threads, mem, fr, |threads| {
        // The process's queries in its leader (`pid`, the first thread).
        let mut inj = fr.injector(&threads[0], fr.at[0])?;
        let out = (fr.at[0] - FRAME_OUT_LEN, FRAME_OUT_LEN as usize);
        let p = inject_queries(&mut inj, mem, out, ask)?;
        let mut per = Vec::new();
        for ((t, at), place) in threads.iter().zip(&fr.at).zip(&fr.place) {
            let mut ti = fr.injector(t, *at)?;
            let abi = t.orig_regs.abi();
            let mut q = inject_thread_queries(&mut ti, mem, at - FRAME_OUT_LEN, abi)?;
            q.altstack = place.altstack(t.tid, q.altstack, t.orig_regs.rsp)?;
            per.push(q);
        }
        Ok((p, per))
    })
}

/// Calls made by the leader of process `pid` (`threads[0]`) through `run`, with every
/// thread parked on its signal frame as for the queries ([`framed_queries`]), for the
/// few calls a dump makes that are not queries (`dump --track`'s userfaultfd, made and
/// closed again at once). Refused when the task cannot take signal frames.
pub(crate) fn leader_calls<T>(
    pid: i32,
    threads: &mut [FrozenThread],
    mem: &RemoteMem,
    why: &str,
    run: impl FnOnce(&mut Injector) -> DumpResult<T>,
) -> DumpResult<T> {
    let Some(fr) = write_frames(pid, threads, mem)? else {
        return Err(unsupported(
            pid,
            format!("{why}: the process cannot take a signal frame for the calls"),
        ));
    };
    framed(threads, mem, &fr, |threads| {
        let mut inj = fr.injector(&threads[0], fr.at[0])?;
        run(&mut inj)
    })
}

/// Park every thread on its frame, run `run`, and put every thread back.
fn framed<T>(
    threads: &mut [FrozenThread],
    mem: &RemoteMem,
    fr: &Frames,
    run: impl FnOnce(&[FrozenThread]) -> DumpResult<T>,
) -> DumpResult<T> {
    for (t, at) in threads.iter_mut().zip(&fr.at) {
        let (parked, _) = fr.regs(t, *at).ok_or_else(|| {
            DumpError::Sys(sys::SysError::Other(format!(
                "thread {} has no signal frame",
                t.tid
            )))
        })?;
        ptrace::set_regs(t.tid, &parked)?;
        t.injected = true;
        sys::deferred::die_point("parked");
        ptrace::set_sigmask(t.tid, !0)?;
        sys::deferred::die_point("blocked");
    }
    let res = run(threads);
    for t in threads.iter() {
        ptrace::set_sigmask(t.tid, t.orig_sigmask)?;
        sys::deferred::die_point("mask back");
        ptrace::set_regs(t.tid, &arch::native::release_regs(&t.orig_regs))?;
        sys::deferred::die_point("registers back");
    }
    // No thread runs the gadgets any more: the padding gets its own bytes back.
    for p in &fr.patches {
        p.undo(mem)?;
        sys::deferred::die_point("gadgets removed");
    }
    // Better: back to the interrupt stop, where the kernel decides alone how the thread
    // runs on (see FrozenThread::park): a call interrupted by a signal that arrived
    // during the dump then fails with EINTR after its handler, as it would have.
    for t in threads.iter_mut() {
        t.park()?;
    }
    res
}

/// Run the injected queries: through signal frames when the task allows it
/// ([`framed_queries`]), else in a scratch area mapped and unmapped again.
/// `threads` are those of process `pid`, its leader first; `undo_sets` the semaphore
/// sets whose undo adjustments are asked (`kinds::ipc::undo_candidates`).
pub(crate) fn injected_state(
    pid: i32,
    threads: &mut [FrozenThread],
    mem: &RemoteMem,
    ask: &Ask<'_>,
) -> DumpResult<(Injected, Vec<ThreadInjected>)> {
    if let Some(fr) = write_frames(pid, threads, mem)? {
        return framed_queries(threads, mem, &fr, ask);
    }
    let ia32 = threads.iter().any(|t| t.orig_regs.abi() == arch::Abi::Ia32);
    scratch_queries(pid, threads, mem, ia32, ask)
}

/// The queries in a scratch area mapped in the task (an ia32 task, or one that cannot
/// take signal frames). A ckpt killed meanwhile (SIGKILL) can leave the task with the
/// area, a blocked signal mask, or registers inside an injected call.
fn scratch_queries(
    pid: i32,
    threads: &mut [FrozenThread],
    mem: &RemoteMem,
    ia32: bool,
    ask: &Ask<'_>,
) -> DumpResult<(Injected, Vec<ThreadInjected>)> {
    let gadgets = find_gadgets(pid, mem, ia32)?;
    // The queries run in batches of one stop each when the breakpoint that ends a batch
    // can stop the task without a trace: SIGTRAP must be neither ignored (the kernel
    // would reset its disposition) nor blocked (it would reset a handler) nor pending
    // (that one would be delivered instead), and no timer of the process may send one
    // meanwhile. Otherwise one call per stop.
    let tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    let batch = procfs::signal_quiet(pid, &tids, libc::SIGTRAP)?
        && !procfs::posix_timers(pid)?
            .iter()
            .any(|t| t.signo == libc::SIGTRAP);
    // Keep signals pending (not delivered) while we run syscalls in the task.
    let mask = if batch {
        !(1u64 << (libc::SIGTRAP - 1))
    } else {
        !0
    };
    for t in threads.iter_mut() {
        ptrace::set_sigmask(t.tid, mask)?;
        t.injected = true;
    }
    let mut inj = Injector::new(pid, gadgets.0, threads[0].orig_regs);
    let (scratch, batch) = map_scratch(&mut inj, batch, ia32)?;
    let res = run_queries(threads, mem, &mut inj, scratch, batch, gadgets, ask);
    let unmapped = inj.call(
        "munmap scratch area",
        nr::MUNMAP,
        [scratch, SCRATCH_LEN, 0, 0, 0, 0],
    );
    // From here on the task must be able to run on as before even if ckpt dies (the
    // kernel then detaches it): give every thread its signal mask and registers now.
    for t in threads.iter() {
        ptrace::set_sigmask(t.tid, t.orig_sigmask)?;
        ptrace::set_regs(t.tid, &arch::native::release_regs(&t.orig_regs))?;
    }
    // Better: back to the interrupt stop, where the kernel decides alone how the thread
    // runs on (see FrozenThread::park).
    for t in threads.iter_mut() {
        t.park()?;
    }
    let out = res?;
    unmapped?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::sys::proc::MapEntry;

    fn area(start: u64, end: u64, perms: &str, path: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            read: perms.contains('r'),
            write: perms.contains('w'),
            exec: perms.contains('x'),
            shared: perms.contains('s'),
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            inode: 0,
            path: path.as_bytes().to_vec(),
            vmflags: Vec::new(),
        }
    }

    #[test]
    fn frames_only_on_thread_stacks() {
        let maps = [
            area(0x1000, 0x9000, "rw", "[heap]"),
            area(0x10000, 0x11000, "", ""),
            area(0x11000, 0x20000, "rw", ""),
            area(0x30000, 0x40000, "rw", ""),
            area(0x50000, 0x60000, "rw", "[stack]"),
        ];
        let ok = |lo, sp| super::on_thread_stack(&maps, lo, sp, false);
        assert!(ok(0x58000, 0x5a000), "main stack");
        assert!(ok(0x12000, 0x14000), "thread stack above its guard");
        assert!(!ok(0x10800, 0x12000), "reaching into the guard");
        assert!(
            !ok(0x32000, 0x34000),
            "no guard below: not known to be a stack"
        );
        assert!(!ok(0x2000, 0x4000), "a sigaltstack in the heap");
    }

    /// A Go thread as its runtime lays it out: its `g` (at %fs:-8) on a goroutine stack
    /// holding its stack pointer, its `m` with `g0`, `morebuf.g` (the same goroutine)
    /// and `gsignal` (at offset 80, as in Go 1.19), and the signal stack.
    fn go_thread() -> (
        Vec<MapEntry>,
        std::collections::HashMap<u64, u64>,
        crate::arch::Regs,
    ) {
        let (g, g0, gsignal, m) = (
            0xc000_0100u64,
            0xc000_0400u64,
            0xc000_0800u64,
            0xc000_1000u64,
        );
        let mut w = std::collections::HashMap::new();
        let put_g =
            |w: &mut std::collections::HashMap<u64, u64>, at: u64, lo: u64, hi: u64, g1: u64| {
                w.insert(at, lo);
                w.insert(at + 8, hi);
                w.insert(at + 24, g1);
                w.insert(at + 48, m);
            };
        put_g(&mut w, g, 0xc010_0000, 0xc010_2000, u64::MAX);
        put_g(&mut w, g0, 0xc020_0000, 0xc020_4000, 0xc020_0000 + 928);
        put_g(&mut w, gsignal, 0xc030_0000, 0xc030_8000, 0xc030_0000 + 928);
        w.insert(m, g0);
        w.insert(m + 24, g);
        w.insert(m + 80, gsignal);
        w.insert(0x7f00_0000_0ff8, g);
        let regs = crate::arch::Regs {
            rsp: 0xc010_1f00,
            fs_base: 0x7f00_0000_1000,
            ..Default::default()
        };
        let maps = vec![
            area(0xc000_0000, 0xc400_0000, "rw", ""),
            area(0x7f00_0000_0000, 0x7f00_0000_2000, "rw", ""),
        ];
        (maps, w, regs)
    }

    #[test]
    fn go_altstack_from_the_runtime() {
        let (maps, w, regs) = go_thread();
        let rd = |w: &std::collections::HashMap<u64, u64>| {
            let w = w.clone();
            move |a: u64| w.get(&a).copied()
        };
        let found = |w: &std::collections::HashMap<u64, u64>, r: &crate::arch::Regs| {
            super::go_altstack(&maps, rd(w), r)
        };
        assert_eq!(found(&w, &regs), Some((0xc030_0000, 0xc030_8000)));
        // On the signal stack (in a handler): not free.
        let on = crate::arch::Regs {
            rsp: 0xc030_7000,
            ..regs
        };
        assert_eq!(found(&w, &on), None);
        // The g in r14 when the TLS word is not one.
        let mut w2 = w.clone();
        w2.insert(0x7f00_0000_0ff8, 0);
        assert_eq!(found(&w2, &regs), None);
        let r14 = crate::arch::Regs {
            r14: 0xc000_0100,
            ..regs
        };
        assert_eq!(found(&w2, &r14), Some((0xc030_0000, 0xc030_8000)));
        // The stack pointer not on the g's stack: not that thread's g.
        let away = crate::arch::Regs {
            rsp: 0xc050_0000,
            ..regs
        };
        assert_eq!(found(&w, &away), None);
        // The first g of m after morebuf a goroutine (stackguard1 ~0): nothing, never a
        // later one.
        let mut w3 = w.clone();
        w3.insert(0xc000_0800 + 24, u64::MAX);
        assert_eq!(found(&w3, &regs), None);
        // g0 not of that m.
        let mut w4 = w.clone();
        w4.insert(0xc000_0400 + 48, 0xdead_0000);
        assert_eq!(found(&w4, &regs), None);
        // The signal stack outside any private read-write area.
        assert_eq!(super::go_altstack(&maps[1..], rd(&w), &regs), None);
        // A C thread: its TLS word is no g.
        assert_eq!(found(&std::collections::HashMap::new(), &regs), None);
    }

    #[test]
    fn c_threads_of_a_go_task() {
        let maps = [
            area(0x10_0000, 0x10_1000, "", ""),
            area(0x10_1000, 0x90_1000, "rw", ""),
            area(0xc000_0000, 0xc400_0000, "rw", ""),
        ];
        let tcb = 0x90_0700u64;
        let regs = |rsp, fs_base| crate::arch::Regs {
            rsp,
            fs_base,
            ..Default::default()
        };
        let self_ptr = |a: u64| (a == tcb).then_some(tcb);
        let c = |r: &crate::arch::Regs| super::c_thread_stack(&maps, self_ptr, r);
        assert!(
            c(&regs(0x8f_0000, tcb)),
            "a pthread's stack with its TCB on top"
        );
        // On a goroutine stack in Go's heap (the TCB elsewhere).
        assert!(!c(&regs(0xc010_0000, tcb)));
        // Go's own thread pointer (m.tls): no self pointer there.
        assert!(!c(&regs(0x8f_0000, 0x90_0800)));
        // The thread pointer below the stack pointer: not the block at the top.
        assert!(!c(&regs(0x90_0800, tcb)));
        // No guard below the area.
        let unguarded = &maps[1..];
        assert!(!super::c_thread_stack(
            unguarded,
            self_ptr,
            &regs(0x8f_0000, tcb)
        ));
    }

    fn thread(tid: i32, rsp: u64) -> super::FrozenThread {
        super::FrozenThread {
            tid,
            orig_regs: crate::arch::Regs {
                rsp,
                ..Default::default()
            },
            orig_sigmask: 0,
            injected: false,
            group_stop: None,
        }
    }

    #[test]
    fn hosted_slots_at_the_bottom_of_guarded_thread_stacks() {
        use super::{HOST_SLOT, Place};
        let maps = [
            area(0x10_0000, 0x10_1000, "", ""),
            area(0x10_1000, 0x90_1000, "rw", ""),
            area(0xa0_0000, 0xa0_1000, "", ""),
            area(0xa0_1000, 0xa4_1000, "rw", ""),
            area(0x100_0000, 0x101_0000, "rw", ""),
            area(0x7ff0_0000, 0x7ff2_0000, "rw", "[stack]"),
        ];
        // The main thread (no host), a thread on an 8 MiB guarded stack, one on a
        // 256 KiB one (no room for slots below the margin), one on a coroutine stack.
        let threads = [
            thread(1, 0x7ff1_0000),
            thread(2, 0x90_0000),
            thread(3, 0xa4_0000),
            thread(4, 0x100_8000),
        ];
        let slots = super::host_slots(&maps, &threads, false);
        assert_eq!(slots.len(), 4, "{slots:?}");
        assert_eq!(
            slots[0],
            Place::Hosted {
                lo: 0x10_1000,
                hi: 0x10_1000 + HOST_SLOT
            }
        );
        assert!(slots.iter().all(
            |p| matches!(p, Place::Hosted { hi, .. } if *hi <= 0x90_0000 - super::HOST_MARGIN)
        ));
        // Not in a task running Go.
        assert!(super::host_slots(&maps, &threads, true).is_empty());
    }

    #[test]
    fn altstack_as_in_the_threads_own_context() {
        use super::Place;
        use crate::model::SigAltStack;
        let alt = Place::AltStack {
            lo: 0xc030_0000,
            hi: 0xc030_8000,
        };
        let got = SigAltStack {
            sp: 0xc030_0000,
            size: 0x8000,
            flags: libc::SS_ONSTACK,
        };
        // On it only through the frame: off it in its own context.
        let own = alt.altstack(7, got, 0xc010_1f00).expect("same stack");
        assert_eq!(own.flags, 0);
        // Another alternate stack than the runtime said: an error.
        let other = SigAltStack {
            sp: 0xd000_0000,
            ..got
        };
        assert!(alt.altstack(7, other, 0xc010_1f00).is_err());
        // A hosted thread whose own stack pointer is on its alternate stack.
        let hosted = Place::Hosted {
            lo: 0x10_1000,
            hi: 0x10_9000,
        };
        let off = SigAltStack { flags: 0, ..got };
        assert_eq!(
            hosted.altstack(7, off, 0xc030_4000).expect("ok").flags,
            libc::SS_ONSTACK
        );
        let disabled = SigAltStack {
            sp: 0,
            size: 0,
            flags: libc::SS_DISABLE,
        };
        assert_eq!(
            hosted.altstack(7, disabled, 0xc030_4000).expect("ok"),
            disabled
        );
        assert_eq!(Place::Stack.altstack(7, got, 1).expect("ok"), got);
    }

    #[test]
    fn go_note() {
        let mut b = vec![0u8; 64];
        // namesz 4, descsz 83, type 4, "Go\0\0" (a Go build ID note)
        b[20..36].copy_from_slice(&[4, 0, 0, 0, 83, 0, 0, 0, 4, 0, 0, 0, b'G', b'o', 0, 0]);
        assert!(super::has_go_note(&b));
        // the GNU build ID note is not one
        b[20..36].copy_from_slice(&[4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, b'G', b'N', b'U', 0]);
        assert!(!super::has_go_note(&b));
    }
}
