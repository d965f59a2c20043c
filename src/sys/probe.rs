//! Probes of kernel facilities restore relies on (`restore::kernel`): each asks this
//! kernel whether it knows a system call, an option or a flag, in a way that changes
//! nothing — an invalid argument the kernel checks only after recognising the request,
//! a query, or a socket that is closed again — so that plan can refuse an image whose
//! restore would otherwise fail half-way on an older or differently built kernel.
//!
//! Each probe returns `Ok(())` when the facility is there, or `Err(why)` with the
//! kernel's answer.

use super::{Result, SysError};

/// The errno of the last failed libc call.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn answer(what: &str, e: i32) -> String {
    format!("{what} returned {}", super::errno_name(e))
}

/// `clone3` with a `set_tid` array (Linux 5.5): a `clone_args` of the size that has
/// `set_tid` with an invalid exit signal. A kernel that knows `set_tid` reads the whole
/// structure and then refuses the exit signal (EINVAL); one without clone3 says ENOSYS,
/// one with clone3 but without `set_tid` refuses the larger structure (E2BIG). No
/// process is created either way.
pub fn clone3_set_tid() -> std::result::Result<(), String> {
    let tid: libc::pid_t = 1;
    // libc's clone_args ends with `cgroup`: CLONE_ARGS_SIZE_VER2, 88 bytes.
    let args = libc::clone_args {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: u64::MAX,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        cgroup: 0,
    };
    let size = std::mem::size_of::<libc::clone_args>();
    // SAFETY: `args` is a valid clone_args of `size` bytes and `tid` a one-element
    // set_tid array, both alive across the call; the exit signal is invalid, which every
    // kernel that reads the structure refuses before creating anything.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, size) };
    let e = errno();
    match r {
        // Cannot happen with an invalid exit signal; a child would be a copy of us that
        // must not run on.
        0 => {
            // SAFETY: _exit has no preconditions and never returns.
            unsafe { libc::_exit(0) }
        }
        r if r > 0 => {
            let _ = super::process::kill(r as i32, libc::SIGKILL);
            let _ = super::process::wait_exit(r as i32);
            Ok(())
        }
        _ if e == libc::EINVAL => Ok(()),
        _ => Err(answer("clone3 with set_tid", e)),
    }
}

