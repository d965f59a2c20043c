//! x86-64 (and ia32 tasks on it): registers, syscall ABI, restartable system calls.

use serde::{Deserialize, Serialize};

pub mod compat;
mod restart;
pub use restart::{in_restart_syscall, restart_block_in_place, restart_interrupted_wait};

/// The ABI a task runs in, judged from its code segment.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    Ia32,
}

/// User code segment selectors of Linux on x86-64.
pub const USER_CS_64: u64 = 0x33;
pub const USER_CS_32: u64 = 0x23;

/// `struct user_regs_struct` of x86-64, as PTRACE_GETREGS returns it. For an ia32 task a
/// 64-bit tracer gets the same layout (the tracer's view), with the upper halves zero.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct X86Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl X86Regs {
    pub fn abi(&self) -> Abi {
        if self.cs == USER_CS_32 {
            Abi::Ia32
        } else {
            Abi::X86_64
        }
    }
}

/// Registers, FPU/vector state and debug registers of one thread.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadArchState {
    pub regs: X86Regs,
    /// The NT_X86_XSTATE regset exactly as the kernel gave it (standard, non-compacted
    /// format: the legacy 512-byte FXSAVE area, the 64-byte xsave header, then each
    /// component at its CPUID-given offset).
    #[serde(with = "serde_bytes")]
    pub xsave: Vec<u8>,
    /// DR0-DR3, DR6, DR7.
    pub debugregs: [u64; 6],
    /// The thread's GDT TLS entries (set_thread_area; glibc on ia32 points %gs at one),
    /// as `struct user_desc` words: entry number, base, limit, flags. Empty entries are
    /// left out.
    #[serde(default)]
    pub tls: Vec<[u32; 4]>,
}

impl ThreadArchState {
    pub fn abi(&self) -> Abi {
        self.regs.abi()
    }

    /// XSTATE_BV from the xsave header: the components the thread has in use.
    pub fn xstate_bv(&self) -> u64 {
        self.xsave
            .get(512..520)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }
}

/// What the image's tasks used of the architecture; checked against the host before
/// anything is created.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchHeader {
    /// "x86_64": the machine the image was made on.
    pub machine: String,
    /// ABIs of the image's tasks.
    pub abis: Vec<Abi>,
    /// XCR0 of the dump host (enabled xsave components).
    pub xcr0: u64,
    /// Components actually in use: the union over all threads of XSTATE_BV, less the
    /// components (2 and up) whose saved content is all zeros, i.e. in their init state
    /// (see `arch::components_in_use`).
    pub xfeatures_used: u64,
    /// Size of the NT_X86_XSTATE regset on the dump host.
    pub xsave_size: u32,
    /// Standard-format layout of each enabled component on the dump host:
    /// (component index, offset, size).
    pub xsave_layout: Vec<(u32, u32, u32)>,
    /// Size in bytes and 64-bit xxh3 of the vDSO text the tasks had mapped.
    pub vdso_size: u64,
    pub vdso_hash: u64,
    /// Size of the vvar area(s) in front of the vDSO.
    pub vvar_size: u64,
    /// Names (`arch::cpu::FEATURES`) of the CPU features the dump host offered user
    /// programs. The task may have relied on any of them: glibc and other libraries pick
    /// code paths from CPUID once, at startup.
    #[serde(default)]
    pub cpu_features: Vec<String>,
    /// Components that are 64-byte aligned in the compacted xsave format on the dump host
    /// (CPUID 0xD.i ECX bit 1); needed only to read a compacted-format area.
    #[serde(default)]
    pub xsave_align64: u64,
    /// ARCH_GET_XCOMP_PERM of the dumped tasks: the xsave components the process was
    /// permitted to use, including dynamically enabled ones (AMX tile data, bit 18, after
    /// ARCH_REQ_XCOMP_PERM). 0 when not recorded. Filled by dump.
    #[serde(default)]
    pub xcomp_perm: u64,
}

