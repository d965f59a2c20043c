//! The `criu`-compatible front end: ckpt run as `criu` (its program name, e.g. a
//! symlink `criu -> ckpt`, or `ckpt criu ...`) serves the callers of CRIU (runc, crun
//! and containerd through `criu swrk`, CRaC and scripts through the command line) with
//! ckpt's engine underneath. This module only translates: CRIU's options and messages
//! into [`crate::dump`] and [`crate::restore`] calls, CRIU's notify scripts into the
//! engine's hooks ([`crate::dump::DumpStep`], [`crate::restore::RestoreStep`]), and the
//! results into CRIU's answers and files (`inventory.img`, `stats-dump`,
//! `stats-restore`, see [`images`]).
//!
//! Anything ckpt cannot honour is refused by name (exit 1, or `success = false` with
//! `cr_errmsg`), with a line containing "Error" in the log, which runc searches.

mod freeze;
pub mod images;
mod log;
pub mod map;
mod ops;
pub mod rpc;
mod swrk;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use log::Log;

/// The CRIU version ckpt answers as: runc, Podman and containerd accept 3.16 and newer.
pub const VERSION_MAJOR: i32 = 3;
pub const VERSION_MINOR: i32 = 19;

/// Whether a program name (argv[0]) calls the `criu` front end.
pub fn called_as_criu(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "criu")
}

/// What a dump or restore is asked for, from the command line or an RPC request.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `-t`: the root of the tree to dump.
    pub pid: Option<i32>,
    /// `-D`: where the images go or come from.
    pub images_dir: PathBuf,
    /// `-W`: logs and the pid file go here (the images directory by default).
    pub work_dir: Option<PathBuf>,
    pub log_file: Option<String>,
    pub log_level: i32,
    pub leave_running: bool,
    pub shell_job: bool,
    pub tcp_established: bool,
    pub file_locks: bool,
    /// `--ext-unix-sk` / `ext_unix_sk`: pipes and unix sockets to outside are recorded
    /// as external resources (ckpt's `dump --external`).
    pub external: bool,
    pub detach: bool,
    pub rst_sibling: bool,
    pub pidfile: Option<PathBuf>,
    pub inherit_fd: Vec<(i32, String)>,
    pub action_scripts: Vec<String>,
    pub exec_cmd: Vec<String>,
    /// RPC `orphan_pts_master`: the tree gets a new pty's slave side where it had a
    /// terminal; the master side goes to the caller with the `orphan-pts-master`
    /// notification.
    pub orphan_pts_master: bool,
    /// RESTORE: `ext_mnt` / `--ext-mount-map` (mount point at dump, host source), for
    /// ckpt's `restore --external-mount`.
    pub ext_mounts: Vec<(String, String)>,
    /// RESTORE: `join_ns` / `--join-ns` (kind, namespace file), for ckpt's
    /// `restore --join-ns`.
    pub join_ns: Vec<(String, PathBuf)>,
    /// RESTORE: `cg_root` / `--cgroup-root` entries (controller, path), resolved into
    /// ckpt's one `restore --cgroup-root` (see [`map::cg_root`]).
    pub cg_roots: Vec<(Option<String>, String)>,
    /// `manage_cgroups(_mode)` / `--manage-cgroups`; None: CRIU's default, SOFT (see
    /// [`map::cg_mode`]).
    pub cg_mode: Option<rpc::CgMode>,
    /// DUMP: `external` network namespaces (`net[INO]:KEY`): the tree's must be that one.
    pub external_ns: Vec<(String, u64)>,
    /// DUMP: the tree's PID namespace made outside it (`pid[INO]:KEY`, runc's
    /// `extRootPidNS`), recorded as external (ckpt's `dump --external pidns[INO]:KEY`).
    pub external_pidns: Option<crate::model::ExternalPidNs>,
    /// RPC `root` other than "/": at DUMP the tree's root directory (checked to be the
    /// dumped root's, see [`map::root_at_dump`]); at RESTORE the directory the tree's
    /// root mount is bound from (an external mount of "/").
    pub root: Option<PathBuf>,
    /// DUMP: `freeze_cgroup` / `--freeze-cgroup`: the tree is frozen with that cgroup's
    /// freezer (ckpt's `dump --freeze-cgroup=PATH`, see [`map::freeze_cgroup`]).
    pub freeze_cgroup: Option<crate::dump::FreezeCgroup>,
}

impl Opts {
    pub fn work_dir(&self) -> &Path {
        self.work_dir.as_deref().unwrap_or(&self.images_dir)
    }
}

