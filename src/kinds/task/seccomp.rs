//! Seccomp filters (mode 2), per thread.
//!
//! Dump reads each thread's chain of classic BPF filters back from the kernel
//! (PTRACE_SECCOMP_GET_FILTER, oldest first in the image) with the flag the kernel
//! remembers of each (SECCOMP_FILTER_FLAG_LOG). Threads share a filter when their chains
//! start alike (TSYNC, or threads created after it was installed): stage installs the
//! filters common to every thread once, from the main thread with TSYNC (so they are
//! shared again), then each thread's own rest in that thread. Installing needs
//! no_new_privs or CAP_SYS_ADMIN in the thread, as it did in the original. When every
//! filtered thread of a process has one of them in the image, stage installs its
//! filters last, after the credentials. When one has neither (it installed the filters
//! while it still had CAP_SYS_ADMIN, then dropped it without no_new_privs: runc, and so
//! every container under Docker's or Podman's default profile), stage installs the
//! process's filters first, while its threads still have ckpt's credentials, and the
//! credentials are then set under them ([`before_creds`]; in a user namespace of the
//! tree's own, after the process joined it, where CAP_SYS_ADMIN suffices). Plan checks with a BPF
//! interpreter that the filters let through every system call the restore still makes
//! after installing them: the further installs, the munmap of the helper area at
//! commit, and, when they go first, exactly the calls `creds::restore_creds` and
//! `creds::after_creds` make in each thread (learned by running them on a [`Dry`]
//! task: capset, setresuid, setgroups, the prctls of the bounding set, keep_caps,
//! ambient capabilities and securebits...), so that a filter that would stop the
//! restore is a problem named before anything is done, not a killed process.
//! Strict mode (mode 1) is refused, and so are filters that hand system calls to a
//! user-space supervisor (SECCOMP_RET_USER_NOTIF: its listener is not restored).

use super::creds::{self, Own, cap};
use crate::arch::native::nr;
use crate::error::{DumpResult, Problem, RestoreError, RestoreResult};
use crate::model::{Checkpoint, Creds, Process, SeccompFilter, UserNsState};
use crate::remote::{Ctx, Dry, DryCall, STUB_SIZE};
use crate::sys::{self, ptrace};

/// AUDIT_ARCH_X86_64 (<linux/audit.h>: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE),
/// the `arch` field of `struct seccomp_data` for the calls the restore makes.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// The kernel's limit on instructions of one filter (BPF_MAXINSNS, <linux/bpf_common.h>).
const BPF_MAXINSNS: usize = 4096;
/// The kernel's limit on the instructions of a whole chain (MAX_INSNS_PER_PATH in
/// kernel/seccomp.c, counting 4 more per filter).
const MAX_INSNS_PER_PATH: usize = 1 << 15;

// ---- collect (dump) ----

/// The seccomp filters of thread `tid` (stopped, traced), oldest first (the kernel
/// numbers them from the oldest).
pub(crate) fn read_filters(tid: i32) -> DumpResult<Vec<SeccompFilter>> {
    let mut out = Vec::new();
    for index in 0..MAX_INSNS_PER_PATH {
        let insns = match ptrace::seccomp_filter(tid, index) {
            Ok(i) => i,
            Err(e) if e.errno() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e.into()),
        };
        let flags = ptrace::seccomp_flags(tid, index as u64)?;
        out.push(SeccompFilter {
            insns: insns.iter().map(decode).collect(),
            log: flags & libc::SECCOMP_FILTER_FLAG_LOG != 0,
        });
    }
    Ok(out)
}

fn decode(b: &[u8; 8]) -> (u16, u8, u8, u32) {
    (
        u16::from_le_bytes([b[0], b[1]]),
        b[2],
        b[3],
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    )
}

// ---- checks (plan) ----

