//! Hostile records: FIFO, lock, inotify and socket records with forged contents are
//! malformed or plan problems, compressed page records (lz4, zstd) are checked; the fuzz
//! seeds are valid images.
//!
//! `CKPT_WRITE_FUZZ_SEEDS=1 cargo test --test hostile_records fuzz_seeds` (re)writes the
//! seed corpus of the fuzz targets (fuzz/corpus/) from the same synthetic images as
//! `hostile_image.rs`.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use ckpt::image::{FLAG_REQUIRED, ImageError, ImageWriter, decode_meta, max_payload, tag};
use ckpt::model::*;
use common::hostile::*;

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

/// The fuzz seed corpus: small valid images and metadata that decode back to what was
/// encoded. With CKPT_WRITE_FUZZ_SEEDS=1 the seeds are also written to fuzz/corpus/ (do
/// that after changing the model or the format).
#[test]
fn fuzz_seeds_are_valid_images() {
    let write = std::env::var_os("CKPT_WRITE_FUZZ_SEEDS").is_some();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let img_dir = root.join("decode_image");
    let meta_dir = root.join("decode_meta");
    let save = |dir: &std::path::Path, name: String, bytes: &[u8]| {
        if write {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    let full = checkpoint();
    let mut small = checkpoint();
    small.processes[0].vmas.truncate(1);
    small.processes[0].fds.truncate(1);
    small.processes[0].threads.truncate(1);
    let mut empty = checkpoint();
    empty.processes.clear();
    for (name, cp, optional) in [
        ("full", &full, true),
        ("small", &small, false),
        ("empty", &empty, false),
    ] {
        let img = image(cp, optional);
        assert!(img.bytes.len() < 20_000);
        assert!(read(&img.bytes).is_ok(), "seed {name} does not read back");
        save(&img_dir, format!("seed-{name}.img"), &img.bytes);
        let mut cbor = Vec::new();
        ciborium::into_writer(cp, &mut cbor).unwrap();
        let back: Checkpoint = decode_meta(tag::CHECKPOINT, &cbor).unwrap();
        assert_eq!(&back, cp, "seed {name} does not decode to what was encoded");
        save(&meta_dir, format!("seed-{name}.cbor"), &cbor);
    }
    // A metadata-only image (no pages).
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_meta(tag::CHECKPOINT, &small).unwrap();
    let bytes = w.finish().unwrap();
    assert!(read(&bytes).is_ok());
    save(&img_dir, "seed-meta-only.img".into(), &bytes);
    // Images whose page record is compressed (`dump --compress lz4`, `zstd`).
    let page: Vec<u8> = (0..4096u32).map(|i| (i / 16) as u8).collect();
    for (name, rec_tag, packed) in [
        ("lz4", tag::PAGES_LZ4, ckpt::image::compress_pages(&page)),
        (
            "zstd",
            tag::PAGES_ZSTD,
            ckpt::image::compress_pages_zstd(&page, 3).unwrap(),
        ),
    ] {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &full).unwrap();
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 4242, &[], false)
            .unwrap();
        w.write_record(rec_tag, FLAG_REQUIRED, 0x5555_5556_0000, &packed, false)
            .unwrap();
        let bytes = w.finish().unwrap();
        assert!(read(&bytes).is_ok());
        save(&img_dir, format!("seed-{name}.img"), &bytes);
    }
}

