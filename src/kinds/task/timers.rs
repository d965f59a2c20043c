//! Timers: interval timers and POSIX timers.

use crate::arch::x86::nr;
use crate::error::{RestoreError, RestoreResult as Result};
use crate::remote::Ctx;

// ---- restore (stage) ----

/// Interval timers and POSIX timers (with their IDs: PR_TIMER_CREATE_RESTORE_IDS), each
/// with the time it had left at dump.
pub(crate) fn restore_timers(cx: &mut Ctx<'_>) -> Result<()> {
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
        ev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
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
