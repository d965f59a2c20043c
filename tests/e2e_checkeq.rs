//! `check` is restore minus the commit (issue 13): an image `ckpt check` accepts is never
//! refused by `ckpt restore` on the same host.
//!
//! Real images of small targets are dumped, then changed in many ways through the public
//! `image`/`model` API (decoded, edited, encoded again behind valid checksums, so that they
//! pass the format layer): registers, scheduling, memory areas, offsets, page records,
//! file contents. For each, if `check` says it can be restored, a real restore (into a new
//! PID namespace) must get past its point of no return. Needs root.

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use ckpt::image::{FLAG_REQUIRED, ImageReader, ImageWriter, decode_meta, tag};
use ckpt::model::{Checkpoint, FdKind, VmaKind};
use common::*;

/// One record after the metadata.
#[derive(Clone)]
struct Rec {
    tag: u32,
    arg: u64,
    payload: Vec<u8>,
}

#[derive(Clone)]
struct Img {
    cp: Checkpoint,
    recs: Vec<Rec>,
}

fn read_image(path: &Path) -> Img {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut r = ImageReader::new(&bytes[..]).expect("image header");
    let first = r
        .next_record()
        .expect("metadata")
        .expect("a metadata record");
    assert_eq!(first.tag, tag::CHECKPOINT);
    let cp: Checkpoint = decode_meta(first.tag, first.payload).expect("decode metadata");
    let mut recs = Vec::new();
    while let Some(rec) = r.next_record().expect("record") {
        if rec.tag == tag::END {
            break;
        }
        recs.push(Rec {
            tag: rec.tag,
            arg: rec.arg,
            payload: rec.payload.to_vec(),
        });
    }
    Img { cp, recs }
}

fn write_image(img: &Img, path: &Path) {
    let mut w = ImageWriter::new(Vec::new()).expect("writer");
    w.write_meta(tag::CHECKPOINT, &img.cp).expect("metadata");
    for r in &img.recs {
        w.write_record(r.tag, FLAG_REQUIRED, r.arg, &r.payload, r.tag == tag::PAGES)
            .expect("record");
    }
    fs::write(path, w.finish().expect("finish")).expect("write image");
}

/// What became of one changed image.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// `check` found a problem.
    CheckRefused,
    /// `check` accepted it and restore got past its point of no return.
    Restored,
    /// `check` accepted it, restore refused it: the bug this test is about.
    RestoreRefused(String),
}

fn view() -> ckpt::restore::HostView {
    let mut v = ckpt::restore::HostView::detect(None, ckpt::arch::CpuPolicy::Compatible)
        .expect("host view");
    v.new_pid_namespace = true;
    v
}

fn check_ok(path: &Path) -> bool {
    let f = fs::File::open(path).expect("open image");
    match ckpt::restore::check(f, &view()) {
        Ok(r) => r.problems.is_empty(),
        Err(_) => false,
    }
}

/// Kill a restored tree: its root (the PID printed) and the init of its namespace.
fn kill_restored(ctx: &Ctx, root: i32) {
    // (A root that died at once is printed as 0: kill(0) would hit our process group.)
    if root <= 1 {
        return;
    }
    let init = proc_stat(root).map(|(_, ppid)| ppid);
    send_signal(root, libc::SIGKILL);
    if let Some(i) = init.filter(|i| *i > 1 && *i != my_pid()) {
        send_signal(i, libc::SIGKILL);
    }
    ctx.track(root);
}

fn outcome(ctx: &Ctx, path: &Path) -> Outcome {
    if !check_ok(path) {
        return Outcome::CheckRefused;
    }
    let r = ctx.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("--new-pidns"),
        OsStr::new("--detach"),
        path.as_os_str(),
    ]);
    if r.code() == Some(0) {
        if let Ok(pid) = r.stdout_text().trim().parse::<i32>() {
            kill_restored(ctx, pid);
        }
        Outcome::Restored
    } else {
        Outcome::RestoreRefused(r.stderr.clone())
    }
}

