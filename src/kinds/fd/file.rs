//! Regular files and directories, memfds and files deleted while open (their contents
//! travel in the image).

use std::os::unix::fs::MetadataExt;

use crate::error::Problem;
use crate::kinds::check;
use crate::model::FileId;
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// A regular file descriptor's file: one only written may have grown, others must be
/// unchanged.
pub(crate) fn check_host(
    file: &FileId,
    flags: u32,
    pos: u64,
    fd: i32,
    problems: &mut Vec<Problem>,
) {
    let what = format!("file descriptor {fd}:");
    if flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
        check_output_file(file, flags, pos, &what, problems)
    } else {
        check_file(file, &what, problems)
    }
}

/// A deleted file is recreated in its directory, which must exist.
pub(crate) fn check_deleted(file: &FileId, fd: i32, problems: &mut Vec<Problem>) {
    let dir = procfs::bytes_path(&file.path).parent().map(|d| d.is_dir());
    if dir != Some(true) {
        check::p(
            problems,
            "file-missing",
            format!(
                "file descriptor {}: the directory of deleted file {} does not exist",
                fd,
                check::show(&file.path)
            ),
        );
    }
}

/// Compare a file's identity now with the image's record of it.
pub(crate) fn check_file(id: &FileId, what: &str, problems: &mut Vec<Problem>) {
    let path = procfs::bytes_path(&id.path);
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            check::p(
                problems,
                "file-missing",
                format!("{what} {} is not available: {e}", check::show(&id.path)),
            );
            return;
        }
    };
    let fmt = id.mode & libc::S_IFMT;
    if m.mode() & libc::S_IFMT != fmt {
        check::p(
            problems,
            "file-changed",
            format!(
                "{what} {} is now a different kind of file",
                check::show(&id.path)
            ),
        );
        return;
    }
    if fmt == libc::S_IFREG
        && (m.size() != id.size || m.mtime() != id.mtime_sec || m.mtime_nsec() != id.mtime_nsec)
    {
        check::p(
            problems,
            "file-changed",
            format!(
                "{what} {} has changed since the dump (size {} -> {}, modified {} -> {})",
                check::show(&id.path),
                id.size,
                m.size(),
                id.mtime_sec,
                m.mtime()
            ),
        );
    }
    if (fmt == libc::S_IFCHR || fmt == libc::S_IFBLK) && m.rdev() != id.rdev {
        check::p(
            problems,
            "file-changed",
            format!("{what} {} is now another device", check::show(&id.path)),
        );
    }
}

/// A file the process only writes (a log, redirected stdout) may have grown since the
/// dump: the process never reads it, so that cannot mislead it. It must still exist and
/// be a regular file, and a non-append writer's offset must not lie beyond its end.
pub(crate) fn check_output_file(
    id: &FileId,
    flags: u32,
    pos: u64,
    what: &str,
    problems: &mut Vec<Problem>,
) {
    let path = procfs::bytes_path(&id.path);
    match std::fs::metadata(path) {
        Err(e) => check::p(
            problems,
            "file-missing",
            format!("{what} {} is not available: {e}", check::show(&id.path)),
        ),
        Ok(m) if !m.is_file() => check::p(
            problems,
            "file-changed",
            format!(
                "{what} {} is no longer a regular file",
                check::show(&id.path)
            ),
        ),
        Ok(m) if flags as i32 & libc::O_APPEND == 0 && m.size() < pos => check::p(
            problems,
            "file-changed",
            format!(
                "{what} {} was truncated to {} bytes since the dump; the process would write at offset {pos}",
                check::show(&id.path),
                m.size()
            ),
        ),
        Ok(_) => {}
    }
}

/// What `inspect` says of a regular file descriptor.
pub(crate) fn describe_file(file: &FileId, flags: u32, pos: u64) -> String {
    format!(
        "file {} flags {:#o} offset {}",
        String::from_utf8_lossy(&file.path),
        flags,
        pos
    )
}

/// What `inspect` says of a device descriptor.
pub(crate) fn describe_device(file: &FileId, flags: u32) -> String {
    format!(
        "device {} flags {:#o}",
        String::from_utf8_lossy(&file.path),
        flags
    )
}

/// What `inspect` says of a directory descriptor.
pub(crate) fn describe_dir(file: &FileId) -> String {
    format!("directory {}", String::from_utf8_lossy(&file.path))
}

/// What `inspect` says of a memfd.
pub(crate) fn describe_memfd(name: &[u8], seals: u32, pos: u64) -> String {
    format!(
        "memfd {} (contents in the image) offset {pos} seals {seals:#x}",
        String::from_utf8_lossy(name)
    )
}

/// What `inspect` says of a file deleted while open.
pub(crate) fn describe_deleted(file: &FileId, pos: u64) -> String {
    format!(
        "deleted file {} (contents in the image) offset {pos}",
        String::from_utf8_lossy(&file.path)
    )
}
