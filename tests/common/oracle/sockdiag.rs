//! `sock_diag` for unix sockets: a small netlink client of the harness's own.

use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------
// sock_diag for unix sockets (a small netlink client of the harness's own)

#[derive(Clone, Debug, Default)]
pub(super) struct UnixDiag {
    pub(super) kind: u8,
    pub(super) state: u8,
    pub(super) shutdown: u8,
    pub(super) peer: u64,
    pub(super) rqlen: u32,
    pub(super) wqlen: u32,
    pub(super) name: String,
    /// A listener's connections waiting to be accepted: their clients' inodes, in the
    /// order accept takes them (UNIX_DIAG_ICONS).
    pub(super) icons: Vec<u64>,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 16;

/// [`unix_diag`] of the network namespace process `pid` is in (unix sockets are listed
/// per network namespace): from a thread that joined it when it is not ours.
pub(super) fn unix_diag_in_net_of(pid: i32) -> Option<BTreeMap<u64, UnixDiag>> {
    in_net_of(pid, unix_diag).flatten()
}

/// [`tcp_diag`] of the network namespace process `pid` is in.
pub(super) fn tcp_diag_in_net_of(pid: i32) -> BTreeMap<u64, TcpDiag> {
    in_net_of(pid, tcp_diag).unwrap_or_default()
}

/// `f` run in the network namespace process `pid` is in: from a thread that joined it
/// when it is not ours. None if it cannot be joined.
fn in_net_of<T: Send + 'static>(pid: i32, f: fn() -> T) -> Option<T> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    let ours = std::fs::metadata("/proc/self/ns/net").ok()?;
    if theirs.metadata().ok()?.ino() == ours.ino() {
        return Some(f());
    }
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, which ends right after.
        if unsafe { libc::setns(theirs.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        Some(f())
    })
    .join()
    .ok()
    .flatten()
}

