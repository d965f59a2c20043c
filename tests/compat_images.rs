//! Old images keep working (issue 12; docs/ARCHITECTURE.md, "Image compatibility").
//!
//! `tests/compat/images/` holds images dumped by earlier versions of ckpt (made by
//! `tests/compat/make-corpus`, described in its `MANIFEST.json`). Each must still:
//!
//! 1. decode: `ckpt inspect --json` succeeds and shows the recorded process and thread
//!    counts;
//! 2. pass `ckpt check` as far as the image itself goes: the only problems allowed are
//!    facts about this host (its PIDs, vDSO, CPU, kernel, and the executable when it is not
//!    the one dumped), never a decode error or a structural one. With the executable
//!    absent, check must name exactly that file as missing;
//! 3. restore and print what the manifest says, when the target rebuilds byte-identically
//!    here (same compiler and static libc) and the host checks pass. A rebuild that
//!    differs skips only this part, saying so.
//!
//! The targets ran from fixed paths under /tmp/ckpt-compat (images record the executable's
//! path); the test puts the rebuilt executable there with its recorded mtime. A lock file
//! keeps two test processes from using that directory at once. Needs root.

// Test harness code: raw libc calls on the test's own files are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The corpus directory in the source tree.
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/images")
}

/// Problem codes of `ckpt check` that describe this host rather than the image: an image
/// that passed on its dump host may get them elsewhere. Any other code fails the test.
const HOST_CODES: &[&str] = &[
    // its PIDs are in use here (restore below uses --new-pidns)
    "pid-taken",
    // another kernel's vDSO: the program may hold pointers into it
    "vdso-differs",
    // a CPU with fewer features, other xsave components or another xsave layout
    "cpu-feature-missing",
    "xsave-component-missing",
    "xsave-unavailable",
    "xsave-layout-mismatch",
    "mxcsr-unsupported",
    "amx-permission-unavailable",
    // a kernel without ia32 emulation, or without a facility restore needs
    "ia32-unsupported",
    "kernel-facility-missing",
];

/// Problem codes about the executable (judged separately: they must name it).
const EXE_CODES: &[&str] = &["file-missing", "file-changed"];

/// One image of the manifest.
struct Entry {
    name: String,
    image: PathBuf,
    build: Vec<String>,
    compiler: String,
    exe: PathBuf,
    sha256: String,
    mtime: i64,
    cwd: PathBuf,
    dirs: Vec<PathBuf>,
    processes: u64,
    threads: u64,
    output: PathBuf,
    exit_status: i32,
    /// `ckpt inspect --json` of the image by the ckpt that made it.
    decoded: PathBuf,
}

fn field<'a>(e: &'a Value, key: &str) -> &'a Value {
    e.get(key)
        .unwrap_or_else(|| panic!("MANIFEST.json: an entry has no {key:?}: {e}"))
}

fn string(e: &Value, key: &str) -> String {
    field(e, key)
        .as_str()
        .unwrap_or_else(|| panic!("MANIFEST.json: {key:?} is not a string: {e}"))
        .to_string()
}

fn strings(e: &Value, key: &str) -> Vec<String> {
    field(e, key)
        .as_array()
        .unwrap_or_else(|| panic!("MANIFEST.json: {key:?} is not a list: {e}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("MANIFEST.json: {key:?} holds a non-string: {e}"))
                .to_string()
        })
        .collect()
}

fn int(e: &Value, key: &str) -> i64 {
    field(e, key)
        .as_i64()
        .unwrap_or_else(|| panic!("MANIFEST.json: {key:?} is not an integer: {e}"))
}

