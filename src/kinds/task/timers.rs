//! Timers: interval timers and POSIX timers.

use super::query::{SCRATCH_OUT_LEN, slot_bytes, word};
use crate::arch::x86::nr;
use crate::error::DumpResult as Result;
use crate::model::{ITimer, PosixTimer};
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
    out: u64,
) -> Result<Vec<PosixTimer>> {
    let slot = |i: usize| out + 32 * i as u64;
    let mut posix_timers = Vec::new();
    let timers = procfs::posix_timers(inj.pid())?;
    // Two calls per timer, as many timers per batch as their results have room for.
    for chunk in timers.chunks(SCRATCH_OUT_LEN / 32) {
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
