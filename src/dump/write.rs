//! Write: metadata first, then page data streamed from the frozen task.

use std::io::Write;

use super::collect::Collected;
use super::{DumpStats, Result};
use crate::image::{FLAG_REQUIRED, ImageWriter, tag};
use crate::sys::mem::{PageBuf, PageSlot, RemoteMem};

const PAGE: usize = 4096;

fn is_zero(page: &[u8]) -> bool {
    // Compare in u64 words; the compiler vectorises this.
    page.chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([1; 8])) == 0)
}

/// How many pieces the reading thread may be ahead of the writer.
const AHEAD: usize = 3;

/// Buffers in flight between the two threads: [`AHEAD`] in the channel, one being
/// written, one being read.
const SLOTS: usize = AHEAD + 2;

/// Pages of the pieces the reading thread hands over: runs are read in pieces of this
/// size, so that writing one piece overlaps reading the next. A small dump (a few MiB)
/// would otherwise read its one big run whole before writing a byte of it; big dumps
/// keep whole runs (as big as [`MAX_RUN_PAGES`], larger pieces are no faster), since
/// each piece costs a record and two system calls.
///
/// [`MAX_RUN_PAGES`]: crate::kinds::mem::pages::MAX_RUN_PAGES
fn piece_pages(total_pages: u64) -> u64 {
    (total_pages / 16)
        .next_power_of_two()
        .clamp(64, crate::kinds::mem::pages::MAX_RUN_PAGES)
}

/// What the reading thread hands to the writer, in image order.
enum Chunk {
    /// The pages that follow are this process's.
    Process(i32),
    /// A run of pages (or a piece of one) read into the first `len` bytes of `buf`,
    /// and the records to write of it (all of it, or what is left around pages that are
    /// all zero), their checksums already computed.
    Run {
        buf: PageSlot,
        len: usize,
        records: Vec<PageRecord>,
        zero_pages: u64,
    },
}

/// A page record, ready to be written.
struct PageRecord {
    tag: u32,
    /// Address of its first page.
    at: u64,
    pages: u64,
    body: Body,
    sum: u64,
}

enum Body {
    /// Bytes [i, j) of the run's buffer.
    InRun(usize, usize),
    /// Compressed (`PAGES_LZ4`, `PAGES_ZSTD`).
    Packed(Vec<u8>),
}

/// The records of `data` (a run of `n` pages read at `addr`, at byte `base` of its
/// buffer), appended to `out`: the pieces to store, each compressed if asked, with their
/// checksums. Returns how many zero pages were left out.
fn run_records(
    addr: u64,
    data: &[u8],
    base: usize,
    n: usize,
    skip_zero: bool,
    compress: super::Compress,
    out: &mut Vec<PageRecord>,
) -> Result<u64> {
    let (pieces, zero_pages) = if skip_zero {
        nonzero_pieces(data, n)
    } else {
        (vec![(0, n)], 0)
    };
    for (i, j) in pieces {
        let at = addr + (i * PAGE) as u64;
        let bytes = &data[i * PAGE..j * PAGE];
        let packed = match compress {
            super::Compress::None => None,
            super::Compress::Lz4 => Some((tag::PAGES_LZ4, crate::image::compress_pages(bytes))),
            super::Compress::Zstd => Some((
                tag::PAGES_ZSTD,
                crate::image::compress_pages_zstd(bytes, ZSTD_LEVEL)?,
            )),
        };
        // Pages that do not compress are stored as they are (restore then has nothing
        // to expand).
        let packed = packed.filter(|(_, p)| p.len() < bytes.len());
        let (tag, body, sum) = if let Some((tag, packed)) = packed {
            let sum = crate::image::payload_checksum(tag, FLAG_REQUIRED, at, &packed);
            (tag, Body::Packed(packed), sum)
        } else {
            let sum = crate::image::payload_checksum(tag::PAGES, FLAG_REQUIRED, at, bytes);
            (
                tag::PAGES,
                Body::InRun(base + i * PAGE, base + j * PAGE),
                sum,
            )
        };
        out.push(PageRecord {
            tag,
            at,
            pages: (j - i) as u64,
            body,
            sum,
        });
    }
    Ok(zero_pages)
}

/// zstd's default level. Measured on python3 (12.4 MiB of pages): 1.6 MiB against lz4's
/// 3.3 MiB, dump 69 against 42 ms, restore about the same.
const ZSTD_LEVEL: i32 = 3;

