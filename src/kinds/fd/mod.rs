//! Descriptors: the table of each process, descriptors shared between processes, and the
//! one dispatch per phase over [`FdKind`](crate::model::FdKind).

pub(crate) mod anon;
pub(crate) mod epoll;
pub(crate) mod external;
pub(crate) mod fifo;
pub(crate) mod file;
pub(crate) mod inotify;
pub(crate) mod lock;
pub(crate) mod pipe;
pub(crate) mod tcp;
pub(crate) mod tty;
pub(crate) mod udp;
pub(crate) mod unix;

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::kinds::check;
use crate::model::{Checkpoint, Fd, FdKind, Process};

// ---- checks (plan) ----

/// Highest descriptor number accepted.
const MAX_FD: i32 = 1 << 20;

/// Where a process keeps pipe ends temporarily at restore: above all its own descriptors.
pub(crate) fn pipe_tmp_base(proc_: &Process) -> u64 {
    proc_
        .fds
        .iter()
        .map(|f| f.fd as u64 + 1)
        .max()
        .unwrap_or(3)
        .max(3)
}

/// Structural checks of one process's descriptor table: numbers in range and unique,
/// external resources well formed, only 0-2 inherited.
pub(crate) fn check_table(proc_: &Process, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for f in &proc_.fds {
        if f.fd < 0 || f.fd >= MAX_FD || !seen.insert(f.fd) {
            check::p(
                problems,
                "malformed",
                format!("invalid file descriptor number {}", f.fd),
            );
        }
        if let FdKind::External { key, .. } = &f.kind {
            external::check_record(f, key, problems);
        }
        if matches!(f.kind, FdKind::Inherited { .. }) && f.fd > 2 {
            check::p(
                problems,
                "malformed",
                format!(
                    "file descriptor {} cannot be inherited (only 0-2 can)",
                    f.fd
                ),
            );
        }
    }
}

/// Structural checks of FIFO descriptors, inotify watches and locks, descriptor by
/// descriptor.
pub(crate) fn check_records(
    procs: &[Process],
    fifo_ids: &BTreeSet<u64>,
    problems: &mut Vec<Problem>,
) {
    for q in procs {
        for f in &q.fds {
            if let FdKind::Fifo { id, .. } = f.kind {
                fifo::check_ref(id, f.fd, q.pid, fifo_ids, problems);
            }
            if let FdKind::Inotify { watches, .. } = &f.kind {
                inotify::check_watches(watches, f.fd, q.pid, problems);
            }
            lock::check_records(q, f, problems);
        }
    }
}

/// Structural checks of socket descriptors: pair ends of known pairs, datagram and UDP
/// sockets restore can build, listeners with a name.
pub(crate) fn check_sockets(
    procs: &[Process],
    pair_ids: &BTreeSet<u64>,
    dgram_names: &BTreeSet<&[u8]>,
    problems: &mut Vec<Problem>,
) {
    for q in procs {
        for f in &q.fds {
            match &f.kind {
                FdKind::UnixPair { id, end, .. } if !pair_ids.contains(id) || *end > 1 => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an unknown socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::UnixDgram { sock: u, .. } if !unix::unix_dgram_ok(u, dgram_names) => {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} is an invalid unix datagram socket",
                            f.fd, q.pid
                        ),
                    )
                }
                FdKind::Udp { sock: u, .. } if !udp::udp_ok(u) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid UDP socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::UnixListen { name, .. } if name.is_empty() || name.len() > 107 => check::p(
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
}

/// Shared descriptions must point back at a descriptor restored before.
pub(crate) fn check_shared(procs: &[Process], problems: &mut Vec<Problem>) {
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
                check::p(
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
}

/// Host checks of one descriptor: what it opened by path is there and unchanged, the
/// names and addresses it binds are free.
pub(crate) fn check_fd(f: &Fd, problems: &mut Vec<Problem>) {
    match &f.kind {
        FdKind::File { file, flags, pos } => file::check_host(file, *flags, *pos, f.fd, problems),
        FdKind::Device { file, .. } | FdKind::Dir { file, .. } => {
            file::check_file(file, &format!("file descriptor {}:", f.fd), problems)
        }
        FdKind::UnixListen { name, .. } => unix::check_listen_name(name, f.fd, problems),
        FdKind::UnixDgram { sock, .. } if !sock.name.is_empty() && f.shared_with.is_none() => {
            unix::check_bound_name(&sock.name, f.fd, problems)
        }
        FdKind::UnixDgram { .. } => {}
        FdKind::DeletedFile { file, .. } => file::check_deleted(file, f.fd, problems),
        FdKind::Fifo { file, .. } => fifo::check_host(file, f.fd, problems),
        FdKind::Inotify { watches, .. } => inotify::check_paths(watches, f.fd, problems),
        FdKind::Udp { sock: u, .. } if f.shared_with.is_none() => {
            udp::check_udp_addr(u, f.fd, problems)
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

/// What `inspect` says of one descriptor (its locks included).
pub(crate) fn describe(ckpt: &Checkpoint, f: &Fd) -> String {
    let d = match &f.kind {
        FdKind::File { file, flags, pos } => file::describe_file(file, *flags, *pos),
        FdKind::Device { file, flags, .. } => file::describe_device(file, *flags),
        FdKind::Dir { file, .. } => file::describe_dir(file),
        FdKind::Inherited { what, tty, .. } => tty::describe_inherited(what, tty.as_deref()),
        FdKind::External { key, .. } => external::describe(key),
        FdKind::EventFd {
            count, semaphore, ..
        } => anon::describe_eventfd(*count, *semaphore),
        FdKind::TimerFd {
            clock,
            value_ns,
            interval_ns,
            ticks,
            ..
        } => anon::describe_timerfd(*clock, *value_ns, *interval_ns, *ticks),
        FdKind::SignalFd { mask, .. } => anon::describe_signalfd(*mask),
        FdKind::TcpListen { addr, backlog, .. } => tcp::describe_listen(addr, *backlog),
        FdKind::TcpConn { conn, .. } => tcp::describe_conn(conn),
        FdKind::UnixDgram { sock: u, .. } => unix::describe_dgram(u),
        FdKind::Udp { sock: u, .. } => udp::describe(u),
        FdKind::Memfd {
            name, seals, pos, ..
        } => file::describe_memfd(name, *seals, *pos),
        FdKind::DeletedFile { file, pos, .. } => file::describe_deleted(file, *pos),
        FdKind::UnixPair { id, end, .. } => unix::describe_pair(ckpt, *id, *end),
        FdKind::UnixListen { name, backlog, .. } => unix::describe_listen(name, *backlog),
        FdKind::Epoll { targets, .. } => epoll::describe(targets),
        FdKind::Pipe { id, write, .. } => pipe::describe(ckpt, *id, *write),
        FdKind::Inotify { watches, .. } => inotify::describe(watches),
        FdKind::Fifo { file, id, flags } => fifo::describe(ckpt, file, *id, *flags),
    };
    d + &lock::describe(&f.locks)
}
