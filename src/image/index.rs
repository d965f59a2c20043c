//! Random access to an image file, for `restore --lazy`: [`scan`] walks the record
//! headers without reading the payloads (each record's stored checksum is read, so the
//! end record's count and chained hash are still checked: a file cut short, or with
//! records dropped or reordered, is refused before anything is built), and
//! [`read_payload`] reads one record's payload later and checks its checksum before it
//! is used.

use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::xxh3_64;

use super::layout::chain;
use super::{
    FLAG_REQUIRED, HEADER_LEN, ImageError, KNOWN_REQUIRED_FEATURES, MAGIC, PAGE_SIZE,
    RECORD_HEADER_LEN, Result, VERSION, max_payload, payload_checksum, tag,
};

/// One record of the image, as [`scan`] found it (its payload not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub tag: u32,
    pub flags: u32,
    pub arg: u64,
    /// Byte offset of the record header.
    pub offset: u64,
    /// Byte offset and length of the payload.
    pub data_off: u64,
    pub len: u64,
    /// The checksum stored after the payload.
    pub checksum: u64,
}

fn read_at<F: FileExt>(f: &F, buf: &mut [u8], at: u64, what: &'static str) -> Result<()> {
    f.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ImageError::Truncated { offset: at, what }
        } else {
            ImageError::Io(e)
        }
    })
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Every record of the image in `f` but the end record, in order, with the same checks
/// as [`ImageReader`](super::ImageReader) makes of headers, padding, sizes, unknown
/// required records and the end record; payloads are not read (their checksums are
/// checked by [`read_payload`]). Unknown optional records are left out.
pub fn scan<F: FileExt>(f: &F) -> Result<Vec<IndexEntry>> {
    scan_with_identity(f).map(|(entries, _)| entries)
}

/// [`scan`], and the image's identity: the record count and chained hash its end record
/// carries (checked against the records, as `image::identity` reads them from the tail).
pub fn scan_with_identity<F: FileExt>(f: &F) -> Result<(Vec<IndexEntry>, (u64, u64))> {
    let mut h = [0u8; HEADER_LEN];
    read_at(f, &mut h, 0, "file header")?;
    if h[0..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    if xxh3_64(&h[0..32]) != le64(&h[32..40]) {
        return Err(ImageError::HeaderChecksum);
    }
    let version = le32(&h[8..12]);
    if version != VERSION {
        return Err(ImageError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    if le32(&h[12..16]) as usize != HEADER_LEN {
        return Err(ImageError::HeaderChecksum);
    }
    let known = KNOWN_REQUIRED_FEATURES.iter().fold(0, |a, (b, _)| a | b);
    let required = le64(&h[16..24]);
    if required & !known != 0 {
        return Err(ImageError::UnknownRequiredFeature {
            bits: required & !known,
        });
    }
    let mut out = Vec::new();
    let mut at = HEADER_LEN as u64;
    let (mut records, mut ch) = (0u64, 0u64);
    let mut rh = [0u8; RECORD_HEADER_LEN];
    read_at(f, &mut rh, at, "record header")?;
    loop {
        if xxh3_64(&rh[0..28]) as u32 != le32(&rh[28..32]) {
            return Err(ImageError::RecordHeaderChecksum { offset: at });
        }
        let (t, flags, len, arg, pad) = (
            le32(&rh[0..4]),
            le32(&rh[4..8]),
            le64(&rh[8..16]),
            le64(&rh[16..24]),
            le32(&rh[24..28]),
        );
        let max = max_payload(t);
        if len > max {
            return Err(ImageError::RecordTooLarge {
                offset: at,
                name: tag::name(t),
                len,
                max,
            });
        }
        if u64::from(pad) >= PAGE_SIZE {
            return Err(ImageError::BadPadding { offset: at, pad });
        }
        let data_off = at + RECORD_HEADER_LEN as u64 + u64::from(pad);
        if t == tag::END {
            let mut end = [0u8; 24];
            if len != 16 {
                return Err(ImageError::BadEnd("wrong size"));
            }
            read_at(f, &mut end, data_off, "end of image")?;
            if payload_checksum(t, flags, arg, &end[0..16]) != le64(&end[16..24]) {
                return Err(ImageError::RecordChecksum {
                    offset: at,
                    name: tag::name(t),
                });
            }
            if le64(&end[0..8]) != records {
                return Err(ImageError::BadEnd(
                    "record count differs: records are missing",
                ));
            }
            if le64(&end[8..16]) != ch {
                return Err(ImageError::BadEnd(
                    "record chain differs: records were changed or reordered",
                ));
            }
            let mut one = [0u8; 1];
            if f.read_at(&mut one, data_off + 24).map_err(ImageError::Io)? != 0 {
                return Err(ImageError::TrailingData);
            }
            return Ok((out, (records, ch)));
        }
        // The record's checksum and the next record's header follow each other: one
        // read for both (a scan costs one read per record, whatever its size).
        let mut tail = [0u8; 8 + RECORD_HEADER_LEN];
        let got = read_most(f, &mut tail, data_off + len)?;
        if got < 8 {
            return Err(ImageError::Truncated {
                offset: data_off + len,
                what: "record checksum",
            });
        }
        let checksum = le64(&tail[0..8]);
        records += 1;
        ch = chain(ch, checksum);
        let known = matches!(
            t,
            tag::CHECKPOINT
                | tag::PAGES
                | tag::PAGES_PID
                | tag::FILE_DATA
                | tag::FILE_EXTENTS
                | tag::PAGES_LZ4
                | tag::PAGES_ZSTD
        );
        if known {
            out.push(IndexEntry {
                tag: t,
                flags,
                arg,
                offset: at,
                data_off,
                len,
                checksum,
            });
        } else if flags & FLAG_REQUIRED != 0 {
            return Err(ImageError::UnknownRequiredRecord { offset: at, tag: t });
        }
        at = data_off + len + 8;
        if got < tail.len() {
            return Err(ImageError::Truncated {
                offset: at,
                what: "record header",
            });
        }
        rh.copy_from_slice(&tail[8..]);
    }
}

/// Read as much of `buf` as the file has at `at` (short only at its end).
fn read_most<F: FileExt>(f: &F, buf: &mut [u8], at: u64) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Io(e)),
        }
    }
    Ok(got)
}

