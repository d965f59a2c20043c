//! Pipes and FIFOs: records, references and (for a FIFO) the path on this host.

use std::collections::BTreeSet;

use crate::kinds::fd::fifo::{check_fifo_unused, check_fifos, check_host, check_ref};
use crate::kinds::fd::held::HeldFiles;
use crate::kinds::fd::pipe::{MAX_PIPE, check_ends, check_pipes};
use crate::kinds::testutil::*;
use crate::model::{FdKind, FifoState, PipeState, Process};

fn pipe(id: u64, capacity: u32, len: usize) -> PipeState {
    PipeState {
        id,
        capacity,
        data: vec![7; len],
    }
}

#[test]
fn pipe_records() {
    let (v, ids) = {
        let mut v = Vec::new();
        let ids = check_pipes(&[pipe(1, 4096, 4096), pipe(2, MAX_PIPE as u32, 0)], &mut v);
        (v, ids)
    };
    assert_none(&v);
    assert_eq!(ids, [1, 2].into());
    for bad in [
        vec![pipe(3, 4096, 0), pipe(3, 4096, 0)],
        vec![pipe(3, MAX_PIPE as u32 + 1, 0)],
        vec![pipe(3, 4096, 4097)],
    ] {
        let v = run(|v| {
            check_pipes(&bad, v);
        });
        assert_one(&v, "malformed", &["invalid pipe 3"]);
    }
}

#[test]
fn pipe_ends_name_known_pipes() {
    let end = |id| FdKind::Pipe {
        id,
        write: true,
        flags: 0,
    };
    let p = Process {
        fds: vec![fd(3, end(1)), fd(4, end(2))],
        ..process(10)
    };
    let ids: BTreeSet<u64> = [1, 2].into();
    assert_none(&run(|v| check_ends(std::slice::from_ref(&p), &ids, v)));
    let ids: BTreeSet<u64> = [1].into();
    let v = run(|v| check_ends(std::slice::from_ref(&p), &ids, v));
    assert_one(
        &v,
        "malformed",
        &["descriptor 4 of process 10 is an unknown pipe"],
    );
}

#[test]
fn fifo_records_and_references() {
    let ff = |id, capacity, len| FifoState {
        id,
        capacity,
        data: vec![1; len],
    };
    let mut v = Vec::new();
    let ids = check_fifos(&[ff(1, 4096, 10), ff(2, 65536, 0)], &mut v);
    assert_none(&v);
    assert_eq!(ids, [1, 2].into());
    for bad in [
        vec![ff(5, 4096, 0), ff(5, 4096, 0)],
        vec![ff(5, MAX_PIPE as u32 + 1, 0)],
        vec![ff(5, 10, 11)],
    ] {
        let v = run(|v| {
            check_fifos(&bad, v);
        });
        assert_one(&v, "malformed", &["invalid FIFO 5"]);
    }
    assert_none(&run(|v| check_ref(1, 3, 10, &ids, v)));
    let v = run(|v| check_ref(9, 3, 10, &ids, v));
    assert_one(
        &v,
        "malformed",
        &["descriptor 3 of process 10 is an unknown FIFO"],
    );
}

fn mkfifo(p: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .expect("run mkfifo");
    assert!(ok.success());
}

#[test]
fn a_fifo_on_this_host() {
    let d = TempDir::new();
    let p = d.path().join("fifo");
    mkfifo(&p);
    let id = file_id(&p);
    assert_none(&run(|v| {
        check_host(&mut HeldFiles::same_boot(), &id, 3, &Default::default(), v)
    }));
    // Gone, or no longer a FIFO: the file check says so, and nothing more.
    let gone = missing_id(&d.path().join("gone"));
    let v = run(|v| {
        check_host(
            &mut HeldFiles::same_boot(),
            &gone,
            3,
            &Default::default(),
            v,
        )
    });
    assert_one(
        &v,
        "file-missing",
        &["file descriptor 3: FIFO", "is not available"],
    );
    let file = crate::model::FileId {
        mode: libc::S_IFIFO | 0o644,
        ..file_id(&d.file("plain", b""))
    };
    let v = run(|v| {
        check_host(
            &mut HeldFiles::same_boot(),
            &file,
            3,
            &Default::default(),
            v,
        )
    });
    assert_one(&v, "file-changed", &["is now a different kind of file"]);
}

#[test]
fn a_fifo_someone_holds_open_is_busy() {
    let d = TempDir::new();
    let p = d.path().join("fifo");
    mkfifo(&p);
    let id = file_id(&p);
    // Read-write: opening does not wait for a peer (Linux).
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("open the FIFO");
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &id, 3, &Default::default(), v));
    let me = std::process::id().to_string();
    assert_one(
        &v,
        "fifo-busy",
        &[
            "file descriptor 3: FIFO",
            "is open by process",
            &me,
            "needs it unused",
        ],
    );
    drop(held);
    assert_none(&run(|v| {
        check_fifo_unused(&id, "FIFO", &Default::default(), v)
    }));
}

#[test]
fn a_pipe_end_opened_again_is_a_further_description_after_the_first() {
    use crate::kinds::fd::pipe::further_description;
    const LARGEFILE: u32 = linux_raw_sys::general::O_LARGEFILE;
    let end = |n: i32, write: bool, flags: u32| {
        fd(
            n,
            FdKind::Pipe {
                id: 9,
                write,
                flags: flags | if write { libc::O_WRONLY as u32 } else { 0 },
            },
        )
    };
    let mut shared = end(3, false, 0);
    shared.shared_with = Some((10, 3));
    let ckpt = checkpoint(vec![
        Process {
            pid: 10,
            fds: vec![
                // opened through /proc (O_LARGEFILE), before pipe2's read end
                end(2, false, LARGEFILE | libc::O_NONBLOCK as u32),
                end(3, false, 0),
                end(4, true, 0),
                end(5, false, 0),
                // read-write, through /proc
                end(8, false, libc::O_RDWR as u32),
            ],
            ..Process::default()
        },
        Process {
            pid: 11,
            fds: vec![shared, end(6, false, 0), end(7, true, LARGEFILE)],
            ..Process::default()
        },
    ]);
    // pipe2's ends (no O_LARGEFILE) are the first of their end without it; every
    // description opened through /proc, and any later one, is opened again
    assert!(further_description(&ckpt, 10, 2, 9, false));
    assert!(!further_description(&ckpt, 10, 3, 9, false));
    assert!(!further_description(&ckpt, 10, 4, 9, true));
    assert!(further_description(&ckpt, 10, 5, 9, false));
    assert!(further_description(&ckpt, 10, 8, 9, false));
    assert!(further_description(&ckpt, 11, 6, 9, false));
    assert!(further_description(&ckpt, 11, 7, 9, true));
}
