//! Pipes: both ends, data in flight.

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{Checkpoint, FdKind, PipeState, Process};

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
