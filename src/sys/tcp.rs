//! TCP sockets read with TCP_REPAIR (the kernel's checkpoint/restore interface for TCP):
//! addresses, sequence numbers, queued data, window and options.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{Result, SysError, check};

/// An established connection, as TCP repair mode shows it.
#[derive(Debug, Clone, Default)]
pub struct TcpConn {
    pub family: i32,
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    pub snd_seq: u32,
    pub rcv_seq: u32,
    pub sndq: Vec<u8>,
    pub rcvq: Vec<u8>,
    pub mss: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    pub sack: bool,
    pub timestamps: bool,
    pub tsval: u32,
    pub window: [u32; 5],
    pub nodelay: bool,
    pub keepalive: bool,
    pub reuseaddr: bool,
    pub sndbuf: u32,
    pub rcvbuf: u32,
    /// SO_BUF_LOCK (Linux 5.14; 0 where it is missing): sizes the program set itself.
    pub buf_lock: u32,
    /// The TCP state: ESTABLISHED, or one of the half-closed ones ([`HALF_CLOSED`]).
    pub state: u8,
    /// The peer's FIN was received and the program has read the end of file already.
    pub fin_read: bool,
    /// The reading side is shut down (the program's shutdown(SHUT_RD), or the peer's
    /// FIN).
    pub rd_shut: bool,
    /// IPV6_V6ONLY of an IPv6 socket.
    pub v6only: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum TcpSock {
    Listen {
        family: i32,
        addr: Vec<u8>,
        backlog: u32,
        pending: u32,
        reuseaddr: bool,
        v6only: bool,
    },
    Established(TcpConn),
    /// Created and never connected (state CLOSE, no segment in or out): bound to
    /// `local` or not (port 0).
    Unconnected {
        family: i32,
        local: Vec<u8>,
        v6only: bool,
    },
    /// A connect in progress (SYN_SENT) from `local` to `peer`.
    Connecting {
        family: i32,
        local: Vec<u8>,
        peer: Vec<u8>,
        v6only: bool,
    },
    /// In state CLOSE after a connection (or an attempt) ended: reads give end of file
    /// or the error.
    Ended(TcpEnded),
    /// Another TCP state (SYN_SENT, CLOSE_WAIT...).
    Other(u8),
    /// Not a TCP socket.
    NotTcp,
}

/// A TCP socket in CLOSE whose connection ended (or whose connect failed).
#[derive(Debug, Default, Clone)]
pub struct TcpEnded {
    pub family: i32,
    pub local: Vec<u8>,
    pub v6only: bool,
    /// An error the program has not read yet (poll says POLLERR): reading it (SO_ERROR,
    /// a read) would clear it.
    pub err_pending: bool,
    /// The connection was established once (rcv_nxt was set by the peer's SYN); a
    /// connect that failed leaves it 0.
    pub connected: bool,
    /// Bytes received and not read yet (read with MSG_PEEK).
    pub rcvq: Vec<u8>,
    /// The socket still holds its port (bound by the program, or accepted from a
    /// listener that was): sock_diag lists it as bound but inactive.
    pub holds_port: bool,
}

/// What a TCP socket in CLOSE that had a connection shows: read without changing it
/// (TCP_REPAIR, entered for a moment to read rcv_nxt, resets SO_REUSEADDR: put back).
fn ended(fd: &OwnedFd, domain: i32) -> Result<TcpEnded> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd of ours, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    check(r as libc::c_long, || "poll a TCP socket".into())?;
    let reuse = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, 1)?;
    let rcv_nxt = setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        .and_then(|()| getsockopt_u32(fd, libc::SOL_TCP, libc::TCP_QUEUE_SEQ));
    // Out of repair mode without a window probe.
    let off = linux_raw_sys::net::TCP_REPAIR_OFF_NO_WP as u32;
    setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, off)?;
    setsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse)?;
    let len = queue_len(fd, libc::FIONREAD)?;
    Ok(TcpEnded {
        family: domain,
        local: sockname(fd, false)?,
        v6only: domain == libc::AF_INET6
            && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0,
        err_pending: p.revents & libc::POLLERR != 0,
        connected: rcv_nxt? != 0,
        rcvq: super::sockdiag::peek_stream(fd, len)?,
        holds_port: super::sockdiag::tcp_diag_lists(fd, TCP_BOUND_INACTIVE)?,
    })
}

/// The pseudo-state sock_diag lists bound sockets that neither listen nor connect in
/// (net/tcp_states.h, Linux 6.7).
pub const TCP_BOUND_INACTIVE: u8 = 13;

