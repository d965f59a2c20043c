//! x86-64 `rt_sigframe`s (and ia32 ones for ia32 threads: [`build_ia32`]) that ckpt
//! writes on a stopped thread's stack before it injects system calls (see
//! `kinds::task::query`): the frame holds the thread's own context
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

use super::x86::{USER_CS_32, USER_CS_64, USER_DS, X86Regs};

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

/// Where [`build`] puts the frame (its `at`) below stack pointer `rsp` for an xsave area
/// of `xstate_len` bytes.
pub fn frame_at(rsp: u64, xstate_len: usize) -> Option<u64> {
    frame_below(rsp.checked_sub(RED_ZONE)?, xstate_len)
}

/// Where [`build_below`] puts the frame (its `at`) under `top` for an xsave area of
/// `xstate_len` bytes.
pub fn frame_below(top: u64, xstate_len: usize) -> Option<u64> {
    let fp_len = xstate_len as u64 + 4;
    let fp_at = (top.checked_sub(fp_len)?) & !63;
    Some((fp_at.checked_sub(FRAME_LEN)?) & !15)
}

/// The frame that returns to `ctx` with signal mask `mask` and the xsave area `xstate`
/// (the thread's NT_X86_XSTATE regset), placed below the red zone under `ctx.rsp`,
/// `pretcode` its return address. None when the xsave area is not one this can hand
/// to the kernel (too short, or with dynamic components enabled but not in use: cut it
/// with [`sized_xstate`] first).
pub fn build(ctx: &X86Regs, mask: u64, xstate: &[u8], pretcode: u64) -> Option<SigFrame> {
    build_below(ctx, ctx.rsp.checked_sub(RED_ZONE)?, mask, xstate, pretcode)
}

/// [`build`] with the frame placed under `top` instead of under the red zone below
/// `ctx.rsp`: as the kernel places a frame on an alternate signal stack whose end is
/// `top` (the frame still returns to `ctx`, stack pointer included).
pub fn build_below(
    ctx: &X86Regs,
    top: u64,
    mask: u64,
    xstate: &[u8],
    pretcode: u64,
) -> Option<SigFrame> {
    let (xstate, xcr0) = checked_xstate(xstate)?;
    let fp_len = xstate.len() as u64 + 4;
    let fp_at = (top.checked_sub(fp_len)?) & !63;
    let at = frame_below(top, xstate.len())?;
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
    let fp = (fp_at - at) as usize;
    write_xstate(&mut b[fp..], xstate, xcr0, fp_len);
    Some(SigFrame { at, bytes: b })
}

/// The xsave area a frame can hand to the kernel, and its XCR0 (kept by the regset in
/// the software bytes): at least the legacy area and the header, x87 and SSE enabled,
/// and components whose size depends on a permission (AMX) only if the thread has them
/// in use (XSTATE_BV; see [`sized_xstate`] for the others).
fn checked_xstate(xstate: &[u8]) -> Option<(&[u8], u64)> {
    if xstate.len() < 576 {
        return None;
    }
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(xstate.get(at..at + 8)?.try_into().ok()?))
    };
    let (xcr0, xstate_bv) = (word(SW_BYTES)?, word(512)?);
    if (xcr0 & DYNAMIC_XFEATURES != 0 && xstate_bv & DYNAMIC_XFEATURES == 0) || xcr0 & 3 != 3 {
        return None;
    }
    Some((xstate, xcr0))
}

/// A thread's xsave regset (`NT_X86_XSTATE`, sized for every component this kernel
/// supports) cut to what its own signal frames hold: the kernel accepts a frame's
/// xsave area only up to the size of the thread's buffer, which holds the dynamic
/// (AMX) components only once the thread has used them (a permission alone does not
/// grow it). So: a thread with AMX state in use (XSTATE_BV) gets the whole area; any
/// other, the area up to the end of the last static component enabled in XCR0 (offsets
/// from `layout`, this CPU's standard format: the size the kernel gives such a thread's
/// frames), with the dynamic components taken out of the software bytes' XCR0, so
/// `rt_sigreturn` leaves them in their initial state, where they are. None if `layout`
/// does not place an enabled component or the regset is too short.
pub fn sized_xstate(xstate: &[u8], layout: impl FnOnce() -> super::XsaveLayout) -> Option<Vec<u8>> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(xstate.get(at..at + 8)?.try_into().ok()?))
    };
    let (xcr0, xstate_bv) = (word(SW_BYTES)?, word(512)?);
    if xcr0 & DYNAMIC_XFEATURES == 0 || xstate_bv & DYNAMIC_XFEATURES != 0 {
        return Some(xstate.to_vec());
    }
    let layout = layout();
    let xcr0_static = xcr0 & !DYNAMIC_XFEATURES;
    let mut len = 576;
    for c in 2..64 {
        if xcr0_static & (1 << c) != 0 {
            let (off, size) = layout.get(c)?;
            len = len.max(off as usize + size as usize);
        }
    }
    let mut v = xstate.get(..len)?.to_vec();
    v[SW_BYTES..SW_BYTES + 8].copy_from_slice(&xcr0_static.to_le_bytes());
    Some(v)
}

