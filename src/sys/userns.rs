//! User namespaces: who owns a namespace (`NS_GET_USERNS`, `NS_GET_PARENT`,
//! `NS_GET_OWNER_UID` of linux/nsfs.h), a user namespace's ID maps, and making a new
//! one with given maps (and the namespaces it is to own) through a forked helper.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::{Result, SysError};
use linux_raw_sys::ioctl::{NS_GET_OWNER_UID, NS_GET_PARENT, NS_GET_USERNS};

/// The namespace file of kind `kind` of process `pid` (0: ckpt), opened.
fn open_ns(pid: i32, kind: &str) -> Result<fs::File> {
    let p = if pid == 0 {
        format!("/proc/self/ns/{kind}")
    } else {
        format!("/proc/{pid}/ns/{kind}")
    };
    fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))
}

/// The inode of the namespace an nsfs ioctl (`NS_GET_USERNS`, `NS_GET_PARENT`) returns
/// for namespace file `f`.
fn related_ino(f: &fs::File, req: u32, what: &str) -> Result<u64> {
    // SAFETY: NS_GET_USERNS and NS_GET_PARENT take no argument and return a new
    // descriptor (or fail with EPERM, ENOTTY, EINVAL); the descriptor is owned below.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _) };
    super::check(r as libc::c_long, || what.to_string())?;
    // SAFETY: `r` is a descriptor the kernel just gave us and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(r) };
    let m = fs::File::from(fd)
        .metadata()
        .map_err(|e| SysError::io(format!("fstat ({what})"), e))?;
    Ok(m.ino())
}

/// The inode of the user namespace that owns the namespace of kind `kind` of process
/// `pid` (for a user namespace, its parent).
pub fn owner_ino(pid: i32, kind: &str) -> Result<u64> {
    let f = open_ns(pid, kind)?;
    related_ino(
        &f,
        NS_GET_USERNS,
        &format!("NS_GET_USERNS of /proc/{pid}/ns/{kind}"),
    )
}

/// The inode of the parent of the user namespace process `pid` is in.
pub fn parent_ino(pid: i32) -> Result<u64> {
    let f = open_ns(pid, "user")?;
    related_ino(
        &f,
        NS_GET_PARENT,
        &format!("NS_GET_PARENT of /proc/{pid}/ns/user"),
    )
}

/// The user ID (as ckpt's namespace shows it) of the creator of the user namespace
/// process `pid` is in.
pub fn owner_uid(pid: i32) -> Result<u32> {
    let f = open_ns(pid, "user")?;
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer it is given.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) };
    super::check(r as libc::c_long, || {
        format!("NS_GET_OWNER_UID of /proc/{pid}/ns/user")
    })?;
    Ok(uid)
}

/// The text of /proc/PID/`file` (uid_map, gid_map, setgroups) of process `pid`: the
/// maps' outside IDs as ckpt's user namespace sees them.
pub fn read_file(pid: i32, file: &str) -> Result<String> {
    let p = format!("/proc/{pid}/{file}");
    fs::read_to_string(&p).map_err(|e| SysError::io(format!("read {p}"), e))
}

/// A new user namespace and the namespaces it owns, made by [`make`]: each held by a
/// descriptor of its namespace file (the helper that made them is gone).
#[derive(Debug)]
pub struct NewUserNs {
    /// The user namespace.
    pub user: OwnedFd,
    /// The other namespaces (CLONE_NEW* flag, namespace file), owned by it.
    pub others: Vec<(libc::c_int, OwnedFd)>,
    /// With `UserNsSpec::pid`: the new PID namespace, owned by it, no process in it yet
    /// (for [`super::process::spawn_pidns_init_stub`]).
    pub pid: Option<OwnedFd>,
    /// With `UserNsSpec::time`: the new time namespace, owned by it, its offsets
    /// written, no process in it yet.
    pub time: Option<OwnedFd>,
}

