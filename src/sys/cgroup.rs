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

/// (controllers, path) of each hierarchy process `pid` (0: ckpt, as first read: later
/// ckpt may be in the tree's cgroup namespace, where paths read differently) is in,
/// from /proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines; controllers empty for v2), as
/// the calling thread's cgroup namespace shows them.
pub fn membership(pid: i32) -> Result<Vec<(String, String)>> {
    static OWN: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    if pid == 0 {
        if let Some(v) = OWN.get() {
            return Ok(v.clone());
        }
        let text = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| SysError::io("read /proc/self/cgroup", e))?;
        return Ok(OWN.get_or_init(|| parse_membership(&text)).clone());
    }
    let p = format!("/proc/{pid}/cgroup");
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

/// The cgroup hierarchies of ckpt's mount namespace (the first mount of each), as first
/// read (a cgroup mount's root reads differently from another cgroup namespace).
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    static FIRST: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    if let Some(h) = FIRST.get() {
        return Ok(h.clone());
    }
    let p = "/proc/self/mountinfo";
    let text = fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    Ok(FIRST.get_or_init(|| parse_hierarchies(&text)).clone())
}

/// ckpt's own cgroup namespace, kept open once ckpt's main thread is to join another
/// ([`enter_new_ns`]): processes are moved between cgroups from a thread back in it.
static OWN_NS: std::sync::OnceLock<fs::File> = std::sync::OnceLock::new();

/// Make the calling thread join a new cgroup namespace whose root is, in each
/// hierarchy, cgroup directory `roots` (the others: ckpt's own cgroups). A forked
/// helper moves itself into them, unshares its cgroup namespace (rooted where it is)
/// and waits while this thread joins that namespace; it then exits. The calling
/// thread's own cgroups do not change.
pub fn enter_new_ns(roots: &[PathBuf]) -> Result<()> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let own = fs::File::open("/proc/thread-self/ns/cgroup")
        .map_err(|e| SysError::io("open /proc/thread-self/ns/cgroup", e))?;
    let _ = OWN_NS.set(own);
    let paths: Vec<std::ffi::CString> = roots
        .iter()
        .map(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(|_| SysError::Other(format!("bad cgroup path {}", d.display())))
        })
        .collect::<Result<_>>()?;
    let ptrs: Vec<*const libc::c_char> = paths.iter().map(|c| c.as_ptr()).collect();
    let (ready_rd, ready_wr) = super::process::pipe()?;
    let (go_rd, go_wr) = super::process::pipe()?;
    let (rfd, gfd, gw) = (ready_wr.as_raw_fd(), go_rd.as_raw_fd(), go_wr.as_raw_fd());
    let parent = super::process::own_pid();
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..super::process::clone_args()
    };
    let child = super::process::clone3(&args);
    if child == 0 {
        // SAFETY: the forked child runs raw system calls only (see `die_with_parent`),
        // on descriptors it inherited and strings made before the fork, and ends with
        // `_exit`. It moves only itself and changes only its own cgroup namespace.
        unsafe {
            super::process::die_with_parent(parent);
            // Its copy of the write end of `go` goes: the parent's closing it ends the
            // wait below.
            libc::syscall(libc::SYS_close, gw);
            for (i, p) in ptrs.iter().enumerate() {
                let fd = libc::syscall(libc::SYS_open, *p, libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::syscall(libc::SYS_write, fd, c"0".as_ptr(), 1) != 1 {
                    libc::_exit(10 + i as i32);
                }
                libc::syscall(libc::SYS_close, fd);
            }
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWCGROUP) != 0 {
                libc::_exit(2);
            }
            if libc::syscall(libc::SYS_write, rfd, c"k".as_ptr(), 1) != 1 {
                libc::_exit(3);
            }
            let mut b = 0u8;
            libc::syscall(libc::SYS_read, gfd, &mut b as *mut u8, 1);
            libc::_exit(0);
        }
    }
    if child < 0 {
        return Err(SysError::os("clone3 (making a cgroup namespace)"));
    }
    drop((ready_wr, go_rd));
    let mut b = [0u8; 1];
    let got = fs::File::from(ready_rd).read(&mut b);
    let joined = match got {
        Ok(1) => {
            let p = format!("/proc/{child}/ns/cgroup");
            fs::File::open(&p)
                .map_err(|e| SysError::io(format!("open {p}"), e))
                .and_then(|f| {
                    // SAFETY: setns with a cgroup namespace file we hold open changes
                    // only the calling thread's cgroup namespace.
                    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) };
                    super::check(r as libc::c_long, || format!("setns {p}"))
                })
        }
        _ => Err(SysError::Other(
            "the helper making the tree's cgroup namespace failed".into(),
        )),
    };
    drop(go_wr);
    let status = super::process::wait_exit(child as i32)?;
    joined?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(SysError::Other(format!(
            "the helper making the tree's cgroup namespace failed (status {status:#x})"
        )));
    }
    Ok(())
}

