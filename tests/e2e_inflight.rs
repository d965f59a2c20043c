//! Descriptors that only a queued unix message holds (SCM_RIGHTS; issue 14): the sender
//! closed its own copy before the receiver took it (a server handing a connection to a
//! worker, socket activation, a Wayland client's buffers). Dump keeps the open file
//! descriptions themselves (a pipe with its data and its closed write end, a file at its
//! offset, a socket with its own queue, one carrying descriptors of its own and itself,
//! an eventfd, a sealed memfd); restore makes them, queues them in the same messages and closes its
//! copies. The receiver then takes and uses each one as in an undisturbed run, and the
//! state oracle (run by `Ctx::dump` and `Ctx::restore`) compares the sockets' queues
//! (sock_diag, fdinfo's `scm_fds`) and every descriptor before and after.
//! What restore cannot make only in flight is refused at dump, the program running on.

mod common;

use common::*;

/// `uinflight TYPE FILE` (FILE in the test's directory), its stdin a pipe.
fn uinflight(ctx: &Ctx, typ: &str, file: &str) -> Spec {
    Spec::new(target("uinflight"))
        .arg(typ)
        .arg(ctx.path(file))
        .stdin(In::Pipe)
}

/// What an undisturbed run of `uinflight TYPE` says after "ready": once ready, each of
/// `steps` is written to its stdin, or waited for when it starts with "C: ".
fn reference_after_ready(ctx: &Ctx, typ: &str, steps: &[&str]) -> String {
    let mut rp = ctx.spawn(&uinflight(ctx, typ, "ref.dat"));
    rp.wait_for("ready\n");
    give_steps(&mut rp, steps);
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "uinflight {typ}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    text(&reference.stdout).replacen("ready\n", "", 1)
}

/// Each of `steps` written to `p`'s stdin, or waited for when it starts with "C: ".
fn give_steps(p: &mut Proc, steps: &[&str]) {
    for step in steps {
        if step.starts_with("C: ") {
            p.wait_for(step);
        } else {
            p.write_stdin(step.as_bytes());
        }
    }
}

/// `img` restored and given `steps` ([`give_steps`]): the restored tree ends with 0,
/// saying `expected` (`what` names the run in the messages).
fn restored_says(ctx: &Ctx, img: &std::path::Path, steps: &[&str], expected: &str, what: &str) {
    let mut r = ctx.restore(img, &[], In::Pipe);
    give_steps(&mut r, steps);
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{what}: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        &format!("{what}: the restored run after the dump point"),
        expected.as_bytes(),
        &fin.stdout,
    );
}

/// `uinflight TYPE` dumped while its messages wait, restored, and the receiver's
/// findings after it are those of an undisturbed run.
fn in_flight_only_restored(name: &str, typ: &str) {
    in_flight_restored_saying(name, typ, &["go\n"], KINDS_LINES, "");
}

/// What an undisturbed run of `uinflight` stream, dgram or seqpacket says after "go".
const KINDS_LINES: &[&str] = &[
    "C: a came with fd 3: read [pipe-data], then end of file",
    "C: b came with fd 3: read [456] at 4, now at 7",
    "C: c came with fd 3: read [queued]; its peer got [back]",
    "C: d came with fd 3: counter 5",
    "on it: [ev] with fd 6: counter 7",
    "with fd 7: the socket itself",
    "C: g came with fd 3: read [mfd-data] from 2, seals 0x2",
    "C: the next descriptor opened is 3",
    "C exited with 0",
];

/// `uinflight TYPE` dumped while its messages wait (`inspect` shows a descriptor only
/// in flight whose line says `inspected`), a restore made to fail once it took the
/// descriptors leaving nothing, then restored and given `steps`: it says what an
/// undisturbed run says, each of `lines` among it.
fn in_flight_restored_saying(
    name: &str,
    typ: &str,
    steps: &[&str],
    lines: &[&str],
    inspected: &str,
) {
    let ctx = Ctx::new(name);
    let expected = reference_after_ready(&ctx, typ, steps);
    for line in lines {
        assert!(
            expected.contains(line),
            "uinflight {typ}: the reference run should say {line:?}:\n{expected}"
        );
    }
    let mut t = ctx.spawn(&uinflight(&ctx, typ, "run.dat"));
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "uinflight");
    let img = ctx.path("uinflight.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "uinflight: original after the dump");
    let info = text(
        &ctx.ckpt(&[std::ffi::OsStr::new("inspect"), img.as_os_str()])
            .stdout,
    );
    assert!(
        info.lines()
            .any(|l| l.contains(inspected) && l.contains("only in flight")),
        "uinflight {typ}: inspect should show a descriptor only in flight ({inspected}):\n{info}"
    );
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take descriptor", &pids, &[]);
    restored_says(&ctx, &img, steps, &expected, &format!("uinflight {typ}"));
}

