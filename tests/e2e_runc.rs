//! A runc container (issue 15): Debian's runc runs a `runc spec` bundle whose rootfs holds
//! busybox and a static program (`tests/targets/runcsrv.c`) that counts into the
//! container's tmpfs, prints a line every ten counts to its standard output (a file of
//! the host's) and answers on a unix socket in the rootfs. `ckpt dump PID -o IMG` of the
//! container's init (PID 1 of its own PID namespace, in its own mount, UTS, IPC and
//! network namespaces, in the container's cgroups, with runc's capabilities and
//! no_new_privs) kills it; runc's state is dropped (`runc delete -f`, which removes the
//! container's cgroups); `ckpt restore --detach IMG` brings it back, with no extra
//! option: the program goes on counting from where it was and answers; its mountinfo
//! (normalised), host name, cgroups and namespace relations are the original's; its
//! output file goes on where it was. Restores failing at each step of building the
//! container and at sampled later steps leave no process, mount or cgroup behind.
//!
//! Needs root, runc and busybox (`apt-get install runc busybox-static`): fails, naming
//! them, when either is missing.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A program found in PATH (or one of `also`), else the test fails naming its package.
fn find(name: &str, also: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs {name} (apt-get install {package}); not found in PATH")
        })
}

fn runc() -> PathBuf {
    find("runc", &["/usr/sbin/runc", "/usr/bin/runc"], "runc")
}

fn busybox() -> PathBuf {
    find(
        "busybox",
        &["/bin/busybox", "/usr/bin/busybox"],
        "busybox-static",
    )
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

/// A container of the test: its bundle and ID. Dropped: its processes (the restored
/// ones too, found in its cgroups) are killed, runc's state is deleted and its cgroups
/// removed.
struct Container {
    id: String,
    bundle: PathBuf,
    out: PathBuf,
}

impl Container {
    /// A bundle in the test's directory: rootfs with busybox (and `sh`) and runcsrv,
    /// `runc spec`'s config without a terminal, with a writable root, a tmpfs on /tmp
    /// and a host name.
    fn new(ctx: &Ctx, name: &str) -> Container {
        let bundle = ctx.dir.join(name);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy(busybox(), rootfs.join("bin/busybox")).expect("copy busybox");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink sh");
        std::fs::copy(target("runcsrv-static"), rootfs.join("bin/runcsrv")).expect("copy runcsrv");
        let st = Command::new(runc())
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .status()
            .expect("run runc spec");
        assert!(st.success(), "runc spec: {st}");
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config.json"))
                .expect("parse config.json");
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(["/bin/runcsrv"]);
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
        let id = format!("ckpt-e2e-{}-{name}", std::process::id());
        Container {
            id,
            out: ctx.dir.join(format!("{name}.out")),
            bundle,
        }
    }

    /// `runc run -d`, standard input the host's /dev/null, output to a host file (or
    /// with `null`, to /dev/null too); the container's init's PID once it answers.
    fn run(&self, null: bool) -> i32 {
        let out = std::fs::File::create(&self.out).expect("create the output file");
        let (stdout, stderr) = if null {
            (Stdio::null(), Stdio::null())
        } else {
            (out.try_clone().expect("dup").into(), out.into())
        };
        let st = Command::new(runc())
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .expect("run runc run");
        assert!(
            st.success(),
            "runc run -d: {st}: {}",
            std::fs::read_to_string(&self.out).unwrap_or_default()
        );
        let state = Command::new(runc())
            .arg("state")
            .arg(&self.id)
            .output()
            .expect("runc state");
        let v: serde_json::Value = serde_json::from_slice(&state.stdout).expect("runc state json");
        let pid = v["pid"].as_i64().expect("runc state pid") as i32;
        self.ask();
        pid
    }

    /// The program's answer on its socket: (count, host name).
    fn ask(&self) -> (u64, String) {
        let sock = self.bundle.join("rootfs/srv.sock");
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

    /// `runc delete -f`: runc's state (and its cgroups) gone.
    fn delete(&self) {
        let _ = Command::new(runc())
            .args(["delete", "-f"])
            .arg(&self.id)
            .stderr(Stdio::null())
            .status();
    }

    /// The container's cgroup directories that exist now (below the test's own cgroup
    /// of each hierarchy, as runc makes them).
    fn cgroups(&self) -> Vec<PathBuf> {
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
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for p in s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()) {
                    send_signal(p, libc::SIGKILL);
                }
            }
        }
        self.delete();
        for d in self.cgroups().iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The mountinfo of `pid`, normalised: each mount as its mount point, its parent's
/// mount point, root, options, propagation (peer groups numbered in order), type,
/// source, file system options and device (numbered in order for file systems the host
/// does not have mounted: those restore makes anew). Mount IDs differ after a restore.
fn mountinfo(pid: i32) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {p}: {e}"));
    let host_devs: Vec<String> = read("/proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
        .collect();
    let text = read(&format!("/proc/{pid}/mountinfo"));
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let points: BTreeMap<&str, &str> = lines.iter().map(|w| (w[0], w[4])).collect();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut devs: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for w in &lines {
        let sep = w
            .iter()
            .position(|x| *x == "-")
            .expect("mountinfo separator");
        let optional: Vec<String> = w[6..sep]
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, g)) => {
                    let n = groups.len();
                    format!("{k}:{}", *groups.entry(g.to_string()).or_insert(n))
                }
                None => o.to_string(),
            })
            .collect();
        let dev = if host_devs.iter().any(|d| d == w[2]) {
            w[2].to_string()
        } else {
            let n = devs.len();
            format!("new{}", *devs.entry(w[2].to_string()).or_insert(n))
        };
        out.push(format!(
            "{} on {} root {} {} [{}] {} {} {} dev {dev}",
            w[4],
            points.get(w[1]).copied().unwrap_or("(outside)"),
            w[3],
            w[5],
            optional.join(" "),
            w[sep + 1],
            w[sep + 2],
            w[sep + 3..].join(" "),
        ));
    }
    out
}

