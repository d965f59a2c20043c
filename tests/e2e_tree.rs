//! End-to-end tests of threads, process trees, signals and timers (issue 4): run a
//! multi-threaded program or a whole tree of processes, dump it at some moment, kill it,
//! restore it, and check that it continues: its output is byte for byte that of an
//! uninterrupted run, and the kernel's view of the restored tree (PIDs, TIDs, parents,
//! process groups, sessions, zombies, pending signals) is the dumped one. The targets
//! (`tests/targets/{threads,tree,session,zombie,timers}.c`) print facts that would be
//! false if state were lost after the restore. Failure path: a restore of a tree that
//! fails at any step leaves none of the tree's processes behind.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------
// The kernel's view of a process tree

/// Fields of /proc/PID/stat after the command name: [0] is the state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    Some(
        String::from_utf8_lossy(&s[close + 1..])
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// (state, ppid, pgid, sid) of `pid`.
fn stat_ids(pid: i32) -> Option<(char, i32, i32, i32)> {
    let f = stat_fields(pid)?;
    Some((
        f.first()?.chars().next()?,
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
    ))
}

/// The exit status (as waitpid reports it) a zombie holds: field 52 of /proc/PID/stat.
fn stat_exit_code(pid: i32) -> Option<i64> {
    stat_fields(pid)?.get(49)?.parse().ok()
}

/// Children of `pid` (zombies included), from /proc/PID/task/*/children, sorted.
fn children(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for tid in tasks(pid) {
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            v.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// `root` and all its descendants, parents before children.
fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        if !pid_exists(p) || out.contains(&p) {
            continue;
        }
        out.push(p);
        queue.extend(children(p));
    }
    out
}

/// An ID as seen from the tree: one of its processes, or something outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Tree(i32),
    Outside,
}

/// One process of a tree as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    pid: i32,
    ppid: Id,
    pgid: Id,
    sid: Id,
    zombie: bool,
    /// The exit status a zombie holds (waitpid format).
    exit_code: Option<i64>,
    tids: Vec<i32>,
}

/// The tree rooted at `root`: its processes with their parents, process groups and
/// sessions (as IDs of the tree, or "outside" — the root's parent, group and session
/// are the test's before the dump and `ckpt restore`'s after it), zombies, threads.
fn shape(root: i32) -> Vec<Member> {
    let pids = tree_pids(root);
    let rel = |id: i32| {
        if pids.contains(&id) {
            Id::Tree(id)
        } else {
            Id::Outside
        }
    };
    let mut v: Vec<Member> = pids
        .iter()
        .filter_map(|&pid| {
            let (state, ppid, pgid, sid) = stat_ids(pid)?;
            let zombie = state == 'Z';
            Some(Member {
                pid,
                ppid: rel(ppid),
                pgid: rel(pgid),
                sid: rel(sid),
                zombie,
                exit_code: if zombie { stat_exit_code(pid) } else { None },
                tids: tasks(pid),
            })
        })
        .collect();
    v.sort_by_key(|m| m.pid);
    v
}

