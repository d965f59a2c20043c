//! Unix sockets in the states a program leaves them in (issues 13 and 14): ends shut
//! down one way or both, connections accepted by a listener (whose name the accepted
//! end shows without holding it), clients bound to their own name, ends autobound by
//! SO_PASSCRED, a connection waiting in a listener's queue, descriptors in flight
//! inside SCM_RIGHTS messages that the tree holds (on pairs of every type and to a
//! named datagram socket); and the states dump refuses, naming the descriptor, while
//! the program runs on: connections waiting to be accepted whose client
//! sent descriptors or is outside the tree. A stream message carrying descriptors
//! after other bytes comes back in place (the BPF socket reader shows where it begins).
//! Names relative to the working directory they were bound
//! in come back relative (bound again from that directory), or are refused when no
//! process's working directory leads to them any more.
//!
//! Queued messages and stream bytes keep their senders' credentials (SCM_CREDENTIALS).
//!
//! Each restore is compared with the original by the state oracle (sock_diag state,
//! shutdown, names, peers, queues: run inside `Ctx::dump` and `Ctx::restore`) and by
//! what the program does afterwards, against an undisturbed run.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::*;

/// A short directory for socket files (sun_path holds 108 bytes), removed at the end.
struct SockDir(std::path::PathBuf);

