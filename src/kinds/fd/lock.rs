//! File locks: POSIX, OFD and flock locks held by the processes.

use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::{FileLock, LockKind};
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// The file locks held through descriptor `fd` (its fdinfo "lock:" lines): flock and
/// OFD locks of its open file description, POSIX locks of this process taken through
/// it. Kinds that cannot be taken again (leases, delegations...) are refused by name.
pub(crate) fn fd_locks(pid: i32, fd: i32, name: &str) -> Result<Vec<FileLock>> {
    let mut locks = Vec::new();
    for l in procfs::fdinfo_text(pid, fd)?
        .lines()
        .filter(|l| l.starts_with("lock:"))
    {
        let refuse = |what: &str| {
            unsupported(
                pid,
                format!("file descriptor {fd} ({name}) holds {what}; not supported yet"),
            )
        };
        let Some(ll) = procfs::parse_lock_line(l) else {
            return Err(refuse(&format!("a file lock that cannot be parsed ({l})")));
        };
        let kind = match ll.class.as_str() {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            other => return Err(refuse(&format!("a file lock of kind {other}"))),
        };
        let write = match ll.mode.as_str() {
            "WRITE" => true,
            "READ" => false,
            other => return Err(refuse(&format!("a {other} file lock"))),
        };
        locks.push(FileLock {
            kind,
            write,
            start: ll.start,
            end: ll.end,
        });
    }
    Ok(locks)
}
