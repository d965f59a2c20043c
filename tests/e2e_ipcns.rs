//! An IPC namespace of the tree's own with its objects (issue 15): System V segments
//! (attached or not), semaphore sets (with an undo adjustment), message queues (with
//! their messages), named POSIX message queues (open or not, with their messages, one
//! with a notification registered: mq_notify SIGEV_NONE) and
//! the namespace's limits come back in the new namespace under the same IDs, names,
//! keys, owners, modes and contents. Compared through the state oracle, to which the
//! test adds what the kernel shows INSIDE the namespace (/proc/sysvipc, the limits
//! under /proc/sys, each queue's attributes, owner and mode), read from a thread of
//! the test that joined it; and through the program's own output (it receives its
//! messages, reads its semaphores and segments after the restore).
//!
//! The target is `tests/targets/ipcns.c`, run under `unshare --ipc --fork` and as the
//! program of a runc container (Debian's runc; its limits set by the runtime's
//! `linux.sysctl`). Needs root (and runc: fails, naming it, when missing).
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ipcview::{self, mq_line};
use common::oracle::{self, Cmp, Snapshot};
use common::*;

/// The named queues the target makes.
const QUEUES: [&str; 3] = ["/q-open", "/q-closed", "/q-notify"];

/// What the kernel shows inside the IPC namespace of process `pid` (`common::ipcview`).
fn ipc_view(pid: i32) -> BTreeMap<String, String> {
    ipcview::ipc_view(pid, pid, &QUEUES)
}

