//! Descriptors only in flight: each is made by restore, carried by a queued message and
//! numbered above its process's own descriptors.

use crate::kinds::fd::inflight::check;
use crate::kinds::testutil::*;
use crate::model::{Checkpoint, FdKind, FdRef, SockMessage, SocketPairState, StreamRun};

/// Process 10 with descriptors 0 and 3, and `extra`; a datagram pair whose end 0 has a
/// message carrying `carried` (process 10's descriptors).
fn image(extra: Vec<crate::model::Fd>, carried: &[i32]) -> Checkpoint {
    let mut p = process(10);
    p.fds = vec![fd(0, eventfd()), fd(3, eventfd())];
    p.fds.extend(extra);
    let mut c = checkpoint(vec![p]);
    c.socketpairs = vec![SocketPairState {
        id: 1,
        typ: libc::SOCK_DGRAM,
        msgs0: vec![SockMessage {
            data: b"m".to_vec(),
            rights: carried.iter().map(|&fd| FdRef { pid: 10, fd }).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }];
    c
}

fn flying(n: i32, kind: FdKind) -> crate::model::Fd {
    crate::model::Fd {
        in_flight: true,
        ..fd(n, kind)
    }
}

#[test]
fn descriptors_only_in_flight_are_carried_and_above_the_process_own() {
    assert_none(&run(|v| check(&image(vec![flying(4, eventfd())], &[4]), v)));
    // Carried by stream bytes too.
    let mut img = image(vec![flying(4, eventfd())], &[]);
    img.socketpairs[0] = SocketPairState {
        id: 1,
        typ: libc::SOCK_STREAM,
        data0: b"a".to_vec(),
        runs0: vec![StreamRun {
            len: 1,
            creds: None,
            rights: vec![FdRef { pid: 10, fd: 4 }],
        }],
        ..Default::default()
    };
    assert_none(&run(|v| check(&img, v)));
    // No message carries it; below a descriptor of the process; not made by restore;
    // holding locks.
    let inherited = FdKind::Inherited {
        what: "pipe:[1]".into(),
        flags: 0,
        tty: None,
    };
    let mut locked = flying(4, eventfd());
    locked.locks = vec![crate::model::FileLock {
        kind: crate::model::LockKind::Flock,
        write: true,
        start: 0,
        end: None,
    }];
    for (extra, carried) in [
        (vec![flying(4, eventfd())], vec![]),
        (vec![flying(2, eventfd())], vec![2]),
        (vec![flying(4, inherited)], vec![4]),
        (vec![locked], vec![4]),
    ] {
        assert_one(
            &run(|v| check(&image(extra.clone(), &carried), v)),
            "malformed",
            &["only in flight but no queued message carries it"],
        );
    }
}

#[test]
fn kinds_made_only_in_flight_and_the_refused_ones_say_why() {
    use crate::kinds::fd::inflight::restorable;
    use crate::model::{EpollTarget, InotifyWatch, PidfdReaped};
    let ok = |kind: FdKind| assert_eq!(restorable(&flying(4, kind)), Ok(()));
    ok(FdKind::Epoll {
        flags: 0,
        targets: Vec::new(),
    });
    ok(FdKind::Pidfd {
        pid: 10,
        flags: 0,
        reaped: None,
    });
    ok(FdKind::Pidfd {
        pid: 0,
        flags: 0,
        reaped: Some(PidfdReaped {
            status: Some(3 << 8),
            cgroup_id: 0,
        }),
    });
    let watch = |deleted| InotifyWatch {
        wd: 1,
        mask: libc::IN_CREATE,
        path: b"/tmp".to_vec(),
        ino: 2,
        deleted,
    };
    ok(FdKind::Inotify {
        flags: 0,
        watches: vec![watch(None)],
    });
    // An epoll instance with items, one on a file another process holds.
    ok(FdKind::Epoll {
        flags: 0,
        targets: vec![EpollTarget {
            fd: 3,
            events: 1,
            data: 0,
            held_at: None,
            held_by: Some(FdRef { pid: 11, fd: 5 }),
        }],
    });
    ok(FdKind::Pty {
        index: 2,
        master: true,
        flags: 2,
    });
    // /dev/tty (`place` checks that its terminal is its receiver's controlling one) and
    // TCP connections (locked at the freeze like those processes hold).
    ok(FdKind::DevTty { index: 2, flags: 2 });
    ok(FdKind::TcpConn {
        conn: Box::default(),
        flags: 2,
    });
    let why = |kind: FdKind| restorable(&flying(4, kind)).unwrap_err();
    let w = why(FdKind::Inotify {
        flags: 0,
        watches: vec![watch(Some(7))],
    });
    assert!(w.contains("deleted while open"), "{w}");
}

/// A tree in a PID namespace of its own is renumbered into it at dump
/// (`Checkpoint::map_pids`): the processes whose descriptors queued messages carry
/// (SCM_RIGHTS) and their senders (SCM_CREDENTIALS) with it, on pairs, datagram
/// sockets and the connections waiting in a listener's queue, so that the descriptors
/// in flight are still carried by a message of the image.
#[test]
fn renumbering_the_tree_renumbers_what_queued_messages_carry() {
    use crate::model::{SockCreds, UnixDgramState};
    let creds = |pid| {
        Some(SockCreds {
            pid,
            uid: 0,
            gid: 0,
        })
    };
    let msg = |fd| SockMessage {
        data: b"m".to_vec(),
        creds: creds(10),
        rights: vec![FdRef { pid: 10, fd }],
        ..Default::default()
    };
    let dgram = FdKind::UnixDgram {
        sock: Box::new(UnixDgramState {
            msgs: vec![msg(5)],
            ..Default::default()
        }),
        flags: 0,
    };
    let pending = FdKind::UnixPending {
        listener: b"/l".to_vec(),
        typ: libc::SOCK_STREAM,
        pos: 0,
        name: Vec::new(),
        opts: Default::default(),
        flags: 0,
        dir: Vec::new(),
        listener_dir: Vec::new(),
        queued: vec![msg(6)],
    };
    let mut img = image(
        vec![
            fd(1, dgram),
            fd(2, pending),
            flying(4, eventfd()),
            flying(9, eventfd()),
        ],
        &[4],
    );
    img.socketpairs[0].runs1 = vec![StreamRun {
        len: 1,
        creds: creds(10),
        rights: vec![FdRef { pid: 10, fd: 9 }],
    }];
    img.socketpairs[0].data1 = b"r".to_vec();
    img.map_pids(&|p| if p == 10 { 1 } else { p });
    assert_none(&run(|v| check(&img, v)));
    let sp = &img.socketpairs[0];
    assert_eq!(sp.msgs0[0].rights, vec![FdRef { pid: 1, fd: 4 }]);
    assert_eq!(sp.runs1[0].rights, vec![FdRef { pid: 1, fd: 9 }]);
    assert_eq!(sp.runs1[0].creds, creds(1));
    let p = &img.processes[0];
    let FdKind::UnixDgram { sock, .. } = &p.fds[2].kind else {
        panic!("a datagram socket: {:?}", p.fds[2].kind)
    };
    assert_eq!(sock.msgs[0].rights, vec![FdRef { pid: 1, fd: 5 }]);
    assert_eq!(sock.msgs[0].creds, creds(1));
    let FdKind::UnixPending { queued, .. } = &p.fds[3].kind else {
        panic!("a waiting connection: {:?}", p.fds[3].kind)
    };
    assert_eq!(queued[0].rights, vec![FdRef { pid: 1, fd: 6 }]);
    assert_eq!(queued[0].creds, creds(1));
}
