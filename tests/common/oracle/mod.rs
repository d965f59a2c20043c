//! An independent state oracle: what the kernel shows about a process tree, read without
//! any of ckpt's code, so that a restore that exits 0 but differs from the original in
//! something ckpt never recorded is caught (issue 13).
//!
//! [`Snapshot::take`] reads, for every process of the tree and every thread:
//! - `/proc/PID/{status, stat, smaps (with VmFlags), limits, oom_score_adj, personality,
//!   timerslack_ns, sched (policy, prio), cgroup, environ, cmdline, auxv, comm, timers}`,
//!   `cwd`, `root`, `exe`; per thread `task/TID/{status, stat}`;
//! - per descriptor: what `/proc/PID/fd/N` leads to (pipe and socket inodes replaced by
//!   the first descriptor of the tree that holds them), `fdinfo` (flags, pos, mnt_id and
//!   each kind's lines: eventfd-count, tfd, inotify, timerfd, signalfd...), the file's
//!   mode, owner, link count, size, blocks and data extents (SEEK_DATA/SEEK_HOLE), and,
//!   on a duplicate taken with `pidfd_getfd`: F_GETOWN_EX, F_GETSIG, F_GETFL, F_GETPIPE_SZ,
//!   F_GET_SEALS, for sockets their options (SO_*), queue lengths and addresses, and for
//!   terminals (/dev/pts/N, /dev/ptmx, /dev/tty) termios, window size, packet mode, lock,
//!   exclusive mode and bytes to read;
//! - for unix sockets, `sock_diag` (state, shutdown, queues, peer) through a small netlink
//!   client of its own;
//! - the sharing between tasks and descriptors: `kcmp` VM/FILES/FS/SIGHAND/IO/SYSVSEM
//!   between processes, KCMP_FILE between descriptors (which ones are one open file
//!   description), and pages shared between processes (same frame at the same address in
//!   `/proc/PID/pagemap`, zero page excepted).
//!
//! Entries are either *configuration* (set once by the program: flags, masks, limits...)
//! or *progress* (what changes as the program runs: positions, counters, pending signals,
//! queue lengths, states). The restored tree is read twice a moment apart: entries that
//! changed between the readings are volatile and not compared. The original is read once,
//! right before the dump (a second reading would delay the dump). Progress entries are
//! compared only when both sides were at rest (no task running, nothing moving, the
//! restored program printed nothing yet), i.e. at the same quiescent point; when the
//! original was running as it was read, differences are printed but not judged.
//!
//! Differences fail unless they are on [`LEGIT`] (short, each with its reason) or on
//! [`KNOWN_LOSSES`] (real bugs of ckpt, issue 13), whose difference must still be there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::Duration;

use super::{pid_exists, proc_stat, process_tree, tasks};

mod compare;
mod known;
mod sharing;
mod snapshot;
mod sockdiag;

pub use compare::*;
pub use known::*;
#[allow(unused_imports)] // (used by some test crates only)
pub use sharing::ns_owner;
use sharing::*;
use snapshot::*;
use sockdiag::*;

/// Whether an entry is set up once or moves as the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Progress,
}

/// What the kernel shows about a tree.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub root: i32,
    /// The tree's processes, parents first.
    pub pids: Vec<i32>,
    /// Every entry: "p123.fd4.flags" -> (kind, value).
    pub entries: BTreeMap<String, (Kind, String)>,
    /// Entries that changed between the two readings (not compared).
    pub volatile: BTreeSet<String>,
    /// The tree went on from the point of interest (see [`Snapshot::moved`]).
    pub moved: bool,
    /// A single reading ([`Snapshot::take_once`]) that found a task running: the tree
    /// may have changed anything before the point of interest (the dump's freeze).
    pub busy: bool,
}

impl Snapshot {
    /// One reading of the tree rooted at `root` (a few ms: what is taken right before a
    /// dump, which must not be delayed). Whether the tree was at rest is then only told
    /// by its tasks' states (none running).
    pub fn take_once(root: i32) -> Snapshot {
        let (entries, pids) = read_tree(root);
        let busy = entries
            .iter()
            .any(|(k, v)| k.ends_with(".stat.state") && (v.1 == "R" || v.1 == "D"));
        Snapshot {
            root,
            pids,
            entries,
            volatile: BTreeSet::new(),
            moved: busy,
            busy,
        }
    }

