//! Unix sockets as the kernel's sock_diag netlink interface describes them: type, state,
//! bound name, peer, queue lengths. (/proc/net/unix has no peers.)

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{RecvFlags, SendFlags};

use super::{Result, SysError, rerr};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSock {
    pub ino: u64,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub typ: i32,
    /// TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10).
    pub state: u8,
    /// Bound name: a path, or an abstract name starting with a NUL byte.
    pub name: Option<Vec<u8>>,
    pub peer: u64,
    /// Bytes (stream) queued for reading; for a listener, connections waiting.
    pub rqueue: u32,
    /// For a listener, its backlog.
    pub wqueue: u32,
    /// Which ways are shut down (`sk_shutdown`): RCV_SHUTDOWN 1, SEND_SHUTDOWN 2.
    pub shutdown: u8,
    /// For a listener, the sockets whose connections wait to be accepted (the clients),
    /// in the order accept takes them.
    pub icons: Vec<u64>,
    /// For a socket bound to a path (or accepted by a listener bound to one): the inode
    /// of the socket file it was bound as (0 if none).
    pub vfs_ino: u64,
}

pub const STATE_ESTABLISHED: u8 = 1;
pub const STATE_LISTEN: u8 = 10;

// nlmsg_type values (linux/netlink.h), from linux-raw-sys.
const NLMSG_ERROR: u16 = linux_raw_sys::netlink::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = linux_raw_sys::netlink::NLMSG_DONE as u16;
// From linux/sock_diag.h and linux/unix_diag.h, which neither libc nor linux-raw-sys
// covers.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Parse one unix_diag_msg with its attributes.
fn parse_msg(m: &[u8]) -> Option<UnixSock> {
    // struct unix_diag_msg { u8 family, type, state, pad; u32 ino; u32 cookie[2]; }
    let mut s = UnixSock {
        typ: i32::from(*m.get(1)?),
        state: *m.get(2)?,
        ino: u64::from(u32_at(m, 4)?),
        ..Default::default()
    };
    let mut off = 16;
    while off + 4 <= m.len() {
        let len = usize::from(u16_at(m, off)?);
        let typ = u16_at(m, off + 2)?;
        if len < 4 || off + len > m.len() {
            return None;
        }
        let data = &m[off + 4..off + len];
        match typ {
            UNIX_DIAG_NAME => s.name = Some(data.to_vec()),
            UNIX_DIAG_PEER => s.peer = u64::from(u32_at(data, 0)?),
            UNIX_DIAG_RQLEN => {
                s.rqueue = u32_at(data, 0)?;
                s.wqueue = u32_at(data, 4)?;
            }
            UNIX_DIAG_SHUTDOWN => s.shutdown = *data.first()?,
            // struct unix_diag_vfs { u32 udiag_vfs_ino; u32 udiag_vfs_dev; }
            UNIX_DIAG_VFS => s.vfs_ino = u64::from(u32_at(data, 0)?),
            UNIX_DIAG_ICONS => {
                s.icons = data
                    .chunks_exact(4)
                    .map(|c| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                    .collect();
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(s)
}

/// Every unix socket of this network namespace, by inode.
pub fn unix_sockets() -> Result<BTreeMap<u64, UnixSock>> {
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    // struct unix_diag_req
    req.push(libc::AF_UNIX as u8);
    req.push(0);
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&0u32.to_ne_bytes()); // ino
    req.extend_from_slice(
        &(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN)
            .to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]); // cookie
    let mut out = BTreeMap::new();
    diag_dump(&req, |m| {
        let s = parse_msg(m)?;
        out.insert(s.ino, s);
        Some(())
    })?;
    Ok(out)
}

// struct inet_diag_msg (linux/inet_diag.h): offsets of the destination port and
// address (in its inet_diag_sockid), idiag_rqueue and idiag_inode.
const IDIAG_DPORT: usize = 6;
const IDIAG_DST: usize = 24;
const IDIAG_RQUEUE: usize = 56;
const IDIAG_INODE: usize = 68;

/// What sock_diag shows of a TCP socket that its descriptor does not.
#[derive(Debug, Clone, Default)]
pub struct TcpDiag {
    /// Sequence numbers received and not yet read (rcv_nxt - copied_seq, a FIN
    /// included).
    pub rqueue: u32,
    /// The destination (also while connecting, when getpeername has none): its port and
    /// address (IPv4 in the first 4 bytes).
    pub dport: u16,
    pub dst: [u8; 16],
}

/// A TCP socket as sock_diag shows it (found by its inode among those of its family in
/// `state`).
pub fn tcp_diag_of(fd: &OwnedFd, state: u8) -> Result<TcpDiag> {
    tcp_diag_find(fd, state)?.ok_or_else(|| {
        let ino = rustix::fs::fstat(fd).map_or(0, |s| s.st_ino);
        SysError::Other(format!("sock_diag does not list TCP socket {ino}"))
    })
}

/// Whether sock_diag lists TCP socket `fd` in `state`.
pub fn tcp_diag_lists(fd: &OwnedFd, state: u8) -> Result<bool> {
    Ok(tcp_diag_find(fd, state)?.is_some())
}

fn tcp_diag_find(fd: &OwnedFd, state: u8) -> Result<Option<TcpDiag>> {
    let domain = super::tcp::getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let ino = rustix::fs::fstat(fd)
        .map_err(|e| rerr("fstat a TCP socket", e))?
        .st_ino;
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zero
    // inet_diag_sockid (48 bytes): no filter on addresses.
    req.push(domain as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0);
    req.push(0);
    req.extend_from_slice(&(1u32 << state).to_ne_bytes());
    req.extend_from_slice(&[0; 48]);
    let mut found = None;
    diag_dump(&req, |m| {
        if u64::from(u32_at(m, IDIAG_INODE)?) == ino {
            found = Some(TcpDiag {
                rqueue: u32_at(m, IDIAG_RQUEUE)?,
                dport: u16::from_be_bytes(m.get(IDIAG_DPORT..IDIAG_DPORT + 2)?.try_into().ok()?),
                dst: m.get(IDIAG_DST..IDIAG_DST + 16)?.try_into().ok()?,
            });
        }
        Some(())
    })?;
    Ok(found)
}

/// How many connections to the TCP listener bound to `addr` (a raw sockaddr_in /
/// sockaddr_in6 of `family`) are still in their handshake (SYN_RECV): sock_diag lists
/// them with the listener's address and port.
pub fn tcp_half_open(family: i32, addr: &[u8]) -> Result<u32> {
    const TCP_SYN_RECV: u32 = 3;
    let port = addr.get(2..4).unwrap_or(&[0, 0]).to_vec();
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.push(family as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0);
    req.push(0);
    req.extend_from_slice(&(1u32 << TCP_SYN_RECV).to_ne_bytes());
    req.extend_from_slice(&[0; 48]);
    let mut n = 0;
    diag_dump(&req, |m| {
        // inet_diag_msg: the source port (the listener's) at 4, in network order
        if m.get(4..6)? == &port[..] {
            n += 1;
        }
        Some(())
    })?;
    Ok(n)
}

// linux/packet_diag.h: what to show, and the attributes read.
const PACKET_SHOW_MCLIST: u32 = 0x2;
const PACKET_SHOW_RING_CFG: u32 = 0x4;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;

/// Whether packet socket `fd` has a ring (PACKET_RX_RING / PACKET_TX_RING), and whether
/// it is a member of an interface's lists (PACKET_ADD_MEMBERSHIP: promiscuous,
/// multicast...), as packet_diag shows it.
pub fn packet_rings_and_members(fd: &OwnedFd) -> Result<(bool, bool)> {
    let ino = rustix::fs::fstat(fd)
        .map_err(|e| rerr("fstat a packet socket", e))?
        .st_ino;
    let mut req = Vec::with_capacity(36);
    req.extend_from_slice(&36u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // struct packet_diag_req: family, protocol, pad, ino, show, cookie
    req.push(libc::AF_PACKET as u8);
    req.extend_from_slice(&[0, 0, 0]);
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&(PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    diag_dump(&req, |m| {
        // struct packet_diag_msg (16 bytes), then attributes
        if u64::from(u32_at(m, 4)?) != ino {
            return Some(());
        }
        let (mut rings, mut members) = (false, false);
        let mut off = 16;
        while off + 4 <= m.len() {
            let len = usize::from(u16_at(m, off)?);
            let typ = u16_at(m, off + 2)? & 0x3fff;
            if len < 4 || off + len > m.len() {
                return None;
            }
            match typ {
                PACKET_DIAG_RX_RING | PACKET_DIAG_TX_RING => rings = true,
                PACKET_DIAG_MCLIST => members = len > 4,
                _ => {}
            }
            off += (len + 3) & !3;
        }
        found = Some((rings, members));
        Some(())
    })?;
    found.ok_or_else(|| SysError::Other(format!("packet_diag does not list socket {ino}")))
}

/// Send sock_diag dump request `req`; `each` sees every message's payload (`None`: a
/// malformed one).
fn diag_dump(req: &[u8], mut each: impl FnMut(&[u8]) -> Option<()>) -> Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::SOCK_DIAG),
    )
    .map_err(|e| rerr("socket(NETLINK_SOCK_DIAG)", e))?;
    rustix::net::send(&sock, req, SendFlags::empty()).map_err(|e| rerr("sock_diag request", e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, _) = rustix::net::recv(&sock, &mut buf[..], RecvFlags::empty())
            .map_err(|e| rerr("sock_diag reply", e))?;
        let mut off = 0;
        while off + 16 <= n {
            let bad = || SysError::Other("malformed sock_diag reply".into());
            let len = u32_at(&buf, off).ok_or_else(bad)? as usize;
            let typ = u16_at(&buf, off + 4).ok_or_else(bad)?;
            if len < 16 || off + len > n {
                return Err(bad());
            }
            match typ {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let e = u32_at(&buf, off + 16)
                        .map(|e| e as i32)
                        .unwrap_or(-libc::EIO);
                    return Err(SysError::io(
                        "sock_diag",
                        std::io::Error::from_raw_os_error(-e),
                    ));
                }
                _ => each(&buf[off + 16..off + len]).ok_or_else(bad)?,
            }
            off += (len + 3) & !3;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Bytes queued for reading on a stream socket, read without consuming them (MSG_PEEK;
/// for a TCP socket in repair mode, from the queue selected with TCP_REPAIR_QUEUE).
pub fn peek_stream(fd: &OwnedFd, len: usize) -> Result<Vec<u8>> {
    let mut data = vec![0u8; len];
    if len == 0 {
        return Ok(data);
    }
    let (n, _) = rustix::net::recv(fd, &mut data[..], RecvFlags::PEEK | RecvFlags::DONTWAIT)
        .map_err(|e| rerr("peek at a socket queue", e))?;
    data.truncate(n);
    Ok(data)
}

/// The bytes queued for reading on a unix stream socket (`len`, as sock_diag counts
/// them), read without consuming anything: from peek offset 0 on, as many reads as it
/// takes (the kernel ends a read where the writer changes and after the bytes of a
/// message that carries descriptors). The socket's own peek offset is put back
/// afterwards.
///
/// Also returns the runs of bytes each writer sent, with its credentials (pid, uid,
/// gid): SO_PASSCRED is on for the time of the reads (put back afterwards), which makes
/// the kernel end each read where the writer changes. The bytes of one message sent
/// with descriptors (SCM_RIGHTS; the kernel keeps them as one buffer, whose first read
/// takes the descriptors) are a run of their own, with those descriptors (installed in
/// this process by the peek). A read ends after such a buffer, but may begin with
/// plain bytes queued before it, and a peek shows no more: even a one-byte peek at any
/// offset before the buffer brings its descriptors (a peek goes on to the next buffers
/// with nothing left to copy). So only a read of one byte with descriptors is certain
/// to be that message; a longer one is refused (`PeekError::Rights`).
///
/// `bounds`, where known (`sys::bpf`), are the messages that make the queue, in order:
/// (unread length, descriptors carried); they place descriptors in flight on a message
/// longer than one byte, which a peek alone cannot.
pub fn peek_unix_stream(
    fd: &OwnedFd,
    len: usize,
    bounds: Option<&[(usize, u32)]>,
) -> std::result::Result<StreamQueue, PeekError> {
    use super::tcp::{getsockopt_u32 as get, setsockopt_u32 as set};
    if len == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let old = get(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)? as i32;
    let passcred = get(fd, libc::SOL_SOCKET, libc::SO_PASSCRED)?;
    if passcred == 0 {
        set(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    }
    let r = set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .map_err(PeekError::from)
        .and_then(|()| peek_stream_all(fd, len, bounds));
    let back = set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old as u32);
    let cred_back = if passcred == 0 {
        set(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 0)
    } else {
        Ok(())
    };
    let data = r?;
    back?;
    cred_back?;
    Ok(data)
}

/// The message of `bounds` (lengths, descriptors) that ends `end` bytes into the queue.
fn message_ending_at(bounds: &[(usize, u32)], end: usize) -> Option<(usize, u32)> {
    let mut at = 0usize;
    for &(l, f) in bounds {
        at += l;
        if at == end {
            return Some((l, f));
        }
        if at > end {
            return None;
        }
    }
    None
}

/// A unix stream socket's queued bytes, and the runs of them each writer sent.
pub type StreamQueue = (Vec<u8>, Vec<Run>);

/// A run of queued bytes one writer sent.
#[derive(Debug)]
pub struct Run {
    pub len: usize,
    /// Its writer's credentials (pid, uid, gid).
    pub creds: Option<(i32, u32, u32)>,
    /// The descriptors in flight with it (SCM_RIGHTS; then the run is exactly the
    /// bytes of that one message), as the peek installed them in this process.
    pub rights: Vec<OwnedFd>,
}

fn peek_stream_all(
    fd: &OwnedFd,
    len: usize,
    bounds: Option<&[(usize, u32)]>,
) -> std::result::Result<StreamQueue, PeekError> {
    let mut data = vec![0u8; len];
    let mut runs: Vec<Run> = Vec::new();
    let mut ctl = vec![0u8; 4096];
    let mut done = 0;
    while done < len {
        let Run {
            len: n,
            creds,
            rights,
        } = peek_at_most(fd, &mut data[done..], &mut ctl)?;
        if n == 0 {
            break;
        }
        // Descriptors end a read, but the kernel's peek does not show where the
        // message that carried them begins: only a read of one byte is certain, or
        // the queue's messages as the BPF reader saw them.
        if !rights.is_empty() && n > 1 {
            if let Some(b) = bounds {
                let m = message_ending_at(b, done + n)
                    .filter(|&(l, f)| f as usize == rights.len() && l <= n && l > 0)
                    .ok_or_else(|| {
                        PeekError::Boundary(
                            "whose queue as the BPF socket reader saw it does not end a \
                             message where the read of its descriptors ended"
                                .into(),
                        )
                    })?;
                let plain = n - m.0;
                if plain > 0 {
                    match runs.last_mut() {
                        Some(r) if r.creds == creds && r.rights.is_empty() => r.len += plain,
                        _ => runs.push(Run {
                            len: plain,
                            creds,
                            rights: Vec::new(),
                        }),
                    }
                }
                runs.push(Run {
                    len: m.0,
                    creds,
                    rights,
                });
                done += n;
                continue;
            }
            return Err(PeekError::Boundary(format!(
                "in a read of {n} bytes: the kernel does not show where in them the \
                 message that carried the descriptors begins, so restore could not give \
                 them with the same byte (only a one-byte message carrying descriptors \
                 can be read exactly)"
            )));
        }
        match runs.last_mut() {
            Some(r) if rights.is_empty() && r.creds == creds && r.rights.is_empty() => r.len += n,
            _ => runs.push(Run {
                len: n,
                creds,
                rights,
            }),
        }
        done += n;
    }
    if done != len {
        return Err(SysError::Other(format!(
            "only {done} of the {len} bytes queued on a unix socket could be read"
        ))
        .into());
    }
    Ok((data, runs))
}

/// One peek at the socket's peek offset into `buf`: how many bytes came (0: nothing
/// queued there), with their credentials and the descriptors in flight with them.
fn peek_at_most(
    fd: &OwnedFd,
    buf: &mut [u8],
    ctl: &mut [u8],
) -> std::result::Result<Run, PeekError> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below are to our own
    // buffers of the given lengths, which outlive the call.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.as_mut_ptr().cast();
    mh.msg_controllen = ctl.len();
    // SAFETY: `mh` describes valid buffers (see above).
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut mh,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(Run {
                len: 0,
                creds: None,
                rights: Vec::new(),
            });
        }
        return Err(SysError::io("peek at a socket queue", e).into());
    }
    let (rights, cut) = take_rights(&mh);
    if cut {
        return Err(PeekError::Descriptors);
    }
    Ok(Run {
        len: n as usize,
        creds: creds_of(&mh),
        rights,
    })
}

/// One queued datagram or seqpacket record: its bytes and the sender's raw address
/// (empty when the sender had none).
#[derive(Debug, Default)]
pub struct Message {
    pub from: Vec<u8>,
    pub data: Vec<u8>,
    /// The sender's credentials the kernel keeps with a unix message (pid, uid, gid), as
    /// SO_PASSCRED shows them (read with `creds`).
    pub creds: Option<(i32, u32, u32)>,
    /// The descriptors in flight with it (SCM_RIGHTS), as the peek installed them in
    /// this process: the same open file descriptions.
    pub rights: Vec<OwnedFd>,
}

/// Largest single message read at dump (it must fit the restore helper's scratch area).
pub const MAX_MESSAGE: usize = 512 << 10;
/// Most messages read from one socket.
pub const MAX_MESSAGES: usize = 1 << 16;

/// Why the messages of a socket could not be read.
#[derive(Debug)]
pub enum PeekError {
    /// A message carries descriptors (SCM_RIGHTS), which a checkpoint cannot keep.
    Descriptors,
    /// A message is larger than [`MAX_MESSAGE`], or there are more than [`MAX_MESSAGES`].
    TooLarge,
    /// Descriptors in flight that restore could not give back (why).
    Rights(String),
    /// Descriptors in flight on a stream socket whose message's start is not known
    /// (why): the BPF socket reader could place it.
    Boundary(String),
    Sys(SysError),
}

impl From<SysError> for PeekError {
    fn from(e: SysError) -> Self {
        PeekError::Sys(e)
    }
}

/// Every message queued for reading on a datagram or seqpacket socket (unix or UDP), in
/// order, with its boundaries and sender, read without consuming anything: the peek
/// offset (`SO_PEEK_OFF`) is moved past each message in turn and `MSG_PEEK` reads the
/// next; the socket's own peek offset is put back afterwards. `fd` is a duplicate of the
/// (frozen) owner's descriptor. `eof_ends`: a read of nothing is the end of the queue,
/// not an empty message (a seqpacket socket shut for reading: its reads give 0 at the
/// end, and an empty record there reads the same to the program).
///
/// With `creds` (a unix socket), each message's sender credentials are read too:
/// SO_PASSCRED is turned on for the time of the reads if it was off (turning it on
/// does not bind the socket; only sending or connecting would), then put back.
pub fn peek_messages(
    fd: &OwnedFd,
    eof_ends: bool,
    creds: bool,
) -> std::result::Result<Vec<Message>, PeekError> {
    use super::tcp::{getsockopt_u32 as get, setsockopt_u32 as set};
    let old = get(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)? as i32;
    let passcred = if creds {
        get(fd, libc::SOL_SOCKET, libc::SO_PASSCRED)?
    } else {
        1
    };
    if passcred == 0 {
        set(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    }
    let r = set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .map_err(PeekError::from)
        .and_then(|()| peek_all(fd, eof_ends));
    // -1 (the default) turns peeking at an offset off again.
    let back = set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old as u32);
    let cred_back = if passcred == 0 {
        set(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 0)
    } else {
        Ok(())
    };
    let msgs = r?;
    back?;
    cred_back?;
    Ok(msgs)
}

fn peek_all(fd: &OwnedFd, eof_ends: bool) -> std::result::Result<Vec<Message>, PeekError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    // Room for SCM_RIGHTS with many descriptors and SCM_CREDENTIALS.
    let mut ctl = vec![0u8; 4096];
    loop {
        let mut name = [0u8; 128];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below are to our own
        // buffers of the given lengths, which outlive the call.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = name.as_mut_ptr().cast();
        mh.msg_namelen = name.len() as u32;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = ctl.len();
        // SAFETY: `mh` describes valid buffers (see above).
        let n = unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                &mut mh,
                libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(out);
            }
            return Err(SysError::io("peek at a socket's messages", e).into());
        }
        if n == 0 && eof_ends {
            return Ok(out);
        }
        let n = n as usize;
        if n > buf.len() || out.len() >= MAX_MESSAGES {
            return Err(PeekError::TooLarge);
        }
        let (rights, cut) = take_rights(&mh);
        if cut {
            return Err(PeekError::Descriptors);
        }
        let namelen = (mh.msg_namelen as usize).min(name.len());
        out.push(Message {
            from: name[..namelen].to_vec(),
            data: buf[..n].to_vec(),
            creds: creds_of(&mh),
            rights,
        });
    }
}

