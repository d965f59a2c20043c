//! The holder of a tracked tree (`ckpt dump --track`): a small `ckpt` process of its own
//! that keeps the tree's write-tracking userfaultfds open between dumps (the kernel
//! unregisters an area when the last descriptor of its userfaultfd closes), and knows
//! which image the tracking is relative to. One per tracked tree, found by the root's
//! PID under [`STATE_DIR`]: `PID.json` (its state, written by the holder) and `PID.sock`
//! (a unix socket it answers on: `ping`, `update JSON` after an incremental dump,
//! `untrack`). It ends, closing the userfaultfds, when told to (`ckpt untrack`, a failed
//! or killing incremental dump) or when the root process is gone (checked every 20 ms).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DumpError, Result};
use crate::kinds::mem::track::Tracked;
use crate::model::ParentImage;
use crate::sys::{self, SysError};

/// Where the holders keep their state and sockets.
pub const STATE_DIR: &str = "/run/ckpt/track";

/// What a dump does about write tracking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Incremental {
    /// Nothing (a plain dump).
    #[default]
    No,
    /// A full image, the tree left running and tracked from now on (`--track`).
    Track,
    /// Only the pages written since the image at this path, which must be the last
    /// image of the tree's tracking (`--parent`).
    Parent(PathBuf),
}

/// One tracked process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrackedProcess {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells a reused PID from the process.
    pub starttime: u64,
    /// The registered areas (as at the full dump).
    pub areas: Vec<(u64, u64)>,
    /// The descriptor of its userfaultfd in the holder, when handed over.
    #[serde(default)]
    pub fd: i32,
}

/// A tracked tree, as its holder's state file says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrackState {
    /// The root of the tree.
    pub pid: i32,
    pub starttime: u64,
    /// The holder's PID.
    #[serde(default)]
    pub holder: i32,
    /// The image the written pages are counted from (the last of the chain).
    pub last: ParentImage,
    pub processes: Vec<TrackedProcess>,
    /// A process (PID, start time) the tracking ends with (`ckpt migrate`, see
    /// [`set_owner`]): when it is gone, the holder untracks the tree.
    #[serde(default)]
    pub owner: Option<(i32, u64)>,
}

fn state_path(pid: i32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{pid}.json"))
}

fn sock_path(pid: i32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{pid}.sock"))
}

/// Field 22 of /proc/PID/stat (None: no such process, or a zombie).
pub(crate) fn starttime(pid: i32) -> Option<u64> {
    let st = sys::proc::stat(pid).ok()?;
    (st.state != b'Z' && st.state != b'X').then(|| st.field(22))
}

/// The identity of the image at `path` (read from its end record), with its absolute
/// path.
pub fn image_identity(path: &Path) -> Result<ParentImage> {
    use std::io::{Read, Seek, SeekFrom};
    let abs = std::path::absolute(path).map_err(|e| SysError::io(path.display().to_string(), e))?;
    let mut f = std::fs::File::open(&abs)
        .map_err(|e| SysError::io(format!("open {}", abs.display()), e))?;
    let mut tail = vec![0u8; crate::image::END_RECORD_LEN];
    f.seek(SeekFrom::End(-(crate::image::END_RECORD_LEN as i64)))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| SysError::io(format!("read the end of {}", abs.display()), e))?;
    let (records, hash) = crate::image::identity(&tail)?;
    Ok(ParentImage {
        path: abs.to_string_lossy().into_owned(),
        records,
        hash,
    })
}

/// The pages each process of the image at `path` left to its parent (shared copy on
/// write: `Process::cow_from_parent`), by PID, sorted and merged. Such a page is not in
/// the image's data of the process: a later image cannot inherit it from there, and
/// stores it instead. In a tree with a PID namespace of its own (image PIDs are not
/// ckpt's), every process gets all processes' ranges together.
pub(crate) fn cow_ranges_of(path: &Path) -> Result<CowRanges> {
    let f = std::fs::File::open(path)
        .map_err(|e| SysError::io(format!("open {}", path.display()), e))?;
    let mut r = crate::image::ImageReader::new(std::io::BufReader::new(f))?;
    let rec = r
        .next_record()?
        .ok_or_else(|| DumpError::Refused(format!("{} has no metadata record", path.display())))?;
    let meta: crate::model::Checkpoint = crate::image::decode_meta(rec.tag, rec.payload)?;
    let own_ids = meta.own_pid_namespace || meta.pid_namespace_init_outside;
    let mut by_pid = std::collections::BTreeMap::new();
    let mut all = Vec::new();
    for p in &meta.processes {
        let mine = crate::kinds::mem::track::union(&p.cow_from_parent, &[]);
        all = crate::kinds::mem::track::union(&all, &mine);
        by_pid.insert(p.pid, mine);
    }
    Ok(CowRanges {
        by_pid,
        all: own_ids.then_some(all),
    })
}

