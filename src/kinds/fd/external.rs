//! External resources: descriptors leading outside the tree, given back at restore
//! with --inherit-fd.

use crate::error::{RestoreError, RestoreResult as Result};
use crate::remote::{Ctx, take_remote_fd};

// ---- restore (stage) ----

/// ckpt's own descriptor given with --inherit-fd for external resource `key` (checked
/// by plan), taken into the process for descriptor `f`; returns its number there.
pub(crate) fn take_external(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    key: &str,
    inherit: &[(i32, String)],
) -> Result<u64> {
    let n = inherit
        .iter()
        .find(|(_, k)| k == key)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            RestoreError::Stage(format!("descriptor {}: no --inherit-fd for {key}", f.fd))
        })?;
    let me = std::process::id() as i32;
    let what = format!("take --inherit-fd {n}:{key} for descriptor {}", f.fd);
    take_remote_fd(cx, me, n as u64, &what)
}
