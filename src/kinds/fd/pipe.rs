//! Pipes: both ends, data in flight.

use crate::arch::x86::nr;
use crate::error::Problem;
use crate::error::RestoreResult as Result;
use crate::kinds::check;
use crate::kinds::fd::{park_pair, queue_data};
use crate::model::PipeState;
use crate::model::{Checkpoint, FdKind, Process};
use crate::remote::Ctx;
use std::collections::BTreeSet;

// ---- restore (stage) ----

/// Create pipe `pipe` in this process (its temporaries at `tmp`, `tmp + 1`), with its
/// capacity and the data that was in it.
pub(crate) fn create_pipe(
    cx: &mut Ctx<'_>,
    pipe: &PipeState,
    tmp: u64,
    direct: bool,
) -> Result<(u64, u64)> {
    let fl = libc::O_CLOEXEC as u64 | if direct { libc::O_DIRECT as u64 } else { 0 };
    let a = cx.put(0, &[0u8; 8])?;
    cx.call("pipe2", nr::PIPE2, [a, fl, 0, 0, 0, 0])?;
    let mut b = [0u8; 8];
    cx.read(a, &mut b)?;
    let r = u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default()));
    let w = u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default()));
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
) -> Result<()> {
    if capacity != 0 {
        let args = [w, libc::F_SETPIPE_SZ as u64, u64::from(capacity), 0, 0, 0];
        cx.call("F_SETPIPE_SZ", nr::FCNTL, args)?;
    }
    queue_data(cx, nr::WRITE, w, data, what)
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
