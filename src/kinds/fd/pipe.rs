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
/// without consuming it); so is one whose other end nobody holds any more (closed by
/// every process: GNU make's dummy stdin of its jobs, a readiness pipe whose writer
/// exited), with its data: restore creates it whole and closes the end no descriptor
/// takes, so reads give the data then end of file, writes EPIPE. An end whose other end
/// is held outside the tree is a standard descriptor connected at restore to ckpt's own
/// (0-2), recorded as external (`--external`), or refused.
pub(crate) fn resolve_pipes(procs: &mut [Process], external: bool) -> DumpResult<Vec<PipeState>> {
    use std::collections::BTreeMap;
    // id -> the tree's read ends and write ends, (pid, fd)
    type Ends = (Vec<(i32, i32)>, Vec<(i32, i32)>);
    let mut ends: BTreeMap<u64, Ends> = BTreeMap::new();
    for p in procs.iter() {
        for f in &p.fds {
            if let FdKind::Pipe { id, write, .. } = f.kind {
                let e = ends.entry(id).or_default();
                if write {
                    e.1.push((p.pid, f.fd));
                } else {
                    e.0.push((p.pid, f.fd));
                }
            }
        }
    }
    let tree: BTreeSet<i32> = procs.iter().map(|p| p.pid).collect();
    let mut out = Vec::new();
    // pipes whose other end is held outside the tree: which end that is
    let mut outside: BTreeMap<u64, &'static str> = BTreeMap::new();
    for (&id, (readers, writers)) in &ends {
        match (readers.first(), writers.first()) {
            (Some(&(pid, fd)), Some(_)) => {
                let rd = sys::process::steal_fd(pid, fd)?;
                let (capacity, data) = sys::process::peek_pipe(&rd)?;
                out.push(PipeState { id, capacity, data });
            }
            (Some(_), None) => match closed_read_end(readers)? {
                Some(rd) => {
                    let (capacity, data) = sys::process::peek_pipe(&rd)?;
                    out.push(PipeState { id, capacity, data });
                }
                None => {
                    outside.insert(id, "write");
                }
            },
            (None, Some(&(pid, fd))) => {
                let wr = sys::process::steal_fd(pid, fd)?;
                if sys::process::pipe_other_side_gone(&wr, true)? {
                    let (capacity, data) = sys::process::peek_pipe_by_write_end(&wr)?;
                    out.push(PipeState { id, capacity, data });
                } else {
                    outside.insert(id, "read");
                }
            }
            (None, None) => {}
        }
    }
    refuse_shared_outside(procs, &mut out, &mut outside, &tree)?;
    for p in procs.iter_mut() {
        let pid = p.pid;
        for f in p.fds.iter_mut() {
            if let FdKind::Pipe { id, flags, write } = f.kind {
                let Some(other) = outside.get(&id) else {
                    continue;
                };
                if f.fd > 2 && external {
                    external::mark_external(f, format!("pipe:[{id}]"), flags);
                    f.shared_with = None;
                    continue;
                }
                if f.fd > 2 {
                    return Err(unsupported(
                        pid,
                        format!(
                            "file descriptor {} is the {} end of a pipe (pipe:[{id}]) whose \
                             {other} end is held by a process outside the dumped tree; dump \
                             the tree that holds both ends, or record it as external with \
                             --external (restore then needs --inherit-fd {}:pipe:[{id}])",
                            f.fd,
                            if write { "write" } else { "read" },
                            f.fd
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

/// A pipe the tree keeps must not be open in a process outside it as well: restore
/// gives the tree a pipe of its own, which that process would no longer share (it
/// would see the other end closed, or data read twice). One pass over every process's
/// descriptors; ckpt's own duplicates do not count. Except, as before such pipes were
/// kept: a pipe whose other end is closed and which the tree holds only on descriptors
/// 0-2 is, like any standard descriptor shared with the outside, connected at restore
/// to ckpt's own (moved from `kept` to `outside`).
fn refuse_shared_outside(
    procs: &[Process],
    kept: &mut Vec<PipeState>,
    outside: &mut std::collections::BTreeMap<u64, &'static str>,
    tree: &BTreeSet<i32>,
) -> DumpResult<()> {
    let ids: BTreeSet<u64> = kept.iter().map(|s| s.id).collect();
    let mut skip = tree.clone();
    skip.insert(std::process::id() as i32);
    let shared = sys::proc::pipe_holders_outside(&ids, &skip);
    for (&id, &other) in &shared {
        let ends: Vec<(i32, &crate::model::Fd)> = procs
            .iter()
            .flat_map(|p| p.fds.iter().map(move |f| (p.pid, f)))
            .filter(|(_, f)| matches!(f.kind, FdKind::Pipe { id: i, .. } if i == id))
            .collect();
        let one_end = ends
            .iter()
            .all(|(_, f)| matches!(f.kind, FdKind::Pipe { write, .. } if write))
            || ends
                .iter()
                .all(|(_, f)| matches!(f.kind, FdKind::Pipe { write, .. } if !write));
        if one_end && ends.iter().all(|(_, f)| f.fd <= 2) {
            kept.retain(|s| s.id != id);
            outside.insert(id, "other");
            continue;
        }
        let (pid, fd) = ends.first().map(|(p, f)| (*p, f.fd)).unwrap_or_default();
        return Err(unsupported(
            pid,
            format!(
                "file descriptor {fd} is an end of a pipe (pipe:[{id}]) that process {other} \
                 outside the dumped tree holds open too; restore would give the tree a pipe \
                 of its own, which that process would no longer share: dump the tree that \
                 holds all its ends"
            ),
        ));
    }
    Ok(())
}

/// A duplicate of one of the tree's read ends `readers` of a pipe that no writer is
/// left for (asked of each: a description opened through /proc after the last writer
/// left does not say so), or `None`: a writer is held outside the tree.
fn closed_read_end(readers: &[(i32, i32)]) -> DumpResult<Option<std::os::fd::OwnedFd>> {
    for &(pid, fd) in readers {
        let rd = sys::process::steal_fd(pid, fd)?;
        if sys::process::pipe_other_side_gone(&rd, false)? {
            return Ok(Some(rd));
        }
    }
    Ok(None)
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
    let other_held = ckpt.processes.iter().any(|q| {
        q.fds.iter().any(
            |f| matches!(f.kind, FdKind::Pipe { id: i, write: w, .. } if i == id && w != write),
        )
    });
    format!(
        "{} end of pipe {id} ({buffered} bytes buffered{})",
        if write { "write" } else { "read" },
        match (other_held, write) {
            (true, _) => "",
            (false, true) => "; no reader: writes fail with EPIPE",
            (false, false) => "; no writer: end of file after them",
        }
    )
}

/// Whether descriptor `fd` of process `pid`, an end of pipe `id`, is an open file
/// description of its own opened again through /proc/self/fd at restore, rather than
/// the end `pipe2` makes. A description the program opened through /proc itself shows
/// it in its flags (`O_LARGEFILE`, which `pipe2` never sets and a 64-bit open always
/// does; or read-write access): it is opened again that way too, so it gets the same
/// flags. Of the others (`pipe2`'s, or older images' without those flags), the first in
/// restore order (image order) takes the pipe's own end and any later one is opened
/// again. Descriptors sharing a description point at it with `shared_with` and are not
/// counted.
pub(crate) fn further_description(
    ckpt: &Checkpoint,
    pid: i32,
    fd: i32,
    id: u64,
    write: bool,
) -> bool {
    let reopened = |flags: u32| {
        flags & linux_raw_sys::general::O_LARGEFILE != 0
            || flags as i32 & libc::O_ACCMODE == libc::O_RDWR
    };
    for q in &ckpt.processes {
        for f in &q.fds {
            let FdKind::Pipe {
                id: i,
                write: w,
                flags,
            } = f.kind
            else {
                continue;
            };
            if q.pid == pid && f.fd == fd {
                return reopened(flags);
            }
            if f.shared_with.is_none() && i == id && w == write && !reopened(flags) {
                return true;
            }
        }
    }
    false
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
