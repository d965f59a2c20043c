//! TCP sockets: listeners and established connections (TCP_REPAIR).

use super::udp;
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::error::RestoreResult;
use crate::kinds::fd::udp::check_sockaddr;
use crate::model::{Fd, FdKind, IntSockOpt, SockOpts, TcpOpts, TcpState, TcpUnconnState};
use crate::remote::{Ctx, SockAddr, SockOpt, TcpQueue, TcpRepairOpt};
use crate::sys;

// ---- collect (dump) ----

/// TCP sockets held in repair mode during a dump, each with the SO_REUSEADDR it had; a
/// failed dump takes them out of it so the target runs on with working connections.
pub(crate) struct RepairGuard(pub(crate) Vec<(std::os::fd::OwnedFd, bool)>);

impl RepairGuard {
    /// Close the duplicates with the sockets still in repair mode.
    pub(crate) fn close_silently(mut self) {
        drop(std::mem::take(&mut self.0));
    }

    pub(crate) fn off(&mut self) {
        for (fd, reuseaddr) in self.0.drain(..) {
            leave_repair(&fd, reuseaddr);
        }
    }
}

/// Take a socket the dump read out of repair mode (sending nothing), with the
/// SO_REUSEADDR it had (the kernel clears it when repair mode ends; an accepted
/// connection inherits its listener's).
pub(crate) fn leave_repair(fd: &std::os::fd::OwnedFd, reuseaddr: bool) {
    sys::tcp::repair_off_quiet(fd);
    if reuseaddr {
        let _ = sys::tcp::setsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    }
}

impl Drop for RepairGuard {
    fn drop(&mut self) {
        self.off();
    }
}

