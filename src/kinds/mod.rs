//! One module per kind of kernel object ckpt checkpoints, each holding its collect (dump),
//! its checks (plan) and its restore (stage) together. dump/ and restore/ only order the
//! steps; the dispatch over descriptor kinds is one match per phase, in [`fd`].

pub(crate) mod cglimits;
pub(crate) mod cgroup;
pub(crate) mod check;
pub(crate) mod fd;
pub(crate) mod ipc;
pub(crate) mod mem;
pub(crate) mod mnt;
pub(crate) mod ns;
pub(crate) mod task;
#[cfg(test)]
pub(crate) mod testutil;
pub(crate) mod userns;

#[cfg(test)]
mod sequences;

use crate::error::DumpError;

// ---- collect (dump) ----

/// A dump refused for process `pid`, saying why.
pub(crate) fn unsupported(pid: i32, why: impl Into<String>) -> DumpError {
    DumpError::Unsupported {
        pid,
        why: why.into(),
    }
}
