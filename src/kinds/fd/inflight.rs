//! Descriptors only in flight: open file descriptions that no process of the tree
//! holds, only a queued unix message (`SCM_RIGHTS`) does (the sender passed a pipe, a
//! file or a socket to a worker and closed its own copy before the worker received it).
//!
//! Dump peeks at the queues of the tree's unix sockets (the peek installs what the
//! messages carry in ckpt, as the same open file descriptions, without consuming
//! anything) and keeps each description no descriptor of the tree has. While the tree's
//! descriptors are resolved (pipes, socket pairs, sharing), ckpt's copies stand in a
//! process of their own ([`InFlight::join`]); then each becomes a descriptor of the
//! process whose socket queue led to it, above its own descriptors and marked
//! `in_flight` ([`InFlight::place`]). The queues of sockets found so are peeked in
//! turn (a socket in flight with messages of its own, a socket carrying itself).
//! Restore makes them like any descriptor, sends them with their messages once every
//! process has its descriptors, and closes them ([`close_in_flight`]).

use super::collect::socket_ino;
use crate::error::{DumpError, DumpResult, Problem, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::{Checkpoint, Fd, FdKind, FdRef, Process, SocketPairState};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::sockdiag::{self, STATE_LISTEN, UnixSock};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};

// ---- collect (dump) ----

/// Most descriptors only in flight one dump keeps.
const MAX_IN_FLIGHT: usize = 4096;

/// One open file description only in flight.
struct Found {
    /// ckpt's copy (installed by a peek).
    fd: OwnedFd,
    /// The process whose socket queue led to it (restore makes it there), and that
    /// socket's descriptor.
    holder: i32,
    queue: i32,
}

/// The descriptors only in flight of a tree, as ckpt holds them for the dump.
pub(crate) struct InFlight {
    me: i32,
    found: Vec<Found>,
}

impl InFlight {
    /// Every open file description that a message queued on a unix socket of the tree
    /// carries and that no descriptor of the tree has (compared by inode, then kcmp),
    /// once; sockets among them have their own queues looked at too. A queue that
    /// cannot be read here is left to the socket's own collect, which says why.
    pub(crate) fn discover(procs: &[Process]) -> DumpResult<Self> {
        let me = std::process::id() as i32;
        let mut out = InFlight {
            me,
            found: Vec::new(),
        };
        let socks: Vec<(i32, i32, u64)> = procs
            .iter()
            .flat_map(|p| {
                p.fds
                    .iter()
                    .filter_map(move |f| socket_ino(&f.kind).map(|i| (p.pid, f.fd, i)))
            })
            .collect();
        if socks.is_empty() {
            return Ok(out);
        }
        let diag = sockdiag::unix_sockets()?;
        let mut tree: Option<TreeFiles> = None;
        let found = &mut out.found;
        walk(&diag, socks, |r, holder, queue| {
            let tree = tree.get_or_insert_with(|| TreeFiles::read(procs));
            if tree.holds(me, &r) || found.iter().any(|f| same(me, &f.fd, &r)) {
                return Ok(None);
            }
            if found.len() >= MAX_IN_FLIGHT {
                return Err(unsupported(
                    holder,
                    format!(
                        "more than {MAX_IN_FLIGHT} descriptors in flight (SCM_RIGHTS) \
                         that no process of the dumped tree holds"
                    ),
                ));
            }
            let dup = match socket_inode(&r) {
                Some(_) => Some(
                    r.try_clone()
                        .map_err(|e| sys::SysError::io("duplicate a descriptor in flight", e))?,
                ),
                None => None,
            };
            found.push(Found {
                fd: r,
                holder,
                queue,
            });
            Ok(dup)
        })?;
        Ok(out)
    }

