//! `criu dump`, `criu restore` and `criu check` on the command line, and the dump and
//! restore transactions `swrk` shares with them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::images::{self, CKPT_IMAGE, STATS_DUMP, STATS_RESTORE};
use super::rpc::{DumpStatsEntry, RestoreStatsEntry, StatsEntry};
use super::{Log, Opts};
use crate::{dump, restore};

pub const USAGE: &str = "\
Usage (ckpt's criu front end; CRIU's options, those ckpt can honour):
  criu dump -t PID -D DIR [-W DIR] [-o LOG] [-v[N]] [-R|--leave-running] [--shell-job]
            [--tcp-established] [--file-locks] [--ext-unix-sk] [--action-script S]
            [--manage-cgroups[=MODE]] [--ext-mount-map POINT:POINT]
            [--external net|pid[INODE]:KEY] [--freeze-cgroup CGROUP-DIR]
  criu restore -D DIR [-W DIR] [-o LOG] [-v[N]] [-d|--restore-detached] [--shell-job]
            [--inherit-fd fd[N]:KEY] [--pidfile F] [--restore-sibling] [--root /]
            [--action-script S] [--tcp-established] [--file-locks]
            [--manage-cgroups[=MODE]] [--cgroup-root [CTRL:]PATH]
            [--ext-mount-map POINT:SOURCE] [--join-ns net|uts|ipc:FILE|PID]
            [--exec-cmd -- CMD...]
  (MODE: none, props, soft (the default), full, strict or ignore)
  criu check [--feature NAME]
  criu swrk FD
  criu --version
";

/// A notification to the caller (an action script's run, or an RPC NOTIFY): the
/// action's name and the restored root's PID when there is one; `Err` stops what can
/// still be stopped.
pub type Notifier = Arc<dyn Fn(&str, Option<i32>) -> Result<(), String> + Send + Sync>;

/// The `orphan-pts-master` notification: the new pty's master side goes to the caller
/// (over RPC, attached to the notification), which acknowledges it.
pub type PtsSender = Arc<dyn Fn(std::os::fd::BorrowedFd<'_>) -> Result<(), String> + Send + Sync>;

/// What the command line gives: an option, its value.
struct Parsed {
    opts: Opts,
    /// The log file's options are applied before anything can fail in the log.
    refusals: Vec<String>,
}

/// Options taking a value (long name, short name).
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("tree", Some('t')),
    ("images-dir", Some('D')),
    ("work-dir", Some('W')),
    ("log-file", Some('o')),
    ("inherit-fd", None),
    ("pidfile", None),
    ("root", Some('r')),
    ("action-script", None),
    ("ext-mount-map", Some('M')),
    ("ghost-limit", None),
    ("external", None),
    ("cgroup-root", None),
    ("freeze-cgroup", None),
    ("join-ns", Some('J')),
    ("empty-ns", None),
    ("prev-images-dir", None),
    ("page-server", None),
    ("address", None),
    ("port", None),
    ("veth-pair", None),
    ("lsm-profile", None),
    ("config", None),
    ("skip-mnt", None),
    ("enable-fs", None),
    ("irmap-scan-path", None),
    ("cpu-cap", None),
    ("timeout", None),
    ("status-fd", None),
    ("pidfile-dir", None),
];

/// Flags (long name, short name).
const FLAGS: &[(&str, Option<char>)] = &[
    ("leave-running", Some('R')),
    ("leave-stopped", Some('s')),
    ("restore-detached", Some('d')),
    ("shell-job", Some('j')),
    ("tcp-established", None),
    ("file-locks", Some('l')),
    ("ext-unix-sk", Some('x')),
    ("restore-sibling", None),
    ("evasive-devices", None),
    ("link-remap", None),
    ("force-irmap", None),
    ("auto-dedup", None),
    ("track-mem", None),
    ("lazy-pages", None),
    ("tcp-close", None),
    ("tcp-skip-in-flight", None),
    ("weak-sysctls", None),
    ("orphan-pts-master", None),
    ("auto-ext-mnt", None),
    ("ext-sharing", None),
    ("ext-masters", None),
    ("display-stats", None),
    ("log-pid", None),
    ("stream", None),
    ("network-lock", None),
    ("unprivileged", None),
];

