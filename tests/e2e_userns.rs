//! User namespaces of the tree's own (issue 15, item 2: rootless containers): a tree
//! that made a user namespace is restored in a new one with the same uid_map, gid_map,
//! setgroups state and owner, its UTS, IPC and network namespaces owned by it, and every
//! process's credentials as the kernel shows them from the host (IDs, groups,
//! capabilities relative to the namespace); files it creates afterwards get the same
//! owners. The state oracle (`ctx.dump`/`ctx.restore`) compares, besides the rest,
//! which namespaces each process shares, who owns each (NS_GET_USERNS), the maps,
//! setgroups, the namespace's creator (NS_GET_OWNER_UID) and /proc/PID/status.
//! Combinations restore cannot do are refused at dump, naming them; a failed restore
//! leaves nothing. Target: `tests/targets/userns.c`. Needs root.

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

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// A line of /proc/PID/`file` of process `pid`, blanks squeezed.
fn proc_text(pid: i32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value of line "Name:" of /proc/PID/status, blanks squeezed.
fn status(pid: i32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The processes of `tree` share a user namespace that is not the test's, with maps
/// `map` (uid and gid), and their UTS, IPC, network namespaces are as `own` says (the
/// tree's, not ours) and, when their own, owned by that user namespace.
fn assert_userns(tree: &[i32], map: &str, own: &[&str], what: &str) {
    let root = tree[0].to_string();
    let user = ns(&root, "user");
    assert_ne!(
        user,
        ns("self", "user"),
        "{what}: the user namespace is its own"
    );
    for &p in tree {
        let s = p.to_string();
        assert_eq!(ns(&s, "user"), user, "{what}: process {p} shares it");
        assert_eq!(proc_text(p, "uid_map"), map, "{what}: uid_map of {p}");
        assert_eq!(proc_text(p, "gid_map"), map, "{what}: gid_map of {p}");
        for kind in ["uts", "ipc", "net"] {
            if own.contains(&kind) {
                assert_ne!(
                    ns(&s, kind),
                    ns("self", kind),
                    "{what}: {kind} is the tree's"
                );
            } else {
                assert_eq!(ns(&s, kind), ns("self", kind), "{what}: {kind} is ours");
            }
        }
    }
}

/// `unshare -U -r` running a shell loop (the real program; its `sleep` child too):
/// restored in a new user namespace mapping root to root, setgroups denied, root with
/// every capability there; the output continues.
#[test]
fn unshare_map_root_user_shell_is_restored_in_a_new_user_namespace() {
    let ctx = Ctx::new("unshare_map_root_user_shell_is_restored_in_a_new_user_namespace");
    let spec = Spec::new(unshare())
        .arg("-U")
        .arg("-r")
        .arg("sh")
        .arg("-c")
        .arg("i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo step $i; sleep 0.4; done");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 3, &[], "unshare-r", &mut |pid| {
        // (The shell, and its `sleep` child most of the time.)
        assert_userns(&[pid], "0 0 1", &[], "restored unshare -r shell");
        assert_eq!(proc_text(pid, "setgroups"), "deny");
        assert_eq!(status(pid, "Uid"), "0 0 0 0");
        checked = true;
    });
    assert!(checked);
}

/// A rootless tree: user 1000 (no capability on the host) runs `unshare -U -r`, so the
/// namespace's creator is 1000 and root inside is 1000 outside. Restored (by root) into
/// a new namespace whose creator is 1000 again, with the same map, the process user
/// 1000 on the host and root with every capability inside.
#[test]
fn rootless_unshare_of_an_unprivileged_user_is_restored() {
    let ctx = Ctx::new("rootless_unshare_of_an_unprivileged_user_is_restored");
    let spec = Spec::new("/usr/bin/setpriv")
        .arg("--reuid=1000")
        .arg("--regid=1000")
        .arg("--clear-groups")
        .arg(unshare())
        .arg("-U")
        .arg("-r")
        .arg("sh")
        .arg("-c")
        .arg("i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo step $i; sleep 0.4; done");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 3, &[], "rootless", &mut |pid| {
        assert_userns(&[pid], "0 1000 1", &[], "restored rootless shell");
        assert_eq!(status(pid, "Uid"), "1000 1000 1000 1000");
        assert_eq!(status(pid, "Gid"), "1000 1000 1000 1000");
        assert_eq!(status(pid, "CapEff"), "000001ffffffffff");
        assert_eq!(proc_text(pid, "setgroups"), "deny");
        checked = true;
    });
    assert!(checked);
}

