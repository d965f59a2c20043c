//! End-to-end tests of features that work but had no end-to-end test yet: unix sockets
//! inside a tree (a socketpair with records queued both ways, listeners bound to a path
//! and to an abstract name that serve a new client after restore); a memfd with seals and
//! a file deleted while open; a chrooted process; a tree restored with `--new-pidns`
//! while the original still holds its PIDs. Each run is dumped mid-way and restored, and
//! its whole output compared byte for byte with an uninterrupted run's. Real runtimes,
//! terminals, TCP peers and SysV memory are in `e2e_apps.rs`.
//!
//! The targets are `tests/targets/{usock,memfd,chroot,nstree}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs, chroot). Run with
//! cargo-nextest, one process per test (see README.md).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::more::*;
use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// The entries of directory `d` (names).
fn dir_entries(d: &Path) -> BTreeSet<String> {
    fs::read_dir(d)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()))
        .map(|e| {
            e.expect("read_dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Unix sockets

/// A directory removed when the test ends.
struct SockDir(PathBuf);

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unix_socketpair_with_records_queued_both_ways_and_listeners_survive_restore() {
    let ctx =
        Ctx::new("unix_socketpair_with_records_queued_both_ways_and_listeners_survive_restore");
    const STEPS: u32 = 120;
    const AHEAD: u32 = 6;
    const LISTEN_STEP: u32 = 100;
    // sun_path holds 108 bytes: the sockets live in a short directory of their own.
    let sock_dir = SockDir(PathBuf::from(format!("/tmp/ckpt-e2e-usock-{}", my_pid())));
    let spec_in = |sub: &str| {
        let d = sock_dir.0.join(sub);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("mkdir socket dir");
        Spec::new(target("usock"))
            .arg(STEPS.to_string())
            .arg(AHEAD.to_string())
            .arg(LISTEN_STEP.to_string())
            .arg(d.join("listen.sock"))
            .arg(format!("ckpt-e2e-more-{}-{sub}", my_pid()))
            .arg("sleep=10")
    };
    let rspec = spec_in("ref");
    let mut rp = ctx.spawn(&rspec);
    // How the records are spread over the two directions at a given moment depends on
    // how the two processes were scheduled: on a loaded machine one side can run ahead
    // and drain the other's queue. The dump must see records queued both ways, so a
    // run dumped at a moment when one direction was empty is tried again (the image and
    // the killed run are discarded; ckpt is not at fault there).
    let mut attempt = 0;
    let (before, img, pids, j) = loop {
        attempt += 1;
        let spec = spec_in("run");
        let mut t = ctx.spawn(&spec);
        t.wait_lines(30);
        let pids = wait_process_tree(t.pid, 2, "usock");
        for &p in &pids {
            ctx.track(p);
        }
        let img = ctx.path(&format!("usock-{attempt}.img"));
        ctx.dump(t.pid, &img);
        t.expect_killed();
        let before = t.stdout.finish("usock: original");
        wait_pids_gone(&pids, "usock: original after the dump");
        assert!(
            text(&before).lines().count() < LISTEN_STEP as usize,
            "usock: the dump came too late (after the listeners were used):\n{}",
            text(&before)
        );
        // The image holds the pair (records queued in both directions) and both
        // listeners.
        assert_has_kinds(&ctx, &img, &["UnixPair", "UnixListen"], "usock");
        let j = ctx.inspect_json(&img);
        let pairs = j["socketpairs"]
            .as_array()
            .unwrap_or_else(|| panic!("usock: no socketpairs array in the image: {j}"));
        assert_eq!(pairs.len(), 1, "usock: socketpairs: {pairs:?}");
        let (q0, q1) = (
            json_bytes_len(&pairs[0]["data0"]),
            json_bytes_len(&pairs[0]["data1"]),
        );
        if q0 >= 32 * 2 && q1 >= 32 * 2 {
            break (before, img, pids, j);
        }
        assert!(
            attempt < 4,
            "usock: records should be queued in both directions at the dump; in {attempt} \
             runs one direction was always drained (last: {q0} and {q1} bytes)"
        );
        eprintln!("usock: run {attempt} was dumped with {q0} and {q1} bytes queued; again");
    };
    let names: Vec<String> = j["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .flat_map(|p| p["fds"].as_array().cloned().unwrap_or_default())
        .filter_map(|fd| fd["kind"].get("UnixListen").cloned())
        .map(|l| l["name"].to_string())
        .collect();
    assert_eq!(names.len(), 2, "usock: listeners in the image: {names:?}");

    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "usock: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let rtext = text(&reference.stdout);
    assert!(
        rtext.contains("path listener got") && rtext.contains("abstract listener got"),
        "usock: the reference run did not use its listeners:\n{rtext}"
    );
    assert_tree_finished_like_reference(
        "usock (dumped mid-run, restored)",
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
    // The target unlinks its socket file at the end; nothing else is left.
    assert_eq!(
        dir_entries(&sock_dir.0.join("run")),
        BTreeSet::new(),
        "usock: files left in the socket directory"
    );
}

// ---------------------------------------------------------------------------------------
// memfd and deleted files

#[test]
fn memfd_with_seals_and_deleted_open_file_survive_restore_leaving_no_file() {
    let ctx = Ctx::new("memfd_with_seals_and_deleted_open_file_survive_restore_leaving_no_file");
    let spec_in = |sub: &str| {
        let d = ctx.path(sub);
        fs::create_dir_all(&d).expect("mkdir");
        Spec::new(target("memfd")).arg("40").arg(&d).arg("sleep=40")
    };
    let run_dir = ctx.path("run");
    let rspec = spec_in("ref");
    let spec = spec_in("run");
    let mut rp = ctx.spawn(&rspec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(12);
    let pid = t.pid;
    ctx.track(pid);
    let links = fd_links(pid);
    let img = ctx.path("memfd.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("memfd: original");
    wait_pids_gone(&[pid], "memfd");
    assert_has_kinds(&ctx, &img, &["Memfd", "DeletedFile"], "memfd");
    assert_eq!(
        dir_entries(&run_dir),
        BTreeSet::new(),
        "memfd: files in the directory of the deleted file after the dump"
    );

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    // The restored process has the same kinds of descriptors (a memfd named "state", a
    // deleted file), and ckpt's temporary copy of the deleted file is gone again.
    let now = fd_links(pid);
    assert_eq!(
        links, now,
        "memfd: the restored process's fds (right) lead elsewhere than the original's (left)"
    );
    assert!(
        now.iter().any(|l| l.starts_with("/memfd:state")),
        "memfd: no memfd among {now:?}"
    );
    assert!(
        now.iter().any(|l| l.ends_with("gone.txt (deleted)")),
        "memfd: no deleted gone.txt among {now:?}"
    );
    assert_eq!(
        dir_entries(&run_dir),
        BTreeSet::new(),
        "memfd: files left in the directory of the deleted file after restore"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "memfd: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        "memfd (dumped mid-run, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "memfd: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        dir_entries(&run_dir),
        BTreeSet::new(),
        "memfd: files left in the directory of the deleted file at the end"
    );
    assert_no_process(pid, "memfd");
}

// ---------------------------------------------------------------------------------------
// chroot

/// A root for `chroot`: /bin/prog (a copy of a static binary), /etc/marker, /work.
fn make_root(ctx: &Ctx, sub: &str) -> PathBuf {
    let root = ctx.path(sub);
    for d in ["bin", "etc", "work"] {
        fs::create_dir_all(root.join(d)).expect("mkdir in root");
    }
    fs::copy(target("counter-static"), root.join("bin/prog")).expect("copy static binary");
    fs::write(root.join("etc/marker"), "inside the chroot\n").expect("write marker");
    root
}

#[test]
fn chrooted_process_keeps_its_root_and_cwd_after_restore() {
    let ctx = Ctx::new("chrooted_process_keeps_its_root_and_cwd_after_restore");
    let rroot = make_root(&ctx, "ref-root");
    let root = make_root(&ctx, "root");
    let spec_for = |r: &Path| {
        Spec::new(target("chroot-static"))
            .arg("40")
            .arg(r)
            .arg("sleep=40")
    };
    let root_c = fs::canonicalize(&root).expect("canonicalize root");
    dump_restore_compare(
        &ctx,
        &spec_for(&rroot),
        &spec_for(&root),
        12,
        &[],
        "chroot",
        &mut |pid| {
            let r = fs::read_link(format!("/proc/{pid}/root")).expect("read /proc/PID/root");
            assert_eq!(r, root_c, "chroot: the restored process's root");
            let c = fs::read_link(format!("/proc/{pid}/cwd")).expect("read /proc/PID/cwd");
            assert_eq!(c, root_c.join("work"), "chroot: the restored process's cwd");
        },
    );
    assert_eq!(
        dir_entries(&root.join("work")),
        dir_entries(&rroot.join("work")),
        "chroot: files written in the cwd"
    );
}

// ---------------------------------------------------------------------------------------
// --new-pidns

#[test]
fn tree_restored_with_new_pidns_while_the_original_holds_its_pids() {
    let ctx = Ctx::new("tree_restored_with_new_pidns_while_the_original_holds_its_pids");
    let spec = Spec::new(target("nstree")).arg("80").arg("sleep=40");
    let mut rp = ctx.spawn(&spec);
    // The original writes to a pipe read by us; the restored copy writes to ckpt
    // restore's stdout (another pipe), so the two outputs stay apart.
    let mut t = ctx.spawn(&spec);
    t.wait_lines(8);
    let pids = wait_process_tree(t.pid, 2, "nstree");
    for &p in &pids {
        ctx.track(p);
    }
    let min_prefix = t.stdout.bytes().len();
    let img = ctx.path("nstree.img");
    ctx.dump_leave_running(t.pid, &img);

    // A plain restore fails: both PIDs are taken by the original, and it says which.
    let plain = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    plain.assert_fails(1);
    for p in &pids {
        assert!(
            plain.stderr.contains(&p.to_string()),
            "nstree: the failed plain restore should name the taken pid {p}:\n{}",
            plain.stderr
        );
    }
    for &p in &pids {
        assert_running_untraced(p, "nstree: the original after the failed restore");
    }

    let mut r = ctx.restore(&img, &["--new-pidns"], In::Null);
    r.wait_lines(1);
    assert!(
        t.try_wait().is_none(),
        "nstree: the original ended before the copy ran; make the run longer"
    );
    // In the new namespace the restored processes have their original PIDs.
    let inner: BTreeSet<i32> = process_tree(r.pid)
        .into_iter()
        .filter_map(|p| {
            let ns = nspids(p);
            (ns.len() == 2 && ns[1] != 1).then(|| ns[1])
        })
        .collect();
    assert_eq!(
        inner,
        pids.iter().copied().collect::<BTreeSet<i32>>(),
        "nstree: PIDs of the restored tree inside its namespace"
    );
    let fin = r.finish();
    let original = t.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "nstree: reference run");
    assert_eq!(
        original.status.code(),
        Some(0),
        "nstree: the original after the dump; stderr:\n{}",
        text(&original.stderr)
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "nstree: ckpt restore --new-pidns; stderr:\n{}",
        text(&fin.stderr)
    );
    assert!(
        !fin.stdout.is_empty(),
        "nstree: the restored copy printed nothing"
    );
    assert_continues_from_dump(
        "nstree restored with --new-pidns",
        &reference.stdout,
        &original.stdout,
        &fin.stdout,
        min_prefix,
    );
    for p in pids {
        assert_no_process(p, "nstree");
    }
}

/// `unshare` (util-linux), to start a tree in a PID namespace of its own.
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// A copy of target `name` in the test's directory: processes running it are this
/// test's (see [`running_exe`]), whatever other tests run at the same time.
fn own_copy(ctx: &Ctx, name: &str) -> PathBuf {
    let p = ctx.path(name);
    fs::copy(target(name), &p).expect("copy the target");
    p
}

/// Processes whose executable is `exe`.
fn running_exe(exe: &Path) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|l| l == exe))
        .collect()
}

/// Start `nstree` under `unshare -p -f` (its root is PID 1 of a namespace of its own),
/// let it print `lines` lines, and dump its root (the namespace's init), which takes
/// the whole namespace. Returns (what it printed before the dump, its host PIDs).
fn dump_tree_with_own_pidns(
    ctx: &Ctx,
    spec: &Spec,
    img: &Path,
    lines: usize,
) -> (Vec<u8>, Vec<i32>) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(lines);
    let tree = wait_process_tree(t.pid, 3, "unshare and nstree");
    let (root, child) = (tree[1], tree[2]);
    assert_eq!(
        nspids(root),
        vec![root, 1],
        "nstree's root is PID 1 of its namespace"
    );
    assert_eq!(
        nspids(child),
        vec![child, 2],
        "nstree's child is PID 2 there"
    );
    ctx.dump(root, img);
    let before = t.finish();
    (before.stdout, vec![root, child])
}

/// A tree that runs in a PID namespace of its own (started with `unshare -p -f`: its
/// root is PID 1 there) is dumped by its init and restored into a new namespace: its
/// processes print their IDs every step and they are the old ones (1 and 2), the
/// restored root is PID 1 of a namespace that is not ckpt's, and the output of the two
/// runs together is that of an uninterrupted run.
#[test]
fn tree_with_its_own_pid_namespace_is_restored_into_a_new_one() {
    let ctx = Ctx::new("tree_with_its_own_pid_namespace_is_restored_into_a_new_one");
    let nstree = own_copy(&ctx, "nstree");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(&nstree)
        .arg("40")
        .arg("sleep=30")
        .arg("show-pids");
    let mut rp = ctx.spawn(&spec);
    let img = ctx.path("ownns.img");
    let (before, old) = dump_tree_with_own_pidns(&ctx, &spec, &img, 9);
    for p in &old {
        assert_no_process(*p, "nstree after its dump");
    }
    // The image says so, and holds the namespace's IDs.
    let j = ctx.inspect_json(&img);
    assert_eq!(j["own_pid_namespace"], Value::Bool(true), "inspect --json");
    let ids: Vec<i64> = j["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["pid"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![1, 2], "the image's process IDs");
    // This host's PIDs do not matter (1 and 2 are taken here): check is content.
    ctx.ckpt(&[OsStr::new("check"), img.as_os_str()])
        .assert_ok();
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let tree = wait_process_tree(r.pid, 3, "ckpt restore and the restored nstree");
    let (root, child) = (tree[1], tree[2]);
    assert_eq!(
        nspids(root),
        vec![root, 1],
        "the restored root is PID 1 of its namespace"
    );
    assert_eq!(
        nspids(child),
        vec![child, 2],
        "the restored child is PID 2 there"
    );
    let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    assert_ne!(
        ns(root),
        ns(my_pid()),
        "the restored tree has a PID namespace of its own"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "nstree: reference run");
    assert_eq!(
        fin.status.code(),
        Some(0),
        "nstree restored into a new PID namespace; stderr:\n{}",
        text(&fin.stderr)
    );
    let got = [before, fin.stdout].concat();
    assert_same_output("nstree in its own PID namespace", &reference.stdout, &got);
    assert!(
        running_exe(&nstree).is_empty(),
        "nstree processes left behind"
    );
}

/// The tree with its own PID namespace: restores made to fail at steps along the way
/// (every step of building the tree, then a sample of the rest) each exit 1 saying why,
/// print nothing of the program, and leave no process of it behind (the new namespace
/// dies with its init); then the image restores and continues.
#[test]
fn failed_restores_of_a_tree_with_its_own_pid_namespace_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_tree_with_its_own_pid_namespace_leave_nothing");
    let nstree = own_copy(&ctx, "nstree");
    let spec = Spec::new(unshare())
        .arg("-p")
        .arg("-f")
        .arg(&nstree)
        .arg("30")
        .arg("sleep=20")
        .arg("show-pids");
    let reference = ctx.reference(&spec);
    let img = ctx.path("ownns.img");
    let (before, _) = dump_tree_with_own_pidns(&ctx, &spec, &img, 9);
    let (trace, steps) = traced_restore(&ctx, &img, 20, "");
    let total = steps.len();
    assert!(
        running_exe(&nstree).is_empty(),
        "the traced restore left nstree running"
    );
    let mut tried = 0;
    for n in (1..=total).filter(|n| *n <= 12 || n % 13 == 0 || *n == total) {
        // Nothing printed, nothing left: no process of the program, and no fork of ckpt
        // (the namespace's init, the builder) orphaned to us (the harness is a child
        // subreaper).
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], &format!("#{n}"), &[], &[]);
        let left = running_exe(&nstree);
        assert!(
            left.is_empty(),
            "restore failing at step #{n} left {left:?}"
        );
        tried += 1;
    }
    eprintln!("{tried} failing restores of {total} steps");
    let fin = restore_env(&ctx, &img, &[]);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the final restore: {}",
        text(&fin.stderr)
    );
    // The traced restore ran the program to its end too: its output is the tail again.
    let got = [before.clone(), fin.stdout].concat();
    assert_same_output("nstree after the failed restores", &reference.stdout, &got);
    let traced = [before, trace.stdout].concat();
    assert_same_output("nstree, traced restore", &reference.stdout, &traced);
}
