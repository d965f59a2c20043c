//! fanotify groups and their marks (on inodes, mounts and filesystems).
//!
//! Dump reads the group's flags and marks from fdinfo and finds a path for each mark:
//! an inode mark's file from its file handle (as inotify watches are found), a mount
//! mark's mount point from the process's mountinfo (by mount ID), a filesystem mark's
//! from a mount of that device. Restore makes the group in the process with the same
//! `fanotify_init` flags and event flags and adds the marks by path, in the order that
//! gives fdinfo's order back (the kernel lists a group's marks newest first).

use super::OpenFd;
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::model::{FanotifyMark, FdKind};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::proc as procfs;

/// `FAN_PRE_ACCESS` (linux/fanotify.h, Linux 6.14): a pre-content permission event.
const FAN_PRE_ACCESS: u64 = 0x0010_0000;
/// `FAN_REPORT_FD_ERROR` (linux/fanotify.h, Linux 6.13).
const FAN_REPORT_FD_ERROR: u32 = 0x0000_2000;
/// Events a listener must answer (permission events).
const PERM_EVENTS: u64 =
    libc::FAN_OPEN_PERM | libc::FAN_ACCESS_PERM | libc::FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS;
/// The `fanotify_init` flags restore knows how to make a group with again.
pub(crate) const KNOWN_INIT_FLAGS: u32 = libc::FAN_CLOEXEC
    | libc::FAN_NONBLOCK
    | libc::FAN_CLASS_CONTENT
    | libc::FAN_CLASS_PRE_CONTENT
    | libc::FAN_UNLIMITED_QUEUE
    | libc::FAN_UNLIMITED_MARKS
    | libc::FAN_ENABLE_AUDIT
    | libc::FAN_REPORT_PIDFD
    | libc::FAN_REPORT_TID
    | libc::FAN_REPORT_FID
    | libc::FAN_REPORT_DIR_FID
    | libc::FAN_REPORT_NAME
    | libc::FAN_REPORT_TARGET_FID
    | FAN_REPORT_FD_ERROR;
/// The mark flags fdinfo shows (`mflags`) that restore sets again.
pub(crate) const KNOWN_MFLAGS: u32 =
    libc::FAN_MARK_IGNORED_SURV_MODIFY | libc::FAN_MARK_EVICTABLE | libc::FAN_MARK_IGNORE;
/// Most marks per group accepted in an image.
pub(crate) const MAX_MARKS: usize = 1 << 14;

/// One mark line of a fanotify fdinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarkLine {
    /// 0 (an inode), `FAN_MARK_MOUNT` or `FAN_MARK_FILESYSTEM`.
    pub(crate) on: u32,
    pub(crate) ino: u64,
    /// The kernel's device number (major << 20 | minor), for inode and filesystem marks.
    pub(crate) sdev: u32,
    pub(crate) mnt_id: u32,
    pub(crate) mflags: u32,
    pub(crate) mask: u64,
    pub(crate) ignored_mask: u64,
    pub(crate) handle_type: i32,
    pub(crate) handle: Vec<u8>,
}

/// What a fanotify fdinfo shows: the group's init flags and event flags, and its marks
/// in the order shown. `Err` names a line that is not understood (a kind of mark this
/// code does not know, or a malformed line).
pub(crate) fn parse_fdinfo(text: &str) -> Result<(u32, u32, Vec<MarkLine>), String> {
    let mut head = None;
    let mut marks = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("fanotify ")) {
        let mut kv = std::collections::BTreeMap::new();
        for w in l.split_whitespace() {
            let (k, v) = w.split_once(':').ok_or_else(|| l.to_string())?;
            kv.insert(k, v);
        }
        let hex = |k: &str| kv.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let hex32 = |k: &str| hex(k).and_then(|v| u32::try_from(v).ok());
        if kv.contains_key("flags") {
            let f = hex32("flags").zip(hex32("event-flags"));
            head = Some(f.ok_or_else(|| l.to_string())?);
            continue;
        }
        let on = if kv.contains_key("ino") {
            0
        } else if kv.contains_key("mnt_id") {
            libc::FAN_MARK_MOUNT
        } else if kv.contains_key("sdev") && kv.len() == 4 {
            libc::FAN_MARK_FILESYSTEM
        } else {
            return Err(l.to_string());
        };
        let hb = kv.get("f_handle").copied().unwrap_or("");
        if hb.len() % 2 != 0 || hb.len() > 256 {
            return Err(l.to_string());
        }
        let handle = (0..hb.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hb[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| l.to_string())?;
        if hex("fhandle-bytes").unwrap_or(0) != handle.len() as u64 || (on == 0 && hb.is_empty()) {
            return Err(l.to_string());
        }
        let m = (|| {
            Some(MarkLine {
                on,
                ino: if on == 0 { hex("ino")? } else { 0 },
                sdev: if on == libc::FAN_MARK_MOUNT {
                    0
                } else {
                    hex32("sdev")?
                },
                mnt_id: if on == libc::FAN_MARK_MOUNT {
                    hex32("mnt_id")?
                } else {
                    0
                },
                mflags: hex32("mflags")?,
                mask: hex("mask")?,
                ignored_mask: hex("ignored_mask")?,
                handle_type: hex("fhandle-type")
                    .and_then(|t| i32::try_from(t).ok())
                    .unwrap_or(0),
                handle: handle.clone(),
            })
        })()
        .ok_or_else(|| l.to_string())?;
        marks.push(m);
    }
    let (flags, event_flags) = head.ok_or_else(|| "no \"fanotify flags:\" line".to_string())?;
    Ok((flags, event_flags, marks))
}

