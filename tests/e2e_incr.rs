//! Incremental dumps (issue 17, part 1): `ckpt dump --track` (a full image, the process
//! left running with its writes tracked by a userfaultfd in asynchronous write-protect
//! mode, held by a `ckpt track-hold` process), `ckpt dump --parent` (only the pages
//! written since), `ckpt restore` of the last image of a chain, `ckpt untrack`.
//!
//! The target (`tests/targets/incr.c`) writes a pattern over a large area and then
//! obeys commands (write pages, drop pages, map, unmap, move, fork, write shared
//! memory) and prints a checksum of all its memory on request. Each restore is compared
//! with the original at its last dump by the program's own checksum and by the state
//! oracle (run by `Ctx::restore`).
//!
//! Needs root. Run with cargo-nextest.

mod common;

use std::ffi::OsStr;
use std::path::Path;

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

/// `ckpt dump PID -o IMAGE EXTRA... --json`, asserted to succeed: its statistics.
fn dump_json(ctx: &Ctx, pid: i32, img: &Path, extra: &[&str]) -> serde_json::Value {
    ctx.track(pid);
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("dump"),
        OsStr::new("-o"),
        img.as_os_str(),
        OsStr::new("--json"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let pid_s = pid.to_string();
    args.push(OsStr::new(&pid_s));
    let r = ctx.ckpt(&args);
    r.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout_text()).unwrap_or_default();
    eprintln!(
        "dump {extra:?} of {pid}: {} pages, {} bytes, total {:?}",
        v["pages_written"], v["image_bytes"], r.elapsed
    );
    v
}

fn track(ctx: &Ctx, pid: i32, img: &Path) -> serde_json::Value {
    dump_json(ctx, pid, img, &["--track"])
}

/// `--parent` dump with the oracle's snapshot of the tree taken right before it.
fn next(ctx: &Ctx, pid: i32, parent: &Path, img: &Path, leave: bool) -> serde_json::Value {
    ctx.oracle_before_dump(pid, img);
    let p = parent.to_str().unwrap_or_default();
    if leave {
        dump_json(ctx, pid, img, &["--parent", p, "--leave-running"])
    } else {
        dump_json(ctx, pid, img, &["--parent", p])
    }
}

/// Restore `img`, ask the restored program for its checksum, end it; returns the sum.
fn restored_sum(ctx: &Ctx, img: &Path, extra: &[&str]) -> String {
    let mut r = ctx.restore(img, extra, In::Pipe);
    let sum = ask(&mut r, "c");
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

fn spawn_incr(ctx: &Ctx, args: &[&str]) -> Proc {
    let mut spec = Spec::new(target("incr")).stdin(In::Pipe).cwd(&ctx.dir);
    for a in args {
        spec = spec.arg(a);
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t
}

fn holder_files(pid: i32) -> bool {
    Path::new(&format!("/run/ckpt/track/{pid}.json")).exists()
        || Path::new(&format!("/run/ckpt/track/{pid}.sock")).exists()
}

/// Areas of `pid` with the `uw` VmFlag (registered for write protection).
fn tracked_areas(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
        .count()
}

/// Descriptors of any process that are userfaultfds, as (pid, fd).
fn userfaultfds_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
                })
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// 1% of a 64 MiB area written after the full dump: the incremental image holds about
/// those pages, and restoring it gives the memory and the kernel state of the original
/// at the incremental dump.
#[test]
fn incremental_image_holds_the_written_pages_and_restores_the_program_at_that_dump() {
    let name = "incremental_image_holds_the_written_pages_and_restores_the_program_at_that_dump";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["64"]);
    let pid = t.pid;
    let base = ctx.path("base.img");
    let b = track(&ctx, pid, &base);
    assert!(tracked_areas(pid) > 0, "no area of {pid} is tracked");
    assert!(
        userfaultfds_of(pid).is_empty(),
        "the tracked program holds a userfaultfd"
    );
    // 1% of 16384 pages, spread over the area.
    assert_eq!(ask(&mut t, "w 3 164 100 201"), "done");
    let sum = ask(&mut t, "c");
    let next_img = ctx.path("next.img");
    let n = next(&ctx, pid, &base, &next_img, false);
    t.expect_killed();
    assert!(
        !holder_files(pid),
        "the tracking outlived the killed process"
    );
    let (bp, np) = (
        b["pages_written"].as_u64().unwrap_or(0),
        n["pages_written"].as_u64().unwrap_or(0),
    );
    let (bb, nb) = (
        b["image_bytes"].as_u64().unwrap_or(0),
        n["image_bytes"].as_u64().unwrap_or(u64::MAX),
    );
    eprintln!("base: {bp} pages {bb} bytes; next: {np} pages {nb} bytes");
    assert!(bp >= 16384, "the full image has {bp} pages");
    // The written pages, plus the stack and the little libc writes meanwhile.
    assert!(
        (164..164 + 64).contains(&np),
        "the incremental image holds {np} pages for 164 written"
    );
    assert!(nb < bb / 20, "incremental {nb} bytes against full {bb}");
    let c = ctx.check(&next_img);
    c.assert_ok();
    assert_eq!(
        restored_sum(&ctx, &next_img, &[]),
        sum,
        "memory after restore"
    );
}

