//! Packet sockets (AF_PACKET): what a descriptor and the kernel's packet_diag show of
//! one (protocol, interface, options, filter; rings, fanout and memberships, which
//! restore does not make).

use std::os::fd::{AsRawFd, OwnedFd};

use super::tcp::{getsockopt_bytes, getsockopt_u32, sockname};
use super::{Result, SysError, check};

/// SOL_PACKET integer options restore sets again when they differ from a new socket's
/// (linux/if_packet.h): (name, what). PACKET_VERSION first (it must come before
/// anything that depends on the frame layout).
pub const PACKET_OPTS: &[(i32, &str)] = &[
    (libc::PACKET_VERSION, "PACKET_VERSION"),
    (libc::PACKET_RESERVE, "PACKET_RESERVE"),
    (libc::PACKET_AUXDATA, "PACKET_AUXDATA"),
    (libc::PACKET_ORIGDEV, "PACKET_ORIGDEV"),
    (libc::PACKET_VNET_HDR, "PACKET_VNET_HDR"),
    (libc::PACKET_LOSS, "PACKET_LOSS"),
    (libc::PACKET_TIMESTAMP, "PACKET_TIMESTAMP"),
    (libc::PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS"),
    (PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING"),
];

/// PACKET_IGNORE_OUTGOING (linux/if_packet.h; not in libc).
const PACKET_IGNORE_OUTGOING: i32 = 23;

/// What dump reads of a packet socket.
#[derive(Debug, Clone, Default)]
pub struct PacketSock {
    pub typ: i32,
    pub protocol: u16,
    pub ifindex: i32,
    pub ifname: String,
    /// (SOL_PACKET name, value) of the [`PACKET_OPTS`] that differ from a new socket's.
    pub opts: Vec<(i32, i32)>,
    pub fanout: u32,
    pub rings: bool,
    pub memberships: bool,
    /// Bytes of the next packet waiting to be read (0: none).
    pub queued: usize,
    /// Classic filter instructions (8 bytes each); `Err` of [`filter_of`] for eBPF.
    pub filter: Vec<u8>,
    pub filter_locked: bool,
}

fn int_opt(fd: &OwnedFd, level: i32, name: i32) -> Option<i32> {
    let b = getsockopt_bytes(fd, level, name, 4).ok()?;
    Some(i32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

/// The classic filter attached to a socket (empty: none); `Ok(None)`: an eBPF one,
/// which cannot be read back.
pub fn filter_of(fd: &OwnedFd) -> Result<Option<Vec<u8>>> {
    let mut blocks: libc::socklen_t = 0;
    // SAFETY: a zero length asks only for the number of blocks: the kernel writes
    // nothing through the (unused, non-null) value pointer, only `blocks`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::NonNull::<u8>::dangling().as_ptr().cast(),
            &mut blocks,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EACCES) {
            return Ok(None);
        }
        return Err(SysError::io("SO_GET_FILTER", e));
    }
    if blocks == 0 {
        return Ok(Some(Vec::new()));
    }
    let mut buf = vec![0u8; blocks as usize * 8];
    let mut len = blocks;
    // SAFETY: `buf` holds `len` blocks of 8 bytes (struct sock_filter); the kernel
    // writes at most that many (SO_GET_FILTER counts in blocks).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(r as libc::c_long, || "SO_GET_FILTER".into())?;
    buf.truncate(len as usize * 8);
    Ok(Some(buf))
}

/// The packet socket `fd` (None: not one).
pub fn inspect(fd: &OwnedFd) -> Result<Option<PacketSock>> {
    if getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32 != libc::AF_PACKET {
        return Ok(None);
    }
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    // struct sockaddr_ll: family, protocol (network order), ifindex...
    let a = sockname(fd, false)?;
    let protocol = a
        .get(2..4)
        .map(|p| u16::from_ne_bytes([p[0], p[1]]))
        .unwrap_or(0);
    let ifindex = a
        .get(4..8)
        .and_then(|p| p.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(0);
    let ifname = if ifindex > 0 {
        rustix::net::netdevice::index_to_name(
            &rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::DGRAM,
                None,
            )
            .map_err(|e| super::rerr("socket", e))?,
            ifindex as u32,
        )
        .map_err(|e| super::rerr(format!("the name of interface {ifindex}"), e))?
    } else {
        String::new()
    };
    // SAFETY: plain socket call; the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_PACKET, typ | libc::SOCK_CLOEXEC, 0) };
    check(raw as libc::c_long, || "socket(AF_PACKET)".into())?;
    // SAFETY: `raw` is a new descriptor of ours.
    let fresh = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let mut opts = Vec::new();
    for &(name, _) in PACKET_OPTS {
        if let Some(v) = int_opt(fd, libc::SOL_PACKET, name) {
            if int_opt(&fresh, libc::SOL_PACKET, name) != Some(v) {
                opts.push((name, v));
            }
        }
    }
    let fanout = int_opt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT).unwrap_or(0) as u32;
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut queued) };
    check(r as libc::c_long, || "FIONREAD".into())?;
    let (rings, memberships) = super::sockdiag::packet_rings_and_members(fd)?;
    let filter = filter_of(fd)?.unwrap_or_else(|| vec![0xff]);
    Ok(Some(PacketSock {
        typ,
        protocol,
        ifindex,
        ifname,
        opts,
        fanout,
        rings,
        memberships,
        queued: queued.max(0) as usize,
        filter,
        filter_locked: int_opt(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER).unwrap_or(0) != 0,
    }))
}

/// The index of interface `name` here (None: there is none).
pub fn ifindex_of(name: &str) -> Option<i32> {
    let s = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .ok()?;
    rustix::net::netdevice::name_to_index(&s, name)
        .ok()
        .map(|i| i as i32)
}
