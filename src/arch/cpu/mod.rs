//! What this host's CPU and kernel offer a user program on x86-64: the enabled xsave
//! components (XCR0) and their standard-format layout, the CPU features a program can
//! rely on, and a few kernel facts (ia32 emulation, the user address-space limit).
//!
//! Detection is pure userspace: CPUID, XGETBV and FXSAVE (in `read_cpu`, the one place
//! with `unsafe`), plus a few files under /proc (and /boot) for the kernel facts.
//!
//! A [`HostCaps`] can be *masked* ([`HostCaps::with_mask`], [`HostCaps::masked`]): masked
//! features and xsave components are treated as absent by the checks, so the refusal
//! paths can be exercised on a machine that has everything, and a cautious user can
//! restrict what a restore may assume (for example to keep an image movable to an older
//! fleet).
//!
//! The tests are in `cpu/tests.rs`, with `FakeCpu` (a synthetic CPUID table and XCR0)
//! that the other arch tests use too.

use std::collections::BTreeSet;
use std::fmt;

use super::xsave::{self, XFEATURE_AMX_MASK, XFEATURE_AVX512_MASK};

/// Environment variable holding a mask spec (see [`HostCaps::masked`]) applied by
/// [`HostCaps::detect_with_env_mask`]; meant for tests and cautious users.
pub const HOST_MASK_ENV: &str = "CKPT_HOST_MASK";

/// User-space address limit (`TASK_SIZE_MAX`) with 4-level paging.
pub const TASK_SIZE_MAX_4LEVEL: u64 = (1 << 47) - 4096;
/// User-space address limit (`TASK_SIZE_MAX`) with 5-level paging (LA57).
pub const TASK_SIZE_MAX_5LEVEL: u64 = (1 << 56) - 4096;

/// Which CPUID register a feature bit lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// How a missing feature is treated by [`super::CpuPolicy::Compatible`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureClass {
    /// An instruction-set extension a program can execute. Programs and libraries (glibc's
    /// ifunc resolvers, ld.so's lazy-binding trampoline, math and crypto libraries) pick
    /// code paths from these once, at startup; if the restore host lacks one, the
    /// restored program later dies with SIGILL. `Compatible` refuses when one is missing.
    Critical,
    /// A performance hint, a kernel-only instruction or a fact about the machine that
    /// does not change what a user program can execute (ERMS, FSRM, XSAVES, LA57...).
    /// Only `Strict` requires these.
    Informational,
}

/// One named CPU feature a user program can rely on.
#[derive(Debug)]
pub struct CpuFeature {
    /// Short name, as in /proc/cpuinfo where it has one ("avx2", "avx512f", "amx_tile").
    pub name: &'static str,
    /// Name for messages ("AVX2", "AVX-512F").
    pub pretty: &'static str,
    pub class: FeatureClass,
    leaf: u32,
    sub: u32,
    reg: Reg,
    bit: u32,
    /// XCR0 bits the OS must have enabled for the feature to be usable (as glibc's
    /// CPU_FEATURE_USABLE): AVX needs the YMM state, AVX-512 the opmask/ZMM states...
    needs_xcr0: u64,
    /// XCR0 bits removed from the host view when this feature is masked.
    owns_xcr0: u64,
    /// Features that must be present for this one to be usable; masking any of them
    /// masks this one too.
    requires: &'static [&'static str],
    /// Other names accepted in masks.
    aliases: &'static [&'static str],
}

const YMM: u64 = 0x7; // x87 | SSE | AVX
const ZMM: u64 = YMM | XFEATURE_AVX512_MASK;
const LEGACY: u64 = 0x3; // x87 | SSE: non-zero only when the OS enabled XSAVE

macro_rules! feat {
    ($name:literal, $pretty:literal, $class:ident, $leaf:literal, $sub:literal, $reg:ident, $bit:literal) => {
        feat!($name, $pretty, $class, $leaf, $sub, $reg, $bit, 0, 0, [], [])
    };
    ($name:literal, $pretty:literal, $class:ident, $leaf:literal, $sub:literal, $reg:ident, $bit:literal,
     $needs:expr, $owns:expr, [$($req:literal),*], [$($alias:literal),*]) => {
        CpuFeature {
            name: $name,
            pretty: $pretty,
            class: FeatureClass::$class,
            leaf: $leaf,
            sub: $sub,
            reg: Reg::$reg,
            bit: $bit,
            needs_xcr0: $needs,
            owns_xcr0: $owns,
            requires: &[$($req),*],
            aliases: &[$($alias),*],
        }
    };
}