/// Why ckpt refuses an option CRIU has (None: ckpt honours it).
fn refusal(name: &str, value: Option<&str>) -> Option<String> {
    let mounts = "not built in ckpt's criu front end (external mounts are given one by one \
                  with --ext-mount-map)";
    Some(match name {
        "auto-ext-mnt" | "ext-sharing" | "ext-masters" | "skip-mnt" | "enable-fs" => {
            format!("--{name}: {mounts}")
        }
        "root" if value.is_some_and(|v| Path::new(v) != Path::new("/")) => {
            format!(
                "--root {}: {mounts} (only --root / is accepted)",
                value.unwrap_or("")
            )
        }
        "root" => return None,
        "ghost-limit" => "--ghost-limit: ckpt keeps the contents of every deleted file a \
                          process holds, whatever its size; a limit is not built"
            .into(),
        "empty-ns" | "veth-pair" => format!(
            "--{name}: the criu front end does not hand external namespaces to ckpt's \
             engine yet (ckpt restore --join-ns is the engine's own; use --ext-unix-sk \
             and --inherit-fd for pipes and sockets to outside)"
        ),
        "leave-stopped" => "--leave-stopped: ckpt lets a dumped tree run or kills it".into(),
        "prev-images-dir" | "track-mem" | "auto-dedup" => {
            format!("--{name}: ckpt has no incremental (pre-)dumps")
        }
        "page-server" | "address" | "port" | "lazy-pages" | "status-fd" | "stream" => {
            format!("--{name}: ckpt has no page server, lazy pages or image streamer")
        }
        "tcp-close" | "tcp-skip-in-flight" => {
            format!("--{name}: ckpt restores established TCP connections exactly or refuses them")
        }
        "orphan-pts-master" => {
            "--orphan-pts-master: passing a terminal's master side is not built".into()
        }
        "evasive-devices" | "link-remap" | "force-irmap" | "irmap-scan-path" | "weak-sysctls"
        | "lsm-profile" | "config" | "cpu-cap" | "timeout" | "pidfile-dir" | "log-pid"
        | "network-lock" | "unprivileged" => {
            format!("--{name}: not built in ckpt's criu front end")
        }
        _ => return None,
    })
}

/// Parse the options of `criu dump` / `criu restore` (CRIU's syntax: `-t PID`,
/// `-tPID`, `--tree PID`, `--tree=PID`, `-v4`, `-vvv`, `--exec-cmd -- CMD...`).
fn parse(cmd: &str, args: &[String]) -> Result<Parsed, String> {
    let mut o = Opts {
        log_level: 2,
        ..Default::default()
    };
    let mut refusals = Vec::new();
    let mut images_dir = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        // (long name, inline value)
        let (name, inline): (String, Option<String>) = if let Some(l) = a.strip_prefix("--") {
            match l.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (l.to_string(), None),
            }
        } else if let Some(s) = a.strip_prefix('-') {
            let mut ch = s.chars();
            let Some(c) = ch.next() else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let rest: String = ch.collect();
            if c == 'v' {
                // -v, -vN, -vvv
                // Each v one level above the default (2); -vN sets N.
                o.log_level = if rest.chars().all(|c| c == 'v') {
                    3 + rest.len() as i32
                } else {
                    rest.parse()
                        .map_err(|_| format!("-v{rest}: not a verbosity level"))?
                };
                continue;
            }
            let long = WITH_VALUE
                .iter()
                .chain(FLAGS)
                .find(|(_, s)| *s == Some(c))
                .map(|(l, _)| *l)
                .ok_or_else(|| format!("unknown option -{c}"))?;
            (long.to_string(), (!rest.is_empty()).then_some(rest))
        } else {
            return Err(format!("unexpected argument {a:?}"));
        };
        if name == "exec-cmd" {
            // Everything after it (and its `--`) is the command.
            let rest = &args[i..];
            let rest = rest.strip_prefix(&["--".to_string()]).unwrap_or(rest);
            o.exec_cmd = rest.to_vec();
            if o.exec_cmd.is_empty() {
                return Err("--exec-cmd needs a command after --".into());
            }
            if cmd != "restore" {
                return Err("--exec-cmd is an option of criu restore".into());
            }
            break;
        }
        if name == "verbosity" {
            o.log_level = match inline {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("--verbosity={v}: not a level"))?,
                None => 3,
            };
            continue;
        }
        if name == "manage-cgroups" {
            match super::map::cg_mode_named(inline.as_deref()) {
                Ok(m) => o.cg_mode = Some(m),
                Err(e) => refusals.push(e),
            }
            continue;
        }
        let takes_value = WITH_VALUE.iter().any(|(l, _)| *l == name);
        let is_flag = FLAGS.iter().any(|(l, _)| *l == name);
        if !takes_value && !is_flag {
            return Err(format!("unknown option --{name}"));
        }
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => {
                    let v = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    i += 1;
                    Some(v)
                }
            }
        } else if inline.is_some() {
            return Err(format!("--{name} takes no value"));
        } else {
            None
        };
        if let Some(r) = refusal(&name, value.as_deref()) {
            refusals.push(r);
            continue;
        }
        let v = value.unwrap_or_default();
        let dump_only = |o: &str| -> Result<(), String> {
            if cmd == "dump" {
                Ok(())
            } else {
                Err(format!("--{o} is an option of criu dump"))
            }
        };
        let restore_only = |o: &str| -> Result<(), String> {
            if cmd == "restore" {
                Ok(())
            } else {
                Err(format!("--{o} is an option of criu restore"))
            }
        };
        match name.as_str() {
            "tree" => {
                dump_only("tree")?;
                o.pid = Some(
                    v.parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("-t {v}: not a PID"))?,
                );
            }
            "images-dir" => images_dir = Some(PathBuf::from(v)),
            "work-dir" => o.work_dir = Some(PathBuf::from(v)),
            "log-file" => o.log_file = Some(v),
            "leave-running" => {
                dump_only("leave-running")?;
                o.leave_running = true;
            }
            "restore-detached" => {
                restore_only("restore-detached")?;
                o.detach = true;
            }
            "shell-job" => o.shell_job = true,
            "tcp-established" => o.tcp_established = true,
            "file-locks" => o.file_locks = true,
            "ext-unix-sk" => o.external = true,
            "restore-sibling" => {
                restore_only("restore-sibling")?;
                o.rst_sibling = true;
            }
            "pidfile" => {
                restore_only("pidfile")?;
                o.pidfile = Some(PathBuf::from(v));
            }
            "inherit-fd" => {
                restore_only("inherit-fd")?;
                o.inherit_fd.push(parse_inherit(&v)?);
            }
            "action-script" => o.action_scripts.push(v),
            "ext-mount-map" => {
                // CRIU's KEY:VAL (both paths: split at the first colon).
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--ext-mount-map {v}: not KEY:VALUE"))?;
                if cmd == "dump" {
                    if let Err(e) = super::map::ext_mnt_at_dump(k, val, false) {
                        refusals.push(format!("--ext-mount-map: {e}"));
                    }
                } else {
                    match super::map::ext_mnt_at_restore(k, val) {
                        Ok(p) => o.ext_mounts.push(p),
                        Err(e) => refusals.push(format!("--ext-mount-map: {e}")),
                    }
                }
            }
            "external" => {
                if let Some(m) = v.strip_prefix("mnt[") {
                    // CRIU's other spelling of an external mount: mnt[KEY]:VAL.
                    let (k, val) = m
                        .split_once("]:")
                        .ok_or_else(|| format!("--external {v}: not mnt[KEY]:VALUE"))?;
                    if cmd == "dump" {
                        if let Err(e) = super::map::ext_mnt_at_dump(k, val, false) {
                            refusals.push(format!("--external: {e}"));
                        }
                    } else {
                        match super::map::ext_mnt_at_restore(k, val) {
                            Ok(p) => o.ext_mounts.push(p),
                            Err(e) => refusals.push(format!("--external: {e}")),
                        }
                    }
                } else if cmd == "dump" {
                    if let Err(e) = super::map::take_external_at_dump(&v, &mut o) {
                        refusals.push(format!("--{e}"));
                    }
                } else {
                    refusals.push(format!(
                        "--external {v}: at restore ckpt takes only mnt[KEY]:VALUE (a \
                         network namespace is given with --join-ns or --inherit-fd)"
                    ));
                }
            }
            "join-ns" => {
                restore_only("join-ns")?;
                // NS:FILE[,EXTRA]
                let (ns, rest) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--join-ns {v}: not NS:FILE"))?;
                let (file, extra) = match rest.split_once(',') {
                    Some((f, e)) => (f, Some(e)),
                    None => (rest, None),
                };
                match super::map::join_ns(ns, file, extra) {
                    Ok(j) => o.join_ns.push(j),
                    Err(e) => refusals.push(format!("--{e}")),
                }
            }
            "freeze-cgroup" => {
                dump_only("freeze-cgroup")?;
                match super::map::freeze_cgroup(&v) {
                    Ok(f) => o.freeze_cgroup = Some(f),
                    Err(e) => refusals.push(format!("--freeze-cgroup: {e}")),
                }
            }
            "cgroup-root" => {
                restore_only("cgroup-root")?;
                // [CONTROLLER:]PATH
                o.cg_roots.push(match v.split_once(':') {
                    Some((c, p)) => (Some(c.to_string()), p.to_string()),
                    None => (None, v.clone()),
                });
            }
            "root" | "display-stats" => {}
            other => return Err(format!("unknown option --{other}")),
        }
    }
    o.images_dir = images_dir.ok_or("no images directory (-D DIR)")?;
    if cmd == "dump" && o.pid.is_none() {
        return Err("no process to dump (-t PID)".into());
    }
    Ok(Parsed { opts: o, refusals })
}

