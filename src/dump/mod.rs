//! Dump: freeze -> collect -> write -> release.
//!
//! The target is seized with PTRACE_SEIZE (so it is detached, and runs on, if ckpt dies)
//! and interrupted. Collection is read-only wherever the kernel allows (/proc, regsets,
//! process_vm_readv); the few things only the task itself can tell (signal dispositions,
//! sigaltstack, clear_child_tid, parent-death signal, brk) are read by injected system
//! calls that return through a signal frame holding each thread's own context
//! (`kinds::task::query`), so that a ckpt killed meanwhile leaves the task as it was.
//! The image goes to an unnamed file next to the output, is fsynced and named; only
//! then is the target killed (or let go with `--leave-running`). Any failure, and
//! SIGTERM, SIGINT, SIGHUP, SIGQUIT or SIGPIPE before that point, leaves the target
//! running as before and no file at the output path.

mod collect;
mod freezer;
mod write;

pub use freezer::{CgroupFreezeStats, FreezeCgroup, cgroup_at as freezable_cgroup_at};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arch;
use crate::kinds::fd::{self as fds, tcp::RepairGuard};
use crate::kinds::mem::shmem::SharedSeen;
use crate::kinds::task::threads::FrozenThread;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, SysError};

pub use crate::error::{DumpError, DumpResult as Result};

/// Where the image goes.
pub enum Output {
    Path(PathBuf),
    Stdout,
}

#[derive(Clone, Default)]
pub struct DumpOptions {
    /// Let the process run on after the dump instead of killing it.
    pub leave_running: bool,
    /// Record descriptors above 2 that lead outside the tree (a pipe or a connected unix
    /// socket whose other end a process not dumped holds) as external resources, to be
    /// given back at restore with `--inherit-fd`, instead of refusing them.
    pub external: bool,
    /// Compress page data (`--compress lz4|zstd`).
    pub compress: Compress,
    /// Called as page data is written: (bytes done, bytes at most).
    pub progress: Option<std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>>,
    /// Called at each [`DumpStep`] (the `criu` front end's notify scripts); an error
    /// ends the dump there, the tree let go as it was and no image left.
    pub hook: Option<DumpHook>,
    /// Freeze the tree with the cgroup freezer (`--freeze-cgroup`) instead of ptrace
    /// alone: the tree must be the whole cgroup (see `dump/freezer.rs`).
    pub freeze_cgroup: Option<FreezeCgroup>,
}

/// The points of a dump where a front end may act, and stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpStep {
    /// Every process of the tree is stopped; nothing is collected yet.
    Frozen,
    /// The image is complete and named; the tree is still stopped, to be killed (or
    /// let go with `leave_running`) once the hook returns.
    Written,
}

/// A front end's hook (see [`DumpOptions::hook`]): `Err(why)` stops the dump.
pub type DumpHook =
    std::sync::Arc<dyn Fn(DumpStep) -> std::result::Result<(), String> + Send + Sync>;

impl std::fmt::Debug for DumpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpOptions")
            .field("leave_running", &self.leave_running)
            .field("external", &self.external)
            .field("compress", &self.compress)
            .field("progress", &self.progress.is_some())
            .field("hook", &self.hook.is_some())
            .field("freeze_cgroup", &self.freeze_cgroup)
            .finish()
    }
}

/// How page data is stored in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compress {
    /// As it is (the fastest to dump and restore).
    #[default]
    None,
    /// LZ4 blocks, one per page record: smaller images for memory that compresses, at a
    /// CPU cost on both sides.
    Lz4,
    /// zstd frames (level 3), one per page record: smaller images than lz4, at a
    /// higher CPU cost when dumping.
    Zstd,
}

/// What a dump did and how long it took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DumpStats {
    pub pid: i32,
    pub processes: usize,
    pub vmas: usize,
    pub pages_written: u64,
    pub zero_pages_skipped: u64,
    pub image_bytes: u64,
    /// How long the target was stopped.
    pub frozen: Duration,
    pub total: Duration,
    /// How long stopping every thread of the tree took (part of `frozen`).
    #[serde(skip)]
    pub freezing: Duration,
    /// The same, in microseconds.
    pub freezing_us: u64,
    /// How long writing the image took (part of `frozen`).
    #[serde(skip)]
    pub writing: Duration,
    /// Things the user should know (the dump succeeded).
    pub warnings: Vec<String>,
    /// The cgroup frozen with `--freeze-cgroup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_freeze: Option<CgroupFreezeStats>,
}

