//! Fuzz target: `check` is restore minus the commit (issue 13). For every input (and the
//! input resealed behind valid checksums, see `reseal.rs`), if `restore::check` finds no
//! problem then `restore::validate` (restore's plan, as `restore::prepare` runs it, and
//! every check stage makes of the records) must accept it too: an image `ckpt check`
//! accepts is never refused by restore before its point of no return for a reason that
//! depends only on the image and the host.
#![no_main]

use std::sync::OnceLock;

use ckpt::arch::{CpuPolicy, HostCaps};
use libfuzzer_sys::fuzz_target;

#[path = "reseal.rs"]
mod reseal;

fuzz_target!(|data: &[u8]| {
    same_verdict(data);
    if let Some(sealed) = reseal::reseal(data) {
        same_verdict(&sealed);
    }
});

fn view() -> &'static ckpt::restore::HostView {
    static VIEW: OnceLock<ckpt::restore::HostView> = OnceLock::new();
    VIEW.get_or_init(|| ckpt::restore::HostView {
        host: HostCaps::detect(),
        policy: CpuPolicy::default(),
        // PIDs taken on the fuzzing host say nothing about the image.
        new_pid_namespace: true,
        inherit: Vec::new(),
        join_ns: Vec::new(),
        cgroup_root: None,
    })
}

fn same_verdict(data: &[u8]) {
    let Ok(report) = ckpt::restore::check(data, view()) else {
        return;
    };
    if !report.problems.is_empty() {
        return;
    }
    if let Err(e) = ckpt::restore::validate(data, view()) {
        panic!("check accepted an image that restore refuses: {e}");
    }
}
