//! Calls a freeze interrupted, made to run on as if nothing had happened: the waits the
//! kernel fails with EINTR on any wakeup, and the restart blocks that can be turned into
//! a plain re-issue of the call (see `dump::freeze::restart_if_interrupted`).

use super::{
    Abi, ERESTARTNOHAND, INT80_INSN, SYSCALL_INSN, SYSCALL_INSN_LEN, SyscallState, X86Regs, nr,
    nr32, syscall_state,
};

/// System calls that fail with a plain -EINTR (no restart code) whenever the task is
/// woken for a signal, even when no handler runs: the ptrace interrupt that freezes a
/// task for a dump is such a wakeup, so without help the program would see a dump as an
/// EINTR (`man 7 signal`, "Interruption of system calls ... by stop signals").
fn fails_with_eintr_when_woken(abi: Abi, nr: u64) -> bool {
    match abi {
        // epoll_wait, epoll_pwait, epoll_pwait2, rt_sigtimedwait
        Abi::X86_64 => matches!(nr, 232 | 281 | 441 | 128),
        // epoll_wait, epoll_pwait, epoll_pwait2, rt_sigtimedwait (and its time64 form)
        Abi::Ia32 => matches!(nr, 256 | 319 | 441 | 177 | 421),
    }
}

/// The registers of a thread that the freeze itself interrupted in a system call that
/// then failed with EINTR (see [`fails_with_eintr_when_woken`]), turned into those of the
/// same call interrupted with -ERESTARTNOHAND: the kernel then restarts it when the task
/// runs on without a signal handler being invoked, and still fails it with EINTR when a
/// handler is (a signal that arrived meanwhile), which is what the program would have
/// seen had it never been stopped. A restarted call waits again for its whole timeout,
/// which POSIX allows for these calls' relative timeouts (a restarted wait is at least as
/// long as asked); the kernel does the same for poll and select when it cannot write the
/// time left back.
///
/// `read_code(addr)` gives the two bytes of the task's code at `addr`: only a task that
/// stands right after its system call instruction is changed (a task stopped on the first
/// instruction of a signal handler still carries the number and EINTR of the call the
/// signal interrupted).
pub fn restart_interrupted_wait(
    regs: &X86Regs,
    read_code: impl FnOnce(u64) -> Option<[u8; 2]>,
) -> Option<X86Regs> {
    let (nr, ret) = match regs.abi() {
        Abi::X86_64 => (regs.orig_rax as i64, regs.rax as i64),
        Abi::Ia32 => (
            i64::from(regs.orig_rax as u32 as i32),
            i64::from(regs.rax as u32 as i32),
        ),
    };
    if nr < 0
        || ret != -i64::from(libc::EINTR)
        || !fails_with_eintr_when_woken(regs.abi(), nr as u64)
    {
        return None;
    }
    let insn_before = read_code(regs.rip.checked_sub(SYSCALL_INSN_LEN)?)?;
    if insn_before != SYSCALL_INSN && insn_before != INT80_INSN {
        return None;
    }
    let mut r = *regs;
    // As the kernel stores it for both ABIs (a sign-extended long).
    r.rax = (-ERESTARTNOHAND) as u64;
    Some(r)
}

/// The registers of a thread the freeze interrupted in a call the kernel would resume
/// through its restart block (`restart_syscall`), turned, where that loses nothing, into
/// those of the same call interrupted with -ERESTARTNOHAND: the kernel then re-issues
/// the call itself instead of `restart_syscall`, so a later dump of the task still sees
/// which call it is in and its image can be restored (a restart block is not saved:
/// a restored `restart_syscall` would fail with EINTR). Lossless are poll without a
/// timeout, a futex wait with an absolute timeout (FUTEX_WAIT_BITSET), an absolute
/// clock_nanosleep (all re-issued as they were) and a relative sleep given a `rem`
/// buffer, re-issued for the time the kernel wrote there (longer by the time the dump
/// held the task, which POSIX allows). Other calls keep their restart block: exact while
/// the task lives.
pub fn restart_block_in_place(regs: &X86Regs) -> Option<X86Regs> {
    const TIMER_ABSTIME: u64 = 1;
    const FUTEX_WAIT_BITSET: u64 = 9;
    // FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
    let futex_cmd = |op: u64| op & !(128 | 256);
    let SyscallState::RestartBlock { nr } = syscall_state(regs) else {
        return None;
    };
    let mut r = *regs;
    let ok = match regs.abi() {
        // poll(ufds, nfds, timeout); futex(uaddr, op, ...); clock_nanosleep(clock,
        // flags, req, rem); nanosleep(req, rem)
        Abi::X86_64 => match nr {
            7 => (r.rdx as i32) < 0,
            202 => futex_cmd(r.rsi) == FUTEX_WAIT_BITSET,
            nr::CLOCK_NANOSLEEP if r.rsi & TIMER_ABSTIME != 0 => true,
            nr::CLOCK_NANOSLEEP if r.r10 != 0 => {
                r.rdx = r.r10;
                true
            }
            nr::NANOSLEEP if r.rsi != 0 => {
                r.rdi = r.rsi;
                true
            }
            _ => false,
        },
        // The same in ebx, ecx, edx, esi (futex and clock_nanosleep also in their
        // time64 forms).
        Abi::Ia32 => match nr {
            168 => (r.rdx as i32) < 0,
            240 | 422 => futex_cmd(r.rcx & 0xffff_ffff) == FUTEX_WAIT_BITSET,
            nr32::CLOCK_NANOSLEEP | nr32::CLOCK_NANOSLEEP_TIME64 if r.rcx & TIMER_ABSTIME != 0 => {
                true
            }
            nr32::CLOCK_NANOSLEEP | nr32::CLOCK_NANOSLEEP_TIME64 if r.rsi != 0 => {
                r.rdx = r.rsi;
                true
            }
            nr32::NANOSLEEP if r.rcx != 0 => {
                r.rbx = r.rcx;
                true
            }
            _ => false,
        },
    };
    if !ok {
        return None;
    }
    r.rax = (-ERESTARTNOHAND) as u64;
    Some(r)
}

