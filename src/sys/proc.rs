//! /proc readers. Paths are kept as raw bytes (they need not be UTF-8).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Result, SysError};

/// Read a /proc file whole. `fs::read` starts with 32-byte reads and doubles them (a
/// /proc file has no size), which took nine `read`s for ckpt's own maps; one of 16 KiB
/// takes all of a usual file at once. (Not for smaps: see [`SMAPS_READ`].)
fn read(path: String) -> Result<Vec<u8>> {
    read_chunked(path, 16 << 10)
}

fn parse_hex(b: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// One entry of /proc/PID/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: Vec<u8>,
    pub vmflags: Vec<String>,
}

fn parse_map_header(line: &[u8]) -> Option<MapEntry> {
    let mut rest = line;
    let mut next_field = || -> Option<&[u8]> {
        let s = rest.iter().position(|&c| c != b' ')?;
        rest = &rest[s..];
        let e = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        let f = &rest[..e];
        rest = &rest[e..];
        Some(f)
    };
    let range = next_field()?;
    let perms = next_field()?;
    let offset = next_field()?;
    let dev = next_field()?;
    let inode = next_field()?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let start = parse_hex(&range[..dash])?;
    let end = parse_hex(&range[dash + 1..])?;
    if perms.len() != 4 {
        return None;
    }
    let colon = dev.iter().position(|&c| c == b':')?;
    let path_start = rest.iter().position(|&c| c != b' ').unwrap_or(rest.len());
    Some(MapEntry {
        start,
        end,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: parse_hex(offset)?,
        dev_major: parse_hex(&dev[..colon])? as u32,
        dev_minor: parse_hex(&dev[colon + 1..])? as u32,
        inode: std::str::from_utf8(inode).ok()?.parse().ok()?,
        path: rest[path_start..].to_vec(),
        vmflags: Vec::new(),
    })
}

fn is_map_header(line: &[u8]) -> bool {
    let first = line.split(|&c| c == b' ').next().unwrap_or(&[]);
    first.contains(&b'-') && first.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-')
}

/// Parse the text of /proc/PID/smaps (or maps, which then has no VmFlags).
pub fn parse_smaps(text: &[u8]) -> Result<Vec<MapEntry>> {
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.split(|&c| c == b'\n') {
        if line.is_empty() {
            continue;
        }
        if is_map_header(line) {
            let e = parse_map_header(line).ok_or_else(|| {
                SysError::Other(format!(
                    "cannot parse maps line {:?}",
                    String::from_utf8_lossy(line)
                ))
            })?;
            out.push(e);
        } else if let Some(v) = line.strip_prefix(b"VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.vmflags = v
                    .split(|&c| c == b' ')
                    .filter(|f| !f.is_empty())
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
            }
        }
    }
    Ok(out)
}

/// Bytes asked of each `read` of /proc/PID/smaps. The kernel makes a seq_file's text one
/// record (here: one area) at a time into a buffer of a page, adding records as long as
/// less than the reader asked for is in it; the record that no longer fits is thrown away
/// and made again by the next `read`. Making a smaps record walks the area's page tables
/// (16-24 ms per GiB resident here), so with reads of a page or more (`fs::read` grows
/// its reads to 8 KiB) about one area in five was walked twice: a 512 MiB area 23 areas
/// into the list took 26-29 ms to read instead of 13-14, a 1 GiB area read in 4 KiB
/// reads 44-56 ms instead of 21-28. With reads of half a page at most, only a record
/// longer than half a page (a path of over a thousand bytes) is made twice; that costs
/// twice as many `read`s, no slower for 5000 areas.
const SMAPS_READ: usize = 2048;

/// Read a seq_file in `read`s of `chunk` bytes.
fn read_chunked(path: String, chunk: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(&path).map_err(|e| SysError::io(format!("open {path}"), e))?;
    let mut out = Vec::new();
    loop {
        let len = out.len();
        out.resize(len + chunk, 0);
        match f.read(&mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                return Ok(out);
            }
            Ok(n) => out.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(len),
            Err(e) => return Err(SysError::io(format!("read {path}"), e)),
        }
    }
}

pub fn smaps(pid: i32) -> Result<Vec<MapEntry>> {
    parse_smaps(&read_chunked(format!("/proc/{pid}/smaps"), SMAPS_READ)?)
}

/// An area as its maps line shows it, for error messages.
fn describe_area(m: &MapEntry) -> String {
    let flag = |on: bool, c: char| if on { c } else { '-' };
    format!(
        "{:x}-{:x} {}{}{}{} {:x} {:x}:{:x} {} {}",
        m.start,
        m.end,
        flag(m.read, 'r'),
        flag(m.write, 'w'),
        flag(m.exec, 'x'),
        if m.shared { 's' } else { 'p' },
        m.offset,
        m.dev_major,
        m.dev_minor,
        m.inode,
        String::from_utf8_lossy(&m.path)
    )
}

