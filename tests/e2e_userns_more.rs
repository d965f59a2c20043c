//! User namespaces of the tree's own with more around them (issue 15): a cgroup and a
//! time namespace made inside the user namespace (`unshare -U -r -C -T`, the shape of a
//! rootless container's) are made again owned by the new user namespace, the cgroup
//! one rooted at the same cgroups, the time one with clocks that continue from the
//! dumped values. The state oracle (`ctx.dump`/`ctx.restore`) compares, besides the
//! rest, which namespaces each process shares, who owns each (NS_GET_USERNS), the
//! maps, setgroups, /proc/PID/status and /proc/PID/cgroup; the programs check their own
//! cgroup view, IDs, capabilities and clocks and report. Target:
//! `tests/targets/usernstc.c`. Needs root.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::more::*;
use common::*;

/// The inode of namespace `kind` of process `pid` (`self` for the test).
fn ns(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The inode of the user namespace that owns namespace `kind` of process `pid`.
fn ns_owner(pid: i32, kind: &str) -> u64 {
    common::oracle::ns_owner(pid, kind)
        .unwrap_or_else(|| panic!("NS_GET_USERNS of /proc/{pid}/ns/{kind}"))
}

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// The cgroup v2 line ("0::PATH") of /proc/PID/cgroup.
fn cgroup_v2_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"))
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Cgroups the test made, removed (innermost first) when dropped.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    fn make(&mut self, dir: PathBuf) -> PathBuf {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.0.push(dir.clone());
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Each process of `tree` is in a user namespace not the test's, and in cgroup and time
/// namespaces of the tree's (shared by all, not the test's), both owned by that user
/// namespace.
fn assert_owned_cgroup_time(tree: &[i32], what: &str) {
    let root = tree[0].to_string();
    let user = ns(&root, "user");
    assert_ne!(
        user,
        ns("self", "user"),
        "{what}: a user namespace of its own"
    );
    for &p in tree {
        let s = p.to_string();
        assert_eq!(ns(&s, "user"), user, "{what}: process {p} shares it");
        for kind in ["cgroup", "time"] {
            assert_ne!(
                ns(&s, kind),
                ns("self", kind),
                "{what}: {kind} is the tree's"
            );
            assert_eq!(ns(&s, kind), ns(&root, kind), "{what}: {kind} is shared");
            assert_eq!(
                ns_owner(p, kind),
                user,
                "{what}: the {kind} namespace of {p} is owned by the tree's user namespace"
            );
        }
    }
}

/// A tree (`usernstc`: root and child) in a user namespace mapping root to root, with a
/// cgroup namespace rooted at a cgroup v2 group of the test's (the child in a subgroup)
/// and a time namespace 10 days ahead, both made inside the user namespace: restored
/// in new ones owned by a new user namespace, in the same cgroups as the host shows
/// them, the program seeing "/" and "/kid" and its clocks going on without a jump.
#[test]
fn user_namespace_with_cgroup_and_time_namespaces_is_restored() {
    let ctx = Ctx::new("user_namespace_with_cgroup_and_time_namespaces_is_restored");
    let name = format!("ckpt-e2e-uscg-{}", std::process::id());
    let mut cgs = Cgroups(Vec::new());
    let top = cgs.make(cgroup_v2().join(&name));
    cgs.make(top.join("kid"));
    let spec = Spec::new(target("usernstc"))
        .arg("40")
        .arg("sleep=40")
        .arg(format!("cgroup={}", top.display()))
        .arg("child");
    let check = |tree: &[i32], what: &str| {
        assert_eq!(tree.len(), 2, "{what}: the root and its child: {tree:?}");
        assert_owned_cgroup_time(tree, what);
        assert_eq!(cgroup_v2_of(tree[0]), format!("0::/{name}"), "{what}");
        assert_eq!(cgroup_v2_of(tree[1]), format!("0::/{name}/kid"), "{what}");
    };
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    check(&wait_process_tree(t.pid, 2, "usernstc"), "original");
    t.kill();
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 8, &[], "usernstc", &mut |pid| {
        let tree = wait_process_tree(pid, 2, "restored usernstc");
        check(&tree, "restored");
        checked = true;
    });
    assert!(checked);
}

/// `unshare -U -r -C -T` running a shell loop (the real program): restored with its
/// cgroup and time namespaces owned by its new user namespace; the output continues.
#[test]
fn unshare_user_cgroup_time_shell_is_restored() {
    let ctx = Ctx::new("unshare_user_cgroup_time_shell_is_restored");
    let spec = Spec::new(unshare())
        .arg("-U")
        .arg("-r")
        .arg("-C")
        .arg("-T")
        .arg("sh")
        .arg("-c")
        .arg("i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo step $i; sleep 0.4; done");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 3, &[], "unshare-UCT", &mut |pid| {
        assert_owned_cgroup_time(&[pid], "restored unshare -U -r -C -T shell");
        assert_eq!(cgroup_v2_of(pid), cgroup_v2_of(std::process::id() as i32));
        checked = true;
    });
    assert!(checked);
}

/// Remove the cgroup `dir` (its processes gone), waiting a little for the kernel to
/// let it go.
fn remove_cgroup(dir: &std::path::Path) {
    for _ in 0..200 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("cannot remove the cgroup {}", dir.display());
}

/// Restores of the `usernstc` tree (its cgroups removed after the dump, so that the
/// restore makes them) that fail while its user namespace makes the cgroup and time
/// namespaces, while ckpt joins them, while a stub joins the user namespace, and just
/// before the point of no return, leave no process and none of the cgroups they made;
/// the next restore succeeds and continues the output.
#[test]
fn failed_restores_with_cgroup_and_time_namespaces_leave_nothing() {
    let ctx = Ctx::new("failed_restores_with_cgroup_and_time_namespaces_leave_nothing");
    let name = format!("ckpt-e2e-uscgf-{}", std::process::id());
    let mut cgs = Cgroups(Vec::new());
    let top = cgs.make(cgroup_v2().join(&name));
    let kid = cgs.make(top.join("kid"));
    let spec = Spec::new(target("usernstc"))
        .arg("25")
        .arg("sleep=20")
        .arg(format!("cgroup={}", top.display()))
        .arg("child");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let tree = wait_process_tree(t.pid, 2, "usernstc");
    let img = ctx.path("usernstc.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("usernstc: original");
    wait_pids_gone(&tree, "usernstc after the dump");
    remove_cgroup(&kid);
    remove_cgroup(&top);
    for f in [
        "create the tree's user namespace",
        "join the namespaces the tree's user namespace owns",
        "join the tree's time namespace",
        "setns (the tree's user namespace)",
        "place the processes in their cgroups",
    ] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
        assert!(
            !top.exists(),
            "a restore failing at {f:?} left the cgroup it made"
        );
    }
    let fin = ctx
        .spawn(&Spec::new(ckpt_bin()).arg("restore").arg(&img).cwd(&ctx.dir))
        .finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "the final restore: {}",
        text(&fin.stderr)
    );
    assert_same_output(
        "usernstc: restored after the failed ones",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}