// TCP states (net/tcp_states.h, not a uapi header: neither libc nor linux-raw-sys has
// them).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;
/// The states of a connection closed on one side or both that restore rebuilds.
pub const HALF_CLOSED: [u8; 5] = [
    TCP_FIN_WAIT1,
    TCP_FIN_WAIT2,
    TCP_CLOSE_WAIT,
    TCP_LAST_ACK,
    TCP_CLOSING,
];

/// Whether a connection in `state` has sent its FIN (it holds a sequence number after
/// the send queue's data).
pub fn fin_sent(state: u8) -> bool {
    matches!(
        state,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING
    )
}

/// Whether this host's TCP uses timestamps on the connections it makes
/// (`net.ipv4.tcp_timestamps`, of ckpt's network namespace; on when unreadable, the
/// kernel's default).
pub fn timestamps_on() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_timestamps")
        .map(|v| v.trim() != "0")
        .unwrap_or(true)
}

/// Whether a connection in `state` has received its peer's FIN (it holds a sequence
/// number after the receive queue's data).
pub fn fin_received(state: u8) -> bool {
    matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING)
}
/// Bytes of struct tcp_info read (up to tcpi_segs_in, linux/tcp.h).
const TCP_INFO_LEN: usize = 144;
/// Offsets of tcpi_segs_out and tcpi_segs_in in struct tcp_info.
const TCPI_SEGS_OUT: usize = 136;
const TCPI_SEGS_IN: usize = 140;
// TCP_REPAIR_QUEUE values (linux/tcp.h).
pub const TCP_RECV_QUEUE: u32 = linux_raw_sys::net::TCP_RECV_QUEUE as u32;
pub const TCP_SEND_QUEUE: u32 = linux_raw_sys::net::TCP_SEND_QUEUE as u32;

pub(crate) fn getsockopt_bytes(fd: &OwnedFd, level: i32, opt: i32, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut l = len as libc::socklen_t;
    // SAFETY: `buf` has `l` bytes; the kernel writes at most that and updates `l`.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, buf.as_mut_ptr().cast(), &mut l) };
    check(r as libc::c_long, || format!("getsockopt({level}, {opt})"))?;
    buf.truncate(l as usize);
    Ok(buf)
}

pub(crate) fn getsockopt_u32(fd: &OwnedFd, level: i32, opt: i32) -> Result<u32> {
    let b = getsockopt_bytes(fd, level, opt, 4)?;
    Ok(u32::from_ne_bytes(
        b.get(0..4)
            .and_then(|s| s.try_into().ok())
            .unwrap_or_default(),
    ))
}

pub(crate) fn setsockopt_bytes(fd: &OwnedFd, level: i32, opt: i32, v: &[u8]) -> Result<()> {
    // SAFETY: `v` is a live slice passed by pointer with its length; the kernel only
    // reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            v.as_ptr().cast(),
            v.len() as libc::socklen_t,
        )
    };
    check(r as libc::c_long, || format!("setsockopt({level}, {opt})"))?;
    Ok(())
}

pub(crate) fn setsockopt_u32(fd: &OwnedFd, level: i32, opt: i32, v: u32) -> Result<()> {
    // SAFETY: a 4-byte value is passed by pointer with its length.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (&v as *const u32).cast(), 4) };
    check(r as libc::c_long, || format!("setsockopt({level}, {opt})"))?;
    Ok(())
}

pub(crate) fn sockname(fd: &OwnedFd, peer: bool) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 128];
    let mut l: libc::socklen_t = 128;
    // SAFETY: `buf` has `l` bytes for the address; the kernel updates `l`.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut l)
        } else {
            libc::getsockname(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut l)
        }
    };
    check(r as libc::c_long, || "getsockname/getpeername".into())?;
    buf.truncate(l as usize);
    Ok(buf)
}

/// The bytes a TCP socket has to read (FIONREAD).
pub fn unread(fd: &OwnedFd) -> Result<usize> {
    queue_len(fd, libc::FIONREAD)
}

fn queue_len(fd: &OwnedFd, req: libc::c_ulong) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: the ioctl writes one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n) };
    check(r as libc::c_long, || "socket queue length".into())?;
    Ok(n.max(0) as usize)
}

/// Whether the reading side of a socket is shut down (POLLRDHUP: the peer's FIN, or the
/// program's shutdown(SHUT_RD)).
fn rd_shut(fd: &OwnedFd) -> Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd of ours, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    check(r as libc::c_long, || "poll a TCP socket".into())?;
    Ok(p.revents & libc::POLLRDHUP != 0)
}

