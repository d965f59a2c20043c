//! Restore: plan -> stage -> commit.
//!
//! *Plan* decodes the metadata and checks everything against this host, listing every
//! problem (`ckpt check` is this phase plus a read of the whole image). *Stage* builds the
//! process under a guard whose drop kills it (`stage::Stub`); page data is checked
//! (record checksums, bounds) as it lands. *Commit* sets the final registers and lets the
//! process go: the point of no return.

pub mod chain;
pub mod composite;
pub(crate) mod gate;
pub(crate) mod kernel;
pub(crate) mod lazy;
pub(crate) mod pidns;
pub(crate) mod plan;
pub(crate) mod source;
pub(crate) mod stage;
pub mod template;

use std::io::Read;
use std::time::{Duration, Instant};

pub(crate) use crate::error::fault_point;
pub use crate::error::{Problem, RestoreError, RestoreResult as Result};
use crate::image::ImageReader;
pub use crate::kinds::cglimits::{CgroupMode, LimitsMode};
pub use crate::kinds::mnt::set_external_mounts;
use crate::sys;
pub use pidns::{Launched, exit_code};
pub use plan::{HostView, read_checkpoint};

/// Result of `check`.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub page_bytes: u64,
    /// What a host needs to run the image (for schedulers).
    pub requirements: serde_json::Value,
}

/// Every check restore makes before its point of no return, without creating anything:
/// the whole image is read (all checksums) and all host requirements are compared.
pub fn check<R: Read>(input: R, view: &HostView) -> Result<CheckReport> {
    let mut reader = ImageReader::new(input)?;
    let ckpt = plan::read_checkpoint(&mut reader)?;
    check_records(ckpt, &mut source::Direct::new(&mut reader), view)
}

/// [`check`] of an incremental image, read through its chain (every record of every
/// link is read and checked).
pub fn check_composite(c: &composite::Composite, view: &HostView) -> Result<CheckReport> {
    check_records(
        c.meta().clone(),
        &mut composite::CompositeSource::new(c, false),
        view,
    )
}

fn check_records(
    ckpt: crate::model::Checkpoint,
    records: &mut dyn source::RecordSource,
    view: &HostView,
) -> Result<CheckReport> {
    // ckpt's cgroups and cgroup mounts, before it enters the tree's namespaces.
    sys::cgroup::prime();
    // The files of a tree with a mount namespace of its own are in it: built first (in
    // a namespace of ckpt's own, which ends with it); what stops it is a problem.
    // (The cgroups its cgroup mounts bind, made if missing, are removed again at the end.)
    let mut cgroups = crate::kinds::cgroup::MadeCgroups::default();
    let early = match crate::kinds::mnt::enter_new(
        &ckpt,
        view.new_pid_namespace,
        false,
        false,
        (&view.join_ns, &view.inherit),
        view.cgroup_root.as_deref(),
        &mut cgroups,
    ) {
        Ok(_) => Vec::new(),
        Err(RestoreError::Problems(p)) => p,
        Err(e) => vec![Problem {
            code: "mount",
            message: format!("cannot build the tree's mount namespace: {e}"),
        }],
    };
    let plan = plan::plan(ckpt, view);
    let mut requirements = crate::arch::requirements_manifest(&plan.ckpt.arch);
    if let (Some(o), Some(m)) = (
        requirements.as_object_mut(),
        crate::kinds::mnt::manifest(&plan.ckpt),
    ) {
        o.insert("mounts".into(), m);
    }
    if let Some(k) = requirements
        .get_mut("kernel")
        .and_then(serde_json::Value::as_array_mut)
    {
        k.extend(kernel::manifest(&kernel::required(&plan.ckpt)));
    }
    if let Some(r) = requirements.as_object_mut() {
        r.insert("namespaces".into(), crate::kinds::ns::manifest(&plan.ckpt));
        r.insert("cgroups".into(), crate::kinds::cgroup::manifest(&plan.ckpt));
    }
    let mut problems = early;
    problems.extend(plan.problems);
    let mut page_bytes = 0;
    if problems.iter().all(|p| p.code != "malformed") {
        match read_records(&plan.ckpt, records) {
            Ok(b) => page_bytes = b,
            Err(e) => problems.push(Problem {
                code: "image",
                message: e.to_string(),
            }),
        }
    }
    Ok(CheckReport {
        problems,
        page_bytes,
        requirements,
    })
}

