//! Write tracking for incremental dumps: a userfaultfd of another process in
//! asynchronous write-protect mode (`UFFD_FEATURE_WP_ASYNC`: a write to a protected page
//! is not reported to anyone, the kernel only clears the page's protection and lets the
//! write go on), and `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` on that process's
//! pagemap, which lists the pages written since the last scan and protects them again in
//! the same walk. Both work from outside the tracked process: the userfaultfd acts on
//! the memory of the process that created it, whoever holds it; the registration lasts
//! as long as the userfaultfd file is open anywhere, and closing the last descriptor of
//! it unregisters every area (the kernel clears the protection bits and the areas' `uw`
//! flag).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{Result, SysError};

use linux_raw_sys::general::{
    UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED, UFFDIO_REGISTER_MODE_WP,
    uffdio_api as UffdioApi, uffdio_range as UffdioRange, uffdio_register as UffdioRegister,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER};

/// A userfaultfd of another process, enabled for asynchronous write protection.
pub struct WpUffd {
    fd: OwnedFd,
}

fn uffd_ioctl(fd: BorrowedFd<'_>, req: u32, arg: u64, what: &str) -> Result<()> {
    // SAFETY: every caller passes the address of a live, repr(C) argument of the size
    // `req` encodes, which the kernel reads and may write during the call only.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg) };
    if r < 0 {
        return Err(SysError::os(what.to_string()));
    }
    Ok(())
}

impl WpUffd {
    /// Take descriptor `fd` of process `pid` (a userfaultfd it just created) and enable
    /// it with `UFFD_FEATURE_WP_ASYNC` and `UFFD_FEATURE_WP_UNPOPULATED` (pages never
    /// touched are protected too, so their first write is seen).
    pub fn adopt(pid: i32, fd: i32) -> Result<Self> {
        let u = Self {
            fd: super::process::steal_fd(pid, fd)?,
        };
        let mut api = UffdioApi {
            api: u64::from(UFFD_API),
            features: u64::from(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED),
            ioctls: 0,
        };
        uffd_ioctl(
            u.fd.as_fd(),
            UFFDIO_API,
            &mut api as *mut UffdioApi as u64,
            "UFFDIO_API (WP_ASYNC | WP_UNPOPULATED)",
        )?;
        Ok(u)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Register `[start, start + len)` for write protection.
    pub fn register(&self, start: u64, len: u64) -> Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: u64::from(UFFDIO_REGISTER_MODE_WP),
            ioctls: 0,
        };
        uffd_ioctl(
            self.fd.as_fd(),
            UFFDIO_REGISTER,
            &mut reg as *mut UffdioRegister as u64,
            &format!("UFFDIO_REGISTER (WP) {start:#x}+{len:#x}"),
        )
    }

    /// Unregister `[start, start + len)`: its pages lose their protection. (The holder
    /// only closes the descriptor, which unregisters everything.)
    #[cfg(test)]
    pub fn unregister(&self, start: u64, len: u64) -> Result<()> {
        let mut range = UffdioRange { start, len };
        uffd_ioctl(
            self.fd.as_fd(),
            linux_raw_sys::ioctl::UFFDIO_UNREGISTER,
            &mut range as *mut UffdioRange as u64,
            &format!("UFFDIO_UNREGISTER {start:#x}+{len:#x}"),
        )
    }
}