/// A socket's kind in words, from its family, type and protocol ("a netlink socket
/// (NETLINK_ROUTE)", "a packet socket", "a raw IPv4 socket"...), for refusals.
pub fn socket_kind(fd: &OwnedFd) -> Result<String> {
    let domain = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    let proto = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32;
    let type_name = match typ {
        libc::SOCK_STREAM => "stream".to_string(),
        libc::SOCK_DGRAM => "datagram".to_string(),
        libc::SOCK_RAW => "raw".to_string(),
        libc::SOCK_SEQPACKET => "seqpacket".to_string(),
        libc::SOCK_RDM => "reliable datagram".to_string(),
        t => format!("type {t}"),
    };
    Ok(match domain {
        libc::AF_NETLINK => {
            let p = match proto {
                libc::NETLINK_ROUTE => "NETLINK_ROUTE".to_string(),
                libc::NETLINK_SOCK_DIAG => "NETLINK_SOCK_DIAG".to_string(),
                libc::NETLINK_AUDIT => "NETLINK_AUDIT".to_string(),
                libc::NETLINK_KOBJECT_UEVENT => "NETLINK_KOBJECT_UEVENT".to_string(),
                libc::NETLINK_GENERIC => "NETLINK_GENERIC".to_string(),
                libc::NETLINK_NETFILTER => "NETLINK_NETFILTER".to_string(),
                p => format!("protocol {p}"),
            };
            format!("a netlink socket ({p})")
        }
        libc::AF_PACKET => format!("a packet socket ({type_name})"),
        libc::AF_INET | libc::AF_INET6 => {
            let v = if domain == libc::AF_INET {
                "IPv4"
            } else {
                "IPv6"
            };
            match (typ, proto) {
                (libc::SOCK_RAW, p) => format!("a raw {v} socket (protocol {p})"),
                (_, libc::IPPROTO_SCTP) => format!("an SCTP {v} socket"),
                (_, p) => format!("an {v} {type_name} socket (protocol {p})"),
            }
        }
        libc::AF_VSOCK => format!("a vsock socket ({type_name})"),
        libc::AF_BLUETOOTH => format!("a bluetooth socket ({type_name})"),
        libc::AF_ALG => "a kernel crypto (AF_ALG) socket".to_string(),
        libc::AF_XDP => "an XDP socket".to_string(),
        d => format!("a socket of address family {d} ({type_name})"),
    })
}

