//! `ckpt restore` killed at any moment (SIGKILL at each of its fault-injection die
//! points and at random moments; SIGTERM; SIGINT with `--detach`; its standard output
//! closed), restoring a tree with an established TCP connection to the test (so the
//! network lock is used) and a deleted file still open (re-created by restore), with a
//! child. After each kill:
//! - before the point of no return, nothing is left: no process or PID of the image, no
//!   file in the deleted file's directory, the dump's netfilter rule still there (the
//!   image can be restored again) and no table of the killed ckpt; the peer saw nothing
//!   (no FIN, no reset) -- but for a SIGKILL inside the documented microseconds of the
//!   point of no return itself (the connections out of repair mode, the tree still dying
//!   with ckpt: README, "killed before the point of no return"), which the test tells
//!   from any other by the last die point ckpt traced (the die point inside that window
//!   gives exactly this outcome), and after which it starts a new tree;
//! - after it, the tree runs untraced and answers on its connection at once (no drop rule
//!   left: neither the dump's nor the restore's), with its file's contents, and nothing
//!   is left in the directory. The tree is then dumped again for the next round.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::killwalk::Rng;
use common::*;

#[derive(Clone, Copy, Debug)]
enum How {
    /// A signal after a delay (SIGINT with `--detach`: without it ckpt ignores it, as a
    /// shell waiting for its job does).
    Signal(i32, Duration),
    /// The reader of ckpt's standard output goes away after a delay (then, once the
    /// restore had time to end, SIGKILL).
    CloseStdout(Duration),
    /// `CKPT_DIE_AT=N`: ckpt kills itself at its N-th die point.
    DieAt(u64),
    /// `CKPT_DIE_AT=name:WHAT`: at its first die point named WHAT.
    DieAtName(&'static str),
}

/// The tree under test: its connection (our end), its PIDs, where its deleted file was.
struct Tree {
    conn: BufReader<TcpStream>,
    root: i32,
    child: i32,
    dir: PathBuf,
    /// The comment of the connection's netfilter rules.
    comment: String,
    /// Lines answered so far, and the answer's constant part (file hash, blocks).
    n: u64,
    file: String,
    /// The original process (dropping it kills its PID).
    proc: Option<Proc>,
}

impl Tree {
    /// Send a line, read the answer (None: nothing within `limit`).
    fn ask(&mut self, msg: &str, limit: Duration) -> Option<String> {
        self.conn
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
            .expect("send to the tree");
        self.conn
            .get_ref()
            .set_read_timeout(Some(limit))
            .expect("timeout");
        let mut line = String::new();
        match self.conn.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }

    /// The peer sent nothing at all (no data, no FIN, no reset) since the last answer.
    fn peer_silent(&mut self) -> Result<(), String> {
        let s = self.conn.get_ref();
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 64];
        let r = self.conn.get_mut().read(&mut b);
        self.conn
            .get_ref()
            .set_nonblocking(false)
            .expect("blocking");
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Ok(0) => Err("the peer saw the connection closed (FIN)".into()),
            Ok(n) => Err(format!("the peer got {n} bytes")),
            Err(e) => Err(format!("the peer's connection failed: {e}")),
        }
    }
}

/// (rules with `comment` in the dump's table, names of tables `ckpt_restore_<pid>`).
fn lock_state(comment: &str, ckpt_pid: u32) -> (usize, bool) {
    lock_state_in(None, comment, ckpt_pid)
}