type Mutation = (String, Box<dyn Fn(&mut Img) -> bool>);

fn m(name: &str, f: impl Fn(&mut Img) -> bool + 'static) -> Mutation {
    (name.to_string(), Box::new(f))
}

/// A segment register of a register set.
type SegField = fn(&mut ckpt::arch::Regs) -> &mut u64;

/// Changes to the first thread's state.
fn thread_mutations() -> Vec<Mutation> {
    let mut out = Vec::new();
    let segs: [(&str, SegField); 6] = [
        ("cs", |r| &mut r.cs),
        ("ss", |r| &mut r.ss),
        ("ds", |r| &mut r.ds),
        ("es", |r| &mut r.es),
        ("fs", |r| &mut r.fs),
        ("gs", |r| &mut r.gs),
    ];
    for (name, field) in segs {
        for v in [0u64, 1, 0x30, 0x12, 0x1_0002, 0x2b, 0xffff] {
            out.push(m(&format!("{name}={v:#x}"), move |i| {
                *field(&mut i.cp.processes[0].threads[0].arch.regs) = v;
                true
            }));
        }
    }
    for v in [
        1u64 << 63,
        0x8000_0000_0000,
        0x7fff_ffff_f000,
        0x7fff_ffff_e000,
    ] {
        out.push(m(&format!("fs_base={v:#x}"), move |i| {
            i.cp.processes[0].threads[0].arch.regs.fs_base = v;
            true
        }));
        out.push(m(&format!("gs_base={v:#x}"), move |i| {
            i.cp.processes[0].threads[0].arch.regs.gs_base = v;
            true
        }));
    }
    for (pol, prio, nice) in [
        (77, 0, 0),
        (6, 0, 0),
        (-1, 0, 0),
        (1, 0, 0),
        (1, 100, 0),
        (2, 50, 0),
        (0, 5, 0),
        (3, 1, 0),
        (5, 0, 0),
        (0x4000_0000, 0, 0),
        (0, 0, 40),
        (0, 0, -50),
        (0, 0, 19),
    ] {
        out.push(m(&format!("sched {pol}/{prio}/{nice}"), move |i| {
            let t = &mut i.cp.processes[0].threads[0];
            t.sched_policy = pol;
            t.sched_priority = prio;
            t.nice = nice;
            true
        }));
    }
    out
}

/// Changes to memory areas and page records.
fn memory_mutations() -> Vec<Mutation> {
    let mut out = Vec::new();
    out.push(m("a page record twice", |i| {
        let Some(at) = i.recs.iter().position(|r| r.tag == tag::PAGES) else {
            return false;
        };
        let r = i.recs[at].clone();
        i.recs.insert(at + 1, r);
        true
    }));
    out.push(m("a page record's first page again at the end", |i| {
        let Some(at) = i.recs.iter().rposition(|r| r.tag == tag::PAGES) else {
            return false;
        };
        let Some(first) = i.recs.iter().find(|r| r.tag == tag::PAGES).cloned() else {
            return false;
        };
        let page = Rec {
            tag: tag::PAGES,
            arg: first.arg,
            payload: first.payload[..4096].to_vec(),
        };
        i.recs.insert(at + 1, page);
        true
    }));
    out.push(m("page records overlapping by a page", |i| {
        // Two pages of a record that has more than one written again, shifted by one.
        let Some(r) = i
            .recs
            .iter()
            .find(|r| r.tag == tag::PAGES && r.payload.len() >= 2 * 4096)
            .cloned()
        else {
            return false;
        };
        let at = i
            .recs
            .iter()
            .rposition(|x| x.tag == tag::PAGES)
            .unwrap_or(0);
        i.recs.insert(
            at + 1,
            Rec {
                tag: tag::PAGES,
                arg: r.arg + 4096,
                payload: r.payload[..4096].to_vec(),
            },
        );
        true
    }));
    for off in [1u64 << 62, 0x7fff_ffff_ffff_f000, !0xfffu64] {
        out.push(m(&format!("file area offset {off:#x}"), move |i| {
            let Some(v) = i.cp.processes[0]
                .vmas
                .iter_mut()
                .find(|v| matches!(v.kind, VmaKind::File { .. }))
            else {
                return false;
            };
            v.offset = off;
            true
        }));
        out.push(m(&format!("anonymous area offset {off:#x}"), move |i| {
            let Some(v) = i.cp.processes[0]
                .vmas
                .iter_mut()
                .find(|v| matches!(v.kind, VmaKind::Anon))
            else {
                return false;
            };
            v.offset = off;
            true
        }));
    }
    out
}

