//! `criu swrk FD`: CRIU's RPC service on an inherited SOCK_SEQPACKET socket, one
//! `criu_req` / `criu_resp` per packet, as runc, crun (libcriu) and containerd use it.
//!
//! The caller's image and work directories come as descriptor numbers of the caller,
//! opened here through /proc/PEER/fd/N (PEER: the socket's peer); `inherit_fd`
//! descriptors are the service's own (inherited from the caller). With
//! `notify_scripts`, each notification is a `criu_resp` of type NOTIFY, and the caller's
//! NOTIFY request with `notify_success` is awaited before going on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use prost::Message;

use super::ops::{self, Notifier};
use super::rpc::{self, Req, ReqType, Resp};
use super::{Log, Opts};
use crate::sys::seqpacket;

/// The largest request accepted.
const MAX_MSG: usize = 1 << 20;

/// `criu swrk FD`.
pub fn main(args: &[String]) -> i32 {
    let early = Log::stderr();
    let fd: i32 = match args {
        [fd] => match fd.parse() {
            Ok(fd) => fd,
            Err(_) => {
                early.error(&format!("criu swrk: {fd:?} is not a descriptor number"));
                return 1;
            }
        },
        _ => {
            early.error("usage: criu swrk FD");
            return 1;
        }
    };
    let sock = match seqpacket::adopt(fd) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            early.error(&format!("criu swrk: {e}"));
            return 1;
        }
    };
    loop {
        let req = match seqpacket::recv(&sock, MAX_MSG) {
            Ok(Some(b)) => match Req::decode(&b[..]) {
                Ok(r) => r,
                Err(e) => {
                    early.error(&format!("criu swrk: a request that does not decode: {e}"));
                    return 1;
                }
            },
            // The caller closed its side: done.
            Ok(None) => return 0,
            Err(e) => {
                early.error(&format!("criu swrk: {e}"));
                return 1;
            }
        };
        let keep_open = req.keep_open.unwrap_or(false);
        let resp = serve(&sock, req);
        let ok = resp.success;
        if let Err(e) = seqpacket::send(&sock, &resp.encode_to_vec()) {
            early.error(&format!("criu swrk: cannot answer: {e}"));
            return 1;
        }
        if !keep_open {
            return if ok { 0 } else { 1 };
        }
    }
}

fn answer(ty: ReqType) -> Resp {
    Resp {
        r#type: ty as i32,
        success: true,
        ..Default::default()
    }
}

/// A failure answer: `cr_errmsg` says why (and the log has it as an "Error" line).
fn failure(ty: ReqType, errno: i32, msg: String) -> Resp {
    Resp {
        r#type: ty as i32,
        success: false,
        cr_errno: Some(errno),
        cr_errmsg: Some(msg),
        ..Default::default()
    }
}

