//! A TCP peer outside the dumped tree (the test itself) that keeps sending during the
//! dump (issue 14): a counter stream of 8-byte big-endian integers, never paused, which
//! the tree's process (`peerstream.c`) checks integer by integer and writes back. The
//! dump (which kills the tree) runs in the middle of the stream and the peer carries on
//! sending through it and after the restore: the restored process must receive every
//! integer exactly once and in order (no byte lost or doubled), and the peer must get
//! every byte back the same way. The state oracle (run by `Ctx::dump` and
//! `Ctx::restore`) compares the connection before and after (sock_diag, socket options,
//! TCP state and options, descriptors; the queue lengths move with a live peer). The
//! test runs in a network namespace of its own (the dump's netfilter lock too).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// The test's end of the connection: one thread sending the counter without pausing,
/// one reading what the tree writes back and checking it is the same counter.
struct Peer {
    /// Integers sent (whole writes done).
    sent: Arc<AtomicU64>,
    /// Integers that came back, in order.
    back: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<u64, String>>,
}

/// Integers per write.
const CHUNK: u64 = 512;

impl Peer {
    fn start(s: TcpStream) -> Peer {
        s.set_write_timeout(Some(timeout())).expect("timeout");
        s.set_read_timeout(Some(timeout())).expect("timeout");
        let (sent, back, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut w = s.try_clone().expect("clone");
        let (sent2, stop2) = (sent.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            let mut n = 0u64;
            let mut buf = Vec::with_capacity((CHUNK * 8) as usize);
            while !stop2.load(Ordering::SeqCst) {
                buf.clear();
                for v in n..n + CHUNK {
                    buf.extend_from_slice(&v.to_be_bytes());
                }
                w.write_all(&buf)
                    .map_err(|e| format!("the peer's send after {n} integers: {e}"))?;
                n += CHUNK;
                sent2.store(n, Ordering::SeqCst);
            }
            w.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            Ok(n)
        });
        let mut r = s;
        let back2 = back.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536 + 8];
            let (mut have, mut next) = (0usize, 0u64);
            loop {
                let n = r
                    .read(&mut buf[have..have + 65536])
                    .map_err(|e| format!("the peer's read after {next} integers back: {e}"))?;
                if n == 0 {
                    break;
                }
                have += n;
                let mut off = 0;
                while have - off >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[off..off + 8]);
                    let v = u64::from_be_bytes(b);
                    if v != next {
                        return Err(format!(
                            "the tree wrote back integer {v} where {next} was due"
                        ));
                    }
                    next += 1;
                    off += 8;
                }
                buf.copy_within(off..have, 0);
                have -= off;
                back2.store(next, Ordering::SeqCst);
            }
            if have != 0 {
                return Err(format!(
                    "{have} bytes of a partial integer came back at the end"
                ));
            }
            Ok(next)
        });
        Peer {
            sent,
            back,
            stop,
            writer,
            reader,
        }
    }

    /// Wait until `done` holds of (sent, back), naming `what` on timeout.
    fn wait_until(&self, what: &str, done: impl Fn(u64, u64) -> bool) {
        let deadline = Instant::now() + timeout();
        loop {
            let (s, b) = (
                self.sent.load(Ordering::SeqCst),
                self.back.load(Ordering::SeqCst),
            );
            if done(s, b) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {s} integers sent, {b} came back"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until the peer's sends block (the tree's receive window closed).
    fn wait_blocked(&self) {
        let deadline = Instant::now() + timeout();
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let s = self.sent.load(Ordering::SeqCst);
            if s == last && s > 0 {
                return;
            }
            last = s;
            assert!(Instant::now() < deadline, "the peer's sends never blocked");
        }
    }

    /// Stop sending (the end of stream after the last write), and return (sent, back).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self
            .writer
            .join()
            .expect("the writer thread")
            .unwrap_or_else(|e| panic!("{e}"));
        let back = self
            .reader
            .join()
            .expect("the reader thread")
            .unwrap_or_else(|e| panic!("{e}"));
        (sent, back)
    }
}

/// A listener on 127.0.0.1 in a network namespace of the test's own, the tree started
/// as `peerstream MODE PORT` connected to it, and its connection's peer.
fn start(ctx: &Ctx, mode: &str) -> (Proc, TcpStream) {
    thread_net_ns();
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let spec = Spec::new(target("peerstream"))
        .arg(mode)
        .arg(port.to_string())
        .stdin(In::Pipe);
    let mut p = ctx.spawn(&spec);
    let (s, _) = l.accept().expect("accept");
    p.wait_for("ready\n");
    (p, s)
}

