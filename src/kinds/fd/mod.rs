//! Descriptors: the table of each process, descriptors shared between processes, and the
//! one dispatch per phase over [`FdKind`](crate::model::FdKind) (collect's, with the
//! sharing and socket resolution of dump, in `collect.rs`).

pub(crate) mod anon;
pub(crate) mod belownet;
mod collect;
pub(crate) mod epoll;
pub(crate) mod external;
pub(crate) mod fanotify;
pub(crate) mod fifo;
pub(crate) mod file;
mod ghost;
pub(crate) mod held;
pub(crate) mod inetraw;
pub(crate) mod inflight;
pub(crate) mod inotify;
pub(crate) mod lock;
pub(crate) mod mqueue;
pub(crate) mod netlink;
pub(crate) mod packet;
pub(crate) mod pidfd;
pub(crate) mod pipe;
pub(crate) mod tcp;
#[cfg(test)]
mod tests;
pub(crate) mod tty;
pub(crate) mod udp;
pub(crate) mod unix;
pub(crate) mod uring;

use crate::arch::native::nr;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::fd::file::FileData;
use crate::model::{Checkpoint, Fd, FdKind, PipeState, Process, SocketPairState};
use crate::remote::{BatchArgs, Ctx, SockOpt, move_fd, set_status_flags, take_remote_fd};
use crate::sys;
use crate::sys::inject::Call;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

// ---- collect (dump) ----

// In collect.rs, re-exported here for the kinds and dump/.
pub(crate) use collect::{
    OpenFd, check_fd_owners, fd_entry, fd_entry_in_flight, fdinfo_unparsed, link_shared_fds,
    resolve_sockets,
};

// ---- checks (plan) ----

/// Highest descriptor number accepted.
const MAX_FD: i32 = 1 << 20;

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
        file::check_record(f, problems);
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
                inotify::check_deleted_watches(watches, f.fd, q.pid, procs, problems);
            }
            if let FdKind::Pidfd { pid, reaped, .. } = &f.kind {
                pidfd::check_pidfd(procs, q, f.fd, *pid, reaped.as_ref(), problems);
            }
            fanotify::check_record(f, q.pid, problems);
            lock::check_records(q, f, problems);
            check_owner(procs, q, f, problems);
        }
        pidfd::check_epoll_items(q, problems);
    }
}

/// A descriptor's signal owner must be a process (or group) of the image, its signal
/// one F_SETSIG takes.
fn check_owner(procs: &[Process], q: &Process, f: &Fd, problems: &mut Vec<Problem>) {
    use linux_raw_sys::general::{F_OWNER_PGRP, F_OWNER_PID, F_OWNER_TID};
    let Some(o) = f.owner else { return };
    let known = match o.kind as u32 {
        _ if o.pid == 0 => true,
        F_OWNER_PGRP => procs.iter().any(|p| p.pgid == o.pid),
        F_OWNER_PID | F_OWNER_TID => procs.iter().any(|p| p.pid == o.pid),
        _ => false,
    };
    let kinds = [F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP];
    if !known || !kinds.contains(&(o.kind as u32)) || !(0..=64).contains(&o.sig) {
        check::p(
            problems,
            "malformed",
            format!(
                "descriptor {} of process {}: invalid signal owner (type {} pid {} signal {})",
                f.fd, q.pid, o.kind, o.pid, o.sig
            ),
        );
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
                FdKind::Packet { sock: k, .. } if !packet::packet_ok(k) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid packet socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::InetRaw { sock: r, .. } if !inetraw::raw_ok(r) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid raw or ping socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::Netlink { sock: n, .. } if !netlink::netlink_ok(n) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid netlink socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::TcpUnconnected { sock: u, .. } if !tcp::unconn_ok(u) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid TCP socket",
                        f.fd, q.pid
                    ),
                ),
                FdKind::TcpListen { opts: Some(o), .. } if !tcp::tcp_opts_ok(o) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} has invalid TCP options",
                        f.fd, q.pid
                    ),
                ),
                FdKind::TcpQueued { .. } if !tcp::queued_ok(procs, f) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is a TCP connection waiting to be \
                         accepted that its listener's queue does not hold, or in a state \
                         restore cannot make",
                        f.fd, q.pid
                    ),
                ),
                FdKind::TcpConn { conn, .. } if !tcp::conn_state_ok(conn) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is a TCP connection in a state restore \
                         cannot rebuild",
                        f.fd, q.pid
                    ),
                ),
                FdKind::TcpConn { conn, .. }
                    if conn.opts.as_ref().is_some_and(|o| !tcp::tcp_opts_ok(o)) =>
                {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} has invalid TCP options",
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
                FdKind::UnixPending { .. } if !unix::pending_ok(procs, f) => check::p(
                    problems,
                    "malformed",
                    format!(
                        "descriptor {} of process {} is an invalid unix socket waiting to \
                         be accepted",
                        f.fd, q.pid
                    ),
                ),
                FdKind::UnixListen { name, dir, .. }
                    if name.is_empty() || !unix::name_ok(name, dir) =>
                {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} has an invalid socket name",
                            f.fd, q.pid
                        ),
                    )
                }
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

