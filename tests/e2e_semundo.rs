//! End-to-end tests of System V semaphore undo lists as kcmp(KCMP_SYSVSEM) shows them:
//! an empty list (runc's Go init leaves one to the container's program), a list a child
//! shares with its parent (clone with CLONE_SYSVSEM but not CLONE_VM), a process whose
//! thread was made without CLONE_SYSVSEM (no list at all). Each is dumped and restored
//! (`tests/targets/semundo.c`); the state oracle compares which processes share a list
//! (`p*.shares.sysvsem`) with the original's, and the program's output shows that the
//! shared list still holds its adjustments when the sharing child exits. A list shared
//! by two processes but not with their parent is refused at dump, the tree running on.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::*;

/// pause, read (x86-64): where the target's processes wait.
const WAITS: &[i64] = &[34, 0];

/// Run `semundo MODE` with `procs` processes, dump and restore it, and return the output of
/// both runs together ([`dump_ready_then_go`]).
fn dump_and_restore(name: &str, mode: &str, procs: usize) -> Vec<u8> {
    dump_ready_then_go(&Ctx::new(name), "semundo", mode, procs, WAITS)
}

/// runc's shape without runc: the root's list is empty (a thread gave it one before it
/// executed its program), its child has none; both come back so.
#[test]
fn empty_undo_list_comes_back() {
    let out = dump_and_restore("empty_undo_list_comes_back", "runc", 2);
    assert_eq!(text(&out), "ready\ndone\n");
}

/// A list shared by a parent (with an adjustment) and a child made with CLONE_SYSVSEM
/// comes back shared, with the adjustment once: the child's own SEM_UNDO operation is
/// not undone when it exits (the parent still holds the list), and a third process
/// without a list still has none.
#[test]
fn undo_list_shared_with_a_child_comes_back_shared() {
    let out = dump_and_restore(
        "undo_list_shared_with_a_child_comes_back_shared",
        "shared",
        3,
    );
    assert_eq!(
        text(&out),
        "ready\nsharing child exited 0; value 3\ndone\n",
        "the semaphore's value after the sharing child's exit"
    );
}

/// A process whose second thread was made without CLONE_SYSVSEM has no list; restored,
/// it still has none (the same as its child's, which has none either).
#[test]
fn threads_without_an_undo_list_come_back_without() {
    let out = dump_and_restore(
        "threads_without_an_undo_list_come_back_without",
        "nolist",
        2,
    );
    assert_eq!(text(&out), "ready\ndone\n");
}

/// Two processes share a list their parent does not have (the process that made them
/// with CLONE_SYSVSEM exited; the root adopted them): restore could only make the list
/// again through a common parent, so the dump is refused, naming them, and the tree
/// runs on.
#[test]
fn undo_list_shared_apart_from_the_parent_is_refused_at_dump() {
    let name = "undo_list_shared_apart_from_the_parent_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("semundo"))
        .arg("siblings")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 3, name);
    for &p in &pids {
        wait_in_any_syscall(p, WAITS, name);
    }
    let r = ctx.try_dump(t.pid, &ctx.path("semundo.img"));
    r.assert_fails(1).assert_stderr_mentions(&[
        "shares its System V semaphore undo list with process",
        "CLONE_SYSVSEM",
    ]);
    for &p in &pids {
        assert_running_untraced(p, "after the refused dump");
    }
    t.write_stdin(b"go\n");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(text(&fin.stdout), "ready\ndone\n");
}
