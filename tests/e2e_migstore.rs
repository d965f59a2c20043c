//! The receiver's store of pre-copy rounds (issue 17; `migrate::receive::Store`): each
//! round kept as it came and indexed, the last image opened over them, so that a round
//! costs its own size. A program rewrites pages, unmaps, maps again and moves areas
//! between the rounds (`tests/targets/migrate.c ... churn`, command `u`, sent while
//! `ckpt migrate` lingers after each round); its copy must have every byte of the
//! source at the freeze (its own check of every page) and the source's kernel-visible
//! state (the oracle), and nothing of the store may be left, after success or failure.
//!
//! Needs root. Run with cargo-nextest.

mod common;

use common::migration::*;
use common::twohosts::Net;
use common::*;

/// Pre-copy rounds after the full one: the churn steps keep them shrinking.
const ROUNDS: u32 = 3;

/// Migrate a churning program (`n`: its net and its rate, unique among the tests) with
/// the receiver's environment `recv_env`; `keeps(k)`: how many files the receiver must
/// hold once round `k` is answered. Returns the receiver's JSON line.
fn churned_migration(n: u32, name: &str, recv_env: &[(&str, &str)], keeps: fn(usize) -> usize) {
    let ctx = Ctx::new(name);
    let net = Net::new("cks", 235, n);
    let rate = 40 + n;
    let mut t = source_with(&ctx, 8, rate, &["churn"]);
    let pid = t.pid;
    let tmp = ctx.path("recv-tmp");
    let mut r = receive(&ctx, Some(&net.path()), &net.to(), &tmp, recv_env);
    let mut m = migrate_start(
        &ctx,
        pid,
        &net.to(),
        ROUNDS,
        &[],
        &[
            ("CKPT_DIE_TRACE", "1"),
            ("CKPT_LINGER", "migrate: round sent:3000"),
        ],
    );
    // After each round (answered by the receiver once stored), one churn step.
    let mut store: std::collections::BTreeSet<u64> = Default::default();
    for k in 0..=ROUNDS as usize {
        m.wait_until(&format!("round {k} sent"), |p| {
            p.stderr.text().matches("migrate: round sent").count() > k
        });
        assert!(
            m.stderr.text().matches("migrate: round sent").count() > k,
            "the rounds stopped before round {k}: {}\nreceiver: {}",
            m.stderr.text(),
            r.stderr.text()
        );
        let held: Vec<_> = files_held_in(&tmp)
            .into_iter()
            .filter(|h| h.0 == r.pid || proc_parent(h.0) == Some(r.pid))
            .map(|h| h.1)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            held.len(),
            keeps(k),
            "round {k}: the receiver holds {held:?}"
        );
        store.extend(held.iter().copied());
        t.write_stdin(b"u\n");
        t.wait_for(&format!("churned {k}\n"));
    }
    // Its areas no longer change (only its main area is written, RATE pages a second).
    let shown = oracle::Snapshot::take(pid);
    let fin = m.finish();
    let err = text(&fin.stderr);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&fin.stdout).unwrap_or_default();
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let rounds = v["rounds"].as_array().cloned().unwrap_or_default();
    assert_eq!(rounds.len(), ROUNDS as usize + 2, "rounds: {v}");
    t.expect_killed();
    r.wait_until("receive's JSON", |p| p.stdout.text().contains("restore_ms"));
    let line = r
        .stdout
        .text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let rv: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(
        rv["store_ms"].as_array().map(|a| a.len()),
        Some(ROUNDS as usize + 1),
        "{line}"
    );
    // Every page of the copy, the churn areas' included, is what the source had at
    // the freeze (its own check), and it goes on.
    let a = ask(&mut r);
    assert!(a.ends_with(" ok"), "the restored program answers {a:?}");
    let c = copies(rate);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    // Its areas as the kernel shows them: the unmapped ones gone, the moved one moved,
    // the one mapped again with only its first page.
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        name,
        "a process whose areas were rewritten, unmapped, mapped again and moved between \
         the pre-copy rounds",
        oracle::Cmp::Restored,
        &shown,
        &after,
        RECEIVER_NAMESPACES,
    );
    // The store is gone while the copy runs (its builder and init hold none of it).
    // (The PID namespace's init, which stays as the reaper, still holds the last
    // image, the final delta, which is not the store: left as it was.)
    let held: Vec<_> = files_held_in(&tmp)
        .into_iter()
        .filter(|h| store.contains(&h.1))
        .collect();
    assert!(held.is_empty(), "files of the store still held: {held:?}");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
    assert!(empty_dir(&tmp), "the receiver left files");
}