/// Descriptor records that decode but make no sense (a FIFO without its pipe state, an
/// inverted or unbounded lock range, a lock on a descriptor that cannot hold one,
/// inotify watches out of order or with an empty path) are malformed for plan, never a
/// panic at restore.
#[test]
fn hostile_fifo_lock_and_inotify_records_are_malformed() {
    let view = ckpt::restore::HostView {
        host: ckpt::arch::HostCaps::detect(),
        policy: ckpt::arch::CpuPolicy::ALL[0],
        new_pid_namespace: false,
        inherit: Vec::new(),
        join_ns: Vec::new(),
        cgroup_root: None,
        cgroup_mode: Default::default(),
        cgroup_limits: Default::default(),
    };
    let lock = |start: u64, end: Option<u64>| FileLock {
        kind: LockKind::Posix,
        write: true,
        start,
        end,
    };
    let watch = |wd: i32, path: &str| InotifyWatch {
        wd,
        mask: 0x100,
        path: path.as_bytes().to_vec(),
        ino: 1,
        deleted: None,
    };
    type Change = Box<dyn Fn(&mut Checkpoint)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "unknown FIFO",
            Box::new(|cp| {
                cp.processes[0].fds[1].kind = FdKind::Fifo {
                    file: file_id("/tmp/fifo"),
                    id: 77,
                    flags: 0,
                    removed: false,
                }
            }),
        ),
        (
            "FIFO data beyond its capacity",
            Box::new(|cp| {
                cp.processes[0].fds[1].kind = FdKind::Fifo {
                    file: file_id("/tmp/fifo"),
                    id: 77,
                    flags: 0,
                    removed: false,
                };
                cp.fifos.push(FifoState {
                    id: 77,
                    capacity: 4096,
                    data: vec![0; 4097],
                });
            }),
        ),
        (
            "inverted lock range",
            Box::new(move |cp| cp.processes[0].fds[1].locks = vec![lock(10, Some(5))]),
        ),
        (
            "unbounded lock range",
            Box::new(move |cp| cp.processes[0].fds[1].locks = vec![lock(0, Some(i64::MAX as u64))]),
        ),
        (
            "lock on a device",
            Box::new(move |cp| cp.processes[0].fds[3].locks = vec![lock(0, None)]),
        ),
        (
            "inotify watches out of order",
            Box::new(move |cp| {
                cp.processes[0].fds[1].kind = FdKind::Inotify {
                    flags: 0,
                    watches: vec![watch(2, "/tmp"), watch(1, "/")],
                }
            }),
        ),
        (
            "inotify watch without a path",
            Box::new(move |cp| {
                cp.processes[0].fds[1].kind = FdKind::Inotify {
                    flags: 0,
                    watches: vec![watch(1, "")],
                }
            }),
        ),
    ];
    let base = ckpt::restore::problems(checkpoint(), &view);
    assert!(
        base.iter().all(|p| p.code != "malformed"),
        "the synthetic image itself is malformed: {:?}",
        base
    );
    for (what, change) in cases {
        let mut cp = checkpoint();
        change(&mut cp);
        let problems = ckpt::restore::problems(cp, &view);
        assert!(
            problems.iter().any(|p| p.code == "malformed"),
            "{what}: not reported as malformed: {:?}",
            problems
        );
    }
}

