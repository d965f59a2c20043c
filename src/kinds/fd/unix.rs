//! Unix sockets: pairs, listeners, datagram sockets, queued messages, names.

use super::external;
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::fd::file::HeldFiles;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::{park_pair, set_sock_opts};
use crate::kinds::unsupported;
use crate::model::{Checkpoint, Process};
use crate::model::{Fd, FdRef, SockCreds, SockMessage, SockOpts, StreamRun, UnixDgramState};
use crate::model::{FdKind, SocketPairState};
use crate::remote::{Ctx, SockAddr};
use crate::sys;
use crate::sys::proc as procfs;
use crate::sys::sockdiag::{self, STATE_ESTABLISHED, STATE_LISTEN, UnixSock};
use std::collections::BTreeMap;
use std::collections::BTreeSet;

// ---- collect (dump) ----

/// The inodes of the sockets process `pid`'s descriptors lead to (sockets of every
/// family): what it holds, for the plan dump runs (`check::Held`).
pub(crate) fn socket_inodes(pid: i32) -> DumpResult<Vec<u64>> {
    let mut out = Vec::new();
    for fd in procfs::fds(pid)? {
        // A descriptor closed meanwhile (a table shared outside the tree) holds nothing.
        let Ok(link) = procfs::readlink(&format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        let ino = link
            .strip_prefix(b"socket:[")
            .and_then(|r| r.strip_suffix(b"]"))
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok());
        out.extend(ino);
    }
    Ok(out)
}

/// The unix sockets of the host (sock_diag) and where the tree holds them, with the
/// socket pairs kept so far.
pub(crate) struct UnixTable {
    diag: BTreeMap<u64, UnixSock>,
    /// Where each socket inode is held: (pid, fd).
    held: BTreeMap<u64, (i32, i32)>,
    /// Clients whose connections wait in a listener's queue: client inode -> (listener
    /// inode, place in its queue).
    pending: BTreeMap<u64, (u64, u32)>,
    /// The tree's processes (senders restore can send queued messages as).
    pids: BTreeSet<i32>,
    /// Every descriptor of the tree (process, descriptor), for descriptors in flight.
    fds: Vec<(i32, i32)>,
    pub(crate) pairs: Vec<SocketPairState>,
    /// What the clients waiting on each listener sent: listener inode -> client inode
    /// -> its messages (read once per listener).
    backlogs: BTreeMap<u64, BTreeMap<u64, Vec<SockMessage>>>,
    /// The BPF reader of queues no system call shows, loaded when first needed (or why
    /// it cannot be).
    reader: Reader,
}

/// The BPF socket reader, loaded when first needed (or why it cannot be).
type Reader = Option<std::result::Result<sys::bpf::SockReader, String>>;

/// Load the BPF socket reader, or say why it cannot be (the fault point stands for a
/// kernel without BTF or the unix socket iterator, for the tests of that refusal).
fn load_reader() -> std::result::Result<sys::bpf::SockReader, String> {
    crate::error::fault_point("load the BPF socket reader")
        .map_err(|e| format!("the BPF socket reader cannot be loaded ({e})"))?;
    sys::bpf::SockReader::new()
}

/// The messages queued on stream socket `ino` (held by process `pid`), as the BPF
/// socket reader sees them: (unread length, descriptors carried), in order.
fn stream_bounds(
    reader: &mut Reader,
    pid: i32,
    ino: u64,
) -> std::result::Result<Vec<(usize, u32)>, String> {
    let r = reader
        .get_or_insert_with(load_reader)
        .as_ref()
        .map_err(|why| why.clone())?;
    let socks = r.sockets(Some(pid), &[ino]).map_err(|e| e.to_string())?;
    let sk = socks
        .get(&ino)
        .ok_or("the BPF socket iterator does not list it")?;
    let q = r.queue(*sk).map_err(|e| e.to_string())?;
    Ok(q.iter()
        .map(|m| (m.data.len().saturating_sub(m.consumed as usize), m.fds))
        .collect())
}

impl UnixTable {
    /// The unix sockets of the host, and the first holder of each socket inode
    /// (`socket_ino` of a descriptor) of the tree.
    pub(crate) fn read(
        procs: &[Process],
        socket_ino: fn(&FdKind) -> Option<u64>,
    ) -> DumpResult<Self> {
        let diag = sockdiag::unix_sockets()?;
        let mut held: BTreeMap<u64, (i32, i32)> = Default::default();
        for p in procs.iter() {
            for f in &p.fds {
                if let Some(ino) = socket_ino(&f.kind) {
                    held.entry(ino).or_insert((p.pid, f.fd));
                }
            }
        }
        let pending = diag
            .values()
            .filter(|l| l.state == STATE_LISTEN)
            .flat_map(|l| {
                l.icons
                    .iter()
                    .enumerate()
                    .map(move |(i, &c)| (c, (l.ino, i as u32)))
            })
            .collect();
        Ok(Self {
            diag,
            held,
            pending,
            pids: procs.iter().map(|p| p.pid).collect(),
            fds: procs
                .iter()
                .flat_map(|p| p.fds.iter().map(move |f| (p.pid, f.fd)))
                .collect(),
            pairs: Vec::new(),
            backlogs: BTreeMap::new(),
            reader: None,
        })
    }

    /// Add the unix sockets of the calling thread's network namespace (sock_diag lists
    /// those of one namespace only): a thread of ckpt that joined a network namespace
    /// a process below the tree's root made, whose sockets (and the clients waiting on
    /// its listeners) are then resolved like the others. Socket inodes are unique on
    /// the host, so the tables merge.
    pub(crate) fn add_namespace(&mut self) -> DumpResult<()> {
        let more = sockdiag::unix_sockets()?;
        for l in more.values().filter(|l| l.state == STATE_LISTEN) {
            for (i, &c) in l.icons.iter().enumerate() {
                self.pending.entry(c).or_insert((l.ino, i as u32));
            }
        }
        for (ino, s) in more {
            self.diag.entry(ino).or_insert(s);
        }
        Ok(())
    }

    /// Whether socket `ino` is a unix socket.
    pub(crate) fn lists(&self, ino: u64) -> bool {
        self.diag.contains_key(&ino)
    }