/// Linux x86-64 syscall numbers used by ckpt's injection (from libc for this target;
/// a unit test pins them to the x86-64 ABI, which never changes).
pub mod nr {
    pub const READ: u64 = libc::SYS_read as u64;
    pub const CLOSE: u64 = libc::SYS_close as u64;
    pub const RT_SIGRETURN: u64 = libc::SYS_rt_sigreturn as u64;
    pub const USERFAULTFD: u64 = libc::SYS_userfaultfd as u64;
    pub const MMAP: u64 = libc::SYS_mmap as u64;
    pub const MPROTECT: u64 = libc::SYS_mprotect as u64;
    pub const MUNMAP: u64 = libc::SYS_munmap as u64;
    pub const SECCOMP: u64 = libc::SYS_seccomp as u64;
    pub const BRK: u64 = libc::SYS_brk as u64;
    pub const RT_SIGACTION: u64 = libc::SYS_rt_sigaction as u64;
    pub const NANOSLEEP: u64 = libc::SYS_nanosleep as u64;
    pub const MADVISE: u64 = libc::SYS_madvise as u64;
    pub const DUP3: u64 = libc::SYS_dup3 as u64;
    pub const LSEEK: u64 = libc::SYS_lseek as u64;
    pub const SIGALTSTACK: u64 = libc::SYS_sigaltstack as u64;
    pub const PERSONALITY: u64 = libc::SYS_personality as u64;
    pub const PRCTL: u64 = libc::SYS_prctl as u64;
    pub const ARCH_PRCTL: u64 = libc::SYS_arch_prctl as u64;
    pub const CHROOT: u64 = libc::SYS_chroot as u64;
    pub const SETSID: u64 = libc::SYS_setsid as u64;
    pub const UNSHARE: u64 = libc::SYS_unshare as u64;
    pub const SETNS: u64 = libc::SYS_setns as u64;
    pub const SET_TID_ADDRESS: u64 = libc::SYS_set_tid_address as u64;
    pub const CLOCK_NANOSLEEP: u64 = libc::SYS_clock_nanosleep as u64;
    pub const OPENAT: u64 = libc::SYS_openat as u64;
    pub const SET_ROBUST_LIST: u64 = libc::SYS_set_robust_list as u64;
    pub const RSEQ: u64 = libc::SYS_rseq as u64;
    pub const CLOSE_RANGE: u64 = libc::SYS_close_range as u64;
    pub const CLONE3: u64 = libc::SYS_clone3 as u64;
    pub const PIDFD_OPEN: u64 = libc::SYS_pidfd_open as u64;
    pub const PIDFD_GETFD: u64 = libc::SYS_pidfd_getfd as u64;
    pub const FCNTL: u64 = libc::SYS_fcntl as u64;
    pub const FLOCK: u64 = libc::SYS_flock as u64;
    pub const FCHOWN: u64 = libc::SYS_fchown as u64;
    pub const INOTIFY_INIT1: u64 = libc::SYS_inotify_init1 as u64;
    pub const INOTIFY_ADD_WATCH: u64 = libc::SYS_inotify_add_watch as u64;
    pub const INOTIFY_RM_WATCH: u64 = libc::SYS_inotify_rm_watch as u64;
    pub const FANOTIFY_INIT: u64 = libc::SYS_fanotify_init as u64;
    pub const FANOTIFY_MARK: u64 = libc::SYS_fanotify_mark as u64;
    pub const IO_SETUP: u64 = libc::SYS_io_setup as u64;
    pub const IO_SUBMIT: u64 = libc::SYS_io_submit as u64;
    pub const IO_GETEVENTS: u64 = libc::SYS_io_getevents as u64;
    pub const PIPE2: u64 = libc::SYS_pipe2 as u64;
    pub const MEMFD_CREATE: u64 = libc::SYS_memfd_create as u64;
    pub const SHMGET: u64 = libc::SYS_shmget as u64;
    pub const SHMAT: u64 = libc::SYS_shmat as u64;
    pub const SHMCTL: u64 = libc::SYS_shmctl as u64;
    pub const SEMOP: u64 = libc::SYS_semop as u64;
    pub const MQ_OPEN: u64 = libc::SYS_mq_open as u64;
    pub const MQ_UNLINK: u64 = libc::SYS_mq_unlink as u64;
    pub const MQ_TIMEDSEND: u64 = libc::SYS_mq_timedsend as u64;
    pub const MQ_NOTIFY: u64 = libc::SYS_mq_notify as u64;
    pub const FCHMOD: u64 = libc::SYS_fchmod as u64;
    pub const SOCKET: u64 = libc::SYS_socket as u64;
    pub const BIND: u64 = libc::SYS_bind as u64;
    pub const LISTEN: u64 = libc::SYS_listen as u64;
    pub const SOCKETPAIR: u64 = libc::SYS_socketpair as u64;
    pub const CONNECT: u64 = libc::SYS_connect as u64;
    pub const ACCEPT4: u64 = libc::SYS_accept4 as u64;
    pub const GETSOCKNAME: u64 = libc::SYS_getsockname as u64;
    pub const GETSOCKOPT: u64 = libc::SYS_getsockopt as u64;
    pub const SHUTDOWN: u64 = libc::SYS_shutdown as u64;
    pub const SENDTO: u64 = libc::SYS_sendto as u64;
    pub const SENDMSG: u64 = libc::SYS_sendmsg as u64;
    pub const SETSOCKOPT: u64 = libc::SYS_setsockopt as u64;
    pub const EVENTFD2: u64 = libc::SYS_eventfd2 as u64;
    pub const TIMERFD_CREATE: u64 = libc::SYS_timerfd_create as u64;
    pub const TIMERFD_SETTIME: u64 = libc::SYS_timerfd_settime as u64;
    pub const SIGNALFD4: u64 = libc::SYS_signalfd4 as u64;
    pub const EPOLL_CREATE1: u64 = libc::SYS_epoll_create1 as u64;
    pub const EPOLL_CTL: u64 = libc::SYS_epoll_ctl as u64;
    pub const IOCTL: u64 = libc::SYS_ioctl as u64;
    pub const WRITE: u64 = libc::SYS_write as u64;
    pub const EXIT_GROUP: u64 = libc::SYS_exit_group as u64;
    pub const EXIT: u64 = libc::SYS_exit as u64;
    pub const KILL: u64 = libc::SYS_kill as u64;
    pub const RT_SIGTIMEDWAIT: u64 = libc::SYS_rt_sigtimedwait as u64;
    pub const WAITID: u64 = libc::SYS_waitid as u64;
    pub const SETPGID: u64 = libc::SYS_setpgid as u64;
    pub const GETITIMER: u64 = libc::SYS_getitimer as u64;
    pub const SETITIMER: u64 = libc::SYS_setitimer as u64;
    pub const TIMER_CREATE: u64 = libc::SYS_timer_create as u64;
    pub const TIMER_SETTIME: u64 = libc::SYS_timer_settime as u64;
    pub const TIMER_GETTIME: u64 = libc::SYS_timer_gettime as u64;
    pub const TIMER_GETOVERRUN: u64 = libc::SYS_timer_getoverrun as u64;
    pub const MLOCK: u64 = libc::SYS_mlock as u64;
    pub const MLOCK2: u64 = libc::SYS_mlock2 as u64;
    pub const FCHDIR: u64 = libc::SYS_fchdir as u64;
    pub const CHDIR: u64 = libc::SYS_chdir as u64;
    pub const UMASK: u64 = libc::SYS_umask as u64;
    pub const SETRESUID: u64 = libc::SYS_setresuid as u64;
    pub const SETRESGID: u64 = libc::SYS_setresgid as u64;
    pub const SETGROUPS: u64 = libc::SYS_setgroups as u64;
    pub const SETFSUID: u64 = libc::SYS_setfsuid as u64;
    pub const SETFSGID: u64 = libc::SYS_setfsgid as u64;
    pub const CAPSET: u64 = libc::SYS_capset as u64;
    pub const PRLIMIT64: u64 = libc::SYS_prlimit64 as u64;
    pub const RT_TGSIGQUEUEINFO: u64 = libc::SYS_rt_tgsigqueueinfo as u64;
    pub const GETPID: u64 = libc::SYS_getpid as u64;
    pub const MOUNT: u64 = libc::SYS_mount as u64;
    pub const EXECVEAT: u64 = libc::SYS_execveat as u64;
    pub const MREMAP: u64 = libc::SYS_mremap as u64;
    pub const RESTART_SYSCALL: u64 = libc::SYS_restart_syscall as u64;
}

