//! End-to-end tests of the core: checkpoint a running single-threaded process, kill it,
//! restore it, and check that it *continues* — its output is byte for byte that of an
//! uninterrupted run — and that its state is the same (dump the restored process again
//! and compare the images). Failure paths: damaged images, a changed file, a taken PID,
//! `ckpt restore` killed at any moment — each a clear error with nothing left behind.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Run `spec` uninterrupted; then run it again, dump it (killing it) once it printed
/// `k` lines, restore it attached, and assert the combined output and the exit status
/// equal the uninterrupted run's. Returns the reference run.
fn dump_kill_restore(ctx: &Ctx, spec: &Spec, k: usize, tag: &str) -> Finished {
    let reference = ctx.reference(spec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    let combined = match &spec.stdout_file {
        // The restored process reopened the file at its offset and wrote the rest there.
        Some(f) => {
            assert!(
                fin.stdout.is_empty(),
                "{tag}: output went to ckpt restore's stdout instead of the file: {}",
                String::from_utf8_lossy(&fin.stdout)
            );
            fs::read(f).expect("read stdout file")
        }
        None => [before, fin.stdout].concat(),
    };
    assert_same_output(
        &format!("{tag} (dumped after {k} lines, restored)"),
        &reference.stdout,
        &combined,
    );
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{tag}: ckpt restore must exit with the restored process's exit status ({:?}); \
         stderr:\n{}",
        reference.status,
        String::from_utf8_lossy(&fin.stderr)
    );
    assert_no_process(pid, tag);
    reference
}

// ---------------------------------------------------------------------------------------
// Programs continue as if nothing happened

#[test]
fn counter_dynamic_continues_after_restore() {
    let ctx = Ctx::new("counter_dynamic_continues_after_restore");
    let spec = counter_spec(&ctx, "counter", 60, &[]);
    dump_kill_restore(&ctx, &spec, 15, "counter");
}

#[test]
fn counter_static_continues_after_restore() {
    let ctx = Ctx::new("counter_static_continues_after_restore");
    let spec = counter_spec(&ctx, "counter-static", 60, &[]);
    dump_kill_restore(&ctx, &spec, 15, "counter-static");
}

#[test]
fn counter_with_stdout_to_a_regular_file() {
    let ctx = Ctx::new("counter_with_stdout_to_a_regular_file");
    let spec = counter_spec(&ctx, "counter", 50, &[]).stdout_file(ctx.path("out.txt"));
    dump_kill_restore(&ctx, &spec, 12, "counter>file");
}

#[test]
fn counter_dumped_at_different_moments() {
    // 0 lines: right after exec (possibly still in the dynamic loader); 1: first sleep;
    // 38: near the end.
    let ctx = Ctx::new("counter_dumped_at_different_moments");
    let spec = counter_spec(&ctx, "counter", 40, &["sleep=10"]);
    for k in [0, 1, 38] {
        dump_kill_restore(&ctx, &spec, k, &format!("counter-at-{k}"));
    }
}

#[test]
fn counter_dumped_while_computing() {
    // No sleep: the dump lands anywhere in user code or in write(2).
    let ctx = Ctx::new("counter_dumped_while_computing");
    let spec = counter_spec(&ctx, "counter", 1500, &["sleep=0", "heap=64"]);
    dump_kill_restore(&ctx, &spec, 300, "counter-busy");
}

#[test]
fn counter_with_madv_guard_pages() {
    let ctx = Ctx::new("counter_with_madv_guard_pages");
    let spec = counter_spec(&ctx, "counter", 40, &["madv-guard"]);
    let reference = dump_kill_restore(&ctx, &spec, 10, "counter-madv-guard");
    let out = String::from_utf8_lossy(&reference.stdout);
    if out.starts_with("madv-guard unsupported") {
        eprintln!("note: this kernel has no MADV_GUARD_INSTALL; only PROT_NONE guards tested");
    }
}

#[test]
fn counter_with_64_mib_of_memory() {
    let ctx = Ctx::new("counter_with_64_mib_of_memory");
    let spec = counter_spec(
        &ctx,
        "counter",
        20,
        &["heap=65536", "sparse=65536", "sleep=5"],
    );
    dump_kill_restore(&ctx, &spec, 8, "counter-64m");
}