/// The parent PID of `pid`.
fn proc_parent(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Each round is kept as it came (round k answered: k + 1 files), the last image
/// opened over them.
#[test]
fn rounds_of_rewritten_unmapped_and_moved_pages_arrive_as_at_the_freeze() {
    churned_migration(
        1,
        "rounds_of_rewritten_unmapped_and_moved_pages_arrive_as_at_the_freeze",
        &[],
        |k| k + 1,
    );
}

/// The same with the store merged after every round (its compaction, forced): one
/// full image kept at each answer.
#[test]
fn rounds_merged_into_one_image_each_time_arrive_as_at_the_freeze() {
    churned_migration(
        2,
        "rounds_merged_into_one_image_each_time_arrive_as_at_the_freeze",
        &[("CKPT_RECEIVE_COMPACT", "always")],
        |_| 1,
    );
}

/// A receiver that fails (or is killed, or cut off) with rounds in its store: the
/// source runs on alone, untracked; no file of the store is left or held.
fn store_failure(n: u32, name: &str, recv_env: &[(&str, &str)], says: &str) {
    let ctx = Ctx::new(name);
    let net = Net::new("cks", 235, n);
    let rate = 40 + n;
    let mut t = source_with(&ctx, 8, rate, &["churn"]);
    let tmp = ctx.path("recv-tmp");
    let mut r = receive(&ctx, Some(&net.path()), &net.to(), &tmp, recv_env);
    let m = migrate_to(&ctx, t.pid, &net.to(), ROUNDS, &[], &[]);
    let err = text(&m.stderr);
    eprintln!(
        "migrate: {:?}\n{err}\nreceiver: {}",
        m.status,
        r.stderr.text()
    );
    assert_ne!(m.status.code(), Some(0), "the migration succeeded");
    assert!(
        err.contains(says),
        "migrate's message lacks {says:?}: {err}"
    );
    let st = r.wait();
    assert_ne!(st.code(), Some(0), "receive: {}", r.stderr.text());
    assert_source_runs_alone(&mut t, rate, name);
    let held = files_held_in(&tmp);
    assert!(held.is_empty(), "files of the store still held: {held:?}");
    assert!(
        empty_dir(&tmp),
        "the receiver left files in {}",
        tmp.display()
    );
}

#[test]
fn a_round_that_cannot_be_stored_leaves_the_source_running() {
    store_failure(
        3,
        "a_round_that_cannot_be_stored_leaves_the_source_running",
        &[("CKPT_FAULT", "receive: store a round")],
        "receive: store a round",
    );
}

#[test]
fn a_failed_compaction_leaves_the_source_running() {
    store_failure(
        4,
        "a_failed_compaction_leaves_the_source_running",
        &[
            ("CKPT_RECEIVE_COMPACT", "always"),
            ("CKPT_FAULT", "receive: compact the rounds"),
        ],
        "receive: compact the rounds",
    );
}

#[test]
fn receiver_killed_with_a_round_stored_leaves_the_source_running() {
    store_failure(
        5,
        "receiver_killed_with_a_round_stored_leaves_the_source_running",
        &[("CKPT_DIE_AT", "name:receive: round stored")],
        "",
    );
}

#[test]
fn connection_cut_with_a_round_stored_leaves_the_source_running() {
    store_failure(
        6,
        "connection_cut_with_a_round_stored_leaves_the_source_running",
        &[("CKPT_MIGRATE_CUT", "receive: round stored")],
        "",
    );
}
