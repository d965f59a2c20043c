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
use crate::model::ZombieState;
use crate::remote::{BatchArgs, Ctx, helper_injector, take_remote_fd};
use crate::sys::inject::Call;
use crate::sys::inject::Injector;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, proc as procfs};
use std::collections::BTreeMap;

// ---- collect (dump) ----

/// A zombie of the tree: its IDs, the status its parent will collect, and what /proc
/// still shows of it: its name, signal masks and resource limits.
pub(crate) fn zombie_process(pid: i32) -> DumpResult<Process> {
    let stat = procfs::stat(pid)?;
    let st = procfs::status(pid)?;
    // From /proc: prlimit would need CAP_SYS_RESOURCE for a zombie of another user.
    let rlimits = procfs::limits(pid)?
        .into_iter()
        .zip(0..crate::kinds::task::creds::RLIMIT_NAMES.len() as u32)
        .map(|((cur, max), resource)| crate::model::Rlimit { resource, cur, max })
        .collect();
    Ok(Process {
        pid,
        ppid: stat.field(4) as i32,
        pgid: stat.field(5) as i32,
        sid: stat.field(6) as i32,
        comm: stat.comm.clone(),
        exit_status: Some(stat.field(52) as i32),
        rlimits,
        creds: crate::kinds::task::creds::creds_of(&st, 0),
        zombie: Some(ZombieState {
            blocked: st.sig_blk,
            ignored: st.sig_ign,
            caught: st.sig_cgt,
            creds: true,
        }),
        ..Default::default()
    })
}

/// Which of `children` (children of the queried process, stopped by job control) have
/// a stop their parent has not collected yet: waitid(WSTOPPED | WNOWAIT | WNOHANG),
/// injected in the parent, reports one without collecting it (the stop of a child
/// traced by another process than its parent is still reported to the parent). The
/// siginfo results land 128 bytes apart at `out`.
pub(crate) fn unreported_stops(
    inj: &mut Injector,
    mem: &crate::sys::mem::RemoteMem,
    (out, out_len): (u64, usize),
    children: &[i32],
) -> DumpResult<Vec<i32>> {
    const SIGINFO: usize = 128;
    let mut found = Vec::new();
    for chunk in children.chunks((out_len / SIGINFO).max(1)) {
        mem.write(out, &vec![0u8; SIGINFO * chunk.len()])?;
        let calls: Vec<Call> = chunk
            .iter()
            .enumerate()
            .map(|(k, &child)| {
                Call::new(
                    "waitid(WSTOPPED | WNOWAIT)",
                    nr::WAITID,
                    [
                        libc::P_PID as u64,
                        child as u64,
                        out + (SIGINFO * k) as u64,
                        (libc::WSTOPPED | libc::WNOWAIT | libc::WNOHANG) as u64,
                        0,
                        0,
                    ],
                )
                .may_fail()
            })
            .collect();
        let res = inj.batch(mem, &calls)?;
        let mut b = vec![0u8; SIGINFO * chunk.len()];
        mem.read(out, &mut b)?;
        for (k, &child) in chunk.iter().enumerate() {
            // siginfo_t: si_signo, si_errno, si_code (ints), padding, then si_pid.
            let pid = b
                .get(SIGINFO * k + 16..SIGINFO * k + 20)
                .and_then(|w| w.try_into().ok())
                .map_or(0, i32::from_le_bytes);
            if res.get(k).copied() == Some(0) && pid == child {
                found.push(child);
            }
        }
    }
    Ok(found)
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
        pid_namespace_init_outside: false,
        sysv: Default::default(),
        namespaces: Vec::new(),
        pid_namespaces: Vec::new(),
        external_pid_namespace: None,
        host_lock: None,
        fifos: Vec::new(),
        parent: None,
        ptys: Vec::new(),
    }
}