#[test]
fn descriptors_only_in_flight_on_a_unix_datagram_pair_come_back() {
    in_flight_only_restored(
        "descriptors_only_in_flight_on_a_unix_datagram_pair_come_back",
        "dgram",
    );
}

#[test]
fn descriptors_only_in_flight_on_a_unix_seqpacket_pair_come_back() {
    in_flight_only_restored(
        "descriptors_only_in_flight_on_a_unix_seqpacket_pair_come_back",
        "seqpacket",
    );
}

#[test]
fn descriptors_only_in_flight_in_one_byte_messages_on_a_unix_stream_pair_come_back() {
    in_flight_only_restored(
        "descriptors_only_in_flight_in_one_byte_messages_on_a_unix_stream_pair_come_back",
        "stream",
    );
}

/// `uinflight stream` as PID 1 of a PID namespace of its own (`unshare -p -f`): the
/// dump renumbers the tree into that namespace, the processes whose descriptors the
/// queued messages carry with it (they were left with ckpt's numbers, and the restore
/// was refused: "only in flight but no queued message carries it"). Restored (in a new
/// PID namespace), the receiver takes and uses each descriptor as an undisturbed run
/// does.
#[test]
fn descriptors_only_in_flight_in_a_tree_with_its_own_pid_namespace_come_back() {
    let name = "descriptors_only_in_flight_in_a_tree_with_its_own_pid_namespace_come_back";
    let ctx = Ctx::new(name);
    let expected = reference_after_ready(&ctx, "stream", &["go\n"]);
    let spec = Spec::new("/usr/bin/unshare")
        .arg("-p")
        .arg("-f")
        .arg(target("uinflight"))
        .arg("stream")
        .arg(ctx.path("run.dat"))
        .stdin(In::Pipe);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "unshare, uinflight's P and C");
    let root = tree[1];
    assert_eq!(
        nspids(root).get(1),
        Some(&1),
        "P is PID 1 of its own namespace"
    );
    let img = ctx.path("uinflight.img");
    ctx.dump(root, &img);
    let _ = t.finish();
    wait_pids_gone(&tree[1..], "uinflight: original after the dump");
    restored_says(
        &ctx,
        &img,
        &["go\n"],
        &expected,
        "uinflight stream in its own PID namespace",
    );
}

/// `uinflight TYPE` (kinds or epoll, which pause once the receiver took what came in
/// flight), whose undisturbed run says each of `lines`: dumped (the original left
/// running), then the original's receiver takes the descriptors out of the queue and
/// the state oracle reads the tree; the original is killed, the image restored (`inspect`
/// shows each of `inspected` only in flight), the restored receiver takes them out in
/// turn and the oracle's reading of the restored tree must be the same. Then the
/// receiver uses each and says what the undisturbed run says.
fn taken_then_used(name: &str, typ: &str, lines: &[&str], inspected: &[&str]) {
    let ctx = Ctx::new(name);
    let expected = reference_after_ready(&ctx, typ, &["go\n", "C: received\n", "go\n"]);
    for line in lines {
        assert!(
            expected.contains(line),
            "uinflight {typ}: the reference run should say {line:?}:\n{expected}"
        );
    }
    let mut t = ctx.spawn(&uinflight(&ctx, typ, "run.dat"));
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "uinflight");
    let img = ctx.path("uinflight.img");
    ctx.dump_leave_running(t.pid, &img);
    t.write_stdin(b"go\n");
    t.wait_for("C: received\n");
    let taken = oracle::Snapshot::at_rest(t.pid, name);
    for &p in pids.iter().rev() {
        send_signal(p, libc::SIGKILL);
    }
    t.expect_killed();
    wait_pids_gone(&pids, "uinflight: original killed");
    let info = text(
        &ctx.ckpt(&[std::ffi::OsStr::new("inspect"), img.as_os_str()])
            .stdout,
    );
    for w in inspected {
        assert!(
            info.lines()
                .any(|l| l.contains(w) && l.contains("only in flight")),
            "inspect should show a {w} only in flight:\n{info}"
        );
    }
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take descriptor", &pids, &[]);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.wait_for("C: received\n");
    let again = oracle::Snapshot::at_rest(t.pid, name);
    oracle::assert_same_kernel_state(
        name,
        "the receiver once it took the descriptors in flight",
        oracle::Cmp::Restored,
        &taken,
        &again,
        // The original ran the dump's injected calls (their signal frames written on
        // its stacks) after the image's pages were read: pages it shared copy-on-write
        // with its child became its own, which the restored tree still shares.
        &["*.pages_shared_with_p*"],
    );
    r.write_stdin(b"go\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "uinflight {typ}: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        &format!("uinflight {typ}: the restored run"),
        expected.as_bytes(),
        &fin.stdout,
    );
}