pub(super) fn unix_diag() -> Option<BTreeMap<u64, UnixDiag>> {
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if s < 0 {
        return None;
    }
    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // all states
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req[28..32].copy_from_slice(&show.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let sent = unsafe { libc::send(s, req.as_ptr().cast(), req.len(), 0) };
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 65536];
    let mut done = sent < 0;
    while !done {
        let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let mut m = &buf[..n as usize];
        while m.len() >= 16 {
            let len = u32::from_ne_bytes(m[0..4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(m[4..6].try_into().unwrap_or_default());
            if len < 16 || len > m.len() {
                break;
            }
            if ty == libc::NLMSG_DONE as u16 || ty == libc::NLMSG_ERROR as u16 {
                done = true;
                break;
            }
            let body = &m[16..len];
            if body.len() >= 16 {
                let mut d = UnixDiag {
                    kind: body[1],
                    state: body[2],
                    ..UnixDiag::default()
                };
                let ino = u64::from(u32::from_ne_bytes(
                    body[4..8].try_into().unwrap_or_default(),
                ));
                let mut a = &body[16..];
                while a.len() >= 4 {
                    let alen = u16::from_ne_bytes([a[0], a[1]]) as usize;
                    let aty = u16::from_ne_bytes([a[2], a[3]]);
                    if alen < 4 || alen > a.len() {
                        break;
                    }
                    let p = &a[4..alen];
                    match aty {
                        0 => {
                            d.name = if p.first() == Some(&0) {
                                format!("@{}", String::from_utf8_lossy(&p[1..]))
                            } else {
                                String::from_utf8_lossy(p)
                                    .trim_end_matches('\0')
                                    .to_string()
                            }
                        }
                        2 if p.len() >= 4 => {
                            d.peer = u64::from(u32::from_ne_bytes(
                                p[0..4].try_into().unwrap_or_default(),
                            ))
                        }
                        3 => {
                            d.icons = p
                                .chunks_exact(4)
                                .map(|c| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                                .collect()
                        }
                        4 if p.len() >= 8 => {
                            d.rqlen = u32::from_ne_bytes(p[0..4].try_into().unwrap_or_default());
                            d.wqlen = u32::from_ne_bytes(p[4..8].try_into().unwrap_or_default());
                        }
                        6 if !p.is_empty() => d.shutdown = p[0],
                        _ => {}
                    }
                    let step = (alen + 3) & !3;
                    a = &a[step.min(a.len())..];
                }
                out.insert(ino, d);
            }
            let step = (len + 3) & !3;
            m = &m[step.min(m.len())..];
        }
    }
    unsafe { libc::close(s) };
    Some(out)
}

// ---------------------------------------------------------------------------------------
// sock_diag for TCP sockets (inet_diag): what getsockopt and ioctls do not show

#[derive(Clone, Debug, Default)]
pub(super) struct TcpDiag {
    /// rcv_nxt - copied_seq: the bytes not read yet, and a FIN not read yet (a
    /// listener's: its accept queue's length).
    pub(super) rqueue: u32,
    /// A listener's: its backlog (sk_max_ack_backlog).
    pub(super) wqueue: u32,
    /// sk_shutdown (INET_DIAG_SHUTDOWN): RCV_SHUTDOWN 1, SEND_SHUTDOWN 2.
    pub(super) shutdown: u8,
    /// The state it is listed in (13, bound but inactive, for a socket that holds its
    /// port without listening or connecting).
    pub(super) state: u8,
}

/// The key [`tcp_diag`] lists a connection waiting to be accepted under (it has no
/// inode yet): its listener's port and its client's (a socket inode is 32 bits).
pub(super) fn unaccepted_key(listener_port: u16, client_port: u16) -> u64 {
    1 << 63 | u64::from(listener_port) << 16 | u64::from(client_port)
}

/// Every TCP socket of this network namespace (IPv4 and IPv6), by inode; connections
/// waiting in a listener's queue (inode 0, ESTABLISHED or CLOSE_WAIT) by
/// [`unaccepted_key`].
pub(super) fn tcp_diag() -> BTreeMap<u64, TcpDiag> {
    let mut out = BTreeMap::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let s = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if s < 0 {
            continue;
        }
        // nlmsghdr (16) + inet_diag_req_v2 (56): all states, no address filter
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        req[6..8].copy_from_slice(&flags.to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[16] = family as u8;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        let sent = unsafe { libc::send(s, req.as_ptr().cast(), req.len(), 0) };
        let mut buf = vec![0u8; 65536];
        let mut done = sent < 0;
        while !done {
            let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let mut m = &buf[..n as usize];
            while m.len() >= 16 {
                let len = u32::from_ne_bytes(m[0..4].try_into().unwrap_or_default()) as usize;
                let ty = u16::from_ne_bytes(m[4..6].try_into().unwrap_or_default());
                if len < 16 || len > m.len() {
                    break;
                }
                if ty == libc::NLMSG_DONE as u16 || ty == libc::NLMSG_ERROR as u16 {
                    done = true;
                    break;
                }
                // inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid,
                // inode; then attributes
                let body = &m[16..len];
                if body.len() >= 72 {
                    let at = |i: usize| {
                        u32::from_ne_bytes(body[i..i + 4].try_into().unwrap_or_default())
                    };
                    let mut d = TcpDiag {
                        rqueue: at(56),
                        wqueue: at(60),
                        state: body[1],
                        ..TcpDiag::default()
                    };
                    let mut a = &body[72..];
                    while a.len() >= 4 {
                        let alen = u16::from_ne_bytes([a[0], a[1]]) as usize;
                        let aty = u16::from_ne_bytes([a[2], a[3]]);
                        if alen < 4 || alen > a.len() {
                            break;
                        }
                        // INET_DIAG_SHUTDOWN
                        if aty == 8 && alen > 4 {
                            d.shutdown = a[4];
                        }
                        let step = (alen + 3) & !3;
                        a = &a[step.min(a.len())..];
                    }
                    let ino = u64::from(at(68));
                    if ino != 0 {
                        out.insert(ino, d);
                    } else if matches!(d.state, 1 | 8) {
                        let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
                        out.insert(unaccepted_key(port(4), port(6)), d);
                    }
                }
                let step = (len + 3) & !3;
                m = &m[step.min(m.len())..];
            }
        }
        unsafe { libc::close(s) };
    }
    out
}
