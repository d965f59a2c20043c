//! End-to-end tests of file descriptors beyond regular files (issue 5, the parts that
//! work): a three-stage shell pipeline dumped with data in flight in both of its pipes;
//! an epoll loop over an eventfd, a timerfd and a pipe (and a signalfd); stdout and
//! stderr sharing one open file description (`>FILE 2>&1`); a pipe whose two ends are in
//! one process, with unread data in it. Each run is dumped mid-way, killed, restored,
//! and its whole output compared byte for byte with an uninterrupted run's.
//!
//! The targets are `tests/targets/{stage,evloop,twostreams,selfpipe}.c`.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Bytes waiting in the pipe that `/proc/PID/fd/FD` leads to (FIONREAD on a new read
/// end of it, opened through /proc; nothing is consumed).
fn pipe_backlog(pid: i32, fd: i32) -> usize {
    let p = format!("/proc/{pid}/fd/{fd}");
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {p}: {e}"));
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer to a local.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD on {p}: {}", std::io::Error::last_os_error());
    usize::try_from(n).expect("FIONREAD gave a negative count")
}

/// Start `spec` alongside its reference run, dump it after `k` lines, restore it; once
/// the restored process printed `k2` more lines dump it again and restore that (when
/// `k2` is Some); compare the whole output and the exit status with the reference.
/// `want_kinds`: descriptor kinds the first image must hold.
fn dump_restore_compare(
    ctx: &Ctx,
    spec: &Spec,
    k: usize,
    k2: Option<usize>,
    want_kinds: &[&str],
    tag: &str,
) -> Finished {
    let mut rp = ctx.spawn(spec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    assert_has_kinds(ctx, &img, want_kinds, tag);

    let mut r = ctx.restore(&img, &[], In::Null);
    let fin = if let Some(k2) = k2 {
        r.wait_lines(k2);
        let img2 = ctx.path(&format!("{tag}-again.img"));
        ctx.dump(pid, &img2);
        let mid = r.finish();
        assert_eq!(
            mid.status.code(),
            Some(128 + libc::SIGKILL),
            "{tag}: ckpt restore when the second dump killed the restored process; \
             stderr:\n{}",
            text(&mid.stderr)
        );
        output.extend(mid.stdout);
        wait_pids_gone(&[pid], &format!("{tag}: restored copy after its dump"));
        ctx.restore(&img2, &[], In::Null).finish()
    } else {
        r.finish()
    };
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        &format!(
            "{tag} (dumped after {k} lines, restored{})",
            if k2.is_some() {
                ", dumped again, restored"
            } else {
                ""
            }
        ),
        &reference.stdout,
        &output,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_no_process(pid, tag);
    reference
}

// ---------------------------------------------------------------------------------------
// A shell pipeline

/// `bash -c 'stage produce N | stage transform 0 | stage consume 1; echo ...'`: the
/// producer fills the first pipe and blocks, the transformer fills the second and
/// blocks, the consumer drains it one line a millisecond.
fn pipeline_spec(lines: u32) -> Spec {
    let st = target("stage");
    let st = st.to_str().expect("utf-8 path");
    Spec::new("bash").arg("-c").arg(format!(
        "'{st}' produce {lines} | '{st}' transform 0 | '{st}' consume 1; \
         echo \"pipeline exited with status $?\""
    ))
}

/// The pid among `pids` whose command line has the argument `word` (a stage's mode).
fn pid_running(pids: &[i32], word: &str) -> i32 {
    *pids
        .iter()
        .find(|&&p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == word.as_bytes()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no process running `{word}` among {pids:?}"))
}

#[test]
fn shell_pipeline_with_data_in_flight_continues_after_restore() {
    let ctx = Ctx::new("shell_pipeline_with_data_in_flight_continues_after_restore");
    const LINES: u32 = 2000;
    let spec = pipeline_spec(LINES);
    let mut rp = ctx.spawn(&spec);

    let mut t = ctx.spawn(&spec);
    let root = t.pid;
    // bash and its three stages, every stage still running.
    let pids = wait_process_tree(root, 4, "pipeline");
    for &p in &pids {
        ctx.track(p);
    }
    // Both pipes fill up at once (the producer and the transformer do not wait); the
    // producer then blocks until the consumer has read all but ~1150 lines.
    t.wait_lines(50);
    let transformer = pid_running(&pids, "transform");
    let consumer = pid_running(&pids, "consume");
    let producer = pid_running(&pids, "produce");
    // Data in flight: both pipes hold data nobody has read yet, and the producer is
    // still there, blocked on a full pipe.
    let deadline = Instant::now() + timeout();
    let (in1, in2) = loop {
        let (a, b) = (pipe_backlog(transformer, 0), pipe_backlog(consumer, 0));
        if a > 32768 && b > 32768 {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "pipeline: the pipes never filled ({a} and {b} bytes)"
        );
        thread::sleep(Duration::from_millis(5));
    };
    assert!(pid_exists(producer), "the producer is gone already");
    let img = ctx.path("pipeline.img");
    ctx.dump(root, &img);
    t.expect_killed();
    let before = t.stdout.finish("original pipeline");
    wait_pids_gone(&pids, "original pipeline after the dump");
    eprintln!("pipeline dumped with {in1} and {in2} bytes in its pipes");

    let j = ctx.inspect_json(&img);
    assert_eq!(
        j["processes"].as_array().map(Vec::len),
        Some(4),
        "the image should hold bash and its three stages"
    );
    let buffered: usize = j["pipes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["data"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert!(
        buffered >= 65536,
        "the image should hold the data in flight (at least 64 KiB), it holds {buffered} \
         bytes: {}",
        j["pipes"]
    );

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let sorted = |mut v: Vec<i32>| {
        v.sort_unstable();
        v
    };
    assert_eq!(
        sorted(process_tree(root)),
        sorted(pids.clone()),
        "the restored tree has other processes"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    let out = text(&reference.stdout);
    assert!(
        out.contains(&format!("consumer: {LINES} lines, hash "))
            && out.ends_with("pipeline exited with status 0\n")
            && !out.contains("out of order"),
        "reference:\n{out}"
    );
    assert_tree_finished_like_reference(
        "bash pipeline (dumped with data in flight, restored)",
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

// ---------------------------------------------------------------------------------------
// epoll, eventfd, timerfd, signalfd

#[test]
fn epoll_over_eventfd_timerfd_and_pipe_continues_after_two_restores() {
    let ctx = Ctx::new("epoll_over_eventfd_timerfd_and_pipe_continues_after_two_restores");
    let spec = Spec::new(target("evloop")).arg("60");
    dump_restore_compare(
        &ctx,
        &spec,
        15,
        Some(15),
        &["Epoll", "EventFd", "TimerFd", "Pipe"],
        "evloop",
    );
}

#[test]
fn epoll_with_a_signalfd_continues_after_two_restores() {
    let ctx = Ctx::new("epoll_with_a_signalfd_continues_after_two_restores");
    let spec = Spec::new(target("evloop")).arg("60").arg("signalfd");
    let reference = dump_restore_compare(
        &ctx,
        &spec,
        15,
        Some(15),
        &["Epoll", "SignalFd"],
        "evloop-sig",
    );
    let out = text(&reference.stdout);
    assert_eq!(
        out.matches(" signal 10 code -1 value ").count(),
        20,
        "the signalfd should deliver 20 queued SIGUSR1:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// stdout and stderr: one open file description

/// `twostreams STEPS >FILE 2>&1` (through `bash -c 'exec ...'`, so the process is the
/// target itself with fds 1 and 2 sharing one description).
fn twostreams_spec(out: &Path) -> Spec {
    Spec::new("bash")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" >\"$OUT\" 2>&1")
        .arg(target("twostreams"))
        .arg("40")
        .env("OUT", out)
}

fn file_lines(p: &Path) -> usize {
    fs::read(p)
        .unwrap_or_default()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[test]
fn stdout_and_stderr_sharing_one_file_description_keep_one_offset() {
    let ctx = Ctx::new("stdout_and_stderr_sharing_one_file_description_keep_one_offset");
    let ref_out = ctx.path("reference.txt");
    let out = ctx.path("out.txt");
    let mut rp = ctx.spawn(&twostreams_spec(&ref_out));
    let mut t = ctx.spawn(&twostreams_spec(&out));
    let pid = t.pid;
    let deadline = Instant::now() + timeout();
    while file_lines(&out) < 24 {
        assert!(
            Instant::now() < deadline,
            "twostreams wrote {} lines to {}",
            file_lines(&out),
            out.display()
        );
        thread::sleep(Duration::from_millis(2));
    }
    // Sanity: fds 1 and 2 are one description (the same file, one offset).
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/1")).ok(),
        Some(out.clone()),
        "fd 1 of twostreams"
    );
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp with integer arguments only.
    let same = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, 1, 2) };
    assert_eq!(
        same,
        0,
        "fds 1 and 2 of twostreams should be one open file description (kcmp: {})",
        std::io::Error::last_os_error()
    );
    let img = ctx.path("twostreams.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let j = ctx.inspect_json(&img);
    let fds = j["processes"][0]["fds"].as_array().expect("fds array");
    let fd = |n: i64| {
        fds.iter()
            .find(|f| f["fd"].as_i64() == Some(n))
            .unwrap_or_else(|| panic!("no fd {n} in the image: {fds:?}"))
    };
    assert!(
        fd(1)["shared_with"] != Value::Null || fd(2)["shared_with"] != Value::Null,
        "the image should record that fds 1 and 2 share a description: {} / {}",
        fd(1),
        fd(2)
    );

    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert!(
        fin.stdout.is_empty() && fin.stderr.is_empty(),
        "output went to ckpt restore instead of the file:\n{}\n{}",
        text(&fin.stdout),
        text(&fin.stderr)
    );
    assert_eq!(fin.status.code(), Some(0));
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    let expected = fs::read(&ref_out).expect("read reference output");
    assert_eq!(file_lines(&ref_out), 81, "reference:\n{}", text(&expected));
    assert_same_output(
        "twostreams >FILE 2>&1 (dumped, restored): the file",
        &expected,
        &fs::read(&out).expect("read output file"),
    );
    assert_no_process(pid, "twostreams");
}

// ---------------------------------------------------------------------------------------
// A pipe with both ends in one process

#[test]
fn self_pipe_with_unread_data_and_a_larger_capacity_is_read_back_intact() {
    let ctx = Ctx::new("self_pipe_with_unread_data_and_a_larger_capacity_is_read_back_intact");
    let spec = Spec::new(target("selfpipe")).arg("60");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(12);
    let pid = t.pid;
    let left = pipe_backlog(pid, 3);
    assert!(
        left > 65536,
        "selfpipe should hold more than a default pipe's 64 KiB unread: {left} bytes"
    );
    let img = ctx.path("selfpipe.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let j = ctx.inspect_json(&img);
    let pipes = j["pipes"]
        .as_array()
        .expect("pipes array in inspect --json");
    assert_eq!(pipes.len(), 1, "one pipe: {pipes:?}");
    assert_eq!(pipes[0]["capacity"].as_u64(), Some(262144), "capacity");
    assert!(
        pipes[0]["data"].as_array().map_or(0, Vec::len) > 65536,
        "the image should hold the unread data"
    );

    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0));
    assert_same_output(
        "selfpipe (dumped with unread data, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0), "stderr:\n{}", text(&fin.stderr));
    assert_no_process(pid, "selfpipe");
}