/// Every CPU feature ckpt knows, with where CPUID reports it and how it is treated.
#[rustfmt::skip]
pub static FEATURES: &[CpuFeature] = &[
    // Leaf 1 EDX: the x86-64 baseline.
    feat!("fpu", "x87 FPU", Critical, 1, 0, Edx, 0),
    feat!("cx8", "CMPXCHG8B", Critical, 1, 0, Edx, 8),
    feat!("cmov", "CMOV", Critical, 1, 0, Edx, 15),
    feat!("mmx", "MMX", Critical, 1, 0, Edx, 23),
    feat!("fxsr", "FXSAVE", Critical, 1, 0, Edx, 24),
    feat!("sse", "SSE", Critical, 1, 0, Edx, 25),
    feat!("sse2", "SSE2", Critical, 1, 0, Edx, 26, 0, 0, ["sse"], []),
    // Leaf 1 ECX.
    feat!("sse3", "SSE3", Critical, 1, 0, Ecx, 0, 0, 0, ["sse2"], ["pni"]),
    feat!("pclmulqdq", "PCLMULQDQ", Critical, 1, 0, Ecx, 1),
    feat!("ssse3", "SSSE3", Critical, 1, 0, Ecx, 9, 0, 0, ["sse3"], []),
    feat!("fma", "FMA", Critical, 1, 0, Ecx, 12, YMM, 0, ["avx"], []),
    feat!("cx16", "CMPXCHG16B", Critical, 1, 0, Ecx, 13),
    feat!("sse4_1", "SSE4.1", Critical, 1, 0, Ecx, 19, 0, 0, ["ssse3"], []),
    feat!("sse4_2", "SSE4.2", Critical, 1, 0, Ecx, 20, 0, 0, ["sse4_1"], []),
    feat!("movbe", "MOVBE", Critical, 1, 0, Ecx, 22),
    feat!("popcnt", "POPCNT", Critical, 1, 0, Ecx, 23),
    feat!("aes", "AES-NI", Critical, 1, 0, Ecx, 25),
    feat!("xsave", "XSAVE", Critical, 1, 0, Ecx, 26, LEGACY, 0, [], []),
    feat!("avx", "AVX", Critical, 1, 0, Ecx, 28, YMM, 0x4, ["sse4_2"], []),
    feat!("f16c", "F16C", Critical, 1, 0, Ecx, 29, YMM, 0, ["avx"], []),
    feat!("rdrand", "RDRAND", Critical, 1, 0, Ecx, 30),
    // Leaf 7.0 EBX.
    feat!("fsgsbase", "FSGSBASE", Critical, 7, 0, Ebx, 0),
    feat!("bmi1", "BMI1", Critical, 7, 0, Ebx, 3),
    feat!("hle", "HLE (TSX)", Informational, 7, 0, Ebx, 4),
    feat!("avx2", "AVX2", Critical, 7, 0, Ebx, 5, YMM, 0, ["avx"], []),
    feat!("bmi2", "BMI2", Critical, 7, 0, Ebx, 8),
    feat!("erms", "ERMS", Informational, 7, 0, Ebx, 9),
    feat!("rtm", "RTM (TSX)", Critical, 7, 0, Ebx, 11),
    feat!("avx512f", "AVX-512F", Critical, 7, 0, Ebx, 16, ZMM, XFEATURE_AVX512_MASK, ["avx2"], ["avx512"]),
    feat!("avx512dq", "AVX-512DQ", Critical, 7, 0, Ebx, 17, ZMM, 0, ["avx512f"], []),
    feat!("rdseed", "RDSEED", Critical, 7, 0, Ebx, 18),
    feat!("adx", "ADX", Critical, 7, 0, Ebx, 19),
    feat!("avx512ifma", "AVX-512IFMA", Critical, 7, 0, Ebx, 21, ZMM, 0, ["avx512f"], []),
    feat!("clflushopt", "CLFLUSHOPT", Critical, 7, 0, Ebx, 23),
    feat!("clwb", "CLWB", Critical, 7, 0, Ebx, 24),
    feat!("avx512pf", "AVX-512PF", Critical, 7, 0, Ebx, 26, ZMM, 0, ["avx512f"], []),
    feat!("avx512er", "AVX-512ER", Critical, 7, 0, Ebx, 27, ZMM, 0, ["avx512f"], []),
    feat!("avx512cd", "AVX-512CD", Critical, 7, 0, Ebx, 28, ZMM, 0, ["avx512f"], []),
    feat!("sha_ni", "SHA", Critical, 7, 0, Ebx, 29, 0, 0, [], ["sha"]),
    feat!("avx512bw", "AVX-512BW", Critical, 7, 0, Ebx, 30, ZMM, 0, ["avx512f"], []),
    feat!("avx512vl", "AVX-512VL", Critical, 7, 0, Ebx, 31, ZMM, 0, ["avx512f"], []),
    // Leaf 7.0 ECX.
    feat!("prefetchwt1", "PREFETCHWT1", Informational, 7, 0, Ecx, 0),
    feat!("avx512vbmi", "AVX-512VBMI", Critical, 7, 0, Ecx, 1, ZMM, 0, ["avx512f"], []),
    feat!("pku", "memory protection keys (PKU)", Critical, 7, 0, Ecx, 3, 0x200, 0x200, [], []),
    feat!("ospke", "OS support for protection keys (OSPKE)", Critical, 7, 0, Ecx, 4, 0x200, 0, ["pku"], []),
    feat!("waitpkg", "WAITPKG", Critical, 7, 0, Ecx, 5),
    feat!("avx512_vbmi2", "AVX-512VBMI2", Critical, 7, 0, Ecx, 6, ZMM, 0, ["avx512f"], []),
    feat!("user_shstk", "CET shadow stack", Informational, 7, 0, Ecx, 7),
    feat!("gfni", "GFNI", Critical, 7, 0, Ecx, 8),
    feat!("vaes", "VAES", Critical, 7, 0, Ecx, 9, YMM, 0, ["avx"], []),
    feat!("vpclmulqdq", "VPCLMULQDQ", Critical, 7, 0, Ecx, 10, YMM, 0, ["avx"], []),
    feat!("avx512_vnni", "AVX-512VNNI", Critical, 7, 0, Ecx, 11, ZMM, 0, ["avx512f"], []),
    feat!("avx512_bitalg", "AVX-512BITALG", Critical, 7, 0, Ecx, 12, ZMM, 0, ["avx512f"], []),
    feat!("avx512_vpopcntdq", "AVX-512VPOPCNTDQ", Critical, 7, 0, Ecx, 14, ZMM, 0, ["avx512f"], []),
    feat!("la57", "5-level paging (LA57)", Informational, 7, 0, Ecx, 16),
    feat!("rdpid", "RDPID", Critical, 7, 0, Ecx, 22),
    feat!("cldemote", "CLDEMOTE", Informational, 7, 0, Ecx, 25),
    feat!("movdiri", "MOVDIRI", Critical, 7, 0, Ecx, 27),
    feat!("movdir64b", "MOVDIR64B", Critical, 7, 0, Ecx, 28),
    feat!("enqcmd", "ENQCMD", Critical, 7, 0, Ecx, 29),
    // Leaf 7.0 EDX.
    feat!("avx512_4vnniw", "AVX-512 4VNNIW", Critical, 7, 0, Edx, 2, ZMM, 0, ["avx512f"], []),
    feat!("avx512_4fmaps", "AVX-512 4FMAPS", Critical, 7, 0, Edx, 3, ZMM, 0, ["avx512f"], []),
    feat!("fsrm", "FSRM", Informational, 7, 0, Edx, 4),
    feat!("uintr", "user interrupts (UINTR)", Informational, 7, 0, Edx, 5),
    feat!("avx512_vp2intersect", "AVX-512VP2INTERSECT", Critical, 7, 0, Edx, 8, ZMM, 0, ["avx512f"], []),
    feat!("serialize", "SERIALIZE", Critical, 7, 0, Edx, 14),
    feat!("tsxldtrk", "TSXLDTRK", Critical, 7, 0, Edx, 16),
    feat!("ibt", "CET indirect branch tracking", Informational, 7, 0, Edx, 20),
    feat!("amx_bf16", "AMX-BF16", Critical, 7, 0, Edx, 22, XFEATURE_AMX_MASK, 0, ["amx_tile"], []),
    feat!("avx512_fp16", "AVX-512FP16", Critical, 7, 0, Edx, 23, ZMM, 0, ["avx512f"], []),
    feat!("amx_tile", "AMX-TILE", Critical, 7, 0, Edx, 24, XFEATURE_AMX_MASK, XFEATURE_AMX_MASK, [], ["amx"]),
    feat!("amx_int8", "AMX-INT8", Critical, 7, 0, Edx, 25, XFEATURE_AMX_MASK, 0, ["amx_tile"], []),
    // Leaf 7.1 EAX.
    feat!("sha512", "SHA512", Critical, 7, 1, Eax, 0, YMM, 0, ["avx"], []),
    feat!("sm3", "SM3", Critical, 7, 1, Eax, 1, YMM, 0, ["avx"], []),
    feat!("sm4", "SM4", Critical, 7, 1, Eax, 2, YMM, 0, ["avx"], []),
    feat!("avx_vnni", "AVX-VNNI", Critical, 7, 1, Eax, 4, YMM, 0, ["avx2"], []),
    feat!("avx512_bf16", "AVX-512BF16", Critical, 7, 1, Eax, 5, ZMM, 0, ["avx512f"], []),
    feat!("cmpccxadd", "CMPccXADD", Critical, 7, 1, Eax, 7),
    feat!("fzrm", "fast zero-length REP MOVSB", Informational, 7, 1, Eax, 10),
    feat!("fsrs", "fast short REP STOSB", Informational, 7, 1, Eax, 11),
    feat!("fsrc", "fast short REP CMPSB/SCASB", Informational, 7, 1, Eax, 12),
    feat!("amx_fp16", "AMX-FP16", Critical, 7, 1, Eax, 21, XFEATURE_AMX_MASK, 0, ["amx_tile"], []),
    feat!("avx_ifma", "AVX-IFMA", Critical, 7, 1, Eax, 23, YMM, 0, ["avx2"], []),
    feat!("lam", "linear address masking (LAM)", Informational, 7, 1, Eax, 26),
    // Leaf 7.1 EDX.
    feat!("avx_vnni_int8", "AVX-VNNI-INT8", Critical, 7, 1, Edx, 4, YMM, 0, ["avx2"], []),
    feat!("avx_ne_convert", "AVX-NE-CONVERT", Critical, 7, 1, Edx, 5, YMM, 0, ["avx2"], []),
    feat!("amx_complex", "AMX-COMPLEX", Critical, 7, 1, Edx, 8, XFEATURE_AMX_MASK, 0, ["amx_tile"], []),
    feat!("avx_vnni_int16", "AVX-VNNI-INT16", Critical, 7, 1, Edx, 10, YMM, 0, ["avx2"], []),
    feat!("prefetchi", "PREFETCHI", Informational, 7, 1, Edx, 14),
    feat!("apx_f", "APX", Critical, 7, 1, Edx, 21, 0x80000, 0x80000, [], ["apx"]),
    // Leaf 0xD.1 EAX: XSAVE extensions.
    feat!("xsaveopt", "XSAVEOPT", Critical, 0xd, 1, Eax, 0, LEGACY, 0, ["xsave"], []),
    feat!("xsavec", "XSAVEC", Critical, 0xd, 1, Eax, 1, LEGACY, 0, ["xsave"], []),
    feat!("xgetbv1", "XGETBV with ECX=1", Critical, 0xd, 1, Eax, 2, LEGACY, 0, ["xsave"], []),
    feat!("xsaves", "XSAVES (kernel only)", Informational, 0xd, 1, Eax, 3, LEGACY, 0, ["xsave"], []),
    feat!("xfd", "extended feature disable (XFD)", Informational, 0xd, 1, Eax, 4, LEGACY, 0, ["xsave"], []),
    // Leaf 0x8000_0001.
    feat!("lahf_lm", "LAHF/SAHF in 64-bit mode", Critical, 0x8000_0001, 0, Ecx, 0),
    feat!("lzcnt", "LZCNT (ABM)", Critical, 0x8000_0001, 0, Ecx, 5, 0, 0, [], ["abm"]),
    feat!("sse4a", "SSE4a", Critical, 0x8000_0001, 0, Ecx, 6),
    feat!("misalignsse", "misaligned SSE mode", Informational, 0x8000_0001, 0, Ecx, 7),
    feat!("3dnowprefetch", "PREFETCHW", Informational, 0x8000_0001, 0, Ecx, 8, 0, 0, [], ["prefetchw"]),
    feat!("xop", "XOP", Critical, 0x8000_0001, 0, Ecx, 11, YMM, 0, ["avx"], []),
    feat!("fma4", "FMA4", Critical, 0x8000_0001, 0, Ecx, 16, YMM, 0, ["avx"], []),
    feat!("tbm", "TBM", Critical, 0x8000_0001, 0, Ecx, 21),
    feat!("rdtscp", "RDTSCP", Critical, 0x8000_0001, 0, Edx, 27),
    feat!("lm", "64-bit long mode", Informational, 0x8000_0001, 0, Edx, 29),
    // Leaf 0x8000_0008 EBX.
    feat!("clzero", "CLZERO", Critical, 0x8000_0008, 0, Ebx, 0),
];

