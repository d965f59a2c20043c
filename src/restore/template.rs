//! Restore-many from a resident template (`restore --template SOCKET --new-pidns`,
//! `ckpt spawn SOCKET`; issue 17 item 4).
//!
//! The image is restored once up to, not including, its point of no return: the
//! root's stub is fully built (memory populated, its private anonymous areas collapsed
//! into transparent huge pages where they allow it, descriptors, attributes,
//! credentials) and stays stopped, traced by a server (a ckpt process) that waits on a
//! unix socket. Each request makes one copy, by system calls injected into the stub:
//!
//! 1. the stub forks (`clone3(CLONE_VM | CLONE_PARENT | CLONE_NEWPID | CLONE_NEWNS)`)
//!    the copy's *init*: PID 1 of a new PID namespace, sharing the stub's address space
//!    (no page-table copy) and a child of the template's init (so that it outlives the
//!    template);
//! 2. in one batch the init takes the client's standard descriptors (sent with the
//!    request) from the server at 0-2 (`pidfd_getfd`), closes the rest but ckpt's
//!    executable, mounts the namespace's /proc, and
//! 3. forks the *copy* (`clone3` with `set_tid`: the image's PID inside), a
//!    copy-on-write copy of the stub's memory: pages stay shared between the template
//!    and every copy until one writes; a fork copies one page-table entry per 2 MiB of
//!    huge pages;
//! 4. the copy finishes as commit would (what a fork does not keep is set again: the
//!    TID address, the robust list, the parent-death signal, its session or group; the
//!    standard descriptors' status flags, set by the server on the descriptions it
//!    shares with the copy; the helper area goes; signal mask and registers) and is
//!    detached: it runs;
//! 5. the init executes `ckpt copy-init` (from a descriptor of ckpt's executable the
//!    stub holds), which reaps and exits with the copy's status, ending the namespace.
//!
//! Each step notes the time it ended (the reply carries the marks; `CKPT_TIMES=1 ckpt
//! spawn` prints them).
//!
//! The server replies with pidfds of the copy and its init. What fork could not give a
//! copy of its own (open file descriptions beyond the standard ones, threads, timers,
//! pending signals, locks, SysV undo, areas not inherited on fork...) is refused when
//! the template is made ([`refusals`]).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use super::plan::Plan;
use super::stage::{RootStub, Staged};
use super::{Prepared, Problem, RestoreError, Result, fault_point};
use crate::arch::native::nr;
use crate::model::{Checkpoint, FdKind, VmaKind};
use crate::remote::{BatchArgs, Ctx, STUB_SIZE, helper_injector};
use crate::sys::inject::Call;
use crate::sys::mem::RemoteMem;
use crate::sys::{self, ptrace};

/// Where the stub keeps a pidfd of the server (for `pidfd_getfd`).
const PIDFD_AT: u64 = 997;
/// Where the stub keeps a descriptor of ckpt's executable (for the copy's init).
const EXE_AT: u64 = 998;
/// The largest request or reply.
const MSG_MAX: usize = 4096;

