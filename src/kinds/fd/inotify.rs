//! inotify instances and their watches.

use crate::arch::native::nr;
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::fd::anon::keep_flags;
use crate::kinds::unsupported;
use crate::model::InotifyWatch;
use crate::remote::{Ctx, STUB_CODE, STUB_SIZE};
use crate::sys;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// The watches of inotify descriptor `fd`, each resolved to a path through its file
/// handle (and checked to lead to the watched inode). An instance with events queued
/// is refused: they cannot be put back.
pub(crate) fn inotify_watches(pid: i32, fd: i32, info: &str) -> DumpResult<Vec<InotifyWatch>> {
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
        // A watch on a file deleted while a descriptor of this process holds it open: set
        // again on the recreated file, if nothing restore does to that file after the
        // watch is set (opening it for the other descriptors, closing its own at the
        // end) is an event the watch reports.
        if let Some(path) = deleted_file_of(pid, major, minor, w.ino) {
            const SEEN: u32 = libc::IN_OPEN | libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE;
            if w.mask & SEEN != 0 {
                return Err(refuse(format!(
                    "whose watch {} on {} (deleted) reports opens or closes (mask {:#x}), \
                     which restore makes of the file it recreates after setting the watch",
                    w.wd,
                    String::from_utf8_lossy(&path),
                    w.mask
                )));
            }
            out.push(InotifyWatch {
                wd: w.wd,
                mask: w.mask,
                path,
                ino: w.ino,
                deleted: Some(w.ino),
            });
            continue;
        }
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
                     leads to it (the watched file was deleted, or is no longer where its \
                     handle names it); restore sets watches by path",
                    w.wd, w.ino
                ))
            })?;
        out.push(InotifyWatch {
            wd: w.wd,
            mask: w.mask,
            path,
            ino: w.ino,
            deleted: None,
        });
    }
    out.sort_by_key(|w| w.wd);
    Ok(out)
}

/// The name (without " (deleted)") of the file deleted while open that a descriptor of
/// process `pid` holds with inode `ino` on device `major:minor`, if there is one: its
/// contents are in the image (`DeletedFile`, kept under its inode number).
fn deleted_file_of(pid: i32, major: u32, minor: u32, ino: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    procfs::fds(pid).ok()?.into_iter().find_map(|n| {
        let at = format!("/proc/{pid}/fd/{n}");
        let link = procfs::readlink(&at).ok()?;
        let name = link.strip_suffix(b" (deleted)")?;
        let m = std::fs::metadata(&at).ok()?;
        (m.is_file()
            && m.nlink() == 0
            && m.ino() == ino
            && libc::major(m.dev()) == major
            && libc::minor(m.dev()) == minor
            && name.starts_with(b"/"))
        .then(|| name.to_vec())
    })
}

// ---- checks (plan) ----

/// Watches in increasing wd order, with sane paths, not too many.
pub(crate) fn check_watches(
    watches: &[InotifyWatch],
    fd: i32,
    pid: i32,
    problems: &mut Vec<Problem>,
) {
    if watches.len() > MAX_WATCHES
        || watches.first().is_some_and(|w| w.wd < 1)
        || watches.windows(2).any(|w| w[0].wd >= w[1].wd)
        || watches
            .iter()
            .any(|w| w.path.is_empty() || w.path.len() > 4096)
    {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {} of process {} has invalid inotify watches",
                fd, pid
            ),
        );
    }
}

/// A watch on a deleted file names the contents of a deleted file descriptor of the
/// image (restore sets it on that file's recreated copy).
pub(crate) fn check_deleted_watches(
    watches: &[InotifyWatch],
    fd: i32,
    pid: i32,
    procs: &[crate::model::Process],
    problems: &mut Vec<Problem>,
) {
    use crate::model::FdKind;
    let kept = |data: u64| {
        procs
            .iter()
            .flat_map(|p| &p.fds)
            .any(|f| matches!(&f.kind, FdKind::DeletedFile { data: d, .. } if *d == data))
    };
    if watches
        .iter()
        .filter_map(|w| w.deleted)
        .any(|data| !kept(data))
    {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {fd} of process {pid} has an inotify watch on a deleted file the \
                 image does not keep"
            ),
        );
    }
}

/// Every watched path exists.
pub(crate) fn check_paths(watches: &[InotifyWatch], fd: i32, problems: &mut Vec<Problem>) {
    for w in watches.iter().filter(|w| w.deleted.is_none()) {
        if std::fs::symlink_metadata(procfs::bytes_path(&w.path)).is_err() {
            check::p(
                problems,
                "file-missing",
                format!(
                    "file descriptor {}: inotify watch {} on {}: it does not exist",
                    fd,
                    w.wd,
                    check::show(&w.path)
                ),
            );
        }
    }
}

