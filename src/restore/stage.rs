//! Stage and commit: build the process in a traced stub, then let it go.
//!
//! The stub is a fork of ckpt created with clone3(set_tid) at the image's PID; it traces
//! itself to us (PTRACE_TRACEME, PTRACE_O_EXITKILL: if ckpt dies, so does the stub) and
//! stops. Everything is then done by system calls injected into it: its own memory is
//! unmapped (but for a small "stub area" holding a syscall instruction and scratch data at
//! an address the image does not use), the image's memory map, files and attributes are
//! built, page data is written as it streams in (each record's checksum already checked),
//! and finally the stub area is unmapped, the saved registers are set and the task is
//! detached: the point of no return. Until then, dropping the [`Stub`] kills it.

use std::collections::BTreeMap;

use super::plan::{Plan, TASK_SIZE};
use super::privs;
use super::source::RecordSource;
use super::{RestoreError, Result, fault_point};
use crate::arch::Abi;
use crate::arch::x86::{self as ax, nr};
use crate::image::tag;
use crate::model::{FdKind, FifoState, PipeState, Process, SocketPairState, Thread, Vma, VmaKind};
use crate::remote::{
    BATCH_CODE_OFFSET, BatchArgs, Ctx, STUB_CODE, STUB_SIZE, helper_injector, move_fd,
    move_fd_calls, set_status_flags, setsockopt_u32, take_remote_fd,
};
use crate::sys::inject::{Call, Injector, find_gadget};
use crate::sys::mem::RemoteMem;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, proc as procfs};

/// Owns the half-built process tree: dropping it before commit kills and reaps every
/// process and thread it created.
pub struct Stub {
    /// (process ID, IDs of its other threads), in creation order; the first is the root,
    /// ckpt's own child.
    pub procs: Vec<(i32, Vec<i32>)>,
    committed: bool,
    /// The root is the init of the PID namespace we live in ([`RootStub::Seize`]): we
    /// cannot kill it (an init ignores SIGKILL from inside its namespace). It dies with
    /// us (PTRACE_O_EXITKILL) and its parent, ckpt outside, reaps it; the namespace's
    /// other processes die with it.
    root_seized: bool,
}

/// Where the root of the tree comes from.
pub enum RootStub {
    /// A new child of ours, created with the root's PID.
    Spawn,
    /// A child of ours already created with the root's PID ([`RootStub::spawn_now`]).
    Spawned(SpawnedRoot),
    /// An existing process (see `sys::process::spawn_pidns_init_stub`): we seize it and
    /// write a byte to `go`, after which it stops itself.
    Seize { pid: i32, go: std::os::fd::OwnedFd },
}

impl RootStub {
    /// Create the root's stub now (a fork of ckpt), before ckpt grows threads and
    /// buffers: a fork then copies less, and no page ckpt writes meanwhile is shared
    /// copy-on-write with the stub until the stub unmaps it. (`Spawn` otherwise.)
    pub fn spawn_now(self, plan: &Plan) -> Result<Self> {
        match self {
            RootStub::Spawn => {
                let root =
                    plan.ckpt.processes.first().ok_or_else(|| {
                        RestoreError::Malformed("the image holds no process".into())
                    })?;
                fault_point("create process")?;
                let pid = once_released(root.pid, || {
                    Ok(sys::process::spawn_traced_stub(Some(root.pid))?)
                })?;
                Ok(RootStub::Spawned(SpawnedRoot { pid }))
            }
            other => Ok(other),
        }
    }
}

/// Run `create` (which creates a process with PID `pid`) again while it fails with
/// EEXIST though no task with that PID is visible: the last one is being released (its
/// parent is reaping it; plan waited for that, but the kernel frees the PID a moment
/// after the task leaves /proc), for at most a second.
fn once_released<T>(pid: i32, mut create: impl FnMut() -> Result<T>) -> Result<T> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match create() {
            Err(RestoreError::Sys(e))
                if e.errno() == Some(libc::EEXIST)
                    && procfs::stat(pid).is_err()
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            r => return r,
        }
    }
}

/// The root's stub created ahead of [`stage`]: killed and reaped if dropped before
/// stage takes it over.
pub struct SpawnedRoot {
    pid: i32,
}

impl SpawnedRoot {
    /// Hand the process over (to stage's [`Stub`] guard).
    fn take(self) -> i32 {
        let pid = self.pid;
        std::mem::forget(self);
        pid
    }
}

impl Drop for SpawnedRoot {
    fn drop(&mut self) {
        sys::process::kill_and_reap(self.pid, &[]);
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if !self.committed && self.root_seized {
            for (pid, _) in self.procs.iter().skip(1) {
                let _ = sys::process::kill(*pid, libc::SIGKILL);
            }
        } else if !self.committed {
            for (pid, _) in &self.procs {
                let _ = sys::process::kill(*pid, libc::SIGKILL);
            }
            // Parents first: when the root (our child) is gone, its children are
            // reparented to us (restore makes ckpt a child subreaper), so that we, their
            // tracer and now parent, reap them completely.
            for (pid, tids) in self.procs.iter() {
                sys::process::kill_and_reap(*pid, tids);
            }
        }
    }
}

/// Where the helper area may go: gaps in the image's memory maps, below `limit` (4 GiB
/// when an ia32 task must reach it).
fn stub_candidates(vmas: &[Vma], limit: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut prev = 0x1000_0000u64; // stay clear of low memory
    for v in vmas
        .iter()
        .map(|v| (v.start, v.end))
        .filter(|v| v.0 < limit)
        .chain([(limit, limit)])
    {
        // leave a page of gap on both sides so nothing merges with the stub area
        if v.0 > prev + STUB_SIZE + 2 * 4096 {
            out.push(prev + 4096);
            out.push(v.0 - STUB_SIZE - 4096);
        }
        prev = prev.max(v.1);
    }
    out
}

fn mmap_flags(v: &Vma) -> u64 {
    let mut f = if v.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    } | libc::MAP_FIXED_NOREPLACE;
    if matches!(v.kind, VmaKind::Anon | VmaKind::AnonShared) {
        f |= libc::MAP_ANONYMOUS;
    }
    if v.has_flag("gd") {
        f |= libc::MAP_GROWSDOWN;
    }
    f as u64
}

/// Whether page data may land in this VMA.
fn takes_pages(v: &Vma) -> bool {
    match v.kind {
        VmaKind::Anon | VmaKind::AnonShared | VmaKind::SysvShm { .. } => true,
        VmaKind::File { .. } | VmaKind::MemfdMap { .. } | VmaKind::DeletedMap { .. } => !v.shared,
        _ => false,
    }
}

/// System V segments restore created: removed again unless the restore commits (they
/// would outlive the killed stubs otherwise).
#[derive(Default)]
pub struct SysvCreated {
    ids: Vec<i32>,
    keep: bool,
}

impl Drop for SysvCreated {
    fn drop(&mut self) {
        if !self.keep {
            for id in &self.ids {
                sys::process::remove_sysv_shm(*id);
            }
        }
    }
}

/// Shared anonymous memory objects already created: id -> (process, its mapping).
type ShmOwners = BTreeMap<u64, (i32, u64, u64)>;

/// Map one MAP_SHARED|MAP_ANONYMOUS area: the first process to map an object creates it
/// (large enough for every mapping of it in the image) and maps it from its own
/// /proc/self/map_files entry; the others map the same object from the creator's.
fn map_shmem(cx: &mut Ctx<'_>, v: &Vma, prot: u64, shm: &mut ShmOwners, size: u64) -> Result<()> {
    let what = format!("map shared memory area {:#x}-{:#x}", v.start, v.end);
    let (path, tmp) = match shm.get(&v.shmem_id) {
        Some(&(pid, s, e)) => (format!("/proc/{pid}/map_files/{s:x}-{e:x}"), None),
        None => {
            let t = cx.call(
                &what,
                nr::MMAP,
                [
                    0,
                    size,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            )?;
            (
                format!("/proc/self/map_files/{t:x}-{:x}", t + size),
                Some(t),
            )
        }
    };
    let fd = cx.open(path.as_bytes(), libc::O_RDWR | libc::O_CLOEXEC)?;
    let flags = (libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE) as u64;
    cx.map_at(&what, v, prot, flags, fd)?;
    cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    if let Some(t) = tmp {
        cx.call("munmap", nr::MUNMAP, [t, size, 0, 0, 0, 0])?;
        shm.insert(v.shmem_id, (cx.proc_.pid, v.start, v.end));
    }
    Ok(())
}

/// Attach a System V segment at its old address, creating it first (under its old ID,
/// through kernel.shm_next_id) if this is the first process of the image to attach it.
/// It is attached writable for the page data; protections are set afterwards.
fn attach_sysv(
    cx: &mut Ctx<'_>,
    v: &Vma,
    (key, shmid, size, mode): (i32, i32, u64, u32),
    shm: &mut ShmOwners,
    created: &mut SysvCreated,
) -> Result<()> {
    let what = format!("System V segment {shmid}");
    if let std::collections::btree_map::Entry::Vacant(slot) = shm.entry(v.shmem_id) {
        sys::process::set_shm_next_id(shmid)?;
        let flags = libc::IPC_CREAT as u64 | libc::IPC_EXCL as u64 | u64::from(mode & 0o777);
        let got = cx.call(&what, nr::SHMGET, [key as u32 as u64, size, flags, 0, 0, 0]);
        let _ = sys::process::set_shm_next_id(-1);
        let got = got?;
        created.ids.push(got as i32);
        if got != shmid as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: the kernel gave it ID {got}; the program would use the wrong one"
            )));
        }
        slot.insert((cx.proc_.pid, v.start, v.end));
    }
    let mut fl = 0u64;
    if v.prot & libc::PROT_EXEC as u32 != 0 {
        fl |= libc::SHM_EXEC as u64;
    }
    let r = cx.call(&what, nr::SHMAT, [shmid as u64, v.start, fl, 0, 0, 0])?;
    if r != v.start {
        return Err(RestoreError::Stage(format!(
            "{what}: attached at {r:#x} instead of {:#x}",
            v.start
        )));
    }
    Ok(())
}

/// After every process is staged: a segment that had been removed (SHM_DEST) while
/// still attached is removed again; it lives on as long as someone has it attached.
fn remove_destroyed_sysv(
    cx: &mut Ctx<'_>,
    done: &mut std::collections::BTreeSet<i32>,
) -> Result<()> {
    for v in &cx.proc_.vmas {
        if let VmaKind::SysvShm { shmid, mode, .. } = v.kind {
            if mode & 0o1000 != 0 && done.insert(shmid) {
                cx.call(
                    "shmctl(IPC_RMID)",
                    nr::SHMCTL,
                    [shmid as u64, libc::IPC_RMID as u64, 0, 0, 0, 0],
                )?;
            }
        }
    }
    Ok(())
}

/// Map a memfd or deleted file kept in the image (the same file for every mapping and
/// descriptor of it in the image, so that their writes are seen by each other). A
/// shared mapping gets a writable descriptor if it may be made writable (`mw`), unless
/// the memfd's seals forbid writing.
fn map_kept_file(
    cx: &mut Ctx<'_>,
    v: &Vma,
    prot: u64,
    data: u64,
    how: Kept<'_>,
    files: &mut FileData,
) -> Result<()> {
    let write_sealed = match how {
        Kept::Memfd { seals, .. } => {
            seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) as u32 != 0
        }
        Kept::Deleted { .. } => false,
    };
    let rw =
        v.shared && (v.prot & libc::PROT_WRITE as u32 != 0 || (v.has_flag("mw") && !write_sealed));
    let fd = kept_file_fd(
        cx,
        data,
        how,
        if rw { libc::O_RDWR } else { libc::O_RDONLY },
        files,
    )?;
    let what = format!("map memory area {:#x}-{:#x}", v.start, v.end);
    let r = cx.map_at(&what, v, prot, mmap_flags(v), fd);
    cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    r
}

