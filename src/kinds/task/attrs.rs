//! Process attributes: resource limits, prctl state, personality, the mm fields
//! (PR_SET_MM_MAP), working directory and root.

use super::query::{slot_bytes, word};
use crate::arch::x86::nr;
use crate::error::DumpResult as Result;
use crate::kinds::fd::file::file_id_checked;
use crate::model::{MmInfo, Rlimit};
use crate::sys::inject::Call;
use crate::sys::proc::{self as procfs, Stat};

// ---- collect (dump) ----

/// Resource limits the kernel has (RLIMIT_CPU = 0 .. RLIMIT_RTTIME = 15).
pub(crate) const RLIM_NLIMITS: u32 = 16;

/// The prctl state, brk and the xsave permissions, asked by the process: its
/// parent-death signal into `slot(first)`, whether it is a child subreaper into
/// `slot(first + 1)`, its ARCH_GET_XCOMP_PERM into `slot(first + 2)`; the dumpable flag
/// and brk are results of their calls.
pub(crate) fn prctl_calls(first: usize, slot: &dyn Fn(usize) -> u64) -> [Call; 5] {
    // Which dynamically enabled xsave components (AMX) the process asked for; an older
    // kernel does not know the call.
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    let n = first;
    [
        Call::new(
            "prctl(PR_GET_PDEATHSIG)",
            nr::PRCTL,
            [libc::PR_GET_PDEATHSIG as u64, slot(n), 0, 0, 0, 0],
        ),
        Call::new(
            "prctl(PR_GET_DUMPABLE)",
            nr::PRCTL,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        ),
        Call::new(
            "prctl(PR_GET_CHILD_SUBREAPER)",
            nr::PRCTL,
            [libc::PR_GET_CHILD_SUBREAPER as u64, slot(n + 1), 0, 0, 0, 0],
        ),
        Call::new("brk(0)", nr::BRK, [0; 6]),
        Call::new(
            "arch_prctl(ARCH_GET_XCOMP_PERM)",
            nr::ARCH_PRCTL,
            [ARCH_GET_XCOMP_PERM, slot(n + 2), 0, 0, 0, 0],
        )
        .may_fail(),
    ]
}

/// One `prlimit64` query per resource, limit `resource` into `slot(first + resource)`.
pub(crate) fn rlimit_calls(first: usize, slot: &dyn Fn(usize) -> u64) -> Vec<Call> {
    // Resource limits, asked by the process about itself: prlimit(PID) from outside
    // needs CAP_SYS_RESOURCE for a process of another user, which even root may lack.
    (0..RLIM_NLIMITS)
        .map(|resource| {
            Call::new(
                "prlimit64",
                nr::PRLIMIT64,
                [
                    0,
                    u64::from(resource),
                    0,
                    slot(first + resource as usize),
                    0,
                    0,
                ],
            )
        })
        .collect()
}

/// The resource limits [`rlimit_calls`] read, from the queries' results `b`.
pub(crate) fn rlimits(b: &[u8], first: usize) -> Vec<Rlimit> {
    (0..RLIM_NLIMITS)
        .map(|resource| {
            let w = slot_bytes(b, first + resource as usize);
            Rlimit {
                resource,
                cur: word(w, 0),
                max: word(w, 1),
            }
        })
        .collect()
}

/// The mm fields of process `pid` (/proc/PID/stat `stat`, its auxv and executable, which
/// must still be found under its path), with `brk` as the process told it.
pub(crate) fn mm_info(pid: i32, stat: &Stat, brk: u64) -> Result<MmInfo> {
    let exe_link = procfs::readlink(&format!("/proc/{pid}/exe"))?;
    let exe = file_id_checked(pid, &format!("/proc/{pid}/exe"), &exe_link, "executable")?;
    Ok(MmInfo {
        start_code: stat.field(26),
        end_code: stat.field(27),
        start_stack: stat.field(28),
        start_data: stat.field(45),
        end_data: stat.field(46),
        start_brk: stat.field(47),
        brk,
        arg_start: stat.field(48),
        arg_end: stat.field(49),
        env_start: stat.field(50),
        env_end: stat.field(51),
        auxv: procfs::auxv(pid)?,
        exe: Some(exe),
    })
}
