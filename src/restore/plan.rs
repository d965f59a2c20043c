//! Plan: decode the image's metadata and check every requirement against this host,
//! collecting *all* problems, before anything is created.
//!
//! The checks themselves live with their kinds (`kinds::*`, each under "checks (plan)");
//! this module orders them.

use std::collections::BTreeSet;
use std::io::Read;

use super::{Problem, RestoreError, Result};
use crate::arch;
use crate::image::{ImageReader, decode_meta, tag};
pub use crate::kinds::check::Held;
use crate::kinds::check::p;
use crate::kinds::fd::file::HeldFiles;
pub use crate::kinds::fd::tty::{TtyPlan, tty_plan};
use crate::kinds::fd::{self, epoll, external, fifo, pipe, unix};
pub(crate) use crate::kinds::mem::TASK_SIZE;
use crate::kinds::mem::{self, shmem};
use crate::kinds::task::{attrs, creds, seccomp, signals, threads, tree};
use crate::model::{Checkpoint, Process};

pub struct Plan {
    pub ckpt: Checkpoint,
    /// `--inherit-fd` pairs (ckpt's descriptor, external resource key).
    pub inherit: Vec<(i32, String)>,
    /// `--join-ns` pairs (namespace kind, namespace file).
    pub joins: Vec<(String, std::path::PathBuf)>,
    /// The tree's network namespace when the restore joins one made outside it, with
    /// the dump's lock in it (`sys::netlock::TreeNet`, set by `restore::prepare_for`).
    pub tree_net: Option<crate::sys::netlock::TreeNet>,
    /// `--cgroup-root`: the cgroup the tree's cgroups are restored below.
    pub cgroup_root: Option<String>,
    /// `--cgroups`: where the processes go (see `kinds::cglimits`).
    pub cgroup_mode: crate::kinds::cglimits::CgroupMode,
    /// `--manage-cgroups`: which cgroups get their recorded limits.
    pub cgroup_limits: crate::kinds::cglimits::LimitsMode,
    pub problems: Vec<Problem>,
    /// Each thread's xsave area converted to this host's layout, by TID.
    pub xsave: std::collections::BTreeMap<i32, Vec<u8>>,
    /// Ask for the AMX permission the image's processes had (ARCH_REQ_XCOMP_PERM): they
    /// had it and this host can grant it (under `--cpu-policy=ignore` a host that cannot
    /// is accepted, and the processes are restored without it).
    pub request_amx: bool,
    /// The files the processes open, map or run, and their working and root
    /// directories, opened (`O_PATH`) and checked here: stage gives the processes these
    /// very files (see `kinds::fd::held`).
    pub(crate) held: HeldFiles,
    /// The tree's user namespace of its own, made before the stubs (see
    /// `kinds::userns`), which each stub joins before its credentials are set.
    pub(crate) userns: Option<std::os::fd::OwnedFd>,
    /// ckpt's descriptor of the read end of the release gate (`restore::pidns`): set by
    /// a builder in the tree's PID namespace, whose released threads then wait on it
    /// (`stage::commit`) until ckpt outside, having reaped the builder, opens the gate.
    pub(crate) release_gate: Option<i32>,
    /// `restore --lazy`: the image's index and the state shared with the server that
    /// fills the memory after commit (`restore::lazy`).
    pub(crate) lazy: Option<std::sync::Arc<super::lazy::Lazy>>,
}

/// What restore may assume of this host, and how strictly it compares.
#[derive(Debug, Clone)]
pub struct HostView {
    pub host: arch::HostCaps,
    pub policy: arch::CpuPolicy,
    /// The tree goes into a new PID namespace (`restore --new-pidns`): its IDs need not
    /// be free on this host.
    pub new_pid_namespace: bool,
    /// `--inherit-fd N:KEY`: ckpt's own descriptor N takes the place of the image's
    /// external resource KEY (see `FdKind::External`).
    pub inherit: Vec<(i32, String)>,
    /// `--join-ns KIND:PATH`: the tree's namespace of kind KIND that was made outside
    /// it is the one of namespace file PATH (see `kinds::ns`).
    pub join_ns: Vec<(String, std::path::PathBuf)>,
    /// `--cgroup-root PATH`: restore the tree's cgroups below cgroup PATH (of each
    /// hierarchy) instead of where they were (see `kinds::cgroup`).
    pub cgroup_root: Option<String>,
    /// `--cgroups MODE`: put the processes into their cgroups (the default), leave
    /// them in ckpt's, or require the cgroups to exist or not (see `kinds::cglimits`).
    pub cgroup_mode: crate::kinds::cglimits::CgroupMode,
    /// `--manage-cgroups[=made|all]`: write the cgroups' recorded limits.
    pub cgroup_limits: crate::kinds::cglimits::LimitsMode,
}

