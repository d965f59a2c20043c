//! Restore-many (issue 17, item 4): one image of a warmed-up process restored many
//! times side by side, each copy in its own PID namespace (`--new-pidns`, the image's
//! PIDs inside), lazily: `--lazy=touch` copies into each copy only the pages it touches,
//! served by its `ckpt restore` (outside the namespace) for as long as the copy runs;
//! `--lazy` (fill) with `--new-pidns` copies the rest in the background as without a
//! namespace. `tests/targets/many.c` holds an area with a known pattern and a counter.
//!
//! Each copy must behave like the original (its counter goes on from the dump, each on
//! its own; a checksum of the whole area), hold only what it touched (its Rss), and look
//! like the original to the kernel (state oracle, IDs as its namespace sees them; the
//! one difference of `--lazy=touch`, `um` in the lazy areas' VmFlags, is checked to be
//! there and then left out). Killing one copy, or one copy's ckpt (its server), ends
//! that copy alone; a failed restore leaves nothing.
//!
//! Needs root (ptrace, PID namespaces). Run with cargo-nextest.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The test area (MiB): large against what a copy touches.
const MIB: u64 = 64;

/// Start `many MIB`, count to 3, take the oracle's snapshot and dump it (killing it).
/// Returns the image, the original's PID and the snapshot.
fn warmed_up(ctx: &Ctx) -> (PathBuf, i32, oracle::Snapshot) {
    let spec = Spec::new(target("many"))
        .arg(MIB.to_string())
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    for _ in 0..3 {
        t.write_stdin(b"tick\n");
    }
    t.wait_for("count 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let before = oracle::Snapshot::take_once(pid);
    // (a name the automatic oracle of `Ctx::restore` does not know: compared here)
    let img = ctx.path("many.img");
    ctx.try_dump(pid, &img).assert_ok();
    t.expect_killed();
    wait_pids_gone(&[pid], "many");
    (img, pid, before)
}

/// A copy: its `ckpt restore`, and the restored root's PID here.
struct Copy {
    ckpt: Proc,
    root: i32,
}

/// Restore a copy (attached: its ckpt waits for it) with `extra`, and wait until its
/// root runs in its new PID namespace with the original's PID `pid` there.
fn copy(ctx: &Ctx, img: &Path, pid: i32, extra: &[&str], env: &[(&str, &str)]) -> Copy {
    let mut args = vec!["--new-pidns"];
    args.extend_from_slice(extra);
    let mut r = ctx.restore_with(img, &args, In::Pipe, &[], env);
    let deadline = Instant::now() + timeout();
    let root = loop {
        // ckpt's children: the namespace's init (two IDs) and the watcher (one); the
        // root below the init, the program's again (not ckpt's stub) and released by
        // its builder (no longer traced).
        let found = process_tree(r.pid).into_iter().find(|&p| {
            let ns = nspids(p);
            ns.len() == 2
                && ns[1] == pid
                && std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == target("many"))
                && tracer_pid(p) == Some(0)
                && proc_stat(p).is_some_and(|s| s.0 != 'Z' && s.0 != 't')
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            r.try_wait().is_none(),
            "the copy's ckpt restore ended:\n{}",
            r.stderr.text()
        );
        assert!(Instant::now() < deadline, "the copy never ran");
        thread::sleep(Duration::from_millis(2));
    };
    Copy { ckpt: r, root }
}

/// How many areas of `pid` are registered with a userfaultfd (`um` in VmFlags).
fn registered(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
                .count()
        })
        .unwrap_or(0)
}

/// Resident anonymous memory of `pid`, in KiB (smaps_rollup).
fn rss_anon_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Anonymous:")
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Send `cmd` to the copy and wait for its `n`-th line `expect`.
fn ask(c: &mut Copy, cmd: &str, expect: &str, n: usize) {
    c.ckpt.write_stdin(format!("{cmd}\n").as_bytes());
    c.ckpt
        .wait_until(&format!("print {expect:?} {n} times"), |p| {
            p.stdout.text().matches(expect).count() >= n
        });
}

