//! Signals: dispositions, masks, pending signals (per thread and shared), sigaltstack.

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{PendingSignal, Process};

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