/// The pages of `[start, end)` of the process whose pagemap `pagemap` is (an open
/// /proc/PID/pagemap) written since they were last protected, as [start, end) ranges in
/// address order; every one of them is protected again by the same call. The area must
/// be registered with a [`WpUffd`] (else the kernel fails the call with EPERM:
/// `PM_SCAN_CHECK_WPASYNC`).
pub fn written_and_protect(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, u64)>> {
    use linux_raw_sys::btrfs::{
        PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING, page_region, pm_scan_arg,
    };
    // _IOWR('f', 16, struct pm_scan_arg) of linux/fs.h (as in sys::proc::pagemap).
    const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
    const BATCH: usize = 512;
    let mut regions = [page_region {
        start: 0,
        end: 0,
        categories: 0,
    }; BATCH];
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = start;
    while at < end {
        let mut arg = pm_scan_arg {
            size: std::mem::size_of::<pm_scan_arg>() as u64,
            flags: u64::from(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC),
            start: at,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: BATCH as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: u64::from(PAGE_IS_WRITTEN),
            category_anyof_mask: 0,
            return_mask: u64::from(PAGE_IS_WRITTEN),
        };
        // SAFETY: `arg` is a pm_scan_arg of the size it declares; its `vec` points to
        // `regions`, BATCH page_region structs we own mutably for the call. The kernel
        // writes only there and to `arg`.
        let n = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut pm_scan_arg,
            )
        };
        if n < 0 {
            return Err(SysError::os(format!(
                "PAGEMAP_SCAN (write-protect written pages) at {at:#x}"
            )));
        }
        let n = (n as usize).min(BATCH);
        for r in &regions[..n] {
            match out.last_mut() {
                Some(l) if l.1 == r.start => l.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if arg.walk_end <= at {
            return Err(SysError::Other(format!(
                "PAGEMAP_SCAN made no progress at {at:#x}"
            )));
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// Clear close-on-exec on `fd` (a descriptor handed to a program ckpt starts).
pub fn inheritable(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
        .map_err(|e| SysError::Other(format!("fcntl(F_SETFD): {e}")))
}

/// Take ownership of descriptor `fd` that this process inherited from the ckpt that
/// started it (the tracking holder), after checking that it is a userfaultfd.
pub fn inherited(fd: i32) -> Result<OwnedFd> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|e| SysError::io(format!("descriptor {fd}"), e))?;
    if link.as_os_str() != "anon_inode:[userfaultfd]" {
        return Err(SysError::Other(format!(
            "descriptor {fd} is {}, not a userfaultfd",
            link.display()
        )));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is open (its /proc link was just read) and no other object of this
    // process owns it: it was inherited for this call alone, named on the command line.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own memory through a userfaultfd we created: after a first scan (which
    /// protects everything), the scan finds exactly the pages written since, then
    /// nothing; unregistering lets writes through unseen.
    #[test]
    fn finds_written_pages_and_protects_again() {
        // SAFETY: a syscall with integer arguments returning a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if fd < 0 {
            eprintln!("no userfaultfd here: {}", std::io::Error::last_os_error());
            return;
        }
        let me = std::process::id() as i32;
        let u = match WpUffd::adopt(me, fd as i32) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("no WP_ASYNC here: {e}");
                return;
            }
        };
        // SAFETY: closing our own new descriptor; `u` holds a duplicate.
        unsafe { libc::close(fd as i32) };
        const N: usize = 64;
        // SAFETY: a new private anonymous mapping, used only here.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                N * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let at = p as u64;
        let end = at + (N * 4096) as u64;
        let b = p as *mut u8;
        // SAFETY: offsets inside the mapping.
        unsafe {
            libc::madvise(p, N * 4096, libc::MADV_NOHUGEPAGE);
            for i in 0..8 {
                b.add(i * 4096).write_volatile(1);
            }
        }
        u.register(at, end - at).expect("register");
        let pm = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        // The first scan protects every page (pages never touched read as written
        // until then).
        let first = written_and_protect(&pm, at, end).expect("scan");
        assert!(
            first
                .first()
                .is_some_and(|r| r.0 == at && r.1 >= at + 8 * 4096)
        );
        assert!(written_and_protect(&pm, at, end).expect("scan").is_empty());
        // SAFETY: offsets inside the mapping.
        unsafe {
            b.add(3 * 4096).write_volatile(2);
            b.add(40 * 4096).write_volatile(2);
            b.add(41 * 4096).write_volatile(2);
        }
        let w = written_and_protect(&pm, at, end).expect("scan");
        assert_eq!(
            w,
            vec![
                (at + 3 * 4096, at + 4 * 4096),
                (at + 40 * 4096, at + 42 * 4096)
            ]
        );
        u.unregister(at, end - at).expect("unregister");
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, N * 4096) };
    }
}
