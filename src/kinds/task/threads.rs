//! Threads: registers (through arch/), rseq, robust lists, scheduling, thread creation.

use super::query::ThreadInjected;
use crate::arch::{self, ThreadArchState, X86Regs};
use crate::error::DumpResult as Result;
use crate::model::{PendingSignal, Rseq, Thread};
use crate::sys::mem::RemoteMem;
use crate::sys::{self, ptrace};

// ---- collect (dump) ----

/// One stopped thread of the target.
pub(crate) struct FrozenThread {
    pub(crate) tid: i32,
    pub(crate) orig_regs: X86Regs,
    pub(crate) orig_sigmask: u64,
    /// True once the thread sits in a syscall stop of ours rather than the interrupt
    /// stop: then a pending syscall restart must be applied by us before it runs on.
    pub(crate) injected: bool,
}

/// If the thread was stopped inside an rseq critical section, move it to the section's
/// abort handler, as the kernel does when it preempts such a thread.
fn rseq_fixup(mem: &RemoteMem, rseq: &Option<Rseq>, regs: &mut X86Regs) -> Result<()> {
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

/// What is read of a thread from outside (before any injection).
pub(crate) struct ThreadOutside {
    xsave: Vec<u8>,
    debugregs: [u64; 6],
    tls: Vec<[u32; 4]>,
    rseq: Option<Rseq>,
    robust_list: (u64, u64),
    sched: (i32, i32, i32),
}

pub(crate) fn thread_outside(_pid: i32, tid: i32, _regs: &X86Regs) -> Result<ThreadOutside> {
    let xsave = ptrace::get_xstate(tid, 1 << 16)?;
    let mut debugregs = [0u64; 6];
    for (slot, i) in debugregs.iter_mut().zip(arch::x86::DEBUGREG_INDEXES) {
        *slot = ptrace::peek_user(tid, arch::x86::DEBUGREG_OFFSET + i * 8)?;
    }
    let mut tls = Vec::new();
    for i in arch::x86::TLS_ENTRIES {
        let d = ptrace::get_thread_area(tid, i)?;
        if !arch::x86::tls_entry_is_empty(&d) {
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
    })
}

/// The image of thread `t`: what was read of it from outside (`o`) and by itself (`ti`),
/// with its registers moved out of an rseq critical section it was stopped in.
pub(crate) fn thread_image(
    mem: &RemoteMem,
    t: &FrozenThread,
    o: ThreadOutside,
    ti: ThreadInjected,
    pending: Vec<PendingSignal>,
) -> Result<Thread> {
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
    })
}
