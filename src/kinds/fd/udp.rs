//! UDP sockets: addresses, options, queued datagrams.

use super::unix::{peek_messages, peek_refusal};
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult, fault_point};
use crate::kinds::check;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::set_sock_opts;
use crate::kinds::fd::tcp::{inet_addr, show_inet};
use crate::kinds::fd::unix::MAX_MESSAGES;
use crate::model::{Fd, SockOpts, UdpState};
use crate::model::{FdKind, Process};
use crate::remote::{Ctx, SockAddr, SockOpt};
use crate::sys;
use crate::sys::sockdiag;

// ---- collect (dump) ----

/// A socket that is not TCP (`dup` a duplicate of it): a UDP socket, with its queued
/// datagrams, sets the kind of `f`; another kind is refused above the standard
/// descriptors (0-2).
pub(crate) fn collect(
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<()> {
    if let Some(u) = sys::udp::inspect(dup)? {
        let msgs = peek_messages(dup, false, false, None).map_err(|e| match e {
            sockdiag::PeekError::Sys(e) => DumpError::Sys(e),
            e => refuse(&peek_refusal(&e, "UDP socket")),
        })?;
        if msgs.iter().any(|m| m.data.len() > sys::udp::MAX_DATAGRAM) {
            return Err(refuse("a UDP socket with an oversized datagram"));
        }
        f.kind = FdKind::Udp {
            sock: Box::new(UdpState {
                family: u.family,
                local: u.local,
                peer: u.peer,
                v6only: u.v6only,
                opts: SockOpts {
                    sndbuf: u.opts.sndbuf,
                    rcvbuf: u.opts.rcvbuf,
                    passcred: false,
                    reuseaddr: u.opts.reuseaddr,
                    reuseport: u.opts.reuseport,
                    buf_lock: u.opts.buf_lock,
                },
                msgs,
                freebind: u.freebind,
                transparent: u.transparent,
                extra: Some(super::tcp::extra_opts(
                    dup,
                    u.family,
                    libc::SOCK_DGRAM,
                    libc::IPPROTO_UDP,
                )?),
            }),
            flags,
        };
    } else if f.fd > 2 {
        return Err(refuse(&sys::tcp::socket_kind(dup)?));
    }
    Ok(())
}

// ---- checks (plan) ----

/// A UDP socket record that restore can build: IPv4 or IPv6 addresses of the right
/// size, bounded queued datagrams with sources of the same family.
pub(crate) fn udp_ok(u: &crate::model::UdpState) -> bool {
    let len = match u.family {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        _ => return false,
    };
    u.local.len() == len
        && (u.peer.is_empty() || u.peer.len() == len)
        && u.msgs.len() <= MAX_MESSAGES
        && u.msgs.iter().all(|m| {
            m.data.len() <= sys::udp::MAX_DATAGRAM
                && m.from.len() == len
                && m.from.get(0..2) == Some(&(u.family as u16).to_ne_bytes()[..])
        })
        && u.msgs.iter().map(|m| m.data.len()).sum::<usize>() <= MAX_PIPE
        && u.extra.as_ref().is_none_or(super::tcp::tcp_opts_ok)
}

/// A bound UDP socket's address must be free here (sockets with SO_REUSEADDR or
/// SO_REUSEPORT may share it; those are left to the kernel at restore).
pub(crate) fn check_udp_addr(u: &crate::model::UdpState, fd: i32, problems: &mut Vec<Problem>) {
    if u.opts.reuseaddr || u.opts.reuseport {
        return;
    }
    let Some(addr) = inet_addr(&u.local) else {
        return;
    };
    if addr.port() == 0 {
        return;
    }
    // A socket bound with IP_FREEBIND or IP_TRANSPARENT may hold an address the host
    // does not have (restore sets them before bind): only the port must be free.
    let free = u.freebind || u.transparent;
    if let Err(e) = sys::udp::try_bind(u.family, addr, free) {
        check::p(
            problems,
            "address-in-use",
            format!("descriptor {fd}: UDP address {addr} cannot be bound here: {e}"),
        );
    }
}

/// What `inspect` says of a UDP socket.
pub(crate) fn describe(u: &crate::model::UdpState) -> String {
    format!(
        "UDP socket on {}{} ({} datagrams queued, {} bytes)",
        show_inet(&u.local),
        if u.peer.is_empty() {
            String::new()
        } else {
            format!(" connected to {}", show_inet(&u.peer))
        },
        u.msgs.len(),
        u.msgs.iter().map(|m| m.data.len()).sum::<usize>()
    )
}

// ---- restore (stage) ----

pub(crate) fn check_sockaddr(family: i32, addr: &[u8]) -> RestoreResult<()> {
    let want = if family == libc::AF_INET6 { 28 } else { 16 };
    if !(family == libc::AF_INET || family == libc::AF_INET6) || addr.len() != want {
        return Err(RestoreError::Malformed("invalid IP socket address".into()));
    }
    Ok(())
}

/// The port of a raw IPv4/IPv6 socket address (0 if there is none).
fn sockaddr_port(addr: &[u8]) -> u16 {
    addr.get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// A UDP socket: options (the reuse options before bind), its bound address and its
/// connected peer. Its queued datagrams are sent to it again by [`requeue_udp`] once
/// every process has its descriptors.
pub(crate) fn create_udp(cx: &mut Ctx<'_>, u: &crate::model::UdpState) -> RestoreResult<u64> {
    check_sockaddr(u.family, &u.local)?;
    if !u.peer.is_empty() {
        check_sockaddr(u.family, &u.peer)?;
    }
    let n = cx.socket(
        "socket(UDP)",
        u.family,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        0,
    )?;
    set_sock_opts(cx, n, &u.opts)?;
    if u.family == libc::AF_INET6 {
        cx.setsockopt(n, &SockOpt::V6Only(u.v6only))?;
    }
    // Before bind, which they allow to take an address the host does not have.
    if u.freebind {
        cx.setsockopt(n, &SockOpt::IpFreebind)?;
    }
    if u.transparent {
        cx.setsockopt(n, &SockOpt::IpTransparent)?;
    }
    // Never bound (and not connected): the kernel picks a port at the first send, as it
    // would have.
    if sockaddr_port(&u.local) != 0 {
        cx.bind("bind UDP socket", n, &SockAddr::Raw(&u.local))?;
    }
    if !u.peer.is_empty() {
        cx.connect("connect UDP socket", n, &SockAddr::Raw(&u.peer))?;
    }
    if let Some(o) = &u.extra {
        super::tcp::set_tcp_opts(cx, n, o)?;
    }
    Ok(n)
}

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

const MAPPED_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

/// The IPv4 socket address (sockaddr_in) of an IPv4-mapped IPv6 one (sockaddr_in6).
fn v4_mapped(a: &[u8]) -> Option<Vec<u8>> {
    if a.len() != 28 || a.get(8..20) != Some(&MAPPED_LOOPBACK[..12]) {
        return None;
    }
    let mut v = vec![0u8; 16];
    v[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v[2..4].copy_from_slice(&a[2..4]);
    v[4..8].copy_from_slice(&a[20..24]);
    Some(v)
}

/// Put the datagrams queued on the image's UDP sockets back, from their original
/// sources (see `sys::udp::inject_datagram`). A socket bound to the wildcard address
/// gets them on the loopback address.
pub(crate) fn requeue_udp(procs: &[Process]) -> RestoreResult<()> {
    for p in procs {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            let FdKind::Udp { sock: u, .. } = &f.kind else {
                continue;
            };
            let mut to = u.local.clone();
            if u.family == libc::AF_INET && to.get(4..8) == Some(&[0u8; 4][..]) {
                to[4..8].copy_from_slice(&[127, 0, 0, 1]);
            } else if u.family == libc::AF_INET6 && to.get(8..24) == Some(&[0u8; 16][..]) {
                to[23] = 1;
            }
            for m in &u.msgs {
                fault_point("requeue UDP datagram")?;
                // A dual-stack IPv6 socket receives IPv4 datagrams from IPv4-mapped
                // sources: those travel as IPv4 again (IPv6 drops such sources).
                let (family, from, to) = match (v4_mapped(&m.from), v4_mapped(&to)) {
                    (Some(f4), Some(t4)) => (libc::AF_INET, f4, t4),
                    (Some(f4), None) if to.get(8..24) == Some(&LOOPBACK6[..]) => {
                        let lo = v4_mapped(&[&to[..8], &MAPPED_LOOPBACK[..]].concat());
                        (libc::AF_INET, f4, lo.unwrap_or_default())
                    }
                    _ => (u.family, m.from.clone(), to.clone()),
                };
                // (From its network namespace: one a process below the root made is
                // not ckpt's.)
                let inject = || sys::udp::inject_datagram(family, &from, &to, &m.data);
                let sent = if crate::kinds::ns::net_below_root(procs, p) {
                    sys::ns::inside(p.pid, &["net"], inject)
                } else {
                    inject()
                };
                sent.map_err(|e| {
                    RestoreError::Stage(format!(
                        "process {} descriptor {}: a queued UDP datagram could not be put \
                         back: {e}",
                        p.pid, f.fd
                    ))
                })?;
            }
        }
    }
    Ok(())
}
