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

mod conns;
mod postcopy;
use conns::*;
use postcopy::*;

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
    /// How long the tree was frozen before its copy ran (the downtime: the final dump,
    /// the transfer of its image, and the receiver's restore up to its confirmation).
    pub frozen_ms: f64,
    /// How long the tree here was held in all: `frozen_ms`, then, once the copy runs,
    /// (with `--lazy`) the wait for every page to arrive and the kill of the tree.
    pub held_ms: f64,
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
    /// Processes of the final dump whose VmFlags came from the smaps read before the
    /// freeze (no write lock of their address space since), not read frozen.
    pub early_smaps: usize,
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
/// if a SIGKILL prevented that, by the next migration). The final image, written with
/// the tree frozen, goes to a second one in memory (`/dev/shm`) when the first is on a
/// disk: written there, its pages would be subject to the disk's dirty-page
/// throttling, which other writers to that disk decide (measured: 1.2 s for a 60 MB
/// final image while builds wrote to the disk).
struct WorkDir {
    dir: PathBuf,
    /// Where the final image goes (`dir` itself when it is in memory already).
    fin: Option<PathBuf>,
}

/// The directories of the migrations' images (see [`WorkDir`]).
const WORK_BASE: &str = "/run/ckpt/migrate";
const FINAL_BASE: &str = "/dev/shm";
const FINAL_PREFIX: &str = "ckpt-migrate-";

impl WorkDir {
    fn create(pid: i32) -> Result<WorkDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = Path::new(WORK_BASE);
        std::fs::create_dir_all(base)
            .map_err(|e| format!("cannot make {}: {e}", base.display()))?;
        // Those of migrations killed (SIGKILL) before they could remove theirs.
        let gone = |name: &str| {
            let owner = name
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse::<i32>().ok());
            owner.is_some_and(|o| !Path::new(&format!("/proc/{o}")).exists())
        };
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            if gone(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        for e in std::fs::read_dir(FINAL_BASE)
            .into_iter()
            .flatten()
            .flatten()
        {
            // (Anyone may write to /dev/shm: only directories of ours go.)
            use std::os::unix::fs::MetadataExt;
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = std::fs::symlink_metadata(e.path())
                .is_ok_and(|m| m.is_dir() && m.uid() == rustix::process::geteuid().as_raw());
            if name.starts_with(FINAL_PREFIX) && ours && gone(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let name = format!("{pid}-{}", std::process::id());
        let mk = |d: &Path| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(|e| format!("cannot make {}: {e}", d.display()))
        };
        let d = base.join(&name);
        mk(&d)?;
        let mut w = WorkDir { dir: d, fin: None };
        if !sys::file::in_memory(&w.dir) && sys::file::in_memory(Path::new(FINAL_BASE)) {
            let f = Path::new(FINAL_BASE).join(format!("{FINAL_PREFIX}{name}"));
            // Without it the final image goes with the others.
            if mk(&f).is_ok() {
                w.fin = Some(f);
            }
        }
        Ok(w)
    }

    fn round(&self, k: u32) -> PathBuf {
        self.dir.join(format!("round-{k}.img"))
    }

    /// Where the final image (round `k`) goes.
    fn last(&self, k: u32) -> PathBuf {
        match &self.fin {
            Some(f) => f.join(format!("round-{k}.img")),
            None => self.round(k),
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(f) = &self.fin {
            let _ = std::fs::remove_dir_all(f);
        }
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
    /// When the receiver confirmed that its copy runs.
    committed_at: Option<Instant>,
    /// `--lazy`: COMMIT went, and no word since says the copy never ran: it may have
    /// used the tree's connections (see `abort_connections`).
    copy_may_run: bool,
    /// The tree's TCP sockets and their lock, from the freeze on (see `tcp_sockets`).
    tcp: TcpPart,
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
                transient: true,
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
    // Its VmFlags, read while the tree runs: the final dump keeps those of each process
    // whose address space took no write lock since (`kinds::mem::early`).
    let early = match crate::kinds::mem::early::EarlySmaps::read(pid) {
        Ok(e) => Some(Arc::new(e)),
        Err(why) => {
            say(&format!(
                "VmFlags are read with the tree frozen (no early read: {why})"
            ));
            None
        }
    };
    crate::error::time_mark("migrate: early VmFlags read");
    point("migrate: early VmFlags read", &conn);
    // The final dump: frozen, the tree killed only once the receiver confirms.
    let k = last + 1;
    let path = dir.last(k);
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
        committed_at: None,
        copy_may_run: false,
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
        transient: true,
        early_smaps: early,
        ..opts.dump.clone()
    };
    let t = Instant::now();
    let res = dump::dump(pid, Output::Path(path.clone()), &d);
    let dump_end = Instant::now();
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
    // The downtime ends when the copy runs: the tree here is then only waited for
    // (with --lazy, until its pages are in) and killed.
    let after_copy = st
        .committed_at
        .map(|c| dump_end.saturating_duration_since(c))
        .unwrap_or_default();
    stats.frozen_ms = dumped.frozen.saturating_sub(after_copy).as_secs_f64() * 1e3;
    stats.held_ms = dumped.frozen.as_secs_f64() * 1e3;
    stats.lazy = st.lazy;
    stats.post_copy_ms = st.post_copy.as_secs_f64() * 1e3;
    stats.post_copy_bytes = st.post_copy_bytes;
    stats.early_smaps = dumped.early_smaps;
    stats.bytes_sent = st.conn.sent;
    stats.restored_pid = st.restored_pid;
    stats.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(stats)
}

/// The final image is written and the tree frozen: send it, let the receiver plan
/// and stage, then arm the stop and tell it to commit. `Ok` only once it confirmed.
fn final_phase(pid: i32, path: &Path, k: u32, st: &mut State) -> Result<(), String> {
    crate::error::time_mark("migrate: final phase");
    let meta = crate::restore::chain::meta_of(path).map_err(|e| e.to_string())?;
    crate::error::time_mark("migrate: final image's metadata read");
    if st.lazy {
        let r = prepare_tcp(&meta, st).and_then(|()| final_phase_lazy(pid, path, k, st));
        return r.map_err(|e| after_lazy_failure(&meta, st, e));
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

/// Send the final image, let the receiver plan and stage, then arm the stop and tell
/// it to commit. `Ok` only once it confirmed.
fn final_exchange(pid: i32, path: &Path, k: u32, st: &mut State) -> Result<(), String> {
    let t = Instant::now();
    send_image(&mut st.conn, path, k, true)?;
    st.final_send = t.elapsed();
    point("migrate: final sent", &st.conn);
    crate::error::time_mark("migrate: final image sent");
    // Plan's refusals come back here, with their message.
    st.conn
        .expect(Kind::Staged)
        .map_err(|e| format!("the receiver cannot restore it: {e}"))?;
    point("migrate: staged", &st.conn);
    crate::error::time_mark("migrate: staged");
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
            st.committed_at = Some(Instant::now());
            crate::error::time_mark("migrate: committed");
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
