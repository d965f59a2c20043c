//! Podman checkpoints through ckpt as its `criu` (issue 16): `podman container
//! checkpoint` / `podman container restore` of a container run with the runc runtime
//! (`--runtime runc`: Debian's crun has no checkpointing). Podman checks `criu` from
//! PATH and runc runs `criu swrk` from PATH: the test puts a directory whose `criu` is
//! ckpt first in PATH (the host may have the real CRIU in /usr/sbin; the images hold
//! `ckpt.img`, which only ckpt writes). The image is imported from a local tarball of a
//! busybox rootfs with `tests/targets/runcsrv.c` (no registry); Podman's storage is in
//! the test's directory (vfs driver, cgroupfs manager, file events, no network; the
//! tests at the end run containers on Podman's bridge network, podman inside a
//! network namespace of the test's: see "containers on Podman's bridge network").
//!
//! Each test checks what the restored program does (it counts on from the value it had
//! at the checkpoint, its output goes on in `podman logs`, it answers on its socket),
//! what the kernel shows of it (namespaces, cgroups, credentials, mount points: the
//! original's) and what Podman knows (`podman ps` running; `podman exec` works); a
//! refused checkpoint leaves the container running, a failed restore leaves it
//! checkpointed, restorable.
//!
//! Needs root, podman, runc and busybox (`apt-get install podman runc busybox-static`;
//! for the network, containernetworking-plugins, iptables and iproute2): fails, naming
//! them, when one is missing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The seccomp filter a container runs under.
enum Seccomp<'a> {
    /// None (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// Podman's default profile (installed by runc before it drops capabilities,
    /// without no_new_privs).
    Default,
    /// The profile in this file.
    Profile(&'a std::path::Path),
}

/// Podman with its storage in a directory of its own (short: conmon's sockets are in
/// it), ckpt as `criu` first in PATH; the containers and the directory go when dropped.
struct Podman {
    dir: PathBuf,
    podman: PathBuf,
    runc: PathBuf,
    path: std::ffi::OsString,
    /// A process in a private mount namespace of the test's, where every podman
    /// command runs (`nsenter`): the mounts podman makes (its containers' /dev/shm)
    /// stay there, out of the host's mount table, which the tests running beside this
    /// one compare before and after their restores.
    mounts: PrivateMounts,
    /// The containers run on Podman's default bridge network (set up by this network
    /// backend, configured in the test's directory) instead of `--network none`;
    /// podman runs in a network namespace of the test's
    /// (`PrivateMounts::with_network`).
    net: Option<Backend>,
}

/// Podman's network backend, always named (`--network-backend`): left to itself,
/// Podman 4.3 picks netavark for a new storage whenever it is installed, and keeps the
/// choice in the storage (`defaultNetworkBackend`), ignoring CNI's configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// CNI's plugins (containernetworking-plugins): bridge `cni-podman0`, the
    /// configuration a `.conflist` in the test's directory.
    Cni,
    /// netavark (with aardvark-dns, not used: the default network has no DNS): bridge
    /// `podman0`, Podman's built-in default network; its network files in the test's
    /// directory, its address leases (`/run/containers/networks`) on a tmpfs of the
    /// test's mount namespace.
    Netavark,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Cni => "cni",
            Backend::Netavark => "netavark",
        }
    }

    /// The bridge the backend makes for Podman's default network.
    fn bridge(self) -> &'static str {
        match self {
            Backend::Cni => "cni-podman0",
            Backend::Netavark => "podman0",
        }
    }
}

impl Podman {
    fn new(ctx: &Ctx, name: &str) -> Podman {
        Podman::make(ctx, name, None)
    }

    /// [`Podman::new`] whose containers are on Podman's default bridge network made by
    /// `backend`, podman (and what it runs: conmon, runc, the backend, ckpt) in a
    /// network namespace of the test's and a private mount namespace.
    fn with_network(ctx: &Ctx, name: &str, backend: Backend) -> Podman {
        Podman::make(ctx, name, Some(backend))
    }