/// Read the records after the metadata with every check stage makes of them (file
/// contents for every kept file, page records inside areas that take pages, none twice,
/// checksums), without keeping anything. Returns the bytes of data read.
fn read_records(
    ckpt: &crate::model::Checkpoint,
    records: &mut dyn source::RecordSource,
) -> Result<u64> {
    let mut pages = crate::kinds::mem::pages::PageStream::new(records);
    let files = pages.read_file_data(false)?;
    crate::kinds::fd::file::check_file_data(&ckpt.processes, &files)?;
    let b = ckpt
        .processes
        .iter()
        .filter(|p| !p.is_zombie())
        .try_fold(0, |acc, p| pages.load(p, None).map(|b| acc + b))?;
    pages.finish()?;
    Ok(b + files.bytes)
}

/// What restore refuses before its point of no return that depends only on the image
/// and this host: its plan ([`prepare`]) and every check stage makes of the records, as
/// one error (for tests and the fuzz target: an image `check` accepts must pass).
pub fn validate<R: Read>(input: R, view: &HostView) -> Result<u64> {
    let mut p = prepare(input, view)?;
    read_records(&p.plan.ckpt, &mut source::Direct::new(&mut p.reader))
}

/// Every problem plan finds in a decoded image on this host, the same list `check`
/// reports before it reads the page data (an empty list: nothing stands in the way).
pub fn problems(ckpt: crate::model::Checkpoint, view: &HostView) -> Vec<Problem> {
    plan::plan(ckpt, view).problems
}

/// Every kernel facility restore uses for some images, probed on this host (a probe
/// creates nothing lasting): its name (as in `check --json`), what it is, and `Err(why)`
/// when this kernel lacks it.
pub fn host_facilities() -> Vec<(&'static str, &'static str, std::result::Result<(), String>)> {
    kernel::probe_all()
        .into_iter()
        .map(|(f, r)| (f.name(), f.what(), r))
        .collect()
}

/// Remove the network lock of the image's TCP connections (see `sys::netlock`); returns
/// how many connections the image has.
pub fn unlock<R: Read>(input: R) -> Result<usize> {
    let mut reader = ImageReader::new(input)?;
    let ckpt = plan::read_checkpoint(&mut reader)?;
    let conns = crate::kinds::ns::locked_connections(&ckpt);
    sys::netlock::unlock(&conns);
    // The lock a dump left outside the tree's namespace, in ours (`unlock` runs there).
    if let Some(hl) = &ckpt.host_lock {
        sys::netlock::host_unlock(None, &hl.table)?;
    }
    Ok(conns.len())
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    pub pid: i32,
    pub page_bytes: u64,
    pub total: Duration,
    /// How long making the tree's processes took (the root's stub to the last fork;
    /// their memory, for those whose children share pages copy-on-write, included).
    #[serde(default)]
    pub forking: Duration,
}

/// The figures of the last restore this process ran to its end (`Prepared::run`; not
/// those of a restore run in a child, as with `launch(true)` in a new PID namespace):
/// for front ends whose launch returns only the PIDs (`criu`'s stats-restore).
static LAST_STATS: std::sync::Mutex<Option<RestoreStats>> = std::sync::Mutex::new(None);

/// The server of the last `restore --lazy`, copying the rest of the memory.
static LAZY_SERVER: std::sync::Mutex<Option<lazy::Server>> = std::sync::Mutex::new(None);

pub use lazy::{LazyMode, LazyStats};

/// After a `restore --lazy`: wait until every page is in and nothing of the
/// userfaultfds is left in the tree (`None`: there was no lazy restore). ckpt must not
/// exit before: its end would kill the tree (see `restore::lazy`).
pub fn wait_lazy() -> Option<Result<LazyStats>> {
    let s = LAZY_SERVER.lock().ok().and_then(|mut g| g.take())?;
    Some(s.join())
}

/// A `restore --lazy` is still copying memory.
pub fn lazy_pending() -> bool {
    LAZY_SERVER.lock().is_ok_and(|g| g.is_some())
}