/// A socket that sock_diag does not list as a unix one: a TCP socket listening,
/// connected or not yet connected, or else a netlink one ([`super::netlink::collect`])
/// or a UDP one ([`udp::collect`]). Its kind is set in `f`; a socket of
/// another kind is refused above the standard descriptors (0-2), which stay inherited.
///
/// TCP: read with TCP_REPAIR through a duplicate that stays open (in repair mode, kept
/// in `repair`) until the process is released, so that its death sends nothing to the
/// peer.
pub(crate) fn collect_inet(
    pid: i32,
    f: &mut Fd,
    flags: u32,
    repair: &mut Vec<(std::os::fd::OwnedFd, bool)>,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<()> {
    let dup = sys::process::steal_fd(pid, f.fd)?;
    // A packet socket keeps its classic filter (see `packet`).
    if super::packet::collect(f, flags, &dup, refuse)? {
        return Ok(());
    }
    if sys::tcp::has_filter(&dup)? {
        return Err(refuse(&format!(
            "{} with a socket filter attached (SO_ATTACH_FILTER or BPF): not restored yet",
            sys::tcp::socket_kind(&dup)?
        )));
    }
    let opts = |family: i32| extra_opts(&dup, family, libc::SOCK_STREAM, libc::IPPROTO_TCP);
    match sys::tcp::inspect(&dup)? {
        sys::tcp::TcpSock::Listen {
            family,
            addr,
            backlog,
            pending,
            reuseaddr,
            v6only,
        } => {
            // Repair mode rebuilds a connection on its own, never inside a listener's
            // queue: a waiting connection is made again by a handshake, which only a
            // client of the tree can make (its sequence numbers are new), with nothing
            // sent yet to be read on the listener's side (`accept_queue`).
            let half_open = sys::sockdiag::tcp_half_open(family, &addr)?;
            let queue = if pending != 0 || half_open != 0 {
                accept_queue(pid, &dup, &addr, pending, half_open, refuse)?
            } else {
                Vec::new()
            };
            f.kind = FdKind::TcpListen {
                family,
                addr,
                backlog,
                reuseaddr,
                v6only,
                flags,
                opts: Some(Box::new(opts(family)?)),
                queue,
            };
        }
        sys::tcp::TcpSock::Unconnected {
            family,
            local,
            v6only,
        } => unconnected(f, flags, &dup, family, local, v6only, None)?,
        sys::tcp::TcpSock::Connecting {
            family,
            local,
            peer,
            v6only,
        } => unconnected(f, flags, &dup, family, local, v6only, Some(peer))?,
        sys::tcp::TcpSock::Ended(e) => {
            if f.fd > 2 {
                ended(pid, f, flags, &dup, e, refuse)?;
            }
        }
        sys::tcp::TcpSock::Established(c) => {
            let extra = opts(c.family)?;
            f.kind = FdKind::TcpConn {
                conn: Box::new(TcpState {
                    family: c.family,
                    local: c.local,
                    peer: c.peer,
                    snd_seq: c.snd_seq,
                    rcv_seq: c.rcv_seq,
                    sndq: c.sndq,
                    rcvq: c.rcvq,
                    mss: c.mss,
                    snd_wscale: c.snd_wscale,
                    rcv_wscale: c.rcv_wscale,
                    sack: c.sack,
                    timestamps: c.timestamps,
                    tsval: c.tsval,
                    window: c.window,
                    nodelay: c.nodelay,
                    keepalive: c.keepalive,
                    reuseaddr: c.reuseaddr,
                    sndbuf: c.sndbuf,
                    rcvbuf: c.rcvbuf,
                    buf_lock: c.buf_lock,
                    opts: Some(extra),
                    state: c.state,
                    fin_read: c.fin_read,
                    rd_shut: c.rd_shut && !sys::tcp::fin_received(c.state),
                    v6only: c.v6only,
                }),
                flags,
            };
            repair.push((dup, c.reuseaddr));
        }
        sys::tcp::TcpSock::Other(state) => {
            if f.fd > 2 {
                return Err(refuse(&format!(
                    "a TCP socket in state {} (connecting): restore brings back only \
                     sockets listening, connected (or closed on one side or both) or not \
                     yet connected",
                    state_name(state)
                )));
            }
        }
        sys::tcp::TcpSock::NotTcp => {
            if !super::netlink::collect(f, flags, &dup, refuse)?
                && !super::inetraw::collect(pid, f, flags, &dup, refuse)?
            {
                udp::collect(f, flags, &dup, refuse)?
            }
        }
    }
    Ok(())
}

/// The connections waiting in the accept queue of listener `dup` (on `addr`, of process
/// `pid`), read without taking them ([`sys::tcpqueue`]), as the image keeps them; their
/// clients are matched with the tree's descriptors afterwards ([`resolve_queued`]).
/// The bytes a client sent that wait on the listener's side are read too (through the
/// direct map for those in page fragments: `sys::directmap`). Refused: connections
/// still in their handshake (SYN_RECV: a request, no socket yet), a queue the reader
/// cannot read here, and bytes it cannot read (out of order, device memory, a count
/// that does not add up: the reason is given).
fn accept_queue(
    pid: i32,
    dup: &std::os::fd::OwnedFd,
    addr: &[u8],
    pending: u32,
    half_open: u32,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<Vec<crate::model::TcpWaiting>> {
    let listener = format!("the TCP listener on {}", show_inet(addr));
    if half_open != 0 {
        return Err(refuse(&format!(
            "{listener} with {} still in their handshake (SYN_RECV: the kernel holds a \
             request, not a socket, until the client's ACK): restore cannot make one \
             again; not restored yet",
            count(half_open)
        )));
    }
    let ino = rustix::fs::fstat(dup)
        .map_err(|x| refuse(&format!("fstat of {listener}: {x}")))?
        .st_ino;
    let read = crate::error::fault_point("dump: read a TCP accept queue")
        .map_err(|x| x.to_string())
        .and_then(|()| sys::tcpqueue::accept_queue(pid, ino, pending));
    let queue = read.map_err(|why| {
        refuse(&format!(
            "{listener} with {} waiting to be accepted: the accept queue cannot be read \
             here without taking them ({why})",
            count(pending)
        ))
    })?;
    let mut out = Vec::with_capacity(queue.len());
    for w in queue {
        let data = if w.unread == 0 {
            w.data
        } else {
            crate::error::fault_point("dump: read the bytes a waiting client sent")
                .map_err(|x| x.to_string())
                .and(w.data)
        };
        let data = data.map_err(|why| {
            refuse(&format!(
                "{listener} with a connection waiting to be accepted from {} that holds {} \
                 bytes its client sent: ckpt cannot read them here without accepting it \
                 ({why})",
                show_inet(&w.peer),
                w.unread
            ))
        })?;
        if !matches!(
            w.state,
            sys::tcp::TCP_ESTABLISHED | sys::tcp::TCP_CLOSE_WAIT
        ) {
            return Err(refuse(&format!(
                "{listener} with a connection waiting to be accepted from {} in state {}: \
                 restore makes them only ESTABLISHED or CLOSE_WAIT",
                show_inet(&w.peer),
                state_name(w.state)
            )));
        }
        out.push(crate::model::TcpWaiting {
            local: w.local,
            peer: w.peer,
            fin: w.state == sys::tcp::TCP_CLOSE_WAIT,
            data,
        });
    }
    Ok(out)
}

/// "1 connection", "N connections".
fn count(n: u32) -> String {
    if n == 1 {
        "1 connection".into()
    } else {
        format!("{n} connections")
    }
}

/// Whether raw addresses `a` and `b` name the same endpoint (an IPv4-mapped IPv6 one
/// is its IPv4 address: a dual-stack listener's side shows its IPv4 client so).
fn same_endpoint(a: &[u8], b: &[u8]) -> bool {
    let canon = |x: &[u8]| inet_addr(x).map(|s| (s.ip().to_canonical(), s.port()));
    canon(a).is_some() && canon(a) == canon(b)
}

/// The clients of the connections waiting in the tree's TCP listeners' queues, once
/// every descriptor of the tree is read: each must be a connection of the tree, from
/// the waiting connection's client address to its listener's side, with nothing
/// unsent or unread and its FIN sent (FIN_WAIT2) exactly when the listener's side got
/// one; it becomes a [`FdKind::TcpQueued`] naming its listener and place. A client
/// outside the tree is refused, naming it: restore cannot put a connection into a
/// listener's queue, and a handshake made again by ckpt would not have the sequence
/// numbers that client holds.
pub(crate) fn resolve_queued(procs: &mut [crate::model::Process]) -> DumpResult<()> {
    let mut waiting = Vec::new();
    for p in procs.iter() {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            if let FdKind::TcpListen { addr, queue, .. } = &f.kind {
                for (pos, w) in queue.iter().enumerate() {
                    waiting.push((p.pid, f.fd, addr.clone(), pos as u32, w.clone()));
                }
            }
        }
    }
    for (lpid, lfd, addr, pos, w) in waiting {
        let listener = format!(
            "file descriptor {lfd} is the TCP listener on {} with a connection waiting to \
             be accepted from {}",
            show_inet(&addr),
            show_inet(&w.peer)
        );
        // Every descriptor of it (a client socket a fork shares is read once per
        // process; `link_shared_fds` links them afterwards). A second descriptor of the
        // listener (a fork's too) finds them made already.
        let ends = |k: &FdKind| match k {
            FdKind::TcpConn { conn, .. } | FdKind::TcpQueued { conn, .. } => {
                same_endpoint(&conn.local, &w.peer) && same_endpoint(&conn.peer, &w.local)
            }
            _ => false,
        };
        let mut found = false;
        for p in procs.iter_mut() {
            let cpid = p.pid;
            for f in p.fds.iter_mut().filter(|f| ends(&f.kind)) {
                found = true;
                let FdKind::TcpConn { conn, flags } = &f.kind else {
                    continue;
                };
                let want = if w.fin {
                    sys::tcp::TCP_FIN_WAIT2
                } else {
                    sys::tcp::TCP_ESTABLISHED
                };
                if conn.state != want
                    || !conn.sndq.is_empty()
                    || !conn.rcvq.is_empty()
                    || conn.rd_shut
                {
                    return Err(crate::kinds::unsupported(
                        cpid,
                        format!(
                            "file descriptor {} is the client ({}) of a connection waiting to \
                             be accepted by the TCP listener on {} (process {lpid}), in state \
                             {} with {} bytes unsent and {} unread: restore makes such a \
                             client only ESTABLISHED, or FIN_WAIT2 after shutting down \
                             writing, with nothing queued; not restored yet",
                            f.fd,
                            show_inet(&conn.local),
                            show_inet(&addr),
                            state_name(conn.state),
                            conn.sndq.len(),
                            conn.rcvq.len()
                        ),
                    ));
                }
                f.kind = FdKind::TcpQueued {
                    conn: conn.clone(),
                    listener_pid: lpid,
                    listener_fd: lfd,
                    pos,
                    flags: *flags,
                };
            }
        }
        if !found {
            return Err(crate::kinds::unsupported(
                lpid,
                format!(
                    "{listener}, a client outside the dumped tree: restore cannot put a \
                     connection back into a listener's queue, and one made again by a \
                     handshake would not have the sequence numbers that client holds (the \
                     program must accept it first, or dump its client with it)"
                ),
            ));
        }
    }
    Ok(())
}

/// A TCP socket not connected, or connecting to `connecting_to`, as the image keeps it.
fn unconnected(
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    family: i32,
    local: Vec<u8>,
    v6only: bool,
    connecting_to: Option<Vec<u8>>,
) -> DumpResult<()> {
    let o = sys::sockdiag::sock_opts(dup, false)?;
    f.kind = FdKind::TcpUnconnected {
        sock: Box::new(TcpUnconnState {
            family,
            local,
            v6only,
            sock: SockOpts {
                sndbuf: o.sndbuf,
                rcvbuf: o.rcvbuf,
                passcred: false,
                reuseaddr: o.reuseaddr,
                reuseport: o.reuseport,
                buf_lock: o.buf_lock,
            },
            opts: extra_opts(dup, family, libc::SOCK_STREAM, libc::IPPROTO_TCP)?,
            connecting_to,
            ended: None,
        }),
        flags,
    };
    Ok(())
}

/// A TCP socket whose connection has ended (or whose connect failed), as the image
/// keeps it, with the error the program has not read yet: read without clearing it by
/// the BPF socket error reader ([`sys::sockerr`]; SO_ERROR or a read would take it from
/// the program). What restore can make again ([`ended_ok`]): a connection reset while
/// connected (ECONNRESET), after the peer's FIN (EPIPE) or after both FINs (ECONNRESET),
/// one whose peer stopped answering (ETIMEDOUT, with no soft error), or ended with its
/// error read; a non-blocking connect refused (ECONNREFUSED) or whose error was read.
/// Any other error is refused, naming it, as is an error still to be read where the
/// reader cannot run (no BTF, an older kernel).
fn ended(
    pid: i32,
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    e: sys::tcp::TcpEnded,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<()> {
    let sock = show_inet(&e.local);
    let ino = rustix::fs::fstat(dup)
        .map_err(|x| refuse(&format!("fstat of the TCP socket ({sock}): {x}")))?
        .st_ino;
    let rec = crate::error::fault_point("dump: read a socket's pending error")
        .map_err(|x| x.to_string())
        .and_then(|()| sys::sockerr::read(pid, &[ino]));
    let rec = match rec {
        Ok(m) => match m.get(&ino) {
            Some(r) => Ok(*r),
            None => Err("the reader did not find it".to_string()),
        },
        Err(why) => Err(why),
    };
    let mut rec_ended = crate::model::TcpEnded {
        rcvq: Vec::new(),
        holds_port: e.holds_port,
        err: 0,
        fin: false,
        connecting: false,
        never_connected: !e.connected,
        err_soft: 0,
    };
    match rec {
        Err(why) => {
            // Without the reader: an error read already, on a connection (as before it).
            let what = if e.err_pending {
                "whose connection has ended with an error the program has not read yet \
                 (poll shows POLLERR): reading it would take it from the program, and"
            } else if !e.connected {
                "whose connect failed: whether the program's connect still shows it \
                 (the socket layer's state) is not known, as"
            } else {
                ""
            };
            if !what.is_empty() {
                return Err(refuse(&format!(
                    "a TCP socket ({sock}) {what} the BPF socket error reader, which reads \
                     it without changing it, cannot run here ({why})"
                )));
            }
        }
        Ok(r) => {
            rec_ended.err = r.err;
            rec_ended.fin = r.flags & sys::sockerr::SOCK_DONE != 0;
            rec_ended.connecting = r.sock_state == sys::sockerr::SS_CONNECTING;
            rec_ended.err_soft = r.err_soft;
            if r.state != sys::tcp::TCP_CLOSE
                || r.shutdown != 3
                || !matches!(
                    r.sock_state,
                    sys::sockerr::SS_CONNECTING | sys::sockerr::SS_CONNECTED
                )
            {
                return Err(refuse(&format!(
                    "a TCP socket ({sock}) whose connection has ended, in a state restore \
                     does not make (TCP state {}, shutdown {}, socket state {})",
                    state_name(r.state),
                    r.shutdown,
                    r.sock_state
                )));
            }
            if let Err(why) = ended_ok(&rec_ended, wire_v4(&e.local)) {
                return Err(refuse(&format!("a TCP socket ({sock}) {why}")));
            }
        }
    }
    // Restore takes the port again as connect would, which needs it free: another
    // socket on it (the listener that accepted this one) would have to share it.
    let shared_port = !e.holds_port
        && inet_addr(&e.local).is_some_and(|a| sys::tcp::try_bind(e.family, a, e.v6only).is_err());
    if shared_port {
        return Err(refuse(&format!(
            "a TCP socket ({sock}) whose connection has ended, on a port another socket holds \
             (the listener that accepted it?): restore cannot give it that port without \
             holding it after that socket closes; not restored yet"
        )));
    }
    rec_ended.rcvq = e.rcvq;
    unconnected(f, flags, dup, e.family, e.local, e.v6only, None)?;
    if let FdKind::TcpUnconnected { sock: u, .. } = &mut f.kind {
        if from_icmp(&rec_ended, wire_v4(&u.local)) && recverr_on(&u.opts) {
            return Err(refuse(&format!(
                "a TCP socket ({sock}) whose connection has ended with an error an ICMP \
                 message gave, with IP_RECVERR on: its error queue (MSG_ERRQUEUE) is not \
                 saved; not restored yet"
            )));
        }
        u.ended = Some(rec_ended);
    }
    Ok(())
}

/// Whether the packets of a socket on raw address `local` are IPv4 ones (an IPv4
/// address, or an IPv4-mapped IPv6 one).
fn wire_v4(local: &[u8]) -> bool {
    match inet_addr(local) {
        Some(std::net::SocketAddr::V4(_)) => true,
        Some(std::net::SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        None => false,
    }
}

/// The ICMP error (type, code) whose arrival makes the kernel's TCP give error `err`,
/// on IPv4 (`icmp_err_convert`: destination unreachable) or IPv6
/// (`icmpv6_err_convert`); `None`: no ICMP error restore sends gives it.
pub(crate) fn icmp_for(err: i32, v4: bool) -> Option<(u8, u8)> {
    match (v4, err) {
        (true, libc::ENETUNREACH) => Some((3, 0)),
        (true, libc::EHOSTUNREACH) => Some((3, 1)),
        (true, libc::ENOPROTOOPT) => Some((3, 2)),
        (true, libc::ECONNREFUSED) => Some((3, 3)),
        (false, libc::ENETUNREACH) => Some((1, 0)),
        (false, libc::EACCES) => Some((1, 1)),
        (false, libc::EHOSTUNREACH) => Some((1, 3)),
        (false, libc::ECONNREFUSED) => Some((1, 4)),
        _ => None,
    }
}

/// Whether restore makes ended socket `e` with an ICMP error: a connect failed with an
/// error only one gives (not ECONNREFUSED, which a reset gives), a connection ended by
/// a timeout after one, or a soft error one left.
fn from_icmp(e: &crate::model::TcpEnded, v4: bool) -> bool {
    e.err_soft != 0
        || (e.err != libc::ECONNREFUSED && e.never_connected && icmp_for(e.err, v4).is_some())
}

/// Whether IP_RECVERR or IPV6_RECVERR is on among options `o` (an ICMP error then also
/// goes to the error queue, and is a hard error on a connection).
fn recverr_on(o: &TcpOpts) -> bool {
    o.ints.iter().any(|i| {
        i.value != 0
            && ((i.level == libc::SOL_IP && i.name == libc::IP_RECVERR)
                || (i.level == libc::SOL_IPV6 && i.name == libc::IPV6_RECVERR))
    })
}

/// Whether restore can make ended socket `e` again (`Err`: why not, after "a TCP socket
/// (ADDRESS)"), its packets IPv4 ones if `v4`: the error with the way it came (a reset
/// while connected gives ECONNRESET, one after the peer's FIN EPIPE while the socket had
/// not sent its own, ECONNRESET once it had; a peer that stopped answering ETIMEDOUT, or
/// the soft error an ICMP error left before, which stays soft too; a refused connect
/// ECONNREFUSED, one unanswered ETIMEDOUT, one answered by an ICMP error what that
/// gives ([`icmp_for`]); any of these after an ICMP error that left a soft one).
pub(crate) fn ended_ok(e: &crate::model::TcpEnded, v4: bool) -> Result<(), String> {
    let name = crate::sys::errno_name;
    let by_icmp = |x: i32| icmp_for(x, v4).is_some();
    let made = "restore makes a soft error only with an ICMP error that gives it \
                (EHOSTUNREACH, ENETUNREACH, ECONNREFUSED; ENOPROTOOPT on IPv4, EACCES on \
                IPv6)";
    if e.never_connected {
        if e.fin
            || !e.rcvq.is_empty()
            || e.err_soft != 0
            || !(matches!(e.err, 0 | libc::ECONNREFUSED | libc::ETIMEDOUT) || by_icmp(e.err))
        {
            return Err(format!(
                "whose connect failed with {} not read yet{}: restore makes a failed \
                 connect refused (ECONNREFUSED), unanswered (ETIMEDOUT) or answered by an \
                 ICMP error (EHOSTUNREACH, ENETUNREACH; ENOPROTOOPT on IPv4, EACCES on \
                 IPv6), with no soft error; not restored yet",
                name(e.err),
                if e.err_soft != 0 {
                    format!(" and a soft error ({})", name(e.err_soft))
                } else {
                    String::new()
                }
            ));
        }
        if !e.connecting {
            return Err(
                "whose connect failed, no longer connecting (the socket layer's \
                 state): restore cannot make that; not restored yet"
                    .to_string(),
            );
        }
        return Ok(());
    }
    if e.err_soft != 0 && !by_icmp(e.err_soft) {
        return Err(format!(
            "whose connection has ended with a soft error ({}) SO_ERROR still reports: \
             {made}; not restored yet",
            name(e.err_soft)
        ));
    }
    match (e.err, e.fin) {
        (0 | libc::ECONNRESET, _) | (libc::EPIPE, true) => Ok(()),
        (libc::ETIMEDOUT, _) if e.err_soft == 0 => Ok(()),
        (x, _) if x == e.err_soft => Ok(()),
        (_, fin) => Err(format!(
            "whose connection has ended with {} not read yet{}{}: restore makes only a \
             reset (ECONNRESET; EPIPE after the peer's FIN), a retransmission or \
             keepalive timeout (ETIMEDOUT) or one after an ICMP error (its error, left \
             soft too); not restored yet",
            name(e.err),
            if fin { " after the peer's FIN" } else { "" },
            if e.err_soft != 0 {
                format!(" and a soft error ({})", name(e.err_soft))
            } else {
                String::new()
            }
        )),
    }
}

/// The name of a TCP state (net/tcp_states.h).
pub(crate) fn state_name(s: u8) -> String {
    let n = match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => return format!("{s}"),
    };
    n.to_string()
}

/// The options of an IP socket ([`sys::tcp::changed_opts_of`]) as the image keeps them.
pub(crate) fn extra_opts(
    dup: &std::os::fd::OwnedFd,
    family: i32,
    typ: i32,
    proto: i32,
) -> DumpResult<TcpOpts> {
    let o = sys::tcp::changed_opts_of(dup, family, typ, proto)?;
    Ok(TcpOpts {
        ints: o
            .ints
            .into_iter()
            .map(|(level, name, value)| IntSockOpt { level, name, value })
            .collect(),
        linger: o.linger,
        rcvtimeo: o.rcvtimeo,
        sndtimeo: o.sndtimeo,
        congestion: o.congestion,
        bind_device: o.bind_device,
        icmp6_filter: o.icmp6_filter,
    })
}

// ---- checks (plan) ----

/// Options restore can set: integer options of the known list only, a linger time and
/// timeouts in range.
pub(crate) fn tcp_opts_ok(o: &TcpOpts) -> bool {
    let tv_ok =
        |t: &Option<[i64; 2]>| t.is_none_or(|[s, us]| s >= 0 && (0..1_000_000).contains(&us));
    o.ints.iter().all(|i| {
        sys::tcp::INT_OPTS
            .iter()
            .any(|k| k.0 == i.level && k.1 == i.name)
    }) && o.linger.is_none_or(|[on, secs]| on != 0 && secs >= 0)
        && tv_ok(&o.rcvtimeo)
        && tv_ok(&o.sndtimeo)
        && [&o.congestion, &o.bind_device].iter().all(|n| {
            n.as_deref()
                .is_none_or(|n| !n.is_empty() && n.len() < 16 && !n.contains('\0'))
        })
        && o.icmp6_filter.as_ref().is_none_or(|f| f.len() == 32)
}

/// The string and structure options of [`TcpOpts`] as (level, name, value bytes, what).
fn byte_opts(o: &TcpOpts) -> Vec<(i32, i32, Vec<u8>, &'static str)> {
    let mut v = Vec::new();
    if let Some(d) = &o.bind_device {
        v.push((
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            d.as_bytes().to_vec(),
            "SO_BINDTODEVICE",
        ));
    }
    if let Some(c) = &o.congestion {
        v.push((
            libc::SOL_TCP,
            libc::TCP_CONGESTION,
            c.as_bytes().to_vec(),
            "TCP_CONGESTION",
        ));
    }
    if let Some(f) = &o.icmp6_filter {
        v.push((
            libc::IPPROTO_ICMPV6,
            sys::tcp::ICMP6_FILTER,
            f.clone(),
            "ICMP6_FILTER",
        ));
    }
    v
}

/// A record of a TCP connection whose state restore can rebuild: established or
/// half-closed; a FIN acknowledged (FIN_WAIT2) leaves nothing unacknowledged; an end of
/// file read leaves nothing unread.
pub(crate) fn conn_state_ok(c: &crate::model::TcpState) -> bool {
    let st = c.state;
    (st == 0 || st == sys::tcp::TCP_ESTABLISHED || sys::tcp::HALF_CLOSED.contains(&st))
        && (st != sys::tcp::TCP_FIN_WAIT2 || c.sndq.is_empty())
        && (!c.fin_read || (sys::tcp::fin_received(st) && c.rcvq.is_empty()))
        && !(c.rd_shut && sys::tcp::fin_received(st))
}

/// A record of a TCP socket not connected that restore can build.
pub(crate) fn unconn_ok(u: &TcpUnconnState) -> bool {
    let len = match u.family {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        _ => return false,
    };
    let addr_ok =
        |a: &[u8]| a.len() == len && a.get(0..2) == Some(&(u.family as u16).to_ne_bytes()[..]);
    addr_ok(&u.local)
        && tcp_opts_ok(&u.opts)
        && u.connecting_to
            .as_deref()
            .is_none_or(|p| addr_ok(p) && inet_addr(p).is_some_and(|a| a.port() != 0))
        && u.ended.as_ref().is_none_or(|e| {
            u.connecting_to.is_none()
                && inet_addr(&u.local).is_some_and(|a| a.port() != 0)
                && ended_ok(e, wire_v4(&u.local)).is_ok()
                && !(from_icmp(e, wire_v4(&u.local)) && recverr_on(&u.opts))
        })
}

/// A bound TCP socket's address must be free here (unless the reuse options let it be
/// shared, which is left to the kernel at restore).
pub(crate) fn check_tcp_addr(
    u: &TcpUnconnState,
    fd: i32,
    problems: &mut Vec<crate::error::Problem>,
) {
    // A connecting socket's port came from connect, which shares ports between
    // connections to different peers: restore binds it with SO_REUSEADDR the same way.
    if u.sock.reuseaddr || u.sock.reuseport || u.connecting_to.is_some() {
        return;
    }
    let Some(addr) = inet_addr(&u.local) else {
        return;
    };
    if addr.port() == 0 {
        return;
    }
    if let Err(e) = sys::tcp::try_bind(u.family, addr, u.v6only) {
        crate::kinds::check::p(
            problems,
            "address-in-use",
            format!("descriptor {fd}: TCP address {addr} cannot be bound here: {e}"),
        );
    }
}

/// A raw sockaddr_in / sockaddr_in6 as a std address.
pub(crate) fn inet_addr(raw: &[u8]) -> Option<std::net::SocketAddr> {
    let fam = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    if i32::from(fam) == libc::AF_INET {
        let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
        Some((std::net::Ipv4Addr::from(ip), port).into())
    } else if i32::from(fam) == libc::AF_INET6 {
        let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
        Some((std::net::Ipv6Addr::from(ip), port).into())
    } else {
        None
    }
}

/// A raw sockaddr_in / sockaddr_in6 as "address:port".
pub(crate) fn show_inet(a: &[u8]) -> String {
    let port = a
        .get(2..4)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .unwrap_or(0);
    match a.len() {
        16 => format!("{}.{}.{}.{}:{port}", a[4], a[5], a[6], a[7]),
        28 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&a[8..24]);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
        }
        _ => "?".into(),
    }
}

