//! What a checkpoint *is*: plain data, produced by `dump`, encoded by `image`, consumed by
//! `restore`. Nothing here talks to the kernel.
//!
//! Evolution rule: fields are only ever added (with `#[serde(default)]`), never renamed or
//! reused, so that newer tools read older images.

use serde::{Deserialize, Serialize};

use crate::arch::{ArchHeader, ThreadArchState};

/// Descriptive facts about where and when the image was made (optional for restore).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    pub tool_version: String,
    pub created_unix: u64,
    pub hostname: String,
    pub kernel_release: String,
    /// PID of the root of the dumped tree.
    pub root_pid: i32,
    /// The dump host's boot ID (/proc/sys/kernel/random/boot_id): on a host with the same
    /// one, device and inode numbers of files are compared too. Empty in older images.
    #[serde(default)]
    pub boot_id: String,
}

/// The identity of a file as seen at dump time, used to refuse a restore when it changed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct FileId {
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    /// Owner and group (`None` in older images).
    #[serde(default)]
    pub owner: Option<(u32, u32)>,
    /// On a mount outside the process's own mount namespace (a host file a container's
    /// process was given, such as its standard output): `path` is as ckpt's own mount
    /// namespace shows it, and restore looks it up there, not in the tree's.
    #[serde(default)]
    pub outside: bool,
}

/// How the contents of one VMA come back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stack, mmap(MAP_ANONYMOUS|MAP_PRIVATE)).
    Anon,
    /// MAP_SHARED|MAP_ANONYMOUS memory (shmem behind the scenes).
    AnonShared,
    /// A mapping of a file. Private mappings get their written (copy-on-write) pages from
    /// the image on top of the file; shared ones are mapped by reference.
    File { file: FileId },
    /// An attached System V shared memory segment (whole): its key, ID, size and mode
    /// (with SHM_DEST, 0o1000, when it was already removed and lives on while attached).
    /// Its contents are stored once for the image, like `AnonShared`.
    SysvShm {
        key: i32,
        shmid: i32,
        size: u64,
        mode: u32,
    },
    /// A mapping (shared or private) of a memfd: its name and seals, and its contents,
    /// stored in the image as `FILE_DATA` records under `data` (the same `data` as the
    /// descriptors of that memfd, if any are open). Restore creates the memfd once for
    /// the image and maps it; private mappings get their written pages from the image on
    /// top, as for `File`.
    MemfdMap {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        seals: u32,
        data: u64,
    },
    /// A mapping (shared or private) of a regular file deleted while mapped (a
    /// descriptor may or may not still be open): its contents are stored like a
    /// `FdKind::DeletedFile`'s, under `data`, and restore recreates the file once for
    /// the image, maps it and removes it again.
    DeletedMap { file: FileId, data: u64 },
    /// The kernel's vDSO code.
    Vdso,
    /// The vDSO's data pages (`[vvar]`, `[vvar_vclock]`): recreated with the vDSO.
    Vvar,
}

/// One virtual memory area, as in /proc/PID/maps plus smaps VmFlags.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC bits.
    pub prot: u32,
    /// MAP_SHARED (true) or MAP_PRIVATE (false).
    pub shared: bool,
    /// File offset in bytes (for file mappings).
    pub offset: u64,
    pub kind: VmaKind,
    /// The name column of /proc/PID/maps, raw bytes (display only).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Two-letter smaps VmFlags (e.g. "gd", "lo", "dd", "hg").
    pub vmflags: Vec<String>,
    /// Pages that were resident or swapped (private ones) at dump: their contents are
    /// in the image, except all-zero anonymous pages, which are left out.
    pub pages_present: u64,
    /// Page-aligned [start, end) ranges that carry MADV_GUARD_INSTALL guard markers.
    #[serde(default)]
    pub guard_ranges: Vec<(u64, u64)>,
    /// For `AnonShared`: identity of the shared memory object (its inode number at dump),
    /// the same in every process of the image that shares it.
    #[serde(default)]
    pub shmem_id: u64,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|x| x == f)
    }
}

/// Memory-descriptor fields restored with PR_SET_MM_MAP.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MmInfo {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Saved auxiliary vector (pairs of words, ending with AT_NULL).
    pub auxv: Vec<u64>,
    pub exe: Option<FileId>,
}

/// Credentials (from /proc/PID/status; `securebits` from `PR_GET_SECUREBITS`). Every
/// thread of the process has these same credentials (dump refuses a process whose threads
/// differ).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    /// real, effective, saved, filesystem
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    /// The securebits (`SECBIT_NOROOT`, `SECBIT_KEEP_CAPS`, ... and their locks). Images
    /// made before they were recorded read as 0.
    #[serde(default)]
    pub securebits: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

/// One signal's disposition, as the kernel's `struct k_sigaction` holds it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigAction {
    pub signo: u32,
    /// SIG_DFL (0), SIG_IGN (1) or the handler address.
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// A queued signal with its full siginfo (128 bytes, as PTRACE_PEEKSIGINFO returns it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PendingSignal {
    pub signo: u32,
    #[serde(with = "serde_bytes")]
    pub siginfo: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SigAltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub flags: u32,
    pub signature: u32,
}

/// Per-thread state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Thread {
    pub tid: i32,
    /// Registers, FPU/vector state and debug registers, in the arch layer's terms.
    pub arch: ThreadArchState,
    pub sigmask: u64,
    pub sigaltstack: SigAltStack,
    pub rseq: Option<Rseq>,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub clear_child_tid: u64,
    pub pending: Vec<PendingSignal>,
    /// sched_getscheduler / sched_getparam / nice value of the thread.
    #[serde(default)]
    pub sched_policy: i32,
    #[serde(default)]
    pub sched_priority: i32,
    #[serde(default)]
    pub nice: i32,
    /// The thread's own name (/proc/PID/task/TID/comm, PR_SET_NAME); empty in images
    /// made before it was recorded (the thread then gets the process's name).
    #[serde(default, with = "serde_bytes")]
    pub comm: Vec<u8>,
    /// The thread's own credentials when they differ from the process's (`Process::creds`,
    /// the first thread's): threads that changed theirs with raw system calls. `None`:
    /// the same as the process's (also what older images meant).
    #[serde(default)]
    pub creds: Option<Creds>,
    /// The thread's seccomp filters (mode 2), oldest first, as the kernel gives them
    /// back; empty without filters (also what older images meant: they had none).
    /// Threads whose chains start with the same filters shared them (TSYNC, or created
    /// after they were installed).
    #[serde(default)]
    pub seccomp_filters: Vec<SeccompFilter>,
    /// The thread's IDs in the PID namespaces nested inside the tree's (see
    /// `Process::nspid`), outermost first; empty for a thread of a process in the tree's
    /// own PID namespace (also what older images meant).
    #[serde(default)]
    pub nstid: Vec<i32>,
}

/// One classic BPF seccomp filter.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SeccompFilter {
    /// `struct sock_filter` instructions: code, jt, jf, k.
    pub insns: Vec<(u16, u8, u8, u32)>,
    /// Installed with SECCOMP_FILTER_FLAG_LOG.
    pub log: bool,
}

