//! The xsave area: component names, layouts, and converting a saved area from the dump
//! host's layout to this host's.
//!
//! ckpt saves and restores the NT_X86_XSTATE regset, which the kernel always presents in
//! the *standard* (non-compacted) format whatever it uses internally (XSAVES/XSAVEC keep
//! a compacted copy in the kernel; ptrace converts). So "compacted vs standard" between
//! hosts is the kernel's business, and what ckpt must convert is the standard format of
//! one CPU into that of another: component offsets come from CPUID leaf 0xD and may differ
//! (APX, for example, reuses the offset MPX had), and the total size differs with the
//! enabled components (832 bytes with AVX, 2696 with AVX-512 and PKRU, 11008 with AMX).
//! A source area in compacted format (XCOMP_BV bit 63 set) is converted too.

use super::check::{Problem, ProblemCode};
use super::cpu::HostCaps;
use super::x86::ArchHeader;

/// Size of the legacy FXSAVE region at the start of every xsave area.
pub const XSAVE_LEGACY_LEN: usize = 512;
/// End of the 64-byte xsave header (XSTATE_BV, XCOMP_BV, reserved).
pub const XSAVE_HEADER_END: usize = 576;
/// Offset of MXCSR in the legacy region.
pub const MXCSR_OFFSET: usize = 24;

/// AVX-512 state: opmask, ZMM_Hi256, Hi16_ZMM (components 5-7).
pub const XFEATURE_AVX512_MASK: u64 = 0xe0;
/// AMX state: XTILECFG and XTILEDATA (components 17-18).
pub const XFEATURE_AMX_MASK: u64 = 0x6_0000;
/// AMX tile data: the component that needs ARCH_REQ_XCOMP_PERM before use.
pub const XFEATURE_AMX_TILEDATA: u32 = 18;

/// Short names of the xsave components (as Linux names them, lower case).
const COMPONENTS: [(&str, &str); 20] = [
    ("x87", "x87 FPU"),
    ("sse", "SSE"),
    ("avx", "AVX (upper halves of YMM registers)"),
    ("mpx_bndregs", "MPX bound registers"),
    ("mpx_bndcsr", "MPX bound configuration"),
    ("avx512_opmask", "AVX-512 opmask registers"),
    ("zmm_hi256", "AVX-512 upper halves of ZMM0-15"),
    ("hi16_zmm", "AVX-512 ZMM16-31"),
    ("pt", "processor trace (supervisor)"),
    ("pkru", "protection-key rights register (PKRU)"),
    ("pasid", "PASID (supervisor)"),
    ("cet_u", "CET user state (supervisor)"),
    ("cet_s", "CET supervisor state (supervisor)"),
    ("hdc", "hardware duty cycling (supervisor)"),
    ("uintr", "user interrupts (supervisor)"),
    ("lbr", "last branch records (supervisor)"),
    ("hwp", "hardware P-states (supervisor)"),
    ("amx_tilecfg", "AMX tile configuration"),
    ("amx_tiledata", "AMX tile data"),
    ("apx", "APX extended registers R16-R31"),
];

/// Short name of xsave component `i` ("avx", "zmm_hi256", "amx_tiledata"...).
pub fn component_name(i: u32) -> String {
    match COMPONENTS.get(i as usize) {
        Some((n, _)) => (*n).to_string(),
        None => format!("component{i}"),
    }
}

/// Description of xsave component `i` for messages.
pub fn component_description(i: u32) -> String {
    match COMPONENTS.get(i as usize) {
        Some((_, d)) => (*d).to_string(),
        None => format!("unknown xsave component {i}"),
    }
}

/// Groups of components that users know by one name, for messages.
const GROUPS: [(u64, &str); 7] = [
    (0x3, "x87/SSE"),
    (0x4, "AVX"),
    (0x18, "MPX"),
    (XFEATURE_AVX512_MASK, "AVX-512"),
    (0x200, "PKRU (memory protection keys)"),
    (XFEATURE_AMX_MASK, "AMX"),
    (0x8_0000, "APX"),
];

