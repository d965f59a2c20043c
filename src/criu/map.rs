//! CRIU's mount, namespace and cgroup options mapped onto ckpt's engine options:
//! `ext_mnt` / `--ext-mount-map` onto `restore --external-mount`, `join_ns` /
//! `--join-ns` and the namespace descriptors of `inherit_fd` onto `restore --join-ns`,
//! `cg_root` / `--cgroup-root` onto `restore --cgroup-root`, and the
//! `manage_cgroups` modes onto `restore --cgroups` and `--manage-cgroups`. Each
//! function here is pure (or reads only /proc), and says by name what it cannot map.

use std::path::PathBuf;

use super::rpc::CgMode;
use crate::restore::{CgroupMode, LimitsMode};

/// CRIU's `freeze_cgroup` / `--freeze-cgroup PATH` onto ckpt's `dump
/// --freeze-cgroup=PATH`: the cgroup directory to freeze (runc sends its container's:
/// with cgroup v1 the freezer hierarchy's directory, with v2 the unified one). It must
/// be a cgroup ckpt sees mounted, with a freezer.
pub fn freeze_cgroup(path: &str) -> Result<crate::dump::FreezeCgroup, String> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!("freeze_cgroup {path}: not an absolute path"));
    }
    crate::dump::freezable_cgroup_at(&p).map_err(|e| format!("freeze_cgroup {e}"))?;
    Ok(crate::dump::FreezeCgroup::At(p))
}

/// CRIU's cgroup mode onto ckpt's (where the processes go, which limits are written):
///
/// - IGNORE: `--cgroups=ignore` (the processes stay in the restoring ckpt's cgroups);
/// - CG_NONE: `--cgroups=existing` (each cgroup must exist; no limit written);
/// - PROPS: `--cgroups=existing --manage-cgroups=all` (each must exist; its limits are
///   written);
/// - SOFT (CRIU's default, and DEFAULT): `--manage-cgroups=made` (missing cgroups are
///   made, with their limits; existing ones are left as they are);
/// - FULL: `--manage-cgroups=all` (missing ones made; every one gets its limits);
/// - STRICT: `--cgroups=fresh --manage-cgroups=all` (none may exist; all are made
///   with their limits).
pub fn cg_mode(m: CgMode) -> (CgroupMode, LimitsMode) {
    match m {
        CgMode::Ignore => (CgroupMode::Ignore, LimitsMode::Off),
        CgMode::CgNone => (CgroupMode::Existing, LimitsMode::Off),
        CgMode::Props => (CgroupMode::Existing, LimitsMode::All),
        CgMode::Soft | CgMode::Default => (CgroupMode::Place, LimitsMode::Made),
        CgMode::Full => (CgroupMode::Place, LimitsMode::All),
        CgMode::Strict => (CgroupMode::Fresh, LimitsMode::All),
    }
}

/// The mode of `--manage-cgroups=NAME` (CRIU's names; without a name: soft).
pub fn cg_mode_named(name: Option<&str>) -> Result<CgMode, String> {
    Ok(match name {
        None | Some("soft") => CgMode::Soft,
        Some("ignore") => CgMode::Ignore,
        Some("none") => CgMode::CgNone,
        Some("props") => CgMode::Props,
        Some("full") => CgMode::Full,
        Some("strict") => CgMode::Strict,
        Some(m) => {
            return Err(format!(
                "--manage-cgroups={m}: CRIU's modes are none, props, soft, full, strict \
                 and ignore"
            ));
        }
    })
}

/// The RPC's manage_cgroups (CRIU: true is SOFT, false IGNORE) and
/// manage_cgroups_mode (wins when given); neither: CRIU's default, SOFT.
pub fn rpc_cg_mode(manage: Option<bool>, mode: Option<i32>) -> Result<CgMode, String> {
    match (mode, manage) {
        (Some(m), _) => CgMode::try_from(m)
            .map_err(|_| format!("opts.manage_cgroups_mode: {m} is no mode of CRIU's")),
        (None, Some(false)) => Ok(CgMode::Ignore),
        (None, Some(true) | None) => Ok(CgMode::Soft),
    }
}

