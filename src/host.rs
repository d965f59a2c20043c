//! What a command-line front end needs to do to its own process around a dump or a
//! restore: signal dispositions, inherited descriptors, privileges, waiting for a child.
//! Small safe wrappers of the kernel calls in `sys`, so that a program built on this
//! library (such as the `ckpt` binary) needs no kernel calls of its own.

use crate::error::SysError;
use crate::sys;

/// Let SIGPIPE end this process (its default action), as it does other command-line
/// tools: writing to a reader that went away (`ckpt inspect IMG | head`) then ends the
/// program quietly instead of failing with EPIPE.
pub fn die_on_broken_pipe() {
    sys::process::set_signal_ignored(libc::SIGPIPE, false);
}

/// Ignore SIGPIPE again: after a dump to standard output ended because its reader went
/// away, the flush of what is left buffered at exit must not end the process by the
/// signal instead of its exit status.
pub fn ignore_broken_pipe() {
    sys::process::set_signal_ignored(libc::SIGPIPE, true);
}

/// Ignore SIGINT and SIGQUIT in this process, as a shell waiting for its foreground job
/// does: the keyboard's signals are for the restored tree, which shares the terminal.
pub fn ignore_keyboard_signals() {
    sys::process::set_signal_ignored(libc::SIGINT, true);
    sys::process::set_signal_ignored(libc::SIGQUIT, true);
}

/// Close every descriptor of this process above standard error (those it inherited).
/// Call it before opening any descriptor of its own.
pub fn close_inherited_fds() {
    sys::process::close_fds_from(3);
}

/// Make this process's descriptor `dst` a copy of its descriptor `src` (dup2): a
/// front end that puts a descriptor it was given where the restored processes'
/// standard descriptors come from.
pub fn put_fd_at(src: i32, dst: i32) -> Result<(), SysError> {
    sys::file::dup2(src, dst)
}

/// This process runs with effective user ID 0 (which dump and restore need).
pub fn is_root() -> bool {
    sys::process::is_root()
}

/// Wait for the child `pid` to end; returns its wait status (as `wait4` reports it).
pub fn wait_child(pid: i32) -> Result<i32, SysError> {
    sys::process::wait_exit(pid)
}

/// This process was started with privileges its caller does not have: a setuid or
/// setgid executable, or file capabilities (the kernel then sets `AT_SECURE` in its
/// auxiliary vector). ckpt reads and writes any process's memory: it must only ever run
/// with its caller's own privileges. `None` when the auxiliary vector cannot be read.
pub fn started_with_elevated_privileges() -> Option<bool> {
    const AT_SECURE: u64 = 23;
    let v = sys::proc::auxv(std::process::id() as i32).ok()?;
    Some(v.chunks_exact(2).any(|kv| kv[0] == AT_SECURE && kv[1] != 0))
}

/// Write `data` to the file at `path` (relative to the working directory ckpt started
/// in) as ckpt's own mount namespace shows it, also once a restore moved ckpt into the
/// tree's mount namespace (a `--pid-file`).
pub fn write_host_file(path: &std::path::Path, data: &[u8]) -> Result<(), SysError> {
    crate::sys::pathfd::write_own_view(path, data)
}

/// Point standard output at /dev/null (`restore --detach --lazy`: the caller reading
/// the PID sees the end of the output while ckpt stays to copy memory).
pub fn close_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = sys::file::dup2(null.as_raw_fd(), 1);
    }
}
