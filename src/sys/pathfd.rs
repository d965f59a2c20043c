//! Files held by descriptor: opened once by path (`O_PATH`: no open of a device, no
//! side effect), then identified and used only through that descriptor; and files made
//! exclusively inside a directory held the same way.

use super::proc::FileIdent;
use super::{Result, SysError, rerr};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;

/// Raise this process's soft limit on descriptors to its hard limit (ckpt holds one
/// descriptor per file it restores); failure only leaves the limit as it was.
pub fn raise_own_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// `path` opened with `O_PATH` (following symbolic links, as an open by path would).
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| rerr(format!("open {}", path.display()), e))
}

/// ckpt's own root directory, held from [`hold_own_root`] on.
static OWN_ROOT: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// The environment variable naming the descriptor of ckpt's own root a restore that
/// executes itself again (from inside the tree's mount namespace) hands to its new
/// image ([`own_root_for_exec`]).
pub const OWN_ROOT_ENV: &str = "CKPT_OWN_ROOT_FD";

/// Hold ckpt's root directory as its own mount namespace shows it (called before ckpt
/// enters a tree's mount namespace), for [`open_path_own_view`]: the one a previous
/// image of this restore handed over ([`OWN_ROOT_ENV`]), else "/".
pub fn hold_own_root() {
    if OWN_ROOT.get().is_some() {
        return;
    }
    if let Some(fd) = std::env::var(OWN_ROOT_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|fd| *fd > 2)
    {
        // SAFETY: only checks whether `fd` is open, as a directory.
        let st = rustix::fs::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        if st.is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
            use std::os::fd::FromRawFd;
            // SAFETY: the descriptor our previous image left open for us across the
            // execution (named by our own variable, checked open above); nothing else
            // in this process owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
            let _ = OWN_ROOT.set(owned);
            return;
        }
    }
    if let Ok(fd) = open_dir(Path::new("/")) {
        let _ = OWN_ROOT.set(fd);
    }
}

/// A copy of the held root (see [`hold_own_root`]) that survives an execution (no
/// close-on-exec), for the new image; None when none is held.
pub fn own_root_for_exec() -> Option<RawFd> {
    use std::os::fd::IntoRawFd;
    let fd = rustix::io::dup(OWN_ROOT.get()?).ok()?;
    Some(fd.into_raw_fd())
}

/// Write `data` to the file at absolute `path` (created or truncated, mode 0644) as
/// ckpt's own mount namespace shows it, whatever mount namespace ckpt is in now (see
/// [`hold_own_root`]; by path when none was held).
pub fn write_own_view(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o644);
    let fd = match OWN_ROOT.get() {
        Some(root) => {
            rustix::fs::openat2(root, path, flags, mode, rustix::fs::ResolveFlags::IN_ROOT)
        }
        None => rustix::fs::open(path, flags, mode),
    }
    .map_err(|e| rerr(format!("open {}", path.display()), e))?;
    File::from(fd)
        .write_all(data)
        .map_err(|e| super::SysError::io(format!("write {}", path.display()), e))
}

/// `path` opened with `O_PATH` as ckpt's own mount namespace shows it, whatever mount
/// namespace the calling thread is in now: looked up below the root [`hold_own_root`]
/// held (absolute symbolic links and ".." stay below it); by path when none was held.
pub fn open_path_own_view(path: &Path) -> Result<OwnedFd> {
    let Some(root) = OWN_ROOT.get() else {
        return open_path(path);
    };
    rustix::fs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::IN_ROOT,
    )
    .map_err(|e| {
        rerr(
            format!("open {} (ckpt's own mount namespace)", path.display()),
            e,
        )
    })
}

/// The identity of the file behind `fd` (`name`: the path it is recorded under).
pub fn ident(fd: impl AsFd, name: &[u8]) -> Result<FileIdent> {
    let st = rustix::fs::fstat(fd).map_err(|e| rerr("fstat", e))?;
    Ok(FileIdent {
        path: name.to_vec(),
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as i64,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

/// The directory at `path`, held (`O_PATH | O_DIRECTORY`).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| rerr(format!("open directory {}", path.display()), e))
}

/// A new file without a name in directory `dir` (`O_TMPFILE`), read-write, mode 0600:
/// it leaves nothing behind if we die, until [`link_unnamed`] gives it a name.
pub fn create_unnamed(dir: impl AsFd, what: &str) -> Result<File> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| rerr(format!("create {what}"), e))?;
    Ok(File::from(fd))
}

/// Check that `fd` (a name just linked again: `sys::transient`) is the very file
/// ckpt's descriptor `same` is (device and inode).
pub fn check_same_held(fd: &OwnedFd, same: RawFd, what: &str) -> Result<()> {
    let a = rustix::fs::fstat(fd).map_err(|e| rerr("fstat", e))?;
    let b =
        rustix::fs::stat(format!("/proc/self/fd/{same}").as_str()).map_err(|e| rerr("stat", e))?;
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        return Err(SysError::io(
            format!("open {what}"),
            std::io::Error::other("it is not the file just linked"),
        ));
    }
    Ok(())
}

/// Check that `fd` (a directory or FIFO just made: `sys::transient`) is one: ours, of
/// that type, and no one else's to use (mode 0700 or 0600).
pub fn check_private(fd: &OwnedFd, dir: bool, what: &str) -> Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| rerr("fstat", e))?;
    let kind = if dir { libc::S_IFDIR } else { libc::S_IFIFO };
    if st.st_uid != rustix::process::geteuid().as_raw()
        || st.st_mode & libc::S_IFMT != kind
        || st.st_mode & 0o077 != 0
    {
        return Err(SysError::io(
            what.to_string(),
            std::io::Error::other("it is not the one just made"),
        ));
    }
    Ok(())
}

/// Owner, group and then mode (in this order: a change of owner may clear the
/// set-group-ID bit) of the file held by `fd` (an `O_PATH` descriptor: changed through
/// `/proc/self/fd`, which leads to that inode whatever its name is now).
pub fn set_owner_mode_held(fd: &OwnedFd, owner: Option<(u32, u32)>, mode: u32) -> Result<()> {
    use rustix::fs::{Gid, Uid};
    use std::os::fd::AsRawFd;
    let at = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Some((uid, gid)) = owner {
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        rustix::fs::chown(at.as_str(), Some(u), Some(g)).map_err(|e| rerr("chown", e))?;
    }
    rustix::fs::chmod(at.as_str(), Mode::from_raw_mode(mode & 0o7777)).map_err(|e| rerr("chmod", e))
}

/// Write `bytes` to `name` in `dir` (made or truncated, mode 0644): for a directory
/// held open whose path no longer resolves (after entering another mount namespace).
pub fn write_file_at(dir: impl AsFd, name: &[u8], bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| rerr("open a file to write", e))?;
    File::from(fd)
        .write_all(bytes)
        .map_err(|e| SysError::io("write a file", e))
}

/// Owner, group and then mode of a file made by us (in this order: a change of owner
/// clears the set-user-ID and set-group-ID bits).
pub fn set_owner_mode(f: &File, owner: Option<(u32, u32)>, mode: u32) -> Result<()> {
    use rustix::fs::{Gid, Uid};
    if let Some((uid, gid)) = owner {
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        rustix::fs::fchown(f, Some(u), Some(g)).map_err(|e| rerr("fchown", e))?;
    }
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode & 0o7777)).map_err(|e| rerr("fchmod", e))
}
