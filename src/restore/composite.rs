//! An incremental image restored through its chain of parents, read in place: no full
//! image is written (`ckpt restore NEXT`, `check`, `--lazy`; `ckpt receive`, the last
//! image of a migration over the full image of the rounds before it).
//!
//! A [`Composite`] gives the records of the full image the chain stands for, in the
//! order a full image would have them: the newest image's records (its metadata
//! without its parent); after each process's own page records, the pages it inherited
//! (`Process::inherited`), cut out of the page records of the nearest ancestor that
//! stored them (the wanted ranges intersected with each ancestor's own `inherited` on
//! the way up). Everything is planned from the links' indexes (`image::index::scan`)
//! when it is opened; the page data is read once, by offset, when restored:
//! - each page record is read in [`PIECE`](super::source::PIECE)s straight from its
//!   file, its checksum computed over the pieces and checked with the last one (and its
//!   padding), and the pieces inside the wanted ranges handed over as they are read, so
//!   a record of an ancestor with a few pages overwritten since is read once, not once
//!   per piece kept; compressed records are read whole and decompressed;
//! - every record of every link that nothing needs (the metadata of the ancestors, page
//!   records overwritten in full by later links) is read and checked after the last
//!   one: every byte of the chain is checked before the restore's point of no return,
//!   as a plain image is;
//! - `restore --lazy` reads the page records when their pages are served: the pieces
//!   are keyed ([`KEY_BIT`]) to the record and the offset in it they come from
//!   ([`Composite::locate`]), so the lazy server keeps whole records, as for a plain
//!   image.
//!
//! With `migrate --lazy` the newest image arrives without the payloads of its page
//! records (holes in the file, filled as the source sends them): [`Fetch`] waits for
//! one to arrive (asking the source for it first) before it is read.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::Link;
use super::{RestoreError, Result};
use crate::image::index::{self, IndexEntry};
use crate::image::{FLAG_REQUIRED, OwnedRecord, tag};
use crate::kinds::mem::pages::RecordSource;
use crate::model::Checkpoint;

/// Where the newest image's missing page payloads come from (`migrate --lazy`).
pub trait Fetch: Send + Sync {
    /// Return once the payload of the newest image's record `e` is in the file (asking
    /// the source for it first), or fail.
    fn ensure(&self, e: &IndexEntry) -> std::result::Result<(), String>;
    /// Return once every missing payload is in, or fail.
    fn wait_all(&self) -> std::result::Result<(), String>;
    /// Why the payloads that are still missing can no longer come, if so.
    fn failed(&self) -> Option<String>;
}

/// Pages of the full image taken from one page record of a link: `len` bytes at `addr`,
/// from byte `skip` of the record's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    link: u32,
    entry: u32,
    addr: u64,
    len: u64,
    skip: u64,
}

impl Want {
    fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// A record of the full image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A record of the newest image other than page data (index in its entries).
    Whole(usize),
    /// The page record `entry` of link `link` (0: the newest), of which the pages of
    /// `wants[first..first + n]` are used.
    Pages {
        link: usize,
        entry: usize,
        first: usize,
        n: usize,
    },
}

/// The keys of the pieces handed over without their pages (`OwnedRecord::offset`,
/// `lazy::Piece::rec`): this bit and the piece's index ([`Want`]).
pub(crate) const KEY_BIT: u64 = 1 << 62;

/// See the module comment.
pub struct Composite {
    /// The newest image first, then each parent.
    links: Vec<Link>,
    order: Vec<Item>,
    wants: Vec<Want>,
    /// Records of the links that no item reads (link, entry): checked at the end.
    unread: Vec<(usize, usize)>,
    /// The newest image's metadata as the full image has it (no parent, nothing
    /// inherited).
    meta: Checkpoint,
    fetch: Option<Arc<dyn Fetch>>,
}

fn bad(m: String) -> RestoreError {
    RestoreError::Malformed(m)
}

fn is_pages(t: u32) -> bool {
    matches!(t, tag::PAGES | tag::PAGES_LZ4 | tag::PAGES_ZSTD)
}

/// Sorted ranges in both `a` and `b`.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The parts of `[s, e)` inside `want` (sorted, disjoint ranges), found by binary
/// search: planning a link of R page records against W wanted ranges costs R log W,
/// not R W (a receiver's rounds of spread writes have tens of thousands of each).
fn clip(s: u64, e: u64, want: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let first = want.partition_point(|r| r.1 <= s);
    want[first..]
        .iter()
        .take_while(|r| r.0 < e)
        .map(|r| (r.0.max(s), r.1.min(e)))
        .filter(|(a, b)| a < b)
        .collect()
}

