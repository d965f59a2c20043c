//! Freeze: seize and stop every thread of the tree, top-down, so that nothing of it runs
//! while it is collected ([`FrozenTree::freeze`]); dropped without a kill, every thread
//! is put back as it was and let go. (The cgroup freezer, `--freeze-cgroup`, is
//! [`super::freezer`]: it holds the whole cgroup still while this freeze seizes it.)

use std::time::Instant;

use super::{DumpError, Result, freezer, precheck};
use crate::arch;
use crate::kinds::task::threads::FrozenThread;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{self, SysError};

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
    pub(super) fn new() -> Self {
        FrozenTree {
            nodes: Vec::new(),
            frozen_at: Instant::now(),
        }
    }

    /// Freeze `root` and all its descendants, top-down: a process's children are listed
    /// only once all its threads are stopped, so none can be missed. `seized`: threads
    /// the cgroup freeze seized already. On failure, what was frozen stays in `tree`
    /// (let go when it is dropped).
    pub(super) fn freeze(tree: &mut Self, root: i32, seized: &mut freezer::Seized) -> Result<()> {
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
            // (Those of a nested PID namespace after the others, its init first: see
            // `kinds::task::pidns`.)
            let mut kids = children_of(pid)?;
            kids.sort_by_key(|&c| crate::kinds::task::pidns::fork_rank(pid, c));
            queue.extend(kids);
        }
        Ok(())
    }

    /// The processes of the tree stopped by job control but the root, with their
    /// parents: (process, parent, the process's ID in its own PID namespace, which is
    /// how its parent names it).
    pub(super) fn stopped_children(&self) -> Result<Vec<(i32, i32, i32)>> {
        let mut out = Vec::new();
        for (pid, fr) in self.nodes.iter().skip(1) {
            if let Some(fr) = fr {
                if fr.threads.iter().any(|t| t.group_stop.is_some()) {
                    let st = sys::proc::status(*pid)?;
                    // (As the parent's namespace shows it: a child may be one below.)
                    let level = sys::proc::status(st.ppid)?.nspid.len();
                    let local = st
                        .nspid
                        .get(level.saturating_sub(1))
                        .copied()
                        .unwrap_or(*pid);
                    out.push((*pid, st.ppid, local));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn let_go(&mut self) -> Result<()> {
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

    pub(super) fn kill(&mut self) -> Result<()> {
        let mut first = None;
        for (_, fr) in self.nodes.iter_mut() {
            if let Some(fr) = fr {
                if let Err(e) = fr.kill() {
                    first.get_or_insert(e);
                }
            }
        }
        // Each killed thread still traced reports its death to us before its parent
        // can collect it (and before the init of a PID namespace of the tree's own can
        // end): taken here, so that the tree is gone when the dump returns, not only
        // when ckpt exits (a caller such as runc looks at once).
        let tids: Vec<i32> = self
            .nodes
            .iter()
            .filter_map(|(_, fr)| fr.as_ref())
            .flat_map(|fr| fr.threads.iter().map(|t| t.tid))
            .collect();
        reap_killed(tids);
        first.map_or(Ok(()), Err)
    }
}

/// Take the death of each killed thread of `tids` we still trace (polled, all at once:
/// a PID namespace's init ends only once the others are gone), for up to 5 seconds.
fn reap_killed(mut tids: Vec<i32>) {
    let t0 = Instant::now();
    while !tids.is_empty() && t0.elapsed() < std::time::Duration::from_secs(5) {
        tids.retain(|&tid| match ptrace::try_wait(tid) {
            Ok(Some(ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_))) | Err(_) => false,
            Ok(_) => true,
        });
        if !tids.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
