//! Shared memory: shared anonymous objects (one for the tree) and System V segments
//! attached to the processes.

use super::pages::{MAX_RUN_PAGES, Run};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::model::{Process, Vma, VmaKind};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::proc as procfs;
use std::collections::BTreeMap;

// ---- collect (dump) ----

/// Pages of shared-memory objects already stored (by inode, page offset): an object
/// shared by several processes of the tree is stored once.
pub(crate) type SharedSeen = std::collections::BTreeMap<u64, std::collections::BTreeSet<u64>>;

/// Pages of a MAP_SHARED|MAP_ANONYMOUS area: everything its object holds in the mapped
/// range (found with SEEK_DATA, so pages written only through another mapping count).
pub(crate) fn shmem_pages(
    pid: i32,
    vma: &mut Vma,
    runs: &mut Vec<Run>,
    seen: &mut SharedSeen,
) -> DumpResult<()> {
    let (ino, ranges) = procfs::shmem_data_ranges(pid, vma.start, vma.end, vma.offset, vma.len())?;
    vma.shmem_id = ino;
    let done = seen.entry(ino).or_default();
    let first = runs.len();
    for (a, b) in ranges {
        let mut off = a;
        while off < b {
            if done.insert(off) {
                let addr = vma.start + (off - vma.offset);
                vma.pages_present += 1;
                let n = runs.len();
                match runs.last_mut() {
                    Some(r)
                        if n > first
                            && r.addr + r.pages * 4096 == addr
                            && r.pages < MAX_RUN_PAGES =>
                    {
                        r.pages += 1
                    }
                    _ => runs.push(Run {
                        addr,
                        pages: 1,
                        skip_zero: true,
                    }),
                }
            }
            off += 4096;
        }
    }
    Ok(())
}

/// The System V segments the processes attached that go away with them: removed
/// (SHM_DEST) and attached by no one else (as many attachments as the processes have).
/// Others outlive the tree, their IDs and keys still taken. `procs`: the processes of
/// the tree in the calling thread's IPC namespace.
pub(crate) fn held_segments(procs: &[&Process]) -> DumpResult<std::collections::BTreeSet<i32>> {
    let mut ours: BTreeMap<i32, u64> = BTreeMap::new();
    for v in procs.iter().flat_map(|p| &p.vmas) {
        if let VmaKind::SysvShm { shmid, .. } = v.kind {
            *ours.entry(shmid).or_default() += 1;
        }
    }
    if ours.is_empty() {
        return Ok(Default::default());
    }
    const SHM_DEST: u32 = 0o1000;
    Ok(procfs::sysv_shm_attached()?
        .into_iter()
        .filter(|&(id, mode, nattch)| {
            mode & SHM_DEST != 0 && ours.get(&id).is_some_and(|n| nattch <= *n)
        })
        .map(|(id, _, _)| id)
        .collect())
}

// ---- checks (plan) ----

/// The System V segments the process attached must not exist here (their IDs and keys
/// are taken again).
pub(crate) fn check_sysv_free(proc_: &Process, held: &check::Held, problems: &mut Vec<Problem>) {
    for v in &proc_.vmas {
        if let VmaKind::SysvShm { key, shmid, .. } = v.kind {
            if let Ok(mut segs) = procfs::sysv_shm() {
                // Those going away with the dumped tree are free.
                segs.retain(|s| !held.sysv.contains(&s.1));
                check_sysv_ids(key, shmid, &segs, problems);
            }
        }
    }
}

/// A segment's `key` and `shmid` are not among this host's segments `segs` (key, shmid,
/// mode, size), as /proc/sysvipc/shm lists them.
pub(crate) fn check_sysv_ids(
    key: i32,
    shmid: i32,
    segs: &[(i32, i32, u32, u64)],
    problems: &mut Vec<Problem>,
) {
    if segs.iter().any(|s| s.1 == shmid) {
        check::p(
            problems,
            "sysv-taken",
            format!("System V shared memory ID {shmid} is in use on this host"),
        );
    }
    if key != 0 && segs.iter().any(|s| s.0 == key) {
        check::p(
            problems,
            "sysv-taken",
            format!("System V shared memory key {key:#x} is in use on this host"),
        );
    }
}

