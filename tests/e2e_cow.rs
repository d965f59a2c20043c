//! Private pages a fork tree still shares copy-on-write come back shared (issue 13):
//! `tests/targets/cow.c` sets up a parent, two children and a grandchild that share
//! some pages of an area and not others (written by one side after the fork, dropped
//! with MADV_DONTNEED in the child, pages of zeros, a read-only area, an area only the
//! child and grandchild have). The state oracle (run by `Ctx::dump` and `Ctx::restore`)
//! compares, per area and pair of processes, how many pages are the same frame before
//! the dump and after the restore; the program then checks every byte of its memory in
//! each process.
//!
//! Needs root (ptrace, restoring PIDs, pagemap frame numbers). Run with cargo-nextest.

mod common;

use common::*;

/// Start the tree, dump it (killing it), restore it attached and have every process
/// check its memory. Returns the image's size.
fn dump_restore_check(name: &str) -> u64 {
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("cow")).stdin(In::Pipe).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let pids = wait_process_tree(pid, 4, name);
    let img = ctx.path("cow.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, name);
    let size = std::fs::metadata(&img).map(|m| m.len()).unwrap_or(0);
    // (the oracle compares the restored tree with the original as soon as it runs)
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"check\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        text(&fin.stdout),
        "R ok\nC1 status 0\nC2 status 0\n",
        "{name}: what the restored processes found in their memory; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
    size
}

#[test]
fn pages_shared_copy_on_write_in_a_fork_tree_come_back_shared() {
    let size = dump_restore_check("pages_shared_copy_on_write_in_a_fork_tree_come_back_shared");
    // Stored once: R's 88 pages, C1's 8 written ones and N, G's one; not the 3 x ~80
    // pages the children share (plus stacks and libraries' data: well under 200 pages
    // more).
    assert!(
        size < (88 + 8 + 4 + 1 + 200) * 4096,
        "the image holds {size} bytes: are the shared pages stored once per process?"
    );
}

/// Adjacent private anonymous areas of equal attributes that the kernel kept apart (each
/// with its own anon_vma, one without any page) come back apart, and two it merged come
/// back merged: the oracle compares /proc/PID/smaps area by area.
#[test]
fn adjacent_anonymous_areas_the_kernel_kept_apart_stay_apart() {
    let name = "adjacent_anonymous_areas_the_kernel_kept_apart_stay_apart";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("apart")).stdin(In::Pipe).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready ");
    let pid = t.pid;
    let anon_lines = |pid: i32| -> usize {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().count() == 5 && l.contains(" rw-p "))
            .count()
    };
    let before = anon_lines(pid);
    let img = ctx.path("apart.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    // (the oracle compares the restored process with the original as soon as it runs)
    let mut r = ctx.restore(&img, &[], In::Pipe);
    assert_eq!(
        anon_lines(pid),
        before,
        "{name}: unnamed read-write private areas in /proc/{pid}/maps"
    );
    r.write_stdin(b"check\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(text(&fin.stdout), "ok\n", "{name}: {}", text(&fin.stderr));
    assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
}
