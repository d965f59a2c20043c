//! The test targets themselves: they build, and two uninterrupted runs print the same
//! bytes (the end-to-end tests compare a checkpointed run against an uninterrupted one,
//! which only means something if the output is deterministic). No ckpt involved.

mod common;

use std::fs;

use common::*;

/// Run `spec` twice (with `prepare` before each run) and assert identical output.
fn twice(ctx: &Ctx, spec: &Spec, prepare: impl Fn()) -> Finished {
    prepare();
    let a = ctx.reference(spec);
    prepare();
    let b = ctx.reference(spec);
    assert_same_output(&format!("{spec:?}"), &a.stdout, &b.stdout);
    assert_eq!(a.status.code(), b.status.code());
    assert!(
        a.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    a
}

#[test]
fn counter_is_deterministic_and_checks_itself() {
    let ctx = Ctx::new("targets_counter");
    for bin in ["counter", "counter-static"] {
        let spec = counter_spec(&ctx, bin, 40, &["sleep=0", "madv-guard"]);
        let f = twice(&ctx, &spec, || {});
        assert_eq!(f.status.code(), Some(3), "counter exits with 3");
        let out = String::from_utf8_lossy(&f.stdout);
        let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
        assert_eq!(steps.len(), 40, "{out}");
        for l in steps {
            assert!(l.contains(" guard=ok "), "{l}");
            assert!(l.ends_with(" pid=same"), "{l}");
            assert!(!l.contains("BROKEN"), "{l}");
        }
        assert!(out.contains("file on disk unchanged\ndone\n"), "{out}");
    }
}

#[test]
fn counter_static_has_no_interpreter() {
    let bin = fs::read(target("counter-static")).expect("read counter-static");
    assert_eq!(&bin[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bin[p..p + 4].try_into().unwrap());
        assert_ne!(
            p_type, 3,
            "counter-static has a PT_INTERP: it is not static"
        );
    }
    let dynamic = fs::read(target("counter")).expect("read counter");
    assert!(
        dynamic.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "counter should be dynamically linked"
    );
}

#[test]
fn signals_is_deterministic() {
    let ctx = Ctx::new("targets_signals");
    let spec = signals_spec(12, 3, 8, 1);
    let run = || {
        let mut p = ctx.spawn(&spec);
        let pid = p.pid;
        drive_signals(&mut p, pid, false, false)
    };
    let a = run();
    let b = run();
    assert_same_output("signals", &a.stdout, &b.stdout);
    assert_eq!(a.status.code(), Some(0));
    let out = String::from_utf8_lossy(&a.stdout);
    assert!(out.contains("usr1=1(signo=10 code=0 onstack=1)"), "{out}");
    assert!(out.contains("end usr2 handled=1"), "{out}");
    // SIGUSR2 (bit 11) and SIGWINCH (bit 27) pending after the wait for SIGUSR2.
    assert!(out.contains("pending=8000800"), "{out}");
}

#[test]
fn files_is_deterministic() {
    let ctx = Ctx::new("targets_files");
    let dir = files_dir(&ctx);
    let spec = Spec::new(target("files"))
        .arg(&dir)
        .arg("20")
        .arg("sleep=0");
    let mut logs = Vec::new();
    for _ in 0..2 {
        files_dir(&ctx);
        let f = ctx.reference(&spec);
        assert_eq!(f.status.code(), Some(0));
        logs.push((
            f.stdout,
            fs::read(dir.join("log.txt")).unwrap(),
            fs::read(dir.join("data.bin")).unwrap(),
        ));
    }
    assert_same_output("files stdout", &logs[0].0, &logs[1].0);
    assert_same_output("files log.txt", &logs[0].1, &logs[1].1);
    assert_same_output("files data.bin", &logs[0].2, &logs[1].2);
    let out = String::from_utf8_lossy(&logs[0].0);
    assert!(out.contains(&format!("cwd {}\n", dir.display())), "{out}");
    assert!(out.contains("umask 0027\n"), "{out}");
    // Exactly the six fds files.c opens: 3-7 and 40 (nothing leaked in from the harness).
    let fds: Vec<&str> = out.lines().filter(|l| l.starts_with("fd ")).collect();
    assert_eq!(fds.len(), 6, "{out}");
    assert!(
        fds[5].starts_with("fd 40 ") && fds[5].contains("cloexec=1"),
        "{out}"
    );
}

#[test]
fn blocked_read_is_deterministic() {
    let ctx = Ctx::new("targets_blocked_read");
    let spec = Spec::new(target("blocked_read")).stdin(In::Pipe);
    let run = || {
        let mut p = ctx.spawn(&spec);
        p.write_stdin(b"alpha\nbeta\n");
        p.wait_lines(2);
        p.write_stdin(b"gamma\ndel");
        p.write_stdin(b"ta\nepsilon");
        p.close_stdin();
        p.finish()
    };
    let a = run();
    let b = run();
    assert_same_output("blocked_read", &a.stdout, &b.stdout);
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        "1: alpha\n2: beta\n3: gamma\n4: delta\npartial last line: epsilon\neof after 4 lines\n"
    );
}

