//! x86-64 `rt_sigframe`s that ckpt writes on a stopped thread's stack before it injects
//! system calls (see `kinds::task::query`): the frame holds the thread's own context
//! (registers, signal mask, xsave area), so that a thread let go at any instruction
//! of the injection returns to exactly that context through `rt_sigreturn`, whether
//! ckpt puts its registers back itself or dies and the kernel detaches it.
//!
//! Layout (the kernel's, `arch/x86/include/asm/sigframe.h`): `pretcode` (the address a
//! handler's `ret` goes to: here a `mov $15, %rax; syscall` of the task), `struct
//! ucontext` (flags, link, `uc_stack`, `struct sigcontext`, the 64-bit signal mask),
//! room for a `siginfo`, and above it the xsave area the sigcontext points to, 64-byte
//! aligned, with the software bytes (`struct _fpx_sw_bytes`) and the trailing magic
//! that make the kernel restore every xsave component (without them it would restore
//! only the legacy x87/SSE part, and reset the rest).

use super::x86::{USER_CS_64, USER_DS, X86Regs};

/// The bytes below the stack pointer that a signal frame leaves alone (the red zone).
pub const RED_ZONE: u64 = 128;
/// `sizeof(struct rt_sigframe)`: pretcode, ucontext (304 bytes), siginfo (128).
pub const FRAME_LEN: u64 = 8 + 304 + 128;
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// `uc_stack.ss_flags` that `rt_sigreturn`'s `restore_altstack` rejects (neither 0,
/// SS_ONSTACK nor SS_DISABLE), so the thread's alternate stack, which ckpt has not read
/// yet, is left as it is.
const SS_FLAGS_KEEP: u32 = 3;
/// Offset of the software bytes in an xsave area (`fxregs_state.sw_reserved`); the
/// NT_X86_XSTATE regset keeps XCR0 in their first word.
const SW_BYTES: usize = 464;
/// xsave components whose size depends on a permission (AMX tile config and data).
pub const DYNAMIC_XFEATURES: u64 = (1 << 17) | (1 << 18);

/// A frame to write at `at` (its `pretcode` word; the frame's stack pointer).
#[derive(Debug, Clone)]
pub struct SigFrame {
    pub at: u64,
    pub bytes: Vec<u8>,
}

