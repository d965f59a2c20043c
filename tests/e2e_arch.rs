//! End-to-end tests of the architecture side (issue 3): 32-bit (ia32) programs and their
//! 64-bit twins, dynamic and static, continue after a dump and restore with output byte
//! for byte that of an uninterrupted run; mixed trees (a 64-bit parent of a 32-bit child
//! and the reverse); a hardware watchpoint set by a debugger (this test, through ptrace)
//! keeps triggering after a restore; and `ckpt check` / `ckpt restore` refuse an image
//! whose task used AVX state on a host that (by `CKPT_HOST_MASK`) lacks it.
//!
//! The targets (`tests/targets/{arch,launch,watch,avx}.c`) print, every step, facts that
//! would be false if state were lost: hashes of heap, stack and static data, SSE and x87
//! results with their control words, what their signal handlers received.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// System calls a target may be sleeping in: x86-64 `nanosleep` (35) and
/// `clock_nanosleep` (230); ia32 `nanosleep` (162), `clock_nanosleep` (267) and
/// `clock_nanosleep_time64` (407) — /proc/PID/syscall shows a 32-bit task's own numbers.
const SLEEP_SYSCALLS: &[i64] = &[35, 230, 162, 267, 407];

/// x86-64 and ia32 `wait4` (61, 114) and ia32 `waitpid` (7).
const WAIT_SYSCALLS: &[i64] = &[61, 114, 7];

/// `ckpt ARGS` with extra environment variables, to its end (bounded).
fn ckpt_env(ctx: &Ctx, args: &[&OsStr], env: &[(&str, &str)]) -> Finished {
    let mut spec = Spec::new(ckpt_bin())
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    for a in args {
        spec = spec.arg(a);
    }
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    ctx.spawn(&spec).finish()
}

/// The ABIs the image's arch header lists (`inspect --json`: `arch.abis`), lower case.
fn image_abis(ctx: &Ctx, img: &Path) -> Vec<String> {
    let j = ctx.inspect_json(img);
    let abis = j
        .pointer("/arch/abis")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("inspect --json has no arch.abis array: {}", j["arch"]));
    let mut v: Vec<String> = abis
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("arch.abis holds a non-string: {a}"))
                .to_lowercase()
        })
        .collect();
    v.sort();
    v
}

