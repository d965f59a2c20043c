//! File locks: POSIX, OFD and flock locks held by the processes.

use crate::arch::x86::nr;
use crate::error::{RestoreError, RestoreResult as Result};
use crate::model::FdKind;
use crate::remote::Ctx;
use crate::sys;

// ---- restore (stage) ----

/// Take the file locks the process held again, without waiting: one that someone else
/// holds now fails the restore, naming it. After every descriptor exists and nothing
/// more is closed (closing any descriptor of a file drops the process's POSIX locks).
pub(crate) fn restore_locks(cx: &mut Ctx<'_>) -> Result<()> {
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
                        "process {}: cannot {what}: another process holds a conflicting lock now",
                        proc_.pid
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
