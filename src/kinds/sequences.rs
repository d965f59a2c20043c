//! Restore's call sequences for pipes, unix sockets, TCP connections and credentials,
//! run against the recording test double ([`Recorder`]) instead of a traced process:
//! which calls are made, in which order, with which arguments and data, and what a
//! failure at each call leaves (the error names that call, and nothing runs after it;
//! everything already made in the stub dies with it, by the stage guard).
//!
//! They run as a normal user: nothing here touches the kernel.

use crate::arch::native::nr;
use crate::error::RestoreError;
use crate::kinds::fd::{fanotify, pipe, restore_owner, tcp, unix};
use crate::kinds::task::attrs;
use crate::kinds::task::creds::{self, Own};
use crate::model::{
    Creds, FOwner, FanotifyMark, PipeState, Process, SockMessage, SockOpts, SocketPairState,
    TcpState,
};
use crate::remote::{Ctx, Recorded, Recorder};
use crate::sys::SysError;

/// Where the helper area is in the double (any address: nothing is mapped).
const STUB: u64 = 0x7000_0000;

fn run<T>(
    proc_: &Process,
    rec: &Recorder,
    f: impl FnOnce(&mut Ctx<'_>) -> crate::error::RestoreResult<T>,
) -> crate::error::RestoreResult<T> {
    let mut cx = Ctx::double(rec, STUB, proc_);
    f(&mut cx)
}

fn names(rec: &Recorder) -> Vec<String> {
    rec.names()
}

/// The bytes a call passed through the scratch area at `args[i]`, `len` long, as the
/// call saw them.
fn arg_bytes(_rec: &Recorder, c: &Recorded, i: usize, len: usize) -> Vec<u8> {
    c.bytes(c.args[i], len)
}

/// Make `f` fail at each of its calls in turn (`EIO`): the error names exactly that
/// call and nothing runs after it.
fn each_failure_stops_there<T: std::fmt::Debug>(
    proc_: &Process,
    total: usize,
    f: impl Fn(&mut Ctx<'_>) -> crate::error::RestoreResult<T>,
) {
    let clean = Recorder::new(proc_.pid);
    run(proc_, &clean, &f).expect("the sequence runs without failures");
    let all = names(&clean);
    assert_eq!(all.len(), total, "calls: {all:?}");
    for k in 0..total {
        let rec = Recorder::new(proc_.pid).fail_at(k, libc::EIO);
        let err = run(proc_, &rec, &f).expect_err("a failed call fails the step");
        let made = names(&rec);
        assert_eq!(
            made.len(),
            k + 1,
            "nothing runs after failed call {k}: {made:?}"
        );
        assert_eq!(made[..], all[..=k], "the same calls up to the failure");
        match err {
            RestoreError::Sys(SysError::Remote { what, errno }) => {
                assert_eq!(what, all[k]);
                assert_eq!(errno, libc::EIO);
            }
            other => panic!("call {k} ({}): unexpected error {other}", all[k]),
        }
    }
}

fn process() -> Process {
    Process {
        pid: 4242,
        ..Process::default()
    }
}

#[test]
fn pipe_is_created_sized_filled_and_parked() {
    let p = process();
    let pipe_ = PipeState {
        id: 9,
        capacity: 1 << 16,
        data: b"in flight".to_vec(),
    };
    let rec = Recorder::new(p.pid);
    let (r, w) = run(&p, &rec, |cx| pipe::create_pipe(cx, &pipe_, 20, false)).expect("pipe");
    assert_eq!((r, w), (20, 21), "the ends end up at the temporaries");
    assert_eq!(
        names(&rec),
        [
            "pipe2",
            "F_SETPIPE_SZ",
            "queue pipe 9 data",
            "fcntl(F_DUPFD_CLOEXEC)",
            "fcntl(F_DUPFD_CLOEXEC)",
            "close",
            "close",
            "dup3",
            "close",
            "dup3",
            "close",
        ]
    );
    let c = rec.calls();
    assert_eq!(c[0].args[1], libc::O_CLOEXEC as u64);
    // pipe2 gave 100 (read) and 101 (write): the size and the data go to the write end.
    assert_eq!(c[1].args[..3], [101, libc::F_SETPIPE_SZ as u64, 1 << 16]);
    assert_eq!((c[2].nr, c[2].args[0]), (nr::WRITE, 101));
    assert_eq!(arg_bytes(&rec, &c[2], 1, 9), b"in flight");
    // Both ends go above the temporaries first, then onto them.
    assert_eq!(c[3].args[..3], [100, libc::F_DUPFD_CLOEXEC as u64, 22]);
    assert_eq!(c[7].args[..3], [102, 20, libc::O_CLOEXEC as u64]);
    assert_eq!(c[9].args[..3], [103, 21, libc::O_CLOEXEC as u64]);
    each_failure_stops_there(&p, 11, |cx| pipe::create_pipe(cx, &pipe_, 20, false));
}

#[test]
fn pipe_without_capacity_or_data_keeps_the_defaults() {
    let p = process();
    let pipe_ = PipeState {
        id: 1,
        capacity: 0,
        data: Vec::new(),
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| pipe::create_pipe(cx, &pipe_, 3, true)).expect("pipe");
    let c = rec.calls();
    assert_eq!(c[0].args[1], (libc::O_CLOEXEC | libc::O_DIRECT) as u64);
    assert!(
        !names(&rec)
            .iter()
            .any(|n| n.contains("SETPIPE") || n.contains("queue"))
    );
}

#[test]
fn a_short_write_into_a_pipe_is_an_error_not_lost_data() {
    let p = process();
    let pipe_ = PipeState {
        id: 2,
        capacity: 0,
        data: vec![7; 100],
    };
    let rec = Recorder::new(p.pid).answer(nr::WRITE, 60);
    let err = run(&p, &rec, |cx| pipe::create_pipe(cx, &pipe_, 3, false)).expect_err("short");
    assert!(err.to_string().contains("only 60 of 100"), "{err}");
}

#[test]
fn socket_pair_gets_options_then_data_then_messages_from_the_other_end() {
    let p = process();
    let sp = SocketPairState {
        id: 5,
        typ: libc::SOCK_SEQPACKET,
        data0: b"for end 0".to_vec(),
        data1: Vec::new(),
        msgs0: Vec::new(),
        msgs1: vec![SockMessage {
            creds: None,
            rights: Vec::new(),
            from: Vec::new(),
            data: b"record".to_vec(),
        }],
        opts: [
            SockOpts {
                sndbuf: 8192,
                passcred: true,
                ..SockOpts::default()
            },
            SockOpts::default(),
        ],
        ..SocketPairState::default()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    })
    .expect("pair");
    let n = names(&rec);
    assert_eq!(
        n[..5],
        [
            "socketpair",
            "SO_SNDBUFFORCE",
            "SO_PASSCRED",
            // Nothing for end 1 to read: no write at all.
            "queue socket pair 5 data",
            "queue socket pair 5 message",
        ]
    );
    let c = rec.calls();
    assert_eq!(
        c[0].args[..2],
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC) as u64
        ]
    );
    // End 0 (100) gets its options; half the recorded buffer (the kernel doubles it).
    assert_eq!(c[1].args[0], 100);
    assert_eq!(c[1].args[2], libc::SO_SNDBUFFORCE as u64);
    assert_eq!(arg_bytes(&rec, &c[1], 3, 4), 4096u32.to_le_bytes());
    // What end 0 reads is written by end 1 (101); end 1's message is sent by end 0.
    assert_eq!(c[3].args[0], 101);
    assert_eq!(arg_bytes(&rec, &c[3], 1, 9), b"for end 0");
    assert_eq!(c[4].args[0], 100);
    assert_eq!(
        c[4].args[3],
        libc::MSG_DONTWAIT as u64,
        "a full queue never blocks"
    );
    assert_eq!(c[4].args[4..], [0, 0], "to the peer, no address");
    assert_eq!(arg_bytes(&rec, &c[4], 1, 6), b"record");
    let total = n.len();
    each_failure_stops_there(&p, total, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    });
}

#[test]
fn socket_pair_ends_get_their_names_first_and_are_shut_down_last() {
    let p = process();
    let sp = SocketPairState {
        id: 6,
        typ: libc::SOCK_STREAM,
        data0: b"unread".to_vec(),
        name1: b"\0ab12f".to_vec(),
        shutdown: [1, 2],
        opts: [
            SockOpts::default(),
            SockOpts {
                passcred: true,
                ..SockOpts::default()
            },
        ],
        ..SocketPairState::default()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    })
    .expect("pair");
    let n = names(&rec);
    assert_eq!(
        n[..6],
        [
            "socketpair",
            // Bound before SO_PASSCRED, which would autobind it to another name.
            "bind unix socket @ab12f",
            "SO_PASSCRED",
            "queue socket pair 6 data",
            // After the data, which a shut end would refuse.
            "shutdown",
            "shutdown",
        ]
    );
    let c = rec.calls();
    assert_eq!(c[1].args[0], 101);
    assert_eq!(arg_bytes(&rec, &c[1], 1, 8)[2..], *b"\0ab12f");
    // RCV_SHUTDOWN (1) is SHUT_RD on end 0, SEND_SHUTDOWN (2) SHUT_WR on end 1.
    assert_eq!(c[4].args[..2], [100, libc::SHUT_RD as u64]);
    assert_eq!(c[5].args[..2], [101, libc::SHUT_WR as u64]);
    let total = n.len();
    each_failure_stops_there(&p, total, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    });
}

#[test]
fn an_accepted_connection_is_made_through_a_listener_bound_to_its_name() {
    let p = process();
    let sp = SocketPairState {
        id: 7,
        typ: libc::SOCK_SEQPACKET,
        name0: b"\0ckpt-test-client".to_vec(),
        name1: b"\0ckpt-test-server".to_vec(),
        accepted: Some(1),
        shutdown: [3, 3],
        ..SocketPairState::default()
    };
    let rec = Recorder::new(p.pid);
    let ends = run(&p, &rec, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    })
    .expect("pair");
    assert_eq!(ends, (30, 31));
    let n = names(&rec);
    assert_eq!(
        n[..8],
        [
            "socket(AF_UNIX) to accept a connection",
            "bind unix socket @ckpt-test-server",
            "listen to accept a connection",
            "socket(AF_UNIX) to connect",
            "bind unix socket @ckpt-test-client",
            "connect to unix socket @ckpt-test-server",
            "accept4",
            // The listener goes at once: the name is free for the program's own.
            "close",
        ]
    );
    let c = rec.calls();
    // listener 100, connecting end 101 (end 0), accepted 102 (end 1).
    assert_eq!(c[1].args[0], 100);
    assert_eq!(c[4].args[0], 101);
    assert_eq!(c[5].args[0], 101);
    assert_eq!(c[6].args[0], 100);
    assert_eq!(c[7].args[0], 100);
    assert_eq!(
        c[0].args[1],
        (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC) as u64
    );
    // SHUT_RDWR on both ends, end 0 first.
    assert_eq!(n[8..10], ["shutdown", "shutdown"]);
    assert_eq!(c[8].args[..2], [101, libc::SHUT_RDWR as u64]);
    assert_eq!(c[9].args[..2], [102, libc::SHUT_RDWR as u64]);
    let total = n.len();
    each_failure_stops_there(&p, total, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    });
}

