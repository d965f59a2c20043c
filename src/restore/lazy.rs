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

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{RestoreError, Result};
use crate::image::index::{self, IndexEntry};
use crate::image::{OwnedRecord, tag};
use crate::kinds::mem::pages::RecordSource;
use crate::sys;
use crate::sys::uffd::{Event, Fill, Uffd};

/// A fault is served with this aligned block around its page (within its piece).
const FAULT_BLOCK: u64 = 64 << 10;
/// The background copy goes this far at a time, then looks at the faults again.
const FILL_STEP: u64 = 1 << 20;
/// Page records kept read and decompressed.
const CACHED: usize = 4;
/// `--lazy=touch`: the server lets its records go after this long without a fault.
const TOUCH_IDLE_MS: i32 = 1000;

/// The image file, its records found by their offset.
pub(crate) struct LazyImage {
    file: File,
    entries: Vec<IndexEntry>,
    /// `migrate --lazy`: the records are those of the last image over the full image
    /// of the rounds before it (`file` and `entries` unused).
    comp: Option<Box<super::composite::Composite>>,
}

impl LazyImage {
    pub(crate) fn open(file: File) -> Result<Self> {
        let entries = index::scan(&file)?;
        Ok(Self {
            file,
            entries,
            comp: None,
        })
    }

    pub(crate) fn composite(c: super::composite::Composite, file: File) -> Self {
        Self {
            file,
            entries: Vec::new(),
            comp: Some(Box::new(c)),
        }
    }

    /// The pages still missing can no longer come (`migrate --lazy`).
    fn failed(&self) -> Option<String> {
        self.comp.as_ref().and_then(|c| c.failed())
    }

    /// Wait until every page still missing is in (`migrate --lazy`).
    fn wait_all(&self) -> Result<()> {
        match &self.comp {
            Some(c) => c.wait_all(),
            None => Ok(()),
        }
    }

    fn entry(&self, offset: u64) -> Result<&IndexEntry> {
        self.entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()
            .and_then(|i| self.entries.get(i))
            .ok_or_else(|| RestoreError::Stage(format!("no record at byte {offset}")))
    }

    /// The pages of the page record at `offset`, its checksum checked.
    pub(crate) fn pages(&self, offset: u64) -> Result<Vec<u8>> {
        self.pages_into(offset, Vec::new())
    }

    /// [`LazyImage::pages`] into `spare`, a buffer of an earlier record: its memory is
    /// touched already (on this VM a fresh 4 MiB buffer costs more in page faults than
    /// reading and checking the record).
    fn pages_into(&self, offset: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(c) = &self.comp {
            return c.pages_into(offset, spare);
        }
        self.record_into(offset, spare)
    }

    /// The record the pages keyed `key` come from, and where they start in its pages:
    /// for a plain image the record at byte `key`, from its start; through a chain, see
    /// `Composite::locate` (pieces of one record share it, so it is read once).
    fn locate(&self, key: u64) -> Result<(u64, u64)> {
        match &self.comp {
            Some(c) => c.locate(key),
            None => Ok((key, 0)),
        }
    }

    /// The pages of the record `rec` ([`LazyImage::locate`]), checked, into `spare`.
    fn record_into(&self, rec: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(c) = &self.comp {
            return c.record_pages(rec, spare);
        }
        let e = self.entry(rec)?;
        if !matches!(e.tag, tag::PAGES_LZ4 | tag::PAGES_ZSTD) {
            let mut raw = spare;
            index::read_payload(&self.file, e, &mut raw)?;
            return Ok(raw);
        }
        let mut raw = Vec::new();
        index::read_payload(&self.file, e, &mut raw)?;
        let mut pages = spare;
        pages.clear();
        match e.tag {
            tag::PAGES_LZ4 => crate::image::decompress_pages(&raw, &mut pages)?,
            _ => crate::image::decompress_pages_zstd(&raw, &mut pages)?,
        }
        Ok(pages)
    }
}

/// Records after the metadata for stage, from the index: page records without their
/// pages (`payload` empty, `record_len` their length), every other record read and
/// checked.
pub(crate) struct LazySource<'a> {
    img: &'a LazyImage,
    next: usize,
    comp: Option<super::composite::CompositeSource<'a>>,
}

