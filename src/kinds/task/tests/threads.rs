//! Threads: their number, their state, and the vDSO the process used (compared with
//! this host's, read from this test's own memory map).

use crate::arch::ArchHeader;
use crate::kinds::task::threads::{check_arch, check_count, check_states, host_vdso};
use crate::kinds::testutil::*;
use crate::model::{PendingSignal, Process, Vma, VmaKind};

#[test]
fn thread_count() {
    let mut p = process(10);
    p.threads = (0..1 << 16).map(|i| thread(10 + i)).collect();
    assert_none(&run(|v| check_count(&p, v)));
    p.threads.push(thread(1));
    assert_one(
        &run(|v| check_count(&p, v)),
        "malformed",
        &["too many threads"],
    );
}

#[test]
fn thread_states() {
    let mut p = process(10);
    p.threads.push(thread(11));
    p.threads[1].arch.xsave = vec![0; 1 << 16];
    assert_none(&run(|v| check_states(&p, v)));
    for len in [575, (1 << 16) + 1, 0] {
        let mut q = p.clone();
        q.threads[1].arch.xsave = vec![0; len];
        assert_one(
            &run(|v| check_states(&q, v)),
            "malformed",
            &["invalid xsave area size"],
        );
    }
    // Each thread's pending signals are checked.
    p.threads[1].pending = vec![PendingSignal {
        signo: 0,
        siginfo: vec![0; 128],
    }];
    assert_one(
        &run(|v| check_states(&p, v)),
        "malformed",
        &["invalid pending signal"],
    );
}

fn with_vdso(hash: u64, size: u64, vvar: u64) -> Process {
    let mut vmas = Vec::new();
    if vvar != 0 {
        vmas.push(Vma {
            kind: VmaKind::Vvar,
            ..vma(0x7000_0000, 0x7000_0000 + vvar)
        });
    }
    vmas.push(Vma {
        kind: VmaKind::Vdso,
        ..vma(0x7100_0000, 0x7100_2000)
    });
    Process {
        vmas,
        vdso_hash: hash,
        vdso_size: size,
        ..process(10)
    }
}

#[test]
fn no_vdso_nothing_to_compare() {
    let hdr = ArchHeader::default();
    assert_none(&run(|v| check_arch(&hdr, &process(10), true, v)));
    // An ia32 process when this kernel maps no 32-bit vDSO: reported elsewhere.
    let mut p = with_vdso(1, 2, 0);
    p.threads[0].arch.regs.cs = crate::arch::native::USER_CS_32;
    assert_none(&run(|v| check_arch(&hdr, &p, false, v)));
}

#[test]
fn the_vdso_must_be_this_kernels() {
    let Some((hash, size, vvar)) = host_vdso() else {
        // A host without a vDSO: the image's task used one.
        let v = run(|v| check_arch(&ArchHeader::default(), &with_vdso(1, 2, 0), true, v));
        assert_one(&v, "vdso", &["this host has no vDSO"]);
        return;
    };
    let hdr = ArchHeader::default();
    assert_none(&run(|v| {
        check_arch(&hdr, &with_vdso(hash, size, vvar), true, v)
    }));
    // Older images: the identity in the header.
    let old = ArchHeader {
        vdso_hash: hash,
        vdso_size: size,
        ..Default::default()
    };
    assert_none(&run(|v| check_arch(&old, &with_vdso(0, 0, vvar), true, v)));
    let v = run(|v| check_arch(&hdr, &with_vdso(hash ^ 1, size, vvar), true, v));
    assert_one(
        &v,
        "vdso-differs",
        &[
            "this kernel's vDSO differs from the one process 10 used",
            &format!("({size} bytes here, {size} in the image)"),
        ],
    );
    let v = run(|v| check_arch(&hdr, &with_vdso(hash, size + 4096, vvar), true, v));
    assert_one(
        &v,
        "vdso-differs",
        &[&format!("{} in the image", size + 4096)],
    );
    let v = run(|v| check_arch(&hdr, &with_vdso(hash, size, vvar + 4096), true, v));
    assert_one(
        &v,
        "vdso-differs",
        &[&format!(
            "vDSO data area is {vvar} bytes, the image's {}",
            vvar + 4096
        )],
    );
}

