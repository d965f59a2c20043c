//! The socket of `criu swrk FD`: a SOCK_SEQPACKET unix socket the caller passes as an
//! inherited descriptor, one message per packet.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use super::{Result, SysError, rerr};

/// Take over descriptor `fd`, inherited from our caller and named by it on our
/// command line, after checking that it is an open SOCK_SEQPACKET socket.
pub fn adopt(fd: i32) -> Result<OwnedFd> {
    // SAFETY: F_GETFD reads the descriptor's flags and changes nothing.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(SysError::os(format!("descriptor {fd}")));
    }
    // SAFETY: `fd` is open (checked above) and nothing else in this process owns it: it
    // was inherited at exec and is named only by the command line, which is read once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let ty = rustix::net::sockopt::socket_type(owned.as_fd())
        .map_err(|e| rerr(format!("descriptor {fd} is not a socket"), e))?;
    if ty != rustix::net::SocketType::SEQPACKET {
        return Err(SysError::Other(format!(
            "descriptor {fd} is not a SOCK_SEQPACKET socket"
        )));
    }
    Ok(owned)
}

/// The PID of the process at the other end (as it was when the pair was made).
pub fn peer_pid(fd: &OwnedFd) -> Result<i32> {
    let c =
        rustix::net::sockopt::socket_peercred(fd.as_fd()).map_err(|e| rerr("SO_PEERCRED", e))?;
    Ok(c.pid.as_raw_nonzero().get())
}

/// The next packet (None at the end: the caller closed its side). A packet larger
/// than `max` is an error (it would be cut).
pub fn recv(fd: &OwnedFd, max: usize) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; max];
    let (n, full) = loop {
        match rustix::net::recv(fd.as_fd(), &mut buf[..], rustix::net::RecvFlags::TRUNC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.map_err(|e| rerr("recv", e))?,
        }
    };
    if full > n {
        return Err(SysError::Other(format!(
            "a message of {full} bytes, more than {max}"
        )));
    }
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some(buf))
}

/// Send `msg` as one packet.
pub fn send(fd: &OwnedFd, msg: &[u8]) -> Result<()> {
    loop {
        match rustix::net::send(fd.as_fd(), msg, rustix::net::SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(rerr("send", e)),
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(n) => {
                return Err(SysError::Other(format!(
                    "sent {n} bytes of a {}-byte message",
                    msg.len()
                )));
            }
        }
    }
}

/// Send `msg` as one packet with descriptor `fd` attached (SCM_RIGHTS): the receiver
/// gets its own copy of the open file.
pub fn send_with_fd(sock: &OwnedFd, msg: &[u8], fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    send_with_fds(sock, msg, &[fd])
}

/// A connected pair of SOCK_SEQPACKET unix sockets, close-on-exec (for a helper of ours
/// that hands us descriptors, `restore --lazy --new-pidns`).
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| rerr("socketpair(SOCK_SEQPACKET)", e))
}

/// The next packet and the descriptor sent with it, if any ([`send_with_fd`]); None at
/// the end (the other side closed). A packet larger than `max` is an error.
pub fn recv_with_fd(sock: &OwnedFd, max: usize) -> Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut buf = vec![0u8; max];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(sock.as_fd(), &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.map_err(|e| rerr("recvmsg", e))?,
        }
    };
    let mut fd = None;
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                // The first one is the one sent; any other is closed here.
                if fd.is_none() {
                    fd = Some(f);
                }
            }
        }
    }
    if r.flags.contains(ReturnFlags::TRUNC) || r.flags.contains(ReturnFlags::CTRUNC) {
        return Err(SysError::Other(format!(
            "a message of more than {max} bytes"
        )));
    }
    if r.bytes == 0 && fd.is_none() {
        return Ok(None);
    }
    buf.truncate(r.bytes);
    Ok(Some((buf, fd)))
}

/// A listening SOCK_SEQPACKET unix socket bound at `path` (close-on-exec), for
/// `restore --template`: a file left at `path` by an earlier listener that no longer
/// answers is replaced; one that answers is an error (another template listens there).
pub fn listen_at(path: &std::path::Path) -> Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    if path.exists() {
        if connect_to(path).is_ok() {
            return Err(SysError::Other(format!(
                "{}: another template listens there",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| rerr("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| rerr(format!("{}", path.display()), e))?;
    rustix::net::bind(&sock, &addr).map_err(|e| rerr(format!("bind {}", path.display()), e))?;
    rustix::net::listen(&sock, 16).map_err(|e| rerr("listen", e))?;
    Ok(sock)
}

/// A SOCK_SEQPACKET connection to the listener at `path` (close-on-exec).
pub fn connect_to(path: &std::path::Path) -> Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| rerr("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| rerr(format!("{}", path.display()), e))?;
    rustix::net::connect(&sock, &addr)
        .map_err(|e| rerr(format!("connect to {}", path.display()), e))?;
    Ok(sock)
}

/// The next connection on listener `sock` (close-on-exec).
pub fn accept(sock: &OwnedFd) -> Result<OwnedFd> {
    loop {
        match rustix::net::accept_with(sock, rustix::net::SocketFlags::CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(|e| rerr("accept", e)),
        }
    }
}

/// At most this many descriptors travel with one packet ([`send_with_fds`]).
pub const MAX_FDS: usize = 4;

/// Send `msg` as one packet with the descriptors `fds` (at most [`MAX_FDS`]) attached.
pub fn send_with_fds(
    sock: &OwnedFd,
    msg: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    if fds.is_empty() {
        return send(sock, msg);
    }
    let mut space =
        [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS || !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(SysError::Other("no room for SCM_RIGHTS".into()));
    }
    let iov = [std::io::IoSlice::new(msg)];
    loop {
        match rustix::net::sendmsg(sock.as_fd(), &iov, &mut anc, SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(rerr("sendmsg (SCM_RIGHTS)", e)),
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(n) => {
                return Err(SysError::Other(format!(
                    "sent {n} bytes of a {}-byte message",
                    msg.len()
                )));
            }
        }
    }
}

/// The next packet and every descriptor sent with it (at most [`MAX_FDS`]); None at the
/// end.
pub fn recv_with_fds(sock: &OwnedFd, max: usize) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut buf = vec![0u8; max];
    let mut space =
        [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(sock.as_fd(), &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.map_err(|e| rerr("recvmsg", e))?,
        }
    };
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if r.flags.contains(ReturnFlags::TRUNC) || r.flags.contains(ReturnFlags::CTRUNC) {
        return Err(SysError::Other(format!(
            "a message of more than {max} bytes"
        )));
    }
    if r.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(r.bytes);
    Ok(Some((buf, fds)))
}
