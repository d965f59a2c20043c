//! `ckpt inspect`: show everything an image holds.

use std::collections::BTreeMap;
use std::io::Read;

use ckpt::arch::native::{SyscallState, syscall_state};
use ckpt::arch::xsave;
use ckpt::image::{ImageReader, tag};
use ckpt::model::{Checkpoint, Process, Thread};
use ckpt::restore::read_checkpoint;

fn prot(p: u32, shared: bool) -> String {
    let mut s = String::new();
    s.push(if p & 1 != 0 { 'r' } else { '-' });
    s.push(if p & 2 != 0 { 'w' } else { '-' });
    s.push(if p & 4 != 0 { 'x' } else { '-' });
    s.push(if shared { 's' } else { 'p' });
    s
}

fn size(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{}K", b >> 10)
    }
}

pub fn inspect<R: Read>(input: R, json: bool) -> Result<(), String> {
    let mut reader = ImageReader::new(input).map_err(|e| e.to_string())?;
    let ckpt = read_checkpoint(&mut reader).map_err(|e| e.to_string())?;
    // Read the rest (checking every record) and count stored bytes per address.
    // (pid, address) -> bytes stored
    let mut stored: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    let mut records = 1u64;
    let mut owner = -1i64;
    while let Some(rec) = reader.next_record().map_err(|e| e.to_string())? {
        records += 1;
        if rec.tag == tag::PAGES_PID {
            owner = rec.arg as i64;
        }
        if rec.tag == tag::PAGES {
            *stored.entry((owner, rec.arg)).or_default() += rec.payload.len() as u64;
        }
        if rec.tag == tag::PAGES_LZ4 || rec.tag == tag::PAGES_ZSTD {
            // Pages as they are in memory (the record holds them compressed).
            let len = rec
                .payload
                .first_chunk::<4>()
                .map_or(0, |b| u64::from(u32::from_le_bytes(*b)));
            *stored.entry((owner, rec.arg)).or_default() += len;
        }
    }
    let image_bytes = reader.offset();
    if json {
        let mut v = serde_json::to_value(&ckpt).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "image".into(),
                serde_json::json!({
                    "format_version": ckpt::image::VERSION,
                    "bytes": image_bytes,
                    "records": records,
                    "page_bytes": stored.values().sum::<u64>(),
                }),
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let i = &ckpt.info;
    println!(
        "Image: format version {}, {} bytes in {} records",
        ckpt::image::VERSION,
        image_bytes,
        records
    );
    println!(
        "  made by ckpt {} on host {} (kernel {}) at unix time {}",
        i.tool_version, i.hostname, i.kernel_release, i.created_unix
    );
    if ckpt.own_pid_namespace {
        println!(
            "  the tree had a PID namespace of its own (IDs below are as it saw them; its \
             root was PID {} on the dump host); restore makes a new one",
            i.root_pid
        );
    }
    if let Some(e) = &ckpt.external_pid_namespace {
        println!(
            "  the tree ran in a PID namespace made outside it, pid:[{}], recorded as \
             external {} (IDs below are as it saw them; its root was PID {} on the dump \
             host); restore builds it in the namespace given with --inherit-fd N:{} or \
             --join-ns pid:PATH",
            e.inode, e.key, i.root_pid, e.key
        );
    } else if ckpt.pid_namespace_init_outside {
        println!(
            "  the tree ran in a PID namespace whose init was not part of it (IDs below \
             are as it saw them; its root was PID {} on the dump host); restore makes a \
             new one, whose init is a reaper of ckpt's",
            i.root_pid
        );
    }
    print_arch(&ckpt.arch);
    for p in &ckpt.processes {
        print_process(&ckpt, p, &stored);
    }
    Ok(())
}

/// The architecture header: xsave, AMX permission, CPU features of the dump host.
fn print_arch(a: &ckpt::arch::ArchHeader) {
    println!("Architecture: {} {:?}", a.machine, a.abis);
    println!(
        "  xsave: {} bytes, components in use {:#x} (xcr0 {:#x}); vDSO {} bytes (hash {:016x}), vvar {} bytes",
        a.xsave_size, a.xfeatures_used, a.xcr0, a.vdso_size, a.vdso_hash, a.vvar_size
    );
    let names = |mask: u64| -> String {
        let v: Vec<String> = (0..64u32)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| format!("{} ({i})", xsave::component_name(i)))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("  xsave components in use: {}", names(a.xfeatures_used));
    let layout: Vec<String> = a
        .xsave_layout
        .iter()
        .map(|&(i, o, s)| format!("{} at {o}+{s}", xsave::component_name(i)))
        .collect();
    println!(
        "  xsave layout of the dump host (standard format, offset+size): {}",
        if layout.is_empty() {
            "not recorded".to_string()
        } else {
            layout.join(", ")
        }
    );
    let tiledata = 1u64 << xsave::XFEATURE_AMX_TILEDATA;
    println!(
        "  AMX permission (ARCH_REQ_XCOMP_PERM): {} (permitted xsave components {:#x})",
        if a.xcomp_perm & tiledata != 0 {
            "granted"
        } else {
            "not granted"
        },
        a.xcomp_perm
    );
    println!(
        "  CPU features of the dump host ({}): {}",
        a.cpu_features.len(),
        if a.cpu_features.is_empty() {
            "not recorded".to_string()
        } else {
            a.cpu_features.join(" ")
        }
    );
}

/// One process: identity, credentials, memory areas, descriptors, signals, threads.
fn print_process(ckpt: &Checkpoint, p: &Process, stored: &BTreeMap<(i64, u64), u64>) {
    let stored_in = |pid: i32, start: u64, end: u64| -> u64 {
        stored
            .range((i64::from(pid), start)..(i64::from(pid), end))
            .map(|(_, v)| *v)
            .sum()
    };
    println!(
        "Process {} ({}): parent {}, group {}, session {}",
        p.pid,
        String::from_utf8_lossy(&p.comm),
        p.ppid,
        p.pgid,
        p.sid
    );
    if let Some(exe) = &p.mm.exe {
        println!("  exe {}", String::from_utf8_lossy(&exe.path));
    }
    let gone = |removed: bool| if removed { " (removed)" } else { "" };
    println!(
        "  cwd {}{}  root {}{}  umask {:04o}  personality {:#x}",
        String::from_utf8_lossy(&p.cwd),
        gone(p.cwd_removed.is_some()),
        String::from_utf8_lossy(&p.root),
        gone(p.root_removed.is_some()),
        p.umask,
        p.personality
    );
    let c = &p.creds;
    println!(
        "  uid {:?} gid {:?} groups {:?} caps eff {:#x} prm {:#x} inh {:#x} amb {:#x} \
         bnd {:#x}",
        c.uid, c.gid, c.groups, c.cap_eff, c.cap_prm, c.cap_inh, c.cap_amb, c.cap_bnd
    );
    println!(
        "  securebits {} ({:#x})  no_new_privs {}",
        ckpt::inspect::securebits_names(c.securebits),
        c.securebits,
        c.no_new_privs
    );
    let total: u64 = p.vmas.iter().map(|v| v.len()).sum();
    let st: u64 = stored
        .iter()
        .filter(|((o, _), _)| *o == i64::from(p.pid))
        .map(|(_, v)| *v)
        .sum();
    println!(
        "  Memory: {} areas, {} mapped, {} stored",
        p.vmas.len(),
        size(total),
        size(st)
    );
    for v in &p.vmas {
        let kind = ckpt::inspect::describe_vma_kind(v);
        println!(
            "    {:012x}-{:012x} {} {:>7} {:>7} stored  {:<5} {} [{}]",
            v.start,
            v.end,
            prot(v.prot, v.shared),
            size(v.len()),
            size(stored_in(p.pid, v.start, v.end)),
            kind,
            String::from_utf8_lossy(&v.name),
            v.vmflags.join(" ")
        );
    }
    for r in &p.aio {
        println!(
            "    {:012x}-{:012x} AIO context: ring of {} events, head {} tail {}, {} completed \
             not reaped",
            r.addr,
            r.addr + r.len,
            r.nr,
            r.head,
            r.tail,
            r.events.len() / 32
        );
    }
    println!("  Files:");
    for f in &p.fds {
        let d = ckpt::inspect::describe_fd(ckpt, f);
        println!("    {:>3}{} {}", f.fd, if f.cloexec { "*" } else { " " }, d);
    }
    println!("  Signals:");
    for s in p.sigactions.iter().filter(|s| s.handler != 0) {
        let h = match s.handler {
            1 => "ignored".to_string(),
            h => format!("handler {h:#x}"),
        };
        println!(
            "    {:>2}: {} flags {:#x} mask {:#x}",
            s.signo, h, s.flags, s.mask
        );
    }
    println!(
        "    pending (process): {:?}",
        p.shared_pending.iter().map(|s| s.signo).collect::<Vec<_>>()
    );
    for t in &p.threads {
        print_thread(t);
    }
}

/// One thread: registers, interrupted system call, signal stack, rseq, debug registers.
fn print_thread(t: &Thread) {
    let r = &t.arch.regs;
    println!(
        "  Thread {}: rip {:#x} rsp {:#x} {:?}, blocked {:#x}, pending {:?}",
        t.tid,
        r.rip,
        r.rsp,
        t.arch.abi(),
        t.sigmask,
        t.pending.iter().map(|s| s.signo).collect::<Vec<_>>()
    );
    match syscall_state(r) {
        SyscallState::None => {}
        SyscallState::Restart { nr } => {
            println!("    interrupted in system call {nr}; restarted on restore")
        }
        SyscallState::RestartBlock { nr } => {
            println!("    interrupted in system call {nr} (restart block); re-issued on restore")
        }
    }
    println!(
        "    sigaltstack {:#x}+{} flags {}; rseq {:?}; robust list {:#x}; clear_child_tid {:#x}",
        t.sigaltstack.sp,
        t.sigaltstack.size,
        t.sigaltstack.flags,
        t.rseq.map(|r| r.addr),
        t.robust_list,
        t.clear_child_tid
    );
    let dr = t.arch.debugregs;
    if dr[5] != 0 {
        println!(
            "    debug registers: DR0-3 {:#x} {:#x} {:#x} {:#x} DR6 {:#x} DR7 {:#x}",
            dr[0], dr[1], dr[2], dr[3], dr[4], dr[5]
        );
    }
}
