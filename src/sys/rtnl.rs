//! The network configuration of the calling thread's network namespace, over rtnetlink
//! (links, addresses, routes) and nf_tables' netlink (whether any table exists): what
//! dump reads of a network namespace of the tree's own, and what restore sets in the
//! new one (a link up with its MTU, addresses added and removed).

use std::os::fd::OwnedFd;

use rustix::net::{RecvFlags, SendFlags};

use super::{Result, SysError, rerr};

const NLMSG_ERROR: u16 = linux_raw_sys::netlink::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = linux_raw_sys::netlink::NLMSG_DONE as u16;
/// `IFA_FLAGS` (linux/if_addr.h): the 32-bit address flags attribute.
const IFA_FLAGS: u16 = linux_raw_sys::netlink::IFA_FLAGS as u16;

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    /// IFF_* flags (`ifi_flags`).
    pub flags: u32,
    pub mtu: u32,
    /// Its driver kind (IFLA_INFO_KIND: "veth", "bridge", "dummy"...), empty for
    /// loopback.
    pub kind: String,
}

impl Link {
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }
}

/// An address of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addr {
    /// AF_INET or AF_INET6.
    pub family: u8,
    pub prefixlen: u8,
    /// IFA_F_* flags (the 32-bit attribute when the kernel gives it).
    pub flags: u32,
    /// RT_SCOPE_*.
    pub scope: u8,
    pub index: i32,
    /// IFA_LOCAL (empty if none).
    pub local: Vec<u8>,
    /// IFA_ADDRESS.
    pub address: Vec<u8>,
    /// IFA_LABEL (IPv4 only; empty if none).
    pub label: String,
}

impl Addr {
    /// The address as people write it (`10.1.2.3/24`).
    pub fn show(&self) -> String {
        let a = if self.local.is_empty() {
            &self.address
        } else {
            &self.local
        };
        let ip = match a.len() {
            4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(a);
                std::net::Ipv6Addr::from(b).to_string()
            }
            _ => format!("{a:02x?}"),
        };
        format!("{ip}/{}", self.prefixlen)
    }
}

/// A route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    pub table: u32,
    /// RTPROT_* (RTPROT_KERNEL for the routes the kernel makes for addresses).
    pub protocol: u8,
    /// RTN_* (unicast, local, broadcast...).
    pub typ: u8,
    pub dst_len: u8,
    pub dst: Vec<u8>,
    pub oif: i32,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// The attributes (type without its flag bits, data) that follow a fixed header.
pub(crate) fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (Some(len), Some(typ)) = (u16_at(b, 0), u16_at(b, 2)) else {
            break;
        };
        let len = usize::from(len);
        if len < 4 || len > b.len() {
            break;
        }
        out.push((typ & 0x3fff, &b[4..len]));
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or_default();
    }
    out
}

/// A netlink socket of protocol `proto` (`None`: NETLINK_ROUTE) in the calling thread's
/// network namespace.
fn socket(proto: Option<rustix::net::Protocol>) -> Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        proto,
    )
    .map_err(|e| rerr("socket(AF_NETLINK)", e))
}

/// A request: nlmsghdr (type, flags, seq 1) and its payload.
fn request(typ: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&typ.to_ne_bytes());
    m.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// Append attribute `typ` with `data` (padded to 4 bytes).
fn put_attr(m: &mut Vec<u8>, typ: u16, data: &[u8]) {
    m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&typ.to_ne_bytes());
    m.extend_from_slice(data);
    while m.len() % 4 != 0 {
        m.push(0);
    }
}

/// Send a request and read the answers up to NLMSG_DONE (a dump) or the
/// acknowledgement (NLMSG_ERROR 0): the payloads of the other messages.
fn talk(sock: &OwnedFd, req: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
    rustix::net::send(sock, req, SendFlags::empty()).map_err(|e| rerr(what, e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, _) =
            rustix::net::recv(sock, &mut buf[..], RecvFlags::empty()).map_err(|e| rerr(what, e))?;
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0;
        while off + 16 <= n {
            let bad = || SysError::Other(format!("{what}: malformed netlink answer"));
            let len = u32_at(&buf, off).ok_or_else(bad)? as usize;
            let typ = u16_at(&buf, off + 4).ok_or_else(bad)?;
            if len < 16 || off + len > n {
                return Err(bad());
            }
            match typ {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let e = u32_at(&buf, off + 16)
                        .map(|e| e as i32)
                        .unwrap_or(-libc::EIO);
                    if e == 0 {
                        return Ok(out);
                    }
                    return Err(SysError::io(what, std::io::Error::from_raw_os_error(-e)));
                }
                _ => out.push(buf[off + 16..off + len].to_vec()),
            }
            off += (len + 3) & !3;
        }
    }
}

