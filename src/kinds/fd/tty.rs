//! Terminals: settings, window size, controlling terminal.

use super::OpenFd;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::FileId;
use crate::model::{Checkpoint, FdKind, Process, PtyState, TtySettings, TtyState};
use crate::remote::{Ctx, move_fd, take_remote_fd};
use crate::sys::{self, proc as procfs};

// ---- collect (dump) ----

/// A terminal's settings as `sys::tty::settings` read them, for the image.
impl From<sys::tty::Settings> for TtySettings {
    fn from(s: sys::tty::Settings) -> Self {
        TtySettings {
            iflag: s.iflag,
            oflag: s.oflag,
            cflag: s.cflag,
            lflag: s.lflag,
            line: s.line,
            cc: s.cc,
            ispeed: s.ispeed,
            ospeed: s.ospeed,
            rows: s.rows,
            cols: s.cols,
            xpixel: s.xpixel,
            ypixel: s.ypixel,
        }
    }
}

/// Whether device `id` is a terminal (a virtual console, a serial line or a pty).
pub(crate) fn is_tty(id: &FileId) -> bool {
    let major = libc::major(id.rdev);
    matches!(major, 4 | 5 | 136..=143)
}

/// Device numbers of the pty masters' multiplexer (/dev/ptmx) and of /dev/tty
/// (Documentation/admin-guide/devices.txt).
const PTMX: (u32, u32) = (5, 2);
const DEV_TTY: (u32, u32) = (5, 0);
/// The terminal line discipline's number (N_TTY, include/uapi/linux/tty.h).
const N_TTY: i32 = 0;
/// Majors of the Unix98 pty slaves (/dev/pts/N): 136-143 as devices.txt lists them,
/// 256 minors each; devpts numbers every slave under 136 with a 20-bit minor.
const PTS_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// The /dev/pts index of a pty slave's device number, if it is one.
pub(crate) fn pts_index(rdev: u64) -> Option<u32> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    PTS_MAJORS
        .contains(&major)
        .then(|| (major - PTS_MAJORS.start()) * 256 + minor)
}

/// The device number of pty slave `index`: devpts gives every slave the first major,
/// with the index as its (20-bit) minor.
pub(crate) fn pts_rdev(index: u32) -> u64 {
    libc::makedev(*PTS_MAJORS.start(), index)
}

/// A terminal open as descriptor `d`. A pty master or slave, or /dev/tty, is decided
/// once the whole tree is known ([`resolve_ptys`]); another terminal is kept as a
/// standard descriptor (0-2) connected at restore to ckpt's own, with its settings, and
/// refused elsewhere.
pub(crate) fn collect(d: &OpenFd, id: &FileId) -> DumpResult<FdKind> {
    use std::os::fd::AsFd;
    let dev = (libc::major(id.rdev), libc::minor(id.rdev));
    if dev == PTMX {
        let m = sys::process::steal_fd(d.pid, d.fd)?;
        let info = sys::tty::pty_master(m.as_fd())?;
        return Ok(FdKind::Pty {
            index: info.index,
            master: true,
            flags: d.flags,
        });
    }
    if let Some(index) = pts_index(id.rdev) {
        return Ok(FdKind::Pty {
            index,
            master: false,
            flags: d.flags,
        });
    }
    if dev == DEV_TTY {
        return Ok(FdKind::DevTty {
            index: u32::MAX,
            flags: d.flags,
        });
    }
    if d.fd <= 2 {
        let tty = Some(Box::new(tty_state(d.pid, d.fd, id.rdev, &d.link)?));
        return Ok(FdKind::Inherited {
            what: d.name.clone(),
            flags: d.flags,
            tty,
        });
    }
    Err(d.not_yet("a terminal"))
}

