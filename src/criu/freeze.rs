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
    let in_cgroup = cgroup_procs(dir)
        .map_err(|e| format!("freeze_cgroup {shown}: cannot read its processes: {e}"))?;
    let tree = tree_of(pid)
        .map_err(|e| format!("freeze_cgroup {shown}: cannot list the tree of {pid}: {e}"))?;
    let strangers: Vec<String> = in_cgroup.difference(&tree).map(|p| describe(*p)).collect();
    let outside: Vec<String> = tree.difference(&in_cgroup).map(|p| describe(*p)).collect();
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

/// `pid` and its descendants.
fn tree_of(pid: i32) -> Result<BTreeSet<i32>, String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if out.insert(p) {
            todo.extend(crate::sys::proc::children(p).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// "PID (COMM)".
fn describe(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("{pid} ({})", comm.trim())
}