/// The ID in the tree's own PID namespace of every process and thread of `processes`
/// (host ID -> namespace ID).
pub(crate) fn namespace_pids(processes: &[Process]) -> DumpResult<BTreeMap<i32, i32>> {
    let mut map = std::collections::BTreeMap::new();
    // The tree's level (a process of a namespace nested inside the tree has more IDs).
    let level = match processes.first() {
        Some(root) => sys::proc::status(root.pid)?.nspid.len(),
        None => return Ok(map),
    };
    for p in processes {
        let local = |v: Vec<i32>| v.get(level.saturating_sub(1)).copied().filter(|&x| x > 0);
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
/// A stop its parent had yet to collect stays to be collected after restore: mark the
/// processes (`JobStop::unreported`) whose parent's injected query (`unreported[i]`, IDs
/// as process `i` sees its children) said so. `stopped`: (host PID, parent's host PID,
/// PID as the parent sees it) of every stopped child.
pub(crate) fn mark_unreported_stops(
    processes: &mut [Process],
    unreported: &[Vec<i32>],
    stopped: &[(i32, i32, i32)],
) {
    let hosts: Vec<i32> = processes
        .iter()
        .zip(unreported)
        .flat_map(|(parent, locals)| {
            locals.iter().filter_map(move |local| {
                stopped
                    .iter()
                    .find(|(_, pp, l)| *pp == parent.pid && l == local)
                    .map(|(host, _, _)| *host)
            })
        })
        .collect();
    for p in processes.iter_mut() {
        if let Some(js) = &mut p.stopped {
            js.unreported = hosts.contains(&p.pid);
        }
    }
}

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
    if ckpt.pid_namespace_init_outside {
        if ckpt.own_pid_namespace {
            check::p(
                problems,
                "malformed",
                "the tree is both the init of its PID namespace and without it".into(),
            );
        } else if let Some(p) = procs.iter().find(|p| p.pid == 1) {
            check::p(
                problems,
                "malformed",
                format!(
                    "the tree ran in a PID namespace whose init was outside it, but its \
                     process {} is PID 1 there",
                    check::show(&p.comm)
                ),
            );
        }
    }
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
        if !proc_.threads.is_empty()
            || !proc_.vmas.is_empty()
            || !proc_.fds.is_empty()
            || proc_.stopped.is_some()
        {
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

/// A process stopped by job control was stopped by a signal whose default action
/// stops.
pub(crate) fn check_stop(proc_: &Process, problems: &mut Vec<Problem>) {
    if let Some(js) = proc_.stopped {
        let stops = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
        if !stops.contains(&js.signo) {
            check::p(
                problems,
                "malformed",
                format!(
                    "process {} is stopped by signal {}, which does not stop",
                    proc_.pid, js.signo
                ),
            );
        }
    }
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
///
/// A process of a PID namespace nested inside the tree's gets its ID at every level
/// (the `set_tid` array, innermost first); the parent's stub names it as its own
/// namespace does.
pub(crate) fn fork_process(
    parent: &mut Ctx<'_>,
    p: &Process,
    share_flags: u64,
) -> RestoreResult<Injector> {
    let tid_addr = parent.scratch() + 88;
    let ids = super::pidns::ids(p);
    let set_tid = super::pidns::set_tid_array(&ids);
    let mut args = Vec::with_capacity(88 + 8 * set_tid.len());
    let n = set_tid.len() as u64;
    // Sharing the parent's System V semaphore undo list if the process did.
    let flags = crate::kinds::ipc::fork_flags(p) | share_flags;
    for w in [
        flags,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
        tid_addr,
        n,
        0,
    ] {
        args.extend_from_slice(&w.to_le_bytes());
    }
    // pid_t (4 bytes) each.
    for t in &set_tid {
        args.extend_from_slice(&t.to_le_bytes());
    }
    let a = parent.put(0, &args)?;
    let what = format!("create process {}", p.pid);
    let got = once_released(p.pid, || {
        parent.call(&what, nr::CLONE3, [a, 88, 0, 0, 0, 0])
    })?;
    let expected = ids.get(parent.proc_.nspid.len()).copied().unwrap_or(p.pid);
    if got != expected as u64 {
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
/// terminal of the root's new session (TIOCSCTTY, before credentials change), right
/// after its `setsid` and before its children are forked, so that every process of the
/// session has it ([`set_tty_foreground`] gives its foreground group later).
pub(crate) fn set_controlling_tty(cx: &mut Ctx<'_>, slave: i32) -> RestoreResult<()> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
    cx.call(
        "ioctl(TIOCSCTTY)",
        nr::IOCTL,
        [n, libc::TIOCSCTTY, 0, 0, 0, 0],
    )?;
    cx.close(n)?;
    Ok(())
}

/// `--new-tty`: give the new terminal foreground group `fg` (TIOCSPGRP, from the root,
/// once every group exists; every signal is blocked in the stub anyway).
pub(crate) fn set_tty_foreground(cx: &mut Ctx<'_>, slave: i32, fg: i32) -> RestoreResult<()> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
    let a = cx.put(0, &fg.to_le_bytes())?;
    cx.call(
        "ioctl(TIOCSPGRP)",
        nr::IOCTL,
        [n, libc::TIOCSPGRP, a, 0, 0, 0],
    )?;
    cx.close(n)?;
    Ok(())
}

/// A pty pair of the image that is the controlling terminal of the session process
/// `cx` leads becomes its controlling terminal (TIOCSCTTY on the master taken from
/// ckpt, which acts on the slave side), right after `setsid` and before its children
/// are forked, so that every process of the session inherits it.
pub(crate) fn set_session_tty(
    cx: &mut Ctx<'_>,
    ckpt: &Checkpoint,
    masters: &crate::kinds::fd::tty::PtyMasters,
) -> RestoreResult<()> {
    let pid = cx.proc_.pid;
    let Some(t) = ckpt
        .ptys
        .iter()
        .find(|t| t.session == pid && t.session != 0)
    else {
        return Ok(());
    };
    let me = std::process::id() as i32;
    let n = take_remote_fd(
        cx,
        me,
        masters.fd(t.index)? as u64,
        "take a pseudo-terminal",
    )?;
    cx.call(
        "ioctl(TIOCSCTTY) of a pseudo-terminal",
        nr::IOCTL,
        [n, libc::TIOCSCTTY, 0, 0, 0, 0],
    )?;
    cx.close(n)
}

/// Every session with a pty of the image as controlling terminal gets its foreground
/// group back (TIOCSPGRP from its leader, once every group exists).
pub(crate) fn set_foreground_groups(
    ctxs: &mut [Ctx<'_>],
    ckpt: &Checkpoint,
    masters: &crate::kinds::fd::tty::PtyMasters,
) -> RestoreResult<()> {
    let me = std::process::id() as i32;
    for t in ckpt.ptys.iter().filter(|t| t.session != 0) {
        let Some(cx) = ctxs.iter_mut().find(|c| c.proc_.pid == t.session) else {
            return Err(RestoreError::Malformed(format!(
                "the leader of session {} is not in the image",
                t.session
            )));
        };
        let n = take_remote_fd(
            cx,
            me,
            masters.fd(t.index)? as u64,
            "take a pseudo-terminal",
        )?;
        // (As the leader's PID namespace names the group.)
        let fg = match t.fg_pgid {
            g if g <= 0 => Some(g),
            g => super::pidns::id_seen_by(ckpt, cx.proc_, g),
        };
        let fg = fg.ok_or_else(|| {
            RestoreError::Malformed(format!(
                "the foreground group {} of a terminal is not visible to its session's \
                 leader",
                t.fg_pgid
            ))
        })?;
        let a = cx.put(0, &fg.to_le_bytes())?;
        cx.call(
            "ioctl(TIOCSPGRP) of a pseudo-terminal",
            nr::IOCTL,
            [n, libc::TIOCSPGRP, a, 0, 0, 0],
        )?;
        cx.close(n)?;
    }
    Ok(())
}

/// Make a zombie's stub exit the way the original did, and hand it to its parent. What
/// /proc shows of a zombie is the dead process's: the stub takes its name, signal
/// dispositions, resource limits (set from outside while the stub still has ckpt's
/// credentials), credentials and blocked signals first (images that recorded them).
fn make_zombie(
    cx: &mut Ctx<'_>,
    parent: &mut Ctx<'_>,
    status: i32,
    own: &super::creds::Own,
) -> RestoreResult<()> {
    let pid = cx.proc_.pid;
    let sig = status & 0x7f;
    let seen = cx.proc_.zombie;
    if let Some(z) = seen {
        zombie_looks(cx, &z, sig)?;
        for r in &cx.proc_.rlimits {
            sys::process::prlimit_set(pid, r.resource, r.cur, r.max)?;
        }
        if z.creds {
            let mut c = cx.proc_.creds.clone();
            c.securebits = own.creds.securebits;
            c.seccomp = own.creds.seccomp;
            super::creds::restore_creds(cx, own, &c)?;
        }
    }
    let blocked = seen.map_or(0, |z| z.blocked);
    let stop = if sig == 0 {
        if seen.is_some() {
            ptrace::set_sigmask(pid, blocked)?;
        }
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
            if seen.is_some() {
                // Not dumpable: no core file, whatever its (the original's) core limit.
                cx.call(
                    "prctl(PR_SET_DUMPABLE)",
                    nr::PRCTL,
                    [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
                )?;
            } else {
                sys::process::prlimit_set(pid, libc::RLIMIT_CORE, 0, 0)?;
            }
        }
        ptrace::set_sigmask(pid, blocked & !(1u64 << (sig - 1)))?;
        // (Its own ID as its PID namespace gives it.)
        let own = cx.proc_.nspid.last().copied().unwrap_or(pid);
        cx.live_task("kill")?
            .inj
            .final_call(nr::KILL, [own as u64, sig as u64, 0, 0, 0, 0])?
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
    take_back_sigchld(parent)
}

/// Take back the SIGCHLD a child's exit or stop during stage sent to `parent` (every
/// signal is blocked in the stub, so it is pending there): the image's own pending
/// signals are queued later.
fn take_back_sigchld(parent: &mut Ctx<'_>) -> RestoreResult<()> {
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

/// Put process `cx` (a stub of one thread, traced) into a group-stop by `sig`, as job
/// control stopped the original: the signal is sent, unblocked and with its default
/// action, and passed on at its signal-delivery-stop, so the kernel stops the group
/// (traced, it shows as a group-stop to us) and records the stop for the real parent.
/// Calls injected later resume the thread without ending the group-stop; once detached
/// at commit, every thread (also those created meanwhile) goes back into it without the
/// parent being told again.
fn stop_job(cx: &mut Ctx<'_>, sig: i32) -> RestoreResult<()> {
    let pid = cx.pid();
    if sig != libc::SIGSTOP {
        // The stub's disposition is ckpt's; the image's are set later.
        let act = cx.put(0, &[0u8; 32])?;
        cx.call(
            "rt_sigaction (the stop signal)",
            nr::RT_SIGACTION,
            [sig as u64, act, 0, 8, 0, 0],
        )?;
    }
    let mask = ptrace::get_sigmask(pid)?;
    ptrace::set_sigmask(pid, mask & !(1u64 << (sig - 1)))?;
    sys::process::kill(pid, sig)?;
    let failed = |got: Stop| {
        RestoreError::Stage(format!(
            "process {pid} did not stop on signal {sig} as it was stopped by job control \
             (got {got:?}; a process group orphaned since ignores SIGTSTP, SIGTTIN and \
             SIGTTOU)"
        ))
    };
    ptrace::cont(pid, 0)?;
    match ptrace::wait(pid)? {
        Stop::Signal(s) if s == sig => {}
        other => return Err(failed(other)),
    }
    ptrace::cont(pid, sig)?;
    match ptrace::wait(pid)? {
        // A group-stop: seized (the root of a tree in its own PID namespace, and what
        // it forks), an event stop; else a stop without signal information.
        Stop::Event(s) if s == sig => {}
        Stop::Signal(s) if s == sig && ptrace::in_group_stop(pid)? => {}
        other => return Err(failed(other)),
    }
    ptrace::set_sigmask(pid, mask)?;
    Ok(())
}

/// Processes stopped by job control stop again (see [`stop_job`]), right after the
/// zombies exit (before anything of them is built, and before their parents' pending
/// signals are queued). The parent in the image of each was told (SIGCHLD, taken back
/// here) and holds the stop for waitpid(WUNTRACED): it is collected here too unless the
/// original parent had not collected it yet.
pub(crate) fn stop_jobs(ctxs: &mut [Ctx<'_>], procs: &[Process]) -> RestoreResult<()> {
    for i in 0..ctxs.len() {
        let Some(js) = ctxs[i].proc_.stopped else {
            continue;
        };
        if ctxs[i].proc_.is_zombie() {
            continue;
        }
        let pid = ctxs[i].proc_.pid;
        stop_job(&mut ctxs[i], js.signo)?;
        if i == 0 {
            continue; // ckpt is the root's parent
        }
        let ppid = ctxs[i].proc_.ppid;
        let parent = procs[..i]
            .iter()
            .position(|q| q.pid == ppid)
            .ok_or_else(|| RestoreError::Malformed(format!("process {pid} has no parent")))?;
        // (The child's ID as the parent's PID namespace gives it.)
        let seen = super::pidns::ids(ctxs[i].proc_)
            .get(ctxs[parent].proc_.nspid.len())
            .copied()
            .unwrap_or(pid);
        let parent = &mut ctxs[parent];
        take_back_sigchld(parent)?;
        if !js.unreported {
            let info = parent.put(0, &[0u8; 128])?;
            parent.call(
                "waitid(WSTOPPED) of a stopped child",
                nr::WAITID,
                [
                    libc::P_PID as u64,
                    seen as u64,
                    info,
                    (libc::WSTOPPED | libc::WNOHANG) as u64,
                    0,
                    0,
                ],
            )?;
            let mut b = [0u8; 20];
            parent.read(info, &mut b)?;
            if b[16..20] != pid.to_le_bytes() {
                return Err(RestoreError::Stage(format!(
                    "the stop of process {pid} did not reach its parent {ppid}"
                )));
            }
        }
    }
    Ok(())
}

/// Give a zombie's stub the dead process's name and signal dispositions (ignored,
/// caught: any handler, never run; the default for the rest and for `sig`, which it
/// dies of), in one batch.
pub(crate) fn zombie_looks(cx: &mut Ctx<'_>, z: &ZombieState, sig: i32) -> RestoreResult<()> {
    let mut args = BatchArgs::new();
    let mut calls = Vec::new();
    let mut comm = cx.proc_.comm.clone();
    comm.truncate(15);
    let name = args.add_cstr(cx, &comm)?;
    calls.push(Call::new(
        "prctl(PR_SET_NAME)",
        nr::PRCTL,
        [libc::PR_SET_NAME as u64, name, 0, 0, 0, 0],
    ));
    // struct k_sigaction: handler, flags, restorer, mask.
    let act = |handler: u64| {
        let mut b = handler.to_le_bytes().to_vec();
        b.resize(32, 0);
        b
    };
    let dfl = args.add(cx, &act(0))?;
    let ign = args.add(cx, &act(1))?;
    // A handler it never runs (it exits right after, with the original's blocked
    // signals), at the helper area's breakpoint all the same.
    let caught = args.add(cx, &act(cx.stub + 2))?;
    for s in 1..=64u64 {
        if s == libc::SIGKILL as u64 || s == libc::SIGSTOP as u64 {
            continue;
        }
        let bit = 1u64 << (s - 1);
        let a = if s == sig as u64 {
            dfl
        } else if z.ignored & bit != 0 {
            ign
        } else if z.caught & bit != 0 {
            caught
        } else {
            dfl
        };
        calls.push(Call::new(
            "rt_sigaction",
            nr::RT_SIGACTION,
            [s, a, 0, 8, 0, 0],
        ));
    }
    cx.batch(&args, &calls)?;
    Ok(())
}

/// Process groups: leaders first, then members (groups of the outside world are
/// ckpt's own, which every process not in a new session is in already).
///
/// A process of a nested PID namespace names the leader as its namespace shows it; one
/// whose namespace does not show the leader was forked in its group (see
/// [`group_before_fork`]).
pub(crate) fn set_process_groups(ctxs: &mut [Ctx<'_>], ckpt: &Checkpoint) -> RestoreResult<()> {
    let procs = &ckpt.processes;
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
            let target = if is_leader {
                0
            } else {
                match super::pidns::id_seen_by(ckpt, p, p.pgid) {
                    Some(id) => id as u64,
                    None => continue,
                }
            };
            cx.call("setpgid", nr::SETPGID, [0, target, 0, 0, 0, 0])?;
        }
    }
    Ok(())
}

/// Before process `i` of a nested PID namespace is forked: when its namespace does not
/// show the leader of its group, it can only be forked in it, so its parent joins the
/// group now (the leader, created before it, first leads it). A parent whose own
/// namespace does not show the leader was forked in the group itself.
pub(crate) fn group_before_fork(
    ctxs: &mut [Ctx<'_>],
    ckpt: &Checkpoint,
    i: usize,
    parent: usize,
) -> RestoreResult<()> {
    let procs = &ckpt.processes;
    let p = &procs[i];
    if p.pid_ns == 0
        || p.sid == p.pid
        || p.pgid == p.pid
        || super::pidns::id_seen_by(ckpt, p, p.pgid).is_some()
    {
        return Ok(());
    }
    let Some(l) = procs.iter().position(|q| q.pid == p.pgid) else {
        return Ok(()); // the outside group: everyone is in it from the start
    };
    let Some(leader) = ctxs.get_mut(l) else {
        return Err(RestoreError::Stage(format!(
            "process group {} of process {} has no leader yet",
            p.pgid, p.pid
        )));
    };
    if procs[l].sid != procs[l].pid {
        leader.call("setpgid", nr::SETPGID, [0, 0, 0, 0, 0, 0])?;
    }
    if l != parent {
        let q = &procs[parent];
        if let Some(id) = super::pidns::id_seen_by(ckpt, q, p.pgid) {
            ctxs[parent].call("setpgid", nr::SETPGID, [0, id as u64, 0, 0, 0, 0])?;
        }
    }
    Ok(())
}

/// Before a process of a nested PID namespace is forked from `parent`: the parent's
/// stub holds a pidfd of ckpt (which the child inherits, as its namespace cannot name
/// ckpt; see `Ctx::pidfd_of`) at descriptor `at` or above, and, for the namespace's
/// init, has called unshare(CLONE_NEWPID) (`unshared`: it did already).
pub(crate) fn prepare_nested_fork(
    parent: &mut Ctx<'_>,
    child: &Process,
    unshared: &mut bool,
    at: u64,
) -> RestoreResult<()> {
    if child.pid_ns == 0 {
        return Ok(());
    }
    if parent.ckpt_pidfd.is_none() {
        let me = std::process::id() as u64;
        let fd = parent.call("pidfd_open", nr::PIDFD_OPEN, [me, 0, 0, 0, 0, 0])?;
        let high = parent.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            nr::FCNTL,
            [fd, libc::F_DUPFD_CLOEXEC as u64, at, 0, 0, 0],
        );
        parent.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
        parent.ckpt_pidfd = Some(high?);
    }
    if child.pid_ns != parent.proc_.pid_ns && !*unshared {
        unshare_pid_ns(parent)?;
        *unshared = true;
    }
    Ok(())
}

/// The stub's next children go to a new PID namespace, below its own.
pub(crate) fn unshare_pid_ns(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    cx.call(
        "unshare(CLONE_NEWPID)",
        nr::UNSHARE,
        [libc::CLONE_NEWPID as u64, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// The pidfds of ckpt that stubs of nested PID namespaces hold are closed (before
/// their credentials change: nothing takes a descriptor from ckpt after that).
pub(crate) fn close_ckpt_pidfds(ctxs: &mut [Ctx<'_>]) -> RestoreResult<()> {
    // (Once per descriptor table: processes sharing one hold the same.)
    let mut closed = std::collections::BTreeSet::new();
    for cx in ctxs.iter_mut() {
        if cx.proc_.is_zombie() {
            continue;
        }
        if let Some(fd) = cx.ckpt_pidfd.take() {
            if closed.insert((super::share::table(cx.proc_), fd)) {
                cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
            }
        }
    }
    Ok(())
}

/// The zombies of the image exit (see [`make_zombie`]); each comes after its parent.
pub(crate) fn make_zombies(ctxs: &mut [Ctx<'_>], procs: &[Process]) -> RestoreResult<()> {
    if !procs.iter().any(|p| p.is_zombie()) {
        return Ok(());
    }
    let own = super::creds::Own::detect()?;
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
            make_zombie(a, b, status, &own)?;
        }
    }
    Ok(())
}
