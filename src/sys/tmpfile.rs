//! The image file while it is written: created without a name (`O_TMPFILE`), mode
//! 0600 whatever the umask, and given its name only once it is complete and synced
//! (`linkat` of the descriptor). A dump killed at any moment leaves no file behind, and
//! no other user can read the memory it holds or race its name.
//!
//! Where the filesystem cannot make unnamed files (`EOPNOTSUPP`, `EISDIR` on old
//! kernels), a named temporary with a random name is created exclusively instead, and
//! removed when the dump fails.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of images and their temporaries: they hold the dumped processes' memory.
pub const IMAGE_MODE: u32 = 0o600;

/// The name side of an output file being written (the file itself is handed out
/// separately, to be written through any wrapper, and given back at commit). Dropped
/// uncommitted, it removes a named temporary; an unnamed one goes with its descriptor.
pub struct TmpFile {
    /// Where a named temporary lives (`None`: the file has no name yet).
    named: Option<PathBuf>,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// A name no one can guess, for a moment's temporary next to `dest`.
fn random_name(dest: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    let n = getrandom(&mut r);
    let tag = if n == r.len() {
        u64::from_le_bytes(r)
    } else {
        // No randomness: the time and our PID still make a name hard to predict.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ u64::from(std::process::id()).rotate_left(32)
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    dir_of(dest).join(format!(".{name}.ckpt-tmp.{tag:016x}"))
}

pub(super) fn getrandom(buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes for the call.
    let r = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(r).unwrap_or(0)
}

/// The directory `dest` goes into.
pub fn dir_of(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

impl TmpFile {
    /// Create the unnamed file in the directory of `dest`.
    pub fn create(dest: &Path) -> io::Result<(Self, File)> {
        let dir = dir_of(dest);
        let unnamed = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(IMAGE_MODE)
            .open(dir);
        let (file, named) = match unnamed {
            Ok(f) => (f, None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                let p = random_name(dest);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(IMAGE_MODE)
                    .open(&p)?;
                (f, Some(p))
            }
            Err(e) => return Err(e),
        };
        // The umask may have taken bits away: the mode is exactly 0600, not less.
        let t = Self { named };
        file.set_permissions(std::fs::Permissions::from_mode(IMAGE_MODE))?;
        Ok((t, file))
    }

    /// Give the complete file its name `dest`, replacing what was there (a file or a
    /// symlink is replaced itself, never followed), and sync it and the directory.
    /// Without `durable` neither is synced (a file that lives only as long as the
    /// program that made it, such as `ckpt migrate`'s images: nothing waits for the
    /// disk).
    pub fn commit(mut self, file: File, dest: &Path, durable: bool) -> io::Result<()> {
        if durable {
            file.sync_all()?;
        }
        match self.named.take() {
            Some(p) => std::fs::rename(&p, dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&p);
            })?,
            None => link_as(&file, dest)?,
        }
        if durable {
            if let Ok(d) = File::open(dir_of(dest)) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Link the unnamed `file` at `dest`: directly when nothing is there, else under a
/// random name renamed over it (rename replaces atomically; linkat cannot).
fn link_as(file: &File, dest: &Path) -> io::Result<()> {
    match linkat(file, dest) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let tmp = random_name(dest);
            linkat(file, &tmp)?;
            std::fs::rename(&tmp, dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
        r => r,
    }
}

fn linkat(file: &File, to: &Path) -> io::Result<()> {
    let from = cpath(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    let to = cpath(to)?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        // Not committed: a named temporary goes (an unnamed file goes with its
        // descriptor).
        if let Some(p) = &self.named {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ckpt-tmpfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create test dir");
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn unnamed_until_committed_then_0600() {
        let d = dir("commit");
        let dest = d.join("img");
        let (t, mut f) = TmpFile::create(&dest).expect("create");
        f.write_all(b"data").expect("write");
        assert!(
            names(&d).is_empty(),
            "no name before commit: {:?}",
            names(&d)
        );
        t.commit(f, &dest, true).expect("commit");
        assert_eq!(names(&d), ["img"]);
        let m = std::fs::metadata(&dest).expect("stat");
        assert_eq!(m.mode() & 0o7777, IMAGE_MODE);
        assert_eq!(std::fs::read(&dest).expect("read"), b"data");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn dropped_leaves_nothing_and_commit_replaces_a_symlink_itself() {
        let d = dir("drop");
        let dest = d.join("img");
        drop(TmpFile::create(&dest).expect("create"));
        assert!(names(&d).is_empty());
        let target = d.join("target");
        std::fs::write(&target, b"keep").expect("write target");
        std::os::unix::fs::symlink(&target, &dest).expect("symlink");
        let (t, mut f) = TmpFile::create(&dest).expect("create");
        f.write_all(b"new").expect("write");
        t.commit(f, &dest, true).expect("commit over a symlink");
        assert_eq!(std::fs::read(&target).expect("read target"), b"keep");
        assert!(
            !std::fs::symlink_metadata(&dest)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&dest).expect("read"), b"new");
        assert_eq!(names(&d), ["img", "target"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
