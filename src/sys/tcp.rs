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
    /// Another TCP state (SYN_SENT, CLOSE_WAIT...).
    Other(u8),
    /// Not a TCP socket.
    NotTcp,
}

// TCP states (net/tcp_states.h, not a uapi header: neither libc nor linux-raw-sys has
// them).
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
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
    let info = getsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_INFO, 104)?;
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
        s => Ok(TcpSock::Other(s)),
    }
}

/// Take a socket out of repair mode (the process runs on with it).
pub fn repair_off(fd: &OwnedFd) {
    let _ = setsockopt_u32(fd, libc::SOL_TCP, libc::TCP_REPAIR, 0);
}