/// `uinflight kinds`: a TCP listener, a UDP socket with a datagram queued, an
/// unconnected TCP socket, a pidfd of the sender, a pidfd of a child it reaped, an
/// inotify instance and a fanotify group, each only in flight ([`taken_then_used`]: the
/// oracle reads fdinfo, socket options and addresses, queues, the inotify watch and
/// fanotify mark, pidfds' Pid). Then the receiver uses each (a connection to the
/// listener, the queued datagram, a signal through the pidfd, PIDFD_GET_INFO's exit
/// status and cgroup, an inotify and a fanotify event) and says what an undisturbed run
/// says.
#[test]
fn sockets_pidfds_inotify_and_fanotify_only_in_flight_come_back() {
    taken_then_used(
        "sockets_pidfds_inotify_and_fanotify_only_in_flight_come_back",
        "kinds",
        &[
            "C: a came with fd 3: listening 1, SO_REUSEADDR 1, on the port P bound: yes",
            "C: a: a connection to it said [hello]",
            "on the port P bound: yes; read [udp-queued], then [self]",
            "listening 0, SO_KEEPALIVE 1, TCP_NODELAY 1, port 0",
            "C: c: connected to a, it said [hello]",
            "Pid is P's: yes; signal 0 through it: ok",
            "Pid -1; exit status 0x300; in P's cgroup: yes",
            "no event before: yes; then wd 1 mask 0x100 [inflight-created]",
            "no event before: yes; then mask 0x2",
            "C exited with 0",
        ],
        &[
            "TCP listening",
            "UDP socket",
            "TCP socket, not bound",
            "pidfd of process",
            "pidfd of a process reaped",
            "inotify watching",
        ],
    );
}

/// `uinflight epoll`: an epoll instance only in flight whose items its sender added
/// under its own numbers: on the sender's end of the pair (held by the sender), on a
/// pipe end only the receiver holds (at another number) and on an eventfd only a later
/// message holds. The oracle compares the receiver's items as fdinfo shows them (`tfd`
/// numbers, events, data) once it took the instance; the receiver checks with kcmp
/// (KCMP_EPOLL_TFD) that each item watches the file it should, then what epoll_wait
/// reports as it writes to each file, as in an undisturbed run.
#[test]
fn an_epoll_instance_with_items_only_in_flight_comes_back_with_its_items() {
    taken_then_used(
        "an_epoll_instance_with_items_only_in_flight_comes_back_with_its_items",
        "epoll",
        &[
            "C: a came with fd 3, b with fd 6, f alone",
            "C: item data 0x10: tfd 3 events 0x19",
            "C: item data 0x20: tfd 13 events 0x19",
            "C: item data 0x30: tfd 5 events 0x80000019",
            "C: 3 items; 0x10 watches P's s[0]: yes; 0x20 watches C's 20: yes; 0x30 watches \
             b: yes",
            "C: at first: 0 ready: none",
            "C: after writing to b: 1 ready: 0x30",
            "C: again (b edge-triggered): 0 ready: none",
            "C: after writing to the pipe: 1 ready: 0x20",
            "C: after writing to P's end: 2 ready: 0x10 0x20",
            "C exited with 0",
        ],
        &["epoll watching", "eventfd"],
    );
}

/// `uinflight pty`: a pseudo-terminal master and a second open description of its
/// slave only in flight (the sender keeps the slave open, as a terminal server passing
/// a client's terminal): the oracle compares the receiver's terminals once it took them
/// (settings, window, the pair), and the receiver checks the pair and sends a line each
/// way as an undisturbed run does.
#[test]
fn a_pty_master_and_slave_only_in_flight_come_back() {
    taken_then_used(
        "a_pty_master_and_slave_only_in_flight_come_back",
        "pty",
        &[
            "C: a came with fd 3, b with fd 6, f alone; b is a's slave: yes; ECHO off, \
             window 30x100",
            "C: the slave read [ping]",
            "C: the master read [pong]",
            "C exited with 0",
        ],
        &["pseudo-terminal"],
    );
}