/// Part of a run to read into a buffer: `pages` pages at `addr`.
#[derive(Clone, Copy)]
struct Segment {
    addr: u64,
    pages: u64,
    skip_zero: bool,
}

/// The reading thread: every run of every process, read from the frozen tasks into
/// buffers of `piece` pages: a long run in pieces, short runs several to a buffer (one
/// `process_vm_readv`, one hand-over). Stops at the first error (passed on) or when the
/// writer stops listening.
fn read_pages(
    c: &Collected,
    compress: super::Compress,
    piece: u64,
    tx: &std::sync::mpsc::SyncSender<Result<Chunk>>,
    back: &std::sync::mpsc::Receiver<PageSlot>,
) {
    let send = |m: Result<Chunk>| tx.send(m).is_ok();
    // One mapping for all the buffers, made here so that its first fault overlaps the
    // writer's metadata.
    let mut free =
        match PageBuf::new(SLOTS * piece as usize * PAGE).and_then(|b| b.into_slots(SLOTS)) {
            Ok(s) => s,
            Err(e) => {
                send(Err(e.into()));
                return;
            }
        };
    let mut segs: Vec<Segment> = Vec::new();
    for (pid, runs) in &c.runs {
        let mem = match RemoteMem::open(c.host_pid(*pid)) {
            Ok(m) => m,
            Err(e) => {
                send(Err(e.into()));
                return;
            }
        };
        if !send(Ok(Chunk::Process(*pid))) {
            return;
        }
        let mut queued = 0;
        let pieces = runs.iter().flat_map(|run| {
            (0..run.pages.div_ceil(piece)).map(move |k| Segment {
                addr: run.addr + k * piece * PAGE as u64,
                pages: piece.min(run.pages - k * piece),
                skip_zero: run.skip_zero,
            })
        });
        for seg in pieces.map(Some).chain([None]) {
            // A full buffer (or the process's last pages) goes to the writer.
            let full = seg.is_none_or(|s| queued + s.pages > piece);
            if full && !segs.is_empty() {
                // Buffers come back from the writer; when none is free, it is writing.
                let Some(buf) = free.pop().or_else(|| back.recv().ok()) else {
                    return;
                };
                match fill(&mem, buf, &segs, compress) {
                    Ok(chunk) => {
                        if !send(Ok(chunk)) {
                            return;
                        }
                    }
                    Err(e) => {
                        send(Err(e));
                        return;
                    }
                }
                segs.clear();
                queued = 0;
            }
            if let Some(s) = seg {
                queued += s.pages;
                segs.push(s);
            }
        }
    }
}

/// Read `segs` one after the other into `buf`, and make their records. Zero pages are
/// found, and checksums (and compression) computed here, while the pages are in this
/// core's cache: the writer only writes.
fn fill(
    mem: &RemoteMem,
    mut buf: PageSlot,
    segs: &[Segment],
    compress: super::Compress,
) -> Result<Chunk> {
    let ranges: Vec<(u64, usize)> = segs
        .iter()
        .map(|s| (s.addr, s.pages as usize * PAGE))
        .collect();
    let len = mem.read_ranges_into(&ranges, &mut buf)?;
    let data = buf.slice(len)?;
    let mut records = Vec::new();
    let mut zero_pages = 0;
    let mut base = 0;
    for s in segs {
        let n = s.pages as usize;
        let bytes = &data[base..base + n * PAGE];
        zero_pages += run_records(s.addr, bytes, base, n, s.skip_zero, compress, &mut records)?;
        base += n * PAGE;
    }
    Ok(Chunk::Run {
        buf,
        len,
        records,
        zero_pages,
    })
}