impl HostView {
    /// This host as detected, with the features named by CKPT_HOST_MASK (and `mask`)
    /// taken away.
    pub fn detect(
        mask: Option<&str>,
        policy: arch::CpuPolicy,
    ) -> std::result::Result<Self, String> {
        let host = arch::HostCaps::detect_with_env_mask().map_err(|e| e.to_string())?;
        let host = match mask {
            Some(m) if !m.trim().is_empty() => host.masked(m).map_err(|e| e.to_string())?,
            _ => host,
        };
        if let Some(k) = host
            .masked_kernel
            .iter()
            .find(|k| super::kernel::Facility::from_name(k).is_none())
        {
            return Err(super::kernel::unknown_facility(k));
        }
        Ok(Self {
            host,
            policy,
            new_pid_namespace: false,
            inherit: Vec::new(),
            join_ns: Vec::new(),
            cgroup_root: None,
            cgroup_mode: Default::default(),
            cgroup_limits: Default::default(),
        })
    }
}

/// Read the image up to and including its metadata record.
pub fn read_checkpoint<R: Read>(reader: &mut ImageReader<R>) -> Result<Checkpoint> {
    let required = reader.required_features();
    let rec = reader.next_record()?.ok_or(RestoreError::Malformed(
        "the image has no checkpoint record".into(),
    ))?;
    if rec.tag != tag::CHECKPOINT {
        return Err(RestoreError::Malformed(format!(
            "the image starts with a {} record instead of the checkpoint metadata",
            tag::name(rec.tag)
        )));
    }
    let ckpt: Checkpoint = decode_meta(rec.tag, rec.payload)?;
    crate::image::check_features(required, ckpt.parent.is_some())?;
    Ok(ckpt)
}

/// Structural checks: an image that passes them cannot make restore misbehave, whatever
/// its origin. (Problems are listed in this order: the image is refused before they
/// are sorted.)
fn check_structure(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let procs = &ckpt.processes;
    if !tree::check_root(ckpt, problems) {
        return;
    }
    let mut ids = BTreeSet::new();
    for (i, q) in procs.iter().enumerate() {
        check_process(q, &mut ids, problems);
        tree::check_parent(procs, i, problems);
        mem::cow::check_cow(procs, i, problems);
    }
    epoll::check_targets(procs, problems);
    let pipe_ids = pipe::check_pipes(&ckpt.pipes, problems);
    pipe::check_ends(procs, &pipe_ids, problems);
    let fifo_ids = fifo::check_fifos(&ckpt.fifos, problems);
    fd::check_records(procs, &fifo_ids, problems);
    let pair_ids = unix::check_pairs(&ckpt.socketpairs, problems);
    let dgram_names = unix::dgram_names(procs, problems);
    unix::check_creds(ckpt, problems);
    unix::check_rights(ckpt, problems);
    fd::inflight::check(ckpt, problems);
    fd::check_sockets(procs, &pair_ids, &dgram_names, problems);
    fd::check_shared(procs, problems);
    fd::tty::check_ptys(ckpt, problems);
    tree::check_groups(procs, problems);
    crate::kinds::task::share::check_sharing(ckpt, problems);
    crate::kinds::task::pidns::check_nested(ckpt, problems);
}

