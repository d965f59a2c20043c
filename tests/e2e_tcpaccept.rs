//! End-to-end tests of TCP listeners with connections waiting to be accepted: a server
//! whose own children connected to it (one of them then shut down writing) before it
//! accepted any, dumped and restored, then accepting them in the original queue order
//! (which is not the children's order), each client getting its reply; over IPv4 and
//! IPv6; with clients that sent bytes before being accepted (20000, more than a page,
//! and 5, the latter then shutting down writing), which the server reads after the
//! restore as they were sent; with `--leave-running` (the original accepts them all
//! afterwards); and the failures: a dump whose queue reader (or the reader of those
//! bytes) fails and a client outside the tree are refused (the tree runs on), restores
//! failing after the handshakes (and after sending the bytes again) leave nothing. The
//! restored tree is compared with the original through the state oracle, which reads
//! the listener's accept queue length from sock_diag, and for each client how much
//! waits unread on the listener's side for it.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// The number after `key` on a line of `text`.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
}

/// What the children of [`server`] send before they are accepted: nothing, or 20000
/// bytes from child 1 (more than a page) and 5 from child 2 (before its shutdown).
const NOTHING: &str = "0,0,0";
const BYTES: &str = "0,20000,5";

/// The server of tests/targets/tcpaccept.c over `fam` with three children connecting
/// in the order 1, 2, 0, child 2 shutting down writing, each sending `sizes` first;
/// waits until all three wait.
fn server(ctx: &Ctx, fam: &str, sizes: &str) -> Proc {
    let mut t = ctx.spawn(
        &Spec::new(target("tcpaccept"))
            .arg(fam)
            .arg("120")
            .arg("2")
            .arg("0")
            .arg(sizes)
            .stdin(In::Pipe),
    );
    t.wait_for("ready 3 waiting\n");
    t
}

/// `check` then `exit` to the server `p` (its children sent `sizes`): it accepts the
/// three in the queue's order (child 1, child 2 with its end of file, child 0), with
/// the bytes each sent first, each as sent; each child gets "go".
fn accepts_in_order(p: &mut Proc, name: &str, sizes: &str) {
    p.write_stdin(b"check\n");
    p.wait_for("accepted 2:");
    p.write_stdin(b"exit\n");
    p.close_stdin();
    let f = p.finish();
    let out = text(&f.stdout);
    assert_eq!(f.status.code(), Some(0), "{name}: the server's run:\n{out}");
    let (first, second) = if sizes == BYTES {
        (
            "accepted 0: 'hello 1' after 20000 bytes\n",
            "accepted 1: '' after 5 bytes\n",
        )
    } else {
        ("accepted 0: 'hello 1'\n", "accepted 1: ''\n")
    };
    for want in [
        first,
        second,
        "accepted 2: 'hello 0'\n",
        "client 0: got 'go'\n",
        "client 1: got 'go'\n",
        "client 2: got 'go'\n",
        "children done\n",
    ] {
        assert!(out.contains(want), "{name}: no {want:?} in:\n{out}");
    }
}

