//! Regular files and directories, memfds and files deleted while open (their contents
//! travel in the image).

use std::path::Path;

use super::OpenFd;
use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::{FdKind, FileId, Process, VmaKind};
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

pub(crate) fn file_id_checked(pid: i32, link: &str, name: &[u8], what: &str) -> Result<FileId> {
    let (id, nlink) = procfs::file_stat(Path::new(link), name)?;
    if nlink == 0 {
        return Err(unsupported(
            pid,
            format!(
                "{what} {} was deleted while in use; deleted files are not supported yet",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    check_path(pid, &id, what)?;
    Ok(id)
}

/// The path of `id` must still lead to the same file, or restore would open another one.
pub(crate) fn check_path(pid: i32, id: &FileId, what: &str) -> Result<()> {
    match procfs::file_id(procfs::bytes_path(&id.path), &id.path) {
        Ok(now) if now.dev == id.dev && now.ino == id.ino => Ok(()),
        _ => Err(unsupported(
            pid,
            format!(
                "{what} {} no longer exists under that path (renamed or replaced)",
                String::from_utf8_lossy(&id.path)
            ),
        )),
    }
}

/// A regular file open as descriptor `d` (`nlink` links left): a memfd or a file deleted
/// while open has its contents go into the image; any other must still be found under
/// its path.
pub(crate) fn collect_regular(d: &OpenFd, id: FileId, nlink: u64) -> Result<FdKind> {
    let (fd, flags, pos) = (d.fd, d.flags, d.pos);
    let link = &d.link;
    // memfd and deleted files: their contents go into the image.
    if let Some(name) = link.strip_prefix(b"/memfd:") {
        let name = name.strip_suffix(b" (deleted)").unwrap_or(name).to_vec();
        let seals = sys::process::memfd_seals(d.pid, fd)?;
        return Ok(FdKind::Memfd {
            name,
            flags,
            pos,
            seals,
            data: id.ino,
        });
    }
    if nlink == 0 {
        let path = link.strip_suffix(b" (deleted)").unwrap_or(link).to_vec();
        return Ok(FdKind::DeletedFile {
            file: FileId { path, ..id },
            flags,
            pos,
            data: id.ino,
        });
    }
    // (nlink > 0: deleted files were handled above)
    check_path(d.pid, &id, &format!("file descriptor {fd}:"))?;
    Ok(FdKind::File {
        file: id,
        flags,
        pos,
    })
}

/// Memfds and deleted files are kept in the image under their inode number: refuse two
/// different files (a memfd and a deleted file, or deleted files of two file systems)
/// that have the same one, rather than give them one content at restore.
pub(crate) fn check_kept_files(procs: &[Process]) -> Result<()> {
    // data id -> (file system: 0 for memfds, else the device), where first seen
    let mut seen: std::collections::BTreeMap<u64, (u64, i32)> = Default::default();
    for p in procs {
        let pid = p.pid;
        let fds = p.fds.iter().filter_map(|f| match &f.kind {
            FdKind::Memfd { data, .. } => Some((*data, 0)),
            FdKind::DeletedFile { data, file, .. } => Some((*data, file.dev.max(1))),
            _ => None,
        });
        let maps = p.vmas.iter().filter_map(|v| match &v.kind {
            VmaKind::MemfdMap { data, .. } => Some((*data, 0)),
            VmaKind::DeletedMap { data, file } => Some((*data, file.dev.max(1))),
            _ => None,
        });
        for (data, fs) in fds.chain(maps) {
            let (first, by) = *seen.entry(data).or_insert((fs, pid));
            if first != fs {
                return Err(unsupported(
                    pid,
                    format!(
                        "it and process {by} hold two different memfds or deleted files \
                         with the same inode number {data}; not supported yet"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where the contents of the memfds and deleted files of process `p` (reached as host
/// PID `hp`) are read, by their data id: a descriptor's /proc/PID/fd entry (the first
/// of those sharing its open file description), or for a file only mapped (its
/// descriptor closed) its map_files entry.
pub(crate) fn file_data_sources(p: &Process, hp: i32) -> impl Iterator<Item = (u64, String)> + '_ {
    let from_fds = p.fds.iter().filter_map(move |f| match f.kind {
        FdKind::Memfd { data, .. } | FdKind::DeletedFile { data, .. }
            if f.shared_with.is_none() =>
        {
            Some((data, format!("/proc/{hp}/fd/{}", f.fd)))
        }
        _ => None,
    });
    let from_maps = p.vmas.iter().filter_map(move |v| match v.kind {
        VmaKind::MemfdMap { data, .. } | VmaKind::DeletedMap { data, .. } => Some((
            data,
            format!("/proc/{hp}/map_files/{:x}-{:x}", v.start, v.end),
        )),
        _ => None,
    });
    from_fds.chain(from_maps)
}
