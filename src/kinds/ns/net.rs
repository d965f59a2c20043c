//! A network namespace of the tree's own: what dump reads of it (only a loopback
//! interface, its addresses and settings; anything else refused), what plan checks of
//! the record, and how restore sets a new one up.

use std::collections::BTreeMap;

use super::owned;
use crate::error::{DumpError, DumpResult};
use crate::model::{Checkpoint, NetAddr, NetState};
use crate::sys;

// ---- collect (dump) ----

/// What a network namespace holds, read from inside it.
struct NetRead {
    links: Vec<sys::rtnl::Link>,
    addrs: Vec<sys::rtnl::Addr>,
    routes: Vec<sys::rtnl::Route>,
    tables: Vec<String>,
    sysctls: Vec<(String, String)>,
}

/// The network namespace of the tree's own (`inode`) that process `pid` is in: its
/// loopback interface and the settings restore writes again; anything restore cannot
/// make again is refused, naming it.
pub(super) fn own_net(pid: i32, inode: u64) -> DumpResult<NetState> {
    let read = sys::ns::inside(pid, &["net"], || {
        let mut tables = sys::rtnl::nft_tables()?;
        // (The dump's own lock in a namespace a process below the root made.)
        let ours = crate::kinds::fd::belownet::dump_lock_table();
        tables.retain(|t| *t != ours);
        tables.extend(sys::ns::legacy_tables());
        Ok(NetRead {
            links: sys::rtnl::links()?,
            addrs: sys::rtnl::addrs()?,
            routes: sys::rtnl::routes()?,
            tables,
            sysctls: sys::ns::net_sysctls()?,
        })
    })?;
    let refuse = |why: String| DumpError::Unsupported {
        pid,
        why: format!("its network namespace of its own (net:[{inode}]) {why}"),
    };
    let others: Vec<String> = read
        .links
        .iter()
        .filter(|l| !l.is_loopback())
        .map(|l| {
            if l.kind.is_empty() {
                l.name.clone()
            } else {
                format!("{} ({})", l.name, l.kind)
            }
        })
        .collect();
    if !others.is_empty() {
        return Err(refuse(format!(
            "has the network interface(s) {}; only a namespace with nothing but its \
             loopback interface is restored yet",
            others.join(", ")
        )));
    }
    let Some(lo) = read.links.iter().find(|l| l.is_loopback()) else {
        return Err(refuse("has no loopback interface".into()));
    };
    let made: Vec<String> = read
        .routes
        .iter()
        .filter(|r| r.protocol != libc::RTPROT_KERNEL)
        .map(show_route)
        .collect();
    if !made.is_empty() {
        return Err(refuse(format!(
            "has route(s) the kernel did not make for its addresses ({}); routes are \
             not restored yet",
            made.join(", ")
        )));
    }
    if !read.tables.is_empty() {
        return Err(refuse(format!(
            "has firewall tables ({}); nf_tables and iptables rules are not restored yet",
            read.tables.join(", ")
        )));
    }
    // The settings that differ from what a new namespace starts with, and whether a new
    // namespace takes them (written in order, each reads back as written).
    let changed = sys::ns::in_new_net(|| {
        let fresh: BTreeMap<String, String> = sys::ns::net_sysctls()?.into_iter().collect();
        let changed: Vec<(String, String)> = read
            .sysctls
            .iter()
            .filter(|(k, v)| fresh.get(k) != Some(v))
            .cloned()
            .collect();
        for (k, v) in &changed {
            let _ = sys::ns::write_sysctl(k, v);
        }
        let lost: Vec<String> = changed
            .iter()
            .filter(|(k, v)| sys::ns::read_sysctl(k).ok().as_ref() != Some(v))
            .map(|(k, v)| format!("{} = {v}", k.replace('/', ".")))
            .collect();
        Ok((changed, lost))
    })?;
    let (sysctls, lost) = changed;
    if !lost.is_empty() {
        return Err(refuse(format!(
            "has settings a new network namespace does not take back ({}); they are \
             not restored",
            lost.join(", ")
        )));
    }
    Ok(NetState {
        lo_up: lo.is_up(),
        lo_mtu: lo.mtu,
        addrs: read
            .addrs
            .iter()
            .filter(|a| a.index == lo.index)
            .map(|a| NetAddr {
                family: a.family,
                prefixlen: a.prefixlen,
                flags: a.flags,
                scope: a.scope,
                local: a.local.clone(),
                address: a.address.clone(),
                label: a.label.clone(),
            })
            .collect(),
        sysctls,
    })
}

