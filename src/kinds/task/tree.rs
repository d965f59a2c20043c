//! The process tree: parents and children, sessions and process groups, zombies,
//! controlling terminals, PID namespaces.

use std::collections::BTreeMap;

use crate::arch::{self, ThreadArchState};
use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::{Checkpoint, ImageInfo, Process};
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

/// A zombie of the tree: only its IDs and the status its parent will collect.
pub(crate) fn zombie_process(pid: i32) -> Result<Process> {
    let stat = procfs::stat(pid)?;
    Ok(Process {
        pid,
        ppid: stat.field(4) as i32,
        pgid: stat.field(5) as i32,
        sid: stat.field(6) as i32,
        comm: stat.comm.clone(),
        exit_status: Some(stat.field(52) as i32),
        ..Default::default()
    })
}

/// The checkpoint of a collected tree (`processes` in tree order, root first): the
/// image metadata and the architecture header, with the xsave components any process
/// was permitted (`xcomp_perm`) and the root's vDSO (hash, size, vvar size).
pub(crate) fn checkpoint(
    root: i32,
    processes: Vec<Process>,
    xcomp_perm: u64,
    root_vdso: Option<(u64, u64, u64)>,
) -> Checkpoint {
    let (hostname, kernel) = sys::process::uname();
    let threads: Vec<&ThreadArchState> = processes
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| &t.arch))
        .collect();
    // The header records the dump host's real CPU (unmasked): the tasks may have relied on
    // any of it.
    let mut arch_hdr = arch::build_arch_header(&threads, &arch::HostCaps::detect());
    arch_hdr.xcomp_perm = xcomp_perm;
    // The header names the root's vDSO; each process records its own (a mixed tree
    // has a 64-bit and a 32-bit one).
    if let Some((hash, size, vvar)) = root_vdso {
        arch_hdr.vdso_hash = hash;
        arch_hdr.vdso_size = size;
        arch_hdr.vvar_size = vvar;
    }
    Checkpoint {
        info: ImageInfo {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hostname,
            kernel_release: kernel,
            root_pid: root,
        },
        arch: arch_hdr,
        processes,
        pipes: Vec::new(),
        socketpairs: Vec::new(),
        own_pid_namespace: false,
        fifos: Vec::new(),
    }
}

/// The ID in the tree's own PID namespace of every process and thread of `processes`
/// (host ID -> namespace ID).
pub(crate) fn namespace_pids(processes: &[Process]) -> Result<BTreeMap<i32, i32>> {
    let mut map = std::collections::BTreeMap::new();
    for p in processes {
        let local = |v: Vec<i32>| v.last().copied().filter(|&x| x > 0);
        let st = sys::proc::status(p.pid)?;
        let pid = local(st.nspid)
            .ok_or_else(|| unsupported(p.pid, "its ID in its PID namespace cannot be read"))?;
        map.insert(p.pid, pid);
        for t in p.threads.iter().skip(1) {
            let tid = local(sys::proc::thread_nspid(p.pid, t.tid)?).ok_or_else(|| {
                unsupported(
                    p.pid,
                    format!("the namespace ID of thread {} is unknown", t.tid),
                )
            })?;
            map.insert(t.tid, tid);
        }
    }
    Ok(map)
}