impl SockDir {
    fn new(what: &str) -> Self {
        let d = std::path::PathBuf::from(format!("/tmp/ckpt-e2e-{what}-{}", my_pid()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir socket dir");
        SockDir(d)
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `ushut` in `dir`, with abstract names starting with `name`.
fn ushut(dir: &SockDir, name: &str) -> Spec {
    Spec::new(target("ushut"))
        .arg(&dir.0)
        .arg(name)
        .stdin(In::Pipe)
}

#[test]
fn shut_down_accepted_and_autobound_unix_sockets_come_back_as_they_were() {
    let ctx = Ctx::new("shut_down_accepted_and_autobound_unix_sockets_come_back_as_they_were");
    // An undisturbed run.
    let rdir = SockDir::new("ushut-ref");
    let mut rp = ctx.spawn(&ushut(&rdir, &format!("ckpt-e2e-ushut-{}-ref", my_pid())));
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "ushut: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let expected = text(&reference.stdout).replacen("ready\n", "", 1);
    // The behaviour this test is about, as the kernel gives it undisturbed.
    for line in [
        "C: K's name right, K's peer right",
        "C: K reads [from-a]",
        "C: K reads again [end of file]",
        "C: sp reads again [end of file]",
        "C: q reads [end of file]",
        "C: d reads [m1] from P's autobound name",
        "C: d's peer right",
        "P: A's name right, A's peer right",
        "P: A sends: Broken pipe",
        "P: A2's name right, A2's peer unnamed (right)",
        "P: sp sends: Broken pipe",
        "P: q sends: Broken pipe",
        "P: d's name right",
        "P: a message to G: Broken pipe",
        "P: accepted, named right and right",
        "C: K3's peer right, K3 sends: sent",
        "P: L2's waiting client, named right, says [from-k3]",
        "P: A4's name right",
        "P: a new socket binds NAME-l3: yes",
    ] {
        assert!(
            expected.contains(line),
            "ushut: the reference run should say {line:?}:\n{expected}"
        );
    }

    let dir = SockDir::new("ushut-run");
    let mut t = ctx.spawn(&ushut(&dir, &format!("ckpt-e2e-ushut-{}-run", my_pid())));
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "ushut");
    let img = ctx.path("ushut.img");
    // The oracle compares the restored tree's sockets (state, shutdown, names, peers,
    // queues) with these, as soon as it runs.
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "ushut: original after the dump");
    let j = ctx.inspect_json(&img);
    let pairs = j["socketpairs"].as_array().cloned().unwrap_or_default();
    let accepted = pairs.iter().filter(|p| !p["accepted"].is_null()).count();
    let shut = pairs
        .iter()
        .filter(|p| p["shutdown"] != serde_json::json!([0, 0]))
        .count();
    assert_eq!(
        (pairs.len(), accepted, shut),
        (6, 3, 3),
        "ushut: six pairs, three of them accepted connections, three shut down: {pairs:?}"
    );
    let waiting = j["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|p| p["fds"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["kind"].get("UnixPending").is_some())
        .count();
    assert_eq!(waiting, 1, "ushut: one connection waiting to be accepted");
    // Restores failing at each step that builds these sockets leave no process behind
    // and hold no name (the temporary listener's included): the last one succeeds.
    for step in [
        "socket(AF_UNIX) to accept a connection",
        "listen to accept a connection",
        "connect to unix socket",
        "accept4",
        "shutdown",
        "socket(AF_UNIX) to wait to be accepted",
        "connect unix socket",
        "bind unix socket @",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &pids, &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ushut: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        "ushut: the restored run after the dump point",
        expected.as_bytes(),
        &fin.stdout,
    );
}

/// `urefuse MODE` is refused at dump, with a message naming the process, the descriptor
/// and each of `words`; nothing is written and the program runs on, untraced, to the
/// end an undisturbed run reaches (what was in flight or waiting is still there).
fn refused(name: &str, mode: &str, words: &[&str]) {
    refused_with(name, mode, words, false)
}

/// [`refused`]; with `client`, the test connects a client of its own (outside the tree)
/// to the program's listener DIR/l.sock once it is ready, in both runs.
fn refused_with(name: &str, mode: &str, words: &[&str], client: bool) {
    let ctx = Ctx::new(name);
    let spec = |dir: &SockDir| Spec::new(target("urefuse")).arg(mode).arg(&dir.0).arg("60");
    let rdir = SockDir::new(&format!("urefuse-{mode}-ref"));
    let connect = |dir: &SockDir| {
        client.then(|| {
            std::os::unix::net::UnixStream::connect(dir.0.join("l.sock"))
                .expect("connect to the program's listener")
        })
    };
    let mut rp = ctx.spawn(&spec(&rdir));
    rp.wait_for("ready\n");
    let _rclient = connect(&rdir);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "urefuse {mode}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let dir = SockDir::new(&format!("urefuse-{mode}-run"));
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("ready\n");
    let _client = connect(&dir);
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("img");
    let r = ctx.try_dump(pid, &img);
    refused_runs_on(
        t,
        (r.status.code(), &r.stderr),
        &img,
        words,
        &reference.stdout,
        &format!("urefuse {mode}"),
    );
}

/// After a dump of `t` to `img` that ended with `(status, stderr)`: it was refused, with
/// a message naming the process and each of `words` (a word with `|` in it: one of its
/// alternatives); nothing was written and the program runs on, untraced, to the end an
/// undisturbed run reaches (`reference`, its output).
fn refused_runs_on(
    mut t: Proc,
    (status, err): (Option<i32>, &str),
    img: &std::path::Path,
    words: &[&str],
    reference: &[u8],
    what: &str,
) {
    assert_eq!(
        status,
        Some(1),
        "{what}: the dump should be refused; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for w in std::iter::once("cannot dump process ").chain(words.iter().copied()) {
        assert!(
            w.split('|').any(|alt| err.contains(alt)),
            "{what}: the refusal should say {w:?}:\n{err}"
        );
    }
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    assert_running_untraced(t.pid, "the program after the refused dump");
    let fin = t.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{what}: exit status after the refused dump; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        &format!("{what} after the refused dump"),
        reference,
        &fin.stdout,
    );
}

/// `urefuse stream-boundary`: "aa", then "bbbb" carrying the socket itself, on a stream
/// pair. A peek reads the six bytes and the descriptor at once; the BPF socket reader
/// shows the two messages, so the descriptor comes back on "bbbb": one-byte reads of
/// the restored program bring "a", "a" alone and then "b" with the descriptor, as an
/// undisturbed run's do (the oracle compares the pair and its queues).
#[test]
fn descriptors_in_flight_after_other_bytes_on_a_unix_stream_pair_come_back_in_place() {
    let ctx = Ctx::new(
        "descriptors_in_flight_after_other_bytes_on_a_unix_stream_pair_come_back_in_place",
    );
    let spec = |dir: &SockDir| {
        Spec::new(target("urefuse"))
            .arg("stream-boundary")
            .arg(&dir.0)
            .arg("60")
    };
    let rdir = SockDir::new("urefuse-boundary-ref");
    let reference = ctx.spawn(&spec(&rdir)).finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "urefuse stream-boundary: reference run"
    );
    assert!(
        text(&reference.stdout).contains("read 2: [b] with a descriptor"),
        "urefuse stream-boundary: the reference run:\n{}",
        text(&reference.stdout)
    );
    let dir = SockDir::new("urefuse-boundary-run");
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("step 3\n");
    let img = ctx.path("boundary.img");
    ctx.track(t.pid);
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("urefuse stream-boundary: original");
    wait_pids_gone(&[t.pid], "urefuse stream-boundary: original after the dump");
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        "urefuse stream-boundary (restored)",
        &reference.stdout,
        before,
        &fin,
        &[t.pid],
    );
}