/// What [`make`] makes.
pub struct UserNsSpec<'a> {
    /// The user ID the helper takes before it makes the namespace (its owner).
    pub owner_uid: u32,
    /// The group ID it takes with it.
    pub owner_gid: u32,
    /// The texts written to uid_map and gid_map (outside IDs as ckpt sees them).
    pub uid_map: &'a str,
    pub gid_map: &'a str,
    /// setgroups(2) allowed in the namespace ("allow"); else "deny" is written first.
    pub setgroups: bool,
    /// The other namespaces to make, owned by it (CLONE_NEWUTS, CLONE_NEWIPC,
    /// CLONE_NEWNET, CLONE_NEWNS; the kinds below are listed with their flag).
    pub others: &'a [(&'a str, libc::c_int)],
    /// Make a new PID namespace too, owned by it, for the helper's children: no
    /// process is in it until ckpt makes its init.
    pub pid: bool,
    /// Cgroups the helper moves itself into first, while it has ckpt's privileges
    /// (their `cgroup.procs`, from [`super::cgroup::procs_targets`]): a CLONE_NEWCGROUP
    /// among `others` makes a cgroup namespace rooted at them.
    pub cgroups: &'a [(libc::c_int, std::ffi::CString)],
    /// Make a new time namespace too, owned by it, for the helper's children, with
    /// these offsets (CLOCK_MONOTONIC, CLOCK_BOOTTIME, nanoseconds), written by ckpt
    /// before anything is in it.
    pub time: Option<(i64, i64)>,
    /// The user namespace to make it in (the helper joins it first; its owner's IDs
    /// and the maps' outside IDs are then as that namespace shows them, and a second
    /// helper that joined it writes the maps: the kernel takes a map only from a
    /// process in the namespace's parent); `None`: ckpt's.
    pub parent: Option<&'a OwnedFd>,
}

/// PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE of linux/pidfd.h (Linux 6.11):
/// `_IO(PIDFS_IOCTL_MAGIC, 6)`, PIDFS_IOCTL_MAGIC being 0xFF.
const PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE: libc::c_ulong = 0xFF06;

/// The PID namespace of the children of process `pid` (its `pid_for_children`),
/// opened through a pidfd: unlike /proc/PID/ns/pid_for_children, this works before
/// any process is in it.
pub fn pid_for_children(pid: i32) -> Result<OwnedFd> {
    let pidfd = super::process::pidfd_open(pid)?;
    // SAFETY: the ioctl takes no argument (0: the kernel refuses another) and returns
    // a new descriptor (or fails),
    // owned below.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE as _,
            0,
        )
    };
    super::check(r as libc::c_long, || {
        format!("PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE of process {pid} (Linux 6.11 or later)")
    })?;
    // SAFETY: `r` is a descriptor the kernel just gave us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// This kernel lets ckpt open a PID namespace that has no process yet
/// ([`pid_for_children`], tried on ckpt itself).
pub fn can_open_empty_pid_namespaces() -> bool {
    pid_for_children(super::process::own_pid()).is_ok()
}

/// In a helper forked from ckpt (raw system calls only): move the calling process into
/// each cgroup of `cgroups` (a directory descriptor and the NUL-terminated path of a
/// `cgroup.procs` below it, from [`super::cgroup::procs_targets`], kept alive by the
/// caller). False as soon as one fails.
fn move_into_cgroups(cgroups: &[(libc::c_int, *const libc::c_char)]) -> bool {
    cgroups.iter().all(|(dfd, p)| {
        // SAFETY: `p` points to a NUL-terminated path the caller keeps alive, the
        // write reads one byte of a static string, and the descriptor opened here is
        // closed here.
        unsafe {
            let fd = libc::syscall(libc::SYS_openat, *dfd, *p, libc::O_WRONLY | libc::O_CLOEXEC);
            let ok = fd >= 0 && libc::syscall(libc::SYS_write, fd, c"0".as_ptr(), 1) == 1;
            if fd >= 0 {
                libc::syscall(libc::SYS_close, fd);
            }
            ok
        }
    })
}

