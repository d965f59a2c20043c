//! `ckpt restore --lazy` (issue 17, part 3): the tree runs before its private anonymous
//! memory is copied; ckpt serves its faults from the image and copies the rest in the
//! background. `tests/targets/lazy.c` holds an area with a known pattern and checks it
//! after the restore, by MODE: all of it, from four threads at once, through read(2)
//! (a fault taken by the kernel), across a fork, and after madvise/munmap/mremap of
//! parts of it. Each restore's background copy is slowed (`CKPT_LAZY_STEP_MS`,
//! fault-injection builds: a step only after the userfaultfds were quiet that long) so
//! that the program runs while pages are still missing; the state oracle compares
//! the tree with the original once every page is in (no `um` area left: nothing of
//! the userfaultfd stays). Killing ckpt while pages are missing must kill the tree
//! (never a program reading zeros), and a failed restore leaves nothing.
//!
//! Needs root (ptrace, restoring PIDs). Run with cargo-nextest.

mod common;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Pages of the test area (MiB): big enough that the fill takes a while when slowed.
const MIB: &str = "24";

/// Whether some area of `pid` is still registered with a userfaultfd (`um` in its
/// VmFlags); false once the process is gone.
fn registered(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/smaps")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
    })
}

/// Start `lazy MODE`, wait until it is ready, take the oracle's snapshot and dump it
/// (killing it). Returns the image (under a name the automatic oracle of `Ctx::restore`
/// does not know: the lazy test compares after the fill) and the snapshot.
fn dumped(ctx: &Ctx, mode: &str) -> (PathBuf, i32, oracle::Snapshot) {
    dumped_with(ctx, mode, &[])
}

/// [`dumped`], ckpt dump run with `env` added.
fn dumped_with(ctx: &Ctx, mode: &str, env: &[(&str, &str)]) -> (PathBuf, i32, oracle::Snapshot) {
    let spec = Spec::new(target("lazy"))
        .arg(mode)
        .arg(MIB)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    ctx.track(pid);
    let before = oracle::Snapshot::take_once(pid);
    let img = ctx.path("lazy.img");
    let pid_s = pid.to_string();
    let args = ["dump", pid_s.as_str(), "-o"].map(std::ffi::OsStr::new);
    let d = arch::ckpt_env(ctx, &[&args[..], &[img.as_os_str()]].concat(), env);
    assert_eq!(d.status.code(), Some(0), "dump: {}", text(&d.stderr));
    t.expect_killed();
    wait_pids_gone(&[pid], mode);
    (img, pid, before)
}

