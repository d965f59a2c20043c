//! `dump --freeze-cgroup`: the tree is a whole cgroup, frozen with the cgroup freezer
//! (v2 `cgroup.freeze`, v1 `freezer.state`) before it is seized, which no fork can
//! outrun. While the cgroup is frozen, every thread of every process in it (and in the
//! cgroups below it) is seized and interrupted; once the cgroup is thawed (v2: the
//! interrupt stops come even while it is frozen; v1: only once it is thawed) the usual
//! top-down freeze (`FrozenTree::freeze`) waits for those stops; the cgroup stays thawed
//! while the dump's injected calls run the threads. The freeze the cgroup
//! had before (frozen by its owner, or not) is put back whatever happens: by this
//! module's drop, and by a guard process if ckpt dies (`sys::cgroup::FreezeGuard`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{DumpError, Result};
use crate::sys::cgroup::{self, CgroupDir, FreezeGuard, Freezer};
use crate::sys::{self, ptrace};

/// Which cgroup `--freeze-cgroup` freezes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeCgroup {
    /// The root process's: its cgroup v2 one when ckpt sees a v2 hierarchy and it is
    /// not the root cgroup, else its v1 freezer one.
    OfRoot,
    /// The cgroup directory at this path (as ckpt's mount namespace shows it), e.g.
    /// `/sys/fs/cgroup/unified/job` or `/sys/fs/cgroup/freezer/job` (what runc sends).
    At(PathBuf),
}

/// How long the cgroup may take to freeze before the dump is refused.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the freezer did, for the dump's statistics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CgroupFreezeStats {
    /// The cgroup frozen, as ckpt's mount namespace shows it.
    pub cgroup: PathBuf,
    /// "v2" or "v1".
    pub freezer: String,
    /// Its owner had it frozen before the dump (and it is left frozen).
    pub frozen_before: bool,
    /// How long the cgroup took to freeze.
    #[serde(skip)]
    pub freezing: Duration,
    /// The same, in microseconds.
    pub freezing_us: u64,
}

/// The threads seized (and interrupted, unless they were stopped by job control) while
/// the cgroup was frozen, not yet waited for. The tree's freeze takes them over; those
/// left (a failure half-way, threads gone) are released with the [`CgroupFreeze`].
#[derive(Default)]
pub(crate) struct Seized {
    /// Thread -> interrupted (false: it was in a group-stop, which traps by itself).
    pub threads: BTreeMap<i32, bool>,
}

impl Seized {
    /// Thread `tid` is taken over: Some(interrupted) if it was seized here.
    pub fn take(&mut self, tid: i32) -> Option<bool> {
        self.threads.remove(&tid)
    }
}

impl Seized {
    /// Wait for the stop of every thread left (it comes: the cgroup is thawed, or v2);
    /// returns (thread, signal to deliver at detach) of those stopped.
    fn stop_all(&mut self) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        for (&tid, _) in std::mem::take(&mut self.threads).iter() {
            match ptrace::wait(tid) {
                // A stop for a signal: the signal is delivered at detach.
                Ok(ptrace::Stop::Signal(sig)) => out.push((tid, sig)),
                Ok(ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_)) | Err(_) => {}
                Ok(_) => out.push((tid, 0)),
            }
        }
        out
    }
}

/// A cgroup held by the dump. Dropped, it puts the freeze back as it was before the
/// dump (thawed, or frozen by its owner) and ends the guard.
pub(crate) struct CgroupFreeze {
    dir: CgroupDir,
    freezer: Freezer,
    /// Frozen by its owner before the dump.
    prior: bool,
    /// Frozen by ckpt now (as asked).
    asked: bool,
    guard: Option<FreezeGuard>,
    pub stats: CgroupFreezeStats,
    /// Threads seized and not yet taken over by the tree's freeze.
    pub seized: Seized,
}

