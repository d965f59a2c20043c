//! End-to-end tests of TCP connections closed on one side or both (FIN_WAIT1,
//! FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING), and connecting (SYN_SENT), over IPv4,
//! IPv6 and IPv4-mapped IPv6,
//! each with a live peer in another process (outside the dumped tree). The restored
//! program is compared with the original through the state oracle (its socket's TCP
//! state, addresses, options) and through what both ends then see: the rest of the
//! stream, exactly once, then the end of file exactly once, and the close completing
//! normally on both sides.
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

/// The program's end of a connection brought into `mode` (see tests/targets/tcphalf.c)
/// over `fam`, dumped, restored; then both ends finish the exchange. `state` is the
/// name the program prints for its socket's state once ready.
fn half_closed(name: &str, mode: &str, fam: &str, state: &str) {
    let ctx = Ctx::new(name);
    let mut peer = ctx.spawn(
        &Spec::new(target("tcphalf"))
            .arg("peer")
            .arg(mode)
            .arg(fam)
            .stdin(In::Pipe),
    );
    peer.wait_for("port ");
    let port = number_after(&peer.stdout.text(), "port ");
    let mut t = ctx.spawn(
        &Spec::new(target("tcphalf"))
            .arg(mode)
            .arg(fam)
            .arg(port.to_string())
            .stdin(In::Pipe),
    );
    peer.wait_for("peer ready\n");
    if mode == "closing" {
        t.wait_for("fin sent\n");
        peer.write_stdin(b"fin\n");
    }
    t.wait_for(&format!("ready {state}\n"));
    let pid = t.pid;
    let before = Snapshot::at_rest(pid, name);
    let img = ctx.path("half.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&[pid], name);
    let inspect = ctx.inspect_json(&img).to_string();
    let kind = if mode == "synsent" {
        "connecting_to"
    } else {
        "TcpConn"
    };
    assert!(
        inspect.contains(kind),
        "{name}: the image should hold the connection: {inspect}"
    );
    let (mut r, after) = restore_until_up(&ctx, &img, &before, pid, name);
    oracle::assert_same_kernel_state(
        name,
        &format!("{name}: tcphalf {mode} {fam}"),
        Cmp::Restored,
        &before,
        &after,
        &[],
    );
    if mode == "synsent" {
        // The peer makes room: the SYN the restored socket sent again gets through, the
        // connect completes as the program expected (poll, SO_ERROR 0), data flows.
        peer.write_stdin(b"check\n");
        r.write_stdin(b"check\n");
        r.wait_for("sent ");
        peer.wait_for("peer: accepted");
        for p in [&mut peer, &mut r] {
            p.write_stdin(b"exit\n");
            p.close_stdin();
        }
        let (pf, rf) = (peer.finish(), r.finish());
        let (pout, rout) = (text(&pf.stdout), text(&rf.stdout));
        assert_eq!(rf.status.code(), Some(0), "{name}: restored run:\n{rout}");
        assert!(
            rout.contains("check: poll 1, SO_ERROR 0, state ESTABLISHED\n"),
            "{name}: {rout}"
        );
        assert!(
            pout.contains("peer: accepted the connection; got 'hello'\n"),
            "{name}: {pout}"
        );
        return;
    }
    // The exchange goes on: the end that must act first does.
    let peer_first = !mode.starts_with("closewait") && mode != "shutrd";
    let (first, second) = if peer_first {
        (&mut peer, &mut r)
    } else {
        (&mut r, &mut peer)
    };
    first.write_stdin(b"check\n");
    if peer_first {
        first.wait_for(if mode == "finwait2" || mode == "finwait1" {
            "peer: sent 'late'"
        } else {
            "then eof"
        });
    } else {
        first.wait_for("check: read");
    }
    second.write_stdin(b"check\n");
    r.wait_for("sent ");
    peer.wait_for(if mode == "finwait2" {
        "peer: sent 'late'"
    } else {
        "then eof"
    });
    for p in [&mut peer, &mut r] {
        p.write_stdin(b"exit\n");
        p.close_stdin();
    }
    let pf = peer.finish();
    let rf = r.finish();
    let (pout, rout) = (text(&pf.stdout), text(&rf.stdout));
    assert_eq!(rf.status.code(), Some(0), "{name}: restored run:\n{rout}");
    assert_eq!(pf.status.code(), Some(0), "{name}: peer:\n{pout}");
    let want_t: &[&str] = match mode {
        "closewait" => &["check: read 'rest' then eof; eof again\n"],
        "closewaiteof" | "shutrd" => &["check: read '' then eof; eof again\n"],
        "finwait2" | "finwait1" => &["check: read 'late' then eof; eof again\n"],
        _ => &["check: eof again\n"],
    };
    for w in want_t {
        assert!(
            rout.contains(w),
            "{name}: the restored run should print {w:?}:\n{rout}"
        );
    }
    assert!(
        rout.contains("check: closed after sending"),
        "{name}: the connection should close:\n{rout}"
    );
    match mode {
        "closewait" | "closewaiteof" | "shutrd" => assert!(
            pout.contains("peer: got 'reply' then eof; eof again\n"),
            "{name}: peer:\n{pout}"
        ),
        "finwait2" => assert!(pout.contains("peer: got 'bye' then eof\n"), "{pout}"),
        _ => {
            // Every byte the program wrote, once, in order, then the end of file once.
            let sent = number_after(&rout, "sent ");
            let read = number_after(&pout, "peer: read ");
            assert!(sent > 0, "{name}: {rout}");
            assert_eq!(
                read, sent,
                "{name}: the peer read\n{pout}\nthe program sent\n{rout}"
            );
            assert!(
                pout.contains("bytes of the stream then eof; eof again\n"),
                "{pout}"
            );
        }
    }
}

#[test]
fn tcp_close_wait_with_unread_data_comes_back_ipv4() {
    half_closed("tcp_close_wait_ipv4", "closewait", "4", "CLOSE_WAIT");
}

#[test]
fn tcp_close_wait_after_end_of_file_read_comes_back_ipv6() {
    half_closed("tcp_close_wait_eof_ipv6", "closewaiteof", "6", "CLOSE_WAIT");
}

#[test]
fn tcp_close_wait_comes_back_v4_mapped() {
    half_closed("tcp_close_wait_mapped", "closewait", "mapped", "CLOSE_WAIT");
}

#[test]
fn tcp_fin_wait2_comes_back_ipv4() {
    half_closed("tcp_fin_wait2_ipv4", "finwait2", "4", "FIN_WAIT2");
}

#[test]
fn tcp_fin_wait2_comes_back_ipv6() {
    half_closed("tcp_fin_wait2_ipv6", "finwait2", "6", "FIN_WAIT2");
}

#[test]
fn tcp_fin_wait1_behind_unsent_data_comes_back_ipv4() {
    half_closed("tcp_fin_wait1_ipv4", "finwait1", "4", "FIN_WAIT1");
}

#[test]
fn tcp_fin_wait1_behind_unsent_data_comes_back_v4_mapped() {
    half_closed("tcp_fin_wait1_mapped", "finwait1", "mapped", "FIN_WAIT1");
}

#[test]
fn tcp_last_ack_comes_back_ipv4() {
    half_closed("tcp_last_ack_ipv4", "lastack", "4", "LAST_ACK");
}

#[test]
fn tcp_last_ack_comes_back_ipv6() {
    half_closed("tcp_last_ack_ipv6", "lastack", "6", "LAST_ACK");
}

#[test]
fn tcp_closing_comes_back_ipv4() {
    half_closed("tcp_closing_ipv4", "closing", "4", "CLOSING");
}

#[test]
fn tcp_closing_comes_back_ipv6() {
    half_closed("tcp_closing_ipv6", "closing", "6", "CLOSING");
}

#[test]
fn tcp_connect_in_progress_is_issued_again_and_completes_ipv4() {
    half_closed("tcp_syn_sent_ipv4", "synsent", "4", "SYN_SENT");
}

#[test]
fn tcp_connect_in_progress_is_issued_again_and_completes_ipv6() {
    half_closed("tcp_syn_sent_ipv6", "synsent", "6", "SYN_SENT");
}

/// A listener with connections waiting to be accepted from a peer outside the tree
/// (one with data already sent, which the dump reads): dump refuses it naming the
/// listener and the client, and the program runs on: it accepts both and reads the
/// data.
#[test]
fn tcp_listener_with_connections_waiting_to_be_accepted_is_refused_and_runs_on() {
    let name = "tcp_listener_with_connections_waiting_to_be_accepted_is_refused";
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(
        &Spec::new(target("tcphalf"))
            .arg("backlog")
            .arg("4")
            .arg("0")
            .stdin(In::Pipe),
    );
    t.wait_for("port ");
    let port = number_after(&t.stdout.text(), "port ");
    let mut peer = ctx.spawn(
        &Spec::new(target("tcphalf"))
            .arg("peer")
            .arg("backlog")
            .arg("4")
            .arg(port.to_string())
            .stdin(In::Pipe),
    );
    peer.wait_for("peer ready\n");
    t.wait_for("ready 2 waiting\n");
    let img = ctx.path("refused.img");
    ctx.try_dump(t.pid, &img)
        .assert_fails(1)
        .assert_stderr_mentions(&[
            "descriptor 3",
            &format!("TCP listener on 127.0.0.1:{port}"),
            "a connection waiting to be accepted from 127.0.0.1:",
            "a client outside the dumped tree",
        ]);
    assert!(!img.exists(), "{name}: a refused dump left an image");
    assert_running_untraced(t.pid, name);
    t.write_stdin(b"check\n");
    t.wait_for("check: accepted 2; got 'early'\n");
    for p in [&mut peer, &mut t] {
        p.write_stdin(b"exit\n");
        p.close_stdin();
    }
    assert_eq!(
        t.finish().status.code(),
        Some(0),
        "{name}: the target's exit"
    );
    assert_eq!(
        peer.finish().status.code(),
        Some(0),
        "{name}: the peer's exit"
    );
}

#[test]
fn tcp_connection_whose_reading_side_the_program_shut_keeps_it_shut_ipv4() {
    half_closed("tcp_shut_rd_ipv4", "shutrd", "4", "ESTABLISHED");
}

#[test]
fn tcp_fin_wait1_behind_unsent_data_comes_back_ipv6() {
    half_closed("tcp_fin_wait1_ipv6", "finwait1", "6", "FIN_WAIT1");
}

#[test]
fn tcp_fin_wait2_comes_back_v4_mapped() {
    half_closed("tcp_fin_wait2_mapped", "finwait2", "mapped", "FIN_WAIT2");
}

#[test]
fn tcp_last_ack_comes_back_v4_mapped() {
    half_closed("tcp_last_ack_mapped", "lastack", "mapped", "LAST_ACK");
}

#[test]
fn tcp_closing_comes_back_v4_mapped() {
    half_closed("tcp_closing_mapped", "closing", "mapped", "CLOSING");
}

#[test]
fn tcp_connect_in_progress_is_issued_again_and_completes_v4_mapped() {
    half_closed("tcp_syn_sent_mapped", "synsent", "mapped", "SYN_SENT");
}

#[test]
fn tcp_connection_whose_reading_side_the_program_shut_keeps_it_shut_ipv6() {
    half_closed("tcp_shut_rd_ipv6", "shutrd", "6", "ESTABLISHED");
}
