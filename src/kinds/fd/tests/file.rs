//! Files reopened by path (`file::check_host`, `check_file`, `check_output_file`,
//! `check_deleted`), on temporary files.

use crate::kinds::fd::file::{
    check_deleted, check_file, check_host, check_removed_name, check_unlinked_name, held_key,
};
use crate::kinds::fd::held::HeldFiles;
use crate::kinds::testutil::*;
use crate::model::FileId;
use std::os::unix::fs::MetadataExt;

const RDONLY: u32 = libc::O_RDONLY as u32;
const WRONLY: u32 = libc::O_WRONLY as u32;
const APPEND: u32 = (libc::O_WRONLY | libc::O_APPEND) as u32;

#[test]
fn an_unchanged_file_passes() {
    let d = TempDir::new();
    let id = file_id(&d.file("f", b"hello"));
    assert_none(&run(|v| {
        check_file(&mut HeldFiles::same_boot(), &id, "mapped file", v)
    }));
    assert_none(&run(|v| {
        check_host(&mut HeldFiles::same_boot(), &id, RDONLY, 5, 3, v)
    }));
    let dir = file_id(d.path());
    assert_none(&run(|v| {
        check_file(&mut HeldFiles::same_boot(), &dir, "directory", v)
    }));
    let null = file_id(std::path::Path::new("/dev/null"));
    assert_none(&run(|v| {
        check_file(&mut HeldFiles::same_boot(), &null, "device", v)
    }));
}

#[test]
fn a_missing_file() {
    let d = TempDir::new();
    let id = missing_id(&d.path().join("gone"));
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &id, RDONLY, 0, 4, v));
    assert_one(
        &v,
        "file-missing",
        &["file descriptor 4:", "gone", "is not available"],
    );
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &id, WRONLY, 0, 4, v));
    assert_one(
        &v,
        "file-missing",
        &["file descriptor 4:", "is not available"],
    );
}

#[test]
fn a_changed_file() {
    let d = TempDir::new();
    let p = d.file("f", b"hello");
    let id = file_id(&p);
    let grown = FileId {
        size: 3,
        ..id.clone()
    };
    let v = run(|v| check_file(&mut HeldFiles::same_boot(), &grown, "mapped file", v));
    assert_one(
        &v,
        "file-changed",
        &["mapped file", "has changed since the dump", "size 3 -> 5"],
    );
    let touched = FileId {
        mtime_nsec: (id.mtime_nsec + 1) % 1_000_000_000,
        ..id.clone()
    };
    let v = run(|v| check_file(&mut HeldFiles::same_boot(), &touched, "mapped file", v));
    assert_one(&v, "file-changed", &["has changed since the dump"]);
    let touched = FileId {
        mtime_sec: id.mtime_sec - 1,
        ..id.clone()
    };
    assert_one(
        &run(|v| check_file(&mut HeldFiles::same_boot(), &touched, "x", v)),
        "file-changed",
        &["modified"],
    );
}

#[test]
fn another_kind_of_file_or_device() {
    let d = TempDir::new();
    let p = d.file("f", b"");
    let was_dir = FileId {
        mode: libc::S_IFDIR | 0o755,
        ..file_id(&p)
    };
    let v = run(|v| {
        check_file(
            &mut HeldFiles::same_boot(),
            &was_dir,
            "file descriptor 3:",
            v,
        )
    });
    assert_one(&v, "file-changed", &["is now a different kind of file"]);
    let null = file_id(std::path::Path::new("/dev/null"));
    let other = FileId {
        rdev: null.rdev + 1,
        ..null
    };
    let v = run(|v| check_file(&mut HeldFiles::same_boot(), &other, "file descriptor 3:", v));
    assert_one(&v, "file-changed", &["/dev/null is now another device"]);
}

#[test]
fn an_output_file_may_grow() {
    let d = TempDir::new();
    let p = d.file("log", b"0123456789");
    let id = FileId {
        size: 4,
        ..file_id(&p)
    };
    // Only written: grown since the dump is fine, a read-write file is not.
    assert_none(&run(|v| {
        check_host(&mut HeldFiles::same_boot(), &id, WRONLY, 4, 1, v)
    }));
    assert_none(&run(|v| {
        check_host(&mut HeldFiles::same_boot(), &id, WRONLY, 10, 1, v)
    }));
    let v = run(|v| {
        check_host(
            &mut HeldFiles::same_boot(),
            &id,
            libc::O_RDWR as u32,
            4,
            1,
            v,
        )
    });
    assert_one(&v, "file-changed", &["has changed since the dump"]);
}