/// What an open file descriptor refers to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum FdKind {
    /// A regular file, reopened by path (identity checked) at the saved offset.
    File {
        file: FileId,
        flags: u32,
        pos: u64,
        /// The name it was opened by, removed since while `file.path` (another link in
        /// the same directory or one the tree has open) still leads to it; empty: none
        /// (older images too). Restore links the file under that name again for an
        /// instant, opens it there and removes the name, so /proc shows it as the
        /// original's did ("NAME (deleted)").
        #[serde(default, with = "serde_bytes")]
        unlinked: Vec<u8>,
    },
    /// A directory.
    Dir {
        file: FileId,
        flags: u32,
        /// Removed while open (`file.path` is the name it had): restore makes an empty
        /// directory under that name for an instant, with the recorded owner and mode,
        /// opens it and removes it again (false in older images).
        #[serde(default)]
        removed: bool,
    },
    /// A character or block device reopened by path (e.g. /dev/null).
    Device { file: FileId, flags: u32, pos: u64 },
    /// One end of a pipe whose other end is inside the image or closed by everyone
    /// (`id` names the pipe in `Checkpoint::pipes`).
    Pipe { id: u64, write: bool, flags: u32 },
    /// One end (0 or 1) of a connected pair of unix sockets whose both ends are inside
    /// the image (`id` names the pair in `Checkpoint::socketpairs`).
    UnixPair { id: u64, end: u8, flags: u32 },
    /// A listening unix socket bound to `name` (a path, or an abstract name starting
    /// with a NUL byte).
    UnixListen {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        typ: i32,
        backlog: u32,
        flags: u32,
        /// For a name relative to a working directory: that directory (absolute), in
        /// which restore binds the name again; empty otherwise.
        #[serde(default, with = "serde_bytes")]
        dir: Vec<u8>,
        /// Its options (SO_PASSCRED, which accepted connections inherit; buffer
        /// sizes); all unset in images made before they were recorded.
        #[serde(default)]
        opts: SockOpts,
    },
    /// A memfd (memfd_create): its name, seals, and its contents, stored in the image as
    /// `FILE_DATA` records under `data`.
    Memfd {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        flags: u32,
        pos: u64,
        seals: u32,
        data: u64,
        /// Its permission bits (st_mode & 0o7777) at dump; `None`: not recorded (older
        /// images), the memfd keeps the mode memfd_create gives it.
        #[serde(default)]
        mode: Option<u32>,
    },
    /// A regular file deleted while open: its contents are in the image (`FILE_DATA`
    /// records under `data`); restore recreates it, opens it and removes it again.
    DeletedFile {
        file: FileId,
        flags: u32,
        pos: u64,
        data: u64,
    },
    /// A listening TCP socket: its address (raw sockaddr) and backlog.
    TcpListen {
        family: i32,
        #[serde(with = "serde_bytes")]
        addr: Vec<u8>,
        backlog: u32,
        reuseaddr: bool,
        v6only: bool,
        flags: u32,
        /// Options set on it (none in images made before they were recorded).
        #[serde(default)]
        opts: Option<Box<TcpOpts>>,
        /// The connections waiting in its accept queue, in the order accept() takes
        /// them, each from a client of the tree ([`FdKind::TcpQueued`]); empty in
        /// images made before they were kept.
        #[serde(default)]
        queue: Vec<TcpWaiting>,
    },
    /// The client end of a connection waiting in the accept queue of a listener of
    /// the tree ([`TcpWaiting`]): made again by a real handshake with the restored
    /// listener (both ends are the tree's: the sequence numbers are new), not in
    /// repair mode. `conn` is the client as repair mode showed it at dump (options,
    /// addresses, state); its queues were empty.
    TcpQueued {
        conn: Box<TcpState>,
        /// The listener's descriptor: process and number (the record that is not a
        /// shared one), and this connection's place in its queue.
        listener_pid: i32,
        listener_fd: i32,
        pos: u32,
        flags: u32,
    },
    /// An established TCP connection, restored with TCP_REPAIR.
    TcpConn { conn: Box<TcpState>, flags: u32 },
    /// eventfd with its counter.
    EventFd {
        count: u64,
        flags: u32,
        semaphore: bool,
    },
    /// timerfd with its remaining time, interval and expirations not yet read.
    TimerFd {
        clock: i32,
        flags: u32,
        value_ns: u64,
        interval_ns: u64,
        ticks: u64,
    },
    /// signalfd with its signal mask.
    SignalFd { mask: u64, flags: u32 },
    /// epoll instance with its registered descriptors (numbers in the same process).
    Epoll {
        flags: u32,
        targets: Vec<EpollTarget>,
    },
    /// A unix datagram socket that is not one end of an anonymous pair: bound to a name
    /// or not, connected to a named socket of the image or not, with the messages
    /// queued to it.
    UnixDgram {
        sock: Box<UnixDgramState>,
        flags: u32,
    },
    /// A UDP socket: its bound address, connected peer (if any) and options. Datagrams
    /// queued for reading are in `sock.msgs` and are sent to it again at restore.
    Udp { sock: Box<UdpState>, flags: u32 },
    /// A TCP socket neither listening nor connected (state CLOSE, never connected):
    /// created, and bound or not.
    TcpUnconnected {
        sock: Box<TcpUnconnState>,
        flags: u32,
    },
    /// A netlink socket (route, uevent, generic...): protocol, port id, groups.
    Netlink { sock: Box<NetlinkState>, flags: u32 },
    /// A raw IP socket, or an ICMP ping socket (SOCK_DGRAM, IPPROTO_ICMP{,V6}).
    InetRaw { sock: Box<InetRawState>, flags: u32 },
    /// A descriptor leading outside the dumped tree (a pipe or socket whose other end a
    /// process not dumped holds), recorded at `ckpt dump --external`. Restore needs
    /// `--inherit-fd N:KEY` to give one of its own descriptors in its place; `key` is
    /// what /proc shows for it at dump, e.g. `pipe:[1234]` or `socket:[5678]`.
    External {
        key: String,
        /// Open flags at dump (status flags such as O_NONBLOCK are set again).
        flags: u32,
    },
    /// Standard input/output/error leading outside the dumped tree (a terminal, a pipe
    /// of the old shell...). At restore it is connected to `ckpt restore`'s own fd of
    /// the same number.
    Inherited {
        what: String,
        /// Open flags at dump (which end of a pipe, for one).
        #[serde(default)]
        flags: u32,
        /// For a terminal: which one, its settings and the process's relation to it
        /// (`restore --new-tty` connects the descriptor to a new pty with them).
        #[serde(default)]
        tty: Option<Box<TtyState>>,
    },
    /// A FIFO (named pipe) opened by path: `file` is the FIFO (identity checked like other
    /// files), `id` names its pipe state (capacity, data in flight) in
    /// `Checkpoint::fifos`. Restore opens the path again with `flags`.
    Fifo {
        file: FileId,
        id: u64,
        flags: u32,
        /// Removed while open (`file.path` is the name it had): restore makes a FIFO
        /// under that name for an instant, with the recorded owner and mode, opens it and
        /// removes it again (false in older images).
        #[serde(default)]
        removed: bool,
    },
    /// An inotify instance with its watches (in increasing wd order). Events queued but
    /// not read at dump are not kept: dump refuses an instance that has any.
    Inotify {
        flags: u32,
        watches: Vec<InotifyWatch>,
    },
    /// A unix socket whose connection waits in a listener's queue, not accepted yet: the
    /// listener (a socket of the image, by its name) and its place in that queue (0 is
    /// accepted first). Restore connects it again, in that order, once the listener
    /// exists. (What it already sent, `queued`, is read at dump without accepting the
    /// connection, through the BPF socket reader.)
    UnixPending {
        #[serde(with = "serde_bytes")]
        listener: Vec<u8>,
        typ: i32,
        pos: u32,
        /// Its own name (bound, or autobound), empty if none.
        #[serde(default, with = "serde_bytes")]
        name: Vec<u8>,
        #[serde(default)]
        opts: SockOpts,
        flags: u32,
        /// The directories of `name` and of `listener` when they are relative (see
        /// `UnixListen::dir`); empty otherwise.
        #[serde(default, with = "serde_bytes")]
        dir: Vec<u8>,
        #[serde(default, with = "serde_bytes")]
        listener_dir: Vec<u8>,
        /// What the client had sent that waited on the listener's side of the
        /// connection (read without accepting it, `sys::bpf`), one message per socket
        /// buffer, in order, each with its sender's credentials: restore sends it again
        /// from this socket once it is connected. Empty if it had sent nothing.
        #[serde(default)]
        queued: Vec<SockMessage>,
    },
    /// One side of a pseudo-terminal pair whose master is held inside the image (`index`
    /// names the pair in `Checkpoint::ptys`, and is its /dev/pts number): the master
    /// (/dev/ptmx) or the slave (/dev/pts/N).
    Pty {
        index: u32,
        master: bool,
        flags: u32,
    },
    /// /dev/tty: the controlling terminal of the process that opened it (a pty of the
    /// image's, `index`).
    DevTty { index: u32, flags: u32 },
    /// A POSIX message queue (mq_open), `name` as /proc shows it ("/q"). One that still
    /// has its name is opened again by it (it outlives the tree with its messages, like a
    /// file); one removed while open (`deleted`) is made again with its attributes,
    /// owner, mode and messages, and removed again. `ino` tells queues apart at dump.
    PosixMq {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        flags: u32,
        deleted: bool,
        ino: u64,
        maxmsg: i64,
        msgsize: i64,
        uid: u32,
        gid: u32,
        mode: u32,
        messages: Vec<MqMessage>,
        /// The queue's notification (mq_notify), when this process registered it
        /// (recorded on one of its descriptors of the queue): registered again from it
        /// once the queue has its messages.
        #[serde(default)]
        notify: Option<MqNotify>,
    },
    /// A process descriptor (pidfd) of process `pid` of the image (as the image's IDs
    /// go: rewritten by `map_pids`), with its status flags (O_NONBLOCK, and O_EXCL for
    /// PIDFD_THREAD). Restore opens it again once every process exists; `pid` may be a
    /// thread other than a main one (PIDFD_THREAD), opened once its threads exist.
    Pidfd {
        pid: i32,
        flags: u32,
        /// The process it named has exited and been reaped (fdinfo shows "Pid: -1";
        /// `pid` is 0 then): restore makes a process that exits the same way, takes its
        /// pidfd and reaps it. `None`: a live process or a zombie (and older images,
        /// where dump refused reaped ones).
        #[serde(default)]
        reaped: Option<PidfdReaped>,
    },
    /// A packet socket (AF_PACKET, SOCK_RAW or SOCK_DGRAM): protocol, bound interface,
    /// PACKET_* options, classic filter.
    Packet { sock: Box<PacketState>, flags: u32 },
    /// A fanotify group: the flags and event flags it was made with (`fanotify_init`,
    /// as fdinfo shows them), the status flags of its description, and its marks, in
    /// the order restore adds them. Events queued at dump are not kept: dump refuses a
    /// group that has any, and one whose marks ask for permission events.
    Fanotify {
        flags: u32,
        init_flags: u32,
        event_flags: u32,
        marks: Vec<FanotifyMark>,
    },
}

