//! Memory: the areas of a process (what each mapping is, how it is checked and mapped
//! again) and the pages in them.

pub(crate) mod pages;
pub(crate) mod shmem;

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

use self::pages::{Run, vma_pages};
use self::shmem::{SharedSeen, shmem_pages};
use crate::error::{DumpError, DumpResult as Result};
use crate::kinds::fd::file::check_path;
use crate::kinds::unsupported;
use crate::model::{FileId, Vma, VmaKind};
use crate::sys;
use crate::sys::mem::RemoteMem;
use crate::sys::proc::{self as procfs, MapEntry};

// ---- collect (dump) ----

/// The mapped files whose path was found to lead to them (path -> device and inode), so
/// that the areas of one file (a library has four or five) cost one `stat` of the path.
type CheckedPaths = BTreeMap<Vec<u8>, (u64, u64)>;

fn classify_vma(pid: i32, m: &MapEntry, checked: &mut CheckedPaths) -> Result<Option<VmaKind>> {
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
            let seg = procfs::sysv_shm()?
                .into_iter()
                .find(|s| s.1 == shmid)
                .ok_or_else(|| {
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
        failed: None,
    };
    let mut checked = CheckedPaths::new();
    for (i, m) in maps.iter().enumerate() {
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
pub(crate) fn refuse_special(pid: i32, vma: &Vma) -> Result<()> {
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
