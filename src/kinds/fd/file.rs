//! Regular files and directories, memfds and files deleted while open (their contents
//! travel in the image).

use super::OpenFd;
pub(crate) use super::held::HeldFiles;
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult, fault_point};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::FdKind;
use crate::model::FileId;
use crate::model::{Process, VmaKind};
use crate::remote::{BatchArgs, Ctx, move_fd_calls, take_remote_fd};
use crate::sys::inject::Call;
use crate::sys::{self, proc as procfs};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// ---- collect (dump) ----

/// A file's identity as `sys::proc::file_stat` read it, for the image.
impl From<procfs::FileIdent> for FileId {
    fn from(f: procfs::FileIdent) -> Self {
        FileId {
            path: f.path,
            dev: f.dev,
            ino: f.ino,
            mode: f.mode,
            rdev: f.rdev,
            size: f.size,
            mtime_sec: f.mtime_sec,
            mtime_nsec: f.mtime_nsec,
            owner: Some((f.uid, f.gid)),
            outside: false,
        }
    }
}

pub(crate) fn file_id_checked(pid: i32, link: &str, name: &[u8], what: &str) -> DumpResult<FileId> {
    let (id, nlink) = procfs::file_stat(Path::new(link), name)?;
    let id = FileId::from(id);
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
/// (Called for files still linked somewhere: one whose /proc link says "(deleted)" was
/// unlinked under that name but is still linked under another, a hard link restore
/// cannot find.)
pub(crate) fn check_path(pid: i32, id: &FileId, what: &str) -> DumpResult<()> {
    // A process in a mount namespace of its own names files as that namespace shows
    // them (`kinds::mnt`): looked up from its root; except a file on a mount outside
    // it, which /proc names as ckpt's namespace shows it (`FileId::outside`).
    let own_mnt = sys::ns::inode(pid, "mnt").ok() != sys::ns::inode(0, "mnt").ok();
    if id.outside {
        return match procfs::file_id(procfs::bytes_path(&id.path), &id.path) {
            Ok(now) if now.dev == id.dev && now.ino == id.ino => Ok(()),
            _ => Err(unsupported(
                pid,
                format!(
                    "{what} {} is on a mount outside the process's mount namespace, and \
                     ckpt's own mount namespace does not show that file under that path \
                     (restore opens it there)",
                    String::from_utf8_lossy(&id.path)
                ),
            )),
        };
    }
    let path = if own_mnt {
        [format!("/proc/{pid}/root").as_bytes(), &id.path[..]].concat()
    } else {
        id.path.clone()
    };
    match procfs::file_id(procfs::bytes_path(&path), &id.path) {
        Ok(now) if now.dev == id.dev && now.ino == id.ino => Ok(()),
        _ if id.path.ends_with(b" (deleted)") => Err(unsupported(
            pid,
            format!(
                "{what} {} is no longer linked under that name (removed or replaced) but \
                 still is under another (a hard link), which restore cannot know: it finds \
                 files by path; not supported yet{}",
                String::from_utf8_lossy(&id.path),
                match surviving_link(id) {
                    Some(p) => format!(
                        " (in its directory it is still linked as {})",
                        String::from_utf8_lossy(&p)
                    ),
                    None => " (no other link to it is in its directory or open in the \
                             process)"
                        .into(),
                }
            ),
        )),
        _ => Err(unsupported(
            pid,
            format!(
                "{what} {} no longer exists under that path (renamed or replaced)",
                String::from_utf8_lossy(&id.path)
            ),
        )),
    }
}

/// Another name of file `id` (unlinked under its own, still linked elsewhere) in the
/// directory it was unlinked from, for a refusal that names it: the only place looked
/// at (a search of the file system would be unbounded); at most 65536 entries.
fn surviving_link(id: &FileId) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = id.path.strip_suffix(b" (deleted)")?;
    let dir = procfs::bytes_path(path).parent()?.to_path_buf();
    std::fs::read_dir(&dir)
        .ok()?
        .take(1 << 16)
        .filter_map(|e| e.ok())
        .find(|e| {
            e.metadata()
                .is_ok_and(|m| m.dev() == id.dev && m.ino() == id.ino)
        })
        .map(|e| e.path().as_os_str().as_bytes().to_vec())
}

/// Whether the file of descriptor `d` is on a mount outside its process's mount
/// namespace (a host file given to a container's process): its process is in another
/// mount namespace than ckpt, and the descriptor's mount (`mnt_id` of its fdinfo) is
/// not one of /proc/PID/mountinfo.
pub(crate) fn outside_mount_ns(d: &OpenFd) -> DumpResult<bool> {
    if sys::ns::inode(d.pid, "mnt").ok() == sys::ns::inode(0, "mnt").ok() {
        return Ok(false);
    }
    let info = procfs::fdinfo_text(d.pid, d.fd)?;
    let Some(mnt) =
        procfs::fdinfo_field(&info, "mnt_id:").and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return Ok(false);
    };
    let p = format!("/proc/{}/mountinfo", d.pid);
    let text = std::fs::read_to_string(&p)
        .map_err(|e| crate::error::SysError::io(format!("read {p}"), e))?;
    let mounts = sys::mount::parse_mountinfo(&text)
        .ok_or_else(|| unsupported(d.pid, format!("{p} cannot be parsed")))?;
    Ok(!mounts.iter().any(|m| m.id == mnt))
}

