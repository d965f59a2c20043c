//! POSIX message queues (mq_open descriptors). A queue that still has its name lives on
//! after the tree like a file, with its messages: restore opens it again by name (plan
//! checks it is there). A queue removed while open (mq_unlink) is the tree's alone: dump
//! saves its attributes, owner, mode and messages (with their priorities), and restore
//! makes it again under its old name if free, fills it, removes the name and opens it
//! with the descriptor's access mode. A notification (mq_notify) is recorded on a
//! descriptor of the process that registered it (`MqNotify`, as a read of the queue
//! shows it) and registered again from there once the queue has its messages: SIGEV_NONE
//! only (the kernel does not show a signal's value; SIGEV_THREAD is glibc's netlink
//! thread), and not on a queue whose messages dump must take off and queue again (that
//! fires it): those are refused, naming the queue.
//!
//! In an IPC namespace of the tree's own the names are the namespace's: every queue of
//! its mqueue file system is saved with the namespace (`NsMqueue`: attributes, owner,
//! mode, messages), made again in the new namespace before any process opens one by
//! name, and gone with it.

use super::collect::OpenFd;
use crate::arch::native::nr;
use crate::error::{DumpError, DumpResult, Problem, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::{Fd, FdKind, MqMessage, NsMqueue, Process};
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
    let notify = notify_of(
        &fd,
        d.pid,
        &format!(
            "file descriptor {} is a POSIX message queue ({})",
            d.fd, d.name
        ),
        deleted && curmsgs > 0,
    )?;
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
        notify,
    })
}

/// The notification registered on the queue `fd` is (ckpt's description of it), as
/// process `pid` (host PID) records it: `Some` if it registered it. Only SIGEV_NONE is
/// restored: a signal's value (`sigev_value`) is not shown by the kernel, and
/// SIGEV_THREAD is glibc's thread fed by a netlink socket; `copied`: the dump must
/// take the queue's messages off and queue them again, which would fire the
/// notification (and end it). Refused, naming `what`.
fn notify_of(
    fd: &std::os::fd::OwnedFd,
    pid: i32,
    what: &str,
    copied: bool,
) -> DumpResult<Option<crate::model::MqNotify>> {
    let (owner, how, signo) = sysipc::mq_notify_state(fd)?;
    if owner == 0 {
        return Ok(None);
    }
    let why = match how {
        libc::SIGEV_NONE if copied => Some(
            "its messages cannot be read (taken off and queued again) without firing it"
                .to_string(),
        ),
        libc::SIGEV_NONE => None,
        libc::SIGEV_SIGNAL => Some(format!(
            "SIGEV_SIGNAL (signal {signo}): the kernel does not show the value \
             (sigev_value) the signal carries, so it cannot be registered again exactly"
        )),
        libc::SIGEV_THREAD => Some(
            "SIGEV_THREAD (glibc's notification thread, fed through a netlink socket): \
             not restored"
                .to_string(),
        ),
        n => Some(format!("of an unknown kind (sigev_notify {n})")),
    };
    if let Some(why) = why {
        return Err(unsupported(
            pid,
            format!("{what} with a notification registered (mq_notify, by process {owner}): {why}"),
        ));
    }
    Ok((owner == pid).then_some(crate::model::MqNotify {
        sigev_notify: how,
        signo,
    }))
}

