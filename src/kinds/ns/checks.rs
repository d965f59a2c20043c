//! Checks (plan): an image's namespaces are consistent and restorable, its namespaces
//! made outside the tree have a `--join-ns` each; and what `ckpt check --json` lists of
//! them.

use std::collections::BTreeMap;

use super::net::net_ok;
use super::{IN_TREE_USER, IPC_LIMITS, JOINABLE, MIXABLE, title};
use crate::error::Problem;
use crate::kinds::check::p;
use crate::model::{Checkpoint, Namespace};
use crate::sys;

// ---- checks (plan) ----

/// The namespaces made outside the tree in the image have each a `--join-ns` of their
/// kind (`joins`: kind, path), which names a namespace file of that kind; and each
/// `--join-ns` is for one of them.
pub(crate) fn check_joins(
    ckpt: &Checkpoint,
    joins: &[(String, std::path::PathBuf)],
    problems: &mut Vec<Problem>,
) {
    let foreign: Vec<&Namespace> = ckpt.namespaces.iter().filter(|n| n.foreign).collect();
    for ns in &foreign {
        if !JOINABLE.contains(&ns.kind.as_str()) {
            p(
                problems,
                "namespace",
                format!(
                    "the tree was in a {} namespace made outside it ({}:[{}]), which \
                     restore cannot join",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode
                ),
            );
        } else if !joins.iter().any(|(k, _)| *k == ns.kind) {
            p(
                problems,
                "namespace",
                format!(
                    "the tree was in a {} namespace made outside it ({}:[{}]): give the \
                     one to restore it in with --join-ns {}:PATH (e.g. /proc/PID/ns/{} \
                     or a bind-mounted namespace file such as /run/netns/NAME)",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode,
                    ns.kind,
                    ns.kind
                ),
            );
        }
    }
    // (A PID namespace's: `kinds::task::extpidns`.)
    for (kind, path) in joins.iter().filter(|(k, _)| k != "pid") {
        if !foreign.iter().any(|n| n.kind == *kind) {
            p(
                problems,
                "namespace",
                format!(
                    "--join-ns {kind}:{}: the image has no {} namespace made outside \
                     the tree",
                    path.display(),
                    title(kind)
                ),
            );
            continue;
        }
        match sys::ns::open_ns_file(path) {
            Ok((_, t)) if Some(t) == sys::ns::clone_flag(kind) => {}
            Ok(_) => p(
                problems,
                "namespace",
                format!(
                    "--join-ns {kind}:{}: not a {} namespace",
                    path.display(),
                    title(kind)
                ),
            ),
            Err(e) => p(
                problems,
                "namespace",
                format!("--join-ns {kind}:{}: {e}", path.display()),
            ),
        }
    }
}

/// What `ckpt check --json` lists of the image's namespaces: each with its kind and
/// whether the tree owns it ("own": restore creates it), joins it ("external": made
/// outside the tree, `--join-ns`) or shares ckpt's ("host"); a user namespace of the
/// tree's own with its ID maps ("INSIDE OUTSIDE COUNT" lines), setgroups and owner;
/// a PID namespace of the tree's own as kind "pid", "own". Each says whether a process
/// below the tree's root made it ("below": true, "made_by": that process's image PID,
/// the first in it whose parent is not), and a mount namespace made so what its mounts
/// need ("mounts", as `kinds::mnt::manifest` for the tree's own).
pub fn manifest(ckpt: &Checkpoint) -> serde_json::Value {
    let root = ckpt.processes.first();
    let list: Vec<serde_json::Value> = ckpt
        .namespaces
        .iter()
        .map(|ns| {
            let how = match (ns.external, ns.foreign) {
                (false, _) => "own",
                (true, true) => "external",
                (true, false) => "host",
            };
            let key = (ns.kind.clone(), ns.inode);
            let below = !ns.external && root.is_some_and(|r| !r.namespaces.contains(&key));
            let mut v = serde_json::json!({
                "kind": ns.kind, "inode": ns.inode, "as": how, "below": below,
            });
            if let (true, Some(o)) = (below, v.as_object_mut()) {
                let inside = |pid: i32| {
                    ckpt.processes
                        .iter()
                        .any(|p| p.pid == pid && p.namespaces.contains(&key))
                };
                let maker = ckpt
                    .processes
                    .iter()
                    .find(|p| p.namespaces.contains(&key) && !inside(p.ppid));
                if let Some(m) = maker {
                    o.insert("made_by".into(), m.pid.into());
                }
                if let Some(t) = &ns.mounts {
                    o.insert("mounts".into(), crate::kinds::mnt::tree_manifest(t));
                }
            }
            if let (Some(u), Some(o)) = (&ns.user, v.as_object_mut()) {
                let lines = |m: &str| -> Vec<String> {
                    m.lines()
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                        .filter(|l| !l.is_empty())
                        .collect()
                };
                o.insert("uid_map".into(), lines(&u.uid_map).into());
                o.insert("gid_map".into(), lines(&u.gid_map).into());
                o.insert("setgroups".into(), u.setgroups.into());
                o.insert("owner_uid".into(), u.owner_uid.into());
            }
            v
        })
        .collect();
    let mut list = list;
    if ckpt.own_pid_namespace {
        // (made anew, its root PID 1 again; its inode is not recorded)
        list.push(serde_json::json!({"kind": "pid", "as": "own"}));
    }
    serde_json::Value::Array(list)
}

