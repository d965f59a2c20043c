//! End-to-end test harness for `ckpt`.
//!
//! - builds the C target programs of `tests/targets/` once per source hash (parallel test
//!   processes share the result under a file lock);
//! - runs targets and `ckpt` with timeouts on every wait, capturing their output;
//! - makes the test process a child subreaper, so that a restored process that outlives
//!   `ckpt restore` becomes our child and can be reaped (PID 1 on these machines does not
//!   reap orphans);
//! - kills whatever is left over when a test ends, pass or fail;
//! - compares outputs byte for byte and `ckpt inspect --json` documents path by path,
//!   with failure messages that show where they differ.
//!
//! Each test builds a [`Ctx`] first; everything it spawns hangs off it. Tests run one
//! process per test (cargo-nextest), which ptrace and the subreaper setting need.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]
#![allow(dead_code)] // each test crate uses a different part of the harness

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod oracle;

// ---------------------------------------------------------------------------------------
// Timeouts

/// The bound on every single wait in the harness (a hung test must fail, not hang CI).
/// Override with `CKPT_TEST_TIMEOUT_SECS` (e.g. on a very slow machine).
pub fn timeout() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        let secs = std::env::var("CKPT_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(30);
        Duration::from_secs(secs.max(1))
    })
}

const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------------------
// Building the targets

/// Compiled C targets: (binary name, source file, extra gcc flags).
pub const C_TARGETS: &[(&str, &str, &[&str])] = &[
    ("counter", "counter.c", &[]),
    ("counter-static", "counter.c", &["-static"]),
    ("signals", "signals.c", &[]),
    // restore's breakpoint stops must not touch a SIGTRAP handler or an ignored SIGTRAP
    ("trapsig", "trapsig.c", &[]),
    ("files", "files.c", &[]),
    ("blocked_read", "blocked_read.c", &[]),
    ("fdkind", "fdkind.c", &[]),
    // a page sealed with mseal (refused by dump)
    ("sealed", "sealed.c", &[]),
    // non-default attributes: mlock, madvise flags, rlimits, name, umask, own group
    ("attrs", "attrs.c", &[]),
    // tests/e2e_tree.rs: threads, process trees, signals and timers
    ("threads", "threads.c", &["-pthread"]),
    ("tree", "tree.c", &[]),
    ("session", "session.c", &[]),
    ("zombie", "zombie.c", &[]),
    ("timers", "timers.c", &[]),
    // tests/e2e_arch.rs: 32-bit (ia32) twins of 64-bit programs, mixed trees, debug
    // registers, CPU features (-msse2: the 32-bit builds use SSE2 intrinsics too)
    ("arch64", "arch.c", &[]),
    ("arch32", "arch.c", &["-m32", "-msse2"]),
    ("arch32-static", "arch.c", &["-m32", "-msse2", "-static"]),
    ("launch64", "launch.c", &[]),
    ("launch32", "launch.c", &["-m32"]),
    ("watch", "watch.c", &["-no-pie"]),
    ("avx", "avx.c", &["-mavx2", "-mno-vzeroupper"]),
    // tests/e2e_files.rs: pipes, epoll, eventfd, timerfd, signalfd, shared descriptions
    ("stage", "stage.c", &[]),
    ("evloop", "evloop.c", &[]),
    ("twostreams", "twostreams.c", &[]),
    ("selfpipe", "selfpipe.c", &[]),
    // tests/e2e_more.rs: unix sockets in a tree, memfd and deleted files, chroot, a tree
    // restored in a new PID namespace
    ("usock", "usock.c", &[]),
    ("memfd", "memfd.c", &[]),
    ("chroot-static", "chroot.c", &["-static"]),
    ("nstree", "nstree.c", &[]),
    ("sysv", "sysv.c", &[]),
    // tests/e2e_fsobj.rs: FIFOs, file locks, O_PATH descriptors, inotify
    ("fifo", "fifo.c", &[]),
    ("locks", "locks.c", &[]),
    ("opath", "opath.c", &[]),
    ("inotify", "inotify.c", &[]),
    // tests/e2e_socks.rs: datagram and seqpacket unix sockets, UDP, --inherit-fd
    ("dgsock", "dgsock.c", &[]),
    ("udpecho", "udpecho.c", &[]),
    ("inheritfd", "inheritfd.c", &[]),
    ("dgname", "dgname.c", &[]),
    // tests/e2e_mapfile.rs: mapped memfds and mapped deleted files
    ("memmap", "memmap.c", &[]),
    // tests/e2e_filerace.rs: files swapped between plan and stage, recreated setuid files
    ("filerace", "filerace.c", &[]),
    // tests/e2e_tty.rs: a program on a terminal restored onto a new pty
    ("ttyjob", "ttyjob.c", &[]),
    // tests/e2e_privs.rs: credentials, securebits and limits, per thread
    ("privs", "privs.c", &["-pthread"]),
    // tests/e2e_lost.rs: states a dump recorded and a restore could not give back
    ("lost", "lost.c", &["-pthread"]),
    // tests/e2e_dumpplan.rs: what dump's own run of restore's plan refuses
    ("dumpplan", "dumpplan.c", &[]),
    // tests/e2e_oracle.rs: state only the kernel (or the task itself) shows, for the oracle
    ("oracle", "oracle.c", &["-pthread"]),
    // tests/e2e_invisible.rs: threads blocked in epoll_wait, poll, select, nanosleep, read,
    // futex... through dumps
    ("blockers", "blockers.c", &["-pthread"]),
    // tests/e2e_killsafe.rs: threads that check their memory, masks and vector registers
    ("killsafe", "killsafe.c", &["-pthread", "-mavx2"]),
];

const CFLAGS: &[&str] = &["-O2", "-g", "-Wall", "-Wextra"];

/// `tests/targets/` in the source tree.
pub fn targets_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets")
}