#[test]
fn unix_listener_is_bound_to_its_name_and_listens() {
    let p = process();
    let rec = Recorder::new(p.pid);
    let name = b"\0ckpt-test-listener";
    run(&p, &rec, |cx| {
        unix::create_listener(cx, (name, b""), libc::SOCK_STREAM, 17, &Default::default())
    })
    .expect("listener");
    assert_eq!(
        names(&rec),
        [
            "socket(AF_UNIX)",
            "bind unix socket @ckpt-test-listener",
            "listen"
        ]
    );
    let c = rec.calls();
    let len = c[1].args[2] as usize;
    assert_eq!(len, 2 + name.len(), "an abstract name's length is exact");
    let sa = arg_bytes(&rec, &c[1], 1, len);
    assert_eq!(&sa[2..], name);
    assert_eq!(c[2].args[..2], [100, 17]);
    each_failure_stops_there(&p, 3, |cx| {
        unix::create_listener(cx, (name, b""), libc::SOCK_STREAM, 17, &Default::default())
    });
}

fn tcp_state() -> TcpState {
    let v4 = |port: u16| {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&[127, 0, 0, 1]);
        a.resize(16, 0);
        a
    };
    TcpState {
        family: libc::AF_INET,
        local: v4(8080),
        peer: v4(40000),
        snd_seq: 1000,
        rcv_seq: 2000,
        sndq: b"unsent".to_vec(),
        rcvq: b"unread".to_vec(),
        mss: 1460,
        snd_wscale: 7,
        rcv_wscale: 9,
        sack: true,
        timestamps: true,
        tsval: 123,
        window: [1, 2, 3, 4, 5],
        nodelay: true,
        ..TcpState::default()
    }
}