/// Make a new user namespace as `spec` says: a helper forked from ckpt takes the
/// owner's IDs and unshares CLONE_NEWUSER; ckpt, in the parent namespace, writes its
/// setgroups, uid_map and gid_map; the helper, root with every capability in the new
/// namespace, then unshares the other namespaces (so that the new user namespace owns
/// them) and ckpt opens all of them from its /proc entry. The helper ends before this
/// returns; the namespaces last as long as the returned descriptors (or what joins
/// them). ckpt must be single-threaded for the fork's child to be sound (it only makes
/// raw system calls).
pub fn make(spec: &UserNsSpec<'_>) -> Result<NewUserNs> {
    use std::io::{Read, Write};
    let (to_child_rd, to_child_wr) = super::process::pipe()?;
    let (from_child_rd, from_child_wr) = super::process::pipe()?;
    let (crd, cwr) = (to_child_rd.as_raw_fd(), from_child_wr.as_raw_fd());
    // ckpt's ends, which the child closes (it waits for the end of `to_child`).
    let (pwr, prd) = (to_child_wr.as_raw_fd(), from_child_rd.as_raw_fd());
    let others_flags = spec.others.iter().fold(0, |a, (_, f)| a | f)
        | if spec.pid { libc::CLONE_NEWPID } else { 0 }
        | if spec.time.is_some() {
            libc::CLONE_NEWTIME
        } else {
            0
        };
    let cgroups: Vec<(libc::c_int, *const libc::c_char)> =
        spec.cgroups.iter().map(|(d, p)| (*d, p.as_ptr())).collect();
    let (uid, gid) = (spec.owner_uid, spec.owner_gid);
    let parent_ns = spec.parent.map_or(-1, |f| f.as_raw_fd());
    let parent = super::process::own_pid();
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..super::process::clone_args()
    };
    let child = super::process::clone3(&args);
    if child == 0 {
        // SAFETY: the forked child runs raw system calls only (see `die_with_parent`),
        // on descriptors it inherited and values copied before the fork, and ends with
        // `_exit`. What it changes (its IDs, its namespaces) is its own.
        unsafe {
            super::process::die_with_parent(parent);
            let fail = |code: i32| libc::_exit(code);
            let mut b = [0u8; 1];
            libc::syscall(libc::SYS_close, pwr);
            libc::syscall(libc::SYS_close, prd);
            if !move_into_cgroups(&cgroups) {
                fail(9);
            }
            if parent_ns >= 0 && libc::syscall(libc::SYS_setns, parent_ns, libc::CLONE_NEWUSER) != 0
            {
                fail(10);
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                fail(2);
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                fail(3);
            }
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) != 0 {
                fail(4);
            }
            if libc::syscall(libc::SYS_write, cwr, b.as_ptr(), 1) != 1 {
                fail(5);
            }
            // Maps written: root in the namespace now.
            if libc::syscall(libc::SYS_read, crd, b.as_mut_ptr(), 1) != 1 {
                fail(6);
            }
            if others_flags != 0 && libc::syscall(libc::SYS_unshare, others_flags) != 0 {
                fail(7);
            }
            if libc::syscall(libc::SYS_write, cwr, b.as_ptr(), 1) != 1 {
                fail(8);
            }
            // Until ckpt has opened our namespaces and closes its end.
            libc::syscall(libc::SYS_read, crd, b.as_mut_ptr(), 1);
            libc::_exit(0);
        }
    }
    if child < 0 {
        return Err(SysError::os("clone3 (making a user namespace)"));
    }
    let child = child as i32;
    drop((to_child_rd, from_child_wr));
    let mut rd = fs::File::from(from_child_rd);
    let mut wr = fs::File::from(to_child_wr);
    let res = (|| {
        let mut b = [0u8; 1];
        let status_of = |what: &str| {
            SysError::Other(format!(
                "the helper making the user namespace ended before {what}"
            ))
        };
        rd.read_exact(&mut b)
            .map_err(|_| status_of("it made the namespace"))?;
        let base = format!("/proc/{child}");
        if let Some(p) = spec.parent {
            write_maps_from(p, child, spec)?;
        } else {
            if !spec.setgroups {
                fs::write(format!("{base}/setgroups"), "deny")
                    .map_err(|e| SysError::io(format!("write \"deny\" to {base}/setgroups"), e))?;
            }
            for (file, text) in [("uid_map", spec.uid_map), ("gid_map", spec.gid_map)] {
                // One write: the kernel takes a map whole, once.
                fs::OpenOptions::new()
                    .write(true)
                    .open(format!("{base}/{file}"))
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| SysError::io(format!("write {text:?} to {base}/{file}"), e))?;
            }
        }
        wr.write_all(b"g")
            .map_err(|e| SysError::io("wake the user namespace helper", e))?;
        rd.read_exact(&mut b)
            .map_err(|_| status_of("it made the namespaces owned by it"))?;
        let user = OwnedFd::from(open_ns(child, "user")?);
        let mut others = Vec::new();
        for (kind, flag) in spec.others {
            others.push((*flag, OwnedFd::from(open_ns(child, kind)?)));
        }
        let pid = match spec.pid {
            true => Some(pid_for_children(child)?),
            false => None,
        };
        let time = match spec.time {
            Some((m, b)) => {
                // One write, before anything is in the namespace (the kernel takes
                // offsets only then); ckpt is privileged over its owner.
                let text = super::ns::format_timens_offsets(m, b);
                let p = format!("{base}/timens_offsets");
                fs::write(&p, &text)
                    .map_err(|e| SysError::io(format!("write {text:?} to {p}"), e))?;
                Some(OwnedFd::from(open_ns(child, "time_for_children")?))
            }
            None => None,
        };
        Ok(NewUserNs {
            user,
            others,
            pid,
            time,
        })
    })();
    drop((rd, wr));
    let status = super::process::wait_exit(child);
    match (res, status) {
        (Ok(n), Ok(st)) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => Ok(n),
        (Ok(_), Ok(st)) | (Err(SysError::Other(_)), Ok(st)) => Err(SysError::Other(format!(
            "the helper making the user namespace failed (status {st:#x}: {})",
            match libc::WEXITSTATUS(st) {
                2 => "setresgid",
                3 => "setresuid",
                4 => "unshare(CLONE_NEWUSER)",
                7 => "unshare of the namespaces it owns",
                9 => "moving itself into the cgroup namespace's cgroups",
                10 => "setns into the parent user namespace",
                _ => "see the status",
            }
        ))),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Write the setgroups state and the maps of the user namespace helper `child` made
/// in `spec.parent` (their outside IDs as that namespace shows them): the kernel takes
/// a map only from a process in the namespace or its parent, so a second helper forked
/// from ckpt joins the parent (where it has every capability) and writes them (raw
/// system calls only, on paths and texts made before the fork).
fn write_maps_from(parent: &OwnedFd, child: i32, spec: &UserNsSpec<'_>) -> Result<()> {
    use std::ffi::CString;
    let cs =
        |s: String| CString::new(s).map_err(|_| SysError::Other("a map with a NUL byte".into()));
    let mut files: Vec<(CString, Vec<u8>)> = Vec::new();
    if !spec.setgroups {
        files.push((cs(format!("/proc/{child}/setgroups"))?, b"deny".to_vec()));
    }
    files.push((
        cs(format!("/proc/{child}/uid_map"))?,
        spec.uid_map.as_bytes().to_vec(),
    ));
    files.push((
        cs(format!("/proc/{child}/gid_map"))?,
        spec.gid_map.as_bytes().to_vec(),
    ));
    let raw: Vec<(*const libc::c_char, *const u8, usize)> = files
        .iter()
        .map(|(p, t)| (p.as_ptr(), t.as_ptr(), t.len()))
        .collect();
    let pfd = parent.as_raw_fd();
    let me = super::process::own_pid();
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..super::process::clone_args()
    };
    let w = super::process::clone3(&args);
    if w == 0 {
        // SAFETY: the forked child runs raw system calls only, on a descriptor and
        // buffers made before the fork, and ends with `_exit`; what it changes (its
        // user namespace) is its own.
        unsafe {
            super::process::die_with_parent(me);
            if libc::syscall(libc::SYS_setns, pfd, libc::CLONE_NEWUSER) != 0 {
                libc::_exit(2);
            }
            for (i, (path, text, len)) in raw.iter().enumerate() {
                let fd = libc::syscall(libc::SYS_openat, libc::AT_FDCWD, *path, libc::O_WRONLY);
                if fd < 0 {
                    libc::_exit(10 + i as i32);
                }
                // One write: the kernel takes a map whole, once.
                if libc::syscall(libc::SYS_write, fd, *text, *len) != *len as libc::c_long {
                    libc::_exit(20 + i as i32);
                }
                libc::syscall(libc::SYS_close, fd);
            }
            libc::_exit(0);
        }
    }
    if w < 0 {
        return Err(SysError::os(
            "clone3 (writing a nested user namespace's maps)",
        ));
    }
    let st = super::process::wait_exit(w as i32)?;
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        return Ok(());
    }
    let code = libc::WEXITSTATUS(st);
    let what = match code {
        2 => "setns into the parent user namespace".to_string(),
        10..=12 | 20..=22 => {
            let i = (code % 10) as usize;
            let (p, t) = &files[i.min(files.len() - 1)];
            format!(
                "{} {:?} to {}",
                if code < 20 { "open, to write" } else { "write" },
                String::from_utf8_lossy(t),
                p.to_string_lossy()
            )
        }
        _ => "see the status".into(),
    };
    Err(SysError::Other(format!(
        "the helper writing a nested user namespace's maps failed (status {st:#x}: {what})"
    )))
}

