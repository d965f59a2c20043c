//! File locks: sane records, and conflicts with the locks this host holds now (the
//! host's list given to `check_locks_against`, so no lock is taken on the host).

use std::os::unix::fs::MetadataExt;

use crate::kinds::fd::lock::{check_locks, check_locks_against, check_records};
use crate::kinds::testutil::*;
use crate::model::{Fd, FdKind, FileLock, LockKind, Process};
use crate::sys::proc::LockLine;

fn lock(kind: LockKind, write: bool, start: u64, end: Option<u64>) -> FileLock {
    FileLock {
        kind,
        write,
        start,
        end,
    }
}

fn locked(n: i32, kind: FdKind, locks: Vec<FileLock>) -> Fd {
    Fd {
        locks,
        ..fd(n, kind)
    }
}

fn records(f: &Fd) -> Vec<crate::error::Problem> {
    let p = process(10);
    run(|v| check_records(&p, f, v))
}

#[test]
fn lock_records() {
    let file = FdKind::File {
        file: Default::default(),
        flags: 0,
        pos: 0,
        unlinked: Vec::new(),
    };
    let dir = FdKind::Dir {
        file: Default::default(),
        flags: 0,
        removed: false,
    };
    let max = i64::MAX as u64;
    assert_none(&records(&fd(3, eventfd())));
    for (kind, l) in [
        (file.clone(), lock(LockKind::Flock, true, 0, None)),
        (file.clone(), lock(LockKind::Posix, false, 10, Some(10))),
        (dir.clone(), lock(LockKind::Ofd, true, max, None)),
        (file.clone(), lock(LockKind::Posix, true, 0, Some(max - 1))),
    ] {
        assert_none(&records(&locked(3, kind, vec![l])));
    }
    let bad = [
        locked(4, eventfd(), vec![lock(LockKind::Flock, true, 0, None)]),
        locked(
            4,
            file.clone(),
            vec![lock(LockKind::Posix, true, 10, Some(9))],
        ),
        locked(
            4,
            file.clone(),
            vec![lock(LockKind::Posix, true, 0, Some(max))],
        ),
        locked(
            4,
            file.clone(),
            vec![lock(LockKind::Ofd, true, max + 1, None)],
        ),
        locked(
            4,
            dir,
            vec![lock(LockKind::Posix, false, 0, Some(1)); (1 << 16) + 1],
        ),
    ];
    for f in &bad {
        let v = records(f);
        assert_one(
            &v,
            "malformed",
            &["descriptor 4 of process 10 has invalid file locks"],
        );
    }
}

/// A process holding `locks` through descriptor 3 on `path` (a file of the tests').
fn holder(path: &std::path::Path, locks: Vec<FileLock>) -> Process {
    let kind = FdKind::File {
        file: file_id(path),
        flags: 0,
        pos: 0,
        unlinked: Vec::new(),
    };
    Process {
        fds: vec![locked(3, kind, locks)],
        ..process(10)
    }
}

/// A lock of the host on `path`.
fn host_lock(
    path: &std::path::Path,
    class: &str,
    mode: &str,
    start: u64,
    end: Option<u64>,
) -> LockLine {
    let m = std::fs::metadata(path).expect("stat");
    LockLine {
        class: class.into(),
        mode: mode.into(),
        blocked: false,
        pid: 4242,
        dev: (libc::major(m.dev()), libc::minor(m.dev())),
        ino: m.ino(),
        start,
        end,
    }
}

#[test]
fn free_locks_pass() {
    let d = TempDir::new();
    let p = d.file("f", b"data");
    let other = d.file("g", b"data");
    let flock_w = holder(&p, vec![lock(LockKind::Flock, true, 0, None)]);
    // Nobody holds a lock on the temporary file: the host's own list.
    assert_none(&run(|v| check_locks(&flock_w, &Default::default(), v)));
    assert_none(&run(|v| check_locks(&process(10), &Default::default(), v)));
    let posix_r = holder(&p, vec![lock(LockKind::Posix, false, 0, Some(99))]);
    let host = [
        // Another file, a waiter, a read lock against a read lock, another class,
        // another range.
        host_lock(&other, "FLOCK", "WRITE", 0, None),
        LockLine {
            blocked: true,
            ..host_lock(&p, "POSIX", "WRITE", 0, None)
        },
        host_lock(&p, "POSIX", "READ", 0, None),
        host_lock(&p, "FLOCK", "WRITE", 0, None),
        host_lock(&p, "OFDLCK", "WRITE", 100, None),
        host_lock(&p, "LEASE", "WRITE", 0, None),
    ];
    assert_none(&run(|v| check_locks_against(&posix_r, &host, v)));
    // A descriptor whose file is gone is left to the file checks.
    let gone = Process {
        fds: vec![locked(
            3,
            FdKind::File {
                file: missing_id(&d.path().join("gone")),
                flags: 0,
                pos: 0,
                unlinked: Vec::new(),
            },
            vec![lock(LockKind::Flock, true, 0, None)],
        )],
        ..process(10)
    };
    let all = [host_lock(&p, "FLOCK", "WRITE", 0, None)];
    assert_none(&run(|v| check_locks_against(&gone, &all, v)));
}

#[test]
fn conflicting_locks_are_taken() {
    let d = TempDir::new();
    let p = d.file("f", b"data");
    let flock = holder(&p, vec![lock(LockKind::Flock, false, 0, None)]);
    let v = run(|v| check_locks_against(&flock, &[host_lock(&p, "FLOCK", "WRITE", 0, None)], v));
    assert_one(
        &v,
        "lock-taken",
        &[
            "file descriptor 3 of process 10: its flock read lock on",
            "conflicts with a FLOCK WRITE lock held now (by process 4242)",
        ],
    );
    assert!(!v[0].message.contains("bytes"), "{v:?}");
    let posix = holder(&p, vec![lock(LockKind::Posix, true, 10, Some(19))]);
    for (class, mode, start, end) in [
        ("POSIX", "READ", 0, Some(10)),
        ("OFDLCK", "WRITE", 19, None),
        ("POSIX", "WRITE", 0, None),
    ] {
        let v = run(|v| check_locks_against(&posix, &[host_lock(&p, class, mode, start, end)], v));
        assert_one(
            &v,
            "lock-taken",
            &[
                "its POSIX write lock on bytes 10-19",
                &format!("a {class} {mode} lock"),
            ],
        );
    }
    let ofd = holder(&p, vec![lock(LockKind::Ofd, false, 5, None)]);
    let v = run(|v| {
        check_locks_against(
            &ofd,
            &[host_lock(&p, "POSIX", "WRITE", 1000, Some(1000))],
            v,
        )
    });
    assert_one(&v, "lock-taken", &["its OFD read lock on bytes 5-EOF"]);
}
