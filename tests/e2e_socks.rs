//! End-to-end tests of sockets beyond stream unix pairs and TCP: unix datagram and
//! seqpacket socket pairs with messages queued both ways (read at dump without consuming
//! them, so a process dumped with `--leave-running` still gets every message), UDP
//! sockets, and descriptors leading outside the tree given back with `--inherit-fd`.
//! Each run is compared byte for byte with an uninterrupted run's output.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).

// Test harness code: raw libc calls on the test's own processes are fine here.
#![allow(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod common;

use serde_json::Value;

use common::*;

/// The socket pairs of an image by type: (type, messages queued to end 0, to end 1).
fn pair_queues(j: &Value) -> Vec<(i64, usize, usize)> {
    j["socketpairs"]
        .as_array()
        .unwrap_or_else(|| panic!("no socketpairs array in the image: {j}"))
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_array().map(|a| a.len()).unwrap_or(0);
            (p["typ"].as_i64().unwrap_or(-1), n("msgs0"), n("msgs1"))
        })
        .collect()
}

/// Whether the image holds one datagram and one seqpacket pair (asserted) with messages
/// queued both ways on each (`Err` says how not: that depends on how the two processes
/// were scheduled, not on ckpt).
fn messages_queued_both_ways(ctx: &Ctx, img: &std::path::Path, what: &str) -> Result<(), String> {
    let mut q = pair_queues(&ctx.inspect_json(img));
    q.sort();
    assert_eq!(
        q.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![libc::SOCK_DGRAM as i64, libc::SOCK_SEQPACKET as i64],
        "{what}: the image should hold one datagram and one seqpacket pair: {q:?}"
    );
    for (typ, a, b) in q {
        if a < 2 || b < 2 {
            return Err(format!(
                "{what}: messages should be queued both ways on the pair of type {typ}: \
                 {a} to end 0, {b} to end 1"
            ));
        }
    }
    Ok(())
}

#[test]
fn unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways() {
    let ctx = Ctx::new("unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways");
    const STEPS: u32 = 150;
    const AHEAD: u32 = 5;
    let spec = Spec::new(target("dgsock"))
        .arg(STEPS.to_string())
        .arg(AHEAD.to_string())
        .arg("sleep=15");
    let mut rp = ctx.spawn(&spec);
    // On a loaded machine one process can run ahead and drain the other's queue, so a
    // run dumped while one direction was empty is tried again (ckpt is not at fault
    // there: the image is discarded and the run killed).
    let mut attempt = 0;
    let (before, img, pids) = loop {
        attempt += 1;
        let again = |why: String| {
            assert!(attempt < 4, "{why} (in each of {attempt} runs)");
            eprintln!("{why}; run {attempt} again");
        };
        let mut t = ctx.spawn(&spec);
        t.wait_lines(15);
        let pids = wait_process_tree(t.pid, 2, "dgsock");
        for &p in &pids {
            ctx.track(p);
        }
        // First a dump that lets the tree run on: reading the queues must not consume
        // them, or the original's output (compared below with the reference) loses
        // messages.
        let live = ctx.path(&format!("dgsock-live-{attempt}.img"));
        ctx.dump_leave_running(t.pid, &live);
        if let Err(why) = messages_queued_both_ways(&ctx, &live, "dgsock (--leave-running)") {
            for &p in &pids {
                send_signal(p, libc::SIGKILL);
            }
            t.kill();
            wait_pids_gone(&pids, "dgsock: a run dumped at the wrong moment");
            again(why);
            continue;
        }
        let n = t.stdout.lines();
        t.wait_lines(n + 15);
        // Then the real one.
        let img = ctx.path(&format!("dgsock-{attempt}.img"));
        ctx.dump(t.pid, &img);
        t.expect_killed();
        let before = t.stdout.finish("dgsock: original");
        wait_pids_gone(&pids, "dgsock: original after the dump");
        assert!(
            text(&before).lines().count() < STEPS as usize - AHEAD as usize,
            "dgsock: the dump came too late:\n{}",
            text(&before)
        );
        match messages_queued_both_ways(&ctx, &img, "dgsock") {
            Ok(()) => break (before, img, pids),
            Err(why) => again(why),
        }
    };
    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "dgsock: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert!(
        text(&reference.stdout).contains("sndbuf 100000, passcred 1; child exited with 0"),
        "dgsock: the reference run did not keep its options:\n{}",
        text(&reference.stdout)
    );
    assert_tree_finished_like_reference(
        "dgsock (dumped twice, restored)",
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

// ---------------------------------------------------------------------------------------
// UDP

/// The test's side of the UDP echo exchange: one IPv4 and one IPv6 socket, which talk
/// to the server alternately (datagram `k` goes over IPv4 when `k` is even).
struct UdpClient {
    v4: std::net::UdpSocket,
    v6: std::net::UdpSocket,
    to4: std::net::SocketAddr,
    to6: std::net::SocketAddr,
    replies: Vec<String>,
}

impl UdpClient {
    fn new(p4: u16, p6: u16) -> UdpClient {
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind v4 client");
        let v6 = std::net::UdpSocket::bind("[::1]:0").expect("bind v6 client");
        for s in [&v4, &v6] {
            s.set_read_timeout(Some(timeout())).expect("read timeout");
        }
        UdpClient {
            v4,
            v6,
            to4: ([127, 0, 0, 1], p4).into(),
            to6: (std::net::Ipv6Addr::LOCALHOST, p6).into(),
            replies: Vec::new(),
        }
    }

    fn sock(&self, k: u32) -> (&std::net::UdpSocket, std::net::SocketAddr) {
        if k % 2 == 0 {
            (&self.v4, self.to4)
        } else {
            (&self.v6, self.to6)
        }
    }

    fn send(&self, k: u32, data: &str) {
        let (s, to) = self.sock(k);
        s.send_to(data.as_bytes(), to).expect("send a datagram");
    }

    fn recv(&mut self, k: u32, what: &str) {
        let (s, _) = self.sock(k);
        let mut buf = [0u8; 4096];
        let (n, _) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: no answer to datagram {k}: {e}"));
        self.replies
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }

    fn talk(&mut self, k: u32, what: &str) {
        self.send(k, &format!("datagram {k} {}", "x".repeat(k as usize * 5)));
        self.recv(k, what);
    }
}

/// Two free ports for the echo server: one for IPv4 on loopback, one for IPv6.
fn free_udp_ports() -> (u16, u16) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("[::1]:0").expect("bind");
    let ports = (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    );
    (ports.0, ports.1)
}

