//! Process attributes: resource limits, prctl state, personality, the mm fields
//! (PR_SET_MM_MAP), working directory and root.

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::task::creds::RLIMIT_NAMES;
use crate::model::Process;
use crate::sys::proc as procfs;

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

/// The auxiliary vector and the process name are of sane size.
pub(crate) fn check_auxv_comm(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.mm.auxv.len() > 128 || proc_.comm.len() > 64 {
        check::p(problems, "malformed", "invalid auxv or process name".into());
    }
}

/// The process's root and working directories exist here.
pub(crate) fn check_dirs(proc_: &Process, problems: &mut Vec<Problem>) {
    match std::fs::metadata(procfs::bytes_path(&proc_.root)) {
        Ok(m) if m.is_dir() => {}
        _ => check::p(
            problems,
            "file-missing",
            format!("root directory {} does not exist", check::show(&proc_.root)),
        ),
    }
    match std::fs::metadata(procfs::bytes_path(&proc_.cwd)) {
        Ok(m) if m.is_dir() => {}
        _ => check::p(
            problems,
            "file-missing",
            format!(
                "working directory {} does not exist",
                check::show(&proc_.cwd)
            ),
        ),
    }
}
