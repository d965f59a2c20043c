//! io_uring instances: refused at dump, the refusal naming what the ring holds as its
//! fdinfo shows it (queue sizes, submissions the kernel has not consumed, completions
//! not reaped, registered files and buffers, an SQ polling thread, overflowed
//! completions). Requests the kernel took and has not completed are not shown by any
//! interface, and nothing can make a ring again with its queues and registrations.

use super::OpenFd;
use crate::error::DumpResult;
use crate::model::FdKind;
use crate::sys::proc as procfs;

/// What an io_uring fdinfo shows, as far as the refusal tells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UringInfo {
    pub(crate) sq_entries: u64,
    pub(crate) cq_entries: u64,
    /// Submissions the program queued that the kernel has not consumed (SqTail - SqHead).
    pub(crate) sq_queued: u32,
    /// Completions not reaped (CqTail - CqHead).
    pub(crate) cq_ready: u32,
    /// Registered files, by the path fdinfo shows.
    pub(crate) files: Vec<String>,
    pub(crate) buffers: u64,
    /// The SQ polling thread (IORING_SETUP_SQPOLL), if any.
    pub(crate) sq_thread: Option<i64>,
    /// Completions the CQ ring had no room for (kept by the kernel).
    pub(crate) overflow: usize,
}

/// The parts of an io_uring fdinfo the refusal names; `None` if it has none of them.
pub(crate) fn parse(info: &str) -> Option<UringInfo> {
    let field = |k: &str| procfs::fdinfo_field(info, k);
    let hex = |k: &str| {
        field(k).and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
    };
    let num = |k: &str| field(k).and_then(|v| v.trim().parse::<i64>().ok());
    let u32of = |k: &str| num(k).and_then(|v| u32::try_from(v).ok());
    let mut u = UringInfo {
        sq_entries: hex("SqMask:")? + 1,
        cq_entries: hex("CqMask:")? + 1,
        sq_queued: u32of("SqTail:")?.wrapping_sub(u32of("SqHead:")?),
        cq_ready: u32of("CqTail:")?.wrapping_sub(u32of("CqHead:")?),
        buffers: num("UserBufs:").map_or(0, |n| n.max(0) as u64),
        sq_thread: num("SqThread:").filter(|&t| t > 0),
        ..UringInfo::default()
    };
    // The lines under a heading ("UserFiles:\t2" then "    0: /path"), indented.
    let mut section = "";
    for l in info.lines() {
        if !l.starts_with(' ') && !l.starts_with('\t') {
            section = l.split(':').next().unwrap_or("");
            continue;
        }
        let item = l.trim();
        match section {
            "UserFiles" => {
                if let Some((_, path)) = item.split_once(": ") {
                    u.files.push(path.to_string());
                }
            }
            "CqOverflowList" if !item.is_empty() => u.overflow += 1,
            _ => {}
        }
    }
    Some(u)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the refusal says the ring holds.
pub(crate) fn describe(u: &UringInfo) -> String {
    let mut held = vec![
        format!(
            "{} queued and not consumed by the kernel",
            plural(u64::from(u.sq_queued), "submission", "submissions")
        ),
        format!(
            "{} not reaped",
            plural(u64::from(u.cq_ready), "completion", "completions")
        ),
    ];
    if u.overflow > 0 {
        held.push(format!(
            "{} the ring had no room for",
            plural(u.overflow as u64, "completion", "completions")
        ));
    }
    let files = if u.files.is_empty() {
        plural(0, "registered file", "registered files")
    } else {
        format!(
            "{} ({})",
            plural(u.files.len() as u64, "registered file", "registered files"),
            u.files.join(", ")
        )
    };
    held.push(files);
    held.push(plural(u.buffers, "registered buffer", "registered buffers"));
    if let Some(t) = u.sq_thread {
        held.push(format!("an SQ polling thread ({t})"));
    }
    format!(
        "an io_uring instance with {} submission and {} completion entries, holding {}; \
         requests the kernel took may still be in flight, which no interface shows, and \
         ckpt cannot make a ring again with its queues and registrations",
        u.sq_entries,
        u.cq_entries,
        held.join(", ")
    )
}

/// What the refusal of a ring with fdinfo `info` names.
pub(crate) fn refusal(info: &str) -> String {
    parse(info).map_or_else(
        || {
            "an io_uring instance (its queues, registered buffers and files and requests \
             in flight cannot be saved)"
                .to_string()
        },
        |u| describe(&u),
    )
}

// ---- collect (dump) ----

/// An io_uring descriptor: refused, naming what its ring holds.
pub(crate) fn collect(d: &OpenFd, info: &str) -> DumpResult<FdKind> {
    Err(d.not_yet(&refusal(info)))
}

/// For a ring mapped at an area of process `pid` (the io_uring file's inode `ino`):
/// which descriptor of the process is that instance and what its ring holds, or that
/// no descriptor holds it any more.
pub(crate) fn describe_mapped(pid: i32, ino: u64) -> String {
    use std::os::unix::fs::MetadataExt;
    let fd = procfs::fds(pid).ok().and_then(|fds| {
        fds.into_iter().find(|n| {
            let at = format!("/proc/{pid}/fd/{n}");
            procfs::readlink(&at).is_ok_and(|l| l == b"anon_inode:[io_uring]")
                && std::fs::metadata(&at).is_ok_and(|m| m.ino() == ino)
        })
    });
    match fd.and_then(|n| procfs::fdinfo_text(pid, n).ok().map(|t| (n, t))) {
        Some((n, info)) => format!("(descriptor {n}: {})", refusal(&info)),
        None => "(no descriptor of the process holds the instance any more: the mapping \
                 keeps it)"
            .to_string(),
    }
}
