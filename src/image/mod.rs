//! The image file format. Pure: no syscalls, no /proc (`index` reads a file given to it
//! through `FileExt`, for `restore --lazy`). Never trusts a length or a count.
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
//!
//! Modules (their items re-exported here; callers use `image::NAME`):
//! - `layout.rs`: the bytes of the file header and of a record header, the checksums and
//!   the running hash of the end record;
//! - `writer.rs`: [`ImageWriter`], which writes a stream of records;
//! - `reader.rs`: [`ImageReader`], which reads and checks one, whole records
//!   ([`Record`]) or page records in pieces ([`OwnedRecord`]);
//! - `index.rs`: random access for `restore --lazy` ([`index::open`]: the index record
//!   the writer puts last, or [`index::scan`] of the record headers; each payload read
//!   and checked later);
//! - `payload.rs`: what is inside records: CBOR metadata ([`decode_meta`]) and compressed
//!   page data (LZ4, zstd).
//!
//! Here: the constants of the format, the record tags and their size limits, and
//! [`ImageError`].

use std::io;

pub mod index;
mod layout;
mod payload;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use layout::payload_checksum;
pub use payload::{
    compress_pages, compress_pages_zstd, decode_meta, decompress_pages, decompress_pages_zstd,
};
pub use reader::{ImageReader, OwnedRecord, PIECE_MAX, Record};
pub use writer::ImageWriter;

pub const MAGIC: [u8; 8] = *b"CKPTIMG\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 40;
pub const RECORD_HEADER_LEN: usize = 32;
pub const PAGE_SIZE: u64 = 4096;

/// Record flag: readers that do not know this record's tag must refuse the image.
pub const FLAG_REQUIRED: u32 = 1;

/// Required-feature bits of the file header known to this reader, with their names.
pub const KNOWN_REQUIRED_FEATURES: &[(u64, &str)] = &[
    (
        FEATURE_PARENT,
        "incremental image (its unchanged pages are in its parent image)",
    ),
    (
        FEATURE_WAITING_BYTES,
        "TCP connections waiting to be accepted hold bytes their clients sent",
    ),
];

/// Required feature: the image is incremental (`model::Checkpoint::parent`): a reader
/// that does not follow the parent would restore its unchanged pages as zeros.
pub const FEATURE_PARENT: u64 = 1;

/// Required feature: a connection waiting in a TCP listener's queue holds bytes its
/// client sent (`model::TcpWaiting::data`): a reader that does not know the field would
/// restore the connection without them.
pub const FEATURE_WAITING_BYTES: u64 = 2;

/// The file header's required features (`required`, from
/// [`ImageReader::required_features`]) against the image's metadata: an image is
/// incremental (`FEATURE_PARENT`) exactly when its checkpoint names a parent. A header
/// changed either way is refused (an incremental image read as a full one would
/// restore its unchanged pages as zeros).
pub fn check_features(required: u64, has_parent: bool) -> Result<()> {
    if (required & FEATURE_PARENT != 0) != has_parent {
        return Err(ImageError::Decode {
            name: "checkpoint",
            msg: if has_parent {
                "it names a parent image, but the file header does not mark the image \
                 incremental"
            } else {
                "the file header marks the image incremental, but it names no parent image"
            }
            .into(),
        });
    }
    Ok(())
}

/// Bytes of the end record at the end of an image: its header, payload and checksum.
pub const END_RECORD_LEN: usize = RECORD_HEADER_LEN + 16 + 8;

/// An image's identity from its last [`END_RECORD_LEN`] bytes: the record count and the
/// chained hash of every record's checksum that the end record carries (which changes
/// with any record). The end record's header and checksum are checked; that the rest
/// of the image matches is checked when it is read (`ImageReader`).
pub fn identity(tail: &[u8]) -> Result<(u64, u64)> {
    let bad = || ImageError::BadEnd("no end record at the end of the file");
    if tail.len() != END_RECORD_LEN {
        return Err(bad());
    }
    let hdr: [u8; RECORD_HEADER_LEN] = tail[..RECORD_HEADER_LEN].try_into().map_err(|_| bad())?;
    let payload = &tail[RECORD_HEADER_LEN..RECORD_HEADER_LEN + 16];
    let want = layout::record_header(tag::END, FLAG_REQUIRED, 16, 0, 0);
    if hdr != want {
        return Err(bad());
    }
    let sum = u64::from_le_bytes(
        tail[RECORD_HEADER_LEN + 16..]
            .try_into()
            .map_err(|_| bad())?,
    );
    if layout::record_checksum(&hdr, payload) != sum {
        return Err(ImageError::BadEnd("end record checksum"));
    }
    let records = u64::from_le_bytes(payload[..8].try_into().map_err(|_| bad())?);
    let hash = u64::from_le_bytes(payload[8..].try_into().map_err(|_| bad())?);
    Ok((records, hash))
}

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
    /// Where a kept file (`FILE_DATA` under the same `arg`) has data, when it has holes:
    /// (offset, length) pairs of u64, little endian, in order, not overlapping, inside
    /// the contents. Right after the file's `FILE_DATA` records. Optional: a reader that
    /// does not know it gives the file back without holes (the contents are whole).
    pub const FILE_EXTENTS: u32 = 7;
    /// Where every record before it is, for random access (`restore --lazy`), written
    /// last before the end record: for each record in order `tag u32 | flags u32 | arg
    /// u64 | len u64 | checksum u64 | pad u32 | 0 u32` (40 bytes; its offset is the sum
    /// of the ones before), then `count u64 | "CKPTIDX1"`. Optional: a reader that does
    /// not know it skips it; one that does checks it against the end record (which
    /// counts and chains it as any record) and falls back to walking the headers if it
    /// is missing or does not check out (see [`super::index::open`]).
    pub const INDEX: u32 = 8;
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
            FILE_EXTENTS => "file data extents",
            INDEX => "record index",
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
        tag::FILE_EXTENTS => 64 << 20,
        tag::INDEX => 64 << 20,
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
