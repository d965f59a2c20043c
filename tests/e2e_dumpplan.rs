//! Dump accepts only what restore can bring back: before it writes or kills anything,
//! dump runs restore's plan on what it collected, with the tree's own PIDs, sockets,
//! System V segments and locks counted free (they will be, once the tree is gone), and
//! refuses on any problem. Each refusal test is a case where dump used to succeed, kill
//! the program, and leave an image that `ckpt restore` on the same host then refused:
//! now the dump exits 1 naming the problem, writes nothing, and the program runs on,
//! untraced, to the same end as an undisturbed run. The last tests show that what the
//! tree itself holds (a unix socket name, a System V segment) does not refuse it.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::*;

/// Steps of the target: long enough to be dumped mid-run on a loaded machine.
const STEPS: &str = "150";

fn dumpplan(mode: &str, arg: Option<&Path>) -> Spec {
    let s = Spec::new(target("dumpplan")).arg(mode).arg(STEPS);
    match arg {
        Some(a) => s.arg(a),
        None => s,
    }
}

/// `WRAPPER... ckpt dump PID -o IMG`, run to its end.
fn dump_under(ctx: &Ctx, wrapper: &[&str], pid: i32, img: &Path) -> Finished {
    let mut argv: Vec<OsString> = wrapper.iter().map(OsString::from).collect();
    argv.push(ckpt_bin().into());
    for a in ["dump", &pid.to_string(), "-o"] {
        argv.push(a.into());
    }
    argv.push(img.into());
    let mut s = Spec::new(&argv[0]).env("RUST_BACKTRACE", "1").cwd(&ctx.dir);
    for a in &argv[1..] {
        s = s.arg(a);
    }
    ctx.spawn(&s).finish()
}

/// How dump says that its run of restore's plan refused the tree.
const PLAN: &str = "a restore on this host would refuse it";

/// Run `spec` (set up by `prepare` once it printed "ready"), dump it (under `wrapper`)
/// mid-run and expect the refusal: exit 1 naming the process and each of `words`, no
/// file left behind, the program running on untraced and ending as an undisturbed run
/// (`reference`) does.
fn assert_dump_refused(
    ctx: &Ctx,
    spec: &Spec,
    reference: &Finished,
    wrapper: &[&str],
    prepare: &mut dyn FnMut(i32),
    words: &[&str],
) {
    let mut t = ctx.spawn(spec);
    t.wait_for("ready");
    let pid = t.pid;
    ctx.track(pid);
    prepare(pid);
    t.wait_for("step 3 ");
    let img = ctx.path("img");
    let before = ctx.listing();
    let f = dump_under(ctx, wrapper, pid, &img);
    let err = text(&f.stderr);
    assert_eq!(
        f.status.code(),
        Some(1),
        "the dump should be refused\n--- stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    // Refused by restore's plan run at dump ("a restore on this host would refuse it"),
    // or earlier, where collect already knows the case (named in `words`).
    for w in std::iter::once("cannot dump process ").chain(words.iter().copied()) {
        assert!(err.contains(w), "stderr should mention {w:?}:\n{err}");
    }
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    assert_eq!(ctx.listing(), before, "the refused dump left files behind");
    assert_running_untraced(pid, "the program after the refused dump");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "the program's exit status");
    assert_same_output(
        "the program after the refused dump",
        &reference.stdout,
        &fin.stdout,
    );
}

/// A capability in this test's bounding set that ckpt dump does not need itself: (name
/// as `setpriv` spells it, name as ckpt prints it).
fn droppable_capability() -> (String, String) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapBnd in /proc/self/status");
    let (_, name) = [
        (24, "sys_resource"),
        (25, "sys_time"),
        (35, "wake_alarm"),
        (36, "block_suspend"),
        (22, "sys_boot"),
    ]
    .into_iter()
    .find(|(n, _)| bnd & (1u64 << n) != 0)
    .expect("none of the usual capabilities is in this test's bounding set");
    (name.to_string(), format!("CAP_{}", name.to_uppercase()))
}

/// A program of root, with root's capabilities, dumped by a ckpt whose bounding set
/// lacks one of them: the same ckpt could not give it back at restore.
#[test]
fn capability_ckpt_could_not_give_back_refuses_the_dump() {
    let ctx = Ctx::new("capability_ckpt_could_not_give_back_refuses_the_dump");
    let spec = dumpplan("plain", None);
    let reference = ctx.reference(&spec);
    let (cap, cap_name) = droppable_capability();
    let drop = format!("-{cap}");
    assert_dump_refused(
        &ctx,
        &spec,
        &reference,
        &["setpriv", "--bounding-set", &drop],
        &mut |_| {},
        &[PLAN, &cap_name],
    );
}

