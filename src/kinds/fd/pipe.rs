//! Pipes: both ends, data in flight.

use super::external;
use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::{FdKind, PipeState, Process};
use crate::sys;

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
pub(crate) fn resolve_pipes(procs: &mut [Process], external: bool) -> Result<Vec<PipeState>> {
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
