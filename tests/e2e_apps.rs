//! End-to-end tests of real programs and outside peers: `node` (a multi-threaded
//! runtime) and `python3` threads cooperating through a Condition; a process on a pty
//! restored onto the terminal of `ckpt restore`; a TCP server keeping its connection with
//! a client outside the dumped tree; `redis-server` with its keys and its client; a
//! SysV shared memory segment removed while attached. Each run is dumped mid-way and
//! restored, and its whole output compared byte for byte with an uninterrupted run's.
//!
//! The targets include `ticker.js` and `pythreads.py`. Needs root (ptrace of arbitrary
//! processes, restoring PIDs). Run with cargo-nextest, one process per test (see
//! README.md).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::more::*;
use common::*;

// ---------------------------------------------------------------------------------------
// Real runtimes: node and python3 threads

/// `node`, or None when it is missing and CKPT_TEST_ALLOW_NO_NODE=1 says that is fine.
fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let found = std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .chain([PathBuf::from("/usr/bin/node")])
        .find(|p| p.is_file());
    if found.is_none() {
        assert_eq!(
            std::env::var("CKPT_TEST_ALLOW_NO_NODE").as_deref(),
            Ok("1"),
            "node not found in PATH (apt-get install nodejs); set CKPT_TEST_ALLOW_NO_NODE=1 \
             to skip this test"
        );
        eprintln!("NOTE: node not found; test skipped (CKPT_TEST_ALLOW_NO_NODE=1)");
    }
    found
}

#[test]
fn node_set_interval_loop_continues_after_restore() {
    let ctx = Ctx::new("node_set_interval_loop_continues_after_restore");
    let Some(node) = node() else {
        return;
    };
    let spec = Spec::new(node).arg(script("ticker.js")).arg("80").arg("30");
    dump_restore_compare(&ctx, &spec, &spec, 25, &[], "node", &mut |pid| {
        let threads = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert!(
            threads > 1,
            "node: the restored node has {threads} thread(s); it should be multi-threaded"
        );
    });
}

#[test]
fn python3_threads_with_a_condition_continue_after_restore() {
    let ctx = Ctx::new("python3_threads_with_a_condition_continue_after_restore");
    let spec = Spec::new(python3())
        .arg(script("pythreads.py"))
        .arg("50")
        .arg("0.01")
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    dump_restore_compare(&ctx, &spec, &spec, 70, &[], "pythreads", &mut |pid| {
        let threads = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert_eq!(
            threads, 5,
            "pythreads: the restored python should have its main thread and 4 workers"
        );
    });
}

// ---------------------------------------------------------------------------------------
// A process on a terminal, restored as a shell job

/// The pty output of `ptyrun.py` with its carriage returns dropped.
fn tty_text(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\r').collect()
}

/// A program whose standard descriptors are a pseudo-terminal (it runs under
/// `ptyrun.py`, which gives it one as its controlling terminal) is dumped, and restored
/// under another `ptyrun.py`: it is connected to `ckpt restore`'s own terminal, as a
/// shell job, and continues there (its output on the two terminals, together, is that
/// of an uninterrupted run).
#[test]
fn process_on_a_pty_is_restored_onto_the_terminal_of_ckpt_restore() {
    let ctx = Ctx::new("process_on_a_pty_is_restored_onto_the_terminal_of_ckpt_restore");
    let ptyrun = script("ptyrun.py");
    let counter = target("counter-static");
    let map = ctx.path("map.bin");
    write_pattern_file(&map, 3 * 4096 + 100, 7);
    let under_pty = |args: &[&OsStr]| {
        args.iter()
            .fold(Spec::new(python3()).arg(&ptyrun), |s, a| s.arg(a))
    };
    let cmd = [counter.as_os_str(), "40".as_ref(), map.as_os_str()];
    let mut reference = ctx.spawn(&under_pty(&cmd));
    let mut t = ctx.spawn(&under_pty(&cmd));
    t.wait_lines(8);
    let tree = wait_process_tree(t.pid, 2, "ptyrun.py and its program");
    let pid = *tree.last().expect("the program under ptyrun.py");
    let links = fd_links(pid);
    assert!(
        links.iter().take(3).all(|l| l.starts_with("/dev/pts/")),
        "the program's 0-2 are a pty: {links:?}"
    );
    let img = ctx.path("pty.img");
    ctx.dump(pid, &img);
    let before = t.finish();
    // Restored under a new pty, as a job of the shell that runs `ckpt restore`.
    let bin = ckpt_bin();
    let mut r = ctx.spawn(&under_pty(&[
        bin.as_os_str(),
        "restore".as_ref(),
        img.as_os_str(),
    ]));
    let after = r.finish();
    let reference = reference.finish();
    // ptyrun.py exits with its program's status, and ckpt restore passes on the restored
    // program's (counter ends with 3).
    assert_eq!(
        after.status.code(),
        reference.status.code(),
        "restore under a pty: {}",
        text(&after.stderr)
    );
    assert_no_process(pid, "after the restored program ended");
    let want = tty_text(&reference.stdout);
    let got = [tty_text(&before.stdout), tty_text(&after.stdout)].concat();
    assert_same_output("program on a pty", &want, &got);
}