#[test]
fn an_output_file_truncated_or_replaced() {
    let d = TempDir::new();
    let id = file_id(&d.file("log", b"0123"));
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &id, WRONLY, 100, 1, v));
    assert_one(
        &v,
        "file-changed",
        &[
            "file descriptor 1:",
            "was truncated to 4 bytes",
            "offset 100",
        ],
    );
    // An appending writer does not care where the end is.
    assert_none(&run(|v| {
        check_host(&mut HeldFiles::same_boot(), &id, APPEND, 100, 1, v)
    }));
    let dir = FileId {
        mode: libc::S_IFREG | 0o644,
        ..file_id(d.path())
    };
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &dir, WRONLY, 0, 1, v));
    assert_one(&v, "file-changed", &["is no longer a regular file"]);
}

#[test]
fn a_deleted_file_needs_its_directory() {
    let d = TempDir::new();
    let id = missing_id(&d.path().join("deleted"));
    assert_none(&run(|v| check_deleted(&id, 5, v)));
    let id = missing_id(&d.path().join("nodir").join("deleted"));
    let v = run(|v| check_deleted(&id, 5, v));
    assert_one(
        &v,
        "file-missing",
        &[
            "file descriptor 5: the directory of deleted file",
            "nodir/deleted",
        ],
    );
    let id = missing_id(std::path::Path::new("relative"));
    assert_one(
        &run(|v| check_deleted(&id, 5, v)),
        "file-missing",
        &["relative"],
    );
}

#[test]
fn paths_under_proc_name_their_pid() {
    use crate::kinds::fd::file::proc_pid_path;
    assert_eq!(proc_pid_path(b"/proc/42/comm"), Some((42, &b"/comm"[..])));
    assert_eq!(proc_pid_path(b"/proc/42"), Some((42, &b""[..])));
    assert_eq!(
        proc_pid_path(b"/proc/42/task/43/stat"),
        Some((42, &b"/task/43/stat"[..]))
    );
    for p in [
        &b"/proc/self/comm"[..],
        b"/proc/meminfo",
        b"/proc/",
        b"/proc//x",
        b"/tmp/42",
        b"/proc/99999999999999/x",
    ] {
        assert_eq!(proc_pid_path(p), None, "{}", String::from_utf8_lossy(p));
    }
}

#[test]
fn a_proc_file_of_the_image_is_not_compared_and_needs_the_same_pids() {
    use crate::kinds::fd::file::check_proc_file;
    let pids: std::collections::BTreeSet<i32> = [100, 101].into();
    let file = |p: &str| FileId {
        path: p.as_bytes().to_vec(),
        ..Default::default()
    };
    // A process of the image: not compared with anything now (it does not exist yet).
    assert_none(&run(|v| {
        assert!(check_proc_file(&file("/proc/101/comm"), 3, &pids, false, v));
    }));
    // Another PID, or no PID: an ordinary file, for check_file.
    for p in ["/proc/7/comm", "/proc/meminfo", "/etc/hostname"] {
        assert_none(&run(|v| {
            assert!(!check_proc_file(&file(p), 3, &pids, false, v))
        }));
    }
    // In a new PID namespace the process has another PID as ckpt sees /proc.
    let v = run(|v| {
        check_proc_file(&file("/proc/100/stat"), 4, &pids, true, v);
    });
    assert_one(&v, "unsupported", &["file descriptor 4", "/proc/100/stat"]);
}

#[test]
fn a_file_replaced_by_one_of_the_same_size_and_mtime() {
    let d = TempDir::new();
    let p = d.file("f", b"hello");
    let id = file_id(&p);
    // Another file, same size, with the old one's modification time, renamed over it.
    let other = d.file("g", b"world");
    let mtime = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&other)
        .and_then(|f| f.set_modified(mtime))
        .expect("copy the mtime");
    std::fs::rename(&other, &p).expect("rename over");
    let now = file_id(&p);
    assert_eq!(
        (now.size, now.mtime_sec, now.mtime_nsec),
        (id.size, id.mtime_sec, id.mtime_nsec)
    );
    // On the dump's boot, the inode tells them apart.
    let v = run(|v| check_file(&mut HeldFiles::same_boot(), &id, "mapped file", v));
    assert_one(
        &v,
        "file-changed",
        &["mapped file", "has changed since the dump", "another file"],
    );
    // The same for a file only written, which may otherwise have grown.
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &id, WRONLY, 0, 4, v));
    assert_one(&v, "file-changed", &["another file"]);
    // On another boot (or an image without a boot ID) inode numbers mean nothing.
    assert_none(&run(|v| {
        check_file(&mut HeldFiles::new(""), &id, "mapped file", v)
    }));
}

