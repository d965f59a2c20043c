//! Credentials: user and group IDs, supplementary groups, capabilities, securebits (per
//! thread), and what ckpt's own privileges allow.

use super::query::ThreadInjected;
use super::threads::FrozenThread;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::model::{Creds, Process};
use crate::remote::{Ctx, Prctl};
use crate::sys::{self, proc as procfs};

// Layering leak (to fix at merge): privs moves to kinds::task::creds.

// ---- collect (dump) ----

/// The credentials the lines of /proc/PID/status `st` show, with the thread's
/// `securebits` (which /proc does not show).
pub(crate) fn creds_of(st: &procfs::Status, securebits: u32) -> Creds {
    Creds {
        uid: st.uid,
        gid: st.gid,
        groups: st.groups.clone(),
        cap_inh: st.cap_inh,
        cap_prm: st.cap_prm,
        cap_eff: st.cap_eff,
        cap_bnd: st.cap_bnd,
        cap_amb: st.cap_amb,
        no_new_privs: st.no_new_privs,
        seccomp: st.seccomp,
        securebits,
    }
}

/// Credentials belong to each thread: the image keeps the process's (its first
/// thread's, `creds`) and, for each thread whose own differ (a program that changed
/// them with raw system calls rather than through libc, which changes them in every
/// thread), that thread's. In thread order, the first thread's `None`.
pub(crate) fn thread_creds(
    threads: &[FrozenThread],
    creds: &Creds,
    thread_inj: &[ThreadInjected],
) -> DumpResult<Vec<Option<Creds>>> {
    let mut out = vec![None];
    for (t, ti) in threads.iter().zip(thread_inj).skip(1) {
        let theirs = creds_of(&procfs::status(t.tid)?, ti.securebits);
        out.push((theirs != *creds).then_some(theirs));
    }
    Ok(out)
}

// ---- checks (plan) ----

// Privileges: what the image's processes had (user and group IDs, capability sets,
// securebits, no_new_privs, resource limits) against what ckpt itself holds.
//
// Stage gives every thread of a process exactly the image's credentials
// (`stage::restore_creds`), which it can only do with privileges ckpt has: a capability
// ckpt lacks cannot be given, a bounding set cannot grow, a hard resource limit cannot
// be raised without `CAP_SYS_RESOURCE`, no_new_privs cannot be cleared, a locked
// securebit cannot change. Plan checks all of it here, so that such an image is refused
// before anything is created, each problem naming the process, the capability or limit,
// and what to do.

/// Capability numbers used here (linux/capability.h).
pub(crate) mod cap {
    pub(crate) const SETGID: u32 = 6;
    pub(crate) const SETUID: u32 = 7;
    pub(crate) const SETPCAP: u32 = 8;
    pub(crate) const SYS_ADMIN: u32 = 21;
    pub(crate) const SYS_RESOURCE: u32 = 24;
    pub(crate) const CHECKPOINT_RESTORE: u32 = 40;
}

/// Capability names, by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `CAP_SYS_RESOURCE`, or "capability 45" for a number this table does not know.
pub(crate) fn cap_name(n: u32) -> String {
    match CAP_NAMES.get(n as usize) {
        Some(s) => format!("CAP_{s}"),
        None => format!("capability {n}"),
    }
}

