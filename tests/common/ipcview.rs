//! What the kernel shows inside an IPC namespace (/proc/sysvipc, its limits under
//! /proc/sys, its named POSIX message queues), read from a thread of the test that joined
//! it: the state oracle's entries for an IPC namespace of the tree's own
//! (`e2e_ipcns`) or one a process below the root made (`e2e_belowns`).

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::process_tree;

/// Run `f` on a thread that joined the IPC namespace of process `pid`.
pub fn in_ipc_ns<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> T {
    in_ipc_ns_file(&ipc_ns_file(pid), f)
}

/// The IPC namespace file of process `pid`, opened (it keeps the namespace once its
/// processes are gone).
pub fn ipc_ns_file(pid: i32) -> fs::File {
    fs::File::open(format!("/proc/{pid}/ns/ipc")).expect("the tree's IPC namespace")
}

/// Each semaphore set of the IPC namespace `ns` (a namespace file), by ID, with its
/// values (semctl GETVAL, read from a thread that joined it).
pub fn sem_values_in(ns: &fs::File) -> BTreeMap<i32, Vec<i32>> {
    in_ipc_ns_file(ns, || {
        let text = fs::read_to_string("/proc/sysvipc/sem").unwrap_or_default();
        let mut out = BTreeMap::new();
        for l in text.lines().skip(1) {
            // key semid perms nsems ...
            let c: Vec<i32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let (Some(&id), Some(&n)) = (c.get(1), c.get(3)) else {
                continue;
            };
            // SAFETY: GETVAL takes no fourth argument.
            let v = (0..n).map(|i| unsafe { libc::semctl(id, i, libc::GETVAL) });
            out.insert(id, v.collect());
        }
        out
    })
}

/// Run `f` on a thread that joined the IPC namespace `ns` (a namespace file).
pub fn in_ipc_ns_file<T: Send>(ns: &fs::File, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns with a namespace file held open; it changes this thread's
            // IPC namespace only, which ends with it.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWIPC) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the namespace")
    })
}

/// The columns of a /proc/sysvipc line that describe the object (not who touched it
/// last, nor when: those name ckpt after a restore, see README).
pub fn sysvipc_lines(file: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(format!("/proc/sysvipc/{file}")).unwrap_or_default();
    let keep: &[usize] = match file {
        // key shmid perms size cpid lpid nattch uid gid cuid cgid ...
        "shm" => &[0, 1, 2, 3, 6, 7, 8, 9, 10],
        // key semid perms nsems uid gid cuid cgid ...
        "sem" => &[0, 1, 2, 3, 4, 5, 6, 7],
        // key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid ...
        _ => &[0, 1, 2, 3, 4, 7, 8, 9, 10],
    };
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let id = c.get(1).copied().unwrap_or("?").to_string();
            let v = keep
                .iter()
                .map(|&i| c.get(i).copied().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ");
            (id, v)
        })
        .collect()
}

/// A POSIX queue's attributes, owner and mode, opened by name in the calling thread's
/// namespace (None: no such queue).
pub fn mq_line(name: &str) -> Option<String> {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name, no attributes without O_CREAT.
    let fd = unsafe { libc::mq_open(c.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return None;
    }
    // SAFETY: mq_attr is plain data.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `a` is a valid mq_attr for the call.
    unsafe { libc::mq_getattr(fd, &mut a) };
    let meta = fs::metadata(format!("/proc/self/fd/{fd}")).ok();
    // The queue's text: its size and notification (NOTIFY, SIGNO, NOTIFY_PID).
    let mut text = [0u8; 128];
    // SAFETY: `text` is valid for its length.
    let n = unsafe { libc::pread(fd, text.as_mut_ptr().cast(), text.len(), 0) };
    let state = String::from_utf8_lossy(&text[..n.max(0) as usize])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // SAFETY: the descriptor just opened.
    unsafe { libc::mq_close(fd) };
    let (uid, gid, mode) = meta.map_or((0, 0, 0), |m| (m.uid(), m.gid(), m.mode() & 0o7777));
    Some(format!(
        "maxmsg={} msgsize={} cur={} owner={uid}:{gid} mode={mode:o} {state}",
        a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs
    ))
}

pub const LIMITS: [&str; 12] = [
    "kernel/shmmax",
    "kernel/shmall",
    "kernel/shmmni",
    "kernel/shm_rmid_forced",
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/msgmni",
    "kernel/sem",
    "fs/mqueue/queues_max",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_max",
    "fs/mqueue/msg_default",
];

/// What the kernel shows inside the IPC namespace of process `pid`, as oracle entries
/// (`ipcns.*`): its System V objects, limits and the named queues `queues` ("/name").
/// A process registered for a queue's notification is named by its place in the tree
/// of `tree_of` (a restored container's init does not keep its host PID).
pub fn ipc_view(pid: i32, tree_of: i32, queues: &[&str]) -> BTreeMap<String, String> {
    let tree = process_tree(tree_of);
    in_ipc_ns(pid, || {
        let mut v = BTreeMap::new();
        for file in ["shm", "sem", "msg"] {
            for (id, line) in sysvipc_lines(file) {
                v.insert(format!("ipcns.sysvipc.{file}.{id}"), line);
            }
        }
        for l in LIMITS {
            let text = fs::read_to_string(format!("/proc/sys/{l}")).unwrap_or_default();
            v.insert(
                format!("ipcns.limit.{l}"),
                text.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
        for q in queues {
            let mut line = mq_line(q).unwrap_or_else(|| "(absent)".into());
            for (i, p) in tree.iter().enumerate() {
                line = line.replace(
                    &format!("NOTIFY_PID:{p}"),
                    &format!("NOTIFY_PID:(process {i} of the tree)"),
                );
            }
            v.insert(format!("ipcns.mqueue.{q}"), line);
        }
        v
    })
}

/// `s` with what the kernel shows inside the IPC namespace of process `pid`
/// ([`ipc_view`]) as configuration entries of the oracle's.
pub fn add_view(s: &mut super::oracle::Snapshot, pid: i32, tree_of: i32, queues: &[&str]) {
    for (k, v) in ipc_view(pid, tree_of, queues) {
        s.entries.insert(k, (super::oracle::Kind::Config, v));
    }
}
