//! The write-lock sequence of each process's memory map (`mm->mm_lock_seq`), read
//! through a BPF task iterator: whether anything that could change a memory area's
//! VmFlags happened between two reads.
//!
//! With CONFIG_PER_VMA_LOCK (6.4 and later) the kernel counts the write locks of every
//! address space: `mmap_write_lock` makes the count odd (`mm_lock_seqcount_begin`),
//! its unlock or downgrade (`vma_end_write_all`) makes it even again. The flags of an
//! area in the tree (`vm_flags_set`, `vm_flags_clear`, `vm_flags_mod`,
//! `vm_flags_reset`) are only changed under `vma_start_write` or
//! `vma_assert_write_locked`, which require that write lock; so does every change of
//! the areas' list (mmap, munmap, mremap, brk, stack growth, madvise's flag behaviours,
//! mlock*, mprotect, mseal, prctl(PR_SET_MEMORY_MERGE), a userfaultfd's register and
//! unregister). Page faults and PAGEMAP_SCAN do not take it. So: an even count read,
//! then /proc/PID/smaps read, then the same count (same address space, same exec) read
//! again once the process is frozen means the VmFlags smaps showed are still the
//! process's. (The count is 32 bits: 2^31 write locks in between would wrap it.)
//!
//! One program, assembled here as `sys::bpf`'s are and loaded by its loader, attaches
//! to the task iterator (`bpf_iter_task`) and writes 32 bytes per task: tgid, tid,
//! the count, the address of its `mm_struct` and its `self_exec_id` (an exec between
//! the reads gives another mm and another exec count).

use super::bpf::{self, Insn, asm, reg};
use super::btf::{self, Btf};
use super::{Result, SysError};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

/// What the iterator shows of one process's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmSeq {
    /// `mm->mm_lock_seq`: odd while a writer holds the map.
    pub seq: u32,
    /// The address of the `mm_struct` (0: none, a kernel thread or a zombie).
    pub mm: u64,
    /// `task->self_exec_id` of the thread group's leader.
    pub exec_id: u64,
}

impl MmSeq {
    /// No writer holds the map now, and it has one.
    pub fn settled(&self) -> bool {
        self.mm != 0 && self.seq % 2 == 0
    }
}

/// Offsets the program loads, from BTF.
#[derive(Debug, Clone, Copy)]
pub struct TaskLayout {
    /// `struct bpf_iter__task`: meta and task.
    pub ctx_meta: i16,
    pub ctx_task: i16,
    /// `struct bpf_iter_meta`: seq.
    pub meta_seq: i16,
    /// `struct task_struct`: tgid, pid, mm, self_exec_id.
    pub tgid: i16,
    pub pid: i16,
    pub mm: i16,
    pub exec_id: i16,
    /// `struct mm_struct`: mm_lock_seq.sequence.
    pub mm_seq: i16,
}

/// Bytes the program writes per task.
const RECORD: usize = 32;

/// The program: per task, `tgid u32 | tid u32 | seq u32 | 0 u32 | mm u64 | exec u64`.
pub fn task_program(l: &TaskLayout) -> Vec<Insn> {
    use asm::*;
    use reg::*;
    vec![
        ldx64(R6, R1, l.ctx_meta),
        ldx64(R7, R1, l.ctx_task),
        // The last call of an iteration has no task.
        jeq_imm(R7, 0, 21),
        ldx64(R8, R6, l.meta_seq),
        st64_imm(R10, -32, 0),
        st64_imm(R10, -24, 0),
        st64_imm(R10, -16, 0),
        st64_imm(R10, -8, 0),
        ldx32(R1, R7, l.tgid),
        stx32(R10, -32, R1),
        ldx32(R1, R7, l.pid),
        stx32(R10, -28, R1),
        ldx64(R1, R7, l.exec_id),
        stx64(R10, -8, R1),
        ldx64(R2, R7, l.mm),
        // No address space: the record says mm 0.
        jeq_imm(R2, 0, 3),
        stx64(R10, -16, R2),
        ldx32(R1, R2, l.mm_seq),
        stx32(R10, -24, R1),
        mov(R1, R8),
        mov(R2, R10),
        add_imm(R2, -(RECORD as i32)),
        mov_imm(R3, RECORD as i32),
        call(bpf::HELPER_SEQ_WRITE),
        mov_imm(R0, 0),
        exit(),
    ]
}

