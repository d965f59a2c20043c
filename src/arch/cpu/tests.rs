//! Tests of host detection, with [`FakeCpu`] (a CPUID table) for the CPUs this host is
//! not; the other arch tests use it too.

use super::*;
use std::collections::HashMap;

/// A synthetic CPU: a CPUID table and XCR0.
pub(crate) struct FakeCpu {
    pub leaves: HashMap<(u32, u32), [u32; 4]>,
    pub xcr0: Option<u64>,
}

impl FakeCpu {
    /// An Intel-like CPU with AVX-512, PKU and AMX (xsave area 11008 bytes).
    pub fn sapphire_rapids() -> FakeCpu {
        fn bits(b: &[u32]) -> u32 {
            b.iter().fold(0, |m, i| m | (1 << i))
        }
        let vendor = |s: &[u8; 4]| u32::from_le_bytes(*s);
        let mut l = HashMap::new();
        // "GenuineIntel" is EBX, EDX, ECX of leaf 0.
        l.insert(
            (0, 0),
            [0x20, vendor(b"Genu"), vendor(b"ntel"), vendor(b"ineI")],
        );
        l.insert((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
        // sse3 ssse3 fma sse4_1 sse4_2 popcnt aes xsave osxsave avx;
        // fpu cx8 cmov mmx fxsr sse sse2.
        let ecx1 = bits(&[0, 9, 12, 19, 20, 23, 25, 26, 27, 28]);
        let edx1 = bits(&[0, 8, 15, 23, 24, 25, 26]);
        l.insert((1, 0), [0, 0, ecx1, edx1]);
        // fsgsbase bmi1 avx2 bmi2 erms avx512f avx512dq avx512bw avx512vl;
        // pku ospke; fsrm amx_bf16 amx_tile amx_int8.
        let ebx7 = bits(&[0, 3, 5, 8, 9, 16, 17, 30, 31]);
        let ecx7 = bits(&[3, 4]);
        let edx7 = bits(&[4, 22, 24, 25]);
        l.insert((7, 0), [1, ebx7, ecx7, edx7]);
        l.insert((7, 1), [bits(&[4]), 0, 0, 0]); // avx_vnni
        // XSAVE leaf: size, then (size, offset, flags) per component.
        l.insert((0xd, 0), [0, 11008, 11008, 0]);
        l.insert((0xd, 1), [0xf, 0, 0, 0]);
        for (i, size, off, flags) in [
            (2, 256, 576, 0),
            (5, 64, 1088, 0),
            (6, 512, 1152, 0),
            (7, 1024, 1664, 0),
            (9, 8, 2688, 0),
            (17, 64, 2752, 0),
            (18, 8192, 2816, 2),
        ] {
            l.insert((0xd, i), [size, off, flags, 0]);
        }
        // lahf_lm lzcnt 3dnowprefetch; rdtscp lm.
        l.insert((0x8000_0001, 0), [0, 0, bits(&[0, 5, 8]), bits(&[27, 29])]);
        FakeCpu {
            leaves: l,
            xcr0: Some(0x602e7),
        }
    }

    pub fn caps(&self) -> HostCaps {
        let f = |a: u32, b: u32| self.leaves.get(&(a, b)).copied().unwrap_or([0; 4]);
        HostCaps::from_cpu(
            &RawCpu {
                cpuid: &f,
                xcr0: self.xcr0,
                mxcsr_mask: 0xffff,
            },
            &KernelFacts {
                ia32_supported: true,
                fsgsbase_enabled: Some(true),
                la57_enabled: false,
                user_shstk_enabled: false,
            },
        )
    }
}

#[test]
fn this_host_is_sane() {
    let h = HostCaps::detect();
    assert_eq!(h.machine, "x86_64");
    for f in ["fpu", "sse", "sse2", "cx8", "cmov", "fxsr", "lm"] {
        assert!(h.has(f), "{f} missing on an x86-64 host: {h}");
    }
    assert!(h.mxcsr_mask & 0xffbf == 0xffbf);
    if h.has("xsave") {
        assert_eq!(h.xcr0 & 3, 3, "x87 and SSE must be enabled in XCR0");
        assert!(h.xsave_size >= 576);
        assert_eq!(h.component(0), Some((0, 160)));
        assert_eq!(h.component(1), Some((160, 256)));
        for &(i, o, s) in &h.xsave_layout {
            assert!(h.xcr0 & (1 << i) != 0);
            assert!(o + s <= h.xsave_size, "component {i} beyond xsave size");
        }
    }
    if h.has("avx") {
        assert_eq!(h.component(2), Some((576, 256)));
    }
    if h.has("avx2") {
        assert!(h.has("avx"));
    }
    assert!(h.task_size_max >= TASK_SIZE_MAX_4LEVEL);
}

#[test]
fn synthetic_amx_cpu() {
    let h = FakeCpu::sapphire_rapids().caps();
    assert_eq!(h.vendor, "GenuineIntel");
    assert_eq!(h.xsave_size, 11008);
    assert_eq!(h.component(18), Some((2816, 8192)));
    assert_eq!(h.xsave_align64, 1 << 18);
    for f in [
        "avx2", "avx512f", "avx512bw", "amx_tile", "amx_int8", "amx_bf16", "pku", "ospke",
        "avx_vnni", "xsavec", "lzcnt",
    ] {
        assert!(h.has(f), "{f} not detected");
    }
    assert!(h.has("abm"), "alias");
    assert!(!h.has("sse4a"));
}

#[test]
fn features_need_os_support() {
    let mut cpu = FakeCpu::sapphire_rapids();
    // The OS enabled only x87, SSE and AVX state: AVX-512 and AMX are not usable.
    cpu.xcr0 = Some(0x7);
    let h = cpu.caps();
    assert!(h.has("avx2"));
    assert!(!h.has("avx512f"));
    assert!(!h.has("avx512bw"));
    assert!(!h.has("amx_tile"));
    assert!(!h.has("pku"));
    // No OSXSAVE at all: no AVX either, and no xsave layout.
    cpu.xcr0 = None;
    let h = cpu.caps();
    assert!(!h.has("avx"));
    assert!(!h.has("xsave"));
    assert!(h.xsave_layout.is_empty());
    assert!(h.has("sse4_2"));
}

#[test]
fn masking_follows_dependencies() {
    let h = FakeCpu::sapphire_rapids().caps();
    let m = h.masked("no-avx512").unwrap();
    assert!(!m.has("avx512f") && !m.has("avx512bw") && !m.has("avx512vl"));
    assert_eq!(m.xcr0 & 0xe0, 0);
    assert_eq!(m.masked_xcr0, 0xe0);
    assert!(m.has("avx2"));
    assert_eq!(
        m.xsave_size, h.xsave_size,
        "the kernel buffer size does not change"
    );

    let m = h.masked("no-xsave-comp=2").unwrap();
    assert!(!m.has("avx") && !m.has("avx2") && !m.has("fma") && !m.has("avx512f"));
    assert_eq!(m.xcr0 & 0xe4, 0);

    let m = h.masked("no-xsave-comp=18, no-ia32").unwrap();
    assert_eq!(m.xcr0 & XFEATURE_AMX_MASK, 0);
    assert!(!m.has("amx_int8"));
    assert!(!m.ia32_supported && m.masked_ia32);

    let m = h.with_mask(&["avx"]).unwrap();
    assert!(!m.has("avx2") && !m.has("avx512f"));
    assert!(m.has("sse4_2"));

    assert!(matches!(
        h.masked("no-avx9000"),
        Err(MaskError::UnknownFeature(_))
    ));
    assert!(matches!(
        h.masked("no-xsave-comp=1"),
        Err(MaskError::BadComponent(_))
    ));
    assert!(matches!(
        h.masked("no-xsave-comp=7-5"),
        Err(MaskError::BadComponent(_))
    ));
    assert_eq!(h.masked("").unwrap(), h);
}

#[test]
fn ia32_switch() {
    assert!(ia32_enabled("quiet", None));
    assert!(!ia32_enabled("ia32_emulation=0", None));
    assert!(!ia32_enabled("x ia32_emulation=false", None));
    let cfg = "CONFIG_X=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n";
    assert!(!ia32_enabled("quiet", Some(cfg)));
    assert!(ia32_enabled("ia32_emulation=1", Some(cfg)));
}

#[test]
fn feature_table_is_consistent() {
    let mut names = BTreeSet::new();
    for f in FEATURES {
        assert!(names.insert(f.name), "duplicate {}", f.name);
        for a in f.aliases {
            assert!(names.insert(a), "duplicate alias {a}");
        }
        for r in f.requires {
            assert!(feature(r).is_some(), "{} requires unknown {r}", f.name);
        }
        assert!(f.bit < 32);
    }
}