/// What the kernel passes a filter (`struct seccomp_data`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    fn word(&self, off: u32) -> Option<u32> {
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        Some(match off {
            0 => self.nr,
            4 => self.arch,
            8 => lo(self.ip),
            12 => hi(self.ip),
            16..=63 if off % 4 == 0 => {
                let a = self.args[((off - 16) / 8) as usize];
                if off % 8 == 0 { lo(a) } else { hi(a) }
            }
            _ => return None,
        })
    }

    /// A system call of the restore, on x86-64.
    pub(crate) fn call(nr: u64, args: [u64; 6]) -> Self {
        Self {
            nr: nr as u32,
            arch: AUDIT_ARCH_X86_64,
            ip: 0,
            args,
        }
    }
}

/// What classic BPF program `f` returns for `d`, as the kernel would run it; `None`
/// for a program the kernel would not have accepted (it never runs one).
pub(crate) fn run_filter(f: &[(u16, u8, u8, u32)], d: &SeccompData) -> Option<u32> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Jumps only go forward, so this ends within f.len() steps.
    while let Some(&(code, jt, jf, k)) = f.get(pc) {
        pc += 1;
        let class = code & 0x07;
        let src_x = code & 0x08 != 0;
        let operand = if src_x { x } else { k };
        match class {
            // BPF_LD / BPF_LDX
            0x00 | 0x01 => {
                // Only 32-bit (BPF_W) loads exist for seccomp.
                if code & 0x18 != 0 {
                    return None;
                }
                let v = match code & 0xe0 {
                    0x00 => k,                        // BPF_IMM
                    0x20 if class == 0 => d.word(k)?, // BPF_ABS
                    0x60 => *mem.get(k as usize)?,    // BPF_MEM
                    0x80 => 64,                       // BPF_LEN
                    _ => return None,
                };
                if class == 0 { a = v } else { x = v }
            }
            // BPF_ST / BPF_STX
            0x02 => *mem.get_mut(k as usize)? = a,
            0x03 => *mem.get_mut(k as usize)? = x,
            // BPF_ALU
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x20 => a.wrapping_mul(operand),
                    0x30 => a.checked_div(operand).unwrap_or(0),
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.checked_shl(operand).unwrap_or(0),
                    0x70 => a.checked_shr(operand).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(operand).unwrap_or(0),
                    0xa0 => a ^ operand,
                    _ => return None,
                }
            }
            // BPF_JMP
            0x05 => {
                let op = code & 0xf0;
                if op == 0x00 {
                    pc = pc.checked_add(k as usize)?;
                    continue;
                }
                let taken = match op {
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    0x40 => a & operand != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { jt } else { jf });
            }
            // BPF_RET
            0x06 => {
                return match code & 0x18 {
                    0x00 => Some(k),
                    0x10 => Some(a),
                    _ => None,
                };
            }
            // BPF_MISC: TAX, TXA
            _ => match code & 0xf8 {
                0x00 => x = a,
                0x80 => a = x,
                _ => return None,
            },
        }
    }
    None
}

/// The action the kernel takes for `d` under the whole `chain`: the most restrictive
/// of every filter's answer (`None` if one cannot be run).
pub(crate) fn chain_action(chain: &[SeccompFilter], d: &SeccompData) -> Option<u32> {
    let mut best = libc::SECCOMP_RET_ALLOW;
    for f in chain {
        let r = run_filter(&f.insns, d)?;
        if ((r & libc::SECCOMP_RET_ACTION_FULL) as i32)
            < ((best & libc::SECCOMP_RET_ACTION_FULL) as i32)
        {
            best = r;
        }
    }
    Some(best)
}

/// Whether filter chain `chain` lets each of `calls` through as it is (its action
/// SECCOMP_RET_ALLOW exactly: not even logged), as the kernel would run it.
pub(crate) fn allows_all(chain: &[SeccompFilter], calls: &[SeccompData]) -> bool {
    calls.iter().all(|d| {
        chain_action(chain, d)
            .is_some_and(|a| a & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ALLOW)
    })
}