/// Why the sequences cannot be read here.
pub type Why = String;

/// The loaded program's link.
pub struct MmSeqReader {
    link: OwnedFd,
}

impl MmSeqReader {
    /// Load the program (needs root, BTF, the task iterator and CONFIG_PER_VMA_LOCK,
    /// whose `mm_struct.mm_lock_seq` it reads), from ckpt's initial PID namespace (the
    /// iterator shows the kernel's own IDs).
    pub fn new() -> std::result::Result<MmSeqReader, Why> {
        if bpf::own_pid_level().map_err(|e| e.to_string())? != 0 {
            return Err("ckpt runs in a PID namespace below the initial one".into());
        }
        let b = Btf::vmlinux().map_err(|e| format!("the kernel's BTF cannot be read ({e})"))?;
        let func = b
            .find(btf::KIND_FUNC, "bpf_iter_task")
            .map_err(|_| "the kernel has no BPF task iterator (bpf_iter_task)".to_string())?;
        let l = layout(&b)?;
        let prog = bpf::load(&task_program(&l), func, "ckpt_mm_seq").map_err(|e| e.to_string())?;
        let link = bpf::link(&prog).map_err(|e| e.to_string())?;
        Ok(MmSeqReader { link })
    }

    /// Every process's (thread group leader's) address space now, by PID.
    pub fn read(&self) -> Result<BTreeMap<i32, MmSeq>> {
        let (out, _resumed) = bpf::iterate(&self.link)?;
        if out.len() % RECORD != 0 {
            return Err(SysError::Other(format!(
                "the BPF task iterator wrote {} bytes, not records of {RECORD}",
                out.len()
            )));
        }
        let u32_at =
            |r: &[u8], at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap_or_default());
        let u64_at =
            |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap_or_default());
        let mut m = BTreeMap::new();
        for r in out.chunks_exact(RECORD) {
            let (tgid, tid) = (u32_at(r, 0) as i32, u32_at(r, 4) as i32);
            if tgid != tid {
                continue;
            }
            m.insert(
                tgid,
                MmSeq {
                    seq: u32_at(r, 8),
                    mm: u64_at(r, 16),
                    exec_id: u64_at(r, 24),
                },
            );
        }
        Ok(m)
    }
}

