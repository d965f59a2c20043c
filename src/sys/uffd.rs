//! userfaultfd, used by restore to fill a new process's anonymous memory: `UFFDIO_COPY`
//! allocates each page and copies into it in one step, where a write through
//! `process_vm_writev` first faults in a cleared page and then copies over it (measured
//! here, 4 MiB into fresh memory: 1.3 ms against 2.2-2.9 ms; 256 MiB: 93-102 against
//! 153-164 ms). The descriptor is created by the new process (so that it works on that
//! process's memory) and taken by ckpt; ckpt registers the areas, copies and
//! unregisters them. Nothing of it survives into the restored process.
//!
//! `restore --lazy` (`restore::lazy`) keeps the areas registered after commit and serves
//! the process's faults from the image: [`Uffd::adopt_with`] asks for the events that
//! tell ckpt what the program does to those areas meanwhile (fork, mremap, munmap,
//! madvise), [`Uffd::read_events`] reads them, [`Uffd::fill`] copies without ever
//! overwriting a page, and [`spawn_watcher`] starts the process that kills the tree if
//! ckpt dies before every page is in.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{Result, SysError};

// linux/userfaultfd.h, from linux-raw-sys (libc has none of it).
use linux_raw_sys::general::{
    UFFD_API, UFFD_EVENT_FORK, UFFD_EVENT_PAGEFAULT, UFFD_EVENT_REMAP, UFFD_EVENT_REMOVE,
    UFFD_EVENT_UNMAP, UFFD_FEATURE_EVENT_FORK, UFFD_FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_UNMAP, UFFDIO_REGISTER_MODE_MISSING, uffdio_api as UffdioApi,
    uffdio_copy as UffdioCopy, uffdio_range as UffdioRange, uffdio_register as UffdioRegister,
    uffdio_zeropage as UffdioZeropage,
};
use linux_raw_sys::ioctl::{
    UFFDIO_API, UFFDIO_COPY, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_WAKE, UFFDIO_ZEROPAGE,
};

/// The events a lazy restore needs (see the module comment): without them a fork
/// child's areas, an area moved by `mremap`, or pages dropped by `madvise` would read
/// zeros, or the image's pages, where the program expects otherwise.
pub const LAZY_FEATURES: u64 = (UFFD_FEATURE_EVENT_FORK
    | UFFD_FEATURE_EVENT_REMAP
    | UFFD_FEATURE_EVENT_REMOVE
    | UFFD_FEATURE_EVENT_UNMAP) as u64;

/// One message read from a userfaultfd (`struct uffd_msg`, 32 bytes).
#[derive(Debug)]
pub enum Event {
    /// A thread waits for the page at `addr`.
    Fault { addr: u64 },
    /// The process forked: the child's areas are registered with this new userfaultfd.
    Fork(Uffd),
    /// `mremap` moved `[from, from + len)` to `to`.
    Remap { from: u64, to: u64, len: u64 },
    /// `madvise(DONTNEED/REMOVE)` dropped `[start, end)` (registered still).
    Remove { start: u64, end: u64 },
    /// `[start, end)` was unmapped.
    Unmap { start: u64, end: u64 },
}

