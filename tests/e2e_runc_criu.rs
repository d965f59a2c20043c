//! The real runc drives ckpt as its `criu` (issue 16): `runc --criu CKPT-AS-CRIU
//! checkpoint` and `runc restore` of a container (Debian's runc 1.1.5, a `runc spec`
//! bundle whose rootfs holds busybox and `tests/targets/runcsrv.c`, which counts into
//! its tmpfs, prints "tick N" every ten counts to its standard output, a pipe the test
//! reads, and answers on a unix socket in the rootfs).
//!
//! Each test checks what the restored program does (it counts on from the value it had
//! at the checkpoint, its output goes on in the new pipe runc gives it, it answers), what
//! the kernel shows of it (mountinfo, cgroups, capabilities, namespaces: the original's)
//! and what runc knows (`runc state` running with the restored init's PID; `runc exec`,
//! `runc kill` and `runc delete` work on it); a refused checkpoint leaves the container
//! running as it was, and failed restores leave no process, mount or cgroup.
//!
//! Needs root, runc and busybox (`apt-get install runc busybox-static`): fails, naming
//! them, when either is missing.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// ckpt as `criu`: a link of that name in the test's directory, for `runc --criu`.
fn criu(ctx: &Ctx) -> PathBuf {
    let link = ctx.dir.join("criu");
    if !link.exists() {
        std::os::unix::fs::symlink(ckpt_bin(), &link).expect("link ckpt as criu");
    }
    link
}

/// The host's cgroup mount points (every hierarchy, v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            let sep = w.iter().position(|x| *x == "-")?;
            let fstype = *w.get(sep + 1)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(w[4]))
        })
        .collect()
}

