//! Hostile images: a valid synthetic image is damaged in thousands of deterministic ways
//! (bit flips, truncation at and around every record boundary, length and padding fields
//! at their extremes behind a valid header checksum, records dropped, duplicated or
//! swapped, metadata replaced by garbage behind valid checksums) and every outcome must be
//! an error — never a panic, never an acceptance of changed bytes.
//!
//! `cargo test --test hostile_image -- --ignored write_fuzz_seeds` (re)writes the seed
//! corpus of the fuzz targets (fuzz/corpus/) from the same synthetic images.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use ckpt::arch::{Abi, ArchHeader, ThreadArchState, X86Regs};
use ckpt::image::{
    FLAG_REQUIRED, HEADER_LEN, ImageError, ImageReader, ImageWriter, RECORD_HEADER_LEN,
    decode_meta, max_payload, tag,
};
use ckpt::model::*;
use xxhash_rust::xxh3::xxh3_64;

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn file_id(path: &str) -> FileId {
    FileId {
        path: path.as_bytes().to_vec(),
        dev: 0x803,
        ino: 1234,
        mode: 0o100644,
        rdev: 0,
        size: 4096,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        owner: None,
    }
}

fn xsave_area(bv: u64) -> Vec<u8> {
    let mut x = vec![0u8; 832];
    x[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    x[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    x[512..520].copy_from_slice(&bv.to_le_bytes());
    for (i, b) in x[576..832].iter_mut().enumerate() {
        *b = i as u8;
    }
    x
}

fn thread(tid: i32, abi: Abi) -> Thread {
    let cs = match abi {
        Abi::X86_64 => 0x33,
        Abi::Ia32 => 0x23,
    };
    let arch = ThreadArchState {
        regs: X86Regs {
            rip: 0x5555_5555_1139,
            rsp: 0x7ffc_0000_1000,
            cs,
            ss: 0x2b,
            orig_rax: u64::MAX,
            eflags: 0x246,
            fs_base: 0x7f00_0000_0740,
            ..Default::default()
        },
        xsave: xsave_area(0x7),
        debugregs: [0x5555_5555_8010, 0, 0, 0, 0xffff_0ff0, 0xd0101],
        tls: match abi {
            Abi::X86_64 => vec![],
            Abi::Ia32 => vec![[12, 0xf7d8_e740, 0xfffff, 0x51]],
        },
    };
    // Built through serde so that fields the model adds later (always with a default,
    // by the model's evolution rule) do not break this test.
    serde_json::from_value(serde_json::json!({
        "tid": tid,
        "arch": arch,
        "sigmask": 1u64 << 9,
        "sigaltstack": SigAltStack { sp: 0, flags: 2, size: 0 },
        "rseq": Rseq { addr: 0x7f00_0000_0fe0, len: 32, flags: 0, signature: 0x5305_3053 },
        "robust_list": 0x7f00_0000_0a20u64,
        "robust_list_len": 24,
        "clear_child_tid": 0x7f00_0000_0a10u64,
        "pending": [PendingSignal { signo: 10, siginfo: vec![10; 128] }],
        "nice": 5,
    }))
    .expect("synthetic thread")
}

/// A small but complete checkpoint: every enum variant and optional field appears.
fn checkpoint() -> Checkpoint {
    let vma = |start: u64, end: u64, kind: VmaKind, name: &str| Vma {
        start,
        end,
        prot: 3,
        shared: false,
        offset: 0,
        kind,
        name: name.as_bytes().to_vec(),
        vmflags: vec!["rd".into(), "wr".into(), "mr".into()],
        pages_present: 1,
        guard_ranges: vec![],
        shmem_id: 0,
    };
    let process = Process {
        pid: 4242,
        ppid: 1,
        pgid: 4242,
        sid: 4242,
        comm: b"counter".to_vec(),
        cwd: b"/tmp".to_vec(),
        root: b"/".to_vec(),
        umask: 0o022,
        personality: 0,
        creds: Creds {
            uid: [0; 4],
            gid: [0; 4],
            groups: vec![0, 27],
            cap_inh: 0,
            cap_prm: 0x1ff_ffff_ffff,
            cap_eff: 0x1ff_ffff_ffff,
            cap_bnd: 0x1ff_ffff_ffff,
            cap_amb: 0,
            no_new_privs: false,
            seccomp: 0,
            securebits: 0,
        },
        rlimits: vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        misc: ProcMisc {
            pdeathsig: 0,
            dumpable: 1,
            child_subreaper: false,
            timerslack_ns: 50_000,
        },
        mm: MmInfo {
            start_code: 0x5555_5555_4000,
            end_code: 0x5555_5555_5000,
            start_brk: 0x5555_5556_0000,
            brk: 0x5555_5558_1000,
            auxv: vec![6, 4096, 0, 0],
            exe: Some(file_id("/tmp/counter")),
            ..Default::default()
        },
        vmas: vec![
            vma(
                0x5555_5555_4000,
                0x5555_5555_5000,
                VmaKind::File {
                    file: file_id("/tmp/counter"),
                },
                "/tmp/counter",
            ),
            vma(0x5555_5556_0000, 0x5555_5558_1000, VmaKind::Anon, "[heap]"),
            vma(0x7f00_0000_0000, 0x7f00_0000_1000, VmaKind::AnonShared, ""),
            vma(0x7ffc_0000_0000, 0x7ffc_0000_2000, VmaKind::Anon, "[stack]"),
            vma(0x7ffc_0001_0000, 0x7ffc_0001_4000, VmaKind::Vvar, "[vvar]"),
            vma(0x7ffc_0001_4000, 0x7ffc_0001_6000, VmaKind::Vdso, "[vdso]"),
        ],
        fds: vec![
            Fd {
                fd: 0,
                cloexec: false,
                kind: FdKind::Inherited {
                    what: "pipe:[1234]".into(),
                    flags: 0,
                    tty: None,
                },
                shared_with: None,
                locks: vec![],
            },
            Fd {
                fd: 3,
                cloexec: true,
                kind: FdKind::File {
                    file: file_id("/tmp/out"),
                    flags: 0o2001,
                    pos: 17,
                },
                shared_with: None,
                locks: vec![],
            },
            Fd {
                fd: 4,
                cloexec: false,
                kind: FdKind::Dir {
                    file: file_id("/tmp"),
                    flags: 0o200000,
                },
                shared_with: None,
                locks: vec![],
            },
            Fd {
                fd: 5,
                cloexec: false,
                kind: FdKind::Device {
                    file: file_id("/dev/null"),
                    flags: 2,
                    pos: 0,
                },
                shared_with: None,
                locks: vec![],
            },
        ],
        sigactions: vec![SigAction {
            signo: 10,
            handler: 0x5555_5555_1200,
            flags: 0x0400_0000,
            restorer: 0x7f00_0000_3000,
            mask: 0,
        }],
        shared_pending: vec![],
        threads: vec![thread(4242, Abi::X86_64), thread(4243, Abi::Ia32)],
        vdso_hash: 0x1234_5678_9abc_def0,
        vdso_size: 8192,
        itimers: vec![Default::default()],
        posix_timers: vec![Default::default()],
        ..Default::default()
    };
    // A zombie child: nothing but its IDs and exit status.
    let zombie = Process {
        pid: 4250,
        ppid: 4242,
        pgid: 4242,
        sid: 4242,
        exit_status: Some(256),
        ..Default::default()
    };
    Checkpoint {
        info: ImageInfo {
            tool_version: "0.1.0".into(),
            created_unix: 1_700_000_000,
            hostname: "host".into(),
            kernel_release: "6.18.0".into(),
            root_pid: 4242,
            boot_id: String::new(),
        },
        arch: ArchHeader {
            machine: "x86_64".into(),
            abis: vec![Abi::X86_64, Abi::Ia32],
            xcr0: 0x7,
            xfeatures_used: 0x7,
            xsave_size: 832,
            xsave_layout: vec![(0, 0, 160), (1, 160, 256), (2, 576, 256)],
            vdso_size: 8192,
            vdso_hash: 0x1234_5678_9abc_def0,
            vvar_size: 16384,
            cpu_features: vec!["avx".into(), "avx2".into(), "sse2".into()],
            xsave_align64: 0,
            xcomp_perm: 0x7,
        },
        processes: vec![process, zombie],
        pipes: vec![],
        socketpairs: vec![],
        own_pid_namespace: false,
        fifos: vec![],
    }
}

/// A valid image and the byte offset of each record (the end record last).
struct Image {
    bytes: Vec<u8>,
    records: Vec<usize>,
}

fn image(cp: &Checkpoint, with_optional: bool) -> Image {
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    let mut records = Vec::new();
    records.push(w.offset() as usize);
    w.write_meta(tag::CHECKPOINT, cp).unwrap();
    if with_optional {
        records.push(w.offset() as usize);
        w.write_record(0x7000_0001, 0, 9, b"a future optional record", false)
            .unwrap();
    }
    records.push(w.offset() as usize);
    w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 4242, &[], false)
        .unwrap();
    records.push(w.offset() as usize);
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    w.write_pages(0x5555_5556_0000, &page).unwrap();
    records.push(w.offset() as usize);
    let bytes = w.finish().unwrap();
    Image { bytes, records }
}

/// What a reader sees: every record, with the checkpoint decoded.
#[derive(Debug, PartialEq)]
struct Outcome {
    checkpoint: Option<Checkpoint>,
    records: Vec<(u32, u64, Vec<u8>)>,
}

fn read(bytes: &[u8]) -> Result<Outcome, ImageError> {
    let mut r = ImageReader::new(bytes)?;
    let mut out = Outcome {
        checkpoint: None,
        records: Vec::new(),
    };
    while let Some(rec) = r.next_record()? {
        if rec.tag == tag::CHECKPOINT {
            out.checkpoint = Some(decode_meta(rec.tag, rec.payload)?);
        }
        out.records.push((rec.tag, rec.arg, rec.payload.to_vec()));
    }
    Ok(out)
}

/// Read `bad`; it must fail (or, if it is byte-identical to `good`, succeed), and must not
/// panic. Returns the error.
fn must_fail(good: &[u8], bad: &[u8], what: &str) -> Option<ImageError> {
    match catch_unwind(AssertUnwindSafe(|| read(bad))) {
        Err(_) => panic!("reader panicked on {what}"),
        Ok(Err(e)) => {
            // Every error must say something.
            assert!(!e.to_string().is_empty(), "{what}: empty error message");
            Some(e)
        }
        Ok(Ok(_)) => {
            assert_eq!(good, bad, "{what}: a changed image was accepted");
            None
        }
    }
}

/// Rewrite the record header at `at` with its checksum recomputed, so a reader gets past
/// the header check to the field that was changed.
fn reseal_header(img: &mut [u8], at: usize) {
    let c = xxh3_64(&img[at..at + 28]) as u32;
    img[at + 28..at + 32].copy_from_slice(&c.to_le_bytes());
}

fn field_u64(img: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
}

#[test]
fn the_synthetic_image_is_valid() {
    let cp = checkpoint();
    for optional in [false, true] {
        let img = image(&cp, optional);
        let out = read(&img.bytes).unwrap();
        assert_eq!(out.checkpoint.as_ref(), Some(&cp));
        assert_eq!(out.records.len(), 3, "optional records are skipped");
        assert!(img.bytes.len() < 20_000);
    }
}

#[test]
fn truncation_at_and_around_every_record_boundary() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let mut cuts: Vec<usize> = vec![0, 1, 8, HEADER_LEN - 1, HEADER_LEN];
    for &r in &img.records {
        for d in [0usize, 1, 4, 8, 16, 24, 28, 31, 32, 33] {
            cuts.push(r + d);
            cuts.push(r.saturating_sub(d));
        }
    }
    // And a stride through everything, including inside payloads and padding.
    cuts.extend((0..b.len()).step_by(13));
    cuts.push(b.len() - 1);
    for cut in cuts.into_iter().filter(|&c| c < b.len()) {
        let e = must_fail(b, &b[..cut], &format!("truncation at {cut}"));
        assert!(
            matches!(
                e,
                Some(ImageError::Truncated { .. }) | Some(ImageError::BadMagic)
            ),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn random_bit_flips() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let mut rng = Rng(0x5eed);
    for round in 0..3000 {
        let mut bad = b.clone();
        let flips = 1 + rng.below(if round % 2 == 0 { 1 } else { 8 });
        for _ in 0..flips {
            let i = rng.below(bad.len());
            bad[i] ^= 1 << rng.below(8);
        }
        must_fail(b, &bad, &format!("bit flips, round {round}"));
    }
    // Whole bytes set to extremes at every header byte.
    for &r in &img.records {
        for i in r..r + RECORD_HEADER_LEN {
            for v in [0u8, 0xff] {
                let mut bad = b.clone();
                bad[i] = v;
                must_fail(b, &bad, &format!("byte {i} = {v:#x}"));
            }
        }
    }
}

#[test]
fn length_and_padding_fields_at_their_limits() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    for &r in &img.records {
        let t = u32::from_le_bytes(b[r..r + 4].try_into().unwrap());
        let len = field_u64(b, r + 8);
        let max = max_payload(t);
        let lens = [
            0,
            1,
            len.wrapping_sub(1),
            len + 1,
            len + 8,
            max,
            max + 1,
            u64::from(u32::MAX),
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
        ];
        // (The reader allocates only as data arrives, so lengths up to the maximum are
        // cheap: see claimed_length_is_not_allocated_before_the_data_arrives.)
        for l in lens.into_iter().filter(|&l| l != len) {
            let mut bad = b.clone();
            bad[r + 8..r + 16].copy_from_slice(&l.to_le_bytes());
            reseal_header(&mut bad, r);
            let e = must_fail(b, &bad, &format!("record at {r}: len {l:#x}"));
            if l > max {
                assert!(
                    matches!(e, Some(ImageError::RecordTooLarge { .. })),
                    "{e:?}"
                );
            }
        }
        let pad = u32::from_le_bytes(b[r + 24..r + 28].try_into().unwrap());
        for p in [1u32, 7, 4095, 4096, 65536, u32::MAX] {
            if p == pad {
                continue;
            }
            let mut bad = b.clone();
            bad[r + 24..r + 28].copy_from_slice(&p.to_le_bytes());
            reseal_header(&mut bad, r);
            must_fail(b, &bad, &format!("record at {r}: pad {p}"));
        }
        for (tg, fl) in [
            (0u32, 0u32),
            (t, 0),
            (t, u32::MAX),
            (u32::MAX, 1),
            (tag::END, 1),
        ] {
            if (tg, fl) == (t, u32::from_le_bytes(b[r + 4..r + 8].try_into().unwrap())) {
                continue;
            }
            let mut bad = b.clone();
            bad[r..r + 4].copy_from_slice(&tg.to_le_bytes());
            bad[r + 4..r + 8].copy_from_slice(&fl.to_le_bytes());
            reseal_header(&mut bad, r);
            must_fail(
                b,
                &bad,
                &format!("record at {r}: tag {tg:#x} flags {fl:#x}"),
            );
        }
    }
}

#[test]
fn file_header_fields_at_their_limits() {
    let img = image(&checkpoint(), false);
    let b = &img.bytes;
    let reseal = |h: &mut Vec<u8>| {
        let c = xxh3_64(&h[0..32]);
        h[32..40].copy_from_slice(&c.to_le_bytes());
    };
    for (at, width, values) in [
        (8usize, 4usize, vec![0u64, 2, u64::from(u32::MAX)]),
        (12, 4, vec![0, 39, 41, u64::from(u32::MAX)]),
        (16, 8, vec![1, 1 << 63, u64::MAX]),
        (24, 8, vec![1, u64::MAX]),
    ] {
        for v in values {
            let mut bad = b.clone();
            bad[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            reseal(&mut bad);
            let what = format!("file header byte {at} = {v:#x}");
            if at == 24 {
                // Unknown optional feature bits are ignored by design.
                assert!(read(&bad).is_ok(), "{what}");
            } else {
                must_fail(b, &bad, &what);
            }
        }
    }
}

#[test]
fn records_dropped_duplicated_swapped() {
    let img = image(&checkpoint(), true);
    let b = &img.bytes;
    let r = &img.records;
    let spans: Vec<(usize, usize)> = r.windows(2).map(|w| (w[0], w[1])).collect();
    for (i, &(s, e)) in spans.iter().enumerate() {
        let mut dropped = b.clone();
        dropped.drain(s..e);
        must_fail(b, &dropped, &format!("record {i} dropped"));
        let mut dup = b.clone();
        dup.splice(e..e, b[s..e].iter().copied());
        must_fail(b, &dup, &format!("record {i} duplicated"));
        let mut trailing = b.clone();
        trailing.extend_from_slice(&b[s..e]);
        must_fail(b, &trailing, &format!("record {i} after the end"));
    }
    // Swap the first two records (they are not page-aligned, so offsets stay valid).
    let (a, m, z) = (r[0], r[1], r[2]);
    let mut swapped = b[..a].to_vec();
    swapped.extend_from_slice(&b[m..z]);
    swapped.extend_from_slice(&b[a..m]);
    swapped.extend_from_slice(&b[z..]);
    must_fail(b, &swapped, "records 0 and 1 swapped");
    // Two images glued together.
    let mut twice = b.clone();
    twice.extend_from_slice(b);
    assert!(matches!(
        must_fail(b, &twice, "image twice"),
        Some(ImageError::TrailingData)
    ));
}

/// The largest single allocation made by this thread since the last reset.
mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Probe;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator unchanged; only records sizes in a
    // const-initialised thread-local Cell, which never allocates.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(l.size())));
            // SAFETY: same contract as ours.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(new)));
            // SAFETY: same contract as ours.
            unsafe { System.realloc(p, l, new) }
        }
    }

    pub fn reset() {
        LARGEST.with(|m| m.set(0));
    }

    pub fn largest() -> usize {
        LARGEST.with(|m| m.get())
    }
}

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

