//! The rootless-container shape (issue 15, item 2): a user namespace of the tree's own
//! that owns the tree's PID and mount namespaces (`unshare -U -r -p -m -f --mount-proc`,
//! what podman rootless and `runc --rootless` make), with the init's runtime gone
//! (`tests/targets/orphan.c` kills the `unshare` that made them and takes its child
//! over, so that nothing outside the tree is in them). Restored in a new user namespace
//! with the same maps, owning new PID and mount namespaces (built by ckpt inside it),
//! the tree's root PID 1 again; the state oracle (`ctx.dump`/`ctx.restore`) compares the
//! namespaces each process shares, who owns each (NS_GET_USERNS), the maps, setgroups,
//! NSpid, /proc/PID/status and the normalised mountinfo. A multi-threaded process in
//! such a tree comes back with its threads. Failed restores leave no process, user
//! namespace or mount. A tree with mount and PID namespaces of its own in a network
//! namespace made outside it is restored there with `--join-ns`. Needs root.

mod common;

use std::path::PathBuf;

use common::*;

/// `unshare` (util-linux).
fn unshare() -> PathBuf {
    let p = PathBuf::from("/usr/bin/unshare");
    assert!(p.exists(), "needs unshare(1) (util-linux)");
    p
}

/// `orphan unshare -U -r -p -m -f --mount-proc PROG...`.
fn container(prog: &[&str]) -> Spec {
    let s = Spec::new(target("orphan"))
        .arg(unshare())
        .arg("-U")
        .arg("-r")
        .arg("-p")
        .arg("-m")
        .arg("-f")
        .arg("--mount-proc");
    prog.iter().fold(s, |s, a| s.arg(a))
}

/// A line of /proc/PID/`file`, blanks squeezed.
fn proc_text(pid: i32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The namespace link of kind `kind` of process `pid` ("self" for the test).
fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
}

/// The container's init: PID 1 of its own PID namespace, in user, mount and PID
/// namespaces not the test's, root inside with the map "0 0 1".
fn assert_container(pid: i32, what: &str) {
    let ids = nspids(pid);
    assert_eq!(ids.last(), Some(&1), "{what}: PID 1 of its own ({ids:?})");
    assert_eq!(ids.len(), 2, "{what}: one PID namespace down ({ids:?})");
    let me = "self";
    for kind in ["user", "mnt", "pid"] {
        assert_ne!(
            ns(&pid.to_string(), kind),
            ns(me, kind),
            "{what}: its {kind} namespace is its own"
        );
    }
    assert_eq!(proc_text(pid, "uid_map"), "0 0 1", "{what}: uid_map");
    assert_eq!(proc_text(pid, "gid_map"), "0 0 1", "{what}: gid_map");
    assert_eq!(proc_text(pid, "setgroups"), "deny", "{what}: setgroups");
}

/// The process whose parent is `parent` and that is PID 1 of its own PID namespace
/// (the container's init below `orphan`, the restored one below `ckpt restore`).
fn init_of(parent: i32, what: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let tree = process_tree(parent);
        let ppid = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().to_string()))
        };
        if let Some(&p) = tree
            .iter()
            .skip(1)
            .find(|&&p| nspids(p).last() == Some(&1) && ppid(p) == Some(parent.to_string()))
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no PID namespace init below {parent}: {tree:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Dump the container's init of `spec` (once it printed `k` lines) and restore it: the
/// output continues as an uninterrupted run's; `check` runs on the original's and the
/// restored init.
fn dump_restore(ctx: &Ctx, spec: &Spec, k: usize, tag: &str, check: &dyn Fn(i32, &str)) {
    let reference = ctx.reference(spec);
    assert_eq!(
        reference.status.code(),
        Some(0),
        "{tag}: reference run; stderr:\n{}",
        text(&reference.stderr)
    );
    let mut t = ctx.spawn(spec);
    t.wait_lines(k);
    let init = init_of(t.pid, tag);
    check(init, &format!("{tag}: original"));
    let tree = process_tree(init);
    let img = ctx.path(&format!("{tag}.img"));
    ctx.dump(init, &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree, tag);
    let mut r = ctx.restore(&img, &[], In::Null);
    r.wait_lines(1);
    let restored = init_of(r.pid, "ckpt restore and the restored init");
    check(restored, &format!("{tag}: restored"));
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore; stderr:\n{}",
        text(&fin.stderr)
    );
    assert_same_output(
        &format!("{tag} (dumped after {k} lines, restored)"),
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
}

/// `unshare -U -r -p -m -f --mount-proc sh -c LOOP` with unshare gone: restored, the
/// shell is PID 1 of a new PID namespace in a new mount namespace (its own proc on
/// /proc), both owned by a new user namespace mapping root to root; the loop goes on.
#[test]
fn rootless_container_shell_is_restored() {
    let ctx = Ctx::new("rootless_container_shell_is_restored");
    let spec = container(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 25 ]; do i=$((i+1)); echo step $i pid $$ init $(cat /proc/1/comm); \
         sleep 0.2; done",
    ]);
    dump_restore(&ctx, &spec, 4, "container-sh", &|pid, what| {
        assert_container(pid, what);
        let mounts = proc_text(pid, "mountinfo");
        assert!(mounts.contains(" / /proc "), "{what}: its /proc: {mounts}");
    });
}

