//! Unix sockets: pairs, listeners, datagram sockets, queued messages, names.

use std::collections::BTreeMap;

use super::external;
use crate::error::{DumpError, DumpResult as Result};
use crate::kinds::unsupported;
use crate::model::{Fd, FdKind, Process, SockMessage, SockOpts, SocketPairState, UnixDgramState};
use crate::sys;
use crate::sys::sockdiag::{self, STATE_ESTABLISHED, STATE_LISTEN, UnixSock};

// ---- collect (dump) ----

/// The unix sockets of the host (sock_diag) and where the tree holds them, with the
/// socket pairs kept so far.
pub(crate) struct UnixTable {
    diag: BTreeMap<u64, UnixSock>,
    /// Where each socket inode is held: (pid, fd).
    held: BTreeMap<u64, (i32, i32)>,
    pub(crate) pairs: Vec<SocketPairState>,
}

impl UnixTable {
    /// The unix sockets of the host, and the first holder of each socket inode
    /// (`socket_ino` of a descriptor) of the tree.
    pub(crate) fn read(procs: &[Process], socket_ino: fn(&FdKind) -> Option<u64>) -> Result<Self> {
        let diag = sockdiag::unix_sockets()?;
        let mut held: BTreeMap<u64, (i32, i32)> = Default::default();
        for p in procs.iter() {
            for f in &p.fds {
                if let Some(ino) = socket_ino(&f.kind) {
                    held.entry(ino).or_insert((p.pid, f.fd));
                }
            }
        }
        Ok(Self {
            diag,
            held,
            pairs: Vec::new(),
        })
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
    ) -> Result<()> {
        let (diag, held) = (&self.diag, &self.held);
        let Some(s) = diag.get(&ino) else {
            return Ok(());
        };
        if s.state == STATE_LISTEN {
            f.kind = listen(s, flags, refuse)?;
            return Ok(());
        }
        if s.typ == libc::SOCK_DGRAM {
            let peer = diag.get(&s.peer);
            let anonymous_pair = s.state == STATE_ESTABLISHED
                && held.contains_key(&s.peer)
                && peer.is_some_and(|p| p.peer == ino && p.name.is_none())
                && s.name.is_none();
            if !anonymous_pair {
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
                f.kind = unix_dgram(s, diag, held, flags).map_err(|why| refuse(&why))?;
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
            let st = pair_state(s, id, end, diag, held, refuse)?;
            self.pairs.push(st);
        }
        f.kind = FdKind::UnixPair { id, end, flags };
        Ok(())
    }
}

/// A listening unix socket: kept with its name (an absolute path or an abstract name)
/// and backlog, if no connection waits to be accepted.
fn listen(s: &UnixSock, flags: u32, refuse: &dyn Fn(&str) -> DumpError) -> Result<FdKind> {
    let mut name = s.name.clone().unwrap_or_default();
    // A path name may carry the NUL its binder passed in the address length.
    if name.first() == Some(&b'/') {
        while name.last() == Some(&0) {
            name.pop();
        }
    }
    if name.is_empty() || !(name[0] == 0 || name[0] == b'/') {
        return Err(refuse("a listening unix socket without an absolute name"));
    }
    if s.rqueue != 0 {
        return Err(refuse(
            "a listening unix socket with connections waiting to be accepted",
        ));
    }
    Ok(FdKind::UnixListen {
        name,
        typ: s.typ,
        backlog: s.wqueue,
        flags,
    })
}

/// A unix socket connected outside the tree, or neither connected nor listening: a
/// standard descriptor stays inherited, one connected outside is recorded as external
/// with `external`; anything else is refused.
fn outside(pid: i32, f: &mut Fd, ino: u64, s: &UnixSock, flags: u32, external: bool) -> Result<()> {
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
            "file descriptor {} is a unix socket (socket:[{ino}]) {}; not \
             supported yet{}",
            f.fd,
            if s.peer != 0 {
                "connected outside the dumped tree"
            } else {
                "that is neither connected nor listening"
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

/// The pair `id` of which `s` is end `end`: both ends' options and the data queued on
/// each (peeked without consuming it).
fn pair_state(
    s: &UnixSock,
    id: u64,
    end: u8,
    diag: &BTreeMap<u64, UnixSock>,
    held: &BTreeMap<u64, (i32, i32)>,
    refuse: &dyn Fn(&str) -> DumpError,
) -> Result<SocketPairState> {
    let peer = diag.get(&s.peer).cloned().unwrap_or_default();
    let (a, b) = if end == 0 {
        (s.clone(), peer)
    } else {
        (peer, s.clone())
    };
    let mut st = SocketPairState {
        id,
        typ: s.typ,
        ..Default::default()
    };
    for (which, sock) in [(0u8, &a), (1u8, &b)] {
        let Some(&(hp, hfd)) = held.get(&sock.ino) else {
            return Err(refuse("a unix socket whose peer vanished during the dump"));
        };
        let dup = sys::process::steal_fd(hp, hfd)?;
        let o = sockdiag::sock_opts(&dup, true)?;
        st.opts[usize::from(which)] = SockOpts {
            sndbuf: o.sndbuf,
            rcvbuf: o.rcvbuf,
            passcred: o.passcred,
            reuseaddr: false,
            reuseport: false,
        };
        if s.typ == libc::SOCK_STREAM {
            if sock.rqueue == 0 {
                continue;
            }
            let data = sockdiag::peek_stream(&dup, sock.rqueue as usize)?;
            if which == 0 {
                st.data0 = data;
            } else {
                st.data1 = data;
            }
        } else {
            // For datagrams sock_diag reports only the first message's length
            // (0 for an empty one): always look at the whole queue.
            let msgs = peek_messages(&dup).map_err(|e| match e {
                sockdiag::PeekError::Sys(e) => DumpError::Sys(e),
                e => refuse(&peek_refusal(&e, "unix socket")),
            })?;
            if which == 0 {
                st.msgs0 = msgs;
            } else {
                st.msgs1 = msgs;
            }
        }
    }
    Ok(st)
}

/// The messages queued on a socket, in the model's terms.
pub(crate) fn peek_messages(
    dup: &std::os::fd::OwnedFd,
) -> std::result::Result<Vec<SockMessage>, sys::sockdiag::PeekError> {
    Ok(sys::sockdiag::peek_messages(dup)?
        .into_iter()
        .map(|m| SockMessage {
            from: m.from,
            data: m.data,
        })
        .collect())
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
    flags: u32,
) -> std::result::Result<FdKind, String> {
    let name = unix_name(s.name.as_deref().unwrap_or_default());
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
    let mut msgs = peek_messages(&dup).map_err(|e| peek_refusal(&e, "unix datagram socket"))?;
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
            opts: SockOpts {
                sndbuf: opts.sndbuf,
                rcvbuf: opts.rcvbuf,
                passcred: opts.passcred,
                reuseaddr: false,
                reuseport: false,
            },
            msgs,
        }),
        flags,
    })
}
