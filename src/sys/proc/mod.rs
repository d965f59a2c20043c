//! /proc readers. Paths are kept as raw bytes (they need not be UTF-8).
//!
//! By topic, in private modules whose items are re-exported here (callers use
//! `sys::proc::NAME`):
//! - `maps.rs`: the memory map (/proc/PID/maps and smaps, [`MapEntry`]), shared-memory
//!   data ranges and System V segments;
//! - `pagemap.rs`: /proc/PID/pagemap words and the `PAGEMAP_SCAN` ioctl ([`Pagemap`]);
//! - `task.rs`: a process and its threads: status ([`Status`]), stat ([`Stat`]), auxv,
//!   personality, thread IDs, children, namespaces, pending signals, POSIX timers;
//! - `fd.rs`: descriptors: the fd list, fdinfo and its parsers (epoll, timerfd, inotify),
//!   a file's identity ([`FileIdent`]);
//! - `locks.rs`: file locks (/proc/locks, fdinfo "lock:" lines) and who holds a file.
//!
//! Here: reading a /proc file (`read`, `read_chunked`: shared by the modules) and raw-byte
//! paths.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Result, SysError};

mod fd;
mod locks;
mod maps;
mod pagemap;
mod task;

pub use fd::{
    FileIdent, fdinfo, fdinfo_field, fdinfo_text, fds, file_id, file_stat, parse_epoll_targets,
    parse_inotify_watches, parse_timespec_pair,
};
pub use locks::{
    LockLine, all_locks, holders_of, parse_lock_line, pipe_holders_outside, socket_holders_outside,
};
pub use maps::{
    MapEntry, maps, merge_vmflags, shmem_data_ranges, smaps, sysv_shm, sysv_shm_attached,
};
pub use pagemap::{
    PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PM_FILE,
    PM_GUARD_REGION, PM_PRESENT, PM_SWAP, Pagemap, ScanRange,
};
pub use task::{
    Stat, Status, auxv, children, limits, oom_score_adj, personality, pid_namespace, posix_timers,
    shadow_stack, signal_quiet, stat, status, task_ids, thread_comm, thread_nspid, timerslack_ns,
    wchan,
};

/// Read a /proc file whole. `fs::read` starts with 32-byte reads and doubles them (a
/// /proc file has no size), which took nine `read`s for ckpt's own maps; one of 16 KiB
/// takes all of a usual file at once. (Not for smaps: see `maps::SMAPS_READ`.)
fn read(path: String) -> Result<Vec<u8>> {
    read_chunked(path, 16 << 10)
}

/// Read a seq_file in `read`s of `chunk` bytes.
fn read_chunked(path: String, chunk: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(&path).map_err(|e| SysError::io(format!("open {path}"), e))?;
    let mut out = Vec::new();
    loop {
        let len = out.len();
        out.resize(len + chunk, 0);
        match f.read(&mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                return Ok(out);
            }
            Ok(n) => out.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(len),
            Err(e) => return Err(SysError::io(format!("read {path}"), e)),
        }
    }
}

/// Read a symlink under /proc as raw bytes.
pub fn readlink(path: &str) -> Result<Vec<u8>> {
    fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .map_err(|e| SysError::io(format!("readlink {path}"), e))
}

pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}
