//! System calls made inside a stopped task during restore: the helper area (code and
//! scratch memory ckpt maps at an address the image does not use), single injected calls,
//! batches, and the calls every kind shares (moving a descriptor into place, taking one
//! from another process, setting status flags and socket options).
//!
//! Every call is a fault point ([`fault_point`]) for the failure-path tests.

mod calls;
mod task;

pub(crate) use calls::{Prctl, SockAddr, SockOpt, TcpQueue, TcpRepairOpt};
pub(crate) use task::{Dry, DryCall, Live, Remote, not_live};
#[cfg(test)]
pub(crate) use task::{Recorded, Recorder};

use crate::arch::native::{self as ax, nr};
use crate::error::{RestoreError, RestoreResult as Result, fault_point};
use crate::model::{Process, Vma};
use crate::sys::inject::{Call, Injector};
use crate::sys::mem::RemoteMem;

pub(crate) const STUB_CODE: u64 = 4096;
pub(crate) const STUB_SIZE: u64 = STUB_CODE + (1 << 20);
/// Offset of the `int $0x80` in the helper area's code page.
pub(crate) const GADGET32_OFFSET: u64 = 4;
/// Offset of the batch executor (`arch::native::BATCH_CODE`) in the helper area's code page.
pub(crate) const BATCH_CODE_OFFSET: u64 = 64;
/// The batch executor's table, in the scratch area: 64 KiB at its end.
pub(crate) const BATCH_TABLE_OFFSET: u64 = (1 << 20) - (64 << 10);
pub(crate) const BATCH_TABLE_CAP: usize = (64 << 10) / ax::BATCH_ENTRY_LEN as usize;
/// Arguments of batched calls, in the scratch area (below the table; single calls put
/// theirs at the start of the scratch area).
pub(crate) const BATCH_ARGS_OFFSET: u64 = 512 << 10;
pub(crate) const BATCH_ARGS_LEN: u64 = BATCH_TABLE_OFFSET - BATCH_ARGS_OFFSET;

/// An injector for a task that has the helper area at `stub`: its gadgets, and, when
/// calls may stop on the area's breakpoints (`trap`), one stop per call and batches.
pub(crate) fn helper_injector(
    pid: i32,
    stub: u64,
    base: crate::arch::Regs,
    trap: bool,
) -> Injector {
    let mut inj = Injector::new(pid, stub, base);
    inj.set_gadget32(stub + GADGET32_OFFSET);
    if trap {
        inj.trap_after();
        inj.set_executor(
            stub + BATCH_CODE_OFFSET,
            stub + STUB_CODE + BATCH_TABLE_OFFSET,
            BATCH_TABLE_CAP,
        );
    }
    inj
}

/// Arguments of batched calls laid out one after the other in the scratch area.
pub(crate) struct BatchArgs {
    bytes: Vec<u8>,
}

impl BatchArgs {
    pub(crate) fn new() -> Self {
        Self { bytes: Vec::new() }
    }

    /// Add `data` (8-byte aligned); returns its address in the stub of `cx`.
    pub(crate) fn add(&mut self, cx: &Ctx<'_>, data: &[u8]) -> Result<u64> {
        let off = self.bytes.len() as u64;
        if off + data.len() as u64 > BATCH_ARGS_LEN {
            return Err(RestoreError::Malformed(
                "too much argument data for one batch".into(),
            ));
        }
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len().next_multiple_of(8), 0);
        Ok(cx.scratch() + BATCH_ARGS_OFFSET + off)
    }

    pub(crate) fn add_cstr(&mut self, cx: &Ctx<'_>, s: &[u8]) -> Result<u64> {
        if s.contains(&0) {
            return Err(RestoreError::Malformed("path with a NUL byte".into()));
        }
        let mut v = s.to_vec();
        v.push(0);
        self.add(cx, &v)
    }

    /// Write the arguments into the stub of `cx`.
    pub(crate) fn write(&self, cx: &Ctx<'_>) -> Result<()> {
        if !self.bytes.is_empty() {
            cx.write(cx.scratch() + BATCH_ARGS_OFFSET, &self.bytes)?;
        }
        Ok(())
    }
}

/// A process being built: the task its calls run in (live, or a test double), where
/// its helper area is, and what the image says it must become.
pub(crate) struct Ctx<'a> {
    pub(crate) task: Box<dyn Remote>,
    pub(crate) stub: u64,
    pub(crate) proc_: &'a Process,
    /// The end of the task's address space: `kinds::mem::TASK_SIZE`, or the ia32 limit
    /// in a tree started from an ia32 executable (`restore::stage`: the kernel then
    /// refuses ranges beyond it).
    pub(crate) space_end: u64,
    /// A descriptor of the task that is a pidfd of ckpt, inherited from its parent's
    /// stub: a process in a PID namespace nested inside the tree's cannot name ckpt
    /// (which its namespace does not show) to `pidfd_open` (see [`Ctx::pidfd_of`]).
    pub(crate) ckpt_pidfd: Option<u64>,
}