/// A regular file open as descriptor `d` (`nlink` links left): a memfd or a file deleted
/// while open has its contents go into the image; any other must still be found under
/// its path.
pub(crate) fn collect_regular(d: &OpenFd, id: FileId, nlink: u64) -> DumpResult<FdKind> {
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
            mode: Some(id.mode & 0o7777),
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
    // (nlink > 0: deleted files were handled above.) On a mount outside the process's
    // mount namespace: looked up (and checked) as ckpt's namespace shows it.
    if outside_mount_ns(d)? {
        if link.ends_with(b" (deleted)") {
            return Err(unsupported(
                d.pid,
                format!(
                    "file descriptor {fd}: {} is on a mount outside the process's mount \
                     namespace and was removed under that name; not supported yet",
                    String::from_utf8_lossy(link)
                ),
            ));
        }
        let file = FileId {
            outside: true,
            ..id
        };
        check_path(d.pid, &file, &format!("file descriptor {fd}:"))?;
        return Ok(FdKind::File {
            file,
            flags,
            pos,
            unlinked: Vec::new(),
        });
    }
    // Unlinked under the name it was opened by but still linked under another: found
    // again by that one, and given its old name for an instant at restore
    // (`alias_unlinked`).
    if let Some(old) = link.strip_suffix(b" (deleted)") {
        if let Some(other) = other_link(d.pid, &id) {
            let file = FileId { path: other, ..id };
            check_path(d.pid, &file, &format!("file descriptor {fd}:"))?;
            return Ok(FdKind::File {
                file,
                flags,
                pos,
                unlinked: old.to_vec(),
            });
        }
    }
    check_path(d.pid, &id, &format!("file descriptor {fd}:"))?;
    Ok(FdKind::File {
        file: id,
        flags,
        pos,
        unlinked: Vec::new(),
    })
}

/// Another link of file `id` (removed under the name its descriptor shows): in the
/// directory it was removed from ([`surviving_link`]), or a path a descriptor of
/// process `pid` has open. Nothing else is searched (a search of the file system would
/// be unbounded).
fn other_link(pid: i32, id: &FileId) -> Option<Vec<u8>> {
    if let Some(p) = surviving_link(id) {
        return Some(p);
    }
    let fds = procfs::fds(pid).ok()?;
    fds.into_iter().find_map(|n| {
        let l = procfs::readlink(&format!("/proc/{pid}/fd/{n}")).ok()?;
        if !l.starts_with(b"/") || l.ends_with(b" (deleted)") {
            return None;
        }
        let m = std::fs::metadata(procfs::bytes_path(&l)).ok()?;
        (m.dev() == id.dev && m.ino() == id.ino).then_some(l)
    })
}

/// A directory open as descriptor `d` (`nlink` links left). One removed while open is
/// kept with its name, owner and mode: restore makes an empty one there for an instant
/// and removes it again (`alias_unlinked`), which reads and shows the same.
pub(crate) fn collect_dir(d: &OpenFd, id: FileId, nlink: u64) -> DumpResult<FdKind> {
    if nlink == 0 {
        // Removed: it was empty (rmdir takes no other), and nothing can be made in it
        // any more; its name is what /proc shows before " (deleted)".
        let path = d.link.strip_suffix(b" (deleted)").unwrap_or(&d.link);
        if !path.starts_with(b"/") {
            return Err(unsupported(
                d.pid,
                format!(
                    "file descriptor {} is a directory that was removed while open ({}), \
                     whose name is not an absolute path",
                    d.fd,
                    String::from_utf8_lossy(&d.link)
                ),
            ));
        }
        return Ok(FdKind::Dir {
            file: FileId {
                path: path.to_vec(),
                ..id
            },
            flags: d.flags,
            removed: true,
        });
    }
    Ok(FdKind::Dir {
        file: id,
        flags: d.flags,
        removed: false,
    })
}

