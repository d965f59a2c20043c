//! End-to-end tests of `ckpt restore --new-tty`: a program on a pseudo-terminal (under
//! `ptyrun.py`, which makes it a session leader with the pty as its controlling
//! terminal) is dumped and restored onto a new pty that restore creates, with `ckpt
//! restore`'s own stdin and stdout being pipes: the program must find a terminal on 0-2
//! again, still its controlling one with its group in the foreground, with the settings
//! it had given its old one, and read a line typed into `ckpt restore`'s stdin. Its
//! output is compared with an uninterrupted run's under `ptyrun.py -i`. Refusals and
//! restores made to fail at each new step leave nothing behind.
//!
//! The target is `tests/targets/ttyjob.c`. Needs root. Run with cargo-nextest.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use common::*;

const LINE: &[u8] = b"hello new terminal\n";

fn ttyjob_under_pty(typing: bool) -> Spec {
    let mut s = Spec::new(python3()).arg(script("ptyrun.py"));
    if typing {
        s = s.arg("-i").stdin(In::Pipe);
    }
    s.arg(target("ttyjob")).arg("30").arg("12").arg("sleep=40")
}

/// What a terminal shows, comparable between runs: without the carriage returns the
/// terminal adds (ONLCR), and with the pty's number cut out of `/dev/pts/N` (every run
/// gets whatever pty is free: the original's, the reference's and the new one restore
/// makes are different ones, legitimately).
fn normalized(b: &[u8]) -> String {
    let t: String = text(b).chars().filter(|&c| c != '\r').collect();
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find("/dev/pts/") {
        out.push_str(&rest[..i + 9]);
        rest = rest[i + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

/// Run ttyjob on a pty, dump it (which kills it) after a few steps; returns the image,
/// its PID and its output so far.
fn dump_ttyjob(ctx: &Ctx) -> (PathBuf, i32, Vec<u8>) {
    let mut t = ctx.spawn(&ttyjob_under_pty(false));
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "ptyrun.py and ttyjob");
    let pid = *tree.last().expect("ttyjob under ptyrun.py");
    let img = ctx.path("tty.img");
    ctx.dump(pid, &img);
    let before = t.finish();
    wait_pids_gone(&[pid], "ttyjob");
    (img, pid, before.stdout)
}

#[test]
fn process_on_a_pty_is_restored_onto_a_new_pty_with_its_settings_and_job_control() {
    let ctx =
        Ctx::new("process_on_a_pty_is_restored_onto_a_new_pty_with_its_settings_and_job_control");
    let mut reference = ctx.spawn(&ttyjob_under_pty(true));
    reference.wait_for("type a line");
    reference.write_stdin(LINE);
    let reference = reference.finish();

    let (img, pid, before) = dump_ttyjob(&ctx);
    let mut r = ctx.restore(&img, &["--new-tty"], In::Pipe);
    r.wait_for("type a line");
    // The restored program is on a new pty, not on ckpt restore's pipes.
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("fd 0 of the restored");
    assert!(
        fd0.to_string_lossy().starts_with("/dev/pts/"),
        "the restored program's stdin is {fd0:?}, not a pty"
    );
    r.write_stdin(LINE);
    let after = r.finish();
    assert_eq!(
        after.status.code(),
        Some(3),
        "ckpt restore --new-tty exits with the program's status; stderr:\n{}",
        text(&after.stderr)
    );
    assert_eq!(
        reference.status.code(),
        Some(3),
        "reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_no_process(pid, "after the restored program ended");
    let want = normalized(&reference.stdout);
    assert!(
        want.contains("got \"hello new terminal\"") && want.contains("size 33x111"),
        "reference run:\n{want}"
    );
    let got = [normalized(&before), normalized(&after.stdout)].concat();
    assert_same_output(
        "program restored onto a new pty",
        want.as_bytes(),
        got.as_bytes(),
    );
}

#[test]
fn new_tty_refusals_and_failed_restores_leave_nothing_behind() {
    let ctx = Ctx::new("new_tty_refusals_and_failed_restores_leave_nothing_behind");
    let (img, pid, _) = dump_ttyjob(&ctx);
    // Bad usage.
    for extra in [
        &["--new-tty", "--detach"][..],
        &["--new-tty", "--new-pidns"][..],
    ] {
        let mut args: Vec<&OsStr> = vec!["restore".as_ref(), img.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        ctx.ckpt(&args).assert_fails(2);
    }
    ctx.ckpt(&["restore", "-", "--new-tty"]).assert_fails(2);
    assert_no_process(pid, "after bad usage");
    // Every new step of restore made to fail.
    for fault in [
        "create a new terminal",
        "take the new terminal",
        "ioctl(TIOCSCTTY)",
        "ioctl(TIOCSPGRP)",
        "set registers",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &["--new-tty"], fault, &[pid], &[]);
    }

    // An image whose processes had no terminal is refused, naming why.
    let mut s = ctx.spawn(&Spec::new("/bin/sleep").arg("30"));
    let spid = s.pid;
    let img2 = ctx.path("noterm.img");
    ctx.dump(spid, &img2);
    s.expect_killed();
    wait_pids_gone(&[spid], "sleep");
    ctx.ckpt(&[
        OsStr::new("restore"),
        img2.as_os_str(),
        OsStr::new("--new-tty"),
    ])
    .assert_fails(1)
    .assert_stderr_mentions(&["--new-tty", "terminal"]);
    assert_no_process(spid, "after the refused restore");
}

// ---- pseudo-terminal pairs inside the tree (tests/targets/ptypair.c) ----

/// The lines of `out` that start with `tag`, without their step numbers (`ping N`).
fn answers(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(tag))
        .map(|l| {
            let mut s = String::new();
            let mut rest = l;
            while let Some(i) = rest.find("ping ") {
                s.push_str(&rest[..i + 5]);
                rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
                s.push('N');
            }
            s.push_str(rest);
            s
        })
        .collect()
}

/// Wait until `p` printed its `n`-th line starting with `tag`.
fn wait_tagged(p: &mut Proc, tag: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let out = p.stdout.text();
        let got: Vec<&str> = out.lines().filter(|l| l.starts_with(tag)).collect();
        if got.len() >= n {
            return got[n - 1].to_string();
        }
        assert!(
            std::time::Instant::now() < deadline && p.try_wait().is_none(),
            "no {tag} line {n} from {}: {out}\n{}",
            p.label,
            p.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// /proc/PID/stat's tty_nr and tpgid.
fn tty_of(pid: i32) -> (String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<String> = s
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (
        f.get(4).cloned().unwrap_or_default(),
        f.get(5).cloned().unwrap_or_default(),
    )
}

fn start_ptypair(ctx: &Ctx) -> (Proc, Vec<i32>) {
    let mut t = ctx.spawn(&Spec::new(target("ptypair")).stdin(In::Pipe));
    t.wait_for("ready\n");
    let tree = wait_process_tree(
        t.pid,
        3,
        "ptypair, its session leader and its foreground job",
    );
    (t, tree)
}

#[test]
fn pty_pair_inside_the_tree_keeps_its_session_settings_modes_and_number() {
    let ctx = Ctx::new("pty_pair_inside_the_tree_keeps_its_session_settings_modes_and_number");
    let (mut t, tree) = start_ptypair(&ctx);
    let pid = t.pid;
    t.write_stdin(b"step\n");
    let first = wait_tagged(&mut t, "step", 1);
    assert!(
        first.contains("controlling 1 foreground 1 size 40x100 echo 0")
            && first.contains("B: packet 1 locked 1 hup 1 read -1 Input/output error")
            && first.contains("C: xz /dev/pts/"),
        "the original run: {first}"
    );
    let ttys: Vec<(String, String)> = tree.iter().map(|&p| tty_of(p)).collect();
    let links: Vec<String> = tree[1..]
        .iter()
        .map(|p| {
            std::fs::read_link(format!("/proc/{p}/fd/0"))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let img = ctx.path("ptypair.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "ptypair");
    // The oracle compares the restored tree with the original as soon as it runs
    // (termios, window size, packet mode, lock of every terminal descriptor, fdinfo,
    // tty_nr, and tpgid of the sessions on a pty of the tree).
    let mut r = ctx.restore(&img, &[], In::Pipe);
    assert_eq!(
        tree.iter().map(|&p| tty_of(p)).collect::<Vec<_>>(),
        ttys,
        "controlling terminals (tty_nr) and foreground groups (tpgid) of the restored tree"
    );
    for (p, l) in tree[1..].iter().zip(&links) {
        let now = std::fs::read_link(format!("/proc/{p}/fd/0")).expect("fd 0");
        assert_eq!(now.to_string_lossy(), l.as_str(), "the pty's number");
    }
    r.write_stdin(b"step\nstep\n");
    wait_tagged(&mut r, "step", 2);
    r.write_stdin(b"exit\n");
    r.close_stdin();
    let after = r.finish();
    assert_eq!(
        after.status.code(),
        Some(0),
        "the restored tree's exit; stderr:\n{}",
        text(&after.stderr)
    );
    let out = text(&after.stdout);
    assert!(out.contains("child exit 0"), "restored run:\n{out}");
    let want = answers(&first, "step");
    let got = answers(&out, "step");
    assert_eq!(got.len(), 2, "restored run:\n{out}");
    for g in &got {
        assert_eq!(g, &want[0], "the restored tree's view of its terminals");
    }
}

#[test]
fn pty_data_queued_or_held_outside_is_refused_and_the_tree_runs_on() {
    let ctx = Ctx::new("pty_data_queued_or_held_outside_is_refused_and_the_tree_runs_on");
    let (mut t, tree) = start_ptypair(&ctx);
    let pid = t.pid;
    let img = ctx.path("refused.img");
    // A slave side held outside the tree.
    let slave = std::fs::read_link(format!("/proc/{}/fd/0", tree[1])).expect("slave");
    let outside = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave)
        .expect("open the slave");
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["whose slave side is also held by process"]);
    drop(outside);
    assert_running_untraced(pid, "after the refused dump");
    // Output the master has not read.
    t.write_stdin(b"queue\n");
    t.wait_for("queued\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["the slave side wrote and it has not read yet"])
        .assert_stderr_mentions(&["still there after 20 tries"]);
    assert_running_untraced(pid, "after the refused dump");
    // The queued answer is still there.
    t.write_stdin(b"drain\n");
    let l = wait_tagged(&mut t, "drained", 1);
    assert!(l.contains("[queued: tty"), "the queued line was lost: {l}");
    // Queued output the program reads while the dump waits: the dump goes through.
    t.write_stdin(b"queue\n");
    wait_tagged(&mut t, "queued", 2);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let left = ctx.path("left.img");
    let mut d = ctx.spawn(
        &Spec::new(ckpt_bin())
            .arg("dump")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&left)
            .arg("--leave-running"),
    );
    std::thread::sleep(std::time::Duration::from_millis(150));
    t.write_stdin(b"drain\n");
    let d = d.finish();
    assert_eq!(
        d.status.code(),
        Some(0),
        "a dump waiting for queued output to be read: {}",
        text(&d.stderr)
    );
    assert!(left.exists());
    assert!(wait_tagged(&mut t, "drained", 2).contains("[queued: tty"));
    assert_running_untraced(pid, "after dump --leave-running");
    // A packet-mode status byte the master has not read.
    t.write_stdin(b"flush\n");
    t.wait_for("flushed\n");
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["has a status byte (TIOCPKT) it has not read yet"]);
    assert_running_untraced(pid, "after the refused dump");
    t.write_stdin(b"status\n");
    let st = wait_tagged(&mut t, "status", 1);
    assert!(st.starts_with("status 1 ") && st != "status 1 0", "{st}");
    // Exclusive mode.
    t.write_stdin(b"excl\n");
    t.wait_for("excl done\n");
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["is in exclusive mode (TIOCEXCL)"]);
    assert_running_untraced(pid, "after the refused dump");
    t.write_stdin(b"noexcl\n");
    t.wait_for("noexcl done\n");
    // Input the slave side has not read (its reader sleeps).
    t.write_stdin(b"nap\n");
    t.wait_for("napping\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    ctx.try_dump(pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["bytes of input it has not read yet"]);
    assert_running_untraced(pid, "after the refused dump");
    assert!(!img.exists(), "a refused dump left an image");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stdout));
}

// ---- a real tmux server ----

/// The tmux binary; the test fails (never passes silently) without it.
fn tmux_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("tmux"))
        .find(|p| p.is_file())
        .expect("needs tmux (apt-get install tmux)")
}

