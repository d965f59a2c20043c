//! Control groups: which cgroup of each hierarchy a process is in (/proc/PID/cgroup),
//! where ckpt sees each hierarchy mounted (/proc/self/mountinfo), making a cgroup and
//! moving a process into one.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Result, SysError};

/// The v1 controllers the kernel knows (a hierarchy's mount options name them).
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "io",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// A hierarchy's controllers in a canonical form (sorted), to compare the names of
/// /proc/PID/cgroup with a mount's options.
pub fn canonical(controllers: &str) -> String {
    let mut v: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
    v.sort_unstable();
    v.join(",")
}

/// (controllers, path) of each hierarchy process `pid` (0: ckpt) is in, from
/// /proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines; controllers empty for v2).
pub fn membership(pid: i32) -> Result<Vec<(String, String)>> {
    let p = if pid == 0 {
        "/proc/self/cgroup".to_string()
    } else {
        format!("/proc/{pid}/cgroup")
    };
    let text = fs::read_to_string(&p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    Ok(parse_membership(&text))
}

/// The (controllers, path) pairs of a /proc/PID/cgroup text.
pub fn parse_membership(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            let c = f.next()?;
            let path = f.next()?;
            Some((c.to_string(), path.to_string()))
        })
        .collect()
}

/// A cgroup hierarchy mounted where ckpt sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its controllers, canonical (see [`canonical`]); empty for v2.
    pub controllers: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Which cgroup of it is the mount's root ("/" for a whole hierarchy).
    pub root: String,
}

/// The cgroup hierarchies of ckpt's mount namespace (the first mount of each).
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let p = "/proc/self/mountinfo";
    let text = fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    Ok(parse_hierarchies(&text))
}

/// The cgroup hierarchies of a mountinfo text.
pub fn parse_hierarchies(text: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for l in text.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mp), Some(fstype)) = (pre.get(3), pre.get(4), post.first()) else {
            continue;
        };
        let controllers = match *fstype {
            "cgroup2" => String::new(),
            "cgroup" => {
                let opts = post.get(2).copied().unwrap_or_default();
                let c: Vec<&str> = opts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .collect();
                canonical(&c.join(","))
            }
            _ => continue,
        };
        if out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(Hierarchy {
            controllers,
            mountpoint: PathBuf::from(unescape(mp)),
            root: unescape(root),
        });
    }
    out
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (from the hierarchy's root) of hierarchy `h`, if the
/// mount shows it.
pub fn dir_of(h: &Hierarchy, path: &str) -> Option<PathBuf> {
    let rel = if h.root == "/" {
        path.strip_prefix('/')?
    } else {
        let r = path.strip_prefix(h.root.as_str())?;
        if !r.is_empty() && !r.starts_with('/') {
            return None;
        }
        r.trim_start_matches('/')
    };
    Some(h.mountpoint.join(rel))
}

/// Make directory `dir` and its missing parents (cgroups, in a cgroup file system);
/// returns those it made, outermost first.
pub fn make_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        d = match d.parent() {
            Some(p) => p,
            None => break,
        };
    }
    missing.reverse();
    let mut made = Vec::new();
    for m in missing {
        if let Err(e) = fs::create_dir(&m) {
            remove_dirs(&made);
            return Err(SysError::io(format!("mkdir {}", m.display()), e));
        }
        made.push(m);
    }
    Ok(made)
}

/// Remove cgroups made by [`make_dirs`] (innermost first), waiting a little for the
/// processes killed in them to be gone; errors are ignored.
pub fn remove_dirs(made: &[PathBuf]) {
    for d in made.iter().rev() {
        for _ in 0..50 {
            match fs::remove_dir(d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

/// Move process `pid` (all its threads) into the cgroup of directory `dir`.
pub fn move_into(dir: &Path, pid: i32) -> Result<()> {
    let p = dir.join("cgroup.procs");
    fs::write(&p, pid.to_string())
        .map_err(|e| SysError::io(format!("write {pid} to {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_hierarchies() {
        let m = parse_membership("4:memory:/a/b\n1:name=systemd:/\n0::/x:y\n");
        assert_eq!(
            m,
            vec![
                ("memory".into(), "/a/b".into()),
                ("name=systemd".into(), "/".into()),
                (String::new(), "/x:y".into())
            ]
        );
        let mi = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                  41 31 0:38 /sub /sys/fs/cgroup/unified\\040x rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = parse_hierarchies(mi);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, "cpu,cpuacct");
        assert_eq!(h[1].controllers, "name=systemd");
        assert_eq!(h[2].controllers, "");
        assert_eq!(h[2].mountpoint, PathBuf::from("/sys/fs/cgroup/unified x"));
        assert_eq!(
            dir_of(&h[2], "/sub/t"),
            Some(PathBuf::from("/sys/fs/cgroup/unified x/t"))
        );
        assert_eq!(dir_of(&h[2], "/other"), None);
        assert_eq!(dir_of(&h[2], "/subway"), None);
        assert_eq!(
            dir_of(&h[0], "/a"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"))
        );
        assert_eq!(canonical("cpuacct,cpu"), "cpu,cpuacct");
    }
}
