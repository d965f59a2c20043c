//! Typed system calls made in a task during restore: descriptors, pipes, sockets and
//! their options, with the kernel's constants and structures spelled once, here, instead
//! of as numbers at each call site. Each is a fault point named as before (the
//! failure-path tests select steps by these names).

use super::Ctx;
use crate::arch::native::nr;
use crate::error::{RestoreError, RestoreResult as Result};
use crate::sys::tcp::{TCP_RECV_QUEUE, TCP_SEND_QUEUE};

/// TCP option kinds (`TCPOPT_*` of <netinet/tcp.h>; libc does not export them), as
/// `TCP_REPAIR_OPTIONS` takes them.
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// Where in the helper area's scratch memory each kind of argument goes (single calls
/// only: batches lay theirs out with [`super::BatchArgs`]).
const ARG_ADDR: u64 = 0;
const ARG_ADDR2: u64 = 1024;
/// sendmsg's iovec, control message and msghdr (below the data).
const ARG_CMSG: u64 = 2048;
const ARG_DATA: u64 = 4096;
const ARG_OPT: u64 = 8192 - 64;

/// A TCP queue, as `TCP_REPAIR_QUEUE` selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpQueue {
    Recv,
    Send,
}

/// One TCP option negotiated at connection time (`struct tcp_repair_opt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpRepairOpt {
    Mss(u32),
    WindowScale { snd: u32, rcv: u32 },
    SackPermitted,
    Timestamps,
}

impl TcpRepairOpt {
    fn encode(self) -> [u32; 2] {
        match self {
            TcpRepairOpt::Mss(v) => [TCPOPT_MSS, v],
            TcpRepairOpt::WindowScale { snd, rcv } => [TCPOPT_WINDOW, snd | (rcv << 16)],
            TcpRepairOpt::SackPermitted => [TCPOPT_SACK_PERM, 0],
            TcpRepairOpt::Timestamps => [TCPOPT_TIMESTAMP, 0],
        }
    }
}

/// A socket option and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SockOpt {
    /// `SO_SNDBUFFORCE`, `SO_RCVBUFFORCE`: the value given to the kernel (which doubles it).
    SndBufForce(u32),
    RcvBufForce(u32),
    /// `SO_BUF_LOCK` (Linux 5.14): which of the buffer sizes are locked against the
    /// kernel's autotuning (`SOCK_SNDBUF_LOCK` 1, `SOCK_RCVBUF_LOCK` 2).
    BufLock(u32),
    PassCred,
    /// `IP_FREEBIND`, `IP_TRANSPARENT` on (at the IP level, which IPv6 sockets share).
    IpFreebind,
    IpTransparent,
    ReuseAddr,
    ReusePort,
    V6Only(bool),
    /// `TCP_REPAIR` on or off.
    TcpRepair(bool),
    TcpRepairQueue(TcpQueue),
    TcpQueueSeq(u32),
    TcpRepairOptions(Vec<TcpRepairOpt>),
    TcpTimestamp(u32),
    /// `TCP_MAXSEG` (the MSS a connect starts from; 0 clears it).
    TcpMaxSeg(i32),
    /// `struct tcp_repair_window`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    TcpRepairWindow([u32; 5]),
    /// An integer option of `sys::tcp::INT_OPTS` (level, name, value).
    Int(i32, i32, i32),
    /// `SO_LINGER` (l_onoff, l_linger).
    Linger([i32; 2]),
    /// `SO_RCVTIMEO`, `SO_SNDTIMEO` (seconds, microseconds).
    RcvTimeo([i64; 2]),
    SndTimeo([i64; 2]),
    /// A string or structure option: (level, name, value, the step's name).
    Bytes(i32, i32, Vec<u8>, &'static str),
}