/// The machine code of `syscall` (x86-64).
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];
/// Length of the syscall instruction (the kernel rewinds rip by this to restart).
pub const SYSCALL_INSN_LEN: u64 = 2;

/// `int $0x80`: the ia32 system call instruction (also 2 bytes).
pub const INT80_INSN: [u8; 2] = [0xcd, 0x80];

/// `arch_prctl` codes to map the 64-bit or 32-bit vDSO at an address
/// (CONFIG_CHECKPOINT_RESTORE).
pub const ARCH_MAP_VDSO_64: u64 = 0x2003;
pub const ARCH_MAP_VDSO_32: u64 = 0x2002;

/// ia32 system call numbers, for the few calls whose compat form matters (their effect
/// depends on the ABI of the caller: signal frames, robust lists).
pub mod nr32 {
    pub const RESTART_SYSCALL: u64 = 0;
    pub const NANOSLEEP: u64 = 162;
    pub const RT_SIGACTION: u64 = 174;
    pub const SIGALTSTACK: u64 = 186;
    pub const CLOCK_NANOSLEEP: u64 = 267;
    pub const SET_ROBUST_LIST: u64 = 311;
    pub const GET_ROBUST_LIST: u64 = 312;
    pub const CLOCK_NANOSLEEP_TIME64: u64 = 407;
    // The queries a dump runs in an ia32 thread (`compat::ia32_query`).
    pub const BRK: u64 = 45;
    pub const GETITIMER: u64 = 105;
    pub const PRCTL: u64 = 172;
    pub const RT_SIGRETURN: u64 = 173;
    pub const TIMER_GETOVERRUN: u64 = 262;
    pub const WAITID: u64 = 284;
    pub const PRLIMIT64: u64 = 340;
    pub const ARCH_PRCTL: u64 = 384;
    pub const TIMER_GETTIME64: u64 = 408;
    pub const SEMTIMEDOP_TIME64: u64 = 420;
}