/// Structural checks of one process.
fn check_process(proc_: &Process, ids: &mut BTreeSet<i32>, problems: &mut Vec<Problem>) {
    if !tree::check_ids(proc_, ids, problems) {
        // A zombie's stub still takes its name and limits.
        attrs::check_rlimits(proc_, problems);
        attrs::check_auxv_comm(proc_, problems);
        return;
    }
    attrs::check_rlimits(proc_, problems);
    attrs::check_oom_thp(proc_, problems);
    attrs::check_prctl(proc_, problems);
    if !proc_.is_zombie() {
        attrs::check_mm(proc_, attrs::mmap_min_addr(), problems);
    }
    threads::check_count(proc_, problems);
    tree::check_stop(proc_, problems);
    mem::check_areas(proc_, problems);
    mem::aio::check_rings(proc_, problems);
    if !proc_.aio.is_empty() {
        if let Some(cpus) = mem::aio::possible_cpus() {
            mem::aio::check_ring_sizes(proc_, cpus, problems);
        }
    }
    fd::check_table(proc_, problems);
    signals::check_actions(proc_, problems);
    threads::check_states(proc_, problems);
    signals::check_pending(&proc_.shared_pending, problems);
    attrs::check_auxv_comm(proc_, problems);
}

/// What the process opened and mapped by path is there and unchanged, the names and
/// addresses it binds and the locks it held are free.
fn check_host_files(
    files: &mut HeldFiles,
    proc_: &Process,
    image: &ImageView<'_>,
    held: &Held,
    problems: &mut Vec<Problem>,
) {
    // (In a mount namespace a process below the root made, they are looked up there,
    // once it is built: `attrs::set_cwd_root`.)
    if !crate::kinds::ns::mnt_below_root(image.procs, proc_) {
        attrs::check_dirs(files, proc_, problems);
    }
    if let Some(exe) = &proc_.mm.exe {
        fd::file::check_file(files, exe, "executable", problems);
    }
    // Images that list their System V objects are checked once for all (`kinds::ipc`);
    // in a new IPC namespace every ID is free.
    // (One in an IPC namespace a process below the root made has them made there.)
    let ipc_below = crate::kinds::ns::ipc_below_root(image.procs, proc_);
    if !image.sysv_listed && !image.new_ipcns && !ipc_below {
        shmem::check_sysv_free(proc_, held, problems);
    }
    mem::check_mapped_files(files, proc_, problems);
    for f in &proc_.fds {
        // (A named queue of a new IPC namespace is made there: `check_namespace`.)
        if (image.new_ipcns || ipc_below) && matches!(f.kind, crate::model::FdKind::PosixMq { .. })
        {
            continue;
        }
        let other_netns = image.other_netns || crate::kinds::ns::net_below_root(image.procs, proc_);
        let net = (image.pids, image.new_pidns, other_netns);
        fd::check_fd_in_image(files, f, net, held, problems);
    }
    fd::lock::check_locks(proc_, held, problems);
    seccomp::check_seccomp(proc_, problems);
}

/// What the host checks of one process need to know of the whole image.
struct ImageView<'a> {
    /// The PIDs of the image's processes.
    pids: &'a BTreeSet<i32>,
    /// Its IDs will live in a new PID namespace, where they are all free.
    new_pidns: bool,
    /// It lists the System V segments its processes attach (`Checkpoint::sysv`).
    sysv_listed: bool,
    /// Its System V objects will live in a new IPC namespace, where every ID is free.
    new_ipcns: bool,
    /// Its sockets will live in another network namespace than ckpt's: a new one,
    /// where every address, port and abstract name is free, or one `--join-ns` gives,
    /// whose addresses are not checked here (a bind that fails there fails the stage,
    /// before the point of no return).
    other_netns: bool,
    /// Its processes (the root first): one in a network namespace a process below the
    /// root made has its sockets there, where they are free.
    procs: &'a [Process],
}

/// Host checks of one process; what the dumped tree holds (`held`) counts as free.
fn check_host(
    files: &mut HeldFiles,
    proc_: &Process,
    image: &ImageView<'_>,
    held: &Held,
    problems: &mut Vec<Problem>,
) {
    if !image.new_pidns {
        tree::check_pids_free(proc_, held, problems);
    }
    if !proc_.is_zombie() {
        check_host_files(files, proc_, image, held, problems);
    }
}