/// A wide map written from outside (IDs 0-65535 to 123400-188935, setgroups allowed),
/// UTS, IPC and network namespaces made inside it, a process that became user 1000
/// (with saved ID 0), groups 1000 and 5, and kept two capabilities, and a child: both
/// restored with the same IDs (from the host: 124400, 124400, 123400...), capabilities
/// and groups, in new namespaces owned by the new user namespace; the files it creates
/// after the restore are owned by 124400:124400 on the host.
#[test]
fn wide_user_namespace_owning_uts_ipc_net_is_restored() {
    let ctx = Ctx::new("wide_user_namespace_owning_uts_ipc_net_is_restored");
    let dir = ctx.path("files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let spec = Spec::new(target("userns"))
        .arg("40")
        .arg("sleep=40")
        .arg("wide")
        .arg("uts")
        .arg("ipc")
        .arg("net")
        .arg("child")
        .arg(format!("dir={}", dir.display()));
    let check = |tree: &[i32], what: &str| {
        assert_eq!(tree.len(), 2, "{what}: the root and its child: {tree:?}");
        assert_userns(tree, "0 123400 65536", &["uts", "ipc", "net"], what);
        for &p in tree {
            assert_eq!(proc_text(p, "setgroups"), "allow", "{what}");
            assert_eq!(status(p, "Uid"), "124400 124400 123400 124400", "{what}");
            assert_eq!(status(p, "Gid"), "124400 124400 124400 124400", "{what}");
            assert_eq!(status(p, "CapEff"), "0000000000001001", "{what}");
            assert_eq!(status(p, "CapInh"), "0000000000000020", "{what}");
        }
    };
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    check(&wait_process_tree(t.pid, 2, "userns"), "original");
    t.kill();
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 8, &[], "userns-wide", &mut |pid| {
        let tree = wait_process_tree(pid, 2, "restored userns");
        check(&tree, "restored");
        checked = true;
    });
    assert!(checked);
    // Every step's file, those made after the restore too, is the user's inside.
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
        let m = e.metadata().expect("stat");
        assert_eq!((m.uid(), m.gid()), (124_400, 124_400), "{:?}", e.path());
        n += 1;
    }
    assert!(n >= 40, "the steps made {n} files");
}

/// A process of the tree's user namespace with two threads, in ckpt's PID namespace:
/// restored with its thread (its ID set from outside through ns_last_pid, as the
/// process cannot choose IDs in ckpt's PID namespace from inside the user namespace),
/// both in the new user namespace with the same IDs (the oracle compares each thread's
/// status too); the output continues.
#[test]
fn multithreaded_process_in_a_user_namespace_is_restored() {
    let ctx = Ctx::new("multithreaded_process_in_a_user_namespace_is_restored");
    let spec = Spec::new(target("userns"))
        .arg("40")
        .arg("sleep=40")
        .arg("threads");
    let mut checked = false;
    dump_restore_compare(&ctx, &spec, &spec, 4, &[], "userns-threads", &mut |pid| {
        let tasks: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(tasks.len(), 2, "the restored process's threads: {tasks:?}");
        assert_userns(&[pid], "0 0 1", &[], "restored two-threaded process");
        for t in tasks {
            assert_eq!(
                ns(&format!("{pid}/task/{t}"), "user"),
                ns(&pid.to_string(), "user"),
                "thread {t} is in the user namespace"
            );
        }
        checked = true;
    });
    assert!(checked);
}

