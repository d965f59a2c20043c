//! Sharing: kcmp between processes and descriptors, pages shared between processes.

use std::collections::BTreeMap;
use std::fs;

use super::*;

// ---------------------------------------------------------------------------------------
// Sharing: kcmp between processes and descriptors, pages shared between processes

const KCMP_FILE: i32 = 0;
const KCMP_KINDS: &[(&str, i32)] = &[
    ("vm", 1),
    ("files", 2),
    ("fs", 3),
    ("sighand", 4),
    ("io", 5),
    ("sysvsem", 6),
];

fn kcmp(a: i32, b: i32, ty: i32, x: u64, y: u64) -> Option<i64> {
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, ty, x, y) };
    (r >= 0).then_some(r)
}

/// The inode of the parent of process `pid`'s PID namespace (ioctl NS_GET_PARENT on
/// /proc/PID/ns/pid), None for the initial one (or if unreadable).
fn pid_ns_parent(pid: i32) -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    // linux/nsfs.h: NS_GET_PARENT = _IO(0xb7, 0x2)
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    let f = fs::File::open(format!("/proc/{pid}/ns/pid")).ok()?;
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_PARENT) };
    if r < 0 {
        return None;
    }
    let parent = unsafe { OwnedFd::from_raw_fd(r) };
    fs::File::from(parent).metadata().ok().map(|m| m.ino())
}

fn fd_numbers(r: &Reader, pid: i32) -> Vec<i32> {
    r.e.get(&format!("p{pid}.fds"))
        .map(|v| {
            v.1.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn read_sharing(r: &mut Reader, pids: &[i32]) {
    // each process: the first process of the tree it shares each resource with
    for (i, &a) in pids.iter().enumerate() {
        for (name, ty) in KCMP_KINDS {
            let first = pids[..i]
                .iter()
                .find(|&&b| kcmp(a, b, *ty, 0, 0) == Some(0))
                .map_or("own".to_string(), |b| format!("p{b}"));
            r.conf(format!("p{a}.shares.{name}"), first);
        }
    }
    // each namespace (with the PID namespace and the one for its next children, which
    // `--new-pidns` changes on purpose: not compared there): ours (the test's: the
    // host's), or the first process of the tree in it
    let ino = |pid: &str, kind: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{pid}/ns/{kind}"))
            .map(|m| m.ino())
            .ok()
    };
    for (i, &a) in pids.iter().enumerate() {
        for kind in [
            "uts",
            "ipc",
            "net",
            "mnt",
            "cgroup",
            "time",
            "time_for_children",
            "user",
            "pid",
            "pid_for_children",
        ] {
            let Some(mine) = ino(&a.to_string(), kind) else {
                continue;
            };
            let v = if ino("self", kind) == Some(mine) {
                "host".to_string()
            } else {
                pids[..i]
                    .iter()
                    .find(|&&b| ino(&b.to_string(), kind) == Some(mine))
                    .map_or("own".to_string(), |b| format!("p{b}"))
            };
            r.conf(format!("p{a}.ns.{kind}"), v);
        }
    }
    // the parent of each process's PID namespace (NS_GET_PARENT): ours, that of the
    // first process of the tree in it, `none` (the initial namespace) or `other`
    for &a in pids {
        let Some(parent) = pid_ns_parent(a) else {
            r.conf(format!("p{a}.ns.pid.parent"), "none".to_string());
            continue;
        };
        let v = if ino("self", "pid") == Some(parent) {
            "host".to_string()
        } else {
            pids.iter()
                .find(|&&b| ino(&b.to_string(), "pid") == Some(parent))
                .map_or("other".to_string(), |b| format!("p{b}"))
        };
        r.conf(format!("p{a}.ns.pid.parent"), v);
    }
    // who owns each namespace (NS_GET_USERNS; for a user namespace, its parent): the
    // test's user namespace, or the user namespace of the first process of the tree in
    // it; and who made each process's user namespace (NS_GET_OWNER_UID)
    let user_of = |pid: i32| ino(&pid.to_string(), "user");
    for &a in pids {
        for kind in ["uts", "ipc", "net", "mnt", "cgroup", "time", "user"] {
            let Some(owner) = ns_owner(a, kind) else {
                continue;
            };
            let v = if ino("self", "user") == Some(owner) {
                "host".to_string()
            } else {
                pids.iter()
                    .find(|&&b| user_of(b) == Some(owner))
                    .map_or("another".to_string(), |b| format!("p{b}.user"))
            };
            r.conf(format!("p{a}.ns.{kind}.owner"), v);
        }
        if let Some(uid) = userns_owner_uid(a) {
            r.conf(format!("p{a}.ns.user.owner_uid"), uid.to_string());
        }
    }
    // each descriptor: the first descriptor of the tree with the same open file
    // description
    let all: Vec<(i32, i32)> = pids
        .iter()
        .flat_map(|&p| fd_numbers(r, p).into_iter().map(move |f| (p, f)))
        .collect();
    for (i, &(p, f)) in all.iter().enumerate() {
        let first = all[..i]
            .iter()
            .find(|&&(q, g)| kcmp(p, q, KCMP_FILE, f as u64, g as u64) == Some(0))
            .map_or("own".to_string(), |(q, g)| format!("p{q}.fd{g}"));
        r.conf(format!("p{p}.fd{f}.same_file_as"), first);
    }
    read_page_sharing(r, pids);
}

/// The inode of the user namespace that owns namespace `kind` of process `pid`
/// (NS_GET_USERNS, linux/nsfs.h: _IO(0xb7, 0x1)).
pub fn ns_owner(pid: i32, kind: &str) -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let f = fs::File::open(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701 as _) };
    if r < 0 {
        return None;
    }
    let owner = fs::File::from(unsafe { OwnedFd::from_raw_fd(r) });
    owner.metadata().ok().map(|m| m.ino())
}