/// Build the plan from decoded metadata.
pub fn plan(ckpt: Checkpoint, view: &HostView) -> Plan {
    let (mut problems, xsave, held) = check_all(&ckpt, view, &Held::default());
    // Its unchanged pages are in its parent: only the full image of its chain
    // (`restore::chain`, which `ckpt restore IMAGE` makes) can be restored.
    if let Some(p) = &ckpt.parent {
        problems.push(Problem {
            code: "incremental",
            message: format!(
                "the image is incremental (its unchanged pages are in its parent {}): \
                 restore it from its file, which follows the chain of parents",
                p.path
            ),
        });
    }
    let request_amx = ckpt.arch.xcomp_perm & (1 << 18) != 0
        && arch::amx_permission_grantable(&ckpt.arch, &view.host);
    Plan {
        ckpt,
        inherit: view.inherit.clone(),
        joins: view.join_ns.clone(),
        tree_net: None,
        cgroup_root: view.cgroup_root.clone(),
        cgroup_mode: view.cgroup_mode,
        cgroup_limits: view.cgroup_limits,
        problems,
        xsave,
        request_amx,
        held,
        userns: None,
        release_gate: None,
        lazy: None,
    }
}

/// Every problem plan finds in `ckpt` on this host, with what a dumped tree holds now
/// (`held`) counted as free: the plan dump runs before it kills anything.
pub(crate) fn problems_while_held(ckpt: &Checkpoint, view: &HostView, held: &Held) -> Vec<Problem> {
    check_all(ckpt, view, held).0
}

/// Each thread's xsave area converted to this host's layout, by TID.
type Xsave = std::collections::BTreeMap<i32, Vec<u8>>;

