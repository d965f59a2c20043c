//! End-to-end tests of privileges and credentials: a process of another user, securebits
//! and per-thread credentials come back exactly as they were (the program prints its own
//! view at every step, so its output must equal an uninterrupted run's; its
//! /proc/PID/status lines and a second dump are compared too), and an image that asks for
//! privileges the restoring ckpt lacks (a capability outside its bounding set, a hard
//! limit above its own, no_new_privs it cannot clear, not being root) is refused by
//! `check` and by restore's plan, with nothing created.
//!
//! The restrictions are made with `setpriv` and `prlimit` (util-linux). What to drop is
//! computed from this test's own /proc/self/status, so the tests work where root holds
//! every capability and where it lacks some (e.g. CAP_SYS_RESOURCE in a container).
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

/// A directory every user can reach, removed at the end of the test. A process of user
/// 65534 must be able to run its binary, which the build directory may not allow (a
/// checkout under /root): such binaries are run from copies here.
struct PublicDir(PathBuf);

impl PublicDir {
    fn new(name: &str) -> PublicDir {
        let d = std::env::temp_dir().join(format!("ckpt-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        PublicDir(d)
    }

    /// A copy of `src` here, readable and executable by all.
    fn copy(&self, src: &Path) -> PathBuf {
        let dst = self.0.join(src.file_name().expect("file name"));
        std::fs::copy(src, &dst)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dst
    }
}

impl Drop for PublicDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `privs STEPS OPTS...` (the binary `privs`), 10 ms a step.
fn privs_spec(privs: &Path, steps: u32, opts: &[&str]) -> Vec<String> {
    let mut v = vec![
        privs.display().to_string(),
        steps.to_string(),
        "sleep=10".into(),
    ];
    v.extend(opts.iter().map(|s| s.to_string()));
    v
}

/// `setpriv ARGS... CMD...` (it execs CMD: the PID stays the same).
fn setpriv(args: &[&str], cmd: &[String]) -> Spec {
    let mut s = Spec::new(setpriv_bin());
    for a in args
        .iter()
        .copied()
        .map(str::to_string)
        .chain(cmd.iter().cloned())
    {
        s = s.arg(a);
    }
    s
}

fn setpriv_bin() -> &'static str {
    let ok = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "setpriv not found (apt-get install util-linux)");
    "setpriv"
}

/// Run as user and group 65534 (nobody), without supplementary groups.
const AS_NOBODY: &[&str] = &["--reuid", "65534", "--regid", "65534", "--clear-groups"];

/// The credential lines of /proc/PID/status and of each of its threads'.
fn cred_lines(pid: i32) -> String {
    let tids = tasks(pid);
    assert!(!tids.is_empty(), "no threads listed for {pid}");
    let mut out = String::new();
    for tid in tids {
        let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .unwrap_or_else(|e| panic!("read status of {pid}/{tid}: {e}"));
        for l in st.lines() {
            let key = l.split(':').next().unwrap_or("");
            if ["Uid", "Gid", "Groups", "NoNewPrivs"].contains(&key) || key.starts_with("Cap") {
                out.push_str(&format!("thread {}: {l}\n", if tid == pid { 0 } else { 1 }));
            }
        }
    }
    out
}

/// Credentials, limits and the dumpable flag and parent-death signal of the image's
/// first process.
fn privilege_state(ctx: &Ctx, img: &Path) -> Value {
    let j = ctx.inspect_json(img);
    let p = &j["processes"][0];
    serde_json::json!({
        "creds": p["creds"],
        "rlimits": p["rlimits"],
        "misc": p["misc"],
    })
}

/// Run `spec` uninterrupted; run it again, dump it (killing it) after `k` steps, restore
/// it and check that it prints exactly the rest of the uninterrupted run, that
/// /proc/PID/status shows the credentials it had (each thread's), and that a second dump
/// of the restored process records the same credentials, limits and process flags.
/// Returns the uninterrupted run's output.
fn dump_restore_same_privileges(ctx: &Ctx, spec: &Spec, k: usize, what: &str) -> String {
    let reference = ctx.reference(spec);
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{what}: uninterrupted run failed: {}",
        text(&reference.stderr)
    );
    let mut t = ctx.spawn(spec);
    t.wait_for(&format!("step {k}/"));
    let pid = t.pid;
    let status_before = cred_lines(pid);
    let first = ctx.path("first.img");
    ctx.dump(pid, &first);
    t.expect_killed();
    let before = t.stdout.finish("original");

    let mut r = ctx.restore_detached(&first);
    // Once it prints, it runs on its own: look at it, and dump it again.
    let n = r.stdout.lines();
    r.wait_lines(n + 1);
    assert_eq!(
        cred_lines(pid),
        status_before,
        "{what}: /proc/{pid}/status of the restored process (left) differs from the \
         original's"
    );
    let second = ctx.path("second.img");
    ctx.dump_leave_running(pid, &second);
    assert_eq!(
        privilege_state(ctx, &second),
        privilege_state(ctx, &first),
        "{what}: the restored process's credentials, limits or flags (left) differ from \
         the dumped ones"
    );
    let fin = r.finish();
    let after = without_pid_line(&fin.stdout, pid);
    assert_same_output(
        &format!("{what} (dumped after {k} steps, restored)"),
        &reference.stdout,
        &[before, after].concat(),
    );
    assert_eq!(fin.status.code(), Some(0), "{what}: exit status");
    text(&reference.stdout)
}

