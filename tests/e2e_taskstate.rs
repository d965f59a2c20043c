//! End-to-end tests of task state that belongs to each thread or to a process's run
//! state (issues 13 and 14): threads with credentials and names of their own, and
//! processes stopped by job control. Each test compares the restored program's output
//! with an uninterrupted run's, and the state oracle compares what the kernel shows of
//! the restored tree with the original's (`Ctx::dump` and `Ctx::restore` take and compare
//! its snapshots, /proc/PID/task/TID/status of every thread among them).
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;

/// The lines of /proc/PID/task/TID/status that hold credentials, and the thread's name.
fn thread_creds(pid: i32, tid: i32) -> Vec<String> {
    let keys = [
        "Name:",
        "Uid:",
        "Gid:",
        "Groups:",
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
    ];
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/task/{tid}/status: {e}"));
    s.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect()
}

/// Every thread's credential lines, by thread ID.
fn all_thread_creds(pid: i32) -> Vec<(i32, Vec<String>)> {
    tasks(pid)
        .into_iter()
        .map(|t| (t, thread_creds(pid, t)))
        .collect()
}

/// Three threads that changed their own credentials with raw system calls (user and
/// group IDs and groups; capability sets and the bounding set; securebits and
/// no_new_privs) and named themselves: each keeps them, as each thread's own report and
/// /proc/PID/task/TID/status show after restore.
#[test]
fn threads_with_their_own_credentials_and_names_survive_restore() {
    let ctx = Ctx::new("threads_with_their_own_credentials_and_names_survive_restore");
    let spec = Spec::new(target("threadcreds")).arg("30").arg("sleep=10");
    let reference = ctx.reference(&spec);
    assert_eq!(reference.status.code(), Some(0), "reference run");
    let out = text(&reference.stdout);
    assert!(
        out.contains("  uids: name=uids secbits=0 nnp=0 Uid=1000,1001,1002,1001 Gid=100,101,102,101 Groups=5,6 ")
            && out.contains("  secbits: name=secbits secbits=0x11 nnp=1 "),
        "threadcreds did not set up its threads:\n{out}"
    );
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 5/");
    let pid = t.pid;
    let creds_before = all_thread_creds(pid);
    assert_eq!(creds_before.len(), 4, "threads: {creds_before:?}");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&[pid], "threadcreds after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    let n = r.stdout.lines();
    r.wait_lines(n + 1);
    assert_eq!(
        all_thread_creds(pid),
        creds_before,
        "the restored threads' names and credentials (left) differ from the original's"
    );
    let fin = r.finish();
    assert_tree_finished_like_reference("threadcreds", &reference.stdout, before, &fin, &[pid]);
}