/// What this socket is; an established connection is put in repair mode (and left so:
/// closing it then sends nothing to the peer) and read out.
pub fn inspect(fd: &OwnedFd) -> Result<TcpSock> {
    let domain = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    let proto = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32;
    if !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || typ != libc::SOCK_STREAM
        || proto != libc::IPPROTO_TCP
    {
        return Ok(TcpSock::NotTcp);
    }
    let info = getsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_INFO, TCP_INFO_LEN)?;
    let u32_at = |i: usize| {
        u32::from_ne_bytes(
            info.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default(),
        )
    };
    let state = info.first().copied().unwrap_or(0);
    match state {
        TCP_LISTEN => {
            let v6only = domain == libc::AF_INET6
                && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0;
            Ok(TcpSock::Listen {
                family: domain,
                addr: sockname(fd, false)?,
                backlog: u32_at(28),
                pending: u32_at(24),
                reuseaddr: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0,
                v6only,
            })
        }
        st if st == TCP_ESTABLISHED || HALF_CLOSED.contains(&st) => {
            let options = info.get(5).copied().unwrap_or(0);
            let wscales = info.get(6).copied().unwrap_or(0);
            let mut c = TcpConn {
                family: domain,
                local: sockname(fd, false)?,
                peer: sockname(fd, true)?,
                mss: u32_at(16),
                snd_wscale: u32::from(wscales & 0xf),
                rcv_wscale: u32::from(wscales >> 4),
                sack: options & 2 != 0,
                timestamps: options & 1 != 0,
                nodelay: getsockopt_u32(fd, libc::SOL_TCP, libc::TCP_NODELAY)? != 0,
                keepalive: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0,
                reuseaddr: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0,
                sndbuf: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?,
                rcvbuf: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?,
                buf_lock: getsockopt_u32(
                    fd,
                    libc::SOL_SOCKET,
                    linux_raw_sys::net::SO_BUF_LOCK as i32,
                )
                .unwrap_or(0),
                state: st,
                rd_shut: rd_shut(fd)?,
                v6only: if domain == libc::AF_INET6 {
                    Some(getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0)
                } else {
                    None
                },
                ..Default::default()
            };
            if fin_received(st) {
                // The FIN is one sequence number after the data: the end of file was
                // read when nothing, not even it, is left between the two.
                c.fin_read = super::sockdiag::tcp_diag_of(fd, st)?.rqueue == 0;
            }
            setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, 1)?;
            for q in [TCP_RECV_QUEUE, TCP_SEND_QUEUE] {
                setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, q)?;
                let seq = getsockopt_u32(fd, libc::SOL_TCP, libc::TCP_QUEUE_SEQ)?;
                let (len, data) = if q == TCP_RECV_QUEUE {
                    let n = queue_len(fd, libc::FIONREAD)?;
                    (n, &mut c.rcvq)
                } else {
                    let n = queue_len(fd, libc::TIOCOUTQ)?;
                    (n, &mut c.sndq)
                };
                *data = super::sockdiag::peek_stream(fd, len)?;
                // The kernel reports the sequence number after the queue (rcv_nxt,
                // write_seq), a FIN included; restore sets the one before the data,
                // appends the data, then replays the FIN.
                let fin = if q == TCP_RECV_QUEUE {
                    fin_received(st)
                } else {
                    fin_sent(st)
                };
                let start = seq
                    .wrapping_sub(data.len() as u32)
                    .wrapping_sub(u32::from(fin));
                if q == TCP_RECV_QUEUE {
                    c.rcv_seq = start;
                } else {
                    c.snd_seq = start;
                }
            }
            if c.timestamps {
                c.tsval = getsockopt_u32(fd, libc::SOL_TCP, libc::TCP_TIMESTAMP)?;
            }
            let w = getsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW, 20)?;
            if w.len() != 20 {
                return Err(SysError::Other("short TCP_REPAIR_WINDOW".into()));
            }
            for (i, slot) in c.window.iter_mut().enumerate() {
                *slot = u32::from_ne_bytes(w[i * 4..i * 4 + 4].try_into().unwrap_or_default());
            }
            Ok(TcpSock::Established(c))
        }
        TCP_CLOSE if info.len() >= TCP_INFO_LEN => {
            // A socket whose connection ended (or whose connect failed) is in CLOSE too:
            // it sent a SYN at least. (tcp_disconnect clears the counters along with
            // the rest: such a socket is like a new one again.)
            if u32_at(TCPI_SEGS_OUT) != 0 || u32_at(TCPI_SEGS_IN) != 0 {
                return ended(fd, domain).map(TcpSock::Ended);
            }
            Ok(TcpSock::Unconnected {
                family: domain,
                local: sockname(fd, false)?,
                v6only: domain == libc::AF_INET6
                    && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0,
            })
        }
        TCP_SYN_SENT => {
            // getpeername answers ENOTCONN while connecting: sock_diag has the address.
            let local = sockname(fd, false)?;
            let d = super::sockdiag::tcp_diag_of(fd, TCP_SYN_SENT)?;
            let mut peer = (domain as u16).to_ne_bytes().to_vec();
            peer.extend_from_slice(&d.dport.to_be_bytes());
            if domain == libc::AF_INET {
                peer.extend_from_slice(&d.dst[..4]);
                peer.resize(16, 0);
            } else {
                // flowinfo 0, the address, the local address's scope
                peer.extend_from_slice(&[0; 4]);
                peer.extend_from_slice(&d.dst);
                peer.extend_from_slice(local.get(24..28).unwrap_or(&[0; 4]));
            }
            Ok(TcpSock::Connecting {
                family: domain,
                local,
                peer,
                v6only: domain == libc::AF_INET6
                    && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0,
            })
        }
        s => Ok(TcpSock::Other(s)),
    }
}

