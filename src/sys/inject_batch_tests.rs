//! The batch executor (`Injector::batch` with `arch::native::BATCH_CODE`) against a real
//! process: results in order, failures that may happen passed on as results, and a
//! failure that may not ending the batch with an error naming the call, with the calls
//! after it not run. (A unit test: `sys` is private to the crate.)

use std::process::{Command, Stdio};

use crate::arch::native::{BATCH_CODE, nr};
use crate::sys::inject::{Call, Injector, find_gadget};
use crate::sys::mem::RemoteMem;
use crate::sys::ptrace::{self, Stop};
use crate::sys::{SysError, proc as procfs};

/// The umask of `pid` from /proc.
fn umask(pid: i32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(v.trim(), 8).unwrap()
}

#[test]
fn batches_run_in_order_and_stop_at_the_first_failure_that_may_not_happen() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id() as i32;
    ptrace::seize(pid, libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL).expect("seize");
    ptrace::interrupt(pid).expect("interrupt");
    assert!(matches!(ptrace::wait(pid).unwrap(), Stop::Event(_)));
    let base = ptrace::get_regs(pid).unwrap();
    let mem = RemoteMem::open(pid).unwrap();
    // A syscall instruction in the vDSO for the single calls.
    let vdso = procfs::maps(pid)
        .unwrap()
        .into_iter()
        .find(|m| m.path == b"[vdso]")
        .expect("a vDSO");
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    mem.read(vdso.start, &mut code).unwrap();
    let gadget = find_gadget(&code, vdso.start).expect("syscall in the vDSO");
    let mut inj = Injector::new(pid, gadget, base);
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let area = inj
        .call(
            "mmap",
            nr::MMAP,
            [
                0,
                16384,
                rwx,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    mem.write(area, &BATCH_CODE).unwrap();
    // Room for 3 entries: a batch of 5 takes two stops.
    inj.set_executor(area, area + 4096, 3);
    let umask_call = |m: u64| Call::new(format!("umask({m:o})"), nr::UMASK, [m, 0, 0, 0, 0, 0]);
    let bad_close = Call::new("close(-1)", nr::CLOSE, [u64::MAX, 0, 0, 0, 0, 0]);
    let before = umask(pid);
    let r = inj
        .batch(
            &mem,
            &[
                umask_call(0o022),
                umask_call(0o077),
                bad_close.clone().may_fail(),
                umask_call(0o027),
                Call::new("getpid", nr::GETPID, [0; 6]),
            ],
        )
        .unwrap();
    assert_eq!(
        r,
        vec![
            i64::from(before),
            0o022,
            -(libc::EBADF as i64),
            0o077,
            i64::from(pid)
        ]
    );
    assert_eq!(umask(pid), 0o027);
    assert_eq!(inj.count, 1 + 5, "the mmap and five batched calls ran");

    // A failure that may not happen: named, and nothing after it runs.
    let e = inj
        .batch(
            &mem,
            &[umask_call(0o002), bad_close.clone(), umask_call(0o077)],
        )
        .unwrap_err();
    match &e {
        SysError::Remote { what, errno } => {
            assert_eq!((what.as_str(), *errno), ("close(-1)", libc::EBADF));
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(umask(pid), 0o002, "the call after the failure did not run");

    // Without an executor the same batch gives the same results, one stop per call.
    inj.clear_executor();
    let e2 = inj
        .batch(&mem, &[umask_call(0o022), bad_close, umask_call(0o077)])
        .unwrap_err();
    assert_eq!(e2.to_string(), e.to_string());
    assert_eq!(umask(pid), 0o022);

    // The task still runs normally afterwards.
    ptrace::set_regs(pid, &base).unwrap();
    ptrace::detach(pid, 0).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
