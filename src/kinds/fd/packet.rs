//! Packet sockets (AF_PACKET, SOCK_RAW or SOCK_DGRAM): protocol, bound interface,
//! PACKET_* options and a classic filter. One with a packet waiting to be read, a ring
//! (PACKET_RX_RING/TX_RING), a fanout group, an interface membership or an eBPF filter
//! is refused at dump.

use crate::error::{DumpError, DumpResult, RestoreError, RestoreResult};
use crate::kinds::fd::tcp::{set_tcp_opts, tcp_opts_ok};
use crate::model::{Fd, FdKind, IntSockOpt, PacketState, SockOpts};
use crate::remote::{Ctx, SockOpt};
use crate::sys;

/// BPF_MAXINSNS (linux/bpf_common.h): the longest classic filter the kernel takes.
const BPF_MAXINSNS: usize = 4096;

// ---- collect (dump) ----

/// A packet socket (`dup` a duplicate of it) sets the kind of `f`; `Ok(false)` when it
/// is not one.
pub(crate) fn collect(
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    refuse: &dyn Fn(&str) -> DumpError,
) -> DumpResult<bool> {
    let Some(p) = sys::packet::inspect(dup)? else {
        return Ok(false);
    };
    let what = what(p.typ, p.protocol, &p.ifname);
    let no = |why: &str| Err(refuse(&format!("{what} {why}")));
    if p.queued != 0 {
        return no("with a packet waiting to be read (it cannot be put back as it was)");
    }
    if p.fanout != 0 {
        return no(&format!(
            "in fanout group {} (PACKET_FANOUT): the group's other members are not restored \
             with it",
            p.fanout & 0xffff
        ));
    }
    if p.rings {
        return no("with a memory-mapped ring (PACKET_RX_RING/PACKET_TX_RING): not restored yet");
    }
    if p.memberships {
        return no(
            "with an interface membership (PACKET_ADD_MEMBERSHIP: promiscuous or multicast): \
             not restored yet",
        );
    }
    if p.filter == [0xff] {
        return no("with an eBPF filter attached (it cannot be read back)");
    }
    let o = sys::sockdiag::sock_opts(dup, false)?;
    let opts = super::tcp::extra_opts(dup, libc::AF_PACKET, p.typ, 0)?;
    f.kind = FdKind::Packet {
        sock: Box::new(PacketState {
            typ: p.typ,
            protocol: p.protocol,
            ifindex: p.ifindex,
            ifname: p.ifname,
            packet_opts: p
                .opts
                .into_iter()
                .map(|(name, value)| IntSockOpt {
                    level: libc::SOL_PACKET,
                    name,
                    value,
                })
                .collect(),
            opts,
            sock: SockOpts {
                sndbuf: o.sndbuf,
                rcvbuf: o.rcvbuf,
                passcred: false,
                reuseaddr: false,
                reuseport: false,
                buf_lock: o.buf_lock,
            },
            filter: p.filter,
            filter_locked: p.filter_locked,
        }),
        flags,
    };
    Ok(true)
}

fn what(typ: i32, protocol: u16, ifname: &str) -> String {
    let t = if typ == libc::SOCK_DGRAM {
        "datagram"
    } else {
        "raw"
    };
    let on = if ifname.is_empty() {
        "every interface".to_string()
    } else {
        ifname.to_string()
    };
    format!(
        "a packet socket ({t}, protocol {:#06x}, on {on})",
        u16::from_be(protocol)
    )
}

// ---- checks (plan) ----

/// A record restore can build.
pub(crate) fn packet_ok(p: &PacketState) -> bool {
    (p.typ == libc::SOCK_RAW || p.typ == libc::SOCK_DGRAM)
        && p.ifindex >= 0
        && (p.ifindex == 0) == p.ifname.is_empty()
        && p.packet_opts.iter().all(|o| {
            o.level == libc::SOL_PACKET && sys::packet::PACKET_OPTS.iter().any(|k| k.0 == o.name)
        })
        && tcp_opts_ok(&p.opts)
        && p.filter.len() % 8 == 0
        && p.filter.len() / 8 <= BPF_MAXINSNS
}

/// The interface a packet socket is bound to must be here, with the same index (a
/// program may keep the index it bound to).
pub(crate) fn check_iface(p: &PacketState, fd: i32, problems: &mut Vec<crate::error::Problem>) {
    if p.ifindex == 0 {
        return;
    }
    match sys::packet::ifindex_of(&p.ifname) {
        Some(i) if i == p.ifindex => {}
        found => crate::kinds::check::p(
            problems,
            "interface",
            format!(
                "descriptor {fd}: a packet socket bound to interface {} (index {}), which {}",
                p.ifname,
                p.ifindex,
                match found {
                    Some(i) => format!("has index {i} here"),
                    None => "is not here".to_string(),
                }
            ),
        ),
    }
}

/// What `inspect` says of one.
pub(crate) fn describe(p: &PacketState) -> String {
    let mut s = what(p.typ, p.protocol, &p.ifname);
    if !p.filter.is_empty() {
        s += &format!(", filter of {} instructions", p.filter.len() / 8);
    }
    s
}

// ---- restore (stage) ----

/// A packet socket: made with its protocol, its options (PACKET_VERSION first), its
/// filter, bound to its interface.
pub(crate) fn create_packet(cx: &mut Ctx<'_>, p: &PacketState) -> RestoreResult<u64> {
    if !packet_ok(p) {
        return Err(RestoreError::Malformed("invalid packet socket".into()));
    }
    let n = cx.socket(
        "socket(AF_PACKET)",
        libc::AF_PACKET,
        p.typ | libc::SOCK_CLOEXEC,
        i32::from(p.protocol),
    )?;
    super::set_sock_opts(cx, n, &p.sock)?;
    for o in &p.packet_opts {
        cx.setsockopt(n, &SockOpt::Int(o.level, o.name, o.value))?;
    }
    set_tcp_opts(cx, n, &p.opts)?;
    if !p.filter.is_empty() {
        cx.attach_filter(n, &p.filter)?;
        if p.filter_locked {
            cx.setsockopt(n, &SockOpt::Int(libc::SOL_SOCKET, libc::SO_LOCK_FILTER, 1))?;
        }
    }
    if p.ifindex != 0 {
        // struct sockaddr_ll: family, protocol, ifindex, then zeros (20 bytes)
        let mut a = (libc::AF_PACKET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&p.protocol.to_ne_bytes());
        a.extend_from_slice(&p.ifindex.to_ne_bytes());
        a.resize(20, 0);
        cx.bind("bind packet socket", n, &crate::remote::SockAddr::Raw(&a))?;
    }
    Ok(n)
}
