//! containerd checkpoints and restores through ckpt as its `criu` (issue 16):
//! containerd 1.6 (`ctr`, the `io.containerd.runc.v2` shim, runc) runs `criu swrk`
//! from PATH through runc. The test starts a containerd of its own (its root, state
//! and sockets in a directory of the test's, the native snapshotter, cgroupfs, no CRI
//! plugin, no network) with a directory whose `criu` is ckpt first in its PATH, which
//! the shim and runc inherit (the host may have the real CRIU in /usr/sbin: the tests
//! check that the checkpoints hold `ckpt.img`, which only ckpt writes, and that the
//! restore log is ckpt's). containerd runs in a private mount namespace of the test's
//! (`nsenter`), so that the mounts it makes stay out of the host's mount table, which
//! the tests running beside this one compare. The image is imported (`ctr images
//! import`) from an OCI image layout the test builds from a busybox rootfs with
//! `tests/targets/runcsrv.c`.
//!
//! What ctr 1.6 offers: `ctr task checkpoint [--exit]` (an image in containerd's
//! content store holding the criu directory as a tar, which ctr cannot restore), and
//! `ctr containers checkpoint --task [--rw] CONTAINER REF` / `ctr containers restore
//! --live [--rw] CONTAINER REF` (the task is paused for the checkpoint and runs on).
//! Each test checks what the restored program does (it counts on from the value of
//! the checkpoint, its output goes on where it stopped, it answers on its socket), what
//! the kernel shows of it (namespaces, mounts, cgroups, credentials, seccomp, limits:
//! the original's) and what containerd shows (`ctr task ls`, `ctr task exec`); a
//! refused checkpoint leaves the task running, a failed restore leaves nothing running
//! and the checkpoint restorable.
//!
//! Needs root, containerd, runc and busybox (`apt-get install containerd runc
//! busybox-static`): fails, naming them, when one is missing.

mod common;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A containerd of the test's own, in a private mount namespace, ckpt as `criu` first
/// in its PATH; its tasks, containers, cgroups, FIFOs and directory go when dropped.
struct Containerd {
    dir: PathBuf,
    ctr: PathBuf,
    /// The cgroup under which the containers' cgroups are (`/ckpt-ctd-PID-NAME`).
    cgroup: String,
    /// Container IDs start with this (the FIFOs ctr makes are named after them).
    prefix: String,
    /// The process holding the private mount namespace where containerd and every
    /// ctr command run.
    ns: Child,
    daemon: Option<Child>,
}

/// The SHA-256 of `file` (coreutils' sha256sum) and its size.
fn digest(file: &Path) -> (String, u64) {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", file.display());
    let hex = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "sha256sum of {}", file.display());
    let size = std::fs::metadata(file).expect("stat blob").len();
    (hex, size)
}

/// Put `file` in the OCI layout's blobs: its descriptor's digest and size.
fn blob(layout: &Path, file: &Path) -> (String, u64) {
    let (hex, size) = digest(file);
    std::fs::copy(file, layout.join("blobs/sha256").join(&hex)).expect("copy blob");
    (format!("sha256:{hex}"), size)
}