fn allowed(action: u32) -> bool {
    let a = action & libc::SECCOMP_RET_ACTION_FULL;
    a == libc::SECCOMP_RET_ALLOW || a == libc::SECCOMP_RET_LOG
}

fn action_name(action: u32) -> String {
    match action & libc::SECCOMP_RET_ACTION_FULL {
        libc::SECCOMP_RET_KILL_PROCESS => "SECCOMP_RET_KILL_PROCESS".into(),
        libc::SECCOMP_RET_KILL_THREAD => "SECCOMP_RET_KILL_THREAD".into(),
        libc::SECCOMP_RET_TRAP => "SECCOMP_RET_TRAP".into(),
        libc::SECCOMP_RET_ERRNO => format!(
            "SECCOMP_RET_ERRNO (errno {})",
            action & libc::SECCOMP_RET_DATA
        ),
        libc::SECCOMP_RET_USER_NOTIF => "SECCOMP_RET_USER_NOTIF".into(),
        libc::SECCOMP_RET_TRACE => "SECCOMP_RET_TRACE".into(),
        other => format!("action {other:#x}"),
    }
}

/// The number of filters every thread of `proc_` starts with alike (installed once,
/// shared through TSYNC); 0 for a single thread.
pub(crate) fn shared_prefix(proc_: &Process) -> usize {
    let mut chains = proc_.threads.iter().map(|t| &t.seccomp_filters);
    let Some(first) = chains.next() else {
        return 0;
    };
    if proc_.threads.len() < 2 {
        return 0;
    }
    chains.fold(first.len(), |n, c| {
        first
            .iter()
            .zip(c.iter())
            .take_while(|(a, b)| a == b)
            .count()
            .min(n)
    })
}

/// The seccomp() call installing `f` (TSYNC when shared by every thread).
fn install_args(f: &SeccompFilter, tsync: bool, fprog: u64) -> [u64; 6] {
    let mut flags = 0;
    if tsync {
        flags |= libc::SECCOMP_FILTER_FLAG_TSYNC;
    }
    if f.log {
        flags |= libc::SECCOMP_FILTER_FLAG_LOG;
    }
    [
        u64::from(libc::SECCOMP_SET_MODE_FILTER),
        flags,
        fprog,
        0,
        0,
        0,
    ]
}

/// The system calls stage makes in thread `i` of `proc_` once its first filter is in
/// place, each with the filters in place by then: the next installs, and (in the main
/// thread) the munmap of the helper area at `stub` at commit.
fn calls_after_install(proc_: &Process, i: usize, stub: u64) -> Vec<(String, usize, SeccompData)> {
    let prefix = shared_prefix(proc_);
    let Some(t) = proc_.threads.get(i) else {
        return Vec::new();
    };
    let chain = &t.seccomp_filters;
    let mut out = Vec::new();
    // Installed in this thread by then: the shared ones (by the main thread, all of them
    // before any other), then its own in order.
    let start = if i == 0 { 1 } else { prefix.max(1) };
    for (n, f) in chain.iter().enumerate().skip(start) {
        let tsync = n < prefix;
        let d = SeccompData::call(nr::SECCOMP, install_args(f, tsync, 0));
        out.push((format!("seccomp() installing its filter #{}", n + 1), n, d));
    }
    if i == 0 && !chain.is_empty() {
        let d = SeccompData::call(nr::MUNMAP, [stub, STUB_SIZE, 0, 0, 0, 0]);
        out.push(("munmap of the restore's helper area".into(), chain.len(), d));
    }
    out
}

/// Whether thread creds `c` may install a filter: no_new_privs, or CAP_SYS_ADMIN.
fn may_install(c: &Creds) -> bool {
    c.no_new_privs || c.cap_eff & (1 << cap::SYS_ADMIN) != 0
}

