//! Running system calls inside a stopped, traced task.
//!
//! The task is pointed at a `syscall` instruction (a "gadget": in its vDSO, or in a page
//! ckpt mapped for the purpose) with the syscall number and arguments in its registers,
//! and resumed until the syscall-exit stop (PTRACE_SYSCALL twice). The instruction after
//! the gadget is never executed. The caller restores the task's own registers afterwards.
//!
//! When the gadgets are known to be followed by an `int3` (the helper area restore
//! maps), [`Injector::trap_after`] switches to one stop per call instead of two: the task
//! is continued and stops on the breakpoint's SIGTRAP right after the system call.

use super::mem::RemoteMem;
use super::ptrace::{self, Stop};
use super::{Result, SysError};
use crate::arch::{self, Regs};

/// A raw syscall result: a negative errno becomes an error naming `what`.
fn checked(what: &str, r: i64) -> Result<i64> {
    if (-4095..0).contains(&r) {
        return Err(SysError::Remote {
            what: what.to_string(),
            errno: (-r) as i32,
        });
    }
    Ok(r)
}

/// One system call of a batch ([`Injector::batch`]).
#[derive(Debug, Clone)]
pub struct Call {
    /// What the call does, for errors ("rt_sigaction(10)").
    pub what: String,
    pub nr: u64,
    pub args: [u64; 6],
    /// A failure is a result like any other (it does not end the batch).
    pub may_fail: bool,
}

impl Call {
    pub fn new(what: impl Into<String>, nr: u64, args: [u64; 6]) -> Self {
        Self {
            what: what.into(),
            nr,
            args,
            may_fail: false,
        }
    }

    /// A call whose failure the caller handles from its result.
    pub fn may_fail(mut self) -> Self {
        self.may_fail = true;
        self
    }
}

/// Where the batch executor ([`arch::native::BATCH_CODE`]) and its table live in the task.
#[derive(Debug, Clone, Copy)]
struct Executor {
    code: u64,
    table: u64,
    /// Entries the table has room for.
    cap: usize,
}

pub struct Injector {
    pid: i32,
    gadget: u64,
    /// Address of an `int $0x80` below 4 GiB for ia32 system calls (0: none).
    gadget32: u64,
    /// Template registers (the task's own, or anything sane); rip/rax/args are replaced.
    base: Regs,
    /// How many syscalls were injected (for diagnostics and fault injection).
    pub count: u64,
    /// Both gadgets are followed by `int3` (see [`Injector::trap_after`]).
    trap: bool,
    /// The batch executor, when the task has one ([`Injector::set_executor`]).
    executor: Option<Executor>,
    /// Native queries run as their ia32 twins ([`Injector::ia32_queries`]).
    ia32: bool,
}

impl Injector {
    pub fn new(pid: i32, gadget: u64, base: Regs) -> Self {
        Self {
            pid,
            gadget,
            gadget32: 0,
            base,
            count: 0,
            trap: false,
            executor: None,
            ia32: false,
        }
    }

    /// From now on [`Injector::batch`] and [`Injector::raw`] run each (read-only) native
    /// query as its ia32 twin at the ia32 gadget (`arch::native::compat::ia32_query`:
    /// ia32 numbers, results in memory turned into the native layout in place), so the
    /// thread stays in 32-bit mode; a call without a twin is an error.
    pub fn ia32_queries(&mut self) {
        self.ia32 = true;
    }

    /// One native query as its ia32 twin; the memory result is converted when `mem` is
    /// given (else the query must have none that differs).
    fn raw_as_ia32(&mut self, mem: Option<&RemoteMem>, nr: u64, args: [u64; 6]) -> Result<i64> {
        use arch::native::compat;
        let pid = self.pid;
        let q = compat::ia32_query(nr, args)
            .filter(|q| mem.is_some() || q.out == compat::Ia32Out::Same)
            .ok_or_else(|| {
                SysError::Other(format!(
                    "system call {nr} has no ia32 form to run in thread {pid}"
                ))
            })?;
        if self.gadget32 == 0 {
            return Err(SysError::Other(format!(
                "no ia32 system call instruction available in process {pid}"
            )));
        }
        let mut regs = self.base;
        arch::native::set_syscall_ia32(&mut regs, self.gadget32, q.nr, &q.args);
        let r = self.run(regs, q.nr)?;
        let r = compat::ia32_result(r as u64);
        if let (Some(mem), Some((at, len)), true) = (mem, q.out.compat_at(), r >= 0) {
            let mut b = vec![0u8; len];
            mem.read(at, &mut b)?;
            mem.write(at, &q.out.to_native(&b))?;
        }
        Ok(r)
    }

    /// Declare that [`arch::native::BATCH_CODE`] is at `code` in the task, executable, with
    /// room for `cap` entries at `table` (writable by the task): from now on
    /// [`Injector::batch`] runs up to `cap` calls per stop.
    ///
    /// The code ends on an `int3`, so the same conditions as for
    /// [`Injector::trap_after`] hold: the task must neither ignore nor block SIGTRAP.
    pub fn set_executor(&mut self, code: u64, table: u64, cap: usize) {
        self.executor = (cap > 0).then_some(Executor { code, table, cap });
    }

