//! End-to-end tests of the CPU side (issue 3): `ckpt check` / `ckpt restore` refuse an
//! image whose task used AVX state on a host that (by `CKPT_HOST_MASK`) lacks it, a
//! crafted image claiming AVX-512 and AMX state, AMX permission this host cannot grant;
//! `--cpu-mask` and `--cpu-policy` decide what is refused. The image an Intel
//! AVX-512/AMX host wrote is in `e2e_intel_amx.rs`.
//!
//! The target is `tests/targets/avx.c`. Needs root (ptrace of arbitrary processes,
//! restoring PIDs). Run with cargo-nextest, one process per test (see README.md).

mod common;

use std::ffi::OsStr;

use serde_json::Value;

use common::arch::*;
use common::*;

// ---------------------------------------------------------------------------------------
// CPU features: refusals on a (masked) host that lacks what the image's task used

#[test]
fn check_and_restore_refuse_avx_state_on_a_host_masked_without_avx() {
    let ctx = Ctx::new("check_and_restore_refuse_avx_state_on_a_host_masked_without_avx");
    let spec = Spec::new(target("avx")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 10, "avx");

    // The premise: the task had AVX (ymm) state in use (xsave component 2).
    let j = ctx.inspect_json(&img);
    let used = j
        .pointer("/arch/xfeatures_used")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no arch.xfeatures_used in inspect --json: {}", j["arch"]));
    assert_ne!(
        used & 4,
        0,
        "the avx target was dumped with its ymm state in use, but the image says xsave \
         components {used:#x}"
    );
    let c = ckpt_env(&ctx, &[OsStr::new("check"), img.as_os_str()], &[]);
    assert_eq!(
        c.status.code(),
        Some(0),
        "ckpt check without a mask; stderr:\n{}",
        text(&c.stderr)
    );

    // (mask, words the refusal must use)
    let cases: &[(&str, &[&str])] = &[
        ("no-avx2", &["AVX2"]),
        ("no-avx", &["AVX"]),
        ("no-xsave-comp=2", &["AVX", "component 2"]),
    ];
    for &(mask, words) in cases {
        let env = [("CKPT_HOST_MASK", mask)];
        let c = ckpt_env(&ctx, &[OsStr::new("check"), img.as_os_str()], &env);
        let err = text(&c.stderr);
        assert_eq!(
            c.status.code(),
            Some(1),
            "ckpt check with CKPT_HOST_MASK={mask}; stderr:\n{err}"
        );
        assert!(
            !err.contains("panicked"),
            "ckpt check panicked with CKPT_HOST_MASK={mask}:\n{err}"
        );
        for w in words {
            assert!(
                err.contains(w),
                "ckpt check with CKPT_HOST_MASK={mask} should say {w:?}:\n{err}"
            );
        }

        let listing = ctx.listing();
        let r = ckpt_env(&ctx, &[OsStr::new("restore"), img.as_os_str()], &env);
        let rerr = text(&r.stderr);
        assert_eq!(
            r.status.code(),
            Some(1),
            "ckpt restore with CKPT_HOST_MASK={mask}; stderr:\n{rerr}"
        );
        assert!(
            words.iter().all(|w| rerr.contains(w)),
            "ckpt restore with CKPT_HOST_MASK={mask} should say {words:?}:\n{rerr}"
        );
        assert!(
            r.stdout.is_empty(),
            "the refused restore (CKPT_HOST_MASK={mask}) ran the program:\n{}",
            text(&r.stdout)
        );
        assert_no_process(pid, &format!("restore refused with CKPT_HOST_MASK={mask}"));
        assert_eq!(
            ctx.listing(),
            listing,
            "the refused restore (CKPT_HOST_MASK={mask}) left files behind"
        );
        let strays = stray_children(&[reference.pid]);
        assert!(
            strays.is_empty(),
            "the refused restore (CKPT_HOST_MASK={mask}) left processes: {strays:?}"
        );
    }

    // Unmasked, the image restores and the program goes on with its ymm15 intact.
    let fin = restore_to_end(&ctx, &img, pid, &before, "avx");
    let reference = reference.finish();
    assert_eq!(reference.status.code(), Some(0));
    assert_same_output(
        "avx (dumped asleep with ymm state in use, refused twice, restored)",
        &reference.stdout,
        &fin.stdout,
    );
    assert_eq!(fin.status.code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// A crafted image: what a bigger machine would write

/// This machine has no AVX-512 and no AMX: an image whose header says its task used
/// their state (as one dumped on such a machine would) must be refused by `check` and by
/// `restore` before anything is created, every problem named, and the same image
/// without those claims must still restore.
#[test]
fn check_and_restore_refuse_a_crafted_image_claiming_avx512_and_amx_state() {
    let ctx = Ctx::new("check_and_restore_refuse_a_crafted_image_claiming_avx512_and_amx_state");
    // A host with AVX-512 or AMX is masked without them (the claims must be refused on
    // any host; on one without them the mask changes nothing).
    let mask = [("CKPT_HOST_MASK", "no-avx512,no-amx")];
    let spec = Spec::new(target("avx")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 8, "craft");
    let crafted = ctx.path("crafted.img");
    rewrite_image(&img, &crafted, |c| {
        // xsave components 5-7 (AVX-512 opmask, ZMM_Hi256, Hi16_ZMM) and 17-18 (AMX)
        // in use, and the dump host's features.
        c.arch.xfeatures_used |= XSAVE_AVX512 | XSAVE_AMX;
        c.arch.xcr0 |= XSAVE_AVX512 | XSAVE_AMX;
        for f in ["avx512f", "avx512bw", "amx_tile"] {
            if !c.arch.cpu_features.iter().any(|x| x == f) {
                c.arch.cpu_features.push(f.to_string());
            }
        }
        // Such a host records where it saved them: components this host lacks are laid
        // out after the others, with their architectural sizes (as on Intel CPUs).
        for (i, size) in [(5, 64), (6, 512), (7, 1024), (17, 64), (18, 8192)] {
            if !c.arch.xsave_layout.iter().any(|&(j, _, _)| j == i) {
                let at = c.arch.xsave_size.next_multiple_of(64);
                c.arch.xsave_layout.push((i, at, size));
                c.arch.xsave_size = at + size;
            }
        }
    });
    let c = ckpt_env(&ctx, &[OsStr::new("check"), crafted.as_os_str()], &mask);
    let err = text(&c.stderr);
    assert_eq!(
        c.status.code(),
        Some(1),
        "check of the crafted image:\n{err}"
    );
    for w in ["AVX-512", "AMX"] {
        assert!(err.contains(w), "check should name {w}:\n{err}");
    }
    let j = ckpt_env(
        &ctx,
        &[
            OsStr::new("check"),
            OsStr::new("--json"),
            crafted.as_os_str(),
        ],
        &mask,
    );
    let v: Value = serde_json::from_slice(&j.stdout).expect("check --json is JSON");
    assert_eq!(v["restorable"], Value::Bool(false));
    assert!(
        v["problems"].as_array().is_some_and(|p| p.len() >= 2),
        "every problem listed: {v}"
    );
    // Exactly the problems of the claims, whatever this host has: the header is
    // consistent (no header-corrupt), so the refusal is the missing state and features.
    let mut codes: Vec<String> = problems(&v).into_iter().map(|(c, _)| c).collect();
    codes.sort();
    assert_eq!(
        codes,
        ["cpu-feature-missing", "xsave-component-missing"],
        "the crafted image's problems: {v}"
    );
    // The requirements manifest says what a host needs: the xsave components in use
    // (the avx target's x87, SSE and AVX state, and the claimed AVX-512 and AMX), the
    // word size, the claimed CPU features, and the kernel facilities.
    let req = &v["requirements"];
    let comps: Vec<(u64, &str)> = req
        .pointer("/xsave/components")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no requirements.xsave.components: {v}"))
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap_or(99),
                c["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        (2, "avx"),
        (5, "avx512_opmask"),
        (6, "zmm_hi256"),
        (7, "hi16_zmm"),
        (17, "amx_tilecfg"),
        (18, "amx_tiledata"),
    ] {
        assert!(
            comps.contains(&want),
            "requirements.xsave.components should list {want:?}: {comps:?}"
        );
    }
    assert_eq!(
        req["word_sizes"],
        serde_json::json!([64]),
        "word sizes: {req}"
    );
    assert_eq!(req["abis"], serde_json::json!(["x86_64"]), "ABIs: {req}");
    for f in ["avx512f", "avx512bw", "amx_tile", "avx2"] {
        assert!(
            req["cpu_features"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == f)),
            "requirements.cpu_features should list {f}: {req}"
        );
    }
    let kernel = kernel_requirements(&v);
    for k in [
        "xsave",
        "amx-permission",
        "clone3-set-tid",
        "prctl-set-mm-map",
        "map-vdso-64",
        "rseq",
    ] {
        assert!(
            kernel.iter().any(|x| x == k),
            "requirements.kernel should list {k}: {kernel:?}"
        );
    }
    let listing = ctx.listing();
    let r = ckpt_env(&ctx, &[OsStr::new("restore"), crafted.as_os_str()], &mask);
    assert_eq!(r.status.code(), Some(1), "restore of the crafted image");
    assert!(r.stdout.is_empty(), "nothing ran: {}", text(&r.stdout));
    assert_no_process(pid, "after the refused restore");
    assert_eq!(
        ctx.listing(),
        listing,
        "the refused restore left files behind"
    );
    // The untouched image restores and continues exactly.
    let fin = restore_to_end(&ctx, &img, pid, &before, "craft");
    let want = reference.finish();
    assert_same_output("restored avx target", &want.stdout, &fin.stdout);
}

// ---------------------------------------------------------------------------------------
// AMX permission, --cpu-mask and --cpu-policy on the command line, debug registers

/// An image whose processes were granted AMX tile data (ARCH_REQ_XCOMP_PERM) without
/// using it: a host that cannot grant it (this one, or any masked without AMX) refuses
/// it under the default and strict policies, in check and in restore, before anything
/// is created; `--cpu-policy ignore` accepts it and the process continues without the
/// permission. `inspect` shows the permission, the xsave layout and the CPU features.
#[test]
fn amx_permission_this_host_cannot_grant_is_refused_unless_the_policy_is_ignore() {
    let ctx =
        Ctx::new("amx_permission_this_host_cannot_grant_is_refused_unless_the_policy_is_ignore");
    let spec = Spec::new(target("avx")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 8, "amx");
    // What ignore accepts below rests on the image: `no-amx` hides only AMX state (17-18),
    // and the task used none (it never asked for the permission, without which the
    // kernel lets no task use tile data), whatever else it used (AVX-512 state, through
    // glibc, on some CPUs).
    let cpu = image_cpu(&ctx, &img);
    assert_eq!(
        cpu.used & XSAVE_AMX,
        0,
        "the avx target used AMX state without the permission? the image says xsave \
         components {:#x}",
        cpu.used
    );
    let crafted = ctx.path("amxperm.img");
    rewrite_image(&img, &crafted, |c| c.arch.xcomp_perm |= 1 << 18);
    let words = [
        "AMX tile data",
        "ARCH_REQ_XCOMP_PERM",
        "--cpu-policy=ignore",
    ];
    for policy in ["compatible", "strict"] {
        assert_refused(
            &ctx,
            &crafted,
            &["--cpu-mask", "no-amx", "--cpu-policy", policy],
            &[],
            &words,
            (pid, &[reference.pid]),
            &format!("AMX permission under {policy}"),
        );
    }

    // inspect (human) shows what inspect --json has: the permission, the layout and the
    // dump host's CPU features.
    let ins = ctx.ckpt(&[OsStr::new("inspect"), crafted.as_os_str()]);
    ins.assert_ok();
    let out = ins.stdout_text();
    let j = ctx.inspect_json(&crafted);
    let line = |start: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("inspect shows no `{start}` line:\n{out}"))
            .to_string()
    };
    let perm = line("AMX permission");
    assert!(
        perm.contains("granted") && !perm.contains("not granted"),
        "inspect should say the AMX permission was granted: {perm}"
    );
    let feats = line("CPU features of the dump host");
    for f in j["arch"]["cpu_features"].as_array().into_iter().flatten() {
        let f = f.as_str().unwrap_or("?");
        assert!(
            feats.split_whitespace().any(|w| w == f),
            "inspect's CPU features should list {f}: {feats}"
        );
    }
    let layout = line("xsave layout");
    for c in j["arch"]["xsave_layout"].as_array().into_iter().flatten() {
        let (o, sz) = (c[1].as_u64().unwrap_or(0), c[2].as_u64().unwrap_or(0));
        assert!(
            layout.contains(&format!(" at {o}+{sz}")),
            "inspect's xsave layout should show component {c} at {o}+{sz}: {layout}"
        );
    }
    assert!(
        line("xsave components in use").contains("avx (2)"),
        "inspect should name the AVX state in use:\n{out}"
    );
    let plain = ctx.ckpt(&[OsStr::new("inspect"), img.as_os_str()]);
    assert!(
        plain
            .stdout_text()
            .contains("AMX permission (ARCH_REQ_XCOMP_PERM): not granted"),
        "the true image had no AMX permission:\n{}",
        plain.stdout_text()
    );

    // Under --cpu-policy ignore it is accepted, and restored without the permission.
    let ok = ckpt_args(
        &ctx,
        &["check", "--cpu-mask", "no-amx", "--cpu-policy", "ignore"],
        &crafted,
        &[],
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "check --cpu-policy ignore:\n{}",
        text(&ok.stderr)
    );
    let mut r = ctx.restore(
        &crafted,
        &["--cpu-mask", "no-amx", "--cpu-policy", "ignore"],
        In::Null,
    );
    let fin = r.finish();
    assert_no_process(pid, "the restored avx target");
    assert_same_output(
        "avx (granted AMX in the image, restored under --cpu-policy ignore)",
        &reference.finish().stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0), "stderr:\n{}", text(&fin.stderr));
}

