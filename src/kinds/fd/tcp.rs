//! TCP sockets: listeners and established connections (TCP_REPAIR).

use super::udp;
use crate::error::{DumpError, DumpResult as Result};
use crate::model::{Fd, FdKind, TcpState};
use crate::sys;

// ---- collect (dump) ----

/// TCP sockets held in repair mode during a dump; a failed dump takes them out of it so
/// the target runs on with working connections.
pub(crate) struct RepairGuard(pub(crate) Vec<std::os::fd::OwnedFd>);

impl RepairGuard {
    /// Close the duplicates with the sockets still in repair mode.
    pub(crate) fn close_silently(mut self) {
        drop(std::mem::take(&mut self.0));
    }

    pub(crate) fn off(&mut self) {
        for fd in self.0.drain(..) {
            sys::tcp::repair_off(&fd);
        }
    }
}

impl Drop for RepairGuard {
    fn drop(&mut self) {
        self.off();
    }
}

/// A socket that sock_diag does not list as a unix one: a TCP socket listening or
/// connected, or else a UDP one ([`udp::collect`]). Its kind is set in `f`; a socket of
/// another kind is refused above the standard descriptors (0-2), which stay inherited.
///
/// TCP: read with TCP_REPAIR through a duplicate that stays open (in repair mode, kept
/// in `repair`) until the process is released, so that its death sends nothing to the
/// peer.
pub(crate) fn collect_inet(
    pid: i32,
    f: &mut Fd,
    flags: u32,
    repair: &mut Vec<std::os::fd::OwnedFd>,
    refuse: &dyn Fn(&str) -> DumpError,
) -> Result<()> {
    let dup = sys::process::steal_fd(pid, f.fd)?;
    match sys::tcp::inspect(&dup)? {
        sys::tcp::TcpSock::Listen {
            family,
            addr,
            backlog,
            pending,
            reuseaddr,
            v6only,
        } => {
            if pending != 0 {
                return Err(refuse(
                    "a listening TCP socket with connections waiting to be accepted",
                ));
            }
            f.kind = FdKind::TcpListen {
                family,
                addr,
                backlog,
                reuseaddr,
                v6only,
                flags,
            };
        }
        sys::tcp::TcpSock::Established(c) => {
            f.kind = FdKind::TcpConn {
                conn: Box::new(TcpState {
                    family: c.family,
                    local: c.local,
                    peer: c.peer,
                    snd_seq: c.snd_seq,
                    rcv_seq: c.rcv_seq,
                    sndq: c.sndq,
                    rcvq: c.rcvq,
                    mss: c.mss,
                    snd_wscale: c.snd_wscale,
                    rcv_wscale: c.rcv_wscale,
                    sack: c.sack,
                    timestamps: c.timestamps,
                    tsval: c.tsval,
                    window: c.window,
                    nodelay: c.nodelay,
                }),
                flags,
            };
            repair.push(dup);
        }
        sys::tcp::TcpSock::Other(state) => {
            if f.fd > 2 {
                return Err(refuse(&format!(
                    "a TCP socket in state {state} (neither listening nor established)"
                )));
            }
        }
        sys::tcp::TcpSock::NotTcp => udp::collect(f, flags, &dup, refuse)?,
    }
    Ok(())
}
