//! End-to-end tests of the architecture side (issue 3): 32-bit (ia32) programs and their
//! 64-bit twins, dynamic and static, continue after a dump and restore with output byte
//! for byte that of an uninterrupted run; mixed trees (a 64-bit parent of a 32-bit child
//! and the reverse); `ckpt check` / `ckpt restore` refuse an image whose vDSO is not this
//! kernel's, or that needs kernel facilities a (masked) host lacks; usage errors. The
//! CPU refusals are in `e2e_cpu.rs` and `e2e_intel_amx.rs`, the debug registers in
//! `e2e_debugreg.rs`.
//!
//! The targets (`tests/targets/{arch,launch}.c`) print, every step, facts that
//! would be false if state were lost: hashes of heap, stack and static data, SSE and x87
//! results with their control words, what their signal handlers received.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use common::arch::*;
use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// x86-64 and ia32 `wait4` (61, 114) and ia32 `waitpid` (7).
const WAIT_SYSCALLS: &[i64] = &[61, 114, 7];

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
    // Droppable memory (MAP_DROPPABLE).
    let mut dt = ctx.spawn(
        &Spec::new(target("oracle"))
            .arg("droppable")
            .stdin(In::Pipe)
            .cwd(&ctx.dir),
    );
    dt.wait_for("ready\n");
    let drop_img = ctx.path("droppable.img");
    ctx.dump(dt.pid, &drop_img);
    dt.expect_killed();
    let drop_pid = dt.pid;
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
        (&drop_img, drop_pid, "map-droppable", "MAP_DROPPABLE"),
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
