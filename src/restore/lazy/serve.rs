//! The server thread of a lazy restore (see the module comment of `restore::lazy`):
//! faults served, the program's events followed, the rest copied in the background.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::pieces::{find, move_range, remove_range};
use super::{Lazy, LazyImage, LazyMode, LazyStats, Mm, Piece};
use crate::restore::{RestoreError, Result};
use crate::sys;
use crate::sys::uffd::{Event, Fill};

/// A fault is served with this aligned block around its page (within its piece).
const FAULT_BLOCK: u64 = 64 << 10;
/// The background copy goes this far at a time, then looks at the faults again.
const FILL_STEP: u64 = 1 << 20;
/// Page records kept read and decompressed.
const CACHED: usize = 4;
/// `--lazy=touch`: the server lets its records go after this long without a fault.
const TOUCH_IDLE_MS: i32 = 1000;

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

pub(super) fn serve(lazy: &Lazy) -> Result<LazyStats> {
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
                        let mut regs = as_pieces(&mm.regs);
                        move_range(&mut regs, from, to, len);
                        mm.regs = as_ranges(&regs);
                    }
                    Event::Remove { start, end } => remove_range(&mut mm.pieces, start, end),
                    Event::Unmap { start, end } => {
                        remove_range(&mut mm.pieces, start, end);
                        let mut regs = as_pieces(&mm.regs);
                        remove_range(&mut regs, start, end);
                        mm.regs = as_ranges(&regs);
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

/// Registered ranges as pieces, so the pieces' moves and removals apply to them too.
fn as_pieces(regs: &[(u64, u64)]) -> Vec<Piece> {
    regs.iter()
        .map(|&(s, e)| Piece {
            addr: s,
            len: e - s,
            rec: 0,
            skip: 0,
        })
        .collect()
}

/// The ranges of pieces made by [`as_pieces`].
fn as_ranges(pieces: &[Piece]) -> Vec<(u64, u64)> {
    pieces.iter().map(|p| (p.addr, p.end())).collect()
}