/// `v` sorted, overlapping or touching ranges joined (what [`clip`] and [`intersect`]
/// need, whatever an image holds).
fn sorted(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The page records of each process in `entries` (index in them), in order.
fn pages_by_pid(entries: &[IndexEntry]) -> std::collections::BTreeMap<i32, Vec<usize>> {
    let mut by_pid: std::collections::BTreeMap<i32, Vec<usize>> = Default::default();
    let mut current = None;
    for (i, e) in entries.iter().enumerate() {
        if e.tag == tag::PAGES_PID {
            current = Some(e.arg as i64 as i32);
        } else if is_pages(e.tag) {
            if let Some(pid) = current {
                by_pid.entry(pid).or_default().push(i);
            }
        }
    }
    by_pid
}

/// The plan of the full image: its items, the pieces they use and what is read by
/// none (see [`Composite`]).
struct Planner<'a> {
    links: &'a [Link],
    by_pid: Vec<std::collections::BTreeMap<i32, Vec<usize>>>,
    order: Vec<Item>,
    wants: Vec<Want>,
    used: Vec<Vec<bool>>,
}

impl Planner<'_> {
    fn pages_len(&self, link: usize, e: &IndexEntry) -> Result<u64> {
        let l = &self.links[link];
        index::pages_len(&l.file, e).map_err(|err| bad(format!("{}: {err}", l.path.display())))
    }

    /// Use the pages of record `entry` of `link` inside `want` (sorted ranges).
    fn take(&mut self, link: usize, entry: usize, want: &[(u64, u64)]) -> Result<()> {
        let e = self.links[link].entries[entry];
        let len = self.pages_len(link, &e)?;
        let end = e.arg.checked_add(len).ok_or_else(|| {
            bad(format!(
                "{}: page record at byte {} ends past the address space",
                self.links[link].path.display(),
                e.offset
            ))
        })?;
        let parts = clip(e.arg, end, want);
        if parts.is_empty() {
            return Ok(());
        }
        self.order.push(Item::Pages {
            link,
            entry,
            first: self.wants.len(),
            n: parts.len(),
        });
        self.wants.extend(parts.iter().map(|&(s, t)| Want {
            link: link as u32,
            entry: entry as u32,
            addr: s,
            len: t - s,
            skip: s - e.arg,
        }));
        self.used[link][entry] = true;
        Ok(())
    }

    /// The pages process `pid` of the newest image inherited, from the images before
    /// it: each ancestor gives its own pages in what is still to be found, and passes
    /// on what it inherited itself.
    fn inherited(&mut self, pid: i32) -> Result<()> {
        let links = self.links;
        let Some(newest) = links[0].meta.processes.iter().find(|p| p.pid == pid) else {
            return Ok(());
        };
        let mut want = sorted(newest.inherited.clone());
        for (k, l) in links.iter().enumerate().skip(1) {
            if want.is_empty() {
                break;
            }
            let Some(p) = l.meta.processes.iter().find(|p| p.pid == pid) else {
                return Err(bad(format!(
                    "process {pid} inherits pages from {}, which has no process {pid}",
                    l.path.display()
                )));
            };
            let records = self.by_pid[k].get(&pid).cloned().unwrap_or_default();
            for i in records {
                self.take(k, i, &want)?;
            }
            want = intersect(&want, &sorted(p.inherited.clone()));
        }
        Ok(())
    }
}

impl Composite {
    /// The chain of the image at `path` (`first_parent`: its parent's path, if not the
    /// one it records), or None when it is not incremental. Every link is verified
    /// (`chain::links`).
    pub fn of_chain(path: &Path, first_parent: Option<&Path>) -> Result<Option<Self>> {
        if !super::chain::is_incremental(path)? {
            return Ok(None);
        }
        Self::plan(super::chain::links(path, first_parent)?, None).map(Some)
    }

    /// An image of a chain read elsewhere (`ckpt receive`'s rounds, as each arrives):
    /// indexed (its record headers read, its metadata decoded), named `name` in errors,
    /// for [`Composite::over`].
    pub(crate) fn link(name: &str, file: File) -> Result<Link> {
        Link::index(Path::new(name), file)
    }

    /// `top`, an incremental image, over `older`, the images before it, the newest
    /// first, each indexed already ([`Composite::link`]) with the identity the image
    /// after it must name as its parent: its own, or, for a full image made of several
    /// rounds ([`chain::merge`](super::chain::merge)), that of the newest round in it.
    /// The oldest must be a full image. Only `top`'s headers are read here: `ckpt
    /// receive` indexes each round as it arrives, while the source runs, so that after
    /// the freeze only the last image's are. `fetch`: where `top`'s missing page
    /// payloads come from (none: it is whole).
    pub(crate) fn over(
        top: File,
        older: Vec<(Link, (u64, u64))>,
        fetch: Option<Arc<dyn Fetch>>,
    ) -> Result<Self> {
        let top = Link::index(Path::new("the last image"), top)?;
        let id = top.id;
        let mut links = vec![(top, id)];
        links.extend(older);
        Self::of_links(links, fetch)
    }

