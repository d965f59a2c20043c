//! Propagation between the namespace's mounts (peer groups, slaves): the plan dump
//! checks and restore replays ([`PropPlan`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;

use crate::error::{RestoreError, RestoreResult};
use crate::model::MountTree;
use crate::sys;

/// How restore gives the namespace's mounts their propagation, once they are all there
/// (private): each peer group's leader (the member with the widest root) is made shared,
/// after it is made a slave of its own master group if it has one; the other members
/// join its group (`MOVE_MOUNT_SET_GROUP`); a mount that is only a slave joins its
/// master group's leader and is made a slave. Indices are places in the mount list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PropPlan {
    /// (group, its leader, the group it is a slave of, the other members), masters
    /// before their slaves.
    groups: Vec<(String, usize, Option<String>, Vec<usize>)>,
    /// (a mount that is a slave only, its master group).
    slaves: Vec<(usize, String)>,
    unbindable: Vec<usize>,
    /// The groups found outside the namespace (`MountTree::outside`): a group's leader
    /// joins it from there, and takes its master with it.
    outside: BTreeSet<String>,
}

/// One mount as [`prop_plan`] sees it: device, root, optional fields.
pub(super) type PropIn<'a> = (u64, &'a [u8], &'a [String]);

/// Whether `root` is `top` or below it.
pub(super) fn within(root: &[u8], top: &[u8]) -> bool {
    top == b"/" || root == top || (root.starts_with(top) && root.get(top.len()) == Some(&b'/'))
}

/// The [`PropPlan`] of mounts, or the place of one restore cannot give its
/// propagation, and why. `outside`: the groups a mount of ckpt's namespace is in or a
/// slave of (a namespace a process below the root made, `MountTree::outside`).
pub(super) fn prop_plan(
    mounts: &[PropIn],
    outside: &BTreeSet<String>,
) -> std::result::Result<PropPlan, (usize, String)> {
    let field = |i: usize, k: &str| {
        mounts[i]
            .2
            .iter()
            .find_map(|o| o.strip_prefix(k))
            .map(str::to_string)
    };
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut plan = PropPlan {
        outside: outside.clone(),
        ..PropPlan::default()
    };
    for (i, (_, _, opts)) in mounts.iter().enumerate() {
        for o in opts.iter() {
            if let Some(g) = o.strip_prefix("shared:") {
                members.entry(g.to_string()).or_default().push(i);
            } else if o == "unbindable" {
                plan.unbindable.push(i);
            } else if !o.starts_with("master:") {
                return Err((i, format!("its propagation ({o}) is not restored yet")));
            }
        }
    }
    // Each group's leader: the widest root, which holds every member's, on one device.
    let mut leader = BTreeMap::new();
    for (g, ms) in &members {
        let l = ms
            .iter()
            .copied()
            .min_by_key(|&i| mounts[i].1.len())
            .unwrap_or_default();
        if let Some(&x) = ms
            .iter()
            .find(|&&x| mounts[x].0 != mounts[l].0 || !within(mounts[x].1, mounts[l].1))
        {
            return Err((
                x,
                format!(
                    "its peer group {g} has mounts of different directories none of which \
                     holds the others; this is not restored yet"
                ),
            ));
        }
        leader.insert(g.clone(), l);
    }
    let master_of = |i: usize| -> std::result::Result<Option<String>, (usize, String)> {
        let Some(n) = field(i, "master:") else {
            return Ok(None);
        };
        // (One outside: checked at dump, where the group was found.)
        if outside.contains(&n) && !leader.contains_key(&n) {
            return Ok(Some(n));
        }
        let Some(&l) = leader.get(&n) else {
            return Err((
                i,
                format!(
                    "it is a slave of a mount outside the namespace (master:{n}); this is \
                     not restored yet"
                ),
            ));
        };
        if mounts[l].0 != mounts[i].0 || !within(mounts[i].1, mounts[l].1) {
            return Err((
                i,
                format!("its master group {n} does not hold its root; this is not restored yet"),
            ));
        }
        Ok(Some(n))
    };
    // Groups in an order where a master group comes before its slaves.
    let mut done = BTreeSet::new();
    while done.len() < members.len() {
        let before = done.len();
        for (g, ms) in &members {
            let l = leader[g];
            // (A group joined from outside has its master from there.)
            let master = match outside.contains(g) {
                true => None,
                false => master_of(l)?,
            };
            if done.contains(g) || master.as_ref().is_some_and(|n| !done.contains(n)) {
                continue;
            }
            let others = ms.iter().copied().filter(|&x| x != l).collect();
            plan.groups.push((g.clone(), l, master, others));
            done.insert(g.clone());
        }
        if done.len() == before {
            return Err((
                0,
                "its peer groups are slaves of each other in a cycle".into(),
            ));
        }
    }
    for i in 0..mounts.len() {
        if field(i, "shared:").is_none() {
            if let Some(n) = master_of(i)? {
                plan.slaves.push((i, n));
            }
        }
    }
    Ok(plan)
}

