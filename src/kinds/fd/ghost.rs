//! Files deleted while open or mapped, recreated for the stage (their contents come
//! from the image), deleted again at once: nothing of them is ever left on disk.
//!
//! A recreated file is made without a name (`O_TMPFILE`) in a directory only root can
//! write, found and then used through a descriptor, never by path again: its own
//! directory if that is root's and writable by no one else (the process then sees its
//! old name, " (deleted)"), else a private directory (mode 0700, root's) made for it
//! inside that directory, on the same file system. It gets its contents, its recorded
//! owner and group, and its mode, but the set-user-ID and set-group-ID bits only where
//! the process the image restores is the file's owner (all of its user IDs, and for
//! set-group-ID the group among its groups): an image's contents are whatever the image
//! says, so they must not come back as a program that runs with someone else's
//! privileges. Images made before owners were recorded get root's file without those
//! bits. Only then is it linked under its name (exclusively: `linkat` never replaces or
//! follows anything), opened there (the descriptor the processes get reopens that one,
//! so /proc shows the old path), and unlinked again (and the private directory
//! removed), all in a child of ckpt that finishes even if ckpt is killed meanwhile
//! (`sys::transient`): the name exists for a few microseconds and never outlives them.
//! The file opened there is checked to be the one made. A file system without
//! `O_TMPFILE` gets the file created exclusively under its name and deleted at once
//! (the same way), then written through its descriptor.

use crate::error::{RestoreError, RestoreResult};
use crate::model::{Creds, FileId};
use crate::sys::transient::{self, Make};
use crate::sys::{self, pathfd, proc as procfs};
use rustix::fs::OFlags;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The mode a recreated file gets: its recorded permissions, with set-user-ID and
/// set-group-ID only where `creds` (the restored process's) own the file.
pub(crate) fn ghost_mode(file: &FileId, creds: &Creds) -> u32 {
    let mut mode = file.mode & 0o7777;
    let owner = file.owner.filter(|(u, g)| *u != u32::MAX && *g != u32::MAX);
    let owns = owner.is_some_and(|(u, _)| creds.uid.iter().all(|x| *x == u));
    let in_group =
        owner.is_some_and(|(_, g)| creds.gid.iter().all(|x| *x == g) || creds.groups.contains(&g));
    if !owns {
        mode &= !(libc::S_ISUID | libc::S_ISGID);
    } else if !in_group {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// Whether a directory is root's and writable by no one else.
fn root_only(dir: &OwnedFd) -> RestoreResult<bool> {
    let st = pathfd::ident(dir, b"")?;
    Ok(st.uid == 0 && st.mode & 0o022 == 0)
}

/// Recreate deleted file `file` (kept in the image under `data`) with `content`, for a
/// process with credentials `creds`; returns ckpt's read-write descriptor of it, already
/// deleted again (its name in /proc is the old one, or the private directory's).
pub(crate) fn make_ghost(
    file: &FileId,
    data: u64,
    creds: &Creds,
    content: &mut File,
    extents: Option<&[(u64, u64)]>,
) -> RestoreResult<File> {
    let orig = procfs::bytes_path(&file.path);
    let (Some(parent), Some(base)) = (orig.parent(), orig.file_name()) else {
        return Err(RestoreError::Malformed(format!(
            "deleted file {} has no directory",
            orig.display()
        )));
    };
    let base = base.as_bytes().to_vec();
    let dir = pathfd::open_dir(parent)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp_name = format!(".ckpt-ghost-{data}-{}-{stamp}", std::process::id()).into_bytes();
    let what = orig.display().to_string();
    let mut fill = |g: &mut File| -> RestoreResult<()> {
        super::file::write_contents(content, g, extents)
            .map_err(|e| sys::SysError::io(format!("write {what}"), e))?;
        let owner = file.owner.filter(|(u, g)| *u != u32::MAX && *g != u32::MAX);
        Ok(pathfd::set_owner_mode(g, owner, ghost_mode(file, creds))?)
    };
    // Under its old name if that is free, else next to it; in a private directory if
    // others can write this one.
    let (private, names): (Option<&[u8]>, Vec<&[u8]>) = if root_only(&dir)? {
        (None, vec![&base, &tmp_name])
    } else {
        (Some(&tmp_name), vec![&base])
    };
    match pathfd::create_unnamed(&dir, &what) {
        Ok(mut unnamed) => {
            fill(&mut unnamed)?;
            let made =
                named_for_a_moment(&dir, private, &names, Make::Unnamed(unnamed.as_fd()), &what)?;
            let (a, b) = (pathfd::ident(&made, b"")?, pathfd::ident(&unnamed, b"")?);
            if (a.dev, a.ino) != (b.dev, b.ino) {
                return Err(sys::SysError::Other(format!(
                    "open {what}: it is not the file just made"
                ))
                .into());
            }
            Ok(File::from(made))
        }
        // No O_TMPFILE on this file system: made under its name and deleted at once,
        // then written through its descriptor.
        Err(_) => {
            let mut f = File::from(named_for_a_moment(
                &dir,
                private,
                &names,
                Make::File,
                &what,
            )?);
            fill(&mut f)?;
            Ok(f)
        }
    }
}

/// The file `make` makes under the first free one of `names` in `dir` (or in a new
/// private directory `private` of it), opened read-write there and deleted again at
/// once, in a child that deletes it even if ckpt is killed (`sys::transient`).
fn named_for_a_moment(
    dir: &OwnedFd,
    private: Option<&[u8]>,
    names: &[&[u8]],
    make: Make<'_>,
    what: &str,
) -> RestoreResult<OwnedFd> {
    let mut last = None;
    for name in names {
        match transient::transient_name(dir, private, name, make, OFlags::RDWR, what) {
            Ok(fd) => {
                sys::deferred::die_point("deleted file recreated");
                return Ok(fd);
            }
            Err(e) if transient::name_taken(&e) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .unwrap_or_else(|| sys::SysError::Other(format!("no name for {what}")))
        .into())
}

#[cfg(test)]
mod tests {
    use super::ghost_mode;
    use crate::model::{Creds, FileId};

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds {
            uid: [uid; 4],
            gid: [gid; 4],
            groups: groups.to_vec(),
            ..Default::default()
        }
    }

    fn file(mode: u32, owner: Option<(u32, u32)>) -> FileId {
        FileId {
            mode: libc::S_IFREG | mode,
            owner,
            ..Default::default()
        }
    }

    #[test]
    fn setuid_and_setgid_only_for_the_owner() {
        let f = file(0o6755, Some((1000, 1000)));
        assert_eq!(ghost_mode(&f, &creds(1000, 1000, &[])), 0o6755);
        // Set-group-ID needs the group among the process's.
        assert_eq!(ghost_mode(&f, &creds(1000, 50, &[])), 0o4755);
        assert_eq!(ghost_mode(&f, &creds(1000, 50, &[1000])), 0o6755);
        // Another user (root included) gets neither.
        assert_eq!(ghost_mode(&f, &creds(1001, 1000, &[1000])), 0o755);
        assert_eq!(ghost_mode(&f, &creds(0, 0, &[])), 0o755);
        // A process whose IDs differ (a set-user-ID program running) is not the owner.
        let mut c = creds(1000, 1000, &[]);
        c.uid[1] = 0;
        assert_eq!(ghost_mode(&f, &c), 0o755);
        // An older image (no owner recorded): never.
        assert_eq!(ghost_mode(&file(0o6755, None), &creds(0, 0, &[])), 0o755);
        assert_eq!(ghost_mode(&file(0o1777, None), &creds(0, 0, &[])), 0o1777);
    }
}
