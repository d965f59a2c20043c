//! `ckpt migrate` of a process with TCP connections (issue 17): mostly the source and
//! the receiver share the test's network namespace (one machine), so the connections'
//! peers are the test's own sockets, which must not notice anything but a delay; two
//! tests move it to a receiver in another namespace (see
//! `connections_move_to_another_namespace`). The
//! target (`tests/targets/migtcp.c`) holds a connection it made to the test and one it
//! accepted from the test on its listener; before the migration it has megabytes
//! queued towards the test (which does not read yet) and unread bytes from the test
//! on both. Whichever copy runs afterwards must deliver the queued bytes in order,
//! read what was queued for it plus what comes next, and answer on both connections.
//! Failures before the receiver's confirmation leave the source running with its
//! connections; no rule of ours is left in netfilter. With `--lazy` (post-copy) the
//! copy owns the connections from its commit on while the frozen source still serves
//! its pages; a failure after that ends the source's connections (the copy may have
//! used them) and it runs on without them.
//!
//! Needs root and nftables. Run with cargo-nextest.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::migration::*;
use common::twohosts::Net;
use common::*;

/// The target and the test's ends of its two connections.
struct Setup {
    t: Proc,
    /// The test's end of the connection the target made.
    pa: TcpStream,
    /// The test's end of the connection the target accepted.
    pb: TcpStream,
    /// The port the target made the connection to (its argument).
    port: u16,
    /// The target's listening port.
    lport: u16,
    /// Bytes the target queued towards `pa` ("fill").
    filled: usize,
    /// The target's address.
    local: String,
    /// The network namespace the test's ends live in (a path), if not the test's own.
    net: Option<String>,
}

const A1: &[u8] = b"hello-A-1";
const A2: &[u8] = b"hello-A-2";
const B1: &[u8] = b"hello-B-1";

fn setup(ctx: &Ctx) -> Setup {
    setup_with(ctx, 0, None)
}

/// [`setup`] with the target writing `rate` pages a second (a final image with pages
/// for post-copy) and, with `at` (the test's address, the target's, and the network
/// namespace the test's ends are made in), the connections between those addresses
/// instead of 127.0.0.1.
fn setup_with(ctx: &Ctx, rate: u32, at: Option<(&str, &str, &str)>) -> Setup {
    let (peer, local, net) = match at {
        Some((p, l, n)) => (p, l, Some(n)),
        None => ("127.0.0.1", "127.0.0.1", None),
    };
    let l = in_net(net, || TcpListener::bind((peer, 0))).unwrap_or_else(|e| panic!("bind: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut spec = Spec::new(target("migtcp"))
        .arg(port.to_string())
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    if rate > 0 || at.is_some() {
        spec = spec.arg(rate.to_string());
    }
    if at.is_some() {
        spec = spec.arg(peer).arg(local);
    }
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready ");
    let lport: u16 = t
        .stdout
        .text()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let (mut pa, _) = l.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let mut pb = in_net(net, || connect_from(peer, (local, lport)));
    t.wait_for("accepted\n");
    t.write_stdin(b"fill\n");
    t.wait_for("filled ");
    let filled: usize = t
        .stdout
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("filled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(filled > 100_000, "filled {filled}");
    // Unread by the target: in its receive queues.
    pa.write_all(A1).unwrap_or_else(|e| panic!("{e}"));
    pb.write_all(B1).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(200));
    for s in [&pa, &pb] {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Setup {
        t,
        pa,
        pb,
        port,
        lport,
        filled,
        local: local.to_string(),
        net: net.map(str::to_string),
    }
}

/// `f` run in the network namespace at path `net` (from a thread that joined it: the
/// sockets it makes stay that namespace's), or here.
fn in_net<T: Send>(net: Option<&str>, f: impl FnOnce() -> T + Send) -> T {
    let Some(net) = net else { return f() };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let ns = std::fs::File::open(net).unwrap_or_else(|e| panic!("{net}: {e}"));
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {net}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("in {net}: failed"))
    })
}

