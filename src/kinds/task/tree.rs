//! The process tree: parents and children, sessions and process groups, zombies,
//! controlling terminals, PID namespaces.

use crate::arch::native::nr;
use crate::arch::{self, ThreadArchState};
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::Checkpoint;
use crate::model::ImageInfo;
use crate::model::Process;
use crate::remote::{Ctx, helper_injector, take_remote_fd};
use crate::sys::inject::Injector;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, proc as procfs};
use std::collections::BTreeMap;

// ---- collect (dump) ----

/// A zombie of the tree: only its IDs and the status its parent will collect.
pub(crate) fn zombie_process(pid: i32) -> DumpResult<Process> {
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

/// The checkpoint of a collected tree (`processes` in tree order, root first): the
/// image metadata and the architecture header, with the xsave components any process
/// was permitted (`xcomp_perm`) and the root's vDSO (hash, size, vvar size).
pub(crate) fn checkpoint(
    root: i32,
    processes: Vec<Process>,
    xcomp_perm: u64,
    root_vdso: Option<(u64, u64, u64)>,
) -> Checkpoint {
    let (hostname, kernel) = sys::process::uname();
    let threads: Vec<&ThreadArchState> = processes
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| &t.arch))
        .collect();
    // The header records the dump host's real CPU (unmasked): the tasks may have relied on
    // any of it.
    let mut arch_hdr = arch::build_arch_header(&threads, &arch::HostCaps::detect());
    arch_hdr.xcomp_perm = xcomp_perm;
    // The header names the root's vDSO; each process records its own (a mixed tree
    // has a 64-bit and a 32-bit one).
    if let Some((hash, size, vvar)) = root_vdso {
        arch_hdr.vdso_hash = hash;
        arch_hdr.vdso_size = size;
        arch_hdr.vvar_size = vvar;
    }
    Checkpoint {
        info: ImageInfo {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hostname,
            kernel_release: kernel,
            root_pid: root,
            boot_id: sys::process::boot_id(),
        },
        arch: arch_hdr,
        processes,
        pipes: Vec::new(),
        socketpairs: Vec::new(),
        own_pid_namespace: false,
        sysv: Default::default(),
        fifos: Vec::new(),
    }
}

