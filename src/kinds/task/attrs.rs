//! Process attributes: resource limits, prctl state, personality, the mm fields
//! (PR_SET_MM_MAP), working directory and root.

use super::query::{slot_bytes, word};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult, fault_point};
use crate::kinds::check;
use crate::kinds::fd::file::FileData;
use crate::kinds::fd::file::file_id_checked;
use crate::kinds::fd::held::open_held;
use crate::kinds::task::creds::RLIMIT_NAMES;
use crate::kinds::task::signals;
use crate::kinds::task::threads::{thread_attr_calls, thread_sched};
use crate::model::Process;
use crate::model::{MmInfo, Rlimit};
use crate::remote::{BatchArgs, Ctx, Prctl};
use crate::sys;
use crate::sys::inject::Call;
use crate::sys::proc as procfs;
use crate::sys::proc::Stat;
use std::collections::BTreeSet;

// ---- collect (dump) ----

/// Resource limits the kernel has (RLIMIT_CPU = 0 .. RLIMIT_RTTIME = 15).
pub(crate) const RLIM_NLIMITS: u32 = 16;

/// The prctl state, brk and the xsave permissions, asked by the process: its
/// parent-death signal into `slot(first)`, whether it is a child subreaper into
/// `slot(first + 1)`, its ARCH_GET_XCOMP_PERM into `slot(first + 2)`; the dumpable flag,
/// brk and the THP-disable flags (the last call, [`thp_disable`]) are results of their
/// calls.
pub(crate) fn prctl_calls(first: usize, slot: &dyn Fn(usize) -> u64) -> [Call; 6] {
    // Which dynamically enabled xsave components (AMX) the process asked for; an older
    // kernel does not know the call.
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    let n = first;
    [
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
        Call::new(
            "prctl(PR_GET_THP_DISABLE)",
            nr::PRCTL,
            [libc::PR_GET_THP_DISABLE as u64, 0, 0, 0, 0, 0],
        ),
    ]
}

/// `PR_THP_DISABLE_EXCEPT_ADVISED` (Linux 6.18; libc does not have it): THP disabled
/// but where madvise(MADV_HUGEPAGE) asks for them.
pub(crate) const PR_THP_DISABLE_EXCEPT_ADVISED: u32 = 1 << 1;

/// The THP-disable flags from what PR_GET_THP_DISABLE returned (`ret`): 0, 1, or 1 with
/// [`PR_THP_DISABLE_EXCEPT_ADVISED`]; anything else is a kernel ckpt does not know.
pub(crate) fn thp_disable(ret: i64) -> DumpResult<u32> {
    match u32::try_from(ret) {
        Ok(v @ (0 | 1)) => Ok(v),
        Ok(v) if v == 1 | PR_THP_DISABLE_EXCEPT_ADVISED => Ok(v),
        _ => Err(crate::error::DumpError::Sys(sys::SysError::Other(format!(
            "prctl(PR_GET_THP_DISABLE) returned {ret}, which ckpt does not know"
        )))),
    }
}

/// One `prlimit64` query per resource, limit `resource` into `slot(first + resource)`.
pub(crate) fn rlimit_calls(first: usize, slot: &dyn Fn(usize) -> u64) -> Vec<Call> {
    // Resource limits, asked by the process about itself: prlimit(PID) from outside
    // needs CAP_SYS_RESOURCE for a process of another user, which even root may lack.
    (0..RLIM_NLIMITS)
        .map(|resource| {
            Call::new(
                "prlimit64",
                nr::PRLIMIT64,
                [
                    0,
                    u64::from(resource),
                    0,
                    slot(first + resource as usize),
                    0,
                    0,
                ],
            )
        })
        .collect()
}

/// The resource limits [`rlimit_calls`] read, from the queries' results `b`.
pub(crate) fn rlimits(b: &[u8], first: usize) -> Vec<Rlimit> {
    (0..RLIM_NLIMITS)
        .map(|resource| {
            let w = slot_bytes(b, first + resource as usize);
            Rlimit {
                resource,
                cur: word(w, 0),
                max: word(w, 1),
            }
        })
        .collect()
}

