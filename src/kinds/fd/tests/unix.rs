//! Unix sockets: socket pair records, datagram sockets, and names on this host (bound
//! by the tests themselves, in their own directories or under abstract names nobody
//! else uses).

use std::collections::BTreeSet;

use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::unix::{
    MAX_MESSAGE, MAX_MESSAGES, check_bound_name, check_creds, check_listen_name, check_pairs,
    check_rights, dgram_names, pending_ok, unix_dgram_ok,
};
use crate::kinds::testutil::*;
use crate::model::{FdKind, Process, SockMessage, SocketPairState, UnixDgramState};

fn pair(id: u64, typ: i32) -> SocketPairState {
    SocketPairState {
        id,
        typ,
        ..Default::default()
    }
}

fn msg(from: &[u8], len: usize) -> SockMessage {
    SockMessage {
        creds: None,
        rights: Vec::new(),
        from: from.to_vec(),
        data: vec![0; len],
    }
}

#[test]
fn socket_pair_records() {
    let stream = SocketPairState {
        data0: vec![1; 10],
        data1: vec![2; MAX_PIPE],
        ..pair(1, libc::SOCK_STREAM)
    };
    let dgram = SocketPairState {
        msgs0: vec![msg(b"", 10), msg(&[0; 128], MAX_MESSAGE)],
        ..pair(2, libc::SOCK_DGRAM)
    };
    let seq = SocketPairState {
        name0: b"\0ckpt-test-l".to_vec(),
        name1: b"x.sock".to_vec(),
        dir1: b"/run".to_vec(),
        accepted: Some(0),
        shutdown: [3, 1],
        ..pair(3, libc::SOCK_SEQPACKET)
    };
    let mut v = Vec::new();
    let ids = check_pairs(&[stream, dgram, seq], &mut v);
    assert_none(&v);
    assert_eq!(ids, [1, 2, 3].into());
}

#[test]
fn bad_socket_pairs() {
    let many_bytes = MAX_PIPE / MAX_MESSAGE + 1;
    let bad = [
        vec![pair(4, libc::SOCK_STREAM), pair(4, libc::SOCK_DGRAM)],
        vec![pair(4, libc::SOCK_RAW)],
        vec![SocketPairState {
            msgs1: vec![msg(b"", 1)],
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            data0: vec![1],
            ..pair(4, libc::SOCK_DGRAM)
        }],
        vec![SocketPairState {
            data1: vec![0; MAX_PIPE + 1],
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            msgs0: vec![msg(b"", 0); MAX_MESSAGES + 1],
            ..pair(4, libc::SOCK_DGRAM)
        }],
        vec![SocketPairState {
            msgs1: vec![msg(b"", MAX_MESSAGE + 1)],
            ..pair(4, libc::SOCK_SEQPACKET)
        }],
        vec![SocketPairState {
            msgs0: vec![msg(&[0; 129], 1)],
            ..pair(4, libc::SOCK_DGRAM)
        }],
        vec![SocketPairState {
            msgs0: vec![msg(b"", MAX_MESSAGE); many_bytes],
            ..pair(4, libc::SOCK_DGRAM)
        }],
        // A name relative to a working directory without an absolute one, a directory
        // for a name that is not relative, or a name too long for a sockaddr_un.
        vec![SocketPairState {
            name0: b"sock".to_vec(),
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            name0: b"sock".to_vec(),
            dir0: b"run".to_vec(),
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            name1: b"\0abc".to_vec(),
            dir1: b"/run".to_vec(),
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            name1: [b"/".as_slice(), &[b'x'; 107]].concat(),
            ..pair(4, libc::SOCK_STREAM)
        }],
        // The accepted end must be one of the two, with a name, on a connection.
        vec![SocketPairState {
            name0: b"\0l".to_vec(),
            accepted: Some(2),
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            name0: b"\0l".to_vec(),
            accepted: Some(1),
            ..pair(4, libc::SOCK_STREAM)
        }],
        vec![SocketPairState {
            name0: b"\0l".to_vec(),
            accepted: Some(0),
            ..pair(4, libc::SOCK_DGRAM)
        }],
        vec![SocketPairState {
            shutdown: [0, 4],
            ..pair(4, libc::SOCK_STREAM)
        }],
    ];
    for b in bad {
        let v = run(|v| {
            check_pairs(&b, v);
        });
        assert_one(&v, "malformed", &["invalid socket pair 4"]);
    }
}

fn dgram(n: i32, name: &[u8]) -> crate::model::Fd {
    fd(
        n,
        FdKind::UnixDgram {
            sock: Box::new(UnixDgramState {
                name: name.to_vec(),
                ..Default::default()
            }),
            flags: 0,
        },
    )
}

