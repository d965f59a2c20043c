//! Restore (stage): build the tree's mount namespace on ckpt's main thread before plan
//! (and the init of the tree's PID namespace with it, when it has one).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;

use super::check_tree;
use super::checks::{PidnsWay, pidns_way};
use super::external::{EXTERNAL, open_sources};
use super::owned_tree;
use super::prop::{prop_in, propagate};
use crate::error::{RestoreError, RestoreResult};
use crate::model::{Checkpoint, Mount, MountOrigin, MountTree};
use crate::sys;

// ---- restore (stage) ----

/// Where the namespace is staged: the first of these that is a directory (a tmpfs is
/// mounted on it in ckpt's private copy of the host's namespace, never in the host's).
const STAGES: [&[u8]; 5] = [b"/tmp", b"/mnt", b"/var/tmp", b"/run", b"/dev"];

/// The mounts of the tree's own namespace that [`build`] made and a namespace a process
/// below the root made in it takes peer groups from (`OutsidePeer::mount`), by their
/// dump IDs: kept while the tree's processes are made (a mount covered by another on
/// its point cannot be opened again by path), dropped by [`release_kept`] before the
/// tree runs (a descriptor on a mount would make the tree's unmount of it fail).
static KEPT: std::sync::Mutex<BTreeMap<u32, OwnedFd>> = std::sync::Mutex::new(BTreeMap::new());

/// Whether the image has a mount namespace a process below the root made in the
/// tree's own, `tree` (which takes its peer groups and its sources of file systems
/// restore made anew from [`KEPT`]).
fn made_below_in(ckpt: &Checkpoint, tree: &MountTree) -> bool {
    ckpt.namespaces
        .iter()
        .filter(|ns| ns.kind == "mnt" && !ns.external)
        .filter_map(|ns| ns.mounts.as_ref())
        .any(|t| !std::ptr::eq(t, tree))
}

/// The devices now of the file systems restore made anew in the tree's namespace
/// (`base`), by their devices at dump (`made_anew`), through the mounts [`build`] made
/// of them there and kept: a source of one is then found as the one of that device,
/// uncovered, as any other (a covered one included), not by its path alone.
fn renewed_devs(base: &MountTree, made_anew: &BTreeSet<u64>) -> BTreeMap<u64, u64> {
    let Ok(kept) = KEPT.lock() else {
        return BTreeMap::new();
    };
    base.mounts
        .iter()
        .filter(|m| made_anew.contains(&m.dev))
        .filter_map(|m| {
            let now = sys::mount::dev_ino(kept.get(&m.id)?).ok()?.0;
            Some((m.dev, now))
        })
        .collect()
}

/// Drop the mounts [`build`] kept (see [`KEPT`]): once the tree's processes are made,
/// before it runs, in every process of ckpt's that holds them (a builder forked with
/// them, and the one it was forked from).
pub(crate) fn release_kept() {
    if let Ok(mut k) = KEPT.lock() {
        k.clear();
    }
}

/// Drops the mounts [`build`] kept ([`release_kept`]) when it goes: held by
/// `restore::Prepared`, so that a process of ckpt's that forked a builder (which took
/// them along) and dropped its own `Prepared` holds none while the tree runs.
#[derive(Debug, Default)]
pub(crate) struct KeptMounts;

impl Drop for KeptMounts {
    fn drop(&mut self) {
        release_kept();
    }
}

/// A file system's options for mount(2): those mountinfo shows, but "ro"/"rw" (made
/// flags) and, for devpts, with a new instance.
pub(super) fn data_of(m: &Mount) -> String {
    let mut v: Vec<&str> = m
        .super_options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
        .collect();
    if m.fstype == "devpts" && !v.contains(&"newinstance") {
        v.push("newinstance");
    }
    v.join(",")
}

/// The init of the tree's new PID namespace, made while its mount namespace is built
/// (its proc mounts must be made from inside that PID namespace): a stub
/// (`sys::process::spawn_pidns_init_stub`) that restore's builder seizes and makes the
/// tree's root. Killed (and reaped) when dropped before [`PidnsInit::take`].
#[derive(Debug)]
pub(crate) struct PidnsInit {
    pid: i32,
    go: Option<OwnedFd>,
    /// A proc of ckpt's is stacked on the namespace's /proc ([`unstack_proc`]).
    proc_stacked: bool,
    /// A child of our parent (`rst_sibling`), which our parent reaps.
    sibling: bool,
}

