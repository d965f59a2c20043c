//! What the tests that kill ckpt at random moments share (e2e_killsafe, e2e_killgo,
//! e2e_killrestore): a replayable random generator, the quick snapshot of a target's
//! threads and mappings, a dump stopped after a delay, and the checks that the target
//! was let go and makes progress.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A small deterministic generator (xorshift; the seed is printed, so a failure can be
/// replayed).
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the environment variable `var` if set, else from the clock; the seed
    /// is printed with how to replay it.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("seed {seed} ({var} to replay)");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What must not change in a target across a killed dump.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Snapshot {
    /// SigBlk of each thread, by TID.
    pub masks: BTreeMap<i32, String>,
    pub maps: String,
}

pub fn snapshot(pid: i32) -> Snapshot {
    let mut masks = BTreeMap::new();
    for tid in tasks(pid) {
        let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let blk = st
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        masks.insert(tid, blk);
    }
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    Snapshot { masks, maps }
}

/// How a dump is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    Signal(i32),
    /// The reader of `dump -o -` goes away.
    CloseStdout,
}

pub fn label(how: How, leave: bool) -> String {
    let h = match how {
        How::Signal(libc::SIGKILL) => "SIGKILL".to_string(),
        How::Signal(libc::SIGTERM) => "SIGTERM".to_string(),
        How::Signal(libc::SIGINT) => "SIGINT".to_string(),
        How::Signal(s) => format!("signal {s}"),
        How::CloseStdout => "stdout closed".to_string(),
    };
    format!("{h}{}", if leave { " (--leave-running)" } else { "" })
}

/// Start `ckpt dump` of `pid` into `img` (or standard output for
/// [`How::CloseStdout`]); `how` is done to it after `delay`; returns its status.
pub fn killed_dump(pid: i32, img: &Path, how: How, leave: bool, delay: Duration) -> ExitStatus {
    let mut cmd = Command::new(ckpt_bin());
    cmd.args(["dump", &pid.to_string(), "-o"]);
    match how {
        How::CloseStdout => cmd.arg("-").stdout(Stdio::piped()),
        How::Signal(_) => cmd.arg(img).stdout(Stdio::null()),
    };
    if leave {
        cmd.arg("--leave-running");
    }
    let mut c = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ckpt dump");
    std::thread::sleep(delay);
    match how {
        How::Signal(sig) => {
            send_signal(c.id() as i32, sig);
        }
        How::CloseStdout => drop(c.stdout.take()),
    }
    let deadline = Instant::now() + timeout();
    loop {
        if let Some(st) = c.try_wait().expect("wait ckpt") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("ckpt dump did not end after {}", label(how, leave));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether a dump that kills its target, itself killed late, had reached its end: the
/// image committed at its final path and then the target killed by it (SIGKILL), before
/// ckpt could exit. That is the dump's own outcome, not a loss: the image is whole (a
/// dump renames it into place only once it is synced) and `ckpt check` accepts it.
pub fn committed_then_killed(img: &Path, p: &mut Proc) -> bool {
    if !img.exists() {
        return false;
    }
    // The dump sent its SIGKILL before it was killed itself: the target ends at once.
    let deadline = Instant::now() + Duration::from_secs(1);
    let st = loop {
        if let Some(st) = p.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if std::os::unix::process::ExitStatusExt::signal(&st) != Some(libc::SIGKILL) {
        return false;
    }
    let check = Command::new(ckpt_bin())
        .arg("check")
        .arg(img)
        .stdin(Stdio::null())
        .output()
        .expect("run ckpt check");
    assert!(
        check.status.success(),
        "the image a killed dump committed before killing its target is refused: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    true
}

/// After a killed dump: waits (3 s at most) until the target is no longer traced; what
/// is wrong if it died or is still traced.
pub fn let_go(p: &mut Proc) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while tracer_pid(p.pid) != Some(0) {
        if p.try_wait().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(st) = p.try_wait() {
        return Some(format!(
            "target died: {st:?}; {}",
            p.stdout.text().lines().last().unwrap_or("")
        ));
    }
    if tracer_pid(p.pid) != Some(0) {
        return Some(format!("target still traced by {:?}", tracer_pid(p.pid)));
    }
    None
}

/// Waits (5 s at most) for the target to print two more progress lines; what is wrong
/// if it does not, or if its self-checks printed "CORRUPT".
pub fn makes_progress(p: &mut Proc) -> Option<String> {
    let n = p.stdout.lines();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stdout.lines() < n + 2 {
        if p.try_wait().is_some() || Instant::now() > deadline {
            let out = p.stdout.text();
            return Some(format!(
                "target stopped making progress ({:?}): {}",
                p.try_wait(),
                out.lines().last().unwrap_or("")
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if p.stdout.text().contains("CORRUPT") {
        return Some(p.stdout.text().lines().last().unwrap_or("").to_string());
    }
    None
}
