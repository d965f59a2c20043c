//! Threads: registers (through arch/), rseq, robust lists, scheduling, thread creation.

use super::query::ThreadInjected;
use crate::arch::Abi;
use crate::arch::ArchHeader;
use crate::arch::native::{self as ax, nr};
use crate::arch::{self, Regs, ThreadArchState};
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::task::signals;
use crate::model::Thread;
use crate::model::{PendingSignal, Rseq};
use crate::model::{Process, VmaKind};
use crate::remote::{BatchArgs, Ctx, helper_injector};
use crate::sys;
use crate::sys::inject::{Call, Injector};
use crate::sys::mem::RemoteMem;
use crate::sys::proc as procfs;
use crate::sys::ptrace::{self, Stop};
use xxhash_rust::xxh3::xxh3_64;

// ---- collect (dump) ----

/// One stopped thread of the target.
pub(crate) struct FrozenThread {
    pub(crate) tid: i32,
    pub(crate) orig_regs: Regs,
    pub(crate) orig_sigmask: u64,
    /// True once the thread sits in a syscall stop of ours rather than the interrupt
    /// stop: then a pending syscall restart must be applied by us before it runs on.
    pub(crate) injected: bool,
    /// The thread was in a group-stop (job control) when it was seized: the signal that
    /// stopped its group (what its first trap reported instead of SIGTRAP).
    pub(crate) group_stop: Option<i32>,
}

/// If the thread was stopped inside an rseq critical section, move it to the section's
/// abort handler, as the kernel does when it preempts such a thread.
fn rseq_fixup(mem: &RemoteMem, rseq: &Option<Rseq>, regs: &mut Regs) -> DumpResult<()> {
    let Some(r) = rseq else { return Ok(()) };
    // struct rseq { u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; ... }
    let cs = mem.read_u64(r.addr + 8)?;
    if cs == 0 {
        return Ok(());
    }
    // struct rseq_cs { u32 version; u32 flags; u64 start_ip; u64 post_commit_offset; u64 abort_ip; }
    let mut b = [0u8; 32];
    if mem.read(cs, &mut b).is_err() {
        return Ok(());
    }
    let start = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
    let abort = u64::from_le_bytes(b[24..32].try_into().unwrap_or_default());
    if regs.rip >= start && regs.rip - start < len {
        regs.rip = abort;
        regs.orig_rax = u64::MAX;
    }
    Ok(())
}

impl FrozenThread {
    /// Bring a thread that ran injected calls back to an interrupt stop with its own
    /// registers and signal mask, where it stood when it was frozen: it then runs on
    /// through the kernel's own signal and restart logic (an interrupted call restarts,
    /// or fails with EINTR if a signal that arrived meanwhile runs a handler first),
    /// exactly as a thread that had no calls injected, also if ckpt dies. The thread
    /// stops again before running any instruction: the interrupt trap comes before any
    /// signal is dequeued. On failure the thread keeps `injected`, and `release_regs`
    /// is applied when it is let go.
    pub(crate) fn park(&mut self) -> DumpResult<()> {
        let tid = self.tid;
        ptrace::set_sigmask(tid, self.orig_sigmask)?;
        // The interrupt first: even if ckpt dies right after the registers are set, the
        // pending trap makes the kernel pass through its restart logic on the way out.
        ptrace::interrupt(tid)?;
        ptrace::set_regs(tid, &self.orig_regs)?;
        ptrace::cont(tid, 0)?;
        match ptrace::wait(tid)? {
            Stop::Event(_) => {}
            Stop::Exited(_) | Stop::Killed(_) => {
                return Err(crate::error::DumpError::Exited(tid));
            }
            other => {
                return Err(sys::SysError::Other(format!(
                    "thread {tid} did not come back to an interrupt stop after the \
                     injected calls (got {other:?})"
                ))
                .into());
            }
        }
        self.injected = false;
        Ok(())
    }
}

/// What is read of a thread from outside (before any injection).
pub(crate) struct ThreadOutside {
    xsave: Vec<u8>,
    debugregs: [u64; 6],
    tls: Vec<[u32; 4]>,
    rseq: Option<Rseq>,
    robust_list: (u64, u64),
    sched: (i32, i32, i32),
    comm: Vec<u8>,
}

