//! `ckpt migrate --lazy` (issue 17, post-copy): the receiver's copy runs before the
//! pages written since the last pre-copy round have arrived; it takes them on first
//! touch (asking the source for them first) while the rest come, and the source stays
//! frozen until every page is there. Two network namespaces joined by a veth pair
//! stand for two hosts, as in e2e_migrate (whose helpers these are).
//!
//! The target (`tests/targets/migrate.c`) verifies its whole memory on request: a copy
//! that answers "ok" has the memory of the source at the freeze. Failure points after
//! the commit must leave exactly one copy: the receiver's once every page arrived,
//! else the source (running again, or stopped when its ckpt died), never both, never a
//! copy with pages missing; nothing left on the receiver.
//!
//! Needs root. Run with cargo-nextest.

mod common;

use std::path::Path;
use std::time::Duration;

use common::migration::*;
use common::twohosts::Net;
use common::*;

/// `ckpt receive` in the other namespace, its images kept under `tmp`.
fn receiver(ctx: &Ctx, net: &Net, tmp: &Path, env: &[(&str, &str)]) -> Proc {
    receive(ctx, Some(&net.path()), &net.to(), tmp, env)
}

fn migrate(ctx: &Ctx, pid: i32, net: &Net, env: &[(&str, &str)]) -> Finished {
    migrate_to(ctx, pid, &net.to(), 3, &["--lazy"], env)
}