/// Pseudo-terminal pairs whose master is in the tree are kept ([`PtyState`], with their
/// settings, modes and controlling session); a slave (or /dev/tty) leading to a
/// terminal outside is a standard descriptor connected at restore to ckpt's own (0-2),
/// or refused. Refused too: a side held by a process outside the tree, a session whose
/// controlling terminal restore could not give back. Data queued in either direction
/// (a terminal's queue cannot be read without consuming it) is returned apart, as a
/// refusal the dump makes only once nothing else refuses it, since it may go away
/// ([`crate::error::DumpError::TtyBusy`]).
pub(crate) fn resolve_ptys(
    procs: &mut [Process],
) -> DumpResult<(Vec<PtyState>, Option<crate::error::DumpError>)> {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::fd::AsFd;
    let any = procs.iter().any(|p| {
        p.fds
            .iter()
            .any(|f| matches!(f.kind, FdKind::Pty { .. } | FdKind::DevTty { .. }))
    });
    if !any {
        return Ok((Vec::new(), None));
    }
    let mut masters: BTreeMap<u32, (i32, i32, Vec<u8>, u32)> = BTreeMap::new();
    let mut slaves: BTreeMap<u32, (i32, i32)> = BTreeMap::new();
    for p in procs.iter() {
        for f in &p.fds {
            if let FdKind::Pty {
                index,
                master,
                flags,
            } = f.kind
            {
                if master {
                    let link = procfs::readlink(&format!("/proc/{}/fd/{}", p.pid, f.fd))?;
                    masters.entry(index).or_insert((p.pid, f.fd, link, flags));
                } else {
                    slaves.entry(index).or_insert((p.pid, f.fd));
                }
            }
        }
    }
    // Each process's controlling terminal and its foreground group (/proc/PID/stat).
    let mut ctty: BTreeMap<i32, (u64, i32)> = BTreeMap::new();
    // (Not ckpt's own, which stands for the descriptors only in flight: `inflight`.)
    let me = std::process::id() as i32;
    for p in procs.iter().filter(|p| !p.is_zombie() && p.pid != me) {
        let st = procfs::stat(p.pid)?;
        ctty.insert(p.pid, (st.field(7), st.field(8) as i64 as i32));
    }
    let mut out = Vec::new();
    // Data queued in a pair: refused last, as it may go away (see `DumpError::TtyBusy`).
    let mut busy = None;
    for (&index, (pid, fd, link, _)) in &masters {
        let m = sys::process::steal_fd(*pid, *fd)?;
        let info = sys::tty::pty_master(m.as_fd())?;
        let name = format!("/dev/pts/{index}");
        if info.unread > 0 {
            busy.get_or_insert(busy_err(
                *pid,
                format!(
                    "file descriptor {fd}, the master of pseudo-terminal {name}, has {} bytes \
                     the slave side wrote and it has not read yet; a terminal's queue cannot \
                     be read without consuming it (dump again once the program has read them)",
                    info.unread
                ),
            ));
        }
        if info.status_pending {
            busy.get_or_insert(busy_err(
                *pid,
                format!(
                    "file descriptor {fd}, the master of pseudo-terminal {name} in packet \
                     mode, has a status byte (TIOCPKT) it has not read yet; it cannot be \
                     read without consuming it"
                ),
            ));
        }
        match slaves.get(&index) {
            Some(&(spid, sfd)) => {
                let s = sys::process::steal_fd(spid, sfd)?;
                let ldisc = sys::tty::line_discipline(s.as_fd())?;
                if ldisc != N_TTY {
                    return Err(unsupported(
                        spid,
                        format!(
                            "file descriptor {sfd} ({name}) uses line discipline {ldisc}, \
                             not the terminal one (N_TTY); not supported yet"
                        ),
                    ));
                }
                if sys::tty::exclusive(s.as_fd())? {
                    return Err(unsupported(
                        spid,
                        format!(
                            "file descriptor {sfd} ({name}) is in exclusive mode (TIOCEXCL); \
                             not supported yet"
                        ),
                    ));
                }
                let n = sys::tty::unread(s.as_fd())?;
                if n > 0 {
                    busy.get_or_insert(busy_err(
                        spid,
                        format!(
                            "file descriptor {sfd} ({name}) has {n} bytes of input it has not \
                             read yet; a terminal's queue cannot be read without consuming it \
                             (dump again once the program has read them)"
                        ),
                    ));
                }
            }
            None if !info.slave_closed => {
                return Err(unsupported(
                    *pid,
                    format!(
                        "file descriptor {fd} is the master of pseudo-terminal {name}, whose \
                         slave side no process of the tree holds (held outside it, or never \
                         opened); not supported yet"
                    ),
                ));
            }
            None => {}
        }
        let rdev = pts_rdev(index);
        let in_session: Vec<&Process> = procs
            .iter()
            .filter(|q| ctty.get(&q.pid).is_some_and(|c| c.0 == rdev))
            .collect();
        let (session, fg_pgid) = match in_session.first() {
            None => (0, 0),
            Some(q) => {
                let sid = q.sid;
                let fg = ctty.get(&q.pid).map_or(0, |c| c.1);
                check_ctty_session(procs, &ctty, rdev, sid, fg, &name)?;
                (sid, fg)
            }
        };
        let path = link.clone();
        if path != b"/dev/ptmx" && path != b"/dev/pts/ptmx" {
            return Err(unsupported(
                *pid,
                format!(
                    "file descriptor {fd} is a pty master opened as {}; only /dev/ptmx and \
                     /dev/pts/ptmx are supported",
                    String::from_utf8_lossy(&path)
                ),
            ));
        }
        out.push(PtyState {
            index,
            master_path: path,
            settings: sys::tty::settings(m.as_fd())
                .map_err(crate::error::DumpError::from)?
                .into(),
            packet: info.packet,
            locked: info.locked,
            slave_closed: info.slave_closed && !slaves.contains_key(&index),
            session,
            fg_pgid,
        });
    }
    // Sides held outside the tree: the pair could not be given back to them.
    let kept: BTreeSet<u32> = out.iter().map(|t| t.index).collect();
    let tree: BTreeSet<i32> = procs.iter().map(|p| p.pid).collect();
    let outside = if kept.is_empty() {
        Vec::new()
    } else {
        sys::tty::pty_users(&kept, &tree)
    };
    if let Some(&(opid, ofd, index, master)) = outside.first() {
        let (pid, fd, ..) = masters.get(&index).cloned().unwrap_or_default();
        return Err(unsupported(
            pid,
            format!(
                "file descriptor {fd} is the master of pseudo-terminal /dev/pts/{index}, whose \
                 {} is also held by process {opid} (descriptor {ofd}) outside the dumped \
                 tree; dump the tree that holds every side of it",
                if master { "master" } else { "slave side" }
            ),
        ));
    }
    // Slaves and /dev/tty leading to terminals outside: standard descriptors inherited
    // from restore, or refused.
    for p in procs.iter_mut() {
        let pid = p.pid;
        let own = ctty.get(&pid).map_or(0, |c| c.0);
        for f in p.fds.iter_mut() {
            // ckpt's copy of a /dev/tty only in flight: the terminal it leads to
            // (TIOCGDEV), its opener's controlling one.
            let own = match f.kind {
                FdKind::DevTty { .. } if pid == me => {
                    let copy = sys::process::steal_fd(pid, f.fd)?;
                    sys::tty::device(copy.as_fd()).unwrap_or(0)
                }
                _ => own,
            };
            let (rdev, flags, what) = match f.kind {
                FdKind::Pty {
                    index,
                    master: false,
                    flags,
                } if !kept.contains(&index) => {
                    (pts_rdev(index), flags, format!("/dev/pts/{index}"))
                }
                FdKind::DevTty { flags, .. } => match pts_index(own).filter(|i| kept.contains(i)) {
                    Some(i) => {
                        f.kind = FdKind::DevTty { index: i, flags };
                        continue;
                    }
                    None => (own, flags, "/dev/tty".to_string()),
                },
                _ => continue,
            };
            if f.fd > 2 {
                return Err(unsupported(
                    pid,
                    format!(
                        "file descriptor {} is a terminal ({what}) whose master side is \
                         outside the dumped tree; only standard descriptors 0-2 can lead to \
                         such a terminal (restore connects them to its own)",
                        f.fd
                    ),
                ));
            }
            let tty = tty_state(pid, f.fd, rdev, what.as_bytes())?;
            f.kind = FdKind::Inherited {
                what,
                flags,
                tty: Some(Box::new(tty)),
            };
            f.shared_with = None;
        }
    }
    Ok((out, busy))
}

