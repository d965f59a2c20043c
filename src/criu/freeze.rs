//! After a DUMP that killed the tree: wait until it is gone (runc removes the container
//! as soon as ckpt answers, which fails while a process of it is still exiting). The
//! freeze itself (`freeze_cgroup`) is the engine's (`dump --freeze-cgroup`, see
//! `dump/freezer.rs`), which also refuses a cgroup holding processes outside the tree.

use std::collections::BTreeSet;
use std::path::Path;

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
