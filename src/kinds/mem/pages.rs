//! Page data: which pages exist (pagemap, PAGEMAP_SCAN) and how they are written into a
//! new process (userfaultfd copy, process_vm_writev).

use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::{RestoreError, RestoreResult, fault_point};
use crate::image::{OwnedRecord, tag};
use crate::kinds::fd::file::FileData;
use crate::kinds::mem::takes_pages;
use crate::model::Vma;
use crate::model::{Process, VmaKind};
use crate::remote::Ctx;
use crate::sys;
use crate::sys::mem::RemoteMem;
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
pub(crate) fn vma_pages(
    pm: &procfs::Pagemap,
    vma: &mut Vma,
    runs: &mut Vec<Run>,
) -> DumpResult<()> {
    let (want, skip_zero): (fn(u64) -> bool, bool) = match (&vma.kind, vma.shared) {
        // Droppable memory (`dp`) too: the pages still there are stored (the kernel
        // frees such pages instead of swapping them; one dropped after the scan reads
        // as zeroes, which are skipped, as a dropped page is).
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

// ---- restore (stage) ----

/// A source of checked records (page records may come in pieces whose checksum is
/// checked with the record's last piece: see [`ImageReader::next_piece_owned`](crate::image::ImageReader::next_piece_owned)). Payload buffers may be given back with
/// [`recycle`](Self::recycle) to be reused.
pub(crate) trait RecordSource {
    fn next_record(&mut self) -> RestoreResult<Option<OwnedRecord>>;
    fn recycle(&mut self, buf: Vec<u8>);
}

/// Where the page data of a new process goes: `UFFDIO_COPY` into its private anonymous
/// areas, registered with a userfaultfd the process created (`sys::uffd`: each page is
/// allocated and filled in one step instead of cleared by a fault and then
/// overwritten), `process_vm_writev` everywhere else and wherever userfaultfd is not
/// available.
pub(crate) struct PageSink<'a> {
    mem: &'a RemoteMem,
    uffd: Option<sys::uffd::Uffd>,
    /// The registered areas, sorted.
    ranges: Vec<(u64, u64)>,
    /// `restore --lazy`: the records of the registered areas are noted, not copied
    /// (`restore::lazy`).
    lazy: Option<LazySink<'a>>,
}

/// The lazy part of a [`PageSink`].
struct LazySink<'a> {
    lazy: &'a crate::restore::lazy::Lazy,
    pieces: std::cell::RefCell<Vec<crate::restore::lazy::Piece>>,
    /// The bytes of the process's arguments and environment (`[start, end)`): their
    /// records are copied before it runs, since other processes read them through
    /// /proc/PID/cmdline and environ, and the kernel's reads of another process's
    /// memory do not wait for a userfaultfd (they would read nothing).
    eager: (u64, u64),
}

/// Whether the pages of `v` may come in after the tree runs (`restore --lazy`): private
/// anonymous memory with pages in the image, neither locked (`mlock` at stage would
/// fault every page in, with nobody yet serving) nor wiped on fork (a fork child must
/// not get the image's pages there).
fn lazy_area(v: &Vma) -> bool {
    v.kind == VmaKind::Anon
        && !v.shared
        && v.pages_present > 0
        && !v.has_flag("lo")
        && !v.has_flag("wf")
}

/// A userfaultfd and the areas registered with it.
type Registered = (sys::uffd::Uffd, Vec<(u64, u64)>);