/// The seized target, every thread stopped. Dropping it without `kill` lets the task run
/// on exactly as before: registers and signal masks are put back and it is detached.
pub(crate) struct Frozen {
    pub pid: i32,
    /// The thread-group leader first.
    pub threads: Vec<FrozenThread>,
    done: bool,
}

fn task_ids(pid: i32) -> Result<Vec<i32>> {
    sys::proc::task_ids(pid).map_err(|e| {
        if e.errno() == Some(libc::ENOENT) {
            DumpError::Exited(pid)
        } else {
            DumpError::Sys(e)
        }
    })
}

/// Stop one thread: seize, interrupt, wait for the interrupt stop. Ok(None) if the
/// thread exited meanwhile. `pre`: the thread was seized already (by the cgroup
/// freeze), and interrupted if true.
fn freeze_thread(tid: i32, pre: Option<bool>) -> Result<Option<FrozenThread>> {
    // Seccomp is suspended while ckpt traces the thread (PTRACE_O_SUSPEND_SECCOMP, until
    // the detach), so that its filters (or strict mode) cannot deny or kill on the calls
    // dump injects; without CAP_SYS_ADMIN the kernel refuses the option (EPERM), and the
    // thread is seized without it (reading its filters needs CAP_SYS_ADMIN anyway).
    let opts = libc::PTRACE_O_TRACESYSGOOD;
    let seized = match pre {
        Some(_) => Ok(()),
        None => match ptrace::seize(tid, opts | libc::PTRACE_O_SUSPEND_SECCOMP) {
            Err(e) if e.errno() == Some(libc::EPERM) => ptrace::seize(tid, opts),
            r => r,
        },
    };
    match seized {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let fail = |e: SysError| {
        let _ = ptrace::detach(tid, 0);
        DumpError::Sys(e)
    };
    // A task seized in a group-stop (stopped by job control) has trapped already:
    // PTRACE_SEIZE waits for that. Interrupting it too would leave a second trap
    // pending, taken as soon as it is resumed. Anything else is interrupted.
    let mut first = ptrace::try_wait(tid).map_err(fail)?;
    let mut interrupted = pre == Some(true);
    let group_stop;
    loop {
        let stop = match first.take() {
            Some(stop) => stop,
            None => {
                if !interrupted {
                    ptrace::interrupt(tid).map_err(fail)?;
                    interrupted = true;
                }
                ptrace::wait(tid).map_err(fail)?
            }
        };
        match stop {
            // A task seized in a group-stop (stopped by job control) traps with the
            // signal that stopped it, a running one with SIGTRAP. It stays stopped: when
            // it is let go (detached), the kernel puts it back into the group-stop
            // without telling its parent again, also if ckpt dies.
            Stop::Event(sig) => {
                group_stop = (sig != libc::SIGTRAP).then_some(sig);
                break;
            }
            // A signal was being delivered as we stopped it: let it be delivered
            // (it happened before the checkpoint) and wait for the interrupt stop.
            Stop::Signal(sig) => ptrace::cont(tid, sig).map_err(fail)?,
            Stop::Exited(_) | Stop::Killed(_) => return Ok(None),
            Stop::Syscall | Stop::OtherEvent(_) => ptrace::cont(tid, 0).map_err(fail)?,
        }
    }
    let mut orig_regs = ptrace::get_regs(tid).map_err(fail)?;
    // A wait that our interrupt made fail with EINTR is turned into an interrupted call
    // the kernel restarts, in the task itself at once (it runs on right even if ckpt
    // dies) and so in the image.
    if let Some(regs) = restart_if_interrupted(tid, &orig_regs) {
        ptrace::set_regs(tid, &regs).map_err(fail)?;
        orig_regs = regs;
    }
    let orig_sigmask = ptrace::get_sigmask(tid).map_err(fail)?;
    Ok(Some(FrozenThread {
        tid,
        orig_regs,
        orig_sigmask,
        injected: false,
        group_stop,
    }))
}

/// The registers with which thread `tid`, stopped at `regs`, runs on as if the freeze
/// had not woken it (see `arch::native::restart_interrupted_wait`), and re-issues a call
/// it would have resumed through its restart block where that loses nothing (see
/// `arch::native::restart_block_in_place`); None to keep `regs`.
fn restart_if_interrupted(tid: i32, regs: &arch::Regs) -> Option<arch::Regs> {
    if let Some(r) = arch::native::restart_block_in_place(regs) {
        return Some(r);
    }
    arch::native::restart_interrupted_wait(regs, |addr| {
        let mut code = [0u8; 2];
        let mem = sys::mem::RemoteMem::open(tid).ok()?;
        mem.read(addr, &mut code).ok()?;
        Some(code)
    })
}

impl Frozen {
    /// Stop every thread. Threads created while we freeze are caught by listing the
    /// thread group again until a listing shows no thread we have not stopped (a
    /// stopped thread cannot create more).
    fn freeze(pid: i32, seized: &mut freezer::Seized) -> Result<Self> {
        let mut fr = Self {
            pid,
            threads: Vec::new(),
            done: false,
        };
        let mut gone = std::collections::BTreeSet::new();
        for _round in 0..1000 {
            let mut new = false;
            for tid in task_ids(pid)? {
                if fr.threads.iter().any(|t| t.tid == tid) || gone.contains(&tid) {
                    continue;
                }
                new = true;
                match freeze_thread(tid, seized.take(tid))? {
                    Some(t) => fr.threads.push(t),
                    None if tid == pid => return Err(DumpError::Exited(pid)),
                    None => {
                        gone.insert(tid);
                    }
                }
            }
            if !new {
                // The leader first.
                fr.threads.sort_by_key(|t| (t.tid != pid, t.tid));
                if fr.threads.first().map(|t| t.tid) != Some(pid) {
                    return Err(DumpError::Exited(pid));
                }
                return Ok(fr);
            }
        }
        Err(DumpError::Unsupported {
            pid,
            why: "it keeps creating threads faster than they can be stopped".into(),
        })
    }

    /// Put the task back as it was and let it run.
    fn let_go(&mut self) -> Result<()> {
        self.done = true;
        let mut first_err = None;
        for t in &self.threads {
            let regs = if t.injected {
                arch::native::release_regs(&t.orig_regs)
            } else {
                t.orig_regs
            };
            // The mask first: a ckpt that dies between the two leaves registers that
            // return through the injected signal frame, which restores the mask too
            // (see kinds::task::query), never the task's own code under a blocked mask.
            let r = ptrace::set_sigmask(t.tid, t.orig_sigmask)
                .and_then(|()| ptrace::set_regs(t.tid, &regs))
                .and_then(|()| ptrace::detach(t.tid, 0));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Kill the task (after a complete image).
    fn kill(&mut self) -> Result<()> {
        self.done = true;
        sys::process::kill(self.pid, libc::SIGKILL)?;
        for t in &self.threads {
            let _ = ptrace::detach(t.tid, 0);
        }
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.let_go();
        }
    }
}

/// How much of the image is written before its writeback to disk is started.
const WRITEBACK_STEP: u64 = 1 << 20;

/// The output file while it is written: unnamed and 0600 (`sys::tmpfile`), named
/// only by [`TempOutput::commit`]; dropped before that, it leaves nothing.
struct TempOutput {
    name: sys::tmpfile::TmpFile,
    dest: PathBuf,
}

impl TempOutput {
    fn create(dest: &Path) -> Result<(Self, File)> {
        let (name, f) =
            sys::tmpfile::TmpFile::create(dest).map_err(|source| DumpError::Output {
                path: dest.to_path_buf(),
                source,
            })?;
        Ok((
            Self {
                name,
                dest: dest.to_path_buf(),
            },
            f,
        ))
    }

    fn commit(self, f: File) -> Result<()> {
        let TempOutput { name, dest } = self;
        name.commit(f, &dest)
            .map_err(|source| DumpError::Output { path: dest, source })
    }
}

/// `ours`: ckpt seized the process already (the cgroup freeze), so it shows as traced.
fn precheck(pid: i32, ours: bool) -> Result<()> {
    if pid <= 0 {
        return Err(DumpError::NoProcess(pid));
    }
    if pid as u32 == std::process::id() {
        return Err(DumpError::Unsupported {
            pid,
            why: "ckpt cannot dump itself".into(),
        });
    }
    let st = match sys::proc::status(pid) {
        Ok(s) => s,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Err(DumpError::NoProcess(pid)),
        Err(e) => return Err(e.into()),
    };
    let unsupported = |why: String| Err(DumpError::Unsupported { pid, why });
    if st.tgid != pid {
        return unsupported(format!(
            "{pid} is a thread of process {}; give the process ID",
            st.tgid
        ));
    }
    match st.state {
        'Z' | 'X' => return unsupported("it is a zombie (it has exited)".into()),
        't' if !ours => {
            return unsupported(
                "it is being traced by another process (a debugger?); detach it first".into(),
            );
        }
        _ => {}
    }
    Ok(())
}

/// How many PID namespaces deep ckpt itself runs (1 in the initial one).
fn own_pidns_depth() -> Result<usize> {
    Ok(sys::proc::status(std::process::id() as i32)?.nspid.len())
}

/// Where the dumped tree lives among PID namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidnsShape {
    /// In ckpt's own.
    Ckpts,
    /// In one of its own, one level below ckpt's, whose init is the root.
    OwnInit,
    /// In one a level below ckpt's whose init is not in the tree (the root is PID 2 or
    /// more there).
    InitOutside,
}

/// Where the tree rooted at `root` lives among PID namespaces: in ckpt's, as the init
/// (PID 1) of a namespace one level below ckpt's, or inside such a namespace without its
/// init. A deeper one is refused, naming what to do instead.
fn root_pid_namespace(root: i32) -> Result<PidnsShape> {
    let own = own_pidns_depth()?;
    let st = sys::proc::status(root)?;
    match st.nspid.len() {
        n if n == own => Ok(PidnsShape::Ckpts),
        n if n == own + 1 && st.nspid.last() == Some(&1) => Ok(PidnsShape::OwnInit),
        n if n == own + 1 => Ok(PidnsShape::InitOutside),
        _ => Err(DumpError::Unsupported {
            pid: root,
            why: format!(
                "it runs in a PID namespace nested {} levels below ckpt's (NSpid {:?}); \
                 run ckpt in the parent of its namespace, or dump the tree from an \
                 ancestor one level below ckpt's",
                st.nspid.len().saturating_sub(own),
                st.nspid
            ),
        }),
    }
}

/// The refusal of process `pid`, which is in a PID namespace nested inside the dumped
/// tree (see docs/ARCHITECTURE.md, "PID namespaces": what restoring one would take).
fn nested_pidns(pid: i32) -> DumpError {
    let nspid = sys::proc::status(pid).map(|s| s.nspid).unwrap_or_default();
    let ns = sys::proc::pid_namespace(pid)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    DumpError::Unsupported {
        pid,
        why: format!(
            "it is in a PID namespace nested inside the dumped tree ({ns}, made by its \
             parent with CLONE_NEWPID or unshare; its IDs from ckpt's namespace inward: \
             NSpid {nspid:?}); restoring PID namespaces nested in a tree is not supported \
             yet (dump a process of that namespace instead)"
        ),
    }
}

/// A process whose next children go to another PID namespace than its own (it called
/// unshare(CLONE_NEWPID), or setns into one below it) is refused: restore would fork
/// them into its own. (Its children already there are refused as [`nested_pidns`].)
fn refuse_pid_ns_for_children(pid: i32, ns: &std::path::Path) -> Result<()> {
    let p = format!("/proc/{pid}/ns/pid_for_children");
    let kids = match std::fs::read_link(&p) {
        Ok(k) => k,
        // The kernel shows no namespace that has no init yet: the (frozen, live) process
        // called unshare(CLONE_NEWPID) and did not fork since.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(DumpError::Unsupported {
                pid,
                why: "it called unshare(CLONE_NEWPID) and has not forked since: its next \
                      child would be PID 1 of a new PID namespace, which restore does not \
                      make again yet"
                    .into(),
            });
        }
        Err(e) => return Err(sys::SysError::io(format!("readlink {p}"), e).into()),
    };
    if kids.as_path() == ns {
        return Ok(());
    }
    Err(DumpError::Unsupported {
        pid,
        why: format!(
            "its next children go to PID namespace {} (it called unshare(CLONE_NEWPID) or \
             setns), not to its own; PID namespaces nested in the dumped tree are not \
             restored yet",
            kids.display()
        ),
    })
}

