//! File locks: POSIX, OFD and flock locks held by the processes.

use std::os::unix::fs::MetadataExt;

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{Fd, FdKind, FileLock, Process};
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// Locks only on descriptors reopened by path, with sane ranges.
pub(crate) fn check_records(q: &Process, f: &Fd, problems: &mut Vec<Problem>) {
    let lockable = matches!(f.kind, FdKind::File { .. } | FdKind::Dir { .. });
    if f.locks.len() > 1 << 16
        || (!f.locks.is_empty() && !lockable)
        || f.locks.iter().any(|l| {
            l.end.is_some_and(|e| e < l.start || e >= i64::MAX as u64) || l.start > i64::MAX as u64
        })
    {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {} of process {} has invalid file locks",
                f.fd, q.pid
            ),
        );
    }
}

/// The locks the process held must be free now: none held by anyone else that would
/// conflict (flock with flock; POSIX and OFD locks with each other, on overlapping
/// ranges; a write lock with anything).
pub(crate) fn check_locks(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.fds.iter().all(|f| f.locks.is_empty()) {
        return;
    }
    let all = match procfs::all_locks() {
        Ok(a) => a,
        Err(e) => {
            check::p(
                problems,
                "host",
                format!("cannot read the file locks of this host (/proc/locks): {e}"),
            );
            return;
        }
    };
    for f in &proc_.fds {
        let file = match &f.kind {
            FdKind::File { file, .. } | FdKind::Dir { file, .. } => file,
            _ => continue,
        };
        let Ok(m) = std::fs::metadata(procfs::bytes_path(&file.path)) else {
            continue; // reported by the file checks
        };
        let (maj, min) = (libc::major(m.dev()), libc::minor(m.dev()));
        for l in &f.locks {
            let flock = l.kind == crate::model::LockKind::Flock;
            let conflict = all.iter().find(|o| {
                !o.blocked
                    && o.dev == (maj, min)
                    && o.ino == m.ino()
                    && if flock {
                        o.class == "FLOCK"
                    } else {
                        o.class == "POSIX" || o.class == "OFDLCK"
                    }
                    && (l.write || o.mode == "WRITE")
                    && o.start <= l.end.unwrap_or(u64::MAX)
                    && l.start <= o.end.unwrap_or(u64::MAX)
            });
            if let Some(o) = conflict {
                let range = match l.end {
                    _ if flock => String::new(),
                    Some(e) => format!(" on bytes {}-{e}", l.start),
                    None => format!(" on bytes {}-EOF", l.start),
                };
                check::p(
                    problems,
                    "lock-taken",
                    format!(
                        "file descriptor {} of process {}: its {} {} lock{range} on {} \
                         conflicts with a {} {} lock held now (by process {})",
                        f.fd,
                        proc_.pid,
                        l.kind.name(),
                        if l.write { "write" } else { "read" },
                        check::show(&file.path),
                        o.class,
                        o.mode,
                        o.pid
                    ),
                );
            }
        }
    }
}

/// What `inspect` adds to a descriptor's line for its locks.
pub(crate) fn describe(locks: &[FileLock]) -> String {
    locks
        .iter()
        .map(|l| {
            format!(
                "; {} {} lock {}-{}",
                l.kind.name(),
                if l.write { "write" } else { "read" },
                l.start,
                l.end.map_or("EOF".to_string(), |e| e.to_string())
            )
        })
        .collect()
}
