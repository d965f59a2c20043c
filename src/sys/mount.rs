//! Mounts: reading a mount namespace (/proc/PID/mountinfo, the files of a tmpfs seen
//! from a private copy of it) and building one for a restored tree (mount, bind,
//! remount, propagation, pivot_root), on the calling thread only.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::mount::{MountFlags, MountPropagationFlags, OpenTreeFlags, UnmountFlags};

use super::{Result, SysError, rerr};
use crate::model::FsEntry;

/// One line of /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountLine {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    pub root: Vec<u8>,
    pub point: Vec<u8>,
    pub options: Vec<String>,
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: Vec<u8>,
    pub super_options: String,
}

impl MountLine {
    /// The device number (as stat's st_dev).
    pub fn dev(&self) -> u64 {
        libc::makedev(self.major, self.minor)
    }
}

/// A mountinfo field with its octal escapes (`\040` for a space...) undone.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The lines of a mountinfo text; `None` if one cannot be parsed.
pub fn parse_mountinfo(text: &str) -> Option<Vec<MountLine>> {
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = l.split(' ').collect();
        let sep = w.iter().position(|x| *x == "-")?;
        if sep < 6 || w.len() < sep + 4 {
            return None;
        }
        let (major, minor) = w[2].split_once(':')?;
        out.push(MountLine {
            id: w[0].parse().ok()?,
            parent: w[1].parse().ok()?,
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            root: unescape(w[3]),
            point: unescape(w[4]),
            options: w[5].split(',').map(str::to_string).collect(),
            optional: w[6..sep].iter().map(|s| s.to_string()).collect(),
            fstype: w[sep + 1].to_string(),
            source: unescape(w[sep + 2]),
            super_options: w[sep + 3..].join(" "),
        });
    }
    Some(out)
}

/// The mounts process `pid` sees (0: ckpt itself).
pub fn mountinfo(pid: i32) -> Result<Vec<MountLine>> {
    let p = if pid == 0 {
        "/proc/self/mountinfo".to_string()
    } else {
        format!("/proc/{pid}/mountinfo")
    };
    let text = fs::read_to_string(&p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    parse_mountinfo(&text).ok_or_else(|| SysError::Other(format!("cannot parse {p}")))
}

/// The mounts the calling thread sees (its mount namespace may be another than ckpt's
/// main thread's, which /proc/self shows: [`in_mount_ns`], [`in_private_copy`]).
fn thread_mountinfo() -> Result<Vec<MountLine>> {
    let p = "/proc/thread-self/mountinfo";
    let text = fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    parse_mountinfo(&text).ok_or_else(|| SysError::Other(format!("cannot parse {p}")))
}

/// Give the calling thread a file system context (root, working directory) of its own,
/// then put it in the mount namespace of process `pid`.
fn enter_mount_ns_of(pid: i32) -> Result<()> {
    let p = format!("/proc/{pid}/ns/mnt");
    let f = fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))?;
    // SAFETY: unshare(CLONE_FS) gives the calling thread its own root and working
    // directory (a copy): no memory or descriptor state other code relies on.
    let r = unsafe { libc::unshare(libc::CLONE_FS) };
    super::check(r as libc::c_long, || "unshare(CLONE_FS)".into())?;
    // SAFETY: setns with a mount namespace file we hold open changes only this thread's
    // mount namespace, root and working directory (its file system context is its own).
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS) };
    super::check(r as libc::c_long, || format!("setns {p}"))?;
    Ok(())
}

/// Put the calling thread (its file system context its own first) in the mount
/// namespace of process `pid`, at its root.
pub fn enter_mount_ns(pid: i32) -> Result<()> {
    enter_mount_ns_of(pid)
}

/// Run `f` on a thread of ckpt in the mount namespace of process `pid` (at its root):
/// paths it opens are the namespace's. The thread ends with `f`.
pub fn in_mount_ns<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_mount_ns_of(pid)?;
            Ok(f())
        })
        .join()
        .map_err(|_| SysError::Other("a thread in a mount namespace panicked".into()))?
    })
}