/// What an undisturbed run of `uinflight tcpconn` says once its receiver used the
/// connection it took: the bytes each end had not read, those waiting unacknowledged
/// in the sender's queue behind a closed window, and the close of each side, in order.
const TCP_LINES: &[&str] = &[
    "C: a came with fd 3: a TCP connection, no error pending: yes; read [to-c]",
    "P: a read [to-a] and then all of what c wrote, in order: yes; then end of file",
    "C: then [pong], then end of file",
    "C exited with 0",
];

/// `uinflight tcpconn`: a TCP connection on 127.0.0.1 only in flight, its peer in the
/// tree, with unread data both ways and up to 256 KiB waiting unacknowledged behind the
/// peer's closed window. The dump (which kills the tree) locks it at the freeze with the
/// connections processes hold, before it is read in repair mode; the state oracle
/// compares the tree at the dump with the restored one (sock_diag, fdinfo's `scm_fds`);
/// a restore made to fail once it took the descriptors leaves nothing, and once
/// restored the receiver takes it and the connection carries on with its peer as in an
/// undisturbed run ([`in_flight_restored_saying`]).
#[test]
fn a_tcp_connection_only_in_flight_comes_back_and_carries_on_with_its_peer() {
    in_flight_restored_saying(
        "a_tcp_connection_only_in_flight_comes_back_and_carries_on_with_its_peer",
        "tcpconn",
        &["go\n", "C: received\n", "go\n"],
        TCP_LINES,
        "TCP connection",
    );
}

/// `uinflight tcpconn` dumped with `--leave-running` (the oracle finds the tree as it
/// was: the connection out of repair mode, its queues and sequence numbers unchanged),
/// then [`taken_then_used`]: the oracle compares the receiver once it took the
/// connection with the restored receiver once it did (sock_diag), and the connection
/// carries on with its peer as in an undisturbed run.
#[test]
fn a_tcp_connection_only_in_flight_dumped_leaving_the_tree_running_comes_back() {
    taken_then_used(
        "a_tcp_connection_only_in_flight_dumped_leaving_the_tree_running_comes_back",
        "tcpconn",
        TCP_LINES,
        &["TCP connection"],
    );
}

/// `uinflight devtty`: /dev/tty only in flight, opened by the session leader on its
/// controlling terminal (a pseudo-terminal pair of the tree), sent to a process of its
/// session: dump finds its terminal (TIOCGDEV on its copy) and restore opens /dev/tty
/// in the receiver, whose controlling terminal it is. The oracle compares the receiver
/// once it took it; it leads to the pair's slave and a write through it reaches the
/// master, as in an undisturbed run.
#[test]
fn dev_tty_only_in_flight_to_a_process_of_its_session_comes_back() {
    taken_then_used(
        "dev_tty_only_in_flight_to_a_process_of_its_session_comes_back",
        "devtty",
        &[
            "C: a came with fd 3: /dev/tty, leading to the pair's slave: yes",
            "C: the master read [ping]",
            "C exited with 0",
        ],
        &["/dev/tty"],
    );
}

/// `uinflight devttyelse`: /dev/tty only in flight to a process that made a session of
/// its own (no controlling terminal): restore could only open /dev/tty in it, on
/// another terminal or none, so the dump is refused, naming the terminal.
#[test]
fn dev_tty_only_in_flight_to_a_process_of_another_session_refuses_the_dump() {
    refused_in_flight(
        "dev_tty_only_in_flight_to_a_process_of_another_session_refuses_the_dump",
        "devttyelse",
        &[],
        "/dev/tty",
        "it is /dev/tty opened on /dev/pts/",
    );
}