/// What `inspect` says of a listening TCP socket.
pub(crate) fn describe_listen(addr: &[u8], backlog: u32) -> String {
    format!("TCP listening on {} (backlog {backlog})", show_inet(addr))
}

/// What `inspect` says of a TCP socket not connected.
pub(crate) fn describe_unconn(u: &TcpUnconnState) -> String {
    let port = inet_addr(&u.local).map_or(0, |a| a.port());
    if let Some(e) = &u.ended {
        format!(
            "TCP socket {} whose connection has ended (CLOSE, {} bytes unread{})",
            show_inet(&u.local),
            e.rcvq.len(),
            if e.holds_port { ", port held" } else { "" }
        )
    } else if let Some(p) = &u.connecting_to {
        format!(
            "TCP socket {} connecting to {} (SYN_SENT)",
            show_inet(&u.local),
            show_inet(p)
        )
    } else if port == 0 {
        "TCP socket, not bound".to_string()
    } else {
        format!("TCP socket bound to {}, not listening", show_inet(&u.local))
    }
}

/// What `inspect` says of a TCP connection.
pub(crate) fn describe_conn(conn: &crate::model::TcpState) -> String {
    let state = if conn.state > sys::tcp::TCP_ESTABLISHED {
        format!(", {}", state_name(conn.state))
    } else {
        String::new()
    };
    format!(
        "TCP connection {} -> {} ({} bytes unsent/unacked, {} unread{state})",
        show_inet(&conn.local),
        show_inet(&conn.peer),
        conn.sndq.len(),
        conn.rcvq.len()
    )
}

// ---- restore (stage) ----

/// The options of [`TcpOpts`] on socket `n`.
pub(crate) fn set_tcp_opts(cx: &mut Ctx<'_>, n: u64, o: &TcpOpts) -> RestoreResult<()> {
    if !tcp_opts_ok(o) {
        return Err(crate::error::RestoreError::Malformed(
            "invalid TCP socket options".into(),
        ));
    }
    for i in &o.ints {
        cx.setsockopt(n, &SockOpt::Int(i.level, i.name, i.value))?;
    }
    if let Some(l) = o.linger {
        cx.setsockopt(n, &SockOpt::Linger(l))?;
    }
    if let Some(t) = o.rcvtimeo {
        cx.setsockopt(n, &SockOpt::RcvTimeo(t))?;
    }
    if let Some(t) = o.sndtimeo {
        cx.setsockopt(n, &SockOpt::SndTimeo(t))?;
    }
    for (level, name, value, what) in byte_opts(o) {
        cx.setsockopt(n, &SockOpt::Bytes(level, name, value, what))?;
    }
    Ok(())
}

/// A TCP socket not connected: its options (the reuse ones and IPV6_V6ONLY before
/// bind), bound to its old address if it was bound.
pub(crate) fn create_tcp_unconnected(cx: &mut Ctx<'_>, u: &TcpUnconnState) -> RestoreResult<u64> {
    check_sockaddr(u.family, &u.local)?;
    if let Some(e) = &u.ended {
        return create_tcp_ended(cx, u, e);
    }
    // A connect in progress is issued again without waiting (the flags the program had
    // on it are set afterwards, as for every descriptor).
    let nonblock = if u.connecting_to.is_some() {
        libc::SOCK_NONBLOCK
    } else {
        0
    };
    let n = cx.socket(
        "socket(TCP)",
        u.family,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | nonblock,
        0,
    )?;
    // The sizes the program set (SO_BUF_LOCK shows which); the others are the new
    // socket's defaults, as they were.
    let lock = u.sock.buf_lock.unwrap_or(3);
    let sizes = SockOpts {
        sndbuf: if lock & 1 != 0 { u.sock.sndbuf } else { 0 },
        rcvbuf: if lock & 2 != 0 { u.sock.rcvbuf } else { 0 },
        ..u.sock
    };
    super::set_sock_opts(cx, n, &sizes)?;
    if u.family == libc::AF_INET6 {
        cx.setsockopt(n, &SockOpt::V6Only(u.v6only))?;
    }
    set_tcp_opts(cx, n, &u.opts)?;
    if let Some(peer) = &u.connecting_to {
        connect_again(cx, n, u, peer)?;
    } else if inet_addr(&u.local).is_some_and(|a| a.port() != 0) {
        cx.bind("bind TCP socket", n, &SockAddr::Raw(&u.local))?;
    }
    Ok(n)
}

/// A connect in progress, issued again: the socket bound to the port (and address)
/// connect had given it, SO_REUSEADDR on for the bind as connect shares ports between
/// connections to different peers, then a connect that does not wait (EINPROGRESS) and
/// sends a SYN again; what the program later sees (poll, SO_ERROR) is the outcome of
/// this one. An IPv6 socket that is not IPv6-only is bound to its port alone (a bind to
/// an address would make it IPv6-only), and connect gives it its address by the route
/// (checked).
fn connect_again(cx: &mut Ctx<'_>, n: u64, u: &TcpUnconnState, peer: &[u8]) -> RestoreResult<()> {
    check_sockaddr(u.family, peer)?;
    let by_route = u.family == libc::AF_INET6 && !u.v6only && v6_not_mapped(&u.local);
    let mut local = u.local.clone();
    if by_route {
        if let Some(a) = local.get_mut(8..24) {
            a.fill(0);
        }
    }
    if !u.sock.reuseaddr {
        cx.setsockopt(n, &SockOpt::ReuseAddr)?;
    }
    cx.bind("bind TCP socket", n, &SockAddr::Raw(&local))?;
    if !u.sock.reuseaddr {
        cx.setsockopt(n, &SockOpt::Int(libc::SOL_SOCKET, libc::SO_REUSEADDR, 0))?;
    }
    cx.connect_started("connect (in progress)", n, &SockAddr::Raw(peer))?;
    if by_route {
        check_sock_addr(cx, n, &u.local, peer)?;
    }
    Ok(())
}