    /// Unix socket `ino`, held as `f` by process `pid`: a listener, a datagram socket,
    /// one end of a pair inside the tree (kept in `pairs`), or connected outside (a
    /// standard descriptor stays inherited; with `external` it is recorded as external;
    /// else refused).
    pub(crate) fn resolve(
        &mut self,
        pid: i32,
        f: &mut Fd,
        ino: u64,
        flags: u32,
        external: bool,
        refuse: &dyn Fn(&str) -> DumpError,
    ) -> DumpResult<()> {
        let (diag, held, pids, fds) = (&self.diag, &self.held, &self.pids, &self.fds);
        let reader = &mut self.reader;
        let Some(s) = diag.get(&ino) else {
            return Ok(());
        };
        if s.state == STATE_LISTEN {
            f.kind = listen(s, (pid, f.fd), flags, held, refuse)?;
            self.backlog(ino, refuse)?;
            return Ok(());
        }
        if let Some(&(l, pos)) = self.pending.get(&ino) {
            let queued = match self.diag.get(&l) {
                Some(_) if self.held.contains_key(&l) => self
                    .backlog(l, refuse)?
                    .get(&ino)
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let (diag, held) = (&self.diag, &self.held);
            let Some(s) = diag.get(&ino) else {
                return Ok(());
            };
            f.kind = pending(s, l, pos, diag, held, flags, refuse, queued)?;
            return Ok(());
        }
        if s.typ == libc::SOCK_DGRAM {
            let peer = diag.get(&s.peer);
            // Two datagram sockets of the tree connected to each other (a socketpair,
            // whose ends may have names of their own, e.g. autobound by SO_PASSCRED).
            let pair = s.state == STATE_ESTABLISHED
                && held.contains_key(&s.peer)
                && peer.is_some_and(|p| p.peer == ino);
            if !pair {
                if s.peer != 0 && !held.contains_key(&s.peer) {
                    if f.fd <= 2 {
                        return Ok(());
                    }
                    if external {
                        external::mark_external(f, format!("socket:[{ino}]"), flags);
                        return Ok(());
                    }
                    return Err(unsupported(
                        pid,
                        format!(
                            "file descriptor {} is a unix datagram socket \
                             (socket:[{ino}]) connected outside the dumped tree; not \
                             supported yet; record it as external with --external \
                             (restore then needs --inherit-fd {}:socket:[{ino}])",
                            f.fd, f.fd
                        ),
                    ));
                }
                f.kind =
                    unix_dgram(s, diag, held, (pids, fds), flags).map_err(|why| refuse(&why))?;
                return Ok(());
            }
        }
        let internal = s.state == STATE_ESTABLISHED && held.contains_key(&s.peer);
        if !internal {
            return outside(pid, f, ino, s, flags, external);
        }
        let id = ino.min(s.peer);
        let end = u8::from(ino != id);
        if !self.pairs.iter().any(|x| x.id == id) {
            let st = pair_state(s, id, end, diag, held, (pids, fds), refuse, reader)?;
            self.pairs.push(st);
        }
        f.kind = FdKind::UnixPair { id, end, flags };
        Ok(())
    }
}

/// The options of a unix socket as the image keeps them (SO_REUSEADDR and SO_REUSEPORT
/// mean nothing there; likewise for netlink sockets).
pub(super) fn unix_opts(o: &sockdiag::SockOpts) -> SockOpts {
    SockOpts {
        sndbuf: o.sndbuf,
        rcvbuf: o.rcvbuf,
        passcred: o.passcred,
        reuseaddr: false,
        reuseport: false,
        buf_lock: o.buf_lock,
    }
}

/// A listening unix socket (descriptor `fd` of process `pid`): kept with its name (an
/// absolute path or an abstract name), backlog and options (SO_PASSCRED, which the
/// connections it accepts inherit, and its buffer sizes).
fn listen(
    s: &UnixSock,
    (pid, fd): (i32, i32),
    flags: u32,
    held: &BTreeMap<u64, (i32, i32)>,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<FdKind> {
    // A path name may carry the NUL its binder passed in the address length.
    let name = unix_name(s.name.as_deref().unwrap_or_default());
    if name.is_empty() {
        return Err(refuse("a listening unix socket without a name"));
    }
    let dir = dir_of(&name, s, held, refuse)?;
    if s.shutdown != 0 {
        return Err(refuse("a listening unix socket that was shut down"));
    }
    let o = sockdiag::sock_opts(&sys::process::steal_fd(pid, fd)?, true)?;
    Ok(FdKind::UnixListen {
        name,
        typ: s.typ,
        backlog: s.wqueue,
        flags,
        dir,
        opts: unix_opts(&o),
    })
}

impl UnixTable {
    /// What each client waiting on listener `l` sent (client inode -> messages), read
    /// once per listener. The connections can be made again if each client is a
    /// socket of the tree; what a client sent waits on the listener's side of the
    /// connection, which only accept reaches: it is read without accepting through the
    /// BPF socket reader (`sys::bpf`), and refused where that cannot be.
    fn backlog(
        &mut self,
        l: u64,
        refuse: &dyn Fn(&str) -> DumpError,
    ) -> DumpResult<&BTreeMap<u64, Vec<SockMessage>>> {
        if !self.backlogs.contains_key(&l) {
            let b = self.read_backlog(l, refuse)?;
            self.backlogs.insert(l, b);
        }
        self.backlogs
            .get(&l)
            .ok_or_else(|| refuse("a listening unix socket whose queue was not kept"))
    }

    fn read_backlog(
        &mut self,
        l: u64,
        refuse: &dyn Fn(&str) -> DumpError,
    ) -> DumpResult<BTreeMap<u64, Vec<SockMessage>>> {
        let Some(s) = self.diag.get(&l) else {
            return Ok(BTreeMap::new());
        };
        let held = &self.held;
        if s.icons.len() != s.rqueue as usize {
            return Err(refuse(&format!(
                "a listening unix socket with {} connections waiting to be accepted, of which \
                 sock_diag names {}",
                s.rqueue,
                s.icons.len()
            )));
        }
        let mut sent = None;
        for c in &s.icons {
            let Some(&(hp, hfd)) = held.get(c) else {
                return Err(refuse(&format!(
                    "a listening unix socket with a connection waiting to be accepted from a \
                     process outside the dumped tree (socket:[{c}]); not supported"
                )));
            };
            let dup = sys::process::steal_fd(hp, hfd)?;
            if sent.is_none() && sockdiag::unread_sent(&dup)? != 0 {
                sent = Some((hp, hfd));
            }
        }
        let Some((hp, hfd)) = sent else {
            return Ok(BTreeMap::new());
        };
        let (icons, lholder) = (s.icons.clone(), held.get(&l).copied());
        let cannot = |why: &str| {
            refuse(&format!(
                "a listening unix socket with a connection waiting to be accepted whose \
                 client (descriptor {hfd} of process {hp}) already sent data, which cannot \
                 be read before it is accepted: {why}"
            ))
        };
        let Some((lp, lfd)) = lholder else {
            return Err(cannot("the listener vanished during the dump"));
        };
        let reader = self
            .reader
            .get_or_insert_with(load_reader)
            .as_ref()
            .map_err(|why| cannot(why))?;
        let want: Vec<u64> = std::iter::once(l).chain(icons.iter().copied()).collect();
        let socks = reader
            .sockets(Some(lp), &want)
            .map_err(|e| cannot(&e.to_string()))?;
        let Some(&addr) = socks.get(&l) else {
            return Err(cannot("the BPF socket iterator does not list the listener"));
        };
        let inos: BTreeMap<u64, u64> = socks.iter().map(|(&i, &a)| (a, i)).collect();
        let waiting = reader
            .waiting(addr, &inos)
            .map_err(|e| cannot(&e.to_string()))?;
        let read: Vec<u64> = waiting.iter().map(|w| w.client_ino).collect();
        if read != icons {
            return Err(cannot(&format!(
                "the listener's queue read through BPF (clients {read:?}) is not the one \
                 sock_diag shows ({icons:?})"
            )));
        }
        let lopts = sockdiag::sock_opts(&sys::process::steal_fd(lp, lfd)?, true)?;
        let mut out = BTreeMap::new();
        for w in waiting {
            if w.queue.len() > MAX_MESSAGES {
                return Err(cannot(&format!("over {MAX_MESSAGES} messages queued")));
            }
            let mut msgs = Vec::with_capacity(w.queue.len());
            for m in w.queue {
                if m.fds != 0 {
                    return Err(cannot(
                        "a message that carries descriptors (SCM_RIGHTS); not supported",
                    ));
                }
                msgs.push(SockMessage {
                    from: Vec::new(),
                    data: m.data,
                    creds: (m.pid != 0).then_some(SockCreds {
                        pid: m.pid,
                        uid: m.uid,
                        gid: m.gid,
                    }),
                    rights: Vec::new(),
                });
            }
            // The accepted socket shows credentials if the listener does (SO_PASSCRED
            // is inherited at accept).
            keep_creds(&mut msgs, &self.pids, lopts.passcred).map_err(|why| cannot(&why))?;
            out.insert(w.client_ino, msgs);
        }
        Ok(out)
    }
}

/// Client `s` of a connection waiting in the queue of listener `l` at place `pos`,
/// which had sent `queued`.
#[allow(clippy::too_many_arguments)]
fn pending(
    s: &UnixSock,
    l: u64,
    pos: u32,
    diag: &BTreeMap<u64, UnixSock>,
    held: &BTreeMap<u64, (i32, i32)>,
    flags: u32,
    refuse: &dyn Fn(&str) -> DumpError,
    queued: Vec<SockMessage>,
) -> DumpResult<FdKind> {
    let Some(ls) = diag.get(&l).filter(|_| held.contains_key(&l)) else {
        return Err(refuse(&format!(
            "a unix socket whose connection waits to be accepted by a listener outside the \
             dumped tree (socket:[{l}]); not supported"
        )));
    };
    let listener = unix_name(ls.name.as_deref().unwrap_or_default());
    let name = unix_name(s.name.as_deref().unwrap_or_default());
    let listener_dir = dir_of(&listener, ls, held, refuse)?;
    let dir = dir_of(&name, s, held, refuse)?;
    if s.shutdown != 0 {
        return Err(refuse(
            "a unix socket waiting to be accepted that was shut down",
        ));
    }
    let &(hp, hfd) = held
        .get(&s.ino)
        .ok_or_else(|| refuse("a unix socket that vanished during the dump"))?;
    let dup = sys::process::steal_fd(hp, hfd)?;
    let o = sockdiag::sock_opts(&dup, true)?;
    Ok(FdKind::UnixPending {
        listener,
        typ: s.typ,
        pos,
        name,
        opts: unix_opts(&o),
        flags,
        dir,
        listener_dir,
        queued,
    })
}

/// A unix socket connected outside the tree, or neither connected nor listening: a
/// standard descriptor stays inherited, one connected outside is recorded as external
/// with `external`; anything else is refused.
fn outside(
    pid: i32,
    f: &mut Fd,
    ino: u64,
    s: &UnixSock,
    flags: u32,
    external: bool,
) -> DumpResult<()> {
    if f.fd <= 2 {
        return Ok(());
    }
    if external && s.peer != 0 {
        external::mark_external(f, format!("socket:[{ino}]"), flags);
        return Ok(());
    }
    Err(unsupported(
        pid,
        format!(
            "file descriptor {} is a unix socket (socket:[{ino}]){} {}; not \
             supported yet{}",
            f.fd,
            match unix_name(s.name.as_deref().unwrap_or_default()) {
                n if n.is_empty() => String::new(),
                n => format!(" on {}", String::from_utf8_lossy(&n).replace('\0', "@")),
            },
            if s.peer != 0 {
                format!("connected {}outside the dumped tree", peer_holder(s.peer))
            } else {
                "that is neither connected nor listening".to_string()
            },
            if s.peer != 0 {
                format!(
                    "; record it as external with --external (restore then \
                     needs --inherit-fd {}:socket:[{ino}])",
                    f.fd
                )
            } else {
                String::new()
            }
        ),
    ))
}

/// "to process PID (COMM) " holding the peer socket `peer`, if one does (ckpt itself
/// left out), for a refusal's message.
fn peer_holder(peer: u64) -> String {
    let skip = BTreeSet::from([std::process::id() as i32]);
    let found = procfs::socket_holders_outside(&BTreeSet::from([peer]), &skip);
    match found.get(&peer) {
        Some(&p) => {
            let comm = procfs::thread_comm(p, p).unwrap_or_default();
            format!(
                "to process {p} ({}, socket:[{peer}]) ",
                String::from_utf8_lossy(&comm)
            )
        }
        None => format!("to socket:[{peer}] "),
    }
}

/// The pair `id` of which `s` is end `end`: both ends' options and the data queued on
/// each (peeked without consuming it).
#[allow(clippy::too_many_arguments)]
fn pair_state(
    s: &UnixSock,
    id: u64,
    end: u8,
    diag: &BTreeMap<u64, UnixSock>,
    held: &BTreeMap<u64, (i32, i32)>,
    (pids, fds): (&BTreeSet<i32>, &[(i32, i32)]),
    refuse: &dyn Fn(&str) -> DumpError,
    reader: &mut Reader,
) -> DumpResult<SocketPairState> {
    let peer = diag.get(&s.peer).cloned().unwrap_or_default();
    let (a, b) = if end == 0 {
        (s.clone(), peer)
    } else {
        (peer, s.clone())
    };
    let mut st = SocketPairState {
        id,
        typ: s.typ,
        shutdown: [a.shutdown, b.shutdown],
        ..Default::default()
    };
    for (which, sock) in [(0u8, &a), (1u8, &b)] {
        let name = unix_name(sock.name.as_deref().unwrap_or_default());
        let dir = dir_of(&name, sock, held, refuse)?;
        // An end that shows a name it does not hold was accepted: its listener (or
        // another connection it accepted) shows it too, or, for an abstract name, no
        // one holds it any more (the listener closed; the kernel lets ckpt bind it).
        let unheld = |n: &[u8]| match n.split_first() {
            Some((0, rest)) => sockdiag::abstract_name_free(s.typ, rest),
            _ => Ok(false),
        };
        if !name.is_empty()
            && s.typ != libc::SOCK_DGRAM
            && (shares_name(sock, &name, diag) || unheld(&name)?)
        {
            st.accepted = Some(which);
        }
        if which == 0 {
            (st.name0, st.dir0) = (name, dir);
        } else {
            (st.name1, st.dir1) = (name, dir);
        }
    }
    for (which, sock) in [(0u8, &a), (1u8, &b)] {
        let Some(&(hp, hfd)) = held.get(&sock.ino) else {
            return Err(refuse("a unix socket whose peer vanished during the dump"));
        };
        let dup = sys::process::steal_fd(hp, hfd)?;
        // A queue that cannot be kept, named where it is: this end, or the other one.
        let unkept = |e: sockdiag::PeekError, what: &str| match e {
            sockdiag::PeekError::Sys(e) => DumpError::Sys(e),
            e if sock.ino == s.ino => refuse(&peek_refusal(&e, what)),
            e => refuse(&format!(
                "one end of a unix socket pair whose other end, descriptor {hfd} of \
                 process {hp}, is {}",
                peek_refusal(&e, what)
            )),
        };
        let o = sockdiag::sock_opts(&dup, true)?;
        st.opts[usize::from(which)] = unix_opts(&o);
        if s.typ == libc::SOCK_STREAM {
            if sock.rqueue == 0 {
                continue;
            }
            let (data, runs) = match sockdiag::peek_unix_stream(&dup, sock.rqueue as usize, None) {
                // Descriptors on a message longer than one byte: placed by the
                // messages the BPF socket reader sees on the queue.
                Err(sockdiag::PeekError::Boundary(why)) => {
                    let b = stream_bounds(reader, hp, sock.ino).map_err(|e| {
                        unkept(
                            sockdiag::PeekError::Boundary(format!("{why} ({e})")),
                            "unix stream socket",
                        )
                    })?;
                    sockdiag::peek_unix_stream(&dup, sock.rqueue as usize, Some(&b))
                }
                r => r,
            }
            .map_err(|e| unkept(e, "unix stream socket"))?;
            // Runs as messages, for their credentials and descriptors in flight.
            let mut as_msgs = Vec::with_capacity(runs.len());
            for r in &runs {
                let rights = if r.rights.is_empty() {
                    Vec::new()
                } else {
                    rights_in_tree(&r.rights, fds).map_err(|why| {
                        unkept(sockdiag::PeekError::Rights(why), "unix stream socket")
                    })?
                };
                as_msgs.push(SockMessage {
                    creds: r.creds.map(|(pid, uid, gid)| SockCreds { pid, uid, gid }),
                    rights,
                    ..SockMessage::default()
                });
            }
            keep_creds(&mut as_msgs, pids, o.passcred).map_err(|why| refuse(&why))?;
            let runs = runs
                .iter()
                .zip(as_msgs)
                .map(|(r, m)| StreamRun {
                    len: r.len as u32,
                    creds: m.creds,
                    rights: m.rights,
                })
                .collect();
            if which == 0 {
                (st.data0, st.runs0) = (data, runs);
            } else {
                (st.data1, st.runs1) = (data, runs);
            }
        } else {
            // For datagrams sock_diag reports only the first message's length
            // (0 for an empty one): always look at the whole queue.
            // A seqpacket end shut for reading reads 0 at the end of its queue.
            let eof_ends = s.typ == libc::SOCK_SEQPACKET && sock.shutdown & 1 != 0;
            let in_tree = |r: &[std::os::fd::OwnedFd]| rights_in_tree(r, fds);
            let mut msgs = peek_messages(&dup, eof_ends, true, Some(&in_tree))
                .map_err(|e| unkept(e, "unix socket"))?;
            keep_creds(&mut msgs, pids, o.passcred).map_err(|why| refuse(&why))?;
            // Restore sends them again from the other end: each must come from there
            // (from its name, or from no name when it has none).
            let other = if which == 0 { &b } else { &a };
            let other_name = unix_name(other.name.as_deref().unwrap_or_default());
            if msgs
                .iter()
                .any(|m| unix_name(m.from.get(2..).unwrap_or_default()) != other_name)
            {
                return Err(refuse(
                    "a unix socket pair end with a message queued from another socket than \
                     its peer, or from it before it had its name",
                ));
            }
            if which == 0 {
                st.msgs0 = msgs;
            } else {
                st.msgs1 = msgs;
            }
        }
    }
    Ok(st)
}

/// Whether socket name `name` fits a sockaddr_un and comes with directory `dir` when,
/// and only when, it is relative (an absolute directory).
pub(crate) fn name_ok(name: &[u8], dir: &[u8]) -> bool {
    name.len() <= 107
        && if relative(name) {
            dir.first() == Some(&b'/') && !dir.contains(&0)
        } else {
            dir.is_empty()
        }
}

/// A relative socket name `name` restore binds (or connects to) in directory `dir`: the
/// directory is held now (stage uses that descriptor), and for a name bound there
/// (`bound`), the file there is at most a stale socket file, which no socket other than
/// the tree's own is bound as.
pub(crate) fn check_relative_name(
    files: &mut HeldFiles,
    (name, dir): (&[u8], &[u8]),
    bound: bool,
    fd: i32,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    if !relative(name) {
        return;
    }
    let what = format!(
        "descriptor {fd}: the directory of unix socket {}",
        check::show(name)
    );
    let before = problems.len();
    files.check_dir(dir, &what, problems);
    if !bound || problems.len() != before {
        return;
    }
    let Some(path) = host_path(name, dir, &files.fds()) else {
        return;
    };
    let shown = format!("{}/{}", check::show(dir), check::show(name));
    let Ok(m) = std::fs::symlink_metadata(&path) else {
        return;
    };
    if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
        check::p(
            problems,
            "address-in-use",
            format!("descriptor {fd}: {shown} exists and is not a socket"),
        );
        return;
    }
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks
            .values()
            .any(|s| !held.sockets.contains(&s.ino) && s.vfs_ino == ino)
        {
            check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: a socket is bound to unix socket {shown} now"),
            );
        }
    }
}

