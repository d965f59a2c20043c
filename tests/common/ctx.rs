//! The per-test context [`Ctx`]: its directory, what it spawned, and its `ckpt`
//! invocations.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use serde_json::Value;

use super::*;

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
    /// Patterns of entries this test's restores may change ([`Ctx::oracle_allow`]).
    allowed: RefCell<Vec<&'static str>>,
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
            allowed: RefCell::new(Vec::new()),
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
        // The dump froze the program wherever it was (holding a file it opens and closes
        // at each step, say): a difference is looked at again for a moment, and only one
        // that stays fails.
        let what = format!("original after dump --leave-running to {}", image.display());
        for attempt in 0.. {
            let after = oracle::Snapshot::take_once(pid);
            if !(snap.all_alive() && after.all_alive() && after.pids.len() == snap.pids.len()) {
                eprintln!("state oracle: the tree changed shape around the dump; not compared");
                break;
            }
            match oracle::same_kernel_state(
                &self.name,
                &what,
                oracle::Cmp::LeftRunning,
                &snap,
                &after,
                &[],
            ) {
                Ok(()) => break,
                Err(e) if attempt < 10 => {
                    eprintln!("{e}\n(read again in 30 ms)");
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
                Err(e) => panic!("{e}"),
            }
        }
        self.snaps.borrow_mut().insert(image.to_path_buf(), snap);
        r
    }

    /// Let this test's restores differ from the original at entries matching `pattern`
    /// (`*` wildcards), for a reason the test states where it calls this: what the
    /// program itself changes between the oracle's reading and the freeze, which the
    /// oracle cannot see (a server's background processes waking on their own timers).
    pub fn oracle_allow(&self, pattern: &'static str) {
        self.allowed.borrow_mut().push(pattern);
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
        if before.one_pid_namespace_down() && !extra.contains(&"--new-pidns") {
            if let Some(p) = restore {
                self.oracle_after_restore_in_pidns(image, &before, p);
            }
            return;
        }
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
            &self.allowed.borrow(),
        );
    }

    /// [`Ctx::oracle_after_restore`] for a tree that ran one PID namespace below ours (its
    /// own, or one without its init), restored into a new one: both snapshots as the
    /// tree's own namespace sees them (its IDs there are the same).
    fn oracle_after_restore_in_pidns(
        &self,
        image: &Path,
        before: &oracle::Snapshot,
        restore: &mut Proc,
    ) {
        let deadline = Instant::now() + timeout();
        let root = loop {
            if let Some(r) = oracle::restored_tree_in_pid_namespace(before, restore.pid) {
                break r;
            }
            if restore.try_wait().is_some() || Instant::now() > deadline {
                eprintln!(
                    "state oracle: the restored tree of {} never ran whole in its PID namespace; not compared",
                    image.display()
                );
                return;
            }
            thread::sleep(POLL);
        };
        let out_before = restore.stdout.bytes().len();
        let after = oracle::Snapshot::take(root);
        let after = after.moved(out_before > 0 || !restore.stdout.bytes().is_empty());
        let (b, a) = (
            before.as_seen_in_its_pid_namespace(),
            after.as_seen_in_its_pid_namespace(),
        );
        if !after.all_alive() || a.pids != b.pids {
            eprintln!(
                "state oracle: the restored tree of {} changed shape or ended while read ({:?} -> {:?}); not compared",
                image.display(),
                b.pids,
                a.pids
            );
            return;
        }
        oracle::assert_same_kernel_state(
            &self.name,
            &format!(
                "restore of {} (IDs as its PID namespace sees them)",
                image.display()
            ),
            oracle::Cmp::Restored,
            &b,
            &a,
            &self.allowed.borrow(),
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
        self.restore_with(image, extra, stdin, keep, &[])
    }

    /// [`Ctx::restore_keeping`], with `env` added to the environment of `ckpt restore`
    /// (its fault-injection hooks, e.g. `CKPT_LINGER`).
    pub fn restore_with(
        &self,
        image: &Path,
        extra: &[&str],
        stdin: In,
        keep: &[i32],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut spec = Spec::new(ckpt_bin())
            .arg("restore")
            .arg(image)
            .stdin(stdin)
            .env("RUST_BACKTRACE", "1")
            .cwd(&self.dir);
        for (k, v) in env {
            spec = spec.env(k, v);
        }
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
pub fn no_inherited_fds(cmd: &mut Command, keep: Vec<i32>) {
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
