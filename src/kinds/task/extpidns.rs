//! A PID namespace made outside the tree, recorded as external: a pod's shared PID
//! namespace (its "pause" container made it, the app container joined it), or any tree
//! started with `nsenter -p` into a namespace something else keeps. The tree's root is
//! not the namespace's init. Dumped with `--external pidns[INO]:KEY` (runc's
//! `pid[INO]:extRootPidNS`), the image records the namespace's inode and KEY, and its
//! IDs as that namespace numbers them (`Checkpoint::map_pids`, as for any tree inside a
//! namespace without its init); restore is given a namespace for KEY (`--inherit-fd
//! N:KEY`, `--join-ns pid:PATH`) and builds the tree inside it with those IDs: ckpt
//! creates the root's stub there (`clone3` with `set_tid` after `setns`), as its child
//! (or its caller's, `rst_sibling`), and a builder forked into the namespace builds the
//! rest (see `restore::pidns::launch_in_external_pidns`).

use std::path::PathBuf;

use crate::error::{DumpError, DumpResult, Problem};
use crate::kinds::check;
use crate::model::{Checkpoint, ExternalPidNs};
use crate::sys;

// ---- collect (dump) ----

/// `pidns[INO]:KEY` (ckpt's spelling) or `pid[INO]:KEY` (CRIU's, which runc sends).
pub fn parse(s: &str) -> Result<ExternalPidNs, String> {
    let bad = || {
        format!(
            "{s:?} is not pidns[INODE]:KEY (a PID namespace made outside the tree, by the \
             inode its /proc/PID/ns/pid link shows, and the name restore gets it under)"
        )
    };
    let rest = s
        .strip_prefix("pidns[")
        .or_else(|| s.strip_prefix("pid["))
        .ok_or_else(bad)?;
    let (ino, key) = rest.split_once("]:").ok_or_else(bad)?;
    let inode: u64 = ino.parse().map_err(|_| bad())?;
    if key.is_empty() || inode == 0 {
        return Err(bad());
    }
    Ok(ExternalPidNs {
        inode,
        key: key.to_string(),
    })
}

/// At dump: the PID namespace the caller named external (`asked`) is the one the tree
/// rooted at `root` runs in, a namespace whose init is not part of the tree
/// (`init_outside`); else the dump is refused, naming both.
pub(crate) fn at_dump(
    root: i32,
    init_outside: bool,
    asked: Option<&ExternalPidNs>,
) -> DumpResult<Option<ExternalPidNs>> {
    let Some(a) = asked else {
        return Ok(None);
    };
    let refuse = |why: String| DumpError::Unsupported { pid: root, why };
    if !init_outside {
        return Err(refuse(format!(
            "--external pidns[{}]:{}: it does not run inside a PID namespace made outside \
             the tree (it is in ckpt's own, or the init of one of its own)",
            a.inode, a.key
        )));
    }
    let now = sys::ns::inode(root, "pid").map_err(DumpError::from)?;
    if now != a.inode {
        return Err(refuse(format!(
            "--external pidns[{}]:{}: it runs in the PID namespace pid:[{now}], not in \
             that one",
            a.inode, a.key
        )));
    }
    Ok(Some(a.clone()))
}

// ---- checks (plan) ----

/// The namespace file given for the image's external PID namespace: `--join-ns
/// pid:PATH`, or ckpt's descriptor N of `--inherit-fd N:KEY` (as /proc/self/fd/N).
pub(crate) fn given(
    ckpt: &Checkpoint,
    joins: &[(String, PathBuf)],
    inherit: &[(i32, String)],
) -> Option<PathBuf> {
    if let Some((_, p)) = joins.iter().find(|(k, _)| k == "pid") {
        return Some(p.clone());
    }
    let ext = ckpt.external_pid_namespace.as_ref()?;
    inherit
        .iter()
        .find(|(_, k)| *k == ext.key)
        .map(|(n, _)| PathBuf::from(format!("/proc/self/fd/{n}")))
}

/// `--inherit-fd N:KEY` names the image's external PID namespace.
pub(crate) fn is_key(ckpt: &Checkpoint, key: &str) -> bool {
    ckpt.external_pid_namespace
        .as_ref()
        .is_some_and(|e| e.key == key)
}

