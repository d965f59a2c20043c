//! System V IPC objects of this host's IPC namespace (ckpt's own): the /proc/sysvipc
//! listings, reading their contents without changing them (semctl GETALL/GETPID,
//! msgrcv MSG_COPY, a read-only shmat), and creating them again under given IDs
//! (kernel.{shm,sem,msg}_next_id) with given creators.

use super::{Result, SysError, check};

/// Which kind of System V object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpcKind {
    Shm,
    Sem,
    Msg,
}

impl IpcKind {
    fn proc_file(self) -> &'static str {
        match self {
            IpcKind::Shm => "/proc/sysvipc/shm",
            IpcKind::Sem => "/proc/sysvipc/sem",
            IpcKind::Msg => "/proc/sysvipc/msg",
        }
    }
    fn next_id_file(self) -> &'static str {
        match self {
            IpcKind::Shm => "/proc/sys/kernel/shm_next_id",
            IpcKind::Sem => "/proc/sys/kernel/sem_next_id",
            IpcKind::Msg => "/proc/sys/kernel/msg_next_id",
        }
    }
}

/// One line of /proc/sysvipc/{shm,sem,msg}, the columns all three share plus the
/// kind's own (what does not apply is 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpcObject {
    pub key: i32,
    pub id: i32,
    /// The perms column: permission bits, and for a segment SHM_DEST/SHM_LOCKED.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Segment size; semaphores in the set; bytes queued.
    pub size: u64,
    /// Segment: creator and last shmat/shmdt. Queue: last msgsnd and msgrcv.
    pub pid1: i32,
    pub pid2: i32,
    /// Segment: attachments. Queue: messages queued.
    pub count: u64,
}

/// The objects of one kind in ckpt's IPC namespace.
pub fn list(kind: IpcKind) -> Result<Vec<IpcObject>> {
    let path = kind.proc_file();
    let text =
        std::fs::read_to_string(path).map_err(|e| SysError::io(format!("read {path}"), e))?;
    parse_list(kind, &text).ok_or_else(|| SysError::Other(format!("cannot parse {path}")))
}

/// Parse /proc/sysvipc/{shm,sem,msg} (its header line first).
pub fn parse_list(kind: IpcKind, text: &str) -> Option<Vec<IpcObject>> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.is_empty() {
            continue;
        }
        let n = |i: usize| -> Option<i64> { c.get(i)?.parse().ok() };
        let u = |i: usize| -> Option<u32> { c.get(i)?.parse().ok() };
        let mode = u32::from_str_radix(c.get(2)?, 8).ok()?;
        let mut o = IpcObject {
            key: n(0)? as i32,
            id: n(1)? as i32,
            mode,
            ..Default::default()
        };
        // key id perms ... then the kind's columns.
        match kind {
            // size cpid lpid nattch uid gid cuid cgid ...
            IpcKind::Shm => {
                o.size = c.get(3)?.parse().ok()?;
                o.pid1 = n(4)? as i32;
                o.pid2 = n(5)? as i32;
                o.count = c.get(6)?.parse().ok()?;
                (o.uid, o.gid, o.cuid, o.cgid) = (u(7)?, u(8)?, u(9)?, u(10)?);
            }
            // nsems uid gid cuid cgid ...
            IpcKind::Sem => {
                o.size = c.get(3)?.parse().ok()?;
                (o.uid, o.gid, o.cuid, o.cgid) = (u(4)?, u(5)?, u(6)?, u(7)?);
            }
            // cbytes qnum lspid lrpid uid gid cuid cgid ...
            IpcKind::Msg => {
                o.size = c.get(3)?.parse().ok()?;
                o.count = c.get(4)?.parse().ok()?;
                o.pid1 = n(5)? as i32;
                o.pid2 = n(6)? as i32;
                (o.uid, o.gid, o.cuid, o.cgid) = (u(7)?, u(8)?, u(9)?, u(10)?);
            }
        }
        out.push(o);
    }
    Some(out)
}

