//! AIO contexts (io_setup): a context is known to its program by its ring's address,
//! which is its ID; the ring (`/[aio]` in the memory map) holds a header (`struct
//! aio_ring`: id, nr, head, tail, magic...) and `nr` completion slots (`struct
//! io_event`, 32 bytes each). Completed events the program has not reaped yet are the
//! slots from head to tail.
//!
//! Dump reads the ring (it is not an area of the memory map in the image) and keeps the
//! events not reaped. Restore makes a context with a ring of the same size in the
//! process, moves the ring to the recorded address (`mremap`: the kernel moves the
//! context's ID with it), brings the kernel's own tail to the recorded one with reads of
//! /dev/null (submitted and reaped up to the head, submitted and left there from head
//! to tail, so that the kernel counts those slots as taken, as it did), then writes the
//! recorded events into those slots and the recorded head.

use crate::arch::native::nr;
use crate::error::{DumpResult, Problem, RestoreError, RestoreResult};
use crate::kinds::check;
use crate::kinds::unsupported;
use crate::model::{AioRing, Process};
use crate::remote::Ctx;
use crate::sys::mem::RemoteMem;
use crate::sys::proc::MapEntry;

/// `AIO_RING_MAGIC`, `AIO_RING_COMPAT_FEATURES`, `AIO_RING_INCOMPAT_FEATURES` (fs/aio.c).
const AIO_RING_MAGIC: u32 = 0xa10a_10a1;
const AIO_RING_COMPAT_FEATURES: u32 = 1;
const AIO_RING_INCOMPAT_FEATURES: u32 = 0;
/// sizeof(struct aio_ring) and sizeof(struct io_event) (linux/aio_abi.h).
pub(crate) const HEADER: u64 = 32;
pub(crate) const EVENT: u64 = 32;
/// `IOCB_CMD_PREAD` (linux/aio_abi.h), and sizeof(struct iocb).
const IOCB_CMD_PREAD: u16 = 0;
const IOCB: u64 = 64;
/// Most AIO contexts per process accepted in an image.
pub(crate) const MAX_RINGS: usize = 1024;
/// Largest ring accepted (the kernel's limit is the host's aio-max-nr, 65536 by
/// default, doubled).
pub(crate) const MAX_RING_LEN: u64 = 64 << 20;

// ---- collect (dump) ----

/// The ring of the AIO context mapped at `m`, read from the stopped process.
pub(crate) fn collect(pid: i32, m: &MapEntry, mem: &RemoteMem) -> DumpResult<AioRing> {
    let refuse = |why: String| {
        unsupported(
            pid,
            format!(
                "memory area {:#x}-{:#x} is the ring of an AIO context (io_setup) {why}; \
                 not supported",
                m.start, m.end
            ),
        )
    };
    let len = m.end - m.start;
    let mut h = [0u8; HEADER as usize];
    mem.read(m.start, &mut h)?;
    let word = |i: usize| u32::from_le_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]);
    let (nr_ev, head, tail) = (word(1), word(2), word(3));
    if m.offset != 0
        || word(4) != AIO_RING_MAGIC
        || word(5) != AIO_RING_COMPAT_FEATURES
        || word(6) != AIO_RING_INCOMPAT_FEATURES
        || u64::from(word(7)) != HEADER
        || u64::from(nr_ev) != ring_events(len)
        || tail >= nr_ev
    {
        return Err(refuse(format!(
            "whose header is not what the kernel writes (magic {:#x}, {nr_ev} events, \
             tail {tail}, in {len} bytes)",
            word(4)
        )));
    }
    if len > MAX_RING_LEN {
        return Err(refuse(format!("of {len} bytes, more than restore accepts")));
    }
    let events = read_slots(mem, m.start, nr_ev, head % nr_ev, tail)?;
    Ok(AioRing {
        addr: m.start,
        len,
        nr: nr_ev,
        head,
        tail,
        events,
        ino: m.inode,
    })
}

/// The slots of a ring at `addr` from `head` to `tail` (both below `nr`), in order.
fn read_slots(mem: &RemoteMem, addr: u64, nr_ev: u32, head: u32, tail: u32) -> DumpResult<Vec<u8>> {
    let slot = |i: u32| addr + HEADER + u64::from(i) * EVENT;
    let mut out = Vec::new();
    let mut read = |from: u32, to: u32| -> DumpResult<()> {
        let mut b = vec![0u8; ((to - from) as u64 * EVENT) as usize];
        mem.read(slot(from), &mut b)?;
        out.extend_from_slice(&b);
        Ok(())
    };
    if head <= tail {
        read(head, tail)?;
    } else {
        read(head, nr_ev)?;
        read(0, tail)?;
    }
    Ok(out)
}

/// The events a ring of `len` bytes holds (as the kernel sizes it: whole pages).
pub(crate) fn ring_events(len: u64) -> u64 {
    len.saturating_sub(HEADER) / EVENT
}