/// Whether `name` is a path relative to the working directory of its binder.
fn relative(name: &[u8]) -> bool {
    !(name.is_empty() || name[0] == 0 || name[0] == b'/')
}

/// Whether restore can bind `name` as it was: none, an abstract name, or an absolute
/// path (a relative one was resolved in a working directory the image does not keep).
fn name_restorable(name: &[u8]) -> bool {
    !relative(name)
}

/// The directory a relative `name` of socket `s` was bound in (empty for any other
/// name): the working directory of a process of the tree in which `name` leads to the
/// very socket file `s` was bound as (sock_diag's inode). Refused if there is none:
/// the binder has moved elsewhere since, or the file was removed.
fn dir_of(
    name: &[u8],
    s: &UnixSock,
    held: &BTreeMap<u64, (i32, i32)>,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<Vec<u8>> {
    if !relative(name) {
        return Ok(Vec::new());
    }
    let pids: BTreeSet<i32> = held.values().map(|h| h.0).collect();
    for pid in pids {
        let Ok(cwd) = procfs::readlink(&format!("/proc/{pid}/cwd")) else {
            continue;
        };
        let mut at = format!("/proc/{pid}/cwd/").into_bytes();
        at.extend_from_slice(name);
        let Ok(m) = std::fs::symlink_metadata(procfs::bytes_path(&at)) else {
            continue;
        };
        if s.vfs_ino != 0
            && std::os::unix::fs::MetadataExt::ino(&m) == s.vfs_ino
            && std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())
            && cwd.first() == Some(&b'/')
        {
            return Ok(cwd);
        }
    }
    Err(refuse(&format!(
        "a unix socket bound to {}, a name relative to the working directory it was bound \
         in, which is no process's working directory now (or the socket file is gone)",
        shown_name(name)
    )))
}