/// See [`LAST_STATS`].
pub fn last_stats() -> Option<RestoreStats> {
    LAST_STATS.lock().ok().and_then(|g| g.clone())
}

/// Restore the image read from `input`. Returns once the process runs (it is a child of
/// this process).
pub fn restore<R: Read + Send>(input: R, view: &HostView) -> Result<RestoreStats> {
    prepare(input, view)?.run(stage::RootStub::Spawn)
}

/// An image whose metadata is read and planned, with no problem found: what is left is
/// to build the tree and let it run ([`Prepared::launch`]).
pub struct Prepared<R: Read> {
    reader: ImageReader<R>,
    plan: plan::Plan,
    t0: Instant,
    reading_thread: bool,
    /// `--new-tty`: what to do with the terminal, and the new pty's slave side (ours is
    /// closed once the tree runs).
    tty: Option<(plan::TtyPlan, std::os::fd::OwnedFd)>,
    /// The front end's hook ([`Prepared::with_hook`]).
    hook: Option<RestoreHook>,
    /// The init of the tree's new PID namespace, made with its mount namespace (see
    /// `kinds::mnt::enter_new`).
    pidns_init: Option<crate::kinds::mnt::PidnsInit>,
    /// The tree's namespaces were entered with its mount namespace (see
    /// `kinds::mnt::enter_new`): the cgroups made for its cgroup namespace, removed
    /// again unless the tree runs.
    entered: Option<crate::kinds::cgroup::MadeCgroups>,
    /// The tree's PID namespace, which its user namespace owns, with no process yet:
    /// its init is made there (`sys::process::spawn_pidns_init_stub`).
    pid_ns: Option<std::os::fd::OwnedFd>,
    /// The cgroups made for the cgroup mounts of that mount namespace: removed again
    /// unless the tree runs.
    mount_cgroups: crate::kinds::cgroup::MadeCgroups,
    /// The tree's terminal, of a devpts instance of its own, made again there with its
    /// mount namespace: its slave side is the tree's new terminal
    /// ([`Prepared::with_new_tty`], which this needs).
    console: Option<crate::kinds::fd::tty::ConsolePty>,
    /// ckpt's /dev/ptmx from before it entered the tree's mount namespace (see
    /// `kinds::mnt::Entered`).
    outer_ptmx: Option<std::os::fd::OwnedFd>,
    /// The records come from here, not the reader ([`Prepared::set_composite`]).
    composite: Option<composite::Composite>,
    /// The PID namespace not the tree's own that it is restored in, made or opened with
    /// its mount namespace (see `kinds::mnt::enter_new`).
    other_pidns: crate::kinds::mnt::OtherPidns,
    /// The mounts of the tree's namespace kept for the namespaces made below the root
    /// in it (`kinds::mnt::release_kept`): dropped with this, and by the stage once the
    /// processes are made.
    _kept_mounts: crate::kinds::mnt::KeptMounts,
}

/// The points of a restore where a front end may act (the `criu` front end's notify
/// scripts), and stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStep {
    /// Every process of the tree is built, stopped, before the point of no return:
    /// `root` is the root's PID here. An error undoes the restore.
    Staged { root: i32 },
}

/// A front end's hook: `Err(why)` stops the restore (nothing is left behind).
pub type RestoreHook =
    std::sync::Arc<dyn Fn(RestoreStep) -> std::result::Result<(), String> + Send + Sync>;

/// Read the image's metadata from `input` and check it against this host.
pub fn prepare<R: Read>(input: R, view: &HostView) -> Result<Prepared<R>> {
    prepare_for(input, view, false)
}