/// At restore (not at dump, `live`: the tree holds its IDs then and nothing is given):
/// a namespace is given exactly when the image has an external one, it is a PID
/// namespace below ckpt's (not ckpt's own), not with `--new-pidns`, and none of the
/// image's IDs is in use in it.
pub(crate) fn check(
    ckpt: &Checkpoint,
    joins: &[(String, PathBuf)],
    inherit: &[(i32, String)],
    new_pidns: bool,
    live: bool,
    problems: &mut Vec<Problem>,
) {
    if live {
        return;
    }
    let path = given(ckpt, joins, inherit);
    let Some(ext) = &ckpt.external_pid_namespace else {
        if let Some(p) = path {
            check::p(
                problems,
                "namespace",
                format!(
                    "--join-ns pid:{}: the image has no PID namespace made outside the tree \
                     (recorded with dump --external pidns[INODE]:KEY)",
                    p.display()
                ),
            );
        }
        return;
    };
    let Some(path) = path else {
        check::p(
            problems,
            "namespace",
            format!(
                "the tree ran in a PID namespace made outside it (pid:[{}]), recorded as \
                 external {}: give the one to restore it in with --inherit-fd N:{} (N a \
                 descriptor of it, e.g. N</proc/PID/ns/pid) or --join-ns pid:PATH",
                ext.inode, ext.key, ext.key
            ),
        );
        return;
    };
    if new_pidns {
        check::p(
            problems,
            "namespace",
            format!(
                "--new-pidns: the tree is restored in the PID namespace given for {}, not \
                 in a new one",
                ext.key
            ),
        );
    }
    let f = match sys::ns::open_ns_file(&path) {
        Ok((f, t)) if t == libc::CLONE_NEWPID => f,
        Ok(_) => {
            check::p(
                problems,
                "namespace",
                format!(
                    "{} (given for {}): not a PID namespace",
                    path.display(),
                    ext.key
                ),
            );
            return;
        }
        Err(e) => {
            check::p(
                problems,
                "namespace",
                format!("{} (given for {}): {e}", path.display(), ext.key),
            );
            return;
        }
    };
    match sys::extpidns::depth_below_ours(&f) {
        Ok(0) => {
            check::p(
                problems,
                "namespace",
                format!(
                    "{} (given for {}) is ckpt's own PID namespace; the tree's was one \
                     made outside it, below ckpt's",
                    path.display(),
                    ext.key
                ),
            );
            return;
        }
        Ok(_) => {}
        Err(e) => {
            check::p(
                problems,
                "namespace",
                format!("{} (given for {}): {e}", path.display(), ext.key),
            );
            return;
        }
    }
    match sys::extpidns::ids_in_use(&f) {
        Ok(used) => taken(ckpt, &used, &ext.key, problems),
        Err(e) => check::p(
            problems,
            "namespace",
            format!(
                "cannot list the IDs in use in the PID namespace given for {}: {e}",
                ext.key
            ),
        ),
    }
}

/// Each ID of the image's processes and threads that `used` (ID -> name of the task
/// holding it) holds already.
pub(crate) fn taken(
    ckpt: &Checkpoint,
    used: &std::collections::BTreeMap<i32, String>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    for p in &ckpt.processes {
        let ids = std::iter::once(("PID", p.pid)).chain(
            p.threads
                .iter()
                .skip(1)
                .map(|t| ("thread ID", t.tid))
                .filter(|(_, t)| *t != p.pid),
        );
        for (what, id) in ids {
            if let Some(name) = used.get(&id) {
                check::p(
                    problems,
                    "pid-taken",
                    format!(
                        "{what} {id} is in use by another task ({name}) in the PID \
                         namespace given for {key}"
                    ),
                );
            }
        }
    }
}

// ---- restore (stage) ----

/// The namespace to build the tree in (plan checked it), opened.
pub(crate) fn open_given(
    ckpt: &Checkpoint,
    joins: &[(String, PathBuf)],
    inherit: &[(i32, String)],
) -> crate::error::RestoreResult<Option<std::fs::File>> {
    if ckpt.external_pid_namespace.is_none() {
        return Ok(None);
    }
    let path = given(ckpt, joins, inherit).ok_or_else(|| {
        crate::error::RestoreError::Reported(
            "no PID namespace was given for the tree's external one".into(),
        )
    })?;
    let (f, _) = sys::ns::open_ns_file(&path)?;
    Ok(Some(f))
}