/// New namespaces of the CLONE_NEW* kinds `kinds` (flag, name as in /proc/PID/ns/),
/// owned by the user namespace `user`: a helper forked from ckpt moves itself into
/// `cgroups` first, while it has ckpt's privileges (their `cgroup.procs`, from
/// [`super::cgroup::procs_targets`]: a CLONE_NEWCGROUP among `kinds` makes a cgroup
/// namespace rooted at them), joins `user` (where it has every capability), unshares
/// them, names a new UTS namespace `uts` (host, domain) and waits until ckpt has
/// opened them. ckpt must be single-threaded for the fork's child to be sound (raw
/// system calls only).
pub fn make_owned(
    user: &OwnedFd,
    kinds: &[(&str, libc::c_int)],
    uts: Option<(&[u8], &[u8])>,
    cgroups: &[(libc::c_int, std::ffi::CString)],
) -> Result<Vec<(libc::c_int, OwnedFd)>> {
    use std::io::Read;
    let (to_child_rd, to_child_wr) = super::process::pipe()?;
    let (from_child_rd, from_child_wr) = super::process::pipe()?;
    let (crd, cwr) = (to_child_rd.as_raw_fd(), from_child_wr.as_raw_fd());
    let (pwr, prd) = (to_child_wr.as_raw_fd(), from_child_rd.as_raw_fd());
    let ufd = user.as_raw_fd();
    let flags = kinds.iter().fold(0, |a, (_, f)| a | f);
    let uts = uts.filter(|_| flags & libc::CLONE_NEWUTS != 0);
    let set_names = uts.is_some();
    let (host, dom) = uts.unwrap_or((&[], &[]));
    let (hp, hl, dp, dl) = (host.as_ptr(), host.len(), dom.as_ptr(), dom.len());
    let cgroups: Vec<(libc::c_int, *const libc::c_char)> =
        cgroups.iter().map(|(d, p)| (*d, p.as_ptr())).collect();
    let parent = super::process::own_pid();
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..super::process::clone_args()
    };
    let child = super::process::clone3(&args);
    if child == 0 {
        // SAFETY: the forked child runs raw system calls only, on descriptors it
        // inherited and buffers made before the fork, and ends with `_exit`; what it
        // changes (its cgroups, its namespaces) is its own.
        unsafe {
            super::process::die_with_parent(parent);
            let mut b = [0u8; 1];
            libc::syscall(libc::SYS_close, pwr);
            libc::syscall(libc::SYS_close, prd);
            if !move_into_cgroups(&cgroups) {
                libc::_exit(6);
            }
            if libc::syscall(libc::SYS_setns, ufd, libc::CLONE_NEWUSER) != 0 {
                libc::_exit(2);
            }
            if libc::syscall(libc::SYS_unshare, flags) != 0 {
                libc::_exit(3);
            }
            if set_names
                && (libc::syscall(libc::SYS_sethostname, hp, hl) != 0
                    || libc::syscall(libc::SYS_setdomainname, dp, dl) != 0)
            {
                libc::_exit(5);
            }
            if libc::syscall(libc::SYS_write, cwr, b.as_ptr(), 1) != 1 {
                libc::_exit(4);
            }
            // Until ckpt has opened the namespaces and closes its end.
            libc::syscall(libc::SYS_read, crd, b.as_mut_ptr(), 1);
            libc::_exit(0);
        }
    }
    if child < 0 {
        return Err(SysError::os(
            "clone3 (making namespaces in a user namespace)",
        ));
    }
    let child = child as i32;
    drop((to_child_rd, from_child_wr));
    let mut rd = fs::File::from(from_child_rd);
    let wr = fs::File::from(to_child_wr);
    let mut b = [0u8; 1];
    let res = match rd.read_exact(&mut b) {
        Ok(()) => kinds
            .iter()
            .map(|(k, f)| open_ns(child, k).map(|o| (*f, OwnedFd::from(o))))
            .collect::<Result<Vec<_>>>(),
        Err(_) => Err(SysError::Other(
            "the helper making namespaces in a user namespace failed".into(),
        )),
    };
    drop((rd, wr));
    let status = super::process::wait_exit(child)?;
    match res {
        Ok(v) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => Ok(v),
        Ok(_) => Err(SysError::Other(format!(
            "the helper making namespaces in a user namespace ended with status {status:#x}"
        ))),
        Err(e) => Err(SysError::Other(format!(
            "{e} (status {status:#x}: {})",
            match libc::WEXITSTATUS(status) {
                2 => "setns into the user namespace",
                3 => "unshare",
                5 => "naming the new UTS namespace",
                6 => "moving itself into the cgroup namespace's cgroups",
                _ => "see the status",
            }
        ))),
    }
}

