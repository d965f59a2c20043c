//! UDP sockets: addresses, options, queued datagrams.

use super::unix::{peek_messages, peek_refusal};
use crate::error::{DumpError, DumpResult as Result};
use crate::model::{Fd, FdKind, SockOpts, UdpState};
use crate::sys::{self, sockdiag};

// ---- collect (dump) ----

/// A socket that is not TCP (`dup` a duplicate of it): a UDP socket, with its queued
/// datagrams, sets the kind of `f`; another kind is refused above the standard
/// descriptors (0-2).
pub(crate) fn collect(
    f: &mut Fd,
    flags: u32,
    dup: &std::os::fd::OwnedFd,
    refuse: &dyn Fn(&str) -> DumpError,
) -> Result<()> {
    if let Some(u) = sys::udp::inspect(dup)? {
        let msgs = peek_messages(dup).map_err(|e| match e {
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
                },
                msgs,
            }),
            flags,
        };
    } else if f.fd > 2 {
        return Err(refuse(&sys::tcp::socket_kind(dup)?));
    }
    Ok(())
}
