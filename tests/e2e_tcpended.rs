//! End-to-end tests of TCP sockets whose connection has ended and that the program
//! still holds: one accepted by a listener (it holds the listener's port) and one client
//! (its port is free again), each with bytes it had not read; reset by the peer with the
//! error read by the program, or not read yet (ECONNRESET; EPIPE after the peer's FIN;
//! ECONNRESET after the peer's FIN and the program's own, not acknowledged; after a
//! non-blocking connect), ended by keepalive towards a peer that stopped answering
//! (ETIMEDOUT, not read yet), and non-blocking connects refused (ECONNREFUSED), the
//! error read or not. The restored run is compared with the original through the state
//! oracle (sock_diag: whether the port is held; poll: the error still pending) and
//! through its own behaviour (getsockname, getpeername, poll, the unread bytes then the
//! error from read, SO_ERROR, send, whether the port is held, connect). A
//! `--leave-running` dump leaves the error to the original; a dump where the reader of
//! pending errors cannot run refuses, the tree untouched; a restore failing in the
//! middle of making such a socket leaves nothing behind.
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

/// What "check" prints for descriptor 5 (a client reset, its error read) in every mode.
const CHECK_5: &str = "check 5: name same, peername errno 107, poll 0x2015, reads 4 back, 0, 0, \
                       SO_ERROR 0, send errno 32, bind errno 0, connect errno 106\n";

/// What "check" prints in mode `mode` (descriptor 4's line `four`, then 5's).
fn expected(four: &str) -> String {
    format!("check 4: name same, peername errno 107, {four}\n{CHECK_5}check: done\n")
}

/// The reference run of `tcpended MODE`, then a run dumped (killed), restored after a
/// restore failing at each of `faults` left nothing, and compared with the original:
/// kernel state through the oracle, output with `four` (descriptor 4's check line).
fn round_trip(name: &str, mode: &str, four: &str, faults: &[&str]) {
    let ctx = Ctx::new(name);
    round_trip_in(&ctx, None, name, mode, four, faults);
}

/// [`round_trip`] in context `ctx`, the program in the network namespace of `holder`
/// (entered with nsenter, joined again at restore) if given.
fn round_trip_in(
    ctx: &Ctx,
    holder: Option<&Proc>,
    name: &str,
    mode: &str,
    four: &str,
    faults: &[&str],
) {
    let net = holder.map(|h| format!("/proc/{}/ns/net", h.pid));
    let keep: Vec<i32> = holder.map(|h| h.pid).into_iter().collect();
    let spec = match &net {
        Some(path) => Spec::new("nsenter")
            .arg(format!("--net={path}"))
            .arg(target("tcpended")),
        None => Spec::new(target("tcpended")),
    }
    .arg(mode)
    .stdin(In::Pipe);
    let join = net.map(|p| format!("net:{p}"));
    let extra: Vec<&str> = match &join {
        Some(j) => vec!["--join-ns", j],
        None => Vec::new(),
    };
    let want = expected(four);
    let mut reference = ctx.spawn(&spec);
    reference.wait_for("ready\n");
    assert_eq!(use_all(&mut reference), want, "{name}: the reference run");

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
    for step in faults {
        assert_restore_fault_leaves_nothing(ctx, &img, &extra, step, &[pid], &keep);
    }
    let (mut r, after) = restore_until_up_with(ctx, &img, &extra, &before, pid, name);
    oracle::assert_same_kernel_state(name, name, Cmp::Restored, &before, &after, &[]);
    assert_eq!(use_all(&mut r), want, "{name}: the restored run");
}

/// A network namespace of the test's own, made outside the tree (held by an
/// `unshare --net` child, as another container's would be; never the host's), with
/// loopback up and a firewall that answers with an ICMP error (host unreachable) the
/// segments to port 9 after the first of each connection (which it drops: an ICMP
/// error that came while connect() holds the socket, as the first one on loopback
/// would, leaves a soft error only), and every segment but SYNs to port 10. Its holder.
fn icmp_net(ctx: &Ctx) -> Proc {
    let script = "ip link set lo up && nft add table inet ckicmp && \
                  nft add set inet ckicmp seen \
                  '{ type ipv4_addr . inet_service; flags dynamic; timeout 1m; }' && \
                  nft add chain inet ckicmp c '{ type filter hook input priority 0 ; }' && \
                  nft add rule inet ckicmp c tcp dport 9 ip saddr . tcp sport @seen \
                  reject with icmpx type host-unreachable && \
                  nft add rule inet ckicmp c tcp dport 9 add @seen '{ ip saddr . tcp sport }' drop && \
                  nft add rule inet ckicmp c tcp dport 10 'tcp flags & syn == 0' \
                  reject with icmpx type host-unreachable && echo up && exec sleep 600";
    let mut holder = ctx.spawn(
        &Spec::new("unshare")
            .arg("--net")
            .arg("sh")
            .arg("-c")
            .arg(script),
    );
    holder.wait_for("up\n");
    holder
}

