//! End-to-end tests of the core: checkpoint a running single-threaded process, kill it,
//! restore it, and check that it *continues* — its output is byte for byte that of an
//! uninterrupted run; `check` and `inspect` of a good image; the command line. The
//! restored state compared with the dumped one is in `e2e_core_state.rs`, the failure
//! paths in `e2e_core_failures.rs`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::collections::BTreeSet;
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
    if k == 0 {
        // Before its first line the program may still be in the dynamic loader, which
        // the restored copy goes on with before the state oracle can read it (a CI run:
        // libc mapped and a handler installed since the dump), with no output to tell
        // it moved: dumped without the oracle's snapshot; the output is still compared.
        ctx.track(pid);
        ctx.try_dump(pid, &img).assert_ok();
    } else {
        ctx.dump(pid, &img);
    }
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
    // 36: near the end, with four steps of 50 ms left for the dump to begin (two of 10
    // ms were too few on a loaded machine: the counter had exited).
    let ctx = Ctx::new("counter_dumped_at_different_moments");
    let spec = counter_spec(&ctx, "counter", 40, &["sleep=50"]);
    for k in [0, 1, 36] {
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
    // (The status first: a restore that failed printed nothing, which the output
    // check would report as a copy resuming at the end.)
    assert_eq!(
        fin.status.code(),
        Some(3),
        "exit status of the restored copy; ckpt restore's stderr:\n{}",
        text(&fin.stderr)
    );
    assert_continues_from_dump(
        "counter --leave-running",
        &reference.stdout,
        &original,
        &fin.stdout,
        printed_before_dump,
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
