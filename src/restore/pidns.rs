//! Where the restored tree is started: as our child in our PID namespace, as PID 1 of a
//! new PID namespace (a tree that had one of its own), or below a child of ours that
//! becomes the init of a new PID namespace (`--new-pidns`).
//!
//! The namespace cases fork helpers that run part of the restore on their own and
//! report through a pipe ("ok", or the error's text) before they exit; the caller gets
//! a [`Launched`] tree either way and waits for it the same way.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use super::stage::RootStub;
use super::{Prepared, RestoreError, Result};
use crate::sys;

/// A restored tree that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    /// The root's PID in our PID namespace.
    pub root: i32,
    /// Our child to wait for: the root, or the init of the tree's new PID namespace,
    /// which exits with the root's status.
    pub child: i32,
}

impl Launched {
    /// Wait for the tree's end: the exit status of [`Launched::child`] (as `wait4`
    /// reports it).
    pub fn wait(&self) -> Result<i32> {
        Ok(sys::process::wait_exit(self.child)?)
    }
}

/// The exit code a shell would report for a wait status.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

impl<R: Read + Send> Prepared<R> {
    /// Build the tree and let it run, in the PID namespace it needs: a new one when it
    /// had its own at dump (its root becomes PID 1 again) or when `new_pidns` asks for
    /// one (a child of ours becomes its init), else ours, with the root as our child.
    pub fn launch(mut self, new_pidns: bool) -> Result<Launched> {
        if !new_pidns
            && self
                .plan
                .lazy
                .as_ref()
                .is_some_and(|l| l.mode() == super::LazyMode::Touch)
        {
            return Err(RestoreError::Reported(
                "--lazy=touch needs --new-pidns: ckpt serves the copy until its PID \
                 namespace's init ends, which is how it knows the whole copy is gone"
                    .into(),
            ));
        }
        self.check_console()?;
        // The cgroups made for the tree's cgroup mounts stay if it runs (taken here: a
        // helper forked below must not remove them when it ends).
        let mut mount_cgroups = std::mem::take(&mut self.mount_cgroups);
        // (With a PID namespace of the tree's own, the builder places the processes.)
        self.own_pidns_cgroups(&mut mount_cgroups)?;
        // The namespaces made outside the tree it joins (--join-ns) and those it had of
        // its own (UTS, IPC, time, network), for our thread before any process of the
        // tree exists: every one started below is in them.
        // (Made already with a PID namespace init made with the mount namespace.)
        let mut made = match self.entered.take() {
            Some(made) => made,
            None => {
                let (made, userns) = crate::kinds::ns::enter_new(
                    &self.plan.ckpt,
                    &self.plan.joins,
                    self.plan.cgroup_root.as_deref(),
                    false,
                )?;
                // The stubs join the tree's user namespace (see `kinds::userns`).
                if let Some(u) = userns {
                    self.plan.userns = Some(u.user);
                    self.pid_ns = u.pid;
                }
                made
            }
        };
        if self.pidns_init.as_ref().is_some_and(|i| i.is_sibling()) {
            return Err(RestoreError::Reported(
                "the PID namespace's init was made as a sibling: launch it with \
                 launch_as_sibling"
                    .into(),
            ));
        }
        let external = self.external_pidns();
        let launched = if let Err(e) = external {
            Err(e)
        } else if let Ok(Some(ns)) = external {
            launch_in_external_pidns(self, ns, false)
        } else if self.own_pid_namespace() {
            launch_own_pidns(self, false)
        } else if self.plan.ckpt.pid_namespace_init_outside || self.other_pidns.reaper.is_some() {
            launch_below_reaper(self)
        } else if new_pidns {
            launch_in_new_pidns(self)
        } else {
            self.run(RootStub::Spawn).map(|st| Launched {
                root: st.pid,
                child: st.pid,
            })
        };
        // The cgroups made for a cgroup namespace of the tree's stay with it.
        made.keep = launched.is_ok();
        mount_cgroups.keep = launched.is_ok();
        launched
    }
}

