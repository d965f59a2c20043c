//! Signals that would end ckpt in the middle of a transaction (SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGPIPE) are caught while it runs and only noted: the transaction checks
//! [`pending`] at points where it can roll back, and ends there.
//!
//! The handler only stores the signal number in an atomic (async-signal-safe). It is
//! installed with `SA_RESTART`, so no system call of ckpt fails with EINTR meanwhile
//! (a ptrace wait must not, or the tracee would be left running an injected call).

use std::sync::atomic::{AtomicI32, Ordering};

/// The first deferred signal that arrived (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

/// The signals deferred by [`Deferred::install`].
pub const DEFERRED: [i32; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

extern "C" fn note(sig: libc::c_int) {
    let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// The deferred signal that arrived since [`Deferred::install`], if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// While alive, the signals of [`DEFERRED`] are noted instead of acting; dropping it
/// puts the previous dispositions back (a signal noted meanwhile stays reported by
/// [`pending`]).
pub struct Deferred {
    old: Vec<(i32, libc::sigaction)>,
}

impl Deferred {
    pub fn install() -> Self {
        PENDING.store(0, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in DEFERRED {
            // SAFETY: a zeroed sigaction is a valid "no handler, empty mask" value.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = note as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = libc::SA_RESTART;
            // SAFETY: as above.
            let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction structs; the handler only does
            // an atomic store, which is async-signal-safe.
            let r = unsafe {
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, &mut prev)
            };
            if r == 0 {
                // A signal ignored by whoever started us stays ignored (nohup, a shell's
                // background job and SIGINT).
                if prev.sa_sigaction == libc::SIG_IGN && sig != libc::SIGPIPE {
                    // SAFETY: puts back the disposition just read.
                    unsafe { libc::sigaction(sig, &prev, std::ptr::null_mut()) };
                    continue;
                }
                old.push((sig, prev));
            }
        }
        Deferred { old }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: `prev` is the disposition sigaction returned for this signal.
            unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
        }
    }
}

/// The conventional name of a signal ("SIGTERM").
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        s => format!("signal {s}"),
    }
}

/// Test hook (feature `fault-injection`): with CKPT_DIE_AT=N in the environment, ckpt
/// kills itself with SIGKILL at the N-th call of this function (CKPT_DIE_AT=name:WHAT:
/// at the first call named WHAT), placed at every moment
/// of the injected queries where a tracee is stopped with state ckpt changed (after each
/// register or mask change, after each stop). `tests/e2e_killsafe.rs` walks N over all
/// of them. With CKPT_DIE_TRACE set, each call is counted on stderr.
#[cfg(feature = "fault-injection")]
pub fn die_point(what: &str) {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var_os("CKPT_DIE_TRACE").is_some() {
        eprintln!("ckpt: die point #{n} {what}");
    }
    // CKPT_DIE_AT=N: the N-th die point; CKPT_DIE_AT=name:WHAT: the first named WHAT.
    let at = std::env::var("CKPT_DIE_AT").unwrap_or_default();
    let hit = match at.strip_prefix("name:") {
        Some(name) => name == what,
        None => at.parse::<u64>().ok() == Some(n),
    };
    if hit {
        let me = rustix::process::getpid();
        if me.is_init() {
            // The init of a PID namespace (`--new-pidns`'s builder) is immune to its own
            // SIGKILL: it ends at once instead.
            std::process::exit(128 + libc::SIGKILL);
        }
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn die_point(_what: &str) {}

/// Test hook (feature `fault-injection`): with CKPT_LINGER=WHAT:MS in the environment,
/// ckpt sleeps MS milliseconds at the linger point named WHAT. Makes races with a
/// restored tree that already runs deterministic (e.g. `builder released the tree`: the
/// PID namespace's builder stays around after it let the tree go).
#[cfg(feature = "fault-injection")]
pub fn linger_point(what: &str) {
    if let Some(ms) = linger_ms(what) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The milliseconds CKPT_LINGER asks to wait at the linger point named `what`, for a
/// point that cannot sleep through [`linger_point`] (one in a child that runs raw
/// system calls only).
#[cfg(feature = "fault-injection")]
pub fn linger_ms(what: &str) -> Option<u64> {
    let spec = std::env::var("CKPT_LINGER").unwrap_or_default();
    spec.rsplit_once(':')
        .filter(|(name, _)| *name == what)
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn linger_ms(_what: &str) -> Option<u64> {
    None
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn linger_point(_what: &str) {}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// SIGTERM sent to the process while the handlers are in place is only noted (the
    /// test process goes on), and the previous disposition comes back afterwards.
    #[test]
    fn a_deferred_signal_is_noted_not_acted_on() {
        let d = super::Deferred::install();
        assert_eq!(super::pending(), None);
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .expect("kill");
        let t0 = Instant::now();
        while super::pending().is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(super::pending(), Some(libc::SIGTERM));
        drop(d);
        // SAFETY: reads the current disposition only.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only queries.
        unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut now) };
        assert_eq!(now.sa_sigaction, libc::SIG_DFL, "SIGTERM's default is back");
    }
}
