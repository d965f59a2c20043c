//! `restore --lazy`: the tree runs before its private anonymous memory is copied.
//!
//! Plan reads the metadata as usual; then [`LazyImage::open`] walks the image's record
//! headers only (`image::index::scan`: the end record's count and chained hash are
//! checked, the payloads are not read), and stage takes its records from
//! [`LazySource`]: file contents are read and checked as before, page records come
//! without their pages. A process's lazy areas (private anonymous, with pages in the
//! image, not locked, not wiped on fork) are registered for missing pages on a
//! userfaultfd it created (as for an ordinary restore, with the fork, remap, remove and
//! unmap events asked for), and its page records are only noted ([`Piece`]s); the pages
//! of every other area are read from the image and written at once. The registered
//! userfaultfds go to the server, a thread of ckpt started before stage (so a fault in
//! stage is served too), which after commit:
//! - serves each fault: the 64 KiB-aligned block around the page, from its record
//!   (read, its checksum checked, decompressed; the last few records are kept), or the
//!   zero page where the image has none;
//! - follows the program's changes: `mremap` moves the pieces, `munmap` and
//!   `madvise(DONTNEED)` drop them (those pages read zeros), a fork gives a new
//!   userfaultfd whose pieces are the parent's at the fork (the parent waits in `fork`
//!   until the event is read, and copies into it fail meanwhile);
//! - copies the rest in the background, between faults, 1 MiB at a time;
//! - once nothing is left, unregisters every area and closes the descriptors: nothing
//!   of it stays in the tree.
//!
//! If ckpt dies before that, the kernel would drop the registrations and the program
//! would read zeros. The watcher (`sys::uffd::spawn_watcher`), started before commit,
//! shares ckpt's descriptor table, so the userfaultfds stay open (a faulting thread
//! waits), and it stops and kills the tree and everything it forked. A page record
//! found damaged after commit ends ckpt the same way.
//!
//! Files: `image.rs` (the image's records found by offset, and the records stage takes),
//! `pieces.rs` (the pages still missing and how the program's changes move them),
//! `serve.rs` (the server thread: faults, events, the background copy), `outside.rs`
//! (a tree in a new PID namespace: the builder's processes sent to ckpt outside); here
//! the state shared by stage and the server, and the watcher.

mod image;
mod outside;
mod pieces;
mod serve;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use super::Result;
use crate::sys;
use crate::sys::uffd::Uffd;
use outside::send_mm;

pub(crate) use image::{LazyImage, LazySource};
pub(crate) use outside::Outside;
pub(crate) use pieces::Piece;
pub(crate) use serve::Server;

/// One memory (a process of the tree, or a child it forked): its userfaultfd, the
/// pieces still missing, the ranges registered, the faults to serve again.
struct Mm {
    uffd: Uffd,
    pieces: Vec<Piece>,
    regs: Vec<(u64, u64)>,
    waiting: Vec<u64>,
}

/// How the memory of a lazy restore comes in (`restore --lazy[=fill|touch]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LazyMode {
    /// Pages come in on first touch, and the rest is copied in the background: ckpt
    /// ends once every page is in, and nothing of the restore stays in the tree.
    #[default]
    Fill,
    /// Pages come in on first touch only (`--new-pidns`: copies of one image started
    /// side by side, each holding only the pages it touched). ckpt serves the copy for
    /// as long as it lives; its lazy areas stay registered (`um` in their VmFlags).
    Touch,
}

/// A lazy restore's state shared by stage (which adds processes) and the server.
pub(crate) struct Lazy {
    image: LazyImage,
    mode: LazyMode,
    incoming: Mutex<Vec<Mm>>,
    /// In the builder of a tree restored in a new PID namespace: where each process's
    /// userfaultfd and pieces go (the server is ckpt's, outside the namespace; see
    /// [`Outside`]).
    forward: Mutex<Option<OwnedFd>>,
    /// `LazyMode::Touch`: a pidfd of the init of the copy's PID namespace; the server
    /// ends when it exits (the whole copy is gone).
    end_with: Mutex<Option<OwnedFd>>,
    /// Commit is done: the background copy may start.
    filling: AtomicBool,
    /// The restore failed: the server ends.
    stop: AtomicBool,
    /// The watcher: its PID and the write end of its pipe (a byte: all is in).
    watcher: Mutex<Option<(i32, OwnedFd)>>,
}

