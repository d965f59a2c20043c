//! Debug registers (hardware watchpoints and breakpoints set through ptrace, as gdb
//! does): decoding, and the kernel's acceptance rules, so that `ckpt check` refuses a
//! value the restore host's kernel would reject instead of finding out at commit.
//!
//! The rules are those of Linux's ptrace debug-register interface (arch/x86/kernel/
//! ptrace.c and hw_breakpoint.c): writing DRi (i < 4) creates or moves a per-thread
//! perf breakpoint, validated immediately (user-space address); writing DR7 sets each
//! slot's type and length, validated for every slot that is enabled *or already has a
//! breakpoint*:
//! - R/W `00` execute (the length field must then be `00`), `01` write, `11` read/write;
//!   `10` (I/O) is refused;
//! - length `00` 1 byte, `01` 2, `11` 4, `10` 8 (the 8-byte length exists on 64-bit
//!   kernels, whatever the task's word size);
//! - the address must be aligned to the length;
//! - the whole range must lie below TASK_SIZE_MAX (0x7fff_ffff_f000 with 4-level paging,
//!   larger with 5-level paging) — the kernel applies this limit to 32-bit tasks too.
//!
//! DR7's reserved bits (10-15 and 32-63) are masked off by the kernel, not refused, and
//! the value written is what PTRACE_PEEKUSER returns afterwards, so they round-trip and are
//! not a problem. DR6 is a plain per-thread value the kernel accepts as is.
//!
//! Restore is expected to write DRi only for slots that are enabled or have a non-zero
//! address, then DR6, then DR7 last (the kernel needs a slot's address before the slot
//! can be enabled at an aligned address); [`check_debugregs`] checks exactly the writes
//! that order makes.

use serde::Serialize;

use super::check::{Problem, ProblemCode};
use super::cpu::TASK_SIZE_MAX_4LEVEL;
use super::x86::Abi;

/// Top of a 32-bit task's address space (IA32_PAGE_OFFSET).
pub const IA32_TASK_SIZE: u64 = 0xffff_e000;

/// What a debug-register slot triggers on.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WatchKind {
    /// Instruction fetch (a hardware breakpoint).
    Execute,
    /// Data write.
    Write,
    /// I/O port access (not available to user programs).
    Io,
    /// Data read or write.
    ReadWrite,
}

/// One DR0-DR3 slot as DR7 configures it.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchpoint {
    /// Slot number 0-3 (DR0-DR3).
    pub slot: usize,
    pub addr: u64,
    /// Length in bytes (1, 2, 4 or 8).
    pub len: u64,
    pub kind: WatchKind,
    /// Local or global enable bit set in DR7.
    pub enabled: bool,
}

/// Decode the four slots of a saved DR0-DR3, DR6, DR7 array.
pub fn watchpoints(dr: &[u64; 6]) -> [Watchpoint; 4] {
    let dr7 = dr[5];
    std::array::from_fn(|i| {
        let ctl = (dr7 >> (16 + 4 * i)) & 0xf;
        Watchpoint {
            slot: i,
            addr: dr[i],
            len: match ctl >> 2 {
                0 => 1,
                1 => 2,
                2 => 8,
                _ => 4,
            },
            kind: match ctl & 3 {
                0 => WatchKind::Execute,
                1 => WatchKind::Write,
                2 => WatchKind::Io,
                _ => WatchKind::ReadWrite,
            },
            enabled: (dr7 >> (2 * i)) & 3 != 0,
        }
    })
}

/// The problems a saved set of debug registers (DR0-DR3, DR6, DR7) would meet on restore,
/// with the 4-level-paging user address limit. See the module documentation for the rules.
/// For an ia32 task an enabled slot must also lie below 0xffff_e000: the kernel would take
/// a higher address, but a 32-bit task has nothing there, so such an image is inconsistent.
pub fn check_debugregs(dr: &[u64; 6], abi: Abi) -> Vec<Problem> {
    check_debugregs_with_limit(dr, abi, TASK_SIZE_MAX_4LEVEL)
}