impl<R: Read + Send> Prepared<R> {
    /// Build the tree and let it run with its root as a child of OUR parent (`criu`'s
    /// `rst_sibling`: the caller of ckpt gets the restored root as its child, and reaps
    /// it); a tree that had a PID namespace of its own gets a new one whose init (its
    /// root) is our parent's child. The returned [`Launched::child`] is not ours to
    /// wait for.
    pub fn launch_as_sibling(mut self) -> Result<Launched> {
        self.check_console()?;
        let mut mount_cgroups = std::mem::take(&mut self.mount_cgroups);
        // (With a PID namespace of the tree's own, the builder places the processes.)
        self.own_pidns_cgroups(&mut mount_cgroups)?;
        // Made with the tree's mount namespace (`restore::prepare_for`): it must be our
        // parent's child already.
        if self.pidns_init.as_ref().is_some_and(|i| !i.is_sibling()) {
            return Err(RestoreError::Reported(
                "the PID namespace's init was made as ckpt's child: prepare the restore \
                 for a sibling (restore::prepare_for)"
                    .into(),
            ));
        }
        if (self.plan.ckpt.pid_namespace_init_outside
            && self.plan.ckpt.external_pid_namespace.is_none())
            || self.other_pidns.reaper.is_some()
        {
            return Err(RestoreError::Reported(
                "a tree that ran in a PID namespace whose init was outside it is not \
                 restored as a sibling yet (its new namespace's init is ckpt's child)"
                    .into(),
            ));
        }
        // (Entered already, with the mount namespace, when the tree has one of its own
        // with a PID or a user namespace.)
        let mut made = match self.entered.take() {
            Some(made) => made,
            None => {
                let (made, userns) = crate::kinds::ns::enter_new(
                    &self.plan.ckpt,
                    &self.plan.joins,
                    self.plan.cgroup_root.as_deref(),
                    false,
                )?;
                if let Some(u) = userns {
                    self.plan.userns = Some(u.user);
                    self.pid_ns = u.pid;
                }
                made
            }
        };
        let external = self.external_pidns();
        let launched = if let Err(e) = external {
            Err(e)
        } else if let Ok(Some(ns)) = external {
            launch_in_external_pidns(self, ns, true)
        } else if self.own_pid_namespace() {
            launch_own_pidns(self, true)
        } else {
            self.run(RootStub::Sibling).map(|st| Launched {
                root: st.pid,
                child: st.pid,
            })
        };
        made.keep = launched.is_ok();
        mount_cgroups.keep = launched.is_ok();
        launched
    }
}

impl<R: Read + Send> Prepared<R> {
    /// With a PID namespace of the tree's own, its cgroups (their limits first,
    /// `--manage-cgroups`), made here so that the builder's stage sees them as existing
    /// and removed here (after the init's end) on failure.
    fn own_pidns_cgroups(
        &self,
        mount_cgroups: &mut crate::kinds::cgroup::MadeCgroups,
    ) -> Result<()> {
        if self.own_pid_namespace()
            && self.plan.cgroup_mode != crate::kinds::cglimits::CgroupMode::Ignore
        {
            crate::kinds::cglimits::restore(
                &self.plan.ckpt,
                self.plan.cgroup_root.as_deref(),
                self.plan.cgroup_mode,
                self.plan.cgroup_limits,
                mount_cgroups,
            )?;
            crate::kinds::cgroup::make_all(
                &self.plan.ckpt,
                self.plan.cgroup_root.as_deref(),
                mount_cgroups,
            )?;
        }
        Ok(())
    }

    /// The PID namespace made outside the tree that it is restored into, if any: opened
    /// with the tree's mount namespace (before ckpt entered it), or now.
    fn external_pidns(&mut self) -> Result<Option<std::fs::File>> {
        match self.other_pidns.external.take() {
            Some(ns) => Ok(Some(ns)),
            None => crate::kinds::task::extpidns::open_given(
                &self.plan.ckpt,
                &self.plan.joins,
                &self.plan.inherit,
            ),
        }
    }
}

