//! Collect: read everything about the frozen task into a `model::Checkpoint`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::{DumpError, Frozen, Result};
use crate::arch::{self, ThreadArchState, X86Regs, x86::nr};
use crate::model::{
    Checkpoint, Creds, Fd, FdKind, FileId, FileLock, ITimer, ImageInfo, LockKind, MmInfo,
    PendingSignal, PosixTimer, ProcMisc, Process, Rlimit, Rseq, SigAction, SigAltStack, Thread,
    Vma, VmaKind,
};
use crate::sys::inject::{Call, Injector, find_gadget, find_gadget32};
use crate::sys::mem::RemoteMem;
use crate::sys::proc::{
    self as procfs, MapEntry, PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT,
    PAGE_IS_SWAPPED, PM_FILE, PM_GUARD_REGION, PM_PRESENT, PM_SWAP,
};
use crate::sys::{self, ptrace};

/// A run of pages whose contents go into the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub addr: u64,
    pub pages: u64,
    /// All-zero pages need not be stored (anonymous memory reads back as zeros).
    pub skip_zero: bool,
}

/// Pages per run (and so per page record) at most: 4 MiB. (Measured: 1 MiB runs, which
/// would keep the runs in flight between dump's two threads in the CPU caches, were no
/// faster on this VM, and cost more records.)
pub(crate) const MAX_RUN_PAGES: u64 = 1024;

pub(crate) struct Collected {
    pub ckpt: Checkpoint,
    /// Page runs of each (live) process, by PID, in image order.
    pub runs: Vec<(i32, Vec<Run>)>,
    /// The host PID of each process whose image PID differs (a tree with its own PID
    /// namespace): /proc and ptrace take host PIDs.
    pub host_pids: std::collections::BTreeMap<i32, i32>,
}

impl Collected {
    /// The PID under which ckpt reaches process `pid` of the image.
    pub fn host_pid(&self, pid: i32) -> i32 {
        self.host_pids.get(&pid).copied().unwrap_or(pid)
    }

    /// Turn every ID into what the tree's own PID namespace sees (see
    /// `Checkpoint::own_pid_namespace`); IDs of tasks outside the tree become 0.
    pub fn use_namespace_pids(&mut self) -> Result<()> {
        let mut map = std::collections::BTreeMap::new();
        for p in &self.ckpt.processes {
            let local = |v: Vec<i32>| v.last().copied().filter(|&x| x > 0);
            let st = sys::proc::status(p.pid)?;
            let pid = local(st.nspid)
                .ok_or_else(|| unsupported(p.pid, "its ID in its PID namespace cannot be read"))?;
            map.insert(p.pid, pid);
            for t in p.threads.iter().skip(1) {
                let tid = local(sys::proc::thread_nspid(p.pid, t.tid)?).ok_or_else(|| {
                    unsupported(
                        p.pid,
                        format!("the namespace ID of thread {} is unknown", t.tid),
                    )
                })?;
                map.insert(t.tid, tid);
            }
        }
        let f = |id: i32| map.get(&id).copied().unwrap_or(0);
        self.ckpt.map_pids(&f);
        for (pid, _) in &mut self.runs {
            *pid = f(*pid);
        }
        self.host_pids = map.iter().map(|(&host, &local)| (local, host)).collect();
        self.ckpt.own_pid_namespace = true;
        Ok(())
    }
}

/// One collected process.
pub(crate) struct ProcCollected {
    pub process: Process,
    /// ARCH_GET_XCOMP_PERM: xsave components the process was permitted (AMX...).
    pub xcomp_perm: u64,
    pub runs: Vec<Run>,
    /// (hash, size) of the vDSO text and size of the vvar area, if mapped.
    pub vdso: Option<(u64, u64, u64)>,
}

const NSIG: u32 = 64;
/// Resource limits the kernel has (RLIMIT_CPU = 0 .. RLIMIT_RTTIME = 15).
const RLIM_NLIMITS: u32 = 16;

/// What only the task itself can tell, read by injected syscalls.
struct Injected {
    sigactions: Vec<SigAction>,
    pdeathsig: i32,
    dumpable: i32,
    child_subreaper: bool,
    brk: u64,
    itimers: Vec<ITimer>,
    posix_timers: Vec<PosixTimer>,
    xcomp_perm: u64,
    rlimits: Vec<Rlimit>,
}

/// Per-thread state that only the thread itself can tell.
#[derive(Clone, Copy, Default)]
struct ThreadInjected {
    altstack: SigAltStack,
    clear_child_tid: u64,
    /// The compat (ia32) robust list, for an ia32 thread.
    robust32: Option<(u64, u64)>,
    /// PR_GET_SECUREBITS (part of each thread's credentials).
    securebits: u32,
}

fn unsupported(pid: i32, why: impl Into<String>) -> DumpError {
    DumpError::Unsupported {
        pid,
        why: why.into(),
    }
}

/// The scratch area mapped in the task while it is queried: the batch executor's code
/// at its start, then the queries' results, then the executor's table.
const SCRATCH_LEN: u64 = 32 << 10;
const SCRATCH_OUT: u64 = 4096;
const SCRATCH_OUT_LEN: usize = 12 << 10;
const SCRATCH_TABLE: u64 = 16 << 10;
const SCRATCH_TABLE_CAP: usize = (16 << 10) / arch::x86::BATCH_ENTRY_LEN as usize;

fn word(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|w| w.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default()
}

fn inject_queries(inj: &mut Injector, mem: &RemoteMem, scratch: u64) -> Result<Injected> {
    let out = scratch + SCRATCH_OUT;
    // Results that are written to memory land in `out`, 32 bytes per call.
    mem.write(out, &[0u8; SCRATCH_OUT_LEN])?;
    let sigs: Vec<u32> = (1..=NSIG)
        .filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32)
        .collect();
    let slot = |i: usize| out + 32 * i as u64;
    let mut calls: Vec<Call> = sigs
        .iter()
        .enumerate()
        .map(|(i, &sig)| {
            Call::new(
                format!("rt_sigaction({sig})"),
                nr::RT_SIGACTION,
                [u64::from(sig), 0, slot(i), 8, 0, 0],
            )
        })
        .collect();
    let n = sigs.len();
    // Which dynamically enabled xsave components (AMX) the process asked for; an older
    // kernel does not know the call.
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    calls.extend([
        Call::new(
            "prctl(PR_GET_PDEATHSIG)",
            nr::PRCTL,
            [libc::PR_GET_PDEATHSIG as u64, slot(n), 0, 0, 0, 0],
        ),
        Call::new(
            "prctl(PR_GET_DUMPABLE)",
            nr::PRCTL,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        ),
        Call::new(
            "prctl(PR_GET_CHILD_SUBREAPER)",
            nr::PRCTL,
            [libc::PR_GET_CHILD_SUBREAPER as u64, slot(n + 1), 0, 0, 0, 0],
        ),
        Call::new("brk(0)", nr::BRK, [0; 6]),
        Call::new(
            "arch_prctl(ARCH_GET_XCOMP_PERM)",
            nr::ARCH_PRCTL,
            [ARCH_GET_XCOMP_PERM, slot(n + 2), 0, 0, 0, 0],
        )
        .may_fail(),
    ]);
    for which in 0..3u64 {
        calls.push(Call::new(
            "getitimer",
            nr::GETITIMER,
            [which, slot(n + 3 + which as usize), 0, 0, 0, 0],
        ));
    }
    // Resource limits, asked by the process about itself: prlimit(PID) from outside
    // needs CAP_SYS_RESOURCE for a process of another user, which even root may lack.
    for resource in 0..RLIM_NLIMITS {
        calls.push(Call::new(
            "prlimit64",
            nr::PRLIMIT64,
            [
                0,
                u64::from(resource),
                0,
                slot(n + 6 + resource as usize),
                0,
                0,
            ],
        ));
    }
    let res = inj.batch(mem, &calls)?;
    let r = |i: usize| res.get(i).copied().unwrap_or(-1);
    let mut b = vec![0u8; 32 * (n + 6 + RLIM_NLIMITS as usize)];
    mem.read(out, &mut b)?;
    let at = |i: usize| &b[32 * i..32 * i + 32];
    let sigactions = sigs
        .iter()
        .enumerate()
        .map(|(i, &signo)| {
            let w = at(i);
            SigAction {
                signo,
                handler: word(w, 0),
                flags: word(w, 1),
                restorer: word(w, 2),
                mask: word(w, 3),
            }
        })
        .collect();
    let pdeathsig = word(at(n), 0) as u32 as i32;
    let dumpable = r(n + 1) as i32;
    let child_subreaper = word(at(n + 1), 0) as u32 != 0;
    let brk = r(n + 3) as u64;
    let xcomp_perm = if r(n + 4) == 0 { word(at(n + 2), 0) } else { 0 };
    let us = |sec: u64, usec: u64| sec.saturating_mul(1_000_000).saturating_add(usec);
    // struct itimerval { timeval it_interval; timeval it_value; }
    let itimers = (0..3u32)
        .map(|which| {
            let w = at(n + 3 + which as usize);
            ITimer {
                which,
                interval_us: us(word(w, 0), word(w, 1)),
                value_us: us(word(w, 2), word(w, 3)),
            }
        })
        .filter(|t| t.value_us != 0 || t.interval_us != 0)
        .collect();
    let rlimits = (0..RLIM_NLIMITS)
        .map(|resource| {
            let w = at(n + 6 + resource as usize);
            Rlimit {
                resource,
                cur: word(w, 0),
                max: word(w, 1),
            }
        })
        .collect();
    let mut posix_timers = Vec::new();
    let timers = procfs::posix_timers(inj.pid())?;
    // Two calls per timer, as many timers per batch as their results have room for.
    for chunk in timers.chunks(SCRATCH_OUT_LEN / 32) {
        let calls: Vec<Call> = chunk
            .iter()
            .enumerate()
            .flat_map(|(k, t)| {
                [
                    Call::new(
                        "timer_gettime",
                        nr::TIMER_GETTIME,
                        [t.id as u64, slot(k), 0, 0, 0, 0],
                    ),
                    Call::new(
                        "timer_getoverrun",
                        nr::TIMER_GETOVERRUN,
                        [t.id as u64, 0, 0, 0, 0, 0],
                    ),
                ]
            })
            .collect();
        let res = inj.batch(mem, &calls)?;
        let mut b = vec![0u8; 32 * chunk.len()];
        mem.read(out, &mut b)?;
        let ns = |sec: u64, nsec: u64| sec.saturating_mul(1_000_000_000).saturating_add(nsec);
        for (k, t) in chunk.iter().enumerate() {
            // struct itimerspec { timespec it_interval; timespec it_value; }
            let w = &b[32 * k..32 * k + 32];
            posix_timers.push(PosixTimer {
                id: t.id,
                clock: t.clock,
                signo: t.signo,
                sigev_value: t.sigev_value,
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval_ns: ns(word(w, 0), word(w, 1)),
                value_ns: ns(word(w, 2), word(w, 3)),
                overrun: res.get(2 * k + 1).copied().unwrap_or_default() as i32,
            });
        }
    }
    Ok(Injected {
        xcomp_perm,
        rlimits,
        sigactions,
        pdeathsig,
        dumpable,
        child_subreaper,
        brk,
        itimers,
        posix_timers,
    })
}

