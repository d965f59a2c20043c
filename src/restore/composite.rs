//! The last image of a migration restored on top of the full image of the rounds
//! before it (`ckpt receive`), without writing their merged image first.
//!
//! A [`Composite`] reads the records of the merged image in the order
//! `chain::merge` would write them (the top image's records; after each process's
//! own page records, the pages it inherited, cut out of the base image's records), each
//! read from where it is, by offset, and checked as it is read. The top image's end
//! record is checked (`index::scan`) and its parent must be the image the base was made
//! of. The base is the receiver's own full image of the earlier rounds.
//!
//! With `migrate --lazy` the top image arrives without the payloads of its page records
//! (holes in the file, filled as the source sends them): [`Fetch`] waits for one to
//! arrive (asking the source for it first) before it is read.

use std::fs::File;
use std::sync::Arc;

use super::{RestoreError, Result};
use crate::image::index::{self, IndexEntry};
use crate::image::{FLAG_REQUIRED, OwnedRecord, tag};
use crate::kinds::mem::pages::RecordSource;
use crate::model::Checkpoint;

/// Where the top image's missing page payloads come from (`migrate --lazy`).
pub trait Fetch: Send + Sync {
    /// Return once the payload of the top image's record `e` is in the file (asking
    /// the source for it first), or fail.
    fn ensure(&self, e: &IndexEntry) -> std::result::Result<(), String>;
    /// Return once every missing payload is in, or fail.
    fn wait_all(&self) -> std::result::Result<(), String>;
    /// Why the payloads that are still missing can no longer come, if so.
    fn failed(&self) -> Option<String>;
}

/// A record of the merged image.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// The top image's record (index in its entries).
    Top(usize),
    /// Pages inherited from the base: `len` bytes at `addr`, from byte `skip` of the
    /// pages of the base's record `base` (index in its entries).
    Base {
        base: usize,
        addr: u64,
        skip: u64,
        len: u64,
    },
}

/// The keys of inherited pieces (as `Piece::rec` and `OwnedRecord::offset`): this bit
/// and their index in the order; the top image's records are keyed by their offset.
const BASE_KEY: u64 = 1 << 62;