/// One mark of a fanotify group: what it is on (`on`: 0 for an inode, `FAN_MARK_MOUNT`
/// for a mount, `FAN_MARK_FILESYSTEM` for a filesystem), a path that leads there (the
/// file; the mount's mount point; a mount point of the filesystem), the mark's flags as
/// fdinfo shows them (`FAN_MARK_IGNORED_SURV_MODIFY`, `FAN_MARK_EVICTABLE`,
/// `FAN_MARK_IGNORE`), its event mask and its ignore mask.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FanotifyMark {
    pub on: u32,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub mflags: u32,
    pub mask: u64,
    pub ignored_mask: u64,
    /// The inode number, mount ID or device number at dump (display only).
    pub id: u64,
}

/// A socket of [`FdKind::Packet`] (with no packet waiting, no ring, no fanout group, no
/// interface membership).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PacketState {
    /// SOCK_RAW or SOCK_DGRAM.
    pub typ: i32,
    /// The protocol (ethertype) it receives, in network byte order as sockaddr_ll has
    /// it; 0: none (not receiving).
    pub protocol: u16,
    /// The interface it is bound to (0: all), and its name at dump.
    pub ifindex: i32,
    pub ifname: String,
    /// SOL_PACKET integer options that differ from a new socket's
    /// (`sys::packet::PACKET_OPTS`).
    pub packet_opts: Vec<IntSockOpt>,
    /// The other options (SO_PRIORITY, SO_MARK, timeouts...) and the buffer sizes.
    pub opts: TcpOpts,
    pub sock: SockOpts,
    /// A classic BPF filter (SO_ATTACH_FILTER): its instructions, 8 bytes each (struct
    /// sock_filter); empty when none. `filter_locked`: SO_LOCK_FILTER.
    #[serde(with = "serde_bytes")]
    pub filter: Vec<u8>,
    pub filter_locked: bool,
}

/// A pseudo-terminal pair whose master is held inside the image, restored under the
/// same /dev/pts number.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PtyState {
    /// Its index: /dev/pts/N.
    pub index: u32,
    /// The path its master was opened by (/dev/ptmx or /dev/pts/ptmx).
    #[serde(with = "serde_bytes")]
    pub master_path: Vec<u8>,
    /// Termios and window size (one set for both sides).
    pub settings: TtySettings,
    /// Packet mode (TIOCPKT) of the master.
    pub packet: bool,
    /// The slave side is locked (TIOCSPTLCK).
    pub locked: bool,
    /// The slave side was opened and closed again (no process holds it): the master
    /// reads EIO and polls POLLHUP.
    pub slave_closed: bool,
    /// The session whose controlling terminal it is (its leader's PID; 0: none).
    pub session: i32,
    /// That session's foreground process group.
    pub fg_pgid: i32,
}

/// A POSIX message queue's notification as the kernel shows it (a read of the queue:
/// NOTIFY, SIGNO): how it notifies (`sigev_notify`: SIGEV_NONE only for now, the
/// kernel not showing a signal's value) and the signal.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqNotify {
    pub sigev_notify: i32,
    pub signo: i32,
}

/// A message queued on a POSIX message queue: its priority and bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MqMessage {
    pub prio: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A terminal that standard descriptors of the tree led to at dump.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TtyState {
    /// Its path at dump, e.g. /dev/pts/3 (display only).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Its device number at dump: descriptors with the same one were the same terminal.
    pub rdev: u64,
    /// Its settings, if they could be read.
    pub settings: Option<TtySettings>,
    /// It was the controlling terminal of the process holding the descriptor.
    pub controlling: bool,
    /// Its foreground process group then (as /proc/PID/stat tells the process whose
    /// controlling terminal it is; -1 or 0: none).
    pub fg_pgid: i32,
    /// The device of the file system holding it (st_dev): a pty slave of a devpts
    /// instance of the tree's own mount namespace (a container's console) is the
    /// `Mount` with that `dev`. 0 in older images.
    #[serde(default)]
    pub dev: u64,
}

/// Terminal settings: termios (as tcgetattr returns them) and the window size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TtySettings {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    /// Control characters (c_cc), in order.
    #[serde(with = "serde_bytes")]
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

/// An AIO context (io_setup): its ring's address (the context's ID, which the program
/// holds) and length, the number of events the ring holds, its head and tail (as the
/// ring's header has them), and the completed events not reaped yet (from head to tail,
/// 32 bytes each: struct io_event). Requests still in flight are not kept: dump refuses
/// a context whose ring changed while the tree was stopped.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AioRing {
    pub addr: u64,
    pub len: u64,
    pub nr: u32,
    pub head: u32,
    pub tail: u32,
    #[serde(with = "serde_bytes")]
    pub events: Vec<u8>,
    /// The ring's inode number at dump (display only, and telling a process's own ring
    /// from a copy inherited across fork).
    pub ino: u64,
}

/// One inotify watch: its number, event mask (as inotify_add_watch takes it) and the
/// path of the watched file or directory, found from its file handle at dump.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Inode number at dump (display only: another machine has other numbers).
    pub ino: u64,
    /// A watch on a file deleted while open (`path` is the name it had): the `data` id
    /// of that file's kept contents (`FdKind::DeletedFile`), whose recreated copy restore
    /// sets the watch on; `None` otherwise (older images too).
    #[serde(default)]
    pub deleted: Option<u64>,
}

/// A connection waiting in a TCP listener's accept queue ([`FdKind::TcpListen`]),
/// read at dump without taking it (`sys::tcpqueue`). Its client is a descriptor of the
/// tree ([`FdKind::TcpQueued`]); the listener's side holds `data` unread.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpWaiting {
    /// Raw socket addresses of the listener's side and of the client.
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// The client had shut down writing: its FIN came (CLOSE_WAIT on this side).
    pub fin: bool,
    /// The bytes its client sent, received on the listener's side and not read (nobody
    /// accepted it yet); restore has the client send them again after the handshake
    /// (before its FIN). Empty in images from before they were kept.
    #[serde(default, with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// An established TCP connection as TCP repair mode shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpState {
    pub family: i32,
    /// Raw socket addresses (sockaddr_in / sockaddr_in6).
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Sequence numbers of the first byte of the send and receive queues.
    pub snd_seq: u32,
    pub rcv_seq: u32,
    /// Data sent but not yet acknowledged (or not yet sent), and data received but not
    /// yet read.
    #[serde(with = "serde_bytes")]
    pub sndq: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub rcvq: Vec<u8>,
    pub mss: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    pub sack: bool,
    pub timestamps: bool,
    pub tsval: u32,
    /// TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
    pub nodelay: bool,
    /// SO_KEEPALIVE and SO_REUSEADDR (images made before they were recorded: off).
    #[serde(default)]
    pub keepalive: bool,
    #[serde(default)]
    pub reuseaddr: bool,
    /// SO_SNDBUF and SO_RCVBUF as getsockopt shows them (the kernel's doubled value),
    /// and SO_BUF_LOCK: which of them the program set itself (1 send, 2 receive); a
    /// size not locked is the kernel's autotuning, which restore leaves to the kernel.
    /// 0 in images made before they were recorded.
    #[serde(default)]
    pub sndbuf: u32,
    #[serde(default)]
    pub rcvbuf: u32,
    #[serde(default)]
    pub buf_lock: u32,
    /// Further options set on it (none in images made before they were recorded).
    #[serde(default)]
    pub opts: Option<TcpOpts>,
    /// The TCP state (net/tcp_states.h): 0 (images made before it was recorded) or 1
    /// ESTABLISHED; or closed on one side or both: FIN_WAIT1 4, FIN_WAIT2 5, CLOSE_WAIT
    /// 8, LAST_ACK 9, CLOSING 11. A FIN sent or received takes one sequence number after
    /// its queue's data (`snd_seq`/`rcv_seq` are those of the data).
    #[serde(default)]
    pub state: u8,
    /// The peer's FIN was received and the program has read the end of file already.
    #[serde(default)]
    pub fin_read: bool,
    /// The reading side was shut down (shutdown(SHUT_RD)) without a FIN from the peer.
    #[serde(default)]
    pub rd_shut: bool,
    /// IPV6_V6ONLY of an IPv6 connection (None in images made before it was recorded,
    /// and for IPv4).
    #[serde(default)]
    pub v6only: Option<bool>,
}

/// A netlink socket of [`FdKind::Netlink`] (with no message waiting to be read).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NetlinkState {
    /// NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT, NETLINK_GENERIC...
    pub protocol: i32,
    /// SOCK_RAW or SOCK_DGRAM.
    pub typ: i32,
    /// Port id it is bound to (0: not bound yet).
    pub portid: u32,
    /// Multicast groups: bit `i` of word `w` is group `32 * w + i + 1`.
    pub groups: Vec<u32>,
    /// Connected destination (port id, group); 0 when not connected.
    pub dst_portid: u32,
    pub dst_group: u32,
    /// Netlink options on (SOL_NETLINK option numbers).
    pub nl_opts: Vec<i32>,
    pub opts: SockOpts,
}

