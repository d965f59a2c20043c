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
//!   F_GET_SEALS, and for sockets their options (SO_*), queue lengths and addresses;
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
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::thread;
use std::time::Duration;

use super::{pid_exists, proc_stat, process_tree, tasks};

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
        self.pids.iter().any(|p| {
            self.get(&format!("p{p}.status.NSpid"))
                .is_some_and(|v| levels(v) > mine)
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.1.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// What may differ

/// Entries that legitimately differ between the original and its restored copy (or the
/// original before and after a `--leave-running` dump). `*` matches any characters.
pub const LEGIT: &[(&str, &str)] = &[
    // accounting that starts over with the new processes, or counts the dump's own work
    (
        "*.stat.utime",
        "CPU time counters restart with the restored processes",
    ),
    ("*.stat.stime", "CPU time counters restart"),
    ("*.stat.cutime", "CPU time of reaped children restarts"),
    ("*.stat.cstime", "CPU time of reaped children restarts"),
    ("*.stat.minflt", "page fault counters restart"),
    ("*.stat.majflt", "page fault counters restart"),
    ("*.stat.cminflt", "page fault counters restart"),
    ("*.stat.cmajflt", "page fault counters restart"),
    (
        "*.stat.starttime",
        "the restored processes start when restored",
    ),
    ("*.stat.processor", "the CPU it last ran on"),
    (
        "*.stat.rss",
        "residency: restore faults in what the image holds",
    ),
    ("*.stat.delayacct", "block I/O delay accounting"),
    (
        "*.status.voluntary_ctxt_switches",
        "context switch counters restart",
    ),
    (
        "*.status.nonvoluntary_ctxt_switches",
        "context switch counters restart",
    ),
    (
        "*.status.VmPeak",
        "high-water mark: includes restore's transient mappings",
    ),
    ("*.status.VmHWM", "high-water mark of residency"),
    ("*.status.VmRSS", "residency"),
    ("*.status.RssAnon", "residency"),
    ("*.status.RssFile", "residency"),
    ("*.status.RssShmem", "residency"),
    ("*.status.VmPTE", "page-table size follows residency"),
    ("*.status.VmSwap", "residency"),
    (
        "*.status.FDSize",
        "descriptor table capacity: inherited from the parent at fork, grows on demand",
    ),
    (
        "*.status.SigQ",
        "queued signals of the whole user (all its processes), not the tree's",
    ),
    // the root is a child of ckpt restore (or of the harness after --detach) in ckpt
    // restore's session and process group (as LEGIT_IMAGE_DIFFS says for the images)
    (
        "*.status.PPid@root",
        "the restored root is a child of ckpt restore",
    ),
    (
        "*.stat.ppid@root",
        "the restored root is a child of ckpt restore",
    ),
    ("*.stat.pgrp", "the tree joins ckpt restore's process group"),
    ("*.stat.session", "the tree joins ckpt restore's session"),
    (
        "*.stat.tpgid",
        "the foreground group of ckpt restore's terminal, if any",
    ),
    (
        "*.status.NSpgid",
        "the tree joins ckpt restore's process group",
    ),
    ("*.status.NSsid", "the tree joins ckpt restore's session"),
    // fds 0-2 leading outside the tree: they are ckpt restore's now (same kind, flags)
    (
        "*.fd[012].stat.ino",
        "an inherited fd 0-2 is ckpt restore's, not the original's",
    ),
    (
        "*.fd[012].fdinfo.mnt_id",
        "an inherited fd 0-2 is ckpt restore's",
    ),
    (
        "*.fd[012].stat.dev",
        "an inherited fd 0-2 is ckpt restore's",
    ),
    // numbers the kernel hands out anew for a recreated object
    (
        "*.fdinfo.eventfd-id",
        "an id allocated per eventfd, like an inode number",
    ),
    (
        "*.stat.ino@anon",
        "inode numbers of recreated pipes, sockets, memfds, deleted files",
    ),
    ("*.sock.cookie", "socket cookies are allocated per socket"),
    (
        "*.sock.SO_SNDBUF@autotuned",
        "a TCP send buffer the program did not set (SO_BUF_LOCK): the kernel sizes it anew for each connection",
    ),
    (
        "*.sock.SO_RCVBUF@autotuned",
        "a TCP receive buffer the program did not set (SO_BUF_LOCK): the kernel sizes it anew",
    ),
    (
        "*.link@ghost",
        "a deleted file whose directory others may write is re-created in a private \
         root-only directory beside it (docs/ARCHITECTURE.md): its path shows that directory",
    ),
    (
        "*.stat.mode@ghost",
        "a re-created deleted file gets no setuid/setgid bit unless its owner is the \
         process's (a crafted image must not make setuid files)",
    ),
    (
        "*.stat.ino@proc",
        "a descriptor on /proc/PID/...: the restored process's /proc entries are new inodes",
    ),
    (
        "*.smaps.*.inode@anon",
        "inode numbers of recreated memfds, SysV segments, deleted files",
    ),
];

/// A difference ckpt is known to lose today (issue 13): the comparison checks that it
/// is still there, so a fix makes the test fail and asks for the entry to go.
pub struct KnownLoss {
    /// The test (its `Ctx` name; `*` matches any characters) whose restore shows it.
    pub test: &'static str,
    /// In which comparison.
    pub cmp: Cmp,
    /// The entry that differs (`*` matches any characters).
    pub key: &'static str,
    pub what: &'static str,
    pub issue: &'static str,
}

/// Every difference ckpt is known to get wrong. One table: never hide a difference
/// elsewhere.
pub const KNOWN_LOSSES: &[KnownLoss] = &[
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.stat.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.status.Name",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.status.SigCgt",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.status.SigIgn",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.limits",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.t*.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.t*.stat.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.t*.status.Name",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.t*.status.SigCgt",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombie_killed_by_sigkill_is_restored",
        cmp: Cmp::Restored,
        key: "p*.t*.status.SigIgn",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_nonblock_of_a_second_pipe_description",
        cmp: Cmp::Restored,
        key: "p*.fd*.fdinfo.flags",
        what: "a pipe's second open file description (opened via /proc/self/fd/N) with O_NONBLOCK: the restored first description has O_NONBLOCK, the second lost it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_nonblock_of_a_second_pipe_description",
        cmp: Cmp::Restored,
        key: "p*.fd*.F_GETFL",
        what: "a pipe's second open file description (opened via /proc/self/fd/N) with O_NONBLOCK: the restored first description has O_NONBLOCK, the second lost it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_nonblock_of_a_second_pipe_description",
        cmp: Cmp::Restored,
        key: "p*.fd*.same_file_as",
        what: "the two open file descriptions of the pipe's read end come back as one (fd 5 shares fd 3's)",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_oom_score_adj",
        cmp: Cmp::Restored,
        key: "p*.oom_score_adj",
        what: "oom_score_adj 500 comes back 0",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_map_noreserve",
        cmp: Cmp::Restored,
        key: "p*.smaps.*",
        what: "a MAP_NORESERVE area loses `nr` (gains `ac`, accounted) and so merges with its neighbour",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_map_droppable",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "a MAP_DROPPABLE area comes back ordinary: `nr ... dp` -> `ac ...`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_thp_disable",
        cmp: Cmp::Restored,
        key: "p*.status.THP_enabled",
        what: "PR_SET_THP_DISABLE lost: THP_enabled 0 -> 1",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_cow_pages_shared_with_a_child",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "private pages shared copy-on-write between parent and fork child come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_memfd_mode",
        cmp: Cmp::Restored,
        key: "p*.fd*.stat.mode",
        what: "a memfd's mode 0642 comes back 0777",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_deleted_file_owner_and_holes",
        cmp: Cmp::Restored,
        key: "p*.fd*.extents",
        what: "a deleted-but-open file with a 1 MiB hole comes back fully allocated",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_deleted_file_owner_and_holes",
        cmp: Cmp::Restored,
        key: "p*.fd*.stat.blocks",
        what: "a deleted-but-open file with a 1 MiB hole comes back fully allocated",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_sigev_thread_timer",
        cmp: Cmp::Restored,
        key: "p*.timers",
        what: "a SIGEV_THREAD timer (glibc: SIGEV_THREAD_ID, signal 32, to its helper thread) comes back notifying the process (`signal/tid.T` -> `signal/pid.P`): signal 32 then kills it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_unix_socketpair_shutdown",
        cmp: Cmp::Restored,
        key: "p*.sock.unix.shutdown",
        what: "shutdown(SHUT_WR) of a unix socketpair lost on both ends",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_pipe_owner_and_signal",
        cmp: Cmp::Restored,
        key: "p*.fd*.owner",
        what: "F_SETOWN/F_SETSIG of a pipe lost",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_pipe_owner_and_signal",
        cmp: Cmp::Restored,
        key: "p*.fd*.F_GETSIG",
        what: "F_SETOWN/F_SETSIG of a pipe lost",
        issue: "issue 13",
    },
    KnownLoss {
        test: "check_and_restore_refuse_an_image_whose_vdso_is_not_this_kernels",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "check_refuses_an_ia32_image_on_a_host_masked_without_ia32",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "ia32_program_continues_after_restore_and_a_second_dump",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "ia32_static_program_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mixed_tree_ia32_parent_of_x86_64_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mixed_tree_x86_64_parent_of_ia32_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "state_of_restored_ia32_program_equals_dumped_state",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "every_restore_step_fails_in_turn_ia32",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "every_restore_step_fails_in_turn_threads",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "node_set_interval_loop_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "python3_threads_with_a_condition_continue_after_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "redis_server_keeps_its_keys_and_its_client_connection",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "locked_securebits_of_another_user_survive_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "process_of_another_user_is_dumped_and_restored",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "securebits_survive_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "threads_8_dumped_leave_running_then_restored_after_the_original_is_killed",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "threads_8_taking_turns_continue_after_restore_and_a_second_dump",
        cmp: Cmp::Restored,
        key: "p*.smaps.*.VmFlags",
        what: "glibc's thread malloc arenas (MAP_NORESERVE) lose `nr` and gain `ac`",
        issue: "issue 13",
    },
    KnownLoss {
        test: "fifo_between_two_processes_keeps_data_in_flight_and_capacity",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "file_locks_are_taken_again_at_restore_and_a_lock_taken_meanwhile_refuses_it",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_mapped_files_leave_nothing_behind",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mapped_memfd_and_deleted_file_stay_shared_after_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_session_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "session_with_two_process_groups_survives_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "fork_tree_4_levels_sharing_anonymous_memory_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "non_default_attributes_survive_restore",
        cmp: Cmp::Restored,
        key: "p*.stat.flags",
        what: "PF_RANDOMIZE: the original ran with ADDR_NO_RANDOMIZE from exec (no PF_RANDOMIZE); the restored process has the personality but PF_RANDOMIZE set, so its new mappings are randomized",
        issue: "issue 13",
    },
    KnownLoss {
        test: "redis_server_keeps_its_keys_and_its_client_connection",
        cmp: Cmp::Restored,
        key: "p*.t*.comm",
        what: "thread names (bio_close_file, jemalloc_bg_thd...) come back as the process's name",
        issue: "issue 13",
    },
    KnownLoss {
        test: "redis_server_keeps_its_keys_and_its_client_connection",
        cmp: Cmp::Restored,
        key: "p*.t*.stat.comm",
        what: "thread names (bio_close_file, jemalloc_bg_thd...) come back as the process's name",
        issue: "issue 13",
    },
    KnownLoss {
        test: "redis_server_keeps_its_keys_and_its_client_connection",
        cmp: Cmp::Restored,
        key: "p*.t*.status.Name",
        what: "thread names (bio_close_file, jemalloc_bg_thd...) come back as the process's name",
        issue: "issue 13",
    },
    KnownLoss {
        test: "node_set_interval_loop_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.fd*.fdinfo.flags",
        what: "stdout/stderr (pipes from outside) lose O_NONBLOCK and close-on-exec that node set on them",
        issue: "issue 13",
    },
    KnownLoss {
        test: "node_set_interval_loop_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.fd*.F_GETFL",
        what: "stdout/stderr (pipes from outside) lose O_NONBLOCK and close-on-exec that node set on them",
        issue: "issue 13",
    },
    KnownLoss {
        test: "process_on_a_pty_is_restored_onto_a_new_pty_with_its_settings_and_job_control",
        cmp: Cmp::Restored,
        key: "p*.fd*.fdinfo.flags",
        what: "fds 0-2 on the new pty (--new-tty) come back close-on-exec (and F_GETFL shows O_CLOEXEC|O_RDWR)",
        issue: "issue 13",
    },
    KnownLoss {
        test: "process_on_a_pty_is_restored_onto_a_new_pty_with_its_settings_and_job_control",
        cmp: Cmp::Restored,
        key: "p*.fd*.F_GETFL",
        what: "fds 0-2 on the new pty (--new-tty) come back close-on-exec (and F_GETFL shows O_CLOEXEC|O_RDWR)",
        issue: "issue 13",
    },
    KnownLoss {
        test: "named_unix_datagram_sockets_and_a_seqpacket_connection_keep_their_queues",
        cmp: Cmp::Restored,
        key: "p*.sock.sockname",
        what: "an abstract unix socket name (@ckpt-e2e-dgname-...-run-l) comes back unnamed, and its peer's peername with it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "named_unix_datagram_sockets_and_a_seqpacket_connection_keep_their_queues",
        cmp: Cmp::Restored,
        key: "p*.sock.unix.name",
        what: "an abstract unix socket name (@ckpt-e2e-dgname-...-run-l) comes back unnamed, and its peer's peername with it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "named_unix_datagram_sockets_and_a_seqpacket_connection_keep_their_queues",
        cmp: Cmp::Restored,
        key: "p*.sock.peername",
        what: "an abstract unix socket name (@ckpt-e2e-dgname-...-run-l) comes back unnamed, and its peer's peername with it",
        issue: "issue 13",
    },
    KnownLoss {
        test: "unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways",
        cmp: Cmp::Restored,
        key: "p*.sock.sockname",
        what: "an autobound unix socket's abstract name (@xxxxx) comes back another",
        issue: "issue 13",
    },
    KnownLoss {
        test: "unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways",
        cmp: Cmp::Restored,
        key: "p*.sock.unix.name",
        what: "an autobound unix socket's abstract name (@xxxxx) comes back another",
        issue: "issue 13",
    },
    KnownLoss {
        test: "unix_dgram_and_seqpacket_pairs_keep_queued_messages_both_ways",
        cmp: Cmp::Restored,
        key: "p*.sock.peername",
        what: "an autobound unix socket's abstract name (@xxxxx) comes back another",
        issue: "issue 13",
    },
    KnownLoss {
        test: "locked_securebits_of_another_user_survive_restore",
        cmp: Cmp::Restored,
        key: "p*.fd*.stat.owner",
        what: "pipes and sockets created by a process of another user (65534) come back owned by root",
        issue: "issue 13",
    },
    KnownLoss {
        test: "process_of_another_user_is_dumped_and_restored",
        cmp: Cmp::Restored,
        key: "p*.fd*.stat.owner",
        what: "pipes and sockets created by a process of another user (65534) come back owned by root",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_thp_disable",
        cmp: Cmp::Restored,
        key: "p*.self.thp_disable",
        what: "PR_GET_THP_DISABLE says 0 after restore",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_clone_files_shared_table",
        cmp: Cmp::Restored,
        key: "p*.shares.files",
        what: "a descriptor table shared with CLONE_FILES comes back as two tables (kcmp KCMP_FILES differs)",
        issue: "issue 13",
    },
    KnownLoss {
        test: "oracle_clone_files_shared_table",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages shared copy-on-write between parent and child come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.status.Name",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.status.SigBlk",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.status.SigCgt",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.status.SigIgn",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.limits",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.comm",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.status.Name",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.status.SigBlk",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.status.SigCgt",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.status.SigIgn",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.limits",
        what: "a restored zombie is a ckpt helper that exited with the status: /proc shows ckpt's name (`ckpt`), signal masks and limits (hard core limit 0) instead of the dead process's",
        issue: "issue 13",
    },
];

/// Does `pat` (with `*` for any characters) match `s`?
pub fn wild(pat: &str, s: &str) -> bool {
    let (p, t) = (pat.as_bytes(), s.as_bytes());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == b'*' {
        i += 1;
    }
    i == p.len()
}

/// Is the difference at `key` legitimate? Patterns with a qualifier: `@root` only for
/// the root's entries; `@anon` only when the object has no stable identity (pipe,
/// socket, anonymous inode, memfd, deleted file, SysV segment).
fn legit(key: &str, before: &Snapshot, after: &Snapshot) -> Option<&'static str> {
    LEGIT.iter().find_map(|(pat, why)| {
        let (p, q) = pat.split_once('@').unwrap_or((pat, ""));
        if !wild(p, key) {
            return None;
        }
        let ok = match q {
            "" => true,
            "root" => key.starts_with(&format!("p{}.", before.root)),
            "anon" => {
                let base = key
                    .rsplit_once(".stat.")
                    .or_else(|| key.rsplit_once(".inode"))
                    .map(|x| x.0)
                    .unwrap_or(key);
                let ident = |s: &Snapshot| {
                    s.get(&format!("{base}.link"))
                        .or_else(|| s.get(&format!("{base}.path")))
                        .unwrap_or("")
                        .to_string()
                };
                [ident(before), ident(after)].iter().all(|l| {
                    l.starts_with("pipe:")
                        || l.starts_with("socket:")
                        || l.starts_with("anon_inode:")
                        || l.starts_with("/memfd:")
                        || l.starts_with("/SYSV")
                        || l.ends_with("(deleted)")
                        || l.is_empty()
                })
            }
            "autotuned" => {
                let (base, opt) = key.rsplit_once(".sock.").unwrap_or((key, ""));
                let bit = if opt == "SO_SNDBUF" { 1 } else { 2 };
                let tcp = |s: &Snapshot| s.get(&format!("{base}.sock.SO_PROTOCOL")) == Some("6");
                let unlocked = |s: &Snapshot| {
                    s.get(&format!("{base}.sock.SO_BUF_LOCK"))
                        .and_then(|v| v.parse::<u32>().ok())
                        .is_some_and(|v| v & bit == 0)
                };
                tcp(before) && tcp(after) && unlocked(before) && unlocked(after)
            }
            "ghost" => {
                let base = key
                    .rsplit_once(".stat.")
                    .map_or_else(|| key.trim_end_matches(".link"), |x| x.0);
                let link = |s: &Snapshot| s.get(&format!("{base}.link")).unwrap_or("").to_string();
                let (lb, la) = (link(before), link(after));
                let deleted = lb.ends_with(" (deleted)") && la.ends_with(" (deleted)");
                if key.ends_with(".link") {
                    deleted && la.contains("/.ckpt-ghost-")
                } else {
                    let mode = |s: &Snapshot| {
                        s.get(key)
                            .and_then(|v| u32::from_str_radix(v, 8).ok())
                            .unwrap_or(0)
                    };
                    deleted && mode(before) & !0o6000 == mode(after)
                }
            }
            "proc" => {
                let base = key.rsplit_once(".stat.").map_or(key, |x| x.0);
                let link = |s: &Snapshot| s.get(&format!("{base}.link")).unwrap_or("").to_string();
                [link(before), link(after)]
                    .iter()
                    .all(|l| l.starts_with("/proc/"))
            }
            _ => false,
        };
        ok.then_some(*why)
    })
}