/// Whether connected socket `s` shares its name `name` with another socket of its type:
/// then a listener accepted it (the listener, or its other accepted connections, show
/// the name too); it does not hold the name, its listener does (or did).
fn shares_name(s: &UnixSock, name: &[u8], diag: &BTreeMap<u64, UnixSock>) -> bool {
    diag.values().any(|d| {
        d.ino != s.ino
            && d.typ == s.typ
            && d.name.as_deref().map(unix_name).as_deref() == Some(name)
    })
}

/// The messages queued on a socket, in the model's terms.
/// The messages queued on a socket, in the model's terms. Descriptors in flight are
/// given to `rights`, which names the image's descriptors with the same open file
/// descriptions (or says why there are none); without it, they are refused.
pub(crate) fn peek_messages(
    dup: &std::os::fd::OwnedFd,
    eof_ends: bool,
    creds: bool,
    rights: Option<&Rights<'_>>,
) -> std::result::Result<Vec<SockMessage>, sys::sockdiag::PeekError> {
    use sys::sockdiag::PeekError;
    let mut out = Vec::new();
    for m in sys::sockdiag::peek_messages(dup, eof_ends, creds)? {
        let refs = match (m.rights.is_empty(), rights) {
            (true, _) => Vec::new(),
            (false, None) => return Err(PeekError::Descriptors),
            (false, Some(f)) => f(&m.rights).map_err(PeekError::Rights)?,
        };
        out.push(SockMessage {
            from: m.from,
            data: m.data,
            creds: m.creds.map(|(pid, uid, gid)| SockCreds { pid, uid, gid }),
            rights: refs,
        });
    }
    Ok(out)
}

/// Names the image's descriptors with the open file descriptions of descriptors in
/// flight (or says why it cannot).
pub(crate) type Rights<'a> =
    dyn Fn(&[std::os::fd::OwnedFd]) -> std::result::Result<Vec<FdRef>, String> + 'a;

/// For each descriptor in flight (installed in ckpt by the peek), a descriptor of the
/// tree (`fds`: process, descriptor) with the same open file description (kcmp, after
/// a cheaper look at the inode): restore sends that one. One the tree does not hold is
/// refused: restore could not make it again.
fn rights_in_tree(
    rights: &[std::os::fd::OwnedFd],
    fds: &[(i32, i32)],
) -> std::result::Result<Vec<FdRef>, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id() as i32;
    let ino = |path: String| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut out = Vec::new();
    for r in rights {
        let fd = r.as_raw_fd();
        let mine = ino(format!("/proc/self/fd/{fd}"));
        let found = fds.iter().find(|&&(pid, n)| {
            mine.is_some()
                && ino(format!("/proc/{pid}/fd/{n}")) == mine
                && sys::process::same_file_description(me, fd, pid, n).unwrap_or(false)
        });
        match found {
            Some(&(pid, fd)) => out.push(FdRef { pid, fd }),
            None => {
                let what = procfs::readlink(&format!("/proc/self/fd/{fd}"))
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "({what}) that no process of the dumped tree holds: restore could not \
                     make it again"
                ));
            }
        }
    }
    Ok(out)
}

/// Queued unix messages are sent again with their senders' credentials, which must be
/// those of a process of the tree (`pids`: it exists when restore sends). A sender
/// that has exited (the kernel shows pid 0) or is outside the tree cannot be named: a
/// receiver that shows credentials (`shown`: SO_PASSCRED) is refused (the reason is
/// returned); for one that does not, the message goes with restore's own.
fn keep_creds(
    msgs: &mut [SockMessage],
    pids: &BTreeSet<i32>,
    shown: bool,
) -> std::result::Result<(), String> {
    for m in msgs.iter_mut() {
        let Some(c) = m.creds else { continue };
        if pids.contains(&c.pid) {
            continue;
        }
        if shown {
            return Err(format!(
                "a unix socket (SO_PASSCRED) with a message queued from process {}, which \
                 has exited or is outside the dumped tree: restore cannot send it with its \
                 sender's credentials",
                c.pid
            ));
        }
        m.creds = None;
    }
    Ok(())
}

/// Why a socket's queued messages cannot be kept, for a refusal naming its descriptor.
pub(crate) fn peek_refusal(e: &sys::sockdiag::PeekError, what: &str) -> String {
    match e {
        sys::sockdiag::PeekError::Descriptors => {
            format!("a {what} with a queued message that carries descriptors (SCM_RIGHTS)")
        }
        sys::sockdiag::PeekError::TooLarge => format!(
            "a {what} with a queued message over {} KiB or over {} messages queued",
            sys::sockdiag::MAX_MESSAGE >> 10,
            sys::sockdiag::MAX_MESSAGES
        ),
        sys::sockdiag::PeekError::Sys(e) => format!("a {what} whose queue cannot be read ({e})"),
        sys::sockdiag::PeekError::Boundary(why) => {
            format!("a {what} with a queued message that carries descriptors (SCM_RIGHTS) {why}")
        }
        sys::sockdiag::PeekError::Rights(why) => {
            format!("a {what} with a queued message that carries descriptors (SCM_RIGHTS) {why}")
        }
    }
}

/// A unix socket name as bound: a path loses the NULs its binder may have passed in the
/// address length; an abstract name (starting with NUL) is kept whole.
fn unix_name(name: &[u8]) -> Vec<u8> {
    let mut n = name.to_vec();
    if n.first() != Some(&0) {
        while n.last() == Some(&0) {
            n.pop();
        }
    }
    n
}

/// A unix datagram socket that is not one end of an anonymous pair, with its queued
/// messages, each of which restore must be able to send again from the same sender: a
/// named socket of the tree (by its name), or an unnamed one (to a named receiver). Any
/// other case is refused (the reason is returned).
fn unix_dgram(
    s: &UnixSock,
    diag: &BTreeMap<u64, UnixSock>,
    held: &BTreeMap<u64, (i32, i32)>,
    (pids, fds): (&BTreeSet<i32>, &[(i32, i32)]),
    flags: u32,
) -> std::result::Result<FdKind, String> {
    let name = unix_name(s.name.as_deref().unwrap_or_default());
    if !name_restorable(&name) {
        return Err(format!(
            "a unix datagram socket bound to {}, a name relative to the working directory \
             it was bound in",
            shown_name(&name)
        ));
    }
    let peer_name = match diag.get(&s.peer) {
        Some(p) if s.peer != 0 => {
            let n = unix_name(p.name.as_deref().unwrap_or_default());
            if n.is_empty() {
                return Err("a unix datagram socket connected to an unnamed socket".into());
            }
            n
        }
        _ => Vec::new(),
    };
    let (hp, hfd) = *held
        .get(&s.ino)
        .ok_or_else(|| "a unix socket that vanished during the dump".to_string())?;
    let dup = sys::process::steal_fd(hp, hfd).map_err(|e| e.to_string())?;
    let opts = sys::sockdiag::sock_opts(&dup, true).map_err(|e| e.to_string())?;
    let in_tree_fds = |r: &[std::os::fd::OwnedFd]| rights_in_tree(r, fds);
    let mut msgs = peek_messages(&dup, false, true, Some(&in_tree_fds))
        .map_err(|e| peek_refusal(&e, "unix datagram socket"))?;
    keep_creds(&mut msgs, pids, opts.passcred)?;
    // Names of the tree's bound sockets, which can send again at restore.
    let in_tree = |n: &[u8]| {
        diag.values().any(|d| {
            held.contains_key(&d.ino) && unix_name(d.name.as_deref().unwrap_or_default()) == n
        })
    };
    for m in msgs.iter_mut() {
        // recvmsg gives a sockaddr_un: the family, then the name.
        m.from = unix_name(m.from.get(2..).unwrap_or_default());
        if !peer_name.is_empty() && m.from != peer_name {
            return Err(
                "a connected unix datagram socket with a message queued from another \
                 socket than its peer"
                    .into(),
            );
        }
        if name.is_empty() {
            return Err("an unnamed, unconnected unix datagram socket with queued messages".into());
        }
        if !m.from.is_empty() && !in_tree(&m.from) {
            return Err(
                "a unix datagram socket with a message queued from a socket outside the \
                 dumped tree"
                    .into(),
            );
        }
    }
    Ok(FdKind::UnixDgram {
        sock: Box::new(UnixDgramState {
            name,
            peer_name,
            opts: unix_opts(&opts),
            msgs,
            shutdown: s.shutdown,
        }),
        flags,
    })
}

