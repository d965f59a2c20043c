//! A PID namespace made outside the tree (a pod's shared one) that a restored tree is
//! built in: which IDs are in use there, seen from ckpt's namespace (its ancestor), and
//! the processes ckpt creates in it with the IDs it chooses (`clone3` with `set_tid`
//! after `setns`, which changes only the namespace of the children made afterwards).

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::process::{clone_args, clone3, pipe};
use super::{Result, SysError, rerr};

/// NS_GET_PARENT (linux/nsfs.h): _IO(0xb7, 0x2).
const NS_GET_PARENT: libc::c_ulong = 0xb702;

/// The parent of PID namespace `f`; None when it is outside ckpt's view (EPERM: `f` is
/// ckpt's own or not below it) or the initial one.
fn parent(f: &fs::File) -> Option<fs::File> {
    // SAFETY: NS_GET_PARENT takes no argument; it returns a new descriptor or -1.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_PARENT as _) };
    if r < 0 {
        return None;
    }
    // SAFETY: `r` is a new descriptor that nothing else owns.
    Some(fs::File::from(unsafe { OwnedFd::from_raw_fd(r) }))
}

fn ino(f: &fs::File) -> Result<u64> {
    f.metadata()
        .map(|m| m.ino())
        .map_err(|e| SysError::io("stat a PID namespace file", e))
}

/// How many levels PID namespace `ns` is below ckpt's own: 0 for ckpt's own; an error
/// when it is not below it (setns could not enter it).
pub fn depth_below_ours(ns: &fs::File) -> Result<usize> {
    let ours = super::ns::inode(0, "pid")?;
    let mut cur = ns
        .try_clone()
        .map_err(|e| SysError::io("dup a PID namespace file", e))?;
    let mut depth = 0;
    // (Nesting is limited to 32 levels by the kernel.)
    while depth <= 33 {
        if ino(&cur)? == ours {
            return Ok(depth);
        }
        match parent(&cur) {
            Some(p) => cur = p,
            None => break,
        }
        depth += 1;
    }
    Err(SysError::Other(format!(
        "the PID namespace pid:[{}] is not below ckpt's own (pid:[{ours}])",
        ino(ns)?
    )))
}

/// The IDs in use in PID namespace `ns` (below ckpt's), each with the name of the task
/// that holds it: every thread of every process this /proc shows whose namespace is
/// `ns` or below it. A zombie, whose namespace /proc no longer shows, counts as in it
/// when it has an ID at that level.
pub fn ids_in_use(ns: &fs::File) -> Result<BTreeMap<i32, String>> {
    let depth = depth_below_ours(ns)?;
    let target = ino(ns)?;
    // Namespaces already placed: inside `ns` or not.
    let mut inside: BTreeMap<u64, bool> = BTreeMap::new();
    inside.insert(target, true);
    let mut out = BTreeMap::new();
    let dir = fs::read_dir("/proc").map_err(|e| SysError::io("read /proc", e))?;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        let mut member = None;
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
                continue;
            };
            let nspid: Vec<i32> = text
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let Some(&id) = nspid.get(depth) else {
                continue;
            };
            let m = match member {
                Some(m) => m,
                None => {
                    let m = in_namespace(pid, nspid.len() - 1 - depth, &mut inside);
                    member = Some(m);
                    m
                }
            };
            if !m {
                break;
            }
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .map(|n| n.trim().to_string())
                .unwrap_or_default();
            out.insert(id, name);
        }
    }
    Ok(out)
}

/// Whether process `pid`, whose namespace is `up` levels below the one looked at, is in
/// it or below it (`known`: namespaces already placed).
fn in_namespace(pid: i32, up: usize, known: &mut BTreeMap<u64, bool>) -> bool {
    let Ok(f) = fs::File::open(format!("/proc/{pid}/ns/pid")) else {
        // A zombie (or a process gone meanwhile): counted.
        return true;
    };
    let Ok(own) = ino(&f) else {
        return true;
    };
    if let Some(&k) = known.get(&own) {
        return k;
    }
    let mut cur = f;
    for _ in 0..up {
        match parent(&cur) {
            Some(p) => cur = p,
            None => return true,
        }
    }
    let at = ino(&cur).ok();
    let m = at.and_then(|i| known.get(&i).copied()).unwrap_or(false);
    known.insert(own, m);
    m
}

