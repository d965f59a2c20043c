//! Write tracking for incremental dumps (`ckpt dump --track`, `ckpt dump --parent`):
//! which areas are tracked, starting to track a process (a userfaultfd it makes by an
//! injected call, taken by ckpt and closed in the process at once, registered over its
//! private writable areas in asynchronous write-protect mode), and splitting a dump's
//! page runs into the pages written since the parent image (stored) and the others
//! (inherited from it). The holder that keeps the userfaultfds open between dumps is
//! `dump::track`; `sys::wptrack` has the kernel side.

use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::kinds::mem::pages::Run;
use crate::kinds::task::query::leader_calls;
use crate::kinds::task::threads::FrozenThread;
use crate::model::{Vma, VmaKind};
use crate::sys::mem::RemoteMem;
use crate::sys::wptrack::{self, WpUffd};

/// The smaps VmFlag of an area registered for write protection with a userfaultfd.
pub(crate) const TRACKED_FLAG: &str = "uw";

// ---- collect (dump) ----

/// Areas whose writes are tracked: private and writable, anonymous or a private file
/// mapping (whose written pages are the anonymous copies a dump stores). Shared memory
/// is not: a write through another process's mapping or a descriptor would not be seen
/// in this one's page tables. Its data goes into every image whole.
pub(crate) fn trackable(v: &Vma) -> bool {
    !v.shared
        && v.prot & libc::PROT_WRITE as u32 != 0
        && matches!(
            v.kind,
            VmaKind::Anon
                | VmaKind::File { .. }
                | VmaKind::MemfdMap { .. }
                | VmaKind::DeletedMap { .. }
        )
}

/// A process being tracked: its userfaultfd (held by ckpt only) and the areas
/// registered with it.
pub(crate) struct Tracked {
    pub(crate) pid: i32,
    pub(crate) uffd: WpUffd,
    pub(crate) areas: Vec<(u64, u64)>,
}

/// Start tracking the writes of frozen process `pid` (threads `threads`, areas `vmas`):
/// it makes a userfaultfd (an injected call), ckpt takes it (pidfd_getfd) and enables
/// asynchronous write protection, the process closes its descriptor again (so nothing
/// shows in its descriptor table), every trackable area is registered and every page
/// protected. An area the kernel will not register stays untracked (its pages go into
/// every image whole). Dropping the result ends the tracking.
pub(crate) fn start(pid: i32, threads: &mut [FrozenThread], vmas: &[Vma]) -> DumpResult<Tracked> {
    let mem = RemoteMem::open(pid)?;
    let uffd = leader_calls(pid, threads, &mem, "tracking its writes", |inj| {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = inj.call("userfaultfd", nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0])?;
        let adopted = WpUffd::adopt(pid, fd as i32);
        inj.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
        Ok(adopted?)
    })?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| crate::sys::SysError::io(format!("open /proc/{pid}/pagemap"), e))?;
    let mut areas = Vec::new();
    for v in vmas.iter().filter(|v| trackable(v)) {
        if uffd.register(v.start, v.len()).is_err() {
            continue;
        }
        // The first scan protects every page of the area.
        wptrack::written_and_protect(&pagemap, v.start, v.end)?;
        areas.push((v.start, v.end));
    }
    Ok(Tracked { pid, uffd, areas })
}

/// Ranges of `a` that are in `b` (both sorted, not overlapping).
fn intersect(a: (u64, u64), b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let i = b.partition_point(|r| r.1 <= a.0);
    b[i..]
        .iter()
        .take_while(|r| r.0 < a.1)
        .map(|r| (r.0.max(a.0), r.1.min(a.1)))
        .filter(|r| r.0 < r.1)
        .collect()
}

/// Ranges of `a` that are not in `b` (both sorted, not overlapping).
fn subtract(a: (u64, u64), b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a.0;
    for r in intersect(a, b) {
        if r.0 > at {
            out.push((at, r.0));
        }
        at = r.1;
    }
    if at < a.1 {
        out.push((at, a.1));
    }
    out
}

