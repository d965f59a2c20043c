//! End-to-end tests of System V IPC objects (shared memory, semaphores, message queues)
//! and POSIX message queues: a parent and child working through all three kinds are
//! dumped (which kills them and removes their objects) and restored; the objects come
//! back under the same IDs with their owners, creators, modes and contents, compared
//! through a view of what the kernel shows of them (/proc/sysvipc lines, semctl and
//! msgrcv(MSG_COPY) values) besides the state oracle and the program's own output.
//! What cannot be restored is refused at dump, naming the object.
//!
//! Needs root. Run with cargo-nextest, one process per test (see README.md).
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::*;

/// The target's objects, by the names it writes to ./ids.
fn read_ids(ctx: &Ctx) -> BTreeMap<String, i32> {
    let text = fs::read_to_string(ctx.path("ids")).expect("the target's ids file");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The columns of /proc/sysvipc/FILE that describe the object (not who touched it last
/// nor when: those name ckpt after a restore, see README).
fn proc_line(file: &str, id: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/sysvipc/{file}")).unwrap_or_default();
    let keep: &[usize] = match file {
        // key shmid perms size cpid lpid nattch uid gid cuid cgid ...
        "shm" => &[0, 1, 2, 3, 6, 7, 8, 9, 10],
        // key semid perms nsems uid gid cuid cgid ...
        "sem" => &[0, 1, 2, 3, 4, 5, 6, 7],
        // key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid ...
        _ => &[0, 1, 2, 3, 4, 7, 8, 9, 10],
    };
    text.lines().skip(1).find_map(|l| {
        let c: Vec<&str> = l.split_whitespace().collect();
        (c.get(1)? == &id.to_string().as_str()).then(|| {
            keep.iter()
                .map(|&i| c.get(i).copied().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    })
}

fn sem_view(id: i32, n: usize) -> String {
    let mut v = vec![0u16; n];
    // SAFETY: GETALL writes `n` shorts, the set's size.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) };
    assert!(r >= 0, "GETALL {id}: {}", std::io::Error::last_os_error());
    let cnt = |cmd: i32| -> Vec<i32> {
        // SAFETY: GETNCNT/GETZCNT take no fourth argument.
        (0..n)
            .map(|i| unsafe { libc::semctl(id, i as i32, cmd) })
            .collect()
    };
    format!(
        "values {v:?} waiting {:?} zero {:?}",
        cnt(libc::GETNCNT),
        cnt(libc::GETZCNT)
    )
}

fn msg_view(id: i32) -> Vec<(i64, String)> {
    const MSG_COPY: i32 = 0o40000;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8 + 8192];
    for i in 0.. {
        // SAFETY: a long and 8192 bytes.
        let r = unsafe {
            libc::msgrcv(
                id,
                buf.as_mut_ptr().cast(),
                8192,
                i,
                libc::IPC_NOWAIT | MSG_COPY,
            )
        };
        if r < 0 {
            break;
        }
        let t = i64::from_ne_bytes(buf[..8].try_into().unwrap());
        out.push((
            t,
            String::from_utf8_lossy(&buf[8..8 + r as usize]).into_owned(),
        ));
    }
    out
}

/// What the kernel shows of the target's objects.
fn view(ids: &BTreeMap<String, i32>) -> Vec<String> {
    let mut v = Vec::new();
    for (name, &id) in ids {
        let file = name.trim_end_matches('2');
        v.push(format!("{name}: {:?}", proc_line(file, id)));
        match file {
            "sem" => v.push(format!("{name}: {}", sem_view(id, 3))),
            "msg" => v.push(format!("{name}: {:?}", msg_view(id))),
            _ => {}
        }
    }
    v
}

fn sem_waiters(id: i32) -> i32 {
    // SAFETY: GETNCNT takes no fourth argument.
    unsafe { libc::semctl(id, 0, libc::GETNCNT) }
}

/// Wait until the child waits on semaphore 0 (the quiescent point).
fn wait_child_waiting(id: i32, what: &str) {
    let deadline = Instant::now() + timeout();
    while sem_waiters(id) != 1 {
        assert!(
            Instant::now() < deadline,
            "{what}: the child never waited on its semaphore"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn expected_output(steps: u32, ready_at: u32) -> String {
    let mut s = String::new();
    for i in 1..=steps {
        s += &format!(
            "step {i} slots={i},{} reply=ack {i} sem1={}\n",
            2 * i,
            7 + i
        );
        if i == ready_at {
            s += "ready\n";
        }
    }
    s += "child 0\nshm2 kept by the kernel alone\n";
    // 40, less the parent's 5; the child's 3 went with it (SEM_UNDO).
    s += &format!("sems 0 {} 35\n", 7 + steps);
    s += "queued 9 first kept\nqueued 8 second kept\nremoved\n";
    s
}

fn gone(ids: &BTreeMap<String, i32>) -> bool {
    ids.iter()
        .all(|(n, &id)| proc_line(n.trim_end_matches('2'), id).is_none())
}

/// The target's objects come back under their IDs and keys, with their owners
/// (65534 set with IPC_SET), creators (a queue created as user 65534), modes and
/// contents (the segment the two processes share, an unattached segment known only to
/// the kernel, semaphore values with a waiter, queued messages with their types), and
/// each process's semaphore undo adjustment (the child's is applied at its exit); the
/// dump removes them after killing the tree, and the restored program works on and
/// removes them at its end.
#[test]
fn sysv_objects_come_back_under_their_ids_with_owners_and_contents() {
    let name = "sysv_objects_come_back_under_their_ids_with_owners_and_contents";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("6")
        .arg("3")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let ids = read_ids(&ctx);
    assert_eq!(ids.len(), 4, "{ids:?}");
    wait_child_waiting(ids["sem"], name);
    let before = view(&ids);
    assert!(
        before.iter().all(|l| !l.contains("None")),
        "every object is listed: {before:#?}"
    );
    let pids = process_tree(t.pid);
    let img = ctx.path("sysv.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("sysvall: original");
    wait_pids_gone(&pids, name);
    assert!(
        gone(&ids),
        "the dump removes the tree's objects: {:#?}",
        view(&ids)
    );

    let mut r = ctx.restore(&img, &[], In::Pipe);
    wait_child_waiting(ids["sem"], name);
    let after = view(&ids);
    assert_eq!(before, after, "what the kernel shows of the objects");
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert_eq!(
        [printed, fin.stdout].concat(),
        expected_output(6, 3).into_bytes(),
        "the program's output"
    );
    assert!(gone(&ids), "the restored program removed its objects");
}

/// A restore that fails after it made the objects (at the first one, at a process's
/// undo adjustments, at commit) removes them again and leaves no process; the image
/// then still restores, and the program ends as it would have.
#[test]
fn failed_restores_leave_no_sysv_object_behind() {
    let name = "failed_restores_leave_no_sysv_object_behind";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("5")
        .arg("2")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let ids = read_ids(&ctx);
    wait_child_waiting(ids["sem"], name);
    let pids = process_tree(t.pid);
    let img = ctx.path("sysv.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("sysvall: original");
    wait_pids_gone(&pids, name);
    for fault in ["create System V object", "semop (undo", "set registers"] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &pids, &[]);
        assert!(
            gone(&ids),
            "a restore failing at {fault:?} leaves its objects: {:#?}",
            view(&ids)
        );
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert_eq!(
        [printed, fin.stdout].concat(),
        expected_output(5, 2).into_bytes()
    );
    assert!(gone(&ids));
}

/// A restore while the objects are still there (the program dumped with
/// --leave-running still runs) is refused, saying which object and how to remove it.
#[test]
fn sysv_restore_while_ids_are_taken_is_refused_with_a_hint() {
    let name = "sysv_restore_while_ids_are_taken_is_refused_with_a_hint";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("4")
        .arg("2")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let ids = read_ids(&ctx);
    let img = ctx.path("sysv.img");
    ctx.dump_leave_running(t.pid, &img);
    let r = ctx.ckpt(&[std::ffi::OsStr::new("restore"), img.as_os_str()]);
    r.assert_fails(1)
        .assert_stderr_mentions(&["is in use on this host"])
        .assert_stderr_mentions(&[&format!("ipcrm -m {}", ids["shm"])])
        .assert_stderr_mentions(&[&format!("ipcrm -s {}", ids["sem"])]);
    t.write_stdin(b"go\n");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&fin.stdout).ends_with("removed\n"));
}

/// A segment also attached by a process outside the tree is refused at dump, naming it;
/// the program runs on.
#[test]
fn sysv_segment_attached_outside_the_tree_is_refused() {
    let name = "sysv_segment_attached_outside_the_tree_is_refused";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("4")
        .arg("2")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let ids = read_ids(&ctx);
    // SAFETY: a read-only attachment of the target's segment, detached below.
    let p = unsafe { libc::shmat(ids["shm"], std::ptr::null(), libc::SHM_RDONLY) };
    assert_ne!(p as isize, -1, "shmat");
    let r = ctx.try_dump(t.pid, &ctx.path("sysv.img"));
    // SAFETY: the attachment made above.
    unsafe { libc::shmdt(p) };
    r.assert_fails(1).assert_stderr_mentions(&[&format!(
        "segment {} (key 0x0) is also attached outside the dumped tree",
        ids["shm"]
    )]);
    t.write_stdin(b"go\n");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(fin.stdout, expected_output(4, 2).into_bytes());
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: System V shared memory of a real server

/// The directory of PostgreSQL's server programs (initdb, postgres, pg_ctl): on PATH,
/// else Debian's /usr/lib/postgresql/VERSION/bin. Missing, the test fails saying so.
fn postgres_bin() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<_> = rd.flatten().map(|e| e.path().join("bin")).collect();
        v.sort();
        dirs.extend(v.into_iter().rev());
    }
    dirs.into_iter()
        .find(|d| {
            ["initdb", "postgres", "pg_ctl", "psql"]
                .iter()
                .all(|p| d.join(p).exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (initdb, postgres, pg_ctl and psql in one \
                 directory on PATH or /usr/lib/postgresql/*/bin): apt-get install postgresql"
            )
        })
}

const PG_UID: u32 = 65534;
const PG_GID: u32 = 65534;

/// Run a PostgreSQL program as the unprivileged user; its output.
fn pg_run(bin: &std::path::Path, prog: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(bin.join(prog))
        .args(args)
        .uid(PG_UID)
        .gid(PG_GID)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

fn psql(bin: &std::path::Path, dir: &str, sql: &str) -> String {
    let out = pg_run(
        bin,
        "psql",
        &[
            "-h",
            dir,
            "-p",
            "5433",
            "-U",
            "pg",
            "-d",
            "postgres",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
    );
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// System V segments of the PostgreSQL user (the server's).
fn pg_segments() -> Vec<String> {
    let text = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(7) == Some(&PG_UID.to_string()))
        .map(str::to_string)
        .collect()
}

/// A real PostgreSQL server (initdb'd as an unprivileged user, on a unix socket in a
/// temporary directory) with rows written by a client is dumped (killed) and restored:
/// its System V segment (with its key, owner and creator) comes back under its ID, the
/// client's queries see the rows and write more, `pg_ctl stop` shuts it down cleanly and
/// no System V segment of it is left behind (before, the dump left the segment in place,
/// so the restore was refused; removed by hand, it came back owned by root and leaked at
/// shutdown).
#[test]
fn postgres_is_restored_with_its_sysv_segment_and_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let name = "postgres_is_restored_with_its_sysv_segment_and_stops_cleanly";
    let ctx = Ctx::new(name);
    // PostgreSQL's background processes (walwriter, checkpointer...) wake on their own
    // timers and write to their heap and stack between the oracle's reading and the
    // freeze, un-sharing pages they shared copy-on-write with the postmaster: a CI run
    // saw one heap page and three stack pages fewer shared. (`e2e_cow` checks the
    // sharing itself, on a program that does not move.)
    ctx.oracle_allow("*.pages_shared_with_p*");
    let bin = postgres_bin();
    let t0 = Instant::now();
    // A directory the unprivileged user can reach (the test directory's parents may not
    // be searchable by it).
    let base = std::env::temp_dir().join(format!("ckpt-pg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&base, Some(PG_UID), Some(PG_GID)).unwrap();
    let data = base.join("data");
    let dir = base.to_str().unwrap().to_string();
    let datas = data.to_str().unwrap().to_string();
    let out = pg_run(
        &bin,
        "initdb",
        &[
            "-D",
            &datas,
            "-U",
            "pg",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
    );
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before_segs = pg_segments();
    let log = base.join("server.log");
    let logf = fs::File::create(&log).unwrap();
    std::os::unix::fs::chown(&log, Some(PG_UID), Some(PG_GID)).unwrap();
    let server = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(bin.join("postgres"));
        // SAFETY: close_range takes integers; only the server's descriptors above 2
        // (inherited from the test runner, e.g. its jobserver pipe) are closed.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            })
        };
        cmd.args([
            "-D",
            &datas,
            "-k",
            &dir,
            "-p",
            "5433",
            "-c",
            "listen_addresses=",
        ])
        .args(["-c", "shared_buffers=16MB", "-c", "max_connections=10"])
        .uid(PG_UID)
        .gid(PG_GID)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("start postgres")
    };
    let pid = server.id() as i32;
    ctx.track(pid);
    let deadline = Instant::now() + timeout();
    while pg_run(
        &bin,
        "psql",
        &[
            "-h", &dir, "-p", "5433", "-U", "pg", "-d", "postgres", "-Xc", "select 1",
        ],
    )
    .status
    .code()
        != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "postgres did not start: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    psql(&bin, &dir, "create table t (x int primary key, s text)");
    psql(
        &bin,
        &dir,
        "insert into t select g, 'row ' || g from generate_series(1, 500) g",
    );
    assert_eq!(psql(&bin, &dir, "select count(*) from t"), "500");
    let segs: Vec<String> = pg_segments()
        .into_iter()
        .filter(|s| !before_segs.contains(s))
        .collect();
    assert_eq!(segs.len(), 1, "postgres has one System V segment: {segs:?}");
    let seg_cols = |l: &str| -> Vec<String> {
        let c: Vec<&str> = l.split_whitespace().collect();
        // key shmid perms size, uid gid cuid cgid
        [0, 1, 2, 3, 7, 8, 9, 10]
            .iter()
            .map(|&i| c[i].to_string())
            .collect()
    };
    let seg_before = seg_cols(&segs[0]);
    let pids = process_tree(pid);
    let img = ctx.path("postgres.img");
    ctx.dump(pid, &img);
    let mut server = server;
    let _ = server.wait();
    wait_pids_gone(&pids, name);
    assert!(
        pg_segments()
            .iter()
            .all(|l| seg_cols(l)[1] != seg_before[1]),
        "the dump removes the server's segment once it is killed: {:?}",
        pg_segments()
    );
    let dumped = t0.elapsed();

    let mut r = ctx.restore(&img, &[], In::Null);
    let seg_after: Vec<Vec<String>> = pg_segments().iter().map(|l| seg_cols(l)).collect();
    assert!(
        seg_after.contains(&seg_before),
        "the segment comes back with its key, ID, mode, size, owner and creator: {seg_before:?} in {seg_after:?}"
    );
    assert_eq!(psql(&bin, &dir, "select count(*) from t"), "500");
    psql(
        &bin,
        &dir,
        "insert into t select g, 'more ' || g from generate_series(501, 600) g",
    );
    assert_eq!(
        psql(&bin, &dir, "select count(*), max(s) from t where x > 490"),
        "110|row 500"
    );
    let out = pg_run(
        &bin,
        "pg_ctl",
        &["stop", "-D", &datas, "-m", "fast", "-w", "-t", "30"],
    );
    assert!(
        out.status.success(),
        "pg_ctl stop: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert!(
        pg_segments()
            .iter()
            .all(|l| seg_cols(l)[1] != seg_before[1]),
        "no System V segment of the server is left after its shutdown: {:?}",
        pg_segments()
    );
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logtext.contains("database system is shut down"),
        "clean shutdown: {logtext}"
    );
    eprintln!(
        "postgres: dumped after {dumped:?}, whole test {:?}",
        t0.elapsed()
    );
    let _ = fs::remove_dir_all(&base);
}

const MQ_OUTPUT: &str = "ready
removed maxmsg=6 msgsize=40 cur=4 nonblock=0 owner=65534:65534 mode=640
removed 5 high 7
removed 6 hello 3
removed 12 hello again 3
removed 4 low 1
named maxmsg=3 msgsize=16 cur=1 nonblock=1 owner=0:0 mode=600
named 6 named 2
unlink 0
";

/// POSIX message queues: one removed while open (made again with its limits, owner,
/// mode and four messages of three priorities, in order) and one with a name (opened
/// again by it: it outlived the dumped tree with its message, like a file), with the
/// descriptors' access modes and O_NONBLOCK. (Before, a queue's descriptor was taken
/// for a regular file.)
#[test]
fn posix_message_queues_come_back_with_their_messages() {
    let name = "posix_message_queues_come_back_with_their_messages";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("mq")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let img = ctx.path("mq.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("sysvall mq: original");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert_eq!(
        String::from_utf8_lossy(&[printed, fin.stdout].concat()),
        MQ_OUTPUT,
        "the program's output"
    );
}

/// A queue with a notification registered (mq_notify) is refused at dump, naming the
/// descriptor; the program runs on and still has its messages.
#[test]
fn posix_message_queue_notification_is_refused_at_dump() {
    let name = "posix_message_queue_notification_is_refused_at_dump";
    let ctx = Ctx::new(name);
    let spec = Spec::new(target("sysvall"))
        .arg("mq")
        .arg("notify")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let r = ctx.try_dump(t.pid, &ctx.path("mq.img"));
    r.assert_fails(1)
        .assert_stderr_mentions(&["with a notification registered (mq_notify"]);
    assert!(!ctx.path("mq.img").exists());
    t.write_stdin(b"go\n");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&fin.stdout), MQ_OUTPUT);
}

/// A tree in an IPC namespace of its own (`unshare --ipc`): every System V object of
/// the namespace is the tree's (segments attached or not, sets with undo adjustments,
/// queues with their messages) and comes back in the new namespace; the program ends
/// as an uninterrupted run. (Refused at dump before: `tests/e2e_ipcns.rs` has more.)
#[test]
fn sysv_objects_of_the_tree_s_own_ipc_namespace_come_back() {
    let name = "sysv_objects_of_the_tree_s_own_ipc_namespace_come_back";
    let ctx = Ctx::new(name);
    let spec = Spec::new("unshare")
        .arg("--ipc")
        .arg(target("sysvall"))
        .arg("4")
        .arg("2")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = process_tree(t.pid);
    let img = ctx.path("ns.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("sysvall in its IPC namespace: original");
    wait_pids_gone(&pids, name);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert_eq!(
        String::from_utf8_lossy(&[printed, fin.stdout].concat()),
        expected_output(4, 2),
        "the program's output"
    );
}