/// See [`cow_ranges_of`].
pub(crate) struct CowRanges {
    by_pid: std::collections::BTreeMap<i32, Vec<(u64, u64)>>,
    all: Option<Vec<(u64, u64)>>,
}

impl CowRanges {
    /// The ranges process `pid` (as ckpt sees it) must store rather than inherit.
    pub(crate) fn of(&self, pid: i32) -> &[(u64, u64)] {
        match &self.all {
            Some(all) => all,
            None => self.by_pid.get(&pid).map_or(&[], |v| v.as_slice()),
        }
    }
}

/// Send one request to the holder of `pid` and return its answer.
fn ask(pid: i32, req: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock_path(pid))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// The tracking of the tree rooted at `pid`, if a live holder has it. Stale files (a
/// holder that died, or a PID reused) are removed.
pub fn state(pid: i32) -> Result<Option<TrackState>> {
    let Ok(text) = std::fs::read(state_path(pid)) else {
        return Ok(None);
    };
    let st: Option<TrackState> = serde_json::from_slice(&text).ok();
    let live = st
        .as_ref()
        .is_some_and(|st| starttime(pid) == Some(st.starttime))
        && ask(pid, "ping").is_ok_and(|a| a == "ok");
    if !live {
        remove_files(pid);
        return Ok(None);
    }
    Ok(st)
}

fn remove_files(pid: i32) {
    let _ = std::fs::remove_file(sock_path(pid));
    let _ = std::fs::remove_file(state_path(pid));
}

/// Stop tracking the tree rooted at `pid`: its holder closes the userfaultfds (which
/// unregisters every area and clears every page's protection) and goes. Returns whether
/// it was tracked.
pub fn untrack(pid: i32) -> Result<bool> {
    if !state_path(pid).exists() && !sock_path(pid).exists() {
        return Ok(false);
    }
    let answer = ask(pid, "untrack");
    remove_files(pid);
    match answer {
        Ok(a) if a == "ok" => Ok(true),
        // No holder listening: nothing holds the userfaultfds any more.
        Ok(_) | Err(_) => Ok(false),
    }
}

/// Make the tracking of the tree rooted at `pid` end with this process (`ckpt
/// migrate`: a migration that dies, even by SIGKILL, leaves its source untracked).
pub fn set_owner(pid: i32) -> Result<()> {
    let me = std::process::id() as i32;
    let start = starttime(me).unwrap_or(0);
    match ask(pid, &format!("owner {me} {start}")) {
        Ok(a) if a == "ok" => Ok(()),
        Ok(a) => Err(DumpError::Refused(format!(
            "the tracking holder of {pid} refused to take an owner: {a}"
        ))),
        Err(e) => Err(SysError::io(format!("ask the tracking holder of {pid}"), e).into()),
    }
}

/// Tell the holder of `pid` that the tracking now counts from image `last`.
pub(crate) fn update(pid: i32, last: &ParentImage) -> Result<()> {
    let json = serde_json::to_string(last).map_err(|e| SysError::Other(e.to_string()))?;
    match ask(pid, &format!("update {json}")) {
        Ok(a) if a == "ok" => Ok(()),
        Ok(a) => Err(SysError::Other(format!("the tracking holder answered {a:?}")).into()),
        Err(e) => Err(SysError::io("tell the tracking holder about the new image", e).into()),
    }
}

