//! Argument parsing, human and JSON output, exit codes: one function per subcommand,
//! each using only the library's public API (`ckpt::{dump, restore, image, model, arch,
//! inspect, host}`).
//!
//! Exit codes: 0 success; 1 the operation failed (stderr says what and what to do);
//! 2 bad usage. `restore` without `--detach` exits with the restored process's status
//! (128+N if it was killed by signal N), as a shell does.

/// `eprintln!`, but the message goes out in one `write` (standard error is unbuffered:
/// `eprintln!` writes each piece of the format on its own, twenty system calls for the
/// line a dump ends with), and a standard error that cannot be written is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }};
}

mod demo;
mod inspect;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use ckpt::dump::{self, DumpOptions, Output};
use ckpt::{host, restore};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint a running Linux process into one image file and restart it later",
    long_about = "ckpt freezes a running process, writes everything about it (memory, \
registers, files, signal state...) into one checksummed image file, and brings it back \
later, on this machine or another, where it continues as if nothing had happened.\n\n\
Restore checks everything it can before the point of no return: an image this host \
cannot run (changed files, a taken PID, a different vDSO, missing CPU features) is \
refused with a clear error and nothing is left behind.\n\n\
Run as root. `ckpt COMMAND --help` describes each command and its options.",
    after_help = "EXIT STATUS:\n  0  success\n  1  the operation failed (the message says why)\n  \
2  bad usage\n  restore without --detach exits with the restored process's own status \
(128+N if a signal N killed it).\n\n\
ENVIRONMENT:\n  CKPT_HOST_MASK  host features restore and check pretend are missing \
(see --cpu-mask)\n\n\
EXAMPLES:\n  ckpt dump 1234 -o job.img          checkpoint PID 1234 and stop it\n  \
ckpt dump 1234 -o job.img --leave-running\n  ckpt check job.img                 can it be restored here?\n  \
ckpt restore job.img               bring it back and wait for it\n  \
ckpt dump 1234 -o job.img --external   pipes/sockets to outside kept as external\n  \
ckpt restore job.img --inherit-fd 7:pipe:[5678] 7< <(producer)   a new pipe for one\n  \
ckpt restore job.img --new-tty     ...on a new terminal, relayed to ckpt's stdin/stdout\n  \
ckpt inspect job.img --json        everything in the image, for scripts\n\n\
CRIU: run as `criu` (a link to ckpt) or as `ckpt criu ARGS`, ckpt takes CRIU's command \
line and `criu swrk` RPC (runc, CRaC...): see README, \"As `criu`\"."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How restore compares the image's CPU requirements with this host.
#[derive(clap::Args, Clone)]
struct CpuArgs {
    /// How much of the dump host's CPU this host must have: "strict" (every feature it
    /// had), "compatible" (the instruction-set extensions programs may use, and every
    /// xsave component in use; the default), or "ignore" (only xsave state in use).
    #[arg(long, value_name = "POLICY", default_value = "compatible")]
    cpu_policy: ckpt::arch::CpuPolicy,
    /// Pretend this host lacks CPU features, xsave components or kernel facilities, e.g.
    /// "no-avx512,no-xsave-comp=5-7,no-ia32,no-kernel=rseq" (also from the
    /// CKPT_HOST_MASK environment variable): to check that an image will run on a
    /// smaller machine or an older kernel. Kernel facilities: clone3-set-tid,
    /// prctl-set-mm-map, pidfd-getfd, map-vdso-64, map-vdso-32, rseq,
    /// timer-restore-ids, madv-guard-install, map-droppable, tcp-repair (`check --json`
    /// lists those an image needs). By default nothing is masked.
    #[arg(long, value_name = "SPEC")]
    cpu_mask: Option<String>,
}

impl CpuArgs {
    /// The host view; its only error is a bad mask (`--cpu-mask` or `CKPT_HOST_MASK`),
    /// which is bad usage.
    fn view(&self) -> Result<restore::HostView, String> {
        restore::HostView::detect(self.cpu_mask.as_deref(), self.cpu_policy)
    }
}

/// Bad usage: say what and exit 2.
fn usage(msg: impl std::fmt::Display) -> i32 {
    say!("ckpt: {msg}");
    2
}

