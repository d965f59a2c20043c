//! UDP and TCP: socket records restore can build, addresses as they are shown and
//! parsed, and a bound UDP address being free here (on the loopback, with sockets the
//! tests bind themselves).

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};

use super::table::{sockaddr_in, sockaddr_in6};
use crate::kinds::fd::pipe::MAX_PIPE;
use crate::kinds::fd::tcp::{inet_addr, show_inet};
use crate::kinds::fd::udp::{check_udp_addr, udp_ok};
use crate::kinds::fd::unix::MAX_MESSAGES;
use crate::kinds::testutil::*;
use crate::model::{SockMessage, SockOpts, UdpState};

fn v4(port: u16) -> UdpState {
    UdpState {
        family: libc::AF_INET,
        local: sockaddr_in([127, 0, 0, 1], port),
        ..Default::default()
    }
}

fn from4(len: usize) -> SockMessage {
    SockMessage {
        creds: None,
        rights: Vec::new(),
        from: sockaddr_in([10, 0, 0, 1], 53),
        data: vec![0; len],
    }
}

#[test]
fn udp_records() {
    let v6 = UdpState {
        family: libc::AF_INET6,
        local: sockaddr_in6(Ipv6Addr::LOCALHOST, 0),
        peer: sockaddr_in6(Ipv6Addr::LOCALHOST, 53),
        msgs: vec![SockMessage {
            creds: None,
            rights: Vec::new(),
            from: sockaddr_in6(Ipv6Addr::LOCALHOST, 53),
            data: b"x".to_vec(),
        }],
        ..Default::default()
    };
    let ok = [
        v4(0),
        UdpState {
            peer: sockaddr_in([10, 0, 0, 1], 53),
            msgs: vec![from4(100), from4(0)],
            ..v4(5000)
        },
        v6,
    ];
    for u in &ok {
        assert!(udp_ok(u), "{u:?}");
    }
    let max = crate::sys::udp::MAX_DATAGRAM;
    let bad = [
        UdpState {
            family: libc::AF_UNIX,
            ..v4(0)
        },
        UdpState {
            family: libc::AF_INET6,
            ..v4(0)
        },
        UdpState {
            peer: vec![0; 28],
            ..v4(0)
        },
        UdpState {
            msgs: vec![from4(0); MAX_MESSAGES + 1],
            ..v4(0)
        },
        UdpState {
            msgs: vec![from4(max + 1)],
            ..v4(0)
        },
        UdpState {
            msgs: vec![SockMessage {
                creds: None,
                rights: Vec::new(),
                from: sockaddr_in6(Ipv6Addr::LOCALHOST, 53),
                data: vec![],
            }],
            ..v4(0)
        },
        UdpState {
            // Right size, wrong family.
            msgs: vec![SockMessage {
                creds: None,
                rights: Vec::new(),
                from: vec![0; 16],
                data: vec![],
            }],
            ..v4(0)
        },
        UdpState {
            msgs: vec![from4(max); MAX_PIPE / max + 1],
            ..v4(0)
        },
    ];
    for u in &bad {
        assert!(!udp_ok(u), "{:?}", (u.family, u.local.len(), u.msgs.len()));
    }
}

#[test]
fn a_free_udp_address_passes() {
    // Port 0 (never bound), a record restore will not bind, sockets sharing the address.
    assert_none(&run(|v| check_udp_addr(&v4(0), 3, v)));
    let junk = UdpState {
        local: vec![1, 2, 3],
        ..v4(0)
    };
    assert_none(&run(|v| check_udp_addr(&junk, 3, v)));
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = s.local_addr().expect("address").port();
    for opts in [
        SockOpts {
            reuseaddr: true,
            ..Default::default()
        },
        SockOpts {
            reuseport: true,
            ..Default::default()
        },
    ] {
        let u = UdpState { opts, ..v4(port) };
        assert_none(&run(|v| check_udp_addr(&u, 3, v)));
    }
    // A port just let go.
    drop(s);
    assert_none(&run(|v| check_udp_addr(&v4(port), 3, v)));
}

#[test]
fn a_taken_udp_address() {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = s.local_addr().expect("address").port();
    let v = run(|v| check_udp_addr(&v4(port), 7, v));
    assert_one(
        &v,
        "address-in-use",
        &[&format!(
            "descriptor 7: UDP address 127.0.0.1:{port} cannot be bound here"
        )],
    );
    // The same for IPv6, where the host has it.
    if let Ok(s6) = UdpSocket::bind("[::1]:0") {
        let port = s6.local_addr().expect("address").port();
        let u = UdpState {
            family: libc::AF_INET6,
            local: sockaddr_in6(Ipv6Addr::LOCALHOST, port),
            ..Default::default()
        };
        let v = run(|v| check_udp_addr(&u, 8, v));
        assert_one(
            &v,
            "address-in-use",
            &[&format!("UDP address [::1]:{port}")],
        );
    }
}

