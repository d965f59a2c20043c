//! Process descriptors (pidfds, from `pidfd_open` or `clone(CLONE_PIDFD)`) of processes
//! of the tree: restore opens them again on the same PIDs, which the processes have
//! again by then (every process of the image exists before any descriptor is made).
//! A pidfd of one thread (`PIDFD_THREAD`, Linux 6.9) of a process of the tree is opened
//! once that process's threads exist (after its descriptors): the thread's process must
//! be the holder or one restore builds before it. A pidfd of a process that has exited
//! and been reaped (fdinfo "Pid: -1": poll says readable and hung up, signals and
//! waitid fail) is one of a process ckpt makes at restore to exit the same way (the
//! wait status PIDFD_GET_INFO tells, Linux 6.15), opened while a zombie and reaped.
//! Pidfds of processes outside the tree are refused.

use super::OpenFd;
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::model::{Checkpoint, Fd, FdKind, PidfdReaped, Process};
use crate::remote::Ctx;
use crate::sys::proc as procfs;

/// `PIDFD_THREAD` (linux/pidfd.h): the descriptor names one thread (Linux 6.9).
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
/// `PIDFD_NONBLOCK` (linux/pidfd.h).
const PIDFD_NONBLOCK: u32 = libc::O_NONBLOCK as u32;

// ---- collect (dump) ----

/// A pidfd, from its fdinfo text `info` ("Pid:" is the process it names as this
/// PID namespace sees it; -1 once that process was reaped, 0 when it is not visible
/// here).
pub(crate) fn collect(d: &OpenFd, info: &str) -> DumpResult<FdKind> {
    let pid = procfs::fdinfo_field(info, "Pid:")
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| super::fdinfo_unparsed(d.pid, d.fd, "pidfd"))?;
    if pid == -1 {
        // What the kernel kept of its end, read through a duplicate of ours.
        let ours = crate::sys::process::steal_fd(d.pid, d.fd)?;
        use std::os::fd::AsFd;
        let exit = crate::sys::process::pidfd_exit_info(ours.as_fd())?;
        return Ok(FdKind::Pidfd {
            pid: 0,
            flags: d.flags,
            reaped: Some(PidfdReaped {
                status: exit.map(|e| e.0),
                cgroup_id: exit.map_or(0, |e| e.1),
            }),
        });
    }
    if pid <= 0 {
        return Err(d.not_yet("a pidfd of a process in a PID namespace not visible to ckpt"));
    }
    Ok(FdKind::Pidfd {
        pid,
        flags: d.flags,
        reaped: None,
    })
}

// ---- checks (plan) ----

/// Where in `procs` (restore's build order) the process with thread `tid` is (its
/// main thread or another).
fn process_of(procs: &[Process], tid: i32) -> Option<(usize, bool)> {
    procs.iter().enumerate().find_map(|(i, p)| {
        if p.pid == tid {
            Some((i, true))
        } else {
            p.threads.iter().any(|t| t.tid == tid).then_some((i, false))
        }
    })
}

/// A pidfd names a process of the image, or one of the threads of the holder `q` or of
/// a process restore builds before it (threads are made after a process's descriptors,
/// and the holder's own pidfds of threads once its threads exist), or a process that
/// was reaped with an end a new process can come to.
pub(crate) fn check_pidfd(
    procs: &[Process],
    q: &Process,
    fd: i32,
    pid: i32,
    reaped: Option<&PidfdReaped>,
    problems: &mut Vec<Problem>,
) {
    let mut refuse = |why: String| {
        check::p(
            problems,
            "unsupported",
            format!(
                "file descriptor {fd} of process {} is a pidfd that {why}",
                q.pid
            ),
        )
    };
    if let Some(r) = reaped {
        if let Some(st) = r.status {
            let ends = (libc::WIFEXITED(st) || libc::WIFSIGNALED(st)) && !libc::WCOREDUMP(st);
            if !ends {
                refuse(format!(
                    "names a process reaped after it {}: restore cannot make a process end \
                     that way",
                    if libc::WCOREDUMP(st) {
                        "dumped core".to_string()
                    } else {
                        format!("ended with wait status {st:#x}")
                    }
                ));
            }
        }
        return;
    }
    let holder = procs.iter().position(|p| p.pid == q.pid);
    match process_of(procs, pid) {
        Some((_, true)) => {}
        Some((i, false)) if holder.is_some_and(|h| i <= h) => {}
        Some((i, false)) => refuse(format!(
            "names thread {pid} of process {}, which restore makes after process {} (a \
             thread's pidfd, PIDFD_THREAD, of a process built later): not supported yet",
            procs[i].pid, q.pid
        )),
        None => refuse(format!(
            "names process {pid}, which is outside the dumped tree: restore can only make \
             pidfds of processes it restores"
        )),
    }
}