/// CRIU's `fd[N]:KEY`.
fn parse_inherit(s: &str) -> Result<(i32, String), String> {
    let bad = || format!("--inherit-fd {s}: not fd[N]:KEY");
    let rest = s.strip_prefix("fd[").ok_or_else(bad)?;
    let (n, key) = rest.split_once("]:").ok_or_else(bad)?;
    let n: i32 = n.parse().ok().filter(|n| *n >= 0).ok_or_else(bad)?;
    if key.is_empty() {
        return Err(bad());
    }
    Ok((n, key.to_string()))
}

/// `criu dump ...` or `criu restore ...`.
pub fn command(cmd: &str, args: &[String]) -> i32 {
    let early = Log::stderr();
    let parsed = match parse(cmd, args) {
        Ok(p) => p,
        Err(e) => {
            early.error(&e);
            return 1;
        }
    };
    let o = parsed.opts;
    let log = match Log::open(o.work_dir(), o.log_file.as_deref(), o.log_level, true) {
        Ok(l) => l,
        Err(e) => {
            early.error(&e);
            return 1;
        }
    };
    if !parsed.refusals.is_empty() {
        for r in &parsed.refusals {
            log.error(r);
        }
        return 1;
    }
    let notify = scripts_notifier(&o, &log);
    if cmd == "dump" {
        match run_dump(&o, &log, notify.as_ref()) {
            Ok(_) => 0,
            Err(e) => {
                log.error(&e);
                1
            }
        }
    } else {
        cli_restore(&o, &log, notify.as_ref())
    }
}