fn map_memory(
    cx: &mut Ctx<'_>,
    sysv: &mut SysvCreated,
    shm: &mut ShmOwners,
    shm_sizes: &BTreeMap<u64, u64>,
    kept: &mut FileData,
) -> Result<()> {
    let proc_ = cx.proc_;
    // The mapped files, each opened once (read-write where a shared writable mapping
    // needs it), in batches of independent opens.
    let file_key = |v: &Vma, file: &crate::model::FileId| {
        let rw = v.shared && v.prot & libc::PROT_WRITE as u32 != 0;
        (file.path.clone(), rw)
    };
    let keys: std::collections::BTreeSet<(Vec<u8>, bool)> = proc_
        .vmas
        .iter()
        .filter_map(|v| match &v.kind {
            VmaKind::File { file } => Some(file_key(v, file)),
            _ => None,
        })
        .collect();
    let keys: Vec<_> = keys.into_iter().collect();
    let mut files: BTreeMap<(Vec<u8>, bool), u64> = BTreeMap::new();
    for chunk in keys.chunks(64) {
        let mut args = BatchArgs::new();
        let mut opens = Vec::new();
        for (path, rw) in chunk {
            let a = args.add_cstr(cx, path)?;
            let flags = if *rw { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC;
            opens.push(Call::new(
                format!("open {}", String::from_utf8_lossy(path)),
                nr::OPENAT,
                [libc::AT_FDCWD as u64, a, flags as u64, 0, 0, 0],
            ));
        }
        for (k, fd) in chunk.iter().zip(cx.batch(&args, &opens)?) {
            files.insert(k.clone(), fd);
        }
    }
    let mut vdso_done = false;
    // Anonymous and file mappings are independent of each other: mapped in one batch.
    let mut maps: Vec<Call> = Vec::new();
    let mut map_call = |what: String, v: &Vma, prot: u64, fd: u64| {
        let off = if fd == u64::MAX { 0 } else { v.offset };
        maps.push(Call::new(
            what,
            nr::MMAP,
            [v.start, v.len(), prot, mmap_flags(v), fd, off],
        ));
    };
    for v in &proc_.vmas {
        let mut prot = u64::from(v.prot);
        if takes_pages(v) && v.pages_present > 0 {
            prot |= libc::PROT_WRITE as u64;
        }
        let what = format!("map memory area {:#x}-{:#x}", v.start, v.end);
        match &v.kind {
            VmaKind::Vvar | VmaKind::Vdso => {
                if !vdso_done {
                    vdso_done = true;
                    let code = match proc_.abi() {
                        Abi::X86_64 => ax::ARCH_MAP_VDSO_64,
                        Abi::Ia32 => ax::ARCH_MAP_VDSO_32,
                    };
                    cx.call("map the vDSO", nr::ARCH_PRCTL, [code, v.start, 0, 0, 0, 0])?;
                }
                continue;
            }
            VmaKind::SysvShm {
                key,
                shmid,
                size,
                mode,
            } => {
                attach_sysv(cx, v, (*key, *shmid, *size, *mode), shm, sysv)?;
            }
            VmaKind::AnonShared => {
                let size = shm_sizes
                    .get(&v.shmem_id)
                    .copied()
                    .unwrap_or(v.offset + v.len());
                map_shmem(cx, v, prot, shm, size)?;
            }
            VmaKind::Anon => map_call(what, v, prot, u64::MAX),
            VmaKind::MemfdMap { data, name, seals } => {
                let how = Kept::Memfd {
                    name,
                    seals: *seals,
                };
                map_kept_file(cx, v, prot, *data, how, kept)?;
            }
            VmaKind::DeletedMap { data, file } => {
                map_kept_file(cx, v, prot, *data, Kept::Deleted { file }, kept)?;
            }
            VmaKind::File { file } => {
                let fd = files.get(&file_key(v, file)).copied().ok_or_else(|| {
                    RestoreError::Stage(format!("{what}: its file was not opened"))
                })?;
                map_call(what, v, prot, fd);
            }
        }
    }
    let got = cx.batch(&BatchArgs::new(), &maps)?;
    for (c, r) in maps.iter().zip(got) {
        // MAP_FIXED_NOREPLACE: the kernel must place it exactly there.
        if r != c.args[0] {
            return Err(RestoreError::Stage(format!(
                "{}: the kernel placed it at {r:#x}",
                c.what
            )));
        }
    }
    let closes: Vec<Call> = files
        .into_values()
        .map(|fd| Call::new("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0]))
        .collect();
    cx.batch(&BatchArgs::new(), &closes)?;
    // The vDSO must be where the image had it: the program holds pointers into it.
    if vdso_done {
        let maps = procfs::maps(cx.pid())?;
        for v in proc_.vmas.iter().filter(|v| v.kind == VmaKind::Vdso) {
            if !maps
                .iter()
                .any(|m| m.path == b"[vdso]" && m.start == v.start && m.end == v.end)
            {
                return Err(RestoreError::Stage(format!(
                    "the vDSO could not be placed at {:#x}",
                    v.start
                )));
            }
            // Same code too: the program may hold pointers into it. (A 64-bit vDSO was
            // compared in plan; a 32-bit one can only be read once mapped.)
            if proc_.vdso_size != 0 {
                let mut code = vec![0u8; v.len() as usize];
                cx.read(v.start, &mut code)?;
                if xxhash_rust::xxh3::xxh3_64(&code) != proc_.vdso_hash {
                    return Err(RestoreError::Stage(format!(
                        "this kernel's {} vDSO differs from the one process {} used; the \
                         program may hold pointers into it, so it cannot be restored on \
                         this kernel",
                        if proc_.abi() == Abi::Ia32 {
                            "32-bit"
                        } else {
                            "64-bit"
                        },
                        proc_.pid
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Contents of deleted files and memfds, by their `data` id.
#[derive(Default)]
pub struct FileData {
    pub files: BTreeMap<u64, std::fs::File>,
    pub bytes: u64,
    /// The files recreated so far, by `data` id: ckpt holds each open until every
    /// process has its own descriptors and mappings of it (see [`kept_file_fd`]).
    made: BTreeMap<u64, std::fs::File>,
    /// Files created on disk for deleted files; removed again once every process has
    /// opened them, or when restore fails.
    ghosts: Vec<std::path::PathBuf>,
}

impl FileData {
    /// Remove the recreated deleted files (every process has them open by now).
    fn unlink_ghosts(&mut self) {
        for g in self.ghosts.drain(..) {
            let _ = std::fs::remove_file(g);
        }
    }
}

impl Drop for FileData {
    fn drop(&mut self) {
        self.unlink_ghosts();
    }
}

/// What a file kept in the image (contents in `FILE_DATA`) is, to recreate it.
#[derive(Clone, Copy)]
enum Kept<'a> {
    Memfd { name: &'a [u8], seals: u32 },
    Deleted { file: &'a crate::model::FileId },
}

/// Recreate the file kept under `data` (once for the image), held by ckpt.
fn recreate_file(data: u64, how: Kept<'_>, files: &mut FileData) -> Result<()> {
    use std::io::Seek;
    if files.made.contains_key(&data) {
        return Ok(());
    }
    let mut content = files.files.remove(&data).ok_or_else(|| {
        RestoreError::Malformed(format!("the contents of file {data} are missing"))
    })?;
    content
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| sys::SysError::io("rewind file contents", e))?;
    let made = match how {
        Kept::Memfd { name, seals } => {
            fault_point("recreate memfd")?;
            let sealing = seals != libc::F_SEAL_SEAL as u32;
            let mut m = sys::process::memfd_named(name, sealing)?;
            std::io::copy(&mut content, &mut m)
                .map_err(|e| sys::SysError::io("write memfd contents", e))?;
            if sealing && seals != 0 {
                sys::process::add_seals(&m, seals)?;
            }
            m
        }
        Kept::Deleted { file } => {
            fault_point("recreate deleted file")?;
            // Recreate it (under its old name if that is free); removed again later.
            let orig = procfs::bytes_path(&file.path).to_path_buf();
            let ghost = if std::fs::symlink_metadata(&orig).is_err() {
                orig.clone()
            } else {
                orig.with_file_name(format!(".ckpt-ghost-{data}-{}", std::process::id()))
            };
            use std::os::unix::fs::OpenOptionsExt;
            let mut g = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(file.mode & 0o7777)
                .open(&ghost)
                .map_err(|e| sys::SysError::io(format!("recreate {}", ghost.display()), e))?;
            files.ghosts.push(ghost.clone());
            std::io::copy(&mut content, &mut g)
                .map_err(|e| sys::SysError::io(format!("write {}", ghost.display()), e))?;
            g
        }
    };
    files.made.insert(data, made);
    Ok(())
}

/// A new descriptor in the stub (close-on-exec) of the file kept under `data`, opened
/// with `oflags` (recreated first if this is its first use in the image). The stub
/// takes ckpt's descriptor with `pidfd_getfd` (which names ckpt in the stub's own PID
/// namespace, also when that is the tree's new one) and opens the file again through
/// `/proc/self/fd`, for a description of its own with its own flags.
fn kept_file_fd(
    cx: &mut Ctx<'_>,
    data: u64,
    how: Kept<'_>,
    oflags: i32,
    files: &mut FileData,
) -> Result<u64> {
    use std::os::fd::AsRawFd;
    recreate_file(data, how, files)?;
    let held = files
        .made
        .get(&data)
        .ok_or_else(|| RestoreError::Stage(format!("file {data} was not recreated")))?;
    let held = held.as_raw_fd() as u64;
    let me = std::process::id() as i32;
    let t = take_remote_fd(cx, me, held, "take a recreated file")?;
    let n = cx.open(
        format!("/proc/self/fd/{t}").as_bytes(),
        oflags | libc::O_CLOEXEC,
    );
    cx.call("close", nr::CLOSE, [t, 0, 0, 0, 0, 0])?;
    n
}

/// Make a memfd or deleted file descriptor with its contents; returns its descriptor.
fn make_file_fd(cx: &mut Ctx<'_>, f: &crate::model::Fd, files: &mut FileData) -> Result<u64> {
    let (data, flags, pos, how) = match &f.kind {
        FdKind::Memfd {
            data,
            flags,
            pos,
            name,
            seals,
        } => (
            *data,
            *flags,
            *pos,
            Kept::Memfd {
                name,
                seals: *seals,
            },
        ),
        FdKind::DeletedFile {
            data,
            flags,
            pos,
            file,
        } => (*data, *flags, *pos, Kept::Deleted { file }),
        _ => return unreachable_kind(),
    };
    let oflags = (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
    let n = kept_file_fd(cx, data, how, oflags, files)?;
    if pos != 0 {
        cx.call("lseek", nr::LSEEK, [n, pos, libc::SEEK_SET as u64, 0, 0, 0])?;
    }
    Ok(n)
}

fn unreachable_kind() -> Result<u64> {
    Err(RestoreError::Stage("not a file kept in the image".into()))
}

/// Where the page data of a new process goes: `UFFDIO_COPY` into its private anonymous
/// areas, registered with a userfaultfd the process created (`sys::uffd`: each page is
/// allocated and filled in one step instead of cleared by a fault and then
/// overwritten), `process_vm_writev` everywhere else and wherever userfaultfd is not
/// available.
pub struct PageSink<'a> {
    mem: &'a RemoteMem,
    uffd: Option<sys::uffd::Uffd>,
    /// The registered areas, sorted.
    ranges: Vec<(u64, u64)>,
}

impl<'a> PageSink<'a> {
    /// Create the userfaultfd in the process of `cx` and register its private anonymous
    /// areas that take pages. The descriptor it has in the process is closed again at
    /// once (ckpt holds its own).
    fn new(cx: &'a mut Ctx<'_>) -> Result<PageSink<'a>> {
        let ranges: Vec<(u64, u64)> = cx
            .proc_
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::Anon && !v.shared && v.pages_present > 0)
            .map(|v| (v.start, v.end))
            .collect();
        if ranges.is_empty() {
            return Ok(Self::plain(&cx.mem));
        }
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = match cx.call("userfaultfd", nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0]) {
            Ok(fd) => fd,
            // Not in this kernel, or not allowed: the pages go the ordinary way.
            Err(RestoreError::Sys(sys::SysError::Remote { .. })) => {
                return Ok(Self::plain(&cx.mem));
            }
            Err(e) => return Err(e),
        };
        // If ckpt cannot take or enable it (pidfd_getfd refused, say), the same.
        let adopted = sys::uffd::Uffd::adopt(cx.pid(), fd as i32);
        cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
        let Ok(uffd) = adopted else {
            return Ok(Self::plain(&cx.mem));
        };
        let mut registered = Vec::new();
        for &(start, end) in &ranges {
            // An area the kernel will not register is filled the ordinary way.
            if uffd.register(start, end - start).is_ok() {
                registered.push((start, end));
            }
        }
        Ok(PageSink {
            mem: &cx.mem,
            uffd: Some(uffd),
            ranges: registered,
        })
    }

    fn plain(mem: &'a RemoteMem) -> Self {
        PageSink {
            mem,
            uffd: None,
            ranges: Vec::new(),
        }
    }

    /// Write `data` (whole pages) at `addr`, all of it inside one area of the process.
    fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        if let Some(u) = &self.uffd {
            let i = self.ranges.partition_point(|r| r.1 <= addr);
            if self.ranges.get(i).is_some_and(|r| r.0 <= addr) {
                return Ok(u.copy(addr, data)?);
            }
        }
        Ok(self.mem.write(addr, data)?)
    }

    /// Unregister the areas: from now on they are ordinary memory (pages the image did
    /// not have are cleared on their first fault, as before).
    fn finish(self) -> Result<()> {
        if let Some(u) = &self.uffd {
            for &(start, end) in &self.ranges {
                u.unregister(start, end - start)?;
            }
        }
        Ok(())
    }
}

/// The page data part of the image, read process by process in image order.
pub struct PageStream<'r> {
    reader: &'r mut dyn RecordSource,
    next_pid: Option<i64>,
    ended: bool,
}

impl<'r> PageStream<'r> {
    pub fn new(reader: &'r mut dyn RecordSource) -> Self {
        Self {
            reader,
            next_pid: None,
            ended: false,
        }
    }

    /// Read the file contents that come before the page data (FILE_DATA records), into
    /// memory files of ckpt's own (or only check them, without `keep`).
    pub fn read_file_data(&mut self, keep: bool) -> Result<FileData> {
        let mut out = FileData::default();
        loop {
            let Some(rec) = self.reader.next_record()? else {
                self.ended = true;
                return Ok(out);
            };
            match rec.tag {
                tag::FILE_DATA => {
                    out.bytes += rec.payload.len() as u64;
                    if keep {
                        let f = match out.files.entry(rec.arg) {
                            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(sys::process::memfd("ckpt-file-data")?)
                            }
                        };
                        std::io::Write::write_all(f, &rec.payload)
                            .map_err(|e| sys::SysError::io("keep file contents", e))?;
                    }
                    self.reader.recycle(rec.payload);
                }
                tag::PAGES_PID => {
                    self.next_pid = Some(rec.arg as i64);
                    return Ok(out);
                }
                t => {
                    return Err(RestoreError::Malformed(format!(
                        "unexpected {} record after the metadata",
                        tag::name(t)
                    )));
                }
            }
        }
    }

    /// Read the page records of `proc_` (which must come next), checking each against
    /// its memory map, and write them into `mem` if given. Returns the bytes read.
    pub fn load(&mut self, proc_: &Process, mem: Option<&PageSink<'_>>) -> Result<u64> {
        let pid = match self.next_pid.take() {
            Some(p) => p,
            None => match self.reader.next_record()? {
                Some(rec) if rec.tag == tag::PAGES_PID => rec.arg as i64,
                Some(rec) => {
                    return Err(RestoreError::Malformed(format!(
                        "expected the page data of process {}, found a {} record",
                        proc_.pid,
                        tag::name(rec.tag)
                    )));
                }
                None => {
                    self.ended = true;
                    return Err(RestoreError::Malformed(format!(
                        "the page data of process {} is missing",
                        proc_.pid
                    )));
                }
            },
        };
        if pid != i64::from(proc_.pid) {
            return Err(RestoreError::Malformed(format!(
                "page data of process {pid} where process {} was expected",
                proc_.pid
            )));
        }
        let mut got: Vec<u64> = vec![0; proc_.vmas.len()];
        let mut bytes = 0u64;
        while let Some(rec) = self.reader.next_record()? {
            match rec.tag {
                tag::PAGES_PID => {
                    self.next_pid = Some(rec.arg as i64);
                    return Ok(bytes);
                }
                tag::PAGES => {
                    // The whole record is checked against the memory map with its first
                    // piece; the pieces that follow are its consecutive parts (the
                    // reader hands them over in order, and checks the record's checksum
                    // with the last one, before anything is committed).
                    let addr = rec.arg;
                    let len = rec.record_len;
                    if rec.part == 0 {
                        let bad = |why: &str| {
                            RestoreError::Malformed(format!(
                                "page data record at byte {} ({addr:#x}, {len} bytes): {why}",
                                rec.offset
                            ))
                        };
                        if addr % 4096 != 0 || len % 4096 != 0 || len == 0 {
                            return Err(bad("not page aligned"));
                        }
                        let i = proc_.vmas.partition_point(|v| v.end <= addr);
                        let v = proc_
                            .vmas
                            .get(i)
                            .filter(|v| {
                                v.start <= addr && addr.checked_add(len).is_some_and(|e| e <= v.end)
                            })
                            .ok_or_else(|| bad("not inside one memory area"))?;
                        if !takes_pages(v) {
                            return Err(bad("memory area takes no page data"));
                        }
                        got[i] += len / 4096;
                        if got[i] > v.pages_present {
                            return Err(bad("more pages than the memory area had"));
                        }
                        if mem.is_some() {
                            fault_point("write pages")?;
                        }
                    }
                    let piece = rec.payload.len() as u64;
                    if rec.part.checked_add(piece).is_none_or(|e| e > len) {
                        return Err(RestoreError::Stage(format!(
                            "page data record at byte {}: piece out of order",
                            rec.offset
                        )));
                    }
                    if let Some(m) = mem {
                        m.write(addr + rec.part, &rec.payload)?;
                    }
                    bytes += piece;
                    self.reader.recycle(rec.payload);
                }
                t => {
                    return Err(RestoreError::Malformed(format!(
                        "unexpected {} record after the metadata",
                        tag::name(t)
                    )));
                }
            }
        }
        self.ended = true;
        Ok(bytes)
    }

    /// Check that nothing but the end of the image follows.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(p) = self.next_pid {
            return Err(RestoreError::Malformed(format!(
                "page data for process {p}, which the image does not describe"
            )));
        }
        if !self.ended {
            if let Some(rec) = self.reader.next_record()? {
                return Err(RestoreError::Malformed(format!(
                    "unexpected {} record at the end of the image",
                    tag::name(rec.tag)
                )));
            }
        }
        Ok(())
    }
}

fn finish_memory(cx: &mut Ctx<'_>) -> Result<()> {
    let proc_ = cx.proc_;
    // Independent calls, made in one batch.
    let mut calls = Vec::new();
    for v in &proc_.vmas {
        if takes_pages(v) && v.pages_present > 0 && v.prot & libc::PROT_WRITE as u32 == 0 {
            calls.push(Call::new(
                "mprotect",
                nr::MPROTECT,
                [v.start, v.len(), u64::from(v.prot), 0, 0, 0],
            ));
        }
        if matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar) {
            continue;
        }
        let advice: &[(&str, i32)] = &[
            ("dc", libc::MADV_DONTFORK),
            ("dd", libc::MADV_DONTDUMP),
            ("wf", libc::MADV_WIPEONFORK),
            ("hg", libc::MADV_HUGEPAGE),
            ("nh", libc::MADV_NOHUGEPAGE),
            ("mg", libc::MADV_MERGEABLE),
            ("rr", libc::MADV_RANDOM),
            ("sr", libc::MADV_SEQUENTIAL),
        ];
        for (flag, adv) in advice {
            if v.has_flag(flag) {
                calls.push(Call::new(
                    format!("madvise {flag}"),
                    nr::MADVISE,
                    [v.start, v.len(), *adv as u64, 0, 0, 0],
                ));
            }
        }
        if v.has_flag("lf") {
            // mlock2(MLOCK_ONFAULT): locked, but only the pages present (those the image
            // gave it) are faulted in, as before.
            const MLOCK_ONFAULT: u64 = 1;
            calls.push(Call::new(
                "mlock2(MLOCK_ONFAULT)",
                nr::MLOCK2,
                [v.start, v.len(), MLOCK_ONFAULT, 0, 0, 0],
            ));
        } else if v.has_flag("lo") {
            calls.push(Call::new(
                "mlock",
                nr::MLOCK,
                [v.start, v.len(), 0, 0, 0, 0],
            ));
        }
        const MADV_GUARD_INSTALL: u64 = 102;
        for g in &v.guard_ranges {
            calls.push(Call::new(
                "install guard pages",
                nr::MADVISE,
                [g.0, g.1 - g.0, MADV_GUARD_INSTALL, 0, 0, 0],
            ));
        }
    }
    cx.batch(&BatchArgs::new(), &calls)?;
    Ok(())
}

fn set_mm(cx: &mut Ctx<'_>) -> Result<()> {
    let mm = &cx.proc_.mm;
    let exe_fd = match &mm.exe {
        Some(exe) => cx.open(&exe.path, libc::O_RDONLY | libc::O_CLOEXEC)?,
        None => u64::from(u32::MAX),
    };
    let mut auxv = Vec::new();
    for w in &mm.auxv {
        auxv.extend_from_slice(&w.to_le_bytes());
    }
    let auxv_addr = cx.put(4096, &auxv)?;
    let mut s = Vec::new();
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ] {
        s.extend_from_slice(&w.to_le_bytes());
    }
    s.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    s.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let a = cx.put(8192, &s)?;
    const PR_SET_MM_MAP: u64 = 14;
    cx.call(
        "prctl(PR_SET_MM_MAP)",
        nr::PRCTL,
        [
            libc::PR_SET_MM as u64,
            PR_SET_MM_MAP,
            a,
            s.len() as u64,
            0,
            0,
        ],
    )?;
    if mm.exe.is_some() {
        cx.call("close", nr::CLOSE, [exe_fd, 0, 0, 0, 0, 0])?;
    }
    Ok(())
}

/// Pipes created so far: id -> (holder process, temporary read fd, temporary write fd).
/// The holder keeps both ends at temporary numbers until every process has its
/// descriptors; others take them with pidfd_getfd.
/// Socket pairs are held the same way, under (1, id); pipes under (0, id); FIFOs under
/// (2, id), by one read-write descriptor (both numbers the same).
type PipeHolders = BTreeMap<(u8, u64), (i32, u64, u64)>;

// Where a process keeps pipe ends temporarily (moved down to kinds::fd for plan's checks).
use crate::kinds::fd::pipe_tmp_base;

/// Create pipe `pipe` in this process (its temporaries at `tmp`, `tmp + 1`), with its
/// capacity and the data that was in it.
fn create_pipe(cx: &mut Ctx<'_>, pipe: &PipeState, tmp: u64, direct: bool) -> Result<(u64, u64)> {
    let fl = libc::O_CLOEXEC as u64 | if direct { libc::O_DIRECT as u64 } else { 0 };
    let a = cx.put(0, &[0u8; 8])?;
    cx.call("pipe2", nr::PIPE2, [a, fl, 0, 0, 0, 0])?;
    let mut b = [0u8; 8];
    cx.read(a, &mut b)?;
    let r = u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default()));
    let w = u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default()));
    fill_pipe(
        cx,
        w,
        pipe.capacity,
        &pipe.data,
        &format!("pipe {}", pipe.id),
    )?;
    park_pair(cx, r, w, tmp)
}

