//! POSIX message queues (mq_open descriptors). A queue that still has its name lives on
//! after the tree like a file, with its messages: restore opens it again by name (plan
//! checks it is there). A queue removed while open (mq_unlink) is the tree's alone: dump
//! saves its attributes, owner, mode and messages (with their priorities), and restore
//! makes it again under its old name if free, fills it, removes the name and opens it
//! with the descriptor's access mode. A registered notification (mq_notify) is refused.

use super::collect::OpenFd;
use crate::arch::native::nr;
use crate::error::{DumpResult, Problem, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::{Fd, FdKind, MqMessage, Process};
use crate::remote::Ctx;
use crate::sys::ipc as sysipc;
use std::os::unix::fs::MetadataExt;

// ---- collect (dump) ----

/// Descriptor `d`, a POSIX message queue (`deleted` if its name was removed), through
/// a description of ckpt's own (opened through /proc/PID/fd/N).
pub(crate) fn collect(d: &OpenFd, deleted: bool) -> DumpResult<FdKind> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.link_path)
        .map_err(|e| crate::sys::SysError::io(format!("open {}", d.link_path), e))?;
    let meta = f
        .metadata()
        .map_err(|e| crate::sys::SysError::io(format!("stat {}", d.link_path), e))?;
    let fd = std::os::fd::OwnedFd::from(f);
    let (maxmsg, msgsize, curmsgs) = sysipc::mq_attr(&fd)?;
    let notify = sysipc::mq_notify_pid(&fd)?;
    if notify != 0 {
        return Err(unsupported(
            d.pid,
            format!(
                "file descriptor {} is a POSIX message queue ({}) with a notification \
                 registered (mq_notify, by process {notify}): not supported yet",
                d.fd, d.name
            ),
        ));
    }
    let name = d
        .link
        .strip_suffix(b" (deleted)")
        .unwrap_or(&d.link)
        .to_vec();
    let mut messages = Vec::new();
    if deleted {
        if curmsgs >= maxmsg {
            return Err(unsupported(
                d.pid,
                format!(
                    "file descriptor {} is a POSIX message queue ({}) that is full: a \
                     sender may be waiting, whose message reading the queue would take in",
                    d.fd, d.name
                ),
            ));
        }
        messages = sysipc::mq_copy_messages(&fd, msgsize)?
            .into_iter()
            .map(|(prio, data)| MqMessage { prio, data })
            .collect();
    }
    Ok(FdKind::PosixMq {
        name,
        flags: d.flags,
        deleted,
        ino: meta.ino(),
        maxmsg,
        msgsize,
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        messages,
    })
}

