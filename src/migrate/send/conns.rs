//! `ckpt migrate`'s TCP part: the tree's connections locked from the freeze, checked
//! for what can move, and on one host the source's sockets out of the way of the
//! copy's (and rebuilt if the copy does not come). See docs/ARCHITECTURE.md,
//! "Migration".

use super::*;

/// The TCP sockets of the frozen tree: their lock (a netfilter table of ours with the
/// owner flag: it goes with this process, however it ends) and, when the receiver
/// shares our network namespace, the room made for its copy.
#[derive(Default)]
pub(super) struct TcpPart {
    /// The receiver is in our network namespace (see `same_namespace`): the copy's
    /// sockets need the source's addresses, so the source's sockets leave them.
    pub(super) make_room: bool,
    pub(super) held: Vec<Held>,
    pub(super) lock: Option<sys::netlock::Handover>,
    /// Indexes into `held` of the sockets disconnected to make room.
    pub(super) parked: Vec<usize>,
    /// `--lazy`: indexes into `held` of the connections ended here for good, the
    /// copy's from its commit on ([`abort_connections`]).
    pub(super) ended: Vec<usize>,
    /// Connections of the final image were not among the tree's descriptors at the
    /// freeze (locked at `Written`, not in `held`): ckpt cannot end them itself.
    pub(super) unheld: bool,
}

/// A TCP socket of the frozen tree: ckpt's duplicate of descriptor `fd` of `pid`.
pub(super) struct Held {
    pub(super) pid: i32,
    pub(super) fd: i32,
    pub(super) sock: std::os::fd::OwnedFd,
    pub(super) what: sys::tcp::Endpoint,
}

impl Held {
    pub(super) fn conn(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.what {
            sys::tcp::Endpoint::Conn { local, peer } => Some((local.clone(), peer.clone())),
            sys::tcp::Endpoint::Listen { .. } => None,
        }
    }
}

/// The TCP connections and listeners of the frozen tree rooted at `pid` (each socket
/// once, however many descriptors lead to it).
pub(super) fn tcp_sockets(pid: i32) -> Result<Vec<Held>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in tree_pids(pid) {
        let dir = format!("/proc/{p}/fd");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            let Some(ino) = link
                .strip_prefix("socket:[")
                .and_then(|x| x.strip_suffix(']'))
            else {
                continue;
            };
            if !seen.insert(ino.to_string()) {
                continue;
            }
            let sock = sys::process::steal_fd(p, fd)
                .map_err(|e| format!("process {p}, descriptor {fd}: {e}"))?;
            let what = sys::tcp::endpoint_of(&sock)
                .map_err(|e| format!("process {p}, descriptor {fd}: {e}"))?;
            if let Some(what) = what {
                out.push(Held {
                    pid: p,
                    fd,
                    sock,
                    what,
                });
            }
        }
    }
    Ok(out)
}

/// At the freeze: lock the tree's TCP connections before anything of them is read (a
/// segment the peer sent later would be acknowledged by the kernel and lost).
pub(super) fn lock_at_freeze(pid: i32, st: &mut State) -> Result<(), String> {
    st.tcp.held = tcp_sockets(pid)?;
    // And those only a queued unix message carries in flight (no process holds them):
    // ckpt's copy of each, from a peek, is held as the others (named by the unix
    // socket whose queue carries it).
    for t in crate::kinds::fd::inflight::tcp_sockets(&tree_pids(pid)) {
        let c = Some((t.local.clone(), t.peer.clone()));
        if !st.tcp.held.iter().any(|h| h.conn() == c) {
            st.tcp.held.push(Held {
                pid: t.holder,
                fd: t.queue,
                sock: t.sock,
                what: sys::tcp::Endpoint::Conn {
                    local: t.local,
                    peer: t.peer,
                },
            });
        }
    }
    let conns: Vec<_> = st.tcp.held.iter().filter_map(Held::conn).collect();
    st.tcp.lock = sys::netlock::Handover::hold(&conns)
        .map_err(|e| format!("cannot lock the tree's TCP connections: {e}"))?;
    Ok(())
}

