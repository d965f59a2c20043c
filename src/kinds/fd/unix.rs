//! Unix sockets: pairs, listeners, datagram sockets, queued messages, names.

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::model::{Checkpoint, FdKind, Process, SocketPairState};
use crate::sys::{self, proc as procfs};

// ---- checks (plan) ----

/// Largest queued socket message, and most messages per socket (as dump reads them).
pub(crate) const MAX_MESSAGE: usize = sys::sockdiag::MAX_MESSAGE;
pub(crate) const MAX_MESSAGES: usize = sys::sockdiag::MAX_MESSAGES;

/// Socket pairs: a known type, bytes or messages (never both), bounded queues; returns
/// their IDs.
pub(crate) fn check_pairs(pairs: &[SocketPairState], problems: &mut Vec<Problem>) -> BTreeSet<u64> {
    let mut pair_ids = BTreeSet::new();
    for sp in pairs {
        let msgs_ok = |m: &[crate::model::SockMessage]| {
            m.len() <= MAX_MESSAGES
                && m.iter()
                    .all(|x| x.data.len() <= MAX_MESSAGE && x.from.len() <= 128)
                && m.iter().map(|x| x.data.len()).sum::<usize>() <= MAX_PIPE
        };
        let typ_ok = [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sp.typ);
        // Stream pairs carry bytes, the others messages: never both.
        let no_msgs = sp.msgs0.is_empty() && sp.msgs1.is_empty();
        let no_bytes = sp.data0.is_empty() && sp.data1.is_empty();
        let kind_ok = if sp.typ == libc::SOCK_STREAM {
            no_msgs
        } else {
            no_bytes
        };
        if !pair_ids.insert(sp.id)
            || !typ_ok
            || !kind_ok
            || sp.data0.len() > MAX_PIPE
            || sp.data1.len() > MAX_PIPE
            || !msgs_ok(&sp.msgs0)
            || !msgs_ok(&sp.msgs1)
        {
            check::p(
                problems,
                "malformed",
                format!("invalid socket pair {}", sp.id),
            );
        }
    }
    pair_ids
}

/// Names of the image's unix datagram sockets (connections and message senders must
/// be among them), each bound once.
pub(crate) fn dgram_names<'a>(
    procs: &'a [Process],
    problems: &mut Vec<Problem>,
) -> BTreeSet<&'a [u8]> {
    let mut dgram_names = BTreeSet::new();
    for f in procs.iter().flat_map(|q| q.fds.iter()) {
        if let FdKind::UnixDgram { sock, .. } = &f.kind {
            if f.shared_with.is_none()
                && !sock.name.is_empty()
                && !dgram_names.insert(&sock.name[..])
            {
                check::p(
                    problems,
                    "malformed",
                    "two unix datagram sockets are bound to one name".into(),
                );
            }
        }
    }
    dgram_names
}

/// A listening socket's name must be free: no one may listen there now, and a path may
/// hold at most a stale socket file (which restore replaces).
pub(crate) fn check_listen_name(name: &[u8], fd: i32, problems: &mut Vec<Problem>) {
    let shown = match name.split_first() {
        Some((0, rest)) => format!("@{}", check::show(rest)),
        _ => check::show(name),
    };
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks.values().any(|s| {
            s.state == crate::sys::sockdiag::STATE_LISTEN && s.name.as_deref() == Some(name)
        }) {
            check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: another process listens on unix socket {shown}"),
            );
            return;
        }
    }
    if name.first() == Some(&b'/') {
        let path = procfs::bytes_path(name);
        match std::fs::symlink_metadata(path) {
            Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: {shown} exists and is not a socket"),
            ),
            _ => {}
        }
        if !path.parent().is_some_and(|d| d.is_dir()) {
            check::p(
                problems,
                "file-missing",
                format!("descriptor {fd}: the directory of unix socket {shown} does not exist"),
            );
        }
    }
}

