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