/// The same, with another task taking the ID of the thread between ckpt's write of
/// `ns_last_pid` and its clone (`CKPT_TAKE_NEXT_ID`, as a process started elsewhere on
/// the host would): the thread made with the wrong ID exits before it runs and is made
/// again; the restored process has its thread under the dumped TID, and the oracle
/// sees nothing else.
#[test]
fn a_thread_whose_id_another_task_took_is_made_again() {
    let ctx = Ctx::new("a_thread_whose_id_another_task_took_is_made_again");
    let spec = Spec::new(target("userns"))
        .arg("40")
        .arg("sleep=40")
        .arg("threads");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(4);
    let pid = t.pid;
    ctx.track(pid);
    let tids = |p: i32| -> Vec<i32> {
        let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let dumped = tids(pid);
    assert_eq!(dumped.len(), 2, "the original's threads: {dumped:?}");
    let img = ctx.path("taken.img");
    ctx.dump(pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("userns-threads: original");
    wait_pids_gone(&[pid], "userns-threads");
    let mut r = ctx.restore_with(&img, &[], In::Null, &[], &[("CKPT_TAKE_NEXT_ID", "1")]);
    r.wait_lines(1);
    assert_eq!(
        tids(pid),
        dumped,
        "the restored process's threads keep their IDs"
    );
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&fin.stderr)
    );
    assert_same_output(
        "userns-threads (a thread's ID taken once at restore)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// Processes on the host whose user namespace maps IDs from 223400 (this test's map):
/// none once a restore failed.
fn namespaces_with_our_map() -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        if map.split_whitespace().nth(1) == Some("223400") {
            out.push(pid);
        }
    }
    out
}

/// Restores that fail at each step (making the user namespace, joining what it owns,
/// a stub joining it, and every step after, sampled) leave no process and no user
/// namespace behind; the next restore succeeds and continues the output.
#[test]
fn failed_restores_of_a_tree_with_a_user_namespace_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_tree_with_a_user_namespace_leave_nothing");
    let spec = Spec::new(target("userns"))
        .arg("25")
        .arg("sleep=20")
        .arg("wide")
        .arg("base=223400")
        .arg("uts")
        .arg("ipc")
        .arg("child");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(5);
    let tree = wait_process_tree(t.pid, 2, "userns");
    let img = ctx.path("userns.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    let before = t.stdout.finish("userns: original");
    wait_pids_gone(&tree, "userns after the dump");
    assert_eq!(
        namespaces_with_our_map(),
        Vec::<i32>::new(),
        "after the dump"
    );
    RestoreWalk {
        name: "userns",
        img: &img,
        reference: &reference.stdout,
        before: &before,
        pids: &tree,
        min: 20,
        must: "create the tree's user namespace",
        named: &[
            "create the tree's user namespace",
            "join the namespaces the tree's user namespace owns",
            "take the user namespace",
            "setns (the tree's user namespace)",
        ],
    }
    .run(
        &ctx,
        |n, total| n <= 6 || n % 13 == 0 || n == total,
        |f| {
            assert_eq!(
                namespaces_with_our_map(),
                Vec::<i32>::new(),
                "restore failing at {f} left a process in the user namespace"
            )
        },
    );
}

/// Namespaces of the tree's own restore cannot make with a user namespace yet are
/// refused at dump, naming both, and the tree runs on: a PID namespace that ckpt's user
/// namespace owns (`unshare -p -f unshare -U -r`: the shell is PID 1 and made the user
/// namespace afterwards). (Mount and PID namespaces the user namespace owns are
/// restored: tests/e2e_rootless.rs; cgroup and time ones: tests/e2e_userns_more.rs.)
#[test]
fn namespaces_not_restored_with_a_user_namespace_are_refused() {
    let ctx = Ctx::new("namespaces_not_restored_with_a_user_namespace_are_refused");
    let script = "while :; do echo tick; sleep 0.2; done";
    let cases: [(&[&str], &[&str], usize); 1] = [(
        &["-p", "-f", "/usr/bin/unshare", "-U", "-r"],
        &[
            "pid namespace of its own",
            "not by the tree's own user namespace",
        ],
        1,
    )];
    for (i, (args, wants, depth)) in cases.iter().enumerate() {
        let spec = args
            .iter()
            .fold(Spec::new(unshare()), |s, a| s.arg(a))
            .arg("sh")
            .arg("-c")
            .arg(script);
        let mut t = ctx.spawn(&spec);
        t.wait_lines(1);
        let tree = process_tree(t.pid);
        for &p in &tree {
            ctx.track(p);
        }
        // The shell: the spawned process, or the child of the first unshare.
        let sh = tree[*depth];
        let img = ctx.path(&format!("refused{i}.img"));
        let r = ctx.try_dump(sh, &img);
        r.assert_fails(1);
        assert!(
            wants.iter().all(|w| r.stderr.contains(w)),
            "dump of {args:?}: {}",
            r.stderr
        );
        assert!(!img.exists());
        assert_running_untraced(sh, &format!("{args:?} after the refused dump"));
        t.kill();
    }
}
