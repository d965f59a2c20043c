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

/// `uinflight TYPE` dumped while its messages wait, restored, and the receiver's
/// findings after it are those of an undisturbed run.
fn in_flight_only_restored(name: &str, typ: &str) {
    let ctx = Ctx::new(name);
    let spec = |file: &str| {
        Spec::new(target("uinflight"))
            .arg(typ)
            .arg(ctx.path(file))
            .stdin(In::Pipe)
    };
    let mut rp = ctx.spawn(&spec("ref.dat"));
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "uinflight {typ}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let expected = text(&reference.stdout).replacen("ready\n", "", 1);
    for line in [
        "C: a came with fd 3: read [pipe-data], then end of file",
        "C: b came with fd 3: read [456] at 4, now at 7",
        "C: c came with fd 3: read [queued]; its peer got [back]",
        "C: d came with fd 3: counter 5",
        "on it: [ev] with fd 6: counter 7",
        "with fd 7: the socket itself",
        "C: g came with fd 3: read [mfd-data] from 2, seals 0x2",
        "C: the next descriptor opened is 3",
        "C exited with 0",
    ] {
        assert!(
            expected.contains(line),
            "uinflight {typ}: the reference run should say {line:?}:\n{expected}"
        );
    }
    let mut t = ctx.spawn(&spec("run.dat"));
    t.wait_for("ready\n");
    let pids = wait_process_tree(t.pid, 2, "uinflight");
    let img = ctx.path("uinflight.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&pids, "uinflight: original after the dump");
    let info = ctx.ckpt(&[std::ffi::OsStr::new("inspect"), img.as_os_str()]);
    assert!(
        text(&info.stdout).contains("only in flight"),
        "uinflight {typ}: inspect should show the descriptors only in flight:\n{}",
        text(&info.stdout)
    );
    assert_restore_fault_leaves_nothing(&ctx, &img, &[], "take descriptor", &pids, &[]);
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "uinflight {typ}: the restored run; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        &format!("uinflight {typ}: the restored run after the dump point"),
        expected.as_bytes(),
        &fin.stdout,
    );
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

#[test]
fn an_epoll_instance_only_in_flight_refuses_the_dump_and_the_program_runs_on() {
    let ctx = Ctx::new("an_epoll_instance_only_in_flight_refuses_the_dump_and_the_program_runs_on");
    let spec = Spec::new(target("uinflight"))
        .arg("epoll")
        .arg(ctx.path("unused.dat"))
        .stdin(In::Pipe);
    let mut rp = ctx.spawn(&spec);
    rp.wait_for("ready\n");
    rp.write_stdin(b"go\n");
    let reference = rp.finish();
    assert!(
        text(&reference.stdout).contains("C: a came with fd 3: anon_inode:[eventpoll]"),
        "uinflight epoll: reference run:\n{}",
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
        "file descriptor 4 is a unix socket with a message queued on it that carries \
         anon_inode:[eventpoll] in flight (SCM_RIGHTS), which no process of the dumped \
         tree holds",
        "restore cannot make this kind of descriptor only in flight yet",
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
        "uinflight epoll after the refused dump",
        &reference.stdout,
        &fin.stdout,
    );
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
