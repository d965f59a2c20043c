//! [`ImageWriter`]: writes the header, records (page records aligned so that their data
//! can be read straight into place), the index record (where each record is:
//! `tag::INDEX`) and the end record.

use std::io::Write;

use serde::Serialize;

use super::index::{INDEX_ENTRY_LEN, INDEX_MAGIC, index_entry};
use super::layout::{chain, header_bytes, record_checksum, record_header};
use super::{
    FLAG_REQUIRED, HEADER_LEN, ImageError, PAGE_SIZE, RECORD_HEADER_LEN, Result, max_payload, tag,
};

/// `fault-injection` builds: `CKPT_NO_INDEX=1` writes images without the `INDEX` record,
/// as before it existed (the tests of old images' reading).
fn no_index() -> bool {
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("CKPT_NO_INDEX").is_some_and(|v| v == "1") {
        return true;
    }
    false
}

/// Writes an image as a stream.
pub struct ImageWriter<W: Write> {
    out: W,
    offset: u64,
    records: u64,
    chain: u64,
    /// The `INDEX` record's entries so far (`None` once it would be too large: the
    /// image then has none, and readers walk its headers).
    pub(super) index: Option<Vec<u8>>,
}

static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

impl<W: Write> ImageWriter<W> {
    pub fn new(out: W) -> Result<Self> {
        Self::with_features(out, 0)
    }

    /// A writer whose header carries the `required` feature bits.
    pub fn with_features(mut out: W, required: u64) -> Result<Self> {
        out.write_all(&header_bytes(required, 0))?;
        Ok(Self {
            out,
            offset: HEADER_LEN as u64,
            records: 0,
            chain: 0,
            index: None,
        })
    }

    /// Write an `INDEX` record before the end record (not in `fault-injection` builds
    /// run with `CKPT_NO_INDEX=1`). Called before any record is written.
    pub fn with_index(&mut self) {
        if !no_index() && self.records == 0 {
            self.index = Some(Vec::new());
        }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Write one record. With `align`, zero padding makes the payload start at a
    /// multiple of 4096 bytes in the stream.
    pub fn write_record(
        &mut self,
        tag: u32,
        flags: u32,
        arg: u64,
        payload: &[u8],
        align: bool,
    ) -> Result<()> {
        self.write_record_summed(tag, flags, arg, payload, align, None)
    }

    /// [`write_record`](Self::write_record) with the record's checksum computed by the
    /// caller ([`payload_checksum`](super::payload_checksum)), if given.
    pub fn write_record_summed(
        &mut self,
        tag: u32,
        flags: u32,
        arg: u64,
        payload: &[u8],
        align: bool,
        sum: Option<u64>,
    ) -> Result<()> {
        let max = max_payload(tag);
        if payload.len() as u64 > max {
            return Err(ImageError::RecordTooLarge {
                offset: self.offset,
                name: tag::name(tag),
                len: payload.len() as u64,
                max,
            });
        }
        let pad = if align {
            let after = self.offset + RECORD_HEADER_LEN as u64;
            ((PAGE_SIZE - after % PAGE_SIZE) % PAGE_SIZE) as u32
        } else {
            0
        };
        let hdr = record_header(tag, flags, payload.len() as u64, arg, pad);
        let sum = sum.unwrap_or_else(|| record_checksum(&hdr, payload));
        self.out.write_all(&hdr)?;
        self.out.write_all(&ZEROS[..pad as usize])?;
        self.out.write_all(payload)?;
        self.out.write_all(&sum.to_le_bytes())?;
        self.offset += RECORD_HEADER_LEN as u64 + u64::from(pad) + payload.len() as u64 + 8;
        self.records += 1;
        self.chain = chain(self.chain, sum);
        let full = self
            .index
            .as_ref()
            .is_some_and(|ix| ix.len() as u64 + INDEX_ENTRY_LEN + 16 > max_payload(tag::INDEX));
        if full {
            self.index = None;
        }
        if let Some(ix) = &mut self.index {
            ix.extend_from_slice(&index_entry(
                tag,
                flags,
                arg,
                payload.len() as u64,
                sum,
                pad,
            ));
        }
        Ok(())
    }

    /// Write a metadata record encoded as CBOR.
    pub fn write_meta<T: Serialize>(&mut self, tag: u32, value: &T) -> Result<()> {
        let mut buf = Vec::new();
        ciborium::into_writer(value, &mut buf).map_err(|e| ImageError::Encode {
            name: tag::name(tag),
            msg: e.to_string(),
        })?;
        self.write_record(tag, FLAG_REQUIRED, 0, &buf, false)
    }

    /// Write page contents starting at virtual address `addr` (page aligned).
    pub fn write_pages(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        self.write_record(tag::PAGES, FLAG_REQUIRED, addr, data, true)
    }

    /// Write the index record and the end record, and flush; returns the underlying
    /// writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(mut ix) = self.index.take() {
            let n = ix.len() as u64 / INDEX_ENTRY_LEN;
            ix.extend_from_slice(&n.to_le_bytes());
            ix.extend_from_slice(INDEX_MAGIC);
            self.write_record(tag::INDEX, 0, 0, &ix, false)?;
        }
        let mut p = [0u8; 16];
        p[0..8].copy_from_slice(&self.records.to_le_bytes());
        p[8..16].copy_from_slice(&self.chain.to_le_bytes());
        self.write_record(tag::END, FLAG_REQUIRED, 0, &p, false)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
