//! Network namespaces (issue 15, part 2): a tree in a network namespace of its own
//! (`unshare --net`, loopback only) is restored in a new one with its loopback state,
//! addresses and settings, and every socket back inside it (a TCP listener and a
//! connection between the tree's processes with data queued, UDP with a datagram
//! queued, an abstract unix name); what restore cannot make again in a namespace is
//! refused at dump (another interface, a route, firewall tables); a tree in a network
//! namespace made outside it (held by another process) is restored in the one `--join-ns` names,
//! and refused without it.
//!
//! The target is `tests/targets/netns.c`. Needs root, unshare(1), nsenter(1), ip(8) and
//! ss(8) (iproute2), nft(8) (nftables).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;

/// A program of util-linux or iproute2 the test needs, found where Debian puts it.
fn tool(name: &str) -> PathBuf {
    for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let p = PathBuf::from(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("needs {name} (apt-get install util-linux iproute2 nftables)");
}

/// The inode of namespace `kind` of process `pid` (`self` for the test).
fn ns(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The output of `args` run inside the network namespace of `pid` (nsenter).
fn in_net(pid: i32, args: &[&str]) -> String {
    let out = Command::new(tool("nsenter"))
        .arg("-t")
        .arg(pid.to_string())
        .arg("-n")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"));
    assert!(
        out.status.success(),
        "nsenter -t {pid} -n {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the kernel shows of the network namespace of `pid`: its interfaces and
/// addresses (`ip -j addr`), its TCP and UDP sockets (`ss`: states, queues, addresses;
/// a UDP receive queue counts memory, not bytes, and is left out), its unix sockets'
/// names, and the local port range.
fn net_view(pid: i32) -> Vec<String> {
    let mut v = vec![in_net(pid, &["ip", "-j", "addr"])];
    let mut inet: Vec<String> = in_net(pid, &["ss", "-Htanu"])
        .lines()
        .map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"udp") && w.len() > 2 {
                w[2] = "-";
            }
            w.join(" ")
        })
        .collect();
    inet.sort();
    v.extend(inet);
    let mut unix: Vec<String> = in_net(pid, &["ss", "-Hxa"])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('@'))
                .map(str::to_string)
        })
        .collect();
    unix.sort();
    v.extend(unix);
    v.push(in_net(
        pid,
        &["cat", "/proc/sys/net/ipv4/ip_local_port_range"],
    ));
    v
}

/// The netns target started under `unshare --net --uts --ipc` after `setup` (shell
/// commands run in the new namespaces first).
fn own_ns_spec(ctx: &Ctx, setup: &str, addr: &str) -> Spec {
    let script = format!("{setup} exec {} {addr}", target("netns").display());
    Spec::new(tool("unshare"))
        .arg("--net")
        .arg("--uts")
        .arg("--ipc")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .stdin(In::Pipe)
        .cwd(&ctx.dir)
}

/// Ask the restored (or original) tree for two rounds over all its sockets, then its
/// end, and check what it printed.
fn rounds_and_exit(p: &mut Proc, what: &str) {
    rounds_and_exit_checking(p, what, &mut || {});
}

/// [`rounds_and_exit`], calling `between` once the first round is done (the restored
/// tree runs).
fn rounds_and_exit_checking(p: &mut Proc, what: &str, between: &mut dyn FnMut()) {
    p.write_stdin(b"go\n");
    p.wait_for("round 1 ");
    between();
    p.write_stdin(b"go\n");
    p.wait_for("round 2 ");
    p.write_stdin(b"exit\n");
    p.close_stdin();
    let fin = p.finish();
    let out = text(&fin.stdout);
    assert!(
        out.contains("round 1 queued=ok tcp=ok udp=ok unix=ok accept=ok\n")
            && out.contains("round 2 queued=- tcp=ok udp=ok unix=ok accept=ok\n")
            && out.contains("child exited 0\n"),
        "{what}: output:\n{out}\nstderr:\n{}",
        text(&fin.stderr)
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{what}: exit; stderr:\n{}",
        text(&fin.stderr)
    );
}