/// `dump --compress lz4|zstd`: counter with a 4 MiB heap of a repeating pattern is dumped
/// three times at one moment's distance: plainly and with zstd (left running), then with
/// lz4 (killed). Both compressed images are much smaller than the plain one, `check`
/// reads them, and the process restored from each in turn continues with the output of
/// an uninterrupted run.
#[test]
fn compressed_image_is_smaller_and_restores() {
    let ctx = Ctx::new("compressed_image_is_smaller_and_restores");
    let spec = counter_spec(&ctx, "counter", 50, &["heap=4096"]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let plain = ctx.path("plain.img");
    ctx.dump_leave_running(t.pid, &plain);
    let pid = t.pid.to_string();
    let dump = |img: &Path, how: &str, more: &[&str]| {
        let mut args = vec![
            OsStr::new("dump"),
            pid.as_ref(),
            "-o".as_ref(),
            img.as_os_str(),
            "--compress".as_ref(),
            how.as_ref(),
        ];
        args.extend(more.iter().map(OsStr::new));
        ctx.ckpt(&args).assert_ok();
    };
    let zstd = ctx.path("zstd.img");
    let at_zstd = t.stdout.bytes().len();
    ctx.oracle_before_dump(t.pid, &zstd);
    dump(&zstd, "zstd", &["--leave-running"]);
    let packed = ctx.path("lz4.img");
    let at_lz4 = t.stdout.bytes().len();
    ctx.oracle_before_dump(t.pid, &packed);
    dump(&packed, "lz4", &[]);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    for (what, img) in [("lz4", &packed), ("zstd", &zstd)] {
        assert!(
            size(img) * 3 < size(&plain),
            "the {what} image ({} bytes) should be far smaller than the plain one ({})",
            size(img),
            size(&plain)
        );
        ctx.ckpt(&[OsStr::new("check"), img.as_os_str()])
            .assert_ok();
    }
    // The lz4 image is of the moment the original was killed: with it, the output
    // goes on exactly; the zstd one is of a moment before, from which the restored
    // process prints the rest of the reference output again.
    let fin = ctx.restore(&packed, &[], In::Null).finish();
    assert_same_output(
        "counter restored from an lz4 image",
        &reference.stdout,
        &[before.clone(), fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), reference.status.code(), "exit status");
    assert!(at_lz4 >= at_zstd);
    let fin = ctx.restore(&zstd, &[], In::Null).finish();
    assert_continues_from_dump(
        "counter restored from a zstd image",
        &reference.stdout,
        &before,
        &fin.stdout,
        at_zstd,
    );
    assert_eq!(fin.status.code(), reference.status.code(), "exit status");
}

#[test]
fn counter_leave_running_then_restore_a_copy() {
    let ctx = Ctx::new("counter_leave_running_then_restore_a_copy");
    let spec = counter_spec(&ctx, "counter", 60, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(15);
    let printed_before_dump = t.stdout.bytes().len();
    let img = ctx.path("img");
    ctx.dump_leave_running(t.pid, &img);
    // It goes on printing.
    t.wait_lines(18);
    assert_running_untraced(t.pid, "original after dump --leave-running");
    t.kill();
    let original = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    assert_continues_from_dump(
        "counter --leave-running",
        &reference.stdout,
        &original,
        &fin.stdout,
        printed_before_dump,
    );
    assert_eq!(
        fin.status.code(),
        Some(3),
        "exit status of the restored copy"
    );
}

#[test]
fn restored_process_killed_by_a_signal_gives_128_plus_signal() {
    let ctx = Ctx::new("restored_process_killed_by_a_signal_gives_128_plus_signal");
    let spec = counter_spec(&ctx, "counter", 1000, &[]);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(2);
    assert!(
        send_signal(pid, libc::SIGTERM),
        "restored pid {pid} missing"
    );
    let st = r.wait();
    assert_eq!(
        st.code(),
        Some(128 + libc::SIGTERM),
        "ckpt restore exit status when the restored process dies of SIGTERM"
    );
    assert_no_process(pid, "after SIGTERM");
}

#[test]
fn restore_detached_prints_pid_and_process_runs_to_the_end() {
    let ctx = Ctx::new("restore_detached_prints_pid_and_process_runs_to_the_end");
    let spec = counter_spec(&ctx, "counter", 40, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore_detached(&img);
    assert_eq!(r.pid, pid, "restored with another PID");
    assert_running_untraced(pid, "detached restored process");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(3),
        "exit status of the detached process (reaped by us as subreaper)"
    );
    // Its stdout is ckpt restore's stdout, which also got the PID line first.
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        "counter restored --detach",
        &reference.stdout,
        &[before, after].concat(),
    );
}

/// Restore `img` (dumped from `t`, killed by the dump and not yet reaped) with
/// `--detach` while a thread reaps `t` after `delay`; the restored process must go on
/// as an uninterrupted run of `reference` would.
fn restore_while_reaping(
    ctx: &Ctx,
    mut t: Proc,
    img: &Path,
    delay: Duration,
    reference: &Finished,
    what: &str,
) {
    let pid = t.pid;
    let reaping = thread::spawn(move || {
        thread::sleep(delay);
        t.expect_killed();
        t.stdout.finish("original")
    });
    let mut r = ctx.restore_detached(img);
    let before = reaping.join().expect("reaping thread");
    assert_eq!(r.pid, pid, "{what}: restored with another PID");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(3),
        "{what}: exit status of the restored process"
    );
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(what, &reference.stdout, &[before, after].concat());
}

