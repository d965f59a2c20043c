//! End-to-end tests of how restore finds the files a process had (issue 13, "Checks
//! and files"): every file is opened once in plan, checked by device and inode there,
//! and that very file is what the restored process gets, even when the path is swapped
//! for another file between plan and stage; a file replaced before the restore by one
//! of the same size with a copied mtime is refused; a recreated deleted file gets its
//! owner back and keeps set-user-ID/set-group-ID only for its owner.
//!
//! The target is `tests/targets/filerace.c`. Needs root and the `fault-injection`
//! build (its `CKPT_PAUSE_AFTER_PLAN` hook makes the race deterministic). Run with
//! cargo-nextest.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;

const STEPS: u32 = 30;
const A: &[u8; 16] = b"original-a-00000";
const B: &[u8; 16] = b"original-b-00000";

/// A run directory with a.txt (16 bytes) and b.bin (a page) of the original contents.
fn run_dir(ctx: &Ctx, sub: &str) -> PathBuf {
    let d = ctx.path(sub);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("a.txt"), A).expect("write a.txt");
    let mut b = B.to_vec();
    b.resize(4096, b'.');
    fs::write(d.join("b.bin"), b).expect("write b.bin");
    d
}

fn spec(d: &Path) -> Spec {
    // The program runs from a copy of its own in the run directory (which the racing
    // test swaps too).
    let exe = d.join("filerace");
    if !exe.exists() {
        fs::copy(target("filerace"), &exe).expect("copy the target");
    }
    Spec::new(exe)
        .arg(STEPS.to_string())
        .arg(d)
        .arg("sleep=40")
        .cwd(d)
}

/// What the target prints when it sees the original files all along.
fn expected(ghost: &str, fifo: &str) -> String {
    let a = String::from_utf8_lossy(A);
    let b = String::from_utf8_lossy(B);
    let mut s: String = (0..STEPS)
        .map(|i| format!("step {i} a={a} b={b} g={ghost} f={fifo}\n"))
        .collect();
    s.push_str("done\n");
    s
}

/// Replace `path` by another file of the same size and modification time (renamed over
/// it: a new inode), with `REPLACED` where the original starts with `original`.
fn swap_same_size(path: &Path) {
    swap_with(path, |b| b[..8].copy_from_slice(b"REPLACED"));
}

/// Replace `path` by another file of the same size and modification time (renamed over
/// it: a new inode), its contents changed by `change`.
fn swap_with(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let old = fs::read(path).expect("read original");
    let mut new = old.clone();
    change(&mut new);
    let old_meta = fs::metadata(path).expect("stat original");
    let tmp = path.with_extension("swap");
    fs::write(&tmp, &new).expect("write replacement");
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    fs::File::options()
        .write(true)
        .open(&tmp)
        .and_then(|f| f.set_modified(mtime))
        .expect("copy the mtime");
    fs::rename(&tmp, path).expect("rename over");
    let (o, n) = (old_meta, fs::metadata(path).expect("stat"));
    assert_eq!(
        (o.len(), o.mtime(), o.mtime_nsec()),
        (n.len(), n.mtime(), n.mtime_nsec())
    );
    assert_ne!(o.ino(), n.ino());
}

/// Device and inode of a path.
fn ident(p: impl AsRef<Path>) -> (u64, u64) {
    let m =
        fs::metadata(p.as_ref()).unwrap_or_else(|e| panic!("stat {}: {e}", p.as_ref().display()));
    (m.dev(), m.ino())
}

/// Device and inode numbers of the file mapped from a path ending in `name`
/// (/proc/PID/maps: major:minor and inode columns).
fn mapped_inode(pid: i32, name: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()?
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
}