/// User data segment selector (the same for both ABIs).
pub const USER_DS: u64 = 0x2b;

/// Like [`set_syscall`] for an ia32 system call through `int $0x80` at `gadget` (which
/// must lie below 4 GiB): the task is switched to the 32-bit code segment, number in
/// eax, arguments in ebx, ecx, edx, esi, edi, ebp.
pub fn set_syscall_ia32(regs: &mut X86Regs, gadget: u64, nr: u64, args: &[u64; 6]) {
    regs.rip = gadget;
    regs.rax = nr;
    regs.orig_rax = u64::MAX;
    regs.rbx = args[0];
    regs.rcx = args[1];
    regs.rdx = args[2];
    regs.rsi = args[3];
    regs.rdi = args[4];
    regs.rbp = args[5];
    regs.cs = USER_CS_32;
    regs.ss = USER_DS;
}

/// Set up `regs` so that, resumed at `gadget` (the address of a syscall instruction),
/// the task performs syscall `nr` with `args`. `orig_rax` is set to -1 so the kernel's
/// syscall-restart logic does not touch the injected registers.
pub fn set_syscall(regs: &mut X86Regs, gadget: u64, nr: u64, args: &[u64; 6]) {
    regs.rip = gadget;
    regs.rax = nr;
    regs.orig_rax = u64::MAX;
    regs.rdi = args[0];
    regs.rsi = args[1];
    regs.rdx = args[2];
    regs.r10 = args[3];
    regs.r8 = args[4];
    regs.r9 = args[5];
    regs.cs = USER_CS_64;
    regs.ss = USER_DS;
}