/// The `--action-script`s as a notifier (None without any): each runs with `sh -c`,
/// with CRIU's environment (CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR, and
/// CRTOOLS_INIT_PID once the restored root exists); one that fails stops the
/// transaction where it can still be stopped.
fn scripts_notifier(o: &Opts, log: &Log) -> Option<Notifier> {
    if o.action_scripts.is_empty() {
        return None;
    }
    let scripts = o.action_scripts.clone();
    let dir = std::path::absolute(&o.images_dir).unwrap_or_else(|_| o.images_dir.clone());
    log.debug(&format!("action scripts: {scripts:?}"));
    Some(Arc::new(move |action: &str, pid: Option<i32>| {
        for s in &scripts {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(s)
                .env("CRTOOLS_SCRIPT_ACTION", action)
                .env("CRTOOLS_IMAGE_DIR", &dir);
            if let Some(p) = pid {
                c.env("CRTOOLS_INIT_PID", p.to_string());
            }
            let st = c
                .status()
                .map_err(|e| format!("cannot run the action script {s:?}: {e}"))?;
            if !st.success() {
                return Err(format!("the action script {s:?} failed at {action} ({st})"));
            }
        }
        Ok(())
    }))
}

/// `n` (if any), with each action logged.
fn logged(n: Option<&Notifier>, log: &Log) -> Notifier {
    let (n, log) = (n.cloned(), log.clone());
    Arc::new(move |action: &str, pid: Option<i32>| {
        log.info(&format!("notify: {action}"));
        n.as_ref().map_or(Ok(()), |n| n(action, pid))
    })
}

/// The dump transaction: notifications pre-dump, network-lock (the tree stopped),
/// post-dump (the image written, the tree still stopped: a failure lets it run on and
/// removes the image), network-unlock (when the tree runs on, or the dump failed after
/// the lock); then `inventory.img` and `stats-dump`. Returns the dumped PID.
pub fn run_dump(o: &Opts, log: &Log, n: Option<&Notifier>) -> Result<i32, String> {
    let pid = o.pid.ok_or("no process to dump")?;
    let dir = o.images_dir.clone();
    if !dir.is_dir() {
        return Err(format!(
            "the images directory {} is not a directory",
            dir.display()
        ));
    }
    log.info(&format!(
        "dumping process {pid} into {} (ckpt {})",
        dir.display(),
        env!("CARGO_PKG_VERSION")
    ));
    if o.shell_job {
        log.debug("--shell-job: ckpt restores a shell job's terminal and groups as they were");
    }
    for (kind, ino) in &o.external_ns {
        use std::os::unix::fs::MetadataExt;
        let p = format!("/proc/{pid}/ns/{kind}");
        let now = std::fs::metadata(&p)
            .map_err(|e| format!("external {kind}[{ino}]: cannot read {p}: {e}"))?
            .ino();
        if now != *ino {
            return Err(format!(
                "external {kind}[{ino}]: process {pid} is in the {kind} namespace \
                 {kind}:[{now}], not in that one"
            ));
        }
        log.info(&format!(
            "external {kind}[{ino}]: the tree's {kind} namespace, recorded as made outside \
             it (restore joins the one given for it)"
        ));
    }
    if let Some(r) = &o.root {
        super::map::root_at_dump(pid, r)?;
        log.info(&format!(
            "root {}: the root directory of process {pid} (its mount's source is recorded)",
            r.display()
        ));
    }
    if o.orphan_pts_master {
        log.debug(
            "orphan_pts_master: a terminal on the standard descriptors whose master is outside \
             the tree comes back as a new pty (checked now as restore will make it)",
        );
    }
    if let Some(cg) = &o.freeze_cgroup {
        log.info(&format!(
            "freeze_cgroup {cg:?}: the tree of {pid} is frozen with that cgroup's freezer"
        ));
    }
    if let Some(m) = o.cg_mode {
        log.debug(&format!(
            "manage_cgroups {m:?}: ckpt records each process's cgroups and their limits \
             whatever the mode; the mode matters at restore"
        ));
    }
    let n = logged(n, log);
    n("pre-dump", None)?;
    let locked = Arc::new(AtomicBool::new(false));
    let hook: dump::DumpHook = {
        let (n, locked, dir) = (n.clone(), locked.clone(), dir.clone());
        Arc::new(move |step| {
            let call = |a: &str| n(a, None);
            match step {
                dump::DumpStep::Frozen => {
                    call("network-lock")?;
                    locked.store(true, Ordering::SeqCst);
                    Ok(())
                }
                dump::DumpStep::Written => {
                    images::write_inventory(&dir)?;
                    call("post-dump").inspect_err(|_| {
                        let _ = std::fs::remove_file(dir.join(images::INVENTORY));
                    })
                }
            }
        })
    };
    let opts = dump::DumpOptions {
        leave_running: o.leave_running,
        external: o.external,
        hook: Some(hook),
        freeze_cgroup: o.freeze_cgroup.clone(),
        new_tty: o.orphan_pts_master,
        external_pidns: o.external_pidns.clone(),
        net_remade: o.external_ns.iter().any(|(k, _)| k == "net"),
        tcp_established: o.tcp_established,
        ..Default::default()
    };
    let res = dump::dump(pid, dump::Output::Path(dir.join(CKPT_IMAGE)), &opts);
    let st = match res {
        Ok(st) => st,
        Err(e) => {
            if locked.load(Ordering::SeqCst) {
                if let Err(u) = n("network-unlock", None) {
                    log.error(&u);
                }
            }
            return Err(e.to_string());
        }
    };
    for w in &st.warnings {
        log.warn(w);
    }
    if o.leave_running {
        n("network-unlock", None)?;
    } else {
        // The caller goes on as soon as we answer (runc removes the container, which
        // fails while a process of it is still exiting): the killed tree is gone first.
        let gone = match &o.freeze_cgroup {
            Some(dump::FreezeCgroup::At(cg)) => super::freeze::wait_emptied(cg, pid),
            _ => super::freeze::wait_emptied_tree(pid),
        };
        if let Err(e) = gone {
            log.warn(&e);
        }
    }
    let frozen = images::micros(st.frozen);
    let stats = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: images::micros(st.freezing),
            frozen_time: frozen,
            // ckpt copies and writes the pages in one pass (`writing`).
            memdump_time: images::micros(st.writing),
            memwrite_time: images::micros(st.writing),
            pages_scanned: st.pages_written + st.zero_pages_skipped,
            pages_skipped_parent: 0,
            pages_written: st.pages_written,
            irmap_resolve: None,
            pages_lazy: 0,
        }),
        restore: None,
    };
    images::write_stats(&dir, STATS_DUMP, &stats)?;
    // CRIU writes its statistics into the work directory, where Podman reads them
    // (`checkpoint --export` archives the bundle's `stats-dump`): there too.
    if o.work_dir() != dir.as_path() {
        images::write_stats(o.work_dir(), STATS_DUMP, &stats)?;
    }
    log.info(&format!(
        "dumped process {pid}: {} pages written, {} zero pages skipped, frozen {frozen} us; \
         process {}",
        st.pages_written,
        st.zero_pages_skipped,
        if o.leave_running {
            "left running"
        } else {
            "killed"
        }
    ));
    Ok(pid)
}

