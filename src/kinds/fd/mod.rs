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

use std::collections::BTreeMap;

use crate::arch::x86::nr;
use crate::error::{RestoreError, RestoreResult as Result};
use crate::kinds::fd::file::FileData;
use crate::model::{Checkpoint, Fd, FdKind, PipeState, Process, SocketPairState};
use crate::remote::{BatchArgs, Ctx, move_fd, set_status_flags, setsockopt_u32, take_remote_fd};
use crate::sys;
use crate::sys::inject::Call;

// ---- restore (stage) ----

/// Pipes created so far: id -> (holder process, temporary read fd, temporary write fd).
/// The holder keeps both ends at temporary numbers until every process has its
/// descriptors; others take them with pidfd_getfd.
/// Socket pairs are held the same way, under (1, id); pipes under (0, id); FIFOs under
/// (2, id), by one read-write descriptor (both numbers the same).
pub(crate) type PipeHolders = BTreeMap<(u8, u64), (i32, u64, u64)>;

/// Where a process keeps pipe ends temporarily: above all its own descriptors.
pub(crate) fn pipe_tmp_base(proc_: &Process) -> u64 {
    proc_
        .fds
        .iter()
        .map(|f| f.fd as u64 + 1)
        .max()
        .unwrap_or(3)
        .max(3)
}

/// Queue `data` on descriptor `fd` of the target (`nr` is write, or sendto for a TCP
/// socket in repair mode), in chunks through the scratch area; a short write is an error
/// naming `what`, never silently lost data.
pub(crate) fn queue_data(
    cx: &mut Ctx<'_>,
    nr: u64,
    fd: u64,
    data: &[u8],
    what: &str,
) -> Result<()> {
    const CHUNK: usize = 1 << 19;
    for chunk in data.chunks(CHUNK) {
        let a = cx.put(4096, chunk)?;
        let n = cx.call(
            &format!("queue {what} data"),
            nr,
            [fd, a, chunk.len() as u64, 0, 0, 0],
        )?;
        if n != chunk.len() as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: only {n} of {} queued bytes could be put back",
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Socket options recorded at dump (0 buffer sizes: not recorded). The kernel doubles
/// the buffer size it is given, so half the recorded value is set, with the FORCE
/// variants so that the system-wide maximum does not cut it.
pub(crate) fn set_sock_opts(cx: &mut Ctx<'_>, fd: u64, o: &crate::model::SockOpts) -> Result<()> {
    const SO_SNDBUFFORCE: i32 = 32;
    const SO_RCVBUFFORCE: i32 = 33;
    if o.sndbuf != 0 {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            SO_SNDBUFFORCE,
            o.sndbuf / 2,
            "SO_SNDBUFFORCE",
        )?;
    }
    if o.rcvbuf != 0 {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            SO_RCVBUFFORCE,
            o.rcvbuf / 2,
            "SO_RCVBUFFORCE",
        )?;
    }
    if o.passcred {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            1,
            "SO_PASSCRED",
        )?;
    }
    if o.reuseaddr {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
            "SO_REUSEADDR",
        )?;
    }
    if o.reuseport {
        setsockopt_u32(
            cx,
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            1,
            "SO_REUSEPORT",
        )?;
    }
    Ok(())
}

/// Move two fresh descriptors to `tmp` and `tmp + 1`. Either may already sit on one of
/// those numbers (they are the lowest free ones), so both go above first.
pub(crate) fn park_pair(cx: &mut Ctx<'_>, a: u64, b: u64, tmp: u64) -> Result<(u64, u64)> {
    let mut high = [0u64; 2];
    for (i, fd) in [a, b].into_iter().enumerate() {
        high[i] = cx.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            nr::FCNTL,
            [fd, libc::F_DUPFD_CLOEXEC as u64, tmp + 2, 0, 0, 0],
        )?;
    }
    for fd in [a, b] {
        cx.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
    }
    for (from, to) in [(high[0], tmp), (high[1], tmp + 1)] {
        cx.call(
            "dup3",
            nr::DUP3,
            [from, to, libc::O_CLOEXEC as u64, 0, 0, 0],
        )?;
        cx.call("close", nr::CLOSE, [from, 0, 0, 0, 0, 0])?;
    }
    Ok((tmp, tmp + 1))
}

