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
    let why = |kind: FdKind| restorable(&flying(4, kind)).unwrap_err();
    let w = why(FdKind::DevTty { index: 2, flags: 2 });
    assert!(w.contains("/dev/tty"), "{w}");
    let w = why(FdKind::Inotify {
        flags: 0,
        watches: vec![watch(Some(7))],
    });
    assert!(w.contains("deleted while open"), "{w}");
}