// ---- checks (plan) ----

/// Largest queued socket message, and most messages per socket (as dump reads them).
pub(crate) const MAX_MESSAGE: usize = sys::sockdiag::MAX_MESSAGE;
pub(crate) const MAX_MESSAGES: usize = sys::sockdiag::MAX_MESSAGES;

/// Socket pairs: a known type, bytes or messages (never both), bounded queues; returns
/// their IDs.
pub(crate) fn check_pairs(pairs: &[SocketPairState], problems: &mut Vec<Problem>) -> BTreeSet<u64> {
    let mut pair_ids = BTreeSet::new();
    for sp in pairs {
        let msgs_ok = |m: &[crate::model::SockMessage]| {
            m.len() <= MAX_MESSAGES
                && m.iter()
                    .all(|x| x.data.len() <= MAX_MESSAGE && x.from.len() <= 128)
                && m.iter().map(|x| x.data.len()).sum::<usize>() <= MAX_PIPE
        };
        let typ_ok = [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sp.typ);
        // Stream pairs carry bytes, the others messages: never both.
        let no_msgs = sp.msgs0.is_empty() && sp.msgs1.is_empty();
        let runs_ok = |runs: &[crate::model::StreamRun], data: &[u8]| {
            runs.is_empty()
                || (runs.iter().all(|r| r.len > 0)
                    && runs.iter().map(|r| r.len as usize).sum::<usize>() == data.len())
        };
        let no_bytes = sp.data0.is_empty() && sp.data1.is_empty();
        let kind_ok = if sp.typ == libc::SOCK_STREAM {
            no_msgs
        } else {
            no_bytes
        };
        let accepted_ok = match sp.accepted {
            None => true,
            Some(0) => !sp.name0.is_empty(),
            Some(1) => !sp.name1.is_empty(),
            Some(_) => false,
        } && (sp.accepted.is_none() || sp.typ != libc::SOCK_DGRAM);
        if !pair_ids.insert(sp.id)
            || !name_ok(&sp.name0, &sp.dir0)
            || !name_ok(&sp.name1, &sp.dir1)
            || !accepted_ok
            || sp.shutdown.iter().any(|&m| m > 3)
            || !runs_ok(&sp.runs0, &sp.data0)
            || !runs_ok(&sp.runs1, &sp.data1)
            || !typ_ok
            || !kind_ok
            || sp.data0.len() > MAX_PIPE
            || sp.data1.len() > MAX_PIPE
            || !msgs_ok(&sp.msgs0)
            || !msgs_ok(&sp.msgs1)
        {
            check::p(
                problems,
                "malformed",
                format!("invalid socket pair {}", sp.id),
            );
        }
    }
    pair_ids
}

/// Queued messages name their senders' credentials: each must be a process of the
/// image (restore sends as it).
pub(crate) fn check_creds(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let pids: BTreeSet<i32> = ckpt.processes.iter().map(|p| p.pid).collect();
    let pairs = ckpt
        .socketpairs
        .iter()
        .flat_map(|sp| sp.msgs0.iter().chain(sp.msgs1.iter()));
    let dgrams = ckpt
        .processes
        .iter()
        .flat_map(|p| p.fds.iter())
        .filter_map(|f| match &f.kind {
            FdKind::UnixDgram { sock, .. } => Some(sock.msgs.iter()),
            FdKind::UnixPending { queued, .. } => Some(queued.iter()),
            _ => None,
        })
        .flatten();
    let runs = ckpt
        .socketpairs
        .iter()
        .flat_map(|sp| sp.runs0.iter().chain(sp.runs1.iter()))
        .filter_map(|r| r.creds);
    if let Some(c) = pairs
        .chain(dgrams)
        .filter_map(|m| m.creds)
        .chain(runs)
        .find(|c| !pids.contains(&c.pid))
    {
        check::p(
            problems,
            "malformed",
            format!(
                "a queued unix message names process {} as its sender, which is not in the image",
                c.pid
            ),
        );
    }
}

/// Descriptors in flight name descriptors of the image that restore makes (not ones
/// given from outside).
pub(crate) fn check_rights(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let restored = |r: &FdRef| {
        ckpt.processes.iter().any(|p| {
            p.pid == r.pid
                && p.fds.iter().any(|f| {
                    f.fd == r.fd
                        && !matches!(f.kind, FdKind::Inherited { .. } | FdKind::External { .. })
                })
        })
    };
    let pairs_ok = ckpt.socketpairs.iter().all(|sp| {
        let in_runs = sp
            .runs0
            .iter()
            .chain(sp.runs1.iter())
            .flat_map(|r| &r.rights);
        let in_msgs = sp
            .msgs0
            .iter()
            .chain(sp.msgs1.iter())
            .flat_map(|m| &m.rights);
        in_msgs.chain(in_runs).all(restored)
    });
    let dgrams_ok = ckpt
        .processes
        .iter()
        .flat_map(|p| p.fds.iter())
        .all(|f| match &f.kind {
            FdKind::UnixDgram { sock, .. } => {
                sock.msgs.iter().flat_map(|m| &m.rights).all(restored)
            }
            _ => true,
        });
    if !pairs_ok || !dgrams_ok {
        check::p(
            problems,
            "malformed",
            "a queued unix message carries a descriptor restore cannot send".into(),
        );
    }
}

/// Names of the image's unix datagram sockets (connections and message senders must
/// be among them), each bound once.
pub(crate) fn dgram_names<'a>(
    procs: &'a [Process],
    problems: &mut Vec<Problem>,
) -> BTreeSet<&'a [u8]> {
    let mut dgram_names = BTreeSet::new();
    for f in procs.iter().flat_map(|q| q.fds.iter()) {
        if let FdKind::UnixDgram { sock, .. } = &f.kind {
            if f.shared_with.is_none()
                && !sock.name.is_empty()
                && !dgram_names.insert(&sock.name[..])
            {
                check::p(
                    problems,
                    "malformed",
                    "two unix datagram sockets are bound to one name".into(),
                );
            }
        }
    }
    dgram_names
}

/// A listening socket's name must be free: no one may listen there now, and a path may
/// hold at most a stale socket file (which restore replaces).
pub(crate) fn check_listen_name(
    name: &[u8],
    fd: i32,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    let shown = match name.split_first() {
        Some((0, rest)) => format!("@{}", check::show(rest)),
        _ => check::show(name),
    };
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        // sock_diag shows a path as it was bound, often with its trailing NUL (std and
        // many C programs pass it): compare as the image records names.
        if socks.values().any(|s| {
            !held.sockets.contains(&s.ino)
                && s.state == crate::sys::sockdiag::STATE_LISTEN
                && s.name.as_deref().map(unix_name).as_deref() == Some(name)
        }) {
            check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: another process listens on unix socket {shown}"),
            );
            return;
        }
    }
    if name.first() == Some(&b'/') {
        let path = procfs::bytes_path(name);
        match std::fs::symlink_metadata(path) {
            Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: {shown} exists and is not a socket"),
            ),
            _ => {}
        }
        if !path.parent().is_some_and(|d| d.is_dir()) {
            check::p(
                problems,
                "file-missing",
                format!("descriptor {fd}: the directory of unix socket {shown} does not exist"),
            );
        }
    }
}

