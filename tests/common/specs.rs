//! The targets' set-ups shared by the test crates, and helpers over image descriptors
//! and text.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------
// The targets' set-ups, shared by the test crates

/// `counter STEPS MAPFILE OPTS...`, with its mapped file (`map.bin`, 3 pages and a bit)
/// created in the test directory if missing.
pub fn counter_spec(ctx: &Ctx, bin: &str, steps: u32, opts: &[&str]) -> Spec {
    let map = ctx.path("map.bin");
    if !map.exists() {
        write_pattern_file(&map, 3 * 4096 + 100, 7);
    }
    let mut s = Spec::new(target(bin)).arg(steps.to_string()).arg(&map);
    for o in opts {
        s = s.arg(o);
    }
    s
}

/// The directory `files` works in, with its input file; `log.txt` and `data.bin` removed
/// (so a second run starts like the first).
pub fn files_dir(ctx: &Ctx) -> PathBuf {
    let d = ctx.path("files");
    fs::create_dir_all(&d).expect("mkdir files dir");
    let input: String = (1..=400).map(|i| format!("line {i}\n")).collect();
    let p = d.join("input.txt");
    if !p.exists() {
        fs::write(&p, input).expect("write input.txt");
    }
    for f in ["log.txt", "data.bin"] {
        let _ = fs::remove_file(d.join(f));
    }
    d
}

/// `signals STEPS USR2_STEP USR1_STEP sleep=MS`.
pub fn signals_spec(steps: u32, usr2_step: u32, usr1_step: u32, sleep_ms: u32) -> Spec {
    Spec::new(target("signals"))
        .arg(steps.to_string())
        .arg(usr2_step.to_string())
        .arg(usr1_step.to_string())
        .arg(format!("sleep={sleep_ms}"))
}

/// Drive a `signals` run to its end: send SIGUSR2 and SIGUSR1 (to `pid`) when it asks,
/// unless it already asked and got them (`sent_usr2`, `sent_usr1`).
pub fn drive_signals(p: &mut Proc, pid: i32, sent_usr2: bool, sent_usr1: bool) -> Finished {
    if !sent_usr2 {
        p.wait_for("waiting for SIGUSR2");
        assert!(send_signal(pid, libc::SIGUSR2), "kill SIGUSR2 {pid}");
    }
    if !sent_usr1 {
        p.wait_for("waiting for SIGUSR1");
        assert!(send_signal(pid, libc::SIGUSR1), "kill SIGUSR1 {pid}");
    }
    p.finish()
}

/// `python3 tests/targets/loop.py STEPS SLEEP`.
pub fn python_spec(steps: u32, sleep_s: f64) -> Spec {
    Spec::new(python3())
        .arg(script("loop.py"))
        .arg(steps.to_string())
        .arg(sleep_s.to_string())
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

// ---------------------------------------------------------------------------------------
// Image descriptors and text

/// Bytes as text, for messages and substring checks.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kinds of the descriptors of every process of an image (`inspect --json`:
/// `processes[*].fds[*].kind`, whose single key names the kind: "Pipe", "UnixPair", "Memfd"...).
pub fn fd_kinds(ctx: &Ctx, img: &Path) -> BTreeSet<String> {
    let j = ctx.inspect_json(img);
    let mut kinds = BTreeSet::new();
    for p in j["processes"].as_array().expect("processes array") {
        for fd in p["fds"].as_array().expect("fds array") {
            if let Some(k) = fd["kind"].as_object().and_then(|o| o.keys().next()) {
                kinds.insert(k.clone());
            } else if let Some(k) = fd["kind"].as_str() {
                kinds.insert(k.to_string());
            }
        }
    }
    kinds
}

/// Fails unless the image holds a descriptor of each kind in `want`.
pub fn assert_has_kinds(ctx: &Ctx, img: &Path, want: &[&str], what: &str) {
    let kinds = fd_kinds(ctx, img);
    for w in want {
        assert!(
            kinds.contains(*w),
            "{what}: the image should hold a {w} descriptor; it has {kinds:?}"
        );
    }
}

/// A TCP connection to `127.0.0.1:port`, retried until the listener is up (within the
/// harness timeout), with the harness timeout on reads.
pub fn connect_loopback(port: u16, what: &str) -> std::net::TcpStream {
    let deadline = Instant::now() + timeout();
    let conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect to {what}: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    };
    conn.set_read_timeout(Some(timeout()))
        .expect("read timeout");
    conn
}