/// A socket of [`FdKind::InetRaw`] (with no packet waiting to be read).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct InetRawState {
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// SOCK_RAW, or SOCK_DGRAM for a ping socket.
    pub typ: i32,
    pub protocol: i32,
    /// Raw bound address (for a ping socket the port is its ICMP identifier; 0 when
    /// not bound).
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    /// Raw address of the connected peer; empty when not connected.
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    pub v6only: bool,
    pub sock: SockOpts,
    /// Integer options that differ from a new socket's (IP_HDRINCL, ICMP_FILTER,
    /// IP_TOS...), SO_LINGER and the timeouts.
    pub opts: TcpOpts,
}

/// A TCP socket of [`FdKind::TcpUnconnected`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpUnconnState {
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// Raw bound address (sockaddr_in / sockaddr_in6); port 0 when not bound.
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    pub v6only: bool,
    /// Buffer sizes and the reuse options (set before bind).
    pub sock: SockOpts,
    #[serde(default)]
    pub opts: TcpOpts,
    /// A connect in progress (SYN_SENT, a non-blocking connect that had no answer yet):
    /// the raw address it connects to; `local` is the address and port connect gave it.
    /// None: never connected (and in images made before it was recorded).
    #[serde(default)]
    pub connecting_to: Option<Vec<u8>>,
    /// A connection this socket had has ended (reset, or closed both ways; the error,
    /// if any, read by the program): `local` is the address it had, which getsockname
    /// still gives. None: never connected (and in images made before it was recorded).
    #[serde(default)]
    pub ended: Option<TcpEnded>,
}

/// What a TCP socket whose connection ended ([`TcpUnconnState::ended`]) still holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpEnded {
    /// Bytes received before the end, not read yet.
    #[serde(with = "serde_bytes", default)]
    pub rcvq: Vec<u8>,
    /// It still holds its port (the program bound it, or a listener that was bound
    /// accepted it); otherwise the port is free for others while getsockname shows it.
    #[serde(default)]
    pub holds_port: bool,
    /// The error the program had not read yet (an errno; 0: none, or read already):
    /// ECONNRESET (reset while connected), EPIPE (reset after the peer's FIN),
    /// ECONNREFUSED (a connect refused), ETIMEDOUT (no answer), or an error an ICMP
    /// message gave (EHOSTUNREACH, ENETUNREACH...). 0 in images made before it was
    /// recorded.
    #[serde(default)]
    pub err: i32,
    /// The peer's FIN had come before the end (the kernel's SOCK_DONE): a read gives end
    /// of file, not the error.
    #[serde(default)]
    pub fin: bool,
    /// The program's connect was a non-blocking one and it has not called connect
    /// since (the socket layer's SS_CONNECTING): connect now gives the error, or
    /// ECONNABORTED, where a socket connected otherwise gives EISCONN.
    #[serde(default)]
    pub connecting: bool,
    /// Its connect failed: it never had a connection (no bytes, no FIN).
    #[serde(default)]
    pub never_connected: bool,
    /// The soft error an ICMP error left while it was connected (the kernel's
    /// `sk_err_soft`, an errno; 0: none): SO_ERROR reports it once `err` is read, and a
    /// connection that timed out after it ended with it as `err`. 0 in images made before
    /// it was recorded (dump refused such sockets then).
    #[serde(default)]
    pub err_soft: i32,
}

/// Options of a TCP socket that a program sets and reads back, beyond those of
/// [`SockOpts`]: integer options (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_NODELAY, TCP_CORK,
/// IP_TOS...) that differ from a new socket's, SO_LINGER and the timeouts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpOpts {
    #[serde(default)]
    pub ints: Vec<IntSockOpt>,
    /// SO_LINGER (l_onoff, l_linger) when on.
    #[serde(default)]
    pub linger: Option<[i32; 2]>,
    /// SO_RCVTIMEO, SO_SNDTIMEO (seconds, microseconds) when set.
    #[serde(default)]
    pub rcvtimeo: Option<[i64; 2]>,
    #[serde(default)]
    pub sndtimeo: Option<[i64; 2]>,
    /// TCP_CONGESTION when it differs from a new socket's ("reno"...).
    #[serde(default)]
    pub congestion: Option<String>,
    /// SO_BINDTODEVICE: the interface it is bound to.
    #[serde(default)]
    pub bind_device: Option<String>,
    /// ICMP6_FILTER of a raw or ping ICMPv6 socket (struct icmp6_filter, 32 bytes) when
    /// it differs from a new socket's.
    #[serde(default)]
    pub icmp6_filter: Option<Vec<u8>>,
}

/// One integer socket option: setsockopt(level, name, value).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntSockOpt {
    pub level: i32,
    pub name: i32,
    pub value: i32,
}

/// A unix datagram socket of [`FdKind::UnixDgram`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct UnixDgramState {
    /// Bound name: a path, or an abstract name starting with a NUL byte; empty if none.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Name of the socket of the image it is connected to; empty if not connected.
    #[serde(with = "serde_bytes")]
    pub peer_name: Vec<u8>,
    pub opts: SockOpts,
    /// Messages waiting to be read, in order; `from` is the sender's bound name (a
    /// socket of the image), empty for an unnamed sender.
    pub msgs: Vec<SockMessage>,
    /// Which ways it is shut down (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2); 0 in older images.
    #[serde(default)]
    pub shutdown: u8,
}

/// A UDP socket as dump saw it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpState {
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// Raw bound address (sockaddr_in / sockaddr_in6); port 0 when never bound.
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    /// Raw address of the connected peer; empty when not connected.
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    pub v6only: bool,
    pub opts: SockOpts,
    /// Datagrams waiting to be read, with their source addresses.
    pub msgs: Vec<SockMessage>,
    /// `IP_FREEBIND` (or `IPV6_FREEBIND`): bound to an address the host need not have.
    #[serde(default)]
    pub freebind: bool,
    /// `IP_TRANSPARENT` (or `IPV6_TRANSPARENT`): the same, for a transparent proxy.
    #[serde(default)]
    pub transparent: bool,
    /// Further options set on it (IP_TOS, SO_PRIORITY, SO_BROADCAST, IP_RECVERR,
    /// timeouts...; none in images made before they were recorded).
    #[serde(default)]
    pub extra: Option<TcpOpts>,
}

/// One descriptor registered in an epoll instance.
/// What the kernel keeps of a process a pidfd named, exited and reaped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidfdReaped {
    /// Its wait status, as PIDFD_GET_INFO tells it (PIDFD_INFO_EXIT, Linux 6.15);
    /// `None` where the kernel does not tell.
    pub status: Option<i32>,
    /// The cgroup (v2 ID) it exited in, as PIDFD_GET_INFO tells it (0: not told).
    pub cgroup_id: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpollTarget {
    /// The descriptor number it was added under (what fdinfo shows as `tfd`).
    pub fd: i32,
    pub events: u32,
    pub data: u64,
    /// When that number no longer holds the watched file (closed or moved since, with
    /// the file still open elsewhere in the process): the descriptor that holds it.
    /// Restore puts the file at `fd` for the time of the registration.
    #[serde(default)]
    pub held_at: Option<i32>,
    /// When no descriptor of the epoll instance's own process holds the watched file
    /// (an instance only in flight, whose items its sender added): the descriptor of
    /// the image that does (another process's, or one only in flight). Restore takes
    /// that file and puts it at `fd` for the time of the registration.
    #[serde(default)]
    pub held_by: Option<FdRef>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Fd {
    pub fd: i32,
    pub cloexec: bool,
    pub kind: FdKind,
    /// The same open file description (offset, flags) as descriptor `.1` of process `.0`,
    /// which comes earlier in the image (dup, inheritance across fork, `2>&1`...).
    #[serde(default)]
    pub shared_with: Option<(i32, i32)>,
    /// File locks held through this descriptor (flock and OFD locks belong to its open
    /// file description, POSIX record locks to this process).
    #[serde(default)]
    pub locks: Vec<FileLock>,
    /// Who gets the descriptor's I/O signals (F_SETOWN_EX) and which signal
    /// (F_SETSIG), as its open file description has them; `None`: nobody and the
    /// default SIGIO (also what older images meant).
    #[serde(default)]
    pub owner: Option<FOwner>,
    /// The owner of the inode of a pipe or socket the tree made (its creator's
    /// filesystem user and group IDs, as `fstat` shows them), given to the one restore
    /// makes; `None`: not recorded (older images: it is then ckpt's, root).
    #[serde(default)]
    pub inode_owner: Option<InodeOwner>,
    /// No process held this open file description at dump: only a queued unix message
    /// (SCM_RIGHTS) did (its sender had closed its own copy). Restore makes it in this
    /// process at this number (above its own descriptors) only to send it with the
    /// messages that carry it, then closes it. False for every descriptor a process
    /// held (and in older images).
    #[serde(default)]
    pub in_flight: bool,
}

/// The user and group owning an inode.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeOwner {
    pub uid: u32,
    pub gid: u32,
}

/// The signal owner of an open file description (`struct f_owner_ex`) and its F_SETSIG
/// signal.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FOwner {
    /// `F_OWNER_TID` (0), `F_OWNER_PID` (1) or `F_OWNER_PGRP` (2).
    pub kind: i32,
    /// The thread, process or process group (0: none).
    pub pid: i32,
    /// The F_SETSIG signal (0: SIGIO).
    pub sig: i32,
}