/// `uflight MODE` dumped mid-run, restored, and finishing as an undisturbed run does:
/// each read brings the same bytes and the same descriptor as there (the oracle
/// compares the sockets and their queues).
fn in_flight_restored(name: &str, mode: &str, expected: &[&str]) {
    let ctx = Ctx::new(name);
    let spec = |dir: &SockDir| Spec::new(target("uflight")).arg(mode).arg(&dir.0).arg("60");
    let rdir = SockDir::new(&format!("uflight-{mode}-ref"));
    let reference = ctx.spawn(&spec(&rdir)).finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "uflight {mode}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    for line in expected {
        assert!(
            text(&reference.stdout).contains(line),
            "uflight {mode}: the reference run should say {line:?}:\n{}",
            text(&reference.stdout)
        );
    }
    let dir = SockDir::new(&format!("uflight-{mode}-run"));
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("step 3\n");
    let pids = wait_process_tree(t.pid, if mode == "stream" { 2 } else { 1 }, "uflight");
    let img = ctx.path("uflight.img");
    ctx.track(t.pid);
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("uflight: original");
    wait_pids_gone(&pids, "uflight: original after the dump");
    // A socket in flight on itself outlives its killed process until the kernel's unix
    // garbage collector frees the cycle (a moment later); until then its name is bound
    // and restore refuses it, saying so.
    let bound = |p: &std::path::Path| {
        std::fs::read_to_string("/proc/net/unix")
            .unwrap_or_default()
            .lines()
            .any(|l| l.ends_with(&*p.to_string_lossy()))
    };
    let deadline = std::time::Instant::now() + timeout();
    for name in ["g.sock", "h.sock"] {
        while bound(&dir.0.join(name)) {
            assert!(
                std::time::Instant::now() < deadline,
                "uflight {mode}: {name} stayed bound after the dump"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take descriptor", &pids, &[]);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        &format!("uflight {mode} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

#[test]
fn descriptors_in_flight_on_a_unix_stream_pair_come_back_with_their_bytes() {
    in_flight_restored(
        "descriptors_in_flight_on_a_unix_stream_pair_come_back_with_their_bytes",
        "stream",
        &[
            "C: read 0: [x] with the pipe's read end",
            "C: read 1: [y] with the socket itself",
            "C: read 2: [zz] with no descriptor",
        ],
    );
}

#[test]
fn descriptors_in_flight_to_a_named_unix_datagram_socket_come_back() {
    in_flight_restored(
        "descriptors_in_flight_to_a_named_unix_datagram_socket_come_back",
        "named",
        &[
            "g: message 0: [pipe] with the pipe's read end",
            "g: message 1: [self] with the socket itself",
            "g: message 2: [plain] with no descriptor",
        ],
    );
}

#[test]
fn a_unix_listener_with_a_client_that_sent_descriptors_refuses_the_dump() {
    refused(
        "a_unix_listener_with_a_client_that_sent_descriptors_refuses_the_dump",
        "backlog",
        &[
            "file descriptor 3",
            "waiting to be accepted whose client (descriptor 4 of process",
            "already sent data",
            "carries descriptors (SCM_RIGHTS)",
        ],
    );
}

/// `ubacklog TYPE`: a listener with four connections waiting to be accepted, whose
/// clients (children of the program) sent "a", "hello" and 200 bytes, nothing, and 3000
/// bytes, read at dump through the BPF socket reader without accepting them. Dumped
/// (with the oracle's snapshot: the listener's queue length and waiting clients by
/// holder), a restore failing at a descriptor leaves nothing, and the restored program
/// accepts the four in the same order, reads the same bytes (messages, on seqpacket)
/// from the same clients' credentials, as an undisturbed run does. With `leave`, the
/// dump leaves the original running instead: the oracle finds it as it was, and it
/// finishes as an undisturbed run. With `own_net`, the program runs in a network
/// namespace of its own (`unshare --net`), whose unix sockets the BPF iterator lists
/// only when it is made there.
fn backlog_restored(name: &str, mode: &str, leave: bool, own_net: bool) {
    let ctx = Ctx::new(name);
    let unshare = std::path::Path::new("/usr/bin/unshare");
    assert!(
        !own_net || unshare.exists(),
        "needs unshare(1) (util-linux)"
    );
    let spec = |dir: &SockDir| {
        let s = if own_net {
            Spec::new(unshare).arg("--net").arg(target("ubacklog"))
        } else {
            Spec::new(target("ubacklog"))
        };
        s.arg(mode).arg(&dir.0).arg("60")
    };
    let rdir = SockDir::new(&format!("ubacklog-{mode}-ref"));
    let reference = ctx.spawn(&spec(&rdir)).finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "ubacklog {mode}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    for line in [
        "connection 0: 1 bytes",
        "connection 1: 205 bytes",
        "connection 2: 0 bytes",
        "connection 3: 3000 bytes",
        "from pid of client 3",
    ] {
        assert!(
            text(&reference.stdout).contains(line),
            "ubacklog {mode}: the reference run should say {line:?}:\n{}",
            text(&reference.stdout)
        );
    }
    let dir = SockDir::new(&format!("ubacklog-{mode}-run"));
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("step 3\n");
    let pids = wait_process_tree(t.pid, 5, "ubacklog");
    let img = ctx.path("ubacklog.img");
    if leave {
        ctx.dump_leave_running(t.pid, &img);
        let fin = t.finish();
        assert_eq!(
            fin.status.code(),
            Some(0),
            "ubacklog {mode}: the original after dump --leave-running; stderr:\n{}",
            text(&fin.stderr)
        );
        assert_same_output(
            &format!("ubacklog {mode}: the original after dump --leave-running"),
            &reference.stdout,
            &fin.stdout,
        );
        return;
    }
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("ubacklog: original");
    wait_pids_gone(&pids, "ubacklog: original after the dump");
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take descriptor", &pids, &[]);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        &format!("ubacklog {mode} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

#[test]
fn a_unix_stream_listener_backlog_whose_clients_sent_data_comes_back_in_queue_order() {
    backlog_restored(
        "a_unix_stream_listener_backlog_whose_clients_sent_data_comes_back_in_queue_order",
        "stream",
        false,
        false,
    );
}

#[test]
fn a_unix_seqpacket_listener_backlog_whose_clients_sent_data_comes_back_in_queue_order() {
    backlog_restored(
        "a_unix_seqpacket_listener_backlog_whose_clients_sent_data_comes_back_in_queue_order",
        "seqpacket",
        false,
        false,
    );
}

#[test]
fn a_unix_listener_backlog_with_data_dumped_leaving_it_running_is_untouched() {
    backlog_restored(
        "a_unix_listener_backlog_with_data_dumped_leaving_it_running_is_untouched",
        "stream",
        true,
        false,
    );
}

#[test]
fn a_unix_listener_backlog_with_data_in_its_own_network_namespace_comes_back() {
    backlog_restored(
        "a_unix_listener_backlog_with_data_in_its_own_network_namespace_comes_back",
        "stream",
        false,
        true,
    );
}

/// Where the BPF socket reader cannot load (a kernel without BTF or the unix socket
/// iterator; here the fault point that stands for one), `ubacklog`'s listener, whose
/// waiting clients sent data, is refused at dump, naming it and why, and the program
/// runs on to the end of an undisturbed run.
#[test]
fn a_unix_listener_backlog_with_data_is_refused_where_the_bpf_reader_cannot_load() {
    let ctx =
        Ctx::new("a_unix_listener_backlog_with_data_is_refused_where_the_bpf_reader_cannot_load");
    let spec = |dir: &SockDir| {
        Spec::new(target("ubacklog"))
            .arg("stream")
            .arg(&dir.0)
            .arg("60")
    };
    let reference = ctx
        .spawn(&spec(&SockDir::new("ubacklog-nobpf-ref")))
        .finish();
    let dir = SockDir::new("ubacklog-nobpf-run");
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("step 3\n");
    ctx.track(t.pid);
    let img = ctx.path("img");
    let pid = t.pid.to_string();
    let r = common::arch::ckpt_env(
        &ctx,
        &[
            "dump".as_ref(),
            pid.as_ref(),
            "-o".as_ref(),
            img.as_os_str(),
        ],
        &[("CKPT_FAULT", "load the BPF socket reader")],
    );
    refused_runs_on(
        t,
        (r.status.code(), &text(&r.stderr)),
        &img,
        &[
            "file descriptor 3",
            "already sent data",
            "the BPF socket reader cannot be loaded",
        ],
        &reference.stdout,
        "ubacklog without the BPF socket reader",
    );
}

#[test]
fn a_unix_listener_with_a_client_from_outside_waiting_refuses_the_dump() {
    refused_with(
        "a_unix_listener_with_a_client_from_outside_waiting_refuses_the_dump",
        "outside",
        &[
            "file descriptor 3",
            "from a process outside the dumped tree",
        ],
        true,
    );
}

/// `urel MODE` dumped mid-run, restored, and finishing as an undisturbed run does (the
/// oracle compares the sockets' names, relative as the kernel shows them).
fn relative_name_restored(name: &str, mode: &str) {
    let ctx = Ctx::new(name);
    let spec = |dir: &SockDir| Spec::new(target("urel")).arg(mode).arg(&dir.0).arg("60");
    let rdir = SockDir::new(&format!("urel-{mode}-ref"));
    let reference = ctx.spawn(&spec(&rdir)).finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "urel {mode}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert!(
        !text(&reference.stdout).contains("ANOTHER") && !text(&reference.stdout).contains(": No"),
        "urel {mode}: the reference run:\n{}",
        text(&reference.stdout)
    );
    let dir = SockDir::new(&format!("urel-{mode}-run"));
    let mut t = ctx.spawn(&spec(&dir));
    t.wait_for("step 3\n");
    let img = ctx.path("urel.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("urel: original");
    wait_pids_gone(&[t.pid], "urel: original after the dump");
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "fchdir", &[t.pid], &[]);
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        &format!("urel {mode} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &[t.pid],
    );
}

#[test]
fn a_unix_listener_bound_to_a_relative_name_is_restored() {
    relative_name_restored(
        "a_unix_listener_bound_to_a_relative_name_is_restored",
        "listener",
    );
}

#[test]
fn a_unix_connection_accepted_on_a_relative_name_is_restored() {
    relative_name_restored(
        "a_unix_connection_accepted_on_a_relative_name_is_restored",
        "conn",
    );
}

#[test]
fn a_client_waiting_on_a_relative_name_is_restored() {
    relative_name_restored("a_client_waiting_on_a_relative_name_is_restored", "pending");
}

#[test]
fn a_relative_name_no_working_directory_leads_to_refuses_the_dump() {
    let name = "a_relative_name_no_working_directory_leads_to_refuses_the_dump";
    let ctx = Ctx::new(name);
    let dir = SockDir::new("urel-moved");
    let mut t = ctx.spawn(&Spec::new(target("urel")).arg("moved").arg(&dir.0).arg("60"));
    t.wait_for("step 3\n");
    ctx.track(t.pid);
    let img = ctx.path("img");
    let r = ctx.try_dump(t.pid, &img);
    assert_eq!(
        r.status.code(),
        Some(1),
        "the dump should be refused:\n{}",
        r.stderr
    );
    for w in [
        "cannot dump process ",
        "file descriptor 3",
        "rel.sock",
        "no process's working directory now",
    ] {
        assert!(
            r.stderr.contains(w),
            "the refusal should say {w:?}:\n{}",
            r.stderr
        );
    }
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    assert_running_untraced(t.pid, "the program after the refused dump");
    let fin = t.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "urel moved: exit status after the refused dump"
    );
    assert!(
        text(&fin.stdout).contains("a new client by the relative name: accepted"),
        "urel moved:\n{}",
        text(&fin.stdout)
    );
}

#[test]
fn queued_unix_messages_and_bytes_keep_their_senders_credentials() {
    let ctx = Ctx::new("queued_unix_messages_and_bytes_keep_their_senders_credentials");
    let spec = Spec::new(target("ucreds")).stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "ucreds: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let expected = text(&reference.stdout).replacen("ready\n", "", 1);
    for line in [
        "q: [r1] from C, uid 65534 gid 65534",
        "q: [r2] from C, uid 65534 gid 65534",
        "s: [abc] from C, uid 65534 gid 65534",
        "s: [xyz] from P, uid 0 gid 0",
    ] {
        assert!(
            expected.contains(line),
            "ucreds: the reference run should say {line:?}:\n{expected}"
        );
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "ucreds");
    let img = ctx.path("ucreds.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "ucreds: original after the dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ucreds: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        "ucreds: the restored run after the dump point",
        expected.as_bytes(),
        &fin.stdout,
    );
}

#[test]
fn descriptors_in_flight_that_the_tree_holds_come_back_in_flight() {
    let ctx = Ctx::new("descriptors_in_flight_that_the_tree_holds_come_back_in_flight");
    let spec = Spec::new(target("urights")).stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "urights: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let expected = text(&reference.stdout).replacen("ready\n", "", 1);
    for line in [
        "C: d brought [pipe]: it is the pipe's read end",
        "C: q brought [self]: the socket itself",
    ] {
        assert!(
            expected.contains(line),
            "urights: the reference run should say {line:?}:\n{expected}"
        );
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "urights");
    let img = ctx.path("urights.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "urights: original after the dump");
    for step in ["take descriptor", "queue socket pair"] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &pids, &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "urights: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        "urights: the restored run after the dump point",
        expected.as_bytes(),
        &fin.stdout,
    );
}