/// Whether capability `n` is in the set `set`.
pub(crate) fn has(set: u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

/// Securebits (linux/securebits.h): each flag is followed by its lock.
pub(crate) mod secbit {
    #[allow(dead_code)] // listed with the others; nothing tests it alone
    pub(crate) const NOROOT: u32 = 1 << 0;
    pub(crate) const NO_SETUID_FIXUP: u32 = 1 << 2;
    pub(crate) const KEEP_CAPS: u32 = 1 << 4;
    pub(crate) const KEEP_CAPS_LOCKED: u32 = 1 << 5;
    pub(crate) const NO_CAP_AMBIENT_RAISE: u32 = 1 << 6;
    /// Every lock bit (the odd bits).
    pub(crate) const ALL_LOCKS: u32 = 0xaaaa_aaaa;
}

/// Securebits by name, as `setpriv --securebits` spells them.
pub(crate) fn secbits_names(bits: u32) -> String {
    const NAMES: [&str; 12] = [
        "noroot",
        "noroot_locked",
        "no_setuid_fixup",
        "no_setuid_fixup_locked",
        "keep_caps",
        "keep_caps_locked",
        "no_cap_ambient_raise",
        "no_cap_ambient_raise_locked",
        "exec_restrict_file",
        "exec_restrict_file_locked",
        "exec_deny_interactive",
        "exec_deny_interactive_locked",
    ];
    if bits == 0 {
        return "none".into();
    }
    (0..32)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| {
            NAMES
                .get(b)
                .map_or_else(|| format!("bit {b}"), |s| (*s).to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the kernel lets securebits `from` be changed to `to` (PR_SET_SECUREBITS, given
/// CAP_SETPCAP): no locked bit may change and no lock may go.
pub(crate) fn secbits_change_allowed(from: u32, to: u32) -> bool {
    let locked = (from & secbit::ALL_LOCKS) >> 1;
    locked & (from ^ to) == 0 && from & secbit::ALL_LOCKS & !to == 0
}

/// Resource limit names, by number (RLIMIT_CPU = 0 .. RLIMIT_RTTIME = 15).
pub(crate) const RLIMIT_NAMES: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// What ckpt itself holds: the credentials its stubs start with, its hard limits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Own {
    pub(crate) euid_root: bool,
    pub(crate) creds: Creds,
    /// (soft, hard) of each resource, by number.
    pub(crate) rlimits: Vec<(u64, u64)>,
    /// fs.nr_open: no descriptor limit can be set above it.
    pub(crate) nr_open: u64,
}

impl Own {
    /// This process's privileges.
    pub(crate) fn detect() -> sys::Result<Own> {
        let st = procfs::status(std::process::id() as i32)?;
        let rlimits = (0..RLIMIT_NAMES.len() as u32)
            .map(|r| sys::process::prlimit_get(0, r))
            .collect::<sys::Result<Vec<_>>>()?;
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
        Ok(Own {
            euid_root: sys::process::is_root(),
            creds: creds_of(&st, sys::process::own_securebits()),
            rlimits,
            nr_open,
        })
    }

    fn hard(&self, resource: u32) -> u64 {
        self.rlimits
            .get(resource as usize)
            .map_or(u64::MAX, |l| l.1)
    }

    fn can(&self, n: u32) -> bool {
        has(self.creds.cap_eff, n)
    }
}

fn p(problems: &mut Vec<Problem>, code: &'static str, message: String) {
    problems.push(Problem { code, message });
}

/// What ckpt needs whatever the image: root, the right to choose PIDs, no seccomp filter
/// (its stubs, and so the restored processes, would inherit it).
pub(crate) fn check_ckpt(own: &Own, problems: &mut Vec<Problem>) {
    if !own.euid_root {
        p(
            problems,
            "privilege",
            format!(
                "restore must run as root (it recreates PIDs and memory-map fields); ckpt runs \
                 as user ID {}: run it as root (e.g. with sudo)",
                own.creds.uid[1]
            ),
        );
    } else if !own.can(cap::CHECKPOINT_RESTORE) && !own.can(cap::SYS_ADMIN) {
        p(
            problems,
            "privilege",
            "ckpt has neither CAP_CHECKPOINT_RESTORE nor CAP_SYS_ADMIN, one of which it needs \
             to give processes their PIDs and executables: run it as root with one of them \
             (in its bounding set)"
                .into(),
        );
    }
    if own.creds.seccomp != 0 {
        p(
            problems,
            "privilege",
            format!(
                "ckpt runs under seccomp (mode {}): the restored processes would inherit its \
                 filter; run ckpt restore outside seccomp",
                own.creds.seccomp
            ),
        );
    }
}

/// Descriptor limit restore needs in a process while it gives it its descriptors:
/// room for its highest descriptor and for the temporaries stage keeps above it.
pub(crate) fn fd_room(proc_: &Process, pairs: usize) -> u64 {
    // (see stage::restore_fds: two temporaries per pipe, socket pair or FIFO, +4)
    crate::kinds::fd::pipe_tmp_base(proc_) + 2 * pairs as u64 + 4
}

/// What one (live) process of the image asks of ckpt: its credentials, those of each
/// thread that has its own, and its limits. `pairs`: the image's pipes, socket pairs and
/// FIFOs (for [`fd_room`]).
pub(crate) fn check_process(proc_: &Process, own: &Own, pairs: usize, problems: &mut Vec<Problem>) {
    let who = format!(
        "process {} ({})",
        proc_.pid,
        String::from_utf8_lossy(&proc_.comm)
    );
    let own_creds = proc_.threads.iter().filter_map(|t| {
        t.creds
            .as_ref()
            .map(|c| (format!("{who}, thread {}", t.tid), c))
    });
    for (who, c) in std::iter::once((who.clone(), &proc_.creds)).chain(own_creds) {
        check_sets(c, &who, problems);
        check_missing_caps(c, own, &who, problems);
        check_changes(c, own, &who, problems);
        check_securebits(c, own, &who, problems);
    }
    check_limits(proc_, own, pairs, &who, problems);
}

/// Capability sets and groups the kernel would accept.
fn check_sets(c: &Creds, who: &str, problems: &mut Vec<Problem>) {
    if c.cap_eff & !c.cap_prm != 0 || c.cap_amb & !(c.cap_prm & c.cap_inh) != 0 {
        p(
            problems,
            "malformed",
            format!(
                "{who}: its effective or ambient capabilities are not all permitted (and \
                 inheritable): the kernel would not allow these capability sets"
            ),
        );
    }
    if c.groups.len() > 65536 {
        p(
            problems,
            "malformed",
            format!("{who}: more supplementary groups than the kernel allows"),
        );
    }
}

/// Capabilities the process has that ckpt cannot give it.
fn check_missing_caps(c: &Creds, own: &Own, who: &str, problems: &mut Vec<Problem>) {
    let o = &own.creds;
    // Capabilities ckpt cannot give. The stub starts with ckpt's sets: the permitted set
    // can only shrink (effective and ambient live inside it), the bounding set only
    // shrink, and a new inheritable capability must be in the bounding set (and, without
    // CAP_SETPCAP, permitted).
    let inh_ok = o.cap_inh | (o.cap_bnd & if own.can(cap::SETPCAP) { !0 } else { o.cap_prm });
    let sets = [
        ("permitted", c.cap_prm & !o.cap_prm),
        ("effective", c.cap_eff & !o.cap_prm),
        ("inheritable", c.cap_inh & !inh_ok),
        ("ambient", c.cap_amb & !o.cap_prm),
        ("bounding", c.cap_bnd & !o.cap_bnd),
    ];
    let mut missing = Vec::new();
    for n in 0..64 {
        let named: Vec<&str> = sets
            .iter()
            .filter(|(_, m)| has(*m, n))
            .map(|(s, _)| *s)
            .collect();
        if named.is_empty() {
            continue;
        }
        let lacks = if !has(o.cap_bnd, n) {
            "not in ckpt's bounding set"
        } else if !has(o.cap_prm, n) {
            "not permitted to ckpt"
        } else {
            "ckpt lacks CAP_SETPCAP to make it inheritable"
        };
        missing.push(format!(
            "{} (in its {} set{}; {lacks})",
            cap_name(n),
            join_and(&named),
            if named.len() == 1 { "" } else { "s" }
        ));
    }
    if !missing.is_empty() && own.euid_root {
        p(
            problems,
            "privilege",
            format!(
                "{who} has {} that ckpt does not hold, and restore cannot give what ckpt \
                 lacks: {}; run ckpt restore as root with {} (in its bounding set: not under \
                 `setpriv --bounding-set -...` or in a container that drops {})",
                if missing.len() == 1 {
                    "a capability"
                } else {
                    "capabilities"
                },
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                if missing.len() == 1 { "it" } else { "them" },
            ),
        );
    }
}

/// The calls that change credentials need capabilities ckpt must hold.
fn check_changes(c: &Creds, own: &Own, who: &str, problems: &mut Vec<Problem>) {
    let o = &own.creds;
    // The calls that change credentials, and what ckpt needs for them.
    let mut needs = Vec::new();
    if c.uid != o.uid {
        needs.push((cap::SETUID, format!("its user IDs {:?}", c.uid)));
    }
    if c.gid != o.gid || c.groups != o.groups {
        needs.push((cap::SETGID, format!("its group IDs {:?} and groups", c.gid)));
    }
    if c.cap_bnd != o.cap_bnd {
        needs.push((cap::SETPCAP, "its bounding set".into()));
    }
    if c.securebits != o.securebits {
        needs.push((
            cap::SETPCAP,
            format!("its securebits ({})", secbits_names(c.securebits)),
        ));
    }
    for (n, what) in needs {
        // (Not as another user: the problem is then that ckpt must run as root.)
        if own.euid_root && !own.can(n) {
            let name = cap_name(n);
            p(
                problems,
                "privilege",
                format!(
                    "{who}: ckpt needs {name} to give it {what} but lacks it: run ckpt \
                     restore as root with {name}"
                ),
            );
        }
    }
}

/// Securebits, keep_caps, ambient raising and no_new_privs: what ckpt's own allow.
fn check_securebits(c: &Creds, own: &Own, who: &str, problems: &mut Vec<Problem>) {
    let o = &own.creds;
    // Securebits: stage goes from ckpt's own to the image's. It may turn keep_caps on
    // for the change of user IDs (unless it is locked), raises ambient capabilities
    // before setting the image's bits, and sets them with PR_SET_SECUREBITS.
    if !secbits_change_allowed(o.securebits, c.securebits) {
        p(
            problems,
            "privilege",
            format!(
                "{who}: its securebits are {}, but ckpt runs with {} (locked bits cannot \
                 change): run ckpt restore without locked securebits",
                secbits_names(c.securebits),
                secbits_names(o.securebits)
            ),
        );
    }
    let uid_change = c.uid != o.uid;
    if uid_change
        && o.securebits & secbit::KEEP_CAPS_LOCKED != 0
        && o.securebits & (secbit::KEEP_CAPS | secbit::NO_SETUID_FIXUP) == 0
    {
        p(
            problems,
            "privilege",
            format!(
                "{who}: ckpt runs with keep_caps locked off, so changing to the process's \
                 user IDs would lose the capabilities it must still set: run ckpt restore \
                 without locked securebits"
            ),
        );
    }
    if c.cap_amb != 0 && o.securebits & secbit::NO_CAP_AMBIENT_RAISE != 0 {
        p(
            problems,
            "privilege",
            format!(
                "{who}: it has ambient capabilities, but ckpt runs with the securebit \
                 no_cap_ambient_raise, which forbids raising them: run ckpt restore without it"
            ),
        );
    }
    if o.no_new_privs && !c.no_new_privs {
        p(
            problems,
            "privilege",
            format!(
                "{who}: it did not have no_new_privs, but ckpt runs with it, and it cannot be \
                 cleared (the process would inherit it): run ckpt restore without no_new_privs \
                 (e.g. not under `setpriv --no-new-privs`)"
            ),
        );
    }
}

/// What a zombie of the image asks of ckpt: its hard limits and its credentials (its
/// stub takes them before it exits).
pub(crate) fn check_zombie(proc_: &Process, own: &Own, problems: &mut Vec<Problem>) {
    let who = format!(
        "zombie {} ({})",
        proc_.pid,
        String::from_utf8_lossy(&proc_.comm)
    );
    check_hard_limits(proc_, own, &who, problems);
    if proc_.zombie.is_some_and(|z| z.creds) {
        // Its securebits and seccomp are not recorded: it keeps ckpt's.
        let c = Creds {
            securebits: own.creds.securebits,
            seccomp: own.creds.seccomp,
            ..proc_.creds.clone()
        };
        check_sets(&c, &who, problems);
        check_missing_caps(&c, own, &who, problems);
        check_changes(&c, own, &who, problems);
        check_securebits(&c, own, &who, problems);
    }
}

/// Hard limits: raising one above ckpt's own needs CAP_SYS_RESOURCE (the stub starts
/// with ckpt's limits); a descriptor limit never goes above fs.nr_open.
fn check_hard_limits(proc_: &Process, own: &Own, who: &str, problems: &mut Vec<Problem>) {
    let raise = own.can(cap::SYS_RESOURCE);
    let nofile = libc::RLIMIT_NOFILE;
    for r in &proc_.rlimits {
        let Some(name) = RLIMIT_NAMES.get(r.resource as usize) else {
            continue;
        };
        let ours = own.hard(r.resource);
        if r.max > ours && !raise {
            p(
                problems,
                "privilege",
                format!(
                    "{who}: its hard limit RLIMIT_{name} is {}, above ckpt's own ({}), and \
                     ckpt cannot raise a hard limit without CAP_SYS_RESOURCE: run ckpt \
                     restore with a hard RLIMIT_{name} of at least {} (it inherits its \
                     parent's: `prlimit --pid $$` shows the shell's) or with CAP_SYS_RESOURCE",
                    limit(r.max),
                    limit(ours),
                    limit(r.max)
                ),
            );
        }
        if r.resource == nofile && r.max > own.nr_open {
            p(
                problems,
                "privilege",
                format!(
                    "{who}: its hard limit RLIMIT_NOFILE is {}, above this host's fs.nr_open \
                     ({}): raise it (`sysctl fs.nr_open={}`) before restoring",
                    limit(r.max),
                    own.nr_open,
                    limit(r.max)
                ),
            );
        }
    }
}

/// Hard resource limits and the descriptor limit restore needs.
fn check_limits(proc_: &Process, own: &Own, pairs: usize, who: &str, problems: &mut Vec<Problem>) {
    check_hard_limits(proc_, own, who, problems);
    let raise = own.can(cap::SYS_RESOURCE);
    let nofile = libc::RLIMIT_NOFILE;
    let room = fd_room(proc_, pairs);
    let ours = own.hard(nofile);
    if room > ours && !raise {
        p(
            problems,
            "privilege",
            format!(
                "{who}: restoring its descriptors needs a descriptor limit of {room}, above \
                 ckpt's hard RLIMIT_NOFILE ({}), which it cannot raise without \
                 CAP_SYS_RESOURCE: run ckpt restore with a hard RLIMIT_NOFILE of at least \
                 {room} or with CAP_SYS_RESOURCE",
                limit(ours)
            ),
        );
    } else if room > own.nr_open {
        p(
            problems,
            "privilege",
            format!(
                "{who}: restoring its descriptors needs a descriptor limit of {room}, above \
                 this host's fs.nr_open ({}): raise it (`sysctl fs.nr_open={room}`)",
                own.nr_open
            ),
        );
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

// ---- restore (stage) ----

/// Give the thread behind `cx` exactly the credentials `c` (the process's, or the
/// thread's own): user and group IDs,
/// groups, the five capability sets, securebits and no_new_privs (plan checked, in
/// `privs`, that ckpt holds everything this needs). Credentials belong to each thread,
/// so stage runs this in every thread of the process, with each thread's (the calls
/// are raw system calls: each changes only the thread it runs in). Returns whether anything changed
/// (the kernel then resets the process's dumpable flag and the thread's parent-death
/// signal: see [`after_creds`]).
///
/// The order matters: the inheritable set first (a capability may be inheritable
/// without being in the bounding set only if it was so before the bounding set
/// shrinks), then the bounding set (dropping needs CAP_SETPCAP), groups and group IDs,
/// the user IDs with keep_caps on (so the permitted set survives leaving root; the
/// effective set is taken back from it), ambient capabilities (before the securebits,
/// which may forbid raising them), the securebits (PR_SET_SECUREBITS needs CAP_SETPCAP,
/// still effective; securebits like no_setuid_fixup and keep_caps only matter for the
/// setuid calls, which are done by then), and last the image's capability sets.
///
/// In a process whose seccomp filters go in first (`seccomp::before_creds`), every call
/// made here runs under them: plan learns them by running this on a `remote::Dry` task
/// and runs the filters on them, so a change here is checked there too.
pub(crate) fn restore_creds(cx: &mut Ctx<'_>, me: &Own, c: &Creds) -> RestoreResult<bool> {
    let o = &me.creds;
    let same = c.uid == o.uid
        && c.gid == o.gid
        && c.groups == o.groups
        && c.cap_eff == o.cap_eff
        && c.cap_prm == o.cap_prm
        && c.cap_inh == o.cap_inh
        && c.cap_bnd == o.cap_bnd
        && c.cap_amb == o.cap_amb
        && c.securebits == o.securebits
        && c.no_new_privs == o.no_new_privs;
    if same {
        return Ok(false);
    }
    if c.no_new_privs && !o.no_new_privs {
        cx.prctl(Prctl::SetNoNewPrivs)?;
    }
    // Everything ckpt may use effective, the image's inheritable set.
    cx.capset(o.cap_prm, o.cap_prm, c.cap_inh)?;
    for cap in 0..64u64 {
        if o.cap_bnd & (1 << cap) != 0 && c.cap_bnd & (1 << cap) == 0 {
            cx.prctl(Prctl::CapBsetDrop(cap))?;
        }
    }
    if c.groups != o.groups {
        cx.set_groups(&c.groups)?;
    }
    if c.gid != o.gid {
        cx.set_gids(&c.gid)?;
    }
    let mut bits = o.securebits;
    if c.uid != o.uid {
        if bits & (secbit::KEEP_CAPS | secbit::NO_SETUID_FIXUP) == 0 {
            cx.prctl(Prctl::SetKeepCaps(true))?;
            bits |= secbit::KEEP_CAPS;
        }
        cx.set_uids(&c.uid)?;
        // Leaving user ID 0 cleared the effective set (the permitted one stayed).
        cx.capset(o.cap_prm, o.cap_prm, c.cap_inh)?;
    }
    if o.cap_amb != 0 {
        cx.prctl(Prctl::CapAmbientClearAll)?;
    }
    for cap in 0..64u64 {
        if c.cap_amb & (1 << cap) != 0 {
            cx.prctl(Prctl::CapAmbientRaise(cap))?;
        }
    }
    if c.securebits != bits {
        if c.securebits ^ bits == secbit::KEEP_CAPS {
            // Only keep_caps differs (ckpt turned it on above): no privilege needed.
            cx.prctl(Prctl::SetKeepCaps(c.securebits & secbit::KEEP_CAPS != 0))?;
        } else {
            cx.prctl(Prctl::SetSecurebits(c.securebits))?;
        }
    }
    cx.capset(c.cap_eff, c.cap_prm, c.cap_inh)?;
    Ok(true)
}

/// Changing a thread's user or group IDs makes the kernel reset the process's dumpable
/// flag (to fs.suid_dumpable) and the thread's parent-death signal: set the image's
/// again (in the main thread; the others were created without one, as at dump only the
/// main thread's is recorded).
pub(crate) fn after_creds(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let m = cx.proc_.misc;
    if m.dumpable == 0 || m.dumpable == 1 {
        cx.prctl(Prctl::SetDumpable(m.dumpable))?;
    }
    cx.prctl(Prctl::SetPdeathsig(m.pdeathsig))?;
    Ok(())
}

#[cfg(test)]
mod tests;