impl<'a> PageSink<'a> {
    /// Create the userfaultfd in the process of `cx` and register its private anonymous
    /// areas that take pages. The descriptor it has in the process is closed again at
    /// once (ckpt holds its own).
    pub(crate) fn new(cx: &'a mut Ctx<'_>) -> RestoreResult<PageSink<'a>> {
        let uffd = Self::userfaultfd(cx)?;
        let mem = &cx.live_task("fill memory")?.mem;
        Ok(match uffd {
            Some((uffd, ranges)) => PageSink {
                mem,
                uffd: Some(uffd),
                ranges,
                lazy: None,
            },
            None => Self::plain(mem),
        })
    }

    /// For `restore --lazy`: the lazy areas ([`lazy_area`]) are registered on a
    /// userfaultfd with the events the server needs, and their page records noted for
    /// it; every other page is read from the image and written now.
    pub(crate) fn new_lazy(
        cx: &'a mut Ctx<'_>,
        lazy: &'a crate::restore::lazy::Lazy,
    ) -> RestoreResult<PageSink<'a>> {
        let ranges: Vec<(u64, u64)> = cx
            .proc_
            .vmas
            .iter()
            .filter(|v| lazy_area(v))
            .map(|v| (v.start, v.end))
            .collect();
        let mut uffd = None;
        let mut registered = Vec::new();
        if !ranges.is_empty() && cx.space_end >= super::TASK_SIZE {
            let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
            let fd = cx.call("userfaultfd", nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0])?;
            let adopted =
                sys::uffd::Uffd::adopt_with(cx.pid(), fd as i32, sys::uffd::LAZY_FEATURES);
            cx.close(fd)?;
            let u = adopted.map_err(|e| {
                RestoreError::Stage(format!(
                    "process {}: a lazy restore needs userfaultfd with its fork, remap, \
                     remove and unmap events: {e}",
                    cx.proc_.pid
                ))
            })?;
            for &(start, end) in &ranges {
                if u.register(start, end - start).is_ok() {
                    registered.push((start, end));
                }
            }
            uffd = Some(u);
        }
        let m = &cx.proc_.mm;
        let eager = (m.arg_start.min(m.env_start), m.arg_end.max(m.env_end));
        let mem = &cx.live_task("fill memory")?.mem;
        Ok(PageSink {
            mem,
            uffd,
            ranges: registered,
            lazy: Some(LazySink {
                lazy,
                pieces: Default::default(),
                eager,
            }),
        })
    }

    /// A page record of `len` bytes at `addr` whose pages did not come with it (a lazy
    /// restore): noted for the server where the area is registered, else read from the
    /// image (checked) and written now.
    fn defer(&self, addr: u64, len: u64, rec: u64) -> RestoreResult<()> {
        let Some(l) = &self.lazy else {
            return Err(RestoreError::Stage(format!(
                "page data record at byte {rec} came without its pages"
            )));
        };
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        let eager = addr < l.eager.1 && l.eager.0 < addr + len;
        if !eager && self.uffd.is_some() && self.ranges.get(i).is_some_and(|r| r.0 <= addr) {
            l.pieces.borrow_mut().push(crate::restore::lazy::Piece {
                addr,
                len,
                rec,
                skip: 0,
            });
            return Ok(());
        }
        let data = l.lazy.image().pages(rec)?;
        if data.len() as u64 != len {
            return Err(RestoreError::Malformed(format!(
                "page data record at byte {rec}: its pages are not as long as it says"
            )));
        }
        self.write(addr, &data)
    }

    /// The userfaultfd and the areas registered with it (`None`: the pages go the
    /// ordinary way).
    fn userfaultfd(cx: &mut Ctx<'_>) -> RestoreResult<Option<Registered>> {
        let ranges: Vec<(u64, u64)> = cx
            .proc_
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::Anon && !v.shared && v.pages_present > 0)
            .map(|v| (v.start, v.end))
            .collect();
        // UFFDIO_COPY checks the source (ckpt's buffer) against the task's address-space
        // limit too: a task with the ia32 one (`Ctx::space_end`) refuses every copy.
        if ranges.is_empty() || cx.space_end < super::TASK_SIZE {
            return Ok(None);
        }
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = match cx.call("userfaultfd", nr::USERFAULTFD, [flags, 0, 0, 0, 0, 0]) {
            Ok(fd) => fd,
            // Not in this kernel, or not allowed: the pages go the ordinary way.
            Err(RestoreError::Sys(sys::SysError::Remote { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        // If ckpt cannot take or enable it (pidfd_getfd refused, say), the same.
        let adopted = sys::uffd::Uffd::adopt(cx.pid(), fd as i32);
        cx.close(fd)?;
        let Ok(uffd) = adopted else {
            return Ok(None);
        };
        let mut registered = Vec::new();
        for &(start, end) in &ranges {
            // An area the kernel will not register is filled the ordinary way.
            if uffd.register(start, end - start).is_ok() {
                registered.push((start, end));
            }
        }
        Ok(Some((uffd, registered)))
    }

    fn plain(mem: &'a RemoteMem) -> Self {
        PageSink {
            mem,
            uffd: None,
            ranges: Vec::new(),
            lazy: None,
        }
    }

    /// Write `data` (whole pages) at `addr`, all of it inside one area of the process.
    fn write(&self, addr: u64, data: &[u8]) -> RestoreResult<()> {
        if let Some(u) = &self.uffd {
            let i = self.ranges.partition_point(|r| r.1 <= addr);
            if self.ranges.get(i).is_some_and(|r| r.0 <= addr) {
                return Ok(u.copy(addr, data)?);
            }
        }
        Ok(self.mem.write(addr, data)?)
    }

    /// Unregister the areas: from now on they are ordinary memory (pages the image did
    /// not have are cleared on their first fault, as before).
    /// With `restore --lazy`, the userfaultfd and the noted records go to the server
    /// instead, the areas staying registered.
    pub(crate) fn finish(self) -> RestoreResult<()> {
        if let Some(l) = self.lazy {
            if let Some(u) = self.uffd {
                l.lazy.add(u, self.ranges, l.pieces.into_inner())?;
            }
            return Ok(());
        }
        if let Some(u) = &self.uffd {
            for &(start, end) in &self.ranges {
                u.unregister(start, end - start)?;
            }
        }
        Ok(())
    }
}

/// The page data part of the image, read process by process in image order.
pub(crate) struct PageStream<'r> {
    reader: &'r mut dyn RecordSource,
    next_pid: Option<i64>,
    ended: bool,
}

impl<'r> PageStream<'r> {
    pub(crate) fn new(reader: &'r mut dyn RecordSource) -> Self {
        Self {
            reader,
            next_pid: None,
            ended: false,
        }
    }

    /// Read the file contents that come before the page data (FILE_DATA records), into
    /// memory files of ckpt's own (or only check them, without `keep`).
    pub(crate) fn read_file_data(&mut self, keep: bool) -> RestoreResult<FileData> {
        let mut out = FileData::default();
        loop {
            let Some(rec) = self.reader.next_record()? else {
                self.ended = true;
                return Ok(out);
            };
            match rec.tag {
                tag::FILE_DATA => {
                    out.bytes += rec.payload.len() as u64;
                    out.ids.insert(rec.arg);
                    if keep {
                        let f = match out.files.entry(rec.arg) {
                            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(sys::process::memfd("ckpt-file-data")?)
                            }
                        };
                        std::io::Write::write_all(f, &rec.payload)
                            .map_err(|e| sys::SysError::io("keep file contents", e))?;
                    }
                    *out.sizes.entry(rec.arg).or_insert(0) += rec.payload.len() as u64;
                    self.reader.recycle(rec.payload);
                }
                tag::FILE_EXTENTS => {
                    let size = out.sizes.get(&rec.arg).copied();
                    let ext = crate::kinds::fd::file::parse_extents(&rec.payload, size)
                        .map_err(|e| RestoreError::Malformed(format!("file {}: {e}", rec.arg)))?;
                    if out.extents.insert(rec.arg, ext).is_some() {
                        return Err(RestoreError::Malformed(format!(
                            "file {}: its data extents are given twice",
                            rec.arg
                        )));
                    }
                    self.reader.recycle(rec.payload);
                }
                tag::PAGES_PID => {
                    self.next_pid = Some(rec.arg as i64);
                    return Ok(out);
                }
                t => {
                    return Err(RestoreError::Malformed(format!(
                        "unexpected {} record after the metadata",
                        tag::name(t)
                    )));
                }
            }
        }
    }

    /// Read the page records of `proc_` (which must come next), checking each against
    /// its memory map, and write them into `mem` if given. Returns the bytes read.
    pub(crate) fn load(
        &mut self,
        proc_: &Process,
        mem: Option<&PageSink<'_>>,
    ) -> RestoreResult<u64> {
        let pid = match self.next_pid.take() {
            Some(p) => p,
            None => match self.reader.next_record()? {
                Some(rec) if rec.tag == tag::PAGES_PID => rec.arg as i64,
                Some(rec) => {
                    return Err(RestoreError::Malformed(format!(
                        "expected the page data of process {}, found a {} record",
                        proc_.pid,
                        tag::name(rec.tag)
                    )));
                }
                None => {
                    self.ended = true;
                    return Err(RestoreError::Malformed(format!(
                        "the page data of process {} is missing",
                        proc_.pid
                    )));
                }
            },
        };
        if pid != i64::from(proc_.pid) {
            return Err(RestoreError::Malformed(format!(
                "page data of process {pid} where process {} was expected",
                proc_.pid
            )));
        }
        let mut got: Vec<u64> = vec![0; proc_.vmas.len()];
        // The ranges written so far (start -> end): no page may come twice.
        let mut seen: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut bytes = 0u64;
        while let Some(rec) = self.reader.next_record()? {
            match rec.tag {
                tag::PAGES_PID => {
                    self.next_pid = Some(rec.arg as i64);
                    return Ok(bytes);
                }
                tag::PAGES => {
                    // The whole record is checked against the memory map with its first
                    // piece; the pieces that follow are its consecutive parts (the
                    // reader hands them over in order, and checks the record's checksum
                    // with the last one, before anything is committed).
                    let addr = rec.arg;
                    let len = rec.record_len;
                    if rec.part == 0 {
                        let bad = |why: &str| {
                            RestoreError::Malformed(format!(
                                "page data record at byte {} ({addr:#x}, {len} bytes): {why}",
                                rec.offset
                            ))
                        };
                        if addr % 4096 != 0 || len % 4096 != 0 || len == 0 {
                            return Err(bad("not page aligned"));
                        }
                        let i = proc_.vmas.partition_point(|v| v.end <= addr);
                        let v = proc_
                            .vmas
                            .get(i)
                            .filter(|v| {
                                v.start <= addr && addr.checked_add(len).is_some_and(|e| e <= v.end)
                            })
                            .ok_or_else(|| bad("not inside one memory area"))?;
                        if !takes_pages(v) {
                            return Err(bad("memory area takes no page data"));
                        }
                        let end = addr + len;
                        if seen
                            .range(..end)
                            .next_back()
                            .is_some_and(|(_, e)| *e > addr)
                        {
                            return Err(bad("overlaps another page data record"));
                        }
                        seen.insert(addr, end);
                        got[i] += len / 4096;
                        if got[i] > v.pages_present {
                            return Err(bad("more pages than the memory area had"));
                        }
                        if mem.is_some() {
                            fault_point("write pages")?;
                        }
                    }
                    let piece = rec.payload.len() as u64;
                    if rec.part.checked_add(piece).is_none_or(|e| e > len) {
                        return Err(RestoreError::Stage(format!(
                            "page data record at byte {}: piece out of order",
                            rec.offset
                        )));
                    }
                    if let Some(m) = mem {
                        if rec.payload.is_empty() {
                            // A lazy restore's record, its pages left in the image.
                            m.defer(addr, len, rec.offset)?;
                        } else {
                            m.write(addr + rec.part, &rec.payload)?;
                        }
                    }
                    bytes += piece;
                    self.reader.recycle(rec.payload);
                }
                t => {
                    return Err(RestoreError::Malformed(format!(
                        "unexpected {} record after the metadata",
                        tag::name(t)
                    )));
                }
            }
        }
        self.ended = true;
        Ok(bytes)
    }

    /// Check that nothing but the end of the image follows.
    pub(crate) fn finish(&mut self) -> RestoreResult<()> {
        if let Some(p) = self.next_pid {
            return Err(RestoreError::Malformed(format!(
                "page data for process {p}, which the image does not describe"
            )));
        }
        if !self.ended {
            if let Some(rec) = self.reader.next_record()? {
                return Err(RestoreError::Malformed(format!(
                    "unexpected {} record at the end of the image",
                    tag::name(rec.tag)
                )));
            }
        }
        Ok(())
    }
}