/// [`in_mount_ns`] for a process in a PID namespace of its own too, whose /proc shows
/// that namespace (where ckpt has no ID: no /proc/self): `f` runs in a private copy of
/// the namespace with a proc of ckpt's on /proc (the copy ends with the thread; nothing
/// is mounted in the tree's).
pub fn in_mount_ns_own_proc<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_mount_ns_of(pid)?;
            // SAFETY: unshare(CLONE_NEWNS) gives this thread (its file system context is
            // its own) a copy of the namespace; it ends with the thread.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            super::check(r as libc::c_long, || "unshare(CLONE_NEWNS)".into())?;
            rustix::mount::mount_change(
                c"/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .map_err(|e| rerr("make the copied mounts private", e))?;
            mount_new(b"proc", b"/proc", "proc", false, "")?;
            Ok(f())
        })
        .join()
        .map_err(|_| SysError::Other("a thread in a mount namespace panicked".into()))?
    })
}

/// Whether the proc mounted at `point` in the mount namespace of process `pid` shows
/// that process as `id` (its ID in its own PID namespace): its entry there is the same
/// process (same PID namespace and start time as /proc/PID shows). `Ok(false)` when it
/// has no such entry or another process's.
pub fn proc_shows_as(pid: i32, point: &[u8], id: i32) -> Result<bool> {
    let mut p = format!("/proc/{pid}/root").into_bytes();
    if point != b"/" {
        p.extend(point);
    }
    p.extend(format!("/{id}").as_bytes());
    let os = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes;
    let at = os(&p).to_os_string();
    let ours = format!("/proc/{pid}");
    let ident = |dir: &std::ffi::OsStr| -> std::io::Result<(u64, String)> {
        let d = std::path::Path::new(dir);
        let ns = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(d.join("ns/pid"))?);
        let stat = std::fs::read_to_string(d.join("stat"))?;
        // (starttime: the 20th field after the command's closing parenthesis)
        let start = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(19))
            .unwrap_or_default()
            .to_string();
        Ok((ns, start))
    };
    let theirs = match ident(&at) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(SysError::io(format!("read {}", at.to_string_lossy()), e)),
    };
    let own =
        ident(std::ffi::OsStr::new(&ours)).map_err(|e| SysError::io(format!("read {ours}"), e))?;
    Ok(theirs == own)
}

/// The files of the file system mounted at `point` in the mount namespace of process
/// `pid` (that mount alone, without what is mounted below it), at most `cap` bytes of
/// data. Read by a thread of ckpt in a private copy of that namespace (which ends with
/// it: nothing is mounted in the tree's).
pub fn read_files(pid: i32, point: &[u8], cap: u64) -> Result<Vec<FsEntry>> {
    let point = point.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_mount_ns_of(pid)?;
            // SAFETY: unshare(CLONE_NEWNS) gives this thread (its file system context is
            // its own) a copy of the namespace; it ends with the thread.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            super::check(r as libc::c_long, || "unshare(CLONE_NEWNS)".into())?;
            rustix::mount::mount_change(
                c"/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .map_err(|e| rerr("make the copied mounts private", e))?;
            let tree = rustix::mount::open_tree(
                rustix::fs::CWD,
                OsStr::from_bytes(&point),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| rerr(format!("open_tree {}", String::from_utf8_lossy(&point)), e))?;
            let mut out = Vec::new();
            let mut bytes = 0;
            walk(
                &tree,
                Vec::new(),
                &mut out,
                &mut bytes,
                cap,
                &mut Vec::new(),
            )?;
            Ok(out)
        })
        .join()
        .map_err(|_| SysError::Other("a thread reading a tmpfs panicked".into()))?
    })
}

fn ts(t: (i64, u32)) -> Timespec {
    Timespec {
        tv_sec: t.0,
        tv_nsec: i64::from(t.1),
    }
}

