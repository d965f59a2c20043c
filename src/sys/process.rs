//! Processes: creating one with a chosen PID (clone3 set_tid), signals, limits, and
//! small queries that need a syscall.

use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{Result, SysError, check, rerr};

/// The kernel's `struct clone_args` (linux/sched.h), all of it zero.
pub(super) fn clone_args() -> libc::clone_args {
    libc::clone_args {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: 0,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    }
}

/// `pid` as a rustix [`Pid`]: only a single process (> 0) qualifies; the process
/// groups and "any" that 0 and negative values mean to kill(2) and waitpid(2) are not
/// used by ckpt, and are refused with `errno`.
fn one_pid(pid: i32, errno: Errno) -> std::result::Result<Pid, Errno> {
    if pid > 0 {
        Pid::from_raw(pid).ok_or(errno)
    } else {
        Err(errno)
    }
}

/// This process's PID.
pub(crate) fn own_pid() -> libc::pid_t {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// waitpid(2) of one child with `options`, retried on EINTR: its raw wait status.
pub(crate) fn waitpid_raw(pid: i32, options: WaitOptions) -> std::result::Result<i32, Errno> {
    let p = one_pid(pid, Errno::CHILD)?;
    loop {
        match rustix::process::waitpid(Some(p), options) {
            Ok(Some((_, st))) => return Ok(st.as_raw()),
            // Only with WNOHANG: nothing to report yet.
            Ok(None) => return Err(Errno::AGAIN),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// clone3 without CLONE_VM: a copy-on-write copy of this process (0 in the child, the
/// child's PID in the parent, -1 with errno on error). What the child may do depends on
/// the caller: see each one.
pub(super) fn clone3(args: &libc::clone_args) -> libc::c_long {
    // SAFETY: `args` (and any set_tid array it points to, which the callers keep alive
    // across this call) is a valid clone_args of the size passed; without CLONE_VM the
    // child gets its own copy of the address space, so nothing of ours is shared.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    }
}

/// In a child just forked by ckpt: die when ckpt dies (`PR_SET_PDEATHSIG`), and exit at
/// once if ckpt (`parent`) is already gone, which the signal would not catch.
///
/// # Safety
/// Only for a child of a fork/clone, before anything else runs in it: it makes raw
/// system calls only (no libc or Rust runtime state, which a fork of a multi-threaded
/// process may hold locked) and may end the process with `_exit`.
pub(crate) unsafe fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: raw system calls on plain values; `_exit` never returns.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        );
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != parent {
            libc::_exit(125);
        }
    }
}

/// In a stub child just made by `clone3`: wait for one byte on `go` (written by its
/// tracer once it seized the child), close it and stop with SIGSTOP; exit with status 125
/// if every writer of the pipe went away first (ckpt died), 127 if it is ever continued
/// past the stop without being given other registers.
///
/// # Safety
/// Only for a child of a fork/clone, before anything else runs in it: it makes raw
/// system calls only (no libc or Rust runtime state, which a fork of a multi-threaded
/// process may hold locked) and never returns.
pub(crate) unsafe fn stop_when_told(go: libc::c_int) -> ! {
    // SAFETY: raw system calls on plain values and a local byte; `_exit` never returns.
    unsafe {
        let mut b = 0u8;
        if libc::syscall(libc::SYS_read, go, &mut b as *mut u8, 1) != 1 {
            libc::_exit(125);
        }
        libc::syscall(libc::SYS_close, go);
        let me = libc::syscall(libc::SYS_getpid);
        libc::syscall(libc::SYS_kill, me, libc::SIGSTOP);
        libc::_exit(127);
    }
}

/// Fork a stub child with PID `pid` (if given) that immediately asks to be traced and
/// stops itself with SIGSTOP. The caller must `wait` for that stop. Returns the child PID.
///
/// The child runs nothing but raw system calls before it stops: it is a copy of this
/// process, but none of ckpt's (or libc's) state is touched in it.
///
/// With `exec` (a descriptor of an executable file) the child executes it first
/// (`execveat` with `AT_EMPTY_PATH`, no arguments nor environment), and that program
/// stops itself: the tracer sees the exec's SIGTRAP first, then the program's stop. An
/// exec that fails ends the child with status 125.
pub fn spawn_traced_stub(pid: Option<i32>, exec: Option<BorrowedFd<'_>>) -> Result<i32> {
    let tid: libc::pid_t = pid.unwrap_or(0);
    let parent = own_pid();
    // Everything the child's execveat needs, made before the fork.
    let empty: &std::ffi::CStr = c"";
    let argv: [*const libc::c_char; 2] = [empty.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let exec_fd = exec.map(|fd| fd.as_raw_fd());
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid.is_some() {
            &tid as *const libc::pid_t as u64
        } else {
            0
        },
        set_tid_size: u64::from(pid.is_some()),
        ..clone_args()
    };
    // In the child (return 0) only async-signal-safe raw syscalls run before it stops or
    // exits, so no libc or Rust runtime state is used in an inconsistent state.
    let r = clone3(&args);
    if r == 0 {
        // Child.
        // SAFETY: raw syscalls only; see above. _exit never returns.
        unsafe {
            // Die with ckpt until PTRACE_O_EXITKILL takes over (and in case ckpt died
            // before this line ran).
            die_with_parent(parent);
            if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                libc::_exit(126);
            }
            if let Some(fd) = exec_fd {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    empty.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                libc::_exit(125);
            }
            let me = libc::syscall(libc::SYS_getpid);
            libc::syscall(libc::SYS_kill, me, libc::SIGSTOP);
            libc::_exit(127);
        }
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        let msg = match (e.raw_os_error(), pid) {
            (Some(libc::EEXIST), Some(p)) => format!("PID {p} is already in use"),
            (Some(libc::EPERM), Some(p)) => format!(
                "not permitted to create a process with PID {p} (needs CAP_SYS_ADMIN or \
                 CAP_CHECKPOINT_RESTORE)"
            ),
            _ => "clone3".to_string(),
        };
        return Err(SysError::io(msg, e));
    }
    Ok(r as i32)
}

