//! A BPF reader of kernel memory no system call shows without changing it: the queues
//! of unix sockets (the messages waiting on a connection no one accepted yet, and the
//! boundaries of the messages on a stream socket), read while the tree is frozen.
//!
//! Two tiny BPF programs, assembled here at run time (no compiler on the user's
//! machine), attach to the kernel's unix socket iterator (`bpf_iter_unix`, a
//! BPF_PROG_TYPE_TRACING program with BPF_TRACE_ITER, kernel 5.17 and later with BTF):
//!
//! * the *list* program writes, for each unix socket of the network namespace the
//!   iterator is made in whose inode number is in its hash map of wanted inodes, that
//!   number and the address of its `struct sock` (see [`SockReader::sockets`] for why
//!   it filters);
//! * the *read* program copies `len` bytes at kernel address `addr` (both given in a
//!   one-entry array map) with `bpf_probe_read_kernel` into the map's value and writes
//!   them to the iterator's output, once per iteration (the map's `done` word).
//!
//! Everything else happens here, in Rust: the offsets of the kernel's structures come
//! from its BTF (`sys::btf`), and [`SockReader`] walks a socket's receive queue
//! (`sk_buff_head`), each buffer's length, linear data and `UNIXCB` (sender's pid and
//! credentials, descriptors in flight), and for a listener each waiting connection's
//! socket and its own queue. Nothing is consumed or changed: the kernel only copies.
//!
//! The verifier accepts both programs on 6.18: the list program loads through the
//! iterator's BTF pointers (the loads become fault-safe reads) after a NULL check,
//! and spills the socket's pointer to the stack for `bpf_seq_write` (allowed for a
//! process with CAP_PERFMON, which only root running ckpt has); the read program's
//! length is bounded by a compare before the helpers that take it.

use super::btf::{self, Btf};
use super::{Result, SysError};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// ---- the assembler ----

/// One eBPF instruction (include/uapi/linux/bpf.h `struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Its 8 bytes as the kernel reads them (little-endian).
    pub fn encode(&self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0xf) | (self.src << 4),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }
}

/// Registers: r0 return value, r1-r5 arguments, r6-r9 kept across calls, r10 frame.
pub mod reg {
    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R6: u8 = 6;
    pub const R7: u8 = 7;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
    pub const R10: u8 = 10;
}

/// Instruction builders (opcodes from include/uapi/linux/bpf_common.h and bpf.h).
pub mod asm {
    use super::Insn;

    const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }
    /// dst = src (64 bits).
    pub const fn mov(dst: u8, src: u8) -> Insn {
        i(0xbf, dst, src, 0, 0)
    }
    /// dst = imm (64 bits, sign-extended).
    pub const fn mov_imm(dst: u8, imm: i32) -> Insn {
        i(0xb7, dst, 0, 0, imm)
    }
    /// dst += imm (64 bits).
    pub const fn add_imm(dst: u8, imm: i32) -> Insn {
        i(0x07, dst, 0, 0, imm)
    }
    /// dst = *(u64 *)(src + off).
    pub const fn ldx64(dst: u8, src: u8, off: i16) -> Insn {
        i(0x79, dst, src, off, 0)
    }
    /// dst = *(u32 *)(src + off).
    pub const fn ldx32(dst: u8, src: u8, off: i16) -> Insn {
        i(0x61, dst, src, off, 0)
    }
    /// *(u64 *)(dst + off) = src.
    pub const fn stx64(dst: u8, off: i16, src: u8) -> Insn {
        i(0x7b, dst, src, off, 0)
    }
    /// dst = *(u8 *)(src + off).
    pub const fn ldx8(dst: u8, src: u8, off: i16) -> Insn {
        i(0x71, dst, src, off, 0)
    }
    /// *(u32 *)(dst + off) = src.
    pub const fn stx32(dst: u8, off: i16, src: u8) -> Insn {
        i(0x63, dst, src, off, 0)
    }
    /// *(u8 *)(dst + off) = src.
    pub const fn stx8(dst: u8, off: i16, src: u8) -> Insn {
        i(0x73, dst, src, off, 0)
    }
    /// *(u32 *)(dst + off) = imm.
    pub const fn st32_imm(dst: u8, off: i16, imm: i32) -> Insn {
        i(0x62, dst, 0, off, imm)
    }
    /// *(u64 *)(dst + off) = imm.
    pub const fn st64_imm(dst: u8, off: i16, imm: i32) -> Insn {
        i(0x7a, dst, 0, off, imm)
    }
    /// if dst == imm goto +off.
    pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        i(0x15, dst, 0, off, imm)
    }
    /// if dst != imm goto +off.
    pub const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        i(0x55, dst, 0, off, imm)
    }
    /// if dst > imm (unsigned) goto +off.
    pub const fn jgt_imm(dst: u8, imm: i32, off: i16) -> Insn {
        i(0x25, dst, 0, off, imm)
    }
    /// Call helper `id`.
    pub const fn call(id: i32) -> Insn {
        i(0x85, 0, 0, 0, id)
    }
    pub const fn exit() -> Insn {
        i(0x95, 0, 0, 0, 0)
    }
    /// dst = the map of descriptor `fd` (two instruction slots, BPF_PSEUDO_MAP_FD).
    pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [i(0x18, dst, 1, 0, fd), i(0, 0, 0, 0, 0)]
    }
}