/// The working or root directory (`which`: "cwd" or "root") of process `pid`, as its
/// /proc link names it, and for one that was removed, its owner and mode (its name is
/// the link's text before " (deleted)"): restore makes it again for an instant, like a
/// descriptor of a removed directory ([`collect_dir`]).
pub(crate) fn collect_dir_link(pid: i32, which: &str) -> DumpResult<(Vec<u8>, Option<FileId>)> {
    let link = format!("/proc/{pid}/{which}");
    let shown = procfs::readlink(&link)?;
    let Ok((id, 0)) = procfs::file_stat(Path::new(&link), &shown) else {
        return Ok((shown, None));
    };
    let what = if which == "cwd" { "working" } else { "root" };
    let path = shown.strip_suffix(b" (deleted)").unwrap_or(&shown).to_vec();
    if !path.starts_with(b"/") || path == b"/" {
        return Err(unsupported(
            pid,
            format!(
                "its {what} directory was removed ({}), and its name is not an absolute \
                 path that restore could make it again under",
                String::from_utf8_lossy(&shown)
            ),
        ));
    }
    let file = FileId {
        path: path.clone(),
        ..FileId::from(id)
    };
    Ok((path, Some(file)))
}

/// The PID a path under /proc names, and what follows it: `/proc/N/rest` -> (N, rest).
pub(crate) fn proc_pid_path(path: &[u8]) -> Option<(i32, &[u8])> {
    let rest = path.strip_prefix(b"/proc/")?;
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let digits = rest.get(..end)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid = std::str::from_utf8(digits).ok()?.parse::<i32>().ok()?;
    Some((pid, rest.get(end..).unwrap_or_default()))
}