/// One `ext_mnt` pair at DUMP: CRIU's KEY is the mount point in the tree's mount
/// namespace, VAL the name it gets in the image. ckpt names every external mount by
/// its mount point, so the name must be the mount point (as runc sends it for its bind
/// mounts), or (runc's masked files, `/proc/kcore` named `/dev/null`) a file that is
/// the very file bound there (`same_file`, see [`same_file_at`]), which restore binds
/// again from where it was (as recorded: the tree's own /dev/null, or a host file
/// checked to be the same).
pub fn ext_mnt_at_dump(key: &str, val: &str, same_file: bool) -> Result<(), String> {
    if !key.starts_with('/') {
        return Err(format!("ext_mnt {key}: not an absolute mount point"));
    }
    if key != val && !(val.starts_with('/') && same_file) {
        return Err(format!(
            "ext_mnt {key}:{val}: ckpt names an external mount by its mount point; the \
             name must be {key} (or the host file bound there)"
        ));
    }
    Ok(())
}

/// Whether `val`, as the tree of `pid` sees it or as a host path, is the file the tree
/// sees at `key` (device and inode), for [`ext_mnt_at_dump`] (runc binds the
/// container's own /dev/null over its masked files).
pub fn same_file_at(pid: i32, key: &str, val: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: String| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(at) = id(format!("/proc/{pid}/root{key}")) else {
        return false;
    };
    id(format!("/proc/{pid}/root{val}")) == Some(at) || id(val.to_string()) == Some(at)
}

/// CRIU's `root` at DUMP (runc sends the container's rootfs): it must be the root
/// directory of the dumped process `pid` (ckpt records the root mount's source itself).
pub fn root_at_dump(pid: i32, root: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let inside = std::fs::metadata(format!("/proc/{pid}/root"))
        .map_err(|e| format!("root {}: cannot read /proc/{pid}/root: {e}", root.display()))?;
    let given = std::fs::metadata(root).map_err(|e| format!("root {}: {e}", root.display()))?;
    if (inside.dev(), inside.ino()) != (given.dev(), given.ino()) {
        return Err(format!(
            "root {}: not the root directory of process {pid}",
            root.display()
        ));
    }
    Ok(())
}

/// (mount point, source) pairs.
pub type MountPairs = Vec<(String, String)>;

/// The `ext_mnt` pairs of a RESTORE for an image whose external mounts are `points`:
/// those naming one of them are kept; one naming none with KEY = VAL (runc's device
/// nodes and /dev/null, which ckpt binds again from where they were, checked to be the
/// same file) is dropped, said in the returned notes; any other is refused by name.
/// `root`: CRIU's `root` (runc's bind of the rootfs) is the source of the mount on "/".
pub fn ext_mounts_for_image(
    pairs: &[(String, String)],
    points: &[String],
    root: Option<&std::path::Path>,
) -> Result<(MountPairs, Vec<String>), String> {
    let mut keep = Vec::new();
    let mut notes = Vec::new();
    if let Some(r) = root {
        let r = r
            .to_str()
            .ok_or_else(|| format!("root {}: not UTF-8", r.display()))?;
        keep.push(("/".to_string(), r.to_string()));
    }
    for (k, v) in pairs {
        if points.iter().any(|p| p == k) {
            keep.push((k.clone(), v.clone()));
        } else if k == v {
            notes.push(format!(
                "ext_mnt {k}:{v}: no external mount of the image is named {k}; those bound \
                 from {v} at the dump are bound from it again"
            ));
        } else {
            return Err(format!(
                "ext_mnt {k}:{v}: the image has no external mount on {k}"
            ));
        }
    }
    Ok((keep, notes))
}

