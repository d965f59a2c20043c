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

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

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

    /// Change the bundle's config.json.
    fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let p = self.bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read config.json"))
                .expect("parse config.json");
        f(&mut cfg);
        std::fs::write(&p, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write config.json");
    }

    /// `runc run -d`, standard input the host's /dev/null, output to a host file (or
    /// with `null`, to /dev/null too); the container's init's PID once it answers.
    fn run(&self, null: bool) -> i32 {
        let pid = self.start(null);
        self.ask();
        pid
    }

    /// [`Container::run`] without waiting for an answer.
    fn start(&self, null: bool) -> i32 {
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
        v["pid"].as_i64().expect("runc state pid") as i32
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

/// The mountinfo lines of `pid` split in words: (mount point, root, device, fstype).
fn mounts_of(pid: &str) -> Vec<(String, String, String, String)> {
    let p = format!("/proc/{pid}/mountinfo");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {p}: {e}"))
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            let sep = w.iter().position(|x| *x == "-")?;
            Some((
                w[4].to_string(),
                w[3].to_string(),
                w[2].to_string(),
                w.get(sep + 1)?.to_string(),
            ))
        })
        .collect()
}

/// (controllers, path) of each line of /proc/PID/cgroup.
fn cgroup_pairs(pid: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read cgroup")
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next()?;
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// `ckpt check IMAGE --json` of a dumped container lists what it needs of the host, as
/// the container really had it: its namespaces (UTS, IPC, mount, network and PID its
/// own, cgroup and user the host's), its root file system bound from the bundle's
/// rootfs (that device and inode), its cgroup mounts bound from the container's
/// cgroups, the types of the file systems mounted anew, and each hierarchy's cgroup
/// paths as /proc/PID/cgroup showed them; no user namespace maps.
#[test]
fn check_json_lists_what_a_runc_container_needs() {
    let ctx = Ctx::new("check_json_lists_what_a_runc_container_needs");
    let c = Container::new(&ctx, "c3");
    let pid = c.run(true);
    wait_count(&c, 5);
    let p = pid.to_string();
    let mounts = mounts_of(&p);
    let cgroups = cgroup_pairs(&p);
    let inodes: Vec<(&str, u64)> = ["uts", "ipc", "mnt", "net", "cgroup", "user"]
        .iter()
        .map(|k| (*k, ns_inode(&p, k)))
        .collect();
    let img = ctx.path("runc.img");
    ctx.dump(pid, &img);
    wait_pids_gone(&[pid], "the container after the dump");
    c.delete();
    let run = ctx.ckpt(&[
        std::ffi::OsStr::new("check"),
        img.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ]);
    let out = text(&run.stdout);
    assert!(
        run.status.success(),
        "ckpt check --json: {out}\n{}",
        run.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("check --json is JSON");
    assert_eq!(v["restorable"], true, "{out}");
    let req = &v["requirements"];
    // Namespaces.
    let ns = req["namespaces"].as_array().expect("namespaces");
    let how = |kind: &str| -> Vec<(String, Option<u64>)> {
        ns.iter()
            .filter(|n| n["kind"] == kind)
            .map(|n| {
                (
                    n["as"].as_str().expect("as").to_string(),
                    n["inode"].as_u64(),
                )
            })
            .collect()
    };
    for (kind, inode) in &inodes {
        let want = if ["cgroup", "user"].contains(kind) {
            "host"
        } else {
            "own"
        };
        assert_eq!(
            how(kind),
            vec![(want.to_string(), Some(*inode))],
            "the {kind} namespace in {out}"
        );
    }
    assert_eq!(how("pid"), vec![("own".to_string(), None)], "{out}");
    assert!(
        ns.iter().all(|n| n.get("uid_map").is_none()),
        "no user namespace maps: {out}"
    );
    // External mounts: the root from the rootfs, the cgroup mounts from the cgroups.
    let ext = req["mounts"]["external"]
        .as_array()
        .expect("external mounts");
    let rootfs = c.bundle.join("rootfs");
    let st = std::fs::metadata(&rootfs).expect("stat rootfs");
    let root = ext
        .iter()
        .find(|m| m["point"] == "/")
        .unwrap_or_else(|| panic!("no external root mount: {out}"));
    assert_eq!(root["source"], rootfs.to_str().expect("utf-8"), "{out}");
    assert_eq!(
        root["dev"],
        format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev())),
        "{out}"
    );
    assert_eq!(root["ino"], st.ino(), "{out}");
    assert_eq!(root["cgroup"], false, "{out}");
    let host = mounts_of("self");
    let mut want_cg: Vec<(String, String)> = mounts
        .iter()
        .filter(|m| m.3 == "cgroup" || m.3 == "cgroup2")
        .map(|m| {
            // The host's mount of the same hierarchy (device), at its root.
            let h = host
                .iter()
                .find(|h| h.2 == m.2 && h.1 == "/")
                .unwrap_or_else(|| panic!("no host mount of {m:?}"));
            (m.0.clone(), format!("{}{}", h.0, m.1))
        })
        .collect();
    let mut got_cg: Vec<(String, String)> = ext
        .iter()
        .filter(|m| m["cgroup"] == true)
        .map(|m| {
            (
                m["point"].as_str().expect("point").to_string(),
                m["source"]
                    .as_str()
                    .expect("source")
                    .trim_end_matches('/')
                    .to_string(),
            )
        })
        .collect();
    want_cg.sort();
    got_cg.sort();
    assert!(
        !want_cg.is_empty(),
        "the container has cgroup mounts: {mounts:?}"
    );
    assert_eq!(got_cg, want_cg, "the cgroup mounts in {out}");
    assert_eq!(
        ext.len(),
        want_cg.len() + 1,
        "no other external mount: {out}"
    );
    // File systems mounted anew: the types of every other mount.
    let points: Vec<&str> = ext.iter().filter_map(|m| m["point"].as_str()).collect();
    let mut want_fs: Vec<&str> = mounts
        .iter()
        .filter(|m| !points.contains(&m.0.as_str()))
        .map(|m| m.3.as_str())
        .collect();
    want_fs.sort_unstable();
    want_fs.dedup();
    let got_fs: Vec<&str> = req["mounts"]["filesystems"]
        .as_array()
        .expect("filesystems")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert_eq!(got_fs, want_fs, "the file systems in {out}");
    // Cgroups: each hierarchy the container was outside the test's cgroup of, with its
    // path below the test's (relative) or from the root.
    let own = cgroup_pairs("self");
    let mut want: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for (ctrl, path) in &cgroups {
        let mine = own
            .iter()
            .find(|(c2, _)| c2 == ctrl)
            .map(|(_, p2)| p2.as_str())
            .expect("the test is in every hierarchy");
        if mine == path {
            continue;
        }
        let below = if mine == "/" {
            path.strip_prefix('/')
        } else {
            path.strip_prefix(mine).and_then(|r| r.strip_prefix('/'))
        };
        want.push(match below {
            Some(r) => (ctrl.clone(), vec![r.to_string()], vec![]),
            None => (ctrl.clone(), vec![], vec![path.clone()]),
        });
    }
    want.sort();
    let strs = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .expect("paths")
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let got: Vec<(String, Vec<String>, Vec<String>)> = req["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .map(|h| {
            let ctrl = h["controllers"].as_str().expect("controllers").to_string();
            let version = if ctrl.is_empty() { 2 } else { 1 };
            assert_eq!(h["version"], version, "{h}");
            (ctrl, strs(&h["relative"]), strs(&h["absolute"]))
        })
        .collect();
    assert!(!want.is_empty(), "the container's cgroups: {cgroups:?}");
    assert_eq!(got, want, "the cgroups in {out}");
}