/// What kind of file lock.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// flock(2): the whole file, owned by the open file description.
    Flock,
    /// fcntl(F_SETLK) record lock, owned by the process.
    Posix,
    /// fcntl(F_OFD_SETLK) record lock, owned by the open file description.
    Ofd,
    /// fcntl(F_SETLEASE) lease on the whole file, owned by the open file description:
    /// an active read or write lease (leases being broken are refused at dump).
    Lease,
}

impl LockKind {
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Flock => "flock",
            LockKind::Posix => "POSIX",
            LockKind::Ofd => "OFD",
            LockKind::Lease => "lease",
        }
    }
}

/// One file lock held at dump (as /proc/PID/fdinfo shows it).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    pub kind: LockKind,
    /// A write (exclusive) lock, else a read (shared) one.
    pub write: bool,
    /// First byte of the range, and its last byte (inclusive; `None`: to the end of
    /// the file, whatever its size). A flock covers the whole file: 0 and `None`.
    pub start: u64,
    pub end: Option<u64>,
}

/// Process-wide odds and ends restored with prctl.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcMisc {
    pub pdeathsig: i32,
    pub dumpable: i32,
    pub child_subreaper: bool,
    pub timerslack_ns: u64,
    /// /proc/PID/oom_score_adj (-1000..=1000). `None` in older images: not recorded,
    /// left as the restored process gets it.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// What PR_GET_THP_DISABLE said: 0 transparent huge pages allowed (older images), 1
    /// disabled, 3 disabled but where madvise(MADV_HUGEPAGE) asks
    /// (`PR_THP_DISABLE_EXCEPT_ADVISED`, Linux 6.18).
    #[serde(default)]
    pub thp_disable: u32,
}

/// An interval timer (setitimer): remaining time and reload interval, in microseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ITimer {
    /// ITIMER_REAL (0), ITIMER_VIRTUAL (1), ITIMER_PROF (2).
    pub which: u32,
    pub value_us: u64,
    pub interval_us: u64,
}

/// A POSIX timer (timer_create), with its ID, event and remaining time.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    pub signo: i32,
    pub sigev_value: u64,
    /// SIGEV_SIGNAL (0), SIGEV_NONE (1) or SIGEV_THREAD_ID (4).
    pub notify: i32,
    /// Thread to signal for SIGEV_THREAD_ID.
    pub notify_tid: i32,
    pub value_ns: u64,
    pub interval_ns: u64,
    pub overrun: i32,
}

/// One process (thread group). A zombie (exited, not yet reaped by its parent) has
/// `exit_status` set and nothing else but its IDs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    #[serde(with = "serde_bytes")]
    pub comm: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub cwd: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub root: Vec<u8>,
    pub umask: u32,
    pub personality: u32,
    pub creds: Creds,
    pub rlimits: Vec<Rlimit>,
    pub misc: ProcMisc,
    pub mm: MmInfo,
    pub vmas: Vec<Vma>,
    pub fds: Vec<Fd>,
    pub sigactions: Vec<SigAction>,
    pub shared_pending: Vec<PendingSignal>,
    pub threads: Vec<Thread>,
    /// xxh3 and size of the vDSO text this process had mapped (0 if none): restore
    /// refuses a kernel whose vDSO differs, as the program may hold pointers into it.
    #[serde(default)]
    pub vdso_hash: u64,
    #[serde(default)]
    pub vdso_size: u64,
    #[serde(default)]
    pub itimers: Vec<ITimer>,
    #[serde(default)]
    pub posix_timers: Vec<PosixTimer>,
    /// For a zombie: the wait status its parent will collect.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// For a zombie: the signal state /proc still shows of it (its limits are in
    /// `rlimits`, its name in `comm`). `None` in older images: the zombie shows the
    /// restore helper's.
    #[serde(default)]
    pub zombie: Option<ZombieState>,
    /// The process was stopped by job control (SIGSTOP, SIGTSTP...: state T, a group
    /// stop): restore brings it back stopped, and a SIGCONT continues it. `None` in
    /// older images.
    #[serde(default)]
    pub stopped: Option<JobStop>,
    /// Its IDs in the PID namespaces nested inside the tree's that it is in, outermost
    /// first, its own namespace's last (`pid` is the one in the tree's namespace); empty
    /// for a process of the tree's own PID namespace (also what older images meant).
    #[serde(default)]
    pub nspid: Vec<i32>,
    /// Its PID namespace: 0 for the tree's, `k` for `Checkpoint::pid_namespaces[k - 1]`.
    #[serde(default)]
    pub pid_ns: u32,
    /// The PID namespace its next children go to when not its own (it called
    /// unshare(CLONE_NEWPID)), numbered as `pid_ns`; `None`: its own.
    #[serde(default)]
    pub pid_ns_for_children: Option<u32>,
    /// Whether the process's new mappings are placed at random addresses (the kernel's
    /// PF_RANDOMIZE, decided when it executed its program: not when run with
    /// ADDR_NO_RANDOMIZE, `setarch -R`, or where kernel.randomize_va_space is 0). `None`
    /// in older images: not recorded, the restored process gets ckpt's.
    #[serde(default)]
    pub randomized: Option<bool>,
    /// Its System V semaphore undo adjustments (semop with SEM_UNDO), by set; sets
    /// where every adjustment is 0 are left out.
    #[serde(default)]
    pub sem_undo: Vec<SemUndo>,
    /// Whether it has a System V semaphore undo list at all, even an empty one (made by
    /// its first SEM_UNDO operation, or by its first thread made with CLONE_SYSVSEM, as
    /// pthread_create and Go make them), and which process of the image shares it.
    /// `None` in older images: not recorded (restore gives one to the processes with
    /// `sem_undo` or threads, as it did).
    #[serde(default)]
    pub sem_undo_list: Option<SemUndoList>,
    /// The namespaces the process is in, other than its PID namespace: (kind, inode)
    /// for each of "uts", "ipc", "net", "mnt", "cgroup", "time", "user", each described
    /// once in `Checkpoint::namespaces`. Empty in older images: the process was in
    /// ckpt's own.
    #[serde(default)]
    pub namespaces: Vec<(String, u64)>,
    /// The cgroups the process was in, one per hierarchy, other than ckpt's own at dump
    /// (see `kinds::cgroup`). Empty in older images (restored into ckpt's).
    #[serde(default)]
    pub cgroups: Vec<CgroupPlace>,
    /// Page ranges [start, end) of its private anonymous areas whose pages were the very
    /// pages of its parent (copy-on-write, not written by either since the fork): they
    /// are stored once, in the parent's page data, and restore forks this process from
    /// its parent after the parent's memory is filled, so that it inherits them shared
    /// again (`kinds::mem::cow`). Each range lies in an area the parent has identical.
    /// Empty in older images.
    #[serde(default)]
    pub cow_from_parent: Vec<(u64, u64)>,
    /// Its AIO contexts (io_setup), each by its ring (see [`AioRing`]). Empty in older
    /// images (dump refused processes that had one).
    #[serde(default)]
    pub aio: Vec<AioRing>,
    /// In an incremental image (`Checkpoint::parent`): page-aligned [start, end) ranges
    /// whose pages were not written since the parent image and are taken from it (from
    /// the parent's process of the same PID, following its own `inherited` further
    /// back); pages in neither these ranges nor this image's page data are zero (or the
    /// file's, in a private file mapping). Empty in full images and older ones.
    #[serde(default)]
    pub inherited: Vec<(u64, u64)>,
    /// The process shares its descriptor table (clone with CLONE_FILES, without
    /// CLONE_THREAD) with this process of the image, the first one in image order that
    /// has that table: the table's descriptors are that process's `fds` (this one's are
    /// empty), restored once, and this process is created sharing it again
    /// (`kinds::task::share`). `None`: a table of its own (and in older images, where
    /// dump refused shared tables).
    #[serde(default)]
    pub files_shared_with: Option<i32>,
    /// The process shares its working directory, root directory and umask (clone with
    /// CLONE_FS) with this process of the image, the first one in image order that
    /// shares them; `cwd`, `root` and `umask` are the same in both. `None`: its own (and
    /// in older images, where such sharing was not recorded).
    #[serde(default)]
    pub fs_shared_with: Option<i32>,
    /// The working directory was removed (rmdir while the process was in it): `cwd` is
    /// the name it had (without " (deleted)") and this its owner and mode. Restore makes
    /// an empty directory under that name for an instant, as for a descriptor of a
    /// removed directory (`FdKind::Dir::removed`), moves the process into it and removes
    /// it again, so /proc shows "NAME (deleted)". `None`: not removed (older images too,
    /// where dump refused a removed one).
    #[serde(default)]
    pub cwd_removed: Option<FileId>,
    /// The same for the root directory (`root`).
    #[serde(default)]
    pub root_removed: Option<FileId>,
}

/// Where a process is in one cgroup hierarchy.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupPlace {
    /// The hierarchy, by its controllers as /proc/PID/cgroup names them ("memory",
    /// "cpu,cpuacct", "name=systemd"); empty for cgroup v2.
    pub controllers: String,
    /// The cgroup's path in the hierarchy: below ckpt's own cgroup when `relative`
    /// (without a leading '/'), else from the hierarchy's root (with one).
    pub path: String,
    pub relative: bool,
    /// The limits the cgroup had at dump, (interface file, value) for the files
    /// `kinds::cgroup::LIMIT_FILES` lists whose value was not the kernel's default
    /// ("memory.max" = "536870912"...); restored with `restore --manage-cgroups`.
    /// Empty in older images, and for the root of a cgroup namespace.
    #[serde(default)]
    pub limits: Vec<(String, String)>,
}