/// The page ranges [i, j) of `buf` (`n` pages) that are not all zero, and how many
/// pages are (restore gets those for free).
fn nonzero_pieces(buf: &[u8], n: usize) -> (Vec<(usize, usize)>, u64) {
    let mut pieces = Vec::new();
    let mut zero = 0;
    let mut i = 0;
    while i < n {
        if is_zero(&buf[i * PAGE..(i + 1) * PAGE]) {
            zero += 1;
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && !is_zero(&buf[j * PAGE..(j + 1) * PAGE]) {
            j += 1;
        }
        pieces.push((i, j));
        i = j;
    }
    (pieces, zero)
}

pub(crate) fn write_image<W: Write>(
    c: &Collected,
    out: W,
    stats: &mut DumpStats,
    opts: &super::DumpOptions,
) -> Result<W> {
    let progress = opts.progress.as_deref();
    let total: u64 = c
        .runs
        .iter()
        .flat_map(|(_, r)| r.iter())
        .map(|r| r.pages * PAGE as u64)
        .sum();
    let mut done = 0u64;
    let piece = piece_pages(total / PAGE as u64);
    // Pages are read from the frozen tasks on a second thread, started first so that
    // it reads while this one writes the metadata. It also finds the zero pages and
    // computes the checksums (and compresses) while a piece is in its cache; this
    // thread only writes.
    std::thread::scope(|scope| -> Result<W> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk>>(AHEAD);
        let (back, back_rx) = std::sync::mpsc::channel::<PageSlot>();
        scope.spawn(move || read_pages(c, opts.compress, piece, &tx, &back_rx));
        // An incremental image needs its parent: a reader that does not know that
        // refuses it instead of restoring its unchanged pages as zeros.
        let mut required = if c.ckpt.parent.is_some() {
            crate::image::FEATURE_PARENT
        } else {
            0
        };
        // So does one whose waiting TCP connections hold bytes (restored without them
        // by a reader that ignores the field).
        let waiting_bytes = c.ckpt.processes.iter().flat_map(|p| p.fds.iter()).any(|f| {
            matches!(&f.kind, crate::model::FdKind::TcpListen { queue, .. }
                if queue.iter().any(|w| !w.data.is_empty()))
        });
        if waiting_bytes {
            required |= crate::image::FEATURE_WAITING_BYTES;
        }
        let mut w = ImageWriter::with_features(out, required)?;
        if !opts.transient {
            // Only `ckpt dump`'s images have one so far: with it in the images of
            // `ckpt migrate` (its sender's and its receiver's), a `--lazy` migration's
            // last pages stopped arriving in e2e_migpost; not understood yet.
            w.with_index();
        }
        w.write_meta(tag::CHECKPOINT, &c.ckpt)?;
        write_file_data(c, &mut w)?;
        for chunk in rx {
            match chunk? {
                Chunk::Process(pid) => {
                    w.write_record(tag::PAGES_PID, FLAG_REQUIRED, pid as u64, &[], false)?;
                }
                Chunk::Run {
                    buf,
                    len,
                    records,
                    zero_pages,
                } => {
                    super::check_signals()?;
                    if let Some(p) = progress {
                        p(done, total);
                    }
                    done += len as u64;
                    stats.zero_pages_skipped += zero_pages;
                    let run = buf.slice(len)?;
                    for r in records {
                        let (data, align) = match &r.body {
                            Body::InRun(i, j) => (&run[*i..*j], true),
                            Body::Packed(p) => (&p[..], false),
                        };
                        w.write_record_summed(
                            r.tag,
                            FLAG_REQUIRED,
                            r.at,
                            data,
                            align,
                            Some(r.sum),
                        )?;
                        stats.pages_written += r.pages;
                    }
                    let _ = back.send(buf);
                }
            }
        }
        if let Some(p) = progress {
            p(total, total);
        }
        stats.image_bytes = w.offset() + 32 + 16 + 8;
        Ok(w.finish()?)
    })
}

/// Contents of deleted files and memfds, once per file, before all page data.
/// A file only mapped (its descriptor closed) is read through its map_files entry.
fn write_file_data<W: Write>(c: &Collected, w: &mut ImageWriter<W>) -> Result<()> {
    let mut done_files = std::collections::BTreeSet::new();
    let mut chunk = Vec::new();
    // (Those only in flight through ckpt's own copies.)
    let own: Vec<(u64, String)> = c
        .in_flight_data
        .iter()
        .map(|(data, fd)| {
            let n = std::os::fd::AsRawFd::as_raw_fd(fd);
            (*data, format!("/proc/self/fd/{n}"))
        })
        .collect();
    let sources = c.ckpt.processes.iter().flat_map(|p| {
        let hp = c.host_pid(p.pid);
        crate::kinds::fd::file::file_data_sources(p, hp)
    });
    for (data, path) in sources.chain(own) {
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
        // Its holes: only the data extents are written back at restore.
        let extents = crate::sys::file::data_extents(&file)
            .map_err(|e| crate::sys::SysError::io(format!("find the holes of {path}"), e))?;
        if let Some(ext) = extents {
            let payload: Vec<u8> = ext
                .iter()
                .flat_map(|(o, l)| o.to_le_bytes().into_iter().chain(l.to_le_bytes()))
                .collect();
            w.write_record(tag::FILE_EXTENTS, 0, data, &payload, false)?;
        }
    }
    Ok(())
}
