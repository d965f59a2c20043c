//! The image format's tests: round trips, pieces, and every kind of damage refused.

use super::layout::{header_bytes, record_header};
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

/// An image's identity comes from its end record alone: the record count and the
/// chained hash, different for images with different records; anything but a whole
/// end record is refused.
#[test]
fn identity_from_the_end_record() {
    let a = sample();
    let (records, hash) = identity(&a[a.len() - END_RECORD_LEN..]).unwrap();
    assert_eq!(records, 3);
    let mut w = ImageWriter::with_features(Vec::new(), FEATURE_PARENT).unwrap();
    w.write_meta(tag::CHECKPOINT, &vec![1u32, 2, 4]).unwrap();
    w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 42, &[], false)
        .unwrap();
    w.write_pages(0x1000, &[7u8; 8192]).unwrap();
    let b = w.finish().unwrap();
    let (rb, hb) = identity(&b[b.len() - END_RECORD_LEN..]).unwrap();
    assert_eq!(rb, 3);
    assert_ne!(hb, hash);
    // The feature bit is known to this reader.
    assert_eq!(read_all(&b).unwrap().len(), 3);
    assert!(identity(&a[a.len() - END_RECORD_LEN - 1..a.len() - 1]).is_err());
    assert!(identity(&a[..END_RECORD_LEN]).is_err());
    let mut c = a[a.len() - END_RECORD_LEN..].to_vec();
    c[RECORD_HEADER_LEN + 9] ^= 1;
    assert!(identity(&c).is_err());
}
