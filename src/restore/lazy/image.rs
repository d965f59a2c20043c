//! The image of a lazy restore: its records found by their offset ([`LazyImage`]), and
//! the records stage takes ([`LazySource`]: page records without their pages).

use std::fs::File;

use crate::image::index::{self, IndexEntry};
use crate::image::{OwnedRecord, tag};
use crate::kinds::mem::pages::RecordSource;
use crate::restore::{RestoreError, Result};

/// The image file, its records found by their offset.
pub(crate) struct LazyImage {
    pub(super) file: File,
    pub(super) entries: Vec<IndexEntry>,
    /// `migrate --lazy`: the records are those of the last image over the full image
    /// of the rounds before it (`file` and `entries` unused).
    pub(super) comp: Option<Box<crate::restore::composite::Composite>>,
}

impl LazyImage {
    pub(crate) fn open(file: File) -> Result<Self> {
        let entries = index::open(&file)?;
        Ok(Self {
            file,
            entries,
            comp: None,
        })
    }

    pub(crate) fn composite(c: crate::restore::composite::Composite, file: File) -> Self {
        Self {
            file,
            entries: Vec::new(),
            comp: Some(Box::new(c)),
        }
    }

    /// The pages still missing can no longer come (`migrate --lazy`).
    pub(super) fn failed(&self) -> Option<String> {
        self.comp.as_ref().and_then(|c| c.failed())
    }

    /// Wait until every page still missing is in (`migrate --lazy`).
    pub(super) fn wait_all(&self) -> Result<()> {
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
    pub(super) fn pages_into(&self, offset: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(c) = &self.comp {
            return c.pages_into(offset, spare);
        }
        self.record_into(offset, spare)
    }

    /// The record the pages keyed `key` come from, and where they start in its pages:
    /// for a plain image the record at byte `key`, from its start; through a chain, see
    /// `Composite::locate` (pieces of one record share it, so it is read once).
    pub(super) fn locate(&self, key: u64) -> Result<(u64, u64)> {
        match &self.comp {
            Some(c) => c.locate(key),
            None => Ok((key, 0)),
        }
    }

    /// The pages of the record `rec` ([`LazyImage::locate`]), checked, into `spare`.
    pub(super) fn record_into(&self, rec: u64, spare: Vec<u8>) -> Result<Vec<u8>> {
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
    comp: Option<crate::restore::composite::CompositeSource<'a>>,
}

impl<'a> LazySource<'a> {
    pub(crate) fn new(img: &'a LazyImage) -> Self {
        let comp = img
            .comp
            .as_deref()
            .map(|c| crate::restore::composite::CompositeSource::new(c, true));
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