    /// The chain `links` (the newest first, each with the identity its child must name
    /// as its parent), every link checked to be the parent its child names and the
    /// oldest to be a full image. One link alone is a full image.
    pub(crate) fn of_links(
        links: Vec<(Link, (u64, u64))>,
        fetch: Option<Arc<dyn Fetch>>,
    ) -> Result<Self> {
        for w in links.windows(2) {
            let (child, (parent, parent_is)) = (&w[0].0, (&w[1].0, w[1].1));
            match &child.meta.parent {
                Some(p) if (p.records, p.hash) == parent_is => {}
                Some(p) => {
                    return Err(bad(format!(
                        "{} was made from an image with hash {:016x} ({} records), not from \
                         {} (hash {:016x}, {} records)",
                        child.path.display(),
                        p.hash,
                        p.records,
                        parent.path.display(),
                        parent_is.1,
                        parent_is.0
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "{} is not incremental, but {} is before it",
                        child.path.display(),
                        parent.path.display()
                    )));
                }
            }
        }
        match links.last() {
            None => return Err(bad("a chain of no image".into())),
            Some((l, _)) if l.meta.parent.is_some() => {
                return Err(bad(format!(
                    "{} is the oldest image of the chain but not a full image",
                    l.path.display()
                )));
            }
            Some(_) => {}
        }
        Self::plan(links.into_iter().map(|(l, _)| l).collect(), fetch)
    }

    fn plan(links: Vec<Link>, fetch: Option<Arc<dyn Fetch>>) -> Result<Self> {
        let mut p = Planner {
            links: &links,
            by_pid: links.iter().map(|l| pages_by_pid(&l.entries)).collect(),
            order: Vec::with_capacity(links[0].entries.len()),
            wants: Vec::new(),
            used: links.iter().map(|l| vec![false; l.entries.len()]).collect(),
        };
        let mut current: Option<i32> = None;
        for (i, e) in links[0].entries.iter().enumerate() {
            if e.tag == tag::PAGES_PID {
                if let Some(pid) = current.take() {
                    p.inherited(pid)?;
                }
                current = Some(e.arg as i64 as i32);
            }
            match e.tag {
                // Decoded already, read again with the records no item reads.
                tag::CHECKPOINT => {}
                t if is_pages(t) => {
                    let len = p.pages_len(0, e)?;
                    p.take(0, i, &[(e.arg, e.arg.saturating_add(len))])?;
                }
                _ => {
                    p.order.push(Item::Whole(i));
                    p.used[0][i] = true;
                }
            }
        }
        if let Some(pid) = current {
            p.inherited(pid)?;
        }
        let Planner {
            order, wants, used, ..
        } = p;
        let unread = used
            .iter()
            .enumerate()
            .flat_map(|(k, u)| {
                u.iter()
                    .enumerate()
                    .filter(|(_, used)| !**used)
                    .map(move |(i, _)| (k, i))
            })
            .collect();
        let mut meta = links[0].meta.clone();
        meta.parent = None;
        for p in meta.processes.iter_mut() {
            p.inherited.clear();
        }
        Ok(Self {
            links,
            order,
            wants,
            unread,
            meta,
            fetch,
        })
    }

    /// The full image's metadata.
    pub fn meta(&self) -> &Checkpoint {
        &self.meta
    }