/// Cgroups of every hierarchy below `root` (killing what is in them), removed.
struct CgroupRoot(String);

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        for m in cgroup_mounts() {
            let top = m.join(self.0.trim_start_matches('/'));
            if !top.is_dir() {
                continue;
            }
            let mut dirs = vec![top.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                    for e in rd.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(e.path());
                        }
                    }
                }
                i += 1;
            }
            for d in &dirs {
                if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for p in s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()) {
                        send_signal(p, libc::SIGKILL);
                    }
                }
            }
            for d in dirs.iter().rev() {
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

/// One image of a container restored twice, the two copies side by side: the first
/// as it was, the second with `--external-mount /=COPY` (a copy of the rootfs,
/// hard-linked: a program that is another file is refused) and
/// `--cgroup-root ROOT`. Each is PID 1 of a PID namespace of its own, counts on
/// independently from the dump's count in its own tmpfs, answers on its own socket
/// (in its own rootfs), and is in its own cgroups: the second's below ROOT, and its
/// cgroup mounts bind those (not the first's).
#[test]
fn runc_container_is_restored_twice_side_by_side() {
    let ctx = Ctx::new("runc_container_is_restored_twice_side_by_side");
    let c = Container::new(&ctx, "c4");
    let pid = c.run(true);
    wait_count(&c, 10);
    let before = mountinfo(pid);
    let img = ctx.path("runc.img");
    ctx.dump(pid, &img);
    wait_pids_gone(&[pid], "the container after the dump");
    c.delete();
    // The copy of the rootfs: its directories new, its files hard links (the program
    // must be the file it was: restore refuses another copy of it).
    let copy = c.bundle.join("rootfs2");
    let st = Command::new("cp")
        .arg("-al")
        .arg(c.bundle.join("rootfs"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(st.success(), "cp -al rootfs: {st}");
    let cg_root = format!("/ckpt-e2e-{}-copy2", std::process::id());
    let _cg_guard = CgroupRoot(cg_root.clone());
    let first = ctx.restore_detached(&img);
    let (n1, _) = c.ask();
    // The second copy.
    let second = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("restore")
                .arg("--detach")
                .arg(format!("--external-mount=/={}", copy.display()))
                .arg(format!("--cgroup-root={cg_root}"))
                .arg(&img)
                .cwd(&ctx.dir),
        )
        .finish();
    assert_eq!(
        second.status.code(),
        Some(0),
        "the second restore: {}",
        text(&second.stderr)
    );
    let p2: i32 = text(&second.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .expect("the second restore's PID");
    ctx.track(p2);
    let p1 = first.pid;
    assert_ne!(p1, p2);
    for p in [p1, p2] {
        assert_eq!(nspids(p).last(), Some(&1), "PID 1 of its namespace");
    }
    assert_ne!(
        ns_inode(&p1.to_string(), "pid"),
        ns_inode(&p2.to_string(), "pid")
    );
    assert_ne!(
        ns_inode(&p1.to_string(), "mnt"),
        ns_inode(&p2.to_string(), "mnt")
    );
    // Each in its own rootfs: the second's program is the copy's file.
    let ino = |p: &Path| {
        let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (m.dev(), m.ino())
    };
    assert_eq!(
        ino(Path::new(&format!("/proc/{p2}/root/bin/runcsrv"))),
        ino(&copy.join("bin/runcsrv")),
        "the second copy's root is the rootfs copy"
    );
    assert_eq!(
        ino(Path::new(&format!("/proc/{p1}/root/bin/runcsrv"))),
        ino(&c.bundle.join("rootfs/bin/runcsrv")),
        "the first copy's root is the rootfs"
    );
    // Both count on, each in its own tmpfs, answering on its own socket.
    let c2 = Container {
        id: c.id.clone(),
        bundle: copy.parent().expect("bundle").join("second"),
        out: ctx.dir.join("unused.out"),
    };
    std::fs::create_dir_all(&c2.bundle).expect("mkdir");
    std::os::unix::fs::symlink(&copy, c2.bundle.join("rootfs")).expect("symlink");
    let (a2, host2) = c2.ask();
    assert_eq!(host2, "ckpt-runc");
    let at1 = wait_count(&c, n1 + 20);
    let at2 = wait_count(&c2, a2 + 20);
    assert!(count_in_tmpfs(p1) >= at1 && count_in_tmpfs(p2) >= at2);
    // Independent: stopping the first leaves the second counting.
    send_signal(p1, libc::SIGKILL);
    wait_pids_gone(&[p1], "the first copy");
    let now2 = c2.ask().0;
    wait_count(&c2, now2 + 10);
    assert!(
        !c.bundle.join("rootfs/srv.sock").exists()
            || std::os::unix::net::UnixStream::connect(c.bundle.join("rootfs/srv.sock")).is_err(),
        "the first copy's socket still answers after it was killed"
    );
    // The second's cgroups: below the root, and its cgroup mounts bind them.
    let own = cgroup_pairs("self");
    for (ctrl, path) in cgroup_pairs(&p2.to_string()) {
        let mine = own
            .iter()
            .find(|(c3, _)| *c3 == ctrl)
            .map(|(_, x)| x.clone())
            .unwrap_or_default();
        if path == mine {
            // (a hierarchy the container was in the test's cgroup of: restored there)
            continue;
        }
        assert!(
            path.starts_with(&format!("{cg_root}/")),
            "the second copy is in {ctrl}:{path}, not below {cg_root}"
        );
    }
    let mounts2 = mounts_of(&p2.to_string());
    let cg_mounts: Vec<_> = mounts2.iter().filter(|m| m.3 == "cgroup").collect();
    assert!(!cg_mounts.is_empty(), "{mounts2:?}");
    for m in cg_mounts {
        assert!(
            m.1.starts_with(&format!("{cg_root}/")),
            "the second copy's cgroup mount on {} binds {}, not a cgroup below {cg_root}",
            m.0,
            m.1
        );
    }
    // Otherwise the same mounts as the original (but the root's and cgroups' roots).
    let norm = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                format!("{} {}", w[0], w[2])
            })
            .collect()
    };
    assert_eq!(
        norm(mountinfo(p2)),
        norm(before),
        "the second copy's mount points"
    );
}