/// What stands in for the image's external resources.
#[derive(clap::Args, Clone)]
struct InheritArgs {
    /// Give ckpt's own open descriptor N to the restored processes in place of the
    /// external resource KEY: a pipe or unix socket that led outside the dumped tree,
    /// recorded by `ckpt dump --external` under the name /proc showed for it, e.g.
    /// `pipe:[12345]` or `socket:[67890]` (`ckpt inspect` lists them). Every process
    /// that held KEY gets the same open file description as ckpt's descriptor N, at its
    /// old descriptor number and with its old status flags. Repeat the option for each
    /// resource. Restore refuses an image with an external resource that is not given,
    /// and a KEY the image does not have. Example, in bash (a new pipe from `producer`
    /// takes the old one's place):
    /// `ckpt restore job.img --inherit-fd 7:pipe:[12345] 7< <(producer)`.
    #[arg(long = "inherit-fd", value_name = "N:KEY", value_parser = parse_inherit)]
    inherit_fd: Vec<(i32, String)>,
    /// For a tree that had a mount namespace of its own: bind the host path SOURCE on
    /// DEST, an external mount of the image (a mount the namespace had of a host
    /// directory or file, the container's root file system, a host file system), named
    /// by where it was mounted inside the namespace (`ckpt inspect --json` shows them,
    /// under "namespaces").
    /// Without it, an external mount is bound again from the host path it had at dump,
    /// if that is still the same file (device and inode, on the dump's boot). Repeat
    /// the option for each mount given.
    #[arg(long = "external-mount", value_name = "DEST=SOURCE", value_parser = parse_external_mount)]
    external_mount: Vec<(String, String)>,
    /// Restore the tree in the namespace of file PATH for its namespace of kind TYPE
    /// (net, uts or ipc) that was made outside the dumped tree (neither ckpt's nor the
    /// tree's own, e.g. another container's network namespace; `ckpt dump` notes it
    /// and `ckpt check --json` lists it as "external"). `pid:PATH`: for a PID namespace
    /// recorded with `dump --external pidns[INODE]:KEY` (as `--inherit-fd N:KEY`
    /// does), the tree is built inside it with its recorded IDs there. PATH is /proc/PID/ns/TYPE of a
    /// process in it or a bind-mounted namespace file such as /run/netns/NAME. Restore
    /// refuses an image with such a namespace that is not given. Repeat for each kind.
    /// Example: `ckpt restore web.img --join-ns net:/run/netns/blue`.
    #[arg(long = "join-ns", value_name = "TYPE:PATH", value_parser = parse_join_ns)]
    join_ns: Vec<(String, std::path::PathBuf)>,
    /// Restore the tree's cgroups below cgroup PATH of each hierarchy (e.g. /restored:
    /// a process that was in /box/a goes to /restored/box/a, one that was below ckpt's
    /// own cgroup goes to the same place below PATH) instead of where they were;
    /// missing cgroups are made (and removed again if the restore fails). The cgroup
    /// mounts of a tree's own mount namespace (a container's /sys/fs/cgroup) bind the
    /// moved cgroups too, unless --external-mount names them. Membership only: the
    /// cgroups' limits are not restored.
    #[arg(long = "cgroup-root", value_name = "PATH")]
    cgroup_root: Option<String>,
    /// Where the restored processes go: "place" (the default: into the cgroups they
    /// were in, below --cgroup-root if given, making those missing), "ignore" (leave
    /// them in ckpt's own cgroups; refused for a tree with a cgroup namespace of its
    /// own), "existing" (place, but every cgroup must exist already), "fresh" (place,
    /// but none may exist: the restore makes them all).
    #[arg(long = "cgroups", value_name = "MODE", default_value = "place")]
    cgroups: restore::CgroupMode,
    /// Also give the tree's cgroups the limits they had at dump (v2: memory.max,
    /// memory.high, pids.max, cpu.max, cpu.weight, io.max; v1: memory.limit_in_bytes,
    /// memory.soft_limit_in_bytes, pids.max, cpu.shares, cpu.cfs_period_us,
    /// cpu.cfs_quota_us; those not at the kernel's default), written before any
    /// process is put in them: "made" (the default: only the cgroups the restore makes)
    /// or "all" (existing ones too; written back if the restore fails). Restore refuses
    /// a limit this host cannot take (e.g. the controller not enabled in the parent's
    /// cgroup.subtree_control), naming it. (`--manage-cgroups=all`: with an equals sign.)
    #[arg(long = "manage-cgroups", value_name = "WHICH", num_args = 0..=1,
          require_equals = true, default_missing_value = "made", default_value = "off")]
    manage_cgroups: restore::LimitsMode,
}

impl InheritArgs {
    /// The host view for `cpu` with these external resources; an error is bad usage.
    fn view(self, cpu: &CpuArgs) -> Result<restore::HostView, String> {
        restore::set_external_mounts(
            self.external_mount
                .into_iter()
                .map(|(d, s)| (d.into_bytes(), s.into_bytes()))
                .collect(),
        );
        cpu.view().map(|v| restore::HostView {
            inherit: self.inherit_fd,
            join_ns: self.join_ns,
            cgroup_root: self.cgroup_root,
            cgroup_mode: self.cgroups,
            cgroup_limits: self.manage_cgroups,
            ..v
        })
    }
}

/// `dump --external`'s value: none (descriptors to outside), or `pidns[INODE]:KEY`.
/// Anything else (say a PID written right after the flag) is bad usage, named.
fn parse_external(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with("pidns[") {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected pidns[INODE]:KEY, or nothing (--external alone, last or before \
             another option, records descriptors to outside); got {s:?}"
        ))
    }
}

fn parse_external_mount(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((d, src)) if d.starts_with('/') && src.starts_with('/') => {
            Ok((d.to_string(), src.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not DEST=SOURCE with two absolute paths (e.g. /data=/srv/data)"
        )),
    }
}

fn parse_join_ns(s: &str) -> Result<(String, std::path::PathBuf), String> {
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not TYPE:PATH (e.g. net:/run/netns/blue)"))?;
    if !["net", "uts", "ipc", "pid"].contains(&kind) {
        return Err(format!(
            "{kind:?}: restore joins only net, uts, ipc and pid namespaces"
        ));
    }
    if path.is_empty() {
        return Err(format!("{s:?} names no namespace file after the colon"));
    }
    Ok((kind.to_string(), std::path::PathBuf::from(path)))
}

fn parse_inherit(s: &str) -> Result<(i32, String), String> {
    let (n, key) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not N:KEY (e.g. 7:pipe:[12345])"))?;
    let n: i32 = n
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{n:?} is not a descriptor number"))?;
    if key.is_empty() {
        return Err(format!("{s:?} names no resource after the colon"));
    }
    Ok((n, key.to_string()))
}

/// The exit status section of the commands that exit 0, 1 or 2.
const EXIT_STATUS: &str = "EXIT STATUS:\n  0  success\n  \
1  the operation failed (the message on standard error says why)\n  2  bad usage";

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint process PID into an image file.
    ///
    /// The process is frozen, its state is written to a temporary file next to IMAGE,
    /// which is synced and renamed into place; then the process is killed (default) or
    /// let go (--leave-running). A failed dump leaves the process running exactly as
    /// before and no file at IMAGE. Unless --json is given, a line on standard error
    /// tells the image's size and how long the process was frozen. Run as root.
    #[command(
        after_long_help = "EXIT STATUS:\n  0  the image is written (and the process \
killed, or left running with --leave-running)\n  \
1  the dump failed or was refused (the process runs on as before; no file at IMAGE)\n  \
2  bad usage"
    )]
    Dump(DumpArgs),
    /// Restore a process from an image.
    ///
    /// Everything is checked first (as `ckpt check` does). The process gets its original
    /// PID and becomes a child of ckpt, which waits for it and exits with its status.
    /// Standard input, output and error that led to a terminal or pipe at dump time are
    /// connected to ckpt's own (with --new-tty, a terminal to a new pty instead). While
    /// it waits, ckpt ignores SIGINT and SIGQUIT, as a shell does: the keyboard's
    /// signals go to the restored process. Run as root.
    #[command(after_long_help = "EXIT STATUS:\n  \
