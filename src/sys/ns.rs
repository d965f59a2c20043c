//! Namespaces (other than PID namespaces, see `process`): their identities, reading a
//! namespace's state from a thread that joined it, and creating new ones for the
//! calling thread before a restored tree is started.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::{Result, SysError};

/// The inode of the namespace of kind `kind` ("uts", "time_for_children"...) process
/// `pid` is in (`pid` 0: ckpt itself).
pub fn inode(pid: i32, kind: &str) -> Result<u64> {
    let p = if pid == 0 {
        format!("/proc/self/ns/{kind}")
    } else {
        format!("/proc/{pid}/ns/{kind}")
    };
    fs::metadata(&p)
        .map(|m| m.ino())
        .map_err(|e| SysError::io(format!("stat {p}"), e))
}

/// The namespace file of kind `kind` ("time_for_children"...) of process `pid`,
/// opened (it holds the namespace, even one no process is in yet).
pub fn open_of(pid: i32, kind: &str) -> Result<std::os::fd::OwnedFd> {
    let p = format!("/proc/{pid}/ns/{kind}");
    fs::File::open(&p)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| SysError::io(format!("open {p}"), e))
}

/// The inode of the calling thread's namespace of kind `kind` (/proc/thread-self: a
/// thread that joined another namespace sees its own, not the process's main thread's).
pub fn thread_inode(kind: &str) -> Result<u64> {
    let p = format!("/proc/thread-self/ns/{kind}");
    fs::metadata(&p)
        .map(|m| m.ino())
        .map_err(|e| SysError::io(format!("stat {p}"), e))
}

/// ckpt's own network namespace, as the thread that asked first saw it: a file of it,
/// to make sockets there (the host's side of a container, where a lock outside the
/// tree's namespace is held) after a thread of ckpt joined the tree's. Dump and restore
/// ask before they join any; a process ckpt forks inherits the file.
pub fn first_net() -> Result<&'static fs::File> {
    static FIRST: std::sync::OnceLock<fs::File> = std::sync::OnceLock::new();
    if let Some(f) = FIRST.get() {
        return Ok(f);
    }
    let p = "/proc/thread-self/ns/net";
    let f = fs::File::open(p).map_err(|e| SysError::io(format!("open {p}"), e))?;
    Ok(FIRST.get_or_init(|| f))
}

/// The CLONE_NEW* flag of a namespace kind ckpt creates or joins (uts, ipc, time, net,
/// cgroup).
pub fn clone_flag(kind: &str) -> Option<libc::c_int> {
    match kind {
        "uts" => Some(libc::CLONE_NEWUTS),
        "ipc" => Some(libc::CLONE_NEWIPC),
        "time" => Some(libc::CLONE_NEWTIME),
        "net" => Some(libc::CLONE_NEWNET),
        "cgroup" => Some(libc::CLONE_NEWCGROUP),
        _ => None,
    }
}

/// The calling thread's namespace of kind `kind`, opened (/proc/thread-self/ns/KIND):
/// it lasts while the descriptor is open, after the thread ends.
pub fn open_thread_ns(kind: &str) -> Result<fs::File> {
    let p = format!("/proc/thread-self/ns/{kind}");
    fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))
}

/// The kind of namespace (`clone_flag`'s CLONE_NEW* flag) of the namespace file at
/// `path` (/proc/PID/ns/KIND, or a bind mount of one), kept open for [`join_file`].
pub fn open_ns_file(path: &std::path::Path) -> Result<(fs::File, libc::c_int)> {
    let f =
        fs::File::open(path).map_err(|e| SysError::io(format!("open {}", path.display()), e))?;
    // NS_GET_NSTYPE (linux/nsfs.h): _IO(0xb7, 0x3).
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value; on a file that
    // is not a namespace the kernel answers ENOTTY.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    super::check(r as libc::c_long, || {
        format!("{} is not a namespace file (NS_GET_NSTYPE)", path.display())
    })?;
    Ok((f, r))
}

