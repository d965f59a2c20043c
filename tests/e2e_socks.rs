//! End-to-end tests of sockets beyond stream unix pairs and TCP: unix datagram and
//! seqpacket socket pairs with messages queued both ways (read at dump without consuming
//! them, so a process dumped with `--leave-running` still gets every message), UDP
//! sockets, and descriptors leading outside the tree given back with `--inherit-fd`.
//! Each run is compared byte for byte with an uninterrupted run's output.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use serde_json::Value;

use common::*;

/// The socket pairs of an image by type: (type, messages queued to end 0, to end 1).
fn pair_queues(j: &Value) -> Vec<(i64, usize, usize)> {
    j["socketpairs"]
        .as_array()
        .unwrap_or_else(|| panic!("no socketpairs array in the image: {j}"))
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_array().map(|a| a.len()).unwrap_or(0);
            (p["typ"].as_i64().unwrap_or(-1), n("msgs0"), n("msgs1"))
        })
        .collect()
}

fn assert_messages_queued_both_ways(ctx: &Ctx, img: &std::path::Path, what: &str) {
    let mut q = pair_queues(&ctx.inspect_json(img));
    q.sort();
    assert_eq!(
        q.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![libc::SOCK_DGRAM as i64, libc::SOCK_SEQPACKET as i64],
        "{what}: the image should hold one datagram and one seqpacket pair: {q:?}"
    );
    for (typ, a, b) in q {
        assert!(
            a >= 2 && b >= 2,
            "{what}: messages should be queued both ways on the pair of type {typ}: \
             {a} to end 0, {b} to end 1"
        );
    }
}

#[test]
fn unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways() {
    let ctx = Ctx::new("unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways");
    const STEPS: u32 = 150;
    const AHEAD: u32 = 5;
    let spec = Spec::new(target("dgsock"))
        .arg(STEPS.to_string())
        .arg(AHEAD.to_string())
        .arg("sleep=15");
    let mut rp = ctx.spawn(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(15);
    let pids = wait_process_tree(t.pid, 2, "dgsock");
    for &p in &pids {
        ctx.track(p);
    }
    // First a dump that lets the tree run on: reading the queues must not consume them,
    // or the original's output (compared below with the reference) loses messages.
    let live = ctx.path("dgsock-live.img");
    ctx.dump_leave_running(t.pid, &live);
    assert_messages_queued_both_ways(&ctx, &live, "dgsock (--leave-running)");
    let n = t.stdout.lines();
    t.wait_lines(n + 15);
    // Then the real one.
    let img = ctx.path("dgsock.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("dgsock: original");
    wait_pids_gone(&pids, "dgsock: original after the dump");
    assert!(
        text(&before).lines().count() < STEPS as usize - AHEAD as usize,
        "dgsock: the dump came too late:\n{}",
        text(&before)
    );
    assert_messages_queued_both_ways(&ctx, &img, "dgsock");
    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "dgsock: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert!(
        text(&reference.stdout).contains("sndbuf 100000, passcred 1; child exited with 0"),
        "dgsock: the reference run did not keep its options:\n{}",
        text(&reference.stdout)
    );
    assert_tree_finished_like_reference(
        "dgsock (dumped twice, restored)",
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}
