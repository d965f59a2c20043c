//! Shared memory: shared anonymous objects (one for the tree) and System V segments
//! attached to the processes.

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{Process, VmaKind};
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// The System V segments the process attached must not exist here (their IDs and keys
/// are taken again).
pub(crate) fn check_sysv_free(proc_: &Process, problems: &mut Vec<Problem>) {
    for v in &proc_.vmas {
        if let VmaKind::SysvShm { key, shmid, .. } = v.kind {
            if let Ok(segs) = procfs::sysv_shm() {
                if segs.iter().any(|s| s.1 == shmid) {
                    check::p(
                        problems,
                        "sysv-taken",
                        format!("System V shared memory ID {shmid} is in use on this host"),
                    );
                }
                if key != 0 && segs.iter().any(|s| s.0 == key) {
                    check::p(
                        problems,
                        "sysv-taken",
                        format!("System V shared memory key {key:#x} is in use on this host"),
                    );
                }
            }
        }
    }
}
