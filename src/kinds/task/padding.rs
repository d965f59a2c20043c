//! The two instructions the dump's signal frames need (`rt_sigreturn`, and `syscall;
//! ret` for the queries: see `query::framed_queries`), written by ckpt itself into the
//! padding after the code of an executable file mapping, for a task that has neither
//! (a static program without libc that never installs a signal handler; the x86-64
//! vDSO has neither). For ia32 threads their ia32 twins (`mov $173, %eax; int $0x80`
//! and `int $0x80; ret`), in an ELF32 file's padding below 4 GiB (an ia32 program
//! without them and without a vDSO, which holds both).
//!
//! The place: the bytes of the last page of an executable private file mapping that lie
//! beyond the end (`p_filesz`, `p_memsz`) of the ELF segment mapped there, as the file's
//! own program headers say (read through `/proc/PID/map_files`), and in no other
//! segment: the page is mapped because the segment's end is not page-aligned, but no
//! code is there, so nothing of the program runs or (short of reading its own padding)
//! looks there. Written through `/proc/PID/mem` (`FOLL_FORCE` copies the file page into
//! a private one); the original bytes are written back once every thread has its own
//! registers again. What stays: the page is the process's own copy (smaps `Anonymous`
//! and `Private_Dirty` +4 kB) with the file's content; a ckpt killed while the gadgets
//! are there (a thread may still run them on its way back through its frame) leaves
//! them in the padding.

use crate::sys::mem::RemoteMem;
use crate::sys::proc::MapEntry;

/// `mov $15, %eax; syscall` (rt_sigreturn) then `syscall; ret`, as the padding holds
/// them ([`Patch::sigreturn`], [`Patch::syscall_ret`]).
pub(crate) const GADGETS: [u8; 10] = [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x05, 0xc3];
/// Their ia32 twins: `mov $173, %eax; int $0x80` (ia32 rt_sigreturn) then `int $0x80;
/// ret` (a query's `ret` pops the frame's `pretcode` right away: no words popped
/// before it), at the same offsets.
pub(crate) const GADGETS_IA32: [u8; 10] =
    [0xb8, 0xad, 0x00, 0x00, 0x00, 0xcd, 0x80, 0xcd, 0x80, 0xc3];
/// Where in the padding: the last 16 bytes of the page.
const SLOT: u64 = 16;
const PAGE: u64 = 4096;

/// Gadgets written at `at` over `orig`: the x86-64 ones ([`GADGETS`]) or, for ia32
/// threads (`ia32`), [`GADGETS_IA32`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patch {
    pub(crate) at: u64,
    pub(crate) orig: Vec<u8>,
    pub(crate) ia32: bool,
}

impl Patch {
    pub(crate) fn sigreturn(&self) -> u64 {
        self.at
    }

    pub(crate) fn syscall_ret(&self) -> u64 {
        self.at + 7
    }

    fn gadgets(&self) -> &'static [u8; 10] {
        if self.ia32 { &GADGETS_IA32 } else { &GADGETS }
    }

    /// Write the gadgets.
    pub(crate) fn apply(&self, mem: &RemoteMem) -> crate::sys::Result<()> {
        mem.write(self.at, self.gadgets())
    }

    /// Write the original bytes back.
    pub(crate) fn undo(&self, mem: &RemoteMem) -> crate::sys::Result<()> {
        mem.write(self.at, &self.orig)
    }
}