/// A unix datagram socket record that restore can build: names that fit a sockaddr_un,
/// a peer and message senders among the image's sockets, bounded messages, and a name
/// to send them to.
pub(crate) fn unix_dgram_ok(u: &crate::model::UnixDgramState, names: &BTreeSet<&[u8]>) -> bool {
    let name_ok = |n: &[u8]| n.len() <= 107 && (n.is_empty() || n[0] == 0 || n[0] == b'/');
    name_ok(&u.name)
        && name_ok(&u.peer_name)
        && (u.peer_name.is_empty() || names.contains(&u.peer_name[..]))
        && (u.msgs.is_empty() || !u.name.is_empty())
        && u.msgs.len() <= MAX_MESSAGES
        && u.msgs.iter().all(|m| {
            m.data.len() <= MAX_MESSAGE
                && (m.from.is_empty() || names.contains(&m.from[..]))
                && (u.peer_name.is_empty() || m.from == u.peer_name)
        })
        && u.msgs.iter().map(|m| m.data.len()).sum::<usize>() <= MAX_PIPE
}

/// A unix datagram socket's name must be free: no socket may be bound to it now, and a
/// path may hold at most a stale socket file (which restore replaces).
pub(crate) fn check_bound_name(name: &[u8], fd: i32, problems: &mut Vec<Problem>) {
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks.values().any(|s| {
            s.name.as_deref().is_some_and(|n| {
                let mut n = n.to_vec();
                if n.first() != Some(&0) {
                    while n.last() == Some(&0) {
                        n.pop();
                    }
                }
                n == name
            })
        }) {
            let shown = match name.split_first() {
                Some((0, rest)) => format!("@{}", check::show(rest)),
                _ => check::show(name),
            };
            check::p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: a socket is bound to unix socket name {shown} now"),
            );
            return;
        }
    }
    // The rest is as for a listener's name (the path's directory, a non-socket file).
    check_listen_name(name, fd, problems);
}

/// A unix socket name as `inspect` shows it (`@` for an abstract name).
fn shown_name(n: &[u8]) -> String {
    match n.split_first() {
        None => "(unnamed)".to_string(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(n).into_owned(),
    }
}

/// What `inspect` says of a unix datagram socket.
pub(crate) fn describe_dgram(u: &crate::model::UnixDgramState) -> String {
    let shown = shown_name;
    format!(
        "unix datagram socket {}{} ({} messages queued, {} bytes)",
        shown(&u.name),
        if u.peer_name.is_empty() {
            String::new()
        } else {
            format!(" connected to {}", shown(&u.peer_name))
        },
        u.msgs.len(),
        u.msgs.iter().map(|m| m.data.len()).sum::<usize>()
    )
}

/// What `inspect` says of one end of a socket pair.
pub(crate) fn describe_pair(ckpt: &Checkpoint, id: u64, end: u8) -> String {
    let queued = ckpt
        .socketpairs
        .iter()
        .find(|p| p.id == id)
        .map(|p| {
            let (data, msgs) = if end == 0 {
                (&p.data0, &p.msgs0)
            } else {
                (&p.data1, &p.msgs1)
            };
            let typ = match p.typ {
                libc::SOCK_DGRAM => "datagram ",
                libc::SOCK_SEQPACKET => "seqpacket ",
                _ => "",
            };
            if p.typ == libc::SOCK_STREAM {
                format!("{typ}{} bytes", data.len())
            } else {
                let bytes: usize = msgs.iter().map(|m| m.data.len()).sum();
                format!("{typ}{} messages, {bytes} bytes", msgs.len())
            }
        })
        .unwrap_or_default();
    format!("unix socket pair {id}, end {end} ({queued} queued to it)")
}

/// What `inspect` says of a listening unix socket.
pub(crate) fn describe_listen(name: &[u8], backlog: u32) -> String {
    let shown = match name.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(name).into_owned(),
    };
    format!("unix socket listening on {shown} (backlog {backlog})")
}
