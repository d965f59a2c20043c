//! `ckpt migrate` to `ckpt receive` (issue 17, part 2): pre-copy over TCP between two
//! network namespaces joined by a veth pair (made and removed by each test), standing
//! for two hosts. The receiver restores with `--new-pidns` (both "hosts" share one PID
//! namespace here, where the source's PIDs are still taken while it is frozen).
//!
//! The target (`tests/targets/migrate.c`) writes pages all the time; its memory is a
//! function of its step count, which it verifies on request ("c"): a restored copy
//! that answers "ok" has the memory of the source at the freeze. Failure points (each
//! side killed at each phase, the connection cut, a plan refusal) must leave exactly
//! one copy of the process running, and nothing on the receiver.
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
    migrate_to(ctx, pid, &net.to(), 3, &[], env)
}

/// A process writing 2000 pages a second over 32 MiB moves; the copy has the
/// source's memory at the freeze (its own check against its step count) and goes on;
/// the source is gone; the receiver kept nothing; --json is parsed.
#[test]
fn a_writing_process_moves_to_the_other_namespace_with_its_memory() {
    let ctx = Ctx::new("a_writing_process_moves_to_the_other_namespace_with_its_memory");
    let net = Net::new("ckm", 231, 1);
    let rate = 2001;
    let mut t = source(&ctx, 32, rate);
    let pid = t.pid;
    let before = ask(&mut t);
    // What the kernel shows of the source (it writes all the time: what moves between
    // two reads is not judged).
    let shown = oracle::Snapshot::take(pid);
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, &[]);
    let m = migrate(&ctx, pid, &net, &[]);
    let err = text(&m.stderr);
    assert_eq!(
        m.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap_or_default();
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let rounds = v["rounds"].as_array().cloned().unwrap_or_default();
    assert!(rounds.len() >= 2, "rounds: {v}");
    assert_eq!(rounds[0]["kind"], "full");
    assert_eq!(rounds[rounds.len() - 1]["kind"], "final");
    assert!(rounds[0]["pages"].as_u64().unwrap_or(0) >= 8192, "{v}");
    for r in &rounds {
        assert!(
            r["bytes"].as_u64().is_some() && r["dump_ms"].as_f64().is_some(),
            "{r}"
        );
    }
    let sent = v["bytes_sent"].as_u64().unwrap_or(0);
    assert!(sent > 32 << 20, "bytes_sent {sent}");
    assert!(v["frozen_ms"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    // Its areas did not change after the last round: the final dump kept the VmFlags
    // read before the freeze (where this kernel lets ckpt read the write-lock count).
    if !err.contains("no early read") {
        assert_eq!(v["early_smaps"].as_u64(), Some(1), "{v}\n{err}");
    }
    let restored = v["restored_pid"].as_i64().unwrap_or(0) as i32;
    assert!(restored > 0, "{v}");
    t.expect_killed();
    // The receiver's --json line, before the program's own output.
    r.wait_until("receive's JSON", |p| p.stdout.text().contains("restore_ms"));
    let line = r
        .stdout
        .text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let rv: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert_eq!(rv["pid"].as_i64(), Some(i64::from(restored)), "{line}");
    assert_eq!(rv["rounds"].as_u64(), Some(rounds.len() as u64), "{line}");
    assert!(
        rv["bytes_received"].as_u64().unwrap_or(0) > 32 << 20,
        "{line}"
    );
    assert!(rv["restore_ms"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
    // The copy: its memory is the source's at the freeze, and it goes on writing.
    let a = ask(&mut r);
    assert!(a.ends_with(" ok"), "the restored program answers {a:?}");
    assert!(count_of(&a) > count_of(&before), "{before:?} then {a:?}");
    std::thread::sleep(Duration::from_millis(300));
    let b = ask(&mut r);
    assert!(
        b.ends_with(" ok") && count_of(&b) > count_of(&a),
        "{a:?} then {b:?}"
    );
    // In the other network namespace, the only copy.
    let c = copies(rate);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    let ns = |p: String| std::fs::read_link(p).unwrap_or_default();
    assert_eq!(
        ns(format!("/proc/{}/ns/net", c[0].0)),
        ns(format!("/proc/{}/ns/net", r.pid)),
        "the copy is not in the receiver's network namespace"
    );
    assert_ne!(
        ns(format!("/proc/{}/ns/net", c[0].0)),
        ns("/proc/self/ns/net".into())
    );
    // The copy as the kernel shows it, against the source's (IDs as the copy's PID
    // namespace sees them).
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        "migrated",
        "a process migrated into another network namespace, received with --new-pidns",
        oracle::Cmp::Restored,
        &shown,
        &after,
        &[
            // The receiver's own namespaces: its network namespace, the new PID
            // namespace --new-pidns makes, and the mount namespace its init made to
            // mount that namespace's /proc (the descriptors' mounts are then another
            // namespace's).
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
    // Its rounds' images, and the final one (in /dev/shm when /run is on a disk).
    for (dir, prefix) in [
        ("/run/ckpt/migrate", format!("{pid}-")),
        ("/dev/shm", format!("ckpt-migrate-{pid}-")),
    ] {
        assert!(
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with(&prefix)),
            "the source left its images in {dir}"
        );
    }
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
}

/// How a failure case ends.
#[derive(PartialEq, Debug)]
enum Expect {
    /// The source runs on, alone, untracked; the receiver restored nothing.
    SourceRuns,
    /// The receiver's copy runs; the source is kept stopped.
    CopyRunsSourceStopped,
}

/// One failure: `says` must be in migrate's message (unless it was killed).
fn failure_case(
    n: u32,
    name: &str,
    sender_env: &[(&str, &str)],
    recv_env: &[(&str, &str)],
    expect: Expect,
    says: &str,
) {
    let ctx = Ctx::new(name);
    let net = Net::new("ckm", 231, n);
    let rate = 2000 + n;
    let mut t = source(&ctx, 8, rate);
    let pid = t.pid;
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, recv_env);
    let m = migrate(&ctx, pid, &net, sender_env);
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
    match expect {
        Expect::SourceRuns => {
            // The receiver ends with nothing restored, and nothing left.
            let st = r.wait();
            assert_ne!(st.code(), Some(0), "receive: {}", r.stderr.text());
            assert_source_runs_alone(&mut t, rate, name);
        }
        Expect::CopyRunsSourceStopped => {
            wait_for("the source stops", Duration::from_secs(10), || {
                proc_stat(pid).is_some_and(|s| s.0 == 'T')
            });
            let c = copies(rate);
            let running: Vec<_> = c.iter().filter(|x| x.1 != 'T').collect();
            assert_eq!(running.len(), 1, "copies: {c:?}");
            assert_ne!(running[0].0, pid, "copies: {c:?}");
            wait_for(
                "the stopped source is untracked",
                Duration::from_secs(10),
                || !tracked(pid),
            );
            if m.status.code() == Some(3) {
                assert!(
                    err.contains("kill -KILL") && err.contains("kill -CONT"),
                    "{err}"
                );
            }
            let _ = send_signal(running[0].0, libc::SIGKILL);
            t.kill();
        }
    }
    assert!(
        empty_dir(&tmp),
        "the receiver left files in {}",
        tmp.display()
    );
}

#[test]
fn receiver_killed_after_the_first_round_leaves_the_source_running() {
    failure_case(
        2,
        "receiver_killed_after_the_first_round_leaves_the_source_running",
        &[],
        &[("CKPT_DIE_AT", "name:receive: image received")],
        Expect::SourceRuns,
        "connection",
    );
}

#[test]
fn receiver_killed_after_plan_leaves_the_source_running() {
    failure_case(
        3,
        "receiver_killed_after_plan_leaves_the_source_running",
        &[],
        &[("CKPT_DIE_AT", "name:receive: planned")],
        Expect::SourceRuns,
        "connection",
    );
}

#[test]
fn sender_killed_after_a_round_leaves_the_source_running_untracked() {
    failure_case(
        4,
        "sender_killed_after_a_round_leaves_the_source_running_untracked",
        &[("CKPT_DIE_AT", "name:migrate: round sent")],
        &[],
        Expect::SourceRuns,
        "",
    );
}

#[test]
fn sender_killed_with_the_tree_frozen_before_commit_leaves_the_source_running() {
    failure_case(
        5,
        "sender_killed_with_the_tree_frozen_before_commit_leaves_the_source_running",
        &[("CKPT_DIE_AT", "name:migrate: staged")],
        &[],
        Expect::SourceRuns,
        "",
    );
}

#[test]
fn connection_cut_during_the_rounds_leaves_the_source_running() {
    failure_case(
        6,
        "connection_cut_during_the_rounds_leaves_the_source_running",
        &[("CKPT_MIGRATE_CUT", "migrate: round sent")],
        &[],
        Expect::SourceRuns,
        "connection",
    );
}

#[test]
fn connection_cut_with_the_final_image_sent_leaves_the_source_running() {
    failure_case(
        7,
        "connection_cut_with_the_final_image_sent_leaves_the_source_running",
        &[("CKPT_MIGRATE_CUT", "migrate: final sent")],
        &[],
        Expect::SourceRuns,
        "connection",
    );
}

/// The receiver cannot restore it (a kernel facility masked there): plan's refusal
/// comes back to the source with its message, and the source runs on.
#[test]
fn plan_refusal_on_the_receiver_comes_back_and_the_source_runs_on() {
    failure_case(
        8,
        "plan_refusal_on_the_receiver_comes_back_and_the_source_runs_on",
        &[],
        &[("CKPT_HOST_MASK", "no-kernel=clone3-set-tid")],
        Expect::SourceRuns,
        "the receiver cannot restore it",
    );
}

/// The sender dies right after telling the receiver to commit: the copy runs there,
/// the source stays stopped (the SIGSTOP armed before COMMIT), never two copies.
#[test]
fn sender_killed_after_commit_leaves_one_copy_and_the_source_stopped() {
    failure_case(
        9,
        "sender_killed_after_commit_leaves_one_copy_and_the_source_stopped",
        &[("CKPT_DIE_AT", "name:migrate: commit sent")],
        &[],
        Expect::CopyRunsSourceStopped,
        "",
    );
}

/// The receiver dies after its commit, before its confirmation: the source cannot
/// know, keeps its tree stopped and says how to resolve it (exit 3).
#[test]
fn confirmation_lost_keeps_the_source_stopped_and_says_how_to_resolve() {
    failure_case(
        10,
        "confirmation_lost_keeps_the_source_stopped_and_says_how_to_resolve",
        &[],
        &[("CKPT_DIE_AT", "name:receive: committed")],
        Expect::CopyRunsSourceStopped,
        "STOPPED",
    );
}

/// A process with a TCP connection over the loopback interface is refused when the
/// receiver is in another network namespace (its peer cannot follow), naming it: it
/// runs on, untracked, its connection still there; the receiver restores nothing.
/// (Connections that can move are tested in `tests/e2e_migtcp.rs`.)
#[test]
fn a_process_with_a_tcp_connection_is_refused_and_runs_on() {
    let ctx = Ctx::new("a_process_with_a_tcp_connection_is_refused_and_runs_on");
    let net = Net::new("ckm", 231, 11);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let code = format!(
        "import socket,sys\ns=socket.create_connection(('127.0.0.1',{port}))\n\
         print('ready',flush=True)\nfor line in sys.stdin:\n    s.sendall(line.encode())\n"
    );
    let spec = Spec::new(python3())
        .arg("-c")
        .arg(code)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let (mut peer, _) = l.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, &[]);
    let m = migrate(&ctx, t.pid, &net, &[]);
    let err = text(&m.stderr);
    assert_eq!(m.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TCP connection") && err.contains(&format!("process {}", t.pid)),
        "{err}"
    );
    assert_ne!(r.wait().code(), Some(0), "receive: {}", r.stderr.text());
    assert!(
        empty_dir(&tmp),
        "the receiver left files in {}",
        tmp.display()
    );
    let pid = t.pid;
    wait_for("untracked", Duration::from_secs(10), || !tracked(pid));
    assert_running_untraced(pid, "after the refusal");
    // The connection still carries data.
    t.write_stdin(b"still here\n");
    let mut buf = [0u8; 11];
    std::io::Read::read_exact(&mut peer, &mut buf).unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(&buf, b"still here\n");
}

#[test]
fn sender_killed_with_the_final_image_sent_leaves_the_source_running() {
    failure_case(
        12,
        "sender_killed_with_the_final_image_sent_leaves_the_source_running",
        &[("CKPT_DIE_AT", "name:migrate: final sent")],
        &[],
        Expect::SourceRuns,
        "",
    );
}

/// `ckpt migrate` in the background, lingering MS milliseconds once it read the tree's
/// VmFlags before the freeze (the final dump's early read, `kinds::mem::early`).
fn migrate_lingering(ctx: &Ctx, pid: i32, net: &Net, ms: u64, env: &[(&str, &str)]) -> Proc {
    let linger = format!("migrate: early VmFlags read:{ms}");
    let mut spec = Spec::new(ckpt_bin())
        .arg("migrate")
        .arg(pid.to_string())
        .arg(net.to())
        .arg("--rounds")
        .arg("2")
        .arg("--json")
        .env("CKPT_DIE_TRACE", "1")
        .env("CKPT_LINGER", &linger)
        .cwd(&ctx.dir);
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    ctx.spawn(&spec)
}

/// The program changes its areas after the last pre-copy round, once ckpt read their
/// VmFlags early (madvise HUGEPAGE, DONTFORK, WIPEONFORK, DONTDUMP and mlock of whole
/// areas, which only VmFlags show; mprotect, mremap; MADV_DONTNEED of two pages). The
/// copy: the source's VmFlags and areas at the freeze as the oracle reads them from
/// /proc/PID/smaps, the dropped pages zero and every other byte right (its own check);
/// the final dump did not take the early read (`early_smaps` 0). Returns the oracle's
/// verdict; `force`: the detector's answer forced to "unchanged"
/// (CKPT_EARLY_SMAPS=always), where the migration may also fail.
fn flags_changed_before_the_freeze(n: u32, name: &str, force: bool) -> Result<(), String> {
    let ctx = Ctx::new(name);
    let net = Net::new("ckm", 231, n);
    let rate = 2000 + n;
    let mut t = source_with(&ctx, 8, rate, &["areas"]);
    let pid = t.pid;
    let tmp = ctx.path("recv-tmp");
    let mut r = receiver(&ctx, &net, &tmp, &[]);
    let env: &[(&str, &str)] = if force {
        &[("CKPT_EARLY_SMAPS", "always")]
    } else {
        &[]
    };
    let mut m = migrate_lingering(&ctx, pid, &net, 5000, env);
    m.wait_until("read the VmFlags early", |p| {
        p.stderr.text().contains("die point") && p.stderr.text().contains("early VmFlags read")
    });
    t.write_stdin(b"f\n");
    t.wait_for("flags done\n");
    // The source as it is frozen: nothing changes its areas any more.
    let shown = oracle::Snapshot::take(pid);
    let fin = m.finish();
    let err = text(&fin.stderr);
    if force && fin.status.code() != Some(0) {
        t.kill();
        return Err(format!("the migration failed: {err}"));
    }
    assert_eq!(
        fin.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&fin.stdout).unwrap_or_default();
    if !force {
        assert_eq!(v["early_smaps"].as_u64(), Some(0), "{v}");
    }
    t.expect_killed();
    let restored = v["restored_pid"].as_i64().unwrap_or(0);
    assert!(restored > 0, "{v}");
    let a = ask(&mut r);
    assert!(a.ends_with(" ok"), "the restored program answers {a:?}");
    let c = copies(rate);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    let verdict = oracle::same_kernel_state(
        name,
        "a process whose areas changed between the early VmFlags read and the freeze",
        oracle::Cmp::Restored,
        &shown,
        &after,
        RECEIVER_NAMESPACES,
    );
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
    assert!(empty_dir(&tmp), "the receiver left files");
    verdict
}

#[test]
fn areas_changed_after_the_last_round_come_back_as_they_were_at_the_freeze() {
    let name = "areas_changed_after_the_last_round_come_back_as_they_were_at_the_freeze";
    if let Err(e) = flags_changed_before_the_freeze(13, name, false) {
        panic!("{e}");
    }
}

/// The test above can fail: with the detector's answer forced to "unchanged", the
/// copy's VmFlags are those of the early read (or the migration fails).
#[test]
fn areas_changed_after_the_last_round_are_lost_when_the_detector_is_forced() {
    let name = "areas_changed_after_the_last_round_are_lost_when_the_detector_is_forced";
    let e = flags_changed_before_the_freeze(14, name, true)
        .expect_err("the copy has the source's areas although the early read was forced");
    eprintln!("as expected: {e}");
    assert!(
        e.contains("VmFlags") || e.contains("migration failed"),
        "{e}"
    );
}
