//! Threads: registers (through arch/), rseq, robust lists, scheduling, thread creation.

use xxhash_rust::xxh3::xxh3_64;

use crate::arch::{Abi, ArchHeader};
use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::task::signals;
use crate::model::{Process, VmaKind};
use crate::sys::{self, proc as procfs};

// ---- checks (plan) ----

const MAX_THREADS: usize = 1 << 16;

/// Not too many threads.
pub(crate) fn check_count(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.threads.len() > MAX_THREADS {
        check::p(problems, "malformed", "too many threads".into());
    }
}

/// Each thread's xsave area is of sane size and its pending signals valid.
pub(crate) fn check_states(proc_: &Process, problems: &mut Vec<Problem>) {
    for t in &proc_.threads {
        if t.arch.xsave.len() > 1 << 16 || t.arch.xsave.len() < 576 {
            check::p(problems, "malformed", "invalid xsave area size".into());
        }
        signals::check_pending(&t.pending, problems);
    }
}

/// The host's vDSO: (hash of its text, text size, size of the vvar pages before it).
pub(crate) fn host_vdso() -> Option<(u64, u64, u64)> {
    let me = std::process::id() as i32;
    let maps = procfs::maps(me).ok()?;
    let vdso = maps.iter().find(|m| m.path == b"[vdso]")?;
    let vvar: u64 = maps
        .iter()
        .filter(|m| m.path == b"[vvar]" || m.path == b"[vvar_vclock]")
        .map(|m| m.end - m.start)
        .sum();
    let code = sys::process::read_own(vdso.start, (vdso.end - vdso.start) as usize).ok()?;
    Some((xxh3_64(&code), vdso.end - vdso.start, vvar))
}

/// This kernel's 32-bit vDSO: (hash of its text, text size), mapped once in a throwaway
/// child (`sys::probe::vdso32`) and remembered.
pub(crate) fn host_vdso32() -> std::result::Result<(u64, u64), String> {
    static V: std::sync::OnceLock<std::result::Result<(u64, u64), String>> =
        std::sync::OnceLock::new();
    V.get_or_init(|| sys::probe::vdso32().map_err(|e| e.to_string()))
        .clone()
}

/// The process's vDSO must be this kernel's. `vdso32`: compare a 32-bit one (false when
/// this kernel cannot map one, which is reported as a missing kernel facility).
pub(crate) fn check_arch(
    hdr: &ArchHeader,
    proc_: &Process,
    vdso32: bool,
    problems: &mut Vec<Problem>,
) {
    let has_vdso = proc_.vmas.iter().any(|v| v.kind == VmaKind::Vdso);
    // An ia32 process's 32-bit vDSO: ckpt, a 64-bit program, has none of its own; a
    // throwaway child maps this kernel's (`host_vdso32`). Stage compares it again once
    // mapped in the process.
    if has_vdso && proc_.abi() == Abi::Ia32 && vdso32 && proc_.vdso_size != 0 {
        match host_vdso32() {
            Err(e) => check::p(
                problems,
                "vdso",
                format!(
                    "cannot read this kernel's 32-bit vDSO to compare it with the image's: {e}"
                ),
            ),
            Ok((hash, size)) => {
                if hash != proc_.vdso_hash || size != proc_.vdso_size {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's 32-bit vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, proc_.vdso_size
                        ),
                    );
                }
            }
        }
    }
    if has_vdso && proc_.abi() == Abi::X86_64 {
        // Images from before per-process vDSO identity carry it in the header only.
        let (want_hash, want_size) = if proc_.vdso_size != 0 {
            (proc_.vdso_hash, proc_.vdso_size)
        } else {
            (hdr.vdso_hash, hdr.vdso_size)
        };
        let want_vvar: u64 = proc_
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::Vvar)
            .map(|v| v.len())
            .sum();
        match host_vdso() {
            None => check::p(
                problems,
                "vdso",
                "this host has no vDSO, but the image's task used one".into(),
            ),
            Some((hash, size, vvar)) => {
                if hash != want_hash || size != want_size {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, want_size
                        ),
                    );
                } else if vvar != want_vvar {
                    check::p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO data area is {vvar} bytes, the image's {want_vvar}"
                        ),
                    );
                }
            }
        }
    }
}