/// Which comparison: the restored tree against the original, or the original after a
/// `--leave-running` dump against itself before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Restored,
    LeftRunning,
}

/// Compare two snapshots; panics with a list of every difference that is neither
/// legitimate, nor in `allowed` (patterns for what a test changes on purpose), nor a
/// known loss of test `test`; and if a known loss of `test` is no longer there.
pub fn assert_same_kernel_state(
    test: &str,
    what: &str,
    cmp: Cmp,
    before: &Snapshot,
    after: &Snapshot,
    allowed: &[&str],
) {
    let still = before.still() && after.still();
    let keys: BTreeSet<&String> = before.entries.keys().chain(after.entries.keys()).collect();
    let mut bad = Vec::new();
    let mut known_seen = BTreeSet::new();
    let mut skipped = 0usize;
    let mut unverified = 0usize;
    let known: Vec<(usize, &KnownLoss)> = KNOWN_LOSSES
        .iter()
        .enumerate()
        .filter(|(_, k)| wild(k.test, test) && k.cmp == cmp)
        .collect();
    let mut known_compared = BTreeSet::new();
    for k in keys {
        let a = before.entries.get(k);
        let b = after.entries.get(k);
        let progress = a.or(b).is_some_and(|e| e.0 == Kind::Progress);
        // a running program maps and unmaps memory as it goes: areas that are not on
        // both sides are compared only when the tree was at rest on both
        // ([vsyscall] is the kernel's, at a fixed address: never moves)
        let moving_area = !still
            && k.contains(".smaps.")
            && !k.contains(".smaps.ffffffffff600000-")
            && (a.is_none() || b.is_none());
        let unchecked = before.volatile.contains(k)
            || after.volatile.contains(k)
            || moving_area
            || (progress && (!still || cmp == Cmp::LeftRunning));
        if unchecked {
            skipped += 1;
            continue;
        }
        for (i, kl) in &known {
            if wild(kl.key, k) {
                known_compared.insert(*i);
            }
        }
        if a.map(|e| &e.1) == b.map(|e| &e.1) {
            continue;
        }
        if legit(k, before, after).is_some() || allowed.iter().any(|p| wild(p, k)) {
            continue;
        }
        let show = |e: Option<&(Kind, String)>| e.map_or("(absent)".to_string(), |e| e.1.clone());
        let line = format!("{k}: {:?} -> {:?}", show(a), show(b));
        if before.busy {
            // read while running, right before the dump: the program may have changed
            // this in the moment before the dump froze it; shown, not judged
            unverified += 1;
            if unverified <= 20 {
                eprintln!("{what}: not judged (the original was running when read): {line}");
            }
            continue;
        }
        let matching: Vec<usize> = known
            .iter()
            .filter(|(_, kl)| wild(kl.key, k))
            .map(|(i, _)| *i)
            .collect();
        if !matching.is_empty() {
            eprintln!(
                "{what}: known loss ({}): {line}",
                KNOWN_LOSSES[matching[0]].issue
            );
            known_seen.extend(matching);
            continue;
        }
        bad.push(line);
    }
    if !before.busy {
        let mut tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
        for i in known_compared {
            tally.entry(i).or_default().0 = true;
        }
        for i in known_seen {
            tally.entry(i).or_default().1 = true;
        }
    }
    eprintln!(
        "{what}: state oracle compared {} entries of {} processes ({} not compared: moving \
         or volatile; {} differences not judged: the original was running when read; tree \
         {})",
        before.entries.len(),
        before.pids.len(),
        skipped,
        unverified,
        if still { "still" } else { "running" }
    );
    assert!(
        bad.is_empty(),
        "{what}: the state oracle sees {} difference(s) between the original and the {} \
         tree:\n  {}",
        bad.len(),
        if cmp == Cmp::Restored {
            "restored"
        } else {
            "left-running"
        },
        bad.join("\n  "),
    );
}