/// A process stopped by job control: the signal that stopped it and whether its parent
/// had yet to collect the stop (waitpid with WUNTRACED) when it was dumped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStop {
    pub signo: i32,
    /// The parent (a process of the image) had not collected the stop yet: restore
    /// leaves the report for it to collect. False for the root (its parent is not
    /// restored).
    #[serde(default)]
    pub unreported: bool,
}

/// What /proc shows of a zombie's signals: blocked (SigBlk), ignored (SigIgn) and
/// caught (SigCgt) masks as they were when it died.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZombieState {
    pub blocked: u64,
    pub ignored: u64,
    pub caught: u64,
    /// `Process::creds` holds the zombie's user and group IDs, groups, capability sets
    /// and no_new_privs, as /proc shows them (its securebits it does not show: they are
    /// left as ckpt's, and seccomp is not restored).
    #[serde(default)]
    pub creds: bool,
}

/// A process's undo adjustments on one System V semaphore set: what the kernel adds to
/// each semaphore when the process exits.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SemUndo {
    pub semid: i32,
    pub adj: Vec<i16>,
}

/// A process's System V semaphore undo list (kcmp KCMP_SYSVSEM tells which tasks share
/// one; a process without one has none to share).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemUndoList {
    /// It has none: its threads were made without CLONE_SYSVSEM, and it never made a
    /// SEM_UNDO operation.
    Absent,
    /// Its own (possibly empty): no process before it in the image shares it.
    Own,
    /// The list of the process with this PID, before it in the image (clone with
    /// CLONE_SYSVSEM but not CLONE_VM); its adjustments are that process's `sem_undo`.
    Shared(i32),
}

impl Process {
    /// (local, peer) addresses of the established TCP connections it holds.
    pub fn tcp_connections(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.fds
            .iter()
            .filter(|f| f.shared_with.is_none())
            .filter_map(|f| match &f.kind {
                FdKind::TcpConn { conn, .. } => Some((conn.local.clone(), conn.peer.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn is_zombie(&self) -> bool {
        self.exit_status.is_some()
    }

    /// The ABI of the process (of its main thread).
    pub fn abi(&self) -> crate::arch::Abi {
        self.threads
            .first()
            .map(|t| t.arch.abi())
            .unwrap_or(crate::arch::Abi::X86_64)
    }
}

impl Process {
    /// The VMA containing `addr`, if any (vmas are sorted and disjoint once validated).
    pub fn vma_at(&self, addr: u64) -> Option<&Vma> {
        let i = self.vmas.partition_point(|v| v.end <= addr);
        self.vmas.get(i).filter(|v| v.start <= addr)
    }
}

/// A pipe between processes of the image, with the data that was in it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PipeState {
    pub id: u64,
    /// F_GETPIPE_SZ.
    pub capacity: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The pipe behind a FIFO opened by processes of the image, with the data that was in it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct FifoState {
    pub id: u64,
    /// F_GETPIPE_SZ.
    pub capacity: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A connected pair of unix sockets of the image, with the data queued in each direction.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SocketPairState {
    pub id: u64,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub typ: i32,
    /// Bytes waiting to be read by end 0, and by end 1 (SOCK_STREAM).
    #[serde(with = "serde_bytes")]
    pub data0: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub data1: Vec<u8>,
    /// Messages waiting to be read by end 0, and by end 1, in order, each with its
    /// boundaries (SOCK_DGRAM, SOCK_SEQPACKET).
    #[serde(default)]
    pub msgs0: Vec<SockMessage>,
    #[serde(default)]
    pub msgs1: Vec<SockMessage>,
    /// Socket options of end 0 and end 1 (all zero in older images: left as created).
    #[serde(default)]
    pub opts: [SockOpts; 2],
    /// Which ways each end is shut down, as sock_diag shows it (`sk_shutdown`:
    /// RCV_SHUTDOWN 1, SEND_SHUTDOWN 2); 0 in older images.
    #[serde(default)]
    pub shutdown: [u8; 2],
    /// The name of end 0 and of end 1 (a path, or an abstract name starting with a NUL
    /// byte), empty if unnamed: bound by the program (or autobound by SO_PASSCRED), or,
    /// for the end named in `accepted`, its listener's name.
    #[serde(default, with = "serde_bytes")]
    pub name0: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    pub name1: Vec<u8>,
    /// The end a listener accepted (a connection, not a socketpair): its name is the
    /// listener's, which it shares without holding it; restore makes the connection
    /// through a listener bound to that name for the time it takes.
    #[serde(default)]
    pub accepted: Option<u8>,
    /// The directories of `name0` and `name1` when they are relative to a working
    /// directory (see `FdKind::UnixListen`'s `dir`); empty otherwise.
    #[serde(default, with = "serde_bytes")]
    pub dir0: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    pub dir1: Vec<u8>,
    /// On a stream pair: the runs of `data0` and of `data1` each writer sent, in order,
    /// with its credentials (a read stops where they change when SO_PASSCRED is on);
    /// empty: all of it written at once, with the restoring process's (older images).
    #[serde(default)]
    pub runs0: Vec<StreamRun>,
    #[serde(default)]
    pub runs1: Vec<StreamRun>,
}

/// A run of bytes queued on a unix stream socket by one writer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamRun {
    pub len: u32,
    #[serde(default)]
    pub creds: Option<SockCreds>,
    /// The descriptors in flight with it (SCM_RIGHTS, as for `SockMessage::rights`):
    /// then the run is exactly the bytes of the one message that carried them, which
    /// restore sends again as one message (none in older images).
    #[serde(default)]
    pub rights: Vec<FdRef>,
}

/// One queued datagram or record, with the raw address of its sender (empty if none).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SockMessage {
    #[serde(with = "serde_bytes")]
    pub from: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// For a unix message: its sender's credentials as SO_PASSCRED shows them (a
    /// process of the image, its user and group IDs), which restore sends it with;
    /// `None`: sent with the restoring process's own (older images, or a sender that
    /// is gone, when the receiver does not show credentials).
    #[serde(default)]
    pub creds: Option<SockCreds>,
    /// The descriptors in flight with it (SCM_RIGHTS), in order: each the open file
    /// description of a descriptor of the image (process, descriptor), which restore
    /// sends again once every process has its descriptors.
    #[serde(default)]
    pub rights: Vec<FdRef>,
}

/// A descriptor of a process of the image.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdRef {
    pub pid: i32,
    pub fd: i32,
}

/// SCM_CREDENTIALS of a queued unix message.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockCreds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Socket options that a program can observe. Buffer sizes are as getsockopt reports
/// them (the kernel doubles what was set); 0 means "not recorded, leave the default".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockOpts {
    #[serde(default)]
    pub sndbuf: u32,
    #[serde(default)]
    pub rcvbuf: u32,
    #[serde(default)]
    pub passcred: bool,
    #[serde(default)]
    pub reuseaddr: bool,
    #[serde(default)]
    pub reuseport: bool,
    /// SO_BUF_LOCK: which sizes the program set itself (1 send, 2 receive); `None` in
    /// images made before it was recorded (restore then leaves the locks that setting
    /// the sizes makes).
    #[serde(default)]
    pub buf_lock: Option<u32>,
}

/// Everything the image says, except the page contents (which stream after it).
/// `processes` lists the tree with every parent before its children; the first is the
/// root of the dumped tree.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub info: ImageInfo,
    pub arch: ArchHeader,
    pub processes: Vec<Process>,
    #[serde(default)]
    pub pipes: Vec<PipeState>,
    #[serde(default)]
    pub socketpairs: Vec<SocketPairState>,
    #[serde(default)]
    pub fifos: Vec<FifoState>,
    /// Pseudo-terminal pairs whose master is inside the tree.
    #[serde(default)]
    pub ptys: Vec<PtyState>,
    /// The tree had a PID namespace of its own, whose init was the root: every process
    /// and thread ID in the image is as seen in that namespace (the root is 1, IDs of
    /// processes outside it are 0), and restore creates a new namespace for the tree.
    #[serde(default)]
    pub own_pid_namespace: bool,
    /// The tree ran inside a PID namespace (one level below ckpt's) whose init was not
    /// part of it: its root was not PID 1 there (e.g. a grandchild of `unshare -p -f`).
    /// Every ID is as that namespace saw it, as with `own_pid_namespace` (IDs of
    /// processes outside the tree are 0); restore makes a new namespace whose init is a
    /// reaper of ckpt's, with the root as its child, so each process gets its namespace
    /// ID back. False in older images.
    #[serde(default)]
    pub pid_namespace_init_outside: bool,
    /// The System V IPC objects that belong to the tree (see `kinds::ipc`), restored
    /// under the same IDs and keys. Empty in older images.
    #[serde(default)]
    pub sysv: SysvIpc,
    /// Every namespace (other than PID namespaces) a process of the tree is in, once.
    /// Empty in older images (every process was in ckpt's own).
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// The image this one is a delta of (`ckpt dump --parent`): its page data holds only
    /// the pages written since that image was made; the others come from the parent
    /// (see `Process::inherited`). None in full images and older ones.
    #[serde(default)]
    pub parent: Option<ParentImage>,
    /// The PID namespaces nested inside the tree's (made by a process of the tree with
    /// unshare(CLONE_NEWPID) or clone(CLONE_NEWPID)), numbered from 1 in this order (see
    /// `Process::pid_ns`). Empty in older images.
    #[serde(default)]
    pub pid_namespaces: Vec<NestedPidNs>,
    /// The tree ran inside a PID namespace made outside it (a pod's shared one), which
    /// the dump was told to record as external (`dump --external pidns[INO]:KEY`, runc's
    /// `pid[INO]:extRootPidNS`): restore builds the tree inside the namespace given for
    /// KEY (`--inherit-fd N:KEY`, `--join-ns pid:PATH`) with the same IDs there. Set
    /// with `pid_namespace_init_outside` (the IDs are that namespace's), so that a
    /// reader that does not know it restores the tree below a reaper. None in older
    /// images.
    #[serde(default)]
    pub external_pid_namespace: Option<ExternalPidNs>,
    /// The lock of the tree's TCP connections the dump left in ckpt's own network
    /// namespace, outside the tree's (a runtime's container whose network namespace is
    /// made anew at restore: Podman's; see `sys::netlock::HostLock`): removed by the
    /// restore once the connections are back, or by `ckpt unlock`. None in older images
    /// and when there is none.
    #[serde(default)]
    pub host_lock: Option<HostLock>,
}

/// nf_tables tables a dump left in ckpt's network namespace (not the tree's) that drop
/// the peers' segments to the tree's connections (and the host's ICMP errors about
/// them) until the restore.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HostLock {
    /// The inode of the network namespace they are in (net:[INODE]) at the dump.
    pub netns: u64,
    /// Their name, the same in each family (`inet`, `bridge`).
    pub table: String,
}