/// The end of a dumped-and-restored tree's run: the output before the dump and the
/// restored copy's output together are the reference run's, byte for byte; `ckpt
/// restore` exits 0 (the root's status); and none of the tree's processes is left.
pub fn assert_tree_finished_like_reference(
    what: &str,
    reference: &[u8],
    before: Vec<u8>,
    fin: &Finished,
    pids: &[i32],
) {
    assert_same_output(what, reference, &[before, fin.stdout.clone()].concat());
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{what}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    for &p in pids {
        assert_no_process(p, what);
    }
}

/// `ckpt restore IMG` (run in the test directory, so that a file it leaves there shows in
/// a listing) with `env` added, waited for to its end.
pub fn restore_env(ctx: &Ctx, img: &Path, env: &[(&str, &str)]) -> Finished {
    let spec = env.iter().fold(
        Spec::new(ckpt_bin()).arg("restore").arg(img).cwd(&ctx.dir),
        |s, (k, v)| s.env(k, v),
    );
    ctx.spawn(&spec).finish()
}

/// A restore of `img` that traces its steps (`CKPT_FAULT_TRACE=1`, with a fault that never
/// hits): it must succeed and trace more than `min` steps, one of them containing `must`
/// (unless empty). Returns it and its step lines (`ckpt: step #N NAME`), in order.
pub fn traced_restore(ctx: &Ctx, img: &Path, min: usize, must: &str) -> (Finished, Vec<String>) {
    let trace = restore_env(
        ctx,
        img,
        &[("CKPT_FAULT", "no such step"), ("CKPT_FAULT_TRACE", "1")],
    );
    let trace_text = text(&trace.stderr);
    let steps: Vec<String> = trace_text
        .lines()
        .filter(|l| l.starts_with("ckpt: step #"))
        .map(String::from)
        .collect();
    assert!(
        steps.len() > min && steps.iter().any(|l| l.contains(must)),
        "too few traced steps, or none is {must:?} (fault-injection feature on?):\n{trace_text}"
    );
    assert_eq!(
        trace.status.code(),
        Some(0),
        "the traced restore: {trace_text}"
    );
    (trace, steps)
}

/// The faults a walk over a restore's `total` steps tries: the steps named in `named`,
/// then the step numbers (`#N`) that `keep` lets through.
pub fn fault_walk(named: &[&str], total: usize, keep: impl Fn(usize) -> bool) -> Vec<String> {
    named
        .iter()
        .map(|s| s.to_string())
        .chain((1..=total).filter(|n| keep(*n)).map(|n| format!("#{n}")))
        .collect()
}

/// Run target `prog` with argument `mode` (standard input a pipe, in the test
/// directory) until it prints "ready" and its `procs` processes each wait in one of the
/// system calls `waits`; dump it (killing it) and restore it (the oracle compares the
/// trees), then tell the restored tree to go ("go" on its standard input) and return
/// the output of both runs together.
pub fn dump_ready_then_go(
    ctx: &Ctx,
    prog: &str,
    mode: &str,
    procs: usize,
    waits: &[i64],
) -> Vec<u8> {
    let name = format!("{prog} {mode}");
    let spec = Spec::new(target(prog))
        .arg(mode)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, procs, &name);
    for &p in &pids {
        wait_in_any_syscall(p, waits, &name);
    }
    let img = ctx.path(&format!("{prog}.img"));
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish(&format!("{name}: original"));
    wait_pids_gone(&pids, &name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{name}: restore: {}",
        text(&fin.stderr)
    );
    [printed, fin.stdout].concat()
}

/// A walk of failing restores over one image, as the tests of each kind of namespace
/// run it: a traced restore ([`traced_restore`]: more than `min` steps, one of them
/// `must`), then a restore failing at each step of `named` and at the step numbers
/// `keep(n, total)` lets through, each leaving none of `pids`
/// ([`assert_restore_fault_leaves_nothing`]) and passing `check(fault)` (what else the
/// test watches: mounts, namespaces...), then a plain restore. The traced and the final
/// restore both continue `before` (the original's output up to its dump) as the
/// undisturbed `reference` ran.
pub struct RestoreWalk<'a> {
    /// The program, in messages.
    pub name: &'a str,
    pub img: &'a Path,
    pub reference: &'a [u8],
    pub before: &'a [u8],
    pub pids: &'a [i32],
    pub min: usize,
    pub must: &'a str,
    pub named: &'a [&'a str],
}