/// Requests in flight are not visible anywhere; a request that completes while the tree
/// is stopped moves its ring's tail. Read again once the tree is collected: a context
/// whose ring changed meanwhile is refused, naming it. (A request still in flight after
/// that, e.g. a poll request waiting for its file, cannot be seen.)
pub(crate) fn check_settled(procs: &[Process]) -> DumpResult<()> {
    for p in procs.iter().filter(|p| !p.aio.is_empty()) {
        let mem = RemoteMem::open(p.pid)?;
        for r in &p.aio {
            let mut h = [0u8; 16];
            mem.read(r.addr, &mut h)?;
            let tail = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
            if tail != r.tail {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "the AIO context {:#x} (io_setup) had requests in flight: its ring's \
                         tail moved from {} to {tail} while the process was stopped \
                         (restore cannot submit them again); not supported",
                        r.addr, r.tail
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A ring mapped by two processes of the tree is a child's copy of its parent's, made
/// by fork: the kernel gives the child no context for it (io_submit there fails), which
/// restore could not make again. Refused, naming both.
pub(crate) fn refuse_inherited(procs: &[Process]) -> DumpResult<()> {
    let mut seen: std::collections::BTreeMap<u64, i32> = Default::default();
    for p in procs {
        for r in &p.aio {
            if let Some(&owner) = seen.get(&r.ino) {
                return Err(unsupported(
                    p.pid,
                    format!(
                        "memory area {:#x}-{:#x} is the ring of an AIO context of process \
                         {owner}, copied by fork (the kernel gives the child no context for \
                         it); not supported",
                        r.addr,
                        r.addr + r.len
                    ),
                ));
            }
            seen.insert(r.ino, p.pid);
        }
    }
    Ok(())
}

// ---- checks (plan) ----

/// Rings page-aligned, of a size the kernel makes, with head, tail and the events
/// between them agreeing, inside the address space, apart from each other and from
/// the memory areas.
pub(crate) fn check_rings(p: &Process, problems: &mut Vec<Problem>) {
    let bad = |r: &AioRing| {
        let n = u64::from(r.nr);
        let unreaped = (u64::from(r.tail) + n - u64::from(r.head) % n.max(1)) % n.max(1);
        r.addr % 4096 != 0
            || r.len % 4096 != 0
            || r.len == 0
            || r.len > MAX_RING_LEN
            || r.addr
                .checked_add(r.len)
                .is_none_or(|e| e > super::TASK_SIZE)
            || n != ring_events(r.len)
            || r.tail >= r.nr
            || r.events.len() as u64 != unreaped * EVENT
            || p.vmas
                .iter()
                .any(|v| v.start < r.addr + r.len && r.addr < v.end)
            || p.aio
                .iter()
                .filter(|o| !std::ptr::eq(*o, r))
                .any(|o| o.addr < r.addr + r.len && r.addr < o.addr + o.len)
    };
    if p.aio.len() > MAX_RINGS || p.aio.iter().any(bad) {
        check::p(
            problems,
            "malformed",
            format!("process {} has invalid AIO contexts", p.pid),
        );
    }
}

/// The number of CPUs a list like /sys/devices/system/cpu/possible's ("0-3,8") names.
pub(crate) fn count_cpus(list: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        n += b.checked_sub(a)? + 1;
    }
    Some(n)
}

/// This host's possible CPUs (the kernel sizes AIO rings by them).
pub(crate) fn possible_cpus() -> Option<u64> {
    count_cpus(&std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?)
}

/// Each ring can be made again with its size on a host with `cpus` possible CPUs: the
/// kernel gives a context at least 4 events per possible CPU, doubled, plus 2.
pub(crate) fn check_ring_sizes(p: &Process, cpus: u64, problems: &mut Vec<Problem>) {
    for r in &p.aio {
        let least = 2 * (4 * cpus) + 2;
        let n = setup_events(r.len);
        if 2 * n.max(4 * cpus) + 2 > ring_events(r.len) {
            check::p(
                problems,
                "host-differs",
                format!(
                    "process {}: the AIO context {:#x} has a ring of {} events; with {cpus} \
                     possible CPUs this host makes rings of at least {least}",
                    p.pid, r.addr, r.nr
                ),
            );
        }
    }
}

// ---- restore (stage) ----

/// The `nr_events` to ask io_setup for so that the kernel makes a ring of `len` bytes:
/// it takes at least 4 per possible CPU, doubles that, adds 2 and rounds the ring up to
/// whole pages, so (events - 2) / 2 gives that ring back (on a host with as many CPUs).
pub(crate) fn setup_events(len: u64) -> u64 {
    ring_events(len).saturating_sub(2) / 2
}

/// Make the process's AIO contexts again (see the module's description).
pub(crate) fn restore_rings(cx: &mut Ctx<'_>) -> RestoreResult<()> {
    let proc_ = cx.proc_;
    if proc_.aio.is_empty() {
        return Ok(());
    }
    let path = cx.put_cstr(0, b"/dev/null")?;
    let null = cx.call(
        "open /dev/null (AIO)",
        nr::OPENAT,
        [
            libc::AT_FDCWD as u64,
            path,
            (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    )?;
    for r in &proc_.aio {
        restore_ring(cx, r, null)?;
    }
    cx.close(null)?;
    Ok(())
}

/// Scratch layout: the context ID io_setup writes, the byte the reads read into, the
/// iocbs, their pointers, the events reaped.
const AT_CTX: u64 = 0;
const AT_BUF: u64 = 64;
const AT_IOCBS: u64 = 4096;
const BATCH: u64 = 256;
const AT_PTRS: u64 = AT_IOCBS + BATCH * IOCB;
const AT_EVENTS: u64 = AT_PTRS + BATCH * 8;

fn restore_ring(cx: &mut Ctx<'_>, r: &AioRing, null: u64) -> RestoreResult<()> {
    let at = |what: &str| format!("AIO context {:#x}: {what}", r.addr);
    let ctx_at = cx.put(AT_CTX, &[0u8; 8])?;
    cx.call(
        &at("io_setup"),
        nr::IO_SETUP,
        [setup_events(r.len), ctx_at, 0, 0, 0, 0],
    )?;
    let mut b = [0u8; 8];
    cx.read(ctx_at, &mut b)?;
    let made = u64::from_le_bytes(b);
    let mut h = [0u8; 16];
    cx.read(made, &mut h)?;
    let got = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if got != r.nr {
        return Err(RestoreError::Stage(format!(
            "{}: io_setup made a ring of {got} events, not {} as at dump (a host with \
             another number of CPUs?)",
            at("ring size"),
            r.nr
        )));
    }
    if made != r.addr {
        cx.call(
            &at("mremap the ring"),
            nr::MREMAP,
            [
                made,
                r.len,
                r.len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                r.addr,
                0,
            ],
        )?;
    }
    let id = r.addr;
    // The kernel's tail to the head (each read reaped at once), then to the tail (the
    // reads left in the ring, where the recorded events go).
    let n = r.nr;
    let head = r.head % n;
    let unreaped = (r.tail + n - head) % n;
    submit_reads(
        cx,
        id,
        null,
        u64::from(head),
        true,
        &at("reads up to the head"),
    )?;
    submit_reads(
        cx,
        id,
        null,
        u64::from(unreaped),
        false,
        &at("reads up to the tail"),
    )?;
    cx.read(id, &mut h)?;
    let tail = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if tail != r.tail {
        return Err(RestoreError::Stage(format!(
            "{}: the ring's tail is {tail}, not {}",
            at("tail"),
            r.tail
        )));
    }
    // The events, slot by slot from the head (wrapping), then the recorded head.
    for (k, ev) in r.events.chunks(EVENT as usize).enumerate() {
        let slot = (u64::from(head) + k as u64) % u64::from(n);
        cx.write(id + HEADER + slot * EVENT, ev)?;
    }
    cx.write(id + 8, &r.head.to_le_bytes())?;
    Ok(())
}

/// The `nr` of the ring of context `id`.
fn ring_nr(cx: &Ctx<'_>, id: u64) -> RestoreResult<u64> {
    let mut h = [0u8; 8];
    cx.read(id, &mut h)?;
    Ok(u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
}

/// `count` one-byte reads of /dev/null (`null`) submitted to context `id`, in batches;
/// with `reap`, each batch is reaped (io_getevents) before the next.
fn submit_reads(
    cx: &mut Ctx<'_>,
    id: u64,
    null: u64,
    count: u64,
    reap: bool,
    what: &str,
) -> RestoreResult<()> {
    let buf = cx.scratch() + AT_BUF;
    let mut iocbs = Vec::new();
    let mut ptrs = Vec::new();
    for i in 0..BATCH {
        let mut c = [0u8; IOCB as usize];
        c[16..18].copy_from_slice(&IOCB_CMD_PREAD.to_le_bytes());
        c[20..24].copy_from_slice(&(null as u32).to_le_bytes());
        c[24..32].copy_from_slice(&buf.to_le_bytes());
        c[32..40].copy_from_slice(&1u64.to_le_bytes());
        iocbs.extend_from_slice(&c);
        ptrs.extend_from_slice(&(cx.scratch() + AT_IOCBS + i * IOCB).to_le_bytes());
    }
    cx.put(AT_IOCBS, &iocbs)?;
    let ptrs_at = cx.put(AT_PTRS, &ptrs)?;
    let events_at = cx.scratch() + AT_EVENTS;
    // Reaped batches leave room in the ring even with half its slots counted on other
    // CPUs (the kernel's per-CPU slot counts).
    let most = if reap {
        BATCH.min((ring_nr(cx, id)? / 2).max(1))
    } else {
        BATCH
    };
    let mut left = count;
    while left > 0 {
        let k = left.min(most);
        let done = cx.call(what, nr::IO_SUBMIT, [id, k, ptrs_at, 0, 0, 0])?;
        if done != k {
            return Err(RestoreError::Stage(format!(
                "{what}: io_submit took {done} of {k} requests"
            )));
        }
        if reap {
            let got = cx.call(what, nr::IO_GETEVENTS, [id, k, k, events_at, 0, 0])?;
            if got != k {
                return Err(RestoreError::Stage(format!(
                    "{what}: io_getevents reaped {got} of {k} events"
                )));
            }
        }
        left -= k;
    }
    Ok(())
}
