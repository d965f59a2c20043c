//! The release gate: the tree must never see the builder, so at commit each thread is
//! left in a `read` of a pipe whose write end ckpt outside the tree's PID namespace holds
//! (see docs/ARCHITECTURE.md, "The release gate"). [`gate_threads`] gives the threads
//! their descriptors during stage; [`park_at_gate`] leaves each one waiting at commit.

use super::plan::Plan;
use super::{RestoreError, Result};
use crate::arch::native::{self as ax, nr};
use crate::arch::sigframe;
use crate::kinds::task::seccomp;
use crate::remote::{Ctx, STUB_SIZE};
use crate::sys::mem::RemoteMem;
use crate::sys::proc as procfs;
use crate::sys::ptrace;

/// What a process needs to wait behind the release gate (see [`gate_threads`]): the
/// `syscall; ret` and `rt_sigreturn` instructions of its own code, and each thread's
/// descriptor of the gate (in the order of `Process::threads`).
pub(super) struct Gate {
    syscall_ret: u64,
    sigreturn: u64,
    /// The length of the instructions at `sigreturn` (they end with `syscall`).
    sigreturn_len: u64,
    pub(super) fds: Vec<u64>,
}

/// The bytes a thread reads from the release gate: as many as the number of `close`,
/// the call its `syscall; ret` makes next with the read's result (see [`park_at_gate`]).
pub(super) const GATE_BYTES: u64 = nr::CLOSE;