// ---------------------------------------------------------------------------------------
// Credentials come back exactly

/// A process of user and group 65534, with a second thread, a lowered descriptor limit
/// and a parent-death signal: dump needs no CAP_SYS_RESOURCE to read its limits (root
/// may lack it), and the restored process has its IDs, capabilities (each thread), limits,
/// dumpable flag and parent-death signal (which the kernel resets on a change of IDs).
#[test]
fn process_of_another_user_is_dumped_and_restored() {
    let ctx = Ctx::new("process_of_another_user_is_dumped_and_restored");
    let public = PublicDir::new(&ctx.name);
    let privs = public.copy(&target("privs"));
    let spec = setpriv(
        AS_NOBODY,
        &privs_spec(&privs, 40, &["thread", "nofile=512:1024", "pdeathsig=10"]),
    );
    let out = dump_restore_same_privileges(&ctx, &spec, 10, "uid 65534");
    assert!(
        out.contains("Uid=65534,65534,65534,65534") && out.contains("pdeathsig=10"),
        "the target did not run as expected:\n{out}"
    );
}

/// securebits set by `setpriv` (root keeps user ID 0, so only the bits show the
/// difference): both threads print them at every step.
#[test]
fn securebits_survive_restore() {
    let ctx = Ctx::new("securebits_survive_restore");
    let spec = setpriv(
        &["--securebits", "+noroot,+noroot_locked,+no_setuid_fixup"],
        &privs_spec(&target("privs"), 40, &["thread"]),
    );
    let out = dump_restore_same_privileges(&ctx, &spec, 10, "securebits");
    assert!(
        out.contains("step 1/40 sum=1 secbits=0x7 ") && out.contains("thread secbits=0x7 "),
        "the target did not run with securebits 0x7:\n{out}"
    );
}

/// Locked securebits, keep_caps locked off among them, on a process of another user:
/// restore must change the user IDs before it sets (and locks) the bits.
#[test]
fn locked_securebits_of_another_user_survive_restore() {
    let ctx = Ctx::new("locked_securebits_of_another_user_survive_restore");
    let public = PublicDir::new(&ctx.name);
    let privs = public.copy(&target("privs"));
    let mut args = AS_NOBODY.to_vec();
    args.extend([
        "--securebits",
        "+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked,+keep_caps_locked",
    ]);
    let spec = setpriv(&args, &privs_spec(&privs, 40, &["thread"]));
    let out = dump_restore_same_privileges(&ctx, &spec, 10, "locked securebits, uid 65534");
    assert!(
        out.contains("secbits=0x2f ") && out.contains("Uid=65534,"),
        "the target did not run as expected:\n{out}"
    );
}