/// A refusal for data queued in a terminal, which the program may read meanwhile.
fn busy_err(pid: i32, why: String) -> crate::error::DumpError {
    crate::error::DumpError::TtyBusy { pid, why }
}

/// The session whose controlling terminal is pty `name` (device `rdev`) must be one
/// restore can give it to: its leader in the tree, every process of the tree in it
/// holding that terminal, and its foreground group a group of the tree in it.
fn check_ctty_session(
    procs: &[Process],
    ctty: &std::collections::BTreeMap<i32, (u64, i32)>,
    rdev: u64,
    sid: i32,
    fg: i32,
    name: &str,
) -> DumpResult<()> {
    let root = procs.first().map_or(0, |p| p.pid);
    if !procs.iter().any(|q| q.pid == sid && !q.is_zombie()) {
        return Err(unsupported(
            root,
            format!(
                "pseudo-terminal {name} is the controlling terminal of session {sid}, whose \
                 leader is not in the dumped tree; restore could not make it that session's \
                 terminal (dump the tree from the session's leader)"
            ),
        ));
    }
    for q in procs.iter().filter(|q| !q.is_zombie()) {
        let has = ctty.get(&q.pid).is_some_and(|c| c.0 == rdev);
        if has != (q.sid == sid) {
            return Err(unsupported(
                q.pid,
                format!(
                    "it is in session {} and {} pseudo-terminal {name} as controlling terminal, \
                     which session {sid} has; not supported yet",
                    q.sid,
                    if has { "has" } else { "does not have" }
                ),
            ));
        }
    }
    if !procs
        .iter()
        .any(|q| q.pgid == fg && q.sid == sid && !q.is_zombie())
    {
        return Err(unsupported(
            sid,
            format!(
                "the foreground process group of its controlling terminal {name} is {fg}, no \
                 process group of the dumped tree in its session; restore could not give it \
                 back"
            ),
        ));
    }
    Ok(())
}