#[test]
fn registers_and_scheduling_the_kernel_would_refuse() {
    let p = process(10);
    assert_none(&run(|v| check_states(&p, v)));
    let mut q = p.clone();
    q.threads[0].arch.regs.cs = 0;
    assert_one(
        &run(|v| check_states(&q, v)),
        "malformed",
        &["cs", "thread 10"],
    );
    let mut q = p.clone();
    q.threads[0].arch.regs.fs_base = 1 << 63;
    assert_one(&run(|v| check_states(&q, v)), "malformed", &["fs_base"]);
    let mut q = p.clone();
    q.threads[0].arch.tls = vec![[3, 0, 0, 0x28]];
    assert_one(&run(|v| check_states(&q, v)), "malformed", &["TLS entry 3"]);
    for (pol, prio, nice) in [(77, 0, 0), (1, 0, 0), (1, 100, 0), (0, 5, 0), (0, 0, 20)] {
        let mut q = p.clone();
        let t = &mut q.threads[0];
        (t.sched_policy, t.sched_priority, t.nice) = (pol, prio, nice);
        assert_one(&run(|v| check_states(&q, v)), "malformed", &["scheduling"]);
    }
    let mut q = p.clone();
    q.threads[0].sched_policy = 6;
    assert_one(
        &run(|v| check_states(&q, v)),
        "sched-unsupported",
        &["SCHED_DEADLINE"],
    );
    for (pol, prio) in [
        (1, 99),
        (2, 1),
        (3, 0),
        (5, 0),
        (0x4000_0000, 0),
        (0x4000_0001, 10),
    ] {
        let mut q = p.clone();
        (q.threads[0].sched_policy, q.threads[0].sched_priority) = (pol, prio);
        assert_none(&run(|v| check_states(&q, v)));
    }
}

/// What stage would have the kernel refuse in a thread's sigaltstack, robust list and
/// rseq registration is a plan problem naming the thread.
#[test]
fn thread_attrs_the_kernel_would_refuse() {
    use crate::kinds::task::threads::check_thread_attrs;
    use crate::model::{Rseq, SigAltStack};
    let mut p = process(10);
    p.vmas = vec![
        vma(0x7000_0000, 0x7000_2000),
        Vma {
            prot: libc::PROT_READ as u32,
            ..vma(0x7100_0000, 0x7100_1000)
        },
    ];
    let good = {
        let mut t = thread(10);
        t.sigaltstack = SigAltStack {
            sp: 0x7000_0000,
            flags: libc::SS_ONSTACK | (1 << 31),
            size: 8192,
        };
        t.robust_list = 0x7000_0100;
        t.robust_list_len = 24;
        t.rseq = Some(Rseq {
            addr: 0x7000_1fe0,
            len: 32,
            flags: 0,
            signature: 0x5305_3053,
        });
        t
    };
    assert_none(&run(|v| check_thread_attrs(&good, &p, v)));
    let mut disabled = good.clone();
    disabled.sigaltstack = SigAltStack {
        sp: 0,
        flags: libc::SS_DISABLE,
        size: 0,
    };
    assert_none(&run(|v| check_thread_attrs(&disabled, &p, v)));
    type Change = Box<dyn Fn(&mut crate::model::Thread)>;
    let cases: Vec<(&str, Change)> = vec![
        ("sigaltstack flags", Box::new(|t| t.sigaltstack.flags = 4)),
        (
            "less than MINSIGSTKSZ",
            Box::new(|t| t.sigaltstack.size = 2047),
        ),
        (
            "robust futex list length 16",
            Box::new(|t| t.robust_list_len = 16),
        ),
        (
            "aligned to 32",
            Box::new(|t| t.rseq.as_mut().unwrap().addr += 8),
        ),
        (
            "at least 32",
            Box::new(|t| t.rseq.as_mut().unwrap().len = 20),
        ),
        (
            "not inside a writable mapping",
            Box::new(|t| t.rseq.as_mut().unwrap().addr = 0x7100_0000),
        ),
        (
            "not inside a writable mapping",
            Box::new(|t| t.rseq.as_mut().unwrap().addr = 0x7000_2000),
        ),
        (
            "not inside a writable mapping",
            Box::new(|t| t.rseq.as_mut().unwrap().addr = u64::MAX - 31),
        ),
    ];
    for (why, f) in cases {
        let mut t = good.clone();
        f(&mut t);
        assert_one(
            &run(|v| check_thread_attrs(&t, &p, v)),
            "malformed",
            &["thread 10", why, "the kernel would refuse it"],
        );
    }
    // An ia32 thread: its own robust list head size, a stack within 32 bits.
    let mut t = good.clone();
    t.arch.regs.cs = crate::arch::native::USER_CS_32;
    t.robust_list_len = 12;
    t.sigaltstack.sp = 0x7000_0000;
    assert_none(&run(|v| check_thread_attrs(&t, &p, v)));
    t.sigaltstack.sp = 1 << 32;
    assert_one(
        &run(|v| check_thread_attrs(&t, &p, v)),
        "malformed",
        &["beyond 32 bits"],
    );
}