pub(crate) fn thread_outside(pid: i32, tid: i32, _regs: &Regs) -> DumpResult<ThreadOutside> {
    let xsave = ptrace::get_xstate(tid, 1 << 16)?;
    let mut debugregs = [0u64; 6];
    for (slot, i) in debugregs.iter_mut().zip(arch::native::DEBUGREG_INDEXES) {
        *slot = ptrace::peek_user(tid, arch::native::DEBUGREG_OFFSET + i * 8)?;
    }
    let mut tls = Vec::new();
    for i in arch::native::TLS_ENTRIES {
        let d = ptrace::get_thread_area(tid, i)?;
        if !arch::native::tls_entry_is_empty(&d) {
            tls.push(d);
        }
    }
    let (rseq_addr, rseq_len, rseq_sig, rseq_flags) = ptrace::get_rseq(tid)?;
    let rseq = (rseq_addr != 0).then_some(Rseq {
        addr: rseq_addr,
        len: rseq_len,
        flags: rseq_flags,
        signature: rseq_sig,
    });
    Ok(ThreadOutside {
        xsave,
        debugregs,
        tls,
        rseq,
        robust_list: sys::process::robust_list(tid)?,
        sched: sys::process::sched_get(tid)?,
        comm: procfs::thread_comm(pid, tid)?,
    })
}

/// The image of thread `t`: what was read of it from outside (`o`) and by itself (`ti`),
/// with its registers moved out of an rseq critical section it was stopped in, and its
/// credentials if they are not the process's (`creds`).
pub(crate) fn thread_image(
    mem: &RemoteMem,
    t: &FrozenThread,
    o: ThreadOutside,
    ti: ThreadInjected,
    pending: Vec<PendingSignal>,
    creds: Option<crate::model::Creds>,
) -> DumpResult<Thread> {
    let mut image_regs = t.orig_regs;
    rseq_fixup(mem, &o.rseq, &mut image_regs)?;
    Ok(Thread {
        tid: t.tid,
        arch: ThreadArchState {
            regs: image_regs,
            xsave: o.xsave,
            debugregs: o.debugregs,
            tls: o.tls,
        },
        sigmask: t.orig_sigmask,
        sigaltstack: ti.altstack,
        rseq: o.rseq,
        robust_list: ti.robust32.unwrap_or(o.robust_list).0,
        robust_list_len: ti.robust32.unwrap_or(o.robust_list).1,
        clear_child_tid: ti.clear_child_tid,
        pending,
        sched_policy: o.sched.0,
        sched_priority: o.sched.1,
        nice: o.sched.2,
        comm: o.comm,
        creds,
        seccomp_filters: Vec::new(),
        nstid: Vec::new(),
    })
}

// ---- checks (plan) ----

const MAX_THREADS: usize = 1 << 16;

/// Not too many threads.
pub(crate) fn check_count(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.threads.len() > MAX_THREADS {
        check::p(problems, "malformed", "too many threads".into());
    }
}

/// Each thread's xsave area is of sane size and its pending signals valid.
pub(crate) fn check_states(proc_: &Process, problems: &mut Vec<Problem>) {
    for t in &proc_.threads {
        if t.arch.xsave.len() > 1 << 16 || t.arch.xsave.len() < 576 {
            check::p(problems, "malformed", "invalid xsave area size".into());
        }
        signals::check_pending(&t.pending, problems);
        if t.comm.len() > 64 || t.comm.contains(&0) {
            check::p(
                problems,
                "malformed",
                format!("thread {}: invalid thread name", t.tid),
            );
        }
        if let Some(why) = ax::setregs_refusal(&t.arch.regs) {
            check::p(
                problems,
                "malformed",
                format!("thread {}: {why}; the kernel would refuse it", t.tid),
            );
        }
        if let Some(d) = t.arch.tls.iter().find(|d| !ax::tls_entry_settable(d)) {
            check::p(
                problems,
                "malformed",
                format!(
                    "thread {}: TLS entry {} is not one the kernel would set",
                    t.tid, d[0]
                ),
            );
        }
        check_sched(t, problems);
        check_thread_attrs(t, proc_, problems);
    }
}

/// `struct robust_list_head`'s size, the only length set_robust_list accepts (64-bit,
/// ia32: `linux/futex.h`).
const ROBUST_HEAD_LEN: [u64; 2] = [24, 12];
/// The size and alignment rseq() asks of an area at least (`ORIG_RSEQ_SIZE`,
/// `linux/rseq.h`).
const RSEQ_MIN_LEN: u32 = 32;