/// A PT_LOAD program header: flags, file offset, address, sizes in the file and in
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Load {
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// The PT_LOAD headers of an x86-64 ELF file (`ia32`: of an i386 ELF32 file),
/// `read(offset, len)` reading the file.
fn loads(read: impl Fn(u64, usize) -> Option<Vec<u8>>, ia32: bool) -> Option<Vec<Load>> {
    let eh = read(0, 64)?;
    // \x7fELF, 64-bit, little-endian, EM_X86_64; or 32-bit, little-endian, EM_386.
    let (class, machine) = if ia32 { (1u8, 3u16) } else { (2, 62) };
    if eh.get(..4)? != b"\x7fELF" || eh.get(4..6)? != [class, 1] || u16_at(&eh, 18)? != machine {
        return None;
    }
    let (phoff, phentsize, phnum) = if ia32 {
        (
            u64::from(u32_at(&eh, 28)?),
            u16_at(&eh, 42)?,
            u16_at(&eh, 44)?,
        )
    } else {
        (u64_at(&eh, 32)?, u16_at(&eh, 54)?, u16_at(&eh, 56)?)
    };
    if phentsize < if ia32 { 32 } else { 56 } || phnum == 0 {
        return None;
    }
    let ph = read(phoff, usize::from(phentsize) * usize::from(phnum))?;
    let mut out = Vec::new();
    let word = |p: &[u8], i| u32_at(p, i).map(u64::from);
    for p in ph.chunks_exact(usize::from(phentsize)) {
        if u32_at(p, 0)? != PT_LOAD {
            continue;
        }
        // Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags (4 bytes each).
        out.push(if ia32 {
            Load {
                flags: u32_at(p, 24)?,
                offset: word(p, 4)?,
                vaddr: word(p, 8)?,
                filesz: word(p, 16)?,
                memsz: word(p, 20)?,
            }
        } else {
            Load {
                flags: u32_at(p, 4)?,
                offset: u64_at(p, 8)?,
                vaddr: u64_at(p, 16)?,
                filesz: u64_at(p, 32)?,
                memsz: u64_at(p, 40)?,
            }
        });
    }
    Some(out)
}

/// Where in mapping `m` (executable, of the file whose PT_LOAD headers are `loads`) the
/// gadgets may go: the last [`SLOT`] bytes of its last page when they lie beyond the end
/// of the executable segment mapped there and in no segment at all.
fn slot_in(m: &MapEntry, loads: &[Load]) -> Option<u64> {
    let at = m.end.checked_sub(SLOT)?;
    // The address of a segment's first byte if the mapping holds its file bytes
    // (address `a` holds the file's offset `m.offset + (a - m.start)`).
    let bias = |l: &Load| {
        m.start
            .wrapping_sub(m.offset)
            .wrapping_add(l.offset)
            .wrapping_sub(l.vaddr)
    };
    // The executable segment whose end lies in the mapping's last page.
    let seg = loads.iter().find(|l| {
        let start = bias(l).wrapping_add(l.vaddr);
        let Some(end) = start.checked_add(l.filesz) else {
            return false;
        };
        l.flags & PF_X != 0
            && l.filesz == l.memsz
            && l.offset >= m.offset
            && m.start <= start
            && start < end
            && end <= at
            && end.div_ceil(PAGE) * PAGE == m.end
    })?;
    let bias = bias(seg);
    // In no segment of the file (another one sharing the page's addresses).
    let clear = loads.iter().all(|l| {
        let s = bias.wrapping_add(l.vaddr);
        let e = s.saturating_add(l.memsz.max(l.filesz));
        e <= at || m.end <= s
    });
    clear.then_some(at)
}

/// A place for the gadgets in the task (`pid`, `maps`), with the bytes there now; None
/// if no executable file mapping has such padding. For ia32 threads (`ia32`): the
/// padding of an ELF32 file's code, below 4 GiB.
pub(crate) fn find(pid: i32, maps: &[MapEntry], mem: &RemoteMem, ia32: bool) -> Option<Patch> {
    use std::os::unix::fs::FileExt;
    maps.iter()
        .filter(|m| m.exec && m.read && !m.shared && m.inode != 0)
        .filter(|m| m.path.first() == Some(&b'/'))
        .filter(|m| !ia32 || m.end <= 1 << 32)
        .find_map(|m| {
            // The very file mapped there (not whatever has its path now).
            let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            let f = std::fs::File::open(link).ok()?;
            let read = |off: u64, len: usize| {
                let mut b = vec![0u8; len];
                f.read_exact_at(&mut b, off).ok().map(|()| b)
            };
            let at = slot_in(m, &loads(read, ia32)?)?;
            let mut orig = vec![0u8; GADGETS.len()];
            mem.read(at, &mut orig).ok()?;
            Some(Patch { at, orig, ia32 })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, offset: u64) -> MapEntry {
        MapEntry {
            start,
            end,
            read: true,
            write: false,
            exec: true,
            shared: false,
            offset,
            dev_major: 8,
            dev_minor: 1,
            inode: 42,
            path: b"/bin/x".to_vec(),
            vmflags: Vec::new(),
        }
    }

    fn load(flags: u32, offset: u64, vaddr: u64, size: u64) -> Load {
        Load {
            flags,
            offset,
            vaddr,
            filesz: size,
            memsz: size,
        }
    }

    #[test]
    fn padding_after_the_code_segment() {
        // A static program (ld -z separate-code): headers, code, read-only data, .bss.
        let loads = [
            load(4, 0, 0x40_0000, 0x1b4),
            load(5, 0x1000, 0x40_1000, 0x45d),
            load(4, 0x2000, 0x40_2000, 0xdc),
            Load {
                flags: 6,
                offset: 0,
                vaddr: 0x40_3000,
                filesz: 0,
                memsz: 0x1_0020,
            },
        ];
        let m = map(0x40_1000, 0x40_2000, 0x1000);
        assert_eq!(slot_in(&m, &loads), Some(0x40_1ff0));
        // Loaded elsewhere (a position-independent one): the same place in its page.
        let m2 = map(0x5555_0000_1000, 0x5555_0000_2000, 0x1000);
        let shifted: Vec<Load> = loads
            .iter()
            .map(|l| Load {
                vaddr: l.vaddr - 0x40_0000,
                ..*l
            })
            .collect();
        assert_eq!(slot_in(&m2, &shifted), Some(0x5555_0000_1ff0));
        // Code up to the page's last 16 bytes: no room.
        let full = [load(5, 0x1000, 0x40_1000, 0xff1)];
        assert_eq!(slot_in(&m, &full), None);
        // Code ending on the page boundary: the mapping's last page is all code.
        let exact = [load(5, 0x1000, 0x40_1000, 0x1000)];
        assert_eq!(slot_in(&m, &exact), None);
        // A mapping that is not this segment's (split by mprotect, another segment).
        assert_eq!(slot_in(&map(0x40_1000, 0x40_3000, 0x1000), &loads), None);
        assert_eq!(slot_in(&map(0x40_2000, 0x40_3000, 0x2000), &loads), None);
        // Another segment with addresses in that page (an old linker's layout).
        let shared = [
            load(5, 0x1000, 0x40_1000, 0x45d),
            load(6, 0x1460, 0x40_1ff8, 0x10),
        ];
        assert_eq!(slot_in(&m, &shared), None);
    }

    #[test]
    fn elf_program_headers() {
        let mut f = vec![0u8; 64 + 2 * 56];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        f[18] = 62;
        f[32] = 64;
        f[54] = 56;
        f[56] = 2;
        let ph = |f: &mut Vec<u8>, i: usize, ty: u32, fl: u32, off: u64, va: u64, sz: u64| {
            let b = 64 + 56 * i;
            f[b..b + 4].copy_from_slice(&ty.to_le_bytes());
            f[b + 4..b + 8].copy_from_slice(&fl.to_le_bytes());
            f[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
            f[b + 16..b + 24].copy_from_slice(&va.to_le_bytes());
            f[b + 32..b + 40].copy_from_slice(&sz.to_le_bytes());
            f[b + 40..b + 48].copy_from_slice(&sz.to_le_bytes());
        };
        ph(&mut f, 0, PT_LOAD, 5, 0x1000, 0x40_1000, 0x45d);
        ph(&mut f, 1, 4, 4, 0x190, 0x40_0190, 0x24);
        let read =
            |off: u64, len: usize| f.get(off as usize..off as usize + len).map(<[u8]>::to_vec);
        assert_eq!(
            loads(read, false),
            Some(vec![load(5, 0x1000, 0x40_1000, 0x45d)])
        );
        // Not an ELF32 file.
        assert_eq!(loads(read, true), None);
        // Not x86-64.
        let mut g = f.clone();
        g[18] = 183;
        let read =
            |off: u64, len: usize| g.get(off as usize..off as usize + len).map(<[u8]>::to_vec);
        assert_eq!(loads(read, false), None);
    }

    #[test]
    fn elf32_program_headers() {
        let mut f = vec![0u8; 64 + 2 * 32];
        f[..6].copy_from_slice(b"\x7fELF\x01\x01");
        f[18] = 3;
        f[28] = 64;
        f[42] = 32;
        f[44] = 2;
        let ph = |f: &mut Vec<u8>, i: usize, ty: u32, fl: u32, off: u32, va: u32, sz: u32| {
            let b = 64 + 32 * i;
            f[b..b + 4].copy_from_slice(&ty.to_le_bytes());
            f[b + 4..b + 8].copy_from_slice(&off.to_le_bytes());
            f[b + 8..b + 12].copy_from_slice(&va.to_le_bytes());
            f[b + 16..b + 20].copy_from_slice(&sz.to_le_bytes());
            f[b + 20..b + 24].copy_from_slice(&sz.to_le_bytes());
            f[b + 24..b + 28].copy_from_slice(&fl.to_le_bytes());
        };
        ph(&mut f, 0, PT_LOAD, 5, 0x1000, 0x804_9000, 0x3a1);
        ph(&mut f, 1, 4, 4, 0xd4, 0x804_80d4, 0x24);
        let read =
            |off: u64, len: usize| f.get(off as usize..off as usize + len).map(<[u8]>::to_vec);
        assert_eq!(
            loads(read, true),
            Some(vec![load(5, 0x1000, 0x804_9000, 0x3a1)])
        );
        assert_eq!(loads(read, false), None);
        // Not i386.
        let mut g = f.clone();
        g[18] = 62;
        let read =
            |off: u64, len: usize| g.get(off as usize..off as usize + len).map(<[u8]>::to_vec);
        assert_eq!(loads(read, true), None);
    }

    #[test]
    fn gadgets_are_what_the_frames_look_for() {
        use crate::arch::sigframe::{
            IA32_SIGRETURN_INSNS, IA32_SYSCALL_RET_INSNS, SIGRETURN_INSNS, SYSCALL_RET_INSN,
        };
        let p = Patch {
            at: 0x1000,
            orig: Vec::new(),
            ia32: false,
        };
        let off = |a: u64| (a - p.at) as usize;
        assert!(GADGETS[off(p.sigreturn())..].starts_with(SIGRETURN_INSNS[1]));
        assert!(GADGETS[off(p.syscall_ret())..].starts_with(&SYSCALL_RET_INSN));
        assert!(GADGETS.len() as u64 <= SLOT);
        assert_eq!(p.gadgets(), &GADGETS);
        // ia32: the `int $0x80; ret` with no words popped before the `ret`.
        let q = Patch { ia32: true, ..p };
        assert_eq!(q.gadgets(), &GADGETS_IA32);
        let (int80_ret, pops) = IA32_SYSCALL_RET_INSNS[0];
        assert_eq!(pops, 0);
        assert!(GADGETS_IA32[off(q.sigreturn())..].starts_with(IA32_SIGRETURN_INSNS[0]));
        assert!(GADGETS_IA32[off(q.syscall_ret())..].starts_with(int80_ret));
    }
}