/// The `ckpt` binary under test: the one cargo built for the tests, or the one named by
/// `CKPT_TEST_BIN` (scripts/test runs the core tests again with the static release build).
pub fn ckpt_bin() -> PathBuf {
    match std::env::var_os("CKPT_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ckpt")),
    }
}

/// Path of a compiled C target (see [`C_TARGETS`]), building all of them on first use.
pub fn target(name: &str) -> PathBuf {
    assert!(
        C_TARGETS.iter().any(|t| t.0 == name),
        "unknown target {name}"
    );
    built_targets().join(name)
}

/// A script of `tests/targets/` (e.g. `loop.py`).
pub fn script(name: &str) -> PathBuf {
    let p = targets_src().join(name);
    assert!(p.exists(), "missing test script {}", p.display());
    p
}

/// The python3 interpreter to run scripts with.
pub fn python3() -> PathBuf {
    find_in_path("python3").expect("python3 not found in PATH (apt-get install python3)")
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn built_targets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_targets)
}

fn build_targets() -> PathBuf {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_string());
    let version = Command::new(&cc)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc} ({e}); install gcc and libc6-dev"));
    // Key the build directory by everything that goes into the binaries, so that
    // concurrent test processes and stale builds never mix.
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(cc.as_bytes());
    h.update(&version.stdout);
    for (name, src, flags) in C_TARGETS {
        h.update(format!("{name}|{src}|{flags:?}|{CFLAGS:?}\n").as_bytes());
    }
    let src = targets_src();
    let mut files: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| matches!(p.extension().and_then(OsStr::to_str), Some("c" | "h")))
        .collect();
    files.sort();
    for f in &files {
        h.update(f.file_name().unwrap_or_default().as_bytes());
        h.update(&fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ckpt-targets")
        .join(format!("{:016x}", h.digest()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));

    let lock = File::create(dir.join(".lock")).expect("create build lock");
    // SAFETY: flock on an fd we own; released when `lock` is closed.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", io::Error::last_os_error());
    if !dir.join(".done").exists() {
        for (name, srcfile, flags) in C_TARGETS {
            let tmp = dir.join(format!("{name}.tmp"));
            let out = Command::new(&cc)
                .args(CFLAGS)
                .args(*flags)
                .arg("-o")
                .arg(&tmp)
                .arg(src.join(srcfile))
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
            assert!(
                out.status.success(),
                "building test target {name} from {srcfile} failed:\n{}\n(for -static builds \
                 the static libc from libc6-dev is needed)",
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.stderr.is_empty() {
                eprintln!(
                    "warnings building {name}:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            fs::rename(&tmp, dir.join(name)).expect("rename built target");
        }
        File::create(dir.join(".done")).expect("create .done");
    }
    drop(lock);
    dir
}

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
fn reap(pid: i32) -> Option<ExitStatus> {
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
fn kill_if_ours(pid: i32) {
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
fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid pointer to a local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output capture

/// Output of a process, kept in a file: either the process writes the file itself, or a
/// thread copies a pipe into it. Readable at any time while the process runs.
pub struct Capture {
    pub path: PathBuf,
    thread: Option<JoinHandle<()>>,
    done: Arc<Mutex<bool>>,
}

impl Capture {
    fn file(path: PathBuf) -> Capture {
        Capture {
            path,
            thread: None,
            done: Arc::new(Mutex::new(true)),
        }
    }

    fn pipe<R: Read + Send + 'static>(mut r: R, path: PathBuf) -> Capture {
        let mut f =
            File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let done = Arc::new(Mutex::new(false));
        let done2 = done.clone();
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if f.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if let Ok(mut d) = done2.lock() {
                *d = true;
            }
        });
        Capture {
            path,
            thread: Some(thread),
            done,
        }
    }

    /// Everything captured so far.
    pub fn bytes(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn lines(&self) -> usize {
        self.bytes().iter().filter(|&&b| b == b'\n').count()
    }

    /// True once the pipe reached end of file (always true for a file).
    pub fn at_eof(&self) -> bool {
        self.done.lock().map(|d| *d).unwrap_or(true)
    }

    /// Wait for end of file on the pipe (every writer gone) and return everything.
    pub fn finish(&mut self, what: &str) -> Vec<u8> {
        let deadline = Instant::now() + timeout();
        while !self.at_eof() {
            assert!(
                Instant::now() < deadline,
                "{what}: output pipe still open after {:?} (a process still holds it); \
                 output so far:\n{}",
                timeout(),
                self.text()
            );
            thread::sleep(POLL);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bytes()
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// How a process's stdin is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Null,
    Pipe,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub prog: PathBuf,
    pub args: Vec<OsString>,
    /// None: a pipe read by the harness; Some(path): a regular file the process writes.
    pub stdout_file: Option<PathBuf>,
    pub stdin: In,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// Descriptors of the test process (above 2) that the process inherits; every other
    /// one is closed on exec.
    pub keep_fds: Vec<i32>,
}

impl Spec {
    pub fn new(prog: impl Into<PathBuf>) -> Spec {
        Spec {
            prog: prog.into(),
            args: Vec::new(),
            stdout_file: None,
            stdin: In::Null,
            env: Vec::new(),
            cwd: None,
            keep_fds: Vec::new(),
        }
    }
    /// Let the process inherit the test's descriptor `fd` (at the same number).
    pub fn keep_fd(mut self, fd: i32) -> Spec {
        self.keep_fds.push(fd);
        self
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Spec {
        self.args.push(a.as_ref().to_owned());
        self
    }
    pub fn stdout_file(mut self, p: impl Into<PathBuf>) -> Spec {
        self.stdout_file = Some(p.into());
        self
    }
    pub fn stdin(mut self, i: In) -> Spec {
        self.stdin = i;
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Spec {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }
    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Spec {
        self.cwd = Some(d.into());
        self
    }
    fn label(&self) -> String {
        let mut s = self
            .prog
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// A finished process.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A running process: a target, a `ckpt restore`, or a restored process.
pub struct Proc {
    pub pid: i32,
    pub label: String,
    /// Set when the process is our direct `Command` child.
    child: Option<Child>,
    pub stdout: Capture,
    pub stderr: Capture,
    stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn diag(&self) -> String {
        format!(
            "--- {} (pid {}) stdout:\n{}\n--- stderr:\n{}",
            self.label,
            self.pid,
            self.stdout.text(),
            self.stderr.text()
        )
    }

    /// True once the process has exited and its captured stdout is complete (its last
    /// output may still be on its way through the pipe when it exits).
    fn ended(&mut self) -> bool {
        if self.try_wait().is_none() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stdout.at_eof() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        true
    }

    /// Wait until the process has printed at least `n` lines on stdout.
    pub fn wait_lines(&mut self, n: usize) {
        self.wait_until(&format!("print {n} lines"), |p| p.stdout.lines() >= n);
    }

    /// Wait until stdout contains `needle`.
    pub fn wait_for(&mut self, needle: &str) {
        self.wait_until(&format!("print {needle:?}"), |p| {
            p.stdout.text().contains(needle)
        });
    }

    /// Wait until `done` holds (checked once more after the process ends, so output it
    /// printed just before counts); fails after the harness timeout or if the process
    /// ends first. `what` finishes "did not ..." in the message.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout();
        while !done(self) {
            if self.ended() {
                if done(self) {
                    return;
                }
                panic!(
                    "{}: ended before it did {what} (status {:?})\n{}",
                    self.label,
                    self.status,
                    self.diag()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: did not {what} within {:?}\n{}",
                self.label,
                timeout(),
                self.diag()
            );
            thread::sleep(POLL);
        }
    }

    pub fn signal(&self, sig: i32) {
        assert!(
            send_signal(self.pid, sig),
            "{}: kill({}, {sig}) failed: {}",
            self.label,
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// Write to the process's stdin pipe.
    pub fn write_stdin(&mut self, data: &[u8]) {
        let label = self.label.clone();
        let w = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{label}: no stdin pipe"));
        w.write_all(data)
            .unwrap_or_else(|e| panic!("{label}: write to stdin: {e}"));
        w.flush().ok();
    }

    /// Close our end of the stdin pipe (the process sees end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Non-blocking: the exit status if the process has ended (and was reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = match &mut self.child {
                Some(c) => c.try_wait().ok().flatten(),
                None => {
                    let r = reap(self.pid);
                    if r.is_none() && !pid_exists(self.pid) {
                        // Reaped elsewhere: we will never know its status.
                        Some(ExitStatus::from_raw(0xff << 8))
                    } else {
                        r
                    }
                }
            };
        }
        self.status
    }

    /// Wait (bounded) for the process to end.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + timeout();
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            if Instant::now() >= deadline {
                let st = proc_stat(self.pid);
                self.kill();
                panic!(
                    "{}: did not exit within {:?} (state {st:?}); killed it\n{}",
                    self.label,
                    timeout(),
                    self.diag()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Wait for the end of the process and of its output.
    pub fn finish(&mut self) -> Finished {
        let status = self.wait();
        let what = self.label.clone();
        let stdout = self.stdout.finish(&what);
        let stderr = self.stderr.finish(&what);
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Move the output captures and the stdin pipe out (to a process that inherited them).
    fn take_io(&mut self) -> (Capture, Capture, Option<ChildStdin>) {
        (
            std::mem::replace(&mut self.stdout, Capture::file(PathBuf::new())),
            std::mem::replace(&mut self.stderr, Capture::file(PathBuf::new())),
            self.stdin.take(),
        )
    }

    /// SIGKILL and reap, if still running.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        match &mut self.child {
            Some(c) => {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
            None => {
                kill_if_ours(self.pid);
                self.status = Some(ExitStatus::from_raw(libc::SIGKILL));
            }
        }
    }

    /// Assert the process was killed by a signal (as `ckpt dump` does by default).
    pub fn expect_killed(&mut self) {
        let st = self.wait();
        assert!(
            st.signal().is_some(),
            "{}: expected it to be killed by the dump, but it ended with {st:?}\n{}",
            self.label,
            self.diag()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// ckpt invocations

/// A finished `ckpt` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<OsString>,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!(
            "`ckpt {}` -> {:?} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            args.join(" "),
            self.status,
            self.elapsed,
            if self.stdout.len() > 4096 {
                format!("({} bytes)", self.stdout.len())
            } else {
                self.stdout_text()
            },
            self.stderr
        )
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked at") && !self.stderr.contains("RUST_BACKTRACE"),
            "ckpt panicked:\n{}",
            self.describe()
        );
    }

    pub fn assert_ok(&self) -> &Run {
        self.assert_no_panic();
        assert_eq!(self.code(), Some(0), "ckpt failed:\n{}", self.describe());
        self
    }

    /// Assert exit code `code` with a message on stderr and no panic.
    pub fn assert_fails(&self, code: i32) -> &Run {
        self.assert_no_panic();
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}:\n{}",
            self.describe()
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "ckpt failed without saying why on stderr:\n{}",
            self.describe()
        );
        self
    }

    /// Assert stderr mentions at least one of `words` (case-insensitive).
    pub fn assert_stderr_mentions(&self, words: &[&str]) -> &Run {
        let e = self.stderr.to_lowercase();
        assert!(
            words.iter().any(|w| e.contains(&w.to_lowercase())),
            "stderr should mention one of {words:?}:\n{}",
            self.describe()
        );
        self
    }
}

/// Words an error about a damaged image is expected to use (one of them suffices).
pub const DAMAGED_IMAGE_WORDS: &[&str] = &[
    "truncated",
    "corrupt",
    "checksum",
    "not a ckpt image",
    "padding",
    "end record",
    "does not match",
    "version",
    "feature",
    "too large",
    "invalid",
];

/// Per-test context: a fresh directory, and everything spawned, killed at the end.
pub struct Ctx {
    pub name: String,
    /// The test's directory (kept when the test fails, for a look at the images).
    pub dir: PathBuf,
    /// Harness logs (ckpt's stdout/stderr...), inside `dir` but outside [`Ctx::listing`].
    logs: PathBuf,
    tracked: RefCell<Vec<i32>>,
    seq: Cell<u32>,
    /// The state oracle's snapshot of each tree dumped by [`Ctx::dump`] or
    /// [`Ctx::dump_leave_running`], by image path: compared with the restored tree.
    snaps: RefCell<std::collections::BTreeMap<PathBuf, oracle::Snapshot>>,
}

impl Ctx {
    pub fn new(name: &str) -> Ctx {
        become_subreaper();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        let logs = dir.join(".logs");
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("mkdir {}: {e}", logs.display()));
        eprintln!("test directory: {}", dir.display());
        Ctx {
            name: name.to_string(),
            dir,
            logs,
            tracked: RefCell::new(Vec::new()),
            seq: Cell::new(0),
            snaps: RefCell::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Remember a pid to kill (if it is ours) when the test ends.
    pub fn track(&self, pid: i32) {
        self.tracked.borrow_mut().push(pid);
    }

    fn log_path(&self, what: &str) -> PathBuf {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        self.logs.join(format!("{n:03}-{what}"))
    }

    /// Files under the test directory (relative paths), harness logs excepted.
    pub fn listing(&self) -> BTreeSet<String> {
        fn walk(base: &Path, d: &Path, out: &mut BTreeSet<String>) {
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if e.file_name() == ".logs" {
                        continue;
                    }
                    let rel = p
                        .strip_prefix(base)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel);
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(base, &p, out);
                    }
                }
            }
        }
        let mut s = BTreeSet::new();
        walk(&self.dir, &self.dir, &mut s);
        s
    }

    /// Start a process as described.
    pub fn spawn(&self, spec: &Spec) -> Proc {
        let label = spec.label();
        let mut cmd = Command::new(&spec.prog);
        cmd.args(&spec.args);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if let Some(d) = &spec.cwd {
            cmd.current_dir(d);
        }
        cmd.stdin(match spec.stdin {
            In::Null => Stdio::null(),
            In::Pipe => Stdio::piped(),
        });
        match &spec.stdout_file {
            Some(p) => {
                let f = File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
                cmd.stdout(f);
            }
            None => {
                cmd.stdout(Stdio::piped());
            }
        }
        cmd.stderr(Stdio::piped());
        no_inherited_fds(&mut cmd, spec.keep_fds.clone());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.prog.display()));
        let pid = child.id() as i32;
        let stdout = match &spec.stdout_file {
            Some(p) => Capture::file(p.clone()),
            None => Capture::pipe(
                child.stdout.take().expect("stdout pipe"),
                self.log_path("stdout"),
            ),
        };
        let stderr = Capture::pipe(
            child.stderr.take().expect("stderr pipe"),
            self.log_path("stderr"),
        );
        let stdin = child.stdin.take();
        Proc {
            pid,
            label,
            child: Some(child),
            stdout,
            stderr,
            stdin,
            status: None,
        }
    }

    /// Run `spec` uninterrupted to the end: the reference a checkpointed run must match.
    pub fn reference(&self, spec: &Spec) -> Finished {
        let mut p = self.spawn(spec);
        p.label = format!("reference run of {}", p.label);
        let f = p.finish();
        assert!(
            f.status.code().is_some(),
            "{}: killed by a signal ({:?})\nstderr:\n{}",
            p.label,
            f.status,
            String::from_utf8_lossy(&f.stderr)
        );
        f
    }

    /// Run `ckpt ARGS` to completion (bounded), stdin from `stdin` (or /dev/null), stdout
    /// to `stdout` (or captured).
    pub fn ckpt_io<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&Path>,
        stdout: Option<&Path>,
    ) -> Run {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let out_path = match stdout {
            Some(p) => p.to_path_buf(),
            None => self.log_path("ckpt.stdout"),
        };
        let err_path = self.log_path("ckpt.stderr");
        let mut cmd = Command::new(ckpt_bin());
        cmd.args(&args)
            .current_dir(&self.dir)
            .env("RUST_BACKTRACE", "1")
            .stdin(match stdin {
                Some(p) => Stdio::from(
                    File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display())),
                ),
                None => Stdio::null(),
            })
            .stdout(File::create(&out_path).expect("create ckpt stdout file"))
            .stderr(File::create(&err_path).expect("create ckpt stderr file"));
        no_inherited_fds(&mut cmd, Vec::new());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("cannot start the ckpt binary");
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > timeout() {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`ckpt {:?}` did not finish within {:?}; killed it\nstderr:\n{}",
                    args,
                    timeout(),
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            thread::sleep(POLL);
        };
        let elapsed = start.elapsed();
        let stdout_bytes = if stdout.is_some() {
            Vec::new()
        } else {
            fs::read(&out_path).unwrap_or_default()
        };
        Run {
            args,
            status,
            stdout: stdout_bytes,
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            elapsed,
        }
    }

    pub fn ckpt<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.ckpt_io(args, None, None)
    }

    /// `ckpt dump PID -o IMAGE`, whatever comes of it (for refusals).
    pub fn try_dump(&self, pid: i32, image: &Path) -> Run {
        self.ckpt(&[
            OsStr::new("dump"),
            OsStr::new(&pid.to_string()),
            OsStr::new("-o"),
            image.as_os_str(),
        ])
    }

    /// `ckpt dump PID -o IMAGE` (asserted to succeed); the pid is tracked for cleanup.
    pub fn dump(&self, pid: i32, image: &Path) -> Run {
        self.track(pid);
        let snap = oracle::Snapshot::take_once(pid);
        let r = self.try_dump(pid, image);
        r.assert_ok();
        assert!(
            image.exists(),
            "dump succeeded but wrote no {}",
            image.display()
        );
        eprintln!(
            "dumped pid {pid} in {:?}: {} bytes",
            r.elapsed,
            fs::metadata(image).map(|m| m.len()).unwrap_or(0)
        );
        self.snaps.borrow_mut().insert(image.to_path_buf(), snap);
        r
    }

    /// `ckpt dump PID -o IMAGE --leave-running` (asserted to succeed, and the process to
    /// be running freely afterwards).
    pub fn dump_leave_running(&self, pid: i32, image: &Path) -> Run {
        self.track(pid);
        let snap = oracle::Snapshot::take_once(pid);
        let r = self.ckpt(&[
            OsStr::new("dump"),
            OsStr::new(&pid.to_string()),
            OsStr::new("-o"),
            image.as_os_str(),
            OsStr::new("--leave-running"),
        ]);
        r.assert_ok();
        assert!(
            image.exists(),
            "dump succeeded but wrote no {}",
            image.display()
        );
        assert_running_untraced(pid, "after dump --leave-running");
        // The dump must be invisible: the original's state after it is its state before.
        let after = oracle::Snapshot::take_once(pid);
        if snap.all_alive() && after.all_alive() && after.pids.len() == snap.pids.len() {
            oracle::assert_same_kernel_state(
                &self.name,
                &format!("original after dump --leave-running to {}", image.display()),
                oracle::Cmp::LeftRunning,
                &snap,
                &after,
                &[],
            );
        } else {
            eprintln!("state oracle: the tree changed shape around the dump; not compared");
        }
        self.snaps.borrow_mut().insert(image.to_path_buf(), snap);
        r
    }

    /// For a dump a test runs itself (`ctx.ckpt(&["dump", ...])`, e.g. with options):
    /// the state oracle's snapshot of the tree of `pid` right before it, compared with the
    /// tree restored from `image` by [`Ctx::restore`] and the like.
    pub fn oracle_before_dump(&self, pid: i32, image: &Path) {
        let snap = oracle::Snapshot::take_once(pid);
        self.snaps.borrow_mut().insert(image.to_path_buf(), snap);
    }

    /// Compare the tree restored from `image` with the state oracle's snapshot of the
    /// original taken when it was dumped (if the test dumped it with [`Ctx::dump`] or
    /// [`Ctx::dump_leave_running`]), as soon as the restored tree runs. `restore` is the
    /// attached `ckpt restore` (None after --detach).
    fn oracle_after_restore(&self, image: &Path, extra: &[&str], mut restore: Option<&mut Proc>) {
        let Some(before) = self.snaps.borrow().get(image).cloned() else {
            return;
        };
        if extra.contains(&"--new-pidns") || before.own_pid_namespace() {
            eprintln!("state oracle: not with --new-pidns (the PIDs seen from here differ)");
            return;
        }
        let deadline = Instant::now() + timeout();
        while !oracle::restored_tree_up(&before) {
            let ended = restore.as_mut().is_some_and(|p| p.try_wait().is_some());
            if ended || Instant::now() > deadline {
                eprintln!(
                    "state oracle: the restored tree of {} never ran whole (restore ended or timed out); not compared",
                    image.display()
                );
                return;
            }
            thread::sleep(POLL);
        }
        let printed = |p: &Option<&mut Proc>| p.as_ref().map_or(0, |p| p.stdout.bytes().len());
        let out_before = printed(&restore);
        let after = oracle::Snapshot::take(before.root);
        // a restored program that printed meanwhile went on from the dump point
        let after = after.moved(out_before > 0 || printed(&restore) > 0);
        if !after.all_alive() || after.pids != before.pids {
            eprintln!(
                "state oracle: the restored tree of {} changed shape or ended while read ({:?} -> {:?}); not compared",
                image.display(),
                before.pids,
                after.pids
            );
            return;
        }
        oracle::assert_same_kernel_state(
            &self.name,
            &format!("restore of {}", image.display()),
            oracle::Cmp::Restored,
            &before,
            &after,
            &[],
        );
    }

    /// Start `ckpt restore IMAGE EXTRA...` attached: it waits for the restored process.
    /// Its stdin is a pipe when `stdin` is [`In::Pipe`]; stdout and stderr are pipes
    /// (captured), which the restored process inherits for its inherited fds 0-2.
    pub fn restore(&self, image: &Path, extra: &[&str], stdin: In) -> Proc {
        self.restore_keeping(image, extra, stdin, &[])
    }

    /// [`Ctx::restore`], with the test's descriptors `keep` inherited by `ckpt restore`
    /// (for `--inherit-fd`).
    pub fn restore_keeping(&self, image: &Path, extra: &[&str], stdin: In, keep: &[i32]) -> Proc {
        let mut spec = Spec::new(ckpt_bin())
            .arg("restore")
            .arg(image)
            .stdin(stdin)
            .env("RUST_BACKTRACE", "1")
            .cwd(&self.dir);
        for e in extra {
            spec = spec.arg(e);
        }
        for &fd in keep {
            spec = spec.keep_fd(fd);
        }
        let mut p = self.spawn(&spec);
        self.oracle_after_restore(image, extra, Some(&mut p));
        p
    }

    /// `ckpt restore IMAGE --detach --pid-file F`: asserts it succeeds, prints the PID and
    /// writes it to F, and returns the restored process (a child of ours once `ckpt
    /// restore` has exited, thanks to the subreaper setting). Its stdin/stdout/stderr are
    /// the pipes `ckpt restore` had.
    pub fn restore_detached(&self, image: &Path) -> Proc {
        let pid_file = self.log_path("pidfile");
        let spec = Spec::new(ckpt_bin())
            .arg("restore")
            .arg(image)
            .arg("--detach")
            .arg("--pid-file")
            .arg(&pid_file)
            .stdin(In::Pipe)
            .env("RUST_BACKTRACE", "1")
            .cwd(&self.dir);
        let mut ck = self.spawn(&spec);
        let st = ck.wait();
        let diag = ck.diag();
        assert_eq!(st.code(), Some(0), "ckpt restore --detach failed:\n{diag}");
        let pid_text = fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("no pid file after restore --detach ({e}):\n{diag}"));
        let pid: i32 = pid_text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pid file holds {pid_text:?}, not a pid"));
        self.track(pid);
        // The PID is printed on stdout too (the restored process may print there as well).
        let deadline = Instant::now() + timeout();
        while !ck
            .stdout
            .text()
            .lines()
            .any(|l| l.trim() == pid.to_string())
        {
            assert!(
                Instant::now() < deadline,
                "restore --detach did not print the pid {pid} on a line of its own:\n{}",
                ck.diag()
            );
            thread::sleep(POLL);
        }
        let (stdout, stderr, stdin) = ck.take_io();
        let mut p = Proc {
            pid,
            label: format!("restored pid {pid} (detached)"),
            child: None,
            stdout,
            stderr,
            stdin,
            status: None,
        };
        // (its stdout holds the PID line: its progress entries are never compared)
        self.oracle_after_restore(image, &[], Some(&mut p));
        p
    }

    pub fn check(&self, image: &Path) -> Run {
        self.ckpt(&[OsStr::new("check"), image.as_os_str()])
    }

    /// `ckpt inspect --json IMAGE`, parsed.
    pub fn inspect_json(&self, image: &Path) -> Value {
        let r = self.ckpt(&[
            OsStr::new("inspect"),
            image.as_os_str(),
            OsStr::new("--json"),
        ]);
        r.assert_ok();
        serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
            panic!(
                "inspect --json printed invalid JSON ({e}):\n{}",
                r.describe()
            )
        })
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for &pid in self.tracked.borrow().iter() {
            kill_if_ours(pid);
        }
        reap_all();
        if !thread::panicking() {
            oracle::assert_known_losses_still_there(&self.name);
        }
        if thread::panicking() {
            eprintln!("test failed; its files are kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Mark every fd above 2 close-on-exec in the child, so that fds leaked into the test
/// process (by a CI runner, a shell) never reach a target and its image.
/// Descriptors in `keep` stay open across exec.
fn no_inherited_fds(cmd: &mut Command, keep: Vec<i32>) {
    // SAFETY: the closure only makes async-signal-safe system calls (and allocates
    // nothing: `keep` was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            for &fd in &keep {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------------------
// Comparing outputs

/// Assert two outputs are byte for byte equal; on failure show where they part.
/// What a process restored with `--detach` printed on `ckpt restore`'s stdout (which it
/// shares): that output without the line with its PID, which ckpt printed there.
pub fn without_pid_line(out: &[u8], pid: i32) -> Vec<u8> {
    let pid = pid.to_string();
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.trim() != pid)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

pub fn assert_same_output(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    panic!("{what}: output differs\n{}", diff_report(expected, actual));
}

/// A readable account of where `a` (expected) and `b` (actual) differ.
pub fn diff_report(a: &[u8], b: &[u8]) -> String {
    let al: Vec<&[u8]> = a.split_inclusive(|&c| c == b'\n').collect();
    let bl: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').collect();
    let first = al
        .iter()
        .zip(bl.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(al.len().min(bl.len()));
    let byte = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(3);
    let show = |lines: &[&[u8]]| -> String {
        let mut s = String::new();
        for (i, l) in lines.iter().enumerate().skip(from).take(8) {
            let mark = if i == first { ">>" } else { "  " };
            s.push_str(&format!(
                "{mark} {:4} | {}\n",
                i + 1,
                String::from_utf8_lossy(l).trim_end_matches('\n')
            ));
        }
        if lines.len() <= first {
            s.push_str(&format!(">> {:4} | <end of output>\n", lines.len() + 1));
        }
        s
    };
    format!(
        "expected {} bytes / {} lines, got {} bytes / {} lines; first difference at byte {byte}, \
         line {}\n--- expected (uninterrupted run):\n{}--- actual:\n{}",
        a.len(),
        al.len(),
        b.len(),
        bl.len(),
        first + 1,
        show(&al),
        show(&bl)
    )
}

/// With `--leave-running`, the original goes on after the dump; the restored copy must
/// print exactly the rest of the reference output from the point of the dump. Check that
/// `restored` is a suffix of `reference` whose start is at a line boundary no earlier than
/// `min_prefix` bytes (what had been printed before the dump began) and no later than
/// what the original printed in all, and that the original printed a prefix of the
/// reference.
pub fn assert_continues_from_dump(
    what: &str,
    reference: &[u8],
    original: &[u8],
    restored: &[u8],
    min_prefix: usize,
) {
    assert!(
        reference.starts_with(original),
        "{what}: the original (dumped with --leave-running) strayed from the reference\n{}",
        diff_report(&reference[..original.len().min(reference.len())], original)
    );
    let ok = restored.len() <= reference.len() && reference.ends_with(restored);
    assert!(
        ok,
        "{what}: the restored output is not the tail of the reference output\n{}",
        diff_report(
            &reference[reference.len().saturating_sub(restored.len())..],
            restored
        )
    );
    let split = reference.len() - restored.len();
    assert!(
        original.len() >= split,
        "{what}: the restored process resumed at byte {split} of the reference output, \
         beyond the {} bytes the original had printed by the time it was killed",
        original.len()
    );
    assert!(
        split >= min_prefix && (split == 0 || reference[split - 1] == b'\n'),
        "{what}: the restored process resumed at byte {split} of the reference output, but \
         {min_prefix} bytes had been printed before the dump (it must resume at the dump \
         point, on a line boundary)"
    );
}

// ---------------------------------------------------------------------------------------
// Comparing images (`ckpt inspect --json`)

/// JSON paths (see [`json_diff`]) that legitimately differ between an image of a process
/// and an image of its restored copy. Everything else must be equal.
pub const LEGIT_IMAGE_DIFFS: &[&str] = &[
    // when the image was made
    "**.created_unix",
    "**.created",
    // the restored process is a child of ckpt restore (or of the subreaper after
    // --detach) and joins ckpt restore's session and process group
    "**.ppid",
    "**.pgid",
    "**.sid",
    // fds 0-2 leading outside: they are ckpt restore's pipes now, not the original's
    "**.Inherited.what",
];

/// Compare two JSON documents; returns one line per difference, naming its path
/// (`processes[0].threads[0].sigmask`), skipping paths matched by a pattern of `ignore`.
/// Patterns are dot-separated segments; `*` matches one key or index, `**` any number
/// of segments; an index segment is written `[3]` or `[*]`.
pub fn json_diff(a: &Value, b: &Value, ignore: &[&str]) -> Vec<String> {
    let pats: Vec<Vec<&str>> = ignore.iter().map(|p| split_pattern(p)).collect();
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk_json(&mut path, a, b, &pats, &mut out);
    out
}

fn split_pattern(p: &str) -> Vec<&str> {
    let mut v = Vec::new();
    for seg in p.split('.') {
        // "threads[*]" -> "threads", "[*]"
        match seg.find('[') {
            Some(i) if i > 0 => {
                v.push(&seg[..i]);
                v.push(&seg[i..]);
            }
            _ => v.push(seg),
        }
    }
    v
}

fn seg_matches(pat: &str, seg: &str) -> bool {
    pat == "*" || pat == seg || (pat == "[*]" && seg.starts_with('['))
}

fn glob_match(pat: &[&str], path: &[String]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| glob_match(rest, &path[i..])),
        Some((p, rest)) => {
            !path.is_empty() && seg_matches(p, &path[0]) && glob_match(rest, &path[1..])
        }
    }
}

pub fn json_path_string(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if !seg.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(seg);
    }
    if s.is_empty() { "(root)".into() } else { s }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        format!(
            "{}...({} chars)",
            &s[..s.char_indices().nth(150).map_or(s.len(), |c| c.0)],
            s.len()
        )
    } else {
        s
    }
}