/// Give every thread of the tree a descriptor of the release gate (ckpt's `gate`): the
/// read end of a pipe whose write end ckpt outside the tree's PID namespace holds. At
/// commit each thread is left in a `read` of it (see [`park_at_gate`]), and runs its own
/// code only once ckpt wrote to it, after the builder (us) is gone. None (the threads go
/// straight to their code, as without a gate) unless every thread can: x86-64, not in
/// seccomp strict mode, seccomp filters (if any) that let the gate's calls through
/// ([`gate_calls`], run through the filters as the kernel would), code with the
/// instructions the frame needs, and room for the frame on its own stack.
pub(super) fn gate_threads(
    ctxs: &mut [Ctx<'_>],
    plan: &Plan,
    stub_addr: u64,
    gate: i32,
) -> Result<Option<Vec<Option<Gate>>>> {
    let mut gates = Vec::new();
    for p in &plan.ckpt.processes {
        if p.is_zombie() {
            gates.push(None);
            continue;
        }
        let plain = p.threads.iter().all(|t| {
            t.arch.regs.abi() == crate::arch::Abi::X86_64
                && t.creds.as_ref().unwrap_or(&p.creds).seccomp != libc::SECCOMP_MODE_STRICT
        });
        if !plain {
            return Ok(None);
        }
        // The helper area goes at commit: nothing of it may be used.
        let maps: Vec<_> = procfs::maps(p.pid)?
            .into_iter()
            .filter(|m| m.end <= stub_addr || m.start >= stub_addr + STUB_SIZE)
            .collect();
        let mem = RemoteMem::open(p.pid)?;
        let Some((syscall_ret, sigreturn)) = crate::kinds::task::query::native_returns(&maps, &mem)
        else {
            return Ok(None);
        };
        for t in &p.threads {
            let sp = ax::resume_regs(&t.arch.regs).rsp;
            let xsave = plan.xsave.get(&t.tid).unwrap_or(&t.arch.xsave);
            let lo = sp.checked_sub(GATE_FRAME_ROOM + xsave.len() as u64);
            if !lo.is_some_and(|lo| crate::kinds::task::query::frame_fits(&maps, lo, sp)) {
                return Ok(None);
            }
        }
        let mut insns = [0u8; 9];
        mem.read(sigreturn, &mut insns)?;
        let Some(sigreturn_len) = sigframe::SIGRETURN_INSNS
            .iter()
            .find(|i| insns.starts_with(i))
            .map(|i| i.len() as u64)
        else {
            return Ok(None);
        };
        gates.push(Some(Gate {
            syscall_ret,
            sigreturn,
            sigreturn_len,
            fds: Vec::new(),
        }));
    }
    let me = std::process::id() as i32;
    let mut taken = Ok(());
    for (cx, g) in ctxs.iter_mut().zip(gates.iter_mut()) {
        let Some(g) = g else { continue };
        for _ in 0..cx.proc_.threads.len() {
            match crate::remote::take_remote_fd(cx, me, gate as u64, "take the release gate") {
                Ok(fd) => g.fds.push(fd),
                // An injected fault or a deferred signal ends the restore as at any step.
                Err(e @ (RestoreError::Fault(_) | RestoreError::Interrupted(_))) => return Err(e),
                Err(e) => taken = Err(e),
            }
            if taken.is_err() {
                break;
            }
        }
    }
    // Threads under seccomp filters: the gate's calls as they will make them (the
    // frame's place from the registers and xsave area commit gives them; checked again
    // with the very registers at commit, `park_at_gate`).
    let filtered_ok = taken.is_ok()
        && plan.ckpt.processes.iter().zip(&gates).all(|(p, g)| {
            let Some(g) = g else { return true };
            p.threads.iter().zip(&g.fds).all(|(t, &fd)| {
                if t.seccomp_filters.is_empty() {
                    return true;
                }
                let ctx = ax::resume_regs(&t.arch.regs);
                let xlen = plan.xsave.get(&t.tid).unwrap_or(&t.arch.xsave).len();
                sigframe::frame_at(ctx.rsp, xlen).is_some_and(|at| {
                    let parked = gate_regs(&ctx, at, fd, g);
                    seccomp::allows_all(&t.seccomp_filters, &gate_calls(&parked, g))
                })
            })
        });
    if taken.is_err() || !filtered_ok {
        // (A process at its descriptor limit, or a filter that forbids a call of the
        // gate, say): no gate, nothing of it left.
        for (cx, g) in ctxs.iter_mut().zip(&gates) {
            for fd in g.iter().flat_map(|g| &g.fds) {
                cx.close(*fd)?;
            }
        }
        return Ok(None);
    }
    Ok(Some(gates))
}

/// The room below a thread's stack pointer that [`park_at_gate`] uses at most, but for
/// the xsave area: the red zone, the area's alignment and magic, the frame, the return
/// address and buffer of the read.
const GATE_FRAME_ROOM: u64 = sigframe::RED_ZONE + 64 + 4 + sigframe::FRAME_LEN + 16 + 16;

/// Leave thread `tid` (its final registers and xsave state already set) waiting behind
/// the release gate `fd`: a signal frame holding its final context and signal mask
/// `mask` goes below its stack (as the kernel would write one), and it starts at the
/// `syscall; ret` of its code with `read(fd, buf, GATE_BYTES)`, every signal blocked.
/// Once ckpt wrote to the gate, the read returns GATE_BYTES (`close`'s number): the
/// `ret` goes to the `syscall; ret` again, which closes `fd`, and its `ret` to the
/// frame's `rt_sigreturn`, which puts the thread's context back exactly (registers, the
/// xsave area, signal mask; the restart of an interrupted call is already in the
/// registers, `resume_regs`). Should ckpt die first, the read returns 0 (end of file):
/// the thread reads again (0 is `read`), gets 0 and returns through the frame the same
/// way, leaving `fd` open.
pub(super) fn park_at_gate(
    mem: &RemoteMem,
    t: &crate::model::Thread,
    fd: u64,
    g: &Gate,
) -> Result<()> {
    let (tid, mask) = (t.tid, t.sigmask);
    let ctx = ptrace::get_regs(tid)?;
    let xstate = ptrace::get_xstate(tid, 1 << 16)?;
    let frame = sigframe::sized_xstate(&xstate, || {
        crate::arch::XsaveLayout::of_host(&crate::arch::HostCaps::detect())
    })
    .and_then(|x| sigframe::build(&ctx, mask, &x, g.sigreturn))
    .ok_or_else(|| {
        RestoreError::Stage(format!(
            "thread {tid}: its xsave area does not fit in a signal frame"
        ))
    })?;
    let parked = gate_regs(&ctx, frame.at, fd, g);
    // gate_threads ran the filters on the calls as predicted; these are the very ones.
    if !t.seccomp_filters.is_empty()
        && !seccomp::allows_all(&t.seccomp_filters, &gate_calls(&parked, g))
    {
        return Err(RestoreError::Stage(format!(
            "thread {tid}: its seccomp filters would stop a call of the release gate"
        )));
    }
    mem.write(frame.at, &frame.bytes)?;
    // The read's return address: the `syscall; ret` again (see `gate_regs`).
    mem.write(frame.at - 8, &g.syscall_ret.to_le_bytes())?;
    ptrace::set_regs(tid, &parked)?;
    ptrace::set_sigmask(tid, !0)?;
    Ok(())
}

/// The registers of a thread with final registers `ctx` waiting behind the gate `fd`,
/// its frame at `at` (see [`park_at_gate`]).
fn gate_regs(ctx: &ax::X86Regs, at: u64, fd: u64, g: &Gate) -> ax::X86Regs {
    let mut r = sigframe::parked(ctx, at, g.sigreturn);
    r.rip = g.syscall_ret;
    r.rsp = at - 8;
    r.rax = nr::READ;
    r.rdi = fd;
    r.rsi = at - 16;
    r.rdx = GATE_BYTES;
    r
}

/// The system calls a thread parked at the gate with registers `parked` makes (see
/// [`park_at_gate`]), as its seccomp filters see them: `read` of the gate (made again at
/// end of file) and `close` of it at the `syscall; ret`, then `rt_sigreturn` at the end
/// of the frame's return instructions; the argument registers stay the parked ones
/// throughout (a system call changes only rax, rcx and r11).
fn gate_calls(parked: &ax::X86Regs, g: &Gate) -> [seccomp::SeccompData; 3] {
    let args = [
        parked.rdi, parked.rsi, parked.rdx, parked.r10, parked.r8, parked.r9,
    ];
    // The kernel shows the address after the `syscall` instruction (2 bytes).
    let call = |nr: u64, ip: u64| seccomp::SeccompData {
        nr: nr as u32,
        arch: seccomp::AUDIT_ARCH_X86_64,
        ip,
        args,
    };
    [
        call(nr::READ, g.syscall_ret + 2),
        call(nr::CLOSE, g.syscall_ret + 2),
        call(nr::RT_SIGRETURN, g.sigreturn + g.sigreturn_len),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read's result is the number of the next call: `close` once ckpt wrote, `read`
    /// again at end of file (ckpt died); then the frame's `rt_sigreturn`.
    #[test]
    fn a_thread_at_the_gate_reads_then_closes_then_returns_through_its_frame() {
        assert_eq!(GATE_BYTES, nr::CLOSE);
        assert_eq!(nr::READ, 0);
        let ctx = ax::X86Regs {
            rsp: 0x7000_0000,
            rip: 0x40_1000,
            rax: 7,
            orig_rax: u64::MAX,
            cs: 0x33,
            ss: 0x2b,
            ..Default::default()
        };
        let g = Gate {
            syscall_ret: 0x7fff_f000,
            sigreturn: 0x7f00_0100,
            sigreturn_len: 9,
            fds: vec![9],
        };
        let at = 0x6fff_f000;
        let r = gate_regs(&ctx, at, 9, &g);
        assert_eq!(
            (r.rip, r.rax, r.rdi, r.rdx),
            (g.syscall_ret, nr::READ, 9, 3)
        );
        // The read's buffer and its return address lie below the frame, not in it.
        assert_eq!((r.rsp, r.rsi), (at - 8, at - 16));
        assert_eq!(r.orig_rax, u64::MAX, "no restart of the thread's own call");
    }

    /// A thread under seccomp filters waits at the gate only if its filters let each of
    /// the gate's calls through as it makes them (number, arguments, address).
    #[test]
    fn filters_decide_whether_a_thread_waits_at_the_gate() {
        use crate::model::SeccompFilter;
        let allow = libc::SECCOMP_RET_ALLOW;
        let deny = libc::SECCOMP_RET_ERRNO | 1;
        // ld [off]; jeq k, ret deny; ret allow
        let refuse_word = |off: u32, k: u32| SeccompFilter {
            insns: vec![
                (0x20, 0, 0, off),
                (0x15, 0, 1, k),
                (0x06, 0, 0, deny),
                (0x06, 0, 0, allow),
            ],
            log: false,
        };
        let ctx = ax::X86Regs {
            rsp: 0x7000_0000,
            r10: 0x55,
            ..Default::default()
        };
        let g = Gate {
            syscall_ret: 0x7fff_f000,
            sigreturn: 0x7f00_0100,
            sigreturn_len: 7,
            fds: vec![9],
        };
        let parked = gate_regs(&ctx, 0x6fff_f000, 9, &g);
        let calls = gate_calls(&parked, &g);
        let ok = |f: SeccompFilter| seccomp::allows_all(&[f], &calls);
        assert!(
            ok(refuse_word(0, 39)),
            "getpid refused: the gate's calls pass"
        );
        for nr in [nr::READ, nr::CLOSE, nr::RT_SIGRETURN] {
            assert!(!ok(refuse_word(0, nr as u32)), "call {nr} refused");
        }
        // The first argument (the gate's descriptor), the fourth (r10 as it is), the
        // address of the `syscall` of rt_sigreturn's instructions.
        assert!(!ok(refuse_word(16, 9)));
        assert!(!ok(refuse_word(40, 0x55)));
        assert!(!ok(refuse_word(8, 0x7f00_0107)));
        assert!(ok(refuse_word(8, 0x7f00_0109)));
        // A logged call is not let through as it is.
        let log = SeccompFilter {
            insns: vec![(0x06, 0, 0, libc::SECCOMP_RET_LOG)],
            log: false,
        };
        assert!(!ok(log));
    }
}