/// One `ext_mnt` pair at RESTORE: KEY names the external mount (its mount point at
/// dump), VAL is the host path bound there (`restore --external-mount KEY=VAL`).
pub fn ext_mnt_at_restore(key: &str, val: &str) -> Result<(String, String), String> {
    if !key.starts_with('/') {
        return Err(format!(
            "ext_mnt {key}:{val}: ckpt names an external mount by its absolute mount point"
        ));
    }
    if !val.starts_with('/') {
        return Err(format!(
            "ext_mnt {key}:{val}: the source must be an absolute host path"
        ));
    }
    Ok((key.to_string(), val.to_string()))
}

/// One `join_ns` (CRIU: NS, a namespace file or a PID, extra options): net, uts and
/// ipc onto `restore --join-ns`; the other kinds, and any extra option (CRIU's are for
/// user and mount namespaces), refused by name.
pub fn join_ns(ns: &str, file: &str, extra: Option<&str>) -> Result<(String, PathBuf), String> {
    if !["net", "uts", "ipc"].contains(&ns) {
        return Err(format!(
            "join_ns {ns}:{file}: ckpt joins only net, uts and ipc namespaces made outside \
             the tree"
        ));
    }
    if let Some(e) = extra.filter(|e| !e.is_empty()) {
        return Err(format!(
            "join_ns {ns}:{file}: the extra option {e:?} is not taken (ckpt takes none \
             for a {ns} namespace)"
        ));
    }
    if file.is_empty() {
        return Err(format!("join_ns {ns}: no namespace file"));
    }
    let path = if file.bytes().all(|b| b.is_ascii_digit()) {
        PathBuf::from(format!("/proc/{file}/ns/{ns}"))
    } else {
        PathBuf::from(file)
    };
    Ok((ns.to_string(), path))
}

/// One `external` at DUMP, as runc sends it for a namespace the container was given
/// (`net[INO]:KEY`, `pid[INO]:KEY`), taken into `o`: (kind, inode) for a network or
/// PID namespace (the dump checks that the tree's is that one; ckpt records a tree's
/// network namespace made outside it by itself, a PID namespace as external under
/// KEY); anything else refused by name.
pub fn take_external_at_dump(s: &str, o: &mut super::Opts) -> Result<(), String> {
    let (kind, ino) = external_at_dump(s)?;
    if kind == "pid" {
        let e = crate::kinds::task::extpidns::parse(s).map_err(|e| format!("external {e}"))?;
        if o.external_pidns.as_ref().is_some_and(|x| *x != e) {
            return Err(format!("external {s}: a second PID namespace"));
        }
        o.external_pidns = Some(e);
    }
    o.external_ns.push((kind, ino));
    Ok(())
}

/// (kind, inode) of one `external` at DUMP (see [`take_external_at_dump`]).
pub fn external_at_dump(s: &str) -> Result<(String, u64), String> {
    let bad = || {
        format!(
            "external {s}: ckpt takes only net[INODE]:KEY and pid[INODE]:KEY (a network \
             or PID namespace made outside the tree)"
        )
    };
    let (kind, rest) = s.split_once('[').ok_or_else(bad)?;
    let (ino, key) = rest.split_once("]:").ok_or_else(bad)?;
    let ino: u64 = ino.parse().map_err(|_| bad())?;
    if key.is_empty() {
        return Err(bad());
    }
    match kind {
        "net" => Ok(("net".into(), ino)),
        "pid" => Ok(("pid".into(), ino)),
        _ => Err(bad()),
    }
}