/// A dump that kills its process leaves a zombie until the parent reaps it (a shell does
/// so soon, not at once): restore gives the parent a moment, and names the zombie if it
/// never comes.
#[test]
fn restore_waits_a_moment_for_the_dumped_zombie_to_be_reaped() {
    let ctx = Ctx::new("restore_waits_a_moment_for_the_dumped_zombie_to_be_reaped");
    let spec = counter_spec(&ctx, "counter", 40, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    // Killed by the dump, it becomes a zombie once its exit has run (a moment after
    // ckpt returns: the static build returns sooner than the exit of even this small
    // process).
    let t0 = Instant::now();
    while proc_stat(pid).is_some_and(|s| s.0 != 'Z') && t0.elapsed() < timeout() {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        proc_stat(pid).map(|s| s.0),
        Some('Z'),
        "the dumped process is our unreaped child"
    );

    // 1. Not reaped at all while restore runs: refused, naming the zombie and its parent.
    ctx.ckpt(&[
        OsStr::new("restore"),
        img.as_os_str(),
        OsStr::new("--detach"),
    ])
    .assert_fails(1)
    .assert_stderr_mentions(&[&pid.to_string(), "zombie", &my_pid().to_string()]);

    // 2. Reaped a little after restore started: restore waits for it, and succeeds.
    restore_while_reaping(
        &ctx,
        t,
        &img,
        Duration::from_millis(300),
        &reference,
        "counter restored after its zombie was reaped",
    );
}

/// A killed process frees its memory before it becomes a zombie, which for a big one
/// takes a while after `ckpt dump` returned: a restore started at once waits for that
/// too (here 128 MiB; the PID is still held by the exiting process when restore checks).
#[test]
fn restore_right_after_dumping_a_big_process_waits_for_it_to_exit() {
    let ctx = Ctx::new("restore_right_after_dumping_a_big_process_waits_for_it_to_exit");
    let spec = counter_spec(&ctx, "counter", 8, &["heap=131072", "sleep=5"]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let img = ctx.path("img");
    ctx.dump(t.pid, &img);
    restore_while_reaping(
        &ctx,
        t,
        &img,
        Duration::ZERO,
        &reference,
        "128 MiB counter restored right after the dump",
    );
}

#[test]
fn dump_to_stdout_and_restore_from_stdin() {
    let ctx = Ctx::new("dump_to_stdout_and_restore_from_stdin");
    let spec = counter_spec(&ctx, "counter", 40, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("streamed.img");
    ctx.ckpt_io(
        &[
            OsStr::new("dump"),
            OsStr::new(&pid.to_string()),
            OsStr::new("-o"),
            OsStr::new("-"),
        ],
        None,
        Some(&img),
    )
    .assert_ok();
    t.expect_killed();
    let before = t.stdout.finish("original");
    ctx.check(&img).assert_ok();
    let spec_r = Spec::new(ckpt_bin())
        .arg("restore")
        .arg("-")
        .cwd(&ctx.dir)
        .stdin(In::Pipe)
        .env("RUST_BACKTRACE", "1");
    let mut r = ctx.spawn(&spec_r);
    r.write_stdin(&fs::read(&img).expect("read image"));
    r.close_stdin();
    let fin = r.finish();
    assert_same_output(
        "counter via -o - | restore -",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(3));
}

/// Restore stops its stubs on an int3 after each injected call; the kernel delivers
/// that SIGTRAP by force, which would reset a blocked or ignored disposition. A program
/// with a SIGTRAP handler (the one-stop mode runs) and one that ignores SIGTRAP (the
/// two-stop mode runs) raise it every step: both continue exactly as uninterrupted runs
/// (a lost handler or a reset SIG_IGN would kill them or change what they print).
#[test]
fn sigtrap_handler_and_ignored_sigtrap_survive_restore() {
    let ctx = Ctx::new("sigtrap_handler_and_ignored_sigtrap_survive_restore");
    for how in ["handler", "ignore"] {
        let spec = Spec::new(target("trapsig")).arg("30").arg(how);
        let fin = dump_kill_restore(&ctx, &spec, 8, &format!("trapsig-{how}"));
        assert_eq!(fin.status.code(), Some(0), "trapsig {how}");
    }
}

#[test]
fn signals_handlers_altstack_mask_and_pending_survive() {
    // SIGUSR2 is sent (and stays pending, blocked) before the dump; SIGUSR1 after the
    // restore, to the restored process, whose handler must run on the restored altstack.
    let ctx = Ctx::new("signals_handlers_altstack_mask_and_pending_survive");
    let spec = signals_spec(40, 3, 25, 20);
    let mut rp = ctx.spawn(&spec);
    let rpid = rp.pid;
    let reference = drive_signals(&mut rp, rpid, false, false);
    assert_eq!(reference.status.code(), Some(0));

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("waiting for SIGUSR2");
    t.signal(libc::SIGUSR2);
    t.wait_lines(10);
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_for("waiting for SIGUSR1");
    assert!(
        send_signal(pid, libc::SIGUSR1),
        "restored pid {pid} missing"
    );
    let fin = r.finish();
    assert_same_output("signals", &reference.stdout, &[before, fin.stdout].concat());
    assert_eq!(fin.status.code(), Some(0));
}

#[test]
fn signals_dumped_inside_sigsuspend() {
    let ctx = Ctx::new("signals_dumped_inside_sigsuspend");
    let spec = signals_spec(20, 2, 6, 20);
    let mut rp = ctx.spawn(&spec);
    let rpid = rp.pid;
    let reference = drive_signals(&mut rp, rpid, false, false);

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("waiting for SIGUSR2");
    t.signal(libc::SIGUSR2);
    t.wait_for("waiting for SIGUSR1");
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "signals");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Null);
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "restored signals");
    assert!(send_signal(pid, libc::SIGUSR1));
    let fin = r.finish();
    assert_same_output(
        "signals dumped in sigsuspend",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
}

#[test]
fn files_offsets_flags_cwd_umask_and_appended_log() {
    let ctx = Ctx::new("files_offsets_flags_cwd_umask_and_appended_log");
    let dir = files_dir(&ctx);
    let spec = Spec::new(target("files")).arg(&dir).arg("40");
    let reference = ctx.reference(&spec);
    let ref_log = fs::read(dir.join("log.txt")).expect("log.txt");
    let ref_data = fs::read(dir.join("data.bin")).expect("data.bin");

    files_dir(&ctx); // start afresh: no log.txt, no data.bin
    let mut t = ctx.spawn(&spec);
    t.wait_lines(12);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    assert_same_output(
        "files stdout",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_same_output(
        "files log.txt (O_APPEND)",
        &ref_log,
        &fs::read(dir.join("log.txt")).expect("log.txt"),
    );
    assert_same_output(
        "files data.bin (O_RDWR at offsets)",
        &ref_data,
        &fs::read(dir.join("data.bin")).expect("data.bin"),
    );
    assert_eq!(fin.status.code(), Some(0));
}

/// Runs `blocked_read` once on `all_input` for reference, then again with its first two
/// lines, and dumps it (killing it) while it blocks in read(2) for the third. Returns the
/// reference run, the PID and what the dumped run printed.
fn blocked_read_dumped_in_read(
    ctx: &Ctx,
    all_input: &[u8],
    img: &Path,
) -> (Finished, i32, Vec<u8>) {
    let spec = Spec::new(target("blocked_read")).stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(all_input);
    rp.close_stdin();
    let reference = rp.finish();

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.write_stdin(b"alpha\nbeta\n");
    t.wait_lines(2);
    wait_in_syscall(pid, libc::SYS_read, "blocked_read");
    ctx.dump(pid, img);
    t.expect_killed();
    (reference, pid, t.stdout.finish("original"))
}

#[test]
fn blocked_read_resumes_with_stdin_inherited_from_ckpt_restore() {
    let ctx = Ctx::new("blocked_read_resumes_with_stdin_inherited_from_ckpt_restore");
    let img = ctx.path("img");
    let (reference, pid, before) =
        blocked_read_dumped_in_read(&ctx, b"alpha\nbeta\ngamma\ndelta\n", &img);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_in_syscall(pid, libc::SYS_read, "restored blocked_read");
    r.write_stdin(b"gamma\n");
    r.wait_lines(1);
    r.write_stdin(b"delta\n");
    r.close_stdin();
    let fin = r.finish();
    assert_same_output(
        "blocked_read",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
}

#[test]
fn python3_loop_continues_after_restore() {
    let ctx = Ctx::new("python3_loop_continues_after_restore");
    let spec = python_spec(60, 0.02);
    dump_kill_restore(&ctx, &spec, 20, "python3 loop.py");
}

// ---------------------------------------------------------------------------------------
// The restored process's state is the dumped one: dump it again and compare the images

#[test]
fn state_of_restored_blocked_read_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_blocked_read_equals_dumped_state");
    let first = ctx.path("first.img");
    let (reference, pid, before) =
        blocked_read_dumped_in_read(&ctx, b"alpha\nbeta\ngamma\n", &first);

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_read, "restored blocked_read");
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    assert_same_image_state("blocked_read in read(2)", &a, &b, LEGIT_IMAGE_DIFFS);

    // And it still works after the second dump.
    r.write_stdin(b"gamma\n");
    r.close_stdin();
    let fin = r.finish();
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        "blocked_read restored, dumped again",
        &reference.stdout,
        &[before, after].concat(),
    );
}