/// Everything in the image that a fork of the staged stub could not give each copy of
/// its own, or that this first version does not re-create per copy: each a problem
/// naming the object and why (an empty list: the image can be a template).
pub(crate) fn refusals(ckpt: &Checkpoint) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut no = |code: &'static str, message: String| out.push(Problem { code, message });
    if ckpt.processes.len() != 1 {
        no(
            "template",
            format!(
                "the image holds {} processes: a template copies a single process (a \
                 fork copies only the process that forks)",
                ckpt.processes.len()
            ),
        );
    }
    if ckpt.own_pid_namespace || ckpt.pid_namespace_init_outside {
        no(
            "template",
            "the tree had a PID namespace of its own: each copy's root would have to be \
             PID 1 of its namespace (not done for templates)"
                .into(),
        );
    }
    let owned = crate::kinds::ns::owned_kinds(ckpt);
    if !owned.is_empty() {
        no(
            "template",
            format!(
                "the tree had namespaces of its own ({}): every copy would share the \
                 template's",
                owned.join(", ")
            ),
        );
    }
    for p in ckpt.processes.iter().take(1) {
        let who = format!("process {}", p.pid);
        if p.threads.len() != 1 {
            no(
                "template",
                format!(
                    "{who} has {} threads: a fork copies only the calling thread (threads \
                     are not re-created per copy yet)",
                    p.threads.len()
                ),
            );
        }
        if p.threads
            .iter()
            .any(|t| t.arch.abi() != crate::arch::Abi::X86_64)
        {
            no(
                "template",
                format!("{who} runs ia32 code (not done for templates)"),
            );
        }
        for f in &p.fds {
            match &f.kind {
                FdKind::Inherited { .. } if f.fd <= 2 => {}
                _ => no(
                    "template",
                    format!(
                        "{who}'s descriptor {} ({}): after a fork every copy would share \
                         its open file description (offset, flags, state) with the \
                         template and the other copies; a template takes only standard \
                         descriptors connected outside, which each copy gets from its \
                         `ckpt spawn`",
                        f.fd,
                        crate::kinds::fd::describe(ckpt, f)
                    ),
                ),
            }
        }
        for v in &p.vmas {
            let at = format!("{who}'s area {:#x}-{:#x}", v.start, v.end);
            if v.has_flag("wf") || v.has_flag("dc") {
                no(
                    "template",
                    format!(
                        "{at} is wiped on fork or not copied on fork (MADV_WIPEONFORK/DONTFORK)"
                    ),
                );
            }
            if v.has_flag("lo") || v.has_flag("lf") {
                no(
                    "template",
                    format!("{at} is locked: a fork does not keep memory locks"),
                );
            }
            if v.shared && matches!(v.kind, VmaKind::Anon | VmaKind::AnonShared) {
                no(
                    "template",
                    format!("{at} is shared memory: every copy would share it with the others"),
                );
            }
            if v.shared && !matches!(v.kind, VmaKind::Anon | VmaKind::AnonShared) {
                no(
                    "template",
                    format!("{at} is a shared mapping: every copy would write to the same object"),
                );
            }
        }
        if !p.posix_timers.is_empty() || p.itimers.iter().any(|t| t.value_us != 0) {
            no(
                "template",
                format!(
                    "{who} has timers: a fork does not copy them (not re-created per copy yet)"
                ),
            );
        }
        if !p.shared_pending.is_empty() || p.threads.iter().any(|t| !t.pending.is_empty()) {
            no(
                "template",
                format!(
                    "{who} has pending signals: a fork clears them (not queued again per copy yet)"
                ),
            );
        }
        if !p.aio.is_empty() {
            no(
                "template",
                format!("{who} has AIO rings: a fork does not copy them"),
            );
        }
        if !p.sem_undo.is_empty() {
            no(
                "template",
                format!("{who} has System V semaphore undo entries: a fork does not copy them"),
            );
        }
        let creds =
            std::iter::once(&p.creds).chain(p.threads.iter().filter_map(|t| t.creds.as_ref()));
        if creds.clone().any(|c| c.seccomp != 0)
            || p.threads.iter().any(|t| !t.seccomp_filters.is_empty())
        {
            no(
                "template",
                format!(
                    "{who} runs under seccomp: each copy's init (ckpt) would run under its \
                     filter"
                ),
            );
        }
        if creds.clone().any(|c| c.uid.iter().any(|u| *u != 0)) {
            no(
                "template",
                format!(
                    "{who} runs as another user than root: each copy's init inherits its \
                     credentials (not done for templates yet)"
                ),
            );
        }
        if p.stopped.is_some() {
            no("template", format!("{who} was stopped by job control"));
        }
    }
    out
}

/// A template made by [`Prepared::launch_template`], serving copies: its init (our
/// child, PID 1 of the template's PID namespace, which stays as long as any copy does)
/// and the server's report pipe.
pub struct TemplateRunning {
    /// The init of the template's PID namespace (as seen here).
    pub init: i32,
    /// The server's PID (as seen here).
    pub server: i32,
    report: OwnedFd,
    /// Closed when we die: the server then stops.
    _life: OwnedFd,
}

impl TemplateRunning {
    /// Wait until the server stops (`ckpt spawn --stop`, or our end); Ok when it stopped
    /// cleanly (the staged stub killed, the socket removed).
    pub fn wait(self) -> Result<()> {
        let mut msg = String::new();
        let _ = std::fs::File::from(self.report).read_to_string(&mut msg);
        if msg.ends_with("stopped") {
            Ok(())
        } else {
            Err(RestoreError::Reported(format!(
                "the template's server ended without stopping cleanly{}",
                msg.strip_prefix("ok").unwrap_or(&msg)
            )))
        }
    }
}

