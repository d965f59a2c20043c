//! Unit tests of the memory checks (plan): the structure of a process's memory areas,
//! the files it maps (temporary files), System V segments (against a list given in
//! place of the host's, and IDs no host has).

use crate::kinds::mem::shmem::{check_sysv_free, check_sysv_ids};
use crate::kinds::mem::{TASK_SIZE, check_areas, check_mapped_files};
use crate::kinds::testutil::*;
use crate::model::{Process, Vma, VmaKind};

fn areas(vmas: Vec<Vma>) -> Vec<crate::error::Problem> {
    let p = Process {
        vmas,
        ..process(10)
    };
    run(|v| check_areas(&p, v))
}

const P: u64 = 4096;

#[test]
fn sane_areas_pass() {
    assert_none(&areas(vec![]));
    assert_none(&areas(vec![
        Vma {
            pages_present: 2,
            guard_ranges: vec![(0x10000, 0x11000)],
            ..vma(0x10000, 0x12000)
        },
        // Adjacent, up to the top of user space, with a file offset.
        Vma {
            offset: 3 * P,
            prot: 7,
            ..vma(0x12000, 0x13000)
        },
        vma(TASK_SIZE - P, TASK_SIZE),
    ]));
}

#[test]
fn misaligned_empty_overlapping_or_out_of_range_areas() {
    let bad = [
        vma(0x10001, 0x12000),
        vma(0x10000, 0x12001),
        vma(0x10000, 0x10000),
        vma(0x12000, 0x10000),
        vma(TASK_SIZE, TASK_SIZE + P),
        Vma {
            offset: 1,
            ..vma(0x10000, 0x12000)
        },
        Vma {
            prot: 8,
            ..vma(0x10000, 0x12000)
        },
        Vma {
            pages_present: 3,
            ..vma(0x10000, 0x12000)
        },
    ];
    for b in bad {
        let (s, e) = (b.start, b.end);
        let v = areas(vec![b]);
        assert_one(
            &v,
            "malformed",
            &[
                &format!("memory area {s:#x}-{e:#x} is invalid"),
                "unaligned, overlapping",
            ],
        );
    }
    // Overlapping, or out of order: the second is named.
    for second in [vma(0x11000, 0x13000), vma(0x8000, 0x9000)] {
        let s = second.start;
        let v = areas(vec![vma(0x10000, 0x12000), second]);
        assert_one(&v, "malformed", &[&format!("memory area {s:#x}-")]);
    }
}

#[test]
fn only_private_anonymous_memory_is_droppable() {
    let dp = |mut v: Vma| {
        v.vmflags.extend(["nr", "wf", "dd", "dp"].map(String::from));
        v
    };
    assert_none(&areas(vec![dp(vma(0x10000, 0x12000))]));
    let bad = [
        Vma {
            shared: true,
            kind: VmaKind::AnonShared,
            ..vma(0x10000, 0x12000)
        },
        Vma {
            kind: VmaKind::DeletedMap {
                data: 1,
                file: crate::model::FileId::default(),
            },
            ..vma(0x10000, 0x12000)
        },
        Vma {
            vmflags: vec!["gd".into()],
            ..vma(0x10000, 0x12000)
        },
    ];
    for b in bad {
        let v = areas(vec![dp(b)]);
        assert_one(
            &v,
            "malformed",
            &["memory area 0x10000-0x12000 is droppable but not private anonymous"],
        );
    }
}

#[test]
fn guard_ranges_inside_their_area() {
    for g in [
        (0x10000, 0x10000),
        (0x10800, 0x11000),
        (0x10000, 0x11800),
        (0xf000, 0x11000),
        (0x11000, 0x13000),
    ] {
        let v = areas(vec![Vma {
            guard_ranges: vec![g],
            ..vma(0x10000, 0x12000)
        }]);
        assert_one(&v, "malformed", &["memory area 0x10000-0x12000 is invalid"]);
    }
}

#[test]
fn too_many_areas() {
    let many: Vec<Vma> = (0..65_531u64)
        .map(|i| vma((i + 1) * 2 * P, (i + 1) * 2 * P + P))
        .collect();
    assert_none(&areas(many[..65_530].to_vec()));
    let v = areas(many);
    assert_one(&v, "malformed", &["too many memory areas"]);
}

fn file_map(start: u64, kind: VmaKind) -> Vma {
    Vma {
        kind,
        ..vma(start, start + P)
    }
}