/// The image's namespaces are consistent and restorable: every process names each of
/// its namespaces once and each is described; a namespace of the tree's own is of a
/// kind restore creates, with its state, and all processes share the root's.
pub(crate) fn check_namespaces(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let mut described: BTreeMap<(&str, u64), &Namespace> = BTreeMap::new();
    for ns in &ckpt.namespaces {
        if described.insert((ns.kind.as_str(), ns.inode), ns).is_some() {
            p(
                problems,
                "malformed",
                format!("namespace {}:[{}] is described twice", ns.kind, ns.inode),
            );
        }
        if ns.external {
            continue;
        }
        let ok = match ns.kind.as_str() {
            "uts" => ns.uts.as_ref().is_some_and(|u| {
                u.hostname.len() <= 64
                    && u.domainname.len() <= 64
                    && !u.hostname.contains(&0)
                    && !u.domainname.contains(&0)
            }),
            "ipc" => ns.ipc.as_ref().is_some_and(|l| {
                l.values.iter().all(|(k, v)| {
                    IPC_LIMITS.contains(&k.as_str())
                        && !v.is_empty()
                        && v.bytes()
                            .all(|c| c.is_ascii_digit() || c == b' ' || c == b'\t')
                })
            }),
            "time" => ns
                .time
                .is_some_and(|t| t.monotonic_ns >= 0 && t.boottime_ns >= 0),
            "mnt" => ns.mounts.is_some(),
            "net" => ns.net.as_ref().is_some_and(net_ok),
            "cgroup" => ns
                .cgroup
                .as_ref()
                .is_some_and(|c| c.roots.iter().all(crate::kinds::cgroup::path_ok)),
            "user" => ns.user.as_ref().is_some_and(crate::kinds::userns::state_ok),
            _ => false,
        };
        if !ok {
            p(
                problems,
                "namespace",
                format!(
                    "the image has a {} namespace of the tree's own ({}:[{}]) that restore \
                     cannot create",
                    title(&ns.kind),
                    ns.kind,
                    ns.inode
                ),
            );
        }
    }
    crate::kinds::userns::check(ckpt, problems);
    check_below_root(ckpt, problems);
    let Some(root) = ckpt.processes.first() else {
        return;
    };
    for proc_ in &ckpt.processes {
        for (kind, inode) in &proc_.namespaces {
            let Some(ns) = described.get(&(kind.as_str(), *inode)) else {
                p(
                    problems,
                    "malformed",
                    format!(
                        "process {} is in namespace {kind}:[{inode}], which the image does \
                         not describe",
                        proc_.pid
                    ),
                );
                continue;
            };
            if !ns.external
                && !root.namespaces.contains(&(kind.clone(), *inode))
                && !made_below_root(ckpt, kind, *inode)
            {
                p(
                    problems,
                    "namespace",
                    format!(
                        "process {} is in another {} namespace than the tree's root",
                        proc_.pid,
                        title(kind)
                    ),
                );
            }
        }
    }
}