    /// ckpt's copies as the descriptors of a process of its own (ckpt's PID, their
    /// numbers in ckpt), appended to `procs`, so that the tree's pipes, sockets and
    /// sharing are resolved with them ([`InFlight::place`] takes it out again).
    pub(crate) fn join(&self, procs: &mut Vec<Process>) -> DumpResult<()> {
        if self.found.is_empty() {
            return Ok(());
        }
        let root = procs.first().map_or(self.me, |r| r.pid);
        let mut fds = Vec::with_capacity(self.found.len());
        for f in &self.found {
            let raw = f.fd.as_raw_fd();
            if let Err(why) = before_collect(f, root) {
                return Err(self.refusal(f, &why));
            }
            // Where an epoll instance's items may be held: its receiver's descriptors
            // first (restore adds the items there), then ckpt's copies, then the rest.
            let fds_of = |p: &Process| p.fds.iter().map(move |g| (p.pid, g.fd)).collect();
            let mut holders: Vec<(i32, i32)> = Vec::new();
            for p in procs.iter().filter(|p| p.pid == f.holder) {
                holders.extend::<Vec<_>>(fds_of(p));
            }
            holders.extend(self.found.iter().map(|g| (self.me, g.fd.as_raw_fd())));
            for p in procs.iter().filter(|p| p.pid != f.holder) {
                holders.extend::<Vec<_>>(fds_of(p));
            }
            let mut e =
                super::fd_entry_in_flight(raw, &holders).map_err(|e| self.collect_refusal(f, e))?;
            e.in_flight = true;
            fds.push(e);
        }
        procs.push(Process {
            pid: self.me,
            fds,
            ..Default::default()
        });
        Ok(())
    }

    /// The refusal of descriptor `f`, only in flight, for reason `why`, naming the queue
    /// it waits on and what it is.
    fn refusal(&self, f: &Found, why: &str) -> DumpError {
        let what = sys::proc::readlink(&format!("/proc/self/fd/{}", f.fd.as_raw_fd()))
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        unsupported(
            f.holder,
            format!(
                "file descriptor {} is a unix socket with a message queued on it that \
                 carries {what} in flight (SCM_RIGHTS), which no process of the dumped \
                 tree holds: {why}",
                f.queue
            ),
        )
    }

    /// A refusal of collecting ckpt's copy `f` named by the queue it waits on.
    fn collect_refusal(&self, f: &Found, e: DumpError) -> DumpError {
        let tag = format!("file descriptor {} is ", f.fd.as_raw_fd());
        let rest = match &e {
            DumpError::Unsupported { pid, why } if *pid == self.me => {
                why.strip_prefix(&tag).map(str::to_string)
            }
            _ => None,
        };
        match rest {
            Some(rest) => self.refusal(f, &format!("it is {rest}")),
            None => self.name(e),
        }
    }

    /// A refusal that names a descriptor of ckpt's own process of [`InFlight::join`]
    /// named instead by the queue it is in flight on.
    pub(crate) fn name(&self, e: DumpError) -> DumpError {
        let DumpError::Unsupported { pid, why } = &e else {
            return e;
        };
        if *pid != self.me {
            return e;
        }
        let which = self
            .found
            .iter()
            .find_map(|f| {
                let tag = format!("file descriptor {} ", f.fd.as_raw_fd());
                why.strip_prefix(&tag).map(|rest| (f, rest.to_string()))
            })
            .or_else(|| self.found.first().map(|f| (f, why.clone())));
        match which {
            Some((f, rest)) => unsupported(
                f.holder,
                format!(
                    "file descriptor {} is a unix socket with a message queued on it that \
                     carries a descriptor in flight (SCM_RIGHTS) that no process of the \
                     dumped tree holds, and that descriptor {rest}",
                    f.queue
                ),
            ),
            None => e,
        }
    }

    /// The inodes of the sockets only in flight (the tree's own, for the plan dump runs).
    pub(crate) fn socket_inodes(&self) -> Vec<u64> {
        self.found
            .iter()
            .filter_map(|f| socket_inode(&f.fd))
            .collect()
    }