/// The oracle's snapshot of the tree of `pid` at rest, with its IPC namespace's view.
fn at_rest(pid: i32, what: &str) -> Snapshot {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let mut s = Snapshot::take(pid);
        if s.still() {
            ipcview::add_view(&mut s, pid, pid, &QUEUES);
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the target never came to rest (moving: {:?})",
            s.volatile
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn ipcns_spec(ctx: &Ctx) -> Spec {
    Spec::new("unshare")
        .arg("--ipc")
        .arg("--fork")
        .arg(target("ipcns"))
        .stdin(In::Pipe)
        .cwd(&ctx.dir)
}

/// Nothing of the tree's namespace is in the host's: no System V object with its keys,
/// no POSIX queue with its names.
fn assert_nothing_on_host(what: &str) {
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let msg = fs::read_to_string("/proc/sysvipc/msg").unwrap_or_default();
    assert!(
        !shm.contains(&format!("{}", 0x1c0ffee)) && !msg.contains(&format!("{}", 0x2c0ffee)),
        "{what}: the namespace's objects are on the host:\n{shm}\n{msg}"
    );
    for q in QUEUES {
        assert!(mq_line(q).is_none(), "{what}: queue {q} is on the host");
    }
}

/// The whole namespace comes back: after the restore, the oracle (with what the kernel
/// shows inside the namespace) sees the same as before the dump, and the program finds
/// its objects as an uninterrupted run does (its output is the reference run's).
#[test]
fn ipc_namespace_objects_and_limits_come_back() {
    let name = "ipc_namespace_objects_and_limits_come_back";
    let ctx = Ctx::new(name);
    let mut reference = ctx.spawn(&ipcns_spec(&ctx));
    reference.wait_for("ready\n");
    reference.write_stdin(b"go\n");
    reference.close_stdin();
    let reference = reference.finish();
    assert_eq!(reference.status.code(), Some(0), "reference run");

    let mut t = ctx.spawn(&ipcns_spec(&ctx));
    t.wait_for("ready\n");
    let pid = t.pid;
    wait_process_tree(pid, 2, name);
    let before = at_rest(pid, name);
    assert!(
        before
            .entries
            .keys()
            .filter(|k| k.starts_with("ipcns.sysvipc."))
            .count()
            == 4,
        "four System V objects in the namespace: {:?}",
        ipc_view(pid)
    );
    assert!(
        before.get("ipcns.mqueue./q-notify").is_some_and(
            |v| v.contains("NOTIFY:1") && v.contains("NOTIFY_PID:(process 1 of the tree)")
        ),
        "a notification registered on /q-notify: {:?}",
        before.get("ipcns.mqueue./q-notify")
    );
    assert_nothing_on_host("original");
    let pids = process_tree(pid);
    let img = ctx.path("ipcns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("ipcns: original");
    wait_pids_gone(&pids, name);

    let mut r = ctx.restore(&img, &[], In::Pipe);
    let deadline = std::time::Instant::now() + timeout();
    while !oracle::restored_tree_up(&before) {
        assert!(
            std::time::Instant::now() < deadline && r.try_wait().is_none(),
            "{name}: the restored tree does not run; ckpt restore: {:?}\n{}",
            r.try_wait(),
            r.stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let after = at_rest(pid, name);
    oracle::assert_same_kernel_state(name, "ipcns restored", Cmp::Restored, &before, &after, &[]);
    assert_nothing_on_host("restored");
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    assert_same_output(name, &reference.stdout, &[printed, fin.stdout].concat());
}

/// Restores that fail after the namespace's objects were made (its System V objects,
/// its queues, at commit) leave nothing: no process, no object or queue on the host
/// (the namespace ended with the tree); the image then restores.
#[test]
fn failed_restores_of_an_ipc_namespace_leave_nothing() {
    let name = "failed_restores_of_an_ipc_namespace_leave_nothing";
    let ctx = Ctx::new(name);
    let mut t = ctx.spawn(&ipcns_spec(&ctx));
    t.wait_for("ready\n");
    let pid = t.pid;
    wait_process_tree(pid, 2, name);
    let pids = process_tree(pid);
    let img = ctx.path("ipcns.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let printed = t.stdout.finish("ipcns: original");
    wait_pids_gone(&pids, name);
    for fault in [
        "create System V object",
        "make a POSIX message queue of the namespace",
        "set registers",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], fault, &pids, &[]);
        assert_nothing_on_host(fault);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    r.write_stdin(b"go\n");
    r.close_stdin();
    let fin = r.finish();
    assert_eq!(fin.status.code(), Some(0), "restore: {}", text(&fin.stderr));
    let all = String::from_utf8_lossy(&[printed, fin.stdout].concat()).into_owned();
    assert!(
        all.contains("q-closed 2 y 2\n") && all.ends_with("done\n"),
        "the program after the failed restores: {all}"
    );
}

/// A runc container whose program is `ipcns file`: a `runc spec` bundle with the
/// capabilities the program needs (changing its IDs and owners, using the queue it
/// made as another user), the limits the
/// unshare runs write set through `linux.sysctl`, and no terminal; its output goes to
/// a host file. Dropped: its processes are killed and runc's state deleted.
struct Container {
    id: String,
    bundle: PathBuf,
    out: PathBuf,
}

impl Container {
    fn new(ctx: &Ctx, name: &str) -> Container {
        let bundle = ctx.dir.join(name);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        fs::copy(target("ipcns-static"), rootfs.join("bin/ipcns")).expect("copy ipcns");
        let st = Command::new(runc())
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .status()
            .expect("run runc spec");
        assert!(st.success(), "runc spec: {st}");
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(&cfg_path).expect("read config.json"))
                .expect("parse config.json");
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(["/bin/ipcns", "file"]);
        cfg["root"]["readonly"] = false.into();
        let caps = serde_json::json!([
            "CAP_AUDIT_WRITE",
            "CAP_KILL",
            "CAP_NET_BIND_SERVICE",
            "CAP_SETUID",
            "CAP_SETGID",
            "CAP_CHOWN",
            "CAP_FOWNER",
            "CAP_IPC_OWNER"
        ]);
        for set in ["bounding", "effective", "permitted"] {
            cfg["process"]["capabilities"][set] = caps.clone();
        }
        cfg["linux"]["sysctl"] = serde_json::json!({
            "kernel.msgmax": "4000",
            "kernel.shmmni": "300",
            "fs.mqueue.msg_max": "20"
        });
        fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write config.json");
        Container {
            id: format!("ckpt-e2e-{}-{name}", std::process::id()),
            out: ctx.dir.join(format!("{name}.out")),
            bundle,
        }
    }

    /// `runc run -d`; the init's host PID once the program is ready.
    fn run(&self) -> i32 {
        let out = fs::File::create(&self.out).expect("create the output file");
        let st = Command::new(runc())
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .status()
            .expect("run runc run");
        assert!(st.success(), "runc run -d: {st}: {}", self.output());
        let state = Command::new(runc())
            .arg("state")
            .arg(&self.id)
            .output()
            .expect("runc state");
        let v: serde_json::Value = serde_json::from_slice(&state.stdout).expect("runc state json");
        let pid = v["pid"].as_i64().expect("runc state pid") as i32;
        self.wait_output("ready\n");
        pid
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_output(&self, end: &str) {
        let deadline = Instant::now() + timeout();
        while !self.output().ends_with(end) {
            assert!(
                Instant::now() < deadline,
                "the container never printed {end:?}: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn delete(&self) {
        let _ = Command::new(runc())
            .args(["delete", "-f"])
            .arg(&self.id)
            .stderr(Stdio::null())
            .status();
    }
}

impl Container {
    /// The container's cgroup directories (below the test's own cgroup of each
    /// hierarchy, as runc makes them, and the restore again).
    fn cgroups(&self) -> Vec<PathBuf> {
        let own = fs::read_to_string("/proc/self/cgroup").expect("read own cgroup");
        let mut paths: Vec<&str> = own
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        let mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
            .expect("read mountinfo")
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                let sep = w.iter().position(|x| *x == "-")?;
                let fstype = *w.get(sep + 1)?;
                (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(w[4]))
            })
            .collect();
        let mut out = Vec::new();
        for m in mounts {
            for p in &paths {
                let d = m.join(p.trim_start_matches('/')).join(&self.id);
                if d.is_dir() && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for d in self.cgroups() {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                for p in s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()) {
                    send_signal(p, libc::SIGKILL);
                }
            }
        }
        self.delete();
        for d in self.cgroups().iter().rev() {
            for _ in 0..100 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A runc container's IPC namespace (its program the container's init, PID 1 of its
/// namespace): dumped, runc's state deleted, restored with `ckpt restore --detach`;
/// what the kernel shows inside its IPC namespace is the same, and the program, let go
/// by a file in its root, finds everything as an uninterrupted run of it under
/// `unshare` does (its output is that run's).
#[test]
fn runc_container_ipc_namespace_comes_back() {
    let name = "runc_container_ipc_namespace_comes_back";
    let ctx = Ctx::new(name);
    let mut reference = ctx.spawn(&ipcns_spec(&ctx));
    reference.wait_for("ready\n");
    reference.write_stdin(b"go\n");
    reference.close_stdin();
    let reference = reference.finish();
    assert_eq!(reference.status.code(), Some(0), "reference run");

    let c = Container::new(&ctx, "c1");
    let pid = c.run();
    let before = ipc_view(pid);
    assert!(
        before
            .keys()
            .filter(|k| k.starts_with("ipcns.sysvipc."))
            .count()
            == 4
            && before["ipcns.mqueue./q-notify"].contains("NOTIFY_PID:(process 0 of the tree)"),
        "the container's IPC namespace: {before:#?}"
    );
    assert_nothing_on_host("the container");
    let img = ctx.path("runc.img");
    ctx.dump(pid, &img);
    wait_pids_gone(&[pid], "the container after the dump");
    c.delete();
    let r = ctx.restore_detached(&img);
    let rp = r.pid;
    assert_eq!(
        ipc_view(rp),
        before,
        "what the kernel shows in its IPC namespace"
    );
    assert_nothing_on_host("the restored container");
    fs::write(c.bundle.join("rootfs/go"), b"").expect("let the program go");
    c.wait_output("done\n");
    assert_same_output(name, &reference.stdout, c.output().as_bytes());
    // (gone before its cgroups, made again by the restore, are removed)
    wait_pids_gone(&[rp], "the restored container");
}