without --detach, the restored root process's own exit status, or 128+N if a signal N \
killed it (as a shell reports it)\n  \
0  with --detach: the process runs (its PID is printed on standard output)\n  \
1  the restore was refused or failed\n  \
2  bad usage (including a bad --cpu-mask or CKPT_HOST_MASK)")]
    Restore(RestoreArgs),
    /// Check whether an image can be restored on this host, without restoring it.
    ///
    /// Reads the whole image (every checksum) and runs every check restore runs before
    /// its point of no return, printing every problem found (on standard error, or all
    /// on standard output with --json). Exit 0 when restorable.
    #[command(
        after_long_help = "EXIT STATUS:\n  0  the image can be restored on this host\n  \
1  it cannot (every problem is listed), or the image cannot be read\n  \
2  bad usage (including a bad --cpu-mask or CKPT_HOST_MASK)"
    )]
    Check(CheckArgs),
    /// Show what an image holds: header, architecture, process, memory, files, signals.
    ///
    /// Reads the whole image, checking every record's checksum, and describes it on
    /// standard output: as text for people, or everything as JSON with --json.
    #[command(after_long_help = EXIT_STATUS)]
    Inspect(InspectArgs),
    /// Remove the network lock of an image's TCP connections without restoring it.
    ///
    /// While a dumped TCP connection's process is gone, netfilter rules drop the peer's
    /// packets so that its connection is not reset; a successful restore removes them,
    /// a failed one keeps them so that the restore can be tried again. Use this to give
    /// up on an image: the peers then see their connections reset. Run as root.
    #[command(after_long_help = EXIT_STATUS)]
    Unlock(UnlockArgs),
    /// Run a sample workload, checkpoint it, kill it, restore it, and show it continue.
    ///
    /// Needs root. Exits with the restored workload's status (0 when it finished).
    Demo,
    /// Stop tracking the writes of a process (see `dump --track`).
    ///
    /// The userfaultfds that tracked it are closed (which unregisters its areas and
    /// clears every page's protection) and its holder ends. Exit 0 if it was tracked.
    #[command(after_long_help = EXIT_STATUS)]
    Untrack {
        /// The root of the tracked tree.
        pid: i32,
    },
    /// Move a running process to another host: pre-copy over TCP to `ckpt receive`.
    ///
    /// Rounds while the process runs: a full image (as `dump --track`), then images of
    /// the pages written since the last one, until that set stops shrinking or after
    /// --rounds rounds; then the final dump freezes it and sends the metadata and the
    /// last pages. The receiver restores it; only once it confirms that the copy is
    /// past its point of no return is the process killed here. Any failure before
    /// leaves it running here as before (untracked) and nothing on the receiver. If
    /// the confirmation is lost after the receiver was told to go on, the process is
    /// kept stopped here (SIGSTOP) and the message says how to resolve it. TCP
    /// connections move with it (locked on both sides meanwhile). Run as root.
    #[command(
        after_long_help = "EXIT STATUS:\n  0  the process runs on the receiver and \
is gone here\n  1  the migration failed (the process runs on here, untracked; nothing is \
left on the receiver)\n  2  bad usage\n  3  unresolved: the receiver did not confirm after \
it was told to go on; the process is kept stopped here (see the message)"
    )]
    Migrate(MigrateArgs),
    /// Take one migration from `ckpt migrate` and restore it here.
    ///
    /// Listens on ADDR:PORT for one connection, receives the images (kept as unnamed
    /// files, gone however ckpt ends), verifies each and every link of their chain,
    /// and restores the last as `ckpt restore` does (plan's refusals are sent back to
    /// the source, which then runs on). Without --detach, waits for the restored
    /// process and exits with its status, as restore does. Run as root.
    #[command(after_long_help = "EXIT STATUS:\n  \
without --detach, the restored root process's own exit status, or 128+N if a signal N \
killed it\n  0  with --detach: the process runs (its PID is printed on standard output)\n  \
1  nothing was restored (the source runs on)\n  2  bad usage")]
    Receive(ReceiveArgs),
    /// Start a copy of the image a template (`ckpt restore --template SOCKET`) holds.
    ///
    /// The template forks its staged process into a new PID namespace (where the copy
    /// has the image's PID, under an init of its own) and lets it run: its memory is
    /// shared copy-on-write with the template and every other copy (a page is copied
    /// only when one of them writes it), and its standard input, output and error are
    /// ours. Without --detach, ckpt waits for the copy and exits with its status, as
    /// `ckpt restore` does; the copy runs on if the template ends meanwhile.
    #[command(
        after_long_help = "OUTPUT:\n  --json prints one line once the copy runs: \
{\"pid\", \"init\", \"ns_pid\", \"spawn_us\", \"request_us\"}: the copy's PID and its \
init's as seen here, its PID in its namespace, the template's time from the request \
to the copy's release, and ours from connecting to the answer. --detach alone prints \
the copy's PID.\n\n\
EXIT STATUS:\n  \
without --detach, the copy's own exit status, or 128+N if a signal N killed it\n  \
0  with --detach or --stop: done\n  \
1  no copy was made (no template answers, or it failed: nothing of the copy is left)\n  \
2  bad usage"
    )]
    Spawn(SpawnArgs),
    /// The init of a copy's PID namespace (internal, executed by a template's fork).
    #[command(hide = true, name = "copy-init")]
    CopyInit { root: i32 },
    /// The holder of a tracked tree (internal, started by `dump --track`).
    #[command(hide = true, name = "track-hold")]
    TrackHold { spec: String },
    /// The demo's workload (internal).
    #[command(hide = true, name = "demo-workload")]
    DemoWorkload { steps: u64 },
}