    /// Take ckpt's process of [`InFlight::join`] out of `procs` and make each of its
    /// descriptors one of the process that makes it at restore: numbered above that
    /// process's own, marked `in_flight`, and the messages that carry it (`pairs`, the
    /// datagram sockets' queues) naming it there. What restore cannot make only in
    /// flight is refused, naming the queue. Returns, for the contents of memfds and
    /// deleted files among them, ckpt's copies to read them through (data ID, copy).
    pub(crate) fn place(
        &self,
        procs: &mut Vec<Process>,
        pairs: &mut [SocketPairState],
    ) -> DumpResult<Vec<(u64, OwnedFd)>> {
        let mut data = Vec::new();
        if self.found.is_empty() {
            return Ok(data);
        }
        let synth = match procs.pop() {
            Some(p) if p.pid == self.me && p.fds.len() == self.found.len() => p,
            _ => {
                return Err(DumpError::Sys(sys::SysError::Other(
                    "the descriptors in flight are not where the dump left them".into(),
                )));
            }
        };
        let ckpts_mnt = sys::ns::inode(0, "mnt").ok();
        let mut next: BTreeMap<i32, i32> = BTreeMap::new();
        let mut map: BTreeMap<i32, (i32, i32)> = BTreeMap::new();
        let mut placed: Vec<(i32, Fd, &Found)> = Vec::new();
        for (mut f, found) in synth.fds.into_iter().zip(&self.found) {
            let raw = f.fd;
            let refuse = |why: String| self.refusal(found, &why);
            if let Err(why) = restorable(&f) {
                return Err(refuse(why.to_string()));
            }
            let by_path = matches!(
                f.kind,
                FdKind::File { .. }
                    | FdKind::Dir { .. }
                    | FdKind::Device { .. }
                    | FdKind::DeletedFile { .. }
                    | FdKind::Inotify { .. }
                    | FdKind::Fanotify { .. }
            );
            if by_path && sys::ns::inode(found.holder, "mnt").ok() != ckpts_mnt {
                return Err(refuse(
                    "a file opened by path (or an inotify or fanotify instance, whose \
                     watches and marks are set by path), in flight to a process in another \
                     mount namespace than ckpt's; not supported yet"
                        .into(),
                ));
            }
            let holder = procs
                .iter()
                .find(|p| p.pid == found.holder)
                .ok_or_else(|| refuse("its receiver is not in the dumped tree".into()))?;
            if let FdKind::DevTty { index, .. } = f.kind {
                // Restore opens /dev/tty in the receiver: the terminal it leads to (the
                // controlling one of whoever opened it, TIOCGDEV) must be the receiver's.
                let ctty = sys::proc::stat(found.holder).map_or(0, |s| s.field(7));
                if super::tty::pts_index(ctty) != Some(index) {
                    return Err(refuse(format!(
                        "it is /dev/tty opened on /dev/pts/{index}, which is not the \
                         controlling terminal of its receiver, process {} (restore opens \
                         /dev/tty in the process that receives it); not supported yet",
                        found.holder
                    )));
                }
            }
            let n = next.entry(found.holder).or_insert_with(|| {
                holder
                    .fds
                    .iter()
                    .map(|g| g.fd + 1)
                    .max()
                    .unwrap_or(3)
                    .max(3)
            });
            if let FdKind::Memfd { data: id, .. } | FdKind::DeletedFile { data: id, .. } = f.kind {
                let copy = found
                    .fd
                    .try_clone()
                    .map_err(|e| sys::SysError::io("duplicate a descriptor in flight", e))?;
                data.push((id, copy));
            }
            map.insert(raw, (found.holder, *n));
            f.fd = *n;
            *n += 1;
            placed.push((found.holder, f, found));
        }
        let me = self.me;
        let fix = |r: &mut FdRef| {
            if r.pid == me {
                if let Some(&(pid, fd)) = map.get(&r.fd) {
                    *r = FdRef { pid, fd };
                }
            }
        };
        let fix_fd = |f: &mut Fd| {
            if let Some((q, qfd)) = f.shared_with {
                if q == me {
                    f.shared_with = map.get(&qfd).copied();
                }
            }
            if let FdKind::Epoll { targets, .. } = &mut f.kind {
                targets
                    .iter_mut()
                    .filter_map(|t| t.held_by.as_mut())
                    .for_each(fix);
            }
            if let FdKind::UnixDgram { sock, .. } = &mut f.kind {
                sock.msgs
                    .iter_mut()
                    .flat_map(|m| &mut m.rights)
                    .for_each(fix);
            }
        };
        for sp in pairs.iter_mut() {
            for m in sp.msgs0.iter_mut().chain(sp.msgs1.iter_mut()) {
                m.rights.iter_mut().for_each(fix);
            }
            for r in sp.runs0.iter_mut().chain(sp.runs1.iter_mut()) {
                r.rights.iter_mut().for_each(fix);
            }
        }
        for p in procs.iter_mut() {
            p.fds.iter_mut().for_each(fix_fd);
        }
        for (_, f, _) in placed.iter_mut() {
            fix_fd(f);
        }
        let carried = carried_by(procs, pairs, placed.iter().map(|(_, f, _)| f));
        // One only a queue that is not given back carries (a socket's the tree holds
        // on a standard descriptor, connected outside) is not made.
        placed.retain(|(holder, f, _)| carried.contains(&(*holder, f.fd)));
        let made: BTreeSet<(i32, i32)> = procs
            .iter()
            .flat_map(|p| p.fds.iter().map(move |f| (p.pid, f.fd)))
            .chain(placed.iter().map(|(h, f, _)| (*h, f.fd)))
            .collect();
        for (holder, f, found) in placed.iter_mut() {
            if let FdKind::Epoll { targets, .. } = &mut f.kind {
                held_in_receiver(*holder, targets);
                if let Some(t) = targets
                    .iter()
                    .find(|t| t.held_by.is_some_and(|r| !made.contains(&(r.pid, r.fd))))
                {
                    return Err(self.refusal(
                        found,
                        &format!(
                            "it is an epoll instance with an item added as descriptor {}, \
                             whose file only a message that is not given back carries; not \
                             supported yet",
                            t.fd
                        ),
                    ));
                }
            }
        }
        for (holder, f, _) in placed {
            if let Some(p) = procs.iter_mut().find(|p| p.pid == holder) {
                p.fds.push(f);
            }
        }
        Ok(data)
    }
}