/// Whether descriptor `f` of `q` is opened once `q`'s threads exist: a pidfd of one of
/// its threads other than the main one, or the same description as such a descriptor of
/// its own (a dup).
pub(crate) fn after_threads(q: &Process, f: &Fd) -> bool {
    let own_thread = |g: &Fd| {
        matches!(g.kind, FdKind::Pidfd { pid, reaped: None, .. }
            if pid != q.pid && q.threads.iter().any(|t| t.tid == pid))
    };
    match f.shared_with {
        Some((p, qfd)) if p == q.pid => q
            .fds
            .iter()
            .find(|g| g.fd == qfd)
            .is_some_and(|g| g.shared_with.is_none() && own_thread(g)),
        Some(_) => false,
        None => own_thread(f),
    }
}

/// Epoll items of `q` on one of its pidfds opened after its threads cannot be
/// registered with the other items (they do not exist yet then).
pub(crate) fn check_epoll_items(q: &Process, problems: &mut Vec<Problem>) {
    for f in &q.fds {
        let FdKind::Epoll { targets, .. } = &f.kind else {
            continue;
        };
        for t in targets {
            let at = t.held_at.unwrap_or(t.fd);
            if q.fds.iter().any(|g| g.fd == at && after_threads(q, g)) {
                check::p(
                    problems,
                    "unsupported",
                    format!(
                        "file descriptor {} of process {} is an epoll instance watching a \
                         pidfd of one of its threads (descriptor {}): not supported yet",
                        f.fd, q.pid, t.fd
                    ),
                );
            }
        }
    }
}

/// What `inspect` says of a pidfd.
pub(crate) fn describe(pid: i32, flags: u32, reaped: Option<&PidfdReaped>) -> String {
    let what = match reaped {
        Some(PidfdReaped {
            status: Some(st), ..
        }) => format!("pidfd of a process reaped (wait status {st:#x})"),
        Some(_) => "pidfd of a process reaped".to_string(),
        None if flags & PIDFD_THREAD != 0 => format!("pidfd of thread {pid}"),
        None => format!("pidfd of process {pid}"),
    };
    format!(
        "{what}{}",
        if flags & PIDFD_NONBLOCK != 0 {
            " (non-blocking)"
        } else {
            ""
        }
    )
}

// ---- restore (stage) ----

/// The pidfd_open flags that make a pidfd with status flags `flags`.
pub(crate) fn open_flags(flags: u32) -> u64 {
    u64::from(flags & (PIDFD_NONBLOCK | PIDFD_THREAD))
}

/// Open the pidfd of process `pid` again (it exists: checked by plan, made by the fork
/// of the tree); returns its descriptor.
pub(crate) fn create_pidfd(cx: &mut Ctx<'_>, pid: i32, flags: u32) -> RestoreResult<u64> {
    cx.call(
        "pidfd_open",
        nr::PIDFD_OPEN,
        [pid as u64, open_flags(flags), 0, 0, 0, 0],
    )
}

/// A pidfd of a process reaped: ckpt makes one that ends the same way (an exit code of
/// 0 where the kernel did not tell), in the cgroup the original exited in where that
/// cgroup is still there ([`exit_cgroup`]), takes its pidfd and reaps it, and gives the
/// task that descriptor; returns the task's.
pub(crate) fn create_reaped(cx: &mut Ctx<'_>, r: &PidfdReaped, flags: u32) -> RestoreResult<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    crate::error::fault_point("make a reaped process's pidfd")?;
    let open = u32::try_from(open_flags(flags)).unwrap_or(0);
    let cgroup = exit_cgroup(r.cgroup_id);
    let ours = crate::sys::process::reaped_pidfd(
        r.status.unwrap_or(0),
        open,
        cgroup.as_ref().map(|c| c.as_fd()),
    )?;
    let me = std::process::id() as i32;
    crate::remote::take_remote_fd(
        cx,
        me,
        ours.as_raw_fd() as u64,
        "take the pidfd of a reaped process",
    )
}

/// The cgroup v2 directory (opened `O_PATH`) of cgroup ID `id` (0: not told), where a
/// process ckpt makes to end as a reaped one did can be started so that PIDFD_GET_INFO
/// tells the same cgroup: None when it is gone (ckpt's own cgroup then, a difference
/// the README lists) or frozen (the process would stop there before it ends).
fn exit_cgroup(id: u64) -> Option<std::os::fd::OwnedFd> {
    use crate::sys::cgroup;
    if id == 0 {
        return None;
    }
    let dir = cgroup::v2_by_id(id)?;
    // (Frozen itself or below a frozen one: "frozen 1" in cgroup.events.)
    let events = cgroup::read_limit(&dir, "cgroup.events").ok().flatten();
    let freeze = cgroup::read_limit(&dir, "cgroup.freeze").ok().flatten();
    if freeze.as_deref() == Some("1") || events.is_some_and(|e| e.lines().any(|l| l == "frozen 1"))
    {
        return None;
    }
    cgroup::open_path(&dir).ok()
}