impl<'a> Ctx<'a> {
    /// A live stub: `inj` drives its thread, `mem` reaches its memory.
    pub(crate) fn live(inj: Injector, mem: RemoteMem, stub: u64, proc_: &'a Process) -> Self {
        Self {
            task: Box::new(Live { inj, mem }),
            stub,
            proc_,
            space_end: crate::kinds::mem::TASK_SIZE,
            ckpt_pidfd: None,
        }
    }

    /// A process whose calls are only noted ([`Dry`]), its helper area at `stub`.
    pub(crate) fn dry(dry: Dry, stub: u64, proc_: &'a Process) -> Self {
        Self {
            task: Box::new(dry),
            stub,
            proc_,
            space_end: crate::kinds::mem::TASK_SIZE,
            ckpt_pidfd: None,
        }
    }

    /// A process built in a test double (see [`Recorder`]), its helper area at `stub`.
    #[cfg(test)]
    pub(crate) fn double(rec: &Recorder, stub: u64, proc_: &'a Process) -> Self {
        Self {
            task: Box::new(rec.clone()),
            stub,
            proc_,
            space_end: crate::kinds::mem::TASK_SIZE,
            ckpt_pidfd: None,
        }
    }

    /// The live task, for the steps only a traced process can take (`what` names the
    /// step for the error a test double gives).
    pub(crate) fn live_task(&mut self, what: &str) -> Result<&mut Live> {
        Ok(self.task.live().ok_or_else(|| not_live(what))?)
    }
}

impl Ctx<'_> {
    /// The thread calls are made in.
    pub(crate) fn pid(&self) -> i32 {
        self.task.pid()
    }

    /// The process being built, when it is a real one (not a test double): ckpt may
    /// reach its descriptors.
    pub(crate) fn live_pid(&self) -> Option<i32> {
        self.task.is_live().then_some(self.proc_.pid)
    }

    /// Read the task's memory at `addr` into `buf`.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        Ok(self.task.read(addr, buf)?)
    }

    /// Write `data` into the task's memory at `addr`.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        Ok(self.task.write(addr, data)?)
    }

    pub(crate) fn scratch(&self) -> u64 {
        self.stub + STUB_CODE
    }

    /// Put `data` in the scratch area (at `off`) and return its address in the stub.
    pub(crate) fn put(&self, off: u64, data: &[u8]) -> Result<u64> {
        if off + data.len() as u64 > STUB_SIZE - STUB_CODE {
            return Err(RestoreError::Malformed("scratch data too large".into()));
        }
        let a = self.scratch() + off;
        self.write(a, data)?;
        Ok(a)
    }

    pub(crate) fn put_cstr(&self, off: u64, s: &[u8]) -> Result<u64> {
        if s.contains(&0) {
            return Err(RestoreError::Malformed("path with a NUL byte".into()));
        }
        let mut v = s.to_vec();
        v.push(0);
        self.put(off, &v)
    }

    pub(crate) fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        if !self.task.is_dry() {
            fault_point(what)?;
        }
        Ok(self.task.call(what, nr, args)?)
    }

    /// Run independent calls in order, in as few stops as the injector can
    /// ([`Injector::batch`]), after writing their arguments; each is a fault point.
    pub(crate) fn batch(&mut self, args: &BatchArgs, calls: &[Call]) -> Result<Vec<u64>> {
        for c in calls.iter().filter(|_| !self.task.is_dry()) {
            fault_point(&c.what)?;
        }
        args.write(self)?;
        let r = self.task.batch(calls)?;
        Ok(r.into_iter().map(|x| x as u64).collect())
    }

    /// An ia32 system call (through the helper area's `int $0x80`).
    pub(crate) fn call32(&mut self, what: &str, nr: u64, args: [u64; 6]) -> Result<u64> {
        fault_point(what)?;
        Ok(self.task.call32(what, nr, args)?)
    }

    /// mmap `v`'s range with `prot` and `flags` (from `fd` at `v.offset`, or anonymous
    /// with fd u64::MAX); the kernel must place it exactly there.
    pub(crate) fn map_at(
        &mut self,
        what: &str,
        v: &Vma,
        prot: u64,
        flags: u64,
        fd: u64,
    ) -> Result<()> {
        let off = if fd == u64::MAX { 0 } else { v.offset };
        let r = self.call(what, nr::MMAP, [v.start, v.len(), prot, flags, fd, off])?;
        if r != v.start {
            return Err(RestoreError::Stage(format!(
                "{what}: the kernel placed it at {r:#x}"
            )));
        }
        Ok(())
    }

    pub(crate) fn open(&mut self, path: &[u8], flags: i32) -> Result<u64> {
        let a = self.put_cstr(0, path)?;
        let what = format!("open {}", String::from_utf8_lossy(path));
        self.call(
            &what,
            nr::OPENAT,
            [libc::AT_FDCWD as u64, a, flags as u64, 0, 0, 0],
        )
    }
}

