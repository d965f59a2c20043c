//! FIFOs (named pipes): ends, data in flight.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::fd::file::check_file;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::model::{Checkpoint, FifoState, FileId};
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// FIFOs: every FIFO record's data fits its capacity; returns their IDs.
pub(crate) fn check_fifos(fifos: &[FifoState], problems: &mut Vec<Problem>) -> BTreeSet<u64> {
    let mut fifo_ids = BTreeSet::new();
    for ff in fifos {
        if !fifo_ids.insert(ff.id)
            || ff.capacity as usize > MAX_PIPE
            || ff.data.len() > ff.capacity as usize
        {
            check::p(problems, "malformed", format!("invalid FIFO {}", ff.id));
        }
    }
    fifo_ids
}

/// A FIFO descriptor refers to a FIFO pipe of the image.
pub(crate) fn check_ref(
    id: u64,
    fd: i32,
    pid: i32,
    fifo_ids: &BTreeSet<u64>,
    problems: &mut Vec<Problem>,
) {
    if !fifo_ids.contains(&id) {
        check::p(
            problems,
            "malformed",
            format!("descriptor {fd} of process {pid} is an unknown FIFO"),
        );
    }
}

/// The FIFO a descriptor opened is there, unchanged and unused.
pub(crate) fn check_host(file: &FileId, fd: i32, problems: &mut Vec<Problem>) {
    let what = format!("file descriptor {fd}: FIFO");
    let before = problems.len();
    check_file(file, &what, problems);
    if problems.len() == before {
        check_fifo_unused(file, &what, problems);
    }
}

/// A FIFO must not be open by anyone at restore: its pipe would be shared with them
/// (and the data put back would mix with theirs).
pub(crate) fn check_fifo_unused(id: &FileId, what: &str, problems: &mut Vec<Problem>) {
    let Ok(m) = std::fs::metadata(procfs::bytes_path(&id.path)) else {
        return;
    };
    if let Some(q) = procfs::holders_of(m.dev(), m.ino()).first() {
        check::p(
            problems,
            "fifo-busy",
            format!(
                "{what} {} is open by process {q} now; restore needs it unused",
                check::show(&id.path)
            ),
        );
    }
}

/// What `inspect` says of a FIFO descriptor.
pub(crate) fn describe(ckpt: &Checkpoint, file: &FileId, id: u64, flags: u32) -> String {
    let (cap, buffered) = ckpt
        .fifos
        .iter()
        .find(|p| p.id == id)
        .map(|p| (p.capacity, p.data.len()))
        .unwrap_or((0, 0));
    format!(
        "FIFO {} flags {flags:#o} (capacity {cap}, {buffered} bytes buffered)",
        String::from_utf8_lossy(&file.path)
    )
}