/// Give the pipe behind write descriptor `w` its capacity (0: leave the default) and
/// put `data` back in it.
fn fill_pipe(cx: &mut Ctx<'_>, w: u64, capacity: u32, data: &[u8], what: &str) -> Result<()> {
    if capacity != 0 {
        let args = [w, libc::F_SETPIPE_SZ as u64, u64::from(capacity), 0, 0, 0];
        cx.call("F_SETPIPE_SZ", nr::FCNTL, args)?;
    }
    queue_data(cx, nr::WRITE, w, data, what)
}

/// Queue `data` on descriptor `fd` of the target (`nr` is write, or sendto for a TCP
/// socket in repair mode), in chunks through the scratch area; a short write is an error
/// naming `what`, never silently lost data.
fn queue_data(cx: &mut Ctx<'_>, nr: u64, fd: u64, data: &[u8], what: &str) -> Result<()> {
    const CHUNK: usize = 1 << 19;
    for chunk in data.chunks(CHUNK) {
        let a = cx.put(4096, chunk)?;
        let n = cx.call(
            &format!("queue {what} data"),
            nr,
            [fd, a, chunk.len() as u64, 0, 0, 0],
        )?;
        if n != chunk.len() as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: only {n} of {} queued bytes could be put back",
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Create socket pair `sp` in this process (its ends kept at `tmp`, `tmp + 1`), each
/// end with the data that was waiting to be read on it.
fn create_socketpair(cx: &mut Ctx<'_>, sp: &SocketPairState, tmp: u64) -> Result<(u64, u64)> {
    let a = cx.put(0, &[0u8; 8])?;
    cx.call(
        "socketpair",
        nr::SOCKETPAIR,
        [
            libc::AF_UNIX as u64,
            (sp.typ | libc::SOCK_CLOEXEC) as u64,
            0,
            a,
            0,
            0,
        ],
    )?;
    let mut b = [0u8; 8];
    cx.read(a, &mut b)?;
    let e0 = u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default()));
    let e1 = u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default()));
    // Options first: the buffer sizes bound what can be queued, and SO_PASSCRED
    // decides whether queued messages carry credentials.
    for (fd, o) in [(e0, &sp.opts[0]), (e1, &sp.opts[1])] {
        set_sock_opts(cx, fd, o)?;
    }
    // What end 0 will read is sent from end 1, and the other way round.
    let what = format!("socket pair {}", sp.id);
    for (from, data) in [(e1, &sp.data0), (e0, &sp.data1)] {
        queue_data(cx, nr::WRITE, from, data, &what)?;
    }
    for (from, msgs) in [(e1, &sp.msgs0), (e0, &sp.msgs1)] {
        for m in msgs {
            send_message(cx, from, &m.data, &[], &what)?;
        }
    }
    park_pair(cx, e0, e1, tmp)
}

/// Send one message (a datagram or record, with its boundary) from socket `fd` of the
/// target, to `to` (a raw address) or to its peer. Never blocks: a full queue is an
/// error naming `what`, not a hang.
fn send_message(cx: &mut Ctx<'_>, fd: u64, data: &[u8], to: &[u8], what: &str) -> Result<()> {
    let a = cx.put(4096, data)?;
    let (ta, tl) = if to.is_empty() {
        (0, 0)
    } else {
        (cx.put(1024, to)?, to.len() as u64)
    };
    let n = cx.call(
        &format!("queue {what} message"),
        nr::SENDTO,
        [fd, a, data.len() as u64, libc::MSG_DONTWAIT as u64, ta, tl],
    )?;
    if n != data.len() as u64 {
        return Err(RestoreError::Stage(format!(
            "{what}: a queued message of {} bytes could only be sent in part ({n})",
            data.len()
        )));
    }
    Ok(())
}

/// Socket options recorded at dump (0 buffer sizes: not recorded). The kernel doubles
/// the buffer size it is given, so half the recorded value is set, with the FORCE
/// variants so that the system-wide maximum does not cut it.
fn set_sock_opts(cx: &mut Ctx<'_>, fd: u64, o: &crate::model::SockOpts) -> Result<()> {
    const SO_SNDBUFFORCE: i32 = 32;
    const SO_RCVBUFFORCE: i32 = 33;
    if o.sndbuf != 0 {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            SO_SNDBUFFORCE,
            o.sndbuf / 2,
            "SO_SNDBUFFORCE",
        )?;
    }
    if o.rcvbuf != 0 {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            SO_RCVBUFFORCE,
            o.rcvbuf / 2,
            "SO_RCVBUFFORCE",
        )?;
    }
    if o.passcred {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            1,
            "SO_PASSCRED",
        )?;
    }
    if o.reuseaddr {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
            "SO_REUSEADDR",
        )?;
    }
    if o.reuseport {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            1,
            "SO_REUSEPORT",
        )?;
    }
    Ok(())
}

/// Move two fresh descriptors to `tmp` and `tmp + 1`. Either may already sit on one of
/// those numbers (they are the lowest free ones), so both go above first.
fn park_pair(cx: &mut Ctx<'_>, a: u64, b: u64, tmp: u64) -> Result<(u64, u64)> {
    let mut high = [0u64; 2];
    for (i, fd) in [a, b].into_iter().enumerate() {
        high[i] = cx.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            nr::FCNTL,
            [fd, libc::F_DUPFD_CLOEXEC as u64, tmp + 2, 0, 0, 0],
        )?;
    }
    for fd in [a, b] {
        cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    }
    for (from, to) in [(high[0], tmp), (high[1], tmp + 1)] {
        cx.call(
            "dup3",
            nr::DUP3,
            [from, to, libc::O_CLOEXEC as u64, 0, 0, 0],
        )?;
        cx.call("close", nr::CLOSE, [from, 0, 0, 0, 0, 0])?;
    }
    Ok((tmp, tmp + 1))
}

