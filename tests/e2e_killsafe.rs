//! `ckpt dump` killed at any moment (SIGKILL, SIGTERM, SIGINT, its standard output
//! closed) leaves the target running exactly as before: alive, untraced, every thread
//! there with its own signal mask, no mapping added or removed, and its memory, vector
//! registers and progress intact (the target checks those itself).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::killwalk::*;
use common::*;

const MIB: &str = "64";

/// The target: `killsafe`, or `killsafe32` (its ia32 build).
fn spawn_sized(ctx: &Ctx, name: &str, mib: &str) -> (Proc, Snapshot) {
    let mut p = ctx.spawn(&Spec::new(target(name)).arg(mib));
    p.wait_lines(3);
    let snap = snapshot(p.pid);
    assert_eq!(snap.masks.len(), 5, "target threads: {snap:?}");
    (p, snap)
}

/// What is wrong with the target after a killed dump, if anything; waits for it to
/// print two more progress lines.
fn check_target(p: &mut Proc, before: &Snapshot) -> Option<String> {
    if let Some(w) = let_go(p) {
        return Some(w);
    }
    // A thread the kernel let go may not have run yet (its return through its signal
    // frame puts its mask back): give the threads a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut now = snapshot(p.pid);
    while now != *before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        now = snapshot(p.pid);
    }
    if now.masks.keys().ne(before.masks.keys()) {
        return Some(format!(
            "threads {:?}, were {:?}",
            now.masks.keys(),
            before.masks.keys()
        ));
    }
    if now.masks != before.masks {
        return Some(format!(
            "signal masks {:?}, were {:?}",
            now.masks, before.masks
        ));
    }
    if now.maps != before.maps {
        return Some(format!(
            "mappings changed:\n{}\nwere:\n{}",
            now.maps, before.maps
        ));
    }
    makes_progress(p)
}

/// Hundreds of dumps of a five-thread 64 MiB target, each stopped at a random moment
/// by SIGKILL, SIGTERM, SIGINT or its reader closing its standard output.
#[test]
fn killed_dump_leaves_target_as_before() {
    random_kills(
        "killed_dump_leaves_target_as_before",
        "killsafe",
        &[
            (How::Signal(libc::SIGKILL), true, 100),
            (How::Signal(libc::SIGTERM), true, 35),
            (How::Signal(libc::SIGINT), true, 35),
            (How::CloseStdout, true, 20),
            (How::Signal(libc::SIGKILL), false, 40),
            (How::Signal(libc::SIGTERM), false, 20),
        ],
    );
}

/// The same with the target's ia32 build: its threads' queries run as ia32 calls
/// through ia32 signal frames.
#[test]
fn ia32_killed_dump_leaves_target_as_before() {
    random_kills(
        "ia32_killed_dump_leaves_target_as_before",
        "killsafe32",
        &[
            (How::Signal(libc::SIGKILL), true, 60),
            (How::Signal(libc::SIGTERM), true, 15),
            (How::CloseStdout, true, 10),
            (How::Signal(libc::SIGKILL), false, 25),
        ],
    );
}

