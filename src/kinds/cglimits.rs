//! What restore does with the tree's cgroups beyond putting the processes back into
//! them (`kinds::cgroup`): leave them alone (`restore --cgroups=ignore`), require them
//! to exist already or not at all (`--cgroups=existing|fresh`), and re-create their
//! limits (`restore --manage-cgroups[=made|all]`).
//!
//! At dump, the limits of each cgroup a process of the tree is in (not ckpt's own) are
//! recorded with its place, when they differ from the kernel's defaults: cgroup v2
//! memory.max, memory.high, pids.max, cpu.max, cpu.weight, io.max; v1
//! memory.limit_in_bytes, memory.soft_limit_in_bytes, pids.max, cpu.shares,
//! cpu.cfs_period_us, cpu.cfs_quota_us. Plan checks that the host can take each limit
//! restore is to write (v2: the controller is enabled in the parent's
//! cgroup.subtree_control, or the cgroup already has the file; v1: the hierarchy has
//! the controller). Stage makes the cgroups and writes their limits before any process
//! of the tree is placed; a limit written on a cgroup that existed is written back to
//! its old value if the restore fails.

use std::collections::BTreeSet;

use crate::error::{DumpResult, Problem, RestoreResult};
use crate::kinds::cgroup::{MadeCgroups, dir_for, target};
use crate::kinds::check::p;
use crate::model::{CgroupPlace, Checkpoint};
use crate::sys;

/// Where restore puts the tree's processes (`restore --cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Into the cgroups they were in (below `--cgroup-root` if given), making those
    /// missing.
    #[default]
    Place,
    /// Nowhere: they stay in ckpt's own cgroups (a cgroup namespace of the tree's is
    /// rooted there).
    Ignore,
    /// As `Place`, but each cgroup must exist already.
    Existing,
    /// As `Place`, but none may exist: the restore makes every one.
    Fresh,
}

impl std::str::FromStr for CgroupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "place" => CgroupMode::Place,
            "ignore" => CgroupMode::Ignore,
            "existing" => CgroupMode::Existing,
            "fresh" => CgroupMode::Fresh,
            _ => {
                return Err(format!(
                    "{s:?}: the cgroup modes are place, ignore, existing and fresh"
                ));
            }
        })
    }
}

/// Which cgroups restore writes the recorded limits of (`restore --manage-cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitsMode {
    /// None: a cgroup made by restore has its parent's defaults.
    #[default]
    Off,
    /// Only those the restore makes.
    Made,
    /// Every one, also those that exist already.
    All,
}

impl std::str::FromStr for LimitsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" => LimitsMode::Off,
            "made" => LimitsMode::Made,
            "all" => LimitsMode::All,
            _ => return Err(format!("{s:?}: the limits modes are off, made and all")),
        })
    }
}

/// The interface files recorded, with the value the kernel gives a new cgroup (not
/// recorded): cgroup v2. Written in this order.
pub(crate) const LIMIT_FILES_V2: [(&str, &str); 6] = [
    ("memory.max", "max"),
    ("memory.high", "max"),
    ("pids.max", "max"),
    ("cpu.max", "max 100000"),
    ("cpu.weight", "100"),
    ("io.max", ""),
];

/// The same for cgroup v1 hierarchies (the period before the quota).
pub(crate) const LIMIT_FILES_V1: [(&str, &str); 6] = [
    ("memory.limit_in_bytes", "9223372036854771712"),
    ("memory.soft_limit_in_bytes", "9223372036854771712"),
    ("pids.max", "max"),
    ("cpu.shares", "1024"),
    ("cpu.cfs_period_us", "100000"),
    ("cpu.cfs_quota_us", "-1"),
];

/// The controller an interface file belongs to ("memory" of "memory.max").
fn controller(file: &str) -> &str {
    file.split_once('.').map_or(file, |(c, _)| c)
}

/// Whether a recorded (file, value) pair is one restore may write: a file of the lists
/// above (of the hierarchy's version), a value without NUL.
pub(crate) fn limit_ok(pl: &CgroupPlace, file: &str, value: &str) -> bool {
    let list: &[(&str, &str)] = if pl.controllers.is_empty() {
        &LIMIT_FILES_V2
    } else {
        &LIMIT_FILES_V1
    };
    list.iter().any(|(f, _)| *f == file) && !value.contains('\0')
}

// ---- collect (dump) ----

/// Record the limits of the cgroups of `places` (a process's, as `cgroup::collect`
/// gave them; read where ckpt sees them now).
pub(crate) fn collect(places: &mut [CgroupPlace]) -> DumpResult<()> {
    for pl in places.iter_mut() {
        let Ok(dir) = dir_for(pl, None) else {
            continue;
        };
        pl.limits = read_limits(pl, &dir)?;
    }
    Ok(())
}