/// A PID namespace made outside the tree, recorded as external.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalPidNs {
    /// Its inode when the tree was dumped (pid:[INODE]).
    pub inode: u64,
    /// The name restore is given it under (`--inherit-fd N:KEY`).
    pub key: String,
}

/// The parent of an incremental image: where it was and which image it is.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ParentImage {
    /// Its path when the child was dumped (absolute); `ckpt restore --parent` overrides.
    pub path: String,
    /// Its identity: the record count and the chained hash of every record's checksum
    /// that its end record carries (see `image::identity`).
    pub records: u64,
    pub hash: u64,
}

/// A PID namespace nested inside the tree's.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NestedPidNs {
    /// Its parent namespace: 0 for the tree's, `k` for `pid_namespaces[k - 1]`.
    pub parent: u32,
}

/// System V IPC objects (of the host's IPC namespace, those the tree owns; of an IPC
/// namespace of the tree's own, all of them).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysvIpc {
    #[serde(default)]
    pub shm: Vec<SysvShm>,
    #[serde(default)]
    pub sem: Vec<SysvSem>,
    #[serde(default)]
    pub msg: Vec<SysvMsgQueue>,
}

/// What every System V object has: key (0 for IPC_PRIVATE), ID, owner, creator and
/// mode (permission bits; for a segment also SHM_DEST 0o1000 and SHM_LOCKED 0o2000).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct IpcPerm {
    pub key: i32,
    pub id: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
}

/// A System V shared memory segment. Its contents travel as the pages of the processes
/// that attach it (`VmaKind::SysvShm`); one attached by no process of the tree has them
/// here (`data`, trailing zero bytes left out).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysvShm {
    pub perm: IpcPerm,
    pub size: u64,
    #[serde(default, with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A System V semaphore set: the value of each semaphore.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysvSem {
    pub perm: IpcPerm,
    pub values: Vec<u16>,
}

/// A System V message queue: its byte limit and its messages, in order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysvMsgQueue {
    pub perm: IpcPerm,
    pub qbytes: u64,
    pub messages: Vec<SysvMsg>,
}

/// One queued System V message: its type and text.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SysvMsg {
    pub mtype: i64,
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
}

/// A namespace of the tree's processes (not a PID namespace: see
/// `Checkpoint::own_pid_namespace`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Namespace {
    /// "uts", "ipc", "net", "mnt", "cgroup", "time" or "user" (as in /proc/PID/ns/).
    pub kind: String,
    /// Its inode at dump (how processes name it in `Process::namespaces`).
    pub inode: u64,
    /// Shared with ckpt at dump (the host's, or whatever ckpt ran in): joined at restore,
    /// not recreated. Otherwise the tree owned it, and restore creates a new one.
    pub external: bool,
    /// A UTS namespace of the tree's: its names.
    #[serde(default)]
    pub uts: Option<UtsNames>,
    /// An IPC namespace of the tree's: its limits.
    #[serde(default)]
    pub ipc: Option<IpcLimits>,
    /// A time namespace of the tree's: its clocks as its processes saw them at dump.
    #[serde(default)]
    pub time: Option<TimeClocks>,
    /// A mount namespace of the tree's: its mounts (see `kinds::mnt`).
    #[serde(default)]
    pub mounts: Option<MountTree>,
    /// A network namespace of the tree's: its loopback interface and the network
    /// settings restore brings back.
    #[serde(default)]
    pub net: Option<NetState>,
    /// With `external`: the namespace was neither ckpt's nor the tree's own (made
    /// outside the tree, e.g. another container's); restore joins the one given by
    /// `restore --join-ns KIND:PATH`, and refuses without it.
    #[serde(default)]
    pub foreign: bool,
    /// A cgroup namespace of the tree's: its root in each hierarchy (as
    /// `Process::cgroups` records places; a hierarchy not listed: ckpt's own cgroup).
    #[serde(default)]
    pub cgroup: Option<CgroupNsRoots>,
    /// A user namespace of the tree's: its ID maps, setgroups and owner.
    #[serde(default)]
    pub user: Option<UserNsState>,
}

/// A user namespace of the tree's own: what restore gives the new one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct UserNsState {
    /// /proc/PID/uid_map as ckpt read it at dump (outside IDs as ckpt's user namespace
    /// shows them): lines "INSIDE OUTSIDE COUNT".
    pub uid_map: String,
    /// /proc/PID/gid_map, likewise.
    pub gid_map: String,
    /// setgroups(2) is allowed in it (/proc/PID/setgroups reads "allow").
    pub setgroups: bool,
    /// The user ID that created it (`NS_GET_OWNER_UID`), as ckpt's namespace shows it.
    pub owner_uid: u32,
    /// Its parent user namespace (`NS_GET_PARENT`): the inode of another user namespace
    /// of the tree's (it is nested in that one), else ckpt's at dump (0 in images
    /// made before this was recorded: ckpt's).
    #[serde(default)]
    pub parent: u64,
}

/// The root of a cgroup namespace in each hierarchy.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupNsRoots {
    pub roots: Vec<CgroupPlace>,
}

/// The state of a network namespace of the tree's own, which holds only its loopback
/// interface.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NetState {
    /// The loopback interface is up.
    pub lo_up: bool,
    /// Its MTU.
    pub lo_mtu: u32,
    /// Every address of the loopback interface (the default 127.0.0.1/8 and ::1 too,
    /// when it has them).
    #[serde(default)]
    pub addrs: Vec<NetAddr>,
    /// Network settings of the namespace (file under /proc/sys, its text as read,
    /// trimmed), written again in the new namespace.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
}

/// An address of an interface (as rtnetlink gives it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NetAddr {
    /// AF_INET or AF_INET6.
    pub family: u8,
    pub prefixlen: u8,
    /// IFA_F_* flags.
    pub flags: u32,
    /// RT_SCOPE_*.
    pub scope: u8,
    /// IFA_LOCAL (empty if none).
    #[serde(with = "serde_bytes")]
    pub local: Vec<u8>,
    /// IFA_ADDRESS.
    #[serde(with = "serde_bytes")]
    pub address: Vec<u8>,
    /// IFA_LABEL (IPv4), empty if none.
    #[serde(default)]
    pub label: String,
}

/// The mounts of a mount namespace of the tree's own, in the order its root's
/// /proc/PID/mountinfo lists them (a parent before its children).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MountTree {
    pub mounts: Vec<Mount>,
    /// The peer groups the namespace's mounts share with ckpt's namespace, or are slaves
    /// of there (one a process below the tree's root made, copied from ckpt's with
    /// unshare(CLONE_NEWNS), keeping shared mounts shared; the tree's own, made with its
    /// propagation unchanged or as slaves), each with a mount of ckpt's namespace that
    /// restore takes the group from (`MOVE_MOUNT_SET_GROUP`). (Before this was recorded
    /// for the tree's own namespace, its groups were made anew there: such images have
    /// none.)
    #[serde(default)]
    pub outside: Vec<OutsidePeer>,
}