#[test]
fn a_held_file_is_opened_once_and_kept() {
    let d = TempDir::new();
    let p = d.file("f", b"hello");
    let id = file_id(&p);
    let mut held = HeldFiles::same_boot();
    assert_none(&run(|v| check_file(&mut held, &id, "mapped file", v)));
    assert_none(&run(|v| {
        check_file(&mut held, &id, "file descriptor 3:", v)
    }));
    let fds = held.fds();
    assert_eq!(fds.len(), 1);
    // The descriptor is that inode, whatever the path leads to now.
    std::fs::remove_file(&p).expect("remove");
    d.file("f", b"HELLO");
    let (fd, _) = fds[&id.path];
    let m = std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("stat held");
    assert_eq!((m.dev(), m.ino()), (id.dev, id.ino));
}

/// A file with a hole: its data extents are found (SEEK_DATA/SEEK_HOLE), written back
/// alone into a new file, which then has the same contents, size and extents (and so the
/// same allocation); a whole file has none recorded.
#[test]
fn holes_are_found_and_given_back() {
    use crate::kinds::fd::file::write_contents;
    use crate::sys::file::data_extents;
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::FileExt;
    let d = TempDir::new();
    let p = d.file("sparse", b"");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("open");
    let blk = vec![7u8; 4096];
    f.write_all_at(&blk, 0).expect("write");
    f.write_all_at(&blk, (1 << 20) + 4096).expect("write");
    let ext = data_extents(&f).expect("extents").expect("it has a hole");
    assert_eq!(ext.first().map(|e| e.0), Some(0), "{ext:?}");
    assert_eq!(
        ext.last().map(|e| e.0 + e.1),
        Some((1 << 20) + 8192),
        "{ext:?}"
    );
    assert!(ext.iter().map(|e| e.1).sum::<u64>() < 1 << 20, "{ext:?}");
    let mut content = std::fs::File::open(&p).expect("open");
    let q = d.file("back", b"");
    let mut to = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&q)
        .expect("open");
    write_contents(&mut content, &mut to, Some(&ext)).expect("write back");
    assert_eq!(data_extents(&to).expect("extents"), Some(ext.clone()));
    let (a, b) = (
        std::fs::metadata(&p).expect("stat"),
        std::fs::metadata(&q).expect("stat"),
    );
    assert_eq!((a.len(), a.blocks()), (b.len(), b.blocks()));
    let (mut x, mut y) = (Vec::new(), Vec::new());
    std::fs::File::open(&p)
        .and_then(|mut f| f.read_to_end(&mut x))
        .expect("read");
    to.rewind().expect("rewind");
    to.read_to_end(&mut y).expect("read");
    assert!(x == y, "contents differ");
    // A file without holes: nothing recorded.
    let w = d.file("whole", b"abc");
    let mut wf = std::fs::OpenOptions::new()
        .append(true)
        .open(&w)
        .expect("open");
    wf.write_all(b"def").expect("write");
    assert_eq!(data_extents(&wf).expect("extents"), None);
}

/// FILE_EXTENTS records: in order, not overlapping, not empty, inside the contents.
#[test]
fn bad_extents_are_refused() {
    use crate::kinds::fd::file::parse_extents;
    let enc = |v: &[(u64, u64)]| -> Vec<u8> {
        v.iter()
            .flat_map(|(o, l)| o.to_le_bytes().into_iter().chain(l.to_le_bytes()))
            .collect()
    };
    assert_eq!(
        parse_extents(&enc(&[(0, 4096), (8192, 4096)]), Some(12288)),
        Ok(vec![(0, 4096), (8192, 4096)])
    );
    for (v, size) in [
        (vec![(0, 4096)], None),
        (vec![(0, 4096), (4000, 10)], Some(8192)),
        (vec![(4096, 0)], Some(8192)),
        (vec![(0, 8193)], Some(8192)),
        (vec![(u64::MAX, 2)], Some(8192)),
    ] {
        assert!(parse_extents(&enc(&v), size).is_err(), "{v:?} {size:?}");
    }
    assert!(parse_extents(&[0; 15], Some(100)).is_err());
}