/// The entry for `name` in directory `dir` (`name` empty: the directory itself, `dir`),
/// then (a directory) what it holds. `seen`: (dev, ino, path) of files with more than
/// one name.
fn walk(
    dir: &OwnedFd,
    path: Vec<u8>,
    out: &mut Vec<FsEntry>,
    bytes: &mut u64,
    cap: u64,
    seen: &mut Vec<(u64, u64, Vec<u8>)>,
) -> Result<()> {
    let name = path.rsplit(|c| *c == b'/').next().unwrap_or(&[]).to_vec();
    let show = || String::from_utf8_lossy(&path).into_owned();
    let st = if path.is_empty() {
        rustix::fs::fstat(dir)
    } else {
        rustix::fs::statat(dir, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
    }
    .map_err(|e| rerr(format!("stat {}", show()), e))?;
    let mode = st.st_mode;
    let mut e = FsEntry {
        path: path.clone(),
        mode,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        atime: (st.st_atime, st.st_atime_nsec as u32),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        ..Default::default()
    };
    let fmt = mode & libc::S_IFMT;
    if fmt != libc::S_IFDIR && st.st_nlink > 1 {
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(d, i, _)| *d == st.st_dev && *i == st.st_ino)
        {
            e.link_to = first.clone();
            out.push(e);
            return Ok(());
        }
        seen.push((st.st_dev, st.st_ino, path.clone()));
    }
    match fmt {
        libc::S_IFDIR => {
            let d = if path.is_empty() {
                rustix::fs::openat(dir, c".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            } else {
                rustix::fs::openat(
                    dir,
                    OsStr::from_bytes(&name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            }
            .map_err(|e| rerr(format!("open {}", show()), e))?;
            e.xattrs = xattrs(&d);
            out.push(e);
            let mut names = Vec::new();
            let it =
                rustix::fs::Dir::read_from(&d).map_err(|e| rerr(format!("list {}", show()), e))?;
            for ent in it {
                let ent = ent.map_err(|e| rerr(format!("list {}", show()), e))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names.sort();
            for n in names {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend(&n);
                walk(&d, p, out, bytes, cap, seen)?;
            }
            return Ok(());
        }
        libc::S_IFREG => {
            let f = rustix::fs::openat(
                dir,
                OsStr::from_bytes(&name),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| rerr(format!("open {}", show()), e))?;
            e.size = st.st_size as u64;
            e.xattrs = xattrs(&f);
            let mut off = 0u64;
            while off < e.size {
                let start = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(off)) {
                    Ok(s) => s,
                    Err(rustix::io::Errno::NXIO) => break,
                    Err(er) => return Err(rerr(format!("seek {}", show()), er)),
                };
                let end = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(start))
                    .map_err(|er| rerr(format!("seek {}", show()), er))?
                    .min(e.size);
                if end <= start {
                    break;
                }
                *bytes += end - start;
                if *bytes > cap {
                    return Err(SysError::Other(format!(
                        "its files hold more than {} MiB of data (at {})",
                        cap >> 20,
                        show()
                    )));
                }
                let mut buf = vec![0u8; (end - start) as usize];
                let mut got = 0;
                while got < buf.len() {
                    let n = rustix::io::pread(&f, &mut buf[got..], start + got as u64)
                        .map_err(|er| rerr(format!("read {}", show()), er))?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                buf.truncate(got);
                e.extents.push((start, serde_bytes::ByteBuf::from(buf)));
                off = end;
            }
        }
        libc::S_IFLNK => {
            e.target = rustix::fs::readlinkat(dir, OsStr::from_bytes(&name), Vec::new())
                .map_err(|er| rerr(format!("readlink {}", show()), er))?
                .into_bytes();
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {}
        _ => {
            return Err(SysError::Other(format!(
                "{} is a socket file, which is not kept",
                show()
            )));
        }
    }
    out.push(e);
    Ok(())
}

/// The extended attributes of an open file (none if they cannot be listed).
fn xattrs(f: &OwnedFd) -> Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> {
    let mut out = Vec::new();
    let Ok(n) = rustix::fs::flistxattr_query(f) else {
        return out;
    };
    if n == 0 {
        return out;
    }
    let mut list = vec![0u8; n];
    let Ok(n) = rustix::fs::flistxattr(f, &mut list[..]) else {
        return out;
    };
    for name in list[..n].split(|c| *c == 0).filter(|x| !x.is_empty()) {
        let Ok(len) = rustix::fs::fgetxattr_query(f, OsStr::from_bytes(name)) else {
            continue;
        };
        let mut v = vec![0u8; len];
        if let Ok(len) = rustix::fs::fgetxattr(f, OsStr::from_bytes(name), &mut v[..]) {
            v.truncate(len);
            out.push((
                serde_bytes::ByteBuf::from(name.to_vec()),
                serde_bytes::ByteBuf::from(v),
            ));
        }
    }
    out
}

// ---- building a namespace (restore) ----

/// Give the calling thread a new mount namespace (a copy of its own, every mount made
/// private so that nothing made in it reaches the host's), and a file system context of
/// its own. Threads and children it creates afterwards share them.
pub fn unshare_private() -> Result<()> {
    // SAFETY: unshare(CLONE_NEWNS) (which implies CLONE_FS) gives the calling thread its
    // own root, working directory and mount namespace; no memory or descriptor state.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    super::check(r as libc::c_long, || "unshare(CLONE_NEWNS)".into())?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| rerr("make the new mount namespace's mounts private", e))
}

/// A path as a C string.
fn cpath(p: &[u8]) -> Result<CString> {
    CString::new(p).map_err(|_| SysError::Other("a path holds a NUL byte".into()))
}

/// The path of one of ckpt's descriptors (through ckpt's /proc).
pub fn fd_path(fd: &impl AsFd) -> Vec<u8> {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()).into_bytes()
}

/// Mount a tmpfs on `target` (in the calling thread's private namespace).
pub fn mount_tmpfs(target: &[u8]) -> Result<()> {
    rustix::mount::mount(
        c"ckpt-stage",
        cpath(target)?.as_c_str(),
        c"tmpfs",
        MountFlags::empty(),
        Some(c"mode=0700"),
    )
    .map_err(|e| {
        rerr(
            format!("mount a tmpfs on {}", String::from_utf8_lossy(target)),
            e,
        )
    })
}

/// Bind `source` (not recursively) on `target`.
pub fn bind(source: &[u8], target: &[u8]) -> Result<()> {
    rustix::mount::mount_bind(cpath(source)?.as_c_str(), cpath(target)?.as_c_str()).map_err(|e| {
        rerr(
            format!(
                "bind {} on {}",
                String::from_utf8_lossy(source),
                String::from_utf8_lossy(target)
            ),
            e,
        )
    })
}

/// Mount a new file system.
pub fn mount_new(source: &[u8], target: &[u8], fstype: &str, ro: bool, data: &str) -> Result<()> {
    let flags = if ro {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = CString::new(data).map_err(|_| SysError::Other("bad mount options".into()))?;
    let ty = CString::new(fstype).map_err(|_| SysError::Other("bad file system type".into()))?;
    rustix::mount::mount(
        cpath(source)?.as_c_str(),
        cpath(target)?.as_c_str(),
        ty.as_c_str(),
        flags,
        Some(data.as_c_str()),
    )
    .map_err(|e| {
        rerr(
            format!(
                "mount a {fstype} ({}) on {} with {data:?}",
                String::from_utf8_lossy(source),
                String::from_utf8_lossy(target)
            ),
            e,
        )
    })
}

/// The per-mount flags of mountinfo's options ("ro", "nosuid"...).
pub fn mount_flags(options: &[String]) -> MountFlags {
    let mut f = MountFlags::empty();
    for o in options {
        f |= match o.as_str() {
            "ro" => MountFlags::RDONLY,
            "nosuid" => MountFlags::NOSUID,
            "nodev" => MountFlags::NODEV,
            "noexec" => MountFlags::NOEXEC,
            "noatime" => MountFlags::NOATIME,
            "nodiratime" => MountFlags::NODIRATIME,
            "relatime" => MountFlags::RELATIME,
            _ => MountFlags::empty(),
        };
    }
    if !options.iter().any(|o| o == "relatime" || o == "noatime") {
        f |= MountFlags::STRICTATIME;
    }
    f
}

/// Whether mountinfo's per-mount option `o` is one [`mount_flags`] sets.
pub fn known_mount_option(o: &str) -> bool {
    matches!(
        o,
        "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "noatime" | "nodiratime" | "relatime"
    )
}

/// Give the mount at `target` (a mount's root) these per-mount flags.
pub fn set_mount_flags(target: &[u8], flags: MountFlags) -> Result<()> {
    rustix::mount::mount_remount(cpath(target)?.as_c_str(), flags | MountFlags::BIND, c"").map_err(
        |e| {
            rerr(
                format!("remount {} with {flags:?}", String::from_utf8_lossy(target)),
                e,
            )
        },
    )
}

/// Make the file system of the mount at `target` read-only.
pub fn set_super_ro(target: &[u8]) -> Result<()> {
    rustix::mount::mount_remount(cpath(target)?.as_c_str(), MountFlags::RDONLY, c"").map_err(|e| {
        rerr(
            format!("remount {} read-only", String::from_utf8_lossy(target)),
            e,
        )
    })
}

/// Set the propagation of the mount at `target`: "shared", "slave", "private" or
/// "unbindable".
pub fn set_propagation(target: &[u8], how: &str) -> Result<()> {
    let f = match how {
        "shared" => MountPropagationFlags::SHARED,
        "slave" => MountPropagationFlags::DOWNSTREAM,
        "unbindable" => MountPropagationFlags::UNBINDABLE,
        _ => MountPropagationFlags::PRIVATE,
    };
    rustix::mount::mount_change(cpath(target)?.as_c_str(), f)
        .map_err(|e| rerr(format!("make {} {how}", String::from_utf8_lossy(target)), e))
}

/// Make the directory `new_root` (a mount) the root of the calling thread's namespace;
/// the old root and everything below it are detached.
pub fn pivot_into(new_root: &[u8]) -> Result<()> {
    rustix::process::chdir(cpath(new_root)?.as_c_str())
        .map_err(|e| rerr(format!("chdir {}", String::from_utf8_lossy(new_root)), e))?;
    rustix::process::pivot_root(c".", c".").map_err(|e| rerr("pivot_root", e))?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH)
        .map_err(|e| rerr("detach the old root", e))?;
    rustix::process::chdir(c"/").map_err(|e| rerr("chdir /", e))
}

/// Open (`O_PATH`) the host path `p` as the file system of device `dev` shows it: when
/// another mount covers it (mounts stacked on one point), the covering ones are
/// detached first. Only in a private mount namespace of the calling thread's own
/// ([`unshare_private`], [`in_private_copy`]): the host's mounts are not touched.
/// `None`: no such file of that device is there.
pub fn open_uncovered(p: &[u8], dev: u64) -> Result<Option<OwnedFd>> {
    for _ in 0..16 {
        let fd = open_path(p)?;
        if dev_ino(&fd)?.0 == dev {
            return Ok(Some(fd));
        }
        // The mount that shows `p`: the last listed of the longest point above it (in
        // the calling thread's namespace).
        let lines = thread_mountinfo()?;
        let above = |pt: &[u8]| {
            pt == b"/" || p == pt || (p.starts_with(pt) && p.get(pt.len()) == Some(&b'/'))
        };
        let Some(top) = lines
            .iter()
            .filter(|l| above(&l.point))
            .max_by_key(|l| l.point.len())
        else {
            return Ok(None);
        };
        if top.point == b"/" {
            return Ok(None);
        }
        rustix::mount::unmount(cpath(&top.point)?.as_c_str(), UnmountFlags::DETACH)
            .map_err(|e| rerr(format!("detach {}", String::from_utf8_lossy(&top.point)), e))?;
    }
    Ok(None)
}

/// A detached copy of the mount that shows the file open as `fd` (that mount alone,
/// from that file): a bind [`attach`] puts in place later, whatever is detached or
/// covered meanwhile.
pub fn clone_of(fd: &OwnedFd) -> Result<OwnedFd> {
    rustix::mount::open_tree(
        fd,
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| rerr("open_tree (a copy of an external mount)", e))
}

/// Attach the detached mount `tree` (from [`clone_of`]) on `target`.
pub fn attach(tree: &OwnedFd, target: &[u8]) -> Result<()> {
    rustix::mount::move_mount(
        tree,
        c"",
        rustix::fs::CWD,
        cpath(target)?.as_c_str(),
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        rerr(
            format!("attach a mount on {}", String::from_utf8_lossy(target)),
            e,
        )
    })
}

/// Put the private mount `to` in the peer group of `from` (and under its master), as
/// `move_mount(MOVE_MOUNT_SET_GROUP)` does: both are mount roots of one file system,
/// `to`'s root within `from`'s.
pub fn set_group(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
    use rustix::mount::MoveMountFlags as F;
    rustix::mount::move_mount(
        from,
        c"",
        to,
        c"",
        F::MOVE_MOUNT_SET_GROUP | F::MOVE_MOUNT_F_EMPTY_PATH | F::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| rerr("move_mount(MOVE_MOUNT_SET_GROUP)", e))
}

/// Detach the mount on `target`.
pub fn detach(target: &[u8]) -> Result<()> {
    rustix::mount::unmount(cpath(target)?.as_c_str(), UnmountFlags::DETACH)
        .map_err(|e| rerr(format!("detach {}", String::from_utf8_lossy(target)), e))
}

/// Run `f` on a thread of ckpt in a private copy of ckpt's mount namespace (which ends
/// with the thread).
pub fn in_private_copy<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            unshare_private()?;
            f()
        })
        .join()
        .map_err(|_| SysError::Other("a thread in a mount namespace panicked".into()))?
    })
}