/// The frame that returns to `ctx` with signal mask `mask` and the xsave area `xstate`
/// (the thread's NT_X86_XSTATE regset), placed below the red zone under `ctx.rsp`,
/// `pretcode` its return address. None when the xsave area is not one this can hand
/// to the kernel (too short, or with components whose size depends on a permission).
pub fn build(ctx: &X86Regs, mask: u64, xstate: &[u8], pretcode: u64) -> Option<SigFrame> {
    if xstate.len() < 576 || xstate.len() % 64 != 0 {
        return None;
    }
    let xcr0 = u64::from_le_bytes(xstate.get(SW_BYTES..SW_BYTES + 8)?.try_into().ok()?);
    if xcr0 & DYNAMIC_XFEATURES != 0 || xcr0 & 3 != 3 {
        return None;
    }
    let fp_len = xstate.len() as u64 + 4;
    let fp_at = (ctx.rsp.checked_sub(RED_ZONE + fp_len)?) & !63;
    let at = (fp_at.checked_sub(FRAME_LEN)?) & !15;
    let mut b = vec![0u8; (fp_at + fp_len - at) as usize];
    let put = |b: &mut Vec<u8>, off: u64, v: u64| {
        let o = off as usize;
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut b, 0, pretcode);
    let uc = 8;
    put(
        &mut b,
        uc,
        UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
    );
    // uc_stack: ss_sp 0, ss_flags (an int) rejected on purpose, ss_size 0.
    let o = (uc + 24) as usize;
    b[o..o + 4].copy_from_slice(&SS_FLAGS_KEEP.to_le_bytes());
    let sc = uc + 40;
    let r = ctx;
    for (i, v) in [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut b, sc + 8 * i as u64, v);
    }
    // cs, gs, fs, ss (16 bits each); a 64-bit thread's segments.
    let segs = (USER_CS_64 & 0xffff) | ((USER_DS & 0xffff) << 48);
    let cs_ss = if r.cs == USER_CS_64 {
        segs
    } else {
        (r.cs & 0xffff) | ((r.ss & 0xffff) << 48)
    };
    put(&mut b, sc + 144, cs_ss);
    put(&mut b, sc + 184, fp_at);
    put(&mut b, uc + 296, mask);
    // The xsave area, with the software bytes a signal frame has.
    let fp = (fp_at - at) as usize;
    b[fp..fp + xstate.len()].copy_from_slice(xstate);
    let sw = fp + SW_BYTES;
    b[sw..sw + 48].fill(0);
    b[sw..sw + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    b[sw + 4..sw + 8].copy_from_slice(&(fp_len as u32).to_le_bytes());
    b[sw + 8..sw + 16].copy_from_slice(&xcr0.to_le_bytes());
    b[sw + 16..sw + 20].copy_from_slice(&(xstate.len() as u32).to_le_bytes());
    let m2 = fp + xstate.len();
    b[m2..m2 + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    Some(SigFrame { at, bytes: b })
}

/// `mov $15, %rax; syscall` (glibc's and musl's `__restore_rt`, Go's sigreturn), and
/// the shorter `mov $15, %eax; syscall`: a return through a signal frame.
pub const SIGRETURN_INSNS: [&[u8]; 2] = [
    &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
    &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
];
/// `syscall; ret`: an injected call that returns, when the thread runs on by itself,
/// to the `pretcode` of the frame at its stack pointer.
pub const SYSCALL_RET_INSN: [u8; 3] = [0x0f, 0x05, 0xc3];

/// Registers that run `rt_sigreturn` through the frame at `at` with the instructions
/// at `sigreturn` (one of [`SIGRETURN_INSNS`]), from `base` (the thread's own).
pub fn parked(base: &X86Regs, at: u64, sigreturn: u64) -> X86Regs {
    let mut r = *base;
    r.rip = sigreturn;
    r.rsp = at + 8;
    r.orig_rax = u64::MAX;
    r.cs = USER_CS_64;
    r.ss = USER_DS;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let ctx = X86Regs {
            rsp: 0x7fff_0000_1008,
            rip: 0x40_1000,
            rax: 7,
            r8: 8,
            eflags: 0x246,
            cs: USER_CS_64,
            ss: USER_DS,
            ..Default::default()
        };
        let mut xs = vec![0u8; 1024];
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&7u64.to_le_bytes());
        let f = build(&ctx, 0x8000, &xs, 0x1234).expect("frame");
        assert_eq!(f.at % 16, 0);
        let end = f.at + f.bytes.len() as u64;
        assert!(end <= ctx.rsp - RED_ZONE, "frame reaches into the red zone");
        let w = |o: usize| u64::from_le_bytes(f.bytes[o..o + 8].try_into().expect("8 bytes"));
        assert_eq!(w(0), 0x1234);
        assert_eq!(w(8 + 40), 8, "r8 first in the sigcontext");
        assert_eq!(w(8 + 40 + 13 * 8), 7, "rax");
        assert_eq!(w(8 + 40 + 16 * 8), 0x40_1000, "rip");
        assert_eq!(w(8 + 296), 0x8000, "mask");
        let fp = w(8 + 40 + 184);
        assert_eq!(fp % 64, 0);
        let o = (fp - f.at) as usize;
        assert_eq!(
            &f.bytes[o + SW_BYTES..o + SW_BYTES + 4],
            &FP_XSTATE_MAGIC1.to_le_bytes()
        );
        assert_eq!(
            &f.bytes[o + 1024..o + 1028],
            &FP_XSTATE_MAGIC2.to_le_bytes()
        );
        // AMX state is not handed over this way.
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&(7u64 | 1 << 18).to_le_bytes());
        assert!(build(&ctx, 0, &xs, 0x1234).is_none());
    }
}