/// Seccomp of every thread of `proc_` can be brought back exactly, and its filters let
/// the restore finish.
pub(crate) fn check_seccomp(proc_: &Process, problems: &mut Vec<Problem>) {
    let mut p = |message: String| {
        problems.push(Problem {
            code: "unsupported",
            message,
        })
    };
    if proc_.is_zombie() {
        return;
    }
    let main_creds = &proc_.creds;
    for (i, t) in proc_.threads.iter().enumerate() {
        let c = t.creds.as_ref().unwrap_or(main_creds);
        let who = if i == 0 {
            "the process".to_string()
        } else {
            format!("thread {} of process {}", t.tid, proc_.pid)
        };
        match c.seccomp {
            0 if t.seccomp_filters.is_empty() => continue,
            1 if t.seccomp_filters.is_empty() => {
                if vdso_start(proc_).is_none() {
                    p(format!(
                        "{who} runs under seccomp strict mode, which the restore enters \
                         through the vDSO's system call instruction, and the process has no \
                         vDSO; not supported"
                    ));
                }
                continue;
            }
            2 if !t.seccomp_filters.is_empty() => {}
            2 => {
                p(format!(
                    "{who} ran under seccomp filters the image does not record (made by an \
                     older ckpt): dump it again"
                ));
                continue;
            }
            m => {
                p(format!(
                    "{who} has seccomp mode {m} with {} filters recorded; the image is \
                     inconsistent",
                    t.seccomp_filters.len()
                ));
                continue;
            }
        }
        let total: usize = t.seccomp_filters.iter().map(|f| f.insns.len() + 4).sum();
        if total > MAX_INSNS_PER_PATH {
            p(format!(
                "{who}: its seccomp filters have more instructions than the kernel accepts"
            ));
            continue;
        }
        for (n, f) in t.seccomp_filters.iter().enumerate() {
            if f.insns.is_empty() || f.insns.len() > BPF_MAXINSNS {
                p(format!(
                    "{who}: seccomp filter #{} has {} instructions; the image is malformed",
                    n + 1,
                    f.insns.len()
                ));
            }
            let notif = f.insns.iter().any(|&(code, _, _, k)| {
                code == 0x06 && k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_USER_NOTIF
            });
            if notif {
                p(format!(
                    "{who}: seccomp filter #{} hands system calls to a user-space supervisor \
                     (SECCOMP_RET_USER_NOTIF) whose listener descriptor is not restored; not \
                     supported yet",
                    n + 1
                ));
            }
        }
        for (what, n, d) in calls_after_install(proc_, i, 0) {
            match chain_action(&t.seccomp_filters[..n], &d) {
                Some(a) if allowed(a) => {}
                Some(a) => p(format!(
                    "{who}: its seccomp filters would stop the restore's own {what} with {}: \
                     the restore cannot bring them back",
                    action_name(a)
                )),
                None => p(format!(
                    "{who}: its first {n} seccomp filters cannot be run on the restore's own \
                     {what} (a malformed program): the image is malformed"
                )),
            }
        }
    }
    let prefix = shared_prefix(proc_);
    // (Installed before the credentials, the main thread has ckpt's: no no_new_privs.)
    if prefix > 0 && !before_creds(proc_) {
        // TSYNC also gives every thread the caller's no_new_privs.
        let nnp = |c: &Creds| c.no_new_privs;
        if nnp(main_creds)
            && proc_
                .threads
                .iter()
                .any(|t| !nnp(t.creds.as_ref().unwrap_or(main_creds)))
        {
            p(format!(
                "process {} shares seccomp filters between threads with and without \
                 no_new_privs; not supported yet",
                proc_.pid
            ));
        }
    }
}

