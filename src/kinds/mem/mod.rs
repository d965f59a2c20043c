//! Memory: the areas of a process (what each mapping is, how it is checked and mapped
//! again) and the pages in them.

pub(crate) mod aio;
pub(crate) mod cow;
pub mod early;
pub(crate) mod pages;
pub(crate) mod shmem;
#[cfg(test)]
mod tests;
pub(crate) mod track;

use self::pages::{Run, vma_pages};
use self::shmem::{SharedSeen, shmem_pages};
use crate::arch::Abi;
use crate::arch::native::{self as ax, nr};
use crate::error::DumpError;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::fd::file::check_file;
use crate::kinds::fd::file::check_path;
use crate::kinds::fd::file::{FileData, Kept, kept_file_fd};
use crate::kinds::mem::shmem::{ShmOwners, SysvCreated, attach_sysv, map_shmem};
use crate::kinds::unsupported;
use crate::model::FileId;
use crate::model::Process;
use crate::model::{Vma, VmaKind};
use crate::remote::{BatchArgs, Ctx};
use crate::sys;
use crate::sys::inject::Call;
use crate::sys::mem::RemoteMem;
use crate::sys::proc as procfs;
use crate::sys::proc::MapEntry;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use xxhash_rust::xxh3::xxh3_64;

// ---- collect (dump) ----

/// The mapped files whose path was found to lead to them (path -> device and inode), so
/// that the areas of one file (a library has four or five) cost one `stat` of the path.
type CheckedPaths = BTreeMap<Vec<u8>, (u64, u64)>;

fn classify_vma(pid: i32, m: &MapEntry, checked: &mut CheckedPaths) -> DumpResult<Option<VmaKind>> {
    let path = m.path.as_slice();
    let kind = match path {
        b"[vsyscall]" => return Ok(None),
        b"[vdso]" => VmaKind::Vdso,
        b"[vvar]" | b"[vvar_vclock]" => VmaKind::Vvar,
        _ if m.inode == 0 && (path.is_empty() || path.starts_with(b"[")) => {
            if path.is_empty()
                || path == b"[heap]"
                || path == b"[stack]"
                || path.starts_with(b"[anon:")
            {
                if m.shared {
                    VmaKind::AnonShared
                } else {
                    VmaKind::Anon
                }
            } else {
                return Err(unsupported(
                    pid,
                    format!(
                        "memory area {:#x}-{:#x} {} is a special kernel mapping that is not supported",
                        m.start,
                        m.end,
                        String::from_utf8_lossy(path)
                    ),
                ));
            }
        }
        b"/dev/zero (deleted)" if m.shared => VmaKind::AnonShared,
        _ if path.starts_with(b"/SYSV") && m.shared => {
            let shmid = m.inode as i32;
            // (Listed by its IPC namespace: one a process below the tree's root made is
            // read from a thread of ckpt that joins it.)
            let mine = crate::sys::ns::inode(pid, "ipc")?;
            let segs = if mine == crate::sys::ns::thread_inode("ipc")? {
                procfs::sysv_shm()?
            } else {
                crate::sys::ns::inside(pid, &["ipc"], procfs::sysv_shm)?
            };
            let seg = segs.into_iter().find(|s| s.1 == shmid).ok_or_else(|| {
                unsupported(pid, format!("System V segment {shmid} is not listed"))
            })?;
            let (key, _, mode, size) = seg;
            if m.offset != 0 || m.end - m.start != (size + 4095) & !4095 {
                return Err(unsupported(
                    pid,
                    format!("System V segment {shmid} is attached only in part"),
                ));
            }
            VmaKind::SysvShm {
                key,
                shmid,
                size,
                mode,
            }
        }
        _ if path.starts_with(b"anon_inode:[io_uring]") => {
            return Err(unsupported(
                pid,
                format!(
                    "memory area {:#x}-{:#x} is a ring of an io_uring instance {}; io_uring \
                     is not supported",
                    m.start,
                    m.end,
                    crate::kinds::fd::uring::describe_mapped(pid, m.inode)
                ),
            ));
        }
        _ if path.starts_with(b"/") => {
            let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            let lp = std::path::Path::new(&link);
            let area = || {
                format!(
                    "memory area {:#x}-{:#x} ({})",
                    m.start,
                    m.end,
                    String::from_utf8_lossy(path)
                )
            };
            if let Some(name) = path.strip_prefix(b"/memfd:") {
                // A memfd: its contents go into the image (written with those of its
                // descriptors, under its inode number).
                let name = name.strip_suffix(b" (deleted)").unwrap_or(name).to_vec();
                let id = procfs::file_id(lp, path)?;
                let f = std::fs::File::open(lp)
                    .map_err(|e| crate::sys::SysError::io(format!("open {link}"), e))?;
                let seals = sys::process::seals_of(&f, &link)?;
                if m.shared && m.write && seals & libc::F_SEAL_FUTURE_WRITE as u32 != 0 {
                    return Err(unsupported(
                        pid,
                        format!(
                            "{} is a writable shared mapping of a memfd sealed with \
                             F_SEAL_FUTURE_WRITE; not supported yet",
                            area()
                        ),
                    ));
                }
                VmaKind::MemfdMap {
                    name,
                    seals,
                    data: id.ino,
                }
            } else {
                // One stat of the area's file: its identity and whether it was deleted.
                let (id, nlink) = procfs::file_stat(lp, path)?;
                let id = FileId::from(id);
                if nlink > 0 {
                    if checked.get(path) != Some(&(id.dev, id.ino)) {
                        check_path(pid, &id, "mapped file")?;
                        checked.insert(path.to_vec(), (id.dev, id.ino));
                    }
                    return Ok(Some(VmaKind::File { file: id }));
                }
                // Deleted while mapped: its contents go into the image.
                if id.mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(unsupported(
                        pid,
                        format!("{} maps a deleted file that is not a regular file", area()),
                    ));
                }
                let p = path.strip_suffix(b" (deleted)").unwrap_or(path).to_vec();
                VmaKind::DeletedMap {
                    data: id.ino,
                    file: FileId { path: p, ..id },
                }
            }
        }
        _ => {
            return Err(unsupported(
                pid,
                format!(
                    "memory area {:#x}-{:#x} ({}) is of an unsupported kind",
                    m.start,
                    m.end,
                    String::from_utf8_lossy(path)
                ),
            ));
        }
    };
    Ok(Some(kind))
}