/// `ckpt dump PID -o IMG` (the tree killed), held for 300 ms after it read the
/// connection's queues (`CKPT_LINGER`, with the `fault-injection` feature): the peer's
/// segments of those moments must not be taken by the socket in repair mode and lost
/// with it (without the lock from the freeze on, the stream stalls on the missing
/// bytes). The state oracle reads the tree right before.
fn dump_lingering(ctx: &Ctx, pid: i32, img: &std::path::Path) {
    ctx.track(pid);
    ctx.oracle_before_dump(pid, img);
    let out = std::process::Command::new(ckpt_bin())
        .arg("dump")
        .arg(pid.to_string())
        .arg("-o")
        .arg(img)
        .env("CKPT_LINGER", "tcp queues read:300")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ckpt dump");
    assert!(
        out.status.success(),
        "ckpt dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Integers the peer sends after the restore before it ends the stream (a few MB).
const AFTER: u64 = 400_000;

/// `peerstream direct`: the stream runs both ways through the dump (the tree reading
/// and writing back as fast as it can, the peer never pausing), the tree is killed by
/// the dump and restored, and the peer carries on: every integer reaches the restored
/// process once and in order, and comes back so.
#[test]
fn a_stream_from_a_peer_outside_that_never_pauses_reaches_the_restored_tree_whole() {
    let ctx =
        Ctx::new("a_stream_from_a_peer_outside_that_never_pauses_reaches_the_restored_tree_whole");
    let (mut t, s) = start(&ctx, "direct");
    let pids = wait_process_tree(t.pid, 1, "peerstream");
    let peer = Peer::start(s);
    // In full flow both ways before the dump.
    peer.wait_until("the stream before the dump", |s, b| {
        s > 100_000 && b > 50_000
    });
    let img = ctx.path("img");
    dump_lingering(&ctx, t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "peerstream after the dump");
    let at_dump = peer.sent.load(Ordering::SeqCst);
    let r = ctx.restore(&img, &[], In::Pipe);
    peer.wait_until("the stream after the restore", |s, b| {
        s > at_dump + AFTER && b > at_dump + AFTER / 2
    });
    restored_ends(r, peer, "");
}

/// The restored tree's attached restore `r` ends with 0 once `peer` ends its stream,
/// having said `before` and then that it got every integer in order, all of which came
/// back to the peer.
fn restored_ends(mut r: Proc, peer: Peer, before: &str) {
    let (sent, back) = peer.finish();
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the restored tree; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        text(&fin.stdout),
        format!("{before}{sent} integers in order\n"),
        "the restored tree's count"
    );
    assert_eq!(back, sent, "integers sent, and integers that came back");
    eprintln!(
        "{sent} integers ({} MB) each way, in order",
        (sent * 8) >> 20
    );
}

/// `peerstream inflight`: the connection held only by a queued SCM_RIGHTS message (its
/// receiver not there yet), the peer sending until the window closed and trying on
/// through the dump: after the restore the receiver takes the connection, reads the
/// whole stream in order and writes it back.
#[test]
fn a_stream_from_a_peer_outside_to_a_connection_only_in_flight_reaches_the_receiver_whole() {
    let ctx = Ctx::new(
        "a_stream_from_a_peer_outside_to_a_connection_only_in_flight_reaches_the_receiver_whole",
    );
    let (mut t, s) = start(&ctx, "inflight");
    let pids = wait_process_tree(t.pid, 2, "peerstream and its receiver");
    let peer = Peer::start(s);
    peer.wait_blocked();
    let img = ctx.path("img");
    dump_lingering(&ctx, t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "peerstream after the dump");
    let info = text(
        &ctx.ckpt(&[std::ffi::OsStr::new("inspect"), img.as_os_str()])
            .stdout,
    );
    assert!(
        info.lines()
            .any(|l| l.contains("TCP connection") && l.contains("only in flight")),
        "inspect should show the TCP connection only in flight:\n{info}"
    );
    let at_dump = peer.sent.load(Ordering::SeqCst);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.wait_for("C: took the connection\n");
    peer.wait_until("the stream after the restore", |s, b| {
        s > at_dump + AFTER && b > at_dump + AFTER / 2
    });
    restored_ends(r, peer, "C: took the connection\n");
}