/// setns(CLONE_NEWPID) into `ns` for the children made by `f`, then back into ours.
fn with_children_in<T>(ns: &fs::File, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    let ours = fs::File::open("/proc/self/ns/pid")
        .map_err(|e| SysError::io("open /proc/self/ns/pid", e))?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::ProcessID))
        .map_err(|e| rerr("setns into the tree's PID namespace", e))?;
    let r = f();
    // Back to the PID namespace we live in, which setns always allows.
    let back = move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::ProcessID));
    match (r, back) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(rerr("setns back to our PID namespace", e)),
        (Ok(v), Ok(())) => Ok(v),
    }
}

/// Create the root's stub in PID namespace `ns` with ID `pid` there: our child, or our
/// parent's (`sibling`, CLONE_PARENT, as `criu`'s `rst_sibling` asks). It waits for a
/// byte on the returned pipe (written by its tracer once it seized it), then stops
/// itself with SIGSTOP; it exits if the pipe's writers all go away first. Returns (its
/// PID here, the pipe's write end). Must be called while this process is
/// single-threaded.
pub fn spawn_stub_in(ns: &fs::File, pid: i32, sibling: bool) -> Result<(i32, OwnedFd)> {
    let (rd, wr) = pipe()?;
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
    let tid: libc::pid_t = pid;
    let args = libc::clone_args {
        flags: if sibling {
            libc::CLONE_PARENT as u64
        } else {
            0
        },
        // With CLONE_PARENT the kernel uses our own exit signal for the child.
        exit_signal: if sibling { 0 } else { libc::SIGCHLD as u64 },
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..clone_args()
    };
    let r = with_children_in(ns, || {
        // In the child (return 0) only raw syscalls run before it stops or exits, so no
        // libc or Rust runtime state is used in an inconsistent state.
        let r = clone3(&args);
        if r == 0 {
            // SAFETY: raw syscalls only; see above. _exit never returns.
            unsafe {
                libc::syscall(libc::SYS_close, wfd);
                super::process::stop_when_told(rfd);
            }
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let msg = match e.raw_os_error() {
                Some(libc::EEXIST) => {
                    format!("PID {pid} is already in use in the tree's PID namespace")
                }
                _ => format!("clone3 of the root as PID {pid} in the tree's PID namespace"),
            };
            return Err(SysError::io(msg, e));
        }
        Ok(r as i32)
    })?;
    drop(rd);
    Ok((r, wr))
}

/// Fork a child of ours into PID namespace `ns` with ID `ns_pid` there (it should
/// `process::mount_own_proc` next). `Ok(Some(child))` in the parent (its PID here),
/// `Ok(None)` in the child. Must be called while this process is single-threaded.
pub fn fork_into(ns: &fs::File, ns_pid: i32) -> Result<Option<i32>> {
    let tid: libc::pid_t = ns_pid;
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..clone_args()
    };
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    let ours = fs::File::open("/proc/self/ns/pid")
        .map_err(|e| SysError::io("open /proc/self/ns/pid", e))?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::ProcessID))
        .map_err(|e| rerr("setns into the tree's PID namespace", e))?;
    // The caller guarantees a single-threaded process, so the child's copy of every lock
    // and of the allocator is consistent and it may go on running Rust code.
    let r = clone3(&args);
    if r == 0 {
        // The child: its children go to its own namespace already.
        return Ok(None);
    }
    let err =
        (r < 0).then(|| SysError::os(format!("clone3 into the tree's PID namespace as {ns_pid}")));
    // Back to the PID namespace we live in, which setns always allows.
    let back = move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::ProcessID));
    if let Some(e) = err {
        return Err(e);
    }
    back.map_err(|e| rerr("setns back to our PID namespace", e))?;
    Ok(Some(r as i32))
}