impl SockOpt {
    /// (level, name, value bytes, the step's name).
    pub(crate) fn encode(&self) -> (i32, i32, Vec<u8>, &'static str) {
        let one = 1u32.to_le_bytes().to_vec();
        let u = |v: u32| v.to_le_bytes().to_vec();
        let (sol, tcp) = (libc::SOL_SOCKET, libc::SOL_TCP);
        match self {
            SockOpt::SndBufForce(v) => (sol, libc::SO_SNDBUFFORCE, u(*v), "SO_SNDBUFFORCE"),
            SockOpt::RcvBufForce(v) => (sol, libc::SO_RCVBUFFORCE, u(*v), "SO_RCVBUFFORCE"),
            SockOpt::BufLock(v) => (
                sol,
                linux_raw_sys::net::SO_BUF_LOCK as i32,
                u(*v),
                "SO_BUF_LOCK",
            ),
            SockOpt::PassCred => (sol, libc::SO_PASSCRED, one, "SO_PASSCRED"),
            SockOpt::IpFreebind => (libc::SOL_IP, libc::IP_FREEBIND, one, "IP_FREEBIND"),
            SockOpt::IpTransparent => (libc::SOL_IP, libc::IP_TRANSPARENT, one, "IP_TRANSPARENT"),
            SockOpt::ReuseAddr => (sol, libc::SO_REUSEADDR, one, "SO_REUSEADDR"),
            SockOpt::ReusePort => (sol, libc::SO_REUSEPORT, one, "SO_REUSEPORT"),
            SockOpt::V6Only(on) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                u(u32::from(*on)),
                "IPV6_V6ONLY",
            ),
            SockOpt::TcpRepair(true) => (tcp, libc::TCP_REPAIR, one, "TCP_REPAIR on"),
            SockOpt::TcpRepair(false) => (tcp, libc::TCP_REPAIR, u(0), "TCP_REPAIR off"),
            SockOpt::TcpRepairQueue(q) => {
                let q = match q {
                    TcpQueue::Recv => TCP_RECV_QUEUE,
                    TcpQueue::Send => TCP_SEND_QUEUE,
                };
                (tcp, libc::TCP_REPAIR_QUEUE, u(q), "TCP_REPAIR_QUEUE")
            }
            SockOpt::TcpQueueSeq(s) => (tcp, libc::TCP_QUEUE_SEQ, u(*s), "TCP_QUEUE_SEQ"),
            SockOpt::TcpRepairOptions(opts) => {
                let bytes = opts
                    .iter()
                    .flat_map(|o| o.encode())
                    .flat_map(u32::to_le_bytes)
                    .collect();
                (tcp, libc::TCP_REPAIR_OPTIONS, bytes, "TCP_REPAIR_OPTIONS")
            }
            SockOpt::TcpTimestamp(v) => (tcp, libc::TCP_TIMESTAMP, u(*v), "TCP_TIMESTAMP"),
            SockOpt::TcpMaxSeg(v) => (
                tcp,
                libc::TCP_MAXSEG,
                v.to_le_bytes().to_vec(),
                "TCP_MAXSEG",
            ),
            SockOpt::TcpRepairWindow(w) => {
                let bytes = w.iter().flat_map(|v| v.to_le_bytes()).collect();
                (tcp, libc::TCP_REPAIR_WINDOW, bytes, "TCP_REPAIR_WINDOW")
            }
            SockOpt::Int(level, name, v) => {
                let nl = crate::sys::netlink::NETLINK_OPTS
                    .iter()
                    .find(|o| *level == libc::SOL_NETLINK && o.0 == *name)
                    .map(|o| o.1);
                let what = crate::sys::tcp::INT_OPTS
                    .iter()
                    .find(|o| o.0 == *level && o.1 == *name)
                    .map(|o| o.2)
                    .or(nl)
                    .unwrap_or(
                        if *level == libc::SOL_NETLINK
                            && *name == crate::sys::netlink::ADD_MEMBERSHIP
                        {
                            "NETLINK_ADD_MEMBERSHIP"
                        } else {
                            "setsockopt"
                        },
                    );
                (*level, *name, v.to_le_bytes().to_vec(), what)
            }
            SockOpt::Linger(l) => {
                let bytes = l.iter().flat_map(|v| v.to_le_bytes()).collect();
                (sol, libc::SO_LINGER, bytes, "SO_LINGER")
            }
            SockOpt::RcvTimeo(t) => {
                let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                (sol, libc::SO_RCVTIMEO, bytes, "SO_RCVTIMEO")
            }
            SockOpt::SndTimeo(t) => {
                let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                (sol, libc::SO_SNDTIMEO, bytes, "SO_SNDTIMEO")
            }
            SockOpt::Bytes(level, name, v, what) => (*level, *name, v.clone(), *what),
        }
    }
}