/// The namespace a descriptor of ours leads to, as /proc shows it ("net", inode).
pub fn namespace_of_fd(fd: i32) -> Option<(String, u64)> {
    let l = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let l = l.to_str()?;
    if l.starts_with('/') {
        // A namespace file opened through a bind mount (runc opens Podman's
        // /run/netns/NAME) reads as that path.
        return crate::sys::ns::kind_of_fd(fd).map(|(k, i)| (k.to_string(), i));
    }
    let (kind, rest) = l.split_once(":[")?;
    let ino = rest.strip_suffix(']')?.parse().ok()?;
    // Only namespace links read KIND:[INO] with a kind of /proc/PID/ns.
    ["net", "uts", "ipc", "pid", "mnt", "user", "cgroup", "time"]
        .contains(&kind)
        .then(|| (kind.to_string(), ino))
}

/// An `inherit_fd` whose descriptor is a namespace (runc gives the container's network
/// namespace so, under the KEY of its dump's `external`, e.g. `extRootNetNS`, or as
/// `net:[INO]`): the `--join-ns` it stands for. None: not a namespace. A key naming
/// another kind or inode than the descriptor's is refused.
pub fn inherit_namespace(fd: i32, key: &str) -> Option<Result<(String, PathBuf), String>> {
    let (kind, ino) = namespace_of_fd(fd)?;
    let names_other = key.split_once('[').is_some_and(|(k, r)| {
        let k = k.trim_end_matches(':');
        let i = r.trim_end_matches(']').split(']').next().unwrap_or("");
        ["net", "uts", "ipc", "pid", "mnt", "user", "cgroup", "time"].contains(&k)
            && (k != kind || i != ino.to_string())
    });
    if names_other {
        return Some(Err(format!(
            "inherit_fd {key}: descriptor {fd} is the {kind} namespace {kind}:[{ino}], not \
             the one the key names"
        )));
    }
    if !["net", "uts", "ipc", "pid"].contains(&kind.as_str()) {
        return Some(Err(format!(
            "inherit_fd {key}: descriptor {fd} is a {kind} namespace; ckpt joins only net, \
             uts, ipc and pid namespaces made outside the tree"
        )));
    }
    Some(Ok((kind, PathBuf::from(format!("/proc/self/fd/{fd}")))))
}

/// The one cgroup root for ckpt's engine from CRIU's `cg_root` entries (a controller,
/// or none for every hierarchy not named), for the hierarchies the image uses
/// (`used`: their controllers as /proc/PID/cgroup names them, empty for v2). An entry
/// with a controller applies to the v1 hierarchy that has it. ckpt's engine takes one
/// root for all hierarchies: different roots for two hierarchies the image uses are
/// refused, naming them. None: no entry applies.
pub fn cg_root(
    entries: &[(Option<String>, String)],
    used: &[String],
) -> Result<Option<String>, String> {
    for (c, p) in entries {
        if !p.starts_with('/') {
            return Err(format!(
                "cg_root {}{p}: not an absolute cgroup path",
                c.as_deref().map(|c| format!("{c}:")).unwrap_or_default()
            ));
        }
    }
    let default = entries
        .iter()
        .find(|(c, _)| c.as_deref().is_none_or(str::is_empty))
        .map(|(_, p)| p.clone());
    let mut chosen: Option<(String, String)> = None;
    for h in used {
        let ctrls: Vec<&str> = h.split(',').filter(|c| !c.is_empty()).collect();
        let specific = entries.iter().find(|(c, _)| {
            c.as_deref().is_some_and(|c| {
                !c.is_empty() && !h.is_empty() && c.split(',').any(|x| ctrls.contains(&x))
            })
        });
        let Some(root) = specific.map(|(_, p)| p.clone()).or_else(|| default.clone()) else {
            continue;
        };
        let shown = if h.is_empty() {
            "cgroup v2".to_string()
        } else {
            h.clone()
        };
        match &chosen {
            Some((other, r)) if *r != root => {
                return Err(format!(
                    "cg_root: {shown} gets {root} and {other} gets {r}; ckpt restores \
                     every hierarchy below one root"
                ));
            }
            Some(_) => {}
            None => chosen = Some((shown, root)),
        }
    }
    Ok(chosen.map(|(_, r)| r))
}

