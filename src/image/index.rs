//! Random access to an image file, for `restore --lazy`: [`open`] takes the records'
//! places from the image's `INDEX` record (written last by the writer: three reads
//! whatever the image's size) or, for an image without one, [`scan`] walks the record
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
    check_file_header(&h)?;
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
        if known(t) {
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

/// The records an index lists (the others are skipped, or refused if required).
fn known(t: u32) -> bool {
    matches!(
        t,
        tag::CHECKPOINT
            | tag::PAGES
            | tag::PAGES_PID
            | tag::FILE_DATA
            | tag::FILE_EXTENTS
            | tag::PAGES_LZ4
            | tag::PAGES_ZSTD
    )
}

/// Bytes of one entry of the `INDEX` record (see [`tag::INDEX`]), and its last 8 bytes.
pub(super) const INDEX_ENTRY_LEN: u64 = 40;
pub(super) const INDEX_MAGIC: &[u8; 8] = b"CKPTIDX1";
/// The index record's payload tail, its checksum and the end record: the bytes
/// [`from_index`] reads first, at the end of the file.
const TAIL_LEN: usize = 16 + 8 + super::END_RECORD_LEN;

/// One entry of the `INDEX` record.
pub(super) fn index_entry(
    t: u32,
    flags: u32,
    arg: u64,
    len: u64,
    checksum: u64,
    pad: u32,
) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[0..4].copy_from_slice(&t.to_le_bytes());
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[8..16].copy_from_slice(&arg.to_le_bytes());
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b[24..32].copy_from_slice(&checksum.to_le_bytes());
    b[32..36].copy_from_slice(&pad.to_le_bytes());
    b
}

/// The records of the image `f` as [`scan`] gives them, from its `INDEX` record when
/// it has one that checks out (three reads, whatever the image's size), else by
/// [`scan`]. What the index path checks before anything is built: the file header, the
/// end record, the index record's header and checksum, that its entries are as many as
/// the end record counts and chain to its hash, that they lie end to end from the file
/// header to the index, each within its tag's size, with its padding under a page, and
/// no unknown required record. Not read: the other records' headers (their fields are
/// in their checksums, which [`read_payload`] checks with every payload).
pub fn open(f: &std::fs::File) -> Result<Vec<IndexEntry>> {
    let size = f.metadata()?.len();
    match from_index(f, size)? {
        Some(v) => Ok(v),
        None => scan(f),
    }
}

/// [`open`]'s index path over `f` of `size` bytes: `None` when the image has no index,
/// or one that does not check out (the caller scans then, which names what is wrong).
pub fn from_index<F: FileExt>(f: &F, size: u64) -> Result<Option<Vec<IndexEntry>>> {
    let mut h = [0u8; HEADER_LEN];
    if size < (HEADER_LEN + RECORD_HEADER_LEN + TAIL_LEN) as u64
        || read_most(f, &mut h, 0)? < HEADER_LEN
        || check_file_header(&h).is_err()
    {
        return Ok(None);
    }
    let mut t = [0u8; TAIL_LEN];
    let tail_at = size - TAIL_LEN as u64;
    if read_most(f, &mut t, tail_at)? < TAIL_LEN || &t[8..16] != INDEX_MAGIC {
        return Ok(None);
    }
    let Ok((records, hash)) = super::identity(&t[24..]) else {
        return Ok(None);
    };
    let n = le64(&t[0..8]);
    let sum = le64(&t[16..24]);
    let plen = match n
        .checked_mul(INDEX_ENTRY_LEN)
        .and_then(|x| x.checked_add(16))
    {
        Some(p) if p <= max_payload(tag::INDEX) && n.checked_add(1) == Some(records) => p,
        _ => return Ok(None),
    };
    let Some(at) = (tail_at + 16)
        .checked_sub(plen + RECORD_HEADER_LEN as u64)
        .filter(|&a| a >= HEADER_LEN as u64)
    else {
        return Ok(None);
    };
    let mut buf = vec![0u8; RECORD_HEADER_LEN + plen as usize];
    if read_most(f, &mut buf, at)? < buf.len() {
        return Ok(None);
    }
    let (hdr, payload) = buf.split_at(RECORD_HEADER_LEN);
    if hdr != super::layout::record_header(tag::INDEX, 0, plen, 0, 0)
        || payload_checksum(tag::INDEX, 0, 0, payload) != sum
    {
        return Ok(None);
    }
    let mut out = Vec::new();
    let (mut off, mut ch) = (HEADER_LEN as u64, 0u64);
    for e in payload[..(n * INDEX_ENTRY_LEN) as usize].chunks_exact(INDEX_ENTRY_LEN as usize) {
        let (t, flags, arg, len, checksum, pad) = (
            le32(&e[0..4]),
            le32(&e[4..8]),
            le64(&e[8..16]),
            le64(&e[16..24]),
            le64(&e[24..32]),
            le32(&e[32..36]),
        );
        if t == tag::END || len > max_payload(t) || u64::from(pad) >= PAGE_SIZE {
            return Ok(None);
        }
        let data_off = off + RECORD_HEADER_LEN as u64 + u64::from(pad);
        let Some(next) = data_off.checked_add(len).and_then(|x| x.checked_add(8)) else {
            return Ok(None);
        };
        if next > at {
            return Ok(None);
        }
        ch = chain(ch, checksum);
        if known(t) {
            out.push(IndexEntry {
                tag: t,
                flags,
                arg,
                offset: off,
                data_off,
                len,
                checksum,
            });
        } else if flags & FLAG_REQUIRED != 0 {
            return Err(ImageError::UnknownRequiredRecord {
                offset: off,
                tag: t,
            });
        }
        off = next;
    }
    if off != at || chain(ch, sum) != hash {
        return Ok(None);
    }
    Ok(Some(out))
}