/// A connection to `to` from address `from` (bound first: the kernel would pick the
/// destination itself when it is an address of ours).
fn connect_from(from: &str, to: (&str, u16)) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let ip = |a: &str| -> std::net::Ipv4Addr { a.parse().unwrap_or_else(|e| panic!("{a}: {e}")) };
    let s = socket(AddressFamily::INET, SocketType::STREAM, None)
        .unwrap_or_else(|e| panic!("socket: {e}"));
    bind(&s, &std::net::SocketAddrV4::new(ip(from), 0)).unwrap_or_else(|e| panic!("bind: {e}"));
    connect(&s, &std::net::SocketAddrV4::new(ip(to.0), to.1))
        .unwrap_or_else(|e| panic!("connect to {to:?}: {e}"));
    TcpStream::from(s)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `ckpt receive` in our network namespace, with --new-pidns (the source's PIDs are
/// still taken while it is frozen).
fn receiver(ctx: &Ctx, port: u16, env: &[(&str, &str)]) -> Proc {
    receive(
        ctx,
        None,
        &format!("127.0.0.1:{port}"),
        &ctx.path("recv-tmp"),
        env,
    )
}

fn migrate(ctx: &Ctx, pid: i32, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Finished {
    migrate_to(ctx, pid, &format!("127.0.0.1:{port}"), 2, extra, env)
}

/// The peer's side of the test: the bytes the target queued arrive in order (the
/// pattern of `migtcp.c`), then more is sent on the first connection.
fn peer_reads_the_queued_bytes(s: &mut Setup, what: &str) {
    let mut got = vec![0u8; s.filled];
    s.pa.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: read the {} queued bytes: {e}", s.filled));
    let bad = got
        .iter()
        .enumerate()
        .position(|(i, b)| *b != ((i * 7 + 3) % 251) as u8);
    assert_eq!(bad, None, "{what}: the queued bytes differ");
    s.pa.write_all(A2).unwrap_or_else(|e| panic!("{what}: {e}"));
    std::thread::sleep(Duration::from_millis(200));
}

fn sum(b: &[u8]) -> u64 {
    b.iter().map(|x| u64::from(*x)).sum()
}

/// Tell whoever relays the target's stdin (`via`) to read: it must have read, on each
/// connection, what was queued for it and what came after, and answered on both.
fn the_copy_reads_and_answers(pa: &mut TcpStream, pb: &mut TcpStream, via: &mut Proc, what: &str) {
    let n = via.stdout.lines();
    via.write_stdin(b"read\n");
    via.wait_until("answer read", |p| {
        p.stdout
            .text()
            .lines()
            .skip(n)
            .any(|l| l.starts_with("read "))
    });
    let line = via
        .stdout
        .text()
        .lines()
        .skip(n)
        .find(|l| l.starts_with("read "))
        .unwrap_or_default()
        .to_string();
    let a: Vec<u8> = [A1, A2].concat();
    let want = format!("read A {} {} B {} {}", a.len(), sum(&a), B1.len(), sum(B1));
    assert_eq!(line, want, "{what}");
    for (sock, len, total) in [(pa, a.len(), sum(&a)), (pb, B1.len(), sum(B1))] {
        let want = format!("got {len} {total}\n");
        let mut buf = vec![0u8; want.len()];
        sock.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: the answer: {e}"));
        assert_eq!(String::from_utf8_lossy(&buf), want, "{what}");
    }
}

/// A new client connects to the listener of whichever copy runs (`via` relays its
/// stdin) and talks both ways: the listener listens and takes it as before.
fn listener_takes_a_new_client(at: (&str, u16), net: Option<&str>, via: &mut Proc, what: &str) {
    let ip: std::net::Ipv4Addr = at.0.parse().unwrap_or_else(|e| panic!("{e}"));
    let to = std::net::SocketAddr::from((ip, at.1));
    let mut c = in_net(net, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(10))
    })
    .unwrap_or_else(|e| panic!("{what}: a new client's connect to the listener {to}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = b"a-new-client\n";
    c.write_all(msg)
        .unwrap_or_else(|e| panic!("{what}: write to the new connection: {e}"));
    let n = via.stdout.lines();
    via.write_stdin(b"take\n");
    let want = format!("took {} {}", msg.len(), sum(msg));
    let mut got = vec![0u8; want.len() + 1];
    c.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: the new connection's answer: {e}"));
    assert_eq!(String::from_utf8_lossy(&got), format!("{want}\n"), "{what}");
    via.wait_until("the program took the new client", |p| {
        p.stdout.text().lines().skip(n).any(|l| l == want)
    });
}

/// No netfilter rule for the target's connections is left, and no table of ours.
fn no_lock_left(s: &Setup, what: &str) {
    no_lock_left_in(None, s, what);
}

/// [`no_lock_left`] in the network namespace at path `net` (ours if None).
fn no_lock_left_in(net: Option<&str>, s: &Setup, what: &str) {
    let mut nft = std::process::Command::new("nsenter");
    nft.arg(format!("--net={}", net.unwrap_or("/proc/self/ns/net")))
        .args(["nft", "list", "ruleset"]);
    let out = nft.output().unwrap_or_else(|e| panic!("nft: {e}"));
    let rules = String::from_utf8_lossy(&out.stdout);
    for port in [s.port, s.lport] {
        let mine = format!("{} {port} ", s.local);
        assert!(
            !rules
                .lines()
                .any(|l| l.contains("comment") && l.contains(&mine)),
            "{what}: a lock rule of port {port} is left:\n{rules}"
        );
    }
}

/// Processes running the target for this test (its port argument).
fn copies(port: u16) -> Vec<(i32, char)> {
    copies_of("migtcp", 1, &port.to_string())
}

/// The process moves with both connections and its listener: the test, their peer,
/// gets the megabytes the source had queued, in order, and talks to the copy over the
/// same connections (sequence numbers go on); the listener takes new connections; the
/// source is gone; the copy is the source as the kernel shows it (sock_diag included);
/// no lock is left.
#[test]
fn tcp_connections_move_with_the_process() {
    connections_move("tcp_connections_move_with_the_process", false);
}

/// The same with `--lazy` (post-copy): the target writes pages all the time, so the
/// final image has pages that come after the copy runs; once every one is in, the copy
/// is the source as the kernel shows it and carries the connections on.
#[test]
fn tcp_connections_move_with_a_lazy_migration() {
    connections_move("tcp_connections_move_with_a_lazy_migration", true);
}

fn connections_move(name: &str, lazy: bool) {
    let ctx = Ctx::new(name);
    let mut s = setup_with(&ctx, if lazy { 300 } else { 0 }, None);
    let pid = s.t.pid;
    let shown = oracle::Snapshot::take(pid);
    let rport = free_port();
    let mut r = receiver(&ctx, rport, &[]);
    let (extra, env): (&[&str], &[(&str, &str)]) = if lazy {
        (&["--lazy"], &[("CKPT_MIGRATE_PUSH_MS", "5")])
    } else {
        (&[], &[])
    };
    let m = migrate(&ctx, pid, rport, extra, env);
    let err = text(&m.stderr);
    assert_eq!(
        m.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap_or_default();
    assert_eq!(v["lazy"], lazy, "{v}");
    if lazy {
        let post = v["post_copy_bytes"].as_u64().unwrap_or(0);
        assert!(post >= 4096, "no page came after the copy ran: {v}");
    }
    s.t.expect_killed();
    r.wait_until("receive's JSON", |p| p.stdout.text().contains("restore_ms"));
    let c = copies(s.port);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    if lazy {
        // Every page is in: no area of the copy still registered for missing pages.
        wait_for(
            "the copy's areas unregistered",
            Duration::from_secs(20),
            || {
                !std::fs::read_to_string(format!("/proc/{}/smaps", c[0].0))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
            },
        );
    }
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        "migtcp",
        &format!(
            "a process with TCP connections migrated within one network namespace{}, \
             received with --new-pidns",
            if lazy { " with --lazy" } else { "" }
        ),
        oracle::Cmp::Restored,
        &shown,
        &after,
        &[
            // The new PID namespace --new-pidns makes, and the mount namespace its init
            // made to mount that namespace's /proc.
            "*.ns.pid",
            "*.ns.pid.parent",
            "*.ns.pid_for_children",
            "*.ns.mnt",
            "*.mountinfo",
            "*.fdinfo.mnt_id",
        ],
    );
    no_lock_left(&s, "after the migration");
    peer_reads_the_queued_bytes(&mut s, "the copy");
    the_copy_reads_and_answers(&mut s.pa, &mut s.pb, &mut r, "the copy");
    listener_takes_a_new_client((&s.local, s.lport), s.net.as_deref(), &mut r, "the copy");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
}

/// The receiver in another network namespace (another "host", `twohosts::Net`), the
/// test's ends of the connections in a third, the client's, joined to ours (the
/// source's) and to the receiver's by veth pairs. The service address, the target's,
/// is on our end of the client's link and, for the copy's sockets, on the receiver's
/// loopback; the client reaches it by a route through us that the test turns to the
/// receiver's link while the migration holds the connections locked on both sides
/// (the source frozen, the receiver staged: `CKPT_LINGER` at `migrate: staged`), as
/// the network would move the address. The copy carries the connections on (the
/// megabytes queued towards the client arrive in order, both ends talk), its listener
/// takes a new client, the oracle sees the source's sockets in the copy, no lock is
/// left on either side.
#[test]
fn tcp_connections_move_to_a_receiver_in_another_network_namespace() {
    connections_move_to_another_namespace(
        "tcp_connections_move_to_a_receiver_in_another_network_namespace",
        1,
        false,
    );
}

/// The same with `--lazy`: the copy owns the connections from its commit on while the
/// source, frozen, still serves its pages.
#[test]
fn tcp_connections_move_to_another_network_namespace_with_a_lazy_migration() {
    connections_move_to_another_namespace(
        "tcp_connections_move_to_another_network_namespace_with_a_lazy_migration",
        2,
        true,
    );
}

fn connections_move_to_another_namespace(name: &str, n: u32, lazy: bool) {
    let ctx = Ctx::new(name);
    // The receiver's "host" (10.235.n.2, the migration's channel) and the client's
    // (10.235.n+50.2).
    let rnet = Net::new("ckt", 235, n);
    let cnet = Net::new("ckc", 235, n + 50);
    // The client's link to the receiver: 10.236.n.1 (client) / .2 (receiver).
    let (cr, rc) = (format!("ckcr{n}"), format!("ckrc{n}"));
    let holder = rnet.holder().to_string();
    cnet.ip(&[
        "link", "add", &cr, "type", "veth", "peer", "name", &rc, "netns", &holder,
    ]);
    cnet.ip(&["addr", "add", &format!("10.236.{n}.1/24"), "dev", &cr]);
    cnet.ip(&["link", "set", &cr, "up"]);
    rnet.ip(&["addr", "add", &format!("10.236.{n}.2/24"), "dev", &rc]);
    rnet.ip(&["link", "set", &rc, "up"]);
    let client = cnet.theirs();
    let service = format!("10.237.{n}.10");
    let service32 = format!("{service}/32");
    let (ours, via_us) = cnet.ours();
    let st = std::process::Command::new("ip")
        .args(["addr", "add", &service32, "dev", &ours])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "ip addr add {service32}");
    rnet.ip(&["addr", "add", &service32, "dev", "lo"]);
    cnet.ip(&["route", "add", &service32, "via", &via_us]);
    rnet.ip(&[
        "route",
        "add",
        &format!("{client}/32"),
        "via",
        &format!("10.236.{n}.1"),
    ]);
    let cpath = cnet.path();
    let mut s = setup_with(
        &ctx,
        if lazy { 300 } else { 0 },
        Some((&client, &service, &cpath)),
    );
    let pid = s.t.pid;
    let shown = oracle::Snapshot::take(pid);
    let mut r = receive(
        &ctx,
        Some(&rnet.path()),
        &rnet.to(),
        &ctx.path("recv-tmp"),
        &[],
    );
    let mut env = vec![
        ("CKPT_DIE_TRACE", "1"),
        ("CKPT_LINGER", "migrate: staged:3000"),
    ];
    if lazy {
        env.push(("CKPT_MIGRATE_PUSH_MS", "5"));
    }
    let extra: &[&str] = if lazy { &["--lazy"] } else { &[] };
    let mut mig = migrate_start(&ctx, pid, &rnet.to(), 2, extra, &env);
    mig.wait_until("the receiver staged", |p| {
        p.stderr.text().contains("migrate: staged")
    });
    // Both sides hold the connections locked: the network moves the address.
    let to_receiver = format!("10.236.{n}.2");
    cnet.ip(&["route", "replace", &service32, "via", &to_receiver]);
    let m = mig.finish();
    let err = text(&m.stderr);
    assert_eq!(
        m.status.code(),
        Some(0),
        "migrate: {err}\nreceiver: {}",
        r.stderr.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap_or_default();
    assert_eq!(v["lazy"], lazy, "{v}");
    s.t.expect_killed();
    r.wait_until("receive's JSON", |p| p.stdout.text().contains("restore_ms"));
    let c = copies(s.port);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    if lazy {
        wait_for(
            "the copy's areas unregistered",
            Duration::from_secs(20),
            || {
                !std::fs::read_to_string(format!("/proc/{}/smaps", c[0].0))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "um"))
            },
        );
    }
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        "migtcp",
        &format!(
            "a process with TCP connections migrated to a receiver in another network \
             namespace{}, received with --new-pidns",
            if lazy { " with --lazy" } else { "" }
        ),
        oracle::Cmp::Restored,
        &shown,
        &after,
        RECEIVER_NAMESPACES,
    );
    no_lock_left(&s, name);
    no_lock_left_in(Some(&rnet.path()), &s, name);
    peer_reads_the_queued_bytes(&mut s, "the copy");
    the_copy_reads_and_answers(&mut s.pa, &mut s.pb, &mut r, "the copy");
    listener_takes_a_new_client((&s.local, s.lport), s.net.as_deref(), &mut r, "the copy");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
}