/// Give each area of `maps` (from /proc/PID/maps, which has no VmFlags) the VmFlags of the
/// same area in `smaps` (from /proc/PID/smaps). Both must have been read from the same
/// frozen process: they must list exactly the same areas (range, protection, sharing,
/// offset, device, inode, path), else this fails and says where they differ.
pub fn merge_vmflags(pid: i32, maps: &mut [MapEntry], smaps: Vec<MapEntry>) -> Result<()> {
    let differ = |what: String| {
        SysError::Other(format!(
            "the memory map of process {pid} changed while it was stopped: {what}"
        ))
    };
    let (n_maps, n_smaps) = (maps.len(), smaps.len());
    for (m, s) in maps.iter_mut().zip(smaps) {
        let same = m.start == s.start
            && m.end == s.end
            && (m.read, m.write, m.exec, m.shared) == (s.read, s.write, s.exec, s.shared)
            && m.offset == s.offset
            && (m.dev_major, m.dev_minor, m.inode) == (s.dev_major, s.dev_minor, s.inode)
            && m.path == s.path;
        if !same {
            return Err(differ(format!(
                "maps lists {} where smaps lists {}",
                describe_area(m),
                describe_area(&s)
            )));
        }
        m.vmflags = s.vmflags;
    }
    if n_maps != n_smaps {
        return Err(differ(format!(
            "maps lists {n_maps} areas, smaps {n_smaps}"
        )));
    }
    Ok(())
}

pub fn maps(pid: i32) -> Result<Vec<MapEntry>> {
    parse_smaps(&read(format!("/proc/{pid}/maps"))?)
}

/// Pagemap bits.
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;
pub const PM_GUARD_REGION: u64 = 1 << 58;

/// Reader of /proc/PID/pagemap entries.
pub struct Pagemap {
    f: fs::File,
}

impl Pagemap {
    pub fn open(pid: i32) -> Result<Self> {
        let f = fs::File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| SysError::io(format!("open /proc/{pid}/pagemap"), e))?;
        Ok(Self { f })
    }

    /// Entries for the pages of [start, end) (page aligned), appended to `out`.
    pub fn read(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let n = ((end - start) / 4096) as usize;
        let mut buf = vec![0u8; n * 8];
        self.f
            .read_exact_at(&mut buf, start / 4096 * 8)
            .map_err(|e| SysError::io(format!("read pagemap at {start:#x}"), e))?;
        out.extend(
            buf.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        Ok(())
    }

    /// The pages of [start, end) that have any of the categories `anyof` (`PAGE_IS_*`),
    /// as ranges of pages with the same categories (of those in `report`), in address
    /// order: the `PAGEMAP_SCAN` ioctl (Linux 6.7; `PAGE_IS_GUARD` 6.15), which walks
    /// the page tables without a word per page. `None` if this kernel cannot do it.
    pub fn scan(
        &self,
        start: u64,
        end: u64,
        anyof: u64,
        report: u64,
    ) -> Result<Option<Vec<ScanRange>>> {
        use linux_raw_sys::btrfs::{page_region, pm_scan_arg};
        use std::os::fd::AsRawFd;
        // _IOWR('f', 16, struct pm_scan_arg) of linux/fs.h: linux-raw-sys has the
        // structs (in its `btrfs` module, which holds linux/fs.h) but not the ioctl
        // number, libc neither.
        const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
        const BATCH: usize = 512;
        let mut out = Vec::new();
        let mut regions = [page_region {
            start: 0,
            end: 0,
            categories: 0,
        }; BATCH];
        let mut at = start;
        while at < end {
            let mut arg = pm_scan_arg {
                size: std::mem::size_of::<pm_scan_arg>() as u64,
                flags: 0,
                start: at,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: BATCH as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: 0,
                category_anyof_mask: anyof,
                return_mask: report,
            };
            // SAFETY: `arg` is a pm_scan_arg of the size it declares, and its `vec`
            // points to `regions`, BATCH page_region structs that we own mutably for the
            // call; the kernel writes only there and to `arg`.
            let n = unsafe {
                libc::ioctl(
                    self.f.as_raw_fd(),
                    PAGEMAP_SCAN,
                    &mut arg as *mut pm_scan_arg,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    // Not this kernel's (no ioctl, or an unknown category).
                    Some(libc::ENOTTY | libc::EINVAL) if out.is_empty() && at == start => Ok(None),
                    _ => Err(SysError::io(format!("PAGEMAP_SCAN at {at:#x}"), e)),
                };
            }
            let n = (n as usize).min(BATCH);
            out.extend(regions[..n].iter().map(|r| ScanRange {
                start: r.start,
                end: r.end,
                categories: r.categories,
            }));
            let walk_end = arg.walk_end;
            if walk_end <= at {
                return Err(SysError::Other(format!(
                    "PAGEMAP_SCAN made no progress at {at:#x}"
                )));
            }
            at = walk_end;
        }
        Ok(Some(out))
    }
}

