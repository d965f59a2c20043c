//! ptrace(2) requests used by ckpt, as safe functions.
//!
//! Every request here passes the kernel either a null pointer or a pointer to a local
//! buffer of the exact size the request documents; that is the invariant that makes each
//! `unsafe` call sound.

use super::{Result, SysError, check};
use crate::arch::Regs;

use linux_raw_sys::elf_uapi::NT_X86_XSTATE;
use linux_raw_sys::ptrace::{PTRACE_GET_THREAD_AREA, PTRACE_SET_THREAD_AREA};

pub const PTRACE_EVENT_STOP: i32 = linux_raw_sys::ptrace::PTRACE_EVENT_STOP as i32;

/// How a traced task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// PTRACE_EVENT_STOP (after PTRACE_INTERRUPT, or a group-stop of a seized task);
    /// the signal is SIGTRAP for an interrupt, or the stopping signal for a group-stop.
    Event(i32),
    /// syscall-enter or syscall-exit stop (PTRACE_O_TRACESYSGOOD).
    Syscall,
    /// signal-delivery-stop with this signal.
    Signal(i32),
    /// Some other ptrace event (status >> 16).
    OtherEvent(i32),
    /// The task exited with this code.
    Exited(i32),
    /// The task was killed by this signal.
    Killed(i32),
}

/// Wait for `pid` (a traced task or a child) to change state.
pub fn wait(pid: i32) -> Result<Stop> {
    let all = rustix::process::WaitOptions::from_bits_retain(libc::__WALL as u32);
    let status = super::process::waitpid_raw(pid, all)
        .map_err(|e| super::rerr(format!("waitpid({pid})"), e))?;
    Ok(decode_status(status))
}

/// The stop `pid` (a traced task) is in already, if any, without waiting for one.
pub fn try_wait(pid: i32) -> Result<Option<Stop>> {
    let opts =
        rustix::process::WaitOptions::from_bits_retain((libc::__WALL | libc::WNOHANG) as u32);
    match super::process::waitpid_raw(pid, opts) {
        Ok(status) => Ok(Some(decode_status(status))),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(super::rerr(format!("waitpid({pid}, WNOHANG)"), e)),
    }
}

pub fn decode_status(status: libc::c_int) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Killed(libc::WTERMSIG(status));
    }
    let sig = libc::WSTOPSIG(status);
    let event = (status >> 16) & 0xff;
    if event == PTRACE_EVENT_STOP {
        return Stop::Event(sig);
    }
    if event != 0 {
        return Stop::OtherEvent(event);
    }
    if sig == libc::SIGTRAP | 0x80 {
        return Stop::Syscall;
    }
    Stop::Signal(sig)
}

fn req(
    request: libc::c_uint,
    pid: i32,
    addr: usize,
    data: usize,
    what: impl FnOnce() -> String,
) -> Result<libc::c_long> {
    // SAFETY: callers pass addr/data that are either plain integers or pointers to live
    // buffers of the size the request requires (see each caller).
    let r = unsafe { libc::ptrace(request, pid, addr, data) };
    check(r, what)
}

/// PTRACE_SEIZE with options; the task keeps running.
pub fn seize(pid: i32, options: i32) -> Result<()> {
    req(libc::PTRACE_SEIZE, pid, 0, options as usize, || {
        format!("cannot attach to process {pid} (PTRACE_SEIZE)")
    })?;
    Ok(())
}

pub fn interrupt(pid: i32) -> Result<()> {
    req(libc::PTRACE_INTERRUPT, pid, 0, 0, || {
        format!("PTRACE_INTERRUPT {pid}")
    })?;
    Ok(())
}

pub fn set_options(pid: i32, options: i32) -> Result<()> {
    req(libc::PTRACE_SETOPTIONS, pid, 0, options as usize, || {
        format!("PTRACE_SETOPTIONS {pid}")
    })?;
    Ok(())
}

pub fn detach(pid: i32, sig: i32) -> Result<()> {
    req(libc::PTRACE_DETACH, pid, 0, sig as usize, || {
        format!("PTRACE_DETACH {pid}")
    })?;
    Ok(())
}

/// Resume until the next syscall-enter/exit stop.
pub fn syscall(pid: i32, sig: i32) -> Result<()> {
    req(libc::PTRACE_SYSCALL, pid, 0, sig as usize, || {
        format!("PTRACE_SYSCALL {pid}")
    })?;
    Ok(())
}

