//! Terminals: settings, window size, controlling terminal.

use super::OpenFd;
use crate::error::DumpResult;
use crate::error::Problem;
use crate::error::RestoreResult;
use crate::kinds::check;
use crate::model::FileId;
use crate::model::{Checkpoint, FdKind, Process, TtySettings, TtyState};
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

/// A terminal open as descriptor `d`: kept as a standard descriptor (0-2) connected at
/// restore to ckpt's own, with its settings; refused elsewhere.
pub(crate) fn collect(d: &OpenFd, id: &FileId) -> DumpResult<FdKind> {
    if d.fd <= 2 {
        let tty = Some(Box::new(tty_state(d.pid, d.fd, id, &d.link)?));
        return Ok(FdKind::Inherited {
            what: d.name.clone(),
            flags: d.flags,
            tty,
        });
    }
    Err(d.not_yet("a terminal"))
}

/// A terminal on standard descriptor `fd`: its settings (read through a duplicate of the
/// descriptor; left out if the terminal no longer answers, e.g. hung up) and whether it
/// is the process's controlling terminal, with its foreground group (/proc/PID/stat).
fn tty_state(pid: i32, fd: i32, id: &FileId, link: &[u8]) -> DumpResult<TtyState> {
    use std::os::fd::AsFd;
    let dup = sys::process::steal_fd(pid, fd)?;
    let settings = sys::tty::settings(dup.as_fd()).ok().map(TtySettings::from);
    let st = procfs::stat(pid)?;
    let controlling = st.field(7) == id.rdev;
    Ok(TtyState {
        path: link.to_vec(),
        rdev: id.rdev,
        settings,
        controlling,
        fg_pgid: if controlling {
            st.field(8) as i64 as i32
        } else {
            0
        },
    })
}

// ---- checks (plan) ----

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
    if ckpt.own_pid_namespace {
        check::p(
            &mut problems,
            "unsupported",
            "--new-tty: the tree has a PID namespace of its own; restoring it onto a new \
             terminal is not supported yet (restore it without --new-tty)"
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
