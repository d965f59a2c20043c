//! Plan: decode the image's metadata and check every requirement against this host,
//! collecting *all* problems, before anything is created.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use xxhash_rust::xxh3::xxh3_64;

use super::{Problem, RestoreError, Result};
use crate::arch::{self, Abi, ArchHeader};
use crate::image::{ImageReader, decode_meta, tag};
use crate::model::{Checkpoint, FdKind, FileId, Process, VmaKind};
use crate::sys::{self, proc as procfs};

/// Highest user address + 1 with 4-level paging on x86-64.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const MAX_VMAS: usize = 65_530;
const MAX_FD: i32 = 1 << 20;
const MAX_THREADS: usize = 1 << 16;
const MAX_PROCESSES: usize = 1 << 15;
/// Largest pipe capacity accepted (the kernel's default pipe-max-size is 1 MiB).
const MAX_PIPE: usize = 16 << 20;
/// Most inotify watches per instance accepted (restore may skip wd numbers up to it).
pub const MAX_WATCHES: usize = 1 << 14;
/// Largest queued socket message, and most messages per socket (as dump reads them).
const MAX_MESSAGE: usize = sys::sockdiag::MAX_MESSAGE;
const MAX_MESSAGES: usize = sys::sockdiag::MAX_MESSAGES;

pub struct Plan {
    pub ckpt: Checkpoint,
    /// `--inherit-fd` pairs (ckpt's descriptor, external resource key).
    pub inherit: Vec<(i32, String)>,
    pub problems: Vec<Problem>,
    /// Each thread's xsave area converted to this host's layout, by TID.
    pub xsave: std::collections::BTreeMap<i32, Vec<u8>>,
    /// Ask for the AMX permission the image's processes had (ARCH_REQ_XCOMP_PERM): they
    /// had it and this host can grant it (under `--cpu-policy=ignore` a host that cannot
    /// is accepted, and the processes are restored without it).
    pub request_amx: bool,
}

/// What restore may assume of this host, and how strictly it compares.
#[derive(Debug, Clone)]
pub struct HostView {
    pub host: arch::HostCaps,
    pub policy: arch::CpuPolicy,
    /// The tree goes into a new PID namespace (`restore --new-pidns`): its IDs need not
    /// be free on this host.
    pub new_pid_namespace: bool,
    /// `--inherit-fd N:KEY`: ckpt's own descriptor N takes the place of the image's
    /// external resource KEY (see `FdKind::External`).
    pub inherit: Vec<(i32, String)>,
}

impl HostView {
    /// This host as detected, with the features named by CKPT_HOST_MASK (and `mask`)
    /// taken away.
    pub fn detect(
        mask: Option<&str>,
        policy: arch::CpuPolicy,
    ) -> std::result::Result<Self, String> {
        let host = arch::HostCaps::detect_with_env_mask().map_err(|e| e.to_string())?;
        let host = match mask {
            Some(m) if !m.trim().is_empty() => host.masked(m).map_err(|e| e.to_string())?,
            _ => host,
        };
        if let Some(k) = host
            .masked_kernel
            .iter()
            .find(|k| super::kernel::Facility::from_name(k).is_none())
        {
            return Err(super::kernel::unknown_facility(k));
        }
        Ok(Self {
            host,
            policy,
            new_pid_namespace: false,
            inherit: Vec::new(),
        })
    }
}

/// The host's vDSO: (hash of its text, text size, size of the vvar pages before it).
pub fn host_vdso() -> Option<(u64, u64, u64)> {
    let me = std::process::id() as i32;
    let maps = procfs::maps(me).ok()?;
    let vdso = maps.iter().find(|m| m.path == b"[vdso]")?;
    let vvar: u64 = maps
        .iter()
        .filter(|m| m.path == b"[vvar]" || m.path == b"[vvar_vclock]")
        .map(|m| m.end - m.start)
        .sum();
    let code = sys::process::read_own(vdso.start, (vdso.end - vdso.start) as usize).ok()?;
    Some((xxh3_64(&code), vdso.end - vdso.start, vvar))
}

/// This kernel's 32-bit vDSO: (hash of its text, text size), mapped once in a throwaway
/// child (`sys::probe::vdso32`) and remembered.
pub fn host_vdso32() -> std::result::Result<(u64, u64), String> {
    static V: std::sync::OnceLock<std::result::Result<(u64, u64), String>> =
        std::sync::OnceLock::new();
    V.get_or_init(|| sys::probe::vdso32().map_err(|e| e.to_string()))
        .clone()
}

/// Read the image up to and including its metadata record.
pub fn read_checkpoint<R: Read>(reader: &mut ImageReader<R>) -> Result<Checkpoint> {
    let rec = reader.next_record()?.ok_or(RestoreError::Malformed(
        "the image has no checkpoint record".into(),
    ))?;
    if rec.tag != tag::CHECKPOINT {
        return Err(RestoreError::Malformed(format!(
            "the image starts with a {} record instead of the checkpoint metadata",
            tag::name(rec.tag)
        )));
    }
    Ok(decode_meta(rec.tag, rec.payload)?)
}

