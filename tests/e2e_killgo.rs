//! Kill-safe dumps where the injected calls cannot put their signal frame below the
//! stack pointer: a Go program (goroutines on small stacks in Go's heap: the frames go on
//! each thread's alternate signal stack, which Go's runtime says where it is) and a C
//! program whose threads run on coroutine stacks with data right below them (their
//! frames go at the bottom of another thread's stack), and a static program without
//! libc that has no `rt_sigreturn` nor `syscall; ret` of its own (ckpt writes them into
//! the padding after its code, and takes them out again; also its ia32 build, without
//! a vDSO, which gets ia32 ones). `ckpt dump` killed at random
//! moments and at each of its die points leaves the program running exactly as before:
//! its behaviour (it checks its own memory and registers and goes on printing) and what
//! the kernel shows (the state oracle). And a whole dump and restore of the Go program,
//! compared through the oracle.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::killwalk::*;
use common::oracle::{self, Cmp};
use common::*;

/// The `go` command: on PATH, or where Debian's golang-go puts it. A missing Go fails
/// the test (it is in .ci/run's packages).
fn go_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("go"))
        .find(|p| p.is_file());
    let debian = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("go-"))
        })
        .map(|p| p.join("bin/go"))
        .find(|p| p.is_file());
    on_path.or(debian).unwrap_or_else(|| {
        panic!("no `go` command (install golang-go): the Go target cannot be built")
    })
}

