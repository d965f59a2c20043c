//! `restore --new-tty`: what the image's terminal allows (`tty_plan`).

use crate::kinds::fd::tty::tty_plan;
use crate::kinds::testutil::*;
use crate::model::{Checkpoint, FdKind, Process, TtySettings, TtyState};

fn tty(rdev: u64, controlling: bool, fg_pgid: i32) -> FdKind {
    FdKind::Inherited {
        what: "/dev/pts/3".into(),
        flags: 2,
        tty: Some(Box::new(TtyState {
            path: b"/dev/pts/3".to_vec(),
            rdev,
            settings: Some(TtySettings {
                rows: 24,
                cols: 80,
                ..Default::default()
            }),
            controlling,
            fg_pgid,
            dev: 0,
        })),
    }
}

fn with_fds(p: Process, fds: Vec<crate::model::Fd>) -> Process {
    Process { fds, ..p }
}

fn problems(ck: &Checkpoint) -> Vec<crate::error::Problem> {
    match tty_plan(ck) {
        Ok(plan) => panic!("expected problems, got {plan:?}"),
        Err(v) => v,
    }
}

#[test]
fn a_terminal_of_the_root_session() {
    let root = with_fds(
        process(10),
        vec![fd(0, tty(0x8803, true, 11)), fd(1, tty(0x8803, false, 0))],
    );
    // The foreground group 11 is led in the image, in the root's session.
    let kid = with_fds(child(11, 10, 11, 10), vec![fd(2, tty(0x8803, true, 11))]);
    let plan = tty_plan(&checkpoint(vec![root.clone(), kid])).expect("a plan");
    assert!(plan.controlling);
    assert_eq!(plan.fg_pgid, 11);
    assert_eq!(plan.settings.map(|s| (s.cols, s.rows)), Some((80, 24)));
    // A foreground group from outside (the old shell's) becomes the root's.
    let plan = tty_plan(&checkpoint(vec![root])).expect("a plan");
    assert_eq!(plan.fg_pgid, 10);
    let root = with_fds(process(10), vec![fd(0, tty(0x8803, false, 0))]);
    let plan = tty_plan(&checkpoint(vec![root])).expect("a plan");
    assert!(!plan.controlling);
    assert_eq!(plan.fg_pgid, 10);
}

#[test]
fn a_zombie_foreground_group_is_not_kept() {
    let root = with_fds(process(10), vec![fd(0, tty(1, true, 12))]);
    let z = zombie(12, 10, 10);
    let plan = tty_plan(&checkpoint(vec![root, z])).expect("a plan");
    assert_eq!(plan.fg_pgid, 10);
}

#[test]
fn what_cannot_get_a_new_terminal() {
    let v = problems(&checkpoint(vec![]));
    assert_one(&v, "malformed", &["the image has no process"]);
    let v = problems(&checkpoint(vec![process(10)]));
    assert_one(
        &v,
        "unsupported",
        &["--new-tty: no standard descriptor of the image led to a terminal"],
    );
    let root = with_fds(
        process(10),
        vec![fd(0, tty(1, true, 10)), fd(1, tty(2, false, 0))],
    );
    let v = problems(&checkpoint(vec![root.clone()]));
    assert_one(&v, "unsupported", &["led to more than one terminal"]);
    let other = with_fds(child(11, 10, 11, 11), vec![fd(0, tty(1, false, 0))]);
    let ok_root = with_fds(process(10), vec![fd(0, tty(1, true, 10))]);
    let v = problems(&checkpoint(vec![ok_root.clone(), other]));
    assert_one(
        &v,
        "unsupported",
        &[
            "--new-tty: process 11 (in session 11, not that of the root 10) has the terminal on descriptor 0",
        ],
    );
    let mut ck = checkpoint(vec![ok_root]);
    ck.pid_namespace_init_outside = true;
    let v = problems(&ck);
    assert_one(
        &v,
        "unsupported",
        &["--new-tty: the tree ran in a PID namespace whose init was outside it"],
    );
}

/// A container's shape: the root is the init of the tree's own PID namespace and leads
/// its session, its terminal (the console, its master outside) on 0-2 is the
/// controlling one, a child's group in the foreground: the new pty gets the same.
#[test]
fn a_tree_with_a_pid_namespace_of_its_own_gets_one() {
    let root = with_fds(
        process(10),
        vec![
            fd(0, tty(0x8800, true, 11)),
            fd(1, tty(0x8800, true, 11)),
            fd(2, tty(0x8800, true, 11)),
        ],
    );
    let kid = child(11, 10, 11, 10);
    let mut ck = checkpoint(vec![root, kid]);
    ck.own_pid_namespace = true;
    let plan = tty_plan(&ck).expect("a plan");
    assert!(plan.controlling);
    assert_eq!(plan.fg_pgid, 11);
}

