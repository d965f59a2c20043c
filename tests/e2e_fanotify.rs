//! End-to-end tests of fanotify groups (issue 14). A process holding two groups -- one
//! with an inode mark, a mount mark and an inode mark that only ignores, shared by two
//! descriptors; one reporting directory handles and names with a filesystem mark -- is
//! dumped mid-way and restored: every step after restore reports the same events as an
//! uninterrupted run (its whole output matches the reference's), and the state oracle
//! compares each group's fdinfo (its flags, event flags and every mark with its flags and
//! masks, keyed by what it marks) with the original's; a restore failing as it makes a
//! group or sets a mark leaves nothing behind. A group with events not read is
//! refused at dump, saying so, and the process runs on (permission marks: in
//! tests/e2e_descs.rs).
//!
//! The target is `tests/targets/fanotify.c`; each run gets a tmpfs of its own, so that the
//! mount and filesystem marks see only the target's events.
//!
//! Needs root (ptrace of arbitrary processes, restoring PIDs, mounting). Run with
//! cargo-nextest, one process per test (see README.md).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory for the test's life (lazily unmounted at the end).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount(8): util-linux must be installed");
        assert!(st.success(), "mount a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn spec(dir: &Path) -> Spec {
    Spec::new(target("fanotify"))
        .arg(dir)
        .arg("8")
        .arg("sleep=300")
}

#[test]
fn fanotify_groups_report_the_same_events_after_restore() {
    let tag = "fanotify_groups_report_the_same_events_after_restore";
    let ctx = Ctx::new(tag);
    let (ref_dir, run_dir) = (ctx.path("ref"), ctx.path("run"));
    let _mounts = (Tmpfs::new(&ref_dir), Tmpfs::new(&run_dir));
    let mut rp = ctx.spawn(&spec(&ref_dir));
    let mut t = ctx.spawn(&spec(&run_dir));
    t.wait_for("step 3\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("fanotify.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let mut output = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&[pid], tag);
    assert_has_kinds(&ctx, &img, &["Fanotify"], tag);

    // The image holds both groups' marks, each by a path.
    let j = ctx.inspect_json(&img);
    let procs = j["processes"].as_array().cloned().unwrap_or_default();
    let root = procs
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("{tag}: no process {pid} in the image"));
    let marks: Vec<(u64, String)> = root["fds"]
        .as_array()
        .into_iter()
        .flatten()
        // (fd 5 shares fd 3's description: it is made from that one)
        .filter(|f| f["shared_with"].is_null())
        .filter_map(|f| f["kind"]["Fanotify"]["marks"].as_array())
        .flatten()
        .map(|m| {
            // bytes, as a string or an array of numbers
            let path = m["path"].as_str().map_or_else(
                || {
                    let b: Vec<u8> = m["path"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|b| b.as_u64().map(|b| b as u8))
                        .collect();
                    String::from_utf8_lossy(&b).into_owned()
                },
                str::to_string,
            );
            (m["on"].as_u64().unwrap_or(99), path)
        })
        .collect();
    let run = run_dir.display().to_string();
    let want = [
        (0, format!("{run}/watched")),
        (0x10, run.clone()),
        (0, format!("{run}/other")),
        (0x100, run.clone()),
    ];
    for w in &want {
        assert!(
            marks.contains(w),
            "{tag}: the image should hold the mark {w:?}: {marks:?}"
        );
    }
    assert_eq!(marks.len(), 4, "{tag}: four marks in {marks:?}");

    // A restore failing as it makes a group or sets a mark leaves nothing behind.
    for step in ["fanotify_init", "fanotify_mark("] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &[pid], &[rp.pid]);
    }
    let fin = ctx.restore(&img, &[], In::Null).finish();
    output.extend(&fin.stdout);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert!(
        text(&reference.stdout).contains("  g1 mask 0x2a file /watched\n")
            && text(&reference.stdout).contains("  g2 mask 0x300 name n-8\n"),
        "{tag}: the reference run should report events:\n{}",
        text(&reference.stdout)
    );
    assert_restored_run_same(tag, "step 3", &reference, &output, &fin);
    assert_no_process(pid, tag);
}

/// Events queued and not read cannot be queued again: refused, naming the descriptor,
/// and the process runs on to its end.
#[test]
fn dump_refuses_a_fanotify_group_with_unread_events() {
    let tag = "dump_refuses_a_fanotify_group_with_unread_events";
    let ctx = Ctx::new(tag);
    let dir = ctx.path("run");
    let _mount = Tmpfs::new(&dir);
    let spec = Spec::new(target("fanotify"))
        .arg(&dir)
        .arg("20")
        .arg("sleep=20")
        .arg("queued");
    let mut t = ctx.spawn(&spec);
    t.wait_for("step 1\n");
    let pid = t.pid;
    ctx.track(pid);
    let img = ctx.path("img");
    let r = ctx.try_dump(pid, &img);
    r.assert_fails(1);
    let want = [
        format!("cannot dump process {pid}: file descriptor 3 is a fanotify group with "),
        "bytes of events not read yet (they cannot be queued again) (anon_inode:[fanotify]); \
         not supported yet"
            .to_string(),
    ];
    for w in &want {
        assert!(
            r.stderr.contains(w.as_str()),
            "{tag}: the refusal should say {w:?}; stderr:\n{}",
            r.stderr
        );
    }
    assert!(!img.exists(), "{tag}: failed dump created the image");
    assert_running_untraced(pid, tag);
    let fin = t.finish();
    assert!(
        text(&fin.stdout).ends_with("step 20\ndone\n"),
        "{tag}: the target should run to its end:\n{}",
        text(&fin.stdout)
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: the target's exit status"
    );
}
