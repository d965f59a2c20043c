//! End-to-end tests of processes that share a descriptor table (clone with CLONE_FILES)
//! or their working directory, root and umask (CLONE_FS) without being threads of one
//! process (`tests/targets/clonefiles.c`): with the parent, three at once, two siblings
//! apart from their parent. Each tree is dumped and restored; the state oracle (run by
//! `Ctx::dump` / `Ctx::restore`) compares which processes share what (`p*.shares.files`,
//! `p*.shares.fs`: kcmp) with the original's, and the restored program checks the
//! sharing itself: a descriptor one process opens after restore is (or is not) the
//! other's, a directory one changes to is the other's working directory, and so the
//! umask. Processes sharing an address space (CLONE_VM without CLONE_THREAD) are
//! refused at dump, the tree running on.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::*;

/// read (x86-64): where the target's processes wait.
const WAITS: &[i64] = &[0];

/// Run `clonefiles MODE` with `procs` processes, dump and restore it, and return the output of
/// both runs together ([`dump_ready_then_go`]).
fn dump_and_restore(name: &str, mode: &str, procs: usize) -> String {
    text(&dump_ready_then_go(
        &Ctx::new(name),
        "clonefiles",
        mode,
        procs,
        WAITS,
    ))
}

/// A child made with clone(CLONE_FILES) shares its parent's table after restore: a
/// file either opens is the other's descriptor.
#[test]
fn table_shared_with_a_child_comes_back_shared() {
    let out = dump_and_restore("table_shared_with_a_child_comes_back_shared", "parent", 2);
    assert_eq!(
        out,
        "ready\n\
         the parent sees child 0's new descriptor: yes\n\
         child 0 sees the parent's new descriptor: yes\n\
         done\n"
    );
}

/// Three processes share one table.
#[test]
fn table_shared_by_three_processes_comes_back_shared() {
    let out = dump_and_restore(
        "table_shared_by_three_processes_comes_back_shared",
        "three",
        3,
    );
    assert_eq!(
        out,
        "ready\n\
         child 1 sees child 0's new descriptor: yes\n\
         the parent sees child 0's new descriptor: yes\n\
         child 0 sees the parent's new descriptor: yes\n\
         child 1 sees the parent's new descriptor: yes\n\
         done\n"
    );
}

/// Two children share a table their parent left (unshare(CLONE_FILES)): after restore
/// they still share it, and the parent's table is its own (the file it opened is not
/// theirs, the one the first child opened before the dump is not its).
#[test]
fn table_shared_by_siblings_apart_from_their_parent_comes_back() {
    let out = dump_and_restore(
        "table_shared_by_siblings_apart_from_their_parent_comes_back",
        "siblings",
        3,
    );
    assert_eq!(
        out,
        "ready\n\
         child 1 sees child 0's new descriptor: yes\n\
         the parent sees child 0's new descriptor: no\n\
         child 0 sees the parent's new descriptor: no\n\
         child 1 sees the parent's new descriptor: no\n\
         done\n"
    );
}

/// A child made with clone(CLONE_FS) shares its parent's working directory and umask
/// after restore.
#[test]
fn fs_shared_with_a_child_comes_back_shared() {
    let out = dump_and_restore("fs_shared_with_a_child_comes_back_shared", "fs", 2);
    assert_eq!(
        out,
        "ready\n\
         the parent is in child 0's new directory: yes\n\
         child 0's umask was 027\n\
         the parent's umask: 077\n\
         done\n"
    );
}

/// Two children share a working directory and umask their parent left
/// (unshare(CLONE_FS)); restored, they still do, and the parent keeps its own.
#[test]
fn fs_shared_by_siblings_apart_from_their_parent_comes_back() {
    let out = dump_and_restore(
        "fs_shared_by_siblings_apart_from_their_parent_comes_back",
        "fssiblings",
        3,
    );
    assert_eq!(
        out,
        "ready\n\
         child 1 is in child 0's new directory: yes\n\
         the parent is in child 0's new directory: no\n\
         child 0's umask was 027\n\
         child 1's umask: 077\n\
         the parent's umask: 022\n\
         done\n"
    );
}

/// A child made with clone(CLONE_FILES | CLONE_FS) and a grandchild it made so: all
/// three share both after restore.
#[test]
fn table_and_fs_shared_down_two_generations_come_back_shared() {
    let out = dump_and_restore(
        "table_and_fs_shared_down_two_generations_come_back_shared",
        "both",
        3,
    );
    assert_eq!(
        out,
        "ready\n\
         child 1 is in child 0's new directory: yes\n\
         the parent is in child 0's new directory: yes\n\
         child 0's umask was 027\n\
         child 1's umask: 077\n\
         the parent's umask: 077\n\
         child 1 sees child 0's new descriptor: yes\n\
         the parent sees child 0's new descriptor: yes\n\
         child 0 sees the parent's new descriptor: yes\n\
         child 1 sees the parent's new descriptor: yes\n\
         done\n"
    );
}

/// A child sharing its parent's address space and signal handlers (clone with CLONE_VM
/// and CLONE_SIGHAND, not a thread): restore cannot make that, so dump refuses it before
/// it kills anything, naming it, and the tree runs on.
#[test]
fn address_space_shared_by_processes_is_refused_at_dump() {
    let name = "address_space_shared_by_processes_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("clonefiles"))
        .arg("vm")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, name);
    let img = ctx.path("clonefiles.img");
    let r = ctx.try_dump(t.pid, &img);
    r.assert_fails(1)
        .assert_stderr_mentions(&["shares its address space with process", "CLONE_VM"]);
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    for &p in &pids {
        assert_running_untraced(p, "after the refused dump");
    }
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(text(&fin.stdout), "ready\ndone\n");
}

/// A table shared by cousins (a child of the root's child, and a grandchild the root
/// adopted), not by their parents: restore cannot fork them sharing one, so dump
/// refuses, naming them and why, before it kills anything; the tree runs on.
#[test]
fn table_shared_by_cousins_is_refused_at_dump() {
    let name = "table_shared_by_cousins_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("clonefiles"))
        .arg("cousins")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 4, name);
    let img = ctx.path("clonefiles.img");
    let r = ctx.try_dump(t.pid, &img);
    r.assert_fails(1).assert_stderr_mentions(&[
        "share one descriptor table (CLONE_FILES)",
        "not one parent",
        "restore cannot create them sharing it",
    ]);
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    for &p in &pids {
        assert_running_untraced(p, "after the refused dump");
    }
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(text(&fin.stdout), "ready\ndone\n");
}

/// The dumped tree's root shares its descriptor table with its parent, which is not
/// dumped: restore could not share it with a process it does not make, so dump refuses,
/// and both run on.
#[test]
fn table_shared_with_a_parent_outside_the_tree_is_refused_at_dump() {
    let name = "table_shared_with_a_parent_outside_the_tree_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("clonefiles"))
        .arg("outside")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, name);
    let child = pids
        .iter()
        .copied()
        .find(|&p| p != t.pid)
        .expect("the child");
    let img = ctx.path("clonefiles.img");
    let r = ctx.try_dump(child, &img);
    r.assert_fails(1).assert_stderr_mentions(&[
        "shares its descriptor table (CLONE_FILES) with its parent",
        "outside the dumped tree",
    ]);
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    for &p in &pids {
        assert_running_untraced(p, "after the refused dump");
    }
    t.write_stdin(b"go\n");
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(
        text(&fin.stdout),
        "ready\n\
         the parent sees child 0's new descriptor: yes\n\
         child 0 sees the parent's new descriptor: yes\n\
         done\n"
    );
}
