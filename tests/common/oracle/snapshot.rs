//! Reading a tree's state from /proc and from duplicates of its descriptors.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;

use super::*;

// ---------------------------------------------------------------------------------------
// Reading

type Entries = BTreeMap<String, (Kind, String)>;

pub(super) struct Reader {
    pub(super) e: Entries,
    /// pipe/socket inode -> the first "pPID.fdN" holding it
    pub(super) labels: BTreeMap<String, String>,
    pub(super) unix: BTreeMap<u64, UnixDiag>,
    pub(super) tcp: BTreeMap<u64, TcpDiag>,
    /// Listeners with connections waiting ("pPID.fdN", their clients' inodes), named
    /// once every descriptor of the tree has its label.
    pub(super) icons: Vec<(String, Vec<u64>)>,
}

impl Reader {
    fn put(&mut self, k: String, kind: Kind, v: impl Into<String>) {
        self.e.insert(k, (kind, v.into()));
    }
    pub(super) fn conf(&mut self, k: String, v: impl Into<String>) {
        self.put(k, Kind::Config, v);
    }
    pub(super) fn prog(&mut self, k: String, v: impl Into<String>) {
        self.put(k, Kind::Progress, v);
    }
}

pub(super) fn read_tree(root: i32) -> (Entries, Vec<i32>) {
    let pids = process_tree(root);
    let mut r = Reader {
        e: BTreeMap::new(),
        labels: BTreeMap::new(),
        unix: unix_diag_in_net_of(root).unwrap_or_default(),
        // (The root's namespace's, which need not be ours: a tree restored elsewhere.)
        tcp: tcp_diag_in_net_of(root),
        icons: Vec::new(),
    };
    // Sockets are listed per network namespace: those of the other namespaces the
    // tree's processes are in (made below its root) too (inodes are unique).
    let mut nets = std::collections::BTreeSet::new();
    for &pid in &pids {
        let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !nets.insert(m.ino()) || pid == root {
            continue;
        }
        for (i, d) in unix_diag_in_net_of(pid).unwrap_or_default() {
            r.unix.entry(i).or_insert(d);
        }
        for (i, d) in tcp_diag_in_net_of(pid) {
            r.tcp.entry(i).or_insert(d);
        }
    }
    for &pid in &pids {
        read_process(&mut r, pid);
    }
    // The clients waiting on each listener, in accept's order, by the descriptor of the
    // tree that holds each (the first one, as for peers).
    for (k, icons) in std::mem::take(&mut r.icons) {
        let named: Vec<String> = icons
            .iter()
            .map(|i| {
                let l = format!("socket:[{i}]");
                r.labels
                    .get(&l)
                    .cloned()
                    .unwrap_or_else(|| "outside".into())
            })
            .collect();
        r.conf(format!("{k}.sock.unix.icons"), named.join(","));
    }
    read_sharing(&mut r, &pids);
    (r.e, pids)
}

/// Status lines that change as the task runs.
/// (VmSize and VmData sum the areas, which a running program maps and unmaps as it goes:
/// compared, like the areas themselves, when both sides were at rest.)
const STATUS_PROGRESS: &[&str] = &["State", "SigPnd", "ShdPnd", "VmSize", "VmData"];
/// Status lines that are not state of the task (or repeat what other entries show).
const STATUS_SKIP: &[&str] = &["Pid", "Tgid", "NStgid", "Kthread"];

fn read_status(r: &mut Reader, pfx: &str, path: &str) {
    let Ok(s) = fs::read_to_string(path) else {
        return;
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    // A signal pending but not blocked in a task that can take it (not stopped) is on its
    // way in: whether it is seen depends only on when the task is read (a timer firing
    // every millisecond at a sleeping task). Only the blocked ones are state.
    let blocked = field("SigBlk").and_then(|b| u64::from_str_radix(b, 16).ok());
    let can_take = field("State").is_some_and(|st| !st.starts_with(['T', 't', 'Z', 'X']));
    for l in s.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if STATUS_SKIP.contains(&k) {
            continue;
        }
        let mut v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        if let (true, Some(blk), "SigPnd" | "ShdPnd") = (can_take, blocked, k) {
            if let Ok(p) = u64::from_str_radix(&v, 16) {
                v = format!("{:016x}", p & blk);
            }
        }
        if STATUS_PROGRESS.contains(&k) {
            r.prog(format!("{pfx}.status.{k}"), v);
        } else {
            r.conf(format!("{pfx}.status.{k}"), v);
        }
    }
}

/// Names of /proc/PID/stat fields from the 3rd on (proc(5)).
const STAT_FIELDS: &[&str] = &[
    "state",
    "ppid",
    "pgrp",
    "session",
    "tty_nr",
    "tpgid",
    "flags",
    "minflt",
    "cminflt",
    "majflt",
    "cmajflt",
    "utime",
    "stime",
    "cutime",
    "cstime",
    "priority",
    "nice",
    "num_threads",
    "itrealvalue",
    "starttime",
    "vsize",
    "rss",
    "rsslim",
    "startcode",
    "endcode",
    "startstack",
    "kstkesp",
    "kstkeip",
    "signal",
    "blocked",
    "sigignore",
    "sigcatch",
    "wchan",
    "nswap",
    "cnswap",
    "exit_signal",
    "processor",
    "rt_priority",
    "policy",
    "delayacct",
    "guest_time",
    "cguest_time",
    "start_data",
    "end_data",
    "start_brk",
    "arg_start",
    "arg_end",
    "env_start",
    "env_end",
    "exit_code",
];

