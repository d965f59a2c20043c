//! End-to-end tests of mapped memfds and mapped deleted files: a memfd mapped shared
//! twice and privately once with its descriptor open, a deleted file mapped shared and privately after its
//! descriptor was closed, and a fork child sharing the memfd mapping. After restore,
//! writes through one view must show through the others (the same file behind every
//! mapping and descriptor), and private pages keep their own content. The whole output
//! is compared with an uninterrupted run's; restores made to fail at the new steps leave
//! nothing behind (no process, no recreated file).
//!
//! The target is `tests/targets/memmap.c`. Needs root. Run with cargo-nextest.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const STEPS: u32 = 40;

fn spec_in(ctx: &Ctx, sub: &str) -> (Spec, PathBuf) {
    let d = ctx.path(sub);
    fs::create_dir_all(&d).expect("mkdir");
    (
        Spec::new(target("memmap"))
            .arg(STEPS.to_string())
            .arg(&d)
            .arg("sleep=40"),
        d,
    )
}

fn dir_entries(d: &Path) -> BTreeSet<String> {
    fs::read_dir(d)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()))
        .map(|e| {
            e.expect("read_dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The mappings of a memfd or a deleted file in /proc/PID/maps: address range,
/// permissions, offset and name.
fn kept_maps(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/memfd:") || l.ends_with("(deleted)"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[2], f[5..].join(" "))
        })
        .collect()
}

/// The VMA kinds the image holds (inspect --json).
fn vma_kinds(ctx: &Ctx, img: &Path) -> BTreeSet<String> {
    let j = ctx.inspect_json(img);
    let mut out = BTreeSet::new();
    for p in j["processes"].as_array().into_iter().flatten() {
        for v in p["vmas"].as_array().into_iter().flatten() {
            match &v["kind"] {
                serde_json::Value::String(s) => out.insert(s.clone()),
                serde_json::Value::Object(o) => out.insert(o.keys().cloned().collect()),
                _ => false,
            };
        }
    }
    out
}

/// Run the target, dump it mid-run (the tree is killed); returns the image, the PIDs,
/// the output before the dump, the maps of the root before it, and the run directory.
fn dump_memmap(ctx: &Ctx) -> (PathBuf, Vec<i32>, Vec<u8>, Vec<String>, PathBuf) {
    let (spec, dir) = spec_in(ctx, "run");
    let mut t = ctx.spawn(&spec);
    t.wait_lines(10);
    let pid = t.pid;
    let pids = wait_process_tree(pid, 2, "memmap");
    let maps = kept_maps(pid);
    assert_eq!(
        maps.len(),
        5,
        "memmap: expected five mappings of a memfd or deleted file: {maps:?}"
    );
    let img = ctx.path("memmap.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("memmap: original");
    wait_pids_gone(&pids, "memmap");
    let kinds = vma_kinds(ctx, &img);
    for k in ["MemfdMap", "DeletedMap"] {
        assert!(kinds.contains(k), "memmap: no {k} mapping in {kinds:?}");
    }
    assert_eq!(
        dir_entries(&dir),
        BTreeSet::new(),
        "memmap: files after dump"
    );
    (img, pids, before, maps, dir)
}

#[test]
fn mapped_memfd_and_deleted_file_stay_shared_after_restore() {
    let ctx = Ctx::new("mapped_memfd_and_deleted_file_stay_shared_after_restore");
    let (rspec, _) = spec_in(&ctx, "ref");
    let mut rp = ctx.spawn(&rspec);
    let (img, pids, before, maps, dir) = dump_memmap(&ctx);

    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    // The same mappings at the same places, of a memfd named "shm" and of the deleted
    // mapped.bin; ckpt's temporary copy of the deleted file is gone again.
    assert_eq!(
        kept_maps(pids[0]),
        maps,
        "memmap: mappings after restore (right) differ from before the dump (left)"
    );
    assert_eq!(
        dir_entries(&dir),
        BTreeSet::new(),
        "memmap: files after restore"
    );
    let fin = r.finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "memmap: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_same_output(
        "memmap (dumped mid-run, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "memmap: restored run; stderr:\n{}",
        text(&fin.stderr)
    );
}

#[test]
fn failed_restores_of_mapped_files_leave_nothing_behind() {
    let ctx = Ctx::new("failed_restores_of_mapped_files_leave_nothing_behind");
    let (img, pids, _, _, dir) = dump_memmap(&ctx);
    // Before the files exist, while they are made, after they were mapped and filled.
    for fault in [
        "recreate memfd",
        "recreate deleted file",
        "take a recreated file",
        "open /proc/",
        "write pages",
        "set registers",
    ] {
        let what = format!("memmap: restore failing at {fault:?}");
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &pids, &[]);
        assert_eq!(
            dir_entries(&dir),
            BTreeSet::new(),
            "{what}: files left behind"
        );
    }
    // And the image still restores.
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "memmap: restore after the failed ones; stderr:\n{}",
        text(&fin.stderr)
    );
}
