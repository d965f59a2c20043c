//! FIFOs (named pipes): ends, data in flight.

use super::OpenFd;
use super::file::file_id_checked;
use crate::arch::native::nr;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::pipe::fill_pipe;
use crate::kinds::fd::{PipeHolders, pipe_tmp_base};
use crate::kinds::unsupported;
use crate::model::FifoState;
use crate::model::{Checkpoint, FileId};
use crate::model::{FdKind, Process};
use crate::remote::{Ctx, move_fd};
use crate::sys;
use crate::sys::proc as procfs;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

// ---- collect (dump) ----

/// A FIFO: its pipe (data, capacity) is read once the whole tree is known
/// ([`resolve_fifos`]).
pub(crate) fn collect(d: &OpenFd) -> DumpResult<FdKind> {
    if d.flags & libc::O_PATH as u32 != 0 {
        return Err(d.not_yet("an O_PATH descriptor of a FIFO"));
    }
    // Removed while open: kept with the name it had, made again for an instant at
    // restore (`file::alias_unlinked`).
    if let Some(path) = d.link.strip_suffix(b" (deleted)") {
        if let Ok((id, 0)) = procfs::file_stat(std::path::Path::new(&d.link_path), &d.link) {
            if !path.starts_with(b"/") {
                return Err(d.not_yet("a FIFO removed while open whose name is not absolute"));
            }
            let file = FileId {
                path: path.to_vec(),
                ..FileId::from(id)
            };
            return Ok(FdKind::Fifo {
                id: file.ino,
                file,
                flags: d.flags,
                removed: true,
            });
        }
    }
    let file = file_id_checked(
        d.pid,
        &d.link_path,
        &d.link,
        &format!("file descriptor {}:", d.fd),
    )?;
    Ok(FdKind::Fifo {
        id: file.ino,
        file,
        flags: d.flags,
        removed: false,
    })
}

/// FIFOs: the pipe behind each FIFO that processes of the tree hold open, with its
/// capacity and the data in it (read without consuming it, through a read-only
/// descriptor ckpt opens on the same pipe). A FIFO also open outside the tree is
/// refused: restore could not give both sides the same pipe again.
pub(crate) fn resolve_fifos(procs: &[Process]) -> DumpResult<Vec<FifoState>> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::OpenOptionsExt;
    // id -> (dev, first holder (pid, fd), path)
    let mut fifos: BTreeMap<u64, (u64, i32, i32, Vec<u8>)> = BTreeMap::new();
    for p in procs {
        for f in &p.fds {
            if let FdKind::Fifo { file, id, .. } = &f.kind {
                let e = fifos
                    .entry(*id)
                    .or_insert((file.dev, p.pid, f.fd, file.path.clone()));
                if e.0 != file.dev {
                    return Err(unsupported(
                        p.pid,
                        format!(
                            "file descriptor {} is a FIFO ({}) whose inode number is also that \
                             of another FIFO of the tree; not supported",
                            f.fd,
                            String::from_utf8_lossy(&file.path)
                        ),
                    ));
                }
            }
        }
    }
    if fifos.is_empty() {
        return Ok(Vec::new());
    }
    let tree: Vec<i32> = procs.iter().map(|p| p.pid).collect();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for (id, (dev, pid, fd, path)) in fifos {
        if let Some(other) = procfs::holders_of(dev, id)
            .into_iter()
            .find(|q| !tree.contains(q) && *q != me)
        {
            return Err(unsupported(
                pid,
                format!(
                    "file descriptor {fd} is a FIFO ({}) that process {other} outside the \
                     dumped tree has open too; dump the tree that holds all its ends",
                    String::from_utf8_lossy(&path)
                ),
            ));
        }
        // A read-only, non-blocking open of the same pipe (never blocks, even without a
        // writer), whatever the mode of the tree's descriptor.
        let link = format!("/proc/{pid}/fd/{fd}");
        let rd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&link)
            .map_err(|e| sys::SysError::io(format!("open FIFO {link} to read its buffer"), e))?;
        let (capacity, data) = sys::process::peek_pipe(&std::os::fd::OwnedFd::from(rd))?;
        out.push(FifoState { id, capacity, data });
    }
    Ok(out)
}

// ---- checks (plan) ----

/// FIFOs: every FIFO record's data fits its capacity; returns their IDs.
pub(crate) fn check_fifos(fifos: &[FifoState], problems: &mut Vec<Problem>) -> BTreeSet<u64> {
    let mut fifo_ids = BTreeSet::new();
    for ff in fifos {
        if !fifo_ids.insert(ff.id)
            || ff.capacity as usize > MAX_PIPE
            || ff.data.len() > ff.capacity as usize
        {
            check::p(problems, "malformed", format!("invalid FIFO {}", ff.id));
        }
    }
    fifo_ids
}

/// A FIFO descriptor refers to a FIFO pipe of the image.
pub(crate) fn check_ref(
    id: u64,
    fd: i32,
    pid: i32,
    fifo_ids: &BTreeSet<u64>,
    problems: &mut Vec<Problem>,
) {
    if !fifo_ids.contains(&id) {
        check::p(
            problems,
            "malformed",
            format!("descriptor {fd} of process {pid} is an unknown FIFO"),
        );
    }
}