fn read_stat(r: &mut Reader, pfx: &str, path: &str) {
    let Ok(s) = fs::read(path) else {
        return;
    };
    let Some(close) = s.iter().rposition(|&b| b == b')') else {
        return;
    };
    let open = s.iter().position(|&b| b == b'(').unwrap_or(0);
    r.conf(
        format!("{pfx}.stat.comm"),
        String::from_utf8_lossy(&s[open + 1..close]),
    );
    let rest = String::from_utf8_lossy(&s[close + 1..]).into_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // a task sleeping (S) with no wait channel is still on a CPU, going to sleep or
    // waking up: count it as running (per thread only: /proc/PID/stat of a process
    // with threads always shows wchan 0)
    let on_cpu = pfx.contains(".t") && fields.first() == Some(&"S") && fields.get(32) == Some(&"0");
    for (name, v) in STAT_FIELDS.iter().zip(fields) {
        let v = if *name == "state" && on_cpu { "R" } else { v };
        match *name {
            // the signal masks repeat status; esp/eip are 0; nswap unused
            "signal" | "blocked" | "sigignore" | "sigcatch" | "kstkesp" | "kstkeip" | "nswap"
            | "cnswap" | "wchan" => {}
            // CPU times are never compared (LEGIT) but show a task that runs
            "state" | "utime" | "stime" => r.prog(format!("{pfx}.stat.{name}"), v),
            // PF_FORKNOEXEC (0x40) and PF_SUPERPRIV (0x100) are for BSD process
            // accounting only (AFORK, ASU): a process recreated by a privileged restorer
            // with fork and no exec has them; nothing the program can see depends on them
            "flags" => {
                let f = v.parse::<u64>().unwrap_or(0) & !0x140;
                r.conf(format!("{pfx}.stat.flags"), format!("{f:#x}"));
            }
            _ => r.conf(format!("{pfx}.stat.{name}"), v),
        }
    }
}

fn read_process(r: &mut Reader, pid: i32) {
    let p = format!("p{pid}");
    let base = format!("/proc/{pid}");
    read_status(r, &p, &format!("{base}/status"));
    read_stat(r, &p, &format!("{base}/stat"));
    for f in [
        "limits",
        "oom_score_adj",
        "personality",
        "timerslack_ns",
        "cgroup",
        "comm",
        "timers",
        "loginuid",
        "sessionid",
        "coredump_filter",
        "mountinfo",
        // the user namespace's maps (outside IDs as the host sees them) and setgroups
        "uid_map",
        "gid_map",
        "setgroups",
    ] {
        if let Ok(s) = fs::read_to_string(format!("{base}/{f}")) {
            let s = if f == "timers" {
                // one block per timer, listed in the kernel's hash order: sort by ID
                let mut blocks: Vec<String> = Vec::new();
                for l in s.lines() {
                    match blocks.last_mut() {
                        Some(b) if !l.starts_with("ID: ") => {
                            b.push('\n');
                            b.push_str(l);
                        }
                        _ => blocks.push(l.to_string()),
                    }
                }
                blocks.sort_by_key(|b| {
                    b[4..]
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<i64>().ok())
                });
                blocks.join("\n")
            } else if let (true, Some(n)) = (f == "mountinfo", own_mounts(pid)) {
                n.mountinfo
            } else if f == "mountinfo" {
                // which mounts it sees (ids and options), one line each; not the mounts
                // tests running at the same time make in their scratch directories
                // (tests/e2e_fanotify.rs mounts tmpfs there), which come and go with them
                let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
                let scratch = scratch.to_string_lossy().into_owned() + "/";
                s.lines()
                    .filter(|l| l.split(' ').nth(4).is_none_or(|m| !m.starts_with(&scratch)))
                    .map(|l| l.split(" - ").next().unwrap_or(l).to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                s
            };
            r.conf(format!("{p}.{f}"), s.trim_end());
        }
    }
    for f in ["environ", "cmdline"] {
        if let Ok(b) = fs::read(format!("{base}/{f}")) {
            r.conf(
                format!("{p}.{f}"),
                String::from_utf8_lossy(&b).replace('\0', "\\0"),
            );
        }
    }
    if let Ok(b) = fs::read(format!("{base}/auxv")) {
        let words: Vec<String> = b
            .chunks_exact(16)
            .map(|c| {
                let k = u64::from_ne_bytes(c[..8].try_into().unwrap_or_default());
                let v = u64::from_ne_bytes(c[8..].try_into().unwrap_or_default());
                format!("{k}={v:#x}")
            })
            .collect();
        r.conf(format!("{p}.auxv"), words.join(" "));
    }
    if let Ok(s) = fs::read_to_string(format!("{base}/sched")) {
        for l in s.lines() {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim();
                if k == "policy" || k == "prio" {
                    r.conf(format!("{p}.sched.{k}"), v.trim());
                }
            }
        }
    }
    for l in ["cwd", "root", "exe"] {
        if let Ok(t) = fs::read_link(format!("{base}/{l}")) {
            r.conf(format!("{p}.{l}"), t.to_string_lossy());
        }
    }
    for tid in tasks(pid) {
        let t = format!("{p}.t{tid}");
        read_status(r, &t, &format!("{base}/task/{tid}/status"));
        read_stat(r, &t, &format!("{base}/task/{tid}/stat"));
        if let Ok(s) = fs::read_to_string(format!("{base}/task/{tid}/comm")) {
            r.conf(format!("{t}.comm"), s.trim_end());
        }
    }
    read_smaps(r, pid);
    read_fds(r, pid);
}