#[test]
fn state_of_restored_signals_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_signals_equals_dumped_state");
    let spec = signals_spec(12, 2, 5, 10);
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("waiting for SIGUSR2");
    t.signal(libc::SIGUSR2);
    t.wait_for("waiting for SIGUSR1");
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "signals");
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "restored signals");
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    assert_same_image_state(
        "signals in sigsuspend with SIGUSR2 and SIGWINCH pending",
        &a,
        &b,
        LEGIT_IMAGE_DIFFS,
    );
    assert!(send_signal(pid, libc::SIGUSR1));
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0));
    let out = String::from_utf8_lossy(&fin.stdout);
    assert!(out.contains("end usr2 handled=1"), "{out}");
}

/// x86-64 and ia32 sleeps: nanosleep, clock_nanosleep (and its ia32 time64 twin).
const SLEEP_SYSCALLS: &[i64] = &[35, 230, 162, 267, 407];

/// Run `spec` until it printed `k` lines and sleeps (a step's sleep far longer than the
/// test), dump it (killing it), restore it detached, wait until it sleeps again, dump it
/// again with --leave-running and compare the two images: everything but what
/// legitimately differs must be equal. Present all-zero pages are left out of an image,
/// so they come back absent: an area may have fewer present pages the second time, but
/// the page data stored must be as large. `rem_is_req`: the program sleeps in an ia32
/// clock_nanosleep whose `rem` (esi) is not its request (edx): the dump re-issues the
/// sleep with the request pointed at `rem` (see `arch::x86::restart_block_in_place`), so
/// edx must be esi in both images.
fn restored_image_equals_dumped(ctx: &Ctx, spec: &Spec, k: usize, tag: &str, rem_is_req: bool) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    wait_in_any_syscall(pid, SLEEP_SYSCALLS, tag);
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();
    let mut r = ctx.restore_detached(&first);
    wait_in_any_syscall(pid, SLEEP_SYSCALLS, &format!("restored {tag}"));
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    r.kill();
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    let mut ignore = LEGIT_IMAGE_DIFFS.to_vec();
    // Pages present but all zero are not stored, so the restored process lacks them.
    // Runs are cut into records along present pages, so the record count and the image
    // size (a header and padding per record) follow; the page bytes are compared below.
    ignore.push("processes[*].vmas[*].pages_present");
    ignore.push("image.records");
    ignore.push("image.bytes");
    if rem_is_req {
        ignore.push("processes[0].threads[0].arch.regs.rdx");
        let regs = |j: &serde_json::Value, r: &str| {
            j["processes"][0]["threads"][0]["arch"]["regs"][r].clone()
        };
        assert!(
            regs(&a, "rsi").is_u64(),
            "{tag}: no esi in {}",
            a["processes"][0]["threads"][0]
        );
        // The dump itself points the interrupted sleep's request at rem (see
        // `arch::x86::restart_block_in_place`), in the task and in the image.
        assert_eq!(
            regs(&a, "rdx"),
            regs(&a, "rsi"),
            "{tag}: the dumped sleep's request should be its rem"
        );
        assert_eq!(
            regs(&b, "rdx"),
            regs(&a, "rsi"),
            "{tag}: the restored sleep's request should be the first image's rem"
        );
    }
    assert_same_image_state(tag, &a, &b, &ignore);
    let present = |j: &serde_json::Value| -> Vec<u64> {
        j["processes"][0]["vmas"]
            .as_array()
            .expect("vmas")
            .iter()
            .map(|v| v["pages_present"].as_u64().expect("pages_present"))
            .collect()
    };
    let (pa, pb) = (present(&a), present(&b));
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        assert!(
            y <= x,
            "{tag}: memory area {i} has {y} present pages after restore, {x} before"
        );
    }
    assert_eq!(
        a["image"]["page_bytes"], b["image"]["page_bytes"],
        "{tag}: page data stored in the first and the second image"
    );
    assert!(
        a["image"]["page_bytes"].as_u64().is_some_and(|n| n > 0),
        "{tag}: no page data in the image: {}",
        a["image"]
    );
}

#[test]
fn state_of_restored_counter_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_counter_equals_dumped_state");
    let spec = counter_spec(&ctx, "counter", 5, &["sleep=600000"]);
    restored_image_equals_dumped(&ctx, &spec, 1, "counter", false);
}

#[test]
fn state_of_restored_static_counter_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_static_counter_equals_dumped_state");
    let spec = counter_spec(&ctx, "counter-static", 5, &["sleep=600000"]);
    restored_image_equals_dumped(&ctx, &spec, 1, "counter-static", false);
}

#[test]
fn state_of_restored_python3_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_python3_equals_dumped_state");
    restored_image_equals_dumped(&ctx, &python_spec(5, 600.0), 1, "python3 loop.py", false);
}

#[test]
fn state_of_restored_ia32_program_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_ia32_program_equals_dumped_state");
    let spec = Spec::new(target("arch32")).arg("5").arg("sleep=600000");
    restored_image_equals_dumped(&ctx, &spec, 2, "arch32", true);
}

