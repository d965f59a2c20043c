//! End-to-end tests of a real PostgreSQL server with live clients outside the dumped
//! tree (issue 14): `pgbench` (two clients over 127.0.0.1, two over ::1) runs while the
//! whole server tree (postmaster, backends, checkpointer, walwriter...) is dumped and
//! restored, and a `psql` session driven through its stdin holds an open transaction, a
//! temporary table and a prepared statement across it. The clients carry on over the
//! same connections: pgbench ends with no failed transaction and no connection error,
//! every transaction it counted is in the database exactly once, the psql session
//! commits and sees its table, the same backends (PIDs, client ports) serve the same
//! connections, the server logs nothing of it, and what sock_diag shows of the idle
//! connection (state, queues, windows, options) is what it was. The same with
//! `--leave-running`. A client over the server's unix socket is refused at dump,
//! naming the backend, the socket's path and the client; the server runs on.
//!
//! Needs root and PostgreSQL (`apt-get install postgresql`: initdb, postgres, psql and
//! pgbench on PATH or in /usr/lib/postgresql/*/bin). Run with cargo-nextest.

#![allow(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PG_UID: u32 = 65534;
const PG_GID: u32 = 65534;

/// How long pgbench runs: long enough for the dump and restore (a few seconds with a
/// debug build on a busy machine) and the checks made while it still runs.
const BENCH_SECS: u32 = 20;