/// The SCM_CREDENTIALS a received message carries: (pid, uid, gid).
fn creds_of(mh: &libc::msghdr) -> Option<(i32, u32, u32)> {
    let mut out = None;
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer the kernel filled, within
    // `msg_controllen`; every header they return lies inside it, and a header of type
    // SCM_CREDENTIALS is at least CMSG_LEN(sizeof(struct ucred)) long (checked).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize;
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_CREDENTIALS
                && len >= libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as usize
            {
                let u = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>());
                out = Some((u.pid, u.uid, u.gid));
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    out
}

/// The descriptors a received message carries (MSG_PEEK installed them in this
/// process; they are owned here), and whether its control data was cut short.
fn take_rights(mh: &libc::msghdr) -> (Vec<OwnedFd>, bool) {
    use std::os::fd::FromRawFd;
    let mut out = Vec::new();
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer the kernel filled, within
    // `msg_controllen`; every header they return lies inside it. Each descriptor of an
    // SCM_RIGHTS header was just installed in this process for us and nothing else owns
    // it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / 4 {
                    let fd = std::ptr::read_unaligned(data.add(i * 4).cast::<i32>());
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    (out, mh.msg_flags & libc::MSG_CTRUNC != 0)
}

/// Whether no socket of type `typ` holds abstract name `name` (without its leading NUL)
/// now: a socket of ckpt's own binds it for an instant and lets it go.
pub fn abstract_name_free(typ: i32, name: &[u8]) -> Result<bool> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let t = match typ {
        libc::SOCK_STREAM => SocketType::STREAM,
        libc::SOCK_SEQPACKET => SocketType::SEQPACKET,
        _ => SocketType::DGRAM,
    };
    let s = rustix::net::socket_with(AddressFamily::UNIX, t, SocketFlags::CLOEXEC, None)
        .map_err(|e| rerr("socket(AF_UNIX)", e))?;
    let addr = SocketAddrUnix::new_abstract_name(name).map_err(|e| rerr("an abstract name", e))?;
    match rustix::net::bind(&s, &addr) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::ADDRINUSE) => Ok(false),
        Err(e) => Err(rerr("bind to an abstract name", e)),
    }
}

