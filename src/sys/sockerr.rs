//! The pending error of a socket, read without clearing it: `sk_err` (and `sk_err_soft`,
//! the TCP state, `sk_shutdown`, `SOCK_DONE`, and the socket layer's
//! `SS_CONNECTING`/`SS_CONNECTED`) of the sockets a process holds. SO_ERROR, a read or a
//! write would hand the error to ckpt and clear it, and no other interface (sock_diag,
//! TCP_INFO, /proc) shows it: a `--leave-running` dump must leave it to the program.
//!
//! A BPF program assembled here at run time (the loader and encoder of `sys::bpf`)
//! attaches to the kernel's task file iterator (`bpf_iter_task_file`, 5.8; restricted
//! to one process with the iterator's task parameter, 6.1): for each descriptor of that
//! process whose inode is in a hash map ckpt fills with the sockets it asks about, it
//! writes one 32-byte record (see [`Record`]). The output is a record per wanted socket,
//! far below one read's buffer, so one read() covers the whole walk (no resume, no
//! skipped entries). The TCP iterator (`bpf_iter_tcp`) cannot do it: it walks the
//! listening and established hash tables, and a socket whose connection ended (state
//! CLOSE) is in neither; the task file iterator reaches every socket a process holds,
//! in whatever network namespace, from ckpt's.

use super::bpf::{self, Insn, asm, reg};
use super::btf::{self, Btf};
use super::{Result, SysError};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};

/// Where the programs' loads find what they read, from BTF.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// `struct bpf_iter__task_file`: file.
    pub ctx_file: i16,
    /// `struct bpf_iter__task_file`: meta; `struct bpf_iter_meta`: seq.
    pub ctx_meta: i16,
    pub meta_seq: i16,
    /// file.f_inode, file.private_data, inode.i_ino.
    pub file_inode: i16,
    pub file_private: i16,
    pub inode_ino: i16,
    /// socket.state, socket.sk.
    pub socket_state: i16,
    pub socket_sk: i16,
    /// sock: sk_err, sk_err_soft, sk_flags, __sk_common.skc_state, sk_shutdown.
    pub sk_err: i16,
    pub sk_err_soft: i16,
    pub sk_flags: i16,
    pub sk_state: i16,
    pub sk_shutdown: i16,
}

/// What the program writes for one socket (32 bytes, little-endian): inode u64 @0,
/// sk_err i32 @8, sk_err_soft i32 @12, sk_flags u64 @16, socket.state u32 @24,
/// skc_state u8 @28, sk_shutdown u8 @29.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub ino: u64,
    /// The error the program has not read yet (0: none).
    pub err: i32,
    /// The soft error (an ICMP error taken while connected), which SO_ERROR reports
    /// when there is no `err`.
    pub err_soft: i32,
    /// `sk_flags`: bit 1 is SOCK_DONE (a FIN came: a read gives end of file before the
    /// error).
    pub flags: u64,
    /// The socket layer's state (`enum socket_state`): 2 SS_CONNECTING (a non-blocking
    /// connect the program has not called connect again for), 3 SS_CONNECTED.
    pub sock_state: u32,
    /// The TCP state (7: CLOSE).
    pub state: u8,
    /// `sk_shutdown` (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2).
    pub shutdown: u8,
}

/// `enum sock_flags` SOCK_DONE (include/net/sock.h).
pub const SOCK_DONE: u64 = 1 << 1;
/// `enum socket_state` (include/uapi/linux/net.h).
pub const SS_CONNECTING: u32 = 2;
pub const SS_CONNECTED: u32 = 3;

const RECORD: usize = 32;

impl Record {
    fn parse(b: &[u8]) -> Option<Record> {
        let u32_at = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        Some(Record {
            ino: u64_at(0)?,
            err: u32_at(8)? as i32,
            err_soft: u32_at(12)? as i32,
            flags: u64_at(16)?,
            sock_state: u32_at(24)?,
            state: *b.get(28)?,
            shutdown: *b.get(29)?,
        })
    }
}

