//! Two "hosts" on one machine for the migration tests (e2e_migrate, e2e_migpost,
//! ...): the test's network namespace and one held by an `unshare --net` child.

/// Two "hosts": the test's network namespace and a new one, joined by a veth pair on
/// 10.S.N.0/24 (S per test binary, N per test, so tests can run side by side).
/// The receiver's side: a network namespace held by an `unshare --net sleep` of the
/// test's (not `ip netns add`, whose mount under /run/netns would show in the host's
/// mount table that tests running beside this one compare), joined to ours by a veth
/// pair. Killing the holder at drop takes the namespace and both ends away once the
/// processes inside have gone.
pub struct Net {
    holder: std::process::Child,
    tag: String,
    subnet: u8,
    n: u32,
}

fn sh(args: &[&str]) {
    let st = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}

impl Net {
    /// Interfaces `{tag}A{n}` (ours) and `{tag}B{n}` (theirs), addresses
    /// 10.`subnet`.`n`.1 and .2.
    pub fn new(tag: &str, subnet: u8, n: u32) -> Net {
        let (a, b) = (format!("{tag}A{n}"), format!("{tag}B{n}"));
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &a])
            .stderr(std::process::Stdio::null())
            .status();
        let holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .spawn()
            .expect("run unshare --net");
        let net = Net {
            holder,
            tag: tag.to_string(),
            subnet,
            n,
        };
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(net.path()).ok().as_ref() == Some(&ours) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare --net made no namespace"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pid = net.holder.id().to_string();
        sh(&[
            "ip", "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &pid,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.{subnet}.{n}.1/24"),
            "dev",
            &a,
        ]);
        sh(&["ip", "link", "set", &a, "up"]);
        net.ip(&["addr", "add", &format!("10.{subnet}.{n}.2/24"), "dev", &b]);
        net.ip(&["link", "set", &b, "up"]);
        net.ip(&["link", "set", "lo", "up"]);
        net
    }

    /// `ip ARGS` run in the namespace.
    pub fn ip(&self, args: &[&str]) {
        let net_arg = format!("--net={}", self.path());
        let mut v = vec!["nsenter", net_arg.as_str(), "ip"];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// The PID of the process holding the namespace (for `ip link ... netns PID`).
    pub fn holder(&self) -> u32 {
        self.holder.id()
    }

    /// Our end of the veth pair (`{tag}A{n}`), its address 10.`subnet`.`n`.1.
    pub fn ours(&self) -> (String, String) {
        (
            format!("{}A{}", self.tag, self.n),
            format!("10.{}.{}.1", self.subnet, self.n),
        )
    }

    /// The namespace's end's address, 10.`subnet`.`n`.2.
    pub fn theirs(&self) -> String {
        format!("10.{}.{}.2", self.subnet, self.n)
    }

    /// The namespace's file (the holder's).
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// The receiver's address to listen on and migrate to.
    pub fn to(&self) -> String {
        format!("10.{}.{}.2:7070", self.subnet, self.n)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