impl<R: Read + Send> Prepared<R> {
    /// `restore --template SOCKET --new-pidns`: stage the image once, in a PID namespace
    /// of its own, and serve copies on `socket` (see the module's text). Returns once
    /// the server listens. Everything the copies could not get of their own is refused
    /// first ([`refusals`]), before anything is made.
    pub fn launch_template(self, socket: &Path) -> Result<TemplateRunning> {
        let problems = refusals(&self.plan.ckpt);
        if !problems.is_empty() {
            return Err(RestoreError::Problems(problems));
        }
        if self.plan.lazy.is_some() || self.tty.is_some() || self.composite.is_some() {
            return Err(RestoreError::Reported(
                "--template: not with --lazy, --new-tty or an incremental image".into(),
            ));
        }
        let socket = std::path::absolute(socket)
            .map_err(|e| RestoreError::Reported(format!("--template {}: {e}", socket.display())))?;
        let (rd, wr) = sys::process::pipe()?;
        let (life_rd, life_wr) = sys::process::pipe()?;
        let (srv_rd, srv_wr) = sys::process::pipe()?;
        match sys::process::fork_into_new_pid_namespace()? {
            None => {
                // The template's init: the server is its child, the staged stub and
                // every copy's init too (CLONE_PARENT); it reaps them and ends once
                // none is left.
                drop((rd, srv_rd));
                let _ = sys::process::stdio_to_null();
                match sys::process::fork_child() {
                    Ok(None) => {
                        drop(life_wr);
                        let res = serve_in_child(self, &socket, &life_rd, srv_wr, &wr);
                        report_end(wr, res)
                    }
                    Ok(Some(_)) => {
                        drop((wr, life_rd, life_wr, srv_wr, self));
                        while let Ok(Some(_)) = sys::process::wait_any() {}
                        std::process::exit(0);
                    }
                    Err(e) => report_end(wr, Err(e.into())),
                }
            }
            Some(init) => {
                drop((wr, life_rd, srv_wr, self));
                let give_up = |e: RestoreError| {
                    let _ = sys::process::kill(init, libc::SIGKILL);
                    let _ = sys::process::wait_exit(init);
                    e
                };
                // The server's PID here, then "ok" once it listens.
                let mut pid = String::new();
                let _ = std::fs::File::from(srv_rd).read_to_string(&mut pid);
                let mut report = std::fs::File::from(rd);
                let mut ok = [0u8; 2];
                if report.read_exact(&mut ok).is_err() || &ok != b"ok" {
                    let mut msg = String::from_utf8_lossy(&ok).trim_matches('\0').to_string();
                    let _ = report.read_to_string(&mut msg);
                    let _ = sys::process::wait_exit(init);
                    return Err(if msg.is_empty() {
                        RestoreError::Reported("the template's server failed".into())
                    } else {
                        RestoreError::Reported(msg)
                    });
                }
                let server = pid.trim().parse().map_err(|_| {
                    give_up(RestoreError::Reported(
                        "the template's server did not tell its PID".into(),
                    ))
                })?;
                Ok(TemplateRunning {
                    init,
                    server,
                    report: report.into(),
                    _life: life_wr,
                })
            }
        }
    }
}

/// End the server (or the init's failed fork): "stopped" after a clean stop, else
/// the error.
fn report_end(wr: OwnedFd, res: Result<()>) -> ! {
    let mut wr = std::fs::File::from(wr);
    match res {
        Ok(()) => {
            let _ = wr.write_all(b"stopped");
            std::process::exit(0)
        }
        Err(e) => {
            let _ = write!(wr, "{e}");
            std::process::exit(1)
        }
    }
}

/// The server, in the template's PID namespace (a child of its init): stage, listen,
/// say "ok", serve until stopped.
fn serve_in_child<R: Read + Send>(
    prepared: Prepared<R>,
    socket: &Path,
    life: &OwnedFd,
    srv_wr: OwnedFd,
    report: &OwnedFd,
) -> Result<()> {
    // Our PID as the caller sees it (before our /proc is the namespace's).
    let outer_pid = own_outer_pid();
    let _ = write_all(&srv_wr, outer_pid.to_string().as_bytes());
    drop(srv_wr);
    sys::process::mount_own_proc()?;
    let Prepared {
        mut reader, plan, ..
    } = prepared.without_reading_thread();
    fault_point("template: stage")?;
    let staged = super::stage::stage(
        &plan,
        &mut super::source::Direct::new(&mut reader),
        RootStub::Sibling,
        None,
    )?;
    drop(reader);
    let t = Template::new(plan, staged, outer_pid)?;
    let listener = sys::seqpacket::listen_at(socket)?;
    let served = (|| {
        write_all(report, b"ok")?;
        t.serve(&listener, life)
    })();
    let _ = std::fs::remove_file(socket);
    served
}

