//! The bytes of the file header and of a record header, each ending in a checksum of
//! what precedes it; the checksum of a record (header fields and payload); and the
//! running hash of those checksums that the end record carries.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::{HEADER_LEN, MAGIC, RECORD_HEADER_LEN, VERSION};

pub(super) fn header_bytes(required: u64, optional: u64) -> [u8; HEADER_LEN] {
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

pub(super) fn record_header(
    tag: u32,
    flags: u32,
    len: u64,
    arg: u64,
    pad: u32,
) -> [u8; RECORD_HEADER_LEN] {
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
/// [`ImageWriter::write_record`](super::ImageWriter::write_record) computes), for a caller that computes it on another
/// thread and writes with [`ImageWriter::write_record_summed`](super::ImageWriter::write_record_summed).
pub fn payload_checksum(tag: u32, flags: u32, arg: u64, payload: &[u8]) -> u64 {
    // The padding is not part of the checksum.
    record_checksum(
        &record_header(tag, flags, payload.len() as u64, arg, 0),
        payload,
    )
}

pub(super) fn record_checksum(hdr: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u64 {
    let mut x = Xxh3::new();
    x.update(&hdr[0..24]);
    x.update(payload);
    x.digest()
}

pub(super) fn chain(prev: u64, checksum: u64) -> u64 {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&prev.to_le_bytes());
    b[8..16].copy_from_slice(&checksum.to_le_bytes());
    xxh3_64(&b)
}