/// Build `tests/targets/gobusy` into the test's directory (no network: its module has
/// no dependencies; the build cache in the test's directory); with cgo (`cgo`: its C
/// thread, tests/targets/gobusy/cthread.go) as `gobusy-cgo`.
fn gobusy_build(ctx: &Ctx, cgo: bool) -> PathBuf {
    let out = ctx.path(if cgo { "gobusy-cgo" } else { "gobusy" });
    let src = targets_src().join("gobusy");
    let st = Command::new(go_bin())
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", ctx.path("gocache"))
        .env("GOPATH", ctx.path("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .stdin(Stdio::null())
        .output()
        .expect("run go build");
    assert!(
        st.status.success(),
        "go build of {}: {}",
        src.display(),
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// `gobusy` without cgo (a static Go program).
fn gobusy(ctx: &Ctx) -> PathBuf {
    gobusy_build(ctx, false)
}

/// The program under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `gobusy 16 6`.
    Go,
    /// Its cgo build: also a thread of its C code that never runs Go.
    Cgo,
    /// `killroom 16` (C, threads on coroutine stacks).
    Room,
    /// Its ia32 build (ia32 frames in the slots).
    Room32,
    /// `bare` (static, no libc: no instructions of its own for the frames).
    Bare,
    /// `bare32`: its ia32 build, without a vDSO.
    Bare32,
}

impl Target {
    fn go(self) -> bool {
        matches!(self, Target::Go | Target::Cgo)
    }

    /// A `bare` build: its name and the gadgets ckpt writes into its padding.
    fn bare(self) -> Option<(&'static str, [u8; 10])> {
        match self {
            Target::Bare => Some(("bare", [0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05, 0x0f, 0x05, 0xc3])),
            Target::Bare32 => Some((
                "bare32",
                [0xb8, 0xad, 0, 0, 0, 0xcd, 0x80, 0xcd, 0x80, 0xc3],
            )),
            _ => None,
        }
    }

    /// The program, built if it is Go.
    fn build(self, ctx: &Ctx) -> PathBuf {
        match self {
            Target::Go => gobusy(ctx),
            Target::Cgo => gobusy_build(ctx, true),
            _ => PathBuf::new(),
        }
    }
}

struct Running {
    p: Proc,
    quick: Snapshot,
    oracle: oracle::Snapshot,
}

fn spawn(ctx: &Ctx, t: Target, go: &Path) -> Running {
    let spec = match t {
        Target::Go | Target::Cgo => Spec::new(go).arg("16").arg("6"),
        Target::Room => Spec::new(target("killroom")).arg("16"),
        Target::Room32 => Spec::new(target("killroom32")).arg("16"),
        Target::Bare => Spec::new(target("bare")),
        Target::Bare32 => Spec::new(target("bare32")),
    };
    let mut p = ctx.spawn(&spec);
    // Past its start (Go starts its threads as it needs them: let it settle).
    p.wait_lines(if t.go() { 40 } else { 3 });
    let quick = snapshot(p.pid);
    let threads = match t {
        Target::Go | Target::Cgo => quick.masks.len(),
        Target::Bare | Target::Bare32 => 1,
        Target::Room | Target::Room32 => 5,
    };
    assert_eq!(quick.masks.len(), threads, "target threads: {quick:?}");
    let oracle = oracle::Snapshot::take(p.pid);
    Running { p, quick, oracle }
}

/// What is wrong with the target after a killed dump, if anything: dead, traced,
/// threads lost, masks or mappings changed, no more progress, a self-check failed, or a
/// difference the state oracle sees.
fn check_target(test: &str, t: Target, r: &mut Running) -> Option<String> {
    let p = &mut r.p;
    if let Some(w) = let_go(p) {
        return Some(w);
    }
    // A thread the kernel let go may not have run yet (its return through its signal
    // frame puts its mask back): give the threads a moment. Go may start a thread of
    // its own meanwhile: only the threads there before are compared.
    let same = |now: &Snapshot| {
        let lost = r.quick.masks.keys().any(|k| !now.masks.contains_key(k));
        let masks = r
            .quick
            .masks
            .iter()
            .all(|(k, v)| now.masks.get(k).is_none_or(|m| m == v));
        let grew = !t.go() && now.masks.len() != r.quick.masks.len();
        let maps = if t.go() {
            go_maps_same(
                &r.quick.maps,
                &without_new_c_threads(&r.quick.maps, &now.maps),
            )
        } else {
            now.maps == r.quick.maps
        };
        !lost && masks && !grew && maps
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut now = snapshot(p.pid);
    while !same(&now) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        now = snapshot(p.pid);
    }
    if !same(&now) {
        if now.maps != r.quick.maps {
            return Some(format!(
                "mappings changed:\n{}\nwere:\n{}",
                now.maps, r.quick.maps
            ));
        }
        return Some(format!(
            "threads and signal masks {:?}, were {:?}",
            now.masks, r.quick.masks
        ));
    }
    if let Some(w) = makes_progress(p) {
        return Some(w);
    }
    if let Some(bare) = t.bare() {
        if let Some(w) = bare_code(p.pid, bare).1 {
            return Some(w);
        }
    }
    let mut after = oracle::Snapshot::take(p.pid);
    // The memory map was checked above right after the kill (what a killed ckpt could
    // leave is there by then); Go maps and unmaps memory of its own as it runs on (its
    // allocators' chunks, a thread it starts: seen at 1 in 379 die points at load 19,
    // a new 256 KiB area and one grown by 64 KiB, when the oracle found the program at
    // rest both times and so compared areas found on one side only): its private
    // anonymous areas on one side only are Go's.
    let go_areas: Vec<String> = if t.go() {
        let anon = |s: &oracle::Snapshot| -> BTreeSet<String> {
            s.entries
                .iter()
                .filter(|(k, v)| k.contains(".smaps.") && ["rw-p", "---p"].contains(&v.1.as_str()))
                .filter_map(|(k, _)| k.strip_suffix(".perms"))
                .filter(|a| {
                    s.entries
                        .get(&format!("{a}.path"))
                        .is_some_and(|p| p.1.is_empty())
                })
                .map(str::to_string)
                .collect()
        };
        let (was, is) = (anon(&r.oracle), anon(&after));
        was.symmetric_difference(&is)
            .map(|a| format!("{a}.*"))
            .collect()
    } else {
        Vec::new()
    };
    // Go starts a thread of its own when one of its threads has held its processor
    // in a system call for a while, as the freeze makes it look (a SIGSTOP does the
    // same): a new thread and the thread count are Go's, not the dump's.
    let mut allowed: Vec<&str> = go_areas.iter().map(String::as_str).collect();
    if t.go() {
        let pid = p.pid;
        let old: BTreeSet<i32> = r.quick.masks.keys().copied().collect();
        after.entries.retain(|k, _| {
            let tid = k
                .strip_prefix(&format!("p{pid}.t"))
                .and_then(|rest| rest.split('.').next())
                .and_then(|t| t.parse::<i32>().ok());
            tid.is_none_or(|t| old.contains(&t))
        });
        allowed.extend(["*.stat.num_threads", "*.status.Threads"]);
        // The memory map was compared exactly above, right after the kill; Go maps
        // memory of its own later (its heap, a thread it starts), which moves the
        // address space's size (seen once in 366 die points at load 20: +320 KiB).
        allowed.push("*.stat.vsize");
    }
    oracle::same_kernel_state(
        test,
        "after a killed dump",
        Cmp::LeftRunning,
        &r.oracle,
        &after,
        &allowed,
    )
    .err()
}

/// What Go's runtime maps of its own comes in multiples of this (seen after kills: its
/// persistent allocator's 256 KiB chunks, `persistentChunkSize` in runtime/malloc.go,
/// and 64 KiB areas); the dump's scratch area (32 KiB) is not one.
const GO_CHUNK: u64 = 64 << 10;

/// Whether the memory map of a Go program is `before`'s but for what Go maps on its
/// own (as it starts a thread of its own, which a freeze can make it do: see the thread
/// count in [`check_target`]), seen once or twice in 170 die points on a loaded
/// machine, as a new 256 KiB area or one grown by 64 or 256 KiB: whole
/// [`GO_CHUNK`]s. Every area that is not private anonymous read-write is compared
/// exactly, and those are compared as the addresses they cover: nothing gone, and
/// only whole chunks added (the dump's scratch area, 32 KiB, is none).
fn go_maps_same(before: &str, now: &str) -> bool {
    let anon = |l: &&str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 5 && f[1] == "rw-p"
    };
    let others =
        |m: &str| -> Vec<String> { m.lines().filter(|l| !anon(l)).map(str::to_string).collect() };
    if others(before) != others(now) {
        return false;
    }
    let ranges = |m: &str| -> Vec<(u64, u64)> {
        let hex = |x: &str| u64::from_str_radix(x, 16).unwrap_or(0);
        let mut v: Vec<(u64, u64)> = m
            .lines()
            .filter(anon)
            .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| (hex(a), hex(b)))
            .collect();
        v.sort();
        // Adjacent areas as one.
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
        }
        out
    };
    let (was, is) = (ranges(before), ranges(now));
    // Every old range inside a new one; what each new range adds, whole chunks.
    let kept = was
        .iter()
        .all(|&(a, b)| is.iter().any(|&(c, d)| c <= a && b <= d));
    let added_whole = is.iter().all(|&(c, d)| {
        let inside: u64 = was
            .iter()
            .filter(|&&(a, b)| c <= a && b <= d)
            .map(|&(a, b)| b - a)
            .sum();
        (d - c - inside) % GO_CHUNK == 0
    });
    kept && added_whole
}