/// `uinflight TYPE` (with `args` after its file), whose only message carries `what` (as
/// /proc names it, a socket's inode left out) that restore cannot make only in flight:
/// the dump is refused saying `why`, writes nothing, and the program runs on as an
/// undisturbed run does.
fn refused_in_flight(name: &str, typ: &str, args: &[&str], what: &str, why: &str) {
    let ctx = Ctx::new(name);
    let mut spec = uinflight(&ctx, typ, "unused.dat");
    for a in args {
        spec = spec.arg(a);
    }
    if let Some(fd) = args.first().and_then(|a| a.parse::<i32>().ok()) {
        spec = spec.keep_fd(fd);
    }
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    let came = format!("C: a came with fd 3: {}", what.trim_end_matches('['));
    assert!(
        text(&reference.stdout).contains(&came),
        "uinflight {typ}: reference run:\n{}",
        text(&reference.stdout)
    );
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "uinflight");
    let img = ctx.path("img");
    let r = ctx.try_dump(t.pid, &img);
    let err = r.stderr.clone();
    assert_eq!(
        r.status.code(),
        Some(1),
        "the dump should be refused:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    for w in [
        "cannot dump process ",
        &format!(
            "file descriptor 4 is a unix socket with a message queued on it that carries \
             {what}"
        ),
        "in flight (SCM_RIGHTS), which no process of the dumped tree holds",
        why,
    ] {
        assert!(err.contains(w), "the refusal should say {w:?}:\n{err}");
    }
    assert!(!img.exists(), "the refused dump wrote {}", img.display());
    for &p in &pids {
        assert_running_untraced(p, "uinflight after the refused dump");
    }
    t.write_stdin(b"go\n");
    let fin = t.finish();
    assert_eq!(fin.status.code(), Some(0), "stderr:\n{}", text(&fin.stderr));
    assert_same_output(
        &format!("uinflight {typ} after the refused dump"),
        &reference.stdout,
        &fin.stdout,
    );
}

/// `uinflight epollout FD`: an epoll instance only in flight with an item on a pipe end
/// only the test holds (outside the tree): refused, naming the item.
#[test]
fn an_epoll_instance_only_in_flight_watching_a_file_held_outside_refuses_the_dump() {
    use std::os::fd::AsRawFd;
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe2");
    // (At a number the program's own descriptors do not reach.)
    let w = rustix::io::fcntl_dupfd_cloexec(&w, 40).expect("dup");
    let held = w.as_raw_fd();
    refused_in_flight(
        "an_epoll_instance_only_in_flight_watching_a_file_held_outside_refuses_the_dump",
        "epollout",
        &[&held.to_string()],
        "anon_inode:[eventpoll]",
        &format!(
            "it is an epoll instance with an item added as descriptor {held} whose file no \
             process of the dumped tree holds, nor a message in flight"
        ),
    );
    drop((r, w));
}

/// A short directory for socket files (sun_path holds 108 bytes), removed at the end.
struct SockDir(std::path::PathBuf);

impl SockDir {
    fn new(what: &str) -> Self {
        let d = std::path::PathBuf::from(format!("/tmp/ckpt-e2e-{what}-{}", my_pid()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir socket dir");
        SockDir(d)
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `urefuse MODE` (an eventfd only in flight, which dumps refused before) dumped mid-run
/// and restored: the program takes the eventfd and finds it as an undisturbed run does.
fn urefuse_restored(name: &str, mode: &str) {
    let ctx = Ctx::new(name);
    let dir = SockDir::new(&format!("inflight-{mode}-ref"));
    let spec = |d: &std::path::Path| Spec::new(target("urefuse")).arg(mode).arg(d).arg("40");
    let reference = ctx.spawn(&spec(&dir.0)).finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "urefuse {mode}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let run = SockDir::new(&format!("inflight-{mode}-run"));
    let mut t = ctx.spawn(&spec(&run.0));
    t.wait_for("step 3\n");
    let pids = wait_process_tree(t.pid, 1, "urefuse");
    let img = ctx.path("urefuse.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("urefuse: original");
    wait_pids_gone(&pids, "urefuse: original after the dump");
    let fin = ctx.restore(&img, &[], In::Null).finish();
    assert_tree_finished_like_reference(
        &format!("urefuse {mode} (restored)"),
        &reference.stdout,
        before,
        &fin,
        &pids,
    );
}

#[test]
fn an_eventfd_only_in_flight_on_a_unix_stream_pair_comes_back() {
    urefuse_restored(
        "an_eventfd_only_in_flight_on_a_unix_stream_pair_comes_back",
        "stream-rights",
    );
}

#[test]
fn an_eventfd_only_in_flight_on_a_unix_datagram_pair_comes_back() {
    urefuse_restored(
        "an_eventfd_only_in_flight_on_a_unix_datagram_pair_comes_back",
        "dgram-rights",
    );
}

#[test]
fn an_eventfd_only_in_flight_to_a_named_unix_datagram_socket_comes_back() {
    urefuse_restored(
        "an_eventfd_only_in_flight_to_a_named_unix_datagram_socket_comes_back",
        "named-rights",
    );
}