/// A tree in network, UTS and IPC namespaces of its own, with lo up, 10.77.0.1/24 on
/// it and a changed local port range: restored in new namespaces (shared by both
/// processes, none the test's) whose addresses, sockets (queues included) and setting
/// the kernel shows as before; the connection carries data both ways, the queued data
/// and datagram are read, the listener accepts a new connection, the abstract name is
/// reached; the oracle compares both trees (`Ctx::dump`/`restore`). Restores that fail
/// first leave nothing behind.
#[test]
fn tree_in_its_own_network_namespace_is_restored_in_a_new_one() {
    let ctx = Ctx::new("tree_in_its_own_network_namespace_is_restored_in_a_new_one");
    let setup = "ip link set lo up && ip addr add 10.77.0.1/24 dev lo && \
                 echo '20000 30000' > /proc/sys/net/ipv4/ip_local_port_range &&";
    let mut t = ctx.spawn(&own_ns_spec(&ctx, setup, "10.77.0.1"));
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 2, "netns");
    let pid = t.pid;
    assert_ne!(ns(&pid.to_string(), "net"), ns("self", "net"));
    let before = net_view(pid);
    assert!(
        before[0].contains("10.77.0.1") && before.iter().any(|l| l.contains("@ckpt-netns")),
        "the original's network: {before:?}"
    );
    let img = ctx.path("netns.img");
    let d = ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "netns after the dump");
    assert!(
        !d.stderr.contains("not locked"),
        "no TCP lock is needed in the tree's own namespace: {}",
        d.stderr
    );
    // Restores failing while the namespaces are made, and right before the point of
    // no return, leave no process (the namespace ends with them and ckpt).
    for f in ["create the tree's namespaces", "detach"] {
        assert_restore_fault_leaves_nothing(&ctx, &img, &[], f, &tree, &[]);
    }
    let mut r = ctx.restore(&img, &[], In::Pipe);
    let tree = wait_process_tree(pid, 2, "restored netns");
    for kind in ["net", "uts", "ipc"] {
        let root = ns(&tree[0].to_string(), kind);
        assert_eq!(root, ns(&tree[1].to_string(), kind), "{kind} shared");
        assert_ne!(root, ns("self", kind), "{kind} is the tree's own");
    }
    assert_eq!(net_view(pid), before, "the restored network namespace");
    // The abstract name is the new namespace's, not the host's.
    let host = Command::new(tool("ss"))
        .arg("-Hxl")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        !host.contains("@ckpt-netns"),
        "the host's unix sockets: {host}"
    );
    rounds_and_exit(&mut r, "restored netns");
}

/// What restore cannot make again in a network namespace of the tree's own is refused
/// at dump, naming it; the tree runs on: a veth pair, a route, an nf_tables table.
#[test]
fn network_namespaces_restore_cannot_make_again_are_refused() {
    let ctx = Ctx::new("network_namespaces_restore_cannot_make_again_are_refused");
    let cases = [
        (
            "ip link set lo up && ip link add ckv0 type veth peer name ckv1 &&",
            "network interface(s) ",
        ),
        (
            "ip link set lo up && ip route add 10.88.0.0/16 dev lo &&",
            "route(s) the kernel did not make",
        ),
        (
            "ip link set lo up && nft add table inet cktest && \
             nft add chain inet cktest c '{ type filter hook input priority 0 ; }' && \
             nft add rule inet cktest c tcp dport 9 drop &&",
            "firewall tables (inet cktest)",
        ),
    ];
    for (i, (setup, want)) in cases.iter().enumerate() {
        let mut t = ctx.spawn(&own_ns_spec(&ctx, setup, "127.0.0.1"));
        t.wait_for("ready\n");
        let tree = wait_process_tree(t.pid, 2, "netns");
        for &p in &tree {
            ctx.track(p);
        }
        let r = ctx.try_dump(t.pid, &ctx.path(&format!("refused{i}.img")));
        r.assert_fails(1);
        assert!(
            r.stderr.contains(want)
                && r.stderr.contains("network namespace of its own")
                && (i != 0 || r.stderr.contains("ckv0 (veth)") && r.stderr.contains("ckv1 (veth)")),
            "dump with {setup}: {}",
            r.stderr
        );
        assert_running_untraced(t.pid, "the root after the refused dump");
        assert_running_untraced(tree[1], "the child after the refused dump");
        rounds_and_exit(&mut t, "the original after the refused dump");
    }
}