#[test]
fn mapped_files_are_there_and_unchanged() {
    let d = TempDir::new();
    let lib = file_id(&d.file("lib.so", b"code"));
    let p = Process {
        vmas: vec![
            file_map(0x10000, VmaKind::File { file: lib.clone() }),
            file_map(0x20000, VmaKind::File { file: lib.clone() }),
            file_map(
                0x30000,
                VmaKind::DeletedMap {
                    file: missing_id(&d.path().join("deleted")),
                    data: 1,
                },
            ),
            file_map(0x40000, VmaKind::Vdso),
        ],
        ..process(10)
    };
    assert_none(&run(|v| {
        check_mapped_files(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v)
    }));
    // A changed file is named once however often it is mapped.
    std::fs::write(procfs_path(&lib.path), b"new code").expect("write");
    let v = run(|v| check_mapped_files(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_one(
        &v,
        "file-changed",
        &["mapped file", "lib.so has changed since the dump"],
    );
    std::fs::remove_file(procfs_path(&lib.path)).expect("remove");
    let v = run(|v| check_mapped_files(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_one(
        &v,
        "file-missing",
        &["mapped file", "lib.so is not available"],
    );
}

fn procfs_path(b: &[u8]) -> &std::path::Path {
    crate::sys::proc::bytes_path(b)
}

#[test]
fn a_deleted_mapped_file_needs_its_directory() {
    let d = TempDir::new();
    let gone = missing_id(&d.path().join("nodir").join("deleted"));
    let p = Process {
        vmas: vec![
            file_map(
                0x10000,
                VmaKind::DeletedMap {
                    file: gone.clone(),
                    data: 1,
                },
            ),
            file_map(
                0x20000,
                VmaKind::DeletedMap {
                    file: gone,
                    data: 1,
                },
            ),
        ],
        ..process(10)
    };
    let v = run(|v| check_mapped_files(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_one(
        &v,
        "file-missing",
        &[
            "memory area 0x10000-0x11000: the directory of deleted file",
            "nodir/deleted",
        ],
    );
}

fn sysv(key: i32, shmid: i32) -> VmaKind {
    VmaKind::SysvShm {
        key,
        shmid,
        size: P,
        mode: 0o600,
    }
}

#[test]
fn system_v_segments_must_be_free() {
    let host = [(0x1234, 5, 0o600, P), (0, 6, 0o600, P)];
    assert_none(&run(|v| check_sysv_ids(0x99, 7, &host, v)));
    // Key 0 (IPC_PRIVATE) is never a conflict.
    assert_none(&run(|v| check_sysv_ids(0, 7, &host, v)));
    let v = run(|v| check_sysv_ids(0x99, 5, &host, v));
    assert_one(
        &v,
        "sysv-taken",
        &["System V shared memory ID 5 is in use on this host"],
    );
    let v = run(|v| check_sysv_ids(0x1234, 8, &host, v));
    assert_one(
        &v,
        "sysv-taken",
        &["System V shared memory key 0x1234 is in use on this host"],
    );
    let v = run(|v| check_sysv_ids(0x1234, 6, &host, v));
    assert_eq!(codes(&v), ["sysv-taken", "sysv-taken"], "{v:?}");
    // This host: no segment has a negative ID; other areas are not looked at.
    let p = Process {
        vmas: vec![file_map(0x10000, sysv(0, -1)), vma(0x20000, 0x21000)],
        ..process(10)
    };
    assert_none(&run(|v| check_sysv_free(&p, &Default::default(), v)));
}

mod aio {
    use super::*;
    use crate::kinds::mem::aio::{
        check_ring_sizes, check_rings, count_cpus, ring_events, setup_events,
    };
    use crate::model::AioRing;

    fn ring(addr: u64, pages: u64, head: u32, tail: u32, events: usize) -> AioRing {
        AioRing {
            addr,
            len: pages * P,
            nr: ring_events(pages * P) as u32,
            head,
            tail,
            events: vec![7; events * 32],
            ino: 1,
        }
    }

    fn rings(aio: Vec<AioRing>, vmas: Vec<Vma>) -> Vec<crate::error::Problem> {
        let p = Process {
            aio,
            vmas,
            ..process(10)
        };
        run(|v| check_rings(&p, v))
    }

    #[test]
    fn ring_sizes_are_what_io_setup_makes() {
        // io_setup(4) on 2 CPUs: one page, 127 events; io_setup(128): 3 pages, 383.
        assert_eq!(ring_events(P), 127);
        assert_eq!(ring_events(3 * P), 383);
        // asked for again: (2n + 2) events fit the same pages, and not fewer pages
        for pages in 1..40 {
            let n = setup_events(pages * P);
            let size = 32 + (2 * n + 2) * 32;
            assert!(size <= pages * P && size > (pages - 1) * P, "{pages} pages");
        }
    }

    #[test]
    fn rings_must_agree_with_their_header_and_stay_apart() {
        let at = 0x7000_0000;
        // head 5, tail 8: three events; wrapped: head 120, tail 2 of 127: nine
        assert!(rings(vec![ring(at, 1, 5, 8, 3)], vec![]).is_empty());
        assert!(rings(vec![ring(at, 1, 120, 2, 9)], vec![]).is_empty());
        // a head the program wrote past nr counts modulo nr, as the kernel takes it
        assert!(rings(vec![ring(at, 1, 127 + 5, 8, 3)], vec![]).is_empty());
        let bad = [
            (vec![ring(at, 1, 5, 8, 2)], vec![]),
            (vec![ring(at, 1, 5, 127, 122)], vec![]),
            (vec![ring(at + 1, 1, 0, 0, 0)], vec![]),
            (
                vec![AioRing {
                    nr: 100,
                    ..ring(at, 1, 0, 0, 0)
                }],
                vec![],
            ),
            (vec![ring(at, 1, 0, 0, 0), ring(at, 1, 0, 0, 0)], vec![]),
            (vec![ring(at, 1, 0, 0, 0)], vec![vma(at, at + P)]),
            (vec![ring(TASK_SIZE, 1, 0, 0, 0)], vec![]),
        ];
        for (aio, vmas) in bad {
            let p = rings(aio.clone(), vmas);
            assert_eq!(p.len(), 1, "{aio:?}");
            assert!(p[0].message.contains("process 10 has invalid AIO contexts"));
        }
    }

    #[test]
    fn a_ring_needs_a_host_with_few_enough_cpus() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpus("x"), None);
        let p = Process {
            aio: vec![ring(0x7000_0000, 1, 0, 0, 0)],
            ..process(10)
        };
        // 127 events: 2 * max(62, 4 * cpus) + 2 fit up to 15 CPUs
        for cpus in [1, 2, 15] {
            assert!(run(|v| check_ring_sizes(&p, cpus, v)).is_empty(), "{cpus}");
        }
        let problems = run(|v| check_ring_sizes(&p, 16, v));
        assert_one(
            &problems,
            "host-differs",
            &[
                "AIO context 0x70000000 has a ring of 127 events",
                "at least 130",
            ],
        );
    }
}