/// `tmux -S SOCK ARGS...`: its output (asserted to succeed).
fn tmux(sock: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(tmux_bin());
    cmd.arg("-S").arg(sock).args(args).env_remove("TMUX");
    // (the server it starts must not inherit descriptors leaked into the test)
    no_inherited_fds(&mut cmd, Vec::new());
    let out = cmd.output().expect("run tmux");
    assert!(
        out.status.success(),
        "tmux {args:?}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The highest "NAME tick N" a pane shows.
fn last_tick(sock: &std::path::Path, pane: &str, name: &str) -> u64 {
    let screen = tmux(sock, &["capture-pane", "-p", "-t", pane]);
    screen
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name} tick ")))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Wait until what `f` returns satisfies `ok` (or fail, showing it).
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut f: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let v = f();
        if ok(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {v:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `tmux attach-session` on a pty of `ptyrun.py`, once the server lists it and it shows
/// the panes.
fn attach_client(ctx: &Ctx, sock: &std::path::Path) -> Proc {
    let mut client = ctx.spawn(
        &Spec::new(python3())
            .arg(script("ptyrun.py"))
            .arg(tmux_bin())
            .arg("-S")
            .arg(sock)
            .arg("attach-session")
            .env("TERM", "xterm"),
    );
    wait_until(
        "a client attached",
        || tmux(sock, &["list-clients", "-F", "#{client_tty}"]),
        |s| s.contains("/dev/pts/"),
    );
    client.wait_for("tick");
    client
}

/// Detach every client; the attached one says so and ends.
fn detach_clients(sock: &std::path::Path, client: &mut Proc) {
    tmux(sock, &["detach-client", "-s", "0"]);
    let fin = client.finish();
    assert!(
        text(&fin.stdout).contains("[detached"),
        "the attached client: {:?}\n{}",
        fin.status,
        text(&fin.stdout)
    );
}

/// A tmux server started detached on its own socket, with two panes each running a
/// small loop (a tick every 0.2 s, and any line typed into it echoed back), is dumped
/// (killed) and restored: both panes run on (their output advances), keys sent to each
/// reach it, and a client attaches on a terminal of the test's and detaches again. With
/// a client attached, the dump is refused. The state oracle compares the restored server and panes with the originals.
#[test]
fn tmux_server_with_two_panes_runs_on_and_takes_keys_and_clients() {
    let ctx = Ctx::new("tmux_server_with_two_panes_runs_on_and_takes_keys_and_clients");
    tmux_bin();
    let pane = ctx.path("pane.sh");
    std::fs::write(
        &pane,
        "i=0\nwhile :; do\n  i=$((i+1))\n  echo \"$1 tick $i\"\n  \
         if read -r -t 0.2 line; then echo \"$1 got:$line\"; fi\ndone\n",
    )
    .expect("write pane.sh");
    let sock = ctx.path("tmux.sock");
    let cmd = |name: &str| format!("exec bash {} {name}", pane.display());
    tmux(
        &sock,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            &cmd("left"),
        ],
    );
    tmux(&sock, &["split-window", "-h", "-t", "%0", &cmd("right")]);
    let pid: i32 = tmux(&sock, &["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .expect("the server's pid");
    ctx.track(pid);
    let tree = wait_process_tree(pid, 3, "the tmux server and its two panes");
    for (p, name) in [("%0", "left"), ("%1", "right")] {
        wait_until(
            &format!("pane {name} ticks"),
            || last_tick(&sock, p, name),
            |&n| n >= 3,
        );
    }
    // With a client attached (on a pty of the test's, outside the tree) the dump is
    // refused, the server running on: its descriptor of the client's terminal and its
    // connection to the client lead outside.
    let img = ctx.path("tmux.img");
    let mut client = attach_client(&ctx, &sock);
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1)
        .assert_stderr_mentions(&["outside the dumped tree"]);
    eprintln!("with a client attached: {}", r.stderr.trim());
    assert_running_untraced(pid, "after the refused dump");
    detach_clients(&sock, &mut client);
    // (A pane's output the server has not read yet makes the dump let the tree go and
    // try again: a terminal's queue cannot be read without consuming it.)
    ctx.dump(pid, &img);
    wait_pids_gone(&tree, "the dumped tmux server");
    let _restored = ctx.restore_detached(&img);
    // Both panes run on.
    for (p, name) in [("%0", "left"), ("%1", "right")] {
        let n = last_tick(&sock, p, name);
        assert!(n >= 3, "pane {name} lost its screen: {n}");
        wait_until(
            &format!("pane {name} ticks after restore"),
            || last_tick(&sock, p, name),
            |&m| m >= n + 3,
        );
    }
    // Keys reach each pane's program.
    for (p, name) in [("%0", "left"), ("%1", "right")] {
        tmux(
            &sock,
            &["send-keys", "-t", p, &format!("hello-{name}"), "Enter"],
        );
        wait_until(
            &format!("pane {name} reads the keys"),
            || tmux(&sock, &["capture-pane", "-p", "-t", p]),
            |s| s.contains(&format!("{name} got:hello-{name}")),
        );
    }
    // A client attaches on a terminal, sees the panes, and detaches.
    let mut client = attach_client(&ctx, &sock);
    detach_clients(&sock, &mut client);
    assert_eq!(
        tmux(&sock, &["list-panes", "-a", "-F", "#{pane_dead}"]).trim(),
        "0\n0",
        "both panes alive"
    );
    tmux(&sock, &["kill-server"]);
    wait_pids_gone(&[pid], "the restored tmux server");
}

/// The /dev/pts number of a pty master the test opens.
fn open_ptmx() -> (std::fs::File, u32) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .expect("open /dev/ptmx");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", {
        use std::os::fd::AsRawFd;
        f.as_raw_fd()
    }))
    .expect("fdinfo");
    let n = info
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("tty-index");
    (f, n)
}

