//! The cross-process checks of sockets in a network namespace a process below the root
//! made (`belownet::check_peers`), on records built in memory.

use crate::kinds::fd::belownet::check_peers;
use crate::kinds::testutil::*;
use crate::model::{FdKind, Process, TcpState};

/// A TCP connection from 127.0.0.1:`from` to 127.0.0.1:`to`.
fn conn(from: u16, to: u16) -> FdKind {
    let addr = |port: u16| {
        let mut a = vec![0u8; 16];
        a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&[127, 0, 0, 1]);
        a
    };
    FdKind::TcpConn {
        conn: Box::new(TcpState {
            family: libc::AF_INET,
            local: addr(from),
            peer: addr(to),
            ..Default::default()
        }),
        flags: 0,
    }
}

/// Process `pid` (a child of 10 but for 10 itself) in network namespace `net`.
fn in_net(pid: i32, net: u64, fds: Vec<crate::model::Fd>) -> Process {
    let mut p = if pid == 10 {
        process(10)
    } else {
        child(pid, 10, 10, 10)
    };
    p.namespaces = vec![("net".into(), net)];
    p.fds = fds;
    p
}

fn refusal(procs: &[Process]) -> String {
    match check_peers(procs, &below(procs)) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

/// Which processes are in another network namespace than the root (the first).
fn below(procs: &[Process]) -> Vec<bool> {
    procs
        .iter()
        .map(|p| crate::kinds::ns::net_below_root(procs, p))
        .collect()
}

#[test]
fn a_connection_between_two_processes_below_the_root_passes() {
    let procs = [
        in_net(10, 1, vec![]),
        in_net(11, 2, vec![fd(3, conn(4243, 50000))]),
        in_net(12, 2, vec![fd(4, conn(50000, 4243))]),
    ];
    assert_eq!(refusal(&procs), "");
}

#[test]
fn a_connection_whose_peer_the_tree_does_not_hold_there_is_refused() {
    // Its peer is nowhere in the tree.
    let procs = [
        in_net(10, 1, vec![]),
        in_net(11, 2, vec![fd(3, conn(4243, 50000))]),
    ];
    let why = refusal(&procs);
    assert!(
        why.contains("process 11") && why.contains("descriptor 3") && why.contains("net:[2]"),
        "{why}"
    );
    // Its peer is in the tree, but in another network namespace (the same addresses).
    let procs = [
        in_net(10, 1, vec![fd(4, conn(50000, 4243))]),
        in_net(11, 2, vec![fd(3, conn(4243, 50000))]),
    ];
    assert!(refusal(&procs).contains("whose peer is not a connection"));
}

#[test]
fn a_unix_pair_with_its_ends_in_two_network_namespaces_is_refused() {
    let pair = |end| FdKind::UnixPair {
        id: 77,
        end,
        flags: 0,
    };
    let procs = [
        in_net(10, 1, vec![]),
        in_net(11, 2, vec![fd(3, pair(0))]),
        in_net(12, 2, vec![fd(5, pair(1))]),
    ];
    assert_eq!(refusal(&procs), "");
    let procs = [
        in_net(10, 1, vec![fd(5, pair(1))]),
        in_net(11, 2, vec![fd(3, pair(0))]),
    ];
    let why = refusal(&procs);
    assert!(
        why.contains("process 11") && why.contains("another network namespace"),
        "{why}"
    );
}