/// Dumps of target `name` (64 MiB), each stopped at a random moment: `plan` says how
/// (and whether with `--leave-running`), how many times.
fn random_kills(test: &str, name: &str, plan: &[(How, bool, u32)]) {
    let ctx = Ctx::new(test);
    let img = ctx.path("img");
    let spawn_target = |ctx: &Ctx| spawn_sized(ctx, name, MIB);
    let (mut p, mut before) = spawn_target(&ctx);
    // How long a whole dump takes: the kills are spread over it.
    let t0 = Instant::now();
    ctx.dump_leave_running(p.pid, &img);
    let whole = t0.elapsed();
    fs::remove_file(&img).expect("rm image");
    eprintln!("a whole dump: {whole:?}");
    let mut rng = Rng::from_env("CKPT_KILLSAFE_SEED");
    let mut tries = Vec::new();
    for &(how, leave, n) in plan {
        tries.extend(std::iter::repeat_n((how, leave), n as usize));
    }
    // Interleaved, so no kind of kill meets only one phase of the machine's load.
    for i in (1..tries.len()).rev() {
        tries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let whole_us = whole.as_micros() as u64;
    let started = Instant::now();
    // (label) -> (tries, failures, dumps that completed, ckpt ended by the signal)
    let mut tally: BTreeMap<String, (u32, u32, u32, u32)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (how, leave) in tries {
        // Two kills in three in the first 10 ms (freeze and injected queries), the
        // others anywhere in the dump; a dump that is not left running is killed before
        // it ends.
        let span = if rng.below(3) != 0 { 10_000 } else { whole_us };
        let span = if leave {
            span
        } else {
            span.min(whole_us * 7 / 10)
        };
        let delay = Duration::from_micros(rng.below(span));
        let st = killed_dump(p.pid, &img, how, leave, delay);
        let ended = !st.success() && !leave && committed_then_killed(&img, &mut p);
        let _ = fs::remove_file(&img);
        let e = tally.entry(label(how, leave)).or_default();
        e.0 += 1;
        if ended {
            // Killed after its image was safe, while it was killing the target.
            e.2 += 1;
            (p, before) = spawn_target(&ctx);
            continue;
        }
        if st.success() {
            e.2 += 1;
            if !leave {
                // A complete dump kills the target: start another.
                p.expect_killed();
                (p, before) = spawn_target(&ctx);
            }
            continue;
        }
        // A deferred SIGTERM or SIGINT ends ckpt with 128+N; by the signal only when it
        // came before the dump began (ckpt still starting), which the target's state
        // below tells apart.
        let status_ok = match how {
            How::Signal(sig @ (libc::SIGTERM | libc::SIGINT)) => {
                if st.signal() == Some(sig) {
                    e.3 += 1;
                }
                st.code() == Some(128 + sig) || st.signal() == Some(sig)
            }
            How::Signal(_) => st.signal() == Some(libc::SIGKILL),
            How::CloseStdout => st.code() == Some(128 + libc::SIGPIPE),
        };
        let wrong = check_target(&mut p, &before);
        if !status_ok || wrong.is_some() {
            e.1 += 1;
            failures.push(format!(
                "{} after {delay:?}: ckpt {st:?}{}",
                label(how, leave),
                wrong.map(|w| format!("; {w}")).unwrap_or_default()
            ));
            if p.try_wait().is_some() || tracer_pid(p.pid) != Some(0) {
                p.kill();
            }
            if p.try_wait().is_some() || snapshot(p.pid) != before {
                p.kill();
                (p, before) = spawn_target(&ctx);
            }
        }
    }
    eprintln!("{:?} for the kills", started.elapsed());
    for (k, (n, bad, done, early)) in &tally {
        eprintln!(
            "{k}: {n} tries, {bad} failed, {done} dumps completed first, {early} ended \
             ckpt as it started"
        );
    }
    for f in failures.iter().take(200) {
        eprintln!("  {f}");
    }
    p.kill();
    assert!(
        failures.is_empty(),
        "{} of the killed dumps went wrong (above)",
        failures.len()
    );
}

/// ckpt killed by SIGKILL at each moment of the injected queries where it holds a
/// thread stopped with state it changed (`CKPT_DIE_AT`, a fault-injection hook: after
/// each change of registers or mask and after each stop), one dump per moment, until
/// a dump passes them all: the target runs on as before after every one.
#[test]
fn ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        "killsafe",
    );
}

/// The same with the target's ia32 build (ia32 frames, queries made as ia32 calls).
#[test]
fn ia32_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "ia32_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        "killsafe32",
    );
}

fn every_die_point(test: &str, name: &str) {
    let ctx = Ctx::new(test);
    let img = ctx.path("img");
    let (mut p, mut before) = spawn_sized(&ctx, name, "4");
    let mut failures = Vec::new();
    let mut n = 1u32;
    loop {
        let st = Command::new(ckpt_bin())
            .args(["dump", &p.pid.to_string(), "-o"])
            .arg(&img)
            .arg("--leave-running")
            .env("CKPT_DIE_AT", n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ckpt dump");
        if st.success() {
            break;
        }
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "ckpt at die point {n}: {st:?}"
        );
        if let Some(w) = check_target(&mut p, &before) {
            failures.push(format!("killed at point {n}: {w}"));
            // Go on with a new target.
            p.kill();
            (p, before) = spawn_sized(&ctx, name, "4");
        }
        n += 1;
        assert!(n < 5000, "the dump never got past its die points");
    }
    let _ = fs::remove_file(&img);
    eprintln!("{} die points", n - 1);
    p.kill();
    assert!(
        failures.is_empty(),
        "{} of {} die points went wrong: {failures:#?}",
        failures.len(),
        n - 1
    );
    assert!(n > 50, "only {} die points: is the hook there?", n - 1);
}