#[test]
fn tcp_sockets_whose_connection_was_reset_come_back_with_their_unread_bytes() {
    round_trip(
        "tcp_sockets_whose_connection_was_reset_come_back_with_their_unread_bytes",
        "ended",
        "poll 0x2015, reads 4 rest, 0, 0, SO_ERROR 0, send errno 32, bind errno 0, \
         connect errno 106",
        &[
            "connect to end a connection",
            "SO_ERROR of the ended connection",
        ],
    );
}

/// Descriptor 4's check line with ECONNRESET still to be read (after its 4 bytes).
const RESET_PENDING: &str = "poll 0x201d, reads 4 rest, -104, 0, SO_ERROR 0, send errno 32, \
                             bind errno 0, connect errno 106";

#[test]
fn tcp_socket_reset_with_its_error_not_read_comes_back_with_the_error() {
    round_trip(
        "tcp_socket_reset_with_its_error_not_read_comes_back_with_the_error",
        "pending",
        RESET_PENDING,
        &["connect to end a connection", "SO_LINGER"],
    );
}

#[test]
fn tcp_socket_reset_after_the_peers_fin_comes_back_with_epipe_not_read() {
    round_trip(
        "tcp_socket_reset_after_the_peers_fin_comes_back_with_epipe_not_read",
        "pipe",
        "poll 0x201d, reads 4 rest, 0, 0, SO_ERROR 32, send errno 32, bind errno 0, \
         connect errno 106",
        &["shutdown"],
    );
}

#[test]
fn tcp_socket_of_a_nonblocking_connect_reset_comes_back_still_connecting() {
    round_trip(
        "tcp_socket_of_a_nonblocking_connect_reset_comes_back_still_connecting",
        "nbpending",
        "poll 0x201d, reads 4 rest, -104, 0, SO_ERROR 0, send errno 32, bind errno 0, \
         connect errno 103",
        &[],
    );
}

#[test]
fn tcp_socket_whose_connect_was_refused_comes_back_refused() {
    round_trip(
        "tcp_socket_whose_connect_was_refused_comes_back_refused",
        "refused",
        "poll 0x2015, reads 0, 0, 0, SO_ERROR 0, send errno 32, bind errno 0, \
         connect errno 103",
        &["connect to end a connection"],
    );
}

#[test]
fn tcp_socket_whose_connect_was_refused_comes_back_with_the_error_not_read() {
    round_trip(
        "tcp_socket_whose_connect_was_refused_comes_back_with_the_error_not_read",
        "refusedpending",
        "poll 0x201d, reads -111, 0, 0, SO_ERROR 0, send errno 32, bind errno 0, \
         connect errno 103",
        &["bind TCP listener to end a connection"],
    );
}

/// Descriptor 4's check line after a reset that came in LAST_ACK (the peer's FIN, then
/// the program's, not acknowledged): the end of file, never the error, from read;
/// ECONNRESET from SO_ERROR.
const LAST_ACK_RESET: &str = "poll 0x201d, reads 4 rest, 0, 0, SO_ERROR 104, send errno 32, \
                              bind errno 0, connect errno 106";

/// Descriptor 4's check line once keepalive gave up on its peer: ETIMEDOUT after the
/// 4 bytes.
const TIMED_OUT: &str = "poll 0x201d, reads 4 rest, -110, 0, SO_ERROR 0, send errno 32, \
                         bind errno 0, connect errno 106";

#[test]
fn tcp_socket_reset_after_both_fins_comes_back_with_econnreset_not_read() {
    round_trip(
        "tcp_socket_reset_after_both_fins_comes_back_with_econnreset_not_read",
        "lastack",
        LAST_ACK_RESET,
        &["TCP_REPAIR_QUEUE"],
    );
}

#[test]
fn tcp_socket_whose_keepalive_timed_out_comes_back_with_etimedout_not_read() {
    round_trip(
        "tcp_socket_whose_keepalive_timed_out_comes_back_with_etimedout_not_read",
        "timedout",
        TIMED_OUT,
        &["SO_ATTACH_FILTER", "a byte its peer does not acknowledge"],
    );
}

/// Descriptor 4's check line after a failed connect whose error `errno` (ETIMEDOUT,
/// EHOSTUNREACH) was left unread: the error from the first read.
fn connect_failed(errno: i32) -> String {
    format!(
        "poll 0x201d, reads -{errno}, 0, 0, SO_ERROR 0, send errno 32, bind errno 0, \
         connect errno 103"
    )
}

#[test]
fn tcp_socket_whose_connect_timed_out_comes_back_with_etimedout_not_read() {
    round_trip(
        "tcp_socket_whose_connect_timed_out_comes_back_with_etimedout_not_read",
        "synto",
        &connect_failed(libc::ETIMEDOUT),
        &["SO_ATTACH_FILTER", "TCP_USER_TIMEOUT"],
    );
}