/// A copy of the calling thread's mount namespace owned by the user namespace `user`
/// (a helper forked from ckpt joins `user` and unshares CLONE_NEWNS): made from a more
/// privileged namespace, every mount of the copy is locked as the kernel locks them
/// for a less privileged one (it cannot be unmounted alone to reveal what it covers,
/// nor have its read-only, nosuid, nodev, noexec or atime flags changed from inside).
/// ckpt must be single-threaded for the fork's child to be sound (raw system calls
/// only).
pub fn copy_mount_ns(user: &OwnedFd) -> Result<OwnedFd> {
    make_owned(user, &[("mnt", libc::CLONE_NEWNS)], None, &[])?
        .pop()
        .map(|(_, f)| f)
        .ok_or_else(|| SysError::Other("copying the mount namespace gave none".into()))
}

/// Make the calling thread join the namespace of file `f` of kind `flag` (a namespace
/// [`make`] made, other than the user and PID namespaces: a thread may join it alone;
/// a mount namespace only a thread with a root and working directory of its own, as
/// after `mount::unshare_private`; a time namespace only a single-threaded process,
/// which is then in it itself, its clocks shifted, as well as its next children).
pub fn join(f: &OwnedFd, flag: libc::c_int) -> Result<()> {
    // SAFETY: setns with a namespace file we hold open and a UTS, IPC, network, mount,
    // cgroup or time flag changes only this thread's namespaces (for a mount namespace,
    // its own root and working directory too; for a time namespace, the clocks the
    // process reads), no memory or descriptor state other code relies on.
    let r = unsafe { libc::setns(f.as_raw_fd(), flag) };
    super::check(r as libc::c_long, || format!("setns({flag:#x})"))?;
    Ok(())
}