/// [`prepare`] for [`Prepared::launch_as_sibling`] (`sibling`): the init of a PID
/// namespace made with the tree's mount namespace is then made a child of our parent.
pub fn prepare_for<R: Read>(input: R, view: &HostView, sibling: bool) -> Result<Prepared<R>> {
    let t0 = Instant::now();
    let mut reader = ImageReader::new(input)?;
    let ckpt = plan::read_checkpoint(&mut reader)?;
    // ckpt's cgroups and cgroup mounts, before it enters the tree's namespaces: they are
    // made and joined through the host's hierarchies (see `sys::cgroup`).
    sys::cgroup::prime();
    // (and its network namespace: a lock the dump left outside the tree's is there)
    if ckpt.host_lock.is_some() {
        sys::ns::first_net()?;
    }
    // (and the tree's network namespace, when it joins one made outside it: a pod's,
    // with the dump's lock in it, which the restore replaces and removes from there)
    let tree_net = crate::kinds::ns::joined_net(&ckpt, &view.join_ns)?;
    // A mount namespace of the tree's own is built before plan opens the files in it;
    // ckpt's main thread stays in it (see `kinds::mnt`).
    let mut mount_cgroups = crate::kinds::cgroup::MadeCgroups::default();
    let entered = crate::kinds::mnt::enter_new(
        &ckpt,
        view.new_pid_namespace,
        true,
        sibling,
        (&view.join_ns, &view.inherit),
        view.cgroup_root.as_deref(),
        &mut mount_cgroups,
    )?;
    let mut plan = plan::plan(ckpt, view);
    if !plan.problems.is_empty() {
        return Err(RestoreError::Problems(plan.problems));
    }
    plan.tree_net = tree_net;
    crate::error::pause_after_plan();
    // The namespaces entered with the mount namespace: the stubs join its user
    // namespace (see `kinds::userns`).
    let (entered_ns, pid_ns) = match entered.namespaces {
        Some((made, userns)) => {
            let (user, pid) = userns.map_or((None, None), |u| (Some(u.user), u.pid));
            plan.userns = user;
            (Some(made), pid)
        }
        None => (None, None),
    };
    Ok(Prepared {
        reader,
        plan,
        t0,
        reading_thread: true,
        tty: None,
        hook: None,
        pidns_init: entered.init,
        entered: entered_ns,
        pid_ns,
        mount_cgroups,
        console: entered.console,
        outer_ptmx: entered.outer_ptmx,
        composite: None,
        other_pidns: entered.other_pidns,
        _kept_mounts: crate::kinds::mnt::KeptMounts,
    })
}

/// An ID that no process or thread of the image has (for a helper that must live in
/// the tree's new PID namespace while it is built).
pub(crate) fn spare_pid_of(ckpt: &crate::model::Checkpoint) -> i32 {
    ckpt.processes
        .iter()
        .flat_map(|p| std::iter::once(p.pid).chain(p.threads.iter().map(|t| t.tid)))
        .max()
        .unwrap_or(1)
        .saturating_add(1)
}

/// Set in the environment of a ckpt restore that executed itself again to take the
/// image's address randomization ([`Prepared::take_randomization`]).
pub(crate) const RANDOMIZATION_MARK: &str = "CKPT_RESTORE_REEXECUTED";

impl<R: Read> Prepared<R> {
    /// Call `hook` at each [`RestoreStep`].
    pub fn with_hook(mut self, hook: RestoreHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The restored processes inherit ckpt's `PF_RANDOMIZE` (only an exec sets it): when
    /// the image's processes had the other (run with or without ADDR_NO_RANDOMIZE, plan
    /// checked that they all had the same), execute ckpt again under the personality that
    /// gives it theirs, to restore the image from the start (the image must then be a
    /// file: `from_file`). Returns when nothing is to be done.
    pub fn take_randomization(&self, from_file: bool) -> Result<()> {
        let Some(want) = self.plan.ckpt.processes.iter().find_map(|p| p.randomized) else {
            return Ok(());
        };
        if sys::process::own_randomized()? == want {
            return Ok(());
        }
        let what = if want { "with" } else { "without" };
        let setarch = if want {
            "without `setarch -R`"
        } else {
            "under `setarch -R`"
        };
        // The PID namespace made with the mount namespace would not survive the
        // execution (its init is our child, its proc mounts its).
        if self.pidns_init.is_some()
            || self.entered.is_some()
            || self.other_pidns.proc_stacked
            || self.other_pidns.reaper.is_some()
        {
            return Err(RestoreError::Problems(vec![Problem {
                code: "randomization",
                message: format!(
                    "the image's processes ran {what} address randomization, and ckpt \
                     restore runs {}; with mount and PID namespaces of the tree's own it \
                     cannot execute itself again to match: run it {setarch}",
                    if want { "without" } else { "with" },
                ),
            }]));
        }
        if !from_file || std::env::var_os(RANDOMIZATION_MARK).is_some() {
            return Err(RestoreError::Problems(vec![Problem {
                code: "randomization",
                message: format!(
                    "the image's processes ran {what} address randomization, and ckpt \
                     restore runs {}: restore from an image file (ckpt then executes \
                     itself again to match), or run it {}",
                    if want { "without" } else { "with" },
                    if want {
                        "without `setarch -R`"
                    } else {
                        "under `setarch -R`"
                    }
                ),
            }]));
        }
        Err(sys::process::reexec_randomized(want, RANDOMIZATION_MARK).into())
    }
}

impl<R: Read + Send> Prepared<R> {
    /// The tree had a PID namespace of its own (its root must become PID 1 of a new one).
    pub fn own_pid_namespace(&self) -> bool {
        self.plan.ckpt.own_pid_namespace
    }