impl<'a> LazySource<'a> {
    pub(crate) fn new(img: &'a LazyImage) -> Self {
        let comp = img
            .comp
            .as_deref()
            .map(|c| super::composite::CompositeSource::new(c, true));
        Self { img, next: 0, comp }
    }
}

impl RecordSource for LazySource<'_> {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        if let Some(c) = &mut self.comp {
            return c.next_record();
        }
        loop {
            let Some(e) = self.img.entries.get(self.next) else {
                return Ok(None);
            };
            self.next += 1;
            let rec = |t, payload: Vec<u8>, record_len| OwnedRecord {
                tag: t,
                flags: e.flags,
                arg: e.arg,
                offset: e.offset,
                payload,
                part: 0,
                record_len,
            };
            return Ok(Some(match e.tag {
                tag::CHECKPOINT => continue,
                tag::PAGES | tag::PAGES_LZ4 | tag::PAGES_ZSTD => {
                    rec(tag::PAGES, Vec::new(), index::pages_len(&self.img.file, e)?)
                }
                t => {
                    let mut buf = Vec::new();
                    index::read_payload(&self.img.file, e, &mut buf)?;
                    let n = buf.len() as u64;
                    rec(t, buf, n)
                }
            }));
        }
    }

    fn recycle(&mut self, _buf: Vec<u8>) {}
}

/// Pages of one page record still to be copied: `len` bytes at `addr` (where they are
/// now), from byte `skip` of the pages of the record at `rec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) rec: u64,
    pub(crate) skip: u64,
}

impl Piece {
    fn end(&self) -> u64 {
        self.addr + self.len
    }

    /// The part of it inside `[start, end)`, if any.
    fn cut(&self, start: u64, end: u64) -> Option<Piece> {
        let s = self.addr.max(start);
        let e = self.end().min(end);
        (s < e).then(|| Piece {
            addr: s,
            len: e - s,
            rec: self.rec,
            skip: self.skip + (s - self.addr),
        })
    }
}

/// Remove `[start, end)` from sorted, non-overlapping `pieces`.
fn remove_range(pieces: &mut Vec<Piece>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for p in pieces.drain(..) {
        if p.end() <= start || p.addr >= end {
            out.push(p);
            continue;
        }
        out.extend(p.cut(p.addr, start));
        out.extend(p.cut(end, p.end()));
    }
    *pieces = out;
}

/// `mremap` moved `[from, from + len)` to `to`: the pieces there move with it (what was
/// at the target is gone).
fn move_range(pieces: &mut Vec<Piece>, from: u64, to: u64, len: u64) {
    let moved: Vec<Piece> = pieces
        .iter()
        .filter_map(|p| p.cut(from, from + len))
        .map(|p| Piece {
            addr: p.addr - from + to,
            ..p
        })
        .collect();
    remove_range(pieces, from, from + len);
    remove_range(pieces, to, to + len);
    pieces.extend(moved);
    pieces.sort_by_key(|p| p.addr);
}

/// The index of the piece holding `addr`.
fn find(pieces: &[Piece], addr: u64) -> Option<usize> {
    let i = pieces.partition_point(|p| p.end() <= addr);
    pieces.get(i).filter(|p| p.addr <= addr).map(|_| i)
}

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

// ---- a tree in a new PID namespace: the server outside ----
//
// The builder of a tree restored with `--new-pidns` is the namespace's init, a process
// of ckpt's inside it; a thread of ckpt there would take a PID the tree may need, and
// the init's own job is to wait for the tree. So the builder sends each process's
// userfaultfd (SCM_RIGHTS) and pieces over a SOCK_SEQPACKET pair to ckpt outside, which
// runs the server and the watcher (over the init: its end ends the namespace).

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
fn send_mm(sock: &OwnedFd, uffd: &Uffd, regs: &[(u64, u64)], pieces: &[Piece]) -> Result<()> {
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

/// The server thread of a lazy restore (see the module comment).
pub(crate) struct Server {
    lazy: Arc<Lazy>,
    thread: Option<std::thread::JoinHandle<Result<LazyStats>>>,
}

impl Server {
    pub(crate) fn start(lazy: Arc<Lazy>) -> Result<Self> {
        let l = lazy.clone();
        let thread = std::thread::Builder::new()
            .name("ckpt-lazy".into())
            .spawn(move || serve(&l))
            .map_err(|e| RestoreError::Stage(format!("cannot start the lazy server: {e}")))?;
        Ok(Self {
            lazy,
            thread: Some(thread),
        })
    }

    /// The tree runs: copy the rest in the background.
    pub(crate) fn committed(&self) {
        self.lazy.filling.store(true, Ordering::SeqCst);
    }

    /// Wait until every page is in (and nothing of it is left in the tree).
    pub(crate) fn join(mut self) -> Result<LazyStats> {
        let r = match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(RestoreError::Stage("the lazy server stopped".into())),
        };
        self.lazy.release_watcher();
        r
    }
}