/// Per entry of [`KNOWN_LOSSES`]: (its entry was compared, it differed), over the
/// comparisons of this test process.
static TALLY: std::sync::Mutex<BTreeMap<usize, (bool, bool)>> =
    std::sync::Mutex::new(BTreeMap::new());

/// At the end of test `test` (from `Ctx`'s drop): every known loss of the test that a
/// comparison could check must have shown up in at least one of them; one that did not
/// is fixed, and its entry must go.
pub fn assert_known_losses_still_there(test: &str) {
    let tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    let gone: Vec<String> = KNOWN_LOSSES
        .iter()
        .enumerate()
        .filter(|(i, k)| wild(k.test, test) && tally.get(i).is_some_and(|t| t.0 && !t.1))
        .map(|(_, k)| format!("{} ({:?}, {}: {})", k.key, k.cmp, k.issue, k.what))
        .collect();
    assert!(
        gone.is_empty(),
        "{test}: known losses (KNOWN_LOSSES in tests/common/oracle.rs) that the state oracle \
         compared and found no longer there: fixed? then remove their entries:\n  {}",
        gone.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Reading

type Entries = BTreeMap<String, (Kind, String)>;

struct Reader {
    e: Entries,
    /// pipe/socket inode -> the first "pPID.fdN" holding it
    labels: BTreeMap<String, String>,
    unix: BTreeMap<u64, UnixDiag>,
}

impl Reader {
    fn put(&mut self, k: String, kind: Kind, v: impl Into<String>) {
        self.e.insert(k, (kind, v.into()));
    }
    fn conf(&mut self, k: String, v: impl Into<String>) {
        self.put(k, Kind::Config, v);
    }
    fn prog(&mut self, k: String, v: impl Into<String>) {
        self.put(k, Kind::Progress, v);
    }
}

fn read_tree(root: i32) -> (Entries, Vec<i32>) {
    let pids = process_tree(root);
    let mut r = Reader {
        e: BTreeMap::new(),
        labels: BTreeMap::new(),
        unix: unix_diag().unwrap_or_default(),
    };
    for &pid in &pids {
        read_process(&mut r, pid);
    }
    read_sharing(&mut r, &pids);
    (r.e, pids)
}

/// Status lines that change as the task runs.
const STATUS_PROGRESS: &[&str] = &["State", "SigPnd", "ShdPnd"];
/// Status lines that are not state of the task (or repeat what other entries show).
const STATUS_SKIP: &[&str] = &["Pid", "Tgid", "NStgid", "Kthread"];

fn read_status(r: &mut Reader, pfx: &str, path: &str) {
    let Ok(s) = fs::read_to_string(path) else {
        return;
    };
    for l in s.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if STATUS_SKIP.contains(&k) {
            continue;
        }
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
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
            } else if f == "mountinfo" {
                // which mounts it sees (ids and options), one line each
                s.lines()
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

    /// Anonymous (no file, no name), so that the kernel would merge it with a neighbour
    /// of the same protections and flags.
    fn anonymous(&self) -> bool {
        self.field("path").is_empty() && self.field("inode") == "0"
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
                let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
                cur.fields.push((k.to_string(), v));
            }
        }
    }
    // Two adjacent anonymous areas with the same protections and flags that the kernel
    // kept apart (a program's .bss and the heap after it, areas split by an earlier
    // mprotect) are one area after restore, which maps them with separate mmaps the
    // kernel merges (a known difference, docs/ARCHITECTURE.md): the same memory, the
    // same protections. Compare them merged on both sides.
    let mut merged: Vec<Area> = Vec::new();
    for a in areas {
        if let Some(prev) = merged.last_mut() {
            if prev.end == a.start
                && prev.anonymous()
                && a.anonymous()
                && prev.field("perms") == a.field("perms")
                && prev.field("VmFlags") == a.field("VmFlags")
                && prev.field("ProtectionKey") == a.field("ProtectionKey")
            {
                prev.end = a.end;
                let kb = |x: &Area| {
                    x.field("Size")
                        .trim_end_matches(" kB")
                        .parse::<u64>()
                        .unwrap_or(0)
                };
                let size = format!("{} kB", kb(prev) + kb(&a));
                for (n, v) in prev.fields.iter_mut() {
                    if n == "Size" {
                        *v = size.clone();
                    }
                }
                continue;
            }
        }
        merged.push(a);
    }
    for a in merged {
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

fn read_fds(r: &mut Reader, pid: i32) {
    let base = format!("/proc/{pid}");
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
        if let Ok(m) = fs::metadata(format!("{base}/fd/{fd}")) {
            r.conf(format!("{k}.stat.mode"), format!("{:o}", m.mode()));
            r.conf(
                format!("{k}.stat.owner"),
                format!("{}:{}", m.uid(), m.gid()),
            );
            r.conf(format!("{k}.stat.nlink"), m.nlink().to_string());
            r.conf(format!("{k}.stat.ino"), m.ino().to_string());
            r.conf(format!("{k}.stat.dev"), format!("{:x}", m.dev()));
            if m.is_file() {
                r.prog(format!("{k}.stat.size"), m.size().to_string());
                r.prog(format!("{k}.stat.blocks"), m.blocks().to_string());
                if let Some(x) = extents(&format!("{base}/fd/{fd}")) {
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
        // kernel lists them in the order of its trees); other repeated lines numbered
        let i = n.entry(name.clone()).or_insert(0);
        let key = if name == "tfd" || name == "inotify wd" || name == "inotify" {
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
    ] {
        r.conf(format!("{k}.sock.{name}"), int_opt(level, opt));
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
    }
    for (name, req) in [("inq", libc::FIONREAD), ("outq", libc::TIOCOUTQ)] {
        let mut v: libc::c_int = 0;
        if unsafe { libc::ioctl(d, req, &mut v as *mut libc::c_int) } == 0 {
            r.prog(format!("{k}.sock.{name}"), v.to_string());
        }
    }
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

// ---------------------------------------------------------------------------------------
// sock_diag for unix sockets (a small netlink client of the harness's own)

#[derive(Clone, Debug, Default)]
struct UnixDiag {
    kind: u8,
    state: u8,
    shutdown: u8,
    peer: u64,
    rqlen: u32,
    wqlen: u32,
    name: String,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_RQLEN: u32 = 16;

fn unix_diag() -> Option<BTreeMap<u64, UnixDiag>> {
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if s < 0 {
        return None;
    }
    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // all states
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
    req[28..32].copy_from_slice(&show.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let sent = unsafe { libc::send(s, req.as_ptr().cast(), req.len(), 0) };
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 65536];
    let mut done = sent < 0;
    while !done {
        let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let mut m = &buf[..n as usize];
        while m.len() >= 16 {
            let len = u32::from_ne_bytes(m[0..4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(m[4..6].try_into().unwrap_or_default());
            if len < 16 || len > m.len() {
                break;
            }
            if ty == libc::NLMSG_DONE as u16 || ty == libc::NLMSG_ERROR as u16 {
                done = true;
                break;
            }
            let body = &m[16..len];
            if body.len() >= 16 {
                let mut d = UnixDiag {
                    kind: body[1],
                    state: body[2],
                    ..UnixDiag::default()
                };
                let ino = u64::from(u32::from_ne_bytes(
                    body[4..8].try_into().unwrap_or_default(),
                ));
                let mut a = &body[16..];
                while a.len() >= 4 {
                    let alen = u16::from_ne_bytes([a[0], a[1]]) as usize;
                    let aty = u16::from_ne_bytes([a[2], a[3]]);
                    if alen < 4 || alen > a.len() {
                        break;
                    }
                    let p = &a[4..alen];
                    match aty {
                        0 => {
                            d.name = if p.first() == Some(&0) {
                                format!("@{}", String::from_utf8_lossy(&p[1..]))
                            } else {
                                String::from_utf8_lossy(p)
                                    .trim_end_matches('\0')
                                    .to_string()
                            }
                        }
                        2 if p.len() >= 4 => {
                            d.peer = u64::from(u32::from_ne_bytes(
                                p[0..4].try_into().unwrap_or_default(),
                            ))
                        }
                        4 if p.len() >= 8 => {
                            d.rqlen = u32::from_ne_bytes(p[0..4].try_into().unwrap_or_default());
                            d.wqlen = u32::from_ne_bytes(p[4..8].try_into().unwrap_or_default());
                        }
                        6 if !p.is_empty() => d.shutdown = p[0],
                        _ => {}
                    }
                    let step = (alen + 3) & !3;
                    a = &a[step.min(a.len())..];
                }
                out.insert(ino, d);
            }
            let step = (len + 3) & !3;
            m = &m[step.min(m.len())..];
        }
    }
    unsafe { libc::close(s) };
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Sharing: kcmp between processes and descriptors, pages shared between processes

const KCMP_FILE: i32 = 0;
const KCMP_KINDS: &[(&str, i32)] = &[
    ("vm", 1),
    ("files", 2),
    ("fs", 3),
    ("sighand", 4),
    ("io", 5),
    ("sysvsem", 6),
];

fn kcmp(a: i32, b: i32, ty: i32, x: u64, y: u64) -> Option<i64> {
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, ty, x, y) };
    (r >= 0).then_some(r)
}

fn fd_numbers(r: &Reader, pid: i32) -> Vec<i32> {
    r.e.get(&format!("p{pid}.fds"))
        .map(|v| {
            v.1.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn read_sharing(r: &mut Reader, pids: &[i32]) {
    // each process: the first process of the tree it shares each resource with
    for (i, &a) in pids.iter().enumerate() {
        for (name, ty) in KCMP_KINDS {
            let first = pids[..i]
                .iter()
                .find(|&&b| kcmp(a, b, *ty, 0, 0) == Some(0))
                .map_or("own".to_string(), |b| format!("p{b}"));
            r.conf(format!("p{a}.shares.{name}"), first);
        }
    }
    // each descriptor: the first descriptor of the tree with the same open file
    // description
    let all: Vec<(i32, i32)> = pids
        .iter()
        .flat_map(|&p| fd_numbers(r, p).into_iter().map(move |f| (p, f)))
        .collect();
    for (i, &(p, f)) in all.iter().enumerate() {
        let first = all[..i]
            .iter()
            .find(|&&(q, g)| kcmp(p, q, KCMP_FILE, f as u64, g as u64) == Some(0))
            .map_or("own".to_string(), |(q, g)| format!("p{q}.fd{g}"));
        r.conf(format!("p{p}.fd{f}.same_file_as"), first);
    }
    read_page_sharing(r, pids);
}

/// The frame number of the zero page (what a read fault of fresh anonymous memory maps).
fn zero_pfn() -> Option<u64> {
    static Z: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *Z.get_or_init(|| {
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let _ = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
        let e = pagemap_entries(std::process::id() as i32, p as u64, 1);
        unsafe { libc::munmap(p, 4096) };
        e.first().map(|e| e & ((1 << 55) - 1)).filter(|&f| f != 0)
    })
}

fn pagemap_entries(pid: i32, start: u64, pages: usize) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let Ok(f) = fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; pages * 8];
    if f.read_exact_at(&mut buf, start / 4096 * 8).is_err() {
        return Vec::new();
    }
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// For each anonymous area (no file behind it) of each process: how many of its present
/// pages are the very frames another process of the tree maps at the same address.
fn read_page_sharing(r: &mut Reader, pids: &[i32]) {
    if pids.len() < 2 {
        return;
    }
    let zero = zero_pfn();
    // pid -> (area, page address -> pfn)
    let mut frames: BTreeMap<i32, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
    for &pid in pids {
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let m = frames.entry(pid).or_default();
        for l in maps.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[4] != "0" || f.get(5).is_some_and(|p| p.starts_with("[v")) {
                continue;
            }
            let Some((a, b)) = f[0].split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                continue;
            };
            let n = ((b - a) / 4096) as usize;
            if n > 1 << 18 {
                continue;
            }
            for (i, e) in pagemap_entries(pid, a, n).into_iter().enumerate() {
                let pfn = e & ((1 << 55) - 1);
                if e >> 63 == 1 && pfn != 0 && Some(pfn) != zero {
                    m.insert(a + i as u64 * 4096, (f[0].to_string(), pfn));
                }
            }
        }
    }
    for (i, &a) in pids.iter().enumerate() {
        for &b in &pids[i + 1..] {
            let (Some(fa), Some(fb)) = (frames.get(&a), frames.get(&b)) else {
                continue;
            };
            let mut per_area: BTreeMap<&str, usize> = BTreeMap::new();
            for (addr, (area, pfn)) in fa {
                if fb.get(addr).is_some_and(|x| x.1 == *pfn) {
                    *per_area.entry(area).or_default() += 1;
                }
            }
            for (area, n) in per_area {
                r.prog(
                    format!("p{a}.smaps.{area}.pages_shared_with_p{b}"),
                    n.to_string(),
                );
            }
        }
    }
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