/// The feature named `name` (or one of its aliases).
pub fn feature(name: &str) -> Option<&'static CpuFeature> {
    FEATURES
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

/// The display name of a feature name (the name itself when unknown).
pub fn pretty_name(name: &str) -> &str {
    feature(name).map(|f| f.pretty).unwrap_or(name)
}

/// Whether a missing feature `name` makes [`super::CpuPolicy::Compatible`] refuse.
/// Names this ckpt does not know (from a newer tool) are treated as informational.
pub fn is_critical(name: &str) -> bool {
    feature(name).is_some_and(|f| f.class == FeatureClass::Critical)
}

/// Raw values read from the CPU, the input of [`HostCaps::from_cpu`].
pub struct RawCpu<'a> {
    /// CPUID(leaf, subleaf) -> [eax, ebx, ecx, edx].
    pub cpuid: &'a dyn Fn(u32, u32) -> [u32; 4],
    /// XCR0, or None when the OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE clear).
    pub xcr0: Option<u64>,
    /// MXCSR_MASK from FXSAVE (0 means the architectural default 0xffbf).
    pub mxcsr_mask: u32,
}

/// Kernel facts that CPUID cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// The kernel runs 32-bit (ia32) programs.
    pub ia32_supported: bool,
    /// The kernel exposes FSGSBASE to user programs (AT_HWCAP2 bit 1); None: unknown.
    pub fsgsbase_enabled: Option<bool>,
    /// The kernel uses 5-level paging (user addresses up to 56 bits).
    pub la57_enabled: bool,
    /// The kernel supports CET shadow stacks for user programs ("user_shstk" in
    /// /proc/cpuinfo); CPUID alone says only that the CPU has them.
    pub user_shstk_enabled: bool,
}