#[test]
fn pty_pair_restores_that_fail_leave_nothing_and_a_taken_number_is_refused() {
    let ctx = Ctx::new("pty_pair_restores_that_fail_leave_nothing_and_a_taken_number_is_refused");
    let (mut t, tree) = start_ptypair(&ctx);
    let slave = std::fs::read_link(format!("/proc/{}/fd/0", tree[1])).expect("slave");
    // A dump that leaves the tree running changes nothing the oracle sees (no slave is
    // opened, nothing is read), and the terminals work on.
    ctx.dump_leave_running(t.pid, &ctx.path("left.img"));
    t.write_stdin(b"step\n");
    let l = wait_tagged(&mut t, "step", 1);
    assert!(l.contains("foreground 1 size 40x100"), "{l}");
    let img = ctx.path("ptypair.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "ptypair");
    for fault in [
        "create a pseudo-terminal",
        "take a pseudo-terminal",
        "ioctl(TIOCSCTTY) of a pseudo-terminal",
        "ioctl(TIOCSPGRP) of a pseudo-terminal",
        "open a pseudo-terminal's slave side",
        "open /dev/tty",
        "finish a pseudo-terminal",
        "set registers",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &tree, &[]);
        assert!(
            !slave.exists(),
            "{} is left after a restore failing at {fault:?}",
            slave.display()
        );
    }
    // The pty's number taken by someone else: refused in plan, naming it.
    let want: u32 = slave
        .to_string_lossy()
        .trim_start_matches("/dev/pts/")
        .parse()
        .expect("pty number");
    let mut held = Vec::new();
    loop {
        let (f, n) = open_ptmx();
        held.push(f);
        if n >= want {
            break;
        }
    }
    ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()])
        .assert_fails(1)
        .assert_stderr_mentions(&[&format!("{} is in use on this host", slave.display())]);
    for p in &tree {
        assert_no_process(*p, "after the refused restore");
    }
    drop(held);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"step\nexit\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "{}", text(&fin.stderr));
    assert!(text(&fin.stdout).contains("foreground 1 size 40x100"));
}