// ---- collect (dump) ----

/// A fanotify group, from its fdinfo text `info`. Refused: events queued and not read
/// (they cannot be queued again), marks asking for permission events (a response owed
/// for an event already read cannot be seen, nor given back), and what this code does
/// not know (flags, kinds of marks), each saying so.
pub(crate) fn collect(d: &OpenFd, info: &str) -> DumpResult<FdKind> {
    let (init_flags, event_flags, lines) = parse_fdinfo(info).map_err(|l| {
        d.not_yet(&format!(
            "a fanotify group whose fdinfo line {l:?} ckpt does not understand"
        ))
    })?;
    if init_flags & !KNOWN_INIT_FLAGS != 0 {
        return Err(d.not_yet(&format!(
            "a fanotify group made with flags {init_flags:#x}, of which {:#x} restore \
             cannot make again",
            init_flags & !KNOWN_INIT_FLAGS
        )));
    }
    let dup = sys::process::steal_fd(d.pid, d.fd)?;
    let queued = sys::process::queued_bytes(&dup)?;
    if queued != 0 {
        return Err(d.not_yet(&format!(
            "a fanotify group with {queued} bytes of events not read yet (they cannot be \
             queued again)"
        )));
    }
    // Every mark is looked at before any path is resolved: resolving one opens the
    // mount it is on, which a permission mark would block.
    for m in &lines {
        if (m.mask | m.ignored_mask) & PERM_EVENTS != 0 {
            return Err(d.not_yet(&format!(
                "a fanotify group whose mark {} asks for permission events (mask {:#x}): \
                 a response owed for an event already read cannot be seen, nor owed again \
                 after restore",
                describe_line(m),
                m.mask
            )));
        }
        if m.mflags & !KNOWN_MFLAGS != 0 {
            return Err(d.not_yet(&format!(
                "a fanotify group whose mark {} has flags {:#x} restore cannot set again",
                describe_line(m),
                m.mflags
            )));
        }
    }
    let mounts = sys::mount::mountinfo(d.pid)?;
    let mut marks = Vec::new();
    for m in &lines {
        let path = mark_path(d.pid, m, &mounts).map_err(|why| {
            d.not_yet(&format!(
                "a fanotify group whose mark {} {why}; restore sets marks by path",
                describe_line(m)
            ))
        })?;
        marks.push(FanotifyMark {
            on: m.on,
            path,
            mflags: m.mflags,
            mask: m.mask,
            ignored_mask: m.ignored_mask,
            id: match m.on {
                0 => m.ino,
                libc::FAN_MARK_MOUNT => u64::from(m.mnt_id),
                _ => u64::from(m.sdev),
            },
        });
    }
    // fdinfo lists the newest mark first: restore adds them oldest first.
    marks.reverse();
    Ok(FdKind::Fanotify {
        flags: d.flags,
        init_flags,
        event_flags,
        marks,
    })
}

/// A mark as a message names it.
fn describe_line(m: &MarkLine) -> String {
    let (major, minor) = (m.sdev >> 20, m.sdev & 0xf_ffff);
    match m.on {
        0 => format!("on inode {} of device {major}:{minor}", m.ino),
        libc::FAN_MARK_MOUNT => format!("on mount {}", m.mnt_id),
        _ => format!("on the filesystem of device {major}:{minor}"),
    }
}

/// A path that leads to what mark `m` is on, as process `pid` sees it: an inode's file
/// by its handle (checked to be that inode); a mount's mount point, or one of the
/// filesystem's (with the filesystem's root there if one has it), not covered by a
/// later mount on the same point.
fn mark_path(pid: i32, m: &MarkLine, mounts: &[sys::mount::MountLine]) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::MetadataExt;
    let (major, minor) = (m.sdev >> 20, m.sdev & 0xf_ffff);
    let uncovered = |i: usize| !mounts[i + 1..].iter().any(|o| o.point == mounts[i].point);
    match m.on {
        0 => sys::process::path_of_handle(major, minor, m.handle_type, &m.handle)
            .filter(|p| {
                std::fs::symlink_metadata(procfs::bytes_path(p)).is_ok_and(|s| {
                    s.ino() == m.ino
                        && libc::major(s.dev()) == major
                        && libc::minor(s.dev()) == minor
                })
            })
            .ok_or_else(|| {
                "has no path that leads to it (the file was deleted, or is no longer where \
                 its handle names it)"
                    .to_string()
            }),
        libc::FAN_MARK_MOUNT => {
            let i = mounts
                .iter()
                .position(|o| o.id == m.mnt_id)
                .ok_or_else(|| format!("is not in /proc/{pid}/mountinfo"))?;
            if !uncovered(i) {
                return Err(format!(
                    "is covered by another mount on {}",
                    check::show(&mounts[i].point)
                ));
            }
            Ok(mounts[i].point.clone())
        }
        _ => {
            let on_dev = |i: &usize| mounts[*i].major == major && mounts[*i].minor == minor;
            let mut idx: Vec<usize> = (0..mounts.len())
                .filter(on_dev)
                .filter(|&i| uncovered(i))
                .collect();
            idx.sort_by_key(|&i| mounts[i].root != b"/");
            idx.first()
                .map(|&i| mounts[i].point.clone())
                .ok_or_else(|| format!("has no mount in /proc/{pid}/mountinfo"))
        }
    }
}