// The options of `ckpt dump`.
#[derive(clap::Args)]
struct DumpArgs {
    /// The process to checkpoint: the root of the tree that is dumped, with all its
    /// threads and descendants.
    pid: i32,
    /// Where to write the image ("-" for standard output). Required.
    #[arg(short = 'o', long = "output", value_name = "IMAGE")]
    output: PathBuf,
    /// Let the process continue after the dump instead of killing it (by default it is
    /// killed once the image is safely written).
    #[arg(long)]
    leave_running: bool,
    /// Print statistics as JSON on standard output instead of the summary line on
    /// standard error (not with -o -).
    #[arg(long)]
    json: bool,
    /// Record descriptors above 2 that lead outside the dumped tree instead of
    /// refusing them: a pipe whose other end a process not dumped holds, or a unix
    /// socket connected to one. Each is recorded as an external resource named as
    /// /proc shows it (`pipe:[INODE]`, `socket:[INODE]`), which `ckpt inspect`
    /// lists; `ckpt restore` then needs `--inherit-fd N:KEY` for each, giving one of
    /// its own descriptors in its place. Data still in such a pipe or socket stays
    /// in it (with the outside process), not in the image. By default such a
    /// descriptor makes the dump fail.
    ///
    /// `--external pidns[INODE]:KEY`: the tree runs inside the PID namespace
    /// pid:[INODE] (as /proc/PID/ns/pid shows it) that was made outside it, its root not
    /// being the namespace's init (a pod's shared PID namespace, a tree started with
    /// `nsenter -p`): record it as external, named KEY; `ckpt restore` then needs
    /// `--inherit-fd N:KEY` (N a descriptor of the namespace, e.g. `N</proc/PID/ns/pid`)
    /// or `--join-ns pid:PATH`, and builds the tree inside that namespace with the same
    /// IDs there. Without it such a tree is restored into a new PID namespace whose
    /// init is a reaper of ckpt's.
    #[arg(
        long,
        value_name = "pidns[INODE]:KEY",
        num_args = 0..=1,
        default_missing_value = "",
        value_parser = parse_external
    )]
    external: Vec<String>,
    /// Compress the page data: `lz4` gives smaller images for memory that
    /// compresses (text, interpreter heaps, repetitive data) at a CPU cost on dump and
    /// restore; `zstd` smaller ones still, at a higher CPU cost when dumping; `none`
    /// (the default) is the fastest. Pages that do not shrink are stored as they are.
    /// The image stays one checksummed stream either way, and restore reads all.
    #[arg(long, value_enum, value_name = "HOW", default_value = "none")]
    compress: dump::Compress,
    /// Write a full image and keep tracking the process's writes from now on (it is
    /// left running): later dumps with --parent IMAGE store only the pages written
    /// since. A holder process keeps the tracking (see `ckpt untrack`).
    #[arg(long, conflicts_with = "parent")]
    track: bool,
    /// Write an incremental image: the metadata and only the pages written since the
    /// image FILE, which must be the last image of the process's tracking (--track, or
    /// a previous --parent dump). The image names FILE (by path and hash); restore
    /// follows the chain. With --leave-running the tracking goes on from this image;
    /// otherwise the process is killed and its tracking ends. A failed dump ends the
    /// tracking too.
    #[arg(long, value_name = "FILE")]
    parent: Option<PathBuf>,
    /// Freeze the tree with the cgroup freezer first, which no fork can outrun: the
    /// tree must be the whole cgroup PATH (a cgroup directory, e.g.
    /// /sys/fs/cgroup/unified/job for cgroup v2 or /sys/fs/cgroup/freezer/job for the
    /// v1 freezer; without =PATH the root process's cgroup, v2 if it can be frozen,
    /// else v1). A cgroup holding processes outside the tree, or a tree with
    /// processes outside it, is refused. The cgroup is frozen, every thread in it
    /// seized, and thawed again with every thread held; a cgroup its owner had frozen
    /// is left frozen. The freeze is put back as it was however the dump ends, even
    /// if ckpt is killed.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        require_equals = true
    )]
    freeze_cgroup: Option<Option<PathBuf>>,
}

// The options of `ckpt migrate`.
#[derive(clap::Args)]
struct MigrateArgs {
    /// The process to move: the root of the tree, with all its threads and descendants.
    pid: i32,
    /// Where `ckpt receive --listen` waits, as HOST:PORT.
    to: String,
    /// Pre-copy rounds after the full one, at most (they also stop when the set of
    /// pages written since the last round stops shrinking).
    #[arg(long, value_name = "N", default_value = "5")]
    rounds: u32,
    /// Print the rounds (pages, bytes, milliseconds each), the bytes sent and the frozen
    /// time as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// As for `ckpt dump`.
    #[arg(long)]
    external: bool,
    /// As for `ckpt dump`.
    #[arg(long, value_enum, value_name = "HOW", default_value = "none")]
    compress: dump::Compress,
    /// Post-copy: once frozen, send the final image's metadata first; the receiver runs
    /// its copy before the pages written since the last round have arrived (taking them
    /// on first touch, asking for them first) while the rest come. The process here
    /// stays frozen until every page is there, and is killed only then. If the
    /// connection is lost before all were sent, the copy there is killed and this one
    /// runs on.
    #[arg(long)]
    lazy: bool,
}

// The options of `ckpt receive`.
#[derive(clap::Args)]
struct ReceiveArgs {
    /// The address and port to listen on for the migration, e.g. 0.0.0.0:7070.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: String,
    /// Where the received images are kept meanwhile (as unnamed files, never left
    /// behind); by default the temporary directory ($TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    cpu: CpuArgs,
    /// As for `ckpt restore`.
    #[arg(long)]
    detach: bool,
    /// As for `ckpt restore`.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// As for `ckpt restore` (needed when the process's PIDs are taken here).
    #[arg(long)]
    new_pidns: bool,
    #[command(flatten)]
    inherit: InheritArgs,
    /// Once the process runs, print on standard output a JSON object: its "pid", the
    /// "rounds" received, "bytes_received" and "restore_ms" (from the last image to the
    /// commit); with --detach, instead of the PID line.
    #[arg(long)]
    json: bool,
}

