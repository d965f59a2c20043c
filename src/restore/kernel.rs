//! Kernel facilities restore relies on: which ones an image needs (derived from its
//! model), whether this kernel has them (cheap probes in `sys::probe` that create
//! nothing lasting), and the problems plan reports when one is missing, so that an
//! older or differently built kernel refuses the image in `ckpt check` instead of
//! failing half-way through a restore.
//!
//! `--cpu-mask`/`CKPT_HOST_MASK` items `no-kernel=NAME` make ckpt treat facility NAME as
//! missing (to exercise each refusal, or to check an image against an older kernel).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Value, json};

use crate::arch::Abi;
use crate::error::Problem;
use crate::model::{Checkpoint, FdKind, VmaKind};
use crate::sys::probe;

/// A kernel facility restore uses for some images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Facility {
    /// clone3 with `set_tid`: every process and thread gets its old ID.
    Clone3SetTid,
    /// `prctl(PR_SET_MM, PR_SET_MM_MAP)`: the memory-map fields and the exe link.
    SetMmMap,
    /// `pidfd_getfd`: descriptors shared between processes or made by ckpt.
    PidfdGetfd,
    /// `arch_prctl(ARCH_MAP_VDSO_64)`: a 64-bit vDSO at its old address.
    MapVdso64,
    /// `arch_prctl(ARCH_MAP_VDSO_32)`: a 32-bit vDSO at its old address.
    MapVdso32,
    /// The `rseq` system call: restartable sequences registered again.
    Rseq,
    /// `prctl(PR_TIMER_CREATE_RESTORE_IDS)`: POSIX timers recreated with their IDs.
    TimerRestoreIds,
    /// `madvise(MADV_GUARD_INSTALL)`: guard regions installed again.
    GuardRegions,
    /// `mmap` with `MAP_DROPPABLE`: droppable memory mapped again as such.
    MapDroppable,
    /// TCP repair mode (`TCP_REPAIR`, `TCP_REPAIR_WINDOW`): established connections.
    TcpRepair,
}

impl Facility {
    pub const ALL: [Facility; 10] = [
        Facility::Clone3SetTid,
        Facility::SetMmMap,
        Facility::PidfdGetfd,
        Facility::MapVdso64,
        Facility::MapVdso32,
        Facility::Rseq,
        Facility::TimerRestoreIds,
        Facility::GuardRegions,
        Facility::MapDroppable,
        Facility::TcpRepair,
    ];