/// A connection only in flight (the target sent it to itself over a unix socket pair
/// and closed it: only the queued `SCM_RIGHTS` message holds it) moves with a
/// migration to a receiver in this network namespace: ckpt holds its copy of it from a
/// peek at the freeze, so it makes room for the copy's like the others. The copy is
/// the source as the kernel shows it (the oracle), takes the connection back, the
/// megabytes queued on it arrive in order and both ends talk.
#[test]
fn a_tcp_connection_only_in_flight_moves_within_one_namespace() {
    let name = "a_tcp_connection_only_in_flight_moves_within_one_namespace";
    let ctx = Ctx::new(name);
    let mut s = setup(&ctx);
    let pid = s.t.pid;
    s.t.write_stdin(b"park\n");
    s.t.wait_for("parked\n");
    let shown = oracle::Snapshot::take(pid);
    let rport = free_port();
    let mut r = receiver(&ctx, rport, &[]);
    let m = migrate(&ctx, pid, rport, &[], &[]);
    assert_eq!(
        m.status.code(),
        Some(0),
        "migrate: {}\nreceiver: {}",
        text(&m.stderr),
        r.stderr.text()
    );
    s.t.expect_killed();
    r.wait_until("receive's JSON", |p| p.stdout.text().contains("restore_ms"));
    let c = copies(s.port);
    assert_eq!(c.len(), 1, "copies: {c:?}");
    let after = oracle::Snapshot::take(c[0].0)
        .moved(true)
        .as_seen_in_its_pid_namespace();
    oracle::assert_same_kernel_state(
        "migtcp",
        "a process with a TCP connection only in flight migrated within one network \
         namespace, received with --new-pidns",
        oracle::Cmp::Restored,
        &shown,
        &after,
        &[
            "*.ns.pid",
            "*.ns.pid.parent",
            "*.ns.pid_for_children",
            "*.ns.mnt",
            "*.mountinfo",
            "*.fdinfo.mnt_id",
        ],
    );
    no_lock_left(&s, name);
    r.write_stdin(b"unpark\n");
    r.wait_for("unparked\n");
    peer_reads_the_queued_bytes(&mut s, "the copy");
    the_copy_reads_and_answers(&mut s.pa, &mut s.pb, &mut r, "the copy");
    listener_takes_a_new_client((&s.local, s.lport), s.net.as_deref(), &mut r, "the copy");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "receive: {}", text(&fin.stderr));
}