/// The program (hash map `map_fd`: inode u64 -> u8): for each descriptor whose file's
/// inode is in the map and which is a socket ([`HELPER_SOCK_FROM_FILE`]), one
/// [`Record`] written to the iterator's output.
///
/// [`HELPER_SOCK_FROM_FILE`]: bpf::HELPER_SOCK_FROM_FILE
pub fn program(l: &Layout, map_fd: i32) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    // The record is built on the stack at r10-40 (32 bytes); the map key at r10-8.
    const R: i16 = -40;
    let mut p = wanted_socket(l, map_fd, R);
    p.extend([
        ldx32(R1, R0, l.socket_state),
        stx32(R10, R + 24, R1),
        ldx64(R8, R0, l.socket_sk),
        jeq_imm(R8, 0, 0),
        ldx32(R1, R8, l.sk_err),
        stx32(R10, R + 8, R1),
        ldx32(R1, R8, l.sk_err_soft),
        stx32(R10, R + 12, R1),
        ldx64(R1, R8, l.sk_flags),
        stx64(R10, R + 16, R1),
        // bytes 28..32: state, shutdown, two zero bytes
        st32_imm(R10, R + 28, 0),
        ldx8(R1, R8, l.sk_state),
        stx8(R10, R + 28, R1),
        ldx8(R1, R8, l.sk_shutdown),
        stx8(R10, R + 29, R1),
        ldx64(R6, R9, l.ctx_meta),
        ldx64(R1, R6, l.meta_seq),
        mov(R2, R10),
        add_imm(R2, i32::from(R)),
        mov_imm(R3, RECORD as i32),
        call(bpf::HELPER_SEQ_WRITE),
        mov_imm(R0, 0),
        exit(),
    ]);
    nulls_to_end(p)
}

/// The start of a task-file iterator program that acts only on sockets whose inode is
/// in hash map `map_fd`: [`wanted_file`], then it goes on with r0 the `struct socket`;
/// every other call ends at the program's `r0 = 0; exit` (its NULL checks are left for
/// [`nulls_to_end`]). Shared with `sys::tcpqueue`'s program.
pub(super) fn wanted_socket(l: &Layout, map_fd: i32, ino_at: i16) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    let mut p = wanted_file(l, map_fd, ino_at);
    p.extend([
        mov(R1, R7),
        call(bpf::HELPER_SOCK_FROM_FILE),
        jeq_imm(R0, 0, 0),
    ]);
    p
}

/// The start of a task-file iterator program that acts only on files whose inode is in
/// hash map `map_fd`: with r9 the context, r7 the file, the inode number stored at
/// r10-8 (the map key) and at r10+`ino_at`; other files end at the program's
/// `r0 = 0; exit` (its NULL checks are left for [`nulls_to_end`]).
pub(super) fn wanted_file(l: &Layout, map_fd: i32, ino_at: i16) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    let mut p = vec![
        mov(R9, R1),
        ldx64(R7, R9, l.ctx_file),
        // The last call of an iteration has no file.
        jeq_imm(R7, 0, 0),
        ldx64(R1, R7, l.file_inode),
        jeq_imm(R1, 0, 0),
        ldx64(R1, R1, l.inode_ino),
        stx64(R10, -8, R1),
        stx64(R10, ino_at, R1),
    ];
    p.extend(asm::ld_map_fd(R1, map_fd));
    p.extend([
        mov(R2, R10),
        add_imm(R2, -8),
        call(bpf::HELPER_MAP_LOOKUP_ELEM),
        jeq_imm(R0, 0, 0),
    ]);
    p
}

/// Program `p` with every NULL check (a `jeq 0` left with offset 0) jumping to its
/// final `r0 = 0; exit`. (Also `sys::tcpqueue`'s program.)
pub(super) fn nulls_to_end(mut p: Vec<Insn>) -> Vec<Insn> {
    let end = p.len() - 2;
    for (n, i) in p.iter_mut().enumerate() {
        if i.code == 0x15 && i.off == 0 {
            i.off = (end - n - 1) as i16;
        }
    }
    p
}

/// The program's layout on this kernel.
pub(super) fn layout(b: &Btf) -> std::result::Result<Layout, String> {
    let off = |s: &str, m: &str| -> std::result::Result<i16, String> {
        let o = b.offset_of(s, m).map_err(|e| e.to_string())?;
        i16::try_from(o).map_err(|_| format!("{s}.{m} is too far for a BPF load"))
    };
    Ok(Layout {
        ctx_file: off("bpf_iter__task_file", "file")?,
        ctx_meta: off("bpf_iter__task_file", "meta")?,
        meta_seq: off("bpf_iter_meta", "seq")?,
        file_inode: off("file", "f_inode")?,
        file_private: off("file", "private_data")?,
        inode_ino: off("inode", "i_ino")?,
        socket_state: off("socket", "state")?,
        socket_sk: off("socket", "sk")?,
        sk_err: off("sock", "sk_err")?,
        sk_err_soft: off("sock", "sk_err_soft")?,
        sk_flags: off("sock", "__sk_common.skc_flags")?,
        sk_state: off("sock", "__sk_common.skc_state")?,
        sk_shutdown: off("sock", "sk_shutdown")?,
    })
}