/// A TCP socket whose connection has ended, made through a connection of its own: it
/// connects from its old address and port to a listener made for it on that address
/// (the port it holds bound in repair mode, which shares it with the listeners and
/// connections of the image; a port it no longer holds taken through
/// IP_LOCAL_PORT_RANGE, as connect would, so that it is free again at the end), the
/// accepted end sends the bytes it had not read, then resets the connection (SO_LINGER
/// 0): ECONNRESET; after a FIN of its own first (shutdown, waited for: CLOSE_WAIT),
/// EPIPE. A connect that failed is a non-blocking connect to a port of its address that
/// a socket of ours holds without listening: the reset that answers the SYN gives
/// ECONNREFUSED; or to a listener of ours that drops everything, where the SYN goes
/// unanswered until a 1 ms user timeout gives up on it (ETIMEDOUT), or an ICMP error
/// about the SYN ends it ([`send_icmp`]: EHOSTUNREACH...). A soft error is left on the
/// connection by an ICMP error about it once it is established (SO_ERROR then reports
/// it after the error; a timeout ends it with that error, as the kernel does). The
/// connect is a non-blocking one where the program's was (the socket layer's state then
/// stays "connecting", as connect() later shows). The error is read off when the
/// program had read it; otherwise it is left for the program, and checked with the BPF
/// reader ([`sys::sockerr`]) without clearing it. Nothing waits on the program: the
/// connection is the kernel's, on this host.
fn create_tcp_ended(
    cx: &mut Ctx<'_>,
    u: &TcpUnconnState,
    e: &crate::model::TcpEnded,
) -> RestoreResult<u64> {
    let fail = |what: String| {
        crate::error::RestoreError::Stage(format!(
            "TCP socket {} whose connection ended: {what}",
            show_inet(&u.local)
        ))
    };
    let v4 = wire_v4(&u.local);
    if let Err(why) = ended_ok(e, v4) {
        return Err(crate::error::RestoreError::Malformed(format!(
            "TCP socket {} {why}",
            show_inet(&u.local)
        )));
    }
    // How the end comes: a reset (also for an error the program read), a timeout, or
    // (a connect only) an ICMP error about its SYN.
    let unanswered = if e.never_connected {
        !matches!(e.err, 0 | libc::ECONNREFUSED)
    } else {
        e.err == libc::ETIMEDOUT || (e.err != 0 && e.err == e.err_soft)
    };
    let icmp = from_icmp(e, v4);
    let port = inet_addr(&u.local).map_or(0, |a| a.port());
    let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    let nonblock = if e.connecting { libc::SOCK_NONBLOCK } else { 0 };
    let n = cx.socket("socket(TCP)", u.family, stream | nonblock, 0)?;
    let lock = u.sock.buf_lock.unwrap_or(3);
    let sizes = SockOpts {
        sndbuf: if lock & 1 != 0 { u.sock.sndbuf } else { 0 },
        rcvbuf: if lock & 2 != 0 { u.sock.rcvbuf } else { 0 },
        ..u.sock
    };
    super::set_sock_opts(cx, n, &sizes)?;
    if u.family == libc::AF_INET6 {
        cx.setsockopt(n, &SockOpt::V6Only(u.v6only))?;
    }
    set_tcp_opts(cx, n, &u.opts)?;
    let range = linux_raw_sys::net::IP_LOCAL_PORT_RANGE as i32;
    if e.holds_port || icmp {
        cx.setsockopt(n, &SockOpt::TcpRepair(true))?;
        if e.holds_port {
            cx.bind("bind TCP socket (repair)", n, &SockAddr::Raw(&u.local))?;
        }
        if icmp {
            // The sequence number its SYN will have, which an ICMP error must quote
            // (connect takes a send sequence already set as the initial one).
            cx.setsockopt(n, &SockOpt::TcpRepairQueue(TcpQueue::Send))?;
            cx.setsockopt(n, &SockOpt::TcpQueueSeq(ENDED_ISN))?;
        }
        cx.setsockopt(n, &SockOpt::TcpRepair(false))?;
        // Repair mode's end resets SO_REUSEADDR.
        if u.sock.reuseaddr {
            cx.setsockopt(n, &SockOpt::ReuseAddr)?;
        }
    }
    if !e.holds_port {
        let both = (u32::from(port) << 16 | u32::from(port)) as i32;
        cx.setsockopt(n, &SockOpt::Int(libc::IPPROTO_IP, range, both))?;
    }
    // The other end: a listener on the socket's address (any port), deaf to a connect
    // that must go unanswered, or for a refused connect a socket bound there that does
    // not listen.
    let l = cx.socket("socket(TCP) to end a connection", u.family, stream, 0)?;
    if u.family == libc::AF_INET6 {
        cx.setsockopt(l, &SockOpt::V6Only(u.v6only))?;
    }
    let mut any_port = u.local.clone();
    if let Some(p) = any_port.get_mut(2..4) {
        p.fill(0);
    }
    cx.bind(
        "bind TCP listener to end a connection",
        l,
        &SockAddr::Raw(&any_port),
    )?;
    if !e.never_connected || unanswered {
        cx.listen("listen to end a connection", l, 1)?;
    }
    if e.never_connected && unanswered {
        cx.attach_filter(l, &DROP_ALL)?;
    }
    let to = cx.getsockname("getsockname of the listener", l)?;
    // A connect that times out does so at the SYN's first retransmission after 1 ms.
    let user_timeout = if e.never_connected && e.err == libc::ETIMEDOUT {
        Some(quick_timeout(cx, n)?)
    } else {
        None
    };
    if e.connecting {
        cx.connect_started("connect to end a connection", n, &SockAddr::Raw(&to))?;
    } else {
        cx.connect("connect to end a connection", n, &SockAddr::Raw(&to))?;
    }
    let sock = match cx.live_pid() {
        Some(pid) => Some(
            sys::process::steal_fd(pid, n as i32)
                .map_err(|x| fail(format!("cannot reach the restored socket: {x}")))?,
        ),
        None => None,
    };
    if e.never_connected {
        if unanswered && e.err != libc::ETIMEDOUT {
            send_icmp(cx, &u.local, &to, e.err, ENDED_ISN)?;
        }
        // The reset that answers the SYN closes it (or the ICMP error, or the timeout,
        // the SYN's first retransmission timeout: 1 s).
        if let Some(s) = &sock {
            wait_state_within(s, sys::tcp::TCP_CLOSE, CONNECT_TIMEOUT_WAIT).map_err(fail)?;
        }
        if let Some(was) = user_timeout {
            cx.setsockopt(n, &SockOpt::Int(libc::SOL_TCP, libc::TCP_USER_TIMEOUT, was))?;
        }
        cx.close(l)?;
    } else {
        // accept returns once the handshake is through (a non-blocking connect's too).
        let a = cx.accept4(l, libc::SOCK_CLOEXEC)?;
        cx.close(l)?;
        if !e.rcvq.is_empty() {
            cx.send_all(a, &e.rcvq, "the bytes a ended TCP connection had not read")?;
        }
        if e.fin {
            cx.shutdown(a, libc::SHUT_WR)?;
            if let Some(s) = &sock {
                wait_state(s, sys::tcp::TCP_CLOSE_WAIT).map_err(fail)?;
            }
        }
        if e.fin && e.err == libc::ECONNRESET {
            fin_not_acked(cx, n, u)?;
            if let Some(s) = &sock {
                wait_state(s, sys::tcp::TCP_LAST_ACK).map_err(fail)?;
            }
        }
        if e.err_soft != 0 {
            // Last before the end (a segment acknowledged clears a soft error): the
            // first sequence number after the SYN's, which it has sent or will send
            // next (a FIN counted in repair mode was not sent).
            send_icmp(cx, &u.local, &to, e.err_soft, ENDED_ISN.wrapping_add(1))?;
            if let (Some(s), Some(pid)) = (&sock, cx.live_pid()) {
                wait_soft(s, pid, e.err_soft).map_err(fail)?;
            }
        }
        if unanswered {
            time_out(cx, n, a, sock.as_ref(), &fail)?;
        }
        cx.setsockopt(a, &SockOpt::Linger([1, 0]))?;
        cx.close(a)?;
        if let Some(s) = &sock {
            wait_state(s, sys::tcp::TCP_CLOSE).map_err(fail)?;
        }
    }
    if !e.holds_port {
        cx.setsockopt(n, &SockOpt::Int(libc::IPPROTO_IP, range, 0))?;
    }
    let made = if e.never_connected && !unanswered {
        libc::ECONNREFUSED
    } else if unanswered {
        e.err
    } else if e.fin && e.err != libc::ECONNRESET {
        libc::EPIPE
    } else {
        libc::ECONNRESET
    };
    if e.err == 0 {
        let err = cx.getsockopt_int(
            "SO_ERROR of the ended connection",
            n,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
        )?;
        if sock.is_some() && err != made {
            return Err(fail(format!(
                "the end did not come as it should ({} instead of {})",
                crate::sys::errno_name(err),
                crate::sys::errno_name(made)
            )));
        }
    }
    if let (Some(s), Some(pid)) = (&sock, cx.live_pid()) {
        let now = sys::tcp::sockname(s, false).map_err(|x| fail(x.to_string()))?;
        if inet_addr(&now) != inet_addr(&u.local) {
            return Err(fail(format!("it got address {} here", show_inet(&now))));
        }
        let inq = sys::tcp::unread(s).map_err(|x| fail(x.to_string()))?;
        if inq != e.rcvq.len() {
            return Err(fail(format!(
                "{inq} bytes to read instead of {}",
                e.rcvq.len()
            )));
        }
        if e.err != 0 || e.err_soft != 0 {
            check_pending(s, pid, e).map_err(fail)?;
        }
    }
    Ok(n)
}

/// The initial sequence number an ended socket restore makes with an ICMP error gets
/// (any: the connection is between two sockets of ours).
const ENDED_ISN: u32 = 0x0c4b_7000;

/// How long a failed connect restore makes may take to end: a timeout comes at the
/// SYN's first retransmission (1 s, `TCP_TIMEOUT_INIT`), then the user timeout.
const CONNECT_TIMEOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Socket `n`'s `TCP_USER_TIMEOUT` set to [`USER_TIMEOUT_MS`]; what it was, to put back.
fn quick_timeout(cx: &mut Ctx<'_>, n: u64) -> RestoreResult<i32> {
    let was = cx.getsockopt_int(
        "TCP_USER_TIMEOUT of the ended connection",
        n,
        libc::SOL_TCP,
        libc::TCP_USER_TIMEOUT,
    )?;
    cx.setsockopt(
        n,
        &SockOpt::Int(libc::SOL_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT_MS),
    )?;
    Ok(was)
}

