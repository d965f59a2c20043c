//! End-to-end tests of the core's failure paths: damaged images, a changed file, a taken
//! PID, unsupported descriptors, a sealed area, a mapped file whose path leads elsewhere,
//! `ckpt restore` killed at any moment — each a clear error with nothing left behind.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

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
/// process; in one holding a pidfd too (the descriptors are read before the areas'
/// flags are known, and the area must still be what the refusal names); and in one big enough (80 MiB resident) for smaps to be
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
        "ckpt: cannot dump process {}: mapped file {} (deleted) is no longer linked under \
         that name (removed or replaced) but still is under another (a hard link), which \
         restore cannot know",
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
const UNSUPPORTED_FD_KINDS: &[(&str, &str)] = &[(
    "packet",
    "file descriptor 3 is a packet socket (datagram, protocol 0x88b7, on every interface) \
     in fanout group 5 (PACKET_FANOUT): the group's other members are not restored with it \
     (socket:[",
)];

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
