//! Seccomp: the BPF interpreter against filters as libseccomp-style programs are
//! written, the plan checks, and the install sequence.

use super::*;
use crate::kinds::testutil::*;
use crate::model::Creds;

const LD_NR: (u16, u8, u8, u32) = (0x20, 0, 0, 0);
const LD_ARCH: (u16, u8, u8, u32) = (0x20, 0, 0, 4);
const ALLOW: (u16, u8, u8, u32) = (0x06, 0, 0, libc::SECCOMP_RET_ALLOW);

/// Kill on a wrong arch, answer `ret` for system call `nr`, allow the rest.
fn deny(nr: u32, ret: u32) -> SeccompFilter {
    SeccompFilter {
        insns: vec![
            LD_ARCH,
            (0x15, 1, 0, AUDIT_ARCH_X86_64), // jeq arch
            (0x06, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
            LD_NR,
            (0x15, 0, 1, nr),
            (0x06, 0, 0, ret),
            ALLOW,
        ],
        log: false,
    }
}

fn filtered(tid_filters: &[Vec<SeccompFilter>]) -> Process {
    let mut p = process(10);
    p.creds = Creds {
        seccomp: 2,
        no_new_privs: true,
        ..Default::default()
    };
    p.threads = tid_filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut t = thread(10 + i as i32);
            t.seccomp_filters = f.clone();
            t
        })
        .collect();
    p
}

fn call(nr: u64) -> SeccompData {
    SeccompData::call(nr, [0; 6])
}

#[test]
fn the_interpreter_answers_as_the_kernel() {
    let f = deny(libc::SYS_getpid as u32, libc::SECCOMP_RET_ERRNO | 1);
    let getpid = call(libc::SYS_getpid as u64);
    assert_eq!(
        run_filter(&f.insns, &getpid),
        Some(libc::SECCOMP_RET_ERRNO | 1)
    );
    assert_eq!(
        run_filter(&f.insns, &call(nr::MUNMAP)),
        Some(libc::SECCOMP_RET_ALLOW)
    );
    let mut other_arch = getpid;
    other_arch.arch = 0x4000_0003;
    assert_eq!(
        run_filter(&f.insns, &other_arch),
        Some(libc::SECCOMP_RET_KILL_PROCESS)
    );
    // Arguments, scratch memory, X and ALU: allow munmap only of lengths below 4096.
    let args = vec![
        (0x20, 0, 0, 24),   // ld args[1] low
        (0x02, 0, 0, 3),    // st M[3]
        (0x01, 0, 0, 4096), // ldx #4096
        (0x60, 0, 0, 3),    // ld M[3]
        (0x3d, 1, 0, 0),    // jge x
        ALLOW,
        (0x06, 0, 0, libc::SECCOMP_RET_TRAP),
    ];
    let small = SeccompData::call(nr::MUNMAP, [0, 100, 0, 0, 0, 0]);
    let big = SeccompData::call(nr::MUNMAP, [0, 1 << 20, 0, 0, 0, 0]);
    assert_eq!(run_filter(&args, &small), Some(libc::SECCOMP_RET_ALLOW));
    assert_eq!(run_filter(&args, &big), Some(libc::SECCOMP_RET_TRAP));
    // Programs the kernel refuses: falling off the end, loads past seccomp_data.
    assert_eq!(run_filter(&[LD_NR], &small), None);
    assert_eq!(run_filter(&[(0x20, 0, 0, 64), ALLOW], &small), None);
    assert_eq!(run_filter(&[(0x28, 0, 0, 0), ALLOW], &small), None);
}

