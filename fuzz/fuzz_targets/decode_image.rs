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
use ckpt::image::{ImageReader, decode_meta, tag};
use ckpt::model::Checkpoint;
use libfuzzer_sys::fuzz_target;

#[path = "reseal.rs"]
mod reseal;
use reseal::reseal;

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
