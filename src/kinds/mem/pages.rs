//! Page data: which pages exist (pagemap, PAGEMAP_SCAN) and how they are written into a
//! new process (userfaultfd copy, process_vm_writev).

use crate::error::DumpResult as Result;
use crate::model::{Vma, VmaKind};
use crate::sys::proc::{
    self as procfs, PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
    PM_FILE, PM_GUARD_REGION, PM_PRESENT, PM_SWAP,
};

// ---- collect (dump) ----

/// A run of pages whose contents go into the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) addr: u64,
    pub(crate) pages: u64,
    /// All-zero pages need not be stored (anonymous memory reads back as zeros).
    pub(crate) skip_zero: bool,
}

/// Pages per run (and so per page record) at most: 4 MiB. (Measured: 1 MiB runs, which
/// would keep the runs in flight between dump's two threads in the CPU caches, were no
/// faster on this VM, and cost more records.)
pub(crate) const MAX_RUN_PAGES: u64 = 1024;

/// [`vma_pages`] from the ranges `PAGEMAP_SCAN` found: the same pages as the pagemap
/// words give, but pages mapped to the zero page (read, never written) are not read at
/// all when zero pages are skipped anyway.
fn scanned_pages(
    vma: &mut Vma,
    ranges: &[procfs::ScanRange],
    skip_zero: bool,
    runs: &mut Vec<Run>,
) {
    let anon = matches!(vma.kind, VmaKind::Anon);
    let mut guard: Option<(u64, u64)> = None;
    let mut run: Option<Run> = None;
    for r in ranges {
        let c = r.categories;
        if c & PAGE_IS_GUARD != 0 {
            match &mut guard {
                Some(g) if g.1 == r.start => g.1 = r.end,
                _ => {
                    if let Some(g) = guard.take() {
                        vma.guard_ranges.push(g);
                    }
                    guard = Some((r.start, r.end));
                }
            }
            continue;
        }
        // Private file mappings: only pages copied on write (anonymous now).
        let wanted = c & PAGE_IS_SWAPPED != 0
            || (c & PAGE_IS_PRESENT != 0 && (anon || c & PAGE_IS_FILE == 0));
        if !wanted {
            continue;
        }
        vma.pages_present += (r.end - r.start) / 4096;
        if skip_zero && c & PAGE_IS_PFNZERO != 0 && c & PAGE_IS_SWAPPED == 0 {
            continue;
        }
        let mut a = r.start;
        while a < r.end {
            match &mut run {
                Some(x) if x.addr + x.pages * 4096 == a && x.pages < MAX_RUN_PAGES => {
                    let n = (MAX_RUN_PAGES - x.pages).min((r.end - a) / 4096);
                    x.pages += n;
                    a += n * 4096;
                }
                _ => {
                    if let Some(x) = run.take() {
                        runs.push(x);
                    }
                    let n = MAX_RUN_PAGES.min((r.end - a) / 4096);
                    run = Some(Run {
                        addr: a,
                        pages: n,
                        skip_zero,
                    });
                    a += n * 4096;
                }
            }
        }
    }
    runs.extend(run);
    vma.guard_ranges.extend(guard);
}

/// Decide which pages of a VMA go into the image and where its guard regions are.
pub(crate) fn vma_pages(pm: &procfs::Pagemap, vma: &mut Vma, runs: &mut Vec<Run>) -> Result<()> {
    let (want, skip_zero): (fn(u64) -> bool, bool) = match (&vma.kind, vma.shared) {
        (VmaKind::Anon, _) => (|e| e & (PM_PRESENT | PM_SWAP) != 0, true),
        // Private file mappings: only pages that were copied on write (anonymous now).
        (VmaKind::File { .. } | VmaKind::MemfdMap { .. } | VmaKind::DeletedMap { .. }, false) => (
            |e| (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0,
            false,
        ),
        _ => return Ok(()),
    };
    // PAGE_IS_FILE only where it decides something (an anonymous area has no file
    // pages): to tell it, the kernel reads the struct page behind every present entry,
    // which made the walk of 1 GiB of anonymous memory six times slower (22-29 ms
    // against 3.4-4.4).
    let file = if matches!(vma.kind, VmaKind::Anon) {
        0
    } else {
        PAGE_IS_FILE
    };
    if let Some(ranges) = pm.scan(
        vma.start,
        vma.end,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED | file | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
    )? {
        scanned_pages(vma, &ranges, skip_zero, runs);
        return Ok(());
    }
    // Without PAGEMAP_SCAN: one pagemap word per page.
    const CHUNK: u64 = 1 << 16; // pages per pagemap read
    let mut entries = Vec::new();
    let mut addr = vma.start;
    let mut run: Option<Run> = None;
    let mut guard: Option<(u64, u64)> = None;
    while addr < vma.end {
        let end = vma.end.min(addr + CHUNK * 4096);
        entries.clear();
        pm.read(addr, end, &mut entries)?;
        for (i, e) in entries.iter().enumerate() {
            let a = addr + i as u64 * 4096;
            if e & PM_GUARD_REGION != 0 {
                match &mut guard {
                    Some(g) if g.1 == a => g.1 = a + 4096,
                    _ => {
                        if let Some(g) = guard.take() {
                            vma.guard_ranges.push(g);
                        }
                        guard = Some((a, a + 4096));
                    }
                }
            }
            if e & PM_GUARD_REGION == 0 && want(*e) {
                vma.pages_present += 1;
                match &mut run {
                    Some(r) if r.addr + r.pages * 4096 == a && r.pages < MAX_RUN_PAGES => {
                        r.pages += 1
                    }
                    _ => {
                        if let Some(r) = run.take() {
                            runs.push(r);
                        }
                        run = Some(Run {
                            addr: a,
                            pages: 1,
                            skip_zero,
                        });
                    }
                }
            }
        }
        addr = end;
    }
    runs.extend(run);
    vma.guard_ranges.extend(guard);
    Ok(())
}