/// See the module comment.
pub struct Composite {
    top: File,
    top_entries: Vec<IndexEntry>,
    base: File,
    base_entries: Vec<IndexEntry>,
    order: Vec<Item>,
    /// The top image's metadata as the merged image has it (no parent, nothing
    /// inherited).
    meta: Checkpoint,
    fetch: Option<Arc<dyn Fetch>>,
    /// The base record read last (index, pages), checked: the pieces cut out of one
    /// record come one after the other, and it is read once for all of them.
    last_base: std::sync::Mutex<Option<(usize, Arc<Vec<u8>>)>>,
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

impl Composite {
    /// `top`: an incremental image whose parent has the identity `base_is_of`; `base`:
    /// the full image made of that parent's chain. `fetch`: where the top image's
    /// missing page payloads come from (none: it is whole).
    pub fn open(
        top: File,
        base: File,
        base_is_of: (u64, u64),
        fetch: Option<Arc<dyn Fetch>>,
    ) -> Result<Self> {
        let top_entries = index::scan(&top)?;
        let base_entries = index::scan(&base)?;
        let meta_of = |f: &File, es: &[IndexEntry], what: &str| -> Result<Checkpoint> {
            let e = es
                .first()
                .filter(|e| e.tag == tag::CHECKPOINT)
                .ok_or_else(|| bad(format!("the {what} image starts without its metadata")))?;
            let mut buf = Vec::new();
            index::read_payload(f, e, &mut buf)?;
            Ok(crate::image::decode_meta(tag::CHECKPOINT, &buf)?)
        };
        let mut meta = meta_of(&top, &top_entries, "last")?;
        let base_meta = meta_of(&base, &base_entries, "base")?;
        match &meta.parent {
            Some(p) if (p.records, p.hash) == base_is_of => {}
            Some(p) => {
                return Err(bad(format!(
                    "the last image was made from an image with hash {:016x} ({} records), \
                     not from the one received before it",
                    p.hash, p.records
                )));
            }
            None => return Err(bad("the last image is not incremental".into())),
        }
        if base_meta.parent.is_some() {
            return Err(bad("the base image is not a full image".into()));
        }
        // The base's page records by process, in order.
        let mut by_pid: std::collections::BTreeMap<i32, Vec<usize>> = Default::default();
        let mut current = None;
        for (i, e) in base_entries.iter().enumerate() {
            if e.tag == tag::PAGES_PID {
                current = Some(e.arg as i64 as i32);
            } else if is_pages(e.tag) {
                if let Some(pid) = current {
                    by_pid.entry(pid).or_default().push(i);
                }
            }
        }
        let mut order = Vec::with_capacity(top_entries.len());
        let inherited = |pid: i32, order: &mut Vec<Item>| -> Result<()> {
            let Some(p) = meta.processes.iter().find(|p| p.pid == pid) else {
                return Ok(());
            };
            let mut want = p.inherited.clone();
            want.sort_unstable();
            if want.is_empty() {
                return Ok(());
            }
            if !base_meta.processes.iter().any(|b| b.pid == pid) {
                return Err(bad(format!(
                    "process {pid} inherits pages from an image without process {pid}"
                )));
            }
            for &i in by_pid.get(&pid).map(|v| v.as_slice()).unwrap_or_default() {
                let e = &base_entries[i];
                let len = index::pages_len(&base, e)?;
                for (s, end) in intersect(&[(e.arg, e.arg + len)], &want) {
                    order.push(Item::Base {
                        base: i,
                        addr: s,
                        skip: s - e.arg,
                        len: end - s,
                    });
                }
            }
            Ok(())
        };
        let mut current: Option<i32> = None;
        for (i, e) in top_entries.iter().enumerate() {
            if e.tag == tag::PAGES_PID {
                if let Some(pid) = current.take() {
                    inherited(pid, &mut order)?;
                }
                current = Some(e.arg as i64 as i32);
            }
            order.push(Item::Top(i));
        }
        if let Some(pid) = current {
            inherited(pid, &mut order)?;
        }
        meta.parent = None;
        for p in meta.processes.iter_mut() {
            p.inherited.clear();
        }
        Ok(Self {
            top,
            top_entries,
            base,
            base_entries,
            order,
            meta,
            fetch,
            last_base: Default::default(),
        })
    }

    /// The merged image's metadata.
    pub fn meta(&self) -> &Checkpoint {
        &self.meta
    }

    /// An image holding the merged image's metadata only, for `restore::prepare`.
    pub fn meta_image(&self) -> Result<Vec<u8>> {
        let mut w = crate::image::ImageWriter::new(Vec::new())?;
        w.write_meta(tag::CHECKPOINT, &self.meta)?;
        Ok(w.finish()?)
    }

    /// Another descriptor of the top image's file.
    pub(crate) fn top_file(&self) -> Result<File> {
        self.top.try_clone().map_err(|e| {
            RestoreError::Stage(format!("cannot duplicate the image's descriptor: {e}"))
        })
    }

    fn top_entry(&self, offset: u64) -> Result<&IndexEntry> {
        self.top_entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()
            .and_then(|i| self.top_entries.get(i))
            .ok_or_else(|| RestoreError::Stage(format!("no record at byte {offset}")))
    }

    /// The payload of `e` from `f`, decompressed if it is a compressed page record.
    fn read_pages(f: &File, e: &IndexEntry, spare: Vec<u8>) -> Result<Vec<u8>> {
        if !matches!(e.tag, tag::PAGES_LZ4 | tag::PAGES_ZSTD) {
            let mut raw = spare;
            index::read_payload(f, e, &mut raw)?;
            return Ok(raw);
        }
        let mut raw = Vec::new();
        index::read_payload(f, e, &mut raw)?;
        let mut pages = spare;
        pages.clear();
        match e.tag {
            tag::PAGES_LZ4 => crate::image::decompress_pages(&raw, &mut pages)?,
            _ => crate::image::decompress_pages_zstd(&raw, &mut pages)?,
        }
        Ok(pages)
    }