/// [`check_fd`] in an image of processes `pids` (in a new PID namespace or not, in
/// another network namespace than ckpt's or not): a file under /proc/PID/ of one of
/// them is made by restore (see `file::check_proc_file`).
pub(crate) fn check_fd_in_image(
    files: &mut file::HeldFiles,
    f: &Fd,
    (pids, new_pidns, other_netns): (&std::collections::BTreeSet<i32>, bool, bool),
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    if let FdKind::File { file, .. } | FdKind::Dir { file, .. } = &f.kind {
        if file::check_proc_file(file, f.fd, pids, new_pidns, problems) {
            return;
        }
    }
    // In another network namespace than ckpt's, the names and addresses of the
    // network (ports, abstract unix names, netlink port IDs, ping groups) are that
    // namespace's: not checked against ckpt's.
    if other_netns && network_named(f) {
        return;
    }
    check_fd(files, f, held, problems);
}

/// Whether what a descriptor's host check looks at is the network namespace's only
/// (an address, a port, an abstract unix name), not the file system's.
fn network_named(f: &Fd) -> bool {
    let abstract_name = |n: &[u8]| n.first() == Some(&0);
    match &f.kind {
        FdKind::Udp { .. }
        | FdKind::TcpUnconnected { .. }
        | FdKind::Netlink { .. }
        | FdKind::InetRaw { .. } => true,
        FdKind::UnixListen { name, dir, .. } => dir.is_empty() && abstract_name(name),
        FdKind::UnixDgram { sock, .. } => abstract_name(&sock.name),
        FdKind::UnixPending { name, listener, .. } => {
            abstract_name(listener) && (name.is_empty() || abstract_name(name))
        }
        _ => false,
    }
}

/// Host checks of one descriptor: what it opened by path is there and unchanged, the
/// names and addresses it binds are free.
pub(crate) fn check_fd(
    files: &mut file::HeldFiles,
    f: &Fd,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    match &f.kind {
        FdKind::File {
            file,
            flags,
            pos,
            unlinked,
        } => {
            file::check_host(files, file, *flags, *pos, f.fd, problems);
            if !unlinked.is_empty() {
                file::check_unlinked_name(unlinked, file, f.fd, problems)
            }
        }
        FdKind::Dir {
            file,
            removed: true,
            ..
        } => file::check_removed_name(
            file,
            "directory",
            &format!("file descriptor {}", f.fd),
            problems,
        ),
        FdKind::Device { file, .. } | FdKind::Dir { file, .. } => {
            file::check_file(files, file, &format!("file descriptor {}:", f.fd), problems)
        }
        FdKind::UnixListen { name, dir, .. } if !dir.is_empty() => {
            unix::check_relative_name(files, (name, dir), true, f.fd, held, problems)
        }
        FdKind::UnixListen { name, .. } => unix::check_listen_name(name, f.fd, held, problems),
        FdKind::UnixDgram { sock, .. } if !sock.name.is_empty() && f.shared_with.is_none() => {
            unix::check_bound_name(&sock.name, f.fd, held, problems)
        }
        FdKind::UnixDgram { .. } => {}
        FdKind::UnixPending {
            name,
            dir,
            listener,
            listener_dir,
            ..
        } if f.shared_with.is_none() => {
            // The listener's directory is held for the connect.
            unix::check_relative_name(files, (listener, listener_dir), false, f.fd, held, problems);
            if !dir.is_empty() {
                unix::check_relative_name(files, (name, dir), true, f.fd, held, problems)
            } else if !name.is_empty() {
                unix::check_bound_name(name, f.fd, held, problems)
            }
        }
        FdKind::UnixPending { .. } => {}
        FdKind::DeletedFile { file, pos, .. } => file::check_deleted_at(file, f.fd, *pos, problems),
        FdKind::Fifo {
            file,
            removed: true,
            ..
        } => file::check_removed_name(file, "FIFO", &format!("file descriptor {}", f.fd), problems),
        FdKind::Fifo { file, .. } => fifo::check_host(files, file, f.fd, held, problems),
        FdKind::Inotify { watches, .. } => inotify::check_paths(watches, f.fd, problems),
        FdKind::Fanotify { marks, .. } => fanotify::check_paths(marks, f.fd, problems),
        FdKind::PosixMq { .. } => mqueue::check_host(f, problems),
        // A live tree's socket is bound to the address now, and no other socket can be
        // without the reuse options the check leaves to the kernel.
        FdKind::Udp { sock: u, .. } if f.shared_with.is_none() && !held.live => {
            udp::check_udp_addr(u, f.fd, problems)
        }
        FdKind::TcpUnconnected { sock: u, .. } if f.shared_with.is_none() && !held.live => {
            tcp::check_tcp_addr(u, f.fd, problems)
        }
        FdKind::Netlink { sock: n, .. } if f.shared_with.is_none() && !held.live => {
            netlink::check_portid(n, f.fd, problems)
        }
        FdKind::InetRaw { sock: r, .. } if f.shared_with.is_none() => {
            inetraw::check_ping(r, f.fd, problems)
        }
        FdKind::External { .. } => {}
        FdKind::Packet { sock: k, .. } => packet::check_iface(k, f.fd, problems),
        FdKind::TcpUnconnected { .. } | FdKind::Netlink { .. } | FdKind::InetRaw { .. } => {}
        FdKind::Memfd { .. }
        | FdKind::TcpListen { .. }
        | FdKind::TcpConn { .. }
        | FdKind::TcpQueued { .. }
        | FdKind::Udp { .. } => {}
        FdKind::Inherited { .. }
        | FdKind::Pty { .. }
        | FdKind::DevTty { .. }
        | FdKind::Pipe { .. }
        | FdKind::UnixPair { .. }
        | FdKind::EventFd { .. }
        | FdKind::TimerFd { .. }
        | FdKind::SignalFd { .. }
        | FdKind::Epoll { .. }
        | FdKind::Pidfd { .. } => {}
    }
}