/// The restore transaction: plan, then stage with the notifications setup-namespaces,
/// post-setup-namespaces, post-restore, pre-resume (the tree built, before the point of
/// no return: a failure undoes it), then the tree runs: network-unlock, post-resume
/// (failures only logged: the tree runs), and `stats-restore`.
///
/// `sibling`: the root becomes our parent's child (rst_sibling). `from_file`: ckpt may
/// execute itself again to take the image's address randomization (the command line).
pub fn run_restore(
    o: &Opts,
    log: &Log,
    n: Option<&Notifier>,
    pts: Option<PtsSender>,
    from_file: bool,
) -> Result<restore::Launched, String> {
    let t0 = Instant::now();
    let path = o.images_dir.join(CKPT_IMAGE);
    log.info(&format!("restoring from {}", path.display()));
    let open = || {
        std::fs::File::open(&path)
            .map(|f| std::io::BufReader::with_capacity(64 << 10, f))
            .map_err(|e| format!("cannot open the image {}: {e}", path.display()))
    };
    // Held open: a tree with a mount namespace of its own is restored from inside it,
    // where the directory's path may lead nowhere.
    let images_dir = std::fs::File::open(&o.images_dir)
        .map_err(|e| format!("cannot open {}: {e}", o.images_dir.display()))?;
    // (the work directory too, when it is another: CRIU writes its statistics there)
    let work_dir = if o.work_dir() != o.images_dir.as_path() {
        Some(
            std::fs::File::open(o.work_dir())
                .map_err(|e| format!("cannot open {}: {e}", o.work_dir().display()))?,
        )
    } else {
        None
    };
    let mut view = restore::HostView::detect(None, crate::arch::CpuPolicy::default())?;
    let ckpt = {
        let mut reader = crate::image::ImageReader::new(open()?).map_err(|e| e.to_string())?;
        restore::read_checkpoint(&mut reader).map_err(|e| e.to_string())?
    };
    // Descriptors of namespaces among inherit_fd (runc's way to give a container's
    // network namespace) are joins; the others stand for external resources.
    let mut inherit = Vec::new();
    view.join_ns = o.join_ns.clone();
    for (fd, key) in &o.inherit_fd {
        match super::map::inherit_namespace(*fd, key) {
            Some(j) => {
                let (kind, path) = j?;
                log.info(&format!(
                    "inherit_fd {key}: descriptor {fd} is the {kind} namespace to join"
                ));
                view.join_ns.push((kind, path));
            }
            None => inherit.push((*fd, key.clone())),
        }
    }
    view.inherit = inherit_stdio(&inherit, log, &ckpt)?;
    let (mode, limits) = super::map::cg_mode(o.cg_mode.unwrap_or(super::rpc::CgMode::Soft));
    view.cgroup_mode = mode;
    view.cgroup_limits = limits;
    let own = crate::sys::cgroup::membership(0).map_err(|e| e.to_string())?;
    if super::map::cg_roots_are_own(&o.cg_roots, &own, &ckpt.processes)? {
        // runc's way: it put us into the container's new cgroups (with its limits) and
        // names them as the roots: the tree stays in ours.
        log.info("cg_root: ckpt's own cgroups (made by the caller): the tree is restored in them");
        view.cgroup_mode = restore::CgroupMode::Ignore;
        view.cgroup_limits = restore::LimitsMode::Off;
    } else {
        view.cgroup_root = super::map::cg_root(&o.cg_roots, &super::map::used_hierarchies(&ckpt))?;
    }
    let (ext_mounts, notes) = super::map::ext_mounts_for_image(
        &o.ext_mounts,
        &crate::kinds::mnt::external_points(&ckpt),
        o.root.as_deref(),
    )?;
    let mut ext_mounts = ext_mounts;
    for n in &notes {
        log.info(n);
    }
    if view.cgroup_mode == restore::CgroupMode::Ignore && !o.cg_roots.is_empty() {
        // The container's cgroup mounts show its own cgroup (runc names, for cgroup v1,
        // the cgroups of its own process instead: the restored container would see
        // the whole hierarchy).
        for (point, src) in crate::kinds::mnt::own_cgroup_mount_sources(&ckpt) {
            if let Some(e) = ext_mounts.iter_mut().find(|(p, _)| *p == point) {
                if e.1 != src {
                    log.info(&format!(
                        "ext_mnt {point}:{}: the mount bound the tree's cgroup, now ours: \
                         {src} instead",
                        e.1
                    ));
                }
                e.1 = src;
            } else {
                ext_mounts.push((point, src));
            }
        }
    }
    log.info(&format!(
        "cgroups: {:?}, limits {:?}, root {:?}; external mounts {ext_mounts:?}; joins {:?}",
        view.cgroup_mode, view.cgroup_limits, view.cgroup_root, view.join_ns
    ));
    // orphan_pts_master (runc asks for it with every restore) acts on a terminal whose
    // master was outside the tree: none, nothing to do.
    let outside_tty = ckpt.processes.iter().any(|p| {
        p.fds.iter().any(|f| {
            matches!(
                &f.kind,
                crate::model::FdKind::Inherited { tty: Some(_), .. }
            )
        })
    });
    if o.orphan_pts_master && !outside_tty {
        log.info("orphan_pts_master: the image has no terminal from outside the tree");
    }
    restore::set_external_mounts(
        ext_mounts
            .iter()
            .map(|(d, s)| (d.clone().into_bytes(), s.clone().into_bytes()))
            .collect(),
    );
    drop(ckpt);
    let input = open()?;
    let prepared = restore::prepare_for(input, &view, o.rst_sibling).map_err(|e| e.to_string())?;
    prepared
        .take_randomization(from_file)
        .map_err(|e| e.to_string())?;
    let mut prepared = prepared;
    // orphan_pts_master: a new pty in place of the terminal the tree had (whose master
    // side was outside the tree); its master goes to the caller.
    let master = match (o.orphan_pts_master && outside_tty, &pts) {
        (true, Some(_)) => Some(Arc::new(
            prepared
                .with_new_tty()
                .map_err(|e| format!("orphan_pts_master: {e}"))?,
        )),
        (true, None) => {
            return Err("orphan_pts_master: needs the RPC with notify_scripts".into());
        }
        _ => None,
    };
    let n = logged(n, log);
    let hook: restore::RestoreHook = {
        let (n, log) = (n.clone(), log.clone());
        Arc::new(move |step| {
            let restore::RestoreStep::Staged { root } = step;
            for a in ["setup-namespaces", "post-setup-namespaces"] {
                n(a, Some(root))?;
            }
            if let (Some(m), Some(send)) = (&master, &pts) {
                use std::os::fd::AsFd;
                log.info("notify: orphan-pts-master (the new pty's master attached)");
                send(m.as_fd())?;
            }
            for a in ["post-restore", "pre-resume"] {
                n(a, Some(root))?;
            }
            Ok(())
        })
    };
    let prepared = prepared.with_hook(hook);
    let launched = if o.rst_sibling {
        prepared.launch_as_sibling()
    } else {
        prepared.launch(false)
    }
    .map_err(|e| e.to_string())?;
    for a in ["network-unlock", "post-resume"] {
        if let Err(e) = n(a, Some(launched.root)) {
            log.warn(&format!("{e} (the restored tree runs)"));
        }
    }
    let total = t0.elapsed();
    // The engine's figures when the tree was built in this process (not in a child made
    // for a new PID namespace: then 0 and none).
    let engine = restore::last_stats().filter(|s| s.pid == launched.root);
    let stats = StatsEntry {
        dump: None,
        restore: Some(RestoreStatsEntry {
            pages_compared: 0,
            pages_skipped_cow: 0,
            forking_time: engine.as_ref().map_or(0, |s| images::micros(s.forking)),
            restore_time: images::micros(total),
            pages_restored: engine.map(|s| s.page_bytes / crate::image::PAGE_SIZE),
        }),
    };
    if let Err(e) = images::write_stats_at(&images_dir, &o.images_dir, STATS_RESTORE, &stats) {
        log.warn(&e);
    }
    // (and into the work directory, where CRIU writes them and Podman reads them)
    if let Some(w) = &work_dir {
        if let Err(e) = images::write_stats_at(w, o.work_dir(), STATS_RESTORE, &stats) {
            log.warn(&e);
        }
    }
    if let Some(p) = &o.pidfile {
        let p = o.work_dir().join(p);
        if let Err(e) = std::fs::write(&p, format!("{}", launched.root)) {
            log.warn(&format!("cannot write the pid file {}: {e}", p.display()));
        }
    }
    log.info(&format!(
        "restored: process {} runs ({} us)",
        launched.root,
        total.as_micros()
    ));
    Ok(launched)
}