/// What the kernel shows of `pid` that no memory checksum would: /proc/PID/personality,
/// comm, the Umask, VmLck and signal lines of status, limits, cmdline, environ, the exe
/// link, every mapping's range and VmFlags (smaps), and whether it leads its process
/// group and its session.
fn proc_attrs(pid: i32) -> BTreeMap<String, String> {
    let read = |f: &str| {
        fs::read(format!("/proc/{pid}/{f}"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| panic!("read /proc/{pid}/{f}: {e}"))
    };
    let mut m = BTreeMap::new();
    for f in ["personality", "comm", "limits", "cmdline", "environ"] {
        m.insert(f.to_string(), read(f));
    }
    let status = read("status");
    for key in ["Umask:", "VmLck:", "SigBlk:", "SigIgn:", "SigCgt:"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("(none)");
        m.insert(key.to_string(), line.to_string());
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    m.insert("exe".into(), exe.display().to_string());
    let mut cur = String::new();
    let mut maps = String::new();
    for l in read("smaps").lines() {
        if let Some(flags) = l.strip_prefix("VmFlags:") {
            maps.push_str(&format!("{cur} {}\n", flags.trim()));
        } else if l.split_whitespace().next().is_some_and(|r| {
            r.contains('-') && r.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            cur = l.split_whitespace().next().unwrap_or_default().to_string();
        }
    }
    m.insert("smaps VmFlags".into(), maps);
    let stat = read("stat");
    let f: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let me = pid.to_string();
    m.insert("leads its group".into(), (f[2] == me).to_string());
    m.insert("leads its session".into(), (f[3] == me).to_string());
    m
}

/// `attrs` changes attributes that a restore which forgot them would not show at once
/// (memory locked, locked on fault, madvise flags, resource limits soft and hard, its
/// name, umask, its own process group inside the session of its starter, the shell-job
/// case) and runs under `setarch -R` (personality ADDR_NO_RANDOMIZE). Dumped while it
/// waits for a line on stdin, restored, it must show the kernel the same attributes as
/// the original (/proc), dump again to the same image, and print exactly what an
/// uninterrupted run prints (it prints the attributes each step, too).
#[test]
fn non_default_attributes_survive_restore() {
    let ctx = Ctx::new("non_default_attributes_survive_restore");
    let setarch = ["/usr/bin/setarch", "/bin/setarch"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setarch (util-linux) not found");
    let spec = Spec::new(setarch)
        .arg("x86_64")
        .arg("-R")
        .arg(target("attrs"))
        .arg("30")
        .arg("10")
        .arg("sleep=5")
        .env("CKPT_TEST_MARK", "environ of the original")
        .stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("step 10 attrs");
    rp.write_stdin(b"go on\n");
    rp.close_stdin();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "attrs: {reference:?}");

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("step 10 attrs");
    wait_in_syscall(pid, libc::SYS_read, "attrs");
    let original = proc_attrs(pid);
    // The attributes are not ours (a restore that left the stub's would show).
    let ours = proc_attrs(my_pid());
    for key in ["personality", "comm", "limits", "Umask:", "VmLck:"] {
        assert_ne!(
            original[key], ours[key],
            "attrs: {key} is the test's own; the check would not see it lost"
        );
    }
    assert_eq!(original["leads its group"], "true", "attrs: {original:?}");
    assert_eq!(
        original["leads its session"], "false",
        "attrs: {original:?}"
    );
    for flags in ["lo", "lf", "dc", "dd", "wf", "hg", "nh", "rr", "sr"] {
        assert!(
            original["smaps VmFlags"].contains(&format!(" {flags}")),
            "attrs: no mapping with VmFlag {flags}:\n{}",
            original["smaps VmFlags"]
        );
    }
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();
    let before = t.stdout.finish("original");

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_read, "restored attrs");
    let restored = proc_attrs(pid);
    let diff: Vec<String> = original
        .keys()
        .filter(|k| original[*k] != restored[*k])
        .map(|k| {
            format!(
                "{k}:\n  original: {:?}\n  restored: {:?}",
                original[k], restored[k]
            )
        })
        .collect();
    assert!(
        diff.is_empty(),
        "attrs: the restored process differs from the original in /proc:\n{}",
        diff.join("\n")
    );
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    assert_same_image_state(
        "attrs (non-default attributes)",
        &ctx.inspect_json(&first),
        &ctx.inspect_json(&second),
        LEGIT_IMAGE_DIFFS,
    );

    r.write_stdin(b"go on\n");
    r.close_stdin();
    let fin = r.finish();
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        "attrs (dumped, restored, dumped again)",
        &reference.stdout,
        &[before, after].concat(),
    );
}

// ---------------------------------------------------------------------------------------
// check and inspect

#[test]
fn check_accepts_a_good_image_and_inspect_describes_it() {
    let ctx = Ctx::new("check_accepts_a_good_image_and_inspect_describes_it");
    let spec = counter_spec(&ctx, "counter", 1000, &[]);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    ctx.check(&img).assert_ok();
    let human = ctx.ckpt(&[OsStr::new("inspect"), img.as_os_str()]);
    human.assert_ok();
    let text = human.stdout_text();
    assert!(
        text.contains(&pid.to_string()),
        "inspect should show the pid:\n{text}"
    );
    assert!(
        text.contains("map.bin"),
        "inspect should show the mapped file:\n{text}"
    );
    let json = ctx.inspect_json(&img);
    assert!(
        json_has_int(&json, "pid", i64::from(pid)),
        "inspect --json has no \"pid\": {pid}:\n{json}"
    );
    // Nothing was restored by check or inspect.
    assert_no_process(pid, "after check/inspect");
}

// ---------------------------------------------------------------------------------------
// Failure paths: a clear error, exit 1, nothing left behind

/// Dump a counter (killed), returning (image, pid).
fn dumped_counter(ctx: &Ctx) -> (std::path::PathBuf, i32) {
    // Not too many steps: a restore that wrongly succeeds runs to the end.
    let spec = counter_spec(ctx, "counter", 200, &[]);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    let img = ctx.path("good.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    (img, pid)
}

/// `ckpt restore BAD --pid-file F` must exit 1 mentioning one of `words`, and leave no
/// process with `pid`, no pid file, no new file and no stray child; `ckpt check BAD`
/// must exit 1 mentioning one of `words` too.
fn assert_restore_refused(ctx: &Ctx, bad: &Path, pid: i32, words: &[&str], what: &str) {
    let pid_file = ctx.path("restored.pid");
    let _ = fs::remove_file(&pid_file);
    let files_before = ctx.listing();
    let r = ctx.ckpt(&[
        OsStr::new("restore"),
        bad.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ]);
    r.assert_fails(1).assert_stderr_mentions(words);
    assert_no_process(pid, what);
    assert!(
        !pid_file.exists(),
        "{what}: failed restore wrote a pid file"
    );
    assert_eq!(
        ctx.listing(),
        files_before,
        "{what}: failed restore left files behind"
    );
    let strays = stray_children(&[]);
    assert!(
        strays.is_empty(),
        "{what}: failed restore left processes behind: {strays:?}"
    );
    ctx.check(bad).assert_fails(1).assert_stderr_mentions(words);
}

#[test]
fn restore_of_a_truncated_image_fails_cleanly() {
    let ctx = Ctx::new("restore_of_a_truncated_image_fails_cleanly");
    let (img, pid) = dumped_counter(&ctx);
    let len = fs::metadata(&img).expect("image").len() as usize;
    let bad = ctx.path("bad.img");
    for cut in [0, 7, 39, 40, 41, 100, len / 3, len / 2, len - 9, len - 1] {
        truncated_copy(&img, &bad, cut);
        assert_restore_refused(
            &ctx,
            &bad,
            pid,
            DAMAGED_IMAGE_WORDS,
            &format!("image truncated to {cut} of {len} bytes"),
        );
    }
    // The failed attempts held nothing: the intact image still restores and runs.
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(2);
    assert_running_untraced(pid, "restore of the intact image");
    r.kill();
}

#[test]
fn restore_of_a_bit_flipped_image_fails_cleanly() {
    let ctx = Ctx::new("restore_of_a_bit_flipped_image_fails_cleanly");
    let (img, pid) = dumped_counter(&ctx);
    let len = fs::metadata(&img).expect("image").len() as usize;
    let bad = ctx.path("bad.img");
    // magic, header fields, first record header, metadata, page data, end record
    for off in [
        3,
        9,
        20,
        35,
        45,
        70,
        200,
        len / 3,
        len / 2,
        len * 3 / 4,
        len - 20,
        len - 1,
    ] {
        flip_byte(&img, &bad, off);
        assert_restore_refused(
            &ctx,
            &bad,
            pid,
            DAMAGED_IMAGE_WORDS,
            &format!("image with byte {off} of {len} flipped"),
        );
    }
    ctx.check(&img).assert_ok();
}

#[test]
fn restore_with_a_changed_mapped_file_fails_cleanly() {
    let ctx = Ctx::new("restore_with_a_changed_mapped_file_fails_cleanly");
    let (img, pid) = dumped_counter(&ctx);
    let map = ctx.path("map.bin");
    let original = fs::read(&map).expect("map.bin");
    let mtime = fs::metadata(&map)
        .expect("map.bin")
        .modified()
        .expect("mtime");

    // 1. Rewritten in place: same inode and size, other content and mtime.
    let mut changed = original.clone();
    changed[5000] ^= 0xff;
    thread::sleep(Duration::from_millis(20));
    fs::write(&map, &changed).expect("rewrite map.bin");
    assert_restore_refused(&ctx, &img, pid, &["map.bin"], "mapped file rewritten");

    // Put content and mtime back: the identity matches again and check is happy.
    fs::write(&map, &original).expect("restore map.bin");
    fs::File::options()
        .write(true)
        .open(&map)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime back");
    ctx.check(&img).assert_ok();

    // 2. Replaced (renamed over) by a shorter file. (A copy with the same content and
    // mtime but another inode is deliberately not required to fail: an image may be
    // restored on another machine, where the same file has another inode.)
    let tmp = ctx.path("map.bin.new");
    fs::write(&tmp, &original[..original.len() - 100]).expect("write replacement");
    fs::rename(&tmp, &map).expect("replace map.bin");
    assert_restore_refused(&ctx, &img, pid, &["map.bin"], "mapped file replaced");

    // 3. Gone.
    fs::remove_file(&map).expect("remove map.bin");
    assert_restore_refused(&ctx, &img, pid, &["map.bin"], "mapped file removed");
}

#[test]
fn restore_with_the_pid_taken_fails_and_leaves_the_owner_alone() {
    let ctx = Ctx::new("restore_with_the_pid_taken_fails_and_leaves_the_owner_alone");
    let spec = counter_spec(&ctx, "counter", 40, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump_leave_running(pid, &img);

    let files_before = ctx.listing();
    let pid_file = ctx.path("restored.pid");
    let r = ctx.ckpt(&[
        OsStr::new("restore"),
        img.as_os_str(),
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
    ]);
    r.assert_fails(1)
        .assert_stderr_mentions(&[&pid.to_string()]);
    assert!(!pid_file.exists(), "failed restore wrote a pid file");
    assert_eq!(
        ctx.listing(),
        files_before,
        "failed restore left files behind"
    );
    ctx.check(&img)
        .assert_fails(1)
        .assert_stderr_mentions(&[&pid.to_string()]);
    let strays = stray_children(&[pid]);
    assert!(
        strays.is_empty(),
        "failed restore left processes behind: {strays:?}"
    );

    // The owner of the pid was not disturbed: it runs on and ends as it would have.
    assert_running_untraced(pid, "owner of the pid");
    let fin = t.finish();
    assert_same_output("owner of the pid", &reference.stdout, &fin.stdout);
    assert_eq!(fin.status.code(), Some(3));

    // With the pid free again, the image is fine.
    ctx.check(&img).assert_ok();
}

#[test]
fn check_lists_every_problem() {
    let ctx = Ctx::new("check_lists_every_problem");
    let spec = counter_spec(&ctx, "counter", 1000, &[]);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump_leave_running(pid, &img);
    let map = ctx.path("map.bin");
    let mut data = fs::read(&map).expect("map.bin");
    data[100] ^= 1;
    thread::sleep(Duration::from_millis(20));
    fs::write(&map, data).expect("rewrite map.bin");
    let r = ctx.check(&img);
    r.assert_fails(1);
    r.assert_stderr_mentions(&[&pid.to_string()]);
    r.assert_stderr_mentions(&["map.bin"]);
    assert_running_untraced(pid, "owner of the pid after check");
}

#[test]
fn dump_of_a_nonexistent_pid_fails_and_writes_nothing() {
    let ctx = Ctx::new("dump_of_a_nonexistent_pid_fails_and_writes_nothing");
    let pid = free_pid();
    let img = ctx.path("img");
    let before = ctx.listing();
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1)
        .assert_stderr_mentions(&[&pid.to_string()]);
    assert!(!img.exists(), "failed dump created {}", img.display());
    assert_eq!(ctx.listing(), before, "failed dump left files behind");
}

/// The anonymous areas of `pid` that smaps shows sealed (VmFlags `sl`; a kernel may seal
/// its own mappings, such as the vDSO, too).
fn sealed_anon_areas(pid: i32) -> Vec<(u64, u64)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut area = None;
    let mut sealed = Vec::new();
    for l in smaps.lines() {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if let Some((a, b)) = fields.first().and_then(|r| r.split_once('-')) {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                // Anonymous: no path after range, perms, offset, device, inode.
                area = (fields.len() == 5).then_some((a, b));
                continue;
            }
        }
        if let Some(flags) = l.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "sl") {
                sealed.extend(area);
            }
        }
    }
    sealed
}