/// `now`'s memory map without what the C library maps for a thread that Go starts in a
/// cgo program (through pthread_create, as it does when a freeze made one of its threads
/// look stuck in a system call: see [`check_target`]; seen at 1 in 379 die points at
/// load 19): a thread stack (a PROT_NONE guard page right below a read-write area) and
/// that thread's malloc arena (a read-write area right below a PROT_NONE one, together
/// 64 MiB from a 64 MiB boundary: glibc's `HEAP_MAX_SIZE`), each one new (not in
/// `before`). Nothing a killed ckpt could leave looks like either (its scratch area is
/// 32 KiB, alone).
fn without_new_c_threads(before: &str, now: &str) -> String {
    const ARENA: u64 = 64 << 20;
    let old: BTreeSet<&str> = before.lines().collect();
    let area = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (a, b) = f.first()?.split_once('-')?;
        let hex = |x: &str| u64::from_str_radix(x, 16).ok();
        // Anonymous (no path), new.
        (f.len() == 5 && !old.contains(l)).then_some((
            hex(a)?,
            hex(b)?,
            f[1] == "rw-p",
            f[1] == "---p",
        ))
    };
    let lines: Vec<&str> = now.lines().collect();
    let mut drop = vec![false; lines.len()];
    for i in 1..lines.len() {
        let (Some(lo), Some(hi)) = (area(lines[i - 1]), area(lines[i])) else {
            continue;
        };
        let adjacent = lo.1 == hi.0;
        let stack = lo.3 && lo.1 - lo.0 == 4096 && hi.2;
        let arena = lo.2 && hi.3 && lo.0 % ARENA == 0 && hi.1 - lo.0 == ARENA;
        if adjacent && (stack || arena) && !drop[i - 1] {
            drop[i - 1] = true;
            drop[i] = true;
        }
    }
    lines
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(l, _)| format!("{l}\n"))
        .collect()
}