/// Read the payload of `e` into `buf` (replacing its contents) and check it against
/// the record's checksum.
pub fn read_payload<F: FileExt>(f: &F, e: &IndexEntry, buf: &mut Vec<u8>) -> Result<()> {
    // A buffer reused from an earlier record is not cleared first: every byte is read
    // over (clearing 4 MiB cost a tenth of the lazy fill's time).
    let n = e.len as usize;
    if buf.len() < n {
        buf.resize(n, 0);
    }
    buf.truncate(n);
    read_at(f, buf, e.data_off, tag::name(e.tag))?;
    if payload_checksum(e.tag, e.flags, e.arg, buf) != e.checksum {
        return Err(ImageError::RecordChecksum {
            offset: e.offset,
            name: tag::name(e.tag),
        });
    }
    Ok(())
}

/// Check that the padding between the header of `e` and its payload is zeros (as
/// [`ImageReader`](super::ImageReader) does; [`scan`] only bounds its length).
pub fn check_padding<F: FileExt>(f: &F, e: &IndexEntry) -> Result<()> {
    let start = e.offset + RECORD_HEADER_LEN as u64;
    let pad = e.data_off.saturating_sub(start);
    if pad == 0 {
        return Ok(());
    }
    let mut buf = [0u8; PAGE_SIZE as usize];
    let region = buf.get_mut(..pad as usize).ok_or(ImageError::BadPadding {
        offset: e.offset,
        pad: pad as u32,
    })?;
    read_at(f, region, start, "record padding")?;
    if region.iter().any(|&b| b != 0) {
        return Err(ImageError::BadPadding {
            offset: e.offset,
            pad: pad as u32,
        });
    }
    Ok(())
}

/// The hash of `e`'s checksum with its header fields in, for a payload read in parts:
/// fed every part in order, its digest must be `e.checksum` (see [`read_payload`]).
pub fn payload_hasher(e: &IndexEntry) -> xxhash_rust::xxh3::Xxh3 {
    let mut x = xxhash_rust::xxh3::Xxh3::new();
    x.update(&super::layout::record_header(e.tag, e.flags, e.len, e.arg, 0)[0..24]);
    x
}

