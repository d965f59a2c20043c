//! End-to-end tests of more descriptors (issue 14). Process descriptors (pidfds): a process holding a pidfd
//! of itself (non-blocking), of a child made with clone(CLONE_PIDFD) and a dup of it, of
//! a child that exited and is not reaped yet, and a descriptor of its child taken with
//! pidfd_getfd, is dumped mid-way and restored: it goes on signalling itself through its
//! pidfd, waits for the child and the zombie with poll and waitid(P_PIDFD), and its whole
//! output and exit status match an uninterrupted run's (the state oracle compares the
//! kernel's view, fdinfo's Pid and flags included, inside dump and restore). A pidfd of a
//! process outside the tree is refused at dump, naming it, and the process runs on; so
//! are an io_uring instance and a fanotify group with a permission mark (AIO contexts:
//! tests/e2e_aio.rs).
//! An epoll instance whose watched descriptors were moved (dup2) or closed (the file
//! still open under another number) keeps its items under the numbers they were added
//! under, and epoll_wait reports their data as before.
//!
//! The targets are `tests/targets/{pidfds,ioctx,epollmoved}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use common::*;

fn spec(mode: &str) -> Spec {
    Spec::new(target("pidfds"))
        .arg("60")
        .arg(mode)
        .arg("sleep=20")
}

#[test]
fn pidfds_of_itself_a_child_and_a_zombie_work_after_restore() {
    let tag = "pidfds_of_itself_a_child_and_a_zombie_work_after_restore";
    let ctx = Ctx::new(tag);
    let spec = spec("tree");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(6);
    let pid = t.pid;
    // the process, its counting child and its zombie child (not live: listed apart)
    let mut pids = wait_process_tree(pid, 2, tag);
    let kids =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for k in kids
        .split_whitespace()
        .filter_map(|k| k.parse::<i32>().ok())
    {
        if !pids.contains(&k) {
            pids.push(k);
        }
    }
    assert_eq!(
        pids.len(),
        3,
        "{tag}: the process and its two children: {pids:?}"
    );
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path("pidfds.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&pids, tag);
    assert_has_kinds(&ctx, &img, &["Pidfd", "EventFd"], tag);

    // The image names the processes the pidfds were of.
    let j = ctx.inspect_json(&img);
    let procs = j["processes"].as_array().cloned().unwrap_or_default();
    let root = procs
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("{tag}: no process {pid} in the image"));
    let named: Vec<i64> = root["fds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"]["Pidfd"]["pid"].as_i64())
        .collect();
    assert_eq!(
        named.len(),
        4,
        "{tag}: four pidfds (self, child, its dup, zombie) in {:?}",
        root["fds"]
    );
    for p in &pids {
        assert!(
            named.contains(&i64::from(*p))
                && (*p != pid || named.iter().filter(|&&n| n == i64::from(pid)).count() == 1),
            "{tag}: a pidfd of process {p} should be in the image: {named:?}"
        );
    }
    let fin = ctx.restore(&img, &[], In::Null).finish();
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        &format!("{tag} (dumped after 6 lines, restored)"),
        &reference.stdout,
        &output,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    for &p in &pids {
        assert_no_process(p, tag);
    }
}

/// `ckpt dump` of a target started from `spec` fails with exit status 1 and a stderr
/// holding `want(pid, ppid)`; no image and no file is left, and the target runs on
/// untraced to the same end as an uninterrupted run.
fn assert_dump_refused(tag: &str, spec: &Spec, want: impl Fn(i32, &str) -> String) {
    let ctx = Ctx::new(tag);
    assert_dump_refused_in(&ctx, tag, spec, want);
}