/// Changes to memfds, deleted files and their contents.
fn file_mutations() -> Vec<Mutation> {
    let mut out = Vec::new();
    out.push(m("no FILE_DATA at all", |i| {
        let n = i.recs.len();
        i.recs.retain(|r| r.tag != tag::FILE_DATA);
        i.recs.len() != n
    }));
    out.push(m("the first file's FILE_DATA dropped", |i| {
        let Some(first) = i
            .recs
            .iter()
            .find(|r| r.tag == tag::FILE_DATA)
            .map(|r| r.arg)
        else {
            return false;
        };
        i.recs
            .retain(|r| !(r.tag == tag::FILE_DATA && r.arg == first));
        true
    }));
    out.push(m("the last file's FILE_DATA dropped", |i| {
        let Some(last) = i
            .recs
            .iter()
            .rev()
            .find(|r| r.tag == tag::FILE_DATA)
            .map(|r| r.arg)
        else {
            return false;
        };
        i.recs
            .retain(|r| !(r.tag == tag::FILE_DATA && r.arg == last));
        true
    }));
    for pos in [1u64 << 63, u64::MAX, 1 << 62, 1 << 50] {
        out.push(m(&format!("memfd position {pos:#x}"), move |i| {
            let mut hit = false;
            for f in i.cp.processes.iter_mut().flat_map(|p| p.fds.iter_mut()) {
                if let FdKind::Memfd { pos: p, .. } = &mut f.kind {
                    *p = pos;
                    hit = true;
                }
            }
            hit
        }));
        out.push(m(&format!("deleted file position {pos:#x}"), move |i| {
            let mut hit = false;
            for f in i.cp.processes.iter_mut().flat_map(|p| p.fds.iter_mut()) {
                if let FdKind::DeletedFile { pos: p, .. } = &mut f.kind {
                    *p = pos;
                    hit = true;
                }
            }
            hit
        }));
    }
    for seals in [0xffffu32, 0x100, 0x2] {
        out.push(m(&format!("memfd seals {seals:#x}"), move |i| {
            let mut hit = false;
            for f in i.cp.processes.iter_mut().flat_map(|p| p.fds.iter_mut()) {
                if let FdKind::Memfd { seals: s, .. } = &mut f.kind {
                    *s = seals;
                    hit = true;
                }
            }
            hit
        }));
    }
    out.push(m("memfd name of 300 bytes", |i| {
        let mut hit = false;
        for f in i.cp.processes.iter_mut().flat_map(|p| p.fds.iter_mut()) {
            if let FdKind::Memfd { name, .. } = &mut f.kind {
                *name = vec![b'n'; 300];
                hit = true;
            }
        }
        hit
    }));
    out.push(m("memfd data id changed", |i| {
        let mut hit = false;
        for f in i.cp.processes.iter_mut().flat_map(|p| p.fds.iter_mut()) {
            if let FdKind::Memfd { data, .. } = &mut f.kind {
                *data ^= 0x5555;
                hit = true;
            }
        }
        hit
    }));
    out
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Random values in the fields above (small, at the edges, and anything).
fn random_mutations(seed: u64, n: usize) -> Vec<Mutation> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for k in 0..n {
        let raw = rng.next();
        let v = match rng.next() % 4 {
            0 => raw & 0xffff,
            1 => raw & 0xff,
            2 => 1u64 << (raw % 64),
            _ => raw,
        };
        let field = rng.next() % 12;
        out.push(m(
            &format!("random #{k}: field {field} = {v:#x}"),
            move |i| {
                let t = &mut i.cp.processes[0].threads[0];
                let r = &mut t.arch.regs;
                match field {
                    0 => r.cs = v,
                    1 => r.ss = v,
                    2 => r.ds = v,
                    3 => r.es = v,
                    4 => r.fs = v,
                    5 => r.gs = v,
                    6 => r.fs_base = v,
                    7 => r.gs_base = v,
                    8 => t.sched_policy = v as i32,
                    9 => t.sched_priority = v as i32,
                    10 => t.nice = v as i32,
                    _ => {
                        let Some(a) = i.cp.processes[0]
                            .vmas
                            .iter_mut()
                            .find(|a| matches!(a.kind, VmaKind::File { .. } | VmaKind::Anon))
                        else {
                            return false;
                        };
                        a.offset = v & !0xfff;
                    }
                }
                true
            },
        ));
    }
    out
}