/// The values of the semaphores of set `id` (semctl GETALL).
pub fn sem_values(id: i32, nsems: usize) -> Result<Vec<u16>> {
    let mut v = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` unsigned shorts (the set's size, read from
    // /proc/sysvipc/sem) into the array the fourth argument points to.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) };
    check(r as libc::c_long, || format!("semctl({id}, GETALL)"))?;
    Ok(v)
}

/// The process that last operated on each semaphore of set `id` (semctl GETPID).
pub fn sem_pids(id: i32, nsems: usize) -> Result<Vec<i32>> {
    (0..nsems)
        .map(|i| {
            // SAFETY: GETPID takes no fourth argument.
            let r = unsafe { libc::semctl(id, i as libc::c_int, libc::GETPID) };
            check(r as libc::c_long, || format!("semctl({id}, {i}, GETPID)")).map(|r| r as i32)
        })
        .collect()
}

/// Set every semaphore of set `id` (semctl SETALL).
pub fn sem_set_values(id: i32, values: &[u16]) -> Result<()> {
    let mut v = values.to_vec();
    // SAFETY: SETALL reads as many unsigned shorts as the set has; `values` has that
    // many (the set was created with `values.len()` semaphores).
    let r = unsafe { libc::semctl(id, 0, libc::SETALL, v.as_mut_ptr()) };
    check(r as libc::c_long, || format!("semctl({id}, SETALL)"))?;
    Ok(())
}

/// A queue's byte limit (msg_qbytes, from IPC_STAT).
pub fn msg_qbytes(id: i32) -> Result<u64> {
    // SAFETY: msqid_ds is plain data; all zeros is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT fills the msqid_ds `ds` points to.
    let r = unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) };
    check(r as libc::c_long, || format!("msgctl({id}, IPC_STAT)"))?;
    Ok(ds.msg_qbytes as u64)
}

/// msgrcv's MSG_COPY (linux/msg.h): copy the message at an index without removing it.
const MSG_COPY: libc::c_int = 0o40000;

/// The messages queued on queue `id`, in order, read with MSG_COPY (nothing is
/// removed): (type, text). `count` and `bytes` are the queue's, from /proc.
pub fn msg_copy_all(id: i32, count: u64, bytes: u64) -> Result<Vec<(i64, Vec<u8>)>> {
    // No message is larger than the whole queue.
    let cap = bytes as usize;
    let mut buf = vec![0u8; 8 + cap.max(1)];
    let mut out = Vec::new();
    for i in 0..count {
        // SAFETY: the buffer holds a long (the type) and `cap` bytes of text, the size
        // passed as msgsz.
        let r = unsafe {
            libc::msgrcv(
                id,
                buf.as_mut_ptr().cast(),
                cap,
                i as libc::c_long,
                libc::IPC_NOWAIT | MSG_COPY,
            )
        };
        let n = check(r as libc::c_long, || {
            format!("msgrcv({id}, MSG_COPY {i}) (needs CONFIG_CHECKPOINT_RESTORE)")
        })? as usize;
        let mut t = [0u8; 8];
        t.copy_from_slice(&buf[..8]);
        out.push((i64::from_ne_bytes(t), buf[8..8 + n.min(cap)].to_vec()));
    }
    Ok(out)
}

/// Queue one message on queue `id` (never waits: a full queue is an error).
pub fn msg_send(id: i32, mtype: i64, text: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(8 + text.len());
    buf.extend_from_slice(&mtype.to_ne_bytes());
    buf.extend_from_slice(text);
    // SAFETY: the buffer is a long (the type) followed by `text.len()` bytes.
    let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) };
    check(r as libc::c_long, || format!("msgsnd({id})"))?;
    Ok(())
}

/// Read the first `len` bytes of segment `id` (attached read-only for the copy).
pub fn shm_read(id: i32, len: usize) -> Result<Vec<u8>> {
    // SAFETY: a read-only attachment anywhere the kernel chooses.
    let p = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if p as isize == -1 {
        return Err(SysError::os(format!("shmat({id})")));
    }
    // SAFETY: the segment is at least `len` bytes (its size, from /proc) and mapped at
    // `p` until the shmdt below.
    let v = unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec();
    // SAFETY: `p` is the attachment made above; nothing refers to it any more.
    unsafe { libc::shmdt(p) };
    Ok(v)
}

/// Write `data` at the start of segment `id`.
pub fn shm_write(id: i32, data: &[u8]) -> Result<()> {
    // SAFETY: a writable attachment anywhere the kernel chooses.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        return Err(SysError::os(format!("shmat({id})")));
    }
    // SAFETY: the segment was created with a size of at least `data.len()` and is mapped
    // writable at `p` until the shmdt below.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, data.len()) };
    // SAFETY: `p` is the attachment made above; nothing refers to it any more.
    unsafe { libc::shmdt(p) };
    Ok(())
}

/// Lock segment `id` in memory (SHM_LOCK).
pub fn shm_lock(id: i32) -> Result<()> {
    // SAFETY: SHM_LOCK takes no buffer.
    let r = unsafe { libc::shmctl(id, libc::SHM_LOCK, std::ptr::null_mut()) };
    check(r as libc::c_long, || format!("shmctl({id}, SHM_LOCK)"))?;
    Ok(())
}

/// Remove object `id` (IPC_RMID; a segment still attached goes when the last one
/// detaches).
pub fn remove(kind: IpcKind, id: i32) -> Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe {
        match kind {
            IpcKind::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            IpcKind::Sem => libc::semctl(id, 0, libc::IPC_RMID),
            IpcKind::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    check(r as libc::c_long, || {
        format!("remove System V {kind:?} {id}")
    })?;
    Ok(())
}

/// Set the owner, group and permission bits of object `id` (IPC_SET; for a queue also
/// its byte limit `qbytes`).
pub fn set_owner(kind: IpcKind, id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> Result<()> {
    let mode = (mode & 0o777) as libc::c_ushort;
    // SAFETY: in each arm IPC_STAT fills the zeroed plain-data structure and IPC_SET
    // reads it; nothing else is passed.
    let r = unsafe {
        match kind {
            IpcKind::Shm => {
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                let r = libc::shmctl(id, libc::IPC_STAT, &mut ds);
                if r < 0 {
                    r
                } else {
                    ds.shm_perm.uid = uid;
                    ds.shm_perm.gid = gid;
                    ds.shm_perm.mode = mode;
                    libc::shmctl(id, libc::IPC_SET, &mut ds)
                }
            }
            IpcKind::Sem => {
                let mut ds: libc::semid_ds = std::mem::zeroed();
                let r = libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds);
                if r < 0 {
                    r
                } else {
                    ds.sem_perm.uid = uid;
                    ds.sem_perm.gid = gid;
                    ds.sem_perm.mode = mode;
                    libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds)
                }
            }
            IpcKind::Msg => {
                let mut ds: libc::msqid_ds = std::mem::zeroed();
                let r = libc::msgctl(id, libc::IPC_STAT, &mut ds);
                if r < 0 {
                    r
                } else {
                    ds.msg_perm.uid = uid;
                    ds.msg_perm.gid = gid;
                    ds.msg_perm.mode = mode;
                    if qbytes != 0 {
                        ds.msg_qbytes = qbytes as _;
                    }
                    libc::msgctl(id, libc::IPC_SET, &mut ds)
                }
            }
        }
    };
    check(r as libc::c_long, || {
        format!("IPC_SET of System V {kind:?} {id}")
    })?;
    Ok(())
}

/// Whether this kernel lets ckpt choose the next ID of each kind (the
/// kernel.*_next_id files of CONFIG_CHECKPOINT_RESTORE, writable).
pub fn next_id_settable(kind: IpcKind) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(kind.next_id_file())
        .is_ok()
}

fn set_next_id(kind: IpcKind, id: i32) -> Result<()> {
    let f = kind.next_id_file();
    std::fs::write(f, id.to_string()).map_err(|e| SysError::io(format!("write {f}"), e))
}

/// What to create: its kind, key, ID, the creator's effective user and group (they
/// become cuid/cgid), and the kind's size (segment bytes, semaphores; 0 for a queue).
#[derive(Clone, Copy, Debug)]
pub struct NewObject {
    pub kind: IpcKind,
    pub key: i32,
    pub id: i32,
    pub cuid: u32,
    pub cgid: u32,
    pub size: u64,
}

/// Create an object under its old ID (through kernel.*_next_id) and key, from a thread
/// of ckpt that takes the creator's effective user and group for it alone (raw
/// setresgid/setresuid change only the calling thread), so cuid/cgid come back. It
/// starts with mode 0600; [`set_owner`] gives it its owner and mode. Returns the ID the
/// kernel gave, which the caller compares.
pub fn create(o: NewObject) -> Result<i32> {
    set_next_id(o.kind, o.id)?;
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: raw setresgid/setresuid with -1 for what stays; they act on this
            // thread only (glibc's wrappers would change every thread of ckpt).
            let ok = unsafe {
                libc::syscall(libc::SYS_setresgid, -1i64, o.cgid as i64, -1i64) == 0
                    && libc::syscall(libc::SYS_setresuid, -1i64, o.cuid as i64, -1i64) == 0
            };
            if !ok {
                return Err(SysError::os(format!(
                    "take user {} group {} to create System V {:?} {}",
                    o.cuid, o.cgid, o.kind, o.id
                )));
            }
            let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
            // SAFETY: the *get calls take only integers.
            let r = unsafe {
                match o.kind {
                    IpcKind::Shm => libc::shmget(o.key, o.size as usize, flags),
                    IpcKind::Sem => libc::semget(o.key, o.size as libc::c_int, flags),
                    IpcKind::Msg => libc::msgget(o.key, flags),
                }
            };
            check(r as libc::c_long, || {
                format!("create System V {:?} {} (key {:#x})", o.kind, o.id, o.key)
            })
            .map(|r| r as i32)
        })
        .join()
        .unwrap_or_else(|_| Err(SysError::Other("the creating thread panicked".into())))
    });
    // The next object gets whatever ID the kernel picks again.
    let _ = set_next_id(o.kind, -1);
    r
}

/// Whether processes `a` and `b` share one System V semaphore undo list (kcmp
/// KCMP_SYSVSEM; both without one also count as the same).
pub fn same_sem_undo(a: i32, b: i32) -> Result<bool> {
    // linux/kcmp.h; neither libc nor linux-raw-sys has it.
    const KCMP_SYSVSEM: libc::c_long = 6;
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            KCMP_SYSVSEM,
            0,
            0,
        )
    };
    check(r, || format!("kcmp({a}, {b}, KCMP_SYSVSEM)"))?;
    Ok(r == 0)
}

/// A child of ckpt without a System V semaphore undo list (forked, not cloned with
/// CLONE_SYSVSEM), to tell whether a task has one: kcmp KCMP_SYSVSEM finds a task
/// without one "the same" as it. ckpt itself is no such reference: it has a list as soon
/// as it starts a thread (std's threads are made with CLONE_SYSVSEM). The child only
/// waits; it is killed and reaped when this is dropped, and dies with ckpt.
pub struct NoUndoList {
    pid: i32,
}

impl NoUndoList {
    pub fn new() -> Result<Self> {
        let parent = rustix::process::getpid().as_raw_nonzero().get();
        // SAFETY: the child (0) runs only raw system calls and never returns: no lock or
        // allocator state of a possibly multi-threaded parent is used.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw system calls only, see above.
            unsafe {
                super::process::die_with_parent(parent);
                loop {
                    libc::syscall(libc::SYS_pause);
                }
            }
        }
        if pid < 0 {
            return Err(SysError::os(
                "fork a child without a System V semaphore undo list",
            ));
        }
        Ok(Self { pid })
    }

    /// Whether task `tid` (a process or a thread) has a System V semaphore undo list.
    pub fn has(&self, tid: i32) -> Result<bool> {
        Ok(!same_sem_undo(tid, self.pid)?)
    }
}

impl Drop for NoUndoList {
    fn drop(&mut self) {
        super::process::kill_and_reap(self.pid, &[]);
    }
}

/// Whether `path` (a /proc/PID/fd/N link) leads to a POSIX message queue: its file
/// system is mqueue (MQUEUE_MAGIC, linux/magic.h).
pub fn is_posix_mqueue(path: &str) -> bool {
    const MQUEUE_MAGIC: i64 = 0x1980_0202;
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs is plain data; all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs the call fills.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == MQUEUE_MAGIC
}

/// A POSIX message queue's limits and length (mq_getattr): (maxmsg, msgsize, curmsgs).
pub fn mq_attr(fd: &std::os::fd::OwnedFd) -> Result<(i64, i64, i64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: mq_attr is plain data; all zeros is a valid value.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: mq_getsetattr with no new attributes writes the old ones into `a`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<libc::mq_attr>(),
            &mut a as *mut libc::mq_attr,
        )
    };
    check(r, || "mq_getattr".to_string())?;
    Ok((a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs))
}

/// A queue's notification (mq_notify) as a read of it shows it: (NOTIFY_PID, the
/// process registered, 0 if none; NOTIFY, its sigev_notify; SIGNO), read at offset 0
/// with pread, so no file position moves.
pub fn mq_notify_state(fd: &std::os::fd::OwnedFd) -> Result<(i32, i32, i32)> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd.try_clone().map_err(|e| SysError::io("dup", e))?);
    let mut buf = [0u8; 256];
    let n = f
        .read_at(&mut buf, 0)
        .map_err(|e| SysError::io("read a POSIX queue", e))?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let field = |name: &str| -> Option<i32> {
        text.split(name)
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
    };
    match (field("NOTIFY_PID:"), field("NOTIFY:"), field("SIGNO:")) {
        (Some(p), Some(n), Some(s)) => Ok((p, n, s)),
        _ => Err(SysError::Other(format!(
            "cannot parse a POSIX queue's state: {text}"
        ))),
    }
}

/// Every message of a queue, in the order they would be received (highest priority
/// first, then oldest), taken off and queued again in that order, which gives the same
/// queue: (priority, bytes). Never waits (an expired timeout).
pub fn mq_copy_messages(fd: &std::os::fd::OwnedFd, msgsize: i64) -> Result<Vec<(u32, Vec<u8>)>> {
    use std::os::fd::AsRawFd;
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut buf = vec![0u8; msgsize.max(1) as usize];
    let mut out = Vec::new();
    loop {
        let mut prio = 0u32;
        // SAFETY: the buffer has the queue's message size; prio and the timeout are
        // valid for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mq_timedreceive,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut prio as *mut u32,
                &zero as *const libc::timespec,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ETIMEDOUT) | Some(libc::EAGAIN)) {
                break;
            }
            // Put back what was taken before failing.
            let _ = mq_send_all(fd, &out);
            return Err(SysError::io("mq_timedreceive", e));
        }
        out.push((prio, buf[..r as usize].to_vec()));
    }
    mq_send_all(fd, &out)?;
    Ok(out)
}

fn mq_send_all(fd: &std::os::fd::OwnedFd, msgs: &[(u32, Vec<u8>)]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    for (prio, data) in msgs {
        // SAFETY: `data` is valid for its length; the timeout is valid.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mq_timedsend,
                fd.as_raw_fd(),
                data.as_ptr(),
                data.len(),
                *prio,
                &zero as *const libc::timespec,
            )
        };
        check(r, || "mq_timedsend".to_string())?;
    }
    Ok(())
}

/// Open the POSIX message queue `name` (without its leading '/') of the calling
/// thread's IPC namespace, for reading and writing, close-on-exec.
pub fn mq_open_name(name: &[u8]) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let show = String::from_utf8_lossy(name).into_owned();
    let c = std::ffi::CString::new(name)
        .map_err(|_| SysError::Other(format!("POSIX message queue name {show:?} has a NUL")))?;
    // SAFETY: `c` is NUL-terminated; no attributes are passed without O_CREAT.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            c.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC,
            0,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    check(fd, || format!("mq_open /{show}"))?;
    // SAFETY: the descriptor was just opened and is ours alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// A named POSIX message queue to make (see [`mq_make`]).
pub struct NewMqueue<'a> {
    pub name: &'a [u8],
    pub maxmsg: i64,
    pub msgsize: i64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// (priority, bytes), in the order they are to be received.
    pub messages: &'a [(u32, Vec<u8>)],
}

/// Make the POSIX message queue `q.name` in the calling thread's IPC namespace (it must
/// not exist there) with its attributes, fill it with its messages, and give it its
/// owner and mode. ckpt's RLIMIT_MSGQUEUE (which the kernel applies even to root) is
/// lifted for the call and put back: the queue is charged to ckpt's user. A failure
/// after the queue was made removes it again.
pub fn mq_make(q: &NewMqueue<'_>) -> Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::PermissionsExt;
    let show = String::from_utf8_lossy(q.name).into_owned();
    let c = std::ffi::CString::new(q.name)
        .map_err(|_| SysError::Other(format!("POSIX message queue name {show:?} has a NUL")))?;
    // SAFETY: mq_attr is plain data; all zeros is a valid value.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    a.mq_maxmsg = q.maxmsg;
    a.mq_msgsize = q.msgsize;
    let old = getrlimit(Resource::Msgqueue);
    let _ = setrlimit(
        Resource::Msgqueue,
        Rlimit {
            current: None,
            maximum: None,
        },
    );
    // SAFETY: `c` is NUL-terminated and `a` a valid mq_attr for O_CREAT.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600 as libc::c_long,
            &a as *const libc::mq_attr,
        )
    };
    let made = check(fd, || format!("mq_open /{show} (make it again)"));
    let _ = setrlimit(Resource::Msgqueue, old);
    made?;
    // SAFETY: the descriptor was just opened and is ours alone.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let fill = || -> Result<()> {
        mq_send_all(&fd, q.messages)?;
        std::os::unix::fs::fchown(&fd, Some(q.uid), Some(q.gid))
            .map_err(|e| SysError::io(format!("fchown POSIX message queue /{show}"), e))?;
        let f = std::fs::File::from(fd.try_clone().map_err(|e| SysError::io("dup", e))?);
        f.set_permissions(std::fs::Permissions::from_mode(q.mode & 0o7777))
            .map_err(|e| SysError::io(format!("fchmod POSIX message queue /{show}"), e))
    };
    let r = fill();
    if r.is_err() {
        // SAFETY: `c` is NUL-terminated.
        unsafe { libc::syscall(libc::SYS_mq_unlink, c.as_ptr()) };
    }
    r
}

/// Whether a POSIX message queue named `name` (without its leading '/') exists in
/// ckpt's IPC namespace (opened read-only and closed; a queue ckpt may not open exists).
pub fn mq_exists(name: &[u8]) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated; no attributes are passed without O_CREAT.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor just opened.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}