/// The named queues of the IPC namespace of the tree's own that process `pid` is in
/// (`names`, from its mqueue file system), read from a thread of ckpt that joined it:
/// their attributes, owner, mode and messages (taken off and queued again in order,
/// see `sys::ipc::mq_copy_messages`). A queue with a notification registered, or a
/// full one (a sender outside the tree may wait on it, whose message a read would take
/// in), refuses the dump, naming it.
pub(crate) fn collect_namespace(pid: i32, names: &[String]) -> DumpResult<Vec<NsMqueue>> {
    let names = names.to_vec();
    let read = crate::sys::ns::inside(pid, &["ipc"], move || {
        let mut out = Vec::new();
        for n in &names {
            let fd = sysipc::mq_open_name(n.as_bytes())?;
            let f = std::fs::File::from(
                fd.try_clone()
                    .map_err(|e| crate::sys::SysError::io("dup", e))?,
            );
            let meta = f
                .metadata()
                .map_err(|e| crate::sys::SysError::io(format!("stat queue /{n}"), e))?;
            let (maxmsg, msgsize, curmsgs) = sysipc::mq_attr(&fd)?;
            // (A registration is its owner's descriptor's: `notify_of`.)
            let what = format!("its IPC namespace of its own holds POSIX message queue /{n}");
            let notify = notify_of(&fd, 0, &what, curmsgs > 0).err();
            let messages = if notify.is_some() || curmsgs >= maxmsg {
                Vec::new()
            } else {
                sysipc::mq_copy_messages(&fd, msgsize)?
            };
            out.push((
                NsMqueue {
                    name: n.as_bytes().to_vec(),
                    ino: meta.ino(),
                    maxmsg,
                    msgsize,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    messages: messages
                        .into_iter()
                        .map(|(prio, data)| MqMessage { prio, data })
                        .collect(),
                },
                notify,
                curmsgs >= maxmsg,
            ));
        }
        Ok(out)
    })?;
    let mut out = Vec::new();
    for (q, notify, full) in read {
        let name = String::from_utf8_lossy(&q.name).into_owned();
        if let Some(e) = notify {
            return Err(match e {
                DumpError::Unsupported { why, .. } => unsupported(pid, why),
                e => e,
            });
        }
        if full {
            return Err(unsupported(
                pid,
                format!(
                    "its IPC namespace of its own holds POSIX message queue /{name}, which \
                     is full: a sender may be waiting, whose message reading the queue \
                     would take in"
                ),
            ));
        }
        out.push(q);
    }
    Ok(out)
}

