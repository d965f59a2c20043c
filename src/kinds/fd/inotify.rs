//! inotify instances and their watches.

use crate::error::{DumpError, DumpResult as Result};
use crate::kinds::unsupported;
use crate::model::InotifyWatch;
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

/// The watches of inotify descriptor `fd`, each resolved to a path through its file
/// handle (and checked to lead to the watched inode). An instance with events queued
/// is refused: they cannot be put back.
pub(crate) fn inotify_watches(pid: i32, fd: i32, info: &str) -> Result<Vec<InotifyWatch>> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        unsupported(
            pid,
            format!("file descriptor {fd} is an inotify instance {why}; not supported yet"),
        )
    };
    let lines = procfs::parse_inotify_watches(info).ok_or_else(|| {
        DumpError::Sys(crate::sys::SysError::Other(format!(
            "cannot parse the inotify watches of /proc/{pid}/fdinfo/{fd}"
        )))
    })?;
    let dup = sys::process::steal_fd(pid, fd)?;
    let queued = sys::process::queued_bytes(&dup)?;
    if queued != 0 {
        return Err(refuse(format!(
            "with {queued} bytes of events not read yet (they cannot be queued again)"
        )));
    }
    let mut out = Vec::new();
    for w in lines {
        let (major, minor) = (w.sdev >> 20, w.sdev & 0xf_ffff);
        let path = sys::process::path_of_handle(major, minor, w.handle_type, &w.handle)
            .filter(|p| {
                std::fs::metadata(procfs::bytes_path(p)).is_ok_and(|m| {
                    m.ino() == w.ino
                        && libc::major(m.dev()) == major
                        && libc::minor(m.dev()) == minor
                })
            })
            .ok_or_else(|| {
                refuse(format!(
                    "whose watch {} (inode {} on device {major}:{minor}) has no path that \
                     leads to it",
                    w.wd, w.ino
                ))
            })?;
        out.push(InotifyWatch {
            wd: w.wd,
            mask: w.mask,
            path,
            ino: w.ino,
        });
    }
    out.sort_by_key(|w| w.wd);
    Ok(out)
}
