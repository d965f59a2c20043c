//! Control groups (issue 15, part 3): the cgroup of each hierarchy (v1 and v2) each
//! process is in, and putting the restored processes back into them.
//!
//! At dump, a process in ckpt's own cgroup of a hierarchy records nothing for it (it is
//! restored into the restoring ckpt's, as before); one below ckpt's records the path
//! relative to ckpt's (restored below the restoring ckpt's cgroup, or below
//! `--cgroup-root`); any other records its path from the hierarchy's root (restored
//! there, or below `--cgroup-root`). Plan checks that each hierarchy is mounted here and
//! that each cgroup exists or can be made; stage makes the missing ones (removed again
//! if the restore fails) and moves each process into its cgroups before anything else
//! is built in it, so its memory is charged there. Membership only: the controllers'
//! settings (memory.max, pids.max, cpu.max...) of the cgroups are not recorded, and a
//! cgroup made at restore has its parent's defaults.

use crate::error::{DumpResult, Problem};
use crate::kinds::check::p;
use crate::model::{CgroupPlace, Checkpoint};
use crate::sys;

// ---- collect (dump) ----

/// Where process `pid` is in each hierarchy, relative to ckpt's own cgroups
/// (`ckpts`: ckpt's /proc/self/cgroup pairs).
pub(crate) fn collect(pid: i32, ckpts: &[(String, String)]) -> DumpResult<Vec<CgroupPlace>> {
    Ok(places(&sys::cgroup::membership(pid)?, ckpts))
}

/// The places of a process's (controllers, path) pairs, given ckpt's.
pub(crate) fn places(theirs: &[(String, String)], ckpts: &[(String, String)]) -> Vec<CgroupPlace> {
    let mut out = Vec::new();
    for (c, path) in theirs {
        let own = ckpts.iter().find(|(k, _)| k == c).map(|(_, p)| p.as_str());
        if own == Some(path.as_str()) {
            continue;
        }
        let below = own.and_then(|o| {
            if o == "/" {
                path.strip_prefix('/')
            } else {
                path.strip_prefix(o).and_then(|r| r.strip_prefix('/'))
            }
        });
        out.push(match below {
            Some(rel) => CgroupPlace {
                controllers: c.clone(),
                path: rel.to_string(),
                relative: true,
                ..Default::default()
            },
            None => CgroupPlace {
                controllers: c.clone(),
                path: path.clone(),
                relative: false,
                ..Default::default()
            },
        });
    }
    out
}

// ---- checks (plan) ----

