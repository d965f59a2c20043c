//! /proc/PID/pagemap: one word per page ([`Pagemap::read`], the `PM_*` bits) or ranges
//! of pages by category ([`Pagemap::scan`], the `PAGEMAP_SCAN` ioctl, `PAGE_IS_*`).

use std::fs;

use crate::sys::{Result, SysError};

/// Pagemap bits.
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;
pub const PM_GUARD_REGION: u64 = 1 << 58;

/// Reader of /proc/PID/pagemap entries.
pub struct Pagemap {
    f: fs::File,
}

impl Pagemap {
    pub fn open(pid: i32) -> Result<Self> {
        let f = fs::File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| SysError::io(format!("open /proc/{pid}/pagemap"), e))?;
        Ok(Self { f })
    }

    /// Entries for the pages of [start, end) (page aligned), appended to `out`.
    pub fn read(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let n = ((end - start) / 4096) as usize;
        let mut buf = vec![0u8; n * 8];
        self.f
            .read_exact_at(&mut buf, start / 4096 * 8)
            .map_err(|e| SysError::io(format!("read pagemap at {start:#x}"), e))?;
        out.extend(
            buf.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        Ok(())
    }

    /// The pages of [start, end) that have any of the categories `anyof` (`PAGE_IS_*`),
    /// as ranges of pages with the same categories (of those in `report`), in address
    /// order: the `PAGEMAP_SCAN` ioctl (Linux 6.7; `PAGE_IS_GUARD` 6.15), which walks
    /// the page tables without a word per page. `None` if this kernel cannot do it.
    pub fn scan(
        &self,
        start: u64,
        end: u64,
        anyof: u64,
        report: u64,
    ) -> Result<Option<Vec<ScanRange>>> {
        use linux_raw_sys::btrfs::{page_region, pm_scan_arg};
        use std::os::fd::AsRawFd;
        // _IOWR('f', 16, struct pm_scan_arg) of linux/fs.h: linux-raw-sys has the
        // structs (in its `btrfs` module, which holds linux/fs.h) but not the ioctl
        // number, libc neither.
        const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
        const BATCH: usize = 512;
        let mut out = Vec::new();
        let mut regions = [page_region {
            start: 0,
            end: 0,
            categories: 0,
        }; BATCH];
        let mut at = start;
        while at < end {
            let mut arg = pm_scan_arg {
                size: std::mem::size_of::<pm_scan_arg>() as u64,
                flags: 0,
                start: at,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: BATCH as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: 0,
                category_anyof_mask: anyof,
                return_mask: report,
            };
            // SAFETY: `arg` is a pm_scan_arg of the size it declares, and its `vec`
            // points to `regions`, BATCH page_region structs that we own mutably for the
            // call; the kernel writes only there and to `arg`.
            let n = unsafe {
                libc::ioctl(
                    self.f.as_raw_fd(),
                    PAGEMAP_SCAN,
                    &mut arg as *mut pm_scan_arg,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    // Not this kernel's (no ioctl, or an unknown category).
                    Some(libc::ENOTTY | libc::EINVAL) if out.is_empty() && at == start => Ok(None),
                    _ => Err(SysError::io(format!("PAGEMAP_SCAN at {at:#x}"), e)),
                };
            }
            let n = (n as usize).min(BATCH);
            out.extend(regions[..n].iter().map(|r| ScanRange {
                start: r.start,
                end: r.end,
                categories: r.categories,
            }));
            let walk_end = arg.walk_end;
            if walk_end <= at {
                return Err(SysError::Other(format!(
                    "PAGEMAP_SCAN made no progress at {at:#x}"
                )));
            }
            at = walk_end;
        }
        Ok(Some(out))
    }
}