/// The executable mapping of a `bare` build (`name`, its code with the padding after it
/// in its last page) against the file: whether its last 16 bytes (where ckpt writes the
/// gadgets) differ, and what is wrong if anything else differs, or they differ otherwise
/// than by holding the gadgets `gadgets` (a ckpt killed while a thread may still run
/// them leaves them).
fn bare_code(pid: i32, (name, gadgets): (&str, [u8; 10])) -> (bool, Option<String>) {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let Some(line) = maps
        .lines()
        .find(|l| l.contains(" r-xp ") && l.ends_with(&format!("/{name}")))
    else {
        return (false, Some(format!("no code mapping of {name}:\n{maps}")));
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    let (a, b) = f[0].split_once('-').expect("range");
    let hex = |x: &str| u64::from_str_radix(x, 16).expect("hex");
    let (start, end, off) = (hex(a), hex(b), hex(f[2]));
    let mut now = vec![0u8; (end - start) as usize];
    let mem = fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    use std::os::unix::fs::FileExt;
    mem.read_exact_at(&mut now, start).expect("read code");
    let file = fs::read(target(name)).expect("read bare");
    let mut want = file[off as usize..].to_vec();
    want.resize(now.len(), 0);
    let n = now.len();
    if now[..n - 16] != want[..n - 16] {
        return (true, Some(format!("{name}'s code changed")));
    }
    let tail = &now[n - 16..];
    let patched = tail != &want[n - 16..];
    if patched && (tail[..10] != gadgets || tail[10..] != want[n - 6..]) {
        return (
            true,
            Some(format!(
                "{name}'s padding is {tail:02x?}, not its own nor the gadgets"
            )),
        );
    }
    (patched, None)
}

/// `tries` dumps of `t`, each stopped at a random moment: SIGKILL mostly (with and
/// without --leave-running), some SIGTERM.
fn random_kills(test: &str, t: Target, tries: u32) {
    let ctx = Ctx::new(test);
    let go = t.build(&ctx);
    let img = ctx.path("img");
    let mut r = spawn(&ctx, t, &go);
    // How long a whole dump takes: the kills are spread over it.
    let t0 = Instant::now();
    ctx.dump_leave_running(r.p.pid, &img);
    let whole = t0.elapsed();
    fs::remove_file(&img).expect("rm image");
    eprintln!("a whole dump: {whole:?}");
    let mut rng = Rng::from_env("CKPT_KILLSAFE_SEED");
    let whole_us = whole.as_micros() as u64;
    let started = Instant::now();
    let mut tally: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
    let mut failures = Vec::new();
    for i in 0..tries {
        let (sig, leave, label) = match i % 10 {
            0 => (libc::SIGTERM, true, "SIGTERM (--leave-running)"),
            1..=3 => (libc::SIGKILL, false, "SIGKILL"),
            _ => (libc::SIGKILL, true, "SIGKILL (--leave-running)"),
        };
        // Two kills in three in the first 10 ms (freeze and injected queries), the
        // others anywhere in the dump; a dump that is not left running is killed before
        // it ends.
        let span = if rng.below(3) != 0 { 10_000 } else { whole_us };
        let span = if leave {
            span
        } else {
            span.min(whole_us * 7 / 10)
        };
        let delay = Duration::from_micros(rng.below(span));
        let st = killed_dump(r.p.pid, &img, How::Signal(sig), leave, delay);
        let ended = !st.success() && !leave && committed_then_killed(&img, &mut r.p);
        let _ = fs::remove_file(&img);
        let e = tally.entry(label).or_default();
        e.0 += 1;
        if ended {
            // Killed after its image was safe, while it was killing the target.
            e.2 += 1;
            r = spawn(&ctx, t, &go);
            continue;
        }
        if st.success() {
            e.2 += 1;
            if !leave {
                r.p.expect_killed();
                r = spawn(&ctx, t, &go);
            }
            continue;
        }
        let status_ok = if sig == libc::SIGKILL {
            st.signal() == Some(sig)
        } else {
            st.code() == Some(128 + sig) || st.signal() == Some(sig)
        };
        let wrong = check_target(test, t, &mut r);
        if !status_ok || wrong.is_some() {
            e.1 += 1;
            failures.push(format!(
                "{label} after {delay:?}: ckpt {st:?}{}",
                wrong.map(|w| format!("; {w}")).unwrap_or_default()
            ));
            r.p.kill();
            r = spawn(&ctx, t, &go);
        }
    }
    eprintln!("{:?} for {tries} kills", started.elapsed());
    for (k, (n, bad, done)) in &tally {
        eprintln!("{k}: {n} tries, {bad} failed, {done} dumps completed first");
    }
    for f in failures.iter().take(50) {
        eprintln!("  {f}");
    }
    r.p.kill();
    assert!(
        failures.is_empty(),
        "{} of the killed dumps went wrong (above)",
        failures.len()
    );
}

/// ckpt killed by SIGKILL at each moment where it holds a thread stopped with state it
/// changed (`CKPT_DIE_AT`), one dump per moment: the target runs on as before after
/// every one.
fn every_die_point(test: &str, t: Target) {
    let ctx = Ctx::new(test);
    let go = t.build(&ctx);
    let img = ctx.path("img");
    let mut r = spawn(&ctx, t, &go);
    let mut failures = Vec::new();
    let mut n = 1u32;
    loop {
        let st = Command::new(ckpt_bin())
            .args(["dump", &r.p.pid.to_string(), "-o"])
            .arg(&img)
            .arg("--leave-running")
            .env("CKPT_DIE_AT", n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ckpt dump");
        if st.success() {
            break;
        }
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "ckpt at die point {n}: {st:?}"
        );
        if let Some(w) = check_target(test, t, &mut r) {
            failures.push(format!("killed at point {n}: {w}"));
            r.p.kill();
            r = spawn(&ctx, t, &go);
        }
        n += 1;
        assert!(n < 5000, "the dump never got past its die points");
    }
    let _ = fs::remove_file(&img);
    eprintln!("{} die points", n - 1);
    r.p.kill();
    assert!(
        failures.is_empty(),
        "{} of {} die points went wrong: {failures:#?}",
        failures.len(),
        n - 1
    );
    assert!(n > 50, "only {} die points: is the hook there?", n - 1);
}

/// The Go program's threads take their frames on their alternate signal stacks: the
/// injected queries no longer map a scratch area (which a killed ckpt would leave).
#[test]
fn go_killed_dump_leaves_target_as_before() {
    random_kills("go_killed_dump_leaves_target_as_before", Target::Go, 200);
}

#[test]
fn go_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "go_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Go,
    );
}