/// Resident pages from which a process's smaps is read on a thread of its own (see
/// `memory_and_fds` in dump/collect.rs). Measured (collect, medians of 11): 32 MiB
/// 4.1 ms on one thread against 4.5 ms with two, 128 MiB 8.2 against 7.0 ms. (The test
/// `counter_with_64_mib_of_memory`, about 70 MiB resident, takes the thread.)
pub(crate) const SMAPS_THREAD_PAGES: u64 = (64 << 20) / 4096;

/// A process's areas as /proc/PID/maps lists them, without their VmFlags (those come
/// from smaps), with the runs of pages to store.
pub(crate) struct MemoryMap {
    pub(crate) vmas: Vec<Vma>,
    /// The index in the maps list of each of `vmas`.
    pub(crate) entries: Vec<usize>,
    pub(crate) runs: Vec<Run>,
    pub(crate) vdso_hash: u64,
    pub(crate) vdso_size: u64,
    pub(crate) vvar_size: u64,
    /// The AIO contexts' rings (not areas of the image: see [`aio`]).
    pub(crate) aio: Vec<crate::model::AioRing>,
    /// The first error met, which stopped the listing: returned only after the flags of
    /// `vmas` (which include the area it was met on, if that was classified) are checked.
    pub(crate) failed: Option<DumpError>,
}