/// The ranges in `a` or `b` (each sorted), sorted and merged.
pub(crate) fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in all {
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Split the page runs of a tracked process: in each area in `tracked` (the areas with
/// the `uw` flag now), only the pages in `written` are stored; the other pages the runs
/// had are returned as the ranges inherited from the parent image (merged where they
/// touch). Runs of other areas are left whole. Pure: `written` comes from
/// [`written_in`].
pub(crate) fn split_runs(
    runs: &mut Vec<Run>,
    tracked: &[(u64, u64)],
    written: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    let mut kept = Vec::new();
    let mut inherited: Vec<(u64, u64)> = Vec::new();
    for r in runs.drain(..) {
        let range = (r.addr, r.addr + r.pages * 4096);
        if intersect(range, tracked) != vec![range] {
            kept.push(r);
            continue;
        }
        for (s, e) in intersect(range, written) {
            kept.push(Run {
                addr: s,
                pages: (e - s) / 4096,
                skip_zero: r.skip_zero,
            });
        }
        for (s, e) in subtract(range, written) {
            match inherited.last_mut() {
                Some(l) if l.1 == s => l.1 = e,
                _ => inherited.push((s, e)),
            }
        }
    }
    *runs = kept;
    inherited
}

/// Tracked areas and the pages written in them.
pub(crate) type WrittenAreas = (Vec<(u64, u64)>, Vec<(u64, u64)>);

/// The tracked areas of process `pid` (those of `vmas` with the `uw` flag) and the pages
/// written in them since the last scan, which protects them again (the process is
/// frozen: nothing is written until its pages are read).
pub(crate) fn written_in(pid: i32, vmas: &[Vma]) -> DumpResult<WrittenAreas> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| crate::sys::SysError::io(format!("open /proc/{pid}/pagemap"), e))?;
    let mut tracked = Vec::new();
    let mut written = Vec::new();
    for v in vmas.iter().filter(|v| v.has_flag(TRACKED_FLAG)) {
        written.extend(wptrack::written_and_protect(&pagemap, v.start, v.end)?);
        tracked.push((v.start, v.end));
    }
    Ok((tracked, written))
}

/// The `uw` flag is ckpt's own tracking, not the program's: it is left out of the image
/// (a restored process is not tracked).
pub(crate) fn forget_flag(vmas: &mut [Vma]) {
    for v in vmas {
        v.vmflags.retain(|f| f != TRACKED_FLAG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    fn run(addr: u64, pages: u64) -> Run {
        Run {
            addr,
            pages,
            skip_zero: true,
        }
    }

    /// In a tracked area, the runs keep the written pages and the rest is inherited;
    /// runs of untracked areas stay whole.
    #[test]
    fn runs_split_into_written_and_inherited() {
        let tracked = [(0x10000, 0x10000 + 100 * P)];
        let written = [
            (0x10000 + 2 * P, 0x10000 + 4 * P),
            (0x10000 + 50 * P, 0x10000 + 51 * P),
        ];
        let mut runs = vec![
            run(0x10000, 10),
            run(0x10000 + 40 * P, 20),
            run(0x900000, 5),
        ];
        let inh = split_runs(&mut runs, &tracked, &written);
        let got: Vec<(u64, u64)> = runs.iter().map(|r| (r.addr, r.pages)).collect();
        assert_eq!(
            got,
            vec![(0x10000 + 2 * P, 2), (0x10000 + 50 * P, 1), (0x900000, 5)]
        );
        assert_eq!(
            inh,
            vec![
                (0x10000, 0x10000 + 2 * P),
                (0x10000 + 4 * P, 0x10000 + 10 * P),
                (0x10000 + 40 * P, 0x10000 + 50 * P),
                (0x10000 + 51 * P, 0x10000 + 60 * P)
            ]
        );
        assert!(runs.iter().all(|r| r.skip_zero));
    }

    #[test]
    fn ranges() {
        let b = [(10, 20), (30, 40)];
        assert_eq!(intersect((0, 100), &b), vec![(10, 20), (30, 40)]);
        assert_eq!(intersect((15, 35), &b), vec![(15, 20), (30, 35)]);
        assert_eq!(subtract((15, 35), &b), vec![(20, 30)]);
        assert_eq!(subtract((0, 5), &b), vec![(0, 5)]);
        assert!(subtract((10, 20), &b).is_empty());
        assert_eq!(union(&b, &[(5, 12), (20, 25)]), vec![(5, 25), (30, 40)]);
    }
}