/// The xsave area at the start of `b`, with the software bytes of a signal frame
/// (`extended_size` the whole FPU part of the frame) and the trailing magic.
fn write_xstate(b: &mut [u8], xstate: &[u8], xcr0: u64, extended_size: u64) {
    b[..xstate.len()].copy_from_slice(xstate);
    let sw = SW_BYTES;
    b[sw..sw + 48].fill(0);
    b[sw..sw + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    b[sw + 4..sw + 8].copy_from_slice(&(extended_size as u32).to_le_bytes());
    b[sw + 8..sw + 16].copy_from_slice(&xcr0.to_le_bytes());
    b[sw + 16..sw + 20].copy_from_slice(&(xstate.len() as u32).to_le_bytes());
    let m2 = xstate.len();
    b[m2..m2 + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
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

/// `sizeof(struct rt_sigframe_ia32)`: pretcode, sig, pinfo, puc (4 bytes each),
/// `compat_siginfo_t` (128), `struct ucontext_ia32` (116), retcode (8).
pub const FRAME_LEN_IA32: u64 = 16 + 128 + 116 + 8;
/// Offset of `struct ucontext_ia32` in the ia32 frame, and of its `sigcontext_32`.
const UC_IA32: usize = 144;
const SC_IA32: usize = UC_IA32 + 20;
/// `sizeof(struct fregs_state)`: the legacy x87 environment an ia32 frame's FPU state
/// starts with (`struct user_i387_ia32_struct`, 108 bytes, then a status word); the
/// xsave area follows right after it.
const FREGS_LEN: u64 = 112;

/// The x87 environment of an fxsave area as the kernel's `convert_from_fxsr` makes it
/// for an ia32 signal frame (`struct user_i387_ia32_struct`), `cs`/`ds` the thread's
/// selectors. ia32 `rt_sigreturn` folds it back over the xsave area it restores
/// (`convert_to_fxsr`), so it must say the same: control, status and tag words (the
/// full tag from the abridged one: only empty or not matters on the way back), the
/// last instruction and operand pointers (32 bits), the opcode in the top half of the
/// code selector word, and the eight registers (10 bytes each).
pub fn fsave_env(fx: &[u8], cs: u64, ds: u64) -> Option<[u8; 108]> {
    let fx = fx.get(..512)?;
    let u16_at = |i: usize| u16::from_le_bytes([fx[i], fx[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([fx[i], fx[i + 1], fx[i + 2], fx[i + 3]]);
    let mut env = [0u8; 108];
    let mut put = |i: usize, v: u32| env[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    put(0, u32::from(u16_at(0)) | 0xffff_0000);
    put(1, u32::from(u16_at(2)) | 0xffff_0000);
    let abridged = fx[4];
    let mut tag = 0xffff_0000u32;
    for i in 0..8 {
        if abridged & (1 << i) == 0 {
            tag |= 3 << (2 * i);
        }
    }
    put(2, tag);
    put(3, u32_at(8));
    put(4, (cs & 0xffff) as u32 | u32::from(u16_at(6)) << 16);
    put(5, u32_at(16));
    put(6, (ds & 0xffff) as u32 | 0xffff_0000);
    for i in 0..8 {
        env[28 + 10 * i..38 + 10 * i].copy_from_slice(&fx[32 + 16 * i..42 + 16 * i]);
    }
    Some(env)
}

/// The ia32 frame (`struct rt_sigframe_ia32`) that returns an ia32 thread to `ctx`
/// with signal mask `mask` and xsave area `xstate`, `pretcode` (below 4 GiB) an ia32
/// `rt_sigreturn` ([`IA32_SIGRETURN_INSNS`]). ia32 `rt_sigreturn` finds the frame 4
/// bytes below the stack pointer (its `pretcode` popped by a 32-bit `ret`) and
/// restores the eight 32-bit registers, eip, eflags, cs, ss and the data selectors
/// from `sigcontext_32` (r8-r15 stay as they are: not visible in 32-bit mode), then
/// the FPU state from `fpstate`: the x87 environment ([`fsave_env`]) followed by the
/// xsave area with the software bytes, as for a native frame. The frame lies below the
/// 128 bytes under `ctx.rsp` (ia32 has no red zone; the margin costs nothing), all of
/// it below 4 GiB, or None.
pub fn build_ia32(ctx: &X86Regs, mask: u64, xstate: &[u8], pretcode: u64) -> Option<SigFrame> {
    build_ia32_below(ctx, ctx.rsp.checked_sub(RED_ZONE)?, mask, xstate, pretcode)
}

/// [`build_ia32`] with the frame placed under `top` (below 4 GiB) instead of under the
/// 128 bytes below `ctx.rsp` (see [`build_below`]).
pub fn build_ia32_below(
    ctx: &X86Regs,
    top: u64,
    mask: u64,
    xstate: &[u8],
    pretcode: u64,
) -> Option<SigFrame> {
    let (xstate, xcr0) = checked_xstate(xstate)?;
    let env = fsave_env(xstate, ctx.cs, ctx.ds)?;
    let fp_len = xstate.len() as u64 + 4;
    let fx_at = (top.checked_sub(fp_len)?) & !63;
    let fp_at = fx_at.checked_sub(FREGS_LEN)?;
    let at = (fp_at.checked_sub(FRAME_LEN_IA32)?) & !15;
    if fx_at + fp_len > 1 << 32 || pretcode >= 1 << 32 {
        return None;
    }
    let mut b = vec![0u8; (fx_at + fp_len - at) as usize];
    let put = |b: &mut Vec<u8>, off: usize, v: u64| {
        b[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes());
    };
    put(&mut b, 0, pretcode);
    // sig, pinfo, puc: not read by rt_sigreturn; as the kernel fills them.
    put(&mut b, 8, at + 16);
    put(&mut b, 12, at + UC_IA32 as u64);
    put(&mut b, UC_IA32, UC_FP_XSTATE);
    // uc_stack: ss_sp 0, ss_flags rejected on purpose (see SS_FLAGS_KEEP), ss_size 0.
    put(&mut b, UC_IA32 + 12, u64::from(SS_FLAGS_KEEP));
    let r = ctx;
    for (off, v) in [
        (0, r.gs),
        (4, r.fs),
        (8, r.es),
        (12, r.ds),
        (16, r.rdi),
        (20, r.rsi),
        (24, r.rbp),
        (28, r.rsp),
        (32, r.rbx),
        (36, r.rdx),
        (40, r.rcx),
        (44, r.rax),
        (56, r.rip),
        (60, r.cs),
        (64, r.eflags),
        (68, r.rsp),
        (72, r.ss),
        (76, fp_at),
        (80, mask & 0xffff_ffff),
    ] {
        put(&mut b, SC_IA32 + off, v);
    }
    let m = SC_IA32 + 88;
    b[m..m + 8].copy_from_slice(&mask.to_le_bytes());
    let fp = (fp_at - at) as usize;
    b[fp..fp + 108].copy_from_slice(&env);
    // struct _fpstate_32: status (the status word), magic 0 (FXSR data follows).
    b[fp + 108..fp + 110].copy_from_slice(&env[4..6]);
    let fx = fp + FREGS_LEN as usize;
    write_xstate(&mut b[fx..], xstate, xcr0, fp_len + FREGS_LEN);
    Some(SigFrame { at, bytes: b })
}

/// `mov $173, %eax; int $0x80`: ia32 `rt_sigreturn` (the ia32 vDSO's
/// `__kernel_rt_sigreturn`, i386 glibc's `__restore_rt`).
pub const IA32_SIGRETURN_INSNS: [&[u8]; 1] = [&[0xb8, 0xad, 0x00, 0x00, 0x00, 0xcd, 0x80]];
/// `int $0x80` then a 32-bit `ret`, with the words popped between them: i386 ld.so's
/// `_dl_sysinfo_int80` (`int $0x80; ret`), the ia32 vDSO's `__kernel_vsyscall` tail
/// (`int $0x80; pop %ebp; pop %edx; pop %ecx; ret`). An ia32 query runs there with the
/// stack pointer that many words below its frame, so the `ret` pops the frame's
/// `pretcode`.
pub const IA32_SYSCALL_RET_INSNS: [(&[u8], u64); 2] = [
    (&[0xcd, 0x80, 0xc3], 0),
    (&[0xcd, 0x80, 0x5d, 0x5a, 0x59, 0xc3], 3),
];

/// Registers that run ia32 `rt_sigreturn` through the ia32 frame at `at` with the
/// instructions at `sigreturn` (one of [`IA32_SIGRETURN_INSNS`]), from `base`.
pub fn parked_ia32(base: &X86Regs, at: u64, sigreturn: u64) -> X86Regs {
    let mut r = *base;
    r.rip = sigreturn;
    r.rsp = at + 4;
    r.orig_rax = u64::MAX;
    r.cs = USER_CS_32;
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
        // Below a given top (an alternate signal stack's end): the same frame, whose
        // saved stack pointer is still the thread's own.
        let alt = build_below(&ctx, 0x5000_8000, 0x8000, &xs, 0x1234).expect("frame");
        assert_eq!(alt.at, frame_below(0x5000_8000, 1024).expect("at"));
        assert!(alt.at + alt.bytes.len() as u64 <= 0x5000_8000);
        assert_eq!(alt.bytes.len(), f.bytes.len());
        let wa = |o: usize| u64::from_le_bytes(alt.bytes[o..o + 8].try_into().expect("8"));
        assert_eq!(wa(8 + 40 + 15 * 8), ctx.rsp, "rsp");
        assert_eq!(wa(8 + 40 + 184) % 64, 0);
        // AMX enabled but not in use: the regset must be cut first.
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&(7u64 | 1 << 18).to_le_bytes());
        assert!(build(&ctx, 0, &xs, 0x1234).is_none());
    }

    /// An AMX host's regset: x87, SSE, AVX, AVX-512 (5-7), PKRU (9), then the tile
    /// configuration (17) and the tile data (18), as an Intel Sapphire Rapids lays it out.
    fn amx_layout() -> crate::arch::XsaveLayout {
        crate::arch::XsaveLayout {
            size: 11008,
            components: vec![
                (2, 576, 256),
                (5, 1088, 64),
                (6, 1152, 512),
                (7, 1664, 1024),
                (9, 2688, 8),
                (17, 2752, 64),
                (18, 2816, 8192),
            ],
            align64: 0,
        }
    }

    #[test]
    fn amx_frames_sized_like_the_kernels() {
        let xcr0: u64 = 0x6_02e7;
        let mut xs = vec![0u8; 11008];
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&xcr0.to_le_bytes());
        // AVX in use, no AMX state: a frame the size of a thread that never used AMX,
        // ending with PKRU, AMX out of its XCR0.
        xs[512..520].copy_from_slice(&0x207u64.to_le_bytes());
        let cut = sized_xstate(&xs, amx_layout).expect("sized");
        assert_eq!(cut.len(), 2696);
        let w = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
        assert_eq!(w(&cut, SW_BYTES), 0x2e7);
        let ctx = X86Regs {
            rsp: 0x7fff_0001_0000,
            cs: USER_CS_64,
            ss: USER_DS,
            ..Default::default()
        };
        let f = build(&ctx, 0, &cut, 0x1234).expect("frame");
        let fp = (w(&f.bytes, 8 + 40 + 184) - f.at) as usize;
        assert_eq!(
            u32::from_le_bytes(
                f.bytes[fp + SW_BYTES + 16..fp + SW_BYTES + 20]
                    .try_into()
                    .expect("4")
            ),
            2696,
            "xstate_size"
        );
        assert_eq!(w(&f.bytes, fp + SW_BYTES + 8), 0x2e7, "xfeatures");
        assert_eq!(
            &f.bytes[fp + 2696..fp + 2700],
            &FP_XSTATE_MAGIC2.to_le_bytes()
        );
        // Tile data in use: the thread's buffer is the big one, the frame holds it all.
        xs[512..520].copy_from_slice(&0x4_0207u64.to_le_bytes());
        let whole = sized_xstate(&xs, amx_layout).expect("sized");
        assert_eq!(whole.len(), 11008);
        assert_eq!(w(&whole, SW_BYTES), xcr0);
        assert!(build(&ctx, 0, &whole, 0x1234).is_some());
        // No AMX on the host: untouched, the layout not even asked.
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&0x2e7u64.to_le_bytes());
        xs[512..520].copy_from_slice(&0x207u64.to_le_bytes());
        let same = sized_xstate(&xs[..2696], || unreachable!()).expect("sized");
        assert_eq!(same.len(), 2696);
        // A layout that does not place an enabled component: no frame.
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&xcr0.to_le_bytes());
        assert!(sized_xstate(&xs, crate::arch::XsaveLayout::default).is_none());
    }

    #[test]
    fn ia32_frame_layout() {
        let ctx = X86Regs {
            rsp: 0xffef_a830,
            rip: 0xf7f6_d5e9,
            rax: 0xffff_fdfc,
            rbx: 1,
            rcx: 0x80,
            rdx: 2,
            rsi: 3,
            rdi: 4,
            rbp: 5,
            eflags: 0x246,
            cs: USER_CS_32,
            ss: USER_DS,
            ds: USER_DS,
            es: USER_DS,
            gs: 0x63,
            ..Default::default()
        };
        let mut xs = vec![0u8; 832];
        xs[SW_BYTES..SW_BYTES + 8].copy_from_slice(&7u64.to_le_bytes());
        // fcw 0x37f, fsw 0x3800, abridged tag: st0 and st7 in use, fop 0x1d9, fip
        xs[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        xs[2..4].copy_from_slice(&0x3800u16.to_le_bytes());
        xs[4] = 0x81;
        xs[6..8].copy_from_slice(&0x1d9u16.to_le_bytes());
        xs[8..12].copy_from_slice(&0x0804_9123u32.to_le_bytes());
        xs[32..42].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        xs[32 + 7 * 16..42 + 7 * 16].fill(0xee);
        let f = build_ia32(&ctx, 0x2_0000_0a00, &xs, 0xf7f6_d610).expect("frame");
        assert_eq!(f.at % 16, 0);
        let end = f.at + f.bytes.len() as u64;
        assert!(end <= ctx.rsp - RED_ZONE);
        let d = |o: usize| u32::from_le_bytes(f.bytes[o..o + 4].try_into().expect("4 bytes"));
        assert_eq!(d(0), 0xf7f6_d610, "pretcode");
        let sc = SC_IA32;
        assert_eq!(d(sc) & 0xffff, 0x63, "gs");
        assert_eq!(d(sc + 12) & 0xffff, USER_DS as u32, "ds");
        assert_eq!(d(sc + 16), 4, "edi");
        assert_eq!(d(sc + 32), 1, "ebx");
        assert_eq!(d(sc + 44), 0xffff_fdfc, "eax");
        assert_eq!(d(sc + 28), 0xffef_a830, "esp");
        assert_eq!(d(sc + 56), 0xf7f6_d5e9, "eip");
        assert_eq!(d(sc + 60), USER_CS_32 as u32, "cs");
        assert_eq!(d(sc + 72), USER_DS as u32, "ss");
        assert_eq!(d(sc + 80), 0xa00, "oldmask");
        assert_eq!(d(sc + 88), 0xa00, "uc_sigmask, low word");
        assert_eq!(d(sc + 92), 2, "uc_sigmask, high word");
        assert_eq!(d(UC_IA32 + 12), SS_FLAGS_KEEP, "uc_stack.ss_flags");
        // The FPU state: the x87 environment, then the xsave area, 64-byte aligned.
        let fp = d(sc + 76) as u64;
        let o = (fp - f.at) as usize;
        assert_eq!((fp + FREGS_LEN) % 64, 0);
        assert_eq!(d(o), 0xffff_037f, "cwd");
        assert_eq!(d(o + 8), 0xffff_3ffc, "twd: st1-st6 empty");
        assert_eq!(d(o + 12), 0x0804_9123, "fip");
        assert_eq!(d(o + 16) >> 16, 0x1d9, "fop in the top of fcs");
        assert_eq!(&f.bytes[o + 28..o + 38], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(&f.bytes[o + 98..o + 108], &[0xee; 10], "st7");
        let x = o + FREGS_LEN as usize;
        assert_eq!(d(x + SW_BYTES), FP_XSTATE_MAGIC1);
        assert_eq!(d(x + SW_BYTES + 16), 832, "xstate_size");
        assert_eq!(d(x + 832), FP_XSTATE_MAGIC2);
        // Not for a stack above 4 GiB, nor a pretcode there.
        let high = X86Regs {
            rsp: 0x1_0000_2000,
            ..ctx
        };
        assert!(build_ia32(&high, 0, &xs, 0xf7f6_d610).is_none());
        // Below a given top (a slot on another thread's stack): the same frame, whose
        // saved stack pointer is the thread's own; not above 4 GiB.
        let below = build_ia32_below(&ctx, 0x5000_8000, 0, &xs, 0xf7f6_d610).expect("frame");
        assert!(below.at + below.bytes.len() as u64 <= 0x5000_8000);
        let db = |o: usize| u32::from_le_bytes(below.bytes[o..o + 4].try_into().expect("4"));
        assert_eq!(db(sc + 28), 0xffef_a830, "esp");
        assert!(build_ia32_below(&ctx, 0x1_0000_8000, 0, &xs, 0xf7f6_d610).is_none());
        assert!(build_ia32(&ctx, 0, &xs, 0x1_0000_0000).is_none());
    }
}