/// Classify the areas of `maps` and find the pages of each that go into the image.
pub(crate) fn memory_map(
    pid: i32,
    mem: &RemoteMem,
    pm: &procfs::Pagemap,
    maps: &[MapEntry],
    seen: &mut SharedSeen,
) -> MemoryMap {
    let mut map = MemoryMap {
        vmas: Vec::new(),
        entries: Vec::new(),
        runs: Vec::new(),
        vdso_hash: 0,
        vdso_size: 0,
        vvar_size: 0,
        aio: Vec::new(),
        failed: None,
    };
    let mut checked = CheckedPaths::new();
    for (i, m) in maps.iter().enumerate() {
        if m.inode != 0 && m.shared && m.path.starts_with(b"/[aio]") {
            match aio::collect(pid, m, mem) {
                Ok(r) => map.aio.push(r),
                Err(e) => {
                    map.failed = Some(e);
                    break;
                }
            }
            continue;
        }
        let kind = match classify_vma(pid, m, &mut checked) {
            Ok(Some(kind)) => kind,
            Ok(None) => continue,
            Err(e) => {
                map.failed = Some(e);
                break;
            }
        };
        let mut prot = 0;
        if m.read {
            prot |= libc::PROT_READ as u32;
        }
        if m.write {
            prot |= libc::PROT_WRITE as u32;
        }
        if m.exec {
            prot |= libc::PROT_EXEC as u32;
        }
        let mut vma = Vma {
            start: m.start,
            end: m.end,
            prot,
            shared: m.shared,
            offset: m.offset,
            kind,
            name: m.path.clone(),
            vmflags: Vec::new(),
            pages_present: 0,
            guard_ranges: Vec::new(),
            shmem_id: 0,
        };
        let found = match vma.kind {
            VmaKind::Vdso => {
                let mut code = vec![0u8; (m.end - m.start) as usize];
                mem.read(m.start, &mut code).map(|()| {
                    map.vdso_hash = xxh3_64(&code);
                    map.vdso_size = m.end - m.start;
                })
            }
            VmaKind::Vvar => {
                map.vvar_size += m.end - m.start;
                Ok(())
            }
            _ => Ok(()),
        }
        .map_err(DumpError::from)
        .and_then(|()| {
            if matches!(vma.kind, VmaKind::AnonShared | VmaKind::SysvShm { .. }) {
                shmem_pages(pid, &mut vma, &mut map.runs, seen)
            } else {
                vma_pages(pm, &mut vma, &mut map.runs)
            }
        });
        map.vmas.push(vma);
        map.entries.push(i);
        if let Err(e) = found {
            map.failed = Some(e);
            break;
        }
    }
    map
}

/// Kinds of memory whose restore would silently differ: refused by name.
pub(crate) fn refuse_special(pid: i32, vma: &Vma) -> DumpResult<()> {
    if matches!(vma.kind, VmaKind::Vdso | VmaKind::Vvar) {
        return Ok(());
    }
    for (flag, what) in [
        ("io", "device memory (VM_IO)"),
        ("pf", "raw page frames (VM_PFNMAP)"),
        ("ht", "hugetlbfs pages"),
        ("sl", "a sealed mapping (mseal)"),
    ] {
        if vma.has_flag(flag) {
            return Err(unsupported(
                pid,
                format!(
                    "memory area {:#x}-{:#x} is {what}; not supported yet",
                    vma.start, vma.end
                ),
            ));
        }
    }
    Ok(())
}

// ---- checks (plan) ----

/// Highest user address + 1 with 4-level paging on x86-64.
pub(crate) const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const MAX_VMAS: usize = 65_530;

/// Structural checks of a process's memory areas: not too many, sorted, page-aligned,
/// not overlapping, in range, with page counts and guard ranges inside them.
pub(crate) fn check_areas(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.vmas.len() > MAX_VMAS {
        check::p(problems, "malformed", "too many memory areas".into());
    }
    let mut prev_end = 0;
    for v in &proc_.vmas {
        let ok = v.start % 4096 == 0
            && v.end % 4096 == 0
            && v.start < v.end
            && v.end <= TASK_SIZE
            && v.start >= prev_end
            && v.offset % 4096 == 0
            // mmap refuses an end offset beyond the largest file (EOVERFLOW).
            && v.offset.checked_add(v.end - v.start.min(v.end)).is_some_and(|e| e <= i64::MAX as u64)
            && v.prot & !7 == 0
            && v.pages_present <= (v.end - v.start) / 4096
            && v.guard_ranges.iter().all(|g| {
                g.0 % 4096 == 0 && g.1 % 4096 == 0 && g.0 < g.1 && g.0 >= v.start && g.1 <= v.end
            });
        if !ok {
            check::p(
                problems,
                "malformed",
                format!(
                    "memory area {:#x}-{:#x} is invalid (unaligned, overlapping or out of range)",
                    v.start, v.end
                ),
            );
        }
        if is_droppable(v) && (v.kind != VmaKind::Anon || v.shared || v.has_flag("gd")) {
            // The kernel makes only private anonymous memory droppable.
            check::p(
                problems,
                "malformed",
                format!(
                    "memory area {:#x}-{:#x} is droppable but not private anonymous memory",
                    v.start, v.end
                ),
            );
        }
        if let VmaKind::MemfdMap { name, seals, .. } = &v.kind {
            crate::kinds::fd::file::check_memfd(
                name,
                *seals,
                &format!("memory area {:#x}-{:#x}", v.start, v.end),
                problems,
            );
        }
        prev_end = v.end;
    }
}