/// What `inspect` says of an inotify instance.
pub(crate) fn describe(watches: &[InotifyWatch]) -> String {
    format!(
        "inotify watching {}",
        watches
            .iter()
            .map(|w| format!(
                "{} ({:#x}) as wd {}",
                String::from_utf8_lossy(&w.path),
                w.mask,
                w.wd
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

// ---- restore (stage) ----

/// Most inotify watches per instance accepted (restore may skip wd numbers up to it).
pub(crate) const MAX_WATCHES: usize = 1 << 14;

/// Add the watches of an inotify instance in wd order, so that each gets its old number.
/// The kernel hands out numbers cyclically: a number that was free at dump (a watch
/// removed before) is skipped by adding the watch and removing it again, and the
/// IN_IGNORED events this queues are read back; anything else in the queue by then is
/// an error rather than an event silently lost.
fn add_inotify_watches(
    cx: &mut Ctx<'_>,
    n: u64,
    watches: &[crate::model::InotifyWatch],
    deleted: &mut dyn FnMut(&mut Ctx<'_>, u64) -> RestoreResult<u64>,
) -> RestoreResult<()> {
    let mut skipped = Vec::new();
    for w in watches {
        // A deleted file's watch goes on its recreated copy, through a descriptor of it
        // in the stub (`/proc/self/fd/T`, a link to follow), closed again after.
        let taken = match w.deleted {
            Some(data) => Some(deleted(cx, data)?),
            None => None,
        };
        let (path, follow) = match taken {
            Some(t) => (format!("/proc/self/fd/{t}").into_bytes(), 0),
            None => (w.path.clone(), libc::IN_DONT_FOLLOW),
        };
        let a = cx.put_cstr(0, &path)?;
        let what = format!(
            "inotify_add_watch({}) for wd {}",
            String::from_utf8_lossy(&w.path),
            w.wd
        );
        loop {
            let got = cx.call(
                &what,
                nr::INOTIFY_ADD_WATCH,
                [n, a, u64::from(w.mask | follow), 0, 0, 0],
            )? as i32;
            if got == w.wd {
                break;
            }
            if got > w.wd || skipped.len() >= MAX_WATCHES {
                return Err(RestoreError::Stage(format!(
                    "inotify watch on {} got number {got}, not {} as at dump",
                    String::from_utf8_lossy(&w.path),
                    w.wd
                )));
            }
            cx.call(
                "inotify_rm_watch",
                nr::INOTIFY_RM_WATCH,
                [n, got as u64, 0, 0, 0, 0],
            )?;
            skipped.push(got);
        }
        if let Some(t) = taken {
            // (The description is ckpt's too: this close reports nothing.)
            cx.close(t)?;
        }
    }
    if skipped.is_empty() {
        return Ok(());
    }
    let a = cx.put(0, &[0u8; 4])?;
    cx.call(
        "ioctl(FIONREAD)",
        nr::IOCTL,
        [n, libc::FIONREAD, a, 0, 0, 0],
    )?;
    let mut b = [0u8; 4];
    cx.read(a, &mut b)?;
    let len = u64::from(u32::from_le_bytes(b));
    if len as usize > (STUB_SIZE - STUB_CODE - 4096) as usize {
        return Err(RestoreError::Stage("too many inotify events queued".into()));
    }
    let buf = cx.scratch() + 4096;
    let got = cx.call("read inotify events", nr::READ, [n, buf, len, 0, 0, 0])?;
    let mut ev = vec![0u8; got as usize];
    cx.read(buf, &mut ev)?;
    // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
    let mut off = 0;
    while off + 16 <= ev.len() {
        let word =
            |i: usize| u32::from_le_bytes(ev[off + i..off + i + 4].try_into().unwrap_or_default());
        let (wd, mask, nlen) = (word(0) as i32, word(4), word(12) as usize);
        if mask & libc::IN_IGNORED == 0 || !skipped.contains(&wd) {
            return Err(RestoreError::Stage(format!(
                "inotify: an event (wd {wd}, mask {mask:#x}) arrived while its watches were \
                 being restored; try again"
            )));
        }
        off += 16 + nlen;
    }
    Ok(())
}

/// A new inotify instance with its watches (see [`add_inotify_watches`]).
/// (`deleted`: a descriptor in the stub of the recreated file kept under a `data` id.)
pub(crate) fn create_inotify(
    cx: &mut Ctx<'_>,
    flags: u32,
    watches: &[crate::model::InotifyWatch],
    deleted: &mut dyn FnMut(&mut Ctx<'_>, u64) -> RestoreResult<u64>,
) -> RestoreResult<u64> {
    let n = cx.call(
        "inotify_init1",
        nr::INOTIFY_INIT1,
        [keep_flags(flags, libc::IN_NONBLOCK), 0, 0, 0, 0, 0],
    )?;
    add_inotify_watches(cx, n, watches, deleted)?;
    Ok(n)
}