/// The mm fields of process `pid` (/proc/PID/stat `stat`, its auxv and executable, which
/// must still be found under its path), with `brk` as the process told it.
pub(crate) fn mm_info(pid: i32, stat: &Stat, brk: u64) -> DumpResult<MmInfo> {
    let exe_link = procfs::readlink(&format!("/proc/{pid}/exe"))?;
    let exe = file_id_checked(pid, &format!("/proc/{pid}/exe"), &exe_link, "executable")?;
    Ok(MmInfo {
        start_code: stat.field(26),
        end_code: stat.field(27),
        start_stack: stat.field(28),
        start_data: stat.field(45),
        end_data: stat.field(46),
        start_brk: stat.field(47),
        brk,
        arg_start: stat.field(48),
        arg_end: stat.field(49),
        env_start: stat.field(50),
        env_end: stat.field(51),
        auxv: procfs::auxv(pid)?,
        exe: Some(exe),
    })
}

// ---- checks (plan) ----

/// Resource limits: known resources, each once, soft below hard.
pub(crate) fn check_rlimits(proc_: &Process, problems: &mut Vec<Problem>) {
    let mut resources = BTreeSet::new();
    for r in &proc_.rlimits {
        if r.resource as usize >= RLIMIT_NAMES.len()
            || !resources.insert(r.resource)
            || r.cur > r.max
        {
            check::p(
                problems,
                "malformed",
                format!(
                    "process {}: invalid resource limit {} ({}/{})",
                    proc_.pid, r.resource, r.cur, r.max
                ),
            );
        }
    }
}

/// The OOM score adjustment is one the kernel takes, the THP-disable flags ones it
/// gives.
pub(crate) fn check_oom_thp(proc_: &Process, problems: &mut Vec<Problem>) {
    let m = &proc_.misc;
    if let Some(v) = m.oom_score_adj {
        if !(-1000..=1000).contains(&v) {
            check::p(
                problems,
                "malformed",
                format!("process {}: invalid oom_score_adj {v}", proc_.pid),
            );
        }
    }
    if !matches!(m.thp_disable, 0 | 1) && m.thp_disable != 1 | PR_THP_DISABLE_EXCEPT_ADVISED {
        check::p(
            problems,
            "malformed",
            format!(
                "process {}: invalid THP-disable flags {}",
                proc_.pid, m.thp_disable
            ),
        );
    }
}

/// Address randomization: a restored process inherits ckpt's `PF_RANDOMIZE` (only an
/// exec sets it), and ckpt restore runs itself again with or without ADDR_NO_RANDOMIZE
/// to give the tree the image's (see `restore::randomization`); so every process of the
/// image must have had the same, and one that had it needs a host that randomizes
/// (`host_randomizes`: kernel.randomize_va_space is not 0).
pub(crate) fn check_randomization(
    procs: &[Process],
    host_randomizes: bool,
    problems: &mut Vec<Problem>,
) {
    let mut recorded = procs.iter().filter_map(|p| p.randomized.map(|r| (p, r)));
    let Some((first, want)) = recorded.next() else {
        return;
    };
    if let Some((other, _)) = recorded.find(|(_, r)| *r != want) {
        let (on, off) = if want { (first, other) } else { (other, first) };
        check::p(
            problems,
            "unsupported",
            format!(
                "process {} ran with address randomization and process {} without it \
                 (ADDR_NO_RANDOMIZE, e.g. `setarch -R`, when it executed its program): \
                 restored processes all get the one ckpt restore runs with",
                on.pid, off.pid
            ),
        );
    } else if want && !host_randomizes {
        check::p(
            problems,
            "unsupported",
            format!(
                "process {} ran with address randomization, which this host turns off \
                 (kernel.randomize_va_space is 0): set it to 2 to restore it",
                first.pid
            ),
        );
    }
}

