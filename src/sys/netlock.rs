//! Locking TCP connections while their process is gone: netfilter rules (through the
//! `nft` command) that drop the peer's packets, so the kernel does not answer them with
//! a reset before restore brings the socket back. One rule per connection, each tagged
//! with a comment naming the connection, in the table `inet ckpt_lock`. Segments marked
//! [`super::tcp::INJECT_MARK`] (restore's own, see `tcp::inject_segment`) pass.

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
        // The comment has spaces: pass the rule as separate arguments. The segments
        // restore itself sends to a connection (`tcp::inject_segment`, marked) pass.
        let mark = super::tcp::INJECT_MARK;
        let rule = format!(
            "add rule inet {TABLE} input {ip} saddr {pa} {ip} daddr {la} tcp sport {pp} tcp dport {lp} meta mark != {mark:#x} drop comment"
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

/// The tree's network namespace when a restore joins one made outside it that outlived
/// the checkpoint (a pod's: its infra container holds it), which then still holds the
/// dump's lock: the namespace and the dump's rules as `nft` listed them there, both
/// taken before the restore enters the tree's mount namespace (where no `nft` may be
/// found). The handover at the point of no return ([`Handover::prepare_in`]) and the
/// unlock after it ([`TreeNet::unlock`]) then work there over netlink.
pub struct TreeNet {
    ns: std::fs::File,
    /// `nft -a list chain inet ckpt_lock input` in it (None: no such chain).
    listing: Option<String>,
}

impl TreeNet {
    /// The network namespace of file `ns` and the dump's rules in it.
    pub fn open(ns: std::fs::File) -> Result<TreeNet> {
        let listing = in_net(Some(&ns), || {
            Ok(nft(&format!("-a list chain inet {TABLE} input")).ok())
        })?;
        Ok(TreeNet { ns, listing })
    }

    /// Remove the dump's rules of these connections from the namespace (the table too
    /// once they were all it held), in one transaction; best effort, as [`unlock`].
    pub fn unlock(&self, conns: &[(Vec<u8>, Vec<u8>)]) {
        if conns.is_empty() || self.listing.is_none() {
            return;
        }
        let _ = in_net(Some(&self.ns), || {
            let mut h = Handover::open(String::new())?;
            let msgs = h.del_dump_rules(rules_of(self.listing.as_deref(), conns));
            if msgs.is_empty() {
                return Ok(());
            }
            h.transaction(msgs)
        });
    }
}

/// `f` on a thread of ours that joined the network namespace of file `ns` (the `nft`
/// it runs and the sockets it makes are in that namespace: a child and a socket take
/// the namespace of the thread that makes them), or on the calling thread.
fn in_net<T: Send>(ns: Option<&std::fs::File>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(ns) = ns else {
        return f();
    };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            super::ns::join_file(ns, libc::CLONE_NEWNET, "the tree's network namespace")?;
            f()
        })
        .join()
        .map_err(|_| SysError::Other("a thread in the tree's network namespace panicked".into()))?
    })
}

// ---- handing the lock over to the restore (nf_tables over netlink) ----

/// Kernel constants of `linux/netfilter/nf_tables.h` (the attribute enums; libc has only
/// the message types, payload bases and registers).
mod nft {
    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_TABLE_FLAGS: u16 = 2;
    pub const NFT_TABLE_F_OWNER: u32 = 2;
    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_CHAIN_HOOK: u16 = 4;
    pub const NFTA_CHAIN_TYPE: u16 = 7;
    pub const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub const NFTA_HOOK_PRIORITY: u16 = 2;
    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_HANDLE: u16 = 3;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_RULE_USERDATA: u16 = 7;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;
    pub const NFTA_PAYLOAD_DREG: u16 = 1;
    pub const NFTA_PAYLOAD_BASE: u16 = 2;
    pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub const NFTA_PAYLOAD_LEN: u16 = 4;
    pub const NFTA_CMP_SREG: u16 = 1;
    pub const NFTA_CMP_OP: u16 = 2;
    pub const NFTA_CMP_DATA: u16 = 3;
    pub const NFTA_DATA_VALUE: u16 = 1;
    pub const NFTA_DATA_VERDICT: u16 = 2;
    pub const NFTA_VERDICT_CODE: u16 = 1;
    pub const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub const NFTA_IMMEDIATE_DATA: u16 = 2;
    pub const NFTA_META_DREG: u16 = 1;
    pub const NFTA_META_KEY: u16 = 2;
    /// libnftnl's user-data type of a rule comment (`libnftnl/udata.h`), so that `nft
    /// list` shows it.
    pub const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
}

/// A netlink message (nlmsghdr, nfgenmsg, attributes) under construction.
struct Msg(Vec<u8>);