/// What stage sets from outside the process's own state and the kernel would refuse:
/// - sigaltstack: flags other than 0 or SS_DISABLE (with SS_ONSTACK, which restore
///   drops, and SS_AUTODISARM), a stack smaller than MINSIGSTKSZ (ENOMEM), an ia32
///   thread's stack beyond 32 bits;
/// - set_robust_list: a length other than the list head's (EINVAL);
/// - rseq: an area shorter than 32 bytes or not 32-byte aligned (EINVAL), or not inside
///   a writable mapping of the process (the kernel writes it at registration: EFAULT).
pub(crate) fn check_thread_attrs(t: &Thread, proc_: &Process, problems: &mut Vec<Problem>) {
    use linux_raw_sys::general::{MINSIGSTKSZ, SS_AUTODISARM};
    let ia32 = t.arch.abi() == Abi::Ia32;
    let bad = |problems: &mut Vec<Problem>, why: String| {
        check::p(
            problems,
            "malformed",
            format!("thread {}: {why}; the kernel would refuse it", t.tid),
        )
    };
    let ss = t.sigaltstack;
    let mode = ss.flags & !libc::SS_ONSTACK & !(SS_AUTODISARM as i32);
    if mode != 0 && mode != libc::SS_DISABLE {
        bad(problems, format!("sigaltstack flags {:#x}", ss.flags));
    } else if mode == 0 {
        if ss.size < u64::from(MINSIGSTKSZ) {
            bad(
                problems,
                format!(
                    "its alternate signal stack is {} bytes, less than MINSIGSTKSZ ({MINSIGSTKSZ})",
                    ss.size
                ),
            );
        } else if ia32 && (ss.sp > u64::from(u32::MAX) || ss.size > u64::from(u32::MAX)) {
            bad(
                problems,
                format!(
                    "an ia32 thread's alternate signal stack at {:#x} ({} bytes) is beyond 32 bits",
                    ss.sp, ss.size
                ),
            );
        }
    }
    let head = ROBUST_HEAD_LEN[usize::from(ia32)];
    if t.robust_list != 0 && t.robust_list_len != head {
        bad(
            problems,
            format!(
                "robust futex list length {} (set_robust_list takes {head})",
                t.robust_list_len
            ),
        );
    }
    if let Some(r) = t.rseq {
        let end = r.addr.checked_add(u64::from(r.len));
        if r.len < RSEQ_MIN_LEN || r.addr % u64::from(RSEQ_MIN_LEN) != 0 {
            bad(
                problems,
                format!(
                    "rseq area at {:#x} of {} bytes (at least {RSEQ_MIN_LEN}, aligned to {RSEQ_MIN_LEN})",
                    r.addr, r.len
                ),
            );
        } else if !end.is_some_and(|e| {
            proc_
                .vmas
                .iter()
                .any(|v| v.start <= r.addr && e <= v.end && v.prot & libc::PROT_WRITE as u32 != 0)
        }) {
            bad(
                problems,
                format!(
                    "rseq area at {:#x} of {} bytes is not inside a writable mapping of process {}",
                    r.addr, r.len, proc_.pid
                ),
            );
        }
    }
}

/// sched_setscheduler's SCHED_RESET_ON_FORK flag, which sched_getscheduler reports
/// with the policy.
const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;

/// The thread's scheduling policy, priority and nice value are ones restore can set:
/// what sched_setscheduler accepts (SCHED_OTHER, BATCH and IDLE with priority 0, FIFO and
/// RR with 1-99; SCHED_DEADLINE needs parameters the image does not have) and a nice
/// value setpriority would not clamp.
pub(crate) fn check_sched(t: &Thread, problems: &mut Vec<Problem>) {
    let policy = t.sched_policy & !SCHED_RESET_ON_FORK;
    let prio = t.sched_priority;
    let ok = match policy {
        libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE => prio == 0,
        libc::SCHED_FIFO | libc::SCHED_RR => (1..=99).contains(&prio),
        _ => false,
    };
    if policy == 6 {
        check::p(
            problems,
            "sched-unsupported",
            format!(
                "thread {}: SCHED_DEADLINE scheduling cannot be restored (its runtime, \
                 deadline and period are not in the image)",
                t.tid
            ),
        );
    } else if !ok || !(-20..=19).contains(&t.nice) {
        check::p(
            problems,
            "malformed",
            format!(
                "thread {}: invalid scheduling policy {}, priority {prio} or nice value {}",
                t.tid, t.sched_policy, t.nice
            ),
        );
    }
}

