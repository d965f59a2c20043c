//! Unit tests of the credential and privilege checks (plan) against ckpt's own
//! privileges, built in memory.

use super::*;
use crate::model::Rlimit;

const ALL: u64 = (1 << 41) - 1;

fn root_own() -> Own {
    Own {
        euid_root: true,
        creds: Creds {
            cap_prm: ALL,
            cap_eff: ALL,
            cap_bnd: ALL,
            ..Default::default()
        },
        rlimits: vec![(1024, 4096); 16],
        nr_open: 1 << 20,
    }
}

fn proc_with(creds: Creds, rlimits: Vec<Rlimit>) -> Process {
    Process {
        pid: 77,
        comm: b"prog".to_vec(),
        creds,
        rlimits,
        threads: vec![],
        ..Default::default()
    }
}

fn problems(proc_: &Process, own: &Own) -> Vec<Problem> {
    let mut v = Vec::new();
    check_process(proc_, own, 0, &mut v);
    v
}

#[test]
fn names() {
    assert_eq!(cap_name(24), "CAP_SYS_RESOURCE");
    assert_eq!(cap_name(40), "CAP_CHECKPOINT_RESTORE");
    assert_eq!(cap_name(50), "capability 50");
    assert_eq!(secbits_names(0x7), "noroot,noroot_locked,no_setuid_fixup");
    assert_eq!(join_and(&["a", "b", "c"]), "a, b and c");
}

#[test]
fn same_privileges_pass() {
    let own = root_own();
    let pr = proc_with(own.creds.clone(), vec![]);
    assert!(problems(&pr, &own).is_empty());
    // Less is always fine: another user, fewer capabilities, lower limits.
    let pr = proc_with(
        Creds {
            uid: [65534; 4],
            gid: [65534; 4],
            cap_bnd: ALL & !(1 << 21),
            securebits: 0x7,
            no_new_privs: true,
            ..Default::default()
        },
        vec![Rlimit {
            resource: 7,
            cur: 100,
            max: 200,
        }],
    );
    assert!(problems(&pr, &own).is_empty(), "{:?}", problems(&pr, &own));
}

#[test]
fn a_missing_capability_is_named_once_with_its_sets() {
    let mut own = root_own();
    own.creds.cap_bnd &= !(1 << 24);
    own.creds.cap_prm &= !(1 << 24);
    own.creds.cap_eff &= !(1 << 24);
    let pr = proc_with(root_own().creds, vec![]);
    let v = problems(&pr, &own);
    assert_eq!(v.len(), 1, "{v:?}");
    let m = &v[0].message;
    assert_eq!(v[0].code, "privilege");
    assert!(m.contains("process 77 (prog)"), "{m}");
    assert!(m.contains("CAP_SYS_RESOURCE"), "{m}");
    assert!(
        m.contains("CAP_SYS_RESOURCE (in its permitted, effective and bounding sets; not in ckpt's bounding set)"),
        "{m}"
    );
}

#[test]
fn ambient_inheritable_and_needed_capabilities() {
    let mut own = root_own();
    own.creds.cap_prm &= !(1 << 12);
    own.creds.cap_eff &= !((1 << 12) | (1 << cap::SETUID));
    let pr = proc_with(
        Creds {
            uid: [1000; 4],
            cap_prm: 1 << 12,
            cap_inh: 1 << 12,
            cap_amb: 1 << 12,
            cap_bnd: ALL,
            ..Default::default()
        },
        vec![],
    );
    let v = problems(&pr, &own);
    let all: String = v.iter().map(|p| p.message.clone() + "\n").collect();
    assert!(
        all.contains("CAP_NET_ADMIN (in its permitted and ambient sets; not permitted to ckpt)"),
        "{all}"
    );
    assert!(all.contains("ckpt needs CAP_SETUID"), "{all}");
    assert_eq!(v.len(), 2, "{all}");
}

#[test]
fn as_another_user_only_root_is_asked_for() {
    // Not root: no capability, no way to change IDs. One problem says what to do.
    let own = Own {
        euid_root: false,
        creds: Creds {
            uid: [1000; 4],
            gid: [1000; 4],
            cap_bnd: ALL,
            ..Default::default()
        },
        rlimits: vec![(1024, 4096); 16],
        nr_open: 1 << 20,
    };
    let pr = proc_with(root_own().creds, vec![]);
    let mut v = problems(&pr, &own);
    check_ckpt(&own, &mut v);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.contains("must run as root"), "{v:?}");
}

#[test]
fn hard_limits_above_ckpt_need_cap_sys_resource() {
    let mut own = root_own();
    let pr = proc_with(
        own.creds.clone(),
        vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 8192,
        }],
    );
    assert!(problems(&pr, &own).is_empty());
    own.creds.cap_eff &= !(1 << cap::SYS_RESOURCE);
    let v = problems(&pr, &own);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message
            .contains("RLIMIT_NOFILE is 8192, above ckpt's own (4096)")
    );
    own.creds.cap_eff |= 1 << cap::SYS_RESOURCE;
    own.nr_open = 5000;
    let v = problems(&pr, &own);
    assert!(v[0].message.contains("fs.nr_open"), "{v:?}");
}

#[test]
fn securebits_no_new_privs_and_seccomp_of_ckpt() {
    let mut own = root_own();
    own.creds.securebits = 0x3; // noroot, locked
    own.creds.no_new_privs = true;
    let pr = proc_with(root_own().creds, vec![]);
    let all: String = problems(&pr, &own)
        .iter()
        .map(|p| p.message.clone() + "\n")
        .collect();
    assert!(all.contains("locked bits cannot change"), "{all}");
    assert!(all.contains("no_new_privs"), "{all}");
    assert!(secbits_change_allowed(0, 0x3f));
    assert!(!secbits_change_allowed(0x2, 0x1));
    assert!(secbits_change_allowed(0x3, 0x7));
    let mut v = Vec::new();
    own.creds.seccomp = 2;
    own.euid_root = false;
    check_ckpt(&own, &mut v);
    assert_eq!(v.len(), 2, "{v:?}");
}

#[test]
fn a_thread_with_credentials_of_its_own_is_checked_too() {
    let own = root_own();
    let mut pr = proc_with(own.creds.clone(), vec![]);
    let mut t = crate::kinds::testutil::thread(78);
    t.creds = Some(Creds {
        uid: [1000; 4],
        ..Default::default()
    });
    pr.threads = vec![crate::kinds::testutil::thread(77), t.clone()];
    assert!(problems(&pr, &own).is_empty());
    // A capability ckpt lacks, in that thread only: named with the thread.
    t.creds = Some(Creds {
        cap_prm: 1 << 45,
        ..Default::default()
    });
    pr.threads[1] = t;
    let v = problems(&pr, &own);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message
            .starts_with("process 77 (prog), thread 78 has a capability")
            && v[0].message.contains("capability 45"),
        "{}",
        v[0].message
    );
}

#[test]
fn a_zombie_s_hard_limits_are_checked() {
    let mut own = root_own();
    own.creds.cap_eff &= !(1 << cap::SYS_RESOURCE);
    let z = proc_with(
        Creds::default(),
        vec![Rlimit {
            resource: libc::RLIMIT_CORE,
            cur: 0,
            max: 1 << 20,
        }],
    );
    let mut v = Vec::new();
    check_zombie(&z, &own, &mut v);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message
            .starts_with("zombie 77 (prog): its hard limit RLIMIT_CORE"),
        "{}",
        v[0].message
    );
}