/// What `inspect` says of one descriptor (its locks included).
pub(crate) fn describe(ckpt: &Checkpoint, f: &Fd) -> String {
    let d = match &f.kind {
        FdKind::File {
            file,
            flags,
            pos,
            unlinked,
        } => file::describe_file(file, *flags, *pos, unlinked),
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
        FdKind::TcpQueued { conn, pos, .. } => tcp::describe_queued(conn, *pos),
        FdKind::TcpUnconnected { sock, .. } => tcp::describe_unconn(sock),
        FdKind::Netlink { sock, .. } => netlink::describe(sock),
        FdKind::InetRaw { sock, .. } => inetraw::describe(sock),
        FdKind::Packet { sock, .. } => packet::describe(sock),
        FdKind::UnixDgram { sock: u, .. } => unix::describe_dgram(u),
        FdKind::Udp { sock: u, .. } => udp::describe(u),
        FdKind::Memfd {
            name, seals, pos, ..
        } => file::describe_memfd(name, *seals, *pos),
        FdKind::DeletedFile { file, pos, .. } => file::describe_deleted(file, *pos),
        FdKind::UnixPair { id, end, .. } => unix::describe_pair(ckpt, *id, *end),
        FdKind::UnixListen { name, backlog, .. } => unix::describe_listen(name, *backlog),
        FdKind::UnixPending { listener, pos, .. } => unix::describe_pending(listener, *pos),
        FdKind::Epoll { targets, .. } => epoll::describe(targets),
        FdKind::Pipe { id, write, .. } => pipe::describe(ckpt, *id, *write),
        FdKind::Inotify { watches, .. } => inotify::describe(watches),
        FdKind::Fanotify {
            init_flags, marks, ..
        } => fanotify::describe(*init_flags, marks),
        FdKind::PosixMq {
            name,
            deleted,
            messages,
            ..
        } => mqueue::describe(name, *deleted, messages.len()),
        FdKind::Fifo {
            file, id, flags, ..
        } => fifo::describe(ckpt, file, *id, *flags),
        FdKind::Pty { index, master, .. } => tty::describe_pty(ckpt, *index, Some(*master)),
        FdKind::DevTty { index, .. } => tty::describe_pty(ckpt, *index, None),
        FdKind::Pidfd { pid, flags, reaped } => pidfd::describe(*pid, *flags, reaped.as_ref()),
    };
    let owner = match f.owner {
        Some(o) if o.pid != 0 || o.sig != 0 => {
            format!(" (I/O signal {} to owner {} type {})", o.sig, o.pid, o.kind)
        }
        _ => String::new(),
    };
    let flight = if f.in_flight {
        " (only in flight: no process holds it)"
    } else {
        ""
    };
    d + &owner + &lock::describe(&f.locks) + flight
}

// ---- restore (stage) ----

/// Pipes created so far: id -> (holder process, temporary read fd, temporary write fd).
/// The holder keeps both ends at temporary numbers until every process has its
/// descriptors; others take them with pidfd_getfd.
/// Socket pairs are held the same way, under (1, id); pipes under (0, id); FIFOs under
/// (2, id), by one read-write descriptor (both numbers the same).
pub(crate) type PipeHolders = BTreeMap<(u8, u64), (i32, u64, u64)>;