    fn make(ctx: &Ctx, name: &str, net: Option<Backend>) -> Podman {
        let podman = find("podman", &["/usr/bin/podman"], "podman");
        let runc = find("runc", &["/usr/sbin/runc", "/usr/bin/runc"], "runc");
        let busybox = find(
            "busybox",
            &["/bin/busybox", "/usr/bin/busybox"],
            "busybox-static",
        );
        let dir = PathBuf::from(format!("/tmp/ckpt-pm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::os::unix::fs::symlink(ckpt_bin(), bin.join("criu")).expect("link ckpt as criu");
        let mut path = bin.clone().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        // The image: a tarball of a busybox rootfs with runcsrv.
        let rootfs = ctx.dir.join(format!("{name}-rootfs"));
        for d in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink sh");
        std::fs::copy(target("runcsrv-static"), rootfs.join("bin/runcsrv")).expect("copy runcsrv");
        if net.is_some() {
            std::fs::copy(target("podnet-static"), rootfs.join("bin/podnet")).expect("copy podnet");
            // (a pod's infra container's command)
            std::fs::write(
                rootfs.join("bin/pause"),
                "#!/bin/sh\nexec /bin/busybox sleep 1000000\n",
            )
            .expect("write pause");
            std::fs::set_permissions(
                rootfs.join("bin/pause"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod pause");
        }
        let tar = ctx.dir.join(format!("{name}-rootfs.tar"));
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(st.success(), "tar the rootfs: {st}");
        // Podman's default limits for the containers it makes itself (a pod's infra
        // container), below the test's hard ones, as `run_container` gives its own.
        std::fs::create_dir_all(&dir).expect("mkdir the podman directory");
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={p}:{p}\"]\n",
                n = hard_limit("Max open files").min(1024),
                p = hard_limit("Max processes").min(8192)
            ),
        )
        .expect("write containers.conf");
        if net == Some(Backend::Netavark) {
            find(
                "netavark",
                &["/usr/lib/podman/netavark", "/usr/libexec/podman/netavark"],
                "netavark",
            );
            find("iptables", &["/usr/sbin/iptables"], "iptables");
            std::fs::create_dir_all(dir.join("netavark")).expect("mkdir netavark");
        }
        if net == Some(Backend::Cni) {
            find(
                "bridge",
                &["/usr/lib/cni/bridge"],
                "containernetworking-plugins",
            );
            find("iptables", &["/usr/sbin/iptables"], "iptables");
            // Podman's default network ("podman": bridge cni-podman0, 10.88.0.0/16, as
            // Debian's /etc/cni/net.d has it), its address leases in the test's
            // directory.
            let cni = dir.join("cni");
            std::fs::create_dir_all(&cni).expect("mkdir cni");
            let conf = format!(
                r#"{{"cniVersion": "0.4.0", "name": "podman", "plugins": [
                  {{"type": "bridge", "bridge": "cni-podman0", "isGateway": true,
                    "ipMasq": true, "hairpinMode": true,
                    "ipam": {{"type": "host-local", "dataDir": "{}",
                      "routes": [{{"dst": "0.0.0.0/0"}}],
                      "ranges": [[{{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}}]]}}}},
                  {{"type": "portmap", "capabilities": {{"portMappings": true}}}},
                  {{"type": "firewall"}}, {{"type": "tuning"}}]}}"#,
                dir.join("cni-data").display()
            );
            std::fs::write(cni.join("87-podman-bridge.conflist"), conf).expect("write conflist");
        }
        let p = Podman {
            dir,
            podman,
            runc,
            path,
            mounts: if net.is_some() {
                PrivateMounts::with_network()
            } else {
                PrivateMounts::new()
            },
            net,
        };
        let out = p.run(&["import", &tar.to_string_lossy(), "localhost/ckpt-e2e:1"]);
        assert!(out.status.success(), "podman import: {}", text(&out.stderr));
        p
    }

    /// podman ARGS with this storage, the runc runtime and ckpt as criu.
    fn cmd(&self, args: &[&str]) -> Command {
        let d = |x: &str| self.dir.join(x).to_string_lossy().into_owned();
        let mut c = self.mounts.command(&self.dir, &self.podman);
        c.args([
            "--root",
            &d("root"),
            "--runroot",
            &d("run"),
            "--tmpdir",
            &d("tmp"),
        ])
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file"]);
        match self.net {
            Some(Backend::Cni) => {
                c.args(["--network-backend", "cni", "--network-config-dir"])
                    .arg(self.dir.join("cni"));
            }
            Some(Backend::Netavark) => {
                c.args(["--network-backend", "netavark", "--network-config-dir"])
                    .arg(self.dir.join("netavark"));
            }
            None => {}
        }
        c.arg("--runtime")
            .arg(&self.runc)
            .args(args)
            .env("PATH", &self.path)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    /// podman ARGS, which must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}\n{}",
            args.join(" "),
            text(&out.stderr),
            self.logs_of_ckpt()
        );
        text(&out.stdout)
    }

    /// ckpt's logs (dump.log, restore.log) left in the containers' directories.
    fn logs_of_ckpt(&self) -> String {
        let mut out = String::new();
        let Ok(rd) = std::fs::read_dir(self.dir.join("root/vfs-containers")) else {
            return out;
        };
        for e in rd.flatten() {
            for f in ["dump.log", "restore.log"] {
                if let Ok(s) = std::fs::read_to_string(e.path().join("userdata").join(f)) {
                    out.push_str(&format!("--- {f}:\n{s}\n"));
                }
            }
        }
        out
    }

    /// `podman run -d` of runcsrv (no network; limits below the test's hard ones, which
    /// a test without CAP_SYS_RESOURCE cannot raise; under `seccomp`); its PID once it
    /// answers.
    fn start(&self, name: &str, seccomp: Seccomp) -> i32 {
        self.start_with(name, seccomp, &[], &["/bin/runcsrv"])
    }

    /// [`Podman::start`] with more options for `podman run` (`extra`) and another
    /// command line (`prog`).
    fn start_with(&self, name: &str, seccomp: Seccomp, extra: &[&str], prog: &[&str]) -> i32 {
        let pid = self.run_container(name, seccomp, extra, prog);
        runcsrv_ask(pid);
        pid
    }

    /// `podman run -d` of `prog` (see [`Podman::start_with`]; on the default network
    /// with [`Podman::with_network`]): its PID.
    fn run_container(&self, name: &str, seccomp: Seccomp, extra: &[&str], prog: &[&str]) -> i32 {
        let nofile = hard_limit("Max open files").min(1024);
        let nproc = hard_limit("Max processes").min(8192);
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            name.into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--ulimit".into(),
            format!("nofile={nofile}:{nofile}"),
            "--ulimit".into(),
            format!("nproc={nproc}:{nproc}"),
        ];
        // (a pod's member has the pod's UTS namespace, whose name the pod sets)
        if !extra.contains(&"--pod") {
            args.extend(["--hostname".into(), "ckpt-podman".into()]);
        }
        if self.net.is_none() {
            args.extend(["--network".into(), "none".into()]);
        }
        match seccomp {
            Seccomp::Unconfined => {
                args.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
            }
            Seccomp::Default => {}
            Seccomp::Profile(p) => {
                args.extend(["--security-opt".into(), format!("seccomp={}", p.display())]);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push("localhost/ckpt-e2e:1".into());
        args.extend(prog.iter().map(|a| a.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&a);
        self.pid(name)
    }

    /// Type `line` on the terminal of container `name` (`podman attach`, through
    /// conmon, which holds the terminal's master), until runcsrv answers "got LINE" in
    /// `podman logs`.
    fn type_line(&self, name: &str, line: &str) {
        use std::io::Write;
        let mut c = self.cmd(&["attach", "--sig-proxy=false", name]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut attach = c.spawn().expect("run podman attach");
        attach
            .stdin
            .as_mut()
            .expect("podman attach's stdin")
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to podman attach");
        self.wait_logs(name, &format!("got {line}"));
        let _ = attach.kill();
        let _ = attach.wait();
    }

    /// Wait until `podman logs name` contains `what`.
    fn wait_logs(&self, name: &str, what: &str) {
        let deadline = Instant::now() + timeout();
        loop {
            let logs = self.ok(&["logs", name]);
            if logs.contains(what) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} in podman logs: {logs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (status, PID) as `podman inspect` shows them.
    fn state(&self, name: &str) -> (String, i32) {
        let out = self.run(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Pid}}",
            name,
        ]);
        let s = text(&out.stdout);
        let mut w = s.split_whitespace();
        (
            w.next().unwrap_or_default().to_string(),
            w.next().and_then(|p| p.parse().ok()).unwrap_or(0),
        )
    }

    fn pid(&self, name: &str) -> i32 {
        let (status, pid) = self.state(name);
        assert_eq!(status, "running", "podman inspect {name}");
        pid
    }

    /// `podman ps` lists `name` running ("Up").
    fn assert_listed_running(&self, name: &str) {
        let ps = self.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
        assert!(
            ps.lines().any(|l| l.starts_with(&format!("{name} Up"))),
            "podman ps: {ps}"
        );
    }

    /// The container's image directory (where `criu` wrote).
    fn checkpoint_dir(&self, name: &str) -> PathBuf {
        let id = self.ok(&["inspect", "--format", "{{.Id}}", name]);
        self.dir
            .join("root/vfs-containers")
            .join(id.trim())
            .join("userdata/checkpoint")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Pods (with the cgroupfs manager `pod rm` leaves each pod's directory below
        // libpod_parent in some hierarchies, name=systemd and a v1 host's unified one:
        // removed here, empty, by the pods' IDs).
        let pods = self
            .cmd(&["pod", "ps", "-q", "--no-trunc"])
            .stderr(Stdio::null())
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default();
        let _ = self
            .cmd(&["pod", "rm", "-af", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for id in pods.split_whitespace() {
            let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
                .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            for h in hierarchies.iter().chain([&PathBuf::from("/sys/fs/cgroup")]) {
                let d = h.join("libpod_parent").join(id);
                if d.is_dir() {
                    let _ = Command::new("find")
                        .arg(&d)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = self
            .cmd(&["rm", "-af", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self
            .cmd(&["rmi", "-af"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.mounts.end();
        // (mounts podman may have left in its directory)
        let prefix = self.dir.to_string_lossy().into_owned();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_unstable_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test's hard limit named `name` in /proc/self/limits (at most 2^20).
fn hard_limit(name: &str) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/limits"));
    let hard = line[name.len()..].split_whitespace().nth(1).unwrap_or("");
    hard.parse::<u64>().map_or(1 << 20, |h| h.min(1 << 20))
}

/// `podman logs`: "start", then "tick 10", "tick 20"... with none missing or twice, up
/// to at least `at_least`.
fn assert_ticks(pm: &Podman, name: &str, at_least: u64) {
    let deadline = Instant::now() + timeout();
    loop {
        let out = pm.ok(&["logs", name]);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("start"), "podman logs: {out}");
        let mut n = 0;
        for l in lines {
            n += 10;
            assert_eq!(l, format!("tick {n}"), "the output goes on: {out}");
        }
        if n >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} counts in: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The restored container `name` runs as the original did: Podman lists it running;
/// its count goes on from `at_dump`; the kernel shows `before` (container IDs shown as
/// "ID"); `podman exec` works in it. Its init's PID.
fn assert_restored(pm: &Podman, name: &str, at_dump: u64, before: &[String]) -> i32 {
    pm.assert_listed_running(name);
    let rp = pm.pid(name);
    let first = runcsrv_count(rp);
    assert!(
        first >= at_dump && first < at_dump + 100,
        "the restored program counts from where it was: {first} after {at_dump}"
    );
    let (n, host) = runcsrv_ask(rp);
    assert!(n >= first, "the answer's count {n} after {first}");
    assert_eq!(host, "ckpt-podman", "the restored container's host name");
    runcsrv_wait_count(rp, first + 25);
    let id = pm.ok(&["inspect", "--format", "{{.Id}}", name]);
    let after = kernel_view(rp, id.trim(), "the restored container");
    assert_eq!(
        after, before,
        "what the kernel shows of the restored container"
    );
    let exec = pm.ok(&["exec", name, "/bin/sh", "-c", "cat /tmp/count; hostname"]);
    let w: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        w.len() == 2 && w[0].parse::<u64>().is_ok_and(|c| c >= first) && w[1] == "ckpt-podman",
        "podman exec in the restored container: {exec:?}"
    );
    rp
}

fn id_of(pm: &Podman, name: &str) -> String {
    pm.ok(&["inspect", "--format", "{{.Id}}", name])
        .trim()
        .to_string()
}

/// `podman container checkpoint` (the container stops: Podman shows it exited and
/// checkpointed, ckpt's image in its directory) and `podman container restore`: the
/// program goes on counting from where it was, its output goes on in `podman logs`,
/// Podman lists it running, `podman exec` works; `--print-stats` shows ckpt's figures
/// (`stats-dump`, `stats-restore` in the work directory, where Podman reads them).
#[test]
fn podman_checkpoint_and_restore_through_ckpt_as_criu() {
    let ctx = Ctx::new("podman_checkpoint_and_restore_through_ckpt_as_criu");
    let pm = Podman::new(&ctx, "p1");
    let pid = pm.start("c1", Seccomp::Unconfined);
    runcsrv_wait_count(pid, 30);
    let id = id_of(&pm, "c1");
    let before = kernel_view(pid, &id, "the original container");
    let at_dump = runcsrv_count(pid);
    let t0 = Instant::now();
    let stats = pm.ok(&["container", "checkpoint", "--print-stats", "c1"]);
    let took = t0.elapsed();
    wait_pids_gone(&[pid], "the container after the checkpoint");
    assert!(
        stats.contains("\"criu_statistics\"") && stats.contains("\"frozen_time\""),
        "podman --print-stats: {stats}"
    );
    assert_eq!(
        pm.state("c1").0,
        "exited",
        "podman inspect after the checkpoint"
    );
    let checkpointed = pm.ok(&["inspect", "--format", "{{.State.Checkpointed}}", "c1"]);
    assert_eq!(checkpointed.trim(), "true");
    // ckpt wrote the image (the real CRIU, if the host has one, writes no ckpt.img).
    let img = pm.checkpoint_dir("c1");
    for f in ["ckpt.img", "inventory.img", "stats-dump"] {
        assert!(img.join(f).is_file(), "no {f} in {}", img.display());
    }
    let t1 = Instant::now();
    let stats = pm.ok(&["container", "restore", "--print-stats", "c1"]);
    assert!(
        stats.contains("\"criu_statistics\"") && stats.contains("\"restore_time\""),
        "podman restore --print-stats: {stats}"
    );
    eprintln!(
        "podman checkpoint {} ms, podman restore {} ms",
        took.as_millis(),
        t1.elapsed().as_millis()
    );
    let rp = assert_restored(&pm, "c1", at_dump, &before);
    let reached = runcsrv_wait_count(rp, at_dump + 40);
    assert_ticks(&pm, "c1", reached / 10 * 10);
    pm.ok(&["stop", "-t", "0", "c1"]);
    wait_pids_gone(&[rp], "the restored container after podman stop");
}

/// `podman container checkpoint --leave-running --export`: the container runs on as it
/// was; then it is removed and the archive restored with `--import` under a new name
/// (a new container, its root file system a new copy of the image's): it counts on
/// from the value of the checkpoint.
#[test]
fn podman_leave_running_export_then_import_under_a_new_name() {
    let ctx = Ctx::new("podman_leave_running_export_then_import_under_a_new_name");
    let pm = Podman::new(&ctx, "p2");
    let pid = pm.start("c2", Seccomp::Unconfined);
    runcsrv_wait_count(pid, 20);
    let id = id_of(&pm, "c2");
    let before = kernel_view(pid, &id, "the original container");
    let archive = ctx.path("c2.tar");
    let at_dump = runcsrv_count(pid);
    pm.ok(&[
        "container",
        "checkpoint",
        "--leave-running",
        "--export",
        &archive.to_string_lossy(),
        "c2",
    ]);
    assert_eq!(
        pm.state("c2"),
        ("running".to_string(), pid),
        "podman inspect"
    );
    pm.assert_listed_running("c2");
    let (n, _) = runcsrv_ask(pid);
    runcsrv_wait_count(pid, n + 10);
    assert_eq!(kernel_view(pid, &id, "the container left running"), before);
    let list = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .expect("tar -t");
    let names = text(&list.stdout);
    for f in [
        "checkpoint/ckpt.img",
        "checkpoint/inventory.img",
        "stats-dump",
    ] {
        assert!(
            names.lines().any(|l| l == f),
            "no {f} in the archive: {names}"
        );
    }
    pm.ok(&["rm", "-f", "-t", "0", "c2"]);
    wait_pids_gone(&[pid], "the original container");
    pm.ok(&[
        "container",
        "restore",
        "--import",
        &archive.to_string_lossy(),
        "--name",
        "c2-new",
    ]);
    let rp = assert_restored(&pm, "c2-new", at_dump, &before);
    pm.ok(&["rm", "-f", "-t", "0", "c2-new"]);
    wait_pids_gone(&[rp], "the imported container after podman rm");
}

/// A container under Podman's default seccomp profile (which runc installs while it
/// still has CAP_SYS_ADMIN, then drops it, without no_new_privs): `podman container
/// checkpoint` and `restore` bring it back under the same filter, with the same
/// capabilities and no no_new_privs (/proc/PID/status: Seccomp, Seccomp_filters,
/// NoNewPrivs, Cap* in `kernel_view`); it counts on, `podman exec` works in it (and
/// runs under the filter too).
#[test]
fn podman_container_under_the_default_seccomp_profile_comes_back() {
    let ctx = Ctx::new("podman_container_under_the_default_seccomp_profile_comes_back");
    let pm = Podman::new(&ctx, "p4");
    let pid = pm.start("c4", Seccomp::Default);
    runcsrv_wait_count(pid, 20);
    let id = id_of(&pm, "c4");
    let before = kernel_view(pid, &id, "the original container");
    for l in ["Seccomp:\t2", "NoNewPrivs:\t0"] {
        assert!(
            before.iter().any(|b| b == l),
            "the container runs under Podman's default filter, without no_new_privs: \
             {before:?}"
        );
    }
    assert!(
        !before.iter().any(|b| b == "Seccomp_filters:\t0"),
        "{before:?}"
    );
    let at_dump = runcsrv_count(pid);
    pm.ok(&["container", "checkpoint", "c4"]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    pm.ok(&["container", "restore", "c4"]);
    let rp = assert_restored(&pm, "c4", at_dump, &before);
    let reached = runcsrv_wait_count(rp, at_dump + 40);
    assert_ticks(&pm, "c4", reached / 10 * 10);
    pm.ok(&["stop", "-t", "0", "c4"]);
    wait_pids_gone(&[rp], "the restored container after podman stop");
}

/// A checkpoint ckpt refuses (a seccomp profile that denies prctl(PR_SET_DUMPABLE),
/// which the restore needs under the filter: runc installs it before dropping
/// capabilities, so the restore gives the credentials, and the dumpable flag, under
/// it) fails naming why, and the container runs on; a restore refused because the
/// container's program file changed (its modification time) leaves the container
/// checkpointed as it was, and restores once the file is back.
#[test]
fn failed_podman_checkpoint_and_restore_leave_the_container_as_it_was() {
    let ctx = Ctx::new("failed_podman_checkpoint_and_restore_leave_the_container_as_it_was");
    let pm = Podman::new(&ctx, "p3");
    let profile = ctx.path("no-dumpable.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["prctl"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 4,
            "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .expect("write the seccomp profile");
    let pid = pm.start("c3s", Seccomp::Profile(&profile));
    let out = pm.run(&["container", "checkpoint", "--keep", "c3s"]);
    let log = pm.logs_of_ckpt();
    assert!(
        !out.status.success(),
        "podman checkpoint of a container whose filter denies the restore succeeded"
    );
    assert!(
        log.contains("Error") && log.contains("filters deny the prctl(PR_SET_DUMPABLE)"),
        "the refusal names the call the filter denies: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(
        pm.state("c3s"),
        ("running".to_string(), pid),
        "podman inspect"
    );
    let (n, _) = runcsrv_ask(pid);
    runcsrv_wait_count(pid, n + 5);
    pm.ok(&["rm", "-f", "-t", "0", "c3s"]);
    wait_pids_gone(&[pid], "the seccomp container");

    let pid = pm.start("c3", Seccomp::Unconfined);
    runcsrv_wait_count(pid, 10);
    let id = id_of(&pm, "c3");
    let before = kernel_view(pid, &id, "the original container");
    let at_dump = runcsrv_count(pid);
    pm.ok(&["container", "checkpoint", "c3"]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    let mnt = PathBuf::from(pm.ok(&["mount", "c3"]).trim());
    let prog = mnt.join("bin/runcsrv");
    // (the file's times kept on a reference, to put them back)
    let reference = ctx.path("runcsrv-times");
    let touch = |args: &[&std::ffi::OsStr]| {
        let st = Command::new("touch").args(args).status().expect("touch");
        assert!(st.success(), "touch {args:?}");
    };
    touch(&["-r".as_ref(), prog.as_os_str(), reference.as_os_str()]);
    touch(&[
        "-m".as_ref(),
        "-d".as_ref(),
        "2001-01-01".as_ref(),
        prog.as_os_str(),
    ]);
    let out = pm.run(&["container", "restore", "c3"]);
    let log = pm.logs_of_ckpt();
    assert!(
        !out.status.success(),
        "podman restore with a changed program succeeded"
    );
    assert!(
        log.contains("Error") && log.contains("/bin/runcsrv has changed"),
        "the refusal names the file: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(
        pm.state("c3").0,
        "exited",
        "podman inspect after the failed restore"
    );
    let ps = pm.ok(&["ps", "-q"]);
    assert!(
        ps.trim().is_empty(),
        "podman ps after the failed restore: {ps}"
    );
    assert_eq!(
        pm.ok(&["inspect", "--format", "{{.State.Checkpointed}}", "c3"])
            .trim(),
        "true"
    );
    touch(&[
        "-m".as_ref(),
        "-r".as_ref(),
        reference.as_os_str(),
        prog.as_os_str(),
    ]);
    pm.ok(&["container", "restore", "c3"]);
    let rp = assert_restored(&pm, "c3", at_dump, &before);
    pm.ok(&["stop", "-t", "0", "c3"]);
    wait_pids_gone(&[rp], "the restored container after podman stop");
}

/// `podman run -dit` (a terminal: runc makes it in the container's devpts, conmon holds
/// its master, `podman attach` types on it, `podman logs` shows what it printed):
/// `podman container checkpoint` and `restore` bring it back on a new terminal whose
/// master conmon gets (runc's `--console-socket`, ckpt's orphan_pts_master); the
/// program goes on, a line typed through `podman attach` reaches it, and its terminal
/// (settings, window size, /dev/pts/N, session, controlling terminal and foreground
/// group as the container sees them) and what the kernel shows of it are the
/// original's.
#[test]
fn podman_container_with_a_terminal_comes_back_on_a_new_one() {
    let ctx = Ctx::new("podman_container_with_a_terminal_comes_back_on_a_new_one");
    let pm = Podman::new(&ctx, "p4");
    let pid = pm.start_with(
        "c4",
        Seccomp::Unconfined,
        &["-i", "-t"],
        &["/bin/runcsrv", "echo"],
    );
    pm.type_line("c4", "hello");
    runcsrv_wait_count(pid, 30);
    let id = id_of(&pm, "c4");
    let before = kernel_view(pid, &id, "the container with a terminal");
    let tty_before = terminal_view(pid);
    assert!(
        tty_before.2.iter().all(|l| l.contains(" -> /dev/pts/0 ")),
        "the container's terminal: {tty_before:?}"
    );
    let at_dump = runcsrv_count(pid);
    pm.ok(&["container", "checkpoint", "c4"]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    pm.ok(&["container", "restore", "c4"]);
    let rp = assert_restored(&pm, "c4", at_dump, &before);
    assert_eq!(
        terminal_view(rp),
        tty_before,
        "the restored container's terminal"
    );
    pm.type_line("c4", "again");
    let n = runcsrv_wait_count(rp, at_dump + 30);
    pm.wait_logs("c4", &format!("tick {}", n / 10 * 10));
    pm.ok(&["stop", "-t", "0", "c4"]);
    wait_pids_gone(&[rp], "the restored container after podman stop");
}

// ---- containers on Podman's bridge network ----
//
// Podman makes the container's network namespace itself (a file under /run/netns, set
// up by CNI: a veth on the bridge cni-podman0, 10.88.0.0/16); runc gives it to `criu`
// as external (`--external net[INO]:extRootNetNS`) at dump, and at restore the new
// one Podman made (with the same address) as `inherit_fd` under that key. Every podman
// command, and the test's own client, runs in a network namespace of the test's
// (`PrivateMounts::with_network`): the bridge, the veths and CNI's firewall rules are
// made there, never on the host. The server in the container is
// tests/targets/podnet.c (PORT 8080); the client is the test, in that namespace, on
// the bridge's side.

const PORT: u16 = 8080;

/// A connection of the test's to podnet: each line sent is answered "C N LINE".
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    /// Connect to `ip`:PORT from the network namespace `net` (a file: a thread joins
    /// it; the socket stays in it).
    fn connect(net: &str, ip: &str) -> Client {
        use std::os::fd::AsFd;
        let f = std::fs::File::open(net).unwrap_or_else(|e| panic!("open {net}: {e}"));
        let addr: std::net::SocketAddr = format!("{ip}:{PORT}").parse().expect("address");
        let s = std::thread::scope(|sc| {
            sc.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    f.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns into the test's network namespace");
                let deadline = Instant::now() + timeout();
                loop {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        Ok(s) => return s,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "connect to {addr}: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
            .join()
            .expect("the connecting thread")
        });
        s.set_read_timeout(Some(Duration::from_secs(40)))
            .expect("read timeout");
        Client {
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, line: &str) {
        self.r
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    /// The next answer (without its newline).
    fn answer(&mut self, what: &str) -> String {
        let mut a = String::new();
        let n = self
            .r
            .read_line(&mut a)
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert!(n > 0, "{what}: the server closed the connection");
        a.trim_end().to_string()
    }

    /// Send `line`, expect "C N line".
    fn ask(&mut self, line: &str, c: u32, n: u32) {
        self.send(line);
        assert_eq!(
            self.answer(line),
            format!("{c} {n} {line}"),
            "the answer to {line:?}"
        );
    }

    fn local_port(&self) -> u16 {
        self.r.get_ref().local_addr().expect("local address").port()
    }
}

fn ip_of(pm: &Podman, name: &str) -> String {
    let ip = pm.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        name,
    ]);
    let ip = ip.trim().to_string();
    assert!(ip.starts_with("10.88."), "the container's address: {ip:?}");
    ip
}

/// `prog` ARGS in the network namespace of process `pid` (nsenter): its output.
fn in_net_of(pid: i32, prog: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "--", prog])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("nsenter {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} in the network namespace of {pid}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// What the kernel shows of the container's network (in its namespace): its
/// interfaces' IPv4 addresses (`ip -4 -o addr`), the MAC and MTU of eth0, the TCP
/// listeners, and its established TCP connections as sock_diag shows them (`ss -tni`):
/// state, addresses and the options negotiated (timestamps, SACK, window scales, MSS),
/// which a restore must keep (sequence numbers, queues' sizes and timers aside).
fn net_view(pid: i32) -> Vec<String> {
    let mut out: Vec<String> = in_net_of(pid, "ip", &["-4", "-o", "addr", "show"])
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!(
                "addr {}",
                w.get(1..4).map(|x| x.join(" ")).unwrap_or_default()
            )
        })
        .collect();
    let link = in_net_of(pid, "ip", &["-o", "link", "show", "eth0"]);
    let w: Vec<&str> = link.split_whitespace().collect();
    let after = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .copied()
            .unwrap_or("?")
            .to_string()
    };
    out.push(format!(
        "eth0 mtu {} ether {}",
        after("mtu"),
        after("link/ether")
    ));
    for l in in_net_of(pid, "ss", &["-tlnH"]).lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        out.push(format!("listen {}", w.get(3).copied().unwrap_or("?")));
    }
    let ss = in_net_of(pid, "ss", &["-tniH", "state", "established"]);
    let mut lines = ss.lines().peekable();
    while let Some(l) = lines.next() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // (state established: Recv-Q Send-Q Local Peer; the details on the next line)
        let mut conn = format!(
            "established {} {}",
            w.get(2).copied().unwrap_or("?"),
            w.get(3).copied().unwrap_or("?")
        );
        if let Some(d) = lines.next_if(|n| n.starts_with(|c: char| c.is_whitespace())) {
            for t in d.split_whitespace() {
                if ["ts", "sack", "ecn"].contains(&t)
                    || t.starts_with("wscale:")
                    || t.starts_with("mss:")
                    || t.starts_with("advmss:")
                    || t.starts_with("pmtu:")
                {
                    conn.push(' ');
                    conn.push_str(t);
                }
            }
        }
        out.push(conn);
    }
    out
}

/// Wait until the container's namespace holds no TCP socket but its listener (the
/// test's connections closed on both sides).
fn wait_only_listener(pid: i32) {
    let deadline = Instant::now() + timeout();
    loop {
        let ss = in_net_of(pid, "ss", &["-tanH"]);
        if ss.lines().all(|l| l.starts_with("LISTEN")) {
            return;
        }
        assert!(Instant::now() < deadline, "connections left: {ss}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ckpt's tables in the container's namespace (none must be left).
fn assert_no_lock_left(pid: i32) {
    let tables = in_net_of(pid, "nft", &["list", "tables"]);
    assert!(
        !tables.contains("ckpt"),
        "ckpt's tables left in the container's namespace: {tables}"
    );
}

/// ckpt's tables on the bridge's side, in the test's network namespace where podman
/// (and so ckpt) runs: the lock a checkpoint leaves outside the container's namespace.
fn host_tables(pm: &Podman) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", pm.mounts.net_path()))
        .args(["--", "nft", "list", "tables"])
        .output()
        .expect("run nft (nftables)");
    assert!(
        out.status.success(),
        "nft list tables: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn assert_no_host_lock(pm: &Podman) {
    let tables = host_tables(pm);
    assert!(
        !tables.contains("ckpt"),
        "ckpt's tables left on the bridge's side: {tables}"
    );
}

/// The lasting lock a checkpoint left on the bridge's side: its tables, both families.
fn assert_host_lock(pm: &Podman, what: &str) {
    let tables = host_tables(pm);
    assert!(
        tables.contains("table inet ckpt_hold_") && tables.contains("table bridge ckpt_hold_"),
        "{what}: no lock of ckpt's on the bridge's side: {tables}"
    );
}

/// [`net_view`] without advmss. Legit difference: advmss (the segment size the host
/// advertised in the SYN; after it, only a bound of its receive window) is the
/// connection's segment size after a restore, which connects in repair mode with
/// TCP_MAXSEG at that size (`kinds::fd::tcp::connect_mss`): 1448 where the route gave
/// 1460.
fn no_advmss(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|l| {
            l.split(' ')
                .filter(|t| !t.starts_with("advmss:"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Podman runs with `backend` (`podman info`), whose bridge is up in the test's
/// network namespace.
fn assert_backend(pm: &Podman, backend: Backend) {
    let info = pm.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(info.trim(), backend.name(), "podman's network backend");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", pm.mounts.net_path()))
        .args(["--", "ip", "-o", "link", "show", backend.bridge()])
        .output()
        .expect("run ip");
    assert!(
        out.status.success() && text(&out.stdout).contains(backend.bridge()),
        "no bridge {} in the test's network namespace: {}",
        backend.bridge(),
        text(&out.stderr)
    );
}

/// A [`Client`] that talks all the time, from a thread: it sends "kI" (I = 1, 2...)
/// every 5 ms and reads each answer before the next, which must be "C N kI" (its
/// connection's number, and the line numbers going on from `first`): a connection reset,
/// a byte lost or twice, another connection, stop it with the reason.
struct Talker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Result<Client, String>>,
}

impl Talker {
    fn start(mut c: Client, conn: u32, first: u32) -> Talker {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let answered = std::sync::Arc::new(AtomicU64::new(0));
        // (the checkpoint, a gap, a failed restore and the restore, and the peer's
        // backed-off retransmission after them: long)
        c.r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("read timeout");
        let (st, an) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !st.load(Ordering::SeqCst) {
                i += 1;
                let line = format!("k{i}");
                c.r.get_mut()
                    .write_all(format!("{line}\n").as_bytes())
                    .map_err(|e| format!("send {line}: {e}"))?;
                let mut a = String::new();
                let n =
                    c.r.read_line(&mut a)
                        .map_err(|e| format!("answer to {line}: {e}"))?;
                if n == 0 {
                    return Err(format!("the server closed the connection at {line}"));
                }
                let want = format!("{conn} {} {line}", u64::from(first) + i - 1);
                if a.trim_end() != want {
                    return Err(format!("answer {:?} to {line}, not {want:?}", a.trim_end()));
                }
                an.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(c)
        });
        Talker {
            stop,
            answered,
            thread,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until `n` lines are answered (failing with the talker's own failure).
    fn wait_answered(&self, n: u64, what: &str) {
        let deadline = Instant::now() + timeout() * 4;
        while self.answered() < n {
            assert!(
                !self.thread.is_finished(),
                "{what}: the connection stopped talking after {} lines",
                self.answered()
            );
            assert!(
                Instant::now() < deadline,
                "{what}: only {} lines answered (waiting for {n})",
                self.answered()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop talking: the connection, as it is, and how many lines it answered.
    fn stop(self) -> (Client, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let n = self.answered();
        match self.thread.join().expect("the talking thread") {
            Ok(c) => (
                c,
                self.answered
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .max(n),
            ),
            Err(e) => panic!("the connection failed: {e}"),
        }
    }
}

/// A container on Podman's bridge network keeps an established TCP connection of a
/// client of the test's (on the bridge's side, talking every 5 ms, see [`Talker`])
/// through `podman container checkpoint --tcp-established` and `restore
/// --tcp-established`, 3 s apart, with a failed restore between them: the same
/// connection carries on, nothing lost, twice or reset; sock_diag in the restored
/// container shows it with the same addresses, ports and options; ckpt's lock outside
/// the container's namespace (its tables on the bridge's side) is there from the
/// checkpoint, stays after the failed restore and is gone after the restore (none in the
/// container's namespace either). Before: `--leave-running` lets the connection go on
/// and leaves no lock; a checkpoint without `--tcp-established` is refused naming the
/// connection, as CRIU does, and the container runs on. After: a new connection gets
/// the next number; another checkpoint leaves the lock, and `ckpt unlock IMAGE` removes
/// it.
#[test]
fn podman_container_on_the_bridge_network_keeps_its_tcp_connection() {
    let ctx = Ctx::new("podman_container_on_the_bridge_network_keeps_its_tcp_connection");
    keeps_its_tcp_connection(&ctx, Backend::Cni);
}

/// [`podman_container_on_the_bridge_network_keeps_its_tcp_connection`] with Podman's
/// netavark backend (its bridge `podman0`, its iptables chains `NETAVARK_*`, which
/// Podman removes at the checkpoint and makes again at the restore, ckpt's tables
/// beside them).
#[test]
fn netavark_container_keeps_its_tcp_connection() {
    let ctx = Ctx::new("netavark_container_keeps_its_tcp_connection");
    keeps_its_tcp_connection(&ctx, Backend::Netavark);
}

fn keeps_its_tcp_connection(ctx: &Ctx, backend: Backend) {
    let pm = Podman::with_network(ctx, "n1", backend);
    let pid = pm.run_container("w1", Seccomp::Unconfined, &[], &["/bin/podnet", "8080"]);
    assert_backend(&pm, backend);
    let ip = ip_of(&pm, "w1");
    let net = pm.mounts.net_path();
    let mut c = Client::connect(&net, &ip);
    c.ask("one", 1, 1);
    let port = c.local_port();
    let talk = Talker::start(c, 1, 2);
    talk.wait_answered(20, "before the checkpoints");
    let with_conn = net_view(pid);
    assert!(
        with_conn.iter().any(|l| {
            l.starts_with(&format!("established {ip}:{PORT} ")) && l.contains(&format!(":{port}"))
        }),
        "the connection in the container: {with_conn:?}"
    );
    pm.ok(&[
        "container",
        "checkpoint",
        "--leave-running",
        "--tcp-established",
        "w1",
    ]);
    assert_eq!(pm.state("w1"), ("running".to_string(), pid), "left running");
    talk.wait_answered(talk.answered() + 20, "after --leave-running");
    assert_no_lock_left(pid);
    assert_no_host_lock(&pm);
    let out = pm.run(&["container", "checkpoint", "w1"]);
    let log = pm.logs_of_ckpt();
    assert!(
        !out.status.success(),
        "the checkpoint of a connection without --tcp-established succeeded"
    );
    assert!(
        log.contains("established TCP connection")
            && log.contains(&format!("{ip}:{PORT}"))
            && log.contains("--tcp-established"),
        "the refusal names the connection: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(
        pm.state("w1"),
        ("running".to_string(), pid),
        "still running"
    );
    talk.wait_answered(talk.answered() + 20, "after the refusal");
    assert_no_lock_left(pid);
    assert_no_host_lock(&pm);
    let id = id_of(&pm, "w1");
    let before = kernel_view(pid, &id, "the original container");
    pm.ok(&["container", "checkpoint", "--tcp-established", "w1"]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    assert_eq!(pm.state("w1").0, "exited");
    let stalled = talk.answered();
    assert_host_lock(&pm, "after the checkpoint");
    std::thread::sleep(Duration::from_secs(3));
    // A restore that fails leaves it checkpointed, and the lock.
    let mnt = PathBuf::from(pm.ok(&["mount", "w1"]).trim());
    let prog = mnt.join("bin/podnet");
    let reference = ctx.path("podnet-times");
    let touch = |args: &[&std::ffi::OsStr]| {
        let st = Command::new("touch").args(args).status().expect("touch");
        assert!(st.success(), "touch {args:?}");
    };
    touch(&["-r".as_ref(), prog.as_os_str(), reference.as_os_str()]);
    touch(&[
        "-m".as_ref(),
        "-d".as_ref(),
        "2001-01-01".as_ref(),
        prog.as_os_str(),
    ]);
    let out = pm.run(&["container", "restore", "--tcp-established", "w1"]);
    let log = pm.logs_of_ckpt();
    assert!(
        !out.status.success(),
        "podman restore with a changed program succeeded"
    );
    assert!(
        log.contains("/bin/podnet has changed"),
        "the refusal names the file: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(pm.state("w1").0, "exited", "after the failed restore");
    assert_host_lock(&pm, "after the failed restore");
    touch(&[
        "-m".as_ref(),
        "-r".as_ref(),
        reference.as_os_str(),
        prog.as_os_str(),
    ]);
    let t0 = Instant::now();
    pm.ok(&["container", "restore", "--tcp-established", "w1"]);
    eprintln!("podman restore {} ms", t0.elapsed().as_millis());
    pm.assert_listed_running("w1");
    let rp = pm.pid("w1");
    assert_eq!(ip_of(&pm, "w1"), ip, "the restored container's address");
    talk.wait_answered(stalled + 50, "after the restore");
    eprintln!(
        "the connection answered again {} ms after podman restore began",
        t0.elapsed().as_millis()
    );
    assert_eq!(
        no_advmss(net_view(rp)),
        no_advmss(with_conn),
        "what the kernel shows of the restored container's network and connection"
    );
    assert_no_lock_left(rp);
    assert_no_host_lock(&pm);
    let id = id_of(&pm, "w1");
    assert_eq!(
        kernel_view(rp, &id, "the restored container"),
        before,
        "what the kernel shows of the restored container"
    );
    Client::connect(&net, &ip).ask("after", 2, 1);
    // Checkpointed again (the connection idle), then given up: `ckpt unlock`.
    let (c, _) = talk.stop();
    pm.ok(&["container", "checkpoint", "--tcp-established", "w1"]);
    wait_pids_gone(&[rp], "the container after the second checkpoint");
    assert_host_lock(&pm, "after the second checkpoint");
    let img = pm.checkpoint_dir("w1").join("ckpt.img");
    let out = Command::new("nsenter")
        .arg(format!("--net={net}"))
        .arg("--")
        .arg(ckpt_bin())
        .arg("unlock")
        .arg(&img)
        .output()
        .expect("run ckpt unlock");
    assert!(
        out.status.success(),
        "ckpt unlock {}: {}",
        img.display(),
        text(&out.stderr)
    );
    assert_no_host_lock(&pm);
    drop(c);
    pm.ok(&["rm", "-f", "-t", "0", "w1"]);
}

/// On the bridge network: `checkpoint --leave-running --export` of a container that
/// runs on (and answers); then `checkpoint --export` (it stops), `podman rm` and
/// `restore --import`: the container comes back under its name with its address
/// (Podman keeps it) and answers, its connections' count going on; the first archive
/// imported under a new name with `--ignore-static-ip` while it runs gets another
/// address, and answers there as the container did at that first checkpoint.
#[test]
fn podman_network_export_and_import_keep_the_address() {
    let ctx = Ctx::new("podman_network_export_and_import_keep_the_address");
    let pm = Podman::with_network(&ctx, "n2", Backend::Cni);
    let pid = pm.run_container("w2", Seccomp::Unconfined, &[], &["/bin/podnet", "8080"]);
    let ip = ip_of(&pm, "w2");
    let net = pm.mounts.net_path();
    let early = ctx.path("w2-early.tar");
    pm.ok(&[
        "container",
        "checkpoint",
        "--leave-running",
        "--export",
        &early.to_string_lossy(),
        "w2",
    ]);
    assert_eq!(pm.state("w2"), ("running".to_string(), pid), "left running");
    Client::connect(&net, &ip).ask("one", 1, 1);
    wait_only_listener(pid);
    let id = id_of(&pm, "w2");
    let before = kernel_view(pid, &id, "the original container");
    let net_before = net_view(pid);
    let archive = ctx.path("w2.tar");
    pm.ok(&[
        "container",
        "checkpoint",
        "--export",
        &archive.to_string_lossy(),
        "w2",
    ]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    pm.ok(&["rm", "w2"]);
    pm.ok(&[
        "container",
        "restore",
        "--import",
        &archive.to_string_lossy(),
    ]);
    pm.assert_listed_running("w2");
    let rp = pm.pid("w2");
    assert_eq!(ip_of(&pm, "w2"), ip, "the imported container's address");
    Client::connect(&net, &ip).ask("back", 2, 1);
    let id = id_of(&pm, "w2");
    assert_eq!(
        kernel_view(rp, &id, "the imported container"),
        before,
        "what the kernel shows of the imported container"
    );
    wait_only_listener(rp);
    assert_eq!(net_view(rp), net_before, "the imported container's network");
    // The first archive, under a new name and address beside it.
    pm.ok(&[
        "container",
        "restore",
        "--import",
        &early.to_string_lossy(),
        "--name",
        "w2-copy",
        "--ignore-static-ip",
    ]);
    let cp = pm.pid("w2-copy");
    let ip2 = ip_of(&pm, "w2-copy");
    assert_ne!(ip2, ip, "--ignore-static-ip gives another address");
    Client::connect(&net, &ip2).ask("copy", 1, 1);
    let copy_view = net_view(cp);
    assert!(
        copy_view
            .iter()
            .any(|l| l.starts_with("addr eth0 inet ") && l.contains(&format!("{ip2}/"))),
        "the copy's address as its namespace shows it: {copy_view:?}"
    );
    Client::connect(&net, &ip).ask("still", 3, 1);
    pm.ok(&["rm", "-f", "-t", "0", "w2-copy", "w2"]);
    wait_pids_gone(&[rp, cp], "the containers after podman rm");
}

/// On the bridge network, a checkpoint ckpt refuses (a seccomp profile denying the
/// prctl(PR_SET_DUMPABLE) the restore needs) while the test holds a connection to the
/// container: it fails naming why, the container runs on with its connection (the
/// locks the dump made from the freeze, inside the container's namespace and on the
/// bridge's side, went with it: no table of ckpt's is left in either, and the
/// connection answers at once).
#[test]
fn refused_podman_checkpoint_on_the_network_leaves_the_connection_running() {
    let ctx = Ctx::new("refused_podman_checkpoint_on_the_network_leaves_the_connection_running");
    let pm = Podman::with_network(&ctx, "n3", Backend::Netavark);
    let profile = ctx.path("no-dumpable.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["prctl"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 4,
            "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .expect("write the seccomp profile");
    let pid = pm.run_container(
        "w3",
        Seccomp::Profile(&profile),
        &[],
        &["/bin/podnet", "8080"],
    );
    let ip = ip_of(&pm, "w3");
    let net = pm.mounts.net_path();
    let mut c = Client::connect(&net, &ip);
    c.ask("one", 1, 1);
    let net_before = net_view(pid);
    let out = pm.run(&["container", "checkpoint", "--tcp-established", "w3"]);
    let log = pm.logs_of_ckpt();
    assert!(!out.status.success(), "the checkpoint succeeded");
    assert!(
        log.contains("filters deny the prctl(PR_SET_DUMPABLE)"),
        "the refusal names the call: {}\n{log}",
        text(&out.stderr)
    );
    assert_eq!(
        pm.state("w3"),
        ("running".to_string(), pid),
        "still running"
    );
    c.ask("two", 1, 2);
    assert_no_lock_left(pid);
    assert_no_host_lock(&pm);
    assert_eq!(net_view(pid), net_before, "the container's network");
    pm.ok(&["rm", "-f", "-t", "0", "w3"]);
    wait_pids_gone(&[pid], "the container after podman rm");
}

/// Two containers on one bridge with a TCP connection between them (podnet as a relay
/// in `w2`, tests/targets/podnet.c, passing the test's lines on over its one connection
/// to the server in `w1`, every 5 ms, see [`Talker`]): `podman container checkpoint
/// --tcp-established w1` and `restore --tcp-established w1`, 2 s apart. The peer
/// container's connection goes on, nothing lost, twice or reset (its segments to `w1`
/// are bridged, not routed: the `bridge` table of ckpt's lock drops them until the
/// restore); what sock_diag shows of the connection on both sides is the original's
/// (the same ports: the same connection), and no table of ckpt's is left in either
/// container or on the bridge's side.
#[test]
fn peer_container_on_the_cni_bridge_keeps_its_connection() {
    let ctx = Ctx::new("peer_container_on_the_cni_bridge_keeps_its_connection");
    peer_keeps_its_connection(&ctx, Backend::Cni);
}

/// [`peer_container_on_the_cni_bridge_keeps_its_connection`] on netavark's bridge.
#[test]
fn peer_container_on_the_netavark_bridge_keeps_its_connection() {
    let ctx = Ctx::new("peer_container_on_the_netavark_bridge_keeps_its_connection");
    peer_keeps_its_connection(&ctx, Backend::Netavark);
}

fn peer_keeps_its_connection(ctx: &Ctx, backend: Backend) {
    let pm = Podman::with_network(ctx, "b1", backend);
    let pid = pm.run_container("w1", Seccomp::Unconfined, &[], &["/bin/podnet", "8080"]);
    assert_backend(&pm, backend);
    let ip = ip_of(&pm, "w1");
    let port = PORT.to_string();
    let relay = pm.run_container(
        "w2",
        Seccomp::Unconfined,
        &[],
        &["/bin/podnet", "8080", &ip, &port],
    );
    let ip2 = ip_of(&pm, "w2");
    let net = pm.mounts.net_path();
    let mut c = Client::connect(&net, &ip2);
    // (the relay's connection is the server's first; the line numbers count its lines)
    c.ask("one", 1, 1);
    let talk = Talker::start(c, 1, 2);
    talk.wait_answered(20, "before the checkpoint");
    let server_before = net_view(pid);
    let relay_before = net_view(relay);
    assert!(
        server_before
            .iter()
            .any(|l| l.starts_with(&format!("established {ip}:{PORT} {ip2}:"))),
        "the connection between the containers in w1: {server_before:?}"
    );
    let id = id_of(&pm, "w1");
    let before = kernel_view(pid, &id, "the original container");
    pm.ok(&["container", "checkpoint", "--tcp-established", "w1"]);
    wait_pids_gone(&[pid], "the container after the checkpoint");
    assert_eq!(pm.state("w1").0, "exited");
    let stalled = talk.answered();
    assert_host_lock(&pm, "after the checkpoint");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pm.state("w2"),
        ("running".to_string(), relay),
        "the peer container"
    );
    pm.ok(&["container", "restore", "--tcp-established", "w1"]);
    pm.assert_listed_running("w1");
    let rp = pm.pid("w1");
    assert_eq!(ip_of(&pm, "w1"), ip, "the restored container's address");
    talk.wait_answered(stalled + 50, "after the restore");
    assert_eq!(
        no_advmss(net_view(rp)),
        no_advmss(server_before),
        "what the kernel shows of the restored container's network and connection"
    );
    assert_eq!(
        net_view(relay),
        relay_before,
        "the peer container's network and connection"
    );
    assert_no_lock_left(rp);
    assert_no_lock_left(relay);
    assert_no_host_lock(&pm);
    let id = id_of(&pm, "w1");
    assert_eq!(
        kernel_view(rp, &id, "the restored container"),
        before,
        "what the kernel shows of the restored container"
    );
    let (_c, n) = talk.stop();
    assert!(n >= stalled + 50, "{n} lines answered");
    pm.ok(&["rm", "-f", "-t", "0", "w2", "w1"]);
    wait_pids_gone(&[rp, relay], "the containers after podman rm");
}

/// A Podman pod (`podman pod create`: its infra container holds the pod's network, IPC
/// and UTS namespaces) on netavark's bridge; a member container serving a connection of
/// the test's, talking every 5 ms. `podman container checkpoint --tcp-established` of
/// the member (Podman 4.3 takes it as it takes any container; the pod's namespaces stay
/// with the infra container, runc passes the network one as external and the IPC and
/// UTS ones as `join_ns`): the dump's lock is in the pod's namespace, which outlives
/// it. `podman container restore --tcp-established` (no option needed: in place, the
/// member goes back into its pod): it joins the pod's namespaces again (the infra
/// container's, by inode), the connection goes on, nothing lost, twice or reset; the
/// restore removed the dump's lock from the pod's namespace (none of ckpt's tables
/// left there or on the bridge's side); Podman lists the member running in its pod.
#[test]
fn podman_pod_member_comes_back_into_its_pod() {
    let ctx = Ctx::new("podman_pod_member_comes_back_into_its_pod");
    let pm = Podman::with_network(&ctx, "pd", Backend::Netavark);
    pm.ok(&[
        "pod",
        "create",
        "--name",
        "p1",
        "--hostname",
        "ckpt-podman",
        "--infra-image",
        "localhost/ckpt-e2e:1",
        "--infra-command",
        "/bin/pause",
    ]);
    let pid = pm.run_container(
        "m1",
        Seccomp::Unconfined,
        &["--pod", "p1"],
        &["/bin/podnet", "8080"],
    );
    let infra_id = pm.ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", "p1"]);
    let pod_id = pm.ok(&["pod", "inspect", "--format", "{{.Id}}", "p1"]);
    let infra = pm.pid(infra_id.trim());
    let ns_of = |p: i32| -> Vec<String> {
        ["net", "ipc", "uts"]
            .iter()
            .map(|k| {
                std::fs::read_link(format!("/proc/{p}/ns/{k}"))
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_else(|e| panic!("/proc/{p}/ns/{k}: {e}"))
            })
            .collect()
    };
    let pod_ns = ns_of(infra);
    assert_eq!(ns_of(pid), pod_ns, "the member in the pod's namespaces");
    let ip = ip_of(&pm, "m1");
    let net = pm.mounts.net_path();
    let mut c = Client::connect(&net, &ip);
    c.ask("one", 1, 1);
    let talk = Talker::start(c, 1, 2);
    talk.wait_answered(20, "before the checkpoint");
    let with_conn = net_view(pid);
    let id = id_of(&pm, "m1");
    let before = kernel_view(pid, &id, "the original member");
    pm.ok(&["container", "checkpoint", "--tcp-established", "m1"]);
    wait_pids_gone(&[pid], "the member after the checkpoint");
    assert_eq!(pm.state("m1").0, "exited");
    assert_eq!(
        pm.pid(infra_id.trim()),
        infra,
        "the infra container runs on"
    );
    let stalled = talk.answered();
    let tables = in_net_of(infra, "nft", &["list", "tables"]);
    assert!(
        tables.contains("table inet ckpt_lock"),
        "the dump's lock in the pod's namespace: {tables}"
    );
    std::thread::sleep(Duration::from_secs(2));
    pm.ok(&["container", "restore", "--tcp-established", "m1"]);
    pm.assert_listed_running("m1");
    let rp = pm.pid("m1");
    assert_eq!(
        ns_of(rp),
        pod_ns,
        "the restored member in the pod's namespaces"
    );
    talk.wait_answered(stalled + 50, "after the restore");
    assert_eq!(
        no_advmss(net_view(rp)),
        no_advmss(with_conn),
        "what the kernel shows of the pod's network and the connection"
    );
    assert_no_lock_left(infra);
    assert_no_host_lock(&pm);
    let id = id_of(&pm, "m1");
    assert_eq!(
        kernel_view(rp, &id, "the restored member"),
        before,
        "what the kernel shows of the restored member"
    );
    let ps = pm.ok(&[
        "ps",
        "--pod",
        "--format",
        "{{.Names}} {{.PodName}} {{.Status}}",
    ]);
    assert!(
        ps.lines().any(|l| l.starts_with("m1 p1 Up")),
        "podman ps --pod: {ps}"
    );
    let (_c, n) = talk.stop();
    assert!(n >= stalled + 50, "{n} lines answered");
    drop(pm);
    wait_pids_gone(&[rp, infra], "the pod after podman pod rm");
    let left: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.join("libpod_parent").join(pod_id.trim()))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "the pod's cgroups left: {left:?}");
}
