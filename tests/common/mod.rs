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

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub mod arch;
mod container;
pub mod hostile;
pub mod ipcview;
pub mod killwalk;
pub mod migration;
pub mod mntprop;
pub mod more;
pub mod oracle;
pub mod twohosts;

mod ctx;
mod image;
mod proc;
mod run;
mod specs;

// Each test crate uses a different part of the harness: a re-export it does not use is fine.
#[allow(unused_imports)]
pub use container::*;
pub use ctx::*;
#[allow(unused_imports)]
pub use image::*;
#[allow(unused_imports)]
pub use proc::*;
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use specs::*;

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
    // private memory a fork tree shares copy-on-write (tests/e2e_cow.rs)
    ("cow", "cow.c", &[]),
    // adjacent anonymous areas the kernel keeps apart (tests/e2e_cow.rs)
    ("apart", "apart.c", &[]),
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
    ("pidnest", "pidnest.c", &[]),
    ("pidnested", "pidnested.c", &["-pthread"]),
    // tests/e2e_nestids.rs: IDs held by a process of a nested PID namespace
    ("nestids", "nestids.c", &["-pthread"]),
    // tests/e2e_extpidns.rs: a tree in a PID namespace made outside it, restored there
    ("extpidns", "extpidns.c", &["-pthread"]),
    ("nsown", "nsown.c", &[]),
    ("mntns", "mntns.c", &[]),
    ("mntpid", "mntpid.c", &[]),
    ("netns", "netns.c", &[]),
    ("nsmixed", "nsmixed.c", &[]),
    // tests/e2e_belowns.rs: network, IPC, time and cgroup namespaces made below the root
    ("belowns", "belowns.c", &[]),
    // tests/e2e_belowmnt.rs: a mount namespace made below the root
    ("belowmnt", "belowmnt.c", &[]),
    // tests/e2e_userns.rs: a user namespace of the tree's own
    ("userns", "userns.c", &["-pthread"]),
    // tests/e2e_userns_more.rs: with cgroup and time namespaces, threads
    ("usernstc", "usernstc.c", &["-pthread"]),
    // tests/e2e_nestuserns.rs: user namespaces made below the root, nested ones
    ("nestuserns", "nestuserns.c", &["-pthread"]),
    // tests/e2e_rootless.rs: a rootless container's init, its runtime gone
    ("orphan", "orphan.c", &[]),
    ("sysv", "sysv.c", &[]),
    // tests/e2e_sysv.rs: System V segments, semaphores and queues; a POSIX queue
    ("sysvall", "sysvall.c", &[]),
    // tests/e2e_ipcns.rs: the objects and limits of an IPC namespace of the tree's own
    ("ipcns", "ipcns.c", &[]),
    ("ipcns-static", "ipcns.c", &["-static"]),
    // tests/e2e_semundo.rs: semaphore undo lists empty, shared between processes, absent
    ("semundo", "semundo.c", &["-pthread"]),
    // tests/e2e_clonefiles.rs: descriptor tables and cwd/root/umask shared by processes
    ("clonefiles", "clonefiles.c", &[]),
    // tests/e2e_gate.rs: a program under seccomp filters watching its /proc
    ("gatesec", "gatesec.c", &["-pthread"]),
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
    // tests/e2e_unix.rs: unix sockets shut down, named, accepted, autobound; refusals
    ("ushut", "ushut.c", &[]),
    ("urefuse", "urefuse.c", &[]),
    ("ubacklog", "ubacklog.c", &[]),
    ("urel", "urel.c", &[]),
    ("ucreds", "ucreds.c", &[]),
    ("urights", "urights.c", &[]),
    ("uflight", "uflight.c", &[]),
    // tests/e2e_inflight.rs: descriptors only a queued unix message holds
    ("uinflight", "uinflight.c", &[]),
    ("relinked", "relinked.c", &[]),
    // tests/e2e_net.rs: TCP sockets in every state restore brings back
    ("tcpstates", "tcpstates.c", &[]),
    ("nlsock", "nlsock.c", &[]),
    ("pingraw", "pingraw.c", &[]),
    ("packetsock", "packetsock.c", &[]),
    // tests/e2e_tcphalf.rs: TCP connections closed on one side or both, with a peer
    ("tcphalf", "tcphalf.c", &[]),
    // tests/e2e_tcpaccept.rs: a TCP listener with connections from its own children
    // waiting to be accepted
    ("tcpaccept", "tcpaccept.c", &[]),
    // tests/e2e_tcpended.rs: TCP sockets whose connection ended (reset, error read)
    ("tcpended", "tcpended.c", &[]),
    // tests/e2e_peerstream.rs: a TCP stream from a peer outside the tree that never
    // pauses, read directly or after taking the connection out of a queued message
    ("peerstream", "peerstream.c", &[]),
    // tests/e2e_mapfile.rs: mapped memfds and mapped deleted files
    ("memmap", "memmap.c", &[]),
    // tests/e2e_lazy.rs: a large area with a known pattern, restored lazily
    ("lazy", "lazy.c", &["-pthread"]),
    // tests/e2e_many.rs: a warmed-up process restored many times, each copy lazily
    ("many", "many.c", &[]),
    // tests/e2e_filerace.rs: files swapped between plan and stage, recreated setuid files
    ("filerace", "filerace.c", &[]),
    // tests/e2e_tty.rs: a program on a terminal restored onto a new pty
    ("ttyjob", "ttyjob.c", &[]),
    ("ptypair", "ptypair.c", &[]),
    // tests/e2e_privs.rs: credentials, securebits and limits, per thread
    ("privs", "privs.c", &["-pthread"]),
    // tests/e2e_taskstate.rs: threads with credentials and names of their own, processes
    // stopped by job control
    ("threadcreds", "threadcreds.c", &["-pthread"]),
    // tests/e2e_seccomp.rs: threads under seccomp filters (shared by TSYNC, their own), strict mode
    ("seccomp", "seccomp.c", &["-pthread"]),
    // tests/e2e_seccap.rs: seccomp filters installed before dropping CAP_SYS_ADMIN
    ("seccap", "seccap.c", &["-pthread"]),
    ("jobstop", "jobstop.c", &["-pthread"]),
    ("zombieuser", "zombieuser.c", &[]),
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
    ("killsafe32", "killsafe.c", &["-pthread", "-mavx2", "-m32"]),
    (
        "killroom",
        "killsafe.c",
        &["-pthread", "-mavx2", "-DNO_ROOM"],
    ),
    (
        "killroom32",
        "killsafe.c",
        &["-pthread", "-mavx2", "-m32", "-DNO_ROOM"],
    ),
    // tests/e2e_killgo.rs: a static program without libc (no rt_sigreturn nor
    // `syscall; ret` of its own)
    (
        "bare",
        "bare.c",
        &[
            "-ffreestanding",
            "-nostdlib",
            "-static",
            "-fno-stack-protector",
        ],
    ),
    // its ia32 build, which unmaps its vDSO (the ia32 vDSO has both)
    (
        "bare32",
        "bare.c",
        &[
            "-m32",
            "-ffreestanding",
            "-nostdlib",
            "-static",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
        ],
    ),
    // tests/e2e_pipes.rs: pipes whose other end everybody closed, second descriptions
    ("halfpipe", "halfpipe.c", &[]),
    // tests/e2e_killrestore.rs: a tree with a TCP connection and a deleted file, whose
    // restore is killed at any moment
    ("killrestore", "killrestore.c", &[]),
    // tests/e2e_descs.rs: pidfds of the tree's processes, of itself, of a zombie;
    // io_uring and fanotify permission marks refused; epoll items whose descriptors moved or closed;
    // file-system objects changed under a descriptor refused
    ("pidfds", "pidfds.c", &["-pthread"]),
    ("ioctx", "ioctx.c", &[]),
    ("epollmoved", "epollmoved.c", &[]),
    ("fsgone", "fsgone.c", &[]),
    // two fanotify groups with inode, mount and filesystem marks (tests/e2e_fanotify.rs)
    ("fanotify", "fanotify.c", &[]),
    // an AIO context with completed events not reaped (tests/e2e_aio.rs)
    ("aioring", "aioring.c", &[]),
    // an io_uring instance with queued submissions, completions and registrations
    ("uring", "uring.c", &[]),
    // tests/e2e_runc.rs: the program of a runc container (static: its rootfs is busybox)
    ("runcsrv-static", "runcsrv.c", &["-static"]),
    // tests/e2e_runc.rs: a pod's "pause" container, reaping the pod's orphans
    ("extpidns-static", "extpidns.c", &["-pthread", "-static"]),
    // tests/e2e_podman_net.rs: a TCP server in a container on Podman's bridge network
    ("podnet-static", "podnet.c", &["-static"]),
    // tests/e2e_incr.rs: memory written a little at a time, for incremental dumps
    ("incr", "incr.c", &[]),
    // tests/e2e_freezer.rs: a tree in a cgroup of its own, quiet or forking constantly
    ("freezer", "freezer.c", &[]),
    // tests/e2e_tty.rs: a program as PID 1 of a PID namespace, on a terminal from outside
    ("nsinit", "nsinit.c", &[]),
    // tests/e2e_migrate.rs: memory written all the time, a function of a step count
    ("migrate", "migrate.c", &[]),
    // tests/e2e_migtcp.rs: TCP connections to the test and a listener, moved by migrate
    ("migtcp", "migtcp.c", &["-pthread"]),
    // tests/e2e_rmdirs.rs: working and root directories removed under a process
    ("rmdirs", "rmdirs.c", &[]),
    // tests/e2e_pidgone.rs: pidfds of one thread, of processes reaped
    ("pidgone", "pidgone.c", &["-pthread"]),
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
        // One gcc per CPU at a time: the first test process builds them all while the
        // others wait on the lock, and that build counts against its time limit.
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..cpus.min(C_TARGETS.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(name, srcfile, flags)) = C_TARGETS.get(i) else {
                            break;
                        };
                        build_target(&cc, &src, &dir, name, srcfile, flags);
                    }
                });
            }
        });
        File::create(dir.join(".done")).expect("create .done");
    }
    drop(lock);
    dir
}

/// Builds one C target of `src` into `dir` (through a temporary name, so a half-written
/// binary is never taken for a built one).
fn build_target(cc: &str, src: &Path, dir: &Path, name: &str, srcfile: &str, flags: &[&str]) {
    let tmp = dir.join(format!("{name}.tmp"));
    let out = Command::new(cc)
        .args(CFLAGS)
        .args(flags)
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
