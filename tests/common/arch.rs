//! Helpers shared by the architecture, CPU and debug register tests (`e2e_arch.rs`,
//! `e2e_cpu.rs`, `e2e_intel_amx.rs`, `e2e_debugreg.rs`): dumping a target asleep,
//! restoring it to its end, rewriting an image's metadata, refusals before anything is
//! created, and what an image says of its tasks' CPU state.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use serde_json::Value;

use super::*;

/// System calls a target may be sleeping in: x86-64 `nanosleep` (35) and
/// `clock_nanosleep` (230); ia32 `nanosleep` (162), `clock_nanosleep` (267) and
/// `clock_nanosleep_time64` (407) — /proc/PID/syscall shows a 32-bit task's own numbers.
pub const SLEEP_SYSCALLS: &[i64] = &[35, 230, 162, 267, 407];
/// `ckpt ARGS` with extra environment variables, to its end (bounded).
pub fn ckpt_env(ctx: &Ctx, args: &[&OsStr], env: &[(&str, &str)]) -> Finished {
    ctx.spawn(&ckpt_spec(ctx, args, env)).finish()
}

/// What [`ckpt_env`] runs, for a caller that starts it and waits for it later.
pub fn ckpt_spec(ctx: &Ctx, args: &[&OsStr], env: &[(&str, &str)]) -> Spec {
    let mut spec = Spec::new(ckpt_bin())
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    for a in args {
        spec = spec.arg(a);
    }
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    spec
}
/// Start `spec` alongside its reference run; once it printed `k` lines and is asleep in
/// nanosleep (so the dump interrupts a sleep that must be restarted), dump it to
/// `tag.img` (killing it). Returns the reference run, what it printed, the image.
pub fn run_and_dump_asleep(
    ctx: &Ctx,
    spec: &Spec,
    k: usize,
    tag: &str,
) -> (Proc, Vec<u8>, std::path::PathBuf, i32) {
    // The reference runs alongside: its output does not depend on timing or load.
    let reference = ctx.spawn(spec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    wait_in_any_syscall(t.pid, SLEEP_SYSCALLS, tag);
    let pid = t.pid;
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    (reference, before, img, pid)
}

/// Restore `img` attached and return the whole output (`before` + what the restored
/// process printed) and its exit status, asserting nothing is left afterwards.
pub fn restore_to_end(ctx: &Ctx, img: &Path, pid: i32, before: &[u8], tag: &str) -> Finished {
    let mut r = ctx.restore(img, &[], In::Null);
    let fin = r.finish();
    assert_no_process(pid, tag);
    Finished {
        status: fin.status,
        stdout: [before, &fin.stdout[..]].concat(),
        stderr: fin.stderr,
    }
}
/// Rewrite an image's metadata with `edit`, keeping every other record as it was (the
/// checksums and the end record are recomputed by the writer).
pub fn rewrite_image(src: &Path, dst: &Path, edit: impl FnOnce(&mut ckpt::model::Checkpoint)) {
    use ckpt::image::{ImageReader, ImageWriter, decode_meta, tag};
    let bytes = fs::read(src).expect("read image");
    let mut r = ImageReader::new(bytes.as_slice()).expect("image header");
    let mut w = ImageWriter::new(Vec::new()).expect("writer");
    let mut edit = Some(edit);
    while let Some(rec) = r.next_record().expect("image record") {
        if rec.tag == tag::CHECKPOINT {
            let mut c: ckpt::model::Checkpoint =
                decode_meta(rec.tag, rec.payload).expect("metadata");
            if let Some(e) = edit.take() {
                e(&mut c);
            }
            w.write_meta(tag::CHECKPOINT, &c).expect("write metadata");
        } else {
            w.write_record(
                rec.tag,
                rec.flags,
                rec.arg,
                rec.payload,
                rec.tag == tag::PAGES,
            )
            .expect("copy record");
        }
    }
    fs::write(dst, w.finish().expect("finish")).expect("write crafted image");
}
// ---------------------------------------------------------------------------------------
// Refusals before anything is created: helpers

/// `ckpt ARGS...` with `env`, in the test's directory.
pub fn ckpt_args(ctx: &Ctx, args: &[&str], img: &Path, env: &[(&str, &str)]) -> Finished {
    let mut v: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    v.push(img.as_os_str());
    ckpt_env(ctx, &v, env)
}

/// `ckpt check IMG EXTRA...` and `ckpt restore IMG EXTRA...` (with `env`) both refuse
/// the image, exit 1, and say every one of `words`; the restore creates nothing: no
/// output, no process at `pid` (unless in `keep`), no file in the test directory, no
/// stray child (other than `keep`). Returns check's stderr.
pub fn assert_refused(
    ctx: &Ctx,
    img: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    words: &[&str],
    (pid, keep): (i32, &[i32]),
    what: &str,
) -> String {
    let c = ckpt_args(ctx, &[&["check"], extra].concat(), img, env);
    let err = text(&c.stderr);
    assert_eq!(
        c.status.code(),
        Some(1),
        "{what}: ckpt check; stderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "{what}: ckpt check panicked:\n{err}"
    );
    for w in words {
        assert!(
            err.contains(w),
            "{what}: ckpt check should say {w:?}:\n{err}"
        );
    }
    let listing = ctx.listing();
    let r = ckpt_args(ctx, &[&["restore"], extra].concat(), img, env);
    let rerr = text(&r.stderr);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{what}: ckpt restore; stderr:\n{rerr}"
    );
    for w in words {
        assert!(
            rerr.contains(w),
            "{what}: ckpt restore should say {w:?}:\n{rerr}"
        );
    }
    assert!(
        r.stdout.is_empty(),
        "{what}: the refused restore ran the program:\n{}",
        text(&r.stdout)
    );
    if !keep.contains(&pid) {
        assert_no_process(pid, &format!("{what}: after the refused restore"));
    }
    assert_eq!(
        ctx.listing(),
        listing,
        "{what}: the refused restore left files behind"
    );
    let strays = stray_children(keep);
    assert!(
        strays.is_empty(),
        "{what}: the refused restore left processes: {strays:?}"
    );
    err
}

