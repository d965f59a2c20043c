//! FIFOs (named pipes): ends, data in flight.

use super::OpenFd;
use super::file::file_id_checked;
use crate::error::DumpResult as Result;
use crate::kinds::unsupported;
use crate::model::{FdKind, FifoState, Process};
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

/// A FIFO: its pipe (data, capacity) is read once the whole tree is known
/// ([`resolve_fifos`]).
pub(crate) fn collect(d: &OpenFd) -> Result<FdKind> {
    if d.flags & libc::O_PATH as u32 != 0 {
        return Err(d.not_yet("an O_PATH descriptor of a FIFO"));
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
    })
}

/// FIFOs: the pipe behind each FIFO that processes of the tree hold open, with its
/// capacity and the data in it (read without consuming it, through a read-only
/// descriptor ckpt opens on the same pipe). A FIFO also open outside the tree is
/// refused: restore could not give both sides the same pipe again.
pub(crate) fn resolve_fifos(procs: &[Process]) -> Result<Vec<FifoState>> {
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