/// Where a process keeps pipe ends temporarily: above all its own descriptors.
pub(crate) fn pipe_tmp_base(proc_: &Process) -> u64 {
    // (Above the numbers epoll items are added under too: `epoll::register_targets`
    // puts files there for a moment.)
    let items = proc_.fds.iter().flat_map(|f| match &f.kind {
        FdKind::Epoll { targets, .. } => targets.as_slice(),
        _ => &[],
    });
    proc_
        .fds
        .iter()
        .map(|f| f.fd)
        .chain(items.map(|t| t.fd))
        .map(|fd| fd as u64 + 1)
        .max()
        .unwrap_or(3)
        .max(3)
}

/// Socket options recorded at dump (0 buffer sizes: not recorded). The kernel doubles
/// the buffer size it is given, so half the recorded value is set, with the FORCE
/// variants so that the system-wide maximum does not cut it.
pub(crate) fn set_sock_opts(
    cx: &mut Ctx<'_>,
    fd: u64,
    o: &crate::model::SockOpts,
) -> RestoreResult<()> {
    if o.sndbuf != 0 {
        cx.setsockopt(fd, &SockOpt::SndBufForce(o.sndbuf / 2))?;
    }
    if o.rcvbuf != 0 {
        cx.setsockopt(fd, &SockOpt::RcvBufForce(o.rcvbuf / 2))?;
    }
    if o.passcred {
        cx.setsockopt(fd, &SockOpt::PassCred)?;
    }
    if o.reuseaddr {
        cx.setsockopt(fd, &SockOpt::ReuseAddr)?;
    }
    if o.reuseport {
        cx.setsockopt(fd, &SockOpt::ReusePort)?;
    }
    // Setting a size locks it against the kernel's tuning: the locks the program had.
    if let Some(lock) = o.buf_lock {
        if (o.sndbuf != 0 && lock & 1 == 0) || (o.rcvbuf != 0 && lock & 2 == 0) {
            cx.setsockopt(fd, &SockOpt::BufLock(lock & 3))?;
        }
    }
    Ok(())
}

/// Move two fresh descriptors to `tmp` and `tmp + 1`. Either may already sit on one of
/// those numbers (they are the lowest free ones), so both go above first.
pub(crate) fn park_pair(cx: &mut Ctx<'_>, a: u64, b: u64, tmp: u64) -> RestoreResult<(u64, u64)> {
    let high = [cx.dup_above(a, tmp + 2)?, cx.dup_above(b, tmp + 2)?];
    cx.close(a)?;
    cx.close(b)?;
    for (from, to) in [(high[0], tmp), (high[1], tmp + 1)] {
        cx.dup3(from, to, true)?;
        cx.close(from)?;
    }
    Ok((tmp, tmp + 1))
}