/// A connect answered by an ICMP error (host unreachable) in a network namespace of
/// the test's own whose firewall sends it: EHOSTUNREACH, not read yet; restore makes it
/// with an ICMP error of its own about the SYN.
#[test]
fn tcp_socket_whose_connect_an_icmp_error_ended_comes_back_with_ehostunreach() {
    let name = "tcp_socket_whose_connect_an_icmp_error_ended_comes_back_with_ehostunreach";
    let ctx = Ctx::new(name);
    let holder = icmp_net(&ctx);
    round_trip_in(
        &ctx,
        Some(&holder),
        name,
        "unreach",
        &connect_failed(libc::EHOSTUNREACH),
        &[
            "TCP_QUEUE_SEQ",
            "socket(raw ICMP) to end a connection",
            "an ICMP error about the connection",
        ],
    );
}

/// A connection whose segments the firewall answered with ICMP errors (host
/// unreachable) until its user timeout gave up: EHOSTUNREACH not read yet (after the 4
/// bytes), then the soft error the ICMP error left, from SO_ERROR.
#[test]
fn tcp_socket_ended_after_icmp_errors_comes_back_with_the_error_and_the_soft_one() {
    let name = "tcp_socket_ended_after_icmp_errors_comes_back_with_the_error_and_the_soft_one";
    let ctx = Ctx::new(name);
    let holder = icmp_net(&ctx);
    round_trip_in(
        &ctx,
        Some(&holder),
        name,
        "icmpended",
        "poll 0x201d, reads 4 rest, -113, 0, SO_ERROR 113, send errno 32, bind errno 0, \
         connect errno 106",
        &["an ICMP error about the connection", "SO_ATTACH_FILTER"],
    );
}

/// A dump with `--leave-running` reads the pending error without taking it: the
/// original still reads it afterwards (as the reference run), and the image restores
/// once the original is gone.
#[test]
fn leave_running_dump_leaves_the_pending_error_to_the_original() {
    leave_running(
        "leave_running_dump_leaves_the_pending_error_to_the_original",
        "pending",
        RESET_PENDING,
    );
}

/// The same with ETIMEDOUT and with ECONNRESET in LAST_ACK.
#[test]
fn leave_running_dump_leaves_a_timeout_or_a_late_reset_to_the_original() {
    leave_running(
        "leave_running_dump_leaves_a_timeout_or_a_late_reset_to_the_original",
        "timedout",
        TIMED_OUT,
    );
    leave_running(
        "leave_running_dump_leaves_a_timeout_or_a_late_reset_to_the_original_2",
        "lastack",
        LAST_ACK_RESET,
    );
}

/// `tcpended MODE` dumped with `--leave-running`: the original reads `four` afterwards,
/// and the image restores (same kernel state, same reads) once the original is gone.
fn leave_running(name: &str, mode: &str, four: &str) {
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("tcpended")).arg(mode).stdin(In::Pipe);
    let want = expected(four);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("left.img");
    // (dump_leave_running compares the original's kernel state after the dump with its
    // state before: the poll of descriptor 4 still shows the error.)
    ctx.dump_leave_running(pid, &img);
    assert_eq!(use_all(&mut t), want, "{name}: the original after the dump");
    wait_pids_gone(&[pid], name);
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(name, name, Cmp::Restored, &before, &after, &[]);
    assert_eq!(use_all(&mut r), want, "{name}: the restored run");
}

/// Where the reader of pending errors cannot run (a kernel without BTF or the task
/// file iterator; here made to fail with `CKPT_FAULT`), a socket whose error is still
/// to be read is refused naming descriptor 4, and the program runs on untouched: it
/// still reads its error.
#[test]
fn tcp_socket_with_an_error_not_read_is_refused_where_it_cannot_be_read() {
    let name = "tcp_socket_with_an_error_not_read_is_refused_where_it_cannot_be_read";
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(&Spec::new(target("tcpended")).arg("pending").stdin(In::Pipe));
    t.wait_for("ready\n");
    let img = ctx.path("refused.img");
    let f = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("dump")
                .arg(t.pid.to_string())
                .arg("-o")
                .arg(&img)
                .env("CKPT_FAULT", "read a socket's pending error"),
        )
        .finish();
    let stderr = text(&f.stderr);
    assert_eq!(f.status.code(), Some(1), "{name}: {stderr}");
    for what in ["descriptor 4", "not read yet", "injected fault"] {
        assert!(stderr.contains(what), "{name}: no {what:?} in: {stderr}");
    }
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(t.pid, name);
    assert_eq!(
        use_all(&mut t),
        expected(RESET_PENDING),
        "{name}: the target after the refused dump"
    );
}