/// A unix datagram socket record that restore can build: names that fit a sockaddr_un,
/// a peer and message senders among the image's sockets, bounded messages, and a name
/// to send them to.
pub(crate) fn unix_dgram_ok(u: &crate::model::UnixDgramState, names: &BTreeSet<&[u8]>) -> bool {
    let name_ok = |n: &[u8]| n.len() <= 107 && (n.is_empty() || n[0] == 0 || n[0] == b'/');
    name_ok(&u.name)
        && name_ok(&u.peer_name)
        && (u.peer_name.is_empty() || names.contains(&u.peer_name[..]))
        && (u.msgs.is_empty() || !u.name.is_empty())
        && u.msgs.len() <= MAX_MESSAGES
        && u.msgs.iter().all(|m| {
            m.data.len() <= MAX_MESSAGE
                && (m.from.is_empty() || names.contains(&m.from[..]))
                && (u.peer_name.is_empty() || m.from == u.peer_name)
        })
        && u.msgs.iter().map(|m| m.data.len()).sum::<usize>() <= MAX_PIPE
}

/// A unix socket waiting to be accepted: a stream or seqpacket socket with a name that
/// fits, waiting on a listener of the image of its type, at a place in its queue that
/// no other has, the places of each listener's queue counting from 0, at most one more
/// than its backlog (a full queue would make restore's connect wait).
pub(crate) fn pending_ok(procs: &[Process], f: &Fd) -> bool {
    let FdKind::UnixPending {
        listener,
        typ,
        pos,
        name,
        dir,
        listener_dir,
        ..
    } = &f.kind
    else {
        return true;
    };
    let fds = || procs.iter().flat_map(|p| p.fds.iter());
    let backlog = fds().find_map(|g| match &g.kind {
        FdKind::UnixListen {
            name: l,
            typ: t,
            backlog,
            ..
        } if g.shared_with.is_none() && l == listener && t == typ => Some(*backlog),
        _ => None,
    });
    // The places in this listener's queue.
    let places: Vec<u32> = fds()
        .filter(|g| g.shared_with.is_none())
        .filter_map(|g| match &g.kind {
            FdKind::UnixPending {
                listener: l, pos, ..
            } if l == listener => Some(*pos),
            _ => None,
        })
        .collect();
    let mut sorted = places.clone();
    sorted.sort_unstable();
    [libc::SOCK_STREAM, libc::SOCK_SEQPACKET].contains(typ)
        && !listener.is_empty()
        && name_ok(listener, listener_dir)
        && name_ok(name, dir)
        && backlog.is_some_and(|b| places.len() as u64 <= u64::from(b) + 1)
        && sorted.iter().enumerate().all(|(i, &p)| p == i as u32)
        && (*pos as usize) < places.len()
}

/// A unix datagram socket's name must be free: no socket may be bound to it now, and a
/// path may hold at most a stale socket file (which restore replaces).
pub(crate) fn check_bound_name(
    name: &[u8],
    fd: i32,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks.values().any(|s| {
            !held.sockets.contains(&s.ino)
                && s.name.as_deref().is_some_and(|n| {
                    let mut n = n.to_vec();
                    if n.first() != Some(&0) {
                        while n.last() == Some(&0) {
                            n.pop();
                        }
                    }
                    n == name
                })
        }) {
            let shown = match name.split_first() {
                Some((0, rest)) => format!("@{}", check::show(rest)),
                _ => check::show(name),
            };
            check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: a socket is bound to unix socket name {shown} now"),
            );
            return;
        }
    }
    // The rest is as for a listener's name (the path's directory, a non-socket file).
    check_listen_name(name, fd, held, problems);
}

/// The names socket pairs bind at restore must be free: an end's own name (bound by
/// the program, or autobound), and the name of the listener that accepted an end
/// (bound for the time it takes to make the connection again). The tree's own sockets
/// count as free; so does a stale socket file at a path, which restore replaces.
pub(crate) fn check_pair_names(
    files: &mut HeldFiles,
    ckpt: &Checkpoint,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    for sp in &ckpt.socketpairs {
        for (end, name, dir) in [(0u8, &sp.name0, &sp.dir0), (1u8, &sp.name1, &sp.dir1)] {
            if name.is_empty() {
                continue;
            }
            // A descriptor on that end, to name in the message.
            let holder = ckpt.processes.iter().find_map(|p| {
                p.fds
                    .iter()
                    .find(|f| matches!(f.kind, FdKind::UnixPair { id, end: e, .. } if id == sp.id && e == end))
                    .map(|f| (p, f.fd))
            });
            let fd = holder.map_or(-1, |(_, fd)| fd);
            // An abstract name is its network namespace's: not checked against ckpt's
            // when the end is made in another (the tree's own, a joined one, or one a
            // process below the root made).
            let elsewhere = crate::kinds::ns::net_elsewhere(ckpt)
                || holder
                    .is_some_and(|(p, _)| crate::kinds::ns::net_below_root(&ckpt.processes, p));
            if elsewhere && name.first() == Some(&0) {
                continue;
            }
            if relative(name) {
                check_relative_name(files, (name, dir), true, fd, held, problems);
            } else {
                check_bound_name(name, fd, held, problems);
            }
        }
    }
}

/// A unix socket name as `inspect` shows it (`@` for an abstract name).
fn shown_name(n: &[u8]) -> String {
    match n.split_first() {
        None => "(unnamed)".to_string(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(n).into_owned(),
    }
}

/// What `inspect` says of a unix datagram socket.
pub(crate) fn describe_dgram(u: &crate::model::UnixDgramState) -> String {
    let shown = shown_name;
    format!(
        "unix datagram socket {}{} ({} messages queued, {} bytes)",
        shown(&u.name),
        if u.peer_name.is_empty() {
            String::new()
        } else {
            format!(" connected to {}", shown(&u.peer_name))
        },
        u.msgs.len(),
        u.msgs.iter().map(|m| m.data.len()).sum::<usize>()
    )
}

/// What `inspect` says of one end of a socket pair.
pub(crate) fn describe_pair(ckpt: &Checkpoint, id: u64, end: u8) -> String {
    let queued = ckpt
        .socketpairs
        .iter()
        .find(|p| p.id == id)
        .map(|p| {
            let (data, msgs) = if end == 0 {
                (&p.data0, &p.msgs0)
            } else {
                (&p.data1, &p.msgs1)
            };
            let typ = match p.typ {
                libc::SOCK_DGRAM => "datagram ",
                libc::SOCK_SEQPACKET => "seqpacket ",
                _ => "",
            };
            if p.typ == libc::SOCK_STREAM {
                format!("{typ}{} bytes", data.len())
            } else {
                let bytes: usize = msgs.iter().map(|m| m.data.len()).sum();
                format!("{typ}{} messages, {bytes} bytes", msgs.len())
            }
        })
        .unwrap_or_default();
    format!("unix socket pair {id}, end {end} ({queued} queued to it)")
}

/// What `inspect` says of a unix socket waiting to be accepted.
pub(crate) fn describe_pending(listener: &[u8], pos: u32) -> String {
    format!(
        "unix socket waiting to be accepted by {} (place {pos} in its queue)",
        shown_name(listener)
    )
}

/// What `inspect` says of a listening unix socket.
pub(crate) fn describe_listen(name: &[u8], backlog: u32) -> String {
    let shown = match name.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(name).into_owned(),
    };
    format!("unix socket listening on {shown} (backlog {backlog})")
}

// ---- restore (stage) ----

/// Create socket pair `sp` in this process (its ends kept at `tmp`, `tmp + 1`), each
/// end with the data that was waiting to be read on it.
pub(crate) fn create_socketpair(
    cx: &mut Ctx<'_>,
    ckpt: &Checkpoint,
    sp: &SocketPairState,
    tmp: u64,
    dirs: &HeldDirs,
) -> RestoreResult<(u64, u64)> {
    let (e0, e1) = match sp.accepted {
        Some(a) => connect_through_listener(cx, sp, a, dirs)?,
        None => {
            let (e0, e1) = cx.socketpair(libc::AF_UNIX, sp.typ | libc::SOCK_CLOEXEC)?;
            // Names before SO_PASSCRED, which would autobind an unnamed end to another.
            for (fd, name, dir) in [(e0, &sp.name0, &sp.dir0), (e1, &sp.name1, &sp.dir1)] {
                if !name.is_empty() {
                    bind_unix(cx, fd, name, dir, dirs)?;
                }
            }
            (e0, e1)
        }
    };
    // Options first: the buffer sizes bound what can be queued, and SO_PASSCRED
    // decides whether queued messages carry credentials.
    for (fd, o) in [(e0, &sp.opts[0]), (e1, &sp.opts[1])] {
        set_sock_opts(cx, fd, o)?;
    }
    // A pair with descriptors in flight is filled once every process has its own
    // (`fill_deferred_pairs`).
    if !carries_rights(sp) {
        fill_pair(cx, ckpt, sp, e0, e1)?;
    }
    park_pair(cx, e0, e1, tmp)
}

/// Whether messages or bytes queued on pair `sp` carry descriptors.
fn carries_rights(sp: &SocketPairState) -> bool {
    sp.msgs0
        .iter()
        .chain(sp.msgs1.iter())
        .any(|m| !m.rights.is_empty())
        || sp
            .runs0
            .iter()
            .chain(sp.runs1.iter())
            .any(|r| !r.rights.is_empty())
}