/// Socket records that restore cannot build (wrong types, sizes, families, names,
/// senders, keys) are "malformed" problems of the plan, never a panic; external
/// resources without a usable `--inherit-fd`, or an `--inherit-fd` for a key the image
/// lacks, are problems too.
#[test]
fn hostile_socket_records_are_plan_problems() {
    use ckpt::restore::{HostView, problems};
    let view = |inherit: Vec<(i32, String)>| HostView {
        host: ckpt::arch::HostCaps::detect(),
        policy: ckpt::arch::CpuPolicy::default(),
        new_pid_namespace: false,
        inherit,
        join_ns: Vec::new(),
        cgroup_root: None,
        cgroup_mode: Default::default(),
        cgroup_limits: Default::default(),
    };
    let msg = |from: &[u8], len: usize| SockMessage {
        creds: None,
        rights: Vec::new(),
        from: from.to_vec(),
        data: vec![7; len],
    };
    let v4 = |port: u16| {
        let mut a = vec![0u8; 16];
        a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a
    };
    let pair = |typ: i32| SocketPairState {
        id: 77,
        typ,
        ..Default::default()
    };
    let dgram = |name: &[u8], peer: &[u8], msgs: Vec<SockMessage>| FdKind::UnixDgram {
        sock: Box::new(UnixDgramState {
            name: name.to_vec(),
            peer_name: peer.to_vec(),
            opts: SockOpts::default(),
            msgs,
            ..Default::default()
        }),
        flags: 2,
    };
    let udp = |local: Vec<u8>, msgs: Vec<SockMessage>| FdKind::Udp {
        sock: Box::new(UdpState {
            family: libc::AF_INET,
            local,
            peer: vec![],
            v6only: false,
            opts: SockOpts::default(),
            msgs,
            ..Default::default()
        }),
        flags: 2,
    };
    let bad_pairs = vec![
        SocketPairState {
            typ: 99,
            ..pair(99)
        },
        SocketPairState {
            data0: vec![1],
            ..pair(libc::SOCK_DGRAM)
        },
        SocketPairState {
            msgs1: vec![msg(b"", 3)],
            ..pair(libc::SOCK_STREAM)
        },
        SocketPairState {
            msgs0: vec![msg(b"", 1 << 20)],
            ..pair(libc::SOCK_SEQPACKET)
        },
    ];
    for sp in bad_pairs {
        let mut cp = checkpoint();
        cp.processes[0].fds.push(Fd {
            fd: 100,
            cloexec: false,
            kind: FdKind::UnixPair {
                id: 77,
                end: 0,
                flags: 2,
            },
            shared_with: None,
            locks: vec![],
            owner: None,
            inode_owner: None,
            in_flight: false,
        });
        let what = format!("{sp:?}");
        cp.socketpairs = vec![sp];
        let pl = problems(cp, &view(vec![]));
        assert!(
            pl.iter().any(|p| p.code == "malformed"),
            "socket pair {what}: {:?}",
            pl
        );
    }
    let bad_fds = vec![
        udp(vec![2, 0, 1], vec![]),
        udp(v4(5353), vec![msg(&[10, 0, 0, 0, 0, 0, 0, 0], 4)]),
        udp(v4(5353), vec![msg(&v4(9), 70_000)]),
        dgram(b"/tmp/x.sock", b"/tmp/nobody.sock", vec![]),
        dgram(b"", b"", vec![msg(b"", 3)]),
        dgram(b"relative", b"", vec![]),
        dgram(b"/tmp/x.sock", b"", vec![msg(b"/tmp/stranger.sock", 3)]),
        FdKind::External {
            key: String::new(),
            flags: 0,
        },
    ];
    for kind in bad_fds {
        let mut cp = checkpoint();
        let what = format!("{kind:?}");
        cp.processes[0].fds.push(Fd {
            fd: 100,
            cloexec: false,
            kind,
            shared_with: None,
            locks: vec![],
            owner: None,
            inode_owner: None,
            in_flight: false,
        });
        let pl = problems(cp, &view(vec![]));
        assert!(
            pl.iter().any(|p| p.code == "malformed"),
            "{}: {:?}",
            &what[..what.len().min(200)],
            pl
        );
    }
    // External resources and --inherit-fd.
    let key = "pipe:[424242]".to_string();
    let mut cp = checkpoint();
    cp.processes[0].fds.push(Fd {
        fd: 100,
        cloexec: false,
        kind: FdKind::External {
            key: key.clone(),
            flags: 0,
        },
        shared_with: None,
        locks: vec![],
        owner: None,
        inode_owner: None,
        in_flight: false,
    });
    let codes = |inherit: Vec<(i32, String)>| -> Vec<(String, String)> {
        problems(cp.clone(), &view(inherit))
            .into_iter()
            .filter(|p| p.code == "external-fd" || p.code == "inherit-fd-unused")
            .map(|p| (p.code.to_string(), p.message))
            .collect()
    };
    let none = codes(vec![]);
    assert!(
        none.len() == 1 && none[0].1.contains(&format!("--inherit-fd N:{key}")),
        "{none:?}"
    );
    let closed = codes(vec![(999_999, key.clone())]);
    assert!(
        closed.len() == 1 && closed[0].1.contains("no descriptor 999999 open"),
        "{closed:?}"
    );
    assert_eq!(
        codes(vec![(0, key.clone())]),
        vec![],
        "stdin given for {key}"
    );
    let unused = codes(vec![(0, key.clone()), (0, "socket:[1]".into())]);
    assert!(
        unused.len() == 1 && unused[0].0 == "inherit-fd-unused",
        "{unused:?}"
    );
}