// The options of `ckpt restore`.
#[derive(clap::Args)]
struct RestoreArgs {
    /// The image file ("-" for standard input).
    image: PathBuf,
    #[command(flatten)]
    cpu: CpuArgs,
    /// Return as soon as the process runs, printing its PID on standard output, instead
    /// of waiting for it (the default). Once ckpt has exited, the restored root's parent
    /// is the nearest child subreaper or init.
    #[arg(long)]
    detach: bool,
    /// Write the restored process's PID (as seen from here) to this file, followed by a
    /// newline, once it runs. A file that cannot be written is a warning only.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Restore into a new PID namespace (with its own /proc), where the image's PIDs
    /// are free even if they are taken here. ckpt stays in it as its init (PID 1),
    /// reaping orphans; the printed PID is the root's PID as seen from here. A tree
    /// that had a PID namespace of its own (its root was PID 1 there) always gets a
    /// new one, with its root as PID 1 again, with or without this option.
    #[arg(long)]
    new_pidns: bool,
    #[command(flatten)]
    inherit: InheritArgs,
    /// Restore onto a new pseudo-terminal instead of ckpt's own standard descriptors.
    /// Descriptors 0-2 that led to a terminal at dump get the new pty; the root of
    /// the tree becomes the leader of a new session whose controlling terminal it is
    /// (if the old one was), with the same foreground process group, so job control
    /// works; the terminal's settings (termios, window size) are those it had at
    /// dump. ckpt then copies its standard input to the terminal and the terminal's
    /// output to its standard output (switching its own terminal, if stdin is one, to
    /// raw mode meanwhile, as script(1) does) until the root exits, and exits with
    /// its status. Refused when the image's processes used no terminal, more than
    /// one, or one from another session than the root's. Not with --detach,
    /// --new-pidns, or an image read from standard input.
    #[arg(long, conflicts_with_all = ["detach", "new_pidns"])]
    new_tty: bool,
    /// For an incremental image: its parent is FILE, not the path the image recorded
    /// (the parent's identity is still checked).
    #[arg(long, value_name = "FILE")]
    parent: Option<PathBuf>,
    /// Let the process run before its private anonymous memory is copied: each page
    /// comes in from the image when first touched, and (`--lazy` or `--lazy=fill`)
    /// the rest is copied in the background, so the time until it runs does not grow
    /// with its memory. ckpt stays until every page is in (with --detach it prints the
    /// PID at once, closes its standard output and exits then); if it dies before,
    /// the restored processes are killed (they never read a page that is not theirs).
    /// `--lazy=touch` (with --new-pidns: many copies of one image side by side) copies
    /// only the pages the copy touches: ckpt serves it for as long as it runs, its
    /// lazy areas stay registered with a userfaultfd, and it holds only what it
    /// touched (the rest stays in the image file's page cache, shared by every copy).
    /// The image must be a file. Not with --new-tty, or an image whose tree had a PID
    /// namespace of its own.
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "fill",
        value_name = "fill|touch",
        conflicts_with = "new_tty"
    )]
    lazy: Option<LazyArg>,
    /// Restore-many: stage the image once (everything but the point of no return: the
    /// process fully built, its memory in place, collapsed into huge pages where its
    /// areas allow), stopped, and serve copies of it to `ckpt spawn SOCKET` on the unix
    /// socket SOCKET, each one a fork of the staged process that shares its memory
    /// copy-on-write, in a PID namespace of its own (needs --new-pidns). Prints the
    /// server's PID on standard output once it listens, and runs until `ckpt spawn
    /// --stop SOCKET` or its own end (SIGTERM): the staged process is then killed and
    /// SOCKET removed; the copies run on. Only single-process, single-threaded images
    /// whose descriptors are standard ones connected outside (each copy gets its
    /// `ckpt spawn`'s), without timers, pending signals, locked or wipe-on-fork
    /// memory, shared mappings, seccomp or own namespaces; the rest is refused before
    /// anything is made, naming the object.
    #[arg(
        long,
        value_name = "SOCKET",
        requires = "new_pidns",
        conflicts_with_all = ["lazy", "new_tty", "detach", "pid_file"]
    )]
    template: Option<PathBuf>,
}

// The options of `ckpt spawn`.
#[derive(clap::Args)]
struct SpawnArgs {
    /// The template's socket (`ckpt restore --template SOCKET`).
    socket: PathBuf,
    /// Return as soon as the copy runs instead of waiting for it; prints its PID
    /// (unless --json).
    #[arg(long)]
    detach: bool,
    /// Print the copy's PIDs and the times as one line of JSON once it runs.
    #[arg(long)]
    json: bool,
    /// Stop the template instead: its staged process is killed and SOCKET removed
    /// (copies made before run on).
    #[arg(long, conflicts_with_all = ["detach", "json"])]
    stop: bool,
}

/// `restore --lazy[=fill|touch]`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LazyArg {
    Fill,
    Touch,
}

// The options of `ckpt check`.
#[derive(clap::Args)]
struct CheckArgs {
    /// The image file ("-" for standard input).
    image: PathBuf,
    #[command(flatten)]
    cpu: CpuArgs,
    #[command(flatten)]
    inherit: InheritArgs,
    /// For an incremental image: its parent is FILE, not the path the image recorded.
    #[arg(long, value_name = "FILE")]
    parent: Option<PathBuf>,
    /// Print the result as JSON on standard output: "restorable", every problem with a
    /// stable "code" and its "message", the bytes of page data, and the
    /// "requirements" a host needs for schedulers: CPU features, kernel facilities,
    /// "namespaces" (kind, own/external/host, a user namespace's ID maps), "mounts"
    /// (external mounts with their recorded sources, device and inode; the file
    /// system types mounted anew) and "cgroups" (each hierarchy's cgroup paths).
    #[arg(long)]
    json: bool,
}

// The options of `ckpt inspect`.
#[derive(clap::Args)]
struct InspectArgs {
    /// The image file ("-" for standard input).
    image: PathBuf,
    /// Print everything as JSON instead of the text summary: the image's whole metadata,
    /// and under "image" its format version, size, record count and bytes of page data.
    #[arg(long)]
    json: bool,
}

// The options of `ckpt unlock`.
#[derive(clap::Args)]
struct UnlockArgs {
    /// The image file whose connections to unlock ("-" for standard input).
    image: PathBuf,
}

/// The image to read (`-`: standard input). `Send`: restore reads it on a thread of its
/// own. The buffer serves the small reads (record headers, checksums); page data is
/// read in pieces larger than it, which go straight into their own buffers.
fn open_input(path: &PathBuf) -> Result<Box<dyn Read + Send>, String> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::BufReader::with_capacity(
            INPUT_BUF,
            io::stdin(),
        )));
    }
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Box::new(io::BufReader::with_capacity(INPUT_BUF, f)))
}