#[test]
fn tcp_buffer_sizes_the_program_set_come_back_and_the_rest_is_autotuned() {
    let p = process();
    let c = TcpState {
        sndq: Vec::new(),
        rcvq: Vec::new(),
        keepalive: true,
        reuseaddr: true,
        sndbuf: 8192,
        rcvbuf: 131072,
        buf_lock: 1,
        ..tcp_state()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect("conn");
    let n = names(&rec);
    let at = |name: &str| {
        n.iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("{name} in {n:?}"))
    };
    let calls = rec.calls();
    let val = |i: usize| {
        let b = arg_bytes(&rec, &calls[i], 3, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    // The send buffer the program locked: half the recorded (doubled) value; the
    // receive buffer, autotuned at dump, is left to the kernel; the locks are the
    // original's.
    assert_eq!(val(at("SO_SNDBUFFORCE")), 4096);
    assert!(!n.iter().any(|x| x == "SO_RCVBUFFORCE"), "{n:?}");
    assert_eq!(val(at("SO_BUF_LOCK")), 1);
    // Still in repair mode: out of it, and the options that need that, only at commit
    // (`tcp::finish_conn`, by ckpt itself).
    for x in ["TCP_REPAIR off", "SO_KEEPALIVE", "SO_REUSEADDR"] {
        assert!(!n.iter().any(|y| y == x), "{x} in {n:?}");
    }
}

#[test]
fn tcp_connection_is_rebuilt_in_repair_mode_in_the_kernel_s_order() {
    let p = process();
    let c = tcp_state();
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect("conn");
    assert_eq!(
        names(&rec),
        [
            "socket(TCP)",
            "TCP_REPAIR on",
            "bind TCP connection",
            "TCP_REPAIR_QUEUE",
            "TCP_QUEUE_SEQ",
            "TCP_REPAIR_QUEUE",
            "TCP_QUEUE_SEQ",
            "TCP_MAXSEG",
            "connect (repair)",
            "TCP_MAXSEG",
            "TCP_REPAIR_OPTIONS",
            "TCP_TIMESTAMP",
            "SO_SNDBUFFORCE",
            "SO_RCVBUFFORCE",
            "TCP_REPAIR_QUEUE",
            "queue TCP connection data",
            "TCP_REPAIR_QUEUE",
            "queue TCP connection data",
            "SO_BUF_LOCK",
            "TCP_REPAIR_WINDOW",
        ]
    );
    let calls = rec.calls();
    let u32_at = |c: &Recorded| {
        let b = arg_bytes(&rec, c, 3, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    // The receive queue's sequence first, then the send queue's.
    assert_eq!((u32_at(&calls[3]), u32_at(&calls[4])), (1, 2000));
    assert_eq!((u32_at(&calls[5]), u32_at(&calls[6])), (2, 1000));
    assert_eq!(arg_bytes(&rec, &calls[2], 1, 16), c.local);
    assert_eq!(arg_bytes(&rec, &calls[8], 1, 16), c.peer);
    // TCP_MAXSEG around connect: the image's segment size (and the timestamp option's
    // room connect takes off it when this host uses timestamps), then cleared.
    let ts = if crate::sys::tcp::timestamps_on() {
        12
    } else {
        0
    };
    assert_eq!((u32_at(&calls[7]), u32_at(&calls[9])), (1460 + ts, 0));
    // MSS, window scales, SACK, timestamps as (code, value) pairs.
    let opts = arg_bytes(&rec, &calls[10], 3, calls[10].args[4] as usize);
    let words: Vec<u32> = opts
        .chunks(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    assert_eq!(words, [2, 1460, 3, 7 | (9 << 16), 4, 0, 8, 0]);
    // Buffers big enough for the queued data first (64 KiB of room above it)...
    assert_eq!(u32_at(&calls[12]), 6 + (1 << 16));
    assert_eq!(u32_at(&calls[13]), 6 + (1 << 16));
    // ...then the send queue's data, then the receive queue's, by send(2), never
    // blocking...
    assert_eq!(u32_at(&calls[14]), 2);
    assert_eq!(calls[15].nr, nr::SENDTO);
    assert_eq!(calls[15].args[3], libc::MSG_DONTWAIT as u64);
    assert_eq!(arg_bytes(&rec, &calls[15], 1, 6), b"unsent");
    assert_eq!(u32_at(&calls[16]), 1);
    assert_eq!(arg_bytes(&rec, &calls[17], 1, 6), b"unread");
    assert_eq!(calls[17].args[3], libc::MSG_DONTWAIT as u64);
    // ...and the sizes left to the kernel's tuning again.
    assert_eq!(u32_at(&calls[18]), 0);
    let w = arg_bytes(&rec, &calls[19], 3, 20);
    assert_eq!(w, [1u32, 2, 3, 4, 5].map(u32::to_le_bytes).concat());
    each_failure_stops_there(&p, 20, |cx| tcp::create_tcp_conn(cx, &c));
}

#[test]
fn half_closed_tcp_connections_replay_their_fin_in_repair_mode() {
    use crate::sys::tcp::{
        TCP_CLOSE_WAIT, TCP_CLOSING, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK,
    };
    let p = process();
    let base = TcpState {
        sndq: Vec::new(),
        ..tcp_state()
    };
    // After the established connection's calls (up to TCP_REPAIR_WINDOW): our FIN goes
    // into the send queue as sent (the send queue selected, then shutdown); the peer's
    // FIN and its acknowledgment are segments ckpt sends itself (none in the double).
    let ours = ["TCP_REPAIR_QUEUE", "shutdown"];
    for (state, tail) in [
        (TCP_FIN_WAIT1, &ours[..]),
        (TCP_FIN_WAIT2, &ours[..]),
        (TCP_CLOSE_WAIT, &[][..]),
        (TCP_LAST_ACK, &ours[..]),
        (TCP_CLOSING, &ours[..]),
    ] {
        let c = TcpState {
            state,
            ..base.clone()
        };
        assert!(tcp::conn_state_ok(&c), "state {state}");
        let rec = Recorder::new(p.pid);
        run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect("conn");
        let n = names(&rec);
        let w = n
            .iter()
            .position(|x| x == "TCP_REPAIR_WINDOW")
            .expect("window");
        assert_eq!(n[w + 1..], tail[..], "state {state}: {n:?}");
        let calls = rec.calls();
        if !tail.is_empty() {
            let q = arg_bytes(&rec, &calls[w + 1], 3, 4);
            assert_eq!(
                u32::from_le_bytes([q[0], q[1], q[2], q[3]]),
                2,
                "send queue"
            );
            assert_eq!(calls[w + 2].args[1], libc::SHUT_WR as u64);
        }
        // The window's edge stops before a FIN received (it is not there yet).
        let win = arg_bytes(&rec, &calls[w], 3, 20);
        let rcv_wup = u32::from_le_bytes([win[16], win[17], win[18], win[19]]);
        assert_eq!(rcv_wup, 5, "state {state}");
    }
    // A FIN received with the window's edge after it: clamped to the end of the data.
    let c = TcpState {
        state: TCP_CLOSE_WAIT,
        rcvq: Vec::new(),
        window: [1, 2, 3, 4, 2001],
        ..base.clone()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect("conn");
    let calls = rec.calls();
    let w = calls.len() - 1;
    let win = arg_bytes(&rec, &calls[w], 3, 20);
    assert_eq!(
        u32::from_le_bytes([win[16], win[17], win[18], win[19]]),
        2000
    );
    // The program's own shutdown(SHUT_RD) on an established connection comes back.
    let c = TcpState {
        rd_shut: true,
        ..base.clone()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect("conn");
    let calls = rec.calls();
    assert_eq!(names(&rec).last().map(String::as_str), Some("shutdown"));
    assert_eq!(calls[calls.len() - 1].args[1], libc::SHUT_RD as u64);
}

#[test]
fn tcp_connection_states_restore_cannot_rebuild_are_malformed() {
    use crate::sys::tcp::{TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT2};
    let ok = |c: TcpState| tcp::conn_state_ok(&c);
    assert!(ok(tcp_state()));
    assert!(ok(TcpState {
        state: TCP_ESTABLISHED,
        ..tcp_state()
    }));
    // SYN_SENT, TIME_WAIT, LISTEN are not connections restore builds this way.
    for state in [2, 6, 7, 10, 12, 200] {
        assert!(!ok(TcpState {
            state,
            ..tcp_state()
        }));
    }
    // A FIN acknowledged leaves nothing unacknowledged before it.
    assert!(!ok(TcpState {
        state: TCP_FIN_WAIT2,
        ..tcp_state()
    }));
    // An end of file read: a FIN received, nothing unread before it.
    assert!(!ok(TcpState {
        fin_read: true,
        ..tcp_state()
    }));
    assert!(!ok(TcpState {
        state: TCP_CLOSE_WAIT,
        fin_read: true,
        ..tcp_state()
    }));
    assert!(ok(TcpState {
        state: TCP_CLOSE_WAIT,
        fin_read: true,
        rcvq: Vec::new(),
        ..tcp_state()
    }));
}

#[test]
fn a_full_tcp_queue_fails_the_restore_instead_of_blocking() {
    let p = process();
    let c = tcp_state();
    // The send of the send queue's data (call 15, see above) finds no room: an error
    // that says so, not a stub blocked in send(2).
    let rec = Recorder::new(p.pid).fail_at(15, libc::EAGAIN);
    let err = run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect_err("full queue");
    let msg = err.to_string();
    assert!(
        msg.contains("TCP connection") && msg.contains("took only 0 of the 6 queued bytes"),
        "{msg}"
    );
    assert_eq!(
        names(&rec).last().map(String::as_str),
        Some("queue TCP connection data")
    );
}

#[test]
fn tcp_connection_with_a_bad_address_is_refused_before_any_call() {
    let p = process();
    let mut c = tcp_state();
    c.peer.truncate(5);
    let rec = Recorder::new(p.pid);
    let err = run(&p, &rec, |cx| tcp::create_tcp_conn(cx, &c)).expect_err("bad address");
    assert!(matches!(err, RestoreError::Malformed(_)), "{err}");
    assert!(names(&rec).is_empty());
}

fn root_own() -> Own {
    Own {
        euid_root: true,
        creds: Creds {
            uid: [0; 4],
            gid: [0; 4],
            groups: vec![0],
            cap_inh: 0,
            cap_prm: !0 >> 23,
            cap_eff: !0 >> 23,
            cap_bnd: !0 >> 23,
            cap_amb: 0,
            no_new_privs: false,
            seccomp: 0,
            securebits: 0,
        },
        rlimits: Vec::new(),
        nr_open: 1 << 20,
    }
}

#[test]
fn credentials_of_an_unprivileged_user_are_set_in_order() {
    let own = root_own();
    let mut p = process();
    p.creds = Creds {
        uid: [1000, 1000, 1000, 1000],
        gid: [100, 100, 100, 100],
        groups: vec![100, 27],
        cap_bnd: own.creds.cap_bnd & !(1 << 21), // without CAP_SYS_ADMIN
        ..Creds::default()
    };
    let rec = Recorder::new(p.pid);
    let changed = run(&p, &rec, |cx| creds::restore_creds(cx, &own, &p.creds)).expect("creds");
    assert!(changed);
    assert_eq!(
        names(&rec),
        [
            "capset",
            "drop capability from bounding set",
            "setgroups",
            "setresgid",
            "setfsgid",
            "prctl(PR_SET_KEEPCAPS)",
            "setresuid",
            "setfsuid",
            "capset",
            // keep_caps was turned on for the setuid calls: off again, as the image had it.
            "prctl(PR_SET_KEEPCAPS)",
            "capset",
        ]
    );
    let c = rec.calls();
    assert_eq!(c[1].args[..2], [libc::PR_CAPBSET_DROP as u64, 21]);
    assert_eq!(c[5].args[..2], [libc::PR_SET_KEEPCAPS as u64, 1]);
    assert_eq!(c[9].args[..2], [libc::PR_SET_KEEPCAPS as u64, 0]);
    assert_eq!(c[2].args[0], 2);
    assert_eq!(
        arg_bytes(&rec, &c[2], 1, 8),
        [100u32.to_le_bytes(), 27u32.to_le_bytes()].concat()
    );
    assert_eq!(c[3].args[..3], [100, 100, 100]);
    assert_eq!(c[6].args[..3], [1000, 1000, 1000]);
    assert_eq!(c[7].args[0], 1000);
    // The last capset gives the image's (empty) sets: header version 3, then zeros.
    let hdr = arg_bytes(&rec, &c[10], 0, 8);
    assert_eq!(&hdr[..4], &0x2008_0522u32.to_le_bytes());
    assert_eq!(arg_bytes(&rec, &c[10], 1, 24), [0u8; 24]);
    each_failure_stops_there(&p, 11, |cx| creds::restore_creds(cx, &own, &p.creds));
}

#[test]
fn unchanged_credentials_make_no_call() {
    let own = root_own();
    let mut p = process();
    p.creds = own.creds.clone();
    let rec = Recorder::new(p.pid);
    let changed = run(&p, &rec, |cx| creds::restore_creds(cx, &own, &p.creds)).expect("creds");
    assert!(!changed);
    assert!(names(&rec).is_empty());
}

#[test]
fn ambient_capabilities_and_securebits_come_after_the_ids() {
    let own = root_own();
    let mut p = process();
    p.creds = Creds {
        uid: [1000; 4],
        gid: [0; 4],
        groups: vec![0],
        cap_prm: 1 << 10,
        cap_inh: 1 << 10,
        cap_eff: 1 << 10,
        cap_amb: 1 << 10,
        cap_bnd: own.creds.cap_bnd,
        no_new_privs: true,
        securebits: 1 << 2, // SECBIT_NO_SETUID_FIXUP
        ..Creds::default()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| creds::restore_creds(cx, &own, &p.creds)).expect("creds");
    assert_eq!(
        names(&rec),
        [
            "prctl(PR_SET_NO_NEW_PRIVS)",
            "capset",
            "prctl(PR_SET_KEEPCAPS)",
            "setresuid",
            "setfsuid",
            "capset",
            "raise ambient capability",
            "prctl(PR_SET_SECUREBITS)",
            "capset",
        ]
    );
    let c = rec.calls();
    assert_eq!(
        c[6].args[..3],
        [
            libc::PR_CAP_AMBIENT as u64,
            libc::PR_CAP_AMBIENT_RAISE as u64,
            10
        ]
    );
    assert_eq!(c[7].args[..2], [libc::PR_SET_SECUREBITS as u64, 1 << 2]);
}

#[test]
fn dumpable_and_parent_death_signal_are_set_again_after_the_ids() {
    let mut p = process();
    p.misc.dumpable = 0;
    p.misc.pdeathsig = libc::SIGTERM;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, creds::after_creds).expect("after");
    assert_eq!(
        names(&rec),
        ["prctl(PR_SET_DUMPABLE)", "prctl(PR_SET_PDEATHSIG)"]
    );
    assert_eq!(
        rec.calls()[1].args[..2],
        [libc::PR_SET_PDEATHSIG as u64, 15]
    );
}

#[test]
fn thp_disable_flags_are_set_as_recorded() {
    for (recorded, args) in [(0, [0, 0]), (1, [1, 0]), (3, [1, 2])] {
        let mut p = process();
        p.misc.thp_disable = recorded;
        let rec = Recorder::new(p.pid);
        run(&p, &rec, attrs::set_thp_disable).expect("thp");
        assert_eq!(names(&rec), ["prctl(PR_SET_THP_DISABLE)"]);
        assert_eq!(
            rec.calls()[0].args[..3],
            [libc::PR_SET_THP_DISABLE as u64, args[0], args[1]]
        );
    }
}

#[test]
fn descriptor_signal_owner_and_signal_are_set_again() {
    let p = process();
    let ck = crate::kinds::testutil::checkpoint(vec![p.clone()]);
    let mut f = crate::kinds::testutil::fd(7, crate::kinds::testutil::eventfd());
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_owner(cx, &ck, &f)).expect("no owner");
    assert!(names(&rec).is_empty(), "nothing recorded, nothing set");
    f.owner = Some(FOwner {
        kind: 2,
        pid: 4242,
        sig: libc::SIGUSR1,
    });
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_owner(cx, &ck, &f)).expect("owner");
    assert_eq!(names(&rec), ["fcntl(F_SETOWN_EX)", "fcntl(F_SETSIG)"]);
    let c = rec.calls();
    assert_eq!((c[0].nr, c[0].args[0], c[0].args[1]), (nr::FCNTL, 7, 15));
    // struct f_owner_ex { int type; pid_t pid; }
    let mut want = 2i32.to_ne_bytes().to_vec();
    want.extend(4242i32.to_ne_bytes());
    assert_eq!(arg_bytes(&rec, &c[0], 2, 8), want);
    assert_eq!(c[1].args[..3], [7, 10, libc::SIGUSR1 as u64]);
    each_failure_stops_there(&p, 2, |cx| restore_owner(cx, &ck, &f));
    // Only a signal (no owner): F_SETSIG alone.
    f.owner = Some(FOwner {
        kind: 0,
        pid: 0,
        sig: 40,
    });
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_owner(cx, &ck, &f)).expect("signal");
    assert_eq!(names(&rec), ["fcntl(F_SETSIG)"]);
}

/// R (4242) -> C (4243, unshared) -> G (4244; PID 1 below, leads group 4244) -> P
/// (4245; PID 2 below, with thread 4246, TID 3 below).
fn nested_pair() -> crate::model::Checkpoint {
    use crate::model::NestedPidNs;
    let mut procs: Vec<Process> = (4242..4246)
        .map(|pid| Process {
            pid,
            ppid: pid - 1,
            pgid: 4242,
            sid: 4242,
            threads: vec![crate::kinds::testutil::thread(pid)],
            ..Process::default()
        })
        .collect();
    procs[1].pid_ns_for_children = Some(1);
    for (q, id) in procs[2..].iter_mut().zip([1, 2]) {
        q.pid_ns = 1;
        q.nspid = vec![id];
        q.pgid = 4244;
    }
    let mut t = crate::kinds::testutil::thread(4246);
    t.nstid = vec![3];
    procs[3].threads.push(t);
    let mut ck = crate::kinds::testutil::checkpoint(procs);
    ck.pid_namespaces = vec![NestedPidNs { parent: 0 }];
    ck
}

/// A process of a nested PID namespace sets its descriptors' signal owners as its
/// namespace numbers them: its own process group (-pgrp, by its leader G, PID 1 there),
/// its own thread (F_OWNER_TID), its parent.
#[test]
fn a_nested_process_sets_owners_in_its_own_namespace() {
    use linux_raw_sys::general::{F_OWNER_PGRP, F_OWNER_PID, F_OWNER_TID};
    let ck = nested_pair();
    let p = &ck.processes[3];
    for (kind, owner, want) in [
        (F_OWNER_PGRP, 4244, 1i32),
        (F_OWNER_TID, 4246, 3),
        (F_OWNER_PID, 4245, 2),
        (F_OWNER_PID, 4244, 1),
    ] {
        let mut f = crate::kinds::testutil::fd(7, crate::kinds::testutil::eventfd());
        f.owner = Some(FOwner {
            kind: kind as i32,
            pid: owner,
            sig: 0,
        });
        let rec = Recorder::new(p.pid);
        run(p, &rec, |cx| restore_owner(cx, &ck, &f)).expect("owner");
        let c = rec.calls();
        let mut bytes = (kind as i32).to_ne_bytes().to_vec();
        bytes.extend(want.to_ne_bytes());
        assert_eq!(arg_bytes(&rec, &c[0], 2, 8), bytes, "owner {owner}");
    }
    // R is outside P's namespace: no ID to give (plan refuses it first).
    let mut f = crate::kinds::testutil::fd(7, crate::kinds::testutil::eventfd());
    f.owner = Some(FOwner {
        kind: F_OWNER_PID as i32,
        pid: 4242,
        sig: 0,
    });
    let rec = Recorder::new(p.pid);
    assert!(run(p, &rec, |cx| restore_owner(cx, &ck, &f)).is_err());
    assert!(names(&rec).is_empty(), "nothing set");
}

/// A POSIX timer of a nested process that signals one of its threads (SIGEV_THREAD_ID)
/// is made naming the thread by its ID in the process's own namespace.
#[test]
fn a_nested_process_timer_names_its_thread_in_its_own_namespace() {
    let mut ck = nested_pair();
    ck.processes[3].posix_timers = vec![crate::model::PosixTimer {
        id: 0,
        clock: libc::CLOCK_MONOTONIC,
        signo: libc::SIGUSR1,
        sigev_value: 0,
        notify: 4,
        notify_tid: 4246,
        value_ns: 0,
        interval_ns: 0,
        overrun: 0,
    }];
    let p = &ck.processes[3];
    let rec = Recorder::new(p.pid);
    let r = run(p, &rec, crate::kinds::task::timers::restore_timers);
    // The double returns 0 for the timer ID, the ID asked for.
    r.expect("timer");
    let c = rec.calls();
    let create = c
        .iter()
        .find(|c| c.nr == nr::TIMER_CREATE)
        .expect("timer_create");
    // struct sigevent: value (8), signo, notify, tid.
    let ev = arg_bytes(&rec, create, 1, 20);
    assert_eq!(ev[16..20], 3i32.to_le_bytes(), "TID 3 in its namespace");
}

#[test]
fn a_standard_descriptor_from_outside_gets_its_flags_on_the_description_it_is_given() {
    use crate::kinds::fd::place_inherited;
    use crate::kinds::testutil::fd;
    let p = process();
    let mut f = fd(
        1,
        crate::model::FdKind::Inherited {
            what: "pipe:[5]".into(),
            flags: (libc::O_WRONLY | libc::O_NONBLOCK) as u32,
            tty: None,
        },
    );
    f.cloexec = true;
    let flags = (libc::O_WRONLY | libc::O_NONBLOCK) as u32;
    // ckpt's own descriptor 1 has O_APPEND (whoever started the restore asked for it):
    // kept; O_NONBLOCK as the program had it; close-on-exec as the descriptor had it.
    let rec = Recorder::new(p.pid).answer(nr::FCNTL, i64::from(libc::O_APPEND));
    run(&p, &rec, |cx| place_inherited(cx, &f, flags)).expect("inherited");
    assert_eq!(
        names(&rec),
        ["fcntl(F_GETFL)", "fcntl(F_SETFD)", "fcntl(F_SETFL)"]
    );
    let c = rec.calls();
    assert_eq!(c[0].args[..2], [1, libc::F_GETFL as u64]);
    assert_eq!(c[1].args[..3], [1, libc::F_SETFD as u64, 1]);
    assert_eq!(
        c[2].args[..3],
        [
            1,
            libc::F_SETFL as u64,
            (libc::O_NONBLOCK | libc::O_APPEND) as u64
        ]
    );
    // Not close-on-exec, no O_APPEND anywhere: both cleared.
    f.cloexec = false;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| place_inherited(cx, &f, 0)).expect("inherited");
    let c = rec.calls();
    assert_eq!((c[1].args[2], c[2].args[2]), (0, 0));
    // ckpt was started without that descriptor: nothing to give flags to.
    let rec = Recorder::new(p.pid).fail_at(0, libc::EBADF);
    run(&p, &rec, |cx| place_inherited(cx, &f, flags)).expect("absent");
    assert_eq!(names(&rec), ["fcntl(F_GETFL)"]);
    each_failure_stops_there(&p, 3, |cx| place_inherited(cx, &f, flags));
}

#[test]
fn a_pipe_or_socket_made_by_restore_gets_its_inode_owner_and_nothing_else_does() {
    use crate::kinds::fd::restore_inode_owner;
    use crate::kinds::testutil::fd;
    use crate::model::{FdKind, InodeOwner};
    let p = process();
    let owner = Some(InodeOwner {
        uid: 65534,
        gid: 65533,
    });
    let mut f = fd(
        4,
        FdKind::Pipe {
            id: 9,
            write: true,
            flags: libc::O_WRONLY as u32,
        },
    );
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_inode_owner(cx, &f)).expect("not recorded");
    assert!(names(&rec).is_empty(), "an older image: nothing to set");
    f.inode_owner = owner;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_inode_owner(cx, &f)).expect("owner");
    assert_eq!(names(&rec), ["fchown"]);
    assert_eq!(rec.calls()[0].args[..3], [4, 65534, 65533]);
    each_failure_stops_there(&p, 1, |cx| restore_inode_owner(cx, &f));
    // A descriptor sharing an earlier one's description: done through that one.
    f.shared_with = Some((4242, 3));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_inode_owner(cx, &f)).expect("shared");
    assert!(names(&rec).is_empty());
    // A pipe from outside the tree is never touched.
    let mut g = fd(
        0,
        FdKind::Inherited {
            what: "pipe:[5]".into(),
            flags: 0,
            tty: None,
        },
    );
    g.inode_owner = owner;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| restore_inode_owner(cx, &g)).expect("inherited");
    assert!(names(&rec).is_empty());
}