/// Fork a child of ours into PID namespace `ns` (the one given for the tree's external
/// one) with ID `first` there, or the next one free (the namespace has other processes,
/// which may hold it): `Ok(Some(child))` in the parent (its PID here), `Ok(None)` in the
/// child. Must be called while this process is single-threaded.
pub(crate) fn fork_into_free(ns: &std::fs::File, first: i32) -> sys::Result<Option<i32>> {
    let mut id = first;
    loop {
        match sys::extpidns::fork_into(ns, id) {
            Err(e) if e.errno() == Some(libc::EEXIST) && id < first.saturating_add(64) => {
                id += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testutil::{child, process, thread};

    #[test]
    fn options_are_parsed() {
        let e = parse("pidns[4026532001]:pod").unwrap();
        assert_eq!((e.inode, e.key.as_str()), (4026532001, "pod"));
        let e = parse("pid[7]:extRootPidNS").unwrap();
        assert_eq!((e.inode, e.key.as_str()), (7, "extRootPidNS"));
        for bad in [
            "net[7]:k",
            "pidns[x]:k",
            "pidns[7]:",
            "pidns[7]k",
            "pidns[0]:k",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    fn image(ext: bool) -> Checkpoint {
        let mut root = process(2);
        root.threads = vec![thread(2), thread(4)];
        let mut ck = crate::kinds::testutil::checkpoint(vec![root, child(3, 2, 2, 2)]);
        ck.pid_namespace_init_outside = true;
        if ext {
            ck.external_pid_namespace = Some(ExternalPidNs {
                inode: 9,
                key: "pod".into(),
            });
        }
        ck
    }

    #[test]
    fn taken_ids_are_named() {
        let ck = image(true);
        let used: std::collections::BTreeMap<i32, String> =
            [(1, "sleep".to_string()), (4, "other".to_string())].into();
        let mut v = Vec::new();
        taken(&ck, &used, "pod", &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].code, "pid-taken");
        assert!(
            v[0].message.contains("thread ID 4") && v[0].message.contains("(other)"),
            "{v:?}"
        );
        let mut v = Vec::new();
        taken(&ck, &[(5, "x".to_string())].into(), "pod", &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn the_namespace_must_be_given_and_wanted() {
        let ck = image(true);
        let mut v = Vec::new();
        check(&ck, &[], &[], false, false, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("--inherit-fd N:pod")
                && v[0].message.contains("--join-ns pid:PATH"),
            "{v:?}"
        );
        // At dump nothing is given: not checked.
        let mut v = Vec::new();
        check(&ck, &[], &[], false, true, &mut v);
        assert!(v.is_empty(), "{v:?}");
        // The key given by --inherit-fd is the namespace's; ckpt's own is refused.
        let f = std::fs::File::open("/proc/self/ns/pid").unwrap();
        let n = std::os::fd::AsRawFd::as_raw_fd(&f);
        let inherit = vec![(n, "pod".to_string())];
        assert!(is_key(&ck, "pod") && !is_key(&ck, "pipe:[1]"));
        assert_eq!(
            given(&ck, &[], &inherit),
            Some(PathBuf::from(format!("/proc/self/fd/{n}")))
        );
        let mut v = Vec::new();
        check(&ck, &[], &inherit, true, false, &mut v);
        assert!(v.iter().any(|p| p.message.contains("--new-pidns")), "{v:?}");
        assert!(v.iter().any(|p| p.message.contains("ckpt's own")), "{v:?}");
        // A join for an image without an external PID namespace.
        let mut v = Vec::new();
        let joins = vec![("pid".to_string(), PathBuf::from("/proc/self/ns/pid"))];
        check(&image(false), &joins, &[], false, false, &mut v);
        assert!(
            v.iter()
                .any(|p| p.message.contains("no PID namespace made outside")),
            "{v:?}"
        );
    }
}