/// A sealed area (mseal) is refused by name and the target runs on as before: in a small
/// process; in one holding a pidfd too (refused as well, but the memory map comes first,
/// so the area must be what the refusal names, even if the descriptors are read before
/// the areas' flags are known); and in one big enough (80 MiB resident) for smaps to be
/// read on a second thread.
#[test]
fn dump_refuses_a_sealed_area_and_leaves_the_target_running() {
    let ctx = Ctx::new("dump_refuses_a_sealed_area_and_leaves_the_target_running");
    for opts in [&[][..], &["pidfd"], &["pidfd", "resident=80"]] {
        let tag = format!("sealed {opts:?}");
        let mut spec = Spec::new(target("sealed")).arg("40").arg("sleep=10");
        for o in opts {
            spec = spec.arg(o);
        }
        let reference = ctx.reference(&spec);
        if reference.stdout.starts_with(b"mseal unsupported") {
            eprintln!("note: this kernel has no mseal; nothing to refuse");
            return;
        }
        let mut t = ctx.spawn(&spec);
        t.wait_lines(5);
        let pid = t.pid;
        ctx.track(pid);
        let sealed = sealed_anon_areas(pid);
        let [(start, end)] = sealed[..] else {
            panic!("{tag}: want one sealed area of its own, found {sealed:x?}");
        };
        let want = format!(
            "ckpt: cannot dump process {pid}: memory area {start:#x}-{end:#x} is a sealed \
             mapping (mseal); not supported yet"
        );
        assert_dump_refused(&ctx, &mut t, &reference, &want, &tag, || {});
    }
}