/// The kind ("net", "pid"...) and inode of the namespace the open descriptor `fd` of
/// ckpt's is, asked of the kernel (NS_GET_NSTYPE): for a namespace file opened through
/// a bind mount (Podman's /run/netns/NAME), whose /proc/self/fd link reads as that path
/// and not as KIND:[INODE]. None: not a namespace (a file elsewhere than on nsfs is not
/// opened: only its `stat` is compared with a namespace file's device).
pub fn kind_of_fd(fd: i32) -> Option<(&'static str, u64)> {
    let p = format!("/proc/self/fd/{fd}");
    let nsfs = fs::metadata("/proc/self/ns/net").ok()?.dev();
    let m = fs::metadata(&p).ok()?;
    if m.dev() != nsfs {
        return None;
    }
    let (_, flag) = open_ns_file(std::path::Path::new(&p)).ok()?;
    let kind = match flag {
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => return None,
    };
    Some((kind, m.ino()))
}

/// Make the calling thread join the namespace of file `f` (opened by [`open_ns_file`],
/// of kind `flag`: CLONE_NEWNET, CLONE_NEWUTS or CLONE_NEWIPC).
pub fn join_file(f: &fs::File, flag: libc::c_int, what: &str) -> Result<()> {
    // SAFETY: setns with a namespace file we hold open and a network, UTS or IPC flag
    // changes only this thread's namespaces.
    let r = unsafe { libc::setns(f.as_raw_fd(), flag) };
    super::check(r as libc::c_long, || format!("setns {what}"))?;
    Ok(())
}

/// The inode of the network namespace socket `sock` belongs to (the one it was made
/// in: SIOCGSKNS).
pub fn socket_netns(sock: &std::os::fd::OwnedFd) -> Result<u64> {
    use std::os::fd::FromRawFd;
    // SAFETY: SIOCGSKNS takes no argument; it returns a new descriptor of the socket's
    // network namespace, owned at once below.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGSKNS as _) };
    super::check(r as libc::c_long, || "ioctl(SIOCGSKNS)".into())?;
    // SAFETY: `r` is a descriptor the kernel just opened for us; nothing else owns it.
    let f = unsafe { fs::File::from_raw_fd(r) };
    let m = f
        .metadata()
        .map_err(|e| SysError::io("fstat a network namespace", e))?;
    Ok(m.ino())
}

/// Give the time namespace process `pid` made for its children (none of which entered
/// it yet) the offsets `mono` and `boot` (nanoseconds): /proc/PID/timens_offsets.
pub fn write_timens_offsets(pid: i32, mono: i64, boot: i64) -> Result<()> {
    let p = format!("/proc/{pid}/timens_offsets");
    fs::write(&p, format_timens_offsets(mono, boot))
        .map_err(|e| SysError::io(format!("write {p}"), e))
}

/// Run `f` on a thread of ckpt in a new, empty network namespace of its own (made
/// with `unshare(CLONE_NEWNET)`, which ends with the thread): what a network namespace
/// starts with on this host.
pub fn in_new_net<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) on this thread changes only its own network
            // namespace, which ends with it.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            super::check(r as libc::c_long, || "unshare(CLONE_NEWNET)".into())?;
            f()
        })
        .join()
        .map_err(|_| SysError::Other("a thread in a new network namespace panicked".into()))?
    })
}

