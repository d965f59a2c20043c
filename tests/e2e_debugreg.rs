//! End-to-end tests of the debug registers (issue 3): a hardware watchpoint set by a
//! debugger (this test, through ptrace) keeps triggering after a restore; crafted debug
//! register values the kernel would reject are refused by `ckpt check` and `ckpt
//! restore` before anything is created.
//!
//! The targets are `tests/targets/{watch,arch}.c`. Needs root (ptrace of arbitrary
//! processes, restoring PIDs). Run with cargo-nextest, one process per test (see
//! README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use common::arch::*;
use common::*;

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
