//! File locks: POSIX, OFD and flock locks held by the processes.

use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::FdKind;
use crate::model::LockKind;
use crate::model::{Fd, FileLock, Process};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::proc as procfs;
use std::os::unix::fs::MetadataExt;

// ---- collect (dump) ----

/// The file locks process `pid` holds through its descriptors of files (their fdinfo
/// "lock:" lines as they are): what it holds, for the plan dump runs (`check::Held`).
pub(crate) fn held_locks(pid: i32, fds: &[Fd]) -> DumpResult<Vec<procfs::LockLine>> {
    let mut out = Vec::new();
    for f in fds {
        // (One only in flight is in no process: refused if it holds locks.)
        if f.in_flight {
            continue;
        }
        if matches!(f.kind, FdKind::File { .. } | FdKind::Dir { .. }) {
            let text = procfs::fdinfo_text(pid, f.fd)?;
            out.extend(
                text.lines()
                    .filter(|l| l.starts_with("lock:"))
                    .filter_map(procfs::parse_lock_line)
                    .filter(|l| !l.blocked),
            );
        }
    }
    Ok(out)
}

/// The file locks held through descriptor `fd` (its fdinfo "lock:" lines): flock and
/// OFD locks of its open file description, POSIX locks of this process taken through
/// it; leases of its description. Kinds that cannot be taken again (delegations,
/// leases being broken...) are refused by name.
pub(crate) fn fd_locks(pid: i32, fd: i32, name: &str) -> DumpResult<Vec<FileLock>> {
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
            // Its state: ACTIVE, or BREAKING (a conflicting open waits for it to go).
            "LEASE" if !l.split_whitespace().any(|w| w == "ACTIVE") => {
                return Err(refuse("a lease being broken"));
            }
            // An active lease, read or write, is taken again once every descriptor
            // exists: the descriptions restore makes are the tree's own (the file is
            // held by ckpt with O_PATH only, which no lease sees), so a write lease,
            // which needs the file open by no other description, is granted as it was.
            "LEASE" => LockKind::Lease,
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
pub(crate) fn check_locks(proc_: &Process, held: &check::Held, problems: &mut Vec<Problem>) {
    if proc_.fds.iter().all(|f| f.locks.is_empty()) {
        return;
    }
    match procfs::all_locks() {
        Ok(mut all) => {
            // The dumped tree's own locks go with it.
            all.retain(|o| o.blocked || !held.locks.contains(o));
            check_locks_against(proc_, &all, problems)
        }
        Err(e) => check::p(
            problems,
            "host",
            format!("cannot read the file locks of this host (/proc/locks): {e}"),
        ),
    }
}

/// [`check_locks`] against the locks `all` of this host (as /proc/locks lists them).
pub(crate) fn check_locks_against(
    proc_: &Process,
    all: &[procfs::LockLine],
    problems: &mut Vec<Problem>,
) {
    for f in &proc_.fds {
        let file = match &f.kind {
            FdKind::File { file, .. } | FdKind::Dir { file, .. } => file,
            _ => continue,
        };
        let Ok(m) = std::fs::metadata(procfs::bytes_path(&file.path)) else {
            continue; // reported by the file checks
        };
        let (maj, min) = (libc::major(m.dev()), libc::minor(m.dev()));
        // (A lease conflicts with opens, not locks: one taken meanwhile fails the
        // restore, naming it.)
        for l in f.locks.iter().filter(|l| l.kind != LockKind::Lease) {
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

// ---- restore (stage) ----

/// Take the file locks the process held again, without waiting: one that someone else
/// holds now fails the restore, naming it. After every descriptor exists and nothing
/// more is closed (closing any descriptor of a file drops the process's POSIX locks).
pub(crate) fn restore_locks(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    use crate::model::LockKind;
    let proc_ = cx.proc_;
    for f in &proc_.fds {
        let path = match &f.kind {
            FdKind::File { file, .. } | FdKind::Dir { file, .. } => &file.path,
            _ => continue,
        };
        for l in &f.locks {
            // flock and OFD locks belong to the open file description: taken once, by
            // the descriptor that made it.
            if l.kind != LockKind::Posix && f.shared_with.is_some() {
                continue;
            }
            let what = format!(
                "take the {} {} lock of descriptor {} on {}",
                l.kind.name(),
                if l.write { "write" } else { "read" },
                f.fd,
                String::from_utf8_lossy(path)
            );
            let r = match l.kind {
                LockKind::Lease => {
                    let typ = if l.write {
                        libc::F_WRLCK
                    } else {
                        libc::F_RDLCK
                    };
                    let args = [f.fd as u64, libc::F_SETLEASE as u64, typ as u64, 0, 0, 0];
                    cx.call(&what, nr::FCNTL, args)
                }
                LockKind::Flock => {
                    let op = if l.write {
                        libc::LOCK_EX
                    } else {
                        libc::LOCK_SH
                    } | libc::LOCK_NB;
                    cx.call(&what, nr::FLOCK, [f.fd as u64, op as u64, 0, 0, 0, 0])
                }
                LockKind::Posix | LockKind::Ofd => {
                    // struct flock { short l_type, l_whence; off_t l_start, l_len; pid_t l_pid; }
                    let typ = if l.write {
                        libc::F_WRLCK
                    } else {
                        libc::F_RDLCK
                    } as u16;
                    let len = l.end.map_or(0, |e| e - l.start + 1);
                    let mut b = [0u8; 32];
                    b[0..2].copy_from_slice(&typ.to_le_bytes());
                    b[2..4].copy_from_slice(&(libc::SEEK_SET as u16).to_le_bytes());
                    b[8..16].copy_from_slice(&l.start.to_le_bytes());
                    b[16..24].copy_from_slice(&len.to_le_bytes());
                    let a = cx.put(0, &b)?;
                    let cmd = if l.kind == LockKind::Ofd {
                        libc::F_OFD_SETLK
                    } else {
                        libc::F_SETLK
                    };
                    cx.call(&what, nr::FCNTL, [f.fd as u64, cmd as u64, a, 0, 0, 0])
                }
            };
            match r {
                Ok(_) => {}
                Err(RestoreError::Sys(sys::SysError::Remote { errno, .. }))
                    if errno == libc::EAGAIN || errno == libc::EACCES =>
                {
                    return Err(RestoreError::Stage(format!(
                        "process {}: cannot {what}: another process holds a conflicting lock \
                         (or, for a lease, has the file open) now",
                        proc_.pid
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