/// Wait until the tree rooted at `root` has `n` processes, `zombies` of them zombies.
fn wait_tree(root: i32, n: usize, zombies: usize, what: &str) -> Vec<Member> {
    let deadline = Instant::now() + timeout();
    loop {
        let s = shape(root);
        if s.len() == n && s.iter().filter(|m| m.zombie).count() == zombies {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the tree of {root} never had {n} processes with {zombies} zombies; \
             now: {s:#?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until none of `pids` exists. Processes of a tree killed by `ckpt dump` whose
/// parent died first were reparented to us (child subreaper): reap them.
fn wait_all_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + timeout();
    for &pid in pids {
        while pid_exists(pid) {
            if proc_stat(pid).is_some_and(|s| s.0 == 'Z' && s.1 == my_pid()) {
                let mut st = 0;
                // SAFETY: waitpid with a valid pointer to a local.
                unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: pid {pid} still exists: {:?}",
                stat_ids(pid)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Signal masks of /proc/PID/status (`SigPnd`, `ShdPnd`, `SigBlk`, `SigCgt`).
fn sig_masks(pid: i32) -> [u64; 4] {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{s}"))
    };
    [
        field("SigPnd:"),
        field("ShdPnd:"),
        field("SigBlk:"),
        field("SigCgt:"),
    ]
}

fn sig_bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

// ---------------------------------------------------------------------------------------
// Dump and restore a tree

/// A tree dumped (and killed) mid-run.
struct Dumped {
    root: i32,
    img: PathBuf,
    /// What the tree printed before the dump.
    before: Vec<u8>,
    /// The tree as the kernel showed it just before the dump.
    shape: Vec<Member>,
    /// A file the tree waits for (after the dump point) before it goes on: created once
    /// a restored tree runs, removed when it has finished.
    go: Option<PathBuf>,
}

impl Dumped {
    fn pids(&self) -> Vec<i32> {
        self.shape.iter().map(|m| m.pid).collect()
    }

    /// Let a restored tree go on past its wait for the go file.
    fn let_go(&self) {
        if let Some(go) = &self.go {
            fs::write(go, "").expect("create go file");
        }
    }

    /// Make the next restored tree wait for the go file again.
    fn hold(&self) {
        if let Some(go) = &self.go {
            let _ = fs::remove_file(go);
        }
    }
}

/// Start `spec`, wait until it printed `k` lines and its tree has `n` processes
/// (`zombies` of them zombies), record the tree, dump it to `tag.img` (which kills it)
/// and wait until every process of it is gone.
fn start_and_dump(ctx: &Ctx, spec: &Spec, k: usize, n: usize, zombies: usize, tag: &str) -> Dumped {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let root = t.pid;
    let shape = wait_tree(root, n, zombies, tag);
    for m in &shape {
        ctx.track(m.pid);
    }
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(root, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    let pids: Vec<i32> = shape.iter().map(|m| m.pid).collect();
    wait_all_gone(&pids, &format!("{tag}: original after the dump"));
    Dumped {
        root,
        img,
        before,
        shape,
        go: None,
    }
}

/// Restore `d` attached; once the restored tree runs (printed a line), assert it is the
/// dumped tree (same PIDs, TIDs, parents, groups, sessions, zombies with their exit
/// status), and only then let it go on; then assert its whole output and exit status
/// are the uninterrupted run's, and nothing is left.
fn restore_and_compare(ctx: &Ctx, d: &Dumped, reference: &Finished, tag: &str) {
    let mut r = ctx.restore(&d.img, &[], In::Null);
    r.wait_lines(1);
    let now = shape(d.root);
    assert_eq!(
        now, d.shape,
        "{tag}: the restored tree (left) is not the dumped one (right)"
    );
    d.let_go();
    let fin = r.finish();
    d.hold();
    assert_same_output(
        &format!("{tag} (dumped, restored)"),
        &reference.stdout,
        &[d.before.clone(), fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        reference.status.code(),
        "{tag}: ckpt restore must exit with the restored root's exit status; stderr:\n{}",
        String::from_utf8_lossy(&fin.stderr)
    );
    for pid in d.pids() {
        assert_no_process(pid, tag);
    }
}

/// `ckpt restore IMAGE` (attached) with extra environment variables.
fn restore_with_env(ctx: &Ctx, img: &Path, env: &[(&str, &str)]) -> Proc {
    let mut spec = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(img)
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    ctx.spawn(&spec)
}

// ---------------------------------------------------------------------------------------
// Threads

const THREAD_ROUNDS: u32 = 300;

#[test]
fn threads_8_taking_turns_continue_after_restore_and_a_second_dump() {
    let ctx = Ctx::new("threads_8_taking_turns_continue_after_restore_and_a_second_dump");
    let spec = Spec::new(target("threads")).arg(THREAD_ROUNDS.to_string());
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));

    let d = start_and_dump(&ctx, &spec, 60, 1, 0, "threads");
    let pid = d.root;
    assert_eq!(
        d.shape[0].tids.len(),
        9,
        "threads: expected main + 8 workers: {:?}",
        d.shape
    );

    // Restore, let it take some turns, check its threads are the dumped ones...
    let mut r = ctx.restore(&d.img, &[], In::Null);
    r.wait_lines(30);
    assert_eq!(
        tasks(pid),
        d.shape[0].tids,
        "threads: the restored process has other TIDs"
    );
    // ...and dump the restored process again (killing it): a restored multi-threaded
    // process must be as dumpable as the original.
    let img2 = ctx.path("threads-again.img");
    ctx.dump(pid, &img2);
    let mid = r.finish();
    assert_eq!(
        mid.status.code(),
        Some(128 + libc::SIGKILL),
        "ckpt restore when its restored process is killed by the second dump; stderr:\n{}",
        String::from_utf8_lossy(&mid.stderr)
    );
    wait_all_gone(&[pid], "threads after the second dump");

    let mut r2 = ctx.restore(&img2, &[], In::Null);
    r2.wait_lines(1);
    assert_eq!(
        tasks(pid),
        d.shape[0].tids,
        "threads: the twice restored process has other TIDs"
    );
    let fin = r2.finish();
    assert_same_output(
        "threads (dumped, restored, dumped again, restored)",
        &reference.stdout,
        &[d.before, mid.stdout, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
    assert_no_process(pid, "threads");
}

#[test]
fn threads_8_dumped_leave_running_then_restored_after_the_original_is_killed() {
    let ctx = Ctx::new("threads_8_dumped_leave_running_then_restored_after_the_original_is_killed");
    let spec = Spec::new(target("threads")).arg(THREAD_ROUNDS.to_string());
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(60);
    let pid = t.pid;
    let tids = tasks(pid);
    assert_eq!(tids.len(), 9, "expected main + 8 workers: {tids:?}");
    let printed_before_dump = t.stdout.bytes().len();
    let img = ctx.path("img");
    ctx.dump_leave_running(pid, &img);
    // Every thread goes on, untraced, and they keep taking turns.
    for &tid in &tids {
        assert_running_untraced(tid, &format!("thread {tid} after dump --leave-running"));
    }
    let n = t.stdout.lines();
    t.wait_lines(n + 20);
    t.kill();
    let original = t.stdout.finish("original");
    wait_all_gone(&[pid], "original after kill");

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    assert_eq!(tasks(pid), tids, "the restored copy has other TIDs");
    let fin = r.finish();
    assert_continues_from_dump(
        "threads --leave-running",
        &reference.stdout,
        &original,
        &fin.stdout,
        printed_before_dump,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "exit status of the restored copy"
    );
}

// ---------------------------------------------------------------------------------------
// Process trees

#[test]
fn fork_tree_4_levels_sharing_anonymous_memory_continues_after_restore() {
    let ctx = Ctx::new("fork_tree_4_levels_sharing_anonymous_memory_continues_after_restore");
    let spec = Spec::new(target("tree")).arg("150");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));
    let d = start_and_dump(&ctx, &spec, 40, 5, 0, "tree");
    // R -> A -> G -> H and R -> B: four levels.
    let depth = |pid: i32| {
        let mut depth = 0;
        let mut p = pid;
        while let Some(m) = d.shape.iter().find(|m| m.pid == p) {
            depth += 1;
            match m.ppid {
                Id::Tree(pp) => p = pp,
                Id::Outside => break,
            }
        }
        depth
    };
    let deepest = d.pids().into_iter().map(depth).max();
    assert_eq!(deepest, Some(4), "tree: {:#?}", d.shape);
    restore_and_compare(&ctx, &d, &reference, "tree");
}

#[test]
fn session_with_two_process_groups_survives_restore() {
    let ctx = Ctx::new("session_with_two_process_groups_survives_restore");
    let spec = Spec::new(target("session")).arg("60").arg("50");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));
    let d = start_and_dump(&ctx, &spec, 100, 4, 0, "session");
    // R leads a session and a group; C1 leads a second group with GC in it; C2 is in R's.
    let root = d.root;
    let leaders: Vec<i32> = d
        .shape
        .iter()
        .filter(|m| m.pgid == Id::Tree(m.pid))
        .map(|m| m.pid)
        .collect();
    assert_eq!(leaders.len(), 2, "session: {:#?}", d.shape);
    for m in &d.shape {
        assert_eq!(m.sid, Id::Tree(root), "session: {:#?}", d.shape);
    }
    let in_c1_group = d.shape.iter().filter(|m| m.pgid != Id::Tree(root)).count();
    assert_eq!(in_c1_group, 2, "session: {:#?}", d.shape);
    restore_and_compare(&ctx, &d, &reference, "session");
}

/// `zombie` (R with zombie Z and child P with zombie Z2), dumped while both zombies exist
/// and before either parent may reap them (they wait for the go file).
fn dumped_zombies(ctx: &Ctx) -> (Dumped, Finished) {
    let go = ctx.path("go");
    let spec = Spec::new(target("zombie"))
        .arg("25")
        .arg("5")
        .arg(&go)
        .arg("sleep=20");
    fs::write(&go, "").expect("create go file");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0));
    fs::remove_file(&go).expect("remove go file");

    let mut d = start_and_dump(ctx, &spec, 8, 4, 2, "zombie");
    d.go = Some(go);
    let mut codes: Vec<Option<i64>> = d
        .shape
        .iter()
        .filter(|m| m.zombie)
        .map(|m| m.exit_code)
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [Some(i64::from(libc::SIGTERM)), Some(42 << 8)],
        "zombie: expected a zombie killed by SIGTERM and one that exited with 42: {:#?}",
        d.shape
    );
    (d, reference)
}

#[test]
fn zombies_are_reaped_after_restore_with_their_exit_status() {
    let ctx = Ctx::new("zombies_are_reaped_after_restore_with_their_exit_status");
    // The zombies come back with their parents and statuses (checked before the parents
    // may reap them), and the parents collect the right statuses after the restore.
    let (d, reference) = dumped_zombies(&ctx);
    restore_and_compare(&ctx, &d, &reference, "zombie");
}

// ---------------------------------------------------------------------------------------
// Signals and timers

#[test]
fn pending_signals_with_siginfo_and_running_timers_survive_restore() {
    let ctx = Ctx::new("pending_signals_with_siginfo_and_running_timers_survive_restore");
    let spec = Spec::new(target("timers")).arg("30").arg("22");
    // The reference runs alongside (it mostly sleeps; its facts hold under any load).
    let mut rp = ctx.spawn(&spec);

    let mut t = ctx.spawn(&spec);
    t.wait_lines(9);
    let pid = t.pid;
    let masks = sig_masks(pid);
    // Timer signals may be pending for a moment: leave them out.
    let timer_bits = sig_bit(libc::SIGALRM) | sig_bit(libc::SIGUSR1);
    let pending = |m: [u64; 4]| [m[0] & !timer_bits, m[1] & !timer_bits, m[2], m[3]];
    let rtmin = libc::SIGRTMIN();
    assert_eq!(
        pending(masks)[..3],
        [
            sig_bit(rtmin + 1),
            sig_bit(libc::SIGUSR2) | sig_bit(rtmin),
            sig_bit(libc::SIGUSR2) | sig_bit(rtmin) | sig_bit(rtmin + 1)
        ],
        "timers before the dump: SigPnd (per thread), ShdPnd (process), SigBlk"
    );
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let after = sig_masks(pid);
    assert!(
        !r.stdout.text().contains("unblocked"),
        "timers: the restored process unblocked its signals before the test looked"
    );
    assert_eq!(
        pending(after),
        pending(masks),
        "timers: pending (per thread, process-wide), blocked and caught signals after \
         restore (left) and before the dump (right)"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    assert_same_output(
        "timers (dumped, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
}

#[test]
fn timers_firing_every_millisecond_survive_three_dumps_and_restores() {
    // Timers that expire all the time while the process is being dumped and restored:
    // their signals must neither break the restore nor get lost or duplicated. Each
    // restored process is dumped again a few ticks later.
    let ctx = Ctx::new("timers_firing_every_millisecond_survive_three_dumps_and_restores");
    let spec = Spec::new(target("timers"))
        .arg("24")
        .arg("20")
        .arg("itimer=1000")
        .arg("ptimer=1000");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let pid = t.pid;
    let mut img = ctx.path("1.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish("original");
    wait_all_gone(&[pid], "original after the dump");
    for n in 2..=4 {
        let mut r = ctx.restore(&img, &[], In::Null);
        if n == 4 {
            let fin = r.finish();
            output.extend(fin.stdout);
            assert_eq!(
                fin.status.code(),
                Some(0),
                "last restore; stderr:\n{}",
                String::from_utf8_lossy(&fin.stderr)
            );
            break;
        }
        r.wait_lines(4);
        img = ctx.path(&format!("{n}.img"));
        ctx.dump(pid, &img);
        let mid = r.finish();
        assert_eq!(
            mid.status.code(),
            Some(128 + libc::SIGKILL),
            "restore #{}: ckpt restore when the dump killed the restored process; \
             stderr:\n{}",
            n - 1,
            String::from_utf8_lossy(&mid.stderr)
        );
        output.extend(mid.stdout);
        wait_all_gone(&[pid], &format!("restored copy #{} after its dump", n - 1));
    }
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    assert_same_output(
        "timers every 1 ms (dumped and restored three times)",
        &reference.stdout,
        &output,
    );
}

// ---------------------------------------------------------------------------------------
// Failure paths

/// Restore `d` failing at step N (`CKPT_FAULT=#N`), for N spread over all the steps of
/// a restore: each time `ckpt restore` must exit 1 saying so, the tree must have printed
/// nothing, and none of its processes (nor anything else) may be left. Then restore it
/// for real.
///
/// The steps come from a traced restore (`CKPT_FAULT_TRACE=1`). Every step that builds
/// the tree (those before the first file is opened: processes, sessions, groups,
/// zombies) is tried, then every 7th step, coarse to fine (every 49th first), for as long
/// as `budget` allows once the coarse pass is done.
fn restore_failing_at_every_step(
    ctx: &Ctx,
    d: &Dumped,
    reference: &Finished,
    tag: &str,
    budget: Duration,
) {
    let mut traced = restore_with_env(ctx, &d.img, &[("CKPT_FAULT_TRACE", "1")]);
    traced.wait_lines(1);
    d.let_go();
    let traced = traced.finish();
    d.hold();
    let trace = String::from_utf8_lossy(&traced.stderr).into_owned();
    assert_eq!(
        traced.status.code(),
        reference.status.code(),
        "{tag}: traced restore failed:\n{trace}"
    );
    assert_same_output(
        &format!("{tag} (restored with CKPT_FAULT_TRACE)"),
        &reference.stdout,
        &[d.before.clone(), traced.stdout].concat(),
    );
    let steps: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.strip_prefix("ckpt: step #"))
        .collect();
    let total = steps.len();
    assert!(
        total >= 10,
        "{tag}: only {total} steps in the trace of a restore (is the fault-injection \
         feature on?):\n{trace}"
    );
    for pid in d.pids() {
        assert_no_process(pid, &format!("{tag}: after the traced restore"));
    }

    let building = steps
        .iter()
        .position(|s| {
            s.split_once(' ')
                .is_some_and(|(_, name)| name.starts_with("open "))
        })
        .unwrap_or(0);
    let mut coarse: Vec<usize> = (1..=building).collect();
    coarse.extend((1..=total).step_by(49));
    coarse.extend([total - 1, total]);
    coarse.sort_unstable();
    coarse.dedup();
    let fine: Vec<usize> = (1..=total)
        .step_by(7)
        .filter(|n| !coarse.contains(n))
        .collect();

    let start = Instant::now();
    let mut tried = Vec::new();
    for (i, &n) in coarse.iter().chain(fine.iter()).enumerate() {
        if i >= coarse.len() && start.elapsed() > budget {
            break;
        }
        let what = format!("{tag}: restore failing at step #{}", steps[n - 1]);
        eprintln!("{what}");
        assert_restore_fault_leaves_nothing(ctx, &d.img, &[], &format!("#{n}"), &d.pids(), &[]);
        tried.push(n);
    }
    eprintln!(
        "{tag}: {} failing restores in {:?}, of {} planned ({} building the tree, {} coarse, \
         {} fine) among {total} steps: {tried:?}",
        tried.len(),
        start.elapsed(),
        coarse.len() + fine.len(),
        building,
        coarse.len(),
        fine.len()
    );

    // The failures held nothing: the image restores and the tree runs to its end.
    restore_and_compare(ctx, d, reference, tag);
}

#[test]
fn failed_restores_of_a_tree_leave_none_of_its_processes() {
    let ctx = Ctx::new("failed_restores_of_a_tree_leave_none_of_its_processes");
    let spec = Spec::new(target("tree")).arg("80");
    let reference = ctx.reference(&spec);
    let d = start_and_dump(&ctx, &spec, 8, 5, 0, "tree");
    restore_failing_at_every_step(&ctx, &d, &reference, "tree", Duration::from_secs(12));
}

#[test]
fn failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes() {
    let ctx = Ctx::new("failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes");
    let (d, reference) = dumped_zombies(&ctx);
    restore_failing_at_every_step(&ctx, &d, &reference, "zombie", Duration::from_secs(8));
}

#[test]
fn failed_restores_of_a_session_leave_none_of_its_processes() {
    let ctx = Ctx::new("failed_restores_of_a_session_leave_none_of_its_processes");
    let spec = Spec::new(target("session")).arg("40").arg("30");
    let reference = ctx.reference(&spec);
    let d = start_and_dump(&ctx, &spec, 30, 4, 0, "session");
    restore_failing_at_every_step(&ctx, &d, &reference, "session", Duration::from_secs(8));
}