/// Read `buf.len()` bytes of the payload of `e` from byte `at` of it (no check: the
/// caller hashes the parts, see [`payload_hasher`]).
pub fn read_payload_part<F: FileExt>(f: &F, e: &IndexEntry, at: u64, buf: &mut [u8]) -> Result<()> {
    if at
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > e.len)
    {
        return Err(ImageError::Truncated {
            offset: e.offset,
            what: tag::name(e.tag),
        });
    }
    read_at(f, buf, e.data_off + at, tag::name(e.tag))
}

/// The length of the pages a page record holds, uncompressed (for a compressed one,
/// its first four payload bytes, read from `f`).
pub fn pages_len<F: FileExt>(f: &F, e: &IndexEntry) -> Result<u64> {
    match e.tag {
        tag::PAGES_LZ4 | tag::PAGES_ZSTD => {
            let mut n = [0u8; 4];
            read_at(f, &mut n, e.data_off, tag::name(e.tag))?;
            Ok(u64::from(u32::from_le_bytes(n)))
        }
        _ => Ok(e.len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{FLAG_REQUIRED, ImageWriter, tag};
    use std::cell::Cell;

    /// Image bytes read at random, counting the reads.
    struct Bytes {
        b: Vec<u8>,
        reads: Cell<usize>,
    }

    impl FileExt for Bytes {
        fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            let from = (at as usize).min(self.b.len());
            let n = buf.len().min(self.b.len() - from);
            buf[..n].copy_from_slice(&self.b[from..from + n]);
            Ok(n)
        }

        fn write_at(&self, _buf: &[u8], _at: u64) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    fn image(records: u64) -> Vec<u8> {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &vec![1u32, 2, 3]).unwrap();
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 42, &[], false)
            .unwrap();
        for i in 0..records {
            w.write_pages(0x10000 + i * 0x10000, &[i as u8 + 1; 8192])
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn bytes(b: Vec<u8>) -> Bytes {
        Bytes {
            b,
            reads: Cell::new(0),
        }
    }

    #[test]
    fn a_scan_finds_every_record_with_one_read_each() {
        let f = bytes(image(20));
        let got = scan(&f).unwrap();
        assert_eq!(got.len(), 22);
        assert_eq!(got[0].tag, tag::CHECKPOINT);
        assert_eq!(got[1].tag, tag::PAGES_PID);
        assert_eq!(got[1].arg, 42);
        for (i, e) in got[2..].iter().enumerate() {
            assert_eq!(
                (e.tag, e.arg, e.len),
                (tag::PAGES, 0x10000 + i as u64 * 0x10000, 8192)
            );
            let mut buf = Vec::new();
            read_payload(&f, e, &mut buf).unwrap();
            assert_eq!(buf, vec![i as u8 + 1; 8192]);
        }
        // The file header, the first record's header, one read per record (its
        // checksum and the next header), the end record, and the look past it. (Before:
        // two reads per record.)
        f.reads.set(0);
        scan(&f).unwrap();
        assert_eq!(f.reads.get(), 1 + 1 + 22 + 1 + 1);
    }

    #[test]
    fn a_scan_refuses_an_image_cut_anywhere() {
        let whole = image(3);
        for cut in 0..whole.len() {
            let f = bytes(whole[..cut].to_vec());
            assert!(scan(&f).is_err(), "cut at {cut} of {}", whole.len());
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(matches!(
            scan(&bytes(longer)),
            Err(ImageError::TrailingData)
        ));
    }

    #[test]
    fn a_scan_refuses_a_changed_checksum_or_header() {
        let whole = image(3);
        let good = scan(&bytes(whole.clone())).unwrap();
        // A page record's stored checksum: the end record's chain no longer matches.
        let e = good[3];
        let mut b = whole.clone();
        b[(e.data_off + e.len) as usize] ^= 1;
        assert!(matches!(scan(&bytes(b)), Err(ImageError::BadEnd(_))));
        // A byte of its header.
        let mut b = whole.clone();
        b[e.offset as usize + 16] ^= 1;
        assert!(matches!(
            scan(&bytes(b)),
            Err(ImageError::RecordHeaderChecksum { .. })
        ));
    }
}