/// CRIU's `inherit_fd` also names the pipes (or sockets) the image's standard
/// descriptors led to (runc gives a container's new stdio pipes so): ckpt connects
/// those to its own descriptor of the same number, so such a descriptor is put there
/// (dup2). Returns the other pairs, for the image's external resources.
fn inherit_stdio(
    inherit_fd: &[(i32, String)],
    log: &Log,
    ckpt: &crate::model::Checkpoint,
) -> Result<Vec<(i32, String)>, String> {
    if inherit_fd.is_empty() {
        return Ok(Vec::new());
    }
    let mut stdio: Vec<(i32, &str)> = Vec::new();
    for f in ckpt.processes.iter().flat_map(|p| p.fds.iter()) {
        if let crate::model::FdKind::Inherited { what, .. } = &f.kind {
            if !stdio.contains(&(f.fd, what.as_str())) {
                stdio.push((f.fd, what.as_str()));
            }
        }
    }
    let mut rest = Vec::new();
    for (fd, key) in inherit_fd {
        let at: Vec<i32> = stdio
            .iter()
            .filter(|(_, w)| w == key)
            .map(|(n, _)| *n)
            .collect();
        if at.is_empty() {
            rest.push((*fd, key.clone()));
            continue;
        }
        for n in at {
            if let Some((_, other)) = stdio.iter().find(|(m, w)| *m == n && w != key) {
                return Err(format!(
                    "inherit_fd {key}: the image's descriptor {n} led to {key} in one \
                     process and to {other} in another; ckpt gives them all its own \
                     descriptor {n}"
                ));
            }
            log.info(&format!(
                "inherit_fd {key}: descriptor {fd} becomes standard descriptor {n}"
            ));
            crate::host::put_fd_at(*fd, n).map_err(|e| e.to_string())?;
        }
    }
    Ok(rest)
}

