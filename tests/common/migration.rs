//! What the migration tests (e2e_migrate, e2e_migpost, e2e_migtcp) share: the target
//! that writes its memory, the receiver, `ckpt migrate`, and how they count copies of
//! a process and wait for things.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::arch::ckpt_spec;
use super::*;

/// The source: `migrate MIB RATE`, RATE pages written per second.
pub fn source(ctx: &Ctx, mib: u32, rate: u32) -> Proc {
    source_with(ctx, mib, rate, &[])
}

/// [`source`] with EXTRA arguments (`areas`: the side areas its `f` command changes).
pub fn source_with(ctx: &Ctx, mib: u32, rate: u32, extra: &[&str]) -> Proc {
    let mut spec = Spec::new(target("migrate"))
        .arg(mib.to_string())
        .arg(rate.to_string());
    for a in extra {
        spec = spec.arg(a);
    }
    let spec = spec.stdin(In::Pipe).cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    t
}

/// What differs by design between a source and its copy restored by `receive
/// --new-pidns` in another network namespace (oracle patterns): the receiver's own
/// network namespace, the new PID namespace, and the mount namespace its init made to
/// mount that namespace's /proc (the descriptors' mounts are then another namespace's).
pub const RECEIVER_NAMESPACES: &[&str] = &[
    "*.ns.net",
    "*.ns.pid",
    "*.ns.pid.parent",
    "*.ns.pid_for_children",
    "*.ns.mnt",
    "*.mountinfo",
    "*.fdinfo.mnt_id",
];

/// Processes (pid, state) running the target NAME with ARG at position IDX of its
/// command line, zombies left out: how the migration tests count the copies.
pub fn copies_of(name: &str, idx: usize, arg: &str) -> Vec<(i32, char)> {
    let want = target(name);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.len() > idx
            && args[0] == want.as_os_str().as_encoded_bytes()
            && args[idx] == arg.as_bytes()
        {
            if let Some((st, _)) = proc_stat(pid) {
                if st != 'Z' && st != 'X' {
                    out.push((pid, st));
                }
            }
        }
    }
    out
}

/// Copies of `tests/targets/migrate.c` writing RATE pages a second.
pub fn copies(rate: u32) -> Vec<(i32, char)> {
    copies_of("migrate", 2, &rate.to_string())
}

/// `ckpt receive --listen LISTEN --new-pidns --json`, its temporary files under `tmp`,
/// run in the network namespace `netns` (a path for `nsenter --net`) if given, and
/// waited for until it listens (or said it cannot).
pub fn receive(
    ctx: &Ctx,
    netns: Option<&str>,
    listen: &str,
    tmp: &Path,
    env: &[(&str, &str)],
) -> Proc {
    std::fs::create_dir_all(tmp).unwrap_or_default();
    let mut spec = match netns {
        Some(ns) => Spec::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg(ckpt_bin()),
        None => Spec::new(ckpt_bin()),
    };
    spec = spec
        .arg("receive")
        .arg("--listen")
        .arg(listen)
        .arg("--new-pidns")
        .arg("--json")
        .stdin(In::Pipe)
        .env("TMPDIR", tmp)
        .env("RUST_BACKTRACE", "1")
        .cwd(&ctx.dir);
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    let mut r = ctx.spawn(&spec);
    r.wait_until("listen", |p| {
        p.stderr.text().contains("listening") || p.stderr.text().contains("ckpt: cannot")
    });
    r
}

/// `ckpt migrate PID TO --rounds ROUNDS --json` with EXTRA arguments after them.
pub fn migrate_to(
    ctx: &Ctx,
    pid: i32,
    to: &str,
    rounds: u32,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Finished {
    migrate_start(ctx, pid, to, rounds, extra, env).finish()
}

/// [`migrate_to`], started and not waited for.
pub fn migrate_start(
    ctx: &Ctx,
    pid: i32,
    to: &str,
    rounds: u32,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let pid = pid.to_string();
    let rounds = rounds.to_string();
    let mut args: Vec<&OsStr> = ["migrate", &pid, to, "--rounds", &rounds, "--json"]
        .into_iter()
        .map(OsStr::new)
        .collect();
    args.extend(extra.iter().map(OsStr::new));
    ctx.spawn(&ckpt_spec(ctx, &args, env))
}

/// Send "c" to whoever relays the program's stdin and return its answer line.
pub fn ask(p: &mut Proc) -> String {
    let n = p.stdout.lines();
    p.write_stdin(b"c\n");
    p.wait_lines(n + 1);
    p.stdout
        .text()
        .lines()
        .nth(n)
        .unwrap_or_default()
        .to_string()
}

pub fn count_of(answer: &str) -> u64 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn tracked(pid: i32) -> bool {
    Path::new(&format!("/run/ckpt/track/{pid}.json")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
}

pub fn empty_dir(d: &Path) -> bool {
    std::fs::read_dir(d).map(|r| r.count() == 0).unwrap_or(true)
}

pub fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The source after a failed migration: running (not stopped), untracked, its
/// memory still right, the only copy.
pub fn assert_source_runs_alone(t: &mut Proc, rate: u32, what: &str) {
    let pid = t.pid;
    wait_for(
        &format!("{what}: the tracking of {pid} ends"),
        Duration::from_secs(10),
        || !tracked(pid),
    );
    assert_running_untraced(pid, what);
    let a = ask(t);
    assert!(a.ends_with(" ok"), "{what}: the source answers {a:?}");
    let c = copies(rate);
    assert_eq!(c.len(), 1, "{what}: copies running: {c:?}");
    assert_eq!(c[0].0, pid, "{what}: copies running: {c:?}");
}

/// The files under `dir` that processes hold open, as (PID, inode), each file once per
/// process: `ckpt receive`'s unnamed files (O_TMPFILE, which /proc shows as
/// `DIR/#INODE (deleted)`) are found this way, since the directory never lists them.
pub fn files_held_in(dir: &Path) -> Vec<(i32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let fds = e.path().join("fd");
        for fd in std::fs::read_dir(&fds).into_iter().flatten().flatten() {
            let held = std::fs::read_link(fd.path()).unwrap_or_default();
            if !held.starts_with(dir) {
                continue;
            }
            if let Ok(m) = std::fs::metadata(fd.path()) {
                if !out.contains(&(pid, m.ino())) {
                    out.push((pid, m.ino()));
                }
            }
        }
    }
    out
}