    /// The name in the manifest and in masks (`no-kernel=NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Facility::Clone3SetTid => "clone3-set-tid",
            Facility::SetMmMap => "prctl-set-mm-map",
            Facility::PidfdGetfd => "pidfd-getfd",
            Facility::MapVdso64 => "map-vdso-64",
            Facility::MapVdso32 => "map-vdso-32",
            Facility::Rseq => "rseq",
            Facility::TimerRestoreIds => "timer-restore-ids",
            Facility::GuardRegions => "madv-guard-install",
            Facility::MapDroppable => "map-droppable",
            Facility::TcpRepair => "tcp-repair",
        }
    }

    /// What the kernel must offer, in words, with where it comes from.
    pub fn what(self) -> &'static str {
        match self {
            Facility::Clone3SetTid => "clone3 with set_tid (Linux 5.5 or newer)",
            Facility::SetMmMap => {
                "prctl(PR_SET_MM_MAP) (a kernel built with CONFIG_CHECKPOINT_RESTORE)"
            }
            Facility::PidfdGetfd => "pidfd_getfd (Linux 5.6 or newer)",
            Facility::MapVdso64 => {
                "arch_prctl(ARCH_MAP_VDSO_64) (a kernel built with CONFIG_CHECKPOINT_RESTORE)"
            }
            Facility::MapVdso32 => {
                "arch_prctl(ARCH_MAP_VDSO_32) (a kernel built with CONFIG_CHECKPOINT_RESTORE and IA32 emulation)"
            }
            Facility::Rseq => "the rseq system call (Linux 4.18 or newer)",
            Facility::TimerRestoreIds => {
                "prctl(PR_TIMER_CREATE_RESTORE_IDS) (only recent kernels have it)"
            }
            Facility::GuardRegions => "madvise(MADV_GUARD_INSTALL) (Linux 6.13 or newer)",
            Facility::MapDroppable => "mmap with MAP_DROPPABLE (Linux 6.11 or newer, 64-bit)",
            Facility::TcpRepair => {
                "TCP repair mode with TCP_REPAIR_WINDOW (Linux 4.8 or newer, and CAP_NET_ADMIN)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Facility> {
        Facility::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Ask this kernel (see `sys::probe`).
    fn probe(self) -> Result<(), String> {
        match self {
            Facility::Clone3SetTid => probe::clone3_set_tid(),
            Facility::SetMmMap => probe::set_mm_map(),
            Facility::PidfdGetfd => probe::pidfd_getfd(),
            Facility::MapVdso64 => probe::map_vdso(probe::ARCH_MAP_VDSO_64),
            Facility::MapVdso32 => probe::map_vdso(probe::ARCH_MAP_VDSO_32),
            Facility::Rseq => probe::rseq(),
            Facility::TimerRestoreIds => probe::timer_restore_ids(),
            Facility::GuardRegions => probe::guard_install(),
            Facility::MapDroppable => probe::map_droppable(),
            Facility::TcpRepair => probe::tcp_repair(),
        }
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every facility, probed on this host: `Err(why)` for one it lacks.
pub(crate) fn probe_all() -> Vec<(Facility, Result<(), String>)> {
    Facility::ALL.into_iter().map(|f| (f, f.probe())).collect()
}

/// An unknown facility in a mask.
pub fn unknown_facility(name: &str) -> String {
    format!(
        "unknown kernel facility `{name}` in host mask (known: {})",
        Facility::ALL.map(Facility::name).join(", ")
    )
}

/// The facilities restoring `ckpt` needs, each with why (for people), in a stable order.
pub fn required(ckpt: &Checkpoint) -> Vec<(Facility, String)> {
    let live: Vec<_> = ckpt.processes.iter().filter(|p| !p.is_zombie()).collect();
    let mut out: Vec<(Facility, String)> = Vec::new();
    let mut need = |f: Facility, why: String| {
        if !out.iter().any(|(g, _)| *g == f) {
            out.push((f, why));
        }
    };
    if !ckpt.processes.is_empty() {
        need(
            Facility::Clone3SetTid,
            "every process and thread is recreated with its old ID".into(),
        );
    }
    if !live.is_empty() {
        need(
            Facility::SetMmMap,
            "each process gets its memory-map fields and exe link back".into(),
        );
    }
    let shares = live.len() > 1
        || live.iter().any(|p| {
            p.fds.iter().any(|f| {
                !matches!(
                    f.kind,
                    FdKind::File { .. }
                        | FdKind::Dir { .. }
                        | FdKind::Device { .. }
                        | FdKind::Inherited { .. }
                )
            }) || p.vmas.iter().any(|v| {
                matches!(
                    v.kind,
                    VmaKind::MemfdMap { .. } | VmaKind::DeletedMap { .. }
                )
            })
        });
    if shares {
        need(
            Facility::PidfdGetfd,
            "descriptors are handed between the restored processes and ckpt".into(),
        );
    }
    for p in &live {
        if p.vmas.iter().any(|v| v.kind == VmaKind::Vdso) {
            match p.abi() {
                Abi::X86_64 => need(
                    Facility::MapVdso64,
                    "a 64-bit process had a vDSO, which is mapped again at its old address".into(),
                ),
                Abi::Ia32 => need(
                    Facility::MapVdso32,
                    "a 32-bit process had a vDSO, which is mapped again at its old address".into(),
                ),
            }
        }
    }
    if live
        .iter()
        .any(|p| p.threads.iter().any(|t| t.rseq.is_some()))
    {
        need(
            Facility::Rseq,
            "threads had registered restartable sequences (rseq; glibc does it for every thread)"
                .into(),
        );
    }
    if live.iter().any(|p| !p.posix_timers.is_empty()) {
        need(
            Facility::TimerRestoreIds,
            "a process had POSIX timers, which must get their old IDs".into(),
        );
    }
    if live
        .iter()
        .any(|p| p.vmas.iter().any(|v| !v.guard_ranges.is_empty()))
    {
        need(
            Facility::GuardRegions,
            "a process had guard regions (MADV_GUARD_INSTALL)".into(),
        );
    }
    if live
        .iter()
        .any(|p| p.vmas.iter().any(crate::kinds::mem::is_droppable))
    {
        need(
            Facility::MapDroppable,
            "a process had droppable memory (MAP_DROPPABLE)".into(),
        );
    }
    if live.iter().any(|p| !p.tcp_connections().is_empty()) {
        need(
            Facility::TcpRepair,
            "a process had established TCP connections, rebuilt in repair mode".into(),
        );
    }
    out.sort_by_key(|(f, _)| *f);
    out
}

/// The manifest entries (`ckpt check --json`, `requirements.kernel`) for `required`.
pub fn manifest(required: &[(Facility, String)]) -> Vec<Value> {
    required
        .iter()
        .map(|(f, why)| json!({ "name": f.name(), "needs": f.what(), "why": why }))
        .collect()
}

/// Probe each facility the image needs (those in `masked` count as missing) and report
/// every missing one.
pub fn missing(
    required: &[(Facility, String)],
    masked: &BTreeSet<Facility>,
) -> Vec<(Facility, Problem)> {
    let mut out = Vec::new();
    for (f, why) in required {
        let missing = if masked.contains(f) {
            Some("hidden by this host's mask".to_string())
        } else {
            f.probe().err()
        };
        if let Some(answer) = missing {
            out.push((
                *f,
                Problem {
                    code: "kernel-facility-missing",
                    message: format!(
                        "this kernel lacks {} ({answer}), which restore needs because {why}; \
                     restore the image on a host whose kernel has it",
                        f.what()
                    ),
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Facility::ALL {
            assert_eq!(Facility::from_name(f.name()), Some(f));
        }
        assert_eq!(Facility::from_name("rseq2"), None);
        assert!(unknown_facility("x").contains("timer-restore-ids"));
    }

    #[test]
    fn masked_facilities_are_refused_and_present_ones_pass() {
        let req = vec![
            (Facility::Rseq, "threads had rseq".to_string()),
            (Facility::GuardRegions, "guards".to_string()),
        ];
        assert!(missing(&req, &BTreeSet::new()).is_empty());
        let p = missing(&req, &BTreeSet::from([Facility::GuardRegions]));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, Facility::GuardRegions);
        assert_eq!(p[0].1.code, "kernel-facility-missing");
        assert!(
            p[0].1.message.contains("MADV_GUARD_INSTALL") && p[0].1.message.contains("mask"),
            "{}",
            p[0].1.message
        );
    }
}
