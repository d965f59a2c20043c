//! Helpers shared by the plan checks of the kinds: recording a problem, showing a path.

use crate::error::Problem;

/// Record a problem.
pub(crate) fn p(problems: &mut Vec<Problem>, code: &'static str, message: String) {
    problems.push(Problem { code, message });
}

/// Bytes (a path, a name) as text.
pub(crate) fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the dumped tree itself holds right now, for the plan dump runs on what it
/// collected before it kills anything: all of it is free once the tree is gone, so the
/// host checks count it as free. Empty (the default) for a restore, whose checks are
/// unchanged by it.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The image's tree is running now (a dump): what its image records it holds, it
    /// holds (its bound UDP addresses, its external descriptors...).
    pub(crate) live: bool,
    /// Its PIDs and thread IDs (as this host sees them).
    pub(crate) pids: std::collections::BTreeSet<i32>,
    /// Inodes of the sockets its descriptors lead to.
    pub(crate) sockets: std::collections::BTreeSet<u64>,
    /// System V segments that go away with it: removed (SHM_DEST) and attached by no one
    /// else.
    pub(crate) sysv: std::collections::BTreeSet<i32>,
    /// Its System V objects (`kinds::ipc`), by kind (0 segment, 1 semaphores, 2 queue)
    /// and ID: removed once it is killed.
    pub(crate) sysv_ipc: std::collections::BTreeSet<(u8, i32)>,
    /// The file locks it holds (its descriptors' fdinfo "lock:" lines).
    pub(crate) locks: Vec<crate::sys::proc::LockLine>,
}

impl Held {
    /// Whether `pid` (a PID or thread ID) is the tree's own.
    pub(crate) fn pid(&self, pid: i32) -> bool {
        self.pids.contains(&pid)
    }
}