/// A short input must not make the reader allocate what its length fields merely claim:
/// the record header's checksum is not a secret, anyone can make one.
#[test]
fn claimed_length_is_not_allocated_before_the_data_arrives() {
    let img = image(&checkpoint(), false);
    let r = img.records[0];
    let mut bad = img.bytes[..r + RECORD_HEADER_LEN + 64].to_vec();
    bad[r + 8..r + 16].copy_from_slice(&max_payload(tag::CHECKPOINT).to_le_bytes());
    reseal_header(&mut bad, r);
    alloc_probe::reset();
    assert!(matches!(read(&bad), Err(ImageError::Truncated { .. })));
    let largest = alloc_probe::largest();
    assert!(
        largest <= 1 << 20,
        "a {}-byte input made the reader allocate {largest} bytes at once",
        bad.len()
    );
}

/// Bytes after the CBOR value of a metadata record are content that nobody reads: a
/// record holding them is not the record that was written.
#[test]
fn trailing_bytes_after_metadata_are_refused() {
    let mut payload = Vec::new();
    ciborium::into_writer(&checkpoint(), &mut payload).unwrap();
    payload.extend_from_slice(b"junk");
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_record(tag::CHECKPOINT, FLAG_REQUIRED, 0, &payload, false)
        .unwrap();
    let img = w.finish().unwrap();
    assert!(matches!(read(&img), Err(ImageError::Decode { .. })));
}