/// A multi-threaded process (8 threads taking turns) in the rootless container: its
/// threads are made inside the user namespace, with their IDs in the tree's PID
/// namespace, and each gets its credentials; the turns go on.
#[test]
fn multithreaded_process_in_a_rootless_container_is_restored() {
    let ctx = Ctx::new("multithreaded_process_in_a_rootless_container_is_restored");
    let threads = target("threads");
    let t = threads.to_str().expect("path");
    let spec = container(&[t, "60", "sleep=60000"]);
    dump_restore(&ctx, &spec, 3, "container-threads", &|pid, what| {
        assert_container(pid, what);
        let n = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 9, "{what}: main thread and 8 workers");
        for e in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("tasks")
            .flatten()
        {
            let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            assert!(
                st.contains("CapEff:\t000001ffffffffff"),
                "{what}: thread {:?} has every capability in the namespace",
                e.file_name()
            );
        }
    });
}

/// A python3 HTTP server (a real program) in the rootless container answers after the
/// restore as before.
#[test]
fn python_http_server_in_a_rootless_container_is_restored() {
    let ctx = Ctx::new("python_http_server_in_a_rootless_container_is_restored");
    let py = PathBuf::from("/usr/bin/python3");
    assert!(py.exists(), "needs python3");
    let dir = ctx.path("www");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("hello.txt"), b"hello from the container\n").expect("write");
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let get = || -> String {
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(format!(
                "import urllib.request as u; o = u.build_opener(u.ProxyHandler({{}})); \
                 print(o.open('http://127.0.0.1:{port}/hello.txt', timeout=10).read().decode(), end='')"
            ))
            .output()
            .expect("python3 client");
        if !out.status.success() {
            eprintln!("client: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let spec = container(&[
        py.to_str().expect("path"),
        "-u",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
        dir.to_str().expect("path"),
    ]);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(1);
    let init = init_of(t.pid, "http");
    assert_container(init, "http: original");
    assert_eq!(get(), "hello from the container\n", "before the dump");
    let img = ctx.path("http.img");
    ctx.dump(init, &img);
    t.finish();
    wait_pids_gone(&[init], "http");
    let mut r = ctx.restore(&img, &[], In::Null);
    let restored = init_of(r.pid, "ckpt restore and the restored server");
    // (It serves until killed: ended with the test.)
    ctx.track(restored);
    assert_container(restored, "http: restored");
    assert_eq!(get(), "hello from the container\n", "after the restore");
    assert_eq!(get(), "hello from the container\n", "again");
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(restored.to_string())
        .status();
    r.finish();
}

/// Processes whose user namespace is not the test's and maps root to root: none left
/// once a restore failed (the test's own containers are gone by then).
fn processes_in_user_namespaces() -> Vec<i32> {
    let mine = ns("self", "user");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(user) = std::fs::read_link(format!("/proc/{pid}/ns/user")) else {
            continue;
        };
        // (Another test's container may run: only ours have cwd in our directory.)
        if user.display().to_string() != mine {
            out.push(pid);
        }
    }
    out
}