impl Drop for Server {
    /// A restore that failed: the server stops (the stubs are killed by stage's guard).
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.lazy.stop.store(true, Ordering::SeqCst);
            let _ = t.join();
            self.lazy.release_watcher();
        }
    }
}

/// Records read and decompressed lately, the most recently used last.
struct Cache {
    recs: VecDeque<(u64, Arc<Vec<u8>>)>,
}

impl Cache {
    /// The pages of the record the pages keyed `key` come from, and where they start
    /// in them.
    fn get(&mut self, img: &LazyImage, key: u64) -> Result<(Arc<Vec<u8>>, u64)> {
        let (rec, skip) = img.locate(key)?;
        if let Some(i) = self.recs.iter().position(|(o, _)| *o == rec) {
            // Kept the longest: through a chain, the pieces of a big record of an
            // ancestor alternate with the small records of the later images' pages.
            if let Some(hit) = self.recs.remove(i) {
                let d = hit.1.clone();
                self.recs.push_back(hit);
                return Ok((d, skip));
            }
        }
        // The oldest record's buffer is reused once nothing holds it.
        let spare = if self.recs.len() >= CACHED {
            self.recs
                .pop_front()
                .and_then(|(_, d)| Arc::try_unwrap(d).ok())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let d = Arc::new(img.record_into(rec, spare)?);
        self.recs.push_back((rec, d.clone()));
        Ok((d, skip))
    }
}

/// Copy `[start, end)` of piece `i` of `mm` (inside it) and take it out of the piece.
fn copy_part(
    mm: &mut Mm,
    i: usize,
    start: u64,
    end: u64,
    img: &LazyImage,
    cache: &mut Cache,
) -> Result<Fill> {
    let p = mm.pieces[i];
    let (data, base) = cache.get(img, p.rec)?;
    let from = (base + p.skip + (start - p.addr)) as usize;
    let to = from + (end - start) as usize;
    let Some(bytes) = data.get(from..to) else {
        return Err(RestoreError::Malformed(format!(
            "page record at byte {} is shorter than its area",
            p.rec
        )));
    };
    let r = mm.uffd.fill(start, bytes)?;
    if r == Fill::Done {
        let parts: Vec<Piece> = [p.cut(p.addr, start), p.cut(end, p.end())]
            .into_iter()
            .flatten()
            .collect();
        mm.pieces.splice(i..=i, parts);
    }
    Ok(r)
}

/// Serve a fault at `addr`; `Retry` when an event must be read first.
fn serve_fault(
    mm: &mut Mm,
    addr: u64,
    img: &LazyImage,
    cache: &mut Cache,
    served: &mut u64,
) -> Result<Fill> {
    let page = addr & !4095;
    match find(&mm.pieces, page) {
        Some(i) => {
            let p = mm.pieces[i];
            let b = page & !(FAULT_BLOCK - 1);
            let (s, e) = (b.max(p.addr), (b + FAULT_BLOCK).min(p.end()));
            let r = copy_part(mm, i, s, e, img, cache)?;
            if r == Fill::Done {
                *served += e - s;
                mm.uffd.wake(page, 4096);
            }
            Ok(r)
        }
        None => Ok(mm.uffd.zeropage(page)?),
    }
}

/// The failure-path tests' brakes (`fault-injection` builds), in milliseconds:
/// `CKPT_LAZY_STEP_MS`, how long the userfaultfds must stay quiet before each step of
/// the background copy (faults are served at once, the copy crawls, so a program finds
/// pages missing); `CKPT_LAZY_FAULT_MS`, a wait before each round of faults served (so
/// a test can kill ckpt while pages are still missing). Both 0 otherwise.
fn brake(_name: &str) -> i32 {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var(_name)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        return ms.max(0);
    }
    0
}