/// Serve one request.
fn serve(sock: &Arc<OwnedFd>, req: Req) -> Resp {
    let ty = ReqType::try_from(req.r#type).unwrap_or(ReqType::Empty);
    match ty {
        ReqType::Version => Resp {
            version: Some(rpc::Version {
                major_number: super::VERSION_MAJOR,
                minor_number: super::VERSION_MINOR,
                gitid: None,
                sublevel: None,
                extra: None,
                name: Some(format!("ckpt {}", env!("CARGO_PKG_VERSION"))),
            }),
            ..answer(ty)
        },
        ReqType::FeatureCheck => {
            let asked = req.features.unwrap_or_default();
            let has = |name: &str| matches!(super::feature(name), Some(Ok(())));
            Resp {
                features: Some(rpc::Features {
                    mem_track: asked.mem_track.map(|_| has("mem_dirty_track")),
                    lazy_pages: asked.lazy_pages.map(|_| has("lazy_pages")),
                    pidfd_store: asked.pidfd_store.map(|_| has("pidfd_store")),
                }),
                ..answer(ty)
            }
        }
        ReqType::Check => match ops::host_check() {
            Ok(()) => answer(ty),
            Err(p) => failure(ty, libc::EOPNOTSUPP, p.join("; ")),
        },
        ReqType::Dump | ReqType::Restore => transaction(sock, ty, req.opts),
        other => failure(
            ty,
            libc::EOPNOTSUPP,
            format!(
                "the request {other:?} ({}) is not built in ckpt's criu front end",
                req.r#type
            ),
        ),
    }
}

/// A DUMP or RESTORE request.
fn transaction(sock: &Arc<OwnedFd>, ty: ReqType, opts: Option<rpc::Opts>) -> Resp {
    let Some(ro) = opts else {
        return failure(ty, libc::EINVAL, "the request has no options".into());
    };
    let peer = match seqpacket::peer_pid(sock) {
        Ok(p) => p,
        Err(e) => return failure(ty, libc::EINVAL, e.to_string()),
    };
    // The caller's directories, held open for the whole request.
    let open_dir = |n: i32| -> Result<(std::fs::File, PathBuf), String> {
        let p = format!("/proc/{peer}/fd/{n}");
        let f = std::fs::File::open(&p)
            .map_err(|e| format!("cannot open the caller's descriptor {n} ({p}): {e}"))?;
        let ours = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        if !ours.is_dir() {
            return Err(format!("the caller's descriptor {n} is not a directory"));
        }
        Ok((f, ours))
    };
    let (_images, images_dir) = match open_dir(ro.images_dir_fd) {
        Ok(d) => d,
        Err(e) => return failure(ty, libc::EBADF, e),
    };
    let work = match ro.work_dir_fd.map(open_dir).transpose() {
        Ok(w) => w,
        Err(e) => return failure(ty, libc::EBADF, e),
    };
    let mut o = Opts {
        pid: ro.pid,
        images_dir,
        work_dir: work.as_ref().map(|(_, p)| p.clone()),
        log_file: ro.log_file.clone(),
        log_level: ro.log_level.unwrap_or(2),
        leave_running: ro.leave_running.unwrap_or(false),
        shell_job: ro.shell_job.unwrap_or(false),
        tcp_established: ro.tcp_established.unwrap_or(false),
        file_locks: ro.file_locks.unwrap_or(false),
        external: ro.ext_unix_sk.unwrap_or(false),
        detach: true,
        rst_sibling: ro.rst_sibling.unwrap_or(false),
        pidfile: None,
        inherit_fd: ro
            .inherit_fd
            .iter()
            .map(|i| (i.fd, i.key.clone()))
            .collect(),
        action_scripts: Vec::new(),
        exec_cmd: Vec::new(),
        orphan_pts_master: ro.orphan_pts_master.unwrap_or(false),
        ext_mounts: Vec::new(),
        join_ns: Vec::new(),
        cg_roots: Vec::new(),
        cg_mode: None,
        external_ns: Vec::new(),
        external_pidns: None,
        root: ro
            .root
            .as_deref()
            .filter(|r| std::path::Path::new(r) != std::path::Path::new("/"))
            .map(PathBuf::from),
        freeze_cgroup: None,
    };
    let mapped = engine_options(ty, &ro, &mut o);
    if o.log_file.as_deref().is_some_and(|f| f.contains('/')) {
        return failure(
            ty,
            libc::EINVAL,
            "opts.log_file: a name in the work directory, without subdirectories".into(),
        );
    }
    let log = match Log::open(o.work_dir(), o.log_file.as_deref(), o.log_level, false) {
        Ok(l) => l,
        Err(e) => return failure(ty, libc::EIO, e),
    };
    log.info(&format!("criu swrk: {ty:?} request from process {peer}"));
    log.debug(&format!("criu swrk: the request's options: {ro:?}"));
    let mut refused = refusals(ty, &ro);
    refused.extend(mapped);
    if !refused.is_empty() {
        for r in &refused {
            log.error(r);
        }
        return failure(ty, libc::EOPNOTSUPP, refused.join("; "));
    }
    let notifier: Option<Notifier> = ro.notify_scripts.unwrap_or(false).then(|| {
        let sock = sock.clone();
        let n: Notifier =
            Arc::new(move |action: &str, pid: Option<i32>| notify(&sock, action, pid));
        n
    });
    if ty == ReqType::Dump {
        if o.pid.is_none() {
            let m = "DUMP without opts.pid (dumping the requesting process itself) is not \
                     built in ckpt's criu front end"
                .to_string();
            log.error(&m);
            return failure(ty, libc::EOPNOTSUPP, m);
        }
        match ops::run_dump(&o, &log, notifier.as_ref()) {
            Ok(_) => Resp {
                dump: Some(rpc::DumpResp {
                    restored: Some(false),
                }),
                ..answer(ty)
            },
            Err(e) => {
                log.error(&e);
                failure(ty, libc::EIO, e)
            }
        }
    } else {
        let pts: Option<ops::PtsSender> = ro.notify_scripts.unwrap_or(false).then(|| {
            let sock = sock.clone();
            let p: ops::PtsSender = Arc::new(move |fd| notify_with_fd(&sock, fd));
            p
        });
        match ops::run_restore(&o, &log, notifier.as_ref(), pts, false) {
            Ok(l) => Resp {
                restore: Some(rpc::RestoreResp { pid: l.root }),
                ..answer(ty)
            },
            Err(e) => {
                log.error(&e);
                failure(ty, libc::EIO, e)
            }
        }
    }
}

/// The notification `orphan-pts-master` with the pty's master `fd` attached
/// (SCM_RIGHTS, as CRIU sends it), and the caller's acknowledgement.
fn notify_with_fd(sock: &OwnedFd, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
    let action = "orphan-pts-master";
    let msg = Resp {
        notify: Some(rpc::Notify {
            script: Some(action.to_string()),
            pid: None,
        }),
        ..answer(ReqType::Notify)
    };
    seqpacket::send_with_fd(sock, &msg.encode_to_vec(), fd)
        .map_err(|e| format!("cannot send the notification {action}: {e}"))?;
    await_ack(sock, action)
}

/// Send the notification `action` and wait for the caller's acknowledgement.
fn notify(sock: &OwnedFd, action: &str, pid: Option<i32>) -> Result<(), String> {
    let msg = Resp {
        notify: Some(rpc::Notify {
            script: Some(action.to_string()),
            pid,
        }),
        ..answer(ReqType::Notify)
    };
    seqpacket::send(sock, &msg.encode_to_vec())
        .map_err(|e| format!("cannot send the notification {action}: {e}"))?;
    await_ack(sock, action)
}

/// The caller's acknowledgement of the notification `action`.
fn await_ack(sock: &OwnedFd, action: &str) -> Result<(), String> {
    let ack = seqpacket::recv(sock, MAX_MSG)
        .map_err(|e| format!("no acknowledgement of the notification {action}: {e}"))?
        .ok_or_else(|| format!("the caller went away at the notification {action}"))?;
    let ack = Req::decode(&ack[..])
        .map_err(|e| format!("the acknowledgement of {action} does not decode: {e}"))?;
    if ack.r#type != ReqType::Notify as i32 {
        return Err(format!(
            "the caller answered the notification {action} with a request of type {}",
            ack.r#type
        ));
    }
    if ack.notify_success != Some(true) {
        return Err(format!(
            "the caller's handling of the notification {action} failed"
        ));
    }
    Ok(())
}