/// Before the final image goes: every connection of the image locked, and, within one
/// network namespace, the source's sockets out of the way of the copy's (disconnected
/// in repair mode, which sends nothing: the peer sees a delay).
pub(super) fn prepare_tcp(meta: &crate::model::Checkpoint, st: &mut State) -> Result<(), String> {
    check_tcp(meta, st.tcp.make_room)?;
    if crate::kinds::ns::owns(meta, "net") {
        // The tree's network namespace goes with it: its peers are in the tree.
        return Ok(());
    }
    let conns = crate::kinds::ns::locked_connections(meta);
    let missing: Vec<_> = conns
        .into_iter()
        .filter(|c| !st.tcp.held.iter().any(|h| h.conn().as_ref() == Some(c)))
        .collect();
    st.tcp.unheld = !missing.is_empty();
    if let Some((l, p)) = missing.first() {
        if st.tcp.make_room {
            return Err(format!(
                "the TCP connection {} -> {} was not found among the tree's descriptors at \
                 the freeze: it cannot be moved within one network namespace",
                tcp::show_inet(l),
                tcp::show_inet(p)
            ));
        }
        match &mut st.tcp.lock {
            Some(lock) => lock.add(&missing),
            None => sys::netlock::Handover::hold(&missing).map(|l| st.tcp.lock = l),
        }
        .map_err(|e| format!("cannot lock the tree's TCP connections: {e}"))?;
    }
    if st.tcp.make_room {
        for (i, h) in st.tcp.held.iter().enumerate() {
            sys::tcp::disconnect(&h.sock).map_err(|e| {
                format!(
                    "process {}, descriptor {}: cannot make room for the copy: {e}",
                    h.pid, h.fd
                )
            })?;
            st.tcp.parked.push(i);
        }
    }
    Ok(())
}

/// The sockets `prepare_tcp` disconnected, as they were: each connection built again
/// on its socket from the image (`meta`), then, once they all are, the listeners
/// listen again. What could not be rebuilt stays parked (another try may follow).
pub(super) fn unpark(meta: &crate::model::Checkpoint, t: &mut TcpPart) -> Result<(), String> {
    let mut errs = Vec::new();
    let mut left = Vec::new();
    for &i in &t.parked {
        let Some(h) = t.held.get(i) else { continue };
        let sys::tcp::Endpoint::Conn { local, peer } = &h.what else {
            continue;
        };
        let r = match image_conn(meta, local, peer) {
            Some(c) => tcp::rebuild_in_place(&h.sock, c),
            None => Err("not in the image".into()),
        };
        if let Err(e) = r {
            errs.push(format!("process {}, descriptor {}: {e}", h.pid, h.fd));
            left.push(i);
        }
    }
    if errs.is_empty() {
        for &i in &t.parked {
            let Some(h) = t.held.get(i) else { continue };
            if let sys::tcp::Endpoint::Listen { backlog, addr } = &h.what {
                if let Err(e) = sys::tcp::listen_again(&h.sock, addr, *backlog) {
                    errs.push(format!("process {}, descriptor {}: {e}", h.pid, h.fd));
                    left.push(i);
                }
            }
        }
    } else {
        left.extend(
            t.parked
                .iter()
                .filter(|i| {
                    t.held
                        .get(**i)
                        .is_some_and(|h| matches!(h.what, sys::tcp::Endpoint::Listen { .. }))
                })
                .copied(),
        );
    }
    t.parked = left;
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the source's TCP sockets could not all be rebuilt ({})",
            errs.join("; ")
        ))
    }
}

/// The image's record of connection (local, peer).
pub(super) fn image_conn<'a>(
    meta: &'a crate::model::Checkpoint,
    local: &[u8],
    peer: &[u8],
) -> Option<&'a crate::model::TcpState> {
    meta.processes
        .iter()
        .flat_map(|p| &p.fds)
        .find_map(|f| match &f.kind {
            crate::model::FdKind::TcpConn { conn, .. }
                if conn.local == local && conn.peer == peer =>
            {
                Some(&**conn)
            }
            _ => None,
        })
}

/// Whether the receiver at the other end of `s` is in our network namespace: a
/// connection to an address of our own has that address at both ends.
pub(super) fn same_namespace(s: &TcpStream) -> bool {
    match (s.local_addr(), s.peer_addr()) {
        (Ok(l), Ok(p)) => l.ip() == p.ip(),
        _ => false,
    }
}

