//! The memory map of a process: /proc/PID/maps and smaps ([`MapEntry`]), and what backs
//! its shared areas (the data ranges of a shared-memory object, System V segments).

use std::fs;
use std::os::unix::fs::MetadataExt;

use super::{read, read_chunked};
use crate::sys::{Result, SysError};

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
pub(super) const SMAPS_READ: usize = 2048;

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
            Err(e) => return Err(crate::sys::rerr(format!("SEEK_DATA on {link}"), e)),
        };
        if d >= stop {
            break;
        }
        let h = seek(&f, SeekFrom::Hole(d))
            .map_err(|e| crate::sys::rerr(format!("SEEK_HOLE on {link}"), e))?;
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

/// Each System V shared memory segment's ID, mode (with SHM_DEST once removed) and
/// number of attachments, from /proc/sysvipc/shm.
pub fn sysv_shm_attached() -> Result<Vec<(i32, u32, u64)>> {
    let text = read("/proc/sysvipc/shm".to_string())?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(mode), Some(nattch)) = (f.get(1), f.get(2), f.get(6)) else {
            continue;
        };
        let bad = || SysError::Other("cannot parse /proc/sysvipc/shm".into());
        out.push((
            id.parse().map_err(|_| bad())?,
            u32::from_str_radix(mode, 8).map_err(|_| bad())?,
            nattch.parse().map_err(|_| bad())?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::proc::read;

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
}