/// Split a component mask into named groups: ("AVX-512", "xsave components 5-7").
pub fn describe_components(mask: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = mask;
    for (g, name) in GROUPS {
        if mask & g != 0 {
            out.push((name.to_string(), component_list(mask & g)));
            rest &= !g;
        }
    }
    for i in 0..64 {
        if rest & (1 << i) != 0 {
            out.push((component_description(i), component_list(1 << i)));
        }
    }
    out
}

/// "xsave component 2", "xsave components 5-7", "xsave components 5, 7".
pub fn component_list(mask: u64) -> String {
    let bits: Vec<u32> = (0..64).filter(|i| mask & (1u64 << i) != 0).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < bits.len() {
        let mut j = i;
        while j + 1 < bits.len() && bits[j + 1] == bits[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", bits[i], bits[j])
        } else {
            bits[i].to_string()
        });
        i = j + 1;
    }
    let noun = if bits.len() == 1 {
        "xsave component"
    } else {
        "xsave components"
    };
    format!("{noun} {}", parts.join(", "))
}

/// Where each component lives in an xsave area of some CPU (standard format), and which
/// ones are 64-byte aligned when compacted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XsaveLayout {
    /// Total size of the standard-format area.
    pub size: u32,
    /// (component, offset, size).
    pub components: Vec<(u32, u32, u32)>,
    /// Components that are 64-byte aligned in the compacted format.
    pub align64: u64,
}

impl XsaveLayout {
    /// The layout the image's threads were saved in.
    pub fn from_header(h: &ArchHeader) -> XsaveLayout {
        XsaveLayout {
            size: h.xsave_size,
            components: h.xsave_layout.clone(),
            align64: h.xsave_align64,
        }
    }

    /// The layout to read the image's xsave areas with: the header's, or — for an image
    /// whose header does not record one (written before ckpt recorded layouts) — this
    /// host's, on the assumption that it was made on the same kind of CPU.
    pub fn for_image(h: &ArchHeader, host: &HostCaps) -> XsaveLayout {
        if h.xsave_layout.is_empty() {
            XsaveLayout::of_host(host)
        } else {
            XsaveLayout::from_header(h)
        }
    }

    /// This host's layout (the kernel's buffer, not reduced by masks).
    pub fn of_host(h: &HostCaps) -> XsaveLayout {
        XsaveLayout {
            size: h.xsave_size,
            components: h.xsave_layout.clone(),
            align64: h.xsave_align64,
        }
    }