/// Apply every mutation to `base`; returns the names of those check accepted and restore
/// refused, and how many check accepted.
fn run_all(ctx: &Ctx, base: &Img, label: &str, muts: &[Mutation]) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut accepted = 0;
    for (k, (name, f)) in muts.iter().enumerate() {
        let mut img = base.clone();
        if !f(&mut img) {
            continue;
        }
        let path = ctx.path(&format!("{label}-{k}.img"));
        write_image(&img, &path);
        match outcome(ctx, &path) {
            Outcome::CheckRefused => {
                let _ = fs::remove_file(&path);
            }
            Outcome::Restored => {
                accepted += 1;
                let _ = fs::remove_file(&path);
            }
            Outcome::RestoreRefused(why) => {
                accepted += 1;
                eprintln!("{label}: {name}: check accepted it, restore refused: {why}");
                bad.push(format!("{label}: {name}"));
            }
        }
    }
    (bad, accepted)
}

#[test]
fn every_image_check_accepts_is_restored() {
    let ctx = Ctx::new("every_image_check_accepts_is_restored");

    // counter-static: registers, scheduling, memory areas, page records.
    let map = ctx.path("map.bin");
    write_pattern_file(&map, 3 * 4096 + 100, 7);
    let mut t = ctx.spawn(
        &Spec::new(target("counter-static"))
            .arg("100000")
            .arg(&map)
            .arg("sleep=30"),
    );
    t.wait_lines(3);
    let img = ctx.path("counter.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let counter = read_image(&img);
    assert!(
        check_ok(&img),
        "the unchanged counter image must pass check"
    );

    // memfd: memfds and deleted files, their contents and positions.
    let dir = ctx.path("memfd-dir");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut t = ctx.spawn(
        &Spec::new(target("memfd"))
            .arg("100000")
            .arg(&dir)
            .arg("sleep=30"),
    );
    t.wait_lines(3);
    let mimg = ctx.path("memfd.img");
    ctx.dump(t.pid, &mimg);
    t.expect_killed();
    let memfd = read_image(&mimg);
    assert!(check_ok(&mimg), "the unchanged memfd image must pass check");

    // The unchanged images restore.
    assert_eq!(
        outcome(&ctx, &img),
        Outcome::Restored,
        "unchanged counter image"
    );
    assert_eq!(
        outcome(&ctx, &mimg),
        Outcome::Restored,
        "unchanged memfd image"
    );

    let mut muts = thread_mutations();
    muts.extend(memory_mutations());
    muts.extend(random_mutations(0x13, 60));
    let (mut bad, mut accepted) = run_all(&ctx, &counter, "counter", &muts);
    let mut fmuts = file_mutations();
    fmuts.extend(memory_mutations());
    let (b, a) = run_all(&ctx, &memfd, "memfd", &fmuts);
    bad.extend(b);
    accepted += a;
    let total = muts.len() + fmuts.len();
    eprintln!(
        "{total} mutations: check accepted {accepted}, restore refused {} of them",
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "check accepted, restore refused {} image(s):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}