/// CBOR payloads that are well-checksummed but wrong.
fn garbage_payloads(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let cp = checkpoint();
    let mut good = Vec::new();
    ciborium::into_writer(&cp, &mut good).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("one zero".into(), vec![0]),
        ("break byte".into(), vec![0xff]),
        // Valid CBOR of the wrong shape.
        ("an integer".into(), vec![0x18, 0x2a]),
        ("a string".into(), b"\x63abc".to_vec()),
        ("empty map".into(), vec![0xa0]),
        ("empty array".into(), vec![0x80]),
        // Claims of enormous sizes with nothing behind them.
        ("array of 2^64-1".into(), [&[0x9b][..], &[0xff; 8]].concat()),
        ("map of 2^32".into(), [&[0xba][..], &[0xff; 4]].concat()),
        (
            "bytes of 2^63".into(),
            [&[0x5b, 0x80], &[0; 7][..]].concat(),
        ),
        ("text of 2^32-1".into(), [&[0x7a][..], &[0xff; 4]].concat()),
        // Deep nesting.
        ("10000 nested arrays".into(), vec![0x81; 10_000]),
        ("10000 nested maps".into(), [0xa1, 0x00].repeat(5_000)),
        ("10000 tags".into(), [0xc6].repeat(10_000)),
        // Indefinite-length forms never closed.
        ("open indefinite array".into(), vec![0x9f; 100]),
        (
            "open indefinite bytes".into(),
            [&[0x5f][..], &[0x41, 0x00].repeat(100)].concat(),
        ),
        // The real thing, damaged.
        ("truncated by one".into(), good[..good.len() - 1].to_vec()),
        ("half".into(), good[..good.len() / 2].to_vec()),
    ];
    for i in 0..200 {
        let mut g = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(g.len());
            g[at] = rng.next() as u8;
        }
        out.push((format!("mutated CBOR {i}"), g));
    }
    for i in 0..50 {
        let n = rng.below(300);
        out.push((
            format!("random bytes {i}"),
            (0..n).map(|_| rng.next() as u8).collect(),
        ));
    }
    out
}

