//! inotify instances and their watches.

use crate::error::Problem;
use crate::kinds::check;
use crate::model::InotifyWatch;
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// Most inotify watches per instance accepted (restore may skip wd numbers up to it).
pub(crate) const MAX_WATCHES: usize = 1 << 14;

/// Watches in increasing wd order, with sane paths, not too many.
pub(crate) fn check_watches(
    watches: &[InotifyWatch],
    fd: i32,
    pid: i32,
    problems: &mut Vec<Problem>,
) {
    if watches.len() > MAX_WATCHES
        || watches.first().is_some_and(|w| w.wd < 1)
        || watches.windows(2).any(|w| w[0].wd >= w[1].wd)
        || watches
            .iter()
            .any(|w| w.path.is_empty() || w.path.len() > 4096)
    {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {} of process {} has invalid inotify watches",
                fd, pid
            ),
        );
    }
}

/// Every watched path exists.
pub(crate) fn check_paths(watches: &[InotifyWatch], fd: i32, problems: &mut Vec<Problem>) {
    for w in watches {
        if std::fs::symlink_metadata(procfs::bytes_path(&w.path)).is_err() {
            check::p(
                problems,
                "file-missing",
                format!(
                    "file descriptor {}: inotify watch {} on {}: it does not exist",
                    fd,
                    w.wd,
                    check::show(&w.path)
                ),
            );
        }
    }
}

/// What `inspect` says of an inotify instance.
pub(crate) fn describe(watches: &[InotifyWatch]) -> String {
    format!(
        "inotify watching {}",
        watches
            .iter()
            .map(|w| format!(
                "{} ({:#x}) as wd {}",
                String::from_utf8_lossy(&w.path),
                w.mask,
                w.wd
            ))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