/// Run the target in `d` (optionally through `wrap`, e.g. setpriv), let it print
/// `lines`, call `before_dump`, dump it (killed); returns the image, its PID and what
/// it printed before.
fn dump_target(
    ctx: &Ctx,
    d: &Path,
    wrap: Option<&[&str]>,
    before_dump: impl FnOnce(),
) -> (PathBuf, i32, String) {
    let s = spec(d);
    let s = match wrap {
        None => s,
        Some(w) => {
            let mut n = Spec::new("setpriv").cwd(d);
            // (setpriv execs the program: the PID stays the same)
            for a in w {
                n = n.arg(a);
            }
            n = n.arg(&s.prog);
            for a in &s.args {
                n = n.arg(a);
            }
            n
        }
    };
    let mut t = ctx.spawn(&s);
    t.wait_lines(2);
    before_dump();
    let pid = t.pid;
    let img = ctx.path("filerace.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = String::from_utf8_lossy(&t.stdout.finish("filerace: original")).into_owned();
    wait_pids_gone(&[pid], "filerace");
    (img, pid, before)
}

/// `ckpt restore IMG` with extra environment.
fn restore_with_env(ctx: &Ctx, img: &Path, env: &[(&str, &OsStr)]) -> Proc {
    let mut s = Spec::new(ckpt_bin())
        .arg("restore")
        .arg(img)
        .env("RUST_BACKTRACE", "1")
        .cwd(ctx.path("."));
    for (k, v) in env {
        s = s.env(k, v);
    }
    ctx.spawn(&s)
}

fn mkfifo(p: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .expect("run mkfifo");
    assert!(ok.success(), "mkfifo {}", p.display());
}

fn wait_file(p: &Path, what: &str) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < timeout(),
            "{what}: {} never appeared",
            p.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_file_swapped_between_plan_and_stage_is_not_what_the_process_gets() {
    let ctx = Ctx::new("a_file_swapped_between_plan_and_stage_is_not_what_the_process_gets");
    let d = run_dir(&ctx, "run");
    mkfifo(&d.join("fifo"));
    let (img, pid, before) = dump_target(&ctx, &d, None, || {});
    let (a0, b0) = (ident(d.join("a.txt")), ident(d.join("b.bin")));
    let fifo0 = ident(d.join("fifo"));
    let exe0 = ident(d.join("filerace"));

    // Restore, paused between plan (which checked the files) and stage; meanwhile both
    // files are swapped for others of the same size and mtime.
    let go = ctx.path("go");
    let mut r = restore_with_env(&ctx, &img, &[("CKPT_PAUSE_AFTER_PLAN", go.as_os_str())]);
    wait_file(&ctx.path("go.waiting"), "restore paused after plan");
    swap_same_size(&d.join("a.txt"));
    swap_same_size(&d.join("b.bin"));
    // The executable too: its last byte (in no loaded segment) changed.
    swap_with(&d.join("filerace"), |b| {
        if let Some(l) = b.last_mut() {
            *l ^= 0xff;
        }
    });
    // And the FIFO, for another FIFO.
    fs::remove_file(d.join("fifo")).expect("remove the FIFO");
    mkfifo(&d.join("fifo"));
    assert_ne!(ident(d.join("a.txt")), a0);
    assert_ne!(ident(d.join("fifo")), fifo0);
    fs::write(&go, b"").expect("let restore go on");

    r.wait_lines(1);
    // The kernel's view: descriptor 3 and the mapping are the original inodes.
    let fd3 = ident(format!("/proc/{pid}/fd/3"));
    assert_eq!(
        fd3, a0,
        "descriptor 3 of the restored process is another file than a.txt was"
    );
    assert_eq!(
        mapped_inode(pid, "b.bin"),
        Some(b0.1),
        "the restored process maps another file than b.bin was"
    );
    assert_eq!(
        ident(format!("/proc/{pid}/fd/5")),
        fifo0,
        "descriptor 5 of the restored process is another FIFO"
    );
    assert_eq!(
        ident(format!("/proc/{pid}/exe")),
        exe0,
        "the restored process's executable is another file"
    );
    assert_eq!(
        mapped_inode(pid, "/filerace"),
        Some(exe0.1),
        "the restored process maps another executable"
    );
    let after = String::from_utf8_lossy(&r.finish().stdout).into_owned();
    assert_same_output(
        "filerace: output before the dump and after the restore (right) against a run that \
         saw the original files all along (left)",
        expected("-", "ok").as_bytes(),
        format!("{before}{after}").as_bytes(),
    );
}

#[test]
fn a_same_size_file_with_a_copied_mtime_is_refused() {
    let ctx = Ctx::new("a_same_size_file_with_a_copied_mtime_is_refused");
    let d = run_dir(&ctx, "run");
    let (img, pid, _) = dump_target(&ctx, &d, None, || {});
    swap_same_size(&d.join("a.txt"));
    let c = ctx.check(&img);
    c.assert_fails(1)
        .assert_stderr_mentions(&["a.txt has changed since the dump"]);
    let r = ctx.ckpt(&[OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1)
        .assert_stderr_mentions(&["a.txt has changed since the dump"]);
    assert_no_process(pid, "filerace after a refused restore");
    // The mapped file too.
    fs::write(d.join("a.txt"), A).expect("put a.txt back");
    let img2 = {
        let d2 = run_dir(&ctx, "run2");
        let (img2, _, _) = dump_target(&ctx, &d2, None, || {});
        swap_same_size(&d2.join("b.bin"));
        img2
    };
    ctx.check(&img2)
        .assert_fails(1)
        .assert_stderr_mentions(&["b.bin has changed since the dump"]);
}

/// Run the target with DIR/ghost (owner `owner`, mode `mode`) open, deleted before the
/// dump; restore it; returns the restored PID, the recreated file's metadata as the
/// kernel shows it through descriptor 4, and the restore.
fn ghost_round(
    ctx: &Ctx,
    d: &Path,
    owner: (u32, u32),
    mode: u32,
    wrap: Option<&[&str]>,
) -> (i32, fs::Metadata, Proc, String) {
    let g = d.join("ghost");
    fs::write(&g, b"ghost-contents-0").expect("write ghost");
    std::os::unix::fs::chown(&g, Some(owner.0), Some(owner.1)).expect("chown ghost");
    fs::set_permissions(&g, fs::Permissions::from_mode(mode)).expect("chmod ghost");
    let (img, pid, before) =
        dump_target(ctx, d, wrap, || fs::remove_file(&g).expect("delete ghost"));
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let m = fs::metadata(format!("/proc/{pid}/fd/4")).expect("stat the restored descriptor 4");
    (pid, m, r, before)
}

#[test]
fn a_recreated_setuid_file_keeps_its_owner_and_its_bits_only_for_it() {
    let ctx = Ctx::new("a_recreated_setuid_file_keeps_its_owner_and_its_bits_only_for_it");
    // Another user's set-user-ID, set-group-ID file, held by a root process, in a
    // directory anyone can write.
    let d = run_dir(&ctx, "run");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).expect("chmod dir");
    let (_, m, mut r, before) = ghost_round(&ctx, &d, (1234, 1235), 0o6755, None);
    assert_eq!(
        (m.uid(), m.gid()),
        (1234, 1235),
        "the recreated file's owner and group"
    );
    assert_eq!(
        m.mode() & 0o7777,
        0o755,
        "the recreated file of another user kept its set-user-ID or set-group-ID bit"
    );
    let after = String::from_utf8_lossy(&r.finish().stdout).into_owned();
    assert_same_output(
        "filerace with a deleted file: output",
        expected("ghost-contents-0", "-").as_bytes(),
        format!("{before}{after}").as_bytes(),
    );
    // Nothing of the recreation is left in the directory.
    let left: Vec<String> = fs::read_dir(&d)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "a.txt" && n != "b.bin" && n != "filerace")
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");

    // The process's own set-user-ID file (uid 65534 all along) keeps its bits.
    let d = run_dir(&ctx, "own");
    let nobody = ["--reuid", "65534", "--regid", "65534", "--clear-groups"];
    let (_, m, mut r, _) = ghost_round(&ctx, &d, (65534, 65534), 0o6750, Some(&nobody));
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (65534, 65534, 0o6750)
    );
    r.finish();
}
