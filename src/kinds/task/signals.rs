//! Signals: dispositions, masks, pending signals (per thread and shared), sigaltstack.

use super::query::{slot_bytes, word};
use crate::arch::x86::nr;
use crate::error::DumpResult as Result;
use crate::model::{PendingSignal, SigAction};
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
pub(crate) fn sigaction_calls(sigs: &[u32], slot: &dyn Fn(usize) -> u64) -> Vec<Call> {
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

/// The dispositions [`sigaction_calls`] read, from the queries' results `b`.
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

pub(crate) fn pending_signals(tid: i32, shared: bool) -> Result<Vec<PendingSignal>> {
    Ok(ptrace::peek_siginfo(tid, shared)?
        .into_iter()
        .map(|si| PendingSignal {
            signo: u32::from_le_bytes(si[0..4].try_into().unwrap_or_default()),
            siginfo: si,
        })
        .collect())
}
