//! End-to-end test of an image from another CPU: the image an Intel AVX-512/AMX host
//! wrote, read from `shared/images/intel-amx` next to the checkout (or
//! `$CKPT_TEST_SHARED_DIR/images/intel-amx`), is refused by `ckpt check` and `ckpt
//! restore` for what this CPU lacks (skipped, saying so, when that directory is absent).
//!
//! Needs root (restoring PIDs). Run with cargo-nextest, one process per test (see
//! README.md).

mod common;

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use common::arch::*;
use common::*;

// ---------------------------------------------------------------------------------------
// An image from another CPU: shared/images/intel-amx

/// `shared/images/REL` next to the checkout (the directory CARGO_MANIFEST_DIR is in),
/// or under `$CKPT_TEST_SHARED_DIR/images` when set; None (said loudly) when absent.
fn shared_image(rel: &str) -> Option<std::path::PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = Vec::new();
    if let Some(d) = std::env::var_os("CKPT_TEST_SHARED_DIR").filter(|d| !d.is_empty()) {
        roots.push(std::path::PathBuf::from(d));
    }
    for dir in [
        manifest.to_path_buf(),
        manifest.canonicalize().unwrap_or_default(),
    ] {
        if let Some(parent) = dir.parent() {
            roots.push(parent.join("shared"));
        }
    }
    let found = roots
        .iter()
        .map(|r| r.join("images").join(rel))
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "\n**********\nSKIPPED: shared image {rel} not found (looked under {roots:?}); \
             this test needs the shared/ directory next to the checkout\n**********\n"
        );
    }
    found
}

/// Problem codes of `check --json` that are about the CPU (the arch header's checks).
const CPU_PROBLEM_CODES: &[&str] = &[
    "machine-mismatch",
    "ia32-unsupported",
    "xsave-unavailable",
    "xsave-component-missing",
    "xsave-layout-mismatch",
    "xsave-corrupt",
    "mxcsr-unsupported",
    "cpu-feature-missing",
    "header-corrupt",
    "amx-permission-unavailable",
];