/// Queue on pair `sp` (ends `e0`, `e1` of the process of `cx`) what each end had to
/// read, then shut its ends down as they were.
fn fill_pair(
    cx: &mut Ctx<'_>,
    ckpt: &Checkpoint,
    sp: &SocketPairState,
    e0: u64,
    e1: u64,
) -> RestoreResult<()> {
    // What end 0 will read is sent from end 1, and the other way round: each writer's
    // run with its credentials, or all at once (older images).
    let what = format!("socket pair {}", sp.id);
    for (from, data, runs) in [(e1, &sp.data0, &sp.runs0), (e0, &sp.data1, &sp.runs1)] {
        if runs.is_empty() {
            cx.write_all(from, data, &what)?;
            continue;
        }
        let mut at = 0;
        for r in runs {
            let end = at + r.len as usize;
            let bytes = data.get(at..end).ok_or_else(|| {
                RestoreError::Malformed(format!("{what}: runs longer than the data"))
            })?;
            let c = creds_from(ckpt, cx, r.creds, &what)?;
            // A run with descriptors is one message of its own, as it was.
            let fds = take_rights(cx, &r.rights, &what)?;
            cx.send_message_as(from, bytes, None, c, &fds, &what)?;
            for f in fds {
                cx.close(f)?;
            }
            at = end;
        }
    }
    for (from, msgs) in [(e1, &sp.msgs0), (e0, &sp.msgs1)] {
        for m in msgs {
            let fds = take_rights(cx, &m.rights, &what)?;
            let c = creds_from(ckpt, cx, m.creds, &what)?;
            cx.send_message_as(from, &m.data, None, c, &fds, &what)?;
            for f in fds {
                cx.close(f)?;
            }
        }
    }
    // Shut down last: nothing could be queued through a shut end. On a stream or
    // seqpacket pair the kernel marks the peer too, as the program's own call did.
    for (fd, m) in [(e0, sp.shutdown[0]), (e1, sp.shutdown[1])] {
        shutdown(cx, fd, m)?;
    }
    Ok(())
}

/// The descriptors in flight `rights`: copies, in the process of `cx`, of the image's
/// descriptors with those open file descriptions (the caller closes them once sent).
fn take_rights(cx: &mut Ctx<'_>, rights: &[FdRef], what: &str) -> RestoreResult<Vec<u64>> {
    let mut fds = Vec::with_capacity(rights.len());
    for r in rights {
        let w = format!(
            "{what}: take descriptor {} of process {} to send it in flight",
            r.fd, r.pid
        );
        fds.push(crate::remote::take_remote_fd(cx, r.pid, r.fd as u64, &w)?);
    }
    Ok(fds)
}