/// Integer socket options that restore sets again on a TCP socket when they differ
/// from a new socket's: (level, name, what). Each reads back as it was set. Options
/// that belong to a connection's negotiation (TCP_MAXSEG, TCP_WINDOW_CLAMP) are not
/// here: they read back the connection's values, not the program's.
pub const INT_OPTS: &[(i32, i32, &str)] = &[
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT"),
    (libc::SOL_SOCKET, libc::SO_MARK, "SO_MARK"),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT"),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, "SO_OOBINLINE"),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST"),
    (libc::SOL_SOCKET, libc::SO_DONTROUTE, "SO_DONTROUTE"),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMP, "SO_TIMESTAMP"),
    (libc::SOL_TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
    (libc::SOL_TCP, libc::TCP_CORK, "TCP_CORK"),
    (libc::SOL_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
    (libc::SOL_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    (libc::SOL_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
    (libc::SOL_TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
    (libc::SOL_TCP, libc::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT"),
    (libc::SOL_TCP, libc::TCP_SYNCNT, "TCP_SYNCNT"),
    (libc::SOL_TCP, libc::TCP_LINGER2, "TCP_LINGER2"),
    (
        libc::SOL_TCP,
        libc::TCP_THIN_LINEAR_TIMEOUTS,
        "TCP_THIN_LINEAR_TIMEOUTS",
    ),
    (libc::SOL_IP, libc::IP_TOS, "IP_TOS"),
    (libc::SOL_IP, libc::IP_TTL, "IP_TTL"),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS"),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        "IPV6_UNICAST_HOPS",
    ),
    (libc::SOL_IP, libc::IP_RECVERR, "IP_RECVERR"),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    (libc::SOL_IP, libc::IP_PKTINFO, "IP_PKTINFO"),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVPKTINFO,
        "IPV6_RECVPKTINFO",
    ),
    // Raw and ping sockets (a TCP socket never has them on).
    (libc::SOL_IP, libc::IP_HDRINCL, "IP_HDRINCL"),
    (libc::SOL_RAW, ICMP_FILTER, "ICMP_FILTER"),
    // After IP_TOS and IPV6_TCLASS, which set the priority from the class they give.
    (libc::SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY"),
];

/// ICMP_FILTER (linux/icmp.h): the ICMP types a raw ICMP socket drops, one bit each.
pub const ICMP_FILTER: i32 = 1;

/// Options of an IP socket beyond addresses, buffers and reuse, as [`changed_opts_of`]
/// reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraOpts {
    /// (level, name, value) of the [`INT_OPTS`] that differ from a new socket's.
    pub ints: Vec<(i32, i32, i32)>,
    pub linger: Option<[i32; 2]>,
    pub rcvtimeo: Option<[i64; 2]>,
    pub sndtimeo: Option<[i64; 2]>,
    pub congestion: Option<String>,
    pub bind_device: Option<String>,
    pub icmp6_filter: Option<Vec<u8>>,
}

/// ICMP6_FILTER (linux/icmpv6.h): the ICMPv6 types a raw ICMPv6 socket drops, one bit
/// each (struct icmp6_filter, 32 bytes).
pub const ICMP6_FILTER: i32 = 1;

/// A string option as getsockopt gives it (up to the first NUL).
fn getsockopt_str(fd: &OwnedFd, level: i32, name: i32) -> Option<String> {
    let b = getsockopt_bytes(fd, level, name, 64).ok()?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Some(String::from_utf8_lossy(&b[..end]).into_owned())
}

fn getsockopt_int(fd: &OwnedFd, level: i32, name: i32) -> Option<i32> {
    let b = getsockopt_bytes(fd, level, name, 4).ok()?;
    Some(i32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

fn getsockopt_timeval(fd: &OwnedFd, name: i32) -> Result<[i64; 2]> {
    let b = getsockopt_bytes(fd, libc::SOL_SOCKET, name, 16)?;
    let at = |i: usize| {
        b.get(i..i + 8)
            .and_then(|s| s.try_into().ok())
            .map(i64::from_ne_bytes)
            .unwrap_or(0)
    };
    Ok([at(0), at(8)])
}

/// The options of socket `fd` (of `family`, `typ`, `proto`: TCP, UDP, raw or ping) that
/// differ from those of a new socket of the same kind made here, with SO_LINGER and the
/// timeouts when set. Where ckpt cannot make such a socket itself (a ping socket outside
/// net.ipv4.ping_group_range), every option that reads is kept.
pub fn changed_opts_of(fd: &OwnedFd, family: i32, typ: i32, proto: i32) -> Result<ExtraOpts> {
    // SAFETY: plain socket call; the descriptor is owned right away.
    let raw = unsafe { libc::socket(family, typ | libc::SOCK_CLOEXEC, proto) };
    let fresh = (raw >= 0).then(|| {
        // SAFETY: `raw` is a new descriptor of ours.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
    });
    let mut out = ExtraOpts::default();
    for &(level, name, _) in INT_OPTS {
        if let Some(v) = getsockopt_int(fd, level, name) {
            if fresh.as_ref().and_then(|f| getsockopt_int(f, level, name)) != Some(v) {
                out.ints.push((level, name, v));
            }
        }
    }
    let l = getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_LINGER, 8)?;
    let li = |i: usize| {
        l.get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(0)
    };
    if li(0) != 0 {
        out.linger = Some([li(0), li(4)]);
    }
    for (name, slot) in [
        (libc::SO_RCVTIMEO, &mut out.rcvtimeo),
        (libc::SO_SNDTIMEO, &mut out.sndtimeo),
    ] {
        let tv = getsockopt_timeval(fd, name)?;
        if tv != [0, 0] {
            *slot = Some(tv);
        }
    }
    if proto == libc::IPPROTO_TCP {
        let cc = getsockopt_str(fd, libc::SOL_TCP, libc::TCP_CONGESTION);
        if cc.is_some()
            && fresh
                .as_ref()
                .and_then(|f| getsockopt_str(f, libc::SOL_TCP, libc::TCP_CONGESTION))
                != cc
        {
            out.congestion = cc;
        }
    }
    out.bind_device =
        getsockopt_str(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE).filter(|d| !d.is_empty());
    if family == libc::AF_INET6 && proto == libc::IPPROTO_ICMPV6 {
        let f = getsockopt_bytes(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, 32).ok();
        let new = fresh
            .as_ref()
            .and_then(|n| getsockopt_bytes(n, libc::IPPROTO_ICMPV6, ICMP6_FILTER, 32).ok());
        if f.as_ref().is_some_and(|b| b.len() == 32) && f != new {
            out.icmp6_filter = f;
        }
    }
    Ok(out)
}

/// Take a socket out of repair mode (the process runs on with it).
pub fn repair_off(fd: &OwnedFd) {
    let _ = setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, 0);
}

/// TCP_REPAIR_OFF_NO_WP (include/uapi/linux/tcp.h).
const TCP_REPAIR_OFF_NO_WP: i32 = -1;

/// Take a socket a dump read out of repair mode without the window probe the plain
/// way sends: nothing of it changed, so the peer has nothing to learn, and the probe
/// would change the socket (a connection that never sent has its segment size set
/// by the probe's send).
pub fn repair_off_quiet(fd: &OwnedFd) {
    let _ = setsockopt_u32(
        fd,
        libc::SOL_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP as u32,
    );
}

/// Whether a TCP socket of `family` (IPV6_V6ONLY as `v6only`) could bind `addr` here
/// now (`Err`: why not).
pub fn try_bind(family: i32, addr: std::net::SocketAddr, v6only: bool) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, bind, socket, sockopt};
    let fam = if family == libc::AF_INET6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let s = socket(fam, SocketType::STREAM, None)?;
    if family == libc::AF_INET6 {
        sockopt::set_ipv6_v6only(&s, v6only)?;
    }
    bind(&s, &addr)?;
    Ok(())
}

/// Whether a socket filter is attached to the socket (SO_ATTACH_FILTER, or an eBPF one
/// with SO_ATTACH_BPF / SO_ATTACH_REUSEPORT_*BPF that SO_GET_FILTER cannot read back).
pub fn has_filter(fd: &OwnedFd) -> Result<bool> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: a zero length asks only for the number of filter blocks: the kernel
    // writes nothing through the (unused, non-null) value pointer, only `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::NonNull::<u8>::dangling().as_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // An eBPF filter has no classic program to read.
        if e.raw_os_error() == Some(libc::EACCES) {
            return Ok(true);
        }
        return Err(SysError::io("SO_GET_FILTER", e));
    }
    Ok(len != 0)
}

