//! Hostile images: a valid synthetic image is damaged in thousands of deterministic ways
//! (bit flips, truncation at and around every record boundary, length and padding fields
//! at their extremes behind a valid header checksum, records dropped, duplicated or
//! swapped, metadata replaced by garbage behind valid checksums) and every outcome must be
//! an error — never a panic, never an acceptance of changed bytes. Hostile records of
//! each kind, the fuzz seeds and compressed pages are in `hostile_records.rs`; the
//! synthetic image in `common/hostile.rs`.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use ckpt::image::{
    FLAG_REQUIRED, HEADER_LEN, ImageError, ImageWriter, RECORD_HEADER_LEN, max_payload, tag,
};
use common::hostile::*;
use xxhash_rust::xxh3::xxh3_64;

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Read `bad`; it must fail (or, if it is byte-identical to `good`, succeed), and must not
/// panic. Returns the error.
fn must_fail(good: &[u8], bad: &[u8], what: &str) -> Option<ImageError> {
    match catch_unwind(AssertUnwindSafe(|| read(bad))) {
        Err(_) => panic!("reader panicked on {what}"),
        Ok(Err(e)) => {
            // Every error must say something.
            assert!(!e.to_string().is_empty(), "{what}: empty error message");
            Some(e)
        }
        Ok(Ok(_)) => {
            assert_eq!(good, bad, "{what}: a changed image was accepted");
            None
        }
    }
}

/// Rewrite the record header at `at` with its checksum recomputed, so a reader gets past
/// the header check to the field that was changed.
fn reseal_header(img: &mut [u8], at: usize) {
    let c = xxh3_64(&img[at..at + 28]) as u32;
    img[at + 28..at + 32].copy_from_slice(&c.to_le_bytes());
}

fn field_u64(img: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
}

#[test]
fn the_synthetic_image_is_valid() {
    let cp = checkpoint();
    for optional in [false, true] {
        let img = image(&cp, optional);
        let out = read(&img.bytes).unwrap();
        assert_eq!(out.checkpoint.as_ref(), Some(&cp));
        assert_eq!(out.records.len(), 3, "optional records are skipped");
        assert!(img.bytes.len() < 20_000);
    }
}

#[test]
fn truncation_at_and_around_every_record_boundary() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let mut cuts: Vec<usize> = vec![0, 1, 8, HEADER_LEN - 1, HEADER_LEN];
    for &r in &img.records {
        for d in [0usize, 1, 4, 8, 16, 24, 28, 31, 32, 33] {
            cuts.push(r + d);
            cuts.push(r.saturating_sub(d));
        }
    }
    // And a stride through everything, including inside payloads and padding.
    cuts.extend((0..b.len()).step_by(13));
    cuts.push(b.len() - 1);
    for cut in cuts.into_iter().filter(|&c| c < b.len()) {
        let e = must_fail(b, &b[..cut], &format!("truncation at {cut}"));
        assert!(
            matches!(
                e,
                Some(ImageError::Truncated { .. }) | Some(ImageError::BadMagic)
            ),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn random_bit_flips() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let mut rng = Rng(0x5eed);
    for round in 0..3000 {
        let mut bad = b.clone();
        let flips = 1 + rng.below(if round % 2 == 0 { 1 } else { 8 });
        for _ in 0..flips {
            let i = rng.below(bad.len());
            bad[i] ^= 1 << rng.below(8);
        }
        must_fail(b, &bad, &format!("bit flips, round {round}"));
    }
    // Whole bytes set to extremes at every header byte.
    for &r in &img.records {
        for i in r..r + RECORD_HEADER_LEN {
            for v in [0u8, 0xff] {
                let mut bad = b.clone();
                bad[i] = v;
                must_fail(b, &bad, &format!("byte {i} = {v:#x}"));
            }
        }
    }
}

#[test]
fn length_and_padding_fields_at_their_limits() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    for &r in &img.records {
        let t = u32::from_le_bytes(b[r..r + 4].try_into().unwrap());
        let len = field_u64(b, r + 8);
        let max = max_payload(t);
        let lens = [
            0,
            1,
            len.wrapping_sub(1),
            len + 1,
            len + 8,
            max,
            max + 1,
            u64::from(u32::MAX),
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
        ];
        // (The reader allocates only as data arrives, so lengths up to the maximum are
        // cheap: see claimed_length_is_not_allocated_before_the_data_arrives.)
        for l in lens.into_iter().filter(|&l| l != len) {
            let mut bad = b.clone();
            bad[r + 8..r + 16].copy_from_slice(&l.to_le_bytes());
            reseal_header(&mut bad, r);
            let e = must_fail(b, &bad, &format!("record at {r}: len {l:#x}"));
            if l > max {
                assert!(
                    matches!(e, Some(ImageError::RecordTooLarge { .. })),
                    "{e:?}"
                );
            }
        }
        let pad = u32::from_le_bytes(b[r + 24..r + 28].try_into().unwrap());
        for p in [1u32, 7, 4095, 4096, 65536, u32::MAX] {
            if p == pad {
                continue;
            }
            let mut bad = b.clone();
            bad[r + 24..r + 28].copy_from_slice(&p.to_le_bytes());
            reseal_header(&mut bad, r);
            must_fail(b, &bad, &format!("record at {r}: pad {p}"));
        }
        for (tg, fl) in [
            (0u32, 0u32),
            (t, 0),
            (t, u32::MAX),
            (u32::MAX, 1),
            (tag::END, 1),
        ] {
            if (tg, fl) == (t, u32::from_le_bytes(b[r + 4..r + 8].try_into().unwrap())) {
                continue;
            }
            let mut bad = b.clone();
            bad[r..r + 4].copy_from_slice(&tg.to_le_bytes());
            bad[r + 4..r + 8].copy_from_slice(&fl.to_le_bytes());
            reseal_header(&mut bad, r);
            must_fail(
                b,
                &bad,
                &format!("record at {r}: tag {tg:#x} flags {fl:#x}"),
            );
        }
    }
}