/// A terminal whose master is outside the tree (here `ptyrun.py`'s) stays what it was
/// on descriptors 0-2 (connected to `ckpt restore`'s own), and is refused above them,
/// as its slave or as `/dev/tty`, naming the descriptor; the process runs on.
#[test]
fn a_terminal_of_outside_above_descriptor_2_is_refused() {
    let ctx = Ctx::new("a_terminal_of_outside_above_descriptor_2_is_refused");
    for (shell, fd, what) in [
        ("exec 5<&0; exec sleep 30", 5, "(/dev/pts/"),
        ("exec 6<>/dev/tty; exec sleep 30", 6, "(/dev/tty)"),
    ] {
        let mut t = ctx.spawn(
            &Spec::new(python3())
                .arg(script("ptyrun.py"))
                .arg("/bin/sh")
                .arg("-c")
                .arg(shell),
        );
        let pid = wait_until(
            "sleep under ptyrun.py holding its terminal",
            || {
                process_tree(t.pid).into_iter().find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n")
                        && std::fs::read_link(format!("/proc/{p}/fd/{fd}")).is_ok()
                })
            },
            Option::is_some,
        )
        .unwrap_or_default();
        let img = ctx.path("outside.img");
        ctx.try_dump(pid, &img)
            .assert_fails(1)
            .assert_stderr_mentions(&[&format!("file descriptor {fd} is a terminal {what}")]);
        assert_running_untraced(pid, "after the refused dump");
        assert!(!img.exists());
        t.kill();
    }
}