fn p(problems: &mut Vec<Problem>, code: &'static str, message: String) {
    problems.push(Problem { code, message });
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Structural checks: an image that passes them cannot make restore misbehave, whatever
/// its origin.
fn check_structure(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let procs = &ckpt.processes;
    if procs.is_empty() || procs.len() > MAX_PROCESSES {
        p(
            problems,
            "malformed",
            format!("the image holds {} processes", procs.len()),
        );
        return;
    }
    let root = &procs[0];
    if ckpt.own_pid_namespace && root.pid != 1 {
        p(
            problems,
            "malformed",
            format!(
                "the tree has a PID namespace of its own but its root is PID {}, not 1",
                root.pid
            ),
        );
    }
    let mut ids = BTreeSet::new();
    for (i, q) in procs.iter().enumerate() {
        check_process(q, &mut ids, problems);
        if i == 0 {
            if q.is_zombie() {
                p(problems, "malformed", "the root process is a zombie".into());
            }
            if procs.iter().any(|x| x.pid == q.ppid) {
                p(
                    problems,
                    "malformed",
                    "the root process has a parent in the image".into(),
                );
            }
            continue;
        }
        match procs[..i].iter().find(|x| x.pid == q.ppid) {
            Some(parent) if !parent.is_zombie() => {
                if q.sid != q.pid && q.sid != parent.sid {
                    p(
                        problems,
                        "malformed",
                        format!("process {} is in another session than its parent", q.pid),
                    );
                }
            }
            _ => p(
                problems,
                "malformed",
                format!(
                    "process {} has no (living) parent earlier in the image",
                    q.pid
                ),
            ),
        }
    }
    // epoll instances watch descriptors of their own process.
    for q in procs {
        for f in &q.fds {
            if let FdKind::Epoll { targets, .. } = &f.kind {
                for t in targets {
                    if !q.fds.iter().any(|g| g.fd == t.fd) || targets.len() > 1 << 20 {
                        p(
                            problems,
                            "malformed",
                            format!(
                                "epoll descriptor {} of process {} watches a missing \
                                 descriptor {}",
                                f.fd, q.pid, t.fd
                            ),
                        );
                    }
                }
            }
        }
    }
    // Pipes: every end refers to a pipe of the image, whose data fits its capacity.
    let mut pipe_ids = BTreeSet::new();
    for pipe in &ckpt.pipes {
        if !pipe_ids.insert(pipe.id)
            || pipe.capacity as usize > MAX_PIPE
            || pipe.data.len() > pipe.capacity as usize
        {
            p(problems, "malformed", format!("invalid pipe {}", pipe.id));
        }
    }
    for q in procs {
        for f in &q.fds {
            if let FdKind::Pipe { id, .. } = f.kind {
                if !pipe_ids.contains(&id) {
                    p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} is an unknown pipe",
                            f.fd, q.pid
                        ),
                    );
                }
            }
        }
    }
    // FIFOs: every descriptor refers to a FIFO pipe of the image, whose data fits.
    let mut fifo_ids = BTreeSet::new();
    for ff in &ckpt.fifos {
        if !fifo_ids.insert(ff.id)
            || ff.capacity as usize > MAX_PIPE
            || ff.data.len() > ff.capacity as usize
        {
            p(problems, "malformed", format!("invalid FIFO {}", ff.id));
        }
    }
    for q in procs {
        for f in &q.fds {
            if let FdKind::Fifo { id, .. } = f.kind {
                if !fifo_ids.contains(&id) {
                    p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} is an unknown FIFO",
                            f.fd, q.pid
                        ),
                    );
                }
            }
            if let FdKind::Inotify { watches, .. } = &f.kind {
                if watches.len() > MAX_WATCHES
                    || watches.first().is_some_and(|w| w.wd < 1)
                    || watches.windows(2).any(|w| w[0].wd >= w[1].wd)
                    || watches
                        .iter()
                        .any(|w| w.path.is_empty() || w.path.len() > 4096)
                {
                    p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} has invalid inotify watches",
                            f.fd, q.pid
                        ),
                    );
                }
            }
            // Locks only on descriptors reopened by path, with sane ranges.
            let lockable = matches!(f.kind, FdKind::File { .. } | FdKind::Dir { .. });
            if f.locks.len() > 1 << 16
                || (!f.locks.is_empty() && !lockable)
                || f.locks.iter().any(|l| {
                    l.end.is_some_and(|e| e < l.start || e >= i64::MAX as u64)
                        || l.start > i64::MAX as u64
                })
            {
                p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} has invalid file locks",
                        f.fd, q.pid
                    ),
                );
            }
        }
    }
    let mut pair_ids = BTreeSet::new();
    for sp in &ckpt.socketpairs {
        let msgs_ok = |m: &[crate::model::SockMessage]| {
            m.len() <= MAX_MESSAGES
                && m.iter()
                    .all(|x| x.data.len() <= MAX_MESSAGE && x.from.len() <= 128)
                && m.iter().map(|x| x.data.len()).sum::<usize>() <= MAX_PIPE
        };
        let typ_ok = [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sp.typ);
        // Stream pairs carry bytes, the others messages: never both.
        let no_msgs = sp.msgs0.is_empty() && sp.msgs1.is_empty();
        let no_bytes = sp.data0.is_empty() && sp.data1.is_empty();
        let kind_ok = if sp.typ == libc::SOCK_STREAM {
            no_msgs
        } else {
            no_bytes
        };
        if !pair_ids.insert(sp.id)
            || !typ_ok
            || !kind_ok
            || sp.data0.len() > MAX_PIPE
            || sp.data1.len() > MAX_PIPE
            || !msgs_ok(&sp.msgs0)
            || !msgs_ok(&sp.msgs1)
        {
            p(
                problems,
                "malformed",
                format!("invalid socket pair {}", sp.id),
            );
        }
    }
    // Names of the image's unix datagram sockets (connections and message senders must
    // be among them), each bound once.
    let mut dgram_names = BTreeSet::new();
    for f in procs.iter().flat_map(|q| q.fds.iter()) {
        if let FdKind::UnixDgram { sock, .. } = &f.kind {
            if f.shared_with.is_none()
                && !sock.name.is_empty()
                && !dgram_names.insert(&sock.name[..])
            {
                p(
                    problems,
                    "malformed",
                    "two unix datagram sockets are bound to one name".into(),
                );
            }
        }
    }
    for q in procs {
        for f in &q.fds {
            match &f.kind {
                FdKind::UnixPair { id, end, .. } if !pair_ids.contains(id) || *end > 1 => p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an unknown socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::UnixDgram { sock: u, .. } if !unix_dgram_ok(u, &dgram_names) => p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid unix datagram socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::Udp { sock: u, .. } if !udp_ok(u) => p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid UDP socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::UnixListen { name, .. } if name.is_empty() || name.len() > 107 => p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} has an invalid socket name",
                        f.fd, q.pid
                    ),
                ),
                _ => {}
            }
        }
    }
    // Shared descriptions must point back at a descriptor restored before.
    for (i, q) in procs.iter().enumerate() {
        for f in &q.fds {
            let Some((op, ofd)) = f.shared_with else {
                continue;
            };
            let ok = procs[..=i].iter().any(|o| {
                o.pid == op
                    && (o.pid != q.pid || ofd < f.fd)
                    && o.fds.iter().any(|g| {
                        g.fd == ofd
                            && g.shared_with.is_none()
                            && !matches!(g.kind, FdKind::Inherited { .. })
                    })
            });
            if !ok {
                p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} shares a file with a descriptor that \
                         is not restored before it",
                        f.fd, q.pid
                    ),
                );
            }
        }
    }
    for q in procs {
        if q.sid == q.pid && q.pgid != q.pid {
            p(
                problems,
                "malformed",
                format!("session leader {} is not its group's leader", q.pid),
            );
        }
        let outside_group = q.pgid == root.pgid && root.pgid != root.pid && q.sid == root.sid;
        let leader_here = procs
            .iter()
            .any(|l| l.pid == q.pgid && l.pgid == l.pid && l.sid == q.sid);
        if !outside_group && !leader_here {
            p(
                problems,
                "unsupported",
                format!(
                    "process {} is in process group {}, whose leader is not part of the \
                     image; dump from that group's leader",
                    q.pid, q.pgid
                ),
            );
        }
    }
}

