//! Writing image files.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// A file written from start to end that hands what was written to the disk as it goes
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writeback, do not wait), so that the
/// `fsync` that ends a dump waits for the last step's worth of data instead of all of
/// it: the disk works while the pages are still being copied. On tmpfs it does nothing.
pub struct WritebackFile {
    file: File,
    written: u64,
    started: u64,
    step: u64,
}

impl WritebackFile {
    /// Writeback is started every `step` bytes.
    pub fn new(file: File, step: u64) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
            step: step.max(1),
        }
    }

    pub fn into_inner(self) -> File {
        self.file
    }

    fn start_writeback(&mut self) {
        // SAFETY: sync_file_range takes a descriptor we own, a range and flags, all plain
        // integers; it touches no memory of ours. A failure (a file system without writeback, say) only
        // leaves all the work to the final fsync, which reports real errors.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.started as libc::off64_t,
                (self.written - self.started) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= self.step {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Where file `f` has data (SEEK_DATA / SEEK_HOLE): (offset, length) pairs, in order;
/// None when it has no hole (or its file system cannot say). Moves the file position.
pub fn data_extents(f: &File) -> io::Result<Option<Vec<(u64, u64)>>> {
    use rustix::fs::SeekFrom;
    let size = f.metadata()?.len();
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let start = match rustix::fs::seek(f, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if off == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(f, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        out.push((start, end - start));
        off = end;
    }
    if size == 0 || out == [(0, size)] {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Make descriptor `dst` of this process a copy of its descriptor `src` (dup2; `dst`
/// is closed first if open). Both are plain numbers the caller names: `src` must be
/// open.
pub fn dup2(src: i32, dst: i32) -> super::Result<()> {
    if src < 0 || dst < 0 {
        return Err(super::SysError::Other(format!(
            "dup2({src}, {dst}): bad descriptor"
        )));
    }
    // SAFETY: dup2 on plain descriptor numbers touches no memory; if `dst` was owned by
    // something in this process it now refers to `src`'s file (the caller's intent: it
    // replaces a standard descriptor), and nothing is closed twice.
    let r = unsafe { libc::dup2(src, dst) };
    if r < 0 {
        return Err(super::SysError::os(format!("dup2({src}, {dst})")));
    }
    Ok(())
}

/// The status flags (F_GETFL) of the open file description `fd` refers to.
pub fn status_flags(fd: std::os::fd::BorrowedFd<'_>) -> super::Result<u32> {
    rustix::fs::fcntl_getfl(fd)
        .map(|f| f.bits())
        .map_err(|e| super::SysError::Other(format!("fcntl(F_GETFL): {e}")))
}

/// Set the status flags (F_SETFL: O_APPEND, O_NONBLOCK, O_ASYNC... the kernel takes
/// only those) of the open file description `fd` refers to: every descriptor of it, in
/// any process, sees them.
pub fn set_status_flags(fd: std::os::fd::BorrowedFd<'_>, flags: u32) -> super::Result<()> {
    rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::from_bits_retain(flags))
        .map_err(|e| super::SysError::Other(format!("fcntl(F_SETFL): {e}")))
}

/// Whether `path` is on a file system kept in memory (tmpfs: TMPFS_MAGIC,
/// linux/magic.h), where a write is a copy into memory with no disk behind it and no
/// dirty-page throttling.
pub fn in_memory(path: &std::path::Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs the call fills.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == TMPFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_pass_through_whatever_the_step() {
        let dir = std::env::temp_dir().join(format!("ckpt-wb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for step in [1u64, 4096, 65_536, 1 << 20] {
            let mut w = WritebackFile::new(File::create(&path).unwrap(), step);
            // Uneven writes, so that steps fall inside them.
            for part in data.chunks(12_345) {
                w.write_all(part).unwrap();
            }
            w.flush().unwrap();
            assert_eq!(w.written, data.len() as u64);
            assert!(w.written - w.started < step.max(1));
            w.into_inner().sync_all().unwrap();
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert!(
                back == data,
                "step {step}: file differs from what was written"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