impl PidnsInit {
    /// Its PID here, the write end of the pipe it waits on (it is the caller's now) and
    /// whether a proc of ckpt's is stacked on /proc.
    pub(crate) fn take(mut self) -> (i32, Option<OwnedFd>, bool) {
        (self.pid, self.go.take(), self.proc_stacked)
    }

    /// Whether it was made a child of our parent (`rst_sibling`).
    pub(crate) fn is_sibling(&self) -> bool {
        self.sibling
    }
}

impl Drop for PidnsInit {
    fn drop(&mut self) {
        if self.go.take().is_some() {
            let _ = sys::process::kill(self.pid, libc::SIGKILL);
            // A sibling is our parent's to reap.
            if !self.sibling {
                let _ = sys::process::wait_exit(self.pid);
            }
        }
    }
}

/// The init of a new PID namespace below ckpt's, a reaper of ckpt's
/// (`sys::process::spawn_pidns_reaper`), with the tree's root stub as its child, made
/// while the tree's mount namespace is built (its proc mounts must be made from inside
/// that PID namespace): for a tree that ran in a PID namespace whose init was outside
/// it, or with `--new-pidns`. Killed (which ends the namespace, the stub with it) and
/// reaped when dropped before [`Reaper::take`].
pub(crate) struct Reaper {
    made: Option<sys::process::PidnsReaper>,
    /// The root stub's PID here.
    root: i32,
}

impl Reaper {
    /// The reaper, and the root stub's PID here.
    pub(crate) fn take(mut self) -> Option<(sys::process::PidnsReaper, i32)> {
        let root = self.root;
        self.made.take().map(|m| (m, root))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(m) = self.made.take() {
            let _ = sys::process::kill(m.pid, libc::SIGKILL);
            let _ = sys::process::wait_exit(m.pid);
        }
    }
}

/// What [`enter_new`] made for a tree restored in a PID namespace that is not its own
/// (made outside it and given, or a new one below ckpt's reaper): the proc mounts of
/// its mount namespace show that namespace.
#[derive(Default)]
pub(crate) struct OtherPidns {
    /// The PID namespace given for the tree's external one, opened before ckpt left its
    /// mount namespace (the path given may not be there in the tree's).
    pub(crate) external: Option<std::fs::File>,
    /// The new namespace's reaper, with the root's stub.
    pub(crate) reaper: Option<Reaper>,
    /// A proc of ckpt's is stacked on the namespace's /proc ([`unstack_proc`]), taken
    /// off by the builder before the tree runs.
    pub(crate) proc_stacked: bool,
}

/// What [`enter_new`] made for the tree before its processes: the init of its PID
/// namespace, and the namespaces it entered (`kinds::ns::enter_new`: the cgroups made
/// for a cgroup namespace, the tree's user namespace with its PID namespace).
#[derive(Default)]
pub(crate) struct Entered {
    pub(crate) init: Option<PidnsInit>,
    /// The tree's terminal, of a devpts instance of its own, made again there
    /// (`kinds::fd::tty::ConsolePty`).
    pub(crate) console: Option<crate::kinds::fd::tty::ConsolePty>,
    /// ckpt's /dev/ptmx (O_PATH), opened before it left its mount namespace: a new
    /// terminal for a tree whose terminal was from outside its namespace is made there,
    /// as the original's was (its descriptors name a mount of another namespace).
    pub(crate) outer_ptmx: Option<OwnedFd>,
    pub(crate) namespaces: Option<(
        crate::kinds::cgroup::MadeCgroups,
        Option<crate::kinds::userns::Made>,
    )>,
    /// The PID namespace that is not the tree's own it is restored in, if any.
    pub(crate) other_pidns: OtherPidns,
}

/// Where a proc of the tree's is mounted from: a process forked into the PID namespace
/// of process N (the tree's new init, or ckpt's reaper), or into the one a namespace
/// file names (the external one given).
#[derive(Clone, Copy)]
enum ProcFrom<'a> {
    Init(i32),
    Ns(&'a std::fs::File),
}

