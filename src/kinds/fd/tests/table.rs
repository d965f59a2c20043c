//! The descriptor table, the per-descriptor record checks, sockets and shared
//! descriptions (`check_table`, `check_records`, `check_sockets`, `check_shared`,
//! `check_fd`).

use std::collections::BTreeSet;

use crate::kinds::fd::{
    check_fd, check_fd_owners, check_records, check_shared, check_sockets, check_table,
};
use crate::kinds::testutil::*;
use crate::model::{
    FOwner, FdKind, FileLock, InotifyWatch, LockKind, Process, SockMessage, UdpState,
    UnixDgramState,
};

fn table(fds: Vec<crate::model::Fd>) -> Vec<crate::error::Problem> {
    let p = Process { fds, ..process(10) };
    run(|v| check_table(&p, v))
}

fn inherited() -> FdKind {
    FdKind::Inherited {
        what: "/dev/pts/0".into(),
        flags: 0,
        tty: None,
    }
}

#[test]
fn a_sane_table_passes() {
    assert_none(&table(vec![
        fd(0, inherited()),
        fd(2, inherited()),
        fd(3, eventfd()),
        fd((1 << 20) - 1, eventfd()),
    ]));
}

#[test]
fn bad_descriptor_numbers() {
    for n in [-1, 1 << 20, i32::MAX] {
        let v = table(vec![fd(n, eventfd())]);
        assert_one(
            &v,
            "malformed",
            &[&format!("invalid file descriptor number {n}")],
        );
    }
}

#[test]
fn duplicate_descriptors() {
    let v = table(vec![fd(4, eventfd()), fd(5, eventfd()), fd(4, eventfd())]);
    assert_one(&v, "malformed", &["invalid file descriptor number 4"]);
}

#[test]
fn only_0_to_2_can_be_inherited() {
    let v = table(vec![fd(3, inherited())]);
    assert_one(
        &v,
        "malformed",
        &["file descriptor 3 cannot be inherited", "only 0-2"],
    );
}

#[test]
fn external_records_are_checked_from_the_table() {
    let ext = |key: &str| FdKind::External {
        key: key.into(),
        flags: 0,
    };
    assert_none(&table(vec![fd(5, ext("pipe:[12]"))]));
    let v = table(vec![fd(5, ext(""))]);
    assert_one(
        &v,
        "malformed",
        &["file descriptor 5 is an invalid external resource"],
    );
    let v = table(vec![fd(5, ext(&"x".repeat(257)))]);
    assert_one(&v, "malformed", &["invalid external resource"]);
    let mut shared = fd(6, ext("pipe:[12]"));
    shared.shared_with = Some((10, 5));
    let v = table(vec![fd(5, ext("pipe:[12]")), shared]);
    assert_one(
        &v,
        "malformed",
        &["file descriptor 6 is an invalid external resource"],
    );
}

#[test]
fn records_dispatch_fifos_inotify_and_locks() {
    let fifo = FdKind::Fifo {
        file: Default::default(),
        id: 7,
        flags: 0,
        removed: false,
    };
    let watches = FdKind::Inotify {
        flags: 0,
        watches: vec![InotifyWatch {
            wd: 0,
            mask: 0,
            path: b"/".to_vec(),
            ino: 0,
            deleted: None,
        }],
    };
    let mut locked = fd(5, eventfd());
    locked.locks = vec![FileLock {
        kind: LockKind::Flock,
        write: true,
        start: 0,
        end: None,
    }];
    let p = Process {
        fds: vec![fd(3, fifo), fd(4, watches), locked],
        ..process(10)
    };
    let ids: BTreeSet<u64> = [7].into();
    let v = run(|v| check_records(std::slice::from_ref(&p), &ids, v));
    assert_eq!(codes(&v), ["malformed", "malformed"], "{v:?}");
    assert!(
        v[0].message
            .contains("descriptor 4 of process 10 has invalid inotify watches")
    );
    assert!(
        v[1].message
            .contains("descriptor 5 of process 10 has invalid file locks")
    );
    let v = run(|v| check_records(std::slice::from_ref(&p), &BTreeSet::new(), v));
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(
        v[0].message
            .contains("descriptor 3 of process 10 is an unknown FIFO")
    );
}

fn sockets(kind: FdKind, pairs: &[u64]) -> Vec<crate::error::Problem> {
    let p = Process {
        fds: vec![fd(3, kind)],
        ..process(10)
    };
    let pair_ids: BTreeSet<u64> = pairs.iter().copied().collect();
    let names = BTreeSet::new();
    run(|v| check_sockets(std::slice::from_ref(&p), &pair_ids, &names, v))
}