#[test]
fn the_chain_takes_the_most_restrictive_answer() {
    let chain = [
        deny(39, libc::SECCOMP_RET_LOG),
        deny(39, libc::SECCOMP_RET_ERRNO | 13),
        deny(39, libc::SECCOMP_RET_TRACE),
    ];
    assert_eq!(
        chain_action(&chain, &call(39)),
        Some(libc::SECCOMP_RET_ERRNO | 13)
    );
    let kill = [
        deny(39, libc::SECCOMP_RET_ERRNO | 1),
        deny(39, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    assert_eq!(
        chain_action(&kill, &call(39)),
        Some(libc::SECCOMP_RET_KILL_PROCESS)
    );
}

#[test]
fn filters_that_let_the_restore_finish_pass() {
    let getpid = deny(libc::SYS_getpid as u32, libc::SECCOMP_RET_ERRNO | 1);
    let log = deny(libc::SYS_getppid as u32, libc::SECCOMP_RET_LOG);
    let p = filtered(&[
        vec![getpid.clone(), log.clone()],
        vec![getpid.clone(), log.clone()],
        vec![getpid.clone()],
    ]);
    assert_eq!(shared_prefix(&p), 1);
    assert_none(&run_checks(&p));
}

fn run_checks(p: &Process) -> Vec<Problem> {
    run(|v| check_seccomp(p, v))
}

#[test]
fn filters_that_would_stop_the_restore_are_refused() {
    let p = filtered(&[vec![deny(
        nr::MUNMAP as u32,
        libc::SECCOMP_RET_KILL_PROCESS,
    )]]);
    assert_one(
        &run_checks(&p),
        "unsupported",
        &[
            "munmap of the restore's helper area",
            "SECCOMP_RET_KILL_PROCESS",
        ],
    );
    let p = filtered(&[vec![
        deny(nr::SECCOMP as u32, libc::SECCOMP_RET_ERRNO | 1),
        deny(39, libc::SECCOMP_RET_ERRNO | 1),
    ]]);
    assert_one(
        &run_checks(&p),
        "unsupported",
        &["seccomp() installing its filter #2", "errno 1"],
    );
    // A program the kernel would not run (it falls off its end).
    let p = filtered(&[vec![SeccompFilter {
        insns: vec![LD_NR],
        log: false,
    }]]);
    assert_one(
        &run_checks(&p),
        "unsupported",
        &["cannot be run", "munmap of the restore's helper area"],
    );
}

#[test]
fn strict_mode_user_notification_and_missing_privilege_are_refused() {
    let mut p = process(10);
    p.creds.seccomp = 1;
    assert_one(&run_checks(&p), "unsupported", &["strict mode", "no vDSO"]);
    p.vmas.push(crate::model::Vma {
        kind: crate::model::VmaKind::Vdso,
        ..vma(0x7fff_0000_0000, 0x7fff_0000_2000)
    });
    assert_none(&run_checks(&p));
    p.creds.seccomp = 2;
    assert_one(&run_checks(&p), "unsupported", &["does not record"]);
    let p = filtered(&[vec![deny(39, libc::SECCOMP_RET_USER_NOTIF)]]);
    assert_one(&run_checks(&p), "unsupported", &["SECCOMP_RET_USER_NOTIF"]);
    // Without no_new_privs or CAP_SYS_ADMIN: installed first (checked below).
    let mut p = filtered(&[vec![deny(39, libc::SECCOMP_RET_ERRNO | 1)]]);
    p.creds.no_new_privs = false;
    assert_none(&run_checks(&p));
    assert!(before_creds(&p));
    p.creds.cap_eff = 1 << cap::SYS_ADMIN;
    assert_none(&run_checks(&p));
    assert!(!before_creds(&p));
    assert_none(&run_checks(&process(10)));
}

/// ckpt as root with every capability, no securebits, no no_new_privs.
fn root() -> Own {
    Own {
        euid_root: true,
        creds: Creds {
            cap_eff: (1 << 41) - 1,
            cap_prm: (1 << 41) - 1,
            cap_bnd: (1 << 41) - 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A process as runc leaves it: filters installed as root, then CAP_SYS_ADMIN dropped
/// (user `uid`, a few capabilities), no no_new_privs; its threads alike.
fn runc_like(filters: Vec<SeccompFilter>, threads: usize, uid: u32) -> Process {
    let mut p = filtered(&vec![filters; threads]);
    let caps = (1 << cap::SETUID) | (1 << 10); // SETUID, NET_BIND_SERVICE
    p.creds = Creds {
        uid: [uid; 4],
        gid: [uid; 4],
        cap_eff: caps,
        cap_prm: caps,
        cap_bnd: caps,
        seccomp: 2,
        ..Default::default()
    };
    p
}

fn run_creds_checks(p: &Process) -> Vec<Problem> {
    run(|v| check_creds_under_filters(p, &root(), None, v))
}

#[test]
fn filters_installed_before_the_capability_drop_go_in_first_and_let_the_creds_through() {
    let uname = deny(libc::SYS_uname as u32, libc::SECCOMP_RET_ERRNO | 1);
    let p = runc_like(vec![uname.clone()], 2, 1000);
    assert!(before_creds(&p));
    assert_none(&run_checks(&p));
    assert_none(&run_creds_checks(&p));
    // The calls the filters were run on are exactly restore_creds's, in every thread,
    // and after_creds's in the main one (the IDs changed).
    let calls = creds_calls(&p, &root(), None, 0x7000_0000).expect("dry run");
    assert_eq!(calls.len(), 2);
    let nrs = |c: &[DryCall]| c.iter().map(|c| c.nr).collect::<Vec<_>>();
    for c in &calls {
        for n in [nr::CAPSET, nr::SETRESUID, nr::SETRESGID, nr::PRCTL] {
            assert!(nrs(c).contains(&n), "{n} in {c:?}");
        }
    }
    assert_eq!(
        calls[0].last().map(|c| c.args[0]),
        Some(libc::PR_SET_PDEATHSIG as u64)
    );
    assert_ne!(calls[1].last().map(|c| c.nr), Some(nr::PRCTL));
    // (a capset's arguments point into the helper area)
    let capset = calls[0]
        .iter()
        .find(|c| c.nr == nr::CAPSET)
        .expect("capset");
    assert_eq!(capset.args[0], 0x7000_0000 + crate::remote::STUB_CODE);
    // Restored under them: the same check at stage passes.
    recheck_creds_under_filters(&p, &root(), None, 0x7000_0000).expect("recheck");
}

#[test]
fn filters_that_deny_a_credentials_call_are_refused_naming_it() {
    for (n, what) in [
        (nr::CAPSET, "capset"),
        (nr::SETRESUID, "setresuid"),
        (nr::SETGROUPS, "setgroups"),
    ] {
        let f = deny(n as u32, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        let mut p = runc_like(vec![f], 1, 1000);
        p.creds.groups = vec![1000, 27];
        let problems = run_creds_checks(&p);
        assert_one(
            &problems,
            "unsupported",
            &[
                "process 10",
                what,
                "SECCOMP_RET_ERRNO (errno 1)",
                "before dropping",
            ],
        );
        assert!(recheck_creds_under_filters(&p, &root(), None, 0x7000_0000).is_err());
    }
    // A thread's own filter that kills its prctl.
    let shared = deny(libc::SYS_uname as u32, libc::SECCOMP_RET_ERRNO | 1);
    let prctl = deny(nr::PRCTL as u32, libc::SECCOMP_RET_KILL_THREAD);
    let p = runc_like(vec![shared.clone()], 2, 0);
    let mut p2 = p.clone();
    p2.threads[1].seccomp_filters.push(prctl);
    assert_none(&run_creds_checks(&p));
    assert_one(
        &run_creds_checks(&p2),
        "unsupported",
        &["thread 11 of process 10", "SECCOMP_RET_KILL_THREAD"],
    );
    // Not without CAP_SYS_ADMIN.
    let weak = Own::default();
    assert_one(
        &run(|v| check_creds_under_filters(&p, &weak, None, v)),
        "unsupported",
        &["CAP_SYS_ADMIN", "root"],
    );
    // Filters a thread can install with its own credentials go in last: no such check.
    let mut nnp = runc_like(vec![shared], 1, 1000);
    nnp.creds.no_new_privs = true;
    nnp.threads[0]
        .seccomp_filters
        .push(deny(nr::CAPSET as u32, libc::SECCOMP_RET_KILL_PROCESS));
    assert!(!before_creds(&nnp));
    assert_none(&run_creds_checks(&nnp));
}

/// The instructions of `f` as `struct sock_filter` bytes.
fn raw(f: &SeccompFilter) -> Vec<u8> {
    f.insns
        .iter()
        .flat_map(|&(code, jt, jf, k)| {
            let mut b = code.to_le_bytes().to_vec();
            b.extend_from_slice(&[jt, jf]);
            b.extend_from_slice(&k.to_le_bytes());
            b
        })
        .collect()
}

#[test]
fn shared_filters_go_in_once_with_tsync_then_each_threads_own_with_its_flags() {
    let shared = deny(libc::SYS_getpid as u32, libc::SECCOMP_RET_ERRNO | 1);
    let own = SeccompFilter {
        log: true,
        ..deny(libc::SYS_getuid as u32, libc::SECCOMP_RET_ERRNO | 13)
    };
    let p = filtered(&[vec![shared.clone(), own.clone()], vec![shared.clone()]]);
    let rec = crate::remote::Recorder::new(10);
    let stub = 0x7000_0000;
    let mut cx = Ctx::double(&rec, stub, &p);
    install_filters(&mut cx, &mut [], stub).expect("install");
    let calls = rec.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (c, f, flags) in [
        (&calls[0], &shared, libc::SECCOMP_FILTER_FLAG_TSYNC),
        (&calls[1], &own, libc::SECCOMP_FILTER_FLAG_LOG),
    ] {
        assert_eq!(c.nr, nr::SECCOMP);
        assert_eq!(c.args[0], u64::from(libc::SECCOMP_SET_MODE_FILTER));
        assert_eq!(c.args[1], flags);
        let fprog = c.bytes(c.args[2], 16);
        let len = u64::from_le_bytes(fprog[..8].try_into().expect("8 bytes"));
        let at = u64::from_le_bytes(fprog[8..].try_into().expect("8 bytes"));
        assert_eq!(len, f.insns.len() as u64);
        assert_eq!(c.bytes(at, f.insns.len() * 8), raw(f));
    }
}

#[test]
fn a_process_without_filters_gets_no_call() {
    let p = process(10);
    let rec = crate::remote::Recorder::new(10);
    let mut cx = Ctx::double(&rec, 0x7000_0000, &p);
    install_filters(&mut cx, &mut [], 0x7000_0000).expect("install");
    assert!(rec.calls().is_empty());
}
