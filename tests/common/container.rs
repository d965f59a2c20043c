//! Helpers shared by the container tests (runc, ckpt as criu under runc and Podman, mount
//! namespaces): finding the programs they need, and what the kernel shows of a process's
//! mounts and namespaces.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A program found in PATH (or one of `also`), else the test fails naming its package.
pub fn find(name: &str, also: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs {name} (apt-get install {package}); not found in PATH")
        })
}

pub fn runc() -> PathBuf {
    find("runc", &["/usr/sbin/runc", "/usr/bin/runc"], "runc")
}

pub fn busybox() -> PathBuf {
    find(
        "busybox",
        &["/bin/busybox", "/usr/bin/busybox"],
        "busybox-static",
    )
}

/// The mountinfo of `pid`, normalised: each mount as its mount point, its parent's
/// mount point, root, options, propagation (peer groups numbered in order), type,
/// source, file system options and device (numbered in order for file systems the host
/// does not have mounted: those restore makes anew). Mount IDs differ after a restore.
pub fn mountinfo(pid: i32) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {p}: {e}"));
    let host_devs: Vec<String> = read("/proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
        .collect();
    let text = read(&format!("/proc/{pid}/mountinfo"));
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let points: BTreeMap<&str, &str> = lines.iter().map(|w| (w[0], w[4])).collect();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut devs: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for w in &lines {
        let sep = w
            .iter()
            .position(|x| *x == "-")
            .expect("mountinfo separator");
        let optional: Vec<String> = w[6..sep]
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, g)) => {
                    let n = groups.len();
                    format!("{k}:{}", *groups.entry(g.to_string()).or_insert(n))
                }
                None => o.to_string(),
            })
            .collect();
        let dev = if host_devs.iter().any(|d| d == w[2]) {
            w[2].to_string()
        } else {
            let n = devs.len();
            format!("new{}", *devs.entry(w[2].to_string()).or_insert(n))
        };
        out.push(format!(
            "{} on {} root {} {} [{}] {} {} {} dev {dev}",
            w[4],
            points.get(w[1]).copied().unwrap_or("(outside)"),
            w[3],
            w[5],
            optional.join(" "),
            w[sep + 1],
            w[sep + 2],
            w[sep + 3..].join(" "),
        ));
    }
    out
}

pub fn ns_inode(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{kind}: {e}"))
        .ino()
}
