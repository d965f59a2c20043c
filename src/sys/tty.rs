//! Terminals: reading and applying settings (termios, window size), creating a pty pair
//! for `restore --new-tty`, and relaying between our standard descriptors and its
//! master side until the restored tree's root exits (as script(1) does).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, Winsize};

use super::{Result, check, rerr};

// The settings in an image are glibc's `struct termios` (NCCS = 32 control characters,
// c_ispeed/c_ospeed as the B* codes of c_cflag), so `settings` and `apply` keep using
// libc's tcgetattr/tcsetattr: rustix's `Termios` is the kernel's termios2 (19 control
// characters, speeds in baud), and images written with one would not read the same
// with the other. The window size, the pty and the relay use rustix.

/// A terminal's settings as glibc's termios and the window size show them (the kinds
/// turn them into the image's `TtySettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    /// Control characters (c_cc), in order.
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

/// An all-zero glibc termios, for tcgetattr to fill or `apply` to set.
fn zero_termios() -> libc::termios {
    libc::termios {
        c_iflag: 0,
        c_oflag: 0,
        c_cflag: 0,
        c_lflag: 0,
        c_line: 0,
        c_cc: [0; libc::NCCS],
        c_ispeed: 0,
        c_ospeed: 0,
    }
}

/// The settings of the terminal behind `fd` (tcgetattr and TIOCGWINSZ).
pub fn settings(fd: BorrowedFd<'_>) -> Result<Settings> {
    let mut t = zero_termios();
    // SAFETY: `t` is a valid out-pointer; `fd` is a descriptor borrowed for the call.
    let r = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    check(r as libc::c_long, || "tcgetattr".into())?;
    let w = rustix::termios::tcgetwinsize(fd).map_err(|e| rerr("ioctl(TIOCGWINSZ)", e))?;
    Ok(Settings {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
        rows: w.ws_row,
        cols: w.ws_col,
        xpixel: w.ws_xpixel,
        ypixel: w.ws_ypixel,
    })
}

/// Apply `s` to the terminal behind `fd` (tcsetattr(TCSANOW) and TIOCSWINSZ).
pub fn apply(fd: BorrowedFd<'_>, s: &Settings) -> Result<()> {
    let mut t = zero_termios();
    t.c_iflag = s.iflag;
    t.c_oflag = s.oflag;
    t.c_cflag = s.cflag;
    t.c_lflag = s.lflag;
    t.c_line = s.line;
    for (d, c) in t.c_cc.iter_mut().zip(&s.cc) {
        *d = *c;
    }
    t.c_ispeed = s.ispeed;
    t.c_ospeed = s.ospeed;
    // SAFETY: `t` is a valid termios; `fd` is borrowed for the call.
    let r = unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) };
    check(r as libc::c_long, || "tcsetattr".into())?;
    let w = Winsize {
        ws_row: s.rows,
        ws_col: s.cols,
        ws_xpixel: s.xpixel,
        ws_ypixel: s.ypixel,
    };
    rustix::termios::tcsetwinsize(fd, w).map_err(|e| rerr("ioctl(TIOCSWINSZ)", e))
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, neither our controlling
/// terminal.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(|e| rerr("posix_openpt", e))?;
    with_peer(master)
}

/// [`open_pty`] through `ptmx`, a path descriptor (O_PATH) of a /dev/ptmx opened
/// earlier, maybe in another mount namespace: the pair is made in the devpts that
/// ptmx leads to there, and both sides are files of that namespace's mounts.
pub fn open_pty_through(ptmx: BorrowedFd<'_>) -> Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", ptmx.as_raw_fd());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| super::SysError::io(format!("open {path} (/dev/ptmx)"), e))?;
    with_peer(OwnedFd::from(f))
}

/// A new pty master unlocked, with its slave side (see [`open_pty`]).
fn with_peer(master: OwnedFd) -> Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    rustix::pty::unlockpt(&master).map_err(|e| rerr("unlockpt", e))?;
    // TIOCGPTPEER opens the slave without a path lookup (no race with /dev/pts).
    // Without O_CLOEXEC: TIOCGPTPEER keeps it in the description's flags (F_GETFL and
    // fdinfo would show it on every descriptor of the restored processes); ckpt's own
    // descriptor is made close-on-exec afterwards.
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(|e| rerr("ioctl(TIOCGPTPEER)", e))?;
    rustix::io::fcntl_setfd(&slave, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| rerr("fcntl(F_SETFD) on the new terminal", e))?;
    Ok((master, slave))
}