/// A prctl(2) option and its arguments (those restore sets in a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prctl {
    SetNoNewPrivs,
    /// PR_CAPBSET_DROP of one capability.
    CapBsetDrop(u64),
    SetKeepCaps(bool),
    CapAmbientClearAll,
    /// PR_CAP_AMBIENT_RAISE of one capability.
    CapAmbientRaise(u64),
    SetSecurebits(u32),
    SetDumpable(i32),
    SetPdeathsig(i32),
    /// PR_SET_THP_DISABLE with what PR_GET_THP_DISABLE said: 0 (allowed), 1 (disabled),
    /// or 3 (disabled but where madvised: `PR_THP_DISABLE_EXCEPT_ADVISED` as the flags).
    SetThpDisable(u32),
}

impl Prctl {
    /// (arguments, the step's name).
    fn encode(self) -> ([u64; 6], &'static str) {
        let a = |op: i32, x: u64, y: u64| [op as u64, x, y, 0, 0, 0];
        match self {
            Prctl::SetNoNewPrivs => (
                a(libc::PR_SET_NO_NEW_PRIVS, 1, 0),
                "prctl(PR_SET_NO_NEW_PRIVS)",
            ),
            Prctl::CapBsetDrop(cap) => (
                a(libc::PR_CAPBSET_DROP, cap, 0),
                "drop capability from bounding set",
            ),
            Prctl::SetKeepCaps(on) => (
                a(libc::PR_SET_KEEPCAPS, u64::from(on), 0),
                "prctl(PR_SET_KEEPCAPS)",
            ),
            Prctl::CapAmbientClearAll => (
                a(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                    0,
                ),
                "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            ),
            Prctl::CapAmbientRaise(cap) => (
                a(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as u64, cap),
                "raise ambient capability",
            ),
            Prctl::SetSecurebits(bits) => (
                a(libc::PR_SET_SECUREBITS, u64::from(bits), 0),
                "prctl(PR_SET_SECUREBITS)",
            ),
            Prctl::SetDumpable(v) => (
                a(libc::PR_SET_DUMPABLE, v as u64, 0),
                "prctl(PR_SET_DUMPABLE)",
            ),
            Prctl::SetPdeathsig(sig) => (
                a(libc::PR_SET_PDEATHSIG, sig as u64, 0),
                "prctl(PR_SET_PDEATHSIG)",
            ),
            Prctl::SetThpDisable(v) => (
                a(
                    libc::PR_SET_THP_DISABLE,
                    u64::from(v & 1),
                    u64::from(v & !1),
                ),
                "prctl(PR_SET_THP_DISABLE)",
            ),
        }
    }
}

/// `_LINUX_CAPABILITY_VERSION_3` (64-bit capability sets in two 32-bit halves).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// A socket address as the kernel takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SockAddr<'a> {
    /// A unix socket name: a path, or an abstract name starting with a NUL byte.
    Unix(&'a [u8]),
    /// A raw `struct sockaddr_*` recorded at dump.
    Raw(&'a [u8]),
}

impl SockAddr<'_> {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        match self {
            SockAddr::Raw(b) => b.to_vec(),
            // The length covers the name alone: the kernel terminates a path itself.
            SockAddr::Unix(name) => {
                let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                b.extend_from_slice(name);
                b
            }
        }
    }
}