fn route_socket() -> Result<OwnedFd> {
    socket(None)
}

/// Every interface of the calling thread's network namespace.
pub fn links() -> Result<Vec<Link>> {
    let s = route_socket()?;
    // struct ifinfomsg (16 bytes), any family.
    let req = request(libc::RTM_GETLINK, libc::NLM_F_DUMP as u16, &[0u8; 16]);
    let mut out = Vec::new();
    for m in talk(&s, &req, "RTM_GETLINK")? {
        let mut l = Link {
            index: u32_at(&m, 4).unwrap_or(0) as i32,
            flags: u32_at(&m, 8).unwrap_or(0),
            ..Default::default()
        };
        for (t, d) in attrs(m.get(16..).unwrap_or_default()) {
            match t {
                libc::IFLA_IFNAME => {
                    l.name = String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d))
                        .into_owned()
                }
                libc::IFLA_MTU => l.mtu = u32_at(d, 0).unwrap_or(0),
                libc::IFLA_LINKINFO => {
                    for (t, d) in attrs(d) {
                        if t == libc::IFLA_INFO_KIND {
                            l.kind =
                                String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d))
                                    .into_owned();
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// Every address of the calling thread's network namespace.
pub fn addrs() -> Result<Vec<Addr>> {
    let s = route_socket()?;
    // struct ifaddrmsg (8 bytes), any family.
    let req = request(libc::RTM_GETADDR, libc::NLM_F_DUMP as u16, &[0u8; 8]);
    let mut out = Vec::new();
    for m in talk(&s, &req, "RTM_GETADDR")? {
        let mut a = Addr {
            family: *m.first().unwrap_or(&0),
            prefixlen: *m.get(1).unwrap_or(&0),
            flags: u32::from(*m.get(2).unwrap_or(&0)),
            scope: *m.get(3).unwrap_or(&0),
            index: u32_at(&m, 4).unwrap_or(0) as i32,
            ..Default::default()
        };
        for (t, d) in attrs(m.get(8..).unwrap_or_default()) {
            match t {
                libc::IFA_ADDRESS => a.address = d.to_vec(),
                libc::IFA_LOCAL => a.local = d.to_vec(),
                libc::IFA_LABEL => {
                    a.label = String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d))
                        .into_owned()
                }
                IFA_FLAGS => a.flags = u32_at(d, 0).unwrap_or(a.flags),
                _ => {}
            }
        }
        out.push(a);
    }
    Ok(out)
}

/// Every route (all tables, IPv4 and IPv6) of the calling thread's network namespace.
pub fn routes() -> Result<Vec<Route>> {
    let s = route_socket()?;
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        // struct rtmsg (12 bytes): family first.
        let mut rt = [0u8; 12];
        rt[0] = family;
        let req = request(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, &rt);
        for m in talk(&s, &req, "RTM_GETROUTE")? {
            let mut r = Route {
                family: *m.first().unwrap_or(&0),
                dst_len: *m.get(1).unwrap_or(&0),
                table: u32::from(*m.get(4).unwrap_or(&0)),
                protocol: *m.get(5).unwrap_or(&0),
                typ: *m.get(7).unwrap_or(&0),
                ..Default::default()
            };
            for (t, d) in attrs(m.get(12..).unwrap_or_default()) {
                match t {
                    libc::RTA_DST => r.dst = d.to_vec(),
                    libc::RTA_OIF => r.oif = u32_at(d, 0).unwrap_or(0) as i32,
                    libc::RTA_TABLE => r.table = u32_at(d, 0).unwrap_or(r.table),
                    _ => {}
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// Set interface `index` up or down, and its MTU.
pub fn set_link(index: i32, up: bool, mtu: u32) -> Result<()> {
    let s = route_socket()?;
    // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags, change }
    let mut m = vec![0u8; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    let up_flag = libc::IFF_UP as u32;
    m[8..12].copy_from_slice(&(if up { up_flag } else { 0 }).to_ne_bytes());
    m[12..16].copy_from_slice(&up_flag.to_ne_bytes());
    if mtu != 0 {
        put_attr(&mut m, libc::IFLA_MTU, &mtu.to_ne_bytes());
    }
    let req = request(libc::RTM_NEWLINK, libc::NLM_F_ACK as u16, &m);
    talk(&s, &req, "RTM_NEWLINK (set the loopback interface)")?;
    Ok(())
}

/// The RTM_NEWADDR / RTM_DELADDR payload of an address.
fn addr_msg(a: &Addr) -> Vec<u8> {
    let mut m = vec![a.family, a.prefixlen, (a.flags & 0xff) as u8, a.scope];
    m.extend_from_slice(&(a.index as u32).to_ne_bytes());
    if !a.local.is_empty() {
        put_attr(&mut m, libc::IFA_LOCAL, &a.local);
    }
    if !a.address.is_empty() {
        put_attr(&mut m, libc::IFA_ADDRESS, &a.address);
    }
    if !a.label.is_empty() {
        let mut l = a.label.as_bytes().to_vec();
        l.push(0);
        put_attr(&mut m, libc::IFA_LABEL, &l);
    }
    put_attr(&mut m, IFA_FLAGS, &a.flags.to_ne_bytes());
    m
}

/// Add address `a` (to interface `a.index`).
pub fn add_addr(a: &Addr) -> Result<()> {
    let s = route_socket()?;
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let req = request(libc::RTM_NEWADDR, flags, &addr_msg(a));
    talk(&s, &req, &format!("add address {}", a.show()))?;
    Ok(())
}

/// Remove address `a`.
pub fn del_addr(a: &Addr) -> Result<()> {
    let s = route_socket()?;
    let req = request(libc::RTM_DELADDR, libc::NLM_F_ACK as u16, &addr_msg(a));
    talk(&s, &req, &format!("remove address {}", a.show()))?;
    Ok(())
}

/// The names of the nf_tables tables of the calling thread's network namespace (any
/// family), as "family name".
pub fn nft_tables() -> Result<Vec<String>> {
    let s = socket(Some(rustix::net::netlink::NETFILTER))?;
    // struct nfgenmsg { u8 family (NFPROTO_UNSPEC: all), version, u16 res_id (BE) }
    let typ = ((libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_GETTABLE) as u16;
    let req = request(
        typ,
        libc::NLM_F_DUMP as u16,
        &[0, libc::NFNETLINK_V0 as u8, 0, 0],
    );
    let mut out = Vec::new();
    for m in talk(&s, &req, "list the nf_tables tables")? {
        let family = match i32::from(*m.first().unwrap_or(&0)) {
            libc::NFPROTO_INET => "inet",
            libc::NFPROTO_IPV4 => "ip",
            libc::NFPROTO_IPV6 => "ip6",
            libc::NFPROTO_ARP => "arp",
            libc::NFPROTO_BRIDGE => "bridge",
            libc::NFPROTO_NETDEV => "netdev",
            _ => "?",
        };
        // NFTA_TABLE_NAME is attribute 1.
        let name = attrs(m.get(4..).unwrap_or_default())
            .into_iter()
            .find(|(t, _)| *t == 1)
            .map(|(_, d)| {
                String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d)).into_owned()
            })
            .unwrap_or_default();
        out.push(format!("{family} {name}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_after_a_header() {
        let mut m = Vec::new();
        put_attr(&mut m, 3, b"lo\0");
        put_attr(&mut m, 4, &1500u32.to_ne_bytes());
        let a = attrs(&m);
        assert_eq!(a, vec![(3, &b"lo\0"[..]), (4, &1500u32.to_ne_bytes()[..])]);
        // A truncated attribute ends the list.
        assert_eq!(attrs(&m[..m.len() - 2]).len(), 1);
        assert!(attrs(&[1, 0]).is_empty());
    }

    #[test]
    fn address_message_round_trip() {
        let a = Addr {
            family: libc::AF_INET as u8,
            prefixlen: 24,
            flags: 0x80,
            scope: 0,
            index: 1,
            local: vec![10, 9, 8, 7],
            address: vec![10, 9, 8, 7],
            label: "lo".into(),
        };
        let m = addr_msg(&a);
        assert_eq!(&m[..4], &[libc::AF_INET as u8, 24, 0x80, 0]);
        let at = attrs(&m[8..]);
        assert!(at.contains(&(libc::IFA_LOCAL, &[10, 9, 8, 7][..])));
        assert!(at.contains(&(libc::IFA_LABEL, &b"lo\0"[..])));
        assert_eq!(a.show(), "10.9.8.7/24");
    }
}
