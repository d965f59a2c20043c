//! Netlink sockets (route, uevent, generic, sock_diag):
//! protocol, port id, multicast groups, connected destination and options. A socket
//! with messages waiting to be read is refused: they came from the kernel (sender port
//! 0), and a message a process sends carries that process's socket's port as its
//! sender, so none could be put back as it was.

use crate::error::{DumpError, DumpResult, Problem, RestoreError, RestoreResult};
use crate::kinds::check;
use crate::model::{Fd, FdKind, NetlinkState};
use crate::remote::{Ctx, SockAddr, SockOpt};
use crate::sys;

// ---- collect (dump) ----

/// A netlink socket (`dup` a duplicate of it) sets the kind of `f`; `Ok(false)` when it
/// is not one.
pub(crate) fn collect(
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<bool> {
    let Some(n) = sys::netlink::inspect(dup)? else {
        return Ok(false);
    };
    let what = sys::tcp::socket_kind(dup)?;
    if !PROTOCOLS.contains(&n.protocol) {
        return Err(refuse(&format!(
            "{what}: of the netlink protocols only route, uevent, generic and sock_diag \
             sockets are restored (the kernel keeps state of the others' sockets that \
             dump does not read)"
        )));
    }
    if n.queued {
        return Err(refuse(&format!(
            "{what} with messages waiting to be read: the kernel sent them (sender port \
             0), and a message sent to put one back would carry the sender's own port"
        )));
    }
    let o = sys::sockdiag::sock_opts(dup, true)?;
    f.kind = FdKind::Netlink {
        sock: Box::new(NetlinkState {
            protocol: n.protocol,
            typ: n.typ,
            portid: n.portid,
            groups: n.groups,
            dst_portid: n.dst_portid,
            dst_group: n.dst_group,
            nl_opts: n.opts,
            opts: super::unix::unix_opts(&o),
        }),
        flags,
    };
    Ok(true)
}

// ---- checks (plan) ----

/// The netlink protocols whose sockets restore brings back: their whole state is the
/// socket's own (port id, groups, options).
const PROTOCOLS: &[i32] = &[
    libc::NETLINK_ROUTE,
    libc::NETLINK_KOBJECT_UEVENT,
    libc::NETLINK_GENERIC,
    libc::NETLINK_SOCK_DIAG,
];

/// Most group words a record may have (groups up to 32 * 64).
const MAX_GROUP_WORDS: usize = 64;

/// A netlink record restore can build.
pub(crate) fn netlink_ok(n: &NetlinkState) -> bool {
    (n.typ == libc::SOCK_RAW || n.typ == libc::SOCK_DGRAM)
        && PROTOCOLS.contains(&n.protocol)
        && n.groups.len() <= MAX_GROUP_WORDS
        && n.nl_opts
            .iter()
            .all(|o| sys::netlink::NETLINK_OPTS.iter().any(|k| k.0 == *o))
}

/// A bound netlink socket's port id must be free here.
pub(crate) fn check_portid(n: &NetlinkState, fd: i32, problems: &mut Vec<Problem>) {
    if n.portid == 0 {
        return;
    }
    if let Err(e) = sys::netlink::try_bind(n.protocol, n.portid) {
        check::p(
            problems,
            "address-in-use",
            format!(
                "descriptor {fd}: netlink port id {} (protocol {}) cannot be bound here: {e}",
                n.portid, n.protocol
            ),
        );
    }
}

/// What `inspect` says of a netlink socket.
pub(crate) fn describe(n: &NetlinkState) -> String {
    let groups: Vec<String> = n
        .groups
        .iter()
        .enumerate()
        .flat_map(|(w, bits)| {
            (0..32)
                .filter(move |i| bits & (1 << i) != 0)
                .map(move |i| (32 * w + i + 1).to_string())
        })
        .collect();
    format!(
        "netlink socket (protocol {}) port {}{}",
        n.protocol,
        n.portid,
        if groups.is_empty() {
            String::new()
        } else {
            format!(", groups {}", groups.join(","))
        }
    )
}

// ---- restore (stage) ----

fn sockaddr_nl(portid: u32, groups: u32) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[0..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&portid.to_ne_bytes());
    a[8..12].copy_from_slice(&groups.to_ne_bytes());
    a
}

/// A netlink socket: options, its port id, its groups, its destination.
pub(crate) fn create_netlink(cx: &mut Ctx<'_>, n: &NetlinkState) -> RestoreResult<u64> {
    if !netlink_ok(n) {
        return Err(RestoreError::Malformed("invalid netlink socket".into()));
    }
    let s = cx.socket(
        "socket(AF_NETLINK)",
        libc::AF_NETLINK,
        n.typ | libc::SOCK_CLOEXEC,
        n.protocol,
    )?;
    super::set_sock_opts(cx, s, &n.opts)?;
    for &o in &n.nl_opts {
        cx.setsockopt(s, &SockOpt::Int(libc::SOL_NETLINK, o, 1))?;
    }
    if n.portid != 0 {
        cx.bind(
            "bind netlink socket",
            s,
            &SockAddr::Raw(&sockaddr_nl(n.portid, 0)),
        )?;
    }
    for (w, bits) in n.groups.iter().enumerate() {
        for i in 0..32 {
            if bits & (1 << i) != 0 {
                let group = (32 * w + i + 1) as i32;
                cx.setsockopt(
                    s,
                    &SockOpt::Int(libc::SOL_NETLINK, sys::netlink::ADD_MEMBERSHIP, group),
                )?;
            }
        }
    }
    if n.dst_portid != 0 || n.dst_group != 0 {
        cx.connect(
            "connect netlink socket",
            s,
            &SockAddr::Raw(&sockaddr_nl(n.dst_portid, n.dst_group)),
        )?;
    }
    Ok(s)
}
