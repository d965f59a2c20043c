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

    /// Read `len` bytes at `addr` into `buf`, replacing its contents, without zeroing the
    /// buffer first (a reused buffer keeps its pages; a new one is touched once, by the
    /// copy).
    pub fn read_to_vec(&self, addr: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.reserve(len);
        let local = libc::iovec {
            iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: `local` describes the first `len` bytes of `buf`'s spare capacity
        // (reserved above), which we own mutably for the call; the kernel only writes
        // there. `remote` is only interpreted in the other process's address space.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n >= 0 && n as usize == len {
            // SAFETY: the kernel copied exactly `len` bytes into the spare capacity, so
            // the first `len` bytes are initialised, and `len <= capacity`.
            unsafe { buf.set_len(len) };
            return Ok(());
        }
        // Partial or failed: the zeroed slow path of `read`.
        buf.resize(len, 0);
        self.read(addr, buf)
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