/// Every check of the plan (sorted problems), and the converted xsave areas.
fn check_all(ckpt: &Checkpoint, view: &HostView, held: &Held) -> (Vec<Problem>, Xsave, HeldFiles) {
    let mut problems = Vec::new();
    let mut xsave = Xsave::new();
    // Every file restore needs by path is opened here, once, and checked through that
    // descriptor; stage uses only these descriptors.
    let mut files = HeldFiles::new(&ckpt.info.boot_id);
    files.fresh_devs = crate::kinds::mnt::fresh_devs(ckpt);
    files.fresh_devs.extend(crate::kinds::mnt::copied_devs());
    check_structure(ckpt, &mut problems);
    crate::kinds::ns::check_namespaces(ckpt, &mut problems);
    crate::kinds::userns::check_host(ckpt, &mut problems);
    crate::kinds::mnt::check_tree(ckpt, view.new_pid_namespace, &mut problems);
    // (At dump, the namespaces are the tree's own: nothing to join yet.)
    if !held.live {
        crate::kinds::ns::check_joins(ckpt, &view.join_ns, &mut problems);
        crate::kinds::fd::tcp::check_host_lock(ckpt, &view.join_ns, &mut problems);
    }
    crate::kinds::task::extpidns::check(
        ckpt,
        &view.join_ns,
        &view.inherit,
        view.new_pid_namespace,
        held.live,
        &mut problems,
    );
    if view.cgroup_mode != crate::kinds::cglimits::CgroupMode::Ignore {
        crate::kinds::cgroup::check_cgroups(ckpt, view.cgroup_root.as_deref(), &mut problems);
    }
    crate::kinds::cglimits::check(
        ckpt,
        view.cgroup_root.as_deref(),
        view.cgroup_mode,
        view.cgroup_limits,
        &mut problems,
    );
    if problems.iter().all(|p| p.code != "malformed") {
        // Privileges: ckpt's own, and what each process asks of them.
        let pairs = ckpt.pipes.len() + ckpt.socketpairs.len() + ckpt.fifos.len();
        match creds::Own::detect() {
            Ok(own) => {
                creds::check_ckpt(&own, &mut problems);
                // In a user namespace of the tree's own, a process takes its
                // credentials there, where its stub has every capability.
                let inside = crate::kinds::userns::own_inside(&own);
                for proc_ in &ckpt.processes {
                    if proc_.is_zombie() {
                        creds::check_zombie(proc_, &own, &mut problems);
                    } else {
                        let userns = crate::kinds::userns::state_of(ckpt, proc_);
                        seccomp::check_creds_under_filters(proc_, &own, userns, &mut problems);
                        let own = if userns.is_some() { &inside } else { &own };
                        creds::check_process(proc_, own, pairs, &mut problems);
                    }
                }
            }
            Err(e) => p(
                &mut problems,
                "privilege",
                format!("cannot read ckpt's own credentials and limits: {e}"),
            ),
        }
        // CPU, xsave, word size and debug registers, under the chosen policy.
        let threads: Vec<(i32, &arch::ThreadArchState)> = ckpt
            .processes
            .iter()
            .flat_map(|p| p.threads.iter().map(|t| (t.tid, &t.arch)))
            .collect();
        for ap in arch::check_arch(&ckpt.arch, &threads, &view.host, view.policy) {
            p(&mut problems, ap.code.as_str(), ap.message);
        }
        let layout = arch::XsaveLayout::for_image(&ckpt.arch, &view.host);
        for (tid, t) in &threads {
            match arch::convert_xsave(&t.xsave, &layout, &view.host) {
                Ok(x) => {
                    xsave.insert(*tid, x);
                }
                // The arch checks above already name a missing component once for
                // the image; do not repeat it per thread.
                Err(ap) => {
                    if problems.iter().all(|x| x.code != ap.code.as_str()) {
                        p(&mut problems, ap.code.as_str(), ap.message)
                    }
                }
            }
        }
        // Kernel facilities stage relies on (clone3 set_tid, PR_TIMER_CREATE_RESTORE_IDS,
        // MADV_GUARD_INSTALL...), probed here.
        let masked: BTreeSet<super::kernel::Facility> = view
            .host
            .masked_kernel
            .iter()
            .filter_map(|k| super::kernel::Facility::from_name(k))
            .collect();
        let missing = super::kernel::missing(&super::kernel::required(ckpt), &masked);
        let vdso32 = missing
            .iter()
            .all(|(f, _)| *f != super::kernel::Facility::MapVdso32);
        problems.extend(missing.into_iter().map(|(_, p)| p));
        let pids: BTreeSet<i32> = ckpt.processes.iter().map(|p| p.pid).collect();
        let image = ImageView {
            pids: &pids,
            new_pidns: view.new_pid_namespace || ckpt.ids_of_a_pid_namespace(),
            sysv_listed: !ckpt.sysv.shm.is_empty(),
            new_ipcns: crate::kinds::ns::owns(ckpt, "ipc"),
            other_netns: crate::kinds::ns::net_elsewhere(ckpt),
            procs: &ckpt.processes,
        };
        crate::kinds::ipc::check_objects(&ckpt.sysv, held, !image.new_ipcns, &mut problems);
        // (Those in an IPC namespace a process below the root made: `check_below_root`.)
        let in_root_ipc: Vec<&crate::model::Process> = ckpt
            .processes
            .iter()
            .filter(|p| !crate::kinds::ns::ipc_below_root(&ckpt.processes, p))
            .collect();
        crate::kinds::ipc::check_undo(&ckpt.sysv, &in_root_ipc, &mut problems);
        crate::kinds::ipc::check_below_root(ckpt, &mut problems);
        if let Some(l) = crate::kinds::ns::own_ipc(ckpt) {
            crate::kinds::ipc::check_limits(&ckpt.sysv, &l.values, &mut problems);
            // (A process in an IPC namespace a process below the root made opens that
            // one's: `check_below_root`.)
            let in_root = ckpt
                .processes
                .iter()
                .filter(|p| !crate::kinds::ns::ipc_below_root(&ckpt.processes, p));
            crate::kinds::fd::mqueue::check_namespace(in_root, &l.mqueues, &mut problems);
        }
        for proc_ in &ckpt.processes {
            if !proc_.is_zombie() {
                threads::check_arch(&ckpt.arch, proc_, vdso32, &mut problems);
            }
            check_host(&mut files, proc_, &image, held, &mut problems);
            // A dumped tree's external resources are given back at restore by
            // `--inherit-fd`, which only that restore has.
            if !held.live {
                external::check_external(proc_, &view.inherit, &mut problems);
            }
        }
        unix::check_pair_names(&mut files, ckpt, held, &mut problems);
        external::check_inherit_used(ckpt, &view.inherit, &mut problems);
        attrs::check_randomization(
            &ckpt.processes,
            crate::sys::process::host_randomizes(),
            &mut problems,
        );
        fd::tty::check_pty_indexes(ckpt, held, &mut problems);
        problems.sort_by(|a, b| a.message.cmp(&b.message));
        problems.dedup();
    }
    (problems, xsave, files)
}