/// A terminal on standard descriptor `fd`: its settings (read through a duplicate of the
/// descriptor; left out if the terminal no longer answers, e.g. hung up) and whether it
/// is the process's controlling terminal, with its foreground group (/proc/PID/stat).
fn tty_state(pid: i32, fd: i32, rdev: u64, link: &[u8]) -> DumpResult<TtyState> {
    use std::os::fd::AsFd;
    let dup = sys::process::steal_fd(pid, fd)?;
    let settings = sys::tty::settings(dup.as_fd()).ok().map(TtySettings::from);
    // (Its file system: a devpts instance of the tree's own, or another.)
    let dev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::File::from(dup).metadata().map_or(0, |m| m.dev())
    };
    let st = procfs::stat(pid)?;
    let controlling = st.field(7) == rdev;
    Ok(TtyState {
        path: link.to_vec(),
        rdev,
        settings,
        controlling,
        fg_pgid: if controlling {
            st.field(8) as i64 as i32
        } else {
            0
        },
        dev,
    })
}

// ---- checks (plan) ----

/// Pseudo-terminal pairs: each is recorded once, held by exactly one master
/// description of the image, opened by a known path, the controlling terminal of a
/// session led by a process of the image (one terminal per session), with a foreground
/// group of that session; every pty and /dev/tty descriptor names a known pair.
pub(crate) fn check_ptys(ckpt: &Checkpoint, problems: &mut Vec<Problem>) {
    use std::collections::BTreeSet;
    let procs = &ckpt.processes;
    let mut seen = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    for t in &ckpt.ptys {
        let masters = procs
            .iter()
            .flat_map(|q| q.fds.iter())
            .filter(|f| {
                f.shared_with.is_none()
                    && matches!(f.kind, FdKind::Pty { index, master: true, .. } if index == t.index)
            })
            .count();
        let path_ok = t.master_path == b"/dev/ptmx" || t.master_path == b"/dev/pts/ptmx";
        let session_ok = t.session == 0
            || (procs
                .iter()
                .any(|q| q.pid == t.session && q.sid == t.session && !q.is_zombie())
                && procs
                    .iter()
                    .any(|q| q.pgid == t.fg_pgid && q.sid == t.session && !q.is_zombie())
                && sessions.insert(t.session));
        if !seen.insert(t.index) || t.index >= MAX_PTYS || masters != 1 || !path_ok || !session_ok {
            check::p(
                problems,
                "malformed",
                format!("invalid pseudo-terminal {}", t.index),
            );
        }
    }
    for q in procs {
        for f in &q.fds {
            if let FdKind::Pty { index, .. } | FdKind::DevTty { index, .. } = f.kind {
                if !seen.contains(&index) {
                    check::p(
                        problems,
                        "malformed",
                        format!(
                            "descriptor {} of process {} is an unknown pseudo-terminal",
                            f.fd, q.pid
                        ),
                    );
                }
            }
        }
    }
}