/// What became of a [`Uffd::fill`].
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Every page was copied, or was there already, or is no longer registered.
    Done,
    /// The program is changing its memory map (an event is waiting to be read): read
    /// the events, then try again.
    Retry,
    /// The process's memory is gone (it exited or executed another program).
    Gone,
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// A userfaultfd of another process (see the module comment).
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Take descriptor `fd` of process `pid`, a userfaultfd it created, and enable it.
    pub fn adopt(pid: i32, fd: i32) -> Result<Self> {
        let u = Self {
            fd: super::process::steal_fd(pid, fd)?,
        };
        let mut api = UffdioApi {
            api: u64::from(UFFD_API),
            features: 0,
            ioctls: 0,
        };
        u.ioctl(UFFDIO_API, &mut api as *mut UffdioApi as u64, "UFFDIO_API")?;
        Ok(u)
    }

    /// Take descriptor `fd` of process `pid`, a userfaultfd it created, and enable it
    /// with `features` (all of them, or an error saying the kernel refused).
    pub fn adopt_with(pid: i32, fd: i32, features: u64) -> Result<Self> {
        let u = Self {
            fd: super::process::steal_fd(pid, fd)?,
        };
        let mut api = UffdioApi {
            api: u64::from(UFFD_API),
            features,
            ioctls: 0,
        };
        u.ioctl(UFFDIO_API, &mut api as *mut UffdioApi as u64, "UFFDIO_API")?;
        if api.features & features != features {
            return Err(SysError::Other(format!(
                "this kernel's userfaultfd lacks features {:#x}",
                features & !api.features
            )));
        }
        Ok(u)
    }

    /// A userfaultfd enabled already (by [`Uffd::adopt_with`] in another process of
    /// ckpt's, which sent it to us).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor, to send to another process of ckpt's.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Read the waiting messages (the descriptor is non-blocking) into `out`.
    pub fn read_events(&self, out: &mut Vec<Event>) -> Result<()> {
        let mut buf = [0u8; 32 * 64];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => Err(SysError::io("read userfaultfd", e)),
                };
            }
            if n == 0 {
                return Ok(());
            }
            for m in buf[..n as usize].chunks_exact(32) {
                let ev = match u32::from(m[0]) {
                    UFFD_EVENT_PAGEFAULT => Event::Fault {
                        addr: le64(&m[16..24]),
                    },
                    UFFD_EVENT_FORK => {
                        let fd = u32::from_le_bytes(m[8..12].try_into().unwrap_or_default());
                        // SAFETY: the kernel installed this new descriptor in our table
                        // for the child's userfaultfd; nothing else owns it.
                        let fd =
                            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
                        Event::Fork(Uffd { fd })
                    }
                    UFFD_EVENT_REMAP => Event::Remap {
                        from: le64(&m[8..16]),
                        to: le64(&m[16..24]),
                        len: le64(&m[24..32]),
                    },
                    UFFD_EVENT_REMOVE => Event::Remove {
                        start: le64(&m[8..16]),
                        end: le64(&m[16..24]),
                    },
                    UFFD_EVENT_UNMAP => Event::Unmap {
                        start: le64(&m[8..16]),
                        end: le64(&m[16..24]),
                    },
                    e => {
                        return Err(SysError::Other(format!("unknown userfaultfd event {e}")));
                    }
                };
                out.push(ev);
            }
        }
    }

    /// Copy `data` (whole pages) to `dst` where pages are missing: a page that is there
    /// already is left as it is (never overwritten), one no longer registered (unmapped)
    /// skipped; the waiting threads are woken.
    pub fn fill(&self, dst: u64, data: &[u8]) -> Result<Fill> {
        let mut done = 0usize;
        while done < data.len() {
            let mut c = UffdioCopy {
                dst: dst + done as u64,
                src: data[done..].as_ptr() as u64,
                len: (data.len() - done) as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: `c` is a live UffdioCopy; `src..src+len` lies in `data`, which
            // outlives the call and is only read.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    UFFDIO_COPY as libc::c_ulong,
                    &mut c as *mut UffdioCopy,
                )
            };
            if r == 0 {
                return Ok(Fill::Done);
            }
            let err = std::io::Error::last_os_error();
            if c.copy > 0 {
                done += c.copy as usize;
                continue;
            }
            match err.raw_os_error() {
                // There already, or not registered (any more): the next page.
                Some(libc::EEXIST) | Some(libc::ENOENT) => done += 4096,
                Some(libc::EAGAIN) => return Ok(Fill::Retry),
                Some(libc::ESRCH) => return Ok(Fill::Gone),
                _ => {
                    return Err(SysError::io(
                        format!("UFFDIO_COPY of {} bytes at {:#x}", data.len() - done, c.dst),
                        err,
                    ));
                }
            }
        }
        self.wake(dst, data.len() as u64);
        Ok(Fill::Done)
    }

    /// Map the zero page at the missing page `addr` (a page the image does not have),
    /// waking the threads waiting for it.
    pub fn zeropage(&self, addr: u64) -> Result<Fill> {
        let mut z = UffdioZeropage {
            range: UffdioRange {
                start: addr,
                len: 4096,
            },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: `z` is a live uffdio_zeropage, which the kernel reads and writes.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                UFFDIO_ZEROPAGE as libc::c_ulong,
                &mut z as *mut UffdioZeropage,
            )
        };
        if r == 0 {
            return Ok(Fill::Done);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOENT) => {
                self.wake(addr, 4096);
                Ok(Fill::Done)
            }
            Some(libc::EAGAIN) => Ok(Fill::Retry),
            Some(libc::ESRCH) => Ok(Fill::Gone),
            _ => Err(SysError::io(format!("UFFDIO_ZEROPAGE at {addr:#x}"), err)),
        }
    }

    /// Wake the threads waiting for pages in `[start, start + len)` (they fault again).
    pub fn wake(&self, start: u64, len: u64) {
        let mut range = UffdioRange { start, len };
        let _ = self.ioctl(
            UFFDIO_WAKE,
            &mut range as *mut UffdioRange as u64,
            "UFFDIO_WAKE",
        );
    }

    fn ioctl(&self, req: u32, arg: u64, what: &str) -> Result<()> {
        // SAFETY: every caller passes the address of a live, properly laid out
        // (repr(C)) argument of the size `req` encodes, which the kernel reads and may
        // write for the duration of the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as libc::c_ulong, arg) };
        if r < 0 {
            return Err(SysError::os(what.to_string()));
        }
        Ok(())
    }

    /// Register `[start, start + len)` of the process's memory for missing pages.
    pub fn register(&self, start: u64, len: u64) -> Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: u64::from(UFFDIO_REGISTER_MODE_MISSING),
            ioctls: 0,
        };
        self.ioctl(
            UFFDIO_REGISTER,
            &mut reg as *mut UffdioRegister as u64,
            &format!("UFFDIO_REGISTER {start:#x}+{len:#x}"),
        )
    }

    pub fn unregister(&self, start: u64, len: u64) -> Result<()> {
        let mut range = UffdioRange { start, len };
        self.ioctl(
            UFFDIO_UNREGISTER,
            &mut range as *mut UffdioRange as u64,
            &format!("UFFDIO_UNREGISTER {start:#x}+{len:#x}"),
        )
    }

    /// Fill the missing pages at `dst` (page aligned, in a registered range) with
    /// `data` (whole pages).
    pub fn copy(&self, dst: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let mut c = UffdioCopy {
                dst: dst + done as u64,
                src: data[done..].as_ptr() as u64,
                len: (data.len() - done) as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: `c` is a live UffdioCopy; `src..src+len` lies in `data`, which
            // outlives the call and is only read.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    UFFDIO_COPY as libc::c_ulong,
                    &mut c as *mut UffdioCopy,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            // A partial copy (EAGAIN) says how far it got; go on from there.
            if err.raw_os_error() == Some(libc::EAGAIN) && c.copy > 0 {
                done += c.copy as usize;
                continue;
            }
            return Err(SysError::io(
                format!("UFFDIO_COPY of {} bytes at {:#x}", data.len() - done, c.dst),
                err,
            ));
        }
        Ok(())
    }
}