    /// Forget the executor (before its memory is unmapped): batches become single calls.
    pub fn clear_executor(&mut self) {
        self.executor = None;
    }

    /// Run `calls` in order and return their raw results (negative errno on error). The
    /// first failing call that is not [`Call::may_fail`] ends the batch with an error
    /// naming it; the calls after it do not run. With an executor
    /// ([`Injector::set_executor`]) this takes one stop per `cap` calls, else one
    /// ordinary injected call each.
    pub fn batch(&mut self, mem: &RemoteMem, calls: &[Call]) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(calls.len());
        if self.ia32 {
            for c in calls {
                let r = self.raw_as_ia32(Some(mem), c.nr, c.args)?;
                out.push(if c.may_fail { r } else { checked(&c.what, r)? });
            }
            return Ok(out);
        }
        let Some(ex) = self.executor else {
            for c in calls {
                let r = self.raw(c.nr, c.args)?;
                out.push(if c.may_fail { r } else { checked(&c.what, r)? });
            }
            return Ok(out);
        };
        use arch::native::{BATCH_ENTRY_LEN, BATCH_MAY_FAIL};
        for chunk in calls.chunks(ex.cap) {
            let mut table = Vec::with_capacity(chunk.len() * BATCH_ENTRY_LEN as usize);
            for c in chunk {
                let nr = c.nr | if c.may_fail { BATCH_MAY_FAIL } else { 0 };
                for w in std::iter::once(nr).chain(c.args).chain([0]) {
                    table.extend_from_slice(&w.to_le_bytes());
                }
            }
            mem.write(ex.table, &table)?;
            let mut regs = self.base;
            arch::native::set_batch(&mut regs, ex.code, ex.table, chunk.len() as u64);
            let pid = self.pid;
            let (stop, regs) = self.run_until_stop(&regs)?;
            let ran = match (stop, arch::native::batch_ran(&regs, ex.code, ex.table)) {
                (Stop::Signal(libc::SIGTRAP), Some(n)) if n as usize <= chunk.len() => n as usize,
                (other, _) => {
                    return Err(SysError::Other(format!(
                        "process {pid} did not stop after a batch of {} injected system \
                         calls (got {other:?} at {:#x})",
                        chunk.len(),
                        regs.rip
                    )));
                }
            };
            self.count += ran as u64;
            mem.read(ex.table, &mut table[..ran * BATCH_ENTRY_LEN as usize])?;
            for (i, c) in chunk.iter().enumerate().take(ran) {
                let at = i * BATCH_ENTRY_LEN as usize + 56;
                let r = table
                    .get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_le_bytes)
                    .unwrap_or(-(libc::EIO as i64));
                out.push(if c.may_fail { r } else { checked(&c.what, r)? });
            }
            if ran < chunk.len() {
                return Err(SysError::Other(format!(
                    "process {pid} ran {ran} of a batch of {} injected system calls",
                    chunk.len()
                )));
            }
        }
        Ok(out)
    }

    /// Declare that the `syscall` gadget and the `int $0x80` gadget are each followed by
    /// an `int3`: from now on a call resumes the task once and waits for the
    /// breakpoint's SIGTRAP (one stop instead of a syscall-enter and a syscall-exit
    /// stop).
    ///
    /// The kernel delivers the breakpoint's SIGTRAP by force: were SIGTRAP blocked or
    /// ignored in the task, it would reset its disposition to SIG_DFL (and unblock it).
    /// So the task must not ignore SIGTRAP nor block it once a handler is installed, and
    /// should block every other signal it could receive meanwhile. A call that unmaps the breakpoint needs
    /// [`Injector::stop_trapping`] first.
    pub fn trap_after(&mut self) {
        self.trap = true;
    }

    /// Whether calls stop on the breakpoint after the gadget.
    pub fn trapping(&self) -> bool {
        self.trap
    }

    /// Back to two stops per call (syscall-enter and syscall-exit).
    pub fn stop_trapping(&mut self) {
        self.trap = false;
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn set_gadget32(&mut self, gadget: u64) {
        self.gadget32 = gadget;
    }

    /// Run syscall `nr` in the task; returns the raw result (negative errno on error).
    pub fn raw(&mut self, nr: u64, args: [u64; 6]) -> Result<i64> {
        if self.ia32 {
            return self.raw_as_ia32(None, nr, args);
        }
        let mut regs = self.base;
        arch::native::set_syscall(&mut regs, self.gadget, nr, &args);
        self.run(regs, nr)
    }

    /// Run ia32 syscall `nr` (32-bit numbering and calling convention) in the task.
    pub fn raw32(&mut self, nr: u64, args: [u64; 6]) -> Result<i64> {
        if self.gadget32 == 0 {
            return Err(SysError::Other(format!(
                "no ia32 system call instruction available in process {}",
                self.pid
            )));
        }
        let mut regs = self.base;
        arch::native::set_syscall_ia32(&mut regs, self.gadget32, nr, &args);
        let r = self.run(regs, nr)?;
        Ok(i64::from(r as u32 as i32))
    }

    /// Run ia32 syscall `nr`; a negative result becomes an error naming `what`.
    pub fn call32(&mut self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        Ok(checked(what, self.raw32(nr, args)?)? as u64)
    }

    fn run(&mut self, regs: Regs, nr: u64) -> Result<i64> {
        if self.trap {
            return self.run_to_trap(regs, nr);
        }
        let pid = self.pid;
        ptrace::set_regs(pid, &regs)?;
        super::deferred::die_point("injected call set");
        for phase in ["enter", "exit"] {
            ptrace::syscall(pid, 0)?;
            let mut stop = ptrace::wait(pid)?;
            super::deferred::die_point(phase);
            // Event stops inside the syscall (PTRACE_EVENT_CLONE of an injected clone3)
            // are passed over.
            while let Stop::OtherEvent(_) = stop {
                ptrace::syscall(pid, 0)?;
                stop = ptrace::wait(pid)?;
            }
            match stop {
                Stop::Syscall => {}
                other => {
                    return Err(SysError::Other(format!(
                        "process {pid} did not reach the syscall-{phase} stop of injected \
                         syscall {nr} (got {other:?})"
                    )));
                }
            }
        }
        self.count += 1;
        let out = ptrace::get_regs(pid)?;
        Ok(arch::native::syscall_result(&out))
    }

    /// Set `regs` and continue the task to its next stop, passing over event stops
    /// inside a call (PTRACE_EVENT_CLONE of an injected clone3); returns that stop and
    /// the registers there.
    fn run_until_stop(&self, regs: &Regs) -> Result<(Stop, Regs)> {
        let pid = self.pid;
        ptrace::set_regs(pid, regs)?;
        super::deferred::die_point("batch set");
        ptrace::cont(pid, 0)?;
        let mut stop = ptrace::wait(pid)?;
        super::deferred::die_point("batch stop");
        while let Stop::OtherEvent(_) = stop {
            ptrace::cont(pid, 0)?;
            stop = ptrace::wait(pid)?;
        }
        Ok((stop, ptrace::get_regs(pid)?))
    }

    /// One call in `trap` mode: continue to the `int3` after the gadget.
    fn run_to_trap(&mut self, regs: Regs, nr: u64) -> Result<i64> {
        let pid = self.pid;
        // The instruction after the gadget (both gadgets are two bytes long).
        let after = regs.rip + 2;
        let (stop, out) = self.run_until_stop(&regs)?;
        match stop {
            // The breakpoint ran (rip is past it).
            Stop::Signal(libc::SIGTRAP) if out.rip == after + 1 => {}
            other => {
                return Err(SysError::Other(format!(
                    "process {pid} did not stop after injected syscall {nr} (got {other:?} \
                     at {:#x})",
                    out.rip
                )));
            }
        }
        self.count += 1;
        Ok(arch::native::syscall_result(&out))
    }

    /// Run a syscall that does not return (exit_group, a fatal kill): returns the stop
    /// that ends the task.
    pub fn final_call(&mut self, nr: u64, args: [u64; 6]) -> Result<Stop> {
        let pid = self.pid;
        let mut regs = self.base;
        arch::native::set_syscall(&mut regs, self.gadget, nr, &args);
        ptrace::set_regs(pid, &regs)?;
        loop {
            ptrace::syscall(pid, 0)?;
            match ptrace::wait(pid)? {
                Stop::Syscall | Stop::OtherEvent(_) => continue,
                // The fatal signal shows as a signal-delivery-stop: let it act.
                Stop::Signal(sig) => {
                    ptrace::cont(pid, sig)?;
                    return ptrace::wait(pid);
                }
                other => return Ok(other),
            }
        }
    }

    /// Let the task go into syscall `nr` (one that replaces its program, `execveat`):
    /// its registers are set for the call at the gadget and it is detached, so it runs
    /// the call on its own. Should the call fail, it returns to the breakpoint after the
    /// gadget, untraced, and dies of the SIGTRAP.
    pub fn release_into(&mut self, nr: u64, args: [u64; 6]) -> Result<()> {
        let mut regs = self.base;
        arch::native::set_syscall(&mut regs, self.gadget, nr, &args);
        ptrace::set_regs(self.pid, &regs)?;
        ptrace::detach(self.pid, 0)
    }

    /// Run syscall `nr`; a negative result becomes an error naming `what`.
    pub fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        Ok(checked(what, self.raw(nr, args)?)? as u64)
    }
}

/// Find a `syscall` instruction in `code` (bytes of executable memory at `base`).
pub fn find_gadget(code: &[u8], base: u64) -> Option<u64> {
    find_bytes(code, base, &arch::native::SYSCALL_INSN)
}

/// Find an `int $0x80` instruction in `code`.
pub fn find_gadget32(code: &[u8], base: u64) -> Option<u64> {
    find_bytes(code, base, &arch::native::INT80_INSN)
}

fn find_bytes(code: &[u8], base: u64, insn: &[u8]) -> Option<u64> {
    code.windows(insn.len())
        .position(|w| w == insn)
        .map(|i| base + i as u64)
}