/// The host's vDSO: (hash of its text, text size, size of the vvar pages before it).
pub(crate) fn host_vdso() -> Option<(u64, u64, u64)> {
    let me = std::process::id() as i32;
    let maps = procfs::maps(me).ok()?;
    let vdso = maps.iter().find(|m| m.path == b"[vdso]")?;
    let vvar: u64 = maps
        .iter()
        .filter(|m| m.path == b"[vvar]" || m.path == b"[vvar_vclock]")
        .map(|m| m.end - m.start)
        .sum();
    let code = sys::process::read_own(vdso.start, (vdso.end - vdso.start) as usize).ok()?;
    Some((xxh3_64(&code), vdso.end - vdso.start, vvar))
}

/// This kernel's 32-bit vDSO: (hash of its text, text size), mapped once in a throwaway
/// child (`sys::probe::vdso32`) and remembered.
pub(crate) fn host_vdso32() -> std::result::Result<(u64, u64), String> {
    static V: std::sync::OnceLock<std::result::Result<(u64, u64), String>> =
        std::sync::OnceLock::new();
    V.get_or_init(|| sys::probe::vdso32().map_err(|e| e.to_string()))
        .clone()
}

/// The process's vDSO must be this kernel's. `vdso32`: compare a 32-bit one (false when
/// this kernel cannot map one, which is reported as a missing kernel facility).
pub(crate) fn check_arch(
    hdr: &ArchHeader,
    proc_: &Process,
    vdso32: bool,
    problems: &mut Vec<Problem>,
) {
    let has_vdso = proc_.vmas.iter().any(|v| v.kind == VmaKind::Vdso);
    // An ia32 process's 32-bit vDSO: ckpt, a 64-bit program, has none of its own; a
    // throwaway child maps this kernel's (`host_vdso32`). Stage compares it again once
    // mapped in the process.
    if has_vdso && proc_.abi() == Abi::Ia32 && vdso32 && proc_.vdso_size != 0 {
        match host_vdso32() {
            Err(e) => check::p(
                problems,
                "vdso",
                format!(
                    "cannot read this kernel's 32-bit vDSO to compare it with the image's: {e}"
                ),
            ),
            Ok((hash, size)) => {
                if hash != proc_.vdso_hash || size != proc_.vdso_size {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's 32-bit vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, proc_.vdso_size
                        ),
                    );
                }
            }
        }
    }
    if has_vdso && proc_.abi() == Abi::X86_64 {
        // Images from before per-process vDSO identity carry it in the header only.
        let (want_hash, want_size) = if proc_.vdso_size != 0 {
            (proc_.vdso_hash, proc_.vdso_size)
        } else {
            (hdr.vdso_hash, hdr.vdso_size)
        };
        let want_vvar: u64 = proc_
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::Vvar)
            .map(|v| v.len())
            .sum();
        match host_vdso() {
            None => check::p(
                problems,
                "vdso",
                "this host has no vDSO, but the image's task used one".into(),
            ),
            Some((hash, size, vvar)) => {
                if hash != want_hash || size != want_size {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, want_size
                        ),
                    );
                } else if vvar != want_vvar {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO data area is {vvar} bytes, the image's {want_vvar}"
                        ),
                    );
                }
            }
        }
    }
}

// ---- restore (stage) ----

/// State that belongs to one thread, set by syscalls injected into that thread.
fn thread_attrs(cx: &mut Ctx<'_>, t: &Thread) -> RestoreResult<()> {
    let mut args = BatchArgs::new();
    let mut calls = Vec::new();
    thread_attr_calls(cx, t, &mut args, &mut calls)?;
    cx.batch(&args, &calls)?;
    thread_sched(t)
}

