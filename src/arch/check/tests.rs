//! Tests of the arch checks: headers, each policy, the manifest, this host.

use super::*;
use crate::arch::cpu::tests::FakeCpu;
use crate::arch::x86::{USER_CS_32, USER_CS_64, X86Regs};

fn thread(host: &HostCaps, bv: u64, cs: u64) -> ThreadArchState {
    let mut x = vec![0u8; host.xsave_size as usize];
    x[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    x[512..520].copy_from_slice(&bv.to_le_bytes());
    for &(i, o, s) in &host.xsave_layout {
        if i >= 2 && bv & (1 << i) != 0 {
            x[o as usize..(o + s) as usize].fill(0x5a);
        }
    }
    ThreadArchState {
        regs: X86Regs {
            cs,
            ..Default::default()
        },
        xsave: x,
        debugregs: [0; 6],
        tls: vec![],
    }
}

fn spr() -> HostCaps {
    FakeCpu::sapphire_rapids().caps()
}

fn codes(p: &[Problem]) -> Vec<ProblemCode> {
    p.iter().map(|p| p.code).collect()
}

#[test]
fn header_records_what_was_used() {
    let host = spr();
    let a = thread(&host, 0xe7, USER_CS_64);
    let mut b = thread(&host, 0x207, USER_CS_32);
    // b's AVX state is all zeros: init, not in use.
    b.xsave[576..832].fill(0);
    let h = build_arch_header(&[&a, &b], &host);
    assert_eq!(h.machine, "x86_64");
    assert_eq!(h.abis, vec![Abi::X86_64, Abi::Ia32]);
    assert_eq!(h.xcr0, 0x602e7);
    assert_eq!(h.xfeatures_used, 0x2e7);
    assert_eq!(h.xsave_size, 11008);
    assert_eq!(h.xsave_layout, host.xsave_layout);
    assert_eq!(h.xsave_align64, 1 << 18);
    assert!(h.cpu_features.contains(&"avx512f".to_string()));
    assert!(
        h.cpu_features.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique"
    );
    // The same host accepts it under every policy.
    for p in CpuPolicy::ALL {
        assert!(
            check_host(&h, &host, p).is_empty(),
            "{p}: {:?}",
            check_host(&h, &host, p)
        );
    }
    let threads = [(1, &a), (2, &b)];
    assert!(check_arch(&h, &threads, &host, CpuPolicy::Strict).is_empty());
}

#[test]
fn avx512_image_on_avx2_host() {
    let dump_host = spr();
    let t = thread(&dump_host, 0xe7, USER_CS_64);
    let h = build_arch_header(&[&t], &dump_host);
    let here = dump_host.masked("no-avx512").unwrap();

    let p = check_host(&h, &here, CpuPolicy::Compatible);
    assert_eq!(
        codes(&p),
        [
            ProblemCode::XsaveComponentMissing,
            ProblemCode::CpuFeatureMissing
        ]
    );
    assert!(
        p[0].message
            .starts_with("the image's task used AVX-512 state (xsave components 5-7);"),
        "{}",
        p[0].message
    );
    assert!(p[1].message.contains("AVX-512F"), "{}", p[1].message);
    assert!(p[1].items.contains(&"avx512bw".to_string()));
    // Ignore: only the state in use matters.
    assert_eq!(
        codes(&check_host(&h, &here, CpuPolicy::Ignore)),
        [ProblemCode::XsaveComponentMissing]
    );
    // check_arch does not repeat the component problem per thread.
    let all = check_arch(&h, &[(7, &t)], &here, CpuPolicy::Compatible);
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn unused_state_passes_compatible_not_strict() {
    let dump_host = spr();
    // The task never touched AVX-512 (state in init): only AVX in use.
    let t = thread(&dump_host, 0x7, USER_CS_64);
    let mut h = build_arch_header(&[&t], &dump_host);
    h.cpu_features.retain(|f| !f.starts_with("avx512"));
    let here = dump_host.masked("no-avx512").unwrap();
    assert!(check_host(&h, &here, CpuPolicy::Compatible).is_empty());
    assert!(check_host(&h, &here, CpuPolicy::Ignore).is_empty());
    let p = check_host(&h, &here, CpuPolicy::Strict);
    assert_eq!(codes(&p), [ProblemCode::XsaveComponentMissing]);
    assert!(
        p[0].message.contains("dump host had AVX-512 state"),
        "{}",
        p[0].message
    );
    // And the thread's state converts to the smaller set.
    assert!(check_thread(&t, &h, &here).is_empty());
}

#[test]
fn informational_features_only_matter_under_strict() {
    let host = spr();
    let t = thread(&host, 0x7, USER_CS_64);
    let h = build_arch_header(&[&t], &host);
    let here = host.masked("no-erms").unwrap();
    assert!(check_host(&h, &here, CpuPolicy::Compatible).is_empty());
    let p = check_host(&h, &here, CpuPolicy::Strict);
    assert_eq!(codes(&p), [ProblemCode::CpuFeatureMissing]);
    assert!(
        p[0].message.contains("ERMS") && p[0].message.contains("mask"),
        "{}",
        p[0].message
    );
    // A critical one is refused by compatible.
    let here = host.masked("no-bmi2").unwrap();
    let p = check_host(&h, &here, CpuPolicy::Compatible);
    assert_eq!(p[0].items, vec!["bmi2"]);
    assert!(p[0].message.contains("illegal instruction"));
    // Unknown feature names from a newer ckpt: only strict refuses.
    let mut h2 = h.clone();
    h2.cpu_features.push("avx1024".to_string());
    assert!(check_host(&h2, &host, CpuPolicy::Compatible).is_empty());
    assert_eq!(check_host(&h2, &host, CpuPolicy::Strict).len(), 1);
}

#[test]
fn ia32_and_machine() {
    let host = spr();
    let t = thread(&host, 0x3, USER_CS_32);
    let h = build_arch_header(&[&t], &host);
    let p = check_host(&h, &host.masked("no-ia32").unwrap(), CpuPolicy::Ignore);
    assert_eq!(codes(&p), [ProblemCode::Ia32Unsupported]);
    let mut no32 = host.clone();
    no32.ia32_supported = false;
    let p = check_host(&h, &no32, CpuPolicy::Ignore);
    assert!(p[0].message.contains("IA32 emulation"), "{}", p[0].message);

    let mut h = h;
    h.machine = "aarch64".to_string();
    let p = check_host(&h, &host, CpuPolicy::Ignore);
    assert_eq!(codes(&p), [ProblemCode::MachineMismatch]);
    assert!(p[0].message.contains("aarch64"));
}

#[test]
fn amx_permission_follows_the_policy() {
    let dump_host = spr();
    let t = thread(&dump_host, 0x7, USER_CS_64);
    let mut h = build_arch_header(&[&t], &dump_host);
    h.cpu_features.clear();
    h.xcomp_perm = 0x602e7;
    // A host with AMX grants it under every policy.
    for p in CpuPolicy::ALL {
        assert!(check_host(&h, &dump_host, p).is_empty(), "{p}");
    }
    assert!(amx_permission_grantable(&h, &dump_host));
    let here = dump_host.masked("no-amx").unwrap();
    assert!(!amx_permission_grantable(&h, &here));
    let got = check_host(&h, &here, CpuPolicy::Compatible);
    assert_eq!(codes(&got), [ProblemCode::AmxPermissionUnavailable]);
    assert!(
        got[0].message.contains("ARCH_REQ_XCOMP_PERM") && got[0].message.contains("mask"),
        "{}",
        got[0].message
    );
    // Strict also wants the dump host's unused AMX state; ignore restores without
    // the permission.
    assert!(
        codes(&check_host(&h, &here, CpuPolicy::Strict))
            .contains(&ProblemCode::AmxPermissionUnavailable)
    );
    assert!(check_host(&h, &here, CpuPolicy::Ignore).is_empty());
    // Without the permission nothing is asked.
    h.xcomp_perm = 0x2e7;
    assert!(amx_permission_grantable(&h, &here));
    assert!(check_host(&h, &here, CpuPolicy::Compatible).is_empty());
}

#[test]
fn inconsistent_headers_are_reported() {
    let host = spr();
    let t = thread(&host, 0x207, USER_CS_64);
    let mut h = build_arch_header(&[&t], &host);
    h.xsave_layout.retain(|c| c.0 != 9);
    let p = check_host(&h, &host, CpuPolicy::Compatible);
    assert_eq!(codes(&p), [ProblemCode::HeaderCorrupt]);
    let all = check_arch(&h, &[(1, &t)], &host, CpuPolicy::Compatible);
    assert!(
        all.iter()
            .any(|p| p.code == ProblemCode::XsaveCorrupt && p.message.starts_with("thread 1: "))
    );

    let mut h = build_arch_header(&[&t], &host);
    h.xsave_size = 1000;
    assert!(
        codes(&check_host(&h, &host, CpuPolicy::Compatible)).contains(&ProblemCode::HeaderCorrupt)
    );

    let mut h = build_arch_header(&[&t], &host);
    for c in h.xsave_layout.iter_mut() {
        if c.0 == 9 {
            c.2 = 4;
        }
    }
    assert_eq!(
        codes(&check_host(&h, &host, CpuPolicy::Compatible)),
        [ProblemCode::XsaveLayoutMismatch]
    );
}

#[test]
fn header_without_layout_is_read_with_this_hosts() {
    // Images from before layouts were recorded: xfeatures_used but no layout.
    let host = spr();
    let t = thread(&host, 0x7, USER_CS_64);
    let mut h = build_arch_header(&[&t], &host);
    h.xsave_layout.clear();
    h.cpu_features.clear();
    assert!(check_arch(&h, &[(1, &t)], &host, CpuPolicy::Compatible).is_empty());
}

#[test]
fn thread_debugregs_are_checked_with_host_limit() {
    let host = spr();
    let mut t = thread(&host, 0x3, USER_CS_64);
    t.debugregs = [0xffff_ffff_8000_0000, 0, 0, 0, 0, 1 | (1 << 16)];
    let h = build_arch_header(&[&t], &host);
    let p = check_arch(&h, &[(42, &t)], &host, CpuPolicy::Compatible);
    assert_eq!(codes(&p), [ProblemCode::DebugregAddress]);
    assert!(
        p[0].message
            .starts_with("thread 42: hardware watchpoint DR0"),
        "{}",
        p[0].message
    );
}

#[test]
fn policy_parses_and_prints() {
    for p in CpuPolicy::ALL {
        assert_eq!(p.to_string().parse::<CpuPolicy>().unwrap(), p);
    }
    assert_eq!("Strict".parse::<CpuPolicy>().unwrap(), CpuPolicy::Strict);
    assert_eq!(CpuPolicy::default(), CpuPolicy::Compatible);
    let e = "loose".parse::<CpuPolicy>().unwrap_err();
    assert!(e.to_string().contains("strict, compatible or ignore"));
}

#[test]
fn manifest_lists_requirements() {
    let host = spr();
    let a = thread(&host, 0x600e7, USER_CS_64);
    let b = thread(&host, 0x3, USER_CS_32);
    let mut h = build_arch_header(&[&a, &b], &host);
    h.vdso_size = 8192;
    h.vdso_hash = 0xabc;
    let m = requirements_manifest(&h);
    assert_eq!(m["machine"], "x86_64");
    assert_eq!(m["word_sizes"], json!([64, 32]));
    assert_eq!(m["abis"], json!(["x86_64", "ia32"]));
    let comps: Vec<&str> = m["xsave"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        comps,
        [
            "x87",
            "sse",
            "avx",
            "avx512_opmask",
            "zmm_hi256",
            "hi16_zmm",
            "amx_tilecfg",
            "amx_tiledata"
        ]
    );
    assert_eq!(m["xsave"]["components"][7]["index"], 18);
    let feats: Vec<&str> = m["cpu_features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(feats.contains(&"avx512f") && feats.contains(&"amx_tile"));
    assert!(
        !feats.contains(&"erms"),
        "informational features are not required"
    );
    assert!(
        m["cpu_features_strict"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "erms")
    );
    let kernel: Vec<&str> = m["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(kernel, ["ia32-emulation", "xsave", "amx-permission"]);
    assert_eq!(m["vdso"]["size"], 8192);
}

#[test]
fn this_host_restores_its_own_state() {
    // A thread state shaped like this host's NT_X86_XSTATE converts to itself.
    let host = HostCaps::detect();
    if host.kernel_xcr0 == 0 {
        return;
    }
    let t = thread(&host, host.xcr0 & 0x7, USER_CS_64);
    let h = build_arch_header(&[&t], &host);
    assert!(check_arch(&h, &[(1, &t)], &host, CpuPolicy::Strict).is_empty());
    let out = convert_xsave(&t.xsave, &XsaveLayout::from_header(&h), &host).unwrap();
    assert_eq!(out, t.xsave);
}
