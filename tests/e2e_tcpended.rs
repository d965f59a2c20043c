//! End-to-end tests of TCP sockets whose connection has ended (reset by the peer, the
//! error read by the program) and that the program still holds: one accepted by a
//! listener (it holds the listener's port) and one client (its port is free again),
//! each with bytes it had not read. The restored run is compared with the original
//! through the state oracle and through its own behaviour (getsockname, getpeername,
//! poll, SO_ERROR, the unread bytes then end of file, send, whether the port is held,
//! connect). The states dump refuses (an error not read yet, a connect that failed) and
//! a restore failing in the middle of making such a socket are tested too.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// What a run prints after "ready" for "check" and "exit".
fn use_all(p: &mut Proc) -> String {
    p.write_stdin(b"check\nexit\n");
    p.close_stdin();
    let fin = p.finish();
    let out = String::from_utf8_lossy(&fin.stdout).into_owned();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "exit; output:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&fin.stderr)
    );
    out.trim_start_matches("ready\n").to_string()
}

const EXPECTED: &str = "check 4: name same, peername errno 107, poll 0x2015, SO_ERROR 0, \
                        read 4 rest then 0, send errno 32, bind errno 0, connect errno 106\n\
                        check 5: name same, peername errno 107, poll 0x2015, SO_ERROR 0, \
                        read 4 back then 0, send errno 32, bind errno 0, connect errno 106\n\
                        check: done\n";

#[test]
fn tcp_sockets_whose_connection_was_reset_come_back_with_their_unread_bytes() {
    let name = "tcp_sockets_whose_connection_was_reset_come_back_with_their_unread_bytes";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("tcpended")).stdin(In::Pipe);
    let mut reference = ctx.spawn(&spec);
    reference.wait_for("ready\n");
    assert_eq!(use_all(&mut reference), EXPECTED, "the reference run");

    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("ended.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    let inspect = ctx.inspect_json(&img).to_string();
    assert!(
        inspect.matches("\"ended\":{").count() == 2,
        "{name}: the image should hold the ended sockets: {inspect}"
    );

    // A restore failing while it makes an ended socket leaves nothing behind (nor a
    // port held), and the image restores after it.
    for step in [
        "connect to end a connection",
        "SO_ERROR of the ended connection",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &[pid], &[]);
    }

    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run: {}",
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let after = Snapshot::at_rest(pid, name);
    oracle::assert_same_kernel_state(name, name, Cmp::Restored, &before, &after, &[]);
    assert_eq!(use_all(&mut r), EXPECTED, "{name}: the restored run");
}

/// Dump of `tcpended MODE` is refused naming descriptor 4 and `why`; the target runs
/// on untouched.
fn refused(name: &str, mode: &str, why: &str) {
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(&Spec::new(target("tcpended")).arg(mode).stdin(In::Pipe));
    t.wait_for("ready\n");
    let img = ctx.path("refused.img");
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["descriptor 4", why]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(t.pid, name);
    t.write_stdin(b"check\n");
    t.wait_for("check: done\n");
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    let out = String::from_utf8_lossy(&fin.stdout).into_owned();
    assert_eq!(fin.status.code(), Some(0), "{name}: the target's exit");
    if mode == "pending" {
        // The error is still the program's to read after the refused dump.
        assert!(
            out.contains("check 4: name same, peername errno 107, poll 0x201d, SO_ERROR 104"),
            "{name}: {out}"
        );
    }
}

#[test]
fn tcp_socket_reset_with_its_error_not_read_is_refused_at_dump() {
    refused(
        "tcp_socket_reset_with_its_error_not_read_is_refused_at_dump",
        "pending",
        "error the program has not read yet",
    );
}

#[test]
fn tcp_socket_whose_connect_failed_is_refused_at_dump() {
    refused(
        "tcp_socket_whose_connect_failed_is_refused_at_dump",
        "refused",
        "whose connect failed",
    );
}
