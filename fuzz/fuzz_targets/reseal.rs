//! Valid framing for fuzz inputs (shared by the targets that read whole images).

use ckpt::image::{HEADER_LEN, MAGIC, PAGE_SIZE, RECORD_HEADER_LEN, VERSION, tag};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// `data` with valid framing: file header fixed, each record's header checksum, zero
/// padding, payload checksum and the end record's count and chain recomputed. None when
/// the input is too short to hold a file header.
pub fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let mut out = data.to_vec();
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out[16..24].copy_from_slice(&0u64.to_le_bytes());
    let c = xxh3_64(&out[0..32]);
    out[32..40].copy_from_slice(&c.to_le_bytes());

    let mut pos = HEADER_LEN;
    let (mut records, mut chain) = (0u64, 0u64);
    while pos + RECORD_HEADER_LEN <= out.len() {
        let h = pos;
        let rtag = le_u32(&out, h);
        let len = le_u64(&out, h + 8);
        let pad = le_u32(&out, h + 24);
        let c = xxh3_64(&out[h..h + 28]) as u32;
        out[h + 28..h + 32].copy_from_slice(&c.to_le_bytes());
        if u64::from(pad) >= PAGE_SIZE {
            break;
        }
        let data_at = h + RECORD_HEADER_LEN + pad as usize;
        let room = (out.len() - data_at.min(out.len())) as u64;
        if data_at > out.len() || len.saturating_add(8) > room {
            break;
        }
        out[h + RECORD_HEADER_LEN..data_at].fill(0);
        let len = len as usize;
        if rtag == tag::END && len == 16 {
            out[data_at..data_at + 8].copy_from_slice(&records.to_le_bytes());
            out[data_at + 8..data_at + 16].copy_from_slice(&chain.to_le_bytes());
        }
        let mut x = Xxh3::new();
        x.update(&out[h..h + 24]);
        x.update(&out[data_at..data_at + len]);
        let sum = x.digest();
        out[data_at + len..data_at + len + 8].copy_from_slice(&sum.to_le_bytes());
        pos = data_at + len + 8;
        if rtag == tag::END {
            break;
        }
        records += 1;
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&chain.to_le_bytes());
        b[8..16].copy_from_slice(&sum.to_le_bytes());
        chain = xxh3_64(&b);
    }
    Some(out)
}