/// The firewall mark of the segments ckpt itself sends to a restored connection
/// ([`inject_segment`]): the network lock (`netlock`) lets them through.
pub const INJECT_MARK: u32 = 0x636b_7074;

// TCP header flags (RFC 9293).
const TH_FIN: u8 = 0x01;
const TH_ACK: u8 = 0x10;

/// The IPv4 address of a sockaddr_in, or of a v4-mapped sockaddr_in6.
fn v4_of(a: &[u8]) -> Option<[u8; 4]> {
    match a.len() {
        16 => a.get(4..8)?.try_into().ok(),
        28 => {
            let ip: [u8; 16] = a.get(8..24)?.try_into().ok()?;
            std::net::Ipv6Addr::from(ip)
                .to_ipv4_mapped()
                .map(|v| v.octets())
        }
        _ => None,
    }
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
        sum += u32::from(w);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A segment of a connection restored in repair mode, as if its peer had sent it: from
/// `peer` to `local` (raw sockaddr_in / sockaddr_in6, v4-mapped ones sent as IPv4), with
/// sequence number `seq`, acknowledging `ack`, advertising `window` (already scaled
/// down), a FIN if `fin`. Sent through a raw socket of ckpt's, marked [`INJECT_MARK`];
/// the kernel takes it like any segment from the peer. This is how the peer's FIN comes
/// back: repair mode has no way to queue one.
pub fn inject_segment(
    local: &[u8],
    peer: &[u8],
    seq: u32,
    ack: u32,
    window: u16,
    fin: bool,
) -> Result<()> {
    let bad = || SysError::Other("bad TCP address for a segment".into());
    let (lport, pport) = (
        local.get(2..4).ok_or_else(bad)?,
        peer.get(2..4).ok_or_else(bad)?,
    );
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(pport);
    tcp.extend_from_slice(lport);
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 20 bytes, no options
    tcp.push(TH_ACK | if fin { TH_FIN } else { 0 });
    tcp.extend_from_slice(&window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let v4 = (v4_of(local), v4_of(peer));
    let (family, packet, dst): (i32, Vec<u8>, Vec<u8>) = match v4 {
        (Some(l), Some(p)) => {
            let mut sum = csum_add(0, &p);
            sum = csum_add(sum, &l);
            sum += libc::IPPROTO_TCP as u32 + tcp.len() as u32;
            let c = csum_fold(csum_add(sum, &tcp)).to_be_bytes();
            tcp[16..18].copy_from_slice(&c);
            // The kernel fills in the total length, the identification and the header
            // checksum.
            let mut ip = vec![
                0x45,
                0,
                0,
                0,
                0,
                0,
                0x40,
                0,
                64,
                libc::IPPROTO_TCP as u8,
                0,
                0,
            ];
            ip.extend_from_slice(&p);
            ip.extend_from_slice(&l);
            ip.extend_from_slice(&tcp);
            let mut dst = (libc::AF_INET as u16).to_ne_bytes().to_vec();
            dst.extend_from_slice(&[0, 0]);
            dst.extend_from_slice(&l);
            dst.resize(16, 0);
            (libc::AF_INET, ip, dst)
        }
        (None, None) if local.len() == 28 && peer.len() == 28 => {
            let (l, p) = (&local[8..24], &peer[8..24]);
            let mut sum = csum_add(0, p);
            sum = csum_add(sum, l);
            sum += libc::IPPROTO_TCP as u32 + tcp.len() as u32;
            let c = csum_fold(csum_add(sum, &tcp)).to_be_bytes();
            tcp[16..18].copy_from_slice(&c);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[libc::IPPROTO_TCP as u8, 64]);
            ip.extend_from_slice(p);
            ip.extend_from_slice(l);
            ip.extend_from_slice(&tcp);
            // sockaddr_in6 with port 0 (a raw socket's destination), the local
            // address and its scope.
            let mut dst = local.to_vec();
            dst[2..4].copy_from_slice(&[0, 0]);
            (libc::AF_INET6, ip, dst)
        }
        _ => return Err(bad()),
    };
    // IPPROTO_RAW: the header is ours (IP_HDRINCL, IPV6_HDRINCL implied).
    // SAFETY: plain socket call; the descriptor is owned right away.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    check(raw as libc::c_long, || {
        "socket(raw, for a TCP segment)".into()
    })?;
    // SAFETY: `raw` is a new descriptor of ours.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    setsockopt_u32(&sock, libc::SOL_SOCKET, libc::SO_MARK, INJECT_MARK)?;
    // SAFETY: `packet` and `dst` are live buffers passed with their lengths; the kernel
    // only reads them.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            dst.as_ptr().cast(),
            dst.len() as libc::socklen_t,
        )
    };
    check(r as libc::c_long, || {
        "send a TCP segment to a restored connection".into()
    })?;
    Ok(())
}

