//! UDP sockets: what dump reads of one (addresses, options, queued datagrams), and how
//! restore puts queued datagrams back (a raw socket that sends each one again from its
//! original source address to the restored socket).

use std::os::fd::{AsRawFd, OwnedFd};

use super::sockdiag::{self, SockOpts};
use super::tcp::{getsockopt_u32, sockname};
use super::{Result, SysError, check};

/// A UDP socket as dump reads it.
#[derive(Debug, Clone, Default)]
pub struct UdpSock {
    pub family: i32,
    pub local: Vec<u8>,
    /// Empty when not connected.
    pub peer: Vec<u8>,
    pub v6only: bool,
    pub opts: SockOpts,
    /// `IP_FREEBIND`, `IP_TRANSPARENT` (at the IP level: an IPv6 socket shares them).
    pub freebind: bool,
    pub transparent: bool,
}

/// The socket behind `fd` if it is a UDP one (IPv4 or IPv6), else `None`.
pub fn inspect(fd: &OwnedFd) -> Result<Option<UdpSock>> {
    let domain = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32;
    let typ = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_TYPE)? as i32;
    let proto = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? as i32;
    if !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || typ != libc::SOCK_DGRAM
        || proto != libc::IPPROTO_UDP
    {
        return Ok(None);
    }
    let peer = match sockname(fd, true) {
        Ok(p) => p,
        Err(SysError::Os { source, .. }) if source.raw_os_error() == Some(libc::ENOTCONN) => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    Ok(Some(UdpSock {
        family: domain,
        local: sockname(fd, false)?,
        peer,
        v6only: domain == libc::AF_INET6
            && getsockopt_u32(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0,
        opts: sockdiag::sock_opts(fd, false)?,
        freebind: getsockopt_u32(fd, libc::SOL_IP, libc::IP_FREEBIND)? != 0,
        transparent: getsockopt_u32(fd, libc::SOL_IP, libc::IP_TRANSPARENT)? != 0,
    }))
}

/// Whether a UDP socket of `family` with `IP_FREEBIND` set when `freebind` could bind
/// `addr` here now (`Err`: why not).
pub fn try_bind(family: i32, addr: std::net::SocketAddr, freebind: bool) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, bind, socket, sockopt};
    let fam = if family == libc::AF_INET6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let s = socket(fam, SocketType::DGRAM, None)?;
    if freebind {
        sockopt::set_ip_freebind(&s, true)?;
    }
    bind(&s, &addr)?;
    Ok(())
}

/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65_507;

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

/// Internet checksum (RFC 1071) over `parts`, folded, as it goes on the wire.
fn inet_csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for p in parts {
        for c in p.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    if c == 0 { 0xffff } else { c }
}

/// Send `data` to the UDP socket bound at `to` as if it came from `from` (raw socket
/// addresses of the same family): a raw IP packet with our own headers, delivered
/// through the local stack. Needs CAP_NET_RAW. Used to put the datagrams that were
/// queued on a socket at dump back into the restored socket's queue, with their source.
pub fn inject_datagram(family: i32, from: &[u8], to: &[u8], data: &[u8]) -> Result<()> {
    let bad = || SysError::Other("invalid address of a queued UDP datagram".into());
    if data.len() > MAX_DATAGRAM {
        return Err(SysError::Other("queued UDP datagram too large".into()));
    }
    let sport = be16(from, 2).ok_or_else(bad)?;
    let dport = be16(to, 2).ok_or_else(bad)?;
    let ulen = (8 + data.len()) as u16;
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let (pkt, dest) = if family == libc::AF_INET {
        let (src, dst) = (
            from.get(4..8).ok_or_else(bad)?,
            to.get(4..8).ok_or_else(bad)?,
        );
        // The kernel fills in the IP checksum, total length and ID of a raw packet;
        // a UDP checksum of 0 means "none" over IPv4.
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
            libc::IPPROTO_UDP as u8,
            0,
            0,
        ];
        ip.extend_from_slice(src);
        ip.extend_from_slice(dst);
        ip.extend_from_slice(&udp);
        let mut sa = vec![0u8; 16];
        sa[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[4..8].copy_from_slice(dst);
        (ip, sa)
    } else if family == libc::AF_INET6 {
        let (src, dst) = (
            from.get(8..24).ok_or_else(bad)?,
            to.get(8..24).ok_or_else(bad)?,
        );
        // Over IPv6 the UDP checksum is mandatory (pseudo-header: addresses, length,
        // next header).
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        pseudo.extend_from_slice(&u32::from(ulen).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, libc::IPPROTO_UDP as u8]);
        let c = inet_csum(&[&pseudo, &udp]);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&ulen.to_be_bytes());
        ip.extend_from_slice(&[libc::IPPROTO_UDP as u8, 64]);
        ip.extend_from_slice(src);
        ip.extend_from_slice(dst);
        ip.extend_from_slice(&udp);
        let mut sa = vec![0u8; 28];
        sa[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        sa[8..24].copy_from_slice(dst);
        (ip, sa)
    } else {
        return Err(bad());
    };
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};
    let af = if family == libc::AF_INET6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let sock = rustix::net::socket_with(
        af,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(ipproto::RAW),
    )
    .map_err(|e| super::rerr("socket(SOCK_RAW)", e))?;
    if family == libc::AF_INET6 {
        super::tcp::setsockopt_u32(&sock, libc::IPPROTO_IPV6, libc::IPV6_HDRINCL, 1)?;
    }
    // SAFETY: the packet and the destination address are our own buffers of the given
    // lengths.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            dest.as_ptr().cast(),
            dest.len() as libc::socklen_t,
        )
    };
    check(n as libc::c_long, || {
        "send a queued UDP datagram again".into()
    })?;
    Ok(())
}
