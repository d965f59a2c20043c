//! Netlink sockets as dump reads them: protocol, port id, multicast groups, connected
//! destination, netlink options, and whether messages wait to be read.

use std::os::fd::{AsRawFd, OwnedFd};

use super::tcp::{getsockopt_bytes, getsockopt_u32, sockname};
use super::{Result, SysError};
use linux_raw_sys::netlink as nl;

/// Integer options at level SOL_NETLINK that restore sets again when on.
pub const NETLINK_OPTS: &[(i32, &str)] = &[
    (nl::NETLINK_PKTINFO as i32, "NETLINK_PKTINFO"),
    (
        nl::NETLINK_BROADCAST_ERROR as i32,
        "NETLINK_BROADCAST_ERROR",
    ),
    (nl::NETLINK_NO_ENOBUFS as i32, "NETLINK_NO_ENOBUFS"),
    (
        nl::NETLINK_LISTEN_ALL_NSID as i32,
        "NETLINK_LISTEN_ALL_NSID",
    ),
    (nl::NETLINK_CAP_ACK as i32, "NETLINK_CAP_ACK"),
    (nl::NETLINK_EXT_ACK as i32, "NETLINK_EXT_ACK"),
    (nl::NETLINK_GET_STRICT_CHK as i32, "NETLINK_GET_STRICT_CHK"),
];

pub const ADD_MEMBERSHIP: i32 = nl::NETLINK_ADD_MEMBERSHIP as i32;

/// A netlink socket as dump reads it.
#[derive(Debug, Clone, Default)]
pub struct NetlinkSock {
    pub protocol: i32,
    /// SOCK_RAW or SOCK_DGRAM.
    pub typ: i32,
    /// Its port id (0: not bound yet).
    pub portid: u32,
    /// Multicast groups it belongs to: bit `i` of word `w` is group `32 * w + i + 1`.
    pub groups: Vec<u32>,
    /// Connected destination (port id, group); zero when not connected.
    pub dst_portid: u32,
    pub dst_group: u32,
    /// The [`NETLINK_OPTS`] that are on.
    pub opts: Vec<i32>,
    /// Whether a message waits to be read.
    pub queued: bool,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0)
}

/// The netlink socket behind `fd`, or `None` if it is not one.
pub fn inspect(fd: &OwnedFd) -> Result<Option<NetlinkSock>> {
    let domain = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    if domain != libc::AF_NETLINK {
        return Ok(None);
    }
    let local = sockname(fd, false)?;
    let peer = sockname(fd, true)?;
    // NETLINK_LIST_MEMBERSHIPS tells the length it needs when the buffer is short.
    let mut groups = Vec::new();
    let mut len = 16usize;
    for _ in 0..4 {
        let mut buf = vec![0u8; len];
        let mut l = len as libc::socklen_t;
        // SAFETY: `buf` has `l` bytes; the kernel writes at most that and updates `l`
        // to the length it would need.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                nl::NETLINK_LIST_MEMBERSHIPS as i32,
                buf.as_mut_ptr().cast(),
                &mut l,
            )
        };
        super::check(r as libc::c_long, || "NETLINK_LIST_MEMBERSHIPS".into())?;
        if (l as usize) <= len {
            groups = (0..l as usize / 4).map(|w| u32_at(&buf, w * 4)).collect();
            break;
        }
        len = l as usize;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let mut opts = Vec::new();
    for &(o, _) in NETLINK_OPTS {
        if getsockopt_bytes(fd, libc::SOL_NETLINK, o, 4)
            .map(|b| u32_at(&b, 0) != 0)
            .unwrap_or(false)
        {
            opts.push(o);
        }
    }
    let mut one = [0u8; 1];
    // SAFETY: a one-byte buffer; MSG_PEEK consumes nothing.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            one.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    let queued = if n >= 0 {
        true
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(SysError::io("peek at a netlink socket", e));
        }
        false
    };
    Ok(Some(NetlinkSock {
        protocol: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32,
        typ: getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32,
        // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }
        portid: u32_at(&local, 4),
        groups,
        dst_portid: u32_at(&peer, 4),
        dst_group: u32_at(&peer, 8),
        opts,
        queued,
    }))
}

/// Whether a netlink socket of `protocol` could take port id `portid` here now.
pub fn try_bind(protocol: i32, portid: u32) -> std::io::Result<()> {
    // SAFETY: plain socket call; the descriptor is owned right away.
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `s` is a new descriptor of ours.
    let s = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let mut a = [0u8; 12];
    a[0..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&portid.to_ne_bytes());
    // SAFETY: a 12-byte sockaddr_nl of our own.
    let r = unsafe { libc::bind(s.as_raw_fd(), a.as_ptr().cast(), 12) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