/// A range of pages found by [`Pagemap::scan`], with the categories it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRange {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `PAGEMAP_SCAN` page categories (linux/fs.h, from linux-raw-sys).
pub const PAGE_IS_FILE: u64 = linux_raw_sys::btrfs::PAGE_IS_FILE as u64;
pub const PAGE_IS_PRESENT: u64 = linux_raw_sys::btrfs::PAGE_IS_PRESENT as u64;
pub const PAGE_IS_SWAPPED: u64 = linux_raw_sys::btrfs::PAGE_IS_SWAPPED as u64;
pub const PAGE_IS_PFNZERO: u64 = linux_raw_sys::btrfs::PAGE_IS_PFNZERO as u64;
pub const PAGE_IS_GUARD: u64 = linux_raw_sys::btrfs::PAGE_IS_GUARD as u64;

/// Selected fields of /proc/PID/status.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub state: char,
    pub tgid: i32,
    pub ppid: i32,
    pub threads: u32,
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub umask: u32,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp: u32,
    /// The task's ID in each PID namespace it is in, outermost (this /proc's) first.
    pub nspid: Vec<i32>,
}

pub fn status(pid: i32) -> Result<Status> {
    let text = read(format!("/proc/{pid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    let mut s = Status::default();
    let bad = |k: &str| SysError::Other(format!("cannot parse {k} in /proc/{pid}/status"));
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let four = |v: &str| -> Option<[u32; 4]> {
            let p: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            p.try_into().ok()
        };
        let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad(k));
        match k {
            "State" => s.state = v.chars().next().unwrap_or('?'),
            "Tgid" => s.tgid = v.parse().map_err(|_| bad(k))?,
            "PPid" => s.ppid = v.parse().map_err(|_| bad(k))?,
            "Threads" => s.threads = v.parse().map_err(|_| bad(k))?,
            "Uid" => s.uid = four(v).ok_or_else(|| bad(k))?,
            "Gid" => s.gid = four(v).ok_or_else(|| bad(k))?,
            "Groups" => {
                s.groups = v
                    .split_whitespace()
                    .map(|x| x.parse().map_err(|_| bad(k)))
                    .collect::<Result<_>>()?
            }
            "Umask" => s.umask = u32::from_str_radix(v, 8).map_err(|_| bad(k))?,
            "CapInh" => s.cap_inh = hex(v)?,
            "CapPrm" => s.cap_prm = hex(v)?,
            "CapEff" => s.cap_eff = hex(v)?,
            "CapBnd" => s.cap_bnd = hex(v)?,
            "CapAmb" => s.cap_amb = hex(v)?,
            "NoNewPrivs" => s.no_new_privs = v == "1",
            "Seccomp" => s.seccomp = v.parse().map_err(|_| bad(k))?,
            "NSpid" => {
                s.nspid = v
                    .split_whitespace()
                    .map(|x| x.parse().map_err(|_| bad(k)))
                    .collect::<Result<_>>()?
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Fields of /proc/PID/stat (numbered as in proc(5)).
#[derive(Debug, Clone)]
pub struct Stat {
    pub comm: Vec<u8>,
    fields: Vec<u64>,
    pub state: u8,
}

impl Stat {
    /// The task is in `do_exit` (`PF_EXITING` among the flags, field 9): killed, say,
    /// and still freeing its memory before it becomes a zombie.
    pub fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.field(9) & PF_EXITING != 0
    }

    /// Field `n` (1-based, as proc(5) numbers them; n >= 4).
    pub fn field(&self, n: usize) -> u64 {
        n.checked_sub(4)
            .and_then(|i| self.fields.get(i))
            .copied()
            .unwrap_or(0)
    }
}

pub fn stat(pid: i32) -> Result<Stat> {
    let text = read(format!("/proc/{pid}/stat"))?;
    let bad = || SysError::Other(format!("cannot parse /proc/{pid}/stat"));
    let open = text.iter().position(|&c| c == b'(').ok_or_else(bad)?;
    let close = text.iter().rposition(|&c| c == b')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let comm = text[open + 1..close].to_vec();
    let rest = String::from_utf8_lossy(&text[close + 1..]).into_owned();
    let mut it = rest.split_whitespace();
    let state = it.next().and_then(|s| s.bytes().next()).ok_or_else(bad)?;
    // Field 4 onwards; a few may be negative (e.g. tty_nr is fine, but priority can be).
    let fields = it
        .map(|x| {
            x.parse::<u64>()
                .or_else(|_| x.parse::<i64>().map(|v| v as u64))
        })
        .collect::<std::result::Result<Vec<u64>, _>>()
        .map_err(|_| bad())?;
    Ok(Stat {
        comm,
        fields,
        state,
    })
}

/// Read a symlink under /proc as raw bytes.
pub fn readlink(path: &str) -> Result<Vec<u8>> {
    fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .map_err(|e| SysError::io(format!("readlink {path}"), e))
}

pub fn auxv(pid: i32) -> Result<Vec<u64>> {
    let b = read(format!("/proc/{pid}/auxv"))?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

pub fn personality(pid: i32) -> Result<u32> {
    let b = read(format!("/proc/{pid}/personality"))?;
    let s = String::from_utf8_lossy(&b);
    u32::from_str_radix(s.trim(), 16)
        .map_err(|_| SysError::Other(format!("cannot parse /proc/{pid}/personality")))
}

pub fn timerslack_ns(pid: i32) -> Result<u64> {
    let b = read(format!("/proc/{pid}/timerslack_ns"))?;
    String::from_utf8_lossy(&b)
        .trim()
        .parse()
        .map_err(|_| SysError::Other(format!("cannot parse /proc/{pid}/timerslack_ns")))
}

/// pos and flags from /proc/PID/fdinfo/FD.
pub fn fdinfo(pid: i32, fd: i32) -> Result<(u64, u32)> {
    let b = read(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let s = String::from_utf8_lossy(&b);
    let mut pos = None;
    let mut flags = None;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            pos = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).ok();
        }
    }
    match (pos, flags) {
        (Some(p), Some(f)) => Ok((p, f)),
        _ => Err(SysError::Other(format!(
            "cannot parse /proc/{pid}/fdinfo/{fd}"
        ))),
    }
}

/// Open file descriptors of a process, sorted.
pub fn fds(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/fd");
    let mut v = Vec::new();
    for e in fs::read_dir(&dir).map_err(|e| SysError::io(format!("read {dir}"), e))? {
        let e = e.map_err(|e| SysError::io(format!("read {dir}"), e))?;
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// What identifies a file (its `stat`), with the name it is recorded under; the kinds
/// turn it into the image's `FileId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdent {
    pub path: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

/// Identity of the file behind `path` (following links, e.g. /proc/PID/fd/N), recorded
/// under the name `name`.
pub fn file_id(path: &Path, name: &[u8]) -> Result<FileIdent> {
    Ok(file_stat(path, name)?.0)
}

/// [`file_id`] and the link count (0: deleted while open or mapped), from one `stat`.
pub fn file_stat(path: &Path, name: &[u8]) -> Result<(FileIdent, u64)> {
    let m = fs::metadata(path).map_err(|e| SysError::io(format!("stat {}", path.display()), e))?;
    let id = FileIdent {
        path: name.to_vec(),
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        rdev: m.rdev(),
        size: m.size(),
        mtime_sec: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    };
    Ok((id, m.nlink()))
}

pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// The inode number and the data ranges (SEEK_DATA/SEEK_HOLE) within [off, off+len) of
/// the shared-memory object behind the mapping `start-end` of process `pid`. Every page
/// the object holds in that range is reported, whether or not this process has touched
/// it (it may have been written through another process's mapping).
pub fn shmem_data_ranges(
    pid: i32,
    start: u64,
    end: u64,
    off: u64,
    len: u64,
) -> Result<(u64, Vec<(u64, u64)>)> {
    let link = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let f = fs::File::open(&link).map_err(|e| SysError::io(format!("open {link}"), e))?;
    let ino = f
        .metadata()
        .map_err(|e| SysError::io(format!("stat {link}"), e))?
        .ino();
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = off;
    let stop = off + len;
    while pos < stop {
        let d = match seek(&f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // no data after pos
            Err(e) => return Err(super::rerr(format!("SEEK_DATA on {link}"), e)),
        };
        if d >= stop {
            break;
        }
        let h = seek(&f, SeekFrom::Hole(d))
            .map_err(|e| super::rerr(format!("SEEK_HOLE on {link}"), e))?;
        let h = h.min(stop);
        out.push((d & !4095, (h + 4095) & !4095));
        pos = h.max(d + 4096);
    }
    Ok((ino, out))
}

/// A System V shared memory segment from /proc/sysvipc/shm: (key, shmid, mode, size).
pub fn sysv_shm() -> Result<Vec<(i32, i32, u32, u64)>> {
    let text = read("/proc/sysvipc/shm".to_string())?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(key), Some(id), Some(mode), Some(size)) =
            (f.first(), f.get(1), f.get(2), f.get(3))
        else {
            continue;
        };
        let bad = || SysError::Other("cannot parse /proc/sysvipc/shm".into());
        out.push((
            key.parse().map_err(|_| bad())?,
            id.parse().map_err(|_| bad())?,
            u32::from_str_radix(mode, 8).map_err(|_| bad())?,
            size.parse().map_err(|_| bad())?,
        ));
    }
    Ok(out)
}

/// Thread IDs of a process (/proc/PID/task), sorted. ENOENT when it is gone.
pub fn task_ids(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/task");
    let rd = fs::read_dir(&dir).map_err(|e| SysError::io(format!("read {dir}"), e))?;
    let mut v: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Whether signal `sig` is neither ignored by process `pid` nor pending for it or any of
/// `tids` (its threads), from the SigIgn, ShdPnd and SigPnd masks of /proc.
pub fn signal_quiet(pid: i32, tids: &[i32], sig: i32) -> Result<bool> {
    let bit = 1u64 << (sig - 1);
    let mask = |path: &str, key: &str| -> Result<u64> {
        let text = read(path.to_string())?;
        let text = String::from_utf8_lossy(&text);
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| SysError::Other(format!("cannot parse {key} in {path}")))
    };
    let proc_status = format!("/proc/{pid}/status");
    if (mask(&proc_status, "SigIgn:")? | mask(&proc_status, "ShdPnd:")?) & bit != 0 {
        return Ok(false);
    }
    for tid in tids {
        if mask(&format!("/proc/{pid}/task/{tid}/status"), "SigPnd:")? & bit != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The IDs of thread `tid` of process `pid` in each PID namespace it is in, outermost
/// (this /proc's) first.
pub fn thread_nspid(pid: i32, tid: i32) -> Result<Vec<i32>> {
    let text = read(format!("/proc/{pid}/task/{tid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| SysError::Other(format!("no NSpid in /proc/{pid}/task/{tid}/status")))?;
    line.split_whitespace()
        .map(|x| {
            x.parse().map_err(|_| {
                SysError::Other(format!(
                    "cannot parse NSpid of /proc/{pid}/task/{tid}/status"
                ))
            })
        })
        .collect()
}

/// The identity (`pid:[inode]`) of the PID namespace process `pid` lives in.
pub fn pid_namespace(pid: i32) -> Result<std::path::PathBuf> {
    let p = format!("/proc/{pid}/ns/pid");
    fs::read_link(&p).map_err(|e| SysError::io(format!("readlink {p}"), e))
}

/// Children of every thread of a process, sorted and without duplicates.
pub fn children(pid: i32) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for tid in task_ids(pid)? {
        let text =
            fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|x| x.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The first namespace kind (mnt, net, ...; not pid) in which process `pid` differs
/// from this process, if any.
pub fn foreign_namespace(pid: i32) -> Option<&'static str> {
    ["mnt", "net", "ipc", "uts", "user", "cgroup", "time"]
        .into_iter()
        .find(|ns| {
            let theirs = fs::read_link(format!("/proc/{pid}/ns/{ns}"));
            let ours = fs::read_link(format!("/proc/self/ns/{ns}"));
            matches!((theirs, ours), (Ok(a), Ok(b)) if a != b)
        })
}

/// The whole of /proc/PID/fdinfo/FD.
pub fn fdinfo_text(pid: i32, fd: i32) -> Result<String> {
    let b = read(format!("/proc/{pid}/fdinfo/{fd}"))?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The value after `key` on its fdinfo line.
pub fn fdinfo_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// "(sec, nsec)" of a timerfd's fdinfo, in nanoseconds.
pub fn parse_timespec_pair(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    let s: u64 = s.trim().parse().ok()?;
    let n: u64 = n.trim().parse().ok()?;
    Some(s.saturating_mul(1_000_000_000).saturating_add(n))
}

/// Registered targets of an epoll fdinfo: (fd, events, data, inode).
pub fn parse_epoll_targets(text: &str) -> Option<Vec<(i32, u32, u64, u64)>> {
    let mut out = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("tfd:")) {
        let mut it = l.split_whitespace();
        let mut get = |key: &str| -> Option<&str> {
            while let Some(w) = it.next() {
                if w == key {
                    return it.next();
                }
                if let Some(v) = w.strip_prefix(key) {
                    if !v.is_empty() {
                        return Some(v);
                    }
                    return it.next();
                }
            }
            None
        };
        let fd = get("tfd:")?.parse().ok()?;
        let events = u32::from_str_radix(get("events:")?, 16).ok()?;
        let data = u64::from_str_radix(get("data:")?, 16).ok()?;
        let ino = u64::from_str_radix(get("ino:")?, 16).ok()?;
        out.push((fd, events, data, ino));
    }
    Some(out)
}

/// One entry of /proc/PID/timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcTimer {
    pub id: i32,
    pub signo: i32,
    pub sigev_value: u64,
    /// SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD_ID (4).
    pub notify: i32,
    pub notify_tid: i32,
    pub clock: i32,
}

/// The POSIX timers of a process, from /proc/PID/timers.
pub fn posix_timers(pid: i32) -> Result<Vec<ProcTimer>> {
    let text = read(format!("/proc/{pid}/timers"))?;
    let text = String::from_utf8_lossy(&text);
    let bad = || SysError::Other(format!("cannot parse /proc/{pid}/timers"));
    let mut out = Vec::new();
    let mut cur: Option<ProcTimer> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => {
                out.extend(cur.take());
                cur = Some(ProcTimer {
                    id: v.parse().map_err(|_| bad())?,
                    ..Default::default()
                });
            }
            "signal" => {
                let c = cur.as_mut().ok_or_else(bad)?;
                let (sig, val) = v.split_once('/').ok_or_else(bad)?;
                c.signo = sig.parse().map_err(|_| bad())?;
                c.sigev_value = u64::from_str_radix(val, 16).map_err(|_| bad())?;
            }
            "notify" => {
                let c = cur.as_mut().ok_or_else(bad)?;
                let (kind, who) = v.split_once('/').ok_or_else(bad)?;
                c.notify = match kind {
                    "signal" => 0,
                    "none" => 1,
                    "thread" => 4,
                    _ => return Err(bad()),
                };
                c.notify_tid = who
                    .split_once('.')
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or(0);
            }
            "ClockID" => {
                let c = cur.as_mut().ok_or_else(bad)?;
                c.clock = v.parse().map_err(|_| bad())?;
            }
            _ => {}
        }
    }
    out.extend(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PAGEMAP_SCAN finds exactly the pages the pagemap words describe: written pages,
    /// pages read but never written (the zero page: present, and marked as such), guard
    /// regions; never-touched pages not at all.
    #[test]
    fn scan_agrees_with_the_pagemap_words() {
        const N: usize = 64;
        // SAFETY: a private anonymous mapping of our own, used only by this test and
        // unmapped at its end; reads and writes stay inside it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                N * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let p = base as *mut u8;
        // SAFETY: every offset is inside the mapping.
        unsafe {
            libc::madvise(base, N * 4096, libc::MADV_NOHUGEPAGE);
            for i in (0..10).chain(20..30) {
                p.add(i * 4096).write_volatile(1);
            }
            for i in 40..45 {
                std::hint::black_box(p.add(i * 4096).read_volatile());
            }
        }
        // SAFETY: pages 50..53 are inside the mapping.
        let guard = unsafe {
            libc::madvise(
                base.cast::<u8>().add(50 * 4096).cast(),
                3 * 4096,
                linux_raw_sys::general::MADV_GUARD_INSTALL as i32,
            )
        } == 0;
        let start = base as u64;
        let end = start + (N * 4096) as u64;
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let mut words = Vec::new();
        pm.read(start, end, &mut words).unwrap();
        let scanned = pm
            .scan(
                start,
                end,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
            )
            .unwrap();
        // Dump leaves PAGE_IS_FILE out for anonymous areas (it is slow to tell): the
        // ranges must be the same.
        let without_file = pm
            .scan(
                start,
                end,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
            )
            .unwrap();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, N * 4096) };
        let Some(ranges) = scanned else {
            eprintln!("this kernel has no PAGEMAP_SCAN: nothing to compare");
            return;
        };
        assert_eq!(without_file.as_ref(), Some(&ranges));
        let cat = |i: usize| {
            let a = start + (i * 4096) as u64;
            ranges
                .iter()
                .find(|r| r.start <= a && a < r.end)
                .map_or(0, |r| r.categories)
        };
        for (i, w) in words.iter().enumerate() {
            let c = cat(i);
            assert_eq!(
                w & PM_PRESENT != 0,
                c & PAGE_IS_PRESENT != 0,
                "page {i}: present"
            );
            assert_eq!(
                w & PM_SWAP != 0,
                c & PAGE_IS_SWAPPED != 0,
                "page {i}: swapped"
            );
            assert_eq!(
                w & PM_GUARD_REGION != 0,
                c & PAGE_IS_GUARD != 0,
                "page {i}: guard"
            );
        }
        let present: Vec<usize> = (0..N).filter(|&i| cat(i) & PAGE_IS_PRESENT != 0).collect();
        let expect: Vec<usize> = (0..10).chain(20..30).chain(40..45).collect();
        assert_eq!(present, expect);
        assert!((40..45).all(|i| cat(i) & PAGE_IS_PFNZERO != 0));
        assert!((0..10).all(|i| cat(i) & PAGE_IS_PFNZERO == 0));
        if guard {
            assert!((50..53).all(|i| cat(i) & PAGE_IS_GUARD != 0));
        }
    }

    #[test]
    fn parses_maps_with_odd_paths() {
        let text = b"7f00-7f01 r-xp 00001000 fe:00 325843   /usr/lib/a b\xff.so\n\
VmFlags: rd ex mr mw me\n\
7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n\
VmFlags: rd wr mr mw me gd ac\n\
8000-9000 rw-s 00000000 00:01 12 /dev/zero (deleted)\n";
        let m = parse_smaps(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, b"/usr/lib/a b\xff.so");
        assert_eq!(m[0].offset, 0x1000);
        assert!(m[0].exec && !m[0].write);
        assert_eq!(m[1].vmflags.last().map(String::as_str), Some("ac"));
        assert!(m[1].vmflags.iter().any(|f| f == "gd"));
        assert!(m[2].shared);
        assert_eq!(m[2].path, b"/dev/zero (deleted)");
    }

    #[test]
    fn merges_vmflags_only_of_the_same_areas() {
        let smaps_text = b"7f00-7f01 r-xp 00001000 fe:00 325843   /usr/lib/a.so\n\
VmFlags: rd ex mr mw me\n\
7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n\
VmFlags: rd wr mr mw me gd ac\n";
        let maps_text = b"7f00-7f01 r-xp 00001000 fe:00 325843   /usr/lib/a.so\n\
7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n";
        let smaps = parse_smaps(smaps_text).unwrap();
        let maps = parse_smaps(maps_text).unwrap();
        assert!(maps.iter().all(|m| m.vmflags.is_empty()));
        let mut merged = maps.clone();
        merge_vmflags(1, &mut merged, smaps.clone()).unwrap();
        assert_eq!(merged, smaps);

        // Any difference in what describes an area is refused, as is an extra area on
        // either side.
        let changes: [fn(&mut MapEntry); 8] = [
            |m| m.start += 0x1000,
            |m| m.end -= 0x1000,
            |m| m.write = !m.write,
            |m| m.shared = !m.shared,
            |m| m.offset += 0x1000,
            |m| m.inode += 1,
            |m| m.dev_minor += 1,
            |m| m.path.push(b'x'),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut other = smaps.clone();
            change(&mut other[1]);
            let e = merge_vmflags(7, &mut maps.clone(), other).unwrap_err();
            assert!(
                e.to_string().contains("memory map of process 7 changed"),
                "change {i}: {e}"
            );
        }
        let mut fewer = smaps.clone();
        fewer.pop();
        assert!(merge_vmflags(1, &mut maps.clone(), fewer).is_err());
        let mut more = smaps.clone();
        more.push(MapEntry {
            start: 0x8000,
            end: 0x9000,
            ..smaps[1].clone()
        });
        let e = merge_vmflags(1, &mut maps.clone(), more).unwrap_err();
        assert!(e.to_string().contains("maps lists 2 areas, smaps 3"), "{e}");
    }

    #[test]
    fn smaps_read_in_chunks_is_whole() {
        // Reads of any size give the same text (the chunk only changes how often the
        // kernel makes a record). mountinfo: a seq_file that stays the same while other
        // tests run (this process's maps do not).
        let path = || "/proc/self/mountinfo".to_string();
        let a = read_chunked(path(), 7).unwrap();
        let b = read_chunked(path(), 100).unwrap();
        let c = read(path()).unwrap();
        assert!(a.len() > 100, "{} bytes", a.len());
        assert_eq!(a, c);
        assert_eq!(b, c);
        let s = smaps(std::process::id() as i32).unwrap();
        assert!(s.len() > 5 && s.iter().all(|m| !m.vmflags.is_empty()));
    }

    #[test]
    fn parses_epoll_fdinfo() {
        let t = "pos:\t0\nflags:\t02\ntfd:        4 events:       19 data:               4d  pos:0 ino:40f sdev:10\ntfd:        3 events: 80000019 data:             1234  pos:0 ino:40f sdev:10\n";
        let v = parse_epoll_targets(t).unwrap();
        assert_eq!(
            v,
            vec![(4, 0x19, 0x4d, 0x40f), (3, 0x8000_0019, 0x1234, 0x40f)]
        );
        assert_eq!(parse_timespec_pair(" (1, 993529230)"), Some(1_993_529_230));
    }

    #[test]
    fn parses_own_status_and_stat() {
        let me = std::process::id() as i32;
        let s = status(me).unwrap();
        assert_eq!(s.tgid, me);
        assert!(s.threads >= 1);
        let st = stat(me).unwrap();
        assert!(st.field(26) > 0, "startcode");
        assert!(!smaps(me).unwrap().is_empty());
    }
}

/// One file lock as /proc/locks and the "lock:" lines of /proc/PID/fdinfo/FD show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    /// FLOCK, POSIX, OFDLCK, ACCESS, LEASE, DELEG...
    pub class: String,
    /// WRITE, READ or UNLCK.
    pub mode: String,
    /// A waiter (blocked, not holding the lock): "->" in /proc/locks.
    pub blocked: bool,
    pub pid: i64,
    /// (major, minor) of the file's device, and its inode number.
    pub dev: (u32, u32),
    pub ino: u64,
    pub start: u64,
    /// Last byte (inclusive), `None` for EOF.
    pub end: Option<u64>,
}

/// Parse one lock line (`1: POSIX  ADVISORY  WRITE 123 08:01:456 0 EOF`, a `lock:`
/// prefix and `->` for a waiter allowed). Leases show different words; they parse with
/// their class so callers can refuse them.
pub fn parse_lock_line(line: &str) -> Option<LockLine> {
    let line = line.strip_prefix("lock:").unwrap_or(line);
    let mut blocked = false;
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| {
            if *w == "->" {
                blocked = true;
            }
            !(w.ends_with(':') && w[..w.len() - 1].parse::<u64>().is_ok()) && *w != "->"
        })
        .collect();
    // class, ADVISORY|MANDATORY|..., mode, pid, dev:ino, start, end
    let [class, _, mode, pid, devino, start, end] = words.as_slice() else {
        return None;
    };
    let mut d = devino.split(':');
    let major = u32::from_str_radix(d.next()?, 16).ok()?;
    let minor = u32::from_str_radix(d.next()?, 16).ok()?;
    let ino = d.next()?.parse().ok()?;
    Some(LockLine {
        class: class.to_string(),
        mode: mode.to_string(),
        blocked,
        pid: pid.parse().ok()?,
        dev: (major, minor),
        ino,
        start: start.parse().ok()?,
        end: if *end == "EOF" {
            None
        } else {
            Some(end.parse().ok()?)
        },
    })
}

/// Every lock of the system (/proc/locks), held or waited for.
pub fn all_locks() -> Result<Vec<LockLine>> {
    let b = read("/proc/locks".into())?;
    Ok(String::from_utf8_lossy(&b)
        .lines()
        .filter_map(parse_lock_line)
        .collect())
}

/// Processes that hold a descriptor to the file `(dev, ino)` (st_dev, st_ino), found by
/// looking at every /proc/PID/fd entry (a process that vanishes meanwhile is skipped).
pub fn holders_of(dev: u64, ino: u64) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .filter_map(|f| fs::metadata(f.path()).ok())
            .any(|m| m.dev() == dev && m.ino() == ino)
        {
            out.push(pid);
        }
    }
    out
}

