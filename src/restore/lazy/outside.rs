//! A tree in a new PID namespace: the server outside.
//!
//! The builder of a tree restored with `--new-pidns` is the namespace's init, a process
//! of ckpt's inside it; a thread of ckpt there would take a PID the tree may need, and
//! the init's own job is to wait for the tree. So the builder sends each process's
//! userfaultfd (SCM_RIGHTS) and pieces over a SOCK_SEQPACKET pair to ckpt outside, which
//! runs the server and the watcher (over the init: its end ends the namespace).

use std::os::fd::OwnedFd;
use std::sync::Arc;

#[cfg(test)]
use super::LazyImage;
use super::{Lazy, LazyMode, Piece, Server};
use crate::restore::{RestoreError, Result};
use crate::sys;
use crate::sys::uffd::Uffd;

/// Pieces per message (32 bytes each), and the largest message.
const PER_MSG: usize = 2000;
const MSG_MAX: usize = 1 + PER_MSG * 32;

fn words(tag: u8, w: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut m = vec![tag];
    for x in w {
        m.extend_from_slice(&x.to_le_bytes());
    }
    m
}

/// Send one process's pieces ('P'), registered ranges ('R'), then its userfaultfd
/// ('U'), which ends the process's part.
pub(super) fn send_mm(
    sock: &OwnedFd,
    uffd: &Uffd,
    regs: &[(u64, u64)],
    pieces: &[Piece],
) -> Result<()> {
    let lost = |e| {
        RestoreError::Stage(format!(
            "lazy restore: cannot reach ckpt outside the PID namespace: {e}"
        ))
    };
    for c in pieces.chunks(PER_MSG) {
        let m = words(b'P', c.iter().flat_map(|p| [p.addr, p.len, p.rec, p.skip]));
        sys::seqpacket::send(sock, &m).map_err(lost)?;
    }
    for c in regs.chunks(PER_MSG) {
        let m = words(b'R', c.iter().flat_map(|&(s, e)| [s, e]));
        sys::seqpacket::send(sock, &m).map_err(lost)?;
    }
    sys::seqpacket::send_with_fd(sock, b"U", uffd.as_fd()).map_err(lost)
}