    /// An ID that no process or thread of the image has (for a helper that must live in
    /// the tree's new PID namespace while it is built).
    pub(crate) fn spare_pid(&self) -> i32 {
        spare_pid_of(&self.plan.ckpt)
    }

    /// `restore --lazy`: the tree runs before its private anonymous memory is copied,
    /// which ckpt serves from `image` (the image file, opened again or a duplicate of
    /// the one being read) on first touch and, with `LazyMode::Fill`, copies in the
    /// background; see `restore::lazy`. With `--new-pidns` (`launch(true)`) ckpt serves
    /// it from outside the new namespace. Refused for a tree that had a PID namespace
    /// of its own (or ran in one without its init): there the builder is a separate
    /// process inside the namespace that exits. `LazyMode::Touch` needs `--new-pidns`
    /// ([`Prepared::launch`] refuses it otherwise).
    pub fn set_lazy(&mut self, image: std::fs::File, mode: LazyMode) -> Result<()> {
        if self.pidns_init.is_some()
            || self.other_pidns.reaper.is_some()
            || self.own_pid_namespace()
            || self.plan.ckpt.pid_namespace_init_outside
        {
            return Err(RestoreError::Reported(
                "--lazy: a tree with a PID namespace of its own is not restored lazily \
                 (the restore runs inside that namespace, from a helper that exits)"
                    .into(),
            ));
        }
        let img = lazy::LazyImage::open(image)?;
        self.plan.lazy = Some(std::sync::Arc::new(lazy::Lazy::new(img, mode)));
        Ok(())
    }

    /// The records come from `c` (an incremental image's chain; `ckpt receive`: the
    /// last image over the full image of the rounds before it), the metadata read by
    /// [`prepare`] being `c.meta()`'s; with `lazy`, as [`Prepared::set_lazy`]
    /// (`LazyMode::Fill`), the missing pages served from `c`.
    pub fn set_composite(&mut self, c: composite::Composite, lazy: bool) -> Result<()> {
        if lazy {
            self.set_composite_lazy(c, LazyMode::Fill)
        } else {
            self.composite = Some(c);
            Ok(())
        }
    }

    /// [`Prepared::set_composite`] restored lazily in `mode` (see
    /// [`Prepared::set_lazy`]): the pages are served from the chain's images.
    pub fn set_composite_lazy(&mut self, c: composite::Composite, mode: LazyMode) -> Result<()> {
        if self.pidns_init.is_some()
            || self.other_pidns.reaper.is_some()
            || self.own_pid_namespace()
            || self.plan.ckpt.pid_namespace_init_outside
        {
            return Err(RestoreError::Reported(
                "--lazy: a tree with a PID namespace of its own is not restored lazily \
                 (the restore runs inside that namespace, from a helper that exits)"
                    .into(),
            ));
        }
        let file = c.top_file()?;
        let img = lazy::LazyImage::composite(c, file);
        self.plan.lazy = Some(std::sync::Arc::new(lazy::Lazy::new(img, mode)));
        Ok(())
    }