/// `pidfd_getfd` (Linux 5.6): on descriptor -1 it answers EBADF if it exists.
pub fn pidfd_getfd() -> std::result::Result<(), String> {
    // SAFETY: integer arguments only; -1 is no descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    match (r, errno()) {
        (_, libc::EBADF) => Ok(()),
        (r, _) if r >= 0 => {
            // SAFETY: a descriptor we would own; not expected with -1.
            unsafe { libc::close(r as i32) };
            Ok(())
        }
        (_, e) => Err(answer("pidfd_getfd", e)),
    }
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)`: only a kernel built with
/// CONFIG_CHECKPOINT_RESTORE knows `PR_SET_MM_MAP`; the query just reports the size of
/// its structure.
pub fn set_mm_map() -> std::result::Result<(), String> {
    use linux_raw_sys::prctl::PR_SET_MM_MAP_SIZE;
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE writes one unsigned int to the address given, `size`.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::c_ulong::from(PR_SET_MM_MAP_SIZE),
            &mut size as *mut libc::c_uint as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r == 0 && size > 0 {
        Ok(())
    } else {
        Err(answer("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)", errno()))
    }
}

// From asm/prctl.h (x86); neither libc nor linux-raw-sys has them.
pub const ARCH_MAP_VDSO_32: u64 = 0x2002;
pub const ARCH_MAP_VDSO_64: u64 = 0x2003;

/// `arch_prctl(ARCH_MAP_VDSO_64 or _32)` (CONFIG_CHECKPOINT_RESTORE; the 32-bit one also
/// needs IA32 emulation built in). Asked of ckpt itself, which has a vDSO mapped, a
/// kernel that knows the request refuses to map a second one (EEXIST); one that does not
/// says EINVAL. Without a vDSO of our own the request would map one, so it is not made.
pub fn map_vdso(code: u64) -> std::result::Result<(), String> {
    if super::process::own_vdso() == 0 {
        return Err("ckpt itself has no vDSO to probe with".to_string());
    }
    // SAFETY: with a vDSO already mapped the kernel only checks and refuses (EEXIST);
    // nothing in this process changes.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, code, 0u64) };
    match (r, errno()) {
        (_, libc::EEXIST) => Ok(()),
        (r, _) if r >= 0 => Ok(()),
        (_, e) => Err(answer(&format!("arch_prctl({code:#x})"), e)),
    }
}

/// `rseq` (Linux 4.18): a registration of length 0 is refused (EINVAL) by a kernel that
/// has the call.
pub fn rseq() -> std::result::Result<(), String> {
    // SAFETY: a null area of length 0 is refused before anything is read or changed.
    let r = unsafe { libc::syscall(libc::SYS_rseq, 0usize, 0u32, 0i32, 0u32) };
    match (r, errno()) {
        (_, libc::EINVAL) | (_, libc::EBUSY) => Ok(()),
        (r, _) if r >= 0 => Ok(()),
        (_, e) => Err(answer("rseq", e)),
    }
}

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET)`: reads the
/// mode; kernels without it refuse the option (EINVAL).
pub fn timer_restore_ids() -> std::result::Result<(), String> {
    use linux_raw_sys::prctl::{PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET};
    // SAFETY: the GET form only returns the current mode.
    let r = unsafe {
        libc::prctl(
            PR_TIMER_CREATE_RESTORE_IDS as libc::c_int,
            libc::c_ulong::from(PR_TIMER_CREATE_RESTORE_IDS_GET),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r >= 0 {
        Ok(())
    } else {
        Err(answer("prctl(PR_TIMER_CREATE_RESTORE_IDS)", errno()))
    }
}

/// `madvise(MADV_GUARD_INSTALL)` (Linux 6.13) on an empty range: the kernel checks that
/// it knows the advice before it looks at the (empty) range.
pub fn guard_install() -> std::result::Result<(), String> {
    let advice = linux_raw_sys::general::MADV_GUARD_INSTALL as libc::c_int;
    // SAFETY: a zero-length range touches no memory; the address is page-aligned.
    let r = unsafe { libc::madvise(0x10000 as *mut libc::c_void, 0, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(answer("madvise(MADV_GUARD_INSTALL)", errno()))
    }
}

/// `mmap` with the `MAP_DROPPABLE` map type (Linux 6.11, 64-bit): one inaccessible page
/// mapped in this process and unmapped again. (No invalid argument tells it apart: an
/// older kernel refuses the unknown map type with the same EINVAL.)
pub fn map_droppable() -> std::result::Result<(), String> {
    let flags = linux_raw_sys::general::MAP_DROPPABLE as libc::c_int | libc::MAP_ANONYMOUS;
    // SAFETY: a new PROT_NONE page where the kernel chooses, unmapped below; nothing of
    // this process is touched.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(answer("mmap(MAP_DROPPABLE)", errno()));
    }
    // SAFETY: exactly the page mapped above, which nothing else knows of.
    unsafe { libc::munmap(p, 4096) };
    Ok(())
}

/// TCP repair mode with its window option (Linux 4.8; needs CAP_NET_ADMIN): on a fresh
/// TCP socket, switched into repair mode and closed again (it was never bound or
/// connected, so nothing goes on the network).
pub fn tcp_repair() -> std::result::Result<(), String> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsRawFd;
    let s = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| answer("socket(AF_INET, SOCK_STREAM)", e.raw_os_error()))?;
    let one: libc::c_int = 1;
    // SAFETY: an int option, passed by pointer with its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(answer("setsockopt(TCP_REPAIR)", errno()));
    }
    let mut w = [0u32; 5];
    let mut len = std::mem::size_of_val(&w) as libc::socklen_t;
    // SAFETY: `w` is a 20-byte struct tcp_repair_window; `len` says so.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_WINDOW,
            w.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(answer("getsockopt(TCP_REPAIR_WINDOW)", errno()));
    }
    Ok(())
}