/// The image to restore or check: a full image, read as a stream (or, for `--lazy`,
/// its file, read as a stream and at random), or an incremental one (`dump --parent`),
/// read through its chain in place, each link verified (`restore::composite`).
enum Opened {
    Stream(Box<dyn Read + Send>),
    File(File),
    Chain(Box<restore::composite::Composite>),
}

fn open_chain(path: &PathBuf, parent: Option<&PathBuf>, file: bool) -> Result<Opened, String> {
    if path.as_os_str() == "-" {
        if parent.is_some() {
            return Err("--parent needs the image as a file, not standard input".into());
        }
        return open_input(path).map(Opened::Stream);
    }
    match restore::composite::Composite::of_chain(path, parent.map(|p| p.as_path())) {
        Ok(Some(c)) => Ok(Opened::Chain(Box::new(c))),
        Ok(None) if parent.is_some() => Err(format!(
            "{} is not an incremental image: --parent does not apply",
            path.display()
        )),
        Ok(None) if file => File::open(path)
            .map(Opened::File)
            .map_err(|e| format!("cannot open {}: {e}", path.display())),
        Ok(None) => open_input(path).map(Opened::Stream),
        Err(e) => Err(e.to_string()),
    }
}

/// `ckpt migrate`.
fn cmd_migrate(a: MigrateArgs) -> i32 {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ckpt: dumping {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress: std::sync::Arc<dyn Fn(u64, u64) + Send + Sync> =
        std::sync::Arc::new(move |done, total| {
            b.set_length(total);
            b.set_position(done);
        });
    let b = bar.clone();
    let json = a.json;
    let say: std::sync::Arc<dyn Fn(&str) + Send + Sync> = std::sync::Arc::new(move |m| {
        b.suspend(|| {
            if !json {
                say!("ckpt: {m}")
            }
        })
    });
    let opts = ckpt::migrate::send::MigrateOptions {
        rounds: a.rounds,
        dump: DumpOptions {
            external: a.external,
            compress: a.compress,
            progress: Some(progress),
            ..Default::default()
        },
        say: Some(say),
        lazy: a.lazy,
    };
    let res = ckpt::migrate::send::migrate(a.pid, &a.to, &opts);
    bar.finish_and_clear();
    match res {
        Ok(st) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                say!(
                    "ckpt: process {} moved to {} in {} rounds ({:.1} MiB sent), frozen {:.1} ms; it runs there as PID {}",
                    a.pid,
                    a.to,
                    st.rounds.len(),
                    st.bytes_sent as f64 / (1 << 20) as f64,
                    st.frozen_ms,
                    st.restored_pid
                );
            }
            0
        }
        Err(e @ ckpt::migrate::send::MigrateError::Unresolved { .. }) => {
            say!("ckpt: {e}");
            3
        }
        Err(e) => err(e),
    }
}

/// `ckpt receive`.
fn cmd_receive(a: ReceiveArgs) -> i32 {
    let mut view = match a.inherit.view(&a.cpu) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    view.new_pid_namespace = a.new_pidns;
    let pid_file = match a.pid_file.map(|p| std::path::absolute(&p)).transpose() {
        Ok(p) => p,
        Err(e) => return usage(format!("--pid-file: {e}")),
    };
    let listener = match std::net::TcpListener::bind(&a.listen) {
        Ok(l) => l,
        Err(e) => return err(format!("cannot listen on {}: {e}", a.listen)),
    };
    say!("ckpt: listening on {}", a.listen);
    if !a.detach {
        host::ignore_keyboard_signals();
    }
    let opts = ckpt::migrate::receive::ReceiveOptions {
        view,
        new_pidns: a.new_pidns,
        dir: a.dir.unwrap_or_else(std::env::temp_dir),
        say: Some(std::sync::Arc::new(|m: &str| say!("ckpt: {m}"))),
    };
    let (launched, st) = match ckpt::migrate::receive::receive(&listener, opts) {
        Ok(l) => l,
        Err(e) => return err(format!("{e}; nothing was restored")),
    };
    drop(listener);
    say!("ckpt: the process runs here as PID {}", launched.root);
    if a.json {
        println!("{}", serde_json::to_string(&st).unwrap_or_default());
        let _ = io::stdout().flush();
        if a.detach {
            write_pid_file(pid_file.as_deref(), launched.root);
            if restore::lazy_pending() {
                // The caller has the PID; ckpt stays until the memory is in.
                host::close_stdout();
            }
            return finish_lazy(0);
        }
    }
    detach_or_wait(launched, pid_file.as_deref(), a.detach)
}

/// `ckpt untrack`.
fn cmd_untrack(pid: i32) -> i32 {
    match dump::track::untrack(pid) {
        Ok(true) => {
            say!("ckpt: process {pid} is not tracked any more");
            0
        }
        Ok(false) => err(format!("process {pid} is not tracked")),
        Err(e) => err(e),
    }
}

/// Buffer size for reading images: no larger than the pieces restore reads page data
/// in (64 KiB), so that those bypass it.
const INPUT_BUF: usize = 64 << 10;

fn err(msg: impl std::fmt::Display) -> i32 {
    say!("ckpt: {msg}");
    1
}

pub fn main() -> i32 {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`ckpt inspect IMG | head`). A dump to such a pipe then dies before its release
    // step, and the kernel lets the target run on as it was.
    host::die_on_broken_pipe();
    // ckpt can read and change any process: it never lends root's power to a caller who
    // does not have it (a setuid-root copy, or one given file capabilities).
    if host::started_with_elevated_privileges() != Some(false) {
        say!(
            "ckpt: refusing to run: started setuid/setgid or with file capabilities (or \
             its auxiliary vector cannot be read); run it as root instead"
        );
        return 1;
    }
    // Run as `criu` (a link named so) or `ckpt criu ...`: the criu-compatible front end.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if ckpt::criu::called_as_criu(&argv0) {
        return ckpt::criu::main(args.collect());
    }
    if args.next().is_some_and(|a| a == "criu") {
        return ckpt::criu::main(args.collect());
    }
    match Cli::parse().cmd {
        Cmd::Dump(a) => cmd_dump(a),
        Cmd::Restore(a) => cmd_restore(a),
        Cmd::Check(a) => cmd_check(a),
        Cmd::Inspect(a) => cmd_inspect(a),
        Cmd::Unlock(a) => cmd_unlock(a),
        Cmd::Untrack { pid } => cmd_untrack(pid),
        Cmd::Migrate(a) => cmd_migrate(a),
        Cmd::Receive(a) => cmd_receive(a),
        Cmd::TrackHold { spec } => dump::track::hold_main(&spec),
        Cmd::Spawn(a) => cmd_spawn(a),
        Cmd::CopyInit { root } => restore::template::copy_init(root),
        Cmd::Demo => demo::run(),
        Cmd::DemoWorkload { steps } => demo::workload(steps),
    }
}

