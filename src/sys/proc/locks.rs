//! File locks: every lock of the system (/proc/locks), the "lock:" lines of fdinfo
//! ([`LockLine`]), and the processes holding a descriptor to a file.

use std::fs;
use std::os::unix::fs::MetadataExt;

use super::read;
use crate::sys::Result;

/// One file lock as /proc/locks and the "lock:" lines of /proc/PID/fdinfo/FD show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    /// FLOCK, POSIX, OFDLCK, ACCESS, LEASE, DELEG...
    pub class: String,
    /// WRITE, READ or UNLCK.
    pub mode: String,
    /// A waiter (blocked, not holding the lock): "->" in /proc/locks.
    pub blocked: bool,
    pub pid: i64,
    /// (major, minor) of the file's device, and its inode number.
    pub dev: (u32, u32),
    pub ino: u64,
    pub start: u64,
    /// Last byte (inclusive), `None` for EOF.
    pub end: Option<u64>,
}

/// Parse one lock line (`1: POSIX  ADVISORY  WRITE 123 08:01:456 0 EOF`, a `lock:`
/// prefix and `->` for a waiter allowed). Leases show different words; they parse with
/// their class so callers can refuse them.
pub fn parse_lock_line(line: &str) -> Option<LockLine> {
    let line = line.strip_prefix("lock:").unwrap_or(line);
    let mut blocked = false;
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| {
            if *w == "->" {
                blocked = true;
            }
            !(w.ends_with(':') && w[..w.len() - 1].parse::<u64>().is_ok()) && *w != "->"
        })
        .collect();
    // class, ADVISORY|MANDATORY|..., mode, pid, dev:ino, start, end
    let [class, _, mode, pid, devino, start, end] = words.as_slice() else {
        return None;
    };
    let mut d = devino.split(':');
    let major = u32::from_str_radix(d.next()?, 16).ok()?;
    let minor = u32::from_str_radix(d.next()?, 16).ok()?;
    let ino = d.next()?.parse().ok()?;
    Some(LockLine {
        class: class.to_string(),
        mode: mode.to_string(),
        blocked,
        pid: pid.parse().ok()?,
        dev: (major, minor),
        ino,
        start: start.parse().ok()?,
        end: if *end == "EOF" {
            None
        } else {
            Some(end.parse().ok()?)
        },
    })
}

/// Every lock of the system (/proc/locks), held or waited for.
pub fn all_locks() -> Result<Vec<LockLine>> {
    let b = read("/proc/locks".into())?;
    Ok(String::from_utf8_lossy(&b)
        .lines()
        .filter_map(parse_lock_line)
        .collect())
}

/// Processes that hold a descriptor to the file `(dev, ino)` (st_dev, st_ino), found by
/// looking at every /proc/PID/fd entry (a process that vanishes meanwhile is skipped).
pub fn holders_of(dev: u64, ino: u64) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        // (A descriptor opened with O_PATH does not open the file: an O_PATH holder of
        // a FIFO shares no pipe with anyone. ckpt holds the files it restores so.)
        let opened = |f: &fs::DirEntry| {
            let flags = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                f.file_name().to_string_lossy()
            ))
            .ok()
            .and_then(|t| {
                let v = t
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))?
                    .trim()
                    .to_string();
                i64::from_str_radix(&v, 8).ok()
            })
            .unwrap_or(0);
            flags & i64::from(libc::O_PATH) == 0
        };
        if fds.flatten().any(|f| {
            fs::metadata(f.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino) && opened(&f)
        }) {
            out.push(pid);
        }
    }
    out
}

/// The pipes of `ids` that a process other than those of `skip` has a descriptor on
/// (its /proc link reads `pipe:[ID]`), each with one such process. One pass over every
/// process's descriptors (a process that ends meanwhile is passed over).
pub fn pipe_holders_outside(
    ids: &std::collections::BTreeSet<u64>,
    skip: &std::collections::BTreeSet<i32>,
) -> std::collections::BTreeMap<u64, i32> {
    link_holders_outside("pipe:[", ids, skip)
}

/// [`pipe_holders_outside`] for sockets (`socket:[ID]`).
pub fn socket_holders_outside(
    ids: &std::collections::BTreeSet<u64>,
    skip: &std::collections::BTreeSet<i32>,
) -> std::collections::BTreeMap<u64, i32> {
    link_holders_outside("socket:[", ids, skip)
}

/// The objects of `ids` whose /proc link reads `PREFIX ID]` in a process not in `skip`,
/// each with one such process.
fn link_holders_outside(
    prefix: &str,
    ids: &std::collections::BTreeSet<u64>,
    skip: &std::collections::BTreeSet<i32>,
) -> std::collections::BTreeMap<u64, i32> {
    let mut out = std::collections::BTreeMap::new();
    if ids.is_empty() {
        return out;
    }
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if skip.contains(&pid) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Ok(link) = fs::read_link(f.path()) else {
                continue;
            };
            let id = link
                .to_str()
                .and_then(|l| l.strip_prefix(prefix))
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id.filter(|i| ids.contains(i)) {
                out.entry(id).or_insert(pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_parse() {
        let l = parse_lock_line("lock:\t1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF").unwrap();
        assert_eq!(
            (
                l.class.as_str(),
                l.mode.as_str(),
                l.pid,
                l.dev,
                l.ino,
                l.start,
                l.end,
                l.blocked
            ),
            ("FLOCK", "WRITE", 4242, (0, 0x2a), 1234, 0, None, false)
        );
        let l = parse_lock_line("2: -> POSIX  ADVISORY  READ 7 fd:01:99 100 199").unwrap();
        assert_eq!(
            (l.blocked, l.dev, l.start, l.end),
            (true, (0xfd, 1), 100, Some(199))
        );
        let l = parse_lock_line("3: OFDLCK ADVISORY  WRITE -1 08:01:5 10 EOF").unwrap();
        assert_eq!((l.class.as_str(), l.pid), ("OFDLCK", -1));
        assert!(parse_lock_line("garbage").is_none());
        assert!(parse_lock_line("1: POSIX ADVISORY WRITE 1 08:01 0 EOF").is_none());
    }
}
