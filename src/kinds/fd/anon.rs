//! Anonymous-inode descriptors: eventfd, timerfd, signalfd and the others without a
//! module of their own.

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
