//! Raw IP sockets and ICMP ping sockets: family, type, protocol, bound address (a ping
//! socket's ICMP identifier is its port), connected peer and options. One with a packet
//! waiting to be read is refused: only the kernel's receive path queues a packet into
//! such a socket (a ping socket takes the echo replies it matches by identifier, a raw
//! socket a copy of every packet of its protocol), so putting one back would mean
//! sending it into the host again, forged from its source, where every raw socket of
//! its protocol would get a copy too and the kernel would handle it once more (answer
//! an echo request again, count it).

use crate::error::{DumpError, DumpResult, RestoreError, RestoreResult};
use crate::kinds::fd::tcp::{inet_addr, set_tcp_opts, show_inet, tcp_opts_ok};
use crate::kinds::fd::udp::check_sockaddr;
use crate::model::{Fd, FdKind, InetRawState, SockOpts};
use crate::remote::{Ctx, SockAddr, SockOpt};
use crate::sys;

// ---- collect (dump) ----

/// A raw or ping socket (`dup` a duplicate of it) sets the kind of `f`; `Ok(false)`
/// when it is neither.
pub(crate) fn collect(
    pid: i32,
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<bool> {
    let Some(r) = sys::inetraw::inspect(pid, dup)? else {
        return Ok(false);
    };
    if r.queued {
        return Err(refuse(&format!(
            "{} with a packet waiting to be read: only the kernel's receive path queues \
             a packet there, and putting it back would mean sending it into the host \
             again, forged from its source, where every raw socket of its protocol would \
             get it too and the kernel would handle it once more",
            what(r.typ, r.family, r.protocol)
        )));
    }
    let o = sys::sockdiag::sock_opts(dup, false)?;
    let opts = super::tcp::extra_opts(dup, r.family, r.typ, r.protocol)?;
    f.kind = FdKind::InetRaw {
        sock: Box::new(InetRawState {
            family: r.family,
            typ: r.typ,
            protocol: r.protocol,
            local: r.local,
            peer: r.peer,
            v6only: r.v6only,
            sock: SockOpts {
                sndbuf: o.sndbuf,
                rcvbuf: o.rcvbuf,
                passcred: false,
                reuseaddr: o.reuseaddr,
                reuseport: o.reuseport,
                buf_lock: o.buf_lock,
            },
            opts,
        }),
        flags,
    };
    Ok(true)
}

fn what(typ: i32, family: i32, protocol: i32) -> String {
    let v = if family == libc::AF_INET6 {
        "IPv6"
    } else {
        "IPv4"
    };
    if typ == libc::SOCK_DGRAM {
        format!("an ICMP ping socket ({v})")
    } else {
        format!("a raw {v} socket (protocol {protocol})")
    }
}

// ---- checks (plan) ----

/// A record restore can build.
pub(crate) fn raw_ok(r: &InetRawState) -> bool {
    let len = match r.family {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        _ => return false,
    };
    let ping = match r.family {
        libc::AF_INET => libc::IPPROTO_ICMP,
        _ => libc::IPPROTO_ICMPV6,
    };
    (r.typ == libc::SOCK_RAW || (r.typ == libc::SOCK_DGRAM && r.protocol == ping))
        && (0..256).contains(&r.protocol)
        && r.local.len() == len
        && (r.peer.is_empty() || r.peer.len() == len)
        && tcp_opts_ok(&r.opts)
}

/// A ping socket can be made here: the stub makes it with ckpt's credentials, whose
/// group net.ipv4.ping_group_range must hold.
pub(crate) fn check_ping(r: &InetRawState, fd: i32, problems: &mut Vec<crate::error::Problem>) {
    if r.typ != libc::SOCK_DGRAM {
        return;
    }
    if let Err(e) = sys::inetraw::try_ping(r.family) {
        crate::kinds::check::p(
            problems,
            "ping-socket",
            format!(
                "descriptor {fd}: an ICMP ping socket cannot be made here ({e}): \
                 net.ipv4.ping_group_range must hold ckpt's group"
            ),
        );
    }
}

/// What `inspect` says of one.
pub(crate) fn describe(r: &InetRawState) -> String {
    format!(
        "{} on {}{}",
        what(r.typ, r.family, r.protocol),
        show_inet(&r.local),
        if r.peer.is_empty() {
            String::new()
        } else {
            format!(" connected to {}", show_inet(&r.peer))
        }
    )
}

// ---- restore (stage) ----

/// A raw or ping socket: options (the reuse ones and IPV6_V6ONLY before bind), bound
/// as it was (a ping socket to its identifier), connected as it was.
pub(crate) fn create_inet_raw(cx: &mut Ctx<'_>, r: &InetRawState) -> RestoreResult<u64> {
    if !raw_ok(r) {
        return Err(RestoreError::Malformed("invalid raw or ping socket".into()));
    }
    check_sockaddr(r.family, &r.local)?;
    let n = cx.socket(
        "socket(raw/ping)",
        r.family,
        r.typ | libc::SOCK_CLOEXEC,
        r.protocol,
    )?;
    super::set_sock_opts(cx, n, &r.sock)?;
    // A raw socket has its protocol as its port from the start, which IPV6_V6ONLY
    // refuses (and is meaningless to it).
    if r.family == libc::AF_INET6 && r.typ != libc::SOCK_RAW {
        cx.setsockopt(n, &SockOpt::V6Only(r.v6only))?;
    }
    set_tcp_opts(cx, n, &r.opts)?;
    let bound = inet_addr(&r.local).is_some_and(|a| a.port() != 0 || !a.ip().is_unspecified());
    // A raw socket's address shows its protocol as the port: bind takes none.
    if bound {
        let mut a = r.local.clone();
        if r.typ == libc::SOCK_RAW {
            a[2..4].copy_from_slice(&[0, 0]);
        }
        cx.bind("bind raw/ping socket", n, &SockAddr::Raw(&a))?;
    }
    if !r.peer.is_empty() {
        check_sockaddr(r.family, &r.peer)?;
        cx.connect("connect raw/ping socket", n, &SockAddr::Raw(&r.peer))?;
    }
    Ok(n)
}
