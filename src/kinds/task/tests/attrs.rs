//! Resource limits, auxv and name, root and working directories.

use crate::kinds::task::attrs::{
    check_auxv_comm, check_dirs, check_mm, check_oom_thp, check_prctl, check_randomization,
    check_rlimits, thp_disable,
};
use crate::kinds::testutil::*;
use crate::model::{Process, Rlimit};

fn limits(rl: &[(u32, u64, u64)]) -> Process {
    Process {
        rlimits: rl
            .iter()
            .map(|&(resource, cur, max)| Rlimit { resource, cur, max })
            .collect(),
        ..process(10)
    }
}

#[test]
fn resource_limits() {
    let p = limits(&[(0, 1, 2), (7, 1024, 1024), (15, 0, u64::MAX)]);
    assert_none(&run(|v| check_rlimits(&p, v)));
    for (bad, shown) in [
        ((16, 1, 1), "invalid resource limit 16 (1/1)"),
        ((7, 10, 10), "invalid resource limit 7 (10/10)"),
        ((3, 5, 4), "invalid resource limit 3 (5/4)"),
    ] {
        let p = limits(&[(7, 1, 1), bad]);
        let v = run(|v| check_rlimits(&p, v));
        assert_one(&v, "malformed", &["process 10:", shown]);
    }
}

#[test]
fn auxv_and_name_sizes() {
    let mut p = process(10);
    p.mm.auxv = vec![0; 128];
    p.comm = vec![b'a'; 64];
    assert_none(&run(|v| check_auxv_comm(&p, v)));
    let mut q = p.clone();
    q.mm.auxv.push(0);
    assert_one(
        &run(|v| check_auxv_comm(&q, v)),
        "malformed",
        &["invalid auxv or process name"],
    );
    p.comm.push(b'a');
    assert_one(
        &run(|v| check_auxv_comm(&p, v)),
        "malformed",
        &["invalid auxv or process name"],
    );
}