impl Lazy {
    pub(crate) fn new(image: LazyImage, mode: LazyMode) -> Self {
        Self {
            image,
            mode,
            incoming: Mutex::new(Vec::new()),
            forward: Mutex::new(None),
            end_with: Mutex::new(None),
            filling: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            watcher: Mutex::new(None),
        }
    }

    pub(crate) fn image(&self) -> &LazyImage {
        &self.image
    }

    pub(crate) fn mode(&self) -> LazyMode {
        self.mode
    }

    /// In the builder of a tree restored in a new PID namespace: send every process's
    /// userfaultfd and pieces through `sock` to ckpt outside ([`Outside`]), which
    /// serves them and watches the tree.
    pub(crate) fn forward_to(&self, sock: OwnedFd) {
        if let Ok(mut g) = self.forward.lock() {
            *g = Some(sock);
        }
    }

    /// The server is ckpt's outside the namespace ([`Lazy::forward_to`]).
    pub(crate) fn forwards(&self) -> bool {
        self.forward.lock().is_ok_and(|g| g.is_some())
    }

    /// Everything is sent (stage is over): the end of the stream for ckpt outside.
    pub(crate) fn close_forward(&self) {
        if let Ok(mut g) = self.forward.lock() {
            g.take();
        }
    }

    /// A process's registered areas and the pieces to copy into them (stage, at the end
    /// of its memory).
    pub(crate) fn add(
        &self,
        uffd: Uffd,
        regs: Vec<(u64, u64)>,
        mut pieces: Vec<Piece>,
    ) -> Result<()> {
        pieces.sort_by_key(|p| p.addr);
        if let Ok(g) = self.forward.lock() {
            if let Some(sock) = g.as_ref() {
                return send_mm(sock, &uffd, &regs, &pieces);
            }
        }
        if let Ok(mut g) = self.incoming.lock() {
            g.push(Mm {
                uffd,
                pieces,
                regs,
                waiting: Vec::new(),
            });
        }
        Ok(())
    }

    /// Start the watcher over the tree's processes (before commit). In the builder of a
    /// tree in a new PID namespace nothing: ckpt outside watches it ([`Outside`]).
    pub(crate) fn watch(&self, pids: &[i32]) -> Result<()> {
        if self.forwards() {
            return Ok(());
        }
        let me = sys::process::pidfd_open(std::process::id() as i32)?;
        let pidfds = pids
            .iter()
            .map(|&p| sys::process::pidfd_open(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let raw: Vec<i32> = pidfds.iter().map(|f| f.as_raw_fd()).collect();
        let (r, w) = sys::process::pipe()?;
        let pid = sys::uffd::spawn_watcher(me.as_raw_fd(), r.as_raw_fd(), &raw, pids)?;
        // The watcher shares our descriptor table: these stay open for it as long as
        // it needs them (we keep them until the end).
        std::mem::forget(me);
        std::mem::forget(pidfds);
        std::mem::forget(r);
        if let Ok(mut g) = self.watcher.lock() {
            *g = Some((pid, w));
        }
        Ok(())
    }

    /// Let the watcher go (every page is in, or the restore failed with nothing left).
    fn release_watcher(&self) {
        let taken = self.watcher.lock().ok().and_then(|mut g| g.take());
        if let Some((pid, w)) = taken {
            let _ = std::io::Write::write_all(&mut File::from(w), b"d");
            let _ = sys::process::wait_exit(pid);
        }
    }
}

/// Statistics of the background part.
#[derive(Debug, Default, Clone)]
pub struct LazyStats {
    pub faults: u64,
    /// Bytes copied in the background.
    pub bytes: u64,
    /// Bytes copied to serve faults.
    pub served: u64,
    pub fill: std::time::Duration,
}