/// The directory of PostgreSQL's programs: on PATH, else Debian's
/// /usr/lib/postgresql/VERSION/bin. Missing, the test fails saying so.
fn postgres_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<_> = rd.flatten().map(|e| e.path().join("bin")).collect();
        v.sort();
        dirs.extend(v.into_iter().rev());
    }
    dirs.into_iter()
        .find(|d| {
            ["initdb", "postgres", "psql", "pgbench"]
                .iter()
                .all(|p| d.join(p).exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (initdb, postgres, psql and pgbench in one \
                 directory on PATH or /usr/lib/postgresql/*/bin): apt-get install postgresql"
            )
        })
}

/// A free TCP port on both loopback addresses (bound and released).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// A PostgreSQL server of the unprivileged user in a temporary directory, listening on
/// 127.0.0.1, ::1 and a unix socket in that directory, with pgbench's tables (scale 1).
struct Pg {
    bin: PathBuf,
    base: PathBuf,
    port: u16,
    server: Option<std::process::Child>,
    pid: i32,
    log: PathBuf,
}

impl Pg {
    fn start(ctx: &Ctx) -> Pg {
        let bin = postgres_bin();
        // A directory the unprivileged user can reach (the test directory's parents may
        // not be searchable by it).
        let base = std::env::temp_dir().join(format!("ckpt-pgc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("mkdir");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(&base, Some(PG_UID), Some(PG_GID)).expect("chown");
        let data = base.join("data");
        let out = as_pg(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "pg", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {}", text(&out.stderr));
        let log = base.join("server.log");
        let logf = fs::File::create(&log).expect("create server.log");
        std::os::unix::fs::chown(&log, Some(PG_UID), Some(PG_GID)).expect("chown log");
        let port = free_port();
        let mut cmd = as_pg(&bin, "postgres");
        // SAFETY: close_range takes integers; only the server's descriptors above 2
        // (inherited from the test runner, e.g. its jobserver pipe) are closed.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            })
        };
        let server = cmd
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&base)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1,::1"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=20"])
            // (no background writes opening relation files on their own between the
            // state oracle's readings: see `clients_carry_on`)
            .args(["-c", "bgwriter_lru_maxpages=0", "-c", "autovacuum=off"])
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .expect("start postgres");
        let pid = server.id() as i32;
        ctx.track(pid);
        let pg = Pg {
            bin,
            base,
            port,
            server: Some(server),
            pid,
            log,
        };
        let deadline = Instant::now() + timeout();
        while pg.try_sql("select 1").is_none() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                pg.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = pg
            .client("pgbench")
            .args(["-i", "-s", "1", "-q"])
            .arg("postgres")
            .output()
            .expect("run pgbench -i");
        assert!(out.status.success(), "pgbench -i: {}", text(&out.stderr));
        pg.sql("create table psqlrows (x int)");
        pg
    }

    /// A client program over TCP (127.0.0.1), as root (the server trusts user pg).
    fn client(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bin.join(prog));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "pg"])
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        c
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = self
            .client("psql")
            .args([
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_string())
    }

    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("psql {sql:?} failed; server log:\n{}", self.log_text()))
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's client backends: PID, client address and port, one line each
    /// (the asking session left out).
    fn backends(&self) -> Vec<String> {
        self.sql(
            "select pid, client_addr, client_port, usename, application_name from \
             pg_stat_activity where backend_type = 'client backend' and pid <> \
             pg_backend_pid() order by pid",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// A `pgbench -c 2` run for `secs` seconds over `host`, with its per-transaction
    /// log (latencies) in `dir`.
    fn pgbench(&self, ctx: &Ctx, host: &str, secs: u32, dir: &Path, tag: &str) -> Proc {
        fs::create_dir_all(dir).expect("mkdir pgbench log dir");
        let spec = Spec::new(self.bin.join("pgbench"))
            .arg("-h")
            .arg(host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg("pg")
            .arg("-c")
            .arg("2")
            .arg("-T")
            .arg(secs.to_string())
            .arg("-P")
            .arg("1")
            .arg("--log")
            .arg(format!("--log-prefix={tag}"))
            .arg("-n")
            .arg("postgres")
            .env("LC_ALL", "C")
            .cwd(dir);
        ctx.spawn(&spec)
    }

    /// Stop the server (fast shutdown) and remove its directory.
    fn stop(mut self, restored: Option<Proc>) {
        let out = as_pg(&self.bin, "pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(self.base.join("data"))
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        if let Some(mut r) = restored {
            let fin = r.finish();
            assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
        } else if let Some(mut s) = self.server.take() {
            let _ = s.wait();
        }
        assert!(
            self.log_text().contains("database system is shut down"),
            "clean shutdown: {}",
            self.log_text()
        );
    }
}

impl Drop for Pg {
    /// The server's directory goes with the test, failed or not (its processes are
    /// killed with the test's).
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A command of PostgreSQL run as its unprivileged user.
fn as_pg(bin: &Path, prog: &str) -> Command {
    let mut c = Command::new(bin.join(prog));
    c.uid(PG_UID)
        .gid(PG_GID)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    c
}

/// Wait until pgbench printed its first progress line (on stderr): it runs.
fn wait_progress(p: &mut Proc) {
    let deadline = Instant::now() + timeout();
    while !p.stderr.text().contains("progress: ") {
        assert!(
            p.try_wait().is_none() && Instant::now() < deadline,
            "pgbench never ran:\n{}\n{}",
            p.stdout.text(),
            p.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What pgbench reported at its end.
struct Bench {
    processed: u64,
    failed: u64,
    /// The longest transaction of its --log (µs): the time the dump held it up.
    max_latency_us: u64,
}

/// pgbench's summary and its per-transaction logs (`TAG.PID[.N]` in `dir`); fails on any
/// error it printed.
fn bench_result(what: &str, fin: &Finished, dir: &Path, tag: &str) -> Bench {
    let out = text(&fin.stdout);
    let err = text(&fin.stderr);
    assert_eq!(fin.status.code(), Some(0), "{what}: {out}\n{err}");
    assert!(
        !err.contains("error") && !out.contains("error") && !err.contains("abort"),
        "{what} printed errors:\n{out}\n{err}"
    );
    let num = |key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no {key:?} in its output:\n{out}"))
    };
    let processed = num("number of transactions actually processed: ");
    let failed = num("number of failed transactions: ");
    let mut max_latency_us = 0;
    let mut logged = 0;
    for e in fs::read_dir(dir).expect("pgbench log dir").flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{tag}."))
        {
            continue;
        }
        for l in fs::read_to_string(e.path()).unwrap_or_default().lines() {
            // client_id transaction_no time script_no time_epoch time_us
            let lat = l
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(lat) = lat {
                max_latency_us = max_latency_us.max(lat);
                logged += 1;
            }
        }
    }
    assert_eq!(
        logged, processed,
        "{what}: its log lists every transaction it counted"
    );
    Bench {
        processed,
        failed,
        max_latency_us,
    }
}

/// What `ss` (sock_diag) shows of the server's TCP connections on `port`, by client
/// port: state, queues, addresses, owner, options and the TCP parameters a restore must
/// keep (window scales, MSS, the peer's window...), not the counters and timings of
/// the socket's life (bytes, segments, RTT, pacing), which start again.
fn tcp_view(port: u16) -> BTreeMap<String, String> {
    let out = Command::new("ss")
        .args(["-tinoemHn", "state", "all"])
        .arg(format!("sport = :{port}"))
        .output()
        .expect("run ss (apt-get install iproute2)");
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    let s = text(&out.stdout);
    let mut map = BTreeMap::new();
    let mut lines = s.lines().peekable();
    while let Some(l) = lines.next() {
        let mut info = String::new();
        while lines
            .peek()
            .is_some_and(|n| n.starts_with('\t') || n.starts_with(' '))
        {
            info.push(' ');
            info.push_str(lines.next().unwrap_or_default());
        }
        let c: Vec<&str> = l.split_whitespace().collect();
        if c.len() < 5 || c[0] == "LISTEN" {
            continue;
        }
        let keep_main = [c[0], c[1], c[2], c[3], c[4]].join(" ");
        let words = l.split_whitespace().chain(info.split_whitespace());
        let mut kept = vec![keep_main];
        for w in words {
            // (not the MSS we advertise nor the estimate of the peer's, advmss and rcvmss:
            // a connection made in repair mode starts them from the route's and the
            // default; README, "Known to come back different")
            let keep = ["uid:", "wscale:", "mss:", "pmtu:", "snd_wnd:"]
                .iter()
                .any(|p| w.starts_with(p))
                || ["ts", "sack", "ecn", "cubic", "bbr", "reno"].contains(&w)
                || w.starts_with("timer:(keepalive");
            if keep {
                // a keepalive timer's remaining time moves on
                kept.push(w.split(',').next().unwrap_or(w).to_string());
            }
        }
        let peer = c[4].rsplit(':').next().unwrap_or("").to_string();
        map.insert(peer, kept.join(" "));
    }
    map
}

/// The psql session: a client over ::1 driven through its stdin.
fn psql_session(ctx: &Ctx, pg: &Pg) -> Proc {
    let spec = Spec::new(pg.bin.join("psql"))
        .arg("-h")
        .arg("::1")
        .arg("-p")
        .arg(pg.port.to_string())
        .arg("-U")
        .arg("pg")
        .arg("-d")
        .arg("postgres")
        .arg("-XAtq")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .env("LC_ALL", "C")
        .stdin(In::Pipe);
    let mut p = ctx.spawn(&spec);
    p.write_stdin(
        b"begin;\n\
          create temp table tt (x int);\n\
          insert into tt values (1), (2), (3);\n\
          insert into psqlrows select generate_series(1, 10);\n\
          prepare ps(int) as select count(*) + $1 from tt;\n\
          select 'before ' || pg_backend_pid() || ' ' || inet_client_port() || ' ' || txid_current();\n",
    );
    p.wait_for("before ");
    p
}

/// The session's line "before PID PORT TXID".
fn session_ident(p: &Proc) -> String {
    p.stdout
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("before "))
        .map(str::to_string)
        .unwrap_or_default()
}

/// The rest of the session: the prepared statement, the open transaction committed,
/// the temporary table seen after it.
fn finish_session(p: &mut Proc, ident: &str) {
    p.write_stdin(
        b"execute ps(10);\n\
          insert into tt values (4);\n\
          select 'after ' || pg_backend_pid() || ' ' || inet_client_port() || ' ' || txid_current();\n\
          commit;\n\
          select 'rows ' || count(*) || ' ' || sum(x) from tt;\n\
          select 'mine ' || count(*) from psqlrows;\n\
          \\q\n",
    );
    p.close_stdin();
    let fin = p.finish();
    let out = text(&fin.stdout);
    assert_eq!(
        fin.status.code(),
        Some(0),
        "psql: {out}\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        out,
        format!("before {ident}\n13\nafter {ident}\nrows 4 10\nmine 10\n"),
        "the psql session goes on in the same backend, transaction and connection: \
         stderr {}",
        text(&fin.stderr)
    );
}

/// Server log lines telling of trouble after `from` bytes.
fn log_trouble(pg: &Pg, from: usize) -> Vec<String> {
    let t = pg.log_text();
    t.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            [
                "ERROR",
                "FATAL",
                "PANIC",
                "could not",
                "unexpected EOF",
                "terminat",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect()
}

/// The database agrees with the clients: one pgbench_history row per transaction the
/// pgbench runs counted, and the balances add up.
fn check_database(pg: &Pg, transactions: u64) {
    assert_eq!(
        pg.sql("select count(*) from pgbench_history"),
        transactions.to_string(),
        "every transaction pgbench counted is in the database, once"
    );
    let sums = pg.sql(
        "select (select sum(delta) from pgbench_history) = (select sum(abalance) from \
         pgbench_accounts) and (select sum(delta) from pgbench_history) = (select \
         sum(bbalance) from pgbench_branches)",
    );
    assert_eq!(sums, "t", "balances add up to the history");
}

/// Run the scenario: pgbench over both loopback addresses and the psql session, a dump
/// (`leave_running`, or killing the server, then a restore) in the middle of the run.
fn clients_carry_on(name: &str, leave_running: bool) {
    let ctx = Ctx::new(name);
    // The server's background processes (walwriter, checkpointer...) wake on their own
    // timers and write to their heap and stack between the oracle's reading and the
    // freeze, un-sharing pages they shared copy-on-write with the postmaster (see
    // e2e_sysv's postgres test).
    ctx.oracle_allow("*.pages_shared_with_p*");
    let t0 = Instant::now();
    let mut pg = Pg::start(&ctx);
    let log_from = pg.log_text().len();
    let mut session = psql_session(&ctx, &pg);
    let ident = session_ident(&session);
    let session_port = ident.split(' ').nth(1).unwrap_or_default().to_string();
    let dir = ctx.path("bench");
    let mut b4 = pg.pgbench(&ctx, "127.0.0.1", BENCH_SECS, &dir, "v4");
    let mut b6 = pg.pgbench(&ctx, "::1", BENCH_SECS, &dir, "v6");
    wait_progress(&mut b4);
    wait_progress(&mut b6);
    let backends = pg.backends();
    assert_eq!(
        backends.len(),
        5,
        "4 pgbench clients and psql: {backends:?}"
    );
    // (other connections come and go: the checks' own psql runs)
    let ports: Vec<&str> = backends
        .iter()
        .filter_map(|l| l.split('|').nth(2))
        .collect();
    let clients = |mut m: BTreeMap<String, String>| {
        m.retain(|k, _| ports.contains(&k.as_str()));
        m
    };
    let tcp_before = clients(tcp_view(pg.port));
    assert_eq!(tcp_before.len(), 5, "{tcp_before:#?}");
    let pids = process_tree(pg.pid);
    let img = ctx.path("pg.img");
    let t_dump = Instant::now();
    let (dumped, restored) = if leave_running {
        (ctx.dump_leave_running(pg.pid, &img).elapsed, None)
    } else {
        // pgbench is stopped (SIGSTOP) from right before the oracle's first reading of
        // the tree to right after its reading of the restored one: its backends open
        // relation files as their transactions need them, which would show as
        // descriptors the restored tree has and the original had not. Its connections
        // stay open, with whatever it had sent in them, through the dump and restore.
        let in_flight = |sig| {
            for b in [&b4, &b6] {
                assert!(send_signal(b.pid, sig), "signal {sig} to pgbench {}", b.pid);
            }
        };
        in_flight(libc::SIGSTOP);
        // (the statements they had sent are answered meanwhile)
        std::thread::sleep(Duration::from_millis(300));
        let r = ctx.dump(pg.pid, &img);
        // (the state oracle's reading of the tree is made right before the dump)
        eprintln!(
            "the oracle's reading of {} processes took {:?}",
            pids.len(),
            t_dump.elapsed().saturating_sub(r.elapsed)
        );
        if let Some(mut s) = pg.server.take() {
            let _ = s.wait();
        }
        wait_pids_gone(&pids, name);
        let t_restore = Instant::now();
        let p = ctx.restore(&img, &[], In::Null);
        eprintln!("restore: the tree compared after {:?}", t_restore.elapsed());
        in_flight(libc::SIGCONT);
        (r.elapsed, Some(p))
    };
    // The same backends serve the same connections. (On a very slow machine pgbench
    // may have ended its run before these are read: then only the psql session's
    // backend and connection are compared, and pgbench's own account of its
    // connections below says the rest.)
    let backends_after = pg.backends();
    let tcp_after = clients(tcp_view(pg.port));
    let bench_running = b4.try_wait().is_none() && b6.try_wait().is_none();
    let (backends, tcp_before) = if bench_running {
        (backends, tcp_before)
    } else {
        eprintln!("pgbench ended before the checks: only psql's backend is compared");
        let psql = |l: &String| l.ends_with("|psql");
        let mut t = tcp_before;
        t.retain(|k, _| *k == session_port);
        (backends.into_iter().filter(psql).collect(), t)
    };
    let backends_after: Vec<String> = backends_after
        .into_iter()
        .filter(|l| bench_running || l.ends_with("|psql"))
        .collect();
    let tcp_after: BTreeMap<String, String> = tcp_after
        .into_iter()
        .filter(|(k, _)| bench_running || *k == session_port)
        .collect();
    assert_eq!(
        backends_after, backends,
        "pg_stat_activity: the same backends with the same client ports"
    );
    // The idle session's connection as sock_diag shows it, and every connection's state.
    // The segment size is the original's, but where the path's MTU is above what
    // TCP_MAXSEG takes: 32755 (see `kinds::fd::tcp::connect_mss`) where loopback had up
    // to 32768. (Before, 524 for IPv4 and 1208 for IPv6 on loopback: a new connection's
    // default, kept for good.)
    let mss = |v: Option<&String>| -> (String, u32) {
        let v = v.cloned().unwrap_or_default();
        let mss = v
            .split(' ')
            .find_map(|w| w.strip_prefix("mss:"))
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let rest: Vec<&str> = v.split(' ').filter(|w| !w.starts_with("mss:")).collect();
        (rest.join(" "), mss)
    };
    let (idle_before, mss_before) = mss(tcp_before.get(&session_port));
    let (idle_after, mss_after) = mss(tcp_after.get(&session_port));
    assert_eq!(
        idle_after, idle_before,
        "sock_diag of the idle psql connection (client port {session_port})"
    );
    for (port, v) in &tcp_after {
        let (_, m) = mss(Some(v));
        let (_, was) = mss(tcp_before.get(port));
        assert!(
            m >= was.min(32755) && m <= was,
            "the segment size of the connection of client port {port}: {was} -> {m}"
        );
    }
    eprintln!("idle connection's segment size: {mss_before} -> {mss_after}");
    let states = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter()
            .map(|(k, v)| format!("{k} {}", v.split(' ').next().unwrap_or_default()))
            .collect()
    };
    assert_eq!(
        states(&tcp_after),
        states(&tcp_before),
        "the server's connections, by client port and state"
    );
    let checked = t_dump.elapsed();
    finish_session(&mut session, &ident);
    let f4 = b4.finish();
    let f6 = b6.finish();
    let v4 = bench_result("pgbench over 127.0.0.1", &f4, &dir, "v4");
    let v6 = bench_result("pgbench over ::1", &f6, &dir, "v6");
    assert_eq!(
        (v4.failed, v6.failed),
        (0, 0),
        "no failed transaction:\n{}\n{}",
        text(&f4.stdout),
        text(&f6.stdout)
    );
    assert!(v4.processed > 0 && v6.processed > 0);
    check_database(&pg, v4.processed + v6.processed);
    let trouble = log_trouble(&pg, log_from);
    assert!(
        trouble.is_empty(),
        "the server logged trouble: {trouble:#?}\n{}",
        pg.log_text()
    );
    eprintln!(
        "postgres with 5 clients: dump {dumped:?} (the clients checked {} after it \
         began); longest transaction {} ms (127.0.0.1) / {} ms (::1); {} + {} \
         transactions; whole test {:?}",
        fmt_ms(checked),
        v4.max_latency_us / 1000,
        v6.max_latency_us / 1000,
        v4.processed,
        v6.processed,
        t0.elapsed()
    );
    pg.stop(restored);
}

fn fmt_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The server is dumped (killed) while pgbench runs and the psql session is in its
/// transaction, and restored: the clients carry on as if nothing happened.
#[test]
fn postgres_clients_carry_on_across_dump_and_restore() {
    clients_carry_on("postgres_clients_carry_on_across_dump_and_restore", false);
}

/// The same with `--leave-running`: nothing of the dump is visible to the clients or
/// in the server's log.
#[test]
fn postgres_clients_see_nothing_of_a_leave_running_dump() {
    clients_carry_on("postgres_clients_see_nothing_of_a_leave_running_dump", true);
}

/// A client connected over the server's unix socket (from outside the tree) cannot be
/// restored (its connection would need the client's end): the dump is refused naming
/// the backend, the socket's path and the client process, and the server and the
/// client run on untouched. With `--external` (and `--leave-running`) the dump goes
/// through, recording the connection as an external resource.
#[test]
fn postgres_client_over_the_unix_socket_is_refused_by_name() {
    let name = "postgres_client_over_the_unix_socket_is_refused_by_name";
    let ctx = Ctx::new(name);
    let pg = Pg::start(&ctx);
    let spec = Spec::new(pg.bin.join("psql"))
        .arg("-h")
        .arg(&pg.base)
        .arg("-p")
        .arg(pg.port.to_string())
        .arg("-U")
        .arg("pg")
        .arg("-d")
        .arg("postgres")
        .arg("-XAtq")
        .env("LC_ALL", "C")
        .stdin(In::Pipe);
    let mut p = ctx.spawn(&spec);
    p.write_stdin(b"begin;\nselect 'backend ' || pg_backend_pid();\n");
    p.wait_for("backend ");
    let backend: i32 = p
        .stdout
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("backend "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the backend's PID");
    let before = pg.backends();
    let img = ctx.path("pg.img");
    let r = ctx.try_dump(pg.pid, &img);
    let sock = pg.base.join(format!(".s.PGSQL.{}", pg.port));
    r.assert_fails(1).assert_stderr_mentions(&[
        &format!("cannot dump process {backend}"),
        &sock.to_string_lossy(),
        &format!("to process {} (psql, socket:[", p.pid),
    ]);
    assert!(!img.exists(), "no image is left");
    assert_eq!(pg.backends(), before, "the server runs on");
    // With --external the connection is recorded as an external resource (restore
    // would need --inherit-fd for it): a --leave-running dump goes through, unseen by
    // the client and the server.
    let log_from = pg.log_text().len();
    let r = ctx.ckpt(&[
        std::ffi::OsStr::new("dump"),
        std::ffi::OsStr::new(&pg.pid.to_string()),
        std::ffi::OsStr::new("-o"),
        img.as_os_str(),
        std::ffi::OsStr::new("--leave-running"),
        std::ffi::OsStr::new("--external"),
    ]);
    r.assert_ok();
    let j = ctx.inspect_json(&img).to_string();
    assert!(
        j.contains("\"External\"") && j.contains("socket:["),
        "the connection is an external resource in the image: {j}"
    );
    assert_eq!(pg.backends(), before, "the server runs on");
    assert!(
        log_trouble(&pg, log_from).is_empty(),
        "server log: {}",
        pg.log_text()
    );
    p.write_stdin(b"select 'still ' || pg_backend_pid();\ncommit;\n\\q\n");
    p.close_stdin();
    let fin = p.finish();
    assert_eq!(fin.status.code(), Some(0), "psql: {}", text(&fin.stderr));
    assert!(
        text(&fin.stdout).contains(&format!("still {backend}")),
        "{}",
        text(&fin.stdout)
    );
    pg.stop(None);
}
