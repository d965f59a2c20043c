//! TCP sockets: listeners and established connections (TCP_REPAIR).

// ---- checks (plan) ----

/// A raw sockaddr_in / sockaddr_in6 as a std address.
pub(crate) fn inet_addr(raw: &[u8]) -> Option<std::net::SocketAddr> {
    let fam = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    if i32::from(fam) == libc::AF_INET {
        let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
        Some((std::net::Ipv4Addr::from(ip), port).into())
    } else if i32::from(fam) == libc::AF_INET6 {
        let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
        Some((std::net::Ipv6Addr::from(ip), port).into())
    } else {
        None
    }
}

/// A raw sockaddr_in / sockaddr_in6 as "address:port".
pub(crate) fn show_inet(a: &[u8]) -> String {
    let port = a
        .get(2..4)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .unwrap_or(0);
    match a.len() {
        16 => format!("{}.{}.{}.{}:{port}", a[4], a[5], a[6], a[7]),
        28 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&a[8..24]);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
        }
        _ => "?".into(),
    }
}

/// What `inspect` says of a listening TCP socket.
pub(crate) fn describe_listen(addr: &[u8], backlog: u32) -> String {
    format!("TCP listening on {} (backlog {backlog})", show_inet(addr))
}

/// What `inspect` says of a TCP connection.
pub(crate) fn describe_conn(conn: &crate::model::TcpState) -> String {
    format!(
        "TCP connection {} -> {} ({} bytes unsent/unacked, {} unread)",
        show_inet(&conn.local),
        show_inet(&conn.peer),
        conn.sndq.len(),
        conn.rcvq.len()
    )
}