/// Two descriptors the kernel wrote as `int[2]` at `a`.
fn fd_pair(cx: &Ctx<'_>, a: u64) -> Result<(u64, u64)> {
    let mut b = [0u8; 8];
    cx.read(a, &mut b)?;
    let (x, y) = b.split_at(4);
    let fd = |s: &[u8]| -> u64 {
        let mut w = [0u8; 4];
        w.copy_from_slice(s);
        u64::from(u32::from_le_bytes(w))
    };
    Ok((fd(x), fd(y)))
}

impl Ctx<'_> {
    /// prctl(2).
    pub(crate) fn prctl(&mut self, op: Prctl) -> Result<u64> {
        let (args, what) = op.encode();
        self.call(what, nr::PRCTL, args)
    }

    /// setresuid(2) with real, effective and saved IDs, then setfsuid(2) with the fourth.
    pub(crate) fn set_uids(&mut self, ids: &[u32; 4]) -> Result<()> {
        let [r, e, s, fs] = ids.map(u64::from);
        self.call("setresuid", nr::SETRESUID, [r, e, s, 0, 0, 0])?;
        self.call("setfsuid", nr::SETFSUID, [fs, 0, 0, 0, 0, 0])?;
        Ok(())
    }

    /// setresgid(2) and setfsgid(2), as [`Ctx::set_uids`].
    pub(crate) fn set_gids(&mut self, ids: &[u32; 4]) -> Result<()> {
        let [r, e, s, fs] = ids.map(u64::from);
        self.call("setresgid", nr::SETRESGID, [r, e, s, 0, 0, 0])?;
        self.call("setfsgid", nr::SETFSGID, [fs, 0, 0, 0, 0, 0])?;
        Ok(())
    }

    /// setgroups(2).
    pub(crate) fn set_groups(&mut self, groups: &[u32]) -> Result<()> {
        let g: Vec<u8> = groups.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = self.put(ARG_ADDR, &g)?;
        self.call(
            "setgroups",
            nr::SETGROUPS,
            [groups.len() as u64, a, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// capset(2) of the calling thread, version 3 (64-bit sets).
    pub(crate) fn capset(&mut self, eff: u64, prm: u64, inh: u64) -> Result<()> {
        // header {version, pid}, then two data structs {effective, permitted, inheritable}.
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&CAPABILITY_VERSION_3.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        for shift in [0, 32] {
            for v in [eff, prm, inh] {
                b.extend_from_slice(&((v >> shift) as u32).to_le_bytes());
            }
        }
        let a = self.put(ARG_ADDR, &b)?;
        self.call("capset", nr::CAPSET, [a, a + 8, 0, 0, 0, 0])?;
        Ok(())
    }

    /// epoll_ctl(EPOLL_CTL_ADD) of `fd` to `epfd`, with its events and data
    /// (`struct epoll_event`, packed on x86-64).
    pub(crate) fn epoll_add(&mut self, epfd: u64, fd: u64, events: u32, data: u64) -> Result<()> {
        let mut ev = Vec::with_capacity(12);
        ev.extend_from_slice(&events.to_le_bytes());
        ev.extend_from_slice(&data.to_le_bytes());
        let a = self.put(ARG_ADDR, &ev)?;
        self.call(
            &format!("epoll_ctl(ADD {fd})"),
            nr::EPOLL_CTL,
            [epfd, libc::EPOLL_CTL_ADD as u64, fd, a, 0, 0],
        )?;
        Ok(())
    }

    /// close(2).
    pub(crate) fn close(&mut self, fd: u64) -> Result<()> {
        self.call("close", nr::CLOSE, [fd, 0, 0, 0, 0, 0])?;
        Ok(())
    }

    /// dup3(2) with or without O_CLOEXEC.
    pub(crate) fn dup3(&mut self, from: u64, to: u64, cloexec: bool) -> Result<u64> {
        let fl = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        self.call("dup3", nr::DUP3, [from, to, fl, 0, 0, 0])
    }

    /// fcntl(F_DUPFD_CLOEXEC): a copy of `fd` at `min` or above.
    pub(crate) fn dup_above(&mut self, fd: u64, min: u64) -> Result<u64> {
        let args = [fd, libc::F_DUPFD_CLOEXEC as u64, min, 0, 0, 0];
        self.call("fcntl(F_DUPFD_CLOEXEC)", nr::FCNTL, args)
    }

    /// fcntl(F_SETPIPE_SZ).
    pub(crate) fn set_pipe_size(&mut self, fd: u64, size: u32) -> Result<()> {
        let args = [fd, libc::F_SETPIPE_SZ as u64, u64::from(size), 0, 0, 0];
        self.call("F_SETPIPE_SZ", nr::FCNTL, args)?;
        Ok(())
    }

    /// fcntl(F_SETOWN_EX): who gets the I/O signals of descriptor `fd` (`kind`:
    /// `F_OWNER_TID`, `F_OWNER_PID` or `F_OWNER_PGRP`; `pid` as the task's PID namespace
    /// sees it).
    pub(crate) fn set_owner(&mut self, fd: u64, kind: i32, pid: i32) -> Result<()> {
        use linux_raw_sys::general::F_SETOWN_EX;
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&kind.to_ne_bytes());
        b[4..].copy_from_slice(&pid.to_ne_bytes());
        let a = self.put(ARG_ADDR, &b)?;
        self.call(
            "fcntl(F_SETOWN_EX)",
            nr::FCNTL,
            [fd, u64::from(F_SETOWN_EX), a, 0, 0, 0],
        )?;
        Ok(())
    }

    /// fcntl(F_SETSIG): the signal sent for I/O on descriptor `fd` (0: SIGIO).
    pub(crate) fn set_io_signal(&mut self, fd: u64, sig: i32) -> Result<()> {
        use linux_raw_sys::general::F_SETSIG;
        let args = [fd, u64::from(F_SETSIG), sig as u64, 0, 0, 0];
        self.call("fcntl(F_SETSIG)", nr::FCNTL, args)?;
        Ok(())
    }

    /// pipe2(2): (read end, write end).
    pub(crate) fn pipe2(&mut self, flags: i32) -> Result<(u64, u64)> {
        let a = self.put(ARG_ADDR, &[0u8; 8])?;
        self.call("pipe2", nr::PIPE2, [a, flags as u64, 0, 0, 0, 0])?;
        fd_pair(self, a)
    }

    /// socketpair(2).
    pub(crate) fn socketpair(&mut self, domain: i32, typ: i32) -> Result<(u64, u64)> {
        let a = self.put(ARG_ADDR, &[0u8; 8])?;
        let args = [domain as u64, typ as u64, 0, a, 0, 0];
        self.call("socketpair", nr::SOCKETPAIR, args)?;
        fd_pair(self, a)
    }

    /// socket(2).
    pub(crate) fn socket(&mut self, what: &str, domain: i32, typ: i32, proto: i32) -> Result<u64> {
        self.call(
            what,
            nr::SOCKET,
            [domain as u64, typ as u64, proto as u64, 0, 0, 0],
        )
    }

    /// setsockopt(2).
    pub(crate) fn setsockopt(&mut self, fd: u64, opt: &SockOpt) -> Result<()> {
        let (level, name, value, what) = opt.encode();
        let a = if value.len() <= 64 {
            self.put(ARG_OPT, &value)?
        } else {
            self.put(ARG_DATA, &value)?
        };
        self.call(
            what,
            nr::SETSOCKOPT,
            [fd, level as u64, name as u64, a, value.len() as u64, 0],
        )?;
        Ok(())
    }

    /// SO_ATTACH_FILTER with a classic filter of `insns` (struct sock_filter, 8 bytes
    /// each): the program and its struct sock_fprog go through the scratch area.
    pub(crate) fn attach_filter(&mut self, fd: u64, insns: &[u8]) -> Result<()> {
        let prog = self.put(ARG_DATA, insns)?;
        let mut fprog = ((insns.len() / 8) as u16).to_le_bytes().to_vec();
        fprog.extend_from_slice(&[0; 6]);
        fprog.extend_from_slice(&prog.to_le_bytes());
        let a = self.put(ARG_OPT, &fprog)?;
        self.call(
            "SO_ATTACH_FILTER",
            nr::SETSOCKOPT,
            [
                fd,
                libc::SOL_SOCKET as u64,
                libc::SO_ATTACH_FILTER as u64,
                a,
                fprog.len() as u64,
                0,
            ],
        )?;
        Ok(())
    }

    /// bind(2).
    pub(crate) fn bind(&mut self, what: &str, fd: u64, addr: &SockAddr<'_>) -> Result<()> {
        let b = addr.to_bytes();
        let a = self.put(ARG_ADDR, &b)?;
        self.call(what, nr::BIND, [fd, a, b.len() as u64, 0, 0, 0])?;
        Ok(())
    }

    /// connect(2).
    pub(crate) fn connect(&mut self, what: &str, fd: u64, addr: &SockAddr<'_>) -> Result<()> {
        let b = addr.to_bytes();
        let a = self.put(ARG_ADDR, &b)?;
        self.call(what, nr::CONNECT, [fd, a, b.len() as u64, 0, 0, 0])?;
        Ok(())
    }

    /// connect(2) on a non-blocking socket: started (EINPROGRESS) or done.
    pub(crate) fn connect_started(
        &mut self,
        what: &str,
        fd: u64,
        addr: &SockAddr<'_>,
    ) -> Result<()> {
        let b = addr.to_bytes();
        let a = self.put(ARG_ADDR, &b)?;
        match self.call(what, nr::CONNECT, [fd, a, b.len() as u64, 0, 0, 0]) {
            Err(crate::error::RestoreError::Sys(crate::sys::SysError::Remote {
                errno, ..
            })) if errno == libc::EINPROGRESS => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// accept4(2), without the peer's address.
    pub(crate) fn accept4(&mut self, fd: u64, flags: i32) -> Result<u64> {
        self.call("accept4", nr::ACCEPT4, [fd, 0, 0, flags as u64, 0, 0])
    }

    /// getsockname(2): the raw address.
    pub(crate) fn getsockname(&mut self, what: &str, fd: u64) -> Result<Vec<u8>> {
        let a = self.put(ARG_ADDR, &[0u8; 128])?;
        let l = self.put(ARG_OPT, &128u32.to_le_bytes())?;
        self.call(what, nr::GETSOCKNAME, [fd, a, l, 0, 0, 0])?;
        let mut len = [0u8; 4];
        self.read(l, &mut len)?;
        let mut b = vec![0u8; (u32::from_le_bytes(len) as usize).min(128)];
        self.read(a, &mut b)?;
        Ok(b)
    }

    /// getsockopt(2) of an integer option.
    pub(crate) fn getsockopt_int(
        &mut self,
        what: &str,
        fd: u64,
        level: i32,
        name: i32,
    ) -> Result<i32> {
        let mut arg = 0i32.to_le_bytes().to_vec();
        arg.extend_from_slice(&4u32.to_le_bytes());
        let a = self.put(ARG_OPT, &arg)?;
        let args = [fd, level as u64, name as u64, a, a + 4, 0];
        self.call(what, nr::GETSOCKOPT, args)?;
        let mut v = [0u8; 4];
        self.read(a, &mut v)?;
        Ok(i32::from_le_bytes(v))
    }

    /// shutdown(2).
    pub(crate) fn shutdown(&mut self, fd: u64, how: i32) -> Result<()> {
        self.call("shutdown", nr::SHUTDOWN, [fd, how as u64, 0, 0, 0, 0])?;
        Ok(())
    }

    /// listen(2).
    pub(crate) fn listen(&mut self, what: &str, fd: u64, backlog: u32) -> Result<()> {
        self.call(what, nr::LISTEN, [fd, u64::from(backlog), 0, 0, 0, 0])?;
        Ok(())
    }

    /// Queue `data` on `fd` with write(2), in chunks through the scratch area; a short
    /// write is an error naming `what`, never silently lost data.
    pub(crate) fn write_all(&mut self, fd: u64, data: &[u8], what: &str) -> Result<()> {
        self.queue(nr::WRITE, fd, data, what)
    }

    /// The same with send(2) (a TCP socket in repair mode queues what is sent), never
    /// blocking (`MSG_DONTWAIT`): the stub must not wait for room that only the restored
    /// program would make. A queue that takes part of the data and then no more is an
    /// error naming `what` and how much it took.
    pub(crate) fn send_all(&mut self, fd: u64, data: &[u8], what: &str) -> Result<()> {
        const CHUNK: usize = 1 << 19;
        let mut done = 0;
        while done < data.len() {
            let chunk = &data[done..data.len().min(done + CHUNK)];
            let a = self.put(ARG_DATA, chunk)?;
            let full = |done: usize| {
                RestoreError::Stage(format!(
                    "{what}: the socket's queue took only {done} of the {} queued bytes (it \
                     is full; the restored socket's buffer is smaller than the original's)",
                    data.len()
                ))
            };
            let flags = libc::MSG_DONTWAIT as u64;
            match self.call(
                &format!("queue {what} data"),
                nr::SENDTO,
                [fd, a, chunk.len() as u64, flags, 0, 0],
            ) {
                Ok(0) => return Err(full(done)),
                Ok(n) => done += (n as usize).min(chunk.len()),
                Err(RestoreError::Sys(crate::sys::SysError::Remote { errno, .. }))
                    if errno == libc::EAGAIN =>
                {
                    return Err(full(done));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn queue(&mut self, nr: u64, fd: u64, data: &[u8], what: &str) -> Result<()> {
        const CHUNK: usize = 1 << 19;
        for chunk in data.chunks(CHUNK) {
            let a = self.put(ARG_DATA, chunk)?;
            let n = self.call(
                &format!("queue {what} data"),
                nr,
                [fd, a, chunk.len() as u64, 0, 0, 0],
            )?;
            if n != chunk.len() as u64 {
                return Err(RestoreError::Stage(format!(
                    "{what}: only {n} of {} queued bytes could be put back",
                    chunk.len()
                )));
            }
        }
        Ok(())
    }

    /// [`Ctx::send_message`] with the sender's credentials `creds` (pid, uid, gid) as
    /// SCM_CREDENTIALS (ckpt's privileges at this point let it name any process and
    /// IDs); without `creds`, the process's own go with it.
    /// With `rights`, those descriptors of the process go with it (SCM_RIGHTS).
    pub(crate) fn send_message_as(
        &mut self,
        fd: u64,
        data: &[u8],
        to: Option<&SockAddr<'_>>,
        creds: Option<(i32, u32, u32)>,
        rights: &[u64],
        what: &str,
    ) -> Result<()> {
        if creds.is_none() && rights.is_empty() {
            return self.send_message(fd, data, to, what);
        }
        if rights.len() > 253 {
            return Err(RestoreError::Malformed(format!(
                "{what}: more than 253 descriptors in one message"
            )));
        }
        let a = self.put(ARG_DATA, data)?;
        let (ta, tl) = match to {
            None => (0, 0),
            Some(to) => {
                let b = to.to_bytes();
                (self.put(ARG_ADDR2, &b)?, b.len() as u64)
            }
        };
        // struct iovec, struct msghdr, then the control messages (a struct ucred in
        // CMSG_SPACE(12) = 32 bytes, the descriptors), in the x86-64 layouts, between the
        // address and the data.
        let iov = [a.to_le_bytes(), (data.len() as u64).to_le_bytes()].concat();
        let iov_a = self.put(ARG_CMSG, &iov)?;
        let mut cmsg = Vec::with_capacity(32 + 16 + 4 * rights.len());
        if let Some((pid, uid, gid)) = creds {
            cmsg.extend_from_slice(&28u64.to_le_bytes());
            cmsg.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
            cmsg.extend_from_slice(&libc::SCM_CREDENTIALS.to_le_bytes());
            cmsg.extend_from_slice(&pid.to_le_bytes());
            cmsg.extend_from_slice(&uid.to_le_bytes());
            cmsg.extend_from_slice(&gid.to_le_bytes());
            cmsg.extend_from_slice(&[0u8; 4]);
        }
        if !rights.is_empty() {
            // CMSG_LEN(4n), padded to CMSG_SPACE (8 bytes).
            cmsg.extend_from_slice(&(16 + 4 * rights.len() as u64).to_le_bytes());
            cmsg.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
            cmsg.extend_from_slice(&libc::SCM_RIGHTS.to_le_bytes());
            for &r in rights {
                cmsg.extend_from_slice(&(r as i32).to_le_bytes());
            }
            while cmsg.len() % 8 != 0 {
                cmsg.push(0);
            }
        }
        // Above the iovec and the msghdr (at most 32 + 16 + 1012 bytes: below the data).
        let cmsg_a = self.put(ARG_CMSG + 128, &cmsg)?;
        let mut mh = Vec::with_capacity(56);
        mh.extend_from_slice(&ta.to_le_bytes());
        mh.extend_from_slice(&tl.to_le_bytes());
        mh.extend_from_slice(&iov_a.to_le_bytes());
        mh.extend_from_slice(&1u64.to_le_bytes());
        mh.extend_from_slice(&cmsg_a.to_le_bytes());
        mh.extend_from_slice(&(cmsg.len() as u64).to_le_bytes());
        mh.extend_from_slice(&0u64.to_le_bytes());
        let mh_a = self.put(ARG_CMSG + 64, &mh)?;
        let n = self.call(
            &format!("queue {what} message"),
            nr::SENDMSG,
            [fd, mh_a, libc::MSG_DONTWAIT as u64, 0, 0, 0],
        )?;
        if n != data.len() as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: a queued message of {} bytes could only be sent in part ({n})",
                data.len()
            )));
        }
        Ok(())
    }

    /// Send one message (its boundary kept) from `fd`, to `to` or to the peer when it is
    /// `None`, without blocking: a full queue is an error naming `what`, not a hang.
    pub(crate) fn send_message(
        &mut self,
        fd: u64,
        data: &[u8],
        to: Option<&SockAddr<'_>>,
        what: &str,
    ) -> Result<()> {
        let a = self.put(ARG_DATA, data)?;
        let (ta, tl) = match to {
            None => (0, 0),
            Some(to) => {
                let b = to.to_bytes();
                (self.put(ARG_ADDR2, &b)?, b.len() as u64)
            }
        };
        let n = self.call(
            &format!("queue {what} message"),
            nr::SENDTO,
            [fd, a, data.len() as u64, libc::MSG_DONTWAIT as u64, ta, tl],
        )?;
        if n != data.len() as u64 {
            return Err(RestoreError::Stage(format!(
                "{what}: a queued message of {} bytes could only be sent in part ({n})",
                data.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_names_encode_as_the_kernel_takes_them() {
        let path = SockAddr::Unix(b"/run/x.sock").to_bytes();
        assert_eq!(&path[..2], &(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(&path[2..], b"/run/x.sock");
        let abs = SockAddr::Unix(b"\0abstract").to_bytes();
        assert_eq!(abs.len(), 2 + 9);
        assert_eq!(SockAddr::Raw(b"xyz").to_bytes(), b"xyz");
    }

    #[test]
    fn tcp_repair_options_are_code_value_pairs() {
        let o = SockOpt::TcpRepairOptions(vec![
            TcpRepairOpt::Mss(1460),
            TcpRepairOpt::WindowScale { snd: 7, rcv: 9 },
            TcpRepairOpt::SackPermitted,
            TcpRepairOpt::Timestamps,
        ]);
        let (level, name, v, what) = o.encode();
        assert_eq!(
            (level, name, what),
            (
                libc::SOL_TCP,
                libc::TCP_REPAIR_OPTIONS,
                "TCP_REPAIR_OPTIONS"
            )
        );
        let words: Vec<u32> = v
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(words, [2, 1460, 3, 7 | (9 << 16), 4, 0, 8, 0]);
    }
}