/// One watch of an inotify instance, from its fdinfo
/// (`inotify wd:1 ino:2 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyLine {
    pub wd: i32,
    pub ino: u64,
    /// The kernel's device number (major << 20 | minor).
    pub sdev: u32,
    pub mask: u32,
    pub handle_type: i32,
    pub handle: Vec<u8>,
}

/// The watches of an inotify fdinfo, in the order shown; `None` if a line is malformed.
pub fn parse_inotify_watches(text: &str) -> Option<Vec<InotifyLine>> {
    let mut out = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("inotify ")) {
        let mut kv = std::collections::BTreeMap::new();
        for w in l.split_whitespace() {
            let (k, v) = w.split_once(':')?;
            kv.insert(k, v);
        }
        let hex = |k: &str| kv.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let hb = kv.get("f_handle").copied().unwrap_or("");
        if hb.len() % 2 != 0 || hb.len() > 256 {
            return None;
        }
        let handle = (0..hb.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hb[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        if hex("fhandle-bytes").unwrap_or(0) != handle.len() as u64 {
            return None;
        }
        out.push(InotifyLine {
            wd: i32::try_from(hex("wd")?).ok()?,
            ino: hex("ino")?,
            sdev: u32::try_from(hex("sdev")?).ok()?,
            mask: u32::try_from(hex("mask")?).ok()?,
            handle_type: hex("fhandle-type")
                .and_then(|t| i32::try_from(t).ok())
                .unwrap_or(0),
            handle,
        });
    }
    Some(out)
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn lock_lines_parse() {
        let l = parse_lock_line("lock:\t1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF").unwrap();
        assert_eq!(
            (
                l.class.as_str(),
                l.mode.as_str(),
                l.pid,
                l.dev,
                l.ino,
                l.start,
                l.end,
                l.blocked
            ),
            ("FLOCK", "WRITE", 4242, (0, 0x2a), 1234, 0, None, false)
        );
        let l = parse_lock_line("2: -> POSIX  ADVISORY  READ 7 fd:01:99 100 199").unwrap();
        assert_eq!(
            (l.blocked, l.dev, l.start, l.end),
            (true, (0xfd, 1), 100, Some(199))
        );
        let l = parse_lock_line("3: OFDLCK ADVISORY  WRITE -1 08:01:5 10 EOF").unwrap();
        assert_eq!((l.class.as_str(), l.pid), ("OFDLCK", -1));
        assert!(parse_lock_line("garbage").is_none());
        let w = parse_inotify_watches(
            "pos:\t0\nflags:\t04000\ninotify wd:a ino:1c sdev:fe00000 mask:300 ignored_mask:0 \
             fhandle-bytes:8 fhandle-type:1 f_handle:1c0000000a0b0c0d\n",
        )
        .unwrap();
        assert_eq!(
            (w[0].wd, w[0].ino, w[0].sdev, w[0].mask, w[0].handle_type),
            (10, 0x1c, 0xfe0_0000, 0x300, 1)
        );
        assert_eq!(w[0].handle, [0x1c, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert!(parse_inotify_watches("inotify wd:1 ino:zz sdev:0 mask:1").is_none());
        assert!(parse_lock_line("1: POSIX ADVISORY WRITE 1 08:01 0 EOF").is_none());
    }
}