#[test]
fn file_header_fields_at_their_limits() {
    let img = image(&checkpoint(), false);
    let b = &img.bytes;
    let reseal = |h: &mut Vec<u8>| {
        let c = xxh3_64(&h[0..32]);
        h[32..40].copy_from_slice(&c.to_le_bytes());
    };
    for (at, width, values) in [
        (8usize, 4usize, vec![0u64, 2, u64::from(u32::MAX)]),
        (12, 4, vec![0, 39, 41, u64::from(u32::MAX)]),
        (16, 8, vec![1, 1 << 63, u64::MAX]),
        (24, 8, vec![1, u64::MAX]),
    ] {
        for v in values {
            let mut bad = b.clone();
            bad[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            reseal(&mut bad);
            let what = format!("file header byte {at} = {v:#x}");
            if at == 24 {
                // Unknown optional feature bits are ignored by design.
                assert!(read(&bad).is_ok(), "{what}");
            } else {
                must_fail(b, &bad, &what);
            }
        }
    }
}

#[test]
fn records_dropped_duplicated_swapped() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let r = &img.records;
    let spans: Vec<(usize, usize)> = r.windows(2).map(|w| (w[0], w[1])).collect();
    for (i, &(s, e)) in spans.iter().enumerate() {
        let mut dropped = b.clone();
        dropped.drain(s..e);
        must_fail(b, &dropped, &format!("record {i} dropped"));
        let mut dup = b.clone();
        dup.splice(e..e, b[s..e].iter().copied());
        must_fail(b, &dup, &format!("record {i} duplicated"));
        let mut trailing = b.clone();
        trailing.extend_from_slice(&b[s..e]);
        must_fail(b, &trailing, &format!("record {i} after the end"));
    }
    // Swap the first two records (they are not page-aligned, so offsets stay valid).
    let (a, m, z) = (r[0], r[1], r[2]);
    let mut swapped = b[..a].to_vec();
    swapped.extend_from_slice(&b[m..z]);
    swapped.extend_from_slice(&b[a..m]);
    swapped.extend_from_slice(&b[z..]);
    must_fail(b, &swapped, "records 0 and 1 swapped");
    // Two images glued together.
    let mut twice = b.clone();
    twice.extend_from_slice(b);
    assert!(matches!(
        must_fail(b, &twice, "image twice"),
        Some(ImageError::TrailingData)
    ));
}

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

/// A short input must not make the reader allocate what its length fields merely claim:
/// the record header's checksum is not a secret, anyone can make one.
#[test]
fn claimed_length_is_not_allocated_before_the_data_arrives() {
    let img = image(&checkpoint(), false);
    let r = img.records[0];
    let mut bad = img.bytes[..r + RECORD_HEADER_LEN + 64].to_vec();
    bad[r + 8..r + 16].copy_from_slice(&max_payload(tag::CHECKPOINT).to_le_bytes());
    reseal_header(&mut bad, r);
    alloc_probe::reset();
    assert!(matches!(read(&bad), Err(ImageError::Truncated { .. })));
    let largest = alloc_probe::largest();
    assert!(
        largest <= 1 << 20,
        "a {}-byte input made the reader allocate {largest} bytes at once",
        bad.len()
    );
}

/// Bytes after the CBOR value of a metadata record are content that nobody reads: a
/// record holding them is not the record that was written.
#[test]
fn trailing_bytes_after_metadata_are_refused() {
    let mut payload = Vec::new();
    ciborium::into_writer(&checkpoint(), &mut payload).unwrap();
    payload.extend_from_slice(b"junk");
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_record(tag::CHECKPOINT, FLAG_REQUIRED, 0, &payload, false)
        .unwrap();
    let img = w.finish().unwrap();
    assert!(matches!(read(&img), Err(ImageError::Decode { .. })));
}