fn ns_inode(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// Each process of the tree of `root` is in the root's UTS, IPC, mount, network and
/// PID namespaces, none of them the test's; its cgroup and user namespaces are the
/// test's. Returns the tree's size.
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
    for kind in ["cgroup", "user"] {
        for p in &tree {
            assert_eq!(
                ns_inode(&p.to_string(), kind),
                ns_inode("self", kind),
                "{what}: process {p}'s {kind} namespace"
            );
        }
    }
    tree.len()
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

/// Wait until the program's count reaches `n`.
fn wait_count(c: &Container, n: u64) -> u64 {
    let deadline = Instant::now() + timeout();
    loop {
        let (got, _) = c.ask();
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

/// The output file: "start", then "tick 10", "tick 20"... with none missing or twice.
fn assert_ticks(out: &Path, at_least: u64) {
    let text = std::fs::read_to_string(out).expect("read the output");
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
    assert!(n >= at_least, "only {n} counts in the output: {text}");
}

/// The container is dumped (and killed), runc's state deleted, and restored with
/// `ckpt restore --detach IMG`: it goes on counting from where it was, answers, and
/// shows the kernel what the original did (mounts, host name, cgroups, namespaces).
#[test]
fn runc_container_is_dumped_and_restored() {
    let ctx = Ctx::new("runc_container_is_dumped_and_restored");
    let c = Container::new(&ctx, "c1");
    let pid = c.run(false);
    let tree_before = assert_namespaces(pid, "the original container");
    wait_count(&c, 30);
    let mounts = mountinfo(pid);
    assert!(
        mounts.iter().any(|l| l.starts_with("/tmp on / ")) && mounts.len() > 15,
        "the container's mounts: {mounts:#?}"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(cgroup.contains(&c.id), "the container's cgroups: {cgroup}");
    let status = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .expect("status")
            .lines()
            .filter(|l| {
                ["CapBnd", "CapEff", "CapPrm", "NoNewPrivs", "Seccomp:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let creds = status(pid);
    let at_dump = count_in_tmpfs(pid);
    let img = ctx.path("runc.img");
    ctx.dump(pid, &img);
    wait_pids_gone(&[pid], "the container after the dump");
    c.delete();
    assert!(
        c.cgroups().is_empty(),
        "runc delete left cgroups: {:?}",
        c.cgroups()
    );
    let r = ctx.restore_detached(&img);
    let rp = r.pid;
    let first = count_in_tmpfs(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump} at the dump"
    );
    let (n, host) = c.ask();
    assert!(n >= first, "the answer's count {n} after {first}");
    assert_eq!(host, "ckpt-runc", "the restored container's host name");
    let reached = wait_count(&c, first + 25);
    assert_eq!(
        mountinfo(rp),
        mounts,
        "the restored container's mounts (normalised)"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{rp}/cgroup")).expect("cgroup"),
        cgroup,
        "the restored container's cgroups"
    );
    assert_eq!(status(rp), creds, "the restored container's credentials");
    assert_eq!(
        assert_namespaces(rp, "the restored container"),
        tree_before,
        "the restored tree's size"
    );
    let nspid = nspids(rp);
    assert_eq!(
        nspid.last(),
        Some(&1),
        "the restored init is PID 1 of its namespace: {nspid:?}"
    );
    // (each tenth count is printed before the next answer)
    assert_ticks(&c.out, reached / 10 * 10);
}

/// Restores of a dumped container (its standard input and output on /dev/null) failing
/// at each step of building it and at sampled later steps leave no process, no mount
/// and no cgroup behind; the next restore works.
#[test]
fn failed_restores_of_a_runc_container_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_runc_container_leave_nothing");
    // (its standard input and output on /dev/null)
    let c = Container::new(&ctx, "c2");
    let pid = c.run(true);
    wait_count(&c, 10);
    let img = ctx.path("runc.img");
    ctx.dump(pid, &img);
    wait_pids_gone(&[pid], "the container after the dump");
    c.delete();
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    // The steps of a restore (traced, detached: it succeeds and is killed again).
    let trace = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("restore")
                .arg("--detach")
                .arg(&img)
                .env("CKPT_FAULT", "no such step")
                .env("CKPT_FAULT_TRACE", "1")
                .cwd(&ctx.dir),
        )
        .finish();
    let trace_text = text(&trace.stderr);
    assert_eq!(
        trace.status.code(),
        Some(0),
        "the traced restore: {trace_text}"
    );
    let traced: i32 = text(&trace.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .expect("the traced restore's PID");
    ctx.track(traced);
    c.ask();
    send_signal(traced, libc::SIGKILL);
    wait_pids_gone(&[traced], "the traced restore's tree");
    for d in c.cgroups().iter().rev() {
        for _ in 0..100 {
            if std::fs::remove_dir(d).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(c.cgroups().is_empty(), "cgroups left: {:?}", c.cgroups());
    let total = trace_text
        .lines()
        .filter(|l| l.starts_with("ckpt: step #"))
        .count();
    for step in [
        "make the cgroups the tree's mounts bind",
        "mount the tree's file systems",
        "place the processes in their cgroups",
    ] {
        assert!(
            trace_text.contains(step),
            "no step {step:?} traced:\n{trace_text}"
        );
    }
    let mut faults: Vec<String> = [
        "create the tree's mount namespace",
        "make the cgroups the tree's mounts bind",
        "mount the tree's file systems",
        "set the tree's mount flags",
        "create the tree's PID namespace",
        "place the processes in their cgroups",
    ]
    .map(String::from)
    .to_vec();
    faults.extend(
        (1..=total)
            .filter(|n| n % 9 == 0 || *n + 1 == total || *n == total)
            .map(|n| format!("#{n}")),
    );
    for f in &faults {
        assert_restore_fault_leaves_nothing(&ctx, &img, &["--detach"], f, &[], &[]);
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
            host,
            "restore failing at {f} left a mount on the host"
        );
        assert!(
            c.cgroups().is_empty(),
            "restore failing at {f} left cgroups: {:?}",
            c.cgroups()
        );
    }
    eprintln!("{} failing restores of {total} steps", faults.len());
    let r = ctx.restore_detached(&img);
    let (n, host_name) = c.ask();
    assert_eq!(host_name, "ckpt-runc");
    wait_count(&c, n + 5);
    assert!(pid_exists(r.pid));
}
