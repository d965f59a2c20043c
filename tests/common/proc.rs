//! Process helpers: the kernel's view of processes (/proc), bounded waits for them,
//! and reaping what a test leaves behind.

use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------
// Process helpers (the kernel's view)

/// Make this process a child subreaper (once): orphans below it become our children.
pub fn become_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: plain prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            io::Error::last_os_error()
        );
    });
}

pub fn my_pid() -> i32 {
    std::process::id() as i32
}

/// Send `sig` to `pid`; false if there is no such process.
pub fn send_signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// TIDs of the threads of `pid`, sorted.
pub fn tasks(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// State letter (R, S, D, T, t, Z...) and parent PID from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = String::from_utf8_lossy(&s[close + 1..]).into_owned();
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// TracerPid from /proc/PID/status (0 when not traced).
pub fn tracer_pid(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The system call the task is blocked in (first field of /proc/PID/syscall), if any.
pub fn blocked_syscall(pid: i32) -> Option<i64> {
    let s = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Wait until `pid` is blocked in system call `nr` (e.g. 0 for read).
pub fn wait_in_syscall(pid: i32, nr: i64, what: &str) {
    let deadline = Instant::now() + timeout();
    loop {
        if blocked_syscall(pid) == Some(nr) && proc_stat(pid).is_some_and(|s| s.0 == 'S') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: pid {pid} never blocked in syscall {nr} (now: {:?}, state {:?})",
            blocked_syscall(pid),
            proc_stat(pid)
        );
        thread::sleep(POLL);
    }
}

/// Assert that `pid` exists, runs freely (not stopped, traced or dead).
pub fn assert_running_untraced(pid: i32, what: &str) {
    let st = proc_stat(pid);
    let state = st.map(|s| s.0);
    assert!(
        matches!(state, Some('R' | 'S' | 'D')),
        "{what}: pid {pid} should be running, but its state is {state:?}"
    );
    assert_eq!(
        tracer_pid(pid),
        Some(0),
        "{what}: pid {pid} is still traced"
    );
}

/// Assert that no process `pid` exists (allowing `grace` for a dying one to vanish). A
/// zombie left to us is reaped and reported as a leftover.
pub fn assert_no_process(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match proc_stat(pid) {
            None => return,
            Some(('Z', ppid)) if ppid == my_pid() => {
                reap(pid);
                panic!("{what}: a process with pid {pid} was left behind (it died a zombie)");
            }
            Some(st) => assert!(
                Instant::now() < deadline,
                "{what}: a process with pid {pid} was left behind: state {:?}, ppid {}, \
                 tracer {:?}, cmdline {:?}",
                st.0,
                st.1,
                tracer_pid(pid),
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default()
            ),
        }
        thread::sleep(POLL);
    }
}

/// `root` and all its descendants (from /proc/PID/task/*/children), parents first.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        if !pid_exists(p) || out.contains(&p) {
            continue;
        }
        out.push(p);
        let tasks = fs::read_dir(format!("/proc/{p}/task"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default();
        for t in tasks {
            let f = format!("/proc/{p}/task/{}/children", t.to_string_lossy());
            if let Ok(s) = fs::read_to_string(f) {
                queue.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Wait until the tree rooted at `root` has exactly `n` live (non-zombie) processes;
/// returns them, parents first.
pub fn wait_process_tree(root: i32, n: usize, what: &str) -> Vec<i32> {
    let deadline = Instant::now() + timeout();
    loop {
        let pids: Vec<i32> = process_tree(root)
            .into_iter()
            .filter(|&p| proc_stat(p).is_some_and(|s| s.0 != 'Z'))
            .collect();
        if pids.len() == n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the tree of {root} never had {n} live processes; now {pids:?}"
        );
        thread::sleep(POLL);
    }
}

/// Wait until none of `pids` exists, reaping those that became our zombies (processes
/// of a tree killed by `ckpt dump` whose parent died first are reparented to us).
pub fn wait_pids_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + timeout();
    for &pid in pids {
        while pid_exists(pid) {
            if proc_stat(pid).is_some_and(|s| s.0 == 'Z' && s.1 == my_pid()) {
                reap(pid);
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: pid {pid} still exists: {:?}",
                proc_stat(pid)
            );
            thread::sleep(POLL);
        }
    }
}

/// Wait until `pid` is blocked (state S) in one of the system calls `nrs`.
pub fn wait_in_any_syscall(pid: i32, nrs: &[i64], what: &str) {
    let deadline = Instant::now() + timeout();
    loop {
        if blocked_syscall(pid).is_some_and(|n| nrs.contains(&n))
            && proc_stat(pid).is_some_and(|s| s.0 == 'S')
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: pid {pid} never blocked in one of the syscalls {nrs:?} (now: {:?}, \
             state {:?})",
            blocked_syscall(pid),
            proc_stat(pid)
        );
        thread::sleep(POLL);
    }
}

/// Our children other than `except`, as (pid, state) — there should be none after a
/// failed `ckpt` run has been reaped.
pub fn stray_children(except: &[i32]) -> Vec<(i32, char)> {
    let me = my_pid();
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((state, ppid)) = proc_stat(pid) {
                if ppid == me && !except.contains(&pid) {
                    v.push((pid, state));
                }
            }
        }
    }
    v
}