/// CBOR payloads that are well-checksummed but wrong.
fn garbage_payloads(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let cp = checkpoint();
    let mut good = Vec::new();
    ciborium::into_writer(&cp, &mut good).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("one zero".into(), vec![0]),
        ("break byte".into(), vec![0xff]),
        // Valid CBOR of the wrong shape.
        ("an integer".into(), vec![0x18, 0x2a]),
        ("a string".into(), b"\x63abc".to_vec()),
        ("empty map".into(), vec![0xa0]),
        ("empty array".into(), vec![0x80]),
        // Claims of enormous sizes with nothing behind them.
        ("array of 2^64-1".into(), [&[0x9b][..], &[0xff; 8]].concat()),
        ("map of 2^32".into(), [&[0xba][..], &[0xff; 4]].concat()),
        (
            "bytes of 2^63".into(),
            [&[0x5b, 0x80], &[0; 7][..]].concat(),
        ),
        ("text of 2^32-1".into(), [&[0x7a][..], &[0xff; 4]].concat()),
        // Deep nesting.
        ("10000 nested arrays".into(), vec![0x81; 10_000]),
        ("10000 nested maps".into(), [0xa1, 0x00].repeat(5_000)),
        ("10000 tags".into(), [0xc6].repeat(10_000)),
        // Indefinite-length forms never closed.
        ("open indefinite array".into(), vec![0x9f; 100]),
        (
            "open indefinite bytes".into(),
            [&[0x5f][..], &[0x41, 0x00].repeat(100)].concat(),
        ),
        // The real thing, damaged.
        ("truncated by one".into(), good[..good.len() - 1].to_vec()),
        ("half".into(), good[..good.len() / 2].to_vec()),
    ];
    for i in 0..200 {
        let mut g = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(g.len());
            g[at] = rng.next() as u8;
        }
        out.push((format!("mutated CBOR {i}"), g));
    }
    for i in 0..50 {
        let n = rng.below(300);
        out.push((
            format!("random bytes {i}"),
            (0..n).map(|_| rng.next() as u8).collect(),
        ));
    }
    out
}

#[test]
fn wrong_metadata_behind_valid_checksums_is_a_decode_error() {
    let mut rng = Rng(0xdec0de);
    for (what, payload) in garbage_payloads(&mut rng) {
        // The writer computes every checksum and the end chain: only the content is wrong.
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_record(tag::CHECKPOINT, FLAG_REQUIRED, 0, &payload, false)
            .unwrap();
        let img = w.finish().unwrap();
        match catch_unwind(AssertUnwindSafe(|| read(&img))) {
            Err(_) => panic!("panic decoding {what}"),
            Ok(Err(ImageError::Decode { name, msg })) => {
                assert_eq!(name, "checkpoint metadata");
                assert!(!msg.is_empty());
            }
            Ok(Err(e)) => panic!("{what}: expected a decode error, got {e}"),
            // A random mutation can land in a string, a number or the name of a field
            // that has a default (serde skips unknown fields) and still decode: that is
            // a well-formed checkpoint, not a decoder failure. The checksums are what
            // catch such changes in a real image.
            Ok(Ok(_)) => assert!(what.starts_with("mutated CBOR"), "{what} was accepted"),
        }
    }
}

#[test]
fn the_arch_checks_survive_hostile_headers() {
    // Decoded but hostile arch data must give problems, not panics.
    let host = ckpt::arch::HostCaps::detect();
    let mut rng = Rng(0xa5c4);
    let cp = checkpoint();
    for round in 0..500 {
        let mut hdr = cp.arch.clone();
        let mut t = cp.processes[0].threads[0].arch.clone();
        match round % 6 {
            0 => {
                hdr.xsave_layout =
                    vec![(rng.next() as u32 % 70, rng.next() as u32, rng.next() as u32)]
            }
            1 => hdr.xfeatures_used = rng.next(),
            2 => hdr.xsave_size = rng.next() as u32,
            3 => {
                let i = rng.below(t.xsave.len());
                t.xsave[i] = rng.next() as u8;
                let at = 512 + 8 * rng.below(2);
                t.xsave[at..at + 8].copy_from_slice(&rng.next().to_le_bytes());
            }
            4 => {
                t.debugregs = [
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                ]
            }
            _ => t.xsave.truncate(rng.below(900)),
        }
        let threads = [(1, &t)];
        for policy in ckpt::arch::CpuPolicy::ALL {
            let _ = ckpt::arch::check_arch(&hdr, &threads, &host, policy);
        }
        let _ = ckpt::arch::requirements_manifest(&hdr);
    }
}