impl Msg {
    fn new(typ: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `done`
        b.extend_from_slice(&typ.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[family, libc::NFNETLINK_V0 as u8]);
        b.extend_from_slice(&res_id.to_be_bytes());
        Msg(b)
    }
    fn attr(&mut self, typ: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&typ.to_ne_bytes());
        self.0.extend_from_slice(data);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }
    fn str(&mut self, typ: u16, s: &str) -> &mut Self {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(typ, &d)
    }
    fn be32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }
    fn nest(&mut self, typ: u16, f: impl FnOnce(&mut Msg)) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        f(self);
        let len = (self.0.len() - start) as u16;
        let typ = typ | linux_raw_sys::netlink::NLA_F_NESTED as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&typ.to_ne_bytes());
        self
    }
    /// One expression of a rule: `name` with its data attributes.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Msg)) -> &mut Self {
        self.nest(nft::NFTA_LIST_ELEM, |m| {
            m.str(nft::NFTA_EXPR_NAME, name);
            m.nest(nft::NFTA_EXPR_DATA, data);
        })
    }
    /// Load `len` bytes at `offset` of header `base` into register 1, compare with `eq`.
    fn match_payload(&mut self, base: u32, offset: u32, eq: &[u8]) -> &mut Self {
        self.expr("payload", |m| {
            m.be32(nft::NFTA_PAYLOAD_DREG, libc::NFT_REG_1 as u32)
                .be32(nft::NFTA_PAYLOAD_BASE, base)
                .be32(nft::NFTA_PAYLOAD_OFFSET, offset)
                .be32(nft::NFTA_PAYLOAD_LEN, eq.len() as u32);
        })
        .match_reg(eq)
    }
    fn match_meta(&mut self, key: u32, eq: &[u8]) -> &mut Self {
        self.expr("meta", |m| {
            m.be32(nft::NFTA_META_DREG, libc::NFT_REG_1 as u32)
                .be32(nft::NFTA_META_KEY, key);
        })
        .match_reg(eq)
    }
    /// Meta `key` into register 1, compare: not equal to `ne`.
    fn match_meta_not(&mut self, key: u32, ne: &[u8]) -> &mut Self {
        self.expr("meta", |m| {
            m.be32(nft::NFTA_META_DREG, libc::NFT_REG_1 as u32)
                .be32(nft::NFTA_META_KEY, key);
        })
        .cmp_reg(libc::NFT_CMP_NEQ as u32, ne)
    }
    fn match_reg(&mut self, eq: &[u8]) -> &mut Self {
        self.cmp_reg(libc::NFT_CMP_EQ as u32, eq)
    }
    fn cmp_reg(&mut self, op: u32, eq: &[u8]) -> &mut Self {
        self.expr("cmp", |m| {
            m.be32(nft::NFTA_CMP_SREG, libc::NFT_REG_1 as u32)
                .be32(nft::NFTA_CMP_OP, op)
                .nest(nft::NFTA_CMP_DATA, |d| {
                    d.attr(nft::NFTA_DATA_VALUE, eq);
                });
        })
    }
    fn done(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// Message type of nf_tables message `m`.
fn nft_type(m: i32) -> u16 {
    ((libc::NFNL_SUBSYS_NFTABLES << 8) | m) as u16
}

/// What a rule of a lock matches, and where it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rule {
    /// In the connection's own namespace (`inet`, chain `input`): the peer's segments to
    /// it, but restore's own (marked, see `tcp::inject_segment`).
    Inside,
    /// In ckpt's namespace outside the tree's (`inet`, chains `prerouting` and
    /// `output`): the peer's segments to the connection, routed or sent from there.
    Host,
    /// The same, `bridge` family (chain `prerouting`): a peer's segments bridged at L2
    /// (another container on the same bridge), which the `inet` hooks do not see
    /// without br_netfilter.
    Bridge,
    /// In ckpt's namespace (`inet`, chain `output`): its ICMP "destination unreachable"
    /// answers to the peer about a segment of the connection (they make the peer
    /// retransmit at once instead of backing off, RFC 6069).
    Icmp,
}

