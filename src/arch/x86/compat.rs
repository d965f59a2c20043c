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

/// Where [`ia32_stub_elf`] is loaded.
pub const STUB_ELF_BASE: u64 = 0x0804_8000;
/// Offset of the stub's code in its file (and page).
const STUB_ELF_CODE: usize = 128;
/// Offset of its `syscall; int3` (a 64-bit call made in 64-bit mode at this address is
/// how ckpt bootstraps the restore of an ia32 tree in the stub).
const STUB_ELF_GADGET: usize = 192;

/// A minimal static ia32 executable (`ET_EXEC`, `EM_386`, one read+execute `PT_LOAD`
/// of itself at [`STUB_ELF_BASE`], a non-executable `PT_GNU_STACK` so the kernel does
/// not add `READ_IMPLIES_EXEC`), and the address of its `syscall` instruction.
///
/// Restore starts an ia32 tree from it: only `execve` of a 32-bit ELF makes a compat
/// memory map (no `[vsyscall]` area, 32-bit address-space limit), as the dumped
/// processes had. It stops itself (`kill(getpid(), SIGSTOP)` through `int $0x80`) and
/// exits 127 if ever continued.
pub fn ia32_stub_elf() -> (Vec<u8>, u64) {
    let mut f = vec![0u8; STUB_ELF_GADGET + 4];
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    // ELF header: 32-bit, little-endian, version 1.
    f[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1]);
    let len = f.len() as u32;
    let base = STUB_ELF_BASE as u32;
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, base + STUB_ELF_CODE as u32); // e_entry
    put32(&mut f, 28, 52); // e_phoff
    put16(&mut f, 40, 52); // e_ehsize
    put16(&mut f, 42, 32); // e_phentsize
    put16(&mut f, 44, 2); // e_phnum
    // PT_LOAD: the whole file at the base, read + execute.
    for (i, v) in [1, 0, base, base, len, len, 5, 0x1000]
        .into_iter()
        .enumerate()
    {
        put32(&mut f, 52 + 4 * i, v);
    }
    // PT_GNU_STACK: read + write.
    for (i, v) in [0x6474_e551, 0, 0, 0, 0, 0, 6, 16].into_iter().enumerate() {
        put32(&mut f, 84 + 4 * i, v);
    }
    let code: &[u8] = &[
        0xb8, 20, 0, 0, 0, // mov $20 (getpid), %eax
        0xcd, 0x80, // int $0x80
        0x89, 0xc3, // mov %eax, %ebx
        0xb8, 37, 0, 0, 0, // mov $37 (kill), %eax
        0xb9, 19, 0, 0, 0, // mov $19 (SIGSTOP), %ecx
        0xcd, 0x80, // int $0x80
        0xb8, 1, 0, 0, 0, // mov $1 (exit), %eax
        0xbb, 127, 0, 0, 0, // mov $127, %ebx
        0xcd, 0x80, // int $0x80
    ];
    f[STUB_ELF_CODE..STUB_ELF_CODE + code.len()].copy_from_slice(code);
    f[STUB_ELF_GADGET..STUB_ELF_GADGET + 4].copy_from_slice(&[0x0f, 0x05, 0xcc, 0xcc]);
    (f, STUB_ELF_BASE + STUB_ELF_GADGET as u64)
}

#[cfg(test)]
mod stub_tests {
    #[test]
    fn stub_elf() {
        let (f, gadget) = super::ia32_stub_elf();
        assert_eq!(&f[..4], b"\x7fELF");
        assert_eq!(f[4], 1, "32-bit");
        let u32_at = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().expect("4"));
        let entry = u32_at(24) as u64;
        assert_eq!(entry, super::STUB_ELF_BASE + 128);
        assert_eq!(u32_at(52), 1, "PT_LOAD");
        assert_eq!(u32_at(52 + 16) as usize, f.len(), "p_filesz");
        assert_eq!(u32_at(84), 0x6474_e551, "PT_GNU_STACK");
        let at = (gadget - super::STUB_ELF_BASE) as usize;
        assert_eq!(&f[at..at + 2], &[0x0f, 0x05]);
        assert!(gadget > entry);
    }
}
