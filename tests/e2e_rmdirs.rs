//! End-to-end tests of working and root directories removed under a running process
//! (issue 14): `mkdir d; cd d; rmdir ../d`, or a build directory removed under the
//! process working in it. Restore makes the directory again for an instant in its
//! parent (with its mode), moves the process into it (or chroots it there) and removes
//! it: /proc/PID/cwd (or root) reads "NAME (deleted)" as before (the state oracle
//! compares the links inside dump and restore), and the process finds it as the
//! original did: mode and no links, getcwd and a listing failing with ENOENT, no file
//! made or opened in it, ".." leading to the same parent (for a root, to itself). A
//! restore failing as it makes the directory again leaves no name behind. A removed
//! working directory whose parent was removed too cannot be made again there: dump
//! refuses it, naming the process and the directory, and the process runs on.
//!
//! The target is `tests/targets/rmdirs.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs, chroot). Run with
//! cargo-nextest, one process per test (see README.md).

mod common;

use common::*;

fn spec(ctx: &Ctx, mode: &str) -> (std::path::PathBuf, Spec) {
    let dir = ctx.path("rmdirs");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = Spec::new(target("rmdirs")).arg(&dir).arg("60").arg(mode);
    (dir, spec)
}

/// `rmdirs MODE` dumped mid-run and restored finishes like an uninterrupted run, its
/// removed directory (`name` in DIR/PID) shown removed by /proc as before.
fn removed_dir_comes_back_removed(tag: &str, mode: &str, name: &str, link: &str) {
    let ctx = Ctx::new(tag);
    let (dir, spec) = spec(&ctx, mode);
    let reference = ctx.spawn(&spec).finish();
    for w in [
        "removed directory: mode 40751, 0 links",
        "getcwd: ENOENT",
        "listing: ENOENT",
        "a file made in it: ENOENT",
        "a file opened in it: ENOENT",
    ] {
        assert!(
            text(&reference.stdout).contains(w),
            "{tag}: the reference run should say {w:?}:\n{}",
            text(&reference.stdout)
        );
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let old = dir.join(pid.to_string()).join(name);
    let shown = std::fs::read_link(format!("/proc/{pid}/{link}")).expect("readlink");
    assert_eq!(
        shown,
        std::path::PathBuf::from(format!("{} (deleted)", old.display())),
        "{tag}: the original's {link}"
    );
    let img = ctx.path("rmdirs.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    assert_restore_fault_leaves_nothing(
        &ctx,
        &img,
        &[],
        "make a removed directory again",
        &[pid],
        &[],
    );
    assert!(
        !old.exists(),
        "{tag}: a failed restore left {}",
        old.display()
    );
    let mut r = ctx.restore(&img, &[], In::Null);
    // The restored process's link, read from outside while it runs.
    r.wait_for("step 10\n");
    let again = std::fs::read_link(format!("/proc/{pid}/{link}"));
    let fin = r.finish();
    assert!(!old.exists(), "{tag}: the restore left {}", old.display());
    if let Ok(again) = again {
        assert_eq!(again, shown, "{tag}: the restored process's {link}");
    }
    assert_tree_finished_like_reference(
        &format!("{tag} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &[pid],
    );
}

#[test]
fn a_removed_working_directory_comes_back_removed() {
    removed_dir_comes_back_removed(
        "a_removed_working_directory_comes_back_removed",
        "cwd",
        "d",
        "cwd",
    );
}

#[test]
fn a_removed_root_directory_comes_back_removed() {
    removed_dir_comes_back_removed(
        "a_removed_root_directory_comes_back_removed",
        "root",
        "r",
        "root",
    );
}

/// A working directory removed with the directory that held it (`rm -rf` of a tree the
/// process works deep in): restore could not make it again in a parent that is gone, so
/// dump refuses it before killing anything, naming the process and the directory; no
/// image is left and the process runs on to the same end as an uninterrupted run.
#[test]
fn dump_refuses_a_removed_working_directory_whose_parent_is_gone() {
    let tag = "dump_refuses_a_removed_working_directory_whose_parent_is_gone";
    let ctx = Ctx::new(tag);
    let (dir, spec) = spec(&ctx, "nested");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("img");
    let before = ctx.listing();
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    let want = format!(
        "process {pid}: the directory that held removed working directory {}/{pid}/n/d does \
         not exist",
        dir.display()
    );
    assert!(
        r.stderr.contains(&want),
        "{tag}: the refusal should say {want:?}; stderr:\n{}",
        r.stderr
    );
    assert!(!img.exists(), "{tag}: failed dump created the image");
    assert_eq!(
        ctx.listing(),
        before,
        "{tag}: failed dump left files behind"
    );
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
