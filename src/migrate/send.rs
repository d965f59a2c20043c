//! The source of a migration (`ckpt migrate`): pre-copy rounds while the tree runs,
//! then the final dump, whose tree is killed only once the receiver says its copy is
//! past its point of no return.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Conn, ImageEnd, ImageHead, Kind, Message, point};
use crate::dump::{self, DumpOptions, DumpStep, Output, track};
use crate::kinds::fd::tcp;
use crate::sys;

/// What `ckpt migrate` is asked to do.
#[derive(Clone, Default)]
pub struct MigrateOptions {
    /// Pre-copy rounds after the full one at most (the final dump not counted).
    pub rounds: u32,
    /// The dump options (external, compress, freeze_cgroup, progress); leave_running,
    /// incremental and hook are the migration's own.
    pub dump: DumpOptions,
    /// Called at each step with a line for the user.
    pub say: Option<super::Say>,
    /// `--lazy`: post-copy; the receiver's copy runs before the final image's pages
    /// arrive, the tree here kept frozen until every one did.
    pub lazy: bool,
}

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    /// "full", "delta" (the tree running) or "final" (the tree frozen).
    pub kind: &'static str,
    pub pages: u64,
    pub bytes: u64,
    /// Dumping it and sending it, in milliseconds.
    pub dump_ms: f64,
    pub send_ms: f64,
}

/// What a migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateStats {
    pub pid: i32,
    pub rounds: Vec<Round>,
    /// Bytes sent over the connection (frames included).
    pub bytes_sent: u64,
    /// How long the tree was frozen (the final dump, the transfer of its image, and
    /// the receiver's restore up to its confirmation).
    pub frozen_ms: f64,
    pub total_ms: f64,
    /// The restored root's PID on the receiver (as its PID namespace there shows it).
    pub restored_pid: i32,
    /// `--lazy`: post-copy was used.
    pub lazy: bool,
    /// `--lazy`: from the receiver's confirmation that its copy runs to its word that
    /// every page arrived (the tree here frozen meanwhile; not in `frozen_ms`).
    pub post_copy_ms: f64,
    /// `--lazy`: the final image's page bytes sent after it.
    pub post_copy_bytes: u64,
}

/// How a migration failed.
#[derive(Debug)]
pub enum MigrateError {
    /// It did not happen: the source tree runs on as before, untracked, and the
    /// receiver has nothing.
    Failed(String),
    /// The receiver was told to commit but its answer never came: it may run the
    /// tree. The source tree is kept stopped (SIGSTOP) so that two copies never run;
    /// `pids` are its processes.
    Unresolved {
        pid: i32,
        pids: Vec<i32>,
        why: String,
        /// What became of its TCP connections, when it has some.
        tcp: Option<String>,
    },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Failed(m) => write!(
                f,
                "{m}; the process runs on here as before (not tracked), nothing is left on the receiver"
            ),
            MigrateError::Unresolved {
                pid,
                pids,
                why,
                tcp,
            } => write!(
                f,
                "the receiver was told to run the process but did not confirm it ({why}): \
                 it may be running there. Process {pid} is kept STOPPED here (SIGSTOP) so \
                 that two copies never run. If it runs on the receiver, end this one with \
                 `kill -KILL {}`; if not, resume it with `kill -CONT {}`{}",
                join(pids),
                join(pids),
                tcp.as_deref().map(|t| format!(". {t}")).unwrap_or_default()
            ),
        }
    }
}