pub fn cont(pid: i32, sig: i32) -> Result<()> {
    req(libc::PTRACE_CONT, pid, 0, sig as usize, || {
        format!("PTRACE_CONT {pid}")
    })?;
    Ok(())
}

pub fn get_regs(pid: i32) -> Result<Regs> {
    let mut regs = Regs::default();
    // Regs is #[repr(C)] with the exact layout of struct user_regs_struct (27 u64).
    req(
        libc::PTRACE_GETREGS,
        pid,
        0,
        &mut regs as *mut Regs as usize,
        || format!("PTRACE_GETREGS {pid}"),
    )?;
    Ok(regs)
}

pub fn set_regs(pid: i32, regs: &Regs) -> Result<()> {
    req(
        libc::PTRACE_SETREGS,
        pid,
        0,
        regs as *const Regs as usize,
        || format!("PTRACE_SETREGS {pid}"),
    )?;
    Ok(())
}

/// Read the NT_X86_XSTATE regset. The kernel writes at most `cap` bytes and reports the
/// true size in iov_len; the buffer is truncated to that.
pub fn get_xstate(pid: i32, cap: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    req(
        libc::PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
        || format!("PTRACE_GETREGSET NT_X86_XSTATE {pid}"),
    )?;
    let n = iov.iov_len.min(cap);
    buf.truncate(n);
    Ok(buf)
}

pub fn set_xstate(pid: i32, data: &[u8]) -> Result<()> {
    let mut copy = data.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    req(
        libc::PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut libc::iovec as usize,
        || {
            format!(
                "PTRACE_SETREGSET NT_X86_XSTATE {pid} ({} bytes)",
                data.len()
            )
        },
    )?;
    Ok(())
}

pub fn peek_user(pid: i32, offset: usize) -> Result<u64> {
    // PTRACE_PEEKUSER returns the word itself; -1 is a valid value, so errno must be
    // cleared first and checked after.
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PEEKUSER takes an offset, not a pointer.
    let r = unsafe { libc::ptrace(libc::PTRACE_PEEKUSER, pid, offset, 0usize) };
    // SAFETY: as above.
    let e = unsafe { *libc::__errno_location() };
    if r == -1 && e != 0 {
        return Err(SysError::io(
            format!("PTRACE_PEEKUSER {pid} at {offset}"),
            std::io::Error::from_raw_os_error(e),
        ));
    }
    Ok(r as u64)
}

pub fn poke_user(pid: i32, offset: usize, value: u64) -> Result<()> {
    req(libc::PTRACE_POKEUSER, pid, offset, value as usize, || {
        format!("PTRACE_POKEUSER {pid} at {offset} = {value:#x}")
    })?;
    Ok(())
}

pub fn get_sigmask(pid: i32) -> Result<u64> {
    let mut mask: u64 = 0;
    req(
        libc::PTRACE_GETSIGMASK,
        pid,
        8,
        &mut mask as *mut u64 as usize,
        || format!("PTRACE_GETSIGMASK {pid}"),
    )?;
    Ok(mask)
}

pub fn set_sigmask(pid: i32, mask: u64) -> Result<()> {
    req(
        libc::PTRACE_SETSIGMASK,
        pid,
        8,
        &mask as *const u64 as usize,
        || format!("PTRACE_SETSIGMASK {pid}"),
    )?;
    Ok(())
}

/// Whether the tracee, stopped as a signal-delivery-stop would show, is in a group-stop
/// instead: PTRACE_GETSIGINFO then fails with EINVAL (there is no signal).
pub fn in_group_stop(pid: i32) -> Result<bool> {
    let mut buf = [0u8; 128];
    match req(
        libc::PTRACE_GETSIGINFO,
        pid,
        0,
        buf.as_mut_ptr() as usize,
        || format!("PTRACE_GETSIGINFO {pid}"),
    ) {
        Ok(_) => Ok(false),
        Err(e) if e.errno() == Some(libc::EINVAL) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Pending signals of the thread (shared = false) or the thread group (shared = true),
/// each as 128 raw siginfo bytes. Reading does not dequeue them.
pub fn peek_siginfo(pid: i32, shared: bool) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 128 * 32];
    loop {
        let args = libc::ptrace_peeksiginfo_args {
            off: out.len() as u64,
            flags: if shared {
                libc::PTRACE_PEEKSIGINFO_SHARED
            } else {
                0
            },
            nr: 32,
        };
        let n = req(
            libc::PTRACE_PEEKSIGINFO,
            pid,
            &args as *const libc::ptrace_peeksiginfo_args as usize,
            buf.as_mut_ptr() as usize,
            || format!("PTRACE_PEEKSIGINFO {pid}"),
        )? as usize;
        if n == 0 {
            break;
        }
        for i in 0..n.min(32) {
            out.push(buf[i * 128..(i + 1) * 128].to_vec());
        }
        if out.len() > 100_000 {
            return Err(SysError::Other(format!(
                "process {pid} has an implausible number of pending signals"
            )));
        }
    }
    Ok(out)
}

