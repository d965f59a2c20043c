//! The accept queue of a listening TCP socket, read without taking anything from it:
//! for each connection waiting to be accepted, in the order accept() would return
//! them, its addresses, its TCP state and how many bytes its client sent that wait
//! unread on it. accept() would hand the connection to ckpt (a `--leave-running` dump
//! must leave it to the program), and sock_diag lists the waiting sockets (inode 0,
//! on the listener's port) in hash order, not queue order, with nothing naming their
//! listener.
//!
//! Two steps, both on the BPF machinery of `sys::bpf`:
//!
//! * a program on the task file iterator (`bpf_iter_task_file`, as `sys::sockerr`'s)
//!   writes, for the listener's descriptor in the process holding it (its inode in a
//!   hash map), 16 bytes: the inode and the address of its `struct sock`;
//! * the kernel memory reader of [`bpf::SockReader`] then walks the listener's
//!   `icsk_accept_queue` (`rskq_accept_head`, each `request_sock`'s `dl_next`), and
//!   reads each waiting socket's `sock_common` (family, state, addresses, ports) and
//!   its `rcv_nxt` and `copied_seq` (what it received that nobody read).
//!
//! The offsets come from the kernel's BTF. The tree is frozen while this runs, so the
//! queue does not change under the walk (a walk longer than the count the kernel
//! gives, or a pointer that cannot be read, is an error, never a guess).

use super::bpf::{self, Insn, asm, reg};
use super::btf::{self, Btf};
use std::os::fd::AsRawFd;

/// One connection waiting in a listener's accept queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Raw sockaddr_in / sockaddr_in6 of its two ends: `local` on the listener's side,
    /// `peer` its client's.
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    /// The TCP state (1 ESTABLISHED; 8 CLOSE_WAIT once the client's FIN came).
    pub state: u8,
    /// Bytes received and not read (the FIN's sequence number left out).
    pub unread: u32,
}

/// Where the reader finds what it reads, from BTF.
#[derive(Debug, Clone, Copy)]
struct Layout {
    accept_head: u64,
    req_next: u64,
    req_sk: u64,
    family: u64,
    state: u64,
    daddr: u64,
    rcv_saddr: u64,
    dport: u64,
    num: u64,
    v6_daddr: u64,
    v6_rcv_saddr: u64,
    common_size: u64,
    rcv_nxt: u64,
    copied_seq: u64,
}

impl Layout {
    fn from_btf(b: &Btf) -> std::result::Result<Layout, String> {
        let o = |s: &str, m: &str| b.offset_of(s, m).map(u64::from).map_err(|e| e.to_string());
        Ok(Layout {
            accept_head: o("inet_connection_sock", "icsk_accept_queue.rskq_accept_head")?,
            req_next: o("request_sock", "dl_next")?,
            req_sk: o("request_sock", "sk")?,
            family: o("sock_common", "skc_family")?,
            state: o("sock_common", "skc_state")?,
            daddr: o("sock_common", "skc_daddr")?,
            rcv_saddr: o("sock_common", "skc_rcv_saddr")?,
            dport: o("sock_common", "skc_dport")?,
            num: o("sock_common", "skc_num")?,
            v6_daddr: o("sock_common", "skc_v6_daddr")?,
            v6_rcv_saddr: o("sock_common", "skc_v6_rcv_saddr")?,
            common_size: u64::from(b.size_of("sock_common").map_err(|e| e.to_string())?),
            rcv_nxt: o("tcp_sock", "rcv_nxt")?,
            copied_seq: o("tcp_sock", "copied_seq")?,
        })
    }
}