/// [`check_debugregs`] with the host's user address limit (`HostCaps::task_size_max`).
pub fn check_debugregs_with_limit(dr: &[u64; 6], abi: Abi, task_size_max: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    for w in watchpoints(dr) {
        if !w.enabled && w.addr == 0 {
            continue;
        }
        let reg = format!("DR{}", w.slot);
        let state = if w.enabled { "enabled" } else { "disabled" };
        let mut bad = |code: ProblemCode, what: String| {
            out.push(Problem::new(
                code,
                format!(
                    "hardware watchpoint {reg} ({state}, address {:#x}): {what}; this kernel would refuse it",
                    w.addr
                ),
                vec![reg.clone()],
            ));
        };
        match w.kind {
            WatchKind::Io => {
                bad(
                    ProblemCode::DebugregType,
                    "DR7 sets it to trap I/O port accesses (R/W = 10), which user programs cannot use".to_string(),
                );
                continue;
            }
            WatchKind::Execute if w.len != 1 => {
                bad(
                    ProblemCode::DebugregLength,
                    format!(
                        "an instruction breakpoint must have length 1, DR7 gives {}",
                        w.len
                    ),
                );
                continue;
            }
            _ => {}
        }
        if w.addr & (w.len - 1) != 0 {
            bad(
                ProblemCode::DebugregAlignment,
                format!(
                    "the address is not aligned to the watched length ({} bytes)",
                    w.len
                ),
            );
            continue;
        }
        let last = w.addr.checked_add(w.len - 1);
        if last.is_none_or(|l| l >= task_size_max) {
            bad(
                ProblemCode::DebugregAddress,
                format!("not a user-space address (it must be below {task_size_max:#x})"),
            );
            continue;
        }
        if abi == Abi::Ia32 && w.enabled && last.is_some_and(|l| l >= IA32_TASK_SIZE) {
            out.push(Problem::new(
                ProblemCode::DebugregAddress,
                format!(
                    "hardware watchpoint {reg} (enabled, address {:#x}) lies above a 32-bit task's address space (below {IA32_TASK_SIZE:#x}); the image is inconsistent",
                    w.addr
                ),
                vec![reg.clone()],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DR7 control bits enabling slot `i` (local enable) with R/W `rw` and LEN `len`.
    fn ctl(i: usize, rw: u64, len: u64) -> u64 {
        (1 << (2 * i)) | (rw << (16 + 4 * i)) | (len << (18 + 4 * i))
    }

    fn codes(dr: [u64; 6], abi: Abi) -> Vec<ProblemCode> {
        check_debugregs(&dr, abi)
            .into_iter()
            .map(|p| p.code)
            .collect()
    }

    #[test]
    fn typical_gdb_watchpoints_pass() {
        // watch -l an 8-byte variable (write, len 8), rwatch an int (rw, len 4), a
        // hardware breakpoint (exec, len 1), plus LE (bit 8) as gdb sets it.
        let dr7 = ctl(0, 1, 2) | ctl(1, 3, 3) | ctl(2, 0, 0) | (1 << 8);
        let dr = [
            0x7ffd_1234_5670,
            0x5555_5555_8014,
            0x5555_5555_1139,
            0,
            0xffff_0ff0,
            dr7,
        ];
        assert!(check_debugregs(&dr, Abi::X86_64).is_empty());
        let w = watchpoints(&dr);
        assert_eq!(
            (w[0].len, w[0].kind, w[0].enabled),
            (8, WatchKind::Write, true)
        );
        assert_eq!((w[1].len, w[1].kind), (4, WatchKind::ReadWrite));
        assert_eq!((w[2].len, w[2].kind), (1, WatchKind::Execute));
        assert!(!w[3].enabled);
        // All zero: nothing to restore.
        assert!(check_debugregs(&[0; 6], Abi::X86_64).is_empty());
    }

    #[test]
    fn kernel_rejections_are_reported() {
        // I/O breakpoint.
        assert_eq!(
            codes([0x1000, 0, 0, 0, 0, ctl(0, 2, 0)], Abi::X86_64),
            [ProblemCode::DebugregType]
        );
        // Execute with length 4.
        assert_eq!(
            codes([0x1000, 0, 0, 0, 0, ctl(0, 0, 3)], Abi::X86_64),
            [ProblemCode::DebugregLength]
        );
        // Misaligned: 4-byte watch at ...2, 8-byte at ...4, 2-byte at odd.
        assert_eq!(
            codes([0x1002, 0, 0, 0, 0, ctl(0, 1, 3)], Abi::X86_64),
            [ProblemCode::DebugregAlignment]
        );
        assert_eq!(
            codes([0, 0x1004, 0, 0, 0, ctl(1, 3, 2)], Abi::X86_64),
            [ProblemCode::DebugregAlignment]
        );
        assert_eq!(
            codes([0, 0, 0, 0x1001, 0, ctl(3, 1, 1)], Abi::X86_64),
            [ProblemCode::DebugregAlignment]
        );
        // Kernel addresses, enabled or not (writing the address alone is refused).
        assert_eq!(
            codes(
                [0xffff_ffff_8100_0000, 0, 0, 0, 0, ctl(0, 1, 0)],
                Abi::X86_64
            ),
            [ProblemCode::DebugregAddress]
        );
        assert_eq!(
            codes([0, 0xffff_8880_0000_0000, 0, 0, 0, 0], Abi::X86_64),
            [ProblemCode::DebugregAddress]
        );
        // The last watched byte counts: an 8-byte watch ending past the limit.
        assert_eq!(
            codes(
                [TASK_SIZE_MAX_4LEVEL - 8, 0, 0, 0, 0, ctl(0, 1, 2)],
                Abi::X86_64
            ),
            []
        );
        assert_eq!(
            codes(
                [TASK_SIZE_MAX_4LEVEL, 0, 0, 0, 0, ctl(0, 1, 0)],
                Abi::X86_64
            ),
            [ProblemCode::DebugregAddress]
        );
        // A 5-level-paging host takes higher addresses.
        let high = [1u64 << 50, 0, 0, 0, 0, ctl(0, 1, 0)];
        assert_eq!(check_debugregs(&high, Abi::X86_64).len(), 1);
        assert!(
            check_debugregs_with_limit(&high, Abi::X86_64, crate::arch::cpu::TASK_SIZE_MAX_5LEVEL)
                .is_empty()
        );
        // Several problems are all reported.
        let dr = [
            0x1001,
            0x1000,
            0xffff_ffff_ffff_fff8,
            0,
            0,
            ctl(0, 1, 1) | ctl(1, 2, 0) | ctl(2, 1, 2),
        ];
        assert_eq!(codes(dr, Abi::X86_64).len(), 3);
        let p = &check_debugregs(&dr, Abi::X86_64)[0];
        assert!(
            p.message.contains("DR0") && p.message.contains("0x1001"),
            "{}",
            p.message
        );
    }

    #[test]
    fn disabled_slots_with_zero_address_are_ignored() {
        // Garbage type/len bits in a disabled, unused slot are never written to the kernel.
        assert!(check_debugregs(&[0, 0, 0, 0, 0, (2 << 16) | (3 << 18)], Abi::X86_64).is_empty());
    }

    #[test]
    fn reserved_dr7_bits_round_trip() {
        let dr = [0x1000, 0, 0, 0, 0, ctl(0, 1, 0) | 0xfc00 | (0xdead << 32)];
        assert!(check_debugregs(&dr, Abi::X86_64).is_empty());
    }

    #[test]
    fn ia32_task_watchpoints_must_be_below_4g() {
        let ok = [0x0804_a010, 0, 0, 0, 0, ctl(0, 1, 3)];
        assert!(check_debugregs(&ok, Abi::Ia32).is_empty());
        let high = [0x1_0000_0000, 0, 0, 0, 0, ctl(0, 1, 3)];
        assert_eq!(codes(high, Abi::Ia32), [ProblemCode::DebugregAddress]);
        assert!(check_debugregs(&high, Abi::X86_64).is_empty());
        // Disabled: the kernel takes the address, nothing triggers, no problem.
        let disabled = [0xffff_f000, 0, 0, 0, 0, 0];
        assert!(check_debugregs(&disabled, Abi::Ia32).is_empty());
    }
}