fn walk_json(
    path: &mut Vec<String>,
    a: &Value,
    b: &Value,
    pats: &[Vec<&str>],
    out: &mut Vec<String>,
) {
    if pats.iter().any(|p| glob_match(p, path)) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(k.clone());
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk_json(path, va, vb, pats, out),
                    (va, vb) => {
                        if !pats.iter().any(|p| glob_match(p, path)) {
                            out.push(format!(
                                "{}: {} vs {}",
                                json_path_string(path),
                                va.map_or("(absent)".into(), short),
                                vb.map_or("(absent)".into(), short)
                            ));
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{}: {} elements vs {}",
                    json_path_string(path),
                    x.len(),
                    y.len()
                ));
            }
            for (i, (va, vb)) in x.iter().zip(y.iter()).enumerate() {
                path.push(format!("[{i}]"));
                walk_json(path, va, vb, pats, out);
                path.pop();
            }
        }
        _ => {
            if a != b {
                out.push(format!(
                    "{}: {} vs {}",
                    json_path_string(path),
                    short(a),
                    short(b)
                ));
            }
        }
    }
}

/// Assert two `inspect --json` documents agree except where `ignore` says.
pub fn assert_same_image_state(what: &str, a: &Value, b: &Value, ignore: &[&str]) {
    let d = json_diff(a, b, ignore);
    if d.is_empty() {
        return;
    }
    let n = d.len();
    let shown: Vec<&str> = d.iter().take(40).map(String::as_str).collect();
    panic!(
        "{what}: {n} difference(s) between the image of the original and the image of the \
         restored process (first / second), ignoring {ignore:?}:\n  {}{}",
        shown.join("\n  "),
        if n > 40 { "\n  ..." } else { "" }
    );
}

