//! Descriptors: the open descriptors of a process, /proc/PID/fdinfo and the parsers of
//! its lines (epoll targets, timerfd times, inotify watches), and the identity of the
//! file behind a descriptor or a mapping ([`FileIdent`]).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::read;
use crate::sys::{Result, SysError};

/// pos and flags from /proc/PID/fdinfo/FD.
pub fn fdinfo(pid: i32, fd: i32) -> Result<(u64, u32)> {
    let b = read(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let s = String::from_utf8_lossy(&b);
    let mut pos = None;
    let mut flags = None;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            pos = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).ok();
        }
    }
    match (pos, flags) {
        (Some(p), Some(f)) => Ok((p, f)),
        _ => Err(SysError::Other(format!(
            "cannot parse /proc/{pid}/fdinfo/{fd}"
        ))),
    }
}

/// Open file descriptors of a process, sorted.
pub fn fds(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/fd");
    let mut v = Vec::new();
    for e in fs::read_dir(&dir).map_err(|e| SysError::io(format!("read {dir}"), e))? {
        let e = e.map_err(|e| SysError::io(format!("read {dir}"), e))?;
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// What identifies a file (its `stat`), with the name it is recorded under; the kinds
/// turn it into the image's `FileId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdent {
    pub path: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Identity of the file behind `path` (following links, e.g. /proc/PID/fd/N), recorded
/// under the name `name`.
pub fn file_id(path: &Path, name: &[u8]) -> Result<FileIdent> {
    Ok(file_stat(path, name)?.0)
}

/// [`file_id`] and the link count (0: deleted while open or mapped), from one `stat`.
pub fn file_stat(path: &Path, name: &[u8]) -> Result<(FileIdent, u64)> {
    let m = fs::metadata(path).map_err(|e| SysError::io(format!("stat {}", path.display()), e))?;
    let id = FileIdent {
        path: name.to_vec(),
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        rdev: m.rdev(),
        size: m.size(),
        mtime_sec: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        uid: m.uid(),
        gid: m.gid(),
    };
    Ok((id, m.nlink()))
}

/// The whole of /proc/PID/fdinfo/FD.
pub fn fdinfo_text(pid: i32, fd: i32) -> Result<String> {
    let b = read(format!("/proc/{pid}/fdinfo/{fd}"))?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The value after `key` on its fdinfo line.
pub fn fdinfo_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// "(sec, nsec)" of a timerfd's fdinfo, in nanoseconds.
pub fn parse_timespec_pair(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    let s: u64 = s.trim().parse().ok()?;
    let n: u64 = n.trim().parse().ok()?;
    Some(s.saturating_mul(1_000_000_000).saturating_add(n))
}

/// Registered targets of an epoll fdinfo: (fd, events, data, inode).
pub fn parse_epoll_targets(text: &str) -> Option<Vec<(i32, u32, u64, u64)>> {
    let mut out = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("tfd:")) {
        let mut it = l.split_whitespace();
        let mut get = |key: &str| -> Option<&str> {
            while let Some(w) = it.next() {
                if w == key {
                    return it.next();
                }
                if let Some(v) = w.strip_prefix(key) {
                    if !v.is_empty() {
                        return Some(v);
                    }
                    return it.next();
                }
            }
            None
        };
        let fd = get("tfd:")?.parse().ok()?;
        let events = u32::from_str_radix(get("events:")?, 16).ok()?;
        let data = u64::from_str_radix(get("data:")?, 16).ok()?;
        let ino = u64::from_str_radix(get("ino:")?, 16).ok()?;
        out.push((fd, events, data, ino));
    }
    Some(out)
}

/// One watch of an inotify instance, from its fdinfo
/// (`inotify wd:1 ino:2 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyLine {
    pub wd: i32,
    pub ino: u64,
    /// The kernel's device number (major << 20 | minor).
    pub sdev: u32,
    pub mask: u32,
    pub handle_type: i32,
    pub handle: Vec<u8>,
}

/// The watches of an inotify fdinfo, in the order shown; `None` if a line is malformed.
pub fn parse_inotify_watches(text: &str) -> Option<Vec<InotifyLine>> {
    let mut out = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("inotify ")) {
        let mut kv = std::collections::BTreeMap::new();
        for w in l.split_whitespace() {
            let (k, v) = w.split_once(':')?;
            kv.insert(k, v);
        }
        let hex = |k: &str| kv.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let hb = kv.get("f_handle").copied().unwrap_or("");
        if hb.len() % 2 != 0 || hb.len() > 256 {
            return None;
        }
        let handle = (0..hb.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hb[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        if hex("fhandle-bytes").unwrap_or(0) != handle.len() as u64 {
            return None;
        }
        out.push(InotifyLine {
            wd: i32::try_from(hex("wd")?).ok()?,
            ino: hex("ino")?,
            sdev: u32::try_from(hex("sdev")?).ok()?,
            mask: u32::try_from(hex("mask")?).ok()?,
            handle_type: hex("fhandle-type")
                .and_then(|t| i32::try_from(t).ok())
                .unwrap_or(0),
            handle,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoll_fdinfo() {
        let t = "pos:\t0\nflags:\t02\ntfd:        4 events:       19 data:               4d  pos:0 ino:40f sdev:10\ntfd:        3 events: 80000019 data:             1234  pos:0 ino:40f sdev:10\n";
        let v = parse_epoll_targets(t).unwrap();
        assert_eq!(
            v,
            vec![(4, 0x19, 0x4d, 0x40f), (3, 0x8000_0019, 0x1234, 0x40f)]
        );
        assert_eq!(parse_timespec_pair(" (1, 993529230)"), Some(1_993_529_230));
    }

    #[test]
    fn inotify_watches_parse() {
        let w = parse_inotify_watches(
            "pos:\t0\nflags:\t04000\ninotify wd:a ino:1c sdev:fe00000 mask:300 ignored_mask:0 \
             fhandle-bytes:8 fhandle-type:1 f_handle:1c0000000a0b0c0d\n",
        )
        .unwrap();
        assert_eq!(
            (w[0].wd, w[0].ino, w[0].sdev, w[0].mask, w[0].handle_type),
            (10, 0x1c, 0xfe0_0000, 0x300, 1)
        );
        assert_eq!(w[0].handle, [0x1c, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert!(parse_inotify_watches("inotify wd:1 ino:zz sdev:0 mask:1").is_none());
    }
}