fn inject_thread_queries(
    inj: &mut Injector,
    mem: &RemoteMem,
    scratch: u64,
    abi: arch::Abi,
) -> Result<ThreadInjected> {
    let out = scratch + SCRATCH_OUT;
    mem.write(out, &[0u8; 96])?;
    let res = inj.batch(
        mem,
        &[
            Call::new("sigaltstack", nr::SIGALTSTACK, [0, out, 0, 0, 0, 0]),
            Call::new(
                "prctl(PR_GET_TID_ADDRESS)",
                nr::PRCTL,
                [libc::PR_GET_TID_ADDRESS as u64, out + 32, 0, 0, 0, 0],
            ),
            // Part of each thread's credentials.
            Call::new(
                "prctl(PR_GET_SECUREBITS)",
                nr::PRCTL,
                [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
            ),
        ],
    )?;
    let securebits = res.get(2).copied().unwrap_or_default() as u32;
    let mut b = [0u8; 96];
    mem.read(out, &mut b)?;
    // stack_t { void *ss_sp; int ss_flags; size_t ss_size; }
    let altstack = SigAltStack {
        sp: word(&b, 0),
        flags: word(&b, 1) as u32 as i32,
        size: word(&b, 2),
    };
    let clear_child_tid = word(&b, 4);
    // An ia32 thread registered its robust list through the compat syscall, which the
    // kernel keeps apart from the native one: ask the same way (4-byte head and length).
    let robust32 = if abi == arch::Abi::Ia32 {
        inj.call32(
            "get_robust_list (ia32)",
            arch::x86::nr32::GET_ROBUST_LIST,
            [0, out + 64, out + 68, 0, 0, 0],
        )?;
        mem.read(out + 64, &mut b[..8])?;
        Some((
            u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default())),
            u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default())),
        ))
    } else {
        None
    };
    Ok(ThreadInjected {
        altstack,
        clear_child_tid,
        robust32,
        securebits,
    })
}

/// Run the injected queries in a scratch page that is unmapped again afterwards.
fn injected_state(fr: &mut Frozen, mem: &RemoteMem) -> Result<(Injected, Vec<ThreadInjected>)> {
    let pid = fr.pid;
    let maps = procfs::maps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.path == b"[vdso]")
        .ok_or_else(|| unsupported(pid, "it has no vDSO mapped (needed to run queries)"))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    mem.read(vdso.start, &mut code)?;
    let gadget = find_gadget(&code, vdso.start)
        .ok_or_else(|| unsupported(pid, "no syscall instruction found in its vDSO"))?;
    // ia32 tasks also need `int $0x80` (the 32-bit vDSO has one) and a scratch page
    // below 4 GiB.
    let ia32 = fr
        .threads
        .iter()
        .any(|t| t.orig_regs.abi() == arch::Abi::Ia32);
    let gadget32 = if ia32 {
        find_gadget32(&code, vdso.start)
            .filter(|g| *g < 1 << 32)
            .ok_or_else(|| unsupported(pid, "no int $0x80 instruction found in its vDSO"))?
    } else {
        0
    };
    // The queries run in batches of one stop each when the breakpoint that ends a batch
    // can stop the task without a trace: SIGTRAP must be neither ignored (the kernel
    // would reset its disposition) nor blocked (it would reset a handler) nor pending
    // (that one would be delivered instead), and no timer of the process may send one
    // meanwhile. Otherwise one call per stop.
    let tids: Vec<i32> = fr.threads.iter().map(|t| t.tid).collect();
    let mut batch = procfs::signal_quiet(pid, &tids, libc::SIGTRAP)?
        && !procfs::posix_timers(pid)?
            .iter()
            .any(|t| t.signo == libc::SIGTRAP);
    // Keep signals pending (not delivered) while we run syscalls in the task.
    let mask = if batch {
        !(1u64 << (libc::SIGTRAP - 1))
    } else {
        !0
    };
    for t in fr.threads.iter_mut() {
        ptrace::set_sigmask(t.tid, mask)?;
        t.injected = true;
    }
    let mut inj = Injector::new(pid, gadget, fr.leader().orig_regs);
    let low = if ia32 { libc::MAP_32BIT } else { 0 };
    let map = |inj: &mut Injector, prot: i32| {
        inj.raw(
            nr::MMAP,
            [
                0,
                SCRATCH_LEN,
                prot as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | low) as u64,
                u64::MAX,
                0,
            ],
        )
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut scratch = -1;
    if batch {
        // A security policy may forbid executable anonymous memory: then no batches.
        scratch = map(&mut inj, rw | libc::PROT_EXEC)?;
        batch = !(-4095..0).contains(&scratch);
    }
    if !batch {
        scratch = map(&mut inj, rw)?;
    }
    if (-4095..0).contains(&scratch) {
        return Err(sys::SysError::Remote {
            what: "mmap scratch area".into(),
            errno: (-scratch) as i32,
        }
        .into());
    }
    let scratch = scratch as u64;
    let executor = |inj: &mut Injector| -> Result<()> {
        if batch {
            inj.set_executor(scratch, scratch + SCRATCH_TABLE, SCRATCH_TABLE_CAP);
        }
        Ok(())
    };
    let res = (if batch {
        mem.write(scratch, &arch::x86::BATCH_CODE)
            .map_err(DumpError::from)
    } else {
        Ok(())
    })
    .and_then(|()| executor(&mut inj))
    .and_then(|()| inject_queries(&mut inj, mem, scratch))
    .and_then(|p| {
        let mut per = Vec::new();
        for t in &fr.threads {
            let mut ti = Injector::new(t.tid, gadget, t.orig_regs);
            ti.set_gadget32(gadget32);
            executor(&mut ti)?;
            per.push(inject_thread_queries(
                &mut ti,
                mem,
                scratch,
                t.orig_regs.abi(),
            )?);
        }
        Ok((p, per))
    });
    let unmapped = inj.call(
        "munmap scratch area",
        nr::MUNMAP,
        [scratch, SCRATCH_LEN, 0, 0, 0, 0],
    );
    // From here on the task must be able to run on as before even if ckpt dies (the
    // kernel then detaches it): give every thread its registers and signal mask now.
    for t in &fr.threads {
        ptrace::set_regs(t.tid, &arch::x86::release_regs(&t.orig_regs))?;
        ptrace::set_sigmask(t.tid, t.orig_sigmask)?;
    }
    let out = res?;
    unmapped?;
    Ok(out)
}

