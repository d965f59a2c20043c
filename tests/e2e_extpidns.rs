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
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| {
                    fs::metadata(format!("/proc/{p}/ns/pid")).is_ok_and(|m| m.ino() == ino)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
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