/// The checks of the file header `h` that [`ImageReader`](super::ImageReader) makes.
fn check_file_header(h: &[u8; HEADER_LEN]) -> Result<()> {
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
    Ok(())
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
        w.with_index();
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
        assert_eq!(got.len(), 22, "the index record is not listed");
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
        assert_eq!(f.reads.get(), 1 + 1 + 23 + 1 + 1);
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

    #[test]
    fn the_index_record_gives_what_a_scan_gives_in_three_reads() {
        for n in [0, 1, 20] {
            let b = image(n);
            let f = bytes(b.clone());
            let scanned = scan(&f).unwrap();
            f.reads.set(0);
            let got = from_index(&f, b.len() as u64).unwrap();
            assert_eq!(got.as_ref(), Some(&scanned), "{n} page records");
            assert_eq!(f.reads.get(), 3);
        }
    }

    /// Anything wrong with the index record, or none at all: `None`, and the caller
    /// scans (which still reads the image, or names what is wrong with it).
    #[test]
    fn a_damaged_or_missing_index_is_not_used() {
        let whole = image(3);
        let size = whole.len() as u64;
        let at = size as usize - 80;
        // Every byte of the index's tail, its checksum and some of its entries.
        for i in (at - 200)..(at + 24) {
            let mut b = whole.clone();
            b[i] ^= 0x40;
            assert_eq!(from_index(&bytes(b), size).unwrap(), None, "byte {i}");
        }
        // A record changed elsewhere: its checksum in the index is still right (the
        // payload is checked against it when read), but a changed stored checksum no
        // longer chains the same for a scan.
        let mut b = whole.clone();
        let e = scan(&bytes(whole.clone())).unwrap()[3];
        b[e.data_off as usize] ^= 1;
        let got = from_index(&bytes(b.clone()), size).unwrap().unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            read_payload(&bytes(b), &got[3], &mut buf),
            Err(ImageError::RecordChecksum { .. })
        ));
        // Cut short: no end record where it should be.
        assert_eq!(
            from_index(&bytes(whole[..at].to_vec()), at as u64).unwrap(),
            None
        );
        // An image without an index (written before it existed) is scanned.
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &vec![1u32]).unwrap();
        let old = w.finish().unwrap();
        assert_eq!(
            from_index(&bytes(old.clone()), old.len() as u64).unwrap(),
            None
        );
        assert_eq!(scan(&bytes(old)).unwrap().len(), 1);
    }
}
