//! epoll instances and the descriptors they watch.

use crate::arch::x86::nr;
use crate::error::RestoreResult as Result;
use crate::kinds::fd::anon::keep_flags;
use crate::model::FdKind;
use crate::remote::Ctx;

// ---- restore (stage) ----

/// A new epoll instance (its registrations come later: [`register_targets`]).
pub(crate) fn create_epoll(cx: &mut Ctx<'_>, flags: u32) -> Result<u64> {
    cx.call(
        "epoll_create1",
        nr::EPOLL_CREATE1,
        [keep_flags(flags, 0), 0, 0, 0, 0, 0],
    )
}

/// Register the watched descriptors of the process's epoll instances, once every
/// descriptor they watch exists.
pub(crate) fn register_targets(cx: &mut Ctx<'_>) -> Result<()> {
    let proc_ = cx.proc_;
    for f in &proc_.fds {
        if let FdKind::Epoll { targets, .. } = &f.kind {
            for t in targets {
                let mut ev = Vec::with_capacity(12);
                ev.extend_from_slice(&t.events.to_le_bytes());
                ev.extend_from_slice(&t.data.to_le_bytes());
                let a = cx.put(0, &ev)?;
                cx.call(
                    &format!("epoll_ctl(ADD {})", t.fd),
                    nr::EPOLL_CTL,
                    [f.fd as u64, 1, t.fd as u64, a, 0, 0],
                )?;
            }
        }
    }
    Ok(())
}