/// Write files of /proc/sys (`sysctls`: path below /proc/sys, value) of an IPC
/// namespace a user namespace owns, which the calling thread joined: the kernel lets
/// only the namespace's root (as an effective user ID: `root`, the outside ID its user
/// ID 0 maps to) write them, whatever its capabilities. A thread of ckpt (in the
/// calling thread's namespaces) takes that effective user ID for itself alone (a raw
/// system call: credentials are per thread), writes them and ends.
pub fn write_sysctls_as(root: u32, sysctls: &[(String, String)]) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: the raw setresuid changes only this thread's credentials (unlike
            // libc's, which changes every thread's), and the thread ends below.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, -1, root, -1) };
            super::check(r, || {
                format!("setresuid(-1, {root}, -1) (a thread of ckpt)")
            })?;
            for (k, v) in sysctls {
                super::ns::write_sysctl(k, v)?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| SysError::Other("a thread writing IPC limits panicked".into()))?
    })
}

/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
pub fn cap_last_cap() -> Result<u32> {
    let p = "/proc/sys/kernel/cap_last_cap";
    fs::read_to_string(p)
        .map_err(|e| SysError::io(format!("read {p}"), e))?
        .trim()
        .parse()
        .map_err(|_| SysError::Other(format!("cannot parse {p}")))
}