/// A pod as Kubernetes or `podman pod create --share pid` runs it: a "pause" container
/// (`extpidns hold`, reaping, PID 1 of a PID namespace of its own) and an app container (runcsrv)
/// whose config.json joins the pause's PID namespace (`{"type": "pid", "path":
/// "/proc/PAUSE/ns/pid"}`), with its own mount namespace whose /proc runc mounted from
/// inside the pod's namespace. `ckpt dump APP --external pidns[INO]:pod` (a dump naming
/// another namespace is refused, the app answering on); after `runc delete`, `ckpt
/// restore --detach --inherit-fd N:pod` (N a descriptor of the pause's namespace, as a
/// pod runtime gives it) brings the app back INSIDE the pod's namespace with its ID
/// there: its /proc lists the pod's processes as before, its mounts (normalised
/// mountinfo), cgroups, host name and other namespaces are the original's, and it goes
/// on counting and answering. Restores failing while the mount namespace and the root
/// are made leave nothing in the pod's namespace, no mount on the host, no cgroup.
#[test]
fn runc_pod_member_is_restored() {
    // (A short name: the socket's path in the test's directory must fit sun_path.)
    let ctx = Ctx::new("runc_pod_member_is_restored");
    let pause = Container::new(&ctx, "pause");
    // (As a pod's pause does, it reaps the pod's orphans.)
    std::fs::copy(
        target("extpidns-static"),
        pause.bundle.join("rootfs/bin/pause"),
    )
    .expect("copy the pause");
    pause.edit(|cfg| {
        cfg["process"]["args"] = serde_json::json!(["/bin/pause", "hold"]);
    });
    let pause_pid = pause.start(true);
    let pod = ns_inode(&pause_pid.to_string(), "pid");
    let c = Container::new(&ctx, "app");
    c.edit(|cfg| {
        for ns in cfg["linux"]["namespaces"]
            .as_array_mut()
            .expect("config.json namespaces")
        {
            if ns["type"] == "pid" {
                ns["path"] = format!("/proc/{pause_pid}/ns/pid").into();
            }
        }
    });
    let pid = c.run(false);
    let p = pid.to_string();
    assert_eq!(
        ns_inode(&p, "pid"),
        pod,
        "the app is in the pod's PID namespace"
    );
    let id_there = *nspids(pid).last().expect("NSpid");
    assert_ne!(id_there, 1, "the app is not the namespace's init");
    // The pod's processes: the pause (1 there), the app and its child.
    let app_tree = wait_process_tree(pid, 2, "the app and its child");
    let mut members = vec![pause_pid];
    members.extend(&app_tree);
    members.sort();
    assert_eq!(ns_members("pid", pod), members);
    let mut ids: Vec<i32> = app_tree
        .iter()
        .filter_map(|&p| nspids(p).last().copied())
        .collect();
    ids.push(1);
    ids.sort();
    let listing = proc_listing(pid);
    assert_eq!(listing, ids, "the app's /proc lists the pod's processes");
    wait_count(&c, 20);
    let mounts = mountinfo(pid);
    let cgroup = std::fs::read_to_string(format!("/proc/{p}/cgroup")).expect("cgroup");
    let own_ns: Vec<u64> = ["mnt", "uts", "ipc", "net"]
        .iter()
        .map(|k| ns_inode(&p, k))
        .collect();
    for (k, ino) in ["mnt", "uts", "ipc", "net"].iter().zip(&own_ns) {
        assert_ne!(
            *ino,
            ns_inode("self", k),
            "the app's {k} namespace is its own"
        );
    }
    let img = ctx.path("app.img");
    let dump = |ext: &str| {
        ctx.ckpt(&[
            std::ffi::OsStr::new("dump"),
            std::ffi::OsStr::new(&p),
            std::ffi::OsStr::new("-o"),
            img.as_os_str(),
            std::ffi::OsStr::new("--external"),
            std::ffi::OsStr::new(ext),
        ])
    };
    // Another namespace named: refused, naming both; the app runs on.
    dump("pidns[1]:pod")
        .assert_fails(1)
        .assert_stderr_mentions(&["pidns[1]", &format!("pid:[{pod}]")]);
    assert!(!img.exists(), "a refused dump left an image");
    assert_running_untraced(pid, "the app after a refused dump");
    let n = c.ask().0;
    wait_count(&c, n + 3);
    ctx.track(pid);
    dump(&format!("pidns[{pod}]:pod")).assert_ok();
    wait_pids_gone(&app_tree, "the app after its dump");
    let at_dump = count_in_tmpfs_of(&c);
    c.delete();
    assert!(c.cgroups().is_empty(), "runc delete left cgroups");
    assert_eq!(
        ns_members("pid", pod),
        vec![pause_pid],
        "only the pause is left"
    );

    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let join = format!("pid:/proc/{pause_pid}/ns/pid");
    for f in [
        "create the tree's mount namespace",
        "mount a proc from inside the tree's PID namespace",
        "create the root in the external PID namespace",
        "place the processes in their cgroups",
    ] {
        assert_restore_fault_leaves_nothing(
            &ctx,
            &img,
            &["--detach", "--join-ns", &join],
            f,
            &[],
            &[pause_pid],
        );
        assert_eq!(
            ns_members("pid", pod),
            vec![pause_pid],
            "restore failing at {f} left something in the pod's namespace"
        );
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

    // As a pod runtime gives it: a descriptor of the pod's namespace, by its key.
    let nsf = std::fs::File::open(format!("/proc/{pause_pid}/ns/pid")).expect("open the pod's");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&nsf);
    let r = ctx
        .spawn(
            &Spec::new(ckpt_bin())
                .arg("restore")
                .arg("--detach")
                .arg(&img)
                .arg("--inherit-fd")
                .arg(format!("{fd}:pod"))
                .keep_fd(fd)
                .cwd(&ctx.dir),
        )
        .finish();
    assert_eq!(
        r.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&r.stderr)
    );
    let rp: i32 = text(&r.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .expect("the restored app's PID");
    ctx.track(rp);
    drop(nsf);
    let q = rp.to_string();
    assert_eq!(
        ns_inode(&q, "pid"),
        pod,
        "restored in the pod's PID namespace"
    );
    assert_eq!(nspids(rp).last(), Some(&id_there), "with its ID there");
    let tree2 = wait_process_tree(rp, 2, "the restored app and its child");
    let mut members2 = vec![pause_pid];
    members2.extend(&tree2);
    members2.sort();
    assert_eq!(ns_members("pid", pod), members2, "nothing of ckpt's there");
    assert_eq!(
        proc_listing(rp),
        listing,
        "its /proc lists the pod's processes"
    );
    let first = count_in_tmpfs(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the app counts on from where it was: {first} after {at_dump}"
    );
    let (n, host_name) = c.ask();
    assert_eq!(host_name, "ckpt-runc");
    wait_count(&c, n + 10);
    assert_eq!(
        mountinfo(rp),
        mounts,
        "the restored app's mounts (normalised)"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{q}/cgroup")).expect("cgroup"),
        cgroup,
        "the restored app's cgroups"
    );
    // (Not compared with the original's inodes: a freed namespace's may be reused.)
    for k in ["mnt", "uts", "ipc", "net"] {
        let now = ns_inode(&q, k);
        assert!(
            now != ns_inode("self", k) && now != ns_inode(&pause_pid.to_string(), k),
            "the restored app's {k} namespace is one of its own"
        );
    }
    assert_eq!(
        ns_inode(&pause_pid.to_string(), "pid"),
        pod,
        "the pause is untouched"
    );
}

/// The last count the container printed to its output file (every tenth): at most
/// the count in its tmpfs (for a container that is gone).
fn count_in_tmpfs_of(c: &Container) -> u64 {
    let text = std::fs::read_to_string(&c.out).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .unwrap_or(0)
}