// ---- checks (plan) ----

/// Flags restore can make the group with; marks of a known kind, with known flags,
/// sane paths, not too many.
pub(crate) fn check_record(f: &crate::model::Fd, pid: i32, problems: &mut Vec<Problem>) {
    let FdKind::Fanotify {
        init_flags, marks, ..
    } = &f.kind
    else {
        return;
    };
    let kinds = [0, libc::FAN_MARK_MOUNT, libc::FAN_MARK_FILESYSTEM];
    if init_flags & !KNOWN_INIT_FLAGS != 0
        || marks.len() > MAX_MARKS
        || marks.iter().any(|m| {
            !kinds.contains(&m.on)
                || m.mflags & !KNOWN_MFLAGS != 0
                || (m.mask | m.ignored_mask) & PERM_EVENTS != 0
                || !m.path.starts_with(b"/")
                || m.path.len() > 4096
                || m.path.contains(&0)
        })
    {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {} of process {pid} is a fanotify group with invalid flags or marks",
                f.fd
            ),
        );
    }
}

/// Every marked path exists.
pub(crate) fn check_paths(marks: &[FanotifyMark], fd: i32, problems: &mut Vec<Problem>) {
    for m in marks {
        if std::fs::symlink_metadata(procfs::bytes_path(&m.path)).is_err() {
            check::p(
                problems,
                "file-missing",
                format!(
                    "file descriptor {fd}: fanotify mark on {}: it does not exist",
                    check::show(&m.path)
                ),
            );
        }
    }
}

/// What `inspect` says of a fanotify group.
pub(crate) fn describe(init_flags: u32, marks: &[FanotifyMark]) -> String {
    format!(
        "fanotify group (flags {init_flags:#x}) marking {}",
        marks
            .iter()
            .map(|m| format!(
                "{} {} ({:#x}{})",
                match m.on {
                    0 => "file",
                    libc::FAN_MARK_MOUNT => "mount",
                    _ => "filesystem of",
                },
                String::from_utf8_lossy(&m.path),
                m.mask,
                if m.ignored_mask != 0 {
                    format!(", ignoring {:#x}", m.ignored_mask)
                } else {
                    String::new()
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

// ---- restore (stage) ----

/// The `fanotify_mark` calls that set mark `m` again on group `n`, as (flags, mask):
/// its event mask, then its ignore mask (with the flags that go with it).
pub(crate) fn mark_calls(m: &FanotifyMark) -> Vec<(u32, u64)> {
    let mut base = libc::FAN_MARK_ADD | m.on | (m.mflags & libc::FAN_MARK_EVICTABLE);
    if m.on == 0 {
        base |= libc::FAN_MARK_DONT_FOLLOW;
    }
    let mut out = Vec::new();
    if m.mask != 0 || m.ignored_mask == 0 {
        out.push((base, m.mask));
    }
    if m.ignored_mask != 0 {
        let ignore = if m.mflags & libc::FAN_MARK_IGNORE != 0 {
            libc::FAN_MARK_IGNORE
        } else {
            libc::FAN_MARK_IGNORED_MASK
        };
        let surv = m.mflags & libc::FAN_MARK_IGNORED_SURV_MODIFY;
        out.push((base | ignore | surv, m.ignored_mask));
    }
    out
}

/// A new fanotify group with the recorded flags and marks; returns its descriptor.
pub(crate) fn create_fanotify(
    cx: &mut Ctx<'_>,
    init_flags: u32,
    event_flags: u32,
    marks: &[FanotifyMark],
) -> RestoreResult<u64> {
    let n = cx.call(
        "fanotify_init",
        nr::FANOTIFY_INIT,
        [u64::from(init_flags), u64::from(event_flags), 0, 0, 0, 0],
    )?;
    for m in marks {
        let a = cx.put_cstr(0, &m.path)?;
        for (flags, mask) in mark_calls(m) {
            let what = format!(
                "fanotify_mark({}, {flags:#x}, {mask:#x})",
                String::from_utf8_lossy(&m.path)
            );
            cx.call(
                &what,
                nr::FANOTIFY_MARK,
                [n, u64::from(flags), mask, libc::AT_FDCWD as u64, a, 0],
            )?;
        }
    }
    Ok(n)
}