/// Whether stage installs the filters of `proc_` before its credentials, while its
/// threads still have ckpt's (CAP_SYS_ADMIN among them): a thread under filters has
/// neither no_new_privs nor CAP_SYS_ADMIN in the image, so it could not install them
/// with its own (it installed them before dropping CAP_SYS_ADMIN, as runc does).
pub(crate) fn before_creds(proc_: &Process) -> bool {
    !proc_.is_zombie()
        && proc_.threads.iter().any(|t| {
            !t.seccomp_filters.is_empty() && !may_install(t.creds.as_ref().unwrap_or(&proc_.creds))
        })
}

/// The calls stage makes in each thread of `proc_` (image order) to give it its
/// credentials from ckpt's `own` (`creds::restore_creds`; in the main thread, last,
/// `creds::after_creds` when a thread's changed), with the helper area at `stub`: a dry
/// run of exactly those steps, as `restore::stage` takes them (in the tree's user
/// namespace `userns`, if it has one, from ckpt's credentials there to the image's as
/// the namespace shows them).
pub(crate) fn creds_calls(
    proc_: &Process,
    own: &Own,
    userns: Option<&UserNsState>,
    stub: u64,
) -> RestoreResult<Vec<Vec<DryCall>>> {
    let conv = |c: &Creds| match userns {
        Some(u) => crate::kinds::userns::inside(own, c, u),
        None => Ok((own.clone(), c.clone())),
    };
    let (me, want) = conv(&proc_.creds)?;
    let mut out = Vec::with_capacity(proc_.threads.len());
    let mut changed = false;
    for t in proc_.threads.iter().skip(1) {
        let (_, c) = conv(t.creds.as_ref().unwrap_or(&proc_.creds))?;
        let (dry, calls) = Dry::new(t.tid);
        let mut cx = Ctx::dry(dry, stub, proc_);
        changed |= creds::restore_creds(&mut cx, &me, &c)?;
        out.push(calls.take());
    }
    let (dry, calls) = Dry::new(proc_.pid);
    let mut cx = Ctx::dry(dry, stub, proc_);
    if creds::restore_creds(&mut cx, &me, &want)? || changed {
        creds::after_creds(&mut cx)?;
    }
    out.insert(0, calls.take());
    Ok(out)
}

/// The first of `calls` that thread `i` of `proc_`, under all its filters, would not be
/// let through, with the action its filters take.
fn first_denied(proc_: &Process, i: usize, calls: &[DryCall]) -> Option<(String, Option<u32>)> {
    let chain = &proc_.threads.get(i)?.seccomp_filters;
    calls.iter().find_map(|c| {
        let d = SeccompData::call(c.nr, c.args);
        match chain_action(chain, &d) {
            Some(a) if allowed(a) => None,
            a => Some((c.what.clone(), a)),
        }
    })
}

/// When the filters of `proc_` go in before its credentials ([`before_creds`]): ckpt
/// (`own`) can install them, and they let through every call that gives each thread its
/// credentials. `userns`: the tree's user namespace of its own, which each process
/// joins before its filters go in (where ckpt's stub has CAP_SYS_ADMIN).
pub(crate) fn check_creds_under_filters(
    proc_: &Process,
    own: &Own,
    userns: Option<&UserNsState>,
    problems: &mut Vec<Problem>,
) {
    if !before_creds(proc_) {
        return;
    }
    let mut p = |message: String| {
        problems.push(Problem {
            code: "unsupported",
            message,
        })
    };
    let pid = proc_.pid;
    if userns.is_none() && !may_install(&own.creds) {
        p(format!(
            "process {pid} runs under seccomp filters installed before it dropped \
             CAP_SYS_ADMIN (without no_new_privs): the restore installs them with ckpt's \
             own CAP_SYS_ADMIN, which ckpt does not have: run ckpt as root"
        ));
        return;
    }
    let all = match creds_calls(proc_, own, userns, 0) {
        Ok(a) => a,
        Err(e) => {
            p(format!(
                "process {pid}: cannot tell the calls that give it its credentials: {e}"
            ));
            return;
        }
    };
    for (i, calls) in all.iter().enumerate() {
        let Some((what, action)) = first_denied(proc_, i, calls) else {
            continue;
        };
        let who = match proc_.threads.get(i) {
            Some(t) if i > 0 => format!("thread {} of process {pid}", t.tid),
            _ => format!("process {pid}"),
        };
        let how = match action {
            Some(a) => format!("would stop it with {}", action_name(a)),
            None => "cannot be run on it (a malformed program)".into(),
        };
        p(format!(
            "{who} installed its seccomp filters before dropping CAP_SYS_ADMIN (without \
             no_new_privs), so the restore installs them first and gives it its \
             credentials under them; its filters deny the {what} that takes (they {how}): \
             the restore cannot bring it back"
        ));
    }
}

