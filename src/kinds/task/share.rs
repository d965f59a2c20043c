//! Processes that share their descriptor table (clone with CLONE_FILES) or their
//! filesystem information (CLONE_FS: working and root directories, umask) without being
//! threads of one process: which ones do at dump, whether restore can create them
//! sharing again, and how.
//!
//! Each shared object is named in the image by its first sharer in image order
//! (`Process::files_shared_with`, `Process::fs_shared_with`; `None` for that first one
//! and for a process with its own). Restore builds the sharing when it forks the tree:
//!
//! - a process that shares with its parent is forked from it with CLONE_FILES / CLONE_FS;
//! - processes that share with each other but not with their (common) parent are all
//!   forked from it with the flag, sharing the parent's own while it still has nothing
//!   of the image, and the parent then leaves it (unshare) after the last of them;
//! - other shapes (sharers that are cousins, a parent that shares with its own parent
//!   and hands another table to its children...) are refused, at dump too.
//!
//! The table's descriptors are restored once, by its first sharer (the others' `fds`
//! are empty); the working and root directories once, by the last sharer of them in
//! image order (after every sharer has used paths from the host's root).

use std::collections::BTreeSet;

use crate::error::{DumpResult, Problem};
use crate::kinds::{check, unsupported};
use crate::model::{Checkpoint, LockKind, Process};
use crate::sys;

/// What processes share.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// The descriptor table (CLONE_FILES).
    Files,
    /// The working and root directories and umask (CLONE_FS).
    Fs,
}

const KINDS: [Kind; 2] = [Kind::Files, Kind::Fs];

impl Kind {
    fn with(self, p: &Process) -> Option<i32> {
        match self {
            Kind::Files => p.files_shared_with,
            Kind::Fs => p.fs_shared_with,
        }
    }

    fn flag(self) -> u64 {
        match self {
            Kind::Files => libc::CLONE_FILES as u64,
            Kind::Fs => libc::CLONE_FS as u64,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Files => "descriptor table (CLONE_FILES)",
            Kind::Fs => "working directory, root directory and umask (CLONE_FS)",
        }
    }
}

/// The group of `p` for `kind`: its first sharer's PID, or its own.
fn group(kind: Kind, p: &Process) -> i32 {
    kind.with(p).unwrap_or(p.pid)
}

/// The living processes in group `g` (image order).
fn members(procs: &[Process], kind: Kind, g: i32) -> Vec<&Process> {
    procs
        .iter()
        .filter(|q| !q.is_zombie() && group(kind, q) == g)
        .collect()
}

/// Whether `p` shares `kind` with another process of the image.
fn shares(procs: &[Process], kind: Kind, p: &Process) -> bool {
    members(procs, kind, group(kind, p)).len() > 1
}

fn parent_of<'a>(procs: &'a [Process], p: &Process) -> Option<&'a Process> {
    procs.iter().find(|q| q.pid == p.ppid)
}

/// The members of group `g` whose parent is not in it (the others are forked from
/// their parent, sharing it).
fn heads(procs: &[Process], kind: Kind, g: i32) -> Vec<&Process> {
    members(procs, kind, g)
        .into_iter()
        .filter(|m| parent_of(procs, m).is_none_or(|q| group(kind, q) != g))
        .collect()
}

