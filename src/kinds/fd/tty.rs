//! Terminals: settings, window size, controlling terminal.

use super::OpenFd;
use crate::error::DumpResult as Result;
use crate::model::{FdKind, FileId, TtyState};
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

/// Whether device `id` is a terminal (a virtual console, a serial line or a pty).
pub(crate) fn is_tty(id: &FileId) -> bool {
    let major = libc::major(id.rdev);
    matches!(major, 4 | 5 | 136..=143)
}

/// A terminal open as descriptor `d`: kept as a standard descriptor (0-2) connected at
/// restore to ckpt's own, with its settings; refused elsewhere.
pub(crate) fn collect(d: &OpenFd, id: &FileId) -> Result<FdKind> {
    if d.fd <= 2 {
        let tty = Some(Box::new(tty_state(d.pid, d.fd, id, &d.link)?));
        return Ok(FdKind::Inherited {
            what: d.name.clone(),
            flags: d.flags,
            tty,
        });
    }
    Err(d.not_yet("a terminal"))
}

/// A terminal on standard descriptor `fd`: its settings (read through a duplicate of the
/// descriptor; left out if the terminal no longer answers, e.g. hung up) and whether it
/// is the process's controlling terminal, with its foreground group (/proc/PID/stat).
fn tty_state(pid: i32, fd: i32, id: &FileId, link: &[u8]) -> Result<TtyState> {
    use std::os::fd::AsFd;
    let dup = sys::process::steal_fd(pid, fd)?;
    let settings = sys::tty::settings(dup.as_fd()).ok();
    let st = procfs::stat(pid)?;
    let controlling = st.field(7) == id.rdev;
    Ok(TtyState {
        path: link.to_vec(),
        rdev: id.rdev,
        settings,
        controlling,
        fg_pgid: if controlling {
            st.field(8) as i64 as i32
        } else {
            0
        },
    })
}