/// Machine code that runs a table of system calls in a stopped task with one stop
/// (see `sys::inject::Injector::batch`). In: rbx = the table, r12 = its entries. Each
/// entry is [`BATCH_ENTRY_LEN`] bytes, 8 words: the syscall number (with
/// [`BATCH_MAY_FAIL`] set, a failure does not end the batch), six arguments, and the
/// result, written by the code. It stops after the first failure that may not happen and
/// ends on an `int3`; rbx then points past the last entry that ran.
///
/// ```text
/// 1:  test r12, r12 ; jz 3f
///     mov rax, [rbx] ; btr rax, 63 ; setc r13b
///     mov rdi, [rbx+8] ; mov rsi, [rbx+16] ; mov rdx, [rbx+24]
///     mov r10, [rbx+32] ; mov r8, [rbx+40] ; mov r9, [rbx+48]
///     syscall
///     mov [rbx+56], rax ; add rbx, 64 ; dec r12
///     cmp rax, -4095 ; jb 1b          (success: next entry)
///     test r13b, r13b ; jnz 1b        (a failure that may happen: next entry)
/// 3:  int3
/// ```
pub const BATCH_CODE: [u8; 68] = [
    0x4d, 0x85, 0xe4, 0x74, 0x3e, 0x48, 0x8b, 0x03, 0x48, 0x0f, 0xba, 0xf0, 0x3f, 0x41, 0x0f, 0x92,
    0xc5, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53,
    0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48,
    0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x72, 0xc2, 0x45, 0x84,
    0xed, 0x75, 0xbd, 0xcc,
];
/// Bytes per entry of a [`BATCH_CODE`] table.
pub const BATCH_ENTRY_LEN: u64 = 64;
/// Syscall-number flag of a [`BATCH_CODE`] entry: its failure does not end the batch.
pub const BATCH_MAY_FAIL: u64 = 1 << 63;

/// Set up `regs` to run the [`BATCH_CODE`] at `code` over `entries` entries at `table`
/// (64-bit mode, no syscall restart: see [`set_syscall`]).
pub fn set_batch(regs: &mut X86Regs, code: u64, table: u64, entries: u64) {
    regs.rip = code;
    regs.rbx = table;
    regs.r12 = entries;
    regs.orig_rax = u64::MAX;
    regs.cs = USER_CS_64;
    regs.ss = USER_DS;
}

/// Where the task stands after the [`BATCH_CODE`] at `code` reached its breakpoint, and
/// how many entries of the table at `table` ran; `None` if it stopped anywhere else.
pub fn batch_ran(regs: &X86Regs, code: u64, table: u64) -> Option<u64> {
    let at_end = regs.rip == code + BATCH_CODE.len() as u64;
    let ran = regs.rbx.checked_sub(table)? / BATCH_ENTRY_LEN;
    at_end.then_some(ran)
}

/// The return value of an injected syscall at its exit stop.
pub fn syscall_result(regs: &X86Regs) -> i64 {
    regs.rax as i64
}

// Kernel-internal restart codes a task stopped inside a syscall carries in rax.
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
pub(crate) const ERESTARTNOHAND: i64 = 514;
pub(crate) const ERESTART_RESTARTBLOCK: i64 = 516;

/// How a task stopped inside a system call will continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallState {
    /// Not interrupted inside a system call.
    None,
    /// Interrupted in syscall `nr`; it is restarted with the same arguments.
    Restart { nr: u64 },
    /// Interrupted in a syscall whose kernel restart block is lost with the checkpoint;
    /// it is restarted from its arguments (a relative sleep continues with the time that
    /// was left).
    RestartBlock { nr: u64 },
}

pub fn syscall_state(regs: &X86Regs) -> SyscallState {
    // An ia32 task's syscall number and return value are 32-bit (the kernel sign-extends
    // them the same way).
    let (nr, ret) = match regs.abi() {
        Abi::X86_64 => (regs.orig_rax as i64, regs.rax as i64),
        Abi::Ia32 => (
            i64::from(regs.orig_rax as u32 as i32),
            i64::from(regs.rax as u32 as i32),
        ),
    };
    if nr < 0 {
        return SyscallState::None;
    }
    let nr = nr as u64;
    match -ret {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => SyscallState::Restart { nr },
        ERESTART_RESTARTBLOCK => SyscallState::RestartBlock { nr },
        _ => SyscallState::None,
    }
}