fn serve(lazy: &Lazy) -> Result<LazyStats> {
    let r = serve_inner(lazy);
    if let Err(e) = &r {
        if lazy.filling.load(Ordering::SeqCst) && !lazy.stop.load(Ordering::SeqCst) {
            // The tree runs and cannot get its pages: it must not go on. Our end makes
            // the watcher stop and kill it.
            eprintln!("ckpt: lazy restore: {e}; the restored tree is killed");
            std::process::exit(70);
        }
    }
    r
}

fn serve_inner(lazy: &Lazy) -> Result<LazyStats> {
    let img = &lazy.image;
    let mut mms: Vec<Mm> = Vec::new();
    let mut cache = Cache {
        recs: VecDeque::new(),
    };
    let mut stats = LazyStats::default();
    let mut events = Vec::new();
    let mut started: Option<std::time::Instant> = None;
    let (quiet_ms, fault_ms) = (brake("CKPT_LAZY_STEP_MS"), brake("CKPT_LAZY_FAULT_MS"));
    loop {
        if lazy.stop.load(Ordering::SeqCst) {
            return Ok(stats);
        }
        if let Ok(mut g) = lazy.incoming.lock() {
            mms.append(&mut g);
        }
        let filling = lazy.filling.load(Ordering::SeqCst);
        if filling && started.is_none() {
            started = Some(std::time::Instant::now());
        }
        if filling {
            // `migrate --lazy`: pages the tree may still need can no longer come.
            if let Some(why) = img.failed() {
                return Err(RestoreError::Stage(why));
            }
        }
        let left = mms
            .iter()
            .any(|m| !m.pieces.is_empty() || !m.waiting.is_empty());
        if filling && !left {
            // `migrate --lazy`: the tree may run alone only once every page is here
            // (the source is kept until then); until then a failure kills it.
            img.wait_all()?;
            break;
        }
        let mut pfds: Vec<libc::pollfd> = mms
            .iter()
            .map(|m| libc::pollfd {
                fd: m.uffd.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // `--lazy=touch`: after commit, faults only, until the copy's init exits.
        let touch = filling && lazy.mode == LazyMode::Touch;
        let end_fd = match lazy.end_with.lock() {
            Ok(g) => g.as_ref().map(|f| f.as_raw_fd()),
            Err(_) => None,
        };
        if let (true, Some(fd)) = (touch, end_fd) {
            pfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match (touch, filling) {
            (true, _) => TOUCH_IDLE_MS,
            (false, true) => quiet_ms,
            (false, false) => 2,
        };
        let n = sys::uffd::poll(&mut pfds, timeout)?;
        if touch {
            if end_fd.is_some() && pfds.last().is_some_and(|p| p.revents != 0) {
                // The copy is gone: nothing to serve any more.
                break;
            }
            if n == 0 {
                // Idle: the records read for the last faults go (the image's page
                // cache still holds them, shared by every copy).
                cache.recs.clear();
            }
        }
        if n > 0 && fault_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(fault_ms as u64));
        }
        let mut gone = Vec::new();
        let mut born = Vec::new();
        for (k, mm) in mms.iter_mut().enumerate() {
            if pfds[k].revents == 0 && mm.waiting.is_empty() {
                continue;
            }
            events.clear();
            mm.uffd.read_events(&mut events)?;
            for ev in events.drain(..) {
                match ev {
                    Event::Fault { addr } => {
                        stats.faults += 1;
                        mm.waiting.push(addr);
                    }
                    Event::Fork(uffd) => born.push(Mm {
                        uffd,
                        pieces: mm.pieces.clone(),
                        regs: mm.regs.clone(),
                        waiting: Vec::new(),
                    }),
                    Event::Remap { from, to, len } => {
                        move_range(&mut mm.pieces, from, to, len);
                        let mut regs: Vec<Piece> = mm
                            .regs
                            .iter()
                            .map(|&(s, e)| Piece {
                                addr: s,
                                len: e - s,
                                rec: 0,
                                skip: 0,
                            })
                            .collect();
                        move_range(&mut regs, from, to, len);
                        mm.regs = regs.iter().map(|p| (p.addr, p.end())).collect();
                    }
                    Event::Remove { start, end } => remove_range(&mut mm.pieces, start, end),
                    Event::Unmap { start, end } => {
                        remove_range(&mut mm.pieces, start, end);
                        let mut regs: Vec<Piece> = mm
                            .regs
                            .iter()
                            .map(|&(s, e)| Piece {
                                addr: s,
                                len: e - s,
                                rec: 0,
                                skip: 0,
                            })
                            .collect();
                        remove_range(&mut regs, start, end);
                        mm.regs = regs.iter().map(|p| (p.addr, p.end())).collect();
                    }
                }
            }
            let mut still = Vec::new();
            for addr in std::mem::take(&mut mm.waiting) {
                match serve_fault(mm, addr, img, &mut cache, &mut stats.served)? {
                    Fill::Done => {}
                    Fill::Retry => still.push(addr),
                    Fill::Gone => {
                        gone.push(k);
                        break;
                    }
                }
            }
            mm.waiting = still;
        }
        for k in gone.into_iter().rev() {
            mms.remove(k);
        }
        mms.extend(born);
        if !filling || touch {
            continue;
        }
        if quiet_ms > 0 && n > 0 {
            continue;
        }
        // One step of the background copy: the lowest piece of the first memory
        // that has one.
        if let Some(k) = mms.iter().position(|m| !m.pieces.is_empty()) {
            let mm = &mut mms[k];
            let p = mm.pieces[0];
            let end = p.end().min(p.addr + FILL_STEP);
            match copy_part(mm, 0, p.addr, end, img, &mut cache)? {
                Fill::Done => stats.bytes += end - p.addr,
                Fill::Retry => {}
                Fill::Gone => {
                    mms.remove(k);
                }
            }
        }
    }
    // Every page is in: unregister (closing would do it too) and close.
    for mm in &mms {
        for &(s, e) in &mm.regs {
            let _ = mm.uffd.unregister(s, e - s);
        }
    }
    drop(mms);
    stats.fill = started.map(|t| t.elapsed()).unwrap_or_default();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    crate::error::time_mark(&match lazy.mode {
        LazyMode::Fill => format!(
            "lazy: filled {:.1} MiB in {:.1} ms ({:.2} GB/s), {} faults",
            mib(stats.bytes),
            stats.fill.as_secs_f64() * 1e3,
            stats.bytes as f64 / stats.fill.as_secs_f64().max(1e-9) / 1e9,
            stats.faults
        ),
        LazyMode::Touch => format!(
            "lazy: the copy ended, {} faults served ({:.1} MiB)",
            stats.faults,
            mib(stats.served)
        ),
    });
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(addr: u64, len: u64, rec: u64, skip: u64) -> Piece {
        Piece {
            addr,
            len,
            rec,
            skip,
        }
    }

    #[test]
    fn remove_splits_pieces() {
        let mut v = vec![p(0x1000, 0x4000, 7, 0), p(0x8000, 0x1000, 8, 0)];
        remove_range(&mut v, 0x2000, 0x3000);
        assert_eq!(
            v,
            vec![
                p(0x1000, 0x1000, 7, 0),
                p(0x3000, 0x2000, 7, 0x2000),
                p(0x8000, 0x1000, 8, 0)
            ]
        );
        remove_range(&mut v, 0, 0x10000);
        assert!(v.is_empty());
    }

    #[test]
    fn remap_moves_the_pieces_inside_only() {
        let mut v = vec![p(0x1000, 0x4000, 7, 0), p(0x20000, 0x1000, 9, 0)];
        // The second half of the first piece moves to 0x10000; the target had the
        // third piece's neighbour only.
        move_range(&mut v, 0x3000, 0x10000, 0x2000);
        assert_eq!(
            v,
            vec![
                p(0x1000, 0x2000, 7, 0),
                p(0x10000, 0x2000, 7, 0x2000),
                p(0x20000, 0x1000, 9, 0)
            ]
        );
        // What was at the target goes.
        move_range(&mut v, 0x1000, 0x20000, 0x1000);
        assert_eq!(
            v,
            vec![
                p(0x2000, 0x1000, 7, 0x1000),
                p(0x10000, 0x2000, 7, 0x2000),
                p(0x20000, 0x1000, 7, 0)
            ]
        );
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

    #[test]
    fn find_gives_the_piece_holding_an_address() {
        let v = vec![p(0x1000, 0x2000, 1, 0), p(0x8000, 0x1000, 2, 0)];
        assert_eq!(find(&v, 0x1000), Some(0));
        assert_eq!(find(&v, 0x2fff), Some(0));
        assert_eq!(find(&v, 0x3000), None);
        assert_eq!(find(&v, 0x8000), Some(1));
        assert_eq!(find(&v, 0x9000), None);
    }
}