/// A program whose working directory was removed, its name made again since (by this
/// test): restore could not make the removed directory again for an instant under its
/// name (a removed working directory alone is restored: tests/e2e_rmdirs.rs).
#[test]
fn removed_working_directory_whose_name_is_taken_refuses_the_dump() {
    let ctx = Ctx::new("removed_working_directory_whose_name_is_taken_refuses_the_dump");
    let dir = ctx.path("gone");
    let spec = dumpplan("deleted-cwd", Some(&dir));
    let reference = ctx.reference(&spec);
    let shown = format!(
        "working directory {} (removed while in use) cannot be made again",
        dir.display()
    );
    assert_dump_refused(
        &ctx,
        &spec,
        &reference,
        &[],
        &mut |_| std::fs::create_dir(&dir).expect("make the name again"),
        &[PLAN, &shown, "exists now"],
    );
}

/// A child left in a process group whose leader (its sibling) has exited: restore's
/// structure checks refuse a group it cannot recreate.
#[test]
fn process_group_led_from_nowhere_refuses_the_dump() {
    let ctx = Ctx::new("process_group_led_from_nowhere_refuses_the_dump");
    let spec = dumpplan("orphan-group", None);
    let reference = ctx.reference(&spec);
    assert_dump_refused(
        &ctx,
        &spec,
        &reference,
        &[],
        &mut |_| {},
        // Collect refuses this one itself, before the plan runs.
        &[
            "whose leader has exited",
            "restore cannot create a process group",
        ],
    );
}

/// A program listening on a unix socket path that another process (this test) has
/// taken over since (the file replaced by its own listener): the name would still be
/// taken at restore, once the program is gone.
#[test]
fn unix_socket_name_another_process_listens_on_refuses_the_dump() {
    let ctx = Ctx::new("unix_socket_name_another_process_listens_on_refuses_the_dump");
    let sock = ctx.path("sock");
    let spec = dumpplan("listen", Some(&sock));
    let reference = ctx.reference(&spec);
    let mut other = None;
    let shown = format!("another process listens on unix socket {}", sock.display());
    assert_dump_refused(
        &ctx,
        &spec,
        &reference,
        &[],
        &mut |_| {
            std::fs::remove_file(&sock).expect("remove the program's socket file");
            other = Some(std::os::unix::net::UnixListener::bind(&sock).expect("listen"));
        },
        &[PLAN, &shown],
    );
    drop(other);
}

/// A System V segment that is not removed would outlive the program, its ID still taken
/// at restore: it is the tree's (attached by it alone), so the dump removes it once the
/// image is written, and the restored program has it again under its ID, ending as an
/// undisturbed run does (before, such a dump was refused).
#[test]
fn system_v_segment_left_in_place_goes_with_the_tree_and_comes_back() {
    let ctx = Ctx::new("system_v_segment_left_in_place_goes_with_the_tree_and_comes_back");
    let spec = dumpplan("sysv", None);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3 ");
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the restored program's exit status: {}",
        text(&fin.stderr)
    );
    assert_same_output(
        "dumped and restored",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// The tree's own unix socket name does not refuse its dump (it is free once the tree
/// is gone): dumped, killed and restored, the program ends as an undisturbed run does.
#[test]
fn own_unix_socket_name_does_not_refuse_the_dump() {
    let ctx = Ctx::new("own_unix_socket_name_does_not_refuse_the_dump");
    let sock = ctx.path("sock");
    let spec = dumpplan("listen", Some(&sock));
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3 ");
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("original");
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the restored program's exit status"
    );
    assert_same_output(
        "dumped and restored",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// With `--leave-running` the tree keeps its name: still no refusal, and the image
/// restores once the program is gone.
#[test]
fn own_unix_socket_name_does_not_refuse_a_dump_leaving_it_running() {
    let ctx = Ctx::new("own_unix_socket_name_does_not_refuse_a_dump_leaving_it_running");
    let sock = ctx.path("sock");
    let spec = dumpplan("listen", Some(&sock));
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 3 ");
    let pid = t.pid;
    let img = ctx.path("img");
    ctx.dump_leave_running(pid, &img);
    t.kill();
    wait_pids_gone(&[pid], "the program left running");
    ctx.check(&img).assert_ok();
}
