//! The image file format. Pure: no syscalls, no /proc. Never trusts a length or a count.
//!
//! ```text
//! file   := header record* end-record
//! header := magic[8] "CKPTIMG\0" | version u32 | header_len u32 | required u64 |
//!           optional u64 | xxh3(previous 32 bytes) u64                  (40 bytes)
//! record := tag u32 | flags u32 | len u64 | arg u64 | pad u32 |
//!           xxh3_low32(previous 28 bytes) u32                            (32 bytes)
//!           zero[pad] payload[len] xxh3(tag,flags,len,arg,payload) u64
//! ```
//! All integers are little-endian. `pad` aligns the payload of page records to 4096 bytes
//! in the stream, so page data can be read straight into place. The end record carries
//! the number of records before it and a running hash of their checksums, so a stream
//! that was cut short, or had records dropped or reordered, is refused.
//!
//! Record flags: bit 0 `REQUIRED` — a reader that does not know the tag must refuse the
//! image; otherwise it skips the record. Header feature bits work the same way: an unknown
//! bit in `required` is refused by name, unknown `optional` bits are ignored.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

pub const MAGIC: [u8; 8] = *b"CKPTIMG\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 40;
pub const RECORD_HEADER_LEN: usize = 32;
pub const PAGE_SIZE: u64 = 4096;

/// Record flag: readers that do not know this record's tag must refuse the image.
pub const FLAG_REQUIRED: u32 = 1;

/// Required-feature bits of the file header known to this reader, with their names.
pub const KNOWN_REQUIRED_FEATURES: &[(u64, &str)] = &[];

/// Record tags. Tags are never reused.
pub mod tag {
    /// CBOR-encoded `model::Checkpoint` (everything but page contents).
    pub const CHECKPOINT: u32 = 1;
    /// Raw page contents; `arg` is the virtual address of the first byte, `arg2`-less:
    /// the record belongs to the process given by the most recent `PAGES_PID` record.
    pub const PAGES: u32 = 2;
    /// Selects the process (pid in `arg`) the following `PAGES` records belong to.
    pub const PAGES_PID: u32 = 3;
    /// Contents of a file kept in the image (a deleted file, a memfd); `arg` names it
    /// (the `data` field of its descriptor). Several records follow each other for a large
    /// file; they come after the metadata and before all page data.
    pub const FILE_DATA: u32 = 4;
    /// Page contents compressed with LZ4 (`ckpt dump --compress lz4`): `arg` as for
    /// `PAGES`; the payload is the uncompressed length (u32, little endian, a multiple
    /// of 4096) followed by one LZ4 block. See [`super::decompress_pages`].
    pub const PAGES_LZ4: u32 = 5;
    /// Page contents compressed with zstd (`ckpt dump --compress zstd`): `arg` as for
    /// `PAGES`; the payload is the uncompressed length (u32, little endian, a multiple
    /// of 4096) followed by one zstd frame. See [`super::decompress_pages_zstd`].
    pub const PAGES_ZSTD: u32 = 6;
    /// End of image: payload is `record_count u64 | chain_hash u64`.
    pub const END: u32 = 0xffff_fff0;

    pub fn name(tag: u32) -> &'static str {
        match tag {
            CHECKPOINT => "checkpoint metadata",
            PAGES => "page data",
            PAGES_PID => "page data owner",
            FILE_DATA => "file contents",
            PAGES_LZ4 => "compressed page data",
            PAGES_ZSTD => "zstd-compressed page data",
            END => "end of image",
            _ => "unknown",
        }
    }
}

