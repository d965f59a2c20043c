//! End-to-end tests of the core: the restored process's state is the dumped one — dump
//! it again and compare the two images (`inspect --json`, path by path: counter dynamic
//! and static, python3, an ia32 program, blocked_read, signals), and its non-default
//! attributes (/proc) are the original's.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs). Run with cargo-nextest,
//! one process per test (see README.md).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

// ---------------------------------------------------------------------------------------
// The restored process's state is the dumped one: dump it again and compare the images

#[test]
fn state_of_restored_blocked_read_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_blocked_read_equals_dumped_state");
    let first = ctx.path("first.img");
    let (reference, pid, before) =
        blocked_read_dumped_in_read(&ctx, b"alpha\nbeta\ngamma\n", &first);

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_read, "restored blocked_read");
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    assert_same_image_state("blocked_read in read(2)", &a, &b, LEGIT_IMAGE_DIFFS);

    // And it still works after the second dump.
    r.write_stdin(b"gamma\n");
    r.close_stdin();
    let fin = r.finish();
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        "blocked_read restored, dumped again",
        &reference.stdout,
        &[before, after].concat(),
    );
}

#[test]
fn state_of_restored_signals_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_signals_equals_dumped_state");
    let spec = signals_spec(12, 2, 5, 10);
    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("waiting for SIGUSR2");
    t.signal(libc::SIGUSR2);
    t.wait_for("waiting for SIGUSR1");
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "signals");
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_rt_sigsuspend, "restored signals");
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    assert_same_image_state(
        "signals in sigsuspend with SIGUSR2 and SIGWINCH pending",
        &a,
        &b,
        LEGIT_IMAGE_DIFFS,
    );
    assert!(send_signal(pid, libc::SIGUSR1));
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0));
    let out = String::from_utf8_lossy(&fin.stdout);
    assert!(out.contains("end usr2 handled=1"), "{out}");
}

/// x86-64 and ia32 sleeps: nanosleep, clock_nanosleep (and its ia32 time64 twin).
const SLEEP_SYSCALLS: &[i64] = &[35, 230, 162, 267, 407];

/// Run `spec` until it printed `k` lines and sleeps (a step's sleep far longer than the
/// test), dump it (killing it), restore it detached, wait until it sleeps again, dump it
/// again with --leave-running and compare the two images: everything but what
/// legitimately differs must be equal. Present all-zero pages are left out of an image,
/// so they come back absent: an area may have fewer present pages the second time, but
/// the page data stored must be as large. `rem_is_req`: the program sleeps in an ia32
/// clock_nanosleep whose `rem` (esi) is not its request (edx): the dump re-issues the
/// sleep with the request pointed at `rem` (see `arch::x86::restart_block_in_place`), so
/// edx must be esi in both images.
fn restored_image_equals_dumped(ctx: &Ctx, spec: &Spec, k: usize, tag: &str, rem_is_req: bool) {
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    wait_in_any_syscall(pid, SLEEP_SYSCALLS, tag);
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();
    let mut r = ctx.restore_detached(&first);
    wait_in_any_syscall(pid, SLEEP_SYSCALLS, &format!("restored {tag}"));
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    r.kill();
    let a = ctx.inspect_json(&first);
    let b = ctx.inspect_json(&second);
    let mut ignore = LEGIT_IMAGE_DIFFS.to_vec();
    // Pages present but all zero are not stored, so the restored process lacks them.
    // Runs are cut into records along present pages, so the record count and the image
    // size (a header and padding per record) follow; the page bytes are compared below.
    ignore.push("processes[*].vmas[*].pages_present");
    ignore.push("image.records");
    ignore.push("image.bytes");
    if rem_is_req {
        ignore.push("processes[0].threads[0].arch.regs.rdx");
        let regs = |j: &serde_json::Value, r: &str| {
            j["processes"][0]["threads"][0]["arch"]["regs"][r].clone()
        };
        assert!(
            regs(&a, "rsi").is_u64(),
            "{tag}: no esi in {}",
            a["processes"][0]["threads"][0]
        );
        // The dump itself points the interrupted sleep's request at rem (see
        // `arch::x86::restart_block_in_place`), in the task and in the image.
        assert_eq!(
            regs(&a, "rdx"),
            regs(&a, "rsi"),
            "{tag}: the dumped sleep's request should be its rem"
        );
        assert_eq!(
            regs(&b, "rdx"),
            regs(&a, "rsi"),
            "{tag}: the restored sleep's request should be the first image's rem"
        );
    }
    assert_same_image_state(tag, &a, &b, &ignore);
    let present = |j: &serde_json::Value| -> Vec<u64> {
        j["processes"][0]["vmas"]
            .as_array()
            .expect("vmas")
            .iter()
            .map(|v| v["pages_present"].as_u64().expect("pages_present"))
            .collect()
    };
    let (pa, pb) = (present(&a), present(&b));
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        assert!(
            y <= x,
            "{tag}: memory area {i} has {y} present pages after restore, {x} before"
        );
    }
    assert_eq!(
        a["image"]["page_bytes"], b["image"]["page_bytes"],
        "{tag}: page data stored in the first and the second image"
    );
    assert!(
        a["image"]["page_bytes"].as_u64().is_some_and(|n| n > 0),
        "{tag}: no page data in the image: {}",
        a["image"]
    );
}

#[test]
fn state_of_restored_counter_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_counter_equals_dumped_state");
    let spec = counter_spec(&ctx, "counter", 5, &["sleep=600000"]);
    restored_image_equals_dumped(&ctx, &spec, 1, "counter", false);
}