/// At stage, before installing the filters of `proc_` first: the calls that give its
/// threads their credentials, with the helper area's real address `stub`, still pass
/// them (as plan found).
pub(crate) fn recheck_creds_under_filters(
    proc_: &Process,
    own: &Own,
    userns: Option<&UserNsState>,
    stub: u64,
) -> RestoreResult<()> {
    for (i, calls) in creds_calls(proc_, own, userns, stub)?.iter().enumerate() {
        if let Some((what, _)) = first_denied(proc_, i, calls) {
            return Err(RestoreError::Stage(format!(
                "the seccomp filters of process {} would stop the restore's {what}",
                proc_.pid
            )));
        }
    }
    Ok(())
}

/// Where the vDSO of `proc_` is (restore maps it there).
fn vdso_start(proc_: &Process) -> Option<u64> {
    proc_
        .vmas
        .iter()
        .find(|v| v.kind == crate::model::VmaKind::Vdso)
        .map(|v| v.start)
}

// ---- restore (stage) ----

/// Put the threads of `p` that were in strict mode in it again: the very last system
/// call they make for the restore (strict mode leaves only read, write, exit and
/// sigreturn), at commit, after the helper area is gone. The call is made through the
/// `syscall` instruction at `gadget_off` in the vDSO (the same as ckpt's, checked in
/// plan), which restore mapped at the image's address.
pub(crate) fn enter_strict_mode(p: &Process, gadget_off: u64) -> RestoreResult<()> {
    let main = &p.creds;
    for t in &p.threads {
        if t.creds.as_ref().unwrap_or(main).seccomp != libc::SECCOMP_MODE_STRICT {
            continue;
        }
        let vdso = vdso_start(p).ok_or_else(|| {
            RestoreError::Stage(format!("process {} has no vDSO for strict mode", p.pid))
        })?;
        let regs = ptrace::get_regs(t.tid)?;
        let mut inj = sys::inject::Injector::new(t.tid, vdso + gadget_off, regs);
        let r = inj.raw(
            nr::PRCTL,
            [
                libc::PR_SET_SECCOMP as u64,
                u64::from(libc::SECCOMP_MODE_STRICT),
                0,
                0,
                0,
                0,
            ],
        )?;
        if r != 0 {
            return Err(RestoreError::Stage(format!(
                "thread {} of process {}: PR_SET_SECCOMP strict failed ({r})",
                t.tid, p.pid
            )));
        }
    }
    Ok(())
}

/// Install `f` in the thread `cx` drives.
fn install(cx: &mut Ctx<'_>, f: &SeccompFilter, tsync: bool) -> RestoreResult<()> {
    let mut b = Vec::with_capacity(16 + f.insns.len() * 8);
    for &(code, jt, jf, k) in &f.insns {
        b.extend_from_slice(&code.to_le_bytes());
        b.extend_from_slice(&[jt, jf]);
        b.extend_from_slice(&k.to_le_bytes());
    }
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; } after them.
    let prog_off = b.len() as u64;
    let insns = cx.scratch();
    b.extend_from_slice(&(f.insns.len() as u64).to_le_bytes());
    b.extend_from_slice(&insns.to_le_bytes());
    let base = cx.put(0, &b)?;
    let r = cx.call(
        "seccomp(SECCOMP_SET_MODE_FILTER)",
        nr::SECCOMP,
        install_args(f, tsync, base + prog_off),
    )?;
    if r != 0 {
        // TSYNC: the thread that could not take the filter.
        return Err(RestoreError::Stage(format!(
            "seccomp TSYNC failed in thread {r} of process {}",
            cx.proc_.pid
        )));
    }
    Ok(())
}

