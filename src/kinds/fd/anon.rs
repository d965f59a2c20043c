//! Anonymous-inode descriptors: eventfd, timerfd, signalfd and the others without a
//! module of their own.

use super::{OpenFd, fdinfo_unparsed};
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::{RestoreError, RestoreResult};
use crate::model::FdKind;
use crate::remote::Ctx;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An eventfd, timerfd or signalfd (`kind`), from its fdinfo text `info`.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> DumpResult<FdKind> {
    let flags = d.flags;
    let bad = || fdinfo_unparsed(d.pid, d.fd, kind);
    let field = |k: &str| procfs::fdinfo_field(info, k).ok_or_else(bad);
    Ok(match kind {
        "eventfd" => FdKind::EventFd {
            count: u64::from_str_radix(field("eventfd-count:")?, 16).map_err(|_| bad())?,
            flags,
            semaphore: procfs::fdinfo_field(info, "eventfd-semaphore:") == Some("1"),
        },
        "timerfd" => FdKind::TimerFd {
            clock: field("clockid:")?.parse().map_err(|_| bad())?,
            flags,
            value_ns: procfs::parse_timespec_pair(field("it_value:")?).ok_or_else(bad)?,
            interval_ns: procfs::parse_timespec_pair(field("it_interval:")?).ok_or_else(bad)?,
            ticks: field("ticks:")?.parse().map_err(|_| bad())?,
        },
        _ => FdKind::SignalFd {
            mask: u64::from_str_radix(field("sigmask:")?, 16).map_err(|_| bad())?,
            flags,
        },
    })
}

// ---- checks (plan) ----

/// What `inspect` says of an eventfd.
pub(crate) fn describe_eventfd(count: u64, semaphore: bool) -> String {
    format!(
        "eventfd count {count}{}",
        if semaphore { " (semaphore)" } else { "" }
    )
}

/// What `inspect` says of a timerfd.
pub(crate) fn describe_timerfd(clock: i32, value_ns: u64, interval_ns: u64, ticks: u64) -> String {
    format!("timerfd clock {clock}, next in {value_ns} ns, every {interval_ns} ns, {ticks} unread")
}

/// What `inspect` says of a signalfd.
pub(crate) fn describe_signalfd(mask: u64) -> String {
    format!("signalfd mask {mask:#x}")
}

// ---- restore (stage) ----

/// The creation flags of an anonymous-inode descriptor: of its status flags, those
/// in `allowed`, and close-on-exec.
pub(crate) fn keep_flags(flags: u32, allowed: i32) -> u64 {
    u64::from(flags & (allowed as u32 | libc::O_CLOEXEC as u32))
}

/// Create an eventfd, timerfd or signalfd in its saved state; returns its descriptor.
/// (Inotify and epoll instances: [`super::inotify`], [`super::epoll`].)
pub(crate) fn create_anon_fd(cx: &mut Ctx<'_>, kind: &FdKind) -> RestoreResult<u64> {
    let keep = keep_flags;
    match kind {
        FdKind::EventFd {
            count,
            flags,
            semaphore,
        } => {
            let mut fl = keep(*flags, libc::EFD_NONBLOCK);
            if *semaphore {
                fl |= libc::EFD_SEMAPHORE as u64;
            }
            let n = cx.call("eventfd2", nr::EVENTFD2, [0, fl, 0, 0, 0, 0])?;
            if *count != 0 {
                let a = cx.put(0, &count.to_le_bytes())?;
                cx.call("write eventfd count", nr::WRITE, [n, a, 8, 0, 0, 0])?;
            }
            Ok(n)
        }
        FdKind::TimerFd {
            clock,
            flags,
            value_ns,
            interval_ns,
            ticks,
        } => {
            let fl = keep(*flags, libc::TFD_NONBLOCK);
            let n = cx.call(
                "timerfd_create",
                nr::TIMERFD_CREATE,
                [*clock as u64, fl, 0, 0, 0, 0],
            )?;
            // A periodic timer that expired is re-armed by the kernel only when it is
            // read; until then fdinfo shows 0 left. Arm it for one more interval.
            let value_ns = if *value_ns == 0 {
                interval_ns
            } else {
                value_ns
            };
            if *value_ns != 0 {
                let mut b = Vec::with_capacity(32);
                for w in [
                    interval_ns / 1_000_000_000,
                    interval_ns % 1_000_000_000,
                    value_ns / 1_000_000_000,
                    value_ns % 1_000_000_000,
                ] {
                    b.extend_from_slice(&w.to_le_bytes());
                }
                let a = cx.put(0, &b)?;
                cx.call("timerfd_settime", nr::TIMERFD_SETTIME, [n, 0, a, 0, 0, 0])?;
            }
            if *ticks != 0 {
                const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
                let a = cx.put(64, &ticks.to_le_bytes())?;
                cx.call(
                    "timerfd ticks",
                    nr::IOCTL,
                    [n, TFD_IOC_SET_TICKS, a, 0, 0, 0],
                )?;
            }
            Ok(n)
        }
        FdKind::SignalFd { mask, flags } => {
            let a = cx.put(0, &mask.to_le_bytes())?;
            let fl = keep(*flags, libc::SFD_NONBLOCK);
            cx.call("signalfd4", nr::SIGNALFD4, [u64::MAX, a, 8, fl, 0, 0])
        }
        _ => Err(RestoreError::Stage(
            "not an anonymous-inode descriptor".into(),
        )),
    }
}