/// A failure before the receiver's confirmation: migrate fails saying `says`, the
/// receiver restores nothing, the source runs on alone with its connections (their
/// queued data, both ways), and no lock is left.
fn source_keeps_its_connections(
    name: &str,
    extra: &[&str],
    sender_env: &[(&str, &str)],
    recv_env: &[(&str, &str)],
    says: &[&str],
) {
    let ctx = Ctx::new(name);
    let lazy = extra.contains(&"--lazy");
    let mut s = setup_with(&ctx, if lazy { 300 } else { 0 }, None);
    let pid = s.t.pid;
    let shown = oracle::Snapshot::take(pid);
    let rport = free_port();
    let mut r = receiver(&ctx, rport, recv_env);
    let m = migrate(&ctx, pid, rport, extra, sender_env);
    let err = text(&m.stderr);
    eprintln!(
        "migrate: {:?}\n{err}\nreceiver: {}",
        m.status,
        r.stderr.text()
    );
    assert_eq!(m.status.code(), Some(1), "{name}: {err}");
    assert!(
        says.iter().any(|w| err.contains(w)),
        "{name}: migrate's message has none of {says:?}: {err}"
    );
    assert_ne!(r.wait().code(), Some(0), "receive: {}", r.stderr.text());
    source_runs_on_with_its_sockets(&mut s, &shown, name);
}