/// Does `v` contain, anywhere, the key `key` with the integer value `want`?
pub fn json_has_int(v: &Value, key: &str, want: i64) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| (k == key && x.as_i64() == Some(want)) || json_has_int(x, key, want)),
        Value::Array(a) => a.iter().any(|x| json_has_int(x, key, want)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Test data

/// Write a file of `len` deterministic bytes (for targets to map or read).
pub fn write_pattern_file(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| ((i as u64 * 31 + u64::from(seed)) % 251) as u8)
        .collect();
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A copy of `src` at `dst` with the byte at `offset` flipped.
pub fn flip_byte(src: &Path, dst: &Path, offset: usize) {
    let mut d = fs::read(src).expect("read image");
    assert!(
        offset < d.len(),
        "offset {offset} beyond image of {} bytes",
        d.len()
    );
    d[offset] ^= 0x10;
    fs::write(dst, d).expect("write corrupted image");
}

/// A copy of the first `len` bytes of `src` at `dst`.
pub fn truncated_copy(src: &Path, dst: &Path, len: usize) {
    let d = fs::read(src).expect("read image");
    fs::write(dst, &d[..len.min(d.len())]).expect("write truncated image");
}

/// A pid that no process has right now (a child of ours that has just been reaped).
pub fn free_pid() -> i32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id() as i32;
    c.wait().expect("wait true");
    assert!(!pid_exists(pid));
    pid
}