impl Drop for CgroupFreeze {
    fn drop(&mut self) {
        // Threads left are stopped (a v1 cgroup must be thawed for that: its tasks
        // take no trap while frozen; they run no code of their own before it), the
        // freeze put back, and then they are let go.
        if self.asked
            && self.freezer == Freezer::V1
            && !self.seized.threads.is_empty()
            && cgroup::set_freeze(&self.dir, self.freezer, false).is_ok()
        {
            self.asked = false;
        }
        let left = self.seized.stop_all();
        if self.asked != self.prior {
            let _ = cgroup::set_freeze(&self.dir, self.freezer, self.prior);
        }
        for (tid, sig) in left {
            let _ = ptrace::detach(tid, sig);
        }
        if let Some(g) = self.guard.take() {
            g.done();
        }
    }
}

/// The cgroup directory at `path` (as ckpt's mount namespace shows it) and its
/// freezer; Err(why) when it is no cgroup ckpt can freeze.
pub fn cgroup_at(path: &std::path::Path) -> std::result::Result<(CgroupDir, Freezer), String> {
    let dir = cgroup::dir_at_path(path)
        .filter(CgroupDir::is_cgroup)
        .ok_or_else(|| {
            format!(
                "{}: not a cgroup directory of a hierarchy ckpt sees mounted",
                path.display()
            )
        })?;
    let f = cgroup::freezer_of(&dir).ok_or_else(|| {
        format!(
            "{}: the cgroup has no freezer (neither cgroup.freeze of cgroup v2 nor \
             freezer.state of the v1 freezer controller; a root cgroup cannot be frozen)",
            path.display()
        )
    })?;
    Ok((dir, f))
}

/// The cgroup `how` names for the tree rooted at `root`, and its freezer.
fn resolve(root: i32, how: &FreezeCgroup) -> Result<(CgroupDir, Freezer)> {
    let refuse = |why: String| DumpError::Unsupported { pid: root, why };
    match how {
        FreezeCgroup::At(path) => {
            cgroup_at(path).map_err(|e| refuse(format!("--freeze-cgroup {e}")))
        }
        FreezeCgroup::OfRoot => {
            let member = cgroup::membership(root)?;
            let hier = cgroup::hierarchies()?;
            let pick = |v2: bool| {
                member.iter().find_map(|(c, p)| {
                    if v2 != c.is_empty() {
                        return None;
                    }
                    let c = cgroup::canonical(c);
                    if !v2 && !c.split(',').any(|x| x == "freezer") {
                        return None;
                    }
                    let h = hier.iter().find(|h| h.controllers == c)?;
                    let d = cgroup::dir_of(h, p)?;
                    let f = cgroup::freezer_of(&d)?;
                    Some((d, f))
                })
            };
            pick(true).or_else(|| pick(false)).ok_or_else(|| {
                refuse(
                    "--freeze-cgroup: the process is in no cgroup that can be frozen (its \
                     cgroup v2 and v1 freezer cgroups are root cgroups, or not mounted \
                     where ckpt sees them); put the tree in a cgroup of its own"
                        .into(),
                )
            })
        }
    }
}

/// Whether `pid` descends from `root` (or is it), by its parents as /proc shows them; a
/// process gone meanwhile (a short-lived child of the tree) counts as one.
fn descends_from(pid: i32, root: i32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        if p == root {
            return true;
        }
        match sys::proc::status(p) {
            Ok(st) if st.ppid > 0 && st.ppid != p => p = st.ppid,
            // Being reaped (no parent any more), or reaped.
            Ok(st) if st.ppid == 0 && p != 1 => return true,
            Err(e) if e.errno() == Some(libc::ENOENT) => return true,
            _ => return false,
        }
    }
    false
}

fn describe(pid: i32) -> String {
    let comm = sys::proc::stat(pid)
        .map(|s| String::from_utf8_lossy(&s.comm).into_owned())
        .unwrap_or_default();
    format!("{pid} ({comm})")
}

/// The processes of cgroup `dir` (and below) outside the tree rooted at `root`.
fn strangers(dir: &CgroupDir, root: i32) -> Result<Vec<i32>> {
    Ok(cgroup::procs_below(dir)?
        .into_iter()
        .filter(|&p| !descends_from(p, root))
        .collect())
}