/// poll(2) on the descriptors `fds` asks about (None: an entry left out, as poll's fd
/// -1 is), retried on EINTR; `timeout_ms` -1 waits forever. Returns how many entries
/// have events and each entry's events (none for one left out).
fn poll(
    fds: &[Option<(BorrowedFd<'_>, PollFlags)>],
    timeout_ms: i32,
) -> Result<(usize, Vec<PollFlags>)> {
    let mut asked: Vec<PollFd<'_>> = fds
        .iter()
        .flatten()
        .map(|&(fd, events)| PollFd::from_borrowed_fd(fd, events))
        .collect();
    let timeout = (timeout_ms >= 0).then(|| rustix::event::Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    });
    loop {
        match rustix::event::poll(&mut asked, timeout.as_ref()) {
            Ok(n) => {
                let mut answers = asked.iter().map(PollFd::revents);
                let revents = fds
                    .iter()
                    .map(|f| match f {
                        Some(_) => answers.next().unwrap_or_else(PollFlags::empty),
                        None => PollFlags::empty(),
                    })
                    .collect();
                return Ok((n, revents));
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(rerr("poll", e)),
        }
    }
}

/// read(2) into `buf`: Ok(None) when it would block, Err with the errno otherwise.
fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::result::Result<Option<usize>, i32> {
    match rustix::io::read(fd, buf) {
        Ok(n) => Ok(Some(n)),
        Err(Errno::AGAIN | Errno::INTR) => Ok(None),
        Err(e) => Err(e.raw_os_error()),
    }
}

/// write(2) of `buf`: the bytes written (0 when it would block), Err with the errno.
fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) -> std::result::Result<usize, i32> {
    match rustix::io::write(fd, buf) {
        Ok(n) => Ok(n),
        Err(Errno::AGAIN | Errno::INTR) => Ok(0),
        Err(e) => Err(e.raw_os_error()),
    }
}

/// Write all of `buf` to `fd` (blocking), dropping it if `fd` fails (a closed stdout).
fn write_out(fd: BorrowedFd<'_>, mut buf: &[u8], ok: &mut bool) {
    while *ok && !buf.is_empty() {
        match write_fd(fd, buf) {
            Ok(0) => {
                if poll(&[Some((fd, PollFlags::OUT))], -1).is_err() {
                    *ok = false;
                }
            }
            Ok(n) => buf = &buf[n..],
            Err(_) => *ok = false,
        }
    }
}

/// Our standard input switched to raw mode while the relay runs, if it is a terminal
/// (as script(1) does: the new pty does the line editing and echo); put back on drop.
struct RawStdin(Option<rustix::termios::Termios>);

impl RawStdin {
    fn new() -> Self {
        let stdin = std::io::stdin();
        // Fails when it is not a terminal.
        let Ok(t) = rustix::termios::tcgetattr(stdin.as_fd()) else {
            return RawStdin(None);
        };
        let mut raw = t.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw);
        RawStdin(Some(t))
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let stdin = std::io::stdin();
            let _ = rustix::termios::tcsetattr(stdin.as_fd(), OptionalActions::Flush, t);
        }
    }
}