/// A mapped file whose path leads to another file by now (renamed over, the old one
/// still linked elsewhere) is refused: restore would map the other file. The target
/// runs on untouched.
#[test]
fn dump_refuses_a_mapped_file_whose_path_leads_elsewhere_now() {
    let tag = "dump_refuses_a_mapped_file_whose_path_leads_elsewhere_now";
    let ctx = Ctx::new(tag);
    let spec = counter_spec(&ctx, "counter", 40, &[]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let (map, keep, new) = (
        ctx.path("map.bin"),
        ctx.path("keep.bin"),
        ctx.path("map.bin.new"),
    );
    fs::hard_link(&map, &keep).expect("link map.bin");
    fs::write(&new, b"another file ".repeat(1000)).expect("write map.bin.new");
    fs::rename(&new, &map).expect("rename over map.bin");
    let want = format!(
        "ckpt: cannot dump process {}: mapped file {} (deleted) no longer exists under that \
         path (renamed or replaced)",
        t.pid,
        map.display()
    );
    // The original goes back, so the target's last check of the file on disk passes.
    assert_dump_refused(&ctx, &mut t, &reference, &want, tag, || {
        fs::rename(&keep, &map).expect("put map.bin back")
    });
}

/// `ckpt dump` of `t` (a child running `reference`'s program) fails with exit status 1
/// and a line of stderr starting with `want`, creates no image and leaves no file, and
/// the target runs on untraced with its memory map unchanged (`also` checks more before
/// it goes on), to the same end (output and exit status) as an uninterrupted run.
fn assert_dump_refused(
    ctx: &Ctx,
    t: &mut Proc,
    reference: &Finished,
    want: &str,
    tag: &str,
    also: impl Fn(),
) {
    let pid = t.pid;
    let img = ctx.path("img");
    let before = ctx.listing();
    let maps = || fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let maps_before = maps();
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    assert!(
        r.stderr.lines().any(|l| l.starts_with(want)),
        "{tag}: the refusal should start {want:?}; stderr:\n{}",
        r.stderr
    );
    assert!(!img.exists(), "{tag}: failed dump created the image");
    assert_eq!(
        ctx.listing(),
        before,
        "{tag}: failed dump left files behind"
    );
    assert_running_untraced(pid, tag);
    // No mapping (of the injected queries' scratch page) was left or lost.
    assert_eq!(
        maps(),
        maps_before,
        "{tag}: memory map after the failed dump"
    );
    also();
    let n = t.stdout.lines();
    t.wait_lines(n + 2);
    let fin = t.finish();
    assert_same_output(
        &format!("{tag}: target after the failed dump"),
        &reference.stdout,
        &fin.stdout,
    );
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{tag}: exit status of the target after the failed dump"
    );
}

/// fd kinds that dump does not support yet (an `fdkind` argument), with the start of the
/// refusal's exact words (the descriptor is 3; a socket's inode number follows). Remove a
/// kind from this list when its support lands (and add a round-trip test for it).
const UNSUPPORTED_FD_KINDS: &[(&str, &str)] = &[
    (
        "pidfd",
        "file descriptor 3 is a special file (pidfd) (anon_inode:[pidfd]); not supported yet",
    ),
    (
        "netlink",
        "file descriptor 3 is a netlink socket (NETLINK_ROUTE) (socket:[",
    ),
    (
        "packet",
        "file descriptor 3 is a packet socket (datagram) (socket:[",
    ),
];

#[test]
fn dump_refuses_unsupported_fds_and_leaves_the_target_running() {
    let ctx = Ctx::new("dump_refuses_unsupported_fds_and_leaves_the_target_running");
    for (kind, words) in UNSUPPORTED_FD_KINDS {
        let spec = Spec::new(target("fdkind"))
            .arg(kind)
            .arg("40")
            .arg("sleep=10");
        let reference = ctx.reference(&spec);
        let mut t = ctx.spawn(&spec);
        t.wait_lines(5);
        let pid = t.pid;
        ctx.track(pid);
        let fd3 = || fs::read_link(format!("/proc/{pid}/fd/3")).ok();
        let fd3_before = fd3();
        let want = format!("ckpt: cannot dump process {pid}: {words}");
        assert_dump_refused(&ctx, &mut t, &reference, &want, kind, || {
            assert_eq!(fd3(), fd3_before, "{kind}: fd 3 after the failed dump");
        });
    }
}