fn write_all(fd: &OwnedFd, b: &[u8]) -> Result<()> {
    let mut f = std::fs::File::from(fd.try_clone().map_err(|e| sys::SysError::io("dup", e))?);
    f.write_all(b)
        .map_err(|e| RestoreError::from(sys::SysError::io("write to the template's caller", e)))
}

/// Our PID as the /proc we see names it (the first field of "NSpid").
fn own_outer_pid() -> i32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|p| p.parse().ok()))
        })
        .unwrap_or(0)
}

/// The staged stub and what a copy needs of the plan.
struct Template {
    plan: Plan,
    staged: Staged,
    trap: bool,
    /// Our PID as the template's caller sees it (for the marks' lines).
    outer_pid: i32,
    /// Where the current copy's time went: CLOCK_MONOTONIC readings (ns) after each
    /// step, sent with the reply (our standard error goes nowhere) and printed by
    /// `ckpt spawn` under `CKPT_TIMES` as `crate::error::time_mark` prints its own.
    marks: std::cell::RefCell<Vec<(u64, &'static str)>>,
}

/// One copy made: its PID and its init's, as the server sees them, and how long from
/// the request to its release.
struct Made {
    copy: i32,
    init: i32,
    micros: u128,
}

impl Template {
    /// After stage: the stub keeps a pidfd of ours and a descriptor of ckpt's
    /// executable, and its private anonymous memory goes into huge pages where the
    /// areas allow it (MADV_COLLAPSE; a fork then copies one entry per 2 MiB).
    fn new(plan: Plan, staged: Staged, outer_pid: i32) -> Result<Self> {
        let trap = super::stage::trap_mode(&plan.ckpt.processes);
        let t = Template {
            plan,
            staged,
            trap,
            outer_pid,
            marks: Default::default(),
        };
        let exe = std::fs::File::open("/proc/self/exe")
            .map_err(|e| sys::SysError::io("open ckpt's executable", e))?;
        let mut cs = t.stub_ctx()?;
        let me = std::process::id() as i32;
        let pidfd = cs.call(
            "pidfd_open (the server)",
            nr::PIDFD_OPEN,
            [me as u64, 0, 0, 0, 0, 0],
        )?;
        let exe_n = crate::remote::take_remote_fd(
            &mut cs,
            me,
            exe.as_raw_fd() as u64,
            "take ckpt's executable",
        )?;
        let cl = libc::O_CLOEXEC as u64;
        let mut calls = vec![
            Call::new("dup3", nr::DUP3, [pidfd, PIDFD_AT, cl, 0, 0, 0]),
            Call::new("close", nr::CLOSE, [pidfd, 0, 0, 0, 0, 0]),
            Call::new("dup3", nr::DUP3, [exe_n, EXE_AT, cl, 0, 0, 0]),
            Call::new("close", nr::CLOSE, [exe_n, 0, 0, 0, 0, 0]),
        ];
        for v in &cs.proc_.vmas {
            if matches!(v.kind, VmaKind::Anon)
                && !v.shared
                && v.pages_present > 0
                && !v.has_flag("nh")
                && v.len() >= 2 << 20
            {
                calls.push(
                    Call::new(
                        "madvise(MADV_COLLAPSE)",
                        nr::MADVISE,
                        [v.start, v.len(), 25, 0, 0, 0],
                    )
                    .may_fail(),
                );
            }
        }
        cs.batch(&BatchArgs::new(), &calls)?;
        drop(cs);
        Ok(t)
    }

    fn root(&self) -> &crate::model::Process {
        &self.plan.ckpt.processes[0]
    }

    /// A context for the stub (at its current stop).
    fn stub_ctx(&self) -> Result<Ctx<'_>> {
        self.ctx_for(self.root().pid)
    }

