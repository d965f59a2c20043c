//! Control groups: which cgroup of each hierarchy a process is in (/proc/PID/cgroup),
//! where ckpt sees each hierarchy mounted (/proc/self/mountinfo), making a cgroup and
//! moving a process into one.
//!
//! Each hierarchy's mount is held open (`O_PATH`) from ckpt's first reading of its
//! mounts ([`prime`], before ckpt enters a tree's mount namespace), and every cgroup is
//! looked at, made, removed and written through that descriptor ([`CgroupDir`]): never
//! by a path, which a tree's own mount namespace (a container's, with its own
//! /sys/fs/cgroup) would resolve differently.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Result, SysError, rerr};

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
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Its controllers, canonical (see [`canonical`]); empty for v2.
    pub controllers: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Which cgroup of it is the mount's root ("/" for a whole hierarchy).
    pub root: String,
    /// The mount's root, held open when ckpt first read its mounts (None when it could
    /// not be opened, or in a parsed text).
    pub dir: Option<Arc<OwnedFd>>,
}

/// Read ckpt's own cgroups and cgroup mounts (opening each hierarchy's mount) and hold
/// its root directory ([`super::pathfd::hold_own_root`]) now, while ckpt's main thread
/// is still in its own mount and cgroup namespaces: every later use sees these,
/// whatever namespace it runs in.
pub fn prime() {
    super::pathfd::hold_own_root();
    let _ = membership(0);
    let _ = hierarchies();
}

/// The cgroup hierarchies of ckpt's mount namespace (the first mount of each), as first
/// read (a cgroup mount's root reads differently from another cgroup namespace, and a
/// mount namespace of a tree's own has other mounts): see [`prime`].
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    static FIRST: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    if let Some(h) = FIRST.get() {
        return Ok(h.clone());
    }
    let p = "/proc/self/mountinfo";
    let text = fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    Ok(FIRST
        .get_or_init(|| {
            let mut h = parse_hierarchies(&text);
            for x in &mut h {
                x.dir = super::pathfd::open_dir(&x.mountpoint).ok().map(Arc::new);
            }
            h
        })
        .clone())
}

/// A cgroup's directory: a path below a hierarchy's mount, reached through the mount
/// held open ([`Hierarchy::dir`]).
#[derive(Debug, Clone)]
pub struct CgroupDir {
    base: Arc<OwnedFd>,
    mountpoint: PathBuf,
    rel: PathBuf,
    /// Its hierarchy's controllers (see [`canonical`]; empty for v2).
    controllers: String,
}

impl CgroupDir {
    /// Its path as ckpt's own mount namespace shows it.
    pub fn path(&self) -> PathBuf {
        self.mountpoint.join(&self.rel)
    }

    /// The path relative to the mount's root ("." for the root).
    fn rel_or_dot(&self) -> &Path {
        if self.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.rel
        }
    }

    fn with_rel(&self, rel: PathBuf) -> CgroupDir {
        CgroupDir {
            base: self.base.clone(),
            mountpoint: self.mountpoint.clone(),
            rel,
            controllers: self.controllers.clone(),
        }
    }

    /// Its parent directory, up to the mount's root (None for the root).
    pub fn parent(&self) -> Option<CgroupDir> {
        if self.rel.as_os_str().is_empty() {
            return None;
        }
        Some(self.with_rel(self.rel.parent().map(Path::to_path_buf).unwrap_or_default()))
    }

    /// Whether `name` (a path relative to it) is there.
    pub fn has(&self, name: &str) -> bool {
        rustix::fs::statat(
            &*self.base,
            self.rel_or_dot().join(name),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Whether the directory is there.
    pub fn exists(&self) -> bool {
        self.has(".")
    }

    /// Whether it is a cgroup (has a `cgroup.procs`).
    pub fn is_cgroup(&self) -> bool {
        self.has("cgroup.procs")
    }

    /// Its `cgroup.procs` relative to the mount's root.
    fn procs(&self) -> PathBuf {
        self.rel_or_dot().join("cgroup.procs")
    }
}

impl std::fmt::Display for CgroupDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// ckpt's own cgroup namespace, kept open once ckpt's main thread is to join another
/// ([`enter_new_ns`]): processes are moved between cgroups from a thread back in it.
static OWN_NS: std::sync::OnceLock<fs::File> = std::sync::OnceLock::new();

/// Keep ckpt's own cgroup namespace open (once), before the calling thread joins
/// another: processes are moved between cgroups from a thread back in it.
pub fn keep_own_ns() -> Result<()> {
    if OWN_NS.get().is_none() {
        let own = fs::File::open("/proc/thread-self/ns/cgroup")
            .map_err(|e| SysError::io("open /proc/thread-self/ns/cgroup", e))?;
        let _ = OWN_NS.set(own);
    }
    Ok(())
}

/// The `cgroup.procs` of each of `roots`, as (directory descriptor, path below it) for
/// a forked helper's raw `openat`: the descriptors live as long as `roots`.
pub fn procs_targets(roots: &[CgroupDir]) -> Result<Vec<(libc::c_int, std::ffi::CString)>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    roots
        .iter()
        .map(|d| {
            std::ffi::CString::new(d.procs().as_os_str().as_bytes())
                .map(|c| (d.base.as_raw_fd(), c))
                .map_err(|_| SysError::Other(format!("bad cgroup path {d}")))
        })
        .collect()
}