/// Every writable file under /proc/sys/net of the calling thread's network namespace
/// with its value (path relative to /proc/sys, trimmed text), sorted; files that
/// cannot be read are left out.
pub fn net_sysctls() -> Result<Vec<(String, String)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/proc/sys/net")];
    while let Some(d) = dirs.pop() {
        let rd = fs::read_dir(&d).map_err(|e| SysError::io(format!("read {}", d.display()), e))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else {
                continue;
            };
            if m.is_dir() {
                dirs.push(p);
            } else if m.permissions().mode() & 0o200 != 0 {
                if let (Ok(v), Ok(rel)) = (fs::read_to_string(&p), p.strip_prefix("/proc/sys")) {
                    out.push((rel.to_string_lossy().into_owned(), v.trim().to_string()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The tables of the legacy iptables (ip, ip6 and arp) the calling thread's network
/// namespace has, as "iptables filter".
pub fn legacy_tables() -> Vec<String> {
    let mut out = Vec::new();
    for (file, name) in [
        ("ip_tables_names", "iptables"),
        ("ip6_tables_names", "ip6tables"),
        ("arp_tables_names", "arptables"),
    ] {
        if let Ok(t) = fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            out.extend(t.split_whitespace().map(|x| format!("{name} {x}")));
        }
    }
    out
}

/// What keeps namespace `kind:[ino]` alive outside the processes `tree` (host PIDs)
/// and ckpt (with its helper children): a bind mount of it in ckpt's mount namespace,
/// or another process in it;
/// `None` if nothing does.
pub fn held_outside(
    kind: &str,
    ino: u64,
    tree: &std::collections::BTreeSet<i32>,
) -> Option<String> {
    let root = format!("{kind}:[{ino}]");
    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        for l in mi.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            if f.get(3) == Some(&root.as_str()) {
                return Some(format!(
                    "it is bind-mounted at {}",
                    f.get(4).copied().unwrap_or("?")
                ));
            }
        }
    }
    let me = super::process::own_pid();
    let rd = fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // (ckpt's own helper children, e.g. the reference child of ipc::NoUndoList or
        // the cgroup freezer's guard, are forked by threads that may have joined the
        // tree's namespaces: they hold nothing)
        if pid == me || tree.contains(&pid) || parent_of(pid) == Some(me) {
            continue;
        }
        if inode(pid, kind).ok() == Some(ino) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some(format!(
                "process {pid} ({}), outside the tree, is in it too",
                comm.trim()
            ));
        }
    }
    None
}

/// The parent of process `pid` (the field after the name in /proc/PID/stat).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Run `f` on a thread of ckpt that joined the network namespace of file `path` (a
/// `--join-ns net:PATH`, a namespace descriptor under /proc/self/fd): what it binds and
/// routes is that namespace's. The thread ends with `f`.
pub fn in_net_file<T: Send>(path: &std::path::Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let (file, flag) = open_ns_file(path)?;
    if flag != libc::CLONE_NEWNET {
        return Err(SysError::Other(format!(
            "{} is not a network namespace",
            path.display()
        )));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            join_file(&file, flag, &path.display().to_string())?;
            Ok(f())
        })
        .join()
        .map_err(|_| SysError::Other("a thread in a network namespace panicked".into()))?
    })
}

/// Run `f` on a thread of ckpt that joined the namespaces of kinds `kinds` (uts, ipc:
/// kinds a thread may join alone) of process `pid`: what it reads of /proc/sys and the
/// kernel's names is the namespace's. The thread ends with `f`, and its namespaces
/// with it.
pub fn inside<T: Send>(
    pid: i32,
    kinds: &[&str],
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let mut files = Vec::new();
    for k in kinds {
        let p = format!("/proc/{pid}/ns/{k}");
        let flag = clone_flag(k).ok_or_else(|| SysError::Other(format!("cannot join {p}")))?;
        let f = fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))?;
        files.push((p, f, flag));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for (p, f, flag) in &files {
                // SAFETY: setns with a namespace file we hold open and a UTS, IPC,
                // network or cgroup flag changes only this thread's namespaces, which
                // end with it.
                let r = unsafe { libc::setns(f.as_raw_fd(), *flag) };
                super::check(r as libc::c_long, || format!("setns {p}"))?;
            }
            f()
        })
        .join()
        .map_err(|_| SysError::Other("a thread reading a namespace panicked".into()))?
    })
}

/// Make the calling thread join the namespace of kind `kind` (uts or ipc) of process
/// `pid`, for good (a dump that must see the tree's System V objects).
pub fn join(pid: i32, kind: &str) -> Result<()> {
    let p = format!("/proc/{pid}/ns/{kind}");
    let flag = clone_flag(kind).ok_or_else(|| SysError::Other(format!("cannot join {p}")))?;
    let f = fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))?;
    // SAFETY: setns with a namespace file we hold open and a UTS, IPC or network flag
    // changes only this thread's namespaces.
    let r = unsafe { libc::setns(f.as_raw_fd(), flag) };
    super::check(r as libc::c_long, || format!("setns {p}"))?;
    Ok(())
}