/// The processes of the tree rooted at `pid` (frozen: it does not change).
pub(super) fn tree_pids(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Ok(kids) = sys::proc::children(out[i]) {
            for k in kids {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        i += 1;
    }
    out
}

/// What `ckpt migrate` cannot move, refused before the tree is frozen for good. Within
/// one network namespace (`make_room`) the source's sockets leave their addresses to
/// the copy and must be built again if it does not come: only established connections
/// can be, and a listener must let the copy's bind its port beside it (SO_REUSEADDR or
/// SO_REUSEPORT).
pub(super) fn check_tcp(meta: &crate::model::Checkpoint, make_room: bool) -> Result<(), String> {
    if crate::kinds::ns::owns(meta, "net") {
        return Ok(());
    }
    if !make_room {
        // A connection over the loopback interface has its peer on this host, in this
        // network namespace: it cannot follow the process to another one.
        for p in &meta.processes {
            for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
                let crate::model::FdKind::TcpConn { conn, .. } = &f.kind else {
                    continue;
                };
                let loopback = match tcp::inet_addr(&conn.local).map(|a| a.ip()) {
                    Some(std::net::IpAddr::V4(a)) => a.is_loopback(),
                    Some(std::net::IpAddr::V6(a)) => {
                        a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
                    }
                    None => false,
                };
                if loopback {
                    return Err(format!(
                        "process {}, descriptor {}: the TCP connection {} -> {} is over the \
                         loopback interface: its peer is on this host and it cannot move to \
                         the receiver's network namespace (a receiver in this one can take it)",
                        p.pid,
                        f.fd,
                        tcp::show_inet(&conn.local),
                        tcp::show_inet(&conn.peer)
                    ));
                }
            }
        }
        return Ok(());
    }
    let why = "`ckpt migrate` to a receiver in the same network namespace moves only \
               established connections and listeners with SO_REUSEADDR or SO_REUSEPORT \
               (the source's sockets make room for the copy's and are built again if it \
               does not come)";
    for p in &meta.processes {
        for f in p.fds.iter().filter(|f| f.shared_with.is_none()) {
            match &f.kind {
                crate::model::FdKind::TcpConn { conn, .. }
                    if conn.state != 0 && conn.state != sys::tcp::TCP_ESTABLISHED =>
                {
                    return Err(format!(
                        "process {}, descriptor {}: the TCP connection {} -> {} is {}: {why}",
                        p.pid,
                        f.fd,
                        tcp::show_inet(&conn.local),
                        tcp::show_inet(&conn.peer),
                        tcp::state_name(conn.state)
                    ));
                }
                crate::model::FdKind::TcpListen {
                    addr,
                    reuseaddr,
                    opts,
                    ..
                } => {
                    let reuseport = opts.as_ref().is_some_and(|o| {
                        o.ints.iter().any(|i| {
                            i.level == libc::SOL_SOCKET
                                && i.name == libc::SO_REUSEPORT
                                && i.value != 0
                        })
                    });
                    if !reuseaddr && !reuseport {
                        return Err(format!(
                            "process {}, descriptor {}: the TCP listener on {} has neither \
                             SO_REUSEADDR nor SO_REUSEPORT: {why}",
                            p.pid,
                            f.fd,
                            tcp::show_inet(addr)
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `--lazy`, the receiver's copy runs (COMMITTED): it owns the connections now, while
/// the tree here stays frozen until every page arrived. The source's sockets end
/// without a word ([`abort_connections`]: closed in repair mode; within one network
/// namespace they were disconnected already, before the final image went) and the
/// lock goes, as in pre-copy when the tree is killed: from now on nothing of the
/// connections is left here to send or to hold a packet (within one namespace the
/// copy's sockets have the same four addresses, which the lock would otherwise keep
/// locked until the last page). If a socket cannot be ended (or was not found among
/// the descriptors, `unheld`: its dump's duplicate keeps it in repair mode) the lock
/// stays until the tree is killed.
pub(super) fn handed_over(t: &mut TcpPart) {
    if abort_connections(t, false).is_ok() && !t.unheld {
        if let Some(l) = t.lock.take() {
            l.release();
        }
    }
}

/// `--lazy`: the migration failed (`e` says how) and the tree is let go here, or kept
/// stopped if `st.unresolved`. If the copy never ran, the source's connections are as
/// they were (those disconnected to make room built again, as in pre-copy). If it may
/// have run (COMMIT went and no ERROR came back before COMMITTED) it may have sent or
/// acknowledged data on them that the source's sockets know nothing of, before it was
/// killed there for want of pages (or while it runs, unresolved): going on with them
/// could corrupt either stream without a sign, so they end here instead (see
/// [`abort_connections`]), and migrate's message says so.
pub(super) fn after_lazy_failure(
    meta: &crate::model::Checkpoint,
    st: &mut State,
    e: String,
) -> String {
    if !st.copy_may_run {
        if st.tcp.parked.is_empty() {
            return e;
        }
        return match unpark_within(meta, &mut st.tcp, UNPARK_WAIT) {
            Ok(()) => e,
            Err(u) => format!("{e}; {u}"),
        };
    }
    // Unresolved, the copy may run there with a listener of its own: the parked
    // listeners stay as they are.
    let relisten = st.unresolved.is_none();
    match abort_connections(&mut st.tcp, relisten) {
        Ok(0) => e,
        Ok(n) if st.unresolved.is_none() => format!(
            "{e}. The copy may have run on the receiver (it cannot go on there) and used \
             the process's {n} TCP connection(s): they were ended here (closed in repair \
             mode: nothing was sent to the peer; the program sees ECONNABORTED)"
        ),
        Ok(_) => e,
        Err(u) => format!("{e}; {u}"),
    }
}

/// The tree's connections ended on the source, silently: each disconnected in repair
/// mode (state CLOSE, queues emptied, no FIN or reset; the program's next call on it
/// fails with ECONNABORTED, then reads end of file), those parked to make room left so.
/// With `relisten` the listeners parked to make room listen again (retried for up to
/// `UNPARK_WAIT` while the dead copy's listener still holds the port). Returns how many
/// connections ended.
pub(super) fn abort_connections(t: &mut TcpPart, relisten: bool) -> Result<usize, String> {
    let mut errs = Vec::new();
    for (i, h) in t.held.iter().enumerate() {
        if h.conn().is_none() || t.parked.contains(&i) || t.ended.contains(&i) {
            continue;
        }
        match sys::tcp::disconnect(&h.sock) {
            Ok(()) => t.ended.push(i),
            Err(e) => errs.push(format!(
                "process {}, descriptor {}: cannot end the connection: {e}",
                h.pid, h.fd
            )),
        }
    }
    // Those parked are never built again.
    let mut parked = std::mem::take(&mut t.parked);
    parked.retain(|i| {
        let listens = t
            .held
            .get(*i)
            .is_some_and(|h| matches!(h.what, sys::tcp::Endpoint::Listen { .. }));
        if !listens {
            t.ended.push(*i);
        }
        listens
    });
    t.parked = parked;
    let ended = t.ended.len();
    if relisten {
        let deadline = Instant::now() + UNPARK_WAIT;
        loop {
            let mut left = Vec::new();
            let mut last = Vec::new();
            for &i in &t.parked {
                let Some(h) = t.held.get(i) else { continue };
                if let sys::tcp::Endpoint::Listen { backlog, addr } = &h.what {
                    if let Err(e) = sys::tcp::listen_again(&h.sock, addr, *backlog) {
                        last.push(format!("process {}, descriptor {}: {e}", h.pid, h.fd));
                        left.push(i);
                    }
                }
            }
            t.parked = left;
            if t.parked.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                errs.extend(last);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if errs.is_empty() {
        Ok(ended)
    } else {
        Err(format!(
            "the source's TCP sockets could not all be ended or listen again ({})",
            errs.join("; ")
        ))
    }
}

/// COMMIT was sent and no answer came, the receiver in our network namespace: a
/// connection's four addresses belong to one socket at a time there. If within a
/// second every connection of the tree can be built again here, the receiver holds
/// none of them (a copy that committed holds them all; one that did not has closed
/// them with its stubs), so the migration failed: the stop is taken back and the
/// source runs on. Otherwise it stays unresolved (the copy runs there, or the
/// receiver's stubs still hold them).
pub(super) fn settle_by_connections(meta: &crate::model::Checkpoint, st: &mut State) -> bool {
    if st.tcp.held.iter().all(|h| h.conn().is_none()) {
        return false;
    }
    if unpark_within(meta, &mut st.tcp, Duration::from_secs(1)).is_ok() {
        st.unresolved = None;
        disarm(st);
        return true;
    }
    false
}

/// How long a failed migration waits for the receiver's sockets to go before it gives
/// up rebuilding the source's (the receiver closes them as its restore fails).
pub(super) const UNPARK_WAIT: Duration = Duration::from_secs(5);

/// [`unpark`], tried again for up to `limit` while some connection's addresses are
/// still taken.
pub(super) fn unpark_within(
    meta: &crate::model::Checkpoint,
    t: &mut TcpPart,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match unpark(meta, t) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What an unresolved migration leaves of the tree's TCP connections.
pub(super) fn unresolved_tcp(t: &TcpPart) -> Option<String> {
    if t.held.iter().all(|h| h.conn().is_none()) {
        return None;
    }
    let lock = "The lock of its TCP connections here (netfilter table inet \
                ckpt_migrate_<this ckpt's PID>) went with this ckpt: nothing to remove";
    Some(if !t.ended.is_empty() {
        format!(
            "{lock}. Its {} TCP connection(s) were ended here (closed in repair mode, \
             nothing sent to the peer): the copy, if it runs, holds them; resumed, this \
             one would find them aborted (ECONNABORTED)",
            t.ended.len()
        )
    } else if t.parked.is_empty() {
        lock.to_string()
    } else {
        format!(
            "{lock}. Its TCP connections are held by another socket in this network \
             namespace, most likely the copy's on the receiver (its own sockets here made \
             room for them and could not be rebuilt): resumed, it would find them closed"
        )
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{checkpoint, fd, process};
    use crate::model::{FdKind, IntSockOpt, TcpOpts, TcpState};

    fn v4(port: u16) -> Vec<u8> {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&[127, 0, 0, 1]);
        a.resize(16, 0);
        a
    }

    fn conn(state: u8) -> FdKind {
        FdKind::TcpConn {
            conn: Box::new(TcpState {
                family: libc::AF_INET,
                local: v4(8080),
                peer: v4(40000),
                state,
                ..TcpState::default()
            }),
            flags: 0,
        }
    }

    fn listener(reuseaddr: bool, reuseport: bool) -> FdKind {
        let ints = if reuseport {
            vec![IntSockOpt {
                level: libc::SOL_SOCKET,
                name: libc::SO_REUSEPORT,
                value: 1,
            }]
        } else {
            Vec::new()
        };
        FdKind::TcpListen {
            family: libc::AF_INET,
            addr: v4(8080),
            backlog: 16,
            reuseaddr,
            v6only: false,
            flags: 0,
            opts: Some(Box::new(TcpOpts {
                ints,
                ..TcpOpts::default()
            })),
            queue: Vec::new(),
        }
    }

    fn image(kinds: Vec<FdKind>) -> crate::model::Checkpoint {
        let mut p = process(100);
        p.fds = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| fd(3 + i as i32, k))
            .collect();
        checkpoint(vec![p])
    }

    /// Within one namespace: established connections and listeners with a reuse
    /// option pass; a half-closed connection and a listener without one are refused,
    /// naming the process, the descriptor and the socket. To another namespace,
    /// everything restore takes passes.
    #[test]
    fn what_moves_within_one_namespace() {
        let ok = image(vec![
            conn(sys::tcp::TCP_ESTABLISHED),
            listener(true, false),
            listener(false, true),
        ]);
        assert_eq!(check_tcp(&ok, true), Ok(()));
        let half = image(vec![conn(sys::tcp::TCP_FIN_WAIT1)]);
        let e = check_tcp(&half, true).err().unwrap_or_default();
        assert!(
            e.contains("process 100, descriptor 3")
                && e.contains("127.0.0.1:8080 -> 127.0.0.1:40000")
                && e.contains("FIN_WAIT1"),
            "{e}"
        );
        // To another namespace: a loopback connection cannot follow.
        let e = check_tcp(&half, false).err().unwrap_or_default();
        assert!(e.contains("loopback"), "{e}");
        let bare = image(vec![conn(0), listener(false, false)]);
        let e = check_tcp(&bare, true).err().unwrap_or_default();
        assert!(
            e.contains("descriptor 4") && e.contains("neither SO_REUSEADDR nor SO_REUSEPORT"),
            "{e}"
        );
        let e = check_tcp(&bare, false).err().unwrap_or_default();
        assert!(e.contains("descriptor 3") && e.contains("loopback"), "{e}");
        let mut far = bare.clone();
        if let FdKind::TcpConn { conn, .. } = &mut far.processes[0].fds[0].kind {
            conn.local[4..8].copy_from_slice(&[10, 1, 2, 3]);
        }
        assert_eq!(check_tcp(&far, false), Ok(()));
    }
}
