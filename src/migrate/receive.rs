//! The destination of a migration (`ckpt receive`): takes the images of one
//! migration, verifies each as it comes and every link of their chain, restores the
//! last one, and tells the source when the tree is past its point of no return.
//!
//! The images are unnamed files (O_TMPFILE) in a private directory (by default the
//! temporary directory): nothing of them is left, however ckpt ends, even by SIGKILL.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::{Conn, ImageEnd, ImageHead, Kind, Message, point};
use crate::restore::{self, HostView};

/// What `ckpt receive` restores with.
pub struct ReceiveOptions {
    pub view: HostView,
    pub new_pidns: bool,
    /// Where the images are kept (unnamed files) while they come in.
    pub dir: PathBuf,
    pub say: Option<super::Say>,
}

/// What a receive did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReceiveStats {
    /// The restored root's PID here.
    pub pid: i32,
    /// Images received (the rounds, the final one included).
    pub rounds: usize,
    pub bytes_received: u64,
    /// From the last image's arrival to the commit: merging the chain, plan, stage.
    pub restore_ms: f64,
    /// Of which reading the last image's index over the pages received before it.
    pub merge_ms: f64,
    /// Each round but the last: from its last byte received to its answer (indexed and
    /// kept in the store; see [`Store`]).
    pub store_ms: Vec<f64>,
    /// `--lazy`: the copy ran before the last pages came (see `migrate::send`).
    pub lazy: bool,
}

/// The pages of the rounds before the last image: a log of the rounds, each kept as
/// it came (its unnamed file) and indexed as it arrives ([`Composite::link`]), so that
/// a round costs its own size, never the store's. The last image is opened over it
/// ([`Composite::over`]), which reads every page from the newest round that has it and
/// only the pages the last image's processes still have (`Process::inherited`, each
/// round's own ranges intersected on the way down: a page of an area unmapped or moved
/// since does not come back). Compacted rarely: once the deltas kept hold more bytes
/// than the image they start from, the rounds are merged into one full image
/// ([`chain::merge`](restore::chain::merge), each record checked as it is read), so
/// the files kept stay under twice the memory received and the merge's cost is paid
/// back by the rounds that filled the log.
///
/// [`Composite::link`]: restore::composite::Composite::link
/// [`Composite::over`]: restore::composite::Composite::over
#[derive(Default)]
struct Store {
    /// The oldest first: a full image, then the rounds after it, each with the
    /// identity its child names as its parent.
    links: Vec<(restore::chain::Link, (u64, u64))>,
    /// Bytes of the full image the log starts from.
    base: u64,
    /// Bytes of the rounds after it.
    log: u64,
}

/// Whether a store whose full image has `base` bytes and whose deltas after it have
/// `log` is due to be merged into one full image (see [`Store`]).
fn compaction_due(base: u64, log: u64) -> bool {
    log > base
}

/// Test hook (feature `fault-injection`): CKPT_RECEIVE_COMPACT=always merges the store
/// after every round, so that the tests go through the compaction with real rounds.
fn compaction_forced() -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var("CKPT_RECEIVE_COMPACT").is_ok_and(|v| v == "always") {
        return true;
    }
    false
}