/// gobusy's cgo build: a thread of its C code that never ran Go (no Go runtime data to
/// tell its signal stack) takes its frame below its stack pointer on its C library's
/// thread stack, told from Go's heap by the thread block at its top.
#[test]
fn cgo_killed_dump_leaves_target_as_before() {
    random_kills("cgo_killed_dump_leaves_target_as_before", Target::Cgo, 60);
}

#[test]
fn cgo_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "cgo_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Cgo,
    );
}

/// Threads on coroutine stacks (no room ckpt can tell below their stack pointer).
#[test]
fn no_room_killed_dump_leaves_target_as_before() {
    random_kills(
        "no_room_killed_dump_leaves_target_as_before",
        Target::Room,
        150,
    );
}

#[test]
fn no_room_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "no_room_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Room,
    );
}

/// The same with the C program's ia32 build: ia32 frames in the slots.
#[test]
fn ia32_no_room_killed_dump_leaves_target_as_before() {
    random_kills(
        "ia32_no_room_killed_dump_leaves_target_as_before",
        Target::Room32,
        60,
    );
}

/// A static program without libc: none of the instructions the frames need in it nor
/// in the vDSO, so ckpt writes them into the padding after its code. A whole dump gives
/// the padding its bytes back (the page stays the process's own copy: smaps
/// `Anonymous`, not compared by the oracle, says it was written); a killed one leaves
/// the program running as before (at most the gadgets in the padding).
#[test]
fn bare_killed_dump_leaves_target_as_before() {
    bare_dumps("bare_killed_dump_leaves_target_as_before", Target::Bare, 80);
}