    /// The images of the chain, the newest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.links.iter().map(|l| l.path.clone()).collect()
    }

    /// An image holding the full image's metadata only, for `restore::prepare`.
    pub fn meta_image(&self) -> Result<Vec<u8>> {
        let mut w = crate::image::ImageWriter::new(Vec::new())?;
        w.write_meta(tag::CHECKPOINT, &self.meta)?;
        Ok(w.finish()?)
    }

    /// Another descriptor of the newest image's file.
    pub(crate) fn top_file(&self) -> Result<File> {
        self.links[0].file.try_clone().map_err(|e| {
            RestoreError::Stage(format!("cannot duplicate the image's descriptor: {e}"))
        })
    }

    /// An error about record `e` of `link`, naming the file.
    fn named(&self, link: usize, e: impl std::fmt::Display) -> RestoreError {
        bad(format!("{}: {e}", self.links[link].path.display()))
    }

    fn entry(&self, link: usize, entry: usize) -> Result<(&Link, IndexEntry)> {
        self.links
            .get(link)
            .and_then(|l| l.entries.get(entry).map(|e| (l, *e)))
            .ok_or_else(|| RestoreError::Stage(format!("no record {entry} in link {link}")))
    }

    /// Wait for the payload of record `e` of `link` (only the newest image's page
    /// records can be missing, with `migrate --lazy`).
    fn ensure(&self, link: usize, e: &IndexEntry) -> Result<()> {
        match &self.fetch {
            Some(f) if link == 0 && e.tag == tag::PAGES => f.ensure(e).map_err(RestoreError::Stage),
            _ => Ok(()),
        }
    }

    /// Read record `e` of `link` whole into `buf`, its padding and checksum checked.
    fn read_whole(&self, link: usize, e: &IndexEntry, buf: &mut Vec<u8>) -> Result<()> {
        self.ensure(link, e)?;
        let f = &self.links[link].file;
        index::check_padding(f, e).map_err(|err| self.named(link, err))?;
        index::read_payload(f, e, buf).map_err(|err| self.named(link, err))
    }

    /// The pages of the record `rec` (as [`Composite::locate`] gives it), checked and
    /// decompressed, into `spare`.
    pub(crate) fn record_pages(&self, rec: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        let (link, entry) = ((rec >> 32) as usize, (rec & 0xffff_ffff) as usize);
        let (_, e) = self.entry(link, entry)?;
        if !matches!(e.tag, tag::PAGES_LZ4 | tag::PAGES_ZSTD) {
            let mut raw = spare;
            self.read_whole(link, &e, &mut raw)?;
            return Ok(raw);
        }
        let mut raw = Vec::new();
        self.read_whole(link, &e, &mut raw)?;
        let mut pages = spare;
        pages.clear();
        match e.tag {
            tag::PAGES_LZ4 => crate::image::decompress_pages(&raw, &mut pages),
            _ => crate::image::decompress_pages_zstd(&raw, &mut pages),
        }
        .map_err(|err| self.named(link, err))?;
        Ok(pages)
    }

    /// The piece keyed `key` (see [`KEY_BIT`]): its record (a key for
    /// [`Composite::record_pages`]) and where its pages start in the record's.
    pub(crate) fn locate(&self, key: u64) -> Result<(u64, u64)> {
        let w = self.want(key)?;
        Ok(((u64::from(w.link) << 32) | u64::from(w.entry), w.skip))
    }

    fn want(&self, key: u64) -> Result<Want> {
        self.wants
            .get((key & !KEY_BIT) as usize)
            .filter(|_| key & KEY_BIT != 0)
            .copied()
            .ok_or_else(|| RestoreError::Stage(format!("no pages keyed {key:#x}")))
    }

    /// The pages of the piece keyed `key`, checked, into `spare`.
    pub(crate) fn pages_into(&self, key: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        let (rec, skip) = self.locate(key)?;
        let len = self.want(key)?.len;
        let all = self.record_pages(rec, Vec::new())?;
        let Some(part) = all.get(skip as usize..(skip + len) as usize) else {
            return Err(bad(format!(
                "a page record of {} is shorter than it says",
                self.links[(rec >> 32) as usize].path.display()
            )));
        };
        let mut out = spare;
        out.clear();
        out.extend_from_slice(part);
        Ok(out)
    }

    /// Read and check every record no item reads.
    fn check_unread(&self) -> Result<()> {
        let mut buf = Vec::new();
        for &(link, entry) in &self.unread {
            let (_, e) = self.entry(link, entry)?;
            self.read_whole(link, &e, &mut buf)?;
        }
        Ok(())
    }

    /// The missing payloads can no longer come.
    pub(crate) fn failed(&self) -> Option<String> {
        self.fetch.as_ref().and_then(|f| f.failed())
    }

    /// Every missing payload is in (or never will be: an error).
    pub(crate) fn wait_all(&self) -> Result<()> {
        match &self.fetch {
            Some(f) => f.wait_all().map_err(RestoreError::Stage),
            None => Ok(()),
        }
    }
}

/// A page record being read in pieces.
struct Reading {
    /// The item (index in the order).
    item: usize,
    /// Bytes of its payload read.
    done: u64,
    hash: xxhash_rust::xxh3::Xxh3,
}

/// Buffers kept for reuse at most.
const SPARE: usize = 8;

/// The full image's records after its metadata, for stage and check: with `lazy`, page
/// records come without their pages (keyed for [`Composite::locate`]), otherwise with
/// them, in pieces of at most [`PIECE`](super::source::PIECE) bytes.
pub(crate) struct CompositeSource<'a> {
    c: &'a Composite,
    next: usize,
    lazy: bool,
    reading: Option<Reading>,
    out: VecDeque<OwnedRecord>,
    spare: Vec<Vec<u8>>,
    checked: bool,
}