/// Make the calling thread join a new cgroup namespace whose root is, in each
/// hierarchy, cgroup directory `roots` (the others: ckpt's own cgroups). A forked
/// helper moves itself into them, unshares its cgroup namespace (rooted where it is)
/// and waits while this thread joins that namespace; it then exits. The calling
/// thread's own cgroups do not change.
pub fn enter_new_ns(roots: &[CgroupDir]) -> Result<()> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    keep_own_ns()?;
    let paths = procs_targets(roots)?;
    let ptrs: Vec<(libc::c_int, *const libc::c_char)> =
        paths.iter().map(|(d, c)| (*d, c.as_ptr())).collect();
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
            for (i, (dfd, p)) in ptrs.iter().enumerate() {
                let fd =
                    libc::syscall(libc::SYS_openat, *dfd, *p, libc::O_WRONLY | libc::O_CLOEXEC);
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
            dir: None,
        });
    }
    out
}

/// The directory of cgroup `path` (from the hierarchy's root) of hierarchy `h`, if the
/// mount shows it and ckpt holds the mount open.
pub fn dir_of(h: &Hierarchy, path: &str) -> Option<CgroupDir> {
    Some(CgroupDir {
        base: h.dir.clone()?,
        mountpoint: h.mountpoint.clone(),
        rel: rel_of(h, path)?,
        controllers: h.controllers.clone(),
    })
}

/// The cgroup directory at `path` as ckpt's own mount namespace shows it (a path below
/// the mount of one of [`hierarchies`]), if it is one.
pub fn dir_at_path(path: &Path) -> Option<CgroupDir> {
    let hier = hierarchies().ok()?;
    hier.iter().find_map(|h| {
        let rel = path.strip_prefix(&h.mountpoint).ok()?;
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        Some(CgroupDir {
            base: h.dir.clone()?,
            mountpoint: h.mountpoint.clone(),
            rel: rel.to_path_buf(),
            controllers: h.controllers.clone(),
        })
    })
}

/// Cgroup `path` (from the hierarchy's root) relative to the mount of `h`, if it shows it.
pub fn rel_of(h: &Hierarchy, path: &str) -> Option<PathBuf> {
    let rel = if h.root == "/" {
        path.strip_prefix('/')?
    } else {
        let r = path.strip_prefix(h.root.as_str())?;
        if !r.is_empty() && !r.starts_with('/') {
            return None;
        }
        r.trim_start_matches('/')
    };
    Some(PathBuf::from(rel))
}

/// Make cgroup `dir` and its missing parents; returns those it made, outermost first.
pub fn make_dirs(dir: &CgroupDir) -> Result<Vec<CgroupDir>> {
    let mut missing = Vec::new();
    let mut d = Some(dir.clone());
    while let Some(x) = d {
        if x.exists() {
            break;
        }
        d = x.parent();
        missing.push(x);
    }
    missing.reverse();
    let mut made = Vec::new();
    for m in missing {
        if let Err(e) = rustix::fs::mkdirat(
            &*m.base,
            m.rel_or_dot(),
            rustix::fs::Mode::from_raw_mode(0o755),
        ) {
            remove_dirs(&made);
            return Err(rerr(format!("mkdir {m}"), e));
        }
        made.push(m.clone());
        if let Err(e) = inherit_cpuset(&m) {
            remove_dirs(&made);
            return Err(e);
        }
    }
    Ok(made)
}