// ---------------------------------------------------------------------------------------
// TCP: a server whose client is outside the dumped tree

/// A free loopback port (bound and released; the server binds it right after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Send one 16-byte message (padded with dots) to `tcpsrv.py`.
fn tcp_send(w: &mut std::net::TcpStream, m: &str) {
    use std::io::Write;
    let mut b = m.as_bytes().to_vec();
    b.resize(16, b'.');
    w.write_all(&b).expect("send to the server");
}

/// One client session with `tcpsrv.py`: three exchanges, then two messages the server
/// leaves unread until `go` exists, then `between` runs (it must send one more message:
/// the dumped run sends it while the server is gone), then the go-file, the three
/// replies, one more exchange, and "bye". Returns what the client got.
fn tcp_session(port: u16, go: &Path, between: &mut dyn FnMut(&mut std::net::TcpStream)) -> Vec<u8> {
    use std::io::{BufRead, BufReader};
    let conn = connect_loopback(port, "the server");
    let mut w = conn.try_clone().expect("clone stream");
    let mut r = BufReader::new(conn);
    let mut got = Vec::new();
    let send = tcp_send;
    let recv = |r: &mut BufReader<std::net::TcpStream>, got: &mut Vec<u8>| {
        let mut line = String::new();
        r.read_line(&mut line).expect("reply from the server");
        assert!(!line.is_empty(), "the server closed the connection");
        got.extend_from_slice(line.as_bytes());
    };
    for m in ["alpha", "beta", "gamma"] {
        send(&mut w, m);
        recv(&mut r, &mut got);
    }
    send(&mut w, "delta");
    send(&mut w, "epsilon");
    std::thread::sleep(std::time::Duration::from_millis(100));
    between(&mut w);
    fs::write(go, b"go").expect("go-file");
    recv(&mut r, &mut got);
    recv(&mut r, &mut got);
    recv(&mut r, &mut got);
    send(&mut w, "zeta");
    recv(&mut r, &mut got);
    send(&mut w, "bye");
    got
}

/// A TCP server with a connected client outside the tree (this test) is dumped while two
/// of the client's messages sit unread in its receive queue, killed, and restored: the
/// client keeps talking over the same connection (no reset), and every reply — counted
/// and digested by the server over everything it received — equals an uninterrupted
/// run's; so do the server's own output and exit status.
#[test]
fn tcp_server_keeps_its_connection_with_an_outside_client_across_dump_and_restore() {
    let ctx =
        Ctx::new("tcp_server_keeps_its_connection_with_an_outside_client_across_dump_and_restore");
    // Reference run.
    let (rport, rgo) = (free_port(), ctx.path("go-ref"));
    let rspec = Spec::new(python3())
        .arg(script("tcpsrv.py"))
        .arg(rport.to_string())
        .arg(&rgo);
    let mut rp = ctx.spawn(&rspec);
    rp.wait_lines(1);
    let want = tcp_session(rport, &rgo, &mut |w| tcp_send(w, "theta"));
    let reference = rp.finish();
    assert_eq!(reference.status.code(), Some(0), "reference server");

    // Dumped run.
    let (port, go) = (free_port(), ctx.path("go"));
    let spec = Spec::new(python3())
        .arg(script("tcpsrv.py"))
        .arg(port.to_string())
        .arg(&go);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(1);
    let pid = t.pid;
    let img = ctx.path("tcp.img");
    let mut restored: Option<Proc> = None;
    let mut before = Vec::new();
    let got = tcp_session(port, &go, &mut |w| {
        ctx.dump(pid, &img);
        // The server is gone; the connection is locked, so this is dropped (and
        // retransmitted later) instead of being answered with a reset.
        tcp_send(w, "theta");
        std::thread::sleep(std::time::Duration::from_millis(300));
        t.expect_killed();
        before = t.stdout.finish("tcp server: original");
        let j = ctx.inspect_json(&img);
        let s = j.to_string();
        assert!(
            s.contains("TcpListen") && s.contains("TcpConn"),
            "image: {s}"
        );
        let unread = j
            .pointer("/processes/0/fds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.pointer("/kind/TcpConn/conn/rcvq"))
            .map(json_bytes_len)
            .sum::<usize>();
        assert_eq!(unread, 32, "the two unread messages are in the image");
        let rules = std::process::Command::new("nft")
            .args(["list", "table", "inet", "ckpt_lock"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            rules.contains(&port.to_string()),
            "the connection is locked while the server is gone: {rules}"
        );
        let mut r = ctx.restore(&img, &[], In::Null);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(r.try_wait().is_none(), "the restored server runs");
        restored = Some(r);
    });
    let fin = restored.expect("restored").finish();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "replies over the kept connection"
    );
    assert_same_output(
        "tcp server output",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored server: {}",
        text(&fin.stderr)
    );
    // The lock went with the restore. (Other tests may hold locks of their own in the
    // same table meanwhile: look for this connection's rule only.) And `ckpt unlock` of
    // an image whose lock is gone already is harmless.
    ctx.ckpt(&[OsStr::new("unlock"), img.as_os_str()])
        .assert_ok();
    let left = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        !left.contains(&format!("dport {port} ")),
        "restore removed this connection's lock: {left}"
    );
}