    /// Two readings of the tree rooted at `root`, 30 ms apart.
    pub fn take(root: i32) -> Snapshot {
        let a = read_tree(root);
        thread::sleep(Duration::from_millis(30));
        let b = read_tree(root);
        let keys: BTreeSet<&String> = a.0.keys().chain(b.0.keys()).collect();
        let volatile = keys
            .into_iter()
            .filter(|k| a.0.get(*k) != b.0.get(*k))
            .cloned()
            .collect();
        Snapshot {
            root,
            pids: b.1,
            entries: b.0,
            volatile,
            moved: false,
            busy: false,
        }
    }

    /// The snapshot of the tree of `pid` once it is at rest ([`Snapshot::still`]),
    /// taken again until it is (the harness's timeout at most).
    pub fn at_rest(pid: i32, what: &str) -> Snapshot {
        let deadline = std::time::Instant::now() + super::timeout();
        loop {
            let s = Snapshot::take(pid);
            if s.still() {
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

    /// True when the tree was at rest: no progress entry moved between the two readings,
    /// no task was running, and nothing says it went on meanwhile ([`Snapshot::moved`]).
    pub fn still(&self) -> bool {
        !self.moved
            && !self
                .volatile
                .iter()
                .any(|k| self.entries.get(k).is_none_or(|e| e.0 == Kind::Progress))
            && !self
                .entries
                .iter()
                .any(|(k, v)| k.ends_with(".stat.state") && (v.1 == "R" || v.1 == "D"))
    }

    /// Mark the tree as having gone on from where it was (e.g. a restored program that
    /// printed something before it was read): its progress entries are not compared.
    pub fn moved(mut self, moved: bool) -> Snapshot {
        self.moved |= moved;
        self
    }

    /// Every process of the snapshot still exists, and is no zombie unless it was one.
    pub fn all_alive(&self) -> bool {
        self.pids.iter().all(|&p| {
            let was_zombie = self.get(&format!("p{p}.stat.state")) == Some("Z");
            pid_exists(p) && proc_stat(p).is_some_and(|s| s.0 != 'Z' || was_zombie)
        })
    }

    /// Add what the task said of itself (a line `report: k=v k=v...` of a cooperative
    /// target, for what only the task can tell: prctl values...) as `pPID.self.k`.
    pub fn with_report(mut self, pid: i32, line: &str) -> Snapshot {
        let line = line.trim().strip_prefix("report:").unwrap_or(line);
        for kv in line.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                self.entries
                    .insert(format!("p{pid}.self.{k}"), (Kind::Config, v.to_string()));
            }
        }
        self
    }

    /// The tree has a PID namespace of its own (its processes have more PIDs than the
    /// harness): ckpt restores it in a new one, where its PIDs seen from here differ.
    pub fn own_pid_namespace(&self) -> bool {
        let levels = |s: &str| s.split_whitespace().count();
        let mine = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("NSpid:").map(levels)))
            .unwrap_or(1);
        // (The root's: processes of a PID namespace nested inside the tree have more.)
        self.get(&format!("p{}.status.NSpid", self.root))
            .is_some_and(|v| levels(v) > mine)
    }

    /// The tree runs one PID namespace below the harness (its own, its root the init, or
    /// one without its init): ckpt restores it into a new namespace where its IDs inside
    /// are the same (see [`Snapshot::as_seen_in_its_pid_namespace`]).
    pub fn one_pid_namespace_down(&self) -> bool {
        let mine = harness_pidns_levels();
        let ids = |p: i32| -> Vec<String> {
            self.get(&format!("p{p}.status.NSpid"))
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        // (Processes of a PID namespace nested inside the tree have more IDs.)
        !self.pids.is_empty()
            && ids(self.root).len() == mine + 1
            && self.pids.iter().all(|&p| ids(p).len() > mine)
    }

    /// The snapshot with every host ID of the tree (in keys: `pN`, `tN`; in values: the
    /// sharing entries' `pN`, parents' IDs, NSpid, NSpgid, NSsid, owners, a pidfd's Pid
    /// and NSpid, the threads POSIX timers signal) replaced by the
    /// ID the tree's own PID namespace gives it, and IDs of processes outside the tree
    /// (the root's parent) by `outside`: what two runs of one tree in two PID namespaces
    /// have in common, for a tree restored into a new namespace with the same IDs inside.
    pub fn as_seen_in_its_pid_namespace(&self) -> Snapshot {
        self.as_seen_levels_below(1)
    }

    /// [`Snapshot::as_seen_in_its_pid_namespace`] for a tree `depth` PID namespaces
    /// below the harness's (a copy forked from a template: 2, its namespace being a
    /// child of the template's).
    pub fn as_seen_levels_below(&self, depth: usize) -> Snapshot {
        // (The ID `depth` levels below ours: a process of a namespace nested inside the
        // tree has more, which stay as they are.)
        let level = harness_pidns_levels() + depth.saturating_sub(1);
        let inner = |v: &str| {
            v.split_whitespace()
                .nth(level)
                .and_then(|x| x.parse::<i32>().ok())
        };
        let mut map: BTreeMap<i32, i32> = BTreeMap::new();
        for (k, (_, v)) in &self.entries {
            let Some(head) = k.strip_suffix(".status.NSpid") else {
                continue;
            };
            let host = head
                .rsplit('.')
                .next()
                .and_then(|seg| seg.strip_prefix('p').or_else(|| seg.strip_prefix('t')))
                .and_then(|n| n.parse::<i32>().ok());
            if let (Some(h), Some(i)) = (host, inner(v)) {
                map.insert(h, i);
            }
        }
        let id = |h: &str| -> String {
            h.parse::<i32>()
                .ok()
                .and_then(|h| map.get(&h))
                .map_or("outside".to_string(), |i| i.to_string())
        };
        let seg = |s: &str| -> String {
            for pfx in ["pages_shared_with_p", "p", "t", "fd"] {
                if let Some(n) = s.strip_prefix(pfx) {
                    if pfx != "fd" && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                        return format!("{pfx}{}", id(n));
                    }
                    if pfx == "fd" || n.is_empty() {
                        break;
                    }
                }
            }
            s.to_string()
        };
        let path = |s: &str| s.split('.').map(seg).collect::<Vec<_>>().join(".");
        // `pN` inside a value (a pipe's label `pipe:[pN.fdM]`): N rewritten when it is a
        // process of the tree.
        let labels = |v: &str| -> String {
            let b = v.as_bytes();
            let mut out = String::new();
            let mut i = 0;
            while i < b.len() {
                let starts = b[i] == b'p' && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
                let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if starts && n > 0 {
                    let digits = &v[i + 1..i + 1 + n];
                    match digits.parse::<i32>().ok().and_then(|h| map.get(&h)) {
                        Some(inner) => out.push_str(&format!("p{inner}")),
                        None => out.push_str(&v[i..i + 1 + n]),
                    }
                    i += 1 + n;
                } else {
                    let ch = v[i..].chars().next().unwrap_or(' ');
                    out.push(ch);
                    i += ch.len_utf8();
                }
            }
            out
        };
        let tail = |v: &str| v.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        let mut entries = BTreeMap::new();
        for (k, (kind, v)) in &self.entries {
            let v = if k.ends_with(".status.PPid")
                || k.ends_with(".stat.ppid")
                || k.ends_with(".fdinfo.Pid")
            {
                id(v)
            } else if k.ends_with(".stat.pgrp")
                || k.ends_with(".stat.session")
                || k.ends_with(".stat.tpgid")
            {
                if v.starts_with('-') { v.clone() } else { id(v) }
            } else if k.ends_with(".status.NSpid")
                || k.ends_with(".fdinfo.NSpid")
                || k.ends_with(".status.NSpgid")
                || k.ends_with(".status.NSsid")
            {
                tail(v)
            } else if k.ends_with(".timers") {
                // "notify: signal/tid.N" (or pid.N): the thread or process a timer
                // signals
                v.lines()
                    .map(|l| match l.rsplit_once('.') {
                        Some((head, n)) if l.starts_with("notify:") => format!("{head}.{}", id(n)),
                        _ => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if k.ends_with(".owner") && k.contains(".ns.") {
                // a namespace's owner: "pN.user", the user namespace of process N
                labels(v)
            } else if k.ends_with(".owner") {
                v.split_whitespace()
                    .map(|w| match w.parse::<i32>() {
                        Ok(h) if map.contains_key(&h) => id(w),
                        _ => w.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else if k.contains(".shares.") || k.contains(".ns.") || k.ends_with(".same_file_as") {
                path(v)
            } else {
                labels(v)
            };
            entries.insert(path(k), (*kind, v));
        }
        let m = |p: &i32| map.get(p).copied().unwrap_or(0);
        Snapshot {
            root: m(&self.root),
            pids: self.pids.iter().map(m).collect(),
            entries,
            volatile: self.volatile.iter().map(|k| path(k)).collect(),
            moved: self.moved,
            busy: self.busy,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.1.as_str())
    }
}

/// How many PID namespaces deep the harness runs (1 in the initial one).
fn harness_pidns_levels() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("NSpid:")
                    .map(|v| v.split_whitespace().count())
            })
        })
        .unwrap_or(1)
}

