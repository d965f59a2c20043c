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
    /// Those bytes, read from the socket's receive queue ([`received`]); `Err(why)`
    /// where they cannot be read here.
    pub data: std::result::Result<Vec<u8>, String>,
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
    receive_queue: u64,
    out_of_order: u64,
    skb_size: u64,
    skb_len: u64,
    skb_data_len: u64,
    skb_data: u64,
    skb_head: u64,
    skb_end: u64,
    /// `TCP_SKB_CB(skb)->seq`: the control buffer's offset plus the field's.
    skb_seq: u64,
    nr_frags: u64,
    frag_list: u64,
    frags: u64,
    frag_size: u64,
    frag_netmem: u64,
    frag_len: u64,
    frag_offset: u64,
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
            receive_queue: o("sock", "sk_receive_queue")?,
            out_of_order: o("tcp_sock", "out_of_order_queue")?,
            skb_size: u64::from(b.size_of("sk_buff").map_err(|e| e.to_string())?),
            skb_len: o("sk_buff", "len")?,
            skb_data_len: o("sk_buff", "data_len")?,
            skb_data: o("sk_buff", "data")?,
            skb_head: o("sk_buff", "head")?,
            skb_end: o("sk_buff", "end")?,
            skb_seq: o("sk_buff", "cb")? + o("tcp_skb_cb", "seq")?,
            nr_frags: o("skb_shared_info", "nr_frags")?,
            frag_list: o("skb_shared_info", "frag_list")?,
            frags: o("skb_shared_info", "frags")?,
            frag_size: u64::from(b.size_of("skb_frag").map_err(|e| e.to_string())?),
            frag_netmem: o("skb_frag", "netmem")?,
            frag_len: o("skb_frag", "len")?,
            frag_offset: o("skb_frag", "offset")?,
        })
    }
}

/// Which pointer [`program`] writes for the wanted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pointer {
    /// A socket's `struct sock` (`socket.sk`).
    Sock,
    /// The file's `private_data` (a pipe's `struct pipe_inode_info`).
    Private,
}

/// The program (hash map `map_fd` of wanted inodes): for each descriptor of the task
/// whose inode is in the map (and which is a socket, for [`Pointer::Sock`]), its inode
/// and the pointer `what`.
pub(super) fn program(l: &super::sockerr::Layout, map_fd: i32, what: Pointer) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    // The record at r10-24 (16 bytes); the map key at r10-8.
    let mut p = match what {
        Pointer::Sock => {
            let mut p = super::sockerr::wanted_socket(l, map_fd, -24);
            p.push(ldx64(R8, R0, l.socket_sk));
            p
        }
        Pointer::Private => {
            let mut p = super::sockerr::wanted_file(l, map_fd, -24);
            p.push(ldx64(R8, R7, l.file_private));
            p
        }
    };
    p.extend([
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

/// The kernel address `what` of the file of inode `ino`, a descriptor of `pid` (in
/// ckpt's PID namespace).
pub(super) fn file_pointer(
    b: &Btf,
    pid: i32,
    ino: u64,
    what: Pointer,
) -> std::result::Result<u64, String> {
    let func = b.find(btf::KIND_FUNC, "bpf_iter_task_file").map_err(|_| {
        "the kernel has no BPF task file iterator (bpf_iter_task_file, 5.8 and later)".to_string()
    })?;
    let l = super::sockerr::layout(b)?;
    let map = bpf::map_create(bpf::MAP_TYPE_HASH, 8, 1, 1).map_err(|e| e.to_string())?;
    bpf::map_update(&map, &ino.to_le_bytes(), &[1]).map_err(|e| e.to_string())?;
    let prog = bpf::load(&program(&l, map.as_raw_fd(), what), func, "ckpt_file_ptr")
        .map_err(|e| e.to_string())?;
    let mut info = [0u8; 12];
    info[0..4].copy_from_slice(&(pid as u32).to_le_bytes());
    let link =
        bpf::link_with(&prog, Some(&info), "the task file iterator").map_err(|e| e.to_string())?;
    let (out, _) = bpf::iterate(&link).map_err(|e| e.to_string())?;
    out.chunks_exact(16)
        .find_map(|r| {
            let i = u64::from_le_bytes(r[0..8].try_into().ok()?);
            let at = u64::from_le_bytes(r[8..16].try_into().ok()?);
            (i == ino && at != 0).then_some(at)
        })
        .ok_or_else(|| match what {
            Pointer::Sock => format!("process {pid} holds no socket with inode {ino}"),
            Pointer::Private => format!("process {pid} holds no file with inode {ino}"),
        })
}

/// The connections waiting in the accept queue of the listening TCP socket of inode
/// `ino` that process `pid` holds, in accept order; `pending` is the count the kernel
/// gives (`sk_ack_backlog`), which the walk must find. `Err(why)` when this kernel
/// cannot be asked (no BTF, no iterators, not root) or the queue cannot be read.
pub fn accept_queue(pid: i32, ino: u64, pending: u32) -> std::result::Result<Vec<Waiting>, String> {
    let b = Btf::vmlinux().map_err(|e| format!("the kernel's BTF cannot be read ({e})"))?;
    let l = Layout::from_btf(&b)?;
    let sk = file_pointer(&b, pid, ino, Pointer::Sock)?;
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
    let mut dm = None;
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
        let mut w = waiting(&r, &l, child)?;
        if w.unread != 0 {
            w.data = received(&b, &r, &l, &mut dm, child, w.unread);
        }
        out.push(w);
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
        data: Ok(Vec::new()),
    })
}