/// Start the holder of a newly tracked tree: `ckpt track-hold` (this program, run again)
/// with the userfaultfds as inherited descriptors; returns once it listens.
pub(crate) fn spawn_holder(mut st: TrackState, tracked: Vec<Tracked>) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    for (p, t) in st.processes.iter_mut().zip(&tracked) {
        sys::wptrack::inheritable(t.uffd.as_fd())?;
        p.fd = t.uffd.as_fd().as_raw_fd();
    }
    let spec = serde_json::to_string(&st).map_err(|e| SysError::Other(e.to_string()))?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("track-hold")
        .arg(spec)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| SysError::io("start the tracking holder (ckpt track-hold)", e))?;
    // Ours are closed now; the holder has its own.
    drop(tracked);
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim_end() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        remove_files(st.pid);
        return Err(DumpError::Refused(format!(
            "the tracking holder did not start: {}",
            line.trim_end()
        )));
    }
    Ok(())
}

fn write_state(st: &TrackState) -> std::io::Result<()> {
    let tmp = Path::new(STATE_DIR).join(format!(".{}.json.tmp", st.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default())?;
    std::fs::rename(&tmp, state_path(st.pid))
}

/// The holder (`ckpt track-hold SPEC`, started by [`spawn_holder`]): returns its exit
/// status.
pub fn hold_main(spec: &str) -> i32 {
    let say = |m: &str| {
        println!("{m}");
        let _ = std::io::stdout().flush();
    };
    let mut st: TrackState = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("bad spec: {e}"));
            return 1;
        }
    };
    let mut uffds: Vec<OwnedFd> = Vec::new();
    for p in &st.processes {
        match sys::wptrack::inherited(p.fd) {
            Ok(fd) => uffds.push(fd),
            Err(e) => {
                say(&format!("descriptor {}: {e}", p.fd));
                return 1;
            }
        }
    }
    st.holder = std::process::id() as i32;
    let listener = (|| -> std::io::Result<UnixListener> {
        std::fs::create_dir_all(STATE_DIR)?;
        // Only root reaches the holders' sockets and state files (ckpt is root-only).
        std::fs::set_permissions(
            STATE_DIR,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let _ = std::fs::remove_file(sock_path(st.pid));
        let l = UnixListener::bind(sock_path(st.pid))?;
        l.set_nonblocking(true)?;
        write_state(&st)?;
        Ok(l)
    })();
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            say(&format!("{STATE_DIR}: {e}"));
            remove_files(st.pid);
            return 1;
        }
    };
    say("ready");
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                if serve(s, &mut st, &mut uffds) {
                    return 0;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        if starttime(st.pid) != Some(st.starttime) {
            break;
        }
        if let Some((pid, start)) = st.owner {
            if starttime(pid) != Some(start) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(uffds);
    remove_files(st.pid);
    0
}

/// Answer one request; true when the holder is to end (the userfaultfds are closed).
fn serve(s: UnixStream, st: &mut TrackState, uffds: &mut Vec<OwnedFd>) -> bool {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    if r.read_line(&mut line).is_err() {
        return false;
    }
    let mut w = &s;
    let line = line.trim_end();
    if line == "ping" {
        let _ = w.write_all(b"ok\n");
        false
    } else if line == "untrack" {
        // Closing the last descriptor of each userfaultfd unregisters its areas.
        uffds.clear();
        remove_files(st.pid);
        let _ = w.write_all(b"ok\n");
        true
    } else if let Some(owner) = line.strip_prefix("owner ") {
        let mut it = owner.split(' ').map(|x| x.parse::<u64>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(pid), Some(start)) => {
                st.owner = Some((pid as i32, start));
                let ok = write_state(st).is_ok();
                let _ = w.write_all(if ok { b"ok\n" } else { b"error\n" });
            }
            _ => {
                let _ = w.write_all(b"error\n");
            }
        }
        false
    } else if let Some(json) = line.strip_prefix("update ") {
        match serde_json::from_str::<ParentImage>(json) {
            Ok(last) => {
                st.last = last;
                let ok = write_state(st).is_ok();
                let _ = w.write_all(if ok { b"ok\n" } else { b"error\n" });
            }
            Err(_) => {
                let _ = w.write_all(b"error\n");
            }
        }
        false
    } else {
        let _ = w.write_all(b"unknown request\n");
        false
    }
}