/// smaps fields that are state (the others are residency counters).
const SMAPS_KEEP: &[&str] = &[
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "THPeligible",
    "VmFlags",
    "ProtectionKey",
    "Locked",
];

/// One area of /proc/PID/smaps: its range and the fields kept.
struct Area {
    start: u64,
    end: u64,
    fields: Vec<(String, String)>,
}

impl Area {
    fn field(&self, k: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn read_smaps(r: &mut Reader, pid: i32) {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut areas: Vec<Area> = Vec::new();
    for l in s.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // 7f..-7f.. rw-p 00000000 00:00 0   [heap]
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = first.split_once('-').unwrap_or(("0", "0"));
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap_or(0);
            let get = |i: usize| f.get(i).map_or(String::new(), |x| x.to_string());
            areas.push(Area {
                start: hex(a),
                end: hex(b),
                fields: vec![
                    ("perms".into(), get(1)),
                    ("offset".into(), get(2)),
                    ("dev".into(), get(3)),
                    ("inode".into(), get(4)),
                    (
                        "path".into(),
                        f.get(5..).map(|x| x.join(" ")).unwrap_or_default(),
                    ),
                ],
            });
        } else if let (Some((k, v)), Some(cur)) = (l.split_once(':'), areas.last_mut()) {
            if SMAPS_KEEP.contains(&k) {
                // `uw` (an area registered for userfaultfd write protection) is ckpt's
                // own write tracking (`dump --track`), not the program's: a tracked
                // original has it, its restored copy not. tests/e2e_incr.rs checks it
                // comes and goes with the tracking.
                let v = v
                    .split_whitespace()
                    .filter(|f| k != "VmFlags" || *f != "uw")
                    .collect::<Vec<_>>()
                    .join(" ");
                cur.fields.push((k.to_string(), v));
            }
        }
    }
    for a in areas {
        // As /proc prints the range (at least eight hex digits).
        let cur = format!("p{pid}.smaps.{:08x}-{:08x}", a.start, a.end);
        for (k, v) in a.fields {
            r.conf(format!("{cur}.{k}"), v);
        }
    }
}

fn pidfd(pid: i32) -> Option<i32> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    (fd >= 0).then_some(fd)
}

/// A duplicate of `pid`'s descriptor `fd` (the same open file description).
fn getfd(pfd: i32, fd: i32) -> Option<i32> {
    let d = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pfd, fd, 0) } as i32;
    (d >= 0).then_some(d)
}