// ---- a PID namespace of the tree's own (tests/targets/nsinit.c) ----

/// What the kernel shows of the terminal of `pid` (the init of a PID namespace): its
/// settings and window size, and each process of the namespace's PID, group, session,
/// controlling terminal and its foreground group as the namespace's /proc shows them,
/// the terminal's number written as that of the init's descriptor 0 (the pty's number
/// is whatever is free: relative).
fn ns_terminal(pid: i32) -> (String, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let (settings, stats, _) = terminal_view(pid);
    let rdev = std::fs::metadata(format!("/proc/{pid}/fd/0"))
        .expect("stat the terminal")
        .rdev();
    let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
    let tty_nr = (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
    let stats = stats
        .iter()
        .map(|l| l.replace(&format!("tty_nr {tty_nr} "), "tty_nr (descriptor 0's) "))
        .collect();
    (settings, stats)
}

/// A container's shape without a runtime: ttyjob as PID 1 of a PID namespace (and a
/// mount namespace) of its own, leading its session, its controlling terminal a pty
/// whose master is outside the tree (ptyrun.py's; nsinit between them). `restore
/// --new-tty` makes a new PID namespace whose init it is again, on a new pty that is
/// its controlling terminal with its group in the foreground and the settings it gave
/// the old one: its output is an uninterrupted run's, a line typed into `ckpt
/// restore`'s stdin reaches it, and the terminal as the namespace sees it is the
/// original's.
#[test]
fn pid_namespace_init_on_a_terminal_is_restored_onto_a_new_pty() {
    let ctx = Ctx::new("pid_namespace_init_on_a_terminal_is_restored_onto_a_new_pty");
    let mut reference = ctx.spawn(&ttyjob_under_pty(true));
    reference.wait_for("type a line");
    reference.write_stdin(LINE);
    let reference = reference.finish();

    let spec = Spec::new(python3())
        .arg(script("ptyrun.py"))
        .arg(target("nsinit"))
        .arg(target("ttyjob"))
        .arg("30")
        .arg("12")
        .arg("sleep=40");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 3, "ptyrun.py, nsinit and ttyjob");
    let pid = *tree.last().expect("ttyjob under nsinit");
    assert_eq!(
        nspids(pid).last(),
        Some(&1),
        "ttyjob is its namespace's init"
    );
    let view = ns_terminal(pid);
    assert!(
        view.1
            .iter()
            .any(|l| l.starts_with("pid 1 ppid 0 pgrp 1 sid 1 tty_nr (descriptor 0's) tpgid 1")),
        "the init leads its session on its terminal: {view:?}"
    );
    let img = ctx.path("nstty.img");
    ctx.dump(pid, &img);
    let before = t.finish();
    wait_pids_gone(&[pid], "ttyjob");

    let mut r = ctx.restore(&img, &["--new-tty"], In::Pipe);
    r.wait_lines(1);
    let restored = wait_process_tree(r.pid, 2, "ckpt restore and ttyjob");
    let rp = *restored.last().expect("the restored ttyjob");
    assert_eq!(nspids(rp).last(), Some(&1), "the restored ttyjob is PID 1");
    assert_eq!(ns_terminal(rp), view, "the restored program's terminal");
    r.wait_for("type a line");
    r.write_stdin(LINE);
    let after = r.finish();
    assert_eq!(
        after.status.code(),
        Some(3),
        "ckpt restore --new-tty exits with the program's status; stderr:\n{}",
        text(&after.stderr)
    );
    assert_no_process(rp, "after the restored program ended");
    let want = normalized(&reference.stdout);
    let got = [normalized(&before.stdout), normalized(&after.stdout)].concat();
    assert_same_output(
        "PID namespace init restored onto a new pty",
        want.as_bytes(),
        got.as_bytes(),
    );
}