/// Output lines of `arch` that do not depend on the word size (all but the two that say
/// how big a pointer is).
fn size_independent_lines(out: &[u8]) -> Vec<u8> {
    text(out)
        .lines()
        .filter(|l| !l.contains("pointers are"))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// Start `spec` alongside its reference run; once it printed `k` lines and is asleep in
/// nanosleep (so the dump interrupts a sleep that must be restarted), dump it to
/// `tag.img` (killing it). Returns the reference run, what it printed, the image.
fn run_and_dump_asleep(
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
fn restore_to_end(ctx: &Ctx, img: &Path, pid: i32, before: &[u8], tag: &str) -> Finished {
    let mut r = ctx.restore(img, &[], In::Null);
    let fin = r.finish();
    assert_no_process(pid, tag);
    Finished {
        status: fin.status,
        stdout: [before, &fin.stdout[..]].concat(),
        stderr: fin.stderr,
    }
}

/// Dump an `arch` build mid-run (asleep), restore it and compare with its uninterrupted
/// run; `again`: dump the restored process a second time (after a few more steps) and
/// restore that image too. Returns the reference output.
fn arch_dump_restore(ctx: &Ctx, bin: &str, abi: &str, again: bool) -> Finished {
    let spec = Spec::new(target(bin)).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(ctx, &spec, 12, bin);
    assert_eq!(
        image_abis(ctx, &img),
        [abi],
        "{bin}: the arch header's ABIs"
    );
    let ok = ckpt_env(ctx, &[OsStr::new("check"), img.as_os_str()], &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{bin}: ckpt check of a good image; stderr:\n{}",
        text(&ok.stderr)
    );

    let fin = if again {
        let mut r = ctx.restore(&img, &[], In::Null);
        r.wait_lines(8);
        wait_in_any_syscall(pid, SLEEP_SYSCALLS, &format!("{bin} restored"));
        let img2 = ctx.path(&format!("{bin}-again.img"));
        ctx.dump(pid, &img2);
        let mid = r.finish();
        assert_eq!(
            mid.status.code(),
            Some(128 + libc::SIGKILL),
            "{bin}: ckpt restore when the second dump killed the restored process; \
             stderr:\n{}",
            text(&mid.stderr)
        );
        wait_pids_gone(&[pid], &format!("{bin}: restored copy after its dump"));
        restore_to_end(
            ctx,
            &img2,
            pid,
            &[before, mid.stdout].concat(),
            &format!("{bin} (second restore)"),
        )
    } else {
        restore_to_end(ctx, &img, pid, &before, bin)
    };
    let reference = reference.finish();
    assert!(
        reference
            .status
            .code()
            .is_some_and(|c| (20..70).contains(&c)),
        "{bin}: reference run ended with {:?}; stderr:\n{}",
        reference.status,
        text(&reference.stderr)
    );
    let out = text(&reference.stdout);
    assert!(
        !out.contains("nanosleep failed") && out.contains(" bad 0 ") && !out.contains(" bad 1"),
        "{bin}: the uninterrupted run itself reports a problem:\n{out}"
    );
    assert_same_output(
        &format!(
            "{bin} (dumped in nanosleep after 12 lines{}, restored)",
            if again {
                ", restored, dumped again"
            } else {
                ""
            }
        ),
        &reference.stdout,
        &fin.stdout,
    );
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{bin}: ckpt restore must exit with the restored process's status; stderr:\n{}",
        text(&fin.stderr)
    );
    reference
}

// ---------------------------------------------------------------------------------------
// 32-bit programs and their 64-bit twins

#[test]
fn ia32_program_continues_after_restore_and_a_second_dump() {
    let ctx = Ctx::new("ia32_program_continues_after_restore_and_a_second_dump");
    arch_dump_restore(&ctx, "arch32", "ia32", true);
}

#[test]
fn ia32_static_program_continues_after_restore() {
    let ctx = Ctx::new("ia32_static_program_continues_after_restore");
    arch_dump_restore(&ctx, "arch32-static", "ia32", false);
}

#[test]
fn x86_64_twin_continues_after_restore() {
    let ctx = Ctx::new("x86_64_twin_continues_after_restore");
    arch_dump_restore(&ctx, "arch64", "x86_64", false);
}

#[test]
fn ia32_and_x86_64_twins_print_the_same_but_for_the_pointer_size() {
    // The dumps and restores above compare each build with its own uninterrupted run;
    // this pins the twins to each other, so that a 32-bit run that goes wrong in the
    // same way every time (an FPU state, a signal frame) cannot pass unnoticed.
    let ctx = Ctx::new("ia32_and_x86_64_twins_print_the_same_but_for_the_pointer_size");
    let runs: Vec<(&str, Proc)> = ["arch64", "arch32", "arch32-static"]
        .into_iter()
        .map(|b| (b, ctx.spawn(&Spec::new(target(b)).arg("40"))))
        .collect();
    let mut outs = Vec::new();
    for (bin, mut p) in runs {
        let f = p.finish();
        let o = text(&f.stdout);
        let bytes = if bin == "arch64" { 8 } else { 4 };
        assert!(
            o.starts_with(&format!("arch: pointers are {bytes} bytes\n"))
                && o.ends_with(&format!("done; pointers are {bytes} bytes\n")),
            "{bin} should say its pointers are {bytes} bytes:\n{o}"
        );
        assert_eq!(
            o.lines().filter(|l| l.starts_with("step ")).count(),
            40,
            "{bin}:\n{o}"
        );
        outs.push((bin, f));
    }
    let (b64, f64) = &outs[0];
    for (bin, f) in &outs[1..] {
        assert_same_output(
            &format!("{bin} against its 64-bit twin {b64} (pointer-size lines left out)"),
            &size_independent_lines(&f64.stdout),
            &size_independent_lines(&f.stdout),
        );
        assert_eq!(f.status.code(), f64.status.code(), "{bin}: exit status");
    }
}

#[test]
fn check_refuses_an_ia32_image_on_a_host_masked_without_ia32() {
    let ctx = Ctx::new("check_refuses_an_ia32_image_on_a_host_masked_without_ia32");
    let spec = Spec::new(target("arch32")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 5, "arch32");
    let mask = [("CKPT_HOST_MASK", "no-ia32")];
    let c = ckpt_env(&ctx, &[OsStr::new("check"), img.as_os_str()], &mask);
    let err = text(&c.stderr);
    assert_eq!(
        c.status.code(),
        Some(1),
        "ckpt check with CKPT_HOST_MASK=no-ia32; stderr:\n{err}"
    );
    assert!(
        err.contains("32-bit") || err.to_lowercase().contains("ia32"),
        "ckpt check with CKPT_HOST_MASK=no-ia32 should name the 32-bit task:\n{err}"
    );
    let r = ckpt_env(&ctx, &[OsStr::new("restore"), img.as_os_str()], &mask);
    assert_eq!(
        r.status.code(),
        Some(1),
        "ckpt restore with CKPT_HOST_MASK=no-ia32; stderr:\n{}",
        text(&r.stderr)
    );
    assert!(r.stdout.is_empty(), "the refused restore ran the program");
    assert_no_process(pid, "after the refused restore");
    // Unmasked, the same image restores.
    let fin = restore_to_end(&ctx, &img, pid, &before, "arch32");
    assert_same_output(
        "arch32 (restored after refusals)",
        &reference.finish().stdout,
        &fin.stdout,
    );
}

// ---------------------------------------------------------------------------------------
// Mixed trees

/// `launcher` (one ABI) fork+execs `child` (the other); the tree is dumped while the
/// child runs and the launcher waits for it, then restored; the whole output (the
/// child's steps, the exit status the launcher collects, the launcher's own state)
/// must be the uninterrupted run's.
fn mixed_tree(ctx: &Ctx, launcher: &str, child: &str) {
    let spec = Spec::new(target(launcher)).arg(target(child)).arg("40");
    let reference = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    let root = t.pid;
    t.wait_lines(12);
    let pids = wait_process_tree(root, 2, launcher);
    for &p in &pids {
        ctx.track(p);
    }
    let kid = pids[1];
    wait_in_any_syscall(
        root,
        WAIT_SYSCALLS,
        &format!("{launcher} waiting for {child}"),
    );
    wait_in_any_syscall(kid, SLEEP_SYSCALLS, child);
    let img = ctx.path("tree.img");
    ctx.dump(root, &img);
    t.expect_killed();
    let before = t.stdout.finish("original tree");
    wait_pids_gone(&pids, "original tree after the dump");

    assert_eq!(
        image_abis(ctx, &img),
        ["ia32", "x86_64"],
        "the arch header of a mixed tree must list both ABIs"
    );
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_eq!(
        process_tree(root),
        pids,
        "the restored tree has other processes"
    );
    let fin = r.finish();
    let mut reference = reference;
    let reference = reference.finish();
    assert_eq!(reference.status.code(), Some(0));
    let out = text(&reference.stdout);
    assert!(
        out.contains(&format!("launcher: {child} exited with status ")),
        "reference:\n{out}"
    );
    assert_tree_finished_like_reference(
        &format!("{launcher} -> {child} (dumped while both ran, restored)"),
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

#[test]
fn mixed_tree_x86_64_parent_of_ia32_child() {
    let ctx = Ctx::new("mixed_tree_x86_64_parent_of_ia32_child");
    mixed_tree(&ctx, "launch64", "arch32");
}

#[test]
fn mixed_tree_ia32_parent_of_x86_64_child() {
    let ctx = Ctx::new("mixed_tree_ia32_parent_of_x86_64_child");
    mixed_tree(&ctx, "launch32", "arch64");
}

// ---------------------------------------------------------------------------------------
// Hardware watchpoints

/// offsetof(struct user, u_debugreg) on x86-64.
const U_DEBUGREG: usize = 848;
/// DR7: slot 0 enabled (L0), break on data writes (R/W0 = 01), 4 bytes (LEN0 = 11).
const DR7_WRITE4_SLOT0: u64 = 1 | (0b01 << 16) | (0b11 << 18);

fn ptrace_ok(r: libc::c_long, what: &str, pid: i32) {
    assert!(
        r != -1,
        "{what} on pid {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// Act as a debugger: seize `pid`, stop it, set DR0 = `addr` and DR7 to a 4-byte write
/// watchpoint in slot 0, check they read back, and detach.
fn set_watchpoint(pid: i32, addr: u64) {
    let nul = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace requests with integer arguments on a process we started; no memory
    // of ours is passed except `st`, a local.
    unsafe {
        ptrace_ok(
            libc::ptrace(libc::PTRACE_SEIZE, pid, nul, nul),
            "PTRACE_SEIZE",
            pid,
        );
        ptrace_ok(
            libc::ptrace(libc::PTRACE_INTERRUPT, pid, nul, nul),
            "PTRACE_INTERRUPT",
            pid,
        );
        let mut st = 0;
        let r = libc::waitpid(pid, &mut st, libc::__WALL);
        assert_eq!(
            r,
            pid,
            "waitpid for the ptrace stop: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            libc::WIFSTOPPED(st),
            "pid {pid} did not stop for the debugger: {st:#x}"
        );
        for (i, v) in [(0usize, addr), (7, DR7_WRITE4_SLOT0)] {
            let off = (U_DEBUGREG + 8 * i) as *mut libc::c_void;
            ptrace_ok(
                libc::ptrace(libc::PTRACE_POKEUSER, pid, off, v as *mut libc::c_void),
                &format!("PTRACE_POKEUSER DR{i}"),
                pid,
            );
            *libc::__errno_location() = 0;
            let back = libc::ptrace(libc::PTRACE_PEEKUSER, pid, off, nul);
            assert_eq!(
                back as u64, v,
                "DR{i} of pid {pid} reads back another value"
            );
        }
        ptrace_ok(
            libc::ptrace(libc::PTRACE_DETACH, pid, nul, nul),
            "PTRACE_DETACH",
            pid,
        );
    }
}

/// Start `watch`, wait for the address it prints, set the watchpoint on it, let it go.
fn start_watched(ctx: &Ctx, spec: &Spec, go: &Path) -> (Proc, u64) {
    let _ = fs::remove_file(go);
    let mut p = ctx.spawn(spec);
    p.wait_lines(1);
    let first = p.stdout.text();
    let addr = first
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("watched at 0x"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("watch did not print `watched at 0x...`: {first:?}"));
    set_watchpoint(p.pid, addr);
    assert_running_untraced(p.pid, "watch after the debugger detached");
    fs::write(go, "").expect("create go file");
    (p, addr)
}

#[test]
fn hardware_watchpoint_set_by_a_debugger_keeps_triggering_after_restore() {
    let ctx = Ctx::new("hardware_watchpoint_set_by_a_debugger_keeps_triggering_after_restore");
    let go = ctx.path("go");
    const STEPS: usize = 40;
    let spec = Spec::new(target("watch")).arg(STEPS.to_string()).arg(&go);

    // The uninterrupted run, under the same debugger, watchpoint set at the same point.
    let (mut rp, addr) = start_watched(&ctx, &spec, &go);
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    let out = text(&reference.stdout);
    let hits = out.lines().filter(|l| l.starts_with("hit ")).count();
    assert_eq!(
        hits, STEPS,
        "the watchpoint should trigger once per step in the uninterrupted run:\n{out}"
    );
    assert!(
        out.contains("hit 1 at step 1 (si_code 4)\nstep 1 watched 1 hits 1\n"),
        "reference:\n{out}"
    );

    let (mut t, addr2) = start_watched(&ctx, &spec, &go);
    assert_eq!(
        addr, addr2,
        "watch is built without PIE: same address each run"
    );
    // Hits before the dump: "hit N" and "step N" lines after the "watched at", "go".
    t.wait_lines(2 + 2 * 12);
    let pid = t.pid;
    let so_far = t.stdout.text();
    assert!(
        so_far.contains("hit 12 at step 12 "),
        "no hits before the dump:\n{so_far}"
    );
    let img = ctx.path("watch.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");

    let inspect = ctx.ckpt(&[OsStr::new("inspect"), img.as_os_str()]);
    inspect.assert_ok();
    let itext = inspect.stdout_text();
    let drline = itext
        .lines()
        .find(|l| l.contains("debug registers:"))
        .unwrap_or_else(|| panic!("inspect does not show the debug registers:\n{itext}"));
    assert!(
        drline.contains(&format!("{addr:#x}"))
            && drline.contains(&format!("DR7 {DR7_WRITE4_SLOT0:#x}")),
        "inspect's debug registers should show DR0 {addr:#x} and DR7 {DR7_WRITE4_SLOT0:#x}: \
         {drline}"
    );

    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    assert_same_output(
        "watch (dumped after 12 hits, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
    assert_no_process(pid, "watch");
}

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

/// Rewrite an image's metadata with `edit`, keeping every other record as it was (the
/// checksums and the end record are recomputed by the writer).
fn rewrite_image(src: &Path, dst: &Path, edit: impl FnOnce(&mut ckpt::model::Checkpoint)) {
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
// Refusals before anything is created: helpers

/// `ckpt ARGS...` with `env`, in the test's directory.
fn ckpt_args(ctx: &Ctx, args: &[&str], img: &Path, env: &[(&str, &str)]) -> Finished {
    let mut v: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    v.push(img.as_os_str());
    ckpt_env(ctx, &v, env)
}

/// `ckpt check IMG EXTRA...` and `ckpt restore IMG EXTRA...` (with `env`) both refuse
/// the image, exit 1, and say every one of `words`; the restore creates nothing: no
/// output, no process at `pid` (unless in `keep`), no file in the test directory, no
/// stray child (other than `keep`). Returns check's stderr.
fn assert_refused(
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
fn check_json(ctx: &Ctx, img: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
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
fn kernel_requirements(v: &Value) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------
// The vDSO

/// A crafted image whose vDSO is not this kernel's (its recorded hash changed, as an
/// image from another kernel would have) is refused by `check`, naming the vDSO and
/// what to do, and by `restore` before anything is created; for a 64-bit and a 32-bit
/// (ia32) program, whose 32-bit vDSO ckpt maps in a throwaway child to compare it.
#[test]
fn check_and_restore_refuse_an_image_whose_vdso_is_not_this_kernels() {
    let ctx = Ctx::new("check_and_restore_refuse_an_image_whose_vdso_is_not_this_kernels");
    for (bin, words) in [
        ("arch64", &["vDSO differs", "process"][..]),
        ("arch32", &["32-bit vDSO differs", "process"][..]),
    ] {
        let spec = Spec::new(target(bin)).arg("40");
        let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 5, bin);
        let crafted = ctx.path(&format!("{bin}-vdso.img"));
        rewrite_image(&img, &crafted, |c| {
            for p in &mut c.processes {
                p.vdso_hash ^= 1;
            }
            c.arch.vdso_hash ^= 1;
        });
        let mut words = words.to_vec();
        words.push("restore it on a host running the kernel it was dumped on");
        let err = assert_refused(
            &ctx,
            &crafted,
            &[],
            &[],
            &words,
            (pid, &[reference.pid]),
            bin,
        );
        assert!(
            err.contains(&format!("process {pid}")),
            "{bin}: the refusal should name process {pid}:\n{err}"
        );
        // The true image passes check (the host's vDSO, 32-bit too, is the image's)
        // and restores.
        let ok = ckpt_args(&ctx, &["check"], &img, &[]);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{bin}: check of the true image:\n{}",
            text(&ok.stderr)
        );
        let fin = restore_to_end(&ctx, &img, pid, &before, bin);
        assert_same_output(
            &format!("{bin} (restored after the refusals)"),
            &reference.finish().stdout,
            &fin.stdout,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Kernel facilities

/// Dump a process started from `spec` once it printed `k` lines (killing it).
fn dump_after_lines(ctx: &Ctx, spec: &Spec, k: usize, tag: &str) -> (std::path::PathBuf, i32) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(t.pid, &img);
    t.expect_killed();
    (img, t.pid)
}

/// Each kernel facility restore relies on is derived from the image (listed in `check
/// --json`'s requirements) and probed on this host (images pass unmasked); masked with
/// `no-kernel=NAME` (by `--cpu-mask` or `CKPT_HOST_MASK`), check and restore refuse the
/// image that needs it, naming it, before anything is created.
#[test]
fn check_and_restore_refuse_images_needing_kernel_facilities_this_host_is_masked_without() {
    let ctx = Ctx::new(
        "check_and_restore_refuse_images_needing_kernel_facilities_this_host_is_masked_without",
    );
    // A 64-bit C program with rseq (glibc registers it) and MADV_GUARD_INSTALL guards.
    let counter = counter_spec(&ctx, "counter", 60, &["madv-guard"]);
    let (counter_img, counter_pid) = dump_after_lines(&ctx, &counter, 3, "counter");
    // POSIX timers.
    let timers = Spec::new(target("timers")).arg("30").arg("22");
    let (timers_img, timers_pid) = dump_after_lines(&ctx, &timers, 3, "timers");
    // A 64-bit parent waiting for its 32-bit child: two vDSOs, two processes.
    let tree = Spec::new(target("launch64"))
        .arg(target("arch32"))
        .arg("40");
    let mut t = ctx.spawn(&tree);
    t.wait_lines(3);
    let pids = wait_process_tree(t.pid, 2, "launch64 -> arch32");
    for &p in &pids {
        ctx.track(p);
    }
    wait_in_any_syscall(t.pid, WAIT_SYSCALLS, "launch64 waiting");
    let tree_img = ctx.path("tree.img");
    ctx.dump(t.pid, &tree_img);
    t.expect_killed();
    wait_pids_gone(&pids, "the dumped tree");
    // An established TCP connection (dumped with --leave-running, then ended).
    let server = Spec::new(python3()).arg("-c").arg(
        "import socket,time\n\
         s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
         print(s.getsockname()[1], flush=True)\n\
         c,_=s.accept(); print('accepted', flush=True); time.sleep(60)\n",
    );
    let mut srv = ctx.spawn(&server);
    srv.wait_lines(1);
    let port: u16 = srv
        .stdout
        .text()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the TCP server's port: {e}"));
    let client = connect_loopback(port, "the TCP server");
    srv.wait_lines(2);
    let tcp_img = ctx.path("tcp.img");
    ctx.dump_leave_running(srv.pid, &tcp_img);
    let tcp_pid = srv.pid;
    srv.kill();
    drop(client);

    // (image, its pid, facility, words the refusal must use)
    let cases: &[(&Path, i32, &str, &str)] = &[
        (
            &counter_img,
            counter_pid,
            "clone3-set-tid",
            "clone3 with set_tid",
        ),
        (
            &counter_img,
            counter_pid,
            "prctl-set-mm-map",
            "PR_SET_MM_MAP",
        ),
        (&counter_img, counter_pid, "map-vdso-64", "ARCH_MAP_VDSO_64"),
        (&counter_img, counter_pid, "rseq", "rseq system call"),
        (
            &counter_img,
            counter_pid,
            "madv-guard-install",
            "MADV_GUARD_INSTALL",
        ),
        (
            &timers_img,
            timers_pid,
            "timer-restore-ids",
            "PR_TIMER_CREATE_RESTORE_IDS",
        ),
        (&tree_img, pids[0], "map-vdso-32", "ARCH_MAP_VDSO_32"),
        (&tree_img, pids[0], "pidfd-getfd", "pidfd_getfd"),
        (&tcp_img, tcp_pid, "tcp-repair", "TCP repair mode"),
    ];
    for (i, &(img, pid, name, words)) in cases.iter().enumerate() {
        // Unmasked, the image passes (this kernel has everything), and the manifest
        // lists what it needs.
        let v = check_json(&ctx, img, &[], &[]);
        assert_eq!(
            v["restorable"],
            Value::Bool(true),
            "{name}: the image should pass check unmasked: {v}"
        );
        let kernel = kernel_requirements(&v);
        assert!(
            kernel.iter().any(|k| k == name),
            "{name}: check --json should list it in requirements.kernel: {kernel:?}"
        );
        let mask = format!("no-kernel={name}");
        // Half the cases by option, half by the environment.
        let (extra, env): (Vec<&str>, Vec<(&str, &str)>) = if i % 2 == 0 {
            (vec!["--cpu-mask", &mask], vec![])
        } else {
            (vec![], vec![("CKPT_HOST_MASK", &mask)])
        };
        let err = assert_refused(
            &ctx,
            img,
            &extra,
            &env,
            &[words, "hidden by this host's mask", "this kernel lacks"],
            (pid, &[]),
            &format!("masked {name}"),
        );
        assert_eq!(
            err.matches("this kernel lacks").count(),
            1,
            "{name}: only the masked facility is missing:\n{err}"
        );
        let v = check_json(&ctx, img, &extra, &env);
        assert!(
            v["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["code"] == "kernel-facility-missing")),
            "{name}: check --json names the problem: {v}"
        );
    }
    // An image that needs none of TCP repair, timers or 32-bit vDSOs is not refused when
    // they are missing.
    let c = ckpt_args(
        &ctx,
        &[
            "check",
            "--cpu-mask",
            "no-kernel=tcp-repair,no-kernel=timer-restore-ids,no-kernel=map-vdso-32",
        ],
        &counter_img,
        &[],
    );
    assert_eq!(
        c.status.code(),
        Some(0),
        "facilities the image does not need must not matter:\n{}",
        text(&c.stderr)
    );
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

/// xsave components 5-7: AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM state.
const XSAVE_AVX512: u64 = 0b111 << 5;
/// xsave components 17-18: AMX tile configuration and tile data.
const XSAVE_AMX: u64 = 0b11 << 17;

/// What the image says of its tasks' CPU state (`inspect --json`'s `arch`): the xsave
/// components they used (non-init state), the dump host's XCR0 and its CPU features.
struct ImageCpu {
    used: u64,
    xcr0: u64,
    features: Vec<String>,
}

fn image_cpu(ctx: &Ctx, img: &Path) -> ImageCpu {
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
    fn had(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }
}

/// How ckpt's messages name the xsave components of `mask`: "xsave component 2",
/// "xsave components 5-7", "xsave components 5, 7, 17-18".
fn xsave_component_list(mask: u64) -> String {
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

/// The problems of `check --json` output: (code, message), in order.
fn problems(v: &Value) -> Vec<(String, String)> {
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

/// Debug register values this host's kernel would refuse (an I/O breakpoint, a
/// watchpoint on a kernel address, a kernel address in a disabled slot) are refused by
/// check and restore, naming the register, before anything is created.
#[test]
fn check_and_restore_refuse_crafted_debug_registers_the_kernel_would_reject() {
    let ctx = Ctx::new("check_and_restore_refuse_crafted_debug_registers_the_kernel_would_reject");
    let spec = Spec::new(target("arch64")).arg("40");
    let (mut reference, before, img, pid) = run_and_dump_asleep(&ctx, &spec, 5, "dr");
    // (name, DR0-DR3, DR6, DR7 of the main thread, words the refusal must use)
    type Dr = [u64; 6];
    let cases: &[(&str, Dr, &[&str])] = &[
        (
            "io",
            [0x1000, 0, 0, 0, 0, 1 | (0b10 << 16)],
            &["DR0", "I/O"],
        ),
        (
            "kernel-address",
            [0xffff_ffff_8100_0000, 0, 0, 0, 0, 1 | (0b01 << 16)],
            &["DR0", "user-space"],
        ),
        (
            "disabled-kernel-address",
            [0, 0xffff_ffff_8100_0000, 0, 0, 0, 0],
            &["DR1", "user-space"],
        ),
    ];
    for &(name, dr, words) in cases {
        let crafted = ctx.path(&format!("dr-{name}.img"));
        rewrite_image(&img, &crafted, |c| {
            c.processes[0].threads[0].arch.debugregs = dr;
        });
        let err = assert_refused(
            &ctx,
            &crafted,
            &[],
            &[],
            words,
            (pid, &[reference.pid]),
            &format!("debug registers: {name}"),
        );
        assert!(
            err.contains(&format!("thread {pid}")),
            "{name}: the refusal should name thread {pid}:\n{err}"
        );
    }
    let fin = restore_to_end(&ctx, &img, pid, &before, "arch64");
    assert_same_output(
        "arch64 (restored after the refusals)",
        &reference.finish().stdout,
        &fin.stdout,
    );
}

/// Bad usage exits 2 with a message and does nothing: `dump -o - --json` (the target
/// keeps running, untraced), a malformed `--cpu-mask` or `CKPT_HOST_MASK`, an unknown
/// kernel facility in a mask.
#[test]
fn usage_errors_exit_2_and_do_nothing() {
    let ctx = Ctx::new("usage_errors_exit_2_and_do_nothing");
    let spec = Spec::new(target("arch64")).arg("40");
    let (_reference, _before, img, pid) = run_and_dump_asleep(&ctx, &spec, 3, "usage");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(2);
    let d = ckpt_env(
        &ctx,
        &[
            OsStr::new("dump"),
            OsStr::new(&t.pid.to_string()),
            OsStr::new("-o"),
            OsStr::new("-"),
            OsStr::new("--json"),
        ],
        &[],
    );
    assert_eq!(
        d.status.code(),
        Some(2),
        "dump -o - --json: {}",
        text(&d.stderr)
    );
    assert!(text(&d.stderr).contains("--json"), "{}", text(&d.stderr));
    assert!(d.stdout.is_empty(), "dump -o - --json wrote an image");
    assert_running_untraced(t.pid, "after the refused dump");
    let listing = ctx.listing();
    // (arguments before the image, environment, a word the message must use)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["check", "--cpu-mask", "no-avx9000"], &[], "avx9000"),
        (
            &["check", "--cpu-mask", "no-xsave-comp=1"],
            &[],
            "xsave-comp=1",
        ),
        (&["check", "--cpu-mask", "no-kernel=rseq2"], &[], "rseq2"),
        (
            &["restore", "--cpu-mask", "no-kernel=rseq2"],
            &[],
            "timer-restore-ids",
        ),
        (&["restore"], &[("CKPT_HOST_MASK", "no-sse9")], "sse9"),
        (&["check", "--cpu-policy", "loose"], &[], "loose"),
    ];
    for &(args, env, word) in cases {
        let r = ckpt_args(&ctx, args, &img, env);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains(word),
            "{args:?} {env:?} should say {word:?}: {err}"
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", text(&r.stdout));
        assert_no_process(pid, &format!("{args:?}"));
    }
    assert_eq!(ctx.listing(), listing, "bad usage left files behind");
}

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