#[test]
fn a_zombie_stub_takes_the_dead_process_s_name_and_dispositions() {
    use crate::kinds::task::tree;
    use crate::model::ZombieState;
    let mut p = process();
    p.comm = b"a-rather-long-process-name".to_vec();
    let bit = |s: i32| 1u64 << (s - 1);
    let z = ZombieState {
        blocked: bit(libc::SIGUSR2),
        // SIGTERM both ignored and the signal it died of: the default wins.
        ignored: bit(libc::SIGPIPE) | bit(libc::SIGTERM),
        caught: bit(libc::SIGUSR1) | bit(40),
        creds: false,
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tree::zombie_looks(cx, &z, libc::SIGTERM)).expect("zombie");
    let calls = rec.calls();
    assert_eq!(calls[0].what, "prctl(PR_SET_NAME)");
    assert_eq!(arg_bytes(&rec, &calls[0], 1, 16), b"a-rather-long-p\0");
    // Every signal but SIGKILL and SIGSTOP, in order, in the same batch.
    let acts: Vec<&Recorded> = calls[1..].iter().collect();
    assert_eq!(acts.len(), 62);
    assert!(calls.iter().all(|c| c.batched));
    let mut handlers = std::collections::BTreeMap::new();
    for c in &acts {
        assert_eq!(c.nr, nr::RT_SIGACTION);
        assert_eq!((c.args[2], c.args[3]), (0, 8));
        let act = arg_bytes(&rec, c, 1, 32);
        let h = u64::from_le_bytes(act[..8].try_into().expect("8 bytes"));
        assert_eq!(act[8..], [0u8; 24]);
        handlers.insert(c.args[0] as i32, h);
    }
    assert!(!handlers.contains_key(&libc::SIGKILL) && !handlers.contains_key(&libc::SIGSTOP));
    assert_eq!(handlers[&libc::SIGPIPE], 1, "ignored");
    assert_eq!(
        handlers[&libc::SIGTERM],
        0,
        "the signal it dies of: default"
    );
    assert_eq!(handlers[&libc::SIGUSR1], STUB + 2, "caught: any handler");
    assert_eq!(handlers[&40], STUB + 2);
    assert_eq!(handlers[&libc::SIGUSR2], 0, "blocked but default");
    assert_eq!(handlers.values().filter(|&&h| h == 0).count(), 59);
}