/// A process writing 2000 pages a second over 32 MiB moves with --lazy, the source
/// sending the last pages slowly (a page a frame, 1 ms apart) so that the copy runs while they
/// come: its memory is the source's at the freeze, it goes on, the source is gone,
/// the receiver kept nothing, and the kernel shows the copy as the source.
#[test]
fn a_lazy_migration_runs_the_copy_before_its_last_pages_came() {
    let ctx = Ctx::new("a_lazy_migration_runs_the_copy_before_its_last_pages_came");
    let net = Net::new("ckp", 234, 1);
    let rate = 3001;
    let mut t = source(&ctx, 32, rate);
    let pid = t.pid;
    let before = ask(&mut t);
    let shown = oracle::Snapshot::take(pid);
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, &[]);
    let m = migrate(&ctx, pid, &net, &[("CKPT_MIGRATE_PUSH_MS", "1")]);
    let err = text(&m.stderr);
    assert_eq!(
        m.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap_or_default();
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    assert_eq!(v["lazy"], true, "{v}");
    let rounds = v["rounds"].as_array().cloned().unwrap_or_default();
    assert_eq!(rounds[rounds.len() - 1]["kind"], "final");
    let post = v["post_copy_bytes"].as_u64().unwrap_or(0);
    assert!(post >= 4096, "no page came after the metadata: {v}");
    assert!(v["post_copy_ms"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert!(v["frozen_ms"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
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
    assert_eq!(rv["lazy"], true, "{line}");
    let a = ask(&mut r);
    assert!(a.ends_with(" ok"), "the restored program answers {a:?}");
    assert!(count_of(&a) > count_of(&before), "{before:?} then {a:?}");
    std::thread::sleep(Duration::from_millis(300));
    let b = ask(&mut r);
    assert!(
        b.ends_with(" ok") && count_of(&b) > count_of(&a),
        "{a:?} then {b:?}"
    );
    let c = copies(rate);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    // Every page is in: nothing of the lazy restore is left in the copy (no area
    // still registered for missing pages).
    wait_for(
        "the copy's areas unregistered",
        Duration::from_secs(20),
        || {
            !std::fs::read_to_string(format!("/proc/{}/smaps", c[0].0))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
        },
    );
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        "migrated-lazy",
        "a process migrated with --lazy into another network namespace, received with \
         --new-pidns",
        oracle::Cmp::Restored,
        &shown,
        &after,
        &[
            "*.ns.net",
            "*.ns.pid",
            "*.ns.pid.parent",
            "*.ns.pid_for_children",
            "*.ns.mnt",
            "*.mountinfo",
            "*.fdinfo.mnt_id",
        ],
    );
    assert!(
        empty_dir(&tmp),
        "the receiver left files in {}",
        tmp.display()
    );
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
}

/// How a failure case ends.
#[derive(PartialEq, Debug)]
enum Expect {
    /// The source runs on, alone, untracked; the receiver's copy is gone.
    SourceRuns,
    /// No copy runs: the source is kept stopped (its ckpt died after COMMIT), the
    /// receiver's copy was killed for want of pages; SIGCONT resumes the source.
    SourceStoppedAlone,
}

/// One failure with pages still to send (the source sends one page every 300 ms):
/// `says` must be in migrate's message (unless it was killed).
fn failure_case(
    n: u32,
    name: &str,
    sender_env: &[(&str, &str)],
    recv_env: &[(&str, &str)],
    expect: Expect,
    says: &str,
) {
    let ctx = Ctx::new(name);
    let net = Net::new("ckp", 234, n);
    let rate = 3000 + n;
    let mut t = source(&ctx, 8, rate);
    let pid = t.pid;
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, recv_env);
    let mut env = vec![("CKPT_MIGRATE_PUSH_MS", "300")];
    env.extend_from_slice(sender_env);
    let m = migrate(&ctx, pid, &net, &env);
    let err = text(&m.stderr);
    eprintln!(
        "migrate: {:?}\n{err}\nreceiver: {}",
        m.status,
        r.stderr.text()
    );
    assert_ne!(m.status.code(), Some(0), "the migration succeeded");
    if m.status.code().is_some() {
        assert!(
            err.contains(says),
            "migrate's message lacks {says:?}: {err}"
        );
    }
    // The receiver ends with its copy killed (or never run), and nothing left.
    let st = r.wait();
    assert_ne!(st.code(), Some(0), "receive: {}", r.stderr.text());
    match expect {
        Expect::SourceRuns => assert_source_runs_alone(&mut t, rate, name),
        Expect::SourceStoppedAlone => {
            wait_for("the source stops", Duration::from_secs(10), || {
                proc_stat(pid).is_some_and(|s| s.0 == 'T')
            });
            wait_for(
                "the receiver's copy is gone",
                Duration::from_secs(20),
                || copies(rate).len() == 1,
            );
            let c = copies(rate);
            assert_eq!(c, vec![(pid, 'T')], "copies: {c:?}");
            let _ = send_signal(pid, libc::SIGCONT);
            assert_source_runs_alone(&mut t, rate, name);
        }
    }
    assert!(
        empty_dir(&tmp),
        "the receiver left files in {}",
        tmp.display()
    );
}

/// The connection is cut once the receiver's copy runs, pages still unsent: the copy
/// there is killed (it cannot get them), and the source, after waiting long enough
/// for that, runs on.
#[test]
fn lazy_connection_cut_with_pages_missing_kills_the_copy_and_the_source_runs_on() {
    failure_case(
        2,
        "lazy_connection_cut_with_pages_missing_kills_the_copy_and_the_source_runs_on",
        &[("CKPT_MIGRATE_CUT", "migrate: committed")],
        &[],
        Expect::SourceRuns,
        "had not been sent",
    );
}

/// The receiver's ckpt dies after its commit, pages still missing: its copy dies with
/// it; the source runs on.
#[test]
fn lazy_receiver_killed_after_commit_with_pages_missing_the_source_runs_on() {
    failure_case(
        3,
        "lazy_receiver_killed_after_commit_with_pages_missing_the_source_runs_on",
        &[],
        &[("CKPT_DIE_AT", "name:receive: committed")],
        Expect::SourceRuns,
        "had not been sent",
    );
}

/// The source's ckpt dies right after COMMIT: the receiver's copy never gets its
/// pages and is killed; the source stays stopped (never two copies), and SIGCONT
/// resumes it whole.
#[test]
fn lazy_sender_killed_after_commit_leaves_the_source_stopped_and_no_copy() {
    failure_case(
        4,
        "lazy_sender_killed_after_commit_leaves_the_source_stopped_and_no_copy",
        &[("CKPT_DIE_AT", "name:migrate: commit sent")],
        &[],
        Expect::SourceStoppedAlone,
        "",
    );
}

/// Cut before the commit (the final image sent, pages not): the receiver restores
/// nothing, the source runs on.
#[test]
fn lazy_connection_cut_before_commit_leaves_the_source_running() {
    failure_case(
        5,
        "lazy_connection_cut_before_commit_leaves_the_source_running",
        &[("CKPT_MIGRATE_CUT", "migrate: final sent")],
        &[],
        Expect::SourceRuns,
        "connection",
    );
}