/// Helper function IDs (include/uapi/linux/bpf.h `__BPF_FUNC_MAPPER`).
pub(super) const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_PROBE_READ_KERNEL: i32 = 113;
pub(super) const HELPER_SEQ_WRITE: i32 = 127;
pub(super) const HELPER_SOCK_FROM_FILE: i32 = 162;

/// The most bytes one run of the read program copies.
pub const READ_MAX: usize = 4096;
/// The read map's value: addr u64 @0, len u32 @8, done u32 @12, result i64 @16, bytes @24.
const VALUE_SIZE: usize = 24 + READ_MAX;

/// Where the iterator's context and meta keep what the programs load.
#[derive(Debug, Clone, Copy)]
pub struct IterLayout {
    /// `struct bpf_iter__unix`: meta and unix_sk.
    pub ctx_meta: i16,
    pub ctx_sk: i16,
    /// `struct bpf_iter_meta`: seq.
    pub meta_seq: i16,
    /// From a `struct unix_sock` to its inode number: sk.sk_socket, socket.file,
    /// file.f_inode, inode.i_ino.
    pub sk_socket: i16,
    pub socket_file: i16,
    pub file_inode: i16,
    pub inode_ino: i16,
}

/// The list program (hash map `want_fd` of wanted inode numbers): for each socket
/// whose inode number is in the map, 16 bytes: that number and the address of its
/// `struct unix_sock`. Sockets without a file, or not wanted, write nothing.
pub fn list_program(l: &IterLayout, want_fd: i32) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    let mut p = vec![
        ldx64(R6, R1, l.ctx_meta),
        ldx64(R7, R1, l.ctx_sk),
        // The last call of an iteration has no socket.
        jeq_imm(R7, 0, 21),
        ldx64(R8, R6, l.meta_seq),
        stx64(R10, -8, R7),
        // sk->sk_socket->file->f_inode->i_ino, each load checked for NULL.
        ldx64(R1, R7, l.sk_socket),
        jeq_imm(R1, 0, 17),
        ldx64(R1, R1, l.socket_file),
        jeq_imm(R1, 0, 15),
        ldx64(R1, R1, l.file_inode),
        jeq_imm(R1, 0, 13),
        ldx64(R1, R1, l.inode_ino),
        stx64(R10, -16, R1),
    ];
    p.extend(ld_map_fd(R1, want_fd));
    p.extend([
        mov(R2, R10),
        add_imm(R2, -16),
        call(HELPER_MAP_LOOKUP_ELEM),
        jeq_imm(R0, 0, 5),
        mov(R1, R8),
        mov(R2, R10),
        add_imm(R2, -16),
        mov_imm(R3, 16),
        call(HELPER_SEQ_WRITE),
        mov_imm(R0, 0),
        exit(),
    ]);
    p
}

/// The read program (map `map_fd`): the first call of an iteration copies the bytes
/// the map names and writes the helper's result (8 bytes) and the bytes.
pub fn read_program(l: &IterLayout, map_fd: i32) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    let mut p = vec![mov(R6, R1)];
    p.extend(ld_map_fd(R1, map_fd));
    p.extend([
        mov(R2, R10),
        add_imm(R2, -4),
        st32_imm(R10, -4, 0),
        call(HELPER_MAP_LOOKUP_ELEM),
        jeq_imm(R0, 0, 20),
        mov(R7, R0),
        ldx32(R1, R7, 12),
        jne_imm(R1, 0, 17),
        st32_imm(R7, 12, 1),
        ldx64(R6, R6, l.ctx_meta),
        ldx64(R8, R6, l.meta_seq),
        ldx32(R2, R7, 8),
        jgt_imm(R2, READ_MAX as i32, 12),
        mov(R1, R7),
        add_imm(R1, 24),
        ldx64(R3, R7, 0),
        call(HELPER_PROBE_READ_KERNEL),
        stx64(R7, 16, R0),
        ldx32(R3, R7, 8),
        jgt_imm(R3, READ_MAX as i32, 5),
        add_imm(R3, 8),
        mov(R1, R8),
        mov(R2, R7),
        add_imm(R2, 16),
        call(HELPER_SEQ_WRITE),
        mov_imm(R0, 0),
        exit(),
    ]);
    p
}