/// The `unread` bytes waiting on TCP socket `sk` (nobody read any: the connection was
/// not accepted), read from its receive queue without taking them: each buffer's
/// linear part (a kernel address), then its page fragments (through the direct map,
/// found once into `dm`: [`DirectMap`]). Checked against the kernel's count: the
/// buffers follow each other in sequence from `copied_seq`, and add up to `unread`.
/// Refused (`Err(why)`): bytes received out of order, a buffer with a fragment list or
/// with device memory (`net_iov`) fragments, anything that does not add up.
///
/// [`DirectMap`]: super::directmap::DirectMap
fn received(
    b: &Btf,
    r: &bpf::SockReader,
    l: &Layout,
    dm: &mut Option<super::directmap::DirectMap>,
    sk: u64,
    unread: u32,
) -> std::result::Result<Vec<u8>, String> {
    let word = |raw: &[u8], at: u64, n: usize| -> u64 {
        let mut v = [0u8; 8];
        if let Some(s) = raw.get(at as usize..at as usize + n) {
            v[..n].copy_from_slice(s);
        }
        u64::from_le_bytes(v)
    };
    let head = r
        .read(sk, (l.copied_seq + 4).max(l.out_of_order + 8) as usize)
        .map_err(|e| e.to_string())?;
    if word(&head, l.out_of_order, 8) != 0 {
        return Err("some of them came out of order (a hole waits to be filled)".into());
    }
    let mut seq = word(&head, l.copied_seq, 4) as u32;
    let mut out = Vec::with_capacity(unread as usize);
    let skbs = r.skbs(sk + l.receive_queue).map_err(|e| e.to_string())?;
    for skb in skbs {
        let raw = r
            .read(skb, l.skb_size as usize)
            .map_err(|e| e.to_string())?;
        let len = word(&raw, l.skb_len, 4);
        let data_len = word(&raw, l.skb_data_len, 4);
        if word(&raw, l.skb_seq, 4) as u32 != seq {
            return Err(format!(
                "a buffer of its receive queue starts at sequence {:#x}, not {seq:#x}",
                word(&raw, l.skb_seq, 4)
            ));
        }
        if out.len() as u64 + len > u64::from(unread) || data_len > len {
            return Err(format!(
                "its receive queue holds more than the {unread} bytes the kernel counts"
            ));
        }
        let linear = len - data_len;
        if linear != 0 {
            out.extend(
                r.read(word(&raw, l.skb_data, 8), linear as usize)
                    .map_err(|e| e.to_string())?,
            );
        }
        if data_len != 0 {
            let shinfo = word(&raw, l.skb_head, 8) + word(&raw, l.skb_end, 4);
            let sh = r
                .read(shinfo, l.frags as usize)
                .map_err(|e| e.to_string())?;
            if word(&sh, l.frag_list, 8) != 0 {
                return Err("a buffer of its receive queue has a fragment list".into());
            }
            let n = word(&sh, l.nr_frags, 1);
            let frags = r
                .read(shinfo + l.frags, (n * l.frag_size) as usize)
                .map_err(|e| e.to_string())?;
            let mut paged = 0u64;
            for i in 0..n {
                let f = i * l.frag_size;
                let netmem = word(&frags, f + l.frag_netmem, 8);
                let flen = word(&frags, f + l.frag_len, 4);
                let foff = word(&frags, f + l.frag_offset, 4);
                if netmem & 1 != 0 {
                    return Err("a buffer of its receive queue holds device memory".into());
                }
                if dm.is_none() {
                    *dm = Some(super::directmap::DirectMap::find(b, r)?);
                }
                let d = dm.as_ref().ok_or("no direct map")?;
                let at = d.page_address(netmem)? + foff;
                out.extend(r.read(at, flen as usize).map_err(|e| e.to_string())?);
                paged += flen;
            }
            if paged != data_len {
                return Err(format!(
                    "a buffer's fragments hold {paged} bytes, not the {data_len} it counts"
                ));
            }
        }
        seq = seq.wrapping_add(len as u32);
    }
    if out.len() != unread as usize {
        return Err(format!(
            "its receive queue holds {} bytes, the kernel counts {unread}",
            out.len()
        ));
    }
    Ok(out)
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
        assert_nulls_go_to_end(&program(&test_layout(), 3, Pointer::Sock), 5);
        assert_nulls_go_to_end(&program(&test_layout(), 3, Pointer::Private), 4);
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
        let data: Vec<_> = q.iter().map(|w| w.data.clone()).collect();
        assert_eq!(
            data,
            [Ok(vec![]), Ok(b"hello".to_vec()), Ok(vec![])],
            "the bytes sent"
        );
        for c in &cs {
            let (a, from) = l.accept().expect("accept after the walk");
            assert_eq!(Some(from), c.local_addr().ok(), "the same order");
            drop(a);
        }
    }

    /// Where this kernel has it: the bytes of a client that sent more than a page (in
    /// several writes, kept in page fragments), read back whole, over IPv6; the
    /// connection then accepted gives the same bytes.
    #[test]
    fn the_reader_reads_bytes_kept_in_pages() {
        use std::io::Read;
        if !rustix::process::geteuid().is_root()
            || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        {
            return;
        }
        let l = std::net::TcpListener::bind("[::1]:0").expect("listen");
        let mut c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let sent: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for part in sent.chunks(10_000) {
            c.write_all(part).expect("write");
        }
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .expect("stat")
            .ino();
        let mut q = Vec::new();
        for _ in 0..200 {
            q = accept_queue(std::process::id() as i32, ino, 1).expect("the accept queue");
            if q.first().is_some_and(|w| w.unread as usize == sent.len()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let w = q.first().expect("one waiting");
        assert_eq!(w.data.as_deref().map(|d| d.len()), Ok(sent.len()));
        assert!(w.data.as_deref() == Ok(&sent[..]), "the bytes sent");
        let (mut a, _) = l.accept().expect("accept");
        let mut got = vec![0u8; sent.len()];
        a.read_exact(&mut got).expect("read");
        assert!(got == sent, "accept still gives them");
    }
}