/// Which two-ended object a descriptor is one end of.
enum PairEnd<'a> {
    /// A pipe, the write end or not, and whether the descriptor is a further open file
    /// description of that end ([`pipe::further_description`]).
    Pipe(&'a PipeState, bool, bool),
    Socket(&'a SocketPairState, u8),
}

/// Put one end of a pipe or socket pair at descriptor `f`, creating the object first
/// (in this process, which then holds both ends until every process has its own).
fn place_pair_end(
    cx: &mut Ctx<'_>,
    ckpt: &Checkpoint,
    f: &crate::model::Fd,
    end: PairEnd<'_>,
    flags: u32,
    holders: &mut PipeHolders,
    dirs: &unix::HeldDirs,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let key = match end {
        PairEnd::Pipe(p, ..) => (0u8, p.id),
        PairEnd::Socket(sp, _) => (1u8, sp.id),
    };
    let (holder, a, b) = match holders.get(&key) {
        Some(h) => *h,
        None => {
            let k = holders.values().filter(|h| h.0 == proc_.pid).count() as u64;
            let tmp = pipe_tmp_base(proc_) + 2 * k;
            let (a, b) = match end {
                PairEnd::Pipe(pipe, ..) => {
                    pipe::create_pipe(cx, pipe, tmp, flags & libc::O_DIRECT as u32 != 0)?
                }
                PairEnd::Socket(sp, _) => unix::create_socketpair(cx, ckpt, sp, tmp, dirs)?,
            };
            holders.insert(key, (proc_.pid, a, b));
            (proc_.pid, a, b)
        }
    };
    let src = match end {
        PairEnd::Pipe(_, write, _) => {
            if write {
                b
            } else {
                a
            }
        }
        PairEnd::Socket(_, e) => {
            if e == 0 {
                a
            } else {
                b
            }
        }
    };
    let cl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let what = format!("pipe or socket end for descriptor {}", f.fd);
    if let PairEnd::Pipe(_, _, true) = end {
        // A description of its own of the same pipe end, as the program made it
        // through /proc/self/fd (non-blocking: never waits for a partner; the holder
        // keeps both ends open anyway).
        let (t, taken) = if holder == proc_.pid {
            (src, false)
        } else {
            (take_remote_fd(cx, holder, src, &what)?, true)
        };
        let access = flags as i32 & libc::O_ACCMODE;
        let n = cx.open(
            format!("/proc/self/fd/{t}").as_bytes(),
            access | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if taken {
            cx.close(t)?;
        }
        move_fd(cx, n?, f.fd, f.cloexec)?;
    } else if holder == proc_.pid {
        cx.call(&what, nr::DUP3, [src, f.fd as u64, cl, 0, 0, 0])?;
    } else {
        let n = take_remote_fd(cx, holder, src, &what)?;
        move_fd(cx, n, f.fd, f.cloexec)?;
    }
    set_status_flags(cx, f.fd, flags)
}

/// Connections a listener accepted (an end showing the listener's name) are made again
/// before any process binds its own sockets, through a listener bound to that name for
/// the time it takes (`unix::create_socketpair`): the name is free then, whichever
/// process holds the real listener. Each is kept by the first process that holds one
/// of its ends, as `place_pair_end` would have, and taken from there.
pub(crate) fn create_accepted_pairs(
    ctxs: &mut [Ctx<'_>],
    ckpt: &Checkpoint,
    holders: &mut PipeHolders,
    dirs: &unix::HeldDirs,
) -> RestoreResult<()> {
    for sp in ckpt.socketpairs.iter().filter(|sp| sp.accepted.is_some()) {
        let key = (1u8, sp.id);
        let holds = |p: &Process| {
            p.fds.iter().any(|f| {
                f.shared_with.is_none()
                    && matches!(f.kind, FdKind::UnixPair { id, .. } if id == sp.id)
            })
        };
        let Some(cx) = ctxs
            .iter_mut()
            .find(|c| !c.proc_.is_zombie() && holds(c.proc_))
        else {
            continue;
        };
        if holders.contains_key(&key) {
            continue;
        }
        raise_fd_limit(cx, ckpt)?;
        let pid = cx.proc_.pid;
        let k = holders.values().filter(|h| h.0 == pid).count() as u64;
        let tmp = pipe_tmp_base(cx.proc_) + 2 * k;
        let (a, b) = unix::create_socketpair(cx, ckpt, sp, tmp, dirs)?;
        holders.insert(key, (pid, a, b));
    }
    Ok(())
}

/// Give the process its descriptors; the pipes, socket pairs and FIFOs they refer to are
/// the image's (`ckpt`), the `--inherit-fd` descriptors the plan's (`inherit`).
pub(crate) fn restore_fds(
    cx: &mut Ctx<'_>,
    ckpt: &Checkpoint,
    inherit: &[(i32, String)],
    holders: &mut PipeHolders,
    files: &mut FileData,
    tty_slave: Option<i32>,
    ptys: &tty::PtyMasters,
) -> RestoreResult<()> {
    close_stub_std(cx)?;
    raise_fd_limit(cx, ckpt)?;
    let proc_ = cx.proc_;
    // TCP listeners first: a connection on a listener's port (one it accepted) is
    // bound next to it in repair mode, which the kernel allows; the other way round,
    // the listener could not bind its port once the connection is out of repair mode.
    // Before them, TCP sockets bound but not listening: with SO_REUSEADDR on both, a
    // socket may bind a port a socket not yet listening holds, not one listening.
    // fanotify groups last: their marks would see the files restore opens for the
    // other descriptors.
    let rank = |f: &Fd| match f.kind {
        FdKind::TcpUnconnected { .. } => 0,
        FdKind::TcpListen { .. } => 1,
        FdKind::Fanotify { .. } => 3,
        _ => 2,
    };
    for r in 0..4 {
        // (Pidfds of its own threads once they exist: `pidfd::open_after_threads`.)
        for f in proc_
            .fds
            .iter()
            .filter(|f| rank(f) == r && !pidfd::after_threads(proc_, f))
        {
            restore_fd(cx, f, ckpt, inherit, holders, files, tty_slave, ptys)?;
            restore_owner(cx, ckpt, f)?;
            restore_inode_owner(cx, f)?;
        }
    }
    // epoll registrations, once every descriptor they watch exists.
    epoll::register_targets(cx)
}

/// The signal owner and F_SETSIG signal of descriptor `f`, once it is in place (the
/// owner, checked at dump to be a process or group of the tree, exists by now). The
/// owner is named as the process's PID namespace numbers it (one nested inside the
/// tree's sees it by other IDs; plan checked that it sees it).
pub(crate) fn restore_owner(cx: &mut Ctx<'_>, ckpt: &Checkpoint, f: &Fd) -> RestoreResult<()> {
    let Some(o) = f.owner else {
        return Ok(());
    };
    if o.pid != 0 {
        let pid =
            crate::kinds::task::pidns::owner_seen_by(ckpt, cx.proc_, &o).ok_or_else(|| {
                RestoreError::Malformed(format!(
                    "descriptor {} of process {}: its signal owner {} is not seen from its PID \
                 namespace",
                    f.fd, cx.proc_.pid, o.pid
                ))
            })?;
        cx.set_owner(f.fd as u64, o.kind, pid)?;
    }
    if o.sig != 0 {
        cx.set_io_signal(f.fd as u64, o.sig)?;
    }
    Ok(())
}

/// A pipe or socket restore made gets the owner its inode had (the kernel gives it the
/// creator's filesystem IDs: here ckpt's, root, while the original's creator may have
/// been another user); for a socket this is also its `sk_uid` (what sock_diag reports
/// and uid routing uses). A descriptor sharing an earlier one's description has it.
/// Objects from outside the tree (inherited, external) are never touched.
pub(crate) fn restore_inode_owner(cx: &mut Ctx<'_>, f: &Fd) -> RestoreResult<()> {
    let Some(o) = f.inode_owner else {
        return Ok(());
    };
    let made = matches!(
        f.kind,
        FdKind::Pipe { .. }
            | FdKind::UnixPair { .. }
            | FdKind::UnixListen { .. }
            | FdKind::UnixDgram { .. }
            | FdKind::TcpListen { .. }
            | FdKind::TcpConn { .. }
            | FdKind::TcpQueued { .. }
            | FdKind::TcpUnconnected { .. }
            | FdKind::Netlink { .. }
            | FdKind::InetRaw { .. }
            | FdKind::Packet { .. }
            | FdKind::Udp { .. }
    );
    if !made || f.shared_with.is_some() {
        return Ok(());
    }
    cx.call(
        "fchown",
        nr::FCHOWN,
        [f.fd as u64, u64::from(o.uid), u64::from(o.gid), 0, 0, 0],
    )?;
    Ok(())
}

/// The stub holds ckpt's 0-2 (and nothing else): keep those the image inherits (one
/// batch; ckpt may have been started without some of them).
fn close_stub_std(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let closes: Vec<Call> = (0..3)
        .filter(|&fd| {
            !proc_
                .fds
                .iter()
                .any(|f| f.fd == fd && matches!(f.kind, FdKind::Inherited { .. }))
        })
        .map(|fd| Call::new("close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]).may_fail())
        .collect();
    for (c, r) in closes.iter().zip(cx.batch(&BatchArgs::new(), &closes)?) {
        let r = r as i64;
        if r < 0 && r != -(libc::EBADF as i64) {
            return Err(sys::SysError::Remote {
                what: c.what.clone(),
                errno: (-r) as i32,
            }
            .into());
        }
    }
    Ok(())
}

/// Room for the highest descriptor (and pipe temporaries) while we work; final limits
/// are set later.
fn raise_fd_limit(cx: &mut Ctx<'_>, ckpt: &Checkpoint) -> RestoreResult<()> {
    let pid = cx.pid();
    let (cur, hard) = sys::process::prlimit_get(pid, libc::RLIMIT_NOFILE)?;
    let pairs = (ckpt.pipes.len() + ckpt.socketpairs.len() + ckpt.fifos.len()) as u64;
    // (+4: park_pair goes two above the last temporaries)
    let need = (pipe_tmp_base(cx.proc_) + 2 * pairs + 4).max(cur);
    sys::process::prlimit_set(pid, libc::RLIMIT_NOFILE, need, hard.max(need))?;
    Ok(())
}

/// Put a descriptor created at `n` in its place `f.fd` and give it its status flags.
fn install(cx: &mut Ctx<'_>, n: u64, f: &Fd, flags: u32) -> RestoreResult<()> {
    move_fd(cx, n, f.fd, f.cloexec)?;
    set_status_flags(cx, f.fd, flags)
}

/// A standard descriptor that comes from outside (ckpt's own 0-2, or the new terminal
/// of `--new-tty`) gets the image's close-on-exec flag (the descriptor's) and the
/// status flags the program had on its description: O_NONBLOCK and O_ASYNC as
/// recorded (the program set them and its I/O depends on them), O_APPEND added if it
/// had it, and kept if the new description has it (whoever started the restore asked
/// for appending). The description is shared with whoever started `ckpt restore`, as
/// the original's was with whoever started it. Nothing to do if ckpt was started
/// without that descriptor.
pub(crate) fn place_inherited(cx: &mut Ctx<'_>, f: &Fd, flags: u32) -> RestoreResult<()> {
    let fd = f.fd as u64;
    let get = [Call::new(
        "fcntl(F_GETFL)",
        nr::FCNTL,
        [fd, libc::F_GETFL as u64, 0, 0, 0, 0],
    )
    .may_fail()];
    let cur = cx
        .batch(&BatchArgs::new(), &get)?
        .first()
        .copied()
        .unwrap_or(0) as i64;
    if cur == -(libc::EBADF as i64) {
        return Ok(());
    }
    if cur < 0 {
        return Err(sys::SysError::Remote {
            what: "fcntl(F_GETFL)".into(),
            errno: (-cur) as i32,
        }
        .into());
    }
    move_fd(cx, fd, f.fd, f.cloexec)?;
    set_status_flags(cx, f.fd, inherited_status_flags(cur as u32, flags))
}

/// The status flags an inherited descriptor gets: the image's `flags`, O_APPEND kept if
/// the description has it now (`cur`: the caller's, shared with whoever gave it).
pub(crate) fn inherited_status_flags(cur: u32, flags: u32) -> u32 {
    let append = (cur | flags) & libc::O_APPEND as u32;
    (flags & !(libc::O_APPEND as u32)) | append
}

/// Give the process descriptor `f`: the one dispatch over [`FdKind`] at restore.
#[allow(clippy::too_many_arguments)]
fn restore_fd(
    cx: &mut Ctx<'_>,
    f: &Fd,
    ckpt: &Checkpoint,
    inherit: &[(i32, String)],
    holders: &mut PipeHolders,
    files: &mut FileData,
    tty_slave: Option<i32>,
    ptys: &tty::PtyMasters,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    if let Some((q, qfd)) = f.shared_with {
        // The same open file description as an earlier descriptor: take that one.
        if q == proc_.pid {
            let cl = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            cx.call("dup3", nr::DUP3, [qfd as u64, f.fd as u64, cl, 0, 0, 0])?;
        } else {
            let what = format!("take descriptor {qfd} of process {q}");
            let n = take_remote_fd(cx, q, qfd as u64, &what)?;
            move_fd(cx, n, f.fd, f.cloexec)?;
        }
        return Ok(());
    }
    match &f.kind {
        FdKind::Inherited {
            tty: Some(_),
            flags,
            ..
        } if tty_slave.is_some() => {
            tty::place_new_tty(cx, f, tty_slave.unwrap_or_default())?;
            place_inherited(cx, f, *flags)
        }
        FdKind::Inherited { flags, .. } => place_inherited(cx, f, *flags),
        FdKind::Pipe { id, write, flags } => {
            let pipe = ckpt
                .pipes
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| RestoreError::Malformed(format!("unknown pipe {id}")))?;
            let again = pipe::further_description(ckpt, proc_.pid, f.fd, *id, *write);
            place_pair_end(
                cx,
                ckpt,
                f,
                PairEnd::Pipe(pipe, *write, again),
                *flags,
                holders,
                &files.held,
            )
        }
        FdKind::TcpListen { flags, .. } | FdKind::TcpQueued { flags, .. }
            if tcp::take_queued(cx, f, *flags, holders)? =>
        {
            Ok(())
        }
        FdKind::TcpQueued { conn, .. } => Err(RestoreError::Malformed(format!(
            "descriptor {}: no listener of the image made its connection {} -> {}",
            f.fd,
            tcp::show_inet(&conn.local),
            tcp::show_inet(&conn.peer)
        ))),
        FdKind::TcpListen {
            family,
            addr,
            backlog,
            reuseaddr,
            v6only,
            flags,
            opts,
            ..
        } => {
            let n = tcp::create_tcp_listener(
                cx,
                *family,
                addr,
                *backlog,
                *reuseaddr,
                *v6only,
                opts.as_deref(),
            )?;
            install(cx, n, f, *flags)
        }
        FdKind::TcpUnconnected { sock, flags } => {
            let n = tcp::create_tcp_unconnected(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::Netlink { sock, flags } => {
            let n = netlink::create_netlink(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::InetRaw { sock, flags } => {
            let n = inetraw::create_inet_raw(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::Packet { sock, flags } => {
            let n = packet::create_packet(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::TcpConn { conn, flags } => {
            let n = tcp::create_tcp_conn(cx, conn)?;
            install(cx, n, f, *flags)
        }
        FdKind::External { key, flags } => {
            let n = external::take_external(cx, f, key, inherit)?;
            install(cx, n, f, *flags)
        }
        FdKind::UnixDgram { sock, flags } => {
            let n = unix::create_unix_dgram(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::Udp { sock, flags } => {
            let n = udp::create_udp(cx, sock)?;
            install(cx, n, f, *flags)
        }
        FdKind::Memfd { flags, .. } | FdKind::DeletedFile { flags, .. } => {
            let n = file::make_file_fd(cx, f, files)?;
            install(cx, n, f, *flags)
        }
        FdKind::UnixPair { id, end, flags } => {
            let sp = ckpt
                .socketpairs
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| RestoreError::Malformed(format!("unknown socket pair {id}")))?;
            place_pair_end(
                cx,
                ckpt,
                f,
                PairEnd::Socket(sp, *end),
                *flags,
                holders,
                &files.held,
            )
        }
        FdKind::UnixListen {
            name,
            typ,
            backlog,
            flags,
            dir,
            opts,
        } => {
            let n = unix::create_listener(cx, (name, dir), *typ, *backlog, &files.held)?;
            set_sock_opts(cx, n, opts)?;
            install(cx, n, f, *flags)
        }
        FdKind::UnixPending {
            typ,
            name,
            opts,
            flags,
            dir,
            ..
        } => {
            let n = unix::create_pending(cx, *typ, (name, dir), opts, &files.held)?;
            install(cx, n, f, *flags)
        }
        FdKind::EventFd { .. } | FdKind::TimerFd { .. } | FdKind::SignalFd { .. } => {
            let n = anon::create_anon_fd(cx, &f.kind)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::Inotify { flags, watches } => {
            // A watch on a deleted file: on its recreated copy (made now if first).
            let mut deleted =
                |cx: &mut Ctx<'_>, data: u64| file::kept_deleted_shared(cx, ckpt, data, files);
            let n = inotify::create_inotify(cx, *flags, watches, &mut deleted)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::Fanotify {
            flags,
            init_flags,
            event_flags,
            marks,
        } => {
            let n = fanotify::create_fanotify(cx, *init_flags, *event_flags, marks)?;
            install(cx, n, f, *flags)
        }
        FdKind::Epoll { flags, .. } => {
            let n = epoll::create_epoll(cx, *flags)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::PosixMq { flags, .. } => {
            let n = mqueue::open_mq(cx, f, &f.kind)?;
            install(cx, n, f, *flags)
        }
        FdKind::Pidfd {
            reaped: Some(r),
            flags,
            ..
        } => {
            let n = pidfd::create_reaped(cx, r, *flags)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::Pidfd { pid, flags, .. } => {
            // pidfd_open takes the ID the process's own PID namespace gives (of a
            // process, or of a thread of a process built before).
            let seen =
                crate::kinds::task::pidns::tid_seen_by(ckpt, cx.proc_, *pid).ok_or_else(|| {
                    RestoreError::Malformed(format!(
                        "descriptor {} of process {}: a pidfd of process {pid}, which its PID \
                     namespace does not show",
                        f.fd, cx.proc_.pid
                    ))
                })?;
            let n = pidfd::create_pidfd(cx, seen, *flags)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::File {
            file,
            flags,
            pos,
            unlinked,
        } => {
            // A file given its removed name for an instant: held under that name.
            let key = if unlinked.is_empty() {
                held::HeldFiles::key(file)
            } else {
                file::held_key(&file.path, unlinked)
            };
            file::open_path_fd(cx, files, f, &key, *flags, Some(*pos))
        }
        FdKind::Device { file, flags, pos } => {
            let key = held::HeldFiles::key(file);
            file::open_path_fd(cx, files, f, &key, *flags, Some(*pos))
        }
        FdKind::Dir {
            file,
            flags,
            removed,
        } => {
            // A removed directory made again: held under its name " (deleted)".
            let key = if *removed {
                file::held_key(&file.path, &file.path)
            } else {
                file.path.clone()
            };
            file::open_path_fd(cx, files, f, &key, *flags, None)
        }
        FdKind::Fifo {
            file,
            id,
            flags,
            removed,
        } => {
            let fifo = ckpt
                .fifos
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| RestoreError::Malformed(format!("unknown FIFO {id}")))?;
            // A removed FIFO made again: held under its name " (deleted)".
            let key = if *removed {
                file::held_key(&file.path, &file.path)
            } else {
                file.path.clone()
            };
            fifo::place_fifo_end(cx, &files.held, f, fifo, &key, *flags, holders)
        }
        FdKind::Pty {
            index,
            master,
            flags,
        } => {
            let n = tty::make_pty_fd(cx, ptys, *index, *master, *flags)?;
            install(cx, n, f, *flags)
        }
        FdKind::DevTty { flags, .. } => {
            let n = tty::open_dev_tty(cx, *flags)?;
            install(cx, n, f, *flags)
        }
    }
}

/// Every process has its pipe ends now: the holders drop their temporaries.
pub(crate) fn close_holders(ctxs: &mut [Ctx<'_>], holders: PipeHolders) -> RestoreResult<()> {
    for (holder, r, w) in holders.into_values() {
        if let Some(cx) = ctxs.iter_mut().find(|c| c.proc_.pid == holder) {
            cx.close(r)?;
            if w != r {
                cx.close(w)?;
            }
        }
    }
    Ok(())
}