/// A thread whose credentials differ from the main thread's (it changed its user IDs by
/// a raw system call) keeps them: each thread prints its own before and after restore.
#[test]
fn thread_with_other_user_ids_survives_restore() {
    let ctx = Ctx::new("thread_with_other_user_ids_survives_restore");
    let spec = Spec::new(target("privs"))
        .arg("40")
        .arg("sleep=10")
        .arg("thread-uid=65534");
    let out = dump_restore_same_privileges(&ctx, &spec, 5, "a thread of user 65534");
    assert!(
        out.contains("  thread secbits=0 Uid=65534,65534,65534,65534 ")
            && out.contains("step 1/40 sum=1 secbits=0 ")
            && out.contains(" Uid=0,0,0,0 "),
        "the target did not run with a thread of user 65534:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Privileges the restoring ckpt lacks are refused in plan

/// A capability in this test's bounding set, preferably one restore does not use
/// itself: (number, name as `setpriv` spells it, name as ckpt prints it).
fn droppable_capability() -> (u32, String, String) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapBnd in /proc/self/status");
    // SYS_RESOURCE, SYS_TIME, WAKE_ALARM, BLOCK_SUSPEND, AUDIT_READ, SYS_BOOT, LEASE
    let (n, name) = [
        (24, "sys_resource"),
        (25, "sys_time"),
        (35, "wake_alarm"),
        (36, "block_suspend"),
        (37, "audit_read"),
        (22, "sys_boot"),
        (28, "lease"),
    ]
    .into_iter()
    .find(|(n, _)| bnd & (1 << n) != 0)
    .expect("none of the usual capabilities is in this test's bounding set");
    (n, name.to_string(), format!("CAP_{}", name.to_uppercase()))
}

/// `WRAPPER... CKPT ARGS...`, run to its end.
fn wrapped_ckpt(ctx: &Ctx, wrapper: &[&str], ckpt: &Path, args: &[&OsStr]) -> Finished {
    let mut s = Spec::new(wrapper[0]);
    for a in &wrapper[1..] {
        s = s.arg(a);
    }
    s = s.arg(ckpt).env("RUST_BACKTRACE", "1").cwd(&ctx.dir);
    for a in args {
        s = s.arg(a);
    }
    ctx.spawn(&s).finish()
}

/// `WRAPPER... CKPT check IMG` and `WRAPPER... CKPT restore IMG` both exit 1 naming each
/// of `words`; the restore creates nothing: no process, no file, nothing printed.
fn assert_refused_under(
    ctx: &Ctx,
    wrapper: &[&str],
    (ckpt, img): (&Path, &Path),
    pid: i32,
    words: &[&str],
) {
    let what = wrapper.join(" ");
    let before = ctx.listing();
    for cmd in ["check", "restore"] {
        let f = wrapped_ckpt(ctx, wrapper, ckpt, &[OsStr::new(cmd), img.as_os_str()]);
        let err = text(&f.stderr);
        assert_eq!(
            f.status.code(),
            Some(1),
            "{what} ckpt {cmd}: exit status\n--- stdout:\n{}\n--- stderr:\n{err}",
            text(&f.stdout)
        );
        assert!(!err.contains("panicked"), "{what} ckpt {cmd}: panic\n{err}");
        for w in words {
            assert!(
                err.contains(w),
                "{what} ckpt {cmd}: stderr should mention {w:?}:\n{err}"
            );
        }
        if cmd == "restore" {
            assert!(
                f.stdout.is_empty(),
                "{what}: the refused restore ran the program:\n{}",
                text(&f.stdout)
            );
            assert_no_process(pid, &what);
            let strays = stray_children(&[]);
            assert!(
                strays.is_empty(),
                "{what}: left processes behind: {strays:?}"
            );
            assert_eq!(ctx.listing(), before, "{what}: left files behind");
        }
    }
}

#[test]
fn privileges_ckpt_lacks_are_refused_before_anything_is_created() {
    let ctx = Ctx::new("privileges_ckpt_lacks_are_refused_before_anything_is_created");
    // An ordinary process of root, with root's capabilities and limits.
    let spec = Spec::new(target("privs")).arg("40").arg("sleep=10");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 10/");
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let who = format!("process {pid} (privs)");

    // A capability outside ckpt's bounding set (so outside its permitted set too).
    let (_, cap, cap_name) = droppable_capability();
    let drop = format!("-{cap}");
    assert_refused_under(
        &ctx,
        &["setpriv", "--bounding-set", &drop],
        (&ckpt_bin(), &img),
        pid,
        &[
            &who,
            &format!("{cap_name} (in its permitted, effective and bounding sets"),
        ],
    );

    // A hard descriptor limit above ckpt's own, without CAP_SYS_RESOURCE to raise it.
    let j = ctx.inspect_json(&img);
    let nofile = j["processes"][0]["rlimits"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["resource"] == 7))
        .and_then(|r| r["max"].as_u64())
        .expect("RLIMIT_NOFILE in the image");
    let lower = format!("--nofile={0}:{0}", nofile - 1);
    assert_refused_under(
        &ctx,
        &[
            "prlimit",
            &lower,
            "setpriv",
            "--bounding-set",
            "-sys_resource",
        ],
        (&ckpt_bin(), &img),
        pid,
        &[
            &who,
            &format!(
                "RLIMIT_NOFILE is {nofile}, above ckpt's own ({})",
                nofile - 1
            ),
        ],
    );

    // no_new_privs, which ckpt cannot clear.
    assert_refused_under(
        &ctx,
        &["setpriv", "--no-new-privs"],
        (&ckpt_bin(), &img),
        pid,
        &[&who, "no_new_privs"],
    );

    // Not root at all (ckpt and the image copied where that user can read them).
    let public = PublicDir::new(&ctx.name);
    let (ckpt, public_img) = (public.copy(&ckpt_bin()), public.copy(&img));
    let mut nobody = vec!["setpriv"];
    nobody.extend(AS_NOBODY);
    assert_refused_under(
        &ctx,
        &nobody,
        (&ckpt, &public_img),
        pid,
        &["must run as root"],
    );

    // Without the restrictions the same image restores, and the program goes on.
    ctx.check(&img).assert_ok();
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_same_output(
        "privs restored without restrictions",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(fin.status.code(), Some(0));
}
