//! epoll instances and the descriptors they watch.

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{EpollTarget, FdKind, Process};

// ---- checks (plan) ----

/// epoll instances watch descriptors of their own process.
pub(crate) fn check_targets(procs: &[Process], problems: &mut Vec<Problem>) {
    for q in procs {
        for f in &q.fds {
            if let FdKind::Epoll { targets, .. } = &f.kind {
                for t in targets {
                    if !q.fds.iter().any(|g| g.fd == t.fd) || targets.len() > 1 << 20 {
                        check::p(
                            problems,
                            "malformed",
                            format!(
                                "epoll descriptor {} of process {} watches a missing \
                                 descriptor {}",
                                f.fd, q.pid, t.fd
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// What `inspect` says of an epoll instance.
pub(crate) fn describe(targets: &[EpollTarget]) -> String {
    format!(
        "epoll watching {}",
        targets
            .iter()
            .map(|t| format!("{} ({:#x})", t.fd, t.events))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