/// The builder's /proc, once it is in the tree's PID namespace: ckpt's proc stacked on
/// the tree's /proc (`stacked`: a mount namespace of the tree's own, see
/// `kinds::mnt::enter_new`) comes off first, in the tree's mount namespace, before the
/// builder's private copy of it gets a proc of its own.
fn builder_proc(stacked: bool) -> Result<()> {
    if stacked {
        crate::kinds::mnt::unstack_proc()?;
    }
    Ok(sys::process::mount_own_proc()?)
}

/// What a child that restores in a new PID namespace reported through its pipe: "ok",
/// or the error (nothing if it died before it could say).
fn child_report(rd: OwnedFd) -> Result<()> {
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    match msg.as_str() {
        "ok" => Ok(()),
        "" => Err(RestoreError::Reported(
            "restore in a new PID namespace failed".into(),
        )),
        _ => Err(RestoreError::Reported(msg)),
    }
}

/// Report the outcome of a restore made in a forked helper to its parent, and end the
/// helper.
fn report_and_exit(wr: OwnedFd, res: Result<()>) -> ! {
    let mut wr = std::fs::File::from(wr);
    match res {
        Ok(()) => {
            let _ = wr.write_all(b"ok");
            std::process::exit(0);
        }
        Err(e) => {
            let _ = write!(wr, "{e}");
            std::process::exit(1);
        }
    }
}

/// The release gate of a tree built by a builder in its PID namespace (see
/// `gate::gate_threads`): ckpt keeps the write end (and a read end, so that writing
/// never fails with EPIPE), the builder gives the read end to the tree's threads, which
/// wait in a read of it once released. [`ReleaseGate::open`] lets them go.
struct ReleaseGate {
    rd: OwnedFd,
    wr: OwnedFd,
    /// How many threads may wait (those of the image's live processes).
    threads: usize,
}

impl ReleaseGate {
    fn new<R: Read + Send>(prepared: &Prepared<R>) -> Result<Self> {
        let (rd, wr) = sys::process::pipe()?;
        let threads = prepared
            .plan
            .ckpt
            .processes
            .iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.threads.len())
            .sum();
        Ok(ReleaseGate { rd, wr, threads })
    }

    /// In the builder: the tree's threads wait on the gate.
    fn use_in<R: Read + Send>(self, prepared: &mut Prepared<R>) -> OwnedFd {
        use std::os::fd::AsRawFd;
        drop(self.wr);
        prepared.plan.release_gate = Some(self.rd.as_raw_fd());
        self.rd
    }

    /// In ckpt, once the builder is reaped: each waiting thread reads its bytes, and
    /// runs on. (Unread bytes, if fewer wait, go with the pipe.) Dropping it unopened
    /// (ckpt dies, say) lets them go too, each leaving its descriptor of the gate open.
    fn open(self) {
        let mut wr = std::fs::File::from(self.wr);
        let bytes = [0u8; super::gate::GATE_BYTES as usize];
        // A pipe holds 64 KiB at least: never more than that many bytes (more threads
        // than that read end of file).
        for _ in 0..self.threads.min(65536 / bytes.len()) {
            if wr.write_all(&bytes).is_err() {
                break;
            }
        }
        drop((wr, self.rd));
    }
}