/// What socket `fd` sent that its peer has not read yet (SIOCOUTQ: for a unix socket,
/// the memory its sent data still takes; 0 when nothing is in flight).
pub fn unread_sent(fd: &OwnedFd) -> Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer, which points at `n`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        return Err(SysError::io("SIOCOUTQ", std::io::Error::last_os_error()));
    }
    Ok(n.max(0) as u32)
}

/// Socket options that change what a program sees, read through a duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockOpts {
    /// SO_SNDBUF and SO_RCVBUF as getsockopt reports them (twice what was set).
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub passcred: bool,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// SO_BUF_LOCK (`None` where the kernel lacks it, before 5.14).
    pub buf_lock: Option<u32>,
}

/// `unix`: whether it is a unix socket (SO_PASSCRED is only read there: newer kernels
/// refuse it on IP sockets).
pub fn sock_opts(fd: &OwnedFd, unix: bool) -> Result<SockOpts> {
    use super::tcp::getsockopt_u32 as get;
    Ok(SockOpts {
        sndbuf: get(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?,
        rcvbuf: get(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?,
        passcred: unix && get(fd, libc::SOL_SOCKET, libc::SO_PASSCRED)? != 0,
        reuseaddr: get(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0,
        reuseport: get(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT)? != 0,
        buf_lock: get(fd, libc::SOL_SOCKET, linux_raw_sys::net::SO_BUF_LOCK as i32).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::message_ending_at;

    #[test]
    fn the_message_a_read_ends_with_is_found_by_its_end() {
        let b = [(2usize, 0u32), (4, 1), (3, 0)];
        assert_eq!(message_ending_at(&b, 6), Some((4, 1)));
        assert_eq!(message_ending_at(&b, 2), Some((2, 0)));
        assert_eq!(message_ending_at(&b, 5), None, "inside a message");
        assert_eq!(message_ending_at(&b, 10), None, "past the queue");
    }
}
