//! Credentials: the branches of `creds::check_process` and `check_ckpt`
//! that the tests in creds.rs leave out (capability sets the kernel would refuse, many
//! groups, keep_caps and ambient securebits, the descriptor room restore needs, ckpt
//! without the right to choose PIDs). `Own` is built in memory: nothing is asked of
//! this host.

use crate::kinds::task::creds::{Own, cap, check_ckpt, check_process, fd_room, secbit};
use crate::kinds::testutil::*;
use crate::model::{Creds, Process};

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

fn with_creds(creds: Creds) -> Process {
    Process {
        creds,
        ..process(77)
    }
}

fn check(p: &Process, own: &Own, pairs: usize) -> Vec<crate::error::Problem> {
    run(|v| check_process(p, own, pairs, v))
}

#[test]
fn capability_sets_the_kernel_would_refuse() {
    let own = root_own();
    for c in [
        Creds {
            cap_eff: 1,
            ..own.creds.clone()
        },
        Creds {
            cap_prm: 0,
            cap_eff: 0,
            cap_amb: 1 << 12,
            cap_inh: 1 << 12,
            ..own.creds.clone()
        },
        Creds {
            cap_amb: 1 << 12,
            cap_inh: 0,
            ..own.creds.clone()
        },
    ] {
        let c = Creds {
            cap_prm: c.cap_prm & !1,
            ..c
        };
        let v = check(&with_creds(c), &own, 0);
        assert!(
            v.iter().any(|p| p.code == "malformed"
                && p.message.contains(
                    "process 77 (prog): its effective or ambient capabilities are not all permitted"
                )),
            "{v:?}"
        );
    }
    let many = Creds {
        groups: vec![1; 65537],
        ..own.creds.clone()
    };
    let v = check(&with_creds(many), &own, 0);
    assert!(
        v.iter().any(|p| p.code == "malformed"
            && p.message
                .contains("more supplementary groups than the kernel allows")),
        "{v:?}"
    );
}

#[test]
fn keep_caps_locked_off_and_ambient_raise() {
    let mut own = root_own();
    own.creds.securebits = secbit::KEEP_CAPS_LOCKED;
    let same_bits = Creds {
        uid: [1000; 4],
        securebits: secbit::KEEP_CAPS_LOCKED,
        ..own.creds.clone()
    };
    let v = check(&with_creds(same_bits.clone()), &own, 0);
    assert_one(
        &v,
        "privilege",
        &[
            "ckpt runs with keep_caps locked off",
            "without locked securebits",
        ],
    );
    // The same user IDs: nothing to lose.
    let v = check(
        &with_creds(Creds {
            uid: [0; 4],
            ..same_bits
        }),
        &own,
        0,
    );
    assert_none(&v);

    let mut own = root_own();
    own.creds.securebits = secbit::NO_CAP_AMBIENT_RAISE;
    let amb = Creds {
        cap_inh: 1 << 12,
        cap_amb: 1 << 12,
        securebits: secbit::NO_CAP_AMBIENT_RAISE,
        ..own.creds.clone()
    };
    let v = check(&with_creds(amb), &own, 0);
    assert_one(
        &v,
        "privilege",
        &["it has ambient capabilities", "no_cap_ambient_raise"],
    );
}

#[test]
fn descriptor_room() {
    let own = root_own();
    let mut p = with_creds(own.creds.clone());
    p.fds = vec![fd(4000, eventfd())];
    // Highest descriptor + 1, two per pipe, socket pair or FIFO, and 4.
    assert_eq!(fd_room(&p, 0), 4005);
    assert_eq!(fd_room(&p, 10), 4025);
    assert_eq!(fd_room(&process(1), 0), 7);
    assert_none(&check(&p, &own, 0));
    let mut weak = root_own();
    weak.creds.cap_eff &= !(1 << cap::SYS_RESOURCE);
    assert_none(&check(&p, &weak, 45));
    let v = check(&p, &weak, 46);
    assert_one(
        &v,
        "privilege",
        &[
            "process 77 (prog): restoring its descriptors needs a descriptor limit of 4097, above ckpt's hard RLIMIT_NOFILE (4096)",
        ],
    );
    let mut small = root_own();
    small.nr_open = 4000;
    let v = check(&p, &small, 0);
    assert_one(
        &v,
        "privilege",
        &["needs a descriptor limit of 4005, above this host's fs.nr_open (4000)"],
    );
}

#[test]
fn ckpt_needs_the_right_to_choose_pids() {
    let mut own = root_own();
    assert_none(&run(|v| check_ckpt(&own, v)));
    own.creds.cap_eff &= !(1 << cap::CHECKPOINT_RESTORE);
    assert_none(&run(|v| check_ckpt(&own, v)));
    own.creds.cap_eff &= !(1 << cap::SYS_ADMIN);
    let v = run(|v| check_ckpt(&own, v));
    assert_one(
        &v,
        "privilege",
        &["neither CAP_CHECKPOINT_RESTORE nor CAP_SYS_ADMIN"],
    );
    own.creds.cap_eff |= 1 << cap::CHECKPOINT_RESTORE;
    own.creds.seccomp = 1;
    let v = run(|v| check_ckpt(&own, v));
    assert_one(&v, "privilege", &["ckpt runs under seccomp (mode 1)"]);
    let other = Own {
        euid_root: false,
        creds: Creds {
            uid: [1000; 4],
            ..Default::default()
        },
        ..root_own()
    };
    let v = run(|v| check_ckpt(&other, v));
    assert_one(
        &v,
        "privilege",
        &["restore must run as root", "as user ID 1000"],
    );
}