#[test]
fn a_message_goes_with_its_senders_credentials_and_descriptors_in_flight() {
    let p = process();
    // (sendmsg's length is in the msghdr: the double is told what it took.)
    let rec = Recorder::new(p.pid).answer(nr::SENDMSG, 2);
    run(&p, &rec, |cx| {
        cx.send_message_as(7, b"hi", None, Some((10, 65534, 65533)), &[5, 6], "m")
    })
    .expect("sent");
    assert_eq!(names(&rec), ["queue m message"]);
    let c = &rec.calls()[0];
    assert_eq!(c.nr, nr::SENDMSG);
    assert_eq!(c.args[0], 7);
    assert_eq!(
        c.args[2],
        libc::MSG_DONTWAIT as u64,
        "a full queue never blocks"
    );
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let mh = arg_bytes(&rec, c, 1, 56);
    assert_eq!(word(&mh, 0), 0, "to the peer, no address");
    assert_eq!(word(&mh, 24), 1, "one iovec");
    let iov = c.bytes(word(&mh, 16), 16);
    assert_eq!(c.bytes(word(&iov, 0), 2), b"hi");
    assert_eq!(word(&iov, 8), 2);
    // SCM_CREDENTIALS (CMSG_SPACE(12) = 32), then SCM_RIGHTS with two descriptors
    // (CMSG_LEN(8) = 24, padded to 24).
    let len = word(&mh, 40) as usize;
    assert_eq!(len, 32 + 24);
    let cm = c.bytes(word(&mh, 32), len);
    let int = |i: usize| i32::from_le_bytes(cm[i..i + 4].try_into().unwrap());
    assert_eq!(word(&cm, 0), 28);
    assert_eq!((int(8), int(12)), (libc::SOL_SOCKET, libc::SCM_CREDENTIALS));
    assert_eq!((int(16), int(20), int(24)), (10, 65534, 65533));
    assert_eq!(word(&cm, 32), 24);
    assert_eq!((int(40), int(44)), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
    assert_eq!((int(48), int(52)), (5, 6));
}

/// A pty's slave side is opened as the original was: by its name (the descriptor then
/// has O_LARGEFILE, as open(2) gives it) or from the master (TIOCGPTPEER), never with
/// O_CLOEXEC (TIOCGPTPEER would keep it in the status flags); the master comes from
/// ckpt's.
#[test]
fn pty_slave_is_opened_by_name_or_from_its_master_as_it_was() {
    use crate::kinds::fd::tty::{PtyMasters, make_pty_fd};
    use linux_raw_sys::general::O_LARGEFILE;
    let p = process();
    let mut masters = PtyMasters::default();
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    masters.0.insert(4, std::os::fd::OwnedFd::from(null));
    let by_name = libc::O_RDWR as u32 | O_LARGEFILE;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| make_pty_fd(cx, &masters, 4, false, by_name)).expect("slave");
    assert_eq!(
        names(&rec),
        [
            "pidfd_open",
            "take a pseudo-terminal master",
            "close",
            "open a pseudo-terminal's slave side",
            "close"
        ]
    );
    let c = rec.calls();
    assert_eq!(c[3].nr, nr::OPENAT);
    assert_eq!(arg_bytes(&rec, &c[3], 1, 11), b"/dev/pts/4\0");
    assert_eq!(c[3].args[2], (libc::O_RDWR | libc::O_NOCTTY) as u64);
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| make_pty_fd(cx, &masters, 4, false, 2)).expect("slave");
    let c = rec.calls();
    assert_eq!(c[3].nr, nr::IOCTL);
    assert_eq!(
        c[3].args[1..3],
        [libc::TIOCGPTPEER, (libc::O_RDWR | libc::O_NOCTTY) as u64]
    );
    assert_eq!(c[3].args[0], 101, "from the master just taken (pidfd 100)");
    // The master itself: ckpt's description, nothing opened.
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| make_pty_fd(cx, &masters, 4, true, 2)).expect("master");
    assert_eq!(names(&rec).len(), 3, "pidfd_open, pidfd_getfd, close");
    // A failure at each call is that call's error (take_remote_fd closes its pidfd
    // whatever comes of pidfd_getfd).
    for flags in [by_name, 2] {
        let all = {
            let rec = Recorder::new(p.pid);
            run(&p, &rec, |cx| make_pty_fd(cx, &masters, 4, false, flags)).expect("slave");
            names(&rec)
        };
        for (k, name) in all.iter().enumerate() {
            let rec = Recorder::new(p.pid).fail_at(k, libc::EIO);
            let err = run(&p, &rec, |cx| make_pty_fd(cx, &masters, 4, false, flags))
                .expect_err("a failed call fails the step");
            assert!(err.to_string().contains(name.as_str()), "{k}: {err}");
            assert!(names(&rec).len() <= k + 2, "{:?}", names(&rec));
        }
    }
    let rec = Recorder::new(p.pid);
    let err = run(&p, &rec, |cx| make_pty_fd(cx, &masters, 5, true, 2)).expect_err("unknown");
    assert!(
        err.to_string().contains("unknown pseudo-terminal 5"),
        "{err}"
    );
}

fn tcp_unconn() -> crate::model::TcpUnconnState {
    use crate::model::{IntSockOpt, TcpOpts, TcpUnconnState};
    let mut local = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
    local.extend_from_slice(&8080u16.to_be_bytes());
    local.resize(28, 0);
    local[23] = 1;
    TcpUnconnState {
        family: libc::AF_INET6,
        local,
        v6only: true,
        sock: SockOpts {
            sndbuf: 8192,
            rcvbuf: 131072,
            reuseaddr: true,
            buf_lock: Some(1),
            ..SockOpts::default()
        },
        opts: TcpOpts {
            ints: vec![
                IntSockOpt {
                    level: libc::SOL_IP,
                    name: libc::IP_TOS,
                    value: 0x10,
                },
                IntSockOpt {
                    level: libc::SOL_SOCKET,
                    name: libc::SO_PRIORITY,
                    value: 3,
                },
            ],
            linger: Some([1, 7]),
            rcvtimeo: Some([2, 500_000]),
            sndtimeo: None,
            ..TcpOpts::default()
        },
        connecting_to: None,
        ended: None,
    }
}

#[test]
fn string_and_structure_options_come_after_the_integer_ones_and_are_checked() {
    use crate::model::TcpOpts;
    let p = process();
    let mut u = tcp_unconn();
    u.opts.congestion = Some("reno".into());
    u.opts.bind_device = Some("lo".into());
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("socket");
    let n = names(&rec);
    let at = |x: &str| n.iter().position(|y| y == x).expect(x);
    assert!(at("SO_BINDTODEVICE") < at("bind TCP socket"), "{n:?}");
    assert!(at("TCP_CONGESTION") < at("bind TCP socket"), "{n:?}");
    let calls = rec.calls();
    let c = &calls[at("TCP_CONGESTION")];
    assert_eq!(arg_bytes(&rec, c, 3, 4), b"reno");
    assert_eq!(c.args[4], 4);
    for bad in [
        TcpOpts {
            congestion: Some(String::new()),
            ..TcpOpts::default()
        },
        TcpOpts {
            bind_device: Some("a-name-far-too-long".into()),
            ..TcpOpts::default()
        },
        TcpOpts {
            icmp6_filter: Some(vec![0; 31]),
            ..TcpOpts::default()
        },
    ] {
        assert!(!tcp::tcp_opts_ok(&bad), "{bad:?}");
    }
}

#[test]
fn tcp_connect_in_progress_is_issued_again_from_its_port_without_waiting() {
    let p = process();
    let mut u = tcp_unconn();
    u.sock.reuseaddr = false;
    u.v6only = false;
    let mut peer = u.local.clone();
    peer[2..4].copy_from_slice(&9090u16.to_be_bytes());
    u.connecting_to = Some(peer.clone());
    assert!(tcp::unconn_ok(&u));
    // EINPROGRESS is what a non-blocking connect answers: not an error.
    let rec = Recorder::new(p.pid).fail_at(10, libc::EINPROGRESS);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("socket");
    let n = names(&rec);
    assert_eq!(
        n[6..],
        [
            "SO_RCVTIMEO",
            "SO_REUSEADDR",
            "bind TCP socket",
            "setsockopt",
            "connect (in progress)"
        ],
        "{n:?}"
    );
    let calls = rec.calls();
    // SO_REUSEADDR for the bind only (connect shares ports), then off again.
    let v = |i: usize| arg_bytes(&rec, &calls[i], 3, 4);
    assert_eq!((v(7), v(9)), (vec![1, 0, 0, 0], vec![0, 0, 0, 0]));
    // Not IPv6-only: bound to its port alone (an address would make it IPv6-only).
    let bound = arg_bytes(&rec, &calls[8], 1, 28);
    assert_eq!(bound[2..4], 8080u16.to_be_bytes());
    assert!(bound[8..24].iter().all(|&b| b == 0), "{bound:?}");
    assert_eq!(arg_bytes(&rec, &calls[10], 1, 28), peer);
    // Another error fails the restore.
    let rec = Recorder::new(p.pid).fail_at(10, libc::ENETUNREACH);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect_err("unreachable");
    // A destination without a port is malformed.
    let mut bad = u.clone();
    if let Some(d) = bad.connecting_to.as_mut() {
        d[2..4].copy_from_slice(&[0, 0]);
    }
    assert!(!tcp::unconn_ok(&bad));
}

#[test]
fn tcp_socket_not_connected_gets_its_options_before_its_bind() {
    let p = process();
    let u = tcp_unconn();
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("socket");
    // The size the program set (locked) comes back, the other stays the new socket's
    // (setting the one locks it as it was: no SO_BUF_LOCK);
    // IP_TOS before SO_PRIORITY (it sets the priority); all before bind (SO_REUSEPORT
    // would come too late after it).
    assert_eq!(
        names(&rec),
        [
            "socket(TCP)",
            "SO_SNDBUFFORCE",
            "SO_REUSEADDR",
            "IPV6_V6ONLY",
            "IP_TOS",
            "SO_PRIORITY",
            "SO_LINGER",
            "SO_RCVTIMEO",
            "bind TCP socket",
        ]
    );
    let calls = rec.calls();
    assert_eq!(arg_bytes(&rec, &calls[6], 3, 8), [1, 0, 0, 0, 7, 0, 0, 0]);
    each_failure_stops_there(&p, 9, |cx| tcp::create_tcp_unconnected(cx, &u));
}

#[test]
fn tcp_socket_never_bound_is_not_bound_and_bad_options_are_refused() {
    let p = process();
    let mut u = tcp_unconn();
    u.local[2..4].copy_from_slice(&[0, 0]);
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("socket");
    assert!(!names(&rec).iter().any(|n| n.starts_with("bind")));
    // An option outside the known list (here SO_PEERCRED) is refused before any call.
    u.opts.ints.push(crate::model::IntSockOpt {
        level: libc::SOL_SOCKET,
        name: libc::SO_PEERCRED,
        value: 1,
    });
    assert!(!tcp::unconn_ok(&u));
    assert!(!tcp::tcp_opts_ok(&u.opts));
}

#[test]
fn netlink_socket_takes_its_port_then_each_group_then_its_destination() {
    use crate::model::NetlinkState;
    let p = process();
    let n = NetlinkState {
        protocol: libc::NETLINK_ROUTE,
        typ: libc::SOCK_RAW,
        portid: 4242,
        groups: vec![0b101, 0, 1],
        dst_group: 0,
        dst_portid: 0,
        nl_opts: vec![linux_raw_sys::netlink::NETLINK_NO_ENOBUFS as i32],
        opts: SockOpts::default(),
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| {
        crate::kinds::fd::netlink::create_netlink(cx, &n)
    })
    .expect("netlink");
    assert_eq!(
        names(&rec),
        [
            "socket(AF_NETLINK)",
            "NETLINK_NO_ENOBUFS",
            "bind netlink socket",
            "NETLINK_ADD_MEMBERSHIP",
            "NETLINK_ADD_MEMBERSHIP",
            "NETLINK_ADD_MEMBERSHIP",
        ]
    );
    let calls = rec.calls();
    let group = |i: usize| i32::from_le_bytes(arg_bytes(&rec, &calls[i], 3, 4).try_into().unwrap());
    // groups 1 and 3 of the first word, group 65 of the third
    assert_eq!([group(3), group(4), group(5)], [1, 3, 65]);
    let bound = arg_bytes(&rec, &calls[2], 1, 12);
    assert_eq!(&bound[4..8], &4242u32.to_ne_bytes());
    each_failure_stops_there(&p, 6, |cx| {
        crate::kinds::fd::netlink::create_netlink(cx, &n)
    });
}