/// Descriptors on /proc/PID/... (ckpt's /proc: same device): restore reopens them by
/// path, which is right for a process of the tree (it has its PID again, and exists
/// before any descriptor is opened). Refused: the entry of a thread other than a main
/// one (threads are created after the descriptors), and, for a tree whose IDs are
/// those of a PID namespace not ckpt's (`renumbered`: restore makes a new one, where its
/// processes get other PIDs than ckpt's /proc shows now), the entry of any process of
/// the tree (its path names it by the PID ckpt sees, which it will not have). (An entry
/// of a process outside the tree is a file like any other: plan compares what it can of
/// it.)
pub(crate) fn check_proc_files(procs: &[Process], renumbered: bool) -> DumpResult<()> {
    let Ok(proc_dev) = std::fs::metadata("/proc").map(|m| m.dev()) else {
        return Ok(());
    };
    let tids: Vec<i32> = procs
        .iter()
        .flat_map(|p| p.threads.iter().skip(1).map(|t| t.tid))
        .collect();
    for p in procs {
        for f in &p.fds {
            let file = match &f.kind {
                FdKind::File { file, .. } | FdKind::Dir { file, .. } => file,
                _ => continue,
            };
            let Some((n, rest)) = proc_pid_path(&file.path) else {
                continue;
            };
            if file.dev != proc_dev {
                continue;
            }
            let thread =
                proc_pid_path(&[b"/proc/", rest.strip_prefix(b"/task/").unwrap_or(b"")].concat())
                    .map(|(t, _)| t)
                    .filter(|&t| t != n);
            if renumbered && procs.iter().any(|q| q.pid == n) {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "file descriptor {} is {}, the /proc entry of process {n} of the \
                         tree as ckpt's /proc numbers it; the tree runs in a PID namespace \
                         other than ckpt's, where restore gives it other PIDs as ckpt sees \
                         them, so the path would name another process; not supported",
                        f.fd,
                        String::from_utf8_lossy(&file.path)
                    ),
                ));
            }
            if tids.contains(&n) || thread.is_some() {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "file descriptor {} is {}, the /proc entry of a thread of the tree; \
                         not supported (restore creates threads after the descriptors)",
                        f.fd,
                        String::from_utf8_lossy(&file.path)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Memfds and deleted files are kept in the image under their inode number: refuse two
/// different files (a memfd and a deleted file, or deleted files of two file systems)
/// that have the same one, rather than give them one content at restore.
pub(crate) fn check_kept_files(procs: &[Process]) -> DumpResult<()> {
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
            if f.shared_with.is_none() && !f.in_flight =>
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

// ---- checks (plan) ----

/// A regular file descriptor's file: one only written may have grown, others must be
/// unchanged.
pub(crate) fn check_host(
    held: &mut HeldFiles,
    file: &FileId,
    flags: u32,
    pos: u64,
    fd: i32,
    problems: &mut Vec<Problem>,
) {
    let what = format!("file descriptor {fd}:");
    if flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
        held.check_output(file, flags, pos, &what, problems)
    } else {
        held.check_file(file, &what, problems)
    }
    if pos != 0 && pos <= i64::MAX as u64 {
        // The file plan holds, opened again for reading only if it is a regular file
        // (no side effect; never a FIFO put in its place, whose open would block).
        use std::io::Seek;
        if let Some(mut f) = held.reopen_regular(file) {
            if let Err(e) = f.seek(std::io::SeekFrom::Start(pos)) {
                check::p(
                    problems,
                    "file-position",
                    format!(
                        "file descriptor {fd}: position {pos:#x} cannot be set on {} ({e})",
                        check::show(&file.path)
                    ),
                );
            }
        }
    }
}

/// The seals memfd restore can add (F_SEAL_SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE, EXEC).
const KNOWN_SEALS: u32 = 0x3f;

/// The longest memfd name memfd_create takes (without its "memfd:" prefix).
const MFD_NAME_MAX: usize = 249;

/// Structural checks of a memfd kept in the image: a name memfd_create takes, seals
/// F_ADD_SEALS knows.
pub(crate) fn check_memfd(name: &[u8], seals: u32, what: &str, problems: &mut Vec<Problem>) {
    if name.len() > MFD_NAME_MAX || name.contains(&0) {
        check::p(
            problems,
            "malformed",
            format!(
                "{what}: memfd name {} is not one memfd_create takes",
                check::show(name)
            ),
        );
    }
    if seals & !KNOWN_SEALS != 0 {
        check::p(
            problems,
            "malformed",
            format!("{what}: unknown memfd seals {seals:#x}"),
        );
    }
}

/// Structural checks of a descriptor of a file (by path or kept in the image): a file
/// position lseek can set, and for a memfd its name and seals.
pub(crate) fn check_record(f: &crate::model::Fd, problems: &mut Vec<Problem>) {
    let what = format!("file descriptor {}", f.fd);
    let pos = match &f.kind {
        FdKind::File { pos, .. } | FdKind::DeletedFile { pos, .. } => *pos,
        FdKind::Memfd {
            pos, name, seals, ..
        } => {
            check_memfd(name, *seals, &what, problems);
            *pos
        }
        _ => return,
    };
    if pos > i64::MAX as u64 {
        check::p(
            problems,
            "malformed",
            format!("{what}: file position {pos:#x} is beyond any file"),
        );
    }
}

/// Whether lseek can set position `pos` on a file of the file system of directory `dir`
/// (each file system has its largest file size): probed on an unnamed temporary file
/// there (O_TMPFILE; a file system without it is not probed).
fn check_position_in(dir: &Path, pos: u64, what: &str, problems: &mut Vec<Problem>) {
    use std::io::Seek;
    use std::os::unix::fs::OpenOptionsExt;
    if pos == 0 || pos > i64::MAX as u64 {
        return;
    }
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .mode(0o600)
        .open(dir)
    else {
        return;
    };
    if let Err(e) = f.seek(std::io::SeekFrom::Start(pos)) {
        check::p(
            problems,
            "file-position",
            format!(
                "{what}: position {pos:#x} cannot be set on a file of {} ({e})",
                dir.display()
            ),
        );
    }
}

/// A file removed under the name it was opened by (`unlinked`) and found by another
/// link (`file.path`) gets that name back for an instant at restore: it must be an
/// absolute path in a directory that exists, and free (nothing there now).
pub(crate) fn check_unlinked_name(
    unlinked: &[u8],
    file: &FileId,
    fd: i32,
    problems: &mut Vec<Problem>,
) {
    let path = procfs::bytes_path(unlinked);
    let dir_ok = path.parent().is_some_and(|d| d.is_absolute() && d.is_dir());
    if !dir_ok || path.file_name().is_none() || unlinked.contains(&0) {
        check::p(
            problems,
            "file-missing",
            format!(
                "file descriptor {fd}: the directory of {}, the name it was opened by, does \
                 not exist",
                check::show(unlinked)
            ),
        );
    } else if std::fs::symlink_metadata(path).is_ok() {
        check::p(
            problems,
            "file-changed",
            format!(
                "file descriptor {fd}: {} (opened as {}, removed since) cannot be shown \
                 under that name again: {} exists now",
                check::show(&file.path),
                check::show(unlinked),
                check::show(unlinked)
            ),
        );
    }
}

/// A directory or FIFO (`what`) removed while open (or a working or root directory
/// removed) is made again under its name for an instant: its parent must exist and the
/// name be free (nothing there now). `holder` names what has it ("file descriptor 3").
pub(crate) fn check_removed_name(
    file: &FileId,
    what: &str,
    holder: &str,
    problems: &mut Vec<Problem>,
) {
    let path = procfs::bytes_path(&file.path);
    let dir_ok = path.parent().is_some_and(|d| d.is_absolute() && d.is_dir());
    if !dir_ok || path.file_name().is_none() || file.path.contains(&0) {
        check::p(
            problems,
            "file-missing",
            format!(
                "{holder}: the directory that held removed {what} {} does not exist (a \
                 removed directory is made again in its parent, which must be there)",
                check::show(&file.path)
            ),
        );
    } else if std::fs::symlink_metadata(path).is_ok() {
        check::p(
            problems,
            "file-changed",
            format!(
                "{holder}: {what} {} (removed while in use) cannot be made again for an \
                 instant under its name: {} exists now",
                check::show(&file.path),
                check::show(&file.path)
            ),
        );
    }
}

/// The key a file descriptor's file is held under in stage: its path, or for one given
/// its removed name back, that name as /proc shows it (" (deleted)").
pub(crate) fn held_key(path: &[u8], unlinked: &[u8]) -> Vec<u8> {
    if unlinked.is_empty() {
        path.to_vec()
    } else {
        [unlinked, b" (deleted)"].concat()
    }
}

/// For each directory and FIFO of `procs` removed while open (descriptors, working and
/// root directories), the one [`remade`] makes, and
/// for each file descriptor of `procs` opened by a name removed since (`unlinked`),
/// ckpt's descriptor of the file under that name: the file plan held (by its other
/// link, in `held`) is linked under its old name (exclusively), held there (checked to
/// be the same file) and the name removed again at once, so every descriptor opened
/// from it shows "NAME (deleted)" as the original did. Added to `held` under
/// [`held_key`]; the returned descriptors must outlive its use. The name exists for
/// the microseconds between link and unlink.
pub(crate) fn alias_unlinked(
    procs: &[Process],
    held: &mut BTreeMap<Vec<u8>, (std::os::fd::RawFd, bool)>,
) -> RestoreResult<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    // Working and root directories removed.
    for file in procs
        .iter()
        .flat_map(|p| [&p.cwd_removed, &p.root_removed])
        .flatten()
    {
        let key = held_key(&file.path, &file.path);
        if let std::collections::btree_map::Entry::Vacant(e) = held.entry(key) {
            let d = remade(file, true)?;
            e.insert((d.as_raw_fd(), true));
            out.push(d);
        }
    }
    for f in procs.iter().flat_map(|p| &p.fds) {
        if let FdKind::Dir {
            file,
            removed: true,
            ..
        } = &f.kind
        {
            let key = held_key(&file.path, &file.path);
            if let std::collections::btree_map::Entry::Vacant(e) = held.entry(key) {
                let d = remade(file, true)?;
                e.insert((d.as_raw_fd(), true));
                out.push(d);
            }
            continue;
        }
        if let FdKind::Fifo {
            file,
            removed: true,
            ..
        } = &f.kind
        {
            let key = held_key(&file.path, &file.path);
            if let std::collections::btree_map::Entry::Vacant(e) = held.entry(key) {
                let d = remade(file, false)?;
                e.insert((d.as_raw_fd(), false));
                out.push(d);
            }
            continue;
        }
        let FdKind::File { file, unlinked, .. } = &f.kind else {
            continue;
        };
        let key = held_key(&file.path, unlinked);
        if unlinked.is_empty() || held.contains_key(&key) {
            continue;
        }
        let &(raw, _) = held.get(&file.path).ok_or_else(|| {
            RestoreError::Stage(format!(
                "{} was not opened and checked in plan",
                check::show(&file.path)
            ))
        })?;
        let path = procfs::bytes_path(unlinked);
        let (Some(parent), Some(base)) = (path.parent(), path.file_name()) else {
            return Err(RestoreError::Malformed(format!(
                "{} has no directory",
                check::show(unlinked)
            )));
        };
        let what = check::show(unlinked);
        fault_point("link a removed name again")?;
        let dir = sys::pathfd::open_dir(parent)?;
        let base = base.as_bytes();
        // Linked, held and removed again by a child that removes it even if ckpt is
        // killed meanwhile (`sys::transient`).
        let alias = sys::transient::transient_name(
            &dir,
            None,
            base,
            sys::transient::Make::Held(raw),
            rustix::fs::OFlags::PATH,
            &what,
        );
        sys::deferred::die_point("removed name linked again");
        let alias = alias?;
        sys::pathfd::check_same_held(&alias, raw, &what)?;
        held.insert(key, (alias.as_raw_fd(), false));
        out.push(alias);
    }
    Ok(out)
}

