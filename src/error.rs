//! The errors of the two transactions and the problems plan finds, below every module
//! that produces them (the kinds, remote calls, dump and restore), so that the layers
//! above can share them without depending on each other.

use std::path::PathBuf;

use crate::image::ImageError;
pub use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("no process with PID {0}")]
    NoProcess(i32),
    #[error("cannot dump process {pid}: {why}")]
    Unsupported { pid: i32, why: String },
    /// Data waits in a terminal of the tree that no interface reads without consuming
    /// it: the dump lets the tree go and tries again (see `dump::dump`), and refuses
    /// with this if it is still there.
    #[error("cannot dump process {pid}: {why}")]
    TtyBusy { pid: i32, why: String },
    #[error("process {0} exited while it was being dumped")]
    Exited(i32),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("cannot write the image: {0}")]
    Image(#[from] ImageError),
    #[error("cannot write the image to {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE) arrived before the image was
    /// complete: the dump was rolled back at its next safe point.
    #[error(
        "dump interrupted by {}: no image was written and the processes run on as before",
        crate::sys::deferred::name(*.0)
    )]
    Interrupted(i32),
    /// Restore's plan refuses what was collected (the tree's own resources counted
    /// free): nothing is written and the tree runs on.
    #[error("{}", format_unrestorable(*.pid, .problems))]
    Unrestorable { pid: i32, problems: Vec<Problem> },
    /// The front end's hook (`DumpOptions::hook`, e.g. a `criu` notify script) stopped
    /// the dump: the tree runs on and no image is left.
    #[error("{0}; nothing was written and the process runs on as before")]
    Refused(String),
}

fn format_unrestorable(pid: i32, p: &[Problem]) -> String {
    let mut s = format!(
        "cannot dump process {pid}: a restore on this host would refuse it ({} problem{}):",
        p.len(),
        if p.len() == 1 { "" } else { "s" }
    );
    for x in p {
        s.push_str("\n  - ");
        s.push_str(&x.message);
    }
    s.push_str("\nnothing was written; the process runs on as before");
    s
}

/// The result of a dump step.
pub type DumpResult<T> = std::result::Result<T, DumpError>;

/// One reason the image cannot be restored here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// A stable short code for scripts (e.g. "pid-taken", "file-changed").
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{}", format_problems(.0))]
    Problems(Vec<Problem>),
    #[error("bad image: {0}")]
    Image(#[from] ImageError),
    #[error("bad image: {0}")]
    Malformed(String),
    #[error("restore failed: {0}")]
    Sys(#[from] SysError),
    #[error("restore failed: {0}")]
    Stage(String),
    #[error("restore failed: injected fault at step \"{0}\" (testing)")]
    Fault(String),
    /// A deferred signal (SIGTERM, SIGINT...: `sys::deferred`) arrived before the point
    /// of no return: the restore stopped there and undid what it had built.
    #[error("restore interrupted by {}: nothing was left behind", crate::sys::deferred::name(*.0))]
    Interrupted(i32),
    /// The error a helper process that restored part of the tree reported, as it
    /// reported it.
    #[error("{0}")]
    Reported(String),
}

fn format_problems(p: &[Problem]) -> String {
    let mut s = format!(
        "the image cannot be restored on this host ({} problem{}):",
        p.len(),
        if p.len() == 1 { "" } else { "s" }
    );
    for x in p {
        s.push_str("\n  - ");
        s.push_str(&x.message);
    }
    s
}

/// The result of a restore step.
pub type RestoreResult<T> = std::result::Result<T, RestoreError>;

/// Fault injection for the failure-path tests: with the `fault-injection` feature, the
/// environment variable CKPT_FAULT=<step> makes the step whose name contains <step> fail,
/// and CKPT_FAULT=#N the N-th step (1-based).
#[cfg(feature = "fault-injection")]
pub(crate) fn fault_point(step: &str) -> RestoreResult<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    interrupted()?;
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) + 1;
    if let Ok(spec) = std::env::var("CKPT_FAULT") {
        let hit = match spec.strip_prefix('#') {
            Some(k) => k.parse::<u64>().ok() == Some(n),
            None => !spec.is_empty() && step.contains(spec.as_str()),
        };
        if hit {
            return Err(RestoreError::Fault(step.to_string()));
        }
    }
    if std::env::var_os("CKPT_FAULT_TRACE").is_some() {
        static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let t = T0.get_or_init(std::time::Instant::now).elapsed();
        eprintln!(
            "ckpt: step #{n} {step} (at {:.3} ms)",
            t.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Test hook (fault-injection builds only): with `CKPT_TAKE_NEXT_ID=1`, the first call
/// runs a short-lived program, which takes the next free ID of ckpt's PID namespace, as
/// a task made elsewhere on the host between ckpt's `ns_last_pid` write and its clone
/// would (`threads::create_threads`).
#[cfg(feature = "fault-injection")]
pub(crate) fn take_next_id_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if std::env::var_os("CKPT_TAKE_NEXT_ID").is_some() && !DONE.swap(true, Ordering::Relaxed) {
        let _ = std::process::Command::new("/bin/true").status();
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) fn take_next_id_once() {}

/// Test hook between plan and stage (fault-injection builds only): with
/// `CKPT_PAUSE_AFTER_PLAN=FILE`, restore creates `FILE.waiting` once plan is done and
/// waits (up to a minute) until FILE exists, so a test can change files meanwhile.
#[cfg(feature = "fault-injection")]
pub(crate) fn pause_after_plan() {
    let Some(f) = std::env::var_os("CKPT_PAUSE_AFTER_PLAN") else {
        return;
    };
    let go = std::path::PathBuf::from(f);
    let mut waiting = go.clone().into_os_string();
    waiting.push(".waiting");
    let _ = std::fs::write(&waiting, b"");
    let t0 = std::time::Instant::now();
    while !go.exists() && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn pause_after_plan() {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn fault_point(_step: &str) -> RestoreResult<()> {
    interrupted()
}

/// A deferred signal that arrived during a restore ends it at the next step before its
/// point of no return (every step is a `fault_point`).
fn interrupted() -> RestoreResult<()> {
    match crate::sys::deferred::pending() {
        Some(sig) => Err(RestoreError::Interrupted(sig)),
        None => Ok(()),
    }
}

/// Profiling aid (every build): with `CKPT_TIMES` set, print to standard error the
/// CLOCK_MONOTONIC reading (milliseconds, comparable with another program's, e.g.
/// Python's `time.monotonic()`), ckpt's PID and `what`. Used to see where the
/// milliseconds of a restore go (`scripts/many-bench` with `MANY_TIMES=1`).
pub fn time_mark(what: &str) {
    if !times_on() {
        return;
    }
    let ns = crate::sys::ns::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
    time_mark_of(std::process::id() as i32, ns.max(0) as u64, what);
}

/// Whether `CKPT_TIMES` is set (see [`time_mark`]).
pub fn times_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CKPT_TIMES").is_some())
}

/// A mark another ckpt took (process `pid`, at CLOCK_MONOTONIC `ns`) and sent us,
/// printed as [`time_mark`] prints ours: the template's server, whose standard error
/// goes nowhere, sends its marks of a copy with its reply to `ckpt spawn`.
pub fn time_mark_of(pid: i32, ns: u64, what: &str) {
    if times_on() {
        eprintln!("ckpt[{pid}]: at {:.3} ms: {what}", ns as f64 / 1e6);
    }
}