/// Restores that fail at each step of making the user, PID and mount namespaces and
/// at sampled steps after leave no process, no user namespace and no mount on the
/// host; the next restore succeeds and the loop goes on.
#[test]
fn failed_restores_of_a_rootless_container_leave_nothing() {
    let ctx = Ctx::new("failed_restores_of_a_rootless_container_leave_nothing");
    let spec = container(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo step $i; sleep 0.3; done",
    ]);
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let init = init_of(t.pid, "failing");
    let tree = process_tree(init);
    let img = ctx.path("failing.img");
    ctx.dump(init, &img);
    let before = t.finish().stdout;
    wait_pids_gone(&tree, "failing");
    let users_before = processes_in_user_namespaces();
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    RestoreWalk {
        name: "container",
        img: &img,
        reference: &reference.stdout,
        before: &before,
        pids: &tree,
        min: 20,
        must: "create the tree's user namespace",
        named: &[
            "create the tree's mount namespace",
            "create the tree's user namespace",
            "join the namespaces the tree's user namespace owns",
            "create the tree's PID namespace",
            "copy the tree's mount namespace into its user namespace",
            "mount the tree's file systems",
            "set the tree's mount flags",
            "set the tree's mount propagation",
            "take the user namespace",
            "setns (the tree's user namespace)",
        ],
    }
    .run(
        &ctx,
        |n, total| n <= 8 || n % 11 == 0 || n == total,
        |f| {
            let users: Vec<i32> = processes_in_user_namespaces()
                .into_iter()
                .filter(|p| !users_before.contains(p))
                .filter(|p| {
                    std::fs::read_link(format!("/proc/{p}/cwd"))
                        .is_ok_and(|c| c.starts_with(&ctx.dir))
                })
                .collect();
            assert_eq!(
                users,
                Vec::<i32>::new(),
                "restore failing at {f} left a process in a user namespace"
            );
            assert_eq!(
                std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
                host,
                "restore failing at {f} left a mount on the host"
            );
        },
    );
}

/// Mount and PID namespaces of the tree's own (`unshare -p -f unshare -m --mount-proc`)
/// in a network namespace made outside the tree (a holder's): the dump records it as
/// joined; a restore without `--join-ns` is refused naming it; with
/// `--join-ns net:/proc/HOLDER/ns/net` the restored init is in the holder's network
/// namespace, PID 1 of its own, its loop going on.
#[test]
fn mount_and_pid_namespaces_in_a_joined_network_namespace_honour_join_ns() {
    let ctx = Ctx::new("mount_and_pid_namespaces_in_a_joined_network_namespace_honour_join_ns");
    let holder_spec = Spec::new(unshare()).arg("-n").arg("sleep").arg("600");
    let mut holder = ctx.spawn(&holder_spec);
    let hpid = holder.pid;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ns(&hpid.to_string(), "net") == ns("self", "net") {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never unshared"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let netns = format!("/proc/{hpid}/ns/net");
    let spec = Spec::new("/usr/bin/nsenter")
        .arg(format!("--net={netns}"))
        .arg(unshare())
        .arg("-p")
        .arg("-f")
        .arg(unshare())
        .arg("-m")
        .arg("--mount-proc")
        .arg("--propagation")
        .arg("private")
        .arg("sh")
        .arg("-c")
        .arg("i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo step $i; sleep 0.2; done");
    let reference = ctx.reference(&spec);
    let mut t = ctx.spawn(&spec);
    t.wait_lines(3);
    let sh = init_of(t.pid, "the shell below unshare -p -f");
    let net = ns(&sh.to_string(), "net");
    assert_eq!(
        net,
        ns(&hpid.to_string(), "net"),
        "the shell is in the holder's"
    );
    let img = ctx.path("joined.img");
    ctx.dump(sh, &img);
    let before = t.finish().stdout;
    wait_pids_gone(&[sh], "joined");
    let refused = ctx
        .spawn(&Spec::new(ckpt_bin()).arg("restore").arg(&img))
        .finish();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a restore without --join-ns"
    );
    assert!(
        text(&refused.stderr).contains("--join-ns net:"),
        "the refusal names the namespace to join: {}",
        text(&refused.stderr)
    );
    let join = format!("net:{netns}");
    let mut r = ctx.restore(&img, &["--join-ns", &join], In::Null);
    r.wait_lines(1);
    let restored = init_of(r.pid, "ckpt restore and the restored shell");
    assert_eq!(
        ns(&restored.to_string(), "net"),
        net,
        "the restored shell is in the joined network namespace"
    );
    assert_ne!(
        ns(&restored.to_string(), "mnt"),
        ns("self", "mnt"),
        "in a mount namespace of its own"
    );
    let fin = r.finish();
    assert_eq!(
        fin.status.code(),
        Some(0),
        "ckpt restore: {}",
        text(&fin.stderr)
    );
    assert_same_output(
        "joined (dumped, restored)",
        &reference.stdout,
        &[before, fin.stdout].concat(),
    );
    holder.kill();
}