/// What this host offers a restored program. Build it with [`HostCaps::detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCaps {
    /// "x86_64".
    pub machine: String,
    /// CPUID vendor string ("GenuineIntel", "AuthenticAMD").
    pub vendor: String,
    /// XCR0 as the checks see it: the kernel-enabled xsave components minus masked ones.
    /// Zero when the OS has not enabled XSAVE.
    pub xcr0: u64,
    /// XCR0 as the kernel set it (unmasked).
    pub kernel_xcr0: u64,
    /// Size of the standard-format xsave area for `kernel_xcr0` (CPUID 0xD.0 EBX): the size
    /// of the NT_X86_XSTATE regset the kernel takes. Masks never change it.
    pub xsave_size: u32,
    /// (component, offset, size) of each component in `kernel_xcr0`, standard format.
    pub xsave_layout: Vec<(u32, u32, u32)>,
    /// Components that are 64-byte aligned in the compacted format (CPUID 0xD.i ECX[1]).
    pub xsave_align64: u64,
    /// MXCSR bits this CPU supports (FXSAVE's MXCSR_MASK); the kernel refuses an FPU
    /// state whose MXCSR has other bits set.
    pub mxcsr_mask: u32,
    /// Names (from [`FEATURES`]) of the usable CPU features, minus masked ones.
    pub features: BTreeSet<&'static str>,
    /// The kernel can run ia32 tasks: IA32 emulation is built in (`/proc/sys/abi/vsyscall32`
    /// exists only then) and not switched off (`ia32_emulation=` on the kernel command
    /// line, or CONFIG_IA32_EMULATION_DEFAULT_DISABLED in /boot/config-RELEASE when that
    /// file is readable).
    pub ia32_supported: bool,
    /// Highest user address + 1 the kernel accepts for a watchpoint (TASK_SIZE_MAX).
    pub task_size_max: u64,
    /// xsave components hidden by a mask.
    pub masked_xcr0: u64,
    /// Features hidden by a mask.
    pub masked_features: BTreeSet<&'static str>,
    /// ia32 support hidden by a mask.
    pub masked_ia32: bool,
    /// Kernel facilities hidden by a mask (`kernel=NAME` items; the names are those of
    /// `restore::kernel::Facility`, which checks them).
    pub masked_kernel: BTreeSet<String>,
}

