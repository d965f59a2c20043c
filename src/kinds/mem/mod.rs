//! Memory: the areas of a process (what each mapping is, how it is checked and mapped
//! again) and the pages in them.

pub(crate) mod pages;
pub(crate) mod shmem;

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::kinds::check;
use crate::kinds::fd::file::check_file;
use crate::model::{Process, Vma, VmaKind};
use crate::sys::proc as procfs;

// ---- checks (plan) ----

/// Highest user address + 1 with 4-level paging on x86-64.
pub(crate) const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const MAX_VMAS: usize = 65_530;

/// Structural checks of a process's memory areas: not too many, sorted, page-aligned,
/// not overlapping, in range, with page counts and guard ranges inside them.
pub(crate) fn check_areas(proc_: &Process, problems: &mut Vec<Problem>) {
    if proc_.vmas.len() > MAX_VMAS {
        check::p(problems, "malformed", "too many memory areas".into());
    }
    let mut prev_end = 0;
    for v in &proc_.vmas {
        let ok = v.start % 4096 == 0
            && v.end % 4096 == 0
            && v.start < v.end
            && v.end <= TASK_SIZE
            && v.start >= prev_end
            && v.offset % 4096 == 0
            && v.prot & !7 == 0
            && v.pages_present <= (v.end - v.start) / 4096
            && v.guard_ranges.iter().all(|g| {
                g.0 % 4096 == 0 && g.1 % 4096 == 0 && g.0 < g.1 && g.0 >= v.start && g.1 <= v.end
            });
        if !ok {
            check::p(
                problems,
                "malformed",
                format!(
                    "memory area {:#x}-{:#x} is invalid (unaligned, overlapping or out of range)",
                    v.start, v.end
                ),
            );
        }
        prev_end = v.end;
    }
}

/// The files the process maps are there and unchanged (each checked once); a deleted
/// mapped file's directory exists.
pub(crate) fn check_mapped_files(proc_: &Process, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for v in &proc_.vmas {
        match &v.kind {
            VmaKind::File { file } if seen.insert(file.path.clone()) => {
                check_file(file, "mapped file", problems);
            }
            VmaKind::DeletedMap { file, .. } => {
                let dir = procfs::bytes_path(&file.path).parent().map(|d| d.is_dir());
                if dir != Some(true) && seen.insert(file.path.clone()) {
                    check::p(
                        problems,
                        "file-missing",
                        format!(
                            "memory area {:#x}-{:#x}: the directory of deleted file {} does \
                             not exist",
                            v.start,
                            v.end,
                            check::show(&file.path)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// What `inspect` calls a memory area's kind.
pub(crate) fn describe_kind(v: &Vma) -> &'static str {
    match &v.kind {
        VmaKind::Anon => "anon",
        VmaKind::AnonShared => "shmem",
        VmaKind::SysvShm { .. } => "sysv",
        VmaKind::File { .. } => "file",
        VmaKind::MemfdMap { .. } => "memfd",
        VmaKind::DeletedMap { .. } => "deleted",
        VmaKind::Vdso => "vdso",
        VmaKind::Vvar => "vvar",
    }
}