/// A chain of three images: restore of the last gives the memory at the last dump; the
/// middle one can still be restored on its own chain.
#[test]
fn a_chain_of_three_images_restores_from_the_last() {
    let name = "a_chain_of_three_images_restores_from_the_last";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["32"]);
    let pid = t.pid;
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    assert_eq!(ask(&mut t, "w 0 50 37 11"), "done");
    let mid = ctx.path("mid.img");
    next(&ctx, pid, &base, &mid, true);
    // Pages written in both deltas, in one only, and dropped.
    assert_eq!(ask(&mut t, "w 0 20 37 12"), "done");
    assert_eq!(ask(&mut t, "w 5 30 41 13"), "done");
    assert_eq!(ask(&mut t, "z 100 10"), "done");
    let sum = ask(&mut t, "c");
    let last = ctx.path("last.img");
    next(&ctx, pid, &mid, &last, false);
    t.expect_killed();
    assert_eq!(restored_sum(&ctx, &last, &[]), sum, "memory after restore");
    // The parent moved: found with --parent, its identity still checked.
    let moved = ctx.path("moved-mid.img");
    std::fs::rename(&mid, &moved).expect("rename");
    let r = ctx.ckpt(&[OsStr::new("check"), last.as_os_str()]);
    r.assert_fails(1)
        .assert_stderr_mentions(&["parent", "--parent"]);
    let r = ctx.ckpt(&[
        OsStr::new("check"),
        last.as_os_str(),
        OsStr::new("--parent"),
        moved.as_os_str(),
    ]);
    r.assert_ok();
    // Not its parent: refused before anything is made.
    let r = ctx.ckpt(&[
        OsStr::new("restore"),
        last.as_os_str(),
        OsStr::new("--parent"),
        base.as_os_str(),
    ]);
    r.assert_fails(1)
        .assert_stderr_mentions(&["not its parent"]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a refused restore left process {pid}"
    );
}

/// What an incremental dump refuses, before it touches the process: a process not
/// tracked, a parent that is not the last image of the tracking, tracking twice.
#[test]
fn incremental_dumps_of_untracked_processes_or_other_parents_are_refused() {
    let name = "incremental_dumps_of_untracked_processes_or_other_parents_are_refused";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["8"]);
    let pid = t.pid;
    ctx.track(pid);
    let plain = ctx.path("plain.img");
    ctx.dump_leave_running(pid, &plain);
    let out = ctx.path("refused.img");
    let dump = |extra: &[&str]| {
        let mut args = vec!["dump".to_string(), pid.to_string(), "-o".to_string()];
        args.push(out.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        ctx.ckpt(&args)
    };
    let p = plain.display().to_string();
    dump(&["--parent", &p])
        .assert_fails(1)
        .assert_stderr_mentions(&["not tracked", "--track"]);
    assert!(!out.exists());
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    dump(&["--track"])
        .assert_fails(1)
        .assert_stderr_mentions(&["already tracked", "untrack"]);
    assert_eq!(ask(&mut t, "w 0 4 1 9"), "done");
    let mid = ctx.path("mid.img");
    next(&ctx, pid, &base, &mid, true);
    // The tracking counts from mid now: base, or a plain image, is not its parent.
    let b = base.display().to_string();
    dump(&["--parent", &b])
        .assert_fails(1)
        .assert_stderr_mentions(&["tracked relative to", "mid.img"]);
    dump(&["--parent", &p])
        .assert_fails(1)
        .assert_stderr_mentions(&["tracked relative to"]);
    assert!(!out.exists());
    // Still tracked, and still running as before.
    assert!(holder_files(pid));
    assert!(ask(&mut t, "c").starts_with("sum "));
    let r = ctx.ckpt(&["untrack", &pid.to_string()]);
    r.assert_ok();
    ctx.ckpt(&["untrack", &pid.to_string()]).assert_fails(1);
    dump(&["--parent", &mid.display().to_string()])
        .assert_fails(1)
        .assert_stderr_mentions(&["not tracked"]);
}