/// A bad mask item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error(
        "unknown CPU feature `{0}` in host mask (use names as in /proc/cpuinfo, e.g. avx2, avx512f, amx_tile; or xsave-comp=N, ia32, kernel=NAME)"
    )]
    UnknownFeature(String),
    #[error(
        "bad xsave component `{0}` in host mask (expected xsave-comp=N or xsave-comp=N-M with N, M in 2..=62)"
    )]
    BadComponent(String),
}

/// Executes CPUID, XGETBV and FXSAVE: the one place in ckpt that reads the CPU directly.
#[allow(unused_unsafe)] // __cpuid_count is safe on newer compilers, unsafe on 1.85.
#[allow(unsafe_code)] // CPU instructions, not system calls: per architecture by nature.
fn read_cpu() -> (impl Fn(u32, u32) -> [u32; 4], Option<u64>, u32) {
    use core::arch::x86_64::{__cpuid_count, _fxsave64, _xgetbv};

    fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
        // SAFETY: CPUID is available on every x86-64 CPU and only reads identification
        // registers; unknown leaves return zeros or the highest basic leaf's values,
        // which callers guard against by checking the maximum leaf first.
        let r = unsafe { __cpuid_count(leaf, sub) };
        [r.eax, r.ebx, r.ecx, r.edx]
    }
    let osxsave = cpuid(1, 0)[2] & (1 << 27) != 0;
    let xcr0 = if osxsave {
        // SAFETY: XGETBV(0) is valid exactly when CR4.OSXSAVE is set, which
        // CPUID.1:ECX.OSXSAVE (bit 27) reports; it only reads XCR0.
        Some(unsafe { _xgetbv(0) })
    } else {
        None
    };
    #[repr(C, align(16))]
    struct FxArea([u8; 512]);
    let mut fx = FxArea([0; 512]);
    // SAFETY: FXSAVE is part of the x86-64 baseline (the target enables `fxsr`); it
    // writes exactly 512 bytes to a 16-byte-aligned buffer, which `fx` is.
    unsafe { _fxsave64(fx.0.as_mut_ptr()) };
    let mxcsr_mask = u32::from_le_bytes([fx.0[28], fx.0[29], fx.0[30], fx.0[31]]);
    (cpuid, xcr0, mxcsr_mask)
}

