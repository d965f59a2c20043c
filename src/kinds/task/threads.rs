//! Threads: registers (through arch/), rseq, robust lists, scheduling, thread creation.

use crate::arch::Abi;
use crate::arch::x86::{self as ax, nr};
use crate::error::{RestoreError, RestoreResult as Result};
use crate::model::Thread;
use crate::remote::{BatchArgs, Ctx, helper_injector};
use crate::sys;
use crate::sys::inject::{Call, Injector};
use crate::sys::ptrace::{self, Stop};

// ---- restore (stage) ----

/// State that belongs to one thread, set by syscalls injected into that thread.
fn thread_attrs(cx: &mut Ctx<'_>, t: &Thread) -> Result<()> {
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
) -> Result<()> {
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
pub(crate) fn thread_sched(t: &Thread) -> Result<()> {
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

/// Create the image's other threads (with their TIDs) in the stub, each traced, and set
/// their per-thread state.
pub(crate) fn create_threads(cx: &mut Ctx<'_>, tids: &mut Vec<i32>) -> Result<Vec<Injector>> {
    let proc_ = cx.proc_;
    let mut out = Vec::new();
    for t in proc_.threads.iter().skip(1) {
        // struct clone_args (88 bytes) followed by the one-element set_tid array.
        let tid_addr = cx.scratch() + 88;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let mut args = Vec::with_capacity(96);
        for w in [flags, 0, 0, 0, 0, 0, 0, 0, tid_addr, 1, 0] {
            args.extend_from_slice(&w.to_le_bytes());
        }
        args.extend_from_slice(&(t.tid as u64).to_le_bytes());
        let a = cx.put(0, &args)?;
        let what = format!("create thread {}", t.tid);
        let got = cx.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0])?;
        tids.push(got as i32);
        if got != t.tid as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: got thread ID {got} instead"
            )));
        }
        // PTRACE_O_TRACECLONE: the new thread is traced and stops before it runs.
        match ptrace::wait(t.tid)? {
            Stop::Signal(_) | Stop::Event(_) => {}
            other => {
                return Err(RestoreError::Stage(format!(
                    "{what}: it did not stop as expected ({other:?})"
                )));
            }
        }
        let base = ptrace::get_regs(t.tid)?;
        let mut tinj = helper_injector(t.tid, cx.stub, base, cx.inj.trapping());
        std::mem::swap(&mut cx.inj, &mut tinj);
        let r = thread_attrs(cx, t);
        std::mem::swap(&mut cx.inj, &mut tinj);
        r?;
        out.push(tinj);
    }
    Ok(out)
}

pub(crate) fn set_thread_state(tid: i32, t: &Thread, xsave: &[u8]) -> Result<()> {
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