/// Restore a tree that had a PID namespace of its own: its root becomes PID 1 of a new
/// one. The root is our child (we wait for it as its parent, and report its PID here);
/// the tree is built by a helper we fork into the new namespace (where /proc, ptrace
/// and clone3 speak the tree's own IDs), which seizes the root and exits once the tree
/// runs. If anything fails, killing the root ends the namespace and everything in it.
///
/// `sibling`: the root is our parent's child instead (`launch_as_sibling`); on failure it
/// is killed, and our parent reaps it.
fn launch_own_pidns<R: Read + Send>(mut prepared: Prepared<R>, sibling: bool) -> Result<Launched> {
    // Made with the tree's mount namespace (`kinds::mnt::enter_new`), or now.
    let (init, go, stacked) = match prepared.pidns_init.take().map(|i| i.take()) {
        Some((init, Some(go), stacked)) => (init, go, stacked),
        Some((init, None, _)) => {
            let _ = sys::process::kill(init, libc::SIGKILL);
            return Err(RestoreError::Reported(
                "the PID namespace's init was given away".into(),
            ));
        }
        None => {
            // (In the one the tree's user namespace owns, if any.)
            let ns = prepared.pid_ns.take();
            let (init, go) = sys::process::spawn_pidns_init_stub(sibling, ns.as_ref())?;
            (init, go, false)
        }
    };
    // The builder sees the root as PID 1: the front end's hook is told its PID here.
    if let Some(h) = prepared.hook.take() {
        prepared.hook = Some(std::sync::Arc::new(move |step| match step {
            super::RestoreStep::Staged { .. } => h(super::RestoreStep::Staged { root: init }),
        }));
    }
    let give_up = |e: RestoreError| {
        let _ = sys::process::kill(init, libc::SIGKILL);
        if !sibling {
            let _ = sys::process::wait_exit(init);
        }
        e
    };
    let (rd, wr) = sys::process::pipe().map_err(|e| give_up(e.into()))?;
    let gate = ReleaseGate::new(&prepared).map_err(give_up)?;
    let spare = prepared.spare_pid();
    match sys::process::fork_into_pid_namespace_of(init, spare) {
        Err(e) => Err(give_up(e.into())),
        Ok(None) => {
            // The builder, inside the namespace. It lives only as long as the namespace's
            // init, which exits when every copy of `go` is closed before it got its byte:
            // a copy stays open until our report is written.
            drop(rd);
            let mut prepared = prepared.without_reading_thread();
            let _gate = gate.use_in(&mut prepared);
            let _hold = go.try_clone();
            let res = builder_proc(stacked)
                .and_then(|()| prepared.run(RootStub::Seize { pid: 1, go }).map(|_| ()));
            if res.is_ok() {
                sys::deferred::linger_point("builder released the tree");
            }
            report_and_exit(wr, res)
        }
        Ok(Some(builder)) => {
            drop((wr, go, prepared));
            let report = child_report(rd);
            let _ = sys::process::wait_exit(builder);
            report.map_err(give_up)?;
            // The builder is gone from the namespace: now the tree may run.
            gate.open();
            Ok(Launched {
                root: init,
                child: init,
            })
        }
    }
}

