//! Names that exist for a moment only, whatever happens to ckpt meanwhile.
//!
//! Restore gives some files a name for a few microseconds: a deleted file it recreates is
//! linked under its old name, opened there (so that /proc shows that name, " (deleted)")
//! and unlinked again; a removed name of a file is linked again the same way; a removed
//! directory or FIFO is made, held and removed. If ckpt died between making the name
//! and removing it, the name would stay behind — SIGKILL cannot be deferred.
//!
//! So these steps run in a child that shares ckpt's memory and descriptor table
//! (`clone` with `CLONE_VM | CLONE_FILES | CLONE_VFORK`, as `posix_spawn` makes its
//! child): ckpt waits for it, and a SIGKILL of ckpt (which ends that wait) does not end
//! the child, which goes on to remove the name and exits. The descriptor it opened
//! lands in the shared table, so ckpt has it once the child is done. The child runs
//! raw system calls only, with every signal blocked, on a stack of its own.

use super::{Result, SysError, rerr};
use rustix::io::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What is made under the name.
#[derive(Clone, Copy, Debug)]
pub enum Make<'a> {
    /// A link to this file: one made without a name (`O_TMPFILE`; linked through
    /// `AT_EMPTY_PATH`).
    Unnamed(BorrowedFd<'a>),
    /// A link to the file behind this descriptor, a file that has names elsewhere
    /// (linked through its `/proc/self/fd` entry).
    Held(RawFd),
    /// A new empty regular file, mode 0600, made exclusively.
    File,
    /// A new directory, mode 0700.
    Dir,
    /// A new FIFO, mode 0600.
    Fifo,
}

impl Make<'_> {
    fn kind(&self) -> i32 {
        match self {
            Make::Unnamed(_) => 0,
            Make::Held(_) => 1,
            Make::File => 2,
            Make::Dir => 3,
            Make::Fifo => 4,
        }
    }
}

/// The steps a child that ran stopped at (for the error message).
const STEPS: [&str; 6] = [
    "create directory",
    "open directory",
    "check directory",
    "make",
    "open",
    "remove",
];

/// Everything the child needs and reports, in memory it shares with ckpt.
#[repr(C)]
struct Job {
    dir: i32,
    /// A private directory (mode 0700) to make in `dir` first, and the name in it; null
    /// for the name right in `dir`.
    private: *const libc::c_char,
    name: *const libc::c_char,
    kind: i32,
    /// `Unnamed`: its descriptor; `Held`: unused.
    src: i32,
    /// `Held`: "/proc/self/fd/N".
    src_path: *const libc::c_char,
    /// Flags of the open under the name (not for `File`, which is opened by its
    /// creation).
    oflags: i32,
    euid: u32,
    /// Fault injection: nanoseconds the child waits while the name exists.
    linger_ns: i64,
    // Results.
    fd: i32,
    /// The first step that failed (index into STEPS), -1 for none, and its errno.
    failed: i32,
    errno: i32,
    /// errno of removing the name (or the private directory), 0 for done.
    remove_errno: i32,
}

/// The raw system call's result, or -errno.
///
/// SAFETY (for callers): only raw system calls on values the caller vouches for.
unsafe fn sys(n: libc::c_long, a: [libc::c_long; 5]) -> libc::c_long {
    // SAFETY: as the function's contract says; errno is read right after the call, in
    // the same (child) thread: the location is the parent thread's, which waits.
    unsafe {
        let r = libc::syscall(n, a[0], a[1], a[2], a[3], a[4]);
        if r < 0 {
            -(*libc::__errno_location() as libc::c_long)
        } else {
            r
        }
    }
}

