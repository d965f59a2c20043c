//! What is inside records: CBOR metadata ([`decode_meta`]; the writer encodes it) and
//! page data compressed with LZ4 or zstd, whose claimed length is checked before
//! anything is allocated.

use serde::de::DeserializeOwned;

use super::{ImageError, PAGE_SIZE, Result, max_payload, tag};

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