/// `ckpt check --json IMG EXTRA...` (with `env`), parsed.
pub fn check_json(ctx: &Ctx, img: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let j = ckpt_args(ctx, &[&["check", "--json"], extra].concat(), img, env);
    serde_json::from_slice(&j.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json is not JSON ({e}):\n{}\nstderr:\n{}",
            text(&j.stdout),
            text(&j.stderr)
        )
    })
}

/// The names in `requirements.kernel` of `check --json`.
pub fn kernel_requirements(v: &Value) -> Vec<String> {
    v.pointer("/requirements/kernel")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("check --json has no requirements.kernel array: {v}"))
        .iter()
        .map(|k| {
            k["name"]
                .as_str()
                .unwrap_or_else(|| panic!("a kernel requirement without a name: {k}"))
                .to_string()
        })
        .collect()
}

/// The problems of `check --json` output: (code, message), in order.
pub fn problems(v: &Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("check --json has no problems array: {v}"))
        .iter()
        .map(|p| {
            (
                p["code"].as_str().unwrap_or_default().to_string(),
                p["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// xsave components 5-7: AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM state.
pub const XSAVE_AVX512: u64 = 0b111 << 5;
/// xsave components 17-18: AMX tile configuration and tile data.
pub const XSAVE_AMX: u64 = 0b11 << 17;

/// What the image says of its tasks' CPU state (`inspect --json`'s `arch`): the xsave
/// components they used (non-init state), the dump host's XCR0 and its CPU features.
pub struct ImageCpu {
    pub used: u64,
    pub xcr0: u64,
    pub features: Vec<String>,
}

pub fn image_cpu(ctx: &Ctx, img: &Path) -> ImageCpu {
    let j = ctx.inspect_json(img);
    let num = |k: &str| {
        j.pointer(&format!("/arch/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("inspect --json has no arch.{k}: {}", j["arch"]))
    };
    let features = j
        .pointer("/arch/cpu_features")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("inspect --json has no arch.cpu_features: {}", j["arch"]))
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect();
    ImageCpu {
        used: num("xfeatures_used"),
        xcr0: num("xcr0"),
        features,
    }
}

impl ImageCpu {
    pub fn had(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }
}

/// How ckpt's messages name the xsave components of `mask`: "xsave component 2",
/// "xsave components 5-7", "xsave components 5, 7, 17-18".
pub fn xsave_component_list(mask: u64) -> String {
    let bits: Vec<u32> = (0..64).filter(|i| mask & (1u64 << i) != 0).collect();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &b in &bits {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => runs.push((b, b)),
        }
    }
    let list: Vec<String> = runs
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    let noun = if bits.len() == 1 {
        "xsave component"
    } else {
        "xsave components"
    };
    format!("{noun} {}", list.join(", "))
}
