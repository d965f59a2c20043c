//! The process tree: the root, parents, IDs, sessions and groups, and PIDs being free
//! on this host (PIDs above pid_max, this test's own PID, a zombie child of its own).

use std::collections::BTreeSet;

use crate::kinds::task::tree::{
    check_groups, check_ids, check_parent, check_pids_free, check_root, check_stop,
};
use crate::kinds::testutil::*;
use crate::model::Process;

#[test]
fn the_root() {
    let ok = checkpoint(vec![process(10)]);
    assert!(run(|v| assert!(check_root(&ok, v))).is_empty());
    let v = run(|v| assert!(!check_root(&checkpoint(vec![]), v)));
    assert_one(&v, "malformed", &["the image holds 0 processes"]);
    let many = checkpoint((1..=(1 << 15) + 1).map(process).collect());
    let v = run(|v| assert!(!check_root(&many, v)));
    assert_one(&v, "malformed", &["the image holds 32769 processes"]);
    let mut ns = checkpoint(vec![process(1)]);
    ns.own_pid_namespace = true;
    assert_none(&run(|v| assert!(check_root(&ns, v))));
    ns.processes[0] = process(10);
    let v = run(|v| assert!(check_root(&ns, v)));
    assert_one(
        &v,
        "malformed",
        &["PID namespace of its own but its root is PID 10, not 1"],
    );
}

#[test]
fn a_tree_whose_pid_namespace_init_was_outside() {
    let mut ns = checkpoint(vec![process(2), child(3, 2, 2, 2)]);
    ns.pid_namespace_init_outside = true;
    assert_none(&run(|v| assert!(check_root(&ns, v))));
    // PID 1 is the reaper's at restore: no process of the image may have it.
    ns.processes[1] = child(1, 2, 2, 2);
    let v = run(|v| assert!(check_root(&ns, v)));
    assert_one(
        &v,
        "malformed",
        &["whose init was outside it", "is PID 1 there"],
    );
    // Not both shapes at once.
    ns.processes = vec![process(1)];
    ns.own_pid_namespace = true;
    let v = run(|v| assert!(check_root(&ns, v)));
    assert_one(
        &v,
        "malformed",
        &["both the init of its PID namespace and without it"],
    );
}

fn parents(procs: &[Process]) -> Vec<crate::error::Problem> {
    run(|v| (0..procs.len()).for_each(|i| check_parent(procs, i, v)))
}

#[test]
fn parents_come_first() {
    // A child in its parent's session, one leading its own, a zombie child.
    let procs = [
        process(10),
        child(11, 10, 10, 10),
        child(12, 11, 12, 12),
        zombie(13, 12, 12),
    ];
    assert_none(&parents(&procs));
    let v = parents(&[zombie(10, 1, 10)]);
    assert_one(&v, "malformed", &["the root process is a zombie"]);
    let v = parents(&[child(10, 11, 10, 10), child(11, 10, 10, 10)]);
    assert_one(
        &v,
        "malformed",
        &["the root process has a parent in the image"],
    );
    for procs in [
        vec![process(10), child(11, 99, 10, 10)],
        vec![process(10), zombie(12, 10, 10), child(11, 12, 10, 10)],
        vec![process(10), child(12, 11, 10, 10), child(11, 10, 10, 10)],
    ] {
        let v = parents(&procs);
        assert_one(
            &v,
            "malformed",
            &["has no (living) parent earlier in the image"],
        );
    }
    let v = parents(&[process(10), child(11, 10, 11, 5)]);
    assert_one(
        &v,
        "malformed",
        &["process 11 is in another session than its parent"],
    );
}

#[test]
fn ids_are_valid_and_unique() {
    let mut ids = BTreeSet::new();
    let mut p = process(10);
    p.threads.push(thread(11));
    assert_none(&run(|v| assert!(check_ids(&p, &mut ids, v))));
    assert_eq!(ids, [10, 11].into());
    // The same IDs again, in another process.
    let v = run(|v| assert!(check_ids(&p, &mut ids, v)));
    assert_eq!(codes(&v), ["malformed", "malformed"], "{v:?}");
    assert!(v[0].message.contains("invalid PID 10"));
    assert!(v[1].message.contains("invalid thread ID 11"));
    let mut bad = process(0);
    bad.threads.push(thread(-3));
    let v = run(|v| assert!(check_ids(&bad, &mut BTreeSet::new(), v)));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].message.contains("invalid PID 0"));
    assert!(v[1].message.contains("invalid thread ID -3"));
    // The main thread must come first.
    for threads in [vec![], vec![thread(11), thread(12)]] {
        let p = Process {
            threads,
            ..process(10)
        };
        let v = run(|v| assert!(check_ids(&p, &mut BTreeSet::new(), v)));
        assert_one(&v, "malformed", &["the image's process has no main thread"]);
    }
}