/// Reap `pid` if it is our zombie; returns its status.
pub(super) fn reap(pid: i32) -> Option<ExitStatus> {
    let mut st = 0;
    // SAFETY: waitpid with a valid pointer to a local.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
    (r == pid).then(|| ExitStatus::from_raw(st))
}

/// Wait for `pid` to exit and reap it. It need not be our child yet: a restored process
/// becomes our child (subreaper) when `ckpt restore` exits. None if it vanished without
/// us seeing its status (someone else reaped it).
pub fn wait_pid(pid: i32, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid pointer to a local.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(ExitStatus::from_raw(st));
        }
        if r < 0 && !pid_exists(pid) {
            return None;
        }
        if Instant::now() >= deadline {
            let st = proc_stat(pid);
            send_signal(pid, libc::SIGKILL);
            panic!(
                "pid {pid} did not exit within {limit:?} (state {st:?}, tracer {:?}); killed it",
                tracer_pid(pid)
            );
        }
        thread::sleep(POLL);
    }
}

/// SIGKILL `pid` if it is our child (or our zombie), and reap it.
pub(super) fn kill_if_ours(pid: i32) {
    if let Some((_, ppid)) = proc_stat(pid) {
        if ppid == my_pid() {
            send_signal(pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if reap(pid).is_some() || !pid_exists(pid) {
                    return;
                }
                thread::sleep(POLL);
            }
        }
    }
}

/// Reap every zombie child we have.
pub(super) fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid pointer to a local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

/// A process's IDs from the outermost PID namespace in (`NSpid` of /proc/PID/status;
/// empty if it is gone).
pub fn nspids(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// PTRACE_SECCOMP_GET_FILTER and PTRACE_SECCOMP_GET_METADATA (<linux/ptrace.h>).
pub const GET_FILTER: libc::c_uint = 0x420c;
pub const GET_METADATA: libc::c_uint = 0x420d;

/// The seccomp filters of thread `tid`, oldest first: each filter's instructions (raw
/// `struct sock_filter` bytes) and the flags the kernel keeps of it. The thread is
/// seized, interrupted, read and released.
pub fn filters_of(tid: i32) -> Vec<(Vec<u8>, u64)> {
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
            0,
            "PTRACE_SEIZE {tid}: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        let mut st = 0;
        assert_eq!(libc::waitpid(tid, &mut st, libc::__WALL), tid);
    }
    let mut out = Vec::new();
    for i in 0..64usize {
        let n = unsafe { libc::ptrace(GET_FILTER, tid, i, 0usize) };
        if n < 0 {
            break;
        }
        let mut buf = vec![0u8; n as usize * 8];
        let r = unsafe { libc::ptrace(GET_FILTER, tid, i, buf.as_mut_ptr()) };
        assert_eq!(r, n, "PTRACE_SECCOMP_GET_FILTER {tid} #{i}");
        let mut md = [i as u64, 0u64];
        let r = unsafe { libc::ptrace(GET_METADATA, tid, 16usize, md.as_mut_ptr()) };
        assert_eq!(r, 16, "PTRACE_SECCOMP_GET_METADATA {tid} #{i}");
        out.push((buf, md[1]));
    }
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0), 0);
    }
    out
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup_v2() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or_default()))
        })
        .expect("needs a cgroup v2 hierarchy mounted (cgroup2 in /proc/self/mountinfo)")
}

/// A cgroup v2 the test made (`ckpt-e2e-TAG-PID` at the hierarchy's root), removed when
/// dropped (once its processes are gone).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn make(tag: &str) -> TestCgroup {
        let d = cgroup_v2().join(format!("ckpt-e2e-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        TestCgroup(d)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Give this thread (and what it starts from now on: the target, ckpt, `nft`) a network
/// namespace of its own with its loopback up: a test's connections and the dump's
/// netfilter lock stay out of the host's namespace and other tests'. It ends with the
/// test's process and what it started.
pub fn thread_net_ns() {
    // SAFETY: unshare(CLONE_NEWNET) moves the calling thread alone into a new network
    // namespace; no memory is passed, and the test's other threads keep theirs.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare: {}", io::Error::last_os_error());
    let st = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip (iproute2)");
    assert!(
        st.success(),
        "ip link set lo up in the test's network namespace"
    );
}
