//! epoll instances and the descriptors they watch.

use super::{OpenFd, fdinfo_unparsed};
use crate::error::DumpResult as Result;
use crate::model::{EpollTarget, FdKind};
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An epoll instance (fdinfo text `info`; `kind` as its link names it), with the
/// descriptors it watches, each checked to be the file that was added.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> Result<FdKind> {
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
