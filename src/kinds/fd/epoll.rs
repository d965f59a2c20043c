//! epoll instances and the descriptors they watch.

use super::{OpenFd, fdinfo_unparsed};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::kinds::fd::anon::keep_flags;
use crate::kinds::unsupported;
use crate::model::FdKind;
use crate::model::{EpollTarget, FdRef, Process};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An epoll instance (fdinfo text `info`; `kind` as its link names it), with the
/// descriptors it watches, each checked to be the file that was added.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> DumpResult<FdKind> {
    collect_with(d, kind, info, |tfd, toff, _| {
        let at = holder(d, tfd, toff)?;
        Ok((if at == tfd { None } else { Some(at) }, None))
    })
}

/// Where the file of an item is held: [`EpollTarget::held_at`] and
/// [`EpollTarget::held_by`].
type HeldWhere = (Option<i32>, Option<FdRef>);

/// An epoll instance as [`collect`] reads it, each item's file found by `find` (given
/// the item's number, its rank among the items under that number, and the inode
/// fdinfo shows).
fn collect_with(
    d: &OpenFd,
    kind: &str,
    info: &str,
    mut find: impl FnMut(i32, u32, u64) -> DumpResult<HeldWhere>,
) -> DumpResult<FdKind> {
    let pid = d.pid;
    let bad = || fdinfo_unparsed(pid, d.fd, kind);
    let mut targets: Vec<EpollTarget> = Vec::new();
    for (tfd, events, data, ino) in procfs::parse_epoll_targets(info).ok_or_else(bad)? {
        // Items registered under one number (the file there closed, another opened
        // there and added): kcmp tells them apart by their rank among those.
        let toff = targets.iter().filter(|t| t.fd == tfd).count() as u32;
        let (held_at, held_by) = find(tfd, toff, ino)?;
        targets.push(EpollTarget {
            fd: tfd,
            events,
            data,
            held_at,
            held_by,
        });
    }
    Ok(FdKind::Epoll {
        flags: d.flags,
        targets,
    })
}

