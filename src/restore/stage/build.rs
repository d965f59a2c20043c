//! Forking the tree and building each process in its stub: memory, files, attributes,
//! credentials (in the tree's user namespace, if it has one).

use super::*;

/// The memory built while the tree is forked: for the processes whose children inherit
/// pages from them (`kinds::mem::cow`), and, the page data coming in image order, those
/// before them.
pub(super) struct EarlyMemory<'p, 'r, 's> {
    pub(super) pages: &'p mut PageStream<'r>,
    pub(super) sh: &'s mut Shared,
    /// Per process of the image: its memory is built.
    pub(super) built: Vec<bool>,
    pub(super) bytes: u64,
}

/// The tree, parents first: each process is forked from its parent's stub (so it is
/// that parent's child), and takes its session before its own children are forked. A
/// process that inherits pages from its parent is forked once the parent's memory is
/// built (and that of every process before it, in image order); a process forked from
/// a parent that is no longer a clean stub keeps only the helper area and what it
/// inherits (`cow::trim_inherited`).
// (What it forks from and into, each its own: bundling them would only rename them.)
#[allow(clippy::too_many_arguments)]
pub(super) fn fork_tree<'a>(
    ctxs: &mut Vec<Ctx<'a>>,
    stub: &mut Stub,
    stub_addr: u64,
    plan: &'a Plan,
    ptys: &fd::tty::PtyMasters,
    early: &mut EarlyMemory<'_, '_, '_>,
    cgroups: &mut crate::kinds::cgroup::MadeCgroups,
    below: &crate::kinds::userns::Below,
) -> Result<()> {
    let procs = &plan.ckpt.processes;
    // Per process: its memory is no longer the clean stub's.
    let mut dirty = vec![false; procs.len()];
    // Per process: its stub called unshare(CLONE_NEWPID) (`kinds::task::pidns`).
    let mut unshared = vec![false; procs.len()];
    // Per process: its stub made the time namespace for its children.
    let mut time_made = vec![false; procs.len()];
    // Where stubs keep their pidfd of ckpt for nested PID namespaces: above every
    // descriptor of the image and the temporaries of its pipes and socket pairs
    // (`fd::pipe_tmp_base`).
    let pairs =
        (plan.ckpt.pipes.len() + plan.ckpt.socketpairs.len() + plan.ckpt.fifos.len()) as u64;
    let pidfd_at = procs.iter().map(fd::pipe_tmp_base).max().unwrap_or(3) + 2 * pairs + 8;
    for (i, p) in procs.iter().enumerate().skip(1) {
        let parent = procs
            .iter()
            .position(|q| q.pid == p.ppid)
            .ok_or_else(|| RestoreError::Malformed(format!("no parent for process {}", p.pid)))?;
        if cow::inherits(p) {
            // The processes forked so far go into their cgroups first, so that the
            // memory built now is charged there.
            let pids: Vec<i32> = stub.procs.iter().map(|(p, _)| *p).collect();
            if plan.cgroup_mode != crate::kinds::cglimits::CgroupMode::Ignore {
                crate::kinds::cgroup::place(
                    &plan.ckpt,
                    &pids,
                    plan.cgroup_root.as_deref(),
                    cgroups,
                )?;
            }
            for k in 0..=parent {
                if !early.built[k] && !procs[k].is_zombie() {
                    early.bytes += build_memory(&mut ctxs[k], early.pages, early.sh)?;
                    early.built[k] = true;
                    dirty[k] = true;
                }
            }
        }
        tree::group_before_fork(ctxs, &plan.ckpt, i, parent)?;
        tree::prepare_nested_fork(&mut ctxs[parent], p, &mut unshared[parent], pidfd_at)?;
        crate::kinds::ns::make_time_for_children(
            &mut ctxs[parent],
            &plan.ckpt,
            p,
            &mut time_made[parent],
        )?;
        // Sharing its parent's descriptor table or filesystem information, which the
        // parent leaves after the last of siblings that share what it does not.
        let inj = tree::fork_process(&mut ctxs[parent], p, share::fork_flags(procs, i))?;
        stub.procs.push((p.pid, Vec::new()));
        let leave = share::unshare_after(procs, i);
        if leave != 0 {
            ctxs[parent].call(
                "unshare (a descriptor table or filesystem information its children share)",
                nr::UNSHARE,
                [leave, 0, 0, 0, 0, 0],
            )?;
        }
        let mem = RemoteMem::open(p.pid)?;
        let mut cx = Ctx::live(inj, mem, stub_addr, p);
        // Forked from its parent's stub: the same kind of memory map.
        cx.space_end = ctxs[parent].space_end;
        if p.pid_ns != 0 {
            cx.ckpt_pidfd = ctxs[parent].ckpt_pidfd;
        }
        crate::kinds::ns::enter_child_namespaces(
            &mut cx,
            &plan.ckpt,
            &procs[parent],
            below,
            (plan.cgroup_root.as_deref(), &mut *cgroups),
        )?;
        // The objects of an IPC namespace it made, before it or a child attaches one.
        crate::kinds::ipc::create_below_root(&cx, &plan.ckpt, &procs[parent], &mut early.sh.sysv)?;
        // Before its own children are forked (they may share it).
        crate::kinds::ipc::make_undo_list(&mut cx)?;
        if dirty[parent] {
            cow::trim_inherited(&mut cx, stub_addr)?;
            dirty[i] = true;
        }
        if p.sid == p.pid {
            cx.call("setsid", nr::SETSID, [0; 6])?;
            tree::set_session_tty(&mut cx, &plan.ckpt, ptys)?;
        }
        ctxs.push(cx);
    }
    // Processes that called unshare(CLONE_NEWPID) and have not forked since.
    for (i, cx) in ctxs.iter_mut().enumerate() {
        if cx.proc_.pid_ns_for_children.is_some() && !unshared[i] && !cx.proc_.is_zombie() {
            tree::unshare_pid_ns(cx)?;
        }
    }
    Ok(())
}