/// `ckpt untrack` takes every trace of the tracking away: the areas' `uw` flag, any
/// userfaultfd, the holder; the kernel's view of the program (the oracle) is what it was
/// before `--track`, and the program runs on unchanged.
#[test]
fn untrack_leaves_no_trace() {
    let name = "untrack_leaves_no_trace";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["16"]);
    let pid = t.pid;
    let sum = ask(&mut t, "c");
    let before = oracle::Snapshot::take_once(pid);
    let uw_before = tracked_areas(pid);
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    assert!(tracked_areas(pid) > uw_before, "--track registered nothing");
    let st = std::fs::read_to_string(format!("/run/ckpt/track/{pid}.json")).unwrap_or_default();
    let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
    let holder = st["holder"].as_i64().unwrap_or(0) as i32;
    assert!(holder > 0, "no holder in the state file: {st}");
    assert!(
        !userfaultfds_of(holder).is_empty(),
        "the holder holds no userfaultfd"
    );
    assert!(userfaultfds_of(pid).is_empty());
    ctx.ckpt(&["untrack", &pid.to_string()]).assert_ok();
    assert_eq!(
        tracked_areas(pid),
        uw_before,
        "areas still tracked after untrack"
    );
    assert!(userfaultfds_of(pid).is_empty());
    assert!(!holder_files(pid), "the holder's files remain");
    let deadline = std::time::Instant::now() + timeout();
    while Path::new(&format!("/proc/{holder}")).exists()
        && std::fs::read_to_string(format!("/proc/{holder}/stat")).is_ok_and(|s| !s.contains(") Z"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "holder {holder} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = oracle::Snapshot::take_once(pid);
    oracle::assert_same_kernel_state(
        name,
        "the program after --track and untrack",
        oracle::Cmp::LeftRunning,
        &before,
        &after,
        &[],
    );
    assert_eq!(ask(&mut t, "c"), sum);
    assert_eq!(ask(&mut t, "w 0 3 1 5"), "done");
    t.close_stdin();
    assert_eq!(t.wait().code(), Some(0));
}

/// Areas that appear, go, move and grow while tracked, pages dropped, shared memory
/// written, a child forked: the incremental image restores all of it.
#[test]
fn tracking_survives_mmap_munmap_mremap_fork_and_shared_memory() {
    let name = "tracking_survives_mmap_munmap_mremap_fork_and_shared_memory";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["16"]);
    let pid = t.pid;
    // Two areas mapped before the full dump (tracked), one after.
    assert_eq!(ask(&mut t, "m 8 65"), "done");
    assert_eq!(ask(&mut t, "m 16 66"), "done");
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    assert_eq!(ask(&mut t, "u"), "done"); // a tracked area goes
    assert_eq!(ask(&mut t, "r"), "done"); // the other moves and grows
    assert_eq!(ask(&mut t, "m 4 67"), "done"); // a new one
    assert_eq!(ask(&mut t, "w 7 9 13 68"), "done");
    assert_eq!(ask(&mut t, "z 200 20"), "done");
    assert_eq!(ask(&mut t, "s 69"), "done");
    assert_eq!(ask(&mut t, "f"), "done");
    let pids = wait_process_tree(pid, 2, name);
    let sum = ask(&mut t, "c");
    let next_img = ctx.path("next.img");
    next(&ctx, pid, &base, &next_img, false);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    assert_eq!(
        restored_sum(&ctx, &next_img, &[]),
        sum,
        "memory after restore"
    );
}