/// The 32-bit vDSO this kernel gives ia32 programs: (xxh3 of its text, its size). ckpt
/// is a 64-bit program with no 32-bit vDSO of its own, so a throwaway child (a fork of
/// ckpt) unmaps its 64-bit vDSO and data pages, maps the 32-bit one with
/// `ARCH_MAP_VDSO_32`, says so through a pipe and waits; ckpt reads the text from the
/// child's memory, then kills and reaps it. The child runs raw system calls only (it may
/// be the fork of a multi-threaded process) and dies with ckpt (PDEATHSIG, and the
/// pipe's end).
pub fn vdso32() -> Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let me = std::process::id() as i32;
    let special: Vec<(u64, u64)> = super::proc::maps(me)?
        .iter()
        .filter(|m| m.path == b"[vdso]" || m.path == b"[vvar]" || m.path == b"[vvar_vclock]")
        .map(|m| (m.start, m.end - m.start))
        .collect();
    let hint = special.iter().map(|s| s.0).min().unwrap_or(0);
    let (ready_r, ready_w) = super::process::pipe()?;
    let (hold_r, hold_w) = super::process::pipe()?;
    let (rw, hr) = (ready_w.as_raw_fd(), hold_r.as_raw_fd());
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: the child (0) runs only raw system calls on values computed before the
    // fork (`special`'s buffer is not freed in it), then _exit: no lock or allocator
    // state of a possibly multi-threaded parent is used.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls only, see above; _exit never returns.
        unsafe {
            super::process::die_with_parent(parent);
            for &(start, len) in &special {
                libc::syscall(libc::SYS_munmap, start, len);
            }
            let r: i64 = libc::syscall(libc::SYS_arch_prctl, ARCH_MAP_VDSO_32, hint);
            let v: i64 = if r < 0 {
                -i64::from(*libc::__errno_location())
            } else {
                0
            };
            libc::syscall(libc::SYS_write, rw, (&v as *const i64).cast::<u8>(), 8usize);
            let mut b = 0u8;
            libc::syscall(libc::SYS_read, hr, &mut b as *mut u8, 1usize);
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(SysError::os("fork a child to map the 32-bit vDSO"));
    }
    drop((ready_w, hold_r));
    let res = (|| {
        let mut b = [0u8; 8];
        let mut f = std::fs::File::from(ready_r);
        std::io::Read::read_exact(&mut f, &mut b)
            .map_err(|e| SysError::io("the 32-bit vDSO child died", e))?;
        let v = i64::from_le_bytes(b);
        if v < 0 {
            return Err(SysError::Other(format!(
                "arch_prctl(ARCH_MAP_VDSO_32) returned {}",
                super::errno_name(-v as i32)
            )));
        }
        let maps = super::proc::maps(pid)?;
        let vdso = maps
            .iter()
            .find(|m| m.path == b"[vdso]")
            .ok_or_else(|| SysError::Other("the 32-bit vDSO was not mapped".to_string()))?;
        let len = vdso.end - vdso.start;
        if len > 1 << 20 {
            return Err(SysError::Other(format!("a 32-bit vDSO of {len} bytes")));
        }
        let mut code = vec![0u8; len as usize];
        super::mem::RemoteMem::open(pid)?.read(vdso.start, &mut code)?;
        Ok((xxhash_rust::xxh3::xxh3_64(&code), len))
    })();
    drop(hold_w);
    let _ = super::process::kill(pid, libc::SIGKILL);
    let _ = super::process::wait_exit(pid);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_restore_needs() {
        // The test machines run a recent kernel with CONFIG_CHECKPOINT_RESTORE.
        assert_eq!(clone3_set_tid(), Ok(()));
        assert_eq!(pidfd_getfd(), Ok(()));
        assert_eq!(set_mm_map(), Ok(()));
        assert_eq!(map_vdso(ARCH_MAP_VDSO_64), Ok(()));
        assert_eq!(rseq(), Ok(()));
        assert_eq!(guard_install(), Ok(()));
        assert_eq!(map_droppable(), Ok(()));
        // An option no kernel has is refused the way a missing one would be.
        assert!(map_vdso(0x2009).is_err());
    }
}