/// The mount, namespace and cgroup options of `ro` mapped into `o` (see
/// [`super::map`]); what cannot be mapped, by name.
fn engine_options(ty: ReqType, ro: &rpc::Opts, o: &mut Opts) -> Vec<String> {
    use super::map;
    let mut out = Vec::new();
    for m in &ro.ext_mnt {
        if ty == ReqType::Dump {
            let same = m.key != m.val
                && ro
                    .pid
                    .is_some_and(|pid| map::same_file_at(pid, &m.key, &m.val));
            if let Err(e) = map::ext_mnt_at_dump(&m.key, &m.val, same) {
                out.push(format!("opts.{e}"));
            }
        } else {
            match map::ext_mnt_at_restore(&m.key, &m.val) {
                Ok(p) => o.ext_mounts.push(p),
                Err(e) => out.push(format!("opts.{e}")),
            }
        }
    }
    for j in &ro.join_ns {
        if ty == ReqType::Dump {
            out.push(format!("opts.join_ns {}: an option of RESTORE", j.ns));
            continue;
        }
        match map::join_ns(&j.ns, &j.ns_file, j.extra_opt.as_deref()) {
            Ok(j) => o.join_ns.push(j),
            Err(e) => out.push(format!("opts.{e}")),
        }
    }
    for c in &ro.cg_root {
        if ty == ReqType::Dump {
            out.push(format!("opts.cg_root {}: an option of RESTORE", c.path));
            continue;
        }
        o.cg_roots.push((c.ctrl.clone(), c.path.clone()));
    }
    match map::rpc_cg_mode(ro.manage_cgroups, ro.manage_cgroups_mode) {
        Ok(m) => {
            if ro.manage_cgroups.is_some() || ro.manage_cgroups_mode.is_some() {
                o.cg_mode = Some(m);
            }
        }
        Err(e) => out.push(e),
    }
    if let Some(p) = &ro.freeze_cgroup {
        if ty == ReqType::Dump {
            match map::freeze_cgroup(p) {
                Ok(f) => o.freeze_cgroup = Some(f),
                Err(e) => out.push(format!("opts.{e}")),
            }
        }
    }
    for x in &ro.external {
        if ty == ReqType::Dump {
            if let Err(e) = map::take_external_at_dump(x, o) {
                out.push(format!("opts.{e}"));
            }
        } else {
            out.push(format!(
                "opts.external {x}: not taken at RESTORE (a namespace is given with \
                 inherit_fd or join_ns, a mount with ext_mnt)"
            ));
        }
    }
    out
}

