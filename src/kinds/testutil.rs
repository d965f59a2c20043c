//! Test support for the kinds' checks: small processes, descriptors and memory areas
//! built in memory, temporary files a test owns, and assertions on the problems found.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::arch::{ArchHeader, Regs, ThreadArchState};
use crate::error::Problem;
use crate::model::{Checkpoint, Fd, FdKind, FileId, Process, Thread, Vma, VmaKind};

/// A thread with sane state (a 576-byte xsave area, the smallest accepted).
pub(crate) fn thread(tid: i32) -> Thread {
    Thread {
        tid,
        arch: ThreadArchState {
            regs: Regs {
                cs: crate::arch::native::USER_CS_64,
                ss: crate::arch::native::USER_DS,
                ..Default::default()
            },
            xsave: vec![0; 576],
            debugregs: [0; 6],
            tls: Vec::new(),
        },
        sigmask: 0,
        // No alternate stack, as the kernel reports it.
        sigaltstack: crate::model::SigAltStack {
            flags: libc::SS_DISABLE,
            ..Default::default()
        },
        rseq: None,
        robust_list: 0,
        robust_list_len: 0,
        clear_child_tid: 0,
        pending: Vec::new(),
        sched_policy: 0,
        sched_priority: 0,
        nice: 0,
        comm: Vec::new(),
        creds: None,
        seccomp_filters: Vec::new(),
        nstid: Vec::new(),
    }
}

/// A living process leading its own group and session, with its main thread.
pub(crate) fn process(pid: i32) -> Process {
    Process {
        pid,
        ppid: 1,
        pgid: pid,
        sid: pid,
        comm: b"prog".to_vec(),
        cwd: b"/".to_vec(),
        root: b"/".to_vec(),
        threads: vec![thread(pid)],
        ..Default::default()
    }
}

/// Process `pid`, child of `ppid`, in the group and session `pgid`/`sid`.
pub(crate) fn child(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Process {
    Process {
        ppid,
        pgid,
        sid,
        ..process(pid)
    }
}

/// A zombie: IDs and an exit status, nothing else.
pub(crate) fn zombie(pid: i32, ppid: i32, sid: i32) -> Process {
    Process {
        pid,
        ppid,
        pgid: pid,
        sid,
        exit_status: Some(0),
        ..Default::default()
    }
}

/// A checkpoint of these processes (the first is the root), with no pipes or pairs.
pub(crate) fn checkpoint(processes: Vec<Process>) -> Checkpoint {
    Checkpoint {
        info: Default::default(),
        arch: ArchHeader::default(),
        processes,
        pipes: Vec::new(),
        socketpairs: Vec::new(),
        fifos: Vec::new(),
        ptys: Vec::new(),
        own_pid_namespace: false,
        pid_namespace_init_outside: false,
        sysv: Default::default(),
        namespaces: Vec::new(),
        parent: None,
        pid_namespaces: Vec::new(),
        external_pid_namespace: None,
        host_lock: None,
    }
}

/// Descriptor `n` of kind `kind`, not shared, without locks.
pub(crate) fn fd(n: i32, kind: FdKind) -> Fd {
    Fd {
        fd: n,
        cloexec: false,
        kind,
        shared_with: None,
        locks: Vec::new(),
        owner: None,
        inode_owner: None,
        in_flight: false,
    }
}

/// An eventfd: a kind with no host and no structure of its own to check.
pub(crate) fn eventfd() -> FdKind {
    FdKind::EventFd {
        count: 0,
        flags: 0,
        semaphore: false,
    }
}

/// A private anonymous memory area [start, end).
pub(crate) fn vma(start: u64, end: u64) -> Vma {
    Vma {
        start,
        end,
        prot: 3,
        shared: false,
        offset: 0,
        kind: VmaKind::Anon,
        name: Vec::new(),
        vmflags: Vec::new(),
        pages_present: 0,
        guard_ranges: Vec::new(),
        shmem_id: 0,
    }
}

/// The identity of `path` as it is now (what dump would have recorded).
pub(crate) fn file_id(path: &Path) -> FileId {
    let m = std::fs::metadata(path).expect("stat a test file");
    FileId {
        path: path.as_os_str().as_encoded_bytes().to_vec(),
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        rdev: m.rdev(),
        size: m.size(),
        mtime_sec: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        owner: Some((m.uid(), m.gid())),
        outside: false,
    }
}

/// The identity of a path that does not exist (a regular file at dump).
pub(crate) fn missing_id(path: &Path) -> FileId {
    FileId {
        path: path.as_os_str().as_encoded_bytes().to_vec(),
        mode: libc::S_IFREG | 0o644,
        ..Default::default()
    }
}

/// Path bytes, as the image holds them.
pub(crate) fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ckpt-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create a test directory");
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A file `name` in it holding `data`.
    pub(crate) fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).expect("write a test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PID no task can have on this host: above /proc/sys/kernel/pid_max.
pub(crate) fn impossible_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22);
    max + 1000
}

/// The problems `check` records.
pub(crate) fn run(check: impl FnOnce(&mut Vec<Problem>)) -> Vec<Problem> {
    let mut v = Vec::new();
    check(&mut v);
    v
}

/// The codes of `problems`, in order.
pub(crate) fn codes(problems: &[Problem]) -> Vec<&'static str> {
    problems.iter().map(|p| p.code).collect()
}

/// No problem at all.
#[track_caller]
pub(crate) fn assert_none(problems: &[Problem]) {
    assert!(problems.is_empty(), "unexpected problems: {problems:?}");
}

/// Exactly one problem, of code `code`, whose message holds every one of `words`.
#[track_caller]
pub(crate) fn assert_one(problems: &[Problem], code: &str, words: &[&str]) {
    assert_eq!(
        problems.len(),
        1,
        "expected one {code} problem: {problems:?}"
    );
    assert_eq!(problems[0].code, code, "{problems:?}");
    for w in words {
        assert!(
            problems[0].message.contains(w),
            "{:?} lacks {w:?}",
            problems[0].message
        );
    }
}