#[test]
fn a_zombie_has_no_state() {
    let mut ids = BTreeSet::new();
    assert_none(&run(|v| {
        assert!(!check_ids(&zombie(12, 10, 10), &mut ids, v))
    }));
    for z in [
        Process {
            threads: vec![thread(12)],
            ..zombie(12, 10, 10)
        },
        Process {
            vmas: vec![vma(0x1000, 0x2000)],
            ..zombie(12, 10, 10)
        },
        Process {
            fds: vec![fd(0, eventfd())],
            ..zombie(12, 10, 10)
        },
    ] {
        let v = run(|v| assert!(!check_ids(&z, &mut BTreeSet::new(), v)));
        assert_one(&v, "malformed", &["zombie 12 has state"]);
    }
}

#[test]
fn sessions_and_groups() {
    // The root leads its group and session; a child in the root's group; another
    // group led in the image; a group led from outside, the root's.
    let procs = [
        process(10),
        child(11, 10, 10, 10),
        child(12, 10, 12, 10),
        child(13, 12, 12, 10),
    ];
    assert_none(&run(|v| check_groups(&procs, v)));
    let outside = [child(10, 1, 5, 5), child(11, 10, 5, 5)];
    assert_none(&run(|v| check_groups(&outside, v)));
    let v = run(|v| check_groups(&[process(10), child(11, 10, 12, 11)], v));
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].code, "malformed");
    assert!(
        v[0].message
            .contains("session leader 11 is not its group's leader")
    );
    assert_eq!(v[1].code, "unsupported");
    assert!(
        v[1].message
            .contains("process 11 is in process group 12, whose leader is not part of the image")
    );
    // A group whose leader is in another session, or not in the image.
    for procs in [
        vec![process(10), child(11, 10, 11, 11), child(12, 11, 11, 10)],
        vec![process(10), child(11, 10, 99, 10)],
    ] {
        let v = run(|v| check_groups(&procs, v));
        assert_one(
            &v,
            "unsupported",
            &[
                "whose leader is not part of the image",
                "dump from that group's leader",
            ],
        );
    }
}

#[test]
fn free_pids_pass() {
    let free = impossible_pid();
    let mut p = process(free);
    p.threads.push(thread(free + 1));
    assert_none(&run(|v| check_pids_free(&p, &Default::default(), v)));
}

#[test]
fn pids_in_use() {
    let me = std::process::id() as i32;
    let v = run(|v| check_pids_free(&process(me), &Default::default(), v));
    assert_one(
        &v,
        "pid-taken",
        &[&format!("PID {me} is in use by another process (")],
    );
    let mut p = process(impossible_pid());
    p.threads.push(thread(me));
    let v = run(|v| check_pids_free(&p, &Default::default(), v));
    assert_one(
        &v,
        "pid-taken",
        &[&format!("thread ID {me} is in use by another task (")],
    );
}

/// The IDs a dumped tree holds (`Held`) are free: they will be once it is gone.
#[test]
fn pids_the_dumped_tree_holds_count_as_free() {
    let me = std::process::id() as i32;
    let mut p = process(me);
    p.threads.push(thread(me));
    let held = crate::kinds::check::Held {
        pids: [me].into(),
        ..Default::default()
    };
    assert_none(&run(|v| check_pids_free(&p, &held, v)));
}

#[test]
fn a_pid_held_by_an_unreaped_zombie() {
    let mut c = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = c.id() as i32;
    // Wait until it has exited (and is a zombie: it is not reaped until `wait`).
    let start = std::time::Instant::now();
    while !crate::sys::proc::stat(pid).is_ok_and(|s| s.state == b'Z') {
        assert!(start.elapsed().as_secs() < 10, "child {pid} did not exit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let v = run(|v| check_pids_free(&process(pid), &Default::default(), v));
    let _ = c.wait();
    assert_one(
        &v,
        "pid-taken",
        &[
            &format!("PID {pid} is held by a zombie (true, parent "),
            "did not reap within 1000 ms",
        ],
    );
}

#[test]
fn a_job_stop_is_by_a_stop_signal_and_never_of_a_zombie() {
    use crate::model::JobStop;
    for signo in [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        let p = Process {
            stopped: Some(JobStop {
                signo,
                unreported: true,
            }),
            ..process(12)
        };
        assert_none(&run(|v| check_stop(&p, v)));
    }
    let p = Process {
        stopped: Some(JobStop {
            signo: libc::SIGTERM,
            unreported: false,
        }),
        ..process(12)
    };
    let v = run(|v| check_stop(&p, v));
    assert_one(
        &v,
        "malformed",
        &["stopped by signal 15, which does not stop"],
    );
    let z = Process {
        stopped: Some(JobStop {
            signo: libc::SIGSTOP,
            unreported: false,
        }),
        ..zombie(12, 10, 10)
    };
    let v = run(|v| assert!(!check_ids(&z, &mut BTreeSet::new(), v)));
    assert_one(&v, "malformed", &["zombie 12 has state"]);
}