/// A rule of the lock's chain `chain` in `table`: drop what `rule` says of connection
/// (local, peer), tagged with the connection's comment.
fn lock_rule(
    table: &str,
    chain: &str,
    rule: Rule,
    seq: u32,
    local: &[u8],
    peer: &[u8],
) -> Result<Vec<u8>> {
    let bad = || SysError::Other("bad TCP address to lock".into());
    let (v6, _, _) = endpoint(local).ok_or_else(bad)?;
    let (pv6, _, _) = endpoint(peer).ok_or_else(bad)?;
    if v6 != pv6 {
        return Err(bad());
    }
    // (offset of the source address in the network header, the addresses' bytes)
    let (proto, src_off, range) = if v6 {
        (libc::NFPROTO_IPV6 as u8, 8, 8..24)
    } else {
        (libc::NFPROTO_IPV4 as u8, 12, 4..8)
    };
    let (la, pa) = (
        local.get(range.clone()).ok_or_else(bad)?,
        peer.get(range).ok_or_else(bad)?,
    );
    let (lp, pp) = (
        local.get(2..4).ok_or_else(bad)?,
        peer.get(2..4).ok_or_else(bad)?,
    );
    let c = comment(local, peer).ok_or_else(bad)?;
    let mut udata = vec![nft::NFTNL_UDATA_RULE_COMMENT, (c.len() + 1) as u8];
    udata.extend_from_slice(c.as_bytes());
    udata.push(0);
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
    let family = if rule == Rule::Bridge {
        libc::NFPROTO_BRIDGE
    } else {
        libc::NFPROTO_INET
    };
    let mut m = Msg::new(nft_type(libc::NFT_MSG_NEWRULE), flags, seq, family as u8, 0);
    m.str(nft::NFTA_RULE_TABLE, table)
        .str(nft::NFTA_RULE_CHAIN, chain)
        .nest(nft::NFTA_RULE_EXPRESSIONS, |e| {
            let nh = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
            let th = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;
            let tcp = [libc::IPPROTO_TCP as u8];
            if rule == Rule::Bridge {
                // (the frame's protocol: nfproto is the bridge's here)
                let eth: u16 = if v6 { 0x86dd } else { 0x0800 };
                e.match_meta(libc::NFT_META_PROTOCOL as u32, &eth.to_be_bytes());
            } else {
                e.match_meta(libc::NFT_META_NFPROTO as u32, &[proto]);
            }
            if rule == Rule::Icmp {
                // The ICMP header (8 bytes), then the IP header of the peer's segment
                // (20 bytes, IPv4 without options; 40, IPv6) and its TCP ports.
                let (icmp, unreach, next_off, inner_src, ports) = if v6 {
                    (libc::IPPROTO_ICMPV6 as u8, 1u8, 8 + 6, 8 + 8, 8 + 40)
                } else {
                    (libc::IPPROTO_ICMP as u8, 3u8, 8 + 9, 8 + 12, 8 + 20)
                };
                e.match_meta(libc::NFT_META_L4PROTO as u32, &[icmp])
                    .match_payload(th, 0, &[unreach])
                    .match_payload(th, next_off, &tcp)
                    .match_payload(th, inner_src, pa)
                    .match_payload(th, inner_src + pa.len() as u32, la)
                    .match_payload(th, ports, pp)
                    .match_payload(th, ports + 2, lp);
            } else {
                e.match_payload(nh, src_off, pa)
                    .match_payload(nh, src_off + pa.len() as u32, la)
                    .match_meta(libc::NFT_META_L4PROTO as u32, &tcp)
                    .match_payload(th, 0, pp)
                    .match_payload(th, 2, lp);
            }
            if rule == Rule::Inside {
                // restore's own segments pass (host order: the mark is a number)
                e.match_meta_not(
                    libc::NFT_META_MARK as u32,
                    &super::tcp::INJECT_MARK.to_ne_bytes(),
                );
            }
            e.expr("immediate", |m| {
                m.be32(nft::NFTA_IMMEDIATE_DREG, libc::NFT_REG_VERDICT as u32)
                    .nest(nft::NFTA_IMMEDIATE_DATA, |d| {
                        d.nest(nft::NFTA_DATA_VERDICT, |v| {
                            v.be32(nft::NFTA_VERDICT_CODE, libc::NF_DROP as u32);
                        });
                    });
            });
        })
        .attr(nft::NFTA_RULE_USERDATA, &udata);
    Ok(m.done())
}

/// The lock of a restore's connections, held by the restore itself: a table with the
/// owner flag (`NFT_TABLE_F_OWNER`, Linux 5.12), which the kernel deletes when the
/// netlink socket that made it is closed, that is when ckpt exits, however it dies.
pub struct Handover {
    sock: std::os::fd::OwnedFd,
    table: String,
    seq: u32,
    /// Its table of the same name in the `bridge` family too (a host lock).
    bridge: bool,
}

/// A batch of nf_tables messages ready to send.
struct Batch {
    bytes: Vec<u8>,
    /// The sequence numbers its answers carry, and how many answers there will be.
    lo: u32,
    hi: u32,
    n: usize,
}

/// A handover ready to be made ([`Handover::prepare`]): all that can fail slowly
/// (listing the dump's rules, building the transaction) is done.
pub struct PreparedHandover {
    h: Handover,
    batch: Batch,
}

impl PreparedHandover {
    /// The transaction, applied by the kernel (or refused whole) before this returns:
    /// the point of no return of a restore. What it answered is read by
    /// [`SentHandover::confirm`], once the tree runs.
    pub fn send(self) -> Result<SentHandover> {
        self.h.send_batch(&self.batch)?;
        Ok(SentHandover(self))
    }
}

/// A handover sent, its answers not read yet.
pub struct SentHandover(PreparedHandover);