/// The FIFO a descriptor opened is there, unchanged and unused.
pub(crate) fn check_host(
    files: &mut super::held::HeldFiles,
    file: &FileId,
    fd: i32,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    let what = format!("file descriptor {fd}: FIFO");
    let before = problems.len();
    files.check_file(file, &what, problems);
    if problems.len() == before {
        check_fifo_unused(file, &what, held, problems);
    }
}

/// A FIFO must not be open by anyone at restore: its pipe would be shared with them
/// (and the data put back would mix with theirs).
pub(crate) fn check_fifo_unused(
    id: &FileId,
    what: &str,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    let Ok(m) = std::fs::metadata(procfs::bytes_path(&id.path)) else {
        return;
    };
    let holders = procfs::holders_of(m.dev(), m.ino());
    if let Some(q) = holders.iter().find(|q| !held.pid(**q)) {
        check::p(
            problems,
            "fifo-busy",
            format!(
                "{what} {} is open by process {q} now; restore needs it unused",
                check::show(&id.path)
            ),
        );
    }
}

/// What `inspect` says of a FIFO descriptor.
pub(crate) fn describe(ckpt: &Checkpoint, file: &FileId, id: u64, flags: u32) -> String {
    let (cap, buffered) = ckpt
        .fifos
        .iter()
        .find(|p| p.id == id)
        .map(|p| (p.capacity, p.data.len()))
        .unwrap_or((0, 0));
    format!(
        "FIFO {} flags {flags:#o} (capacity {cap}, {buffered} bytes buffered)",
        String::from_utf8_lossy(&file.path)
    )
}

// ---- restore (stage) ----

/// The pipe of FIFO `fifo`, made in this process: the FIFO opened read-write (which never
/// blocks, and makes any later open of it find a reader and a writer), checked unused,
/// with its capacity and the data that was in it, parked at temporary `tmp` until every
/// process has its descriptors.
fn create_fifo(
    cx: &mut Ctx<'_>,
    held: &Held,
    fifo: &FifoState,
    path: &[u8],
    tmp: u64,
) -> RestoreResult<u64> {
    // The FIFO plan checked and held, never looked up by path again.
    let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let n = super::held::open_held(cx, held, &[(path, flags)])?
        .first()
        .copied()
        .ok_or_else(|| RestoreError::Stage("no descriptor opened".into()))?;
    // Someone else's data in it means someone else has it open: we would share their pipe.
    let a = cx.put(0, &[0u8; 4])?;
    cx.call(
        "ioctl(FIONREAD)",
        nr::IOCTL,
        [n, libc::FIONREAD, a, 0, 0, 0],
    )?;
    let mut b = [0u8; 4];
    cx.read(a, &mut b)?;
    if u32::from_le_bytes(b) != 0 {
        return Err(RestoreError::Stage(format!(
            "FIFO {} already holds data: another process has it open",
            String::from_utf8_lossy(path)
        )));
    }
    fill_pipe(
        cx,
        n,
        fifo.capacity,
        &fifo.data,
        &format!("FIFO {}", fifo.id),
    )?;
    if n != tmp {
        cx.call("dup3", nr::DUP3, [n, tmp, libc::O_CLOEXEC as u64, 0, 0, 0])?;
        cx.close(n)?;
    }
    Ok(tmp)
}

/// Ckpt's descriptors of the files plan held (see [`super::held`]).
type Held = std::collections::BTreeMap<Vec<u8>, (std::os::fd::RawFd, bool)>;

/// Put descriptor `f` of FIFO `fifo` (at `path`, held in `held`) in place: the FIFO's pipe is made by
/// the first process that has it ([`create_fifo`]), which holds it until every process
/// has its descriptors.
pub(crate) fn place_fifo_end(
    cx: &mut Ctx<'_>,
    held: &Held,
    f: &crate::model::Fd,
    fifo: &FifoState,
    path: &[u8],
    flags: u32,
    holders: &mut PipeHolders,
) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    let id = fifo.id;
    let (holder, tmp) = match holders.get(&(2, id)) {
        Some(&(h, t, _)) => (h, t),
        None => {
            let k = holders.values().filter(|h| h.0 == proc_.pid).count() as u64;
            let tmp = pipe_tmp_base(proc_) + 2 * k;
            let t = create_fifo(cx, held, fifo, path, tmp)?;
            holders.insert((2, id), (proc_.pid, t, t));
            (proc_.pid, t)
        }
    };
    // The same pipe, opened with the descriptor's own flags: the holder is a
    // reader and a writer, so this does not block.
    let mut oflags =
        (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
    if f.cloexec {
        oflags |= libc::O_CLOEXEC;
    }
    let n = cx.open(format!("/proc/{holder}/fd/{tmp}").as_bytes(), oflags)?;
    move_fd(cx, n, f.fd, f.cloexec)
}
