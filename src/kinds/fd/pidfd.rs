//! Process descriptors (pidfds, from `pidfd_open` or `clone(CLONE_PIDFD)`) of processes
//! of the tree: restore opens them again on the same PIDs, which the processes have
//! again by then (every process of the image exists before any descriptor is made).

use super::OpenFd;
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::model::{FdKind, Process};
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
        return Err(d.not_yet(
            "a pidfd of a process that has exited and been reaped (restore cannot make \
             a descriptor of a process that no longer exists)",
        ));
    }
    if pid <= 0 {
        return Err(d.not_yet("a pidfd of a process in a PID namespace not visible to ckpt"));
    }
    Ok(FdKind::Pidfd {
        pid,
        flags: d.flags,
    })
}

// ---- checks (plan) ----

/// A pidfd names a process of the image (not one of its other threads: restore makes
/// pidfds before threads, and a thread pidfd would name a thread that is not there yet).
pub(crate) fn check_target(
    procs: &[Process],
    q: &Process,
    fd: i32,
    pid: i32,
    problems: &mut Vec<Problem>,
) {
    if procs.iter().any(|p| p.pid == pid) {
        return;
    }
    let thread = procs
        .iter()
        .find(|p| p.threads.iter().any(|t| t.tid == pid));
    let why = match thread {
        Some(p) => format!(
            "names thread {pid} of process {} (a thread's pidfd, PIDFD_THREAD): not \
             supported yet",
            p.pid
        ),
        None => format!(
            "names process {pid}, which is outside the dumped tree: restore can only make \
             pidfds of processes it restores"
        ),
    };
    check::p(
        problems,
        "unsupported",
        format!(
            "file descriptor {fd} of process {} is a pidfd that {why}",
            q.pid
        ),
    );
}

/// What `inspect` says of a pidfd.
pub(crate) fn describe(pid: i32, flags: u32) -> String {
    format!(
        "pidfd of process {pid}{}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{assert_none, assert_one, fd, process, run, thread};

    #[test]
    fn pidfds_of_processes_of_the_image_pass() {
        let mut a = process(100);
        a.fds.push(fd(3, FdKind::Pidfd { pid: 100, flags: 2 }));
        let b = process(101);
        let procs = vec![a, b];
        for target in [100, 101] {
            assert_none(&run(|p| check_target(&procs, &procs[0], 3, target, p)));
        }
    }

    #[test]
    fn pidfds_of_other_processes_or_threads_are_refused_naming_them() {
        let mut a = process(100);
        a.threads.push(thread(105));
        let procs = vec![a];
        let p = run(|p| check_target(&procs, &procs[0], 4, 7, p));
        assert_one(&p, "unsupported", &["descriptor 4", "process 7", "outside"]);
        let p = run(|p| check_target(&procs, &procs[0], 4, 105, p));
        assert_one(&p, "unsupported", &["thread 105", "PIDFD_THREAD"]);
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