/// A range of pages found by [`Pagemap::scan`], with the categories it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRange {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `PAGEMAP_SCAN` page categories (linux/fs.h, from linux-raw-sys).
pub const PAGE_IS_FILE: u64 = linux_raw_sys::btrfs::PAGE_IS_FILE as u64;
pub const PAGE_IS_PRESENT: u64 = linux_raw_sys::btrfs::PAGE_IS_PRESENT as u64;
pub const PAGE_IS_SWAPPED: u64 = linux_raw_sys::btrfs::PAGE_IS_SWAPPED as u64;
pub const PAGE_IS_PFNZERO: u64 = linux_raw_sys::btrfs::PAGE_IS_PFNZERO as u64;
pub const PAGE_IS_GUARD: u64 = linux_raw_sys::btrfs::PAGE_IS_GUARD as u64;

#[cfg(test)]
mod tests {
    use super::*;

    /// PAGEMAP_SCAN finds exactly the pages the pagemap words describe: written pages,
    /// pages read but never written (the zero page: present, and marked as such), guard
    /// regions; never-touched pages not at all.
    #[test]
    fn scan_agrees_with_the_pagemap_words() {
        const N: usize = 64;
        // SAFETY: a private anonymous mapping of our own, used only by this test and
        // unmapped at its end; reads and writes stay inside it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                N * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let p = base as *mut u8;
        // SAFETY: every offset is inside the mapping.
        unsafe {
            libc::madvise(base, N * 4096, libc::MADV_NOHUGEPAGE);
            for i in (0..10).chain(20..30) {
                p.add(i * 4096).write_volatile(1);
            }
            for i in 40..45 {
                std::hint::black_box(p.add(i * 4096).read_volatile());
            }
        }
        // SAFETY: pages 50..53 are inside the mapping.
        let guard = unsafe {
            libc::madvise(
                base.cast::<u8>().add(50 * 4096).cast(),
                3 * 4096,
                linux_raw_sys::general::MADV_GUARD_INSTALL as i32,
            )
        } == 0;
        let start = base as u64;
        let end = start + (N * 4096) as u64;
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let mut words = Vec::new();
        pm.read(start, end, &mut words).unwrap();
        let scanned = pm
            .scan(
                start,
                end,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
            )
            .unwrap();
        // Dump leaves PAGE_IS_FILE out for anonymous areas (it is slow to tell): the
        // ranges must be the same.
        let without_file = pm
            .scan(
                start,
                end,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
            )
            .unwrap();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, N * 4096) };
        let Some(ranges) = scanned else {
            eprintln!("this kernel has no PAGEMAP_SCAN: nothing to compare");
            return;
        };
        assert_eq!(without_file.as_ref(), Some(&ranges));
        let cat = |i: usize| {
            let a = start + (i * 4096) as u64;
            ranges
                .iter()
                .find(|r| r.start <= a && a < r.end)
                .map_or(0, |r| r.categories)
        };
        for (i, w) in words.iter().enumerate() {
            let c = cat(i);
            assert_eq!(
                w & PM_PRESENT != 0,
                c & PAGE_IS_PRESENT != 0,
                "page {i}: present"
            );
            assert_eq!(
                w & PM_SWAP != 0,
                c & PAGE_IS_SWAPPED != 0,
                "page {i}: swapped"
            );
            assert_eq!(
                w & PM_GUARD_REGION != 0,
                c & PAGE_IS_GUARD != 0,
                "page {i}: guard"
            );
        }
        let present: Vec<usize> = (0..N).filter(|&i| cat(i) & PAGE_IS_PRESENT != 0).collect();
        let expect: Vec<usize> = (0..10).chain(20..30).chain(40..45).collect();
        assert_eq!(present, expect);
        assert!((40..45).all(|i| cat(i) & PAGE_IS_PFNZERO != 0));
        assert!((0..10).all(|i| cat(i) & PAGE_IS_PFNZERO == 0));
        if guard {
            assert!((50..53).all(|i| cat(i) & PAGE_IS_GUARD != 0));
        }
    }
}