/// The files the process maps are there and unchanged (each checked once); a deleted
/// mapped file's directory exists.
pub(crate) fn check_mapped_files(
    held: &mut crate::kinds::fd::file::HeldFiles,
    proc_: &Process,
    problems: &mut Vec<Problem>,
) {
    let mut seen = BTreeSet::new();
    for v in &proc_.vmas {
        match &v.kind {
            VmaKind::File { file } if seen.insert(file.path.clone()) => {
                check_file(held, file, "mapped file", problems);
            }
            VmaKind::DeletedMap { file, .. } => {
                let dir = procfs::bytes_path(&file.path).parent().map(|d| d.is_dir());
                if dir != Some(true) && seen.insert(file.path.clone()) {
                    check::p(
                        problems,
                        "file-missing",
                        format!(
                            "memory area {:#x}-{:#x}: the directory of deleted file {} does \
                             not exist",
                            v.start,
                            v.end,
                            check::show(&file.path)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// What `inspect` calls a memory area's kind.
pub(crate) fn describe_kind(v: &Vma) -> &'static str {
    match &v.kind {
        VmaKind::Anon => "anon",
        VmaKind::AnonShared => "shmem",
        VmaKind::SysvShm { .. } => "sysv",
        VmaKind::File { .. } => "file",
        VmaKind::MemfdMap { .. } => "memfd",
        VmaKind::DeletedMap { .. } => "deleted",
        VmaKind::Vdso => "vdso",
        VmaKind::Vvar => "vvar",
    }
}

// ---- restore (stage) ----

fn mmap_flags(v: &Vma) -> u64 {
    let mut f = if v.shared {
        libc::MAP_SHARED
    } else if is_droppable(v) {
        // Its own map type (Linux 6.11; plan checks the kernel has it): the kernel may
        // drop its pages at any time, and it is also `wf`, `dd` and `nr`, as before.
        MAP_DROPPABLE
    } else {
        libc::MAP_PRIVATE
    } | libc::MAP_FIXED_NOREPLACE;
    if matches!(v.kind, VmaKind::Anon | VmaKind::AnonShared) {
        f |= libc::MAP_ANONYMOUS;
    }
    if v.has_flag("gd") {
        f |= libc::MAP_GROWSDOWN;
    }
    f as u64 | noreserve(v)
}

/// `MAP_NORESERVE` for an area that had it (`nr`: no swap space accounted for it, as
/// glibc's per-thread malloc arenas ask), else nothing: without it the area would come
/// back accounted (`ac`) and could merge with a neighbour that is.
pub(crate) fn noreserve(v: &Vma) -> u64 {
    if v.has_flag("nr") {
        libc::MAP_NORESERVE as u64
    } else {
        0
    }
}

/// The mmap map type of droppable memory (uapi `linux/mman.h`; libc lacks it).
const MAP_DROPPABLE: libc::c_int = linux_raw_sys::general::MAP_DROPPABLE as libc::c_int;

/// Whether `v` was mapped with `MAP_DROPPABLE` (`dp`: private anonymous memory whose
/// pages the kernel may drop under memory pressure).
pub(crate) fn is_droppable(v: &Vma) -> bool {
    v.has_flag("dp")
}

/// Whether page data may land in this VMA.
pub(crate) fn takes_pages(v: &Vma) -> bool {
    match v.kind {
        VmaKind::Anon | VmaKind::AnonShared | VmaKind::SysvShm { .. } => true,
        VmaKind::File { .. } | VmaKind::MemfdMap { .. } | VmaKind::DeletedMap { .. } => !v.shared,
        _ => false,
    }
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
) -> RestoreResult<()> {
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
    cx.close(fd)?;
    r
}

/// Which open file a file mapping is made from: its path, and whether a shared writable
/// mapping needs it read-write.
fn file_key(v: &Vma, file: &crate::model::FileId) -> (Vec<u8>, bool) {
    let rw = v.shared && v.prot & libc::PROT_WRITE as u32 != 0;
    (file.path.clone(), rw)
}

/// The mapped files, each opened once (read-write where a shared writable mapping
/// needs it) from the file plan held for its path (`kept.held`), in batches.
fn open_mapped_files(
    cx: &mut Ctx<'_>,
    kept: &FileData,
) -> RestoreResult<BTreeMap<(Vec<u8>, bool), u64>> {
    let proc_ = cx.proc_;
    let keys: std::collections::BTreeSet<(Vec<u8>, bool)> = proc_
        .vmas
        .iter()
        .filter_map(|v| match &v.kind {
            VmaKind::File { file } => Some(file_key(v, file)),
            _ => None,
        })
        .collect();
    let wanted: Vec<(&[u8], i32)> = keys
        .iter()
        .map(|(path, rw)| {
            let flags = if *rw { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC;
            (path.as_slice(), flags)
        })
        .collect();
    let fds = crate::kinds::fd::held::open_held(cx, &kept.held, &wanted)?;
    Ok(keys.iter().cloned().zip(fds).collect())
}

/// Map the image's memory areas in the process of `cx`: the vDSO, System V segments,
/// shared anonymous memory, files kept in the image, and (in one batch) anonymous and
/// file mappings.
pub(crate) fn map_memory(
    cx: &mut Ctx<'_>,
    sysv: &mut SysvCreated,
    shm: &mut ShmOwners,
    shm_sizes: &BTreeMap<u64, u64>,
    kept: &mut FileData,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let files = open_mapped_files(cx, kept)?;
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
            // An area whose pages it inherits: it has it from its parent already.
            VmaKind::Anon if cow::is_kept(proc_, v) => {}
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
    // Adjacent areas the kernel would merge now, but kept apart in the original.
    for (i, v) in proc_.vmas.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| proc_.vmas.get(j));
        let next = proc_.vmas.get(i + 1);
        if !cow::is_kept(proc_, v)
            && (prev.is_some_and(|p| kept_apart(p, v)) || next.is_some_and(|n| kept_apart(v, n)))
        {
            map_apart(cx, v)?;
        }
    }
    let closes: Vec<Call> = files
        .into_values()
        .map(|fd| Call::new("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0]))
        .collect();
    cx.batch(&BatchArgs::new(), &closes)?;
    // The vDSO must be where the image had it: the program holds pointers into it.
    if vdso_done {
        check_vdso(cx)?;
    }
    Ok(())
}

/// Whether `a` and `b` (`a` right before it) are private anonymous areas of equal
/// attributes, which the kernel merges into one unless each has an anon_vma of its own
/// (the pages of one were faulted before the other was mapped next to it, or it was
/// moved there with mremap): listed apart in the image, they were kept apart.
fn kept_apart(a: &Vma, b: &Vma) -> bool {
    let plain =
        |v: &Vma| v.kind == VmaKind::Anon && !v.shared && !is_droppable(v) && !v.has_flag("gd");
    plain(a) && plain(b) && a.end == b.start && a.prot == b.prot && a.vmflags == b.vmflags
}

/// Give area `v` (mapped at its place, maybe merged with a neighbour) an anon_vma of its
/// own, so that the kernel keeps it apart from its neighbours as the original had it:
/// the same area is made elsewhere, one page of it faulted in (the fault gives it its
/// anon_vma, which stays when the page is dropped again) and moved over its place with
/// mremap, which replaces what was mapped there and merges it with nothing.
fn map_apart(cx: &mut Ctx<'_>, v: &Vma) -> RestoreResult<()> {
    let what = format!("map memory area {:#x}-{:#x} apart", v.start, v.end);
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = mmap_flags(v) & !(libc::MAP_FIXED_NOREPLACE as u64);
    let tmp = cx.call(&what, nr::MMAP, [0, v.len(), rw, flags, u64::MAX, 0])?;
    cx.write(tmp, &[0])?;
    cx.call(
        &what,
        nr::MADVISE,
        [tmp, 4096, libc::MADV_DONTNEED as u64, 0, 0, 0],
    )?;
    let moved = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let got = cx.call(
        &what,
        nr::MREMAP,
        [tmp, v.len(), v.len(), moved, v.start, 0],
    )?;
    if got != v.start {
        return Err(RestoreError::Stage(format!(
            "{what}: the kernel moved it to {got:#x}"
        )));
    }
    // The protections map_memory gives it (see there).
    let mut prot = u64::from(v.prot);
    if takes_pages(v) && v.pages_present > 0 {
        prot |= libc::PROT_WRITE as u64;
    }
    if prot != rw {
        cx.call(&what, nr::MPROTECT, [v.start, v.len(), prot, 0, 0, 0])?;
    }
    Ok(())
}

pub(crate) fn finish_memory(cx: &mut Ctx<'_>) -> RestoreResult<()> {
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

/// The vDSO just mapped is where the image had it, and the same code (the program may
/// hold pointers into it).
fn check_vdso(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
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
    Ok(())
}