/// The same for its ia32 build, which has unmapped its vDSO (the ia32 vDSO has both
/// instructions): ckpt writes their ia32 twins into the padding of its ELF32 code.
#[test]
fn bare32_killed_dump_leaves_target_as_before() {
    bare_dumps(
        "bare32_killed_dump_leaves_target_as_before",
        Target::Bare32,
        80,
    );
}

/// A `bare` build `t` has none of the instructions its frames need (nor a vDSO that has
/// them); a whole dump leaves its code the file's; `tries` killed dumps leave it running
/// as before.
fn bare_dumps(test: &str, t: Target, tries: u32) {
    let ctx = Ctx::new(test);
    let bare = t.bare().expect("a bare target");
    let file = fs::read(target(bare.0)).expect("read bare");
    let has = |code: &[u8], pat: &[u8]| code.windows(pat.len()).any(|w| w == pat);
    let r = spawn(&ctx, t, Path::new(""));
    let code: Vec<Vec<u8>> = match vdso_bytes(r.p.pid) {
        Some(vdso) => vec![file, vdso],
        None => vec![file],
    };
    // The instructions the frames look for (arch/sigframe.rs), of the target's ABI.
    let (syscall_ret, sigreturn): (&[&[u8]], &[&[u8]]) = if t == Target::Bare32 {
        (
            &[&[0xcd, 0x80, 0xc3], &[0xcd, 0x80, 0x5d, 0x5a, 0x59, 0xc3]],
            &[&[0xb8, 0xad, 0, 0, 0, 0xcd, 0x80]],
        )
    } else {
        (
            &[&[0x0f, 0x05, 0xc3]],
            &[
                &[0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05],
                &[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05],
            ],
        )
    };
    for code in &code {
        assert!(
            !syscall_ret.iter().any(|p| has(code, p)),
            "a system call and ret of its own"
        );
        assert!(
            !sigreturn.iter().any(|p| has(code, p)),
            "an rt_sigreturn of its own"
        );
    }
    if t == Target::Bare32 {
        assert_eq!(code.len(), 1, "bare32 has unmapped its vDSO");
    }
    assert_eq!(bare_code(r.p.pid, bare), (false, None));
    let img = ctx.path("img");
    ctx.dump_leave_running(r.p.pid, &img);
    assert_eq!(
        bare_code(r.p.pid, bare),
        (false, None),
        "padding after a dump"
    );
    let smaps = fs::read_to_string(format!("/proc/{}/smaps", r.p.pid)).expect("smaps");
    let code = smaps
        .split("\n")
        .skip_while(|l| !(l.contains(" r-xp ") && l.ends_with(&format!("/{}", bare.0))))
        .find(|l| l.starts_with("Anonymous:"))
        .expect("smaps of the code");
    assert!(
        code.ends_with(" 4 kB"),
        "the padding's page was written: {code}"
    );
    drop(r);
    random_kills(test, t, tries);
}