    fn ensure(&self, e: &IndexEntry) -> Result<()> {
        match &self.fetch {
            Some(f) if e.tag == tag::PAGES => f.ensure(e).map_err(RestoreError::Stage),
            _ => Ok(()),
        }
    }

    /// The pages of the record keyed `key` (see [`BASE_KEY`]), checked.
    pub(crate) fn pages_into(&self, key: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        if key & BASE_KEY == 0 {
            let e = self.top_entry(key)?;
            self.ensure(e)?;
            return Self::read_pages(&self.top, e, spare);
        }
        let Some(&Item::Base {
            base, skip, len, ..
        }) = self.order.get((key & !BASE_KEY) as usize)
        else {
            return Err(RestoreError::Stage(format!(
                "no inherited pages keyed {key:#x}"
            )));
        };
        let e = &self.base_entries[base];
        let cached = self
            .last_base
            .lock()
            .ok()
            .and_then(|g| g.as_ref().filter(|c| c.0 == base).map(|c| c.1.clone()));
        let all = match cached {
            Some(a) => a,
            None => {
                let a = Arc::new(Self::read_pages(&self.base, e, Vec::new())?);
                if let Ok(mut g) = self.last_base.lock() {
                    *g = Some((base, a.clone()));
                }
                a
            }
        };
        let Some(part) = all.get(skip as usize..(skip + len) as usize) else {
            return Err(bad(format!(
                "page record at byte {} of the base is shorter than it says",
                e.offset
            )));
        };
        let mut out = spare;
        out.clear();
        out.extend_from_slice(part);
        Ok(out)
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

/// The merged image's records after its metadata, for stage: with `lazy`, page records
/// come without their pages (keyed for [`Composite::pages_into`]), otherwise with them.
pub(crate) struct CompositeSource<'a> {
    c: &'a Composite,
    next: usize,
    lazy: bool,
    /// A payload buffer given back, reused for the next record's pages.
    spare: Vec<u8>,
}

impl<'a> CompositeSource<'a> {
    pub(crate) fn new(c: &'a Composite, lazy: bool) -> Self {
        Self {
            c,
            next: 0,
            lazy,
            spare: Vec::new(),
        }
    }
}

impl RecordSource for CompositeSource<'_> {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        loop {
            let k = self.next;
            let Some(item) = self.c.order.get(k).copied() else {
                return Ok(None);
            };
            self.next += 1;
            let rec = |t, flags, arg, offset, payload: Vec<u8>, record_len| OwnedRecord {
                tag: t,
                flags,
                arg,
                offset,
                payload,
                part: 0,
                record_len,
            };
            return Ok(Some(match item {
                Item::Top(i) => {
                    let e = self.c.top_entries[i];
                    match e.tag {
                        tag::CHECKPOINT => continue,
                        t if is_pages(t) && self.lazy => rec(
                            tag::PAGES,
                            e.flags,
                            e.arg,
                            e.offset,
                            Vec::new(),
                            index::pages_len(&self.c.top, &e)?,
                        ),
                        t if is_pages(t) => {
                            let p = self
                                .c
                                .pages_into(e.offset, std::mem::take(&mut self.spare))?;
                            let n = p.len() as u64;
                            rec(tag::PAGES, e.flags, e.arg, e.offset, p, n)
                        }
                        t => {
                            let mut buf = Vec::new();
                            index::read_payload(&self.c.top, &e, &mut buf)?;
                            let n = buf.len() as u64;
                            rec(t, e.flags, e.arg, e.offset, buf, n)
                        }
                    }
                }
                Item::Base { addr, len, .. } => {
                    let key = BASE_KEY | k as u64;
                    let p = if self.lazy {
                        Vec::new()
                    } else {
                        self.c.pages_into(key, std::mem::take(&mut self.spare))?
                    };
                    rec(tag::PAGES, FLAG_REQUIRED, addr, key, p, len)
                }
            }));
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages the last image inherits in several pieces of one record of the base come
    /// out as the base had them, around the pages the last image has itself (the
    /// base's record read once for all its pieces, buffers given back reused).
    #[test]
    fn inherited_pieces_of_one_base_record_around_written_pages() {
        use crate::kinds::testutil::{checkpoint, process};
        use std::io::Write;
        const P: u64 = 4096;
        let page = |b: u8| vec![b; P as usize];
        let image = |meta: &Checkpoint, pages: &[(u64, Vec<u8>)], features: u64| -> File {
            let mut w = crate::image::ImageWriter::with_features(Vec::new(), features).unwrap();
            w.write_meta(tag::CHECKPOINT, meta).unwrap();
            w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 7, &[], false)
                .unwrap();
            for (at, data) in pages {
                w.write_record(tag::PAGES, FLAG_REQUIRED, *at, data, true)
                    .unwrap();
            }
            let bytes = w.finish().unwrap();
            let mut f = crate::sys::process::memfd("composite-test").unwrap();
            f.write_all(&bytes).unwrap();
            f
        };
        let identity = |f: &File| {
            use std::os::unix::fs::FileExt;
            let len = f.metadata().unwrap().len();
            let mut tail = vec![0u8; crate::image::END_RECORD_LEN];
            let at = len - tail.len() as u64;
            f.read_exact_at(&mut tail, at).unwrap();
            crate::image::identity(&tail).unwrap()
        };
        // The base: a record of 6 pages at 0x10000, page k filled with k, and one of 2
        // pages after it (0x66, 0x77).
        let base_meta = checkpoint(vec![process(7)]);
        let all: Vec<u8> = (0..6u8).flat_map(page).collect();
        let next = [page(0x66), page(0x77)].concat();
        let base = image(&base_meta, &[(0x10000, all), (0x10000 + 6 * P, next)], 0);
        let (records, hash) = identity(&base);
        // The last image wrote pages 1, 4 and 6 again (0xa1, 0xa4, 0xa6) and inherits
        // the rest.
        let mut top_meta = checkpoint(vec![process(7)]);
        top_meta.parent = Some(crate::model::ParentImage {
            path: String::new(),
            records,
            hash,
        });
        top_meta.processes[0].inherited = vec![
            (0x10000, 0x10000 + P),
            (0x10000 + 2 * P, 0x10000 + 4 * P),
            (0x10000 + 5 * P, 0x10000 + 6 * P),
            (0x10000 + 7 * P, 0x10000 + 8 * P),
        ];
        let top = image(
            &top_meta,
            &[
                (0x10000 + P, page(0xa1)),
                (0x10000 + 4 * P, page(0xa4)),
                (0x10000 + 6 * P, page(0xa6)),
            ],
            crate::image::FEATURE_PARENT,
        );
        let c = Composite::open(top, base, (records, hash), None).unwrap();
        assert!(c.meta().parent.is_none());
        let mut src = CompositeSource::new(&c, false);
        let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
        while let Some(r) = src.next_record().unwrap() {
            if r.tag == tag::PAGES {
                assert_eq!(r.record_len, r.payload.len() as u64);
                got.push((r.arg, r.payload.clone()));
                src.recycle(r.payload);
            }
        }
        got.sort_by_key(|g| g.0);
        let want: Vec<(u64, Vec<u8>)> = vec![
            (0x10000, page(0)),
            (0x10000 + P, page(0xa1)),
            (0x10000 + 2 * P, [page(2), page(3)].concat()),
            (0x10000 + 4 * P, page(0xa4)),
            (0x10000 + 5 * P, page(5)),
            (0x10000 + 6 * P, page(0xa6)),
            (0x10000 + 7 * P, page(0x77)),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0);
            assert!(g.1 == w.1, "pages at {:#x} differ", g.0);
        }
    }

    #[test]
    fn intersection_of_sorted_ranges() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25), (28, 40)]),
            vec![(5, 10), (20, 25), (28, 30)]
        );
    }
}