impl SentHandover {
    /// Whether the kernel made the transaction: the lock is then ours (an error: nothing
    /// changed, the dump's rules are still there).
    pub fn confirm(self) -> Result<Handover> {
        let PreparedHandover { h, batch } = self.0;
        h.answers(&batch)?;
        Ok(h)
    }
}

/// The handles of the dump's rules for these connections in the chain of `inet
/// ckpt_lock`, and whether they are all of its rules.
fn dump_rules(conns: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u64>, bool) {
    rules_of(
        nft(&format!("-a list chain inet {TABLE} input"))
            .ok()
            .as_deref(),
        conns,
    )
}

/// [`dump_rules`] from `list`, what `nft -a list chain inet ckpt_lock input` printed
/// (None: no such chain).
fn rules_of(list: Option<&str>, conns: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u64>, bool) {
    let Some(list) = list else {
        return (Vec::new(), false);
    };
    let wanted: Vec<String> = conns.iter().filter_map(|(l, p)| comment(l, p)).collect();
    let (mut ours, mut left) = (Vec::new(), 0);
    for line in list.lines() {
        let Some(h) = line.rsplit_once("# handle ").map(|x| x.1.trim()) else {
            continue;
        };
        if !line.contains("drop") {
            continue;
        }
        match h.parse::<u64>() {
            Ok(h) if wanted.iter().any(|c| line.contains(&format!("\"{c}\""))) => ours.push(h),
            _ => left += 1,
        }
    }
    (ours, left == 0)
}