/// The u64 words after a message's tag, `n` to a group.
fn groups(m: &[u8], n: usize) -> Result<Vec<Vec<u64>>> {
    let body = m.get(1..).unwrap_or_default();
    if body.len() % (8 * n) != 0 {
        return Err(RestoreError::Stage(format!(
            "lazy restore: a message of {} bytes from the builder",
            m.len()
        )));
    }
    Ok(body
        .chunks(8 * n)
        .map(|g| {
            g.chunks(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect()
        })
        .collect())
}

/// Take the builder's messages until it closes its side, adding each process to `lazy`.
fn receive(lazy: &Lazy, sock: &OwnedFd) -> Result<()> {
    let (mut pieces, mut regs) = (Vec::new(), Vec::new());
    while let Some((m, fd)) = sys::seqpacket::recv_with_fd(sock, MSG_MAX)? {
        match (m.first(), fd) {
            (Some(b'P'), None) => pieces.extend(groups(&m, 4)?.into_iter().map(|g| Piece {
                addr: g[0],
                len: g[1],
                rec: g[2],
                skip: g[3],
            })),
            (Some(b'R'), None) => regs.extend(groups(&m, 2)?.into_iter().map(|g| (g[0], g[1]))),
            (Some(b'U'), Some(fd)) => lazy.add(
                Uffd::from_fd(fd),
                std::mem::take(&mut regs),
                std::mem::take(&mut pieces),
            )?,
            _ => {
                return Err(RestoreError::Stage(
                    "lazy restore: an unexpected message from the builder".into(),
                ));
            }
        }
    }
    Ok(())
}

/// ckpt's side of a lazy restore whose builder is in the tree's new PID namespace: the
/// server and the watcher (over `init`, the namespace's init), started before the
/// builder stages anything, and the thread taking the builder's messages.
pub(crate) struct Outside {
    server: Option<Server>,
    receiver: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Outside {
    /// Start serving the builder at the other end of `sock`. Called in ckpt right after
    /// it forked the init.
    pub(crate) fn start(lazy: Arc<Lazy>, sock: OwnedFd, init: i32) -> Result<Self> {
        if lazy.mode == LazyMode::Touch {
            let fd = sys::process::pidfd_open(init)?;
            if let Ok(mut g) = lazy.end_with.lock() {
                *g = Some(fd);
            }
        }
        let server = Server::start(lazy.clone())?;
        lazy.watch(&[init])?;
        let l = lazy.clone();
        let receiver = std::thread::Builder::new()
            .name("ckpt-lazy-rx".into())
            .spawn(move || receive(&l, &sock))
            .map_err(|e| RestoreError::Stage(format!("cannot start the lazy receiver: {e}")))?;
        Ok(Self {
            server: Some(server),
            receiver: Some(receiver),
        })
    }

    /// The builder reported the tree running: every process's part is received (the
    /// builder closed its side before), and the server may go on after commit.
    pub(crate) fn committed(mut self) -> Result<Server> {
        let r = match self.receiver.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(RestoreError::Stage("the lazy receiver stopped".into())),
        };
        r?;
        let server = self
            .server
            .take()
            .ok_or_else(|| RestoreError::Stage("the lazy server stopped".into()))?;
        server.committed();
        Ok(server)
    }
}

impl Drop for Outside {
    /// The restore failed (the builder's end closes the socket: the receiver ends).
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(t) = self.receiver.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    fn p(addr: u64, len: u64, rec: u64, skip: u64) -> Piece {
        Piece {
            addr,
            len,
            rec,
            skip,
        }
    }

    /// What the builder of a tree in a new PID namespace sends is what ckpt outside
    /// adds: pieces and ranges (more than one message of each), then the descriptor.
    #[test]
    fn a_process_sent_by_the_builder_arrives_whole() {
        let (ours, theirs) = match sys::seqpacket::pair() {
            Ok(p) => p,
            Err(e) => panic!("socketpair: {e}"),
        };
        let pieces: Vec<Piece> = (0..PER_MSG as u64 + 5)
            .map(|i| p(0x10000 + i * 0x2000, 0x1000, 64 + i, i * 8))
            .collect();
        let regs: Vec<(u64, u64)> = (0..PER_MSG as u64 + 3)
            .map(|i| (i << 20, (i << 20) + 0x1000))
            .collect();
        // Any descriptor stands for the userfaultfd here (the receiver only keeps it).
        let stand_in = match std::fs::File::open("/dev/null") {
            Ok(f) => OwnedFd::from(f),
            Err(e) => panic!("/dev/null: {e}"),
        };
        let u = Uffd::from_fd(stand_in);
        let sent = std::thread::spawn({
            let (pieces, regs) = (pieces.clone(), regs.clone());
            move || {
                let r = send_mm(&theirs, &u, &regs, &pieces);
                drop(theirs);
                r.is_ok()
            }
        });
        let img = match dev_null() {
            Some(f) => f,
            None => return,
        };
        let lazy = Lazy::new(
            LazyImage {
                file: img,
                entries: Vec::new(),
                comp: None,
            },
            LazyMode::Touch,
        );
        let got = receive(&lazy, &ours);
        assert!(got.is_ok(), "{:?}", got.err());
        assert!(sent.join().unwrap_or(false));
        let mms = lazy.incoming.lock().map(|g| g.len()).unwrap_or(0);
        assert_eq!(mms, 1);
        let g = lazy.incoming.lock().ok();
        let mm = g.as_ref().and_then(|g| g.first());
        assert_eq!(mm.map(|m| m.pieces.clone()), Some(pieces));
        assert_eq!(mm.map(|m| m.regs.clone()), Some(regs));
    }

    /// A message cut in the middle of a word is refused.
    #[test]
    fn a_torn_message_is_refused() {
        assert!(groups(&[b'P', 1, 2, 3], 4).is_err());
        assert!(groups(&[b'R'; 17], 2).is_ok());
        assert!(groups(&[b'R'; 18], 2).is_err());
    }

    fn dev_null() -> Option<File> {
        File::open("/dev/null").ok()
    }
}