#[test]
fn wrong_metadata_behind_valid_checksums_is_a_decode_error() {
    let mut rng = Rng(0xdec0de);
    for (what, payload) in garbage_payloads(&mut rng) {
        // The writer computes every checksum and the end chain: only the content is wrong.
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_record(tag::CHECKPOINT, FLAG_REQUIRED, 0, &payload, false)
            .unwrap();
        let img = w.finish().unwrap();
        match catch_unwind(AssertUnwindSafe(|| read(&img))) {
            Err(_) => panic!("panic decoding {what}"),
            Ok(Err(ImageError::Decode { name, msg })) => {
                assert_eq!(name, "checkpoint metadata");
                assert!(!msg.is_empty());
            }
            Ok(Err(e)) => panic!("{what}: expected a decode error, got {e}"),
            // A random mutation can land in a string, a number or the name of a field
            // that has a default (serde skips unknown fields) and still decode: that is
            // a well-formed checkpoint, not a decoder failure. The checksums are what
            // catch such changes in a real image.
            Ok(Ok(_)) => assert!(what.starts_with("mutated CBOR"), "{what} was accepted"),
        }
    }
}

#[test]
fn the_arch_checks_survive_hostile_headers() {
    // Decoded but hostile arch data must give problems, not panics.
    let host = ckpt::arch::HostCaps::detect();
    let mut rng = Rng(0xa5c4);
    let cp = checkpoint();
    for round in 0..500 {
        let mut hdr = cp.arch.clone();
        let mut t = cp.processes[0].threads[0].arch.clone();
        match round % 6 {
            0 => {
                hdr.xsave_layout =
                    vec![(rng.next() as u32 % 70, rng.next() as u32, rng.next() as u32)]
            }
            1 => hdr.xfeatures_used = rng.next(),
            2 => hdr.xsave_size = rng.next() as u32,
            3 => {
                let i = rng.below(t.xsave.len());
                t.xsave[i] = rng.next() as u8;
                let at = 512 + 8 * rng.below(2);
                t.xsave[at..at + 8].copy_from_slice(&rng.next().to_le_bytes());
            }
            4 => {
                t.debugregs = [
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                ]
            }
            _ => t.xsave.truncate(rng.below(900)),
        }
        let threads = [(1, &t)];
        for policy in ckpt::arch::CpuPolicy::ALL {
            let _ = ckpt::arch::check_arch(&hdr, &threads, &host, policy);
        }
        let _ = ckpt::arch::requirements_manifest(&hdr);
    }
}

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
    };
    let msg = |from: &[u8], len: usize| SockMessage {
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