// ---------------------------------------------------------------------------------------
// redis-server with a live client

/// A RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// Read one RESP reply line (integers, simple strings) or bulk string.
fn resp_reply(r: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    r.read_line(&mut line).expect("redis reply");
    assert!(!line.is_empty(), "redis closed the connection");
    if let Some(n) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        let mut b = vec![0u8; n + 2];
        r.read_exact(&mut b).expect("redis bulk reply");
        line.push_str(&String::from_utf8_lossy(&b));
    }
    line
}

/// `redis-server` (four threads, epoll, IPv4 and IPv6 listeners) holding keys and a live
/// client connection from outside the tree is dumped, killed and restored; the client
/// sends a command while it is gone and then goes on over the same connection: the keys
/// are there and every reply is what an uninterrupted server gives.
#[test]
fn redis_server_keeps_its_keys_and_its_client_connection() {
    use std::io::Write;
    let ctx = Ctx::new("redis_server_keeps_its_keys_and_its_client_connection");
    let redis = PathBuf::from("/usr/bin/redis-server");
    assert!(
        redis.exists(),
        "needs redis-server (apt-get install redis-server)"
    );
    let port = free_port();
    let spec = Spec::new(&redis)
        .arg("--port")
        .arg(port.to_string())
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--daemonize")
        .arg("no")
        .arg("--dir")
        .arg(ctx.path(""));
    let mut t = ctx.spawn(&spec);
    t.wait_for("Ready to accept connections");
    let pid = t.pid;
    let conn = connect_loopback(port, "redis");
    let mut w = conn.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(conn);
    let mut got = Vec::new();
    for i in 0..50 {
        let (k, v) = (format!("key{i}"), format!("value{}", i * i));
        w.write_all(&resp(&["SET", &k, &v])).expect("send");
        got.push(resp_reply(&mut r));
    }
    w.write_all(&resp(&["RPUSH", "list", "a", "b", "c"]))
        .expect("send");
    got.push(resp_reply(&mut r));
    let img = ctx.path("redis.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    // Sent while the server is gone (the connection is locked: no reset).
    w.write_all(&resp(&["INCR", "counter"]))
        .expect("send while gone");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut restored = ctx.restore(&img, &[], In::Null);
    got.push(resp_reply(&mut r));
    for cmd in [
        vec!["GET", "key7"],
        vec!["GET", "key49"],
        vec!["LRANGE", "list", "0", "-1"],
        vec!["INCR", "counter"],
        vec!["DBSIZE"],
    ] {
        w.write_all(&resp(&cmd)).expect("send");
        got.push(resp_reply(&mut r));
        if cmd[0] == "LRANGE" {
            for _ in 0..3 {
                got.push(resp_reply(&mut r));
            }
        }
    }
    w.write_all(&resp(&["SHUTDOWN", "NOSAVE"])).expect("send");
    let fin = restored.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "restored redis: {}",
        text(&fin.stderr)
    );
    let mut want: Vec<String> = (0..50).map(|_| "+OK\r\n".to_string()).collect();
    want.push(":3\r\n".into());
    want.push(":1\r\n".into());
    want.push("$6\r\nvalue49\r\n".replace("$6", "$7"));
    want.push("$9\r\nvalue2401\r\n".into());
    want.push("*3\r\n".into());
    for x in ["a", "b", "c"] {
        want.push(format!("$1\r\n{x}\r\n"));
    }
    want.push(":2\r\n".into());
    want.push(":52\r\n".into());
    assert_eq!(got, want, "redis replies across the dump and restore");
}

// ---------------------------------------------------------------------------------------
// System V shared memory

/// A parent and child share a System V segment that was removed while attached (the
/// usual pattern); after restore they still share it (each sees the other's writes),
/// under its old ID, attached twice — and it goes away with them, as it would have.
#[test]
fn sysv_segment_removed_while_attached_is_shared_again_after_restore() {
    let ctx = Ctx::new("sysv_segment_removed_while_attached_is_shared_again_after_restore");
    let spec = Spec::new(target("sysv")).arg("40");
    let img = dump_restore_compare(&ctx, &spec, &spec, 20, &[], "sysv", &mut |_| {});
    let j = ctx.inspect_json(&img);
    let s = j.to_string();
    assert!(s.contains("SysvShm"), "the image holds the segment: {s}");
    // Gone with the restored processes (it had been removed): nothing left behind.
    let segs = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let ids: Vec<String> = j
        .pointer("/processes/0/vmas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/kind/SysvShm/shmid"))
        .map(|v| v.to_string())
        .collect();
    for id in ids {
        assert!(
            !segs
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
            "segment {id} left behind: {segs}"
        );
    }
}