/// Send signal `sig` (a named one: not 0 or a real-time signal, which are refused with
/// EINVAL) to process `pid` (> 0; others are refused with ESRCH).
pub fn kill(pid: i32, sig: i32) -> Result<()> {
    let signal = rustix::process::Signal::from_named_raw(sig).ok_or(Errno::INVAL);
    one_pid(pid, Errno::SRCH)
        .and_then(|p| rustix::process::kill_process(p, signal?))
        .map_err(|e| rerr(format!("kill({pid}, {sig})"), e))
}

/// Kill and reap a child process that ckpt created, with the threads of it that ckpt
/// traces (a traced thread's exit must be collected by its tracer before the leader's
/// can be). Errors are ignored: this runs on failure paths.
pub fn kill_and_reap(pid: i32, traced_threads: &[i32]) {
    let _ = kill(pid, libc::SIGKILL);
    let all = WaitOptions::from_bits_retain(libc::__WALL as u32);
    for &t in traced_threads.iter().chain([&pid]) {
        // Pass over stop reports still queued; stop at the exit (or ECHILD).
        while let Ok(st) = waitpid_raw(t, all) {
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                break;
            }
        }
    }
}

/// Kill the processes `procs` (traced by us, with their traced threads; parents
/// first) and reap them, as [`kill_and_reap`] does one, but never blocking on one: the
/// init of a PID namespace nested inside them waits, as it exits, for its children to
/// be reaped, whose exit we, their tracer, must collect first. Each is waited for until
/// it is gone (a zombie reparented to us is reaped too), for at most 10 s.
pub fn kill_and_reap_all(procs: &[(i32, Vec<i32>)]) {
    for (pid, _) in procs {
        let _ = kill(*pid, libc::SIGKILL);
    }
    let opts = WaitOptions::from_bits_retain((libc::__WALL | libc::WNOHANG) as u32);
    let drain = |t: i32| while waitpid_raw(t, opts).is_ok() {};
    let mut left: Vec<&(i32, Vec<i32>)> = procs.iter().collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !left.is_empty() && std::time::Instant::now() < until {
        left.retain(|(pid, tids)| {
            for &t in tids {
                drain(t);
            }
            drain(*pid);
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !left.is_empty() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

pub fn prlimit_get(pid: i32, resource: u32) -> Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid out-pointer; new limit is null.
    let r = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    check(r as libc::c_long, || format!("prlimit({pid}, {resource})"))?;
    Ok((old.rlim_cur, old.rlim_max))
}

pub fn prlimit_set(pid: i32, resource: u32, cur: u64, max: u64) -> Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: `new` is a valid in-pointer; old is null.
    let r = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    };
    check(r as libc::c_long, || {
        format!("set resource limit {resource} of {pid} to {cur}/{max}")
    })?;
    Ok(())
}

/// Write `value` to /proc/PID/oom_score_adj (lowering it needs CAP_SYS_RESOURCE).
pub fn set_oom_score_adj(pid: i32, value: i32) -> Result<()> {
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&path, value.to_string())
        .map_err(|e| SysError::io(format!("write {value} to {path}"), e))
}

/// get_robust_list(pid): (head, len).
pub fn robust_list(pid: i32) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers are valid locals of the sizes the syscall writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            pid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    check(r, || format!("get_robust_list({pid})"))?;
    Ok((head, len as u64))
}

/// Wait for a child to exit (not for ptrace stops); returns the raw wait status.
pub fn wait_exit(pid: i32) -> Result<i32> {
    waitpid_raw(pid, WaitOptions::empty()).map_err(|e| rerr(format!("waitpid({pid})"), e))
}

/// Ignore (or restore the default for) a signal in this process.
pub fn set_signal_ignored(sig: i32, ignored: bool) {
    // SAFETY: installing SIG_IGN/SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(
            sig,
            if ignored {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            },
        );
    }
}

/// This process's vDSO address (AT_SYSINFO_EHDR).
pub fn own_vdso() -> u64 {
    // SAFETY: getauxval only reads the process's auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) }
}

/// Read `len` bytes of this process's own memory at `addr` (a mapped, readable region,
/// such as our own vDSO), via /proc/self/mem so an unreadable page is an error, not a
/// crash.
pub fn read_own(addr: u64, len: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/mem")
        .map_err(|e| SysError::io("open /proc/self/mem", e))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr)
        .map_err(|e| SysError::io(format!("read own memory at {addr:#x}"), e))?;
    Ok(buf)
}

/// uname(2): (nodename, release).
pub fn uname() -> (String, String) {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| String::from_utf8_lossy(c.to_bytes()).into_owned();
    (s(u.nodename()), s(u.release()))
}

/// This boot's ID (/proc/sys/kernel/random/boot_id, without its newline); empty if it
/// cannot be read.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Make this process a child subreaper, so orphans of the processes it restores are
/// reparented to it.
pub fn set_child_subreaper(on: bool) -> Result<()> {
    // The kernel takes any non-zero value for "on"; rustix passes a PID.
    let arg = on.then(rustix::process::getpid);
    rustix::process::set_child_subreaper(arg).map_err(|e| rerr("PR_SET_CHILD_SUBREAPER", e))
}

/// Whether descriptor `fd` is open in this process.
pub fn own_fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is accepted.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Whether this process runs with effective UID 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// This process's securebits (PR_GET_SECUREBITS); 0 if the kernel will not tell.
pub fn own_securebits() -> u32 {
    // SAFETY: PR_GET_SECUREBITS takes no pointer and only returns a value.
    let r = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    r.max(0) as u32
}

/// Close every file descriptor from `first` up (used by ckpt's own demo workload, which
/// must not hold descriptors it inherited by accident).
pub fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors; nothing in this process uses the
    // closed ones afterwards (the caller runs before any of its own are opened).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);
    }
}

/// `tid` for getpriority/setpriority(PRIO_PROCESS): 0 is the calling thread (None),
/// a negative one is refused with ESRCH, as the kernel does.
fn thread_pid(tid: i32) -> std::result::Result<Option<Pid>, Errno> {
    if tid == 0 {
        Ok(None)
    } else {
        one_pid(tid, Errno::SRCH).map(Some)
    }
}