/// Make the directory open as `fd` the calling thread's working directory.
pub fn fchdir(fd: &OwnedFd) -> Result<()> {
    rustix::process::fchdir(fd).map_err(|e| rerr("fchdir", e))
}

/// Open a directory or file with O_PATH (a mount's root, to name it later).
pub fn open_path(p: &[u8]) -> Result<OwnedFd> {
    rustix::fs::open(
        cpath(p)?.as_c_str(),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| rerr(format!("open {}", String::from_utf8_lossy(p)), e))
}

/// Whether an open file is a directory.
pub fn fd_is_dir(fd: &impl AsFd) -> Result<bool> {
    let st = rustix::fs::fstat(fd).map_err(|e| rerr("fstat", e))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// (device, inode) of an open file.
pub fn dev_ino(fd: &impl AsFd) -> Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).map_err(|e| rerr("fstat", e))?;
    Ok((st.st_dev, st.st_ino))
}

/// The birth time of the file `fd` is open on, in nanoseconds since the epoch (statx),
/// or 0 where the file system does not keep it.
pub fn born_ns(fd: &impl AsFd) -> u64 {
    use rustix::fs::{AtFlags, StatxFlags};
    match rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::BTIME) {
        Ok(st) if st.stx_mask & StatxFlags::BTIME.bits() != 0 => u64::try_from(st.stx_btime.tv_sec)
            .map_or(0, |s| {
                s.saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(st.stx_btime.tv_nsec))
            }),
        _ => 0,
    }
}