/// A container's console: the terminal of the standard descriptors is a slave of a
/// devpts mount of the tree's own (the same file system device), made again there
/// under its number; none for another mount, a bind of part of it, or an older image
/// (no device recorded).
#[test]
fn a_console_is_found_in_the_devpts_of_the_tree_s_own() {
    use crate::kinds::fd::tty::console_in;
    use crate::model::Mount;
    let mut t = TtyState {
        rdev: libc::makedev(136, 2),
        dev: 0x2b,
        controlling: true,
        ..Default::default()
    };
    let on = |t: &TtyState| {
        let root = with_fds(
            process(1),
            vec![fd(
                0,
                FdKind::Inherited {
                    what: "/dev/pts/2".into(),
                    flags: 2,
                    tty: Some(Box::new(t.clone())),
                },
            )],
        );
        checkpoint(vec![root])
    };
    let devpts = Mount {
        dev: 0x2b,
        root: b"/".to_vec(),
        point: b"/dev/pts".to_vec(),
        fstype: "devpts".into(),
        ..Default::default()
    };
    assert_eq!(console_in(&on(&t), &devpts), Some(2));
    let console = Mount {
        root: b"/2".to_vec(),
        point: b"/dev/console".to_vec(),
        ..devpts.clone()
    };
    assert_eq!(console_in(&on(&t), &console), None);
    let other = Mount {
        dev: 0x2c,
        ..devpts.clone()
    };
    assert_eq!(console_in(&on(&t), &other), None);
    let tmpfs = Mount {
        fstype: "tmpfs".into(),
        ..devpts.clone()
    };
    assert_eq!(console_in(&on(&t), &tmpfs), None);
    t.dev = 0;
    let old = Mount {
        dev: 0,
        ..devpts.clone()
    };
    assert_eq!(console_in(&on(&t), &old), None);
}

// ---- pty pairs inside the image (`check_ptys`) ----

mod pairs {
    use super::with_fds;
    use crate::kinds::fd::tty::check_ptys;
    use crate::kinds::testutil::*;
    use crate::model::{Checkpoint, FdKind, PtyState};

    fn side(index: u32, master: bool) -> FdKind {
        FdKind::Pty {
            index,
            master,
            flags: 2,
        }
    }

    fn pty(index: u32, session: i32, fg_pgid: i32) -> PtyState {
        PtyState {
            index,
            master_path: b"/dev/ptmx".to_vec(),
            session,
            fg_pgid,
            ..Default::default()
        }
    }

    /// A parent holding the master of pty 4 and a child (11) leading a session on its
    /// slave, with a job (12) in the foreground.
    fn image(t: PtyState) -> Checkpoint {
        let mut ck = checkpoint(vec![
            with_fds(process(10), vec![fd(5, side(4, true))]),
            with_fds(
                child(11, 10, 11, 11),
                vec![
                    fd(0, side(4, false)),
                    fd(7, FdKind::DevTty { index: 4, flags: 2 }),
                ],
            ),
            with_fds(child(12, 11, 12, 11), vec![fd(0, side(4, false))]),
        ]);
        ck.ptys = vec![t];
        ck
    }

    #[test]
    fn a_session_on_a_pair_of_the_image() {
        assert_none(&run(|p| check_ptys(&image(pty(4, 11, 12)), p)));
        assert_none(&run(|p| check_ptys(&image(pty(4, 0, 0)), p)));
    }

    #[test]
    fn a_pair_needs_one_master_a_known_path_and_a_session_of_the_image() {
        let mut no_master = image(pty(4, 11, 12));
        no_master.processes[0].fds.clear();
        assert_one(
            &run(|p| check_ptys(&no_master, p)),
            "malformed",
            &["pseudo-terminal 4"],
        );
        let mut path = pty(4, 11, 12);
        path.master_path = b"/tmp/ptmx".to_vec();
        assert_one(&run(|p| check_ptys(&image(path), p)), "malformed", &["4"]);
        let mut huge = image(pty(4, 11, 12));
        huge.ptys[0].index = 1 << 20;
        for f in huge.processes.iter_mut().flat_map(|q| q.fds.iter_mut()) {
            if let FdKind::Pty { index, .. } | FdKind::DevTty { index, .. } = &mut f.kind {
                *index = 1 << 20;
            }
        }
        assert_one(&run(|p| check_ptys(&huge, p)), "malformed", &["1048576"]);
        // 12 leads no session; group 13 does not exist; no session 99.
        for t in [pty(4, 12, 12), pty(4, 11, 13), pty(4, 99, 12)] {
            assert_one(&run(|p| check_ptys(&image(t), p)), "malformed", &["4"]);
        }
    }

    #[test]
    fn a_descriptor_of_an_unknown_pair_and_a_pair_recorded_twice() {
        let mut ck = image(pty(4, 11, 12));
        ck.ptys[0].index = 5;
        let got = run(|p| check_ptys(&ck, p));
        assert!(
            got.iter()
                .any(|x| x.message.contains("unknown pseudo-terminal")),
            "{got:?}"
        );
        let mut twice = image(pty(4, 11, 12));
        twice.ptys.push(pty(4, 0, 0));
        assert!(!run(|p| check_ptys(&twice, p)).is_empty());
    }
}

/// /dev/pts/259 is (136, 259) (devpts numbers every slave under the first major);
/// the older majors 137-143 of devices.txt still name the same indexes.
#[test]
fn pty_numbers_and_device_numbers() {
    use crate::kinds::fd::tty::{pts_index, pts_rdev};
    assert_eq!(pts_rdev(259), libc::makedev(136, 259));
    assert_eq!(pts_rdev(3), libc::makedev(136, 3));
    for i in [0, 3, 255, 256, 259, 4095, (1 << 20) - 1] {
        assert_eq!(pts_index(pts_rdev(i)), Some(i));
    }
    assert_eq!(pts_index(libc::makedev(137, 3)), Some(259));
    assert_eq!(pts_index(libc::makedev(5, 2)), None);
    assert_eq!(pts_index(libc::makedev(4, 1)), None);
}
