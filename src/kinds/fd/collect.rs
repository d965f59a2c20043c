//! The collect dispatch over descriptors: what each descriptor of a process is (asked of
//! its kind's module), which descriptors share an open file description, and what the
//! sockets of the tree are once the whole tree is known.

use super::{anon, epoll, fanotify, fifo, file, inotify, lock, pidfd, pipe, tcp, tty, unix};
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::kinds::unsupported;
use crate::model::{FOwner, Fd, FdKind, InodeOwner, Process, SocketPairState};
use crate::sys;
use crate::sys::proc as procfs;
use linux_raw_sys::general::{F_OWNER_PGRP, F_OWNER_PID, F_OWNER_TID};
use std::collections::BTreeSet;
use std::path::PathBuf;

// ---- collect (dump) ----

/// A descriptor of a process as its /proc link and fdinfo show it, what each kind's
/// collect starts from.
pub(crate) struct OpenFd {
    pub(crate) pid: i32,
    pub(crate) fd: i32,
    /// /proc/PID/fd/FD
    pub(crate) link_path: String,
    /// Where that link leads.
    pub(crate) link: Vec<u8>,
    /// `link`, lossily as text.
    pub(crate) name: String,
    pub(crate) pos: u64,
    /// The status flags, without O_CLOEXEC.
    pub(crate) flags: u32,
}

impl OpenFd {
    /// A refusal naming the descriptor as `kind`.
    pub(crate) fn not_yet(&self, kind: &str) -> DumpError {
        unsupported(
            self.pid,
            format!(
                "file descriptor {} is {kind} ({}); not supported yet",
                self.fd, self.name
            ),
        )
    }
}

/// An fdinfo of descriptor `fd` (of kind `kind`) that cannot be parsed.
pub(crate) fn fdinfo_unparsed(pid: i32, fd: i32, kind: &str) -> DumpError {
    DumpError::Sys(crate::sys::SysError::Other(format!(
        "cannot parse /proc/{pid}/fdinfo/{fd} ({kind})"
    )))
}

/// Descriptor `fd` of process `pid`, with the file locks held through it.
pub(crate) fn fd_entry(pid: i32, fd: i32) -> DumpResult<Fd> {
    fd_entry_by(pid, fd, &collect_kind)
}

/// ckpt's copy `fd` of a descriptor only in flight (`inflight`), as [`fd_entry`] reads
/// it, but an epoll instance's items looked for among `holders` (descriptors of the
/// tree's processes and ckpt's copies: its sender added them, in its own table).
pub(crate) fn fd_entry_in_flight(fd: i32, holders: &[(i32, i32)]) -> DumpResult<Fd> {
    let me = std::process::id() as i32;
    fd_entry_by(me, fd, &|d: &OpenFd| {
        let kind = d.name.strip_prefix("anon_inode:").unwrap_or("");
        if matches!(kind, "[eventpoll]" | "eventpoll") {
            let info = procfs::fdinfo_text(d.pid, d.fd)?;
            return epoll::collect_in_flight(d, kind, &info, holders);
        }
        collect_kind(d)
    })
}

/// [`fd_entry`], what the descriptor is asked of `kind`.
fn fd_entry_by(pid: i32, fd: i32, kind: &dyn Fn(&OpenFd) -> DumpResult<FdKind>) -> DumpResult<Fd> {
    let link_path = format!("/proc/{pid}/fd/{fd}");
    let link = procfs::readlink(&link_path)?;
    let name = String::from_utf8_lossy(&link).into_owned();
    let locks = lock::fd_locks(pid, fd, &name)?;
    let mut f = fd_entry_kind(pid, fd, &link, kind)?;
    if !locks.is_empty() {
        // Locks are taken again on descriptors reopened by path; elsewhere they would
        // silently vanish.
        if !matches!(f.kind, FdKind::File { .. } | FdKind::Dir { .. }) {
            return Err(unsupported(
                pid,
                format!(
                    "file descriptor {fd} ({name}) holds a file lock on a file that is not \
                     reopened by path (only locks on regular files and directories are \
                     supported)"
                ),
            ));
        }
        f.locks = locks;
    }
    f.owner = fd_owner(pid, fd)?;
    f.inode_owner = inode_owner(pid, fd, &link)?;
    Ok(f)
}