impl<'a> CompositeSource<'a> {
    pub(crate) fn new(c: &'a Composite, lazy: bool) -> Self {
        Self {
            c,
            next: 0,
            lazy,
            reading: None,
            out: VecDeque::new(),
            spare: Vec::new(),
            checked: false,
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// The pieces of the wants `ws` inside `data`, the pages at `at` (bytes from the
    /// start of the record's pages) of record `e`: queued. The first piece takes `data`
    /// itself when it starts where `data` does (cut to its length: an overwritten page
    /// in the middle of a piece costs a copy of what follows it only).
    fn hand_over(&mut self, ws: &[Want], e: &IndexEntry, at: u64, data: Vec<u8>) {
        let (start, end) = (e.arg + at, e.arg + at + data.len() as u64);
        let parts: Vec<(usize, u64, u64)> = ws
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.addr.max(start), w.end().min(end)))
            .filter(|&(_, s, t)| s < t)
            .collect();
        let rec = |w: &Want, s: u64, payload: Vec<u8>| OwnedRecord {
            tag: tag::PAGES,
            flags: FLAG_REQUIRED,
            arg: w.addr,
            offset: e.offset,
            payload,
            part: s - w.addr,
            record_len: w.len,
        };
        let own = parts.first().is_some_and(|&(_, s, _)| s == start);
        let mut queued = Vec::with_capacity(parts.len());
        for &(i, s, t) in parts.iter().skip(usize::from(own)) {
            let mut b = self.buffer();
            b.clear();
            b.extend_from_slice(&data[(s - start) as usize..(t - start) as usize]);
            queued.push(rec(&ws[i], s, b));
        }
        match parts.first() {
            Some(&(i, s, t)) if own => {
                let mut data = data;
                data.truncate((t - s) as usize);
                self.out.push_back(rec(&ws[i], s, data));
            }
            _ => self.recycle(data),
        }
        self.out.extend(queued);
    }

    /// Read the next piece of the page record being read.
    fn step(&mut self) -> Result<()> {
        let Some(mut r) = self.reading.take() else {
            return Ok(());
        };
        let c = self.c;
        let Some(&Item::Pages {
            link,
            entry,
            first,
            n,
        }) = c.order.get(r.item)
        else {
            return Err(RestoreError::Stage("no page record being read".into()));
        };
        let (l, e) = c.entry(link, entry)?;
        let at = r.done;
        let len = super::source::PIECE.min(e.len - at);
        let mut buf = self.buffer();
        buf.resize(len as usize, 0);
        index::read_payload_part(&l.file, &e, at, &mut buf).map_err(|err| c.named(link, err))?;
        r.hash.update(&buf);
        r.done += len;
        if r.done == e.len {
            if r.hash.digest() != e.checksum {
                return Err(c.named(
                    link,
                    crate::image::ImageError::RecordChecksum {
                        offset: e.offset,
                        name: tag::name(e.tag),
                    },
                ));
            }
        } else {
            self.reading = Some(r);
        }
        let ws = &c.wants[first..first + n];
        self.hand_over(ws, &e, at, buf);
        Ok(())
    }

    /// Start reading item `k`, a page record.
    fn start(&mut self, k: usize, link: usize, entry: usize, first: usize, n: usize) -> Result<()> {
        let c = self.c;
        let (l, e) = c.entry(link, entry)?;
        let ws = &c.wants[first..first + n];
        if self.lazy {
            for (i, w) in ws.iter().enumerate() {
                self.out.push_back(OwnedRecord {
                    tag: tag::PAGES,
                    flags: FLAG_REQUIRED,
                    arg: w.addr,
                    offset: KEY_BIT | (first + i) as u64,
                    payload: Vec::new(),
                    part: 0,
                    record_len: w.len,
                });
            }
            return Ok(());
        }
        if e.tag != tag::PAGES {
            // Compressed: read whole, then handed over in pieces.
            let spare = self.buffer();
            let pages = c.record_pages((link as u64) << 32 | entry as u64, spare)?;
            let mut at = 0;
            for chunk in pages.chunks(super::source::PIECE as usize) {
                let mut b = self.buffer();
                b.clear();
                b.extend_from_slice(chunk);
                self.hand_over(ws, &e, at, b);
                at += chunk.len() as u64;
            }
            self.recycle(pages);
            return Ok(());
        }
        c.ensure(link, &e)?;
        index::check_padding(&l.file, &e).map_err(|err| c.named(link, err))?;
        if e.len == 0 {
            return Err(c.named(link, format!("empty page record at byte {}", e.offset)));
        }
        self.reading = Some(Reading {
            item: k,
            done: 0,
            hash: index::payload_hasher(&e),
        });
        Ok(())
    }
}

