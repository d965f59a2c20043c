//! Sockets of processes in a network namespace a process below the tree's root made
//! (a service that unshares its network namespace and serves on its loopback there):
//! collected from a thread of ckpt that joined that namespace, where sock_diag lists
//! its unix sockets and its abstract names are its own. Restore makes each socket in
//! the stub of the process that holds it, which is in that namespace by then
//! (`kinds::ns::enter_child_namespaces`): UDP sockets, TCP listeners, unconnected
//! sockets and connections (rebuilt in repair mode there), unix pairs, listeners,
//! clients waiting on them and datagram sockets.
//!
//! Refused at dump, naming the process and the descriptor: a socket made in another
//! namespace than its holder's (restore makes it in its holder's), the two ends of a
//! unix connection in different namespaces (restore makes both in one process), a TCP
//! connection there whose peer is not a connection of the tree in the same namespace
//! (the namespace is made anew: a peer outside the tree, or one its process closed,
//! would not be there), and sockets of other kinds (raw, packet, netlink).

use super::collect::{resolve_process_sockets, socket_ino};
use super::unix::UnixTable;
use crate::error::DumpResult;
use crate::kinds::ns::inode_of;
use crate::kinds::unsupported;
use crate::model::{FdKind, Process};
use crate::sys;
use std::collections::{BTreeMap, BTreeSet};