/// The processes of the image in namespace `kind:[inode]` whose parent is not in it
/// (the root aside): the one that made it, or, for a time namespace, the children of
/// the process that made it for them.
fn creators<'a>(ckpt: &'a Checkpoint, kind: &str, inode: u64) -> Vec<&'a crate::model::Process> {
    let key = (kind.to_string(), inode);
    let in_it = |p: &crate::model::Process| p.namespaces.contains(&key);
    ckpt.processes
        .iter()
        .skip(1)
        .filter(|p| in_it(p))
        .filter(|p| !ckpt.processes.iter().any(|q| q.pid == p.ppid && in_it(q)))
        .collect()
}

/// Whether namespace `kind:[inode]` (not the root's) is one a process below the root
/// made, of a kind restore makes there ([`MIXABLE`]): exactly one process of the image
/// is in it while its parent is not (for a user namespace, at least one; for a time
/// namespace, which a process makes for its children, children of one process).
fn made_below_root(ckpt: &Checkpoint, kind: &str, inode: u64) -> bool {
    if !MIXABLE.contains(&kind) {
        return false;
    }
    let c = creators(ckpt, kind, inode);
    match kind {
        // (A user namespace may have been entered by others with setns: each process
        // joins its own alone at restore.)
        "user" => !c.is_empty(),
        "time" => c
            .first()
            .is_some_and(|f| c.iter().all(|o| o.ppid == f.ppid)),
        _ => c.len() == 1,
    }
}

/// The namespaces processes below the root made in ckpt's user namespace (those made
/// in a user namespace of the tree's are UTS, IPC, network or cgroup ones only,
/// [`IN_TREE_USER`], or time ones, `enter::make_time_in_userns`), and the order in which a
/// process that made a time namespace for its children forked them: restore forks
/// them in the image's order and makes that namespace before the first child in it,
/// so no child in its parent's own may come after one in it.
fn check_below_root(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    let Some(root) = ckpt.processes.first() else {
        return;
    };
    for ns in &ckpt.namespaces {
        if ns.external
            || IN_TREE_USER.contains(&ns.kind.as_str())
            || !MIXABLE.contains(&ns.kind.as_str())
            || root.namespaces.contains(&(ns.kind.clone(), ns.inode))
        {
            continue;
        }
        let c = creators(ckpt, &ns.kind, ns.inode);
        let maker = match (ns.kind.as_str(), c.first()) {
            ("time", Some(f)) => ckpt.processes.iter().find(|q| q.pid == f.ppid),
            (_, f) => f.copied(),
        };
        let Some(maker) = maker else {
            continue;
        };
        // (A time namespace made in one is made by the maker's stub once it joined
        // it: `make_time_in_userns`.)
        if ns.kind == "time" {
            continue;
        }
        if let Some(u) = crate::kinds::userns::of_process(ckpt, maker) {
            p(
                problems,
                "namespace",
                format!(
                    "process {} ({}) made the {} namespace {}:[{}] in the user namespace \
                     user:[{}] of the tree's; only UTS, IPC, network, cgroup and time \
                     namespaces made in one are restored yet",
                    maker.pid,
                    String::from_utf8_lossy(&maker.comm),
                    title(&ns.kind),
                    ns.kind,
                    ns.inode,
                    u.inode,
                ),
            );
        }
    }
    for parent in &ckpt.processes {
        let Some(own) = super::inode_of(parent, "time") else {
            continue;
        };
        let mut theirs: Option<u64> = None;
        for kid in ckpt.processes.iter().filter(|k| k.ppid == parent.pid) {
            let Some(t) = super::inode_of(kid, "time") else {
                continue;
            };
            let wrong = match theirs {
                None if t != own => {
                    theirs = Some(t);
                    false
                }
                None => false,
                Some(first) => t != first,
            };
            if wrong {
                p(
                    problems,
                    "namespace",
                    format!(
                        "process {} ({}) has children in different time namespaces \
                         (process {} in time:[{t}] after one in time:[{}] it made for \
                         its children); this is not restored",
                        parent.pid,
                        String::from_utf8_lossy(&parent.comm),
                        kid.pid,
                        theirs.unwrap_or(0)
                    ),
                );
                break;
            }
        }
    }
}
