//! Helpers shared by `e2e_more.rs` and `e2e_apps.rs`: dump, restore and compare a run;
//! what an image or /proc says of descriptors.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::*;

/// Length of a byte string of `inspect --json` (serde_bytes: an array of numbers, or
/// a string).
pub fn json_bytes_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::String(s) => s.len(),
        _ => 0,
    }
}

/// Where the symlinks of `/proc/PID/fd/` lead (pipes left out).
pub fn fd_links(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                // fds 0-2 are pipes of the harness, other pipes after restore
                .filter(|l| !l.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Start `spec` alongside its reference run (`rspec`), dump it after `k` lines (which kills it),
/// restore it (calling `while_restored` with the restored root's pid once it printed
/// `k + 1` lines in all), and compare its whole output and exit status with the
/// reference. `want_kinds`: descriptor kinds the image must hold. Returns the image.
pub fn dump_restore_compare(
    ctx: &Ctx,
    rspec: &Spec,
    spec: &Spec,
    k: usize,
    want_kinds: &[&str],
    tag: &str,
    while_restored: &mut dyn FnMut(i32),
) -> PathBuf {
    let mut rp = ctx.spawn(rspec);
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let pid = t.pid;
    let tree = process_tree(pid);
    for &p in &tree {
        ctx.track(p);
    }
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish(&format!("{tag}: original"));
    wait_pids_gone(&tree, tag);
    assert_has_kinds(ctx, &img, want_kinds, tag);

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    while_restored(pid);
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        &format!("{tag} (dumped after {} lines, restored)", k),
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        text(&fin.stderr)
    );
    for p in tree {
        assert_no_process(p, tag);
    }
    img
}
