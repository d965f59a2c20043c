//! The point of no return: the helper area removed, the saved registers set, the tree
//! let go.

use super::*;

/// The bit of signal `sig` in a signal mask.
pub(super) fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Whether injected calls may stop on the helper area's breakpoint: not if a process of
/// the image ignores SIGTRAP (see `Injector::trap_after`), has one pending (it is queued
/// during stage, when SIGTRAP is not blocked) or a timer that sends one.
pub(crate) fn trap_mode(procs: &[Process]) -> bool {
    let trap = libc::SIGTRAP as u32;
    !procs.iter().any(|p| {
        p.sigactions
            .iter()
            .any(|a| a.signo == trap && a.handler == libc::SIG_IGN as u64)
            || p.shared_pending.iter().any(|s| s.signo == trap)
            || p.threads
                .iter()
                .any(|t| t.pending.iter().any(|s| s.signo == trap))
            || p.posix_timers.iter().any(|t| t.signo == libc::SIGTRAP)
            || p.zombie
                .is_some_and(|z| z.ignored & sigbit(libc::SIGTRAP) != 0)
    })
}

pub(super) fn own_vdso_range() -> Result<(u64, u64)> {
    let start = sys::process::own_vdso();
    let maps = procfs::maps(std::process::id() as i32)?;
    maps.iter()
        .find(|m| m.path == b"[vdso]" && m.start == start)
        .map(|m| (m.start, m.end - m.start))
        .ok_or_else(|| RestoreError::Stage("ckpt itself has no vDSO".into()))
}

/// The point of no return: remove the helper area, set the saved registers, hand the
/// network lock over to ourselves, let go. Returns the root's PID and the lock of the
/// tree's TCP connections, which lasts until it is released or ckpt exits.
pub fn commit(mut s: Staged, plan: &Plan) -> Result<(i32, Option<sys::netlock::Handover>)> {
    let procs = &plan.ckpt.processes;
    fault_point("remove helper area")?;
    for sp in s.procs.iter_mut().flatten() {
        // The breakpoints and the executor go with the area.
        sp.inj.stop_trapping();
        sp.inj.clear_executor();
        sp.inj.call(
            "munmap helper area",
            nr::MUNMAP,
            [s.stub_addr, STUB_SIZE, 0, 0, 0, 0],
        )?;
    }
    // Seccomp strict mode only now: it leaves the threads no other call.
    fault_point("seccomp strict mode")?;
    if procs.iter().any(|p| {
        p.threads
            .iter()
            .any(|t| t.creds.as_ref().unwrap_or(&p.creds).seccomp == libc::SECCOMP_MODE_STRICT)
    }) {
        let (vstart, vlen) = own_vdso_range()?;
        let code = sys::process::read_own(vstart, vlen as usize)?;
        let gadget = find_gadget(&code, 0)
            .ok_or_else(|| RestoreError::Stage("no syscall instruction in the vDSO".into()))?;
        for p in procs.iter().filter(|p| !p.is_zombie()) {
            seccomp::enter_strict_mode(p, gadget)?;
        }
    }
    fault_point("set registers")?;
    // Signal masks only now: until the helper area is gone every signal stays blocked,
    // so that a timer firing cannot interrupt an injected call.
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        for t in &p.threads {
            ptrace::set_sigmask(t.tid, t.sigmask)?;
            // Converted to this host's xsave layout in plan.
            let xsave = plan.xsave.get(&t.tid).unwrap_or(&t.arch.xsave);
            threads::set_thread_state(t.tid, t, xsave)?;
        }
    }
    // Behind the release gate, if there is one: from the detach below the threads
    // wait in it, running nothing of their own until ckpt outside opens it.
    for (p, g) in procs.iter().zip(s.gates.iter().flatten()) {
        let Some(g) = g else { continue };
        let mem = RemoteMem::open(p.pid)?;
        for (t, fd) in p.threads.iter().zip(&g.fds) {
            park_at_gate(&mem, t, *fd, g)?;
        }
    }
    // The restored TCP connections, still in repair mode: ours to take out of it
    // (those only in flight through the copies stage kept).
    let mut conns = Vec::new();
    let mut flying = std::mem::take(&mut s.in_flight_conns);
    for p in procs.iter().filter(|p| !p.is_zombie()) {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            if let crate::model::FdKind::TcpConn { conn, .. } = &f.kind {
                let sock = match flying.iter().position(|c| (c.0, c.1) == (p.pid, f.fd)) {
                    Some(i) => flying.swap_remove(i).2,
                    None => sys::process::steal_fd(p.pid, f.fd)?,
                };
                conns.push((sock, conn));
            }
        }
    }
    // The point of no return comes next, in three short steps, each with only fast
    // system calls: (1) the restored connections leave repair mode; (2) no thread is
    // killed with ckpt any more (PTRACE_O_EXITKILL cleared): from here a ckpt that dies
    // leaves the tree running (the kernel lets its tracees go where they stand, with
    // their final registers); (3) the dump's netfilter rules of the tree's connections
    // are replaced, in one nf_tables transaction, by a table of ours that the kernel
    // removes when ckpt exits (`sys::netlock::Handover`; listed and built before, the
    // answer read after). A ckpt killed before (1) leaves nothing and the dump's lock
    // for another try; between (2) and (3), the tree runs and the dump's rules wait for
    // `ckpt unlock`; after (3), the lock never outlives ckpt. Killed inside (1)-(2), a
    // few microseconds, the tree dies with ckpt and its connections are lost. (A kernel
    // without owned tables: the dump's rules stay until `unlock` after commit.)
    let tcp = crate::kinds::ns::locked_connections(&plan.ckpt);
    // (In the tree's network namespace when the restore joins one made outside it: a
    // pod's outlives the checkpoint, holding the dump's lock.)
    let prepared = sys::netlock::Handover::prepare_in(plan.tree_net.as_ref(), &tcp)
        .ok()
        .flatten();
    fault_point("detach")?;
    sys::deferred::die_point("before the point of no return");
    for (sock, c) in &conns {
        fd::tcp::finish_conn(sock, c);
    }
    sys::deferred::die_point("out of repair mode");
    let survive =
        libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK;
    let mut first_err = None;
    for sp in s.procs.iter().flatten() {
        for t in sp.threads.iter().map(|i| i.pid()).chain([sp.inj.pid()]) {
            if let Err(e) = ptrace::set_options(t, survive) {
                first_err.get_or_insert(e);
            }
        }
    }
    // Nothing below can fail in a way we could still undo; let every thread go.
    s.stub.committed = true;
    s.sysv.keep = true;
    s.cgroups.keep = true;
    sys::deferred::die_point("the tree outlives ckpt");
    let sent = prepared.and_then(|p| p.send().ok());
    sys::deferred::die_point("lock handed over");
    for sp in s.procs.iter().flatten() {
        for t in sp.threads.iter().map(|i| i.pid()).chain([sp.inj.pid()]) {
            if let Err(e) = ptrace::detach(t, 0) {
                first_err.get_or_insert(e);
            }
        }
    }
    drop(conns);
    sys::deferred::die_point("let go");
    let handover = sent.and_then(|h| h.confirm().ok());
    if let Some(e) = first_err {
        // A thread we could not detach is still stopped: kill the tree rather than
        // leave it half-running.
        s.stub.committed = false;
        drop(s.stub);
        return Err(e.into());
    }
    sys::deferred::die_point("committed");
    Ok((procs[0].pid, handover))
}