/// In a tree with an IPC namespace of its own, each descriptor of a named queue is one
/// of that namespace's (`queues`, by inode): a queue opened before the tree made its
/// namespace would be opened in the new one at restore. Refused, naming it.
pub(crate) fn refuse_outside_namespace<'a>(
    procs: impl IntoIterator<Item = &'a Process>,
    queues: &[NsMqueue],
) -> DumpResult<()> {
    for p in procs {
        for f in &p.fds {
            if let FdKind::PosixMq {
                name,
                deleted: false,
                ino,
                ..
            } = &f.kind
            {
                if !queues.iter().any(|q| q.ino == *ino) {
                    return Err(unsupported(
                        p.pid,
                        format!(
                            "file descriptor {} is POSIX message queue {}, not one of its \
                             IPC namespace of its own (opened before the namespace was \
                             made, or passed in from outside): restore would open the \
                             namespace's",
                            f.fd,
                            check::show(name)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
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

/// A notification the image would register again is of the kind restore registers
/// (SIGEV_NONE).
pub(crate) fn check_notify(f: &Fd, problems: &mut Vec<Problem>) {
    if let FdKind::PosixMq {
        name,
        notify: Some(n),
        ..
    } = &f.kind
    {
        if n.sigev_notify != libc::SIGEV_NONE {
            check::p(
                problems,
                "malformed",
                format!(
                    "file descriptor {}: POSIX message queue {} has a notification of kind \
                     {}; only SIGEV_NONE is registered again",
                    f.fd,
                    check::show(name),
                    n.sigev_notify
                ),
            );
        }
    }
}

/// A queue opened again by name must exist here.
pub(crate) fn check_host(f: &Fd, problems: &mut Vec<Problem>) {
    check_notify(f, problems);
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

/// The queues of an IPC namespace of the tree's own are well formed (names without
/// '/' or NUL, each once, messages that fit), and every descriptor of a named queue in
/// the image names one of them.
pub(crate) fn check_namespace<'a>(
    procs: impl IntoIterator<Item = &'a Process>,
    queues: &[NsMqueue],
    problems: &mut Vec<Problem>,
) {
    let mut seen = std::collections::BTreeSet::new();
    for q in queues {
        let bad_name = q.name.is_empty()
            || q.name.len() > 255
            || q.name.contains(&b'/')
            || q.name.contains(&0)
            || !seen.insert(q.name.clone());
        let bad_msgs = q.maxmsg <= 0
            || q.msgsize <= 0
            || q.messages.len() as i64 > q.maxmsg
            || q.messages.iter().any(|m| m.data.len() as i64 > q.msgsize);
        if bad_name || bad_msgs {
            check::p(
                problems,
                "malformed",
                format!(
                    "POSIX message queue /{} of the tree's IPC namespace is malformed",
                    check::show(&q.name)
                ),
            );
        }
    }
    for p in procs {
        for f in &p.fds {
            check_notify(f, problems);
            if let FdKind::PosixMq {
                name,
                deleted: false,
                ..
            } = &f.kind
            {
                let bare = name.strip_prefix(b"/").unwrap_or(name);
                if !queues.iter().any(|q| q.name == bare) {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "process {} file descriptor {}: POSIX message queue {} is not \
                             one of the tree's IPC namespace",
                            p.pid,
                            f.fd,
                            check::show(name)
                        ),
                    );
                }
            }
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
        notify,
        ..
    } = kind
    else {
        return Err(crate::error::RestoreError::Malformed("not a queue".into()));
    };
    let access = (*flags as i32 & (libc::O_ACCMODE | libc::O_NONBLOCK)) as u64;
    let bare = name.strip_prefix(b"/").unwrap_or(name).to_vec();
    if !deleted {
        let a = cx.put_cstr(AT_NAME, &bare)?;
        let n = cx.call(
            &format!("mq_open {}", check::show(name)),
            nr::MQ_OPEN,
            [a, access, 0, 0, 0, 0],
        )?;
        register_notify(cx, n, notify.as_ref())?;
        return Ok(n);
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
    register_notify(cx, n, notify.as_ref())?;
    Ok(n)
}

/// Scratch offset of the struct sigevent.
const AT_SIGEV: u64 = 768;

/// The queue's notification, registered again by the process on its descriptor `fd`,
/// once the queue holds its messages (a registration fires only when a message comes
/// to an empty queue).
pub(crate) fn register_notify(
    cx: &mut Ctx<'_>,
    fd: u64,
    notify: Option<&crate::model::MqNotify>,
) -> RestoreResult<()> {
    let Some(n) = notify else {
        return Ok(());
    };
    if n.sigev_notify != libc::SIGEV_NONE {
        return Err(crate::error::RestoreError::Malformed(format!(
            "a POSIX message queue notification of kind {} (only SIGEV_NONE is restored)",
            n.sigev_notify
        )));
    }
    let a = cx.put(AT_SIGEV, &sigevent(n))?;
    cx.call("mq_notify", nr::MQ_NOTIFY, [fd, a, 0, 0, 0, 0])?;
    Ok(())
}

/// `n` as the kernel's struct sigevent (64 bytes: sigev_value, sigev_signo,
/// sigev_notify, then the union, zero).
pub(crate) fn sigevent(n: &crate::model::MqNotify) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[8..12].copy_from_slice(&n.signo.to_ne_bytes());
    b[12..16].copy_from_slice(&n.sigev_notify.to_ne_bytes());
    b
}

/// Make the named queues of the tree's IPC namespace of its own again, in the new one
/// (the calling thread's), before any process opens them by name. They end with that
/// namespace, so a failed restore leaves none behind.
pub(crate) fn make_namespace_queues(queues: &[NsMqueue]) -> RestoreResult<()> {
    for q in queues {
        crate::error::fault_point("make a POSIX message queue of the namespace")?;
        let messages: Vec<(u32, Vec<u8>)> = q
            .messages
            .iter()
            .map(|m| (m.prio, m.data.clone()))
            .collect();
        sysipc::mq_make(&sysipc::NewMqueue {
            name: &q.name,
            maxmsg: q.maxmsg,
            msgsize: q.msgsize,
            uid: q.uid,
            gid: q.gid,
            mode: q.mode,
            messages: &messages,
        })?;
    }
    Ok(())
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
                notify: None,
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

    fn ns_queue(name: &str, ino: u64) -> NsMqueue {
        NsMqueue {
            name: name.as_bytes().to_vec(),
            ino,
            maxmsg: 2,
            msgsize: 8,
            mode: 0o600,
            messages: vec![MqMessage {
                prio: 1,
                data: b"hi".to_vec(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn queues_of_the_tree_s_namespace_are_checked_and_named_by_descriptors() {
        let mut a = crate::kinds::testutil::process(10);
        a.fds = vec![mq(3, "/q", false, 7), mq(4, "/gone", true, 9)];
        let queues = vec![ns_queue("q", 7), ns_queue("other", 8)];
        let run = |procs: &[Process], queues: &[NsMqueue]| {
            let mut v = Vec::new();
            check_namespace(procs, queues, &mut v);
            v
        };
        assert!(run(&[a.clone()], &queues).is_empty());
        assert!(refuse_outside_namespace(&[a.clone()], &queues).is_ok());
        // A descriptor of a queue the namespace does not hold (opened before it was
        // made): refused at dump, a problem at restore.
        let e = refuse_outside_namespace(&[a.clone()], &queues[1..]).unwrap_err();
        assert!(e.to_string().contains("not one of its"), "{e}");
        let v = run(&[a.clone()], &queues[1..]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("file descriptor 3"),
            "{}",
            v[0].message
        );
        // Malformed queues.
        for bad in [
            ns_queue("a/b", 1),
            ns_queue("", 1),
            NsMqueue {
                maxmsg: 0,
                ..ns_queue("z", 1)
            },
            NsMqueue {
                msgsize: 1,
                ..ns_queue("z", 1)
            },
        ] {
            let v = run(&[], std::slice::from_ref(&bad));
            assert_eq!(v.len(), 1, "{bad:?}: {v:?}");
            assert_eq!(v[0].code, "malformed");
        }
        let v = run(&[], &[ns_queue("q", 1), ns_queue("q", 2)]);
        assert_eq!(v.len(), 1, "a name twice: {v:?}");
    }

    #[test]
    fn a_notification_is_registered_again_after_the_messages() {
        use crate::remote::{Ctx, Recorder};
        let p = crate::kinds::testutil::process(10);
        let n = crate::model::MqNotify {
            sigev_notify: libc::SIGEV_NONE,
            signo: 0,
        };
        let mut f = mq(3, "/q", false, 7);
        if let FdKind::PosixMq { notify, .. } = &mut f.kind {
            *notify = Some(n);
        }
        let rec = Recorder::new(10).answer(nr::MQ_OPEN, 5);
        let mut cx = Ctx::double(&rec, 0x10000, &p);
        assert_eq!(open_mq(&mut cx, &f, &f.kind).unwrap(), 5);
        let calls = rec.calls();
        let nrs: Vec<u64> = calls.iter().map(|c| c.nr).collect();
        assert_eq!(nrs, [nr::MQ_OPEN, nr::MQ_NOTIFY], "{calls:?}");
        let c = &calls[1];
        assert_eq!(c.args[0], 5, "on the descriptor just opened");
        assert_eq!(c.bytes(c.args[1], 64), sigevent(&n));
        // Only SIGEV_NONE is registered again.
        let rec = Recorder::new(10);
        let mut cx = Ctx::double(&rec, 0x10000, &p);
        let sig = crate::model::MqNotify {
            sigev_notify: libc::SIGEV_SIGNAL,
            signo: 10,
        };
        assert!(register_notify(&mut cx, 5, Some(&sig)).is_err());
        assert!(rec.calls().is_empty());
        // ... which plan says first.
        if let FdKind::PosixMq { notify, .. } = &mut f.kind {
            *notify = Some(sig);
        }
        let mut v = Vec::new();
        check_notify(&f, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("only SIGEV_NONE"), "{}", v[0].message);
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