/// Pty numbers the kernel can hand out (NR_UNIX98_PTY_MAX, include/linux/tty.h).
const MAX_PTYS: u32 = 1 << 20;

/// How long a pty index of the image may stay taken after its tree was killed (the
/// index is free once every descriptor of the pair is closed, as the processes exit).
const PTY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Each pty index of the image is free on this host (/dev/pts/N does not exist), but
/// those a dumped tree holds (`held.live`: they are its own).
pub(crate) fn check_pty_indexes(
    ckpt: &Checkpoint,
    held: &check::Held,
    problems: &mut Vec<Problem>,
) {
    if held.live {
        return;
    }
    let until = std::time::Instant::now() + PTY_GRACE;
    for t in &ckpt.ptys {
        let path = format!("/dev/pts/{}", t.index);
        while std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if std::path::Path::new(&path).exists() {
            check::p(
                problems,
                "pty-taken",
                format!(
                    "pseudo-terminal {path} is in use on this host; the restored programs \
                     hold it under that name"
                ),
            );
        }
    }
}

/// What `inspect` says of a pty side or /dev/tty.
pub(crate) fn describe_pty(ckpt: &Checkpoint, index: u32, master: Option<bool>) -> String {
    let side = match master {
        Some(true) => "master of pseudo-terminal",
        Some(false) => "slave side of pseudo-terminal",
        None => "/dev/tty, the controlling terminal",
    };
    let extra = ckpt
        .ptys
        .iter()
        .find(|t| t.index == index)
        .map(|t| {
            format!(
                " ({}x{}{}{}{})",
                t.settings.cols,
                t.settings.rows,
                if t.packet { ", packet mode" } else { "" },
                if t.locked { ", locked" } else { "" },
                if t.session != 0 {
                    format!(", controlling terminal of session {}", t.session)
                } else {
                    String::new()
                }
            )
        })
        .unwrap_or_default();
    format!("{side} /dev/pts/{index}{extra}")
}

// `pub`, not `pub(crate)`: `restore::plan` re-exports both (the public `stage` takes a
// `TtyPlan`).

/// What `restore --new-tty` does with the image's terminal: the tree's root becomes the
/// leader of a new session whose controlling terminal (if the terminal was one at dump)
/// is a new pty, given these settings, with this foreground group.
#[derive(Debug, Clone)]
pub struct TtyPlan {
    pub settings: Option<crate::model::TtySettings>,
    /// Make the new pty the root's controlling terminal.
    pub controlling: bool,
    /// The foreground process group to give it (a group of the image, or the root's).
    pub fg_pgid: i32,
}