/// `criu ARGS...` (ARGS without the program name). Returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = match args.into_iter().map(OsString::into_string).collect() {
        Ok(a) => a,
        Err(a) => {
            Log::stderr().error(&format!("argument {a:?} is not valid UTF-8"));
            return 1;
        }
    };
    let Some(pos) = args.iter().position(|a| !a.starts_with('-') || a == "-") else {
        // Only options: `criu --version`, `criu -V`, `criu --help`.
        return match args.first().map(String::as_str) {
            Some("--version" | "-V") => {
                println!("Version: {VERSION_MAJOR}.{VERSION_MINOR}");
                0
            }
            Some("--help" | "-h") | None => {
                print!("{}", ops::USAGE);
                0
            }
            Some(o) => {
                Log::stderr().error(&format!("unknown option {o}"));
                1
            }
        };
    };
    let cmd = args[pos].clone();
    // CRIU takes options before and after the command.
    let rest: Vec<String> = args[..pos]
        .iter()
        .chain(&args[pos + 1..])
        .cloned()
        .collect();
    match cmd.as_str() {
        "dump" | "restore" => ops::command(&cmd, &rest),
        "check" => ops::check(&rest),
        "swrk" => swrk::main(&rest),
        "--version" | "-V" => {
            println!("Version: {VERSION_MAJOR}.{VERSION_MINOR}");
            0
        }
        other => {
            let what = match other {
                "pre-dump" | "page-server" | "lazy-pages" | "service" | "dedup" | "cpuinfo"
                | "exec" | "show" => {
                    format!("the command {other:?} is not built in ckpt's criu front end")
                }
                _ => format!("unknown command {other:?}"),
            };
            Log::stderr().error(&what);
            1
        }
    }
}

/// The answer to `criu check --feature NAME` (and FEATURE_CHECK): `Ok(())` when ckpt
/// offers it on this host, `Err(why)` when not, or None for a name CRIU does not have.
pub fn feature(name: &str) -> Option<Result<(), String>> {
    let kernel = |f: &str| -> Result<(), String> {
        match crate::restore::host_facilities()
            .into_iter()
            .find(|(n, _, _)| *n == f)
        {
            Some((_, _, r)) => r,
            None => Err(format!("no kernel facility {f}")),
        }
    };
    let not_built = |what: &str| Err(format!("ckpt does not {what}"));
    Some(match name {
        // Memory tracking between pre-dumps (soft-dirty bits): ckpt has no pre-dump.
        "mem_dirty_track" => not_built("track dirty memory (no pre-dump, no soft-dirty)"),
        "uffd" | "uffd-noncoop" | "lazy_pages" => {
            not_built("restore memory lazily (no userfaultfd page server)")
        }
        "tcp_half_closed" => not_built("restore half-closed TCP connections (refused at dump)"),
        "timens" => {
            if Path::new("/proc/self/ns/time").exists() {
                Ok(())
            } else {
                Err("this kernel has no time namespaces".into())
            }
        }
        "clone3_set_tid" => kernel("clone3-set-tid"),
        "can_map_vdso" => kernel("map-vdso-64"),
        "get_rseq_conf" => kernel("rseq"),
        "seccomp_suspend" | "seccomp_filters" => Ok(()),
        "pidfd_store" => not_built("keep a pidfd store between pre-dumps"),
        "network_lock_nftables" => Ok(()),
        "compat_cr" => kernel("map-vdso-32"),
        "userns"
        | "cgroupns"
        | "external_net_ns"
        | "ns_pid"
        | "move_mount_set_group"
        | "link_nsid"
        | "nsid"
        | "sk_ns"
        | "tun"
        | "tun_ns"
        | "newifindex"
        | "autofs"
        | "loginuid"
        | "aio_remap"
        | "timerfd"
        | "net_diag_raw"
        | "apparmor_stacking"
        | "sockopt_buf_lock"
        | "ipv6_freebind"
        | "ima"
        | "mnt_id"
        | "fdinfo_lock"
        | "kcmp_epoll"
        | "sk_unix_file"
        | "memfd_hugetlb"
        | "openat2" => {
            return Some(feature_other(name));
        }
        _ => return None,
    })
}

/// Every feature name `check --feature` answers (`check --feature list`).
pub const FEATURES: &[&str] = &[
    "mem_dirty_track",
    "uffd",
    "uffd-noncoop",
    "lazy_pages",
    "tcp_half_closed",
    "timens",
    "clone3_set_tid",
    "can_map_vdso",
    "get_rseq_conf",
    "seccomp_suspend",
    "seccomp_filters",
    "pidfd_store",
    "network_lock_nftables",
    "compat_cr",
    "userns",
    "cgroupns",
    "external_net_ns",
    "ns_pid",
    "move_mount_set_group",
    "link_nsid",
    "nsid",
    "sk_ns",
    "tun",
    "tun_ns",
    "newifindex",
    "autofs",
    "loginuid",
    "aio_remap",
    "timerfd",
    "net_diag_raw",
    "apparmor_stacking",
    "sockopt_buf_lock",
    "ipv6_freebind",
    "ima",
    "mnt_id",
    "fdinfo_lock",
    "kcmp_epoll",
    "sk_unix_file",
    "memfd_hugetlb",
    "openat2",
];

/// The features of CRIU's list ckpt has no answer for of its own: not offered.
fn feature_other(name: &str) -> Result<(), String> {
    Err(format!(
        "ckpt's criu front end does not offer {name:?} (not built, or not checked)"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_feature_has_an_answer() {
        for f in super::FEATURES {
            assert!(super::feature(f).is_some(), "{f}");
        }
        assert!(super::feature("no_such_feature").is_none());
    }
}