#[test]
fn bare_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "bare_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Bare,
    );
}

#[test]
fn bare32_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "bare32_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Bare32,
    );
}

/// The task's vDSO, if it has one.
fn vdso_bytes(pid: i32) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (a, b) = line
        .split_whitespace()
        .next()
        .and_then(|r| r.split_once('-'))
        .expect("range");
    let hex = |x: &str| u64::from_str_radix(x, 16).expect("hex");
    let mut v = vec![0u8; (hex(b) - hex(a)) as usize];
    fs::File::open(format!("/proc/{pid}/mem"))
        .expect("open mem")
        .read_exact_at(&mut v, hex(a))
        .expect("read vdso");
    Some(v)
}

#[test]
fn ia32_no_room_ckpt_killed_at_every_injection_stop_leaves_target_as_before() {
    every_die_point(
        "ia32_no_room_ckpt_killed_at_every_injection_stop_leaves_target_as_before",
        Target::Room32,
    );
}

/// A whole dump and restore of the Go program: it goes on from where it was (its
/// workers check the memory they wrote, every tick it prints follows the last one
/// before the dump), and the state oracle sees the restored program as the original.
#[test]
fn go_dump_restore_same_program() {
    let test = "go_dump_restore_same_program";
    let ctx = Ctx::new(test);
    let go = gobusy(&ctx);
    let mut r = spawn(&ctx, Target::Go, &go);
    let img = ctx.path("go.img");
    let threads: BTreeSet<i32> = tasks(r.p.pid).into_iter().collect();
    ctx.dump(r.p.pid, &img);
    r.p.expect_killed();
    let last =
        r.p.stdout
            .text()
            .lines()
            .filter_map(|l| l.strip_prefix("tick "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .next_back()
            .expect("ticks before the dump");
    let mut back = ctx.restore(&img, &[], In::Null);
    back.wait_lines(30);
    let out = back.stdout.text();
    assert!(!out.contains("CORRUPT"), "restored Go program: {out}");
    let ticks: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        ticks.first(),
        Some(&(last + 1)),
        "the restored program's first tick"
    );
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    let now: BTreeSet<i32> = tasks(r.p.pid).into_iter().collect();
    assert!(threads.is_subset(&now), "threads {now:?}, were {threads:?}");
    // Its signal handling works: SIGUSR1 reaches its signal.Notify channel.
    send_signal(r.p.pid, libc::SIGUSR1);
    back.wait_until("SIGUSR1 seen", |p| {
        p.stdout.text().lines().any(|l| l.ends_with(" usr1 1"))
    });
    back.kill();
}

/// `dump --track` makes its calls through the leader's frame too (its userfaultfd): a Go
/// program, refused before, is tracked, dumped incrementally and restored from the
/// chain, and goes on from where it was.
#[test]
fn go_incremental_dump_and_restore() {
    let ctx = Ctx::new("go_incremental_dump_and_restore");
    let go = gobusy(&ctx);
    let mut r = spawn(&ctx, Target::Go, &go);
    let (base, next) = (ctx.path("base.img"), ctx.path("next.img"));
    let pid = r.p.pid.to_string();
    let base_s = base.to_str().expect("path");
    ctx.ckpt(&["dump", &pid, "-o", base_s, "--track"])
        .assert_ok();
    // Still running, and checking its memory.
    let n = r.p.stdout.lines();
    r.p.wait_lines(n + 20);
    ctx.oracle_before_dump(r.p.pid, &next);
    let next_s = next.to_str().expect("path");
    ctx.ckpt(&["dump", &pid, "-o", next_s, "--parent", base_s])
        .assert_ok();
    r.p.expect_killed();
    let mut back = ctx.restore(&next, &[], In::Null);
    back.wait_lines(30);
    let out = back.stdout.text();
    assert!(!out.contains("CORRUPT"), "restored Go program: {out}");
    back.kill();
}