// ---------------------------------------------------------------------------------------
// The targets' set-ups, shared by the test crates

/// `counter STEPS MAPFILE OPTS...`, with its mapped file (`map.bin`, 3 pages and a bit)
/// created in the test directory if missing.
pub fn counter_spec(ctx: &Ctx, bin: &str, steps: u32, opts: &[&str]) -> Spec {
    let map = ctx.path("map.bin");
    if !map.exists() {
        write_pattern_file(&map, 3 * 4096 + 100, 7);
    }
    let mut s = Spec::new(target(bin)).arg(steps.to_string()).arg(&map);
    for o in opts {
        s = s.arg(o);
    }
    s
}

/// The directory `files` works in, with its input file; `log.txt` and `data.bin` removed
/// (so a second run starts like the first).
pub fn files_dir(ctx: &Ctx) -> PathBuf {
    let d = ctx.path("files");
    fs::create_dir_all(&d).expect("mkdir files dir");
    let input: String = (1..=400).map(|i| format!("line {i}\n")).collect();
    let p = d.join("input.txt");
    if !p.exists() {
        fs::write(&p, input).expect("write input.txt");
    }
    for f in ["log.txt", "data.bin"] {
        let _ = fs::remove_file(d.join(f));
    }
    d
}

/// `signals STEPS USR2_STEP USR1_STEP sleep=MS`.
pub fn signals_spec(steps: u32, usr2_step: u32, usr1_step: u32, sleep_ms: u32) -> Spec {
    Spec::new(target("signals"))
        .arg(steps.to_string())
        .arg(usr2_step.to_string())
        .arg(usr1_step.to_string())
        .arg(format!("sleep={sleep_ms}"))
}