fn join(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The source's images while it migrates: a private directory, removed at the end (or,
/// if a SIGKILL prevented that, by the next migration).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(pid: i32) -> Result<WorkDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = Path::new("/run/ckpt/migrate");
        std::fs::create_dir_all(base)
            .map_err(|e| format!("cannot make {}: {e}", base.display()))?;
        // Those of migrations killed (SIGKILL) before they could remove theirs.
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let owner = name
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse::<i32>().ok());
            if owner.is_some_and(|o| !Path::new(&format!("/proc/{o}")).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = base.join(format!("{pid}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(|e| format!("cannot make {}: {e}", d.display()))?;
        Ok(WorkDir(d))
    }

    fn round(&self, k: u32) -> PathBuf {
        self.0.join(format!("round-{k}.img"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the migration stands, shared with the final dump's hook.
struct State {
    conn: Conn,
    /// The processes sent SIGSTOP before COMMIT (see `arm`).
    armed: Vec<i32>,
    /// COMMIT was sent and no answer came.
    unresolved: Option<String>,
    restored_pid: i32,
    final_send: Duration,
    lazy: bool,
    post_copy: Duration,
    post_copy_bytes: u64,
    /// The tree's TCP sockets and their lock, from the freeze on (see `tcp_sockets`).
    tcp: TcpPart,
}

/// The TCP sockets of the frozen tree: their lock (a netfilter table of ours with the
/// owner flag: it goes with this process, however it ends) and, when the receiver
/// shares our network namespace, the room made for its copy.
#[derive(Default)]
struct TcpPart {
    /// The receiver is in our network namespace (see `same_namespace`): the copy's
    /// sockets need the source's addresses, so the source's sockets leave them.
    make_room: bool,
    held: Vec<Held>,
    lock: Option<sys::netlock::Handover>,
    /// Indexes into `held` of the sockets disconnected to make room.
    parked: Vec<usize>,
}

/// A TCP socket of the frozen tree: ckpt's duplicate of descriptor `fd` of `pid`.
struct Held {
    pid: i32,
    fd: i32,
    sock: std::os::fd::OwnedFd,
    what: sys::tcp::Endpoint,
}

impl Held {
    fn conn(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.what {
            sys::tcp::Endpoint::Conn { local, peer } => Some((local.clone(), peer.clone())),
            sys::tcp::Endpoint::Listen { .. } => None,
        }
    }
}

/// The TCP connections and listeners of the frozen tree rooted at `pid` (each socket
/// once, however many descriptors lead to it).
fn tcp_sockets(pid: i32) -> Result<Vec<Held>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in tree_pids(pid) {
        let dir = format!("/proc/{p}/fd");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            let Some(ino) = link
                .strip_prefix("socket:[")
                .and_then(|x| x.strip_suffix(']'))
            else {
                continue;
            };
            if !seen.insert(ino.to_string()) {
                continue;
            }
            let sock = sys::process::steal_fd(p, fd)
                .map_err(|e| format!("process {p}, descriptor {fd}: {e}"))?;
            let what = sys::tcp::endpoint_of(&sock)
                .map_err(|e| format!("process {p}, descriptor {fd}: {e}"))?;
            if let Some(what) = what {
                out.push(Held {
                    pid: p,
                    fd,
                    sock,
                    what,
                });
            }
        }
    }
    Ok(out)
}

/// At the freeze: lock the tree's TCP connections before anything of them is read (a
/// segment the peer sent later would be acknowledged by the kernel and lost).
fn lock_at_freeze(pid: i32, st: &mut State) -> Result<(), String> {
    st.tcp.held = tcp_sockets(pid)?;
    let conns: Vec<_> = st.tcp.held.iter().filter_map(Held::conn).collect();
    st.tcp.lock = sys::netlock::Handover::hold(&conns)
        .map_err(|e| format!("cannot lock the tree's TCP connections: {e}"))?;
    Ok(())
}

/// Before the final image goes: every connection of the image locked, and, within one
/// network namespace, the source's sockets out of the way of the copy's (disconnected
/// in repair mode, which sends nothing: the peer sees a delay).
fn prepare_tcp(meta: &crate::model::Checkpoint, st: &mut State) -> Result<(), String> {
    check_tcp(meta, st.tcp.make_room)?;
    if crate::kinds::ns::owns(meta, "net") {
        // The tree's network namespace goes with it: its peers are in the tree.
        return Ok(());
    }
    let conns = crate::kinds::ns::locked_connections(meta);
    let missing: Vec<_> = conns
        .into_iter()
        .filter(|c| !st.tcp.held.iter().any(|h| h.conn().as_ref() == Some(c)))
        .collect();
    if let Some((l, p)) = missing.first() {
        if st.tcp.make_room {
            return Err(format!(
                "the TCP connection {} -> {} was not found among the tree's descriptors at \
                 the freeze: it cannot be moved within one network namespace",
                tcp::show_inet(l),
                tcp::show_inet(p)
            ));
        }
        match &mut st.tcp.lock {
            Some(lock) => lock.add(&missing),
            None => sys::netlock::Handover::hold(&missing).map(|l| st.tcp.lock = l),
        }
        .map_err(|e| format!("cannot lock the tree's TCP connections: {e}"))?;
    }
    if st.tcp.make_room {
        for (i, h) in st.tcp.held.iter().enumerate() {
            sys::tcp::disconnect(&h.sock).map_err(|e| {
                format!(
                    "process {}, descriptor {}: cannot make room for the copy: {e}",
                    h.pid, h.fd
                )
            })?;
            st.tcp.parked.push(i);
        }
    }
    Ok(())
}

/// The sockets `prepare_tcp` disconnected, as they were: each connection built again
/// on its socket from the image (`meta`), then, once they all are, the listeners
/// listen again. What could not be rebuilt stays parked (another try may follow).
fn unpark(meta: &crate::model::Checkpoint, t: &mut TcpPart) -> Result<(), String> {
    let mut errs = Vec::new();
    let mut left = Vec::new();
    for &i in &t.parked {
        let Some(h) = t.held.get(i) else { continue };
        let sys::tcp::Endpoint::Conn { local, peer } = &h.what else {
            continue;
        };
        let r = match image_conn(meta, local, peer) {
            Some(c) => tcp::rebuild_in_place(&h.sock, c),
            None => Err("not in the image".into()),
        };
        if let Err(e) = r {
            errs.push(format!("process {}, descriptor {}: {e}", h.pid, h.fd));
            left.push(i);
        }
    }
    if errs.is_empty() {
        for &i in &t.parked {
            let Some(h) = t.held.get(i) else { continue };
            if let sys::tcp::Endpoint::Listen { backlog } = &h.what {
                if let Err(e) = sys::tcp::listen(&h.sock, *backlog) {
                    errs.push(format!("process {}, descriptor {}: {e}", h.pid, h.fd));
                    left.push(i);
                }
            }
        }
    } else {
        left.extend(
            t.parked
                .iter()
                .filter(|i| {
                    t.held
                        .get(**i)
                        .is_some_and(|h| matches!(h.what, sys::tcp::Endpoint::Listen { .. }))
                })
                .copied(),
        );
    }
    t.parked = left;
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the source's TCP sockets could not all be rebuilt ({})",
            errs.join("; ")
        ))
    }
}