/// Every option of `o` ckpt cannot honour for a request of type `ty`, by name.
pub(crate) fn refusals(ty: ReqType, o: &rpc::Opts) -> Vec<String> {
    let mut out = Vec::new();
    let mut no = |set: bool, name: &str, why: &str| {
        if set {
            out.push(format!("opts.{name}: {why}"));
        }
    };
    let mounts = "not built in ckpt's criu front end (external mounts are given one by \
                  one with ext_mnt)";
    let cg = "not built in ckpt's criu front end (ckpt records the limits of \
              kinds::cglimits, restored by the manage_cgroups modes)";
    let yes = |b: Option<bool>| b.unwrap_or(false);
    no(yes(o.auto_ext_mnt), "auto_ext_mnt", mounts);
    no(yes(o.ext_sharing), "ext_sharing", mounts);
    no(yes(o.ext_masters), "ext_masters", mounts);
    no(!o.skip_mnt.is_empty(), "skip_mnt", mounts);
    no(!o.enable_fs.is_empty(), "enable_fs", mounts);
    no(o.cgroup_props.is_some(), "cgroup_props", cg);
    no(o.cgroup_props_file.is_some(), "cgroup_props_file", cg);
    no(
        !o.cgroup_dump_controller.is_empty(),
        "cgroup_dump_controller",
        cg,
    );
    no(
        o.freeze_cgroup.is_some() && ty != ReqType::Dump,
        "freeze_cgroup",
        "an option of DUMP",
    );
    let ns = "not built in ckpt's criu front end (namespaces made outside the tree are \
              given with join_ns or an inherit_fd of the namespace)";
    // runc always asks for an empty network namespace (it does not manage network
    // devices): ckpt restores the tree's network namespace as it was (loopback, its
    // addresses and the sockets bound in it; dump refuses what it cannot restore).
    no(
        o.empty_ns
            .is_some_and(|m| m & !(libc::CLONE_NEWNET as u32) != 0),
        "empty_ns",
        "only CLONE_NEWNET is taken (ckpt restores the network namespace as it was)",
    );
    no(!o.veths.is_empty(), "veths", ns);
    no(!o.unix_sk_ino.is_empty(), "unix_sk_ino", "use ext_unix_sk");
    // (At DUMP it changes nothing, as in CRIU: runc sends it with every request.)
    no(
        yes(o.orphan_pts_master) && ty == ReqType::Restore && !yes(o.notify_scripts),
        "orphan_pts_master",
        "an option of RESTORE, with notify_scripts (the master goes with a notification)",
    );
    let incr = "ckpt has no incremental dumps, page server or lazy pages";
    no(o.ps.is_some(), "ps", incr);
    no(o.parent_img.is_some(), "parent_img", incr);
    no(yes(o.track_mem), "track_mem", incr);
    no(yes(o.auto_dedup), "auto_dedup", incr);
    no(yes(o.lazy_pages), "lazy_pages", incr);
    no(o.status_fd.is_some(), "status_fd", incr);
    let nb = "not built in ckpt's criu front end";
    // evasive_devices only lets CRIU open a device by another path: ckpt opens each
    // device file by its path and checks it, or refuses (runc sends it at RESTORE).
    no(
        yes(o.evasive_devices) && ty == ReqType::Dump,
        "evasive_devices",
        "an option of RESTORE",
    );
    no(yes(o.link_remap), "link_remap", nb);
    no(yes(o.force_irmap), "force_irmap", nb);
    no(!o.irmap_scan_paths.is_empty(), "irmap_scan_paths", nb);
    no(yes(o.weak_sysctls), "weak_sysctls", nb);
    no(o.lsm_profile.is_some(), "lsm_profile", nb);
    // runc names /etc/criu/runc.conf whether it exists or not; CRIU skips a missing one.
    no(
        o.config_file
            .as_deref()
            .is_some_and(|f| std::path::Path::new(f).exists()),
        "config_file",
        "ckpt does not read CRIU's configuration files (this one exists)",
    );
    no(o.timeout.is_some(), "timeout", nb);
    no(!o.exec_cmd.is_empty(), "exec_cmd", nb);
    no(
        o.cpu_cap.is_some_and(|c| c != u32::MAX),
        "cpu_cap",
        "ckpt applies its own CPU policy (compatible)",
    );
    no(
        o.ghost_limit.is_some(),
        "ghost_limit",
        "ckpt keeps every deleted file's contents whatever its size; a limit is not built",
    );
    let tcp = "ckpt restores established TCP connections exactly or refuses them";
    no(yes(o.tcp_close), "tcp_close", tcp);
    no(yes(o.tcp_skip_in_flight), "tcp_skip_in_flight", tcp);
    if ty == ReqType::Dump {
        no(yes(o.rst_sibling), "rst_sibling", "an option of RESTORE");
        no(
            !o.inherit_fd.is_empty(),
            "inherit_fd",
            "an option of RESTORE",
        );
    } else {
        no(yes(o.leave_running), "leave_running", "an option of DUMP");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> rpc::Opts {
        rpc::Opts {
            images_dir_fd: 3,
            ..Default::default()
        }
    }

    #[test]
    fn plain_requests_pass() {
        let mut o = opts();
        o.pid = Some(5);
        o.leave_running = Some(true);
        o.shell_job = Some(true);
        o.tcp_established = Some(true);
        o.file_locks = Some(true);
        o.notify_scripts = Some(true);
        o.root = Some("/".into());
        o.manage_cgroups_mode = Some(rpc::CgMode::Ignore as i32);
        assert_eq!(refusals(ReqType::Dump, &o), Vec::<String>::new());
        let mut r = opts();
        r.rst_sibling = Some(true);
        r.inherit_fd.push(rpc::InheritFd {
            key: "pipe:[1]".into(),
            fd: 4,
        });
        assert_eq!(refusals(ReqType::Restore, &r), Vec::<String>::new());
    }

    #[test]
    fn runc_container_options_are_mapped_or_refused_by_name() {
        let mut o = opts();
        o.ext_mnt.push(rpc::ExtMountMap {
            key: "/etc/hosts".into(),
            val: "/bundle/hosts".into(),
        });
        o.manage_cgroups = Some(true);
        o.cg_root.push(rpc::CgroupRoot {
            ctrl: None,
            path: "/new".into(),
        });
        o.join_ns.push(rpc::JoinNamespace {
            ns: "net".into(),
            ns_file: "/run/netns/a".into(),
            extra_opt: None,
        });
        o.root = Some("/run/runc/rootfs".into());
        o.orphan_pts_master = Some(true);
        let r = refusals(ReqType::Restore, &o);
        // (root: the source of the mount on "/", see map::ext_mounts_for_image)
        assert!(
            r.iter().any(|m| m.starts_with("opts.orphan_pts_master:")),
            "{r:?}"
        );
        assert_eq!(r.len(), 1, "{r:?}");
        let mut mapped = crate::criu::Opts::default();
        assert!(engine_options(ReqType::Restore, &o, &mut mapped).is_empty());
        assert_eq!(
            mapped.ext_mounts,
            vec![("/etc/hosts".to_string(), "/bundle/hosts".to_string())]
        );
        assert_eq!(mapped.cg_roots, vec![(None, "/new".to_string())]);
        assert_eq!(mapped.cg_mode, Some(rpc::CgMode::Soft));
        assert_eq!(mapped.join_ns.len(), 1);
        // At DUMP the mount's name must be its mount point; join_ns, cg_root are
        // RESTORE's; a join with an extra option is refused by name.
        let mut d = Opts::default();
        let r = engine_options(ReqType::Dump, &o, &mut d);
        assert!(r.iter().any(|m| m.contains("ext_mnt /etc/hosts")), "{r:?}");
        assert!(r.iter().any(|m| m.contains("join_ns net")), "{r:?}");
        assert!(r.iter().any(|m| m.contains("cg_root /new")), "{r:?}");
        o.join_ns[0].extra_opt = Some("x".into());
        let r = engine_options(ReqType::Restore, &o, &mut Opts::default());
        assert!(r.iter().any(|m| m.contains("extra option")), "{r:?}");
        o.external.push("pid[5]:extRootPidNS".into());
        let mut d = Opts::default();
        let r = engine_options(ReqType::Dump, &o, &mut d);
        assert!(!r.iter().any(|m| m.contains("external pid[5]")), "{r:?}");
        assert_eq!(d.external_pidns.map(|e| e.key), Some("extRootPidNS".into()));
        o.external.push("mnt[5]:x".into());
        let r = engine_options(ReqType::Dump, &o, &mut Opts::default());
        assert!(
            r.iter().any(|m| m.starts_with("opts.external mnt[5]")),
            "{r:?}"
        );
    }

    #[test]
    fn default_valued_fields_decode_as_unset() {
        // The ghost_limit and cpu_cap defaults are not "set" unless sent.
        let o = rpc::Opts::decode(&opts().encode_to_vec()[..]).unwrap();
        assert!(o.ghost_limit.is_none() && o.cpu_cap.is_none());
        assert_eq!(o.log_level, None);
    }

    #[test]
    fn what_runc_always_sends_is_taken() {
        // runc 1.1's DUMP: its rootfs as root, the freezer cgroup, an empty network
        // namespace asked for, orphan_pts_master, a CRIU configuration file that is
        // not there.
        let mut d = opts();
        d.pid = Some(5);
        d.root = Some("/run/bundle/rootfs".into());
        d.freeze_cgroup = Some("/sys/fs/cgroup/freezer/c1".into());
        d.empty_ns = Some(libc::CLONE_NEWNET as u32);
        d.orphan_pts_master = Some(true);
        d.notify_scripts = Some(true);
        d.manage_cgroups = Some(true);
        d.config_file = Some("/nonexistent/criu/runc.conf".into());
        assert_eq!(refusals(ReqType::Dump, &d), Vec::<String>::new());
        // Its RESTORE: evasive_devices, rst_sibling, the same root and orphan_pts_master.
        let mut r = opts();
        r.evasive_devices = Some(true);
        r.rst_sibling = Some(true);
        r.root = Some("/run/runc/c1/criu-root".into());
        r.orphan_pts_master = Some(true);
        r.notify_scripts = Some(true);
        r.empty_ns = Some(libc::CLONE_NEWNET as u32);
        r.config_file = d.config_file.clone();
        assert_eq!(refusals(ReqType::Restore, &r), Vec::<String>::new());
        // What stays refused, by name.
        d.empty_ns = Some((libc::CLONE_NEWNET | libc::CLONE_NEWUTS) as u32);
        d.config_file = Some("/".into());
        d.evasive_devices = Some(true);
        let got = refusals(ReqType::Dump, &d);
        for name in ["empty_ns", "config_file", "evasive_devices"] {
            assert!(
                got.iter().any(|m| m.starts_with(&format!("opts.{name}:"))),
                "{name}: {got:?}"
            );
        }
        r.freeze_cgroup = Some("/sys/fs/cgroup/freezer/c1".into());
        let got = refusals(ReqType::Restore, &r);
        assert!(
            got.iter().any(|m| m.starts_with("opts.freeze_cgroup:")),
            "{got:?}"
        );
    }
}
