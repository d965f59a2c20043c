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
    /// In state CLOSE after a connection (or an attempt) ended: reads give end of file
    /// or the error.
    Ended,
    /// Another TCP state (SYN_SENT, CLOSE_WAIT...).
    Other(u8),
    /// Not a TCP socket.
    NotTcp,
}

// TCP states (net/tcp_states.h, not a uapi header: neither libc nor linux-raw-sys has
// them).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
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

fn queue_len(fd: &OwnedFd, req: libc::c_ulong) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: the ioctl writes one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n) };
    check(r as libc::c_long, || "socket queue length".into())?;
    Ok(n.max(0) as usize)
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
        TCP_ESTABLISHED => {
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
                ..Default::default()
            };
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
                // write_seq); restore sets the one before it and appends the data.
                let start = seq.wrapping_sub(data.len() as u32);
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
                return Ok(TcpSock::Ended);
            }
            Ok(TcpSock::Unconnected {
                family: domain,
                local: sockname(fd, false)?,
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
    Ok(out)
}

/// Take a socket out of repair mode (the process runs on with it).
pub fn repair_off(fd: &OwnedFd) {
    let _ = setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, 0);
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