/// An ICMP error that makes TCP error `err` ([`icmp_for`]) about a segment with
/// sequence number `seq` from raw address `from` (the restored socket's) to `to` (ours,
/// on `from`'s address: only its port is taken), sent from a raw ICMP socket of the
/// process to `from`'s address: the kernel's TCP finds the connection by the addresses
/// and ports the message quotes, and takes it if `seq` is one it has sent and not had
/// acknowledged (or the next one).
fn send_icmp(cx: &mut Ctx<'_>, from: &[u8], to: &[u8], err: i32, seq: u32) -> RestoreResult<()> {
    let port = to.get(2..4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    let msg = inet_addr(from).and_then(|f| {
        let t = std::net::SocketAddr::new(f.ip(), port);
        icmp_error(err, f, t, seq)
    });
    let Some((domain, proto, dest, msg)) = msg else {
        return Err(crate::error::RestoreError::Malformed(format!(
            "TCP socket {}: no ICMP error gives {}",
            show_inet(from),
            crate::sys::errno_name(err)
        )));
    };
    let r = cx.socket(
        "socket(raw ICMP) to end a connection",
        domain,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        proto,
    )?;
    cx.connect("connect the raw ICMP socket", r, &SockAddr::Raw(&dest))?;
    cx.send_all(r, &msg, "an ICMP error about the connection")?;
    cx.close(r)?;
    Ok(())
}

/// The ICMP error message ([`icmp_for`] `err`) about a TCP segment from `from` to `to`
/// with sequence number `seq`, quoting its IP header and the first 8 bytes of its TCP
/// header, as a raw ICMP socket sends it (the kernel adds the outer IP header, and for
/// ICMPv6 the checksum): (domain, protocol, the raw address to send it to (`from`'s
/// address), the message). IPv4 packets for an IPv4-mapped address. `None`: no ICMP
/// error gives `err`, or the two addresses are not of one family.
pub(crate) fn icmp_error(
    err: i32,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    seq: u32,
) -> Option<(i32, i32, Vec<u8>, Vec<u8>)> {
    use std::net::IpAddr;
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let mut tcp = Vec::with_capacity(8);
    tcp.extend_from_slice(&from.port().to_be_bytes());
    tcp.extend_from_slice(&to.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    if let (Some(f), Some(t)) = (v4(from.ip()), v4(to.ip())) {
        let (typ, code) = icmp_for(err, true)?;
        let mut ip = vec![
            0x45,
            0,
            0,
            40,
            0,
            0,
            0x40,
            0,
            64,
            libc::IPPROTO_TCP as u8,
            0,
            0,
        ];
        ip.extend_from_slice(&f.octets());
        ip.extend_from_slice(&t.octets());
        let sum = inet_checksum(&ip).to_be_bytes();
        ip[10..12].copy_from_slice(&sum);
        let mut msg = vec![typ, code, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&ip);
        msg.extend_from_slice(&tcp);
        let sum = inet_checksum(&msg).to_be_bytes();
        msg[2..4].copy_from_slice(&sum);
        let mut dest = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        dest.extend_from_slice(&[0, 0]);
        dest.extend_from_slice(&f.octets());
        dest.extend_from_slice(&[0; 8]);
        return Some((libc::AF_INET, libc::IPPROTO_ICMP, dest, msg));
    }
    let (std::net::SocketAddr::V6(f), std::net::SocketAddr::V6(t)) = (from, to) else {
        return None;
    };
    let (typ, code) = icmp_for(err, false)?;
    let mut ip = vec![0x60, 0, 0, 0, 0, 20, libc::IPPROTO_TCP as u8, 64];
    ip.extend_from_slice(&f.ip().octets());
    ip.extend_from_slice(&t.ip().octets());
    let mut msg = vec![typ, code, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&ip);
    msg.extend_from_slice(&tcp);
    let mut dest = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
    dest.extend_from_slice(&[0; 6]);
    dest.extend_from_slice(&f.ip().octets());
    dest.extend_from_slice(&f.scope_id().to_ne_bytes());
    Some((libc::AF_INET6, libc::IPPROTO_ICMPV6, dest, msg))
}

/// The Internet checksum (RFC 1071) of `b`.
fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wait (at most [`SEGMENT_WAIT`]) until restored socket `s` (of the stub `pid`) holds
/// soft error `want`, which only the BPF socket error reader shows.
fn wait_soft(s: &std::os::fd::OwnedFd, pid: i32, want: i32) -> Result<(), String> {
    let ino = rustix::fs::fstat(s).map_err(|x| x.to_string())?.st_ino;
    let deadline = std::time::Instant::now() + SEGMENT_WAIT;
    loop {
        let got = sys::sockerr::read(pid, &[ino])?;
        let have = got.get(&ino).map_or(0, |r| r.err_soft);
        if have == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the ICMP error left soft error {}, not {}",
                crate::sys::errno_name(have),
                crate::sys::errno_name(want)
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Ended socket `n` (in CLOSE_WAIT: its peer's FIN came) sends its own FIN without it
/// leaving: a shutdown in repair mode with the send queue chosen
/// (`TCP_REPAIR_QUEUE` = `TCP_SEND_QUEUE`), where the kernel counts the FIN as sent
/// without sending it, then repair mode off without the window probe it would send
/// (`TCP_REPAIR_OFF_NO_WP`): `n` is in LAST_ACK, its FIN never acknowledged, so the
/// reset that follows gives ECONNRESET (and not EPIPE, as in CLOSE_WAIT). The
/// SO_REUSEADDR repair mode's end clears is set again.
fn fin_not_acked(cx: &mut Ctx<'_>, n: u64, u: &TcpUnconnState) -> RestoreResult<()> {
    cx.setsockopt(n, &SockOpt::TcpRepair(true))?;
    cx.setsockopt(n, &SockOpt::TcpRepairQueue(TcpQueue::Send))?;
    cx.shutdown(n, libc::SHUT_WR)?;
    cx.setsockopt(
        n,
        &SockOpt::Int(libc::SOL_TCP, libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP),
    )?;
    if u.sock.reuseaddr {
        cx.setsockopt(n, &SockOpt::ReuseAddr)?;
    }
    Ok(())
}

/// `TCP_REPAIR_OFF_NO_WP` (linux/tcp.h): repair mode off, no window probe sent.
const TCP_REPAIR_OFF_NO_WP: i32 = -1;

/// A classic socket filter that drops every packet (`ret #0`).
const DROP_ALL: [u8; 8] = [0x06, 0, 0, 0, 0, 0, 0, 0];

/// How long [`time_out`] lets the restored socket wait for acknowledgments at most.
const USER_TIMEOUT_MS: i32 = 1;

/// Connection `n` (its other end `a`, ours) ends as one whose peer stopped answering:
/// `a` drops every segment that comes to it (a socket filter that drops all, so it
/// neither acknowledges nor resets), `n` sends one byte with `TCP_USER_TIMEOUT` at
/// [`USER_TIMEOUT_MS`], and at the first retransmission timeout (the RTO, 200 ms at
/// least) the kernel gives up on it as it gives up on a peer that does not answer
/// retransmissions or keepalive probes (`tcp_write_err`): state CLOSE, ETIMEDOUT, the
/// byte dropped with the send queue. The program's `TCP_USER_TIMEOUT` is put back.
/// (`sock`: ckpt's duplicate of `n`, to wait on; `fail` names the socket in an error.)
fn time_out(
    cx: &mut Ctx<'_>,
    n: u64,
    a: u64,
    sock: Option<&std::os::fd::OwnedFd>,
    fail: &dyn Fn(String) -> crate::error::RestoreError,
) -> RestoreResult<()> {
    cx.attach_filter(a, &DROP_ALL)?;
    let was = quick_timeout(cx, n)?;
    cx.send_all(n, &[0], "a byte its peer does not acknowledge")?;
    if let Some(s) = sock {
        wait_state(s, sys::tcp::TCP_CLOSE).map_err(fail)?;
    }
    cx.setsockopt(n, &SockOpt::Int(libc::SOL_TCP, libc::TCP_USER_TIMEOUT, was))?;
    Ok(())
}

/// The error restored ended socket `s` (descriptor of the stub `pid`) holds for the
/// program, read without clearing it: the recorded one, with its FIN and the socket
/// layer's state.
fn check_pending(
    s: &std::os::fd::OwnedFd,
    pid: i32,
    e: &crate::model::TcpEnded,
) -> Result<(), String> {
    let ino = rustix::fs::fstat(s).map_err(|x| x.to_string())?.st_ino;
    let got = sys::sockerr::read(pid, &[ino])?;
    let r = got
        .get(&ino)
        .ok_or_else(|| "the socket error reader did not find it".to_string())?;
    let want = (
        e.err,
        e.fin,
        if e.connecting {
            sys::sockerr::SS_CONNECTING
        } else {
            sys::sockerr::SS_CONNECTED
        },
        e.err_soft,
    );
    let have = (
        r.err,
        r.flags & sys::sockerr::SOCK_DONE != 0,
        r.sock_state,
        r.err_soft,
    );
    if have != want {
        let name = crate::sys::errno_name;
        return Err(format!(
            "it holds error {} (FIN {}, socket state {}, soft error {}), not {} (FIN {}, \
             socket state {}, soft error {})",
            name(have.0),
            have.1,
            have.2,
            name(have.3),
            name(want.0),
            want.1,
            want.2,
            name(want.3)
        ));
    }
    Ok(())
}

/// Send `data` on connected TCP socket `s` (non-blocking) and wait until its peer
/// acknowledged all of it, at most [`SEGMENT_WAIT`] without progress.
fn send_acked(s: &std::os::fd::OwnedFd, data: &[u8]) -> Result<(), String> {
    let mut sent = 0;
    let mut last = std::time::Instant::now();
    let mut was_left = u32::MAX;
    loop {
        if sent < data.len() {
            match rustix::net::send(s, &data[sent..], rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => {
                    sent += n;
                    last = std::time::Instant::now();
                }
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("sending the bytes it had sent: {e}")),
            }
        }
        let left = sys::sockdiag::unread_sent(s).map_err(|x| x.to_string())?;
        if sent == data.len() && left == 0 {
            return Ok(());
        }
        if left < was_left {
            was_left = left;
            last = std::time::Instant::now();
        }
        if last.elapsed() > SEGMENT_WAIT {
            return Err(format!(
                "the listener's side took {} of the {} bytes its client had sent",
                sent.saturating_sub(left as usize),
                data.len()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Wait (at most [`SEGMENT_WAIT`]) until TCP socket `s` is in state `want`.
fn wait_state(s: &std::os::fd::OwnedFd, want: u8) -> Result<(), String> {
    wait_state_within(s, want, SEGMENT_WAIT)
}

/// Wait (at most `within`) until TCP socket `s` is in state `want`.
fn wait_state_within(
    s: &std::os::fd::OwnedFd,
    want: u8,
    within: std::time::Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = sys::tcp::state_of(s).map_err(|x| x.to_string())?;
        if now == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "it stays in state {}, not {}",
                state_name(now),
                state_name(want)
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Whether a raw address is an IPv6 one that is not v4-mapped.
fn v6_not_mapped(a: &[u8]) -> bool {
    match inet_addr(a) {
        Some(std::net::SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_none(),
        _ => false,
    }
}

/// A listening TCP socket on its old address.
pub(crate) fn create_tcp_listener(
    cx: &mut Ctx<'_>,
    family: i32,
    addr: &[u8],
    backlog: u32,
    reuseaddr: bool,
    v6only: bool,
    opts: Option<&TcpOpts>,
) -> RestoreResult<u64> {
    check_sockaddr(family, addr)?;
    let n = cx.socket(
        "socket(TCP)",
        family,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0,
    )?;
    if reuseaddr {
        cx.setsockopt(n, &SockOpt::ReuseAddr)?;
    }
    if family == libc::AF_INET6 {
        cx.setsockopt(n, &SockOpt::V6Only(v6only))?;
    }
    // Before bind: SO_REUSEPORT is among them.
    if let Some(o) = opts {
        set_tcp_opts(cx, n, o)?;
    }
    cx.bind("bind TCP listener", n, &SockAddr::Raw(addr))?;
    cx.listen("listen", n, backlog)?;
    Ok(n)
}

/// The holders' key of the listener with waiting connections at descriptor `fd` of
/// process `pid` (kind 2), or of the client at `fd` of `pid` (kind 3).
fn queued_key(kind: u8, pid: i32, fd: i32) -> (u8, u64) {
    (kind, u64::from(pid as u32) << 32 | u64::from(fd as u32))
}

/// The tree's listeners with connections waiting to be accepted, and those connections,
/// made before any process's own descriptors (`restore_fds`), in each listener's
/// process: the listener first, then each waiting connection's client in queue order,
/// by a real handshake from the client's address ([`create_tcp_unconnected`] with the
/// listener as the peer), its FIN after it where it had shut down writing, so that the
/// kernel queues them as they were (accept returns them in that order; sock_diag shows
/// the listener's count). Each stays at a temporary descriptor of the listener's
/// process (in `holders`, dropped with the others' by `close_holders`) until its own
/// descriptor takes it ([`take_queued`]). The sequence numbers are new: both ends are
/// the tree's, and the listener's side had nothing to read.
pub(crate) fn create_queued(
    ctxs: &mut [Ctx<'_>],
    ckpt: &crate::model::Checkpoint,
    holders: &mut super::PipeHolders,
) -> RestoreResult<()> {
    for cx in ctxs.iter_mut().filter(|c| !c.proc_.is_zombie()) {
        let p = cx.proc_;
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            let FdKind::TcpListen {
                family,
                addr,
                backlog,
                reuseaddr,
                v6only,
                opts,
                queue,
                ..
            } = &f.kind
            else {
                continue;
            };
            if queue.is_empty() {
                continue;
            }
            let mut clients: Vec<(&crate::model::Process, &crate::model::Fd, u32)> = ckpt
                .processes
                .iter()
                .flat_map(|q| q.fds.iter().map(move |g| (q, g)))
                .filter(|(_, g)| g.shared_with.is_none())
                .filter_map(|(q, g)| match &g.kind {
                    FdKind::TcpQueued {
                        listener_pid,
                        listener_fd,
                        pos,
                        ..
                    } if *listener_pid == p.pid && *listener_fd == f.fd => Some((q, g, *pos)),
                    _ => None,
                })
                .collect();
            clients.sort_by_key(|c| c.2);
            let n = create_tcp_listener(
                cx,
                *family,
                addr,
                *backlog,
                *reuseaddr,
                *v6only,
                opts.as_deref(),
            )?;
            park(cx, holders, queued_key(2, p.pid, f.fd), n)?;
            for (pos, (q, g, at)) in clients.into_iter().enumerate() {
                let (FdKind::TcpQueued { conn, .. }, Some(w)) = (&g.kind, queue.get(pos)) else {
                    continue;
                };
                if at as usize != pos {
                    return Err(crate::error::RestoreError::Malformed(format!(
                        "the TCP listener on {} has no client for place {pos} of its queue",
                        show_inet(addr)
                    )));
                }
                let c = connect_queued(cx, conn, w)?;
                park(cx, holders, queued_key(3, q.pid, g.fd), c)?;
            }
        }
    }
    Ok(())
}

/// Keep descriptor `n` of `cx`'s process at a temporary number, as `holders[key]`.
fn park(
    cx: &mut Ctx<'_>,
    holders: &mut super::PipeHolders,
    key: (u8, u64),
    n: u64,
) -> RestoreResult<()> {
    let pid = cx.proc_.pid;
    let k = holders.values().filter(|h| h.0 == pid).count() as u64;
    let tmp = super::pipe_tmp_base(cx.proc_) + 2 * k;
    let t = cx.dup_above(n, tmp)?;
    cx.close(n)?;
    holders.insert(key, (pid, t, t));
    Ok(())
}

/// The client of a waiting connection (`c`, as dumped), connected for real to its
/// listener, which exists: options and address as [`create_tcp_unconnected`] gives a
/// connecting socket (its port bound in repair mode), then the handshake waited for,
/// then the bytes it had sent (`w.data`) sent again and waited for until acknowledged
/// (they wait on the listener's side as they did: the client's own side shows them
/// acknowledged, as it did), then its FIN (`w.fin`) waited for until acknowledged
/// (FIN_WAIT2), then the options repair mode had shown.
fn connect_queued(
    cx: &mut Ctx<'_>,
    c: &crate::model::TcpState,
    w: &crate::model::TcpWaiting,
) -> RestoreResult<u64> {
    let fail = |what: String| {
        crate::error::RestoreError::Stage(format!(
            "TCP connection {} -> {} waiting to be accepted: {what}",
            show_inet(&c.local),
            show_inet(&c.peer)
        ))
    };
    check_sockaddr(c.family, &c.local)?;
    check_sockaddr(c.family, &c.peer)?;
    let n = cx.socket(
        "socket(TCP)",
        c.family,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    )?;
    let lock = c.buf_lock;
    let sizes = SockOpts {
        sndbuf: if lock & 1 != 0 { c.sndbuf } else { 0 },
        rcvbuf: if lock & 2 != 0 { c.rcvbuf } else { 0 },
        passcred: false,
        reuseaddr: false,
        reuseport: false,
        buf_lock: Some(lock),
    };
    super::set_sock_opts(cx, n, &sizes)?;
    if let Some(v6only) = c.v6only {
        cx.setsockopt(n, &SockOpt::V6Only(v6only))?;
    }
    if let Some(o) = &c.opts {
        set_tcp_opts(cx, n, o)?;
    }
    // Its port, bound in repair mode, which forces it: a copy restored next to its
    // original finds the port in TIME_WAIT there (the connect then reuses it as the
    // kernel allows, on loopback). An IPv6 socket that is not IPv6-only is bound to
    // its port alone (see `connect_again`).
    let by_route = c.v6only == Some(false) && v6_not_mapped(&c.local);
    let mut local = c.local.clone();
    if by_route {
        if let Some(a) = local.get_mut(8..24) {
            a.fill(0);
        }
    }
    cx.setsockopt(n, &SockOpt::TcpRepair(true))?;
    cx.bind("bind TCP socket (repair)", n, &SockAddr::Raw(&local))?;
    cx.setsockopt(n, &SockOpt::TcpRepair(false))?;
    if c.reuseaddr {
        cx.setsockopt(n, &SockOpt::ReuseAddr)?;
    }
    cx.connect_started("connect to its listener", n, &SockAddr::Raw(&c.peer))?;
    if by_route {
        check_sock_addr(cx, n, &c.local, &c.peer)?;
    }
    let Some(pid) = cx.live_pid() else {
        return Ok(n);
    };
    let s = sys::process::steal_fd(pid, n as i32)
        .map_err(|x| fail(format!("cannot reach the restored socket: {x}")))?;
    wait_state(&s, sys::tcp::TCP_ESTABLISHED).map_err(fail)?;
    if !w.data.is_empty() {
        crate::error::fault_point("send the bytes a waiting client had sent")?;
        send_acked(&s, &w.data).map_err(fail)?;
    }
    if w.fin {
        cx.shutdown(n, libc::SHUT_WR)?;
        wait_state(&s, sys::tcp::TCP_FIN_WAIT2).map_err(fail)?;
    }
    for (on, level, opt) in [
        (c.nodelay, libc::SOL_TCP, libc::TCP_NODELAY),
        (c.keepalive, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    ] {
        if on {
            cx.setsockopt(n, &SockOpt::Int(level, opt, 1))?;
        }
    }
    Ok(n)
}

/// Descriptor `f` of `cx`'s process, a listener or a client [`create_queued`] made,
/// taken from where it waits: `false` if it made none for `f`.
pub(crate) fn take_queued(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    flags: u32,
    holders: &super::PipeHolders,
) -> RestoreResult<bool> {
    let kind = match f.kind {
        FdKind::TcpListen { .. } => 2,
        FdKind::TcpQueued { .. } => 3,
        _ => return Ok(false),
    };
    let Some(&(holder, t, _)) = holders.get(&queued_key(kind, cx.proc_.pid, f.fd)) else {
        return Ok(false);
    };
    if holder == cx.proc_.pid {
        cx.dup3(t, f.fd as u64, f.cloexec)?;
    } else {
        let what = format!("take TCP socket {t} of process {holder}");
        let n = crate::remote::take_remote_fd(cx, holder, t, &what)?;
        crate::remote::move_fd(cx, n, f.fd, f.cloexec)?;
    }
    crate::remote::set_status_flags(cx, f.fd, flags)?;
    Ok(true)
}

/// What `inspect` says of the client of a connection waiting to be accepted.
pub(crate) fn describe_queued(conn: &crate::model::TcpState, pos: u32) -> String {
    format!(
        "TCP connection {} -> {} waiting to be accepted (place {} of the listener's queue{})",
        show_inet(&conn.local),
        show_inet(&conn.peer),
        pos + 1,
        if conn.state == sys::tcp::TCP_FIN_WAIT2 {
            ", shut down for writing"
        } else {
            ""
        }
    )
}

/// A client of a waiting connection whose listener, a descriptor of the image, keeps
/// its place in its queue, with options restore can set.
pub(crate) fn queued_ok(procs: &[crate::model::Process], f: &crate::model::Fd) -> bool {
    let FdKind::TcpQueued {
        conn,
        listener_pid,
        listener_fd,
        pos,
        ..
    } = &f.kind
    else {
        return true;
    };
    let listener = procs
        .iter()
        .filter(|p| p.pid == *listener_pid)
        .flat_map(|p| p.fds.iter())
        .find(|g| g.fd == *listener_fd && g.shared_with.is_none());
    let placed = match listener.map(|g| &g.kind) {
        Some(FdKind::TcpListen { queue, .. }) => queue.get(*pos as usize).is_some_and(|w| {
            same_endpoint(&w.peer, &conn.local) && same_endpoint(&w.local, &conn.peer)
        }),
        _ => false,
    };
    placed
        && conn.opts.as_ref().is_none_or(tcp_opts_ok)
        && matches!(
            conn.state,
            sys::tcp::TCP_ESTABLISHED | sys::tcp::TCP_FIN_WAIT2
        )
}

/// The options negotiated at connection time, as `TCP_REPAIR_OPTIONS` takes them.
fn repair_options(c: &crate::model::TcpState) -> Vec<TcpRepairOpt> {
    let mut opts = vec![
        TcpRepairOpt::Mss(c.mss),
        TcpRepairOpt::WindowScale {
            snd: c.snd_wscale,
            rcv: c.rcv_wscale,
        },
    ];
    if c.sack {
        opts.push(TcpRepairOpt::SackPermitted);
    }
    if c.timestamps {
        opts.push(TcpRepairOpt::Timestamps);
    }
    opts
}

/// The TCP_MAXSEG that makes a connect in repair mode start from segment size `mss`
/// (the image's snd_mss): the kernel takes the timestamp option's room off it when the
/// host uses timestamps (`ts_on`). The kernel takes at most 32767 (so a path whose MTU
/// is above that, loopback's 65536, gets 32755 where it had up to 32768); None for a
/// segment size below its minimum of 88 (the kernel's default is left then).
fn connect_mss(mss: u32, ts_on: bool) -> Option<i32> {
    const TCP_MIN_MSS: u32 = 88; // include/net/tcp.h
    const MAX_TCP_WINDOW: u32 = 32767; // include/net/tcp.h: TCP_MAXSEG's upper bound
    const TCPOLEN_TSTAMP_ALIGNED: u32 = 12; // include/net/tcp.h
    let v = mss.saturating_add(if ts_on { TCPOLEN_TSTAMP_ALIGNED } else { 0 });
    if mss < TCP_MIN_MSS {
        return None;
    }
    i32::try_from(v.min(MAX_TCP_WINDOW)).ok()
}

/// An established TCP connection, rebuilt in repair mode: same addresses, sequence
/// numbers, options, window and queued data (taken out of repair mode at commit, by
/// [`finish_conn`]).
pub(crate) fn create_tcp_conn(cx: &mut Ctx<'_>, c: &crate::model::TcpState) -> RestoreResult<u64> {
    check_sockaddr(c.family, &c.local)?;
    check_sockaddr(c.family, &c.peer)?;
    let n = cx.socket(
        "socket(TCP)",
        c.family,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0,
    )?;
    // Repair mode also lets the socket bind to its old address next to the restored
    // listener (the kernel forces the reuse); SO_REUSEADDR would undo that.
    cx.setsockopt(n, &SockOpt::TcpRepair(true))?;
    // An IPv6 socket bound to an address of its own is IPv6-only (the kernel sets it at
    // bind, for good); one that is not had its address chosen at connect, by the route
    // to its peer: it is bound to its port alone and gets its address the same way
    // (checked below).
    let by_route = c.v6only == Some(false) && v6_not_mapped(&c.local);
    let port_only;
    let bind_to: &[u8] = if by_route {
        cx.setsockopt(n, &SockOpt::V6Only(false))?;
        let mut any = c.local.clone();
        if let Some(a) = any.get_mut(8..24) {
            a.fill(0);
        }
        port_only = any;
        &port_only
    } else {
        &c.local
    };
    cx.bind("bind TCP connection", n, &SockAddr::Raw(bind_to))?;
    for (q, seq) in [(TcpQueue::Recv, c.rcv_seq), (TcpQueue::Send, c.snd_seq)] {
        cx.setsockopt(n, &SockOpt::TcpRepairQueue(q))?;
        cx.setsockopt(n, &SockOpt::TcpQueueSeq(seq))?;
    }
    // The segment size: the kernel works out a connection's (`mss_cache`, what tcp_info
    // shows as snd_mss) when it connects, from the path's MTU and the peer's MSS, which
    // in repair mode it has not seen: it takes the default (536 for IPv4, 1220 for
    // IPv6), less the timestamp option, and never works it out again on its own (a
    // restored loopback connection sent 524-byte segments instead of 32768-byte ones).
    // A TCP_MAXSEG set before connect is the MSS it starts from instead, so it gets the
    // original's (the option's value counts the timestamp option's 12 bytes, which
    // connect takes off when the host uses timestamps; see `connect_mss` for its
    // bound); the option is cleared right after, as the program had it. (The MSS we
    // advertise and the estimate of the peer's, tcp_info's advmss and rcv_mss, start
    // again from the route's and the default: README, "Known to come back different".)
    let user_mss = connect_mss(c.mss, sys::tcp::timestamps_on());
    if let Some(m) = user_mss {
        cx.setsockopt(n, &SockOpt::TcpMaxSeg(m))?;
    }
    cx.connect("connect (repair)", n, &SockAddr::Raw(&c.peer))?;
    if by_route {
        check_sock_addr(cx, n, &c.local, &c.peer)?;
    }
    if user_mss.is_some() {
        cx.setsockopt(n, &SockOpt::TcpMaxSeg(0))?;
    }
    cx.setsockopt(n, &SockOpt::TcpRepairOptions(repair_options(c)))?;
    if c.timestamps {
        cx.setsockopt(n, &SockOpt::TcpTimestamp(c.tsval))?;
    }
    // Queued data goes back into each queue as it was (repair mode sends nothing). The
    // original's buffers had grown (autotuning) to hold it; the new socket's start small:
    // they are made big enough first (the kernel doubles the value, which leaves room for
    // its per-packet overhead), and the send never blocks (see `send_all`).
    let room = |len: usize| u32::try_from(len.saturating_add(1 << 16)).unwrap_or(u32::MAX);
    if !c.sndq.is_empty() {
        cx.setsockopt(n, &SockOpt::SndBufForce(room(c.sndq.len())))?;
    }
    if !c.rcvq.is_empty() {
        cx.setsockopt(n, &SockOpt::RcvBufForce(room(c.rcvq.len())))?;
    }
    for (q, data) in [(TcpQueue::Send, &c.sndq), (TcpQueue::Recv, &c.rcvq)] {
        if data.is_empty() {
            continue;
        }
        cx.setsockopt(n, &SockOpt::TcpRepairQueue(q))?;
        cx.send_all(n, data, "TCP connection")?;
    }
    // The sizes the program set itself (SO_BUF_LOCK shows which) are set again exactly
    // (half the recorded value: the kernel doubles it); the others are the kernel's
    // autotuning, which it takes up again once the locks that setting sizes left are the
    // original's.
    let lock = c.buf_lock & 3;
    if lock & 1 != 0 {
        cx.setsockopt(n, &SockOpt::SndBufForce(c.sndbuf / 2))?;
    }
    if lock & 2 != 0 {
        cx.setsockopt(n, &SockOpt::RcvBufForce(c.rcvbuf / 2))?;
    }
    if !c.sndq.is_empty() || !c.rcvq.is_empty() || lock != 0 {
        cx.setsockopt(n, &SockOpt::BufLock(lock))?;
    }
    // The window last: the kernel checks it against the receive sequence, which the
    // queued data has just moved to where it was. The peer's FIN is not there yet (see
    // `replay_close`): the window's edge stops before it until it comes.
    let mut window = c.window;
    if sys::tcp::fin_received(c.state) {
        let rcv_end = c.rcv_seq.wrapping_add(c.rcvq.len() as u32);
        if (window[4].wrapping_sub(rcv_end) as i32) > 0 {
            window[4] = rcv_end;
        }
    }
    cx.setsockopt(n, &SockOpt::TcpRepairWindow(window))?;
    replay_close(cx, n, c)?;
    // It stays in repair mode until commit ([`finish_conn`]): a stub killed before then
    // closes it without a word to the peer (no FIN, no reset, no orphan holding the
    // addresses), so the restore can be tried again.
    Ok(n)
}

/// The address connect gave restored socket `n` is the one it had, `local` (a failed
/// restore otherwise).
fn check_sock_addr(cx: &mut Ctx<'_>, n: u64, local: &[u8], peer: &[u8]) -> RestoreResult<()> {
    let Some(pid) = cx.live_pid() else {
        return Ok(());
    };
    let fail = |what: String| {
        crate::error::RestoreError::Stage(format!(
            "TCP socket {} -> {}: {what}",
            show_inet(local),
            show_inet(peer)
        ))
    };
    let sock = sys::process::steal_fd(pid, n as i32)
        .map_err(|e| fail(format!("cannot reach the restored socket: {e}")))?;
    let now = sys::tcp::sockname(&sock, false).map_err(|e| fail(e.to_string()))?;
    if inet_addr(&now) != inet_addr(local) {
        return Err(fail(format!(
            "the route to the peer gives it address {} here",
            show_inet(&now)
        )));
    }
    Ok(())
}

/// How long restore waits for the kernel to take a segment of its own
/// ([`sys::tcp::inject_segment`]) to a restored connection.
const SEGMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The close of a connection restored as established, replayed in repair mode up to its
/// state (`c.state`): our FIN goes into the send queue as already sent (shutdown in
/// repair mode with the send queue selected sends nothing); the peer's FIN, and the
/// acknowledgment of ours (FIN_WAIT2), come as segments from the peer that ckpt makes
/// itself ([`sys::tcp::inject_segment`]); the kernel answers the FIN with an
/// acknowledgment to the real peer, a duplicate of one it had (no data, no FIN, no
/// reset). A program's own shutdown(SHUT_RD) is replayed too.
fn replay_close(cx: &mut Ctx<'_>, n: u64, c: &crate::model::TcpState) -> RestoreResult<()> {
    use sys::tcp::{TCP_CLOSING, TCP_FIN_WAIT2, TCP_LAST_ACK, fin_received, fin_sent};
    let st = c.state;
    if c.rd_shut && !fin_received(st) {
        cx.shutdown(n, libc::SHUT_RD)?;
    }
    if !fin_sent(st) && !fin_received(st) {
        return Ok(());
    }
    let snd_end = c.snd_seq.wrapping_add(c.sndq.len() as u32);
    let rcv_end = c.rcv_seq.wrapping_add(c.rcvq.len() as u32);
    // The peer's window as it advertised it (the restored one must keep it).
    let window = u16::try_from(c.window[1] >> c.snd_wscale.min(14)).unwrap_or(u16::MAX);
    let send_fin = |cx: &mut Ctx<'_>| -> RestoreResult<()> {
        cx.setsockopt(n, &SockOpt::TcpRepairQueue(TcpQueue::Send))?;
        cx.shutdown(n, libc::SHUT_WR)
    };
    if fin_sent(st) && st != TCP_LAST_ACK {
        send_fin(cx)?;
    }
    if fin_received(st) {
        // It acknowledges nothing new: for CLOSING, our FIN is not acknowledged yet.
        let want = match st {
            TCP_LAST_ACK => sys::tcp::TCP_CLOSE_WAIT,
            s => s,
        };
        peer_segment(cx, n, c, rcv_end, c.snd_seq, window, true, want)?;
        if st == TCP_CLOSING {
            debug_assert!(fin_sent(st));
        }
    }
    if st == TCP_LAST_ACK {
        send_fin(cx)?;
    }
    if st == TCP_FIN_WAIT2 {
        peer_segment(
            cx,
            n,
            c,
            rcv_end,
            snd_end.wrapping_add(1),
            window,
            false,
            TCP_FIN_WAIT2,
        )?;
    }
    Ok(())
}

/// A segment from the peer to restored connection `n` ([`sys::tcp::inject_segment`]),
/// then wait until the connection is in state `want` (a failed restore otherwise).
#[allow(clippy::too_many_arguments)]
fn peer_segment(
    cx: &mut Ctx<'_>,
    n: u64,
    c: &crate::model::TcpState,
    seq: u32,
    ack: u32,
    window: u16,
    fin: bool,
    want: u8,
) -> RestoreResult<()> {
    let fail = |what: String| {
        crate::error::RestoreError::Stage(format!(
            "TCP connection {} -> {}: {what}",
            show_inet(&c.local),
            show_inet(&c.peer)
        ))
    };
    let Some(pid) = cx.live_pid() else {
        // A test double: nothing to send to.
        return Ok(());
    };
    let sock = sys::process::steal_fd(pid, n as i32)
        .map_err(|e| fail(format!("cannot reach the restored socket: {e}")))?;
    // From the restored socket's network namespace (one a process below the root
    // made is not ckpt's).
    let inject = || sys::tcp::inject_segment(&c.local, &c.peer, seq, ack, window, fin);
    let theirs = sys::ns::inode(pid, "net").ok();
    if theirs.is_some() && theirs != sys::ns::thread_inode("net").ok() {
        sys::ns::inside(pid, &["net"], inject)
    } else {
        inject()
    }
    .map_err(|e| fail(e.to_string()))?;
    let deadline = std::time::Instant::now() + SEGMENT_WAIT;
    loop {
        let now = sys::tcp::state_of(&sock).map_err(|e| fail(e.to_string()))?;
        if now == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(format!(
                "the kernel did not take the peer's {} (state {}, not {})",
                if fin {
                    "FIN"
                } else {
                    "acknowledgment of our FIN"
                },
                state_name(now),
                state_name(want)
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// At commit, past the point of no return: take restored connection `c` (`sock`: ckpt's
/// duplicate of it) out of repair mode, then set the options that must wait for that
/// (SO_REUSEADDR would have undone the forced reuse of the bind). Errors are ignored:
/// nothing can be undone any more, and the options are checked against the original by
/// the tests' oracle.
pub(crate) fn finish_conn(sock: &std::os::fd::OwnedFd, c: &crate::model::TcpState) {
    sys::tcp::repair_off(sock);
    if c.fin_read {
        sys::tcp::consume_fin(sock);
    }
    for (on, level, opt) in [
        (c.nodelay, libc::SOL_TCP, libc::TCP_NODELAY),
        (c.keepalive, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        (c.reuseaddr, libc::SOL_SOCKET, libc::SO_REUSEADDR),
    ] {
        if on {
            let _ = sys::tcp::setsockopt_u32(sock, level, opt, 1);
        }
    }
    // The other options the program set (checked by plan: `tcp_opts_ok`), out of repair
    // mode too: some (TCP_NODELAY, TCP_CORK) push pending data, which in repair mode
    // would be taken for sent.
    if let Some(o) = &c.opts {
        for i in &o.ints {
            let _ = sys::tcp::setsockopt_u32(sock, i.level, i.name, i.value as u32);
        }
        let pairs = [
            (
                libc::SO_LINGER,
                o.linger
                    .map(|l| l.iter().flat_map(|v| v.to_ne_bytes()).collect()),
            ),
            (
                libc::SO_RCVTIMEO,
                o.rcvtimeo
                    .map(|t| t.iter().flat_map(|v| v.to_ne_bytes()).collect()),
            ),
            (
                libc::SO_SNDTIMEO,
                o.sndtimeo
                    .map(|t| t.iter().flat_map(|v| v.to_ne_bytes()).collect()),
            ),
        ];
        for (opt, bytes) in pairs {
            if let Some(b) = bytes {
                let b: Vec<u8> = b;
                let _ = sys::tcp::setsockopt_bytes(sock, libc::SOL_SOCKET, opt, &b);
            }
        }
        for (level, name, value, _) in byte_opts(o) {
            let _ = sys::tcp::setsockopt_bytes(sock, level, name, &value);
        }
    }
}

// ---- making room (`ckpt migrate` within one network namespace) ----

/// One option on ckpt's own duplicate `sock` of a socket, encoded as restore's.
fn set_local(sock: &std::os::fd::OwnedFd, o: &SockOpt) -> Result<(), String> {
    let (level, name, value, what) = o.encode();
    sys::tcp::setsockopt_bytes(sock, level, name, &value).map_err(|e| format!("{what}: {e}"))
}

/// Connection `c` built again on the socket it was read from (`sock`: ckpt's duplicate
/// of a frozen source's descriptor), which `ckpt migrate` emptied in repair mode
/// ([`sys::tcp::disconnect`]) to leave its addresses to the receiver's copy in the same
/// network namespace, when that copy does not come: the steps of [`create_tcp_conn`]
/// on the socket the program has (bound again unless it kept its port), then out of
/// repair mode as [`finish_conn`] does, and the error the disconnect left on it read
/// off. An established connection only (`ckpt migrate` refuses the others before the
/// freeze when it has to make room).
pub(crate) fn rebuild_in_place(
    sock: &std::os::fd::OwnedFd,
    c: &crate::model::TcpState,
) -> Result<(), String> {
    let fail = |e: String| {
        format!(
            "TCP connection {} -> {}: {e}",
            show_inet(&c.local),
            show_inet(&c.peer)
        )
    };
    if c.state != 0 && c.state != sys::tcp::TCP_ESTABLISHED {
        return Err(fail("not established".into()));
    }
    set_local(sock, &SockOpt::TcpRepair(true)).map_err(fail)?;
    let by_route = c.v6only == Some(false) && v6_not_mapped(&c.local);
    let mut bind_to = c.local.clone();
    if by_route {
        if let Some(a) = bind_to.get_mut(8..24) {
            a.fill(0);
        }
    }
    match sys::tcp::bind_raw(sock, &bind_to) {
        // EINVAL: still bound (a port the program had bound itself stays).
        Err(e) if e.errno() != Some(libc::EINVAL) => return Err(fail(e.to_string())),
        _ => {}
    }
    for (q, seq) in [(TcpQueue::Recv, c.rcv_seq), (TcpQueue::Send, c.snd_seq)] {
        set_local(sock, &SockOpt::TcpRepairQueue(q)).map_err(fail)?;
        set_local(sock, &SockOpt::TcpQueueSeq(seq)).map_err(fail)?;
    }
    let user_mss = connect_mss(c.mss, sys::tcp::timestamps_on());
    if let Some(m) = user_mss {
        set_local(sock, &SockOpt::TcpMaxSeg(m)).map_err(fail)?;
    }
    sys::tcp::connect_raw(sock, &c.peer).map_err(|e| fail(e.to_string()))?;
    if user_mss.is_some() {
        set_local(sock, &SockOpt::TcpMaxSeg(0)).map_err(fail)?;
    }
    set_local(sock, &SockOpt::TcpRepairOptions(repair_options(c))).map_err(fail)?;
    if c.timestamps {
        set_local(sock, &SockOpt::TcpTimestamp(c.tsval)).map_err(fail)?;
    }
    let room = |len: usize| u32::try_from(len.saturating_add(1 << 16)).unwrap_or(u32::MAX);
    if !c.sndq.is_empty() {
        set_local(sock, &SockOpt::SndBufForce(room(c.sndq.len()))).map_err(fail)?;
    }
    if !c.rcvq.is_empty() {
        set_local(sock, &SockOpt::RcvBufForce(room(c.rcvq.len()))).map_err(fail)?;
    }
    for (q, data) in [(TcpQueue::Send, &c.sndq), (TcpQueue::Recv, &c.rcvq)] {
        if data.is_empty() {
            continue;
        }
        set_local(sock, &SockOpt::TcpRepairQueue(q)).map_err(fail)?;
        sys::tcp::send_all_nowait(sock, data).map_err(|e| fail(e.to_string()))?;
    }
    let lock = c.buf_lock & 3;
    if lock & 1 != 0 {
        set_local(sock, &SockOpt::SndBufForce(c.sndbuf / 2)).map_err(fail)?;
    }
    if lock & 2 != 0 {
        set_local(sock, &SockOpt::RcvBufForce(c.rcvbuf / 2)).map_err(fail)?;
    }
    if !c.sndq.is_empty() || !c.rcvq.is_empty() || lock != 0 {
        set_local(sock, &SockOpt::BufLock(lock)).map_err(fail)?;
    }
    set_local(sock, &SockOpt::TcpRepairWindow(c.window)).map_err(fail)?;
    if c.rd_shut {
        let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Read);
    }
    finish_conn(sock, c);
    // The disconnect left ECONNABORTED for the program: SO_ERROR reads (and clears) it.
    let _ = sys::tcp::getsockopt_u32(sock, libc::SOL_SOCKET, libc::SO_ERROR);
    Ok(())
}

/// A tree whose network namespace its runtime makes anew at restore (Podman: a new
/// namespace with the container's address, set up before the runtime starts ckpt),
/// dumped without `--tcp-established` (CRIU's `tcp_established`): its established TCP
/// connections are refused, as CRIU refuses them, naming the process and the
/// connection. (With it, the dump locks them outside that namespace, see
/// [`lock_at_freeze`].)
pub(crate) fn refuse_in_remade_net(ckpt: &crate::model::Checkpoint) -> DumpResult<()> {
    // (One in a network namespace a process below the root made is not in the
    // remade one.)
    let below = |p: &crate::model::Process| crate::kinds::ns::net_below_root(&ckpt.processes, p);
    for p in ckpt.processes.iter().filter(|p| !below(p)) {
        if let Some((local, peer)) = p.tcp_connections().first() {
            return Err(DumpError::Unsupported {
                pid: p.pid,
                why: format!(
                    "it has an established TCP connection ({} to {}) in a network \
                     namespace its runtime makes anew at restore (external net), and \
                     established connections were not asked for: checkpoint with \
                     --tcp-established (`podman container checkpoint --tcp-established`) \
                     to keep them, or close them first",
                    show_inet(local),
                    show_inet(peer)
                ),
            });
        }
    }
    Ok(())
}

/// The locks a dump that kills the tree makes at the freeze, before the connections'
/// queues are read: a socket in repair mode still takes and acknowledges the peer's
/// segments, which would be lost with it. Each is a table of ckpt's own that goes with
/// ckpt however it ends (so a failed or killed dump leaves the tree's connections free);
/// the locks that wait for the restore are made once the image is written. `pids` are
/// the tree's processes (true for those that are not zombies), `root` its root,
/// `ckpts_net` ckpt's own network namespace. The first is in the tree's namespace: none
/// when the tree made it (its peers are all in the tree and it ends with it; the lasting
/// lock is not made then either). A namespace made outside the tree (ckpt's, its
/// parent's, one entered with nsenter, Podman's under /run/netns) is locked from the
/// dumping thread, which joined it: the same decision as collect's,
/// [`crate::kinds::ns::made_outside`]. The second, with `host` (ckpt's own namespace,
/// when the tree's runtime makes the tree's anew at restore and asked for established
/// connections), is in `host` (`sys::netlock::host_hold`): there the peer's segments
/// are dropped after the tree's namespace is gone, until the restore; failing to make
/// it refuses the dump, the tree let go.
pub(crate) fn lock_at_freeze(
    root: i32,
    pids: &[(i32, bool)],
    ckpts_net: Option<u64>,
    host: Option<&std::fs::File>,
) -> DumpResult<(
    Option<sys::netlock::Handover>,
    Option<sys::netlock::Handover>,
)> {
    let tree_made_net = match sys::ns::inode(root, "net") {
        Err(_) => true,
        Ok(ino) if ckpts_net == Some(ino) => false,
        Ok(ino) => {
            let parent = sys::proc::status(root).map(|s| s.ppid).unwrap_or(0);
            let all: std::collections::BTreeSet<i32> = pids.iter().map(|(p, _)| *p).collect();
            crate::kinds::ns::made_outside("net", ino, parent, &all).is_none()
        }
    };
    if tree_made_net {
        return Ok((None, None));
    }
    let live: Vec<i32> = pids.iter().filter(|(_, l)| *l).map(|(p, _)| *p).collect();
    let conns = live_connections(&live);
    let inside = sys::netlock::Handover::hold_as("ckpt_dump", &conns).unwrap_or_default();
    let outside = match host {
        Some(ns) => sys::netlock::host_hold(ns, &conns).map_err(|e| {
            DumpError::Refused(format!(
                "cannot lock the tree's TCP connections in ckpt's network namespace, \
                 outside the one its runtime makes anew at restore: {e}"
            ))
        })?,
        None => None,
    };
    Ok((inside, outside))
}

/// What the image records of the lock a dump of a tree whose runtime makes its network
/// namespace anew leaves in ckpt's (`host`, see [`lock_at_freeze`]): its tables' name,
/// unique to this dump, and the namespace. None when the tree has no connection.
pub(crate) fn host_lock_record(
    ckpt: &crate::model::Checkpoint,
    host: &std::fs::File,
) -> DumpResult<Option<crate::model::HostLock>> {
    use std::os::unix::fs::MetadataExt;
    if crate::kinds::ns::locked_connections(ckpt).is_empty() {
        return Ok(None);
    }
    let netns = host
        .metadata()
        .map_err(|e| DumpError::Refused(format!("ckpt's network namespace: {e}")))?
        .ino();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Some(crate::model::HostLock {
        netns,
        table: format!(
            "ckpt_hold_{}_{}{:09}",
            std::process::id(),
            now.as_secs(),
            now.subsec_nanos()
        ),
    }))
}

/// An image whose dump left a lock in ckpt's network namespace ([`host_lock_record`]):
/// each connection's local address must be there in the namespace the tree is restored
/// into (the one `--join-ns net:PATH` or `inherit_fd` gives for the tree's, which
/// Podman made with the container's address; else ckpt's): a problem otherwise, naming
/// it. The lock stays then (a restore that is refused removes nothing), for another
/// try once the address is there, or `ckpt unlock IMAGE` to give up.
pub(crate) fn check_host_lock(
    ckpt: &crate::model::Checkpoint,
    joins: &[(String, std::path::PathBuf)],
    problems: &mut Vec<crate::error::Problem>,
) {
    let Some(hl) = &ckpt.host_lock else {
        return;
    };
    let conns: Vec<std::net::SocketAddr> = crate::kinds::ns::locked_connections(ckpt)
        .into_iter()
        .filter_map(|(local, _)| inet_addr(&local))
        .collect();
    let bind_all = || -> Vec<(std::net::SocketAddr, std::io::Error)> {
        let mut bad = Vec::new();
        for a in &conns {
            let family = if a.is_ipv6() {
                libc::AF_INET6
            } else {
                libc::AF_INET
            };
            // The address alone (any port): whether it is one of this namespace's.
            let mut any = *a;
            any.set_port(0);
            if let Err(e) = sys::tcp::try_bind(family, any, false) {
                bad.push((*a, e));
            }
        }
        bad
    };
    let foreign = ckpt.namespaces.iter().any(|n| n.foreign && n.kind == "net");
    let bad = match joins.iter().find(|(k, _)| k == "net").filter(|_| foreign) {
        Some((_, path)) => match sys::ns::in_net_file(path, bind_all) {
            Ok(b) => b,
            // (not reachable from here: ckpt's thread joined it already, with a mount
            // namespace of the tree's; check_joins reports a path that is no network
            // namespace)
            Err(_) => bind_all(),
        },
        None => bind_all(),
    };
    for (a, e) in bad {
        crate::kinds::check::p(
            problems,
            "tcp-address-missing",
            format!(
                "TCP connection from {a}: the address is not in the network namespace the \
                 tree is restored into ({e}); the lock the dump left (tables inet/bridge {}) \
                 stays for another try (`ckpt unlock IMAGE` removes it)",
                hl.table
            ),
        );
    }
}

/// The TCP connections (local and peer addresses) of the processes `pids` (frozen) in
/// the dumping thread's network namespace (the lock's rules act there), as their
/// descriptors show them now, and those that messages queued on their unix sockets
/// carry in flight (`inflight::tcp_connections`): what a dump locks before it reads
/// their queues. Descriptors that cannot be looked at are skipped (the dump's own
/// collect reads them again, and the lock made after the image covers every
/// connection it found).
pub(crate) fn live_connections(pids: &[i32]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // The dumping thread's (it joined the tree's when that was made outside it).
    let ours = sys::ns::thread_inode("net").ok();
    let pids: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| ours.is_some() && sys::ns::inode(p, "net").ok() == ours)
        .collect();
    for &p in &pids {
        for fd in sys::proc::fds(p).unwrap_or_default() {
            let Ok(link) = sys::proc::readlink(&format!("/proc/{p}/fd/{fd}")) else {
                continue;
            };
            if !link.starts_with(b"socket:[") || !seen.insert(link) {
                continue;
            }
            let Ok(sock) = sys::process::steal_fd(p, fd) else {
                continue;
            };
            if let Ok(Some(sys::tcp::Endpoint::Conn { local, peer })) = sys::tcp::endpoint_of(&sock)
            {
                out.push((local, peer));
            }
        }
    }
    for c in super::inflight::tcp_connections(&pids) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}