impl Handover {
    /// In one nf_tables transaction (all or nothing): a table of ours with the owner flag
    /// that drops the peers' packets of these connections, and the dump's rules for them
    /// gone (with the dump's table if nothing else is in it). From then on the lock lasts
    /// exactly as long as this process (or until [`Handover::release`]). None when there
    /// is nothing to lock.
    #[cfg(test)]
    pub fn take(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Handover>> {
        // Someone else may change the dump's table meanwhile: list it again once.
        let once = || -> Result<Option<Handover>> {
            match Handover::prepare(conns)? {
                Some(p) => p.send()?.confirm().map(Some),
                None => Ok(None),
            }
        };
        once().or_else(|_| once())
    }

    /// Everything up to the transaction: our netlink socket, the dump's rules listed, the
    /// batch built (see [`Handover::take`]). None when there is nothing to lock.
    #[cfg(test)]
    pub fn prepare(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<PreparedHandover>> {
        Handover::prepare_in(None, conns)
    }

    /// [`Handover::prepare`] in the tree's network namespace `net` (joined at restore,
    /// when it outlived the checkpoint: a pod's, see [`TreeNet`]), or the calling
    /// thread's.
    pub fn prepare_in(
        net: Option<&TreeNet>,
        conns: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Option<PreparedHandover>> {
        if conns.is_empty() {
            return Ok(None);
        }
        in_net(net.map(|n| &n.ns), || {
            let mut h = Handover::open(format!("ckpt_restore_{}", std::process::id()))?;
            let rules = match net {
                Some(n) => rules_of(n.listing.as_deref(), conns),
                None => dump_rules(conns),
            };
            let msgs = h.hand_over(rules, conns)?;
            let batch = h.batch(msgs);
            Ok(Some(PreparedHandover { h, batch }))
        })
    }

    /// A lock of our own for these connections (`ckpt migrate`, on both sides): a table
    /// `inet ckpt_migrate_<our PID>` with the owner flag holding the rules [`lock`] makes,
    /// made in one transaction; no other rule is touched. It lasts until
    /// [`Handover::release`] or until this process ends, however it ends. None when
    /// there is nothing to lock.
    pub fn hold(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Handover>> {
        Handover::hold_as("ckpt_migrate", conns)
    }

    /// [`Handover::hold`] in a table `inet PREFIX_<our PID>` (`ckpt_dump`: a dump's
    /// lock from the freeze until its lasting one is made).
    pub fn hold_as(prefix: &str, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Handover>> {
        if conns.is_empty() {
            return Ok(None);
        }
        let mut h = Handover::open(format!("{prefix}_{}", std::process::id()))?;
        let msgs = h.table_and_rules(conns)?;
        h.transaction(msgs)?;
        Ok(Some(h))
    }

    /// Lock more connections in a lock [`Handover::hold`] made.
    pub fn add(&mut self, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut msgs = Vec::new();
        for (local, peer) in conns {
            let seq = self.next_seq();
            msgs.push(lock_rule(
                &self.table,
                "input",
                Rule::Inside,
                seq,
                local,
                peer,
            )?);
        }
        if msgs.is_empty() {
            return Ok(());
        }
        self.transaction(msgs)
    }

    /// Our netlink socket, for table `table` (not made yet).
    fn open(table: String) -> Result<Handover> {
        use rustix::net::{AddressFamily, SocketType, netlink};
        let sock = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(netlink::NETFILTER),
        )
        .map_err(|e| super::rerr("netlink socket (netfilter)", e))?;
        rustix::net::bind(&sock, &netlink::SocketAddrNetlink::new(0, 0))
            .map_err(|e| super::rerr("bind netlink socket", e))?;
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(std::time::Duration::from_secs(5)),
        )
        .map_err(|e| super::rerr("netlink socket timeout", e))?;
        Ok(Handover {
            sock,
            table,
            seq: 0,
            bridge: false,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn hand_over(
        &mut self,
        rules: (Vec<u64>, bool),
        conns: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Vec<u8>>> {
        let mut msgs = self.table_and_rules(conns)?;
        msgs.extend(self.del_dump_rules(rules));
        Ok(msgs)
    }

    /// The messages removing the dump's rules `(handles, all)` ([`dump_rules`]), and its
    /// table when they were all of its rules.
    fn del_dump_rules(&mut self, (dump_handles, all): (Vec<u64>, bool)) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        let inet = libc::NFPROTO_INET as u8;
        let req = libc::NLM_F_REQUEST as u16;
        let ack = libc::NLM_F_ACK as u16;
        let emptied = all && !dump_handles.is_empty();
        for h in dump_handles {
            let mut d = Msg::new(
                nft_type(libc::NFT_MSG_DELRULE),
                req | ack,
                self.next_seq(),
                inet,
                0,
            );
            d.str(nft::NFTA_RULE_TABLE, TABLE)
                .str(nft::NFTA_RULE_CHAIN, "input")
                .attr(nft::NFTA_RULE_HANDLE, &h.to_be_bytes());
            msgs.push(d.done());
        }
        if emptied {
            // The dump's table goes too once our rules were all it held: the chain first,
            // which the kernel refuses (EBUSY, the whole transaction with it) if another
            // dump added a rule since we listed them; the table, then empty, after it.
            let mut c = Msg::new(
                nft_type(libc::NFT_MSG_DELCHAIN),
                req | ack,
                self.next_seq(),
                inet,
                0,
            );
            c.str(nft::NFTA_CHAIN_TABLE, TABLE)
                .str(nft::NFTA_CHAIN_NAME, "input");
            msgs.push(c.done());
            let mut d = Msg::new(
                nft_type(libc::NFT_MSG_DELTABLE),
                req | ack,
                self.next_seq(),
                inet,
                0,
            );
            d.str(nft::NFTA_TABLE_NAME, TABLE);
            msgs.push(d.done());
        }
        msgs
    }

    /// Our table (owner flag), its input chain and a rule per connection.
    fn table_and_rules(&mut self, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Vec<u8>>> {
        let inet = libc::NFPROTO_INET as u8;
        let req = libc::NLM_F_REQUEST as u16;
        let ack = libc::NLM_F_ACK as u16;
        let create = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msgs = Vec::new();
        let mut t = Msg::new(
            nft_type(libc::NFT_MSG_NEWTABLE),
            req | ack | create,
            self.next_seq(),
            inet,
            0,
        );
        t.str(nft::NFTA_TABLE_NAME, &self.table)
            .be32(nft::NFTA_TABLE_FLAGS, nft::NFT_TABLE_F_OWNER);
        msgs.push(t.done());
        let mut c = Msg::new(
            nft_type(libc::NFT_MSG_NEWCHAIN),
            req | ack | create,
            self.next_seq(),
            inet,
            0,
        );
        c.str(nft::NFTA_CHAIN_TABLE, &self.table)
            .str(nft::NFTA_CHAIN_NAME, "input")
            .nest(nft::NFTA_CHAIN_HOOK, |h| {
                h.be32(nft::NFTA_HOOK_HOOKNUM, libc::NF_INET_LOCAL_IN as u32)
                    .be32(nft::NFTA_HOOK_PRIORITY, -300i32 as u32);
            })
            .str(nft::NFTA_CHAIN_TYPE, "filter");
        msgs.push(c.done());
        for (local, peer) in conns {
            let seq = self.next_seq();
            msgs.push(lock_rule(
                &self.table,
                "input",
                Rule::Inside,
                seq,
                local,
                peer,
            )?);
        }
        Ok(msgs)
    }

    /// `msgs` as one batch (one nf_tables transaction), with the range of sequence
    /// numbers its answers carry and how many there will be.
    fn batch(&mut self, msgs: Vec<Vec<u8>>) -> Batch {
        let res = libc::NFNL_SUBSYS_NFTABLES as u16;
        let req = libc::NLM_F_REQUEST as u16;
        let n = msgs.len();
        let seq_of = |m: &[u8]| {
            m.get(8..12)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let lo = msgs.iter().filter_map(|m| seq_of(m)).min();
        let begin = self.next_seq();
        let mut buf = Msg::new(libc::NFNL_MSG_BATCH_BEGIN as u16, req, begin, 0, res).done();
        for m in msgs {
            buf.extend_from_slice(&m);
        }
        let end = self.next_seq();
        buf.extend_from_slice(&Msg::new(libc::NFNL_MSG_BATCH_END as u16, req, end, 0, res).done());
        Batch {
            bytes: buf,
            lo: lo.unwrap_or(begin).min(begin),
            hi: end,
            n,
        }
    }

    /// Send a batch: the kernel applies the whole transaction, or none of it, before
    /// `send` returns.
    fn send_batch(&self, b: &Batch) -> Result<()> {
        rustix::net::send(&self.sock, &b.bytes, rustix::net::SendFlags::empty())
            .map_err(|e| super::rerr("send to nf_tables", e))?;
        Ok(())
    }

    /// Read the answers to batch `b` (only those: an earlier, failed one may have left
    /// some), stopping at the first error.
    fn answers(&self, b: &Batch) -> Result<()> {
        let mut answers = 0;
        let mut first_err = None;
        let mut rb = vec![0u8; 1 << 16];
        while answers < b.n && first_err.is_none() {
            let got = rustix::net::recv(&self.sock, &mut rb, rustix::net::RecvFlags::empty())
                .map_err(|e| super::rerr("receive from nf_tables", e))?
                .0;
            let mut at = 0;
            while at + 16 <= got {
                let len = u32::from_ne_bytes([rb[at], rb[at + 1], rb[at + 2], rb[at + 3]]) as usize;
                let typ = u16::from_ne_bytes([rb[at + 4], rb[at + 5]]);
                if len < 16 || at + len > got {
                    break;
                }
                let seq = u32::from_ne_bytes([rb[at + 8], rb[at + 9], rb[at + 10], rb[at + 11]]);
                if typ == libc::NLMSG_ERROR as u16 && len >= 20 && (b.lo..=b.hi).contains(&seq) {
                    let e =
                        i32::from_ne_bytes([rb[at + 16], rb[at + 17], rb[at + 18], rb[at + 19]]);
                    answers += 1;
                    if e != 0 && first_err.is_none() {
                        first_err = Some(-e);
                    }
                }
                at += (len + 3) & !3;
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(SysError::io(
                "nf_tables transaction (hand the TCP lock over)",
                std::io::Error::from_raw_os_error(e),
            )),
        }
    }

    /// Send `msgs` as one transaction and wait for every answer.
    fn transaction(&mut self, msgs: Vec<Vec<u8>>) -> Result<()> {
        let b = self.batch(msgs);
        self.send_batch(&b)?;
        self.answers(&b)
    }

    /// Remove the lock now (the table goes with the socket anyway).
    pub fn release(mut self) {
        let mut msgs = vec![self.del_table(libc::NFPROTO_INET)];
        if self.bridge {
            msgs.push(self.del_table(libc::NFPROTO_BRIDGE));
        }
        let _ = self.transaction(msgs);
    }

    /// The message deleting table `self.table` of `family`.
    fn del_table(&mut self, family: i32) -> Vec<u8> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let mut d = Msg::new(
            nft_type(libc::NFT_MSG_DELTABLE),
            flags,
            self.next_seq(),
            family as u8,
            0,
        );
        d.str(nft::NFTA_TABLE_NAME, &self.table);
        d.done()
    }

    /// Our socket in the network namespace of file `ns` (a thread of ours joins it to
    /// make the socket, which stays in it), for table `table`.
    fn open_in(table: String, ns: &std::fs::File) -> Result<Handover> {
        std::thread::scope(|sc| {
            sc.spawn(|| {
                super::ns::join_file(ns, libc::CLONE_NEWNET, "ckpt's network namespace")?;
                Handover::open(table)
            })
            .join()
            .map_err(|_| SysError::Other("a thread opening a netlink socket panicked".into()))?
        })
    }

    /// The tables of a host lock (see [`host_hold`]): `inet` with chains prerouting and
    /// output, `bridge` with prerouting, all at raw priority (before conntrack), each
    /// connection's rules in them; with the owner flag if `owned`.
    fn host_tables(&mut self, owned: bool, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Vec<u8>>> {
        let req = libc::NLM_F_REQUEST as u16;
        let ack = libc::NLM_F_ACK as u16;
        let create = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msgs = Vec::new();
        let chains: [(i32, &str, i32); 3] = [
            (libc::NFPROTO_INET, "prerouting", libc::NF_INET_PRE_ROUTING),
            (libc::NFPROTO_INET, "output", libc::NF_INET_LOCAL_OUT),
            (libc::NFPROTO_BRIDGE, "prerouting", libc::NF_BR_PRE_ROUTING),
        ];
        for family in [libc::NFPROTO_INET, libc::NFPROTO_BRIDGE] {
            let mut t = Msg::new(
                nft_type(libc::NFT_MSG_NEWTABLE),
                req | ack | create,
                self.next_seq(),
                family as u8,
                0,
            );
            t.str(nft::NFTA_TABLE_NAME, &self.table);
            if owned {
                t.be32(nft::NFTA_TABLE_FLAGS, nft::NFT_TABLE_F_OWNER);
            }
            msgs.push(t.done());
        }
        for (family, name, hook) in chains {
            let mut c = Msg::new(
                nft_type(libc::NFT_MSG_NEWCHAIN),
                req | ack | create,
                self.next_seq(),
                family as u8,
                0,
            );
            c.str(nft::NFTA_CHAIN_TABLE, &self.table)
                .str(nft::NFTA_CHAIN_NAME, name)
                .nest(nft::NFTA_CHAIN_HOOK, |h| {
                    h.be32(nft::NFTA_HOOK_HOOKNUM, hook as u32)
                        .be32(nft::NFTA_HOOK_PRIORITY, -300i32 as u32);
                })
                .str(nft::NFTA_CHAIN_TYPE, "filter");
            msgs.push(c.done());
        }
        for (local, peer) in conns {
            for (chain, rule) in [
                ("prerouting", Rule::Host),
                ("output", Rule::Host),
                ("output", Rule::Icmp),
                ("prerouting", Rule::Bridge),
            ] {
                let seq = self.next_seq();
                msgs.push(lock_rule(&self.table, chain, rule, seq, local, peer)?);
            }
        }
        self.bridge = true;
        Ok(msgs)
    }
}

// ---- the lock outside the tree's network namespace ----
//
// A runtime that makes the tree's network namespace anew at restore (Podman: the
// container's namespace goes with the checkpoint, the restore's new one gets the same
// address before ckpt runs) leaves no namespace to hold the lock in between: it is held
// in ckpt's own (the host's side, where the bridge is), in tables `inet NAME` (the
// peer's segments routed through it or sent from it, and its ICMP "unreachable"
// answers to the peer) and `bridge NAME` (segments bridged between containers).

/// The host lock from a dump's freeze on: tables `inet`/`bridge` `ckpt_dump_host_<our
/// PID>` with the owner flag in the network namespace of file `ns` (ckpt's, see
/// [`super::ns::first_net`]), which go with ckpt however it ends. None when there is
/// nothing to lock.
pub fn host_hold(ns: &std::fs::File, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Handover>> {
    if conns.is_empty() {
        return Ok(None);
    }
    let mut h = Handover::open_in(format!("ckpt_dump_host_{}", std::process::id()), ns)?;
    let msgs = h.host_tables(true, conns)?;
    h.transaction(msgs)?;
    Ok(Some(h))
}

/// The lasting host lock a dump leaves for its restore: tables `inet`/`bridge` `table`
/// (without the owner flag: they outlive ckpt) in the namespace of file `ns`, made in
/// one transaction (all or nothing).
pub fn host_lock(ns: &std::fs::File, table: &str, conns: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let mut h = Handover::open_in(table.to_string(), ns)?;
    let msgs = h.host_tables(false, conns)?;
    h.transaction(msgs)
}

/// Remove host lock `table` (both families) from the namespace of file `ns`, or the
/// calling thread's: whether it was there (a table missing is no error: removed
/// before).
pub fn host_unlock(ns: Option<&std::fs::File>, table: &str) -> Result<bool> {
    let mut h = match ns {
        Some(ns) => Handover::open_in(table.to_string(), ns)?,
        None => Handover::open(table.to_string())?,
    };
    let mut found = false;
    for family in [libc::NFPROTO_INET, libc::NFPROTO_BRIDGE] {
        let m = h.del_table(family);
        match h.transaction(vec![m]) {
            Ok(()) => found = true,
            Err(SysError::Os { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sin(a: [u8; 4], port: u16) -> Vec<u8> {
        let mut v = vec![2, 0];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&a);
        v.extend_from_slice(&[0; 8]);
        v
    }

    fn sin6(a: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
        let mut v = vec![10, 0];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&a.octets());
        v.extend_from_slice(&[0; 4]);
        v
    }

    /// The table handed over holds, as `nft` reads it back, the very rules `lock` makes
    /// (the dump's lock, by the `nft` command), replaces the dump's rules of these
    /// connections in one step (another connection's rule stays), and goes when its
    /// socket is closed. (Needs root and nftables, as restoring TCP does.)
    #[test]
    fn handover_replaces_the_dump_rules_and_goes_with_its_socket() {
        // In a network namespace of the test's own: the dump's table in the host's is
        // shared with every dump running meanwhile (other tests, other runs).
        std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread (and the `nft` it
            // runs) into a new network namespace; the thread ends with the test.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "unshare(CLONE_NEWNET) (needs root)");
            let a = (sin([127, 0, 0, 1], 40001), sin([127, 0, 0, 2], 40002));
            let b = (
                sin6("::1".parse().expect("v6"), 40003),
                sin6("::1".parse().expect("v6"), 40004),
            );
            let other = (sin([127, 0, 0, 1], 40005), sin([127, 0, 0, 3], 40006));
            let conns = vec![a.clone(), b.clone()];
            lock(&[a.clone(), b.clone(), other.clone()]).expect("nft lock (needs root and nft)");
            let dump = nft(&format!("list chain inet {TABLE} input")).expect("list");
            let h = Handover::take(&conns).expect("handover").expect("some");
            let ours = nft(&format!("list chain inet {} input", h.table)).expect("list ours");
            let after = nft(&format!("list chain inet {TABLE} input")).unwrap_or_default();
            let table = h.table.clone();
            for (l, p) in &conns {
                let c = comment(l, p).expect("comment");
                let rule = |s: &str| {
                    s.lines()
                        .find(|x| x.contains(&c))
                        .map(|x| x.trim().to_string())
                };
                assert!(rule(&dump).is_some(), "{c} in {dump}");
                assert_eq!(rule(&ours), rule(&dump), "{ours}");
                assert_eq!(rule(&after), None, "{after}");
            }
            assert!(ours.contains("hook input priority raw"), "{ours}");
            let oc = comment(&other.0, &other.1).expect("comment");
            assert!(after.contains(&oc), "{after}");
            drop(h);
            // The kernel removes an owned table once it has released the closed socket,
            // which may come a moment after `close` returns.
            let gone = (0..200)
                .map(|i| {
                    if i > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    nft(&format!("list table inet {table}"))
                })
                .find(|r| r.is_err());
            assert!(
                gone.is_some(),
                "table {table} still there 2 s after its socket closed"
            );
            unlock(&[other]);
            // The dump's rules all ours: its chain and table go in the same transaction.
            lock(&conns).expect("nft lock");
            let h = Handover::take(&conns).expect("handover").expect("some");
            let after = nft(&format!("list chain inet {TABLE} input")).unwrap_or_default();
            for (l, p) in &conns {
                let c = comment(l, p).expect("comment");
                assert!(!after.contains(&c), "{after}");
            }
            let dump_table = nft(&format!("list table inet {TABLE}"));
            assert!(dump_table.is_err(), "{dump_table:?}");
            h.release();
        })
        .join()
        .expect("the test's thread");
    }

    /// The dump's lock in another network namespace than the caller's (a pod's, which a
    /// restore joins): [`TreeNet`] lists its rules there, the handover replaces the
    /// rules of its connections there (our table made there), and [`TreeNet::unlock`]
    /// removes the others with the dump's table. (Needs root and nftables.)
    #[test]
    fn tree_net_hands_over_and_unlocks_in_its_namespace() {
        let a = (sin([10, 0, 0, 2], 40011), sin([10, 0, 0, 1], 40012));
        let b = (sin([10, 0, 0, 2], 40013), sin([10, 0, 0, 1], 40014));
        let (ca, cb) = (
            comment(&a.0, &a.1).expect("comment"),
            comment(&b.0, &b.1).expect("comment"),
        );
        let both = vec![a.clone(), b.clone()];
        let ns = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new network
            // namespace; the thread ends right after, the file keeping the namespace.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "unshare(CLONE_NEWNET) (needs root)");
            lock(&both).expect("nft lock (needs root and nft)");
            std::fs::File::open("/proc/thread-self/ns/net").expect("open the namespace")
        })
        .join()
        .expect("the thread making the namespace");
        let table_in = |ns: &std::fs::File, t: &str| -> Option<String> {
            in_net(Some(ns), || Ok(nft(&format!("list table inet {t}")).ok())).expect("in_net")
        };
        let net = TreeNet::open(ns.try_clone().expect("dup")).expect("TreeNet::open");
        let listed = net.listing.clone().unwrap_or_default();
        assert!(listed.contains(&ca) && listed.contains(&cb), "{listed}");
        let h = Handover::prepare_in(Some(&net), std::slice::from_ref(&a))
            .expect("prepare")
            .expect("some")
            .send()
            .expect("send")
            .confirm()
            .expect("confirm");
        let dump = table_in(&ns, TABLE).unwrap_or_default();
        assert!(!dump.contains(&ca) && dump.contains(&cb), "{dump}");
        let ours = table_in(&ns, &h.table).unwrap_or_default();
        assert!(ours.contains(&ca), "our table in the namespace: {ours}");
        h.release();
        assert_eq!(
            table_in(&ns, &format!("ckpt_restore_{}", std::process::id())),
            None
        );
        let net = TreeNet::open(ns.try_clone().expect("dup")).expect("TreeNet::open");
        net.unlock(std::slice::from_ref(&b));
        assert_eq!(table_in(&ns, TABLE), None, "the dump's table is gone");
    }
}