/// What the container printed, read from its standard output pipes (each run's or
/// restore's) by threads, in order.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn follow(&self, mut from: impl Read + Send + 'static) {
        let out = self.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = out.lock() {
                    o.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// A bundle (rootfs with busybox and runcsrv, `runc spec`'s config without a terminal,
/// a writable root, a tmpfs on /tmp, a host name) and the containers run from it.
struct Bundle {
    dir: PathBuf,
    criu: PathBuf,
    /// The containers' IDs made from it (deleted, their cgroups removed, when dropped).
    ids: Mutex<Vec<String>>,
    out: Output,
    calls: std::sync::atomic::AtomicUsize,
    /// A short link to the rootfs (for the socket's path).
    link: PathBuf,
    /// Where runc runs (its `criu-root` mount while it restores stays out of the
    /// host's mount table).
    mounts: PrivateMounts,
}

impl Bundle {
    fn new(ctx: &Ctx, name: &str) -> Bundle {
        Bundle::with_terminal(ctx, name, false)
    }

    /// `terminal`: the container's process gets a terminal (runc's console).
    fn with_terminal(ctx: &Ctx, name: &str, terminal: bool) -> Bundle {
        let dir = ctx.dir.join(name);
        let rootfs = dir.join("rootfs");
        for d in ["bin", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy(busybox(), rootfs.join("bin/busybox")).expect("copy busybox");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink sh");
        std::fs::copy(target("runcsrv-static"), rootfs.join("bin/runcsrv")).expect("copy runcsrv");
        let st = Command::new(runc())
            .arg("spec")
            .arg("--bundle")
            .arg(&dir)
            .status()
            .expect("run runc spec");
        assert!(st.success(), "runc spec: {st}");
        let cfg_path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config.json"))
                .expect("parse config.json");
        cfg["process"]["terminal"] = terminal.into();
        cfg["process"]["args"] = serde_json::json!(["/bin/runcsrv"]);
        if terminal {
            // (it echoes its terminal's input: "got LINE")
            cfg["process"]["args"] = serde_json::json!(["/bin/runcsrv", "echo"]);
        }
        cfg["root"]["readonly"] = false.into();
        cfg["hostname"] = "ckpt-runc".into();
        cfg["mounts"]
            .as_array_mut()
            .expect("config.json mounts")
            .push(serde_json::json!({
                "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"]
            }));
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write config.json");
        let link = PathBuf::from(format!("/tmp/ckpt-rc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&rootfs, &link).expect("link the rootfs");
        Bundle {
            dir,
            criu: criu(ctx),
            ids: Mutex::new(Vec::new()),
            out: Output::default(),
            calls: Default::default(),
            link,
            mounts: PrivateMounts::new(),
        }
    }

    /// Change the bundle's config.json.
    fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let p = self.dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read config.json"))
                .expect("parse config.json");
        f(&mut cfg);
        std::fs::write(&p, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write config.json");
    }

    fn id(&self, name: &str) -> String {
        let id = format!("ckpt-e2e-{}-{name}", std::process::id());
        if let Ok(mut ids) = self.ids.lock() {
            if !ids.contains(&id) {
                ids.push(id.clone());
            }
        }
        id
    }

    /// `runc ACTION [FLAGS] --image-path IMG --work-path WORK ID` (ACTION `checkpoint`
    /// or `restore`) with `env`, as [`Bundle::runc`].
    fn runc_images(
        &self,
        action: &str,
        flags: &[&str],
        img: &str,
        work: &str,
        id: &str,
        env: &[(&str, &str)],
    ) -> (bool, String) {
        let mut args = vec![action];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--image-path", img, "--work-path", work, id]);
        self.runc(&args, env)
    }

    /// runc with ckpt as its criu, the standard output a new pipe the test reads (the
    /// standard input /dev/null, the standard error a new file: the container may keep
    /// both); (exit status, its standard error).
    fn runc(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let err_path = self.dir.join(format!("runc-{n}.err"));
        let err_file = std::fs::File::create(&err_path).expect("create runc's stderr file");
        let mut cmd = self.mounts.command(&self.dir, runc());
        cmd.arg("--criu")
            .arg(&self.criu)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run runc");
        if let Some(o) = child.stdout.take() {
            self.out.follow(o);
        }
        let st = child.wait().expect("wait for runc");
        (
            st.success(),
            std::fs::read_to_string(&err_path).unwrap_or_default(),
        )
    }

    /// `runc run -d ID`; the container's init's PID once it answers.
    fn run(&self, id: &str) -> i32 {
        let (ok, err) = self.runc(&["run", "-d", id], &[]);
        assert!(ok, "runc run -d {id}: {err}");
        let pid = state(id).1;
        self.ask();
        pid
    }

    /// The program's answer on its socket: (count, host name).
    fn ask(&self) -> (u64, String) {
        // (through a short link: a socket's path has at most 107 bytes)
        let sock = self.link.join("srv.sock");
        let deadline = Instant::now() + timeout();
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) {
                let mut a = String::new();
                s.read_to_string(&mut a).expect("read the answer");
                let w: Vec<&str> = a.split_whitespace().collect();
                assert!(
                    w.len() == 4 && w[0] == "count" && w[2] == "host",
                    "answer {a:?}"
                );
                return (w[1].parse().expect("count"), w[3].to_string());
            }
            assert!(
                Instant::now() < deadline,
                "the container never answered on {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the program's count reaches `n`.
    fn wait_count(&self, n: u64) -> u64 {
        let deadline = Instant::now() + timeout();
        loop {
            let (got, _) = self.ask();
            if got >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the count stays at {got} (waiting for {n})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        let ids = self.ids.lock().map(|i| i.clone()).unwrap_or_default();
        for id in &ids {
            for d in cgroups_of(id) {
                if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for p in s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()) {
                        send_signal(p, libc::SIGKILL);
                    }
                }
            }
            let _ = Command::new(runc())
                .args(["delete", "-f"])
                .arg(id)
                .stderr(Stdio::null())
                .status();
            for d in cgroups_of(id).iter().rev() {
                for _ in 0..100 {
                    if std::fs::remove_dir(d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// `runc state ID`: (status, pid), or ("", 0) when runc does not know it.
fn state(id: &str) -> (String, i32) {
    let out = Command::new(runc())
        .arg("state")
        .arg(id)
        .stderr(Stdio::null())
        .output()
        .expect("runc state");
    if !out.status.success() {
        return (String::new(), 0);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc state json");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["pid"].as_i64().unwrap_or_default() as i32,
    )
}

/// The cgroup directories of container `id` that exist now (below the test's own
/// cgroup of each hierarchy, as runc makes them).
fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("read own cgroup");
    let mut paths: Vec<&str> = own
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        for p in &paths {
            let d = m.join(p.trim_start_matches('/')).join(id);
            if d.is_dir() && !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// The processes in the cgroups of container `id`.
fn procs_of(id: &str) -> Vec<i32> {
    let mut out: Vec<i32> = cgroups_of(id)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Each process of the tree of `root` is in the root's UTS, IPC, mount, network and
/// PID namespaces, none of them the test's; the root is PID 1 of its namespace.
/// Returns the tree's size.
fn assert_namespaces(root: i32, what: &str) -> usize {
    let tree = wait_process_tree(root, 2, what);
    for kind in ["uts", "ipc", "mnt", "net", "pid"] {
        let r = ns_inode(&root.to_string(), kind);
        assert_ne!(
            r,
            ns_inode("self", kind),
            "{what}: {kind} namespace is the host's"
        );
        for p in &tree {
            assert_eq!(
                ns_inode(&p.to_string(), kind),
                r,
                "{what}: process {p} is in another {kind} namespace than the root"
            );
        }
    }
    let nspid = nspids(root);
    assert_eq!(nspid.last(), Some(&1), "{what}: the init's PIDs {nspid:?}");
    tree.len()
}

/// The capability, no_new_privs and seccomp lines of /proc/PID/status.
fn creds(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .filter(|l| {
            ["CapBnd", "CapEff", "CapPrm", "NoNewPrivs", "Seccomp:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect()
}

/// The count in the container's tmpfs, read through the process's root.
fn count_in_tmpfs(pid: i32) -> u64 {
    let p = format!("/proc/{pid}/root/tmp/count");
    let deadline = Instant::now() + timeout();
    loop {
        if let Some(n) = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return n;
        }
        assert!(Instant::now() < deadline, "no count in {p}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The output (all pipes): "start", then "tick 10", "tick 20"... with none missing or
/// twice, up to at least `at_least`.
fn assert_ticks(out: &Output, at_least: u64) {
    let deadline = Instant::now() + timeout();
    loop {
        let text = out.text();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("start"), "output: {text}");
        let mut n = 0;
        for l in lines {
            n += 10;
            assert_eq!(
                l,
                format!("tick {n}"),
                "the container's output goes on: {text}"
            );
        }
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} counts in the output: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the kernel shows of a running container: (mountinfo, /proc/PID/cgroup,
/// credentials, tree size).
fn kernel_view(pid: i32, what: &str) -> (Vec<String>, String, Vec<String>, usize) {
    let size = assert_namespaces(pid, what);
    (
        mountinfo(pid),
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup"),
        creds(pid),
        size,
    )
}

fn dirs(ctx: &Ctx, name: &str) -> (String, String) {
    let img = ctx.path(&format!("{name}.img"));
    let work = ctx.path(&format!("{name}.work"));
    std::fs::create_dir_all(&img).expect("mkdir images");
    std::fs::create_dir_all(&work).expect("mkdir work");
    (
        img.to_string_lossy().into_owned(),
        work.to_string_lossy().into_owned(),
    )
}

/// The restored container `id` runs as the original did: runc knows it running with
/// the restored init's PID, which is PID 1 of its namespaces; the count goes on from
/// `at_dump`; the kernel shows what it showed of the original (`before`, the container
/// name `old` replaced by `id`); `runc exec` works in it.
fn assert_restored(
    b: &Bundle,
    id: &str,
    old: &str,
    at_dump: u64,
    before: &(Vec<String>, String, Vec<String>, usize),
) -> i32 {
    let (status, rp) = state(id);
    assert_eq!(status, "running", "runc state {id}");
    let first = count_in_tmpfs(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump}"
    );
    let (n, host) = b.ask();
    assert!(n >= first, "the answer's count {n} after {first}");
    assert_eq!(host, "ckpt-runc", "the restored container's host name");
    b.wait_count(first + 25);
    let renamed = |s: &str| s.replace(old, id);
    let after = kernel_view(rp, "the restored container");
    assert_eq!(
        after.0,
        before.0.iter().map(|l| renamed(l)).collect::<Vec<_>>(),
        "the restored container's mounts (normalised)"
    );
    assert_eq!(
        after.1,
        renamed(&before.1),
        "the restored container's cgroups"
    );
    assert_eq!(after.2, before.2, "the restored container's credentials");
    assert_eq!(after.3, before.3, "the restored tree's size");
    assert!(
        procs_of(id).contains(&rp),
        "the restored init {rp} is in the cgroups of {id}: {:?}",
        procs_of(id)
    );
    let exec = Command::new(runc())
        .args(["exec", id, "/bin/sh", "-c", "cat /tmp/count; hostname"])
        .output()
        .expect("runc exec");
    let out = text(&exec.stdout);
    assert!(exec.status.success(), "runc exec: {}", text(&exec.stderr));
    let w: Vec<&str> = out.split_whitespace().collect();
    assert!(
        w.len() == 2 && w[0].parse::<u64>().is_ok_and(|c| c >= first) && w[1] == "ckpt-runc",
        "runc exec in the restored container: {out:?}"
    );
    rp
}

/// `runc kill ID KILL` ends the restored container; `runc delete` removes it and its
/// cgroups: nothing is left.
fn assert_killed_and_deleted(id: &str, rp: i32) {
    let st = Command::new(runc())
        .args(["kill", id, "KILL"])
        .status()
        .expect("runc kill");
    assert!(st.success(), "runc kill {id}");
    wait_pids_gone(&[rp], "the restored container after runc kill");
    let deadline = Instant::now() + timeout();
    while state(id).0 != "stopped" {
        assert!(
            Instant::now() < deadline,
            "runc state {id}: {:?}",
            state(id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = Command::new(runc())
        .args(["delete", id])
        .status()
        .expect("runc delete");
    assert!(st.success(), "runc delete {id}");
    assert!(
        cgroups_of(id).is_empty(),
        "cgroups left: {:?}",
        cgroups_of(id)
    );
    assert_eq!(state(id).0, "", "runc still knows {id}");
}

/// `runc checkpoint` (the container stops and runc forgets it), `runc restore -d` under
/// the same name: the container goes on counting from where it was, in the new standard
/// output pipe; runc knows it; exec, kill and delete work on it.
#[test]
fn runc_checkpoint_and_restore_through_ckpt_as_criu() {
    let ctx = Ctx::new("runc_checkpoint_and_restore_through_ckpt_as_criu");
    let b = Bundle::new(&ctx, "b1");
    let id = b.id("c1");
    let pid = b.run(&id);
    b.wait_count(30);
    let before = kernel_view(pid, "the original container");
    assert!(
        before.0.iter().any(|l| l.starts_with("/tmp on / ")) && before.0.len() > 15,
        "the container's mounts: {:#?}",
        before.0
    );
    let (img, work) = dirs(&ctx, "c1");
    let at_dump = count_in_tmpfs(pid);
    let t0 = Instant::now();
    let (ok, err) = b.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    let took = t0.elapsed();
    assert!(
        ok,
        "runc checkpoint: {err}\n{}",
        std::fs::read_to_string(Path::new(&work).join("dump.log")).unwrap_or_default()
    );
    wait_pids_gone(&[pid], "the container after the checkpoint");
    for f in [
        "ckpt.img",
        "inventory.img",
        "stats-dump",
        "descriptors.json",
    ] {
        assert!(Path::new(&img).join(f).is_file(), "no {f} in the images");
    }
    // runc removes the checkpointed container (which it refuses while a process of it
    // is still there): the same name is free for the restore.
    assert_eq!(
        state(&id).0,
        "",
        "runc still knows {id} after the checkpoint"
    );
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    let (_, work2) = dirs(&ctx, "c1-restore");
    let t1 = Instant::now();
    let (ok, err) = b.runc_images("restore", &["-d"], &img, &work2, &id, &[]);
    assert!(
        ok,
        "runc restore: {err}\n{}",
        std::fs::read_to_string(Path::new(&work2).join("restore.log")).unwrap_or_default()
    );
    eprintln!(
        "runc checkpoint {} ms, runc restore {} ms",
        took.as_millis(),
        t1.elapsed().as_millis()
    );
    let rp = assert_restored(&b, &id, &id, at_dump, &before);
    assert!(
        Path::new(&img).join("stats-restore").is_file(),
        "no stats-restore"
    );
    let reached = b.wait_count(at_dump + 40);
    // (each tenth count is printed before the next answer)
    assert_ticks(&b.out, reached / 10 * 10);
    assert_killed_and_deleted(&id, rp);
}

/// `runc checkpoint --leave-running`: the container runs on as it was (runc too knows
/// it running); then it is deleted and the image restored under a new container name.
#[test]
fn runc_checkpoint_leave_running_then_restore_under_a_new_name() {
    let ctx = Ctx::new("runc_checkpoint_leave_running_then_restore_under_a_new_name");
    let b = Bundle::new(&ctx, "b2");
    let id = b.id("c2");
    let pid = b.run(&id);
    b.wait_count(20);
    let before = kernel_view(pid, "the original container");
    let (img, work) = dirs(&ctx, "c2");
    let at_dump = count_in_tmpfs(pid);
    let (ok, err) = b.runc_images("checkpoint", &["--leave-running"], &img, &work, &id, &[]);
    assert!(ok, "runc checkpoint --leave-running: {err}");
    assert_eq!(state(&id), ("running".to_string(), pid), "runc state");
    let (n, _) = b.ask();
    b.wait_count(n + 10);
    assert_eq!(
        kernel_view(pid, "the container left running"),
        before,
        "the container left running"
    );
    // The original goes; its image comes back under another name.
    let st = Command::new(runc())
        .args(["delete", "-f", &id])
        .status()
        .expect("runc delete -f");
    assert!(st.success(), "runc delete -f");
    wait_pids_gone(&[pid], "the original container");
    let id2 = b.id("c2-new");
    let (_, work2) = dirs(&ctx, "c2-restore");
    let (ok, err) = b.runc_images("restore", &["-d"], &img, &work2, &id2, &[]);
    assert!(
        ok,
        "runc restore under a new name: {err}\n{}",
        std::fs::read_to_string(Path::new(&work2).join("restore.log")).unwrap_or_default()
    );
    // (it counts on from the value of the checkpoint: the counts made since are not
    // in the image)
    let rp = assert_restored(&b, &id2, &id, at_dump, &before);
    assert_killed_and_deleted(&id2, rp);
}

/// A checkpoint ckpt refuses (the container's freezer cgroup holds a process that is
/// not of the container's tree) fails naming it and leaves the container running as it
/// was; restores failing at the steps of building the container leave no process, no
/// mount and no cgroup behind (runc forgets the container), and the next one works.
#[test]
fn failed_runc_checkpoint_and_restores_leave_things_as_they_were() {
    let ctx = Ctx::new("failed_runc_checkpoint_and_restores_leave_things_as_they_were");
    let b = Bundle::new(&ctx, "b3");
    let id = b.id("c3");
    let pid = b.run(&id);
    b.wait_count(10);
    let before = kernel_view(pid, "the original container");
    // A stranger in the container's cgroups.
    let mut stranger = Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("run sleep");
    let sp = stranger.id() as i32;
    ctx.track(sp);
    for d in cgroups_of(&id) {
        std::fs::write(d.join("cgroup.procs"), sp.to_string()).expect("move the stranger");
    }
    let (img, work) = dirs(&ctx, "c3");
    let (ok, err) = b.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    let log = std::fs::read_to_string(Path::new(&work).join("dump.log")).unwrap_or_default();
    assert!(
        !ok,
        "runc checkpoint with a stranger in the cgroup succeeded"
    );
    assert!(
        log.contains("Error") && log.contains(&format!("{sp} (sleep)")),
        "the refusal names the stranger: {err}\n{log}"
    );
    assert_eq!(state(&id), ("running".to_string(), pid), "runc state");
    let (n, _) = b.ask();
    b.wait_count(n + 10);
    assert_eq!(kernel_view(pid, "the container after the refusal"), before);
    send_signal(sp, libc::SIGKILL);
    let _ = stranger.wait();
    // Now it is taken.
    let at_dump = count_in_tmpfs(pid);
    let (ok, err) = b.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    assert!(ok, "runc checkpoint: {err}");
    wait_pids_gone(&[pid], "the container after the checkpoint");
    assert_eq!(
        state(&id).0,
        "",
        "runc still knows {id} after the checkpoint"
    );
    // The host's mounts of the bundle or of runc's state of the container.
    let ours = |id: &str| -> Vec<String> {
        let bundle = b.dir.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&bundle) || l.contains(id))
            .map(str::to_string)
            .collect()
    };
    let host = ours(&id);
    for (i, fault) in [
        "create the tree's mount namespace",
        "mount the tree's file systems",
        "create the tree's PID namespace",
        "create process",
        "fill memory",
        "set registers",
    ]
    .iter()
    .enumerate()
    {
        let (_, w) = dirs(&ctx, &format!("c3-fail{i}"));
        let (ok, _) = b.runc_images("restore", &["-d"], &img, &w, &id, &[("CKPT_FAULT", fault)]);
        let log = std::fs::read_to_string(Path::new(&w).join("restore.log")).unwrap_or_default();
        assert!(!ok, "runc restore failing at {fault} succeeded:\n{log}");
        assert!(log.contains("Error"), "restore.log at {fault}:\n{log}");
        let deadline = Instant::now() + timeout();
        while !procs_of(&id).is_empty() || !cgroups_of(&id).is_empty() {
            assert!(
                Instant::now() < deadline,
                "restore failing at {fault} left processes {:?} in cgroups {:?}",
                procs_of(&id),
                cgroups_of(&id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            ours(&id),
            host,
            "restore failing at {fault} left a mount on the host"
        );
        assert_eq!(state(&id).0, "", "runc knows {id} after a failed restore");
        assert!(
            !b.dir.join("rootfs/srv.sock").exists()
                || std::os::unix::net::UnixStream::connect(b.dir.join("rootfs/srv.sock")).is_err(),
            "something answers after the restore failing at {fault}"
        );
    }
    let (_, w) = dirs(&ctx, "c3-restore");
    let (ok, err) = b.runc_images("restore", &["-d"], &img, &w, &id, &[]);
    assert!(ok, "runc restore after the failed ones: {err}");
    let rp = assert_restored(&b, &id, &id, at_dump, &before);
    assert_killed_and_deleted(&id, rp);
}

/// A console socket as a console manager listens on it (`runc ... --console-socket`):
/// the pty master runc sends (SCM_RIGHTS), received by a thread.
struct ConsoleSocket {
    path: PathBuf,
    got: Option<std::thread::JoinHandle<std::os::fd::OwnedFd>>,
}

impl ConsoleSocket {
    fn new(name: &str) -> ConsoleSocket {
        let path = PathBuf::from(format!("/tmp/ckpt-rc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("console socket");
        let got = std::thread::spawn(move || {
            use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            let (conn, _) = listener.accept().expect("accept on the console socket");
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = RecvAncillaryBuffer::new(&mut space);
            let mut buf = [0u8; 4096];
            rustix::net::recvmsg(
                &conn,
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &mut anc,
                RecvFlags::CMSG_CLOEXEC,
            )
            .expect("recvmsg on the console socket");
            for m in anc.drain() {
                if let RecvAncillaryMessage::ScmRights(mut fds) = m {
                    if let Some(fd) = fds.next() {
                        return fd;
                    }
                }
            }
            panic!("no descriptor came with runc's console message");
        });
        ConsoleSocket {
            path,
            got: Some(got),
        }
    }

    fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The master runc sent.
    fn master(&mut self) -> std::fs::File {
        let h = self.got.take().expect("one master per console socket");
        std::fs::File::from(h.join().expect("the console socket's thread"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wait until the terminal's output (read by `out`) contains `what`.
fn wait_output(out: &Output, what: &str) {
    let deadline = Instant::now() + timeout();
    while !out.text().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} on the terminal: {:?}",
            out.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A container with a terminal (`terminal: true`; runc makes its pty in the
/// container's own devpts, binds the slave on /dev/console, gives it as 0-2 and sends
/// the master to the console socket): `runc checkpoint`, then `runc restore -d
/// --console-socket` (orphan_pts_master): the new master comes on the new socket, the
/// program's output goes on there and what is typed there reaches it; the terminal's
/// settings, window size, session, controlling terminal and foreground group are the
/// original's as the container sees them, and so are its mounts (/dev/console, /dev/pts).
#[test]
fn runc_container_with_a_terminal_comes_back_on_a_new_console() {
    use std::io::Write;
    let ctx = Ctx::new("runc_container_with_a_terminal_comes_back_on_a_new_console");
    let b = Bundle::with_terminal(&ctx, "b4", true);
    let id = b.id("c4");
    let mut console = ConsoleSocket::new("console");
    let (ok, err) = b.runc(&["run", "-d", "--console-socket", &console.arg(), &id], &[]);
    assert!(ok, "runc run -d with a terminal: {err}");
    let mut master = console.master();
    let out = Output::default();
    out.follow(master.try_clone().expect("dup the master"));
    let pid = state(&id).1;
    b.ask();
    // Settings of the console manager's: a window size, no echo, another erase key.
    let mut tio = rustix::termios::tcgetattr(&master).expect("tcgetattr");
    tio.local_modes.remove(rustix::termios::LocalModes::ECHO);
    tio.special_codes[rustix::termios::SpecialCodeIndex::VERASE] = 8;
    rustix::termios::tcsetattr(&master, rustix::termios::OptionalActions::Now, &tio)
        .expect("tcsetattr");
    let ws = rustix::termios::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, ws).expect("tcsetwinsize");
    master.write_all(b"hello\n").expect("type on the console");
    wait_output(&out, "got hello");
    wait_output(&out, "tick 10");
    let before = kernel_view(pid, "the container with a terminal");
    let tty_before = terminal_view(pid);
    assert!(
        before.0.iter().any(|l| l.contains("/dev/console")),
        "the container's mounts: {:#?}",
        before.0
    );
    assert!(
        tty_before
            .1
            .iter()
            .any(|l| l.starts_with("pid 1 ppid 0 pgrp 1 sid 1 tty_nr 34816 tpgid 1")),
        "the init leads the session of its terminal, /dev/pts/0: {:?}",
        tty_before.1
    );
    let (img, work) = dirs(&ctx, "c4");
    let at_dump = count_in_tmpfs(pid);
    let (ok, err) = b.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    assert!(
        ok,
        "runc checkpoint of a container with a terminal: {err}\n{}",
        std::fs::read_to_string(Path::new(&work).join("dump.log")).unwrap_or_default()
    );
    wait_pids_gone(&[pid], "the container after the checkpoint");
    drop(master);
    // Restored without a new terminal (ckpt's own standard descriptors cannot be a pty
    // of the container's devpts): refused, naming the terminal, leaving nothing.
    let img_file = Path::new(&img).join("ckpt.img");
    let refused = Command::new(ckpt_bin())
        .arg("restore")
        .arg(&img_file)
        .stdin(Stdio::null())
        .output()
        .expect("run ckpt restore");
    assert!(
        !refused.status.success()
            && text(&refused.stderr).contains("terminal /dev/pts/0")
            && text(&refused.stderr).contains("--new-tty"),
        "ckpt restore without --new-tty: {:?}",
        text(&refused.stderr)
    );
    assert!(
        procs_of(&id).is_empty() && cgroups_of(&id).is_empty(),
        "the refused restore left {:?} in {:?}",
        procs_of(&id),
        cgroups_of(&id)
    );
    // Restores made to fail at the new terminal's steps leave no process or cgroup,
    // and runc no state.
    for (k, fault) in [
        "create the container's terminal",
        "create a new terminal",
        "ioctl(TIOCSCTTY)",
        "ioctl(TIOCSPGRP)",
    ]
    .into_iter()
    .enumerate()
    {
        let failing = ConsoleSocket::new(&format!("console-f{k}"));
        let (_, w) = dirs(&ctx, &format!("c4-fail{k}"));
        let (ok, _) = b.runc_images(
            "restore",
            &["-d", "--console-socket", &failing.arg()],
            &img,
            &w,
            &id,
            &[("CKPT_FAULT", fault)],
        );
        let log = std::fs::read_to_string(Path::new(&w).join("restore.log")).unwrap_or_default();
        assert!(!ok, "runc restore failing at {fault} succeeded:\n{log}");
        assert!(log.contains("Error"), "restore.log at {fault}:\n{log}");
        let deadline = Instant::now() + timeout();
        while !procs_of(&id).is_empty() || !cgroups_of(&id).is_empty() {
            assert!(
                Instant::now() < deadline,
                "restore failing at {fault} left processes {:?} in cgroups {:?}",
                procs_of(&id),
                cgroups_of(&id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(state(&id).0, "", "runc knows {id} after a failed restore");
    }
    let mut console2 = ConsoleSocket::new("console2");
    let (_, work2) = dirs(&ctx, "c4-restore");
    let (ok, err) = b.runc_images(
        "restore",
        &["-d", "--console-socket", &console2.arg()],
        &img,
        &work2,
        &id,
        &[],
    );
    assert!(
        ok,
        "runc restore with a console socket: {err}\n{}",
        std::fs::read_to_string(Path::new(&work2).join("restore.log")).unwrap_or_default()
    );
    let mut master2 = console2.master();
    let out2 = Output::default();
    out2.follow(master2.try_clone().expect("dup the new master"));
    let (status, rp) = state(&id);
    assert_eq!(status, "running", "runc state {id}");
    let first = count_in_tmpfs(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump}"
    );
    // Its output goes on on the new master; what is typed there reaches it.
    let next = (first / 10 + 2) * 10;
    wait_output(&out2, &format!("tick {next}\r\n"));
    master2
        .write_all(b"again\n")
        .expect("type on the new console");
    wait_output(&out2, "got again\r\n");
    assert!(
        !out2.text().contains("again\r\ngot"),
        "the terminal echoes again (no ECHO was set): {:?}",
        out2.text()
    );
    assert_eq!(
        kernel_view(rp, "the restored container with a terminal"),
        before,
        "the restored container (mounts, cgroups, credentials, size)"
    );
    assert_eq!(
        terminal_view(rp),
        tty_before,
        "the restored container's terminal"
    );
    assert_killed_and_deleted(&id, rp);
}

/// A container whose terminal is also held by a process of another session (the child
/// called setsid and kept 0-2): the new terminal could only belong to the init's
/// session, so `runc checkpoint` is refused, naming the process and the descriptor,
/// and the container runs on as it was.
#[test]
fn runc_checkpoint_of_a_terminal_held_by_another_session_is_refused() {
    let ctx = Ctx::new("runc_checkpoint_of_a_terminal_held_by_another_session_is_refused");
    let b = Bundle::with_terminal(&ctx, "b5", true);
    let cfg_path = b.dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config.json"))
            .expect("parse config.json");
    cfg["process"]["args"] = serde_json::json!(["/bin/runcsrv", "echo", "setsid"]);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
        .expect("write config.json");
    let id = b.id("c5");
    let mut console = ConsoleSocket::new("console5");
    let (ok, err) = b.runc(&["run", "-d", "--console-socket", &console.arg(), &id], &[]);
    assert!(ok, "runc run -d with a terminal: {err}");
    let _master = console.master();
    let pid = state(&id).1;
    b.ask();
    let before = kernel_view(pid, "the container with a terminal");
    let (img, work) = dirs(&ctx, "c5");
    let (ok, err) = b.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    let log = std::fs::read_to_string(Path::new(&work).join("dump.log")).unwrap_or_default();
    assert!(!ok, "runc checkpoint succeeded");
    assert!(
        log.contains("Error")
            && log.contains("not that of the root 1) has the terminal on descriptor 0"),
        "the refusal names the process and the descriptor: {err}\n{log}"
    );
    assert_eq!(state(&id), ("running".to_string(), pid), "runc state");
    let (n, _) = b.ask();
    b.wait_count(n + 5);
    assert_eq!(kernel_view(pid, "the container after the refusal"), before);
}

/// A pod member as runc runs one (what Kubernetes and `podman pod create --share
/// pid,net` ask of it): a pause container (`extpidns hold`, PID 1 of the pod's PID
/// namespace, reaping) and an app container (runcsrv) whose config.json joins the
/// pause's PID and network namespaces by path. `runc checkpoint` through ckpt as `criu`:
/// runc 1.1.5 names both as external in its DUMP request (`pid[INO]:extRootPidNS`,
/// `net[INO]:extRootNetNS`, which dump.log records), the app goes, the pause alone is
/// left in the pod. `runc restore -d` passes the pod's namespaces as `inherit_fd`
/// (restore.log: "the pid namespace to join"): the app comes back INSIDE them (the
/// pause's, by inode) with its ID there, not 1, in namespaces of its own for the rest
/// (mount, UTS, IPC: not the pause's); the kernel shows its mounts (normalised),
/// cgroups and credentials as before, the pod's PID namespace holds the pause and the
/// restored app's two processes; it counts on from the checkpoint, `runc exec`, `kill`
/// and `delete` work.
#[test]
fn runc_pod_member_through_ckpt_as_criu() {
    let ctx = Ctx::new("runc_pod_member_through_ckpt_as_criu");
    let pause = Bundle::new(&ctx, "pod");
    std::fs::copy(
        target("extpidns-static"),
        pause.dir.join("rootfs/bin/pause"),
    )
    .expect("copy the pause");
    pause.edit(|cfg| cfg["process"]["args"] = serde_json::json!(["/bin/pause", "hold"]));
    let pause_id = pause.id("pause");
    let (ok, err) = pause.runc(&["run", "-d", &pause_id], &[]);
    assert!(ok, "runc run -d {pause_id}: {err}");
    let pp = state(&pause_id).1;
    assert!(pp > 0, "runc state {pause_id}");
    let app = Bundle::new(&ctx, "app");
    app.edit(|cfg| {
        for ns in cfg["linux"]["namespaces"]
            .as_array_mut()
            .expect("config.json namespaces")
        {
            match ns["type"].as_str() {
                Some("pid") => ns["path"] = format!("/proc/{pp}/ns/pid").into(),
                Some("network") => ns["path"] = format!("/proc/{pp}/ns/net").into(),
                _ => {}
            }
        }
    });
    let id = app.id("app");
    let pid = app.run(&id);
    let in_pod = |p: i32| -> Vec<u64> {
        ["pid", "net"]
            .iter()
            .map(|k| ns_inode(&p.to_string(), k))
            .collect()
    };
    let own = |p: i32| -> Vec<u64> {
        ["mnt", "uts", "ipc"]
            .iter()
            .map(|k| ns_inode(&p.to_string(), k))
            .collect()
    };
    let pod = in_pod(pp);
    assert_eq!(in_pod(pid), pod, "the app in the pod's namespaces");
    let id_there = *nspids(pid).last().expect("NSpid");
    assert_ne!(id_there, 1, "the app is not the pod's init");
    let tree = wait_process_tree(pid, 2, "the app and its child");
    app.wait_count(20);
    let mounts = mountinfo(pid);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let cred = creds(pid);
    let (img, work) = dirs(&ctx, "app");
    let at_dump = count_in_tmpfs(pid);
    let (ok, err) = app.runc_images("checkpoint", &[], &img, &work, &id, &[]);
    let log = std::fs::read_to_string(Path::new(&work).join("dump.log")).unwrap_or_default();
    assert!(ok, "runc checkpoint: {err}\n{log}");
    for (k, ino) in ["pid", "net"].iter().zip(&pod) {
        assert!(
            log.contains(&format!("external {k}[{ino}]")),
            "runc names the pod's {k} namespace as external: {log}"
        );
    }
    wait_pids_gone(&tree, "the app after the checkpoint");
    // (the pause reaped the app's child: the app's IDs in the pod are free again)
    let deadline = Instant::now() + timeout();
    while ns_members("pid", pod[0]) != vec![pp] {
        assert!(
            Instant::now() < deadline,
            "the pod's processes after the checkpoint: {:?}",
            ns_members("pid", pod[0])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, work2) = dirs(&ctx, "app-restore");
    let (ok, err) = app.runc_images("restore", &["-d"], &img, &work2, &id, &[]);
    let log = std::fs::read_to_string(Path::new(&work2).join("restore.log")).unwrap_or_default();
    assert!(ok, "runc restore: {err}\n{log}");
    assert!(
        log.contains("is the pid namespace to join")
            && log.contains("is the net namespace to join"),
        "runc passes the pod's namespaces: {log}"
    );
    let (status, rp) = state(&id);
    assert_eq!(status, "running", "runc state {id}");
    assert_eq!(in_pod(rp), pod, "the restored app in the pod's namespaces");
    assert_ne!(own(rp), own(pp), "the restored app's own namespaces");
    assert_eq!(
        nspids(rp).last(),
        Some(&id_there),
        "the restored app's ID in the pod"
    );
    let first = count_in_tmpfs(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump}"
    );
    let (_, host) = app.ask();
    assert_eq!(host, "ckpt-runc", "the restored app's host name");
    app.wait_count(first + 25);
    assert_eq!(
        mountinfo(rp),
        mounts,
        "the restored app's mounts (normalised)"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{rp}/cgroup")).expect("cgroup"),
        cgroup,
        "the restored app's cgroups"
    );
    assert_eq!(creds(rp), cred, "the restored app's credentials");
    let rtree = wait_process_tree(rp, 2, "the restored app and its child");
    let mut members = vec![pp];
    members.extend(&rtree);
    members.sort_unstable();
    assert_eq!(ns_members("pid", pod[0]), members, "the pod's processes");
    let exec = Command::new(runc())
        .args(["exec", &id, "/bin/sh", "-c", "cat /tmp/count"])
        .output()
        .expect("runc exec");
    assert!(exec.status.success(), "runc exec: {}", text(&exec.stderr));
    assert_killed_and_deleted(&id, rp);
    assert_eq!(state(&pause_id).0, "running", "the pause runs on");
}
