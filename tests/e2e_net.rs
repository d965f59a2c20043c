//! End-to-end tests of TCP sockets in the states restore brings back besides a
//! connection (created and not connected, bound and not listening, listening), over
//! IPv4, IPv6 and IPv4-mapped IPv6, with their options; a connection in CLOSE_WAIT; and
//! of the states dump refuses (ended). Each restored run is compared with the original through the
//! state oracle and through its own behaviour (the bound sockets still hold their ports,
//! the new one connects, options read back and are inherited by accepted sockets).
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// What a run prints after "ready" for "report", "check" and "exit".
fn use_all(p: &mut Proc) -> String {
    p.write_stdin(b"report\ncheck\nexit\n");
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

/// Run `prog` once uninterrupted and once dumped (killed) and restored once ready: the
/// oracle sees the same kernel state before and after, the image holds `kind`, and the
/// restored run prints what the uninterrupted one did.
fn restored_like_reference(name: &str, prog: &str, kind: &str) {
    let ctx = Ctx::new(name);
    let spec = Spec::new(target(prog)).stdin(In::Pipe);
    let mut reference = ctx.spawn(&spec);
    reference.wait_for("ready\n");
    let want = use_all(&mut reference);
    assert!(want.ends_with("check: done\n"), "reference run: {want}");

    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("net.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    let inspect = ctx.inspect_json(&img).to_string();
    assert!(
        inspect.contains(kind),
        "{name}: the image should hold {kind}: {inspect}"
    );
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: {prog}"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    let got = use_all(&mut r);
    assert_eq!(got, want, "{name}: the restored run against the reference");
}

#[test]
fn tcp_sockets_not_connected_bound_and_listening_keep_addresses_and_options() {
    restored_like_reference(
        "tcp_sockets_not_connected_bound_and_listening_keep_addresses_and_options",
        "tcpstates",
        "TcpUnconnected",
    );
}

#[test]
fn netlink_route_uevent_and_generic_sockets_keep_port_groups_and_options() {
    restored_like_reference(
        "netlink_route_uevent_and_generic_sockets_keep_port_groups_and_options",
        "nlsock",
        "Netlink",
    );
}

/// Dump of `PROG MODE` is refused naming descriptor 3 and `why`; the target runs
/// on untouched (and, for CLOSE_WAIT, still reads the rest, the end of file, and writes).
fn refused(name: &str, prog: &str, mode: &str, why: &str, after: Option<&str>) {
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(&Spec::new(target(prog)).arg(mode).stdin(In::Pipe));
    t.wait_for("ready\n");
    let img = ctx.path("refused.img");
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&["descriptor 3", why]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(t.pid, name);
    if let Some(line) = after {
        t.write_stdin(b"check\n");
        t.wait_for(line);
    }
    t.write_stdin(b"exit\n");
    t.close_stdin();
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "{name}: the target's exit");
}

/// A connection in CLOSE_WAIT whose peer the program closed itself (the peer is the
/// kernel's orphan now): restored with its unread data and the end of file after it
/// (the half-closed states with a live peer: tests/e2e_tcphalf.rs).
#[test]
fn tcp_close_wait_whose_peer_the_program_closed_comes_back() {
    let name = "tcp_close_wait_whose_peer_the_program_closed_comes_back";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("tcpstates"))
        .arg("closewait")
        .stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("net.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(name, name, Cmp::Restored, &before, &after, &[]);
    assert_eq!(use_all(&mut r), "check: read 4 rest then 0; write 1\n");
}

#[test]
fn packet_sockets_keep_protocol_interface_options_and_filter() {
    restored_like_reference(
        "packet_sockets_keep_protocol_interface_options_and_filter",
        "packetsock",
        "Packet",
    );
}

#[test]
fn packet_socket_in_a_fanout_group_is_refused_at_dump() {
    refused(
        "packet_socket_in_a_fanout_group_is_refused_at_dump",
        "packetsock",
        "fanout",
        "packet socket (raw, protocol 0x88b5, on lo) in fanout group 77",
        Some("check: done\n"),
    );
}

#[test]
fn tcp_socket_reset_by_its_peer_is_refused_at_dump() {
    refused(
        "tcp_socket_reset_by_its_peer_is_refused_at_dump",
        "tcpstates",
        "ended",
        "connection has ended",
        None,
    );
}

#[test]
fn netlink_socket_with_unread_messages_is_refused_at_dump() {
    refused(
        "netlink_socket_with_unread_messages_is_refused_at_dump",
        "nlsock",
        "queued",
        "netlink socket (NETLINK_ROUTE) with messages waiting",
        None,
    );
}

/// net.ipv4.ping_group_range widened to root's group for the test's life (ping sockets
/// need it; it is put back after).
struct PingGroups(Option<String>);

const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingGroups {
    fn allow_root() -> PingGroups {
        let old =
            std::fs::read_to_string(PING_RANGE).unwrap_or_else(|e| panic!("{PING_RANGE}: {e}"));
        let mut it = old
            .split_whitespace()
            .map(|v| v.parse::<i64>().unwrap_or(-1));
        let (lo, hi) = (it.next().unwrap_or(1), it.next().unwrap_or(0));
        if lo <= 0 && hi >= 0 {
            return PingGroups(None);
        }
        std::fs::write(PING_RANGE, "0 0").unwrap_or_else(|e| panic!("{PING_RANGE}: {e}"));
        PingGroups(Some(old.replace('\t', " ")))
    }
}

impl Drop for PingGroups {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(PING_RANGE, old.trim());
        }
    }
}

#[test]
fn ping_and_raw_sockets_keep_identifier_filter_and_addresses_and_still_ping() {
    let _groups = PingGroups::allow_root();
    restored_like_reference(
        "ping_and_raw_sockets_keep_identifier_filter_and_addresses_and_still_ping",
        "pingraw",
        "InetRaw",
    );
    refused(
        "ping_socket_with_a_reply_waiting_is_refused_at_dump",
        "pingraw",
        "queued",
        "an ICMP ping socket (IPv4) with a packet waiting to be read",
        None,
    );
    refused(
        "socket_with_a_filter_attached_is_refused_at_dump",
        "pingraw",
        "filtered",
        "with a socket filter attached",
        None,
    );
}