/// `--cpu-mask` and `--cpu-policy` on the command line: a mask that hides a critical
/// feature the dump host had refuses the image; `--cpu-policy ignore` accepts it (and it
/// restores and continues) unless the mask also hides xsave state the task used; an
/// informational feature is refused only by `strict`.
///
/// What `no-avx2` hides depends on the dump host (this one) and on what the program
/// used, so the expectations come from the image: on a host with AVX-512, AVX-512F needs
/// AVX2, so masking AVX2 hides AVX-512 and its state (xsave components 5-7); whether the
/// task had that state in use depends on glibc (which takes AVX-512 code paths on some
/// CPUs: its EVEX string functions leave ymm16-31 and the opmask registers in use).
#[test]
fn cpu_mask_and_cpu_policy_options_decide_what_is_refused() {
    let ctx = Ctx::new("cpu_mask_and_cpu_policy_options_decide_what_is_refused");
    let spec = Spec::new(target("avx")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 6, "policy");
    let keep = (pid, &[reference.pid][..]);
    let cpu = image_cpu(&ctx, &img);
    assert!(
        cpu.had("avx2") && cpu.used & 4 != 0,
        "the avx target needs AVX2 and was dumped with its ymm state in use; the image \
         says components {:#x}, features {:?}",
        cpu.used,
        cpu.features
    );
    eprintln!(
        "policy: the image's task used xsave components {:#x}; the dump host's XCR0 is {:#x}",
        cpu.used, cpu.xcr0
    );
    assert_refused(
        &ctx,
        &img,
        &["--cpu-mask", "no-avx2"],
        &[],
        &["AVX2", "hides", "--cpu-policy=ignore"],
        keep,
        "--cpu-mask no-avx2",
    );
    // An informational feature: compatible accepts, strict refuses.
    let info = ["erms", "fsrm", "lm"]
        .into_iter()
        .find(|f| cpu.had(f))
        .expect("the dump host has ERMS, FSRM or long mode");
    let m = format!("no-{info}");
    let ok = ckpt_args(&ctx, &["check", "--cpu-mask", &m], &img, &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "an informational feature ({info}) is not required by the default policy:\n{}",
        text(&ok.stderr)
    );
    assert_refused(
        &ctx,
        &img,
        &["--cpu-mask", &m, "--cpu-policy", "strict"],
        &[],
        &["--cpu-policy=strict requires every CPU feature"],
        keep,
        "--cpu-policy strict",
    );

    // ignore: only the state in use matters. `no-avx2` hides, besides AVX2, the AVX-512
    // state this host has (AVX-512F requires AVX2); if the task used any of it, ignore
    // must still refuse, naming exactly those components and no feature.
    let hidden_state = cpu.xcr0 & XSAVE_AVX512;
    let used_hidden = cpu.used & hidden_state;
    let ignore_avx2 = ["--cpu-mask", "no-avx2", "--cpu-policy", "ignore"];
    let accept_mask = if used_hidden != 0 {
        let err = assert_refused(
            &ctx,
            &img,
            &ignore_avx2,
            &[],
            &[
                "the image's task used AVX-512 state (xsave component",
                "this host's CPU mask hides",
            ],
            keep,
            "--cpu-mask no-avx2 --cpu-policy ignore, AVX-512 state in use",
        );
        assert!(
            !err.contains("illegal instruction") && !err.contains("--cpu-policy=ignore"),
            "--cpu-policy ignore must not refuse for a missing feature:\n{err}"
        );
        let v = check_json(&ctx, &img, &ignore_avx2, &[]);
        let want = format!(
            "the image's task used AVX-512 state ({}); this host's CPU mask hides",
            xsave_component_list(used_hidden)
        );
        let got = problems(&v);
        assert!(
            got.len() == 1 && got[0].0 == "xsave-component-missing" && got[0].1.starts_with(&want),
            "--cpu-policy ignore with no-avx2 refuses for the AVX-512 state in use only \
             ({want:?}): {got:?}"
        );
        // A critical feature whose mask hides no state: AVX-512VL (nothing needs it).
        ["avx512vl", "avx512bw"]
            .into_iter()
            .find(|f| cpu.had(f))
            .unwrap_or_else(|| {
                panic!(
                    "the task used AVX-512 state but the dump host has neither AVX-512VL nor \
                     AVX-512BW: {:?}",
                    cpu.features
                )
            })
    } else {
        "avx2"
    };
    let pretty = match accept_mask {
        "avx2" => "AVX2",
        "avx512vl" => "AVX-512VL",
        _ => "AVX-512BW",
    };
    let mask = format!("no-{accept_mask}");
    if accept_mask != "avx2" {
        // The default policy refuses it as it refused AVX2.
        assert_refused(
            &ctx,
            &img,
            &["--cpu-mask", &mask],
            &[],
            &[pretty, "hides", "--cpu-policy=ignore"],
            keep,
            &format!("--cpu-mask {mask}"),
        );
    }
    let ignore = ["--cpu-mask", mask.as_str(), "--cpu-policy", "ignore"];
    let ok = ckpt_args(&ctx, &[&["check"][..], &ignore].concat(), &img, &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "--cpu-policy ignore accepts a missing {pretty} (the task used xsave components \
         {:#x}, none of them hidden):\n{}",
        cpu.used,
        text(&ok.stderr)
    );
    let mut r = ctx.restore(&img, &ignore, In::Null);
    let fin = r.finish();
    assert_same_output(
        &format!("avx (restored with --cpu-mask {mask} --cpu-policy ignore)"),
        &reference.finish().stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0), "stderr:\n{}", text(&fin.stderr));
    assert_no_process(pid, "the restored avx target");
}