/// The cgroup hierarchies of a mountinfo text (parsed by [`super::mount::parse_mountinfo`];
/// an unreadable text gives none).
pub fn parse_hierarchies(text: &str) -> Vec<Hierarchy> {
    use std::os::unix::ffi::OsStrExt;
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in super::mount::parse_mountinfo(text).unwrap_or_default() {
        let controllers = match m.fstype.as_str() {
            "cgroup2" => String::new(),
            "cgroup" => {
                let c: Vec<&str> = m
                    .super_options
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
            mountpoint: PathBuf::from(std::ffi::OsStr::from_bytes(&m.point)),
            root: String::from_utf8_lossy(&m.root).into_owned(),
        });
    }
    out
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

/// Move process `pid` (all its threads) into the cgroup of directory `dir` (from a
/// thread back in ckpt's own cgroup namespace when ckpt joined the tree's).
pub fn move_into(dir: &Path, pid: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let p = dir.join("cgroup.procs");
    let write = || {
        fs::write(&p, pid.to_string())
            .map_err(|e| SysError::io(format!("write {pid} to {}", p.display()), e))
    };
    let Some(own) = OWN_NS.get() else {
        return write();
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns with ckpt's own cgroup namespace file, held open, changes
            // only this thread's cgroup namespace; the thread ends right after.
            let r = unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWCGROUP) };
            super::check(r as libc::c_long, || {
                "setns (ckpt's cgroup namespace)".into()
            })?;
            write()
        })
        .join()
        .map_err(|_| SysError::Other("a thread moving a process panicked".into()))?
    })
}

// ---- a cgroup's limits (`restore --manage-cgroups`) ----

/// The value of the interface file `name` of the cgroup of directory `dir`, without its
/// final newline; None when the cgroup has no such file (its controller is not enabled
/// there).
pub fn read_limit(dir: &Path, name: &str) -> Result<Option<String>> {
    let p = dir.join(name);
    match fs::read_to_string(&p) {
        Ok(v) => Ok(Some(v.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SysError::io(format!("read {}", p.display()), e)),
    }
}

/// Write `value` to the interface file `name` of the cgroup of directory `dir`, one
/// line per write (io.max takes one device per write).
pub fn write_limit(dir: &Path, name: &str, value: &str) -> Result<()> {
    use std::io::Write;
    let p = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| SysError::io(format!("open {}", p.display()), e))?;
    let lines: Vec<&str> = if value.is_empty() {
        vec![""]
    } else {
        value.lines().collect()
    };
    for l in lines {
        f.write_all(l.as_bytes())
            .map_err(|e| SysError::io(format!("write {l:?} to {}", p.display()), e))?;
    }
    Ok(())
}

/// The controllers a cgroup v2 directory enables for its children
/// (cgroup.subtree_control); empty when it has none or is no cgroup.
pub fn subtree_control(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.subtree_control"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
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