/// Peek at the queues of unix sockets `socks` (process, descriptor, inode) as `diag`
/// shows them, each once: every descriptor their messages carry goes to `each` (ckpt's
/// copy, the process whose queue led to it, that queue's descriptor), which may hand
/// back a copy of a socket whose own queue is looked at in turn (a socket in flight
/// with messages of its own). A socket connected outside the tree (its queue is not
/// the tree's to give back), one whose fdinfo shows no `scm_fds` and one closed
/// meanwhile are not peeked; a queue that cannot be read here is left to the socket's
/// own collect, which says why.
fn walk(
    diag: &BTreeMap<u64, UnixSock>,
    socks: Vec<(i32, i32, u64)>,
    mut each: impl FnMut(OwnedFd, i32, i32) -> DumpResult<Option<OwnedFd>>,
) -> DumpResult<()> {
    let tree_socks: BTreeSet<u64> = socks.iter().map(|s| s.2).collect();
    let mut seen = BTreeSet::new();
    let mut work = VecDeque::new();
    for (pid, fd, ino) in socks {
        let Some(s) = diag.get(&ino) else { continue };
        let outside = s.peer != 0 && !tree_socks.contains(&s.peer);
        if outside || !seen.insert(ino) || !carries(&format!("/proc/{pid}/fdinfo/{fd}")) {
            continue;
        }
        if let Ok(dup) = sys::process::steal_fd(pid, fd) {
            work.push_back((dup, pid, fd, ino));
        }
    }
    while let Some((sock, holder, queue, ino)) = work.pop_front() {
        let Some(s) = diag.get(&ino) else { continue };
        for r in queued_rights(&sock, s) {
            let Some(dup) = each(r, holder, queue)? else {
                continue;
            };
            let Some(rino) = socket_inode(&dup) else {
                continue;
            };
            let own = format!("/proc/self/fdinfo/{}", dup.as_raw_fd());
            if diag.contains_key(&rino) && seen.insert(rino) && carries(&own) {
                work.push_back((dup, holder, queue, rino));
            }
        }
    }
    Ok(())
}