/// The mounts the container's namespace got from its parent's are locked by the
/// kernel (`unshare -U -m` copies them into a less privileged namespace): a read-only
/// bind mount (made in a private mount namespace around the container) cannot be made
/// writable nor unmounted from inside; restored, they are locked the same way (ckpt
/// builds them in a namespace of its own and copies that into the new user namespace),
/// and the mounts made inside (its /proc) are not: the container tries both at every
/// step and prints what the kernel answered.
#[test]
fn mounts_copied_into_a_rootless_container_stay_locked() {
    let ctx = Ctx::new("mounts_copied_into_a_rootless_container_stay_locked");
    let dir = ctx.path("ro");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let d = dir.display().to_string();
    let inner = format!(
        "i=0; while [ $i -lt 20 ]; do i=$((i+1)); \
         if mount -o remount,bind,rw {d} 2>/dev/null; then w=rw; else w=locked; fi; \
         if umount {d} 2>/dev/null; then u=gone; else u=kept; fi; \
         if mount -o remount,bind,nosuid /proc 2>/dev/null; then p=free; else p=locked; fi; \
         echo step $i $w $u proc $p; sleep 0.2; done"
    );
    let orphan = target("orphan");
    let outer = format!(
        "mount --bind -o ro {d} {d} && exec {} {} -U -r -p -m -f --mount-proc sh -c '{inner}'",
        orphan.display(),
        unshare().display()
    );
    let spec = Spec::new(unshare())
        .arg("-m")
        .arg("--propagation")
        .arg("private")
        .arg("sh")
        .arg("-c")
        .arg(outer);
    dump_restore(&ctx, &spec, 3, "locked", &|pid, what| {
        assert_container(pid, what);
    });
    let reference = ctx.reference(&spec);
    assert!(
        text(&reference.stdout).contains("step 1 locked kept proc free\n"),
        "the original's copied mount is locked, its own /proc not: {}",
        text(&reference.stdout)
    );
}

/// The podman-rootless shape with cgroup and time namespaces too (`unshare -U -r -p -m
/// -f --mount-proc -C -T sh -c LOOP`, unshare gone): restored with its new PID, mount,
/// cgroup and time namespaces all owned by the new user namespace (compared by the
/// oracle too); the loop, which prints what its cgroup namespace shows, goes on.
#[test]
fn rootless_container_with_cgroup_and_time_namespaces_is_restored() {
    let ctx = Ctx::new("rootless_container_with_cgroup_and_time_namespaces_is_restored");
    let spec = container(&[
        "-C",
        "-T",
        "sh",
        "-c",
        "i=0; while [ $i -lt 25 ]; do i=$((i+1)); echo step $i pid $$ \
         cgroup $(grep '^0::' /proc/self/cgroup); sleep 0.2; done",
    ]);
    dump_restore(&ctx, &spec, 4, "container-cgroup-time", &|pid, what| {
        assert_container(pid, what);
        let user = common::oracle::ns_owner(pid, "pid");
        for kind in ["cgroup", "time"] {
            assert_ne!(
                ns(&pid.to_string(), kind),
                ns("self", kind),
                "{what}: {kind}"
            );
            assert_eq!(
                common::oracle::ns_owner(pid, kind),
                user,
                "{what}: its {kind} namespace is owned by its user namespace"
            );
        }
    });
}