impl RecordSource for CompositeSource<'_> {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        let c = self.c;
        loop {
            if let Some(r) = self.out.pop_front() {
                return Ok(Some(r));
            }
            if self.reading.is_some() {
                self.step()?;
                continue;
            }
            let k = self.next;
            let Some(item) = c.order.get(k).copied() else {
                if !self.lazy && !self.checked {
                    // The end of the full image: the rest of the chain is checked.
                    self.checked = true;
                    c.check_unread()?;
                }
                return Ok(None);
            };
            self.next += 1;
            match item {
                Item::Whole(i) => {
                    let (_, e) = c.entry(0, i)?;
                    let mut buf = self.buffer();
                    c.read_whole(0, &e, &mut buf)?;
                    return Ok(Some(OwnedRecord {
                        tag: e.tag,
                        flags: e.flags,
                        arg: e.arg,
                        offset: e.offset,
                        record_len: buf.len() as u64,
                        payload: buf,
                        part: 0,
                    }));
                }
                Item::Pages {
                    link,
                    entry,
                    first,
                    n,
                } => self.start(k, link, entry, first, n)?,
            }
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE && buf.capacity() > 0 {
            self.spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageWriter, PAGE_SIZE};
    use crate::model::{ParentImage, Process};

    #[test]
    fn intersection_of_sorted_ranges() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25), (28, 40)]),
            vec![(5, 10), (20, 25), (28, 30)]
        );
        assert!(intersect(&[(0, 10)], &[]).is_empty());
    }

    const PID: i32 = 10;
    const A: u64 = 0x10_0000;

    fn page(n: u64) -> u64 {
        A + n * PAGE_SIZE
    }

    /// Pages `(first, count, value)`, each page filled with its value.
    fn run(first: u64, count: u64, value: u8) -> (u64, Vec<u8>) {
        (page(first), vec![value; (count * PAGE_SIZE) as usize])
    }

    /// Write an image of process PID (inheriting `inherited`) with these page records
    /// at `path`, incremental over `parent`; returns its identity.
    fn write(
        path: &Path,
        parent: Option<(&Path, (u64, u64))>,
        inherited: Vec<(u64, u64)>,
        records: &[(u64, Vec<u8>)],
    ) -> (u64, u64) {
        let proc_ = Process {
            pid: PID,
            inherited,
            ..Default::default()
        };
        let mut meta = crate::kinds::testutil::checkpoint(vec![proc_]);
        meta.parent = parent.map(|(p, (records, hash))| ParentImage {
            path: p.display().to_string(),
            records,
            hash,
        });
        let features = if parent.is_some() {
            crate::image::FEATURE_PARENT
        } else {
            0
        };
        let mut w = ImageWriter::with_features(Vec::new(), features).unwrap();
        w.write_meta(tag::CHECKPOINT, &meta).unwrap();
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, PID as u64, &[], false)
            .unwrap();
        for (addr, data) in records {
            w.write_record(tag::PAGES, FLAG_REQUIRED, *addr, data, true)
                .unwrap();
        }
        let bytes = w.finish().unwrap();
        std::fs::write(path, &bytes).unwrap();
        crate::image::identity(&bytes[bytes.len() - crate::image::END_RECORD_LEN..]).unwrap()
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ckpt-composite-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// A chain of three: the base (pages 0-63 with 1, page 100 with 2), link 1 (pages
    /// 3-5 and 100 written), link 2 (pages 4 and 10 written). Returns the images and
    /// the memory the chain stands for, page by page.
    fn chain3(d: &Path) -> (Vec<PathBuf>, std::collections::BTreeMap<u64, u8>) {
        let paths: Vec<PathBuf> = (0..3).map(|i| d.join(format!("l{i}.img"))).collect();
        let all = vec![(page(0), page(64)), (page(100), page(101))];
        let id0 = write(&paths[0], None, vec![], &[run(0, 64, 1), run(100, 1, 2)]);
        let id1 = write(
            &paths[1],
            Some((&paths[0], id0)),
            vec![(page(0), page(3)), (page(6), page(64))],
            &[run(3, 3, 0x11), run(100, 1, 0x12)],
        );
        write(
            &paths[2],
            Some((&paths[1], id1)),
            vec![
                (page(0), page(4)),
                (page(5), page(10)),
                (page(11), page(64)),
                (page(100), page(101)),
            ],
            &[run(4, 1, 0x21), run(10, 1, 0x22)],
        );
        let mut want = std::collections::BTreeMap::new();
        for &(s, e) in &all {
            for a in (s..e).step_by(PAGE_SIZE as usize) {
                let n = (a - A) / PAGE_SIZE;
                let v = match n {
                    4 => 0x21,
                    10 => 0x22,
                    3 | 5 => 0x11,
                    100 => 0x12,
                    _ => 1,
                };
                want.insert(a, v);
            }
        }
        (paths, want)
    }

    /// The memory the records of `c` give, page by page (no page twice).
    fn memory(c: &Composite, lazy: bool) -> Result<std::collections::BTreeMap<u64, u8>> {
        let mut src = CompositeSource::new(c, lazy);
        let mut got: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        while let Some(rec) = src.next_record()? {
            if rec.tag != tag::PAGES {
                continue;
            }
            let data = if lazy {
                assert!(rec.payload.is_empty());
                c.pages_into(rec.offset, Vec::new())?
            } else {
                rec.payload
            };
            assert!(rec.part + data.len() as u64 <= rec.record_len);
            for (i, p) in data.chunks(PAGE_SIZE as usize).enumerate() {
                let a = rec.arg + rec.part + i as u64 * PAGE_SIZE;
                assert!(
                    got.insert(a, p.to_vec()).is_none(),
                    "page {a:#x} given twice"
                );
            }
        }
        // (A damaged page is handed over before its record's checksum fails.)
        Ok(got
            .into_iter()
            .map(|(a, p)| {
                assert!(
                    p.iter().all(|&b| b == p[0]),
                    "a page of mixed bytes at {a:#x}"
                );
                (a, p[0])
            })
            .collect())
    }

    /// Every page comes from the newest image of the chain that has it, read in place
    /// or served lazily by key; a record read in pieces is read once.
    #[test]
    fn each_page_comes_from_the_newest_link_that_has_it() {
        let d = dir("newest");
        let (paths, want) = chain3(&d.0);
        let c = Composite::of_chain(&paths[2], None).unwrap().unwrap();
        assert_eq!(
            c.paths(),
            vec![paths[2].clone(), paths[1].clone(), paths[0].clone()]
        );
        assert!(c.meta().parent.is_none());
        assert!(c.meta().processes.iter().all(|p| p.inherited.is_empty()));
        assert_eq!(memory(&c, false).unwrap(), want);
        assert_eq!(memory(&c, true).unwrap(), want);
        // The base's 64-page record is one read, cut around pages 3-5 and 10.
        let base_reads = c
            .order
            .iter()
            .filter(|i| matches!(i, Item::Pages { link: 2, .. }))
            .count();
        assert_eq!(base_reads, 1);
        let (rec, skip) = c.locate(KEY_BIT | (c.wants.len() as u64 - 1)).unwrap();
        assert_eq!(rec >> 32, 2);
        assert_eq!(skip, 11 * PAGE_SIZE);
        // Not an image of the chain: not incremental.
        assert!(Composite::of_chain(&paths[0], None).unwrap().is_none());
    }

    /// A damaged record no page is taken from (the base's page 100, written again in
    /// link 1) still fails the read through the chain, naming its file; a damaged
    /// padding too. A lazy read does not read it.
    #[test]
    fn a_damaged_record_nothing_uses_is_still_found() {
        let d = dir("damaged");
        let (paths, want) = chain3(&d.0);
        let clean = std::fs::read(&paths[0]).unwrap();
        let entries = index::scan(&std::fs::File::open(&paths[0]).unwrap()).unwrap();
        let last = entries
            .iter()
            .rfind(|e| e.tag == tag::PAGES)
            .copied()
            .unwrap();
        assert_eq!(last.arg, page(100));
        let mut bad = clean.clone();
        bad[last.data_off as usize + 5] ^= 0x40;
        std::fs::write(&paths[0], &bad).unwrap();
        let c = Composite::of_chain(&paths[2], None).unwrap().unwrap();
        let err = memory(&c, false).unwrap_err().to_string();
        assert!(err.contains(&paths[0].display().to_string()), "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert_eq!(memory(&c, true).unwrap(), want);
        // Padding before a page record's payload.
        let mut bad = clean.clone();
        bad[last.data_off as usize - 1] = 1;
        std::fs::write(&paths[0], &bad).unwrap();
        let c = Composite::of_chain(&paths[2], None).unwrap().unwrap();
        let err = memory(&c, false).unwrap_err().to_string();
        assert!(err.contains("padding"), "{err}");
        // A damaged record that pages are taken from.
        let first = entries
            .iter()
            .find(|e| e.tag == tag::PAGES)
            .copied()
            .unwrap();
        let mut bad = clean.clone();
        bad[first.data_off as usize + 7 * PAGE_SIZE as usize] ^= 1;
        std::fs::write(&paths[0], &bad).unwrap();
        let c = Composite::of_chain(&paths[2], None).unwrap().unwrap();
        assert!(memory(&c, false).is_err());
        assert!(memory(&c, true).is_err());
    }

    /// A middle link replaced by another image is refused when the chain is opened,
    /// naming both; a missing one too, with the way out (`--parent`).
    #[test]
    fn a_swapped_or_missing_link_is_refused_when_opened() {
        let d = dir("swapped");
        let (paths, _) = chain3(&d.0);
        let saved = std::fs::read(&paths[1]).unwrap();
        write(&paths[1], None, vec![], &[run(0, 1, 9)]);
        let err = Composite::of_chain(&paths[2], None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not its parent"), "{err}");
        std::fs::remove_file(&paths[1]).unwrap();
        let err = Composite::of_chain(&paths[2], None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--parent"), "{err}");
        let moved = d.0.join("moved.img");
        std::fs::write(&moved, &saved).unwrap();
        assert!(
            Composite::of_chain(&paths[2], Some(&moved))
                .unwrap()
                .is_some()
        );
    }

    /// `clip` (binary search) gives what `intersect` of the one range gives; `sorted`
    /// joins overlapping and touching ranges and drops empty ones.
    #[test]
    fn clipping_by_binary_search_agrees_with_the_intersection() {
        assert_eq!(
            sorted(vec![(20, 30), (0, 10), (5, 12), (12, 15), (40, 40)]),
            vec![(0, 15), (20, 30)]
        );
        let want: Vec<(u64, u64)> = (0..50u64).map(|i| (i * 10, i * 10 + 4)).collect();
        for s in 0..120u64 {
            for len in [1, 3, 6, 10, 37, 200] {
                assert_eq!(
                    clip(s, s + len, &want),
                    intersect(&[(s, s + len)], &want),
                    "[{s}, {})",
                    s + len
                );
            }
        }
        assert!(clip(0, 10, &[]).is_empty());
    }

    /// Each image of `paths` indexed, with its own identity (as `ckpt receive` keeps
    /// its rounds), the newest first.
    fn links_of(paths: &[PathBuf]) -> Vec<(Link, (u64, u64))> {
        paths
            .iter()
            .rev()
            .map(|p| {
                let l = Composite::link("a round", std::fs::File::open(p).unwrap()).unwrap();
                let id = l.id;
                (l, id)
            })
            .collect()
    }

    /// The receiver's store (`migrate::receive::Store`): the rounds indexed one by
    /// one and opened under the last give the chain's memory; merged into one full
    /// image (its compaction), and the last round over that, the same.
    #[test]
    fn rounds_kept_as_they_came_or_merged_give_the_newest_pages() {
        let d = dir("rounds");
        let (paths, want) = chain3(&d.0);
        let mut older = links_of(&paths[..2]);
        let c = Composite::over(std::fs::File::open(&paths[2]).unwrap(), older, None).unwrap();
        assert_eq!(memory(&c, false).unwrap(), want);
        assert_eq!(memory(&c, true).unwrap(), want);
        // Rounds 0 and 1 merged: a full image, named by round 1's identity.
        older = links_of(&paths[..2]);
        let id1 = older[0].1;
        let merged =
            super::super::chain::merge(&Composite::of_links(older, None).unwrap(), &d.0).unwrap();
        let merged = Composite::link("rounds 0 to 1", merged).unwrap();
        assert!(merged.meta.parent.is_none());
        assert!(merged.meta.processes.iter().all(|p| p.inherited.is_empty()));
        let c = Composite::over(
            std::fs::File::open(&paths[2]).unwrap(),
            vec![(merged, id1)],
            None,
        )
        .unwrap();
        assert_eq!(memory(&c, false).unwrap(), want);
        // Nothing of the merge is left in the directory (an unnamed file).
        let names: Vec<_> = std::fs::read_dir(&d.0).unwrap().flatten().collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    /// A round missing from the store (round 2 over round 0), a store that does not
    /// start with a full image, or the last image over itself: refused when opened,
    /// naming the images.
    #[test]
    fn a_store_whose_rounds_do_not_follow_each_other_is_refused() {
        let d = dir("gaps");
        let (paths, _) = chain3(&d.0);
        let top = || std::fs::File::open(&paths[2]).unwrap();
        let err = Composite::over(top(), links_of(&paths[..1]), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("the last image was made from"), "{err}");
        let err = Composite::over(top(), links_of(&paths[1..2]), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a full image"), "{err}");
        let err = Composite::over(top(), vec![], None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a full image"), "{err}");
        // Two full images.
        let mut two = links_of(&paths[..1]);
        two.extend(links_of(&paths[..1]));
        let err = Composite::of_links(two, None).err().unwrap().to_string();
        assert!(err.contains("is not incremental"), "{err}");
    }

    /// An area unmapped between rounds (pages 50-63 of the base) whose address gets a
    /// new area later (page 50 written, 51-63 never): the pages of the old area do not
    /// come back, though the base still holds them.
    #[test]
    fn pages_of_an_area_gone_between_rounds_do_not_come_back() {
        let d = dir("gone");
        let paths: Vec<PathBuf> = (0..3).map(|i| d.0.join(format!("r{i}.img"))).collect();
        let id0 = write(&paths[0], None, vec![], &[run(0, 64, 1)]);
        let id1 = write(
            &paths[1],
            Some((&paths[0], id0)),
            vec![(page(0), page(3)), (page(4), page(50))],
            &[run(3, 1, 0x11)],
        );
        write(
            &paths[2],
            Some((&paths[1], id1)),
            vec![(page(0), page(50))],
            &[run(50, 1, 0x22)],
        );
        let mut want = std::collections::BTreeMap::new();
        for n in 0..51 {
            want.insert(
                page(n),
                match n {
                    3 => 0x11,
                    50 => 0x22,
                    _ => 1,
                },
            );
        }
        let c = Composite::over(
            std::fs::File::open(&paths[2]).unwrap(),
            links_of(&paths[..2]),
            None,
        )
        .unwrap();
        assert_eq!(memory(&c, false).unwrap(), want);
        assert_eq!(memory(&c, true).unwrap(), want);
    }
}