/// Scheduling policy (with SCHED_RESET_ON_FORK), static priority and nice value of a
/// thread.
pub fn sched_get(tid: i32) -> Result<(i32, i32, i32)> {
    // SAFETY: plain syscall with an integer argument.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    check(policy as libc::c_long, || {
        format!("sched_getscheduler({tid})")
    })?;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: param is a valid out-pointer.
    let r = unsafe { libc::sched_getparam(tid, &mut param) };
    check(r as libc::c_long, || format!("sched_getparam({tid})"))?;
    let nice = thread_pid(tid)
        .and_then(rustix::process::getpriority_process)
        .map_err(|e| rerr(format!("getpriority({tid})"), e))?;
    Ok((policy, param.sched_priority, nice))
}

/// Set a thread's scheduling policy, priority and nice value.
pub fn sched_set(tid: i32, policy: i32, priority: i32, nice: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: param is a valid in-pointer.
    let r = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    check(r as libc::c_long, || {
        format!("sched_setscheduler({tid}, {policy}, {priority})")
    })?;
    thread_pid(tid)
        .and_then(|p| rustix::process::setpriority_process(p, nice))
        .map_err(|e| rerr(format!("setpriority({tid}, {nice})"), e))
}

/// Whether descriptor `fd1` of `pid1` and `fd2` of `pid2` are the same open file
/// description (kcmp KCMP_FILE).
pub fn same_file_description(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool> {
    // linux/kcmp.h; neither libc nor linux-raw-sys has it.
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    check(r, || format!("kcmp({pid1}:{fd1}, {pid2}:{fd2})"))?;
    Ok(r == 0)
}

/// Whether descriptor `fd` of `pid` is the file that epoll instance `efd` of `pid`
/// watches as its `toff`-th item registered under number `tfd` (kcmp KCMP_EPOLL_TFD).
/// ENOENT: no such item.
pub fn is_epoll_target(pid: i32, fd: i32, efd: i32, tfd: i32, toff: u32) -> Result<bool> {
    is_epoll_target_of(pid, fd, pid, efd, tfd, toff)
}

/// Whether descriptor `fd` of `pid` is the file that epoll instance `efd` of process
/// `epid` watches as its `toff`-th item registered under number `tfd` (kcmp
/// KCMP_EPOLL_TFD across two processes). ENOENT: no such item.
pub fn is_epoll_target_of(
    pid: i32,
    fd: i32,
    epid: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> Result<bool> {
    // linux/kcmp.h (KCMP_EPOLL_TFD and struct kcmp_epoll_slot); neither libc nor
    // linux-raw-sys has them.
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    let slot: [u32; 3] = [efd as u32, tfd as u32, toff];
    // SAFETY: slot is a valid in-pointer to the three u32 the kernel reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            epid,
            KCMP_EPOLL_TFD,
            fd as libc::c_long,
            slot.as_ptr(),
        )
    };
    check(r, || {
        format!("kcmp({pid}:{fd}, epoll {epid}:{efd} item {tfd}/{toff})")
    })?;
    Ok(r == 0)
}

/// Whether processes `pid1` and `pid2` share one descriptor table (kcmp KCMP_FILES:
/// clone with CLONE_FILES without CLONE_THREAD).
pub fn same_fd_table(pid1: i32, pid2: i32) -> Result<bool> {
    // linux/kcmp.h; neither libc nor linux-raw-sys has it.
    const KCMP_FILES: libc::c_long = 2;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILES, 0, 0) };
    check(r, || format!("kcmp({pid1}, {pid2}, KCMP_FILES)"))?;
    Ok(r == 0)
}

/// Whether processes `pid1` and `pid2` share one filesystem information (working and
/// root directories, umask: kcmp KCMP_FS; clone with CLONE_FS).
pub fn same_fs(pid1: i32, pid2: i32) -> Result<bool> {
    // linux/kcmp.h; neither libc nor linux-raw-sys has it.
    const KCMP_FS: libc::c_long = 3;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FS, 0, 0) };
    check(r, || format!("kcmp({pid1}, {pid2}, KCMP_FS)"))?;
    Ok(r == 0)
}

/// Whether processes `pid1` and `pid2` share one address space (kcmp KCMP_VM; clone
/// with CLONE_VM without CLONE_THREAD, vfork).
pub fn same_vm(pid1: i32, pid2: i32) -> Result<bool> {
    // linux/kcmp.h; neither libc nor linux-raw-sys has it.
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_VM, 0, 0) };
    check(r, || format!("kcmp({pid1}, {pid2}, KCMP_VM)"))?;
    Ok(r == 0)
}

/// pidfd_open(pid, 0): a descriptor of process `pid` (> 0; others are refused with
/// EINVAL, as the kernel does).
pub(crate) fn pidfd_open(pid: i32) -> Result<std::os::fd::OwnedFd> {
    one_pid(pid, Errno::INVAL)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        .map_err(|e| rerr(format!("pidfd_open({pid})"), e))
}

/// What the kernel tells of the exited and reaped process pidfd `fd` names
/// (PIDFD_GET_INFO with PIDFD_INFO_EXIT, Linux 6.15): its wait status and the cgroup
/// (v2 ID, 0 if not told) it exited in. `None` where the kernel does not tell (an older
/// kernel, or no exit information kept).
pub fn pidfd_exit_info(fd: BorrowedFd<'_>) -> Result<Option<(i32, u64)>> {
    // SAFETY: a plain struct of integers, all zero is valid.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = u64::from(libc::PIDFD_INFO_EXIT);
    // SAFETY: PIDFD_GET_INFO reads and writes `info`, of the size its number encodes,
    // which lives across the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::PIDFD_GET_INFO,
            &mut info as *mut libc::pidfd_info,
        )
    };
    if r < 0 {
        let e = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL);
        if e == Errno::NOTTY || e == Errno::INVAL || e == Errno::SRCH {
            return Ok(None);
        }
        return Err(rerr("ioctl(PIDFD_GET_INFO)", e));
    }
    if info.mask & u64::from(libc::PIDFD_INFO_EXIT) == 0 {
        return Ok(None);
    }
    let cgroup = if info.mask & u64::from(libc::PIDFD_INFO_CGROUPID) != 0 {
        info.cgroupid
    } else {
        0
    };
    Ok(Some((info.exit_code, cgroup)))
}