/// Copy our standard input to `master` and `master` to our standard output until process
/// `pid` (our child) exits, then what it left in the terminal; return its wait status.
/// End of our input sends the terminal's end-of-file character once (in canonical
/// mode), so a program reading a line sees the end as on a terminal.
pub fn relay(master: OwnedFd, pid: i32) -> Result<i32> {
    use rustix::fs::OFlags;
    let pidfd = super::process::pidfd_open(pid)?;
    let m = master.as_fd();
    rustix::fs::fcntl_setfl(m, OFlags::RDWR | OFlags::NONBLOCK)
        .map_err(|e| rerr("fcntl(F_SETFL) on the pty", e))?;
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let (input, output) = (stdin.as_fd(), stdout.as_fd());
    let _raw = RawStdin::new();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new(); // input not yet taken by the terminal
    let mut stdin_open = true;
    let mut master_open = true;
    let mut out_ok = true;
    loop {
        let master_events = if pending.is_empty() {
            PollFlags::IN
        } else {
            PollFlags::IN | PollFlags::OUT
        };
        let (_, revents) = poll(
            &[
                master_open.then_some((m, master_events)),
                (stdin_open && pending.len() < buf.len()).then_some((input, PollFlags::IN)),
                Some((pidfd.as_fd(), PollFlags::IN)),
            ],
            -1,
        )?;
        let readable = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
        if revents[0].intersects(readable) {
            match read_fd(m, &mut buf) {
                Ok(Some(0)) | Err(_) => master_open = false, // EIO: no slave is open
                Ok(Some(n)) => write_out(output, &buf[..n], &mut out_ok),
                Ok(None) => {}
            }
        }
        if master_open && !pending.is_empty() {
            match write_fd(m, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(_) => pending.clear(),
            }
        }
        if revents[1].intersects(readable) {
            match read_fd(input, &mut buf) {
                Ok(Some(0)) | Err(_) => {
                    stdin_open = false;
                    if let Ok(t) = rustix::termios::tcgetattr(m) {
                        if t.local_modes.contains(LocalModes::ICANON) {
                            pending.push(t.special_codes[SpecialCodeIndex::VEOF]);
                        }
                    }
                }
                Ok(Some(n)) => pending.extend_from_slice(&buf[..n]),
                Ok(None) => {}
            }
        }
        if revents[2].contains(PollFlags::IN) {
            break;
        }
    }
    let status = super::process::wait_exit(pid)?;
    // What the root (or anyone) wrote before it ended: read until the terminal is quiet.
    if master_open {
        loop {
            if poll(&[Some((m, PollFlags::IN))], 100)?.0 == 0 {
                break;
            }
            match read_fd(m, &mut buf) {
                Ok(Some(0)) | Err(_) => break,
                Ok(Some(n)) => write_out(output, &buf[..n], &mut out_ok),
                Ok(None) => {}
            }
        }
    }
    Ok(status)
}

// ---- pseudo-terminal pairs kept inside a tree ----

/// What the master side of a pty shows of the pair: its index (/dev/pts/N), packet mode,
/// the lock (TIOCSPTLCK), whether its slave side was closed after being opened (the
/// master then polls POLLHUP and reads fail with EIO), and how many bytes the slave
/// wrote that the master has not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyMaster {
    pub index: u32,
    pub packet: bool,
    pub locked: bool,
    pub slave_closed: bool,
    pub unread: u32,
    /// In packet mode, a status byte (flush, stop, start...) waits to be read.
    pub status_pending: bool,
}

/// An `int` an ioctl request writes (TIOCGPTN, TIOCGPKT, FIONREAD...).
fn ioctl_get_int(fd: BorrowedFd<'_>, req: libc::Ioctl, what: &str) -> Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: `req` writes one int to the valid pointer; `fd` is borrowed for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) };
    check(r as libc::c_long, || format!("ioctl({what})"))?;
    Ok(v)
}

/// An ioctl request that reads an `int` argument (TIOCPKT, TIOCSPTLCK).
fn ioctl_set_int(fd: BorrowedFd<'_>, req: libc::Ioctl, v: i32, what: &str) -> Result<()> {
    let v: libc::c_int = v;
    // SAFETY: `req` reads one int from the valid pointer; `fd` is borrowed for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &v as *const libc::c_int) };
    check(r as libc::c_long, || format!("ioctl({what})"))?;
    Ok(())
}

/// The state of the pty pair whose master is `master` (read only: nothing changes).
pub fn pty_master(master: BorrowedFd<'_>) -> Result<PtyMaster> {
    let index = ioctl_get_int(master, libc::TIOCGPTN, "TIOCGPTN")?;
    let packet = ioctl_get_int(master, libc::TIOCGPKT, "TIOCGPKT")? != 0;
    let locked = ioctl_get_int(master, libc::TIOCGPTLCK, "TIOCGPTLCK")? != 0;
    let unread = ioctl_get_int(master, libc::FIONREAD, "FIONREAD")?;
    let (_, ev) = poll(&[Some((master, PollFlags::PRI))], 0)?;
    let ev = ev.first().copied().unwrap_or_else(PollFlags::empty);
    Ok(PtyMaster {
        index: index as u32,
        packet,
        locked,
        slave_closed: ev.contains(PollFlags::HUP),
        unread: unread.max(0) as u32,
        status_pending: packet && ev.contains(PollFlags::PRI),
    })
}

/// How many bytes a terminal descriptor has to read (FIONREAD; in canonical mode only
/// complete lines count).
pub fn unread(fd: BorrowedFd<'_>) -> Result<u32> {
    Ok(ioctl_get_int(fd, libc::FIONREAD, "FIONREAD")?.max(0) as u32)
}