/// The TCP connections (local and peer addresses) that messages queued on the unix
/// sockets of processes `pids` (frozen) carry in flight, sockets in flight among them
/// looked at in turn: what the freeze's network lock covers besides the connections
/// the processes hold (`tcp::lock_at_freeze`), before any is read in repair mode.
/// Looked at from /proc, before the tree's descriptors are collected; a queue that
/// cannot be read is skipped (the collect that follows reads it again, or refuses).
pub(crate) fn tcp_connections(pids: &[i32]) -> Vec<(Vec<u8>, Vec<u8>)> {
    tcp_sockets(pids)
        .into_iter()
        .map(|t| (t.local, t.peer))
        .collect()
}

/// A TCP connection only in flight: ckpt's copy of it (installed by a peek), its
/// addresses, and the process and descriptor of the unix socket whose queue led to it.
pub(crate) struct InFlightTcp {
    pub(crate) sock: OwnedFd,
    pub(crate) local: Vec<u8>,
    pub(crate) peer: Vec<u8>,
    pub(crate) holder: i32,
    pub(crate) queue: i32,
}

/// [`tcp_connections`] with ckpt's copy of each socket (`ckpt migrate` disconnects it
/// to make room for the copy's on one host, and builds it again if the copy does not
/// come), each connection once.
pub(crate) fn tcp_sockets(pids: &[i32]) -> Vec<InFlightTcp> {
    let mut socks = Vec::new();
    for &p in pids {
        for fd in sys::proc::fds(p).unwrap_or_default() {
            let Ok(link) = sys::proc::readlink(&format!("/proc/{p}/fd/{fd}")) else {
                continue;
            };
            let ino = link
                .strip_prefix(b"socket:[")
                .and_then(|x| x.strip_suffix(b"]"))
                .and_then(|x| std::str::from_utf8(x).ok())
                .and_then(|x| x.parse::<u64>().ok());
            if let Some(ino) = ino {
                socks.push((p, fd, ino));
            }
        }
    }
    let mut out = Vec::new();
    let Ok(diag) = sockdiag::unix_sockets() else {
        return out;
    };
    let mut looked = 0;
    let _ = walk(&diag, socks, |r, holder, queue| {
        looked += 1;
        if looked > MAX_IN_FLIGHT {
            return Ok(None);
        }
        if let Ok(Some(sys::tcp::Endpoint::Conn { local, peer })) = sys::tcp::endpoint_of(&r) {
            if !out
                .iter()
                .any(|t: &InFlightTcp| t.local == local && t.peer == peer)
            {
                out.push(InFlightTcp {
                    sock: r,
                    local,
                    peer,
                    holder,
                    queue,
                });
            }
            return Ok(None);
        }
        Ok(Some(r))
    });
    out
}

/// The items of an epoll instance made in process `receiver` whose files it holds
/// itself: [`EpollTarget::held_at`] (or nothing, at the item's own number) rather than
/// [`EpollTarget::held_by`], so they are added with its other descriptors.
fn held_in_receiver(receiver: i32, targets: &mut [crate::model::EpollTarget]) {
    for t in targets.iter_mut() {
        if let Some(r) = t.held_by.filter(|r| r.pid == receiver) {
            t.held_by = None;
            t.held_at = (r.fd != t.fd).then_some(r.fd);
        }
    }
}

