//! fanotify groups: what fdinfo says, the plan's checks, the marks' calls.

use crate::kinds::fd::fanotify::{MarkLine, check_paths, check_record, mark_calls, parse_fdinfo};
use crate::kinds::testutil::*;
use crate::model::{FanotifyMark, FdKind};

const INFO: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1039\n\
fanotify flags:13 event-flags:8000\n\
fanotify ino:3 sdev:28 mflags:40 mask:0 ignored_mask:2 fhandle-bytes:c fhandle-type:1 f_handle:0e9854ad0300000000000000\n\
fanotify mnt_id:2d mflags:0 mask:a ignored_mask:0\n\
fanotify sdev:fe00000 mflags:0 mask:8000300 ignored_mask:0\n";

#[test]
fn fdinfo_gives_the_flags_and_every_kind_of_mark() {
    let (flags, ev, marks) = parse_fdinfo(INFO).expect("parses");
    assert_eq!((flags, ev), (0x13, 0x8000));
    assert_eq!(marks.len(), 3);
    assert_eq!(
        marks[0],
        MarkLine {
            on: 0,
            ino: 3,
            sdev: 0x28,
            mnt_id: 0,
            mflags: 0x40,
            mask: 0,
            ignored_mask: 2,
            handle_type: 1,
            handle: vec![0x0e, 0x98, 0x54, 0xad, 3, 0, 0, 0, 0, 0, 0, 0],
        }
    );
    assert_eq!(
        (marks[1].on, marks[1].mnt_id, marks[1].mask),
        (0x10, 0x2d, 0xa)
    );
    assert_eq!(
        (marks[2].on, marks[2].sdev, marks[2].mask),
        (0x100, 0xfe0_0000, 0x800_0300)
    );
}

#[test]
fn fdinfo_lines_not_understood_are_named() {
    for bad in [
        // no group line
        "fanotify mnt_id:2d mflags:0 mask:a ignored_mask:0\n",
        // a kind of mark not known here
        "fanotify flags:0 event-flags:0\nfanotify mnt_ns:5 mflags:0 mask:1 ignored_mask:0\n",
        // a handle whose length is not what it says
        "fanotify flags:0 event-flags:0\nfanotify ino:3 sdev:28 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:00\n",
        // an inode mark without a handle
        "fanotify flags:0 event-flags:0\nfanotify ino:3 sdev:28 mflags:0 mask:2 ignored_mask:0\n",
        "fanotify flags:zz event-flags:0\n",
    ] {
        assert!(parse_fdinfo(bad).is_err(), "{bad:?}");
    }
    let e = parse_fdinfo("fanotify flags:0 event-flags:0\nfanotify mnt_ns:5 mflags:0\n")
        .expect_err("unknown");
    assert!(e.contains("mnt_ns:5"), "{e}");
}

fn mark(on: u32, mflags: u32, mask: u64, ignored_mask: u64) -> FanotifyMark {
    FanotifyMark {
        on,
        path: b"/tmp".to_vec(),
        mflags,
        mask,
        ignored_mask,
        id: 1,
    }
}

#[test]
fn each_mark_is_set_with_its_mask_then_its_ignore_mask() {
    use libc::*;
    let add = FAN_MARK_ADD;
    // an inode mark: not following a symbolic link (the handle named the link itself)
    assert_eq!(
        mark_calls(&mark(0, 0, 0x2a, 0)),
        [(add | FAN_MARK_DONT_FOLLOW, 0x2a)]
    );
    // only an ignore mask, surviving modification
    assert_eq!(
        mark_calls(&mark(0, FAN_MARK_IGNORED_SURV_MODIFY, 0, 2)),
        [(
            add | FAN_MARK_DONT_FOLLOW | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
            2
        )]
    );
    // both, on a mount
    assert_eq!(
        mark_calls(&mark(FAN_MARK_MOUNT, 0, 0xa, 0x20)),
        [
            (add | FAN_MARK_MOUNT, 0xa),
            (add | FAN_MARK_MOUNT | FAN_MARK_IGNORED_MASK, 0x20)
        ]
    );
    // FAN_MARK_IGNORE and an evictable inode mark
    assert_eq!(
        mark_calls(&mark(
            0,
            FAN_MARK_IGNORE | FAN_MARK_EVICTABLE,
            0x2,
            0x4000_0001
        )),
        [
            (add | FAN_MARK_DONT_FOLLOW | FAN_MARK_EVICTABLE, 0x2),
            (
                add | FAN_MARK_DONT_FOLLOW | FAN_MARK_EVICTABLE | FAN_MARK_IGNORE,
                0x4000_0001
            )
        ]
    );
    // a filesystem mark
    assert_eq!(
        mark_calls(&mark(FAN_MARK_FILESYSTEM, 0, 0x300, 0)),
        [(add | FAN_MARK_FILESYSTEM, 0x300)]
    );
}

fn group(init_flags: u32, marks: Vec<FanotifyMark>) -> FdKind {
    FdKind::Fanotify {
        flags: 0,
        init_flags,
        event_flags: 0,
        marks,
    }
}

#[test]
fn the_plan_refuses_groups_restore_cannot_make() {
    let mut problems = Vec::new();
    check_record(
        &fd(3, group(0x13, vec![mark(0, 0x40, 0, 2)])),
        10,
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let bad = [
        group(0x4000, vec![]),
        group(0, vec![mark(7, 0, 1, 0)]),
        group(0, vec![mark(0, 0x80, 1, 0)]),
        group(0, vec![mark(0, 0, libc::FAN_OPEN_PERM, 0)]),
        group(
            0,
            vec![FanotifyMark {
                path: b"rel".to_vec(),
                ..mark(0, 0, 1, 0)
            }],
        ),
    ];
    for k in bad {
        let mut problems = Vec::new();
        check_record(&fd(3, k.clone()), 10, &mut problems);
        assert_eq!(problems.len(), 1, "{k:?}");
        assert!(
            problems[0]
                .to_string()
                .contains("descriptor 3 of process 10 is a fanotify group with invalid"),
            "{problems:?}"
        );
    }
}

#[test]
fn marked_paths_must_exist() {
    let mut problems = Vec::new();
    let mut m = mark(0, 0, 1, 0);
    check_paths(std::slice::from_ref(&m), 3, &mut problems);
    assert!(problems.is_empty());
    m.path = b"/nonexistent/ckpt-fanotify".to_vec();
    check_paths(&[m], 3, &mut problems);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .contains("fanotify mark on /nonexistent/ckpt-fanotify: it does not exist"),
        "{problems:?}"
    );
}