/// A file opened by a name removed since gets that name back for an instant: the name
/// must be free now and its directory there; it is held under the name /proc showed.
#[test]
fn a_removed_name_given_back_must_be_free_in_a_directory_that_exists() {
    use std::os::unix::ffi::OsStrExt;
    let d = TempDir::new();
    let id = file_id(&d.file("b", b"data"));
    let name = |n: &str| d.path().join(n).as_os_str().as_bytes().to_vec();
    assert_none(&run(|v| check_unlinked_name(&name("a"), &id, 3, v)));
    d.file("taken", b"x");
    assert_one(
        &run(|v| check_unlinked_name(&name("taken"), &id, 3, v)),
        "file-changed",
        &[
            "file descriptor 3",
            "cannot be shown under that name again",
            "exists now",
        ],
    );
    assert_one(
        &run(|v| check_unlinked_name(&name("gone/a"), &id, 3, v)),
        "file-missing",
        &["file descriptor 3", "does not exist"],
    );
    assert_eq!(held_key(b"/d/b", b""), b"/d/b");
    assert_eq!(held_key(b"/d/b", b"/d/a"), b"/d/a (deleted)");
}

/// A directory removed while open is made again under its name for an instant: the
/// name must be free now and its parent there.
#[test]
fn a_removed_directory_needs_its_parent_and_a_free_name() {
    use std::os::unix::ffi::OsStrExt;
    let d = TempDir::new();
    let dir = |n: &str| FileId {
        path: d.path().join(n).as_os_str().as_bytes().to_vec(),
        mode: libc::S_IFDIR | 0o751,
        ..Default::default()
    };
    assert_none(&run(|v| {
        check_removed_name(&dir("gone"), "directory", "file descriptor 6", v)
    }));
    d.file("taken", b"x");
    assert_one(
        &run(|v| check_removed_name(&dir("taken"), "directory", "file descriptor 6", v)),
        "file-changed",
        &["file descriptor 6", "removed while in use", "exists now"],
    );
    assert_one(
        &run(|v| check_removed_name(&dir("none/gone"), "working directory", "process 9", v)),
        "file-missing",
        &["process 9", "removed working directory", "does not exist"],
    );
}

/// A file outside the tree's mount namespace (`FileId::outside`) is held apart from the
/// tree's file of the same path, under its own key, and checked like any other.
#[test]
fn a_file_outside_the_mount_namespace_is_held_apart() {
    let d = TempDir::new();
    let inside = file_id(&d.file("f", b"hello"));
    let outside = FileId {
        outside: true,
        ..inside.clone()
    };
    assert_ne!(HeldFiles::key(&outside), HeldFiles::key(&inside));
    assert_eq!(HeldFiles::key(&inside), inside.path);
    let mut held = HeldFiles::same_boot();
    assert_none(&run(|v| check_host(&mut held, &outside, RDONLY, 2, 1, v)));
    assert_none(&run(|v| check_host(&mut held, &inside, RDONLY, 2, 3, v)));
    let fds = held.fds();
    assert!(
        fds.contains_key(&HeldFiles::key(&outside)),
        "{:?}",
        fds.keys()
    );
    assert!(fds.contains_key(&inside.path), "{:?}", fds.keys());
    assert!(held.reopen_regular(&outside).is_some());
    // Missing: named as outside.
    let gone = FileId {
        outside: true,
        ..missing_id(&d.path().join("gone"))
    };
    let v = run(|v| check_host(&mut HeldFiles::same_boot(), &gone, RDONLY, 0, 1, v));
    assert!(
        v.iter()
            .any(|p| p.message.contains("outside the tree's mount namespace")),
        "{v:?}"
    );
}

/// A descriptor on /proc/PID/... of a process of the tree (ckpt's /proc: its device) is
/// refused at dump when the tree's IDs are a PID namespace's other than ckpt's (restore
/// gives its processes other PIDs as ckpt's /proc shows them), and let through when
/// they are ckpt's own; an entry of a process outside the tree is a file like any other.
#[test]
fn a_proc_entry_of_the_tree_is_refused_when_its_pids_change() {
    use crate::kinds::fd::file::check_proc_files;
    use crate::model::{FdKind, Process};
    let Ok(dev) = std::fs::metadata("/proc").map(|m| m.dev()) else {
        return;
    };
    let file = |path: &str| FdKind::File {
        file: FileId {
            path: path.as_bytes().to_vec(),
            dev,
            ..Default::default()
        },
        flags: 0,
        pos: 0,
        unlinked: Vec::new(),
    };
    let procs = |path: &str| {
        vec![
            Process {
                pid: 100,
                fds: vec![fd(3, file(path))],
                ..Default::default()
            },
            Process {
                pid: 101,
                ..Default::default()
            },
        ]
    };
    let e = check_proc_files(&procs("/proc/101/status"), true)
        .expect_err("another PID namespace: refused");
    let msg = e.to_string();
    assert!(
        msg.contains("file descriptor 3") && msg.contains("/proc/101/status"),
        "{msg}"
    );
    assert!(check_proc_files(&procs("/proc/101/status"), false).is_ok());
    assert!(check_proc_files(&procs("/proc/7/status"), true).is_ok());
}