/// A peer group of ckpt's mount namespace that mounts of the tree's mount namespace (or
/// of one a process below the root made) are in (or slaves of), found there through one
/// of its mounts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct OutsidePeer {
    /// The group's ID at dump, as the mounts' "shared:N" and "master:N" name it.
    pub group: String,
    /// Where that mount is mounted in ckpt's namespace (the last mount there).
    #[serde(with = "serde_bytes")]
    pub point: Vec<u8>,
    /// The directory of its file system it shows (which holds the roots of the mounts
    /// that join its group).
    #[serde(with = "serde_bytes")]
    pub root: Vec<u8>,
    pub dev: u64,
    /// It is a member of the group ("shared:N"); false: a slave of it only ("master:N"),
    /// through which a mount becomes a slave of the group too.
    pub member: bool,
    /// For a namespace a process below the root made in the tree's own: that mount's ID
    /// at dump in the tree's namespace (`Mount::id` there). Restore takes the group from
    /// the mount it made for that one, kept by this ID while it builds the tree, not
    /// from the mount `point` shows, which another one stacked there may cover. 0
    /// (ckpt's namespace, or an image made before this): found by its point.
    #[serde(default)]
    pub mount: u32,
}

/// One mount, as /proc/PID/mountinfo shows it, and where restore gets it from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Its mount ID at dump (how `parent` and `MountOrigin::Bind` name mounts).
    pub id: u32,
    /// The mount it is mounted on (for the namespace's root: a mount outside it).
    pub parent: u32,
    /// The device of its file system at dump (as stat shows it).
    pub dev: u64,
    /// The directory of its file system it shows (its root, "/" for the whole).
    #[serde(with = "serde_bytes")]
    pub root: Vec<u8>,
    /// Where it is mounted, as the namespace's processes see it.
    #[serde(with = "serde_bytes")]
    pub point: Vec<u8>,
    /// Per-mount options: "ro" or "rw", "nosuid", "nodev", "noexec", "noatime",
    /// "nodiratime", "relatime"...
    pub options: Vec<String>,
    /// The optional fields: "shared:N", "master:N", "propagate_from:N", "unbindable".
    pub propagation: Vec<String>,
    pub fstype: String,
    #[serde(with = "serde_bytes")]
    pub source: Vec<u8>,
    /// The file system's options ("rw,size=1024k,mode=755...").
    pub super_options: String,
    pub origin: MountOrigin,
}

/// Where restore gets a mount from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum MountOrigin {
    /// A directory or file of a file system the host has mounted too (the container's
    /// root file system, a host directory bound in): bound again from `host_path`
    /// (ckpt's view at dump; or `restore --external-mount POINT=SOURCE`), which must
    /// still be the file (`dev`, `ino`) it was.
    External {
        #[serde(with = "serde_bytes")]
        host_path: Vec<u8>,
        dev: u64,
        ino: u64,
        /// The source's birth time at dump (statx, nanoseconds since the epoch; 0: not
        /// known): a directory made since that got a removed one's inode number is
        /// another file all the same.
        #[serde(default)]
        born_ns: u64,
    },
    /// A file system of the namespace's own, mounted anew (`fstype`, `source`,
    /// `super_options`); a tmpfs with its files.
    Fresh { files: Vec<FsEntry> },
    /// A bind of (a directory of) another mount of the namespace, mount ID `of`,
    /// recreated before it.
    Bind { of: u32 },
    /// Not known (never in an image ckpt wrote).
    #[default]
    Unknown,
}

/// One file of a tmpfs kept in the image, a directory before what it holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct FsEntry {
    /// Its path below the file system's root ("" for the root itself).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Type and permission bits (st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A device node's device number.
    pub rdev: u64,
    /// A regular file's size (its data is `extents`, the rest holes).
    pub size: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    /// A symbolic link's target.
    #[serde(with = "serde_bytes")]
    pub target: Vec<u8>,
    /// Another name of the same file, given earlier (a hard link): only the name.
    #[serde(default, with = "serde_bytes")]
    pub link_to: Vec<u8>,
    /// A regular file's data: (offset, bytes), in order.
    pub extents: Vec<(u64, serde_bytes::ByteBuf)>,
    /// Extended attributes (name, value), of regular files and directories.
    pub xattrs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

/// The host and domain names of a UTS namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct UtsNames {
    #[serde(with = "serde_bytes")]
    pub hostname: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub domainname: Vec<u8>,
}

/// The limits of an IPC namespace: (file name under /proc/sys/kernel or
/// /proc/sys/fs/mqueue prefixed "mqueue/", its text as read, trimmed).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct IpcLimits {
    pub values: Vec<(String, String)>,
    /// The POSIX message queues of the namespace (its mqueue file system: named ones;
    /// those removed while open are their descriptors'), made again there at restore.
    #[serde(default)]
    pub mqueues: Vec<NsMqueue>,
    /// Of an IPC namespace a process below the tree's root made: all its System V
    /// objects (segments attached or not, semaphore sets, message queues), made again
    /// there, under their IDs, before any process of it attaches one. (Those of the
    /// tree's own IPC namespace are `Checkpoint::sysv`.) Empty in older images.
    #[serde(default)]
    pub sysv: SysvIpc,
}

/// A named POSIX message queue of an IPC namespace of the tree's own: its name (without
/// the leading '/'), attributes, owner, mode and messages in the order they are
/// received; its inode at dump (how descriptors of it are known).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NsMqueue {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub ino: u64,
    pub maxmsg: i64,
    pub msgsize: i64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub messages: Vec<MqMessage>,
}

/// The clocks of a time namespace as its processes read them at dump (nanoseconds):
/// restore gives a new namespace offsets that make them continue from there.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeClocks {
    pub monotonic_ns: i64,
    pub boottime_ns: i64,
}

/// A queued unix message's IDs through `f`: its sender's (SCM_CREDENTIALS) and the
/// processes whose descriptors it carries (SCM_RIGHTS).
fn map_message(m: &mut SockMessage, f: &dyn Fn(i32) -> i32) {
    if let Some(c) = m.creds.as_mut() {
        c.pid = f(c.pid);
    }
    m.rights.iter_mut().for_each(|d| d.pid = f(d.pid));
}

impl Checkpoint {
    /// The tree ran in a PID namespace below the dumping ckpt's (its own, or one whose
    /// init was outside it): its IDs are that namespace's, and restore makes a new one.
    pub fn ids_of_a_pid_namespace(&self) -> bool {
        self.own_pid_namespace || self.pid_namespace_init_outside
    }

    /// Rewrite every process and thread ID the image holds through `f` (the one place
    /// that knows which fields are IDs), the senders of queued unix messages too (ckpt
    /// read their SCM_CREDENTIALS in its own namespace) and the processes whose
    /// descriptors they carry (SCM_RIGHTS). Signal information needs no
    /// rewrite: the kernel stores a sender's ID as the receiver's namespace sees it.
    pub fn map_pids(&mut self, f: &dyn Fn(i32) -> i32) {
        for p in &mut self.processes {
            p.pid = f(p.pid);
            p.ppid = f(p.ppid);
            p.pgid = f(p.pgid);
            p.sid = f(p.sid);
            for t in &mut p.threads {
                t.tid = f(t.tid);
            }
            if let Some(SemUndoList::Shared(q)) = &mut p.sem_undo_list {
                *q = f(*q);
            }
            for tm in &mut p.posix_timers {
                if tm.notify_tid != 0 {
                    tm.notify_tid = f(tm.notify_tid);
                }
            }
            for fd in &mut p.fds {
                if let Some((pid, _)) = &mut fd.shared_with {
                    *pid = f(*pid);
                }
                if let Some(o) = &mut fd.owner {
                    if o.pid > 0 {
                        o.pid = f(o.pid);
                    }
                }
                if let FdKind::Inherited { tty: Some(t), .. } = &mut fd.kind {
                    if t.fg_pgid > 0 {
                        t.fg_pgid = f(t.fg_pgid);
                    }
                }
                if let FdKind::Pidfd {
                    pid, reaped: None, ..
                } = &mut fd.kind
                {
                    *pid = f(*pid);
                }
                if let FdKind::Epoll { targets, .. } = &mut fd.kind {
                    for r in targets.iter_mut().filter_map(|t| t.held_by.as_mut()) {
                        r.pid = f(r.pid);
                    }
                }
                if let FdKind::UnixDgram { sock, .. } = &mut fd.kind {
                    sock.msgs.iter_mut().for_each(|m| map_message(m, f));
                }
                if let FdKind::UnixPending { queued, .. } = &mut fd.kind {
                    queued.iter_mut().for_each(|m| map_message(m, f));
                }
            }
        }
        // The senders of queued unix messages (SCM_CREDENTIALS) and the descriptors
        // they carry (SCM_RIGHTS), processes of the tree.
        for sp in &mut self.socketpairs {
            for m in sp.msgs0.iter_mut().chain(sp.msgs1.iter_mut()) {
                map_message(m, f);
            }
            for r in sp.runs0.iter_mut().chain(sp.runs1.iter_mut()) {
                if let Some(c) = r.creds.as_mut() {
                    c.pid = f(c.pid);
                }
                r.rights.iter_mut().for_each(|d| d.pid = f(d.pid));
            }
        }
        for t in &mut self.ptys {
            if t.session > 0 {
                t.session = f(t.session);
            }
            if t.fg_pgid > 0 {
                t.fg_pgid = f(t.fg_pgid);
            }
        }
    }
}