// ---- the bpf system call ----

const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_MAP_DELETE_ELEM: libc::c_long = 3;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_LINK_CREATE: libc::c_long = 28;
const CMD_ITER_CREATE: libc::c_long = 33;
pub(super) const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_ARRAY: u32 = 2;
const PROG_TYPE_TRACING: u32 = 26;
const ATTACH_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, as bytes written at the fields' offsets (the kernel takes the
/// size given and wants the rest zero).
pub(super) struct Attr([u8; 128]);

impl Attr {
    pub(super) fn new() -> Self {
        Attr([0; 128])
    }
    pub(super) fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
}

/// bpf(cmd, attr): the descriptor or value it returns.
pub(super) fn bpf(cmd: libc::c_long, attr: &mut Attr, what: &str) -> Result<i64> {
    // SAFETY: `attr` is a live 128-byte buffer laid out as the command's part of
    // `union bpf_attr` (the size passed); every pointer inside it points at memory the
    // caller keeps alive for the call (instructions, license, log, key, value).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(SysError::os(what.to_string()));
    }
    Ok(r)
}

/// A descriptor the bpf system call returned.
pub(super) fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a successful bpf() that makes an object returns a new descriptor that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Load tracing program `insns` for the iterator function `btf_id`; on refusal, the
/// verifier's last words in the error. (Also `sys::mmseq`'s loader.)
pub(super) fn load(insns: &[Insn], btf_id: u32, name: &str) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = b"GPL\0";
    let mut pname = [0u8; 16];
    for (d, s) in pname.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let attr = |log: &mut Vec<u8>| {
        let mut a = Attr::new()
            .u32(0, PROG_TYPE_TRACING)
            .u32(4, insns.len() as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(68, ATTACH_TRACE_ITER)
            .u32(108, btf_id);
        if !log.is_empty() {
            a = a
                .u32(24, 1)
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64);
        }
        a.0[48..64].copy_from_slice(&pname);
        a
    };
    let mut nolog = Vec::new();
    match bpf(CMD_PROG_LOAD, &mut attr(&mut nolog), "") {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            let mut log = vec![0u8; 1 << 16];
            let r = bpf(CMD_PROG_LOAD, &mut attr(&mut log), "");
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|&c| c == 0).unwrap_or(0)])
                    .into_owned();
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            match r {
                Ok(fd) => Ok(owned(fd)),
                Err(_) => Err(SysError::Other(format!(
                    "the kernel refused BPF program {name} ({}): {}",
                    first.errno().map(super::errno_name).unwrap_or_default(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ))),
            }
        }
    }
}

/// A link of program `prog` to its iterator.
pub(super) fn link(prog: &OwnedFd) -> Result<OwnedFd> {
    link_with(prog, None, "a BPF iterator")
}

/// A link of program `prog` to its iterator (`what`, for errors), with the iterator's
/// parameters `info` (`union bpf_iter_link_info`, e.g. the task of a task iterator).
pub(super) fn link_with(prog: &OwnedFd, info: Option<&[u8]>, what: &str) -> Result<OwnedFd> {
    let mut a = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(8, ATTACH_TRACE_ITER);
    if let Some(i) = info {
        // link_create.iter_info (a pointer) and iter_info_len.
        a = a.u64(16, i.as_ptr() as u64).u32(24, i.len() as u32);
    }
    bpf(
        CMD_LINK_CREATE,
        &mut a,
        &format!("bpf(BPF_LINK_CREATE) of {what}"),
    )
    .map(owned)
}

/// A map of type `kind` with `key`- and `value`-byte entries, at most `max` of them.
pub(super) fn map_create(kind: u32, key: u32, value: u32, max: u32) -> Result<OwnedFd> {
    let mut a = Attr::new()
        .u32(0, kind)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max);
    bpf(CMD_MAP_CREATE, &mut a, "bpf(BPF_MAP_CREATE)").map(owned)
}

/// Set entry `key` of map `map` to `value`.
pub(super) fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut a = Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(CMD_MAP_UPDATE_ELEM, &mut a, "bpf(BPF_MAP_UPDATE_ELEM)").map(|_| ())
}

/// The largest output one read of an iterator gives: the kernel's seq_file buffer is 8
/// pages (`bpf_seq_read`); a read stops there, or where the caller's buffer is full.
const ITER_READ: usize = 8 << 12;

