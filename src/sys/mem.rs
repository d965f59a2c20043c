//! Reading and writing another process's memory.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Result, SysError};

/// Access to the memory of a (stopped, traced) process: process_vm_readv/writev, with
/// /proc/PID/mem (which may access pages whatever their protection) as the fallback.
pub struct RemoteMem {
    pid: i32,
    mem: File,
}

/// Most iovecs one `process_vm_readv` takes (UIO_MAXIOV).
const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

impl RemoteMem {
    pub fn open(pid: i32) -> Result<Self> {
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| SysError::io(format!("open /proc/{pid}/mem"), e))?;
        Ok(Self { pid, mem })
    }

    /// Read exactly `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which we own mutably for the call; `remote`
        // is only interpreted in the other process's address space.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n >= 0 && n as usize == buf.len() {
            return Ok(());
        }
        // Partial or failed (e.g. a page without PROT_READ): /proc/PID/mem reads with
        // FOLL_FORCE.
        self.mem.read_exact_at(buf, addr).map_err(|e| {
            SysError::io(
                format!(
                    "read {} bytes at {addr:#x} of process {}",
                    buf.len(),
                    self.pid
                ),
                e,
            )
        })
    }

    /// Read the `(address, length)` ranges one after the other into the start of a
    /// [`PageSlot`], in as few `process_vm_readv` calls as the kernel allows (falling
    /// back to one range at a time); returns the bytes read (their total).
    pub fn read_ranges_into(&self, ranges: &[(u64, usize)], buf: &mut PageSlot) -> Result<usize> {
        let total = ranges
            .iter()
            .try_fold(0usize, |t, r| t.checked_add(r.1))
            .ok_or_else(|| SysError::Other("ranges too long to read".into()))?;
        let b = buf.slice_mut(total)?;
        let mut off = 0;
        for chunk in ranges.chunks(IOV_MAX) {
            let len: usize = chunk.iter().map(|r| r.1).sum();
            let dst = &mut b[off..off + len];
            let local = libc::iovec {
                iov_base: dst.as_mut_ptr().cast(),
                iov_len: len,
            };
            let remote: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(addr, n)| libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: n,
                })
                .collect();
            // SAFETY: `local` describes `dst`, a part of the slot we borrow mutably for
            // the call; the remote iovecs are only interpreted in the other process.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid,
                    &local,
                    1,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 || n as usize != len {
                // One range at a time, each with the /proc/PID/mem fallback.
                let mut at = 0;
                for &(addr, n) in chunk {
                    self.read(addr, &mut dst[at..at + n])?;
                    at += n;
                }
            }
            off += len;
        }
        Ok(total)
    }

    /// Write all of `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: `local` describes `data`, which outlives the call and is only read.
        let n = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        if n >= 0 && n as usize == data.len() {
            return Ok(());
        }
        self.mem.write_all_at(data, addr).map_err(|e| {
            SysError::io(
                format!(
                    "write {} bytes at {addr:#x} of process {}",
                    data.len(),
                    self.pid
                ),
                e,
            )
        })
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// A buffer for page data in memory of its own, asking for transparent huge pages:
/// a new buffer is touched for the first time by the copy into it, and on a VM
/// 4 KiB page faults cost more than the copy itself (measured: 2-3 ms for 4 MiB against
/// 0.4-0.9 ms with huge pages). Where huge pages are off it is ordinary memory.
pub struct PageBuf {
    /// Start of the mapping and its length (it includes the alignment slack).
    map: *mut libc::c_void,
    map_len: usize,
    /// The usable part: 2 MiB aligned.
    data: *mut u8,
    cap: usize,
}

// SAFETY: a PageBuf owns its mapping exclusively (the only pointers into it are those of
// the slots it is cut into, each of which owns its own part), so moving it to another
// thread is sound.
unsafe impl Send for PageBuf {}
// SAFETY: a shared PageBuf gives no access to its memory (only its slots do), so
// references to it may be shared between threads.
unsafe impl Sync for PageBuf {}

const HUGE: usize = 2 << 20;

impl PageBuf {
    /// A buffer of `cap` bytes (rounded up to whole huge pages: a huge page is only
    /// used where all of it lies in the advised range).
    pub fn new(cap: usize) -> Result<Self> {
        let too_big = || SysError::Other(format!("a page buffer of {cap} bytes"));
        let cap = cap.checked_next_multiple_of(HUGE).ok_or_else(too_big)?;
        let map_len = cap.checked_add(HUGE).ok_or_else(too_big)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice
        // touches no existing memory.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(SysError::os("map a page buffer"));
        }
        let base = map as usize;
        let data = base.next_multiple_of(HUGE);
        // SAFETY: [data, data + cap) lies inside the mapping just made (the slack is
        // HUGE bytes); the advice only changes how its pages are backed, and failing
        // (huge pages off) leaves ordinary pages.
        unsafe {
            libc::madvise(data as *mut libc::c_void, cap, libc::MADV_HUGEPAGE);
        }
        Ok(Self {
            map,
            map_len,
            data: data as *mut u8,
            cap,
        })
    }
}

/// One of the equal, disjoint parts of a [`PageBuf`] made by [`PageBuf::into_slots`]:
/// a buffer of its own that can be passed between threads, while all of them share one
/// mapping (and so its huge pages: a 2 MiB page holds eight 256 KiB slots and costs one
/// fault).
pub struct PageSlot {
    /// Keeps the mapping alive until the last slot is dropped.
    _buf: std::sync::Arc<PageBuf>,
    data: *mut u8,
    cap: usize,
}

// SAFETY: a slot is the only handle to its byte range (slots are disjoint, not Clone,
// and the PageBuf they came from is no longer reachable but through the Arc, which is
// only dropped), so moving it to another thread moves exclusive access with it.
unsafe impl Send for PageSlot {}

impl PageBuf {
    /// Cut the buffer into `n` slots of `capacity / n` bytes each, rounded down to
    /// whole pages.
    pub fn into_slots(self, n: usize) -> Result<Vec<PageSlot>> {
        let each = (self.cap / n.max(1)) & !4095;
        if each == 0 {
            return Err(SysError::Other(format!(
                "{n} slots in a page buffer of {} bytes",
                self.cap
            )));
        }
        let data = self.data;
        let buf = std::sync::Arc::new(self);
        Ok((0..n)
            .map(|i| PageSlot {
                _buf: buf.clone(),
                // (i + 1) * each <= cap: the slot lies inside the buffer.
                data: data.wrapping_add(i * each),
                cap: each,
            })
            .collect())
    }
}

impl PageSlot {
    /// The first `len` bytes (`len` at most the capacity).
    pub fn slice(&self, len: usize) -> Result<&[u8]> {
        if len > self.cap {
            return Err(SysError::Other(format!(
                "{len} bytes in a page buffer slot of {}",
                self.cap
            )));
        }
        // SAFETY: [data, data + len) is inside this slot, which lies inside the mapping
        // the Arc keeps alive; anonymous memory is initialised (zeros until written);
        // no other slot overlaps it and the borrow of self excludes writers.
        Ok(unsafe { std::slice::from_raw_parts(self.data, len) })
    }

    /// The first `len` bytes, writable (`len` at most the capacity).
    pub fn slice_mut(&mut self, len: usize) -> Result<&mut [u8]> {
        if len > self.cap {
            return Err(SysError::Other(format!(
                "{len} bytes in a page buffer slot of {}",
                self.cap
            )));
        }
        // SAFETY: as in `slice`, and the exclusive borrow of self makes this the only
        // reference into the slot.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data, len) })
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` is exactly the mapping `new` made, and no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

/// The kernel's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and reads nothing of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}