/// Fill the pairs with descriptors in flight, now that every process has its
/// descriptors: in the process that holds both ends (`holders`).
pub(crate) fn fill_deferred_pairs(
    ctxs: &mut [Ctx<'_>],
    ckpt: &Checkpoint,
    pairs: &[SocketPairState],
    holders: &super::PipeHolders,
) -> RestoreResult<()> {
    for sp in pairs.iter().filter(|sp| carries_rights(sp)) {
        let Some(&(pid, a, b)) = holders.get(&(1, sp.id)) else {
            // No process holds it: nothing to fill.
            continue;
        };
        let cx = ctxs
            .iter_mut()
            .find(|c| c.proc_.pid == pid)
            .ok_or_else(|| RestoreError::Stage(format!("socket pair {}: no holder", sp.id)))?;
        fill_pair(cx, ckpt, sp, a, b)?;
    }
    Ok(())
}

/// The credentials a queued message is sent again with from the process of `cx` (its
/// sender's, if recorded): the sender named as that process's PID namespace numbers it
/// (the kernel shows each receiver the sender's ID in its own namespace; plan checked
/// that the sending process's namespace shows the sender).
fn creds_from(
    ckpt: &Checkpoint,
    cx: &Ctx<'_>,
    c: Option<SockCreds>,
    what: &str,
) -> RestoreResult<Option<(i32, u32, u32)>> {
    let Some(c) = c else { return Ok(None) };
    let pid = crate::kinds::task::pidns::id_seen_by(ckpt, cx.proc_, c.pid).ok_or_else(|| {
        RestoreError::Malformed(format!(
            "{what}: the sender {} of a queued message is not seen from the PID namespace \
             of process {}",
            c.pid, cx.proc_.pid
        ))
    })?;
    Ok(Some((pid, c.uid, c.gid)))
}

/// Shut socket `fd` down the ways `mask` (sock_diag's RCV_SHUTDOWN 1, SEND_SHUTDOWN 2)
/// says; nothing for 0.
fn shutdown(cx: &mut Ctx<'_>, fd: u64, mask: u8) -> RestoreResult<()> {
    let how = match mask & 3 {
        0 => return Ok(()),
        1 => libc::SHUT_RD,
        2 => libc::SHUT_WR,
        _ => libc::SHUT_RDWR,
    };
    cx.shutdown(fd, how)?;
    Ok(())
}

/// The two ends of connection `sp`, end `a` accepted by a listener: a listener is
/// bound to end `a`'s name for the time it takes to connect the other end (bound to its
/// own name first, if it has one) and accept, so that end `a` shows that name without
/// holding it, as the original did. A path the listener made is removed again unless
/// a (stale) socket file was there before.
fn connect_through_listener(
    cx: &mut Ctx<'_>,
    sp: &SocketPairState,
    a: u8,
    dirs: &HeldDirs,
) -> RestoreResult<(u64, u64)> {
    let (name, other) = if a == 0 {
        ((&sp.name0, &sp.dir0), (&sp.name1, &sp.dir1))
    } else {
        ((&sp.name1, &sp.dir1), (&sp.name0, &sp.dir0))
    };
    let path = host_path(name.0, name.1, dirs);
    let was_there = path
        .as_ref()
        .is_some_and(|p| std::fs::symlink_metadata(p).is_ok());
    let l = cx.socket(
        "socket(AF_UNIX) to accept a connection",
        libc::AF_UNIX,
        sp.typ | libc::SOCK_CLOEXEC,
        0,
    )?;
    // (On failure the stage guard kills the process with its sockets; the path goes
    // here either way.)
    let ends = ((&name.0[..], &name.1[..]), (&other.0[..], &other.1[..]));
    let r = accept_one(cx, l, sp.typ, ends.0, ends.1, dirs).and_then(|ends| {
        cx.close(l)?;
        Ok(ends)
    });
    if let Some(p) = path.filter(|_| !was_there) {
        let _ = std::fs::remove_file(p);
    }
    let (acc, c) = r?;
    Ok(if a == 0 { (acc, c) } else { (c, acc) })
}

/// Bind `l` to `name`, listen, connect a new socket (bound to `other` if not empty) to
/// it and accept: (accepted end, connecting end).
fn accept_one(
    cx: &mut Ctx<'_>,
    l: u64,
    typ: i32,
    (name, dir): (&[u8], &[u8]),
    (other, other_dir): (&[u8], &[u8]),
    dirs: &HeldDirs,
) -> RestoreResult<(u64, u64)> {
    bind_unix(cx, l, name, dir, dirs)?;
    cx.listen("listen to accept a connection", l, 1)?;
    let c = cx.socket(
        "socket(AF_UNIX) to connect",
        libc::AF_UNIX,
        typ | libc::SOCK_CLOEXEC,
        0,
    )?;
    if !other.is_empty() {
        bind_unix(cx, c, other, other_dir, dirs)?;
    }
    let what = format!("connect to unix socket {}", show_name(name));
    enter_dir(cx, dir, dirs)?;
    cx.connect(&what, c, &SockAddr::Unix(name))?;
    let acc = cx.accept4(l, libc::SOCK_CLOEXEC)?;
    Ok((acc, c))
}

/// A listening unix socket bound to its old name. A stale socket file left at the path
/// by the dumped process is replaced (plan made sure nobody listens there now).
pub(crate) fn create_listener(
    cx: &mut Ctx<'_>,
    (name, dir): (&[u8], &[u8]),
    typ: i32,
    backlog: u32,
    dirs: &HeldDirs,
) -> RestoreResult<u64> {
    let n = cx.socket(
        "socket(AF_UNIX)",
        libc::AF_UNIX,
        typ | libc::SOCK_CLOEXEC,
        0,
    )?;
    bind_unix(cx, n, name, dir, dirs)?;
    cx.listen("listen", n, backlog)?;
    Ok(n)
}

/// The directories plan held for relative socket names (ckpt's descriptors, by path).
pub(crate) type HeldDirs = BTreeMap<Vec<u8>, (std::os::fd::RawFd, bool)>;

/// Where ckpt reaches the file of socket name `name` (relative ones in directory `dir`,
/// through the descriptor plan held); `None` for an abstract name.
fn host_path(name: &[u8], dir: &[u8], dirs: &HeldDirs) -> Option<std::path::PathBuf> {
    match name.first() {
        Some(b'/') => Some(procfs::bytes_path(name).to_path_buf()),
        Some(0) | None => None,
        Some(_) => {
            let (fd, _) = dirs.get(dir)?;
            let mut p = format!("/proc/self/fd/{fd}/").into_bytes();
            p.extend_from_slice(name);
            Some(procfs::bytes_path(&p).to_path_buf())
        }
    }
}

/// Make directory `dir` (held by plan) the working directory of the process of `cx`,
/// for a relative name; nothing for none. (Its own working directory comes later.)
fn enter_dir(cx: &mut Ctx<'_>, dir: &[u8], dirs: &HeldDirs) -> RestoreResult<()> {
    if dir.is_empty() {
        return Ok(());
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let d = super::held::open_held(cx, dirs, &[(dir, flags)])?
        .first()
        .copied()
        .ok_or_else(|| RestoreError::Stage("no descriptor opened".into()))?;
    cx.call(
        "fchdir",
        crate::arch::native::nr::FCHDIR,
        [d, 0, 0, 0, 0, 0],
    )?;
    cx.close(d)?;
    Ok(())
}

/// Bind unix socket `n` of the target to `name` (a relative one from directory `dir`).
/// A stale socket file left at the path by the dumped process is replaced (plan made
/// sure no socket has that name now); the new file belongs to the process's user, as
/// the old one did.
fn bind_unix(
    cx: &mut Ctx<'_>,
    n: u64,
    name: &[u8],
    dir: &[u8],
    dirs: &HeldDirs,
) -> RestoreResult<()> {
    let path = host_path(name, dir, dirs);
    if let Some(p) = &path {
        if std::fs::symlink_metadata(p)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(p);
        }
    }
    enter_dir(cx, dir, dirs)?;
    let what = format!("bind unix socket {}", show_name(name));
    cx.bind(&what, n, &SockAddr::Unix(name))?;
    if let Some(p) = &path {
        let c = &cx.proc_.creds;
        let _ = std::os::unix::fs::chown(p, Some(c.uid[1]), Some(c.gid[1]));
    }
    Ok(())
}

/// A socket that will wait to be accepted: its options and own name now; it connects
/// in [`connect_pending`], once every listener exists.
pub(crate) fn create_pending(
    cx: &mut Ctx<'_>,
    typ: i32,
    (name, dir): (&[u8], &[u8]),
    opts: &SockOpts,
    dirs: &HeldDirs,
) -> RestoreResult<u64> {
    let n = cx.socket(
        "socket(AF_UNIX) to wait to be accepted",
        libc::AF_UNIX,
        typ | libc::SOCK_CLOEXEC,
        0,
    )?;
    // The name before SO_PASSCRED, which would autobind it to another.
    if !name.is_empty() {
        bind_unix(cx, n, name, dir, dirs)?;
    }
    set_sock_opts(cx, n, opts)?;
    Ok(n)
}

/// Connect the sockets that waited to be accepted to their listeners, in each queue's
/// order (plan made sure each queue fits its backlog: no connect waits), then send
/// again what each had sent, with its sender's credentials: the listener's side of
/// each connection holds it, as before, until accept.
pub(crate) fn connect_pending(
    ctxs: &mut [Ctx<'_>],
    ckpt: &Checkpoint,
    dirs: &HeldDirs,
) -> RestoreResult<()> {
    // (listener, place, process, descriptor, listener's directory, what it sent)
    type Waiting<'a> = (&'a [u8], u32, usize, i32, &'a [u8], &'a [SockMessage]);
    let mut waiting: Vec<Waiting<'_>> = ctxs
        .iter()
        .enumerate()
        .flat_map(|(i, cx)| {
            cx.proc_
                .fds
                .iter()
                .filter(|f| f.shared_with.is_none())
                .filter_map(move |f| match &f.kind {
                    FdKind::UnixPending {
                        listener,
                        pos,
                        listener_dir,
                        queued,
                        ..
                    } => Some((&listener[..], *pos, i, f.fd, &listener_dir[..], &queued[..])),
                    _ => None,
                })
        })
        .collect();
    waiting.sort_by_key(|w| (w.0, w.1, w.2, w.3));
    for &(listener, _, i, fd, dir, _) in &waiting {
        let what = format!(
            "connect unix socket {fd} to the listener {}",
            show_name(listener)
        );
        enter_dir(&mut ctxs[i], dir, dirs)?;
        ctxs[i].connect(&what, fd as u64, &SockAddr::Unix(listener))?;
    }
    for (listener, _, i, fd, _, queued) in waiting {
        let what = format!(
            "send again what unix socket {fd} had sent to the listener {} before it \
             was accepted",
            show_name(listener)
        );
        let cx = &mut ctxs[i];
        for m in queued {
            let c = creds_from(ckpt, cx, m.creds, &what)?;
            cx.send_message_as(fd as u64, &m.data, None, c, &[], &what)?;
        }
    }
    Ok(())
}

/// A new unnamed unix datagram socket (close-on-exec) in the process of `cx`.
fn unix_dgram_socket(cx: &mut Ctx<'_>) -> RestoreResult<u64> {
    cx.socket(
        "socket(AF_UNIX, SOCK_DGRAM)",
        libc::AF_UNIX,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        0,
    )
}

/// A unix datagram socket with its options, bound to its name; it is connected and
/// gets its queued messages in [`unix_dgram_links`], once every socket exists.
pub(crate) fn create_unix_dgram(
    cx: &mut Ctx<'_>,
    u: &crate::model::UnixDgramState,
) -> RestoreResult<u64> {
    let n = unix_dgram_socket(cx)?;
    set_sock_opts(cx, n, &u.opts)?;
    if !u.name.is_empty() {
        bind_unix(cx, n, &u.name, &[], &HeldDirs::new())?;
    }
    Ok(n)
}

/// Connect the image's unix datagram sockets to their peers (by name), then send each
/// one's queued messages again, in order, from the same sender: the image's socket
/// bound to the sender's name (in its own process), or, for an unnamed sender, a
/// temporary unnamed socket in the receiver's process.
pub(crate) fn unix_dgram_links(ctxs: &mut [Ctx<'_>], ckpt: &Checkpoint) -> RestoreResult<()> {
    let socks: Vec<(usize, i32, &crate::model::UnixDgramState)> = ctxs
        .iter()
        .enumerate()
        .flat_map(|(i, cx)| {
            cx.proc_
                .fds
                .iter()
                .filter(|f| f.shared_with.is_none())
                .filter_map(move |f| match &f.kind {
                    FdKind::UnixDgram { sock, .. } => Some((i, f.fd, &**sock)),
                    _ => None,
                })
        })
        .collect();
    for &(i, fd, u) in &socks {
        if u.peer_name.is_empty() {
            continue;
        }
        let what = format!("connect unix socket {fd} to {}", show_name(&u.peer_name));
        ctxs[i].connect(&what, fd as u64, &SockAddr::Unix(&u.peer_name))?;
    }
    for &(i, fd, u) in &socks {
        let what = format!(
            "process {} descriptor {fd} (unix socket {})",
            ctxs[i].proc_.pid,
            show_name(&u.name)
        );
        let to = SockAddr::Unix(&u.name);
        for m in &u.msgs {
            if m.from.is_empty() {
                let cx = &mut ctxs[i];
                let t = unix_dgram_socket(cx)?;
                let fds = take_rights(cx, &m.rights, &what)?;
                let r = creds_from(ckpt, cx, m.creds, &what)
                    .and_then(|c| cx.send_message_as(t, &m.data, Some(&to), c, &fds, &what));
                for f in fds {
                    cx.close(f)?;
                }
                cx.close(t)?;
                r?;
            } else {
                let &(j, sfd, _) =
                    socks
                        .iter()
                        .find(|(_, _, s)| s.name == m.from)
                        .ok_or_else(|| {
                            RestoreError::Malformed(format!("{what}: unknown message sender"))
                        })?;
                // Addressed by name even when connected to the receiver (allowed), so
                // that a sender connected elsewhere reaches it too.
                let cx = &mut ctxs[j];
                let fds = take_rights(cx, &m.rights, &what)?;
                let c = creds_from(ckpt, cx, m.creds, &what)?;
                cx.send_message_as(sfd as u64, &m.data, Some(&to), c, &fds, &what)?;
                for f in fds {
                    cx.close(f)?;
                }
            }
        }
    }
    // Shut down once every message is queued (a socket shut for reading takes none).
    for &(i, fd, u) in &socks {
        shutdown(&mut ctxs[i], fd as u64, u.shutdown)?;
    }
    Ok(())
}

fn show_name(name: &[u8]) -> String {
    match name.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(name).into_owned(),
    }
}
