//! Copy-on-write sharing between a process and its parent: the private anonymous pages a
//! fork child still shares with its parent (neither wrote them since the fork, so both
//! map the same page frame).
//!
//! Dump finds them by frame number (`/proc/PID/pagemap`, read as root, where present
//! pages show their frame) in the areas the child and its parent have identical, and
//! stores them once: in the parent's page data; the child's image lists the ranges
//! (`Process::cow_from_parent`). Restore fills the parent's memory first and forks the
//! child from it, so the child inherits those pages copy-on-write, as the original did;
//! the child keeps only the areas that hold them ([`trim_inherited`]), drops every other
//! inherited page there, and gets its own pages on top as usual.

use std::collections::BTreeSet;

use crate::arch::native::nr;
use crate::error::{DumpResult, Problem, RestoreResult};
use crate::kinds::check;
use crate::kinds::mem::TASK_SIZE;
use crate::kinds::mem::pages::Run;
use crate::model::{Process, Vma, VmaKind};
use crate::remote::{BatchArgs, Ctx, STUB_SIZE};
use crate::sys::inject::Call;
use crate::sys::proc::{self as procfs, PM_PRESENT};

/// VmFlags fork does not carry over to the child (memory locks: `lo`, `lf`), or that
/// say only how the kernel keeps the area (soft-dirty tracking, userfaultfd
/// registration), which do not make two areas different for this.
const IGNORED_FLAGS: &[&str] = &["lo", "lf", "sd", "um", "uw", "ui"];

/// The page frame number of a present pagemap entry (0 without CAP_SYS_ADMIN).
const PFN_MASK: u64 = (1 << 55) - 1;

/// Whether a child's area `c` is one fork gives it from its parent's `p` exactly as it
/// is: same place, protections and flags; private anonymous memory that fork copies
/// (not `MADV_DONTFORK`, not wiped on fork, not droppable).
pub(crate) fn inheritable(p: &Vma, c: &Vma) -> bool {
    let flags = |v: &Vma| -> BTreeSet<String> {
        v.vmflags
            .iter()
            .filter(|f| !IGNORED_FLAGS.contains(&f.as_str()))
            .cloned()
            .collect()
    };
    let plain = |v: &Vma| {
        v.kind == VmaKind::Anon
            && !v.shared
            && !["dc", "wf", "dp"].iter().any(|f| v.has_flag(f))
            && v.guard_ranges.is_empty()
    };
    plain(p)
        && plain(c)
        && p.start == c.start
        && p.end == c.end
        && p.prot == c.prot
        && flags(p) == flags(c)
}

// ---- collect (dump) ----

/// Add `[a, a + 4096)` to sorted `ranges`, merging with the last one.
fn push_page(ranges: &mut Vec<(u64, u64)>, a: u64) {
    match ranges.last_mut() {
        Some(r) if r.1 == a => r.1 += 4096,
        _ => ranges.push((a, a + 4096)),
    }
}

/// The area of `p` that starts at `start` (its areas are sorted).
fn area_at(p: &Process, start: u64) -> Option<&Vma> {
    let i = p.vmas.partition_point(|v| v.start < start);
    p.vmas.get(i).filter(|v| v.start == start)
}

/// The pages of `child` (host PID) that are its parent's own frames, in the areas both
/// have identical.
fn shared_pages(parent: &Process, child: &Process) -> DumpResult<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let pairs: Vec<&Vma> = child
        .vmas
        .iter()
        .filter(|c| c.pages_present > 0)
        .filter(|c| area_at(parent, c.start).is_some_and(|p| inheritable(p, c)))
        .collect();
    if pairs.is_empty() {
        return Ok(ranges);
    }
    let pm_c = procfs::Pagemap::open(child.pid)?;
    let pm_p = procfs::Pagemap::open(parent.pid)?;
    const CHUNK: u64 = 1 << 16; // pages per pagemap read
    let (mut ec, mut ep) = (Vec::new(), Vec::new());
    for v in pairs {
        // Ranges never span two areas: each lies in one the parent has identical.
        let mut in_area = Vec::new();
        let mut addr = v.start;
        while addr < v.end {
            let end = v.end.min(addr + CHUNK * 4096);
            ec.clear();
            ep.clear();
            pm_c.read(addr, end, &mut ec)?;
            pm_p.read(addr, end, &mut ep)?;
            for (i, (c, p)) in ec.iter().zip(&ep).enumerate() {
                let pfn = c & PFN_MASK;
                if c & PM_PRESENT != 0 && p & PM_PRESENT != 0 && pfn != 0 && pfn == p & PFN_MASK {
                    push_page(&mut in_area, addr + i as u64 * 4096);
                }
            }
            addr = end;
        }
        ranges.append(&mut in_area);
    }
    Ok(ranges)
}

