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
//!
//! The steps' files: `freeze.rs` (seizing and stopping every thread of the tree;
//! `freezer.rs` is the cgroup freezer, `--freeze-cgroup`), `collect.rs`, `write.rs`;
//! this file orders them (`dump_tx`) and releases the tree.

mod collect;
mod freeze;
mod freezer;
pub mod track;
mod write;

use freeze::{Frozen, FrozenTree};
pub use freezer::{CgroupFreezeStats, FreezeCgroup, cgroup_at as freezable_cgroup_at};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arch;
use crate::kinds::fd::{self as fds, tcp::RepairGuard};
use crate::kinds::mem::shmem::SharedSeen;

use crate::sys;

pub use crate::error::{DumpError, DumpResult as Result};
/// `pidns[INO]:KEY` (or CRIU's `pid[INO]:KEY`) for [`DumpOptions::external_pidns`].
pub use crate::kinds::task::extpidns::parse as parse_external_pidns;

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
    /// Write tracking: start it (`--track`), or dump only what was written since the
    /// tracked tree's last image (`--parent`). See `dump::track`.
    pub incremental: track::Incremental,
    /// Freeze the tree with the cgroup freezer (`--freeze-cgroup`) instead of ptrace
    /// alone: the tree must be the whole cgroup (see `dump/freezer.rs`).
    pub freeze_cgroup: Option<FreezeCgroup>,
    /// The restore will put the tree onto a new terminal where its standard descriptors
    /// led to one (`criu`'s orphan_pts_master, `restore --new-tty`): what that cannot
    /// bring back is refused now too.
    pub new_tty: bool,
    /// The front end locks the tree's TCP connections itself (`ckpt migrate`, from the
    /// freeze, in a table of its own): the dump adds no rules when it kills the tree.
    pub net_locked: bool,
    /// The tree runs inside this PID namespace made outside it (its root is not the
    /// namespace's init): record it as external (`--external pidns[INO]:KEY`), to be
    /// given back at restore under KEY, instead of restoring the tree below a new
    /// namespace's reaper. The dump is refused if the tree is not in that namespace.
    pub external_pidns: Option<crate::model::ExternalPidNs>,
    /// The caller makes the tree's network namespace anew at restore (runc's
    /// `--external net[INO]`, for Podman's): established TCP connections are refused
    /// without `tcp_established` (see [`crate::kinds::fd::tcp::refuse_in_remade_net`]);
    /// with it, a dump that kills the tree locks them outside that namespace too, in
    /// ckpt's own (see [`crate::kinds::fd::tcp::lock_at_freeze`]).
    pub net_remade: bool,
    /// The caller asked for established TCP connections to be dumped (`criu
    /// --tcp-established`); see `net_remade`.
    pub tcp_established: bool,
    /// The image lives only as long as the front end that asked for it (`ckpt
    /// migrate`'s rounds): it is neither handed to the disk as it is written nor
    /// synced, so the frozen tree never waits for the disk.
    pub transient: bool,
    /// The tree's smaps read before the freeze (`ckpt migrate`'s final dump): each
    /// process whose address space took no write lock since keeps those VmFlags, and
    /// its smaps is not read in the frozen window (see `kinds::mem::early`).
    pub early_smaps: Option<std::sync::Arc<crate::kinds::mem::early::EarlySmaps>>,
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
            .field("incremental", &self.incremental)
            .field("freeze_cgroup", &self.freeze_cgroup)
            .field("new_tty", &self.new_tty)
            .field("net_locked", &self.net_locked)
            .field("external_pidns", &self.external_pidns)
            .field("net_remade", &self.net_remade)
            .field("tcp_established", &self.tcp_established)
            .field("transient", &self.transient)
            .field("early_smaps", &self.early_smaps)
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
    /// Processes whose VmFlags came from the smaps read before the freeze
    /// (`DumpOptions::early_smaps`), not from one in the frozen window.
    #[serde(skip_serializing_if = "is_zero")]
    pub early_smaps: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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

    fn commit(self, f: File, durable: bool) -> Result<()> {
        let TempOutput { name, dest } = self;
        name.commit(f, &dest, durable)
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
    new_tty: bool,
) -> Result<()> {
    // Onto a new terminal: the checks of `restore --new-tty` (none when no standard
    // descriptor led to a terminal: the restore leaves them as they are).
    let inherited_tty = ckpt.processes.iter().any(|p| {
        p.fds.iter().any(|f| {
            matches!(
                &f.kind,
                crate::model::FdKind::Inherited { tty: Some(_), .. }
            )
        })
    });
    let tty_problems = match crate::restore::plan::tty_plan(ckpt) {
        Err(v) if new_tty && inherited_tty => v,
        _ => Vec::new(),
    };
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
    let mut problems = problems;
    problems.extend(tty_problems);
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
    let external_pidns = crate::kinds::task::extpidns::at_dump(
        pid,
        pidns == PidnsShape::InitOutside,
        opts.external_pidns.as_ref(),
    )?;
    // Made before ckpt joins the tree's namespaces: a process of ckpt's in one of them
    // would count as a user of it outside the tree.
    let undo_ref = sys::ipc::NoUndoList::new()?;
    // A tree with an IPC namespace of its own: its System V segments are read there.
    let ckpts_ns = crate::kinds::ns::own_namespaces()?;
    // (ckpt's own network namespace, kept before a thread of ckpt joins the tree's: a
    // lock outside the tree's is made there)
    let host_net = if opts.net_remade {
        Some(sys::ns::first_net()?)
    } else {
        None
    };
    crate::kinds::ns::join_own_ipc(pid, sys::proc::status(pid)?.ppid, &ckpts_ns)?;
    // A tree in another network namespace: its sockets are looked at there.
    crate::kinds::ns::join_tree_net(pid, &ckpts_ns)?;
    let tracking = incremental_precheck(pid, out, opts)?;
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
    // The tree's processes that are not zombies.
    let live: Vec<i32> = tree
        .nodes
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(p, _)| *p)
        .collect();
    if let Some(cg) = &cgfreeze {
        freezer::refuse_outside(cg, pid, &live)?;
    }
    let freezing = tree.frozen_at.elapsed();
    crate::error::time_mark("dump: frozen");
    // Before ckpt changes anything in the tree (its injected calls map and unmap): the
    // early VmFlags still true.
    let mut early = match &opts.early_smaps {
        Some(e) => {
            let still = e.still_true(&live);
            crate::error::time_mark("dump: early VmFlags checked");
            still
        }
        None => Default::default(),
    };
    let mut early_used = 0;
    // A dump that kills the tree locks its TCP connections now, before their queues are
    // read (`kinds::fd::tcp::lock_at_freeze`).
    let (early_lock, early_host_lock) = if opts.leave_running || opts.net_locked {
        (None, None)
    } else {
        let pids: Vec<(i32, bool)> = tree.nodes.iter().map(|(p, f)| (*p, f.is_some())).collect();
        let host = host_net.filter(|_| opts.tcp_established);
        crate::kinds::fd::tcp::lock_at_freeze(pid, &pids, ckpts_ns.get("net").copied(), host)?
    };
    // (And those in network namespaces processes below the root made, in each.)
    let _below_lock = if opts.leave_running || opts.net_locked {
        Vec::new()
    } else {
        let pids: Vec<(i32, bool)> = tree.nodes.iter().map(|(p, f)| (*p, f.is_some())).collect();
        crate::kinds::fd::belownet::lock_at_freeze(&pids)
    };
    sys::deferred::die_point("connections locked at the freeze");
    run_hook(opts, DumpStep::Frozen)?;
    crate::error::time_mark("dump: frozen hook done");
    let mut seen = SharedSeen::new();
    let mut processes = Vec::new();
    let mut procs = Vec::new();
    let stopped = tree.stopped_children()?;
    // The semaphore sets the frozen tree works on: the undo adjustments asked of its
    // processes (see kinds::ipc).
    let tree_pids: std::collections::BTreeSet<i32> = tree.nodes.iter().map(|(p, _)| *p).collect();
    let undo_sets = crate::kinds::ipc::undo_candidates(&tree_pids)?;
    // (They are sets of the root's IPC namespace: a process in another, one a process
    // below the root made, is asked about the sets of its own, read inside it.)
    let root_ipc = sys::ns::inode(pid, "ipc")?;
    let mut undo_sets_in: std::collections::BTreeMap<u64, Vec<i32>> = Default::default();
    for (p, fr) in tree.nodes.iter_mut() {
        check_signals()?;
        // As the parent sees them (in the tree's own PID namespace, if it has one).
        let kids: Vec<i32> = stopped
            .iter()
            .filter(|(_, parent, _)| parent == p)
            .map(|(_, _, local)| *local)
            .collect();
        let ipc = match fr {
            Some(_) => sys::ns::inode(*p, "ipc").ok(),
            None => None,
        };
        let other_ipc = ipc.filter(|&i| i != root_ipc);
        if let Some(i) = other_ipc {
            if let std::collections::btree_map::Entry::Vacant(e) = undo_sets_in.entry(i) {
                let sets = sys::ns::inside(*p, &["ipc"], || {
                    Ok(crate::kinds::ipc::undo_candidates(&tree_pids))
                })??;
                e.insert(sets);
            }
        }
        let sets = match other_ipc {
            Some(i) => undo_sets_in.get(&i).map_or(&[][..], |v| &v[..]),
            None => &undo_sets[..],
        };
        let (process, collected) = match fr {
            Some(fr) => collect::collect_process(
                fr,
                &mut seen,
                early.remove(p),
                &mut early_used,
                &crate::kinds::task::query::Ask {
                    stopped_children: &kids,
                    undo_sets: sets,
                    undo_elsewhere: other_ipc.is_some(),
                    undo_ref: Some(&undo_ref),
                },
            )?,
            None => collect::zombie_process(*p)?,
        };
        processes.push(process);
        procs.push(collected);
    }
    // AIO rings that changed while the tree was stopped had requests in flight.
    crate::kinds::mem::aio::check_settled(&processes)?;
    crate::error::time_mark("dump: processes collected");
    crate::kinds::mem::aio::refuse_inherited(&processes)?;
    let unreported: Vec<Vec<i32>> = procs.iter().map(|c| c.unreported_stops.clone()).collect();
    crate::kinds::task::tree::mark_unreported_stops(&mut processes, &unreported, &stopped);
    crate::kinds::task::tree::check_groups_at_dump(&processes)?;
    // PID namespaces nested inside the tree (host IDs still).
    let pid_namespaces = crate::kinds::task::pidns::collect_nested(&mut processes)?;
    // The namespaces each process is in (host PIDs, the root first), and those the tree
    // owns; what restore cannot bring back is refused here.
    let host: Vec<(i32, bool)> = tree.nodes.iter().map(|(p, f)| (*p, f.is_some())).collect();
    let root_parent = sys::proc::status(pid).map(|s| s.ppid).unwrap_or(0);
    let mut namespaces =
        crate::kinds::ns::collect_into(&mut processes, &host, root_parent, &ckpts_ns)?;
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
    // Shared descriptor tables and filesystem information (a later sharer's
    // descriptors are the first one's: not resolved twice below).
    crate::kinds::task::share::collect(&mut processes, root_parent)?;
    // Descriptors only queued unix messages hold: resolved with the tree's own, as a
    // process of ckpt's own (`fds::inflight`), until placed in their receivers below.
    let flight = fds::inflight::InFlight::discover(&processes)?;
    flight.join(&mut processes)?;
    let named = |e| flight.name(e);
    let pipes = fds::pipe::resolve_pipes(&mut processes, opts.external).map_err(named)?;
    let fifos = fds::fifo::resolve_fifos(&processes).map_err(named)?;
    let (ptys, tty_busy) = fds::tty::resolve_ptys(&mut processes).map_err(named)?;
    // TCP connections in repair mode, held until the tree is released (see below).
    let mut repair = Vec::new();
    let socketpairs = fds::resolve_sockets(&mut processes, &mut repair, opts.external);
    let mut socketpairs = match socketpairs {
        Ok(s) => s,
        Err(e) => {
            for (fd, reuseaddr) in &repair {
                fds::tcp::leave_repair(fd, *reuseaddr);
            }
            return Err(flight.name(e));
        }
    };
    let mut repair = RepairGuard(repair);
    crate::error::time_mark("dump: descriptors resolved");
    // (Tests send the peer's segments here: `e2e_killrestore`.)
    sys::deferred::linger_point("tcp queues read");
    fds::link_shared_fds(&mut processes).map_err(named)?;
    fds::mqueue::refuse_split_deleted(&processes).map_err(named)?;
    fds::file::check_kept_files(&processes).map_err(named)?;
    // (Before the IDs become the tree's PID namespace's: those of ckpt's /proc here.)
    fds::file::check_proc_files(&processes, pidns != PidnsShape::Ckpts).map_err(named)?;
    fds::check_fd_owners(&processes).map_err(named)?;
    let in_flight_data = flight.place(&mut processes, &mut socketpairs)?;
    crate::kinds::ipc::collect_undo_lists(&mut processes, &undo_ref)?;
    drop(undo_ref);
    let mut held = collect::held(&tree, &processes)?;
    held.sockets.extend(flight.socket_inodes());
    drop(flight);
    // (An IPC namespace of the tree's own: the one its root is in.)
    let own_ipc = namespaces.iter().find(|n| {
        n.kind == "ipc"
            && !n.external
            && processes
                .first()
                .is_some_and(|r| r.namespaces.contains(&(n.kind.clone(), n.inode)))
    });
    if let Some(l) = own_ipc.and_then(|n| n.ipc.as_ref()) {
        let in_root = processes
            .iter()
            .filter(|p| !crate::kinds::ns::ipc_below_root(&processes, p));
        fds::mqueue::refuse_outside_namespace(in_root, &l.mqueues)?;
    }
    let sysv = collect::sysv_objects(&processes, &mut held, own_ipc.is_some())?;
    crate::kinds::ipc::collect_below_root(&processes, &mut namespaces)?;
    let mut collected = collect::assemble(pid, processes, procs)?;
    crate::error::time_mark("dump: held and assembled");
    // Pages a child still shares with its parent are stored once, in the parent's.
    crate::kinds::mem::cow::find_shared(&mut collected.ckpt.processes, &mut collected.runs)?;
    crate::error::time_mark("dump: cow sharing found");
    // From here a failed incremental dump ends the tracking (its scans protected the
    // pages they found written again: what they found would be lost).
    let mut untrack_on_failure = UntrackOnFailure(None);
    if let Some(st) = &tracking {
        untrack_on_failure.0 = Some(pid);
        split_written(&mut collected, st)?;
        crate::error::fault_point("dump: written pages found").map_err(|_| {
            DumpError::Unsupported {
                pid,
                why: "injected fault at step \"dump: written pages found\" (testing)".into(),
            }
        })?;
    }
    for p in collected.ckpt.processes.iter_mut() {
        crate::kinds::mem::track::forget_flag(&mut p.vmas);
    }
    collected.ckpt.sysv = sysv;
    collected.in_flight_data = in_flight_data;
    collected.ckpt.pipes = pipes;
    collected.ckpt.socketpairs = socketpairs;
    collected.ckpt.fifos = fifos;
    collected.ckpt.ptys = ptys;
    collected.ckpt.namespaces = namespaces;
    collected.ckpt.pid_namespaces = pid_namespaces;
    if pidns != PidnsShape::Ckpts {
        collected.use_namespace_pids(pidns == PidnsShape::OwnInit)?;
    }
    collected.ckpt.external_pid_namespace = external_pidns;
    crate::error::time_mark("dump: written pages split");
    refuse_unrestorable(pid, &collected.ckpt, &held, opts.new_tty)?;
    if opts.net_remade && !opts.tcp_established {
        crate::kinds::fd::tcp::refuse_in_remade_net(&collected.ckpt)?;
    }
    if let Some(ns) = host_net.filter(|_| opts.tcp_established && !opts.leave_running) {
        collected.ckpt.host_lock = crate::kinds::fd::tcp::host_lock_record(&collected.ckpt, ns)?;
    }
    crate::error::time_mark("dump: plan checks done");
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
        early_smaps: early_used,
        ..Default::default()
    };
    if ckpt.pid_namespace_init_outside && ckpt.external_pid_namespace.is_none() {
        let ino = sys::ns::inode(pid, "pid").unwrap_or(0);
        stats.warnings.push(format!(
            "the tree runs in a PID namespace ({}) whose init is not part of it: it is \
             restored into a new PID namespace whose init is a reaper of ckpt's, with the \
             same IDs inside (dump with --external pidns[{ino}]:KEY to restore it inside \
             a namespace given for KEY instead)",
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
    // --track: the tree's writes are tracked from before its pages are read.
    let mut tracked = Vec::new();
    if opts.incremental == track::Incremental::Track {
        // Write-protecting pages a fork child still shares copy-on-write with its
        // parent makes the kernel give each its own copy (measured: a 16 MiB area
        // shared by two processes, Pss 8.3 -> 16.5 MiB each), which untrack would not
        // give back: refused, the tree untouched.
        if let Some(p) = collected
            .ckpt
            .processes
            .iter()
            .find(|p| !p.cow_from_parent.is_empty())
        {
            let pages: u64 = p.cow_from_parent.iter().map(|r| (r.1 - r.0) / 4096).sum();
            return Err(DumpError::Refused(format!(
                "cannot track process {}: it shares {pages} pages copy-on-write with its \
                 parent, and write-protecting them would give each its own copy",
                p.pid
            )));
        }
        for (p, fr) in tree.nodes.iter_mut() {
            let (Some(fr), Some(proc_)) = (
                fr.as_mut(),
                collected
                    .ckpt
                    .processes
                    .iter()
                    .find(|x| collected.host_pid(x.pid) == *p),
            ) else {
                continue;
            };
            tracked.push(crate::kinds::mem::track::start(
                *p,
                &mut fr.threads,
                &proc_.vmas,
            )?);
        }
    }
    let writing = Instant::now();
    crate::error::time_mark("dump: tracking started");
    match (tmp, file) {
        (Some(tmp), Some(file)) => {
            // The disk writes while the pages are copied (see WritebackFile); a
            // transient image is never waited for.
            let step = if opts.transient {
                u64::MAX
            } else {
                WRITEBACK_STEP
            };
            let f = sys::file::WritebackFile::new(file, step);
            let w = BufWriter::with_capacity(64 << 10, f);
            let w = write::write_image(&collected, w, &mut stats, opts)?;
            let f = w.into_inner().map_err(|e| DumpError::Output {
                path: tmp.dest.clone(),
                source: e.into_error(),
            })?;
            // The last moment the dump can still be rolled back.
            check_signals()?;
            tmp.commit(f.into_inner(), !opts.transient)?;
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
    crate::error::time_mark("dump: image written");
    if let Err(e) = after_written(pid, out, opts, tracked) {
        if let Output::Path(p) = out {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    crate::error::time_mark("dump: after written (tracking handed over)");
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
        // (Nor in one a process below the root made.)
        let conns: Vec<_> = if opts.net_locked {
            Vec::new()
        } else {
            crate::kinds::ns::locked_connections(&collected.ckpt)
        };
        // Outside the tree's namespace too, where its runtime makes it anew (the
        // image names these tables; the restore removes them): without them the
        // connections would be lost, so the dump fails, the tree let go as it was.
        if let (Some(hl), Some(ns)) = (&collected.ckpt.host_lock, host_net) {
            if let Err(e) = sys::netlock::host_lock(ns, &hl.table, &conns) {
                if let Output::Path(p) = out {
                    let _ = std::fs::remove_file(p);
                }
                return Err(DumpError::Refused(format!(
                    "cannot lock the tree's TCP connections in ckpt's network namespace \
                     (table {}): {e}",
                    hl.table
                )));
            }
        }
        sys::deferred::die_point("host lock made");
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
        // The lock for the restore is in place: the freeze's own goes.
        if let Some(l) = early_lock {
            l.release();
        }
        if let Some(l) = early_host_lock {
            l.release();
        }
        // A killed tree is tracked no more.
        if opts.incremental != track::Incremental::No {
            let _ = track::untrack(pid);
        }
        // The tree's System V objects would outlive it (see `kinds::ipc`).
        stats
            .warnings
            .extend(crate::kinds::ipc::remove_owned(&collected.ckpt.sysv));
    }
    crate::error::time_mark("dump: tree released");
    stats.frozen = tree.frozen_at.elapsed();
    stats.total = t0.elapsed();
    untrack_on_failure.0 = None;
    Ok(stats)
}

/// Ends the tracking of the tree rooted at the PID it holds when dropped holding one.
struct UntrackOnFailure(Option<i32>);

impl Drop for UntrackOnFailure {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = track::untrack(pid);
        }
    }
}

/// The checks of an incremental dump made before the tree is touched: `--track` of a
/// tree not tracked yet, `--parent` naming the image the tree's tracking counts from.
/// Returns the tracking a `--parent` dump continues.
fn incremental_precheck(
    pid: i32,
    out: &Output,
    opts: &DumpOptions,
) -> Result<Option<track::TrackState>> {
    if opts.incremental == track::Incremental::No {
        return Ok(None);
    }
    if matches!(out, Output::Stdout) {
        return Err(DumpError::Refused(
            "an incremental dump (--track, --parent) writes to a file, not to standard output"
                .into(),
        ));
    }
    let st = track::state(pid)?;
    match (&opts.incremental, st) {
        (track::Incremental::Track, Some(st)) => Err(DumpError::Refused(format!(
            "process {pid} is already tracked (since image {}, holder {}): dump it with \
             --parent {}, or end that with `ckpt untrack {pid}` first",
            st.last.path, st.holder, st.last.path
        ))),
        (track::Incremental::Parent(_), None) => Err(DumpError::Refused(format!(
            "process {pid} is not tracked (no `ckpt dump --track` of it is holding its \
             tracking): an incremental dump would miss pages; make a full one with --track"
        ))),
        (track::Incremental::Parent(path), Some(st)) => {
            let parent = track::image_identity(path)?;
            if parent.records != st.last.records || parent.hash != st.last.hash {
                return Err(DumpError::Refused(format!(
                    "process {pid} is tracked relative to image {} (hash {:016x}), not to \
                     {} (hash {:016x}): give that one as --parent",
                    st.last.path,
                    st.last.hash,
                    path.display(),
                    parent.hash
                )));
            }
            Ok(Some(track::TrackState { last: parent, ..st }))
        }
        _ => Ok(None),
    }
}

/// A `--parent` dump: in each tracked process, only the pages written since the parent
/// image stay in the runs; the others are inherited from it.
fn split_written(collected: &mut collect::Collected, st: &track::TrackState) -> Result<()> {
    let cow = track::cow_ranges_of(Path::new(&st.last.path))?;
    for proc_ in collected.ckpt.processes.iter_mut() {
        let host = proc_.pid;
        let known = st
            .processes
            .iter()
            .any(|t| t.pid == host && track::starttime(host) == Some(t.starttime));
        if !known || proc_.is_zombie() {
            continue;
        }
        let (tracked, mut written) = crate::kinds::mem::track::written_in(host, &proc_.vmas)?;
        // Pages the parent image left to a process's parent are stored, not inherited.
        written = crate::kinds::mem::track::union(&written, cow.of(host));
        if let Some((_, runs)) = collected.runs.iter_mut().find(|(p, _)| *p == host) {
            proc_.inherited = crate::kinds::mem::track::split_runs(runs, &tracked, &written);
        }
    }
    collected.ckpt.parent = Some(st.last.clone());
    Ok(())
}

/// Once the image is named: `--track` hands the userfaultfds to a holder, `--parent`
/// tells the holder its tracking now counts from this image.
fn after_written(
    pid: i32,
    out: &Output,
    opts: &DumpOptions,
    tracked: Vec<crate::kinds::mem::track::Tracked>,
) -> Result<()> {
    let Output::Path(path) = out else {
        return Ok(());
    };
    match &opts.incremental {
        track::Incremental::No => Ok(()),
        track::Incremental::Track => {
            let last = track::image_identity(path)?;
            let mut processes = Vec::new();
            for t in &tracked {
                processes.push(track::TrackedProcess {
                    pid: t.pid,
                    starttime: track::starttime(t.pid).unwrap_or(0),
                    areas: t.areas.clone(),
                    fd: 0,
                });
            }
            let st = track::TrackState {
                pid,
                starttime: track::starttime(pid).unwrap_or(0),
                holder: 0,
                last,
                processes,
                owner: None,
            };
            track::spawn_holder(st, tracked)
        }
        // A dump that kills the tree ends its tracking (and so does one that fails
        // from here on): the holder need not hear of this image.
        track::Incremental::Parent(_) if !opts.leave_running => Ok(()),
        track::Incremental::Parent(_) => {
            let last = track::image_identity(path)?;
            track::update(pid, &last)
        }
    }
}