/// Whether CRIU's `cg_root` entries name ckpt's own cgroups (`own`: hierarchy
/// controllers, path), as runc sends them: it puts the restoring `criu` into the
/// container's new cgroups first (with the container's limits) and names each as the
/// root. CRIU then puts the tree's root cgroup there; ckpt leaves the tree in its own
/// cgroups (`--cgroups=ignore`), which is the same when every process of the image was
/// in the root's cgroups (else refused by name: sub-cgroups are not mapped so).
pub fn cg_roots_are_own(
    entries: &[(Option<String>, String)],
    own: &[(String, String)],
    processes: &[crate::model::Process],
) -> Result<bool, String> {
    if entries.is_empty() {
        return Ok(false);
    }
    let is_own = |(c, p): &(Option<String>, String)| {
        let c = c.as_deref().unwrap_or("");
        own.iter().any(|(ctrls, path)| {
            let hit = if c.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|x| x == c)
            };
            hit && path.trim_end_matches('/') == p.trim_end_matches('/')
        })
    };
    if !entries.iter().all(is_own) {
        return Ok(false);
    }
    let Some(root) = processes.first() else {
        return Ok(false);
    };
    let key = |p: &crate::model::Process| {
        let mut v: Vec<(String, String, bool)> = p
            .cgroups
            .iter()
            .map(|c| (c.controllers.clone(), c.path.clone(), c.relative))
            .collect();
        v.sort();
        v
    };
    let want = key(root);
    if let Some(p) = processes.iter().find(|p| key(p) != want) {
        return Err(format!(
            "cg_root: the roots given are ckpt's own cgroups (the caller's new ones), and \
             process {} was in other cgroups than the tree's root {}; ckpt puts the whole \
             tree there or nothing",
            p.pid, root.pid
        ));
    }
    Ok(true)
}