/// A cgroup v1 cpuset made anew has no CPUs and memory nodes (no process can join it):
/// it is given its parent's, as a v2 one has by default.
fn inherit_cpuset(dir: &CgroupDir) -> Result<()> {
    use std::io::{Read, Write};
    if !dir.controllers.split(',').any(|c| c == "cpuset") {
        return Ok(());
    }
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for name in ["cpuset.cpus", "cpuset.mems"] {
        let open = |d: &CgroupDir, flags| {
            rustix::fs::openat(
                &*d.base,
                d.rel_or_dot().join(name),
                flags | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map(fs::File::from)
            .map_err(|e| rerr(format!("open {d}/{name}"), e))
        };
        let mut v = String::new();
        open(&parent, rustix::fs::OFlags::RDONLY)?
            .read_to_string(&mut v)
            .map_err(|e| SysError::io(format!("read {parent}/{name}"), e))?;
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        open(dir, rustix::fs::OFlags::WRONLY)?
            .write_all(v.as_bytes())
            .map_err(|e| SysError::io(format!("write {dir}/{name}"), e))?;
    }
    Ok(())
}

/// Remove cgroups made by [`make_dirs`] (innermost first), waiting a little for the
/// processes killed in them to be gone; errors are ignored.
pub fn remove_dirs(made: &[CgroupDir]) {
    for d in made.iter().rev() {
        for _ in 0..50 {
            match rustix::fs::unlinkat(&*d.base, d.rel_or_dot(), rustix::fs::AtFlags::REMOVEDIR) {
                Err(e) if e == rustix::io::Errno::BUSY => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

/// Move process `pid` (all its threads) into the cgroup of directory `dir` (from a
/// thread back in ckpt's own cgroup namespace when ckpt joined the tree's).
pub fn move_into(dir: &CgroupDir, pid: i32) -> Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let write = || {
        let fd = rustix::fs::openat(
            &*dir.base,
            dir.procs(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| rerr(format!("open {dir}/cgroup.procs"), e))?;
        fs::File::from(fd)
            .write_all(pid.to_string().as_bytes())
            .map_err(|e| SysError::io(format!("write {pid} to {dir}/cgroup.procs"), e))
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
pub fn read_limit(dir: &CgroupDir, name: &str) -> Result<Option<String>> {
    use std::io::Read;
    let fd = match rustix::fs::openat(
        &*dir.base,
        dir.rel_or_dot().join(name),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(None),
        Err(e) => return Err(rerr(format!("open {dir}/{name}"), e)),
    };
    let mut v = String::new();
    fs::File::from(fd)
        .read_to_string(&mut v)
        .map_err(|e| SysError::io(format!("read {dir}/{name}"), e))?;
    Ok(Some(v.trim_end_matches('\n').to_string()))
}

/// Write `value` to the interface file `name` of the cgroup of directory `dir`, one
/// line per write (io.max takes one device per write).
pub fn write_limit(dir: &CgroupDir, name: &str, value: &str) -> Result<()> {
    use std::io::Write;
    let fd = rustix::fs::openat(
        &*dir.base,
        dir.rel_or_dot().join(name),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| rerr(format!("open {dir}/{name}"), e))?;
    let mut f = fs::File::from(fd);
    let lines: Vec<&str> = if value.is_empty() {
        vec![""]
    } else {
        value.lines().collect()
    };
    for l in lines {
        f.write_all(l.as_bytes())
            .map_err(|e| SysError::io(format!("write {l:?} to {dir}/{name}"), e))?;
    }
    Ok(())
}

/// The cgroup v2 directory whose cgroup ID (its inode number on a 64-bit kernel, as
/// PIDFD_GET_INFO and `name_to_handle_at` tell it) is `id`, looked for below the v2
/// mount ckpt holds ([`hierarchies`]), breadth first, at most [`BY_ID_MAX`] directories;
/// None when that cgroup is gone or not below the mount.
pub fn v2_by_id(id: u64) -> Option<CgroupDir> {
    let root = hierarchies()
        .ok()?
        .into_iter()
        .find(|h| h.controllers.is_empty())
        .and_then(|h| dir_of(&h, &h.root))?;
    let mut queue = std::collections::VecDeque::from([root]);
    let mut seen = 0usize;
    while let Some(d) = queue.pop_front() {
        seen += 1;
        if seen > BY_ID_MAX {
            return None;
        }
        let Ok(fd) = rustix::fs::openat(
            &*d.base,
            d.rel_or_dot(),
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            continue;
        };
        if rustix::fs::fstat(&fd).is_ok_and(|st| st.st_ino == id) {
            return Some(d);
        }
        let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_bytes();
            if e.file_type() != rustix::fs::FileType::Directory || name == b"." || name == b".." {
                continue;
            }
            use std::os::unix::ffi::OsStrExt;
            let rel = d.rel.join(std::ffi::OsStr::from_bytes(name));
            queue.push_back(d.with_rel(rel));
        }
    }
    None
}

/// How many cgroup directories [`v2_by_id`] looks at, at most.
pub const BY_ID_MAX: usize = 100_000;

/// Cgroup `dir` opened `O_PATH` (for `clone3`'s `CLONE_INTO_CGROUP`).
pub fn open_path(dir: &CgroupDir) -> Result<OwnedFd> {
    rustix::fs::openat(
        &*dir.base,
        dir.rel_or_dot(),
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| rerr(format!("open {dir}"), e))
}

/// The controllers a cgroup v2 directory enables for its children
/// (cgroup.subtree_control); empty when it has none or is no cgroup.
pub fn subtree_control(dir: &CgroupDir) -> Vec<String> {
    read_limit(dir, "cgroup.subtree_control")
        .ok()
        .flatten()
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

// ---- the cgroup freezer (`dump --freeze-cgroup`) ----

/// Which freezer a cgroup directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freezer {
    /// cgroup v2: `cgroup.freeze` (0/1), the result in `cgroup.events` ("frozen 1").
    V2,
    /// The v1 freezer controller: `freezer.state` (THAWED, FREEZING, FROZEN).
    V1,
}

impl Freezer {
    /// The interface file a freeze is asked through.
    fn file(self) -> &'static str {
        match self {
            Freezer::V2 => "cgroup.freeze",
            Freezer::V1 => "freezer.state",
        }
    }

    fn value(self, frozen: bool) -> &'static str {
        match (self, frozen) {
            (Freezer::V2, true) => "1",
            (Freezer::V2, false) => "0",
            (Freezer::V1, true) => "FROZEN",
            (Freezer::V1, false) => "THAWED",
        }
    }
}

/// The freezer of cgroup `dir`: v2 when its hierarchy is cgroup2 and it has
/// `cgroup.freeze` (every cgroup but the root), v1 when its hierarchy has the freezer
/// controller and it has `freezer.state` (every cgroup but the root); None otherwise.
pub fn freezer_of(dir: &CgroupDir) -> Option<Freezer> {
    if dir.controllers.is_empty() {
        dir.has("cgroup.freeze").then_some(Freezer::V2)
    } else if dir.controllers.split(',').any(|c| c == "freezer") {
        dir.has("freezer.state").then_some(Freezer::V1)
    } else {
        None
    }
}

/// Whether a freeze of cgroup `dir` is asked (by whoever asked it): v2 its own
/// `cgroup.freeze` is 1; v1 its `freezer.state` is not THAWED (FREEZING or FROZEN, also
/// when an ancestor is frozen).
pub fn freeze_asked(dir: &CgroupDir, f: Freezer) -> Result<bool> {
    let v = read_limit(dir, f.file())?.unwrap_or_default();
    Ok(match f {
        Freezer::V2 => v.trim() == "1",
        Freezer::V1 => v.trim() != "THAWED",
    })
}

/// Ask cgroup `dir` to be frozen or thawed (its processes and those of every cgroup
/// below it).
pub fn set_freeze(dir: &CgroupDir, f: Freezer, frozen: bool) -> Result<()> {
    write_limit(dir, f.file(), f.value(frozen))
}

/// Whether every process of cgroup `dir` (and below) is frozen now: v2 `frozen 1` in
/// `cgroup.events`, v1 `freezer.state` FROZEN. A v1 cgroup still FREEZING is asked
/// again (tasks forked meanwhile are caught by the next write).
pub fn frozen_now(dir: &CgroupDir, f: Freezer) -> Result<bool> {
    match f {
        Freezer::V2 => Ok(read_limit(dir, "cgroup.events")?
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == "frozen 1")),
        Freezer::V1 => {
            let v = read_limit(dir, "freezer.state")?.unwrap_or_default();
            match v.trim() {
                "FROZEN" => Ok(true),
                "FREEZING" => {
                    set_freeze(dir, f, true)?;
                    Ok(false)
                }
                _ => Ok(false),
            }
        }
    }
}

/// The processes of cgroup `dir` and of every cgroup below it (their `cgroup.procs`).
pub fn procs_below(dir: &CgroupDir) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        let procs = read_limit(&d, "cgroup.procs")?.unwrap_or_default();
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        let fd = rustix::fs::openat(
            &*d.base,
            d.rel_or_dot(),
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| rerr(format!("open {d}"), e))?;
        let entries = rustix::fs::Dir::read_from(&fd).map_err(|e| rerr(format!("read {d}"), e))?;
        for e in entries {
            let e = e.map_err(|e| rerr(format!("read {d}"), e))?;
            if e.file_type() != rustix::fs::FileType::Directory {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let sub = d.with_rel(d.rel.join(&name));
            if sub.is_cgroup() {
                todo.push(sub);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A process that puts a cgroup's freeze back as it was if ckpt dies (even by SIGKILL)
/// while it holds the cgroup frozen (or, v1, thawed for a while): it waits on a pipe
/// whose only writer is ckpt; the end of the pipe without a word first (ckpt gone)
/// makes it write the prior value. [`FreezeGuard::done`] (or dropping it) tells it to
/// leave things as they are and reaps it.
pub struct FreezeGuard {
    pid: i32,
    pipe: Option<OwnedFd>,
}

impl FreezeGuard {
    /// Start the guard of cgroup `dir`, which puts `prior_frozen` back.
    pub fn start(dir: &CgroupDir, f: Freezer, prior_frozen: bool) -> Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let file = std::ffi::CString::new(dir.rel_or_dot().join(f.file()).as_os_str().as_bytes())
            .map_err(|_| SysError::Other(format!("bad cgroup path {dir}")))?;
        let value = f.value(prior_frozen).as_bytes();
        let (rd, wr) = super::process::pipe()?;
        let (rfd, wfd, dfd) = (rd.as_raw_fd(), wr.as_raw_fd(), dir.base.as_raw_fd());
        let args = libc::clone_args {
            exit_signal: libc::SIGCHLD as u64,
            ..super::process::clone_args()
        };
        let child = super::process::clone3(&args);
        if child == 0 {
            // SAFETY: the forked child runs raw system calls only, on descriptors it
            // inherited and a string and value made before the fork, and ends with
            // `_exit`. It leaves ckpt's session (no terminal signal reaches it), waits
            // for ckpt's word or the end of the pipe, and writes one cgroup file.
            unsafe {
                libc::syscall(libc::SYS_setsid);
                libc::syscall(libc::SYS_close, wfd);
                let mut b = 0u8;
                let n = loop {
                    let n = libc::syscall(libc::SYS_read, rfd, &mut b as *mut u8, 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n == 0 {
                    let fd = libc::syscall(
                        libc::SYS_openat,
                        dfd,
                        file.as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    );
                    if fd >= 0 {
                        libc::syscall(libc::SYS_write, fd, value.as_ptr(), value.len());
                    }
                }
                libc::_exit(0);
            }
        }
        if child < 0 {
            return Err(SysError::os("clone3 (the cgroup freezer's guard)"));
        }
        drop(rd);
        Ok(Self {
            pid: child as i32,
            pipe: Some(wr),
        })
    }

    /// ckpt put the freeze back itself: the guard ends without acting.
    pub fn done(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        use std::io::Write;
        if let Some(p) = self.pipe.take() {
            let _ = fs::File::from(p).write_all(b"k");
            let _ = super::process::wait_exit(self.pid);
        }
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        self.finish();
    }
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
        assert_eq!(rel_of(&h[2], "/sub/t"), Some(PathBuf::from("t")));
        assert_eq!(rel_of(&h[2], "/sub"), Some(PathBuf::from("")));
        assert_eq!(rel_of(&h[2], "/other"), None);
        assert_eq!(rel_of(&h[2], "/subway"), None);
        assert_eq!(rel_of(&h[0], "/a"), Some(PathBuf::from("a")));
        // Not held open (a parsed text): no directory.
        assert!(dir_of(&h[0], "/a").is_none());
        assert_eq!(canonical("cpuacct,cpu"), "cpu,cpuacct");
    }
}