/// What restore_attrs sets that the kernel would refuse or take for something else: a
/// parent-death signal that is no signal (PR_SET_PDEATHSIG: EINVAL), a personality of
/// 0xffffffff (personality() would only query it), a umask beyond 0777 (cut off).
pub(crate) fn check_prctl(proc_: &Process, problems: &mut Vec<Problem>) {
    let m = &proc_.misc;
    let mut bad = Vec::new();
    if !(0..=64).contains(&m.pdeathsig) {
        bad.push(format!("parent-death signal {}", m.pdeathsig));
    }
    if proc_.personality == u32::MAX {
        bad.push(format!("personality {:#x}", proc_.personality));
    }
    if proc_.umask & !0o777 != 0 {
        bad.push(format!("umask {:o}", proc_.umask));
    }
    for b in bad {
        check::p(
            problems,
            "malformed",
            format!(
                "process {}: invalid {b}; the kernel would not set it",
                proc_.pid
            ),
        );
    }
}

/// The lowest address a mapping may have here (`/proc/sys/vm/mmap_min_addr`; 0 if it
/// cannot be read).
pub(crate) fn mmap_min_addr() -> u64 {
    static V: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The mm fields PR_SET_MM_MAP sets at stage are ones it takes: code, data, brk,
/// arguments and environment each a range in order (code not empty), every address at
/// or above `mmap_min` and below the task size (EINVAL otherwise).
pub(crate) fn check_mm(proc_: &Process, mmap_min: u64, problems: &mut Vec<Problem>) {
    let m = &proc_.mm;
    let ranges = [
        ("code", m.start_code, m.end_code, false),
        ("data", m.start_data, m.end_data, true),
        ("brk", m.start_brk, m.brk, true),
        ("arguments", m.arg_start, m.arg_end, true),
        ("environment", m.env_start, m.env_end, true),
    ];
    let mut bad: Vec<String> = ranges
        .iter()
        .filter(|(_, a, b, empty_ok)| if *empty_ok { a > b } else { a >= b })
        .map(|(what, a, b, _)| format!("its {what} range {a:#x}-{b:#x} is inverted"))
        .collect();
    let addrs = [
        m.start_code,
        m.end_code,
        m.start_data,
        m.end_data,
        m.start_stack,
        m.start_brk,
        m.brk,
        m.arg_start,
        m.arg_end,
        m.env_start,
        m.env_end,
    ];
    if let Some(a) = addrs
        .iter()
        .find(|&&a| a < mmap_min || a >= crate::kinds::mem::TASK_SIZE)
    {
        bad.push(format!(
            "its memory layout field {a:#x} lies outside {mmap_min:#x}-{:#x}",
            crate::kinds::mem::TASK_SIZE
        ));
    }
    for b in bad {
        check::p(
            problems,
            "malformed",
            format!(
                "process {}: {b}; prctl(PR_SET_MM_MAP) would refuse it",
                proc_.pid
            ),
        );
    }
}

/// The auxiliary vector and the process name are of sane size.
pub(crate) fn check_auxv_comm(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.mm.auxv.len() > 128 || proc_.comm.len() > 64 || proc_.comm.contains(&0) {
        check::p(problems, "malformed", "invalid auxv or process name".into());
    }
}

/// The process's root and working directories exist here (opened once and held for
/// stage); one that was removed can be made again for an instant under its name (its
/// parent exists, the name is free).
pub(crate) fn check_dirs(
    held: &mut crate::kinds::fd::file::HeldFiles,
    proc_: &Process,
    problems: &mut Vec<Problem>,
) {
    let holder = format!("process {}", proc_.pid);
    for (path, removed, what) in [
        (&proc_.root, &proc_.root_removed, "root directory"),
        (&proc_.cwd, &proc_.cwd_removed, "working directory"),
    ] {
        match removed {
            Some(file) => crate::kinds::fd::file::check_removed_name(file, what, &holder, problems),
            None => held.check_dir(path, what, problems),
        }
    }
}

// ---- restore (stage) ----

/// The THP-disable flags, before the memory exists (the stub has ckpt's: set whatever
/// they are, so that the memory is filled as the process would have it).
pub(crate) fn set_thp_disable(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    cx.prctl(Prctl::SetThpDisable(cx.proc_.misc.thp_disable))?;
    Ok(())
}

/// The mm fields and the exe link (the executable plan held, `files.held`).
pub(crate) fn set_mm(cx: &mut Ctx<'_>, files: &FileData) -> RestoreResult<()> {
    let mm = &cx.proc_.mm;
    let exe_fd = match &mm.exe {
        Some(exe) => held_one(cx, files, &exe.path, libc::O_RDONLY | libc::O_CLOEXEC)?,
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
        cx.close(exe_fd)?;
    }
    Ok(())
}

/// The process's attributes: umask, personality, name, prctl state, signal
/// dispositions, the main thread's state, resource limits (pending signals come once the
/// threads exist: `signals::queue_pending`).
pub(crate) fn restore_attrs(cx: &mut Ctx<'_>) -> RestoreResult<()> {
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
    signals::sigaction_calls(cx, &mut args, &mut calls)?;
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
    thread_sched(&proc_.threads[0])?;
    for r in &proc_.rlimits {
        fault_point("set resource limits")?;
        sys::process::prlimit_set(proc_.pid, r.resource, r.cur, r.max)?;
    }
    set_oom_score_adj(proc_)
}

/// The OOM score adjustment, written by ckpt (lowering it needs CAP_SYS_RESOURCE, which
/// the stub has no more once its credentials change). Not recorded in older images: left
/// as the stub has it.
fn set_oom_score_adj(proc_: &Process) -> RestoreResult<()> {
    let Some(v) = proc_.misc.oom_score_adj else {
        return Ok(());
    };
    fault_point("set oom_score_adj")?;
    if procfs::oom_score_adj(proc_.pid)? != v {
        sys::process::set_oom_score_adj(proc_.pid, v)?;
    }
    Ok(())
}

/// The file plan held for `path`, opened in the stub with `flags`.
fn held_one(cx: &mut Ctx<'_>, files: &FileData, path: &[u8], flags: i32) -> RestoreResult<u64> {
    open_held(cx, &files.held, &[(path, flags)])?
        .first()
        .copied()
        .ok_or_else(|| RestoreError::Stage("no descriptor opened".into()))
}

/// Working directory and root directory, after the descriptors: the directories plan
/// held (`files.held`), never looked up by path again; or, `by_path`, for a process in a
/// mount namespace a process below the root made (`kinds::mnt::below`; its stub is in
/// it), their paths looked up there by the stub (chdir, chroot).
pub(crate) fn set_cwd_root(cx: &mut Ctx<'_>, files: &FileData, by_path: bool) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    if by_path {
        let a = cx.put_cstr(0, &proc_.cwd)?;
        cx.call(
            "chdir (in its mount namespace)",
            nr::CHDIR,
            [a, 0, 0, 0, 0, 0],
        )?;
        if proc_.root != b"/" {
            let a = cx.put_cstr(0, &proc_.root)?;
            cx.call(
                "chroot (in its mount namespace)",
                nr::CHROOT,
                [a, 0, 0, 0, 0, 0],
            )?;
        }
        return Ok(());
    }
    // A removed one was made again for an instant (`file::alias_unlinked`): held under
    // its name " (deleted)".
    let key = |path: &[u8], removed: &Option<crate::model::FileId>| match removed {
        Some(_) => crate::kinds::fd::file::held_key(path, path),
        None => path.to_vec(),
    };
    // Working directory.
    let d = held_one(
        cx,
        files,
        &key(&proc_.cwd, &proc_.cwd_removed),
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
    // chroot takes a path: that of the stub's own descriptor of the held directory
    // (/proc/self/fd/N leads to that inode, whatever the path leads to now).
    if proc_.root != b"/" {
        let r = held_one(
            cx,
            files,
            &key(&proc_.root, &proc_.root_removed),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )?;
        let a = cx.put_cstr(0, format!("/proc/self/fd/{r}").as_bytes())?;
        cx.call("chroot", nr::CHROOT, [a, 0, 0, 0, 0, 0])?;
        cx.close(r)?;
    }
    Ok(())
}