/// Directory (`dir`) or FIFO `file`, removed while open, made again: an empty
/// directory or a FIFO under its name (exclusively, 0700 or 0600), held (`O_PATH`) and
/// removed again at once by a child that removes it even if ckpt is killed meanwhile
/// (`sys::transient`), then given its recorded owner and mode through the descriptor;
/// it exists for the microseconds in between.
fn remade(file: &FileId, dir: bool) -> RestoreResult<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = procfs::bytes_path(&file.path);
    let (Some(parent), Some(base)) = (path.parent(), path.file_name()) else {
        return Err(RestoreError::Malformed(format!(
            "removed {} has no parent",
            check::show(&file.path)
        )));
    };
    let what = check::show(&file.path);
    fault_point(if dir {
        "make a removed directory again"
    } else {
        "make a removed FIFO again"
    })?;
    let at = sys::pathfd::open_dir(parent)?;
    let base = base.as_bytes();
    let (make, oflags) = if dir {
        (
            sys::transient::Make::Dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        )
    } else {
        (sys::transient::Make::Fifo, rustix::fs::OFlags::PATH)
    };
    let d = sys::transient::transient_name(&at, None, base, make, oflags, &what);
    sys::deferred::die_point("removed directory or FIFO made again");
    let d = d?;
    sys::pathfd::check_private(&d, dir, &what)?;
    let owner = file.owner.filter(|(u, g)| *u != u32::MAX && *g != u32::MAX);
    sys::pathfd::set_owner_mode_held(&d, owner, file.mode & 0o7777)?;
    Ok(d)
}