/// Restore a tree that ran in a PID namespace whose init was not part of it: a new PID
/// namespace whose init is a reaper of ours (our child, `sys::process::spawn_pidns_reaper`),
/// and the root as the reaper's child, with its namespace ID; the rest as for a tree
/// with its own namespace (a builder forked into the namespace seizes the root and
/// builds the tree there). The tree stays in our mount namespace (its /proc is ours, as
/// the original's was the one it had). The reaper reaps the namespace's orphans and
/// exits with the root's exit code once nobody is left; until the restore succeeded it
/// waits, and exits (ending the namespace) if we give up or die.
fn launch_below_reaper<R: Read + Send>(mut prepared: Prepared<R>) -> Result<Launched> {
    let root = prepared
        .plan
        .ckpt
        .processes
        .first()
        .map(|p| p.pid)
        .ok_or_else(|| RestoreError::Malformed("the image holds no process".into()))?;
    // Made with the tree's mount namespace (with its root stub's PID here), or now.
    let stacked = std::mem::take(&mut prepared.other_pidns.proc_stacked);
    let (reaper, root_here) = match prepared.other_pidns.reaper.take().and_then(|r| r.take()) {
        Some((r, here)) => (r, Some(here)),
        None => {
            crate::error::fault_point("create the PID namespace's reaper")?;
            (sys::process::spawn_pidns_reaper(root)?, None)
        }
    };
    let init = reaper.pid;
    let give_up = |e: RestoreError| {
        let _ = sys::process::kill(init, libc::SIGKILL);
        let _ = sys::process::wait_exit(init);
        e
    };
    let (rd, wr) = sys::process::pipe().map_err(|e| give_up(e.into()))?;
    let gate = ReleaseGate::new(&prepared).map_err(give_up)?;
    let spare = prepared.spare_pid();
    let sys::process::PidnsReaper { go, hold, .. } = reaper;
    match sys::process::fork_into_pid_namespace_of(init, spare) {
        Err(e) => Err(give_up(e.into())),
        Ok(None) => {
            // The builder, inside the namespace: the reaper is released by ckpt alone.
            drop((rd, hold));
            let mut prepared = prepared.without_reading_thread();
            let _gate = gate.use_in(&mut prepared);
            let res = builder_proc(stacked)
                .and_then(|()| prepared.run(RootStub::Seize { pid: root, go }).map(|_| ()));
            if res.is_ok() {
                sys::deferred::linger_point("builder released the tree");
            }
            report_and_exit(wr, res)
        }
        Ok(Some(builder)) => {
            drop((wr, go, prepared));
            let report = child_report(rd);
            let _ = sys::process::wait_exit(builder);
            report.map_err(give_up)?;
            sys::process::release_reaper(hold).map_err(|e| give_up(e.into()))?;
            // The builder is gone from the namespace: now the tree may run.
            gate.open();
            // (Our /proc may be the tree's now, where the reaper is 1: the root's PID
            // here was taken when it was made, if it was made with the mount namespace.)
            let root = root_here
                .or_else(|| {
                    sys::proc::children(init)
                        .ok()
                        .and_then(|c| c.first().copied())
                })
                .unwrap_or(0);
            Ok(Launched { root, child: init })
        }
    }
}

/// Restore a tree that ran in a PID namespace made outside it, recorded as external, in
/// the namespace `ns` given for it (see `kinds::task::extpidns`): the root's stub is
/// created there with its recorded ID, as our child (or our parent's: `sibling`), and a
/// builder forked into the namespace (with a spare ID, a private mount namespace and a
/// /proc of its own, so that /proc, ptrace and clone3 speak the tree's IDs) seizes it
/// and builds the tree, then exits; the tree waits on the release gate until the
/// builder is reaped. On failure the root is killed (with it, the builder's
/// PTRACE_O_EXITKILL kills the rest); the namespace and its other processes stay as
/// they were.
fn launch_in_external_pidns<R: Read + Send>(
    mut prepared: Prepared<R>,
    ns: std::fs::File,
    sibling: bool,
) -> Result<Launched> {
    let root = prepared
        .plan
        .ckpt
        .processes
        .first()
        .map(|p| p.pid)
        .ok_or_else(|| RestoreError::Malformed("the image holds no process".into()))?;
    crate::error::fault_point("create the root in the external PID namespace")?;
    let (host_root, go) = sys::extpidns::spawn_stub_in(&ns, root, sibling)?;
    let give_up = |e: RestoreError| {
        let _ = sys::process::kill(host_root, libc::SIGKILL);
        if !sibling {
            let _ = sys::process::wait_exit(host_root);
        }
        e
    };
    // The builder sees the root by its ID there: the front end's hook is told ours.
    if let Some(h) = prepared.hook.take() {
        prepared.hook = Some(std::sync::Arc::new(move |step| match step {
            super::RestoreStep::Staged { .. } => h(super::RestoreStep::Staged { root: host_root }),
        }));
    }
    let (rd, wr) = sys::process::pipe().map_err(|e| give_up(e.into()))?;
    let gate = ReleaseGate::new(&prepared).map_err(give_up)?;
    // An ID no process of the image has that is free there (the namespace has other
    // processes, which may have taken the first one tried).
    let stacked = std::mem::take(&mut prepared.other_pidns.proc_stacked);
    match crate::kinds::task::extpidns::fork_into_free(&ns, prepared.spare_pid()) {
        Err(e) => Err(give_up(e.into())),
        Ok(None) => {
            // The builder, inside the namespace.
            drop((rd, ns));
            let mut prepared = prepared.without_reading_thread();
            let _gate = gate.use_in(&mut prepared);
            let res = builder_proc(stacked)
                .and_then(|()| prepared.run(RootStub::Seize { pid: root, go }).map(|_| ()));
            if res.is_ok() {
                sys::deferred::linger_point("builder released the tree");
            }
            report_and_exit(wr, res)
        }
        Ok(Some(builder)) => {
            drop((wr, go, prepared, ns));
            let report = child_report(rd);
            let _ = sys::process::wait_exit(builder);
            report.map_err(give_up)?;
            // The builder is gone from the namespace: now the tree may run.
            gate.open();
            Ok(Launched {
                root: host_root,
                child: host_root,
            })
        }
    }
}