/// The process of the tree of `root` named `name` (/proc/PID/comm), waiting for it: a
/// restored tree has all its processes before restore gives each its name.
fn named(root: i32, name: &str) -> i32 {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let found = process_tree(root).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
        });
        if let Some(p) = found {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no process {name} in the tree of {root}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The state letter of `pid` (/proc/PID/stat).
fn state(pid: i32) -> char {
    proc_stat(pid).map_or('?', |s| s.0)
}

/// Wait until the processes of `want` are in the given states.
fn wait_states(want: &[(i32, char)], what: &str) {
    let deadline = std::time::Instant::now() + timeout();
    while want.iter().any(|&(p, s)| state(p) != s) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: states {:?}, want {want:?}",
            want.iter().map(|&(p, _)| (p, state(p))).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Drive `jobstop` (whose output `p` shows) from its rest point to its end: each signal
/// once the line the previous one brings is out.
fn drive_jobstop(p: &mut Proc, root: i32) {
    let (c1, c2, g) = (named(root, "c1"), named(root, "c2"), named(root, "g"));
    for (pid, sig, line) in [
        (c2, libc::SIGUSR1, "c2: g stopped by signal 19\n"),
        (g, libc::SIGCONT, "c2: g continued\n"),
        (g, libc::SIGUSR1, "c2: g exited 4\n"),
        (c1, libc::SIGCONT, "root: c1 continued\n"),
        (c1, libc::SIGUSR1, "root: c1 exited 3\n"),
    ] {
        // SAFETY: kill(2) on a process of the test's own target tree.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
        p.wait_for(line);
    }
}

/// `jobstop` started and at rest: (its run, [root, c1, c2, g]).
fn start_jobstop(ctx: &Ctx) -> (Proc, [i32; 4]) {
    let mut t = ctx.spawn(&Spec::new(target("jobstop")));
    t.wait_for("c2: g is stopped, waiting\n");
    let root = t.pid;
    wait_process_tree(root, 4, "jobstop");
    let (c1, c2, g) = (named(root, "c1"), named(root, "c2"), named(root, "g"));
    wait_states(
        &[(root, 'S'), (c1, 'T'), (c2, 'S'), (g, 'T')],
        "jobstop at rest",
    );
    (t, [root, c1, c2, g])
}

/// An uninterrupted run of `jobstop`, driven to its end.
fn jobstop_reference(ctx: &Ctx) -> Finished {
    let (mut p, [root, ..]) = start_jobstop(ctx);
    p.label = format!("reference run of {}", p.label);
    drive_jobstop(&mut p, root);
    let f = p.finish();
    assert_eq!(f.status.code(), Some(0), "jobstop reference run");
    f
}

/// A tree with a child stopped by SIGTSTP (its parent, the root, collected the stop; it
/// has a second thread) and a grandchild stopped by SIGSTOP (its running parent saw it
/// with WNOWAIT but has not collected it): after restore both are stopped (state T of
/// every thread, which the state oracle compares with every other state), the
/// grandchild's parent still collects its stop (WUNTRACED) and the root does not see
/// the other one again, SIGCONT continues each (their parents see it with WCONTINUED)
/// and the output goes on as in an uninterrupted run.
#[test]
fn processes_stopped_by_job_control_stay_stopped_and_continue_on_sigcont() {
    let ctx = Ctx::new("processes_stopped_by_job_control_stay_stopped_and_continue_on_sigcont");
    let reference = jobstop_reference(&ctx);
    let (mut t, pids) = start_jobstop(&ctx);
    let root = t.pid;
    for &p in &pids {
        ctx.track(p);
    }
    let img = ctx.path("img");
    ctx.dump(root, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&pids, "jobstop after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    let [_, c1, c2, g] = pids;
    wait_states(&[(c1, 'T'), (c2, 'S'), (g, 'T')], "the restored jobstop");
    drive_jobstop(&mut r, root);
    let fin = r.finish();
    assert_tree_finished_like_reference("jobstop", &reference.stdout, before, &fin, &pids);
}

/// A `--leave-running` dump leaves stopped processes stopped, and their parents are not
/// told anything new (the state oracle compares the tree before and after the dump):
/// the run then goes on exactly as an uninterrupted one.
#[test]
fn a_leave_running_dump_leaves_stopped_processes_stopped() {
    let ctx = Ctx::new("a_leave_running_dump_leaves_stopped_processes_stopped");
    let reference = jobstop_reference(&ctx);
    let (mut t, pids) = start_jobstop(&ctx);
    let [root, c1, c2, g] = pids;
    for &p in &pids {
        ctx.track(p);
    }
    ctx.dump_leave_running(root, &ctx.path("img"));
    wait_states(
        &[(root, 'S'), (c1, 'T'), (c2, 'S'), (g, 'T')],
        "jobstop after a --leave-running dump",
    );
    drive_jobstop(&mut t, root);
    let fin = t.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "jobstop after a --leave-running dump"
    );
    assert_same_output(
        "jobstop after a --leave-running dump",
        &reference.stdout,
        &fin.stdout,
    );
}

/// Each thread's state letter, tracer and blocked signals (/proc/PID/task/TID/status),
/// for every process of `pids`.
fn task_states(pids: &[i32]) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for &p in pids {
        for t in tasks(p) {
            let s =
                std::fs::read_to_string(format!("/proc/{p}/task/{t}/status")).unwrap_or_default();
            let keep: Vec<&str> = s
                .lines()
                .filter(|l| {
                    ["State:", "TracerPid:", "SigBlk:", "SigPnd:", "ShdPnd:"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            out.push((t, keep.join(" ")));
        }
    }
    out
}

/// Whether `now` is `before`, but for stopped threads that a killed dump left in its
/// signal frame (every signal blocked, see README "Interruptions and recovery": the
/// frame gives the mask back once the thread is continued, which the end of the run
/// shows).
fn same_but_parked(now: &[(i32, String)], before: &[(i32, String)]) -> bool {
    const PARKED: &str = "SigBlk:\tfffffffffffbfeff";
    now.len() == before.len()
        && now.iter().zip(before).all(|((t, n), (u, b))| {
            let stopped = b.contains("State:\tT");
            let strip = |s: &str| s.split(" SigBlk:").next().unwrap_or_default().to_string();
            t == u && (n == b || (stopped && n.contains(PARKED) && strip(n) == strip(b)))
        })
}

/// `ckpt dump --leave-running` SIGKILLed at 40 moments spread over its run, each time on
/// the same tree with stopped processes: every thread is back as it was (state T or S,
/// not traced, the same blocked and pending signals; the kernel puts a stopped task
/// back into its group-stop when its tracer dies, without telling its parent), and the
/// run then goes on as an uninterrupted one.
#[test]
fn a_killed_dump_leaves_stopped_processes_as_they_were() {
    let ctx = Ctx::new("a_killed_dump_leaves_stopped_processes_as_they_were");
    let reference = jobstop_reference(&ctx);
    let (mut t, pids) = start_jobstop(&ctx);
    let root = t.pid;
    for &p in &pids {
        ctx.track(p);
    }
    let before = task_states(&pids);
    let img = ctx.path("img");
    // How long a whole dump takes here, to spread the kills over it.
    let t0 = std::time::Instant::now();
    ctx.dump_leave_running(root, &img);
    let whole = t0.elapsed().as_micros() as u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    eprintln!("seed {seed:#x}, a dump takes {whole} us");
    for i in 0..40 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % (whole + 1));
        let mut c = std::process::Command::new(ckpt_bin())
            .args(["dump", &root.to_string(), "--leave-running", "-o"])
            .arg(&img)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ckpt dump");
        std::thread::sleep(delay);
        send_signal(c.id() as i32, libc::SIGKILL);
        let st = c.wait().expect("wait for ckpt dump");
        let deadline = std::time::Instant::now() + timeout();
        // The kernel detaches the tracees of a dead tracer as it exits: settle.
        while !same_but_parked(&task_states(&pids), &before) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            same_but_parked(&task_states(&pids), &before),
            "kill {i} after {delay:?} (ckpt dump ended with {st:?}): the tree differs:\n\
             {:?}\nbefore:\n{before:?}",
            task_states(&pids)
        );
    }
    drive_jobstop(&mut t, root);
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "jobstop after the killed dumps");
    assert_same_output(
        "jobstop after the killed dumps",
        &reference.stdout,
        &fin.stdout,
    );
}