/// Structural checks of one process.
fn check_process(proc_: &Process, ids: &mut BTreeSet<i32>, problems: &mut Vec<Problem>) {
    if proc_.pid <= 0 || !ids.insert(proc_.pid) {
        p(problems, "malformed", format!("invalid PID {}", proc_.pid));
    }
    if proc_.is_zombie() {
        if !proc_.threads.is_empty() || !proc_.vmas.is_empty() || !proc_.fds.is_empty() {
            p(
                problems,
                "malformed",
                format!("zombie {} has state", proc_.pid),
            );
        }
        return;
    }
    if proc_.threads.first().map(|t| t.tid) != Some(proc_.pid) {
        p(
            problems,
            "malformed",
            "the image's process has no main thread".into(),
        );
    }
    for t in proc_.threads.iter().skip(1) {
        if t.tid <= 0 || !ids.insert(t.tid) {
            p(
                problems,
                "malformed",
                format!("invalid thread ID {}", t.tid),
            );
        }
    }
    let mut resources = BTreeSet::new();
    for r in &proc_.rlimits {
        if r.resource as usize >= super::privs::RLIMIT_NAMES.len()
            || !resources.insert(r.resource)
            || r.cur > r.max
        {
            p(
                problems,
                "malformed",
                format!(
                    "process {}: invalid resource limit {} ({}/{})",
                    proc_.pid, r.resource, r.cur, r.max
                ),
            );
        }
    }
    if proc_.threads.len() > MAX_THREADS {
        p(problems, "malformed", "too many threads".into());
    }
    if proc_.vmas.len() > MAX_VMAS {
        p(problems, "malformed", "too many memory areas".into());
    }
    let mut prev_end = 0;
    for v in &proc_.vmas {
        let ok = v.start % 4096 == 0
            && v.end % 4096 == 0
            && v.start < v.end
            && v.end <= TASK_SIZE
            && v.start >= prev_end
            && v.offset % 4096 == 0
            && v.prot & !7 == 0
            && v.pages_present <= (v.end - v.start) / 4096
            && v.guard_ranges.iter().all(|g| {
                g.0 % 4096 == 0 && g.1 % 4096 == 0 && g.0 < g.1 && g.0 >= v.start && g.1 <= v.end
            });
        if !ok {
            p(
                problems,
                "malformed",
                format!(
                    "memory area {:#x}-{:#x} is invalid (unaligned, overlapping or out of range)",
                    v.start, v.end
                ),
            );
        }
        prev_end = v.end;
    }
    let mut seen = BTreeSet::new();
    for f in &proc_.fds {
        if f.fd < 0 || f.fd >= MAX_FD || !seen.insert(f.fd) {
            p(
                problems,
                "malformed",
                format!("invalid file descriptor number {}", f.fd),
            );
        }
        if let FdKind::External { key, .. } = &f.kind {
            if key.is_empty() || key.len() > 256 || f.shared_with.is_some() {
                p(
                    problems,
                    "malformed",
                    format!("file descriptor {} is an invalid external resource", f.fd),
                );
            }
        }
        if matches!(f.kind, FdKind::Inherited { .. }) && f.fd > 2 {
            p(
                problems,
                "malformed",
                format!(
                    "file descriptor {} cannot be inherited (only 0-2 can)",
                    f.fd
                ),
            );
        }
    }
    for s in &proc_.sigactions {
        if s.signo == 0 || s.signo > 64 || s.signo == 9 || s.signo == 19 {
            p(
                problems,
                "malformed",
                format!("invalid signal number {}", s.signo),
            );
        }
    }
    for t in &proc_.threads {
        if t.arch.xsave.len() > 1 << 16 || t.arch.xsave.len() < 576 {
            p(problems, "malformed", "invalid xsave area size".into());
        }
        for s in &t.pending {
            if s.siginfo.len() != 128 || s.signo == 0 || s.signo > 64 {
                p(problems, "malformed", "invalid pending signal".into());
            }
        }
    }
    for s in &proc_.shared_pending {
        if s.siginfo.len() != 128 || s.signo == 0 || s.signo > 64 {
            p(problems, "malformed", "invalid pending signal".into());
        }
    }
    if proc_.mm.auxv.len() > 128 || proc_.comm.len() > 64 {
        p(problems, "malformed", "invalid auxv or process name".into());
    }
}

