//! Timers: interval timers and POSIX timers.

use super::query::{slot_bytes, word};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::{RestoreError, RestoreResult};
use crate::model::{ITimer, PosixTimer};
use crate::remote::Ctx;
use crate::sys::inject::{Call, Injector};
use crate::sys::mem::RemoteMem;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// The three `getitimer` queries, timer `which` into `slot(first + which)`.
pub(crate) fn itimer_calls(first: usize, slot: &dyn Fn(usize) -> u64) -> Vec<Call> {
    (0..3u64)
        .map(|which| {
            Call::new(
                "getitimer",
                nr::GETITIMER,
                [which, slot(first + which as usize), 0, 0, 0, 0],
            )
        })
        .collect()
}

/// The interval timers [`itimer_calls`] read (those set), from the queries' results `b`.
pub(crate) fn itimers(b: &[u8], first: usize) -> Vec<ITimer> {
    let us = |sec: u64, usec: u64| sec.saturating_mul(1_000_000).saturating_add(usec);
    // struct itimerval { timeval it_interval; timeval it_value; }
    (0..3u32)
        .map(|which| {
            let w = slot_bytes(b, first + which as usize);
            ITimer {
                which,
                interval_us: us(word(w, 0), word(w, 1)),
                value_us: us(word(w, 2), word(w, 3)),
            }
        })
        .filter(|t| t.value_us != 0 || t.interval_us != 0)
        .collect()
}

/// The POSIX timers of the process (/proc/PID/timers), each with its time left and
/// overrun asked by injected calls whose results land at `out`.
pub(crate) fn posix_timers(
    inj: &mut Injector,
    mem: &RemoteMem,
    (out, out_len): (u64, usize),
) -> DumpResult<Vec<PosixTimer>> {
    let slot = |i: usize| out + 32 * i as u64;
    let mut posix_timers = Vec::new();
    let timers = procfs::posix_timers(inj.pid())?;
    // Two calls per timer, as many timers per batch as their results have room for.
    for chunk in timers.chunks((out_len / 32).max(1)) {
        let calls: Vec<Call> = chunk
            .iter()
            .enumerate()
            .flat_map(|(k, t)| {
                [
                    Call::new(
                        "timer_gettime",
                        nr::TIMER_GETTIME,
                        [t.id as u64, slot(k), 0, 0, 0, 0],
                    ),
                    Call::new(
                        "timer_getoverrun",
                        nr::TIMER_GETOVERRUN,
                        [t.id as u64, 0, 0, 0, 0, 0],
                    ),
                ]
            })
            .collect();
        let res = inj.batch(mem, &calls)?;
        let mut b = vec![0u8; 32 * chunk.len()];
        mem.read(out, &mut b)?;
        let ns = |sec: u64, nsec: u64| sec.saturating_mul(1_000_000_000).saturating_add(nsec);
        for (k, t) in chunk.iter().enumerate() {
            // struct itimerspec { timespec it_interval; timespec it_value; }
            let w = &b[32 * k..32 * k + 32];
            posix_timers.push(PosixTimer {
                id: t.id,
                clock: t.clock,
                signo: t.signo,
                sigev_value: t.sigev_value,
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval_ns: ns(word(w, 0), word(w, 1)),
                value_ns: ns(word(w, 2), word(w, 3)),
                overrun: res.get(2 * k + 1).copied().unwrap_or_default() as i32,
            });
        }
    }
    Ok(posix_timers)
}

// ---- restore (stage) ----

/// Interval timers and POSIX timers (with their IDs: PR_TIMER_CREATE_RESTORE_IDS), each
/// with the time it had left at dump.
pub(crate) fn restore_timers(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    for t in &proc_.itimers {
        // An interval timer that had just expired shows no time left until its signal
        // is delivered (then the kernel re-arms it): arm it for one more interval, or
        // setitimer would disarm it for good.
        let mut t = *t;
        if t.value_us == 0 {
            t.value_us = t.interval_us;
        }
        let mut b = Vec::with_capacity(32);
        for w in [
            t.interval_us / 1_000_000,
            t.interval_us % 1_000_000,
            t.value_us / 1_000_000,
            t.value_us % 1_000_000,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let a = cx.put(0, &b)?;
        cx.call(
            "setitimer",
            nr::SETITIMER,
            [u64::from(t.which), a, 0, 0, 0, 0],
        )?;
    }
    if proc_.posix_timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    cx.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        nr::PRCTL,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )?;
    for t in &proc_.posix_timers {
        // struct sigevent: value, signo, notify, then the union (tid first); 64 bytes.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_le_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        // The thread as the process's own PID namespace numbers it (SIGEV_THREAD_ID
        // names one of its own threads; plan checked that it is).
        let tid = if t.notify_tid == 0 {
            0
        } else {
            super::pidns::own_tid(proc_, t.notify_tid).ok_or_else(|| {
                RestoreError::Malformed(format!(
                    "POSIX timer {} signals thread {}, not one of process {}",
                    t.id, t.notify_tid, proc_.pid
                ))
            })?
        };
        ev[16..20].copy_from_slice(&tid.to_le_bytes());
        let evp = cx.put(0, &ev)?;
        let idp = cx.put(64, &t.id.to_le_bytes())?;
        let what = format!("timer_create (ID {})", t.id);
        cx.call(&what, nr::TIMER_CREATE, [t.clock as u64, evp, idp, 0, 0, 0])?;
        let mut got = [0u8; 4];
        cx.read(idp, &mut got)?;
        if i32::from_le_bytes(got) != t.id {
            return Err(RestoreError::Stage(format!("{what}: got another ID")));
        }
        // As for itimers: an expired periodic timer awaiting its signal shows 0 left.
        let value_ns = if t.value_ns == 0 {
            t.interval_ns
        } else {
            t.value_ns
        };
        if value_ns != 0 {
            let mut b = Vec::with_capacity(32);
            for w in [
                t.interval_ns / 1_000_000_000,
                t.interval_ns % 1_000_000_000,
                value_ns / 1_000_000_000,
                value_ns % 1_000_000_000,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let a = cx.put(128, &b)?;
            cx.call(
                "timer_settime",
                nr::TIMER_SETTIME,
                [t.id as u64, 0, a, 0, 0, 0],
            )?;
        }
    }
    cx.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        nr::PRCTL,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}
