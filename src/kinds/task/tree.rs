//! The process tree: parents and children, sessions and process groups, zombies,
//! controlling terminals, PID namespaces.

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{Checkpoint, Process};
use crate::sys::proc as procfs;

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
        let outside_group = q.pgid == root.pgid && root.pgid != root.pid && q.sid == root.sid;
        let leader_here = procs
            .iter()
            .any(|l| l.pid == q.pgid && l.pgid == l.pid && l.sid == q.sid);
        if !outside_group && !leader_here {
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
pub(crate) fn check_pids_free(proc_: &Process, problems: &mut Vec<Problem>) {
    for t in proc_.threads.iter().skip(1) {
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