/// The oracle's comparison of a copy with the original, IDs as the copy's namespace
/// sees them. `touch`: the copy's lazy areas are still registered (`um`): checked to be
/// there, then left out of the comparison (the one documented difference).
fn compare(name: &str, before: &oracle::Snapshot, root: i32, touch: bool) {
    let mut after = oracle::Snapshot::take(root)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    let mut um = 0;
    for (k, v) in after.entries.iter_mut() {
        if k.ends_with(".VmFlags") {
            let flags: Vec<&str> = v.1.split_whitespace().collect();
            if flags.contains(&"um") {
                um += 1;
                v.1 = flags
                    .into_iter()
                    .filter(|f| *f != "um")
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
    }
    if touch {
        assert!(um > 0, "{name}: no area of the copy waits for pages");
    } else {
        assert_eq!(um, 0, "{name}: areas still registered after the fill");
    }
    oracle::assert_same_kernel_state(
        name,
        "a copy restored with --new-pidns (IDs as its namespace sees them)",
        oracle::Cmp::Restored,
        before,
        &after,
        &[
            // --new-pidns itself: its own PID namespace, and the mount namespace its
            // init made to mount that namespace's /proc (the one new mount); the
            // descriptors' mounts are then those of another namespace
            "*.ns.pid",
            "*.ns.pid.parent",
            "*.ns.pid_for_children",
            "*.ns.mnt",
            "*.mountinfo",
            "*.fdinfo.mnt_id",
        ],
    );
}

#[test]
fn three_copies_side_by_side_each_hold_only_what_they_touch() {
    let name = "many_touch";
    let ctx = Ctx::new(name);
    let (img, pid, before) = warmed_up(&ctx);
    let t0 = Instant::now();
    let mut copies: Vec<Copy> = (0..3)
        .map(|_| copy(&ctx, &img, pid, &["--lazy=touch"], &[]))
        .collect();
    eprintln!("{name}: three copies running after {:?}", t0.elapsed());
    for c in &copies {
        assert!(
            registered(c.root) > 0,
            "{name}: copy {} was not restored lazily",
            c.root
        );
    }
    // Each goes on counting from the dump, on its own.
    for c in copies.iter_mut() {
        ask(c, "tick", "count 4\n", 1);
    }
    ask(&mut copies[0], "tick", "count 5\n", 1);
    for c in copies.iter_mut() {
        ask(c, "touch 16", "touched ok\n", 1);
    }
    // Each holds what it touched: 17 blocks of 64 KiB (and the program's few pages),
    // far from the area's 64 MiB.
    for c in &copies {
        let kib = rss_anon_kib(c.root);
        eprintln!(
            "{name}: copy {} holds {kib} KiB of anonymous memory",
            c.root
        );
        assert!(
            kib < 8 << 10,
            "{name}: copy {} holds {kib} KiB: more than it touched",
            c.root
        );
    }
    compare(name, &before, copies[1].root, true);
    // Killing one copy leaves the others running.
    let gone = copies.remove(1);
    assert!(send_signal(gone.root, libc::SIGKILL));
    let mut gone = gone;
    let st = gone.ckpt.wait();
    assert_eq!(
        st.code(),
        Some(128 + libc::SIGKILL),
        "{name}: the killed copy's ckpt: {}",
        gone.ckpt.stderr.text()
    );
    for c in copies.iter_mut() {
        ask(c, "tick", "count 5\n", 1);
        // (the whole area: every page comes in now, each copy's own)
        ask(c, "sum", "sum ok\n", 1);
        assert!(rss_anon_kib(c.root) >= MIB << 10);
    }
    for mut c in copies {
        c.ckpt.write_stdin(b"end\n");
        c.ckpt.close_stdin();
        let fin = c.ckpt.finish();
        assert_eq!(
            fin.status.code(),
            Some(0),
            "{name}: a copy's ckpt: {}",
            text(&fin.stderr)
        );
    }
}

/// `--lazy` (fill) with `--new-pidns`: served from outside the namespace, the rest
/// copied in the background, then nothing of it left; the copy is the original.
#[test]
fn a_copy_filled_in_the_background_in_a_new_pid_namespace() {
    let name = "many_fill";
    let ctx = Ctx::new(name);
    let (img, pid, before) = warmed_up(&ctx);
    let mut c = copy(&ctx, &img, pid, &["--lazy"], &[("CKPT_LAZY_STEP_MS", "50")]);
    assert!(
        registered(c.root) > 0,
        "{name}: the copy was not restored lazily"
    );
    ask(&mut c, "tick", "count 4\n", 1);
    let deadline = Instant::now() + timeout();
    while registered(c.root) > 0 {
        assert!(Instant::now() < deadline, "{name}: the fill never ended");
        thread::sleep(Duration::from_millis(5));
    }
    compare(name, &before, c.root, false);
    ask(&mut c, "sum", "sum ok\n", 1);
    c.ckpt.write_stdin(b"end\n");
    c.ckpt.close_stdin();
    let fin = c.ckpt.finish();
    assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
}

/// A copy's ckpt (its server) killed: that copy is killed (its watcher ends the PID
/// namespace; it never reads a page that is not its own), the other one runs on.
#[test]
fn killing_one_copys_server_ends_that_copy_only() {
    let name = "many_kill_server";
    let ctx = Ctx::new(name);
    let (img, pid, _) = warmed_up(&ctx);
    let mut a = copy(&ctx, &img, pid, &["--lazy=touch"], &[]);
    let mut b = copy(&ctx, &img, pid, &["--lazy=touch"], &[]);
    ask(&mut a, "tick", "count 4\n", 1);
    ask(&mut b, "tick", "count 4\n", 1);
    // (the root's parent: the init of its namespace)
    let init = proc_stat(b.root).map(|s| s.1).unwrap_or(0);
    b.ckpt.kill();
    wait_pids_gone(&[b.root, init], name);
    ask(&mut a, "tick", "count 5\n", 1);
    ask(&mut a, "sum", "sum ok\n", 1);
    a.ckpt.write_stdin(b"end\n");
    a.ckpt.close_stdin();
    let fin = a.ckpt.finish();
    assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
    // Nothing of the killed copy is left (its watcher comes to us once reaped).
    nothing_left(name);
}

/// A restore with `--lazy --new-pidns` that fails at its last step before the point of
/// no return (server and watcher running outside, the builder inside) leaves nothing.
#[test]
fn a_failed_lazy_restore_in_a_new_pid_namespace_leaves_nothing() {
    let name = "many_fail";
    let ctx = Ctx::new(name);
    let (img, _, _) = warmed_up(&ctx);
    for mode in ["--lazy", "--lazy=touch"] {
        let mut r = ctx.restore_with(
            &img,
            &[mode, "--new-pidns"],
            In::Pipe,
            &[],
            &[("CKPT_FAULT", "detach")],
        );
        let st = r.wait();
        assert_ne!(
            st.code(),
            Some(0),
            "{name} {mode}: the restore did not fail:\n{}",
            r.stderr.text()
        );
        nothing_left(&format!("{name} {mode}"));
    }
}

/// `--lazy=touch` without `--new-pidns` is refused before anything is made.
#[test]
fn lazy_touch_needs_new_pidns() {
    let ctx = Ctx::new("many_refuse");
    let (img, _, _) = warmed_up(&ctx);
    let r = ctx.ckpt(&["restore".as_ref(), "--lazy=touch".as_ref(), img.as_os_str()]);
    r.assert_fails(2);
    r.assert_stderr_mentions(&["--new-pidns"]);
}

// ---- restore-many from a resident template (`restore --template`, `ckpt spawn`) ----

/// `ckpt restore --template SOCK --new-pidns IMG`, once it listens: (its ckpt, the
/// server's PID, the socket).
fn template(ctx: &Ctx, img: &Path, env: &[(&str, &str)]) -> (Proc, i32, PathBuf) {
    let sock = ctx.path("tpl.sock");
    let s = sock.to_str().unwrap_or_default().to_string();
    let mut t = ctx.restore_with(img, &["--template", &s, "--new-pidns"], In::Null, &[], env);
    t.wait_until("the template listens", |p| p.stdout.text().contains('\n'));
    let server = t.stdout.text().trim().parse().unwrap_or(0);
    assert!(server > 0, "no server PID: {:?}", t.stdout.text());
    (t, server, sock)
}

/// A copy made by `ckpt spawn --json SOCK` (its stdin a pipe): the spawn (which waits
/// for the copy and relays nothing: the copy has its stdin and stdout), and the copy's
/// PID here, its init's and its PID in its namespace.
struct Spawned {
    ckpt: Proc,
    root: i32,
    init: i32,
}

fn spawn(ctx: &Ctx, sock: &Path) -> Spawned {
    let spec = Spec::new(ckpt_bin())
        .arg("spawn")
        .arg("--json")
        .arg(sock)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut p = ctx.spawn(&spec);
    p.wait_until("the copy runs", |p| {
        p.stdout.text().contains('\n') || p.stderr.text().contains("ckpt:")
    });
    let line = p
        .stdout
        .text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("spawn's JSON {line:?}: {e}; stderr {}", p.stderr.text()));
    let get = |k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0) as i32;
    eprintln!("spawned: {line}");
    Spawned {
        ckpt: p,
        root: get("pid"),
        init: get("init"),
    }
}