/// All children of every thread of a (frozen) process.
fn children_of(pid: i32) -> Result<Vec<i32>> {
    task_ids(pid)?;
    Ok(sys::proc::children(pid)?)
}

/// A frozen process tree: live processes stopped (every thread), zombies noted.
pub(crate) struct FrozenTree {
    /// In tree order (parents first): Some(frozen) for a live process, None for a zombie.
    pub nodes: Vec<(i32, Option<Frozen>)>,
    pub frozen_at: Instant,
}

impl FrozenTree {
    fn new() -> Self {
        FrozenTree {
            nodes: Vec::new(),
            frozen_at: Instant::now(),
        }
    }

    /// Freeze `root` and all its descendants, top-down: a process's children are listed
    /// only once all its threads are stopped, so none can be missed. `seized`: threads
    /// the cgroup freeze seized already. On failure, what was frozen stays in `tree`
    /// (let go when it is dropped).
    fn freeze(tree: &mut Self, root: i32, seized: &mut freezer::Seized) -> Result<()> {
        let root_ns = sys::proc::pid_namespace(root)?;
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(pid) = queue.pop_front() {
            let zombie = |pid| {
                sys::proc::stat(pid)
                    .map(|s| s.state == b'Z')
                    .unwrap_or(false)
            };
            if pid != root && zombie(pid) {
                tree.nodes.push((pid, None));
                continue;
            }
            if pid != root {
                precheck(pid, seized.threads.contains_key(&pid))?;
                if sys::proc::pid_namespace(pid)? != root_ns {
                    return Err(nested_pidns(pid));
                }
            }
            match Frozen::freeze(pid, seized) {
                Ok(fr) => tree.nodes.push((pid, Some(fr))),
                // A child that exited meanwhile is a zombie now (its parent is frozen
                // and cannot reap it).
                Err(DumpError::Exited(_)) if pid != root && zombie(pid) => {
                    tree.nodes.push((pid, None));
                    continue;
                }
                Err(e) => return Err(e),
            }
            queue.extend(children_of(pid)?);
        }
        for (pid, fr) in &tree.nodes {
            if fr.is_some() {
                refuse_pid_ns_for_children(*pid, &root_ns)?;
            }
        }
        Ok(())
    }