/// After a failed migration: the source runs alone, untraced, no lock left; the kernel
/// shows its sockets as before the migration (the oracle: the listener in LISTEN with
/// its backlog and options, the connections with their queues); its listener takes a
/// new client; its connections deliver what was queued both ways and carry on.
fn source_runs_on_with_its_sockets(s: &mut Setup, shown: &oracle::Snapshot, name: &str) {
    let pid = s.t.pid;
    wait_for("the source is let go", Duration::from_secs(10), || {
        matches!(proc_stat(pid), Some(('R' | 'S', _)))
    });
    assert_running_untraced(pid, name);
    let c = copies(s.port);
    assert!(c.len() == 1 && c[0].0 == pid, "{name}: copies {c:?}");
    no_lock_left(s, name);
    let after = oracle::Snapshot::take(pid);
    oracle::assert_same_kernel_state(
        name,
        "a process with TCP connections after a failed migration within one network \
         namespace, against itself before it",
        oracle::Cmp::LeftRunning,
        shown,
        &after,
        &[],
    );
    listener_takes_a_new_client((&s.local, s.lport), s.net.as_deref(), &mut s.t, name);
    peer_reads_the_queued_bytes(s, name);
    the_copy_reads_and_answers(&mut s.pa, &mut s.pb, &mut s.t, name);
}