#[test]
fn datagram_names_are_bound_once() {
    let mut copy = dgram(5, b"/a");
    copy.shared_with = Some((10, 3));
    let p = Process {
        fds: vec![dgram(3, b"/a"), dgram(4, b"\0b"), copy, dgram(6, b"")],
        ..process(10)
    };
    let procs = [p];
    let mut v = Vec::new();
    let names = dgram_names(&procs, &mut v);
    assert_none(&v);
    assert_eq!(names, [&b"/a"[..], &b"\0b"[..]].into());
    let q = Process {
        fds: vec![dgram(3, b"/a")],
        ..child(11, 10, 10, 10)
    };
    let procs = [procs[0].clone(), q];
    let v = run(|v| {
        dgram_names(&procs, v);
    });
    assert_one(
        &v,
        "malformed",
        &["two unix datagram sockets are bound to one name"],
    );
}

#[test]
fn datagram_socket_records() {
    let names: BTreeSet<&[u8]> = [&b"/srv"[..], &b"\0peer"[..]].into();
    let ok = [
        UnixDgramState::default(),
        UnixDgramState {
            name: b"/me".to_vec(),
            peer_name: b"/srv".to_vec(),
            msgs: vec![msg(b"/srv", 100)],
            ..Default::default()
        },
        UnixDgramState {
            name: b"\0me".to_vec(),
            msgs: vec![msg(b"", MAX_MESSAGE), msg(b"\0peer", 1)],
            ..Default::default()
        },
    ];
    for u in &ok {
        assert!(unix_dgram_ok(u, &names), "{u:?}");
    }
    let named = UnixDgramState {
        name: b"/me".to_vec(),
        ..Default::default()
    };
    let bad = [
        // Names that fit no sockaddr_un, or are not a path or abstract.
        UnixDgramState {
            name: vec![b'/'; 108],
            ..Default::default()
        },
        UnixDgramState {
            name: b"relative".to_vec(),
            ..Default::default()
        },
        UnixDgramState {
            peer_name: b"relative".to_vec(),
            ..Default::default()
        },
        // A peer or a sender outside the image.
        UnixDgramState {
            peer_name: b"/elsewhere".to_vec(),
            ..Default::default()
        },
        UnixDgramState {
            msgs: vec![msg(b"/elsewhere", 1)],
            ..named.clone()
        },
        // Messages to an unnamed socket, from other than the peer, too many, too big.
        UnixDgramState {
            msgs: vec![msg(b"", 1)],
            ..Default::default()
        },
        UnixDgramState {
            peer_name: b"/srv".to_vec(),
            msgs: vec![msg(b"\0peer", 1)],
            ..named.clone()
        },
        UnixDgramState {
            msgs: vec![msg(b"", 0); MAX_MESSAGES + 1],
            ..named.clone()
        },
        UnixDgramState {
            msgs: vec![msg(b"", MAX_MESSAGE + 1)],
            ..named.clone()
        },
        UnixDgramState {
            msgs: vec![msg(b"", MAX_MESSAGE); MAX_PIPE / MAX_MESSAGE + 1],
            ..named
        },
    ];
    for u in &bad {
        assert!(
            !unix_dgram_ok(u, &names),
            "{:?}",
            (&u.name, &u.peer_name, u.msgs.len())
        );
    }
}

/// The address of abstract name `name` (with its leading NUL).
fn abstract_addr(name: &[u8]) -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(&name[1..]).expect("abstract address")
}

/// An abstract name nobody else uses.
fn abstract_name(tag: &str) -> Vec<u8> {
    format!("\0ckpt-unit-{}-{tag}", std::process::id()).into_bytes()
}

#[test]
fn free_listener_names() {
    let d = TempDir::new();
    assert_none(&run(|v| {
        check_listen_name(&bytes(&d.path().join("s")), 3, &Default::default(), v)
    }));
    assert_none(&run(|v| {
        check_listen_name(&abstract_name("free"), 3, &Default::default(), v)
    }));
    // A stale socket file is replaced by restore.
    let p = d.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&p).expect("bind"));
    assert!(p.exists());
    assert_none(&run(|v| {
        check_listen_name(&bytes(&p), 3, &Default::default(), v)
    }));
}

#[test]
fn a_live_listener_on_a_path() {
    let d = TempDir::new();
    let p = d.path().join("live");
    let _l = std::os::unix::net::UnixListener::bind(&p).expect("bind");
    let v = run(|v| check_listen_name(&bytes(&p), 3, &Default::default(), v));
    assert_one(
        &v,
        "address-in-use",
        &[
            "descriptor 3: another process listens on unix socket",
            "live",
        ],
    );
}