/// epoll items added under numbers that no longer hold their files: the file is put at
/// the item's number for the registration only (what is there now set aside above the
/// table and put back with its close-on-exec flag; a free number closed again).
#[test]
fn epoll_items_of_moved_or_closed_descriptors_are_added_under_their_old_numbers() {
    use crate::kinds::fd::epoll;
    use crate::kinds::testutil::{eventfd, fd};
    use crate::model::{EpollTarget, FdKind};
    let t = |fd: i32, data: u64, held_at: Option<i32>| EpollTarget {
        fd,
        events: 1,
        data,
        held_at,
        held_by: None,
    };
    let mut occupant = fd(5, eventfd());
    occupant.cloexec = true;
    let p = Process {
        fds: vec![
            fd(
                3,
                FdKind::Epoll {
                    flags: 0,
                    targets: vec![t(5, 0x22, Some(30)), t(8, 0x55, Some(9)), t(4, 0x11, None)],
                },
            ),
            fd(4, eventfd()),
            occupant,
            fd(9, eventfd()),
            fd(30, eventfd()),
        ],
        ..process()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, epoll::register_targets).expect("register");
    assert_eq!(
        names(&rec),
        [
            "fcntl(F_DUPFD_CLOEXEC)",
            "dup3",
            "epoll_ctl(ADD 5)",
            "dup3",
            "close",
            "dup3",
            "epoll_ctl(ADD 8)",
            "close",
            "epoll_ctl(ADD 4)",
        ]
    );
    let c = rec.calls();
    // 5 set aside above the table (31 and up), 30's file put at 5 and added there
    assert_eq!(c[0].args[..3], [5, libc::F_DUPFD_CLOEXEC as u64, 31]);
    let parked = 100;
    assert_eq!(c[1].args[..3], [30, 5, 0]);
    assert_eq!(c[2].args[..3], [3, libc::EPOLL_CTL_ADD as u64, 5]);
    assert_eq!(arg_bytes(&rec, &c[2], 3, 12)[4..], 0x22u64.to_le_bytes());
    // ... then put back, close-on-exec as it was
    assert_eq!(c[3].args[..3], [parked, 5, libc::O_CLOEXEC as u64]);
    assert_eq!(c[4].args[0], parked);
    // 8 was free: 9's file there for the registration, then closed
    assert_eq!(c[5].args[..3], [9, 8, 0]);
    assert_eq!(c[6].args[2], 8);
    assert_eq!(c[7].args[0], 8);
    each_failure_stops_there(&p, 9, epoll::register_targets);
}

/// Items of an epoll instance (one only in flight) whose files another process holds:
/// the file is taken from that process, put at the item's number for the registration
/// (what is there set aside and put back), and the copy closed; the items the process
/// holds itself are left to `register_targets`.
#[test]
fn epoll_items_held_by_another_process_are_taken_and_added_under_their_numbers() {
    use crate::kinds::fd::epoll;
    use crate::kinds::testutil::{eventfd, fd};
    use crate::model::{EpollTarget, FdKind, FdRef};
    let p = Process {
        fds: vec![
            fd(
                3,
                FdKind::Epoll {
                    flags: 0,
                    targets: vec![
                        EpollTarget {
                            fd: 4,
                            events: 1,
                            data: 0x11,
                            ..Default::default()
                        },
                        EpollTarget {
                            fd: 5,
                            events: 1,
                            data: 0x22,
                            held_at: None,
                            held_by: Some(FdRef { pid: 77, fd: 9 }),
                        },
                    ],
                },
            ),
            fd(4, eventfd()),
            fd(5, eventfd()),
        ],
        ..process()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| {
        epoll::register_held_elsewhere(std::slice::from_mut(cx))
    })
    .expect("register");
    let n = names(&rec);
    assert_eq!(n.len(), 9, "{n:?}");
    assert_eq!(n[0], "pidfd_open");
    assert!(n[1].starts_with("take descriptor 9 of process 77"), "{n:?}");
    assert_eq!(
        n[2..],
        [
            "close",
            "fcntl(F_DUPFD_CLOEXEC)",
            "dup3",
            "epoll_ctl(ADD 5)",
            "dup3",
            "close",
            "close",
        ]
    );
    let c = rec.calls();
    assert_eq!(c[0].args[0], 77);
    assert_eq!(c[1].args[1], 9);
    let taken = 101;
    // 5 set aside above the table, the taken file put at 5 and added there
    assert_eq!(c[3].args[..3], [5, libc::F_DUPFD_CLOEXEC as u64, 6]);
    assert_eq!(c[4].args[..3], [taken, 5, 0]);
    assert_eq!(c[5].args[..3], [3, libc::EPOLL_CTL_ADD as u64, 5]);
    assert_eq!(arg_bytes(&rec, &c[5], 3, 12)[4..], 0x22u64.to_le_bytes());
    // ... put back, and the copy closed
    assert_eq!(c[6].args[1], 5);
    assert_eq!(c[8].args[0], taken);
    // A failure names its call (the take closes its pidfd first) and stops the step.
    for k in [1, 4, 5] {
        let rec = Recorder::new(p.pid).fail_at(k, libc::EIO);
        let err = run(&p, &rec, |cx| {
            epoll::register_held_elsewhere(std::slice::from_mut(cx))
        })
        .expect_err("a failed call fails the step");
        assert!(err.to_string().contains(&n[k]), "{err}");
        let made = names(&rec);
        assert_eq!(made.len(), if k == 1 { 3 } else { k + 1 }, "{made:?}");
    }
}

#[test]
fn packet_socket_gets_its_options_and_filter_before_its_bind() {
    use crate::kinds::fd::packet;
    use crate::model::{IntSockOpt, PacketState};
    let p = process();
    let k = PacketState {
        typ: libc::SOCK_RAW,
        protocol: 0x88b5u16.to_be(),
        ifindex: 1,
        ifname: "lo".into(),
        packet_opts: vec![IntSockOpt {
            level: libc::SOL_PACKET,
            name: libc::PACKET_AUXDATA,
            value: 1,
        }],
        filter: [[0x30, 0, 0, 0, 14, 0, 0, 0], [6, 0, 0, 0, 0xff, 0xff, 0, 0]].concat(),
        filter_locked: true,
        ..PacketState::default()
    };
    assert!(packet::packet_ok(&k));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| packet::create_packet(cx, &k)).expect("socket");
    let n = names(&rec);
    assert_eq!(
        n,
        [
            "socket(AF_PACKET)",
            "setsockopt",
            "SO_ATTACH_FILTER",
            "setsockopt",
            "bind packet socket"
        ]
    );
    let calls = rec.calls();
    assert_eq!(calls[0].args[2], u64::from(0x88b5u16.to_be()));
    // struct sock_fprog: 2 instructions, then the pointer to them.
    let fprog = arg_bytes(&rec, &calls[2], 3, 16);
    assert_eq!(fprog[0..2], [2, 0]);
    let at = u64::from_le_bytes(fprog[8..16].try_into().expect("8 bytes"));
    assert_eq!(calls[2].bytes(at, 16), k.filter);
    // struct sockaddr_ll: AF_PACKET, the protocol, interface 1.
    let sa = arg_bytes(&rec, &calls[4], 1, 8);
    assert_eq!(sa[4..8], 1i32.to_ne_bytes());
    each_failure_stops_there(&p, 5, |cx| packet::create_packet(cx, &k));
    // Records restore cannot build.
    for bad in [
        PacketState {
            typ: libc::SOCK_STREAM,
            ..k.clone()
        },
        PacketState {
            ifname: String::new(),
            ..k.clone()
        },
        PacketState {
            filter: vec![0; 7],
            ..k.clone()
        },
        PacketState {
            packet_opts: vec![IntSockOpt {
                level: libc::SOL_PACKET,
                name: libc::PACKET_RX_RING,
                value: 1,
            }],
            ..k.clone()
        },
    ] {
        assert!(!packet::packet_ok(&bad), "{bad:?}");
    }
}

/// A stream pair whose bytes carry descriptors is filled only once every process has
/// its descriptors, by the holder: each run is sent in order, the one with descriptors
/// as a message of its own with copies of them (taken with pidfd_getfd), closed after.
#[test]
fn stream_bytes_with_descriptors_in_flight_are_sent_as_their_own_message_later() {
    let p = process();
    let sp = SocketPairState {
        id: 5,
        typ: libc::SOCK_STREAM,
        data1: b"abx".to_vec(),
        runs1: vec![
            crate::model::StreamRun {
                len: 2,
                creds: None,
                rights: Vec::new(),
            },
            crate::model::StreamRun {
                len: 1,
                creds: None,
                rights: vec![crate::model::FdRef { pid: p.pid, fd: 9 }],
            },
        ],
        ..SocketPairState::default()
    };
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| {
        unix::create_socketpair(
            cx,
            &crate::kinds::testutil::checkpoint(Vec::new()),
            &sp,
            30,
            &Default::default(),
        )
    })
    .expect("pair");
    assert!(
        !names(&rec).iter().any(|n| n.contains("queue")),
        "nothing is queued before every process has its descriptors: {:?}",
        names(&rec)
    );
    let rec = Recorder::new(p.pid).answer(nr::SENDMSG, 1);
    let mut cx = Ctx::double(&rec, STUB, &p);
    let holders: crate::kinds::fd::PipeHolders = [((1, 5), (p.pid, 100, 101))].into();
    unix::fill_deferred_pairs(
        std::slice::from_mut(&mut cx),
        &crate::kinds::testutil::checkpoint(Vec::new()),
        &[sp],
        &holders,
    )
    .expect("filled");
    let n = names(&rec);
    let at = |what: &str| {
        n.iter()
            .position(|x| x.contains(what))
            .unwrap_or_else(|| panic!("no call {what:?} in {n:?}"))
    };
    let take = at("take descriptor 9 of process 4242");
    let queued: Vec<usize> = (0..n.len()).filter(|&i| n[i].contains("queue")).collect();
    assert_eq!(queued.len(), 2, "{n:?}");
    assert!(queued[0] < take && take < queued[1], "{n:?}");
    let c = rec.calls();
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    for (&i, ctl) in queued.iter().zip([0, 24]) {
        // From end 0 (100) to end 1; the run with descriptors carries SCM_RIGHTS alone
        // (CMSG_SPACE(4) = 24).
        assert_eq!(c[i].args[0], 100);
        let mh = arg_bytes(&rec, &c[i], 1, 56);
        assert_eq!(word(&mh, 40), ctl, "{n:?}");
    }
}

