//! Restoring an incremental image through its chain, read in place (issue 17): each
//! page comes from the newest image of the chain that has it, and no full image is
//! written anywhere (neither next to the images nor in TMPDIR) while restoring.
//!
//! The target (`tests/targets/incr.c`) writes a pattern over a large area and then
//! obeys commands (write pages with a value, drop pages, map areas) and prints a
//! checksum of all its memory on request. Each restore is compared with the original at
//! the dump of its image by the program's own checksum and by the state oracle.
//!
//! Needs root. Run with cargo-nextest.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Send `cmd` to the program and return its one-line answer.
fn ask(p: &mut Proc, cmd: &str) -> String {
    let n = p.stdout.lines();
    p.write_stdin(format!("{cmd}\n").as_bytes());
    p.wait_lines(n + 1);
    p.stdout
        .text()
        .lines()
        .nth(n)
        .unwrap_or_default()
        .to_string()
}

/// `ckpt dump PID -o IMAGE EXTRA...`, asserted to succeed, with the oracle's snapshot
/// of the tree taken right before it.
fn dump(ctx: &Ctx, pid: i32, img: &Path, extra: &[&str]) {
    ctx.track(pid);
    ctx.oracle_before_dump(pid, img);
    let mut args: Vec<&OsStr> = vec![OsStr::new("dump"), OsStr::new("-o"), img.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let pid_s = pid.to_string();
    args.push(OsStr::new(&pid_s));
    let r = ctx.ckpt(&args);
    r.assert_ok();
    eprintln!(
        "dump {extra:?}: {} bytes in {:?}",
        std::fs::metadata(img).map(|m| m.len()).unwrap_or(0),
        r.elapsed
    );
}

fn spawn_incr(ctx: &Ctx, mib: &str) -> Proc {
    let spec = Spec::new(target("incr"))
        .arg(mib)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t
}

/// Restore `img` (the state oracle compares the tree with the original's at its dump),
/// ask the program for its checksum, end it; returns the sum.
fn restored_sum(ctx: &Ctx, img: &Path, extra: &[&str]) -> String {
    let t0 = Instant::now();
    let mut r = ctx.restore(img, extra, In::Pipe);
    let sum = ask(&mut r, "c");
    eprintln!(
        "restore {} {extra:?}: runs after {:?}",
        img.display(),
        t0.elapsed()
    );
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored program of {}: {}",
        img.display(),
        text(&fin.stderr)
    );
    sum
}

/// A chain of five images in which the same pages are written again and again (a run
/// overwritten in its middle by the next link, pages written in every link, pages
/// dropped and written again, an area mapped between links, one link compressed):
/// the last and a middle link restore the program as it was at their dump (its own
/// checksum, the state oracle), so does the last lazily, and `check` accepts the chain.
#[test]
fn pages_written_in_several_links_come_from_the_newest() {
    let name = "pages_written_in_several_links_come_from_the_newest";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, "32"); // 8192 pages
    let pid = t.pid;
    let links: Vec<PathBuf> = (0..5).map(|i| ctx.path(&format!("l{i}.img"))).collect();
    dump(&ctx, pid, &links[0], &["--track"]);
    // link 1: every third page of the first 1200, a run of 64 pages
    assert_eq!(ask(&mut t, "w 0 400 3 11"), "done");
    assert_eq!(ask(&mut t, "w 4000 64 1 12"), "done");
    let p0 = links[0].display().to_string();
    dump(&ctx, pid, &links[1], &["--parent", &p0, "--leave-running"]);
    // link 2 (compressed): every sixth page (half of link 1's), the middle of the run,
    // pages dropped
    assert_eq!(ask(&mut t, "w 0 200 6 21"), "done");
    assert_eq!(ask(&mut t, "w 4020 20 1 22"), "done");
    assert_eq!(ask(&mut t, "z 6000 16"), "done");
    let sum2 = ask(&mut t, "c");
    let p1 = links[1].display().to_string();
    dump(
        &ctx,
        pid,
        &links[2],
        &["--parent", &p1, "--leave-running", "--compress", "lz4"],
    );
    // link 3: pages of both earlier links, the run's start, an area mapped
    assert_eq!(ask(&mut t, "w 3 100 3 31"), "done");
    assert_eq!(ask(&mut t, "w 4000 5 1 32"), "done");
    assert_eq!(ask(&mut t, "m 40 66"), "done");
    let p2 = links[2].display().to_string();
    dump(&ctx, pid, &links[3], &["--parent", &p2, "--leave-running"]);
    // link 4: pages written in every link so far, the run's middle again, dropped pages
    // written again; this dump ends the program
    assert_eq!(ask(&mut t, "w 0 50 12 41"), "done");
    assert_eq!(ask(&mut t, "w 4015 10 1 42"), "done");
    assert_eq!(ask(&mut t, "w 6005 3 1 43"), "done");
    let sum4 = ask(&mut t, "c");
    let before_last = oracle::Snapshot::take_once(pid);
    let p3 = links[3].display().to_string();
    dump(&ctx, pid, &links[4], &["--parent", &p3]);
    t.expect_killed();
    wait_pids_gone(&[pid], name);

    ctx.check(&links[4]).assert_ok();
    assert_eq!(
        restored_sum(&ctx, &links[4], &[]),
        sum4,
        "memory after restoring the last link"
    );
    wait_pids_gone(&[pid], name);
    assert_eq!(
        restored_sum(&ctx, &links[2], &[]),
        sum2,
        "memory after restoring the middle link"
    );
    wait_pids_gone(&[pid], name);

    // Lazily: the pages are served from the chain's images (the fill slowed, so the
    // program reads its memory while pages are still missing).
    let mut r = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(&links[4])
        .arg("--lazy")
        .stdin(In::Pipe)
        .env("CKPT_LAZY_STEP_MS", "20")
        .cwd(&ctx.dir);
    r = r.env("RUST_BACKTRACE", "1");
    let mut r = ctx.spawn(&r);
    assert_eq!(
        ask(&mut r, "c"),
        sum4,
        "memory after a lazy restore of the last link"
    );
    let deadline = Instant::now() + timeout();
    while uffd_registered(pid) {
        assert!(Instant::now() < deadline, "the lazy fill never ended");
        thread::sleep(Duration::from_millis(5));
    }
    let after = oracle::Snapshot::take(pid).moved(true);
    oracle::assert_same_kernel_state(
        name,
        "lazy restore of the last link, once filled",
        oracle::Cmp::Restored,
        &before_last,
        &after,
        &[],
    );
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
}