/// The program (hash map `map_fd` of wanted inodes): for each descriptor of the task
/// whose inode is in the map and which is a socket, its inode and `socket.sk`.
pub fn program(l: &super::sockerr::Layout, map_fd: i32) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    // The record at r10-24 (16 bytes); the map key at r10-8.
    let mut p = super::sockerr::wanted_socket(l, map_fd, -24);
    p.extend([
        ldx64(R8, R0, l.socket_sk),
        jeq_imm(R8, 0, 0),
        stx64(R10, -16, R8),
        ldx64(R6, R9, l.ctx_meta),
        ldx64(R1, R6, l.meta_seq),
        mov(R2, R10),
        add_imm(R2, -24),
        mov_imm(R3, 16),
        call(bpf::HELPER_SEQ_WRITE),
        mov_imm(R0, 0),
        exit(),
    ]);
    super::sockerr::nulls_to_end(p)
}

/// The address of the `struct sock` of socket inode `ino`, a descriptor of `pid`.
fn sock_address(b: &Btf, pid: i32, ino: u64) -> std::result::Result<u64, String> {
    let func = b.find(btf::KIND_FUNC, "bpf_iter_task_file").map_err(|_| {
        "the kernel has no BPF task file iterator (bpf_iter_task_file, 5.8 and later)".to_string()
    })?;
    let l = super::sockerr::layout(b)?;
    let map = bpf::map_create(bpf::MAP_TYPE_HASH, 8, 1, 1).map_err(|e| e.to_string())?;
    bpf::map_update(&map, &ino.to_le_bytes(), &[1]).map_err(|e| e.to_string())?;
    let prog = bpf::load(&program(&l, map.as_raw_fd()), func, "ckpt_tcp_queue")
        .map_err(|e| e.to_string())?;
    let mut info = [0u8; 12];
    info[0..4].copy_from_slice(&(pid as u32).to_le_bytes());
    let link =
        bpf::link_with(&prog, Some(&info), "the task file iterator").map_err(|e| e.to_string())?;
    let (out, _) = bpf::iterate(&link).map_err(|e| e.to_string())?;
    out.chunks_exact(16)
        .find_map(|r| {
            let i = u64::from_le_bytes(r[0..8].try_into().ok()?);
            let sk = u64::from_le_bytes(r[8..16].try_into().ok()?);
            (i == ino && sk != 0).then_some(sk)
        })
        .ok_or_else(|| format!("process {pid} holds no socket with inode {ino}"))
}

/// The connections waiting in the accept queue of the listening TCP socket of inode
/// `ino` that process `pid` holds, in accept order; `pending` is the count the kernel
/// gives (`sk_ack_backlog`), which the walk must find. `Err(why)` when this kernel
/// cannot be asked (no BTF, no iterators, not root) or the queue cannot be read.
pub fn accept_queue(pid: i32, ino: u64, pending: u32) -> std::result::Result<Vec<Waiting>, String> {
    let b = Btf::vmlinux().map_err(|e| format!("the kernel's BTF cannot be read ({e})"))?;
    let l = Layout::from_btf(&b)?;
    let sk = sock_address(&b, pid, ino)?;
    let r = bpf::SockReader::new()?;
    let u64_at = |a: u64| -> std::result::Result<u64, String> {
        let v = r.read(a, 8).map_err(|e| e.to_string())?;
        Ok(u64::from_le_bytes(
            v.get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or("a short read")?,
        ))
    };
    let mut out = Vec::new();
    let mut req = u64_at(sk + l.accept_head)?;
    while req != 0 {
        if out.len() >= pending as usize {
            return Err(format!(
                "its accept queue holds more than the {pending} connections the kernel counts"
            ));
        }
        let child = u64_at(req + l.req_sk)?;
        if child == 0 {
            return Err("a connection of its accept queue has no socket".into());
        }
        out.push(waiting(&r, &l, child)?);
        req = u64_at(req + l.req_next)?;
    }
    if out.len() != pending as usize {
        return Err(format!(
            "its accept queue holds {} connections, the kernel counts {pending}",
            out.len()
        ));
    }
    Ok(out)
}