/// An OCI image layout tarball of a busybox rootfs with runcsrv, named `name`.
fn image_tarball(ctx: &Ctx, name: &str) -> PathBuf {
    let busybox = busybox();
    let rootfs = ctx.path("rootfs");
    for d in ["bin", "tmp", "proc", "sys", "dev", "etc", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink sh");
    std::fs::copy(target("runcsrv-static"), rootfs.join("bin/runcsrv")).expect("copy runcsrv");
    let layout = ctx.path("oci");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir oci");
    let tar = |dir: &Path, to: &Path| {
        let st = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(to)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(st.success(), "tar {}: {st}", dir.display());
    };
    let layer = ctx.path("layer.tar");
    tar(&rootfs, &layer);
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let config = ctx.path("config.json");
    let cfg = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/runcsrv"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    std::fs::write(&config, cfg.to_string()).expect("write config");
    let (config_digest, config_size) = blob(&layout, &config);
    let manifest = ctx.path("manifest.json");
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    std::fs::write(&manifest, m.to_string()).expect("write manifest");
    let (manifest_digest, manifest_size) = blob(&layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("write index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let out = ctx.path("image.tar");
    tar(&layout, &out);
    out
}

const IMAGE: &str = "localhost/ckpt-e2e:1";

impl Containerd {
    fn new(ctx: &Ctx, name: &str) -> Containerd {
        let containerd = find("containerd", &["/usr/bin/containerd"], "containerd");
        let ctr = find("ctr", &["/usr/bin/ctr"], "containerd");
        find(
            "containerd-shim-runc-v2",
            &["/usr/bin/containerd-shim-runc-v2"],
            "containerd",
        );
        let runc = runc();
        let me = std::process::id();
        // (short: containerd's and the shims' sockets are in it)
        let dir = PathBuf::from(format!("/tmp/ckpt-ctd-{me}-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::os::unix::fs::symlink(ckpt_bin(), bin.join("criu")).expect("link ckpt as criu");
        // runc from where the test found it, ckpt as criu before anything else.
        let mut path = bin.clone().into_os_string();
        if let Some(d) = runc.parent() {
            path.push(":");
            path.push(d);
        }
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let d = |x: &str| dir.join(x).to_string_lossy().into_owned();
        let config = format!(
            "version = 2\n\
             root = \"{}\"\n\
             state = \"{}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n\
             [ttrpc]\n  address = \"{}\"\n\
             [debug]\n  level = \"debug\"\n",
            d("root"),
            d("state"),
            d("c.sock"),
            d("t.sock"),
        );
        std::fs::write(dir.join("config.toml"), config).expect("write config.toml");
        let tarball = image_tarball(ctx, IMAGE);
        let ns = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare (util-linux)");
        // (until unshare has entered its new namespace and executed sleep)
        let mine = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let t0 = Instant::now();
        while std::fs::read_link(format!("/proc/{}/ns/mnt", ns.id())).ok() == Some(mine.clone())
            || std::fs::read_link(format!("/proc/{}/exe", ns.id()))
                .map(|e| !e.to_string_lossy().contains("sleep"))
                .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "unshare --mount did not start"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd.log");
        let daemon = Command::new("nsenter")
            .args(["-t", &ns.id().to_string(), "-m", "--"])
            .arg(&containerd)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("run containerd");
        let c = Containerd {
            dir,
            ctr,
            cgroup: format!("/ckpt-ctd-{me}-{name}"),
            prefix: format!("ckpt{me}-"),
            ns,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + timeout();
        while !c.run(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c.ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            &tarball.to_string_lossy(),
        ]);
        c
    }

    /// ctr ARGS against this containerd, in its mount namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.ns.id().to_string(), "-m", "--"])
            .arg(&self.ctr)
            .arg("--address")
            .arg(self.dir.join("c.sock"))
            .args(["--namespace", "ckpt"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run ctr")
    }

    /// ctr ARGS, killed if it takes more than 10 s (for the cleanup, which must end
    /// whatever state a failed test left the task in): its standard output.
    fn run_bounded(&self, args: &[&str]) -> String {
        let Ok(mut child) = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            return String::new();
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child
            .wait_with_output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default()
    }

    /// ctr ARGS, which must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ctr {}: {}{}\n{}",
            args.join(" "),
            text(&out.stderr),
            text(&out.stdout),
            self.logs_of_ckpt()
        );
        text(&out.stdout)
    }

    /// ckpt's logs in the tasks' work directories.
    fn logs_of_ckpt(&self) -> String {
        let mut out = String::new();
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task/ckpt");
        for e in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for f in ["work/dump.log", "work/restore.log", "criu-dump.log"] {
                if let Ok(s) = std::fs::read_to_string(e.path().join(f)) {
                    out.push_str(&format!("--- {}/{f}:\n{s}\n", e.path().display()));
                }
            }
        }
        out
    }

    /// The container ID for `name`.
    fn id(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The task's bundle: the shim's state, its `work` (the criu work directory:
    /// dump.log, restore.log, stats) and `criu-dump.log` (the dump log on a failure).
    fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task/ckpt")
            .join(id)
    }

    fn work_log(&self, id: &str, f: &str) -> String {
        std::fs::read_to_string(self.bundle(id).join("work").join(f)).unwrap_or_default()
    }

    /// `ctr run -d` of runcsrv with containerd's default seccomp filter, its output to
    /// `log`, its cgroups under the test's; its PID once it answers.
    fn start(&self, id: &str, log: &Path) -> i32 {
        let uri = format!("file://{}", log.display());
        let cg = format!("{}/{id}", self.cgroup);
        self.ok(&[
            "run",
            "-d",
            "--snapshotter",
            "native",
            "--seccomp",
            "--log-uri",
            &uri,
            "--cgroup",
            &cg,
            IMAGE,
            id,
            "/bin/runcsrv",
        ]);
        let pid = self.pid(id);
        runcsrv_ask(pid);
        pid
    }

    /// (status, PID) of the task as `ctr task ls` shows it; ("", 0) without a task.
    fn state(&self, id: &str) -> (String, i32) {
        let ls = self.ok(&["task", "ls"]);
        for l in ls.lines().skip(1) {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() == 3 && w[0] == id {
                return (w[2].to_string(), w[1].parse().unwrap_or(0));
            }
        }
        (String::new(), 0)
    }

    fn pid(&self, id: &str) -> i32 {
        let (status, pid) = self.state(id);
        assert_eq!(status, "RUNNING", "ctr task ls: {id}");
        pid
    }

    /// Kill the task, delete it and its container; wait until its processes are gone.
    fn remove(&self, id: &str, pid: i32) {
        self.ok(&["task", "kill", "-s", "SIGKILL", id]);
        wait_pids_gone(&[pid], "the task after ctr task kill");
        let deadline = Instant::now() + timeout();
        while self.state(id).0 != "STOPPED" {
            assert!(Instant::now() < deadline, "{id} never stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ok(&["task", "rm", id]);
        self.ok(&["containers", "rm", id]);
    }

    /// The FIFO ctr made for the task's standard output (`/run/containerd/fifo/*/ID-stdout`).
    /// The newest, when a failed restore left one before.
    fn stdout_fifo(&self, id: &str) -> PathBuf {
        let name = format!("{id}-stdout");
        std::fs::read_dir("/run/containerd/fifo")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(&name))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no /run/containerd/fifo/*/{name}"))
    }

    /// The checkpoint image `reference`: its index (the media types of its
    /// manifests) and the files of its criu directory.
    fn checkpoint_image(&self, reference: &str) -> (serde_json::Value, Vec<String>) {
        let ls = self.ok(&["images", "ls"]);
        let line = ls
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .unwrap_or_else(|| panic!("no image {reference}: {ls}"));
        // (`ctr task checkpoint` labels its images; `ctr containers checkpoint` not)
        assert!(
            !reference.starts_with("containerd.io/checkpoint/")
                || line.contains("containerd.io/checkpoint=true"),
            "the checkpoint's label: {line}"
        );
        let digest = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let index: serde_json::Value =
            serde_json::from_str(&self.ok(&["content", "get", &digest])).expect("index json");
        let criu = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| {
                m["mediaType"] == "application/vnd.containerd.container.criu.checkpoint.criu.tar"
            })
            .unwrap_or_else(|| panic!("no criu tar in the checkpoint: {index}"));
        let tarball = self.dir.join("criu.tar");
        let out = self.run(&["content", "get", criu["digest"].as_str().unwrap_or("")]);
        assert!(out.status.success(), "ctr content get the criu tar");
        std::fs::write(&tarball, &out.stdout).expect("write criu.tar");
        let list = Command::new("tar")
            .arg("-tf")
            .arg(&tarball)
            .output()
            .expect("tar -t");
        let files = text(&list.stdout)
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .collect();
        (index, files)
    }

    /// The count in the checkpoint's copy of the container's writable layer
    /// (`/tmp/count`, written while the task was paused for the checkpoint).
    fn count_in_checkpoint(&self, index: &serde_json::Value) -> u64 {
        let layer = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip")
            .unwrap_or_else(|| panic!("no writable layer in the checkpoint: {index}"));
        let out = self.run(&["content", "get", layer["digest"].as_str().unwrap_or("")]);
        let gz = self.dir.join("rw.tar.gz");
        std::fs::write(&gz, &out.stdout).expect("write rw layer");
        let x = Command::new("tar")
            .arg("-xzOf")
            .arg(&gz)
            .arg("tmp/count")
            .output()
            .expect("tar -x");
        text(&x.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no count in the checkpoint's layer: {}", text(&x.stderr)))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks and containers first (their shims exit with them).
        let ls = self.run_bounded(&["containers", "ls", "-q"]);
        for id in ls.lines() {
            self.run_bounded(&["task", "kill", "-s", "SIGKILL", id]);
            self.run_bounded(&["task", "rm", "-f", id]);
            self.run_bounded(&["containers", "rm", id]);
        }
        if let Some(mut d) = self.daemon.take() {
            send_signal(d.id() as i32, libc::SIGTERM);
            let _ = d.wait();
        }
        // Shims still running for this containerd (their command lines name its socket).
        let sock = self.dir.join("c.sock").to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&sock) {
                send_signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.ns.kill();
        let _ = self.ns.wait();
        // The containers' cgroups (v1 hierarchies or v2), deepest first.
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for top in [e.path(), PathBuf::from("/sys/fs/cgroup")] {
                let parent = top.join(self.cgroup.trim_start_matches('/'));
                if let Ok(rd) = std::fs::read_dir(&parent) {
                    for c in rd.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                    let _ = std::fs::remove_dir(&parent);
                }
            }
        }
        // The FIFOs ctr made for the tasks' standard streams.
        for e in std::fs::read_dir("/run/containerd/fifo")
            .into_iter()
            .flatten()
            .flatten()
        {
            let ours = std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| {
                    f.file_name()
                        .to_string_lossy()
                        .starts_with(self.prefix.as_str())
                });
            if ours {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The "tick N" lines of `out` from its first, checked consecutive (10 apart, none
/// missing or twice): (first, last).
fn ticks(out: &str, what: &str) -> (u64, u64) {
    let mut first = None;
    let mut last = 0;
    for l in out.lines().filter(|l| *l != "start") {
        let n: u64 = l
            .strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: a line {l:?} in {out:?}"));
        if first.is_some() {
            assert_eq!(n, last + 10, "{what}: the ticks go on one by one: {out}");
        } else {
            first = Some(n);
        }
        last = n;
    }
    (first.unwrap_or(0), last)
}

/// What the task's FIFO for standard output holds (read without waiting once it has
/// `lines` lines).
fn read_fifo(fifo: &Path, lines: usize) -> String {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .unwrap_or_else(|e| panic!("open {}: {e}", fifo.display()));
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout();
    loop {
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => {
                let s = text(&got);
                if s.ends_with('\n') && s.lines().count() >= lines {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "only {s:?} from {}",
                    fifo.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The restored task `id` runs as the original did: `ctr task ls` shows it running;
/// its count goes on from `at_dump`; its output (in ctr's FIFO) goes on from the line
/// after the last it wrote before the checkpoint; the kernel shows `before` (container
/// IDs shown as "ID"); `ctr task exec` works in it; the restore
/// was ckpt's. Its init's PID.
/// `by_ctr`: what `ctr containers restore` printed (the task's first lines it copied
/// from the FIFO before it exited).
fn assert_restored(c: &Containerd, id: &str, by_ctr: &str, at_dump: u64, before: &[String]) -> i32 {
    let rp = c.pid(id);
    let first = runcsrv_count(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump}"
    );
    let (n, _) = runcsrv_ask(rp);
    assert!(n >= first, "the answer's count {n} after {first}");
    runcsrv_wait_count(rp, first + 25);
    let out = format!("{by_ctr}{}", read_fifo(&c.stdout_fifo(id), 2));
    let (from, _) = ticks(&out, "the restored task's output");
    // (a count of a multiple of 10 written just before the checkpoint may have had its
    // line written after it)
    let next = at_dump / 10 * 10 + 10;
    assert!(
        from == next || (at_dump % 10 == 0 && from == at_dump),
        "the restored output goes on from the checkpoint's count {at_dump}: {out:?}"
    );
    // (the cgroups are those of the restored spec, the original's: under a new name too)
    let info: serde_json::Value =
        serde_json::from_str(&c.ok(&["containers", "info", id])).expect("ctr containers info");
    let cgroup = info["Spec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let was = cgroup.rsplit('/').next().unwrap_or_default();
    assert!(!was.is_empty(), "the restored spec's cgroupsPath: {info}");
    let after = kernel_view(rp, was, "the restored task");
    assert_eq!(after, before, "what the kernel shows of the restored task");
    let exec_id = c.id("exec");
    let exec = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        &exec_id,
        id,
        "/bin/sh",
        "-c",
        "cat /tmp/count",
    ]);
    assert!(
        exec.trim().parse::<u64>().is_ok_and(|e| e >= first),
        "ctr task exec in the restored task: {exec:?}"
    );
    let log = c.work_log(id, "restore.log");
    assert!(
        log.contains("restored: process"),
        "ckpt's restore.log in the task's work directory: {log}"
    );
    rp
}

/// `ctr containers checkpoint --task --rw` (the task runs on: same process, its output
/// goes on with no line missing or twice; the checkpoint in containerd's content store
/// holds ckpt's image, `inventory.img`, `stats-dump` and runc's `descriptors.json`),
/// the task killed and the container removed, and `ctr containers restore --live --rw`
/// under the same name: the program counts on from the value of the checkpoint, its
/// output goes on from the next line, the kernel shows what it showed of the original,
/// `ctr task exec` works.
#[test]
fn containerd_checkpoint_and_restore_through_ckpt_as_criu() {
    let ctx = Ctx::new("containerd_checkpoint_and_restore_through_ckpt_as_criu");
    let c = Containerd::new(&ctx, "c1");
    let id = c.id("c1");
    let log = ctx.path("c1.log");
    let pid = c.start(&id, &log);
    runcsrv_wait_count(pid, 30);
    let before = kernel_view(pid, &id, "the original task");

    let t0 = Instant::now();
    c.ok(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        &id,
        "ckpt/c1:1",
    ]);
    let took = t0.elapsed();
    assert_eq!(c.state(&id), ("RUNNING".to_string(), pid), "ctr task ls");
    let (index, files) = c.checkpoint_image("ckpt/c1:1");
    for f in [
        "ckpt.img",
        "inventory.img",
        "stats-dump",
        "descriptors.json",
    ] {
        assert!(
            files.iter().any(|x| x == f),
            "no {f} in the checkpoint: {files:?}"
        );
    }
    let types: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["mediaType"].as_str())
        .collect();
    for t in [
        "application/vnd.containerd.container.checkpoint.config.v1+proto",
        "application/vnd.containerd.container.checkpoint.options.v1+proto",
        "application/vnd.containerd.container.checkpoint.runtime.options+proto",
    ] {
        assert!(
            types.contains(&t),
            "the checkpoint's media types: {types:?}"
        );
    }
    let at_dump = c.count_in_checkpoint(&index);
    let (n, _) = runcsrv_ask(pid);
    runcsrv_wait_count(pid, n.max(at_dump) + 20);
    assert_eq!(kernel_view(pid, &id, "the task left running"), before);
    c.remove(&id, pid);
    let original = std::fs::read_to_string(&log).expect("read the task's log");
    assert!(original.starts_with("start\n"), "the log: {original}");
    let (first, last) = ticks(&original, "the original task's log");
    assert!(
        first == 10 && last > at_dump,
        "the original's output: {original}"
    );

    let t1 = Instant::now();
    let by_ctr = c.ok(&["containers", "restore", "--live", "--rw", &id, "ckpt/c1:1"]);
    eprintln!(
        "ctr containers checkpoint {} ms, ctr containers restore {} ms",
        took.as_millis(),
        t1.elapsed().as_millis()
    );
    let rp = assert_restored(&c, &id, &by_ctr, at_dump, &before);
    assert!(
        c.bundle(&id).join("work/stats-restore").is_file(),
        "no stats-restore in the task's work directory"
    );
    c.remove(&id, rp);
}

/// `ctr task checkpoint --exit`: the task stops (its processes gone, `ctr task ls`
/// shows it stopped) and the checkpoint, an image labelled as one, holds ckpt's image;
/// a checkpoint of another task (`--task --rw`) restores without its writable layer
/// (`--live` alone) under a new name, on a fresh copy of the image's file system.
#[test]
fn containerd_checkpoint_exit_and_restore_under_a_new_name() {
    let ctx = Ctx::new("containerd_checkpoint_exit_and_restore_under_a_new_name");
    let c = Containerd::new(&ctx, "c2");
    let ex = c.id("c2x");
    let pid = c.start(&ex, &ctx.path("c2x.log"));
    runcsrv_wait_count(pid, 10);
    let name = c.ok(&["task", "checkpoint", "--exit", &ex]);
    let name = name.trim();
    assert!(
        name.starts_with(&format!("containerd.io/checkpoint/{ex}:")),
        "ctr task checkpoint printed {name:?}"
    );
    wait_pids_gone(&[pid], "the task after ctr task checkpoint --exit");
    assert_eq!(c.state(&ex).0, "STOPPED", "ctr task ls after --exit");
    let (_, files) = c.checkpoint_image(name);
    for f in [
        "ckpt.img",
        "inventory.img",
        "stats-dump",
        "descriptors.json",
    ] {
        assert!(
            files.iter().any(|x| x == f),
            "no {f} in the checkpoint: {files:?}"
        );
    }
    c.ok(&["task", "rm", &ex]);

    let id = c.id("c2");
    let pid = c.start(&id, &ctx.path("c2.log"));
    runcsrv_wait_count(pid, 20);
    let before = kernel_view(pid, &id, "the original task");
    c.ok(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        &id,
        "ckpt/c2:1",
    ]);
    let (index, _) = c.checkpoint_image("ckpt/c2:1");
    let at_dump = c.count_in_checkpoint(&index);
    c.remove(&id, pid);
    let new = c.id("c2-new");
    let by_ctr = c.ok(&["containers", "restore", "--live", &new, "ckpt/c2:1"]);
    let rp = assert_restored(&c, &new, &by_ctr, at_dump, &before);
    c.remove(&new, rp);
}

/// A checkpoint ckpt refuses (a process that is not the container's in its cgroup: its
/// freezer would stop it too) fails naming it, and the task runs on as it was; a
/// restore refused because the container's program file changed (its modification
/// time, in the image's snapshot) leaves no process and no cgroup, and once the file
/// is back, the same checkpoint restores.
#[test]
fn failed_containerd_checkpoint_and_restore_leave_things_as_they_were() {
    let ctx = Ctx::new("failed_containerd_checkpoint_and_restore_leave_things_as_they_were");
    let c = Containerd::new(&ctx, "c3");
    let id = c.id("c3");
    let pid = c.start(&id, &ctx.path("c3.log"));
    runcsrv_wait_count(pid, 10);
    let before = kernel_view(pid, &id, "the original task");
    // A stranger in the container's cgroups.
    let mut stranger = Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("run sleep");
    let sp = stranger.id() as i32;
    ctx.track(sp);
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .map(|p| p.join(c.cgroup.trim_start_matches('/')).join(&id))
        .filter(|p| p.join("cgroup.procs").is_file())
        .collect();
    assert!(!cgroups.is_empty(), "no cgroup {}/{id}", c.cgroup);
    for d in &cgroups {
        std::fs::write(d.join("cgroup.procs"), sp.to_string()).expect("move the stranger");
    }
    let out = c.run(&["task", "checkpoint", &id]);
    let log = std::fs::read_to_string(c.bundle(&id).join("criu-dump.log")).unwrap_or_default();
    assert!(
        !out.status.success(),
        "ctr task checkpoint with a stranger in the cgroup succeeded"
    );
    assert!(
        log.contains("Error") && log.contains(&format!("{sp} (sleep)")),
        "the refusal names the stranger: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(c.state(&id), ("RUNNING".to_string(), pid), "ctr task ls");
    let images = c.ok(&["images", "ls", "-q"]);
    assert!(
        !images.contains("checkpoint"),
        "a checkpoint image after the refusal: {images}"
    );
    let (n, _) = runcsrv_ask(pid);
    runcsrv_wait_count(pid, n + 10);
    assert_eq!(kernel_view(pid, &id, "the task after the refusal"), before);
    send_signal(sp, libc::SIGKILL);
    let _ = stranger.wait();

    c.ok(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        &id,
        "ckpt/c3:1",
    ]);
    let (index, _) = c.checkpoint_image("ckpt/c3:1");
    let at_dump = c.count_in_checkpoint(&index);
    c.remove(&id, pid);
    // The program's file in the image's snapshot (each new container's file system is
    // a copy of it), its times kept on a reference to put them back.
    let snapshots = c
        .dir
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let progs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .expect("the native snapshots")
        .flatten()
        .map(|e| e.path().join("bin/runcsrv"))
        .filter(|p| p.is_file())
        .collect();
    assert!(!progs.is_empty(), "no runcsrv in {}", snapshots.display());
    let reference = ctx.path("runcsrv-times");
    let touch = |args: &[&std::ffi::OsStr]| {
        let st = Command::new("touch").args(args).status().expect("touch");
        assert!(st.success(), "touch {args:?}");
    };
    let kept = progs.iter().any(|p| {
        Command::new("touch")
            .arg("-r")
            .arg(p)
            .arg(&reference)
            .status()
            .is_ok_and(|st| st.success())
    });
    assert!(kept, "no runcsrv left in {}", snapshots.display());
    // (containerd removes the removed containers' snapshots meanwhile: those may go)
    for p in &progs {
        let st = Command::new("touch")
            .args(["-m", "-d", "2001-01-01"])
            .arg(p)
            .status()
            .expect("touch");
        assert!(st.success() || !p.exists(), "touch {}", p.display());
    }
    let out = c.run(&["containers", "restore", "--live", "--rw", &id, "ckpt/c3:1"]);
    let log = c.work_log(&id, "restore.log");
    assert!(
        !out.status.success(),
        "ctr containers restore with a changed program succeeded"
    );
    assert!(
        log.contains("Error") && log.contains("/bin/runcsrv has changed"),
        "the refusal names the file: {}\n{log}",
        text(&out.stderr)
    );
    // containerd keeps the task it created for the restore (never started: no PID);
    // nothing runs in the container's cgroups and none is left.
    assert_eq!(c.state(&id), ("CREATED".to_string(), 0), "ctr task ls");
    for d in &cgroups {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        assert!(procs.trim().is_empty(), "{} holds {procs}", d.display());
    }
    assert!(
        std::os::unix::net::UnixStream::connect(c.bundle(&id).join("rootfs/srv.sock")).is_err(),
        "something answers after the failed restore"
    );
    c.ok(&["task", "rm", &id]);
    c.ok(&["containers", "rm", &id]);
    // (those of containers' snapshots containerd removed meanwhile are gone)
    for p in progs.iter().filter(|p| p.exists()) {
        touch(&[
            "-m".as_ref(),
            "-r".as_ref(),
            reference.as_os_str(),
            p.as_os_str(),
        ]);
    }
    let by_ctr = c.ok(&["containers", "restore", "--live", "--rw", &id, "ckpt/c3:1"]);
    let rp = assert_restored(&c, &id, &by_ctr, at_dump, &before);
    c.remove(&id, rp);
}