fn reg_value(r: &[u32; 4], reg: Reg) -> u32 {
    match reg {
        Reg::Eax => r[0],
        Reg::Ebx => r[1],
        Reg::Ecx => r[2],
        Reg::Edx => r[3],
    }
}

impl HostCaps {
    /// Detect this host's CPU and kernel.
    pub fn detect() -> HostCaps {
        let (cpuid, xcr0, mxcsr_mask) = read_cpu();
        let raw = RawCpu {
            cpuid: &cpuid,
            xcr0,
            mxcsr_mask,
        };
        HostCaps::from_cpu(&raw, &KernelFacts::detect())
    }

    /// [`HostCaps::detect`], then the mask spec in `$CKPT_HOST_MASK` if set.
    pub fn detect_with_env_mask() -> Result<HostCaps, MaskError> {
        let host = HostCaps::detect();
        match std::env::var(HOST_MASK_ENV) {
            Ok(spec) if !spec.trim().is_empty() => host.masked(&spec),
            _ => Ok(host),
        }
    }

    /// Build the host view from raw CPU values (also used by tests with a synthetic CPU).
    pub fn from_cpu(raw: &RawCpu<'_>, kernel: &KernelFacts) -> HostCaps {
        // Each leaf is asked once: in a VM every CPUID instruction traps to the
        // hypervisor (about 5 us here), and the feature table asks the same few leaves
        // over a hundred times.
        let seen = std::cell::RefCell::new(Vec::<((u32, u32), [u32; 4])>::new());
        let cpuid = |leaf: u32, sub: u32| -> [u32; 4] {
            if let Some((_, r)) = seen.borrow().iter().find(|(k, _)| *k == (leaf, sub)) {
                return *r;
            }
            let r = (raw.cpuid)(leaf, sub);
            seen.borrow_mut().push(((leaf, sub), r));
            r
        };
        let leaf0 = cpuid(0, 0);
        let max_basic = leaf0[0];
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let mut vendor = Vec::with_capacity(12);
        for r in [leaf0[1], leaf0[3], leaf0[2]] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let vendor = String::from_utf8_lossy(&vendor)
            .trim_end_matches('\0')
            .to_string();
        let leaf7_max_sub = if max_basic >= 7 { cpuid(7, 0)[0] } else { 0 };
        let leaf_valid = |leaf: u32, sub: u32| -> bool {
            if leaf >= 0x8000_0000 {
                leaf <= max_ext
            } else if leaf == 7 {
                max_basic >= 7 && sub <= leaf7_max_sub
            } else {
                leaf <= max_basic
            }
        };

        let xcr0 = raw.xcr0.unwrap_or(0);
        let mut xsave_layout = Vec::new();
        let mut xsave_align64 = 0u64;
        let mut xsave_size = 0u32;
        if xcr0 != 0 && max_basic >= 0xd {
            xsave_size = cpuid(0xd, 0)[1];
            for i in 0..63u32 {
                if xcr0 & (1 << i) == 0 {
                    continue;
                }
                match i {
                    0 => xsave_layout.push((0, 0, 160)),
                    1 => xsave_layout.push((1, 160, 256)),
                    _ => {
                        let r = cpuid(0xd, i);
                        xsave_layout.push((i, r[1], r[0]));
                        if r[2] & 2 != 0 {
                            xsave_align64 |= 1 << i;
                        }
                    }
                }
            }
            let end = xsave_layout
                .iter()
                .map(|&(_, o, s)| o.saturating_add(s))
                .max()
                .unwrap_or(0);
            xsave_size = xsave_size.max(end).max(xsave::XSAVE_HEADER_END as u32);
        }

        let mut features = BTreeSet::new();
        for f in FEATURES {
            if !leaf_valid(f.leaf, f.sub) {
                continue;
            }
            if reg_value(&cpuid(f.leaf, f.sub), f.reg) & (1 << f.bit) == 0 {
                continue;
            }
            if xcr0 & f.needs_xcr0 != f.needs_xcr0 {
                continue;
            }
            features.insert(f.name);
        }
        // A feature is usable only with everything it requires (AVX2 without usable AVX
        // state is not usable): iterate to a fixed point.
        loop {
            let before = features.len();
            let snapshot = features.clone();
            features.retain(|n| {
                feature(n).is_some_and(|f| f.requires.iter().all(|r| snapshot.contains(r)))
            });
            if features.len() == before {
                break;
            }
        }
        if let Some(false) = kernel.fsgsbase_enabled {
            features.remove("fsgsbase");
        }
        if !kernel.user_shstk_enabled {
            features.remove("user_shstk");
        }

        HostCaps {
            machine: "x86_64".to_string(),
            vendor,
            xcr0,
            kernel_xcr0: xcr0,
            xsave_size,
            xsave_layout,
            xsave_align64,
            mxcsr_mask: if raw.mxcsr_mask == 0 {
                0xffbf
            } else {
                raw.mxcsr_mask
            },
            features,
            ia32_supported: kernel.ia32_supported,
            task_size_max: if kernel.la57_enabled {
                TASK_SIZE_MAX_5LEVEL
            } else {
                TASK_SIZE_MAX_4LEVEL
            },
            masked_xcr0: 0,
            masked_features: BTreeSet::new(),
            masked_ia32: false,
            masked_kernel: BTreeSet::new(),
        }
    }