/// Drive a `signals` run to its end: send SIGUSR2 and SIGUSR1 (to `pid`) when it asks,
/// unless it already asked and got them (`sent_usr2`, `sent_usr1`).
pub fn drive_signals(p: &mut Proc, pid: i32, sent_usr2: bool, sent_usr1: bool) -> Finished {
    if !sent_usr2 {
        p.wait_for("waiting for SIGUSR2");
        assert!(send_signal(pid, libc::SIGUSR2), "kill SIGUSR2 {pid}");
    }
    if !sent_usr1 {
        p.wait_for("waiting for SIGUSR1");
        assert!(send_signal(pid, libc::SIGUSR1), "kill SIGUSR1 {pid}");
    }
    p.finish()
}

/// `python3 tests/targets/loop.py STEPS SLEEP`.
pub fn python_spec(steps: u32, sleep_s: f64) -> Spec {
    Spec::new(python3())
        .arg(script("loop.py"))
        .arg(steps.to_string())
        .arg(sleep_s.to_string())
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

// ---------------------------------------------------------------------------------------
// Image descriptors and text

/// Bytes as text, for messages and substring checks.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kinds of the descriptors of every process of an image (`inspect --json`:
/// `processes[*].fds[*].kind`, whose single key names the kind: "Pipe", "UnixPair", "Memfd"...).
pub fn fd_kinds(ctx: &Ctx, img: &Path) -> BTreeSet<String> {
    let j = ctx.inspect_json(img);
    let mut kinds = BTreeSet::new();
    for p in j["processes"].as_array().expect("processes array") {
        for fd in p["fds"].as_array().expect("fds array") {
            if let Some(k) = fd["kind"].as_object().and_then(|o| o.keys().next()) {
                kinds.insert(k.clone());
            } else if let Some(k) = fd["kind"].as_str() {
                kinds.insert(k.to_string());
            }
        }
    }
    kinds
}

/// Fails unless the image holds a descriptor of each kind in `want`.
pub fn assert_has_kinds(ctx: &Ctx, img: &Path, want: &[&str], what: &str) {
    let kinds = fd_kinds(ctx, img);
    for w in want {
        assert!(
            kinds.contains(*w),
            "{what}: the image should hold a {w} descriptor; it has {kinds:?}"
        );
    }
}

/// A TCP connection to `127.0.0.1:port`, retried until the listener is up (within the
/// harness timeout), with the harness timeout on reads.
pub fn connect_loopback(port: u16, what: &str) -> std::net::TcpStream {
    let deadline = Instant::now() + timeout();
    let conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect to {what}: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    };
    conn.set_read_timeout(Some(timeout()))
        .expect("read timeout");
    conn
}