/// What waiting socket `sk` (a `struct tcp_sock` address) is.
fn waiting(r: &bpf::SockReader, l: &Layout, sk: u64) -> std::result::Result<Waiting, String> {
    let c = r
        .read(sk, l.common_size as usize)
        .map_err(|e| e.to_string())?;
    let at = |o: u64, n: usize| -> std::result::Result<&[u8], String> {
        c.get(o as usize..o as usize + n)
            .ok_or_else(|| "sock_common is shorter than its fields".to_string())
    };
    let family = i32::from(u16::from_ne_bytes(
        at(l.family, 2)?.try_into().unwrap_or([0; 2]),
    ));
    let state = at(l.state, 1)?[0];
    let dport = at(l.dport, 2)?.to_vec();
    let num = u16::from_ne_bytes(at(l.num, 2)?.try_into().unwrap_or([0; 2]));
    let addr = |ip: &[u8], port: &[u8]| {
        let mut a = (family as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(port);
        if family == libc::AF_INET {
            a.extend_from_slice(ip);
            a.extend_from_slice(&[0; 8]);
        } else {
            a.extend_from_slice(&[0; 4]);
            a.extend_from_slice(ip);
            a.extend_from_slice(&[0; 4]);
        }
        a
    };
    let (local, peer) = match family {
        libc::AF_INET => (
            addr(at(l.rcv_saddr, 4)?, &num.to_be_bytes()),
            addr(at(l.daddr, 4)?, &dport),
        ),
        libc::AF_INET6 => (
            addr(at(l.v6_rcv_saddr, 16)?, &num.to_be_bytes()),
            addr(at(l.v6_daddr, 16)?, &dport),
        ),
        f => return Err(format!("a waiting socket of family {f}")),
    };
    let seq = |o: u64| -> std::result::Result<u32, String> {
        let v = r.read(sk + o, 4).map_err(|e| e.to_string())?;
        Ok(u32::from_le_bytes(
            v.get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or("a short read")?,
        ))
    };
    let fin = u32::from(state == super::tcp::TCP_CLOSE_WAIT);
    let unread = seq(l.rcv_nxt)?
        .wrapping_sub(seq(l.copied_seq)?)
        .wrapping_sub(fin);
    Ok(Waiting {
        local,
        peer,
        state,
        unread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// Every NULL check of the program lands on its final `r0 = 0; exit`.
    #[test]
    fn the_programs_null_checks_go_to_its_end() {
        use super::super::sockerr::tests::{assert_nulls_go_to_end, test_layout};
        assert_nulls_go_to_end(&program(&test_layout(), 3), 5);
    }

    /// Where this kernel has it (root, BTF): three connections waiting, in the order
    /// they came, with their addresses, the one that sent 5 bytes and the one that
    /// shut down writing; and the queue still there for accept afterwards.
    #[test]
    fn the_reader_walks_an_accept_queue_without_taking_it() {
        if !rustix::process::geteuid().is_root()
            || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let to = l.local_addr().expect("addr");
        let mut cs: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(to).expect("connect"))
            .collect();
        cs[1].write_all(b"hello").expect("write");
        cs[2].shutdown(std::net::Shutdown::Write).expect("shutdown");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .expect("stat")
            .ino();
        let q = accept_queue(std::process::id() as i32, ino, 3).expect("the accept queue");
        let peers: Vec<_> = q
            .iter()
            .map(|w| crate::kinds::fd::tcp::inet_addr(&w.peer))
            .collect();
        let want: Vec<_> = cs.iter().map(|c| c.local_addr().ok()).collect();
        assert_eq!(peers, want, "the clients, in the order they connected");
        for w in &q {
            assert_eq!(crate::kinds::fd::tcp::inet_addr(&w.local), Some(to));
        }
        let st: Vec<(u8, u32)> = q.iter().map(|w| (w.state, w.unread)).collect();
        assert_eq!(st, [(1, 0), (1, 5), (8, 0)]);
        for c in &cs {
            let (a, from) = l.accept().expect("accept after the walk");
            assert_eq!(Some(from), c.local_addr().ok(), "the same order");
            drop(a);
        }
    }
}