#[test]
fn killing_ckpt_restore_at_any_moment_leaves_nothing_half_built() {
    let ctx = Ctx::new("killing_ckpt_restore_at_any_moment_leaves_nothing_half_built");
    let spec = counter_spec(&ctx, "counter", 30, &["heap=4096", "sleep=10"]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");

    // How long a whole restore takes here, up to the restored process's first line.
    let start = Instant::now();
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let full = start.elapsed();
    r.kill();
    wait_pid(pid, timeout());
    drop(r);
    eprintln!("a restore takes about {full:?}");

    // Kill it early, at spread moments through the restore, and a bit after.
    let full_ms = full.as_millis() as u64;
    let mut delays: Vec<u64> = vec![0, 1, 2, 5];
    delays.extend((1..=13).map(|i| full_ms * i / 10));
    for delay_ms in delays {
        let mut r = ctx.restore(&img, &[], In::Null);
        thread::sleep(Duration::from_millis(delay_ms));
        r.kill();
        // Either nothing is left, or the restore had committed and the process runs on,
        // free, and finishes exactly as the uninterrupted run.
        let deadline = Instant::now() + Duration::from_secs(3);
        let committed = loop {
            match proc_stat(pid) {
                None => break false,
                Some(('Z', ppid)) => {
                    if ppid == my_pid() {
                        let st = wait_pid(pid, timeout());
                        // A zombie that ran to its end is a committed restore.
                        if st.and_then(|s| s.code()) == Some(3) {
                            break true;
                        }
                    }
                    if !pid_exists(pid) {
                        break false;
                    }
                }
                Some(_) => {
                    // Running freely, and still so a moment later (a stub whose parent
                    // died is killed at once by its parent-death signal).
                    let free = |pid| {
                        matches!(proc_stat(pid), Some(('R' | 'S' | 'D', _)))
                            && tracer_pid(pid) == Some(0)
                    };
                    if free(pid) {
                        thread::sleep(Duration::from_millis(50));
                        if free(pid) {
                            break true;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "ckpt restore killed after {delay_ms} ms left pid {pid} behind in state \
                 {:?}, tracer {:?}",
                proc_stat(pid),
                tracer_pid(pid)
            );
            thread::sleep(Duration::from_millis(2));
        };
        eprintln!("killed after {delay_ms} ms: committed = {committed}");
        if committed {
            if pid_exists(pid) {
                let st = wait_pid(pid, timeout());
                assert_eq!(
                    st.and_then(|s| s.code()),
                    Some(3),
                    "committed restore (ckpt restore killed after {delay_ms} ms) ended with \
                     {st:?}"
                );
            }
            let after = r.stdout.finish("restored after ckpt restore was killed");
            assert_same_output(
                &format!("restore committed before ckpt restore was killed ({delay_ms} ms)"),
                &reference.stdout,
                &[before.clone(), after].concat(),
            );
        }
        let strays = stray_children(&[]);
        assert!(
            strays.is_empty(),
            "killed after {delay_ms} ms: processes left behind: {strays:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The command line

#[test]
fn usage_errors_exit_2() {
    let ctx = Ctx::new("usage_errors_exit_2");
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["dump"],
        &["dump", "not-a-pid", "-o", "x.img"],
        &["dump", "1", "-o", "x.img", "--no-such-flag"],
        &["restore"],
        &["restore", "a.img", "b.img"],
        &["check"],
        &["inspect"],
    ];
    for args in cases {
        let r = ctx.ckpt(args);
        assert_eq!(
            r.code(),
            Some(2),
            "`ckpt {}` should be a usage error (exit 2): {r:?}",
            args.join(" ")
        );
        assert!(
            !r.stderr.trim().is_empty(),
            "usage error without a message: {args:?}"
        );
    }
    assert!(
        !ctx.path("x.img").exists(),
        "a usage error created an image"
    );
    let help = ctx.ckpt(&["--help"]);
    help.assert_ok();
    for cmd in ["dump", "restore", "check", "inspect", "demo"] {
        assert!(
            help.stdout_text().contains(cmd),
            "--help does not mention {cmd}"
        );
    }
}

/// The lines a `ckpt demo-workload` printed, without the `[workload pid N] ` prefix, and
/// the PIDs found in those prefixes.
fn workload_lines(out: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut lines = Vec::new();
    let mut pids = BTreeSet::new();
    for l in out.lines() {
        if let Some(rest) = l.trim_start().strip_prefix("[workload pid ") {
            let (pid, line) = rest.split_once("] ").expect("[workload pid N] line");
            pids.insert(pid.to_string());
            lines.push(line.to_string());
        }
    }
    (lines, pids)
}

#[test]
fn demo_shows_a_restored_process_continuing() {
    let ctx = Ctx::new("demo_shows_a_restored_process_continuing");
    // What the demo's workload prints when nothing interrupts it.
    let reference = ctx.ckpt(&["demo-workload", "12"]);
    reference.assert_ok();
    let (want, _) = workload_lines(&reference.stdout_text());
    assert_eq!(
        want.len(),
        12,
        "demo-workload 12:\n{}",
        reference.stdout_text()
    );

    let r = ctx.ckpt(&["demo"]);
    r.assert_ok();
    let out = r.stdout_text();
    let (got, pids) = workload_lines(&out);
    // Every step exactly once, in order, with the uninterrupted run's checksums.
    assert_eq!(
        got, want,
        "demo: the workload's steps (left) are not those of an uninterrupted run (right); \
         stdout:\n{out}\nstderr:\n{}",
        r.stderr
    );
    // One process all along: the restored one has the original's PID.
    assert_eq!(pids.len(), 1, "demo: workload PIDs {pids:?}:\n{out}");
    // And it was really checkpointed mid-run: steps before the dump and after the restore.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("demo: no {needle:?} in its output:\n{out}"))
    };
    let dumped = at("ckpt demo: checkpointed PID");
    let restored = at("ckpt demo: restored PID");
    let first = at("step  1/12");
    let last = at("step 12/12");
    assert!(
        first < dumped && dumped < restored && restored < last,
        "demo: the dump and restore did not happen between the first and the last step:\n{out}"
    );
    let strays = stray_children(&[]);
    assert!(strays.is_empty(), "demo left processes behind: {strays:?}");
}