/// Which two-ended object a descriptor is one end of.
enum PairEnd<'a> {
    Pipe(&'a PipeState, bool),
    Socket(&'a SocketPairState, u8),
}

/// Put one end of a pipe or socket pair at descriptor `f`, creating the object first
/// (in this process, which then holds both ends until every process has its own).
fn place_pair_end(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    end: PairEnd<'_>,
    flags: u32,
    holders: &mut PipeHolders,
) -> Result<()> {
    let proc_ = cx.proc_;
    let key = match end {
        PairEnd::Pipe(p, _) => (0u8, p.id),
        PairEnd::Socket(sp, _) => (1u8, sp.id),
    };
    let (holder, a, b) = match holders.get(&key) {
        Some(h) => *h,
        None => {
            let k = holders.values().filter(|h| h.0 == proc_.pid).count() as u64;
            let tmp = pipe_tmp_base(proc_) + 2 * k;
            let (a, b) = match end {
                PairEnd::Pipe(pipe, _) => {
                    pipe::create_pipe(cx, pipe, tmp, flags & libc::O_DIRECT as u32 != 0)?
                }
                PairEnd::Socket(sp, _) => unix::create_socketpair(cx, sp, tmp)?,
            };
            holders.insert(key, (proc_.pid, a, b));
            (proc_.pid, a, b)
        }
    };
    let src = match end {
        PairEnd::Pipe(_, write) => {
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
    if holder == proc_.pid {
        cx.call(&what, nr::DUP3, [src, f.fd as u64, cl, 0, 0, 0])?;
    } else {
        let n = take_remote_fd(cx, holder, src, &what)?;
        move_fd(cx, n, f.fd, f.cloexec)?;
    }
    set_status_flags(cx, f.fd, flags)
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
) -> Result<()> {
    close_stub_std(cx)?;
    raise_fd_limit(cx, ckpt)?;
    let proc_ = cx.proc_;
    for f in &proc_.fds {
        restore_fd(cx, f, ckpt, inherit, holders, files, tty_slave)?;
    }
    // epoll registrations, once every descriptor they watch exists.
    epoll::register_targets(cx)
}

/// The stub holds ckpt's 0-2 (and nothing else): keep those the image inherits (one
/// batch; ckpt may have been started without some of them).
fn close_stub_std(cx: &mut Ctx<'_>) -> Result<()> {
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
fn raise_fd_limit(cx: &mut Ctx<'_>, ckpt: &Checkpoint) -> Result<()> {
    let pid = cx.pid();
    let (cur, hard) = sys::process::prlimit_get(pid, libc::RLIMIT_NOFILE)?;
    let pairs = (ckpt.pipes.len() + ckpt.socketpairs.len() + ckpt.fifos.len()) as u64;
    // (+4: park_pair goes two above the last temporaries)
    let need = (pipe_tmp_base(cx.proc_) + 2 * pairs + 4).max(cur);
    sys::process::prlimit_set(pid, libc::RLIMIT_NOFILE, need, hard.max(need))?;
    Ok(())
}

/// Put a descriptor created at `n` in its place `f.fd` and give it its status flags.
fn install(cx: &mut Ctx<'_>, n: u64, f: &Fd, flags: u32) -> Result<()> {
    move_fd(cx, n, f.fd, f.cloexec)?;
    set_status_flags(cx, f.fd, flags)
}

/// Give the process descriptor `f`: the one dispatch over [`FdKind`] at restore.
fn restore_fd(
    cx: &mut Ctx<'_>,
    f: &Fd,
    ckpt: &Checkpoint,
    inherit: &[(i32, String)],
    holders: &mut PipeHolders,
    files: &mut FileData,
    tty_slave: Option<i32>,
) -> Result<()> {
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
        FdKind::Inherited { tty: Some(_), .. } if tty_slave.is_some() => {
            tty::place_new_tty(cx, f, tty_slave.unwrap_or_default())
        }
        FdKind::Inherited { .. } => Ok(()),
        FdKind::Pipe { id, write, flags } => {
            let pipe = ckpt
                .pipes
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| RestoreError::Malformed(format!("unknown pipe {id}")))?;
            place_pair_end(cx, f, PairEnd::Pipe(pipe, *write), *flags, holders)
        }
        FdKind::TcpListen {
            family,
            addr,
            backlog,
            reuseaddr,
            v6only,
            flags,
        } => {
            let n = tcp::create_tcp_listener(cx, *family, addr, *backlog, *reuseaddr, *v6only)?;
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
            place_pair_end(cx, f, PairEnd::Socket(sp, *end), *flags, holders)
        }
        FdKind::UnixListen {
            name,
            typ,
            backlog,
            flags,
        } => {
            let n = unix::create_listener(cx, name, *typ, *backlog)?;
            install(cx, n, f, *flags)
        }
        FdKind::EventFd { .. } | FdKind::TimerFd { .. } | FdKind::SignalFd { .. } => {
            let n = anon::create_anon_fd(cx, &f.kind)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::Inotify { flags, watches } => {
            let n = inotify::create_inotify(cx, *flags, watches)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::Epoll { flags, .. } => {
            let n = epoll::create_epoll(cx, *flags)?;
            move_fd(cx, n, f.fd, f.cloexec)
        }
        FdKind::File { file, flags, pos } | FdKind::Device { file, flags, pos } => {
            file::open_path_fd(cx, f, &file.path, *flags, Some(*pos))
        }
        FdKind::Dir { file, flags } => file::open_path_fd(cx, f, &file.path, *flags, None),
        FdKind::Fifo { file, id, flags } => {
            let fifo = ckpt
                .fifos
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| RestoreError::Malformed(format!("unknown FIFO {id}")))?;
            fifo::place_fifo_end(cx, f, fifo, &file.path, *flags, holders)
        }
    }
}

/// Every process has its pipe ends now: the holders drop their temporaries.
pub(crate) fn close_holders(ctxs: &mut [Ctx<'_>], holders: PipeHolders) -> Result<()> {
    for (holder, r, w) in holders.into_values() {
        if let Some(cx) = ctxs.iter_mut().find(|c| c.proc_.pid == holder) {
            cx.call("close", nr::CLOSE, [r, 0, 0, 0, 0, 0])?;
            if w != r {
                cx.call("close", nr::CLOSE, [w, 0, 0, 0, 0, 0])?;
            }
        }
    }
    Ok(())
}