/// Mount a proc on `target` from inside the PID namespace `from` names (a proc shows
/// the PID namespace of the process that mounts it): by a helper forked into it as
/// `spare` (or the next free ID, in a namespace with other processes), which exits once
/// it is done (and frees that ID).
fn mount_proc_in(from: ProcFrom<'_>, spare: i32, m: &Mount, target: &[u8]) -> RestoreResult<()> {
    let at = String::from_utf8_lossy(target).into_owned();
    crate::error::fault_point("mount a proc from inside the tree's PID namespace")?;
    let forked = match from {
        ProcFrom::Init(init) => sys::process::fork_into_pid_namespace_of(init, spare)?,
        ProcFrom::Ns(ns) => crate::kinds::task::extpidns::fork_into_free(ns, spare)?,
    };
    match forked {
        None => {
            // The helper: single-threaded, in our mount namespace.
            let code = match sys::mount::mount_new(&m.source, target, "proc", false, &data_of(m)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ckpt: mount a proc on {at} in the tree's PID namespace: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some(helper) => match sys::process::wait_exit(helper)? {
            0 => Ok(()),
            _ => Err(RestoreError::Reported(format!(
                "mount a proc on {at} from inside the tree's new PID namespace failed"
            ))),
        },
    }
}

/// What restore was given for the tree's namespaces: `--join-ns TYPE:PATH` and
/// `--inherit-fd N:KEY`.
pub(crate) type Given<'a> = (&'a [(String, std::path::PathBuf)], &'a [(i32, String)]);

/// Build the tree's mount namespace, if it had one of its own, and move ckpt's main
/// thread (the calling thread) into it, at its root; every process started afterwards
/// is in it. Checks what it can first (the image's tree, the external sources) and
/// returns them as problems, before anything is made.
///
/// `pidns_init`: when the tree had a PID namespace of its own too, make its init now
/// (in the namespace being built) and the proc mounts from inside its PID namespace,
/// in their place in the mount order; it is returned, for `Prepared::launch`. (Without
/// it, for `ckpt check`, the proc mounts are ckpt's.) `sibling`: that init is made a
/// child of our parent (`Prepared::launch_as_sibling`). With it, when the tree has a PID
/// or a user namespace of its own, the tree's other namespaces are entered first
/// (`kinds::ns::enter_new`, with the `--join-ns` joins `joins`): the init is made in
/// them, and a user namespace of the tree's own owns the mount namespace built here
/// (made by its helper, joined by ckpt's main thread, which builds the mounts in it
/// with its own privileges); what that made is returned too ([`Entered`]). When the
/// tree is restored in a PID namespace not its own (the external one given, by
/// `--join-ns pid:PATH` or `--inherit-fd N:KEY` in `inherit`; or a new one below a
/// reaper of ckpt's, made here with the root's stub), the proc mounts are made from
/// inside that one ([`OtherPidns`]).
pub(crate) fn enter_new(
    ckpt: &Checkpoint,
    new_pidns: bool,
    pidns_init: bool,
    sibling: bool,
    (joins, inherit): Given<'_>,
    cgroup_root: Option<&str>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> RestoreResult<Entered> {
    let Some(tree) = owned_tree(ckpt) else {
        return Ok(Entered::default());
    };
    // A restore that executed itself again (`Prepared::take_randomization`) did so
    // from inside the namespace it had built: it is there already (never with a PID
    // namespace of the tree's own, whose init did not survive the execution: refused
    // there).
    if std::env::var_os(crate::restore::RANDOMIZATION_MARK).is_some() {
        return Ok(Entered::default());
    }
    let mut problems = Vec::new();
    check_tree(ckpt, new_pidns, &mut problems);
    let way = pidns_way(ckpt, new_pidns);
    // (The joins are made below, before plan would check them; the PID namespace
    // given for an external one is entered for the proc mounts.)
    if pidns_init {
        crate::kinds::ns::check_joins(ckpt, joins, &mut problems);
        crate::kinds::task::extpidns::check(ckpt, joins, inherit, new_pidns, false, &mut problems);
        if sibling && way == PidnsWay::Reaper {
            crate::kinds::check::p(
                &mut problems,
                "namespace",
                "a tree restored in a new PID namespace below a reaper of ckpt's (it ran in \
                 one whose init was outside it, or --new-pidns) is not restored as a \
                 sibling yet (the reaper is ckpt's child)"
                    .into(),
            );
        }
    }
    if !problems.is_empty() {
        return Err(RestoreError::Problems(problems));
    }
    crate::error::fault_point("create the tree's mount namespace")?;
    // The PID namespace given for the tree's external one, opened where its path is.
    let external = match (pidns_init, way) {
        (true, PidnsWay::External) => {
            crate::kinds::task::extpidns::open_given(ckpt, joins, inherit)?
        }
        _ => None,
    };
    let how = How {
        pidns_init,
        sibling,
        below: false,
        way,
        parent: None,
    };
    build(ckpt, tree, how, external, joins, cgroup_root, cgroups)
}

/// What [`build`] makes besides the mounts: the init of the tree's PID namespace and
/// the tree's other namespaces first (`pidns_init`, see [`enter_new`]), the init a child
/// of our parent (`sibling`); `below`: the namespace is one a process below the root
/// made ([`make_below`]: nothing but its mounts, no terminal of the tree's); `way`:
/// the PID namespace the proc mounts are made from inside of (with `pidns_init`);
/// `parent`: for one made below the root two deep, the one it was copied from (made
/// below the root too, built before it: the calling thread is in it).
#[derive(Clone, Copy)]
struct How<'a> {
    pidns_init: bool,
    sibling: bool,
    below: bool,
    way: PidnsWay,
    parent: Option<&'a MountTree>,
}

/// Build the mount namespace of a process below the tree's root, `tree` (the image's
/// record of it: `kinds::mnt::below` checked at dump that it was made in ckpt's user
/// and PID namespaces, from the root's mount namespace or, two deep, from one made
/// below the root: `parent`, the PID of the stub in that one, restored already, and its
/// record), on a thread of ckpt's own, as [`enter_new`] builds the
/// tree's (its external sources checked first; a cgroup mount's cgroup made again
/// into `cgroups`, below `cgroup_root` if given); returns the namespace (a descriptor
/// of it: the thread that built it ended), for the process's stub to join. A failure
/// leaves nothing: the thread's namespace ended with it, the staging tmpfs with it.
pub(crate) fn make_below(
    ckpt: &Checkpoint,
    tree: &MountTree,
    parent: Option<(i32, &MountTree)>,
    cgroup_root: Option<&str>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> RestoreResult<std::fs::File> {
    crate::error::fault_point("make a mount namespace a process below the root made")?;
    if parent.is_some() {
        crate::error::fault_point("make a mount namespace nested two deep")?;
    }
    let how = How {
        pidns_init: false,
        sibling: false,
        below: true,
        way: PidnsWay::Ours,
        parent: parent.map(|(_, t)| t),
    };
    std::thread::scope(|s| {
        s.spawn(|| -> RestoreResult<std::fs::File> {
            // Two deep: copied from the namespace its parent's stub joined (the
            // thread's file system context its own first, at that namespace's root).
            if let Some((pid, _)) = parent {
                sys::mount::enter_mount_ns(pid)?;
            }
            // (unshare(CLONE_NEWNS) gives this thread a file system context of its own
            // first: ckpt's other threads stay where they are.)
            build(ckpt, tree, how, None, &[], cgroup_root, cgroups)?;
            Ok(sys::ns::open_thread_ns("mnt")?)
        })
        .join()
        .map_err(|_| {
            RestoreError::Reported("the thread building a mount namespace panicked".into())
        })?
    })
}

/// Build the mount namespace `tree` (the tree's own, or one a process below its root
/// made: `how`) on the calling thread, and move that thread into it, at its root;
/// `external`: the PID namespace given for the tree's external one (see [`enter_new`]).
fn build(
    ckpt: &Checkpoint,
    tree: &MountTree,
    how: How<'_>,
    external: Option<std::fs::File>,
    joins: &[(String, std::path::PathBuf)],
    cgroup_root: Option<&str>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
) -> RestoreResult<Entered> {
    let How {
        pidns_init,
        sibling,
        below,
        way,
        parent,
    } = how;
    let mut problems = Vec::new();
    let same_boot = !ckpt.info.boot_id.is_empty() && ckpt.info.boot_id == sys::process::boot_id();
    // ckpt's working directory stays where it was (the host's, detached below), for
    // the relative paths of its command line.
    let cwd = sys::mount::open_path(b".")?;
    // (none if ckpt's namespace has no /dev/ptmx: a new terminal is then made in the
    // tree's)
    let outer_ptmx = sys::mount::open_path(b"/dev/ptmx").ok();
    // The peer groups of ckpt's namespace the mounts join (or become slaves of),
    // through mounts of ckpt's opened before the copy.
    // (One a process below the root made in the tree's own namespace, built first, is
    // copied from that: its external mounts are the tree's, found there by the dump's
    // paths, and those of the file systems restore made anew there are other devices
    // now. What `--external-mount` gives is the tree's own namespace's.)
    // (Two deep, the namespace it was copied from is its parent's, made below the root
    // too: found the same way, in that one.)
    let base_tree = match (below, parent) {
        (true, Some(t)) => Some(t),
        (true, None) => owned_tree(ckpt),
        (false, _) => None,
    };
    let nested = base_tree.is_some();
    let made_anew = base_tree
        .map(super::checks::fresh_devs_of)
        .unwrap_or_default();
    let outside = open_outside(tree, below, &made_anew, &mut problems)?;
    if !problems.is_empty() {
        return Err(RestoreError::Problems(problems));
    }
    // Everything below is made in a private copy of the host's namespace (what is done
    // there, such as uncovering stacked mounts, never reaches the host).
    sys::mount::unshare_private()?;
    let mut given = match nested {
        true => Vec::new(),
        false => EXTERNAL.lock().map(|g| g.clone()).unwrap_or_default(),
    };
    // The cgroups its cgroup mounts bind, made again if they went with the tree (a
    // container's, removed by `runc delete`): a cgroup is known by its path, not its
    // inode (removed again if the restore fails).
    // With `--cgroup-root`, those below it instead (unless `--external-mount` names the
    // mount).
    for m in tree.mounts.iter().filter(|_| !nested) {
        if let MountOrigin::External { host_path, .. } = &m.origin {
            // (One whose source is given is bound from that: nothing is made.)
            if crate::kinds::cgroup::is_cgroup_fs(&m.fstype)
                && given.iter().all(|(pt, _)| *pt != m.point)
            {
                let moved = cgroup_root
                    .and_then(|r| crate::kinds::cgroup::relocated_mount_source(host_path, r));
                crate::kinds::cgroup::make_mounted(moved.as_deref().unwrap_or(host_path), cgroups)?;
                if let Some(src) = moved {
                    given.push((m.point.clone(), src));
                }
            }
        }
    }
    let renewed = match base_tree.filter(|_| parent.is_none()) {
        Some(base) => renewed_devs(base, &made_anew),
        None => BTreeMap::new(),
    };
    let sources = open_sources(
        tree,
        same_boot,
        &given,
        (&made_anew, &renewed),
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(RestoreError::Problems(problems));
    }
    // The tree's other namespaces first (the joined ones, UTS, IPC, network, time, a
    // user namespace and those it owns; `check_tree` refuses the rest), for ckpt's main
    // thread, as `Prepared::launch` makes them otherwise: the PID namespace's init is
    // made in them, and a user namespace's mount namespace is the one built below.
    // (Also for the reaper, whose child is the root: its stub is made in them; and for
    // an external PID namespace: a sysfs shows the network namespace of who mounts it.)
    let early =
        pidns_init && (way != PidnsWay::Ours || crate::kinds::userns::owned(ckpt).is_some());
    let namespaces = if early {
        Some(crate::kinds::ns::enter_new(
            ckpt,
            joins,
            cgroup_root,
            false,
        )?)
    } else {
        None
    };
    let userns = namespaces
        .as_ref()
        .and_then(|(_, u)| u.as_ref())
        .map(|u| &u.user);
    // With a user namespace, the mounts the tree's namespace got from the one it was
    // copied from (the first ones, external, each below another of them: the host's
    // that `unshare -U -m` copied) are made first, in a namespace of ckpt's; a copy of
    // that, owned by the user namespace, locks them as the kernel locked the original's
    // (`sys::userns::copy_mount_ns`); the rest (the mounts made inside it) are made in
    // the copy.
    let first = match userns {
        Some(_) => copied_prefix(tree),
        None => tree.mounts.len(),
    };
    // The tree's PID namespace's init, in the mount namespace it is to be in: it
    // follows the pivot below, as ckpt does.
    let make_init = || -> RestoreResult<Option<PidnsInit>> {
        if !(pidns_init && ckpt.own_pid_namespace) {
            return Ok(None);
        }
        crate::error::fault_point("create the tree's PID namespace")?;
        // (In the one the tree's user namespace owns, if any.)
        let ns = namespaces
            .as_ref()
            .and_then(|(_, u)| u.as_ref())
            .and_then(|u| u.pid.as_ref());
        let (pid, go) = sys::process::spawn_pidns_init_stub(sibling, ns)?;
        Ok(Some(PidnsInit {
            pid,
            go: Some(go),
            proc_stacked: false,
            sibling,
        }))
    };
    let mut init = match userns {
        Some(_) => None,
        None => make_init()?,
    };
    // The new PID namespace's reaper, with the root's stub (`check_tree` refuses it
    // with a user namespace of the tree's own).
    let reaper = match (pidns_init, way, userns) {
        (true, PidnsWay::Reaper, None) => Some(make_reaper(ckpt)?),
        _ => None,
    };
    // What the proc mounts are made from inside of (none: ckpt's own, for `ckpt check`
    // and for a tree in ckpt's PID namespace).
    let proc_from = |init: &Option<PidnsInit>| -> Option<ProcFrom<'_>> {
        match (init, &reaper, &external) {
            (Some(i), _, _) => Some(ProcFrom::Init(i.pid)),
            (None, Some(r), _) => r.made.as_ref().map(|m| ProcFrom::Init(m.pid)),
            (None, None, Some(f)) => Some(ProcFrom::Ns(f)),
            (None, None, None) => None,
        }
    };
    let spare = crate::restore::spare_pid_of(ckpt);
    let stage = STAGES
        .iter()
        .find(|s| sys::mount::is_dir(s))
        .ok_or_else(|| RestoreError::Reported("no directory to stage the mounts on".into()))?;
    sys::mount::mount_tmpfs(stage)?;
    let mut base = stage.to_vec();
    base.extend(b"/root");
    let mut scratch = stage.to_vec();
    scratch.extend(b"/scratch");
    let mut scratch_file = stage.to_vec();
    scratch_file.extend(b"/scratch-file");
    let os = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes;
    let made = std::fs::create_dir(os(&base))
        .and_then(|()| std::fs::create_dir(os(&scratch)))
        .and_then(|()| std::fs::write(os(&scratch_file), b""));
    made.map_err(|e| RestoreError::Reported(format!("make the staging directories: {e}")))?;
    let mut roots: BTreeMap<u32, OwnedFd> = BTreeMap::new();
    // The tree's terminal, if a devpts of its own holds it (made with that devpts).
    let console = std::cell::RefCell::new(None);
    // Mount `m` on `target` (the scratch points are in ckpt's staging, kept until the
    // copy: external mounts come first). After the pivot (`pivoted`), a bind's source
    // is named by its mount point, not through our /proc, which the tree's may cover.
    let mount_one = |m: &Mount,
                     target: &[u8],
                     from: Option<ProcFrom<'_>>,
                     roots: &BTreeMap<u32, OwnedFd>,
                     pivoted: bool|
     -> RestoreResult<()> {
        crate::error::fault_point("mount the tree's file systems")?;
        match &m.origin {
            MountOrigin::External { .. } => {
                let src = sources
                    .get(&m.id)
                    .ok_or_else(|| RestoreError::Reported("an external source went".into()))?;
                // Bound from a scratch point, so that the mount is made now, in the
                // namespace's order (mountinfo lists mounts as they were made).
                let at = if sys::mount::fd_is_dir(&src.1)? {
                    &scratch
                } else {
                    &scratch_file
                };
                sys::mount::attach(&src.0, at)?;
                sys::mount::bind(at, target)?;
                sys::mount::detach(at)?;
            }
            MountOrigin::Fresh { files } => {
                let ro = m.super_options.split(',').any(|o| o == "ro");
                match from {
                    Some(from) if m.fstype == "proc" => {
                        mount_proc_in(from, spare, m, target)?;
                    }
                    _ => sys::mount::mount_new(&m.source, target, &m.fstype, false, &data_of(m))?,
                }
                if !files.is_empty() {
                    sys::mount::write_files(target, files)?;
                }
                // The tree's terminal, before binds of it (/dev/console) are made.
                let index = match below {
                    true => None,
                    false => crate::kinds::fd::tty::console_in(ckpt, m),
                };
                if let Some(index) = index {
                    if console.borrow().is_none() {
                        let c = crate::kinds::fd::tty::make_console(target, index)?;
                        *console.borrow_mut() = Some(c);
                    }
                }
                if ro {
                    sys::mount::set_super_ro(target)?;
                }
            }
            MountOrigin::Bind { of } => {
                let from = roots
                    .get(of)
                    .ok_or_else(|| RestoreError::Reported("a bind's source went".into()))?;
                let mut src = match tree.mounts.iter().find(|x| x.id == *of) {
                    Some(x) if pivoted => x.point.clone(),
                    _ => sys::mount::fd_path(from),
                };
                if m.root != b"/" {
                    src.extend(&m.root);
                }
                sys::mount::bind(&src, target)?;
            }
            MountOrigin::Unknown => {
                return Err(RestoreError::Reported("a mount of unknown origin".into()));
            }
        }
        Ok(())
    };
    for (i, m) in tree.mounts.iter().enumerate().take(first) {
        let mut target = base.clone();
        if i > 0 {
            target.extend(&m.point);
        }
        mount_one(m, &target, proc_from(&init), &roots, false)?;
        roots.insert(m.id, sys::mount::open_path(&target)?);
    }
    // Flags and propagation once every mount is there (a read-only parent stays
    // writable while its children's mount points are made), the root's after the pivot
    // (pivot_root refuses a shared root).
    crate::error::fault_point("set the tree's mount flags")?;
    let set_flags = |ms: &[Mount], roots: &BTreeMap<u32, OwnedFd>| -> RestoreResult<()> {
        for m in ms {
            let fd = roots
                .get(&m.id)
                .ok_or_else(|| RestoreError::Reported("a mount went".into()))?;
            let at = sys::mount::fd_path(fd);
            sys::mount::set_mount_flags(&at, sys::mount::mount_flags(&m.options))?;
        }
        Ok(())
    };
    let (copied, inside) = tree.mounts.split_at(first);
    set_flags(copied, &roots)?;
    if let Some(user) = userns {
        // The mounts made inside come after the copy, below the pivoted root: those
        // copied first, with their flags (their locks are taken from them).
        sys::mount::pivot_into(&base)?;
        crate::error::fault_point("copy the tree's mount namespace into its user namespace")?;
        let copy = sys::userns::copy_mount_ns(user)?;
        sys::userns::join(&copy, libc::CLONE_NEWNS)?;
        // Our descriptors named the mounts of the namespace left behind: those of the
        // copy, by their mount points (the last one made on a point shows).
        roots.clear();
        for m in copied {
            roots.insert(m.id, sys::mount::open_path(&m.point)?);
        }
        init = make_init()?;
        // (The scratch points went with ckpt's staging: inside, the external mounts
        // are bound from a staging tmpfs of the copy's.)
        for m in inside {
            if matches!(m.origin, MountOrigin::External { .. }) {
                return Err(RestoreError::Reported(format!(
                    "the mount on {} comes from outside the namespace after mounts made \
                     inside it",
                    String::from_utf8_lossy(&m.point)
                )));
            }
            mount_one(m, &m.point, proc_from(&init), &roots, true)?;
            roots.insert(m.id, sys::mount::open_path(&m.point)?);
            // (By its point, while it is the last mount there.)
            sys::mount::set_mount_flags(&m.point, sys::mount::mount_flags(&m.options))?;
        }
    } else {
        sys::mount::pivot_into(&base)?;
    }
    // The namespace's /proc is the tree's PID namespace's, where ckpt has no ID (no
    // /proc/self): a proc of ckpt's own is stacked on it for ckpt's work, which the
    // builder takes off before the tree runs (`unstack_proc`).
    let mut proc_stacked = false;
    if init.is_some() || reaper.is_some() || external.is_some() {
        sys::mount::mount_new(b"proc", b"/proc", "proc", false, "")?;
        match &mut init {
            Some(init) => init.proc_stacked = true,
            None => proc_stacked = true,
        }
    }
    // After the pivot (pivot_root refuses a shared root): our descriptors of the mounts
    // name them, through the namespace's /proc.
    crate::error::fault_point("set the tree's mount propagation")?;
    let fds: Vec<&OwnedFd> = tree
        .mounts
        .iter()
        .map(|m| {
            roots
                .get(&m.id)
                .ok_or_else(|| RestoreError::Reported("a mount went".into()))
        })
        .collect::<RestoreResult<_>>()?;
    propagate(&prop_in(tree), &fds, &outside)?;
    // (Those the namespaces made below the root in this one take groups from.)
    if !below && made_below_in(ckpt, tree) {
        let mut kept = KEPT
            .lock()
            .map_err(|_| RestoreError::Reported("the kept mounts' lock is poisoned".into()))?;
        *kept = roots;
    }
    sys::mount::fchdir(&cwd)?;
    Ok(Entered {
        init,
        console: console.into_inner(),
        outer_ptmx,
        namespaces,
        other_pidns: OtherPidns {
            external,
            reaper,
            proc_stacked,
        },
    })
}

/// The mounts of ckpt's namespace that the peer groups of `tree` found there at dump
/// are taken from (`MountTree::outside`: of the tree's namespace, or of one a process
/// below the root made, `below`), opened by their mount points, by group. Each must
/// still be the last mount there, of the same file system (or, for a device of
/// `made_anew`, one restore made anew in the tree's namespace) and directory, a member of a peer group (or, for a group the
/// namespace's mounts were slaves of only, a slave): the group it is in now is the one
/// restore joins (the same one on the same boot while it stays mounted). What is not
/// goes to `problems`, naming the mount point.
fn open_outside(
    tree: &MountTree,
    below: bool,
    made_anew: &BTreeSet<u64>,
    problems: &mut Vec<crate::error::Problem>,
) -> RestoreResult<BTreeMap<String, OwnedFd>> {
    let mut out = BTreeMap::new();
    if tree.outside.is_empty() {
        return Ok(out);
    }
    let ours = sys::mount::mountinfo(0)?;
    let kept = KEPT
        .lock()
        .map_err(|_| RestoreError::Reported("the kept mounts' lock is poisoned".into()))?;
    for o in &tree.outside {
        // A mount of the tree's own namespace that `build` made and kept: by its dump
        // ID, wherever it is now (covered or not); it is in the group restore gave it.
        if let Some(fd) = kept.get(&o.mount).filter(|_| o.mount != 0) {
            let fd = fd
                .try_clone()
                .map_err(|e| sys::SysError::io("dup a kept mount", e))?;
            out.insert(o.group.clone(), fd);
            continue;
        }
        let point = String::from_utf8_lossy(&o.point);
        let last = ours.iter().rev().find(|l| l.point == o.point);
        let field =
            |l: &sys::mount::MountLine, k: &str| l.optional.iter().any(|f| f.starts_with(k));
        let why = match last {
            None => Some("nothing is mounted there now".to_string()),
            Some(l) if (l.dev() != o.dev && !made_anew.contains(&o.dev)) || l.root != o.root => {
                Some(format!(
                    "another file system or directory is mounted there now ({} {})",
                    l.fstype,
                    String::from_utf8_lossy(&l.root)
                ))
            }
            Some(l) if o.member && !field(l, "shared:") => Some("it is not shared now".into()),
            Some(l) if !o.member && !field(l, "master:") => Some("it is not a slave now".into()),
            Some(_) => None,
        };
        if let Some(why) = why {
            crate::kinds::check::p(
                problems,
                "external-mount",
                format!(
                    "{} had mounts in peer group {} of ckpt's mount namespace, which \
                     restore joins through the mount on {point} there: {why}",
                    match below {
                        true => "a mount namespace a process below the root made",
                        false => "the tree's mount namespace",
                    },
                    o.group
                ),
            );
            continue;
        }
        out.insert(o.group.clone(), sys::mount::open_path(&o.point)?);
    }
    Ok(out)
}

/// The reaper of a new PID namespace for the tree, with the root's stub as its child
/// (with the root's ID there), in the mount namespace being built.
fn make_reaper(ckpt: &Checkpoint) -> RestoreResult<Reaper> {
    let root = ckpt
        .processes
        .first()
        .map(|p| p.pid)
        .ok_or_else(|| RestoreError::Malformed("the image holds no process".into()))?;
    crate::error::fault_point("create the PID namespace's reaper")?;
    let made = sys::process::spawn_pidns_reaper(root)?;
    let pid = made.pid;
    let mut reaper = Reaper {
        root: 0,
        made: Some(made),
    };
    // (Its only child, made before spawn_pidns_reaper returned; our /proc is the
    // host's still. On an error the reaper is dropped: killed.)
    reaper.root = sys::proc::children(pid)?
        .first()
        .copied()
        .ok_or_else(|| RestoreError::Reported("the reaper's root stub is not there".into()))?;
    Ok(reaper)
}

/// How many of the tree's first mounts came with the copy its mount namespace was
/// made from (see [`enter_new`]): the first ones that are external, each below another
/// of them (the root first).
pub(super) fn copied_prefix(tree: &MountTree) -> usize {
    let mut ids = BTreeSet::new();
    for (i, m) in tree.mounts.iter().enumerate() {
        let below = i == 0 || ids.contains(&m.parent);
        if !(below && matches!(m.origin, MountOrigin::External { .. })) {
            return i;
        }
        ids.insert(m.id);
    }
    tree.mounts.len()
}

/// Take off the proc of ckpt's that [`enter_new`] stacked on the namespace's /proc: the
/// tree's builder does it, from the namespace, before anything of the tree runs.
pub(crate) fn unstack_proc() -> RestoreResult<()> {
    Ok(sys::mount::detach(b"/proc")?)
}