#[test]
fn root_and_working_directories() {
    let d = TempDir::new();
    let mut p = process(10);
    p.cwd = bytes(d.path());
    assert_none(&run(|v| {
        check_dirs(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v)
    }));
    p.cwd = bytes(&d.path().join("gone"));
    let v = run(|v| check_dirs(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_one(
        &v,
        "file-missing",
        &["working directory", "gone does not exist"],
    );
    // A file is no directory.
    p.cwd = b"/".to_vec();
    p.root = bytes(&d.file("f", b""));
    let v = run(|v| check_dirs(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_one(&v, "file-missing", &["root directory", "/f does not exist"]);
    p.cwd = bytes(&d.path().join("gone"));
    let v = run(|v| check_dirs(&mut crate::kinds::fd::file::HeldFiles::same_boot(), &p, v));
    assert_eq!(codes(&v), ["file-missing", "file-missing"], "{v:?}");
}

#[test]
fn oom_score_adj_and_thp_flags() {
    let mut p = process(10);
    assert_none(&run(|v| check_oom_thp(&p, v)));
    for (oom, thp) in [(Some(-1000), 1), (Some(1000), 3), (Some(500), 0)] {
        p.misc.oom_score_adj = oom;
        p.misc.thp_disable = thp;
        assert_none(&run(|v| check_oom_thp(&p, v)));
    }
    for (oom, thp, shown) in [
        (Some(1001), 0, "invalid oom_score_adj 1001"),
        (Some(-1001), 0, "invalid oom_score_adj -1001"),
        (None, 2, "invalid THP-disable flags 2"),
        (None, 5, "invalid THP-disable flags 5"),
    ] {
        p.misc.oom_score_adj = oom;
        p.misc.thp_disable = thp;
        let v = run(|v| check_oom_thp(&p, v));
        assert_one(&v, "malformed", &["process 10:", shown]);
    }
}

#[test]
fn thp_disable_as_the_kernel_tells_it() {
    assert_eq!(thp_disable(0).ok(), Some(0));
    assert_eq!(thp_disable(1).ok(), Some(1));
    assert_eq!(thp_disable(3).ok(), Some(3));
    for bad in [2, 5, -22] {
        assert!(thp_disable(bad).is_err(), "{bad}");
    }
}

#[test]
fn address_randomization_is_the_same_in_the_whole_tree_and_possible_here() {
    let with = |pid, r| Process {
        randomized: r,
        ..process(pid)
    };
    // Not recorded (older images, zombies): nothing to check.
    assert_none(&run(|v| check_randomization(&[with(10, None)], false, v)));
    for r in [true, false] {
        let tree = [with(10, Some(r)), with(11, None), with(12, Some(r))];
        assert_none(&run(|v| check_randomization(&tree, true, v)));
    }
    assert_none(&run(|v| {
        check_randomization(&[with(10, Some(false))], false, v)
    }));
    let v = run(|v| check_randomization(&[with(10, Some(true))], false, v));
    assert_one(&v, "unsupported", &["kernel.randomize_va_space is 0"]);
    let mixed = [with(10, Some(false)), with(11, Some(true))];
    let v = run(|v| check_randomization(&mixed, true, v));
    assert_one(
        &v,
        "unsupported",
        &["process 11 ran with address randomization and process 10 without it"],
    );
}

/// A parent-death signal that is no signal, a personality that personality() would only
/// query, a umask beyond 0777: refused by plan.
#[test]
fn prctl_values_the_kernel_would_not_set() {
    let p = process(10);
    assert_none(&run(|v| check_prctl(&p, v)));
    let mut q = p.clone();
    q.misc.pdeathsig = 64;
    q.umask = 0o777;
    q.personality = 0x0040_0000;
    assert_none(&run(|v| check_prctl(&q, v)));
    for (f, why) in [
        (
            (|x: &mut Process| x.misc.pdeathsig = 65) as fn(&mut Process),
            "parent-death signal 65",
        ),
        (
            |x: &mut Process| x.misc.pdeathsig = -1,
            "parent-death signal -1",
        ),
        (
            |x: &mut Process| x.personality = u32::MAX,
            "personality 0xffffffff",
        ),
        (|x: &mut Process| x.umask = 0o1022, "umask 1022"),
    ] {
        let mut q = p.clone();
        f(&mut q);
        assert_one(
            &run(|v| check_prctl(&q, v)),
            "malformed",
            &["process 10", why],
        );
    }
}

/// The mm fields PR_SET_MM_MAP would refuse: a range out of order (empty code), an
/// address below mmap_min_addr or at the task size.
#[test]
fn mm_fields_prctl_would_refuse() {
    let mut p = process(10);
    p.mm.start_code = 0x40_0000;
    p.mm.end_code = 0x40_1000;
    p.mm.start_data = 0x60_0000;
    p.mm.end_data = 0x60_1000;
    p.mm.start_brk = 0x70_0000;
    p.mm.brk = 0x70_0000;
    p.mm.start_stack = 0x7ffc_0000_0000;
    p.mm.arg_start = 0x7ffc_0000_1000;
    p.mm.arg_end = 0x7ffc_0000_1010;
    p.mm.env_start = 0x7ffc_0000_1010;
    p.mm.env_end = 0x7ffc_0000_1010;
    assert_none(&run(|v| check_mm(&p, 0x1_0000, v)));
    for (f, why) in [
        (
            (|m: &mut crate::model::MmInfo| m.end_code = m.start_code) as fn(&mut _),
            "code range",
        ),
        (|m| m.brk = m.start_brk - 1, "brk range"),
        (|m| m.arg_end = m.arg_start - 1, "arguments range"),
        (|m| m.env_start = m.env_end + 1, "environment range"),
        (|m| m.start_data = 0x1000, "outside 0x10000-"),
        (
            |m| m.start_stack = crate::kinds::mem::TASK_SIZE,
            "outside 0x10000-",
        ),
    ] {
        let mut q = p.clone();
        f(&mut q.mm);
        let got = run(|v| check_mm(&q, 0x1_0000, v));
        assert!(
            got.iter().any(|x| x.code == "malformed"
                && x.message.contains("process 10")
                && x.message.contains(why)
                && x.message.contains("PR_SET_MM_MAP")),
            "{why}: {got:?}"
        );
    }
}