    /// Read the image on the building thread only. For a restore that runs inside the
    /// tree's new PID namespace: a second thread of ckpt would take an ID there that the
    /// tree may need.
    pub(crate) fn without_reading_thread(mut self) -> Self {
        self.reading_thread = false;
        self
    }

    /// `restore --new-tty`: check that the image's terminal can be replaced by a new
    /// pty (the image's processes used one terminal, of the root's session), and create
    /// it with the image's terminal settings. Returns its master side, for
    /// [`Launched::relay_tty`]; the tree gets the slave side when it is built.
    pub fn with_new_tty(&mut self) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let tp = plan::tty_plan(&self.plan.ckpt).map_err(RestoreError::Problems)?;
        fault_point("create a new terminal")?;
        // A container's terminal is made in its own devpts instance (with its mount
        // namespace); any other in ours (the tree's, once ckpt is in its namespace).
        // (One from outside the tree's mount namespace in ckpt's, where it was opened.)
        let (master, slave) = match (self.console.take(), &self.outer_ptmx) {
            (Some(c), _) => (c.master, c.slave),
            (None, Some(ptmx)) => sys::tty::open_pty_through(ptmx.as_fd())?,
            (None, None) => sys::tty::open_pty()?,
        };
        if let Some(s) = &tp.settings {
            sys::tty::apply(slave.as_fd(), &sys::tty::Settings::from(s))?;
        }
        self.tty = Some((tp, slave));
        Ok(master)
    }

    /// A container's terminal (of its own devpts instance) can only come back as a new
    /// pty there: refused without [`Prepared::with_new_tty`], before anything of the
    /// tree is made.
    pub(crate) fn check_console(&self) -> Result<()> {
        match (&self.console, &self.tty) {
            (Some(c), None) => Err(RestoreError::Reported(format!(
                "the tree's terminal /dev/pts/{} is a pseudo-terminal of a devpts instance of \
                 its own (a container's console, its master outside the tree): restore it \
                 onto a new terminal (--new-tty; as criu, orphan_pts_master with a console \
                 socket)",
                c.index
            ))),
            _ => Ok(()),
        }
    }

