//! From a `struct page` pointer to the kernel address of the page's bytes, on a kernel
//! that hides both bases it needs: the direct map's (`page_offset_base`: every physical
//! page at `page_offset_base + phys`) and the page array's (`vmemmap_base`: the
//! `struct page` of frame `pfn` at `vmemmap_base + pfn * sizeof(struct page)`). With
//! memory randomization (CONFIG_RANDOMIZE_MEMORY) both move at each boot, and without
//! CONFIG_KALLSYMS_ALL (and /proc/kcore) nothing lists them. The bytes a TCP client
//! sent that wait on a socket nobody accepted yet sit in such pages (`sys::tcpqueue`).
//!
//! Both are found from one page of ckpt's own whose frame number it knows
//! (/proc/self/pagemap, which shows frame numbers to root) and whose bytes it chose (a
//! random cookie):
//!
//! * `vmemmap_base`, exactly: the page is spliced into a pipe (vmsplice without
//!   SPLICE_F_GIFT: the pipe's buffer points at ckpt's page itself), whose
//!   `pipe_inode_info` the task file iterator finds (the file's `private_data`); its
//!   first buffer's `page`, less `pfn * sizeof(struct page)`, is the base;
//! * `page_offset_base`: it is 1 GiB aligned (the randomization moves regions by whole
//!   PUDs), and the `pipe_inode_info` (allocated by kmalloc: the direct map) lies above
//!   it by its physical address, below the end of RAM (/proc/iomem). Of the few
//!   candidates `floor(that address, 1 GiB) - k GiB`, from the lowest up, the base is
//!   the one where a read of `candidate + pfn * 4096` gives the cookie (the reads are
//!   `bpf_probe_read_kernel`, which fail where nothing is mapped; going up from the
//!   lowest, no read goes above the cookie's own page in the direct map).
//!
//! Both bases are checked: 1 GiB aligned, and the cookie read back through the result.
//! Anything else is an error (the caller refuses), never a guess.

use super::bpf::SockReader;
use super::btf::Btf;
use super::tcpqueue::{Pointer, file_pointer};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// A present pagemap entry's page frame number.
const PFN_MASK: u64 = (1 << 55) - 1;
const PAGEMAP_PRESENT: u64 = 1 << 63;

/// Where this boot keeps pages and their `struct page`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectMap {
    pub page_offset_base: u64,
    pub vmemmap_base: u64,
    /// sizeof(struct page), from BTF.
    pub page_struct: u64,
}

impl DirectMap {
    /// Find both bases (root, BTF and the BPF iterators needed; `r` reads kernel memory).
    pub fn find(b: &Btf, r: &SockReader) -> std::result::Result<DirectMap, String> {
        let page_struct = u64::from(b.size_of("page").map_err(|e| e.to_string())?);
        let bufs_at = u64::from(
            b.offset_of("pipe_inode_info", "bufs")
                .map_err(|e| e.to_string())?,
        );
        let buf_page = u64::from(
            b.offset_of("pipe_buffer", "page")
                .map_err(|e| e.to_string())?,
        );
        let buf_offset = u64::from(
            b.offset_of("pipe_buffer", "offset")
                .map_err(|e| e.to_string())?,
        );
        let buf_len = u64::from(
            b.offset_of("pipe_buffer", "len")
                .map_err(|e| e.to_string())?,
        );
        if page_struct == 0 {
            return Err("struct page has no size in the kernel's BTF".into());
        }
        // The cookie page: the page-aligned middle of a buffer of three pages.
        let mut buf = vec![0u8; 3 * PAGE as usize];
        let skip = (PAGE as usize - (buf.as_ptr() as usize % PAGE as usize)) % PAGE as usize;
        let page = buf
            .get_mut(skip..skip + PAGE as usize)
            .ok_or("no page-aligned page in the buffer")?;
        let mut cookie = [0u8; 32];
        if super::tmpfile::getrandom(&mut cookie) != cookie.len() {
            return Err("getrandom gave too few bytes".into());
        }
        page[..32].copy_from_slice(&cookie);
        let vaddr = page.as_ptr() as u64;
        // (The pipe, holding the page where it is, lives until the search ends.)
        let (rd, wr) = rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        splice_page(&wr, page)?;
        let pfn = frame_of(vaddr)?;
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", rd.as_raw_fd()))
            .map_err(|e| format!("stat of ckpt's pipe: {e}"))?
            .ino();
        let pipe = file_pointer(b, std::process::id() as i32, ino, Pointer::Private)?;
        let u64_at = |a: u64| -> std::result::Result<u64, String> {
            let v = r.read(a, 8).map_err(|e| e.to_string())?;
            Ok(u64::from_le_bytes(
                v.get(..8)
                    .and_then(|s| s.try_into().ok())
                    .ok_or("a short read")?,
            ))
        };
        let bufs = u64_at(pipe + bufs_at)?;
        let first = r
            .read(bufs, (buf_len + 4) as usize)
            .map_err(|e| e.to_string())?;
        let u32_in = |o: u64| -> u32 {
            first
                .get(o as usize..o as usize + 4)
                .and_then(|s| s.try_into().ok())
                .map_or(u32::MAX, u32::from_le_bytes)
        };
        if u32_in(buf_offset) != 0 || u64::from(u32_in(buf_len)) != PAGE {
            return Err("the pipe's first buffer is not the page spliced into it".into());
        }
        let struct_page = u64_at(bufs + buf_page)?;
        let vmemmap_base = struct_page.wrapping_sub(pfn.wrapping_mul(page_struct));
        if vmemmap_base % GIB != 0 {
            return Err(format!(
                "the page array's base found ({vmemmap_base:#x}) is not 1 GiB aligned"
            ));
        }
        let ram_end = ram_end()?;
        let top = pipe - pipe % GIB;
        let reach = ram_end.div_ceil(GIB);
        for k in (0..=reach).rev() {
            let Some(c) = top.checked_sub(k * GIB) else {
                continue;
            };
            let Some(at) = c.checked_add(pfn * PAGE) else {
                continue;
            };
            if r.read(at, cookie.len()).ok().as_deref() == Some(&cookie[..]) {
                return Ok(DirectMap {
                    page_offset_base: c,
                    vmemmap_base,
                    page_struct,
                });
            }
        }
        Err(format!(
            "no 1 GiB-aligned base below {top:#x} (RAM ends at {ram_end:#x}) shows ckpt's \
             page where the direct map would"
        ))
    }