/// The calls of [`thread_attrs`] that go into a batch (the ia32 ones are made at once).
pub(crate) fn thread_attr_calls(
    cx: &mut Ctx<'_>,
    t: &Thread,
    args: &mut BatchArgs,
    calls: &mut Vec<Call>,
) -> RestoreResult<()> {
    let ss = t.sigaltstack;
    let flags = ss.flags & !libc::SS_ONSTACK;
    let ia32 = t.arch.abi() == Abi::Ia32;
    if ia32 {
        // compat stack_t: sp (u32), flags (i32), size (u32).
        let mut b = Vec::with_capacity(12);
        b.extend_from_slice(&(ss.sp as u32).to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&(ss.size as u32).to_le_bytes());
        let a = cx.put(0, &b)?;
        cx.call32(
            "sigaltstack (ia32)",
            ax::nr32::SIGALTSTACK,
            [a, 0, 0, 0, 0, 0],
        )?;
    } else {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&ss.sp.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&ss.size.to_le_bytes());
        let a = args.add(cx, &b)?;
        calls.push(Call::new(
            "sigaltstack",
            nr::SIGALTSTACK,
            [a, 0, 0, 0, 0, 0],
        ));
    }
    calls.push(Call::new(
        "set_tid_address",
        nr::SET_TID_ADDRESS,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    ));
    if t.robust_list != 0 {
        if ia32 {
            // The kernel keeps the compat list apart and walks it as 32-bit at exit.
            cx.call32(
                "set_robust_list (ia32)",
                ax::nr32::SET_ROBUST_LIST,
                [t.robust_list, t.robust_list_len, 0, 0, 0, 0],
            )?;
        } else {
            calls.push(Call::new(
                "set_robust_list",
                nr::SET_ROBUST_LIST,
                [t.robust_list, t.robust_list_len, 0, 0, 0, 0],
            ));
        }
    }
    // The thread's own name (set where it runs: PR_SET_NAME names the calling thread).
    if !t.comm.is_empty() {
        let mut comm = t.comm.clone();
        comm.truncate(15);
        let a = args.add_cstr(cx, &comm)?;
        calls.push(Call::new(
            "prctl(PR_SET_NAME) of the thread",
            nr::PRCTL,
            [libc::PR_SET_NAME as u64, a, 0, 0, 0, 0],
        ));
    }
    if let Some(r) = t.rseq {
        calls.push(Call::new(
            "rseq registration",
            nr::RSEQ,
            [r.addr, u64::from(r.len), 0, u64::from(r.signature), 0, 0],
        ));
    }
    Ok(())
}