#[test]
fn fanotify_group_is_made_then_marked_by_path_in_order() {
    let p = process();
    let marks = [
        FanotifyMark {
            on: 0,
            path: b"/m/watched".to_vec(),
            mflags: libc::FAN_MARK_IGNORED_SURV_MODIFY,
            mask: 0x2a,
            ignored_mask: 0x2,
            id: 2,
        },
        FanotifyMark {
            on: libc::FAN_MARK_MOUNT,
            path: b"/m".to_vec(),
            mflags: 0,
            mask: 0xa,
            ignored_mask: 0,
            id: 45,
        },
    ];
    let rec = Recorder::new(p.pid);
    let n = run(&p, &rec, |cx| {
        fanotify::create_fanotify(cx, 0x13, 0x8000, &marks)
    })
    .expect("fanotify");
    let c = rec.calls();
    assert_eq!(c.len(), 4, "{:?}", names(&rec));
    assert_eq!(
        (c[0].nr, c[0].args[..2].to_vec()),
        (nr::FANOTIFY_INIT, vec![0x13, 0x8000])
    );
    assert_eq!(c[0].result as u64, n);
    let add = u64::from(libc::FAN_MARK_ADD);
    let nofollow = u64::from(libc::FAN_MARK_DONT_FOLLOW);
    let ignored = u64::from(libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY);
    let want = [
        (add | nofollow, 0x2a, &b"/m/watched\0"[..]),
        (add | nofollow | ignored, 0x2, &b"/m/watched\0"[..]),
        (add | u64::from(libc::FAN_MARK_MOUNT), 0xa, &b"/m\0"[..]),
    ];
    for (c, (flags, mask, path)) in c[1..].iter().zip(want) {
        assert_eq!(c.nr, nr::FANOTIFY_MARK);
        assert_eq!(c.args[..4], [n, flags, mask, libc::AT_FDCWD as u64]);
        assert_eq!(arg_bytes(&rec, c, 4, path.len()), path);
    }
    each_failure_stops_there(&p, 4, |cx| {
        fanotify::create_fanotify(cx, 0x13, 0x8000, &marks)
    });
}

/// A process in a user namespace of the tree's own (maps 0-65535 to 100000-165535):
/// its groups first (as ckpt sees them, still privileged), then the namespace taken
/// from ckpt (pidfd_getfd) and joined, then its IDs as the namespace's maps show them;
/// a failure to join stops there.
#[test]
fn a_process_joins_the_trees_user_namespace_then_takes_its_ids_inside() {
    let own = root_own();
    let mut p = process();
    p.creds = Creds {
        uid: [101_000; 4],
        gid: [101_000; 4],
        groups: vec![101_000, 100_005],
        cap_eff: 1,
        cap_prm: 1,
        cap_bnd: own.creds.cap_bnd,
        ..Creds::default()
    };
    let u = crate::model::UserNsState {
        uid_map: "0 100000 65536\n".into(),
        gid_map: "0 100000 65536\n".into(),
        setgroups: false,
        owner_uid: 0,
        parent: 0,
    };
    let seq = |cx: &mut Ctx<'_>| {
        crate::kinds::userns::enter(cx, &own, &p.creds.groups, 9)?;
        let (me, want) = crate::kinds::userns::inside(&own, &p.creds, &u)?;
        creds::restore_creds(cx, &me, &want)
    };
    let rec = Recorder::new(p.pid);
    assert!(run(&p, &rec, seq).expect("joined"));
    let n = names(&rec);
    assert_eq!(
        n[..6],
        [
            "setgroups",
            "pidfd_open",
            "take the user namespace",
            "close",
            "setns (the tree's user namespace)",
            "close",
        ]
    );
    let c = rec.calls();
    assert_eq!(
        arg_bytes(&rec, &c[0], 1, 8),
        [101_000u32.to_le_bytes(), 100_005u32.to_le_bytes()].concat()
    );
    assert_eq!(c[1].args[0], u64::from(std::process::id()));
    assert_eq!(c[2].args[1], 9);
    assert_eq!(c[4].args[1], libc::CLONE_NEWUSER as u64);
    // Inside: no setgroups again (a namespace with setgroups denied takes none), the
    // IDs translated.
    assert_eq!(n.iter().filter(|x| *x == "setgroups").count(), 1, "{n:?}");
    let ids: Vec<&Recorded> = c.iter().filter(|x| x.what.starts_with("setres")).collect();
    assert_eq!(ids[0].args[..3], [1000, 1000, 1000]);
    assert_eq!(ids[1].args[..3], [1000, 1000, 1000]);
    // A failed setns stops there: no ID is set outside the namespace.
    let rec = Recorder::new(p.pid).fail_at(4, libc::EPERM);
    assert!(run(&p, &rec, seq).is_err());
    assert_eq!(names(&rec), n[..5]);
}

/// Before the first child of a nested PID namespace is forked, the parent's stub takes
/// a pidfd of ckpt above `at` (for the child to inherit) and then unshares; a second
/// child of that namespace needs neither again; a child of its own namespace nothing.
#[test]
fn a_nested_namespace_init_is_prepared_by_its_parents_stub() {
    use crate::kinds::task::tree;
    let parent = process();
    let mut child = process();
    child.pid = 4243;
    child.nspid = vec![1];
    child.pid_ns = 1;
    let rec = Recorder::new(parent.pid).answer(nr::FCNTL, 40);
    let mut cx = Ctx::double(&rec, STUB, &parent);
    let mut unshared = false;
    tree::prepare_nested_fork(&mut cx, &child, &mut unshared, 40).expect("prepared");
    assert_eq!(
        names(&rec),
        [
            "pidfd_open",
            "fcntl(F_DUPFD_CLOEXEC)",
            "close",
            "unshare(CLONE_NEWPID)"
        ]
    );
    let c = rec.calls();
    assert_eq!(
        c[0].args[0],
        u64::from(std::process::id()),
        "a pidfd of ckpt"
    );
    assert_eq!(c[1].args[1], libc::F_DUPFD_CLOEXEC as u64);
    assert_eq!(c[1].args[2], 40, "above the image's descriptors");
    assert_eq!(c[3].args[0], libc::CLONE_NEWPID as u64);
    assert!(unshared);
    assert_eq!(cx.ckpt_pidfd, Some(40));
    child.pid = 4244;
    child.nspid = vec![2];
    tree::prepare_nested_fork(&mut cx, &child, &mut unshared, 40).expect("prepared");
    assert_eq!(names(&rec).len(), 4, "nothing more: {:?}", names(&rec));
    let mut own = process();
    own.pid = 4245;
    tree::prepare_nested_fork(&mut cx, &own, &mut unshared, 40).expect("prepared");
    assert_eq!(names(&rec).len(), 4, "nothing for its own namespace");
}

/// A stub of a nested namespace takes descriptors from ckpt through the pidfd it
/// inherited (it cannot name ckpt), and keeps that pidfd; others open and close one.
#[test]
fn a_nested_stub_takes_from_ckpt_through_its_inherited_pidfd() {
    let mut p = process();
    p.nspid = vec![1];
    p.pid_ns = 1;
    let me = std::process::id() as i32;
    let rec = Recorder::new(p.pid);
    let mut cx = Ctx::double(&rec, STUB, &p);
    cx.ckpt_pidfd = Some(40);
    crate::remote::take_remote_fd(&mut cx, me, 7, "take it").expect("taken");
    assert_eq!(names(&rec), ["take it"]);
    assert_eq!(rec.calls()[0].args[..2], [40, 7]);
    let q = process();
    let rec = Recorder::new(q.pid);
    let mut cx = Ctx::double(&rec, STUB, &q);
    crate::remote::take_remote_fd(&mut cx, me, 7, "take it").expect("taken");
    assert_eq!(names(&rec), ["pidfd_open", "take it", "close"]);
}

/// `--new-tty`: the root takes ckpt's slave (pidfd_getfd through a pidfd of ckpt,
/// closed right after), makes it its controlling terminal (TIOCSCTTY, no stealing) and
/// closes its copy; later, once the groups exist, it gives it the foreground group
/// (TIOCSPGRP with the group's ID, as the root's PID namespace numbers it). A failed
/// ioctl fails the step, naming it, and nothing runs after it.
#[test]
fn the_new_terminal_becomes_the_controlling_one_then_gets_its_foreground_group() {
    use crate::kinds::task::tree;
    let p = process();
    let take = ["pidfd_open", "take the new terminal", "close"];
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tree::set_controlling_tty(cx, 7)).expect("controlling terminal");
    let mut want: Vec<&str> = take.to_vec();
    want.extend(["ioctl(TIOCSCTTY)", "close"]);
    assert_eq!(names(&rec), want);
    let calls = rec.calls();
    assert_eq!(calls[3].nr, nr::IOCTL);
    assert_eq!(calls[3].args[1..3], [libc::TIOCSCTTY, 0]);
    assert_eq!(
        calls[3].args[0], calls[4].args[0],
        "the taken copy is closed"
    );

    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tree::set_tty_foreground(cx, 7, 3)).expect("foreground group");
    let mut want: Vec<&str> = take.to_vec();
    want.extend(["ioctl(TIOCSPGRP)", "close"]);
    assert_eq!(names(&rec), want);
    let calls = rec.calls();
    assert_eq!(calls[3].args[1], libc::TIOCSPGRP);
    assert_eq!(arg_bytes(&rec, &calls[3], 2, 4), 3i32.to_le_bytes());

    let rec = Recorder::new(p.pid).fail_at(3, libc::EIO);
    let err = run(&p, &rec, |cx| tree::set_controlling_tty(cx, 7)).expect_err("fails");
    assert_eq!(names(&rec).len(), 4, "nothing after the failed TIOCSCTTY");
    assert!(err.to_string().contains("ioctl(TIOCSCTTY)"), "{err}");
}

