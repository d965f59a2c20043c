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

    /// Read `len` bytes at `addr` into the start of a [`PageBuf`].
    pub fn read_into(&self, addr: u64, buf: &mut PageBuf, len: usize) -> Result<()> {
        let b = buf.slice_mut(len)?;
        self.read(addr, b)
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

// SAFETY: a PageBuf owns its mapping exclusively (no aliasing pointers escape but
// through `&self`/`&mut self` borrows), so moving it to another thread is sound.
unsafe impl Send for PageBuf {}

const HUGE: usize = 2 << 20;

impl PageBuf {
    /// A buffer of `cap` bytes.
    pub fn new(cap: usize) -> Result<Self> {
        let map_len = cap
            .checked_add(HUGE)
            .ok_or_else(|| SysError::Other(format!("a page buffer of {cap} bytes")))?;
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

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The first `len` bytes (`len` at most the capacity).
    pub fn slice(&self, len: usize) -> Result<&[u8]> {
        if len > self.cap {
            return Err(SysError::Other(format!(
                "{len} bytes in a page buffer of {}",
                self.cap
            )));
        }
        // SAFETY: [data, data + len) is inside our mapping, readable and initialised
        // (anonymous memory reads as zeros until written); the borrow of self keeps
        // it alive and unaliased by writers.
        Ok(unsafe { std::slice::from_raw_parts(self.data, len) })
    }

    /// The first `len` bytes, writable (`len` at most the capacity).
    pub fn slice_mut(&mut self, len: usize) -> Result<&mut [u8]> {
        if len > self.cap {
            return Err(SysError::Other(format!(
                "{len} bytes in a page buffer of {}",
                self.cap
            )));
        }
        // SAFETY: as in `slice`, and the exclusive borrow of self makes this the only
        // reference into the buffer.
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