impl RestoreWalk<'_> {
    pub fn run(&self, ctx: &Ctx, keep: impl Fn(usize, usize) -> bool, check: impl Fn(&str)) {
        let (trace, steps) = traced_restore(ctx, self.img, self.min, self.must);
        let total = steps.len();
        assert_same_output(
            &format!("{}: the traced restore", self.name),
            self.reference,
            &[self.before, &trace.stdout].concat(),
        );
        let faults = fault_walk(self.named, total, |n| keep(n, total));
        for f in &faults {
            assert_restore_fault_leaves_nothing(ctx, self.img, &[], f, self.pids, &[]);
            check(f);
        }
        eprintln!("{} failing restores of {total} steps", faults.len());
        let fin = restore_env(ctx, self.img, &[]);
        assert_eq!(
            fin.status.code(),
            Some(0),
            "{}: the final restore: {}",
            self.name,
            text(&fin.stderr)
        );
        assert_same_output(
            &format!("{}: restored after the failed ones", self.name),
            self.reference,
            &[self.before, &fin.stdout].concat(),
        );
    }
}

/// `ckpt restore IMG EXTRA...` made to fail (`CKPT_FAULT`) at the first step whose name
/// contains `fault`: it must exit 1 naming the injected fault, print nothing of the
/// program, and leave none of `pids` and no child of ours but `except`. Returns what it
/// wrote on stderr.
pub fn assert_restore_fault_leaves_nothing(
    ctx: &Ctx,
    img: &Path,
    extra: &[&str],
    fault: &str,
    pids: &[i32],
    except: &[i32],
) -> String {
    let what = format!("restore of {} failing at {fault:?}", img.display());
    let spec = extra.iter().fold(
        Spec::new(ckpt_bin())
            .arg("restore")
            .arg(img)
            .env("RUST_BACKTRACE", "1")
            .env("CKPT_FAULT", fault)
            // in the test directory, so that a file it leaves there shows in a listing
            .cwd(&ctx.dir),
        |s, a| s.arg(a),
    );
    let f = ctx.spawn(&spec).finish();
    let stderr = text(&f.stderr);
    assert_eq!(
        f.status.code(),
        Some(1),
        "{what}: exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("injected fault") && (fault.starts_with('#') || stderr.contains(fault)),
        "{what}: stderr does not name the injected fault:\n{stderr}"
    );
    assert!(
        f.stdout.is_empty(),
        "{what}: the tree ran:\n{}",
        text(&f.stdout)
    );
    for &p in pids {
        assert_no_process(p, &what);
    }
    let strays = stray_children(except);
    assert!(
        strays.is_empty(),
        "{what}: left processes behind: {strays:?}"
    );
    stderr
}

/// Runs `blocked_read` once on `all_input` for reference, then again with its first two
/// lines, and dumps it (killing it) while it blocks in read(2) for the third. Returns the
/// reference run, the PID and what the dumped run printed.
pub fn blocked_read_dumped_in_read(
    ctx: &Ctx,
    all_input: &[u8],
    img: &Path,
) -> (Finished, i32, Vec<u8>) {
    let spec = Spec::new(target("blocked_read")).stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.write_stdin(all_input);
    rp.close_stdin();
    let reference = rp.finish();

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.write_stdin(b"alpha\nbeta\n");
    t.wait_lines(2);
    wait_in_syscall(pid, libc::SYS_read, "blocked_read");
    ctx.dump(pid, img);
    t.expect_killed();
    (reference, pid, t.stdout.finish("original"))
}

/// `ckpt restore IMG` (stdin a pipe) of the tree the state oracle read as `before`
/// (pid `before`'s root, at rest), waited for until that tree runs whole (a failure
/// naming `what` with restore's stderr if restore ends or the time runs out first), and
/// the oracle's reading of it then: the running restore and that snapshot.
pub fn restore_until_up(
    ctx: &Ctx,
    img: &Path,
    before: &oracle::Snapshot,
    pid: i32,
    what: &str,
) -> (Proc, oracle::Snapshot) {
    restore_until_up_with(ctx, img, &[], before, pid, what)
}

/// [`restore_until_up`] with `extra` arguments to `ckpt restore` (`--join-ns ...`).
pub fn restore_until_up_with(
    ctx: &Ctx,
    img: &Path,
    extra: &[&str],
    before: &oracle::Snapshot,
    pid: i32,
    what: &str,
) -> (Proc, oracle::Snapshot) {
    let mut r = ctx.restore(img, extra, In::Pipe);
    wait_restored_up(before, &mut r, what);
    let after = oracle::Snapshot::at_rest(pid, what);
    (r, after)
}

/// Wait until the tree restored by `r` runs whole (as the state oracle's `before` knows
/// it), failing `name` if the restore ends or the time runs out first.
pub fn wait_restored_up(before: &oracle::Snapshot, r: &mut Proc, name: &str) {
    let deadline = Instant::now() + timeout();
    while !oracle::restored_tree_up(before) {
        assert!(
            Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        thread::sleep(Duration::from_millis(5));
    }
}