/// Who owns the inode of a pipe or socket (its creator's filesystem IDs): restore makes
/// them again and gives them that owner. Other descriptors' owners are their files'.
fn inode_owner(pid: i32, fd: i32, link: &[u8]) -> DumpResult<Option<InodeOwner>> {
    use std::os::unix::fs::MetadataExt;
    if !link.starts_with(b"pipe:") && !link.starts_with(b"socket:") {
        return Ok(None);
    }
    let path = format!("/proc/{pid}/fd/{fd}");
    let m = std::fs::metadata(&path).map_err(|e| sys::SysError::io(format!("stat {path}"), e))?;
    Ok(Some(InodeOwner {
        uid: m.uid(),
        gid: m.gid(),
    }))
}

/// The signal owner and F_SETSIG signal of descriptor `fd` (`None` when both are the
/// default: no owner, SIGIO).
fn fd_owner(pid: i32, fd: i32) -> DumpResult<Option<FOwner>> {
    let (kind, owner, sig) = sys::process::fd_owner(pid, fd)?;
    Ok((owner != 0 || sig != 0).then_some(FOwner {
        kind,
        pid: owner,
        sig,
    }))
}

/// Every descriptor's signal owner must be a process (or, for a group, a process
/// group) of the tree, which restore gives back: one outside it is refused, naming the
/// descriptor. (A thread other than a main one is refused too: restore creates threads
/// after the descriptors.)
pub(crate) fn check_fd_owners(procs: &[Process]) -> DumpResult<()> {
    let pids: BTreeSet<i32> = procs.iter().map(|p| p.pid).collect();
    let pgids: BTreeSet<i32> = procs.iter().map(|p| p.pgid).collect();
    for p in procs {
        for f in &p.fds {
            let Some(o) = f.owner else { continue };
            let ok = match o.kind as u32 {
                _ if o.pid == 0 => true,
                F_OWNER_PGRP => pgids.contains(&o.pid),
                F_OWNER_PID | F_OWNER_TID => pids.contains(&o.pid),
                _ => false,
            };
            if !ok {
                let what = match o.kind as u32 {
                    F_OWNER_PGRP => "process group",
                    F_OWNER_TID => "thread",
                    _ => "process",
                };
                return Err(unsupported(
                    p.pid,
                    format!(
                        "file descriptor {} sends its I/O signals (F_SETOWN) to {what} {}, \
                         which is not {} of the tree; restore could not give it back",
                        f.fd,
                        o.pid,
                        if what == "thread" {
                            "the main thread of a process"
                        } else {
                            "one"
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn fd_entry_kind(
    pid: i32,
    fd: i32,
    link: &[u8],
    collect_kind: &dyn Fn(&OpenFd) -> DumpResult<FdKind>,
) -> DumpResult<Fd> {
    let link_path = format!("/proc/{pid}/fd/{fd}");
    let link = link.to_vec();
    let (pos, flags) = procfs::fdinfo(pid, fd)?;
    let cloexec = flags & libc::O_CLOEXEC as u32 != 0;
    let flags = flags & !(libc::O_CLOEXEC as u32);
    let name = String::from_utf8_lossy(&link).into_owned();
    let d = OpenFd {
        pid,
        fd,
        link_path,
        link,
        name,
        pos,
        flags,
    };
    Ok(Fd {
        fd,
        cloexec,
        kind: collect_kind(&d)?,
        shared_with: None,
        locks: Vec::new(),
        owner: None,
        inode_owner: None,
        in_flight: false,
    })
}

/// The collect dispatch: what descriptor `d` is, asked of its kind's module.
fn collect_kind(d: &OpenFd) -> DumpResult<FdKind> {
    if let Some(id) = d
        .name
        .strip_prefix("pipe:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(pipe::collect(id, d.flags));
    }
    if let Some(kind) = d.name.strip_prefix("anon_inode:") {
        return anon_inode_kind(d, kind);
    }
    if !d.link.starts_with(b"/") {
        // socket:[N]: decided by resolve_sockets once the whole tree is known.
        if d.link.starts_with(b"socket:") {
            return Ok(FdKind::Inherited {
                what: d.name.clone(),
                flags: d.flags,
                tty: None,
            });
        }
        let kind = if d.link.starts_with(b"pipe:") {
            "a pipe"
        } else if d.link.starts_with(b"socket:") {
            "a socket"
        } else {
            "a special file"
        };
        return Err(d.not_yet(kind));
    }
    let (id, nlink) = procfs::file_stat(&PathBuf::from(&d.link_path), &d.link)?;
    let id = crate::model::FileId::from(id);
    let (fd, flags) = (d.fd, d.flags);
    match id.mode & libc::S_IFMT {
        libc::S_IFREG if crate::sys::ipc::is_posix_mqueue(&d.link_path) => {
            super::mqueue::collect(d, nlink == 0)
        }
        libc::S_IFREG => file::collect_regular(d, id, nlink),
        libc::S_IFDIR => file::collect_dir(d, id, nlink),
        libc::S_IFCHR | libc::S_IFBLK if tty::is_tty(&id) => tty::collect(d, &id),
        libc::S_IFCHR | libc::S_IFBLK => Ok(FdKind::Device {
            // A device node outside the process's mount namespace (a container's
            // standard input on the host's /dev/null) is opened there again.
            file: crate::model::FileId {
                outside: file::outside_mount_ns(d)?,
                ..id
            },
            flags,
            pos: d.pos,
        }),
        libc::S_IFSOCK if fd <= 2 => Ok(FdKind::Inherited {
            what: d.name.clone(),
            flags,
            tty: None,
        }),
        libc::S_IFIFO => fifo::collect(d),
        _ => Err(d.not_yet("a special file")),
    }
}

/// Anonymous-inode descriptors (`anon_inode:[kind]`), by their kind.
fn anon_inode_kind(d: &OpenFd, kind: &str) -> DumpResult<FdKind> {
    let kind = kind.trim_start_matches('[').trim_end_matches(']');
    let info = procfs::fdinfo_text(d.pid, d.fd)?;
    match kind {
        "eventfd" | "timerfd" | "signalfd" => anon::collect(d, kind, &info),
        "[eventpoll" | "eventpoll" => epoll::collect(d, kind, &info),
        "pidfd" => pidfd::collect(d, &info),
        "inotify" => Ok(FdKind::Inotify {
            flags: d.flags,
            watches: inotify::inotify_watches(d.pid, d.fd, &info)?,
        }),
        "io_uring" => super::uring::collect(d, &info),
        "fanotify" => fanotify::collect(d, &info),
        _ => Err(d.not_yet(&format!("a special file ({kind})"))),
    }
}

/// Find descriptors that share an open file description with an earlier one in the
/// image (kcmp), so restore opens each description once.
pub(crate) fn link_shared_fds(procs: &mut [Process]) -> DumpResult<()> {
    use std::collections::BTreeMap;
    fn key(k: &FdKind) -> Option<(u8, u64, u64)> {
        match k {
            FdKind::File { file, .. }
            | FdKind::Dir { file, .. }
            | FdKind::Device { file, .. }
            | FdKind::Fifo { file, .. } => Some((0, file.dev, file.ino)),
            FdKind::Pipe { id, write, .. } => Some((1, *id, u64::from(*write))),
            // Anonymous-inode files all share one inode: compare every pair of a kind.
            FdKind::EventFd { .. } => Some((2, 0, 0)),
            FdKind::TimerFd { .. } => Some((2, 1, 0)),
            FdKind::SignalFd { .. } => Some((2, 2, 0)),
            FdKind::Epoll { .. } => Some((2, 3, 0)),
            FdKind::UnixPair { id, end, .. } => Some((3, *id, u64::from(*end))),
            FdKind::UnixListen { .. } => Some((2, 4, 0)),
            FdKind::TcpListen { .. } => Some((2, 5, 0)),
            FdKind::TcpConn { .. } => Some((2, 6, 0)),
            FdKind::TcpQueued { .. } => Some((2, 7, 0)),
            FdKind::Inotify { .. } => Some((2, 7, 0)),
            FdKind::Udp { .. } => Some((2, 8, 0)),
            FdKind::UnixDgram { .. } => Some((2, 9, 0)),
            FdKind::UnixPending { .. } => Some((2, 10, 0)),
            FdKind::TcpUnconnected { .. } => Some((2, 13, 0)),
            FdKind::Netlink { .. } => Some((2, 14, 0)),
            FdKind::InetRaw { .. } => Some((2, 15, 0)),
            FdKind::Packet { .. } => Some((2, 16, 0)),
            FdKind::Fanotify { .. } => Some((2, 17, 0)),
            FdKind::Pidfd { pid, .. } => Some((8, *pid as u64, 0)),
            FdKind::Memfd { data, .. } | FdKind::DeletedFile { data, .. } => Some((4, *data, 0)),
            FdKind::PosixMq { ino, .. } => Some((5, *ino, 0)),
            FdKind::Pty { index, master, .. } => Some((6, u64::from(*index), u64::from(*master))),
            FdKind::DevTty { index, .. } => Some((7, u64::from(*index), 0)),
            FdKind::Inherited { .. } | FdKind::External { .. } => None,
        }
    }
    let mut seen: BTreeMap<(u8, u64, u64), Vec<(i32, i32)>> = BTreeMap::new();
    for p in procs.iter_mut() {
        let pid = p.pid;
        for f in p.fds.iter_mut() {
            let Some(k) = key(&f.kind) else { continue };
            let earlier = seen.entry(k).or_default();
            for &(q, qfd) in earlier.iter() {
                if sys::process::same_file_description(pid, f.fd, q, qfd)? {
                    f.shared_with = Some((q, qfd));
                    break;
                }
            }
            if f.shared_with.is_none() {
                earlier.push((pid, f.fd));
            }
        }
    }
    Ok(())
}

/// The socket inode of a descriptor still waiting for [`resolve_sockets`].
pub(crate) fn socket_ino(k: &FdKind) -> Option<u64> {
    match k {
        FdKind::Inherited { what, .. } => what
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok()),
        _ => None,
    }
}

/// Sockets: unix socket pairs with both ends in the tree (and the data queued in each
/// direction, peeked without consuming it) and listening unix sockets are kept; a socket
/// leading outside is a standard descriptor connected at restore to ckpt's own (0-2), or
/// refused, naming it. The dispatch over socket kinds: a socket sock_diag lists is a
/// unix one, any other is asked whether it is TCP or UDP.
pub(crate) fn resolve_sockets(
    procs: &mut [Process],
    repair: &mut Vec<(std::os::fd::OwnedFd, bool)>,
    external: bool,
) -> DumpResult<Vec<SocketPairState>> {
    let any = procs
        .iter()
        .any(|p| p.fds.iter().any(|f| socket_ino(&f.kind).is_some()));
    if !any {
        return Ok(Vec::new());
    }
    let mut unix = unix::UnixTable::read(procs, socket_ino)?;
    // Processes in a network namespace a process below the root made: their sockets are
    // looked at from there (ckpt's dumping thread joins it for them, then the root's
    // again), and must all have been made there (`belownet`).
    let below: Vec<bool> = procs
        .iter()
        .map(|p| crate::kinds::ns::net_below_root(procs, p))
        .collect();
    let root = procs.first().map_or(0, |r| r.pid);
    let nets = super::belownet::add_namespaces(procs, &below, &mut unix)?;
    for (p, &below) in procs.iter_mut().zip(&below) {
        if !below {
            super::belownet::made_here(p, &nets)?;
            resolve_process_sockets(p, &mut unix, repair, external)?;
            continue;
        }
        sys::ns::join(p.pid, "net")?;
        let r = super::belownet::below_root_sockets(p, &mut unix, repair, external);
        sys::ns::join(root, "net")?;
        r?;
    }
    super::belownet::check_peers(procs, &below)?;
    tcp::resolve_queued(procs)?;
    Ok(unix.pairs)
}

/// The sockets of process `p` (see [`resolve_sockets`]).
pub(super) fn resolve_process_sockets(
    p: &mut Process,
    unix: &mut unix::UnixTable,
    repair: &mut Vec<(std::os::fd::OwnedFd, bool)>,
    external: bool,
) -> DumpResult<()> {
    {
        let pid = p.pid;
        for f in p.fds.iter_mut() {
            let Some(ino) = socket_ino(&f.kind) else {
                continue;
            };
            let FdKind::Inherited { flags, .. } = f.kind else {
                continue;
            };
            let fd = f.fd;
            let refuse = |what: &str| {
                unsupported(
                    pid,
                    format!("file descriptor {fd} is {what} (socket:[{ino}]); not supported yet"),
                )
            };
            if unix.lists(ino) {
                unix.resolve(pid, f, ino, flags, external, &refuse)?;
            } else {
                tcp::collect_inet(pid, f, flags, repair, &refuse)?;
            }
        }
    }
    Ok(())
}