/// fcntl commands the libc crate does not name (asm-generic/fcntl.h).
const F_GETOWN_EX: i32 = 16;
const F_GETSIG: i32 = 11;

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The mounts of a process in a mount namespace other than ours (one restore made
/// anew), as the oracle compares them: mount IDs as their place in the list, and the
/// file systems our namespace does not have (those restore mounts anew) numbered in
/// order of appearance.
pub(super) struct OwnMounts {
    /// Its mountinfo so normalised (without the file systems' fields, as for others).
    mountinfo: String,
    /// Mount ID -> its place ("m3").
    ids: BTreeMap<String, String>,
    /// Device (stat's) of a file system made anew -> its name ("new0").
    new_devs: BTreeMap<u64, String>,
}

/// The mount of a descriptor of a process in a mount namespace of its own that is not
/// in that namespace (the descriptor was opened outside it), followed by its mount ID:
/// restore opens such a file again from ckpt's own namespace, on that very mount.
pub(super) const OUTSIDE_NS: &str = "(a mount of another namespace)";

pub(super) fn own_mounts(pid: i32) -> Option<OwnMounts> {
    let ns = |p: &str| {
        fs::metadata(format!("/proc/{p}/ns/mnt"))
            .ok()
            .map(|m| m.ino())
    };
    if ns(&pid.to_string())? == ns("self")? {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let ours = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let our_devs: Vec<&str> = ours.lines().filter_map(|l| l.split(' ').nth(2)).collect();
    let dev_of = |mm: &str| {
        let (a, b) = mm.split_once(':')?;
        Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
    };
    let mut ids = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(id) = l.split(' ').next() {
            ids.insert(id.to_string(), format!("m{i}"));
        }
    }
    let mut new_devs = BTreeMap::new();
    let mut groups = BTreeMap::<String, usize>::new();
    let mut lines = Vec::new();
    for l in text.lines() {
        let head = l.split(" - ").next().unwrap_or(l);
        let w: Vec<&str> = head.split(' ').collect();
        if w.len() < 6 {
            continue;
        }
        let dev = match dev_of(w[2]) {
            Some(d) if !our_devs.contains(&w[2]) => {
                let n = new_devs.len();
                new_devs
                    .entry(d)
                    .or_insert_with(|| format!("new{n}"))
                    .clone()
            }
            _ => w[2].to_string(),
        };
        let optional: Vec<String> = w[6..]
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, g)) => {
                    let n = groups.len();
                    format!("{k}:{}", *groups.entry(g.to_string()).or_insert(n))
                }
                None => o.to_string(),
            })
            .collect();
        lines.push(format!(
            "{} {} {dev} {} {} {} {}",
            ids.get(w[0]).cloned().unwrap_or_default(),
            ids.get(w[1]).cloned().unwrap_or_else(|| "outside".into()),
            w[3],
            w[4],
            w[5],
            optional.join(" ")
        ));
    }
    Some(OwnMounts {
        mountinfo: lines.join("\n"),
        ids,
        new_devs,
    })
}

fn read_fds(r: &mut Reader, pid: i32) {
    let base = format!("/proc/{pid}");
    let own = own_mounts(pid);
    let Ok(rd) = fs::read_dir(format!("{base}/fd")) else {
        return;
    };
    let mut fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    r.conf(format!("p{pid}.fds"), format!("{fds:?}"));
    let pfd = pidfd(pid);
    for fd in fds {
        let k = format!("p{pid}.fd{fd}");
        let Ok(link) = fs::read_link(format!("{base}/fd/{fd}")) else {
            continue;
        };
        let mut link = link.to_string_lossy().into_owned();
        let mut ino_str = String::new();
        for pre in ["pipe:[", "socket:["] {
            if let Some(rest) = link.strip_prefix(pre) {
                ino_str = rest.trim_end_matches(']').to_string();
                let label = r
                    .labels
                    .entry(link.clone())
                    .or_insert_with(|| k.clone())
                    .clone();
                link = format!("{pre}{label}]");
            }
        }
        r.conf(format!("{k}.link"), link.clone());
        read_fdinfo(r, &k, &format!("{base}/fdinfo/{fd}"));
        if let Some(own) = &own {
            // In a mount namespace restore made anew: the mount by its place.
            let key = format!("{k}.fdinfo.mnt_id");
            if let Some((_, (_, id))) = r.e.get_key_value(&key) {
                let place = own
                    .ids
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("{OUTSIDE_NS} {id}"));
                r.conf(key, place);
            }
        }
        // A POSIX message queue of an IPC namespace of the tree's own (not the harness's)
        // is on that namespace's mqueue file system, which restore makes anew with the
        // namespace: its device, inode and mount by what they are.
        let own_mq = own_ipc_mqueue(&base, &format!("{base}/fd/{fd}"));
        if own_mq {
            r.conf(format!("{k}.fdinfo.mnt_id"), OWN_MQUEUE.to_string());
        }
        if let Ok(m) = fs::metadata(format!("{base}/fd/{fd}")) {
            r.conf(format!("{k}.stat.mode"), format!("{:o}", m.mode()));
            r.conf(
                format!("{k}.stat.owner"),
                format!("{}:{}", m.uid(), m.gid()),
            );
            r.conf(format!("{k}.stat.nlink"), m.nlink().to_string());
            match own.as_ref().and_then(|o| o.new_devs.get(&m.dev())) {
                _ if own_mq => {
                    r.conf(format!("{k}.stat.ino"), OWN_MQUEUE.to_string());
                    r.conf(format!("{k}.stat.dev"), OWN_MQUEUE.to_string());
                }
                // A file system restore mounts anew has other device and inode numbers.
                Some(name) => {
                    r.conf(format!("{k}.stat.ino"), "(on a file system made anew)");
                    r.conf(format!("{k}.stat.dev"), name.clone());
                }
                None => {
                    r.conf(format!("{k}.stat.ino"), m.ino().to_string());
                    r.conf(format!("{k}.stat.dev"), format!("{:x}", m.dev()));
                }
            }
            if m.is_file() {
                r.prog(format!("{k}.stat.size"), m.size().to_string());
                r.prog(format!("{k}.stat.blocks"), m.blocks().to_string());
                // Opening a file under a lease would break it (a write lease: the
                // holder gets SIGIO, which kills a program that does not handle it).
                let leased = fs::read_to_string(format!("{base}/fdinfo/{fd}"))
                    .is_ok_and(|t| t.contains("LEASE"));
                if let Some(x) = (!leased)
                    .then(|| extents(&format!("{base}/fd/{fd}")))
                    .flatten()
                {
                    r.prog(format!("{k}.extents"), x);
                }
            }
        }
        if link.starts_with("socket:") {
            if let Ok(ino) = ino_str.parse::<u64>() {
                if let Some(d) = r.unix.get(&ino).cloned() {
                    r.conf(format!("{k}.sock.unix.state"), d.state.to_string());
                    r.conf(format!("{k}.sock.unix.type"), d.kind.to_string());
                    r.conf(format!("{k}.sock.unix.shutdown"), d.shutdown.to_string());
                    r.conf(format!("{k}.sock.unix.name"), d.name.clone());
                    r.prog(format!("{k}.sock.unix.rqlen"), d.rqlen.to_string());
                    r.prog(format!("{k}.sock.unix.wqlen"), d.wqlen.to_string());
                    if !d.icons.is_empty() {
                        r.icons.push((k.clone(), d.icons.clone()));
                    }
                    let peer = if d.peer == 0 {
                        "none".to_string()
                    } else {
                        let l = format!("socket:[{}]", d.peer);
                        r.labels.get(&l).cloned().unwrap_or_else(|| {
                            // the peer is later in the tree (or outside it)
                            format!("later:{}", r.labels.len())
                        })
                    };
                    if !peer.starts_with("later:") {
                        r.conf(format!("{k}.sock.unix.peer"), peer);
                    }
                }
            }
        }
        let Some(d) = pfd.and_then(|p| getfd(p, fd)) else {
            continue;
        };
        read_dup(r, &k, d, link.starts_with("socket:"));
        if link.starts_with("/dev/pts/") || link == "/dev/ptmx" || link == "/dev/tty" {
            read_tty(r, &k, d);
        }
        unsafe { libc::close(d) };
    }
    if let Some(p) = pfd {
        unsafe { libc::close(p) };
    }
}