/// The child: make the name, open it, remove it (and the private directory).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Job` ckpt keeps alive until this child has exited (ckpt
    // waits for it: CLONE_VFORK; if ckpt dies the memory lives on with this child,
    // which holds the address space). Only raw system calls follow, on pointers into
    // that job (NUL-terminated strings ckpt made) and on descriptors of the shared
    // table.
    unsafe {
        let job = &mut *(arg as *mut Job);
        let fail = |job: &mut Job, step: i32, r: libc::c_long| {
            if job.failed < 0 {
                job.failed = step;
                job.errno = -r as i32;
            }
        };
        let cloexec = libc::O_CLOEXEC as libc::c_long;
        let mut d = job.dir as libc::c_long;
        if !job.private.is_null() {
            let r = sys(
                libc::SYS_mkdirat,
                [d, job.private as libc::c_long, 0o700, 0, 0],
            );
            if r < 0 {
                fail(job, 0, r);
                return 0;
            }
            let r = sys(
                libc::SYS_openat,
                [
                    d,
                    job.private as libc::c_long,
                    (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW) as libc::c_long | cloexec,
                    0,
                    0,
                ],
            );
            if r < 0 {
                fail(job, 1, r);
                sys(
                    libc::SYS_unlinkat,
                    [
                        d,
                        job.private as libc::c_long,
                        libc::AT_REMOVEDIR as libc::c_long,
                        0,
                        0,
                    ],
                );
                return 0;
            }
            let pd = r;
            let mut st: libc::stat = std::mem::zeroed();
            let r = sys(
                libc::SYS_fstat,
                [pd, &mut st as *mut libc::stat as libc::c_long, 0, 0, 0],
            );
            if r < 0 || st.st_uid != job.euid || st.st_mode & 0o077 != 0 {
                // Not the directory just made (someone replaced it): left alone.
                fail(
                    job,
                    2,
                    if r < 0 {
                        r
                    } else {
                        -(libc::EEXIST as libc::c_long)
                    },
                );
                sys(libc::SYS_close, [pd, 0, 0, 0, 0]);
                return 0;
            }
            d = pd;
        }
        let name = job.name as libc::c_long;
        let made = match job.kind {
            0 => sys(
                libc::SYS_linkat,
                [
                    job.src as libc::c_long,
                    c"".as_ptr() as libc::c_long,
                    d,
                    name,
                    libc::AT_EMPTY_PATH as libc::c_long,
                ],
            ),
            1 => sys(
                libc::SYS_linkat,
                [
                    libc::AT_FDCWD as libc::c_long,
                    job.src_path as libc::c_long,
                    d,
                    name,
                    libc::AT_SYMLINK_FOLLOW as libc::c_long,
                ],
            ),
            2 => sys(
                libc::SYS_openat,
                [
                    d,
                    name,
                    (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW)
                        as libc::c_long
                        | cloexec,
                    0o600,
                    0,
                ],
            ),
            3 => sys(libc::SYS_mkdirat, [d, name, 0o700, 0, 0]),
            _ => sys(
                libc::SYS_mknodat,
                [d, name, (libc::S_IFIFO | 0o600) as libc::c_long, 0, 0],
            ),
        };
        if made < 0 {
            fail(job, 3, made);
        } else {
            if job.kind == 2 {
                job.fd = made as i32;
            } else {
                let r = sys(
                    libc::SYS_openat,
                    [
                        d,
                        name,
                        (job.oflags | libc::O_NOFOLLOW) as libc::c_long | cloexec,
                        0,
                        0,
                    ],
                );
                if r < 0 {
                    fail(job, 4, r);
                } else {
                    job.fd = r as i32;
                }
            }
            if job.linger_ns > 0 {
                let ts = libc::timespec {
                    tv_sec: (job.linger_ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (job.linger_ns % 1_000_000_000) as libc::c_long,
                };
                sys(
                    libc::SYS_nanosleep,
                    [&ts as *const libc::timespec as libc::c_long, 0, 0, 0, 0],
                );
            }
            let flags = if job.kind == 3 { libc::AT_REMOVEDIR } else { 0 };
            let r = sys(libc::SYS_unlinkat, [d, name, flags as libc::c_long, 0, 0]);
            if r < 0 {
                job.remove_errno = -r as i32;
            }
        }
        if !job.private.is_null() {
            sys(libc::SYS_close, [d, 0, 0, 0, 0]);
            let r = sys(
                libc::SYS_unlinkat,
                [
                    job.dir as libc::c_long,
                    job.private as libc::c_long,
                    libc::AT_REMOVEDIR as libc::c_long,
                    0,
                    0,
                ],
            );
            if r < 0 && job.remove_errno == 0 {
                job.remove_errno = -r as i32;
            }
        }
        0
    }
}

