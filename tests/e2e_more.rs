//! End-to-end tests of features that work but had no end-to-end test yet: unix sockets
//! inside a tree (a socketpair with records queued both ways, listeners bound to a path
//! and to an abstract name that serve a new client after restore); a memfd with seals and
//! a file deleted while open; a chrooted process; a tree restored with `--new-pidns`
//! while the original still holds its PIDs; `node` (a multi-threaded runtime) and
//! `python3` threads cooperating through a Condition. Each run is dumped mid-way and
//! restored, and its whole output compared byte for byte with an uninterrupted run's.
//!
//! The targets are `tests/targets/{usock,memfd,chroot,nstree}.c`, `ticker.js` and
//! `pythreads.py`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs, chroot). Run with
//! cargo-nextest, one process per test (see README.md).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Length of a byte string of `inspect --json` (serde_bytes: an array of numbers, or
/// a string).
fn json_bytes_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::String(s) => s.len(),
        _ => 0,
    }
}

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

/// Where the symlinks of `/proc/PID/fd/` lead (pipes left out).
fn fd_links(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                // fds 0-2 are pipes of the harness, other pipes after restore
                .filter(|l| !l.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Start `spec` alongside its reference run (`rspec`), dump it after `k` lines (which kills it),
/// restore it (calling `while_restored` with the restored root's pid once it printed
/// `k + 1` lines in all), and compare its whole output and exit status with the
/// reference. `want_kinds`: descriptor kinds the image must hold. Returns the image.
fn dump_restore_compare(
    ctx: &Ctx,
    rspec: &Spec,
    spec: &Spec,
    k: usize,
    want_kinds: &[&str],
    tag: &str,
    while_restored: &mut dyn FnMut(i32),
) -> PathBuf {
    let mut rp = ctx.spawn(rspec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    let tree = process_tree(pid);
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&tree, tag);
    assert_has_kinds(ctx, &img, want_kinds, tag);

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    while_restored(pid);
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        &format!("{tag} (dumped after {} lines, restored)", k),
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    for p in tree {
        assert_no_process(p, tag);
    }
    img
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

/// The PIDs of `pid` in its PID namespaces, outermost first (NSpid of /proc/PID/status).
fn nspids(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

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
    // A process inside the namespace that is not its init is refused, naming the init.
    let child_img = ctx.path("child.img");
    let pid_arg = child.to_string();
    let r = ctx.ckpt(&[
        OsStr::new("dump"),
        pid_arg.as_ref(),
        "-o".as_ref(),
        child_img.as_os_str(),
    ]);
    r.assert_fails(1);
    assert!(
        r.stderr
            .contains(&format!("namespace's init (PID {root} here)")),
        "dump of a process that is not its namespace's init: {}",
        r.stderr
    );
    assert_running_untraced(child, "the child after the refused dump");
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
    let with_env = |env: &[(&str, &str)]| {
        let mut s = Spec::new(ckpt_bin()).arg("restore").arg(&img).cwd(&ctx.dir);
        for (k, v) in env {
            s = s.env(k, v);
        }
        ctx.spawn(&s).finish()
    };
    let trace = with_env(&[("CKPT_FAULT", "no such step"), ("CKPT_FAULT_TRACE", "1")]);
    let trace_text = text(&trace.stderr);
    let total = trace_text
        .lines()
        .filter(|l| l.starts_with("ckpt: step #"))
        .count();
    assert!(
        total > 20,
        "too few traced steps (fault-injection feature on?):\n{trace_text}"
    );
    assert_eq!(
        trace.status.code(),
        Some(0),
        "the traced restore: {trace_text}"
    );
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
    let fin = with_env(&[]);
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

// ---------------------------------------------------------------------------------------
// Real runtimes: node and python3 threads

/// `node`, or None when it is missing and CKPT_TEST_ALLOW_NO_NODE=1 says that is fine.
fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let found = std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .chain([PathBuf::from("/usr/bin/node")])
        .find(|p| p.is_file());
    if found.is_none() {
        assert_eq!(
            std::env::var("CKPT_TEST_ALLOW_NO_NODE").as_deref(),
            Ok("1"),
            "node not found in PATH (apt-get install nodejs); set CKPT_TEST_ALLOW_NO_NODE=1 \
             to skip this test"
        );
        eprintln!("NOTE: node not found; test skipped (CKPT_TEST_ALLOW_NO_NODE=1)");
    }
    found
}

#[test]
fn node_set_interval_loop_continues_after_restore() {
    let ctx = Ctx::new("node_set_interval_loop_continues_after_restore");
    let Some(node) = node() else {
        return;
    };
    let spec = Spec::new(node).arg(script("ticker.js")).arg("80").arg("30");
    dump_restore_compare(&ctx, &spec, &spec, 25, &[], "node", &mut |pid| {
        let threads = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert!(
            threads > 1,
            "node: the restored node has {threads} thread(s); it should be multi-threaded"
        );
    });
}

#[test]
fn python3_threads_with_a_condition_continue_after_restore() {
    let ctx = Ctx::new("python3_threads_with_a_condition_continue_after_restore");
    let spec = Spec::new(python3())
        .arg(script("pythreads.py"))
        .arg("50")
        .arg("0.01")
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    dump_restore_compare(&ctx, &spec, &spec, 70, &[], "pythreads", &mut |pid| {
        let threads = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert_eq!(
            threads, 5,
            "pythreads: the restored python should have its main thread and 4 workers"
        );
    });
}

// ---------------------------------------------------------------------------------------
// A process on a terminal, restored as a shell job

/// The pty output of `ptyrun.py` with its carriage returns dropped.
fn tty_text(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\r').collect()
}

/// A program whose standard descriptors are a pseudo-terminal (it runs under
/// `ptyrun.py`, which gives it one as its controlling terminal) is dumped, and restored
/// under another `ptyrun.py`: it is connected to `ckpt restore`'s own terminal, as a
/// shell job, and continues there (its output on the two terminals, together, is that
/// of an uninterrupted run).
#[test]
fn process_on_a_pty_is_restored_onto_the_terminal_of_ckpt_restore() {
    let ctx = Ctx::new("process_on_a_pty_is_restored_onto_the_terminal_of_ckpt_restore");
    let ptyrun = script("ptyrun.py");
    let counter = target("counter-static");
    let map = ctx.path("map.bin");
    write_pattern_file(&map, 3 * 4096 + 100, 7);
    let under_pty = |args: &[&OsStr]| {
        args.iter()
            .fold(Spec::new(python3()).arg(&ptyrun), |s, a| s.arg(a))
    };
    let cmd = [counter.as_os_str(), "40".as_ref(), map.as_os_str()];
    let mut reference = ctx.spawn(&under_pty(&cmd));
    let mut t = ctx.spawn(&under_pty(&cmd));
    t.wait_lines(8);
    let tree = wait_process_tree(t.pid, 2, "ptyrun.py and its program");
    let pid = *tree.last().expect("the program under ptyrun.py");
    let links = fd_links(pid);
    assert!(
        links.iter().take(3).all(|l| l.starts_with("/dev/pts/")),
        "the program's 0-2 are a pty: {links:?}"
    );
    let img = ctx.path("pty.img");
    ctx.dump(pid, &img);
    let before = t.finish();
    // Restored under a new pty, as a job of the shell that runs `ckpt restore`.
    let bin = ckpt_bin();
    let mut r = ctx.spawn(&under_pty(&[
        bin.as_os_str(),
        "restore".as_ref(),
        img.as_os_str(),
    ]));
    let after = r.finish();
    let reference = reference.finish();
    // ptyrun.py exits with its program's status, and ckpt restore passes on the restored
    // program's (counter ends with 3).
    assert_eq!(
        after.status.code(),
        reference.status.code(),
        "restore under a pty: {}",
        text(&after.stderr)
    );
    assert_no_process(pid, "after the restored program ended");
    let want = tty_text(&reference.stdout);
    let got = [tty_text(&before.stdout), tty_text(&after.stdout)].concat();
    assert_same_output("program on a pty", &want, &got);
}

// ---------------------------------------------------------------------------------------
// TCP: a server whose client is outside the dumped tree

/// A free loopback port (bound and released; the server binds it right after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Send one 16-byte message (padded with dots) to `tcpsrv.py`.
fn tcp_send(w: &mut std::net::TcpStream, m: &str) {
    use std::io::Write;
    let mut b = m.as_bytes().to_vec();
    b.resize(16, b'.');
    w.write_all(&b).expect("send to the server");
}

/// One client session with `tcpsrv.py`: three exchanges, then two messages the server
/// leaves unread until `go` exists, then `between` runs (it must send one more message:
/// the dumped run sends it while the server is gone), then the go-file, the three
/// replies, one more exchange, and "bye". Returns what the client got.
fn tcp_session(port: u16, go: &Path, between: &mut dyn FnMut(&mut std::net::TcpStream)) -> Vec<u8> {
    use std::io::{BufRead, BufReader};
    let conn = connect_loopback(port, "the server");
    let mut w = conn.try_clone().expect("clone stream");
    let mut r = BufReader::new(conn);
    let mut got = Vec::new();
    let send = tcp_send;
    let recv = |r: &mut BufReader<std::net::TcpStream>, got: &mut Vec<u8>| {
        let mut line = String::new();
        r.read_line(&mut line).expect("reply from the server");
        assert!(!line.is_empty(), "the server closed the connection");
        got.extend_from_slice(line.as_bytes());
    };
    for m in ["alpha", "beta", "gamma"] {
        send(&mut w, m);
        recv(&mut r, &mut got);
    }
    send(&mut w, "delta");
    send(&mut w, "epsilon");
    std::thread::sleep(std::time::Duration::from_millis(100));
    between(&mut w);
    fs::write(go, b"go").expect("go-file");
    recv(&mut r, &mut got);
    recv(&mut r, &mut got);
    recv(&mut r, &mut got);
    send(&mut w, "zeta");
    recv(&mut r, &mut got);
    send(&mut w, "bye");
    got
}

/// A TCP server with a connected client outside the tree (this test) is dumped while two
/// of the client's messages sit unread in its receive queue, killed, and restored: the
/// client keeps talking over the same connection (no reset), and every reply — counted
/// and digested by the server over everything it received — equals an uninterrupted
/// run's; so do the server's own output and exit status.
#[test]
fn tcp_server_keeps_its_connection_with_an_outside_client_across_dump_and_restore() {
    let ctx =
        Ctx::new("tcp_server_keeps_its_connection_with_an_outside_client_across_dump_and_restore");
    // Reference run.
    let (rport, rgo) = (free_port(), ctx.path("go-ref"));
    let rspec = Spec::new(python3())
        .arg(script("tcpsrv.py"))
        .arg(rport.to_string())
        .arg(&rgo);
    let mut rp = ctx.spawn(&rspec);
    rp.wait_lines(1);
    let want = tcp_session(rport, &rgo, &mut |w| tcp_send(w, "theta"));
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "reference server");

    // Dumped run.
    let (port, go) = (free_port(), ctx.path("go"));
    let spec = Spec::new(python3())
        .arg(script("tcpsrv.py"))
        .arg(port.to_string())
        .arg(&go);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(1);
    let pid = t.pid;
    let img = ctx.path("tcp.img");
    let mut restored: Option<Proc> = None;
    let mut before = Vec::new();
    let got = tcp_session(port, &go, &mut |w| {
        ctx.dump(pid, &img);
        // The server is gone; the connection is locked, so this is dropped (and
        // retransmitted later) instead of being answered with a reset.
        tcp_send(w, "theta");
        std::thread::sleep(std::time::Duration::from_millis(300));
        t.expect_killed();
        before = t.stdout.finish("tcp server: original");
        let j = ctx.inspect_json(&img);
        let s = j.to_string();
        assert!(
            s.contains("TcpListen") && s.contains("TcpConn"),
            "image: {s}"
        );
        let unread = j
            .pointer("/processes/0/fds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.pointer("/kind/TcpConn/conn/rcvq"))
            .map(json_bytes_len)
            .sum::<usize>();
        assert_eq!(unread, 32, "the two unread messages are in the image");
        let rules = std::process::Command::new("nft")
            .args(["list", "table", "inet", "ckpt_lock"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            rules.contains(&port.to_string()),
            "the connection is locked while the server is gone: {rules}"
        );
        let mut r = ctx.restore(&img, &[], In::Null);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(r.try_wait().is_none(), "the restored server runs");
        restored = Some(r);
    });
    let fin = restored.expect("restored").finish();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "replies over the kept connection"
    );
    assert_same_output(
        "tcp server output",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored server: {}",
        text(&fin.stderr)
    );
    // The lock went with the restore. (Other tests may hold locks of their own in the
    // same table meanwhile: look for this connection's rule only.) And `ckpt unlock` of
    // an image whose lock is gone already is harmless.
    ctx.ckpt(&[OsStr::new("unlock"), img.as_os_str()])
        .assert_ok();
    let left = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        !left.contains(&format!("dport {port} ")),
        "restore removed this connection's lock: {left}"
    );
}

// ---------------------------------------------------------------------------------------
// redis-server with a live client

/// A RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// Read one RESP reply line (integers, simple strings) or bulk string.
fn resp_reply(r: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    r.read_line(&mut line).expect("redis reply");
    assert!(!line.is_empty(), "redis closed the connection");
    if let Some(n) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        let mut b = vec![0u8; n + 2];
        r.read_exact(&mut b).expect("redis bulk reply");
        line.push_str(&String::from_utf8_lossy(&b));
    }
    line
}

/// `redis-server` (four threads, epoll, IPv4 and IPv6 listeners) holding keys and a live
/// client connection from outside the tree is dumped, killed and restored; the client
/// sends a command while it is gone and then goes on over the same connection: the keys
/// are there and every reply is what an uninterrupted server gives.
#[test]
fn redis_server_keeps_its_keys_and_its_client_connection() {
    use std::io::Write;
    let ctx = Ctx::new("redis_server_keeps_its_keys_and_its_client_connection");
    let redis = PathBuf::from("/usr/bin/redis-server");
    assert!(
        redis.exists(),
        "needs redis-server (apt-get install redis-server)"
    );
    let port = free_port();
    let spec = Spec::new(&redis)
        .arg("--port")
        .arg(port.to_string())
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--daemonize")
        .arg("no")
        .arg("--dir")
        .arg(ctx.path(""));
    let mut t = ctx.spawn(&spec);
    t.wait_for("Ready to accept connections");
    let pid = t.pid;
    let conn = connect_loopback(port, "redis");
    let mut w = conn.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(conn);
    let mut got = Vec::new();
    for i in 0..50 {
        let (k, v) = (format!("key{i}"), format!("value{}", i * i));
        w.write_all(&resp(&["SET", &k, &v])).expect("send");
        got.push(resp_reply(&mut r));
    }
    w.write_all(&resp(&["RPUSH", "list", "a", "b", "c"]))
        .expect("send");
    got.push(resp_reply(&mut r));
    let img = ctx.path("redis.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    // Sent while the server is gone (the connection is locked: no reset).
    w.write_all(&resp(&["INCR", "counter"]))
        .expect("send while gone");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut restored = ctx.restore(&img, &[], In::Null);
    got.push(resp_reply(&mut r));
    for cmd in [
        vec!["GET", "key7"],
        vec!["GET", "key49"],
        vec!["LRANGE", "list", "0", "-1"],
        vec!["INCR", "counter"],
        vec!["DBSIZE"],
    ] {
        w.write_all(&resp(&cmd)).expect("send");
        got.push(resp_reply(&mut r));
        if cmd[0] == "LRANGE" {
            for _ in 0..3 {
                got.push(resp_reply(&mut r));
            }
        }
    }
    w.write_all(&resp(&["SHUTDOWN", "NOSAVE"])).expect("send");
    let fin = restored.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored redis: {}",
        text(&fin.stderr)
    );
    let mut want: Vec<String> = (0..50).map(|_| "+OK\r\n".to_string()).collect();
    want.push(":3\r\n".into());
    want.push(":1\r\n".into());
    want.push("$6\r\nvalue49\r\n".replace("$6", "$7"));
    want.push("$9\r\nvalue2401\r\n".into());
    want.push("*3\r\n".into());
    for x in ["a", "b", "c"] {
        want.push(format!("$1\r\n{x}\r\n"));
    }
    want.push(":2\r\n".into());
    want.push(":52\r\n".into());
    assert_eq!(got, want, "redis replies across the dump and restore");
}

// ---------------------------------------------------------------------------------------
// System V shared memory

/// A parent and child share a System V segment that was removed while attached (the
/// usual pattern); after restore they still share it (each sees the other's writes),
/// under its old ID, attached twice — and it goes away with them, as it would have.
#[test]
fn sysv_segment_removed_while_attached_is_shared_again_after_restore() {
    let ctx = Ctx::new("sysv_segment_removed_while_attached_is_shared_again_after_restore");
    let spec = Spec::new(target("sysv")).arg("40");
    let img = dump_restore_compare(&ctx, &spec, &spec, 20, &[], "sysv", &mut |_| {});
    let j = ctx.inspect_json(&img);
    let s = j.to_string();
    assert!(s.contains("SysvShm"), "the image holds the segment: {s}");
    // Gone with the restored processes (it had been removed): nothing left behind.
    let segs = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let ids: Vec<String> = j
        .pointer("/processes/0/vmas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/kind/SysvShm/shmid"))
        .map(|v| v.to_string())
        .collect();
    for id in ids {
        assert!(
            !segs
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
            "segment {id} left behind: {segs}"
        );
    }
}
