//! Files restore needs by path (open files, mapped files, the executable, working and
//! root directories), each opened ONCE, in plan, with `O_PATH`, and checked through
//! that descriptor. Stage never opens them by path again: every descriptor, mapping,
//! exe link and directory the processes get is opened again from ckpt's descriptor
//! (taken with `pidfd_getfd`, then opened through `/proc/self/fd/N`: the same inode,
//! with a description of its own), so a file swapped under its path after the checks
//! is never the one a process gets.
//!
//! **Identity.** On the host and boot the image was made on (same boot ID), a file
//! must be the same inode (device and inode numbers), besides the same type, size and
//! modification time: a file replaced by another of the same size with a copied mtime
//! is refused. On another host or after a reboot, device numbers (and, on many file
//! systems, inode numbers) mean nothing, so only type, size and mtime (and a device's
//! number) are compared, as for images made before the boot ID was recorded.

use crate::arch::native::nr;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::model::FileId;
use crate::remote::{BatchArgs, Ctx};
use crate::sys::inject::Call;
use crate::sys::pathfd;
use crate::sys::proc::{self as procfs, FileIdent};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// One held file: ckpt's `O_PATH` descriptor and what it was when opened.
struct Held {
    fd: OwnedFd,
    now: FileIdent,
}

/// The files plan opened, by the path the image names them with.
#[derive(Default)]
pub(crate) struct HeldFiles {
    /// The image was made on this boot: device and inode numbers are compared.
    same_boot: bool,
    /// Devices of the file systems restore mounts anew (`kinds::mnt::fresh_devs`) or
    /// binds from a copy (`kinds::mnt::copied_devs`): their files are other inodes,
    /// compared as on another boot.
    pub(crate) fresh_devs: std::collections::BTreeSet<u64>,
    files: BTreeMap<Vec<u8>, Held>,
}

impl HeldFiles {
    /// For an image made on the boot `image_boot_id` (empty: not recorded).
    pub(crate) fn new(image_boot_id: &str) -> Self {
        let here = crate::sys::process::boot_id();
        pathfd::raise_own_fd_limit();
        Self {
            same_boot: !image_boot_id.is_empty() && image_boot_id == here,
            fresh_devs: Default::default(),
            files: BTreeMap::new(),
        }
    }

    /// As on the image's own boot (unit tests).
    #[cfg(test)]
    pub(crate) fn same_boot() -> Self {
        Self {
            same_boot: true,
            fresh_devs: Default::default(),
            files: BTreeMap::new(),
        }
    }

    /// The key the file of `id` is held under: its path, or for a file outside the
    /// tree's mount namespace ([`FileId::outside`]) its path after a NUL byte (which no
    /// path starts with), so that it never stands for the tree's file of that path.
    pub(crate) fn key(id: &FileId) -> Vec<u8> {
        if id.outside {
            [&b"\0"[..], &id.path].concat()
        } else {
            id.path.clone()
        }
    }

    /// The file at `path`, opened once (the first call opens it); `outside`: as ckpt's
    /// own mount namespace shows it (see [`FileId::outside`]), else as the calling
    /// thread's does (the tree's, at restore).
    fn open_once(&mut self, path: &[u8], outside: bool) -> crate::sys::Result<&FileIdent> {
        let key = if outside {
            [&b"\0"[..], path].concat()
        } else {
            path.to_vec()
        };
        if !self.files.contains_key(&key) {
            let fd = if outside {
                pathfd::open_path_own_view(procfs::bytes_path(path))?
            } else {
                pathfd::open_path(procfs::bytes_path(path))?
            };
            let now = pathfd::ident(&fd, path)?;
            self.files.insert(key.clone(), Held { fd, now });
        }
        self.files
            .get(&key)
            .map(|h| &h.now)
            .ok_or_else(|| crate::sys::SysError::io("hold", std::io::ErrorKind::NotFound.into()))
    }