/// Compressed page records (`dump --compress lz4`) are hostile input too: a good one
/// decompresses to its pages; a wrong claimed length (zero, not whole pages, beyond a
/// page record's bound) or a block that decompresses to another length than it claims
/// are decode errors; damaged bytes never panic or allocate beyond the bound.
#[test]
fn compressed_page_records_are_checked() {
    compressed_records_are_checked(
        tag::PAGES_LZ4,
        ckpt::image::compress_pages,
        ckpt::image::decompress_pages,
    );
}

/// The same for zstd (`dump --compress zstd`).
#[test]
fn zstd_page_records_are_checked() {
    compressed_records_are_checked(
        tag::PAGES_ZSTD,
        |d| ckpt::image::compress_pages_zstd(d, 3).unwrap(),
        ckpt::image::decompress_pages_zstd,
    );
}

fn compressed_records_are_checked(
    rec_tag: u32,
    compress_pages: impl Fn(&[u8]) -> Vec<u8>,
    decompress_pages: impl Fn(&[u8], &mut Vec<u8>) -> Result<(), ImageError>,
) {
    let pages: Vec<u8> = (0..3 * 4096u32).map(|i| (i / 64) as u8).collect();
    let good = compress_pages(&pages);
    assert!(good.len() < pages.len() / 4, "pages with runs compress");
    let mut out = Vec::new();
    decompress_pages(&good, &mut out).unwrap();
    assert_eq!(out, pages);
    let with_len = |len: u32, block: &[u8]| {
        let mut p = len.to_le_bytes().to_vec();
        p.extend_from_slice(block);
        p
    };
    let block = &good[4..];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("length only", with_len(3 * 4096, &[])),
        ("zero length", with_len(0, block)),
        ("not whole pages", with_len(3 * 4096 + 1, block)),
        ("beyond the bound", with_len(!4095, block)),
        ("claims more than it holds", with_len(4 * 4096, block)),
        ("claims less than it holds", with_len(4096, block)),
        ("truncated block", good[..good.len() - 3].to_vec()),
    ];
    // LZ4 (and zstd as ckpt writes it) has no checksum of its own (the record's covers
    // it): damaged bytes may decode
    // to other pages, or fail, but never panic or allocate beyond the bound.
    for i in 0..good.len() {
        let mut p = good.clone();
        p[i] ^= 0xa5;
        alloc_probe::reset();
        let r = catch_unwind(AssertUnwindSafe(|| decompress_pages(&p, &mut out)));
        assert!(
            matches!(r, Ok(Ok(())) | Ok(Err(ImageError::Decode { .. }))),
            "byte {i} flipped: {r:?}"
        );
        assert!(alloc_probe::largest() <= max_payload(tag::PAGES) as usize);
    }
    for (what, payload) in cases {
        alloc_probe::reset();
        let r = catch_unwind(AssertUnwindSafe(|| decompress_pages(&payload, &mut out)));
        match r {
            Ok(Err(ImageError::Decode { .. })) => {}
            other => panic!("{what}: expected a decode error, got {other:?}"),
        }
        let largest = alloc_probe::largest();
        assert!(
            largest <= max_payload(tag::PAGES) as usize,
            "{what}: allocated {largest} bytes at once"
        );
    }
    // In an image, behind a valid checksum: check reads it and names the problem.
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_meta(tag::CHECKPOINT, &checkpoint()).unwrap();
    w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 4242, &[], false)
        .unwrap();
    let bad = with_len(4 * 4096, block);
    w.write_record(rec_tag, FLAG_REQUIRED, 0x5555_5556_0000, &bad, false)
        .unwrap();
    let bytes = w.finish().unwrap();
    let view = ckpt::restore::HostView {
        host: ckpt::arch::HostCaps::detect(),
        policy: ckpt::arch::CpuPolicy::ALL[0],
        new_pid_namespace: false,
        inherit: Vec::new(),
        join_ns: Vec::new(),
        cgroup_root: None,
        cgroup_mode: Default::default(),
        cgroup_limits: Default::default(),
    };
    let report = ckpt::restore::check(&bytes[..], &view).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.code == "image" && p.message.contains("compressed page data")),
        "{:?}",
        report.problems
    );
}