/// poll(2) on `fds` for up to `timeout_ms` (an interrupted poll returns 0).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize> {
    // SAFETY: polling a slice of pollfds, its length given.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(SysError::io("poll the userfaultfds", e));
    }
    Ok(n as usize)
}

/// Room for the processes a watcher may have to stop (the tree and what it forked).
const WATCH_MAX: usize = 1 << 14;

/// Start the watcher of a lazy restore: a process that shares ckpt's descriptor table
/// (`clone(CLONE_FILES)`), so that the tree's userfaultfds, and those the kernel gives
/// ckpt for the tree's fork children later, stay open if ckpt dies: a thread of the
/// tree waiting for a page then waits on, where with the descriptors closed the kernel
/// would drop the registrations and the program would read zeros. It waits until
/// `server` (a pidfd of ckpt) says ckpt ended, or `done` (a pipe's read end) is
/// readable. Ended before `done`: it stops (SIGSTOP) the processes of `pidfds` and
/// every descendant it finds through /proc (repeatedly, until no new one appears:
/// a stopped process cannot fork), kills them all (SIGKILL), and exits. Returns its PID.
/// The child only makes system calls on memory prepared before the clone (ckpt has
/// other threads: no allocation, no lock).
pub fn spawn_watcher(server: i32, done: i32, pidfds: &[i32], pids: &[i32]) -> Result<i32> {
    let mut found: Vec<i32> = Vec::with_capacity(WATCH_MAX);
    found.extend_from_slice(&pids[..pids.len().min(WATCH_MAX)]);
    let mut dents = vec![0u8; 16 << 10];
    let mut text = vec![0u8; 16 << 10];
    // SAFETY: clone without CLONE_VM and without a new stack works like fork: the child
    // runs on a copy of this stack. It shares the descriptor table (CLONE_FILES).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(SysError::os("clone the lazy restore's watcher"));
    }
    if r > 0 {
        return Ok(r as i32);
    }
    // The child.
    watch(server, done, pidfds, &mut found, &mut dents, &mut text)
}

