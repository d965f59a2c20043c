//! End-to-end tests of file-system objects held by descriptors: FIFOs (named pipes)
//! shared by the processes of a tree with data in flight, file locks (flock, POSIX and
//! OFD record locks) taken again at restore, O_PATH descriptors, inotify watches. Each
//! run is dumped mid-way and restored, and its whole output compared byte for byte with
//! an uninterrupted run's; refusals are checked to leave nothing behind.
//!
//! The targets are `tests/targets/{fifo,locks,opath,inotify}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Length of a byte string of `inspect --json` (an array of numbers, or a string).
fn json_bytes_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::String(s) => s.len(),
        _ => 0,
    }
}

/// A fresh directory for one run of a target (outside the test directory when it must
/// survive the test's own listing checks).
fn run_dir(ctx: &Ctx, sub: &str) -> PathBuf {
    let d = ctx.path(sub);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

/// Start `spec` and wait for `k` lines, with its tree (`n` processes); dump it (which
/// kills it) and return (image, pids, output before the dump).
fn dump_tree(
    ctx: &Ctx,
    spec: &Spec,
    k: usize,
    n: usize,
    tag: &str,
) -> (PathBuf, Vec<i32>, Vec<u8>) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pids = wait_process_tree(t.pid, n, tag);
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&pids, tag);
    (img, pids, before)
}

/// `ckpt restore IMG` must exit 1 mentioning one of `words` and leave no process of
/// `pids` and no stray child (but those in `except`, e.g. a reference run); `ckpt check
/// IMG` must refuse with one of `words` too.
fn assert_refused(ctx: &Ctx, img: &Path, pids: &[i32], except: &[i32], words: &[&str], what: &str) {
    ctx.check(img).assert_fails(1).assert_stderr_mentions(words);
    let r = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1).assert_stderr_mentions(words);
    for &p in pids {
        assert_no_process(p, what);
    }
    let strays = stray_children(except);
    assert!(
        strays.is_empty(),
        "{what}: failed restore left processes behind: {strays:?}"
    );
}

// ---------------------------------------------------------------------------------------
// FIFOs

#[test]
fn fifo_between_two_processes_keeps_data_in_flight_and_capacity() {
    let ctx = Ctx::new("fifo_between_two_processes_keeps_data_in_flight_and_capacity");
    const STEPS: u32 = 60;
    const AHEAD: u32 = 6;
    let spec_in = |d: &Path| {
        Spec::new(target("fifo"))
            .arg(STEPS.to_string())
            .arg(AHEAD.to_string())
            .arg(d)
            .arg("sleep=15")
    };
    let rdir = run_dir(&ctx, "ref");
    let dir = run_dir(&ctx, "run");
    let mut rp = ctx.spawn(&spec_in(&rdir));
    let (img, pids, before) = dump_tree(&ctx, &spec_in(&dir), 10, 2, "fifo");
    assert_has_kinds(&ctx, &img, &["Fifo"], "fifo");
    let j = ctx.inspect_json(&img);
    let fifos = j["fifos"]
        .as_array()
        .unwrap_or_else(|| panic!("fifo: no fifos array in the image: {j}"));
    assert_eq!(
        fifos.len(),
        1,
        "fifo: one FIFO shared by the tree: {fifos:?}"
    );
    assert_eq!(fifos[0]["capacity"], 16384, "fifo: capacity in the image");
    let buffered = json_bytes_len(&fifos[0]["data"]);
    assert!(
        buffered >= 32 * 2 && buffered % 32 == 0,
        "fifo: whole records should be in flight at the dump; the image holds {buffered} bytes"
    );

    // The FIFO must exist, as a FIFO, at restore: moved away, then a regular file in its
    // place, restore is refused (by plan, naming it) and leaves nothing behind.
    let chan = dir.join("chan");
    let aside = dir.join("chan.aside");
    fs::rename(&chan, &aside).expect("move the FIFO away");
    assert_refused(&ctx, &img, &pids, &[rp.pid], &["chan"], "fifo missing");
    fs::write(&chan, b"not a fifo").expect("write a regular file");
    assert_refused(
        &ctx,
        &img,
        &pids,
        &[rp.pid],
        &["chan"],
        "fifo replaced by a file",
    );
    fs::remove_file(&chan).expect("remove the regular file");
    fs::rename(&aside, &chan).expect("put the FIFO back");
    // A FIFO that someone else has open now would be shared with them: refused too.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _other = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&chan)
            .expect("open the FIFO from outside");
        assert_refused(
            &ctx,
            &img,
            &pids,
            &[rp.pid],
            &["chan"],
            "fifo open by another process",
        );
    }

    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "fifo: reference run");
    assert_tree_finished_like_reference("fifo", &reference.stdout, before, &fin, &pids);
}