fn assert_dump_refused_in(ctx: &Ctx, tag: &str, spec: &Spec, want: impl Fn(i32, &str) -> String) {
    let reference = ctx.reference(spec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(5);
    let pid = t.pid;
    ctx.track(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{tag}: no PPid in /proc/{pid}/status"))
        .to_string();
    let img = ctx.path("img");
    let before = ctx.listing();
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    let want = want(pid, &parent);
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

/// A pidfd of the process's parent (outside the dumped tree) is refused at dump, naming
/// the descriptor and the process; no image is left and the target runs on untouched to
/// the same end as an uninterrupted run.
#[test]
fn dump_refuses_a_pidfd_of_a_process_outside_the_tree() {
    assert_dump_refused(
        "dump_refuses_a_pidfd_of_a_process_outside_the_tree",
        &spec("outside"),
        |pid, parent| {
            format!(
                "file descriptor 3 of process {pid} is a pidfd that names process {parent}, \
                 which is outside the dumped tree"
            )
        },
    );
}

fn ioctx(kind: &str) -> Spec {
    Spec::new(target("ioctx"))
        .arg(kind)
        .arg("40")
        .arg("sleep=20")
}

/// An io_uring instance is refused, naming it (by its mapped rings or its descriptor,
/// whichever dump reads first).
#[test]
fn dump_refuses_an_io_uring_instance() {
    assert_dump_refused(
        "dump_refuses_an_io_uring_instance",
        &ioctx("uring"),
        |_, _| "io_uring instance".into(),
    );
}

/// A fanotify group with a permission mark is refused, naming the mark (by its inode)
/// and why: a response owed for an event already read cannot be seen. (Groups without
/// one are restored: tests/e2e_fanotify.rs.)
#[test]
fn dump_refuses_a_fanotify_group_with_a_permission_mark() {
    assert_dump_refused(
        "dump_refuses_a_fanotify_group_with_a_permission_mark",
        &ioctx("fanotify"),
        |_, _| {
            "asks for permission events (mask 0x10000): a response owed for an event already \
             read cannot be seen, nor owed again after restore"
                .into()
        },
    );
}

/// epoll items added under numbers that were since moved away (dup2, the old number now
/// holding /dev/null) or closed (the file still open under a dup) come back under those
/// numbers, and keep reporting their data: the whole output (epoll_wait's answers each
/// step) matches an uninterrupted run's, and the oracle compares each item of fdinfo.
#[test]
fn epoll_items_whose_descriptors_moved_or_closed_come_back_as_they_were() {
    let tag = "epoll_items_whose_descriptors_moved_or_closed_come_back_as_they_were";
    let ctx = Ctx::new(tag);
    let spec = Spec::new(target("epollmoved")).arg("60").arg("sleep=20");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(8);
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("epoll.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    assert_has_kinds(&ctx, &img, &["Epoll"], tag);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "{tag}: reference run");
    assert_same_output(
        &format!("{tag} (dumped after 8 lines, restored)"),
        &reference.stdout,
        &output,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_no_process(pid, tag);
}

/// Descriptors of file-system objects changed under them are refused, each saying what
/// happened: an inotify watch on a file since deleted that reports closes (restore
/// closes the file it recreates after the watch is set).
#[test]
fn dump_refuses_objects_changed_under_their_descriptors_saying_what_happened() {
    let tag = "dump_refuses_objects_changed_under_their_descriptors_saying_what_happened";
    let ctx = Ctx::new(tag);
    let cases: [(&str, &str); 1] = [(
        "inotify",
        "(deleted) reports opens or closes (mask 0x408), which restore makes of the file \
             it recreates after setting the watch; not supported yet",
    )];
    for (kind, want) in cases {
        let dir = ctx.path(kind);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let spec = Spec::new(target("fsgone"))
            .arg(kind)
            .arg(&dir)
            .arg("40")
            .arg("sleep=20");
        assert_dump_refused_in(&ctx, &format!("{tag} {kind}"), &spec, |_, _| {
            want.to_string()
        });
    }
}

/// Files removed under the name they were opened by but still linked under another (in
/// the same directory, or a path the process has open) are opened again by that link
/// and show their old name " (deleted)" as before (the oracle compares the /proc links,
/// modes, link counts and offsets); what is written through one is read through the
/// other. A directory removed while open comes back removed, with its mode, listing
/// nothing and taking no file; a FIFO removed while open, with its mode and the data in
/// it. A restore failing as it links the old name again, or makes the directory or the
/// FIFO again, leaves no name behind. An inotify watch on a file deleted while open is
/// set on the recreated file: a write and the last close report IN_MODIFY, then
/// IN_DELETE_SELF and IN_IGNORED, as in the original.
#[test]
fn files_and_directories_removed_while_open_come_back_removed() {
    let tag = "files_and_directories_removed_while_open_come_back_removed";
    let ctx = Ctx::new(tag);
    let dir = ctx.path("relinked");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = Spec::new(target("relinked")).arg(&dir).arg("60");
    let reference = ctx.spawn(&spec).finish();
    let want = [
        "fd 3: /a (deleted), mode 100644, 1 links, offset 4",
        "fd 4: /c (deleted), mode 100600, 1 links, offset 1",
        "fd 5: /sub/c2, mode 100600, 1 links, offset 0",
        "fd 6: /gone (deleted), mode 40751, 0 links, offset 0",
        "listing the removed directory: No such file or directory",
        "a file made in it: No such file or directory",
        "fd 7: /p (deleted), mode 10640, 0 links, offset -1",
        "the fifo held [in the fifo]",
        "fd 8: /w (deleted), mode 100600, 0 links, offset 0",
        "watch 1: event 0x2\nwatch 1: event 0x400\nwatch 1: event 0x8000\n",
        "b now reads [data+]",
        "c read from its offset: [ccc]",
    ];
    for w in want {
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
    let img = ctx.path("relinked.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    let olds = ["a", "gone", "p"].map(|n| dir.join(pid.to_string()).join(n));
    for step in [
        "link a removed name again",
        "make a removed directory again",
        "make a removed FIFO again",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &[pid], &[]);
        for old in &olds {
            assert!(
                !old.exists(),
                "{tag}: a failed restore left {}",
                old.display()
            );
        }
    }
    let fin = ctx.restore(&img, &[], In::Null).finish();
    for old in &olds {
        assert!(!old.exists(), "{tag}: the restore left {}", old.display());
    }
    assert_tree_finished_like_reference(
        &format!("{tag} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &[pid],
    );
}

/// A read lease (F_SETLEASE) is taken again at restore: F_GETLEASE shows it at the end of
/// the run as in an uninterrupted one, and the oracle sees the same lock line.
#[test]
fn a_read_lease_is_taken_again_at_restore() {
    lease_taken_again("a_read_lease_is_taken_again_at_restore", "lease", "read");
}

/// A write lease too: the file is open by no other description after restore (ckpt
/// holds it with O_PATH only), so the kernel grants it again.
#[test]
fn a_write_lease_is_taken_again_at_restore() {
    lease_taken_again("a_write_lease_is_taken_again_at_restore", "wlease", "write");
}

/// `fsgone KIND` dumped mid-run and restored shows lease `mode` at the end, as an
/// uninterrupted run does.
fn lease_taken_again(tag: &str, kind: &str, mode: &str) {
    let ctx = Ctx::new(tag);
    let dir = ctx.path("lease");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = Spec::new(target("fsgone"))
        .arg(kind)
        .arg(&dir)
        .arg("60")
        .arg("sleep=20");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("lease.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert!(
        text(&reference.stdout).contains(&format!("lease: {mode}\n")),
        "{tag}: reference run: {}",
        text(&reference.stdout)
    );
    assert_same_output(&format!("{tag} (restored)"), &reference.stdout, &output);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
}

/// The pidfds of a tree with a PID namespace of its own (started with `unshare -p -f`,
/// its root PID 1 there) are recorded by the namespace's IDs and opened again inside the
/// new namespace: the run goes on to the same end as an uninterrupted one (the child
/// and the zombie waited for through their pidfds).
#[test]
fn pidfds_of_a_tree_with_its_own_pid_namespace_work_after_restore() {
    let tag = "pidfds_of_a_tree_with_its_own_pid_namespace_work_after_restore";
    let ctx = Ctx::new(tag);
    let unshare = std::path::PathBuf::from("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let spec = Spec::new(&unshare)
        .arg("-p")
        .arg("-f")
        .arg(target("pidfds"))
        .arg("60")
        .arg("tree")
        .arg("sleep=20");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(6);
    // unshare, the namespace's init (pidfds) and its counting child
    let tree = wait_process_tree(t.pid, 3, tag);
    let root = tree[1];
    for &p in &tree[1..] {
        ctx.track(p);
    }
    let img = ctx.path("ownns.img");
    ctx.dump(root, &img);
    let before = t.finish();
    let j = ctx.inspect_json(&img);
    assert_eq!(j["own_pid_namespace"], true, "{tag}: inspect --json");
    let named: Vec<i64> = j["processes"][0]["fds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"]["Pidfd"]["pid"].as_i64())
        .collect();
    assert!(
        named.contains(&1) && named.iter().all(|&p| (1..10).contains(&p)),
        "{tag}: the pidfds name the namespace's IDs: {named:?}"
    );
    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "{tag}: reference run");
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before.stdout, fin.stdout].concat();
    assert_same_output(tag, &reference.stdout, &got);
}