/// `criu restore` on the command line: restore, then (CRIU's ways) exec `--exec-cmd`
/// (the restored root, our child, becomes its child), return with -d or
/// --restore-sibling, or wait for the root and exit with its status.
fn cli_restore(o: &Opts, log: &Log, n: Option<&Notifier>) -> i32 {
    if !o.detach && !o.rst_sibling && o.exec_cmd.is_empty() {
        crate::host::ignore_keyboard_signals();
    }
    let launched = match run_restore(o, log, n, None, true) {
        Ok(l) => l,
        Err(e) => {
            log.error(&e);
            return 1;
        }
    };
    if let Some((prog, args)) = o.exec_cmd.split_first() {
        use std::os::unix::process::CommandExt;
        let _ = std::io::stdout().flush();
        let e = std::process::Command::new(prog).args(args).exec();
        log.error(&format!("cannot execute --exec-cmd {prog:?}: {e}"));
        return 1;
    }
    if o.detach || o.rst_sibling {
        return 0;
    }
    match launched.wait() {
        Ok(st) => restore::exit_code(st),
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}

/// `criu check [--feature NAME]...`: without a feature, ckpt's own check of this host
/// (root, and the kernel facilities every restore needs); with, each feature's answer.
pub fn check(args: &[String]) -> i32 {
    let log = Log::stderr();
    let mut features = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        if let Some(f) = a.strip_prefix("--feature=") {
            features.push(f.to_string());
        } else if a == "--feature" {
            match args.get(i) {
                Some(f) => features.push(f.clone()),
                None => {
                    log.error("--feature needs a name");
                    return 1;
                }
            }
            i += 1;
        } else if a == "--all" || a == "--extra" || a.starts_with("-v") {
            // --all/--extra: everything ckpt checks is checked anyway.
        } else {
            log.error(&format!("criu check: unknown option {a}"));
            return 1;
        }
    }
    if features.iter().any(|f| f == "list") {
        println!("{}", super::FEATURES.join(" "));
        return 0;
    }
    if !features.is_empty() {
        let mut ok = true;
        for f in &features {
            match super::feature(f) {
                Some(Ok(())) => println!("{f} is supported"),
                Some(Err(why)) => {
                    ok = false;
                    println!("{f} is not supported: {why}");
                }
                None => {
                    log.error(&format!("unknown feature {f}"));
                    return 1;
                }
            }
        }
        return if ok { 0 } else { 1 };
    }
    match host_check() {
        Ok(()) => {
            println!("Looks good.");
            0
        }
        Err(problems) => {
            for p in problems {
                log.error(&p);
            }
            1
        }
    }
}