/// The tree of `before` (see [`Snapshot::one_pid_namespace_down`]) restored below
/// `restore` (ckpt restore's PID, or the restored root's after `--detach`) into a new
/// PID namespace: the host PID of its root once
/// every process of it exists there with its ID inside, untraced, with its program and
/// its number of threads.
pub fn restored_tree_in_pid_namespace(before: &Snapshot, restore: i32) -> Option<i32> {
    let b = before.as_seen_in_its_pid_namespace();
    let level = harness_pidns_levels();
    let inner = |p: i32| {
        fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|v| v.split_whitespace().nth(level))
                    .and_then(|x| x.parse::<i32>().ok())
            })
    };
    let tree = process_tree(restore);
    // (`restore` is the root itself for a detached restore: ckpt has exited)
    let root = tree
        .iter()
        .copied()
        .find(|&p| p != restore && inner(p) == Some(b.root))
        .or_else(|| (inner(restore) == Some(b.root)).then_some(restore))?;
    let ours = process_tree(root);
    let ids: Vec<i32> = ours.iter().filter_map(|&p| inner(p)).collect();
    let up = ids == b.pids
        && ours.iter().all(|&p| {
            let i = inner(p).unwrap_or(0);
            let k = |f: &str| b.get(&format!("p{i}.{f}")).map(str::to_string);
            let threads = fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let close = s.rfind(')')?;
                    s[close + 1..]
                        .split_whitespace()
                        .nth(17)
                        .map(str::to_string)
                });
            let exe = fs::read_link(format!("/proc/{p}/exe"))
                .ok()
                .map(|e| e.to_string_lossy().into_owned());
            threads == k("stat.num_threads")
                && exe == k("exe")
                && super::tracer_pid(p) == Some(0)
                && !behind_release_gate(&b, i, p)
        });
    up.then_some(root)
}