/// The dumped tree's own listener (`Held`, by socket inode) does not take its name;
/// another listener on the same path still does.
#[test]
fn the_dumped_trees_own_listener_is_not_another() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new();
    let p = d.path().join("own");
    let own = std::os::unix::net::UnixListener::bind(&p).expect("bind");
    let own = std::fs::File::from(std::os::fd::OwnedFd::from(own));
    let ino = own.metadata().expect("fstat").ino();
    let held = crate::kinds::check::Held {
        live: true,
        sockets: [ino].into(),
        ..Default::default()
    };
    assert_none(&run(|v| check_listen_name(&bytes(&p), 3, &held, v)));
    assert_none(&run(|v| check_bound_name(&bytes(&p), 3, &held, v)));
    let v = run(|v| check_listen_name(&bytes(&p), 3, &Default::default(), v));
    assert_one(&v, "address-in-use", &["another process listens"]);
    std::fs::remove_file(&p).expect("unlink");
    let _other = std::os::unix::net::UnixListener::bind(&p).expect("bind again");
    let v = run(|v| check_listen_name(&bytes(&p), 3, &held, v));
    assert_one(
        &v,
        "address-in-use",
        &["descriptor 3: another process listens on unix socket"],
    );
}

#[test]
fn taken_or_impossible_listener_names() {
    let d = TempDir::new();
    let name = abstract_name("taken");
    let addr = abstract_addr(&name);
    let _a = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract");
    let v = run(|v| check_listen_name(&name, 4, &Default::default(), v));
    assert_one(
        &v,
        "address-in-use",
        &["descriptor 4: another process listens on unix socket @ckpt-unit-"],
    );
    let f = d.file("plain", b"");
    let v = run(|v| check_listen_name(&bytes(&f), 5, &Default::default(), v));
    assert_one(
        &v,
        "address-in-use",
        &["descriptor 5:", "plain exists and is not a socket"],
    );
    let v = run(|v| check_listen_name(&bytes(&d.path().join("no/s")), 6, &Default::default(), v));
    assert_one(
        &v,
        "file-missing",
        &[
            "descriptor 6: the directory of unix socket",
            "no/s does not exist",
        ],
    );
}

#[test]
fn datagram_names_on_this_host() {
    let d = TempDir::new();
    assert_none(&run(|v| {
        check_bound_name(&bytes(&d.path().join("s")), 3, &Default::default(), v)
    }));
    assert_none(&run(|v| {
        check_bound_name(&abstract_name("dfree"), 3, &Default::default(), v)
    }));
    let p = d.path().join("bound");
    let _s = std::os::unix::net::UnixDatagram::bind(&p).expect("bind");
    let v = run(|v| check_bound_name(&bytes(&p), 3, &Default::default(), v));
    assert_one(
        &v,
        "address-in-use",
        &[
            "descriptor 3: a socket is bound to unix socket name",
            "bound",
        ],
    );
    let name = abstract_name("dtaken");
    let addr = abstract_addr(&name);
    let _a = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract");
    let v = run(|v| check_bound_name(&name, 4, &Default::default(), v));
    assert_one(&v, "address-in-use", &["descriptor 4:", "@ckpt-unit-"]);
    // The rest is the listener's checks.
    let f = d.file("plain", b"");
    let v = run(|v| check_bound_name(&bytes(&f), 5, &Default::default(), v));
    assert_one(&v, "address-in-use", &["exists and is not a socket"]);
}

fn listener(n: i32, name: &[u8], typ: i32, backlog: u32) -> crate::model::Fd {
    fd(
        n,
        FdKind::UnixListen {
            name: name.to_vec(),
            typ,
            backlog,
            flags: 0,
            dir: Vec::new(),
            opts: Default::default(),
        },
    )
}

fn waiting(n: i32, listener: &[u8], typ: i32, pos: u32) -> crate::model::Fd {
    fd(
        n,
        FdKind::UnixPending {
            listener: listener.to_vec(),
            typ,
            pos,
            name: Vec::new(),
            opts: Default::default(),
            flags: 0,
            dir: Vec::new(),
            listener_dir: Vec::new(),
            queued: Vec::new(),
        },
    )
}

/// Whether every waiting socket of a process with these descriptors passes.
fn all_waiting_ok(fds: Vec<crate::model::Fd>) -> bool {
    let mut p = process(10);
    p.fds = fds;
    let procs = [p];
    procs[0].fds.iter().all(|f| pending_ok(&procs, f))
}

