//! Mount propagation between a test's own mount namespace and a tree's (issue 15): the
//! test's thread gets a mount namespace of its own with a shared tmpfs
//! ([`thread_mount_ns`]), whose peer group the tree's namespace shares (or is a slave
//! of); [`assert_propagates`] checks, through mounts made on either side, that
//! propagation goes as the relation says. Nothing here mounts in the host's namespace.

use std::path::{Path, PathBuf};

/// `mount(2)` by this thread (`src` on `target`, of type `fstype`, with `flags`).
pub fn mount(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, fstype) = (src.map(c), fstype.map(c));
    let t = c(target.to_str().expect("a UTF-8 path"));
    let ptr = |o: &Option<std::ffi::CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings (or null where mount(2) takes none), no data.
    let r = unsafe { libc::mount(ptr(&src), t.as_ptr(), ptr(&fstype), flags, std::ptr::null()) };
    assert_eq!(
        r,
        0,
        "mount on {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// `umount2(target, 0)` by this thread.
pub fn umount(target: &Path) {
    let c = std::ffi::CString::new(target.to_str().unwrap_or_default()).expect("no NUL");
    // SAFETY: a NUL-terminated path.
    let r = unsafe { libc::umount2(c.as_ptr(), 0) };
    assert_eq!(
        r,
        0,
        "umount {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Give this thread (and what it starts: the target, ckpt) a mount namespace of its own,
/// every mount private there (nothing reaches the host's), with a tmpfs on `dir`/peer
/// made shared: the peer group the tree's namespace shares with it (the host's mounts
/// are private here). It ends with the test's thread and its processes.
pub fn thread_mount_ns(dir: &Path) -> PathBuf {
    // SAFETY: unshare(CLONE_NEWNS) gives the calling thread (its file system context
    // unshared with it) a namespace of its own; the test's other threads keep theirs.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE);
    let peer = dir.join("peer");
    std::fs::create_dir_all(&peer).expect("mkdir peer");
    mount(Some("belowpeer"), &peer, Some("tmpfs"), 0);
    mount(None, &peer, None, libc::MS_SHARED);
    peer
}

/// The optional fields (shared:N, master:N) of the mount on `point` in `mountinfo`
/// (None: nothing mounted there).
pub fn optional_at(mountinfo: &str, point: &Path) -> Option<String> {
    let p = point.to_str()?;
    mountinfo.lines().rev().find_map(|l| {
        let head = l.split(" - ").next()?;
        let w: Vec<&str> = head.split(' ').collect();
        (w.get(4) == Some(&p)).then(|| w.get(6..).unwrap_or_default().join(" "))
    })
}

/// /proc/WHO/mountinfo ("thread-self": this thread's namespace's).
pub fn mountinfo_of(who: &str) -> String {
    std::fs::read_to_string(format!("/proc/{who}/mountinfo")).unwrap_or_default()
}

/// How the tree's copy of the test's shared mount relates to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Prop {
    /// In its peer group: mounts propagate both ways.
    Peer,
    /// A slave of it: mounts propagate from the test's side only.
    Slave,
}

/// The mount namespace a check acts in: this thread's (`None`) or process N's.
type Who = Option<i32>;

fn who_name(w: Who) -> String {
    w.map_or("thread-self".into(), |p| p.to_string())
}

/// Make the directory `at` as `w`'s namespace shows it.
fn mkdir_in(w: Who, at: &Path) {
    let p = match w {
        None => at.to_path_buf(),
        Some(pid) => {
            PathBuf::from(format!("/proc/{pid}/root")).join(at.strip_prefix("/").unwrap_or(at))
        }
    };
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// Mount a tmpfs on `at` (`mount` true) or unmount it, in `w`'s namespace (nsenter for
/// another process's).
fn probe(w: Who, at: &Path, mount_it: bool, what: &str) {
    let Some(pid) = w else {
        match mount_it {
            true => mount(Some("peerprobe"), at, Some("tmpfs"), 0),
            false => umount(at),
        }
        return;
    };
    let p = at.to_str().unwrap_or_default();
    let args: &[&str] = match mount_it {
        true => &["mount", "-t", "tmpfs", "peerprobe", p],
        false => &["umount", p],
    };
    let st = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args(args)
        .status()
        .expect("run nsenter");
    assert!(st.success(), "{what}: nsenter {args:?}: {st}");
}

/// Propagation between this thread's namespace and `pid`'s: see
/// [`assert_propagates_between`].
pub fn assert_propagates(pid: i32, peer: &Path, prop: Prop, what: &str) {
    assert_propagates_between(None, pid, peer, prop, what);
}

/// Propagation between `a`'s namespace (this thread's for `None`) and `pid`'s, through
/// the shared mount on `peer`: both see it, `a`'s "shared:N" and `pid`'s "shared:N" (a
/// peer) or "master:N" (a slave: the same N); a tmpfs mounted on peer/from-parent in
/// `a`'s shows in `pid`'s namespace and its unmount too; one mounted in `pid`'s on
/// peer/from-child shows in `a`'s, and its unmount too, for a peer, and never for a
/// slave.
pub fn assert_propagates_between(a: Who, pid: i32, peer: &Path, prop: Prop, what: &str) {
    let (an, bn) = (who_name(a), pid.to_string());
    let ours = optional_at(&mountinfo_of(&an), peer);
    let theirs = optional_at(&mountinfo_of(&bn), peer);
    let want = ours.as_deref().and_then(|o| match prop {
        Prop::Peer => Some(o.to_string()),
        Prop::Slave => o.strip_prefix("shared:").map(|n| format!("master:{n}")),
    });
    assert!(
        ours.as_deref().is_some_and(|o| o.starts_with("shared:")) && theirs == want,
        "{what}: {} shared in {an}'s namespace and {prop:?} in {pid}'s: {ours:?} {theirs:?}",
        peer.display()
    );
    let here = peer.join("from-parent");
    mkdir_in(a, &here);
    probe(a, &here, true, what);
    let shown = optional_at(&mountinfo_of(&bn), &here).is_some();
    probe(a, &here, false, what);
    assert!(
        shown,
        "{what}: a mount made in {an}'s shows in {pid}'s namespace"
    );
    assert!(
        optional_at(&mountinfo_of(&bn), &here).is_none(),
        "{what}: its unmount too"
    );
    let there = peer.join("from-child");
    mkdir_in(Some(pid), &there);
    probe(Some(pid), &there, true, what);
    let shown = optional_at(&mountinfo_of(&an), &there).is_some();
    probe(Some(pid), &there, false, what);
    assert_eq!(
        shown,
        prop == Prop::Peer,
        "{what}: whether a mount {pid}'s namespace made shows in {an}'s ({prop:?})"
    );
    assert!(
        optional_at(&mountinfo_of(&an), &there).is_none(),
        "{what}: its unmount too"
    );
}