/// One run of the iterator of `link`: all it wrote, and whether the kernel had to
/// resume the iteration in a later read (it stops a read when its buffer or the
/// caller's is full). The unix socket iterator visits the sockets of the network
/// namespace of the calling thread.
///
/// A resumed unix iteration may skip sockets (see [`SockReader::sockets`]), so the
/// buffer given to each read is larger than the kernel's own (an output that fits
/// comes whole in the first read, with no resume), and the caller learns whether it
/// was resumed.
pub(super) fn iterate(link: &OwnedFd) -> Result<(Vec<u8>, bool)> {
    let mut a = Attr::new().u32(0, link.as_raw_fd() as u32);
    let mut f = std::fs::File::from(owned(bpf(CMD_ITER_CREATE, &mut a, "bpf(BPF_ITER_CREATE)")?));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2 * ITER_READ];
    let mut reads = 0;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SysError::io("read a BPF iterator", e)),
        };
        if n == 0 {
            return Ok((out, reads > 1));
        }
        reads += 1;
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
}

// ---- the socket reader ----

/// Offsets of the kernel structures walked, from BTF.
#[derive(Debug, Clone, Copy)]
struct Layout {
    sk_receive_queue: u64,
    head_next: u64,
    head_qlen: u64,
    skb_next: u64,
    skb_sk: u64,
    skb_len: u64,
    skb_data_len: u64,
    skb_data: u64,
    skb_cb: u64,
    skb_size: u64,
    cb_pid: u64,
    cb_uid: u64,
    cb_gid: u64,
    cb_fp: u64,
    cb_consumed: u64,
    fp_count: u64,
    unix_peer: u64,
    pid_level: u64,
    pid_numbers: u64,
    upid_size: u64,
    upid_nr: u64,
}

impl Layout {
    fn from_btf(b: &Btf) -> Result<Layout> {
        let o = |s: &str, m: &str| b.offset_of(s, m).map(u64::from);
        Ok(Layout {
            sk_receive_queue: o("sock", "sk_receive_queue")?,
            head_next: o("sk_buff_head", "next")?,
            head_qlen: o("sk_buff_head", "qlen")?,
            skb_next: o("sk_buff", "next")?,
            skb_sk: o("sk_buff", "sk")?,
            skb_len: o("sk_buff", "len")?,
            skb_data_len: o("sk_buff", "data_len")?,
            skb_data: o("sk_buff", "data")?,
            skb_cb: o("sk_buff", "cb")?,
            skb_size: u64::from(b.size_of("sk_buff")?),
            cb_pid: o("unix_skb_parms", "pid")?,
            cb_uid: o("unix_skb_parms", "uid")?,
            cb_gid: o("unix_skb_parms", "gid")?,
            cb_fp: o("unix_skb_parms", "fp")?,
            cb_consumed: o("unix_skb_parms", "consumed")?,
            fp_count: o("scm_fp_list", "count")?,
            unix_peer: o("unix_sock", "peer")?,
            pid_level: o("pid", "level")?,
            pid_numbers: o("pid", "numbers")?,
            upid_size: u64::from(b.size_of("upid")?),
            upid_nr: o("upid", "nr")?,
        })
    }
}

/// One message (socket buffer) queued on a unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedSkb {
    pub data: Vec<u8>,
    /// The sender's process ID as ckpt's PID namespace numbers it (0: not seen there
    /// or none), user and group IDs.
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// How many descriptors are in flight with it (SCM_RIGHTS).
    pub fds: u32,
    /// How many of its bytes a stream reader already took (`UNIXCB(skb).consumed`).
    pub consumed: u32,
}

/// A connection waiting to be accepted: the client's socket inode and what the client
/// sent (queued on the listener's side, which only accept would reach).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    pub client_ino: u64,
    pub queue: Vec<QueuedSkb>,
}

/// Why the queues cannot be read here (no BPF iterators or BTF, not allowed, a
/// structure the reader does not know), or a queue it does not read (data kept in
/// pages, a message too long).
pub type Why = String;

/// The most sockets one run of the list program looks for (its map's size): their
/// output, 16 bytes each, fits the kernel's iterator buffer, so one read takes it all.
pub const WANT_MAX: usize = 1024;
/// How many times the list program runs at most for one listing.
const LIST_TRIES: usize = 8;

/// The most messages one queue may hold for the reader.
pub const MAX_SKBS: usize = 4096;

/// The loaded programs and their map.
pub struct SockReader {
    layout: Layout,
    map: OwnedFd,
    /// The list program's hash map of wanted inode numbers (filled for one listing).
    want: OwnedFd,
    read_link: OwnedFd,
    list_link: OwnedFd,
    /// ckpt's PID namespace level (the sender's ID is read at that level).
    pid_level: u64,
}