#[test]
fn sockets_waiting_to_be_accepted() {
    let l = b"\0ckpt-test-l";
    let st = libc::SOCK_STREAM;
    // Two in order behind a listener of backlog 1 (a queue holds one more).
    assert!(all_waiting_ok(vec![
        listener(3, l, st, 1),
        waiting(5, l, st, 1),
        waiting(4, l, st, 0),
    ]));
    let bad = [
        // No listener of that name, or of another type.
        vec![waiting(4, l, st, 0)],
        vec![
            listener(3, l, libc::SOCK_SEQPACKET, 4),
            waiting(4, l, st, 0),
        ],
        // Places taken twice, or with a gap.
        vec![
            listener(3, l, st, 4),
            waiting(4, l, st, 0),
            waiting(5, l, st, 0),
        ],
        vec![listener(3, l, st, 4), waiting(4, l, st, 1)],
        // More than the queue holds.
        vec![
            listener(3, l, st, 0),
            waiting(4, l, st, 0),
            waiting(5, l, st, 1),
        ],
        // A datagram socket never waits; a relative name cannot be found again.
        vec![
            listener(3, l, libc::SOCK_DGRAM, 4),
            waiting(4, l, libc::SOCK_DGRAM, 0),
        ],
        vec![
            listener(3, b"rel.sock", st, 4),
            waiting(4, b"rel.sock", st, 0),
        ],
    ];
    for b in bad {
        assert!(!all_waiting_ok(b.clone()), "{b:?}");
    }
}

/// An image of process 10 (descriptor 3 an eventfd, 0 inherited) with pair `sp`.
fn image_with(sp: SocketPairState) -> crate::model::Checkpoint {
    let mut p = process(10);
    p.fds = vec![
        fd(3, eventfd()),
        fd(
            0,
            FdKind::Inherited {
                what: "pipe:[1]".into(),
                flags: 0,
                tty: None,
            },
        ),
    ];
    let mut c = checkpoint(vec![p]);
    c.socketpairs = vec![sp];
    c
}

fn sent(pid: i32, rights: &[(i32, i32)]) -> SockMessage {
    SockMessage {
        creds: Some(crate::model::SockCreds {
            pid,
            uid: 65534,
            gid: 65534,
        }),
        rights: rights
            .iter()
            .map(|&(pid, fd)| crate::model::FdRef { pid, fd })
            .collect(),
        ..msg(b"", 1)
    }
}

#[test]
fn senders_and_descriptors_in_flight_are_of_the_image() {
    let ok = image_with(SocketPairState {
        msgs0: vec![sent(10, &[(10, 3)])],
        ..pair(1, libc::SOCK_SEQPACKET)
    });
    assert_none(&run(|v| check_creds(&ok, v)));
    assert_none(&run(|v| check_rights(&ok, v)));
    // A sender that is not a process of the image.
    let stranger = image_with(SocketPairState {
        msgs1: vec![sent(11, &[])],
        ..pair(1, libc::SOCK_DGRAM)
    });
    assert_one(
        &run(|v| check_creds(&stranger, v)),
        "malformed",
        &["names process 11"],
    );
    // Bytes of a stream pair carrying descriptors, as a run of their own.
    let run_with = |r: &[(i32, i32)]| crate::model::StreamRun {
        len: 1,
        creds: None,
        rights: r
            .iter()
            .map(|&(pid, fd)| crate::model::FdRef { pid, fd })
            .collect(),
    };
    let stream = image_with(SocketPairState {
        data1: b"ab".to_vec(),
        runs1: vec![run_with(&[]), run_with(&[(10, 3)])],
        ..pair(1, libc::SOCK_STREAM)
    });
    assert_none(&run(|v| {
        check_pairs(&stream.socketpairs, v);
    }));
    assert_none(&run(|v| check_rights(&stream, v)));
    // Descriptors in flight: one restore does not make (missing, or given from
    // outside), on messages or on stream bytes.
    for r in [(10, 4), (11, 3), (10, 0)] {
        let bad = image_with(SocketPairState {
            msgs0: vec![sent(10, &[r])],
            ..pair(1, libc::SOCK_DGRAM)
        });
        let bad_stream = image_with(SocketPairState {
            data0: b"a".to_vec(),
            runs0: vec![run_with(&[r])],
            ..pair(1, libc::SOCK_STREAM)
        });
        for img in [bad, bad_stream] {
            assert_one(
                &run(|v| check_rights(&img, v)),
                "malformed",
                &["carries a descriptor restore cannot send"],
            );
        }
    }
}