/// The end of a dumped-and-restored tree's run: the output before the dump and the
/// restored copy's output together are the reference run's, byte for byte; `ckpt
/// restore` exits 0 (the root's status); and none of the tree's processes is left.
pub fn assert_tree_finished_like_reference(
    what: &str,
    reference: &[u8],
    before: Vec<u8>,
    fin: &Finished,
    pids: &[i32],
) {
    assert_same_output(what, reference, &[before, fin.stdout.clone()].concat());
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{what}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    for &p in pids {
        assert_no_process(p, what);
    }
}

/// `ckpt restore IMG EXTRA...` made to fail (`CKPT_FAULT`) at the first step whose name
/// contains `fault`: it must exit 1 naming the injected fault, print nothing of the
/// program, and leave none of `pids` and no child of ours but `except`. Returns what it
/// wrote on stderr.
pub fn assert_restore_fault_leaves_nothing(
    ctx: &Ctx,
    img: &Path,
    extra: &[&str],
    fault: &str,
    pids: &[i32],
    except: &[i32],
) -> String {
    let what = format!("restore of {} failing at {fault:?}", img.display());
    let spec = extra.iter().fold(
        Spec::new(ckpt_bin())
            .arg("restore")
            .arg(img)
            .env("RUST_BACKTRACE", "1")
            .env("CKPT_FAULT", fault)
            // in the test directory, so that a file it leaves there shows in a listing
            .cwd(&ctx.dir),
        |s, a| s.arg(a),
    );
    let f = ctx.spawn(&spec).finish();
    let stderr = text(&f.stderr);
    assert_eq!(
        f.status.code(),
        Some(1),
        "{what}: exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("injected fault") && (fault.starts_with('#') || stderr.contains(fault)),
        "{what}: stderr does not name the injected fault:\n{stderr}"
    );
    assert!(
        f.stdout.is_empty(),
        "{what}: the tree ran:\n{}",
        text(&f.stdout)
    );
    for &p in pids {
        assert_no_process(p, &what);
    }
    let strays = stray_children(except);
    assert!(
        strays.is_empty(),
        "{what}: left processes behind: {strays:?}"
    );
    stderr
}