/// The host and domain names of the calling thread's UTS namespace.
pub fn uts_names() -> Result<(Vec<u8>, Vec<u8>)> {
    let u = rustix::system::uname();
    Ok((
        u.nodename().to_bytes().to_vec(),
        u.domainname().to_bytes().to_vec(),
    ))
}

/// Set the host and domain names of the calling thread's UTS namespace.
pub fn set_uts_names(hostname: &[u8], domainname: &[u8]) -> Result<()> {
    rustix::system::sethostname(hostname).map_err(|e| SysError::io("sethostname", e.into()))?;
    rustix::system::setdomainname(domainname).map_err(|e| SysError::io("setdomainname", e.into()))
}

/// The POSIX message queues of the IPC namespace process `pid` is in (their names).
/// A forked helper joins that namespace and a private mount namespace of its own,
/// mounts an mqueue file system there (which shows the queues of its IPC namespace)
/// and sends its directory entries through a pipe; it leaves nothing mounted anywhere
/// else and ends at once.
pub fn mqueues_of(pid: i32) -> Result<Vec<String>> {
    use std::io::Read;
    let p = format!("/proc/{pid}/ns/ipc");
    let ns = fs::File::open(&p).map_err(|e| SysError::io(format!("open {p}"), e))?;
    let (rd, wr) = super::process::pipe()?;
    let (nsfd, wfd) = (ns.as_raw_fd(), wr.as_raw_fd());
    let parent = super::process::own_pid();
    let args = libc::clone_args {
        exit_signal: libc::SIGCHLD as u64,
        ..super::process::clone_args()
    };
    let child = super::process::clone3(&args);
    if child == 0 {
        // SAFETY: the forked child runs raw system calls only (see `die_with_parent`),
        // on descriptors it inherited and constant strings, and ends with `_exit`. Its
        // mount is made in a mount namespace of its own, private, which ends with it.
        unsafe {
            super::process::die_with_parent(parent);
            let fail = |code: i32| libc::_exit(code);
            if libc::syscall(libc::SYS_setns, nsfd, libc::CLONE_NEWIPC) != 0 {
                fail(2);
            }
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) != 0 {
                fail(3);
            }
            let null = std::ptr::null::<libc::c_char>();
            if libc::syscall(
                libc::SYS_mount,
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null,
            ) != 0
            {
                fail(4);
            }
            if libc::syscall(
                libc::SYS_mount,
                c"mqueue".as_ptr(),
                c"/tmp".as_ptr(),
                c"mqueue".as_ptr(),
                0,
                null,
            ) != 0
            {
                fail(5);
            }
            let d = libc::syscall(
                libc::SYS_open,
                c"/tmp".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if d < 0 {
                fail(6);
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::syscall(libc::SYS_getdents64, d, buf.as_mut_ptr(), buf.len());
                if n < 0 {
                    fail(7);
                }
                if n == 0 {
                    break;
                }
                if libc::syscall(libc::SYS_write, wfd, buf.as_ptr(), n) != n {
                    fail(8);
                }
            }
            libc::_exit(0);
        }
    }
    if child < 0 {
        return Err(SysError::os("clone3 (listing POSIX message queues)"));
    }
    drop(wr);
    let mut data = Vec::new();
    let read = fs::File::from(rd).read_to_end(&mut data);
    let status = super::process::wait_exit(child as i32)?;
    read.map_err(|e| SysError::io("read the POSIX message queues' list", e))?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(SysError::Other(format!(
            "cannot list the POSIX message queues of {p} (helper status {status:#x})"
        )));
    }
    Ok(dirent_names(&data))
}

/// The names in a getdents64 buffer, "." and ".." aside.
fn dirent_names(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name (NUL-ended).
    while b.len() >= 19 {
        let reclen = u16::from_ne_bytes([b[16], b[17]]) as usize;
        if reclen < 19 || reclen > b.len() {
            break;
        }
        let name = &b[19..reclen];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        if name != b"." && name != b".." {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        b = &b[reclen..];
    }
    out
}

/// A file of /proc/sys (as the calling thread's namespaces show it), trimmed.
pub fn read_sysctl(rel: &str) -> Result<String> {
    let p = format!("/proc/sys/{rel}");
    fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| SysError::io(format!("read {p}"), e))
}