/// A tree in a network namespace made outside it (by another process that stays in it,
/// as another container's would; entered with nsenter): the dump records it as external
/// and says so; `ckpt check --json` lists it; a restore without `--join-ns` is refused
/// naming the namespace and the option; with `--join-ns net:/proc/PID/ns/net` the tree
/// comes back in that namespace, its TCP connection (locked there meanwhile: the lock
/// is made and removed inside it) and other sockets working. (Not `ip netns add`: its
/// mounts would change the mount table every other test's oracle compares.)
#[test]
fn tree_in_a_namespace_made_outside_it_is_restored_with_join_ns() {
    let ctx = Ctx::new("tree_in_a_namespace_made_outside_it_is_restored_with_join_ns");
    let holder = ctx.spawn(
        &Spec::new(tool("unshare"))
            .arg("--net")
            .arg("sh")
            .arg("-c")
            .arg("ip link set lo up && echo up && exec sleep 600"),
    );
    let mut holder = holder;
    holder.wait_for("up\n");
    let path = format!("/proc/{}/ns/net", holder.pid);
    let spec = Spec::new(tool("nsenter"))
        .arg(format!("--net={path}"))
        .arg(target("netns"))
        .arg("127.0.0.1")
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 2, "netns");
    let pid = t.pid;
    let inode = ns(&holder.pid.to_string(), "net");
    assert_ne!(inode, ns("self", "net"));
    assert_eq!(ns(&pid.to_string(), "net"), inode);
    let before = net_view(pid);
    let img = ctx.path("joined.img");
    let d = ctx.dump(pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "netns after the dump");
    assert!(
        d.stderr
            .contains(&format!("net namespace (net:[{inode}]) made outside it"))
            && d.stderr.contains("--join-ns net:PATH"),
        "the dump's note: {}",
        d.stderr
    );
    let c = ctx.ckpt(&["check".as_ref(), "--json".as_ref(), img.as_os_str()]);
    let manifest: serde_json::Value = serde_json::from_slice(&c.stdout)
        .unwrap_or_else(|e| panic!("check --json: {e}: {}", String::from_utf8_lossy(&c.stdout)));
    let listed = manifest["requirements"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|n| n["kind"] == "net" && n["as"] == "external" && n["inode"] == inode),
        "check --json lists the namespace as external: {listed:?}"
    );
    let refused = ctx.ckpt(&["restore".as_ref(), img.as_os_str()]);
    refused.assert_fails(1);
    assert!(
        refused.stderr.contains("--join-ns net:PATH")
            && refused.stderr.contains(&format!("net:[{inode}]")),
        "restore without --join-ns: {}",
        refused.stderr
    );
    let join = format!("net:{path}");
    let mut r = ctx.restore(&img, &["--join-ns", &join], In::Pipe);
    let tree = wait_process_tree(pid, 2, "restored netns");
    for &p in &tree {
        assert_eq!(ns(&p.to_string(), "net"), inode, "in the joined namespace");
    }
    assert_eq!(net_view(pid), before, "the joined namespace's sockets");
    rounds_and_exit(&mut r, "restored with --join-ns");
}