/// The image's record of connection (local, peer).
fn image_conn<'a>(
    meta: &'a crate::model::Checkpoint,
    local: &[u8],
    peer: &[u8],
) -> Option<&'a crate::model::TcpState> {
    meta.processes
        .iter()
        .flat_map(|p| &p.fds)
        .find_map(|f| match &f.kind {
            crate::model::FdKind::TcpConn { conn, .. }
                if conn.local == local && conn.peer == peer =>
            {
                Some(&**conn)
            }
            _ => None,
        })
}

/// Whether the receiver at the other end of `s` is in our network namespace: a
/// connection to an address of our own has that address at both ends.
fn same_namespace(s: &TcpStream) -> bool {
    match (s.local_addr(), s.peer_addr()) {
        (Ok(l), Ok(p)) => l.ip() == p.ip(),
        _ => false,
    }
}

/// The processes of the tree rooted at `pid` (frozen: it does not change).
fn tree_pids(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Ok(kids) = sys::proc::children(out[i]) {
            for k in kids {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        i += 1;
    }
    out
}

/// What `ckpt migrate` cannot move, refused before the tree is frozen for good. Within
/// one network namespace (`make_room`) the source's sockets leave their addresses to
/// the copy and must be built again if it does not come: only established connections
/// can be, and a listener must let the copy's bind its port beside it (SO_REUSEADDR or
/// SO_REUSEPORT).
fn check_tcp(meta: &crate::model::Checkpoint, make_room: bool) -> Result<(), String> {
    if crate::kinds::ns::owns(meta, "net") {
        return Ok(());
    }
    if !make_room {
        // A connection over the loopback interface has its peer on this host, in this
        // network namespace: it cannot follow the process to another one.
        for p in &meta.processes {
            for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
                let crate::model::FdKind::TcpConn { conn, .. } = &f.kind else {
                    continue;
                };
                let loopback = match tcp::inet_addr(&conn.local).map(|a| a.ip()) {
                    Some(std::net::IpAddr::V4(a)) => a.is_loopback(),
                    Some(std::net::IpAddr::V6(a)) => {
                        a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
                    }
                    None => false,
                };
                if loopback {
                    return Err(format!(
                        "process {}, descriptor {}: the TCP connection {} -> {} is over the \
                         loopback interface: its peer is on this host and it cannot move to \
                         the receiver's network namespace (a receiver in this one can take it)",
                        p.pid,
                        f.fd,
                        tcp::show_inet(&conn.local),
                        tcp::show_inet(&conn.peer)
                    ));
                }
            }
        }
        return Ok(());
    }
    let why = "`ckpt migrate` to a receiver in the same network namespace moves only \
               established connections and listeners with SO_REUSEADDR or SO_REUSEPORT \
               (the source's sockets make room for the copy's and are built again if it \
               does not come)";
    for p in &meta.processes {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            match &f.kind {
                crate::model::FdKind::TcpConn { conn, .. }
                    if conn.state != 0 && conn.state != sys::tcp::TCP_ESTABLISHED =>
                {
                    return Err(format!(
                        "process {}, descriptor {}: the TCP connection {} -> {} is {}: {why}",
                        p.pid,
                        f.fd,
                        tcp::show_inet(&conn.local),
                        tcp::show_inet(&conn.peer),
                        tcp::state_name(conn.state)
                    ));
                }
                crate::model::FdKind::TcpListen {
                    addr,
                    reuseaddr,
                    opts,
                    ..
                } => {
                    let reuseport = opts.as_ref().is_some_and(|o| {
                        o.ints.iter().any(|i| {
                            i.level == libc::SOL_SOCKET
                                && i.name == libc::SO_REUSEPORT
                                && i.value != 0
                        })
                    });
                    if !reuseaddr && !reuseport {
                        return Err(format!(
                            "process {}, descriptor {}: the TCP listener on {} has neither \
                             SO_REUSEADDR nor SO_REUSEPORT: {why}",
                            p.pid,
                            f.fd,
                            tcp::show_inet(addr)
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Send the image at `path` as round `round`; returns its size.
fn send_image(conn: &mut Conn, path: &Path, round: u32, last: bool) -> Result<u64, String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let id = track::image_identity(path).map_err(|e| e.to_string())?;
    conn.send_json(
        Kind::Image,
        &ImageHead {
            round,
            size,
            last,
            held: 0,
        },
    )?;
    let mut buf = vec![0u8; super::MAX_PAYLOAD];
    let mut left = size;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        conn.send(Kind::Data, &buf[..n])?;
        left -= n as u64;
    }
    conn.send_json(
        Kind::End,
        &ImageEnd {
            records: id.records,
            hash: id.hash,
        },
    )?;
    conn.expect(Kind::Received)?;
    Ok(size)
}

/// Migrate the tree rooted at `pid` to the receiver at `to`.
pub fn migrate(pid: i32, to: &str, opts: &MigrateOptions) -> Result<MigrateStats, MigrateError> {
    let t0 = Instant::now();
    let say = |m: &str| {
        if let Some(s) = &opts.say {
            s(m)
        }
    };
    let fail = MigrateError::Failed;
    let addr = to
        .to_socket_addrs()
        .map_err(|e| fail(format!("{to}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("{to}: no address")))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| fail(format!("cannot connect to the receiver at {to}: {e}")))?;
    let make_room = same_namespace(&stream);
    let mut conn = Conn::new(stream).map_err(|e| fail(e.to_string()))?;
    let theirs = conn.handshake(true).map_err(fail)?;
    if opts.lazy && !theirs.lazy {
        let m = format!(
            "the receiver (ckpt {}) does not take --lazy migrations",
            theirs.version
        );
        conn.send_error(&m);
        return Err(fail(m));
    }
    let dir = WorkDir::create(pid).map_err(fail)?;
    let mut stats = MigrateStats {
        pid,
        ..Default::default()
    };
    // The pre-copy rounds, the tree running.
    let precopy = (|| -> Result<u32, String> {
        let mut k = 0;
        loop {
            let path = dir.round(k);
            let incremental = if k == 0 {
                track::Incremental::Track
            } else {
                track::Incremental::Parent(dir.round(k - 1))
            };
            let d = DumpOptions {
                leave_running: true,
                incremental,
                hook: None,
                ..opts.dump.clone()
            };
            let t = Instant::now();
            let st = dump::dump(pid, Output::Path(path.clone()), &d).map_err(|e| e.to_string())?;
            if k == 0 {
                // A migration that dies leaves its source untracked.
                track::set_owner(pid).map_err(|e| e.to_string())?;
            }
            let dump_ms = t.elapsed().as_secs_f64() * 1e3;
            let meta = crate::restore::chain::meta_of(&path).map_err(|e| e.to_string())?;
            check_tcp(&meta, make_room)?;
            if opts.lazy {
                // Refused while the process runs (and once more at the final image).
                refuse_tcp_post_copy(&meta)?;
            }
            let t = Instant::now();
            let bytes = send_image(&mut conn, &path, k, false)?;
            point("migrate: round sent", &conn);
            if k > 0 {
                let _ = std::fs::remove_file(dir.round(k - 1));
            }
            let r = Round {
                round: k,
                kind: if k == 0 { "full" } else { "delta" },
                pages: st.pages_written,
                bytes,
                dump_ms,
                send_ms: t.elapsed().as_secs_f64() * 1e3,
            };
            say(&format!(
                "round {k}: {} pages ({:.1} MiB) dumped in {:.1} ms, sent in {:.1} ms",
                r.pages,
                bytes as f64 / (1 << 20) as f64,
                r.dump_ms,
                r.send_ms
            ));
            let shrinking = stats.rounds.last().is_none_or(|prev| r.pages < prev.pages);
            stats.rounds.push(r);
            if k >= opts.rounds || !shrinking || stats.rounds[k as usize].pages == 0 {
                return Ok(k);
            }
            k += 1;
        }
    })();
    let last = match precopy {
        Ok(k) => k,
        Err(e) => {
            let _ = track::untrack(pid);
            conn.send_error(&format!("the source gave up: {e}"));
            return Err(fail(e));
        }
    };
    // The final dump: frozen, the tree killed only once the receiver confirms.
    let k = last + 1;
    let path = dir.round(k);
    let state = Arc::new(Mutex::new(State {
        conn,
        armed: Vec::new(),
        unresolved: None,
        restored_pid: 0,
        final_send: Duration::ZERO,
        tcp: TcpPart {
            make_room,
            ..Default::default()
        },
        lazy: opts.lazy,
        post_copy: Duration::ZERO,
        post_copy_bytes: 0,
    }));
    let hook_state = state.clone();
    let hook_path = path.clone();
    let hook: dump::DumpHook = Arc::new(move |step| {
        let Ok(mut st) = hook_state.lock() else {
            return Err("internal error: the migration's state is poisoned".into());
        };
        let r = match step {
            DumpStep::Frozen => lock_at_freeze(pid, &mut st),
            DumpStep::Written => final_phase(pid, &hook_path, k, &mut st),
        };
        if let Err(e) = &r {
            if st.unresolved.is_none() {
                st.conn.send_error(&format!("the source gave up: {e}"));
            }
        }
        r
    });
    let d = DumpOptions {
        leave_running: false,
        incremental: track::Incremental::Parent(dir.round(last)),
        hook: Some(hook),
        net_locked: true,
        ..opts.dump.clone()
    };
    let t = Instant::now();
    let res = dump::dump(pid, Output::Path(path.clone()), &d);
    let Ok(mut st) = state.lock() else {
        return Err(fail(
            "internal error: the migration's state is poisoned".into(),
        ));
    };
    let dumped = match res {
        Ok(s) => s,
        Err(e) => {
            // The dump let the tree go (untracked); a pending SIGSTOP stops it.
            let _ = track::untrack(pid);
            let tcp = unresolved_tcp(&st.tcp);
            if let Some(l) = st.tcp.lock.take() {
                l.release();
            }
            if let Some(why) = st.unresolved.take() {
                return Err(MigrateError::Unresolved {
                    pid,
                    pids: st.armed.clone(),
                    why,
                    tcp,
                });
            }
            st.conn.send_error(&format!("the source gave up: {e}"));
            return Err(fail(e.to_string()));
        }
    };
    // The tree is gone: the copy's peers may send again (on the receiver, or here
    // within one namespace, where the receiver's lock was released at its commit).
    if let Some(l) = st.tcp.lock.take() {
        l.release();
    }
    let send_ms = st.final_send.as_secs_f64() * 1e3;
    stats.rounds.push(Round {
        round: k,
        kind: "final",
        pages: dumped.pages_written,
        bytes: dumped.image_bytes,
        dump_ms: (t.elapsed().as_secs_f64() * 1e3 - send_ms).max(0.0),
        send_ms,
    });
    // With --lazy the tree stays frozen after the copy runs, until its pages are in:
    // that is not downtime.
    stats.frozen_ms = dumped.frozen.saturating_sub(st.post_copy).as_secs_f64() * 1e3;
    stats.lazy = st.lazy;
    stats.post_copy_ms = st.post_copy.as_secs_f64() * 1e3;
    stats.post_copy_bytes = st.post_copy_bytes;
    stats.bytes_sent = st.conn.sent;
    stats.restored_pid = st.restored_pid;
    stats.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(stats)
}

/// `--lazy` does not move TCP connections yet: the copy would run on them while the
/// source, frozen until every page is in, still holds them in the lock.
fn refuse_tcp_post_copy(meta: &crate::model::Checkpoint) -> Result<(), String> {
    if crate::kinds::ns::owns(meta, "net") {
        return Ok(());
    }
    match crate::kinds::ns::locked_connections(meta).first() {
        Some((l, p)) => Err(format!(
            "the tree has a TCP connection ({} -> {}): `ckpt migrate --lazy` does not move \
             TCP connections yet (migrate without --lazy does)",
            tcp::show_inet(l),
            tcp::show_inet(p)
        )),
        None => Ok(()),
    }
}

/// The final image is written and the tree frozen: send it, let the receiver plan
/// and stage, then arm the stop and tell it to commit. `Ok` only once it confirmed.
fn final_phase(pid: i32, path: &Path, k: u32, st: &mut State) -> Result<(), String> {
    let meta = crate::restore::chain::meta_of(path).map_err(|e| e.to_string())?;
    if st.lazy {
        refuse_tcp_post_copy(&meta)?;
        return final_phase_lazy(pid, path, k, st);
    }
    let r = prepare_tcp(&meta, st).and_then(|()| final_exchange(pid, path, k, st));
    if let Err(e) = &r {
        if st.tcp.parked.is_empty() {
            return r;
        }
        if st.unresolved.is_none() {
            // Not run there: the source's sockets as they were (it runs on with them),
            // once the receiver's, which its failed restore closes, are gone.
            unpark_within(&meta, &mut st.tcp, UNPARK_WAIT).map_err(|u| format!("{e}; {u}"))?;
        } else if settle_by_connections(&meta, st) {
            return Err(format!(
                "{e}; but no copy runs on the receiver: the addresses of every TCP \
                 connection of the tree were free again in this network namespace (the \
                 receiver's sockets for them are gone) and the connections were rebuilt here"
            ));
        }
    }
    r
}

/// COMMIT was sent and no answer came, the receiver in our network namespace: a
/// connection's four addresses belong to one socket at a time there. If within a
/// second every connection of the tree can be built again here, the receiver holds
/// none of them (a copy that committed holds them all; one that did not has closed
/// them with its stubs), so the migration failed: the stop is taken back and the
/// source runs on. Otherwise it stays unresolved (the copy runs there, or the
/// receiver's stubs still hold them).
fn settle_by_connections(meta: &crate::model::Checkpoint, st: &mut State) -> bool {
    if st.tcp.held.iter().all(|h| h.conn().is_none()) {
        return false;
    }
    if unpark_within(meta, &mut st.tcp, Duration::from_secs(1)).is_ok() {
        st.unresolved = None;
        disarm(st);
        return true;
    }
    false
}

/// How long a failed migration waits for the receiver's sockets to go before it gives
/// up rebuilding the source's (the receiver closes them as its restore fails).
const UNPARK_WAIT: Duration = Duration::from_secs(5);

/// [`unpark`], tried again for up to `limit` while some connection's addresses are
/// still taken.
fn unpark_within(
    meta: &crate::model::Checkpoint,
    t: &mut TcpPart,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match unpark(meta, t) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What an unresolved migration leaves of the tree's TCP connections.
fn unresolved_tcp(t: &TcpPart) -> Option<String> {
    if t.held.iter().all(|h| h.conn().is_none()) {
        return None;
    }
    let lock = "The lock of its TCP connections here (netfilter table inet \
                ckpt_migrate_<this ckpt's PID>) went with this ckpt: nothing to remove";
    Some(if t.parked.is_empty() {
        lock.to_string()
    } else {
        format!(
            "{lock}. Its TCP connections are held by another socket in this network \
             namespace, most likely the copy's on the receiver (its own sockets here made \
             room for them and could not be rebuilt): resumed, it would find them closed"
        )
    })
}

/// Send the final image, let the receiver plan and stage, then arm the stop and tell
/// it to commit. `Ok` only once it confirmed.
fn final_exchange(pid: i32, path: &Path, k: u32, st: &mut State) -> Result<(), String> {
    let t = Instant::now();
    send_image(&mut st.conn, path, k, true)?;
    st.final_send = t.elapsed();
    point("migrate: final sent", &st.conn);
    // Plan's refusals come back here, with their message.
    st.conn
        .expect(Kind::Staged)
        .map_err(|e| format!("the receiver cannot restore it: {e}"))?;
    point("migrate: staged", &st.conn);
    // From now on a ckpt that dies leaves the tree stopped, never running beside the
    // copy the receiver may have committed: a SIGSTOP waits in each process (it acts
    // once ptrace lets them go; the kill that follows a confirmation overrides it).
    arm(pid, st);
    if let Err(e) = st.conn.send(Kind::Commit, b"") {
        // Never sent: the receiver gives up when COMMIT does not come.
        disarm(st);
        return Err(e);
    }
    point("migrate: commit sent", &st.conn);
    match st.conn.recv() {
        Ok(f) if f.kind == Kind::Committed => {
            st.restored_pid = f.json::<Message>().map(|m| m.pid).unwrap_or(0);
            Ok(())
        }
        Ok(f) if f.kind == Kind::Error => {
            // Failed before its point of no return: nothing runs there.
            disarm(st);
            Err(format!(
                "the receiver failed to restore it: {}",
                f.json::<Message>().map(|m| m.message).unwrap_or_default()
            ))
        }
        Ok(f) => {
            let why = format!("it sent {:?}", f.kind);
            st.unresolved = Some(why.clone());
            Err(why)
        }
        Err(e) => {
            st.unresolved = Some(e.clone());
            Err(e)
        }
    }
}

fn arm(pid: i32, st: &mut State) {
    st.armed = tree_pids(pid);
    for p in &st.armed {
        let _ = sys::process::kill(*p, libc::SIGSTOP);
    }
}

/// Take the armed stop back: SIGCONT discards a pending SIGSTOP (and is itself
/// ignored by default).
fn disarm(st: &mut State) {
    for p in st.armed.drain(..) {
        let _ = sys::process::kill(p, libc::SIGCONT);
    }
}

// ---- `--lazy`: post-copy ----

/// The held ranges of the final image (the payloads of its plain page records), sent
/// after it: those the receiver asks for first, then the rest in order.
struct Push {
    file: std::fs::File,
    ranges: Vec<(u64, u64)>,
    sent: Vec<bool>,
    left: usize,
    next: usize,
    asked: std::collections::VecDeque<usize>,
    /// The range being sent, how far, and whether the receiver asked for it.
    at: Option<(usize, u64, bool)>,
    /// A range of the background push set aside for one asked for, and how far.
    paused: Option<(usize, u64)>,
    bytes: u64,
}

impl Push {
    fn want(&mut self, payload: &[u8]) -> Result<(), String> {
        let off = payload
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| "a bad WANT message from the receiver".to_string())?;
        let i = self
            .ranges
            .binary_search_by_key(&off, |r| r.0)
            .map_err(|_| format!("the receiver asked for pages at byte {off}, never held"))?;
        if !self.sent[i] {
            self.asked.push_back(i);
        }
        Ok(())
    }

    /// Send one frame of pages.
    fn step(&mut self, conn: &mut Conn) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        if let Some((i, done, false)) = self.at {
            if self.asked.iter().any(|&a| !self.sent[a] && a != i) {
                // What the receiver waits for goes first.
                self.paused = Some((i, done));
                self.at = None;
            }
        }
        let (i, done, asked) = match self.at {
            Some(x) => x,
            None => loop {
                match self.asked.pop_front() {
                    Some(i) if !self.sent[i] && self.paused.is_none_or(|p| p.0 != i) => {
                        break (i, 0, true);
                    }
                    Some(_) => continue,
                    None if self.paused.is_some() => {
                        let (i, done) = self.paused.take().unwrap_or_default();
                        break (i, done, false);
                    }
                    None => {
                        while self.sent.get(self.next).is_some_and(|s| *s) {
                            self.next += 1;
                        }
                        break (self.next, 0, false);
                    }
                }
            },
        };
        let Some(&(off, len)) = self.ranges.get(i) else {
            return Ok(());
        };
        // (The test brake slows the background push only, not what is asked for.)
        let most = if asked {
            super::MAX_PAYLOAD - 8
        } else {
            super::push_brake()
        };
        let n = (len - done).min(most as u64) as usize;
        let mut buf = vec![0u8; 8 + n];
        buf[..8].copy_from_slice(&(off + done).to_le_bytes());
        self.file
            .read_exact_at(&mut buf[8..], off + done)
            .map_err(|e| format!("cannot read the final image: {e}"))?;
        conn.send(Kind::Pages, &buf)?;
        self.bytes += n as u64;
        let done = done + n as u64;
        if done == len {
            self.sent[i] = true;
            self.left -= 1;
            self.at = None;
        } else {
            self.at = Some((i, done, asked));
        }
        Ok(())
    }
}

/// Nothing to read on the connection now.
fn quiet(conn: &Conn) -> Result<bool, String> {
    use std::os::fd::AsRawFd;
    let mut fds = [libc::pollfd {
        fd: conn.stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let n = sys::uffd::poll(&mut fds, 0).map_err(|e| e.to_string())?;
    Ok(n == 0)
}

/// Send pages (those asked for first) until a frame other than WANT comes.
fn pump(conn: &mut Conn, push: &mut Push) -> Result<super::Frame, String> {
    loop {
        if push.left > 0 && quiet(conn)? {
            push.step(conn)?;
            continue;
        }
        let f = conn.recv()?;
        if f.kind == Kind::Want {
            push.want(&f.payload)?;
            continue;
        }
        return Ok(f);
    }
}

/// Send the final image without its page payloads, then those as the receiver plans,
/// stages, commits and runs the copy; `Ok` once every page is there.
fn final_phase_lazy(pid: i32, path: &Path, k: u32, st: &mut State) -> Result<(), String> {
    let t = Instant::now();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let entries = crate::image::index::scan(&file).map_err(|e| e.to_string())?;
    let ranges: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e.tag == crate::image::tag::PAGES && e.len > 0)
        .map(|e| (e.data_off, e.len))
        .collect();
    send_image_held(&mut st.conn, path, k, &ranges)?;
    st.final_send = t.elapsed();
    point("migrate: final sent", &st.conn);
    let n = ranges.len();
    let mut push = Push {
        file,
        ranges,
        sent: vec![false; n],
        left: n,
        next: 0,
        asked: Default::default(),
        at: None,
        paused: None,
        bytes: 0,
    };
    // Until COMMIT: any failure leaves no copy there.
    let f = pump(&mut st.conn, &mut push)?;
    match f.kind {
        Kind::Staged => {}
        Kind::Error => {
            return Err(format!(
                "the receiver cannot restore it: {}",
                f.json::<Message>().map(|m| m.message).unwrap_or_default()
            ));
        }
        k => return Err(format!("the receiver sent {k:?} where STAGED was due")),
    }
    point("migrate: staged", &st.conn);
    arm(pid, st);
    if let Err(e) = st.conn.send(Kind::Commit, b"") {
        disarm(st);
        return Err(e);
    }
    point("migrate: commit sent", &st.conn);
    let mut committed_at = None;
    let r = (|| -> Result<(), String> {
        loop {
            let f = pump(&mut st.conn, &mut push)?;
            match f.kind {
                Kind::Committed if committed_at.is_none() => {
                    committed_at = Some(Instant::now());
                    st.restored_pid = f.json::<Message>().map(|m| m.pid).unwrap_or(0);
                    point("migrate: committed", &st.conn);
                }
                Kind::AllIn if committed_at.is_some() => return Ok(()),
                Kind::Error => {
                    return Err(format!(
                        "\u{0}{}",
                        f.json::<Message>().map(|m| m.message).unwrap_or_default()
                    ));
                }
                k => return Err(format!("the receiver sent {k:?} while pages were due")),
            }
        }
    })();
    st.post_copy = committed_at.map(|c| c.elapsed()).unwrap_or_default();
    st.post_copy_bytes = push.bytes;
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.starts_with('\u{0}') => {
            // The receiver failed, its copy gone (or never run).
            disarm(st);
            Err(format!("the receiver failed to restore it: {}", &e[1..]))
        }
        Err(e) if push.left > 0 => {
            // Pages never reached the receiver: its copy (if it ran) cannot go on and
            // is killed there once it notices (within LAZY_TIMEOUT): wait that long,
            // then this one runs on.
            std::thread::sleep(super::LAZY_GRACE);
            disarm(st);
            Err(format!(
                "{e}; {} page ranges had not been sent: the copy on the receiver cannot \
                 run without them and is killed there",
                push.left
            ))
        }
        Err(e) => {
            st.unresolved = Some(e.clone());
            Err(e)
        }
    }
}

/// Send the image at `path` as round `round` (the last), without the byte `ranges`.
fn send_image_held(
    conn: &mut Conn,
    path: &Path,
    round: u32,
    ranges: &[(u64, u64)],
) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let id = track::image_identity(path).map_err(|e| e.to_string())?;
    conn.send_json(
        Kind::Image,
        &ImageHead {
            round,
            size,
            last: true,
            held: ranges.len() as u64,
        },
    )?;
    for c in ranges.chunks(super::MAX_PAYLOAD / 16) {
        let mut b = Vec::with_capacity(c.len() * 16);
        for (o, l) in c {
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        conn.send(Kind::Held, &b)?;
    }
    // The bytes between the held ranges, in frames of at most MAX_PAYLOAD.
    let mut buf = Vec::with_capacity(super::MAX_PAYLOAD);
    let mut at = 0u64;
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    for &(o, l) in ranges {
        if o > at {
            gaps.push((at, o));
        }
        at = o + l;
    }
    if at < size {
        gaps.push((at, size));
    }
    for (mut s, e) in gaps {
        while s < e {
            let room = super::MAX_PAYLOAD - buf.len();
            let n = ((e - s) as usize).min(room);
            let old = buf.len();
            buf.resize(old + n, 0);
            f.read_exact_at(&mut buf[old..], s)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            s += n as u64;
            if buf.len() == super::MAX_PAYLOAD {
                conn.send(Kind::Data, &buf)?;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        conn.send(Kind::Data, &buf)?;
    }
    conn.send_json(
        Kind::End,
        &ImageEnd {
            records: id.records,
            hash: id.hash,
        },
    )?;
    conn.expect(Kind::Received)?;
    Ok(size)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, fd, process};
    use crate::model::{FdKind, IntSockOpt, TcpOpts, TcpState};

    fn v4(port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&[127, 0, 0, 1]);
        a.resize(16, 0);
        a
    }

    fn conn(state: u8) -> FdKind {
        FdKind::TcpConn {
            conn: Box::new(TcpState {
                family: libc::AF_INET,
                local: v4(8080),
                peer: v4(40000),
                state,
                ..TcpState::default()
            }),
            flags: 0,
        }
    }

    fn listener(reuseaddr: bool, reuseport: bool) -> FdKind {
        let ints = if reuseport {
            vec![IntSockOpt {
                level: libc::SOL_SOCKET,
                name: libc::SO_REUSEPORT,
                value: 1,
            }]
        } else {
            Vec::new()
        };
        FdKind::TcpListen {
            family: libc::AF_INET,
            addr: v4(8080),
            backlog: 16,
            reuseaddr,
            v6only: false,
            flags: 0,
            opts: Some(Box::new(TcpOpts {
                ints,
                ..TcpOpts::default()
            })),
        }
    }

    fn image(kinds: Vec<FdKind>) -> crate::model::Checkpoint {
        let mut p = process(100);
        p.fds = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| fd(3 + i as i32, k))
            .collect();
        checkpoint(vec![p])
    }

    /// Within one namespace: established connections and listeners with a reuse
    /// option pass; a half-closed connection and a listener without one are refused,
    /// naming the process, the descriptor and the socket. To another namespace,
    /// everything restore takes passes.
    #[test]
    fn what_moves_within_one_namespace() {
        let ok = image(vec![
            conn(sys::tcp::TCP_ESTABLISHED),
            listener(true, false),
            listener(false, true),
        ]);
        assert_eq!(check_tcp(&ok, true), Ok(()));
        let half = image(vec![conn(sys::tcp::TCP_FIN_WAIT1)]);
        let e = check_tcp(&half, true).err().unwrap_or_default();
        assert!(
            e.contains("process 100, descriptor 3")
                && e.contains("127.0.0.1:8080 -> 127.0.0.1:40000")
                && e.contains("FIN_WAIT1"),
            "{e}"
        );
        // To another namespace: a loopback connection cannot follow.
        let e = check_tcp(&half, false).err().unwrap_or_default();
        assert!(e.contains("loopback"), "{e}");
        let bare = image(vec![conn(0), listener(false, false)]);
        let e = check_tcp(&bare, true).err().unwrap_or_default();
        assert!(
            e.contains("descriptor 4") && e.contains("neither SO_REUSEADDR nor SO_REUSEPORT"),
            "{e}"
        );
        let e = check_tcp(&bare, false).err().unwrap_or_default();
        assert!(e.contains("descriptor 3") && e.contains("loopback"), "{e}");
        let mut far = bare.clone();
        if let FdKind::TcpConn { conn, .. } = &mut far.processes[0].fds[0].kind {
            conn.local[4..8].copy_from_slice(&[10, 1, 2, 3]);
        }
        assert_eq!(check_tcp(&far, false), Ok(()));
    }
}