/// Build one (live) process in its stub, its memory built ([`build_memory`]):
/// descriptors, attributes, threads (their IDs go to `tids`), timers. Returns its
/// threads' injectors.
pub(super) fn build_process(
    cx: &mut Ctx<'_>,
    plan: &Plan,
    sh: &mut Shared,
    tids: &mut Vec<i32>,
    tty: Option<(&crate::restore::plan::TtyPlan, i32)>,
    ptys: &fd::tty::PtyMasters,
    below: &mut crate::kinds::userns::Below,
) -> Result<Vec<Injector>> {
    // In a time namespace a process made in a user namespace of the tree's: joined
    // first, before its descriptors, timers and threads take its clocks.
    crate::kinds::ns::enter_time_made_in_userns(cx, &plan.ckpt, &below.times)?;
    // A shared descriptor table's descriptors are restored once, by its first sharer.
    if share::restores_fds(cx.proc_) {
        fd::restore_fds(
            cx,
            &plan.ckpt,
            &plan.inherit,
            &mut sh.pipe_holders,
            &mut sh.files,
            tty.map(|t| t.1),
            ptys,
        )?;
    }
    // AIO contexts once the memory areas are in place (their rings go between them).
    mem::aio::restore_rings(cx)?;
    // Shared working and root directories once, by their last sharer (the others'
    // steps above use paths from the host's root).
    if share::restores_fs(&plan.ckpt.processes, cx.proc_.pid) {
        let by_path = crate::kinds::ns::mnt_below_root(&plan.ckpt.processes, cx.proc_);
        attrs::set_cwd_root(cx, &sh.files, by_path)?;
    }
    lock::restore_locks(cx)?;
    attrs::restore_attrs(cx)?;
    // AMX tile data is enabled per process on request; ask again if it was.
    const XFEATURE_XTILEDATA: u64 = 18;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    if plan.request_amx {
        cx.call(
            "arch_prctl(ARCH_REQ_XCOMP_PERM)",
            nr::ARCH_PRCTL,
            [ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0, 0, 0, 0],
        )?;
    }
    // In a user namespace of the tree's (its own, or one a process below its root
    // made), a process's threads are made inside it (their IDs in the tree's PID
    // namespace, which it owns, or set from outside) and a time namespace it made for
    // its children there is made by it there (owned by it): the process joins it
    // first, while it is single-threaded (see `kinds::userns`).
    let p = cx.proc_;
    let mut by_last_pid = false;
    if joins_user_early(&plan.ckpt, p) {
        let fd = userns_fd(plan, below, p)?;
        let own = creds::Own::detect()?;
        crate::kinds::userns::enter(cx, &own, &p.creds.groups, fd)?;
        // (In ckpt's PID namespace, which the user namespace does not own, its
        // threads' IDs are set from outside.)
        by_last_pid = !plan.ckpt.own_pid_namespace;
        crate::kinds::ns::make_time_in_userns(cx, &plan.ckpt, &mut below.times)?;
    }
    // Threads after the memory they run on, before credentials change.
    let threads = threads::create_threads(cx, tids, by_last_pid)?;
    // Pidfds of its own threads, which exist now.
    if share::restores_fds(cx.proc_) {
        fd::pidfd::open_after_threads(cx, &plan.ckpt)?;
    }
    // Pending signals after the threads exist (a signal pending on one thread is queued
    // to that thread), under the dispositions restore_attrs gave.
    signals::queue_pending(cx)?;
    // Timers may signal a particular thread: after the threads exist.
    timers::restore_timers(cx)?;
    let below = crate::kinds::ns::ipc_below_root(&plan.ckpt.processes, cx.proc_);
    crate::kinds::ipc::restore_undo(cx, below)?;
    Ok(threads)
}

