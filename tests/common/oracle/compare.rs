//! What may differ ([`LEGIT`]) and the comparison of two snapshots.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

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
        "*.stat.tpgid@outside_tty",
        "the foreground group of ckpt restore's terminal, if any (a pty of the tree is compared)",
    ),
    (
        "*.status.NSpgid",
        "the tree joins ckpt restore's process group",
    ),
    ("*.status.NSsid", "the tree joins ckpt restore's session"),
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
        "*.status.State@runnable",
        "running or sleeping at the moment it was read: scheduling, not the program's state",
    ),
    (
        "*.stat.state@runnable",
        "running or sleeping at the moment it was read: scheduling, not the program's state",
    ),
    (
        "*.sock.outq@tcp",
        "bytes a TCP connection sent and the peer has not acknowledged yet: the peer \
         acknowledges (or the restored socket retransmits) at its own pace",
    ),
    (
        "*.sock.tcp.snd_mss@mss_cap",
        "a connection on a path whose MTU is above 32 KiB (loopback) comes back with a \
         segment size of 32755, the most TCP_MAXSEG gives a connect in repair mode \
         (README, \"Known to come back different\")",
    ),
    (
        "*.sock.inq@tcp",
        "bytes a live TCP peer sent meanwhile, not read yet",
    ),
    (
        "*.stat.ino@proc",
        "a descriptor on /proc/PID/...: the restored process's /proc entries are new inodes",
    ),
    (
        "*.smaps.*.inode@anon",
        "inode numbers of recreated memfds, SysV segments, deleted files",
    ),
    (
        "*.pages_shared_with_p*@dumpframe",
        "the dump's injected calls run through a signal frame it writes below each \
         thread's stack pointer: a page of a stack (the main one, or a thread's in an \
         anonymous area) still shared copy-on-write with a fork relative becomes the \
         thread's own as the dump writes it (one or two pages on each side of a pair; \
         README, known differences)",
    ),
    (
        "*.fdinfo.inotify wd.*@watchdeleted",
        "an inotify watch on a deleted file is on the recreated file: its inode number and \
         file handle are new, the rest (wd, device, mask) the same",
    ),
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
            "dumpframe" => {
                let area = key.split(".pages_shared_with_").next().unwrap_or(key);
                let n = |s: &Snapshot| s.get(key).and_then(|v| v.parse::<u64>().ok());
                // the main stack, or an anonymous area (where threads' stacks are)
                matches!(before.get(&format!("{area}.path")), Some("[stack]" | ""))
                    && matches!((n(before), n(after)), (Some(a), Some(b)) if b < a && a - b <= 4)
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
            "runnable" => {
                let rs = |s: &Snapshot| {
                    s.get(key)
                        .is_some_and(|v| v.starts_with('R') || v.starts_with('S'))
                };
                rs(before) && rs(after)
            }
            "tcp" => {
                let base = key.rsplit_once(".sock.").map_or(key, |x| x.0);
                let tcp = |s: &Snapshot| s.get(&format!("{base}.sock.SO_PROTOCOL")) == Some("6");
                tcp(before) && tcp(after)
            }
            "mss_cap" => {
                let n = |s: &Snapshot| s.get(key).and_then(|v| v.parse::<u32>().ok());
                matches!((n(before), n(after)), (Some(b), Some(a)) if b > a && (32755..=32767).contains(&a))
            }
            "outside_tty" => {
                // The controlling terminal is not a pty whose master the tree holds.
                let base = key.rsplit_once(".stat.").map_or(key, |x| x.0);
                let nr: u64 = before
                    .get(&format!("{base}.stat.tty_nr"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (major, minor) = ((nr >> 8) & 0xfff, (nr & 0xff) | ((nr >> 12) & 0xfff00));
                let index = (136..=143)
                    .contains(&major)
                    .then(|| ((major - 136) * 256 + minor).to_string());
                !before.entries.iter().any(|(k, (_, v))| {
                    k.ends_with(".fdinfo.tty-index") && Some(v) == index.as_ref()
                })
            }
            "watchdeleted" => {
                // "WD ino:HEX sdev:.. mask:.. ... fhandle-type:.. f_handle:HEX": equal but
                // for ino and f_handle, and the watched inode is a deleted file a
                // descriptor of the same process held.
                let strip = |v: &str| {
                    v.split_whitespace()
                        .filter(|w| !w.starts_with("ino:") && !w.starts_with("f_handle:"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let (vb, va) = (before.get(key).unwrap_or(""), after.get(key).unwrap_or(""));
                let ino = vb
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                let proc_ = key.split('.').next().unwrap_or("");
                let deleted_fd = ino.is_some_and(|ino| {
                    before.entries.iter().any(|(k, (_, v))| {
                        k.starts_with(&format!("{proc_}.fd"))
                            && k.ends_with(".stat.ino")
                            && v.parse::<u64>().ok() == Some(ino)
                            && before
                                .get(&format!("{}.link", k.trim_end_matches(".stat.ino")))
                                .is_some_and(|l| l.ends_with(" (deleted)"))
                    })
                });
                !vb.is_empty() && strip(vb) == strip(va) && deleted_fd
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
    if let Err(e) = same_kernel_state(test, what, cmp, before, after, allowed) {
        panic!("{e}");
    }
}

/// [`assert_same_kernel_state`], the failure returned instead.
pub fn same_kernel_state(
    test: &str,
    what: &str,
    cmp: Cmp,
    before: &Snapshot,
    after: &Snapshot,
    allowed: &[&str],
) -> Result<(), String> {
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
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{what}: the state oracle sees {} difference(s) between the original and the {} \
         tree:\n  {}",
        bad.len(),
        if cmp == Cmp::Restored {
            "restored"
        } else {
            "left-running"
        },
        bad.join("\n  "),
    ))
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
        "{test}: known losses (KNOWN_LOSSES in tests/common/oracle/known.rs) that the state oracle \
         compared and found no longer there: fixed? then remove their entries:\n  {}",
        gone.join("\n  ")
    );
}