/// The thread's rseq registration: (address, length, signature, flags); address 0 if none.
pub fn get_rseq(pid: i32) -> Result<(u64, u32, u32, u32)> {
    let mut c = libc::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    req(
        libc::PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<libc::ptrace_rseq_configuration>(),
        &mut c as *mut libc::ptrace_rseq_configuration as usize,
        || format!("PTRACE_GET_RSEQ_CONFIGURATION {pid}"),
    )?;
    Ok((c.rseq_abi_pointer, c.rseq_abi_size, c.signature, c.flags))
}

/// Wait for a newly created (auto-attached) task's first stop and read its registers.
pub fn get_regs_after_stop(tid: i32, what: &str) -> Result<Regs> {
    match wait(tid)? {
        Stop::Signal(_) | Stop::Event(_) => get_regs(tid),
        other => Err(SysError::Other(format!(
            "{what}: the new task did not stop as expected ({other:?})"
        ))),
    }
}

/// PTRACE_GET_THREAD_AREA: the GDT TLS entry `index` as `struct user_desc` words.
pub fn get_thread_area(tid: i32, index: u32) -> Result<[u32; 4]> {
    let mut d = [0u32; 4];
    req(
        PTRACE_GET_THREAD_AREA,
        tid,
        index as usize,
        d.as_mut_ptr() as usize,
        || format!("PTRACE_GET_THREAD_AREA {tid} entry {index}"),
    )?;
    Ok(d)
}

/// PTRACE_SET_THREAD_AREA: set the GDT TLS entry `d[0]`.
pub fn set_thread_area(tid: i32, d: &[u32; 4]) -> Result<()> {
    req(
        PTRACE_SET_THREAD_AREA,
        tid,
        d[0] as usize,
        d.as_ptr() as usize,
        || format!("PTRACE_SET_THREAD_AREA {tid} entry {}", d[0]),
    )?;
    Ok(())
}

/// The number of instructions of the `index`th seccomp filter of `tid` (0: the oldest)
/// and, with `out`, the instructions themselves (8 bytes each, `struct sock_filter`).
/// ENOENT past the oldest filter.
pub fn seccomp_filter(tid: i32, index: usize) -> Result<Vec<[u8; 8]>> {
    let req_nr = linux_raw_sys::ptrace::PTRACE_SECCOMP_GET_FILTER;
    // With a null buffer the request only counts the instructions.
    let n = req(req_nr, tid, index, 0, || {
        format!("PTRACE_SECCOMP_GET_FILTER {tid} #{index}")
    })?;
    let mut buf = vec![[0u8; 8]; n as usize];
    // The buffer holds exactly `n` instructions, the count the kernel gave; the filter of
    // a stopped tracee cannot change in between (filters are never removed or altered).
    let got = req(req_nr, tid, index, buf.as_mut_ptr() as usize, || {
        format!("PTRACE_SECCOMP_GET_FILTER {tid} #{index}")
    })?;
    buf.truncate(got as usize);
    Ok(buf)
}

/// The flags of the `index`th seccomp filter of `tid` (0: the oldest) that the kernel
/// remembers (only SECCOMP_FILTER_FLAG_LOG today).
pub fn seccomp_flags(tid: i32, index: u64) -> Result<u64> {
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut md = [index, 0u64];
    req(
        linux_raw_sys::ptrace::PTRACE_SECCOMP_GET_METADATA,
        tid,
        std::mem::size_of_val(&md),
        md.as_mut_ptr() as usize,
        || format!("PTRACE_SECCOMP_GET_METADATA {tid} #{index}"),
    )?;
    Ok(md[1])
}
