use super::enter::new_namespaces;
use super::*;
use crate::kinds::testutil::{checkpoint, child, process};
use crate::model::{NetAddr, NetState, TimeClocks, UtsNames};

fn ext(kind: &str, inode: u64) -> Namespace {
    Namespace {
        kind: kind.into(),
        inode,
        external: true,
        ..Default::default()
    }
}

/// A root and its child in UTS namespace 7 and time namespace 9 of their own, and
/// in ckpt's IPC namespace 1.
fn image() -> Checkpoint {
    let mut r = process(10);
    let mut c = child(11, 10, 10, 10);
    for p in [&mut r, &mut c] {
        p.namespaces = vec![("uts".into(), 7), ("ipc".into(), 1), ("time".into(), 9)];
    }
    let mut ck = checkpoint(vec![r, c]);
    ck.namespaces = vec![
        Namespace {
            kind: "uts".into(),
            inode: 7,
            uts: Some(UtsNames {
                hostname: b"box".to_vec(),
                domainname: b"(none)".to_vec(),
            }),
            ..Default::default()
        },
        ext("ipc", 1),
        Namespace {
            kind: "time".into(),
            inode: 9,
            time: Some(TimeClocks {
                monotonic_ns: 5_000,
                boottime_ns: 8_000,
            }),
            ..Default::default()
        },
    ];
    ck
}

fn problems(ck: &Checkpoint) -> Vec<String> {
    let mut v = Vec::new();
    check_namespaces(ck, &mut v);
    v.into_iter()
        .map(|p| format!("{}: {}", p.code, p.message))
        .collect()
}

#[test]
fn a_consistent_image_passes() {
    assert_eq!(problems(&image()), Vec::<String>::new());
    assert!(problems(&checkpoint(vec![process(3)])).is_empty());
}

#[test]
fn inconsistent_or_unrestorable_namespaces_are_problems() {
    let mut ck = image();
    ck.processes[1].namespaces[0].1 = 8;
    assert!(problems(&ck)[0].contains("uts:[8], which the image does not describe"));
    ck.namespaces.push(Namespace {
        kind: "uts".into(),
        inode: 8,
        uts: ck.namespaces[0].uts.clone(),
        ..Default::default()
    });
    // A UTS namespace the child made below the root is restored in its stub.
    assert_eq!(problems(&ck), Vec::<String>::new());
    // Not a time namespace.
    let mut ck = image();
    ck.processes[1].namespaces[2].1 = 8;
    ck.namespaces.push(Namespace {
        kind: "time".into(),
        inode: 8,
        time: ck.namespaces[2].time,
        ..Default::default()
    });
    // A time namespace the root made for its child, restored in the root's stub
    // before it forks that child; its second child in it too, forked after.
    assert_eq!(problems(&ck), Vec::<String>::new());
    let mut c2 = child(12, 10, 10, 10);
    c2.namespaces = ck.processes[1].namespaces.clone();
    ck.processes.push(c2);
    assert_eq!(problems(&ck), Vec::<String>::new());
    // Not one in its own forked after one in the namespace it made for its children.
    ck.processes[2].namespaces = ck.processes[0].namespaces.clone();
    let p = problems(&ck);
    assert!(
        p[0].contains("process 10 (") && p[0].contains("children in different time namespaces"),
        "{p:?}"
    );
    // Nor one whose children are in two namespaces it did not make (11's child 13).
    let mut ck = image();
    let mut c3 = child(13, 11, 10, 10);
    c3.namespaces = ck.processes[1].namespaces.clone();
    c3.namespaces[2].1 = 8;
    ck.processes[1].namespaces[2].1 = 6;
    ck.processes.push(c3);
    for ino in [6, 8] {
        ck.namespaces.push(Namespace {
            kind: "time".into(),
            inode: ino,
            time: ck.namespaces[2].time,
            ..Default::default()
        });
    }
    assert_eq!(problems(&ck), Vec::<String>::new());
    // A network namespace the child made below the root, and one two siblings entered
    // apart (not restored).
    let mut ck = image();
    let net = Namespace {
        kind: "net".into(),
        inode: 5,
        net: Some(NetState {
            lo_up: true,
            lo_mtu: 65536,
            ..Default::default()
        }),
        ..Default::default()
    };
    ck.namespaces.push(net);
    ck.processes[1].namespaces.push(("net".into(), 5));
    ck.processes[0].namespaces.push(("net".into(), 2));
    ck.namespaces.push(ext("net", 2));
    assert_eq!(problems(&ck), Vec::<String>::new());
    let mut c2 = child(12, 10, 10, 10);
    c2.namespaces = ck.processes[1].namespaces.clone();
    ck.processes.push(c2);
    let p = problems(&ck);
    assert!(
        p.iter()
            .any(|m| m.contains("process 12 is in another network namespace")),
        "{p:?}"
    );
    // Nor one two processes entered apart (the root's second child too).
    let mut ck = image();
    ck.processes[1].namespaces[0].1 = 8;
    let mut c2 = child(12, 10, 10, 10);
    c2.namespaces = ck.processes[1].namespaces.clone();
    ck.processes.push(c2);
    ck.namespaces.push(Namespace {
        kind: "uts".into(),
        inode: 8,
        uts: ck.namespaces[0].uts.clone(),
        ..Default::default()
    });
    assert!(problems(&ck)[0].contains("in another UTS namespace"));

    let mut ck = image();
    ck.namespaces.push(Namespace {
        kind: "net".into(),
        inode: 4,
        ..Default::default()
    });
    assert!(problems(&ck)[0].contains("network namespace of the tree's own (net:[4])"));

    let mut ck = image();
    ck.namespaces[0].uts = Some(UtsNames {
        hostname: vec![b'a'; 65],
        domainname: Vec::new(),
    });
    ck.namespaces[2].time = Some(TimeClocks {
        monotonic_ns: -1,
        boottime_ns: 0,
    });
    ck.namespaces.push(ext("uts", 7));
    let p = problems(&ck);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.iter().any(|x| x.contains("described twice")));
}