/// The image an Intel Xeon with AVX-512 and AMX wrote (shared/images/intel-amx: a static
/// program with AMX permission and AVX-512 and AMX tile state in use; see its README).
/// `inspect` shows its architecture header; `check` and `restore` list exactly the CPU
/// problems this host has with it, derived from the image (components in use, AMX
/// permission, the dump host's features) and this host's CPU: on a host without AMX
/// (or AVX-512), each missing feature, the permission it cannot grant and the missing
/// components in use; on one with everything, none. `--cpu-policy ignore` leaves only
/// the state in use. The restore refuses before creating anything.
#[test]
fn an_image_from_an_intel_amx_host_is_refused_for_what_this_cpu_lacks() {
    let ctx = Ctx::new("an_image_from_an_intel_amx_host_is_refused_for_what_this_cpu_lacks");
    let Some(img) = shared_image("intel-amx/amx-avx512.img") else {
        return;
    };
    // The image, as its README describes it.
    let cpu = image_cpu(&ctx, &img);
    let j = ctx.inspect_json(&img);
    let perm = j
        .pointer("/arch/xcomp_perm")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("inspect --json has no arch.xcomp_perm: {}", j["arch"]));
    assert_eq!(
        cpu.used & (XSAVE_AVX512 | XSAVE_AMX),
        XSAVE_AVX512 | XSAVE_AMX,
        "the image's task used AVX-512 and AMX state, says its README; the image says \
         {:#x}",
        cpu.used
    );
    assert_ne!(perm & (1 << 18), 0, "AMX permission granted: {perm:#x}");
    for f in ["avx512f", "amx_tile"] {
        assert!(cpu.had(f), "the dump host had {f}: {:?}", cpu.features);
    }
    let ins = ctx.ckpt(&[OsStr::new("inspect"), img.as_os_str()]);
    ins.assert_ok();
    let out = ins.stdout_text();
    let line = |start: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("inspect shows no `{start}` line:\n{out}"))
            .to_string()
    };
    let in_use = line("xsave components in use");
    for c in [
        "avx512_opmask (5)",
        "zmm_hi256 (6)",
        "hi16_zmm (7)",
        "amx_tilecfg (17)",
        "amx_tiledata (18)",
    ] {
        assert!(in_use.contains(c), "inspect should list {c}: {in_use}");
    }
    let perm_line = line("AMX permission");
    assert!(
        perm_line.contains("granted") && !perm_line.contains("not granted"),
        "{perm_line}"
    );
    let feats = line("CPU features of the dump host");
    for f in ["avx512f", "amx_tile", "amx_int8"] {
        assert!(
            feats.split_whitespace().any(|w| w == f),
            "inspect should list the dump host's {f}: {feats}"
        );
    }

    // What this host lacks of it (with the mask of the environment, as ckpt sees it).
    let host = ckpt::arch::HostCaps::detect_with_env_mask().expect("CKPT_HOST_MASK");
    let missing_state = cpu.used & !host.xcr0 & !3;
    let amx_refused = perm & (1 << 18) != 0 && host.xcr0 & (1 << 18) == 0;
    let v = check_json(&ctx, &img, &[], &[]);
    let required: Vec<String> = v
        .pointer("/requirements/cpu_features")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("check --json has no requirements.cpu_features: {v}"))
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect();
    let missing_features: Vec<&String> = required.iter().filter(|f| !host.has(f)).collect();
    if !host.has("amx_tile") {
        assert!(
            amx_refused && missing_state & XSAVE_AMX == XSAVE_AMX,
            "a host without AMX has no AMX state enabled (XCR0 {:#x})",
            host.xcr0
        );
        assert!(missing_features.iter().any(|f| *f == "amx_tile"));
    }
    if !host.has("avx512f") {
        assert_eq!(
            missing_state & XSAVE_AVX512,
            XSAVE_AVX512,
            "XCR0 {:#x}",
            host.xcr0
        );
        assert!(missing_features.iter().any(|f| *f == "avx512f"));
    }
    eprintln!(
        "this host: XCR0 {:#x}, AVX-512F {}, AMX-TILE {}; expected: state missing {:#x}, AMX \
         permission refused {amx_refused}, features missing {missing_features:?}",
        host.xcr0,
        host.has("avx512f"),
        host.has("amx_tile"),
        missing_state
    );

    // The CPU problems, exactly: one per kind, each naming what is missing.
    let cpu_problems = |v: &Value| -> Vec<(String, String)> {
        problems(v)
            .into_iter()
            .filter(|(c, _)| CPU_PROBLEM_CODES.contains(&c.as_str()))
            .collect()
    };
    let got = cpu_problems(&v);
    assert_eq!(v["restorable"], Value::Bool(false), "{v}");
    let mut want_codes = Vec::new();
    if !missing_features.is_empty() {
        want_codes.push("cpu-feature-missing");
    }
    if amx_refused {
        want_codes.push("amx-permission-unavailable");
    }
    if missing_state != 0 {
        want_codes.push("xsave-component-missing");
    }
    let mut got_codes: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    got_codes.sort();
    want_codes.sort();
    assert_eq!(
        got_codes, want_codes,
        "the CPU problems of check --json: {got:?}"
    );
    let message = |code: &str| -> &str {
        got.iter()
            .find(|(c, _)| c == code)
            .map(|(_, m)| m.as_str())
            .unwrap_or_default()
    };
    let features_msg = message("cpu-feature-missing");
    for f in &missing_features {
        let pretty = ckpt::arch::cpu::pretty_name(f);
        assert!(
            features_msg.contains(pretty),
            "the missing-feature problem should name {pretty}: {features_msg}"
        );
    }
    if amx_refused {
        let m = message("amx-permission-unavailable");
        assert!(
            m.contains("ARCH_REQ_XCOMP_PERM")
                && (m.contains("does not offer AMX") || m.contains("mask hides AMX")),
            "{m}"
        );
    }
    let state_msg = message("xsave-component-missing");
    let mut groups = Vec::new();
    for (group, name) in [(XSAVE_AVX512, "AVX-512"), (XSAVE_AMX, "AMX")] {
        if missing_state & group != 0 {
            groups.push(format!(
                "{name} state ({})",
                xsave_component_list(missing_state & group)
            ));
        }
    }
    for i in (2..64).filter(|i| missing_state & !(XSAVE_AVX512 | XSAVE_AMX) & (1 << i) != 0) {
        groups.push(format!("({})", xsave_component_list(1 << i)));
    }
    // (CKPT_HOST_MASK can simulate a host without AVX-512: ckpt then says the mask hides it.)
    let why = if missing_state & !host.masked_xcr0 == 0 {
        "this host's CPU mask hides"
    } else {
        "this CPU does not provide"
    };
    for g in &groups {
        assert!(
            state_msg.contains(g) && state_msg.contains(why),
            "the missing-state problem should say {g:?} and {why:?}: {state_msg}"
        );
    }
    // The executable and its output file are missing here too (README).
    if !Path::new("/var/tmp/ckpt-fixture").exists() {
        assert!(
            problems(&v)
                .iter()
                .any(|(c, m)| c == "file-missing" && m.contains("/var/tmp/ckpt-fixture/amx-avx512")),
            "check should list the missing executable: {v}"
        );
    }

    // The human check says the same.
    let c = ckpt_args(&ctx, &["check"], &img, &[]);
    let err = text(&c.stderr);
    assert_eq!(c.status.code(), Some(1), "ckpt check:\n{err}");
    for (_, m) in &got {
        assert!(
            err.contains(m.as_str()),
            "ckpt check should say {m:?}:\n{err}"
        );
    }

    // ignore: only the state in use can refuse.
    let ignore = check_json(&ctx, &img, &["--cpu-policy", "ignore"], &[]);
    let got_ignore = cpu_problems(&ignore);
    let want_ignore: Vec<(String, String)> = got
        .iter()
        .filter(|(c, _)| c == "xsave-component-missing")
        .cloned()
        .collect();
    assert_eq!(
        got_ignore, want_ignore,
        "--cpu-policy ignore keeps only the missing state in use"
    );

    // restore refuses, saying the same, before creating anything.
    let fixture = Path::new("/var/tmp/ckpt-fixture");
    let fixture_existed = fixture.exists();
    let pid = 26720;
    let pid_existed = pid_exists(pid);
    let listing = ctx.listing();
    let r = ckpt_args(&ctx, &["restore"], &img, &[]);
    let rerr = text(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "ckpt restore:\n{rerr}");
    assert!(!rerr.contains("panicked"), "{rerr}");
    for (_, m) in &got {
        assert!(
            rerr.contains(m.as_str()),
            "ckpt restore should say {m:?}:\n{rerr}"
        );
    }
    assert!(r.stdout.is_empty(), "restore printed: {}", text(&r.stdout));
    assert_eq!(
        ctx.listing(),
        listing,
        "the refused restore left files behind"
    );
    if !fixture_existed {
        assert!(
            !fixture.exists(),
            "the refused restore created {}",
            fixture.display()
        );
    }
    if !pid_existed {
        assert_no_process(pid, "the image's process after the refused restore");
    }
    let strays = stray_children(&[]);
    assert!(
        strays.is_empty(),
        "the refused restore left processes: {strays:?}"
    );
}