// ---- restore (stage) ----

/// System V segments restore created: removed again unless the restore commits (they
/// would outlive the killed stubs otherwise).
#[derive(Default)]
pub(crate) struct SysvCreated {
    ids: Vec<i32>,
    /// Objects of the image's System V list (`kinds::ipc`), created by ckpt.
    pub(crate) objs: Vec<(sys::ipc::IpcKind, i32)>,
    /// Segments of that list: already made, processes only attach them.
    pub(crate) pre: std::collections::BTreeSet<i32>,
    /// Segments made in IPC namespaces processes below the tree's root made (by the
    /// inode each had at dump), with the other objects of each (`kinds::ipc::
    /// create_below_root`): its processes only attach them. (Not removed on failure:
    /// they end with their namespace, whose processes are the stubs.)
    pub(crate) pre_in: BTreeMap<u64, std::collections::BTreeSet<i32>>,
    pub(crate) keep: bool,
}

impl Drop for SysvCreated {
    fn drop(&mut self) {
        if !self.keep {
            for id in &self.ids {
                sys::process::remove_sysv_shm(*id);
            }
            for (kind, id) in &self.objs {
                let _ = sys::ipc::remove(*kind, *id);
            }
        }
    }
}

/// Shared anonymous memory objects already created: id -> (process, its mapping).
pub(crate) type ShmOwners = BTreeMap<u64, (i32, u64, u64)>;

/// Map one MAP_SHARED|MAP_ANONYMOUS area: the first process to map an object creates it
/// (large enough for every mapping of it in the image) and maps it from its own
/// /proc/self/map_files entry; the others map the same object from the creator's.
pub(crate) fn map_shmem(
    cx: &mut Ctx<'_>,
    v: &Vma,
    prot: u64,
    shm: &mut ShmOwners,
    size: u64,
) -> RestoreResult<()> {
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
    let flags = (libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE) as u64 | super::noreserve(v);
    cx.map_at(&what, v, prot, flags, fd)?;
    cx.close(fd)?;
    if let Some(t) = tmp {
        cx.call("munmap", nr::MUNMAP, [t, size, 0, 0, 0, 0])?;
        shm.insert(v.shmem_id, (cx.proc_.pid, v.start, v.end));
    }
    Ok(())
}

/// Attach a System V segment at its old address, creating it first (under its old ID,
/// through kernel.shm_next_id) if this is the first process of the image to attach it.
/// It is attached writable for the page data; protections are set afterwards.
pub(crate) fn attach_sysv(
    cx: &mut Ctx<'_>,
    v: &Vma,
    (key, shmid, size, mode): (i32, i32, u64, u32),
    shm: &mut ShmOwners,
    created: &mut SysvCreated,
) -> RestoreResult<()> {
    let what = format!("System V segment {shmid}");
    let below = crate::kinds::ns::inode_of(cx.proc_, "ipc").and_then(|i| created.pre_in.get(&i));
    if let Some(made) = below {
        // Made with the other objects of the IPC namespace a process below the root
        // made, which this process is in.
        if !made.contains(&shmid) {
            return Err(RestoreError::Malformed(format!(
                "{what}, attached by process {}, is not one of its IPC namespace's",
                cx.proc_.pid
            )));
        }
    } else if created.pre.contains(&shmid) {
        // Made by ckpt with the image's other System V objects (`kinds::ipc`).
    } else if let std::collections::btree_map::Entry::Vacant(slot) = shm.entry(v.shmem_id) {
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
pub(crate) fn remove_destroyed_sysv(
    cx: &mut Ctx<'_>,
    done: &mut std::collections::BTreeSet<i32>,
) -> RestoreResult<()> {
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

/// The size of each shared anonymous memory object of the image (by id): large enough
/// for every mapping of it.
pub(crate) fn shm_sizes(procs: &[Process]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for v in procs.iter().flat_map(|p| p.vmas.iter()) {
        if v.kind == VmaKind::AnonShared {
            let e = m.entry(v.shmem_id).or_insert(0u64);
            *e = (*e).max(v.offset + v.len());
        }
    }
    m
}