/// The process's vDSO must be this kernel's. `vdso32`: compare a 32-bit one (false when
/// this kernel cannot map one, which is reported as a missing kernel facility).
fn check_arch(hdr: &ArchHeader, proc_: &Process, vdso32: bool, problems: &mut Vec<Problem>) {
    let has_vdso = proc_.vmas.iter().any(|v| v.kind == VmaKind::Vdso);
    // An ia32 process's 32-bit vDSO: ckpt, a 64-bit program, has none of its own; a
    // throwaway child maps this kernel's (`host_vdso32`). Stage compares it again once
    // mapped in the process.
    if has_vdso && proc_.abi() == Abi::Ia32 && vdso32 && proc_.vdso_size != 0 {
        match host_vdso32() {
            Err(e) => p(
                problems,
                "vdso",
                format!(
                    "cannot read this kernel's 32-bit vDSO to compare it with the image's: {e}"
                ),
            ),
            Ok((hash, size)) => {
                if hash != proc_.vdso_hash || size != proc_.vdso_size {
                    p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's 32-bit vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, proc_.vdso_size
                        ),
                    );
                }
            }
        }
    }
    if has_vdso && proc_.abi() == Abi::X86_64 {
        // Images from before per-process vDSO identity carry it in the header only.
        let (want_hash, want_size) = if proc_.vdso_size != 0 {
            (proc_.vdso_hash, proc_.vdso_size)
        } else {
            (hdr.vdso_hash, hdr.vdso_size)
        };
        let want_vvar: u64 = proc_
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::Vvar)
            .map(|v| v.len())
            .sum();
        match host_vdso() {
            None => p(
                problems,
                "vdso",
                "this host has no vDSO, but the image's task used one".into(),
            ),
            Some((hash, size, vvar)) => {
                if hash != want_hash || size != want_size {
                    p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO differs from the one process {} used \
                             ({} bytes here, {} in the image); the program may hold pointers \
                             into it, so it cannot be restored on this kernel: restore it on a \
                             host running the kernel it was dumped on",
                            proc_.pid, size, want_size
                        ),
                    );
                } else if vvar != want_vvar {
                    p(
                        problems,
                        "vdso-differs",
                        format!(
                            "this kernel's vDSO data area is {vvar} bytes, the image's {want_vvar}"
                        ),
                    );
                }
            }
        }
    }
}

/// A listening socket's name must be free: no one may listen there now, and a path may
/// hold at most a stale socket file (which restore replaces).
fn check_listen_name(name: &[u8], fd: i32, problems: &mut Vec<Problem>) {
    let shown = match name.split_first() {
        Some((0, rest)) => format!("@{}", show(rest)),
        _ => show(name),
    };
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks.values().any(|s| {
            s.state == crate::sys::sockdiag::STATE_LISTEN && s.name.as_deref() == Some(name)
        }) {
            p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: another process listens on unix socket {shown}"),
            );
            return;
        }
    }
    if name.first() == Some(&b'/') {
        let path = procfs::bytes_path(name);
        match std::fs::symlink_metadata(path) {
            Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: {shown} exists and is not a socket"),
            ),
            _ => {}
        }
        if !path.parent().is_some_and(|d| d.is_dir()) {
            p(
                problems,
                "file-missing",
                format!("descriptor {fd}: the directory of unix socket {shown} does not exist"),
            );
        }
    }
}

/// A FIFO must not be open by anyone at restore: its pipe would be shared with them
/// (and the data put back would mix with theirs).
fn check_fifo_unused(id: &FileId, what: &str, problems: &mut Vec<Problem>) {
    let Ok(m) = std::fs::metadata(procfs::bytes_path(&id.path)) else {
        return;
    };
    if let Some(q) = procfs::holders_of(m.dev(), m.ino()).first() {
        p(
            problems,
            "fifo-busy",
            format!(
                "{what} {} is open by process {q} now; restore needs it unused",
                show(&id.path)
            ),
        );
    }
}

/// A unix datagram socket record that restore can build: names that fit a sockaddr_un,
/// a peer and message senders among the image's sockets, bounded messages, and a name
/// to send them to.
fn unix_dgram_ok(u: &crate::model::UnixDgramState, names: &BTreeSet<&[u8]>) -> bool {
    let name_ok = |n: &[u8]| n.len() <= 107 && (n.is_empty() || n[0] == 0 || n[0] == b'/');
    name_ok(&u.name)
        && name_ok(&u.peer_name)
        && (u.peer_name.is_empty() || names.contains(&u.peer_name[..]))
        && (u.msgs.is_empty() || !u.name.is_empty())
        && u.msgs.len() <= MAX_MESSAGES
        && u.msgs.iter().all(|m| {
            m.data.len() <= MAX_MESSAGE
                && (m.from.is_empty() || names.contains(&m.from[..]))
                && (u.peer_name.is_empty() || m.from == u.peer_name)
        })
        && u.msgs.iter().map(|m| m.data.len()).sum::<usize>() <= MAX_PIPE
}