#[test]
fn an_address_not_on_the_host_is_refused_unless_freebind_or_transparent_was_set() {
    // 192.0.2.0/24 (TEST-NET-1) is on no host.
    let mut u = v4(40123);
    u.local[4..8].copy_from_slice(&[192, 0, 2, 77]);
    let v = run(|v| check_udp_addr(&u, 5, v));
    assert_one(&v, "address-in-use", &["UDP address 192.0.2.77:40123"]);
    for (freebind, transparent) in [(true, false), (false, true)] {
        let u = UdpState {
            freebind,
            transparent,
            ..u.clone()
        };
        assert_none(&run(|v| check_udp_addr(&u, 5, v)));
    }
    // The port still counts: taken (with FREEBIND) by another socket on that address.
    let s = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .expect("socket");
    rustix::net::sockopt::set_ip_freebind(&s, true).expect("IP_FREEBIND");
    let addr: std::net::SocketAddr = "192.0.2.77:0".parse().expect("address");
    rustix::net::bind(&s, &addr).expect("bind");
    let port = match rustix::net::getsockname(&s).expect("name").try_into() {
        Ok(std::net::SocketAddr::V4(a)) => a.port(),
        other => panic!("not an IPv4 address: {other:?}"),
    };
    let mut u = v4(port);
    u.local[4..8].copy_from_slice(&[192, 0, 2, 77]);
    u.freebind = true;
    let v = run(|v| check_udp_addr(&u, 5, v));
    assert_one(&v, "address-in-use", &[&format!("192.0.2.77:{port}")]);
}

#[test]
fn tcp_and_udp_addresses_parse_and_show() {
    let a = sockaddr_in([192, 168, 1, 2], 8080);
    assert_eq!(
        inet_addr(&a),
        Some(SocketAddr::from(([192, 168, 1, 2], 8080)))
    );
    assert_eq!(show_inet(&a), "192.168.1.2:8080");
    let a6 = sockaddr_in6(Ipv6Addr::LOCALHOST, 443);
    assert_eq!(
        inet_addr(&a6),
        Some(SocketAddr::from((Ipv6Addr::LOCALHOST, 443)))
    );
    assert_eq!(show_inet(&a6), "[::1]:443");
    // Short, of another family, empty: no address, shown as "?".
    assert_eq!(inet_addr(&a[..7]), None);
    assert_eq!(inet_addr(&a6[..20]), None);
    let mut unix = a.clone();
    unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    assert_eq!(inet_addr(&unix), None);
    assert_eq!(inet_addr(&[]), None);
    assert_eq!(show_inet(&[]), "?");
    assert_eq!(show_inet(&a[..10]), "?");
}

#[test]
fn netlink_records() {
    use crate::kinds::fd::netlink::{describe, netlink_ok};
    use crate::model::NetlinkState;
    let ok = NetlinkState {
        protocol: libc::NETLINK_ROUTE,
        typ: libc::SOCK_RAW,
        portid: 1234,
        groups: vec![0x111],
        nl_opts: vec![linux_raw_sys::netlink::NETLINK_NO_ENOBUFS as i32],
        ..Default::default()
    };
    assert!(netlink_ok(&ok));
    assert_eq!(
        describe(&ok),
        "netlink socket (protocol 0) port 1234, groups 1,5,9"
    );
    let bad = [
        // a protocol whose state the kernel keeps elsewhere (audit)
        NetlinkState {
            protocol: libc::NETLINK_AUDIT,
            ..ok.clone()
        },
        NetlinkState {
            typ: libc::SOCK_STREAM,
            ..ok.clone()
        },
        NetlinkState {
            nl_opts: vec![99],
            ..ok.clone()
        },
        NetlinkState {
            groups: vec![1; 65],
            ..ok.clone()
        },
    ];
    for n in &bad {
        assert!(!netlink_ok(n), "{n:?}");
    }
}

#[test]
fn raw_and_ping_records() {
    use crate::kinds::fd::inetraw::raw_ok;
    use crate::model::InetRawState;
    let ping = InetRawState {
        family: libc::AF_INET,
        typ: libc::SOCK_DGRAM,
        protocol: libc::IPPROTO_ICMP,
        local: sockaddr_in([127, 0, 0, 1], 7),
        peer: sockaddr_in([127, 0, 0, 1], 0),
        ..Default::default()
    };
    let raw6 = InetRawState {
        family: libc::AF_INET6,
        typ: libc::SOCK_RAW,
        protocol: 253,
        local: sockaddr_in6(Ipv6Addr::LOCALHOST, 0),
        ..Default::default()
    };
    assert!(raw_ok(&ping) && raw_ok(&raw6));
    let bad = [
        // a datagram socket of another protocol is UDP's, not a ping socket
        InetRawState {
            protocol: libc::IPPROTO_UDP,
            ..ping.clone()
        },
        InetRawState {
            local: sockaddr_in([127, 0, 0, 1], 7),
            ..raw6.clone()
        },
        InetRawState {
            protocol: 300,
            ..raw6.clone()
        },
    ];
    for r in &bad {
        assert!(!raw_ok(r), "{r:?}");
    }
}