/// Check that the image's terminal can be replaced by a new pty (`restore --new-tty`):
/// standard descriptors that led to a terminal, all the same one, all held by
/// processes of the root's session (the session the new terminal gets).
pub fn tty_plan(ckpt: &Checkpoint) -> std::result::Result<TtyPlan, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(root) = ckpt.processes.first() else {
        check::p(
            &mut problems,
            "malformed",
            "the image has no process".into(),
        );
        return Err(problems);
    };
    // (A tree with a PID namespace of its own gets it too: its root, the namespace's
    // init, leads the session; the foreground group is named as the namespace numbers
    // it when it is given, `tree::set_tty_foreground`.)
    if ckpt.pid_namespace_init_outside {
        check::p(
            &mut problems,
            "unsupported",
            "--new-tty: the tree ran in a PID namespace whose init was outside it; \
             restoring it onto a new terminal is not supported yet (restore it without \
             --new-tty)"
                .into(),
        );
    }
    let ttys: Vec<(&Process, i32, &crate::model::TtyState)> = ckpt
        .processes
        .iter()
        .flat_map(|q| {
            q.fds.iter().filter_map(move |f| match &f.kind {
                FdKind::Inherited { tty: Some(t), .. } => Some((q, f.fd, &**t)),
                _ => None,
            })
        })
        .collect();
    if ttys.is_empty() {
        check::p(
            &mut problems,
            "unsupported",
            "--new-tty: no standard descriptor of the image led to a terminal at dump; \
             restore it without --new-tty"
                .into(),
        );
    }
    if let Some((_, _, first)) = ttys.first() {
        if ttys.iter().any(|(_, _, t)| t.rdev != first.rdev) {
            check::p(
                &mut problems,
                "unsupported",
                "--new-tty: standard descriptors of the image led to more than one terminal; \
                 only one can be replaced by a new pty"
                    .into(),
            );
        }
    }
    for (q, fd, _) in &ttys {
        if q.sid != root.sid {
            check::p(
                &mut problems,
                "unsupported",
                format!(
                    "--new-tty: process {} (in session {}, not that of the root {}) has the \
                     terminal on descriptor {fd}; the new terminal can only belong to the \
                     root's session",
                    q.pid, q.sid, root.pid
                ),
            );
        }
    }
    if let Some(t) = ckpt
        .ptys
        .iter()
        .find(|t| t.session == root.sid && t.session != 0)
    {
        check::p(
            &mut problems,
            "unsupported",
            format!(
                "--new-tty: the root's session has pseudo-terminal /dev/pts/{} of the image as \
                 its controlling terminal; restore it without --new-tty",
                t.index
            ),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let ctl = ttys.iter().find(|(_, _, t)| t.controlling);
    let fg = ctl.map(|(_, _, t)| t.fg_pgid).unwrap_or(0);
    // A foreground group of the image keeps its place; any other (the old shell's, or
    // the root's group led from outside, which the root now leads) becomes the root's.
    let fg_pgid = if fg > 0
        && ckpt
            .processes
            .iter()
            .any(|q| q.pid == fg && q.pgid == fg && q.sid == root.sid && !q.is_zombie())
    {
        fg
    } else {
        root.pid
    };
    Ok(TtyPlan {
        settings: ttys.iter().find_map(|(_, _, t)| t.settings.clone()),
        controlling: ctl.is_some(),
        fg_pgid,
    })
}

/// What `inspect` says of a standard descriptor inherited from restore.
pub(crate) fn describe_inherited(what: &str, tty: Option<&TtyState>) -> String {
    match tty {
        None => format!("inherited from restore ({what})"),
        Some(t) => format!(
            "inherited from restore ({what}: a terminal{}{}; --new-tty gives it a new one)",
            if t.controlling {
                ", the controlling one"
            } else {
                ""
            },
            match &t.settings {
                Some(s) => format!(", {}x{}", s.cols, s.rows),
                None => String::new(),
            }
        ),
    }
}

// ---- restore (stage) ----

/// The image's pty pairs, opened by ckpt for the stage (index -> its master): every
/// descriptor of a pair is taken from these (`pidfd_getfd`), so the processes share
/// ckpt's master description, and slaves are opened from it (TIOCGPTPEER).
#[derive(Default)]
pub(crate) struct PtyMasters(pub(crate) std::collections::BTreeMap<u32, std::os::fd::OwnedFd>);

impl PtyMasters {
    /// ckpt's descriptor of the master of pair `index`.
    pub(crate) fn fd(&self, index: u32) -> RestoreResult<i32> {
        use std::os::fd::AsRawFd;
        self.0
            .get(&index)
            .map(|m| m.as_raw_fd())
            .ok_or_else(|| RestoreError::Malformed(format!("unknown pseudo-terminal {index}")))
    }
}

/// Open every pty pair of the image under its own index (lowest first), unlocked, with
/// its settings and packet mode.
pub(crate) fn open_ptys(ckpt: &Checkpoint) -> RestoreResult<PtyMasters> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let mut out = PtyMasters::default();
    let mut ptys: Vec<&PtyState> = ckpt.ptys.iter().collect();
    ptys.sort_by_key(|t| t.index);
    for t in ptys {
        crate::error::fault_point("create a pseudo-terminal")?;
        let accmode = ckpt
            .processes
            .iter()
            .flat_map(|q| q.fds.iter())
            .find_map(|f| match f.kind {
                FdKind::Pty {
                    index,
                    master: true,
                    flags,
                } if index == t.index && f.shared_with.is_none() => {
                    Some(flags as i32 & libc::O_ACCMODE)
                }
                _ => None,
            })
            .unwrap_or(libc::O_RDWR);
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&t.master_path));
        let m = sys::tty::open_pty_at(path, accmode, t.index)?;
        sys::tty::set_locked(m.as_fd(), false)?;
        sys::tty::apply(m.as_fd(), &sys::tty::Settings::from(&t.settings))?;
        if t.packet {
            sys::tty::set_packet(m.as_fd(), true)?;
        }
        out.0.insert(t.index, m);
    }
    Ok(out)
}