/// The tree's mounts as [`prop_plan`] takes them.
pub(super) fn prop_in(tree: &MountTree) -> Vec<PropIn<'_>> {
    tree.mounts
        .iter()
        .map(|m| (m.dev, m.root.as_slice(), m.propagation.as_slice()))
        .collect()
}

/// Give the mounts (all private, `fds` their roots, in the tree's order) their
/// propagation (see [`PropPlan`]); `outside`: a mount of ckpt's namespace for each
/// group found there (`MountTree::outside`, opened and checked by the caller).
pub(super) fn propagate(
    mounts: &[PropIn],
    fds: &[&OwnedFd],
    outside: &BTreeMap<String, OwnedFd>,
) -> RestoreResult<()> {
    let keys = outside.keys().cloned().collect();
    let plan = prop_plan(mounts, &keys).map_err(|(_, why)| RestoreError::Reported(why))?;
    let fd = |i: usize| {
        fds.get(i)
            .copied()
            .ok_or_else(|| RestoreError::Reported("a mount went".into()))
    };
    let path = |i: usize| fd(i).map(sys::mount::fd_path);
    let leader: BTreeMap<&str, usize> = plan
        .groups
        .iter()
        .map(|(g, l, _, _)| (g.as_str(), *l))
        .collect();
    // A mount of group `n`, or a slave of it: the namespace's leader, or one outside.
    let source_of = |n: &str| match leader.get(n) {
        Some(&l) => fd(l),
        None => outside
            .get(n)
            .ok_or_else(|| RestoreError::Reported(format!("no peer group {n}"))),
    };
    for (g, l, master, others) in &plan.groups {
        if plan.outside.contains(g) {
            // (Its leader joins the group where it is, with the group's master.)
            let from = outside
                .get(g)
                .ok_or_else(|| RestoreError::Reported(format!("no peer group {g}")))?;
            sys::mount::set_group(from, fd(*l)?)?;
        } else {
            if let Some(n) = master {
                sys::mount::set_group(source_of(n)?, fd(*l)?)?;
                sys::mount::set_propagation(&path(*l)?, "slave")?;
            }
            sys::mount::set_propagation(&path(*l)?, "shared")?;
        }
        for &x in others {
            sys::mount::set_group(fd(*l)?, fd(x)?)?;
        }
    }
    for (m, n) in &plan.slaves {
        sys::mount::set_group(source_of(n)?, fd(*m)?)?;
        sys::mount::set_propagation(&path(*m)?, "slave")?;
    }
    for &u in &plan.unbindable {
        sys::mount::set_propagation(&path(u)?, "unbindable")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_plans() {
        let o = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let (a, b, c, d, e) = (
            o("shared:5"),
            o("shared:5"),
            o("master:5"),
            o("shared:7 master:5"),
            o("unbindable"),
        );
        let f = o("shared:7");
        let mounts: Vec<PropIn> = vec![
            (1, b"/", &a),
            (1, b"/x", &b),
            (1, b"/x/y", &c),
            (1, b"/z", &d),
            (2, b"/", &e),
            (1, b"/z/w", &f),
        ];
        let none = BTreeSet::new();
        let plan = prop_plan(&mounts, &none).expect("restorable");
        assert_eq!(
            plan.groups,
            vec![
                ("5".into(), 0, None, vec![1]),
                ("7".into(), 3, Some("5".into()), vec![5]),
            ]
        );
        assert_eq!(plan.slaves, vec![(2, "5".to_string())]);
        assert_eq!(plan.unbindable, vec![4]);
        // A slave of a group outside the namespace; a group whose roots do not nest;
        // propagate_from.
        let m = o("master:9");
        assert!(
            prop_plan(&[(1, b"/", &m)], &none).is_err_and(|(i, w)| i == 0 && w.contains("outside"))
        );
        assert!(prop_plan(&[(1, b"/a", &a), (1, b"/b", &b)], &none).is_err());
        assert!(prop_plan(&[(1, b"/a", &a), (2, b"/a", &b)], &none).is_err());
        let pf = o("master:5 propagate_from:2");
        assert!(prop_plan(&[(1, b"/", &a), (1, b"/", &pf)], &none).is_err());
        // Groups found outside the namespace (one below the root made): a slave of one
        // is restorable; a group joined from there takes its master from there.
        let out: BTreeSet<String> = ["9".to_string(), "5".to_string()].into();
        let plan = prop_plan(&[(1, b"/", &m), (1, b"/x", &d), (1, b"/", &a)], &out)
            .expect("restorable with groups outside");
        assert_eq!(plan.slaves, vec![(0, "9".to_string())]);
        assert_eq!(
            plan.groups,
            vec![
                ("5".into(), 2, None, vec![]),
                ("7".into(), 1, Some("5".into()), vec![]),
            ]
        );
        assert!(plan.outside.contains("5"));
    }
}