/// An epoll instance only in flight (`d`, ckpt's copy: `kinds::fd::inflight`), whose
/// items name descriptors of whoever added them (its sender, not its receiver): each
/// item's file is looked for among `holders` (descriptors of the tree's processes and
/// ckpt's copies of those only in flight, in order of preference), by the inode fdinfo
/// shows and then kcmp, and recorded as [`EpollTarget::held_by`] the first that holds
/// it. A file none holds (held outside the tree, or only by a mapping: the kernel
/// removes an item with the last reference to its file, so one is held somewhere) is
/// refused.
pub(crate) fn collect_in_flight(
    d: &OpenFd,
    kind: &str,
    info: &str,
    holders: &[(i32, i32)],
) -> DumpResult<FdKind> {
    use std::os::unix::fs::MetadataExt;
    let inos: Vec<Option<u64>> = holders
        .iter()
        .map(|(p, n)| {
            std::fs::metadata(format!("/proc/{p}/fd/{n}"))
                .ok()
                .map(|m| m.ino())
        })
        .collect();
    collect_with(d, kind, info, |tfd, toff, ino| {
        let found = holders.iter().zip(&inos).find(|&(&(p, n), i)| {
            i.is_none_or(|i| i == ino)
                && sys::process::is_epoll_target_of(p, n, d.pid, d.fd, tfd, toff).unwrap_or(false)
        });
        match found {
            Some((&(pid, fd), _)) => Ok((None, Some(FdRef { pid, fd }))),
            None => Err(unsupported(
                d.pid,
                format!(
                    "file descriptor {} is an epoll instance with an item added as \
                     descriptor {tfd} whose file no process of the dumped tree holds, nor \
                     a message in flight (it is held outside the tree, or only by a \
                     mapping); not supported yet",
                    d.fd
                ),
            )),
        }
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

/// epoll instances watch descriptors of their own process, or (an instance only in
/// flight, [`EpollTarget::held_by`]) of another process of the image.
pub(crate) fn check_targets(procs: &[Process], problems: &mut Vec<Problem>) {
    for q in procs {
        for f in &q.fds {
            if let FdKind::Epoll { targets, .. } = &f.kind {
                for t in targets {
                    let (pid, at) = match t.held_by {
                        Some(r) if t.held_at.is_none() => (r.pid, r.fd),
                        Some(_) => (0, -1),
                        None => (q.pid, t.held_at.unwrap_or(t.fd)),
                    };
                    let held = procs
                        .iter()
                        .filter(|p| p.pid == pid)
                        .any(|p| p.fds.iter().any(|g| g.fd == at));
                    let ok_number = (0..super::MAX_FD).contains(&t.fd);
                    if !held || !ok_number || targets.len() > 1 << 20 {
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
/// number it was added under. Items whose files another process holds
/// ([`EpollTarget::held_by`]) come later: [`register_held_elsewhere`].
pub(crate) fn register_targets(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let high = super::pipe_tmp_base(proc_);
    for f in &proc_.fds {
        if let FdKind::Epoll { targets, .. } = &f.kind {
            for t in targets.iter().filter(|t| t.held_by.is_none()) {
                let src = t.held_at.unwrap_or(t.fd) as u64;
                add_under(cx, f.fd, t, src, high)?;
            }
        }
    }
    Ok(())
}

/// Once every process has its descriptors (those only in flight too): the items of
/// epoll instances whose files a descriptor of another process holds
/// ([`EpollTarget::held_by`]: an instance only in flight, its items added by its
/// sender). The file is taken from that process and put at the item's number for the
/// registration, as [`register_targets`] does.
pub(crate) fn register_held_elsewhere(ctxs: &mut [Ctx<'_>]) -> RestoreResult<()> {
    for cx in ctxs.iter_mut() {
        let proc_ = cx.proc_;
        if proc_.is_zombie() || !crate::kinds::task::share::restores_fds(proc_) {
            continue;
        }
        let high = super::pipe_tmp_base(proc_);
        for f in &proc_.fds {
            let FdKind::Epoll { targets, .. } = &f.kind else {
                continue;
            };
            for t in targets {
                let Some(by) = t.held_by else { continue };
                let what = format!(
                    "take descriptor {} of process {} (the file epoll item {} of descriptor \
                     {} watches)",
                    by.fd, by.pid, t.fd, f.fd
                );
                let n = crate::remote::take_remote_fd(cx, by.pid, by.fd as u64, &what)?;
                add_under(cx, f.fd, t, n, high)?;
                if n != t.fd as u64 {
                    cx.close(n)?;
                }
            }
        }
    }
    Ok(())
}

/// Add item `t` to epoll instance `epfd` under its number, the file it watches being
/// at `src`: put there for the time of the registration if `src` is another number
/// (what the process holds there set aside above `high` and put back, with its
/// close-on-exec flag; a free number closed again).
fn add_under(
    cx: &mut Ctx<'_>,
    epfd: i32,
    t: &EpollTarget,
    src: u64,
    high: u64,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    if src == t.fd as u64 {
        cx.epoll_add(epfd as u64, src, t.events, t.data)?;
        // (A copy taken to that free number: it goes after the registration.)
        if !proc_.fds.iter().any(|g| g.fd == t.fd) {
            cx.close(src)?;
        }
        return Ok(());
    }
    let there = proc_.fds.iter().find(|g| g.fd == t.fd);
    let parked = match there {
        Some(_) => Some(cx.dup_above(t.fd as u64, high)?),
        None => None,
    };
    cx.dup3(src, t.fd as u64, false)?;
    cx.epoll_add(epfd as u64, t.fd as u64, t.events, t.data)?;
    match (parked, there) {
        (Some(p), Some(g)) => {
            cx.dup3(p, g.fd as u64, g.cloexec)?;
            cx.close(p)?;
        }
        _ => cx.close(t.fd as u64)?,
    }
    Ok(())
}
