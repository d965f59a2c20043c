//! Helpers shared by the container tests (runc, ckpt as criu under runc and Podman, mount
//! namespaces): finding the programs they need, and what the kernel shows of a process's
//! mounts and namespaces.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{nspids, timeout, wait_process_tree};

/// A program found in PATH (or one of `also`), else the test fails naming its package.
pub fn find(name: &str, also: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs {name} (apt-get install {package}); not found in PATH")
        })
}

pub fn runc() -> PathBuf {
    find("runc", &["/usr/sbin/runc", "/usr/bin/runc"], "runc")
}

pub fn busybox() -> PathBuf {
    find(
        "busybox",
        &["/bin/busybox", "/usr/bin/busybox"],
        "busybox-static",
    )
}

/// The mountinfo of `pid`, normalised: each mount as its mount point, its parent's
/// mount point, root, options, propagation (peer groups numbered in order), type,
/// source, file system options and device (numbered in order for file systems the host
/// does not have mounted: those restore makes anew). Mount IDs differ after a restore.
pub fn mountinfo(pid: i32) -> Vec<String> {
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

pub fn ns_inode(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The processes (host PIDs, ascending) whose `kind` namespace is `ino`: a pod's
/// members in its shared PID namespace, say.
pub fn ns_members(kind: &str, ino: u64) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| {
                    std::fs::metadata(format!("/proc/{p}/ns/{kind}")).is_ok_and(|m| m.ino() == ino)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The PIDs the /proc of process `pid`'s mount namespace lists (read through its root:
/// those of the PID namespace that proc shows).
pub fn proc_listing(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/root/proc"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What the kernel shows of a container's terminal: its termios and window size (read
/// through the init's descriptor 0), and, as the container's PID namespace shows them
/// (its own /proc), each process's PID, session, controlling terminal (tty_nr) and
/// that terminal's foreground group; where its descriptors 0-2 lead.
pub fn terminal_view(pid: i32) -> (String, Vec<String>, Vec<String>) {
    use std::os::unix::fs::OpenOptionsExt;
    let t = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/{pid}/fd/0"))
        .expect("open the container's terminal");
    let tio = rustix::termios::tcgetattr(&t).expect("tcgetattr");
    let ws = rustix::termios::tcgetwinsize(&t).expect("tcgetwinsize");
    let settings = format!(
        "iflag {:?} oflag {:?} cflag {:?} lflag {:?} cc {:?} speed {} {}x{} {}x{}",
        tio.input_modes,
        tio.output_modes,
        tio.control_modes,
        tio.local_modes,
        tio.special_codes,
        tio.output_speed(),
        ws.ws_col,
        ws.ws_row,
        ws.ws_xpixel,
        ws.ws_ypixel
    );
    let proc_dir = format!("/proc/{pid}/root/proc");
    let mut stats: Vec<String> = std::fs::read_dir(&proc_dir)
        .expect("the container's /proc")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|st| {
            let rest = st.rsplit_once(") ").map(|x| x.1).unwrap_or_default();
            let f: Vec<&str> = rest.split(' ').collect();
            // (state ppid pgrp session tty_nr tpgid)
            format!(
                "pid {} ppid {} pgrp {} sid {} tty_nr {} tpgid {}",
                st.split(' ').next().unwrap_or_default(),
                f[1],
                f[2],
                f[3],
                f[4],
                f[5]
            )
        })
        .collect();
    stats.sort();
    let links = (0..3)
        .map(|fd| {
            let l = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd link");
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
            let flags = info
                .lines()
                .find(|l| l.starts_with("flags:"))
                .unwrap_or_default()
                .to_string();
            format!("{fd} -> {} {flags}", l.display())
        })
        .collect();
    (settings, stats, links)
}

/// What the kernel shows of a container's init (runc's, Podman's, containerd's): its tree's size (each process in the
/// init's namespaces, none of them the host's; the init PID 1 of its own), its mount
/// points with their types and options, its cgroups (the container's ID replaced by
/// "ID"), its credentials and seccomp state, its limits.
pub fn kernel_view(pid: i32, id: &str, what: &str) -> Vec<String> {
    let tree = wait_process_tree(pid, 2, what);
    let mut out = vec![format!("tree of {}", tree.len())];
    for kind in ["uts", "ipc", "mnt", "net", "pid"] {
        let r = ns_inode(&pid.to_string(), kind);
        assert_ne!(
            r,
            ns_inode("self", kind),
            "{what}: {kind} namespace is the host's"
        );
        for p in &tree {
            assert_eq!(
                ns_inode(&p.to_string(), kind),
                r,
                "{what}: process {p} is in another {kind} namespace"
            );
        }
    }
    assert_eq!(nspids(pid).last(), Some(&1), "{what}: the init's PIDs");
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/{f}: {e}"))
    };
    for l in read("mountinfo").lines() {
        let w: Vec<&str> = l.split(' ').collect();
        let sep = w
            .iter()
            .position(|x| *x == "-")
            .expect("mountinfo separator");
        out.push(format!(
            "mount {} {} {} {}",
            w[4],
            w[5],
            w[sep + 1],
            w[sep + 3..].join(" ").replace(id, "ID")
        ));
    }
    out.extend(
        read("cgroup")
            .lines()
            .map(|l| format!("cgroup {}", l.replace(id, "ID"))),
    );
    let shown = [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Seccomp:",
        "Seccomp_filters:",
        "Uid",
        "Gid",
    ];
    out.extend(
        read("status")
            .lines()
            .filter(|l| shown.iter().any(|k| l.starts_with(k)))
            .map(str::to_string),
    );
    out.extend(read("limits").lines().map(str::to_string));
    out
}

/// A mount namespace of the test's own (held by an `unshare --mount --propagation
/// private sleep`) in which a runtime runs: the mounts it makes on its way (runc's
/// `criu-root` while it restores, Podman's containers' /dev/shm) never show in the host's mount table, which the tests
/// running beside it compare.
pub struct PrivateMounts {
    holder: std::process::Child,
    /// The holder also made a network namespace of its own (`with_network`).
    net: bool,
}

impl PrivateMounts {
    pub fn new() -> PrivateMounts {
        PrivateMounts::make(false)
    }

    /// A private mount namespace and a new network namespace (its loopback up), both
    /// held by one `unshare --mount --net` child: what a runtime run in them does to
    /// interfaces and firewall (Podman's bridge, veths, CNI's iptables rules) stays in
    /// that namespace, and goes with it. Mounted in it: tmpfs on /run/netns (the
    /// network namespaces' files Podman makes; the directory made first where the
    /// host has none: ip netns makes it, and a host that never ran it lacks it), on
    /// /var/lib (CNI's cache, /var/lib/cni) and on /run/containers (netavark's address
    /// leases, /run/containers/networks/ipam.db, shared by every Podman of the host
    /// otherwise), so nothing is left in the host's directories either.
    pub fn with_network() -> PrivateMounts {
        let m = PrivateMounts::make(true);
        let st = m
            .command(std::path::Path::new("/"), "sh")
            .args([
                "-c",
                "mkdir -p /run/netns /run/containers && \
                 mount -t tmpfs -o mode=755 ckpt-test /run/netns && \
                 mount -t tmpfs -o mode=755 ckpt-test /var/lib && \
                 mount -t tmpfs -o mode=755 ckpt-test /run/containers && ip link set lo up",
            ])
            .status()
            .expect("run sh in the private namespaces");
        assert!(st.success(), "set up the private namespaces: {st}");
        m
    }

    /// The holder's network namespace file (`with_network`; else the host's).
    pub fn net_path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    fn make(net: bool) -> PrivateMounts {
        let mut args = vec!["--mount"];
        if net {
            args.push("--net");
        }
        args.extend(["--propagation", "private", "sleep", "infinity"]);
        let holder = std::process::Command::new("unshare")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("run unshare (util-linux)");
        let m = PrivateMounts { holder, net };
        // (until unshare has entered its new namespace and executed sleep)
        let mine = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let pid = m.holder.id();
        let t0 = std::time::Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == Some(mine.clone())
            || std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|e| !e.to_string_lossy().contains("sleep"))
                .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "unshare --mount did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        m
    }

    /// `prog` to be run in the namespace (through `nsenter`), in the directory `cwd`
    /// (entering a mount namespace moves a process to its root).
    pub fn command(
        &self,
        cwd: &std::path::Path,
        prog: impl AsRef<std::ffi::OsStr>,
    ) -> std::process::Command {
        // (`env -C`: nsenter's --wd opens the directory before it enters the namespace,
        // where that mount is unreachable)
        let mut c = std::process::Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string(), "-m"]);
        if self.net {
            c.arg("-n");
        }
        c.args(["--", "env", "-C"]).arg(cwd).arg(prog);
        c
    }
}

impl PrivateMounts {
    /// End the namespace (its holder killed and reaped; the mounts made in it go once
    /// no process is left in it).
    pub fn end(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        self.end();
    }
}

/// runcsrv's (tests/targets/runcsrv.c) answer on its socket, reached through the process's root: (count, host).
pub fn runcsrv_ask(pid: i32) -> (u64, String) {
    let sock = format!("/proc/{pid}/root/srv.sock");
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
            "the container never answered on {sock}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the count reaches `n`.
pub fn runcsrv_wait_count(pid: i32, n: u64) -> u64 {
    let deadline = Instant::now() + timeout();
    loop {
        let (got, _) = runcsrv_ask(pid);
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

/// The count runcsrv keeps in the container's /tmp.
pub fn runcsrv_count(pid: i32) -> u64 {
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