fn file_id_checked(pid: i32, link: &str, name: &[u8], what: &str) -> Result<FileId> {
    let (id, nlink) = procfs::file_stat(Path::new(link), name)?;
    if nlink == 0 {
        return Err(unsupported(
            pid,
            format!(
                "{what} {} was deleted while in use; deleted files are not supported yet",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    check_path(pid, &id, what)?;
    Ok(id)
}

/// The path of `id` must still lead to the same file, or restore would open another one.
fn check_path(pid: i32, id: &FileId, what: &str) -> Result<()> {
    match procfs::file_id(procfs::bytes_path(&id.path), &id.path) {
        Ok(now) if now.dev == id.dev && now.ino == id.ino => Ok(()),
        _ => Err(unsupported(
            pid,
            format!(
                "{what} {} no longer exists under that path (renamed or replaced)",
                String::from_utf8_lossy(&id.path)
            ),
        )),
    }
}

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

/// Pages of shared-memory objects already stored (by inode, page offset): an object
/// shared by several processes of the tree is stored once.
pub(crate) type SharedSeen = std::collections::BTreeMap<u64, std::collections::BTreeSet<u64>>;

/// Pages of a MAP_SHARED|MAP_ANONYMOUS area: everything its object holds in the mapped
/// range (found with SEEK_DATA, so pages written only through another mapping count).
fn shmem_pages(pid: i32, vma: &mut Vma, runs: &mut Vec<Run>, seen: &mut SharedSeen) -> Result<()> {
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

/// [`vma_pages`] from the ranges `PAGEMAP_SCAN` found: the same pages as the pagemap
/// words give, but pages mapped to the zero page (read, never written) are not read at
/// all when zero pages are skipped anyway.
fn scanned_pages(
    vma: &mut Vma,
    ranges: &[procfs::ScanRange],
    skip_zero: bool,
    runs: &mut Vec<Run>,
) {
    let anon = matches!(vma.kind, VmaKind::Anon);
    let mut guard: Option<(u64, u64)> = None;
    let mut run: Option<Run> = None;
    for r in ranges {
        let c = r.categories;
        if c & PAGE_IS_GUARD != 0 {
            match &mut guard {
                Some(g) if g.1 == r.start => g.1 = r.end,
                _ => {
                    if let Some(g) = guard.take() {
                        vma.guard_ranges.push(g);
                    }
                    guard = Some((r.start, r.end));
                }
            }
            continue;
        }
        // Private file mappings: only pages copied on write (anonymous now).
        let wanted = c & PAGE_IS_SWAPPED != 0
            || (c & PAGE_IS_PRESENT != 0 && (anon || c & PAGE_IS_FILE == 0));
        if !wanted {
            continue;
        }
        vma.pages_present += (r.end - r.start) / 4096;
        if skip_zero && c & PAGE_IS_PFNZERO != 0 && c & PAGE_IS_SWAPPED == 0 {
            continue;
        }
        let mut a = r.start;
        while a < r.end {
            match &mut run {
                Some(x) if x.addr + x.pages * 4096 == a && x.pages < MAX_RUN_PAGES => {
                    let n = (MAX_RUN_PAGES - x.pages).min((r.end - a) / 4096);
                    x.pages += n;
                    a += n * 4096;
                }
                _ => {
                    if let Some(x) = run.take() {
                        runs.push(x);
                    }
                    let n = MAX_RUN_PAGES.min((r.end - a) / 4096);
                    run = Some(Run {
                        addr: a,
                        pages: n,
                        skip_zero,
                    });
                    a += n * 4096;
                }
            }
        }
    }
    runs.extend(run);
    vma.guard_ranges.extend(guard);
}

/// Decide which pages of a VMA go into the image and where its guard regions are.
fn vma_pages(pm: &procfs::Pagemap, vma: &mut Vma, runs: &mut Vec<Run>) -> Result<()> {
    let (want, skip_zero): (fn(u64) -> bool, bool) = match (&vma.kind, vma.shared) {
        (VmaKind::Anon, _) => (|e| e & (PM_PRESENT | PM_SWAP) != 0, true),
        // Private file mappings: only pages that were copied on write (anonymous now).
        (VmaKind::File { .. } | VmaKind::MemfdMap { .. } | VmaKind::DeletedMap { .. }, false) => (
            |e| (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0,
            false,
        ),
        _ => return Ok(()),
    };
    // PAGE_IS_FILE only where it decides something (an anonymous area has no file
    // pages): to tell it, the kernel reads the struct page behind every present entry,
    // which made the walk of 1 GiB of anonymous memory six times slower (22-29 ms
    // against 3.4-4.4).
    let file = if matches!(vma.kind, VmaKind::Anon) {
        0
    } else {
        PAGE_IS_FILE
    };
    if let Some(ranges) = pm.scan(
        vma.start,
        vma.end,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED | file | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
    )? {
        scanned_pages(vma, &ranges, skip_zero, runs);
        return Ok(());
    }
    // Without PAGEMAP_SCAN: one pagemap word per page.
    const CHUNK: u64 = 1 << 16; // pages per pagemap read
    let mut entries = Vec::new();
    let mut addr = vma.start;
    let mut run: Option<Run> = None;
    let mut guard: Option<(u64, u64)> = None;
    while addr < vma.end {
        let end = vma.end.min(addr + CHUNK * 4096);
        entries.clear();
        pm.read(addr, end, &mut entries)?;
        for (i, e) in entries.iter().enumerate() {
            let a = addr + i as u64 * 4096;
            if e & PM_GUARD_REGION != 0 {
                match &mut guard {
                    Some(g) if g.1 == a => g.1 = a + 4096,
                    _ => {
                        if let Some(g) = guard.take() {
                            vma.guard_ranges.push(g);
                        }
                        guard = Some((a, a + 4096));
                    }
                }
            }
            if e & PM_GUARD_REGION == 0 && want(*e) {
                vma.pages_present += 1;
                match &mut run {
                    Some(r) if r.addr + r.pages * 4096 == a && r.pages < MAX_RUN_PAGES => {
                        r.pages += 1
                    }
                    _ => {
                        if let Some(r) = run.take() {
                            runs.push(r);
                        }
                        run = Some(Run {
                            addr: a,
                            pages: 1,
                            skip_zero,
                        });
                    }
                }
            }
        }
        addr = end;
    }
    runs.extend(run);
    vma.guard_ranges.extend(guard);
    Ok(())
}

/// If the thread was stopped inside an rseq critical section, move it to the section's
/// abort handler, as the kernel does when it preempts such a thread.
fn rseq_fixup(mem: &RemoteMem, rseq: &Option<Rseq>, regs: &mut X86Regs) -> Result<()> {
    let Some(r) = rseq else { return Ok(()) };
    // struct rseq { u32 cpu_id_start; u32 cpu_id; u64 rseq_cs; ... }
    let cs = mem.read_u64(r.addr + 8)?;
    if cs == 0 {
        return Ok(());
    }
    // struct rseq_cs { u32 version; u32 flags; u64 start_ip; u64 post_commit_offset; u64 abort_ip; }
    let mut b = [0u8; 32];
    if mem.read(cs, &mut b).is_err() {
        return Ok(());
    }
    let start = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
    let abort = u64::from_le_bytes(b[24..32].try_into().unwrap_or_default());
    if regs.rip >= start && regs.rip - start < len {
        regs.rip = abort;
        regs.orig_rax = u64::MAX;
    }
    Ok(())
}

/// The file locks held through descriptor `fd` (its fdinfo "lock:" lines): flock and
/// OFD locks of its open file description, POSIX locks of this process taken through
/// it. Kinds that cannot be taken again (leases, delegations...) are refused by name.
fn fd_locks(pid: i32, fd: i32, name: &str) -> Result<Vec<FileLock>> {
    let mut locks = Vec::new();
    for l in procfs::fdinfo_text(pid, fd)?
        .lines()
        .filter(|l| l.starts_with("lock:"))
    {
        let refuse = |what: &str| {
            unsupported(
                pid,
                format!("file descriptor {fd} ({name}) holds {what}; not supported yet"),
            )
        };
        let Some(ll) = procfs::parse_lock_line(l) else {
            return Err(refuse(&format!("a file lock that cannot be parsed ({l})")));
        };
        let kind = match ll.class.as_str() {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            other => return Err(refuse(&format!("a file lock of kind {other}"))),
        };
        let write = match ll.mode.as_str() {
            "WRITE" => true,
            "READ" => false,
            other => return Err(refuse(&format!("a {other} file lock"))),
        };
        locks.push(FileLock {
            kind,
            write,
            start: ll.start,
            end: ll.end,
        });
    }
    Ok(locks)
}

/// The watches of inotify descriptor `fd`, each resolved to a path through its file
/// handle (and checked to lead to the watched inode). An instance with events queued
/// is refused: they cannot be put back.
fn inotify_watches(pid: i32, fd: i32, info: &str) -> Result<Vec<crate::model::InotifyWatch>> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        unsupported(
            pid,
            format!("file descriptor {fd} is an inotify instance {why}; not supported yet"),
        )
    };
    let lines = procfs::parse_inotify_watches(info).ok_or_else(|| {
        DumpError::Sys(crate::sys::SysError::Other(format!(
            "cannot parse the inotify watches of /proc/{pid}/fdinfo/{fd}"
        )))
    })?;
    let dup = sys::process::steal_fd(pid, fd)?;
    let queued = sys::process::queued_bytes(&dup)?;
    if queued != 0 {
        return Err(refuse(format!(
            "with {queued} bytes of events not read yet (they cannot be queued again)"
        )));
    }
    let mut out = Vec::new();
    for w in lines {
        let (major, minor) = (w.sdev >> 20, w.sdev & 0xf_ffff);
        let path = sys::process::path_of_handle(major, minor, w.handle_type, &w.handle)
            .filter(|p| {
                std::fs::metadata(procfs::bytes_path(p)).is_ok_and(|m| {
                    m.ino() == w.ino
                        && libc::major(m.dev()) == major
                        && libc::minor(m.dev()) == minor
                })
            })
            .ok_or_else(|| {
                refuse(format!(
                    "whose watch {} (inode {} on device {major}:{minor}) has no path that \
                     leads to it",
                    w.wd, w.ino
                ))
            })?;
        out.push(crate::model::InotifyWatch {
            wd: w.wd,
            mask: w.mask,
            path,
            ino: w.ino,
        });
    }
    out.sort_by_key(|w| w.wd);
    Ok(out)
}

fn fd_entry(pid: i32, fd: i32) -> Result<Fd> {
    let link_path = format!("/proc/{pid}/fd/{fd}");
    let link = procfs::readlink(&link_path)?;
    let name = String::from_utf8_lossy(&link).into_owned();
    let locks = fd_locks(pid, fd, &name)?;
    let mut f = fd_entry_kind(pid, fd, &link)?;
    if !locks.is_empty() {
        // Locks are taken again on descriptors reopened by path; elsewhere they would
        // silently vanish.
        if !matches!(f.kind, FdKind::File { .. } | FdKind::Dir { .. }) {
            return Err(unsupported(
                pid,
                format!(
                    "file descriptor {fd} ({name}) holds a file lock on a file that is not \
                     reopened by path (only locks on regular files and directories are \
                     supported)"
                ),
            ));
        }
        f.locks = locks;
    }
    Ok(f)
}

fn fd_entry_kind(pid: i32, fd: i32, link: &[u8]) -> Result<Fd> {
    let link_path = format!("/proc/{pid}/fd/{fd}");
    let link = link.to_vec();
    let (pos, flags) = procfs::fdinfo(pid, fd)?;
    let cloexec = flags & libc::O_CLOEXEC as u32 != 0;
    let flags = flags & !(libc::O_CLOEXEC as u32);
    let linkp = PathBuf::from(&link_path);
    let name = String::from_utf8_lossy(&link).into_owned();
    let not_yet = |kind: &str| {
        unsupported(
            pid,
            format!("file descriptor {fd} is {kind} ({name}); not supported yet"),
        )
    };
    if let Some(id) = name
        .strip_prefix("pipe:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
    {
        // Whether the other end is inside the tree is decided once all are collected.
        let write = flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
        return Ok(Fd {
            fd,
            cloexec,
            kind: FdKind::Pipe { id, write, flags },
            shared_with: None,
            locks: Vec::new(),
        });
    }
    if let Some(kind) = name.strip_prefix("anon_inode:") {
        let kind = kind.trim_start_matches('[').trim_end_matches(']');
        let info = procfs::fdinfo_text(pid, fd)?;
        let bad = || {
            DumpError::Sys(crate::sys::SysError::Other(format!(
                "cannot parse /proc/{pid}/fdinfo/{fd} ({kind})"
            )))
        };
        let field = |k: &str| procfs::fdinfo_field(&info, k).ok_or_else(bad);
        let fdkind = match kind {
            "eventfd" => FdKind::EventFd {
                count: u64::from_str_radix(field("eventfd-count:")?, 16).map_err(|_| bad())?,
                flags,
                semaphore: procfs::fdinfo_field(&info, "eventfd-semaphore:") == Some("1"),
            },
            "timerfd" => FdKind::TimerFd {
                clock: field("clockid:")?.parse().map_err(|_| bad())?,
                flags,
                value_ns: procfs::parse_timespec_pair(field("it_value:")?).ok_or_else(bad)?,
                interval_ns: procfs::parse_timespec_pair(field("it_interval:")?).ok_or_else(bad)?,
                ticks: field("ticks:")?.parse().map_err(|_| bad())?,
            },
            "signalfd" => FdKind::SignalFd {
                mask: u64::from_str_radix(field("sigmask:")?, 16).map_err(|_| bad())?,
                flags,
            },
            "[eventpoll" | "eventpoll" => {
                let mut targets = Vec::new();
                for (tfd, events, data, ino) in
                    procfs::parse_epoll_targets(&info).ok_or_else(bad)?
                {
                    let same = procfs::file_id(
                        std::path::Path::new(&format!("/proc/{pid}/fd/{tfd}")),
                        b"",
                    )
                    .map(|id| id.ino == ino)
                    .unwrap_or(false);
                    if !same {
                        return Err(not_yet(
                            "an epoll instance watching a descriptor that was closed or \
                             moved since it was added",
                        ));
                    }
                    targets.push(crate::model::EpollTarget {
                        fd: tfd,
                        events,
                        data,
                    });
                }
                FdKind::Epoll { flags, targets }
            }
            "inotify" => FdKind::Inotify {
                flags,
                watches: inotify_watches(pid, fd, &info)?,
            },
            _ => return Err(not_yet(&format!("a special file ({kind})"))),
        };
        return Ok(Fd {
            fd,
            cloexec,
            kind: fdkind,
            shared_with: None,
            locks: Vec::new(),
        });
    }
    if !link.starts_with(b"/") {
        // socket:[N]: decided by resolve_sockets once the whole tree is known.
        if link.starts_with(b"socket:") {
            return Ok(Fd {
                fd,
                cloexec,
                kind: FdKind::Inherited {
                    what: name,
                    flags,
                    tty: None,
                },
                shared_with: None,
                locks: Vec::new(),
            });
        }
        let kind = if link.starts_with(b"pipe:") {
            "a pipe"
        } else if link.starts_with(b"socket:") {
            "a socket"
        } else {
            "a special file"
        };
        return Err(not_yet(kind));
    }
    let (id, nlink) = procfs::file_stat(&linkp, &link)?;
    let fmt = id.mode & libc::S_IFMT;
    if fmt == libc::S_IFREG {
        // memfd and deleted files: their contents go into the image.
        if let Some(name) = link.strip_prefix(b"/memfd:") {
            let name = name.strip_suffix(b" (deleted)").unwrap_or(name).to_vec();
            let seals = sys::process::memfd_seals(pid, fd)?;
            return Ok(Fd {
                fd,
                cloexec,
                kind: FdKind::Memfd {
                    name,
                    flags,
                    pos,
                    seals,
                    data: id.ino,
                },
                shared_with: None,
                locks: Vec::new(),
            });
        }
        if nlink == 0 {
            let path = link.strip_suffix(b" (deleted)").unwrap_or(&link).to_vec();
            return Ok(Fd {
                fd,
                cloexec,
                kind: FdKind::DeletedFile {
                    file: FileId { path, ..id },
                    flags,
                    pos,
                    data: id.ino,
                },
                shared_with: None,
                locks: Vec::new(),
            });
        }
    }
    let kind = if fmt == libc::S_IFREG {
        // (nlink > 0: deleted files were handled above)
        check_path(pid, &id, &format!("file descriptor {fd}:"))?;
        FdKind::File {
            file: id,
            flags,
            pos,
        }
    } else if fmt == libc::S_IFDIR {
        FdKind::Dir { file: id, flags }
    } else if fmt == libc::S_IFCHR || fmt == libc::S_IFBLK {
        let major = libc::major(id.rdev);
        let is_tty = matches!(major, 4 | 5 | 136..=143);
        if is_tty {
            if fd <= 2 {
                let tty = Some(Box::new(tty_state(pid, fd, &id, &link)?));
                return Ok(Fd {
                    fd,
                    cloexec,
                    kind: FdKind::Inherited {
                        what: name,
                        flags,
                        tty,
                    },
                    shared_with: None,
                    locks: Vec::new(),
                });
            }
            return Err(not_yet("a terminal"));
        }
        FdKind::Device {
            file: id,
            flags,
            pos,
        }
    } else if fd <= 2 && fmt == libc::S_IFSOCK {
        FdKind::Inherited {
            what: name,
            flags,
            tty: None,
        }
    } else if fmt == libc::S_IFIFO {
        if flags & libc::O_PATH as u32 != 0 {
            return Err(not_yet("an O_PATH descriptor of a FIFO"));
        }
        // Its pipe (data, capacity) is read once the whole tree is known.
        let file = file_id_checked(pid, &link_path, &link, &format!("file descriptor {fd}:"))?;
        FdKind::Fifo {
            id: file.ino,
            file,
            flags,
        }
    } else {
        return Err(not_yet("a special file"));
    };
    Ok(Fd {
        fd,
        cloexec,
        kind,
        shared_with: None,
        locks: Vec::new(),
    })
}

/// A terminal on standard descriptor `fd`: its settings (read through a duplicate of the
/// descriptor; left out if the terminal no longer answers, e.g. hung up) and whether it
/// is the process's controlling terminal, with its foreground group (/proc/PID/stat).
fn tty_state(pid: i32, fd: i32, id: &FileId, link: &[u8]) -> Result<crate::model::TtyState> {
    use std::os::fd::AsFd;
    let dup = sys::process::steal_fd(pid, fd)?;
    let settings = sys::tty::settings(dup.as_fd()).ok();
    let st = procfs::stat(pid)?;
    let controlling = st.field(7) == id.rdev;
    Ok(crate::model::TtyState {
        path: link.to_vec(),
        rdev: id.rdev,
        settings,
        controlling,
        fg_pgid: if controlling {
            st.field(8) as i64 as i32
        } else {
            0
        },
    })
}

/// What is read of a thread from outside (before any injection).
struct ThreadOutside {
    xsave: Vec<u8>,
    debugregs: [u64; 6],
    tls: Vec<[u32; 4]>,
    rseq: Option<Rseq>,
    robust_list: (u64, u64),
    sched: (i32, i32, i32),
}

fn pending_signals(tid: i32, shared: bool) -> Result<Vec<PendingSignal>> {
    Ok(ptrace::peek_siginfo(tid, shared)?
        .into_iter()
        .map(|si| PendingSignal {
            signo: u32::from_le_bytes(si[0..4].try_into().unwrap_or_default()),
            siginfo: si,
        })
        .collect())
}

fn thread_outside(_pid: i32, tid: i32, _regs: &X86Regs) -> Result<ThreadOutside> {
    let xsave = ptrace::get_xstate(tid, 1 << 16)?;
    let mut debugregs = [0u64; 6];
    for (slot, i) in debugregs.iter_mut().zip(arch::x86::DEBUGREG_INDEXES) {
        *slot = ptrace::peek_user(tid, arch::x86::DEBUGREG_OFFSET + i * 8)?;
    }
    let mut tls = Vec::new();
    for i in arch::x86::TLS_ENTRIES {
        let d = ptrace::get_thread_area(tid, i)?;
        if !arch::x86::tls_entry_is_empty(&d) {
            tls.push(d);
        }
    }
    let (rseq_addr, rseq_len, rseq_sig, rseq_flags) = ptrace::get_rseq(tid)?;
    let rseq = (rseq_addr != 0).then_some(Rseq {
        addr: rseq_addr,
        len: rseq_len,
        flags: rseq_flags,
        signature: rseq_sig,
    });
    Ok(ThreadOutside {
        xsave,
        debugregs,
        tls,
        rseq,
        robust_list: sys::process::robust_list(tid)?,
        sched: sys::process::sched_get(tid)?,
    })
}

/// Credentials belong to each thread; the image keeps one set per process (as a program
/// changing them through libc sets them in every thread). Refuse a process whose threads
/// differ, rather than give them all the leader's.
fn same_creds_in_threads(fr: &Frozen, creds: &Creds, thread_inj: &[ThreadInjected]) -> Result<()> {
    for (t, ti) in fr.threads.iter().zip(thread_inj).skip(1) {
        let theirs = procfs::status(t.tid)?.creds(ti.securebits);
        if theirs != *creds {
            return Err(unsupported(
                fr.pid,
                format!(
                    "thread {} has other credentials (uids, gids, groups, capabilities, \
                     securebits, no_new_privs or seccomp) than the process's first thread; \
                     threads with different credentials are not supported yet",
                    t.tid
                ),
            ));
        }
    }
    Ok(())
}

/// Resident pages from which a process's smaps is read on a thread of its own (see
/// `collect_process`). Measured (collect, medians of 11): 32 MiB 4.1 ms on one thread
/// against 4.5 ms with two, 128 MiB 8.2 against 7.0 ms. (The test
/// `counter_with_64_mib_of_memory`, about 70 MiB resident, takes the thread.)
const SMAPS_THREAD_PAGES: u64 = (64 << 20) / 4096;

/// A process's areas as /proc/PID/maps lists them, without their VmFlags (those come
/// from smaps), with the runs of pages to store.
struct MemoryMap {
    vmas: Vec<Vma>,
    /// The index in the maps list of each of `vmas`.
    entries: Vec<usize>,
    runs: Vec<Run>,
    vdso_hash: u64,
    vdso_size: u64,
    vvar_size: u64,
    /// The first error met, which stopped the listing: returned only after the flags of
    /// `vmas` (which include the area it was met on, if that was classified) are checked.
    failed: Option<DumpError>,
}

/// Classify the areas of `maps` and find the pages of each that go into the image.
fn memory_map(
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
fn refuse_special(pid: i32, vma: &Vma) -> Result<()> {
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

pub(crate) fn collect_process(fr: &mut Frozen, seen: &mut SharedSeen) -> Result<ProcCollected> {
    let pid = fr.pid;
    let mem = RemoteMem::open(pid)?;
    let mut outside = Vec::new();
    for t in &fr.threads {
        outside.push(thread_outside(pid, t.tid, &t.orig_regs)?);
    }
    let (inj, thread_inj) = injected_state(fr, &mem)?;
    // Signals keep arriving while the task is stopped (its timers run on). Pending
    // signals are read after the timers, so that a timer which expired before it was
    // read has its signal in the image.
    let shared_pending = pending_signals(pid, true)?;
    let mut thread_pending = Vec::new();
    for t in &fr.threads {
        thread_pending.push(pending_signals(t.tid, false)?);
    }

    let status = procfs::status(pid)?;
    let stat = procfs::stat(pid)?;
    let creds = status.creds(thread_inj.first().map_or(0, |t| t.securebits));
    same_creds_in_threads(fr, &creds, &thread_inj)?;
    let exe_link = procfs::readlink(&format!("/proc/{pid}/exe"))?;
    let exe = file_id_checked(pid, &format!("/proc/{pid}/exe"), &exe_link, "executable")?;
    let mm = MmInfo {
        start_code: stat.field(26),
        end_code: stat.field(27),
        start_stack: stat.field(28),
        start_data: stat.field(45),
        end_data: stat.field(46),
        start_brk: stat.field(47),
        brk: inj.brk,
        arg_start: stat.field(48),
        arg_end: stat.field(49),
        env_start: stat.field(50),
        env_end: stat.field(51),
        auxv: procfs::auxv(pid)?,
        exe: Some(exe),
    };

    // Memory map. Only /proc/PID/smaps has the VmFlags, and making it walks the page
    // tables of every area (16-24 ms per GiB resident here). In a big process a second
    // thread reads it while this one reads /proc/PID/maps (no walk), finds the pages to
    // store (PAGEMAP_SCAN, the other walk) and reads the descriptors; in a small one,
    // waking the other CPU costs more than that hides, and smaps is the list. Either
    // way it is read only now that the scratch area is gone, so it shows neither that
    // area nor a neighbour the kernel merged it with.
    let on_thread = stat.field(24) >= SMAPS_THREAD_PAGES;
    let pm = procfs::Pagemap::open(pid)?;
    let (mut maps, mut map, fds, smaps) = std::thread::scope(|s| -> Result<_> {
        let reading = on_thread.then(|| s.spawn(move || procfs::smaps(pid)));
        let maps = if on_thread {
            procfs::maps(pid)?
        } else {
            procfs::smaps(pid)?
        };
        let map = memory_map(pid, &mem, &pm, &maps, seen);
        // Held back, like any error of `memory_map`, until the areas' flags are checked.
        let fds = if map.failed.is_none() {
            procfs::fds(pid)
                .map_err(DumpError::from)
                .and_then(|list| list.into_iter().map(|fd| fd_entry(pid, fd)).collect())
        } else {
            Ok(Vec::new())
        };
        let smaps = reading.map(|r| {
            r.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        Ok((maps, map, fds, smaps))
    })?;
    if let Some(smaps) = smaps {
        // Both lists describe the same stopped process: they must agree.
        procfs::merge_vmflags(pid, &mut maps, smaps?)?;
    }
    for (vma, &i) in map.vmas.iter_mut().zip(&map.entries) {
        if let Some(m) = maps.get_mut(i) {
            vma.vmflags = std::mem::take(&mut m.vmflags);
        }
    }
    // In the order they were met, as if each area's flags were checked right after it
    // was classified: a special area is refused by name even if something later failed.
    for vma in &map.vmas {
        refuse_special(pid, vma)?;
    }
    if let Some(e) = map.failed {
        return Err(e);
    }
    let fds = fds?;
    let MemoryMap {
        vmas,
        runs,
        vdso_hash,
        vdso_size,
        vvar_size,
        ..
    } = map;

    let mut threads = Vec::new();
    for (((t, o), ti), pending) in fr
        .threads
        .iter()
        .zip(outside)
        .zip(thread_inj)
        .zip(thread_pending)
    {
        let mut image_regs = t.orig_regs;
        rseq_fixup(&mem, &o.rseq, &mut image_regs)?;
        threads.push(Thread {
            tid: t.tid,
            arch: ThreadArchState {
                regs: image_regs,
                xsave: o.xsave,
                debugregs: o.debugregs,
                tls: o.tls,
            },
            sigmask: t.orig_sigmask,
            sigaltstack: ti.altstack,
            rseq: o.rseq,
            robust_list: ti.robust32.unwrap_or(o.robust_list).0,
            robust_list_len: ti.robust32.unwrap_or(o.robust_list).1,
            clear_child_tid: ti.clear_child_tid,
            pending,
            sched_policy: o.sched.0,
            sched_priority: o.sched.1,
            nice: o.sched.2,
        });
    }
    let process = Process {
        pid,
        ppid: stat.field(4) as i32,
        pgid: stat.field(5) as i32,
        sid: stat.field(6) as i32,
        comm: stat.comm.clone(),
        cwd: procfs::readlink(&format!("/proc/{pid}/cwd"))?,
        root: procfs::readlink(&format!("/proc/{pid}/root"))?,
        umask: status.umask,
        personality: procfs::personality(pid)?,
        creds,
        rlimits: inj.rlimits,
        misc: ProcMisc {
            pdeathsig: inj.pdeathsig,
            dumpable: inj.dumpable,
            child_subreaper: inj.child_subreaper,
            timerslack_ns: procfs::timerslack_ns(pid)?,
        },
        mm,
        vmas,
        fds,
        sigactions: inj.sigactions,
        shared_pending,
        threads,
        vdso_hash: 0,
        vdso_size: 0,
        itimers: inj.itimers,
        posix_timers: inj.posix_timers,
        exit_status: None,
    };
    let vdso = (vdso_size != 0).then_some((vdso_hash, vdso_size, vvar_size));
    let mut process = process;
    process.vdso_hash = vdso_hash;
    process.vdso_size = vdso_size;
    Ok(ProcCollected {
        process,
        xcomp_perm: inj.xcomp_perm,
        runs,
        vdso,
    })
}

/// A zombie of the tree: only its IDs and the status its parent will collect.
pub(crate) fn zombie_process(pid: i32) -> Result<Process> {
    let stat = procfs::stat(pid)?;
    Ok(Process {
        pid,
        ppid: stat.field(4) as i32,
        pgid: stat.field(5) as i32,
        sid: stat.field(6) as i32,
        comm: stat.comm.clone(),
        exit_status: Some(stat.field(52) as i32),
        ..Default::default()
    })
}

/// The image metadata for a collected tree (`procs` in tree order, root first).
pub(crate) fn assemble(root: i32, procs: Vec<ProcCollected>) -> Result<Collected> {
    let (hostname, kernel) = sys::process::uname();
    let threads: Vec<&ThreadArchState> = procs
        .iter()
        .flat_map(|p| p.process.threads.iter().map(|t| &t.arch))
        .collect();
    // The header records the dump host's real CPU (unmasked): the tasks may have relied on
    // any of it.
    let mut arch_hdr = arch::build_arch_header(&threads, &arch::HostCaps::detect());
    arch_hdr.xcomp_perm = procs.iter().fold(0, |a, p| a | p.xcomp_perm);
    // The header names the root's vDSO; each process records its own (a mixed tree
    // has a 64-bit and a 32-bit one).
    if let Some((hash, size, vvar)) = procs.first().and_then(|p| p.vdso) {
        arch_hdr.vdso_hash = hash;
        arch_hdr.vdso_size = size;
        arch_hdr.vvar_size = vvar;
    }
    let mut processes = Vec::new();
    let mut runs = Vec::new();
    for ProcCollected {
        process, runs: r, ..
    } in procs
    {
        if !process.is_zombie() {
            runs.push((process.pid, r));
        }
        processes.push(process);
    }
    let ckpt = Checkpoint {
        info: ImageInfo {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hostname,
            kernel_release: kernel,
            root_pid: root,
        },
        arch: arch_hdr,
        processes,
        pipes: Vec::new(),
        socketpairs: Vec::new(),
        own_pid_namespace: false,
        fifos: Vec::new(),
    };
    Ok(Collected {
        ckpt,
        runs,
        host_pids: Default::default(),
    })
}

/// Find descriptors that share an open file description with an earlier one in the
/// image (kcmp), so restore opens each description once.
pub(crate) fn link_shared_fds(procs: &mut [ProcCollected]) -> Result<()> {
    use std::collections::BTreeMap;
    fn key(k: &FdKind) -> Option<(u8, u64, u64)> {
        match k {
            FdKind::File { file, .. }
            | FdKind::Dir { file, .. }
            | FdKind::Device { file, .. }
            | FdKind::Fifo { file, .. } => Some((0, file.dev, file.ino)),
            FdKind::Pipe { id, write, .. } => Some((1, *id, u64::from(*write))),
            // Anonymous-inode files all share one inode: compare every pair of a kind.
            FdKind::EventFd { .. } => Some((2, 0, 0)),
            FdKind::TimerFd { .. } => Some((2, 1, 0)),
            FdKind::SignalFd { .. } => Some((2, 2, 0)),
            FdKind::Epoll { .. } => Some((2, 3, 0)),
            FdKind::UnixPair { id, end, .. } => Some((3, *id, u64::from(*end))),
            FdKind::UnixListen { .. } => Some((2, 4, 0)),
            FdKind::TcpListen { .. } => Some((2, 5, 0)),
            FdKind::TcpConn { .. } => Some((2, 6, 0)),
            FdKind::Inotify { .. } => Some((2, 7, 0)),
            FdKind::Udp { .. } => Some((2, 8, 0)),
            FdKind::UnixDgram { .. } => Some((2, 9, 0)),
            FdKind::Memfd { data, .. } | FdKind::DeletedFile { data, .. } => Some((4, *data, 0)),
            FdKind::Inherited { .. } | FdKind::External { .. } => None,
        }
    }
    let mut seen: BTreeMap<(u8, u64, u64), Vec<(i32, i32)>> = BTreeMap::new();
    for p in procs.iter_mut() {
        let pid = p.process.pid;
        for f in p.process.fds.iter_mut() {
            let Some(k) = key(&f.kind) else { continue };
            let earlier = seen.entry(k).or_default();
            for &(q, qfd) in earlier.iter() {
                if sys::process::same_file_description(pid, f.fd, q, qfd)? {
                    f.shared_with = Some((q, qfd));
                    break;
                }
            }
            if f.shared_with.is_none() {
                earlier.push((pid, f.fd));
            }
        }
    }
    Ok(())
}

/// Memfds and deleted files are kept in the image under their inode number: refuse two
/// different files (a memfd and a deleted file, or deleted files of two file systems)
/// that have the same one, rather than give them one content at restore.
pub(crate) fn check_kept_files(procs: &[ProcCollected]) -> Result<()> {
    // data id -> (file system: 0 for memfds, else the device), where first seen
    let mut seen: std::collections::BTreeMap<u64, (u64, i32)> = Default::default();
    for p in procs {
        let pid = p.process.pid;
        let fds = p.process.fds.iter().filter_map(|f| match &f.kind {
            FdKind::Memfd { data, .. } => Some((*data, 0)),
            FdKind::DeletedFile { data, file, .. } => Some((*data, file.dev.max(1))),
            _ => None,
        });
        let maps = p.process.vmas.iter().filter_map(|v| match &v.kind {
            VmaKind::MemfdMap { data, .. } => Some((*data, 0)),
            VmaKind::DeletedMap { data, file } => Some((*data, file.dev.max(1))),
            _ => None,
        });
        for (data, fs) in fds.chain(maps) {
            let (first, by) = *seen.entry(data).or_insert((fs, pid));
            if first != fs {
                return Err(unsupported(
                    pid,
                    format!(
                        "it and process {by} hold two different memfds or deleted files \
                         with the same inode number {data}; not supported yet"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Pipes: one whose two ends are both in the tree is kept, with the data in it (read
/// without consuming it); an end whose other end is outside is a standard descriptor
/// connected at restore to ckpt's own (0-2), or refused.
pub(crate) fn resolve_pipes(
    procs: &mut [ProcCollected],
    external: bool,
) -> Result<Vec<crate::model::PipeState>> {
    use std::collections::BTreeMap;
    // id -> (a read end (pid, fd), has write end)
    let mut ends: BTreeMap<u64, (Option<(i32, i32)>, bool)> = BTreeMap::new();
    for p in procs.iter() {
        for f in &p.process.fds {
            if let FdKind::Pipe { id, write, .. } = f.kind {
                let e = ends.entry(id).or_default();
                if write {
                    e.1 = true;
                } else if e.0.is_none() {
                    e.0 = Some((p.process.pid, f.fd));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (&id, &(reader, has_writer)) in &ends {
        if let (Some((pid, fd)), true) = (reader, has_writer) {
            let rd = sys::process::steal_fd(pid, fd)?;
            let (capacity, data) = sys::process::peek_pipe(&rd)?;
            out.push(crate::model::PipeState { id, capacity, data });
        }
    }
    for p in procs.iter_mut() {
        let pid = p.process.pid;
        for f in p.process.fds.iter_mut() {
            if let FdKind::Pipe { id, flags, .. } = f.kind {
                if out.iter().any(|s| s.id == id) {
                    continue;
                }
                if f.fd > 2 && external {
                    f.kind = FdKind::External {
                        key: format!("pipe:[{id}]"),
                        flags,
                    };
                    f.shared_with = None;
                    continue;
                }
                if f.fd > 2 {
                    return Err(unsupported(
                        pid,
                        format!(
                            "file descriptor {} is a pipe (pipe:[{id}]) to a process outside \
                             the dumped tree; dump the tree that holds both ends, or record \
                             it as external with --external (restore then needs \
                             --inherit-fd {}:pipe:[{id}])",
                            f.fd, f.fd
                        ),
                    ));
                }
                f.kind = FdKind::Inherited {
                    what: format!("pipe:[{id}]"),
                    flags,
                    tty: None,
                };
                f.shared_with = None;
            }
        }
    }
    Ok(out)
}

/// Sockets: unix socket pairs with both ends in the tree (and the data queued in each
/// direction, peeked without consuming it) and listening unix sockets are kept; a socket
/// leading outside is a standard descriptor connected at restore to ckpt's own (0-2), or
/// refused, naming it.
pub(crate) fn resolve_sockets(
    procs: &mut [ProcCollected],
    repair: &mut Vec<std::os::fd::OwnedFd>,
    external: bool,
) -> Result<Vec<crate::model::SocketPairState>> {
    use crate::sys::sockdiag::{self, STATE_ESTABLISHED, STATE_LISTEN};
    fn ino_of(k: &FdKind) -> Option<u64> {
        match k {
            FdKind::Inherited { what, .. } => what
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok()),
            _ => None,
        }
    }
    let any = procs
        .iter()
        .any(|p| p.process.fds.iter().any(|f| ino_of(&f.kind).is_some()));
    if !any {
        return Ok(Vec::new());
    }
    let diag = sockdiag::unix_sockets()?;
    // Where each socket inode is held: (pid, fd).
    let mut held: std::collections::BTreeMap<u64, (i32, i32)> = Default::default();
    for p in procs.iter() {
        for f in &p.process.fds {
            if let Some(ino) = ino_of(&f.kind) {
                held.entry(ino).or_insert((p.process.pid, f.fd));
            }
        }
    }
    let mut pairs: Vec<crate::model::SocketPairState> = Vec::new();
    for p in procs.iter_mut() {
        let pid = p.process.pid;
        for f in p.process.fds.iter_mut() {
            let Some(ino) = ino_of(&f.kind) else { continue };
            let FdKind::Inherited { flags, .. } = f.kind else {
                continue;
            };
            let refuse = |what: &str| {
                unsupported(
                    pid,
                    format!(
                        "file descriptor {} is {what} (socket:[{ino}]); not supported yet",
                        f.fd
                    ),
                )
            };
            let Some(s) = diag.get(&ino) else {
                // TCP: read with TCP_REPAIR through a duplicate that stays open (in
                // repair mode) until the process is released, so that its death sends
                // nothing to the peer.
                let dup = sys::process::steal_fd(pid, f.fd)?;
                match sys::tcp::inspect(&dup)? {
                    sys::tcp::TcpSock::Listen {
                        family,
                        addr,
                        backlog,
                        pending,
                        reuseaddr,
                        v6only,
                    } => {
                        if pending != 0 {
                            return Err(refuse(
                                "a listening TCP socket with connections waiting to be accepted",
                            ));
                        }
                        f.kind = FdKind::TcpListen {
                            family,
                            addr,
                            backlog,
                            reuseaddr,
                            v6only,
                            flags,
                        };
                    }
                    sys::tcp::TcpSock::Established(c) => {
                        f.kind = FdKind::TcpConn {
                            conn: Box::new(crate::model::TcpState {
                                family: c.family,
                                local: c.local,
                                peer: c.peer,
                                snd_seq: c.snd_seq,
                                rcv_seq: c.rcv_seq,
                                sndq: c.sndq,
                                rcvq: c.rcvq,
                                mss: c.mss,
                                snd_wscale: c.snd_wscale,
                                rcv_wscale: c.rcv_wscale,
                                sack: c.sack,
                                timestamps: c.timestamps,
                                tsval: c.tsval,
                                window: c.window,
                                nodelay: c.nodelay,
                            }),
                            flags,
                        };
                        repair.push(dup);
                    }
                    sys::tcp::TcpSock::Other(state) => {
                        if f.fd > 2 {
                            return Err(refuse(&format!(
                                "a TCP socket in state {state} (neither listening nor established)"
                            )));
                        }
                    }
                    sys::tcp::TcpSock::NotTcp => {
                        if let Some(u) = sys::udp::inspect(&dup)? {
                            let msgs = peek_messages(&dup).map_err(|e| match e {
                                sockdiag::PeekError::Sys(e) => DumpError::Sys(e),
                                e => refuse(&peek_refusal(&e, "UDP socket")),
                            })?;
                            if msgs.iter().any(|m| m.data.len() > sys::udp::MAX_DATAGRAM) {
                                return Err(refuse("a UDP socket with an oversized datagram"));
                            }
                            f.kind = FdKind::Udp {
                                sock: Box::new(crate::model::UdpState {
                                    family: u.family,
                                    local: u.local,
                                    peer: u.peer,
                                    v6only: u.v6only,
                                    opts: crate::model::SockOpts {
                                        sndbuf: u.opts.sndbuf,
                                        rcvbuf: u.opts.rcvbuf,
                                        passcred: false,
                                        reuseaddr: u.opts.reuseaddr,
                                        reuseport: u.opts.reuseport,
                                    },
                                    msgs,
                                }),
                                flags,
                            };
                        } else if f.fd > 2 {
                            return Err(refuse(&sys::tcp::socket_kind(&dup)?));
                        }
                    }
                }
                continue;
            };
            if s.state == STATE_LISTEN {
                let mut name = s.name.clone().unwrap_or_default();
                // A path name may carry the NUL its binder passed in the address length.
                if name.first() == Some(&b'/') {
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                }
                if name.is_empty() || !(name[0] == 0 || name[0] == b'/') {
                    return Err(refuse("a listening unix socket without an absolute name"));
                }
                if s.rqueue != 0 {
                    return Err(refuse(
                        "a listening unix socket with connections waiting to be accepted",
                    ));
                }
                f.kind = FdKind::UnixListen {
                    name,
                    typ: s.typ,
                    backlog: s.wqueue,
                    flags,
                };
                continue;
            }
            if s.typ == libc::SOCK_DGRAM {
                let peer = diag.get(&s.peer);
                let anonymous_pair = s.state == STATE_ESTABLISHED
                    && held.contains_key(&s.peer)
                    && peer.is_some_and(|p| p.peer == ino && p.name.is_none())
                    && s.name.is_none();
                if !anonymous_pair {
                    if s.peer != 0 && !held.contains_key(&s.peer) {
                        if f.fd <= 2 {
                            continue;
                        }
                        if external {
                            f.kind = FdKind::External {
                                key: format!("socket:[{ino}]"),
                                flags,
                            };
                            continue;
                        }
                        return Err(unsupported(
                            pid,
                            format!(
                                "file descriptor {} is a unix datagram socket \
                                 (socket:[{ino}]) connected outside the dumped tree; not \
                                 supported yet; record it as external with --external \
                                 (restore then needs --inherit-fd {}:socket:[{ino}])",
                                f.fd, f.fd
                            ),
                        ));
                    }
                    f.kind = unix_dgram(s, &diag, &held, flags).map_err(|why| refuse(&why))?;
                    continue;
                }
            }
            let internal = s.state == STATE_ESTABLISHED && held.contains_key(&s.peer);
            if !internal {
                if f.fd <= 2 {
                    continue;
                }
                if external && s.peer != 0 {
                    f.kind = FdKind::External {
                        key: format!("socket:[{ino}]"),
                        flags,
                    };
                    continue;
                }
                return Err(unsupported(
                    pid,
                    format!(
                        "file descriptor {} is a unix socket (socket:[{ino}]) {}; not \
                         supported yet{}",
                        f.fd,
                        if s.peer != 0 {
                            "connected outside the dumped tree"
                        } else {
                            "that is neither connected nor listening"
                        },
                        if s.peer != 0 {
                            format!(
                                "; record it as external with --external (restore then \
                                 needs --inherit-fd {}:socket:[{ino}])",
                                f.fd
                            )
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            let id = ino.min(s.peer);
            let end = u8::from(ino != id);
            if !pairs.iter().any(|x| x.id == id) {
                let peer = diag.get(&s.peer).cloned().unwrap_or_default();
                let (a, b) = if end == 0 {
                    (s.clone(), peer)
                } else {
                    (peer, s.clone())
                };
                let mut st = crate::model::SocketPairState {
                    id,
                    typ: s.typ,
                    ..Default::default()
                };
                for (which, sock) in [(0u8, &a), (1u8, &b)] {
                    let Some(&(hp, hfd)) = held.get(&sock.ino) else {
                        return Err(refuse("a unix socket whose peer vanished during the dump"));
                    };
                    let dup = sys::process::steal_fd(hp, hfd)?;
                    let o = sockdiag::sock_opts(&dup, true)?;
                    st.opts[usize::from(which)] = crate::model::SockOpts {
                        sndbuf: o.sndbuf,
                        rcvbuf: o.rcvbuf,
                        passcred: o.passcred,
                        reuseaddr: false,
                        reuseport: false,
                    };
                    if s.typ == libc::SOCK_STREAM {
                        if sock.rqueue == 0 {
                            continue;
                        }
                        let data = sockdiag::peek_stream(&dup, sock.rqueue as usize)?;
                        if which == 0 {
                            st.data0 = data;
                        } else {
                            st.data1 = data;
                        }
                    } else {
                        // For datagrams sock_diag reports only the first message's length
                        // (0 for an empty one): always look at the whole queue.
                        let msgs = peek_messages(&dup).map_err(|e| match e {
                            sockdiag::PeekError::Sys(e) => DumpError::Sys(e),
                            e => refuse(&peek_refusal(&e, "unix socket")),
                        })?;
                        if which == 0 {
                            st.msgs0 = msgs;
                        } else {
                            st.msgs1 = msgs;
                        }
                    }
                }
                pairs.push(st);
            }
            f.kind = FdKind::UnixPair { id, end, flags };
        }
    }
    Ok(pairs)
}

/// FIFOs: the pipe behind each FIFO that processes of the tree hold open, with its
/// capacity and the data in it (read without consuming it, through a read-only
/// descriptor ckpt opens on the same pipe). A FIFO also open outside the tree is
/// refused: restore could not give both sides the same pipe again.
pub(crate) fn resolve_fifos(procs: &[ProcCollected]) -> Result<Vec<crate::model::FifoState>> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::OpenOptionsExt;
    // id -> (dev, first holder (pid, fd), path)
    let mut fifos: BTreeMap<u64, (u64, i32, i32, Vec<u8>)> = BTreeMap::new();
    for p in procs {
        for f in &p.process.fds {
            if let FdKind::Fifo { file, id, .. } = &f.kind {
                let e =
                    fifos
                        .entry(*id)
                        .or_insert((file.dev, p.process.pid, f.fd, file.path.clone()));
                if e.0 != file.dev {
                    return Err(unsupported(
                        p.process.pid,
                        format!(
                            "file descriptor {} is a FIFO ({}) whose inode number is also that \
                             of another FIFO of the tree; not supported",
                            f.fd,
                            String::from_utf8_lossy(&file.path)
                        ),
                    ));
                }
            }
        }
    }
    if fifos.is_empty() {
        return Ok(Vec::new());
    }
    let tree: Vec<i32> = procs.iter().map(|p| p.process.pid).collect();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for (id, (dev, pid, fd, path)) in fifos {
        if let Some(other) = procfs::holders_of(dev, id)
            .into_iter()
            .find(|q| !tree.contains(q) && *q != me)
        {
            return Err(unsupported(
                pid,
                format!(
                    "file descriptor {fd} is a FIFO ({}) that process {other} outside the \
                     dumped tree has open too; dump the tree that holds all its ends",
                    String::from_utf8_lossy(&path)
                ),
            ));
        }
        // A read-only, non-blocking open of the same pipe (never blocks, even without a
        // writer), whatever the mode of the tree's descriptor.
        let link = format!("/proc/{pid}/fd/{fd}");
        let rd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&link)
            .map_err(|e| sys::SysError::io(format!("open FIFO {link} to read its buffer"), e))?;
        let (capacity, data) = sys::process::peek_pipe(&std::os::fd::OwnedFd::from(rd))?;
        out.push(crate::model::FifoState { id, capacity, data });
    }
    Ok(out)
}

/// The messages queued on a socket, in the model's terms.
fn peek_messages(
    dup: &std::os::fd::OwnedFd,
) -> std::result::Result<Vec<crate::model::SockMessage>, sys::sockdiag::PeekError> {
    Ok(sys::sockdiag::peek_messages(dup)?
        .into_iter()
        .map(|m| crate::model::SockMessage {
            from: m.from,
            data: m.data,
        })
        .collect())
}

/// Why a socket's queued messages cannot be kept, for a refusal naming its descriptor.
fn peek_refusal(e: &sys::sockdiag::PeekError, what: &str) -> String {
    match e {
        sys::sockdiag::PeekError::Descriptors => {
            format!("a {what} with a queued message that carries descriptors (SCM_RIGHTS)")
        }
        sys::sockdiag::PeekError::TooLarge => format!(
            "a {what} with a queued message over {} KiB or over {} messages queued",
            sys::sockdiag::MAX_MESSAGE >> 10,
            sys::sockdiag::MAX_MESSAGES
        ),
        sys::sockdiag::PeekError::Sys(e) => format!("a {what} whose queue cannot be read ({e})"),
    }
}

/// A unix socket name as bound: a path loses the NULs its binder may have passed in the
/// address length; an abstract name (starting with NUL) is kept whole.
fn unix_name(name: &[u8]) -> Vec<u8> {
    let mut n = name.to_vec();
    if n.first() != Some(&0) {
        while n.last() == Some(&0) {
            n.pop();
        }
    }
    n
}

/// A unix datagram socket that is not one end of an anonymous pair, with its queued
/// messages, each of which restore must be able to send again from the same sender: a
/// named socket of the tree (by its name), or an unnamed one (to a named receiver). Any
/// other case is refused (the reason is returned).
fn unix_dgram(
    s: &sys::sockdiag::UnixSock,
    diag: &std::collections::BTreeMap<u64, sys::sockdiag::UnixSock>,
    held: &std::collections::BTreeMap<u64, (i32, i32)>,
    flags: u32,
) -> std::result::Result<FdKind, String> {
    let name = unix_name(s.name.as_deref().unwrap_or_default());
    let peer_name = match diag.get(&s.peer) {
        Some(p) if s.peer != 0 => {
            let n = unix_name(p.name.as_deref().unwrap_or_default());
            if n.is_empty() {
                return Err("a unix datagram socket connected to an unnamed socket".into());
            }
            n
        }
        _ => Vec::new(),
    };
    let (hp, hfd) = *held
        .get(&s.ino)
        .ok_or_else(|| "a unix socket that vanished during the dump".to_string())?;
    let dup = sys::process::steal_fd(hp, hfd).map_err(|e| e.to_string())?;
    let opts = sys::sockdiag::sock_opts(&dup, true).map_err(|e| e.to_string())?;
    let mut msgs = peek_messages(&dup).map_err(|e| peek_refusal(&e, "unix datagram socket"))?;
    // Names of the tree's bound sockets, which can send again at restore.
    let in_tree = |n: &[u8]| {
        diag.values().any(|d| {
            held.contains_key(&d.ino) && unix_name(d.name.as_deref().unwrap_or_default()) == n
        })
    };
    for m in msgs.iter_mut() {
        // recvmsg gives a sockaddr_un: the family, then the name.
        m.from = unix_name(m.from.get(2..).unwrap_or_default());
        if !peer_name.is_empty() && m.from != peer_name {
            return Err(
                "a connected unix datagram socket with a message queued from another \
                 socket than its peer"
                    .into(),
            );
        }
        if name.is_empty() {
            return Err("an unnamed, unconnected unix datagram socket with queued messages".into());
        }
        if !m.from.is_empty() && !in_tree(&m.from) {
            return Err(
                "a unix datagram socket with a message queued from a socket outside the \
                 dumped tree"
                    .into(),
            );
        }
    }
    Ok(FdKind::UnixDgram {
        sock: Box::new(crate::model::UnixDgramState {
            name,
            peer_name,
            opts: crate::model::SockOpts {
                sndbuf: opts.sndbuf,
                rcvbuf: opts.rcvbuf,
                passcred: opts.passcred,
                reuseaddr: false,
                reuseport: false,
            },
            msgs,
        }),
        flags,
    })
}