/// The root of the dumped tree stopped (SIGTSTP, as by Ctrl-Z): restored stopped (its
/// parent is now ckpt restore, which waits for it to exit), it prints nothing until a
/// SIGCONT, then finishes as an uninterrupted run, with its exit status.
#[test]
fn a_stopped_root_is_restored_stopped_and_continues_on_sigcont() {
    let ctx = Ctx::new("a_stopped_root_is_restored_stopped_and_continues_on_sigcont");
    let spec = counter_spec(&ctx, "counter", 20, &["sleep=10"]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_lines(5);
    send_signal(pid, libc::SIGTSTP);
    wait_states(&[(pid, 'T')], "counter after SIGTSTP");
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&[pid], "counter after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    wait_states(&[(pid, 'T')], "the restored counter");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(state(pid), 'T', "the restored counter, 100 ms later");
    assert_eq!(r.stdout.lines(), 0, "the stopped counter printed");
    send_signal(pid, libc::SIGCONT);
    let fin = r.finish();
    assert_same_output(
        "counter stopped, dumped, restored and continued",
        &reference.stdout,
        &[before, fin.stdout.clone()].concat(),
    );
    assert_eq!(fin.status.code(), reference.status.code(), "exit status");
}

/// `jobstop` under `unshare -p -f` (its root is PID 1 of a namespace of its own), at
/// rest: (the run of `unshare`, the root's host PID).
fn start_jobstop_in_pidns(ctx: &Ctx) -> (Proc, i32) {
    let unshare = std::path::Path::new("/usr/bin/unshare");
    assert!(unshare.exists(), "needs unshare(1) (util-linux)");
    let spec = Spec::new(unshare)
        .arg("-p")
        .arg("-f")
        .arg(target("jobstop"));
    let mut t = ctx.spawn(&spec);
    t.wait_for("c2: g is stopped, waiting\n");
    let tree = wait_process_tree(t.pid, 5, "unshare and jobstop");
    let root = tree[1];
    let (c1, c2, g) = (named(root, "c1"), named(root, "c2"), named(root, "g"));
    wait_states(
        &[(c1, 'T'), (c2, 'S'), (g, 'T')],
        "jobstop in its namespace",
    );
    (t, root)
}

/// The tree with stopped processes in a PID namespace of its own: restore seizes the
/// namespace's init (`PTRACE_SEIZE`: the stops and the threads joining them are event
/// stops there), and the restored tree stops, continues and ends as the original.
#[test]
fn processes_stopped_by_job_control_in_their_own_pid_namespace() {
    let ctx = Ctx::new("processes_stopped_by_job_control_in_their_own_pid_namespace");
    let (mut rp, root) = start_jobstop_in_pidns(&ctx);
    drive_jobstop(&mut rp, root);
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "jobstop: reference run");

    let (mut t, root) = start_jobstop_in_pidns(&ctx);
    let old = process_tree(root);
    for &p in &old {
        ctx.track(p);
    }
    ctx.dump(root, &ctx.path("img"));
    let before = t.finish();
    wait_pids_gone(&old, "jobstop after the dump");
    let mut r = ctx.restore(&ctx.path("img"), &[], In::Null);
    let tree = wait_process_tree(r.pid, 5, "ckpt restore and the restored jobstop");
    let root = tree[1];
    let (c1, c2, g) = (named(root, "c1"), named(root, "c2"), named(root, "g"));
    wait_states(&[(c1, 'T'), (c2, 'S'), (g, 'T')], "the restored jobstop");
    drive_jobstop(&mut r, root);
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "jobstop restored into a new PID namespace; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        "jobstop in its own PID namespace",
        &reference.stdout,
        &[before.stdout, fin.stdout].concat(),
    );
}