/// Install the filters of process `cx` (checked in plan): the shared ones from the main
/// thread with TSYNC, then each thread's own, the main thread's last. `threads` are the
/// injectors of the other threads, in image order; `stub` is the helper area, which
/// commit still unmaps through the filters.
pub(crate) fn install_filters(
    cx: &mut Ctx<'_>,
    threads: &mut [sys::inject::Injector],
    stub: u64,
) -> RestoreResult<()> {
    let p = cx.proc_;
    if p.threads.iter().all(|t| t.seccomp_filters.is_empty()) {
        return Ok(());
    }
    // The real address of the helper area, unknown to plan.
    for (what, n, d) in calls_after_install(p, 0, stub) {
        let chain = &p.threads[0].seccomp_filters[..n];
        if !chain_action(chain, &d).is_some_and(allowed) {
            return Err(RestoreError::Stage(format!(
                "the seccomp filters of process {} would stop the restore's {what}",
                p.pid
            )));
        }
    }
    let prefix = shared_prefix(p);
    for f in p.threads[0].seccomp_filters.iter().take(prefix) {
        install(cx, f, true)?;
    }
    for (inj, t) in threads.iter_mut().zip(p.threads.iter().skip(1)) {
        if t.seccomp_filters.len() <= prefix {
            continue;
        }
        std::mem::swap(&mut cx.live_task("install seccomp filters")?.inj, inj);
        let mut r = Ok(());
        for f in &t.seccomp_filters[prefix..] {
            r = install(cx, f, false);
            if r.is_err() {
                break;
            }
        }
        std::mem::swap(&mut cx.live_task("install seccomp filters")?.inj, inj);
        r?;
    }
    for f in p.threads[0].seccomp_filters.iter().skip(prefix) {
        install(cx, f, false)?;
    }
    Ok(())
}

/// Stage, before the credentials: the filters of each process whose threads could not
/// install them with their own credentials (they dropped CAP_SYS_ADMIN after installing
/// them, without no_new_privs: [`before_creds`]) go in first, while the threads have
/// ckpt's (in the tree's user namespace, if it has one: CAP_SYS_ADMIN there is enough).
/// The credentials are then set under them: plan checked that the filters let those
/// calls through, checked again here with the helper area's real address `stub`.
/// `staged` holds each process's other threads (None: a zombie), beside `ctxs`.
pub(crate) fn install_before_creds(
    ctxs: &mut [Ctx<'_>],
    staged: &mut [Option<Vec<sys::inject::Injector>>],
    ckpt: &Checkpoint,
    own: &Own,
    stub: u64,
) -> RestoreResult<()> {
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter_mut()) {
        if let Some(threads) = threads {
            if before_creds(cx.proc_) {
                let userns = crate::kinds::userns::state_of(ckpt, cx.proc_);
                recheck_creds_under_filters(cx.proc_, own, userns, stub)?;
                install_filters(cx, threads, stub)?;
            }
        }
    }
    Ok(())
}

/// Stage, after the credentials: the other processes' filters, last of all, since they
/// may forbid what the steps before do.
pub(crate) fn install_after_creds(
    ctxs: &mut [Ctx<'_>],
    staged: &mut [Option<Vec<sys::inject::Injector>>],
    stub: u64,
) -> RestoreResult<()> {
    for (cx, threads) in ctxs.iter_mut().zip(staged.iter_mut()) {
        if let Some(threads) = threads {
            if !before_creds(cx.proc_) {
                install_filters(cx, threads, stub)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
