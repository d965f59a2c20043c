//! Credentials: user and group IDs, supplementary groups, capabilities, securebits (per
//! thread), and what ckpt's own privileges allow.

use super::query::ThreadInjected;
use super::threads::FrozenThread;
use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::Creds;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// Credentials belong to each thread; the image keeps one set per process (as a program
/// changing them through libc sets them in every thread). Refuse a process whose threads
/// differ, rather than give them all the leader's.
pub(crate) fn same_creds_in_threads(
    pid: i32,
    threads: &[FrozenThread],
    creds: &Creds,
    thread_inj: &[ThreadInjected],
) -> Result<()> {
    for (t, ti) in threads.iter().zip(thread_inj).skip(1) {
        let theirs = procfs::status(t.tid)?.creds(ti.securebits);
        if theirs != *creds {
            return Err(unsupported(
                pid,
                format!(
                    "thread {} has other credentials (uids, gids, groups, capabilities, \
                     securebits, no_new_privs or seccomp) than the process's first thread; \
                     threads with different credentials are not supported yet",
                    t.tid
                ),
            ));
        }
    }
    Ok(())
}
