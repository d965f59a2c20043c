//! Pipes: both ends, data in flight.

use super::external;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::kinds::fd::park_pair;
use crate::kinds::unsupported;
use crate::model::PipeState;
use crate::model::{Checkpoint, FdKind, Process};
use crate::remote::Ctx;
use crate::sys;
use std::collections::BTreeSet;

// ---- collect (dump) ----

/// An end of pipe `id`: whether the other end is inside the tree is decided once all
/// are collected ([`resolve_pipes`]).
pub(crate) fn collect(id: u64, flags: u32) -> FdKind {
    let write = flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
    FdKind::Pipe { id, write, flags }
}

/// Pipes: one whose two ends are both in the tree is kept, with the data in it (read
/// without consuming it); an end whose other end is outside is a standard descriptor
/// connected at restore to ckpt's own (0-2), or refused.
pub(crate) fn resolve_pipes(procs: &mut [Process], external: bool) -> DumpResult<Vec<PipeState>> {
    use std::collections::BTreeMap;
    // id -> (a read end (pid, fd), has write end)
    let mut ends: BTreeMap<u64, (Option<(i32, i32)>, bool)> = BTreeMap::new();
    for p in procs.iter() {
        for f in &p.fds {
            if let FdKind::Pipe { id, write, .. } = f.kind {
                let e = ends.entry(id).or_default();
                if write {
                    e.1 = true;
                } else if e.0.is_none() {
                    e.0 = Some((p.pid, f.fd));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (&id, &(reader, has_writer)) in &ends {
        if let (Some((pid, fd)), true) = (reader, has_writer) {
            let rd = sys::process::steal_fd(pid, fd)?;
            let (capacity, data) = sys::process::peek_pipe(&rd)?;
            out.push(PipeState { id, capacity, data });
        }
    }
    for p in procs.iter_mut() {
        let pid = p.pid;
        for f in p.fds.iter_mut() {
            if let FdKind::Pipe { id, flags, .. } = f.kind {
                if out.iter().any(|s| s.id == id) {
                    continue;
                }
                if f.fd > 2 && external {
                    external::mark_external(f, format!("pipe:[{id}]"), flags);
                    f.shared_with = None;
                    continue;
                }
                if f.fd > 2 {
                    return Err(unsupported(
                        pid,
                        format!(
                            "file descriptor {} is a pipe (pipe:[{id}]) to a process outside \
                             the dumped tree; dump the tree that holds both ends, or record \
                             it as external with --external (restore then needs \
                             --inherit-fd {}:pipe:[{id}])",
                            f.fd, f.fd
                        ),
                    ));
                }
                f.kind = FdKind::Inherited {
                    what: format!("pipe:[{id}]"),
                    flags,
                    tty: None,
                };
                f.shared_with = None;
            }
        }
    }
    Ok(out)
}

// ---- checks (plan) ----

/// Largest pipe capacity accepted (the kernel's default pipe-max-size is 1 MiB).
pub(crate) const MAX_PIPE: usize = 16 << 20;

/// Pipes: every pipe record fits its capacity; returns their IDs.
pub(crate) fn check_pipes(pipes: &[PipeState], problems: &mut Vec<Problem>) -> BTreeSet<u64> {
    let mut pipe_ids = BTreeSet::new();
    for pipe in pipes {
        if !pipe_ids.insert(pipe.id)
            || pipe.capacity as usize > MAX_PIPE
            || pipe.data.len() > pipe.capacity as usize
        {
            check::p(problems, "malformed", format!("invalid pipe {}", pipe.id));
        }
    }
    pipe_ids
}

/// Every pipe end refers to a pipe of the image.
pub(crate) fn check_ends(procs: &[Process], pipe_ids: &BTreeSet<u64>, problems: &mut Vec<Problem>) {
    for q in procs {
        for f in &q.fds {
            if let FdKind::Pipe { id, .. } = f.kind {
                if !pipe_ids.contains(&id) {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} is an unknown pipe",
                            f.fd, q.pid
                        ),
                    );
                }
            }
        }
    }
}

/// What `inspect` says of a pipe end.
pub(crate) fn describe(ckpt: &Checkpoint, id: u64, write: bool) -> String {
    let buffered = ckpt
        .pipes
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.data.len())
        .unwrap_or(0);
    format!(
        "{} end of pipe {id} ({buffered} bytes buffered)",
        if write { "write" } else { "read" }
    )
}

// ---- restore (stage) ----

/// Create pipe `pipe` in this process (its temporaries at `tmp`, `tmp + 1`), with its
/// capacity and the data that was in it.
pub(crate) fn create_pipe(
    cx: &mut Ctx<'_>,
    pipe: &PipeState,
    tmp: u64,
    direct: bool,
) -> RestoreResult<(u64, u64)> {
    let fl = libc::O_CLOEXEC | if direct { libc::O_DIRECT } else { 0 };
    let (r, w) = cx.pipe2(fl)?;
    fill_pipe(
        cx,
        w,
        pipe.capacity,
        &pipe.data,
        &format!("pipe {}", pipe.id),
    )?;
    park_pair(cx, r, w, tmp)
}

/// Give the pipe behind write descriptor `w` its capacity (0: leave the default) and
/// put `data` back in it.
pub(crate) fn fill_pipe(
    cx: &mut Ctx<'_>,
    w: u64,
    capacity: u32,
    data: &[u8],
    what: &str,
) -> RestoreResult<()> {
    if capacity != 0 {
        cx.set_pipe_size(w, capacity)?;
    }
    cx.write_all(w, data, what)
}