impl Store {
    fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Keep round `img` (`size` bytes; checked by [`take_image`] to be the child of the
    /// newest round kept); returns whether the store was compacted.
    fn add(&mut self, img: &Received, size: u64, dir: &Path) -> Result<bool, String> {
        crate::error::fault_point("receive: store a round").map_err(|e| e.to_string())?;
        let name = format!("round {}", img.round);
        let file = img.file.try_clone().map_err(|e| e.to_string())?;
        let link = restore::composite::Composite::link(&name, file).map_err(|e| e.to_string())?;
        let id = (img.id.records, img.id.hash);
        if self.links.is_empty() {
            self.base = size;
        } else {
            self.log += size;
        }
        self.links.push((link, id));
        if !compaction_due(self.base, self.log) && !compaction_forced() {
            return Ok(false);
        }
        crate::error::time_mark("receive: compacting the rounds");
        crate::error::fault_point("receive: compact the rounds").map_err(|e| e.to_string())?;
        let links = std::mem::take(&mut self.links);
        let merged =
            restore::composite::Composite::of_links(links.into_iter().rev().collect(), None)
                .and_then(|c| restore::chain::merge(&c, dir))
                .map_err(|e| format!("cannot merge the rounds received: {e}"))?;
        self.base = merged.metadata().map(|m| m.len()).unwrap_or(0);
        self.log = 0;
        let link =
            restore::composite::Composite::link(&format!("rounds 0 to {}", img.round), merged)
                .map_err(|e| e.to_string())?;
        self.links.push((link, id));
        Ok(true)
    }

    /// The links, the newest first, for [`restore::composite::Composite::over`].
    fn newest_first(self) -> Vec<(restore::chain::Link, (u64, u64))> {
        self.links.into_iter().rev().collect()
    }
}

/// One image received.
struct Received {
    file: File,
    id: ImageEnd,
    round: u32,
    /// `--lazy`: the byte ranges still to come (see [`take_image`]).
    held: Vec<(u64, u64)>,
}

impl Received {
    /// A path that opens it (it has no name).
    fn path(&self) -> PathBuf {
        fd_path(&self.file)
    }
}

/// A path that opens `f` (an unnamed file).
fn fd_path(f: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Take one migration from `listener` and restore it; returns the tree, running.
pub fn receive(
    listener: &TcpListener,
    opts: ReceiveOptions,
) -> Result<(restore::Launched, ReceiveStats), String> {
    let say = |m: &str| {
        if let Some(s) = &opts.say {
            s(m)
        }
    };
    let (stream, from) = listener
        .accept()
        .map_err(|e| format!("cannot accept a connection: {e}"))?;
    say(&format!("connection from {from}"));
    let mut conn = Conn::new(stream).map_err(|e| e.to_string())?;
    conn.handshake(false)?;
    // The last round received (the next one's parent), and the pages of every round
    // before the last image (the store: each round kept and indexed as it arrives,
    // while the source runs, so that a round costs its own size and the frozen window
    // never follows the store).
    // (Its round and identity only: its file is the store's, which may let it go.)
    let mut prev: Option<(u32, (u64, u64))> = None;
    let mut store = Store::default();
    let mut bytes = 0u64;
    let mut rounds = 0usize;
    let mut store_ms = Vec::new();
    let last = loop {
        let r = take_image(&mut conn, &opts.dir, prev);
        let (img, head) = match r {
            Ok(x) => x,
            Err(e) => {
                conn.send_error(&e);
                return Err(e);
            }
        };
        bytes += head.size;
        rounds += 1;
        say(&format!(
            "round {} received ({:.1} MiB){}",
            head.round,
            head.size as f64 / (1 << 20) as f64,
            if head.last { ", the last" } else { "" }
        ));
        point("receive: image received", &conn);
        crate::error::time_mark("receive: image received");
        if head.last {
            conn.send(Kind::Received, b"")?;
            break img;
        }
        // A round is answered once it is in the store: the source dumps its next round
        // only then, so its final image never waits here behind the store's work (a
        // compaction, rarely) while its tree is frozen.
        let t = std::time::Instant::now();
        let compacted = match store.add(&img, head.size, &opts.dir) {
            Ok(c) => c,
            Err(e) => {
                let e = format!("round {}: {e}", head.round);
                conn.send_error(&e);
                return Err(e);
            }
        };
        point("receive: round stored", &conn);
        prev = Some((img.round, (img.id.records, img.id.hash)));
        drop(img);
        conn.send(Kind::Received, b"")?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        store_ms.push(ms);
        say(&format!(
            "round {} stored in {ms:.1} ms{}",
            head.round,
            if compacted {
                " (the rounds so far merged into one image)"
            } else {
                ""
            }
        ));
    };
    let t = std::time::Instant::now();
    let conn = Arc::new(Mutex::new(Some(conn)));
    // (The last image was checked to be the child of the newest round in the store.)
    if store.is_empty() {
        let e = "the source sent no round before the last".to_string();
        if let Ok(mut g) = conn.lock() {
            if let Some(c) = g.as_mut() {
                c.send_error(&e);
            }
        }
        return Err(e);
    }
    let mut merge_ms = 0.0;
    if !last.held.is_empty() {
        let c = conn.lock().ok().and_then(|mut g| g.take());
        let Some(c) = c else {
            return Err("internal error: the connection is gone".into());
        };
        return receive_lazy(c, &last, store, &opts, (rounds, bytes, store_ms), t);
    }
    let r = restore_last(&last, store, &opts, conn.clone(), &mut merge_ms);
    let Ok(mut g) = conn.lock() else {
        return Err("internal error: the connection's lock is poisoned".into());
    };
    let Some(c) = g.as_mut() else {
        return Err("internal error: the connection is gone".into());
    };
    match r {
        Ok(launched) => {
            point("receive: committed", c);
            // The source kills its tree on this (or, if it never arrives, keeps it
            // stopped).
            let _ = c.send_json(
                Kind::Committed,
                &Message {
                    message: String::new(),
                    pid: launched.root,
                },
            );
            let st = ReceiveStats {
                pid: launched.root,
                rounds,
                bytes_received: bytes,
                restore_ms: t.elapsed().as_secs_f64() * 1e3,
                merge_ms,
                store_ms,
                lazy: false,
            };
            Ok((launched, st))
        }
        Err(e) => {
            c.send_error(&e);
            Err(e)
        }
    }
}

// ---- `--lazy`: the last image's pages come after it ----

/// The held ranges of the last image coming in (`--lazy`), as the lazy restore waits
/// for them ([`restore::composite::Fetch`]).
struct NetFetch {
    /// The process that takes the pages (a forked builder sees them in the file only).
    owner: u32,
    file: File,
    /// The held ranges: (offset, length), sorted.
    ranges: Vec<(u64, u64)>,
    st: Mutex<FetchState>,
    cv: Condvar,
    /// Our side of the connection, for what we send (one frame per write).
    out: Arc<Mutex<TcpStream>>,
    /// The same, for a forked builder (which must not take a lock a thread of ours
    /// may have held when it was forked).
    raw_out: TcpStream,
}

#[derive(Default)]
struct FetchState {
    got: Vec<u64>,
    asked: Vec<bool>,
    left: usize,
    failed: Option<String>,
    /// The copy runs (COMMITTED was sent).
    committed: bool,
    /// ALL_IN was sent.
    told: bool,
}

impl NetFetch {
    fn send(&self, kind: Kind, payload: &[u8]) -> Result<(), String> {
        let g = self
            .out
            .lock()
            .map_err(|_| "internal error: the connection's lock is poisoned".to_string())?;
        super::send_on(&g, kind, payload)
    }

    fn fail(&self, why: String) {
        if let Ok(mut st) = self.st.lock() {
            if st.left > 0 && st.failed.is_none() {
                st.failed = Some(why);
            }
        }
        self.cv.notify_all();
    }

    /// The copy runs: tell the source once every page is in (now, or when the last
    /// arrives).
    fn committed(&self) {
        let tell = match self.st.lock() {
            Ok(mut st) => {
                st.committed = true;
                let t = st.left == 0 && !st.told;
                st.told |= t;
                t
            }
            Err(_) => false,
        };
        if tell {
            let _ = self.send(Kind::AllIn, b"");
        }
    }

    /// Take frames until the end: pages into the file, COMMIT (or the end) to `ctl`.
    fn take(&self, mut conn: Conn, ctl: File) {
        use std::os::unix::fs::FileExt;
        let mut ctl = Some(ctl);
        let signal = |ctl: &mut Option<File>, b: u8| {
            if let Some(mut f) = ctl.take() {
                let _ = f.write_all(&[b]);
            }
        };
        loop {
            let f = match conn.recv() {
                Ok(f) => f,
                Err(e) => {
                    let left = self.st.lock().map(|s| s.left).unwrap_or(1);
                    if conn.timed_out && left == 0 {
                        continue;
                    }
                    self.fail(format!(
                        "the source's pages stopped coming ({e}): the copy here cannot go on"
                    ));
                    signal(&mut ctl, b'x');
                    return;
                }
            };
            match f.kind {
                Kind::Pages if f.payload.len() > 8 => {
                    let le = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or_default());
                    let off = le(&f.payload[..8]);
                    let data = &f.payload[8..];
                    let i = self.ranges.partition_point(|r| r.0 + r.1 <= off);
                    let fits = self
                        .ranges
                        .get(i)
                        .is_some_and(|r| r.0 <= off && off + data.len() as u64 <= r.0 + r.1);
                    if !fits {
                        self.fail("the source sent pages outside the ranges it held".into());
                        signal(&mut ctl, b'x');
                        return;
                    }
                    if let Err(e) = self.file.write_all_at(data, off) {
                        self.fail(format!("cannot keep the pages that came: {e}"));
                        signal(&mut ctl, b'x');
                        return;
                    }
                    let tell = match self.st.lock() {
                        Ok(mut st) => {
                            st.got[i] += data.len() as u64;
                            if st.got[i] == self.ranges[i].1 {
                                st.left -= 1;
                            }
                            let t = st.left == 0 && st.committed && !st.told;
                            st.told |= t;
                            t
                        }
                        Err(_) => false,
                    };
                    self.cv.notify_all();
                    if tell {
                        let _ = self.send(Kind::AllIn, b"");
                    }
                }
                Kind::Commit => signal(&mut ctl, b'c'),
                Kind::Error => {
                    let m = f.json::<Message>().map(|m| m.message).unwrap_or_default();
                    self.fail(format!("the source gave up: {m}"));
                    signal(&mut ctl, b'x');
                    return;
                }
                k => {
                    self.fail(format!("the source sent {k:?} while pages were due"));
                    signal(&mut ctl, b'x');
                    return;
                }
            }
        }
    }
}

impl restore::composite::Fetch for NetFetch {
    fn ensure(&self, e: &crate::image::index::IndexEntry) -> Result<(), String> {
        let Ok(i) = self.ranges.binary_search_by_key(&e.data_off, |r| r.0) else {
            return Ok(());
        };
        if std::process::id() != self.owner {
            // A forked builder: it asks for them (one write, as every frame), and they
            // land in the file, which it reads until they are whole (their checksum
            // right).
            let t = std::time::Instant::now();
            let mut buf = Vec::new();
            if crate::image::index::read_payload(&self.file, e, &mut buf).is_ok() {
                return Ok(());
            }
            super::send_on(&self.raw_out, Kind::Want, &e.data_off.to_le_bytes())?;
            loop {
                if crate::image::index::read_payload(&self.file, e, &mut buf).is_ok() {
                    return Ok(());
                }
                if t.elapsed() > super::LAZY_TIMEOUT * 4 {
                    return Err("the source's pages did not come".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let mut st = self
            .st
            .lock()
            .map_err(|_| "internal error: the pages' lock is poisoned".to_string())?;
        if st.got[i] < self.ranges[i].1 && !st.asked[i] {
            st.asked[i] = true;
            drop(st);
            self.send(Kind::Want, &e.data_off.to_le_bytes())?;
            st = self
                .st
                .lock()
                .map_err(|_| "internal error: the pages' lock is poisoned".to_string())?;
        }
        loop {
            if st.got[i] == self.ranges[i].1 {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(f.clone());
            }
            st = self
                .cv
                .wait(st)
                .map_err(|_| "internal error: the pages' lock is poisoned".to_string())?;
        }
    }

    fn wait_all(&self) -> Result<(), String> {
        let mut st = self
            .st
            .lock()
            .map_err(|_| "internal error: the pages' lock is poisoned".to_string())?;
        loop {
            if st.left == 0 {
                return Ok(());
            }
            if let Some(f) = &st.failed {
                return Err(f.clone());
            }
            st = self
                .cv
                .wait(st)
                .map_err(|_| "internal error: the pages' lock is poisoned".to_string())?;
        }
    }

    fn failed(&self) -> Option<String> {
        self.st.lock().ok().and_then(|s| s.failed.clone())
    }
}

/// The rest of a `--lazy` migration once the last image (without its pages) is here:
/// take its pages as they come, restore it lazily over the rounds before, commit when
/// the source says so, and tell it when every page is in.
#[allow(clippy::too_many_arguments)]
fn receive_lazy(
    conn: Conn,
    last: &Received,
    store: Store,
    opts: &ReceiveOptions,
    (rounds, bytes, store_ms): (usize, u64, Vec<f64>),
    t: std::time::Instant,
) -> Result<(restore::Launched, ReceiveStats), String> {
    let io = |e: std::io::Error| format!("the connection to the source: {e}");
    let out = Arc::new(Mutex::new(conn.stream.try_clone().map_err(io)?));
    let gave_up = |m: &str| {
        if let Ok(g) = out.lock() {
            let _ = super::send_on(
                &g,
                Kind::Error,
                &serde_json::to_vec(&Message {
                    message: m.to_string(),
                    pid: 0,
                })
                .unwrap_or_default(),
            );
        }
    };
    let r = (|| {
        // Pages must keep coming while any is missing.
        conn.stream
            .set_read_timeout(Some(super::LAZY_TIMEOUT))
            .map_err(io)?;
        let ranges = last.held.clone();
        let n = ranges.len();
        let fetch = Arc::new(NetFetch {
            owner: std::process::id(),
            file: last.file.try_clone().map_err(|e| e.to_string())?,
            ranges,
            st: Mutex::new(FetchState {
                got: vec![0; n],
                asked: vec![false; n],
                left: n,
                ..Default::default()
            }),
            cv: Condvar::new(),
            out: out.clone(),
            raw_out: conn.stream.try_clone().map_err(io)?,
        });
        // Each held range must be the payload of a page record (anything else would
        // be read before it came).
        let entries =
            crate::image::index::scan(&last.file).map_err(|e| format!("the last image: {e}"))?;
        for r in &fetch.ranges {
            let ok = entries
                .iter()
                .any(|e| e.tag == crate::image::tag::PAGES && (e.data_off, e.len) == (r.0, r.1));
            if !ok {
                return Err("the source held back bytes that are not pages".to_string());
            }
        }
        let (ctl_r, ctl_w) = crate::sys::process::pipe().map_err(|e| e.to_string())?;
        let (ctl_r, ctl_w) = (File::from(ctl_r), File::from(ctl_w));
        let f = fetch.clone();
        std::thread::Builder::new()
            .name("ckpt-migrate-rx".into())
            .spawn(move || f.take(conn, ctl_w))
            .map_err(|e| format!("cannot start the page receiver: {e}"))?;
        let c = restore::composite::Composite::over(
            last.file.try_clone().map_err(|e| e.to_string())?,
            store.newest_first(),
            Some(fetch.clone() as Arc<dyn restore::composite::Fetch>),
        )
        .map_err(|e| e.to_string())?;
        crate::error::time_mark("receive: composite opened");
        let meta = c.meta_image().map_err(|e| e.to_string())?;
        let mut prepared =
            restore::prepare(std::io::Cursor::new(meta), &opts.view).map_err(|e| e.to_string())?;
        prepared
            .take_randomization(false)
            .map_err(|e| e.to_string())?;
        prepared.set_composite(c, true).map_err(|e| e.to_string())?;
        if let Ok(g) = out.lock() {
            super::point_on("receive: planned", &g);
        }
        crate::error::time_mark("receive: planned");
        // The connections locked here until the copy runs, as in pre-copy.
        let lock = ConnLock::hold(last)?;
        let hook_lock = lock.clone();
        let me = std::process::id();
        let hook_out = out.clone();
        let hook: restore::RestoreHook = Arc::new(move |step| {
            let restore::RestoreStep::Staged { .. } = step;
            hook_lock.forget_in_child(me);
            {
                let g = hook_out
                    .lock()
                    .map_err(|_| "internal error: the connection's lock is poisoned")?;
                super::send_on(&g, Kind::Staged, b"")?;
                super::point_on("receive: staged", &g);
            }
            // COMMIT comes through the page receiver.
            let mut fds = [libc::pollfd {
                fd: ctl_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = super::PEER_TIMEOUT.as_millis() as i32;
            let n = crate::sys::uffd::poll(&mut fds, ms).map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            let got = n > 0 && (&ctl_r).read(&mut b).is_ok_and(|k| k == 1);
            if got && b[0] == b'c' {
                Ok(())
            } else {
                Err("the source did not say to commit".into())
            }
        });
        let launched = prepared
            .with_hook(hook)
            .launch(opts.new_pidns)
            .map_err(|e| e.to_string());
        lock.release();
        Ok((launched?, fetch))
    })();
    match r {
        Ok((launched, fetch)) => {
            if let Ok(g) = out.lock() {
                super::point_on("receive: committed", &g);
                let _ = super::send_on(
                    &g,
                    Kind::Committed,
                    &serde_json::to_vec(&Message {
                        message: String::new(),
                        pid: launched.root,
                    })
                    .unwrap_or_default(),
                );
            }
            fetch.committed();
            let st = ReceiveStats {
                pid: launched.root,
                rounds,
                bytes_received: bytes,
                restore_ms: t.elapsed().as_secs_f64() * 1e3,
                merge_ms: 0.0,
                store_ms,
                lazy: true,
            };
            Ok((launched, st))
        }
        Err(e) => {
            gave_up(&e);
            Err(e)
        }
    }
}

/// Receive the next image into an unnamed file in `dir` and check it: its bytes have
/// the identity the source gave, and it is the child of the one before (`prev`: its
/// round and identity).
fn take_image(
    conn: &mut Conn,
    dir: &Path,
    prev: Option<(u32, (u64, u64))>,
) -> Result<(Received, ImageHead), String> {
    let due = prev.map_or(0, |p| p.0 + 1);
    let f = conn.recv()?;
    let head: ImageHead = match f.kind {
        Kind::Image => f.json()?,
        Kind::Error => return Err(f.json::<Message>()?.message),
        k => return Err(format!("the source sent {k:?} where an image was due")),
    };
    if head.round != due {
        return Err(format!(
            "the source sent round {} where round {due} was due",
            head.round
        ));
    }
    // `--lazy`: the byte ranges held back (the final image's page payloads), which
    // stay holes in the file until they come.
    let mut held: Vec<(u64, u64)> = Vec::new();
    if head.held > 0 && !head.last {
        return Err("the source held back bytes of an image that is not the last".into());
    }
    while (held.len() as u64) < head.held {
        let f = conn.expect(Kind::Held)?;
        if f.payload.len() % 16 != 0 {
            return Err("a bad HELD message from the source".into());
        }
        for w in f.payload.chunks(16) {
            let (a, b) = w.split_at(8);
            let le = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or_default());
            held.push((le(a), le(b)));
        }
    }
    let mut end_of_last = 0u64;
    for &(off, len) in &held {
        if off < end_of_last || len == 0 || off.checked_add(len).is_none_or(|e| e > head.size) {
            return Err("the source held back byte ranges that are not in the image".into());
        }
        end_of_last = off + len;
    }
    let file = crate::restore::chain::unnamed_file(&dir.join("image"))
        .map_err(|e| format!("cannot keep the image in {}: {e}", dir.display()))?;
    let keep = |e: std::io::Error| format!("cannot keep the image in {}: {e}", dir.display());
    if held.is_empty() {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut got = 0u64;
        while got < head.size {
            let d = conn.expect(Kind::Data)?;
            got += d.payload.len() as u64;
            if got > head.size {
                return Err("the source sent more bytes than the image has".into());
            }
            w.write_all(&d.payload).map_err(keep)?;
        }
        w.flush().map_err(keep)?;
        drop(w);
    } else {
        use std::os::unix::fs::FileExt;
        file.set_len(head.size).map_err(keep)?;
        // The bytes come without the held ranges: each goes where it is in the image.
        let (mut at, mut next) = (0u64, 0usize);
        let skip = |at: &mut u64, next: &mut usize| {
            while held.get(*next).is_some_and(|h| h.0 == *at) {
                *at += held[*next].1;
                *next += 1;
            }
        };
        skip(&mut at, &mut next);
        while at < head.size {
            let d = conn.expect(Kind::Data)?;
            let mut data: &[u8] = &d.payload;
            while !data.is_empty() {
                if at >= head.size {
                    return Err("the source sent more bytes than the image has".into());
                }
                let upto = held.get(next).map_or(head.size, |h| h.0);
                let n = ((upto - at) as usize).min(data.len());
                file.write_all_at(&data[..n], at).map_err(keep)?;
                data = &data[n..];
                at += n as u64;
                skip(&mut at, &mut next);
            }
        }
    }
    let end: ImageEnd = conn.expect(Kind::End)?.json()?;
    let img = Received {
        file,
        id: end,
        round: head.round,
        held,
    };
    let id = crate::dump::track::image_identity(&img.path()).map_err(|e| e.to_string())?;
    if (id.records, id.hash) != (img.id.records, img.id.hash) {
        return Err(format!(
            "round {}: the image received has hash {:016x} ({} records), the source sent \
             one with {:016x} ({} records)",
            head.round, id.hash, id.records, img.id.hash, img.id.records
        ));
    }
    let meta = crate::restore::chain::meta_of(&img.path()).map_err(|e| e.to_string())?;
    match (&meta.parent, prev) {
        (None, None) => {}
        (Some(p), Some(prev)) if (p.records, p.hash) == prev.1 => {}
        (Some(_), Some(_)) => {
            return Err(format!(
                "round {}: the image is not the child of round {}",
                head.round,
                head.round - 1
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "round {}: a full image where a delta was due",
                head.round
            ));
        }
        (Some(_), None) => {
            return Err("round 0: a delta where the full image was due".into());
        }
    }
    Ok((img, head))
}

/// Open the last image over the pages received before it (`store`), plan, stage, and
/// commit once the source says so.
fn restore_last(
    last: &Received,
    store: Store,
    opts: &ReceiveOptions,
    conn: Arc<Mutex<Option<Conn>>>,
    merge_ms: &mut f64,
) -> Result<restore::Launched, String> {
    // The last image's records over the rounds before, read in place (no merged image
    // is written).
    let t = std::time::Instant::now();
    let c = restore::composite::Composite::over(
        last.file.try_clone().map_err(|e| e.to_string())?,
        store.newest_first(),
        None,
    )
    .map_err(|e| e.to_string())?;
    *merge_ms = t.elapsed().as_secs_f64() * 1e3;
    crate::error::time_mark("receive: composite opened");
    let meta = c.meta_image().map_err(|e| e.to_string())?;
    let mut prepared =
        restore::prepare(std::io::Cursor::new(meta), &opts.view).map_err(|e| e.to_string())?;
    prepared
        .set_composite(c, false)
        .map_err(|e| e.to_string())?;
    // ckpt cannot execute itself again here (the image is not a file of its own).
    prepared
        .take_randomization(false)
        .map_err(|e| e.to_string())?;
    if let Ok(g) = conn.lock() {
        if let Some(c) = g.as_ref() {
            point("receive: planned", c);
            crate::error::time_mark("receive: planned");
        }
    }
    let lock = ConnLock::hold(last)?;
    let hook_lock = lock.clone();
    let hook_conn = conn.clone();
    let me = std::process::id();
    let hook: restore::RestoreHook = Arc::new(move |step| {
        let restore::RestoreStep::Staged { .. } = step;
        let Ok(mut g) = hook_conn.lock() else {
            return Err("internal error: the connection's lock is poisoned".into());
        };
        let Some(c) = g.as_mut() else {
            return Err("internal error: the connection is gone".into());
        };
        c.send(Kind::Staged, b"")?;
        point("receive: staged", c);
        let r = c
            .expect(Kind::Commit)
            .map(|_| ())
            .map_err(|e| format!("the source did not say to commit: {e}"));
        // With --new-pidns this runs in the namespace's init, a forked child that
        // stays as the tree's reaper: its copy of the connection goes, so that the
        // source sees the end of the connection when we end.
        if std::process::id() != me {
            g.take();
            hook_lock.forget_in_child(me);
        }
        r
    });
    let r = prepared
        .with_hook(hook)
        .launch(opts.new_pidns)
        .map_err(|e| e.to_string());
    lock.release();
    r
}

/// The lock of the last image's TCP connections on this side, until the copy runs (a
/// table of ours that goes with this process, however it ends; within one network
/// namespace the source's lock is there as well): restore builds them in repair mode,
/// takes the lock over at its commit and releases it once the tree runs; ours goes
/// after ([`ConnLock::release`], after `launch`). `--lazy` as well as pre-copy.
#[derive(Clone)]
struct ConnLock(Arc<Mutex<Option<crate::sys::netlock::Handover>>>);

impl ConnLock {
    fn hold(last: &Received) -> Result<ConnLock, String> {
        let meta = restore::chain::meta_of(&last.path()).map_err(|e| e.to_string())?;
        let conns = crate::kinds::ns::locked_connections(&meta);
        let lock = crate::sys::netlock::Handover::hold(&conns)
            .map_err(|e| format!("cannot lock the TCP connections here: {e}"))?;
        Ok(ConnLock(Arc::new(Mutex::new(lock))))
    }

    /// In a forked child of ours (`--new-pidns`'s init, which stays as the tree's
    /// reaper; `me` is our PID): its copy of the lock's socket goes, so that the lock
    /// goes with us.
    fn forget_in_child(&self, me: u32) {
        if std::process::id() == me {
            return;
        }
        if let Ok(mut l) = self.0.lock() {
            drop(l.take());
        }
    }

    fn release(&self) {
        if let Ok(mut l) = self.0.lock() {
            if let Some(l) = l.take() {
                l.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store is merged once its deltas outgrow the image they start from, not
    /// before (a round costs its own size until then).
    #[test]
    fn the_store_is_compacted_only_once_its_log_outgrows_its_base() {
        assert!(!compaction_due(4 << 30, 0));
        assert!(!compaction_due(4 << 30, 4 << 30));
        assert!(compaction_due(4 << 30, (4 << 30) + 1));
        assert!(compaction_due(0, 1));
    }
}
