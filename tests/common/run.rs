//! Running processes: output capture, [`Spec`] (what to run), [`Proc`] (a running
//! process) and [`Run`] (a finished `ckpt` run).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;

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
    pub(super) fn file(path: PathBuf) -> Capture {
        Capture {
            path,
            thread: None,
            done: Arc::new(Mutex::new(true)),
        }
    }

    pub(super) fn pipe<R: Read + Send + 'static>(mut r: R, path: PathBuf) -> Capture {
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
    pub(super) fn label(&self) -> String {
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
    pub(super) child: Option<Child>,
    pub stdout: Capture,
    pub stderr: Capture,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) status: Option<ExitStatus>,
}

impl Proc {
    pub(super) fn diag(&self) -> String {
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
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
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
    pub(super) fn take_io(&mut self) -> (Capture, Capture, Option<ChildStdin>) {
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

    pub(super) fn describe(&self) -> String {
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