/// A UDP socket record that restore can build: IPv4 or IPv6 addresses of the right
/// size, bounded queued datagrams with sources of the same family.
fn udp_ok(u: &crate::model::UdpState) -> bool {
    let len = match u.family {
        libc::AF_INET => 16,
        libc::AF_INET6 => 28,
        _ => return false,
    };
    u.local.len() == len
        && (u.peer.is_empty() || u.peer.len() == len)
        && u.msgs.len() <= MAX_MESSAGES
        && u.msgs.iter().all(|m| {
            m.data.len() <= sys::udp::MAX_DATAGRAM
                && m.from.len() == len
                && m.from.get(0..2) == Some(&(u.family as u16).to_ne_bytes()[..])
        })
        && u.msgs.iter().map(|m| m.data.len()).sum::<usize>() <= MAX_PIPE
}

/// A bound UDP socket's address must be free here (sockets with SO_REUSEADDR or
/// SO_REUSEPORT may share it; those are left to the kernel at restore).
fn check_udp_addr(u: &crate::model::UdpState, fd: i32, problems: &mut Vec<Problem>) {
    if u.opts.reuseaddr || u.opts.reuseport {
        return;
    }
    let Some(addr) = inet_addr(&u.local) else {
        return;
    };
    if addr.port() == 0 {
        return;
    }
    if let Err(e) = std::net::UdpSocket::bind(addr) {
        p(
            problems,
            "address-in-use",
            format!("descriptor {fd}: UDP address {addr} cannot be bound here: {e}"),
        );
    }
}

/// The locks the process held must be free now: none held by anyone else that would
/// conflict (flock with flock; POSIX and OFD locks with each other, on overlapping
/// ranges; a write lock with anything).
fn check_locks(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.fds.iter().all(|f| f.locks.is_empty()) {
        return;
    }
    let all = match procfs::all_locks() {
        Ok(a) => a,
        Err(e) => {
            p(
                problems,
                "host",
                format!("cannot read the file locks of this host (/proc/locks): {e}"),
            );
            return;
        }
    };
    for f in &proc_.fds {
        let file = match &f.kind {
            FdKind::File { file, .. } | FdKind::Dir { file, .. } => file,
            _ => continue,
        };
        let Ok(m) = std::fs::metadata(procfs::bytes_path(&file.path)) else {
            continue; // reported by the file checks
        };
        let (maj, min) = (libc::major(m.dev()), libc::minor(m.dev()));
        for l in &f.locks {
            let flock = l.kind == crate::model::LockKind::Flock;
            let conflict = all.iter().find(|o| {
                !o.blocked
                    && o.dev == (maj, min)
                    && o.ino == m.ino()
                    && if flock {
                        o.class == "FLOCK"
                    } else {
                        o.class == "POSIX" || o.class == "OFDLCK"
                    }
                    && (l.write || o.mode == "WRITE")
                    && o.start <= l.end.unwrap_or(u64::MAX)
                    && l.start <= o.end.unwrap_or(u64::MAX)
            });
            if let Some(o) = conflict {
                let range = match l.end {
                    _ if flock => String::new(),
                    Some(e) => format!(" on bytes {}-{e}", l.start),
                    None => format!(" on bytes {}-EOF", l.start),
                };
                p(
                    problems,
                    "lock-taken",
                    format!(
                        "file descriptor {} of process {}: its {} {} lock{range} on {} \
                         conflicts with a {} {} lock held now (by process {})",
                        f.fd,
                        proc_.pid,
                        l.kind.name(),
                        if l.write { "write" } else { "read" },
                        show(&file.path),
                        o.class,
                        o.mode,
                        o.pid
                    ),
                );
            }
        }
    }
}

/// A raw sockaddr_in / sockaddr_in6 as a std address.
fn inet_addr(raw: &[u8]) -> Option<std::net::SocketAddr> {
    let fam = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    if i32::from(fam) == libc::AF_INET {
        let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
        Some((std::net::Ipv4Addr::from(ip), port).into())
    } else if i32::from(fam) == libc::AF_INET6 {
        let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
        Some((std::net::Ipv6Addr::from(ip), port).into())
    } else {
        None
    }
}

/// Every external resource of the process must be given with `--inherit-fd N:KEY`, with
/// N open in ckpt.
fn check_external(proc_: &Process, inherit: &[(i32, String)], problems: &mut Vec<Problem>) {
    for f in &proc_.fds {
        let FdKind::External { key, .. } = &f.kind else {
            continue;
        };
        match inherit.iter().find(|(_, k)| k == key) {
            None => p(
                problems,
                "external-fd",
                format!(
                    "descriptor {} of process {} is {key}, which led outside the dumped tree; \
                     give a descriptor of ckpt restore in its place with --inherit-fd N:{key} \
                     (e.g. --inherit-fd {}:{key} with that descriptor open)",
                    f.fd, proc_.pid, f.fd
                ),
            ),
            Some((n, _)) => {
                if !sys::process::own_fd_open(*n) {
                    p(
                        problems,
                        "external-fd",
                        format!(
                            "--inherit-fd {n}:{key} (for descriptor {} of process {}): ckpt \
                             has no descriptor {n} open",
                            f.fd, proc_.pid
                        ),
                    );
                }
            }
        }
    }
}

/// A unix datagram socket's name must be free: no socket may be bound to it now, and a
/// path may hold at most a stale socket file (which restore replaces).
fn check_bound_name(name: &[u8], fd: i32, problems: &mut Vec<Problem>) {
    if let Ok(socks) = crate::sys::sockdiag::unix_sockets() {
        if socks.values().any(|s| {
            s.name.as_deref().is_some_and(|n| {
                let mut n = n.to_vec();
                if n.first() != Some(&0) {
                    while n.last() == Some(&0) {
                        n.pop();
                    }
                }
                n == name
            })
        }) {
            let shown = match name.split_first() {
                Some((0, rest)) => format!("@{}", show(rest)),
                _ => show(name),
            };
            p(
                problems,
                "address-in-use",
                format!("descriptor {fd}: a socket is bound to unix socket name {shown} now"),
            );
            return;
        }
    }
    // The rest is as for a listener's name (the path's directory, a non-socket file).
    check_listen_name(name, fd, problems);
}

