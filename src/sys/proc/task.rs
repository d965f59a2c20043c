//! A process and its threads: /proc/PID/status ([`Status`]) and stat ([`Stat`]), auxv,
//! personality, timer slack, thread IDs and children, PID and other namespaces, whether
//! a signal is quiet, and the POSIX timers.

use std::fs;

use super::read;
use crate::sys::{Result, SysError};

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
    /// SigBlk, SigIgn and SigCgt: the blocked, ignored and caught signals.
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
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
            "SigBlk" => s.sig_blk = hex(v)?,
            "SigIgn" => s.sig_ign = hex(v)?,
            "SigCgt" => s.sig_cgt = hex(v)?,
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

    /// The task's new mappings go at random addresses (`PF_RANDOMIZE` among the flags,
    /// field 9): set at exec unless ADDR_NO_RANDOMIZE or kernel.randomize_va_space=0,
    /// and inherited across fork.
    pub fn randomized(&self) -> bool {
        const PF_RANDOMIZE: u64 = 0x0040_0000;
        self.field(9) & PF_RANDOMIZE != 0
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

/// /proc/PID/oom_score_adj.
pub fn oom_score_adj(pid: i32) -> Result<i32> {
    let b = read(format!("/proc/{pid}/oom_score_adj"))?;
    String::from_utf8_lossy(&b)
        .trim()
        .parse()
        .map_err(|_| SysError::Other(format!("cannot parse /proc/{pid}/oom_score_adj")))
}

/// The kernel function thread `tid` sleeps in (/proc/TID/wchan: a symbol name, or "0"
/// when it runs or the kernel does not say).
pub fn wchan(tid: i32) -> Result<String> {
    let b = read(format!("/proc/{tid}/wchan"))?;
    Ok(String::from_utf8_lossy(&b).trim().to_string())
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

/// Whether thread `tid` of `pid` runs with a shadow stack (CET), from the
/// x86_Thread_features line of its status (absent on kernels and CPUs without it).
pub fn shadow_stack(pid: i32, tid: i32) -> Result<bool> {
    let text = read(format!("/proc/{pid}/task/{tid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("x86_Thread_features:"))
        .any(|v| v.split_whitespace().any(|f| f == "shstk")))
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

/// The resource limits of process `pid` from /proc/PID/limits, in its order (the
/// RLIMIT_* numbers, 0..16): (soft, hard), `u64::MAX` for unlimited. Readable for any
/// process, where prlimit needs CAP_SYS_RESOURCE for one of another user.
pub fn limits(pid: i32) -> Result<Vec<(u64, u64)>> {
    let text = read(format!("/proc/{pid}/limits"))?;
    let text = String::from_utf8_lossy(&text);
    let bad = || SysError::Other(format!("cannot parse /proc/{pid}/limits"));
    let value = |v: &str| -> Result<u64> {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| bad())
        }
    };
    let mut out = Vec::new();
    // "Limit  Soft Limit  Hard Limit  Units" header; the name column is 26 wide.
    for line in text.lines().skip(1) {
        let rest = line.get(26..).ok_or_else(bad)?;
        let mut w = rest.split_whitespace();
        let (Some(soft), Some(hard)) = (w.next(), w.next()) else {
            return Err(bad());
        };
        out.push((value(soft)?, value(hard)?));
    }
    Ok(out)
}

/// The name of thread `tid` of process `pid` (/proc/PID/task/TID/comm, without its
/// newline).
pub fn thread_comm(pid: i32, tid: i32) -> Result<Vec<u8>> {
    let mut b = read(format!("/proc/{pid}/task/{tid}/comm"))?;
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    Ok(b)
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
    parse_timers(&String::from_utf8_lossy(&text))
        .ok_or_else(|| SysError::Other(format!("cannot parse /proc/{pid}/timers")))
}

/// The entries of a /proc/PID/timers text (None: not in the kernel's format). The
/// kernel prints `notify: KIND/WHO.N` with KIND `signal` or `none` and WHO `tid` for
/// SIGEV_THREAD_ID (a thread is signalled: glibc's SIGEV_THREAD timers are such, sent
/// to its helper thread) or `pid` (the process).
fn parse_timers(text: &str) -> Option<Vec<ProcTimer>> {
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
                    id: v.parse().ok()?,
                    ..Default::default()
                });
            }
            "signal" => {
                let c = cur.as_mut()?;
                let (sig, val) = v.split_once('/')?;
                c.signo = sig.parse().ok()?;
                c.sigev_value = u64::from_str_radix(val, 16).ok()?;
            }
            "notify" => {
                let c = cur.as_mut()?;
                let (kind, who) = v.split_once('/')?;
                let base = match kind {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    _ => return None,
                };
                let (whom, n) = who.split_once('.')?;
                c.notify = match whom {
                    "tid" => base | libc::SIGEV_THREAD_ID,
                    "pid" => base,
                    _ => return None,
                };
                c.notify_tid = if whom == "tid" { n.parse().ok()? } else { 0 };
            }
            "ClockID" => {
                let c = cur.as_mut()?;
                c.clock = v.parse().ok()?;
            }
            _ => {}
        }
    }
    out.extend(cur);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::proc::smaps;

    #[test]
    fn timers_signalling_a_thread_keep_their_thread() {
        let text = "ID: 0\nsignal: 32/00007f0000001000\nnotify: signal/tid.4321\n\
                    ClockID: 1\nID: 1\nsignal: 14/0000000000000000\n\
                    notify: signal/pid.4320\nClockID: 0\nID: 2\nsignal: 0/0000000000000000\n\
                    notify: none/pid.4320\nClockID: 0\n";
        let t = parse_timers(text).expect("parse");
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].signo, t[0].notify, t[0].notify_tid, t[0].clock),
            (32, libc::SIGEV_THREAD_ID, 4321, 1)
        );
        assert_eq!((t[1].notify, t[1].notify_tid), (libc::SIGEV_SIGNAL, 0));
        assert_eq!((t[2].notify, t[2].notify_tid), (libc::SIGEV_NONE, 0));
        assert!(parse_timers("ID: 0\nnotify: thread/tid.1\n").is_none());
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

    #[test]
    fn own_limits_from_proc_are_what_prlimit_says() {
        let me = std::process::id() as i32;
        let l = limits(me).unwrap();
        assert_eq!(l.len(), 16, "{l:?}");
        for (r, got) in l.iter().enumerate() {
            let want = crate::sys::process::prlimit_get(0, r as u32).unwrap();
            assert_eq!(*got, want, "resource {r}");
        }
        let comm = thread_comm(me, me).unwrap();
        assert_eq!(comm, stat(me).unwrap().comm);
    }
}