/// Once every process has its descriptors: a pair whose slave side had been closed
/// gets it opened and closed again (its master then reads EIO, as it did), and locked
/// pairs are locked again.
pub(crate) fn finish_ptys(ckpt: &Checkpoint, masters: &PtyMasters) -> RestoreResult<()> {
    use std::os::fd::AsFd;
    for t in &ckpt.ptys {
        let Some(m) = masters.0.get(&t.index) else {
            continue;
        };
        crate::error::fault_point("finish a pseudo-terminal")?;
        if t.slave_closed {
            drop(sys::tty::open_peer(m.as_fd())?);
        }
        if t.locked {
            sys::tty::set_locked(m.as_fd(), true)?;
        }
    }
    Ok(())
}

/// A side of pty pair `index` for descriptor `f`, as a new descriptor of the process:
/// its master (ckpt's, shared), or a new open description of its slave side.
pub(crate) fn make_pty_fd(
    cx: &mut Ctx<'_>,
    masters: &PtyMasters,
    index: u32,
    master: bool,
    flags: u32,
) -> RestoreResult<u64> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(
        cx,
        me,
        masters.fd(index)? as u64,
        "take a pseudo-terminal master",
    )?;
    if master {
        return Ok(n);
    }
    // A slave opened by its name has O_LARGEFILE (open(2) adds it on 64-bit), one
    // opened with TIOCGPTPEER not, and F_SETFL cannot change it: open it the same way.
    // (Not with O_CLOEXEC either: TIOCGPTPEER would keep it in the status flags.)
    let open = (flags as i32 & libc::O_ACCMODE) | libc::O_NOCTTY;
    let s = if flags & linux_raw_sys::general::O_LARGEFILE != 0 {
        let path = cx.put_cstr(0, format!("/dev/pts/{index}").as_bytes())?;
        cx.call(
            "open a pseudo-terminal's slave side",
            crate::arch::native::nr::OPENAT,
            [libc::AT_FDCWD as u64, path, open as u64, 0, 0, 0],
        )?
    } else {
        cx.call(
            "ioctl(TIOCGPTPEER)",
            crate::arch::native::nr::IOCTL,
            [n, libc::TIOCGPTPEER, open as u64, 0, 0, 0],
        )?
    };
    cx.close(n)?;
    Ok(s)
}