fn watch(
    server: i32,
    done: i32,
    pidfds: &[i32],
    found: &mut Vec<i32>,
    dents: &mut [u8],
    text: &mut [u8],
) -> ! {
    loop {
        let mut p = [
            libc::pollfd {
                fd: done,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: server,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two pollfds of a local array.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue;
        }
        if p[0].revents != 0 {
            // SAFETY: ending the watcher, which owns nothing that needs cleaning.
            unsafe { libc::_exit(0) };
        }
        if p[1].revents != 0 {
            break;
        }
    }
    for &fd in pidfds {
        // SAFETY: a signal through a pidfd, integer arguments only.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGSTOP, 0usize, 0u32) };
    }
    let mut stopped = 0;
    for _round in 0..64 {
        let before = found.len();
        let mut i = 0;
        while i < found.len() {
            let pid = found[i];
            add_children(pid, found, dents, text);
            i += 1;
        }
        for &pid in &found[stopped..] {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        stopped = found.len();
        if found.len() == before && _round > 0 {
            break;
        }
    }
    for &fd in pidfds {
        // SAFETY: a signal through a pidfd, integer arguments only.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, 0usize, 0u32) };
    }
    for &pid in found.iter().skip(pidfds.len()) {
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // SAFETY: ending the watcher.
    unsafe { libc::_exit(0) }
}

/// Write `parts` (text and numbers) into `buf` as a NUL-terminated path.
fn path_of(buf: &mut [u8; 64], parts: &[(&[u8], Option<i32>)]) {
    let mut at = 0;
    for (s, n) in parts {
        for &b in *s {
            if at < 63 {
                buf[at] = b;
                at += 1;
            }
        }
        if let Some(n) = n {
            let mut digits = [0u8; 12];
            let (mut v, mut k) = (*n as u32, 0);
            loop {
                digits[k] = b'0' + (v % 10) as u8;
                k += 1;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            while k > 0 && at < 63 {
                k -= 1;
                buf[at] = digits[k];
                at += 1;
            }
        }
    }
    buf[at] = 0;
}

/// Add the children of every thread of `pid` (/proc/PID/task/TID/children) to `found`
/// (each once).
fn add_children(pid: i32, found: &mut Vec<i32>, dents: &mut [u8], text: &mut [u8]) {
    let mut path = [0u8; 64];
    path_of(&mut path, &[(b"/proc/", Some(pid)), (b"/task", None)]);
    // SAFETY: opening a NUL-terminated path in a local buffer.
    let dir = unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return;
    }
    loop {
        // SAFETY: getdents64 into a buffer of the given length.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir, dents.as_mut_ptr(), dents.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            let reclen = u16::from_le_bytes([dents[off + 16], dents[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &dents[off + 19..(off + reclen).min(n as usize)];
            let mut tid: i32 = 0;
            let mut ok = false;
            for &b in name {
                if b == 0 {
                    break;
                }
                if !b.is_ascii_digit() {
                    ok = false;
                    break;
                }
                tid = tid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                ok = true;
            }
            off += reclen;
            if !ok {
                continue;
            }
            path_of(
                &mut path,
                &[
                    (b"/proc/", Some(pid)),
                    (b"/task/", Some(tid)),
                    (b"/children", None),
                ],
            );
            // SAFETY: as above.
            let f = unsafe {
                libc::open(
                    path.as_ptr() as *const libc::c_char,
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if f < 0 {
                continue;
            }
            // SAFETY: reading into a buffer of the given length.
            let len = unsafe { libc::read(f, text.as_mut_ptr() as *mut libc::c_void, text.len()) };
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(f) };
            let mut v: i32 = 0;
            let mut any = false;
            for &b in text
                .iter()
                .take(len.max(0) as usize)
                .chain(std::iter::once(&b' '))
            {
                if b.is_ascii_digit() {
                    v = v.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                    any = true;
                } else if any {
                    if !found.contains(&v) && found.len() < found.capacity() {
                        found.push(v);
                    }
                    v = 0;
                    any = false;
                }
            }
        }
    }
    // SAFETY: closing the directory opened above.
    unsafe { libc::close(dir) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own memory, through a userfaultfd we created: registered pages are filled
    /// by `copy`, pages already there are refused (not overwritten), and the area reads
    /// back normally after unregistering.
    #[test]
    fn copy_fills_registered_pages() {
        // SAFETY: a syscall with integer arguments returning a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if fd < 0 {
            eprintln!("no userfaultfd here: {}", std::io::Error::last_os_error());
            return;
        }
        let me = std::process::id() as i32;
        let u = Uffd::adopt(me, fd as i32).expect("adopt");
        // SAFETY: closing our own new descriptor; `u` holds a duplicate of it.
        unsafe { libc::close(fd as i32) };
        let len = 4 * 4096;
        // SAFETY: a new anonymous mapping at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let at = p as u64;
        u.register(at, len as u64).expect("register");
        let data: Vec<u8> = (0..2 * 4096).map(|i| (i % 251) as u8).collect();
        u.copy(at + 4096, &data).expect("copy");
        // Already there: refused (EEXIST), not overwritten.
        assert!(u.copy(at + 4096, &data[..4096]).is_err());
        u.unregister(at, len as u64).expect("unregister");
        // SAFETY: the mapping is ours, len bytes long, readable.
        let mem = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        assert_eq!(&mem[4096..3 * 4096], &data[..]);
        assert!(mem[..4096].iter().all(|&b| b == 0));
        assert!(mem[3 * 4096..].iter().all(|&b| b == 0));
        // SAFETY: unmapping the mapping made above; `mem` is not used after.
        unsafe { libc::munmap(p, len) };
    }
}