/// Whether restore can make descriptor `f` only to send it in flight (the reason it
/// cannot, otherwise).
pub(crate) fn restorable(f: &Fd) -> Result<(), &'static str> {
    if !f.locks.is_empty() {
        return Err("it holds file locks; not supported yet");
    }
    match &f.kind {
        FdKind::Pipe { .. }
        | FdKind::UnixPair { .. }
        | FdKind::UnixDgram { .. }
        | FdKind::UnixListen { .. }
        | FdKind::File { .. }
        | FdKind::Dir { .. }
        | FdKind::Device { .. }
        | FdKind::Memfd { .. }
        | FdKind::DeletedFile { .. }
        | FdKind::EventFd { .. }
        | FdKind::TimerFd { .. }
        | FdKind::SignalFd { .. }
        | FdKind::TcpListen { .. }
        | FdKind::TcpUnconnected { .. }
        | FdKind::TcpConn { .. }
        | FdKind::Udp { .. }
        | FdKind::Pidfd { .. } => Ok(()),
        FdKind::Inotify { watches, .. } if watches.iter().any(|w| w.deleted.is_some()) => Err(
            "it is an inotify instance watching a file deleted while open (restore sets \
             such a watch on the file a process of the tree holds); not supported yet",
        ),
        FdKind::Inotify { .. } | FdKind::Fanotify { .. } => Ok(()),
        FdKind::Inherited { .. } | FdKind::External { .. } => {
            Err("it leads outside the dumped tree")
        }
        FdKind::Epoll { .. } => Ok(()),
        FdKind::Pty { .. } => Ok(()),
        // (Its terminal must be its receiver's controlling one: `place`.)
        FdKind::DevTty { .. } => Ok(()),
        _ => Err("restore cannot make this kind of descriptor only in flight yet"),
    }
}

/// What is refused of descriptor `f` only in flight before it is collected (the reason),
/// `root` the tree's root: a socket made in another network namespace than its
/// receiver's and the root's (it is looked at, and made again, in the receiver's; the
/// dump reads the tree's sockets from the root's).
fn before_collect(f: &Found, root: i32) -> Result<(), String> {
    if socket_inode(&f.fd).is_some() {
        let made_in = sys::ns::socket_netns(&f.fd).map_err(|e| e.to_string())?;
        let holder = sys::ns::inode(f.holder, "net").ok();
        let root = sys::ns::inode(root, "net").ok();
        if holder != Some(made_in) || root != Some(made_in) {
            return Err(format!(
                "it is a socket made in another network namespace (net:[{made_in}]) than \
                 its receiver's or the tree's root's; not supported yet"
            ));
        }
    }
    Ok(())
}

/// The descriptors the messages queued on socket `sock` (a duplicate; `s` as sock_diag
/// shows it) carry, installed in ckpt by peeks that consume nothing. None when its
/// queue cannot be read here (the socket's own collect refuses it, saying why).
fn queued_rights(sock: &OwnedFd, s: &UnixSock) -> Vec<OwnedFd> {
    if s.state == STATE_LISTEN {
        return Vec::new();
    }
    if s.typ == libc::SOCK_STREAM {
        if s.rqueue == 0 {
            return Vec::new();
        }
        return match sockdiag::peek_unix_stream(sock, s.rqueue as usize, None) {
            Ok((_, runs)) => runs.into_iter().flat_map(|r| r.rights).collect(),
            Err(_) => Vec::new(),
        };
    }
    let eof_ends = s.typ == libc::SOCK_SEQPACKET && s.shutdown & 1 != 0;
    match sockdiag::peek_messages(sock, eof_ends, false) {
        Ok(msgs) => msgs.into_iter().flat_map(|m| m.rights).collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether the unix socket whose fdinfo is at `path` may have descriptors in flight in
/// its queue: its `scm_fds` count is not 0 (a kernel that does not show it: maybe).
fn carries(path: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    sys::proc::fdinfo_field(&text, "scm_fds:")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_none_or(|n| n != 0)
}

/// The inode of socket `fd` (None for anything else).
fn socket_inode(fd: &OwnedFd) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    m.file_type().is_socket().then(|| m.ino())
}

/// Whether two of ckpt's descriptors are one open file description.
fn same(me: i32, a: &OwnedFd, b: &OwnedFd) -> bool {
    sys::process::same_file_description(me, a.as_raw_fd(), me, b.as_raw_fd()).unwrap_or(false)
}

/// The tree's descriptors by the file they lead to (device, inode).
struct TreeFiles(BTreeMap<(u64, u64), Vec<(i32, i32)>>);

impl TreeFiles {
    fn read(procs: &[Process]) -> Self {
        let mut m: BTreeMap<(u64, u64), Vec<(i32, i32)>> = BTreeMap::new();
        for p in procs {
            for f in &p.fds {
                if let Some(k) = file_key(&format!("/proc/{}/fd/{}", p.pid, f.fd)) {
                    m.entry(k).or_default().push((p.pid, f.fd));
                }
            }
        }
        TreeFiles(m)
    }

    /// Whether a descriptor of the tree is the open file description of ckpt's `r`.
    fn holds(&self, me: i32, r: &OwnedFd) -> bool {
        let fd = r.as_raw_fd();
        let Some(k) = file_key(&format!("/proc/self/fd/{fd}")) else {
            return false;
        };
        self.0.get(&k).is_some_and(|v| {
            v.iter().any(|&(pid, n)| {
                sys::process::same_file_description(me, fd, pid, n).unwrap_or(false)
            })
        })
    }
}

fn file_key(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

// ---- checks (plan) ----

/// Descriptors only in flight: each is made by restore (not inherited nor given from
/// outside), holds no locks, is carried by a queued message, and lies above every
/// descriptor its process holds.
pub(crate) fn check(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let carried = carried(ckpt);
    for p in &ckpt.processes {
        let own_max = p
            .fds
            .iter()
            .filter(|f| !f.in_flight)
            .map(|f| f.fd)
            .max()
            .unwrap_or(-1);
        for f in p.fds.iter().filter(|f| f.in_flight) {
            let made = !matches!(f.kind, FdKind::Inherited { .. } | FdKind::External { .. });
            let r = (p.pid, f.fd);
            if !made || !f.locks.is_empty() || !carried.contains(&r) || f.fd <= own_max {
                check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is only in flight but no queued \
                         message carries it, or restore cannot make it",
                        f.fd, p.pid
                    ),
                );
            }
        }
    }
}