/// Whether `p` is a directory (false: anything else or nothing).
pub fn is_dir(p: &[u8]) -> bool {
    fs::metadata(OsStr::from_bytes(p)).is_ok_and(|m| m.is_dir())
}

/// Write `files` (from [`read_files`], the root first) into the empty file system
/// mounted at `target`.
pub fn write_files(target: &[u8], files: &[FsEntry]) -> Result<()> {
    let root = rustix::fs::open(
        cpath(target)?.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| rerr(format!("open {}", String::from_utf8_lossy(target)), e))?;
    let at = |p: &[u8]| -> CString {
        if p.is_empty() {
            c".".to_owned()
        } else {
            CString::new(p).unwrap_or_else(|_| c".".to_owned())
        }
    };
    for e in files {
        if e.path.contains(&0)
            || e.path
                .split(|c| *c == b'/')
                .any(|c| c == b".." || c == b".")
            || e.path.first() == Some(&b'/')
        {
            return Err(SysError::Other(format!(
                "bad path {:?} in a tmpfs's files",
                String::from_utf8_lossy(&e.path)
            )));
        }
        let show = || String::from_utf8_lossy(&e.path).into_owned();
        let p = at(&e.path);
        let perm = Mode::from_raw_mode(e.mode & 0o7777);
        if !e.link_to.is_empty() {
            rustix::fs::linkat(
                &root,
                at(&e.link_to).as_c_str(),
                &root,
                p.as_c_str(),
                AtFlags::empty(),
            )
            .map_err(|er| rerr(format!("link {}", show()), er))?;
            continue;
        }
        match e.mode & libc::S_IFMT {
            libc::S_IFDIR => {
                if !e.path.is_empty() {
                    rustix::fs::mkdirat(&root, p.as_c_str(), perm)
                        .map_err(|er| rerr(format!("mkdir {}", show()), er))?;
                }
                if !e.xattrs.is_empty() {
                    let d = rustix::fs::openat(
                        &root,
                        p.as_c_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|er| rerr(format!("open {}", show()), er))?;
                    set_xattrs(&d, e)?;
                }
            }
            libc::S_IFREG => {
                let f = rustix::fs::openat(
                    &root,
                    p.as_c_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    perm,
                )
                .map_err(|er| rerr(format!("create {}", show()), er))?;
                for (off, data) in &e.extents {
                    let mut done = 0;
                    while done < data.len() {
                        let n = rustix::io::pwrite(&f, &data[done..], off + done as u64)
                            .map_err(|er| rerr(format!("write {}", show()), er))?;
                        if n == 0 {
                            return Err(SysError::Other(format!("write {}: no room", show())));
                        }
                        done += n;
                    }
                }
                rustix::fs::ftruncate(&f, e.size)
                    .map_err(|er| rerr(format!("truncate {}", show()), er))?;
                set_xattrs(&f, e)?;
            }
            libc::S_IFLNK => {
                rustix::fs::symlinkat(cpath(&e.target)?.as_c_str(), &root, p.as_c_str())
                    .map_err(|er| rerr(format!("symlink {}", show()), er))?;
            }
            fmt @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let ft = rustix::fs::FileType::from_raw_mode(fmt);
                rustix::fs::mknodat(&root, p.as_c_str(), ft, perm, e.rdev)
                    .map_err(|er| rerr(format!("mknod {}", show()), er))?;
            }
            _ => {
                return Err(SysError::Other(format!(
                    "{} in a tmpfs's files is of a kind not restored",
                    show()
                )));
            }
        }
        rustix::fs::chownat(
            &root,
            p.as_c_str(),
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|er| rerr(format!("chown {}", show()), er))?;
        if e.mode & libc::S_IFMT != libc::S_IFLNK {
            // After chown, which clears the set-user and set-group ID bits.
            rustix::fs::chmodat(&root, p.as_c_str(), perm, AtFlags::empty())
                .map_err(|er| rerr(format!("chmod {}", show()), er))?;
        }
    }
    // Times last, the deepest first: making a name in a directory changes its times.
    for e in files.iter().rev().filter(|e| e.link_to.is_empty()) {
        let t = Timestamps {
            last_access: ts(e.atime),
            last_modification: ts(e.mtime),
        };
        rustix::fs::utimensat(&root, at(&e.path).as_c_str(), &t, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|er| {
                rerr(
                    format!("set the times of {}", String::from_utf8_lossy(&e.path)),
                    er,
                )
            })?;
    }
    Ok(())
}