    /// A context for task `pid` (the stub, or a fork of it), which has the helper area.
    fn ctx_for(&self, pid: i32) -> Result<Ctx<'_>> {
        let base = ptrace::get_regs(pid)?;
        let stub = self.staged.stub_addr();
        Ok(Ctx::live(
            helper_injector(pid, stub, base, self.trap),
            RemoteMem::open(pid)?,
            stub,
            self.root(),
        ))
    }

    /// Serve requests until "stop" or until `life` (the caller's pipe) ends.
    fn serve(&self, listener: &OwnedFd, life: &OwnedFd) -> Result<()> {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: life.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            sys::uffd::poll(&mut fds, -1)?;
            if fds[1].revents != 0 {
                return Ok(());
            }
            if fds[0].revents == 0 {
                continue;
            }
            let conn = match sys::seqpacket::accept(listener) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let Ok(Some((msg, client))) = sys::seqpacket::recv_with_fds(&conn, MSG_MAX) else {
                continue;
            };
            match msg.as_slice() {
                b"stop" => {
                    let _ = sys::seqpacket::send(&conn, b"{\"stopped\":true}");
                    return Ok(());
                }
                b"spawn" => self.answer(&conn, &client),
                _ => {
                    let _ = sys::seqpacket::send(&conn, b"{\"error\":\"unknown request\"}");
                }
            }
        }
    }

    /// Make a copy for the client on `conn` and reply: pidfds of the copy and its init,
    /// and a line of JSON; or the error.
    fn answer(&self, conn: &OwnedFd, client: &[OwnedFd]) {
        let res = self.spawn(client).and_then(|m| {
            let c = sys::process::pidfd_open(m.copy)?;
            let i = sys::process::pidfd_open(m.init)?;
            self.mark("template: pidfds opened");
            let msg = serde_json::json!({
                "ns_pid": self.root().pid,
                "spawn_us": m.micros as u64,
                "server": self.outer_pid,
                "marks": *self.marks.borrow(),
            })
            .to_string();
            sys::seqpacket::send_with_fds(conn, msg.as_bytes(), &[c.as_fd(), i.as_fd()])?;
            Ok(())
        });
        if let Err(e) = res {
            let msg = serde_json::json!({ "error": e.to_string() }).to_string();
            let _ = sys::seqpacket::send(conn, msg.as_bytes());
        }
    }

    /// Note that step `what` of the current copy is done (see [`Template::marks`]).
    fn mark(&self, what: &'static str) {
        let ns = sys::ns::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0).max(0) as u64;
        self.marks.borrow_mut().push((ns, what));
    }

    /// One copy: see the module's text. On failure, nothing of it is left (its init is
    /// killed, which ends its namespace) and the stub is as before.
    fn spawn(&self, client: &[OwnedFd]) -> Result<Made> {
        let t0 = Instant::now();
        self.marks.borrow_mut().clear();
        self.mark("template: request read");
        if client.len() != 3 {
            return Err(RestoreError::Reported(format!(
                "a request must carry 3 descriptors (standard input, output, error), not {}",
                client.len()
            )));
        }
        let root = self.root();
        let thread = root.threads.first().ok_or_else(|| {
            RestoreError::Malformed(format!("process {} has no thread", root.pid))
        })?;
        let mut cs = self.stub_ctx()?;
        // (1) The copy's init.
        fault_point("template: fork the copy's init")?;
        let flags =
            (libc::CLONE_VM | libc::CLONE_PARENT | libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64;
        let a = cs.put(0, &clone_args(cs.scratch(), flags, 0, None))?;
        let init = cs.call("clone3 (the copy's init)", nr::CLONE3, [a, 88, 0, 0, 0, 0])? as i32;
        drop(cs);
        self.mark("template: init forked");
        let kill_init = |e: RestoreError| {
            sys::process::kill_and_reap(init, &[]);
            e
        };
        let mut ci = ptrace::get_regs_after_stop(init, "the copy's init")
            .map_err(RestoreError::from)
            .and_then(|_| self.ctx_for(init))
            .map_err(kill_init)?;
        self.mark("template: init stopped");
        let copy = self
            .init_and_fork(&mut ci, root, client)
            .map_err(kill_init)?;
        let kill_both = |e: RestoreError| {
            sys::process::kill_and_reap(copy, &[]);
            sys::process::kill_and_reap(init, &[]);
            e
        };
        let micros = self
            .release_copy(copy, root, thread, client)
            .map(|()| t0.elapsed().as_micros())
            .map_err(kill_both)?;
        self.mark("template: copy released");
        // (5) The init becomes `ckpt copy-init`.
        self.exec_init(&mut ci, init, root.pid).map_err(|e| {
            // The copy runs already; its init cannot be made: the copy goes with it.
            let _ = sys::process::kill(copy, libc::SIGKILL);
            kill_init(e)
        })?;
        self.mark("template: init released into copy-init");
        Ok(Made { copy, init, micros })
    }

    /// (2) In the init, one batch: every descriptor closed but ckpt's executable and
    /// the server's pidfd; the client's three taken from the server with
    /// `pidfd_getfd` (each lands at the lowest free number: 0, 1, 2, close-on-exec),
    /// given the image's close-on-exec flag or closed if the image has no such
    /// descriptor; the server's pidfd closed; the namespace's /proc mounted; and (3)
    /// the copy forked with the image's PID in the new namespace (last: the fork stops
    /// at once, traced, before it runs anything). Returns the copy's PID (as we see it).
    fn init_and_fork(
        &self,
        ci: &mut Ctx<'_>,
        root: &crate::model::Process,
        client: &[OwnedFd],
    ) -> Result<i32> {
        let mut args = BatchArgs::new();
        let mut calls = vec![
            Call::new(
                "close_range",
                nr::CLOSE_RANGE,
                [0, PIDFD_AT - 1, 0, 0, 0, 0],
            ),
            Call::new(
                "close_range",
                nr::CLOSE_RANGE,
                [EXE_AT + 1, u32::MAX as u64, 0, 0, 0, 0],
            ),
        ];
        let take = calls.len();
        for f in client {
            calls.push(Call::new(
                "take the client's descriptor",
                nr::PIDFD_GETFD,
                [PIDFD_AT, f.as_raw_fd() as u64, 0, 0, 0, 0],
            ));
        }
        for n in 0..client.len() as u64 {
            match root.fds.iter().find(|f| f.fd as u64 == n) {
                Some(f) if !f.cloexec => calls.push(Call::new(
                    "fcntl(F_SETFD) (a standard descriptor of the client)",
                    nr::FCNTL,
                    [n, libc::F_SETFD as u64, 0, 0, 0, 0],
                )),
                Some(_) => {}
                None => calls.push(Call::new(
                    "close (a standard descriptor the image has not)",
                    nr::CLOSE,
                    [n, 0, 0, 0, 0, 0],
                )),
            }
        }
        calls.push(Call::new(
            "close (the server's pidfd)",
            nr::CLOSE,
            [PIDFD_AT, 0, 0, 0, 0, 0],
        ));
        let proc_ = args.add_cstr(ci, b"proc")?;
        let target = args.add_cstr(ci, b"/proc")?;
        let mflags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        calls.push(Call::new(
            "mount /proc of the copy's PID namespace",
            nr::MOUNT,
            [proc_, target, proc_, mflags, 0, 0],
        ));
        fault_point("template: fork the copy")?;
        let a = ci.put(
            0,
            &clone_args(ci.scratch(), 0, libc::SIGCHLD as u64, Some(root.pid)),
        )?;
        calls.push(Call::new(
            "clone3 (the copy)",
            nr::CLONE3,
            [a, 88, 0, 0, 0, 0],
        ));
        let got = ci.batch(&args, &calls)?;
        self.mark("template: init's batch ran (descriptors, /proc, the copy forked)");
        let init = ci.pid();
        // The copy exists from here on: found before any check, so that an error
        // kills it too (as the init's child it would end with the namespace anyway).
        let copy = sys::proc::children(init)?.first().copied();
        let landed = got.get(take..take + client.len());
        if landed != Some(&[0, 1, 2][..client.len()]) {
            if let Some(c) = copy {
                sys::process::kill_and_reap(c, &[]);
            }
            return Err(RestoreError::Stage(format!(
                "the client's descriptors landed at {landed:?} in the copy's init, not 0-2"
            )));
        }
        let copy = copy.ok_or_else(|| {
            RestoreError::Stage("the copy's init has no child after its fork".into())
        })?;
        let pid_seen = got.last().copied().unwrap_or(0);
        if pid_seen != root.pid as u64 {
            sys::process::kill_and_reap(copy, &[]);
            return Err(RestoreError::Stage(format!(
                "the copy got process ID {pid_seen} instead of {}",
                root.pid
            )));
        }
        ptrace::get_regs_after_stop(copy, "the copy").inspect_err(|_| {
            sys::process::kill_and_reap(copy, &[]);
        })?;
        self.mark("template: copy stopped");
        Ok(copy)
    }

    /// (4) What commit does, for the copy: what a fork does not keep, the helper area
    /// removed, signal mask and registers, and let go.
    fn release_copy(
        &self,
        copy: i32,
        root: &crate::model::Process,
        thread: &crate::model::Thread,
        client: &[OwnedFd],
    ) -> Result<()> {
        let mut cc = self.ctx_for(copy)?;
        let mut calls = vec![
            Call::new(
                "close_range",
                nr::CLOSE_RANGE,
                [3, u32::MAX as u64, 0, 0, 0, 0],
            ),
            Call::new(
                "set_tid_address (the copy)",
                nr::SET_TID_ADDRESS,
                [thread.clear_child_tid, 0, 0, 0, 0, 0],
            ),
        ];
        if thread.robust_list != 0 {
            calls.push(Call::new(
                "set_robust_list",
                nr::SET_ROBUST_LIST,
                [thread.robust_list, thread.robust_list_len, 0, 0, 0, 0],
            ));
        }
        if root.misc.pdeathsig != 0 {
            calls.push(Call::new(
                "prctl(PR_SET_PDEATHSIG)",
                nr::PRCTL,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    root.misc.pdeathsig as u64,
                    0,
                    0,
                    0,
                    0,
                ],
            ));
        }
        if root.sid == root.pid {
            calls.push(Call::new("setsid", nr::SETSID, [0; 6]));
        } else if root.pgid == root.pid {
            calls.push(Call::new("setpgid", nr::SETPGID, [0; 6]));
        }
        cc.batch(&BatchArgs::new(), &calls)?;
        self.mark("template: copy's batch ran");
        // Each standard descriptor's status flags as `place_inherited` sets them, here:
        // they belong to the open file description, which the server holds too.
        for f in &root.fds {
            if let FdKind::Inherited { flags, .. } = &f.kind {
                let fd = client.get(f.fd as usize).ok_or_else(|| {
                    RestoreError::Malformed(format!("inherited descriptor {}", f.fd))
                })?;
                let cur = sys::file::status_flags(fd.as_fd())?;
                let want = crate::kinds::fd::inherited_status_flags(cur, *flags)
                    & crate::remote::SETTABLE_STATUS_FLAGS;
                sys::file::set_status_flags(fd.as_fd(), want)?;
            }
        }
        fault_point("template: release the copy")?;
        {
            let live = cc.live_task("remove the copy's helper area")?;
            live.inj.stop_trapping();
            live.inj.clear_executor();
        }
        cc.call(
            "munmap helper area",
            nr::MUNMAP,
            [self.staged.stub_addr(), STUB_SIZE, 0, 0, 0, 0],
        )?;
        drop(cc);
        self.mark("template: copy's helper area unmapped");
        ptrace::set_sigmask(copy, thread.sigmask)?;
        let xsave = self
            .plan
            .xsave
            .get(&thread.tid)
            .unwrap_or(&thread.arch.xsave);
        crate::kinds::task::threads::set_thread_state(copy, thread, xsave)?;
        let survive =
            libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK;
        ptrace::set_options(copy, survive)?;
        ptrace::detach(copy, 0)?;
        Ok(())
    }

    /// The init executes `ckpt copy-init PID` from the executable the stub holds (it
    /// leaves the stub's address space then), untraced, its signals unblocked.
    fn exec_init(&self, ci: &mut Ctx<'_>, init: i32, ns_pid: i32) -> Result<()> {
        // Laid out in the scratch area: the strings, then argv and envp.
        let pid = format!("{ns_pid}\0");
        let strs: [&[u8]; 3] = [b"ckpt\0", b"copy-init\0", pid.as_bytes()];
        let mut blob = Vec::new();
        let mut offs = Vec::new();
        for s in strs {
            offs.push(blob.len() as u64);
            blob.extend_from_slice(s);
        }
        blob.resize(blob.len().next_multiple_of(8), 0);
        let base = ci.scratch();
        let argv_off = blob.len() as u64;
        for o in &offs {
            blob.extend_from_slice(&(base + o).to_le_bytes());
        }
        blob.extend_from_slice(&0u64.to_le_bytes());
        let envp_off = blob.len() as u64;
        blob.extend_from_slice(&0u64.to_le_bytes());
        let empty_off = blob.len() as u64;
        blob.extend_from_slice(&[0u8; 8]);
        let at = ci.put(0, &blob)?;
        ptrace::set_sigmask(init, 0)?;
        let survive =
            libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK;
        ptrace::set_options(init, survive)?;
        let live = ci.live_task("execute the copy's init")?;
        live.inj.stop_trapping();
        live.inj.release_into(
            nr::EXECVEAT,
            [
                EXE_AT,
                at + empty_off,
                at + argv_off,
                at + envp_off,
                libc::AT_EMPTY_PATH as u64,
                0,
            ],
        )?;
        Ok(())
    }
}

