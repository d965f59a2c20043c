//! Terminals: settings, window size, controlling terminal.

use crate::error::RestoreResult as Result;
use crate::remote::{Ctx, move_fd, take_remote_fd};

// ---- restore (stage) ----

/// `--new-tty`: descriptor `f`, inherited from the terminal, becomes the new terminal
/// (ckpt's descriptor `slave`; one open description, as a terminal's 0-2 usually share)
/// instead of ours.
pub(crate) fn place_new_tty(cx: &mut Ctx<'_>, f: &crate::model::Fd, slave: i32) -> Result<()> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
    move_fd(cx, n, f.fd, f.cloexec)
}