/// `runs` without the pages of `ranges` (sorted, not overlapping).
pub(crate) fn runs_without(runs: Vec<Run>, ranges: &[(u64, u64)]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let end = r.addr + r.pages * 4096;
        let mut a = r.addr;
        let first = ranges.partition_point(|x| x.1 <= a);
        for x in ranges[first..].iter().take_while(|x| x.0 < end) {
            if x.0 > a {
                out.push(Run {
                    addr: a,
                    pages: (x.0 - a) / 4096,
                    ..r
                });
            }
            a = a.max(x.1);
        }
        if a < end {
            out.push(Run {
                addr: a,
                pages: (end - a) / 4096,
                ..r
            });
        }
    }
    out
}

/// `runs` with the pages of `ranges` (sorted, not overlapping) kept even if all zero:
/// a child inherits them only if the parent has them.
pub(crate) fn runs_keeping(runs: Vec<Run>, ranges: &[(u64, u64)]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let end = r.addr + r.pages * 4096;
        let mut a = r.addr;
        let first = ranges.partition_point(|x| x.1 <= a);
        for x in ranges[first..].iter().take_while(|x| x.0 < end) {
            if x.0 > a {
                out.push(Run {
                    addr: a,
                    pages: (x.0 - a) / 4096,
                    ..r
                });
                a = x.0;
            }
            let b = x.1.min(end);
            out.push(Run {
                addr: a,
                pages: (b - a) / 4096,
                skip_zero: false,
            });
            a = b;
        }
        if a < end {
            out.push(Run {
                addr: a,
                pages: (end - a) / 4096,
                ..r
            });
        }
    }
    out
}