#[test]
fn tcp_socket_whose_connection_ended_is_made_through_a_connection_it_reset() {
    let p = process();
    let mut u = tcp_unconn();
    u.opts = crate::model::TcpOpts::default();
    u.ended = Some(crate::model::TcpEnded {
        rcvq: b"rest".to_vec(),
        holds_port: false,
        ..Default::default()
    });
    assert!(tcp::unconn_ok(&u));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("ended socket");
    let n = names(&rec);
    let at = |s: &str| {
        n.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} missing: {n:?}"))
    };
    // Its port through IP_LOCAL_PORT_RANGE (not a bind, which would hold the port after
    // the end), a listener of its own on its address, the bytes it had not read sent
    // by the accepted end, which resets the connection; the error read; the range put
    // back.
    assert!(!n.iter().any(|x| x.starts_with("bind TCP socket")), "{n:?}");
    let order = [
        "bind TCP listener to end a connection",
        "listen to end a connection",
        "getsockname of the listener",
        "connect to end a connection",
        "accept4",
        "SO_LINGER",
        "SO_ERROR of the ended connection",
    ];
    let pos: Vec<usize> = order.iter().map(|s| at(s)).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{n:?}");
    let calls = rec.calls();
    let range = |i: usize| arg_bytes(&rec, &calls[i], 3, 4);
    let set: Vec<usize> = (0..calls.len())
        .filter(|&i| {
            calls[i].nr == crate::arch::native::nr::SETSOCKOPT
                && calls[i].args[2] == linux_raw_sys::net::IP_LOCAL_PORT_RANGE as u64
        })
        .collect();
    assert_eq!(set.len(), 2, "{n:?}");
    assert_eq!(range(set[0]), [0x90, 0x1f, 0x90, 0x1f]); // 8080 twice
    assert_eq!(range(set[1]), [0, 0, 0, 0]);
    assert!(set[0] < pos[3] && set[1] > pos[5], "{n:?}");
    // The bytes go out before the reset.
    assert!(
        n[pos[4]..pos[5]].iter().any(|x| x.contains("not read")),
        "{n:?}"
    );

    // A socket that holds its port binds it in repair mode (shared with the image's
    // listener), and SO_REUSEADDR the program had is set again after repair mode.
    u.ended = Some(crate::model::TcpEnded {
        rcvq: Vec::new(),
        holds_port: true,
        ..Default::default()
    });
    u.sock.reuseaddr = true;
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("ended socket");
    let n = names(&rec);
    let b = n
        .iter()
        .position(|x| x == "bind TCP socket (repair)")
        .unwrap_or_else(|| panic!("{n:?}"));
    assert_eq!(
        n[b - 1..b + 3],
        [
            "TCP_REPAIR on",
            "bind TCP socket (repair)",
            "TCP_REPAIR off",
            "SO_REUSEADDR"
        ],
        "{n:?}"
    );
    // A record that says both "connecting" and "ended" is malformed.
    let mut bad = u.clone();
    bad.connecting_to = Some(u.local.clone());
    assert!(!tcp::unconn_ok(&bad));

    // A refused non-blocking connect whose error the program has not read: the other
    // end is bound and does not listen, the connect does not wait, and the error is
    // left to the program (no SO_ERROR).
    u.ended = Some(crate::model::TcpEnded {
        err: libc::ECONNREFUSED,
        connecting: true,
        never_connected: true,
        ..Default::default()
    });
    assert!(tcp::unconn_ok(&u));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("refused socket");
    let n = names(&rec);
    assert!(
        n.contains(&"bind TCP listener to end a connection".to_string())
            && n.contains(&"connect to end a connection".to_string()),
        "{n:?}"
    );
    for absent in [
        "listen to end a connection",
        "accept4",
        "SO_ERROR of the ended connection",
    ] {
        assert!(!n.iter().any(|x| x == absent), "{absent}: {n:?}");
    }
    // The errors restore does not make are malformed records.
    for (err, fin, never) in [
        (libc::EHOSTUNREACH, false, false),
        (libc::ENETUNREACH, true, false),
        (libc::EPIPE, false, false),
        (libc::ECONNRESET, false, true),
        (libc::EPROTO, false, true),
    ] {
        let mut bad = u.clone();
        bad.ended = Some(crate::model::TcpEnded {
            err,
            fin,
            never_connected: never,
            connecting: true,
            ..Default::default()
        });
        assert!(!tcp::unconn_ok(&bad), "{err} {fin} {never}");
    }
}

#[test]
fn tcp_socket_reset_after_both_fins_or_timed_out_is_made_so() {
    let p = process();
    let mut u = tcp_unconn();
    u.opts = crate::model::TcpOpts::default();
    let ended = |err, fin| crate::model::TcpEnded {
        rcvq: b"rest".to_vec(),
        err,
        fin,
        ..Default::default()
    };
    // ECONNRESET after the peer's FIN: the socket in CLOSE_WAIT sends its FIN in repair
    // mode (counted, not sent), so the reset finds it in LAST_ACK.
    u.ended = Some(ended(libc::ECONNRESET, true));
    assert!(tcp::unconn_ok(&u));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("ended socket");
    let n = names(&rec);
    let q = n
        .iter()
        .position(|x| x == "TCP_REPAIR_QUEUE")
        .unwrap_or_else(|| panic!("{n:?}"));
    assert_eq!(
        n[q - 1..q + 2],
        ["TCP_REPAIR on", "TCP_REPAIR_QUEUE", "shutdown"]
    );
    let calls = rec.calls();
    assert_eq!(calls[q + 2].args[2], libc::TCP_REPAIR as u64, "{n:?}");
    assert_eq!(arg_bytes(&rec, &calls[q + 2], 3, 4), (-1i32).to_le_bytes());
    let fin = n.iter().position(|x| x == "shutdown").unwrap_or(0);
    let linger = n.iter().position(|x| x == "SO_LINGER").unwrap_or(0);
    assert!(
        fin < q && q < linger,
        "the peer's FIN, ours, then the reset: {n:?}"
    );

    // ETIMEDOUT: the other end deaf (a filter dropping all), one byte sent with a 1 ms
    // user timeout, the program's user timeout put back, then the other end closed.
    u.ended = Some(ended(libc::ETIMEDOUT, false));
    assert!(tcp::unconn_ok(&u));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("ended socket");
    let n = names(&rec);
    let at = |s: &str| {
        n.iter()
            .position(|x| x.contains(s))
            .unwrap_or_else(|| panic!("{s} missing: {n:?}"))
    };
    let order = [
        "SO_ATTACH_FILTER",
        "TCP_USER_TIMEOUT of the ended connection",
        "queue a byte its peer does not acknowledge",
        "SO_LINGER",
    ];
    let pos: Vec<usize> = order.iter().map(|s| at(s)).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{n:?}");
    assert!(!n.iter().any(|x| x.starts_with("TCP_REPAIR")), "{n:?}");
    let set: Vec<&String> = n[pos[1] + 1..pos[3]]
        .iter()
        .filter(|x| *x == "TCP_USER_TIMEOUT")
        .collect();
    assert_eq!(set.len(), 2, "set to 1 ms, then put back: {n:?}");
}

#[test]
fn tcp_socket_whose_connect_an_icmp_error_ended_is_made_with_one_about_its_syn() {
    let p = process();
    let mut u = tcp_unconn();
    u.opts = crate::model::TcpOpts::default();
    u.ended = Some(crate::model::TcpEnded {
        err: libc::EHOSTUNREACH,
        connecting: true,
        never_connected: true,
        ..Default::default()
    });
    assert!(tcp::unconn_ok(&u));
    let rec = Recorder::new(p.pid);
    run(&p, &rec, |cx| tcp::create_tcp_unconnected(cx, &u)).expect("failed connect");
    let n = names(&rec);
    let at = |s: &str| {
        n.iter()
            .position(|x| x.contains(s))
            .unwrap_or_else(|| panic!("{s} missing: {n:?}"))
    };
    // Its SYN's sequence number chosen in repair mode, a deaf listener, the connect,
    // then the ICMP error about the SYN from a raw socket; nothing accepted, no error
    // read (the program had not).
    let order = [
        "TCP_QUEUE_SEQ",
        "TCP_REPAIR off",
        "listen to end a connection",
        "SO_ATTACH_FILTER",
        "connect to end a connection",
        "socket(raw ICMP) to end a connection",
        "connect the raw ICMP socket",
        "an ICMP error about the connection",
    ];
    let pos: Vec<usize> = order.iter().map(|s| at(s)).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{n:?}");
    for absent in ["accept4", "SO_ERROR of the ended connection"] {
        assert!(!n.iter().any(|x| x == absent), "{absent}: {n:?}");
    }
    // A soft error left by an ICMP error, on a failed connect, is not made; nor an
    // error no ICMP error gives, on a connection, with a soft error.
    for (err, soft, never) in [
        (libc::EHOSTUNREACH, libc::EHOSTUNREACH, true),
        (libc::ETIMEDOUT, libc::EHOSTUNREACH, false),
        (libc::ECONNRESET, libc::EPROTO, false),
        (libc::ENETUNREACH, libc::EHOSTUNREACH, false),
    ] {
        let mut bad = u.clone();
        bad.ended = Some(crate::model::TcpEnded {
            err,
            err_soft: soft,
            never_connected: never,
            connecting: true,
            ..Default::default()
        });
        assert!(!tcp::unconn_ok(&bad), "{err} {soft} {never}");
    }
    // With IP_RECVERR on, an ICMP error would also queue on the error queue: refused.
    let mut bad = u.clone();
    bad.opts.ints.push(crate::model::IntSockOpt {
        level: libc::SOL_IP,
        name: libc::IP_RECVERR,
        value: 1,
    });
    assert!(!tcp::unconn_ok(&bad));
}

#[test]
fn icmp_errors_quote_the_segment_and_check_out() {
    let from: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let to: std::net::SocketAddr = "127.0.0.2:80".parse().unwrap();
    let (dom, proto, dest, msg) =
        tcp::icmp_error(libc::EHOSTUNREACH, from, to, 0x0102_0304).expect("v4");
    assert_eq!((dom, proto), (libc::AF_INET, libc::IPPROTO_ICMP));
    assert_eq!(tcp::inet_addr(&dest), Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(msg.len(), 8 + 20 + 8);
    assert_eq!(msg[..2], [3, 1]);
    // the checksums (ICMP's, the quoted IP header's) add up
    let sum = |b: &[u8]| {
        let mut s: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s
    };
    assert_eq!(sum(&msg), 0xffff);
    assert_eq!(sum(&msg[8..28]), 0xffff);
    assert_eq!(msg[20..28], [127, 0, 0, 1, 127, 0, 0, 2]);
    assert_eq!(msg[28..], [0x0f, 0xa0, 0, 80, 1, 2, 3, 4]);
    // v4-mapped addresses: IPv4
    let m: std::net::SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
    let m2: std::net::SocketAddr = "[::ffff:127.0.0.2]:80".parse().unwrap();
    assert_eq!(
        tcp::icmp_error(libc::EHOSTUNREACH, m, m2, 0x0102_0304).map(|x| x.3),
        Some(msg)
    );
    let f6: std::net::SocketAddr = "[::1]:4000".parse().unwrap();
    let t6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
    let (dom, proto, dest, msg) = tcp::icmp_error(libc::EACCES, f6, t6, 7).expect("v6");
    assert_eq!((dom, proto), (libc::AF_INET6, libc::IPPROTO_ICMPV6));
    assert_eq!(tcp::inet_addr(&dest), Some("[::1]:0".parse().unwrap()));
    assert_eq!((msg.len(), msg[0], msg[1], msg[14]), (8 + 40 + 8, 1, 1, 6));
    // none gives EACCES on IPv4, ENOPROTOOPT on IPv6, ETIMEDOUT at all
    assert!(tcp::icmp_error(libc::EACCES, from, to, 0).is_none());
    assert!(tcp::icmp_error(libc::ENOPROTOOPT, f6, t6, 0).is_none());
    assert!(tcp::icmp_error(libc::ETIMEDOUT, from, to, 0).is_none());
}
