//! Signals: dispositions, masks, pending signals (per thread and shared), sigaltstack.

use super::query::{slot_bytes, word};
use crate::arch::Abi;
use crate::arch::native::{self as ax, nr};
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::model::SigAction;
use crate::model::{PendingSignal, Process};
use crate::remote::{BatchArgs, Ctx};
use crate::sys;
use crate::sys::inject::Call;
use crate::sys::ptrace;

// ---- collect (dump) ----

pub(crate) const NSIG: u32 = 64;

/// The signals whose disposition is read: all but SIGKILL and SIGSTOP.
pub(crate) fn queried_signals() -> Vec<u32> {
    (1..=NSIG)
        .filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32)
        .collect()
}

/// One `rt_sigaction` query per signal of `sigs`, the one of `sigs[i]` into `slot(i)`.
pub(crate) fn sigaction_queries(sigs: &[u32], slot: &dyn Fn(usize) -> u64) -> Vec<Call> {
    sigs.iter()
        .enumerate()
        .map(|(i, &sig)| {
            Call::new(
                format!("rt_sigaction({sig})"),
                nr::RT_SIGACTION,
                [u64::from(sig), 0, slot(i), 8, 0, 0],
            )
        })
        .collect()
}

/// The dispositions [`sigaction_queries`] read, from the queries' results `b`.
pub(crate) fn sigactions(sigs: &[u32], b: &[u8]) -> Vec<SigAction> {
    sigs.iter()
        .enumerate()
        .map(|(i, &signo)| {
            let w = slot_bytes(b, i);
            SigAction {
                signo,
                handler: word(w, 0),
                flags: word(w, 1),
                restorer: word(w, 2),
                mask: word(w, 3),
            }
        })
        .collect()
}

pub(crate) fn pending_signals(tid: i32, shared: bool) -> DumpResult<Vec<PendingSignal>> {
    Ok(ptrace::peek_siginfo(tid, shared)?
        .into_iter()
        .map(|si| PendingSignal {
            signo: u32::from_le_bytes(si[0..4].try_into().unwrap_or_default()),
            siginfo: si,
        })
        .collect())
}

// ---- checks (plan) ----

/// Dispositions only for signals that have one (not 0, SIGKILL, SIGSTOP, above 64).
pub(crate) fn check_actions(proc_: &Process, problems: &mut Vec<Problem>) {
    for s in &proc_.sigactions {
        if s.signo == 0 || s.signo > 64 || s.signo == 9 || s.signo == 19 {
            check::p(
                problems,
                "malformed",
                format!("invalid signal number {}", s.signo),
            );
        }
    }
}

/// Pending signals with a valid number and a whole siginfo.
pub(crate) fn check_pending(pending: &[PendingSignal], problems: &mut Vec<Problem>) {
    for s in pending {
        if s.siginfo.len() != 128 || s.signo == 0 || s.signo > 64 {
            check::p(problems, "malformed", "invalid pending signal".into());
        }
    }
}

// ---- restore (stage) ----

/// The calls that give the process its signal dispositions, added to a batch (`args`,
/// `calls`); those of an ia32 process are made at once, through the compat syscall.
pub(crate) fn sigaction_calls(
    cx: &mut Ctx<'_>,
    args: &mut BatchArgs,
    calls: &mut Vec<Call>,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let ia32 = proc_.abi() == Abi::Ia32;
    for s in &proc_.sigactions {
        // The stub starts with ckpt's own dispositions (mostly the defaults): only the
        // ones that differ need a call.
        let theirs = [s.handler, s.flags, s.restorer, s.mask];
        if s.handler <= 1 && sys::process::own_sigaction(s.signo) == Some(theirs) {
            continue;
        }
        let what = format!("rt_sigaction({})", s.signo);
        if ia32 {
            // Through the compat syscall: the kernel then marks the handler as ia32
            // (SA_IA32_ABI) and delivers 32-bit signal frames to it.
            // struct compat_sigaction: handler, flags, restorer (u32 each), mask (u64).
            let mut b = Vec::with_capacity(20);
            for w in [s.handler, s.flags, s.restorer] {
                b.extend_from_slice(&(w as u32).to_le_bytes());
            }
            b.extend_from_slice(&s.mask.to_le_bytes());
            let a = cx.put(0, &b)?;
            cx.call32(
                &what,
                ax::nr32::RT_SIGACTION,
                [u64::from(s.signo), a, 0, 8, 0, 0],
            )?;
        } else {
            let mut b = Vec::with_capacity(32);
            for w in [s.handler, s.flags, s.restorer, s.mask] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let a = args.add(cx, &b)?;
            calls.push(Call::new(
                what,
                nr::RT_SIGACTION,
                [u64::from(s.signo), a, 0, 8, 0, 0],
            ));
        }
    }
    Ok(())
}

/// Queue the process's pending signals again (per thread and shared).
pub(crate) fn queue_pending(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    // Pending signals stay pending: all signals are blocked in the stub until commit.
    // (Queued after the dispositions, as they were generated under them.) A batch at a
    // time for as many siginfos as its argument area holds (a process may have
    // thousands of real-time signals queued).
    // (The IDs the process's own PID namespace gives: the innermost for a process of
    // a namespace nested inside the tree's.)
    let pid = proc_.nspid.last().copied().unwrap_or(proc_.pid) as u64;
    const RT_SIGQUEUEINFO: u64 = 129;
    let queued = proc_
        .threads
        .iter()
        .flat_map(|t| {
            let tid = t.nstid.last().copied().unwrap_or(t.tid);
            t.pending
                .iter()
                .map(move |s| (Some(tid), s.signo, &s.siginfo))
        })
        .chain(
            proc_
                .shared_pending
                .iter()
                .map(|s| (None, s.signo, &s.siginfo)),
        )
        .collect::<Vec<_>>();
    for chunk in queued.chunks(1024) {
        let mut args = BatchArgs::new();
        let mut calls = Vec::with_capacity(chunk.len());
        for &(tid, signo, info) in chunk {
            let a = args.add(cx, info)?;
            calls.push(match tid {
                Some(tid) => Call::new(
                    "queue pending signal",
                    nr::RT_TGSIGQUEUEINFO,
                    [pid, tid as u64, u64::from(signo), a, 0, 0],
                ),
                None => Call::new(
                    "queue pending signal",
                    RT_SIGQUEUEINFO,
                    [pid, u64::from(signo), a, 0, 0, 0],
                ),
            });
        }
        cx.batch(&args, &calls)?;
    }
    Ok(())
}
