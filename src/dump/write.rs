//! Write: metadata first, then page data streamed from the frozen task.

use std::io::Write;

use super::collect::Collected;
use super::{DumpStats, Result};
use crate::image::{FLAG_REQUIRED, ImageWriter, tag};
use crate::sys::mem::RemoteMem;

const PAGE: usize = 4096;

fn is_zero(page: &[u8]) -> bool {
    // Compare in u64 words; the compiler vectorises this.
    page.chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([1; 8])) == 0)
}

pub(crate) fn write_image<W: Write>(
    c: &Collected,
    out: W,
    stats: &mut DumpStats,
    progress: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
) -> Result<W> {
    let total: u64 = c
        .runs
        .iter()
        .flat_map(|(_, r)| r.iter())
        .map(|r| r.pages * PAGE as u64)
        .sum();
    let mut done = 0u64;
    let mut w = ImageWriter::new(out)?;
    w.write_meta(tag::CHECKPOINT, &c.ckpt)?;
    // Contents of deleted files and memfds, once per file, before all page data.
    // A file only mapped (its descriptor closed) is read through its map_files entry.
    let mut done_files = std::collections::BTreeSet::new();
    let mut chunk = Vec::new();
    for p in &c.ckpt.processes {
        let hp = c.host_pid(p.pid);
        let from_fds = p.fds.iter().filter_map(|f| match f.kind {
            crate::model::FdKind::Memfd { data, .. }
            | crate::model::FdKind::DeletedFile { data, .. }
                if f.shared_with.is_none() =>
            {
                Some((data, format!("/proc/{hp}/fd/{}", f.fd)))
            }
            _ => None,
        });
        let from_maps = p.vmas.iter().filter_map(|v| match v.kind {
            crate::model::VmaKind::MemfdMap { data, .. }
            | crate::model::VmaKind::DeletedMap { data, .. } => Some((
                data,
                format!("/proc/{hp}/map_files/{:x}-{:x}", v.start, v.end),
            )),
            _ => None,
        });
        for (data, path) in from_fds.chain(from_maps) {
            if !done_files.insert(data) {
                continue;
            }
            let mut file = std::fs::File::open(&path)
                .map_err(|e| crate::sys::SysError::io(format!("open {path}"), e))?;
            chunk.resize(4 << 20, 0);
            let mut first = true;
            loop {
                let n = std::io::Read::read(&mut file, &mut chunk)
                    .map_err(|e| crate::sys::SysError::io(format!("read {path}"), e))?;
                // An empty file still gets one (empty) record: restore wants its contents.
                if n == 0 && !first {
                    break;
                }
                first = false;
                w.write_record(tag::FILE_DATA, FLAG_REQUIRED, data, &chunk[..n], false)?;
                if n == 0 {
                    break;
                }
            }
        }
    }
    let mut buf = Vec::new();
    for (pid, runs) in &c.runs {
        let mem = RemoteMem::open(c.host_pid(*pid))?;
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, *pid as u64, &[], false)?;
        for run in runs {
            let len = run.pages as usize * PAGE;
            if let Some(p) = progress {
                p(done, total);
            }
            done += len as u64;
            buf.resize(len, 0);
            mem.read(run.addr, &mut buf[..len])?;
            if !run.skip_zero {
                w.write_pages(run.addr, &buf[..len])?;
                stats.pages_written += run.pages;
                continue;
            }
            // Split the run around all-zero pages, which restore gets for free.
            let mut i = 0;
            let n = run.pages as usize;
            while i < n {
                if is_zero(&buf[i * PAGE..(i + 1) * PAGE]) {
                    stats.zero_pages_skipped += 1;
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < n && !is_zero(&buf[j * PAGE..(j + 1) * PAGE]) {
                    j += 1;
                }
                w.write_pages(run.addr + (i * PAGE) as u64, &buf[i * PAGE..j * PAGE])?;
                stats.pages_written += (j - i) as u64;
                i = j;
            }
        }
    }
    if let Some(p) = progress {
        p(total, total);
    }
    stats.image_bytes = w.offset() + 32 + 16 + 8;
    Ok(w.finish()?)
}
