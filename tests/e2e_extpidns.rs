//! A tree inside a PID namespace made outside it (a pod's shared PID namespace: here a
//! holder made with `unshare -p -f`, and the tree started in it with `nsenter -p`,
//! so the tree's root is not the namespace's init), dumped with `--external
//! pidns[INO]:KEY` and restored INSIDE that same namespace (`--inherit-fd N:KEY`), every
//! process and thread with its ID there again. Also: the refusals (an inode that is not
//! the tree's namespace at dump; no namespace given, an ID taken there at restore,
//! leaving nothing behind).
//!
//! The target is `tests/targets/extpidns.c`. Needs root (unshare, nsenter, ptrace,
//! clone3 set_tid).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::oracle;
use common::*;

/// A program of util-linux, wherever it is installed.
fn util_linux(name: &str) -> PathBuf {
    for d in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = PathBuf::from(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("needs {name}(1) (util-linux)");
}

/// The inode of the PID namespace of process `pid`.
fn pidns(pid: i32) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/pid"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/pid: {e}"))
        .ino()
}

/// The processes (host PIDs) whose PID namespace is `ino`.
fn members(ino: u64) -> Vec<i32> {
    ns_members("pid", ino)
}

/// The IDs of every thread of process `pid` (host TIDs).
fn tids(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// NSpid of thread `tid` of process `pid`.
fn thread_nspid(pid: i32, tid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("NSpid:").map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// The NSpid chains of a tree's threads as its namespace numbers them (the level
/// below ours), parents first, each process's threads in order.
fn inner_ids(tree: &[i32]) -> Vec<Vec<i32>> {
    tree.iter()
        .map(|&p| {
            tids(p)
                .into_iter()
                .map(|t| thread_nspid(p, t)[1..].to_vec())
                .collect::<Vec<_>>()
        })
        .map(|mut v| {
            v.sort();
            v.concat()
        })
        .collect()
}

/// A holder of a new PID namespace, as a pod's pause container: `unshare -p -f
/// --kill-child extpidns hold`, which reaps the namespace's orphans; returns it and the
/// namespace's init (PID 1 there).
fn holder(ctx: &Ctx) -> (Proc, i32) {
    let mut h = ctx.spawn(
        &Spec::new(util_linux("unshare"))
            .arg("-p")
            .arg("-f")
            .arg("--kill-child")
            .arg(target("extpidns"))
            .arg("hold"),
    );
    h.wait_for("holding\n");
    let tree = wait_process_tree(h.pid, 2, "unshare and its holder");
    for &p in &tree {
        ctx.track(p);
    }
    assert_eq!(nspids(tree[1])[1], 1, "the holder is the namespace's init");
    (h, tree[1])
}

/// `nsenter -t INIT -p extpidns ARGS`: R (PID 2 there), C (3) and R's thread T (4).
fn start_in(ctx: &Ctx, init: i32, args: &[&str]) -> Proc {
    let mut spec = Spec::new(util_linux("nsenter"))
        .arg("-t")
        .arg(init.to_string())
        .arg("-p")
        .arg(target("extpidns"))
        .stdin(In::Pipe);
    for a in args {
        spec = spec.arg(a);
    }
    ctx.spawn(&spec)
}

fn check(p: &mut Proc, round: usize) -> String {
    p.write_stdin(b"check\n");
    let head = format!("check {round}: ");
    p.wait_for(&head);
    p.wait_until("finish its check line", |p| {
        p.stdout
            .text()
            .lines()
            .any(|l| l.starts_with(&head) && l.contains("| T tid="))
            && p.stdout.text().ends_with('\n')
    });
    let out = p.stdout.text();
    let line = out
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_default();
    line[head.len()..].to_string()
}

/// The tree of `extpidns` in a namespace made by a holder, dumped with `--external
/// pidns[INO]:pod`, comes back inside that very namespace with `--inherit-fd N:pod`: R,
/// C and T have their IDs there again (2, 3, 4: the same NSpid chains below our level),
/// R's parent is outside the namespace as before (getppid() 0), the namespace's init is
/// still the holder's, and the oracle finds the same kernel state as the namespace sees
/// it. Before that: a dump naming another namespace is refused with the tree untouched;
/// a restore without the namespace is refused naming the option, and one where an ID of
/// the tree is taken there is refused in plan; neither leaves anything in the
/// namespace.
#[test]
fn tree_in_a_pid_namespace_made_outside_it_is_restored_inside_it() {
    let name = "tree_in_a_pid_namespace_made_outside_it_is_restored_inside_it";
    let ctx = Ctx::new(name);
    let (_h, init) = holder(&ctx);
    let ino = pidns(init);
    let mut t = start_in(&ctx, init, &[]);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "nsenter, R and C");
    for &p in &tree {
        ctx.track(p);
    }
    let (r, c) = (tree[1], tree[2]);
    assert_eq!(pidns(r), ino, "R is in the holder's namespace");
    assert_eq!(nspids(r)[1], 2, "R is PID 2 there");
    assert_eq!(nspids(c)[1], 3, "C is PID 3 there");
    let first = check(&mut t, 1);
    assert_eq!(
        first, "R pid=2 ppid=0 levels=2 | C pid=3 ppid=2 child=same | T tid=4",
        "the original"
    );
    let ids_before = inner_ids(&tree[1..]);
    assert_eq!(ids_before, vec![vec![2, 4], vec![3]]);

    let img = ctx.path("pod.img");
    let dump = |extra: &str| {
        ctx.ckpt(&[
            OsStr::new("dump"),
            OsStr::new(&r.to_string()),
            OsStr::new("-o"),
            img.as_os_str(),
            OsStr::new("--external"),
            OsStr::new(extra),
        ])
    };
    // Another namespace's inode: refused, naming it; the tree runs on untouched.
    dump("pidns[1]:pod")
        .assert_fails(1)
        .assert_stderr_mentions(&["pidns[1]", &format!("pid:[{ino}]")]);
    assert!(!img.exists(), "a refused dump left an image");
    assert_running_untraced(r, "R after a refused dump");
    assert_running_untraced(c, "C after a refused dump");

    let before = oracle::Snapshot::at_rest(r, name);
    ctx.oracle_before_dump(r, &img);
    dump(&format!("pidns[{ino}]:pod")).assert_ok();
    t.expect_killed();
    wait_pids_gone(&[r, c], "R and C after their dump");
    let j = ctx.inspect_json(&img);
    assert_eq!(j["external_pid_namespace"]["inode"].as_u64(), Some(ino));
    assert_eq!(j["external_pid_namespace"]["key"].as_str(), Some("pod"));
    let ids: Vec<i64> = j["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["pid"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![2, 3], "the image holds the namespace's IDs");
    let left = members(ino);
    assert_eq!(
        left,
        vec![init],
        "only the holder's init is left in the namespace"
    );

    // No namespace given: refused, naming the options; nothing made.
    let mut r0 = ctx.restore(&img, &[], In::Null);
    let f0 = r0.finish();
    assert_eq!(f0.status.code(), Some(1), "{}", text(&f0.stderr));
    let e = text(&f0.stderr);
    assert!(
        e.contains("--inherit-fd N:pod") && e.contains("--join-ns pid:PATH"),
        "the refusal names the options: {e}"
    );
    assert_eq!(
        members(ino),
        left,
        "a refused restore left nothing in the namespace"
    );

    // C's ID taken there (a squatter's child made with clone3 set_tid): refused in plan.
    let nsf = fs::File::open(format!("/proc/{init}/ns/pid")).expect("open the namespace");
    let fd = nsf.as_raw_fd();
    let mut sq = start_in(&ctx, init, &["squat", "3"]);
    sq.wait_for("squatting\n");
    let squatters = members(ino);
    assert_eq!(
        squatters.len(),
        3,
        "init, squatter and its child: {squatters:?}"
    );
    let arg = format!("{fd}:pod");
    let mut r1 = ctx.restore_keeping(&img, &["--inherit-fd", &arg], In::Null, &[fd]);
    let f1 = r1.finish();
    assert_eq!(f1.status.code(), Some(1), "{}", text(&f1.stderr));
    let e = text(&f1.stderr);
    assert!(
        e.contains("PID 3 is in use by another task (extpidns)") && e.contains("for pod"),
        "the refusal names the ID and who holds it: {e}"
    );
    assert_eq!(
        members(ino),
        squatters,
        "a refused restore left nothing in the namespace"
    );
    for p in squatters.iter().filter(|&&p| p != init) {
        send_signal(*p, libc::SIGKILL);
    }
    sq.finish();
    let deadline = std::time::Instant::now() + timeout();
    while members(ino) != left {
        assert!(
            std::time::Instant::now() < deadline,
            "the squatters do not go: {:?}",
            members(ino)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // Given: restored inside that namespace (the oracle compares it as it restores).
    let mut rs = ctx.restore_keeping(&img, &["--inherit-fd", &arg], In::Pipe, &[fd]);
    let root2 = {
        let deadline = std::time::Instant::now() + timeout();
        loop {
            if let Some(x) = oracle::restored_tree_in_pid_namespace(&before, rs.pid) {
                break x;
            }
            assert!(
                std::time::Instant::now() < deadline && rs.try_wait().is_none(),
                "the restored tree does not run; ckpt restore: {:?}\n{}",
                rs.try_wait(),
                rs.stderr.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let tree2 = wait_process_tree(root2, 2, "restored R and C");
    for &p in &tree2 {
        ctx.track(p);
        assert_eq!(
            pidns(p),
            ino,
            "restored in the holder's namespace, not a new one"
        );
    }
    assert_eq!(
        inner_ids(&tree2),
        ids_before,
        "the same NSpid chains below our level"
    );
    let mut in_ns = left.clone();
    in_ns.extend(&tree2);
    in_ns.sort();
    assert_eq!(
        members(ino),
        in_ns,
        "the namespace holds its init and the restored tree, nothing of ckpt's"
    );
    let after = oracle::Snapshot::at_rest(root2, name);
    oracle::assert_same_kernel_state(
        name,
        "restored inside the namespace made outside it",
        oracle::Cmp::Restored,
        &before.as_seen_in_its_pid_namespace(),
        &after.as_seen_in_its_pid_namespace(),
        &[],
    );
    let again = check(&mut rs, 2);
    assert_eq!(again, first, "the restored tree's IDs, as it sees them");
    rs.write_stdin(b"exit\n");
    rs.close_stdin();
    let fin = rs.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    assert!(
        text(&fin.stdout).contains("C exited 0"),
        "{}",
        text(&fin.stdout)
    );
    assert_eq!(members(ino), left, "the tree ended; the namespace lives on");
    drop(nsf);
}

/// The same through the `criu` front end, with runc's spelling: `criu dump --external
/// pid[INO]:extRootPidNS` and `criu restore --inherit-fd fd[N]:extRootPidNS` (N a
/// descriptor of the namespace, as runc passes it): the tree comes back inside the
/// namespace with the same IDs there, and goes on answering.
#[test]
fn criu_front_end_takes_runcs_external_pid_namespace() {
    let name = "criu_front_end_takes_runcs_external_pid_namespace";
    let ctx = Ctx::new(name);
    let (_h, init) = holder(&ctx);
    let ino = pidns(init);
    let mut t = start_in(&ctx, init, &[]);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 3, "nsenter, R and C");
    for &p in &tree {
        ctx.track(p);
    }
    let r = tree[1];
    let first = check(&mut t, 1);
    let ids_before = inner_ids(&tree[1..]);
    let before = oracle::Snapshot::at_rest(r, name);
    let link = ctx.path("criu");
    std::os::unix::fs::symlink(ckpt_bin(), &link).expect("symlink criu -> ckpt");
    let dir = ctx.path("images");
    fs::create_dir_all(&dir).expect("mkdir images");
    let d = ctx
        .spawn(
            &Spec::new(&link)
                .arg("dump")
                .arg("-t")
                .arg(r.to_string())
                .arg("-D")
                .arg(&dir)
                .arg("-o")
                .arg("dump.log")
                .arg("--external")
                .arg(format!("pid[{ino}]:extRootPidNS")),
        )
        .finish();
    assert_eq!(
        d.status.code(),
        Some(0),
        "criu dump: {}\n{}",
        text(&d.stderr),
        fs::read_to_string(dir.join("dump.log")).unwrap_or_default()
    );
    t.expect_killed();
    wait_pids_gone(&tree[1..], "R and C after their dump");
    let nsf = fs::File::open(format!("/proc/{init}/ns/pid")).expect("open the namespace");
    let fd = nsf.as_raw_fd();
    let mut rs = ctx.spawn(
        &Spec::new(&link)
            .arg("restore")
            .arg("-D")
            .arg(&dir)
            .arg("-o")
            .arg("restore.log")
            .arg("--inherit-fd")
            .arg(format!("fd[{fd}]:extRootPidNS"))
            .stdin(In::Pipe)
            .keep_fd(fd),
    );
    let root2 = {
        let deadline = std::time::Instant::now() + timeout();
        loop {
            if let Some(x) = oracle::restored_tree_in_pid_namespace(&before, rs.pid) {
                break x;
            }
            assert!(
                std::time::Instant::now() < deadline && rs.try_wait().is_none(),
                "the restored tree does not run; criu restore: {:?}\n{}\n{}",
                rs.try_wait(),
                rs.stderr.text(),
                fs::read_to_string(dir.join("restore.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let tree2 = wait_process_tree(root2, 2, "restored R and C");
    for &p in &tree2 {
        ctx.track(p);
        assert_eq!(pidns(p), ino, "restored in the holder's namespace");
    }
    assert_eq!(inner_ids(&tree2), ids_before, "the same NSpid chains");
    let after = oracle::Snapshot::at_rest(root2, name);
    oracle::assert_same_kernel_state(
        name,
        "restored by criu restore inside the namespace made outside it",
        oracle::Cmp::Restored,
        &before.as_seen_in_its_pid_namespace(),
        &after.as_seen_in_its_pid_namespace(),
        &[],
    );
    assert_eq!(check(&mut rs, 2), first, "the restored tree's IDs");
    rs.write_stdin(b"exit\n");
    rs.close_stdin();
    let fin = rs.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "criu restore: {}",
        text(&fin.stderr)
    );
    drop(nsf);
}

// ---- with a mount namespace of the tree's own ----

/// `nsenter -t INIT -p unshare -m --mount-proc --propagation private mntpid BASE STEPS`
/// (`init` Some: PID 2 of the holder's namespace, as a pod's app container, in a mount
/// namespace of its own whose /proc is a proc of the pod's PID namespace, mounted from
/// inside it) or, with `init` None, the same in the test's PID namespace. The target
/// (`tests/targets/mntpid.c`) prints, each step, its PID and those /proc shows.
fn mntpid(ctx: &Ctx, init: Option<i32>, dir: &str, steps: u32) -> Spec {
    let base = ctx.dir.join(dir);
    fs::create_dir_all(&base).expect("mkdir base");
    let spec = match init {
        Some(init) => Spec::new(util_linux("nsenter"))
            .arg("-t")
            .arg(init.to_string())
            .arg("-p")
            .arg(util_linux("unshare")),
        None => Spec::new(util_linux("unshare")),
    };
    spec.arg("-m")
        .arg("--mount-proc")
        .arg("--propagation")
        .arg("private")
        .arg(target("mntpid"))
        .arg(base)
        .arg(steps.to_string())
        .arg("sleep=40")
}

/// The last "step" line of an output, from its " pid " on (what the program saw of its
/// PID and of /proc).
fn seen(out: &str) -> String {
    let last = out
        .lines()
        .rfind(|l| l.starts_with("step "))
        .unwrap_or_default();
    last.split_once(" pid ")
        .map(|(_, r)| format!("pid {r}"))
        .unwrap_or_default()
}

/// The mount namespace's inode of process `pid`.
fn mntns(pid: i32) -> u64 {
    ns_inode(&pid.to_string(), "mnt")
}

/// The reference run of mntpid in a holder's namespace of its own (PID 2 there), and
/// that holder (kept: its init, a child of the test's once orphaned, would stay a
/// zombie).
fn mntpid_reference(ctx: &Ctx, steps: u32) -> (Proc, String) {
    let (h, init) = holder(ctx);
    let r = ctx.spawn(&mntpid(ctx, Some(init), "ref", steps)).finish();
    let out = text(&r.stdout);
    assert!(
        out.contains(" pid 2 stat 2 self 2 proc 1,2\n") && out.ends_with("done\n"),
        "the reference sees the pod's PID namespace in its /proc:\n{out}"
    );
    (h, out)
}

/// The end of a restored mntpid's checks: its mounts are the dumped ones (normalised
/// mountinfo), its /proc lists `listing` (`what` it shows), and `ckpt restore` ends
/// with status 0. Returns what the restored program printed.
fn finish_restored_mntpid(
    mut rs: Proc,
    r2: i32,
    before: &[String],
    listing: Vec<i32>,
    what: &str,
) -> String {
    assert_eq!(
        mountinfo(r2),
        before,
        "the restored mounts (normalised mountinfo)"
    );
    assert_eq!(proc_listing(r2), listing, "its /proc shows {what}");
    let fin = rs.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&fin.stderr)
    );
    text(&fin.stdout)
}

/// A pod's app with a mount namespace of its own (its /proc the pod's PID namespace's):
/// dumped with `--external pidns[INO]:pod`, restored INSIDE the holder's namespace
/// (`--join-ns pid:PATH`) with its ID there (2), its mounts (normalised mountinfo) and a
/// /proc that shows the pod's namespace (the program prints its PID, /proc/self and
/// the PIDs /proc lists: 1,2, as before; a proc of ckpt's would show ours); its output
/// is an uninterrupted run's. Restores failing at each step of building the mount
/// namespace and at sampled later ones leave nothing in the namespace nor on the host,
/// and the next one works.
#[test]
fn mount_namespace_in_a_pid_namespace_made_outside_is_restored_inside_it() {
    let name = "mount_namespace_in_a_pid_namespace_made_outside_is_restored_inside_it";
    let ctx = Ctx::new(name);
    let steps = 60;
    let (rh, reference) = mntpid_reference(&ctx, steps);
    let (h, init) = holder(&ctx);
    let ino = pidns(init);
    let mut t = ctx.spawn(&mntpid(&ctx, Some(init), "m", steps));
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "nsenter and mntpid");
    for &p in &tree {
        ctx.track(p);
    }
    let r = tree[1];
    assert_eq!(pidns(r), ino, "in the holder's namespace");
    assert_eq!(nspids(r), vec![r, 2], "PID 2 there");
    assert_ne!(mntns(r), mntns(std::process::id() as i32));
    assert_eq!(proc_listing(r), vec![1, 2], "its /proc shows the pod's");
    let before = mountinfo(r);
    let host = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let img = ctx.path("pod.img");
    ctx.oracle_before_dump(r, &img);
    ctx.ckpt(&[
        OsStr::new("dump"),
        OsStr::new(&r.to_string()),
        OsStr::new("-o"),
        img.as_os_str(),
        OsStr::new("--external"),
        OsStr::new(&format!("pidns[{ino}]:pod")),
    ])
    .assert_ok();
    let out_before = t.finish().stdout;
    wait_pids_gone(&[r], "mntpid after its dump");
    assert_eq!(members(ino), vec![init]);

    let join = format!("pid:/proc/{init}/ns/pid");
    let extra = ["--join-ns", join.as_str()];
    let trace = ctx
        .spawn(
            &extra.iter().fold(
                Spec::new(ckpt_bin())
                    .arg("restore")
                    .arg(&img)
                    .env("CKPT_FAULT", "no such step")
                    .env("CKPT_FAULT_TRACE", "1")
                    .cwd(&ctx.dir),
                |s, a| s.arg(a),
            ),
        )
        .finish();
    let trace_text = text(&trace.stderr);
    assert_eq!(
        trace.status.code(),
        Some(0),
        "the traced restore: {trace_text}"
    );
    let total = trace_text
        .lines()
        .filter(|l| l.starts_with("ckpt: step #"))
        .count();
    assert!(
        trace_text.contains("mount a proc from inside the tree's PID namespace"),
        "{trace_text}"
    );
    assert_eq!(members(ino), vec![init], "the traced restore ended");
    let faults = fault_walk(
        &[
            "create the tree's mount namespace",
            "mount the tree's file systems",
            "mount a proc from inside the tree's PID namespace",
            "set the tree's mount propagation",
            "create the root in the external PID namespace",
        ],
        total,
        |n| n % 11 == 0 || n + 1 == total,
    );
    for f in &faults {
        assert_restore_fault_leaves_nothing(&ctx, &img, &extra, f, &[], &[rh.pid, h.pid, init]);
        assert_eq!(
            members(ino),
            vec![init],
            "restore failing at {f} left something in the namespace"
        );
        assert_eq!(
            fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
            host,
            "restore failing at {f} left a mount on the host"
        );
    }
    eprintln!("{} failing restores of {total} steps", faults.len());

    let mut rs = ctx.restore(&img, &extra, In::Null);
    rs.wait_lines(1);
    let restored = wait_process_tree(rs.pid, 2, "ckpt restore and mntpid");
    let r2 = restored[1];
    ctx.track(r2);
    assert_eq!(pidns(r2), ino, "restored in the holder's namespace");
    assert_eq!(nspids(r2), vec![r2, 2], "with its ID there");
    assert_eq!(
        members(ino),
        vec![init, r2],
        "nothing of ckpt's in the namespace"
    );
    assert_ne!(mntns(r2), mntns(std::process::id() as i32));
    let after = finish_restored_mntpid(rs, r2, &before, vec![1, 2], "the pod's");
    let whole = format!("{}{after}", text(&out_before));
    assert_eq!(whole, reference, "the output is an uninterrupted run's");
    assert_eq!(
        members(ino),
        vec![init],
        "the tree ended; the namespace lives on"
    );
}

/// The same app dumped without `--external`: it ran in a PID namespace whose init was
/// outside it, and is restored in a new one below ckpt's reaper (PID 1 there), with its
/// ID (2), its mounts, and a /proc showing that new namespace (1,2, as before); its
/// output is an uninterrupted run's. A restore failing at the reaper or at the proc
/// mount leaves nothing.
#[test]
fn mount_namespace_in_a_pid_namespace_without_its_init_is_restored_below_a_reaper() {
    let name = "mount_namespace_in_a_pid_namespace_without_its_init_is_restored_below_a_reaper";
    let ctx = Ctx::new(name);
    let steps = 50;
    let (rh, reference) = mntpid_reference(&ctx, steps);
    let (h, init) = holder(&ctx);
    let ino = pidns(init);
    let mut t = ctx.spawn(&mntpid(&ctx, Some(init), "m", steps));
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "nsenter and mntpid");
    let r = tree[1];
    let before = mountinfo(r);
    let img = ctx.path("outside.img");
    ctx.dump(r, &img);
    let out_before = t.finish().stdout;
    wait_pids_gone(&[r], "mntpid after its dump");
    let j = ctx.inspect_json(&img);
    assert_eq!(j["pid_namespace_init_outside"], true);
    for f in [
        "create the PID namespace's reaper",
        "mount a proc from inside the tree's PID namespace",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &[], &[rh.pid, h.pid, init]);
    }
    let mut rs = ctx.restore(&img, &[], In::Null);
    rs.wait_lines(1);
    let restored = wait_process_tree(rs.pid, 3, "ckpt restore, the reaper and mntpid");
    let r2 = restored[2];
    assert_ne!(pidns(r2), ino, "a new namespace");
    assert_eq!(nspids(restored[1])[1], 1, "the reaper is its init");
    assert_eq!(nspids(r2)[1..], [2], "with its ID there");
    let after = finish_restored_mntpid(rs, r2, &before, vec![1, 2], "the new namespace");
    let whole = format!("{}{after}", text(&out_before));
    assert_eq!(whole, reference, "the output is an uninterrupted run's");
}

/// A tree with a mount namespace of its own in the test's PID namespace (its /proc a
/// proc of that namespace) restored with `--new-pidns`: in a new PID namespace below
/// ckpt's reaper, with its PID as ID there, its mounts, and a /proc that shows the new
/// namespace (the reaper and itself only); it goes on counting where it was.
#[test]
fn mount_namespace_with_new_pidns_gets_a_proc_of_the_new_namespace() {
    let name = "mount_namespace_with_new_pidns_gets_a_proc_of_the_new_namespace";
    let ctx = Ctx::new(name);
    let steps = 50;
    let mut t = ctx.spawn(&mntpid(&ctx, None, "m", steps));
    t.wait_lines(4);
    let r = t.pid;
    let before = mountinfo(r);
    let img = ctx.path("new.img");
    ctx.dump(r, &img);
    let out_before = text(&t.finish().stdout);
    wait_pids_gone(&[r], "mntpid after its dump");
    let mut rs = ctx.restore(&img, &["--new-pidns"], In::Null);
    rs.wait_lines(1);
    let restored = wait_process_tree(rs.pid, 3, "ckpt restore, the reaper and mntpid");
    let r2 = restored[2];
    assert_ne!(pidns(r2), pidns(std::process::id() as i32));
    assert_eq!(
        nspids(r2)[1..],
        [r],
        "its PID as its ID in the new namespace"
    );
    let after = finish_restored_mntpid(rs, r2, &before, vec![1, r], "the new namespace");
    assert_eq!(
        seen(&after),
        format!("pid {r} stat {r} self {r} proc 1,{r}"),
        "{after}"
    );
    // The steps go on where they were (each once, the file's hash as an uninterrupted
    // run's: mntpid's hashes depend on the steps only).
    let steps_of = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("step "))
            .map(|l| l.split(" pid ").next().unwrap_or_default().to_string())
            .collect()
    };
    let (_rh, reference) = mntpid_reference(&ctx, steps);
    let mut got = steps_of(&out_before);
    got.extend(steps_of(&after));
    assert_eq!(
        got,
        steps_of(&reference),
        "the steps of an uninterrupted run"
    );
}