/// Wait until the restored tree of `before` runs whole.
fn wait_up(before: &oracle::Snapshot, r: &mut Proc, what: &str) {
    let deadline = Instant::now() + timeout();
    while !oracle::restored_tree_up(before) {
        assert!(
            r.try_wait().is_none(),
            "{what}: ckpt restore ended:\n{}",
            r.stderr.text()
        );
        assert!(Instant::now() < deadline, "{what}: the tree never ran");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Restore `mode` lazily with the fill slowed, tell the program to check its memory at
/// once (while pages are still missing), expect `expect` from it, then compare the
/// tree with the original (oracle) once every page is in.
/// `oracle`: compare the kernel's view too (only for a program that changed nothing of
/// its own state meanwhile: the others create threads, pipes, children and mappings).
fn lazy_case(name: &str, mode: &str, expect: &str, oracle: bool) {
    lazy_case_with(name, mode, expect, oracle, &[]);
}

/// Whether the image ends with an index record (`image::tag::INDEX`: its payload ends
/// in "CKPTIDX1", then come its checksum and the end record, 64 bytes): a lazy restore
/// then finds the records' places in it instead of walking their headers.
fn has_index(img: &std::path::Path) -> bool {
    let b = std::fs::read(img).unwrap_or_default();
    b.len() >= 80 && &b[b.len() - 72..b.len() - 64] == b"CKPTIDX1"
}

/// [`lazy_case`] of an image dumped with `dump_env` (`CKPT_NO_INDEX=1`: an image as
/// written before the index record).
fn lazy_case_with(name: &str, mode: &str, expect: &str, oracle: bool, dump_env: &[(&str, &str)]) {
    let ctx = Ctx::new(name);
    let (img, pid, before) = dumped_with(&ctx, mode, dump_env);
    assert_eq!(
        has_index(&img),
        dump_env.is_empty(),
        "{name}: the image's index record"
    );
    let mut r = ctx.restore_with(
        &img,
        &["--lazy"],
        In::Pipe,
        &[],
        &[("CKPT_LAZY_STEP_MS", "50")],
    );
    wait_up(&before, &mut r, name);
    assert!(
        registered(pid),
        "{name}: the restored process has no area waiting for pages: was it restored lazily?"
    );
    r.write_stdin(b"go\n");
    r.wait_for(expect);
    let deadline = Instant::now() + timeout();
    while registered(pid) {
        assert!(Instant::now() < deadline, "{name}: the fill never ended");
        thread::sleep(Duration::from_millis(5));
    }
    if oracle {
        let after = oracle::Snapshot::take(pid).moved(true);
        oracle::assert_same_kernel_state(
            name,
            "lazy restore, once filled",
            oracle::Cmp::Restored,
            &before,
            &after,
            &[],
        );
    }
    r.write_stdin(b"end\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        text(&fin.stdout),
        expect,
        "{name}: stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
}

#[test]
fn a_lazily_restored_area_reads_back_its_pattern() {
    lazy_case("lazy_sum", "sum", "sum ok\n", true);
}

/// An image without the index record (as dumped before it existed) is still restored
/// lazily, its records found by walking their headers: the area's pattern reads back
/// and the oracle finds the original.
#[test]
fn an_image_without_an_index_record_is_read_through_its_headers() {
    lazy_case_with(
        "lazy_noindex",
        "sum",
        "sum ok\n",
        true,
        &[("CKPT_NO_INDEX", "1")],
    );
}

#[test]
fn four_threads_faulting_in_parallel_read_their_pages() {
    lazy_case("lazy_threads", "threads", "threads ok\n", false);
}

#[test]
fn read_into_a_missing_page_is_served_and_keeps_the_rest_of_the_page() {
    lazy_case("lazy_read", "read", "read ok\npage ok\nsum ok\n", false);
}

#[test]
fn a_fork_while_pages_are_missing_gives_the_child_the_image_pages() {
    lazy_case("lazy_fork", "fork", "parent ok\nchild ok\n", false);
}

#[test]
fn dropped_unmapped_and_moved_parts_of_a_lazy_area_stay_right() {
    lazy_case(
        "lazy_remap",
        "remap",
        "dropped ok\nmoved ok\nrest ok\n",
        false,
    );
}

/// ckpt killed while the program waits for pages: the tree is killed too (the watcher
/// keeps the userfaultfds open, so no thread reads a zero page meanwhile), and nothing
/// of it runs on.
#[test]
fn killing_the_server_mid_fill_kills_the_tree() {
    let name = "lazy_kill";
    let ctx = Ctx::new(name);
    let (img, pid, before) = dumped(&ctx, "sum");
    // (detached: ckpt prints the PID and stays until the memory is in)
    let mut r = ctx.restore_with(
        &img,
        &["--lazy", "--detach"],
        In::Pipe,
        &[],
        &[("CKPT_LAZY_STEP_MS", "200"), ("CKPT_LAZY_FAULT_MS", "20")],
    );
    wait_up(&before, &mut r, name);
    r.write_stdin(b"go\n");
    thread::sleep(Duration::from_millis(300));
    assert!(
        registered(pid),
        "{name}: the fill ended before ckpt was killed"
    );
    r.kill();
    wait_pids_gone(&[pid], name);
    // (all it wrote, up to the end of its output: every writer is gone)
    let out = text(&r.stdout.finish("the restored program's output"));
    eprintln!("{name}: the program wrote {out:?}");
    assert!(
        !out.contains("sum"),
        "{name}: the program went on after ckpt died: {out:?}"
    );
    // Nothing left: no process of ours but the ones the test started.
    let deadline = Instant::now() + timeout();
    loop {
        let stray = stray_children(&[]);
        if stray.is_empty() {
            break;
        }
        // (the watcher, ckpt's child, comes to us when ckpt dies: reaped once it ended)
        for &(p, st) in &stray {
            if st == 'Z' {
                wait_pids_gone(&[p], name);
            }
        }
        assert!(Instant::now() < deadline, "{name}: left behind: {stray:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A restore that fails at its last step before the point of no return (the server
/// and the watcher running) leaves nothing: no process, no watcher.
#[test]
fn a_failed_lazy_restore_leaves_nothing() {
    let name = "lazy_fail";
    let ctx = Ctx::new(name);
    let (img, pid, _) = dumped(&ctx, "sum");
    let mut r = ctx.restore_with(
        &img,
        &["--lazy"],
        In::Pipe,
        &[],
        &[("CKPT_FAULT", "detach")],
    );
    let st = r.wait();
    assert_ne!(
        st.code(),
        Some(0),
        "{name}: the restore did not fail:\n{}",
        r.stderr.text()
    );
    assert!(!pid_exists(pid) || proc_stat(pid).is_some_and(|s| s.0 == 'Z'));
    wait_pids_gone(&[pid], name);
    assert!(
        stray_children(&[]).is_empty(),
        "{name}: left behind: {:?}",
        stray_children(&[])
    );
}

/// The combinations --lazy does not take are refused before anything is made: standard
/// input, and `--lazy=touch` without `--new-pidns`.
#[test]
fn lazy_refuses_standard_input_and_touch_without_new_pidns() {
    let ctx = Ctx::new("lazy_refuse");
    let (img, _, _) = dumped(&ctx, "sum");
    let r = ctx.ckpt(&["restore", "--lazy", "-"]);
    r.assert_fails(2);
    // (--lazy with --new-pidns works: tests/e2e_many.rs)
    let r = ctx.ckpt(&["restore".as_ref(), "--lazy=touch".as_ref(), img.as_os_str()]);
    r.assert_fails(2);
}