/// The receiver cannot restore it (a kernel facility masked there): the source had
/// made room for the copy's sockets and builds its own again.
#[test]
fn plan_refusal_on_the_receiver_leaves_the_source_its_connections() {
    source_keeps_its_connections(
        "plan_refusal_on_the_receiver_leaves_the_source_its_connections",
        &[],
        &[],
        &[("CKPT_HOST_MASK", "no-kernel=clone3-set-tid")],
        &["the receiver cannot restore it"],
    );
}

/// The receiver's restore dies once it has built the copy (its sockets included, in
/// repair mode) and said STAGED: the source waits until those sockets are gone and
/// builds its own again.
#[test]
fn receiver_killed_after_staged_leaves_the_source_its_connections() {
    source_keeps_its_connections(
        "receiver_killed_after_staged_leaves_the_source_its_connections",
        &[],
        &[],
        &[("CKPT_DIE_AT", "name:receive: staged")],
        // Its ERROR, or, when it closed the connection before COMMIT went, that.
        &[
            "the receiver failed to restore it",
            "the connection to the peer",
        ],
    );
}

/// The receiver is killed while the source waits for its confirmation (COMMIT sent,
/// the receiver still before its commit): the source cannot tell from the protocol,
/// but every connection's addresses are free again once the receiver's sockets are
/// gone, which no committed copy allows: the migration failed, the source runs on.
#[test]
fn receiver_killed_before_its_commit_is_settled_by_the_connections() {
    let name = "receiver_killed_before_its_commit_is_settled_by_the_connections";
    let ctx = Ctx::new(name);
    let mut s = setup(&ctx);
    let pid = s.t.pid;
    let shown = oracle::Snapshot::take(pid);
    let rport = free_port();
    // The receiver's restore waits 3 s after STAGED before it reads COMMIT.
    let mut r = receiver(&ctx, rport, &[("CKPT_LINGER", "receive: staged:3000")]);
    let rpid = r.pid;
    let killer = std::thread::spawn(move || {
        // COMMIT is sent right after the SIGSTOP is armed in the source (pending).
        let armed = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
                .any(|l| {
                    u64::from_str_radix(l.split_whitespace().nth(1).unwrap_or("0"), 16)
                        .is_ok_and(|m| m & (1 << (libc::SIGSTOP - 1)) != 0)
                })
        };
        wait_for("the source armed", Duration::from_secs(60), armed);
        std::thread::sleep(Duration::from_millis(300));
        // The receiver and its PID namespace's init, which lingers before its commit.
        for p in descendants(rpid).into_iter().rev().chain([rpid]) {
            let _ = send_signal(p, libc::SIGKILL);
        }
    });
    let m = migrate(&ctx, pid, rport, &[], &[]);
    let _ = killer.join();
    let err = text(&m.stderr);
    eprintln!("migrate: {:?}\n{err}", m.status);
    assert_eq!(m.status.code(), Some(1), "{err}");
    assert!(err.contains("no copy runs on the receiver"), "{err}");
    let _ = r.wait();
    source_runs_on_with_its_sockets(&mut s, &shown, name);
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok())
            {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// The receiver commits and dies before its confirmation: one copy runs there, holding
/// the connections (the bytes the source had queued come from it), the source stays
/// stopped and migrate says so, and that the lock went with it.
#[test]
fn confirmation_lost_leaves_one_copy_holding_the_connections() {
    let ctx = Ctx::new("confirmation_lost_leaves_one_copy_holding_the_connections");
    let mut s = setup(&ctx);
    let pid = s.t.pid;
    let rport = free_port();
    let mut r = receiver(&ctx, rport, &[("CKPT_DIE_AT", "name:receive: committed")]);
    let m = migrate(&ctx, pid, rport, &[], &[]);
    let err = text(&m.stderr);
    assert_eq!(m.status.code(), Some(3), "{err}");
    assert!(
        err.contains("STOPPED") && err.contains("went with this ckpt"),
        "{err}"
    );
    let _ = r.wait();
    wait_for("the source stops", Duration::from_secs(10), || {
        proc_stat(pid).is_some_and(|x| x.0 == 'T')
    });
    let c = copies(s.port);
    let running: Vec<_> = c.iter().filter(|x| x.1 != 'T').collect();
    assert_eq!(running.len(), 1, "copies: {c:?}");
    assert_ne!(running[0].0, pid, "copies: {c:?}");
    no_lock_left(&s, "confirmation lost");
    // The copy holds the connections: what the source had queued comes from it.
    let mut got = vec![0u8; s.filled];
    s.pa.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("read the queued bytes from the copy: {e}"));
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == ((i * 7 + 3) % 251) as u8)
    );
    let _ = send_signal(running[0].0, libc::SIGKILL);
    s.t.kill();
}