    /// [`Self::open_once`], or `None` with a problem.
    fn hold(&mut self, id: &FileId, what: &str, problems: &mut Vec<Problem>) -> Option<FileIdent> {
        let path = &id.path[..];
        let outside = if id.outside {
            " (outside the tree's mount namespace)"
        } else {
            ""
        };
        match self.open_once(path, id.outside) {
            Ok(now) => Some(now.clone()),
            Err(e) => {
                check::p(
                    problems,
                    "file-missing",
                    format!(
                        "{what} {}{outside} is not available: {e}",
                        check::show(path)
                    ),
                );
                None
            }
        }
    }

    /// The same inode as at the dump, where inode numbers can be compared.
    fn same_inode(
        &self,
        id: &FileId,
        now: &FileIdent,
        what: &str,
        problems: &mut Vec<Problem>,
    ) -> bool {
        if !self.same_boot
            || self.fresh_devs.contains(&id.dev)
            || (now.dev == id.dev && now.ino == id.ino)
        {
            return true;
        }
        check::p(
            problems,
            "file-changed",
            format!(
                "{what} {} has changed since the dump: it is another file now (inode {} -> {})",
                check::show(&id.path),
                id.ino,
                now.ino
            ),
        );
        false
    }

    /// The file of `id` is there and is the one the image recorded (see the module's
    /// documentation).
    pub(crate) fn check_file(&mut self, id: &FileId, what: &str, problems: &mut Vec<Problem>) {
        let Some(now) = self.hold(id, what, problems) else {
            return;
        };
        let fmt = id.mode & libc::S_IFMT;
        if now.mode & libc::S_IFMT != fmt {
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
        if !self.same_inode(id, &now, what, problems) {
            return;
        }
        if fmt == libc::S_IFREG
            && (now.size != id.size
                || now.mtime_sec != id.mtime_sec
                || now.mtime_nsec != id.mtime_nsec)
        {
            check::p(
                problems,
                "file-changed",
                format!(
                    "{what} {} has changed since the dump (size {} -> {}, modified {} -> {})",
                    check::show(&id.path),
                    id.size,
                    now.size,
                    id.mtime_sec,
                    now.mtime_sec
                ),
            );
        }
        if (fmt == libc::S_IFCHR || fmt == libc::S_IFBLK) && now.rdev != id.rdev {
            check::p(
                problems,
                "file-changed",
                format!("{what} {} is now another device", check::show(&id.path)),
            );
        }
    }

    /// A file the process only writes: it may have grown, but must be the same regular
    /// file, and a non-append writer's offset must not lie beyond its end.
    pub(crate) fn check_output(
        &mut self,
        id: &FileId,
        flags: u32,
        pos: u64,
        what: &str,
        problems: &mut Vec<Problem>,
    ) {
        let Some(now) = self.hold(id, what, problems) else {
            return;
        };
        if now.mode & libc::S_IFMT != libc::S_IFREG {
            check::p(
                problems,
                "file-changed",
                format!(
                    "{what} {} is no longer a regular file",
                    check::show(&id.path)
                ),
            );
        } else if !self.same_inode(id, &now, what, problems) {
        } else if flags as i32 & libc::O_APPEND == 0 && now.size < pos {
            check::p(
                problems,
                "file-changed",
                format!(
                    "{what} {} was truncated to {} bytes since the dump; the process would \
                     write at offset {pos}",
                    check::show(&id.path),
                    now.size
                ),
            );
        }
    }

    /// A directory (working or root directory, recorded by path only) is there.
    pub(crate) fn check_dir(&mut self, path: &[u8], what: &str, problems: &mut Vec<Problem>) {
        let is_dir = self
            .open_once(path, false)
            .is_ok_and(|now| now.mode & libc::S_IFMT == libc::S_IFDIR);
        if !is_dir {
            check::p(
                problems,
                "file-missing",
                format!("{what} {} does not exist", check::show(path)),
            );
        }
    }

    /// The held file of `id` opened again read-only (a description of its own), if it
    /// is a regular file.
    pub(crate) fn reopen_regular(&self, id: &FileId) -> Option<std::fs::File> {
        let h = self.files.get(&Self::key(id))?;
        if h.now.mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        std::fs::File::open(format!("/proc/self/fd/{}", h.fd.as_raw_fd())).ok()
    }

    /// Ckpt's descriptors of the held files, by path, and whether each is a directory
    /// (for stage).
    pub(crate) fn fds(&self) -> BTreeMap<Vec<u8>, (RawFd, bool)> {
        self.files
            .iter()
            .map(|(p, h)| {
                let dir = h.now.mode & libc::S_IFMT == libc::S_IFDIR;
                (p.clone(), (h.fd.as_raw_fd(), dir))
            })
            .collect()
    }
}

// ---- restore (stage) ----

/// Open in the stub of `cx`, for each `(path, flags)` of `wanted`, the file plan held
/// under that path (`held`: ckpt's descriptors, from [`HeldFiles::fds`]): a new
/// description of that very inode with `flags`, never a lookup of the path. Returns the
/// stub's descriptors, in order. Three batches (take ckpt's descriptors with
/// `pidfd_getfd`, open each, close the taken ones) per 64 files. A directory is opened
/// as `openat(N, ".")`, which takes any flags; another file through `/proc/self/fd/N`,
/// a link that `O_NOFOLLOW` would not follow: that flag is left out (the file is no
/// symbolic link: plan opened it following links, as the original open did).
pub(crate) fn open_held(
    cx: &mut Ctx<'_>,
    held: &BTreeMap<Vec<u8>, (RawFd, bool)>,
    wanted: &[(&[u8], i32)],
) -> RestoreResult<Vec<u64>> {
    let mut out = Vec::with_capacity(wanted.len());
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut ours = Vec::with_capacity(wanted.len());
    for (path, _) in wanted {
        let fd = held.get(*path).ok_or_else(|| {
            RestoreError::Stage(format!(
                "{} was not opened and checked in plan",
                check::show(path)
            ))
        })?;
        ours.push((fd.0 as u64, fd.1));
    }
    // (Our ID as the stub's PID namespace sees it: stage runs in the tree's namespace.)
    let (pidfd, close) = cx.pidfd_of(std::process::id() as i32)?;
    let r = open_held_with(cx, pidfd, &ours, wanted, &mut out);
    if close {
        cx.call("close", nr::CLOSE, [pidfd, 0, 0, 0, 0, 0])?;
    }
    r.map(|()| out)
}

fn open_held_with(
    cx: &mut Ctx<'_>,
    pidfd: u64,
    ours: &[(u64, bool)],
    wanted: &[(&[u8], i32)],
    out: &mut Vec<u64>,
) -> RestoreResult<()> {
    for (ours, wanted) in ours.chunks(64).zip(wanted.chunks(64)) {
        let takes: Vec<Call> = ours
            .iter()
            .zip(wanted)
            .map(|((fd, _), (path, _))| {
                Call::new(
                    format!("take the file held for {}", check::show(path)),
                    nr::PIDFD_GETFD,
                    [pidfd, *fd, 0, 0, 0, 0],
                )
            })
            .collect();
        let taken = cx.batch(&BatchArgs::new(), &takes)?;
        let mut args = BatchArgs::new();
        let mut opens = Vec::with_capacity(taken.len());
        for ((t, (path, flags)), (_, dir)) in taken.iter().zip(wanted).zip(ours) {
            let (at, name, flags) = if *dir {
                (*t, ".".to_string(), *flags)
            } else {
                let at = libc::AT_FDCWD as u64;
                (at, format!("/proc/self/fd/{t}"), *flags & !libc::O_NOFOLLOW)
            };
            let a = args.add_cstr(cx, name.as_bytes())?;
            opens.push(Call::new(
                format!("open {}", check::show(path)),
                nr::OPENAT,
                [at, a, flags as u64, 0, 0, 0],
            ));
        }
        let opened = cx.batch(&args, &opens);
        let closes: Vec<Call> = taken
            .iter()
            .map(|t| Call::new("close", nr::CLOSE, [*t, 0, 0, 0, 0, 0]))
            .collect();
        cx.batch(&BatchArgs::new(), &closes)?;
        out.extend(opened?);
    }
    Ok(())
}