fn net_image() -> Checkpoint {
    let mut ck = image();
    for p in &mut ck.processes {
        p.namespaces.push(("net".into(), 4));
    }
    ck.namespaces.push(Namespace {
        kind: "net".into(),
        inode: 4,
        net: Some(NetState {
            lo_up: true,
            lo_mtu: 65536,
            addrs: vec![NetAddr {
                family: libc::AF_INET as u8,
                prefixlen: 24,
                local: vec![10, 77, 0, 1],
                address: vec![10, 77, 0, 1],
                label: "lo".into(),
                ..Default::default()
            }],
            sysctls: vec![("net/ipv4/ip_local_port_range".into(), "20000\t30000".into())],
        }),
        ..Default::default()
    });
    ck
}

#[test]
fn a_network_namespace_of_the_trees_own_is_checked_and_created() {
    let ck = net_image();
    assert_eq!(problems(&ck), Vec::<String>::new());
    assert!(owns(&ck, "net") && net_elsewhere(&ck));
    assert!(locked_connections(&ck).is_empty());
    let (flags, ..) = new_namespaces(&ck, (0, 0));
    assert_eq!(
        flags,
        libc::CLONE_NEWUTS | libc::CLONE_NEWTIME | libc::CLONE_NEWNET
    );
    // An address of the wrong length, a setting outside /proc/sys/net: refused.
    for bad in 0..3 {
        let mut ck = net_image();
        let n = ck.namespaces[3].net.as_mut().unwrap();
        match bad {
            0 => n.addrs[0].local = vec![1, 2, 3],
            1 => n.sysctls[0].0 = "net/../kernel/hostname".into(),
            _ => n.sysctls[0].0 = "kernel/hostname".into(),
        }
        assert!(
            problems(&ck)[0].contains("network namespace of the tree's own (net:[4])"),
            "{bad}"
        );
    }
}

#[test]
fn a_namespace_made_outside_the_tree_needs_a_join() {
    let mut ck = image();
    for p in &mut ck.processes {
        p.namespaces.push(("net".into(), 5));
    }
    ck.namespaces.push(Namespace {
        kind: "net".into(),
        inode: 5,
        external: true,
        foreign: true,
        ..Default::default()
    });
    assert_eq!(problems(&ck), Vec::<String>::new());
    assert!(net_elsewhere(&ck) && !owns(&ck, "net"));
    let joins = |j: &[(&str, &str)]| {
        let j: Vec<(String, std::path::PathBuf)> =
            j.iter().map(|(k, p)| (k.to_string(), p.into())).collect();
        let mut v = Vec::new();
        check_joins(&ck, &j, &mut v);
        v.into_iter().map(|p| p.message).collect::<Vec<_>>()
    };
    let none = joins(&[]);
    assert!(
        none.len() == 1 && none[0].contains("net:[5]") && none[0].contains("--join-ns net:PATH"),
        "{none:?}"
    );
    assert_eq!(joins(&[("net", "/proc/self/ns/net")]), Vec::<String>::new());
    let wrong = joins(&[("net", "/proc/self/ns/uts")]);
    assert!(wrong[0].contains("not a network namespace"), "{wrong:?}");
    let extra = joins(&[("net", "/proc/self/ns/net"), ("uts", "/proc/self/ns/uts")]);
    assert!(
        extra[0].contains("no UTS namespace made outside"),
        "{extra:?}"
    );
    let m = manifest(&ck);
    assert_eq!(m[0]["as"], "own");
    assert_eq!(m[0]["below"], false);
    assert_eq!(m[1]["as"], "host");
    assert_eq!(m[3]["as"], "external");
}

#[test]
fn new_namespaces_for_the_owned_ones() {
    let ck = image();
    let (flags, names, sysctls, offsets) = new_namespaces(&ck, (1_000, 10_000));
    assert_eq!(flags, libc::CLONE_NEWUTS | libc::CLONE_NEWTIME);
    assert_eq!(names, Some((&b"box"[..], &b"(none)"[..])));
    assert!(sysctls.is_empty());
    // The clocks continue from the dumped values: 5000 and 8000 on a host at 1000
    // and 10000.
    assert_eq!(offsets, Some((4_000, -2_000)));
    assert!(any_owned(&ck));
    assert!(!any_owned(&checkpoint(vec![process(3)])));
}