/// Transparent huge pages: a page written in a huge page is found (with its huge page),
/// and the restored memory is the original's.
#[test]
fn tracking_works_over_transparent_huge_pages() {
    let name = "tracking_works_over_transparent_huge_pages";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["16", "thp"]);
    let pid = t.pid;
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    assert_eq!(ask(&mut t, "w 1 3 1000 70"), "done");
    let sum = ask(&mut t, "c");
    let next_img = ctx.path("next.img");
    let n = next(&ctx, pid, &base, &next_img, false);
    t.expect_killed();
    // At most the three huge pages written (512 pages each), and the stack.
    let np = n["pages_written"].as_u64().unwrap_or(u64::MAX);
    assert!(np < 3 * 512 + 64, "{np} pages for 3 written in huge pages");
    assert_eq!(
        restored_sum(&ctx, &next_img, &[]),
        sum,
        "memory after restore"
    );
}

/// An incremental dump that fails once it has scanned the written pages (which
/// protects them again: what it found would be lost) ends the tracking: no `uw` area,
/// no holder; the process runs on as before and later `--parent` dumps are refused.
#[test]
fn a_failed_incremental_dump_ends_the_tracking() {
    let name = "a_failed_incremental_dump_ends_the_tracking";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["8"]);
    let pid = t.pid;
    let uw_before = tracked_areas(pid);
    let base = ctx.path("base.img");
    track(&ctx, pid, &base);
    assert_eq!(ask(&mut t, "w 0 4 1 9"), "done");
    let sum = ask(&mut t, "c");
    let img = ctx.path("next.img");
    let spec = Spec::new(ckpt_bin())
        .arg("dump")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&img)
        .arg("--parent")
        .arg(&base)
        .arg("--leave-running")
        .env("CKPT_FAULT", "dump: written pages found")
        .cwd(&ctx.dir);
    let fin = ctx.spawn(&spec).finish();
    let stderr = text(&fin.stderr);
    assert!(
        !fin.status.success() && stderr.contains("injected fault"),
        "the dump with an injected fault must fail naming it; stderr:\n{stderr}"
    );
    assert!(!img.exists(), "a failed dump left {}", img.display());
    assert_running_untraced(pid, "after a failed incremental dump");
    assert!(!holder_files(pid), "the tracking outlived the failed dump");
    assert_eq!(tracked_areas(pid), uw_before, "areas still tracked");
    assert_eq!(ask(&mut t, "c"), sum);
    let again = ctx.path("again.img");
    let b = base.display().to_string();
    ctx.ckpt(&[
        "dump",
        &pid.to_string(),
        "-o",
        &again.display().to_string(),
        "--parent",
        &b,
    ])
    .assert_fails(1)
    .assert_stderr_mentions(&["not tracked"]);
}

/// A tree whose fork child still shares pages copy-on-write with its parent is not
/// tracked: write-protecting the shared pages would make the kernel copy them (and
/// untrack would not share them again). Refused before the tree is touched.
#[test]
fn a_tree_sharing_pages_copy_on_write_is_not_tracked() {
    let name = "a_tree_sharing_pages_copy_on_write_is_not_tracked";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["16"]);
    let pid = t.pid;
    assert_eq!(ask(&mut t, "f"), "done");
    let pids = wait_process_tree(pid, 2, name);
    for &p in &pids {
        ctx.track(p);
    }
    let sum = ask(&mut t, "c");
    let before = oracle::Snapshot::take_once(pid);
    let base = ctx.path("base.img");
    ctx.ckpt(&[
        OsStr::new("dump"),
        OsStr::new(&pid.to_string()),
        OsStr::new("-o"),
        base.as_os_str(),
        OsStr::new("--track"),
    ])
    .assert_fails(1)
    .assert_stderr_mentions(&["copy-on-write", "cannot track"]);
    assert!(!base.exists());
    assert!(!holder_files(pid));
    for &p in &pids {
        assert_eq!(tracked_areas(p), 0, "process {p} has tracked areas");
        assert_running_untraced(p, "after a refused --track");
    }
    let after = oracle::Snapshot::take_once(pid);
    oracle::assert_same_kernel_state(
        name,
        "the tree after a refused --track",
        oracle::Cmp::LeftRunning,
        &before,
        &after,
        &[],
    );
    assert_eq!(ask(&mut t, "c"), sum);
}