/// Every descriptor a queued message of the image carries.
fn carried(ckpt: &Checkpoint) -> BTreeSet<(i32, i32)> {
    carried_by(&ckpt.processes, &ckpt.socketpairs, std::iter::empty())
}

/// Every descriptor a message queued on `pairs` or on the datagram sockets of `procs`
/// and `more` carries.
fn carried_by<'a>(
    procs: &'a [Process],
    pairs: &[SocketPairState],
    more: impl Iterator<Item = &'a Fd>,
) -> BTreeSet<(i32, i32)> {
    let mut out = BTreeSet::new();
    for sp in pairs {
        for m in sp.msgs0.iter().chain(sp.msgs1.iter()) {
            out.extend(m.rights.iter().map(|r| (r.pid, r.fd)));
        }
        for r in sp.runs0.iter().chain(sp.runs1.iter()) {
            out.extend(r.rights.iter().map(|r| (r.pid, r.fd)));
        }
    }
    for f in procs.iter().flat_map(|p| p.fds.iter()).chain(more) {
        if let FdKind::UnixDgram { sock, .. } = &f.kind {
            for m in &sock.msgs {
                out.extend(m.rights.iter().map(|r| (r.pid, r.fd)));
            }
        }
    }
    out
}

// ---- restore (stage) ----

/// Once every queued message is sent again: close the descriptors that were only in
/// flight (the messages hold them now, as at dump). Returns ckpt's copies of the TCP
/// connections among them (process, descriptor, copy), still in repair mode, which
/// commit takes out of it as it does those processes hold.
pub(crate) fn close_in_flight(ctxs: &mut [Ctx<'_>]) -> RestoreResult<Vec<(i32, i32, OwnedFd)>> {
    let mut conns = Vec::new();
    for cx in ctxs.iter_mut().filter(|c| !c.proc_.is_zombie()) {
        let pid = cx.proc_.pid;
        let fds: Vec<(i32, bool)> = cx
            .proc_
            .fds
            .iter()
            .filter(|f| f.in_flight)
            .map(|f| (f.fd, matches!(f.kind, FdKind::TcpConn { .. })))
            .collect();
        for (fd, conn) in fds {
            if conn {
                conns.push((pid, fd, sys::process::steal_fd(pid, fd)?));
            }
            cx.close(fd as u64)?;
        }
    }
    Ok(conns)
}