/// Which two-ended object a descriptor is one end of.
enum PairEnd<'a> {
    Pipe(&'a PipeState, bool),
    Socket(&'a SocketPairState, u8),
}

/// Put one end of a pipe or socket pair at descriptor `f`, creating the object first
/// (in this process, which then holds both ends until every process has its own).
fn place_pair_end(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    end: PairEnd<'_>,
    flags: u32,
    holders: &mut PipeHolders,
) -> Result<()> {
    let proc_ = cx.proc_;
    let key = match end {
        PairEnd::Pipe(p, _) => (0u8, p.id),
        PairEnd::Socket(sp, _) => (1u8, sp.id),
    };
    let (holder, a, b) = match holders.get(&key) {
        Some(h) => *h,
        None => {
            let k = holders.values().filter(|h| h.0 == proc_.pid).count() as u64;
            let tmp = pipe_tmp_base(proc_) + 2 * k;
            let (a, b) = match end {
                PairEnd::Pipe(pipe, _) => {
                    create_pipe(cx, pipe, tmp, flags & libc::O_DIRECT as u32 != 0)?
                }
                PairEnd::Socket(sp, _) => create_socketpair(cx, sp, tmp)?,
            };
            holders.insert(key, (proc_.pid, a, b));
            (proc_.pid, a, b)
        }
    };
    let src = match end {
        PairEnd::Pipe(_, write) => {
            if write {
                b
            } else {
                a
            }
        }
        PairEnd::Socket(_, e) => {
            if e == 0 {
                a
            } else {
                b
            }
        }
    };
    let cl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let what = format!("pipe or socket end for descriptor {}", f.fd);
    if holder == proc_.pid {
        cx.call(&what, nr::DUP3, [src, f.fd as u64, cl, 0, 0, 0])?;
    } else {
        let n = take_remote_fd(cx, holder, src, &what)?;
        move_fd(cx, n, f.fd, f.cloexec)?;
    }
    set_status_flags(cx, f.fd, flags)
}

/// A listening unix socket bound to its old name. A stale socket file left at the path
/// by the dumped process is replaced (plan made sure nobody listens there now).
fn create_listener(cx: &mut Ctx<'_>, name: &[u8], typ: i32, backlog: u32) -> Result<u64> {
    let n = cx.call(
        "socket(AF_UNIX)",
        nr::SOCKET,
        [
            libc::AF_UNIX as u64,
            (typ | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    bind_unix(cx, n, name)?;
    cx.call("listen", nr::LISTEN, [n, u64::from(backlog), 0, 0, 0, 0])?;
    Ok(n)
}

/// A sockaddr_un for `name` (a path, or an abstract name starting with NUL) and the
/// length to pass with it.
fn unix_addr(name: &[u8]) -> (Vec<u8>, u64) {
    let mut sa = Vec::with_capacity(2 + name.len() + 1);
    sa.extend_from_slice(&(libc::AF_UNIX as u16).to_le_bytes());
    sa.extend_from_slice(name);
    let len = sa.len() as u64;
    if name.first() != Some(&0) {
        sa.push(0);
    }
    (sa, len)
}

/// Bind unix socket `n` of the target to `name`. A stale socket file left at the path
/// by the dumped process is replaced (plan made sure no socket has that name now); the
/// new file belongs to the process's user, as the old one did.
fn bind_unix(cx: &mut Ctx<'_>, n: u64, name: &[u8]) -> Result<()> {
    if name.first() == Some(&b'/') {
        let path = procfs::bytes_path(name);
        if std::fs::symlink_metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(path);
        }
    }
    let (sa, len) = unix_addr(name);
    let a = cx.put(0, &sa)?;
    let what = format!("bind unix socket {}", show_name(name));
    cx.call(&what, nr::BIND, [n, a, len, 0, 0, 0])?;
    if name.first() == Some(&b'/') {
        let c = &cx.proc_.creds;
        let _ = std::os::unix::fs::chown(procfs::bytes_path(name), Some(c.uid[1]), Some(c.gid[1]));
    }
    Ok(())
}

/// A new unnamed unix datagram socket (close-on-exec) in the process of `cx`.
fn unix_dgram_socket(cx: &mut Ctx<'_>) -> Result<u64> {
    cx.call(
        "socket(AF_UNIX, SOCK_DGRAM)",
        nr::SOCKET,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )
}

/// A unix datagram socket with its options, bound to its name; it is connected and
/// gets its queued messages in [`unix_dgram_links`], once every socket exists.
fn create_unix_dgram(cx: &mut Ctx<'_>, u: &crate::model::UnixDgramState) -> Result<u64> {
    let n = unix_dgram_socket(cx)?;
    set_sock_opts(cx, n, &u.opts)?;
    if !u.name.is_empty() {
        bind_unix(cx, n, &u.name)?;
    }
    Ok(n)
}

/// Connect the image's unix datagram sockets to their peers (by name), then send each
/// one's queued messages again, in order, from the same sender: the image's socket
/// bound to the sender's name (in its own process), or, for an unnamed sender, a
/// temporary unnamed socket in the receiver's process.
fn unix_dgram_links(ctxs: &mut [Ctx<'_>]) -> Result<()> {
    let socks: Vec<(usize, i32, &crate::model::UnixDgramState)> = ctxs
        .iter()
        .enumerate()
        .flat_map(|(i, cx)| {
            cx.proc_
                .fds
                .iter()
                .filter(|f| f.shared_with.is_none())
                .filter_map(move |f| match &f.kind {
                    FdKind::UnixDgram { sock, .. } => Some((i, f.fd, &**sock)),
                    _ => None,
                })
        })
        .collect();
    for &(i, fd, u) in &socks {
        if u.peer_name.is_empty() {
            continue;
        }
        let (sa, len) = unix_addr(&u.peer_name);
        let cx = &mut ctxs[i];
        let a = cx.put(0, &sa)?;
        let what = format!("connect unix socket {fd} to {}", show_name(&u.peer_name));
        cx.call(&what, nr::CONNECT, [fd as u64, a, len, 0, 0, 0])?;
    }
    for &(i, fd, u) in &socks {
        let what = format!(
            "process {} descriptor {fd} (unix socket {})",
            ctxs[i].proc_.pid,
            show_name(&u.name)
        );
        let (to, _) = unix_addr(&u.name);
        for m in &u.msgs {
            if m.from.is_empty() {
                let cx = &mut ctxs[i];
                let t = unix_dgram_socket(cx)?;
                let r = send_message(cx, t, &m.data, &to, &what);
                cx.call("close", nr::CLOSE, [t, 0, 0, 0, 0, 0])?;
                r?;
            } else {
                let &(j, sfd, _) =
                    socks
                        .iter()
                        .find(|(_, _, s)| s.name == m.from)
                        .ok_or_else(|| {
                            RestoreError::Malformed(format!("{what}: unknown message sender"))
                        })?;
                // Addressed by name even when connected to the receiver (allowed), so
                // that a sender connected elsewhere reaches it too.
                send_message(&mut ctxs[j], sfd as u64, &m.data, &to, &what)?;
            }
        }
    }
    Ok(())
}

fn check_sockaddr(family: i32, addr: &[u8]) -> Result<()> {
    let want = if family == libc::AF_INET6 { 28 } else { 16 };
    if !(family == libc::AF_INET || family == libc::AF_INET6) || addr.len() != want {
        return Err(RestoreError::Malformed("invalid IP socket address".into()));
    }
    Ok(())
}

/// The port of a raw IPv4/IPv6 socket address (0 if there is none).
fn sockaddr_port(addr: &[u8]) -> u16 {
    addr.get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// A UDP socket: options (the reuse options before bind), its bound address and its
/// connected peer. Its queued datagrams are sent to it again by [`requeue_udp`] once
/// every process has its descriptors.
fn create_udp(cx: &mut Ctx<'_>, u: &crate::model::UdpState) -> Result<u64> {
    check_sockaddr(u.family, &u.local)?;
    if !u.peer.is_empty() {
        check_sockaddr(u.family, &u.peer)?;
    }
    let n = cx.call(
        "socket(UDP)",
        nr::SOCKET,
        [
            u.family as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    set_sock_opts(cx, n, &u.opts)?;
    if u.family == libc::AF_INET6 {
        setsockopt_u32(
            cx,
            n,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            u32::from(u.v6only),
            "IPV6_V6ONLY",
        )?;
    }
    // Never bound (and not connected): the kernel picks a port at the first send, as it
    // would have.
    if sockaddr_port(&u.local) != 0 {
        let a = cx.put(0, &u.local)?;
        cx.call(
            "bind UDP socket",
            nr::BIND,
            [n, a, u.local.len() as u64, 0, 0, 0],
        )?;
    }
    if !u.peer.is_empty() {
        let a = cx.put(0, &u.peer)?;
        cx.call(
            "connect UDP socket",
            nr::CONNECT,
            [n, a, u.peer.len() as u64, 0, 0, 0],
        )?;
    }
    Ok(n)
}

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MAPPED_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

/// The IPv4 socket address (sockaddr_in) of an IPv4-mapped IPv6 one (sockaddr_in6).
fn v4_mapped(a: &[u8]) -> Option<Vec<u8>> {
    if a.len() != 28 || a.get(8..20) != Some(&MAPPED_LOOPBACK[..12]) {
        return None;
    }
    let mut v = vec![0u8; 16];
    v[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v[2..4].copy_from_slice(&a[2..4]);
    v[4..8].copy_from_slice(&a[20..24]);
    Some(v)
}

/// Put the datagrams queued on the image's UDP sockets back, from their original
/// sources (see `sys::udp::inject_datagram`). A socket bound to the wildcard address
/// gets them on the loopback address.
fn requeue_udp(procs: &[Process]) -> Result<()> {
    for p in procs {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            let FdKind::Udp { sock: u, .. } = &f.kind else {
                continue;
            };
            let mut to = u.local.clone();
            if u.family == libc::AF_INET && to.get(4..8) == Some(&[0u8; 4][..]) {
                to[4..8].copy_from_slice(&[127, 0, 0, 1]);
            } else if u.family == libc::AF_INET6 && to.get(8..24) == Some(&[0u8; 16][..]) {
                to[23] = 1;
            }
            for m in &u.msgs {
                fault_point("requeue UDP datagram")?;
                // A dual-stack IPv6 socket receives IPv4 datagrams from IPv4-mapped
                // sources: those travel as IPv4 again (IPv6 drops such sources).
                let (family, from, to) = match (v4_mapped(&m.from), v4_mapped(&to)) {
                    (Some(f4), Some(t4)) => (libc::AF_INET, f4, t4),
                    (Some(f4), None) if to.get(8..24) == Some(&LOOPBACK6[..]) => {
                        let lo = v4_mapped(&[&to[..8], &MAPPED_LOOPBACK[..]].concat());
                        (libc::AF_INET, f4, lo.unwrap_or_default())
                    }
                    _ => (u.family, m.from.clone(), to.clone()),
                };
                sys::udp::inject_datagram(family, &from, &to, &m.data).map_err(|e| {
                    RestoreError::Stage(format!(
                        "process {} descriptor {}: a queued UDP datagram could not be put                          back: {e}",
                        p.pid, f.fd
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// A listening TCP socket on its old address.
fn create_tcp_listener(
    cx: &mut Ctx<'_>,
    family: i32,
    addr: &[u8],
    backlog: u32,
    reuseaddr: bool,
    v6only: bool,
) -> Result<u64> {
    check_sockaddr(family, addr)?;
    let n = cx.call(
        "socket(TCP)",
        nr::SOCKET,
        [
            family as u64,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    if reuseaddr {
        setsockopt_u32(
            cx,
            n,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
            "SO_REUSEADDR",
        )?;
    }
    if family == libc::AF_INET6 {
        setsockopt_u32(
            cx,
            n,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            u32::from(v6only),
            "IPV6_V6ONLY",
        )?;
    }
    let a = cx.put(0, addr)?;
    cx.call(
        "bind TCP listener",
        nr::BIND,
        [n, a, addr.len() as u64, 0, 0, 0],
    )?;
    cx.call("listen", nr::LISTEN, [n, u64::from(backlog), 0, 0, 0, 0])?;
    Ok(n)
}

/// An established TCP connection, rebuilt in repair mode: same addresses, sequence
/// numbers, options, window and queued data; then taken out of repair mode.
fn create_tcp_conn(cx: &mut Ctx<'_>, c: &crate::model::TcpState) -> Result<u64> {
    check_sockaddr(c.family, &c.local)?;
    check_sockaddr(c.family, &c.peer)?;
    let sol_tcp = libc::SOL_TCP;
    let n = cx.call(
        "socket(TCP)",
        nr::SOCKET,
        [
            c.family as u64,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    // Repair mode also lets the socket bind to its old address next to the restored
    // listener (the kernel forces the reuse); SO_REUSEADDR would undo that.
    setsockopt_u32(cx, n, sol_tcp, libc::TCP_REPAIR, 1, "TCP_REPAIR on")?;
    let a = cx.put(0, &c.local)?;
    cx.call(
        "bind TCP connection",
        nr::BIND,
        [n, a, c.local.len() as u64, 0, 0, 0],
    )?;
    for (q, seq) in [(1u32, c.rcv_seq), (2u32, c.snd_seq)] {
        setsockopt_u32(
            cx,
            n,
            sol_tcp,
            libc::TCP_REPAIR_QUEUE,
            q,
            "TCP_REPAIR_QUEUE",
        )?;
        setsockopt_u32(cx, n, sol_tcp, libc::TCP_QUEUE_SEQ, seq, "TCP_QUEUE_SEQ")?;
    }
    let a = cx.put(0, &c.peer)?;
    cx.call(
        "connect (repair)",
        nr::CONNECT,
        [n, a, c.peer.len() as u64, 0, 0, 0],
    )?;
    // struct tcp_repair_opt { u32 code; u32 val; }: MSS, window scales, SACK, timestamps.
    let mut opts: Vec<u8> = Vec::new();
    let mut push = |code: u32, val: u32| {
        opts.extend_from_slice(&code.to_le_bytes());
        opts.extend_from_slice(&val.to_le_bytes());
    };
    push(2, c.mss);
    push(3, c.snd_wscale | (c.rcv_wscale << 16));
    if c.sack {
        push(4, 0);
    }
    if c.timestamps {
        push(8, 0);
    }
    let a = cx.put(0, &opts)?;
    cx.call(
        "TCP_REPAIR_OPTIONS",
        nr::SETSOCKOPT,
        [
            n,
            sol_tcp as u64,
            libc::TCP_REPAIR_OPTIONS as u64,
            a,
            opts.len() as u64,
            0,
        ],
    )?;
    if c.timestamps {
        setsockopt_u32(
            cx,
            n,
            sol_tcp,
            libc::TCP_TIMESTAMP,
            c.tsval,
            "TCP_TIMESTAMP",
        )?;
    }
    // Queued data goes back into each queue as it was (repair mode sends nothing).
    for (q, data) in [(2u32, &c.sndq), (1u32, &c.rcvq)] {
        if data.is_empty() {
            continue;
        }
        setsockopt_u32(
            cx,
            n,
            sol_tcp,
            libc::TCP_REPAIR_QUEUE,
            q,
            "TCP_REPAIR_QUEUE",
        )?;
        queue_data(cx, nr::SENDTO, n, data, "TCP connection")?;
    }
    // The window last: the kernel checks it against the receive sequence, which the
    // queued data has just moved to where it was.
    let mut w = Vec::with_capacity(20);
    for v in c.window {
        w.extend_from_slice(&v.to_le_bytes());
    }
    let a = cx.put(0, &w)?;
    cx.call(
        "TCP_REPAIR_WINDOW",
        nr::SETSOCKOPT,
        [n, sol_tcp as u64, libc::TCP_REPAIR_WINDOW as u64, a, 20, 0],
    )?;
    setsockopt_u32(cx, n, sol_tcp, libc::TCP_REPAIR, 0, "TCP_REPAIR off")?;
    if c.nodelay {
        setsockopt_u32(cx, n, sol_tcp, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
    }
    Ok(n)
}

fn show_name(name: &[u8]) -> String {
    match name.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(name).into_owned(),
    }
}

/// Create an eventfd, timerfd, signalfd or epoll instance in its saved state (epoll
/// registrations come later); returns its descriptor.
fn create_anon_fd(cx: &mut Ctx<'_>, kind: &FdKind) -> Result<u64> {
    let keep =
        |flags: u32, allowed: i32| u64::from(flags & (allowed as u32 | libc::O_CLOEXEC as u32));
    match kind {
        FdKind::EventFd {
            count,
            flags,
            semaphore,
        } => {
            let mut fl = keep(*flags, libc::EFD_NONBLOCK);
            if *semaphore {
                fl |= libc::EFD_SEMAPHORE as u64;
            }
            let n = cx.call("eventfd2", nr::EVENTFD2, [0, fl, 0, 0, 0, 0])?;
            if *count != 0 {
                let a = cx.put(0, &count.to_le_bytes())?;
                cx.call("write eventfd count", nr::WRITE, [n, a, 8, 0, 0, 0])?;
            }
            Ok(n)
        }
        FdKind::TimerFd {
            clock,
            flags,
            value_ns,
            interval_ns,
            ticks,
        } => {
            let fl = keep(*flags, libc::TFD_NONBLOCK);
            let n = cx.call(
                "timerfd_create",
                nr::TIMERFD_CREATE,
                [*clock as u64, fl, 0, 0, 0, 0],
            )?;
            // A periodic timer that expired is re-armed by the kernel only when it is
            // read; until then fdinfo shows 0 left. Arm it for one more interval.
            let value_ns = if *value_ns == 0 {
                interval_ns
            } else {
                value_ns
            };
            if *value_ns != 0 {
                let mut b = Vec::with_capacity(32);
                for w in [
                    interval_ns / 1_000_000_000,
                    interval_ns % 1_000_000_000,
                    value_ns / 1_000_000_000,
                    value_ns % 1_000_000_000,
                ] {
                    b.extend_from_slice(&w.to_le_bytes());
                }
                let a = cx.put(0, &b)?;
                cx.call("timerfd_settime", nr::TIMERFD_SETTIME, [n, 0, a, 0, 0, 0])?;
            }
            if *ticks != 0 {
                const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
                let a = cx.put(64, &ticks.to_le_bytes())?;
                cx.call(
                    "timerfd ticks",
                    nr::IOCTL,
                    [n, TFD_IOC_SET_TICKS, a, 0, 0, 0],
                )?;
            }
            Ok(n)
        }
        FdKind::SignalFd { mask, flags } => {
            let a = cx.put(0, &mask.to_le_bytes())?;
            let fl = keep(*flags, libc::SFD_NONBLOCK);
            cx.call("signalfd4", nr::SIGNALFD4, [u64::MAX, a, 8, fl, 0, 0])
        }
        FdKind::Inotify { flags, watches } => {
            let n = cx.call(
                "inotify_init1",
                nr::INOTIFY_INIT1,
                [keep(*flags, libc::IN_NONBLOCK), 0, 0, 0, 0, 0],
            )?;
            add_inotify_watches(cx, n, watches)?;
            Ok(n)
        }
        FdKind::Epoll { flags, .. } => cx.call(
            "epoll_create1",
            nr::EPOLL_CREATE1,
            [keep(*flags, 0), 0, 0, 0, 0, 0],
        ),
        _ => Err(RestoreError::Stage(
            "not an anonymous-inode descriptor".into(),
        )),
    }
}

/// The pipe of FIFO `fifo`, made in this process: the FIFO opened read-write (which never
/// blocks, and makes any later open of it find a reader and a writer), checked unused,
/// with its capacity and the data that was in it, parked at temporary `tmp` until every
/// process has its descriptors.
fn create_fifo(cx: &mut Ctx<'_>, fifo: &FifoState, path: &[u8], tmp: u64) -> Result<u64> {
    let n = cx.open(path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)?;
    // Someone else's data in it means someone else has it open: we would share their pipe.
    let a = cx.put(0, &[0u8; 4])?;
    cx.call(
        "ioctl(FIONREAD)",
        nr::IOCTL,
        [n, libc::FIONREAD, a, 0, 0, 0],
    )?;
    let mut b = [0u8; 4];
    cx.read(a, &mut b)?;
    if u32::from_le_bytes(b) != 0 {
        return Err(RestoreError::Stage(format!(
            "FIFO {} already holds data: another process has it open",
            String::from_utf8_lossy(path)
        )));
    }
    fill_pipe(
        cx,
        n,
        fifo.capacity,
        &fifo.data,
        &format!("FIFO {}", fifo.id),
    )?;
    if n != tmp {
        cx.call("dup3", nr::DUP3, [n, tmp, libc::O_CLOEXEC as u64, 0, 0, 0])?;
        cx.call("close", nr::CLOSE, [n, 0, 0, 0, 0, 0])?;
    }
    Ok(tmp)
}

/// Take the file locks the process held again, without waiting: one that someone else
/// holds now fails the restore, naming it. After every descriptor exists and nothing
/// more is closed (closing any descriptor of a file drops the process's POSIX locks).
fn restore_locks(cx: &mut Ctx<'_>) -> Result<()> {
    use crate::model::LockKind;
    let proc_ = cx.proc_;
    for f in &proc_.fds {
        let path = match &f.kind {
            FdKind::File { file, .. } | FdKind::Dir { file, .. } => &file.path,
            _ => continue,
        };
        for l in &f.locks {
            // flock and OFD locks belong to the open file description: taken once, by
            // the descriptor that made it.
            if l.kind != LockKind::Posix && f.shared_with.is_some() {
                continue;
            }
            let what = format!(
                "take the {} {} lock of descriptor {} on {}",
                l.kind.name(),
                if l.write { "write" } else { "read" },
                f.fd,
                String::from_utf8_lossy(path)
            );
            let r = match l.kind {
                LockKind::Flock => {
                    let op = if l.write {
                        libc::LOCK_EX
                    } else {
                        libc::LOCK_SH
                    } | libc::LOCK_NB;
                    cx.call(&what, nr::FLOCK, [f.fd as u64, op as u64, 0, 0, 0, 0])
                }
                LockKind::Posix | LockKind::Ofd => {
                    // struct flock { short l_type, l_whence; off_t l_start, l_len; pid_t l_pid; }
                    let typ = if l.write {
                        libc::F_WRLCK
                    } else {
                        libc::F_RDLCK
                    } as u16;
                    let len = l.end.map_or(0, |e| e - l.start + 1);
                    let mut b = [0u8; 32];
                    b[0..2].copy_from_slice(&typ.to_le_bytes());
                    b[2..4].copy_from_slice(&(libc::SEEK_SET as u16).to_le_bytes());
                    b[8..16].copy_from_slice(&l.start.to_le_bytes());
                    b[16..24].copy_from_slice(&len.to_le_bytes());
                    let a = cx.put(0, &b)?;
                    let cmd = if l.kind == LockKind::Ofd {
                        libc::F_OFD_SETLK
                    } else {
                        libc::F_SETLK
                    };
                    cx.call(&what, nr::FCNTL, [f.fd as u64, cmd as u64, a, 0, 0, 0])
                }
            };
            match r {
                Ok(_) => {}
                Err(RestoreError::Sys(sys::SysError::Remote { errno, .. }))
                    if errno == libc::EAGAIN || errno == libc::EACCES =>
                {
                    return Err(RestoreError::Stage(format!(
                        "process {}: cannot {what}: another process holds a conflicting lock now",
                        proc_.pid
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Add the watches of an inotify instance in wd order, so that each gets its old number.
/// The kernel hands out numbers cyclically: a number that was free at dump (a watch
/// removed before) is skipped by adding the watch and removing it again, and the
/// IN_IGNORED events this queues are read back; anything else in the queue by then is
/// an error rather than an event silently lost.
fn add_inotify_watches(
    cx: &mut Ctx<'_>,
    n: u64,
    watches: &[crate::model::InotifyWatch],
) -> Result<()> {
    let mut skipped = Vec::new();
    for w in watches {
        let a = cx.put_cstr(0, &w.path)?;
        let what = format!(
            "inotify_add_watch({}) for wd {}",
            String::from_utf8_lossy(&w.path),
            w.wd
        );
        loop {
            let got = cx.call(
                &what,
                nr::INOTIFY_ADD_WATCH,
                [n, a, u64::from(w.mask | libc::IN_DONT_FOLLOW), 0, 0, 0],
            )? as i32;
            if got == w.wd {
                break;
            }
            if got > w.wd || skipped.len() >= super::plan::MAX_WATCHES {
                return Err(RestoreError::Stage(format!(
                    "inotify watch on {} got number {got}, not {} as at dump",
                    String::from_utf8_lossy(&w.path),
                    w.wd
                )));
            }
            cx.call(
                "inotify_rm_watch",
                nr::INOTIFY_RM_WATCH,
                [n, got as u64, 0, 0, 0, 0],
            )?;
            skipped.push(got);
        }
    }
    if skipped.is_empty() {
        return Ok(());
    }
    let a = cx.put(0, &[0u8; 4])?;
    cx.call(
        "ioctl(FIONREAD)",
        nr::IOCTL,
        [n, libc::FIONREAD, a, 0, 0, 0],
    )?;
    let mut b = [0u8; 4];
    cx.read(a, &mut b)?;
    let len = u64::from(u32::from_le_bytes(b));
    if len as usize > (STUB_SIZE - STUB_CODE - 4096) as usize {
        return Err(RestoreError::Stage("too many inotify events queued".into()));
    }
    let buf = cx.scratch() + 4096;
    let got = cx.call("read inotify events", nr::READ, [n, buf, len, 0, 0, 0])?;
    let mut ev = vec![0u8; got as usize];
    cx.read(buf, &mut ev)?;
    // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
    let mut off = 0;
    while off + 16 <= ev.len() {
        let word =
            |i: usize| u32::from_le_bytes(ev[off + i..off + i + 4].try_into().unwrap_or_default());
        let (wd, mask, nlen) = (word(0) as i32, word(4), word(12) as usize);
        if mask & libc::IN_IGNORED == 0 || !skipped.contains(&wd) {
            return Err(RestoreError::Stage(format!(
                "inotify: an event (wd {wd}, mask {mask:#x}) arrived while its watches were \
                 being restored; try again"
            )));
        }
        off += 16 + nlen;
    }
    Ok(())
}

/// Give the process its descriptors; the pipes, socket pairs, FIFOs and `--inherit-fd`
/// descriptors they refer to are the plan's.
fn restore_fds(
    cx: &mut Ctx<'_>,
    plan: &Plan,
    holders: &mut PipeHolders,
    files: &mut FileData,
    tty_slave: Option<i32>,
) -> Result<()> {
    let (inherit, pipes) = (&plan.inherit, &plan.ckpt.pipes);
    let (socketpairs, fifos) = (&plan.ckpt.socketpairs, &plan.ckpt.fifos);
    let proc_ = cx.proc_;
    let pid = cx.pid();
    // The stub holds ckpt's 0-2 (and nothing else): keep those the image inherits (one
    // batch; ckpt may have been started without some of them).
    let closes: Vec<Call> = (0..3)
        .filter(|&fd| {
            !proc_
                .fds
                .iter()
                .any(|f| f.fd == fd && matches!(f.kind, FdKind::Inherited { .. }))
        })
        .map(|fd| Call::new("close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]).may_fail())
        .collect();
    for (c, r) in closes.iter().zip(cx.batch(&BatchArgs::new(), &closes)?) {
        let r = r as i64;
        if r < 0 && r != -(libc::EBADF as i64) {
            return Err(sys::SysError::Remote {
                what: c.what.clone(),
                errno: (-r) as i32,
            }
            .into());
        }
    }
    // Room for the highest descriptor (and pipe temporaries) while we work; final
    // limits are set later.
    {
        let (cur, hard) = sys::process::prlimit_get(pid, libc::RLIMIT_NOFILE)?;
        let pairs = (pipes.len() + socketpairs.len() + fifos.len()) as u64;
        // (+4: park_pair goes two above the last temporaries)
        let need = (pipe_tmp_base(proc_) + 2 * pairs + 4).max(cur);
        sys::process::prlimit_set(pid, libc::RLIMIT_NOFILE, need, hard.max(need))?;
    }
    for f in &proc_.fds {
        let cl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        if let Some((q, qfd)) = f.shared_with {
            // The same open file description as an earlier descriptor: take that one.
            if q == proc_.pid {
                cx.call("dup3", nr::DUP3, [qfd as u64, f.fd as u64, cl, 0, 0, 0])?;
            } else {
                let what = format!("take descriptor {qfd} of process {q}");
                let n = take_remote_fd(cx, q, qfd as u64, &what)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
            }
            continue;
        }
        let (path, flags, pos) = match &f.kind {
            FdKind::Inherited { tty: Some(_), .. } if tty_slave.is_some() => {
                // --new-tty: the new terminal (one open description, as a terminal's
                // 0-2 usually share) instead of ours.
                let slave = tty_slave.unwrap_or_default();
                let me = std::process::id() as i32;
                let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                continue;
            }
            FdKind::Inherited { .. } => continue,
            FdKind::Pipe { id, write, flags } => {
                let pipe = pipes
                    .iter()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| RestoreError::Malformed(format!("unknown pipe {id}")))?;
                place_pair_end(cx, f, PairEnd::Pipe(pipe, *write), *flags, holders)?;
                continue;
            }
            FdKind::TcpListen {
                family,
                addr,
                backlog,
                reuseaddr,
                v6only,
                flags,
            } => {
                let n = create_tcp_listener(cx, *family, addr, *backlog, *reuseaddr, *v6only)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::TcpConn { conn, flags } => {
                let n = create_tcp_conn(cx, conn)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::External { key, flags } => {
                // ckpt's own descriptor given with --inherit-fd (checked by plan).
                let n = inherit
                    .iter()
                    .find(|(_, k)| k == key)
                    .map(|(n, _)| *n)
                    .ok_or_else(|| {
                        RestoreError::Stage(format!(
                            "descriptor {}: no --inherit-fd for {key}",
                            f.fd
                        ))
                    })?;
                let me = std::process::id() as i32;
                let what = format!("take --inherit-fd {n}:{key} for descriptor {}", f.fd);
                let got = take_remote_fd(cx, me, n as u64, &what)?;
                move_fd(cx, got, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::UnixDgram { sock, flags } => {
                let n = create_unix_dgram(cx, sock)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::Udp { sock, flags } => {
                let n = create_udp(cx, sock)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::Memfd { flags, .. } | FdKind::DeletedFile { flags, .. } => {
                let n = make_file_fd(cx, f, files)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::UnixPair { id, end, flags } => {
                let sp = socketpairs
                    .iter()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| RestoreError::Malformed(format!("unknown socket pair {id}")))?;
                place_pair_end(cx, f, PairEnd::Socket(sp, *end), *flags, holders)?;
                continue;
            }
            FdKind::UnixListen {
                name,
                typ,
                backlog,
                flags,
            } => {
                let n = create_listener(cx, name, *typ, *backlog)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                set_status_flags(cx, f.fd, *flags)?;
                continue;
            }
            FdKind::EventFd { .. }
            | FdKind::TimerFd { .. }
            | FdKind::SignalFd { .. }
            | FdKind::Inotify { .. }
            | FdKind::Epoll { .. } => {
                let n = create_anon_fd(cx, &f.kind)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                continue;
            }
            FdKind::File { file, flags, pos } | FdKind::Device { file, flags, pos } => {
                (&file.path, *flags, Some(*pos))
            }
            FdKind::Dir { file, flags } => (&file.path, *flags, None),
            FdKind::Fifo { file, id, flags } => {
                let fifo = fifos
                    .iter()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| RestoreError::Malformed(format!("unknown FIFO {id}")))?;
                let (holder, tmp) = match holders.get(&(2, *id)) {
                    Some(&(h, t, _)) => (h, t),
                    None => {
                        let k = holders.values().filter(|h| h.0 == proc_.pid).count() as u64;
                        let tmp = pipe_tmp_base(proc_) + 2 * k;
                        let t = create_fifo(cx, fifo, &file.path, tmp)?;
                        holders.insert((2, *id), (proc_.pid, t, t));
                        (proc_.pid, t)
                    }
                };
                // The same pipe, opened with the descriptor's own flags: the holder is a
                // reader and a writer, so this does not block.
                let mut oflags = (*flags as i32)
                    & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
                if f.cloexec {
                    oflags |= libc::O_CLOEXEC;
                }
                let n = cx.open(format!("/proc/{holder}/fd/{tmp}").as_bytes(), oflags)?;
                move_fd(cx, n, f.fd, f.cloexec)?;
                continue;
            }
        };
        let mut oflags =
            (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
        if f.cloexec {
            oflags |= libc::O_CLOEXEC;
        }
        let n = cx.open(path, oflags)?;
        let mut calls = Vec::new();
        if let Some(pos) = pos.filter(|p| *p != 0) {
            calls.push(Call::new(
                "lseek",
                nr::LSEEK,
                [n, pos, libc::SEEK_SET as u64, 0, 0, 0],
            ));
        }
        calls.extend(move_fd_calls(n, f.fd, f.cloexec));
        cx.batch(&BatchArgs::new(), &calls)?;
    }
    // epoll registrations, once every descriptor they watch exists.
    for f in &proc_.fds {
        if let FdKind::Epoll { targets, .. } = &f.kind {
            for t in targets {
                let mut ev = Vec::with_capacity(12);
                ev.extend_from_slice(&t.events.to_le_bytes());
                ev.extend_from_slice(&t.data.to_le_bytes());
                let a = cx.put(0, &ev)?;
                cx.call(
                    &format!("epoll_ctl(ADD {})", t.fd),
                    nr::EPOLL_CTL,
                    [f.fd as u64, 1, t.fd as u64, a, 0, 0],
                )?;
            }
        }
    }
    // Working directory.
    let d = cx.open(
        &proc_.cwd,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )?;
    cx.batch(
        &BatchArgs::new(),
        &[
            Call::new("fchdir", nr::FCHDIR, [d, 0, 0, 0, 0, 0]),
            Call::new("close", nr::CLOSE, [d, 0, 0, 0, 0, 0]),
        ],
    )?;
    // Root directory last: every path above is as ckpt sees it (from the host's root),
    // and chroot does not move the working directory.
    if proc_.root != b"/" {
        let a = cx.put_cstr(0, &proc_.root)?;
        cx.call("chroot", nr::CHROOT, [a, 0, 0, 0, 0, 0])?;
    }
    restore_locks(cx)
}

fn restore_attrs(cx: &mut Ctx<'_>) -> Result<()> {
    let proc_ = cx.proc_;
    // The 64-bit calls below do not depend on each other's results: one batch.
    let mut args = BatchArgs::new();
    let mut calls = vec![
        Call::new("umask", nr::UMASK, [u64::from(proc_.umask), 0, 0, 0, 0, 0]),
        Call::new(
            "personality",
            nr::PERSONALITY,
            [u64::from(proc_.personality), 0, 0, 0, 0, 0],
        ),
    ];
    let mut comm = proc_.comm.clone();
    comm.truncate(15);
    let a = args.add_cstr(cx, &comm)?;
    calls.push(Call::new(
        "prctl(PR_SET_NAME)",
        nr::PRCTL,
        [libc::PR_SET_NAME as u64, a, 0, 0, 0, 0],
    ));
    let m = proc_.misc;
    if m.dumpable == 0 || m.dumpable == 1 {
        calls.push(Call::new(
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            [libc::PR_SET_DUMPABLE as u64, m.dumpable as u64, 0, 0, 0, 0],
        ));
    }
    if m.child_subreaper {
        calls.push(Call::new(
            "prctl(PR_SET_CHILD_SUBREAPER)",
            nr::PRCTL,
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
        ));
    }
    if m.timerslack_ns != 0 {
        calls.push(Call::new(
            "prctl(PR_SET_TIMERSLACK)",
            nr::PRCTL,
            [libc::PR_SET_TIMERSLACK as u64, m.timerslack_ns, 0, 0, 0, 0],
        ));
    }
    let ia32 = proc_.abi() == Abi::Ia32;
    for s in &proc_.sigactions {
        // The stub starts with ckpt's own dispositions (mostly the defaults): only the
        // ones that differ need a call.
        let theirs = [s.handler, s.flags, s.restorer, s.mask];
        if s.handler <= 1 && sys::process::own_sigaction(s.signo) == Some(theirs) {
            continue;
        }
        let what = format!("rt_sigaction({})", s.signo);
        if ia32 {
            // Through the compat syscall: the kernel then marks the handler as ia32
            // (SA_IA32_ABI) and delivers 32-bit signal frames to it.
            // struct compat_sigaction: handler, flags, restorer (u32 each), mask (u64).
            let mut b = Vec::with_capacity(20);
            for w in [s.handler, s.flags, s.restorer] {
                b.extend_from_slice(&(w as u32).to_le_bytes());
            }
            b.extend_from_slice(&s.mask.to_le_bytes());
            let a = cx.put(0, &b)?;
            cx.call32(
                &what,
                ax::nr32::RT_SIGACTION,
                [u64::from(s.signo), a, 0, 8, 0, 0],
            )?;
        } else {
            let mut b = Vec::with_capacity(32);
            for w in [s.handler, s.flags, s.restorer, s.mask] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let a = args.add(cx, &b)?;
            calls.push(Call::new(
                what,
                nr::RT_SIGACTION,
                [u64::from(s.signo), a, 0, 8, 0, 0],
            ));
        }
    }
    thread_attr_calls(cx, &proc_.threads[0], &mut args, &mut calls)?;
    // Always: the stub was created with SIGKILL here (so it dies with ckpt until
    // commit; PTRACE_O_EXITKILL covers that from now on).
    calls.push(Call::new(
        "prctl(PR_SET_PDEATHSIG)",
        nr::PRCTL,
        [
            libc::PR_SET_PDEATHSIG as u64,
            m.pdeathsig as u64,
            0,
            0,
            0,
            0,
        ],
    ));
    cx.batch(&args, &calls)?;
    // Pending signals stay pending: all signals are blocked in the stub until commit.
    // (Queued after the dispositions, as they were generated under them.) A batch at a
    // time for as many siginfos as its argument area holds (a process may have
    // thousands of real-time signals queued).
    let pid = proc_.pid as u64;
    const RT_SIGQUEUEINFO: u64 = 129;
    let queued = proc_
        .threads
        .iter()
        .flat_map(|t| {
            t.pending
                .iter()
                .map(move |s| (Some(t.tid), s.signo, &s.siginfo))
        })
        .chain(
            proc_
                .shared_pending
                .iter()
                .map(|s| (None, s.signo, &s.siginfo)),
        )
        .collect::<Vec<_>>();
    for chunk in queued.chunks(1024) {
        let mut args = BatchArgs::new();
        let mut calls = Vec::with_capacity(chunk.len());
        for &(tid, signo, info) in chunk {
            let a = args.add(cx, info)?;
            calls.push(match tid {
                Some(tid) => Call::new(
                    "queue pending signal",
                    nr::RT_TGSIGQUEUEINFO,
                    [pid, tid as u64, u64::from(signo), a, 0, 0],
                ),
                None => Call::new(
                    "queue pending signal",
                    RT_SIGQUEUEINFO,
                    [pid, u64::from(signo), a, 0, 0, 0],
                ),
            });
        }
        cx.batch(&args, &calls)?;
    }
    thread_sched(&proc_.threads[0])?;
    for r in &proc_.rlimits {
        fault_point("set resource limits")?;
        sys::process::prlimit_set(proc_.pid, r.resource, r.cur, r.max)?;
    }
    Ok(())
}

/// State that belongs to one thread, set by syscalls injected into that thread.
fn thread_attrs(cx: &mut Ctx<'_>, t: &Thread) -> Result<()> {
    let mut args = BatchArgs::new();
    let mut calls = Vec::new();
    thread_attr_calls(cx, t, &mut args, &mut calls)?;
    cx.batch(&args, &calls)?;
    thread_sched(t)
}

/// The calls of [`thread_attrs`] that go into a batch (the ia32 ones are made at once).
fn thread_attr_calls(
    cx: &mut Ctx<'_>,
    t: &Thread,
    args: &mut BatchArgs,
    calls: &mut Vec<Call>,
) -> Result<()> {
    let ss = t.sigaltstack;
    let flags = ss.flags & !libc::SS_ONSTACK;
    let ia32 = t.arch.abi() == Abi::Ia32;
    if ia32 {
        // compat stack_t: sp (u32), flags (i32), size (u32).
        let mut b = Vec::with_capacity(12);
        b.extend_from_slice(&(ss.sp as u32).to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&(ss.size as u32).to_le_bytes());
        let a = cx.put(0, &b)?;
        cx.call32(
            "sigaltstack (ia32)",
            ax::nr32::SIGALTSTACK,
            [a, 0, 0, 0, 0, 0],
        )?;
    } else {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&ss.sp.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&ss.size.to_le_bytes());
        let a = args.add(cx, &b)?;
        calls.push(Call::new(
            "sigaltstack",
            nr::SIGALTSTACK,
            [a, 0, 0, 0, 0, 0],
        ));
    }
    calls.push(Call::new(
        "set_tid_address",
        nr::SET_TID_ADDRESS,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    ));
    if t.robust_list != 0 {
        if ia32 {
            // The kernel keeps the compat list apart and walks it as 32-bit at exit.
            cx.call32(
                "set_robust_list (ia32)",
                ax::nr32::SET_ROBUST_LIST,
                [t.robust_list, t.robust_list_len, 0, 0, 0, 0],
            )?;
        } else {
            calls.push(Call::new(
                "set_robust_list",
                nr::SET_ROBUST_LIST,
                [t.robust_list, t.robust_list_len, 0, 0, 0, 0],
            ));
        }
    }
    if let Some(r) = t.rseq {
        calls.push(Call::new(
            "rseq registration",
            nr::RSEQ,
            [r.addr, u64::from(r.len), 0, u64::from(r.signature), 0, 0],
        ));
    }
    Ok(())
}

/// A thread's scheduling policy, priority and nice value (set from outside).
fn thread_sched(t: &Thread) -> Result<()> {
    sys::process::sched_set(t.tid, t.sched_policy, t.sched_priority, t.nice).or_else(|e| {
        // Without CAP_SYS_NICE a lower nice value cannot be set back; anything else
        // is an error.
        if t.sched_policy == 0 && e.errno() == Some(libc::EPERM) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

/// Create the image's other threads (with their TIDs) in the stub, each traced, and set
/// their per-thread state.
fn create_threads(cx: &mut Ctx<'_>, tids: &mut Vec<i32>) -> Result<Vec<Injector>> {
    let proc_ = cx.proc_;
    let mut out = Vec::new();
    for t in proc_.threads.iter().skip(1) {
        // struct clone_args (88 bytes) followed by the one-element set_tid array.
        let tid_addr = cx.scratch() + 88;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let mut args = Vec::with_capacity(96);
        for w in [flags, 0, 0, 0, 0, 0, 0, 0, tid_addr, 1, 0] {
            args.extend_from_slice(&w.to_le_bytes());
        }
        args.extend_from_slice(&(t.tid as u64).to_le_bytes());
        let a = cx.put(0, &args)?;
        let what = format!("create thread {}", t.tid);
        let got = cx.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0])?;
        tids.push(got as i32);
        if got != t.tid as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: got thread ID {got} instead"
            )));
        }
        // PTRACE_O_TRACECLONE: the new thread is traced and stops before it runs.
        match ptrace::wait(t.tid)? {
            Stop::Signal(_) | Stop::Event(_) => {}
            other => {
                return Err(RestoreError::Stage(format!(
                    "{what}: it did not stop as expected ({other:?})"
                )));
            }
        }
        let base = ptrace::get_regs(t.tid)?;
        let mut tinj = helper_injector(t.tid, cx.stub, base, cx.inj.trapping());
        std::mem::swap(&mut cx.inj, &mut tinj);
        let r = thread_attrs(cx, t);
        std::mem::swap(&mut cx.inj, &mut tinj);
        r?;
        out.push(tinj);
    }
    Ok(out)
}

/// Interval timers and POSIX timers (with their IDs: PR_TIMER_CREATE_RESTORE_IDS), each
/// with the time it had left at dump.
fn restore_timers(cx: &mut Ctx<'_>) -> Result<()> {
    let proc_ = cx.proc_;
    for t in &proc_.itimers {
        // An interval timer that had just expired shows no time left until its signal
        // is delivered (then the kernel re-arms it): arm it for one more interval, or
        // setitimer would disarm it for good.
        let mut t = *t;
        if t.value_us == 0 {
            t.value_us = t.interval_us;
        }
        let mut b = Vec::with_capacity(32);
        for w in [
            t.interval_us / 1_000_000,
            t.interval_us % 1_000_000,
            t.value_us / 1_000_000,
            t.value_us % 1_000_000,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let a = cx.put(0, &b)?;
        cx.call(
            "setitimer",
            nr::SETITIMER,
            [u64::from(t.which), a, 0, 0, 0, 0],
        )?;
    }
    if proc_.posix_timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    cx.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        nr::PRCTL,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )?;
    for t in &proc_.posix_timers {
        // struct sigevent: value, signo, notify, then the union (tid first); 64 bytes.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_le_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        ev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
        let evp = cx.put(0, &ev)?;
        let idp = cx.put(64, &t.id.to_le_bytes())?;
        let what = format!("timer_create (ID {})", t.id);
        cx.call(&what, nr::TIMER_CREATE, [t.clock as u64, evp, idp, 0, 0, 0])?;
        let mut got = [0u8; 4];
        cx.read(idp, &mut got)?;
        if i32::from_le_bytes(got) != t.id {
            return Err(RestoreError::Stage(format!("{what}: got another ID")));
        }
        // As for itimers: an expired periodic timer awaiting its signal shows 0 left.
        let value_ns = if t.value_ns == 0 {
            t.interval_ns
        } else {
            t.value_ns
        };
        if value_ns != 0 {
            let mut b = Vec::with_capacity(32);
            for w in [
                t.interval_ns / 1_000_000_000,
                t.interval_ns % 1_000_000_000,
                value_ns / 1_000_000_000,
                value_ns % 1_000_000_000,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let a = cx.put(128, &b)?;
            cx.call(
                "timer_settime",
                nr::TIMER_SETTIME,
                [t.id as u64, 0, a, 0, 0, 0],
            )?;
        }
    }
    cx.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        nr::PRCTL,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Give the thread behind `cx.inj` exactly the image's credentials: user and group IDs,
/// groups, the five capability sets, securebits and no_new_privs (plan checked, in
/// `privs`, that ckpt holds everything this needs). Credentials belong to each thread,
/// so stage runs this in every thread of the process. Returns whether anything changed
/// (the kernel then resets the process's dumpable flag and the thread's parent-death
/// signal: see [`after_creds`]).
///
/// The order matters: the inheritable set first (a capability may be inheritable
/// without being in the bounding set only if it was so before the bounding set
/// shrinks), then the bounding set (dropping needs CAP_SETPCAP), groups and group IDs,
/// the user IDs with keep_caps on (so the permitted set survives leaving root; the
/// effective set is taken back from it), ambient capabilities (before the securebits,
/// which may forbid raising them), the securebits (PR_SET_SECUREBITS needs CAP_SETPCAP,
/// still effective; securebits like no_setuid_fixup and keep_caps only matter for the
/// setuid calls, which are done by then), and last the image's capability sets.
fn restore_creds(cx: &mut Ctx<'_>, me: &privs::Own) -> Result<bool> {
    let c = &cx.proc_.creds;
    let o = &me.creds;
    let same = c.uid == o.uid
        && c.gid == o.gid
        && c.groups == o.groups
        && c.cap_eff == o.cap_eff
        && c.cap_prm == o.cap_prm
        && c.cap_inh == o.cap_inh
        && c.cap_bnd == o.cap_bnd
        && c.cap_amb == o.cap_amb
        && c.securebits == o.securebits
        && c.no_new_privs == o.no_new_privs;
    if same {
        return Ok(false);
    }
    if c.no_new_privs && !o.no_new_privs {
        cx.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            nr::PRCTL,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    // Everything ckpt may use effective, the image's inheritable set.
    capset(cx, o.cap_prm, o.cap_prm, c.cap_inh)?;
    for cap in 0..64u64 {
        if o.cap_bnd & (1 << cap) != 0 && c.cap_bnd & (1 << cap) == 0 {
            cx.call(
                "drop capability from bounding set",
                nr::PRCTL,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
            )?;
        }
    }
    if c.groups != o.groups {
        let mut g = Vec::new();
        for x in &c.groups {
            g.extend_from_slice(&x.to_le_bytes());
        }
        let a = cx.put(0, &g)?;
        cx.call(
            "setgroups",
            nr::SETGROUPS,
            [c.groups.len() as u64, a, 0, 0, 0, 0],
        )?;
    }
    if c.gid != o.gid {
        cx.call("setresgid", nr::SETRESGID, resid_args(&c.gid))?;
        cx.call(
            "setfsgid",
            nr::SETFSGID,
            [u64::from(c.gid[3]), 0, 0, 0, 0, 0],
        )?;
    }
    let mut bits = o.securebits;
    if c.uid != o.uid {
        if bits & (privs::secbit::KEEP_CAPS | privs::secbit::NO_SETUID_FIXUP) == 0 {
            cx.call(
                "prctl(PR_SET_KEEPCAPS)",
                nr::PRCTL,
                [libc::PR_SET_KEEPCAPS as u64, 1, 0, 0, 0, 0],
            )?;
            bits |= privs::secbit::KEEP_CAPS;
        }
        cx.call("setresuid", nr::SETRESUID, resid_args(&c.uid))?;
        cx.call(
            "setfsuid",
            nr::SETFSUID,
            [u64::from(c.uid[3]), 0, 0, 0, 0, 0],
        )?;
        // Leaving user ID 0 cleared the effective set (the permitted one stayed).
        capset(cx, o.cap_prm, o.cap_prm, c.cap_inh)?;
    }
    if o.cap_amb != 0 {
        cx.call(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            nr::PRCTL,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                0,
                0,
                0,
                0,
            ],
        )?;
    }
    for cap in 0..64u64 {
        if c.cap_amb & (1 << cap) != 0 {
            cx.call(
                "raise ambient capability",
                nr::PRCTL,
                [
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    if c.securebits != bits {
        if c.securebits ^ bits == privs::secbit::KEEP_CAPS {
            // Only keep_caps differs (ckpt turned it on above): no privilege needed.
            let on = u64::from(c.securebits & privs::secbit::KEEP_CAPS != 0);
            cx.call(
                "prctl(PR_SET_KEEPCAPS)",
                nr::PRCTL,
                [libc::PR_SET_KEEPCAPS as u64, on, 0, 0, 0, 0],
            )?;
        } else {
            cx.call(
                "prctl(PR_SET_SECUREBITS)",
                nr::PRCTL,
                [
                    libc::PR_SET_SECUREBITS as u64,
                    u64::from(c.securebits),
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    capset(cx, c.cap_eff, c.cap_prm, c.cap_inh)?;
    Ok(true)
}

/// capset(2), version 3 (64-bit sets), for the thread behind `cx.inj`.
fn capset(cx: &mut Ctx<'_>, eff: u64, prm: u64, inh: u64) -> Result<()> {
    // header {version, pid}, then two data structs {effective, permitted, inheritable}.
    let mut b = Vec::new();
    b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    for shift in [0, 32] {
        for v in [eff, prm, inh] {
            b.extend_from_slice(&((v >> shift) as u32).to_le_bytes());
        }
    }
    let a = cx.put(0, &b)?;
    cx.call("capset", nr::CAPSET, [a, a + 8, 0, 0, 0, 0])?;
    Ok(())
}

/// Changing a thread's user or group IDs makes the kernel reset the process's dumpable
/// flag (to fs.suid_dumpable) and the thread's parent-death signal: set the image's
/// again (in the main thread; the others were created without one, as at dump only the
/// main thread's is recorded).
fn after_creds(cx: &mut Ctx<'_>) -> Result<()> {
    let m = cx.proc_.misc;
    if m.dumpable == 0 || m.dumpable == 1 {
        cx.call(
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            [libc::PR_SET_DUMPABLE as u64, m.dumpable as u64, 0, 0, 0, 0],
        )?;
    }
    cx.call(
        "prctl(PR_SET_PDEATHSIG)",
        nr::PRCTL,
        [
            libc::PR_SET_PDEATHSIG as u64,
            m.pdeathsig as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    Ok(())
}

/// The arguments of setresuid/setresgid: real, effective and saved ids (the fourth, the
/// filesystem id, has its own call).
fn resid_args(ids: &[u32; 4]) -> [u64; 6] {
    [
        u64::from(ids[0]),
        u64::from(ids[1]),
        u64::from(ids[2]),
        0,
        0,
        0,
    ]
}

/// One staged process: its injector (the leader's) and its other threads'.
struct StagedProc {
    inj: Injector,
    threads: Vec<Injector>,
}

/// What stage hands to commit.
pub struct Staged {
    pub stub: Stub,
    sysv: SysvCreated,
    stub_addr: u64,
    /// Per process of the image (zombies have none).
    procs: Vec<Option<StagedProc>>,
    pub bytes: u64,
}

/// Fork process `p` from its parent's stub with clone3(set_tid); the child is traced
/// (PTRACE_O_TRACEFORK) and stopped, a copy of the clean parent stub.
fn fork_process(parent: &mut Ctx<'_>, p: &Process) -> Result<Injector> {
    let tid_addr = parent.scratch() + 88;
    let mut args = Vec::with_capacity(96);
    for w in [0, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0, tid_addr, 1, 0] {
        args.extend_from_slice(&w.to_le_bytes());
    }
    args.extend_from_slice(&(p.pid as u64).to_le_bytes());
    let a = parent.put(0, &args)?;
    let what = format!("create process {}", p.pid);
    let got = once_released(p.pid, || {
        parent.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0])
    })?;
    if got != p.pid as u64 {
        return Err(RestoreError::Stage(format!(
            "{what}: got process ID {got} instead"
        )));
    }
    Ok(helper_injector(
        p.pid,
        parent.stub,
        ptrace::get_regs_after_stop(p.pid, &what)?,
        parent.inj.trapping(),
    ))
}

/// `--new-tty`: make the new terminal (descriptor `slave` of ckpt) the controlling
/// terminal of the root's new session (TIOCSCTTY, before credentials change) and give it
/// foreground group `fg` (TIOCSPGRP, from the root, whose group is the foreground one
/// after TIOCSCTTY; every signal is blocked in the stub anyway).
fn set_controlling_tty(cx: &mut Ctx<'_>, slave: i32, fg: i32) -> Result<()> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
    cx.call(
        "ioctl(TIOCSCTTY)",
        nr::IOCTL,
        [n, libc::TIOCSCTTY, 0, 0, 0, 0],
    )?;
    let a = cx.put(0, &fg.to_le_bytes())?;
    cx.call(
        "ioctl(TIOCSPGRP)",
        nr::IOCTL,
        [n, libc::TIOCSPGRP, a, 0, 0, 0],
    )?;
    cx.call("close", nr::CLOSE, [n, 0, 0, 0, 0, 0])?;
    Ok(())
}

/// Make a zombie's stub exit the way the original did, and hand it to its parent.
fn make_zombie(cx: &mut Ctx<'_>, parent: &mut Ctx<'_>, status: i32) -> Result<()> {
    let pid = cx.proc_.pid;
    let sig = status & 0x7f;
    let stop = if sig == 0 {
        cx.inj.final_call(
            nr::EXIT_GROUP,
            [((status >> 8) & 0xff) as u64, 0, 0, 0, 0, 0],
        )?
    } else {
        // Die of the same signal: default action, unblocked, no core file unless the
        // original dumped one.
        let act = cx.put(0, &[0u8; 32])?;
        cx.call(
            "rt_sigaction",
            nr::RT_SIGACTION,
            [sig as u64, act, 0, 8, 0, 0],
        )?;
        if status & 0x80 == 0 {
            sys::process::prlimit_set(pid, libc::RLIMIT_CORE, 0, 0)?;
        }
        ptrace::set_sigmask(pid, 0)?;
        cx.inj
            .final_call(nr::KILL, [pid as u64, sig as u64, 0, 0, 0, 0])?
    };
    match stop {
        Stop::Exited(_) | Stop::Killed(_) => {}
        other => {
            return Err(RestoreError::Stage(format!(
                "zombie {pid} did not exit as expected ({other:?})"
            )));
        }
    }
    // Its parent was sent SIGCHLD just now (it is blocked there): take it back, the
    // original parent had been told long ago.
    let mut b = Vec::new();
    b.extend_from_slice(&(1u64 << (libc::SIGCHLD - 1)).to_le_bytes());
    b.extend_from_slice(&[0u8; 16]); // timespec {0, 0}
    let a = parent.put(0, &b)?;
    parent
        .call(
            "consume SIGCHLD",
            nr::RT_SIGTIMEDWAIT,
            [a, 0, a + 8, 8, 0, 0],
        )
        .or_else(|e| match e {
            RestoreError::Sys(sys::SysError::Remote { errno, .. }) if errno == libc::EAGAIN => {
                Ok(0)
            }
            e => Err(e),
        })?;
    Ok(())
}

/// Create the stub tree and build every process in it (everything but commit).
pub fn stage(
    plan: &Plan,
    reader: &mut dyn RecordSource,
    root_stub: RootStub,
    tty: Option<(&super::plan::TtyPlan, i32)>,
) -> Result<Staged> {
    let procs = &plan.ckpt.processes;
    let root = &procs[0];
    let (pid, root_seized) = match root_stub {
        RootStub::Spawn => {
            fault_point("create process")?;
            (
                once_released(root.pid, || {
                    Ok(sys::process::spawn_traced_stub(Some(root.pid))?)
                })?,
                false,
            )
        }
        RootStub::Spawned(r) => (r.take(), false),
        RootStub::Seize { pid, go } => {
            ptrace::seize(pid, 0)?;
            std::io::Write::write_all(&mut std::fs::File::from(go), b"g")
                .map_err(|e| sys::SysError::io("wake the namespace's init", e))?;
            (pid, true)
        }
    };
    let mut stub = Stub {
        procs: vec![(pid, Vec::new())],
        committed: false,
        root_seized,
    };
    match ptrace::wait(pid)? {
        Stop::Signal(libc::SIGSTOP) => {}
        other => {
            return Err(RestoreError::Stage(format!(
                "the new process did not stop as expected ({other:?})"
            )));
        }
    }
    ptrace::set_options(
        pid,
        libc::PTRACE_O_EXITKILL
            | libc::PTRACE_O_TRACESYSGOOD
            | libc::PTRACE_O_TRACECLONE
            | libc::PTRACE_O_TRACEFORK,
    )?;
    // Every signal blocked while the stubs are built, but SIGTRAP: the breakpoint after
    // each injected call raises it (see `Injector::trap_after`), and were it blocked
    // when the program's handler is already installed, the kernel would reset that
    // handler (the first forced SIGTRAP also unblocks it; this says so plainly).
    ptrace::set_sigmask(pid, !sigbit(libc::SIGTRAP))?;
    let base = ptrace::get_regs(pid)?;

    // Bootstrap: the stub is a copy of us, so our own vDSO's syscall instruction is at
    // the same address in it.
    let (vstart, vlen) = own_vdso_range()?;
    let code = sys::process::read_own(vstart, vlen as usize)?;
    let gadget = find_gadget(&code, vstart)
        .ok_or_else(|| RestoreError::Stage("no syscall instruction in the vDSO".into()))?;
    let mut inj = Injector::new(pid, gadget, base);
    let mem = RemoteMem::open(pid)?;

    // The helper area is inherited by every process forked from the root stub: it must
    // be free in all of their memory maps.
    let mut all_vmas: Vec<Vma> = procs.iter().flat_map(|p| p.vmas.iter().cloned()).collect();
    all_vmas.sort_by_key(|v| v.start);
    let mut stub_addr = None;
    let any_ia32 = procs
        .iter()
        .flat_map(|p| p.threads.iter())
        .any(|t| t.arch.abi() == Abi::Ia32);
    let limit = if any_ia32 { 0xffff_e000 } else { TASK_SIZE };
    for cand in stub_candidates(&all_vmas, limit) {
        let r = inj.raw(
            nr::MMAP,
            [
                cand,
                STUB_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )?;
        if r as u64 == cand {
            stub_addr = Some(cand);
            break;
        }
    }
    let stub_addr = stub_addr.ok_or_else(|| {
        RestoreError::Stage("no free address range for the restore helper area".into())
    })?;
    // syscall; int3; int3; int $0x80; int3..., and the batch executor.
    let mut code = ax::SYSCALL_INSN.to_vec();
    code.extend_from_slice(&[0xcc; 2]);
    code.extend_from_slice(&ax::INT80_INSN);
    code.resize(BATCH_CODE_OFFSET as usize, 0xcc);
    code.extend_from_slice(&ax::BATCH_CODE);
    mem.write(stub_addr, &code)?;
    // Both gadgets of the helper area are followed by int3: one stop per injected call
    // and batches of calls, unless a process of the image ignores SIGTRAP (the
    // breakpoint would reset that).
    let trap = trap_mode(procs);
    let inj = helper_injector(pid, stub_addr, base, trap);
    let mut ctxs: Vec<Ctx<'_>> = vec![Ctx {
        inj,
        mem,
        stub: stub_addr,
        proc_: root,
    }];

    // Leave nothing of ckpt in the stub: rseq registration, memory, descriptors (but
    // 0-2, which processes of the image may inherit).
    {
        let cx = &mut ctxs[0];
        // One batch: the executor and its table are in the helper area, and it uses no
        // stack (the stub's is among what goes).
        let mut calls = Vec::new();
        let (rseq, rseq_len, rseq_sig, _) = ptrace::get_rseq(pid)?;
        if rseq != 0 {
            calls.push(Call::new(
                "rseq unregister",
                nr::RSEQ,
                [rseq, u64::from(rseq_len), 1, u64::from(rseq_sig), 0, 0],
            ));
        }
        let after = stub_addr + STUB_SIZE;
        calls.push(Call::new("munmap", nr::MUNMAP, [0, stub_addr, 0, 0, 0, 0]));
        calls.push(Call::new(
            "munmap",
            nr::MUNMAP,
            [after, TASK_SIZE - after, 0, 0, 0, 0],
        ));
        calls.push(Call::new(
            "close_range",
            nr::CLOSE_RANGE,
            [3, u64::from(u32::MAX), 0, 0, 0, 0],
        ));
        // With a new terminal the root leads a new session even if its session was led
        // from outside (the old shell's): the terminal belongs to that session.
        if root.sid == root.pid || tty.is_some() {
            calls.push(Call::new("setsid", nr::SETSID, [0; 6]));
        }
        cx.batch(&BatchArgs::new(), &calls)?;
    }

    // The tree, parents first: each process is forked from its parent's clean stub
    // (so it is that parent's child), and takes its session before its own children
    // are forked.
    for p in procs.iter().skip(1) {
        let parent = procs
            .iter()
            .position(|q| q.pid == p.ppid)
            .ok_or_else(|| RestoreError::Malformed(format!("no parent for process {}", p.pid)))?;
        let inj = fork_process(&mut ctxs[parent], p)?;
        stub.procs.push((p.pid, Vec::new()));
        let mem = RemoteMem::open(p.pid)?;
        let mut cx = Ctx {
            inj,
            mem,
            stub: stub_addr,
            proc_: p,
        };
        if p.sid == p.pid {
            cx.call("setsid", nr::SETSID, [0; 6])?;
        }
        ctxs.push(cx);
    }
    // Process groups: leaders first, then members (groups of the outside world are
    // ckpt's own, which every process not in a new session is in already).
    for leaders_pass in [true, false] {
        for cx in ctxs.iter_mut() {
            let p = cx.proc_;
            let is_leader = p.pgid == p.pid;
            if p.sid == p.pid || is_leader != leaders_pass {
                continue;
            }
            if !procs.iter().any(|q| q.pid == p.pgid) {
                continue; // the outside group (checked by plan)
            }
            let target = if is_leader { 0 } else { p.pgid as u64 };
            cx.call("setpgid", nr::SETPGID, [0, target, 0, 0, 0, 0])?;
        }
    }
    // --new-tty: the new terminal becomes the controlling terminal of the root's session,
    // with the image's foreground group (every group exists by now).
    if let Some((tp, slave)) = tty {
        if tp.controlling {
            set_controlling_tty(&mut ctxs[0], slave, tp.fg_pgid)?;
        }
    }
    // Zombies exit now, before their parents' pending signals are queued.
    for i in 0..ctxs.len() {
        if let Some(status) = ctxs[i].proc_.exit_status {
            let ppid = ctxs[i].proc_.ppid;
            let parent = procs
                .iter()
                .position(|q| q.pid == ppid)
                .ok_or_else(|| RestoreError::Malformed("zombie without a parent".into()))?;
            let (a, b) = if parent < i {
                let (l, r) = ctxs.split_at_mut(i);
                (&mut r[0], &mut l[parent])
            } else {
                return Err(RestoreError::Malformed(
                    "a zombie's parent must come before it".into(),
                ));
            };
            make_zombie(a, b, status)?;
        }
    }

    let shm_sizes = {
        let mut m = BTreeMap::new();
        for v in procs.iter().flat_map(|p| p.vmas.iter()) {
            if v.kind == VmaKind::AnonShared {
                let e = m.entry(v.shmem_id).or_insert(0u64);
                *e = (*e).max(v.offset + v.len());
            }
        }
        m
    };
    let mut shm = ShmOwners::new();
    let mut sysv = SysvCreated::default();
    let mut pipe_holders = PipeHolders::new();
    let mut pages = PageStream::new(reader);
    let mut files = pages.read_file_data(true)?;
    let mut bytes = 0;
    let mut staged = Vec::new();
    for (i, cx) in ctxs.iter_mut().enumerate() {
        let p = cx.proc_;
        if p.is_zombie() {
            staged.push(None);
            continue;
        }
        // mm fields and exe link before the image's memory exists: the kernel refuses
        // to replace the exe link while the old executable is mapped, and the image may
        // map the very file ckpt runs from.
        set_mm(cx)?;
        map_memory(cx, &mut sysv, &mut shm, &shm_sizes, &mut files)?;
        fault_point("fill memory")?;
        let sink = PageSink::new(cx)?;
        bytes += pages.load(p, Some(&sink))?;
        sink.finish()?;
        finish_memory(cx)?;
        restore_fds(cx, plan, &mut pipe_holders, &mut files, tty.map(|t| t.1))?;
        restore_attrs(cx)?;
        // AMX tile data is enabled per process on request; ask again if it was.
        const XFEATURE_XTILEDATA: u64 = 18;
        const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
        if plan.request_amx {
            cx.call(
                "arch_prctl(ARCH_REQ_XCOMP_PERM)",
                nr::ARCH_PRCTL,
                [ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0, 0, 0, 0],
            )?;
        }
        // Threads after the memory they run on, before credentials change.
        let threads = create_threads(cx, &mut stub.procs[i].1)?;
        // Timers may signal a particular thread: after the threads exist.
        restore_timers(cx)?;
        staged.push(Some(threads));
    }
    pages.finish()?;
    files.unlink_ghosts();
    unix_dgram_links(&mut ctxs)?;
    requeue_udp(procs)?;
    let mut removed = std::collections::BTreeSet::new();
    for cx in ctxs.iter_mut().filter(|c| !c.proc_.is_zombie()) {
        remove_destroyed_sysv(cx, &mut removed)?;
    }
    // Every process has its pipe ends now: the holders drop their temporaries.
    for (holder, r, w) in pipe_holders.into_values() {
        if let Some(cx) = ctxs.iter_mut().find(|c| c.proc_.pid == holder) {
            cx.call("close", nr::CLOSE, [r, 0, 0, 0, 0, 0])?;
            if w != r {
                cx.call("close", nr::CLOSE, [w, 0, 0, 0, 0, 0])?;
            }
        }
    }
    // Credentials last: creating processes, PIDs and mm fields needs ckpt's privileges.
    // Every thread of a process gets them (each has its own), the main thread last.
    let me = privs::Own::detect()?;
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter_mut()) {
        let Some(threads) = threads else {
            continue;
        };
        let mut changed = false;
        for t in threads.iter_mut() {
            std::mem::swap(&mut cx.inj, t);
            let r = restore_creds(cx, &me);
            std::mem::swap(&mut cx.inj, t);
            changed |= r?;
        }
        if restore_creds(cx, &me)? || changed {
            after_creds(cx)?;
        }
    }
    let procs_staged = ctxs
        .into_iter()
        .zip(staged)
        .map(|(cx, t)| {
            t.map(|threads| StagedProc {
                inj: cx.inj,
                threads,
            })
        })
        .collect();
    Ok(Staged {
        stub,
        sysv,
        stub_addr,
        procs: procs_staged,
        bytes,
    })
}

/// The bit of signal `sig` in a signal mask.
fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Whether injected calls may stop on the helper area's breakpoint: not if a process of
/// the image ignores SIGTRAP (see `Injector::trap_after`), has one pending (it is queued
/// during stage, when SIGTRAP is not blocked) or a timer that sends one.
fn trap_mode(procs: &[Process]) -> bool {
    let trap = libc::SIGTRAP as u32;
    !procs.iter().any(|p| {
        p.sigactions
            .iter()
            .any(|a| a.signo == trap && a.handler == libc::SIG_IGN as u64)
            || p.shared_pending.iter().any(|s| s.signo == trap)
            || p.threads
                .iter()
                .any(|t| t.pending.iter().any(|s| s.signo == trap))
            || p.posix_timers.iter().any(|t| t.signo == libc::SIGTRAP)
    })
}

fn own_vdso_range() -> Result<(u64, u64)> {
    let start = sys::process::own_vdso();
    let maps = procfs::maps(std::process::id() as i32)?;
    maps.iter()
        .find(|m| m.path == b"[vdso]" && m.start == start)
        .map(|m| (m.start, m.end - m.start))
        .ok_or_else(|| RestoreError::Stage("ckpt itself has no vDSO".into()))
}

fn set_thread_state(tid: i32, t: &Thread, xsave: &[u8]) -> Result<()> {
    for d in &t.arch.tls {
        ptrace::set_thread_area(tid, d)?;
    }
    ptrace::set_xstate(tid, xsave)?;
    // Debug registers: a new thread has none, and each address written makes the kernel
    // register a (disabled) hardware breakpoint, about a millisecond each: write only
    // the slots in use. DR7 (enable bits) last, after the addresses it enables.
    for (i, v) in ax::DEBUGREG_INDEXES.iter().zip(t.arch.debugregs) {
        if *i != 7 && v != 0 {
            ptrace::poke_user(tid, ax::DEBUGREG_OFFSET + i * 8, v)?;
        }
    }
    if t.arch.debugregs[5] != 0 {
        ptrace::poke_user(tid, ax::DEBUGREG_OFFSET + 7 * 8, t.arch.debugregs[5])?;
    }
    ptrace::set_regs(tid, &ax::resume_regs(&t.arch.regs))?;
    Ok(())
}

/// The point of no return: remove the helper area, set the saved registers, let go.
pub fn commit(mut s: Staged, plan: &Plan) -> Result<i32> {
    let procs = &plan.ckpt.processes;
    fault_point("remove helper area")?;
    for sp in s.procs.iter_mut().flatten() {
        // The breakpoints and the executor go with the area.
        sp.inj.stop_trapping();
        sp.inj.clear_executor();
        sp.inj.call(
            "munmap helper area",
            nr::MUNMAP,
            [s.stub_addr, STUB_SIZE, 0, 0, 0, 0],
        )?;
    }
    fault_point("set registers")?;
    // Signal masks only now: until the helper area is gone every signal stays blocked,
    // so that a timer firing cannot interrupt an injected call.
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        for t in &p.threads {
            ptrace::set_sigmask(t.tid, t.sigmask)?;
            // Converted to this host's xsave layout in plan.
            let xsave = plan.xsave.get(&t.tid).unwrap_or(&t.arch.xsave);
            set_thread_state(t.tid, t, xsave)?;
        }
    }
    fault_point("detach")?;
    // Nothing below can fail in a way we could still undo; let every thread go.
    s.stub.committed = true;
    s.sysv.keep = true;
    let mut first_err = None;
    for sp in s.procs.iter().flatten() {
        for t in sp.threads.iter().map(|i| i.pid()).chain([sp.inj.pid()]) {
            if let Err(e) = ptrace::detach(t, 0) {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        // A thread we could not detach is still stopped: kill the tree rather than
        // leave it half-running.
        s.stub.committed = false;
        drop(s.stub);
        return Err(e.into());
    }
    Ok(procs[0].pid)
}