#[test]
fn socket_pair_ends() {
    let end = |id, end| FdKind::UnixPair { id, end, flags: 0 };
    assert_none(&sockets(end(1, 0), &[1]));
    assert_none(&sockets(end(1, 1), &[1]));
    for (kind, pairs) in [(end(2, 0), &[1][..]), (end(1, 2), &[1][..])] {
        let v = sockets(kind, pairs);
        assert_one(
            &v,
            "malformed",
            &["descriptor 3 of process 10 is an unknown socket"],
        );
    }
}

#[test]
fn datagram_udp_and_listening_sockets() {
    let dgram = |u: UnixDgramState| FdKind::UnixDgram {
        sock: Box::new(u),
        flags: 0,
    };
    assert_none(&sockets(dgram(Default::default()), &[]));
    let v = sockets(
        dgram(UnixDgramState {
            peer_name: b"/nobody/binds/this".to_vec(),
            ..Default::default()
        }),
        &[],
    );
    assert_one(
        &v,
        "malformed",
        &["descriptor 3 of process 10 is an invalid unix datagram socket"],
    );

    let udp = |u: UdpState| FdKind::Udp {
        sock: Box::new(u),
        flags: 0,
    };
    let v4 = UdpState {
        family: libc::AF_INET,
        local: sockaddr_in([127, 0, 0, 1], 0),
        ..Default::default()
    };
    assert_none(&sockets(udp(v4.clone()), &[]));
    let v = sockets(
        udp(UdpState {
            local: vec![0; 5],
            ..v4
        }),
        &[],
    );
    assert_one(
        &v,
        "malformed",
        &["descriptor 3 of process 10 is an invalid UDP socket"],
    );

    let listen = |name: &[u8]| FdKind::UnixListen {
        name: name.to_vec(),
        typ: libc::SOCK_STREAM,
        backlog: 5,
        flags: 0,
        dir: Vec::new(),
        opts: Default::default(),
    };
    assert_none(&sockets(listen(b"/run/x.sock"), &[]));
    let long = [b"/".as_slice(), &[b'a'; 106]].concat();
    assert_none(&sockets(listen(&long), &[]));
    // (A relative name needs the directory it was bound in: none here.)
    for name in [&b""[..], &[b'/'; 108][..], &b"rel.sock"[..]] {
        let v = sockets(listen(name), &[]);
        assert_one(
            &v,
            "malformed",
            &["descriptor 3 of process 10 has an invalid socket name"],
        );
    }
}

/// A sockaddr_in, as dump records it.
pub(super) fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[4..8].copy_from_slice(&ip);
    a
}