/// The TCP state of a socket (TCP_INFO).
pub fn state_of(fd: &OwnedFd) -> Result<u8> {
    let info = getsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_INFO, 8)?;
    info.first()
        .copied()
        .ok_or_else(|| SysError::Other("empty TCP_INFO".into()))
}

/// Read the end of file the peer's FIN left on a socket out of repair mode (nothing
/// else is queued before it), as the program had.
pub fn consume_fin(fd: &OwnedFd) {
    let mut b = [0u8; 1];
    let _ = rustix::net::recv(fd, &mut b[..], rustix::net::RecvFlags::DONTWAIT);
}

// ---- moving sockets out of the way (`ckpt migrate` within one network namespace) ----

/// A TCP socket as `ckpt migrate` sees it at the freeze, read without changing it.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A connection, established or half-closed.
    Conn { local: Vec<u8>, peer: Vec<u8> },
    /// A listener (its backlog, and its address as getsockname gives it).
    Listen { backlog: u32, addr: Vec<u8> },
}

/// What TCP socket `fd` is, if a connection or a listener (None for anything else).
pub fn endpoint_of(fd: &OwnedFd) -> Result<Option<Endpoint>> {
    let domain = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    let proto = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32;
    if !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || typ != libc::SOCK_STREAM
        || proto != libc::IPPROTO_TCP
    {
        return Ok(None);
    }
    let info = getsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_INFO, 32)?;
    let state = info.first().copied().unwrap_or(0);
    Ok(match state {
        TCP_LISTEN => Some(Endpoint::Listen {
            backlog: info
                .get(28..32)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0),
            addr: sockname(fd, false)?,
        }),
        s if s == TCP_ESTABLISHED || HALF_CLOSED.contains(&s) => Some(Endpoint::Conn {
            local: sockname(fd, false)?,
            peer: sockname(fd, true)?,
        }),
        _ => None,
    })
}