#[test]
fn state_of_restored_static_counter_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_static_counter_equals_dumped_state");
    let spec = counter_spec(&ctx, "counter-static", 5, &["sleep=600000"]);
    restored_image_equals_dumped(&ctx, &spec, 1, "counter-static", false);
}

#[test]
fn state_of_restored_python3_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_python3_equals_dumped_state");
    restored_image_equals_dumped(&ctx, &python_spec(5, 600.0), 1, "python3 loop.py", false);
}

#[test]
fn state_of_restored_ia32_program_equals_dumped_state() {
    let ctx = Ctx::new("state_of_restored_ia32_program_equals_dumped_state");
    let spec = Spec::new(target("arch32")).arg("5").arg("sleep=600000");
    restored_image_equals_dumped(&ctx, &spec, 2, "arch32", true);
}

/// What the kernel shows of `pid` that no memory checksum would: /proc/PID/personality,
/// comm, the Umask, VmLck and signal lines of status, limits, cmdline, environ, the exe
/// link, every mapping's range and VmFlags (smaps), and whether it leads its process
/// group and its session.
fn proc_attrs(pid: i32) -> BTreeMap<String, String> {
    let read = |f: &str| {
        fs::read(format!("/proc/{pid}/{f}"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| panic!("read /proc/{pid}/{f}: {e}"))
    };
    let mut m = BTreeMap::new();
    for f in ["personality", "comm", "limits", "cmdline", "environ"] {
        m.insert(f.to_string(), read(f));
    }
    let status = read("status");
    for key in ["Umask:", "VmLck:", "SigBlk:", "SigIgn:", "SigCgt:"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("(none)");
        m.insert(key.to_string(), line.to_string());
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    m.insert("exe".into(), exe.display().to_string());
    let mut cur = String::new();
    let mut maps = String::new();
    for l in read("smaps").lines() {
        if let Some(flags) = l.strip_prefix("VmFlags:") {
            maps.push_str(&format!("{cur} {}\n", flags.trim()));
        } else if l.split_whitespace().next().is_some_and(|r| {
            r.contains('-') && r.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            cur = l.split_whitespace().next().unwrap_or_default().to_string();
        }
    }
    m.insert("smaps VmFlags".into(), maps);
    let stat = read("stat");
    let f: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let me = pid.to_string();
    m.insert("leads its group".into(), (f[2] == me).to_string());
    m.insert("leads its session".into(), (f[3] == me).to_string());
    m
}

/// `attrs` changes attributes that a restore which forgot them would not show at once
/// (memory locked, locked on fault, madvise flags, resource limits soft and hard, its
/// name, umask, its own process group inside the session of its starter, the shell-job
/// case) and runs under `setarch -R` (personality ADDR_NO_RANDOMIZE). Dumped while it
/// waits for a line on stdin, restored, it must show the kernel the same attributes as
/// the original (/proc), dump again to the same image, and print exactly what an
/// uninterrupted run prints (it prints the attributes each step, too).
#[test]
fn non_default_attributes_survive_restore() {
    let ctx = Ctx::new("non_default_attributes_survive_restore");
    let setarch = ["/usr/bin/setarch", "/bin/setarch"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setarch (util-linux) not found");
    let spec = Spec::new(setarch)
        .arg("x86_64")
        .arg("-R")
        .arg(target("attrs"))
        .arg("30")
        .arg("10")
        .arg("sleep=5")
        .env("CKPT_TEST_MARK", "environ of the original")
        .stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("step 10 attrs");
    rp.write_stdin(b"go on\n");
    rp.close_stdin();
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "attrs: {reference:?}");

    let mut t = ctx.spawn(&spec);
    let pid = t.pid;
    t.wait_for("step 10 attrs");
    wait_in_syscall(pid, libc::SYS_read, "attrs");
    let original = proc_attrs(pid);
    // The attributes are not ours (a restore that left the stub's would show).
    let ours = proc_attrs(my_pid());
    for key in ["personality", "comm", "limits", "Umask:", "VmLck:"] {
        assert_ne!(
            original[key], ours[key],
            "attrs: {key} is the test's own; the check would not see it lost"
        );
    }
    assert_eq!(original["leads its group"], "true", "attrs: {original:?}");
    assert_eq!(
        original["leads its session"], "false",
        "attrs: {original:?}"
    );
    for flags in ["lo", "lf", "dc", "dd", "wf", "hg", "nh", "rr", "sr"] {
        assert!(
            original["smaps VmFlags"].contains(&format!(" {flags}")),
            "attrs: no mapping with VmFlag {flags}:\n{}",
            original["smaps VmFlags"]
        );
    }
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();
    let before = t.stdout.finish("original");

    let mut r = ctx.restore_detached(&first);
    wait_in_syscall(pid, libc::SYS_read, "restored attrs");
    let restored = proc_attrs(pid);
    let diff: Vec<String> = original
        .keys()
        .filter(|k| original[*k] != restored[*k])
        .map(|k| {
            format!(
                "{k}:\n  original: {:?}\n  restored: {:?}",
                original[k], restored[k]
            )
        })
        .collect();
    assert!(
        diff.is_empty(),
        "attrs: the restored process differs from the original in /proc:\n{}",
        diff.join("\n")
    );
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    assert_same_image_state(
        "attrs (non-default attributes)",
        &ctx.inspect_json(&first),
        &ctx.inspect_json(&second),
        LEGIT_IMAGE_DIFFS,
    );

    r.write_stdin(b"go on\n");
    r.close_stdin();
    let fin = r.finish();
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        "attrs (dumped, restored, dumped again)",
        &reference.stdout,
        &[before, after].concat(),
    );
}