/// Compare a file's identity now with the image's record of it.
pub fn check_file(id: &FileId, what: &str, problems: &mut Vec<Problem>) {
    let path = procfs::bytes_path(&id.path);
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            p(
                problems,
                "file-missing",
                format!("{what} {} is not available: {e}", show(&id.path)),
            );
            return;
        }
    };
    let fmt = id.mode & libc::S_IFMT;
    if m.mode() & libc::S_IFMT != fmt {
        p(
            problems,
            "file-changed",
            format!("{what} {} is now a different kind of file", show(&id.path)),
        );
        return;
    }
    if fmt == libc::S_IFREG
        && (m.size() != id.size || m.mtime() != id.mtime_sec || m.mtime_nsec() != id.mtime_nsec)
    {
        p(
            problems,
            "file-changed",
            format!(
                "{what} {} has changed since the dump (size {} -> {}, modified {} -> {})",
                show(&id.path),
                id.size,
                m.size(),
                id.mtime_sec,
                m.mtime()
            ),
        );
    }
    if (fmt == libc::S_IFCHR || fmt == libc::S_IFBLK) && m.rdev() != id.rdev {
        p(
            problems,
            "file-changed",
            format!("{what} {} is now another device", show(&id.path)),
        );
    }
}

/// A file the process only writes (a log, redirected stdout) may have grown since the
/// dump: the process never reads it, so that cannot mislead it. It must still exist and
/// be a regular file, and a non-append writer's offset must not lie beyond its end.
fn check_output_file(id: &FileId, flags: u32, pos: u64, what: &str, problems: &mut Vec<Problem>) {
    let path = procfs::bytes_path(&id.path);
    match std::fs::metadata(path) {
        Err(e) => p(
            problems,
            "file-missing",
            format!("{what} {} is not available: {e}", show(&id.path)),
        ),
        Ok(m) if !m.is_file() => p(
            problems,
            "file-changed",
            format!("{what} {} is no longer a regular file", show(&id.path)),
        ),
        Ok(m) if flags as i32 & libc::O_APPEND == 0 && m.size() < pos => p(
            problems,
            "file-changed",
            format!(
                "{what} {} was truncated to {} bytes since the dump; the process would write at offset {pos}",
                show(&id.path),
                m.size()
            ),
        ),
        Ok(_) => {}
    }
}

/// Host checks of one process; `pids_free` when its IDs will live in a new PID
/// namespace, where they are all free.
fn check_host(proc_: &Process, pids_free: bool, problems: &mut Vec<Problem>) {
    if !pids_free {
        check_pids_free(proc_, problems);
    }
    if !proc_.is_zombie() {
        check_host_files(proc_, problems);
    }
}