/// Disconnect a socket (connect to AF_UNSPEC): a connection in repair mode goes to
/// state CLOSE without a word to the peer (no FIN, no reset), its queues emptied and
/// its addresses free; a listener stops listening (it stays bound).
pub fn disconnect(fd: &OwnedFd) -> Result<()> {
    // SAFETY: an all-zero sockaddr is a valid value of the plain C struct.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `sa` is a live sockaddr of the length given; the kernel only reads it.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    check(r as libc::c_long, || "disconnect a TCP socket".into())?;
    Ok(())
}

/// bind or connect `fd` to a raw sockaddr_in / sockaddr_in6.
fn raw_addr_call(fd: &OwnedFd, addr: &[u8], connect: bool) -> Result<()> {
    if addr.len() > std::mem::size_of::<libc::sockaddr_storage>() || addr.len() < 2 {
        return Err(SysError::Other("bad socket address".into()));
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value of the plain C struct.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `addr` fits in `ss` (checked above); the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len(),
        )
    };
    let p = (&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
    let len = addr.len() as libc::socklen_t;
    // SAFETY: `p` points to `len` initialized bytes of a live sockaddr_storage; the
    // kernel only reads them.
    let r = unsafe {
        if connect {
            libc::connect(fd.as_raw_fd(), p, len)
        } else {
            libc::bind(fd.as_raw_fd(), p, len)
        }
    };
    check(r as libc::c_long, || {
        format!("{} a TCP socket", if connect { "connect" } else { "bind" })
    })?;
    Ok(())
}

/// bind `fd` to a raw sockaddr_in / sockaddr_in6.
pub fn bind_raw(fd: &OwnedFd, addr: &[u8]) -> Result<()> {
    raw_addr_call(fd, addr, false)
}

/// connect `fd` to a raw sockaddr_in / sockaddr_in6 (in repair mode: no handshake).
pub fn connect_raw(fd: &OwnedFd, addr: &[u8]) -> Result<()> {
    raw_addr_call(fd, addr, true)
}

/// A listener that [`disconnect`] stopped listens again at `addr`, its address before.
/// The disconnect gave its port back to the kernel if the port was not chosen by the
/// program (bound to port 0, or not bound before listen: the kernel drops a port it
/// picked itself when the socket leaves LISTEN), though getsockname still shows it; a
/// plain listen() would then take a new port and clients of the old one would be
/// refused. So it binds `addr` again first: EINVAL means the socket still holds its
/// port. EADDRINUSE means another socket took the port meanwhile (the caller may retry
/// once that one is gone).
pub fn listen_again(fd: &OwnedFd, addr: &[u8], backlog: u32) -> Result<()> {
    match bind_raw(fd, addr) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    listen(fd, backlog)
}

/// listen(2).
pub fn listen(fd: &OwnedFd, backlog: u32) -> Result<()> {
    rustix::net::listen(fd, i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(|e| super::rerr("listen", e))
}

/// Send all of `data` without waiting (repair mode: into the queue selected).
pub fn send_all_nowait(fd: &OwnedFd, data: &[u8]) -> Result<()> {
    let mut at = 0;
    while at < data.len() {
        let n = rustix::net::send(fd, &data[at..], rustix::net::SendFlags::DONTWAIT)
            .map_err(|e| super::rerr(format!("queue data ({at} of {} bytes)", data.len()), e))?;
        if n == 0 {
            return Err(SysError::Other(format!(
                "queue data: {at} of {} bytes taken",
                data.len()
            )));
        }
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on a port the kernel picked, disconnected as `ckpt migrate` parks it:
    /// a plain listen() takes another port (what refused a failed migration's clients),
    /// listen_again the same one, and a client reaches it there. A listener on a port
    /// of its own choosing keeps it through the disconnect (bind answers EINVAL).
    #[test]
    fn a_parked_listener_listens_again_on_its_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let fd = OwnedFd::from(l);
        let Ok(Some(Endpoint::Listen { backlog, addr })) = endpoint_of(&fd) else {
            panic!("not a listener");
        };
        disconnect(&fd).unwrap_or_else(|e| panic!("{e}"));
        listen_again(&fd, &addr, backlog).unwrap_or_else(|e| panic!("{e}"));
        let again = std::net::TcpListener::from(fd);
        assert_eq!(again.local_addr().map(|a| a.port()).ok(), Some(port));
        let c = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(c.is_ok(), "{c:?}");
        assert!(again.accept().is_ok());
        // Disconnected again, now bound by listen_again's bind: the port stays, the
        // second bind is refused (EINVAL) and listen_again listens all the same.
        let fd = OwnedFd::from(again);
        disconnect(&fd).unwrap_or_else(|e| panic!("{e}"));
        listen_again(&fd, &addr, backlog).unwrap_or_else(|e| panic!("{e}"));
        let again = std::net::TcpListener::from(fd);
        assert_eq!(again.local_addr().map(|a| a.port()).ok(), Some(port));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