/// A zombie of another user (IDs, groups, no capabilities), with a lowered descriptor
/// limit, an ignored, a caught and a blocked signal and a name of its own: /proc shows
/// the restored zombie as the original (the state oracle compares its status, limits
/// and stat), and its parent still reaps it with its exit status.
#[test]
fn a_zombie_of_another_user_shows_its_own_credentials_limits_and_signals() {
    let ctx = Ctx::new("a_zombie_of_another_user_shows_its_own_credentials_limits_and_signals");
    let spec = Spec::new(target("zombieuser"));
    let start = |ctx: &Ctx| {
        let mut t = ctx.spawn(&spec);
        t.wait_for("ready\n");
        // (the child is a zombie once "ready" is out)
        let tree = process_tree(t.pid);
        assert_eq!(tree.len(), 2, "zombieuser's tree");
        wait_states(&[(tree[0], 'S'), (tree[1], 'Z')], "zombieuser at rest");
        (t, tree)
    };
    let (mut rp, tree) = start(&ctx);
    send_signal(tree[0], libc::SIGUSR1);
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "reference run");
    let (mut t, tree) = start(&ctx);
    for &p in &tree {
        ctx.track(p);
    }
    let status = |p: i32| thread_creds(p, p);
    let before_creds = status(tree[1]);
    assert!(
        before_creds
            .iter()
            .any(|l| l == "Uid:\t1000\t1001\t1002\t1001"),
        "the zombie's credentials: {before_creds:?}"
    );
    let img = ctx.path("img");
    ctx.dump(tree[0], &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&tree, "zombieuser after the dump");
    let mut r = ctx.restore(&img, &[], In::Null);
    wait_states(&[(tree[0], 'S'), (tree[1], 'Z')], "the restored zombieuser");
    assert_eq!(
        status(tree[1]),
        before_creds,
        "the restored zombie's credentials"
    );
    send_signal(tree[0], libc::SIGUSR1);
    let fin = r.finish();
    assert_tree_finished_like_reference("zombieuser", &reference.stdout, before, &fin, &tree);
}

/// `setarch`, wherever util-linux put it.
fn setarch() -> &'static str {
    ["/usr/bin/setarch", "/bin/setarch"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("setarch (util-linux) not found")
}

/// A tree whose processes differ in address randomization (a child run with `setarch
/// -R`) is refused at dump, naming both, and runs on untouched; an image of a process
/// run without it cannot be restored from standard input (ckpt restore would have to
/// execute itself again), which says to use `setarch -R` and leaves nothing, while from
/// the file it is restored without randomization (the oracle compares the flags).
#[test]
fn address_randomization_mixed_in_a_tree_is_refused_and_kept_from_a_file() {
    let ctx = Ctx::new("address_randomization_mixed_in_a_tree_is_refused_and_kept_from_a_file");
    let sh = Spec::new("/bin/sh").arg("-c").arg(format!(
        "{} x86_64 -R {} 40 sleep=10 & wait",
        setarch(),
        target("threadcreds").display()
    ));
    let mut t = ctx.spawn(&sh);
    t.wait_for("step 2/");
    let tree = wait_process_tree(t.pid, 2, "sh and threadcreds");
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path("mixed.img");
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&[&format!(
            "process {} ran with address randomization and process {} without it",
            tree[0], tree[1]
        )]);
    assert!(!img.exists(), "a refused dump left an image");
    for &p in &tree {
        assert_running_untraced(p, "the tree after the refused dump");
    }
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "sh after the refused dump");

    let spec = Spec::new(setarch())
        .arg("x86_64")
        .arg("-R")
        .arg(target("threadcreds"))
        .arg("20")
        .arg("sleep=10");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3/");
    let pid = t.pid;
    let img = ctx.path("norandom.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    wait_pids_gone(&[pid], "threadcreds after the dump");
    ctx.ckpt_io(&["restore", "-"], Some(&img), None)
        .assert_fails(1)
        .assert_stderr_mentions(&["without address randomization", "setarch -R"]);
    assert_no_process(pid, "after the refused restore from standard input");
    let r = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        "threadcreds without randomization",
        &reference.stdout,
        before,
        &r,
        &[pid],
    );
}