/// The hierarchies (controllers) the image's cgroup places and cgroup namespace roots
/// use.
pub fn used_hierarchies(ckpt: &crate::model::Checkpoint) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let places = ckpt.processes.iter().flat_map(|p| p.cgroups.iter()).chain(
        ckpt.namespaces
            .iter()
            .filter_map(|n| n.cgroup.as_ref())
            .flat_map(|c| c.roots.iter()),
    );
    for pl in places {
        if !out.contains(&pl.controllers) {
            out.push(pl.controllers.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_modes() {
        assert_eq!(
            cg_mode(CgMode::Ignore),
            (CgroupMode::Ignore, LimitsMode::Off)
        );
        assert_eq!(cg_mode(CgMode::Soft), (CgroupMode::Place, LimitsMode::Made));
        assert_eq!(
            cg_mode(CgMode::Strict),
            (CgroupMode::Fresh, LimitsMode::All)
        );
        assert_eq!(
            cg_mode(CgMode::Props),
            (CgroupMode::Existing, LimitsMode::All)
        );
        assert_eq!(rpc_cg_mode(None, None), Ok(CgMode::Soft));
        assert_eq!(rpc_cg_mode(Some(false), None), Ok(CgMode::Ignore));
        assert_eq!(rpc_cg_mode(Some(true), Some(4)), Ok(CgMode::Full));
        assert!(rpc_cg_mode(None, Some(99)).is_err());
        assert_eq!(cg_mode_named(None), Ok(CgMode::Soft));
        assert_eq!(cg_mode_named(Some("none")), Ok(CgMode::CgNone));
        assert!(cg_mode_named(Some("hard")).is_err());
    }

    #[test]
    fn mounts_and_namespaces() {
        assert!(ext_mnt_at_dump("/etc/hosts", "/etc/hosts", false).is_ok());
        assert!(ext_mnt_at_dump("/etc/hosts", "hosts", false).is_err());
        assert!(ext_mnt_at_dump("/etc/hosts", "hosts", true).is_err());
        assert!(ext_mnt_at_dump("/proc/kcore", "/dev/null", false).is_err());
        assert!(ext_mnt_at_dump("/proc/kcore", "/dev/null", true).is_ok());
        assert!(ext_mnt_at_dump("etc", "etc", false).is_err());
        assert_eq!(
            ext_mnt_at_restore("/data", "/srv/d"),
            Ok(("/data".into(), "/srv/d".into()))
        );
        assert!(ext_mnt_at_restore("/data", "rel").is_err());
        assert_eq!(
            join_ns("net", "/run/netns/a", None),
            Ok(("net".into(), PathBuf::from("/run/netns/a")))
        );
        assert_eq!(
            join_ns("uts", "42", Some("")),
            Ok(("uts".into(), PathBuf::from("/proc/42/ns/uts")))
        );
        let e = join_ns("net", "/x", Some("a,b")).unwrap_err();
        assert!(e.contains("extra option"), "{e}");
        assert!(join_ns("user", "/x", None).unwrap_err().contains("user:"));
        assert_eq!(
            external_at_dump("net[4026532000]:extRootNetNS"),
            Ok(("net".into(), 4026532000))
        );
        assert_eq!(
            external_at_dump("pid[1]:extRootPidNS"),
            Ok(("pid".into(), 1))
        );
        let mut o = super::super::Opts::default();
        take_external_at_dump("pid[4026532001]:extRootPidNS", &mut o).unwrap();
        take_external_at_dump("net[4026532002]:extRootNetNS", &mut o).unwrap();
        assert_eq!(
            o.external_pidns,
            Some(crate::model::ExternalPidNs {
                inode: 4026532001,
                key: "extRootPidNS".into()
            })
        );
        assert_eq!(o.external_ns.len(), 2);
        assert!(take_external_at_dump("pid[7]:other", &mut o).is_err());
        assert!(external_at_dump("mnt[/a]:b").is_err());
        // Our own network namespace through a descriptor.
        let f = std::fs::File::open("/proc/self/ns/net").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let (k, ino) = namespace_of_fd(fd).unwrap();
        assert_eq!(k, "net");
        let j = inherit_namespace(fd, "extRootNetNS").unwrap().unwrap();
        assert_eq!(
            j,
            ("net".into(), PathBuf::from(format!("/proc/self/fd/{fd}")))
        );
        assert!(
            inherit_namespace(fd, &format!("net:[{ino}]"))
                .unwrap()
                .is_ok()
        );
        assert!(inherit_namespace(fd, "net:[1]").unwrap().is_err());
        let p = std::fs::File::open("/proc/self/ns/pid").unwrap();
        let pfd = std::os::fd::AsRawFd::as_raw_fd(&p);
        let (k, _) = inherit_namespace(pfd, "extRootPidNS").unwrap().unwrap();
        assert_eq!(k, "pid");
        assert!(inherit_namespace(pfd, "pid[1]").unwrap().is_err());
        let d = std::fs::File::open("/").unwrap();
        assert!(inherit_namespace(std::os::fd::AsRawFd::as_raw_fd(&d), "x").is_none());
    }

    #[test]
    fn freeze_cgroup_paths() {
        let e = freeze_cgroup("sys/fs/cgroup/x").unwrap_err();
        assert!(e.contains("freeze_cgroup") && e.contains("absolute"), "{e}");
        let e = freeze_cgroup("/nonexistent/ckpt-freeze").unwrap_err();
        assert!(
            e.contains("freeze_cgroup") && e.contains("not a cgroup"),
            "{e}"
        );
    }

    #[test]
    fn cgroup_roots() {
        let e = |v: &[(Option<&str>, &str)]| -> Vec<(Option<String>, String)> {
            v.iter()
                .map(|(c, p)| (c.map(String::from), p.to_string()))
                .collect()
        };
        let used = vec![String::new()];
        assert_eq!(cg_root(&e(&[(None, "/r")]), &used), Ok(Some("/r".into())));
        assert_eq!(
            cg_root(&e(&[(Some(""), "/r")]), &used),
            Ok(Some("/r".into()))
        );
        // A v1 controller's entry does not apply to v2.
        assert_eq!(cg_root(&e(&[(Some("memory"), "/m")]), &used), Ok(None));
        let v1 = vec!["memory".to_string(), "cpu,cpuacct".to_string()];
        assert_eq!(
            cg_root(&e(&[(Some("memory"), "/m"), (Some("cpu"), "/m")]), &v1),
            Ok(Some("/m".into()))
        );
        let err = cg_root(&e(&[(Some("memory"), "/m"), (None, "/d")]), &v1).unwrap_err();
        assert!(err.contains("memory") && err.contains("/d"), "{err}");
        assert!(cg_root(&e(&[(None, "rel")]), &used).is_err());
        assert_eq!(cg_root(&e(&[(None, "/r")]), &[]), Ok(None));
    }

    #[test]
    fn restore_ext_mounts_for_an_image() {
        let points = vec!["/sys/fs/cgroup/cpu".to_string(), "/".to_string()];
        let pairs = vec![
            (
                "/sys/fs/cgroup/cpu".to_string(),
                "/sys/fs/cgroup/cpu/x".to_string(),
            ),
            ("/dev/null".to_string(), "/dev/null".to_string()),
        ];
        let (keep, notes) =
            ext_mounts_for_image(&pairs, &points, Some(std::path::Path::new("/run/r"))).unwrap();
        assert_eq!(
            keep,
            vec![("/".to_string(), "/run/r".to_string()), pairs[0].clone()]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let bad = vec![("/dev/zero".to_string(), "/elsewhere".to_string())];
        let e = ext_mounts_for_image(&bad, &points, None).unwrap_err();
        assert!(e.contains("ext_mnt /dev/zero:/elsewhere"), "{e}");
    }

    #[test]
    fn runc_cg_roots_are_ckpts_own_cgroups() {
        use crate::model::{CgroupPlace, Process};
        let place = |c: &str, p: &str| CgroupPlace {
            controllers: c.into(),
            path: p.into(),
            relative: true,
            ..Default::default()
        };
        let proc_in = |pid: i32, v: Vec<CgroupPlace>| Process {
            pid,
            cgroups: v,
            ..Default::default()
        };
        let tree = vec![
            proc_in(1, vec![place("memory", "c1"), place("", "c1")]),
            proc_in(2, vec![place("", "c1"), place("memory", "c1")]),
        ];
        let own = vec![
            ("memory".to_string(), "/p/c2".to_string()),
            ("cpu,cpuacct".to_string(), "/c2".to_string()),
            (String::new(), "/c2".to_string()),
        ];
        let e = |v: &[(Option<&str>, &str)]| -> Vec<(Option<String>, String)> {
            v.iter()
                .map(|(c, p)| (c.map(String::from), p.to_string()))
                .collect()
        };
        // runc's: one entry per controller ("" for v2), each ckpt's own cgroup.
        let runc = e(&[
            (Some("memory"), "/p/c2"),
            (Some("cpu"), "/c2"),
            (Some("cpuacct"), "/c2/"),
            (Some(""), "/c2"),
        ]);
        assert_eq!(cg_roots_are_own(&runc, &own, &tree), Ok(true));
        // Another root, or none: the engine's --cgroup-root mapping applies.
        assert_eq!(
            cg_roots_are_own(&e(&[(Some("memory"), "/elsewhere")]), &own, &tree),
            Ok(false)
        );
        assert_eq!(cg_roots_are_own(&[], &own, &tree), Ok(false));
        // A process in a sub-cgroup cannot stay in ours: refused, naming it.
        let mut nested = tree.clone();
        nested[1].cgroups[0] = place("", "c1/sub");
        let err = cg_roots_are_own(&runc, &own, &nested).unwrap_err();
        assert!(err.contains("process 2"), "{err}");
    }
}
