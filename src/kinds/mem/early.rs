//! VmFlags read before the freeze (`ckpt migrate`'s final dump): /proc/PID/smaps walks
//! the page tables of every area (about 20 ms per GiB resident), the one step of the
//! frozen window that grew with memory on the source. It is read while the tree still
//! runs, after an even write-lock count of each process's address space
//! (`sys::mmseq`); at the freeze the count is read again, and a process whose count,
//! address space and exec are the same keeps the flags of that read: nothing that
//! changes an area's flags (or the list of areas) can have happened in between,
//! since each of those takes the write lock the count counts. Any other process (a
//! count that moved, a process new to the tree, no reader) has its smaps read in the
//! window as before; so does one whose /proc/PID/maps at the freeze does not list the
//! very areas of the early read (which the count rules out: a second guard).

use crate::sys::mmseq::{MmSeq, MmSeqReader};
use crate::sys::proc::{self as procfs, MapEntry};
use std::collections::BTreeMap;

/// The early reads of a tree's processes, and the reader that reads the counts again.
pub struct EarlySmaps {
    reader: MmSeqReader,
    at: BTreeMap<i32, (MmSeq, Vec<MapEntry>)>,
}

impl std::fmt::Debug for EarlySmaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlySmaps")
            .field("processes", &self.at.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EarlySmaps {
    /// The smaps of every process of the tree rooted at `root` (which runs), each read
    /// after an even count; `Err(why)` where the counts cannot be read here (the dump
    /// then reads smaps in the window, as without this).
    pub fn read(root: i32) -> Result<EarlySmaps, String> {
        if skipped() {
            return Err("CKPT_EARLY_SMAPS=never (testing)".into());
        }
        let reader = MmSeqReader::new()?;
        let counts = reader.read().map_err(|e| e.to_string())?;
        let mut at = BTreeMap::new();
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            todo.extend(procfs::children(pid).unwrap_or_default());
            let Some(c) = counts.get(&pid).filter(|c| c.settled()) else {
                continue;
            };
            // A process that went meanwhile is simply not in the map.
            if let Ok(s) = procfs::smaps(pid) {
                at.insert(pid, (*c, s));
            }
        }
        Ok(EarlySmaps { reader, at })
    }

    /// How many processes were read.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Called with the tree frozen, before ckpt changes anything in it: the early reads
    /// still true of `pids`, by PID. A failure to read the counts again means none.
    pub fn still_true(&self, pids: &[i32]) -> BTreeMap<i32, Vec<MapEntry>> {
        let now = match self.reader.read() {
            Ok(n) => n,
            Err(_) => return BTreeMap::new(),
        };
        let forced = forced_reuse();
        pids.iter()
            .filter_map(|p| {
                let (then, smaps) = self.at.get(p)?;
                let same = now.get(p).is_some_and(|n| n.settled() && n == then);
                (same || forced).then(|| (*p, smaps.clone()))
            })
            .collect()
    }
}

/// The flags of the early read `early` given to `maps` (read at the freeze), if both
/// list the same areas.
pub(crate) fn take_early(pid: i32, early: Vec<MapEntry>) -> Option<Vec<MapEntry>> {
    let mut maps = procfs::maps(pid).ok()?;
    if forced_reuse() {
        // (The test hook: the flags of the early area at the same start, whatever
        // changed, so that the second guard does not hide a detector that says yes.)
        for m in maps.iter_mut() {
            if let Some(e) = early.iter().find(|e| e.start == m.start) {
                m.vmflags = e.vmflags.clone();
            }
        }
        return Some(maps);
    }
    procfs::merge_vmflags(pid, &mut maps, early).ok()?;
    Some(maps)
}

/// Test hook (feature `fault-injection`): CKPT_EARLY_SMAPS=always takes every early
/// read as still true, the counts and the areas' list ignored, to show that the tests
/// of this detector fail without it.
#[cfg(feature = "fault-injection")]
fn forced_reuse() -> bool {
    std::env::var("CKPT_EARLY_SMAPS").is_ok_and(|v| v == "always")
}

#[cfg(not(feature = "fault-injection"))]
fn forced_reuse() -> bool {
    false
}

/// Test hook (feature `fault-injection`): CKPT_EARLY_SMAPS=never reads no early smaps
/// (the final dump reads smaps frozen, as before the early read existed).
#[cfg(feature = "fault-injection")]
fn skipped() -> bool {
    std::env::var("CKPT_EARLY_SMAPS").is_ok_and(|v| v == "never")
}

#[cfg(not(feature = "fault-injection"))]
fn skipped() -> bool {
    false
}