/// `ckpt dump`.
fn cmd_dump(a: DumpArgs) -> i32 {
    let DumpArgs {
        pid,
        output,
        leave_running,
        json,
        external,
        compress,
        track,
        parent,
        freeze_cgroup,
    } = a;
    // A tracked process goes on running.
    let leave_running = leave_running || track;
    let incremental = match (track, parent) {
        (true, _) => dump::track::Incremental::Track,
        (false, Some(p)) => dump::track::Incremental::Parent(p),
        (false, None) => dump::track::Incremental::No,
    };
    let out = if output.as_os_str() == "-" {
        if json {
            say!(
                "ckpt: --json cannot be used with -o - (the image goes to stdout); \
                 write the image to a file to get the statistics"
            );
            return 2;
        }
        Output::Stdout
    } else {
        Output::Path(output.clone())
    };
    // A progress bar on a terminal (indicatif draws nothing elsewhere).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ckpt: dumping {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress: std::sync::Arc<dyn Fn(u64, u64) + Send + Sync> =
        std::sync::Arc::new(move |done, total| {
            b.set_length(total);
            b.set_position(done);
        });
    let mut external_pidns = None;
    for e in external.iter().filter(|e| !e.is_empty()) {
        match dump::parse_external_pidns(e) {
            Ok(x) if external_pidns.is_none() => external_pidns = Some(x),
            Ok(_) => return usage("--external pidns[INODE]:KEY: given twice"),
            Err(m) => return usage(format!("--external {m}")),
        }
    }
    let external = external.iter().any(|e| e.is_empty());
    let opts = DumpOptions {
        leave_running,
        external,
        compress,
        progress: Some(progress),
        hook: None,
        incremental,
        freeze_cgroup: freeze_cgroup.map(|p| match p {
            None => dump::FreezeCgroup::OfRoot,
            Some(p) => dump::FreezeCgroup::At(p),
        }),
        new_tty: false,
        net_locked: false,
        external_pidns,
        net_remade: false,
        tcp_established: false,
        transient: false,
        early_smaps: None,
    };
    let res = dump::dump(pid, out, &opts);
    bar.finish_and_clear();
    let st = match res {
        Ok(st) => st,
        // The conventional status of a program ended by that signal.
        Err(e @ dump::DumpError::Interrupted(sig)) => {
            err(e);
            host::ignore_broken_pipe();
            return 128 + sig;
        }
        Err(e) => return err(e),
    };
    for w in &st.warnings {
        say!("ckpt: warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else if output.as_os_str() != "-" {
        say!(
            "ckpt: dumped process {pid} to {} ({:.1} MiB, {} pages, {} zero pages skipped) in {:.1} ms, frozen {:.1} ms; process {}",
            output.display(),
            st.image_bytes as f64 / (1 << 20) as f64,
            st.pages_written,
            st.zero_pages_skipped,
            st.total.as_secs_f64() * 1e3,
            st.frozen.as_secs_f64() * 1e3,
            if leave_running {
                "left running"
            } else {
                "killed"
            }
        );
    }
    0
}

/// `ckpt restore`.
fn cmd_restore(a: RestoreArgs) -> i32 {
    ckpt::error::time_mark("restore: start");
    let RestoreArgs {
        image,
        cpu,
        detach,
        pid_file,
        new_pidns,
        inherit,
        new_tty,
        parent,
        lazy,
        template,
    } = a;
    let lazy = lazy.map(|l| match l {
        LazyArg::Fill => restore::LazyMode::Fill,
        LazyArg::Touch => restore::LazyMode::Touch,
    });
    if lazy == Some(restore::LazyMode::Touch) && !new_pidns {
        return usage(
            "--lazy=touch needs --new-pidns (ckpt serves the copy until its PID namespace \
             ends)",
        );
    }
    if lazy.is_some() && image.as_os_str() == "-" {
        say!(
            "ckpt: --lazy reads pages from the image as the program touches them: it must be a file, not standard input"
        );
        return 2;
    }
    if new_tty && image.as_os_str() == "-" {
        say!(
            "ckpt: --new-tty copies standard input to the new terminal: the image \
             cannot come from standard input too"
        );
        return 2;
    }
    let mut view = match inherit.view(&cpu) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    view.new_pid_namespace = new_pidns;
    // Absolute now: written once ckpt may be in the tree's mount namespace.
    let pid_file = match pid_file.map(|p| std::path::absolute(&p)).transpose() {
        Ok(p) => p,
        Err(e) => return usage(format!("--pid-file: {e}")),
    };
    // An incremental image: its chain is read in place, the metadata given to prepare
    // the full image's. --lazy of a full image: the same open file, read as a stream
    // for the metadata and at random for the pages.
    let (input, lazy_file, chain): (Box<dyn Read + Send>, _, _) =
        match open_chain(&image, parent.as_ref(), lazy.is_some()) {
            Ok(Opened::Stream(i)) => (i, None, None),
            Ok(Opened::File(f)) => match f.try_clone() {
                Ok(dup) => (
                    Box::new(io::BufReader::with_capacity(INPUT_BUF, f)),
                    Some(dup),
                    None,
                ),
                Err(e) => return err(format!("cannot open {}: {e}", image.display())),
            },
            Ok(Opened::Chain(c)) => match c.meta_image() {
                Ok(m) => (Box::new(io::Cursor::new(m)), None, Some(c)),
                Err(e) => return err(e),
            },
            Err(e) => return err(e),
        };
    if !detach {
        // Like a shell waiting for its job: keyboard signals are for the job.
        host::ignore_keyboard_signals();
    }
    ckpt::error::time_mark("restore: image open");
    let mut prepared = match restore::prepare(input, &view) {
        Ok(p) => p,
        Err(e) => return err(e),
    };
    ckpt::error::time_mark("restore: planned");
    // Returns only if ckpt already runs with the image's address randomization.
    if let Err(e) = prepared.take_randomization(image.as_os_str() != "-") {
        return err(e);
    }
    if let (Some(f), Some(mode)) = (lazy_file, lazy) {
        if let Err(e) = prepared.set_lazy(f, mode) {
            return err(e);
        }
    }
    if let Some(c) = chain {
        let set = match lazy {
            Some(mode) => prepared.set_composite_lazy(*c, mode),
            None => prepared.set_composite(*c, false),
        };
        if let Err(e) = set {
            return err(e);
        }
    }
    let master = if new_tty {
        match prepared.with_new_tty() {
            Ok(m) => Some(m),
            Err(e) => return err(e),
        }
    } else {
        None
    };
    ckpt::error::time_mark("restore: lazy index read");
    if let Some(socket) = template {
        return match prepared.launch_template(&socket) {
            Ok(t) => {
                println!("{}", t.server);
                let _ = io::stdout().flush();
                match t.wait() {
                    Ok(()) => 0,
                    Err(e) => err(e),
                }
            }
            Err(e) => err(e),
        };
    }
    let launched = match prepared.launch(new_pidns) {
        Ok(l) => l,
        // The conventional status of a program ended by that signal.
        Err(e @ restore::RestoreError::Interrupted(sig)) => {
            err(e);
            return 128 + sig;
        }
        Err(e) => return err(e),
    };
    if let Some(m) = master {
        write_pid_file(pid_file.as_deref(), launched.root);
        return match launched.relay_tty(m) {
            Ok(status) => restore::exit_code(status),
            Err(e) => err(e),
        };
    }
    detach_or_wait(launched, pid_file.as_deref(), detach)
}

/// `ckpt check`.
fn cmd_check(a: CheckArgs) -> i32 {
    let CheckArgs {
        image,
        cpu,
        inherit,
        json,
        parent,
    } = a;
    let view = match inherit.view(&cpu) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let checked = match open_chain(&image, parent.as_ref(), false) {
        Ok(Opened::Stream(i)) => restore::check(i, &view),
        Ok(Opened::File(f)) => restore::check(f, &view),
        Ok(Opened::Chain(c)) => restore::check_composite(&c, &view),
        Err(e) => return err(e),
    };
    let report = match checked {
        Ok(r) => r,
        Err(e) => {
            if json {
                let v = serde_json::json!({
                    "restorable": false,
                    "problems": [{"code": "image", "message": e.to_string()}],
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            return err(e);
        }
    };
    let ok = report.problems.is_empty();
    if json {
        let v = serde_json::json!({
            "restorable": ok,
            "problems": report.problems,
            "page_bytes": report.page_bytes,
            "requirements": report.requirements,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if ok {
        println!("{}: can be restored on this host", image.display());
    } else {
        say!(
            "ckpt: {} cannot be restored on this host ({} problem{}):",
            image.display(),
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        );
        for p in &report.problems {
            say!("  - {}", p.message);
        }
    }
    if ok { 0 } else { 1 }
}

/// `ckpt inspect`.
fn cmd_inspect(a: InspectArgs) -> i32 {
    let input = match open_input(&a.image) {
        Ok(i) => i,
        Err(e) => return err(e),
    };
    match inspect::inspect(input, a.json) {
        Ok(()) => 0,
        Err(e) => err(e),
    }
}

/// `ckpt unlock`.
fn cmd_unlock(a: UnlockArgs) -> i32 {
    let input = match open_input(&a.image) {
        Ok(i) => i,
        Err(e) => return err(e),
    };
    match restore::unlock(input) {
        Ok(n) => {
            say!("ckpt: unlocked {n} TCP connection(s)");
            0
        }
        Err(e) => err(e),
    }
}

fn write_pid_file(pid_file: Option<&std::path::Path>, pid: i32) {
    if let Some(f) = pid_file {
        // As ckpt's own mount namespace shows it (a restore of a tree with a mount
        // namespace of its own left ckpt in that one).
        if let Err(e) = host::write_host_file(f, format!("{pid}\n").as_bytes()) {
            say!("ckpt: warning: cannot write pid file {}: {e}", f.display());
        }
    }
}

/// The end of a restore: write the restored root's PID to the pid file; with
/// `--detach` print it and return, else wait for the tree (the root, or the init of its
/// new PID namespace, which exits with the root's status) and exit as it did.
fn cmd_spawn(a: SpawnArgs) -> i32 {
    if a.stop {
        return match restore::template::stop(&a.socket) {
            Ok(()) => 0,
            Err(e) => err(e),
        };
    }
    let s = match restore::template::spawn(&a.socket) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "pid": s.pid,
                "init": s.init,
                "ns_pid": s.ns_pid,
                "spawn_us": s.spawn_us,
                "request_us": s.request_us,
            })
        );
    } else if a.detach {
        println!("{}", s.pid);
    }
    let _ = io::stdout().flush();
    if a.detach {
        return 0;
    }
    host::ignore_keyboard_signals();
    match s.wait() {
        Ok(status) => restore::exit_code(status),
        Err(e) => err(e),
    }
}

fn detach_or_wait(
    launched: restore::Launched,
    pid_file: Option<&std::path::Path>,
    detach: bool,
) -> i32 {
    write_pid_file(pid_file, launched.root);
    if detach {
        ckpt::error::time_mark("restore: runs, PID printed");
        println!("{}", launched.root);
        let _ = io::stdout().flush();
        if restore::lazy_pending() {
            // The caller has the PID; ckpt stays until the memory is in.
            host::close_stdout();
        }
        return finish_lazy(0);
    }
    let code = match launched.wait() {
        Ok(status) => restore::exit_code(status),
        Err(e) => err(e),
    };
    finish_lazy(code)
}

/// `restore --lazy`: ckpt exits only once every page is in (its end before would
/// kill the tree).
fn finish_lazy(code: i32) -> i32 {
    match restore::wait_lazy() {
        Some(Err(e)) => err(e),
        _ => code,
    }
}
