//! External resources: descriptors leading outside the tree, given back at restore
//! with --inherit-fd.

use crate::model::{Fd, FdKind};

// ---- collect (dump) ----

/// Record descriptor `f`, which leads outside the dumped tree (`--external`), as the
/// external resource `key` (`pipe:[N]`, `socket:[N]`): restore takes it from
/// `--inherit-fd FD:key`.
pub(crate) fn mark_external(f: &mut Fd, key: String, flags: u32) {
    f.kind = FdKind::External { key, flags };
}
