//! Raw IP sockets (SOCK_RAW) and ICMP ping sockets (SOCK_DGRAM with IPPROTO_ICMP or
//! IPPROTO_ICMPV6) as dump reads them: addresses, and whether a packet waits to be read.

use std::os::fd::{AsRawFd, OwnedFd};

use super::tcp::{getsockopt_u32, sockname};

use super::{Result, SysError};

/// A raw or ping socket as dump reads it.
#[derive(Debug, Clone, Default)]
pub struct RawSock {
    pub family: i32,
    pub typ: i32,
    pub protocol: i32,
    /// Bound address (for a ping socket the port is its ICMP identifier).
    pub local: Vec<u8>,
    /// Empty when not connected.
    pub peer: Vec<u8>,
    pub v6only: bool,
    /// Whether a packet waits to be read.
    pub queued: bool,
}

/// The peer a raw or ping socket is connected to, from /proc/PID/net/{raw,raw6,icmp,
/// icmp6} (such sockets have no port, so getpeername says they are not connected):
/// `None` when it is not connected. `ino` is the socket's inode number.
fn proc_peer(pid: i32, family: i32, typ: i32, ino: u64) -> Result<Option<Vec<u8>>> {
    let table = match (family == libc::AF_INET6, typ == libc::SOCK_RAW) {
        (false, true) => "raw",
        (true, true) => "raw6",
        (false, false) => "icmp",
        (true, false) => "icmp6",
    };
    let path = format!("/proc/{pid}/net/{table}");
    let text = std::fs::read_to_string(&path).map_err(|e| SysError::io(path.clone(), e))?;
    let bad = || SysError::Other(format!("malformed line in {path}"));
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9).and_then(|i| i.parse::<u64>().ok()) != Some(ino) {
            continue;
        }
        // TCP_ESTABLISHED: connected.
        if f.get(3) != Some(&"01") {
            return Ok(None);
        }
        let hex = f.get(2).and_then(|a| a.split(':').next()).ok_or_else(bad)?;
        // The address as the kernel prints it: each 32-bit word of it in host order.
        let mut ip = Vec::new();
        for w in 0..hex.len() / 8 {
            let word = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).map_err(|_| bad())?;
            ip.extend_from_slice(&word.to_ne_bytes());
        }
        let mut sa = (family as u16).to_ne_bytes().to_vec();
        sa.extend_from_slice(&[0, 0]);
        if family == libc::AF_INET6 {
            if ip.len() != 16 {
                return Err(bad());
            }
            sa.extend_from_slice(&[0; 4]);
            sa.extend_from_slice(&ip);
            sa.extend_from_slice(&[0; 4]);
        } else {
            if ip.len() != 4 {
                return Err(bad());
            }
            sa.extend_from_slice(&ip);
            sa.extend_from_slice(&[0; 8]);
        }
        return Ok(Some(sa));
    }
    // Listed once bound: a ping socket that never was (connect binds it) is not
    // connected either.
    Ok(None)
}

/// The socket behind `fd` (a duplicate of descriptor of process `pid`) if it is a raw
/// IP socket or a ping socket, else `None`.
pub fn inspect(pid: i32, fd: &OwnedFd) -> Result<Option<RawSock>> {
    let family = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    let protocol = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32;
    let ping = typ == libc::SOCK_DGRAM
        && ((family == libc::AF_INET && protocol == libc::IPPROTO_ICMP)
            || (family == libc::AF_INET6 && protocol == libc::IPPROTO_ICMPV6));
    if !(family == libc::AF_INET || family == libc::AF_INET6) || !(ping || typ == libc::SOCK_RAW) {
        return Ok(None);
    }
    let ino = std::os::fd::AsFd::as_fd(fd);
    let ino = rustix::fs::fstat(ino)
        .map_err(|e| super::rerr("fstat of a socket", e))?
        .st_ino;
    let peer = proc_peer(pid, family, typ, ino)?.unwrap_or_default();
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
            return Err(SysError::io("peek at a raw socket", e));
        }
        false
    };
    Ok(Some(RawSock {
        family,
        typ,
        protocol,
        local: sockname(fd, false)?,
        peer,
        v6only: family == libc::AF_INET6
            && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0,
        queued,
    }))
}

/// Whether ckpt (whose credentials the restore's stub has when it makes descriptors)
/// may make an ICMP ping socket of `family` here (net.ipv4.ping_group_range).
pub fn try_ping(family: i32) -> std::io::Result<()> {
    let proto = if family == libc::AF_INET6 {
        libc::IPPROTO_ICMPV6
    } else {
        libc::IPPROTO_ICMP
    };
    // SAFETY: plain socket call; the descriptor is owned right away.
    let s = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, proto) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `s` is a new descriptor of ours; dropping it closes it.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) });
    Ok(())
}
