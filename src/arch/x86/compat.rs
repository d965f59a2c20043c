//! The read-only queries a dump injects (`kinds::task::query`), in the form an ia32
//! thread makes them: `int $0x80` with ia32 numbers, so that the thread never leaves
//! 32-bit mode and a return through its ia32 signal frame stays possible at every
//! instruction (see `arch::sigframe::build_ia32`).
//!
//! The queries are built with native numbers and read with native layouts; here each
//! becomes its compat twin (the same kernel state), and a result the kernel writes in a
//! compat layout (`struct compat_sigaction`, `compat_stack_t`, `old_itimerval32`,
//! `compat_siginfo_t`) is turned into the native one at the same address, so the
//! decoding is the same for both ABIs.

use super::{nr, nr32};

/// How the memory result of an ia32 query differs from the native one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ia32Out {
    /// Same layout (or no memory result).
    Same,
    /// `struct compat_sigaction` (20 bytes) at the address -> `struct sigaction` (32).
    SigAction(u64),
    /// `old_itimerval32` (16) -> `struct itimerval` (32).
    ITimerVal(u64),
    /// `compat_stack_t` (12) -> `stack_t` (24).
    Stack(u64),
    /// `compat_siginfo_t` -> `siginfo_t` (128 bytes each; a child's fields only).
    SigInfo(u64),
}

impl Ia32Out {
    /// Where the result is and how many bytes of it the kernel writes.
    pub fn compat_at(self) -> Option<(u64, usize)> {
        match self {
            Self::Same => None,
            Self::SigAction(a) => Some((a, 20)),
            Self::ITimerVal(a) => Some((a, 16)),
            Self::Stack(a) => Some((a, 12)),
            Self::SigInfo(a) => Some((a, 128)),
        }
    }

    /// The native form of `compat` (the bytes at [`Ia32Out::compat_at`]).
    pub fn to_native(self, compat: &[u8]) -> Vec<u8> {
        let u32_at = |i: usize| {
            compat
                .get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut put = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Self::Same => return compat.to_vec(),
            Self::SigAction(_) => {
                // handler, flags, restorer (32 bits each), then the 64-bit mask as two
                // 32-bit words.
                put(u64::from(u32_at(0)));
                put(u64::from(u32_at(4)));
                put(u64::from(u32_at(8)));
                put(u64::from(u32_at(12)) | u64::from(u32_at(16)) << 32);
            }
            Self::ITimerVal(_) => {
                for i in 0..4 {
                    put(i64::from(u32_at(4 * i) as i32) as u64);
                }
            }
            Self::Stack(_) => {
                put(u64::from(u32_at(0)));
                put(u64::from(u32_at(4)));
                put(u64::from(u32_at(8)));
            }
            Self::SigInfo(_) => {
                // si_signo, si_errno, si_code; then the union, 8-byte aligned in the
                // native layout: a child's si_pid, si_uid, si_status.
                let mut b = vec![0u8; 128];
                b[..12].copy_from_slice(compat.get(..12).unwrap_or(&[0; 12]));
                b[16..28].copy_from_slice(compat.get(12..24).unwrap_or(&[0; 12]));
                return b;
            }
        }
        out
    }
}

/// The ia32 form of a query: number, arguments, and how its memory result differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ia32Query {
    pub nr: u64,
    pub args: [u64; 6],
    pub out: Ia32Out,
}

