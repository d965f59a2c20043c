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