/// The user ID that made the user namespace of process `pid` (NS_GET_OWNER_UID,
/// linux/nsfs.h: _IO(0xb7, 0x4)).
fn userns_owner_uid(pid: i32) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    let mut uid: libc::uid_t = 0;
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0xb704 as _, &mut uid) };
    (r == 0).then_some(uid)
}

/// The frame number of the zero page (what a read fault of fresh anonymous memory maps).
fn zero_pfn() -> Option<u64> {
    static Z: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *Z.get_or_init(|| {
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let _ = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
        let e = pagemap_entries(std::process::id() as i32, p as u64, 1);
        unsafe { libc::munmap(p, 4096) };
        e.first().map(|e| e & ((1 << 55) - 1)).filter(|&f| f != 0)
    })
}

fn pagemap_entries(pid: i32, start: u64, pages: usize) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let Ok(f) = fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; pages * 8];
    if f.read_exact_at(&mut buf, start / 4096 * 8).is_err() {
        return Vec::new();
    }
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// For each anonymous area (no file behind it) of each process: how many of its present
/// pages are the very frames another process of the tree maps at the same address.
fn read_page_sharing(r: &mut Reader, pids: &[i32]) {
    if pids.len() < 2 {
        return;
    }
    let zero = zero_pfn();
    // pid -> (area, page address -> pfn)
    let mut frames: BTreeMap<i32, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
    for &pid in pids {
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let m = frames.entry(pid).or_default();
        for l in maps.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            // (A System V segment's inode is its ID, 0 for the first of an IPC
            // namespace: not an anonymous area.)
            if f.len() < 5
                || f[4] != "0"
                || f.get(5)
                    .is_some_and(|p| p.starts_with("[v") || p.starts_with("/SYSV"))
            {
                continue;
            }
            let Some((a, b)) = f[0].split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                continue;
            };
            let n = ((b - a) / 4096) as usize;
            if n > 1 << 18 {
                continue;
            }
            for (i, e) in pagemap_entries(pid, a, n).into_iter().enumerate() {
                let pfn = e & ((1 << 55) - 1);
                if e >> 63 == 1 && pfn != 0 && Some(pfn) != zero {
                    m.insert(a + i as u64 * 4096, (f[0].to_string(), pfn));
                }
            }
        }
    }
    for (i, &a) in pids.iter().enumerate() {
        for &b in &pids[i + 1..] {
            let (Some(fa), Some(fb)) = (frames.get(&a), frames.get(&b)) else {
                continue;
            };
            let mut per_area: BTreeMap<&str, usize> = BTreeMap::new();
            for (addr, (area, pfn)) in fa {
                if fb.get(addr).is_some_and(|x| x.1 == *pfn) {
                    *per_area.entry(area).or_default() += 1;
                }
            }
            for (area, n) in per_area {
                r.prog(
                    format!("p{a}.smaps.{area}.pages_shared_with_p{b}"),
                    n.to_string(),
                );
            }
        }
    }
}