/// A deleted file is recreated in its directory, which must exist, and its position
/// must be one a file there can have.
pub(crate) fn check_deleted_at(file: &FileId, fd: i32, pos: u64, problems: &mut Vec<Problem>) {
    check_deleted(file, fd, problems);
    if let Some(dir) = procfs::bytes_path(&file.path).parent() {
        check_position_in(dir, pos, &format!("file descriptor {fd}"), problems);
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

/// A descriptor on /proc/PID/... of a process of the image (`pids`): its file exists
/// once restore has made that process, and is a new inode then; nothing to compare
/// now. In a new PID namespace the process has another PID as ckpt sees it: refused.
pub(crate) fn check_proc_file(
    file: &FileId,
    fd: i32,
    pids: &BTreeSet<i32>,
    new_pidns: bool,
    problems: &mut Vec<Problem>,
) -> bool {
    let Some((n, _)) = proc_pid_path(&file.path) else {
        return false;
    };
    if !pids.contains(&n) {
        return false;
    }
    if new_pidns {
        check::p(
            problems,
            "unsupported",
            format!(
                "file descriptor {fd}: {} names process {n} of the image by its PID, which \
                 it will not have in /proc in a new PID namespace",
                check::show(&file.path)
            ),
        );
    }
    true
}

/// Compare a file's identity now with the image's record of it (the file is opened
/// once and held for stage, see [`HeldFiles`]).
pub(crate) fn check_file(
    held: &mut HeldFiles,
    id: &FileId,
    what: &str,
    problems: &mut Vec<Problem>,
) {
    held.check_file(id, what, problems)
}

/// What `inspect` says of a regular file descriptor.
pub(crate) fn describe_file(file: &FileId, flags: u32, pos: u64, unlinked: &[u8]) -> String {
    let also = if unlinked.is_empty() {
        String::new()
    } else {
        format!(
            " (opened as {}, removed since)",
            String::from_utf8_lossy(unlinked)
        )
    };
    format!(
        "file {}{also} flags {:#o} offset {}",
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

// ---- restore (stage) ----

/// Contents of deleted files and memfds, by their `data` id.
#[derive(Default)]
pub(crate) struct FileData {
    pub(crate) files: BTreeMap<u64, std::fs::File>,
    pub(crate) bytes: u64,
    /// The `data` ids the image has contents for (also when they are not kept).
    pub(crate) ids: std::collections::BTreeSet<u64>,
    /// The size of each file's contents, by `data` id.
    pub(crate) sizes: BTreeMap<u64, u64>,
    /// Where each file with holes has data (`FILE_EXTENTS`), by `data` id.
    pub(crate) extents: BTreeMap<u64, Vec<(u64, u64)>>,
    /// The files recreated so far, by `data` id: ckpt holds each open until every
    /// process has its own descriptors and mappings of it (see [`kept_file_fd`]).
    made: BTreeMap<u64, std::fs::File>,
    /// Ckpt's descriptors of the files plan opened and checked, by path (see
    /// [`super::held`]): what stage gives the processes.
    pub(crate) held: BTreeMap<Vec<u8>, (std::os::fd::RawFd, bool)>,
    /// The permission bits of the memfds whose descriptors recorded them, by `data` id
    /// (see [`memfd_modes`]): given to each when it is recreated, whichever of its
    /// descriptors or mappings comes first.
    pub(crate) memfd_modes: BTreeMap<u64, u32>,
}

/// The permission bits each memfd of the image had at dump, by `data` id (from its
/// descriptors: a memfd only mapped keeps the mode memfd_create gives). Never the
/// setuid and setgid bits.
pub(crate) fn memfd_modes(procs: &[Process]) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    for p in procs {
        for f in &p.fds {
            if let FdKind::Memfd {
                data,
                mode: Some(m),
                ..
            } = f.kind
            {
                out.entry(data)
                    .or_insert(m & 0o7777 & !(libc::S_ISUID | libc::S_ISGID));
            }
        }
    }
    out
}

/// Every memfd and deleted file the live processes open or map has its contents in the
/// image (`got`: the ids of the FILE_DATA records read). Checked by `check` and by stage
/// before anything is recreated.
pub(crate) fn check_file_data(procs: &[Process], got: &FileData) -> RestoreResult<()> {
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        let fds = p.fds.iter().filter_map(|f| match &f.kind {
            FdKind::Memfd { data, .. } | FdKind::DeletedFile { data, .. } => {
                Some((*data, format!("file descriptor {}", f.fd)))
            }
            _ => None,
        });
        let maps = p.vmas.iter().filter_map(|v| match &v.kind {
            VmaKind::MemfdMap { data, .. } | VmaKind::DeletedMap { data, .. } => {
                Some((*data, format!("memory area {:#x}-{:#x}", v.start, v.end)))
            }
            _ => None,
        });
        for (data, what) in fds.chain(maps) {
            if !got.ids.contains(&data) {
                return Err(RestoreError::Malformed(format!(
                    "process {} {what}: the contents of its file ({data}) are missing",
                    p.pid
                )));
            }
        }
    }
    Ok(())
}

/// The data extents of a `FILE_EXTENTS` record: (offset, length) pairs in order, not
/// overlapping, none empty, inside the file's contents (`size`: None if they came
/// first).
pub(crate) fn parse_extents(b: &[u8], size: Option<u64>) -> Result<Vec<(u64, u64)>, String> {
    let size = size.ok_or("data extents before its contents")?;
    if b.len() % 16 != 0 {
        return Err(format!("data extents of {} bytes", b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / 16);
    let mut end = 0u64;
    for c in b.chunks_exact(16) {
        let mut o = [0u8; 8];
        let mut l = [0u8; 8];
        o.copy_from_slice(&c[..8]);
        l.copy_from_slice(&c[8..]);
        let (o, l) = (u64::from_le_bytes(o), u64::from_le_bytes(l));
        let e = o.checked_add(l).ok_or("a data extent past 2^64")?;
        if l == 0 || o < end || e > size {
            return Err(format!(
                "data extent {o}+{l} is empty, out of order or past the end ({size})"
            ));
        }
        out.push((o, l));
        end = e;
    }
    Ok(out)
}

/// Write a kept file's contents (`content`, from its start) into the new file `to`:
/// only its data extents when it had holes, then its size.
pub(crate) fn write_contents(
    content: &mut std::fs::File,
    to: &mut std::fs::File,
    extents: Option<&[(u64, u64)]>,
) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(extents) = extents else {
        return std::io::copy(content, to).map(|_| ());
    };
    let size = content.metadata()?.len();
    for &(o, l) in extents {
        content.seek(SeekFrom::Start(o))?;
        to.seek(SeekFrom::Start(o))?;
        let n = std::io::copy(&mut content.by_ref().take(l), to)?;
        if n != l {
            return Err(std::io::Error::other(
                "file contents shorter than an extent",
            ));
        }
    }
    to.set_len(size)
}

/// What a file kept in the image (contents in `FILE_DATA`) is, to recreate it.
#[derive(Clone, Copy)]
pub(crate) enum Kept<'a> {
    Memfd { name: &'a [u8], seals: u32 },
    Deleted { file: &'a crate::model::FileId },
}

/// Recreate the file kept under `data` (once for the image), held by ckpt.
/// (`creds`: those of the process that has it first, for a deleted file's mode.)
fn recreate_file(
    data: u64,
    how: Kept<'_>,
    creds: &crate::model::Creds,
    files: &mut FileData,
) -> RestoreResult<()> {
    use std::io::Seek;
    if files.made.contains_key(&data) {
        return Ok(());
    }
    let mut content = files.files.remove(&data).ok_or_else(|| {
        RestoreError::Malformed(format!("the contents of file {data} are missing"))
    })?;
    content
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| sys::SysError::io("rewind file contents", e))?;
    let made = match how {
        Kept::Memfd { name, seals } => {
            fault_point("recreate memfd")?;
            let sealing = seals != libc::F_SEAL_SEAL as u32;
            let mut m = sys::process::memfd_named(name, sealing)?;
            write_contents(
                &mut content,
                &mut m,
                files.extents.get(&data).map(|v| &v[..]),
            )
            .map_err(|e| sys::SysError::io("write memfd contents", e))?;
            // (before the seals: F_SEAL_EXEC forbids changing the execute bits)
            if let Some(&mode) = files.memfd_modes.get(&data) {
                sys::process::set_mode(&m, mode, "a recreated memfd")?;
            }
            if sealing && seals != 0 {
                sys::process::add_seals(&m, seals)?;
            }
            m
        }
        Kept::Deleted { file } => {
            fault_point("recreate deleted file")?;
            // Made in a directory only root can write, and already deleted again
            // (see `ghost`).
            let extents = files.extents.get(&data).map(|v| &v[..]);
            super::ghost::make_ghost(file, data, creds, &mut content, extents)?
        }
    };
    files.made.insert(data, made);
    Ok(())
}

/// A new descriptor in the stub (close-on-exec) of the file kept under `data`, opened
/// with `oflags` (recreated first if this is its first use in the image). The stub
/// takes ckpt's descriptor with `pidfd_getfd` (which names ckpt in the stub's own PID
/// namespace, also when that is the tree's new one) and opens the file again through
/// `/proc/self/fd`, for a description of its own with its own flags.
pub(crate) fn kept_file_fd(
    cx: &mut Ctx<'_>,
    data: u64,
    how: Kept<'_>,
    oflags: i32,
    files: &mut FileData,
) -> RestoreResult<u64> {
    use std::os::fd::AsRawFd;
    recreate_file(data, how, &cx.proc_.creds, files)?;
    let held = files
        .made
        .get(&data)
        .ok_or_else(|| RestoreError::Stage(format!("file {data} was not recreated")))?;
    let held = held.as_raw_fd() as u64;
    let me = std::process::id() as i32;
    let t = take_remote_fd(cx, me, held, "take a recreated file")?;
    let n = cx.open(
        format!("/proc/self/fd/{t}").as_bytes(),
        oflags | libc::O_CLOEXEC,
    );
    cx.close(t)?;
    n
}

/// A descriptor in the stub of the recreated deleted file kept under `data` (made now
/// if this is its first use), sharing ckpt's open file description (`pidfd_getfd`: no
/// open, and its close reports nothing while ckpt holds the file): for a watch set on it
/// through `/proc/self/fd`. The file's record is that of a `DeletedFile` descriptor of
/// the image with those contents.
pub(crate) fn kept_deleted_shared(
    cx: &mut Ctx<'_>,
    ckpt: &crate::model::Checkpoint,
    data: u64,
    files: &mut FileData,
) -> RestoreResult<u64> {
    use std::os::fd::AsRawFd;
    let file = ckpt
        .processes
        .iter()
        .flat_map(|p| &p.fds)
        .find_map(|f| match &f.kind {
            FdKind::DeletedFile { data: d, file, .. } if *d == data => Some(file),
            _ => None,
        })
        .ok_or_else(|| {
            RestoreError::Malformed(format!("no deleted file {data} for an inotify watch"))
        })?;
    recreate_file(data, Kept::Deleted { file }, &cx.proc_.creds, files)?;
    let held = files
        .made
        .get(&data)
        .ok_or_else(|| RestoreError::Stage(format!("file {data} was not recreated")))?;
    let held = held.as_raw_fd() as u64;
    let me = std::process::id() as i32;
    take_remote_fd(cx, me, held, "take a recreated file to watch it")
}

/// Make a memfd or deleted file descriptor with its contents; returns its descriptor.
pub(crate) fn make_file_fd(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    files: &mut FileData,
) -> RestoreResult<u64> {
    let (data, flags, pos, how) = match &f.kind {
        FdKind::Memfd {
            data,
            flags,
            pos,
            name,
            seals,
            ..
        } => (
            *data,
            *flags,
            *pos,
            Kept::Memfd {
                name,
                seals: *seals,
            },
        ),
        FdKind::DeletedFile {
            data,
            flags,
            pos,
            file,
        } => (*data, *flags, *pos, Kept::Deleted { file }),
        _ => return unreachable_kind(),
    };
    let oflags = (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
    let n = kept_file_fd(cx, data, how, oflags, files)?;
    if pos != 0 {
        cx.call("lseek", nr::LSEEK, [n, pos, libc::SEEK_SET as u64, 0, 0, 0])?;
    }
    Ok(n)
}

fn unreachable_kind() -> RestoreResult<u64> {
    Err(RestoreError::Stage("not a file kept in the image".into()))
}

/// Open the file or directory plan held for `path` as descriptor `f` (with its flags and, for a
/// file, its position).
pub(crate) fn open_path_fd(
    cx: &mut Ctx<'_>,
    files: &FileData,
    f: &crate::model::Fd,
    path: &[u8],
    flags: u32,
    pos: Option<u64>,
) -> RestoreResult<()> {
    let mut oflags =
        (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
    if f.cloexec {
        oflags |= libc::O_CLOEXEC;
    }
    // A /proc entry of a process of the image exists only now that restore made the
    // process (plan let it through unheld: `check_proc_file`): opened by its path.
    let n = if !files.held.contains_key(path) && proc_pid_path(path).is_some() {
        cx.open(path, oflags)?
    } else {
        super::held::open_held(cx, &files.held, &[(path, oflags)])?
            .first()
            .copied()
            .ok_or_else(|| RestoreError::Stage("no descriptor opened".into()))?
    };
    let mut calls = Vec::new();
    if let Some(pos) = pos.filter(|p| *p != 0) {
        calls.push(Call::new(
            "lseek",
            nr::LSEEK,
            [n, pos, libc::SEEK_SET as u64, 0, 0, 0],
        ));
    }
    calls.extend(move_fd_calls(n, f.fd, f.cloexec));
    cx.batch(&BatchArgs::new(), &calls)?;
    Ok(())
}