/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux 5.7): clone3 starts the child in the
/// cgroup v2 directory `clone_args.cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A pidfd (pidfd_open with `flags`: PIDFD_NONBLOCK, PIDFD_THREAD) of a process that
/// has exited with wait status `status` and been reaped: a child of ckpt made for it
/// (in cgroup v2 directory `cgroup` where given and the kernel lets it, so that
/// PIDFD_GET_INFO tells that cgroup's ID; in ckpt's own otherwise) exits at once
/// (`_exit`, or killed by the signal of `status`, not dumpable and without a core
/// limit, so it dumps no core), is opened while a zombie, and reaped.
pub fn reaped_pidfd(
    status: i32,
    flags: u32,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let (code, sig) = if libc::WIFSIGNALED(status) && !libc::WCOREDUMP(status) {
        (0, libc::WTERMSIG(status))
    } else if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), 0)
    } else {
        return Err(SysError::Other(format!(
            "wait status {status:#x} is no end a new process can come to"
        )));
    };
    // Into the cgroup asked for (CLONE_INTO_CGROUP, Linux 5.7); where the kernel will
    // not put it there (a cgroup with controllers for its children, threaded, or
    // outside ckpt's cgroup namespace), in ckpt's own.
    let mut args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..clone_args()
    };
    if let Some(cg) = cgroup {
        args.flags = CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    let mut pid = clone3(&args);
    if pid < 0 && cgroup.is_some() {
        args.flags = 0;
        args.cgroup = 0;
        pid = clone3(&args);
    }
    if pid == 0 {
        // SAFETY: the child runs async-signal-safe calls only (prctl, setrlimit,
        // sigaction, sigprocmask, kill, _exit) and never returns into ckpt's code.
        unsafe {
            if sig != 0 {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
            }
            libc::_exit(code);
        }
    }
    let pid = pid as i32;
    if pid < 0 {
        return Err(SysError::io(
            "fork a process to exit for a pidfd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pidfd_open takes a PID and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    let opened = if fd < 0 {
        Err(SysError::io(
            format!("pidfd_open({pid}) of the exited process"),
            std::io::Error::last_os_error(),
        ))
    } else {
        // SAFETY: the descriptor pidfd_open just made, ours alone.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    };
    let waited = loop {
        match rustix::process::waitpid(Pid::from_raw(pid), WaitOptions::empty()) {
            Err(Errno::INTR) => continue,
            r => break r.map_err(|e| rerr(format!("waitpid({pid})"), e))?,
        }
    };
    let got = waited.map(|(_, st)| st.as_raw());
    if got != Some(status) {
        return Err(SysError::Other(format!(
            "the process made to exit with wait status {status:#x} ended with {got:?}"
        )));
    }
    opened
}

/// A descriptor of another process, duplicated into ours (pidfd_getfd): the same open
/// file description, so reading through it must not consume anything.
pub fn steal_fd(pid: i32, fd: i32) -> Result<std::os::fd::OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
        .map_err(|e| rerr(format!("pidfd_getfd({pid}, {fd})"), e))
}

/// The signal owner of descriptor `fd` of process `pid` (F_GETOWN_EX: its type, and the
/// thread, process or group as ckpt's PID namespace sees it, 0 for none) and its
/// F_SETSIG signal (0: SIGIO), read on a duplicate (the same open file description);
/// all 0 for an O_PATH descriptor.
pub fn fd_owner(pid: i32, fd: i32) -> Result<(i32, i32, i32)> {
    use linux_raw_sys::general::{F_GETOWN_EX, F_GETSIG, f_owner_ex};
    use std::os::fd::AsRawFd;
    let dup = steal_fd(pid, fd)?;
    let mut o = f_owner_ex { type_: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one `struct f_owner_ex` to the pointer, which points at
    // one, alive for the call.
    let r = unsafe {
        libc::fcntl(
            dup.as_raw_fd(),
            F_GETOWN_EX as i32,
            &mut o as *mut f_owner_ex,
        )
    };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF) {
        // An O_PATH descriptor: no I/O, so no owner or signal (fcntl refuses both).
        return Ok((0, 0, 0));
    }
    check(r.into(), || format!("F_GETOWN_EX on fd {fd} of {pid}"))?;
    // SAFETY: F_GETSIG takes no argument and only reads the description.
    let sig = unsafe { libc::fcntl(dup.as_raw_fd(), F_GETSIG as i32) };
    check(sig.into(), || format!("F_GETSIG on fd {fd} of {pid}"))?;
    Ok((o.type_, o.pid, sig))
}

/// FIONREAD: the bytes waiting to be read on `fd` (the kernel's int, never negative for
/// the descriptors asked about).
fn queued(fd: &std::os::fd::OwnedFd) -> std::result::Result<u64, Errno> {
    rustix::io::ioctl_fionread(fd)
}

/// Whether nobody is left at the other side of the pipe behind `end` (a duplicate of a
/// descriptor of the tree: the same open file description, so the pipe's counts of
/// readers and writers are unchanged): poll without waiting says POLLHUP on a read end
/// no writer is left for, POLLERR on a write end no reader is left for. (A read end
/// opened again through /proc after the last writer left may not say POLLHUP: the
/// caller asks every read end it has.)
pub fn pipe_other_side_gone(end: &std::os::fd::OwnedFd, write: bool) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(end, PollFlags::empty())];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(rerr("poll on a pipe end", e)),
        }
    }
    let r = fds[0].revents();
    Ok(if write {
        r.contains(PollFlags::ERR)
    } else {
        r.contains(PollFlags::HUP)
    })
}

/// Capacity and contents of a pipe that only has write ends, read without consuming
/// them: through a read-only, non-blocking description ckpt opens on it for the time
/// of the copy (only when something is queued).
pub fn peek_pipe_by_write_end(end: &std::os::fd::OwnedFd) -> Result<(u32, Vec<u8>)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let cap = rustix::pipe::fcntl_getpipe_size(end).map_err(|e| rerr("F_GETPIPE_SZ", e))?;
    if queued(end).map_err(|e| rerr("FIONREAD on a pipe", e))? == 0 {
        return Ok((cap as u32, Vec::new()));
    }
    let link = format!("/proc/self/fd/{}", end.as_raw_fd());
    let rd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&link)
        .map_err(|e| SysError::io("open a pipe to read its buffer", e))?;
    peek_pipe(&std::os::fd::OwnedFd::from(rd))
}