fn read_fdinfo(r: &mut Reader, k: &str, path: &str) {
    let Ok(s) = fs::read_to_string(path) else {
        return;
    };
    let mut n = BTreeMap::<String, usize>::new();
    for l in s.lines() {
        let Some((name, v)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim().to_string();
        let mut v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        let progress = matches!(
            name.as_str(),
            "pos" | "eventfd-count" | "ticks" | "it_value" | "scm_fds"
        );
        match name.as_str() {
            // the file's identity is checked by stat and the link
            "ino" => continue,
            // epoll items: "tfd: 5 events: 19 data: 5 pos:0 ino:1a sdev:f": the watched
            // file's inode number changes with a recreated object
            "tfd" => {
                v = v
                    .split(' ')
                    .filter(|w| !w.starts_with("ino:") && !w.starts_with("sdev:"))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            _ => {}
        }
        // epoll items and inotify watches by their descriptor / watch number (the
        // kernel lists them in the order of its trees), fanotify marks by what they
        // mark (inode, mount ID, device); other repeated lines numbered
        let i = n.entry(name.clone()).or_insert(0);
        let keyed = [
            "tfd",
            "inotify wd",
            "inotify",
            "fanotify ino",
            "fanotify mnt_id",
            "fanotify sdev",
        ];
        let key = if keyed.contains(&name.as_str()) {
            let first = v.split_whitespace().next().unwrap_or("").to_string();
            format!("{k}.fdinfo.{name}.{first}")
        } else if *i == 0 {
            format!("{k}.fdinfo.{name}")
        } else {
            format!("{k}.fdinfo.{name}#{i}")
        };
        *i += 1;
        r.put(
            key,
            if progress {
                Kind::Progress
            } else {
                Kind::Config
            },
            v,
        );
    }
}

/// Data extents of a regular file (SEEK_DATA/SEEK_HOLE on a new open file description,
/// so as not to move the process's position): "0-4096 8192-12288".
fn extents(path: &str) -> Option<String> {
    let f = fs::File::open(path).ok()?;
    let fd = f.as_raw_fd();
    let end = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
    let mut out = Vec::new();
    let mut off = 0i64;
    while off < end && out.len() < 64 {
        let d = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if d < 0 {
            break;
        }
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        if h < 0 {
            break;
        }
        out.push(format!("{d}-{h}"));
        off = h;
    }
    Some(out.join(" "))
}

fn fcntl_int(d: i32, cmd: i32) -> String {
    let v = unsafe { libc::fcntl(d, cmd) };
    if v < 0 {
        format!(
            "err {}",
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    } else {
        v.to_string()
    }
}

fn read_dup(r: &mut Reader, k: &str, d: i32, socket: bool) {
    let mut own = FOwnerEx { kind: 0, pid: 0 };
    let v = unsafe { libc::fcntl(d, F_GETOWN_EX, &mut own as *mut FOwnerEx) };
    if v == 0 {
        r.conf(
            format!("{k}.owner"),
            format!("type {} pid {}", own.kind, own.pid),
        );
    }
    r.conf(format!("{k}.F_GETSIG"), fcntl_int(d, F_GETSIG));
    r.conf(format!("{k}.F_GETFL"), fcntl_int(d, libc::F_GETFL));
    r.conf(
        format!("{k}.F_GETPIPE_SZ"),
        fcntl_int(d, libc::F_GETPIPE_SZ),
    );
    r.conf(format!("{k}.F_GET_SEALS"), fcntl_int(d, libc::F_GET_SEALS));
    r.conf(format!("{k}.F_GETLEASE"), fcntl_int(d, libc::F_GETLEASE));
    if !socket {
        return;
    }
    let int_opt = |level: i32, name: i32| -> String {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                d,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 { "err".into() } else { v.to_string() }
    };
    for (name, level, opt) in [
        ("SO_TYPE", libc::SOL_SOCKET, libc::SO_TYPE),
        ("SO_DOMAIN", libc::SOL_SOCKET, libc::SO_DOMAIN),
        ("SO_PROTOCOL", libc::SOL_SOCKET, libc::SO_PROTOCOL),
        ("SO_RCVBUF", libc::SOL_SOCKET, libc::SO_RCVBUF),
        ("SO_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF),
        // SO_BUF_LOCK (72, Linux 5.14): which sizes the program set itself
        ("SO_BUF_LOCK", libc::SOL_SOCKET, 72),
        ("SO_PASSCRED", libc::SOL_SOCKET, libc::SO_PASSCRED),
        ("SO_KEEPALIVE", libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        ("SO_REUSEADDR", libc::SOL_SOCKET, libc::SO_REUSEADDR),
        ("SO_REUSEPORT", libc::SOL_SOCKET, libc::SO_REUSEPORT),
        ("SO_BROADCAST", libc::SOL_SOCKET, libc::SO_BROADCAST),
        ("SO_OOBINLINE", libc::SOL_SOCKET, libc::SO_OOBINLINE),
        ("SO_RCVLOWAT", libc::SOL_SOCKET, libc::SO_RCVLOWAT),
        ("SO_PRIORITY", libc::SOL_SOCKET, libc::SO_PRIORITY),
        ("SO_MARK", libc::SOL_SOCKET, libc::SO_MARK),
        ("SO_ACCEPTCONN", libc::SOL_SOCKET, libc::SO_ACCEPTCONN),
        ("SO_PEEK_OFF", libc::SOL_SOCKET, libc::SO_PEEK_OFF),
        ("SO_TIMESTAMP", libc::SOL_SOCKET, libc::SO_TIMESTAMP),
        ("TCP_NODELAY", libc::IPPROTO_TCP, libc::TCP_NODELAY),
        ("TCP_CORK", libc::IPPROTO_TCP, libc::TCP_CORK),
        ("TCP_KEEPIDLE", libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        ("TCP_KEEPINTVL", libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        ("TCP_KEEPCNT", libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        (
            "TCP_USER_TIMEOUT",
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
        ),
        (
            "TCP_NOTSENT_LOWAT",
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
        ),
        ("TCP_SYNCNT", libc::IPPROTO_TCP, libc::TCP_SYNCNT),
        ("TCP_LINGER2", libc::IPPROTO_TCP, libc::TCP_LINGER2),
        ("IP_TOS", libc::IPPROTO_IP, libc::IP_TOS),
        ("IP_TTL", libc::IPPROTO_IP, libc::IP_TTL),
        ("IPV6_V6ONLY", libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        ("IPV6_TCLASS", libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
        (
            "IPV6_UNICAST_HOPS",
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
        ),
        // netlink (linux/netlink.h): the first word of the groups joined, and options
        ("NETLINK_LIST_MEMBERSHIPS", libc::SOL_NETLINK, 9),
        ("NETLINK_PKTINFO", libc::SOL_NETLINK, 3),
        ("NETLINK_BROADCAST_ERROR", libc::SOL_NETLINK, 4),
        ("NETLINK_NO_ENOBUFS", libc::SOL_NETLINK, 5),
        ("NETLINK_CAP_ACK", libc::SOL_NETLINK, 10),
        ("NETLINK_EXT_ACK", libc::SOL_NETLINK, 11),
        ("NETLINK_GET_STRICT_CHK", libc::SOL_NETLINK, 12),
        // raw and ping sockets: ICMP_FILTER (linux/icmp.h), header inclusion, errors
        ("ICMP_FILTER", libc::SOL_RAW, 1),
        ("IP_HDRINCL", libc::IPPROTO_IP, libc::IP_HDRINCL),
        ("IP_RECVERR", libc::IPPROTO_IP, libc::IP_RECVERR),
    ] {
        r.conf(format!("{k}.sock.{name}"), int_opt(level, opt));
    }
    // Raw and ping sockets hide their connected peer from getpeername (no port): the
    // kernel's tables show it, with the state.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(d, &mut st) } == 0 {
        for table in ["raw", "raw6", "icmp", "icmp6"] {
            let text = fs::read_to_string(format!("/proc/self/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.get(9).and_then(|i| i.parse::<u64>().ok()) == Some(st.st_ino) {
                    r.conf(
                        format!("{k}.sock.proc_net"),
                        format!(
                            "{table} local {} remote {} state {}",
                            f.get(1).unwrap_or(&"?"),
                            f.get(2).unwrap_or(&"?"),
                            f.get(3).unwrap_or(&"?")
                        ),
                    );
                }
            }
        }
    }
    // String and structure options: the congestion control, the bound device, an
    // ICMPv6 socket's type filter.
    for (name, level, opt) in [
        ("TCP_CONGESTION", libc::IPPROTO_TCP, libc::TCP_CONGESTION),
        ("SO_BINDTODEVICE", libc::SOL_SOCKET, libc::SO_BINDTODEVICE),
        ("ICMP6_FILTER", libc::IPPROTO_ICMPV6, 1),
    ] {
        let mut b = [0u8; 64];
        let mut len = b.len() as libc::socklen_t;
        if unsafe { libc::getsockopt(d, level, opt, b.as_mut_ptr().cast(), &mut len) } == 0 {
            let v = &b[..(len as usize).min(b.len())];
            let text = if name == "ICMP6_FILTER" {
                v.iter().map(|x| format!("{x:02x}")).collect::<String>()
            } else {
                let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
                String::from_utf8_lossy(&v[..end]).into_owned()
            };
            r.conf(format!("{k}.sock.{name}"), text);
        }
    }
    let mut ling = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    if unsafe {
        libc::getsockopt(
            d,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut ling as *mut libc::linger).cast(),
            &mut len,
        )
    } == 0
    {
        r.conf(
            format!("{k}.sock.SO_LINGER"),
            format!("{} {}", ling.l_onoff, ling.l_linger),
        );
    }
    for (name, opt) in [
        ("SO_RCVTIMEO", libc::SO_RCVTIMEO),
        ("SO_SNDTIMEO", libc::SO_SNDTIMEO),
    ] {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        if unsafe {
            libc::getsockopt(
                d,
                libc::SOL_SOCKET,
                opt,
                (&mut tv as *mut libc::timeval).cast(),
                &mut len,
            )
        } == 0
        {
            r.conf(
                format!("{k}.sock.{name}"),
                format!("{}.{:06}", tv.tv_sec, tv.tv_usec),
            );
        }
    }
    let mut ti: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    if unsafe {
        libc::getsockopt(
            d,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut libc::tcp_info).cast(),
            &mut len,
        )
    } == 0
    {
        r.conf(format!("{k}.sock.tcp_state"), ti.tcpi_state.to_string());
        // What the connection negotiated (timestamps, SACK, window scaling and the two
        // scales) and its segment size.
        if ti.tcpi_state == 1 {
            let wscale = ti.tcpi_snd_rcv_wscale;
            r.conf(
                format!("{k}.sock.tcp.options"),
                format!("{:#x} wscale {wscale:#x}", ti.tcpi_options & 0x7),
            );
            r.conf(format!("{k}.sock.tcp.snd_mss"), ti.tcpi_snd_mss.to_string());
        }
    }
    // (CLOSE_WAIT, LAST_ACK, CLOSING: the peer's FIN came, nothing more can.)
    let fin_came = len > 0 && matches!(ti.tcpi_state, 8 | 9 | 11);
    let mut inq = None;
    for (name, req) in [("inq", libc::FIONREAD), ("outq", libc::TIOCOUTQ)] {
        let mut v: libc::c_int = 0;
        if unsafe { libc::ioctl(d, req, &mut v as *mut libc::c_int) } == 0 {
            r.prog(format!("{k}.sock.{name}"), v.to_string());
            if name == "inq" {
                inq = Some(v);
            }
        }
    }
    // A TCP socket's shutdown state, and whether a FIN received is still to be read
    // (sock_diag counts it in the receive queue, FIONREAD does not; read once the FIN
    // came, when the queue cannot change under the two reads).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(d, &mut st) } == 0 {
        // A socket whose connection ended (CLOSE): whether it still holds its port
        // (sock_diag lists it, bound but inactive), and what poll shows (POLLERR: an
        // error not read yet; poll does not clear it, as SO_ERROR would).
        if len > 0 && ti.tcpi_state == 7 {
            let listed = r.tcp.get(&st.st_ino).map(|t| t.state);
            r.conf(
                format!("{k}.sock.tcp.listed"),
                listed.map_or("no".into(), |s| format!("state {s}")),
            );
            let mut p = libc::pollfd {
                fd: d,
                events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP,
                revents: 0,
            };
            if unsafe { libc::poll(&mut p, 1, 0) } >= 0 {
                r.conf(format!("{k}.sock.tcp.poll"), format!("{:#x}", p.revents));
            }
        }
        if let Some(t) = r.tcp.get(&st.st_ino).cloned() {
            r.conf(format!("{k}.sock.tcp.shutdown"), t.shutdown.to_string());
            // A listener's rqueue is its accept queue's length: the connections
            // waiting to be accepted; its wqueue the backlog listen() gave.
            if t.state == 10 {
                r.conf(format!("{k}.sock.tcp.accept_queue"), t.rqueue.to_string());
                r.conf(format!("{k}.sock.tcp.backlog"), t.wqueue.to_string());
            }
            if let (Some(n), true) = (inq, fin_came) {
                r.conf(
                    format!("{k}.sock.tcp.fin_unread"),
                    (i64::from(t.rqueue) - i64::from(n)).to_string(),
                );
            }
        }
    }
    let mut ports = [None, None];
    for (name, get) in [
        (
            "sockname",
            libc::getsockname as unsafe extern "C" fn(_, _, _) -> _,
        ),
        ("peername", libc::getpeername),
    ] {
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc = unsafe { get(d, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
        if rc == 0 && matches!(i32::from(ss.ss_family), libc::AF_INET | libc::AF_INET6) {
            // (sin_port and sin6_port are at the same place)
            let a = unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            ports[usize::from(name == "peername")] = Some(u16::from_be(a.sin_port));
        }
        let v = if rc < 0 {
            format!(
                "err {}",
                io::Error::last_os_error().raw_os_error().unwrap_or(0)
            )
        } else {
            sockaddr_text(&ss, len as usize)
        };
        r.conf(format!("{k}.sock.{name}"), v);
    }
    // The client of a connection its listener has not accepted yet: what waits unread
    // on the listener's side (the bytes it sent, and its FIN), from sock_diag.
    if let [Some(local), Some(peer)] = ports {
        if let Some(t) = r.tcp.get(&super::sockdiag::unaccepted_key(peer, local)) {
            r.conf(
                format!("{k}.sock.tcp.unaccepted_rqueue"),
                t.rqueue.to_string(),
            );
        }
    }
}

fn sockaddr_text(ss: &libc::sockaddr_storage, len: usize) -> String {
    let bytes = unsafe {
        std::slice::from_raw_parts((ss as *const libc::sockaddr_storage).cast::<u8>(), len)
    };
    match i32::from(ss.ss_family) {
        libc::AF_UNIX => {
            let path = &bytes[2.min(len)..];
            if path.is_empty() {
                "unix unnamed".into()
            } else if path[0] == 0 {
                format!("unix @{}", String::from_utf8_lossy(&path[1..]))
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                format!("unix {}", String::from_utf8_lossy(&path[..end]))
            }
        }
        libc::AF_INET => {
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            format!(
                "inet {}:{}",
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port)
            )
        }
        libc::AF_INET6 => {
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            format!(
                "inet6 [{}]:{}",
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port)
            )
        }
        f => format!("family {f} {bytes:?}"),
    }
}

/// A terminal's state as its ioctls show it: termios, window size, and for a pty master
/// packet mode and the lock; the bytes waiting to be read.
fn read_tty(r: &mut Reader, k: &str, d: i32) {
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(d, &mut t) } == 0 {
        r.conf(
            format!("{k}.tty.termios"),
            format!(
                "i {:o} o {:o} c {:o} l {:o} line {} cc {:?} speed {}/{}",
                t.c_iflag,
                t.c_oflag,
                t.c_cflag,
                t.c_lflag,
                t.c_line,
                t.c_cc,
                t.c_ispeed,
                t.c_ospeed
            ),
        );
    }
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(d, libc::TIOCGWINSZ, &mut w) } == 0 {
        r.conf(
            format!("{k}.tty.winsize"),
            format!("{}x{} {}x{}", w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel),
        );
    }
    for (name, req) in [
        ("TIOCGPKT", libc::TIOCGPKT),
        ("TIOCGPTLCK", libc::TIOCGPTLCK),
        ("TIOCGEXCL", libc::TIOCGEXCL),
    ] {
        let mut v: libc::c_int = 0;
        let rc = unsafe { libc::ioctl(d, req, &mut v as *mut libc::c_int) };
        r.conf(
            format!("{k}.tty.{name}"),
            if rc == 0 { v.to_string() } else { "err".into() },
        );
    }
    let mut v: libc::c_int = 0;
    if unsafe { libc::ioctl(d, libc::FIONREAD, &mut v as *mut libc::c_int) } == 0 {
        r.prog(format!("{k}.tty.inq"), v.to_string());
    }
}

/// What the oracle records of a POSIX message queue's device, inode and mount when the
/// queue belongs to an IPC namespace of the tree's own.
const OWN_MQUEUE: &str = "(a queue of the tree's own IPC namespace)";

/// Whether `path` (a descriptor of process `base`, "/proc/PID") is a POSIX message
/// queue and that process is in another IPC namespace than the harness.
fn own_ipc_mqueue(base: &str, path: &str) -> bool {
    const MQUEUE_MAGIC: i64 = 0x1980_0202; // linux/magic.h
    let ns = |p: &str| fs::metadata(format!("{p}/ns/ipc")).ok().map(|m| m.ino());
    if ns(base).is_none() || ns(base) == ns("/proc/self") {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs is plain data; all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs the call fills.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == MQUEUE_MAGIC
}