fn layout(b: &Btf) -> std::result::Result<TaskLayout, Why> {
    let off = |s: &str, m: &str| -> std::result::Result<i16, Why> {
        let o = b.offset_of(s, m).map_err(|e| {
            if s == "mm_struct" {
                format!("{e} (a kernel without CONFIG_PER_VMA_LOCK has no write-lock count)")
            } else {
                e.to_string()
            }
        })?;
        i16::try_from(o).map_err(|_| format!("{s}.{m} is too far for a BPF load"))
    };
    Ok(TaskLayout {
        ctx_meta: off("bpf_iter__task", "meta")?,
        ctx_task: off("bpf_iter__task", "task")?,
        meta_seq: off("bpf_iter_meta", "seq")?,
        tgid: off("task_struct", "tgid")?,
        pid: off("task_struct", "pid")?,
        mm: off("task_struct", "mm")?,
        exec_id: off("task_struct", "self_exec_id")?,
        mm_seq: off("mm_struct", "mm_lock_seq.sequence")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Every jump lands inside the program; it ends by exit.
    #[test]
    fn the_programs_jumps_land_inside_it() {
        let l = TaskLayout {
            ctx_meta: 0,
            ctx_task: 8,
            meta_seq: 0,
            tgid: 8,
            pid: 12,
            mm: 16,
            exec_id: 24,
            mm_seq: 32,
        };
        let p = task_program(&l);
        assert_eq!(p.last().map(|i| i.code), Some(0x95));
        assert_eq!(p[3 + p[2].off as usize].code, 0xb7, "no task: to the end");
        assert_eq!(p[16 + p[15].off as usize].code, 0xbf, "no mm: to the write");
        for (n, i) in p.iter().enumerate() {
            if matches!(i.code, 0x15 | 0x55 | 0x25) {
                let to = n as i64 + 1 + i64::from(i.off);
                assert!(to > 0 && (to as usize) < p.len(), "jump at {n} to {to}");
            }
        }
    }

    /// A child that does what it is told, one byte at a time: `f` touches (faults in)
    /// its area's pages, `d` madvise(MADV_DONTNEED)s them, `h` madvise(MADV_HUGEPAGE)s
    /// the area, `p` mprotects it read-only, `m` maps one more page; it answers each
    /// with one byte. Raw system calls only (forked from the threaded test harness).
    struct Child {
        pid: i32,
        to: std::fs::File,
        from: std::fs::File,
    }

    impl Child {
        fn spawn() -> Child {
            let (mut a, mut b) = ([0i32; 2], [0i32; 2]);
            // SAFETY: pipe2 fills the two arrays; fork's child runs only async-signal
            // safe calls (read, write, mmap, madvise, mprotect, _exit) on memory it
            // owns, then exits.
            unsafe {
                assert_eq!(libc::pipe2(a.as_mut_ptr(), libc::O_CLOEXEC), 0);
                assert_eq!(libc::pipe2(b.as_mut_ptr(), libc::O_CLOEXEC), 0);
                let area = libc::mmap(
                    std::ptr::null_mut(),
                    64 << 12,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(area, libc::MAP_FAILED);
                let pid = libc::fork();
                assert!(pid >= 0);
                if pid == 0 {
                    let mut c = 0u8;
                    while libc::read(a[0], (&mut c as *mut u8).cast(), 1) == 1 {
                        match c {
                            b'f' => {
                                for i in 0..64 {
                                    *(area as *mut u8).add(i << 12) = 1;
                                }
                            }
                            b'd' => {
                                libc::madvise(area, 64 << 12, libc::MADV_DONTNEED);
                            }
                            b'h' => {
                                libc::madvise(area, 64 << 12, libc::MADV_HUGEPAGE);
                            }
                            b'p' => {
                                libc::mprotect(area, 64 << 12, libc::PROT_READ);
                            }
                            b'm' => {
                                libc::mmap(
                                    std::ptr::null_mut(),
                                    4096,
                                    libc::PROT_READ,
                                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                                    -1,
                                    0,
                                );
                            }
                            _ => {}
                        }
                        libc::write(b[1], (&c as *const u8).cast(), 1);
                    }
                    libc::_exit(0);
                }
                libc::munmap(area, 64 << 12);
                libc::close(a[0]);
                libc::close(b[1]);
                use std::os::fd::FromRawFd;
                Child {
                    pid,
                    to: std::fs::File::from_raw_fd(a[1]),
                    from: std::fs::File::from_raw_fd(b[0]),
                }
            }
        }

        fn ask(&mut self, c: u8) {
            self.to.write_all(&[c]).expect("write to the child");
            let mut r = [0u8];
            self.from.read_exact(&mut r).expect("the child's answer");
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            // SAFETY: the child is ours and not yet reaped.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Where this kernel has it: page faults, MADV_DONTNEED and reading smaps leave a
    /// process's count as it was; MADV_HUGEPAGE, mprotect and mmap move it on, by an
    /// even number (each a whole write lock). The detector's premise, on this kernel.
    #[test]
    fn the_count_moves_with_flag_changes_only() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let r = match MmSeqReader::new() {
            Ok(r) => r,
            Err(why) => {
                eprintln!("no mm write-lock count here: {why}");
                return;
            }
        };
        let mut c = Child::spawn();
        let now = |r: &MmSeqReader, pid| *r.read().expect("read").get(&pid).expect("listed");
        c.ask(b'f');
        let s0 = now(&r, c.pid);
        assert!(s0.settled(), "{s0:?}");
        assert_eq!(now(&r, c.pid), s0, "nothing done");
        for (what, cmd) in [("faults", b'f'), ("MADV_DONTNEED", b'd')] {
            c.ask(cmd);
            let _ = crate::sys::proc::smaps(c.pid).expect("smaps");
            assert_eq!(now(&r, c.pid), s0, "after {what} and a smaps read");
        }
        let mut last = s0;
        for (what, cmd) in [("MADV_HUGEPAGE", b'h'), ("mprotect", b'p'), ("mmap", b'm')] {
            c.ask(cmd);
            let s = now(&r, c.pid);
            assert!(
                s.settled() && s.seq != last.seq,
                "{what}: {last:?} then {s:?}"
            );
            assert_eq!((s.mm, s.exec_id), (last.mm, last.exec_id), "{what}");
            last = s;
        }
        // ckpt's own entry is there too.
        assert!(
            r.read()
                .expect("read")
                .contains_key(&(std::process::id() as i32))
        );
    }
}