const UDP_BURST: std::ops::Range<u32> = 6..10;

/// The exchange before the burst (datagrams answered one by one), then the burst:
/// datagrams starting with "slow", sent at once, which queue up in the server.
fn udp_first_half(c: &mut UdpClient, what: &str) {
    for k in 0..UDP_BURST.start {
        c.talk(k, what);
    }
    for k in UDP_BURST {
        c.send(k, &format!("slow {k}"));
    }
}

/// The answers to the burst, more datagrams one by one, and "quit".
fn udp_second_half(c: &mut UdpClient, what: &str) {
    for k in UDP_BURST {
        c.recv(k, what);
    }
    for k in UDP_BURST.end..UDP_BURST.end + 6 {
        c.talk(k, what);
    }
    let k = UDP_BURST.end + 6;
    c.send(k, "quit");
    c.recv(k, what);
}

#[test]
fn udp_echo_server_keeps_its_ports_options_and_queued_datagrams_across_restore() {
    let ctx =
        Ctx::new("udp_echo_server_keeps_its_ports_options_and_queued_datagrams_across_restore");
    // The server also sends a note per datagram on a UDP socket connected to `notes`.
    let spec = |p: (u16, u16), notes: &std::net::UdpSocket| {
        Spec::new(target("udpecho"))
            .arg(p.0.to_string())
            .arg(p.1.to_string())
            .arg("slow=500")
            .arg(format!(
                "notify={}",
                notes.local_addr().expect("notes address").port()
            ))
    };
    let notes_socket = || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the notes socket");
        s.set_read_timeout(Some(timeout())).expect("read timeout");
        s
    };
    let read_notes = |s: &std::net::UdpSocket, n: usize, what: &str| -> Vec<String> {
        (0..n)
            .map(|i| {
                let mut b = [0u8; 64];
                let (len, _) = s
                    .recv_from(&mut b)
                    .unwrap_or_else(|e| panic!("{what}: note {i} did not come: {e}"));
                String::from_utf8_lossy(&b[..len]).into_owned()
            })
            .collect()
    };
    let total_notes = (UDP_BURST.end + 6) as usize;
    // Reference: the same exchange, uninterrupted.
    let rports = free_udp_ports();
    let rnotes = notes_socket();
    let mut rp = ctx.spawn(&spec(rports, &rnotes));
    rp.wait_for("ready");
    let mut rc = UdpClient::new(rports.0, rports.1);
    udp_first_half(&mut rc, "udpecho reference");
    udp_second_half(&mut rc, "udpecho reference");
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "udpecho: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let ref_notes = read_notes(&rnotes, total_notes, "udpecho reference");

    let ports = free_udp_ports();
    let notes = notes_socket();
    let mut t = ctx.spawn(&spec(ports, &notes));
    t.wait_for("ready");
    let pid = t.pid;
    ctx.track(pid);
    let mut c = UdpClient::new(ports.0, ports.1);
    udp_first_half(&mut c, "udpecho");
    // The server sleeps after the first "slow" datagram; dump while the others wait.
    t.wait_for(&format!("slow {}", UDP_BURST.start));
    let img = ctx.path("udpecho.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("udpecho: original");
    wait_pids_gone(&[pid], "udpecho");
    assert_has_kinds(&ctx, &img, &["Udp"], "udpecho");
    let j = ctx.inspect_json(&img);
    let queued: usize = j["processes"][0]["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(|f| f["kind"].get("Udp"))
        .map(|u| u["sock"]["msgs"].as_array().map(|a| a.len()).unwrap_or(0))
        .sum();
    assert!(
        queued >= 1,
        "udpecho: the burst's datagrams should wait in the server's queue at the dump: {j}"
    );
    // Failed restores (one after a datagram was put back) hold no port.
    for step in [
        "bind UDP socket",
        "requeue UDP datagram",
        "remove helper area",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &[pid], &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Null);
    udp_second_half(&mut c, "udpecho (restored)");
    let fin = r.finish();
    assert_eq!(
        c.replies, rc.replies,
        "udpecho: the client's answers differ from the reference's"
    );
    // The connected notifier kept its peer across the restore.
    assert_eq!(
        read_notes(&notes, total_notes, "udpecho"),
        ref_notes,
        "udpecho: the notes differ from the reference's"
    );
    assert_tree_finished_like_reference(
        "udpecho (dumped with datagrams queued, restored)",
        &reference.stdout,
        before,
        &fin,
        &[pid],
    );
    assert!(
        text(&reference.stdout).contains("end: IPv4 reuseaddr 1; IPv6 v6only 1 rcvbuf 140000"),
        "udpecho: the reference did not report its options:\n{}",
        text(&reference.stdout)
    );
}

// ---------------------------------------------------------------------------------------
// External descriptors: dump --external, restore --inherit-fd

/// A pipe (read end, write end), both close-on-exec (`Spec::keep_fd` passes the read
/// end on).
fn pipe_for_child() -> (std::os::fd::OwnedFd, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both are new descriptors owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// The name /proc gives descriptor `fd` of this process (`pipe:[N]`, `socket:[N]`).
fn fd_key(fd: &std::os::fd::OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

/// A channel from the test to a child: the child's end (close-on-exec, passed on with
/// `Spec::keep_fd`) and ours, which writes. A pipe, or a connected unix stream socket pair.
fn channel(socket: bool) -> (std::os::fd::OwnedFd, Box<dyn std::io::Write>) {
    if socket {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        (theirs.into(), Box::new(ours))
    } else {
        let (r, w) = pipe_for_child();
        (r, Box::new(w))
    }
}

fn send_lines(w: &mut dyn std::io::Write, lines: std::ops::Range<u32>) {
    for i in lines {
        writeln!(w, "input {i} {}", "=".repeat(i as usize % 7)).expect("write to the child");
    }
}

/// A process whose descriptor 5 is a pipe or socket from the test (outside the tree):
/// refused by a plain dump, recorded as external with --external, refused by restore
/// without --inherit-fd, and restored with a new channel from the test in its place,
/// through which the rest of its input arrives.
fn external_fd_given_back(name: &str, socket: bool) {
    use std::os::fd::AsRawFd;
    let ctx = Ctx::new(name);
    let kind = if socket { "socket" } else { "pipe" };
    let spec = |fd: &std::os::fd::OwnedFd| {
        Spec::new(target("inheritfd"))
            .arg(fd.as_raw_fd().to_string())
            .keep_fd(fd.as_raw_fd())
    };
    // Reference: ten lines through one channel.
    let (r1, mut w1) = channel(socket);
    let mut rp = ctx.spawn(&spec(&r1));
    drop(r1);
    send_lines(&mut *w1, 0..10);
    drop(w1);
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "inheritfd: reference run");

    // The program reads five lines from the test's channel on its descriptor 5.
    let (r2, mut w2) = channel(socket);
    let key = fd_key(&r2);
    assert!(key.starts_with(&format!("{kind}:[")), "{key}");
    let mut t = ctx.spawn(&spec(&r2));
    drop(r2);
    let pid = t.pid;
    ctx.track(pid);
    send_lines(&mut *w2, 0..5);
    t.wait_lines(6);
    let img = ctx.path("inheritfd.img");
    let pid_s = pid.to_string();
    let dump = |extra: &[&str]| {
        let mut a = vec!["dump", pid_s.as_str(), "-o", img.to_str().expect("path")];
        a.extend_from_slice(extra);
        ctx.ckpt(&a)
    };
    // Without --external the channel to the test is refused, and the advice names the
    // option, the descriptor and its key.
    dump(&[])
        .assert_fails(1)
        .assert_stderr_mentions(&["--external"])
        .assert_stderr_mentions(&[&format!("--inherit-fd 5:{key}")]);
    assert!(!img.exists(), "inheritfd: a refused dump left an image");
    assert_running_untraced(pid, "inheritfd after a refused dump");
    dump(&["--external"]).assert_ok();
    t.expect_killed();
    let before = t.stdout.finish("inheritfd: original");
    wait_pids_gone(&[pid], "inheritfd");
    drop(w2);
    let j = ctx.inspect_json(&img);
    let fd5 = j["processes"][0]["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .find(|f| f["fd"] == 5)
        .cloned()
        .unwrap_or_else(|| panic!("inheritfd: no descriptor 5 in the image: {j}"));
    assert_eq!(
        fd5["kind"]["External"]["key"].as_str(),
        Some(key.as_str()),
        "inheritfd: descriptor 5 should be the external {key}: {fd5}"
    );

    // Restore without --inherit-fd (or with a key the image lacks) is refused in plan,
    // naming the descriptor, its key and the option; nothing is left behind.
    ctx.ckpt(&["restore", img.to_str().expect("path")])
        .assert_fails(1)
        .assert_stderr_mentions(&[&format!("descriptor 5 of process {pid} is {key}")])
        .assert_stderr_mentions(&[&format!("--inherit-fd N:{key}")]);
    ctx.ckpt(&[
        "restore",
        img.to_str().expect("path"),
        "--inherit-fd",
        &format!("0:{key}"),
        "--inherit-fd",
        "0:pipe:[1]",
    ])
    .assert_fails(1)
    .assert_stderr_mentions(&["no external resource pipe:[1]"]);
    assert_no_process(pid, "inheritfd after refused restores");

    // Restore with a new channel from the test in its place: the rest of the input
    // arrives through it.
    let (r3, mut w3) = channel(socket);
    let arg = format!("{}:{key}", r3.as_raw_fd());
    let mut r = ctx.restore_keeping(&img, &["--inherit-fd", &arg], In::Null, &[r3.as_raw_fd()]);
    drop(r3);
    send_lines(&mut *w3, 5..10);
    drop(w3);
    let fin = r.finish();
    assert_tree_finished_like_reference(
        &format!("inheritfd over a {kind} (restored with --inherit-fd)"),
        &reference.stdout,
        before,
        &fin,
        &[pid],
    );
}

#[test]
fn external_pipe_is_given_back_with_inherit_fd_and_refused_without_it() {
    external_fd_given_back(
        "external_pipe_is_given_back_with_inherit_fd_and_refused_without_it",
        false,
    );
}

#[test]
fn external_unix_socket_is_given_back_with_inherit_fd_and_refused_without_it() {
    external_fd_given_back(
        "external_unix_socket_is_given_back_with_inherit_fd_and_refused_without_it",
        true,
    );
}

// ---------------------------------------------------------------------------------------
// Named unix datagram sockets and a seqpacket listener

/// A short directory for socket files (sun_path holds 108 bytes), removed at the end.
struct SockDir(std::path::PathBuf);

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether image `im` of dgname holds what the test needs: its datagram sockets S (named
/// sender), S2 (unnamed sender) and D (replies from its peer) with messages queued, and
/// the accepted seqpacket connection with records both ways (`Err` says how not).
fn dgname_queues(ctx: &Ctx, im: &std::path::Path) -> Result<(), String> {
    assert_has_kinds(ctx, im, &["UnixDgram", "UnixListen", "UnixPair"], "dgname");
    let j = ctx.inspect_json(im);
    let queued: Vec<usize> = j["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .flat_map(|p| p["fds"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["kind"].get("UnixDgram").cloned())
        .map(|u| u["sock"]["msgs"].as_array().map(|a| a.len()).unwrap_or(0))
        .collect();
    assert_eq!(queued.len(), 4, "dgname: four datagram sockets: {queued:?}");
    if queued.iter().filter(|&&q| q > 0).count() != 3 {
        return Err(format!(
            "dgname: the datagram sockets should hold queued messages: {queued:?}"
        ));
    }
    let q = pair_queues(&j);
    if !q
        .iter()
        .any(|&(t, a, b)| t == libc::SOCK_SEQPACKET as i64 && a >= 1 && b >= 1)
    {
        return Err(format!(
            "dgname: the accepted seqpacket connection should hold records both ways: {q:?}"
        ));
    }
    Ok(())
}

#[test]
fn named_unix_datagram_sockets_and_a_seqpacket_connection_keep_their_queues() {
    let ctx = Ctx::new("named_unix_datagram_sockets_and_a_seqpacket_connection_keep_their_queues");
    const STEPS: u32 = 120;
    const AHEAD: u32 = 3;
    let dir = SockDir(std::path::PathBuf::from(format!(
        "/tmp/ckpt-e2e-dgname-{}",
        my_pid()
    )));
    let spec_in = |sub: &str| {
        let d = dir.0.join(sub);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir socket dir");
        Spec::new(target("dgname"))
            .arg(STEPS.to_string())
            .arg(AHEAD.to_string())
            .arg(&d)
            .arg(format!("ckpt-e2e-dgname-{}-{sub}", my_pid()))
            .arg("sleep=15")
    };
    let rspec = spec_in("ref");
    let mut rp = ctx.spawn(&rspec);
    // Which sockets hold messages at a given moment depends on how the processes were
    // scheduled (one can drain another's queue on a loaded machine): a run dumped at a
    // moment without the queues this test needs is tried again (ckpt is not at fault
    // there: its images are discarded and the run killed).
    let mut attempt = 0;
    let (before, img, pids) = loop {
        attempt += 1;
        let again = |why: String| {
            assert!(attempt < 4, "{why} (in each of {attempt} runs)");
            eprintln!("{why}; run {attempt} again");
        };
        let spec = spec_in("run");
        let mut t = ctx.spawn(&spec);
        t.wait_lines(12);
        let pids = wait_process_tree(t.pid, 2, "dgname");
        for &p in &pids {
            ctx.track(p);
        }
        let live = ctx.path(&format!("dgname-live-{attempt}.img"));
        ctx.dump_leave_running(t.pid, &live);
        if let Err(why) = dgname_queues(&ctx, &live) {
            for &p in &pids {
                send_signal(p, libc::SIGKILL);
            }
            t.kill();
            wait_pids_gone(&pids, "dgname: a run dumped at the wrong moment");
            again(why);
            continue;
        }
        let n = t.stdout.lines();
        t.wait_lines(n + 10);
        let img = ctx.path(&format!("dgname-{attempt}.img"));
        ctx.dump(t.pid, &img);
        t.expect_killed();
        let before = t.stdout.finish("dgname: original");
        wait_pids_gone(&pids, "dgname: original after the dump");
        assert!(
            text(&before).lines().count() < (STEPS - AHEAD) as usize,
            "dgname: the dump came too late:\n{}",
            text(&before)
        );
        match dgname_queues(&ctx, &img) {
            Ok(()) => break (before, img, pids),
            Err(why) => again(why),
        }
    };
    // Failed restores at the steps that build these sockets leave nothing behind, and
    // hold no name: the last restore succeeds.
    for step in [
        "socket(AF_UNIX, SOCK_DGRAM)",
        "bind unix socket",
        "connect unix socket",
        "queue process",
        "queue socket pair",
        "SO_SNDBUFFORCE",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], step, &pids, &[rp.pid]);
    }
    let fin = ctx.restore(&img, &[], In::Null).finish();
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "dgname: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    assert_tree_finished_like_reference(
        "dgname (dumped twice, restored)",
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}
