//! End-to-end tests of AIO contexts (io_setup) and io_uring instances (issue 14).
//!
//! A process holding an AIO context with three completed events not reaped (after five
//! reaped: the ring's head and tail are not 0) is dumped and restored: io_getevents
//! then returns those events with their data, obj and result, the bytes they read are
//! there, the ring is mapped at the context's ID as before, and a new request completes
//! (the whole output matches an uninterrupted run's; the state oracle compares the
//! kernel's view, the ring's area in the memory map included). A restore failing at
//! each step of making the context again leaves nothing behind. A ring a child inherited
//! across fork (the kernel gives the child no context) is refused at dump, naming both
//! processes, and the tree runs on. An io_uring instance is refused, the refusal naming
//! what its ring holds (queue sizes, submissions not consumed, completions not reaped,
//! registered files and buffers), by its mapped rings or by its descriptor.
//!
//! The targets are `tests/targets/{aioring,uring}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use common::*;

fn spec(dir: &std::path::Path, mode: &str) -> Spec {
    Spec::new(target("aioring"))
        .arg(dir)
        .arg("8")
        .arg(mode)
        .arg("sleep=200")
}

#[test]
fn aio_context_gives_its_completed_events_after_restore() {
    let tag = "aio_context_gives_its_completed_events_after_restore";
    let ctx = Ctx::new(tag);
    let (ref_dir, run_dir) = (ctx.path("ref"), ctx.path("run"));
    for d in [&ref_dir, &run_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let mut rp = ctx.spawn(&spec(&ref_dir, "plain"));
    let mut t = ctx.spawn(&spec(&run_dir, "plain"));
    t.wait_for("step 2\n");
    let pid = t.pid;
    ctx.track(pid);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let ring = maps
        .lines()
        .find(|l| l.contains("/[aio]"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{tag}: no AIO ring in the target's maps:\n{maps}"))
        .to_string();
    let img = ctx.path("aio.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);

    // The image holds the ring with its three events (96 bytes) between head 5 and tail 8.
    let j = ctx.inspect_json(&img);
    let procs = j["processes"].as_array().cloned().unwrap_or_default();
    let root = procs
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("{tag}: no process {pid} in the image"));
    let rings = root["aio"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        rings.len(),
        1,
        "{tag}: one AIO ring in the image: {rings:?}"
    );
    assert_eq!(
        (
            rings[0]["nr"].as_u64(),
            rings[0]["head"].as_u64(),
            rings[0]["tail"].as_u64()
        ),
        (Some(127), Some(5), Some(8)),
        "{tag}: the ring's size, head and tail"
    );

    // A restore failing at each step of the context's making leaves nothing behind.
    for step in ["io_setup", "mremap the ring", "reads up to the tail"] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &[pid], &[rp.pid]);
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    // The ring is back at its address while the restored process runs.
    r.wait_for("step 3\n");
    let after = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        after
            .lines()
            .any(|l| l.starts_with(&format!("{ring} ")) && l.contains("/[aio]")),
        "{tag}: the AIO ring should be at {ring} after restore:\n{after}"
    );
    let fin = r.finish();
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let want = "  event data 100 obj its iocb res 4 read [0123]\n  event data 101 obj its iocb \
                res 4 read [4567]\n  event data 102 obj its iocb res 4 read [89ab]\n  ring at \
                its ID: yes\n  event data 103 obj its iocb res 4 read [cdef]\n";
    assert!(
        text(&reference.stdout).contains(want),
        "{tag}: the reference run should reap the events:\n{}",
        text(&reference.stdout)
    );
    assert_restored_run_same(tag, "step 2", &reference, &output, &fin);
    assert_no_process(pid, tag);
}

/// A child's copy of its parent's ring (fork) is refused, naming both, and the tree runs
/// on to the end of an uninterrupted run.
#[test]
fn dump_refuses_an_aio_ring_copied_by_fork() {
    let tag = "dump_refuses_an_aio_ring_copied_by_fork";
    let ctx = Ctx::new(tag);
    let (ref_dir, run_dir) = (ctx.path("ref"), ctx.path("run"));
    for d in [&ref_dir, &run_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let reference = ctx.reference(&spec(&ref_dir, "fork"));
    let mut t = ctx.spawn(&spec(&run_dir, "fork"));
    t.wait_for("step 1\n");
    let pid = t.pid;
    ctx.track(pid);
    let pids = wait_process_tree(pid, 2, tag);
    let img = ctx.path("img");
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    let child = pids.iter().copied().find(|&p| p != pid).unwrap_or(0);
    let want = format!(
        "cannot dump process {child}: memory area {{}} is the ring of an AIO context of \
         process {pid}, copied by fork (the kernel gives the child no context for it)"
    );
    let (head, tail) = want.split_once("{}").unwrap_or((&want, ""));
    assert!(
        r.stderr.contains(head) && r.stderr.contains(tail),
        "{tag}: the refusal should say {want:?}; stderr:\n{}",
        r.stderr
    );
    assert!(!img.exists(), "{tag}: failed dump created the image");
    assert_running_untraced(pid, tag);
    let fin = t.finish();
    assert_same_output(
        &format!("{tag}: target after the failed dump"),
        &reference.stdout,
        &fin.stdout,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: the target's exit status"
    );
}

/// `ckpt dump` of the io_uring target (MODE `mode`) is refused with a message holding
/// each of `want` (with DIR for the target's directory), and the target runs on.
fn assert_uring_refused(tag: &str, mode: &str, want: &[&str]) {
    let ctx = Ctx::new(tag);
    let dir = ctx.path("run");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = Spec::new(target("uring"))
        .arg(&dir)
        .arg("20")
        .arg(mode)
        .arg("sleep=20");
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 1\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("img");
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    for w in want {
        let w = w.replace("DIR", &dir.display().to_string());
        assert!(
            r.stderr.contains(&w),
            "{tag}: the refusal should say {w:?}; stderr:\n{}",
            r.stderr
        );
    }
    assert!(!img.exists(), "{tag}: failed dump created the image");
    assert_running_untraced(pid, tag);
    let fin = t.finish();
    assert!(
        text(&fin.stdout).ends_with("step 20\ndone\n"),
        "{tag}: the target should run to its end:\n{}",
        text(&fin.stdout)
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: the target's exit status"
    );
}

const URING_HOLDS: &str = "an io_uring instance with 8 submission and 16 completion entries, \
     holding 2 submissions queued and not consumed by the kernel, 1 completion not reaped, \
     2 registered files (/dev/null, DIR/data), 1 registered buffer; requests the kernel \
     took may still be in flight, which no interface shows, and ckpt cannot make a ring \
     again with its queues and registrations";

/// An io_uring instance whose rings are mapped: refused by its rings' area, naming its
/// descriptor and what the ring holds.
#[test]
fn dump_refuses_a_mapped_io_uring_naming_what_it_holds() {
    assert_uring_refused(
        "dump_refuses_a_mapped_io_uring_naming_what_it_holds",
        "mapped",
        &[
            "is a ring of an io_uring instance (descriptor 3: ",
            URING_HOLDS,
            "); io_uring is not supported",
        ],
    );
}

/// An io_uring instance held by its descriptor alone: refused by it, the same way.
#[test]
fn dump_refuses_an_io_uring_descriptor_naming_what_it_holds() {
    let tag = "dump_refuses_an_io_uring_descriptor_naming_what_it_holds";
    assert_uring_refused(
        tag,
        "unmapped",
        &[
            "file descriptor 3 is ",
            URING_HOLDS,
            " (anon_inode:[io_uring]); not supported yet",
        ],
    );
}