/// A sockaddr_in6, as dump records it.
pub(super) fn sockaddr_in6(ip: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
    let mut a = vec![0u8; 28];
    a[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[8..24].copy_from_slice(&ip.octets());
    a
}

fn shared(n: i32, with: (i32, i32)) -> crate::model::Fd {
    let mut f = fd(n, eventfd());
    f.shared_with = Some(with);
    f
}

#[test]
fn shared_descriptions_point_back() {
    let parent = Process {
        fds: vec![fd(0, inherited()), fd(3, eventfd()), shared(4, (10, 3))],
        ..process(10)
    };
    let kid = Process {
        fds: vec![shared(3, (10, 3)), fd(4, eventfd()), shared(5, (11, 4))],
        ..child(11, 10, 10, 10)
    };
    assert_none(&run(|v| check_shared(&[parent.clone(), kid.clone()], v)));

    let bad = |procs: &[Process], words: &[&str]| {
        let v = run(|v| check_shared(procs, v));
        let mut w = words.to_vec();
        w.push("shares a file with a descriptor that is not restored before it");
        assert_one(&v, "malformed", &w);
    };
    // A later descriptor of the same process, or itself.
    let p = Process {
        fds: vec![shared(3, (10, 4)), fd(4, eventfd())],
        ..process(10)
    };
    bad(&[p], &["descriptor 3 of process 10"]);
    let p = Process {
        fds: vec![shared(3, (10, 3))],
        ..process(10)
    };
    bad(&[p], &["descriptor 3 of process 10"]);
    // An inherited descriptor, a copy, a missing descriptor, a missing process.
    for with in [(10, 0), (10, 4), (10, 9), (99, 3)] {
        let k = Process {
            fds: vec![shared(7, with)],
            ..child(11, 10, 10, 10)
        };
        bad(&[parent.clone(), k], &["descriptor 7 of process 11"]);
    }
    // A process that comes later in the image.
    bad(&[kid, parent], &["descriptor 3 of process 11"]);
}

#[test]
fn host_checks_skip_what_has_nothing_on_the_host() {
    let udp = FdKind::Udp {
        sock: Box::new(UdpState {
            family: libc::AF_INET,
            local: sockaddr_in([127, 0, 0, 1], 9),
            ..Default::default()
        }),
        flags: 0,
    };
    for f in [
        fd(3, eventfd()),
        fd(0, inherited()),
        shared(4, (10, 3)),
        {
            let mut f = fd(5, udp);
            f.shared_with = Some((10, 3));
            f
        },
        fd(
            6,
            FdKind::UnixDgram {
                sock: Box::default(),
                flags: 0,
            },
        ),
        fd(
            7,
            FdKind::External {
                key: "pipe:[1]".into(),
                flags: 0,
            },
        ),
        fd(
            8,
            FdKind::Memfd {
                name: b"m".to_vec(),
                flags: 0,
                pos: 0,
                seals: 0,
                data: 1,
                mode: None,
            },
        ),
    ] {
        assert_none(&run(|v| {
            check_fd(
                &mut crate::kinds::fd::file::HeldFiles::same_boot(),
                &f,
                &Default::default(),
                v,
            )
        }));
    }
}

#[test]
fn host_checks_dispatch_to_the_kind() {
    let d = TempDir::new();
    let gone = d.path().join("gone");
    let kinds = [
        FdKind::File {
            file: missing_id(&gone),
            flags: 0,
            pos: 0,
            unlinked: Vec::new(),
        },
        FdKind::Dir {
            file: missing_id(&gone),
            flags: 0,
            removed: false,
        },
        FdKind::Device {
            file: missing_id(&gone),
            flags: 0,
            pos: 0,
        },
        FdKind::Fifo {
            file: missing_id(&gone),
            id: 1,
            flags: 0,
            removed: false,
        },
        FdKind::DeletedFile {
            file: missing_id(&gone.join("x")),
            flags: 0,
            pos: 0,
            data: 1,
        },
        FdKind::Inotify {
            flags: 0,
            watches: vec![InotifyWatch {
                wd: 1,
                mask: 0,
                path: bytes(&gone),
                ino: 0,
                deleted: None,
            }],
        },
        FdKind::UnixListen {
            name: bytes(&gone.join("s")),
            typ: libc::SOCK_STREAM,
            backlog: 1,
            flags: 0,
            dir: Vec::new(),
            opts: Default::default(),
        },
        FdKind::UnixDgram {
            sock: Box::new(UnixDgramState {
                name: bytes(&gone.join("s")),
                msgs: vec![SockMessage::default()],
                ..Default::default()
            }),
            flags: 0,
        },
    ];
    for k in kinds {
        let f = fd(3, k);
        let v = run(|v| {
            check_fd(
                &mut crate::kinds::fd::file::HeldFiles::same_boot(),
                &f,
                &Default::default(),
                v,
            )
        });
        assert_eq!(codes(&v), ["file-missing"], "{f:?}: {v:?}");
        assert!(v[0].message.contains("descriptor 3"), "{v:?}");
    }
}

/// Process 10 (group 10) and 11 (group 10), descriptor 3 of 11 owned by `o`.
fn owned(o: FOwner) -> Vec<Process> {
    let mut f = fd(3, eventfd());
    f.owner = Some(o);
    vec![
        process(10),
        Process {
            fds: vec![f],
            ..child(11, 10, 10, 10)
        },
    ]
}

#[test]
fn signal_owners_must_be_of_the_tree() {
    let o = |kind, pid, sig| FOwner { kind, pid, sig };
    for good in [
        o(1, 10, 0),
        o(0, 11, 10),
        o(2, 10, 64),
        o(0, 0, 34),
        o(1, 0, 0),
    ] {
        let procs = owned(good);
        assert_none(&run(|v| check_records(&procs, &BTreeSet::new(), v)));
        check_fd_owners(&procs).expect("an owner of the tree");
    }
    // A process outside the tree, a group that is none of the tree's: refused at dump.
    for (outside, what) in [
        (o(1, 99, 0), "process 99"),
        (o(2, 11, 0), "process group 11"),
    ] {
        let procs = owned(outside);
        let e = check_fd_owners(&procs).expect_err("an owner outside the tree");
        let e = e.to_string();
        assert!(e.contains("file descriptor 3") && e.contains(what), "{e}");
        let v = run(|v| check_records(&procs, &BTreeSet::new(), v));
        assert_one(
            &v,
            "malformed",
            &["descriptor 3 of process 11", "signal owner"],
        );
    }
    for bad in [o(3, 10, 0), o(1, 10, 65), o(1, 10, -1)] {
        let v = run(|v| check_records(&owned(bad), &BTreeSet::new(), v));
        assert_one(
            &v,
            "malformed",
            &["descriptor 3 of process 11", "signal owner"],
        );
    }
}