/// Find, for each process of the frozen tree (host PIDs, a parent before its
/// children), the pages it shares with its parent (`Process::cow_from_parent`), and
/// leave them out of its page runs (`runs`: by PID).
pub(crate) fn find_shared(
    processes: &mut [Process],
    runs: &mut [(i32, Vec<Run>)],
) -> DumpResult<()> {
    for i in 0..processes.len() {
        let (before, rest) = processes.split_at_mut(i);
        let child = &mut rest[0];
        if child.is_zombie() {
            continue;
        }
        let Some(parent) = before
            .iter()
            .find(|q| q.pid == child.ppid && !q.is_zombie())
        else {
            continue;
        };
        let ranges = shared_pages(parent, child)?;
        if ranges.is_empty() {
            continue;
        }
        if let Some((_, r)) = runs.iter_mut().find(|(pid, _)| *pid == child.pid) {
            *r = runs_without(std::mem::take(r), &ranges);
        }
        child.cow_from_parent = ranges;
    }
    // Each parent stores the pages its children inherit even where they are all zero.
    for p in processes.iter() {
        let mut inherited: Vec<(u64, u64)> = processes
            .iter()
            .filter(|c| c.ppid == p.pid && !c.is_zombie())
            .flat_map(|c| c.cow_from_parent.iter().copied())
            .collect();
        if inherited.is_empty() {
            continue;
        }
        inherited.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in inherited {
            match merged.last_mut() {
                Some(m) if a <= m.1 => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        if let Some((_, r)) = runs.iter_mut().find(|(pid, _)| *pid == p.pid) {
            *r = runs_keeping(std::mem::take(r), &merged);
        }
    }
    Ok(())
}

// ---- checks (plan) ----

/// The parent of `procs[i]` if it inherits pages from it: a live process before it.
pub(crate) fn parent_of(procs: &[Process], i: usize) -> Option<usize> {
    let c = &procs[i];
    procs[..i]
        .iter()
        .position(|q| q.pid == c.ppid && !q.is_zombie())
}

/// The ranges of pages `procs[i]` inherits from its parent: sorted, page-aligned,
/// each inside an area the parent has identical (that fork gives it as it is).
pub(crate) fn check_cow(procs: &[Process], i: usize, problems: &mut Vec<Problem>) {
    let c = &procs[i];
    if c.cow_from_parent.is_empty() {
        return;
    }
    let bad = |problems: &mut Vec<Problem>, why: String| {
        check::p(
            problems,
            "malformed",
            format!("process {}: pages shared with its parent: {why}", c.pid),
        );
    };
    let Some(parent) = parent_of(procs, i).filter(|_| !c.is_zombie()) else {
        bad(
            problems,
            "its parent is not a live process before it in the image".into(),
        );
        return;
    };
    let parent = &procs[parent];
    let mut prev = 0;
    for &(a, b) in &c.cow_from_parent {
        if a % 4096 != 0 || b % 4096 != 0 || a >= b || a < prev || b > TASK_SIZE {
            bad(
                problems,
                format!("range {a:#x}-{b:#x} is unaligned, empty or out of order"),
            );
            return;
        }
        prev = b;
        let i = c.vmas.partition_point(|v| v.end <= a);
        let area = c.vmas.get(i).filter(|v| v.start <= a && b <= v.end);
        let same =
            area.is_some_and(|v| area_at(parent, v.start).is_some_and(|p| inheritable(p, v)));
        if !same {
            bad(
                problems,
                format!(
                    "range {a:#x}-{b:#x} is not inside a private anonymous area its parent \
                     has identical"
                ),
            );
            return;
        }
    }
}

// ---- restore (stage) ----

/// Whether the process inherits pages from its parent (is forked after the parent's
/// memory is filled).
pub(crate) fn inherits(p: &Process) -> bool {
    !p.cow_from_parent.is_empty()
}

/// The areas of `p` that hold pages it inherits.
fn kept_areas(p: &Process) -> Vec<&Vma> {
    p.vmas
        .iter()
        .filter(|v| {
            let i = p.cow_from_parent.partition_point(|r| r.1 <= v.start);
            p.cow_from_parent.get(i).is_some_and(|r| r.0 < v.end)
        })
        .collect()
}

/// The areas `map_memory` must not map again in `p`: it has them from its parent.
pub(crate) fn is_kept(p: &Process, v: &Vma) -> bool {
    if !inherits(p) {
        return false;
    }
    let i = p.cow_from_parent.partition_point(|r| r.1 <= v.start);
    p.cow_from_parent.get(i).is_some_and(|r| r.0 < v.end)
}

/// Right after a process is forked from a parent whose memory is no longer the clean
/// stub's: it keeps only the helper area (at `stub`) and the areas holding pages it
/// inherits (identical in the parent), and in those drops every page but the inherited
/// ones (its own come from its page data; those it did not have must read as zeros).
/// Areas that take pages are made writable until `finish_memory`, as `map_memory`
/// maps them.
pub(crate) fn trim_inherited(cx: &mut Ctx<'_>, stub: u64) -> RestoreResult<()> {
    let p = cx.proc_;
    let kept = kept_areas(p);
    let mut keep: Vec<(u64, u64)> = kept.iter().map(|v| (v.start, v.end)).collect();
    keep.push((stub, stub + STUB_SIZE));
    keep.sort_unstable();
    let mut calls = Vec::new();
    let mut at = 0u64;
    for &(a, b) in &keep {
        if a > at {
            calls.push(Call::new("munmap", nr::MUNMAP, [at, a - at, 0, 0, 0, 0]));
        }
        at = at.max(b);
    }
    let end = cx.space_end;
    if at < end {
        calls.push(Call::new("munmap", nr::MUNMAP, [at, end - at, 0, 0, 0, 0]));
    }
    for v in kept {
        let mut a = v.start;
        let first = p.cow_from_parent.partition_point(|r| r.1 <= v.start);
        for r in p.cow_from_parent[first..]
            .iter()
            .take_while(|r| r.0 < v.end)
        {
            if r.0 > a {
                calls.push(drop_pages(a, r.0));
            }
            a = a.max(r.1);
        }
        if a < v.end {
            calls.push(drop_pages(a, v.end));
        }
        if v.pages_present > 0 && v.prot & libc::PROT_WRITE as u32 == 0 {
            calls.push(Call::new(
                "mprotect",
                nr::MPROTECT,
                [
                    v.start,
                    v.len(),
                    u64::from(v.prot | libc::PROT_WRITE as u32),
                    0,
                    0,
                    0,
                ],
            ));
        }
    }
    cx.batch(&BatchArgs::new(), &calls)?;
    Ok(())
}

fn drop_pages(a: u64, b: u64) -> Call {
    Call::new(
        "madvise(MADV_DONTNEED) of pages not inherited",
        nr::MADVISE,
        [a, b - a, libc::MADV_DONTNEED as u64, 0, 0, 0],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, pages: u64) -> Run {
        Run {
            addr,
            pages,
            skip_zero: true,
        }
    }

    #[test]
    fn runs_lose_exactly_the_shared_pages() {
        let runs = vec![run(0x10000, 8), run(0x20000, 2)];
        let got = runs_without(runs, &[(0x11000, 0x13000), (0x15000, 0x21000)]);
        let got: Vec<(u64, u64)> = got.iter().map(|r| (r.addr, r.pages)).collect();
        assert_eq!(got, vec![(0x10000, 1), (0x13000, 2), (0x21000, 1)]);
        let all = runs_without(vec![run(0x10000, 4)], &[(0x10000, 0x14000)]);
        assert!(all.is_empty());
        let none = runs_without(vec![run(0x10000, 4)], &[(0x20000, 0x24000)]);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn runs_keep_zero_pages_where_children_inherit() {
        let runs = vec![run(0x10000, 8)];
        let got = runs_keeping(runs, &[(0x11000, 0x13000), (0x17000, 0x20000)]);
        let got: Vec<(u64, u64, bool)> =
            got.iter().map(|r| (r.addr, r.pages, r.skip_zero)).collect();
        assert_eq!(
            got,
            vec![
                (0x10000, 1, true),
                (0x11000, 2, false),
                (0x13000, 4, true),
                (0x17000, 1, false)
            ]
        );
    }

    fn anon(start: u64, end: u64, flags: &[&str]) -> Vma {
        Vma {
            start,
            end,
            prot: 3,
            shared: false,
            offset: 0,
            kind: VmaKind::Anon,
            name: Vec::new(),
            vmflags: flags.iter().map(|s| s.to_string()).collect(),
            pages_present: 1,
            guard_ranges: Vec::new(),
            shmem_id: 0,
        }
    }

    #[test]
    fn only_areas_fork_gives_as_they_are_are_inherited() {
        let p = anon(0x10000, 0x20000, &["rd", "wr", "lo"]);
        assert!(inheritable(&p, &anon(0x10000, 0x20000, &["rd", "wr"])));
        assert!(!inheritable(&p, &anon(0x10000, 0x21000, &["rd", "wr"])));
        assert!(!inheritable(
            &p,
            &anon(0x10000, 0x20000, &["rd", "wr", "hg"])
        ));
        let wiped = anon(0x10000, 0x20000, &["rd", "wr", "wf"]);
        assert!(!inheritable(&wiped, &wiped));
    }

    #[test]
    fn a_child_forked_from_a_built_parent_keeps_only_what_it_inherits() {
        // Areas: K1 (inherits two of its pages), a plain area (not kept), K2 read-only
        // with pages (inherits all of it).
        let k1 = anon(0x10000, 0x20000, &["rd", "wr"]);
        let plain = anon(0x30000, 0x31000, &["rd", "wr"]);
        let mut k2 = anon(0x40000, 0x42000, &["rd"]);
        k2.prot = libc::PROT_READ as u32;
        let child = proc_(
            2,
            1,
            vec![k1, plain, k2],
            vec![(0x11000, 0x13000), (0x40000, 0x42000)],
        );
        let stub = 0x7000_0000;
        let rec = crate::remote::Recorder::new(2);
        let mut cx = Ctx::double(&rec, stub, &child);
        trim_inherited(&mut cx, stub).expect("trim");
        let calls: Vec<(u64, [u64; 3])> = rec
            .calls()
            .iter()
            .map(|c| (c.nr, [c.args[0], c.args[1], c.args[2]]))
            .collect();
        let after = stub + STUB_SIZE;
        let dontneed = libc::MADV_DONTNEED as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        assert_eq!(
            calls,
            vec![
                (nr::MUNMAP, [0, 0x10000, 0]),
                (nr::MUNMAP, [0x20000, 0x40000 - 0x20000, 0]),
                (nr::MUNMAP, [0x42000, stub - 0x42000, 0]),
                (nr::MUNMAP, [after, TASK_SIZE - after, 0]),
                (nr::MADVISE, [0x10000, 0x1000, dontneed]),
                (nr::MADVISE, [0x13000, 0xd000, dontneed]),
                (nr::MPROTECT, [0x40000, 0x2000, rw]),
            ]
        );
    }

    fn proc_(pid: i32, ppid: i32, vmas: Vec<Vma>, cow: Vec<(u64, u64)>) -> Process {
        Process {
            pid,
            ppid,
            vmas,
            cow_from_parent: cow,
            ..Default::default()
        }
    }

    #[test]
    fn plan_refuses_ranges_outside_identical_areas() {
        let a = anon(0x10000, 0x20000, &["rd", "wr"]);
        let b = anon(0x30000, 0x40000, &["rd", "wr"]);
        let parent = proc_(1, 0, vec![a.clone()], vec![]);
        let ok = proc_(2, 1, vec![a.clone(), b.clone()], vec![(0x11000, 0x12000)]);
        let mut problems = Vec::new();
        check_cow(&[parent.clone(), ok], 1, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        for cow in [
            vec![(0x31000, 0x32000)],
            vec![(0x11000, 0x11800)],
            vec![(0x13000, 0x14000), (0x11000, 0x12000)],
            vec![(0x1f000, 0x31000)],
        ] {
            let c = proc_(2, 1, vec![a.clone(), b.clone()], cow.clone());
            let mut problems = Vec::new();
            check_cow(&[parent.clone(), c], 1, &mut problems);
            assert_eq!(problems.len(), 1, "{cow:?}");
        }
        // No parent in the image.
        let orphan = proc_(3, 9, vec![a.clone()], vec![(0x11000, 0x12000)]);
        let mut problems = Vec::new();
        check_cow(&[parent, orphan], 1, &mut problems);
        assert_eq!(problems.len(), 1);
    }
}