/// `--lazy`, the receiver's plan refuses the image: the source's sockets, which made
/// room for the copy's, are built again and it runs on with its connections.
#[test]
fn lazy_plan_refusal_leaves_the_source_its_connections() {
    source_keeps_its_connections(
        "lazy_plan_refusal_leaves_the_source_its_connections",
        &["--lazy"],
        &[],
        &[("CKPT_HOST_MASK", "no-kernel=clone3-set-tid")],
        &["the receiver cannot restore it"],
    );
}

/// `--lazy`, the receiver dies once it planned, before it staged (so before COMMIT
/// could go): its copy never ran, and the source runs on with its connections.
#[test]
fn lazy_receiver_killed_before_its_commit_leaves_the_source_its_connections() {
    source_keeps_its_connections(
        "lazy_receiver_killed_before_its_commit_leaves_the_source_its_connections",
        &["--lazy"],
        &[],
        &[("CKPT_DIE_AT", "name:receive: planned")],
        &["the connection to the peer", "the receiver"],
    );
}

/// `--lazy`, the connection is cut once the final image (without its pages) went,
/// before COMMIT: nothing ran there, the source runs on with its connections.
#[test]
fn lazy_connection_cut_before_commit_leaves_the_source_its_connections() {
    source_keeps_its_connections(
        "lazy_connection_cut_before_commit_leaves_the_source_its_connections",
        &["--lazy"],
        &[("CKPT_MIGRATE_CUT", "migrate: final sent")],
        &[],
        &["connection"],
    );
}