    /// The kernel address of the bytes of the page whose `struct page` is at `page`.
    pub fn page_address(&self, page: u64) -> std::result::Result<u64, String> {
        let off = page
            .checked_sub(self.vmemmap_base)
            .filter(|o| o % self.page_struct == 0)
            .ok_or_else(|| format!("{page:#x} is not a struct page of the page array"))?;
        (off / self.page_struct)
            .checked_mul(PAGE)
            .and_then(|p| p.checked_add(self.page_offset_base))
            .ok_or_else(|| format!("the page at {page:#x} is beyond the direct map"))
    }
}

/// Splice `page` (one page of ckpt's memory) into pipe `wr`, the pipe referring to the
/// page itself (no SPLICE_F_GIFT), whole.
fn splice_page(wr: &std::os::fd::OwnedFd, page: &[u8]) -> std::result::Result<(), String> {
    let iov = libc::iovec {
        iov_base: page.as_ptr() as *mut libc::c_void,
        iov_len: page.len(),
    };
    // SAFETY: `iov` describes `page`, live and readable for the whole call (and after:
    // the pipe holds a reference on the page, the kernel's, not on our borrow); vmsplice
    // without SPLICE_F_GIFT only reads the memory.
    let n = unsafe { libc::vmsplice(wr.as_raw_fd(), &iov, 1, 0) };
    if n < 0 {
        return Err(format!("vmsplice: {}", std::io::Error::last_os_error()));
    }
    if n as usize != page.len() {
        return Err(format!("vmsplice took {n} of {} bytes", page.len()));
    }
    Ok(())
}

/// The page frame number of ckpt's page at `vaddr` (present: it was just written).
fn frame_of(vaddr: u64) -> std::result::Result<u64, String> {
    let mut f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| format!("open /proc/self/pagemap: {e}"))?;
    let mut e = [0u8; 8];
    f.seek(SeekFrom::Start(vaddr / PAGE * 8))
        .and_then(|_| f.read_exact(&mut e))
        .map_err(|x| format!("read /proc/self/pagemap: {x}"))?;
    let e = u64::from_le_bytes(e);
    let pfn = e & PFN_MASK;
    if e & PAGEMAP_PRESENT == 0 || pfn == 0 {
        return Err("/proc/self/pagemap shows no frame number (not root?)".into());
    }
    Ok(pfn)
}

/// The end of the highest RAM range (/proc/iomem, real addresses for root).
fn ram_end() -> std::result::Result<u64, String> {
    let s = std::fs::read_to_string("/proc/iomem").map_err(|e| format!("read /proc/iomem: {e}"))?;
    let end = s
        .lines()
        .filter(|l| l.ends_with(": System RAM"))
        .filter_map(|l| l.split(' ').next()?.split_once('-'))
        .filter_map(|(_, e)| u64::from_str_radix(e, 16).ok())
        .max()
        .unwrap_or(0);
    if end == 0 {
        return Err("/proc/iomem shows no RAM addresses (not root?)".into());
    }
    Ok(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A struct page pointer turns into its page's address; one off the array is
    /// refused.
    #[test]
    fn page_addresses_follow_the_bases() {
        let d = DirectMap {
            page_offset_base: 0xffff_8880_0000_0000,
            vmemmap_base: 0xffff_ea00_0000_0000,
            page_struct: 64,
        };
        assert_eq!(
            d.page_address(0xffff_ea00_0000_0000 + 5 * 64),
            Ok(0xffff_8880_0000_0000 + 5 * 4096)
        );
        assert!(d.page_address(0xffff_ea00_0000_0000 + 65).is_err());
        assert!(d.page_address(0x1000).is_err());
    }

    /// Where this kernel has it (root, BTF): both bases found, 1 GiB aligned, and a
    /// page of this process read back through them from its struct page (found again
    /// through another pipe).
    #[test]
    fn the_bases_read_a_page_back() {
        if !rustix::process::geteuid().is_root()
            || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        {
            return;
        }
        let b = Btf::vmlinux().expect("btf");
        let r = SockReader::new().expect("the reader");
        let d = DirectMap::find(&b, &r).expect("the bases");
        eprintln!("this boot: {d:x?}");
        assert_eq!(d.page_offset_base % GIB, 0);
        assert_eq!(d.vmemmap_base % GIB, 0);
        let mut buf = vec![0u8; 3 * 4096];
        let skip = (4096 - (buf.as_ptr() as usize % 4096)) % 4096;
        let page = &mut buf[skip..skip + 4096];
        page[100..111].copy_from_slice(b"hello page!");
        let pfn = frame_of(page.as_ptr() as u64).expect("pfn");
        let at = d
            .page_address(d.vmemmap_base + pfn * d.page_struct)
            .expect("address");
        assert_eq!(r.read(at + 100, 11).expect("read"), b"hello page!");
    }
}