/// Dumped with its queue (after a dump whose queue reader, or the reader of the bytes
/// sent, fails, which refuses and leaves the tree running), restores failing after the
/// first handshake, after sending the bytes again and after every connection is made
/// leaving nothing, restored, compared, then it accepts them in order.
fn queued_restored(name: &str, fam: &str, sizes: &str) {
    let ctx = Ctx::new(name);
    let t = server(&ctx, fam, sizes);
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("queued.img");
    let (fault, named) = if sizes == BYTES {
        (
            "read the bytes a waiting client sent",
            "holds 20000 bytes its client sent",
        )
    } else {
        ("read a TCP accept queue", "waiting to be accepted")
    };
    let f = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("dump")
                .arg(pid.to_string())
                .arg("-o")
                .arg(&img)
                .env("CKPT_FAULT", fault),
        )
        .finish();
    let stderr = text(&f.stderr);
    assert_eq!(f.status.code(), Some(1), "{name}: {stderr}");
    for what in ["descriptor 3", named, "injected fault"] {
        assert!(stderr.contains(what), "{name}: no {what:?} in: {stderr}");
    }
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(pid, name);
    let still = Snapshot::at_rest(pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: after the refused dump"),
        Cmp::LeftRunning,
        &before,
        &still,
        &[],
    );
    ctx.dump(pid, &img);
    let mut t = t;
    t.expect_killed();
    // (The children, reparented to the test when the server died, are reaped.)
    wait_pids_gone(&before.pids, name);
    // Bytes waiting make the image one an older ckpt must refuse (it would restore the
    // connections without them): required feature bit 2 in the file header.
    let head = std::fs::read(&img).expect("the image");
    let required = u64::from_le_bytes(head[16..24].try_into().expect("a header"));
    assert_eq!(
        required & 2 != 0,
        sizes == BYTES,
        "{name}: the image's required feature bits {required:#x}"
    );
    let inspect = ctx.inspect_json(&img).to_string();
    assert_eq!(
        inspect.matches("TcpQueued").count(),
        3,
        "{name}: the image should hold the three waiting clients: {inspect}"
    );
    let mut steps = vec!["connect to its listener", "take TCP socket"];
    if sizes == BYTES {
        steps.push("send the bytes a waiting client had sent");
    }
    for step in steps {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &before.pids, &[]);
    }
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: tcpaccept {fam}"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    // The oracle saw the listener's queue (sock_diag's count for a listener) and the
    // clients' states: a restore that lost a connection or its FIN fails above.
    assert!(
        format!("{before:?}").contains("accept_queue"),
        "{name}: the oracle should read the listener's accept queue"
    );
    // And what waits unread for each client on the listener's side (bytes, its FIN),
    // the same after the restore (compared above): here, what it is.
    let waits = |s: &Snapshot| -> Vec<String> {
        let mut v: Vec<String> = s
            .entries
            .iter()
            .filter(|(k, _)| k.ends_with(".sock.tcp.unaccepted_rqueue"))
            .map(|(_, (_, v))| v.clone())
            .collect();
        v.sort();
        v
    };
    let want = if sizes == BYTES {
        ["0", "20000", "6"]
    } else {
        ["0", "0", "1"]
    };
    assert_eq!(waits(&before), want, "{name}: before");
    assert_eq!(waits(&after), want, "{name}: restored");
    accepts_in_order(&mut r, name, sizes);
}

#[test]
fn waiting_connections_come_back_in_queue_order_v4() {
    queued_restored(
        "waiting_connections_come_back_in_queue_order_v4",
        "4",
        NOTHING,
    );
}

#[test]
fn waiting_connections_come_back_in_queue_order_v6() {
    queued_restored(
        "waiting_connections_come_back_in_queue_order_v6",
        "6",
        NOTHING,
    );
}

#[test]
fn bytes_sent_by_waiting_clients_come_back_v4() {
    queued_restored("bytes_sent_by_waiting_clients_come_back_v4", "4", BYTES);
}

#[test]
fn bytes_sent_by_waiting_clients_come_back_v6() {
    queued_restored("bytes_sent_by_waiting_clients_come_back_v6", "6", BYTES);
}

/// `--leave-running` leaves the queue as it was, with the bytes its clients sent (the
/// oracle compares before and after the dump): the original accepts them all, in
/// order, with their bytes; the image restores a copy.
#[test]
fn leave_running_leaves_the_queue() {
    let name = "leave_running_leaves_the_queue";
    let ctx = Ctx::new(name);
    let mut t = server(&ctx, "4", BYTES);
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("copy.img");
    ctx.dump_leave_running(pid, &img);
    let still = Snapshot::at_rest(pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: after the dump"),
        Cmp::LeftRunning,
        &before,
        &still,
        &[],
    );
    accepts_in_order(&mut t, name, BYTES);
    wait_pids_gone(&before.pids, name);
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: the copy"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    accepts_in_order(&mut r, name, BYTES);
}

/// A client outside the tree (another process), with nothing sent: refused, naming the
/// listener and the client's address; the tree runs on and accepts it.
#[test]
fn a_client_outside_the_tree_is_refused() {
    let name = "a_client_outside_the_tree_is_refused";
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(
        &Spec::new(target("tcpaccept"))
            .arg("4")
            .arg("")
            .arg("-")
            .arg("1")
            .stdin(In::Pipe),
    );
    t.wait_for("port ");
    let port = number_after(&t.stdout.text(), "port ");
    let mut c = ctx.spawn(
        &Spec::new(target("tcpaccept"))
            .arg("client")
            .arg("4")
            .arg(port.to_string()),
    );
    c.wait_for("client connected\n");
    t.wait_for("ready 1 waiting\n");
    let img = ctx.path("refused.img");
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&[
            "descriptor 3",
            &format!("TCP listener on 127.0.0.1:{port}"),
            "waiting to be accepted from 127.0.0.1:",
            "a client outside the dumped tree",
        ]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(t.pid, name);
    t.write_stdin(b"check\n");
    t.wait_for("accepted 0: 'hello x'\n");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    assert_eq!(t.finish().status.code(), Some(0), "{name}: the server");
    let cf = c.finish();
    assert!(
        text(&cf.stdout).contains("client x: got 'go'\n"),
        "{name}: the client: {}",
        text(&cf.stdout)
    );
}
