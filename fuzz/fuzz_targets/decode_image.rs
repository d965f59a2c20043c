//! Fuzz target: the image decoder. Any byte string is fed to `ImageReader`; every record
//! it yields is taken, CHECKPOINT records are decoded into `model::Checkpoint`, and a
//! decoded checkpoint goes through the arch checks of the plan phase (`arch::check_arch`,
//! `arch::requirements_manifest`), and the whole input through `restore::check` (the plan
//! phase). None of it may panic, hang or allocate without bound.
//!
//! Random bytes almost never carry valid checksums, so each input is also fed a second
//! time *resealed*: the file header is made valid and every record header, record
//! checksum and the end record's count and chain are recomputed over whatever the input
//! holds. That lets the fuzzer reach the length, padding, tag and end-record logic and the
//! CBOR decoder behind the checksums.
#![no_main]

use std::sync::OnceLock;

use ckpt::arch::{CpuPolicy, HostCaps, check_arch, requirements_manifest, watchpoints};
use ckpt::image::{
    HEADER_LEN, ImageReader, MAGIC, PAGE_SIZE, RECORD_HEADER_LEN, VERSION, decode_meta, tag,
};
use ckpt::model::Checkpoint;
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Some(sealed) = reseal(data) {
        decode(&sealed);
    }
});

fn host() -> &'static HostCaps {
    static HOST: OnceLock<HostCaps> = OnceLock::new();
    HOST.get_or_init(HostCaps::detect)
}

fn view() -> &'static ckpt::restore::HostView {
    static VIEW: OnceLock<ckpt::restore::HostView> = OnceLock::new();
    VIEW.get_or_init(|| ckpt::restore::HostView {
        host: host().clone(),
        policy: CpuPolicy::default(),
        new_pid_namespace: false,
        inherit: Vec::new(),
    })
}

fn decode(data: &[u8]) {
    // The whole plan phase as `ckpt check` runs it: decode, structural and host checks
    // (read-only: it stats paths and looks at /proc), xsave conversion, and every page
    // record checked against the memory map.
    let _ = ckpt::restore::check(data, view());
    let Ok(mut reader) = ImageReader::new(data) else {
        return;
    };
    while let Ok(Some(rec)) = reader.next_record() {
        if rec.tag != tag::CHECKPOINT {
            continue;
        }
        if let Ok(cp) = decode_meta::<Checkpoint>(rec.tag, rec.payload) {
            plan_checks(&cp);
        }
    }
}

/// The arch part of the plan phase, on a decoded (hostile) checkpoint.
pub fn plan_checks(cp: &Checkpoint) {
    for p in &cp.processes {
        let threads: Vec<(i32, &ckpt::arch::ThreadArchState)> =
            p.threads.iter().map(|t| (t.tid, &t.arch)).collect();
        for policy in CpuPolicy::ALL {
            let _ = check_arch(&cp.arch, &threads, host(), policy);
        }
        for t in &p.threads {
            let _ = watchpoints(&t.arch.debugregs);
        }
    }
    let _ = requirements_manifest(&cp.arch);
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// `data` with valid framing: file header fixed, each record's header checksum, zero
/// padding, payload checksum and the end record's count and chain recomputed. None when
/// the input is too short to hold a file header.
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
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
