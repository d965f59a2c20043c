//! Every step of restore forced to fail in turn (`CKPT_FAULT=#1` .. `#N`, N from a traced
//! restore, `CKPT_FAULT_TRACE=1`), over a small 64-bit program, a 32-bit (ia32) one, a
//! multi-threaded one and one with timers running and signals pending. Each failing
//! restore must exit 1 with a message naming the step that failed, print nothing of the
//! program, and leave no process, thread ID, file or child of ours behind (mappings live
//! only in processes, so no process means no mapping). After the whole sweep the image
//! still restores and the program continues exactly as an uninterrupted run.
//!
//! No step is skipped or sampled: the targets are kept small so that a whole sweep takes
//! a few seconds.
//!
//! Needs root and the `fault-injection` feature. Run with cargo-nextest, one process per
//! test (see README.md).

mod common;

use std::time::Instant;

use common::*;

/// `ckpt restore IMG` attached, with `CKPT_FAULT_TRACE=1` (and a fault that never hits):
/// it must restore the program, which must finish like `reference`. Returns the names of
/// the steps, in order.
fn traced_restore(
    ctx: &Ctx,
    img: &std::path::Path,
    reference: &Finished,
    before: &[u8],
    tag: &str,
) -> Vec<String> {
    let spec = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(img)
        .env("RUST_BACKTRACE", "1")
        .env("CKPT_FAULT", "no such step")
        .env("CKPT_FAULT_TRACE", "1")
        .cwd(&ctx.dir);
    let fin = ctx.spawn(&spec).finish();
    let trace = text(&fin.stderr);
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{tag}: the traced restore's exit status; stderr:\n{trace}"
    );
    assert_same_output(
        &format!("{tag} (restored with CKPT_FAULT_TRACE)"),
        &reference.stdout,
        &[before, &fin.stdout[..]].concat(),
    );
    let steps: Vec<String> = trace
        .lines()
        .filter_map(|l| l.strip_prefix("ckpt: step #"))
        .enumerate()
        .map(|(i, l)| {
            let (n, rest) = l.split_once(' ').expect("step line: number and name");
            assert_eq!(
                n,
                (i + 1).to_string(),
                "{tag}: steps out of order:\n{trace}"
            );
            let name = rest.rsplit_once(" (at ").map_or(rest, |(name, _)| name);
            name.to_string()
        })
        .collect();
    assert!(
        steps.len() >= 50,
        "{tag}: only {} steps traced (is the fault-injection feature on?):\n{trace}",
        steps.len()
    );
    steps
}

/// Start `spec` (`reference` is its uninterrupted run), dump it once it printed `k`
/// lines (and, if `threads` > 1, runs that many threads), then make every step of its
/// restore fail in turn, then restore it for real.
fn every_step_fails_in_turn(
    ctx: &Ctx,
    spec: &Spec,
    reference: &Finished,
    k: usize,
    threads: usize,
    tag: &str,
) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    let tids = tasks(pid);
    assert_eq!(
        tids.len(),
        threads,
        "{tag}: threads of the original: {tids:?}"
    );
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], &format!("{tag}: original after the dump"));

    let steps = traced_restore(ctx, &img, reference, &before, tag);
    for &id in &tids {
        assert_no_process(id, &format!("{tag}: after the traced restore"));
    }
    // A fault landing after the last step would let the restore succeed: the trace is
    // the whole list.
    let files = ctx.listing();
    let start = Instant::now();
    for (i, name) in steps.iter().enumerate() {
        let n = i + 1;
        let stderr =
            assert_restore_fault_leaves_nothing(ctx, &img, &[], &format!("#{n}"), &tids, &[]);
        let want = format!("ckpt: restore failed: injected fault at step \"{name}\"");
        assert!(
            stderr
                .lines()
                .any(|l| l.trim() == format!("{want} (testing)")),
            "{tag}: restore failing at step #{n} ({name}) does not say so: want a line \
             {want:?} ...; stderr:\n{stderr}"
        );
        assert_eq!(
            ctx.listing(),
            files,
            "{tag}: restore failing at step #{n} ({name}) left files behind"
        );
    }
    eprintln!(
        "{tag}: all {} steps failed in turn, in {:?}",
        steps.len(),
        start.elapsed()
    );

    // None of the failures held anything: the image restores and the program finishes
    // exactly as the uninterrupted run.
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_eq!(tasks(pid), tids, "{tag}: the restored process's threads");
    let fin = r.finish();
    assert_same_output(
        &format!("{tag} (every restore step failed in turn, then restored)"),
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{tag}: exit status of the restored program; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_no_process(pid, tag);
}

#[test]
fn every_restore_step_fails_in_turn_counter() {
    let ctx = Ctx::new("every_restore_step_fails_in_turn_counter");
    let spec = counter_spec(&ctx, "counter", 40, &["heap=16", "sparse=64", "sleep=5"]);
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(3));
    every_step_fails_in_turn(&ctx, &spec, &reference, 8, 1, "counter");
}

#[test]
fn every_restore_step_fails_in_turn_ia32() {
    let ctx = Ctx::new("every_restore_step_fails_in_turn_ia32");
    let spec = Spec::new(target("arch32")).arg("40").arg("sleep=5");
    let reference = ctx.reference(&spec);
    assert!(
        reference
            .status
            .code()
            .is_some_and(|c| (20..70).contains(&c)),
        "arch32 reference: {:?}",
        reference.status
    );
    every_step_fails_in_turn(&ctx, &spec, &reference, 12, 1, "arch32");
}

#[test]
fn every_restore_step_fails_in_turn_threads() {
    let ctx = Ctx::new("every_restore_step_fails_in_turn_threads");
    // 5 ms naps: the 45 rounds left after the dump take 2 s, long enough for the test
    // to see the restored threads even on a loaded machine (2 ms: a CI run under load
    // found the program finished before it looked).
    let spec = Spec::new(target("threads")).arg("60").arg("sleep=5000");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));
    every_step_fails_in_turn(&ctx, &spec, &reference, 15, 9, "threads");
}

#[test]
fn every_restore_step_fails_in_turn_timers() {
    let ctx = Ctx::new("every_restore_step_fails_in_turn_timers");
    // 14 ticks of 100 ms; the pending signals are unblocked at tick 10, after the dump.
    let spec = Spec::new(target("timers")).arg("14").arg("10");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));
    every_step_fails_in_turn(&ctx, &spec, &reference, 4, 1, "timers");
}