fn pids(ps: &[&Process]) -> String {
    ps.iter()
        .map(|p| p.pid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- collect (dump) ----

/// Which processes of the tree share a descriptor table or filesystem information
/// (kcmp KCMP_FILES, KCMP_FS), recorded as a reference to the first sharer; a later
/// sharer's descriptors are the first one's (its own list is emptied). Processes
/// sharing an address space (CLONE_VM without CLONE_THREAD: a vfork child, and with
/// it CLONE_SIGHAND) are refused: restore gives each process its own; so is a root
/// sharing any of them with its parent outside the tree (`root_parent`).
pub(crate) fn collect(procs: &mut [Process], root_parent: i32) -> DumpResult<()> {
    if let Some(root) = procs.first().filter(|r| !r.is_zombie() && root_parent > 0) {
        // (A parent gone meanwhile shares nothing.)
        let with = |f: fn(i32, i32) -> sys::Result<bool>| f(root.pid, root_parent).unwrap_or(false);
        let shared = [
            (
                sys::process::same_vm as fn(i32, i32) -> sys::Result<bool>,
                "address space (CLONE_VM)",
            ),
            (
                sys::process::same_fd_table,
                "descriptor table (CLONE_FILES)",
            ),
            (
                sys::process::same_fs,
                "working directory, root directory and umask (CLONE_FS)",
            ),
        ];
        if let Some((_, what)) = shared.iter().find(|(f, _)| with(*f)) {
            return Err(unsupported(
                root.pid,
                format!(
                    "it shares its {what} with its parent {root_parent}, outside the dumped \
                     tree: restore cannot share it with a process it does not make: not \
                     supported yet (dump the parent's tree)"
                ),
            ));
        }
    }
    let live: Vec<usize> = (0..procs.len())
        .filter(|&i| !procs[i].is_zombie())
        .collect();
    for (n, &i) in live.iter().enumerate() {
        let pid = procs[i].pid;
        let mut files = None;
        let mut fs = None;
        for &j in &live[..n] {
            let other = procs[j].pid;
            if sys::process::same_vm(pid, other)? {
                return Err(unsupported(
                    pid,
                    format!(
                        "it shares its address space with process {other} (clone with \
                         CLONE_VM but without CLONE_THREAD, as vfork does; CLONE_SIGHAND \
                         needs it): restore gives each process its own: not supported yet"
                    ),
                ));
            }
            if files.is_none() && sys::process::same_fd_table(pid, other)? {
                files = Some(other);
            }
            if fs.is_none() && sys::process::same_fs(pid, other)? {
                fs = Some(other);
            }
        }
        procs[i].files_shared_with = files;
        procs[i].fs_shared_with = fs;
    }
    // POSIX locks belong to the table: who took one is not told apart.
    for &i in &live {
        let p = &procs[i];
        if p.files_shared_with.is_none() && !shares(procs, Kind::Files, p) {
            continue;
        }
        let first = p.files_shared_with.unwrap_or(p.pid);
        if let Some(f) = p
            .fds
            .iter()
            .find(|f| f.locks.iter().any(|l| l.kind == LockKind::Posix))
        {
            return Err(unsupported(
                p.pid,
                format!(
                    "descriptor {} holds a POSIX lock in the descriptor table it shares \
                     with process {first} (CLONE_FILES): restore cannot tell which of \
                     them took it: not supported yet",
                    f.fd
                ),
            ));
        }
    }
    for &i in &live {
        if procs[i].files_shared_with.is_some() {
            procs[i].fds.clear();
        }
    }
    Ok(())
}

// ---- checks (plan) ----

/// The sharing the image records is well formed (each reference names an earlier
/// living process that is the first of its group; a later sharer of a table has no
/// descriptors of its own), and restore can build it (see the module's comment).
pub(crate) fn check_sharing(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let procs = &ckpt.processes;
    for kind in KINDS {
        let mut groups = BTreeSet::new();
        for (i, p) in procs.iter().enumerate() {
            let Some(f) = kind.with(p) else {
                continue;
            };
            let first = procs[..i].iter().find(|q| q.pid == f);
            if p.is_zombie() || !first.is_some_and(|q| !q.is_zombie() && kind.with(q).is_none()) {
                check::p(
                    problems,
                    "malformed",
                    format!(
                        "process {} shares its {} with process {f}, which is not an \
                         earlier living process of the image that has its own",
                        p.pid,
                        kind.what()
                    ),
                );
                continue;
            }
            if kind == Kind::Files && !p.fds.is_empty() {
                check::p(
                    problems,
                    "malformed",
                    format!(
                        "process {} shares the descriptor table of process {f} but has \
                         descriptors of its own",
                        p.pid
                    ),
                );
                continue;
            }
            groups.insert(f);
        }
        for g in groups {
            check_shape(ckpt, kind, g, problems);
        }
    }
}

/// Whether restore can create group `g` sharing `kind`.
fn check_shape(ckpt: &Checkpoint, kind: Kind, g: i32, problems: &mut Vec<Problem>) {
    let procs = &ckpt.processes;
    let all = members(procs, kind, g);
    let hs = heads(procs, kind, g);
    let mut refuse = |why: String| {
        check::p(
            problems,
            "sharing",
            format!(
                "processes {} share one {}, but {why}: restore cannot create them \
                 sharing it: not supported yet",
                pids(&all),
                kind.what()
            ),
        );
    };
    if hs.len() >= 2 {
        let ppid = hs[0].ppid;
        if hs.iter().any(|h| h.ppid != ppid) {
            refuse(format!(
                "{} of them ({}) have parents that do not share it, and not one parent",
                hs.len(),
                pids(&hs)
            ));
            return;
        }
        let Some(parent) = parent_of(procs, hs[0]) else {
            return; // malformed, said by the tree's checks
        };
        if shares(procs, kind, parent) {
            refuse(format!(
                "their parent {ppid} shares another one (with process {}): it cannot \
                 hand them theirs",
                members(procs, kind, group(kind, parent))
                    .iter()
                    .find(|q| q.pid != ppid)
                    .map_or(0, |q| q.pid)
            ));
            return;
        }
        // The parent forks them sharing its own, then leaves it: it can hold only one
        // such at a time, in image order.
        let first = procs.iter().position(|q| q.pid == hs[0].pid);
        let last = procs.iter().position(|q| q.pid == hs[hs.len() - 1].pid);
        if let (Some(a), Some(b)) = (first, last) {
            let between = procs[a..=b].iter().find(|c| {
                c.ppid == ppid && group(kind, c) != g && {
                    let other = heads(procs, kind, group(kind, c));
                    other.len() >= 2 && other.iter().any(|h| h.pid == c.pid)
                }
            });
            if let Some(c) = between {
                refuse(format!(
                    "their parent {ppid} also has child {} sharing another one, created \
                     between them",
                    c.pid
                ));
                return;
            }
        }
    }
    if kind == Kind::Fs {
        let own_userns: BTreeSet<u64> = ckpt
            .namespaces
            .iter()
            .filter(|n| n.kind == "user" && !n.external)
            .map(|n| n.inode)
            .collect();
        for m in &all {
            if m.namespaces
                .iter()
                .any(|(k, ino)| k == "user" && own_userns.contains(ino))
            {
                refuse(format!(
                    "process {} is in a user namespace of the tree's own, which each \
                     restored process joins alone (setns refuses a process sharing its \
                     filesystem information)",
                    m.pid
                ));
                return;
            }
            let Some(parent) = parent_of(procs, m) else {
                continue;
            };
            let ns =
                |p: &Process, k: &str| p.namespaces.iter().find(|(kk, _)| kk == k).map(|(_, i)| *i);
            if ["mnt", "user"].iter().any(|k| ns(m, k) != ns(parent, k)) {
                refuse(format!(
                    "process {} is in another mount or user namespace than its parent \
                     {}, which it enters alone",
                    m.pid, parent.pid
                ));
                return;
            }
        }
    }
}

// ---- restore (stage) ----

/// The clone flags process `i` is forked with from its parent: CLONE_FILES / CLONE_FS
/// when it shares them with its parent, or with siblings their parent hands them to.
pub(crate) fn fork_flags(procs: &[Process], i: usize) -> u64 {
    let p = &procs[i];
    let mut flags = 0;
    for kind in KINDS {
        if !shares(procs, kind, p) {
            continue;
        }
        let g = group(kind, p);
        let with_parent = parent_of(procs, p).is_some_and(|q| group(kind, q) == g);
        if with_parent || heads(procs, kind, g).len() >= 2 {
            flags |= kind.flag();
        }
    }
    flags
}

/// The flags process `i`'s parent unshares once `i` is forked: it is the last of
/// siblings sharing what the parent does not (forked sharing the parent's own).
pub(crate) fn unshare_after(procs: &[Process], i: usize) -> u64 {
    let p = &procs[i];
    let mut flags = 0;
    for kind in KINDS {
        if !shares(procs, kind, p) {
            continue;
        }
        let hs = heads(procs, kind, group(kind, p));
        if hs.len() >= 2 && hs[hs.len() - 1].pid == p.pid {
            flags |= kind.flag();
        }
    }
    flags
}

/// Whether process `p` restores the descriptors of its table (the first sharer, or a
/// process with its own).
pub(crate) fn restores_fds(p: &Process) -> bool {
    p.files_shared_with.is_none()
}

/// Whether process `pid` sets the working and root directories it has (the last of
/// their sharers in image order, or a process with its own).
pub(crate) fn restores_fs(procs: &[Process], pid: i32) -> bool {
    let Some(i) = procs.iter().position(|q| q.pid == pid) else {
        return true;
    };
    let g = group(Kind::Fs, &procs[i]);
    procs[i + 1..]
        .iter()
        .all(|q| q.is_zombie() || group(Kind::Fs, q) != g)
}

/// The descriptor table process `p` is in (its first sharer's PID), to do once per
/// table what its processes would each do.
pub(crate) fn table(p: &Process) -> i32 {
    group(Kind::Files, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, child, eventfd, fd, process};

    fn shared(mut p: Process, files: Option<i32>, fs: Option<i32>) -> Process {
        p.files_shared_with = files;
        p.fs_shared_with = fs;
        p
    }

    fn problems(procs: Vec<Process>) -> Vec<Problem> {
        let ck = checkpoint(procs);
        let mut out = Vec::new();
        check_sharing(&ck, &mut out);
        out
    }

    #[test]
    fn a_child_sharing_with_its_parent_is_forked_with_the_flags() {
        let procs = vec![
            process(10),
            shared(child(11, 10, 10, 10), Some(10), Some(10)),
            shared(child(12, 11, 10, 10), Some(10), None),
            child(13, 10, 10, 10),
        ];
        assert!(problems(procs.clone()).is_empty());
        let both = (libc::CLONE_FILES | libc::CLONE_FS) as u64;
        assert_eq!(fork_flags(&procs, 1), both);
        assert_eq!(fork_flags(&procs, 2), libc::CLONE_FILES as u64);
        assert_eq!(fork_flags(&procs, 3), 0);
        assert!((1..4).all(|i| unshare_after(&procs, i) == 0));
        assert!(restores_fds(&procs[0]) && !restores_fds(&procs[1]));
        // The working directory: by the last sharer.
        assert!(!restores_fs(&procs, 10) && restores_fs(&procs, 11));
        assert!(restores_fs(&procs, 12));
    }

    #[test]
    fn siblings_sharing_without_their_parent_share_its_then_it_leaves() {
        let procs = vec![
            process(10),
            child(11, 10, 10, 10),
            child(12, 10, 10, 10),
            shared(child(13, 10, 10, 10), Some(11), None),
            shared(child(14, 10, 10, 10), Some(11), None),
        ];
        assert!(problems(procs.clone()).is_empty());
        let files = libc::CLONE_FILES as u64;
        assert_eq!(fork_flags(&procs, 1), files);
        assert_eq!(fork_flags(&procs, 2), 0);
        assert_eq!(fork_flags(&procs, 3), files);
        assert_eq!(unshare_after(&procs, 3), 0);
        assert_eq!(unshare_after(&procs, 4), files);
    }

    #[test]
    fn shapes_restore_cannot_build_are_refused() {
        // Cousins.
        let cousins = vec![
            process(10),
            child(11, 10, 10, 10),
            child(12, 10, 10, 10),
            child(13, 11, 10, 10),
            shared(child(14, 12, 10, 10), Some(13), None),
        ];
        let p = problems(cousins);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "sharing");
        assert!(p[0].message.contains("13, 14"), "{}", p[0].message);
        // A parent sharing with its own parent hands another table to its children.
        let nested = vec![
            process(10),
            shared(child(11, 10, 10, 10), Some(10), None),
            child(12, 11, 10, 10),
            shared(child(13, 11, 10, 10), Some(12), None),
        ];
        let p = problems(nested);
        assert!(p.iter().any(|p| p.message.contains("parent 11")), "{p:?}");
        // Two groups of siblings created alternately.
        let alternate = vec![
            process(10),
            child(11, 10, 10, 10),
            child(12, 10, 10, 10),
            shared(child(13, 10, 10, 10), Some(11), None),
            shared(child(14, 10, 10, 10), Some(12), None),
        ];
        let p = problems(alternate);
        assert!(
            p.iter().any(|p| p.message.contains("between them")),
            "{p:?}"
        );
    }

    #[test]
    fn references_that_are_not_a_first_sharer_are_malformed() {
        let later = vec![shared(process(10), Some(11), None), child(11, 10, 10, 10)];
        assert_eq!(problems(later)[0].code, "malformed");
        let chain = vec![
            process(10),
            shared(child(11, 10, 10, 10), None, Some(10)),
            shared(child(12, 10, 10, 10), None, Some(11)),
        ];
        assert_eq!(problems(chain)[0].code, "malformed");
        let mut with_fds = shared(child(11, 10, 10, 10), Some(10), None);
        with_fds.fds.push(fd(3, eventfd()));
        assert_eq!(problems(vec![process(10), with_fds])[0].code, "malformed");
    }

    #[test]
    fn sharing_fs_across_a_mount_namespace_is_refused() {
        let mut c = shared(child(11, 10, 10, 10), None, Some(10));
        c.namespaces.push(("mnt".into(), 7));
        let p = problems(vec![process(10), c]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message.contains("mount or user namespace"),
            "{}",
            p[0].message
        );
    }
}
