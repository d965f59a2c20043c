//! Terminals: reading and applying settings (termios, window size), creating a pty pair
//! for `restore --new-tty`, and relaying between our standard descriptors and its
//! master side until the restored tree's root exits (as script(1) does).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{Result, SysError, check};
use crate::model::TtySettings;

/// The settings of the terminal behind `fd` (tcgetattr and TIOCGWINSZ).
pub fn settings(fd: BorrowedFd<'_>) -> Result<TtySettings> {
    // SAFETY: termios and winsize are plain C structs for which all-zero is valid.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid out-pointer; `fd` is a descriptor borrowed for the call.
    let r = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    check(r as libc::c_long, || "tcgetattr".into())?;
    // SAFETY: as above.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one struct winsize to the valid pointer given.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w) };
    check(r as libc::c_long, || "ioctl(TIOCGWINSZ)".into())?;
    Ok(TtySettings {
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
pub fn apply(fd: BorrowedFd<'_>, s: &TtySettings) -> Result<()> {
    // SAFETY: all-zero is a valid termios.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
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
    let w = libc::winsize {
        ws_row: s.rows,
        ws_col: s.cols,
        ws_xpixel: s.xpixel,
        ws_ypixel: s.ypixel,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize from the valid pointer given.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &w) };
    check(r as libc::c_long, || "ioctl(TIOCSWINSZ)".into())?;
    Ok(())
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, neither our controlling
/// terminal.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags and returns a new descriptor we own.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    check(m as libc::c_long, || "posix_openpt".into())?;
    // SAFETY: just opened, owned here.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: unlockpt on a master descriptor we own.
    let r = unsafe { libc::unlockpt(master.as_raw_fd()) };
    check(r as libc::c_long, || "unlockpt".into())?;
    // TIOCGPTPEER opens the slave without a path lookup (no race with /dev/pts).
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER takes open flags as its argument and returns a new descriptor.
    let s = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    check(s as libc::c_long, || "ioctl(TIOCGPTPEER)".into())?;
    // SAFETY: just opened, owned here.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    Ok((master, slave))
}

/// poll(2) on `fds`, retried on EINTR; `timeout_ms` -1 waits forever.
fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize> {
    loop {
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SysError::io("poll", e));
        }
        return Ok(r as usize);
    }
}

/// read(2) into `buf`: Ok(None) when it would block, Err with the errno otherwise.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> std::result::Result<Option<usize>, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r >= 0 {
        return Ok(Some(r as usize));
    }
    match std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
    {
        libc::EAGAIN | libc::EINTR => Ok(None),
        e => Err(e),
    }
}

/// write(2) of `buf`: the bytes written (0 when it would block), Err with the errno.
fn write_fd(fd: RawFd, buf: &[u8]) -> std::result::Result<usize, i32> {
    // SAFETY: `buf` is valid for reads of its length.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if r >= 0 {
        return Ok(r as usize);
    }
    match std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
    {
        libc::EAGAIN | libc::EINTR => Ok(0),
        e => Err(e),
    }
}

/// Write all of `buf` to `fd` (blocking), dropping it if `fd` fails (a closed stdout).
fn write_out(fd: RawFd, mut buf: &[u8], ok: &mut bool) {
    while *ok && !buf.is_empty() {
        match write_fd(fd, buf) {
            Ok(0) => {
                let mut p = [libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                if poll(&mut p, -1).is_err() {
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
struct RawStdin(Option<libc::termios>);

impl RawStdin {
    fn new() -> Self {
        // SAFETY: all-zero is a valid termios; tcgetattr fills it or fails (not a tty).
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer; descriptor 0 is only queried.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawStdin(None);
        }
        let mut raw = t;
        // SAFETY: cfmakeraw edits the valid termios given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: a valid termios for descriptor 0, a terminal.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
        RawStdin(Some(t))
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: the termios read from descriptor 0 before.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, t) };
        }
    }
}

/// Copy our standard input to `master` and `master` to our standard output until process
/// `pid` (our child) exits, then what it left in the terminal; return its wait status.
/// End of our input sends the terminal's end-of-file character once (in canonical
/// mode), so a program reading a line sees the end as on a terminal.
pub fn relay(master: OwnedFd, pid: i32) -> Result<i32> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    check(pidfd, || format!("pidfd_open({pid})"))?;
    // SAFETY: just opened, owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let m = master.as_raw_fd();
    // SAFETY: F_SETFL on a descriptor we own.
    let r = unsafe { libc::fcntl(m, libc::F_SETFL, libc::O_RDWR | libc::O_NONBLOCK) };
    check(r as libc::c_long, || "fcntl(F_SETFL) on the pty".into())?;
    let _raw = RawStdin::new();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new(); // input not yet taken by the terminal
    let mut stdin_open = true;
    let mut master_open = true;
    let mut out_ok = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: if master_open { m } else { -1 },
                events: libc::POLLIN | if pending.is_empty() { 0 } else { libc::POLLOUT },
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open && pending.len() < buf.len() {
                    0
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        poll(&mut fds, -1)?;
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_fd(m, &mut buf) {
                Ok(Some(0)) | Err(_) => master_open = false, // EIO: no slave is open
                Ok(Some(n)) => write_out(1, &buf[..n], &mut out_ok),
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
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_fd(0, &mut buf) {
                Ok(Some(0)) | Err(_) => {
                    stdin_open = false;
                    // SAFETY: all-zero is a valid termios, filled by tcgetattr.
                    let mut t: libc::termios = unsafe { std::mem::zeroed() };
                    // SAFETY: valid out-pointer, our master descriptor.
                    if unsafe { libc::tcgetattr(m, &mut t) } == 0 && t.c_lflag & libc::ICANON != 0 {
                        pending.push(t.c_cc[libc::VEOF]);
                    }
                }
                Ok(Some(n)) => pending.extend_from_slice(&buf[..n]),
                Ok(None) => {}
            }
        }
        if fds[2].revents & libc::POLLIN != 0 {
            break;
        }
    }
    let status = super::process::wait_exit(pid)?;
    // What the root (or anyone) wrote before it ended: read until the terminal is quiet.
    if master_open {
        loop {
            let mut p = [libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            }];
            if poll(&mut p, 100)? == 0 {
                break;
            }
            match read_fd(m, &mut buf) {
                Ok(Some(0)) | Err(_) => break,
                Ok(Some(n)) => write_out(1, &buf[..n], &mut out_ok),
                Ok(None) => {}
            }
        }
    }
    Ok(status)
}