/// A route as messages show it.
fn show_route(r: &sys::rtnl::Route) -> String {
    let a = sys::rtnl::Addr {
        family: r.family,
        prefixlen: r.dst_len,
        address: r.dst.clone(),
        ..Default::default()
    };
    let dst = if r.dst.is_empty() {
        "default".to_string()
    } else {
        a.show()
    };
    format!("{dst} table {} proto {}", r.table, r.protocol)
}

// ---- checks (plan) ----

/// Whether a network namespace's recorded state is one restore can set.
pub(super) fn net_ok(n: &NetState) -> bool {
    n.addrs.iter().all(|a| {
        let len = match i32::from(a.family) {
            libc::AF_INET => 4,
            libc::AF_INET6 => 16,
            _ => return false,
        };
        (a.local.is_empty() || a.local.len() == len)
            && a.address.len() == len
            && usize::from(a.prefixlen) <= len * 8
            && a.label.len() < 16
            && !a.label.contains('\0')
    }) && n.sysctls.iter().all(|(k, v)| {
        k.starts_with("net/")
            && !k.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && !k.contains('\0')
            && !v.contains('\0')
    })
}

// ---- restore (stage) ----

/// The state of the tree's own network namespace, if it had one.
pub(super) fn own_net_state(ckpt: &Checkpoint) -> Option<&NetState> {
    owned(ckpt).into_iter().find_map(|n| n.net.as_ref())
}

/// The flags restore gives an address it adds (`IFA_F_*` of linux/if_addr.h): NODAD
/// 0x02, HOMEADDRESS 0x10, MANAGETEMPADDR 0x100, NOPREFIXROUTE 0x200, MCAUTOJOIN
/// 0x400; the others are the kernel's to set.
const ADDR_FLAGS: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

/// An address of the image as rtnetlink takes it, on interface `index`.
fn rtnl_addr(a: &NetAddr, index: i32) -> sys::rtnl::Addr {
    sys::rtnl::Addr {
        family: a.family,
        prefixlen: a.prefixlen,
        flags: a.flags & ADDR_FLAGS,
        scope: a.scope,
        index,
        local: a.local.clone(),
        address: a.address.clone(),
        label: a.label.clone(),
    }
}

/// The same address (family, address, prefix length).
fn same_addr(a: &sys::rtnl::Addr, b: &sys::rtnl::Addr) -> bool {
    let key = |x: &sys::rtnl::Addr| {
        (
            x.family,
            x.prefixlen,
            if x.local.is_empty() {
                x.address.clone()
            } else {
                x.local.clone()
            },
        )
    };
    key(a) == key(b)
}

/// Give the calling thread's new network namespace the dumped one's state: its
/// settings, its loopback interface up or down with its MTU, exactly its addresses
/// (those the kernel added when it went up and the dump had not are removed); the
/// settings are read back.
pub(crate) fn set_up_net(n: &NetState) -> crate::error::RestoreResult<()> {
    for (k, v) in &n.sysctls {
        sys::ns::write_sysctl(k, v)?;
    }
    let links = sys::rtnl::links()?;
    let Some(lo) = links.iter().find(|l| l.is_loopback()) else {
        return Err(crate::error::RestoreError::Stage(
            "the new network namespace has no loopback interface".into(),
        ));
    };
    sys::rtnl::set_link(lo.index, n.lo_up, n.lo_mtu)?;
    let want: Vec<sys::rtnl::Addr> = n.addrs.iter().map(|a| rtnl_addr(a, lo.index)).collect();
    let have: Vec<sys::rtnl::Addr> = sys::rtnl::addrs()?
        .into_iter()
        .filter(|a| a.index == lo.index)
        .collect();
    for h in &have {
        if !want.iter().any(|w| same_addr(w, h)) {
            sys::rtnl::del_addr(h)?;
        }
    }
    for w in &want {
        if !have.iter().any(|h| same_addr(w, h)) {
            sys::rtnl::add_addr(w)?;
        }
    }
    for (k, v) in &n.sysctls {
        let now = sys::ns::read_sysctl(k)?;
        if now != *v {
            return Err(crate::error::RestoreError::Stage(format!(
                "/proc/sys/{k} in the new network namespace reads {now:?}, not {v:?}"
            )));
        }
    }
    Ok(())
}