/// Whether a recorded path is one restore may use: no empty, "." or ".." component,
/// no NUL.
pub(crate) fn path_ok(pl: &CgroupPlace) -> bool {
    let p = pl.path.strip_prefix('/').unwrap_or(&pl.path);
    pl.relative != pl.path.starts_with('/')
        && !pl.path.contains('\0')
        && (p.is_empty() && !pl.relative
            || p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// The cgroup path (from its hierarchy's root) where restore puts a process recorded
/// at `pl`: below `root` (`--cgroup-root`) when given, else below ckpt's own cgroup
/// (`ckpts`) for a relative one, else the same path.
pub(crate) fn target(pl: &CgroupPlace, root: Option<&str>, ckpts: &[(String, String)]) -> String {
    let base = match (root, pl.relative) {
        (Some(r), _) => r.to_string(),
        (None, true) => ckpts
            .iter()
            .find(|(c, _)| *c == pl.controllers)
            .map_or_else(|| "/".to_string(), |(_, p)| p.clone()),
        (None, false) => String::new(),
    };
    let join = |a: &str, b: &str| {
        let a = a.trim_end_matches('/');
        let b = b.trim_start_matches('/');
        if b.is_empty() {
            if a.is_empty() {
                "/".to_string()
            } else {
                a.to_string()
            }
        } else {
            format!("{a}/{b}")
        }
    };
    join(&base, &pl.path)
}

/// Each cgroup the image's processes were in can be had here: its hierarchy is mounted
/// and the cgroup is there or can be made (`cgroup_root`: `--cgroup-root`).
pub(crate) fn check_cgroups(
    ckpt: &Checkpoint,
    cgroup_root: Option<&str>,
    problems: &mut Vec<Problem>,
) {
    let any = ckpt.processes.iter().any(|p| !p.cgroups.is_empty());
    if !any {
        return;
    }
    if let Some(r) = cgroup_root {
        if !r.starts_with('/') || r.split('/').any(|c| c == "." || c == "..") {
            p(
                problems,
                "cgroup",
                format!("--cgroup-root {r:?}: not an absolute cgroup path"),
            );
            return;
        }
    }
    let (hier, ckpts) = match (sys::cgroup::hierarchies(), sys::cgroup::membership(0)) {
        (Ok(h), Ok(c)) => (h, c),
        (Err(e), _) | (_, Err(e)) => {
            p(
                problems,
                "cgroup",
                format!("cannot read ckpt's cgroups: {e}"),
            );
            return;
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for proc_ in &ckpt.processes {
        for pl in &proc_.cgroups {
            if !seen.insert((pl.controllers.clone(), pl.path.clone(), pl.relative)) {
                continue;
            }
            let shown = if pl.controllers.is_empty() {
                "cgroup v2".to_string()
            } else {
                format!("cgroup v1 hierarchy {}", pl.controllers)
            };
            if !path_ok(pl) {
                p(
                    problems,
                    "malformed",
                    format!("process {}: bad {shown} path {:?}", proc_.pid, pl.path),
                );
                continue;
            }
            let key = sys::cgroup::canonical(&pl.controllers);
            let Some(h) = hier.iter().find(|h| h.controllers == key) else {
                p(
                    problems,
                    "cgroup",
                    format!(
                        "process {} was in {shown} cgroup {}, and that hierarchy is not \
                         mounted here",
                        proc_.pid, pl.path
                    ),
                );
                continue;
            };
            let t = target(pl, cgroup_root, &ckpts);
            if h.dir.is_none() {
                p(
                    problems,
                    "cgroup",
                    format!(
                        "process {}: {shown} cgroup {t}: ckpt cannot open its hierarchy's \
                         mount {}",
                        proc_.pid,
                        h.mountpoint.display()
                    ),
                );
                continue;
            }
            let Some(dir) = sys::cgroup::dir_of(h, &t) else {
                p(
                    problems,
                    "cgroup",
                    format!(
                        "process {}: {shown} cgroup {t} is outside what ckpt sees of the \
                         hierarchy (mounted at {} from {})",
                        proc_.pid,
                        h.mountpoint.display(),
                        h.root
                    ),
                );
                continue;
            };
            // There, or below a cgroup that is (made at stage). Looked at through the
            // hierarchy's mount ckpt holds, whatever mount namespace this runs in.
            let mut d = dir;
            while !d.exists() {
                match d.parent() {
                    Some(pd) => d = pd,
                    None => break,
                }
            }
            if !d.is_cgroup() {
                p(
                    problems,
                    "cgroup",
                    format!(
                        "process {}: {shown} cgroup {t} cannot be made here ({d} is not a \
                         cgroup)",
                        proc_.pid,
                    ),
                );
            }
        }
    }
}

// ---- restore (stage) ----

/// Cgroups a restore made, removed again unless it commits.
#[derive(Default)]
pub(crate) struct MadeCgroups {
    pub(crate) made: Vec<sys::cgroup::CgroupDir>,
    /// Limits written on cgroups that existed (`kinds::cglimits`): (cgroup directory,
    /// interface file, old value), written back unless the restore commits.
    pub(crate) rewritten: Vec<(sys::cgroup::CgroupDir, String, String)>,
    pub(crate) keep: bool,
}

impl Drop for MadeCgroups {
    fn drop(&mut self) {
        if !self.keep {
            for (dir, file, old) in self.rewritten.iter().rev() {
                let _ = sys::cgroup::write_limit(dir, file, old);
            }
            sys::cgroup::remove_dirs(&self.made);
        }
    }
}

/// The directory (as ckpt sees the hierarchy) where restore puts what was recorded at
/// `pl`.
pub(crate) fn dir_for(
    pl: &CgroupPlace,
    cgroup_root: Option<&str>,
) -> crate::error::RestoreResult<sys::cgroup::CgroupDir> {
    let hier = sys::cgroup::hierarchies()?;
    let ckpts = sys::cgroup::membership(0)?;
    let key = sys::cgroup::canonical(&pl.controllers);
    let t = target(pl, cgroup_root, &ckpts);
    hier.iter()
        .find(|h| h.controllers == key)
        .and_then(|h| sys::cgroup::dir_of(h, &t))
        .ok_or_else(|| {
            crate::error::RestoreError::Stage(format!(
                "the cgroup {t} of hierarchy {:?} is not mounted here",
                pl.controllers
            ))
        })
}

/// The host path a cgroup mount of the tree's mount namespace binds with `--cgroup-root
/// root`, for `host_path`, the cgroup directory it bound at dump (as ckpt's mount
/// namespace shows it): the same cgroup moved below `root` as a process recorded in it
/// would be (see [`target`]), so a container restored below another root sees its own
/// cgroups through its mounts. None (the recorded path stays) when `host_path` is
/// ckpt's own cgroup, or no cgroup directory of a hierarchy ckpt sees (the mount's own
/// check then names it).
pub(crate) fn relocated_mount_source(host_path: &[u8], root: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(host_path));
    let hier = sys::cgroup::hierarchies().ok()?;
    let ckpts = sys::cgroup::membership(0).ok()?;
    let (h, rel) = hier.iter().find_map(|h| {
        let rel = path.strip_prefix(&h.mountpoint).ok()?;
        rel.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            .then_some((h, rel.to_str()?))
    })?;
    // The cgroup's path from its hierarchy's root, under the name /proc/PID/cgroup
    // gives the hierarchy.
    let cg = format!("{}/{rel}", h.root.trim_end_matches('/'));
    let cg = if rel.is_empty() { h.root.clone() } else { cg };
    let name = ckpts
        .iter()
        .find(|(c, _)| sys::cgroup::canonical(c) == h.controllers)
        .map(|(c, _)| c.clone())?;
    // (ckpt's own cgroup is not moved, as a process in it is not)
    let pl = places(&[(name, cg)], &ckpts).pop()?;
    let t = target(&pl, Some(root), &ckpts);
    sys::cgroup::dir_of(h, &t).map(|d| d.path().into_os_string().into_vec())
}

/// For a restore that leaves the tree in ckpt's own cgroups because the caller made
/// them for it (runc: see `criu::map::cg_roots_are_own`): the source of a cgroup mount
/// that bound, at dump, the cgroup the tree's root was in (`host_path`, as ckpt's mount
/// namespace showed it): ckpt's own cgroup of that hierarchy, which is the root's now.
/// None when the mount bound another cgroup, or no hierarchy ckpt sees.
pub(crate) fn own_mount_source(ckpt: &Checkpoint, host_path: &[u8]) -> Option<Vec<u8>> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(host_path));
    let hier = sys::cgroup::hierarchies().ok()?;
    let ckpts = sys::cgroup::membership(0).ok()?;
    let (h, rel) = hier.iter().find_map(|h| {
        let rel = path.strip_prefix(&h.mountpoint).ok()?;
        rel.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            .then_some((h, rel.to_str()?))
    })?;
    let bound = format!("{}/{rel}", h.root.trim_end_matches('/'));
    let bound = bound.trim_end_matches('/');
    let pl = ckpt
        .processes
        .first()?
        .cgroups
        .iter()
        .find(|p| sys::cgroup::canonical(&p.controllers) == h.controllers)?;
    let was_roots = if pl.relative {
        let tail = pl.path.trim_matches('/');
        !tail.is_empty() && bound.ends_with(&format!("/{tail}"))
    } else {
        bound == pl.path.trim_end_matches('/')
    };
    if !was_roots {
        return None;
    }
    let own = ckpts
        .iter()
        .find(|(c, _)| sys::cgroup::canonical(c) == h.controllers)
        .map(|(_, p)| p.as_str())?;
    sys::cgroup::dir_of(h, own).map(|d| d.path().into_os_string().into_vec())
}

/// What `ckpt check --json` lists of the image's cgroups: each hierarchy a process was
/// outside ckpt's own cgroup of (by its controllers as /proc/PID/cgroup names them,
/// "" for v2; "version" 1 or 2), with the cgroup paths its processes and its cgroup
/// namespace's roots were at: "relative" ones below the dumping ckpt's own cgroup
/// (restored below the restoring ckpt's, or `--cgroup-root`), the others from the
/// hierarchy's root.
pub fn manifest(ckpt: &Checkpoint) -> serde_json::Value {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    let ns_roots = ckpt
        .namespaces
        .iter()
        .filter_map(|n| n.cgroup.as_ref())
        .flat_map(|c| c.roots.iter());
    for pl in ckpt
        .processes
        .iter()
        .flat_map(|p| p.cgroups.iter())
        .chain(ns_roots)
    {
        let e = by.entry(pl.controllers.as_str()).or_default();
        if pl.relative {
            e.0.insert(pl.path.as_str());
        } else {
            e.1.insert(pl.path.as_str());
        }
    }
    let list: Vec<serde_json::Value> = by
        .into_iter()
        .map(|(c, (rel, abs))| {
            serde_json::json!({
                "controllers": c,
                "version": if c.is_empty() { 2 } else { 1 },
                "relative": rel,
                "absolute": abs,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

/// Whether a mount of file system type `fstype` is of a cgroup hierarchy.
pub(crate) fn is_cgroup_fs(fstype: &str) -> bool {
    fstype == "cgroup" || fstype == "cgroup2"
}

/// Make the cgroup a cgroup mount of the tree's mount namespace binds (`host_path`: its
/// directory as ckpt's mount namespace shows it, recorded at dump) when it is missing
/// (a container's cgroups go with the container: `runc delete`), with its missing
/// parents (into `made`). Nothing when it is there or is no cgroup directory of a
/// hierarchy ckpt sees (the mount's own check then names it).
pub(crate) fn make_mounted(
    host_path: &[u8],
    made: &mut MadeCgroups,
) -> crate::error::RestoreResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(host_path));
    let Some(dir) = sys::cgroup::dir_at_path(path) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    // Below a cgroup only (else the mount's check says what is wrong).
    let mut d = dir.clone();
    while !d.exists() {
        match d.parent() {
            Some(pd) => d = pd,
            None => return Ok(()),
        }
    }
    if !d.is_cgroup() {
        return Ok(());
    }
    crate::error::fault_point("make the cgroups the tree's mounts bind")?;
    made.made.extend(sys::cgroup::make_dirs(&dir)?);
    Ok(())
}

/// Make the cgroups of `roots` that are missing (into `made`) and join a new cgroup
/// namespace rooted at them (the calling thread: every process it starts afterwards is
/// in it).
pub(crate) fn enter_new_namespace(
    roots: &[CgroupPlace],
    cgroup_root: Option<&str>,
    made: &mut MadeCgroups,
) -> crate::error::RestoreResult<()> {
    let dirs = namespace_roots(roots, cgroup_root, made)?;
    sys::cgroup::enter_new_ns(&dirs)?;
    Ok(())
}

/// The cgroups a new cgroup namespace is rooted at (`roots`, below `cgroup_root` if
/// given), the missing ones made (into `made`): for a cgroup namespace that the tree's
/// user namespace owns (`kinds::userns::enter_new`).
pub(crate) fn namespace_roots(
    roots: &[CgroupPlace],
    cgroup_root: Option<&str>,
    made: &mut MadeCgroups,
) -> crate::error::RestoreResult<Vec<sys::cgroup::CgroupDir>> {
    let mut dirs = Vec::new();
    for pl in roots {
        let d = dir_for(pl, cgroup_root)?;
        made.made.extend(sys::cgroup::make_dirs(&d)?);
        dirs.push(d);
    }
    Ok(dirs)
}

/// Make every missing cgroup of the image's live processes (into `made`), before any
/// is placed: for a restore whose processes are placed by a forked builder (a PID
/// namespace of the tree's own), whose own record of what it made cannot outlive the
/// namespace's init, which it cannot kill.
pub(crate) fn make_all(
    ckpt: &Checkpoint,
    cgroup_root: Option<&str>,
    made: &mut MadeCgroups,
) -> crate::error::RestoreResult<()> {
    for proc_ in ckpt.processes.iter().filter(|p| !p.is_zombie()) {
        for pl in &proc_.cgroups {
            let dir = dir_for(pl, cgroup_root)?;
            made.made.extend(sys::cgroup::make_dirs(&dir)?);
        }
    }
    Ok(())
}

/// Put each live process of the image (`pids`: its PID as ckpt sees it now, in image
/// order; 0 for a zombie) into its cgroups, making the missing ones (into `made`).
pub(crate) fn place(
    ckpt: &Checkpoint,
    pids: &[i32],
    cgroup_root: Option<&str>,
    made: &mut MadeCgroups,
) -> crate::error::RestoreResult<()> {
    if ckpt.processes.iter().all(|p| p.cgroups.is_empty()) {
        return Ok(());
    }
    crate::error::fault_point("place the processes in their cgroups")?;
    for (proc_, &pid) in ckpt.processes.iter().zip(pids) {
        if pid <= 0 || proc_.is_zombie() {
            continue;
        }
        for pl in &proc_.cgroups {
            let dir = dir_for(pl, cgroup_root)?;
            made.made.extend(sys::cgroup::make_dirs(&dir)?);
            sys::cgroup::move_into(&dir, pid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn manifest_lists_each_hierarchys_paths() {
        use crate::kinds::testutil::{checkpoint, child, process};
        let place = |c: &str, path: &str, relative: bool| CgroupPlace {
            controllers: c.into(),
            path: path.into(),
            relative,
            ..Default::default()
        };
        let mut a = process(10);
        a.cgroups = vec![place("", "box/a", true), place("cpu,cpuacct", "/x", false)];
        let mut b = child(11, 10, 10, 10);
        b.cgroups = vec![place("", "box/a", true), place("", "box/b", true)];
        let m = manifest(&checkpoint(vec![a, b]));
        assert_eq!(
            m,
            serde_json::json!([
                {"controllers": "", "version": 2, "relative": ["box/a", "box/b"],
                 "absolute": []},
                {"controllers": "cpu,cpuacct", "version": 1, "relative": [],
                 "absolute": ["/x"]},
            ])
        );
        assert_eq!(
            manifest(&checkpoint(vec![process(1)])),
            serde_json::json!([])
        );
    }

    #[test]
    fn places_relative_to_ckpts_cgroups() {
        let ckpt = pairs(&[("", "/"), ("memory", "/job/1"), ("pids", "/")]);
        let theirs = pairs(&[
            ("", "/box/a"),
            ("memory", "/job/1"),
            ("pids", "/p"),
            ("name=x", "/n"),
        ]);
        let pl = places(&theirs, &ckpt);
        assert_eq!(pl.len(), 3, "{pl:?}");
        assert_eq!((pl[0].path.as_str(), pl[0].relative), ("box/a", true));
        assert_eq!((pl[1].path.as_str(), pl[1].relative), ("p", true));
        assert_eq!((pl[2].path.as_str(), pl[2].relative), ("/n", false));
        // Outside ckpt's: absolute.
        let pl = places(&pairs(&[("memory", "/other")]), &ckpt);
        assert_eq!((pl[0].path.as_str(), pl[0].relative), ("/other", false));
        let pl = places(&pairs(&[("memory", "/job/10")]), &ckpt);
        assert!(!pl[0].relative);
        assert!(pl.iter().all(path_ok));
    }

    #[test]
    fn targets_and_bad_paths() {
        let ckpt = pairs(&[("", "/svc"), ("memory", "/")]);
        let rel = CgroupPlace {
            controllers: String::new(),
            path: "box/a".into(),
            relative: true,
            ..Default::default()
        };
        let abs = CgroupPlace {
            controllers: "memory".into(),
            path: "/m".into(),
            relative: false,
            ..Default::default()
        };
        assert_eq!(target(&rel, None, &ckpt), "/svc/box/a");
        assert_eq!(target(&rel, Some("/r/"), &ckpt), "/r/box/a");
        assert_eq!(target(&abs, None, &ckpt), "/m");
        assert_eq!(target(&abs, Some("/r"), &ckpt), "/r/m");
        for bad in ["../x", "a//b", "/abs-but-relative", "a/./b", ""] {
            let b = CgroupPlace {
                path: bad.into(),
                ..rel.clone()
            };
            assert!(!path_ok(&b), "{bad}");
        }
        assert!(!path_ok(&CgroupPlace {
            path: "x".into(),
            ..abs.clone()
        }));
        assert!(path_ok(&abs));
    }
}