/// A thread's scheduling policy, priority and nice value (set from outside).
pub(crate) fn thread_sched(t: &Thread) -> RestoreResult<()> {
    sys::process::sched_set(t.tid, t.sched_policy, t.sched_priority, t.nice).or_else(|e| {
        // Without CAP_SYS_NICE a lower nice value cannot be set back; anything else
        // is an error.
        if t.sched_policy == 0 && e.errno() == Some(libc::EPERM) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

/// How many times a thread is made again when another task took its ID
/// ([`create_threads`] with `by_last_pid`).
const LAST_PID_TRIES: u32 = 8;

/// A thread just made in the stub (traced, stopped before it ran anything) that got
/// another ID than the image's: it exits (`exit`, the thread alone), and is reaped.
fn discard_thread(cx: &mut Ctx<'_>, tid: i32, what: &str) -> RestoreResult<()> {
    let first = ptrace::wait(tid)?;
    if matches!(first, Stop::Exited(_) | Stop::Killed(_)) {
        return Ok(());
    }
    let base = ptrace::get_regs(tid)?;
    let mut inj = helper_injector(tid, cx.stub, base, false);
    match inj.final_call(nr::EXIT, [0; 6])? {
        Stop::Exited(_) | Stop::Killed(_) => Ok(()),
        other => Err(RestoreError::Stage(format!(
            "{what}: the thread made with another ID ({tid}) did not exit ({other:?})"
        ))),
    }
}

/// Create the image's other threads (with their TIDs) in the stub, each traced, and set
/// their per-thread state. `by_last_pid`: the stub is in a user namespace that does not
/// own ckpt's PID namespace, where it cannot choose IDs (`clone3(set_tid)` needs
/// CAP_CHECKPOINT_RESTORE in the user namespace owning the PID namespace): ckpt, which
/// has it there, sets the namespace's last ID (/proc/sys/kernel/ns_last_pid) to the
/// one before each thread's, and the thread is made without `set_tid`; another task
/// made on the host in between takes that ID: the thread made with another one exits
/// before it ever runs (`discard_thread`) and the thread is made again, up to
/// [`LAST_PID_TRIES`] times, after which the restore fails, naming the ID it got. The
/// last ID is then put back where it was if it was further on: moved back, the host's
/// next processes would take IDs just freed (a tree another dump killed, whose restore
/// then finds them taken: seen in CI, two restores running side by side).
pub(crate) fn create_threads(
    cx: &mut Ctx<'_>,
    tids: &mut Vec<i32>,
    by_last_pid: bool,
) -> RestoreResult<Vec<Injector>> {
    let proc_ = cx.proc_;
    let mut out = Vec::new();
    for t in proc_.threads.iter().skip(1) {
        // struct clone_args (88 bytes) followed by the one-element set_tid array.
        let tid_addr = cx.scratch() + 88;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64
            | crate::kinds::ipc::thread_flags(proc_);
        // In a PID namespace nested inside the tree's: one ID per level, innermost
        // first (`kinds::task::pidns`).
        let ids: Vec<i32> = std::iter::once(t.tid)
            .chain(t.nstid.iter().copied())
            .collect();
        let set_tid = match by_last_pid {
            true => Vec::new(),
            false => super::pidns::set_tid_array(&ids),
        };
        let mut args = Vec::with_capacity(88 + 8 * set_tid.len());
        let n = set_tid.len() as u64;
        let tid_addr = if n == 0 { 0 } else { tid_addr };
        for w in [flags, 0, 0, 0, 0, 0, 0, 0, tid_addr, n, 0] {
            args.extend_from_slice(&w.to_le_bytes());
        }
        for x in &set_tid {
            args.extend_from_slice(&x.to_le_bytes());
        }
        let a = cx.put(0, &args)?;
        let what = format!("create thread {}", t.tid);
        // The thread of the dumped process that had this TID may still be being
        // released (seen in CI right after a dump that killed it): as for processes.
        let got = if by_last_pid {
            // (The ID free first: the dumped thread may still be being released.)
            let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while crate::sys::proc::stat(t.tid).is_ok() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let was = crate::sys::process::ns_last_pid()?;
            let mut tries = 1;
            let got = loop {
                crate::sys::process::set_ns_last_pid(t.tid - 1)?;
                crate::error::take_next_id_once();
                let got = cx.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0])?;
                if got == t.tid as u64 || tries == LAST_PID_TRIES {
                    break got;
                }
                discard_thread(cx, got as i32, &what)?;
                tries += 1;
            };
            if was > t.tid && crate::sys::process::ns_last_pid()? < was {
                crate::sys::process::set_ns_last_pid(was)?;
            }
            got
        } else {
            super::tree::once_released(t.tid, || cx.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0]))?
        };
        tids.push(t.tid);
        if got != ids.last().copied().unwrap_or(t.tid) as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: got thread ID {got} instead"
            )));
        }
        // PTRACE_O_TRACECLONE: the new thread is traced and stops before it runs. In a
        // process stopped by job control it also joins the group-stop: traced with
        // PTRACE_SEIZE (a tree in its own PID namespace) that is the one event stop;
        // otherwise it makes a second stop (the group-stop, and the SIGSTOP of its
        // attach, in either order), taken here too (the SIGSTOP suppressed), so that
        // injected calls find it idle.
        let stopped = |stop| match stop {
            Stop::Signal(_) | Stop::Event(_) => Ok(()),
            other => Err(RestoreError::Stage(format!(
                "{what}: it did not stop as expected ({other:?})"
            ))),
        };
        let first = ptrace::wait(t.tid)?;
        let twice = proc_.stopped.is_some() && matches!(first, Stop::Signal(_));
        stopped(first)?;
        if twice {
            ptrace::cont(t.tid, 0)?;
            stopped(ptrace::wait(t.tid)?)?;
        }
        let base = ptrace::get_regs(t.tid)?;
        let trapping = cx.live_task(&what)?.inj.trapping();
        let mut tinj = helper_injector(t.tid, cx.stub, base, trapping);
        std::mem::swap(&mut cx.live_task(&what)?.inj, &mut tinj);
        let r = thread_attrs(cx, t);
        std::mem::swap(&mut cx.live_task(&what)?.inj, &mut tinj);
        r?;
        out.push(tinj);
    }
    Ok(out)
}

pub(crate) fn set_thread_state(tid: i32, t: &Thread, xsave: &[u8]) -> RestoreResult<()> {
    for d in &t.arch.tls {
        ptrace::set_thread_area(tid, d)?;
    }
    ptrace::set_xstate(tid, xsave)?;
    // Debug registers: a new thread has none, and each address written makes the kernel
    // register a (disabled) hardware breakpoint, about a millisecond each: write only
    // the slots in use. DR7 (enable bits) last, after the addresses it enables.
    for (i, v) in ax::DEBUGREG_INDEXES.iter().zip(t.arch.debugregs) {
        if *i != 7 && v != 0 {
            ptrace::poke_user(tid, ax::DEBUGREG_OFFSET + i * 8, v)?;
        }
    }
    if t.arch.debugregs[5] != 0 {
        ptrace::poke_user(tid, ax::DEBUGREG_OFFSET + 7 * 8, t.arch.debugregs[5])?;
    }
    ptrace::set_regs(tid, &ax::resume_regs(&t.arch.regs))?;
    Ok(())
}