/// The ID in the tree's own PID namespace of every process and thread of `processes`
/// (host ID -> namespace ID).
pub(crate) fn namespace_pids(processes: &[Process]) -> DumpResult<BTreeMap<i32, i32>> {
    let mut map = std::collections::BTreeMap::new();
    for p in processes {
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
    Ok(map)
}

/// Every process group of the tree must be one restore can make: led by a process of
/// the tree, or the root's own group led from outside (a shell's job). A group whose
/// leader has exited (and been reaped) lives on through its other members, but a group
/// can only be created by its leader, under the leader's PID: refused here, before
/// anything is killed.
pub(crate) fn check_groups_at_dump(procs: &[Process]) -> DumpResult<()> {
    let Some(root) = procs.first() else {
        return Ok(());
    };
    for q in procs {
        if !group_can_be_made(procs, root, q) {
            let leader = if procfs::stat(q.pgid).is_ok() {
                "is outside the dumped tree"
            } else {
                "has exited"
            };
            return Err(unsupported(
                q.pid,
                format!(
                    "it is in process group {}, whose leader {leader}; restore cannot \
                     create a process group without its leader (dump the tree that holds \
                     the leader, or run the process in a group of its own)",
                    q.pgid
                ),
            ));
        }
    }
    Ok(())
}

/// Whether process `q`'s group is led by a process of the image in its session, or is
/// the root's group led from outside.
fn group_can_be_made(procs: &[Process], root: &Process, q: &Process) -> bool {
    let outside_group = q.pgid == root.pgid && root.pgid != root.pid && q.sid == root.sid;
    outside_group
        || procs
            .iter()
            .any(|l| l.pid == q.pgid && l.pgid == l.pid && l.sid == q.sid)
}

// ---- checks (plan) ----

const MAX_PROCESSES: usize = 1 << 15;

/// The image holds a sane number of processes (false: stop checking), and a tree with a
/// PID namespace of its own has PID 1 at its root.
pub(crate) fn check_root(ckpt: &Checkpoint, problems: &mut Vec<Problem>) -> bool {
    let procs = &ckpt.processes;
    if procs.is_empty() || procs.len() > MAX_PROCESSES {
        check::p(
            problems,
            "malformed",
            format!("the image holds {} processes", procs.len()),
        );
        return false;
    }
    let root = &procs[0];
    if ckpt.own_pid_namespace && root.pid != 1 {
        check::p(
            problems,
            "malformed",
            format!(
                "the tree has a PID namespace of its own but its root is PID {}, not 1",
                root.pid
            ),
        );
    }
    true
}

/// Process `i`'s place in the tree: the root is no zombie and has no parent in the
/// image; any other has a living parent earlier in the image, in its session or leading
/// its own.
pub(crate) fn check_parent(procs: &[Process], i: usize, problems: &mut Vec<Problem>) {
    let q = &procs[i];
    if i == 0 {
        if q.is_zombie() {
            check::p(problems, "malformed", "the root process is a zombie".into());
        }
        if procs.iter().any(|x| x.pid == q.ppid) {
            check::p(
                problems,
                "malformed",
                "the root process has a parent in the image".into(),
            );
        }
        return;
    }
    match procs[..i].iter().find(|x| x.pid == q.ppid) {
        Some(parent) if !parent.is_zombie() => {
            if q.sid != q.pid && q.sid != parent.sid {
                check::p(
                    problems,
                    "malformed",
                    format!("process {} is in another session than its parent", q.pid),
                );
            }
        }
        _ => check::p(
            problems,
            "malformed",
            format!(
                "process {} has no (living) parent earlier in the image",
                q.pid
            ),
        ),
    }
}

/// The process's PID and thread IDs are valid and unique in the image (`ids`), a
/// zombie has no state, the main thread comes first. False for a zombie: nothing else
/// of it to check.
pub(crate) fn check_ids(
    proc_: &Process,
    ids: &mut std::collections::BTreeSet<i32>,
    problems: &mut Vec<Problem>,
) -> bool {
    if proc_.pid <= 0 || !ids.insert(proc_.pid) {
        check::p(problems, "malformed", format!("invalid PID {}", proc_.pid));
    }
    if proc_.is_zombie() {
        if !proc_.threads.is_empty() || !proc_.vmas.is_empty() || !proc_.fds.is_empty() {
            check::p(
                problems,
                "malformed",
                format!("zombie {} has state", proc_.pid),
            );
        }
        return false;
    }
    if proc_.threads.first().map(|t| t.tid) != Some(proc_.pid) {
        check::p(
            problems,
            "malformed",
            "the image's process has no main thread".into(),
        );
    }
    for t in proc_.threads.iter().skip(1) {
        if t.tid <= 0 || !ids.insert(t.tid) {
            check::p(
                problems,
                "malformed",
                format!("invalid thread ID {}", t.tid),
            );
        }
    }
    true
}

/// Sessions and process groups: a session leader leads its group, and every group's
/// leader is in the image (or the group is the root's, led from outside).
pub(crate) fn check_groups(procs: &[Process], problems: &mut Vec<Problem>) {
    let root = &procs[0];
    for q in procs {
        if q.sid == q.pid && q.pgid != q.pid {
            check::p(
                problems,
                "malformed",
                format!("session leader {} is not its group's leader", q.pid),
            );
        }
        if !group_can_be_made(procs, root, q) {
            check::p(
                problems,
                "unsupported",
                format!(
                    "process {} is in process group {}, whose leader is not part of the \
                     image; dump from that group's leader",
                    q.pid, q.pgid
                ),
            );
        }
    }
}

/// How long a zombie holding a PID of the image may take to be reaped. A dump that
/// killed its tree leaves zombies until their parent (a shell, a supervisor) reaps them,
/// which it does soon but not at once: `ckpt dump PID && ckpt restore IMG` would
/// otherwise fail now and then.
const ZOMBIE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a process that is exiting (killed by the dump, say) may take to free its
/// memory and become a zombie: for a big process that takes a while after `ckpt dump`
/// returned (about 0.1 s per GiB here).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The task holding `pid`, if any, once a process exiting there has had
/// [`EXIT_GRACE`] to end and a zombie [`ZOMBIE_GRACE`] to be reaped.
fn stat_after_reap(pid: i32) -> std::result::Result<procfs::Stat, crate::sys::SysError> {
    let start = std::time::Instant::now();
    let mut zombie_since = None;
    loop {
        let s = procfs::stat(pid)?;
        let now = std::time::Instant::now();
        let wait = if s.state == b'Z' {
            now - *zombie_since.get_or_insert(now) < ZOMBIE_GRACE
        } else {
            s.exiting() && now - start < EXIT_GRACE
        };
        if !wait {
            return Ok(s);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The process's PID and thread IDs are free on this host.
pub(crate) fn check_pids_free(proc_: &Process, held: &check::Held, problems: &mut Vec<Problem>) {
    for t in proc_.threads.iter().skip(1).filter(|t| !held.pid(t.tid)) {
        if let Ok(s) = stat_after_reap(t.tid) {
            check::p(
                problems,
                "pid-taken",
                format!(
                    "thread ID {} is in use by another task ({})",
                    t.tid,
                    check::show(&s.comm)
                ),
            );
        }
    }
    if held.pid(proc_.pid) {
        return;
    }
    if let Ok(s) = stat_after_reap(proc_.pid) {
        let msg = if s.state == b'Z' {
            format!(
                "PID {} is held by a zombie ({}, parent {}) that its parent did not reap within {} ms",
                proc_.pid,
                check::show(&s.comm),
                s.field(4),
                ZOMBIE_GRACE.as_millis()
            )
        } else if s.exiting() {
            format!(
                "PID {} is held by a process that has been exiting for {} s ({})",
                proc_.pid,
                EXIT_GRACE.as_secs(),
                check::show(&s.comm)
            )
        } else {
            format!(
                "PID {} is in use by another process ({})",
                proc_.pid,
                check::show(&s.comm)
            )
        };
        check::p(problems, "pid-taken", msg);
    }
}

// ---- restore (stage) ----

/// Run `create` (which creates a process or thread with ID `pid`) again while it fails
/// with EEXIST though no task with that ID is visible: the last one is being released
/// (its parent is reaping it, or its thread group is exiting; plan waited for that, but
/// the kernel frees the ID a moment after the task leaves /proc), for at most a second.
pub(crate) fn once_released<T>(
    pid: i32,
    mut create: impl FnMut() -> RestoreResult<T>,
) -> RestoreResult<T> {
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

/// Fork process `p` from its parent's stub with clone3(set_tid); the child is traced
/// (PTRACE_O_TRACEFORK) and stopped, a copy of the clean parent stub.
pub(crate) fn fork_process(parent: &mut Ctx<'_>, p: &Process) -> RestoreResult<Injector> {
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
        parent.live_task(&what)?.inj.trapping(),
    ))
}

/// `--new-tty`: make the new terminal (descriptor `slave` of ckpt) the controlling
/// terminal of the root's new session (TIOCSCTTY, before credentials change) and give it
/// foreground group `fg` (TIOCSPGRP, from the root, whose group is the foreground one
/// after TIOCSCTTY; every signal is blocked in the stub anyway).
pub(crate) fn set_controlling_tty(cx: &mut Ctx<'_>, slave: i32, fg: i32) -> RestoreResult<()> {
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
    cx.close(n)?;
    Ok(())
}

/// Make a zombie's stub exit the way the original did, and hand it to its parent.
fn make_zombie(cx: &mut Ctx<'_>, parent: &mut Ctx<'_>, status: i32) -> RestoreResult<()> {
    let pid = cx.proc_.pid;
    let sig = status & 0x7f;
    let stop = if sig == 0 {
        cx.live_task("exit")?.inj.final_call(
            nr::EXIT_GROUP,
            [((status >> 8) & 0xff) as u64, 0, 0, 0, 0, 0],
        )?
    } else {
        // Die of the same signal: default action, unblocked, no core file unless the
        // original dumped one. SIGKILL has no disposition to reset (the kernel refuses
        // to change it) and always kills.
        if sig != libc::SIGKILL {
            let act = cx.put(0, &[0u8; 32])?;
            cx.call(
                "rt_sigaction",
                nr::RT_SIGACTION,
                [sig as u64, act, 0, 8, 0, 0],
            )?;
        }
        if status & 0x80 == 0 {
            sys::process::prlimit_set(pid, libc::RLIMIT_CORE, 0, 0)?;
        }
        ptrace::set_sigmask(pid, 0)?;
        cx.live_task("kill")?
            .inj
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

/// Process groups: leaders first, then members (groups of the outside world are
/// ckpt's own, which every process not in a new session is in already).
pub(crate) fn set_process_groups(ctxs: &mut [Ctx<'_>], procs: &[Process]) -> RestoreResult<()> {
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
    Ok(())
}

/// The zombies of the image exit (see [`make_zombie`]); each comes after its parent.
pub(crate) fn make_zombies(ctxs: &mut [Ctx<'_>], procs: &[Process]) -> RestoreResult<()> {
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
    Ok(())
}