/// Whether a thread of process `p` (`i` in its PID namespace) still waits behind ckpt's
/// release gate (`restore::gate::park_at_gate`): untraced, but blocking every signal
/// (all but SIGKILL and SIGSTOP), which no thread of the original did.
fn behind_release_gate(before: &Snapshot, i: i32, p: i32) -> bool {
    const GATE_MASK: &str = "fffffffffffbfeff";
    let prefix = format!("p{i}.");
    let had = before
        .entries
        .iter()
        .any(|(k, v)| k.starts_with(&prefix) && k.ends_with("status.SigBlk") && v.1 == GATE_MASK);
    let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
        return false;
    };
    !had && tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .is_some_and(|v| v.trim() == GATE_MASK)
        })
    })
}

/// The tree of `before` runs again, restored: each of its processes exists anew (started
/// after the original), untraced, with its program and its number of threads.
pub fn restored_tree_up(before: &Snapshot) -> bool {
    if before.own_pid_namespace() {
        return false;
    }
    before.pids.iter().all(|&p| {
        let k = |f: &str| before.get(&format!("p{p}.{f}")).map(str::to_string);
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let started = f.get(19).map(|s| s.to_string());
        let threads = f.get(17).map(|s| s.to_string());
        let exe = fs::read_link(format!("/proc/{p}/exe"))
            .ok()
            .map(|e| e.to_string_lossy().into_owned());
        if k("stat.state").as_deref() == Some("Z") {
            // a zombie of the tree comes back a zombie
            return f.first() == Some(&"Z");
        }
        f.first() != Some(&"Z")
            && started != k("stat.starttime")
            && threads == k("stat.num_threads")
            && exe == k("exe")
            && super::tracer_pid(p) == Some(0)
    })
}