/// Whether some area of `pid` is still registered with a userfaultfd (`um`).
fn uffd_registered(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/smaps")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
    })
}

/// The files `pid` holds open, as /proc/PID/fd shows them.
fn open_files(pid: i32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with('/'))
                .collect()
        })
        .unwrap_or_default()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What `ckpt restore` (PID `ck`) holds open in `imgs` and `tmp` must be the chain's
/// images and nothing else: no unnamed file (O_TMPFILE shows as "DIR/#N (deleted)"),
/// no file in TMPDIR; the directories' listings are as before.
fn assert_nothing_written(ck: i32, imgs: &Path, tmp: &Path, chain: &[PathBuf], when: &str) {
    let files = open_files(ck);
    let chain: BTreeSet<String> = chain.iter().map(|p| p.display().to_string()).collect();
    for f in &files {
        let inside =
            f.starts_with(&imgs.display().to_string()) || f.starts_with(&tmp.display().to_string());
        assert!(
            !f.contains("(deleted)") && (!inside || chain.contains(f)),
            "{when}: ckpt restore holds {f} open (a file it wrote?); all it holds: {files:?}"
        );
    }
    assert!(
        chain.iter().all(|c| files.contains(c)),
        "{when}: ckpt restore does not hold the chain's images open ({files:?}): was it \
         looked at at the right time?"
    );
    assert_eq!(
        listing(imgs),
        chain
            .iter()
            .map(|c| Path::new(c)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned())
            .collect(),
        "{when}: the images' directory"
    );
    assert!(
        listing(tmp).is_empty(),
        "{when}: TMPDIR holds {:?}",
        listing(tmp)
    );
}

/// While an incremental image is restored (paused after plan; and lazily, while its
/// pages are served), `ckpt restore` writes no file: it holds the chain's images open
/// and nothing else there or in TMPDIR. (Before, it merged the chain into an unnamed
/// file next to the image first.)
#[test]
fn restoring_a_chain_writes_no_file() {
    let name = "restoring_a_chain_writes_no_file";
    let ctx = Ctx::new(name);
    let imgs = ctx.path("imgs");
    let tmp = ctx.path("tmp");
    std::fs::create_dir_all(&imgs).expect("mkdir imgs");
    std::fs::create_dir_all(&tmp).expect("mkdir tmp");
    let mut t = spawn_incr(&ctx, "16");
    let pid = t.pid;
    let chain: Vec<PathBuf> = (0..3).map(|i| imgs.join(format!("l{i}.img"))).collect();
    dump(&ctx, pid, &chain[0], &["--track"]);
    assert_eq!(ask(&mut t, "w 0 300 7 11"), "done");
    let p0 = chain[0].display().to_string();
    dump(&ctx, pid, &chain[1], &["--parent", &p0, "--leave-running"]);
    assert_eq!(ask(&mut t, "w 7 100 14 12"), "done");
    let sum = ask(&mut t, "c");
    let p1 = chain[1].display().to_string();
    dump(&ctx, pid, &chain[2], &["--parent", &p1]);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    // The newest image first, as ckpt opens them; the listing is of names.
    let mut newest_first = chain.clone();
    newest_first.reverse();

    // Paused between plan and stage.
    let go = ctx.path("go");
    let spec = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(&chain[2])
        .stdin(In::Pipe)
        .env("CKPT_PAUSE_AFTER_PLAN", go.as_os_str())
        .env("TMPDIR", tmp.as_os_str())
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    let mut r = ctx.spawn(&spec);
    wait_file(&ctx.path("go.waiting"), &r);
    assert_nothing_written(r.pid, &imgs, &tmp, &chain, "restore paused after plan");
    std::fs::write(&go, b"").expect("let restore go on");
    assert_eq!(ask(&mut r, "c"), sum, "memory after restoring the chain");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
    wait_pids_gone(&[pid], name);

    // Lazily, while pages are still being served (the fill slowed).
    let spec = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(&chain[2])
        .arg("--lazy")
        .stdin(In::Pipe)
        .env("CKPT_LAZY_STEP_MS", "200")
        .env("TMPDIR", tmp.as_os_str())
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    let mut r = ctx.spawn(&spec);
    let deadline = Instant::now() + timeout();
    while !uffd_registered(pid) {
        assert!(
            r.try_wait().is_none(),
            "ckpt restore --lazy ended: {}",
            r.stderr.text()
        );
        assert!(
            Instant::now() < deadline,
            "the lazily restored program never ran"
        );
        thread::sleep(Duration::from_millis(2));
    }
    assert_nothing_written(r.pid, &imgs, &tmp, &chain, "lazy restore serving pages");
    assert_eq!(
        ask(&mut r, "c"),
        sum,
        "memory after a lazy restore of the chain"
    );
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
}

fn wait_file(p: &Path, r: &Proc) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < timeout(),
            "{} never appeared:\n{}",
            p.display(),
            r.stderr.text()
        );
        thread::sleep(Duration::from_millis(5));
    }
}