/// The ia32 twin of the native read-only query `nr(args)`, None for a call that has
/// none here (the caller then refuses to run it in an ia32 thread). Every address must
/// lie below 4 GiB.
pub fn ia32_query(nr: u64, args: [u64; 6]) -> Option<Ia32Query> {
    if args.iter().any(|a| *a > u64::from(u32::MAX)) {
        return None;
    }
    let (nr32, out) = match nr {
        nr::RT_SIGACTION if args[1] == 0 => (nr32::RT_SIGACTION, Ia32Out::SigAction(args[2])),
        nr::SIGALTSTACK if args[0] == 0 => (nr32::SIGALTSTACK, Ia32Out::Stack(args[1])),
        nr::GETITIMER => (nr32::GETITIMER, Ia32Out::ITimerVal(args[1])),
        nr::WAITID => (nr32::WAITID, Ia32Out::SigInfo(args[2])),
        // The same layouts in both ABIs: prctl's results are ints (PR_GET_TID_ADDRESS
        // writes a kernel pointer, 8 bytes, for both), arch_prctl's u64 words,
        // prlimit64's struct rlimit64, timer_gettime64's struct __kernel_itimerspec, a
        // sembuf array.
        nr::PRCTL => (nr32::PRCTL, Ia32Out::Same),
        nr::BRK => (nr32::BRK, Ia32Out::Same),
        nr::ARCH_PRCTL => (nr32::ARCH_PRCTL, Ia32Out::Same),
        nr::PRLIMIT64 if args[2] == 0 => (nr32::PRLIMIT64, Ia32Out::Same),
        nr::TIMER_GETTIME => (nr32::TIMER_GETTIME64, Ia32Out::Same),
        nr::TIMER_GETOVERRUN => (nr32::TIMER_GETOVERRUN, Ia32Out::Same),
        // semop(id, sops, n) is semtimedop without a timeout.
        nr::SEMOP => {
            return Some(Ia32Query {
                nr: nr32::SEMTIMEDOP_TIME64,
                args: [args[0], args[1], args[2], 0, 0, 0],
                out: Ia32Out::Same,
            });
        }
        _ => return None,
    };
    Some(Ia32Query {
        nr: nr32,
        args,
        out,
    })
}

/// An ia32 call's result as the native decoding expects it: a 32-bit value, negative
/// only for an error (-4095..-1); addresses (brk) are not sign-extended.
pub fn ia32_result(rax: u64) -> i64 {
    let v = rax as u32;
    let s = v as i32;
    if (-4095..0).contains(&s) {
        i64::from(s)
    } else {
        i64::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u64> {
        b.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }

    #[test]
    fn queries_translate() {
        let q = ia32_query(nr::RT_SIGACTION, [10, 0, 0x1000, 8, 0, 0]).expect("sigaction");
        assert_eq!(q.nr, 174);
        assert_eq!(q.out, Ia32Out::SigAction(0x1000));
        // Setting a disposition is not a query.
        assert!(ia32_query(nr::RT_SIGACTION, [10, 0x2000, 0x1000, 8, 0, 0]).is_none());
        assert!(ia32_query(nr::MMAP, [0; 6]).is_none());
        // An address above 4 GiB cannot be passed.
        assert!(ia32_query(nr::GETITIMER, [0, 1 << 32, 0, 0, 0, 0]).is_none());
        let q = ia32_query(nr::SEMOP, [3, 0x1000, 2, 0, 0, 0]).expect("semop");
        assert_eq!((q.nr, q.args[3]), (420, 0));
        assert_eq!(
            ia32_query(nr::TIMER_GETTIME, [1, 2, 0, 0, 0, 0]).map(|q| q.nr),
            Some(408)
        );
    }

    #[test]
    fn layouts_convert() {
        let mut c = Vec::new();
        for v in [0x0804_9000u32, 0x1400_0000, 0xf7d6_c180, 0x8000_0001, 0x2] {
            c.extend_from_slice(&v.to_le_bytes());
        }
        let n = Ia32Out::SigAction(0).to_native(&c);
        assert_eq!(
            words(&n),
            [0x0804_9000, 0x1400_0000, 0xf7d6_c180, 0x2_8000_0001]
        );
        let mut c = Vec::new();
        for v in [1i32, 500_000, 0, -1] {
            c.extend_from_slice(&v.to_le_bytes());
        }
        let n = Ia32Out::ITimerVal(0).to_native(&c);
        assert_eq!(words(&n), [1, 500_000, 0, u64::MAX]);
        let mut c = Vec::new();
        for v in [0x5000_0000u32, 2, 0x2000] {
            c.extend_from_slice(&v.to_le_bytes());
        }
        let n = Ia32Out::Stack(0).to_native(&c);
        assert_eq!(words(&n), [0x5000_0000, 2, 0x2000]);
        let mut c = vec![0u8; 128];
        c[..4].copy_from_slice(&17u32.to_le_bytes());
        c[12..16].copy_from_slice(&4242u32.to_le_bytes());
        let n = Ia32Out::SigInfo(0).to_native(&c);
        assert_eq!(&n[16..20], &4242u32.to_le_bytes());
        assert_eq!(&n[..4], &17u32.to_le_bytes());
    }

    #[test]
    fn results() {
        assert_eq!(ia32_result(0xffff_fff2), -14);
        assert_eq!(ia32_result(0xf7f0_0000), 0xf7f0_0000);
        assert_eq!(ia32_result(0xffff_ffff_ffff_fffe), -2);
        assert_eq!(ia32_result(3), 3);
    }
}
