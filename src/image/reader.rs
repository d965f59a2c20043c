//! [`ImageReader`]: reads an image as a stream and checks everything (header, each
//! record's header, padding, size bound and checksum, the end record against all before
//! it); hands over whole records ([`ImageReader::next_record`]) or page records in
//! pieces with their buffers ([`ImageReader::next_piece_owned`]).

use std::io::{self, Read};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::layout::{chain, record_checksum};
use super::{
    FLAG_REQUIRED, HEADER_LEN, ImageError, KNOWN_REQUIRED_FEATURES, MAGIC, PAGE_SIZE,
    RECORD_HEADER_LEN, Result, VERSION, max_payload, tag,
};

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
    /// The file header's required-feature bits (all known to this reader).
    required: u64,
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
            required,
        })
    }

    /// The file header's required-feature bits (`FEATURE_*`), all known to this reader:
    /// what the image's metadata must agree with (see [`super::check_features`]).
    pub fn required_features(&self) -> u64 {
        self.required
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
                | tag::FILE_EXTENTS
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