impl SockReader {
    /// Load the programs (needs root, BTF and the unix socket iterator, 5.17+).
    pub fn new() -> std::result::Result<SockReader, Why> {
        let b = Btf::vmlinux().map_err(|e| format!("the kernel's BTF cannot be read ({e})"))?;
        let func = b.find(btf::KIND_FUNC, "bpf_iter_unix").map_err(|_| {
            "the kernel has no BPF unix socket iterator (bpf_iter_unix, 5.17 and later)".to_string()
        })?;
        let layout = Layout::from_btf(&b).map_err(|e| e.to_string())?;
        let off = |s: &str, m: &str| -> std::result::Result<i16, Why> {
            let o = b.offset_of(s, m).map_err(|e| e.to_string())?;
            i16::try_from(o).map_err(|_| format!("{s}.{m} is too far for a BPF load"))
        };
        let il = IterLayout {
            ctx_meta: off("bpf_iter__unix", "meta")?,
            ctx_sk: off("bpf_iter__unix", "unix_sk")?,
            meta_seq: off("bpf_iter_meta", "seq")?,
            sk_socket: off("sock", "sk_socket")?,
            socket_file: off("socket", "file")?,
            file_inode: off("file", "f_inode")?,
            inode_ino: off("inode", "i_ino")?,
        };
        let mut a = Attr::new()
            .u32(0, MAP_TYPE_ARRAY)
            .u32(4, 4)
            .u32(8, VALUE_SIZE as u32)
            .u32(12, 1);
        let map =
            owned(bpf(CMD_MAP_CREATE, &mut a, "bpf(BPF_MAP_CREATE)").map_err(|e| e.to_string())?);
        let mut a = Attr::new()
            .u32(0, MAP_TYPE_HASH)
            .u32(4, 8)
            .u32(8, 4)
            .u32(12, WANT_MAX as u32);
        let want =
            owned(bpf(CMD_MAP_CREATE, &mut a, "bpf(BPF_MAP_CREATE)").map_err(|e| e.to_string())?);
        let list = load(&list_program(&il, want.as_raw_fd()), func, "ckpt_unix_list")
            .map_err(|e| e.to_string())?;
        let read = load(&read_program(&il, map.as_raw_fd()), func, "ckpt_kread")
            .map_err(|e| e.to_string())?;
        let list_link = link(&list).map_err(|e| e.to_string())?;
        let read_link = link(&read).map_err(|e| e.to_string())?;
        let pid_level = own_pid_level().map_err(|e| e.to_string())?;
        Ok(SockReader {
            layout,
            map,
            want,
            read_link,
            list_link,
            pid_level,
        })
    }

    /// The unix sockets `want` (inode numbers) of the network namespace of process `pid`
    /// (`None`: ckpt's): inode number -> address of the `struct unix_sock`, for those
    /// the iterator lists (a socket not there is not in that namespace, or is gone).
    ///
    /// Why the list program filters (root cause of sockets left out, seen on 6.18): the
    /// unix iterator takes one hash bucket at a time and, when a read stops in the middle
    /// of a bucket (its buffer or the caller's full), the next read resumes at the
    /// *next* bucket (`bpf_iter_unix_batch` finds the bucket marked done; the TCP
    /// iterator clears that mark when it stops, the unix one does not), so the rest of
    /// that bucket is never listed. Listing every socket of a host (16 bytes each)
    /// through reads that started at 32 bytes crossed such a point in every run. Now the
    /// program writes only the wanted sockets (at most [`WANT_MAX`] per run, 16 KiB, less
    /// than the kernel's 32 KiB buffer) and each read's buffer is larger than the
    /// kernel's, so the whole listing comes in one read and nothing is resumed. A run
    /// that was resumed anyway, or that misses a wanted socket (a bucket that grew past
    /// what the kernel could batch), is run again, a few times at most.
    pub fn sockets(&self, pid: Option<i32>, want: &[u64]) -> Result<BTreeMap<u64, u64>> {
        let mut m = BTreeMap::new();
        for chunk in want.chunks(WANT_MAX) {
            self.set_wanted(chunk, CMD_MAP_UPDATE_ELEM)?;
            let r = self.list_wanted(pid, chunk, &mut m);
            let cleared = self.set_wanted(chunk, CMD_MAP_DELETE_ELEM);
            r?;
            cleared?;
        }
        Ok(m)
    }