    /// Whether the usable feature set has `name` (or the feature `name` is an alias of).
    pub fn has(&self, name: &str) -> bool {
        let name = feature(name).map(|f| f.name).unwrap_or(name);
        self.features.contains(name)
    }

    /// Standard-format (offset, size) of xsave component `i` in this host's buffer.
    pub fn component(&self, i: u32) -> Option<(u32, u32)> {
        self.xsave_layout
            .iter()
            .find(|&&(c, _, _)| c == i)
            .map(|&(_, o, s)| (o, s))
    }

    /// A copy with the mask spec applied: items separated by commas or spaces, each
    /// optionally prefixed with `no-`:
    /// - a feature name or alias (`avx2`, `avx512f`, `amx_tile`, `sha`...) or a group
    ///   (`avx512`, `amx`, `tsx`, `apx`): the feature and every feature that needs it;
    ///   features that own xsave state (AVX, AVX-512F, AMX-TILE, PKU, APX) also hide it;
    /// - `xsave-comp=N` or `xsave-comp=N-M`: xsave components (2..=62), with those that
    ///   architecturally go together (3-4 MPX, 5-7 AVX-512, 17-18 AMX) and the features
    ///   that need them;
    /// - `ia32`: 32-bit (ia32) task support;
    /// - `kernel=NAME`: a kernel facility restore relies on (`restore::kernel`, e.g.
    ///   `kernel=rseq`, `kernel=timer-restore-ids`); the name is checked there.
    ///
    /// Example: `no-avx512,no-xsave-comp=9,no-ia32,no-kernel=madv-guard-install`.
    pub fn masked(&self, spec: &str) -> Result<HostCaps, MaskError> {
        let items: Vec<&str> = spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        self.with_mask(&items)
    }