/// Capacity and contents of a pipe, read through a read end without consuming them
/// (tee into a pipe of our own, then read that).
pub fn peek_pipe(read_end: &std::os::fd::OwnedFd) -> Result<(u32, Vec<u8>)> {
    use rustix::pipe::{PipeFlags, SpliceFlags};
    let cap = rustix::pipe::fcntl_getpipe_size(read_end).map_err(|e| rerr("F_GETPIPE_SZ", e))?;
    let n = queued(read_end).map_err(|e| rerr("FIONREAD on a pipe", e))?;
    let want = n as usize;
    if want == 0 {
        return Ok((cap as u32, Vec::new()));
    }
    let (rd, wr) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|e| rerr("pipe2", e))?;
    // Best effort: a copy that does not fit is reported below.
    let _ = rustix::pipe::fcntl_setpipe_size(&wr, cap.max(want));
    let t = rustix::pipe::tee(read_end, &wr, want, SpliceFlags::NONBLOCK)
        .map_err(|e| rerr("tee from a pipe", e))?;
    if t != want {
        return Err(SysError::Other(format!(
            "could copy only {t} of the {want} bytes buffered in a pipe"
        )));
    }
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let r = rustix::io::read(&rd, &mut data[got..]).map_err(|e| rerr("read pipe copy", e))?;
        if r == 0 {
            break;
        }
        got += r;
    }
    data.truncate(got);
    Ok((cap as u32, data))
}

/// Fork a child that is PID 1 of a new PID namespace (it should [`mount_own_proc`]
/// next). Returns `Ok(Some(child))` in the parent (the
/// child's PID here) and `Ok(None)` in the child.
///
/// Must be called while this process is single-threaded.
pub fn fork_into_new_pid_namespace() -> Result<Option<i32>> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    use std::os::fd::AsFd;
    // Our own PID namespace, for our children again after the fork (see below).
    let own = std::fs::File::open("/proc/self/ns/pid")
        .map_err(|e| SysError::Other(format!("open /proc/self/ns/pid: {e}")))?;
    // SAFETY: unshare affects only children created afterwards.
    let r = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    check(r as libc::c_long, || "unshare(CLONE_NEWPID)".into())?;
    // SAFETY: the caller guarantees a single-threaded process, so the child's copy of
    // every lock and of the allocator is consistent and it may go on running Rust code.
    let pid = unsafe { libc::fork() };
    // Our later children (and threads: the kernel refuses a thread while the two
    // differ) are in our namespace again, whatever the fork did.
    let back = move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::ProcessID));
    check(pid as libc::c_long, || {
        "fork into a new PID namespace".into()
    })?;
    if pid > 0 {
        if let Err(e) = back {
            let _ = kill(pid, libc::SIGKILL);
            let _ = wait_exit(pid);
            return Err(rerr("setns back to our own PID namespace", e));
        }
        return Ok(Some(pid));
    }
    // Child: PID 1 of the new namespace; it mounts its own /proc next.
    Ok(None)
}

/// Fork a child of ours (`restore --template`: the template's server below the init of
/// its PID namespace). Returns `Ok(Some(child))` in the parent and `Ok(None)` in the
/// child.
///
/// Must be called while this process is single-threaded.
pub fn fork_child() -> Result<Option<i32>> {
    // SAFETY: the caller guarantees a single-threaded process, so the child's copy of
    // every lock and of the allocator is consistent and it may go on running Rust code.
    let pid = unsafe { libc::fork() };
    check(pid as libc::c_long, || "fork".into())?;
    Ok((pid > 0).then_some(pid))
}

/// Point descriptors 0-2 of this process at /dev/null (a helper that must not hold
/// its caller's terminal or pipes open).
pub fn stdio_to_null() -> Result<()> {
    use std::os::fd::AsFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| SysError::io("open /dev/null", e))?;
    for n in 0..3 {
        // SAFETY: dup2 onto 0-2 replaces what they held; no Rust object owns 0-2.
        let r = unsafe { libc::dup2(null.as_fd().as_raw_fd(), n) };
        check(r as libc::c_long, || format!("dup2 onto {n}"))?;
    }
    Ok(())
}

/// The PID that pidfd `fd` names, as our /proc sees it (its fdinfo's "Pid:"; -1 once
/// reaped, 0 outside our namespace).
pub fn pidfd_pid(fd: BorrowedFd<'_>) -> Result<i32> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|e| SysError::io(path.clone(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| SysError::Other(format!("{path} tells no PID")))
}

/// Give this process a private mount namespace with a fresh /proc, so that /proc/PID
/// means PIDs of the PID namespace it lives in (for ckpt and for what it restores).
pub fn mount_own_proc() -> Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    // SAFETY: unshare(CLONE_NEWNS) gives this process a copy of its mount namespace; it
    // shares no memory or descriptor table state that could change under other code
    // (rustix's unshare is unsafe for CLONE_FILES/CLONE_FS, not used here).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(SysError::os("unshare(CLONE_NEWNS)"));
    }
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| rerr("make mounts private", e))?;
    rustix::mount::mount(
        c"proc",
        c"/proc",
        c"proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| rerr("mount /proc for the new PID namespace", e))
}