/// Whether a terminal is in exclusive mode (TIOCEXCL: only root may open it again).
pub fn exclusive(fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(ioctl_get_int(fd, libc::TIOCGEXCL, "TIOCGEXCL")? != 0)
}

/// The device number of the terminal a descriptor leads to (TIOCGDEV): for one open on
/// /dev/tty, the terminal that was its opener's controlling one.
pub fn device(fd: BorrowedFd<'_>) -> Result<u64> {
    // (The kernel's 32-bit encoding of a device number, as /proc/PID/stat's tty_nr,
    // which `libc::major` and `minor` read as they read a 64-bit one.)
    Ok(u64::from(
        ioctl_get_int(fd, libc::TIOCGDEV, "TIOCGDEV")? as u32
    ))
}

/// The line discipline of a terminal (TIOCGETD; N_TTY is 0).
pub fn line_discipline(fd: BorrowedFd<'_>) -> Result<i32> {
    ioctl_get_int(fd, libc::TIOCGETD, "TIOCGETD")
}

/// Open a new pty master at `path` (/dev/ptmx) with access mode `accmode` that gets
/// index `index`: the kernel gives the lowest free index, so masters with lower ones are
/// opened and kept until it comes, then closed. Fails (EBUSY) if the index is taken.
pub fn open_pty_at(path: &std::path::Path, accmode: i32, index: u32) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lower = Vec::new();
    loop {
        let f = std::fs::OpenOptions::new()
            .read(accmode != libc::O_WRONLY)
            .write(accmode != libc::O_RDONLY)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| super::SysError::io(format!("open {}", path.display()), e))?;
        let fd = OwnedFd::from(f);
        let got = ioctl_get_int(fd.as_fd(), libc::TIOCGPTN, "TIOCGPTN")? as u32;
        if got == index {
            return Ok(fd);
        }
        if got > index || lower.len() > index as usize {
            return Err(super::SysError::Other(format!(
                "pseudo-terminal /dev/pts/{index} is in use (a new one got /dev/pts/{got})"
            )));
        }
        lower.push(fd);
    }
}

/// Open a pty slave by its path, read-write, never as our controlling terminal
/// (close-on-exec).
pub fn open_slave_path(path: &std::path::Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| super::SysError::io(format!("open {}", path.display()), e))?;
    Ok(OwnedFd::from(f))
}

/// Switch packet mode (TIOCPKT) of a pty master.
pub fn set_packet(master: BorrowedFd<'_>, on: bool) -> Result<()> {
    ioctl_set_int(master, libc::TIOCPKT, i32::from(on), "TIOCPKT")
}

/// Lock or unlock (TIOCSPTLCK) the slave side of a pty master.
pub fn set_locked(master: BorrowedFd<'_>, on: bool) -> Result<()> {
    ioctl_set_int(master, libc::TIOCSPTLCK, i32::from(on), "TIOCSPTLCK")
}

/// Open the slave side of pty master `master` (TIOCGPTPEER; never our controlling
/// terminal).
pub fn open_peer(master: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    rustix::pty::ioctl_tiocgptpeer(master, flags).map_err(|e| rerr("ioctl(TIOCGPTPEER)", e))
}

/// Descriptors of processes not in `skip` that lead to a side of one of the pty pairs
/// `indexes` (/dev/pts/N, or a master whose fdinfo shows `tty-index: N`): (pid, fd,
/// index, master). Processes that vanish meanwhile are passed over.
pub fn pty_users(
    indexes: &std::collections::BTreeSet<u32>,
    skip: &std::collections::BTreeSet<i32>,
) -> Vec<(i32, i32, u32, bool)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if skip.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(fd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(link) = std::fs::read_link(f.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(n) = link
                .strip_prefix("/dev/pts/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if indexes.contains(&n) {
                    out.push((pid, fd, n, false));
                }
            } else if link == "/dev/ptmx" || link == "/dev/pts/ptmx" {
                let info =
                    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
                let n = info
                    .lines()
                    .find_map(|l| l.strip_prefix("tty-index:"))
                    .and_then(|v| v.trim().parse::<u32>().ok());
                if let Some(n) = n.filter(|n| indexes.contains(n)) {
                    out.push((pid, fd, n, true));
                }
            }
        }
    }
    out
}