/// Where the cgroup v2 hierarchy and the v1 `pids` hierarchy (if this machine has one)
/// are mounted.
fn cgroup_mounts() -> (PathBuf, Option<PathBuf>) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v2 = None;
    let mut pids = None;
    for l in mi.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or_default();
        let mut post = post.split(' ');
        match post.next() {
            Some("cgroup2") if v2.is_none() => v2 = Some(PathBuf::from(mp)),
            Some("cgroup")
                if pids.is_none()
                    && post
                        .nth(1)
                        .is_some_and(|o| o.split(',').any(|x| x == "pids")) =>
            {
                pids = Some(PathBuf::from(mp))
            }
            _ => {}
        }
    }
    (
        v2.expect("needs a cgroup v2 hierarchy mounted (cgroup2 in /proc/self/mountinfo)"),
        pids,
    )
}

/// Cgroups the test made, removed (innermost first) when dropped.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    fn make(&mut self, dir: PathBuf) -> PathBuf {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.0.push(dir.clone());
        dir
    }
    /// Remember a cgroup restore made, to remove it at the end.
    fn made_by_restore(&mut self, dir: PathBuf) {
        self.0.push(dir);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut all = self.0.clone();
        all.sort();
        for d in all.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn move_to(dir: &std::path::Path, pid: i32) {
    let p = dir.join("cgroup.procs");
    std::fs::write(&p, pid.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"))
}

/// A tree whose root is in a cgroup v2 child group (and a v1 `pids` one, where this
/// machine has that hierarchy) and whose child is in a group below it: restored into
/// the same cgroups (/proc/PID/cgroup as before, compared by the oracle too), working;
/// restored again with `--cgroup-root`, into the same groups below that root, made by
/// the restore; a restore failing just before its point of no return leaves none of the
/// groups it made.
#[test]
fn tree_in_cgroups_is_restored_into_them_and_below_cgroup_root() {
    let ctx = Ctx::new("tree_in_cgroups_is_restored_into_them_and_below_cgroup_root");
    let (v2, v1pids) = cgroup_mounts();
    let name = format!("ckpt-e2e-cg-{}", std::process::id());
    let mut cgs = Cgroups(Vec::new());
    let top = cgs.make(v2.join(&name));
    let kid = cgs.make(top.join("kid"));
    let mut setup = format!(
        "ip link set lo up && echo $$ > {}/cgroup.procs &&",
        top.display()
    );
    if let Some(p) = &v1pids {
        let d = cgs.make(p.join(&name));
        setup += &format!(" echo $$ > {}/cgroup.procs &&", d.display());
    }
    let mut t = ctx.spawn(&own_ns_spec(&ctx, &setup, "127.0.0.1"));
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 2, "netns");
    move_to(&kid, tree[1]);
    let before: Vec<String> = tree.iter().map(|&p| cgroup_of(p)).collect();
    assert!(
        before[0].contains(&format!("0::/{name}\n"))
            && before[1].contains(&format!("0::/{name}/kid\n")),
        "the original's cgroups: {before:?}"
    );
    let img = ctx.path("cg.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "after the dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    rounds_and_exit_checking(&mut r, "restored into its cgroups", &mut || {
        let after: Vec<String> = tree.iter().map(|&p| cgroup_of(p)).collect();
        assert_eq!(after, before, "the restored tree's cgroups");
    });

    // Under another root, made by the restore (a copy of the image: the oracle's
    // snapshot is the original's, in other cgroups).
    let other = format!("/ckpt-e2e-cgr-{}", std::process::id());
    cgs.made_by_restore(v2.join(&other[1..]));
    cgs.made_by_restore(v2.join(&other[1..]).join(&name));
    cgs.made_by_restore(v2.join(&other[1..]).join(&name).join("kid"));
    if let Some(p) = &v1pids {
        cgs.made_by_restore(p.join(&other[1..]));
        cgs.made_by_restore(p.join(&other[1..]).join(&name));
    }
    let img2 = ctx.path("cg-again.img");
    std::fs::copy(&img, &img2).expect("copy the image");
    let root_dir = v2.join(&other[1..]);
    assert_restore_fault_leaves_nothing(
        &ctx,
        &img2,
        &["--cgroup-root", &other],
        "detach",
        &tree,
        &[],
    );
    assert!(
        !root_dir.exists(),
        "a failed restore left the cgroup {} it made",
        root_dir.display()
    );
    let mut r = ctx.restore(&img2, &["--cgroup-root", &other], In::Pipe);
    rounds_and_exit_checking(&mut r, "restored below --cgroup-root", &mut || {
        let under: Vec<String> = tree.iter().map(|&p| cgroup_of(p)).collect();
        assert!(
            under[0].contains(&format!("0::{other}/{name}\n"))
                && under[1].contains(&format!("0::{other}/{name}/kid\n")),
            "restored below {other}: {under:?}"
        );
        if v1pids.is_some() {
            assert!(
                under
                    .iter()
                    .all(|c| c.contains(&format!(":pids:{other}/{name}\n"))),
                "{under:?}"
            );
        }
    });
}

/// /proc/`of`/cgroup as the cgroup namespace of `pid` shows it.
fn cgroup_in_ns_of(pid: i32, of: i32) -> String {
    let out = Command::new(tool("nsenter"))
        .arg("-t")
        .arg(pid.to_string())
        .arg("-C")
        .arg("cat")
        .arg(format!("/proc/{of}/cgroup"))
        .output()
        .unwrap_or_else(|e| panic!("nsenter -C: {e}"));
    assert!(
        out.status.success(),
        "nsenter -t {pid} -C cat /proc/{of}/cgroup"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tree in a cgroup namespace of its own (`unshare --cgroup` in a cgroup v2 child
/// group, its child moved into a group below): restored into a new cgroup namespace
/// rooted at the same cgroups, the processes in the same cgroups, as the host and the
/// namespace show them (the child reads /kid, the root /), and working.
#[test]
fn tree_in_its_own_cgroup_namespace_is_restored_in_a_new_one() {
    let ctx = Ctx::new("tree_in_its_own_cgroup_namespace_is_restored_in_a_new_one");
    let (v2, _) = cgroup_mounts();
    let name = format!("ckpt-e2e-cgns-{}", std::process::id());
    let mut cgs = Cgroups(Vec::new());
    let top = cgs.make(v2.join(&name));
    let kid = cgs.make(top.join("kid"));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} --cgroup --net sh -c \
         'ip link set lo up && exec {} 127.0.0.1'",
        top.display(),
        tool("unshare").display(),
        target("netns").display()
    );
    let spec = Spec::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(In::Pipe)
        .cwd(&ctx.dir);
    let mut t = ctx.spawn(&spec);
    t.wait_for("ready\n");
    let tree = wait_process_tree(t.pid, 2, "netns");
    move_to(&kid, tree[1]);
    let view = |tree: &[i32]| -> Vec<String> {
        let mut v: Vec<String> = tree.iter().map(|&p| cgroup_of(p)).collect();
        v.extend(tree.iter().map(|&p| cgroup_in_ns_of(tree[0], p)));
        v
    };
    let before = view(&tree);
    assert!(
        before[2].contains("0::/\n") && before[3].contains("0::/kid\n"),
        "the original's cgroups in its namespace: {before:?}"
    );
    assert_ne!(ns(&t.pid.to_string(), "cgroup"), ns("self", "cgroup"));
    let img = ctx.path("cgns.img");
    ctx.dump(t.pid, &img);
    t.expect_killed();
    wait_pids_gone(&tree, "after the dump");
    let mut r = ctx.restore(&img, &[], In::Pipe);
    rounds_and_exit_checking(&mut r, "restored cgroup namespace", &mut || {
        assert_eq!(view(&tree), before, "the restored tree's cgroups");
        let root = ns(&tree[0].to_string(), "cgroup");
        assert_ne!(root, ns("self", "cgroup"), "a cgroup namespace of its own");
        assert_eq!(root, ns(&tree[1].to_string(), "cgroup"), "shared by both");
    });
}