/// Create the init (PID 1) of a new PID namespace as a stub for a tree that had a PID
/// namespace of its own. Unlike [`spawn_traced_stub`] it cannot trace itself (its
/// tracer will live inside the namespace, not be its parent): it waits until a byte
/// arrives on the returned pipe, which its tracer writes once it has seized it, then
/// stops itself with SIGSTOP (which a traced init receives). It dies with us
/// (PDEATHSIG), and exits if the pipe's writers all go away first.
///
/// `ns`: the new PID namespace is that one (a namespace no process is in yet, which a
/// user namespace of the tree's own owns: `userns::make`), not one made here.
///
/// Returns (its PID here, the pipe's write end). Must be called while this process is
/// single-threaded.
pub fn spawn_pidns_init_stub(
    sibling: bool,
    ns: Option<&std::os::fd::OwnedFd>,
) -> Result<(i32, std::os::fd::OwnedFd)> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    use std::os::fd::{AsFd, AsRawFd};
    let (rd, wr) = pipe()?;
    // With CLONE_NEWPID, setns only changes the namespace of the children created
    // afterwards; undone below, after the clone.
    let ours = match ns {
        Some(f) => {
            let ours = std::fs::File::open("/proc/self/ns/pid")
                .map_err(|e| SysError::io("open /proc/self/ns/pid", e))?;
            move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::ProcessID))
                .map_err(|e| rerr("setns into the tree's PID namespace", e))?;
            Some(ours)
        }
        None => None,
    };
    let new_pid = match ns {
        Some(_) => 0,
        None => libc::CLONE_NEWPID as u64,
    };
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
    // `sibling`: a child of our parent (CLONE_PARENT, which takes our own exit signal);
    // its parent-death signal then follows our parent, and the pipe's end (below) is
    // what ends it if we die first.
    let args = libc::clone_args {
        flags: new_pid
            | if sibling {
                libc::CLONE_PARENT as u64
            } else {
                0
            },
        exit_signal: if sibling { 0 } else { libc::SIGCHLD as u64 },
        ..clone_args()
    };
    // In the child (return 0) only raw syscalls run before it stops or exits, so no libc
    // or Rust runtime state is used in an inconsistent state.
    let r = clone3(&args);
    if r == 0 {
        // SAFETY: raw syscalls only; see above. _exit never returns.
        unsafe {
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL,
                0,
                0,
                0,
            );
            libc::syscall(libc::SYS_close, wfd);
            stop_when_told(rfd);
        }
    }
    let err = (r < 0).then(|| SysError::os("clone3 (a PID namespace's init)".to_string()));
    if let Some(ours) = &ours {
        // Back to the PID namespace we live in, which setns always allows.
        let back = move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::ProcessID));
        if let Some(e) = err {
            return Err(e);
        }
        if let Err(e) = back {
            // (The init, made: it must not outlive the failure.)
            let _ = kill(r as i32, libc::SIGKILL);
            let _ = wait_exit(r as i32);
            return Err(rerr("setns back to our PID namespace", e));
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    drop(rd);
    Ok((r as i32, wr))
}

/// A new PID namespace whose init (PID 1) is a reaper of ours, for a tree that ran in a
/// namespace whose init was outside it, and the tree's root stub, the reaper's child
/// with PID `root` in the namespace.
pub struct PidnsReaper {
    /// The reaper's PID here (our child).
    pub pid: i32,
    /// The root stub waits for a byte here (written once its tracer has seized it),
    /// then stops itself with SIGSTOP; it exits if every copy closes first.
    pub go: std::os::fd::OwnedFd,
    /// The reaper waits for a byte here before it starts reaping; if every copy closes
    /// first (the restore failed, or we died), it exits, which ends the namespace and
    /// everything in it.
    pub hold: std::os::fd::OwnedFd,
}

/// The restore succeeded: the reaper of [`PidnsReaper`] (given its `hold`) reaps from now
/// on, and exits with the root's exit code (as a shell reports it: 128+N for signal N)
/// once nobody is left in the namespace.
pub fn release_reaper(hold: std::os::fd::OwnedFd) -> Result<()> {
    use std::io::Write;
    std::fs::File::from(hold)
        .write_all(b"k")
        .map_err(|e| SysError::io("release the PID namespace's reaper", e))
}

/// Create a new PID namespace whose init is a reaper (see [`PidnsReaper`]), and in it
/// the root stub with PID `root`. Only raw system calls run in the two children. Must
/// be called while this process is single-threaded.
pub fn spawn_pidns_reaper(root: i32) -> Result<PidnsReaper> {
    use std::os::fd::AsRawFd;
    let (go_rd, go_wr) = pipe()?;
    let (hold_rd, hold_wr) = pipe()?;
    // The reaper says here whether it made the root's stub (1) or not (0).
    let (made_rd, made_wr) = pipe()?;
    let made_w = made_wr.as_raw_fd();
    let (go_r, go_w) = (go_rd.as_raw_fd(), go_wr.as_raw_fd());
    let (hold_r, hold_w) = (hold_rd.as_raw_fd(), hold_wr.as_raw_fd());
    let tid: libc::pid_t = root;
    // Both argument blocks are made before the first clone: the reaper only copies them.
    let ns_args = libc::clone_args {
        flags: libc::CLONE_NEWPID as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..clone_args()
    };
    let root_args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..clone_args()
    };
    let r = clone3(&ns_args);
    if r == 0 {
        // SAFETY: raw syscalls only (the reaper and the stub are copies of a process
        // that may hold locks); _exit never returns; `root_args` and `tid` are this
        // copy's own.
        unsafe {
            libc::syscall(libc::SYS_close, hold_w);
            libc::syscall(libc::SYS_close, go_w);
            let s = clone3(&root_args);
            if s == 0 {
                // The root stub.
                libc::syscall(libc::SYS_close, made_w);
                libc::syscall(libc::SYS_close, hold_r);
                stop_when_told(go_r);
            }
            libc::syscall(libc::SYS_close, go_r);
            let made = u8::from(s > 0);
            libc::syscall(libc::SYS_write, made_w, &made as *const u8, 1);
            libc::syscall(libc::SYS_close, made_w);
            let mut b = 0u8;
            if s < 0 || libc::syscall(libc::SYS_read, hold_r, &mut b as *mut u8, 1) != 1 {
                libc::_exit(126);
            }
            libc::syscall(libc::SYS_close, hold_r);
            let mut code = 0;
            loop {
                let mut status: libc::c_int = 0;
                let p = libc::syscall(
                    libc::SYS_wait4,
                    -1,
                    &mut status as *mut libc::c_int,
                    libc::__WALL,
                    0,
                );
                if p == s {
                    code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        1
                    };
                } else if p < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(code);
                }
            }
        }
    }
    if r < 0 {
        return Err(SysError::os("clone3(CLONE_NEWPID) of a reaper".to_string()));
    }
    drop((go_rd, hold_rd, made_wr));
    // The root's stub exists before anyone looks for it.
    let mut made = [0u8; 1];
    let said = std::io::Read::read(&mut std::fs::File::from(made_rd), &mut made);
    if !matches!(said, Ok(1)) || made[0] != 1 {
        let _ = kill(r as i32, libc::SIGKILL);
        let _ = wait_exit(r as i32);
        return Err(SysError::Other(format!(
            "the new PID namespace's reaper could not create process {root} there"
        )));
    }
    Ok(PidnsReaper {
        pid: r as i32,
        go: go_wr,
        hold: hold_wr,
    })
}