/// [`lock_state`] in the network namespace `net` (a file), or the test's.
fn lock_state_in(net: Option<&str>, comment: &str, ckpt_pid: u32) -> (usize, bool) {
    let mut c = Command::new("nsenter");
    if let Some(n) = net {
        c.arg(format!("--net={n}"));
    }
    let out = c
        .args(["--", "nft", "list", "ruleset"])
        .output()
        .expect("run nft (install nftables)");
    assert!(out.status.success(), "nft list ruleset failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let rules = text.lines().filter(|l| l.contains(comment)).count();
    let ours = text.contains(&format!("table inet ckpt_restore_{ckpt_pid} "));
    (rules, ours)
}

/// What is in the deleted file's directory (it must stay empty).
fn dir_listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Start `ckpt restore` of `img`, do `how` to it, wait for it to end; returns its PID
/// and, for `DieAt`, the name of the die point it died at (its trace goes to `log`).
fn killed_restore(img: &Path, how: How, full: Duration, log: &Path) -> (u32, String) {
    let mut cmd = Command::new(ckpt_bin());
    cmd.arg("restore").arg(img);
    if matches!(how, How::Signal(libc::SIGINT, _)) {
        cmd.arg("--detach");
    }
    cmd.stdin(Stdio::null());
    match how {
        How::CloseStdout(_) => cmd.stdout(Stdio::piped()),
        _ => cmd.stdout(Stdio::null()),
    };
    // Every kill is traced (each die point ckpt passes, on its standard error): where it
    // died tells a loss inside the point of no return's documented window from a bug.
    cmd.env("CKPT_DIE_TRACE", "1")
        .stderr(std::fs::File::create(log).expect("log"));
    match how {
        How::DieAt(n) => {
            cmd.env("CKPT_DIE_AT", n.to_string());
        }
        How::DieAtName(name) => {
            cmd.env("CKPT_DIE_AT", format!("name:{name}"));
        }
        _ => {}
    }
    let mut c = cmd.spawn().expect("spawn ckpt restore");
    let pid = c.id();
    match how {
        How::Signal(sig, d) => {
            std::thread::sleep(d);
            send_signal(pid as i32, sig);
        }
        How::CloseStdout(d) => {
            std::thread::sleep(d);
            drop(c.stdout.take());
        }
        How::DieAt(_) | How::DieAtName(_) => {}
    }
    // Not ended by then (a restore that went on and now waits for the tree): SIGKILL.
    let patience = match how {
        How::DieAt(_) | How::DieAtName(_) | How::Signal(libc::SIGKILL, _) => timeout(),
        _ => full * 3 + Duration::from_millis(300),
    };
    wait_child(&mut c, patience);
    let mut point = String::new();
    let trace = std::fs::read_to_string(log).unwrap_or_default();
    if let Some(l) = trace.lines().rfind(|l| l.contains("die point #")) {
        point = l
            .split_once("die point #")
            .and_then(|(_, r)| r.split_once(' '))
            .map(|(_, name)| name.to_string())
            .unwrap_or_default();
    }
    (pid, point)
}

fn wait_child(c: &mut Child, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        if c.try_wait().expect("wait ckpt").is_some() {
            return;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            c.wait().expect("wait ckpt");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Once ckpt is gone: whether the tree runs (committed) or is gone, reaping what died.
fn settle(pids: &[i32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let free = |pid| matches!(proc_stat(pid), Some(('R' | 'S', _))) && tracer_pid(pid) == Some(0);
    loop {
        for &p in pids {
            if let Some(('Z', ppid)) = proc_stat(p) {
                if ppid == my_pid() {
                    let _ = wait_pid(p, timeout());
                }
            }
        }
        if pids.iter().all(|&p| !pid_exists(p)) {
            return false;
        }
        if pids.iter().all(|&p| free(p)) {
            std::thread::sleep(Duration::from_millis(30));
            if pids.iter().all(|&p| free(p)) {
                return true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "after a killed restore the tree is neither gone nor running freely: {:?}",
            pids.iter()
                .map(|&p| (p, proc_stat(p), tracer_pid(p)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Dump the (running) tree to `img`, which kills it and locks its connection.
fn dump_tree(ctx: &Ctx, t: &Tree, img: &Path) {
    let _ = std::fs::remove_file(img);
    ctx.dump(t.root, img);
    for p in [t.root, t.child] {
        let _ = wait_pid(p, timeout());
    }
    wait_pids_gone(&[t.root, t.child], "the dumped tree");
    let (rules, _) = lock_state(&t.comment, 0);
    assert_eq!(rules, 1, "the dump's lock of {}", t.comment);
}

/// What is wrong after restore was killed with `how`, if anything; `committed` says
/// which side of the point of no return it was.
fn check_after(
    t: &mut Tree,
    img: &Path,
    ckpt_pid: u32,
    what: &str,
    in_window: bool,
) -> (Outcome, Result<(), String>) {
    let committed = settle(&[t.root, t.child]);
    let mut err = Vec::new();
    let files = dir_listing(&t.dir);
    if !files.is_empty() {
        err.push(format!("files left in {}: {files:?}", t.dir.display()));
    }
    let (rules, ours) = lock_state(&t.comment, ckpt_pid);
    if ours {
        err.push(format!(
            "the killed ckpt's table ckpt_restore_{ckpt_pid} is still there"
        ));
    }
    let mut outcome = if committed {
        Outcome::After
    } else {
        Outcome::Before
    };
    if committed {
        if rules == 1 {
            // Killed after the tree was made to outlive ckpt and before the lock was
            // handed over: the dump's rule is left, exactly what `ckpt unlock` removes.
            outcome = Outcome::Unlock;
            let r = Command::new(ckpt_bin())
                .arg("unlock")
                .arg(img)
                .stdin(Stdio::null())
                .output()
                .expect("ckpt unlock");
            let (left, _) = lock_state(&t.comment, ckpt_pid);
            if !r.status.success() || left != 0 {
                err.push(format!("ckpt unlock left {left} rule(s): {r:?}"));
            }
        } else if rules != 0 {
            err.push(format!(
                "{rules} drop rule(s) of the connection left after commit"
            ));
        }
        t.n += 1;
        let msg = format!("m{}", t.n);
        let want = format!("{}:{msg}:{}", t.n, t.file);
        match t.ask(&msg, Duration::from_secs(3)) {
            Some(a) if same_answer(&a, &want) => {}
            other => err.push(format!(
                "the restored tree answered {other:?}, not {want:?}"
            )),
        }
    } else {
        if rules != 1 {
            err.push(format!(
                "the dump's lock of the connection is gone ({rules} rules): the image can no \
                 longer be restored"
            ));
        }
        match t.peer_silent() {
            Ok(()) => {}
            Err(e) if in_window && e.ends_with("(FIN)") => outcome = Outcome::Window,
            Err(e) => err.push(e),
        }
    }
    let r = if err.is_empty() {
        Ok(())
    } else {
        Err(format!("{what} ({outcome:?}): {}", err.join("; ")))
    };
    (outcome, r)
}

/// Where a killed restore stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Before the point of no return: nothing left.
    Before,
    /// After it: the tree runs, no lock left.
    After,
    /// After it, the dump's lock left (killed between letting the tree outlive ckpt and
    /// handing the lock over): `ckpt unlock` removed it.
    Unlock,
    /// Killed inside the point of no return's documented window (its connections out of
    /// repair mode, the tree still dying with ckpt): the tree is gone and the peer saw
    /// its connection closed, as README says. The round needs a new tree.
    Window,
}

/// The die points ckpt passes just before and inside the point of no return's window.
const WINDOW: [&str; 2] = ["before the point of no return", "out of repair mode"];

/// The die points after the window, in order.
const AFTER_WINDOW: [&str; 5] = [
    "the tree outlives ckpt",
    "lock handed over",
    "let go",
    "committed",
    "unlocked",
];

/// Answers alike: the count, message, file hash, the file's blocks (its hole kept) and
/// the child's life.
fn same_answer(a: &str, b: &str) -> bool {
    a == b
}

fn setup(ctx: &Ctx) -> (Tree, TcpListener) {
    setup_in(ctx, None)
}

/// [`setup`], the tree and the test's listener in the network namespace `net` (a file:
/// the tree started with `nsenter --net`, which execs it), or the test's.
fn setup_in(ctx: &Ctx, net: Option<&str>) -> (Tree, TcpListener) {
    let dir = ctx.path("d");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let l = match net {
        None => TcpListener::bind("127.0.0.1:0").expect("listen"),
        Some(n) => listen_in(n),
    };
    let port = l.local_addr().expect("addr").port();
    let spec = match net {
        None => Spec::new(target("killrestore")),
        Some(n) => Spec::new("nsenter")
            .arg(format!("--net={n}"))
            .arg("--")
            .arg(target("killrestore")),
    };
    let mut p = ctx.spawn(&spec.arg(port.to_string()).arg(&dir));
    let (s, peer) = l.accept().expect("accept");
    p.wait_for("ready");
    let root = p.pid;
    let kids = wait_process_tree(root, 2, "killrestore and its child");
    let child = kids.into_iter().find(|&k| k != root).expect("child");
    let comment = format!("ckpt 127.0.0.1 {} 127.0.0.1 {port}", peer.port());
    let mut t = Tree {
        conn: BufReader::new(s),
        root,
        child,
        dir,
        comment,
        n: 0,
        file: String::new(),
        proc: None,
    };
    let a = t.ask("m0", timeout()).expect("first answer");
    // "1:m0:HASH:BLOCKS:1" (BLOCKS: the file's holes)
    let parts: Vec<&str> = a.split(':').collect();
    assert_eq!((parts.len(), parts[0], parts[4]), (5, "1", "1"), "{a}");
    t.n = 1;
    t.file = format!("{}:{}:1", parts[2], parts[3]);
    t.proc = Some(p);
    (t, l)
}

/// A listener on 127.0.0.1 in the network namespace `net` (a file): made by a thread
/// that joined it (the socket stays in it once the thread is gone).
fn listen_in(net: &str) -> TcpListener {
    use std::os::fd::AsFd;
    let f = std::fs::File::open(net).unwrap_or_else(|e| panic!("open {net}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                f.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the holder's network namespace");
            TcpListener::bind("127.0.0.1:0").expect("listen")
        })
        .join()
        .expect("the listening thread")
    })
}

/// `ckpt restore --detach` to its end (its stderr in a file: the tree keeps a copy).
fn restore_whole(ctx: &Ctx, img: &Path, trace: bool) -> (bool, String) {
    restore_whole_with(ctx, img, trace, &[])
}

/// [`restore_whole`] with more options (`extra`).
fn restore_whole_with(ctx: &Ctx, img: &Path, trace: bool, extra: &[&str]) -> (bool, String) {
    let log = ctx.path("restore.err");
    let f = std::fs::File::create(&log).expect("log");
    let mut cmd = Command::new(ckpt_bin());
    cmd.arg("restore").arg(img).arg("--detach").args(extra);
    if trace {
        cmd.env("CKPT_DIE_TRACE", "1");
    }
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .status()
        .expect("ckpt restore");
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (st.success(), err)
}

#[test]
fn killed_restore_leaves_nothing_or_a_running_tree() {
    let ctx = Ctx::new("killed_restore_leaves_nothing_or_a_running_tree");
    let (mut t, _l) = setup(&ctx);
    let img = ctx.path("img");
    dump_tree(&ctx, &t, &img);

    // One whole restore, counting its die points and timing it.
    let t0 = Instant::now();
    let (st, err) = restore_whole(&ctx, &img, true);
    let full = t0.elapsed();
    assert!(st, "{err}");
    let points = err.lines().filter(|l| l.contains("die point #")).count() as u64;
    eprintln!("a restore takes {full:?} with {points} die points");
    assert!(points > 50, "too few die points: {points}");
    let (c, r) = check_after(&mut t, &img, 0, "whole restore", false);
    assert_eq!(c, Outcome::After, "the whole restore");
    r.unwrap_or_else(|e| panic!("{e}"));
    dump_tree(&ctx, &t, &img);

    let mut rng = Rng::from_env("CKPT_KILL_SEED");
    let span = (full.as_micros() as u64 * 12 / 10).max(1000);
    let log = ctx.path("die.log");
    let mut failures = Vec::new();
    let t1 = Instant::now();
    let windows = std::cell::Cell::new(0u32);
    let round = |how: How,
                 t: &mut Tree,
                 failures: &mut Vec<String>,
                 counts: &mut (u32, u32, u32)|
     -> (Outcome, String) {
        let (ckpt_pid, point) = killed_restore(&img, how, full, &log);
        // A kill at the die point inside the window, or a random one whose last die
        // point was one of WINDOW's, landed inside it.
        let in_window = match how {
            How::DieAt(_) | How::DieAtName(_) => point == WINDOW[1],
            _ => WINDOW.contains(&point.as_str()),
        };
        let what = format!("{how:?} (last die point: {point:?})");
        let (outcome, r) = check_after(t, &img, ckpt_pid, &what, in_window);
        if let Err(e) = r {
            eprintln!("FAIL {e}");
            failures.push(e);
        }
        match outcome {
            Outcome::Before | Outcome::Window => counts.0 += 1,
            Outcome::After => counts.1 += 1,
            Outcome::Unlock => counts.2 += 1,
        }
        if outcome == Outcome::Window {
            eprintln!("{what}: killed inside the point of no return's window; a new tree");
            windows.set(windows.get() + 1);
            // The lost connection's lock goes with it (`ckpt unlock` of its image).
            let r = Command::new(ckpt_bin())
                .arg("unlock")
                .arg(&img)
                .stdin(Stdio::null())
                .output()
                .expect("ckpt unlock");
            let (left, _) = lock_state(&t.comment, 0);
            if !r.status.success() || left != 0 {
                failures.push(format!("ckpt unlock left {left} rule(s): {r:?}"));
            }
            // The new tree goes through one dump and restore first, so that its images
            // are like the others (a restored tree's image has a few more die points).
            *t = setup(&ctx).0;
            dump_tree(&ctx, t, &img);
            let (st, err) = restore_whole(&ctx, &img, false);
            assert!(st, "{err}");
            let (c, r) = check_after(t, &img, 0, "the new tree's restore", false);
            assert_eq!(c, Outcome::After, "the new tree's restore");
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        if outcome != Outcome::Before {
            dump_tree(&ctx, t, &img);
        }
        (outcome, point)
    };
    // Every die point in turn (until the last, after the lock is released), with what
    // each named point must give.
    let mut counts = (0, 0, 0);
    let mut seen = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let mut n = 1;
    loop {
        let (outcome, point) = round(How::DieAt(n), &mut t, &mut failures, &mut counts);
        seen.entry(point.clone())
            .or_default()
            .insert(format!("{outcome:?}"));
        if point == "unlocked" || n > 5 * points || failures.len() > 5 {
            break;
        }
        if outcome == Outcome::Window {
            // A new tree, whose image numbers its die points differently: the points
            // left (each passed once) are walked by name.
            for name in AFTER_WINDOW {
                let (outcome, point) =
                    round(How::DieAtName(name), &mut t, &mut failures, &mut counts);
                seen.entry(point)
                    .or_default()
                    .insert(format!("{outcome:?}"));
            }
            break;
        }
        n += 1;
    }
    eprintln!("{n} die points walked: {counts:?} (before, after, ckpt unlock needed)");
    for (point, want) in [
        ("before the point of no return", "Before"),
        ("out of repair mode", "Window"),
        ("the tree outlives ckpt", "Unlock"),
        ("lock handed over", "After"),
        ("let go", "After"),
        ("committed", "After"),
        ("unlocked", "After"),
    ] {
        let got = seen.get(point).cloned().unwrap_or_default();
        assert_eq!(
            got,
            BTreeSet::from([want.to_string()]),
            "killed at die point {point:?}"
        );
    }
    let (before, after, unlock) = counts;
    let mut counts = (0, 0, 0);
    for _ in 0..160 {
        let d = Duration::from_micros(rng.below(span));
        let how = match rng.below(10) {
            0..=5 => How::Signal(libc::SIGKILL, d),
            6 | 7 => How::Signal(libc::SIGTERM, d),
            8 => How::Signal(libc::SIGINT, d),
            _ => How::CloseStdout(d),
        };
        round(how, &mut t, &mut failures, &mut counts);
        if failures.len() > 5 {
            break;
        }
    }
    eprintln!(
        "{} die points and 160 random kills: {} restores killed before the point of no \
         return, {} after it, {} in between (ckpt unlock needed), in {:?}; random kills: \
         {counts:?}; {} kills inside the point of no return's window (its die point's included)",
        n,
        before + counts.0,
        after + counts.1,
        unlock + counts.2,
        t1.elapsed(),
        windows.get()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A few microseconds of a restore that takes tens of milliseconds: more than a few
    // hits in 160 kills would mean the window is not that small any more.
    assert!(
        windows.get() <= 8,
        "{} of 160 random kills landed inside the point of no return's window",
        windows.get()
    );
    assert!(
        before + counts.0 > 100 && after + counts.1 > 10,
        "{before} before, {after} after (die points), {counts:?} (random)"
    );
    // Between the tree outliving ckpt and the handover: a few microseconds.
    assert!(
        counts.2 <= 2,
        "{counts:?}: random kills left the dump's lock"
    );

    // The last image restores whole, and the tree ends as asked.
    let (st, err) = restore_whole(&ctx, &img, false);
    assert!(st, "{err}");
    let (c, r) = check_after(&mut t, &img, 0, "final restore", false);
    assert_eq!(c, Outcome::After, "the final restore");
    r.unwrap_or_else(|e| panic!("{e}"));
    t.conn.get_mut().write_all(b"bye\n").expect("bye");
    assert_eq!(wait_pid(t.root, timeout()).and_then(|s| s.code()), Some(0));
}

/// SIGKILL of `ckpt restore` while the deleted file's name exists (ckpt's child that
/// makes, opens and removes it holds it there: CKPT_LINGER "transient name"): the name
/// still goes away, nothing of the restore is left, and the image still restores. (The
/// random kills above land in those microseconds too rarely to show it.)
#[test]
fn a_kill_while_the_deleted_files_name_exists_leaves_nothing() {
    let ctx = Ctx::new("a_kill_while_the_deleted_files_name_exists_leaves_nothing");
    let (mut t, _l) = setup(&ctx);
    let img = ctx.path("img");
    dump_tree(&ctx, &t, &img);
    let mut c = Command::new(ckpt_bin())
        .arg("restore")
        .arg(&img)
        .env("CKPT_LINGER", "transient name:500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ckpt restore");
    let deadline = Instant::now() + timeout();
    while !dir_listing(&t.dir).contains("deleted") {
        assert!(
            c.try_wait().expect("wait ckpt").is_none(),
            "the restore ended before the deleted file's name was seen"
        );
        assert!(
            Instant::now() < deadline,
            "the deleted file's name never appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = c.id();
    send_signal(pid as i32, libc::SIGKILL);
    c.wait().expect("wait ckpt");
    // Killed with the name there: it is still there until the child's wait is over.
    assert!(
        dir_listing(&t.dir).contains("deleted"),
        "the name went before the child's wait was over: the test lingered too little"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = dir_listing(&t.dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed restore left {left:?} in {}",
            t.dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (outcome, r) = check_after(&mut t, &img, pid, "killed while the name existed", false);
    assert_eq!(outcome, Outcome::Before, "killed while the name existed");
    r.unwrap_or_else(|e| panic!("{e}"));

    let (st, err) = restore_whole(&ctx, &img, false);
    assert!(st, "{err}");
    let (c, r) = check_after(&mut t, &img, 0, "the restore after", false);
    assert_eq!(c, Outcome::After, "the restore after");
    r.unwrap_or_else(|e| panic!("{e}"));
    t.conn.get_mut().write_all(b"bye\n").expect("bye");
    assert_eq!(wait_pid(t.root, timeout()).and_then(|s| s.code()), Some(0));
}

/// A line the peer sends while the dump runs, after the connection's queues were read
/// (the dump held there: CKPT_LINGER "tcp queues read"), reaches the restored tree: the
/// connection is locked from the freeze on, so the segment is dropped and sent again
/// after the restore (a socket in repair mode would take and acknowledge it, and it
/// would die with the tree, lost).
#[test]
fn a_segment_sent_while_the_dump_runs_reaches_the_restored_tree() {
    let ctx = Ctx::new("a_segment_sent_while_the_dump_runs_reaches_the_restored_tree");
    late_segment_reaches_the_restored_tree(&ctx, None);
}

/// The same for a tree in a network namespace made outside it (started with `nsenter
/// --net` into one an `unshare --net` holder of the test's keeps; the test's end of the
/// connection is in it too): the dump locks the connection from the freeze there (its
/// dumping thread joined that namespace), and the restore, joining it again
/// (`--join-ns net:FILE`), takes the lock away. Without the early lock in such a
/// namespace the line is acknowledged by the socket in repair mode and lost with it.
#[test]
fn a_segment_sent_while_the_dump_runs_reaches_a_tree_in_a_namespace_made_outside_it() {
    let ctx = Ctx::new(
        "a_segment_sent_while_the_dump_runs_reaches_a_tree_in_a_namespace_made_outside_it",
    );
    let holder = NetHolder::new();
    late_segment_reaches_the_restored_tree(&ctx, Some(&holder.path()));
}

/// A network namespace held by an `unshare --net sleep` of the test's (its loopback
/// up); killed with it at drop, the namespace goes once nothing is left in it.
struct NetHolder(Child);

impl NetHolder {
    fn new() -> NetHolder {
        let c = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare --net (util-linux)");
        let h = NetHolder(c);
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(h.path()).ok().as_ref() == Some(&ours)
            || std::fs::read_link(format!("/proc/{}/exe", h.0.id()))
                .map(|e| !e.to_string_lossy().contains("sleep"))
                .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "unshare --net made no namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = Command::new("nsenter")
            .arg(format!("--net={}", h.path()))
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .expect("run ip (iproute2)");
        assert!(st.success(), "ip link set lo up in the holder's namespace");
        h
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }
}

impl Drop for NetHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A line sent while the dump lingers after reading the queues reaches the restored
/// tree (in the network namespace `net`, a file, or the test's).
fn late_segment_reaches_the_restored_tree(ctx: &Ctx, net: Option<&str>) {
    let (mut t, _l) = setup_in(ctx, net);
    if let Some(n) = net {
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/ns/net", t.root)).ok(),
            std::fs::read_link(n).ok(),
            "the tree runs in the holder's network namespace"
        );
    }
    let img = ctx.path("img");
    let c = Command::new(ckpt_bin())
        .arg("dump")
        .arg(t.root.to_string())
        .arg("-o")
        .arg(&img)
        .env("CKPT_LINGER", "tcp queues read:1500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ckpt dump");
    // The tree is frozen (traced) and the dump lingers after reading the queues.
    let deadline = Instant::now() + timeout();
    while tracer_pid(t.root) != Some(c.id() as i32) {
        assert!(Instant::now() < deadline, "the dump never froze the tree");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(700));
    t.conn
        .get_mut()
        .write_all(b"late\n")
        .expect("send to the tree");
    let out = c.wait_with_output().expect("wait ckpt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [t.root, t.child] {
        let _ = wait_pid(p, timeout());
    }
    wait_pids_gone(&[t.root, t.child], "the dumped tree");
    let (rules, _) = lock_state_in(net, &t.comment, 0);
    assert_eq!(rules, 1, "the dump's lock of {}", t.comment);
    let join = net.map(|n| format!("net:{n}"));
    let extra: Vec<&str> = match &join {
        Some(j) => vec!["--join-ns", j],
        None => Vec::new(),
    };
    let (st, err) = restore_whole_with(ctx, &img, false, &extra);
    assert!(st, "{err}");
    if let Some(n) = net {
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/ns/net", t.root)).ok(),
            std::fs::read_link(n).ok(),
            "the restored tree runs in the holder's network namespace"
        );
    }
    // The answer to "late" comes (its segment sent again once the lock is gone).
    t.conn
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut line = String::new();
    let got = t.conn.read_line(&mut line);
    assert!(
        matches!(got, Ok(n) if n > 0) && line.starts_with("2:late:"),
        "the restored tree did not answer the line sent during the dump: {got:?} {line:?}"
    );
    assert_eq!(
        lock_state_in(net, &t.comment, 0).0,
        0,
        "the lock of {} after the restore",
        t.comment
    );
    t.conn.get_mut().write_all(b"bye\n").expect("bye");
    assert_eq!(wait_pid(t.root, timeout()).and_then(|s| s.code()), Some(0));
}