/// Send `cmd` to the copy and wait for its `n`-th line `expect`.
fn ask_spawned(c: &mut Spawned, cmd: &str, expect: &str, n: usize) {
    c.ckpt.write_stdin(format!("{cmd}\n").as_bytes());
    c.ckpt
        .wait_until(&format!("print {expect:?} {n} times"), |p| {
            p.stdout.text().matches(expect).count() >= n
        });
}

/// (Rss, Pss) in KiB of `pid`'s largest area (by Rss), from smaps.
fn biggest_area(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut best = (0, 0);
    let mut rss = 0;
    for l in text.lines() {
        let kib = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if l.starts_with("Rss:") {
            rss = kib(l);
        } else if l.starts_with("Pss:") && rss > best.0 {
            best = (rss, kib(l));
        }
    }
    best
}

/// Wait until nothing we started is left (zombies reaped).
fn nothing_left(name: &str) {
    let deadline = Instant::now() + timeout();
    loop {
        let stray = stray_children(&[]);
        if stray.is_empty() {
            break;
        }
        for &(p, st) in &stray {
            if st == 'Z' {
                wait_pids_gone(&[p], name);
            }
        }
        assert!(Instant::now() < deadline, "{name}: left behind: {stray:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Three copies forked from a template: each goes on from the dump on its own, in its
/// own PID namespace with the image's PID, the oracle sees the original in it, and
/// the pages are shared (each copy's Pss of the area a fraction of its Rss) until one
/// writes (a write in one copy is not seen in another). The template's server killed:
/// the copies run on; a copy asked after the template ended fails, leaving nothing.
#[test]
fn template_copies_share_their_pages_and_outlive_it() {
    let name = "many_template";
    let ctx = Ctx::new(name);
    let (img, pid, before) = warmed_up(&ctx);
    let (mut tpl, server, sock) = template(&ctx, &img, &[]);
    let mut copies: Vec<Spawned> = (0..3).map(|_| spawn(&ctx, &sock)).collect();
    let mut namespaces = std::collections::BTreeSet::new();
    for c in &copies {
        let ns = nspids(c.root);
        assert_eq!(ns.last(), Some(&pid), "{name}: copy {} has {ns:?}", c.root);
        assert_eq!(
            nspids(c.init).last(),
            Some(&1),
            "{name}: its init is not PID 1"
        );
        assert_eq!(
            proc_stat(c.root).map(|s| s.1),
            Some(c.init),
            "{name}: parent"
        );
        namespaces.insert(std::fs::read_link(format!("/proc/{}/ns/pid", c.root)).ok());
    }
    assert_eq!(
        namespaces.len(),
        3,
        "{name}: the copies share a PID namespace"
    );
    // Each goes on counting from the dump, on its own: writes are not shared.
    for c in copies.iter_mut() {
        ask_spawned(c, "tick", "count 4\n", 1);
    }
    for n in 5..=7 {
        ask_spawned(&mut copies[0], "tick", &format!("count {n}\n"), 1);
    }
    ask_spawned(&mut copies[1], "tick", "count 5\n", 1);
    for c in copies.iter_mut() {
        ask_spawned(c, "sum", "sum ok\n", 1);
    }
    // Every page of the area read in each copy, yet shared: the template and the three
    // copies map the same pages, so each copy's Pss is about a quarter of its Rss.
    for c in &copies {
        let (rss, pss) = biggest_area(c.root);
        eprintln!("{name}: copy {}: area Rss {rss} KiB, Pss {pss} KiB", c.root);
        assert!(
            rss >= MIB << 10,
            "{name}: the area is not all there ({rss} KiB)"
        );
        assert!(
            pss * 3 < rss,
            "{name}: copy {}: Pss {pss} KiB of Rss {rss} KiB: pages not shared",
            c.root
        );
    }
    compare_template_copy(name, &before, copies[2].root);
    // The template's server dies: the copies run on.
    assert!(send_signal(server, libc::SIGKILL));
    let st = tpl.wait();
    assert_eq!(
        st.code(),
        Some(1),
        "{name}: the template's ckpt: {}",
        tpl.stderr.text()
    );
    for c in copies.iter_mut() {
        ask_spawned(c, "tick", "count", 1);
        ask_spawned(c, "sum", "sum ok\n", 2);
    }
    // A copy asked for now: refused, nothing made.
    let r = ctx.ckpt(&["spawn".as_ref(), sock.as_os_str()]);
    r.assert_fails(1);
    for mut c in copies {
        c.ckpt.write_stdin(b"end\n");
        c.ckpt.close_stdin();
        let fin = c.ckpt.finish();
        assert_eq!(fin.status.code(), Some(0), "{name}: {}", text(&fin.stderr));
    }
    nothing_left(name);
}

/// The oracle's comparison of a copy made by a template with the original, IDs as
/// the copy's namespace sees them.
fn compare_template_copy(name: &str, before: &oracle::Snapshot, root: i32) {
    let after = oracle::Snapshot::take(root)
        .moved(true)
        .as_seen_levels_below(2);
    oracle::assert_same_kernel_state(
        name,
        "a copy forked from a template (IDs as its namespace sees them)",
        oracle::Cmp::Restored,
        before,
        &after,
        &[
            // its PID namespace is a child of the template's: NSpid has the ID in the
            // template's namespace too (one more level than a plain --new-pidns copy)
            "*.status.NSpid",
            // its own PID namespace (below the template's), and the mount namespace
            // its init made to mount that namespace's /proc; the descriptors' mounts
            // are then those of another namespace
            "*.ns.pid",
            "*.ns.pid.parent",
            "*.ns.pid_for_children",
            "*.ns.mnt",
            "*.mountinfo",
            "*.fdinfo.mnt_id",
        ],
    );
}

/// A copy that fails at any step before it runs leaves nothing (the template serves
/// on): in the init's batch before the copy is forked (taking the client's
/// descriptors), once the copy exists (its first call), at its last step; `--stop`
/// ends the template, removing its socket; an image a fork could not copy faithfully
/// is refused by name before anything is made.
#[test]
fn template_failures_leave_nothing() {
    let name = "many_template_fail";
    let ctx = Ctx::new(name);
    let (img, _, _) = warmed_up(&ctx);
    let mut sock = PathBuf::new();
    for step in [
        "take the client's descriptor",
        "set_tid_address (the copy)",
        "release the copy",
    ] {
        let (mut tpl, _, s) = template(&ctx, &img, &[("CKPT_FAULT", step)]);
        for _ in 0..2 {
            let r = ctx.ckpt(&["spawn".as_ref(), s.as_os_str()]);
            r.assert_fails(1);
            r.assert_stderr_mentions(&[step]);
        }
        // Only the template is left: its ckpt, its init, server and staged process.
        let r = ctx.ckpt(&["spawn".as_ref(), "--stop".as_ref(), s.as_os_str()]);
        r.assert_ok();
        let st = tpl.wait();
        assert_eq!(st.code(), Some(0), "{name}: {step}: {}", tpl.stderr.text());
        assert!(!s.exists(), "{name}: {step}: the socket is left");
        nothing_left(name);
        sock = s;
    }
    // Without --new-pidns: bad usage.
    let s = sock.to_str().unwrap_or_default();
    let r = ctx.ckpt(&["restore", "--template", s, img.to_str().unwrap_or_default()]);
    r.assert_fails(2);
    // A descriptor that is not a standard one: refused by name, nothing made.
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    use std::os::fd::AsRawFd;
    let fd = null.as_raw_fd();
    let spec = Spec::new(target("many"))
        .arg("4")
        .stdin(In::Pipe)
        .keep_fd(fd)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    ctx.track(t.pid);
    let img2 = ctx.path("many-fd.img");
    ctx.try_dump(t.pid, &img2).assert_ok();
    t.expect_killed();
    let r = ctx.ckpt(&[
        "restore",
        "--template",
        s,
        "--new-pidns",
        img2.to_str().unwrap_or_default(),
    ]);
    r.assert_fails(1);
    r.assert_stderr_mentions(&[&format!("descriptor {fd}"), "open file description"]);
    assert!(!sock.exists(), "{name}: a refused template made its socket");
    nothing_left(name);
}