/// Build the memory of one (live) process in its stub: mm fields, areas, pages,
/// protections and advice. Returns the page bytes written.
pub(super) fn build_memory(
    cx: &mut Ctx<'_>,
    pages: &mut PageStream<'_>,
    sh: &mut Shared,
) -> Result<u64> {
    let p = cx.proc_;
    attrs::set_thp_disable(cx)?;
    // mm fields and exe link before the image's memory exists: the kernel refuses
    // to replace the exe link while the old executable is mapped, and the image may
    // map the very file ckpt runs from.
    attrs::set_mm(cx, &sh.files)?;
    mem::map_memory(cx, &mut sh.sysv, &mut sh.shm, &sh.shm_sizes, &mut sh.files)?;
    fault_point("fill memory")?;
    let lazy = sh.lazy.clone();
    let sink = match &lazy {
        Some(l) => PageSink::new_lazy(cx, l)?,
        None => PageSink::new(cx)?,
    };
    let bytes = pages.load(p, Some(&sink))?;
    sink.finish()?;
    mem::finish_memory(cx)?;
    Ok(bytes)
}

/// Once every process has its descriptors: what links processes to each other (unix
/// datagram peers and queues, UDP queues), System V segments removed at dump, and the
/// pipe holders' temporaries. Returns ckpt's copies of the TCP connections only in
/// flight (`inflight::close_in_flight`), for commit.
pub(super) fn link_processes(
    ctxs: &mut [Ctx<'_>],
    ckpt: &crate::model::Checkpoint,
    procs: &[Process],
    pairs: &[crate::model::SocketPairState],
    pipe_holders: PipeHolders,
    dirs: &unix::HeldDirs,
) -> Result<Vec<(i32, i32, std::os::fd::OwnedFd)>> {
    unix::fill_deferred_pairs(ctxs, ckpt, pairs, &pipe_holders)?;
    unix::unix_dgram_links(ctxs, ckpt)?;
    unix::connect_pending(ctxs, ckpt, dirs)?;
    // Items of epoll instances on files another process holds (an instance only in
    // flight, its items added by its sender), while those only in flight are still held.
    fd::epoll::register_held_elsewhere(ctxs)?;
    // Every message is queued again: what only they held is theirs alone again.
    let conns = fd::inflight::close_in_flight(ctxs)?;
    udp::requeue_udp(procs)?;
    let mut removed = std::collections::BTreeSet::new();
    for cx in ctxs.iter_mut().filter(|c| !c.proc_.is_zombie()) {
        shmem::remove_destroyed_sysv(cx, &mut removed)?;
    }
    // Every process has its pipe ends now: the holders drop their temporaries.
    fd::close_holders(ctxs, pipe_holders)?;
    Ok(conns)
}

/// The user namespace of the tree's own that the stubs join: ckpt's descriptor of it
/// and its recorded state.
pub(super) fn tree_userns(plan: &Plan) -> Option<(i32, &crate::model::UserNsState)> {
    use std::os::fd::AsRawFd;
    match (&plan.userns, crate::kinds::userns::owned(&plan.ckpt)) {
        (Some(fd), Some(ns)) => ns.user.as_ref().map(|u| (fd.as_raw_fd(), u)),
        _ => None,
    }
}

/// Whether process `p`, in a user namespace of the tree's, joins it in
/// `build_process`, before its threads are made: it has threads, or made a time
/// namespace for its children there (`kinds::ns::time_made_in_userns`). The others
/// join it last ([`enter_tree_userns`]).
fn joins_user_early(ckpt: &crate::model::Checkpoint, p: &Process) -> bool {
    crate::kinds::userns::of_process(ckpt, p).is_some()
        && (p.threads.len() > 1 || crate::kinds::ns::time_made_in_userns(ckpt, p).is_some())
}

/// ckpt's descriptor of the user namespace of the tree's that process `p` is in (its
/// own, or one a process below its root made: `below`, made before the stubs).
fn userns_fd(plan: &Plan, below: &crate::kinds::userns::Below, p: &Process) -> Result<i32> {
    use std::os::fd::AsRawFd;
    let root_user = crate::kinds::userns::owned(&plan.ckpt).map(|n| n.inode);
    let ns = crate::kinds::userns::of_process(&plan.ckpt, p);
    let fd = match ns {
        Some(n) if Some(n.inode) == root_user => tree_userns(plan).map(|(fd, _)| fd),
        Some(n) => below.users.get(&n.inode).map(|f| f.as_raw_fd()),
        None => None,
    };
    fd.ok_or_else(|| {
        RestoreError::Stage(format!(
            "the user namespace user:[{}] of process {} was not made",
            ns.map_or(0, |n| n.inode),
            p.pid
        ))
    })
}

/// In a user namespace of the tree's own, each process joins it (but those that
/// joined it already, before their threads were made: [`joins_user_early`]) before its
/// seccomp filters and credentials; a process in one a process below the root made
/// joins that one (`below`, made before the stubs).
pub(super) fn enter_tree_userns(
    ctxs: &mut [Ctx<'_>],
    staged: &[Option<Vec<Injector>>],
    plan: &Plan,
    ckpt_own: &creds::Own,
    below: &crate::kinds::userns::Below,
) -> Result<()> {
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter()) {
        if threads.is_none()
            || crate::kinds::userns::of_process(&plan.ckpt, cx.proc_).is_none()
            || joins_user_early(&plan.ckpt, cx.proc_)
        {
            continue;
        }
        let fd = userns_fd(plan, below, cx.proc_)?;
        let groups = cx.proc_.creds.groups.clone();
        crate::kinds::userns::enter(cx, ckpt_own, &groups, fd)?;
    }
    Ok(())
}

/// Credentials last: creating processes, PIDs and mm fields needs ckpt's privileges.
/// Every thread of a process gets them (each has its own), the main thread last. In a
/// user namespace of the tree's own, each process (which joined it already,
/// [`enter_tree_userns`]) takes its IDs as the namespace's maps show them
/// (`kinds::userns`). `ckpt_own`: ckpt's own credentials.
pub(super) fn restore_all_creds(
    ctxs: &mut [Ctx<'_>],
    staged: &mut [Option<Vec<Injector>>],
    plan: &Plan,
    ckpt_own: &creds::Own,
) -> Result<()> {
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter_mut()) {
        let Some(threads) = threads else {
            continue;
        };
        let mut changed = false;
        let p = cx.proc_;
        let userns = crate::kinds::userns::state_of(&plan.ckpt, p);
        let (me, want) = match userns {
            Some(u) => {
                // (It joined the namespace already: `enter_tree_userns`.)
                let (me, want) = crate::kinds::userns::inside(ckpt_own, &p.creds, u)?;
                (me, std::borrow::Cow::Owned(want))
            }
            None => (ckpt_own.clone(), std::borrow::Cow::Borrowed(&p.creds)),
        };
        let me = &me;
        for (t, image) in threads.iter_mut().zip(p.threads.iter().skip(1)) {
            let c = image.creds.as_ref().unwrap_or(&p.creds);
            // Each thread's IDs as the namespace's maps show them too.
            let c = match userns {
                Some(u) => std::borrow::Cow::Owned(crate::kinds::userns::inside(ckpt_own, c, u)?.1),
                None => std::borrow::Cow::Borrowed(c),
            };
            std::mem::swap(&mut cx.live_task("set credentials")?.inj, t);
            let r = creds::restore_creds(cx, me, &c);
            std::mem::swap(&mut cx.live_task("set credentials")?.inj, t);
            changed |= r?;
        }
        if creds::restore_creds(cx, me, &want)? || changed {
            creds::after_creds(cx)?;
        }
    }
    Ok(())
}
