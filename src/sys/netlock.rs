//! Locking TCP connections while their process is gone: netfilter rules (through the
//! `nft` command) that drop the peer's packets, so the kernel does not answer them with
//! a reset before restore brings the socket back. One rule per connection, each tagged
//! with a comment naming the connection, in the table `inet ckpt_lock`.

use std::process::Command;

use super::{Result, SysError};

const TABLE: &str = "ckpt_lock";

/// (address, port) of a raw sockaddr_in / sockaddr_in6, formatted for nft.
fn endpoint(a: &[u8]) -> Option<(bool, String, u16)> {
    let port = u16::from_be_bytes([*a.get(2)?, *a.get(3)?]);
    match a.len() {
        16 => Some((false, format!("{}.{}.{}.{}", a[4], a[5], a[6], a[7]), port)),
        28 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a.get(8..24)?);
            Some((true, std::net::Ipv6Addr::from(b).to_string(), port))
        }
        _ => None,
    }
}

fn comment(local: &[u8], peer: &[u8]) -> Option<String> {
    let (_, la, lp) = endpoint(local)?;
    let (_, pa, pp) = endpoint(peer)?;
    Some(format!("ckpt {la} {lp} {pa} {pp}"))
}

fn nft(args: &str) -> Result<String> {
    let out = Command::new("nft")
        .args(args.split(' '))
        .output()
        .map_err(|e| SysError::io("run nft (install nftables to lock TCP connections)", e))?;
    if !out.status.success() {
        return Err(SysError::Other(format!(
            "nft {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drop every packet the peer sends to each connection (local, peer).
pub fn lock(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    // Another ckpt may delete the (then empty) table between our steps: try again once.
    match lock_once(conns) {
        Ok(()) => Ok(()),
        Err(_) => lock_once(conns),
    }
}

fn lock_once(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    if conns.is_empty() {
        return Ok(());
    }
    nft(&format!("add table inet {TABLE}"))?;
    nft(&format!(
        "add chain inet {TABLE} input {{ type filter hook input priority -300 ; }}"
    ))?;
    for (local, peer) in conns {
        let (v6, la, lp) =
            endpoint(local).ok_or_else(|| SysError::Other("bad TCP address to lock".into()))?;
        let (_, pa, pp) =
            endpoint(peer).ok_or_else(|| SysError::Other("bad TCP address to lock".into()))?;
        let ip = if v6 { "ip6" } else { "ip" };
        let c = comment(local, peer).unwrap_or_default();
        // The comment has spaces: pass the rule as separate arguments.
        let rule = format!(
            "add rule inet {TABLE} input {ip} saddr {pa} {ip} daddr {la} tcp sport {pp} tcp dport {lp} drop comment"
        );
        let mut args: Vec<String> = rule.split(' ').map(str::to_string).collect();
        args.push(format!("\"{c}\""));
        let out = Command::new("nft")
            .args(&args)
            .output()
            .map_err(|e| SysError::io("run nft", e))?;
        if !out.status.success() {
            return Err(SysError::Other(format!(
                "nft {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// Remove the rules of these connections (and the table once it is empty). Errors are
/// ignored: a lock that is not there is fine.
pub fn unlock(conns: &[(Vec<u8>, Vec<u8>)]) {
    if conns.is_empty() {
        return;
    }
    let Ok(list) = nft(&format!("-a list chain inet {TABLE} input")) else {
        return;
    };
    let wanted: Vec<String> = conns.iter().filter_map(|(l, p)| comment(l, p)).collect();
    let mut left = 0;
    for line in list.lines() {
        let Some(h) = line.rsplit_once("# handle ").map(|x| x.1.trim()) else {
            continue;
        };
        if !line.contains("drop") {
            continue;
        }
        if wanted.iter().any(|c| line.contains(&format!("\"{c}\""))) {
            let _ = nft(&format!("delete rule inet {TABLE} input handle {h}"));
        } else {
            left += 1;
        }
    }
    if left == 0 {
        let _ = nft(&format!("delete table inet {TABLE}"));
    }
}
