//! CRIU's `freeze_cgroup` (runc sends its container's freezer cgroup with every DUMP).
//!
//! Until ckpt freezes through the cgroup freezer, the one function here checks that the
//! cgroup holds exactly the tree being dumped (so that freezing the tree by ptrace, as
//! the engine does, freezes everything the caller expects frozen), and refuses naming
//! any process that is in one but not the other. The dump then freezes by ptrace.

use std::collections::BTreeSet;
use std::path::Path;

/// The `freeze_cgroup` of a DUMP of the tree of `pid`: `dir` (a cgroup directory, v1
/// freezer or v2) and its sub-cgroups must hold the tree's processes and no other.
pub fn freeze_cgroup(dir: &Path, pid: i32) -> Result<(), String> {
    let shown = dir.display();
    let procs = || {
        cgroup_procs(dir)
            .map_err(|e| format!("freeze_cgroup {shown}: cannot read its processes: {e}"))
    };
    let in_cgroup = procs()?;
    // (The tree runs meanwhile: a process that exits, or is born, between two readings
    // is no stranger.)
    let strangers: Vec<String> = in_cgroup
        .iter()
        .filter(|p| !descends_from(**p, pid))
        .map(|p| describe(*p))
        .collect();
    let tree = tree_of(pid);
    let missing: Vec<i32> = tree.difference(&in_cgroup).copied().collect();
    let outside: Vec<String> = if missing.is_empty() {
        Vec::new()
    } else {
        let again = procs()?;
        missing
            .into_iter()
            .filter(|p| !again.contains(p) && crate::sys::proc::status(*p).is_ok())
            .map(describe)
            .collect()
    };
    let mut why = Vec::new();
    if !strangers.is_empty() {
        why.push(format!(
            "it holds processes outside the tree of {pid}: {}",
            strangers.join(", ")
        ));
    }
    if !outside.is_empty() {
        why.push(format!(
            "processes of the tree of {pid} are not in it: {}",
            outside.join(", ")
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "freeze_cgroup {shown}: ckpt freezes the tree with ptrace, and the cgroup must \
             hold exactly that tree; {}",
            why.join("; ")
        ))
    }
}

/// How long a killed tree may take to be gone.
const GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// After a DUMP that killed the tree of `pid`: wait until cgroup `dir` (the
/// `freeze_cgroup`, which held exactly the tree) has no process left, and the root is
/// dead.
pub fn wait_emptied(dir: &Path, pid: i32) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    loop {
        let left = cgroup_procs(dir).unwrap_or_default();
        if left.is_empty() {
            return wait_emptied_tree(pid);
        }
        if t0.elapsed() > GONE_WITHIN {
            return Err(format!(
                "freeze_cgroup {}: processes {left:?} of the killed tree are still there",
                dir.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// After a DUMP that killed the tree of `pid`: wait until its root is dead (a zombie
/// for its parent to collect, or gone).
pub fn wait_emptied_tree(pid: i32) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    loop {
        match crate::sys::proc::status(pid) {
            Err(_) => return Ok(()),
            Ok(s) if matches!(s.state, 'Z' | 'X' | 'x') => return Ok(()),
            Ok(_) if t0.elapsed() > GONE_WITHIN => {
                return Err(format!("the killed process {pid} is still there"));
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
}

/// The processes of cgroup `dir` and of its sub-cgroups.
fn cgroup_procs(dir: &Path) -> std::io::Result<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    out.extend(
        text.split_whitespace()
            .filter_map(|x| x.parse::<i32>().ok()),
    );
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.extend(cgroup_procs(&e.path())?);
        }
    }
    Ok(out)
}

/// `pid` and its descendants (those that exit meanwhile may be missing).
fn tree_of(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if out.insert(p) {
            todo.extend(crate::sys::proc::children(p).unwrap_or_default());
        }
    }
    out
}

/// Whether process `p` is `root` or below it (by its parents); a process gone
/// meanwhile counts as below (it is no stranger that stays).
fn descends_from(mut p: i32, root: i32) -> bool {
    for _ in 0..4096 {
        if p == root {
            return true;
        }
        match crate::sys::proc::status(p) {
            Ok(s) if s.ppid > 0 => p = s.ppid,
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// "PID (COMM)".
fn describe(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("{pid} ({})", comm.trim())
}