#[test]
fn fdkind_is_deterministic_for_every_kind() {
    let ctx = Ctx::new("targets_fdkind");
    for kind in [
        "pipe",
        "socketpair",
        "inotify",
        "eventfd",
        "timerfd",
        "signalfd",
        "epoll",
        "memfd",
        "pidfd",
    ] {
        let spec = Spec::new(target("fdkind"))
            .arg(kind)
            .arg("5")
            .arg("sleep=0");
        let f = twice(&ctx, &spec, || {});
        assert_eq!(f.status.code(), Some(0), "{kind}");
        assert!(
            String::from_utf8_lossy(&f.stdout).starts_with(&format!("holding {kind} as fd")),
            "{kind}"
        );
    }
}

#[test]
fn python_loop_is_deterministic() {
    let ctx = Ctx::new("targets_python");
    let f = twice(&ctx, &python_spec(30, 0.0), || {});
    assert_eq!(f.status.code(), Some(0));
    let out = String::from_utf8_lossy(&f.stdout);
    assert_eq!(out.lines().count(), 31, "{out}");
    assert!(out.ends_with("done sum=9455\n"), "{out}");
}

/// The harness's own comparison helpers (so a passing end-to-end test means something).
#[test]
fn harness_comparisons_name_what_differs() {
    let a: serde_json::Value = serde_json::json!({
        "info": { "created_unix": 1, "root_pid": 7 },
        "processes": [{
            "pid": 7, "ppid": 1,
            "fds": [{ "fd": 0, "kind": { "Inherited": { "what": "pipe:[1]" } } }],
            "threads": [{ "sigmask": 0, "arch": { "xsave": [0, 0, 1] } }]
        }]
    });
    let mut b = a.clone();
    b["info"]["created_unix"] = 2.into();
    b["processes"][0]["ppid"] = 99.into();
    b["processes"][0]["fds"][0]["kind"]["Inherited"]["what"] = "pipe:[2]".into();
    assert!(json_diff(&a, &b, LEGIT_IMAGE_DIFFS).is_empty());
    b["processes"][0]["threads"][0]["sigmask"] = 4.into();
    b["processes"][0]["threads"][0]["arch"]["xsave"][2] = 3.into();
    let d = json_diff(&a, &b, LEGIT_IMAGE_DIFFS);
    assert_eq!(
        d,
        vec![
            "processes[0].threads[0].arch.xsave[2]: 1 vs 3".to_string(),
            "processes[0].threads[0].sigmask: 0 vs 4".to_string(),
        ]
    );
    let d = json_diff(&a, &b, &["processes.[*].threads.*.arch", "**.sigmask"]);
    assert!(d.iter().all(|l| !l.contains("threads")), "{d:?}");
    b["processes"][0]["extra"] = true.into();
    let mut ignore = LEGIT_IMAGE_DIFFS.to_vec();
    ignore.push("**.threads");
    let d = json_diff(&a, &b, &ignore);
    assert_eq!(d, vec!["processes[0].extra: (absent) vs true".to_string()]);

    let r = diff_report(b"a\nb\nc\n", b"a\nB\nc\n");
    assert!(
        r.contains("line 2") && r.contains(">>    2 | b") && r.contains(">>    2 | B"),
        "{r}"
    );

    let reference = b"1\n2\n3\n4\n";
    assert_continues_from_dump("ok", reference, b"1\n2\n3\n", b"3\n4\n", 4);
    for (orig, restored, min) in [
        (&b"1\n2\n"[..], &b"1\n2\n3\n4\n"[..], 4), // restarted from the beginning
        (b"1\n2\n", b"4\n", 4),                    // skipped a line
        (b"1\n2\n", b"x\n4\n", 4),                 // wrong output
    ] {
        let caught = std::panic::catch_unwind(|| {
            assert_continues_from_dump("bad", reference, orig, restored, min)
        });
        assert!(caught.is_err(), "{restored:?} should be refused");
    }
}
