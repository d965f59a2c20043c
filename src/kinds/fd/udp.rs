//! UDP sockets: addresses, options, queued datagrams.

use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::tcp::{inet_addr, show_inet};
use crate::kinds::fd::unix::MAX_MESSAGES;
use crate::sys;

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
    if let Err(e) = std::net::UdpSocket::bind(addr) {
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
