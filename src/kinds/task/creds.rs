//! Credentials: user and group IDs, supplementary groups, capabilities, securebits (per
//! thread), and what ckpt's own privileges allow.

use crate::arch::x86::nr;
use crate::error::RestoreResult as Result;
use crate::remote::Ctx;
// Layering leak (to fix at merge): privs moves to kinds::task::creds.
use crate::restore::privs;

// ---- restore (stage) ----

/// Give the thread behind `cx.inj` exactly the image's credentials: user and group IDs,
/// groups, the five capability sets, securebits and no_new_privs (plan checked, in
/// `privs`, that ckpt holds everything this needs). Credentials belong to each thread,
/// so stage runs this in every thread of the process. Returns whether anything changed
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
pub(crate) fn restore_creds(cx: &mut Ctx<'_>, me: &privs::Own) -> Result<bool> {
    let c = &cx.proc_.creds;
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
        cx.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            nr::PRCTL,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    // Everything ckpt may use effective, the image's inheritable set.
    capset(cx, o.cap_prm, o.cap_prm, c.cap_inh)?;
    for cap in 0..64u64 {
        if o.cap_bnd & (1 << cap) != 0 && c.cap_bnd & (1 << cap) == 0 {
            cx.call(
                "drop capability from bounding set",
                nr::PRCTL,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
            )?;
        }
    }
    if c.groups != o.groups {
        let mut g = Vec::new();
        for x in &c.groups {
            g.extend_from_slice(&x.to_le_bytes());
        }
        let a = cx.put(0, &g)?;
        cx.call(
            "setgroups",
            nr::SETGROUPS,
            [c.groups.len() as u64, a, 0, 0, 0, 0],
        )?;
    }
    if c.gid != o.gid {
        cx.call("setresgid", nr::SETRESGID, resid_args(&c.gid))?;
        cx.call(
            "setfsgid",
            nr::SETFSGID,
            [u64::from(c.gid[3]), 0, 0, 0, 0, 0],
        )?;
    }
    let mut bits = o.securebits;
    if c.uid != o.uid {
        if bits & (privs::secbit::KEEP_CAPS | privs::secbit::NO_SETUID_FIXUP) == 0 {
            cx.call(
                "prctl(PR_SET_KEEPCAPS)",
                nr::PRCTL,
                [libc::PR_SET_KEEPCAPS as u64, 1, 0, 0, 0, 0],
            )?;
            bits |= privs::secbit::KEEP_CAPS;
        }
        cx.call("setresuid", nr::SETRESUID, resid_args(&c.uid))?;
        cx.call(
            "setfsuid",
            nr::SETFSUID,
            [u64::from(c.uid[3]), 0, 0, 0, 0, 0],
        )?;
        // Leaving user ID 0 cleared the effective set (the permitted one stayed).
        capset(cx, o.cap_prm, o.cap_prm, c.cap_inh)?;
    }
    if o.cap_amb != 0 {
        cx.call(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            nr::PRCTL,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                0,
                0,
                0,
                0,
            ],
        )?;
    }
    for cap in 0..64u64 {
        if c.cap_amb & (1 << cap) != 0 {
            cx.call(
                "raise ambient capability",
                nr::PRCTL,
                [
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    if c.securebits != bits {
        if c.securebits ^ bits == privs::secbit::KEEP_CAPS {
            // Only keep_caps differs (ckpt turned it on above): no privilege needed.
            let on = u64::from(c.securebits & privs::secbit::KEEP_CAPS != 0);
            cx.call(
                "prctl(PR_SET_KEEPCAPS)",
                nr::PRCTL,
                [libc::PR_SET_KEEPCAPS as u64, on, 0, 0, 0, 0],
            )?;
        } else {
            cx.call(
                "prctl(PR_SET_SECUREBITS)",
                nr::PRCTL,
                [
                    libc::PR_SET_SECUREBITS as u64,
                    u64::from(c.securebits),
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    capset(cx, c.cap_eff, c.cap_prm, c.cap_inh)?;
    Ok(true)
}

/// capset(2), version 3 (64-bit sets), for the thread behind `cx.inj`.
fn capset(cx: &mut Ctx<'_>, eff: u64, prm: u64, inh: u64) -> Result<()> {
    // header {version, pid}, then two data structs {effective, permitted, inheritable}.
    let mut b = Vec::new();
    b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    for shift in [0, 32] {
        for v in [eff, prm, inh] {
            b.extend_from_slice(&((v >> shift) as u32).to_le_bytes());
        }
    }
    let a = cx.put(0, &b)?;
    cx.call("capset", nr::CAPSET, [a, a + 8, 0, 0, 0, 0])?;
    Ok(())
}

/// Changing a thread's user or group IDs makes the kernel reset the process's dumpable
/// flag (to fs.suid_dumpable) and the thread's parent-death signal: set the image's
/// again (in the main thread; the others were created without one, as at dump only the
/// main thread's is recorded).
pub(crate) fn after_creds(cx: &mut Ctx<'_>) -> Result<()> {
    let m = cx.proc_.misc;
    if m.dumpable == 0 || m.dumpable == 1 {
        cx.call(
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            [libc::PR_SET_DUMPABLE as u64, m.dumpable as u64, 0, 0, 0, 0],
        )?;
    }
    cx.call(
        "prctl(PR_SET_PDEATHSIG)",
        nr::PRCTL,
        [
            libc::PR_SET_PDEATHSIG as u64,
            m.pdeathsig as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    Ok(())
}

/// The arguments of setresuid/setresgid: real, effective and saved ids (the fourth, the
/// filesystem id, has its own call).
fn resid_args(ids: &[u32; 4]) -> [u64; 6] {
    [
        u64::from(ids[0]),
        u64::from(ids[1]),
        u64::from(ids[2]),
        0,
        0,
        0,
    ]
}
