//! epoll instances and the descriptors they watch.

use super::{OpenFd, fdinfo_unparsed};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::kinds::fd::anon::keep_flags;
use crate::model::FdKind;
use crate::model::{EpollTarget, Process};
use crate::remote::Ctx;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An epoll instance (fdinfo text `info`; `kind` as its link names it), with the
/// descriptors it watches, each checked to be the file that was added.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> DumpResult<FdKind> {
    let pid = d.pid;
    let bad = || fdinfo_unparsed(pid, d.fd, kind);
    let mut targets = Vec::new();
    for (tfd, events, data, ino) in procfs::parse_epoll_targets(info).ok_or_else(bad)? {
        let same = procfs::file_id(std::path::Path::new(&format!("/proc/{pid}/fd/{tfd}")), b"")
            .map(|id| id.ino == ino)
            .unwrap_or(false);
        if !same {
            return Err(d.not_yet(
                "an epoll instance watching a descriptor that was closed or \
                 moved since it was added",
            ));
        }
        targets.push(EpollTarget {
            fd: tfd,
            events,
            data,
        });
    }
    Ok(FdKind::Epoll {
        flags: d.flags,
        targets,
    })
}

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

// ---- restore (stage) ----

/// A new epoll instance (its registrations come later: [`register_targets`]).
pub(crate) fn create_epoll(cx: &mut Ctx<'_>, flags: u32) -> RestoreResult<u64> {
    cx.call(
        "epoll_create1",
        nr::EPOLL_CREATE1,
        [keep_flags(flags, 0), 0, 0, 0, 0, 0],
    )
}

/// Register the watched descriptors of the process's epoll instances, once every
/// descriptor they watch exists.
pub(crate) fn register_targets(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    for f in &proc_.fds {
        if let FdKind::Epoll { targets, .. } = &f.kind {
            for t in targets {
                cx.epoll_add(f.fd as u64, t.fd as u64, t.events, t.data)?;
            }
        }
    }
    Ok(())
}