/// /dev/tty, opened by the process (its controlling terminal is the image's pty by
/// now).
pub(crate) fn open_dev_tty(cx: &mut Ctx<'_>, flags: u32) -> RestoreResult<u64> {
    let path = cx.put_cstr(0, b"/dev/tty")?;
    let open = (flags as i32 & libc::O_ACCMODE) | libc::O_NOCTTY;
    cx.call(
        "open /dev/tty",
        crate::arch::native::nr::OPENAT,
        [libc::AT_FDCWD as u64, path, open as u64, 0, 0, 0],
    )
}

/// A terminal the image's standard descriptors led to that was a pty slave of a devpts
/// instance of the tree's own mount namespace (a container's console: runc opens it in
/// the container's /dev/pts, binds it on /dev/console and gives it as 0-2, the master
/// going to the console socket): made again in the new instance under its index while
/// the namespace is built, so that binds of it find it; the tree gets its slave side
/// (`restore --new-tty`, `criu`'s orphan_pts_master), the caller its master.
pub(crate) struct ConsolePty {
    pub(crate) master: std::os::fd::OwnedFd,
    /// Opened by its name (as the original was: O_LARGEFILE shows in its flags).
    pub(crate) slave: std::os::fd::OwnedFd,
    pub(crate) index: u32,
}

/// The index of the pty slave of devpts mount `m` (of the tree's own namespace) that a
/// standard descriptor of the image leads to, if one does.
pub(crate) fn console_in(ckpt: &Checkpoint, m: &crate::model::Mount) -> Option<u32> {
    if m.fstype != "devpts" || m.root != b"/" || m.dev == 0 {
        return None;
    }
    ckpt.processes
        .iter()
        .flat_map(|q| q.fds.iter())
        .find_map(|f| match &f.kind {
            FdKind::Inherited { tty: Some(t), .. } if t.dev == m.dev => pts_index(t.rdev),
            _ => None,
        })
}

/// Make pty `index` in the devpts instance mounted on `target` (through its ptmx),
/// unlocked, and open its slave by its name there.
pub(crate) fn make_console(target: &[u8], index: u32) -> RestoreResult<ConsolePty> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    crate::error::fault_point("create the container's terminal")?;
    let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(target));
    let master = sys::tty::open_pty_at(&dir.join("ptmx"), libc::O_RDWR, index)?;
    sys::tty::set_locked(master.as_fd(), false)?;
    let slave = sys::tty::open_slave_path(&dir.join(index.to_string()))?;
    Ok(ConsolePty {
        master,
        slave,
        index,
    })
}

/// `--new-tty`: descriptor `f`, inherited from the terminal, becomes the new terminal
/// (ckpt's descriptor `slave`; one open description, as a terminal's 0-2 usually share)
/// instead of ours.
pub(crate) fn place_new_tty(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    slave: i32,
) -> RestoreResult<()> {
    let me = std::process::id() as i32;
    let n = take_remote_fd(cx, me, slave as u64, "take the new terminal")?;
    move_fd(cx, n, f.fd, f.cloexec)
}

/// The image's terminal settings as `sys::tty::apply` takes them (`--new-tty`).
impl From<&TtySettings> for sys::tty::Settings {
    fn from(s: &TtySettings) -> Self {
        sys::tty::Settings {
            iflag: s.iflag,
            oflag: s.oflag,
            cflag: s.cflag,
            lflag: s.lflag,
            line: s.line,
            cc: s.cc.clone(),
            ispeed: s.ispeed,
            ospeed: s.ospeed,
            rows: s.rows,
            cols: s.cols,
            xpixel: s.xpixel,
            ypixel: s.ypixel,
        }
    }
}
