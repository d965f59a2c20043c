//! `check` = restore minus the commit, for what stage sets in each thread and process
//! from outside its memory: a well-formed image whose sigaltstack, robust futex list,
//! rseq area or xsave state, or whose parent-death signal, personality or umask the
//! kernel would refuse (or take for something else) at stage is refused by plan already,
//! so `ckpt check` says so (exit 1, naming the thread or process) instead of "can be
//! restored"; and file data extents (`FILE_EXTENTS`) that make no sense are refused by
//! `check` too.

mod common;

use ckpt::image::{FLAG_REQUIRED, ImageWriter, tag};
use ckpt::model::*;
use common::hostile::*;
use common::*;

fn view() -> ckpt::restore::HostView {
    ckpt::restore::HostView {
        host: ckpt::arch::HostCaps::detect(),
        policy: ckpt::arch::CpuPolicy::default(),
        new_pid_namespace: false,
        inherit: vec![],
        join_ns: Vec::new(),
        cgroup_root: None,
        cgroup_mode: Default::default(),
        cgroup_limits: Default::default(),
    }
}

/// `ckpt check` of `bytes`: (exit code, stderr).
fn cli_check(ctx: &Ctx, name: &str, bytes: &[u8]) -> (Option<i32>, String) {
    let p = ctx.path(name);
    std::fs::write(&p, bytes).expect("write image");
    let r = ctx.check(&p);
    (r.code(), r.stderr.clone())
}

#[test]
fn thread_state_the_kernel_would_refuse_is_refused_by_check() {
    let ctx = Ctx::new("thread_state_the_kernel_would_refuse_is_refused_by_check");
    let base = checkpoint();
    let messages = |cp: &Checkpoint| -> Vec<String> {
        ckpt::restore::problems(cp.clone(), &view())
            .into_iter()
            .map(|p| p.message)
            .collect()
    };
    let before = messages(&base);
    type Change = fn(&mut Thread);
    let cases: &[(&str, &str, Change)] = &[
        ("sigaltstack flags", "sigaltstack flags 0x4", |t| {
            t.sigaltstack = SigAltStack {
                sp: 0x7ffc_0000_0000,
                flags: 4,
                size: 8192,
            }
        }),
        ("sigaltstack size", "less than MINSIGSTKSZ", |t| {
            t.sigaltstack = SigAltStack {
                sp: 0x7ffc_0000_0000,
                flags: 0,
                size: 1024,
            }
        }),
        ("robust list length", "robust futex list length 16", |t| {
            t.robust_list_len = 16
        }),
        ("rseq alignment", "aligned to 32", |t| {
            if let Some(r) = t.rseq.as_mut() {
                r.addr += 4
            }
        }),
        ("rseq length", "of 16 bytes", |t| {
            if let Some(r) = t.rseq.as_mut() {
                r.len = 16
            }
        }),
        (
            "rseq outside memory",
            "not inside a writable mapping",
            |t| {
                if let Some(r) = t.rseq.as_mut() {
                    r.addr = 0x7f00_0010_0000
                }
            },
        ),
        ("xsave component", "xsave", |t| {
            // A component no x86 CPU has (bit 62), in use.
            t.arch.xsave[512..520].copy_from_slice(&(0x7u64 | 1 << 62).to_le_bytes());
        }),
        ("xsave header", "XCOMP_BV", |t| {
            t.arch.xsave[520..528].copy_from_slice(&5u64.to_le_bytes());
        }),
        ("mxcsr", "MXCSR", |t| {
            t.arch.xsave[24..28].copy_from_slice(&0xffff_1f80u32.to_le_bytes());
        }),
    ];
    for (what, needle, change) in cases {
        assert!(
            !before.iter().any(|m| m.contains(needle)),
            "{what}: the unchanged image already has {needle:?}: {before:?}"
        );
        let mut cp = base.clone();
        change(&mut cp.processes[0].threads[0]);
        let after = messages(&cp);
        assert!(
            after.iter().any(|m| m.contains(needle)),
            "{what}: plan does not refuse it: {after:?}"
        );
        let (code, err) = cli_check(&ctx, "t.img", &image(&cp, false).bytes);
        assert_eq!(code, Some(1), "{what}: ckpt check: {err}");
        assert!(err.contains(needle), "{what}: ckpt check says: {err}");
    }
}

#[test]
fn process_attributes_the_kernel_would_refuse_are_refused_by_check() {
    let ctx = Ctx::new("process_attributes_the_kernel_would_refuse_are_refused_by_check");
    type Change = fn(&mut Process);
    let cases: &[(&str, Change)] = &[
        ("parent-death signal 99", |p| p.misc.pdeathsig = 99),
        ("personality 0xffffffff", |p| p.personality = u32::MAX),
        ("umask 7777", |p| p.umask = 0o7777),
        ("brk range", |p| p.mm.brk = p.mm.start_brk - 4096),
        ("lies outside", |p| p.mm.arg_start = 0),
    ];
    for (needle, change) in cases {
        let mut cp = checkpoint();
        change(&mut cp.processes[0]);
        let (code, err) = cli_check(&ctx, "p.img", &image(&cp, false).bytes);
        assert_eq!(code, Some(1), "{needle}: ckpt check: {err}");
        assert!(err.contains(needle), "{needle}: ckpt check says: {err}");
    }
}

#[test]
fn bad_file_extents_are_refused_by_check() {
    let ctx = Ctx::new("bad_file_extents_are_refused_by_check");
    let enc = |v: &[(u64, u64)]| -> Vec<u8> {
        v.iter()
            .flat_map(|(o, l)| o.to_le_bytes().into_iter().chain(l.to_le_bytes()))
            .collect()
    };
    // Without its ia32 thread (a watchpoint it has makes the image malformed, and check
    // reads no records of a malformed image).
    let mut cp = checkpoint();
    cp.processes[0].threads.truncate(1);
    let with_extents = |ext: Option<Vec<u8>>| {
        let mut w = ImageWriter::new(Vec::new()).unwrap();
        w.write_meta(tag::CHECKPOINT, &cp).unwrap();
        w.write_record(tag::FILE_DATA, FLAG_REQUIRED, 77, &[1; 8192], false)
            .unwrap();
        if let Some(e) = ext {
            w.write_record(tag::FILE_EXTENTS, 0, 77, &e, false).unwrap();
        }
        w.write_record(tag::PAGES_PID, FLAG_REQUIRED, 4242, &[], false)
            .unwrap();
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        w.write_pages(0x5555_5556_0000, &page).unwrap();
        w.finish().unwrap()
    };
    // Well-formed extents read like none at all: whatever else check finds, it is not
    // about them.
    let (_, ok) = cli_check(&ctx, "ok.img", &with_extents(Some(enc(&[(0, 4096)]))));
    assert!(!ok.contains("data extent"), "{ok}");
    for (what, e) in [
        ("past the end", enc(&[(4096, 8192)])),
        ("overlapping", enc(&[(0, 4096), (2048, 4096)])),
        ("empty", enc(&[(0, 0)])),
        ("a torn pair", vec![0; 12]),
    ] {
        let (code, err) = cli_check(&ctx, "bad.img", &with_extents(Some(e)));
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.contains("file 77") && err.contains("data extent"),
            "{what}: {err}"
        );
    }
}
