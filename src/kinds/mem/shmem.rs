//! Shared memory: shared anonymous objects (one for the tree) and System V segments
//! attached to the processes.

use super::pages::{MAX_RUN_PAGES, Run};
use crate::error::DumpResult as Result;
use crate::model::Vma;
use crate::sys::proc as procfs;

// ---- collect (dump) ----

/// Pages of shared-memory objects already stored (by inode, page offset): an object
/// shared by several processes of the tree is stored once.
pub(crate) type SharedSeen = std::collections::BTreeMap<u64, std::collections::BTreeSet<u64>>;

/// Pages of a MAP_SHARED|MAP_ANONYMOUS area: everything its object holds in the mapped
/// range (found with SEEK_DATA, so pages written only through another mapping count).
pub(crate) fn shmem_pages(
    pid: i32,
    vma: &mut Vma,
    runs: &mut Vec<Run>,
    seen: &mut SharedSeen,
) -> Result<()> {
    let (ino, ranges) = procfs::shmem_data_ranges(pid, vma.start, vma.end, vma.offset, vma.len())?;
    vma.shmem_id = ino;
    let done = seen.entry(ino).or_default();
    let first = runs.len();
    for (a, b) in ranges {
        let mut off = a;
        while off < b {
            if done.insert(off) {
                let addr = vma.start + (off - vma.offset);
                vma.pages_present += 1;
                let n = runs.len();
                match runs.last_mut() {
                    Some(r)
                        if n > first
                            && r.addr + r.pages * 4096 == addr
                            && r.pages < MAX_RUN_PAGES =>
                    {
                        r.pages += 1
                    }
                    _ => runs.push(Run {
                        addr,
                        pages: 1,
                        skip_zero: true,
                    }),
                }
            }
            off += 4096;
        }
    }
    Ok(())
}