/// Create a stub with PID `pid` as a child of our own parent (CLONE_PARENT: a sibling
/// of ckpt, which the caller of ckpt waits for, as `criu`'s `rst_sibling` asks). It
/// waits for a byte on the returned pipe and then stops itself with SIGSTOP; the caller
/// seizes it first (it is not our child: PTRACE_TRACEME would make our parent its
/// tracer). If the pipe closes without its byte (ckpt died), it exits.
pub fn spawn_sibling_stub(pid: i32) -> Result<(i32, std::os::fd::OwnedFd)> {
    use std::os::fd::AsRawFd;
    let (rd, wr) = pipe()?;
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
    let tid: libc::pid_t = pid;
    let args = libc::clone_args {
        flags: libc::CLONE_PARENT as u64,
        // With CLONE_PARENT the kernel uses our own exit signal for the child.
        exit_signal: 0,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..clone_args()
    };
    // In the child (return 0) only raw syscalls run before it stops or exits, so no libc
    // or Rust runtime state is used in an inconsistent state.
    let r = clone3(&args);
    if r == 0 {
        // SAFETY: raw syscalls only; see above. _exit never returns.
        unsafe {
            libc::syscall(libc::SYS_close, wfd);
            stop_when_told(rfd);
        }
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        let msg = match e.raw_os_error() {
            Some(libc::EEXIST) => format!("PID {pid} is already in use"),
            _ => "clone3(CLONE_PARENT)".to_string(),
        };
        return Err(SysError::io(msg, e));
    }
    drop(rd);
    Ok((r as i32, wr))
}

/// Fork a child that lives in the PID namespace of process `init` (of which it is not
/// a descendant) with ID `ns_pid` there (it should [`mount_own_proc`] next). Returns `Ok(Some(child))` in the parent (the child's PID here) and
/// `Ok(None)` in the child.
///
/// Must be called while this process is single-threaded.
pub fn fork_into_pid_namespace_of(init: i32, ns_pid: i32) -> Result<Option<i32>> {
    use std::os::fd::AsFd;
    let open =
        |p: String| std::fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e));
    let theirs = open(format!("/proc/{init}/ns/pid"))?;
    let ours = open("/proc/self/ns/pid".to_string())?;
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    // With CLONE_NEWPID, setns only changes the namespace of children created
    // afterwards; it is undone below.
    let setns = |f: &std::fs::File| {
        move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::ProcessID))
    };
    setns(&theirs).map_err(|e| rerr("setns into the new PID namespace", e))?;
    let tid: libc::pid_t = ns_pid;
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..clone_args()
    };
    // The caller guarantees a single-threaded process, so the child's copy of every lock
    // and of the allocator is consistent and it may go on running Rust code.
    let r = clone3(&args);
    let err =
        (r < 0).then(|| SysError::os(format!("clone3 into the new PID namespace as {ns_pid}")));
    if r != 0 {
        // Back to the PID namespace we live in, which setns always allows.
        let back = setns(&ours);
        if let Some(e) = err {
            return Err(e);
        }
        back.map_err(|e| rerr("setns back to our PID namespace", e))?;
        return Ok(Some(r as i32));
    }
    drop((theirs, ours));
    Ok(None)
}

/// Wait for any child; (pid, status), or None when there are no children left.
pub fn wait_any() -> Result<Option<(i32, i32)>> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) => return Ok(Some((pid.as_raw_nonzero().get(), st.as_raw()))),
            // Only with WNOHANG, which is not passed.
            Ok(None) => return Ok(None),
            Err(Errno::INTR) => continue,
            Err(Errno::CHILD) => return Ok(None),
            Err(e) => return Err(rerr("waitpid(-1)", e)),
        }
    }
}

/// A pipe (read end, write end), close-on-exec.
pub fn pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| rerr("pipe2", e))
}

/// F_GET_SEALS of a memfd held by another process (through a duplicate).
pub fn memfd_seals(pid: i32, fd: i32) -> Result<u32> {
    let dup = steal_fd(pid, fd)?;
    rustix::fs::fcntl_get_seals(&dup)
        .map(|s| s.bits())
        .map_err(|e| rerr(format!("F_GET_SEALS on fd {fd} of {pid}"), e))
}

/// The seals (F_GET_SEALS) of the memfd behind `file` (one of our own descriptors).
pub fn seals_of(file: &std::fs::File, what: &str) -> Result<u32> {
    rustix::fs::fcntl_get_seals(file)
        .map(|s| s.bits())
        .map_err(|e| rerr(format!("F_GET_SEALS on {what}"), e))
}

/// fchmod the file behind `file` (one of our own descriptors) to `mode`.
pub fn set_mode(file: &std::fs::File, mode: u32, what: &str) -> Result<()> {
    rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| rerr(format!("fchmod {what} to {mode:#o}"), e))
}

/// Add `seals` (F_ADD_SEALS) to the memfd behind `file`.
pub fn add_seals(file: &std::fs::File, seals: u32) -> Result<()> {
    rustix::fs::fcntl_add_seals(file, rustix::fs::SealFlags::from_bits_retain(seals))
        .map_err(|e| rerr("F_ADD_SEALS", e))
}

