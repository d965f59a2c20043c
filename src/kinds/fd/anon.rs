//! Anonymous-inode descriptors: eventfd, timerfd, signalfd and the others without a
//! module of their own.

use super::{OpenFd, fdinfo_unparsed};
use crate::error::DumpResult as Result;
use crate::model::FdKind;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// An eventfd, timerfd or signalfd (`kind`), from its fdinfo text `info`.
pub(crate) fn collect(d: &OpenFd, kind: &str, info: &str) -> Result<FdKind> {
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