/// struct clone_args (88 bytes, to be put at scratch address `at`) with `flags`,
/// `exit_signal` and at most one `set_tid` entry, laid out right after it.
fn clone_args(at: u64, flags: u64, exit_signal: u64, set_tid: Option<i32>) -> Vec<u8> {
    let (tids, n) = match set_tid {
        Some(_) => (at + 88, 1u64),
        None => (0, 0),
    };
    let mut b = Vec::with_capacity(96);
    for w in [flags, 0, 0, 0, exit_signal, 0, 0, 0, tids, n, 0] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    if let Some(t) = set_tid {
        b.extend_from_slice(&t.to_le_bytes());
    }
    b
}

/// A copy made by [`spawn`]: its PID and its init's (as seen here), its PID in its
/// namespace, and how long it took.
pub struct Spawned {
    pub pid: i32,
    pub init: i32,
    pub ns_pid: i32,
    /// From the server's reading of the request to the copy's release (its first
    /// instruction may run from then on).
    pub spawn_us: u64,
    /// From our connection to the reply.
    pub request_us: u64,
    init_fd: OwnedFd,
}

impl Spawned {
    /// Wait for the copy's end: the wait status its init exited with (the copy's own
    /// exit code, or 128+N if a signal N killed it).
    pub fn wait(&self) -> Result<i32> {
        let mut fds = [libc::pollfd {
            fd: self.init_fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        while fds[0].revents == 0 {
            sys::uffd::poll(&mut fds, -1)?;
        }
        // Exited; its exit information is kept once its parent reaped it.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some((status, _)) = sys::process::pidfd_exit_info(self.init_fd.as_fd())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(RestoreError::Reported(
                    "the copy's init ended but its status never came".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// `ckpt spawn SOCKET`: ask the template listening on `socket` for a copy whose
/// standard descriptors are ours.
pub fn spawn(socket: &Path) -> Result<Spawned> {
    let t0 = Instant::now();
    let conn = sys::seqpacket::connect_to(socket).map_err(|e| {
        RestoreError::Reported(format!("no template answers on {}: {e}", socket.display()))
    })?;
    let (i, o, e) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio = [i.as_fd(), o.as_fd(), e.as_fd()];
    sys::seqpacket::send_with_fds(&conn, b"spawn", &stdio)?;
    let (msg, fds) = sys::seqpacket::recv_with_fds(&conn, MSG_MAX)?
        .ok_or_else(|| RestoreError::Reported("the template ended before it answered".into()))?;
    let request_us = t0.elapsed().as_micros() as u64;
    let v: serde_json::Value = serde_json::from_slice(&msg)
        .map_err(|e| RestoreError::Reported(format!("the template's answer: {e}")))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(RestoreError::Reported(format!(
            "the template could not make a copy: {e}"
        )));
    }
    // The server's marks of this copy (`CKPT_TIMES`), as if it had printed them.
    let server = v.get("server").and_then(|p| p.as_i64()).unwrap_or(0) as i32;
    for m in v
        .get("marks")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(ns), Some(what)) = (m.get(0).and_then(|n| n.as_u64()), m.get(1)) {
            crate::error::time_mark_of(server, ns, what.as_str().unwrap_or("?"));
        }
    }
    let mut fds = fds.into_iter();
    let (Some(c), Some(i)) = (fds.next(), fds.next()) else {
        return Err(RestoreError::Reported(
            "the template's answer carries no pidfds".into(),
        ));
    };
    Ok(Spawned {
        pid: sys::process::pidfd_pid(c.as_fd())?,
        init: sys::process::pidfd_pid(i.as_fd())?,
        ns_pid: v.get("ns_pid").and_then(|p| p.as_i64()).unwrap_or(0) as i32,
        spawn_us: v.get("spawn_us").and_then(|p| p.as_u64()).unwrap_or(0),
        request_us,
        init_fd: i,
    })
}

/// `ckpt spawn --stop SOCKET`: stop the template (its staged stub is killed and its
/// socket removed; the copies run on).
pub fn stop(socket: &Path) -> Result<()> {
    let conn = sys::seqpacket::connect_to(socket).map_err(|e| {
        RestoreError::Reported(format!("no template answers on {}: {e}", socket.display()))
    })?;
    sys::seqpacket::send(&conn, b"stop")?;
    let _ = sys::seqpacket::recv(&conn, MSG_MAX)?;
    // Gone once the server removed it.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// `ckpt copy-init PID` (internal): the init of a copy's PID namespace, executed by the
/// template's fork. Reaps everyone; once nobody is left, exits with the code of `root`
/// (the copy, PID `root` here), which ends the namespace.
pub fn copy_init(root: i32) -> i32 {
    let mut code = 0;
    while let Ok(Some((pid, status))) = sys::process::wait_any() {
        if pid == root {
            code = super::exit_code(status);
        }
    }
    code
}
