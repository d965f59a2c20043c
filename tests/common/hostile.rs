//! The synthetic image the hostile image tests (`hostile_image.rs`, `hostile_records.rs`)
//! damage, its reader, and a probe of the largest allocation (the tests' global allocator).

use ckpt::arch::{Abi, ArchHeader, ThreadArchState, X86Regs};
use ckpt::image::{FLAG_REQUIRED, ImageError, ImageReader, ImageWriter, decode_meta, tag};
use ckpt::model::*;

pub fn file_id(path: &str) -> FileId {
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
        ..Default::default()
    }
}

pub fn xsave_area(bv: u64) -> Vec<u8> {
    let mut x = vec![0u8; 832];
    x[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    x[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    x[512..520].copy_from_slice(&bv.to_le_bytes());
    for (i, b) in x[576..832].iter_mut().enumerate() {
        *b = i as u8;
    }
    x
}

pub fn thread(tid: i32, abi: Abi) -> Thread {
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
        // struct robust_list_head's size for the thread's ABI (set_robust_list takes
        // no other).
        "robust_list_len": match abi { Abi::X86_64 => 24, Abi::Ia32 => 12 },
        "clear_child_tid": 0x7f00_0000_0a10u64,
        "pending": [PendingSignal { signo: 10, siginfo: vec![10; 128] }],
        "nice": 5,
    }))
    .expect("synthetic thread")
}

/// A small but complete checkpoint: every enum variant and optional field appears.
#[allow(clippy::needless_update)]
pub fn checkpoint() -> Checkpoint {
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
            oom_score_adj: Some(0),
            thp_disable: 0,
        },
        mm: MmInfo {
            start_code: 0x5555_5555_4000,
            end_code: 0x5555_5555_5000,
            start_brk: 0x5555_5556_0000,
            brk: 0x5555_5558_1000,
            // The other fields as a real process has them (PR_SET_MM_MAP refuses zeros).
            start_data: 0x5555_5555_6000,
            end_data: 0x5555_5555_7000,
            start_stack: 0x7ffc_0000_1f00,
            arg_start: 0x7ffc_0000_1f10,
            arg_end: 0x7ffc_0000_1f20,
            env_start: 0x7ffc_0000_1f20,
            env_end: 0x7ffc_0000_1f80,
            auxv: vec![6, 4096, 0, 0],
            exe: Some(file_id("/tmp/counter")),
            // (fields the model may add later)
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
                owner: None,
                inode_owner: None,
                in_flight: false,
            },
            Fd {
                fd: 3,
                cloexec: true,
                kind: FdKind::File {
                    file: file_id("/tmp/out"),
                    flags: 0o2001,
                    pos: 17,
                    unlinked: Vec::new(),
                },
                shared_with: None,
                locks: vec![],
                owner: None,
                inode_owner: None,
                in_flight: false,
            },
            Fd {
                fd: 4,
                cloexec: false,
                kind: FdKind::Dir {
                    file: file_id("/tmp"),
                    flags: 0o200000,
                    removed: false,
                },
                shared_with: None,
                locks: vec![],
                owner: None,
                inode_owner: None,
                in_flight: false,
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
                owner: None,
                inode_owner: None,
                in_flight: false,
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
        pid_namespace_init_outside: false,
        sysv: Default::default(),
        namespaces: Vec::new(),
        pid_namespaces: Vec::new(),
        external_pid_namespace: None,
        host_lock: None,
        fifos: vec![],
        ptys: vec![],
        parent: None,
    }
}

/// A valid image and the byte offset of each record (the end record last).
pub struct Image {
    pub bytes: Vec<u8>,
    pub records: Vec<usize>,
}

pub fn image(cp: &Checkpoint, with_optional: bool) -> Image {
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
pub struct Outcome {
    pub checkpoint: Option<Checkpoint>,
    pub records: Vec<(u32, u64, Vec<u8>)>,
}

pub fn read(bytes: &[u8]) -> Result<Outcome, ImageError> {
    let mut r = ImageReader::new(bytes)?;
    let mut out = Outcome {
        checkpoint: None,
        records: Vec::new(),
    };
    let required = r.required_features();
    while let Some(rec) = r.next_record()? {
        if rec.tag == tag::CHECKPOINT {
            let c: ckpt::model::Checkpoint = decode_meta(rec.tag, rec.payload)?;
            // As restore's plan::read_checkpoint does.
            ckpt::image::check_features(required, c.parent.is_some())?;
            out.checkpoint = Some(c);
        }
        out.records.push((rec.tag, rec.arg, rec.payload.to_vec()));
    }
    Ok(out)
}

/// The largest single allocation made by this thread since the last reset.
pub mod alloc_probe {
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