/// The records of the sockets `inos` that process `pid` (in ckpt's PID namespace)
/// holds, by inode; a socket it does not hold (any more) is missing. `Err(why)` when
/// this kernel cannot be asked (no BTF or task file iterator, not root, a structure
/// laid out otherwise, an iterator without the task parameter before 6.1).
pub fn read(pid: i32, inos: &[u64]) -> std::result::Result<BTreeMap<u64, Record>, String> {
    let b = Btf::vmlinux().map_err(|e| format!("the kernel's BTF cannot be read ({e})"))?;
    let func = b.find(btf::KIND_FUNC, "bpf_iter_task_file").map_err(|_| {
        "the kernel has no BPF task file iterator (bpf_iter_task_file, 5.8 and later)".to_string()
    })?;
    let l = layout(&b)?;
    let max = u32::try_from(inos.len().max(1)).unwrap_or(u32::MAX);
    let map = bpf::map_create(bpf::MAP_TYPE_HASH, 8, 1, max).map_err(|e| e.to_string())?;
    for ino in inos {
        bpf::map_update(&map, &ino.to_le_bytes(), &[1]).map_err(|e| e.to_string())?;
    }
    let prog = bpf::load(&program(&l, map.as_raw_fd()), func, "ckpt_sock_err")
        .map_err(|e| e.to_string())?;
    run(&prog, pid).map_err(|e| e.to_string())
}

/// One walk of `pid`'s descriptors with `prog`.
fn run(prog: &OwnedFd, pid: i32) -> Result<BTreeMap<u64, Record>> {
    // union bpf_iter_link_info.task: tid, pid, pid_fd (the one thread: its table is
    // the process's descriptors, as /proc/PID/fd shows them).
    let mut info = [0u8; 12];
    info[0..4].copy_from_slice(&(pid as u32).to_le_bytes());
    let link = bpf::link_with(prog, Some(&info), "the task file iterator")?;
    // (One read: 32 bytes a wanted socket fit in its buffer; a task file iteration
    // resumes by descriptor number anyway.)
    let (out, _resumed) = bpf::iterate(&link)?;
    if out.len() % RECORD != 0 {
        return Err(SysError::Other(format!(
            "the socket error reader wrote {} bytes, not whole records",
            out.len()
        )));
    }
    Ok(out
        .chunks_exact(RECORD)
        .filter_map(Record::parse)
        .map(|r| (r.ino, r))
        .collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A layout for the programs' tests (any offsets do).
    pub(in crate::sys) fn test_layout() -> Layout {
        Layout {
            ctx_file: 24,
            ctx_meta: 0,
            meta_seq: 0,
            file_inode: 32,
            file_private: 40,
            inode_ino: 64,
            socket_state: 0,
            socket_sk: 24,
            sk_err: 100,
            sk_err_soft: 104,
            sk_flags: 200,
            sk_state: 18,
            sk_shutdown: 300,
        }
    }

    /// Program `p` ends by exit, and its `checks` NULL checks land on its final
    /// `r0 = 0; exit`.
    pub(in crate::sys) fn assert_nulls_go_to_end(p: &[Insn], checks: usize) {
        assert_eq!(p.last().map(|i| i.code), Some(0x95));
        let mut seen = 0;
        for (n, i) in p.iter().enumerate() {
            if i.code == 0x15 {
                seen += 1;
                assert_eq!(n as i64 + 1 + i64::from(i.off), p.len() as i64 - 2);
            }
        }
        assert_eq!(seen, checks);
    }

    /// Every NULL check of the program lands on its final `r0 = 0; exit`.
    #[test]
    fn the_programs_null_checks_go_to_its_end() {
        assert_nulls_go_to_end(&program(&test_layout(), 3), 5);
    }

    /// Where this kernel has it: a TCP socket reset by its peer shows ECONNRESET to the
    /// reader, and still to SO_ERROR after it.
    #[test]
    fn the_reader_sees_a_reset_without_clearing_it() {
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (a, _) = l.accept().expect("accept");
        rustix::net::sockopt::set_socket_linger(&a, Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(a);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", c.as_raw_fd()))
            .expect("stat")
            .ino();
        let got = match read(std::process::id() as i32, &[ino]) {
            Ok(g) => g,
            // (A kernel with BTF has what the reader needs, 6.1 and later.)
            Err(why) if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() => {
                panic!("the BPF socket error reader: {why}")
            }
            Err(why) => {
                eprintln!("no BPF socket error reader here: {why}");
                return;
            }
        };
        let r = got.get(&ino).copied().expect("the socket's record");
        assert_eq!(got.len(), 1, "only the socket asked about");
        assert_eq!((r.err, r.err_soft, r.state), (libc::ECONNRESET, 0, 7));
        assert_eq!(r.shutdown, 3);
        assert_eq!(r.sock_state, SS_CONNECTED);
        assert_eq!(r.flags & SOCK_DONE, 0);
        assert_eq!(
            c.take_error()
                .expect("SO_ERROR")
                .and_then(|e| e.raw_os_error()),
            Some(libc::ECONNRESET),
            "the error is still there"
        );
    }
}