/// A copy, in this process, of descriptor `fd` of process `pid` (pidfd_getfd): the same
/// open file description.
pub(crate) fn take_remote_fd(cx: &mut Ctx<'_>, pid: i32, fd: u64, what: &str) -> Result<u64> {
    let me = std::process::id() as i32;
    if cx.proc_.pid_ns != 0 && pid != me {
        // A task of a nested PID namespace cannot name `pid` (outside its namespace,
        // or under another ID there): ckpt takes the descriptor first, the task takes
        // it from ckpt.
        let fd =
            i32::try_from(fd).map_err(|_| RestoreError::Malformed(format!("descriptor {fd}")))?;
        let ours = crate::sys::process::steal_fd(pid, fd)?;
        use std::os::fd::AsRawFd;
        return take_remote_fd(cx, me, ours.as_raw_fd() as u64, what);
    }
    let (pidfd, close) = cx.pidfd_of(pid)?;
    let n = cx.call(what, nr::PIDFD_GETFD, [pidfd, fd, 0, 0, 0, 0]);
    if close {
        cx.call("close", nr::CLOSE, [pidfd, 0, 0, 0, 0, 0])?;
    }
    n
}

impl Ctx<'_> {
    /// A pidfd of process `pid` (as the task's PID namespace names it) in the task, and
    /// whether it is to be closed after use: for ckpt itself in a task of a nested PID
    /// namespace, the one it inherited ([`Ctx::ckpt_pidfd`]), kept.
    pub(crate) fn pidfd_of(&mut self, pid: i32) -> Result<(u64, bool)> {
        if let Some(fd) = self.ckpt_pidfd {
            if pid == std::process::id() as i32 {
                return Ok((fd, false));
            }
        }
        let pidfd = self.call("pidfd_open", nr::PIDFD_OPEN, [pid as u64, 0, 0, 0, 0, 0])?;
        Ok((pidfd, true))
    }
}

/// Move a freshly made descriptor `n` to number `fd` with the right close-on-exec flag
/// (`n` may already be `fd`: dup3 refuses to copy a descriptor onto itself).
pub(crate) fn move_fd(cx: &mut Ctx<'_>, n: u64, fd: i32, cloexec: bool) -> Result<()> {
    let calls = move_fd_calls(n, fd, cloexec);
    cx.batch(&BatchArgs::new(), &calls)?;
    Ok(())
}

/// The calls that move descriptor `n` to `fd` (one batch: they do not depend on each
/// other's results).
pub(crate) fn move_fd_calls(n: u64, fd: i32, cloexec: bool) -> Vec<Call> {
    if n == fd as u64 {
        vec![Call::new(
            "fcntl(F_SETFD)",
            nr::FCNTL,
            [n, libc::F_SETFD as u64, u64::from(cloexec), 0, 0, 0],
        )]
    } else {
        let cl = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        vec![
            Call::new("dup3", nr::DUP3, [n, fd as u64, cl, 0, 0, 0]),
            Call::new("close", nr::CLOSE, [n, 0, 0, 0, 0, 0]),
        ]
    }
}

/// The status flags F_SETFL sets (and restore gives back).
pub(crate) const SETTABLE_STATUS_FLAGS: u32 =
    (libc::O_NONBLOCK | libc::O_APPEND | libc::O_ASYNC) as u32;

/// Status flags (O_NONBLOCK...) belong to the open file description.
pub(crate) fn set_status_flags(cx: &mut Ctx<'_>, fd: i32, flags: u32) -> Result<()> {
    let settable = SETTABLE_STATUS_FLAGS;
    cx.call(
        "fcntl(F_SETFL)",
        nr::FCNTL,
        [
            fd as u64,
            libc::F_SETFL as u64,
            u64::from(flags & settable),
            0,
            0,
            0,
        ],
    )?;
    Ok(())
}