    /// Build the tree and let it run. Returns once it runs (its root is our child, or
    /// with `RootStub::Seize` the process we were given).
    pub(crate) fn run(self, root: stage::RootStub) -> Result<RestoreStats> {
        let Prepared {
            mut reader,
            plan,
            t0,
            reading_thread,
            tty,
            hook,
            pidns_init: _,
            entered: _,
            pid_ns: _,
            mut mount_cgroups,
            console: _,
            outer_ptmx: _,
            composite,
            other_pidns: _,
            _kept_mounts: _,
        } = self;
        let tty_ref = tty.as_ref().map(|(tp, slave)| {
            use std::os::fd::AsRawFd;
            (tp, slave.as_raw_fd())
        });
        // SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGPIPE wait (see `sys::deferred`): one
        // that arrives before the point of no return ends the restore at its next step,
        // undone; after it, it acts once the restore is complete.
        let deferred = sys::deferred::Deferred::install();
        // While the tree is being built, orphans of a failed stage must come to us to be
        // reaped (PID 1 may not reap them, and their PIDs would stay taken).
        sys::process::set_child_subreaper(true)?;
        // The image is read and checked on a second thread while pages are copied into
        // the new processes.
        let build = |records: &mut dyn source::RecordSource, root| {
            crate::error::time_mark("run: root stub forked");
            stage::stage(&plan, records, root, tty_ref).and_then(|staged| {
                crate::error::time_mark("run: staged");
                if let (Some(h), Some((root, _))) = (&hook, staged.stub.procs.first()) {
                    h(RestoreStep::Staged { root: *root }).map_err(RestoreError::Reported)?;
                }
                let (bytes, forking) = (staged.bytes, staged.forking);
                if let Some(l) = &plan.lazy {
                    // Before the point of no return: from it on, a ckpt that dies
                    // before every page is in takes the tree with it.
                    let pids: Vec<i32> = staged.stub.procs.iter().map(|(p, _)| *p).collect();
                    l.watch(&pids)?;
                }
                crate::error::time_mark("run: watcher started");
                let r = stage::commit(staged, &plan);
                crate::error::time_mark("run: committed");
                r.map(|(pid, lock)| (pid, (bytes, forking), lock))
            })
        };
        let mut server = None;
        let res = if let Some(l) = &plan.lazy {
            // The server runs from the start of stage (a fault there is served too);
            // page records come from the index, without their pages. (In the builder of
            // a tree in a new PID namespace, the server is ckpt's outside it: see
            // `lazy::Outside`.)
            let res = root.spawn_now(&plan).and_then(|root| {
                if !l.forwards() {
                    server = Some(lazy::Server::start(l.clone())?);
                }
                build(&mut lazy::LazySource::new(l.image()), root)
            });
            // Everything is sent: the end of the stream for ckpt outside.
            l.close_forward();
            res
        } else if let (Some(c), false) = (&composite, reading_thread) {
            root.spawn_now(&plan)
                .and_then(|root| build(&mut composite::CompositeSource::new(c, false), root))
        } else if reading_thread {
            // The root's stub is forked before the reading thread starts.
            root.spawn_now(&plan).and_then(|root| {
                std::thread::scope(|scope| {
                    // Dropped at the end: the reading thread stops and is joined.
                    let mut records = match &composite {
                        Some(c) => {
                            source::prefetch(scope, composite::CompositeSource::new(c, false))
                        }
                        None => source::prefetch(scope, source::Direct::new(&mut reader)),
                    };
                    build(&mut records, root)
                })
            })
        } else {
            build(&mut source::Direct::new(&mut reader), root)
        };
        let _ = sys::process::set_child_subreaper(false);
        // The tree holds the new terminal now: our slave side goes, so that the master
        // reports the end once the tree's descriptors are closed.
        drop(tty);
        let (pid, (bytes, forking), lock) = match (res, sys::deferred::pending()) {
            (Err(_), Some(sig)) => return Err(RestoreError::Interrupted(sig)),
            (r, _) => r?,
        };
        // The tree runs: the cgroups its mounts bind stay.
        mount_cgroups.keep = true;
        if let Some(s) = server {
            s.committed();
            if let Ok(mut g) = LAZY_SERVER.lock() {
                *g = Some(s);
            }
        }
        // The connections are back: let the peers' packets through again. First where
        // the dump left a lock outside the tree's namespace, in ckpt's (the restored
        // connections are out of repair mode, our own lock in the tree's namespace
        // holds still)...
        if let Some(hl) = &plan.ckpt.host_lock {
            let removed =
                sys::ns::first_net().and_then(|ns| sys::netlock::host_unlock(Some(ns), &hl.table));
            if let Err(e) = removed {
                eprintln!(
                    "ckpt: warning: the lock of the TCP connections in ckpt's network \
                     namespace (tables {}) stays: {e}; `ckpt unlock IMAGE` removes it",
                    hl.table
                );
            }
        }
        sys::deferred::die_point("host lock removed");
        // ...then in it.
        match lock {
            Some(l) => l.release(),
            None => {
                let conns = crate::kinds::ns::locked_connections(&plan.ckpt);
                match &plan.tree_net {
                    Some(n) => n.unlock(&conns),
                    None => sys::netlock::unlock(&conns),
                }
            }
        }
        sys::deferred::die_point("unlocked");
        drop(deferred);
        if let Some(sig) = sys::deferred::pending() {
            // The tree runs: now the signal does what it was sent for.
            let _ = sys::process::kill(std::process::id() as i32, sig);
        }
        let stats = RestoreStats {
            pid,
            page_bytes: bytes,
            total: t0.elapsed(),
            forking,
        };
        if let Ok(mut g) = LAST_STATS.lock() {
            *g = Some(stats.clone());
        }
        Ok(stats)
    }
}

impl Launched {
    /// `restore --new-tty`: copy our standard input to the new terminal (`master`, from
    /// [`Prepared::with_new_tty`]) and its output to our standard output until the root
    /// exits (switching our own terminal, if standard input is one, to raw mode
    /// meanwhile). Returns the root's wait status.
    pub fn relay_tty(
        &self,
        master: std::os::fd::OwnedFd,
    ) -> std::result::Result<i32, crate::error::SysError> {
        sys::tty::relay(master, self.root)
    }
}