fn set_xattrs(f: &OwnedFd, e: &FsEntry) -> Result<()> {
    for (k, v) in &e.xattrs {
        rustix::fs::fsetxattr(f, OsStr::from_bytes(k), v, rustix::fs::XattrFlags::empty())
            .map_err(|er| {
                rerr(
                    format!(
                        "set the attribute {} of {}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(&e.path)
                    ),
                    er,
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n\
                 90 25 0:40 /a\\040b /mnt/x\\040y ro,relatime master:3 propagate_from:2 - tmpfs none rw,size=1024k,mode=755\n\
                 91 25 8:1 /srv /data rw - ext4 /dev/sda1 rw,errors=remount-ro\n";
        let m = parse_mountinfo(t).expect("parses");
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].optional, vec!["shared:12"]);
        assert_eq!(m[1].root, b"/a b");
        assert_eq!(m[1].point, b"/mnt/x y");
        assert_eq!(m[1].options, vec!["ro", "relatime"]);
        assert_eq!(m[1].optional, vec!["master:3", "propagate_from:2"]);
        assert_eq!(m[1].super_options, "rw,size=1024k,mode=755");
        assert_eq!(m[1].dev(), libc::makedev(0, 40));
        assert!(m[2].optional.is_empty());
        assert_eq!(m[2].source, b"/dev/sda1");
        assert!(parse_mountinfo("1 2 x\n").is_none());
        assert_eq!(unescape("a\\134b\\"), b"a\\b\\");
    }

    #[test]
    fn flags_of_options() {
        let o = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            mount_flags(&o("ro,nosuid,relatime")),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::RELATIME
        );
        assert_eq!(mount_flags(&o("rw")), MountFlags::STRICTATIME);
    }
}
