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
use crate::sys;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An epoll instance (fdinfo text `info`; `kind` as its link names it), with the
/// descriptors it watches, each checked to be the file that was added.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> DumpResult<FdKind> {
    let pid = d.pid;
    let bad = || fdinfo_unparsed(pid, d.fd, kind);
    let mut targets: Vec<EpollTarget> = Vec::new();
    for (tfd, events, data, _ino) in procfs::parse_epoll_targets(info).ok_or_else(bad)? {
        // Items registered under one number (the file there closed, another opened
        // there and added): kcmp tells them apart by their rank among those.
        let toff = targets.iter().filter(|t| t.fd == tfd).count() as u32;
        let held_at = holder(d, tfd, toff)?;
        targets.push(EpollTarget {
            fd: tfd,
            events,
            data,
            held_at: if held_at == tfd { None } else { Some(held_at) },
        });
    }
    Ok(FdKind::Epoll {
        flags: d.flags,
        targets,
    })
}

/// The descriptor of the process that holds the file epoll instance `d` watches as
/// item (`tfd`, `toff`): `tfd` itself if it still does, else another one (the number was
/// closed or moved since). A file no descriptor of the process holds (held only by
/// another process, a mapping, a message in flight) is refused.
fn holder(d: &OpenFd, tfd: i32, toff: u32) -> DumpResult<i32> {
    let pid = d.pid;
    let is = |fd: i32| sys::process::is_epoll_target(pid, fd, d.fd, tfd, toff).unwrap_or(false);
    if is(tfd) {
        return Ok(tfd);
    }
    for fd in procfs::fds(pid)? {
        if fd != tfd && is(fd) {
            return Ok(fd);
        }
    }
    Err(d.not_yet(&format!(
        "an epoll instance watching a file added as descriptor {tfd}, which no descriptor \
         of the process holds any more (the file lives on outside its table: in another \
         process, a mapping or a message)"
    )))
}

// ---- checks (plan) ----

/// epoll instances watch descriptors of their own process.
pub(crate) fn check_targets(procs: &[Process], problems: &mut Vec<Problem>) {
    for q in procs {
        for f in &q.fds {
            if let FdKind::Epoll { targets, .. } = &f.kind {
                for t in targets {
                    let at = t.held_at.unwrap_or(t.fd);
                    let ok_number = (0..super::MAX_FD).contains(&t.fd);
                    if !q.fds.iter().any(|g| g.fd == at) || !ok_number || targets.len() > 1 << 20 {
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
/// descriptor they watch exists. A file watched under a number that no longer holds it
/// ([`EpollTarget::held_at`]) is put at that number for the registration (what is there
/// now set aside and put back, with its close-on-exec flag), so the item shows the
/// number it was added under.
pub(crate) fn register_targets(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let high = super::pipe_tmp_base(proc_);
    for f in &proc_.fds {
        if let FdKind::Epoll { targets, .. } = &f.kind {
            for t in targets {
                let Some(at) = t.held_at else {
                    cx.epoll_add(f.fd as u64, t.fd as u64, t.events, t.data)?;
                    continue;
                };
                let there = proc_.fds.iter().find(|g| g.fd == t.fd);
                let parked = match there {
                    Some(_) => Some(cx.dup_above(t.fd as u64, high)?),
                    None => None,
                };
                cx.dup3(at as u64, t.fd as u64, false)?;
                cx.epoll_add(f.fd as u64, t.fd as u64, t.events, t.data)?;
                match (parked, there) {
                    (Some(p), Some(g)) => {
                        cx.dup3(p, g.fd as u64, g.cloexec)?;
                        cx.close(p)?;
                    }
                    _ => cx.close(t.fd as u64)?,
                }
            }
        }
    }
    Ok(())
}