/// How long a zombie holding a PID of the image may take to be reaped. A dump that
/// killed its tree leaves zombies until their parent (a shell, a supervisor) reaps them,
/// which it does soon but not at once: `ckpt dump PID && ckpt restore IMG` would
/// otherwise fail now and then.
const ZOMBIE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a process that is exiting (killed by the dump, say) may take to free its
/// memory and become a zombie: for a big process that takes a while after `ckpt dump`
/// returned (about 0.1 s per GiB here).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The task holding `pid`, if any, once a process exiting there has had
/// [`EXIT_GRACE`] to end and a zombie [`ZOMBIE_GRACE`] to be reaped.
fn stat_after_reap(pid: i32) -> std::result::Result<procfs::Stat, crate::sys::SysError> {
    let start = std::time::Instant::now();
    let mut zombie_since = None;
    loop {
        let s = procfs::stat(pid)?;
        let now = std::time::Instant::now();
        let wait = if s.state == b'Z' {
            now - *zombie_since.get_or_insert(now) < ZOMBIE_GRACE
        } else {
            s.exiting() && now - start < EXIT_GRACE
        };
        if !wait {
            return Ok(s);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The process's PID and thread IDs are free on this host.
fn check_pids_free(proc_: &Process, problems: &mut Vec<Problem>) {
    for t in proc_.threads.iter().skip(1) {
        if let Ok(s) = stat_after_reap(t.tid) {
            p(
                problems,
                "pid-taken",
                format!(
                    "thread ID {} is in use by another task ({})",
                    t.tid,
                    show(&s.comm)
                ),
            );
        }
    }
    if let Ok(s) = stat_after_reap(proc_.pid) {
        let msg = if s.state == b'Z' {
            format!(
                "PID {} is held by a zombie ({}, parent {}) that its parent did not reap within {} ms",
                proc_.pid,
                show(&s.comm),
                s.field(4),
                ZOMBIE_GRACE.as_millis()
            )
        } else if s.exiting() {
            format!(
                "PID {} is held by a process that has been exiting for {} s ({})",
                proc_.pid,
                EXIT_GRACE.as_secs(),
                show(&s.comm)
            )
        } else {
            format!(
                "PID {} is in use by another process ({})",
                proc_.pid,
                show(&s.comm)
            )
        };
        p(problems, "pid-taken", msg);
    }
}

fn check_host_files(proc_: &Process, problems: &mut Vec<Problem>) {
    match std::fs::metadata(procfs::bytes_path(&proc_.root)) {
        Ok(m) if m.is_dir() => {}
        _ => p(
            problems,
            "file-missing",
            format!("root directory {} does not exist", show(&proc_.root)),
        ),
    }
    match std::fs::metadata(procfs::bytes_path(&proc_.cwd)) {
        Ok(m) if m.is_dir() => {}
        _ => p(
            problems,
            "file-missing",
            format!("working directory {} does not exist", show(&proc_.cwd)),
        ),
    }
    if let Some(exe) = &proc_.mm.exe {
        check_file(exe, "executable", problems);
    }
    for v in &proc_.vmas {
        if let VmaKind::SysvShm { key, shmid, .. } = v.kind {
            if let Ok(segs) = procfs::sysv_shm() {
                if segs.iter().any(|s| s.1 == shmid) {
                    p(
                        problems,
                        "sysv-taken",
                        format!("System V shared memory ID {shmid} is in use on this host"),
                    );
                }
                if key != 0 && segs.iter().any(|s| s.0 == key) {
                    p(
                        problems,
                        "sysv-taken",
                        format!("System V shared memory key {key:#x} is in use on this host"),
                    );
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for v in &proc_.vmas {
        match &v.kind {
            VmaKind::File { file } if seen.insert(file.path.clone()) => {
                check_file(file, "mapped file", problems);
            }
            VmaKind::DeletedMap { file, .. } => {
                let dir = procfs::bytes_path(&file.path).parent().map(|d| d.is_dir());
                if dir != Some(true) && seen.insert(file.path.clone()) {
                    p(
                        problems,
                        "file-missing",
                        format!(
                            "memory area {:#x}-{:#x}: the directory of deleted file {} does \
                             not exist",
                            v.start,
                            v.end,
                            show(&file.path)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for f in &proc_.fds {
        match &f.kind {
            FdKind::File { file, flags, pos } => {
                let what = format!("file descriptor {}:", f.fd);
                if *flags as i32 & libc::O_ACCMODE == libc::O_WRONLY {
                    check_output_file(file, *flags, *pos, &what, problems)
                } else {
                    check_file(file, &what, problems)
                }
            }
            FdKind::Device { file, .. } | FdKind::Dir { file, .. } => {
                check_file(file, &format!("file descriptor {}:", f.fd), problems)
            }
            FdKind::UnixListen { name, .. } => check_listen_name(name, f.fd, problems),
            FdKind::UnixDgram { sock, .. } if !sock.name.is_empty() && f.shared_with.is_none() => {
                check_bound_name(&sock.name, f.fd, problems)
            }
            FdKind::UnixDgram { .. } => {}
            FdKind::DeletedFile { file, .. } => {
                let dir = procfs::bytes_path(&file.path).parent().map(|d| d.is_dir());
                if dir != Some(true) {
                    p(
                        problems,
                        "file-missing",
                        format!(
                            "file descriptor {}: the directory of deleted file {} does not exist",
                            f.fd,
                            show(&file.path)
                        ),
                    );
                }
            }
            FdKind::Fifo { file, .. } => {
                let what = format!("file descriptor {}: FIFO", f.fd);
                let before = problems.len();
                check_file(file, &what, problems);
                if problems.len() == before {
                    check_fifo_unused(file, &what, problems);
                }
            }
            FdKind::Inotify { watches, .. } => {
                for w in watches {
                    if std::fs::symlink_metadata(procfs::bytes_path(&w.path)).is_err() {
                        p(
                            problems,
                            "file-missing",
                            format!(
                                "file descriptor {}: inotify watch {} on {}: it does not exist",
                                f.fd,
                                w.wd,
                                show(&w.path)
                            ),
                        );
                    }
                }
            }
            FdKind::Udp { sock: u, .. } if f.shared_with.is_none() => {
                check_udp_addr(u, f.fd, problems)
            }
            FdKind::External { .. } => {}
            FdKind::Memfd { .. }
            | FdKind::TcpListen { .. }
            | FdKind::TcpConn { .. }
            | FdKind::Udp { .. } => {}
            FdKind::Inherited { .. }
            | FdKind::Pipe { .. }
            | FdKind::UnixPair { .. }
            | FdKind::EventFd { .. }
            | FdKind::TimerFd { .. }
            | FdKind::SignalFd { .. }
            | FdKind::Epoll { .. } => {}
        }
    }
    check_locks(proc_, problems);
    if proc_.creds.seccomp != 0 {
        p(
            problems,
            "unsupported",
            "the process ran under seccomp; not supported yet".into(),
        );
    }
}

/// Build the plan from decoded metadata.
pub fn plan(ckpt: Checkpoint, view: &HostView) -> Plan {
    let mut problems = Vec::new();
    let mut xsave = std::collections::BTreeMap::new();
    check_structure(&ckpt, &mut problems);
    if problems.iter().all(|p| p.code != "malformed") {
        // Privileges: ckpt's own, and what each process asks of them.
        let pairs = ckpt.pipes.len() + ckpt.socketpairs.len() + ckpt.fifos.len();
        match super::privs::Own::detect() {
            Ok(own) => {
                super::privs::check_ckpt(&own, &mut problems);
                for proc_ in ckpt.processes.iter().filter(|q| !q.is_zombie()) {
                    super::privs::check_process(proc_, &own, pairs, &mut problems);
                }
            }
            Err(e) => p(
                &mut problems,
                "privilege",
                format!("cannot read ckpt's own credentials and limits: {e}"),
            ),
        }
        // CPU, xsave, word size and debug registers, under the chosen policy.
        let threads: Vec<(i32, &arch::ThreadArchState)> = ckpt
            .processes
            .iter()
            .flat_map(|p| p.threads.iter().map(|t| (t.tid, &t.arch)))
            .collect();
        for ap in arch::check_arch(&ckpt.arch, &threads, &view.host, view.policy) {
            p(&mut problems, ap.code.as_str(), ap.message);
        }
        let layout = arch::XsaveLayout::for_image(&ckpt.arch, &view.host);
        for (tid, t) in &threads {
            match arch::convert_xsave(&t.xsave, &layout, &view.host) {
                Ok(x) => {
                    xsave.insert(*tid, x);
                }
                // The arch checks above already name a missing component once for
                // the image; do not repeat it per thread.
                Err(ap) => {
                    if problems.iter().all(|x| x.code != ap.code.as_str()) {
                        p(&mut problems, ap.code.as_str(), ap.message)
                    }
                }
            }
        }
        // Kernel facilities stage relies on (clone3 set_tid, PR_TIMER_CREATE_RESTORE_IDS,
        // MADV_GUARD_INSTALL...), probed here.
        let masked: BTreeSet<super::kernel::Facility> = view
            .host
            .masked_kernel
            .iter()
            .filter_map(|k| super::kernel::Facility::from_name(k))
            .collect();
        let missing = super::kernel::missing(&super::kernel::required(&ckpt), &masked);
        let vdso32 = missing
            .iter()
            .all(|(f, _)| *f != super::kernel::Facility::MapVdso32);
        problems.extend(missing.into_iter().map(|(_, p)| p));
        let pids_free = view.new_pid_namespace || ckpt.own_pid_namespace;
        for proc_ in &ckpt.processes {
            if !proc_.is_zombie() {
                check_arch(&ckpt.arch, proc_, vdso32, &mut problems);
            }
            check_host(proc_, pids_free, &mut problems);
            check_external(proc_, &view.inherit, &mut problems);
        }
        for (n, key) in &view.inherit {
            let used = ckpt
                .processes
                .iter()
                .flat_map(|q| q.fds.iter())
                .any(|f| matches!(&f.kind, FdKind::External { key: k, .. } if k == key));
            if !used {
                p(
                    &mut problems,
                    "inherit-fd-unused",
                    format!(
                        "--inherit-fd {n}:{key}: the image has no external resource {key} \
                         (`ckpt inspect` lists them)"
                    ),
                );
            }
        }
        problems.sort_by(|a, b| a.message.cmp(&b.message));
        problems.dedup();
    }
    let request_amx = ckpt.arch.xcomp_perm & (1 << 18) != 0
        && arch::amx_permission_grantable(&ckpt.arch, &view.host);
    Plan {
        ckpt,
        inherit: view.inherit.clone(),
        problems,
        xsave,
        request_amx,
    }
}

/// What `restore --new-tty` does with the image's terminal: the tree's root becomes the
/// leader of a new session whose controlling terminal (if the terminal was one at dump)
/// is a new pty, given these settings, with this foreground group.
#[derive(Debug, Clone)]
pub struct TtyPlan {
    pub settings: Option<crate::model::TtySettings>,
    /// Make the new pty the root's controlling terminal.
    pub controlling: bool,
    /// The foreground process group to give it (a group of the image, or the root's).
    pub fg_pgid: i32,
}

/// Check that the image's terminal can be replaced by a new pty (`restore --new-tty`):
/// standard descriptors that led to a terminal, all the same one, all held by
/// processes of the root's session (the session the new terminal gets).
pub fn tty_plan(ckpt: &Checkpoint) -> std::result::Result<TtyPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(root) = ckpt.processes.first() else {
        p(
            &mut problems,
            "malformed",
            "the image has no process".into(),
        );
        return Err(problems);
    };
    if ckpt.own_pid_namespace {
        p(
            &mut problems,
            "unsupported",
            "--new-tty: the tree has a PID namespace of its own; restoring it onto a new \
             terminal is not supported yet (restore it without --new-tty)"
                .into(),
        );
    }
    let ttys: Vec<(&Process, i32, &crate::model::TtyState)> = ckpt
        .processes
        .iter()
        .flat_map(|q| {
            q.fds.iter().filter_map(move |f| match &f.kind {
                FdKind::Inherited { tty: Some(t), .. } => Some((q, f.fd, &**t)),
                _ => None,
            })
        })
        .collect();
    if ttys.is_empty() {
        p(
            &mut problems,
            "unsupported",
            "--new-tty: no standard descriptor of the image led to a terminal at dump; \
             restore it without --new-tty"
                .into(),
        );
    }
    if let Some((_, _, first)) = ttys.first() {
        if ttys.iter().any(|(_, _, t)| t.rdev != first.rdev) {
            p(
                &mut problems,
                "unsupported",
                "--new-tty: standard descriptors of the image led to more than one terminal; \
                 only one can be replaced by a new pty"
                    .into(),
            );
        }
    }
    for (q, fd, _) in &ttys {
        if q.sid != root.sid {
            p(
                &mut problems,
                "unsupported",
                format!(
                    "--new-tty: process {} (in session {}, not that of the root {}) has the \
                     terminal on descriptor {fd}; the new terminal can only belong to the \
                     root's session",
                    q.pid, q.sid, root.pid
                ),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let ctl = ttys.iter().find(|(_, _, t)| t.controlling);
    let fg = ctl.map(|(_, _, t)| t.fg_pgid).unwrap_or(0);
    // A foreground group of the image keeps its place; any other (the old shell's, or
    // the root's group led from outside, which the root now leads) becomes the root's.
    let fg_pgid = if fg > 0
        && ckpt
            .processes
            .iter()
            .any(|q| q.pid == fg && q.pgid == fg && q.sid == root.sid && !q.is_zombie())
    {
        fg
    } else {
        root.pid
    };
    Ok(TtyPlan {
        settings: ttys.iter().find_map(|(_, _, t)| t.settings.clone()),
        controlling: ctl.is_some(),
        fg_pgid,
    })
}
