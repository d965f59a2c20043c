//! epoll targets and inotify watches.

use crate::kinds::fd::epoll::check_targets;
use crate::kinds::fd::inotify::{check_paths, check_watches};
use crate::kinds::testutil::*;
use crate::model::{EpollTarget, FdKind, InotifyWatch, Process};

fn epoll(targets: &[i32]) -> FdKind {
    FdKind::Epoll {
        flags: 0,
        targets: targets
            .iter()
            .map(|&fd| EpollTarget {
                fd,
                events: 1,
                data: 0,
                held_at: None,
                held_by: None,
            })
            .collect(),
    }
}

#[test]
fn epoll_watches_its_own_process_descriptors() {
    let p = Process {
        fds: vec![fd(3, epoll(&[3, 4])), fd(4, eventfd())],
        ..process(10)
    };
    // Descriptor 5 is another process's: not this one's.
    let q = Process {
        fds: vec![fd(5, eventfd()), fd(6, epoll(&[]))],
        ..child(11, 10, 10, 10)
    };
    assert_none(&run(|v| check_targets(&[p.clone(), q.clone()], v)));
    let p = Process {
        fds: vec![fd(3, epoll(&[4, 5, 9])), fd(4, eventfd())],
        ..process(10)
    };
    let v = run(|v| check_targets(&[p, q], v));
    assert_eq!(codes(&v), ["malformed", "malformed"], "{v:?}");
    assert!(
        v[0].message
            .contains("epoll descriptor 3 of process 10 watches a missing descriptor 5"),
        "{v:?}"
    );
    assert!(v[1].message.contains("missing descriptor 9"), "{v:?}");
}

#[test]
fn epoll_items_moved_or_closed_are_held_by_a_descriptor_of_the_process() {
    let moved = |fd: i32, held_at: i32| FdKind::Epoll {
        flags: 0,
        targets: vec![EpollTarget {
            fd,
            events: 1,
            data: 7,
            held_at: Some(held_at),
            held_by: None,
        }],
    };
    // Added as 8 (closed since), held at 4: fine.
    let p = Process {
        fds: vec![fd(3, moved(8, 4)), fd(4, eventfd())],
        ..process(10)
    };
    assert_none(&run(|v| check_targets(&[p], v)));
    // Held at a descriptor the process does not have, or added under an impossible
    // number: malformed.
    for kind in [moved(8, 6), moved(-1, 4)] {
        let p = Process {
            fds: vec![fd(3, kind), fd(4, eventfd())],
            ..process(10)
        };
        let v = run(|v| check_targets(&[p], v));
        assert_eq!(codes(&v), ["malformed"], "{v:?}");
    }
}

/// An item whose file another process's descriptor holds (an instance only in flight):
/// that descriptor must exist.
#[test]
fn epoll_items_held_by_another_process_name_one_of_its_descriptors() {
    let by = |pid: i32, fd: i32, held_at: Option<i32>| FdKind::Epoll {
        flags: 0,
        targets: vec![EpollTarget {
            fd: 8,
            events: 1,
            data: 7,
            held_at,
            held_by: Some(crate::model::FdRef { pid, fd }),
        }],
    };
    let q = Process {
        fds: vec![fd(5, eventfd())],
        ..child(11, 10, 10, 10)
    };
    let with = |kind: FdKind| Process {
        fds: vec![fd(3, kind)],
        ..process(10)
    };
    assert_none(&run(|v| {
        check_targets(&[with(by(11, 5, None)), q.clone()], v)
    }));
    // Another number of that process, a process not in the image, or both places.
    for kind in [by(11, 6, None), by(12, 5, None), by(11, 5, Some(3))] {
        let v = run(|v| check_targets(&[with(kind), q.clone()], v));
        assert_eq!(codes(&v), ["malformed"], "{v:?}");
    }
}

fn watch(wd: i32, path: &[u8]) -> InotifyWatch {
    InotifyWatch {
        wd,
        mask: 0x100,
        path: path.to_vec(),
        ino: 0,
        deleted: None,
    }
}

#[test]
fn inotify_watches() {
    assert_none(&run(|v| check_watches(&[], 3, 10, v)));
    let ok = [watch(1, b"/tmp"), watch(4, &[b'/'; 4096])];
    assert_none(&run(|v| check_watches(&ok, 3, 10, v)));
    let bad: [Vec<InotifyWatch>; 6] = [
        vec![watch(0, b"/")],
        vec![watch(2, b"/"), watch(2, b"/x")],
        vec![watch(3, b"/"), watch(2, b"/x")],
        vec![watch(1, b"")],
        vec![watch(1, &[b'/'; 4097])],
        (1..=(crate::kinds::fd::inotify::MAX_WATCHES as i32 + 1))
            .map(|w| watch(w, b"/"))
            .collect(),
    ];
    for b in &bad {
        let v = run(|v| check_watches(b, 3, 10, v));
        assert_one(
            &v,
            "malformed",
            &["descriptor 3 of process 10 has invalid inotify watches"],
        );
    }
}

#[test]
fn watched_paths_exist() {
    let d = TempDir::new();
    let f = d.file("f", b"");
    let link = d.path().join("dangling");
    std::os::unix::fs::symlink(d.path().join("nowhere"), &link).expect("symlink");
    // A dangling symbolic link is there (the watch was on the link).
    let ok = [
        watch(1, &bytes(d.path())),
        watch(2, &bytes(&f)),
        watch(3, &bytes(&link)),
    ];
    assert_none(&run(|v| check_paths(&ok, 3, v)));
    let gone = [
        watch(1, &bytes(&f)),
        watch(2, &bytes(&d.path().join("gone"))),
    ];
    let v = run(|v| check_paths(&gone, 3, v));
    assert_one(
        &v,
        "file-missing",
        &[
            "file descriptor 3: inotify watch 2 on",
            "gone: it does not exist",
        ],
    );
}