/// The non-default limits of the cgroup of directory `dir`, recorded at `pl`.
fn read_limits(
    pl: &CgroupPlace,
    dir: &sys::cgroup::CgroupDir,
) -> DumpResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let v1: BTreeSet<&str> = pl.controllers.split(',').collect();
    let list: &[(&str, &str)] = if pl.controllers.is_empty() {
        &LIMIT_FILES_V2
    } else {
        &LIMIT_FILES_V1
    };
    for (file, default) in list {
        if !pl.controllers.is_empty() && !v1.contains(controller(file)) {
            continue;
        }
        if let Some(v) = sys::cgroup::read_limit(dir, file)? {
            if v != *default {
                out.push((file.to_string(), v));
            }
        }
    }
    Ok(out)
}

// ---- checks (plan) ----

/// The distinct places of the image's live processes.
fn distinct(ckpt: &Checkpoint) -> Vec<&CgroupPlace> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for proc_ in ckpt.processes.iter().filter(|p| !p.is_zombie()) {
        for pl in &proc_.cgroups {
            if seen.insert((&pl.controllers, &pl.path, pl.relative)) {
                out.push(pl);
            }
        }
    }
    out
}

/// The cgroups can be had as `mode` asks (each exists, or none does) and each limit
/// `limits` asks to write can be taken here. (`kinds::cgroup::check_cgroups` checks the
/// hierarchies and paths.)
pub(crate) fn check(
    ckpt: &Checkpoint,
    root: Option<&str>,
    mode: CgroupMode,
    limits: LimitsMode,
    problems: &mut Vec<Problem>,
) {
    if mode == CgroupMode::Ignore {
        // Its namespace is rooted at its cgroups: processes left outside them would
        // see other paths in /proc/PID/cgroup.
        if ckpt
            .namespaces
            .iter()
            .any(|n| !n.external && n.cgroup.is_some())
        {
            p(
                problems,
                "cgroup",
                "--cgroups=ignore: the tree had a cgroup namespace of its own, rooted at \
                 its cgroups; restore cannot leave its processes outside them"
                    .to_string(),
            );
        }
        return;
    }
    if mode == CgroupMode::Place && limits == LimitsMode::Off {
        return;
    }
    let (Ok(hier), Ok(ckpts)) = (sys::cgroup::hierarchies(), sys::cgroup::membership(0)) else {
        return; // check_cgroups names it.
    };
    for pl in distinct(ckpt) {
        if !crate::kinds::cgroup::path_ok(pl) {
            continue;
        }
        let key = sys::cgroup::canonical(&pl.controllers);
        let t = target(pl, root, &ckpts);
        let Some(dir) = hier
            .iter()
            .find(|h| h.controllers == key)
            .and_then(|h| sys::cgroup::dir_of(h, &t))
        else {
            continue; // check_cgroups names it.
        };
        let shown = if pl.controllers.is_empty() {
            format!("cgroup v2 cgroup {t}")
        } else {
            format!("cgroup v1 ({}) cgroup {t}", pl.controllers)
        };
        let exists = dir.is_cgroup();
        match mode {
            CgroupMode::Existing if !exists => p(
                problems,
                "cgroup",
                format!("{shown} does not exist (--cgroups=existing: restore makes none)"),
            ),
            CgroupMode::Fresh if exists => p(
                problems,
                "cgroup",
                format!(
                    "{shown} exists already (--cgroups=fresh: restore makes every cgroup \
                     of the tree)"
                ),
            ),
            _ => {}
        }
        let writes = match limits {
            LimitsMode::Off => false,
            LimitsMode::Made => !exists,
            LimitsMode::All => true,
        };
        if !writes {
            continue;
        }
        for (file, value) in &pl.limits {
            if !limit_ok(pl, file, value) {
                p(
                    problems,
                    "malformed",
                    format!("{shown}: a limit {file:?} restore does not write"),
                );
                continue;
            }
            let ctl = controller(file);
            let parent = dir
                .parent()
                .filter(|par| par.is_cgroup())
                .map(|par| (par.path(), sys::cgroup::subtree_control(&par)));
            let why = limit_problem(
                &key,
                ctl,
                exists,
                dir.has(file),
                &dir.path(),
                parent.as_ref().map(|(d, c)| (d.as_path(), c.as_slice())),
            );
            if let Some(why) = why {
                p(
                    problems,
                    "cgroup",
                    format!("{shown}: its limit {file} = {value:?} cannot be set here: {why}"),
                );
            }
        }
    }
}