/// A chain of five images (the full `--track` dump and four `--parent` dumps), with
/// writes, dropped pages, areas mapped, unmapped, moved and grown, shared memory
/// written and a child forked between the links: the last image restores the program
/// as it was at the last dump (its own checksum of all its memory, its child's
/// included, and the state oracle), and so does a middle one once the original is
/// gone. A damaged middle link is found before anything is made.
#[test]
fn a_chain_of_five_images_with_maps_unmaps_and_a_fork_between_links() {
    let name = "a_chain_of_five_images_with_maps_unmaps_and_a_fork_between_links";
    let ctx = Ctx::new(name);
    let mut t = spawn_incr(&ctx, &["32"]);
    let pid = t.pid;
    assert_eq!(ask(&mut t, "m 8 65"), "done"); // tracked from the start
    let base = ctx.path("l0.img");
    track(&ctx, pid, &base);
    let links: Vec<_> = (1..=4).map(|i| ctx.path(&format!("l{i}.img"))).collect();
    // link 1: writes, a new area
    assert_eq!(ask(&mut t, "w 0 50 37 11"), "done");
    assert_eq!(ask(&mut t, "m 16 66"), "done");
    next(&ctx, pid, &base, &links[0], true);
    // link 2: the new area goes again, writes, dropped pages
    assert_eq!(ask(&mut t, "u"), "done");
    assert_eq!(ask(&mut t, "w 3 40 7 12"), "done");
    assert_eq!(ask(&mut t, "z 100 10"), "done");
    let sum2 = ask(&mut t, "c");
    next(&ctx, pid, &links[0], &links[1], true);
    // link 3: a child forked (tracked too), the first area moved and grown, shared
    // memory written, another area mapped
    assert_eq!(ask(&mut t, "f"), "done");
    let pids = wait_process_tree(pid, 2, name);
    for &p in &pids {
        ctx.track(p);
    }
    assert_eq!(ask(&mut t, "r"), "done");
    assert_eq!(ask(&mut t, "s 69"), "done");
    assert_eq!(ask(&mut t, "m 4 67"), "done");
    next(&ctx, pid, &links[1], &links[2], true);
    // link 4: writes over pages written in earlier links, the newest area unmapped,
    // pages dropped; this dump ends the program
    assert_eq!(ask(&mut t, "w 5 30 41 13"), "done");
    assert_eq!(ask(&mut t, "w 3 10 7 14"), "done");
    assert_eq!(ask(&mut t, "u"), "done");
    assert_eq!(ask(&mut t, "z 300 5"), "done");
    let sum4 = ask(&mut t, "c");
    let last = next(&ctx, pid, &links[2], &links[3], false);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let np = last["pages_written"].as_u64().unwrap_or(u64::MAX);
    assert!(np < 8192 / 4, "the last link holds {np} pages of 8192+");
    // A damaged middle link: refused before anything is made.
    let l2 = std::fs::read(&links[1]).expect("read link 2");
    let mut bad = l2.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x5a;
    std::fs::write(&links[1], &bad).expect("write link 2");
    let r = ctx.ckpt(&[OsStr::new("restore"), links[3].as_os_str()]);
    eprintln!("restore over a damaged link: {}", r.stderr);
    r.assert_fails(1);
    for &p in &pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "a refused restore left process {p}"
        );
    }
    std::fs::write(&links[1], &l2).expect("write link 2");
    // The last link, then the second.
    assert_eq!(
        restored_sum(&ctx, &links[3], &[]),
        sum4,
        "memory after restoring link 4"
    );
    wait_pids_gone(&pids, name);
    assert_eq!(
        restored_sum(&ctx, &links[1], &[]),
        sum2,
        "memory after restoring link 2"
    );
}