/// Make `name` in `dir` as `make` says (inside a new private directory `private` of
/// `dir` if given, which goes again too), open it there with `oflags` (`O_NOFOLLOW`
/// and `O_CLOEXEC` added) and remove it again, in a child that finishes the removal
/// even if ckpt is killed meanwhile (see the module's comment). Returns the descriptor
/// opened under the name: the caller checks it is what it made.
pub fn transient_name(
    dir: impl AsFd,
    private: Option<&[u8]>,
    name: &[u8],
    make: Make<'_>,
    oflags: rustix::fs::OFlags,
    what: &str,
) -> Result<OwnedFd> {
    let cstr = |b: &[u8]| {
        CString::new(b.to_vec()).map_err(|_| SysError::Other(format!("{what}: a NUL in a name")))
    };
    let name_c = cstr(name)?;
    let private_c = private.map(cstr).transpose()?;
    let src_path = match make {
        Make::Held(fd) => Some(cstr(format!("/proc/self/fd/{fd}").as_bytes())?),
        _ => None,
    };
    let mut job = Job {
        dir: dir.as_fd().as_raw_fd(),
        private: private_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        name: name_c.as_ptr(),
        kind: make.kind(),
        src: match make {
            Make::Unnamed(f) => f.as_raw_fd(),
            _ => -1,
        },
        src_path: src_path.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        oflags: oflags.bits() as i32,
        euid: rustix::process::geteuid().as_raw(),
        linger_ns: super::deferred::linger_ms("transient name").map_or(0, |ms| {
            i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
        }),
        fd: -1,
        failed: -1,
        errno: 0,
        remove_errno: 0,
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the child runs `child` on `stack` (whose top, 16-byte aligned, is passed:
    // the stack grows down on the architectures we build for), sharing our memory and
    // descriptor table; CLONE_VFORK suspends this thread until the child has exited, so
    // `job`, the strings it points to and `stack` outlive its use of them (if we are
    // killed meanwhile, the child holds the address space). Every signal is blocked
    // across the clone (the child starts with that mask and never unblocks; ours comes
    // back right after), so no handler of ours runs on the child's stack.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        let pid = libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut job as *mut Job as *mut libc::c_void,
        );
        let err = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(SysError::io(format!("clone for {what}"), err));
        }
        pid
    };
    // Reap it (it has exited: CLONE_VFORK). ECHILD (reaped by someone else, or SIGCHLD
    // ignored) changes nothing: the results are in `job`.
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    drop(stack);
    let fd = (job.fd >= 0).then(|| {
        // SAFETY: the child opened this descriptor in the table we share and nothing
        // else knows of it: we own it from here.
        unsafe { OwnedFd::from_raw_fd(job.fd) }
    });
    if job.failed >= 0 {
        let step = usize::try_from(job.failed)
            .ok()
            .and_then(|i| STEPS.get(i))
            .copied()
            .unwrap_or("step");
        return Err(rerr(
            format!("{step} {what}"),
            Errno::from_raw_os_error(job.errno),
        ));
    }
    let fd = fd.ok_or_else(|| SysError::Other(format!("{what}: the child opened nothing")))?;
    if job.remove_errno != 0 {
        return Err(rerr(
            format!("remove {what} again"),
            Errno::from_raw_os_error(job.remove_errno),
        ));
    }
    Ok(fd)
}

/// Whether an error of [`transient_name`] is the name (or the private directory)
/// being taken already.
pub fn name_taken(e: &SysError) -> bool {
    e.errno() == Some(libc::EEXIST)
}
