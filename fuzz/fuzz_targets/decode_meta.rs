//! Fuzz target: the metadata decoder alone. Any byte string is decoded as the CBOR payload
//! of a CHECKPOINT record (`image::decode_meta::<model::Checkpoint>`), and a checkpoint
//! that decodes goes through the arch checks of the plan phase. Nothing may panic, hang or
//! allocate without bound. Cheaper per input than `decode_image`, so it digs deeper into
//! the CBOR and serde paths.
#![no_main]

use std::sync::OnceLock;

use ckpt::arch::{CpuPolicy, HostCaps, check_arch, requirements_manifest};
use ckpt::image::{decode_meta, tag};
use ckpt::model::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cp) = decode_meta::<Checkpoint>(tag::CHECKPOINT, data) else {
        return;
    };
    static HOST: OnceLock<HostCaps> = OnceLock::new();
    let host = HOST.get_or_init(HostCaps::detect);
    for p in &cp.processes {
        let threads: Vec<(i32, &ckpt::arch::ThreadArchState)> =
            p.threads.iter().map(|t| (t.tid, &t.arch)).collect();
        for policy in CpuPolicy::ALL {
            let _ = check_arch(&cp.arch, &threads, host, policy);
        }
    }
    let _ = requirements_manifest(&cp.arch);
});