/// Whether a thread stopped in `restart_syscall` (a call resumed through the kernel's
/// restart block, which no image holds): restored, it fails with EINTR.
pub fn in_restart_syscall(regs: &X86Regs) -> bool {
    let restart = match regs.abi() {
        Abi::X86_64 => nr::RESTART_SYSCALL,
        Abi::Ia32 => nr32::RESTART_SYSCALL,
    };
    syscall_state(regs) == SyscallState::RestartBlock { nr: restart }
}

#[cfg(test)]
mod tests {
    use super::super::{ERESTART_RESTARTBLOCK, USER_CS_32, USER_CS_64, release_regs, resume_regs};
    use super::*;

    #[test]
    fn epoll_wait_failed_by_the_freeze_is_restarted() {
        let regs = X86Regs {
            orig_rax: 232,
            rax: (-(libc::EINTR as i64)) as u64,
            rip: 0x4002,
            cs: USER_CS_64,
            ..Default::default()
        };
        let r = restart_interrupted_wait(&regs, |_| Some(SYSCALL_INSN)).expect("restartable");
        assert_eq!(syscall_state(&r), SyscallState::Restart { nr: 232 });
        let resumed = resume_regs(&r);
        assert_eq!((resumed.rip, resumed.rax), (0x4000, 232));
        let released = release_regs(&r);
        assert_eq!((released.rip, released.rax), (0x4000, 232));
        // Not right after a syscall instruction (e.g. on a handler's first instruction).
        assert_eq!(
            restart_interrupted_wait(&regs, |_| Some([0xc3, 0x90])),
            None
        );
        // Other calls' EINTR, and other errors, are left alone.
        let read = X86Regs {
            orig_rax: 0,
            ..regs
        };
        assert_eq!(
            restart_interrupted_wait(&read, |_| Some(SYSCALL_INSN)),
            None
        );
        let ok = X86Regs { rax: 1, ..regs };
        assert_eq!(restart_interrupted_wait(&ok, |_| Some(SYSCALL_INSN)), None);
    }

    #[test]
    fn ia32_epoll_wait_failed_by_the_freeze_is_restarted() {
        let regs = X86Regs {
            orig_rax: 256,
            rax: u64::from((-libc::EINTR) as u32),
            rip: 0x4002,
            cs: USER_CS_32,
            ..Default::default()
        };
        let r = restart_interrupted_wait(&regs, |a| (a == 0x4000).then_some(INT80_INSN))
            .expect("restartable");
        assert_eq!(syscall_state(&r), SyscallState::Restart { nr: 256 });
    }

    #[test]
    fn restart_blocks_that_lose_nothing_become_restarts() {
        let rb = |orig_rax, f: fn(&mut X86Regs)| {
            let mut r = X86Regs {
                orig_rax,
                rax: (-ERESTART_RESTARTBLOCK) as u64,
                rip: 0x5002,
                cs: USER_CS_64,
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let restart = |r: &X86Regs| restart_block_in_place(r).map(|x| resume_regs(&x));
        // poll without a timeout: as it was.
        let r = restart(&rb(7, |r| r.rdx = u64::MAX)).expect("poll");
        assert_eq!((r.rax, r.rip), (7, 0x5000));
        // poll with a timeout, FUTEX_WAIT (relative): the restart block stays.
        assert_eq!(restart_block_in_place(&rb(7, |r| r.rdx = 100)), None);
        assert_eq!(restart_block_in_place(&rb(202, |r| r.rsi = 128)), None);
        // FUTEX_WAIT_BITSET|FUTEX_PRIVATE_FLAG|FUTEX_CLOCK_REALTIME
        assert!(restart_block_in_place(&rb(202, |r| r.rsi = 9 | 128 | 256)).is_some());
        // nanosleep(req, rem) goes on with rem; without rem it keeps its block.
        let r = restart(&rb(nr::NANOSLEEP, |r| (r.rdi, r.rsi) = (0x10, 0x20))).expect("ns");
        assert_eq!((r.rax, r.rdi, r.rsi), (nr::NANOSLEEP, 0x20, 0x20));
        assert_eq!(
            restart_block_in_place(&rb(nr::NANOSLEEP, |r| r.rdi = 0x10)),
            None
        );
        // clock_nanosleep: absolute as it was; relative with rem.
        let r = restart(&rb(nr::CLOCK_NANOSLEEP, |r| (r.rsi, r.rdx) = (1, 0x30))).expect("abs");
        assert_eq!(r.rdx, 0x30);
        let r = restart(&rb(nr::CLOCK_NANOSLEEP, |r| (r.rdx, r.r10) = (0x30, 0x40))).expect("rel");
        assert_eq!(r.rdx, 0x40);
        // restart_syscall itself: nothing to re-issue.
        let rs = rb(nr::RESTART_SYSCALL, |_| {});
        assert_eq!(restart_block_in_place(&rs), None);
        assert!(in_restart_syscall(&rs));
    }
}