/// A memfd of our own named `name` (any bytes but NUL), close-on-exec, allowing seals
/// if `sealing`: a memfd of the image recreated, for the restored processes to open
/// through /proc.
pub fn memfd_named(name: &[u8], sealing: bool) -> Result<std::fs::File> {
    use rustix::fs::MemfdFlags;
    let c = std::ffi::CString::new(name)
        .map_err(|_| SysError::Other("a memfd name with a NUL byte".into()))?;
    let flags = if sealing {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    rustix::fs::memfd_create(c.as_c_str(), flags)
        .map(std::fs::File::from)
        .map_err(|e| rerr("memfd_create", e))
}

/// An anonymous in-memory file of our own (memfd), to hold file contents read from an
/// image until restore puts them in place.
pub fn memfd(name: &str) -> Result<std::fs::File> {
    let c = std::ffi::CString::new(name).map_err(|_| SysError::Other("bad memfd name".into()))?;
    rustix::fs::memfd_create(c.as_c_str(), rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| rerr("memfd_create", e))
}

/// Remove a System V shared memory segment (on a failure path: errors are ignored).
pub fn remove_sysv_shm(id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe {
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
    }
}

/// This process's own disposition of `sig` as the kernel keeps it (handler, flags,
/// restorer, mask): a stub forked from us starts with exactly these.
pub fn own_sigaction(sig: u32) -> Option<[u64; 4]> {
    let mut old = [0u64; 4];
    // SAFETY: rt_sigaction reads no new action (null) and writes the old one into
    // `old`, which has the kernel's struct sigaction size (4 words) on x86-64.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig as libc::c_long,
            std::ptr::null::<u64>(),
            old.as_mut_ptr(),
            8usize,
        )
    };
    (r == 0).then_some(old)
}

/// Set kernel.shm_next_id: the ID the next System V segment gets (-1: the kernel picks).
pub fn set_shm_next_id(id: i32) -> Result<()> {
    const NEXT_ID: &str = "/proc/sys/kernel/shm_next_id";
    std::fs::write(NEXT_ID, id.to_string()).map_err(|e| SysError::io(format!("write {NEXT_ID}"), e))
}

/// Bytes waiting to be read on a descriptor of ours (FIONREAD).
pub fn queued_bytes(fd: &std::os::fd::OwnedFd) -> Result<u64> {
    queued(fd).map_err(|e| rerr("FIONREAD", e))
}

/// The path of the file that a file handle (name_to_handle_at: `typ`, `handle`) names on
/// the file system of device `major:minor`, as this process sees it: the handle is
/// opened (open_by_handle_at, O_PATH) relative to a mount of that file system (its root
/// mount preferred), and the path read back from /proc/self/fd. `None` when no mount of
/// the device is found or the file system cannot open the handle.
pub fn path_of_handle(major: u32, minor: u32, typ: i32, handle: &[u8]) -> Option<Vec<u8>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    if handle.len() > 128 {
        return None;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!("{major}:{minor}");
    let mut mounts: Vec<(bool, String)> = info
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.get(2) == Some(&want.as_str())).then(|| {
                (
                    w.get(3) != Some(&"/"),
                    w.get(4).copied().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    mounts.sort();
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut fh = vec![0u8; 8 + handle.len()];
    fh[0..4].copy_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh[4..8].copy_from_slice(&typ.to_ne_bytes());
    fh[8..].copy_from_slice(handle);
    for (_, mnt) in mounts {
        // Mount points are shown with \040-style escapes; such paths are skipped.
        if mnt.contains('\\') {
            continue;
        }
        let Ok(m) = std::fs::File::open(&mnt) else {
            continue;
        };
        // SAFETY: `fh` is a properly laid out struct file_handle of `handle.len()` bytes
        // that lives across the call; the result is a new descriptor we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                m.as_raw_fd(),
                fh.as_mut_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            continue;
        }
        // SAFETY: open_by_handle_at just returned this descriptor; we own it.
        let f = unsafe { OwnedFd::from_raw_fd(r as i32) };
        let p = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
        return Some(p.as_os_str().as_bytes().to_vec());
    }
    None
}

/// Whether the kernel places the mappings of the programs it executes at random
/// addresses (kernel.randomize_va_space is not 0; assumed so when unreadable).
pub fn host_randomizes() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
}

/// Whether this process's new mappings go at random addresses (its `PF_RANDOMIZE`),
/// which the processes it forks inherit.
pub fn own_randomized() -> Result<bool> {
    Ok(super::proc::stat(std::process::id() as i32)?.randomized())
}

/// Execute ckpt again, with the same arguments and environment plus `mark`=1, under a
/// personality with ADDR_NO_RANDOMIZE cleared (`randomize`) or set: the exec then gives
/// it `PF_RANDOMIZE` or not. Returns only on failure.
pub fn reexec_randomized(randomize: bool, mark: &str) -> SysError {
    use std::os::unix::process::CommandExt;
    // SAFETY: personality(0xffffffff) only returns the current persona.
    let cur = unsafe { libc::personality(0xffff_ffff) };
    if cur < 0 {
        return SysError::io("personality", std::io::Error::last_os_error());
    }
    let flag = libc::ADDR_NO_RANDOMIZE;
    let new = if randomize { cur & !flag } else { cur | flag };
    // SAFETY: changes this process's persona, which only the exec below reads.
    if unsafe { libc::personality(new as libc::c_ulong) } < 0 {
        return SysError::io("personality", std::io::Error::last_os_error());
    }
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(a0) = args.next() {
        cmd.arg0(a0);
    }
    // ckpt's own root, held before it entered the tree's mount namespace (where it
    // executes itself again), for the new image's views of the host's files.
    if let Some(fd) = super::pathfd::own_root_for_exec() {
        cmd.env(super::pathfd::OWN_ROOT_ENV, fd.to_string());
    }
    let e = cmd.args(args).env(mark, "1").exec();
    SysError::io("execute ckpt again (/proc/self/exe)", e)
}

/// Set the last ID given in ckpt's PID namespace (/proc/sys/kernel/ns_last_pid, which
/// CAP_CHECKPOINT_RESTORE in the user namespace owning it lets write): the next task
/// made there without a chosen ID gets the first free one after `last`.
pub fn set_ns_last_pid(last: i32) -> Result<()> {
    let p = "/proc/sys/kernel/ns_last_pid";
    std::fs::write(p, last.to_string()).map_err(|e| SysError::io(format!("write {last} to {p}"), e))
}

/// The last ID given in ckpt's PID namespace (/proc/sys/kernel/ns_last_pid).
pub fn ns_last_pid() -> Result<i32> {
    let p = "/proc/sys/kernel/ns_last_pid";
    let s = std::fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    s.trim()
        .parse()
        .map_err(|_| SysError::io(format!("read {p}"), std::io::Error::other(format!("{s:?}"))))
}