    /// (offset, size) of component `i`.
    pub fn get(&self, i: u32) -> Option<(u32, u32)> {
        match i {
            // The legacy region is architectural, whatever the layout says.
            0 => Some((0, 160)),
            1 => Some((160, 256)),
            _ => self
                .components
                .iter()
                .find(|&&(c, _, _)| c == i)
                .map(|&(_, o, s)| (o, s)),
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn corrupt(msg: String) -> Problem {
    Problem::new(
        ProblemCode::XsaveCorrupt,
        format!("the saved FPU/vector state is corrupt: {msg}"),
        Vec::new(),
    )
}

/// Each component whose XSTATE_BV bit is set (2 and up), with its byte range in `src`.
fn saved_components(src: &[u8], layout: &XsaveLayout) -> Result<Vec<(u32, usize, usize)>, Problem> {
    if src.len() < XSAVE_HEADER_END {
        return Err(corrupt(format!(
            "{} bytes is too short for an xsave area (at least {XSAVE_HEADER_END})",
            src.len()
        )));
    }
    let bv = le64(src, 512);
    let xcomp = le64(src, 520);
    let compacted = xcomp & (1 << 63) != 0;
    if !compacted && xcomp != 0 {
        return Err(corrupt(format!(
            "XCOMP_BV is {xcomp:#x} in a standard-format area"
        )));
    }
    if compacted && bv & !xcomp & !3 != 0 {
        return Err(corrupt(format!(
            "XSTATE_BV {bv:#x} has components that XCOMP_BV {xcomp:#x} does not"
        )));
    }
    if bv & (1 << 63) != 0 {
        return Err(corrupt("XSTATE_BV bit 63 is set".to_string()));
    }
    let mut out = Vec::new();
    // Compacted format: components of XCOMP_BV follow the header in index order, each
    // 64-byte aligned when CPUID says so.
    let mut next = XSAVE_HEADER_END as u64;
    for i in 2..63u32 {
        let in_bv = bv & (1 << i) != 0;
        let (off, size) = if compacted {
            if xcomp & (1 << i) == 0 {
                continue;
            }
            let Some((_, size)) = layout.get(i) else {
                return Err(corrupt(format!(
                    "the size of {} (component {i}) is not recorded",
                    component_description(i)
                )));
            };
            if layout.align64 & (1 << i) != 0 {
                next = next.div_ceil(64) * 64;
            }
            let off = next;
            next += u64::from(size);
            (off, u64::from(size))
        } else {
            if !in_bv {
                continue;
            }
            let Some((off, size)) = layout.get(i) else {
                return Err(corrupt(format!(
                    "{} (component {i}) is in use but its place in the area is not recorded",
                    component_description(i)
                )));
            };
            (u64::from(off), u64::from(size))
        };
        if !in_bv {
            continue;
        }
        if off < XSAVE_HEADER_END as u64 || off + size > src.len() as u64 {
            return Err(corrupt(format!(
                "{} (component {i}) at bytes {off}..{} lies outside the {}-byte area",
                component_description(i),
                off + size,
                src.len()
            )));
        }
        out.push((i, off as usize, size as usize));
    }
    Ok(out)
}

/// The components a saved area really uses: XSTATE_BV, less components (2 and up) whose
/// saved content is all zeros. All-zero is the architectural init state of every
/// component from AVX on, so such a component can be restored on a CPU that lacks it by
/// simply leaving it in its init state. x87 and SSE (bits 0, 1) are kept as saved.
pub fn components_in_use(src: &[u8], layout: &XsaveLayout) -> Result<u64, Problem> {
    let bv = le64(src, 512);
    let mut used = bv & 3;
    for (i, off, size) in saved_components(src, layout)? {
        if src[off..off + size].iter().any(|&b| b != 0) {
            used |= 1 << i;
        }
    }
    Ok(used)
}

/// Convert a saved xsave area (`src`, laid out as `src_layout` says: normally the image's
/// arch header, see [`XsaveLayout::from_header`]) into the standard-format area of this
/// host, ready for PTRACE_SETREGSET(NT_X86_XSTATE).
///
/// The legacy 512 bytes (x87, MXCSR, XMM) are copied; every component in use is copied to
/// this host's offset for it; XCOMP_BV and the reserved header bytes are zero; XSTATE_BV
/// keeps the components in use. A component that is set in XSTATE_BV but all zeros (its
/// init state) is dropped from XSTATE_BV instead of copied, so it does not need to exist
/// here. Refused (with a [`Problem`]):
/// - a component in use that this host lacks or masks;
/// - a component whose size differs here (the state could not be represented);
/// - an MXCSR with bits this CPU does not support (the kernel would refuse it);
/// - a malformed area.
pub fn convert_xsave(
    src: &[u8],
    src_layout: &XsaveLayout,
    host: &HostCaps,
) -> Result<Vec<u8>, Problem> {
    let comps = saved_components(src, src_layout)?;
    let dst_size = (host.xsave_size as usize).max(XSAVE_HEADER_END);
    let mut out = vec![0u8; dst_size];
    out[..XSAVE_LEGACY_LEN].copy_from_slice(&src[..XSAVE_LEGACY_LEN]);
    let bv = le64(src, 512);
    let mut out_bv = bv & 3;
    let mut missing = 0u64;
    for (i, off, size) in comps {
        let data = &src[off..off + size];
        if data.iter().all(|&b| b == 0) {
            continue;
        }
        if host.xcr0 & (1 << i) == 0 {
            missing |= 1 << i;
            continue;
        }
        let Some((doff, dsize)) = host.component(i) else {
            missing |= 1 << i;
            continue;
        };
        if dsize as usize != size {
            return Err(Problem::new(
                ProblemCode::XsaveLayoutMismatch,
                format!(
                    "{} (xsave component {i}) is {size} bytes in the image but {dsize} bytes on this CPU; the state cannot be converted",
                    component_description(i)
                ),
                vec![component_name(i)],
            ));
        }
        let doff = doff as usize;
        if doff < XSAVE_HEADER_END || doff + size > out.len() {
            return Err(Problem::new(
                ProblemCode::XsaveLayoutMismatch,
                format!("this CPU reports xsave component {i} outside its own xsave area"),
                vec![component_name(i)],
            ));
        }
        out[doff..doff + size].copy_from_slice(data);
        out_bv |= 1 << i;
    }
    if missing != 0 {
        return Err(missing_components_problem(missing, host, "the task uses"));
    }
    // The kernel checks MXCSR whenever x87, SSE or AVX state is set (copy_uabi_to_xstate).
    if out_bv & 0x7 != 0 {
        let mxcsr = u32::from_le_bytes(
            src[MXCSR_OFFSET..MXCSR_OFFSET + 4]
                .try_into()
                .unwrap_or_default(),
        );
        if mxcsr & !host.mxcsr_mask != 0 {
            return Err(Problem::new(
                ProblemCode::MxcsrUnsupported,
                format!(
                    "the task's SSE control register MXCSR ({mxcsr:#x}) has bits {:#x} that this CPU does not support (MXCSR_MASK {:#x}); the kernel would refuse the state",
                    mxcsr & !host.mxcsr_mask,
                    host.mxcsr_mask
                ),
                vec![format!("{mxcsr:#x}")],
            ));
        }
    }
    out[512..520].copy_from_slice(&out_bv.to_le_bytes());
    Ok(out)
}

/// A problem saying that the components in `missing` are not available on `host`.
pub(crate) fn missing_components_problem(missing: u64, host: &HostCaps, who: &str) -> Problem {
    let groups = describe_components(missing);
    let what = groups
        .iter()
        .map(|(name, list)| format!("{name} state ({list})"))
        .collect::<Vec<_>>()
        .join(" and ");
    let masked = missing & host.masked_xcr0;
    let why = if masked == missing {
        "this host's CPU mask hides them".to_string()
    } else if masked != 0 {
        format!(
            "this CPU does not provide them ({} hidden by this host's CPU mask)",
            component_list(masked)
        )
    } else {
        "this CPU does not provide them".to_string()
    };
    let them = if missing.count_ones() == 1 {
        why.replace("them", "it")
    } else {
        why
    };
    Problem::new(
        ProblemCode::XsaveComponentMissing,
        format!("{who} {what}; {them}"),
        (0..64u32)
            .filter(|i| missing & (1 << i) != 0)
            .map(component_name)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::cpu::tests::FakeCpu;

    /// A standard-format area for `layout` with XSTATE_BV = `bv`, each component filled
    /// with its index (so misplacement shows), MXCSR 0x1f80.
    fn area(layout: &XsaveLayout, bv: u64) -> Vec<u8> {
        let mut a = vec![0u8; layout.size as usize];
        a[0] = 0x7f; // FCW low byte
        a[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        a[160..416].fill(0xaa);
        a[512..520].copy_from_slice(&bv.to_le_bytes());
        for &(i, o, s) in &layout.components {
            if i >= 2 && bv & (1 << i) != 0 {
                a[o as usize..(o + s) as usize].fill(i as u8);
            }
        }
        a
    }

    fn avx_only_host() -> HostCaps {
        let mut h = FakeCpu::sapphire_rapids().caps();
        h.xcr0 = 0x7;
        h.kernel_xcr0 = 0x7;
        h.xsave_size = 832;
        h.xsave_layout = vec![(0, 0, 160), (1, 160, 256), (2, 576, 256)];
        h.xsave_align64 = 0;
        h
    }

    fn big_layout() -> XsaveLayout {
        XsaveLayout::of_host(&FakeCpu::sapphire_rapids().caps())
    }

    #[test]
    fn same_layout_is_identity() {
        let host = FakeCpu::sapphire_rapids().caps();
        let l = XsaveLayout::of_host(&host);
        let src = area(&l, 0x602e7);
        let out = convert_xsave(&src, &l, &host).unwrap();
        assert_eq!(out, src);
    }

    #[test]
    fn moves_components_to_new_offsets() {
        // The dump CPU put AVX-512 and PKRU somewhere else (and had a bigger area).
        let src_layout = XsaveLayout {
            size: 4096,
            components: vec![
                (0, 0, 160),
                (1, 160, 256),
                (2, 576, 256),
                (5, 2048, 64),
                (6, 2112, 512),
                (7, 2624, 1024),
                (9, 3648, 8),
            ],
            align64: 0,
        };
        let host = FakeCpu::sapphire_rapids().caps();
        let src = area(&src_layout, 0x2e7);
        let out = convert_xsave(&src, &src_layout, &host).unwrap();
        assert_eq!(out.len(), 11008);
        assert_eq!(&out[..512], &src[..512]);
        assert_eq!(le64(&out, 512), 0x2e7);
        assert_eq!(le64(&out, 520), 0);
        for (i, o, s) in [
            (2u8, 576, 256),
            (5, 1088, 64),
            (6, 1152, 512),
            (7, 1664, 1024),
            (9, 2688, 8),
        ] {
            assert!(
                out[o..o + s].iter().all(|&b| b == i),
                "component {i} misplaced"
            );
        }
        // AMX region untouched (init).
        assert!(out[2752..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_component_in_use_that_host_lacks() {
        let l = big_layout();
        let src = area(&l, 0xe7);
        let e = convert_xsave(&src, &l, &avx_only_host()).unwrap_err();
        assert_eq!(e.code, ProblemCode::XsaveComponentMissing);
        assert!(
            e.message.contains("AVX-512 state (xsave components 5-7)"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("this CPU does not provide them"),
            "{}",
            e.message
        );
        assert_eq!(e.items, vec!["avx512_opmask", "zmm_hi256", "hi16_zmm"]);
    }

    #[test]
    fn masked_component_is_refused_and_says_so() {
        let host = FakeCpu::sapphire_rapids().caps().masked("no-amx").unwrap();
        let l = big_layout();
        let src = area(&l, 0x60007);
        let e = convert_xsave(&src, &l, &host).unwrap_err();
        assert!(
            e.message.contains("AMX state (xsave components 17-18)"),
            "{}",
            e.message
        );
        assert!(e.message.contains("mask"), "{}", e.message);
    }

    #[test]
    fn init_state_components_are_dropped_not_refused() {
        let l = big_layout();
        let mut src = area(&l, 0x2e7);
        // AVX-512 and PKRU flagged in use but all zeros: init state.
        for &(i, o, s) in &l.components {
            if i >= 5 {
                src[o as usize..(o + s) as usize].fill(0);
            }
        }
        assert_eq!(components_in_use(&src, &l).unwrap(), 0x7);
        let out = convert_xsave(&src, &l, &avx_only_host()).unwrap();
        assert_eq!(out.len(), 832);
        assert_eq!(le64(&out, 512), 0x7);
        assert!(out[576..832].iter().all(|&b| b == 2));
    }

    #[test]
    fn compacted_source_is_converted() {
        let host = FakeCpu::sapphire_rapids().caps();
        let l = XsaveLayout::of_host(&host);
        // Compacted: AVX at 576, PKRU right after (576+256=832), tiledata aligned to 64.
        let mut src = vec![0u8; 576 + 256 + 8 + 56 + 8192];
        src[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        let bv: u64 = 0x40207;
        let xcomp: u64 = (1 << 63) | 0x40207;
        src[512..520].copy_from_slice(&bv.to_le_bytes());
        src[520..528].copy_from_slice(&xcomp.to_le_bytes());
        src[576..832].fill(2);
        src[832..840].fill(9);
        src[896..896 + 8192].fill(18);
        let out = convert_xsave(&src, &l, &host).unwrap();
        assert_eq!(le64(&out, 520), 0);
        assert_eq!(le64(&out, 512), bv);
        assert!(out[576..832].iter().all(|&b| b == 2));
        assert!(out[2688..2696].iter().all(|&b| b == 9));
        assert!(out[2816..2816 + 8192].iter().all(|&b| b == 18));
    }

    #[test]
    fn malformed_areas_are_refused() {
        let host = FakeCpu::sapphire_rapids().caps();
        let l = XsaveLayout::of_host(&host);
        let code = |src: &[u8]| convert_xsave(src, &l, &host).unwrap_err().code;
        assert_eq!(code(&[0u8; 100]), ProblemCode::XsaveCorrupt);
        let mut s = area(&l, 0x7);
        s[520] = 1; // XCOMP_BV without the compacted bit
        assert_eq!(code(&s), ProblemCode::XsaveCorrupt);
        let s = area(&l, 0x7);
        assert_eq!(
            code(&s[..700]),
            ProblemCode::XsaveCorrupt,
            "truncated AVX component"
        );
        // Component in use that the source layout does not describe.
        let mut s = area(&l, 0x7);
        s[512..520].copy_from_slice(&(0x7u64 | 1 << 30).to_le_bytes());
        assert_eq!(code(&s), ProblemCode::XsaveCorrupt);
        // Component size differs between the layouts.
        let mut other = l.clone();
        for c in other.components.iter_mut() {
            if c.0 == 9 {
                c.2 = 16;
            }
        }
        let s = area(&other, 0x207);
        assert_eq!(
            convert_xsave(&s, &other, &host).unwrap_err().code,
            ProblemCode::XsaveLayoutMismatch
        );
    }

    #[test]
    fn unsupported_mxcsr_bits_are_refused() {
        let mut host = FakeCpu::sapphire_rapids().caps();
        host.mxcsr_mask = 0xffbf; // no DAZ
        let l = XsaveLayout::of_host(&host);
        let mut s = area(&l, 0x3);
        s[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&(0x1f80u32 | 0x40).to_le_bytes());
        let e = convert_xsave(&s, &l, &host).unwrap_err();
        assert_eq!(e.code, ProblemCode::MxcsrUnsupported);
        // Not checked when no FP/SSE/AVX state is set (the kernel does not either).
        s[512..520].copy_from_slice(&0u64.to_le_bytes());
        assert!(convert_xsave(&s, &l, &host).is_ok());
    }

    #[test]
    fn component_lists_read_well() {
        assert_eq!(component_list(0xe0), "xsave components 5-7");
        assert_eq!(component_list(0x4), "xsave component 2");
        assert_eq!(component_list(0xa0), "xsave components 5, 7");
        assert_eq!(component_list(0x60004), "xsave components 2, 17-18");
        let d = describe_components(0x600e4);
        assert_eq!(d[0], ("AVX".to_string(), "xsave component 2".to_string()));
        assert_eq!(d[1].0, "AVX-512");
        assert_eq!(
            d[2],
            ("AMX".to_string(), "xsave components 17-18".to_string())
        );
        assert_eq!(component_name(18), "amx_tiledata");
        assert_eq!(component_name(40), "component40");
    }
}