/// `restore --new-pidns`: a child of ours becomes PID 1 of a new PID namespace, restores
/// the tree there and stays as its init, reaping orphans; it exits with the root's
/// status once nobody is left.
///
/// With `--lazy`, ckpt (outside) serves the tree's memory: the builder sends it each
/// process's userfaultfd (see `lazy::Outside`).
fn launch_in_new_pidns<R: Read + Send>(prepared: Prepared<R>) -> Result<Launched> {
    let (rd, wr) = sys::process::pipe()?;
    let lazy = prepared.plan.lazy.clone();
    let sock = match lazy {
        Some(_) => Some(sys::seqpacket::pair()?),
        None => None,
    };
    crate::error::time_mark("new pidns: fork");
    match sys::process::fork_into_new_pid_namespace()? {
        None => {
            crate::error::time_mark("new pidns: builder runs");
            drop(rd);
            if let (Some(l), Some((ours, theirs))) = (&lazy, sock) {
                drop(ours);
                l.forward_to(theirs);
            }
            drop(lazy);
            let res = sys::process::mount_own_proc()
                .map_err(RestoreError::from)
                .and_then(|()| {
                    crate::error::time_mark("new pidns: proc mounted");
                    prepared.without_reading_thread().run(RootStub::Spawn)
                });
            let st = match res {
                Ok(st) => st,
                Err(e) => report_and_exit(wr, Err(e)),
            };
            crate::error::time_mark("new pidns: builder reports");
            {
                let mut wr = std::fs::File::from(wr);
                let _ = wr.write_all(b"ok");
            }
            // The namespace's init: reap everyone, exit with the root's status once
            // nobody is left (the namespace ends with its init).
            let mut code = 0;
            while let Ok(Some((pid, status))) = sys::process::wait_any() {
                if pid == st.pid {
                    code = exit_code(status);
                }
            }
            std::process::exit(code);
        }
        Some(init) => {
            drop(wr);
            drop(prepared);
            let give_up = |e: RestoreError| {
                let _ = sys::process::kill(init, libc::SIGKILL);
                let _ = sys::process::wait_exit(init);
                e
            };
            let outside = match (lazy, sock) {
                (Some(l), Some((ours, theirs))) => {
                    drop(theirs);
                    Some(super::lazy::Outside::start(l, ours, init).map_err(give_up)?)
                }
                _ => None,
            };
            crate::error::time_mark("new pidns: server outside started");
            if let Err(e) = child_report(rd) {
                let _ = sys::process::wait_exit(init);
                return Err(e);
            }
            crate::error::time_mark("new pidns: report read");
            if let Some(o) = outside {
                // The tree runs: a part of it not received would wait for its pages
                // for ever, so the copy goes (its init's end ends the namespace).
                let server = o.committed().map_err(give_up)?;
                if let Ok(mut g) = super::LAZY_SERVER.lock() {
                    *g = Some(server);
                }
                crate::error::time_mark("new pidns: every part received");
            }
            let root = sys::proc::children(init)
                .ok()
                .and_then(|c| c.first().copied())
                .unwrap_or(0);
            Ok(Launched { root, child: init })
        }
    }
}