fn refuse_strangers(dir: &CgroupDir, root: i32, when: &str) -> Result<()> {
    let mut s = strangers(dir, root)?;
    // Looked at again: a short-lived process of the tree may have been read half-gone.
    s.retain(|&p| sys::proc::stat(p).is_ok() && !descends_from(p, root));
    if s.is_empty() {
        return Ok(());
    }
    let own = std::process::id() as i32;
    let names: Vec<String> = s.iter().map(|&p| describe(p)).collect();
    let why = if s.contains(&own) {
        format!(
            "--freeze-cgroup {dir}: ckpt itself runs in that cgroup and would freeze \
             itself; run ckpt from another cgroup"
        )
    } else {
        format!(
            "--freeze-cgroup {dir}: the cgroup (or one below it) holds processes that are \
             not in the dumped tree ({}){when}; freezing it would stop them too and they \
             would not be dumped",
            names.join(", ")
        )
    };
    Err(DumpError::Unsupported { pid: root, why })
}

/// Freeze the cgroup `how` names, seize every thread in it, and thaw it again. If its
/// owner had it frozen, it is frozen again when the returned [`CgroupFreeze`] is
/// dropped, which must happen before the threads are let go.
pub(crate) fn freeze_and_seize(root: i32, how: &FreezeCgroup) -> Result<CgroupFreeze> {
    let (dir, freezer) = resolve(root, how)?;
    refuse_strangers(&dir, root, "")?;
    let prior = cgroup::freeze_asked(&dir, freezer)?;
    // Processes stopped by job control are seized before the freeze: a seize of one
    // waits for its trap, which a v1-frozen task cannot take.
    let mut cg = CgroupFreeze {
        seized: Seized::default(),
        stats: CgroupFreezeStats {
            cgroup: dir.path(),
            freezer: match freezer {
                Freezer::V2 => "v2",
                Freezer::V1 => "v1",
            }
            .into(),
            frozen_before: prior,
            freezing: Duration::ZERO,
            freezing_us: 0,
        },
        guard: Some(FreezeGuard::start(&dir, freezer, prior)?),
        dir,
        freezer,
        prior,
        asked: prior,
    };
    if !prior {
        for p in cgroup::procs_below(&cg.dir)? {
            for tid in sys::proc::task_ids(p).unwrap_or_default() {
                if sys::proc::stat(tid)
                    .map(|s| s.state == b'T')
                    .unwrap_or(false)
                    && seize(tid)?
                {
                    cg.seized.threads.insert(tid, false);
                }
            }
        }
    }
    super::check_signals()?;
    let t0 = Instant::now();
    cg.asked = true;
    cgroup::set_freeze(&cg.dir, freezer, true)?;
    crate::sys::deferred::die_point("freezer: cgroup frozen");
    loop {
        if cgroup::frozen_now(&cg.dir, freezer)? {
            break;
        }
        super::check_signals()?;
        if t0.elapsed() > FREEZE_TIMEOUT {
            return Err(DumpError::Unsupported {
                pid: root,
                why: format!(
                    "--freeze-cgroup {}: the cgroup did not freeze within {} s (a task \
                     in uninterruptible sleep?); it is put back as it was",
                    cg.dir,
                    FREEZE_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    cg.stats.freezing = t0.elapsed();
    cg.stats.freezing_us = cg.stats.freezing.as_micros() as u64;
    // Frozen: nothing in the cgroup forks, exits or moves by itself any more.
    refuse_strangers(&cg.dir, root, " (moved into it while ckpt froze it)")?;
    // Threads its owner froze in a job-control stop (v1): a seize waits for such a
    // thread's trap, which it takes only once thawed; they are seized after the thaw
    // (stopped, they run nothing meanwhile).
    let mut stopped_in_freeze = Vec::new();
    for p in cgroup::procs_below(&cg.dir)? {
        for tid in sys::proc::task_ids(p).unwrap_or_default() {
            if cg.seized.threads.contains_key(&tid) {
                continue;
            }
            if prior && freezer == Freezer::V1 && job_stopped_in_v1_freeze(root, tid, &cg.dir)? {
                stopped_in_freeze.push(tid);
                continue;
            }
            if seize(tid)? {
                match ptrace::interrupt(tid) {
                    Ok(()) => {
                        cg.seized.threads.insert(tid, true);
                    }
                    Err(_) => {
                        // Gone meanwhile (killed): not stopped, nothing to wait for.
                        let _ = ptrace::detach(tid, 0);
                    }
                }
            }
            crate::sys::deferred::die_point("freezer: thread seized");
        }
    }
    // Thawed, with every thread held: the dump's injected calls need the threads to
    // run (v2 delivers the interrupt stops while frozen, v1 only once thawed). A cgroup
    // its owner froze is frozen again before the threads are let go (dropping `cg`).
    cgroup::set_freeze(&cg.dir, freezer, false)?;
    cg.asked = false;
    crate::sys::deferred::die_point("freezer: cgroup thawed");
    for tid in stopped_in_freeze {
        if !seize(tid)? {
            continue;
        }
        // Still stopped (it traps by itself), or continued meanwhile by someone's
        // SIGCONT (it needs the interrupt, as the others).
        let stopped = sys::proc::stat(tid).is_ok_and(|s| matches!(s.state, b'T' | b't'));
        if stopped {
            cg.seized.threads.insert(tid, false);
        } else if ptrace::interrupt(tid).is_ok() {
            cg.seized.threads.insert(tid, true);
        } else {
            let _ = ptrace::detach(tid, 0);
        }
    }
    Ok(cg)
}

/// Whether thread `tid`, in the v1 cgroup `dir` its owner froze, was frozen in a
/// job-control stop: /proc shows every frozen task as `D`, but its wchan still names
/// the stop (`do_signal_stop`). A kernel that does not say where a frozen thread
/// sleeps leaves the question open: refused rather than risk a seize that waits for
/// the thaw.
fn job_stopped_in_v1_freeze(root: i32, tid: i32, dir: &CgroupDir) -> Result<bool> {
    let w = match sys::proc::wchan(tid) {
        Ok(w) => w,
        // Gone meanwhile: the seize says so.
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if w.is_empty() || w == "0" {
        return Err(DumpError::Unsupported {
            pid: root,
            why: format!(
                "--freeze-cgroup {dir}: the v1 cgroup is frozen by its owner and this kernel \
                 does not show where thread {tid} sleeps (/proc/{tid}/wchan), so a thread \
                 stopped by job control cannot be told apart (seizing one waits for the \
                 thaw); thaw the cgroup first"
            ),
        });
    }
    Ok(w == "do_signal_stop")
}

/// PTRACE_SEIZE with the options of `freeze_thread`; false if the thread is gone.
fn seize(tid: i32) -> Result<bool> {
    let opts = libc::PTRACE_O_TRACESYSGOOD;
    let r = match ptrace::seize(tid, opts | libc::PTRACE_O_SUSPEND_SECCOMP) {
        Err(e) if e.errno() == Some(libc::EPERM) => ptrace::seize(tid, opts),
        r => r,
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Every live process of the frozen tree must be in the cgroup (or below it): one
/// outside it was not frozen with it.
pub(crate) fn refuse_outside(cg: &CgroupFreeze, root: i32, live: &[i32]) -> Result<()> {
    let inside: BTreeSet<i32> = cgroup::procs_below(&cg.dir)?.into_iter().collect();
    let outside: Vec<String> = live
        .iter()
        .filter(|p| !inside.contains(p))
        .map(|&p| describe(p))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(DumpError::Unsupported {
        pid: root,
        why: format!(
            "--freeze-cgroup {}: processes of the tree are not in that cgroup ({}); the \
             tree must be the whole cgroup (dump without --freeze-cgroup to freeze it \
             with ptrace)",
            cg.dir,
            outside.join(", ")
        ),
    })
}