/// Once the threads of `cx`'s process exist: its pidfds of threads ([`after_threads`]),
/// at their numbers.
pub(crate) fn open_after_threads(cx: &mut Ctx<'_>, ckpt: &Checkpoint) -> RestoreResult<()> {
    let q = cx.proc_;
    for f in q.fds.iter().filter(|f| after_threads(q, f)) {
        if let Some((_, qfd)) = f.shared_with {
            let cl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            cx.call("dup3", nr::DUP3, [qfd as u64, f.fd as u64, cl, 0, 0, 0])?;
            super::restore_owner(cx, ckpt, f)?;
            continue;
        }
        let FdKind::Pidfd { pid, flags, .. } = f.kind else {
            continue;
        };
        let seen = crate::kinds::task::pidns::tid_seen_by(ckpt, q, pid).ok_or_else(|| {
            crate::error::RestoreError::Malformed(format!(
                "descriptor {} of process {}: a pidfd of thread {pid}, which its PID \
                 namespace does not show",
                f.fd, q.pid
            ))
        })?;
        let n = create_pidfd(cx, seen, flags)?;
        crate::remote::move_fd(cx, n, f.fd, f.cloexec)?;
        super::restore_owner(cx, ckpt, f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{assert_none, assert_one, fd, process, run, thread};

    fn pidfd(pid: i32, flags: u32) -> FdKind {
        FdKind::Pidfd {
            pid,
            flags,
            reaped: None,
        }
    }

    #[test]
    fn pidfds_of_processes_of_the_image_pass() {
        let mut a = process(100);
        a.fds.push(fd(3, pidfd(100, 2)));
        let b = process(101);
        let procs = vec![a, b];
        for target in [100, 101] {
            assert_none(&run(|p| check_pidfd(&procs, &procs[0], 3, target, None, p)));
        }
    }

    #[test]
    fn pidfds_of_threads_of_the_holder_or_of_processes_built_before_pass() {
        let mut a = process(100);
        a.threads.push(thread(105));
        let mut b = process(101);
        b.threads.push(thread(106));
        let procs = vec![a, b];
        assert_none(&run(|p| check_pidfd(&procs, &procs[0], 3, 105, None, p)));
        assert_none(&run(|p| check_pidfd(&procs, &procs[1], 3, 105, None, p)));
        assert_none(&run(|p| check_pidfd(&procs, &procs[1], 3, 106, None, p)));
        // A thread of a process built after the holder: not there yet.
        let p = run(|p| check_pidfd(&procs, &procs[0], 4, 106, None, p));
        assert_one(
            &p,
            "unsupported",
            &["descriptor 4", "thread 106 of process 101", "PIDFD_THREAD"],
        );
    }

    #[test]
    fn pidfds_of_processes_outside_are_refused_naming_them() {
        let procs = vec![process(100)];
        let p = run(|p| check_pidfd(&procs, &procs[0], 4, 7, None, p));
        assert_one(&p, "unsupported", &["descriptor 4", "process 7", "outside"]);
    }

    #[test]
    fn a_reaped_process_that_dumped_core_is_refused() {
        let procs = vec![process(100)];
        let r = |status| PidfdReaped {
            status,
            cgroup_id: 0,
        };
        for ok in [None, Some(3 << 8), Some(libc::SIGTERM)] {
            assert_none(&run(|p| {
                check_pidfd(&procs, &procs[0], 3, 0, Some(&r(ok)), p)
            }));
        }
        let p = run(|p| {
            check_pidfd(
                &procs,
                &procs[0],
                3,
                0,
                Some(&r(Some(libc::SIGABRT | 0x80))),
                p,
            )
        });
        assert_one(&p, "unsupported", &["descriptor 3", "dumped core"]);
    }

    #[test]
    fn only_pidfds_of_own_threads_and_their_dups_wait_for_the_threads() {
        let mut a = process(100);
        a.threads.push(thread(105));
        a.fds.push(fd(3, pidfd(105, PIDFD_THREAD)));
        let mut dup = fd(4, pidfd(105, PIDFD_THREAD));
        dup.shared_with = Some((100, 3));
        a.fds.push(dup);
        a.fds.push(fd(5, pidfd(100, PIDFD_THREAD)));
        a.fds.push(fd(6, pidfd(101, 0)));
        let late: Vec<i32> = a
            .fds
            .iter()
            .filter(|f| after_threads(&a, f))
            .map(|f| f.fd)
            .collect();
        assert_eq!(late, vec![3, 4]);
    }

    #[test]
    fn open_flags_keep_only_what_pidfd_open_takes() {
        let rdwr = libc::O_RDWR as u32;
        assert_eq!(open_flags(rdwr), 0);
        assert_eq!(
            open_flags(rdwr | PIDFD_NONBLOCK | PIDFD_THREAD),
            u64::from(PIDFD_NONBLOCK | PIDFD_THREAD)
        );
    }
}