fn manifest() -> Vec<Entry> {
    let path = corpus().join("MANIFEST.json");
    let doc: Value = serde_json::from_slice(
        &fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    doc.get("images")
        .and_then(Value::as_array)
        .expect("MANIFEST.json has no \"images\" list")
        .iter()
        .map(|e| Entry {
            name: string(e, "name"),
            image: corpus().join(string(e, "image")),
            build: strings(e, "build"),
            compiler: string(e, "compiler"),
            exe: PathBuf::from(string(e, "exe")),
            sha256: string(e, "exe_sha256"),
            mtime: int(e, "exe_mtime"),
            cwd: PathBuf::from(string(e, "cwd")),
            dirs: strings(e, "dirs").into_iter().map(PathBuf::from).collect(),
            processes: int(e, "processes") as u64,
            threads: int(e, "threads") as u64,
            output: corpus().join(string(e, "restored_output")),
            exit_status: int(e, "exit_status") as i32,
            decoded: corpus().join(string(e, "decoded")),
        })
        .collect()
}

/// Hold the lock on /tmp/ckpt-compat for as long as the returned file is open.
fn lock_fixed_dir() -> File {
    let f = File::create("/tmp/ckpt-compat.lock").expect("create /tmp/ckpt-compat.lock");
    // SAFETY: flock on a descriptor we own; released when `f` is closed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Rebuild the entry's executable into `out` with its recorded command (run from the
/// source tree, as make-corpus ran it); Err says why it could not be built.
fn rebuild(e: &Entry, out: &Path) -> Result<(), String> {
    let args: Vec<String> = e
        .build
        .iter()
        .map(|a| {
            if a == "{exe}" {
                out.to_string_lossy().into_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let (prog, rest) = args.split_first().ok_or("empty build command")?;
    let r = Command::new(prog)
        .args(rest)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|err| format!("cannot run {prog}: {err}"))?;
    if !r.status.success() {
        return Err(format!(
            "`{}` failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    Ok(())
}

fn compiler_version(e: &Entry) -> String {
    e.build
        .first()
        .and_then(|cc| Command::new(cc).arg("--version").output().ok())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "(none)".into())
}

/// Empty the directories the target needs (its cwd and those of the manifest).
fn fresh_dirs(e: &Entry) {
    fs::create_dir_all(&e.cwd).unwrap_or_else(|err| panic!("mkdir {}: {err}", e.cwd.display()));
    for d in &e.dirs {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).unwrap_or_else(|err| panic!("mkdir {}: {err}", d.display()));
    }
}

/// `ckpt check --json IMAGE`: its problems as (code, message), or Err when check could
/// not even read the image.
fn check_problems(ctx: &Ctx, img: &Path) -> Result<Vec<(String, String)>, String> {
    let r = ctx.ckpt(&["check".as_ref(), img.as_os_str(), "--json".as_ref()]);
    if r.stderr.contains("panicked at") {
        return Err(format!("ckpt check panicked:\n{}", r.stderr));
    }
    let v: Value = serde_json::from_slice(&r.stdout).map_err(|err| {
        format!(
            "ckpt check --json printed no JSON ({err}), exit {:?}:\n{}",
            r.code(),
            r.stderr
        )
    })?;
    let problems: Vec<(String, String)> = v
        .get("problems")
        .and_then(Value::as_array)
        .ok_or("ckpt check --json has no problems list")?
        .iter()
        .map(|p| {
            let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("code"), s("message"))
        })
        .collect();
    let want = if problems.is_empty() { 0 } else { 1 };
    if r.code() != Some(want) {
        return Err(format!(
            "ckpt check exited {:?} with {} problem(s)",
            r.code(),
            problems.len()
        ));
    }
    Ok(problems)
}

/// Judge check's problems: each must be a host fact (returned, for the report), or, with
/// `exe_absent`, the missing executable; the missing executable must then be reported.
/// Err lists what must fail the test.
fn judge(
    e: &Entry,
    problems: &[(String, String)],
    exe_absent: bool,
) -> Result<Vec<String>, String> {
    let exe = e.exe.to_string_lossy().into_owned();
    let mut host = Vec::new();
    let mut bad = Vec::new();
    let mut exe_missing = false;
    for (code, msg) in problems {
        if HOST_CODES.contains(&code.as_str()) {
            host.push(format!("{code}: {msg}"));
        } else if exe_absent
            && code == "file-missing"
            && (msg.starts_with(&format!("executable {exe} "))
                || msg.starts_with(&format!("mapped file {exe} ")))
        {
            exe_missing |= msg.starts_with("executable ");
        } else if EXE_CODES.contains(&code.as_str()) && !exe_absent {
            bad.push(format!(
                "{code} with the rebuilt, identical executable in place: {msg}"
            ));
        } else {
            bad.push(format!("{code}: {msg}"));
        }
    }
    if exe_absent && !exe_missing {
        bad.push(format!("check did not report the absent executable {exe}"));
    }
    if bad.is_empty() {
        Ok(host)
    } else {
        Err(bad.join("\n  "))
    }
}

/// Where `old` (the decoding by the ckpt that made the image) is not part of `new` (this
/// ckpt's): every value of `old` must be in `new`, unchanged, at the same place; `new` may
/// have more object keys (fields added since, with their defaults). A renamed field, a
/// changed type or meaning that lets old images decode into something else shows here.
fn lost_in_decoding(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    // inspect prints the version this ckpt reads, not the image's.
    if path == ".image.format_version" || out.len() >= 20 {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost_in_decoding(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: gone (was {v})")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_in_decoding(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ if old == new => {}
        _ => {
            let short = |v: &Value| {
                let s = v.to_string();
                if s.len() > 120 {
                    format!("{}...", &s[..120])
                } else {
                    s
                }
            };
            out.push(format!("{path}: {} -> {}", short(old), short(new)));
        }
    }
}

/// Decode the image, check its counts, and compare the whole decoding with the one made
/// with the image.
fn decode(ctx: &Ctx, e: &Entry, img: &Path) -> Result<(), String> {
    let r = ctx.ckpt(&["inspect".as_ref(), img.as_os_str(), "--json".as_ref()]);
    if r.code() != Some(0) {
        return Err(format!(
            "ckpt inspect --json failed ({:?}): {}",
            r.code(),
            r.stderr.trim()
        ));
    }
    let v: Value = serde_json::from_slice(&r.stdout)
        .map_err(|err| format!("ckpt inspect --json printed invalid JSON: {err}"))?;
    let old: Value = serde_json::from_slice(
        &fs::read(&e.decoded).map_err(|err| format!("read {}: {err}", e.decoded.display()))?,
    )
    .map_err(|err| format!("{} is not JSON: {err}", e.decoded.display()))?;
    let mut lost = Vec::new();
    lost_in_decoding(&old, &v, "", &mut lost);
    if !lost.is_empty() {
        return Err(format!(
            "this ckpt decodes the image differently from the ckpt that made it ({}):\n  {}",
            e.decoded.display(),
            lost.join("\n  ")
        ));
    }
    let procs = v
        .get("processes")
        .and_then(Value::as_array)
        .ok_or("inspect --json: no processes list")?;
    let threads: usize = procs
        .iter()
        .map(|p| {
            p.get("threads")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    if procs.len() as u64 != e.processes || threads as u64 != e.threads {
        return Err(format!(
            "inspect shows {} processes and {threads} threads, the manifest {} and {}",
            procs.len(),
            e.processes,
            e.threads
        ));
    }
    let exe: Option<Vec<u8>> = procs
        .first()
        .and_then(|p| p.pointer("/mm/exe/path"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect()
        });
    if exe.as_deref() != Some(e.exe.as_os_str().as_encoded_bytes()) {
        return Err(format!(
            "the root's executable is {:?} in the image, {} in the manifest",
            exe.map(|x| String::from_utf8_lossy(&x).into_owned()),
            e.exe.display()
        ));
    }
    Ok(())
}

/// Everything about one image; Err lists the failures. Notes (skips, host facts) are
/// printed.
fn verify(ctx: &Ctx, e: &Entry, img: &Path) -> Result<(), String> {
    let say = |m: String| eprintln!("compat: {}: {m}", e.name);
    decode(ctx, e, img)?;

    // The executable absent: only that may be missing.
    let _ = fs::remove_file(&e.exe);
    fresh_dirs(e);
    let host = judge(e, &check_problems(ctx, img)?, true)
        .map_err(|m| format!("ckpt check (executable absent):\n  {m}"))?;
    for h in &host {
        say(format!("host problem (accepted): {h}"));
    }

    // Rebuild the executable; restore only when it is the one that was dumped.
    let built = ctx.path(&format!("{}.rebuilt", e.name));
    if let Err(m) = rebuild(e, &built) {
        say(format!(
            "cannot rebuild the executable, restore SKIPPED: {m}"
        ));
        return Ok(());
    }
    let sha = sha256(&built);
    if sha != e.sha256 {
        say(format!(
            "rebuilt executable is not byte-identical (sha256 {sha}, manifest {}; compiler \
             here {:?}, at dump {:?}): restore SKIPPED, decode and check ran",
            e.sha256,
            compiler_version(e),
            e.compiler
        ));
        return Ok(());
    }
    fs::copy(&built, &e.exe).map_err(|err| format!("copy to {}: {err}", e.exe.display()))?;
    fs::set_permissions(&e.exe, fs::Permissions::from_mode(0o755))
        .map_err(|err| format!("chmod {}: {err}", e.exe.display()))?;
    let st = Command::new("touch")
        .arg("-d")
        .arg(format!("@{}", e.mtime))
        .arg(&e.exe)
        .status()
        .map_err(|err| format!("touch: {err}"))?;
    if !st.success() {
        return Err(format!("touch -d @{} {} failed", e.mtime, e.exe.display()));
    }
    let host = judge(e, &check_problems(ctx, img)?, false)
        .map_err(|m| format!("ckpt check (executable in place):\n  {m}"))?;
    // --new-pidns makes taken PIDs irrelevant; anything else about the host prevents the
    // restore.
    let blocking: Vec<&String> = host
        .iter()
        .filter(|h| !h.starts_with("pid-taken:"))
        .collect();
    if !blocking.is_empty() {
        say(format!(
            "this host cannot run the image, restore SKIPPED: {blocking:?}"
        ));
        return Ok(());
    }

    fresh_dirs(e);
    let mut p = ctx.restore(img, &["--new-pidns"], In::Null);
    let f = p.finish();
    let want = fs::read(&e.output).map_err(|err| format!("read {}: {err}", e.output.display()))?;
    if f.stdout != want {
        return Err(format!(
            "the restored run printed something else than {}\n{}\n--- stderr:\n{}",
            e.output.display(),
            diff_report(&want, &f.stdout),
            String::from_utf8_lossy(&f.stderr)
        ));
    }
    if f.status.code() != Some(e.exit_status) {
        return Err(format!(
            "the restored run ended with {:?}, the manifest says exit status {}\n--- stderr:\n{}",
            f.status,
            e.exit_status,
            String::from_utf8_lossy(&f.stderr)
        ));
    }
    say("restored; output and exit status as recorded".into());
    Ok(())
}

#[test]
fn every_corpus_image_decodes_checks_and_restores() {
    let ctx = Ctx::new("every_corpus_image_decodes_checks_and_restores");
    let entries = manifest();
    let listed: BTreeSet<PathBuf> = entries.iter().map(|e| e.image.clone()).collect();
    let present: BTreeSet<PathBuf> = fs::read_dir(corpus())
        .expect("read tests/compat/images")
        .map(|d| d.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    assert_eq!(
        listed, present,
        "MANIFEST.json and the *.ckpt files of tests/compat/images disagree"
    );
    assert!(!entries.is_empty(), "the corpus is empty");
    let _lock = lock_fixed_dir();
    let mut failed = Vec::new();
    for e in &entries {
        if let Err(m) = verify(&ctx, e, &e.image) {
            failed.push(format!("{} ({}): {m}", e.name, e.image.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} corpus images no longer work:\n\n{}",
        failed.len(),
        entries.len(),
        failed.join("\n\n")
    );
}

/// The middle of the first zero padding before a record's payload, if any (walking the
/// record headers: tag u32, flags u32, len u64, arg u64, pad u32, check u32; then pad
/// bytes, the payload and its u64 checksum).
fn first_padding_byte(d: &[u8]) -> Option<usize> {
    let mut off = 40usize;
    while off + 32 <= d.len() {
        let len = u64::from_le_bytes(d[off + 8..off + 16].try_into().ok()?) as usize;
        let pad = u32::from_le_bytes(d[off + 24..off + 28].try_into().ok()?) as usize;
        if pad > 0 {
            return Some(off + 32 + pad / 2);
        }
        off += 32 + pad + len + 8;
    }
    None
}

/// The test's own logic must catch a damaged image: a byte flipped anywhere (header,
/// metadata, page data, the zero padding before page data, end record) fails it.
#[test]
fn a_damaged_corpus_image_fails_the_check() {
    let ctx = Ctx::new("a_damaged_corpus_image_fails_the_check");
    let entries = manifest();
    let e = entries
        .iter()
        .find(|e| e.name == "counter")
        .or(entries.first())
        .expect("the corpus is empty");
    let data = fs::read(&e.image).expect("read image");
    let len = data.len();
    let _lock = lock_fixed_dir();
    let mut offsets = vec![12, 100, len / 2, len - 20];
    offsets.extend(first_padding_byte(&data));
    for off in offsets {
        let bad = ctx.path(&format!("flipped-{off}.ckpt"));
        flip_byte(&e.image, &bad, off);
        match verify(&ctx, e, &bad) {
            Ok(()) => panic!(
                "{} with the byte at offset {off} flipped passed the corpus check",
                e.name
            ),
            Err(m) => eprintln!("offset {off}: refused as it should be: {m}"),
        }
    }
}