/// Why a limit of controller `ctl` cannot be written to the cgroup of directory `dir`
/// (`key`: its hierarchy's controllers, empty for v2; `exists`: the cgroup is there,
/// `has_file`: with the limit's file; `parent`: its parent directory when that is a
/// cgroup, with its cgroup.subtree_control), or None when it can.
fn limit_problem(
    key: &str,
    ctl: &str,
    exists: bool,
    has_file: bool,
    dir: &std::path::Path,
    parent: Option<(&std::path::Path, &[String])>,
) -> Option<String> {
    if !key.is_empty() {
        return (!key.split(',').any(|c| c == ctl))
            .then(|| format!("its hierarchy has no {ctl} controller"));
    }
    if exists {
        return (!has_file).then(|| format!("the {ctl} controller is not enabled for it"));
    }
    match parent {
        Some((par, enabled)) => (!enabled.iter().any(|c| c == ctl)).then(|| {
            format!(
                "the {ctl} controller is not enabled in {}'s cgroup.subtree_control",
                par.display()
            )
        }),
        None => Some(format!(
            "its parent is made by the restore too, with no controller enabled (make {} \
             with {ctl} in its cgroup.subtree_control)",
            dir.parent().unwrap_or(dir).display()
        )),
    }
}

// ---- restore (stage) ----

/// Make the cgroups with recorded limits and write them (as `limits` says), before any
/// process is placed; the cgroups made and the old values of the limits written on
/// cgroups that existed go into `made` (undone unless the restore commits).
pub(crate) fn restore(
    ckpt: &Checkpoint,
    root: Option<&str>,
    mode: CgroupMode,
    limits: LimitsMode,
    made: &mut MadeCgroups,
) -> RestoreResult<()> {
    if mode == CgroupMode::Ignore || limits == LimitsMode::Off {
        return Ok(());
    }
    for pl in distinct(ckpt) {
        if pl.limits.is_empty() {
            continue;
        }
        crate::error::fault_point("write the cgroups' limits")?;
        let dir = dir_for(pl, root)?;
        let existed = dir.is_cgroup();
        if existed && limits == LimitsMode::Made {
            continue;
        }
        if !existed {
            made.made.extend(sys::cgroup::make_dirs(&dir)?);
        }
        for (file, value) in &pl.limits {
            if existed {
                if let Some(old) = sys::cgroup::read_limit(&dir, file)? {
                    made.rewritten.push((dir.clone(), file.clone(), old));
                }
            }
            sys::cgroup::write_limit(&dir, file, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_limits_are_checked_by_list() {
        assert_eq!("ignore".parse::<CgroupMode>(), Ok(CgroupMode::Ignore));
        assert_eq!("fresh".parse::<CgroupMode>(), Ok(CgroupMode::Fresh));
        assert!("soft".parse::<CgroupMode>().is_err());
        assert_eq!("made".parse::<LimitsMode>(), Ok(LimitsMode::Made));
        assert!("yes".parse::<LimitsMode>().is_err());
        let v2 = CgroupPlace {
            path: "/a".into(),
            ..Default::default()
        };
        let v1 = CgroupPlace {
            controllers: "memory".into(),
            path: "/a".into(),
            ..Default::default()
        };
        assert!(limit_ok(&v2, "memory.max", "1048576"));
        assert!(!limit_ok(&v2, "memory.limit_in_bytes", "1"));
        assert!(limit_ok(&v1, "memory.limit_in_bytes", "1"));
        assert!(!limit_ok(&v2, "cgroup.procs", "1"));
        assert!(!limit_ok(&v2, "../x", "1"));
        assert!(!limit_ok(&v2, "pids.max", "1\0"));
        assert_eq!(controller("cpu.cfs_quota_us"), "cpu");
    }

    #[test]
    fn a_limit_the_host_cannot_take_is_named() {
        let d = std::path::Path::new("/cg/p/x");
        let par = std::path::Path::new("/cg/p");
        let on = vec!["memory".to_string(), "pids".to_string()];
        // v2, made by the restore: the parent must enable the controller.
        assert_eq!(
            limit_problem("", "memory", false, false, d, Some((par, &on))),
            None
        );
        let e = limit_problem("", "io", false, false, d, Some((par, &on))).unwrap();
        assert!(e.contains("io controller") && e.contains("/cg/p's"), "{e}");
        let e = limit_problem("", "pids", false, false, d, None).unwrap();
        assert!(e.contains("make /cg/p with pids"), "{e}");
        // v2, existing: the file must be there.
        assert_eq!(limit_problem("", "cpu", true, true, d, None), None);
        assert!(limit_problem("", "cpu", true, false, d, None).is_some());
        // v1: the hierarchy must have it.
        assert_eq!(
            limit_problem("cpu,cpuacct", "cpu", false, false, d, None),
            None
        );
        let e = limit_problem("memory", "pids", true, false, d, None).unwrap();
        assert!(e.contains("no pids controller"), "{e}");
    }
}
