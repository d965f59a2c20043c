//! A cgroup v2 directory a test makes for its processes (and removes when dropped).

use std::path::PathBuf;

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup_v2() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or_default()))
        })
        .expect("needs a cgroup v2 hierarchy mounted (cgroup2 in /proc/self/mountinfo)")
}

/// A cgroup the test made (`ckpt-e2e-PREFIX-TAG-PID` at the v2 hierarchy's root),
/// removed when dropped (once its processes are gone).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn make(prefix: &str, tag: &str) -> TestCgroup {
        let d = cgroup_v2().join(format!("ckpt-e2e-{prefix}-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        TestCgroup(d)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