    /// The processes of the tree stopped by job control but the root, with their
    /// parents: (process, parent, the process's ID in its own PID namespace, which is
    /// how its parent names it).
    fn stopped_children(&self) -> Result<Vec<(i32, i32, i32)>> {
        let mut out = Vec::new();
        for (pid, fr) in self.nodes.iter().skip(1) {
            if let Some(fr) = fr {
                if fr.threads.iter().any(|t| t.group_stop.is_some()) {
                    let st = sys::proc::status(*pid)?;
                    let local = st.nspid.last().copied().unwrap_or(*pid);
                    out.push((*pid, st.ppid, local));
                }
            }
        }
        Ok(out)
    }

    fn let_go(&mut self) -> Result<()> {
        let mut first = None;
        for (_, fr) in self.nodes.iter_mut() {
            if let Some(fr) = fr {
                if let Err(e) = fr.let_go() {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn kill(&mut self) -> Result<()> {
        let mut first = None;
        for (_, fr) in self.nodes.iter_mut() {
            if let Some(fr) = fr {
                if let Err(e) = fr.kill() {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Dump accepts only what restore can bring back: restore's plan on what was collected,
/// on this host as it is (no CPU mask, no `--inherit-fd`, whose keys only the restore
/// has), with what the tree holds now (`held`: its IDs, sockets, locks...) counted free,
/// as it will be once the tree is gone. Any problem refuses the dump, listing them all;
/// the caller lets the tree go, untouched. (Kept too with `--leave-running`: a restore
/// on this host comes after the tree is gone.)
fn refuse_unrestorable(
    pid: i32,
    ckpt: &crate::model::Checkpoint,
    held: &crate::kinds::check::Held,
) -> Result<()> {
    let view = crate::restore::HostView {
        host: arch::HostCaps::detect(),
        policy: arch::CpuPolicy::default(),
        new_pid_namespace: false,
        inherit: Vec::new(),
        join_ns: Vec::new(),
        cgroup_root: None,
        cgroup_mode: Default::default(),
        cgroup_limits: Default::default(),
    };
    // A tree with a mount namespace of its own names its files as its namespace shows
    // them: plan opens them from a thread in that namespace.
    let problems = if crate::kinds::mnt::owned_tree(ckpt).is_some() && ckpt.ids_of_a_pid_namespace()
    {
        // Its /proc shows its PID namespace: a copy of the namespace with ckpt's.
        sys::mount::in_mount_ns_own_proc(pid, || {
            crate::restore::plan::problems_while_held(ckpt, &view, held)
        })?
    } else if crate::kinds::mnt::owned_tree(ckpt).is_some() {
        sys::mount::in_mount_ns(pid, || {
            crate::restore::plan::problems_while_held(ckpt, &view, held)
        })?
    } else {
        crate::restore::plan::problems_while_held(ckpt, &view, held)
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DumpError::Unrestorable { pid, problems })
    }
}

/// A deferred signal (see `sys::deferred`) that arrived ends the dump here, at a point
/// where dropping what is held rolls it back.
pub(crate) fn check_signals() -> Result<()> {
    match sys::deferred::pending() {
        Some(sig) => Err(DumpError::Interrupted(sig)),
        None => Ok(()),
    }
}

/// Dump the process tree rooted at `pid` to `out`.
///
/// SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGPIPE are deferred meanwhile (handlers that
/// only note them are installed, and the previous dispositions put back at the end):
/// one that arrives before the image is complete ends the dump with
/// [`DumpError::Interrupted`] once the tree is let go as it was; after that, the dump
/// completes.
pub fn dump(pid: i32, out: Output, opts: &DumpOptions) -> Result<DumpStats> {
    let _deferred = sys::deferred::Deferred::install();
    // ckpt's cgroups and cgroup mounts, as its own namespaces show them (plan's checks
    // run in the tree's mount namespace).
    sys::cgroup::prime();
    // Data queued in a terminal of the tree cannot be read without consuming it; the
    // program reads it soon (tmux its panes' output): the tree is let go and the dump
    // tried again a few times before it is refused.
    let mut tries = 1;
    let r = loop {
        match dump_tx(pid, &out, opts) {
            Err(DumpError::TtyBusy { pid, why }) if sys::deferred::pending().is_none() => {
                if tries >= TTY_TRIES {
                    break Err(DumpError::TtyBusy {
                        pid,
                        why: format!(
                            "{why}; still there after {tries} tries over {} ms",
                            (TTY_TRIES - 1) * TTY_PAUSE_MS
                        ),
                    });
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(u64::from(TTY_PAUSE_MS)));
            }
            r => break r,
        }
    };
    match (r, sys::deferred::pending()) {
        // Whatever failed (a write to a closed pipe...) failed because of the signal.
        (Err(_), Some(sig)) => Err(DumpError::Interrupted(sig)),
        (r, _) => r,
    }
}

/// Call the front end's hook at `step`, if it has one.
fn run_hook(opts: &DumpOptions, step: DumpStep) -> Result<()> {
    match &opts.hook {
        Some(h) => h(step).map_err(DumpError::Refused),
        None => Ok(()),
    }
}

/// How many times a dump that finds data queued in a terminal of the tree is tried,
/// and the pause between tries, during which the tree runs.
const TTY_TRIES: u32 = 20;
const TTY_PAUSE_MS: u32 = 25;

fn dump_tx(pid: i32, out: &Output, opts: &DumpOptions) -> Result<DumpStats> {
    let t0 = Instant::now();
    precheck(pid, false)?;
    check_signals()?;
    let (tmp, file): (Option<TempOutput>, Option<File>) = match out {
        Output::Path(p) => {
            let (t, f) = TempOutput::create(p)?;
            (Some(t), Some(f))
        }
        Output::Stdout => (None, None),
    };
    let pidns = root_pid_namespace(pid)?;
    // A tree with an IPC namespace of its own: its System V segments are read there.
    let ckpts_ns = crate::kinds::ns::own_namespaces()?;
    crate::kinds::ns::join_own_ipc(pid, sys::proc::status(pid)?.ppid, &ckpts_ns)?;
    // A tree in another network namespace: its sockets are looked at there.
    crate::kinds::ns::join_tree_net(pid, &ckpts_ns)?;
    let mut tree = FrozenTree::new();
    // With --freeze-cgroup, `cgfreeze` puts the cgroup's freeze back as it was when it
    // is dropped, before `tree` (declared before it), whose threads are let go then: a
    // v1 cgroup its owner had frozen is frozen again while they are still held.
    let mut cgfreeze = match &opts.freeze_cgroup {
        Some(how) => Some(freezer::freeze_and_seize(pid, how)?),
        None => None,
    };
    let mut no_seized = freezer::Seized::default();
    FrozenTree::freeze(
        &mut tree,
        pid,
        cgfreeze.as_mut().map_or(&mut no_seized, |c| &mut c.seized),
    )?;
    if let Some(cg) = &cgfreeze {
        let live: Vec<i32> = tree
            .nodes
            .iter()
            .filter(|(_, f)| f.is_some())
            .map(|(p, _)| *p)
            .collect();
        freezer::refuse_outside(cg, pid, &live)?;
    }
    let freezing = tree.frozen_at.elapsed();
    run_hook(opts, DumpStep::Frozen)?;
    let mut seen = SharedSeen::new();
    let mut processes = Vec::new();
    let mut procs = Vec::new();
    let stopped = tree.stopped_children()?;
    // The semaphore sets the frozen tree works on: the undo adjustments asked of its
    // processes (see kinds::ipc).
    let tree_pids: std::collections::BTreeSet<i32> = tree.nodes.iter().map(|(p, _)| *p).collect();
    let undo_sets = crate::kinds::ipc::undo_candidates(&tree_pids)?;
    for (p, fr) in tree.nodes.iter_mut() {
        check_signals()?;
        // As the parent sees them (in the tree's own PID namespace, if it has one).
        let kids: Vec<i32> = stopped
            .iter()
            .filter(|(_, parent, _)| parent == p)
            .map(|(_, _, local)| *local)
            .collect();
        let (process, collected) = match fr {
            Some(fr) => collect::collect_process(
                fr,
                &mut seen,
                &crate::kinds::task::query::Ask {
                    stopped_children: &kids,
                    undo_sets: &undo_sets,
                },
            )?,
            None => collect::zombie_process(*p)?,
        };
        processes.push(process);
        procs.push(collected);
    }
    // AIO rings that changed while the tree was stopped had requests in flight.
    crate::kinds::mem::aio::check_settled(&processes)?;
    crate::kinds::mem::aio::refuse_inherited(&processes)?;
    let unreported: Vec<Vec<i32>> = procs.iter().map(|c| c.unreported_stops.clone()).collect();
    crate::kinds::task::tree::mark_unreported_stops(&mut processes, &unreported, &stopped);
    crate::kinds::task::tree::check_groups_at_dump(&processes)?;
    // The namespaces each process is in (host PIDs, the root first), and those the tree
    // owns; what restore cannot bring back is refused here.
    let host: Vec<(i32, bool)> = tree.nodes.iter().map(|(p, f)| (*p, f.is_some())).collect();
    let root_parent = sys::proc::status(pid).map(|s| s.ppid).unwrap_or(0);
    let namespaces = crate::kinds::ns::collect_into(&mut processes, &host, root_parent, &ckpts_ns)?;
    // The cgroups of each live process, relative to ckpt's.
    let ckpts_cgroups = sys::cgroup::membership(0)?;
    for (proc_, &(hp, live)) in processes.iter_mut().zip(&host) {
        if live {
            proc_.cgroups = crate::kinds::cgroup::collect(hp, &ckpts_cgroups)?;
            crate::kinds::cglimits::collect(&mut proc_.cgroups)?;
        }
    }
    // For the failure-path tests: a dump refused once the tree was frozen and queried
    // (with injected calls) must let it go exactly as a successful --leave-running one.
    crate::error::fault_point("dump: collected").map_err(|_| DumpError::Unsupported {
        pid,
        why: "injected fault at step \"dump: collected\" (testing)".into(),
    })?;
    let pipes = fds::pipe::resolve_pipes(&mut processes, opts.external)?;
    let fifos = fds::fifo::resolve_fifos(&processes)?;
    let (ptys, tty_busy) = fds::tty::resolve_ptys(&mut processes)?;
    // TCP connections in repair mode, held until the tree is released (see below).
    let mut repair = Vec::new();
    let socketpairs = fds::resolve_sockets(&mut processes, &mut repair, opts.external);
    let socketpairs = match socketpairs {
        Ok(s) => s,
        Err(e) => {
            for fd in &repair {
                sys::tcp::repair_off(fd);
            }
            return Err(e);
        }
    };
    let mut repair = RepairGuard(repair);
    fds::refuse_shared_tables(&processes)?;
    fds::link_shared_fds(&mut processes)?;
    fds::mqueue::refuse_split_deleted(&processes)?;
    fds::file::check_kept_files(&processes)?;
    fds::file::check_proc_files(&processes)?;
    fds::check_fd_owners(&processes)?;
    let mut held = collect::held(&tree, &processes)?;
    let sysv = collect::sysv_objects(&processes, &mut held)?;
    let mut collected = collect::assemble(pid, processes, procs)?;
    // Pages a child still shares with its parent are stored once, in the parent's.
    crate::kinds::mem::cow::find_shared(&mut collected.ckpt.processes, &mut collected.runs)?;
    collected.ckpt.sysv = sysv;
    collected.ckpt.pipes = pipes;
    collected.ckpt.socketpairs = socketpairs;
    collected.ckpt.fifos = fifos;
    collected.ckpt.ptys = ptys;
    collected.ckpt.namespaces = namespaces;
    if pidns != PidnsShape::Ckpts {
        collected.use_namespace_pids(pidns == PidnsShape::OwnInit)?;
    }
    refuse_unrestorable(pid, &collected.ckpt, &held)?;
    if let Some(e) = tty_busy {
        return Err(e);
    }
    check_signals()?;
    let ckpt = &collected.ckpt;
    let mut stats = DumpStats {
        pid,
        freezing,
        freezing_us: freezing.as_micros() as u64,
        cgroup_freeze: cgfreeze.as_ref().map(|c| c.stats.clone()),
        processes: ckpt.processes.len(),
        vmas: ckpt.processes.iter().map(|p| p.vmas.len()).sum(),
        ..Default::default()
    };
    if ckpt.pid_namespace_init_outside {
        stats.warnings.push(format!(
            "the tree runs in a PID namespace ({}) whose init is not part of it: it is \
             restored into a new PID namespace whose init is a reaper of ckpt's, with the \
             same IDs inside",
            sys::proc::pid_namespace(pid)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    }
    for ns in ckpt.namespaces.iter().filter(|n| n.foreign) {
        stats.warnings.push(format!(
            "the tree is in a {kind} namespace ({kind}:[{}]) made outside it, recorded as \
             external: restore needs --join-ns {kind}:PATH naming the one to restore it in",
            ns.inode,
            kind = ns.kind
        ));
    }
    for p in &ckpt.processes {
        for t in p.threads.iter() {
            if arch::native::in_restart_syscall(&t.arch.regs) {
                stats.warnings.push(format!(
                    "thread {} of process {} is in a system call the kernel resumes \
                     through restart_syscall (interrupted before, e.g. by a stop or a \
                     debugger): a restored copy sees it fail with EINTR",
                    t.tid, p.pid
                ));
            }
        }
    }
    let writing = Instant::now();
    match (tmp, file) {
        (Some(tmp), Some(file)) => {
            // The disk writes while the pages are copied (see WritebackFile).
            let f = sys::file::WritebackFile::new(file, WRITEBACK_STEP);
            let w = BufWriter::with_capacity(64 << 10, f);
            let w = write::write_image(&collected, w, &mut stats, opts)?;
            let f = w.into_inner().map_err(|e| DumpError::Output {
                path: tmp.dest.clone(),
                source: e.into_error(),
            })?;
            // The last moment the dump can still be rolled back.
            check_signals()?;
            tmp.commit(f.into_inner())?;
        }
        _ => {
            let stdout = std::io::stdout().lock();
            let w = BufWriter::with_capacity(64 << 10, stdout);
            let mut w = write::write_image(&collected, w, &mut stats, opts)?;
            w.flush().map_err(|source| DumpError::Output {
                path: "-".into(),
                source,
            })?;
            check_signals()?;
        }
    }
    stats.writing = writing.elapsed();
    if let Err(e) = run_hook(opts, DumpStep::Written) {
        // The tree is let go as it was (dropping it), and the image goes.
        if let Output::Path(p) = out {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    if opts.leave_running {
        repair.off();
        // A cgroup its owner had frozen is frozen again while the threads are held.
        drop(cgfreeze.take());
        tree.let_go()?;
    } else {
        // The peers' packets are dropped until restore (else the kernel would answer
        // them with a reset once the sockets are gone)... In a network namespace of
        // the tree's own, every peer is in the tree and the namespace ends with it:
        // nothing to lock.
        let conns: Vec<_> = if crate::kinds::ns::owns(&collected.ckpt, "net") {
            Vec::new()
        } else {
            collected
                .ckpt
                .processes
                .iter()
                .flat_map(|p| p.tcp_connections())
                .collect()
        };
        if let Err(e) = sys::netlock::lock(&conns) {
            stats.warnings.push(format!(
                "the TCP connections are not locked while the process is gone ({e}); a peer \
                 that sends before the restore will see its connection reset"
            ));
        }
        // ...and the processes die with their connections in repair mode: closing them
        // sends no FIN or RST.
        tree.kill()?;
        repair.close_silently();
        // The tree's System V objects would outlive it (see `kinds::ipc`).
        stats
            .warnings
            .extend(crate::kinds::ipc::remove_owned(&collected.ckpt.sysv));
    }
    stats.frozen = tree.frozen_at.elapsed();
    stats.total = t0.elapsed();
    Ok(stats)
}