/// The largest payload accepted for each tag (the decoder allocates at most this).
pub fn max_payload(tag: u32) -> u64 {
    match tag {
        tag::CHECKPOINT => 256 << 20,
        tag::PAGES => 64 << 20,
        tag::PAGES_LZ4 => 64 << 20,
        tag::PAGES_ZSTD => 64 << 20,
        tag::PAGES_PID => 0,
        tag::FILE_DATA => 64 << 20,
        tag::END => 16,
        _ => 256 << 20,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a ckpt image (bad magic number)")]
    BadMagic,
    #[error(
        "image format version {found} is not supported by this ckpt (it reads version {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error(
        "image requires feature bit(s) {bits:#x} that this ckpt does not know; use a newer ckpt"
    )]
    UnknownRequiredFeature { bits: u64 },
    #[error("image header is corrupt (checksum mismatch)")]
    HeaderChecksum,
    #[error("image is truncated at byte {offset} (while reading {what})")]
    Truncated { offset: u64, what: &'static str },
    #[error("corrupt record header at byte {offset} (checksum mismatch)")]
    RecordHeaderChecksum { offset: u64 },
    #[error("record at byte {offset} ({name}) is {len} bytes, more than the {max} allowed")]
    RecordTooLarge {
        offset: u64,
        name: &'static str,
        len: u64,
        max: u64,
    },
    #[error("record at byte {offset} has invalid padding ({pad} bytes)")]
    BadPadding { offset: u64, pad: u32 },
    #[error("record at byte {offset} ({name}) is corrupt (checksum mismatch)")]
    RecordChecksum { offset: u64, name: &'static str },
    #[error(
        "record at byte {offset} has unknown tag {tag:#x} marked as required; use a newer ckpt"
    )]
    UnknownRequiredRecord { offset: u64, tag: u32 },
    #[error("image end record does not match its contents ({0})")]
    BadEnd(&'static str),
    #[error("data after the end of the image")]
    TrailingData,
    #[error("cannot decode {name} record: {msg}")]
    Decode { name: &'static str, msg: String },
    #[error("cannot encode {name} record: {msg}")]
    Encode { name: &'static str, msg: String },
    #[error("I/O error on image: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn header_bytes(required: u64, optional: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&required.to_le_bytes());
    h[24..32].copy_from_slice(&optional.to_le_bytes());
    let c = xxh3_64(&h[0..32]);
    h[32..40].copy_from_slice(&c.to_le_bytes());
    h
}

fn record_header(tag: u32, flags: u32, len: u64, arg: u64, pad: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&tag.to_le_bytes());
    h[4..8].copy_from_slice(&flags.to_le_bytes());
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&arg.to_le_bytes());
    h[24..28].copy_from_slice(&pad.to_le_bytes());
    let c = xxh3_64(&h[0..28]) as u32;
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// The checksum that a record with these fields and this payload carries (what
/// [`ImageWriter::write_record`] computes), for a caller that computes it on another
/// thread and writes with [`ImageWriter::write_record_summed`].
pub fn payload_checksum(tag: u32, flags: u32, arg: u64, payload: &[u8]) -> u64 {
    // The padding is not part of the checksum.
    record_checksum(
        &record_header(tag, flags, payload.len() as u64, arg, 0),
        payload,
    )
}

fn record_checksum(hdr: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u64 {
    let mut x = Xxh3::new();
    x.update(&hdr[0..24]);
    x.update(payload);
    x.digest()
}

fn chain(prev: u64, checksum: u64) -> u64 {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&prev.to_le_bytes());
    b[8..16].copy_from_slice(&checksum.to_le_bytes());
    xxh3_64(&b)
}

/// Writes an image as a stream.
pub struct ImageWriter<W: Write> {
    out: W,
    offset: u64,
    records: u64,
    chain: u64,
}

static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

impl<W: Write> ImageWriter<W> {
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(&header_bytes(0, 0))?;
        Ok(Self {
            out,
            offset: HEADER_LEN as u64,
            records: 0,
            chain: 0,
        })
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
    /// caller ([`payload_checksum`]), if given.
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

    /// Write the end record and flush; returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        let mut p = [0u8; 16];
        p[0..8].copy_from_slice(&self.records.to_le_bytes());
        p[8..16].copy_from_slice(&self.chain.to_le_bytes());
        self.write_record(tag::END, FLAG_REQUIRED, 0, &p, false)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record as read from the stream (payload checked against its checksum).
#[derive(Debug)]
pub struct Record<'a> {
    pub tag: u32,
    pub flags: u32,
    pub arg: u64,
    /// Byte offset of the record header in the stream.
    pub offset: u64,
    pub payload: &'a [u8],
}

/// A record whose payload buffer was handed over by the reader
/// ([`ImageReader::next_piece_owned`]).
#[derive(Debug)]
pub struct OwnedRecord {
    pub tag: u32,
    pub flags: u32,
    pub arg: u64,
    /// Byte offset of the record header in the stream.
    pub offset: u64,
    pub payload: Vec<u8>,
    /// Where `payload` starts within the record's payload: a page record may be handed
    /// over in pieces ([`ImageReader::next_piece_owned`]); 0 for a whole record.
    pub part: u64,
    /// The length of the record's whole payload (`payload.len()` for a whole record).
    pub record_len: u64,
}

/// The largest piece [`ImageReader::next_piece_owned`] hands over.
pub const PIECE_MAX: u64 = 4 << 20;

/// Reads an image as a stream, checking everything.
pub struct ImageReader<R: Read> {
    inp: R,
    offset: u64,
    records: u64,
    chain: u64,
    buf: Vec<u8>,
    done: bool,
    /// A page record being handed over in pieces.
    partial: Option<Partial>,
}

/// What is known of a record once its header (and padding) is read.
struct RecordHead {
    start: u64,
    h: [u8; RECORD_HEADER_LEN],
    tag: u32,
    flags: u32,
    len: u64,
    arg: u64,
    data_off: u64,
}

/// A page record handed over piece by piece: its head, how much of the payload was
/// handed over, and the checksum so far.
struct Partial {
    head: RecordHead,
    done: u64,
    hash: Xxh3,
}

fn read_exact_at<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(ImageError::Truncated {
                    offset: offset + got as u64,
                    what,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl<R: Read> ImageReader<R> {
    pub fn new(mut inp: R) -> Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        read_exact_at(&mut inp, &mut h, 0, "file header")?;
        if h[0..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        let c = u64::from_le_bytes(h[32..40].try_into().unwrap_or_default());
        if xxh3_64(&h[0..32]) != c {
            return Err(ImageError::HeaderChecksum);
        }
        let version = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(ImageError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let hlen = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
        if hlen as usize != HEADER_LEN {
            return Err(ImageError::HeaderChecksum);
        }
        let required = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        let known = KNOWN_REQUIRED_FEATURES.iter().fold(0, |a, (b, _)| a | b);
        if required & !known != 0 {
            return Err(ImageError::UnknownRequiredFeature {
                bits: required & !known,
            });
        }
        Ok(Self {
            inp,
            offset: HEADER_LEN as u64,
            records: 0,
            chain: 0,
            buf: Vec::new(),
            done: false,
            partial: None,
        })
    }

    /// Read and check a record header and its padding.
    fn read_head(&mut self) -> Result<RecordHead> {
        let start = self.offset;
        let mut h = [0u8; RECORD_HEADER_LEN];
        read_exact_at(&mut self.inp, &mut h, start, "record header")?;
        let hc = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
        if xxh3_64(&h[0..28]) as u32 != hc {
            return Err(ImageError::RecordHeaderChecksum { offset: start });
        }
        let tag = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let arg = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        let pad = u32::from_le_bytes(h[24..28].try_into().unwrap_or_default());
        let max = max_payload(tag);
        if len > max {
            return Err(ImageError::RecordTooLarge {
                offset: start,
                name: tag::name(tag),
                len,
                max,
            });
        }
        if u64::from(pad) >= PAGE_SIZE {
            return Err(ImageError::BadPadding { offset: start, pad });
        }
        let mut padbuf = [0u8; PAGE_SIZE as usize];
        let pad_region = &mut padbuf[..pad as usize];
        read_exact_at(
            &mut self.inp,
            pad_region,
            start + RECORD_HEADER_LEN as u64,
            "record padding",
        )?;
        if pad_region.iter().any(|&b| b != 0) {
            return Err(ImageError::BadPadding { offset: start, pad });
        }
        Ok(RecordHead {
            start,
            h,
            tag,
            flags,
            len,
            arg,
            data_off: start + RECORD_HEADER_LEN as u64 + u64::from(pad),
        })
    }

    /// Append the next `n` payload bytes of the record `head` (of which `got` were read
    /// before) to `buf`. Memory grows only as data actually arrives (a forged length
    /// costs nothing), but for a piece of at most [`PIECE_MAX`] bytes, whose room is
    /// made at once so that it is read in one go.
    fn read_payload(
        &mut self,
        head: &RecordHead,
        got: u64,
        n: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if n <= PIECE_MAX {
            buf.reserve(n as usize);
        }
        let read = (&mut self.inp).take(n).read_to_end(buf)? as u64;
        if read < n {
            return Err(ImageError::Truncated {
                offset: head.data_off + got + read,
                what: tag::name(head.tag),
            });
        }
        Ok(())
    }

    /// Read the checksum after the payload of `head`, compare it with `computed`, and
    /// move past the record. Returns the checksum.
    fn finish_payload(&mut self, head: &RecordHead, computed: u64) -> Result<u64> {
        let mut sum = [0u8; 8];
        read_exact_at(
            &mut self.inp,
            &mut sum,
            head.data_off + head.len,
            "record checksum",
        )?;
        let sum = u64::from_le_bytes(sum);
        if computed != sum {
            return Err(ImageError::RecordChecksum {
                offset: head.start,
                name: tag::name(head.tag),
            });
        }
        self.offset = head.data_off + head.len + 8;
        Ok(sum)
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record the reader understands or is required to handle; unknown optional
    /// records are skipped. Returns `None` once the end record has been read and checked
    /// (and nothing follows it).
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        if let Some(p) = &self.partial {
            // A caller mixing both ways of reading: never hand over a record's tail.
            return Err(ImageError::Truncated {
                offset: p.head.data_off + p.done,
                what: tag::name(p.head.tag),
            });
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let head = self.read_head()?;
            match self.body(head)? {
                Body::Record {
                    tag,
                    flags,
                    arg,
                    start,
                } => {
                    return Ok(Some(Record {
                        tag,
                        flags,
                        arg,
                        offset: start,
                        payload: &self.buf,
                    }));
                }
                Body::Skipped => {}
                Body::End => return Ok(None),
            }
        }
    }

    /// Read the payload of the record `head` into `self.buf`, check it, and account for
    /// it: the end record is checked against everything before it, unknown optional
    /// records are skipped.
    fn body(&mut self, head: RecordHead) -> Result<Body> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let r = self.read_payload(&head, 0, head.len, &mut buf);
        self.buf = buf;
        r?;
        let sum = self.finish_payload(&head, record_checksum(&head.h, &self.buf))?;
        let RecordHead {
            start,
            tag,
            flags,
            arg,
            ..
        } = head;
        if tag == tag::END {
            if self.buf.len() != 16 {
                return Err(ImageError::BadEnd("wrong size"));
            }
            let count = u64::from_le_bytes(self.buf[0..8].try_into().unwrap_or_default());
            let ch = u64::from_le_bytes(self.buf[8..16].try_into().unwrap_or_default());
            if count != self.records {
                return Err(ImageError::BadEnd(
                    "record count differs: records are missing",
                ));
            }
            if ch != self.chain {
                return Err(ImageError::BadEnd(
                    "record chain differs: records were changed or reordered",
                ));
            }
            let mut one = [0u8; 1];
            loop {
                match self.inp.read(&mut one) {
                    Ok(0) => break,
                    Ok(_) => return Err(ImageError::TrailingData),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.done = true;
            return Ok(Body::End);
        }
        self.records += 1;
        self.chain = chain(self.chain, sum);
        let known = matches!(
            tag,
            tag::CHECKPOINT
                | tag::PAGES
                | tag::PAGES_PID
                | tag::FILE_DATA
                | tag::PAGES_LZ4
                | tag::PAGES_ZSTD
        );
        if !known {
            if flags & FLAG_REQUIRED != 0 {
                return Err(ImageError::UnknownRequiredRecord { offset: start, tag });
            }
            return Ok(Body::Skipped);
        }
        Ok(Body::Record {
            tag,
            flags,
            arg,
            start,
        })
    }
}

/// What [`ImageReader::body`] found.
enum Body {
    /// A record the caller handles; its payload is in the reader's buffer.
    Record {
        tag: u32,
        flags: u32,
        arg: u64,
        start: u64,
    },
    /// An unknown optional record.
    Skipped,
    /// The end record (checked).
    End,
}

impl<R: Read> ImageReader<R> {
    /// The next record, its payload's buffer handed over (no copy) and `spare` made the
    /// reader's buffer for the next one (a caller that gives buffers back keeps a fixed
    /// set in use). A page record longer than `piece` bytes is handed over in pieces of
    /// at most `piece` bytes (a multiple of the page size), in order, each with its
    /// place in the record (`part`).
    ///
    /// A piece's checksum is not yet known to be right when it is handed over: the
    /// record's checksum is checked once its last piece has been read, and a mismatch is
    /// returned instead of that piece. A caller may only act on a piece in ways it can
    /// still undo (restore writes it into a process that is not committed yet).
    pub fn next_piece_owned(
        &mut self,
        mut spare: Vec<u8>,
        piece: u64,
    ) -> Result<Option<OwnedRecord>> {
        let piece = (piece.min(PIECE_MAX) / PAGE_SIZE).max(1) * PAGE_SIZE;
        let mut part = match self.partial.take() {
            Some(p) => p,
            None => loop {
                if self.done {
                    return Ok(None);
                }
                let head = self.read_head()?;
                if head.tag == tag::PAGES && head.len > piece {
                    let mut hash = Xxh3::new();
                    hash.update(&head.h[0..24]);
                    break Partial {
                        head,
                        done: 0,
                        hash,
                    };
                }
                // Anything else is read whole.
                match self.body(head)? {
                    Body::Record {
                        tag,
                        flags,
                        arg,
                        start,
                    } => {
                        let payload = std::mem::replace(&mut self.buf, spare);
                        let record_len = payload.len() as u64;
                        return Ok(Some(OwnedRecord {
                            tag,
                            flags,
                            arg,
                            offset: start,
                            payload,
                            part: 0,
                            record_len,
                        }));
                    }
                    Body::Skipped => {}
                    Body::End => return Ok(None),
                }
            },
        };
        let at = part.done;
        let n = piece.min(part.head.len - at);
        spare.clear();
        self.read_payload(&part.head, at, n, &mut spare)?;
        part.hash.update(&spare);
        part.done += n;
        let (tag, flags, arg, offset, record_len) = (
            part.head.tag,
            part.head.flags,
            part.head.arg,
            part.head.start,
            part.head.len,
        );
        if part.done == part.head.len {
            let sum = self.finish_payload(&part.head, part.hash.digest())?;
            self.records += 1;
            self.chain = chain(self.chain, sum);
        } else {
            self.partial = Some(part);
        }
        Ok(Some(OwnedRecord {
            tag,
            flags,
            arg,
            offset,
            payload: spare,
            part: at,
            record_len,
        }))
    }
}

/// The payload of a `PAGES_LZ4` record for `data` (page contents).
pub fn compress_pages(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + lz4_flex::block::get_maximum_output_size(data.len()));
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(data));
    out
}

/// The page contents of a `PAGES_LZ4` payload, into `out` (resized to fit). The claimed
/// length is checked against the bound of a page record before anything is allocated,
/// and must be what the block decompresses to.
pub fn decompress_pages(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    decompress_with(tag::PAGES_LZ4, payload, out, |block, out| {
        lz4_flex::block::decompress_into(block, out).map_err(|e| e.to_string())
    })
}

/// The page contents of a compressed page record (`tag`): its u32 length, checked
/// against the bound of a page record before `out` is sized to it, then `decompress`
/// of the rest into exactly that room, which must fill it.
fn decompress_with(
    tag: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
    decompress: impl FnOnce(&[u8], &mut [u8]) -> std::result::Result<usize, String>,
) -> Result<()> {
    let bad = |why: &str| ImageError::Decode {
        name: tag::name(tag),
        msg: why.to_string(),
    };
    let (len, rest) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no length"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len as u64 > max_payload(tag::PAGES) || len as u64 % PAGE_SIZE != 0 || len == 0 {
        return Err(bad(&format!("invalid length {len}")));
    }
    out.clear();
    out.resize(len, 0);
    let n = decompress(rest, &mut out[..]).map_err(|e| bad(&e))?;
    if n != len {
        return Err(bad(&format!("{n} bytes instead of {len}")));
    }
    Ok(())
}

/// The payload of a `PAGES_ZSTD` record for `data` (page contents), compressed at
/// `level`.
pub fn compress_pages_zstd(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut out = (data.len() as u32).to_le_bytes().to_vec();
    let frame = zstd::bulk::compress(data, level).map_err(|e| ImageError::Encode {
        name: tag::name(tag::PAGES_ZSTD),
        msg: e.to_string(),
    })?;
    out.extend_from_slice(&frame);
    Ok(out)
}

/// The page contents of a `PAGES_ZSTD` payload, into `out` (resized to fit). As for
/// [`decompress_pages`]: the claimed length is bounded before anything is allocated,
/// the frame may not decompress to more than it, and must give exactly it.
pub fn decompress_pages_zstd(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    decompress_with(tag::PAGES_ZSTD, payload, out, |frame, out| {
        zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(frame, out))
            .map_err(|e| e.to_string())
    })
}

/// Decode a CBOR metadata payload.
pub fn decode_meta<T: DeserializeOwned>(tag: u32, payload: &[u8]) -> Result<T> {
    let mut rest = payload;
    let v = ciborium::from_reader(&mut rest).map_err(|e| ImageError::Decode {
        name: tag::name(tag),
        msg: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ImageError::Decode {
            name: tag::name(tag),
            msg: format!("{} bytes follow the encoded value", rest.len()),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &vec![1u32, 2, 3]).unwrap();
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 42, &[], false)
            .unwrap();
        w.write_pages(0x1000, &[7u8; 8192]).unwrap();
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(u32, u64, Vec<u8>)>> {
        let mut r = ImageReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push((rec.tag, rec.arg, rec.payload.to_vec()));
        }
        Ok(out)
    }

    /// (tag, arg, part, record length, payload) of a record or piece.
    type Piece = (u32, u64, u64, u64, Vec<u8>);

    /// Every record and piece `next_piece_owned` hands over.
    fn read_pieces(bytes: &[u8], piece: u64) -> Result<Vec<Piece>> {
        let mut r = ImageReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_piece_owned(Vec::new(), piece)? {
            out.push((rec.tag, rec.arg, rec.part, rec.record_len, rec.payload));
        }
        Ok(out)
    }

    #[test]
    fn page_records_come_in_pieces_that_add_up_to_the_record() {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &vec![1u32]).unwrap();
        let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i * 7 + i / 4096) as u8).collect();
        w.write_pages(0x10000, &data).unwrap();
        w.write_pages(0x40000, &data[..4096]).unwrap();
        let img = w.finish().unwrap();
        let got = read_pieces(&img, 2 * 4096).unwrap();
        // The metadata whole; 5 pages as 2 + 2 + 1; the one-page record whole.
        let shape: Vec<(u32, u64, u64, u64, usize)> = got
            .iter()
            .map(|(t, a, p, l, d)| (*t, *a, *p, *l, d.len()))
            .collect();
        assert_eq!(
            shape[1..],
            [
                (tag::PAGES, 0x10000, 0, 5 * 4096, 8192),
                (tag::PAGES, 0x10000, 8192, 5 * 4096, 8192),
                (tag::PAGES, 0x10000, 16384, 5 * 4096, 4096),
                (tag::PAGES, 0x40000, 0, 4096, 4096),
            ]
        );
        let joined: Vec<u8> = got[1..4].iter().flat_map(|r| r.4.clone()).collect();
        assert_eq!(joined, data);
        // A piece size that is not a page multiple is rounded down (at least a page).
        assert_eq!(read_pieces(&img, 100).unwrap().len(), 1 + 5 + 1);
        // The same stream read whole gives the same records.
        assert_eq!(read_all(&img).unwrap().len(), 3);
    }

    #[test]
    fn a_bad_page_record_is_refused_at_its_last_piece() {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_pages(0x10000, &[9u8; 3 * 4096]).unwrap();
        let img = w.finish().unwrap();
        let payload = img.windows(4096).position(|x| x == [9u8; 4096]).unwrap();
        for at in [payload, payload + 3 * 4096 - 1] {
            let mut bad = img.clone();
            bad[at] ^= 1;
            let mut r = ImageReader::new(&bad[..]).unwrap();
            let mut pieces = 0;
            let err = loop {
                match r.next_piece_owned(Vec::new(), 4096) {
                    Ok(Some(_)) => pieces += 1,
                    Ok(None) => panic!("a flipped byte at {at} went unnoticed"),
                    Err(e) => break e,
                }
            };
            assert_eq!(pieces, 2, "the first two pieces come before the check");
            assert!(matches!(err, ImageError::RecordChecksum { .. }), "{err}");
        }
        // Cut inside the record: a truncation error, never a short piece.
        let mut r = ImageReader::new(&img[..payload + 4096 + 10]).unwrap();
        assert!(r.next_piece_owned(Vec::new(), 4096).unwrap().is_some());
        assert!(matches!(
            r.next_piece_owned(Vec::new(), 4096),
            Err(ImageError::Truncated { .. })
        ));
    }

    #[test]
    fn roundtrip_and_alignment() {
        let img = sample();
        let recs = read_all(&img).unwrap();
        assert_eq!(recs.len(), 3);
        let v: Vec<u32> = decode_meta(tag::CHECKPOINT, &recs[0].2).unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        assert_eq!(recs[2].1, 0x1000);
        assert_eq!(recs[2].2.len(), 8192);
        // page payload is 4096-aligned in the stream
        let pos = img
            .windows(8192)
            .position(|w| w.iter().all(|&b| b == 7))
            .unwrap();
        assert_eq!(pos % 4096, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let img = sample();
        for cut in 0..img.len() {
            assert!(read_all(&img[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let img = sample();
        // Flip one bit in each byte outside the page payload (too slow to do all 8192
        // payload bytes one by one, so sample them).
        for i in (0..img.len()).step_by(7) {
            let mut bad = img.clone();
            bad[i] ^= 0x10;
            assert!(read_all(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn trailing_data_is_refused() {
        let mut img = sample();
        img.push(0);
        assert!(matches!(read_all(&img), Err(ImageError::TrailingData)));
    }

    #[test]
    fn dropped_record_is_refused() {
        // Build an image, then splice out the PAGES_PID record: checksums of each
        // remaining record are fine, the chain in the end record is not.
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &1u32).unwrap();
        let a = w.offset();
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 42, &[], false)
            .unwrap();
        let b = w.offset();
        let mut img = w.finish().unwrap();
        img.drain(a as usize..b as usize);
        assert!(matches!(read_all(&img), Err(ImageError::BadEnd(_))));
    }

    #[test]
    fn unknown_optional_record_is_skipped_required_refused() {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_record(0x777, 0, 0, b"future", false).unwrap();
        let img = w.finish().unwrap();
        assert_eq!(read_all(&img).unwrap().len(), 0);

        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_record(0x777, FLAG_REQUIRED, 0, b"future", false)
            .unwrap();
        let img = w.finish().unwrap();
        assert!(matches!(
            read_all(&img),
            Err(ImageError::UnknownRequiredRecord { tag: 0x777, .. })
        ));
    }

    #[test]
    fn huge_length_is_refused_before_allocation() {
        let mut img = header_bytes(0, 0).to_vec();
        img.extend_from_slice(&record_header(tag::PAGES, 1, u64::MAX, 0, 0));
        assert!(matches!(
            read_all(&img),
            Err(ImageError::RecordTooLarge { .. })
        ));
    }
}