/// Two descriptions of one removed queue would come back as two queues: refused.
pub(crate) fn refuse_split_deleted(procs: &[Process]) -> DumpResult<()> {
    let mut seen: std::collections::BTreeMap<u64, (i32, i32)> = Default::default();
    for p in procs {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            if let FdKind::PosixMq {
                deleted: true, ino, ..
            } = f.kind
            {
                if let Some((q, qfd)) = seen.insert(ino, (p.pid, f.fd)) {
                    return Err(unsupported(
                        p.pid,
                        format!(
                            "file descriptor {} and descriptor {qfd} of process {q} are two \
                             opens of one removed POSIX message queue: restore would make \
                             two queues",
                            f.fd
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

// ---- checks (plan) ----

/// A queue opened again by name must exist here.
pub(crate) fn check_host(f: &Fd, problems: &mut Vec<Problem>) {
    if let FdKind::PosixMq {
        name,
        deleted: false,
        ..
    } = &f.kind
    {
        let bare = name.strip_prefix(b"/").unwrap_or(name);
        if !sysipc::mq_exists(bare) {
            check::p(
                problems,
                "file-missing",
                format!(
                    "file descriptor {}: POSIX message queue {} does not exist on this host",
                    f.fd,
                    check::show(name)
                ),
            );
        }
    }
}

pub(crate) fn describe(name: &[u8], deleted: bool, messages: usize) -> String {
    format!(
        "POSIX message queue {}{}, {messages} messages saved",
        check::show(name),
        if deleted { " (deleted)" } else { "" }
    )
}

// ---- restore (stage) ----

/// Scratch offsets: the name, the attributes, the timeout, a message.
const AT_NAME: u64 = 0;
const AT_ATTR: u64 = 512;
const AT_TIME: u64 = 640;
const AT_MSG: u64 = 1024;

/// A descriptor of the queue `kind` describes, in the process (not yet at its number).
pub(crate) fn open_mq(cx: &mut Ctx<'_>, f: &Fd, kind: &FdKind) -> RestoreResult<u64> {
    let FdKind::PosixMq {
        name,
        flags,
        deleted,
        maxmsg,
        msgsize,
        uid,
        gid,
        mode,
        messages,
        ..
    } = kind
    else {
        return Err(crate::error::RestoreError::Malformed("not a queue".into()));
    };
    let access = (*flags as i32 & (libc::O_ACCMODE | libc::O_NONBLOCK)) as u64;
    let bare = name.strip_prefix(b"/").unwrap_or(name).to_vec();
    if !deleted {
        let a = cx.put_cstr(AT_NAME, &bare)?;
        return cx.call(
            &format!("mq_open {}", check::show(name)),
            nr::MQ_OPEN,
            [a, access, 0, 0, 0, 0],
        );
    }
    // mq_attr { flags, maxmsg, msgsize, curmsgs, reserved[4] }
    let mut attr = [0u8; 64];
    attr[8..16].copy_from_slice(&maxmsg.to_ne_bytes());
    attr[16..24].copy_from_slice(&msgsize.to_ne_bytes());
    let at = cx.put(AT_ATTR, &attr)?;
    let create = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u64;
    // Its old name (so /proc shows it again), unless another queue has it now.
    let mut made = None;
    for n in [
        bare.clone(),
        format!("ckpt-mq-{}-{}", cx.proc_.pid, f.fd).into_bytes(),
    ] {
        let a = cx.put_cstr(AT_NAME, &n)?;
        if let Ok(fd) = cx.call(
            "mq_open (a removed queue, again)",
            nr::MQ_OPEN,
            [a, create, u64::from(*mode & 0o777), at, 0, 0],
        ) {
            made = Some((fd, n));
            break;
        }
    }
    let (fd, made_name) = made.ok_or_else(|| {
        crate::error::RestoreError::Stage(format!(
            "cannot make POSIX message queue {} again",
            check::show(name)
        ))
    })?;
    // At once a description with the descriptor's own access mode (mq_open, as the
    // program's was: open(2) would add O_LARGEFILE), and the name goes, so a failure
    // below leaves no queue behind.
    let a = cx.put_cstr(AT_NAME, &made_name)?;
    let n = cx.call(
        "mq_open (the descriptor's access mode)",
        nr::MQ_OPEN,
        [a, access, 0, 0, 0, 0],
    );
    let unlinked = cx.call("mq_unlink", nr::MQ_UNLINK, [a, 0, 0, 0, 0, 0]);
    let n = n?;
    unlinked?;
    let t = cx.put(AT_TIME, &[0u8; 16])?;
    for m in messages {
        let a = cx.put(AT_MSG, &m.data)?;
        cx.call(
            "mq_timedsend",
            nr::MQ_TIMEDSEND,
            [fd, a, m.data.len() as u64, u64::from(m.prio), t, 0],
        )?;
    }
    cx.call(
        "fchown (queue)",
        nr::FCHOWN,
        [fd, u64::from(*uid), u64::from(*gid), 0, 0, 0],
    )?;
    cx.call(
        "fchmod (queue)",
        nr::FCHMOD,
        [fd, u64::from(*mode & 0o7777), 0, 0, 0, 0],
    )?;
    cx.close(fd)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(fd: i32, name: &str, deleted: bool, ino: u64) -> Fd {
        Fd {
            fd,
            cloexec: false,
            kind: FdKind::PosixMq {
                name: name.as_bytes().to_vec(),
                flags: 2,
                deleted,
                ino,
                maxmsg: 10,
                msgsize: 64,
                uid: 0,
                gid: 0,
                mode: 0o600,
                messages: Vec::new(),
            },
            inode_owner: None,
            in_flight: false,
            shared_with: None,
            locks: Vec::new(),
            owner: None,
        }
    }

    #[test]
    fn two_opens_of_one_removed_queue_are_refused() {
        let mut a = crate::kinds::testutil::process(10);
        let mut b = crate::kinds::testutil::process(11);
        a.fds = vec![mq(3, "/q", true, 7), mq(4, "/r", false, 8)];
        b.fds = vec![mq(5, "/r", false, 8)];
        assert!(refuse_split_deleted(&[a.clone(), b.clone()]).is_ok());
        b.fds.push(mq(6, "/q", true, 7));
        let e = refuse_split_deleted(&[a.clone(), b.clone()]).unwrap_err();
        assert!(e.to_string().contains("two opens of one removed"), "{e}");
        // The same description shared (fork, dup) is one queue.
        b.fds[1].shared_with = Some((10, 3));
        assert!(refuse_split_deleted(&[a, b]).is_ok());
    }

    #[test]
    fn a_named_queue_must_be_there_at_restore() {
        let mut v = Vec::new();
        check_host(&mq(3, "/ckpt-test-no-such-queue-4c1d", false, 1), &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("does not exist"), "{}", v[0].message);
        let mut v = Vec::new();
        check_host(&mq(3, "/ckpt-test-no-such-queue-4c1d", true, 1), &mut v);
        assert!(v.is_empty(), "a removed queue is made again: {v:?}");
    }
}