/// `--lazy`, the connection is cut once the copy ran (COMMITTED), pages still unsent:
/// the copy cannot go on and is killed there; the source runs on alone, but the copy
/// may have used the connections, so the source's are ended (silently: repair mode)
/// and migrate says so; the test, their peer, sees them end (the copy's close); no
/// lock is left.
#[test]
fn lazy_connection_cut_after_commit_ends_the_connections_and_the_source_runs_on() {
    let name = "lazy_connection_cut_after_commit_ends_the_connections_and_the_source_runs_on";
    let ctx = Ctx::new(name);
    let mut s = setup_with(&ctx, 300, None);
    let pid = s.t.pid;
    let rport = free_port();
    let mut r = receiver(&ctx, rport, &[]);
    let m = migrate(
        &ctx,
        pid,
        rport,
        &["--lazy"],
        &[
            ("CKPT_MIGRATE_PUSH_MS", "300"),
            ("CKPT_MIGRATE_CUT", "migrate: committed"),
        ],
    );
    let err = text(&m.stderr);
    eprintln!(
        "migrate: {:?}\n{err}\nreceiver: {}",
        m.status,
        r.stderr.text()
    );
    assert_eq!(m.status.code(), Some(1), "{err}");
    assert!(
        err.contains("had not been sent") && err.contains("2 TCP connection(s): they were ended"),
        "{err}"
    );
    assert_ne!(r.wait().code(), Some(0), "receive: {}", r.stderr.text());
    wait_for("the source is let go", Duration::from_secs(10), || {
        matches!(proc_stat(pid), Some(('R' | 'S', _)))
    });
    assert_running_untraced(pid, name);
    let c = copies(s.port);
    assert!(c.len() == 1 && c[0].0 == pid, "{name}: copies {c:?}");
    no_lock_left(&s, name);
    // The peer's ends: closed (end of file or a reset) once whatever came is read.
    for (what, sock) in [("A", &mut s.pa), ("B", &mut s.pb)] {
        let mut buf = vec![0u8; 1 << 16];
        let ended = loop {
            match sock.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(
            ended.is_ok(),
            "{name}: connection {what} did not end: {ended:?}"
        );
    }
    // Its listener, parked to make room for the copy's, listens again.
    listener_takes_a_new_client((&s.local, s.lport), s.net.as_deref(), &mut s.t, name);
    s.t.kill();
}