/// The lock a dump that kills the tree makes at the freeze, before the queues are read,
/// of the TCP connections in each network namespace other than the root's that the
/// tree's live processes (`pids`: host PIDs, the root first, true for those that are
/// not zombies) are in: a table of ckpt's own with the owner flag in that namespace
/// (`sys::netlock::Handover`, made from a thread of ckpt that joins it; gone with
/// ckpt, or with the namespace when the tree dies), which drops the segments between
/// the tree's ends there, so that none moves one end's sequence numbers after its
/// queues were read (a delayed acknowledgment, data held back by Nagle's algorithm
/// and sent when it comes). Restore needs none there: the namespace is made anew and
/// its connections stay in repair mode, sending nothing, until the point of no return.
/// A namespace that cannot be locked (no nf_tables) is dumped unlocked, as the root's.
pub(crate) fn lock_at_freeze(pids: &[(i32, bool)]) -> Vec<sys::netlock::Handover> {
    let Some(root_net) = pids
        .first()
        .and_then(|&(r, _)| sys::ns::inode(r, "net").ok())
    else {
        return Vec::new();
    };
    let mut groups: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    for &(p, _) in pids.iter().filter(|(_, live)| *live) {
        if let Ok(n) = sys::ns::inode(p, "net") {
            if n != root_net {
                groups.entry(n).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    for members in groups.values() {
        let Some(&first) = members.first() else {
            continue;
        };
        let held = sys::ns::inside(first, &["net"], || {
            let conns = super::tcp::live_connections(members);
            Ok(sys::netlock::Handover::hold_as("ckpt_dump", &conns).unwrap_or_default())
        });
        if let Ok(Some(h)) = held {
            out.push(h);
        }
    }
    out
}

/// The table [`lock_at_freeze`] makes, as `sys::rtnl::nft_tables` names it: not the
/// namespace's own (`kinds::ns::net` leaves it out).
pub(crate) fn dump_lock_table() -> String {
    format!("inet ckpt_dump_{}", std::process::id())
}

/// The network namespaces processes below the root made (their inodes; `below` says
/// which of `procs` is in one), with their unix sockets added to `unix`: read by the
/// calling thread joined to each, then to the root's again.
pub(super) fn add_namespaces(
    procs: &[Process],
    below: &[bool],
    unix: &mut UnixTable,
) -> DumpResult<BTreeSet<u64>> {
    let root = procs.first().map_or(0, |r| r.pid);
    let mut nets = BTreeSet::new();
    for (p, &b) in procs.iter().zip(below) {
        let Some(ns) = inode_of(p, "net").filter(|_| b) else {
            continue;
        };
        if !nets.insert(ns) {
            continue;
        }
        sys::ns::join(p.pid, "net")?;
        let r = unix.add_namespace();
        sys::ns::join(root, "net")?;
        r?;
    }
    Ok(nets)
}

/// Process `p`, in the root's network namespace, holds no socket made in one of the
/// namespaces processes below the root made (`nets`): restore would make it in the
/// root's.
pub(super) fn made_here(p: &Process, nets: &BTreeSet<u64>) -> DumpResult<()> {
    if nets.is_empty() {
        return Ok(());
    }
    for f in &p.fds {
        let Some(ino) = socket_ino(&f.kind) else {
            continue;
        };
        let dup = sys::process::steal_fd(p.pid, f.fd)?;
        let made_in = sys::ns::socket_netns(&dup)?;
        if nets.contains(&made_in) {
            return Err(unsupported(
                p.pid,
                format!(
                    "file descriptor {} (socket:[{ino}]) was made in the network namespace \
                     net:[{made_in}] a process below the tree's root made, and it is held \
                     outside that namespace; restore makes a socket in the namespace of \
                     the process that holds it, so this is not restored",
                    f.fd
                ),
            ));
        }
    }
    Ok(())
}

/// The sockets of process `p`, in a network namespace a process below the root made
/// (the calling thread joined it): each must have been made there, and be of a kind
/// restore makes there (see the module's comment).
pub(super) fn below_root_sockets(
    p: &mut Process,
    unix: &mut UnixTable,
    repair: &mut Vec<(std::os::fd::OwnedFd, bool)>,
    external: bool,
) -> DumpResult<()> {
    let pid = p.pid;
    let net = inode_of(p, "net").unwrap_or(0);
    for f in &p.fds {
        let Some(ino) = socket_ino(&f.kind) else {
            continue;
        };
        let refuse = |what: String| {
            unsupported(
                pid,
                format!(
                    "file descriptor {} (socket:[{ino}]) {what}; it is in a network \
                     namespace (net:[{net}]) a process below the tree's root made",
                    f.fd
                ),
            )
        };
        let dup = sys::process::steal_fd(pid, f.fd)?;
        let made_in = sys::ns::socket_netns(&dup)?;
        if made_in != net {
            return Err(refuse(format!(
                "was made in another network namespace (net:[{made_in}]), and restore \
                 makes a socket in its holder's"
            )));
        }
        if !unix.lists(ino)
            && sys::tcp::getsockopt_u32(&dup, libc::SOL_SOCKET, libc::SO_DOMAIN)? as i32
                == libc::AF_UNIX
        {
            return Err(refuse(
                "is a unix socket that sock_diag does not list in its namespace".into(),
            ));
        }
    }
    let sockets: Vec<i32> = p
        .fds
        .iter()
        .filter(|f| socket_ino(&f.kind).is_some())
        .map(|f| f.fd)
        .collect();
    resolve_process_sockets(p, unix, repair, external)?;
    for f in p.fds.iter().filter(|f| sockets.contains(&f.fd)) {
        if !matches!(
            f.kind,
            FdKind::Udp { .. }
                | FdKind::TcpListen { .. }
                | FdKind::TcpUnconnected { .. }
                | FdKind::TcpConn { .. }
                | FdKind::UnixPair { .. }
                | FdKind::UnixListen { .. }
                | FdKind::UnixPending { .. }
                | FdKind::UnixDgram { .. }
        ) {
            return Err(unsupported(
                pid,
                format!(
                    "file descriptor {} is a socket of a kind not restored in a network \
                     namespace (net:[{net}]) a process below the tree's root made (a raw, \
                     packet or netlink socket, or one connected outside the tree); only \
                     UDP, TCP and unix sockets between processes of the tree are",
                    f.fd
                ),
            ));
        }
    }
    Ok(())
}

/// Across the tree (`below` says which of `procs` is in a network namespace a process
/// below the root made): the two ends of each unix connection are held in one network
/// namespace, and each TCP connection in such a namespace has its peer among the
/// tree's connections there.
pub(crate) fn check_peers(procs: &[Process], below: &[bool]) -> DumpResult<()> {
    if !below.iter().any(|&b| b) {
        return Ok(());
    }
    let mut pair_nets: BTreeMap<u64, (u64, i32, i32)> = BTreeMap::new();
    let mut conns: BTreeSet<(u64, &[u8], &[u8])> = BTreeSet::new();
    for (p, &b) in procs.iter().zip(below) {
        let net = inode_of(p, "net").unwrap_or(0);
        for f in &p.fds {
            match &f.kind {
                FdKind::UnixPair { id, .. } => {
                    let &mut (first, fp, ffd) = pair_nets.entry(*id).or_insert((net, p.pid, f.fd));
                    if first != net {
                        return Err(unsupported(
                            p.pid,
                            format!(
                                "file descriptor {} is a unix socket connected to descriptor \
                                 {ffd} of process {fp}, which is in another network \
                                 namespace (net:[{first}], this one net:[{net}]), one of them \
                                 made by a process below the tree's root; restore makes both \
                                 ends in one process, so this is not restored",
                                f.fd
                            ),
                        ));
                    }
                }
                FdKind::TcpConn { conn, .. } if b => {
                    conns.insert((net, conn.local.as_slice(), conn.peer.as_slice()));
                }
                _ => {}
            }
        }
    }
    for (p, &b) in procs.iter().zip(below) {
        if !b {
            continue;
        }
        let net = inode_of(p, "net").unwrap_or(0);
        for f in &p.fds {
            let FdKind::TcpConn { conn, .. } = &f.kind else {
                continue;
            };
            if !conns.contains(&(net, conn.peer.as_slice(), conn.local.as_slice())) {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "file descriptor {} is the TCP connection {} -> {} in the network \
                         namespace net:[{net}] a process below the tree's root made, whose \
                         peer is not a connection the tree holds there (a socket its \
                         process closed, or one held outside the tree); restore makes that \
                         namespace anew, without it, so this is not restored",
                        f.fd,
                        super::tcp::show_inet(&conn.local),
                        super::tcp::show_inet(&conn.peer)
                    ),
                ));
            }
        }
    }
    Ok(())
}