    /// Add (`CMD_MAP_UPDATE_ELEM`) or remove (`CMD_MAP_DELETE_ELEM`) inode numbers
    /// `inos` in the list program's map.
    fn set_wanted(&self, inos: &[u64], cmd: libc::c_long) -> Result<()> {
        let one = 1u32;
        for ino in inos {
            let mut a = Attr::new()
                .u32(0, self.want.as_raw_fd() as u32)
                .u64(8, ino as *const u64 as u64);
            if cmd == CMD_MAP_UPDATE_ELEM {
                a = a.u64(16, &one as *const u32 as u64);
            }
            match bpf(cmd, &mut a, "bpf() on the map of wanted unix sockets") {
                Ok(_) => {}
                // A key given twice is deleted once.
                Err(e) if cmd == CMD_MAP_DELETE_ELEM && e.errno() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Run the list program (its map holding `want`) until a run that was not resumed
    /// lists every wanted socket, [`LIST_TRIES`] runs at most; what the runs listed
    /// goes into `m`.
    fn list_wanted(
        &self,
        pid: Option<i32>,
        want: &[u64],
        m: &mut BTreeMap<u64, u64>,
    ) -> Result<()> {
        for _ in 0..LIST_TRIES {
            let (out, resumed) = match pid {
                None => iterate(&self.list_link)?,
                Some(p) => in_netns_of(p, || iterate(&self.list_link))?,
            };
            for r in out.chunks_exact(16) {
                let ino = u64::from_le_bytes(r[0..8].try_into().unwrap_or_default());
                let addr = u64::from_le_bytes(r[8..16].try_into().unwrap_or_default());
                if ino != 0 {
                    m.insert(ino, addr);
                }
            }
            if !resumed && want.iter().all(|w| m.contains_key(w)) {
                break;
            }
        }
        Ok(())
    }

    /// `len` bytes of kernel memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(READ_MAX);
            let at = addr.wrapping_add(out.len() as u64);
            let mut value = vec![0u8; VALUE_SIZE];
            value[0..8].copy_from_slice(&at.to_le_bytes());
            value[8..12].copy_from_slice(&(n as u32).to_le_bytes());
            let key = 0u32;
            let mut a = Attr::new()
                .u32(0, self.map.as_raw_fd() as u32)
                .u64(8, &key as *const u32 as u64)
                .u64(16, value.as_ptr() as u64);
            bpf(CMD_MAP_UPDATE_ELEM, &mut a, "bpf(BPF_MAP_UPDATE_ELEM)")?;
            let (got, _) = iterate(&self.read_link)?;
            let ret = got
                .get(0..8)
                .map(|r| i64::from_le_bytes(r.try_into().unwrap_or_default()))
                .ok_or_else(|| SysError::Other("the BPF reader wrote nothing".into()))?;
            if ret != 0 {
                return Err(SysError::Other(format!(
                    "the kernel memory at {at:#x} cannot be read (error {ret})"
                )));
            }
            let bytes = got
                .get(8..8 + n)
                .ok_or_else(|| SysError::Other("the BPF reader wrote too little".into()))?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    fn u64_at(&self, addr: u64) -> Result<u64> {
        let b = self.read(addr, 8)?;
        Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or_default()))
    }

    /// The messages queued on the receive queue of socket `sk` (a `struct sock`
    /// address), in order, without consuming them; `Err(Ok(why))` for a queue the
    /// reader does not read.
    pub fn queue(&self, sk: u64) -> std::result::Result<Vec<QueuedSkb>, QueueError> {
        let l = self.layout;
        let head = sk + l.sk_receive_queue;
        let mut out = Vec::new();
        for skb in self.skbs(head)? {
            let raw = self.read(skb, l.skb_size as usize)?;
            let field = |at: u64, n: usize| -> u64 {
                let mut b = [0u8; 8];
                if let Some(s) = raw.get(at as usize..at as usize + n) {
                    b[..n].copy_from_slice(s);
                }
                u64::from_le_bytes(b)
            };
            let len = field(l.skb_len, 4) as usize;
            let data_len = field(l.skb_data_len, 4);
            if data_len != 0 {
                return Err(QueueError::Unread(format!(
                    "a message of {len} bytes kept in memory pages, which ckpt does not \
                     read yet"
                )));
            }
            let data = if len == 0 {
                Vec::new()
            } else {
                self.read(field(l.skb_data, 8), len)?
            };
            let cb = l.skb_cb;
            let pid_ptr = field(cb + l.cb_pid, 8);
            let fp = field(cb + l.cb_fp, 8);
            let fds = if fp == 0 {
                0
            } else {
                let c = self.read(fp + l.fp_count, 2)?;
                u32::from(u16::from_le_bytes([c[0], c[1]]))
            };
            out.push(QueuedSkb {
                data,
                pid: self.pid_nr(pid_ptr)?,
                uid: field(cb + l.cb_uid, 4) as u32,
                gid: field(cb + l.cb_gid, 4) as u32,
                fds,
                consumed: field(cb + l.cb_consumed, 4) as u32,
            });
        }
        Ok(out)
    }

    /// The buffers of queue `head` (a `struct sk_buff_head` address), in order.
    pub fn skbs(&self, head: u64) -> std::result::Result<Vec<u64>, QueueError> {
        let l = self.layout;
        let qlen = self.read(head + l.head_qlen, 4)?;
        let qlen = u32::from_le_bytes(qlen[..4].try_into().unwrap_or_default()) as usize;
        if qlen > MAX_SKBS {
            return Err(QueueError::Unread(format!(
                "{qlen} messages queued (ckpt reads at most {MAX_SKBS})"
            )));
        }
        let mut out = Vec::with_capacity(qlen);
        let mut at = self.u64_at(head + l.head_next)?;
        while at != head {
            if out.len() >= qlen {
                return Err(QueueError::Unread(
                    "a queue that changed while it was read".into(),
                ));
            }
            out.push(at);
            at = self.u64_at(at + l.skb_next)?;
        }
        Ok(out)
    }

    /// The connections waiting on listener `sk` (a `struct sock` address), in the order
    /// accept would take them: each client's socket (`inos`: address -> inode, from
    /// [`SockReader::sockets`]) and what it sent.
    pub fn waiting(
        &self,
        sk: u64,
        inos: &BTreeMap<u64, u64>,
    ) -> std::result::Result<Vec<Waiting>, QueueError> {
        let l = self.layout;
        let mut out = Vec::new();
        for skb in self.skbs(sk + l.sk_receive_queue)? {
            // Each buffer stands for one connection: its socket is the listener's side.
            let embryo = self.u64_at(skb + l.skb_sk)?;
            let client = self.u64_at(embryo + l.unix_peer)?;
            let client_ino = inos.get(&client).copied().unwrap_or(0);
            out.push(Waiting {
                client_ino,
                queue: self.queue(embryo)?,
            });
        }
        Ok(out)
    }

    /// The number ckpt's PID namespace gives `struct pid` at `p` (0 if none there).
    fn pid_nr(&self, p: u64) -> Result<i32> {
        let l = self.layout;
        if p == 0 {
            return Ok(0);
        }
        let lv = self.read(p + l.pid_level, 4)?;
        let level = u64::from(u32::from_le_bytes(lv[..4].try_into().unwrap_or_default()));
        if level < self.pid_level {
            return Ok(0);
        }
        let at = p + l.pid_numbers + self.pid_level * l.upid_size + l.upid_nr;
        let nr = self.read(at, 4)?;
        Ok(i32::from_le_bytes(nr[..4].try_into().unwrap_or_default()))
    }
}

/// A queue not read: a failure of the reader, or a queue it does not read (why).
#[derive(Debug)]
pub enum QueueError {
    Sys(SysError),
    Unread(Why),
}

impl From<SysError> for QueueError {
    fn from(e: SysError) -> Self {
        QueueError::Sys(e)
    }
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::Sys(e) => write!(f, "{e}"),
            QueueError::Unread(w) => write!(f, "{w}"),
        }
    }
}