/// Write a file of /proc/sys (in the calling thread's namespaces).
pub fn write_sysctl(rel: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/{rel}");
    fs::write(&p, value).map_err(|e| SysError::io(format!("write {value:?} to {p}"), e))
}

/// A clock's reading in nanoseconds (in the calling process's time namespace).
pub fn clock_ns(clock: libc::clockid_t) -> Result<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer it is given.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    super::check(r as libc::c_long, || format!("clock_gettime({clock})"))?;
    Ok(ts
        .tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec))
}

/// The host's CLOCK_MONOTONIC and CLOCK_BOOTTIME (nanoseconds), which the offsets of
/// every time namespace are relative to: ckpt's readings less the offsets of the time
/// namespace it is in (a restore joins the tree's own when a user namespace of the
/// tree's owns it). /proc/self/timens_offsets shows those of its children's, which are
/// its own unless it made one for its children only (a restore without a user
/// namespace of the tree's: it stays in the one it started in, taken to be the host's,
/// as dump takes it). CLOCK_BOOTTIME is read first: dump reads CLOCK_MONOTONIC first,
/// so that with offsets made from both, a process's CLOCK_BOOTTIME never falls behind
/// its CLOCK_MONOTONIC (as it cannot on a host) for the time between the two readings.
pub fn host_clocks() -> Result<(i64, i64)> {
    let boot = clock_ns(libc::CLOCK_BOOTTIME)?;
    let now = (clock_ns(libc::CLOCK_MONOTONIC)?, boot);
    if inode(0, "time")? != inode(0, "time_for_children")? {
        return Ok(now);
    }
    let p = "/proc/self/timens_offsets";
    let text = fs::read_to_string(p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    let (m, b) =
        parse_timens_offsets(&text).ok_or_else(|| SysError::Other(format!("cannot parse {p}")))?;
    Ok((now.0.saturating_sub(m), now.1.saturating_sub(b)))
}

/// The offsets (monotonic, boottime; nanoseconds) of the time namespace process `pid`
/// is in, from /proc/PID/timens_offsets.
pub fn timens_offsets(pid: i32) -> Result<(i64, i64)> {
    let p = format!("/proc/{pid}/timens_offsets");
    let text = fs::read_to_string(&p).map_err(|e| SysError::io(format!("read {p}"), e))?;
    parse_timens_offsets(&text).ok_or_else(|| SysError::Other(format!("cannot parse {p}")))
}

/// (monotonic, boottime) offsets in nanoseconds from a /proc/PID/timens_offsets text:
/// lines "monotonic SECS NSECS" and "boottime SECS NSECS".
pub fn parse_timens_offsets(text: &str) -> Option<(i64, i64)> {
    let (mut mono, mut boot) = (None, None);
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let [name, s, n] = w.as_slice() else {
            continue;
        };
        let s: i64 = s.parse().ok()?;
        let n: i64 = n.parse().ok()?;
        let v = s.checked_mul(1_000_000_000)?.checked_add(n)?;
        match *name {
            "monotonic" => mono = Some(v),
            "boottime" => boot = Some(v),
            _ => {}
        }
    }
    Some((mono?, boot?))
}

/// The text /proc/PID/timens_offsets takes for offsets in nanoseconds (seconds may be
/// negative, nanoseconds not).
pub fn format_timens_offsets(mono: i64, boot: i64) -> String {
    let one = |name: &str, v: i64| {
        format!(
            "{name} {} {}\n",
            v.div_euclid(1_000_000_000),
            v.rem_euclid(1_000_000_000)
        )
    };
    format!("{}{}", one("monotonic", mono), one("boottime", boot))
}