    /// A copy with the given mask items applied (see [`HostCaps::masked`]).
    pub fn with_mask(&self, names: &[&str]) -> Result<HostCaps, MaskError> {
        let mut feats: BTreeSet<&'static str> = BTreeSet::new();
        let mut comps = 0u64;
        let mut ia32 = false;
        let mut kernel = BTreeSet::new();
        for raw in names {
            let item = raw.trim();
            let item = item.strip_prefix("no-").unwrap_or(item);
            if item == "ia32" {
                ia32 = true;
            } else if let Some(k) = item.strip_prefix("kernel=") {
                if k.is_empty() {
                    return Err(MaskError::UnknownFeature(item.to_string()));
                }
                kernel.insert(k.to_string());
            } else if let Some(r) = item.strip_prefix("xsave-comp=") {
                comps |= parse_component_range(r)
                    .ok_or_else(|| MaskError::BadComponent(item.to_string()))?;
            } else if item == "tsx" {
                feats.extend(["rtm", "hle", "tsxldtrk"]);
            } else if let Some(f) = feature(item) {
                feats.insert(f.name);
            } else {
                return Err(MaskError::UnknownFeature(item.to_string()));
            }
        }
        let mut out = self.clone();
        // Fixed point: masked features hide the state they own and the features that
        // need them; hidden state hides its partners and the features that need it.
        loop {
            let (f0, c0) = (feats.len(), comps);
            for f in FEATURES {
                if feats.contains(f.name) {
                    comps |= f.owns_xcr0;
                } else if f.needs_xcr0 & comps != 0 || f.requires.iter().any(|r| feats.contains(r))
                {
                    feats.insert(f.name);
                }
            }
            for group in [0x18u64, XFEATURE_AVX512_MASK, XFEATURE_AMX_MASK] {
                if comps & group != 0 {
                    comps |= group;
                }
            }
            if comps & 0x4 != 0 {
                comps |= XFEATURE_AVX512_MASK;
            }
            if feats.len() == f0 && comps == c0 {
                break;
            }
        }
        out.xcr0 &= !comps;
        out.masked_xcr0 |= comps & self.kernel_xcr0;
        for f in feats {
            if out.features.remove(f) {
                out.masked_features.insert(f);
            }
        }
        if ia32 && out.ia32_supported {
            out.ia32_supported = false;
            out.masked_ia32 = true;
        }
        out.masked_kernel.extend(kernel);
        Ok(out)
    }
}

fn parse_component_range(s: &str) -> Option<u64> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
        None => {
            let a = s.trim().parse::<u32>().ok()?;
            (a, a)
        }
    };
    if a < 2 || b > 62 || a > b {
        return None;
    }
    Some((a..=b).fold(0u64, |m, i| m | (1 << i)))
}

impl KernelFacts {
    /// Read the kernel facts from /proc (and /boot/config-RELEASE when readable).
    pub fn detect() -> KernelFacts {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok();
        let built_in = std::path::Path::new("/proc/sys/abi/vsyscall32").exists();
        let cpuinfo_flags = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("flags"))
                    .map(|l| l.to_string())
            })
            .unwrap_or_default();
        let auxv = std::fs::read("/proc/self/auxv").ok();
        KernelFacts {
            ia32_supported: built_in && ia32_enabled(&cmdline, config.as_deref()),
            fsgsbase_enabled: auxv
                .as_deref()
                .and_then(|a| auxv_value(a, AT_HWCAP2))
                .map(|v| v & 2 != 0),
            la57_enabled: cpuinfo_flags.split_whitespace().any(|f| f == "la57"),
            user_shstk_enabled: cpuinfo_flags.split_whitespace().any(|f| f == "user_shstk"),
        }
    }
}

const AT_HWCAP2: u64 = 26;

fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|c| {
        let k = u64::from_le_bytes(c[0..8].try_into().ok()?);
        let v = u64::from_le_bytes(c[8..16].try_into().ok()?);
        (k == key).then_some(v)
    })
}

/// Whether IA32 emulation is switched on, given that it is built in: the kernel command
/// line's `ia32_emulation=` wins; otherwise the build default (on, unless the config says
/// CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y).
fn ia32_enabled(cmdline: &str, config: Option<&str>) -> bool {
    let mut from_cmdline = None;
    for arg in cmdline.split_whitespace() {
        if let Some(v) = arg.strip_prefix("ia32_emulation=") {
            from_cmdline = match v {
                "1" | "y" | "Y" | "yes" | "on" | "true" => Some(true),
                "0" | "n" | "N" | "no" | "off" | "false" => Some(false),
                _ => from_cmdline,
            };
        }
    }
    from_cmdline.unwrap_or_else(|| {
        !config.is_some_and(|c| {
            c.lines()
                .any(|l| l.trim() == "CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y")
        })
    })
}

impl fmt::Display for HostCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: xcr0 {:#x} (xsave {} bytes), ia32 {}, features: {}",
            self.machine,
            self.vendor,
            self.xcr0,
            self.xsave_size,
            if self.ia32_supported { "yes" } else { "no" },
            self.features.iter().copied().collect::<Vec<_>>().join(" ")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