/// ckpt's PID namespace level (the number of IDs in /proc/self/status's NSpid, less one).
pub(super) fn own_pid_level() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SysError::io("read /proc/self/status", e))?;
    let n = s
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().count())
        .unwrap_or(1);
    Ok(n.saturating_sub(1) as u64)
}

/// Run `f` in a thread that entered the network namespace of process `pid` (the
/// iterator lists the sockets of the namespace it is made in); in the calling thread
/// if that is ckpt's own.
fn in_netns_of<T: Send>(pid: i32, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    use std::os::unix::fs::MetadataExt;
    let theirs = format!("/proc/{pid}/ns/net");
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino());
    let t = ino(&theirs).map_err(|e| SysError::io(format!("stat {theirs}"), e))?;
    if ino("/proc/thread-self/ns/net").ok() == Some(t) {
        return f();
    }
    let ns = std::fs::File::open(&theirs).map_err(|e| SysError::io(format!("open {theirs}"), e))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns with a network namespace file held open changes only this
            // thread's namespace; the thread ends when `f` returns.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if r < 0 {
                return Err(SysError::os(format!("setns {theirs}")));
            }
            f()
        })
        .join()
        .map_err(|_| SysError::Other("the namespace thread panicked".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        assert_eq!(asm::mov(1, 10).encode(), [0xbf, 0xa1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            asm::add_imm(2, -16).encode(),
            [0x07, 0x02, 0, 0, 0xf0, 0xff, 0xff, 0xff]
        );
        assert_eq!(asm::ldx64(6, 1, 8).encode(), [0x79, 0x16, 8, 0, 0, 0, 0, 0]);
        assert_eq!(
            asm::stx64(10, -8, 7).encode(),
            [0x7b, 0x7a, 0xf8, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(asm::call(127).encode(), [0x85, 0, 0, 0, 127, 0, 0, 0]);
        assert_eq!(asm::exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        let m = asm::ld_map_fd(1, 5);
        assert_eq!(m[0].encode(), [0x18, 0x11, 0, 0, 5, 0, 0, 0]);
        assert_eq!(m[1].encode(), [0; 8]);
    }

    /// Every jump of both programs lands inside the program, and each ends by exit.
    #[test]
    fn the_programs_jumps_land_inside_them() {
        // Both programs end `r0 = 0; exit`, where they go when there is nothing to do.
        let l = IterLayout {
            ctx_meta: 0,
            ctx_sk: 8,
            meta_seq: 0,
            sk_socket: 24,
            socket_file: 16,
            file_inode: 32,
            inode_ino: 64,
        };
        let (list, read) = (list_program(&l, 4), read_program(&l, 3));
        assert_eq!(
            list[3 + list[2].off as usize].code,
            0xb7,
            "no socket: to the end"
        );
        assert_eq!(
            read[8 + read[7].off as usize].code,
            0xb7,
            "no map value: to the end"
        );
        for p in [list, read] {
            assert_eq!(p.last().map(|i| i.code), Some(0x95));
            for (n, i) in p.iter().enumerate() {
                if matches!(i.code, 0x15 | 0x55 | 0x25) {
                    let to = n as i64 + 1 + i64::from(i.off);
                    assert!(to > 0 && (to as usize) < p.len(), "jump at {n} to {to}");
                }
            }
        }
    }

    /// The reader, where it loads: as root, on a kernel with BTF and the unix socket
    /// iterator (`None`, saying why, elsewhere).
    fn loaded() -> Option<SockReader> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        SockReader::new()
            .map_err(|why| eprintln!("no BPF socket reader here: {why}"))
            .ok()
    }

    /// Where this kernel has them: the list names every one of 600 sockets asked for,
    /// in each of 5 runs, and nothing else (before the list filtered, each run of a
    /// listing of the whole host left some of 80 such sockets out).
    #[test]
    fn the_list_names_every_wanted_socket() {
        let Some(r) = loaded() else {
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let mut pairs = Vec::new();
        let mut inos = Vec::new();
        for _ in 0..300 {
            let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            for s in [a.as_raw_fd(), b.as_raw_fd()] {
                let m = std::fs::metadata(format!("/proc/self/fd/{s}")).expect("stat");
                inos.push(m.ino());
            }
            pairs.push((a, b));
        }
        for run in 0..5 {
            let socks = r.sockets(None, &inos).expect("list");
            let missing: Vec<&u64> = inos.iter().filter(|i| !socks.contains_key(i)).collect();
            assert!(missing.is_empty(), "run {run}: not listed: {missing:?}");
            assert_eq!(socks.len(), inos.len(), "run {run}: only the wanted ones");
        }
    }

    /// Where this kernel has them: both programs load, the list shows a socket ckpt
    /// made, and the reader reads its queue without consuming it.
    #[test]
    fn the_reader_sees_a_queued_message_without_taking_it() {
        let Some(r) = loaded() else {
            return;
        };
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // Credentials go with a message when an end shows them.
        rustix::net::sockopt::set_socket_passcred(&b, true).expect("SO_PASSCRED");
        (&a).write_all(b"hello").expect("write");
        (&a).write_all(b"world!").expect("write");
        let ino = |s: &std::os::unix::net::UnixStream| {
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .expect("stat")
                .ino()
        };
        let socks = r.sockets(None, &[ino(&b)]).expect("list");
        assert_eq!(
            socks.len(),
            1,
            "only the wanted socket is listed: {socks:?}"
        );
        let sk = *socks.get(&ino(&b)).expect("the iterator lists the socket");
        let q = r.queue(sk).expect("queue");
        drop(a);
        let datas: Vec<&[u8]> = q.iter().map(|s| &s.data[..]).collect();
        assert_eq!(datas, [&b"hello"[..], &b"world!"[..]]);
        assert_eq!(q[0].pid, std::process::id() as i32);
        let mut buf = [0u8; 16];
        let n = (&b).read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"helloworld!", "the queue is still there");
    }
}