/// Give the calling thread new namespaces (CLONE_NEW* `flags`): its children are
/// created in them (for a time namespace, only its children: it stays in its own).
/// `names`: the new UTS namespace's host and domain names; `sysctls`: files of
/// /proc/sys to write in the new namespaces; `offsets`: the new time namespace's
/// (monotonic, boottime) offsets, written before any process enters it. The calling
/// thread must be the thread group leader (/proc/self names it) when a time namespace
/// is created.
pub fn unshare_new(
    flags: libc::c_int,
    names: Option<(&[u8], &[u8])>,
    sysctls: &[(String, String)],
    offsets: Option<(i64, i64)>,
) -> Result<()> {
    if offsets.is_some() && rustix::thread::gettid() != rustix::process::getpid() {
        return Err(SysError::Other(
            "a new time namespace must be made by the main thread".into(),
        ));
    }
    // SAFETY: unshare with only CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET or
    // CLONE_NEWTIME changes the calling thread's namespaces (for children, in the case of time), no memory
    // or descriptor state other code relies on.
    let r = unsafe { libc::unshare(flags) };
    super::check(r as libc::c_long, || format!("unshare({flags:#x})"))?;
    if let Some((host, domain)) = names {
        rustix::system::sethostname(host).map_err(|e| SysError::io("sethostname", e.into()))?;
        rustix::system::setdomainname(domain)
            .map_err(|e| SysError::io("setdomainname", e.into()))?;
    }
    for (k, v) in sysctls {
        write_sysctl(k, v)?;
    }
    if let Some((m, b)) = offsets {
        let text = format_timens_offsets(m, b);
        fs::write("/proc/self/timens_offsets", &text)
            .map_err(|e| SysError::io(format!("write {text:?} to /proc/self/timens_offsets"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_names_of_a_getdents_buffer() {
        let mut b = Vec::new();
        for name in [&b"."[..], b"..", b"q1", b"longer-queue"] {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let mut e = vec![0u8; reclen];
            e[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            e[19..19 + name.len()].copy_from_slice(name);
            b.extend(e);
        }
        assert_eq!(dirent_names(&b), vec!["q1", "longer-queue"]);
        // A truncated or bad record ends the list.
        assert_eq!(dirent_names(&b[..b.len() - 3]), vec!["q1"]);
        assert!(dirent_names(&[0u8; 18]).is_empty());
    }

    #[test]
    fn a_child_of_ours_is_known_as_ours() {
        // (held_outside skips ckpt's own helper children by their parent)
        let mut c = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("spawn sleep");
        let pid = c.id() as i32;
        assert_eq!(parent_of(pid), Some(super::super::process::own_pid()));
        assert_eq!(parent_of(0), None);
        let _ = c.kill();
        let _ = c.wait();
    }

    #[test]
    fn kind_of_fd_asks_the_kernel_for_namespace_files_only() {
        use std::os::fd::AsRawFd;
        let n = fs::File::open("/proc/self/ns/net").expect("open our netns");
        let ino = fs::metadata("/proc/self/ns/net").expect("stat").ino();
        assert_eq!(kind_of_fd(n.as_raw_fd()), Some(("net", ino)));
        let u = fs::File::open("/proc/self/ns/uts").expect("open our utsns");
        assert_eq!(kind_of_fd(u.as_raw_fd()).map(|k| k.0), Some("uts"));
        let f = fs::File::open("/proc/self/status").expect("open a file");
        assert_eq!(kind_of_fd(f.as_raw_fd()), None);
        // (a pipe whose writer is gone: never opened, so nothing blocks)
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        drop(w);
        assert_eq!(kind_of_fd(r.as_raw_fd()), None);
        assert_eq!(kind_of_fd(-1), None);
    }

    #[test]
    fn timens_offsets_text() {
        let t = "monotonic           -5         250000000\nboottime         86400          0\n";
        assert_eq!(
            parse_timens_offsets(t),
            Some((-5 * 1_000_000_000 + 250_000_000, 86_400 * 1_000_000_000))
        );
        assert_eq!(parse_timens_offsets("monotonic 1 2\n"), None);
        let (m, b) = (-4_750_000_000, 3);
        assert_eq!(
            parse_timens_offsets(&format_timens_offsets(m, b)),
            Some((m, b))
        );
        assert_eq!(
            format_timens_offsets(-1, 0),
            "monotonic -1 999999999\nboottime 0 0\n"
        );
    }
}
