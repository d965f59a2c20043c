//! Restore's release gate (`docs/ARCHITECTURE.md`, "The release gate") for threads under
//! seccomp filters: a tree restored into a PID namespace of its own never sees ckpt's
//! builder in its /proc, even while the builder lingers after it let the tree go
//! (`CKPT_LINGER`), because every thread waits at the gate until the builder is gone;
//! the filters let the gate's calls through (restore ran them on those calls), and
//! the threads come back under the same filters.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// `gatesec` as PID 1 of PID and mount namespaces of its own, with its own /proc.
fn gatesec_spec(ctx: &Ctx) -> Spec {
    Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(unshare())
        .arg("-m")
        .arg("--mount-proc")
        .arg("--propagation")
        .arg("private")
        .arg(target("gatesec"))
        .stdin(In::Pipe)
        .cwd(&ctx.dir)
}

/// Threads under seccomp filters (one shared by TSYNC, one a thread's own) wait behind
/// the gate: the restored program, which looks at its /proc every 5 ms, never sees a
/// second process while the builder lingers 200 ms after releasing the tree, and its
/// filters still make uname and the thread's getppid fail.
#[test]
fn seccomp_threads_wait_behind_the_release_gate() {
    let name = "seccomp_threads_wait_behind_the_release_gate";
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(&gatesec_spec(&ctx));
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 2, name);
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path("gatesec.img");
    ctx.dump(tree[1], &img);
    let out_before = t.finish().stdout;
    wait_pids_gone(&tree[1..], name);
    let linger = [("CKPT_LINGER", "builder released the tree:200")];
    let mut r = ctx.restore_with(&img, &[], In::Pipe, &[], &linger);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and the restored gatesec");
    assert_eq!(
        nspids(restored[1]),
        vec![restored[1], 1],
        "restored as PID 1"
    );
    // Past the builder's linger: the program has looked at /proc some 80 times.
    std::thread::sleep(Duration::from_millis(400));
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&fin.stderr)
    );
    assert_eq!(
        text(&[out_before, fin.stdout].concat()),
        "ready\nuname: Operation not permitted; worker's getppid: Permission denied\ndone\n",
        "the restored program saw only itself in its /proc, under the same filters"
    );
}