/// Turn the registers of a task stopped inside an interruptible syscall into registers
/// that re-execute the syscall instruction when the task runs again, as the kernel would
/// have done had the task not been checkpointed.
///
/// The kernel's restart block (used by -ERESTART_RESTARTBLOCK) does not survive a
/// checkpoint, so such syscalls are re-issued from their arguments: a relative
/// nanosleep/clock_nanosleep that was given a `rem` buffer sleeps for the remaining time
/// the kernel wrote there (its request pointer is pointed at `rem`); any other sleeps or
/// waits again for its original timeout, which POSIX allows (sleeps last at least as long
/// as asked).
pub fn resume_regs(regs: &X86Regs) -> X86Regs {
    let mut r = *regs;
    match syscall_state(regs) {
        SyscallState::None => {}
        SyscallState::Restart { nr } => {
            r.rax = nr;
            r.rip = r.rip.wrapping_sub(SYSCALL_INSN_LEN);
        }
        SyscallState::RestartBlock { nr } => {
            r.rax = nr;
            r.rip = r.rip.wrapping_sub(SYSCALL_INSN_LEN);
            match regs.abi() {
                Abi::X86_64 => match nr {
                    nr::NANOSLEEP if r.rsi != 0 => r.rdi = r.rsi,
                    nr::CLOCK_NANOSLEEP if r.r10 != 0 => r.rdx = r.r10,
                    _ => {}
                },
                // nanosleep(ebx=req, ecx=rem); clock_nanosleep(ebx, ecx=flags, edx=req,
                // esi=rem), also in its time64 form.
                Abi::Ia32 => match nr {
                    nr32::NANOSLEEP if r.rcx != 0 => r.rbx = r.rcx,
                    nr32::CLOCK_NANOSLEEP | nr32::CLOCK_NANOSLEEP_TIME64 if r.rsi != 0 => {
                        r.rdx = r.rsi
                    }
                    _ => {}
                },
            }
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Registers with which a task that was stopped (and had syscalls injected, so it now
/// sits in a syscall-exit stop) runs on in *this* kernel, exactly as the kernel's own
/// signal-return path would have continued it: an interrupted syscall is restarted, one
/// with a restart block through restart_syscall (the restart block is still valid).
pub fn release_regs(regs: &X86Regs) -> X86Regs {
    let mut r = *regs;
    match syscall_state(regs) {
        SyscallState::None => {}
        SyscallState::Restart { nr } => {
            r.rax = nr;
            r.rip = r.rip.wrapping_sub(SYSCALL_INSN_LEN);
        }
        SyscallState::RestartBlock { .. } => {
            r.rax = match regs.abi() {
                Abi::X86_64 => nr::RESTART_SYSCALL,
                Abi::Ia32 => nr32::RESTART_SYSCALL,
            };
            r.rip = r.rip.wrapping_sub(SYSCALL_INSN_LEN);
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Debug-register offsets in `struct user` (for PTRACE_PEEKUSER/POKEUSER):
/// `offsetof(struct user, u_debugreg)` is 848 on x86-64.
pub const DEBUGREG_OFFSET: usize = 848;
/// Which debug registers are saved (DR4/DR5 are aliases and not accessible).
pub const DEBUGREG_INDEXES: [usize; 6] = [0, 1, 2, 3, 6, 7];

/// GDT entries available to user TLS (GDT_ENTRY_TLS_MIN..=MAX on x86-64).
pub const TLS_ENTRIES: std::ops::RangeInclusive<u32> = 12..=14;

/// Whether a `user_desc` (flags word) describes an empty entry: the kernel reports
/// unused slots with `read_exec_only` and `seg_not_present` set and base/limit zero.
pub fn tls_entry_is_empty(d: &[u32; 4]) -> bool {
    d[1] == 0 && d[2] == 0 && (d[3] & 0x28) == 0x28
}

/// The lowest address PTRACE_SETREGS refuses as an FS or GS base (TASK_SIZE_MAX of a
/// 4-level page table kernel: the last user page is never mapped).
pub const BASE_LIMIT: u64 = 0x7fff_ffff_f000;

/// Why the kernel would refuse to set these registers (PTRACE_SETREGS: `putreg` and
/// `set_segment_reg` in arch/x86/kernel/ptrace.c), if it would: a selector that is not
/// null and not of privilege level 3, a null CS or SS, a value wider than a selector
/// (the kernel would cut it to 16 bits), an FS or GS base outside user space.
pub fn setregs_refusal(r: &X86Regs) -> Option<String> {
    for (name, v) in [
        ("cs", r.cs),
        ("ss", r.ss),
        ("ds", r.ds),
        ("es", r.es),
        ("fs", r.fs),
        ("gs", r.gs),
    ] {
        let null_refused = matches!(name, "cs" | "ss");
        if v > 0xffff || (v != 0 && v & 3 != 3) || (v == 0 && null_refused) {
            return Some(format!(
                "segment register {name} = {v:#x} is not a user selector"
            ));
        }
    }
    for (name, v) in [("fs_base", r.fs_base), ("gs_base", r.gs_base)] {
        if v >= BASE_LIMIT {
            return Some(format!("{name} {v:#x} is outside user space"));
        }
    }
    None
}

/// Whether PTRACE_SET_THREAD_AREA takes this TLS entry (`do_set_thread_area` and
/// `tls_desc_okay` in arch/x86/kernel/tls.c): a user TLS slot, holding an empty or
/// all-zero descriptor or a 32-bit data segment.
pub fn tls_entry_settable(d: &[u32; 4]) -> bool {
    let f = d[3];
    let contents = (f >> 1) & 3;
    let empty = d[1] == 0 && d[2] == 0 && (f & 0x7f == 0x28 || f & 0x7f == 0);
    TLS_ENTRIES.contains(&d[0]) && (empty || (f & 1 == 1 && contents <= 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setregs_refusal_follows_the_kernel() {
        let good = X86Regs {
            cs: USER_CS_64,
            ss: USER_DS,
            fs_base: 0x7f00_0000_0000,
            ..Default::default()
        };
        assert_eq!(setregs_refusal(&good), None);
        for bad in [
            X86Regs { cs: 0, ..good },
            X86Regs { ss: 0, ..good },
            X86Regs { cs: 0x30, ..good },
            X86Regs { ds: 0x12, ..good },
            X86Regs {
                gs: 0x1_002b,
                ..good
            },
            X86Regs {
                fs_base: BASE_LIMIT,
                ..good
            },
            X86Regs {
                gs_base: 1 << 63,
                ..good
            },
        ] {
            assert!(setregs_refusal(&bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            setregs_refusal(&X86Regs {
                ds: 0,
                es: 0x2b,
                ..good
            }),
            None
        );
        assert!(tls_entry_settable(&[12, 0, 0, 0x28]));
        assert!(tls_entry_settable(&[13, 0x1000, 0xfffff, 0x51]));
        assert!(!tls_entry_settable(&[11, 0, 0, 0x28]));
        assert!(!tls_entry_settable(&[12, 0x1000, 0xfffff, 0x50]));
        assert!(!tls_entry_settable(&[12, 0x1000, 0xfffff, 0x57]));
    }

    #[test]
    fn restart_rewinds_and_restores_nr() {
        let regs = X86Regs {
            orig_rax: 0,
            rax: (-(ERESTARTSYS)) as u64,
            rip: 0x1000,
            cs: USER_CS_64,
            ..Default::default()
        };
        let r = resume_regs(&regs);
        assert_eq!(r.rip, 0x0ffe);
        assert_eq!(r.rax, 0);
        assert_eq!(r.orig_rax, u64::MAX);
    }

    #[test]
    fn relative_nanosleep_continues_with_remaining_time() {
        let regs = X86Regs {
            orig_rax: nr::CLOCK_NANOSLEEP,
            rax: (-(ERESTART_RESTARTBLOCK)) as u64,
            rip: 0x2002,
            rdx: 0x7000,
            r10: 0x7100,
            cs: USER_CS_64,
            ..Default::default()
        };
        let r = resume_regs(&regs);
        assert_eq!(r.rip, 0x2000);
        assert_eq!(r.rax, nr::CLOCK_NANOSLEEP);
        assert_eq!(r.rdx, 0x7100);
    }

    #[test]
    fn completed_syscall_is_left_alone() {
        let regs = X86Regs {
            orig_rax: 1,
            rax: 5,
            rip: 0x3000,
            cs: USER_CS_64,
            ..Default::default()
        };
        let r = resume_regs(&regs);
        assert_eq!(r.rip, 0x3000);
        assert_eq!(r.rax, 5);
    }
}

#[cfg(test)]
mod nr_tests {
    /// The x86-64 system call table is ABI: these numbers never change.
    #[test]
    fn syscall_numbers_are_the_x86_64_abi() {
        use super::nr::*;
        let pinned: &[(u64, u64)] = &[
            (READ, 0),
            (CLOSE, 3),
            (USERFAULTFD, 323),
            (MMAP, 9),
            (MPROTECT, 10),
            (MUNMAP, 11),
            (SECCOMP, 317),
            (BRK, 12),
            (RT_SIGACTION, 13),
            (NANOSLEEP, 35),
            (MADVISE, 28),
            (DUP3, 292),
            (LSEEK, 8),
            (SIGALTSTACK, 131),
            (PERSONALITY, 135),
            (PRCTL, 157),
            (ARCH_PRCTL, 158),
            (CHROOT, 161),
            (SETSID, 112),
            (SET_TID_ADDRESS, 218),
            (CLOCK_NANOSLEEP, 230),
            (OPENAT, 257),
            (SET_ROBUST_LIST, 273),
            (RSEQ, 334),
            (CLOSE_RANGE, 436),
            (CLONE3, 435),
            (PIDFD_OPEN, 434),
            (PIDFD_GETFD, 438),
            (FCNTL, 72),
            (FLOCK, 73),
            (FCHOWN, 93),
            (INOTIFY_INIT1, 294),
            (INOTIFY_ADD_WATCH, 254),
            (INOTIFY_RM_WATCH, 255),
            (FANOTIFY_INIT, 300),
            (FANOTIFY_MARK, 301),
            (IO_SETUP, 206),
            (IO_SUBMIT, 209),
            (IO_GETEVENTS, 208),
            (PIPE2, 293),
            (MEMFD_CREATE, 319),
            (SHMGET, 29),
            (SHMAT, 30),
            (SHMCTL, 31),
            (SEMOP, 65),
            (MQ_OPEN, 240),
            (MQ_UNLINK, 241),
            (MQ_TIMEDSEND, 242),
            (MQ_NOTIFY, 244),
            (FCHMOD, 91),
            (SOCKET, 41),
            (BIND, 49),
            (LISTEN, 50),
            (SOCKETPAIR, 53),
            (CONNECT, 42),
            (ACCEPT4, 288),
            (GETSOCKNAME, 51),
            (GETSOCKOPT, 55),
            (SHUTDOWN, 48),
            (SENDTO, 44),
            (SENDMSG, 46),
            (SETSOCKOPT, 54),
            (EVENTFD2, 290),
            (TIMERFD_CREATE, 283),
            (TIMERFD_SETTIME, 286),
            (SIGNALFD4, 289),
            (EPOLL_CREATE1, 291),
            (EPOLL_CTL, 233),
            (IOCTL, 16),
            (WRITE, 1),
            (EXIT_GROUP, 231),
            (EXIT, 60),
            (KILL, 62),
            (RT_SIGTIMEDWAIT, 128),
            (WAITID, 247),
            (SETPGID, 109),
            (GETITIMER, 36),
            (SETITIMER, 38),
            (TIMER_CREATE, 222),
            (TIMER_SETTIME, 223),
            (TIMER_GETTIME, 224),
            (TIMER_GETOVERRUN, 225),
            (MLOCK, 149),
            (MLOCK2, 325),
            (FCHDIR, 81),
            (CHDIR, 80),
            (UMASK, 95),
            (SETRESUID, 117),
            (SETRESGID, 119),
            (SETGROUPS, 116),
            (SETFSUID, 122),
            (SETFSGID, 123),
            (CAPSET, 126),
            (PRLIMIT64, 302),
            (RT_TGSIGQUEUEINFO, 297),
            (GETPID, 39),
            (MOUNT, 165),
            (EXECVEAT, 322),
            (MREMAP, 25),
            (RESTART_SYSCALL, 219),
        ];
        for &(got, want) in pinned {
            assert_eq!(got, want);
        }
    }
}