/// ckpt's check of this host: root, and the kernel facilities every restore uses.
pub fn host_check() -> Result<(), Vec<String>> {
    const BASIC: [&str; 4] = [
        "clone3-set-tid",
        "prctl-set-mm-map",
        "pidfd-getfd",
        "map-vdso-64",
    ];
    let mut problems = Vec::new();
    if !crate::host::is_root() {
        problems.push("ckpt needs root (ptrace of any process, PIDs chosen at restore)".into());
    }
    for (name, what, r) in restore::host_facilities() {
        if let (true, Err(why)) = (BASIC.contains(&name), r) {
            problems.push(format!("this kernel lacks {what}: {why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn crac_dump_line() {
        let p = parse(
            "dump",
            &args("-t 42 -D img --shell-job -v4 -o dump4.log -R"),
        )
        .unwrap();
        assert!(p.refusals.is_empty());
        let o = p.opts;
        assert_eq!(o.pid, Some(42));
        assert_eq!(o.images_dir, PathBuf::from("img"));
        assert_eq!(o.log_level, 4);
        assert_eq!(o.log_file.as_deref(), Some("dump4.log"));
        assert!(o.leave_running && o.shell_job);
        let level = |a: &str| {
            parse("dump", &args(&format!("-t 1 -D d {a}")))
                .unwrap()
                .opts
                .log_level
        };
        assert_eq!(
            (level("-v"), level("-vv"), level("-v1"), level("")),
            (3, 4, 1, 2)
        );
    }

    #[test]
    fn crac_restore_line() {
        let p = parse(
            "restore",
            &args("-W . --shell-job --action-script /a.sh -D img -v1 --inherit-fd fd[1]:pipe:[5] -d --exec-cmd -- /bin/x restorewait"),
        )
        .unwrap();
        let o = p.opts;
        assert_eq!(o.work_dir, Some(PathBuf::from(".")));
        assert_eq!(o.action_scripts, vec!["/a.sh".to_string()]);
        assert_eq!(o.inherit_fd, vec![(1, "pipe:[5]".to_string())]);
        assert_eq!(o.exec_cmd, args("/bin/x restorewait"));
        assert!(o.detach);
    }

    #[test]
    fn refused_by_name() {
        let p = parse(
            "dump",
            &args("-t 1 -D d --ext-mount-map /a:b --manage-cgroups=hard --external ipc[3]:k"),
        )
        .unwrap();
        assert_eq!(p.refusals.len(), 3, "{:?}", p.refusals);
        assert!(p.refusals[0].contains("--ext-mount-map: ext_mnt /a:b"));
        assert!(p.refusals[1].contains("--manage-cgroups=hard"));
        assert!(p.refusals[2].contains("--external ipc[3]"));
        // runc's external PID namespace is taken, with its key.
        let ok = parse("dump", &args("-t 1 -D d --external pid[3]:extRootPidNS")).unwrap();
        assert!(ok.refusals.is_empty(), "{:?}", ok.refusals);
        assert_eq!(
            ok.opts.external_pidns.map(|e| (e.inode, e.key)),
            Some((3, "extRootPidNS".to_string()))
        );
        let ok = parse(
            "dump",
            &args("-t 1 -D d --manage-cgroups=ignore --ext-mount-map /a:/a --external net[7]:k"),
        )
        .unwrap();
        assert!(ok.refusals.is_empty(), "{:?}", ok.refusals);
        assert_eq!(ok.opts.external_ns, vec![("net".to_string(), 7)]);
        let r = parse(
            "restore",
            &args(
                "-D d --manage-cgroups --ext-mount-map /a:/srv/a --external mnt[/b]:/srv/b \
                 --join-ns net:/run/netns/x --cgroup-root memory:/m --cgroup-root /r",
            ),
        )
        .unwrap();
        assert!(r.refusals.is_empty(), "{:?}", r.refusals);
        assert_eq!(r.opts.cg_mode, Some(super::super::rpc::CgMode::Soft));
        assert_eq!(r.opts.ext_mounts.len(), 2);
        assert_eq!(r.opts.join_ns.len(), 1);
        assert_eq!(
            r.opts.cg_roots,
            vec![
                (Some("memory".to_string()), "/m".to_string()),
                (None, "/r".to_string())
            ]
        );
        let j = parse(
            "restore",
            &args("-D d --join-ns user:/x --join-ns net:/x,extra"),
        )
        .unwrap();
        assert_eq!(j.refusals.len(), 2, "{:?}", j.refusals);
        let e = parse("dump", &args("-t 1 -D d --frobnicate"))
            .err()
            .unwrap();
        assert!(e.contains("--frobnicate"), "{e}");
        assert!(parse("dump", &args("-t 1 -D d --join-ns net:/x")).is_err());
        assert!(parse("dump", &args("-D d")).is_err());
        assert!(parse("restore", &args("-D d -t 5")).is_err());
        assert!(parse("restore", &args("-D d --inherit-fd 3:pipe")).is_err());
    }
}
