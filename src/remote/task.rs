//! The task that restore's system calls run in, behind one trait: the live stub, driven
//! through ptrace ([`Live`]), or a test double that records every call and answers
//! from a script ([`Recorder`], unit tests only), so restore's call sequences are tested
//! as a normal user, without a process to trace.

use crate::sys::inject::{Call, Injector};
use crate::sys::mem::RemoteMem;
use crate::sys::{self, SysError};

/// What restore needs of a task it builds: system calls and its memory.
pub(crate) trait Remote {
    /// The thread the calls run in.
    fn pid(&self) -> i32;
    /// Whether the calls reach a real process (not a test double).
    fn is_live(&self) -> bool {
        true
    }
    /// Whether the calls are only noted ([`Dry`]): they are then no restore steps
    /// (no fault points).
    fn is_dry(&self) -> bool {
        false
    }
    /// One system call; a negative result is an error naming `what`.
    fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64>;
    /// One ia32 system call (32-bit numbering and convention).
    fn call32(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64>;
    /// Independent calls in order, raw results (negative errno); the first failure of
    /// a call that is not [`Call::may_fail`] ends the batch with an error naming it.
    fn batch(&mut self, calls: &[Call]) -> sys::Result<Vec<i64>>;
    fn read(&self, addr: u64, buf: &mut [u8]) -> sys::Result<()>;
    fn write(&self, addr: u64, data: &[u8]) -> sys::Result<()>;
    /// The live task, for the few steps only a traced process can take (creating
    /// threads, final calls, userfaultfd); `None` for a test double.
    fn live(&mut self) -> Option<&mut Live>;
    /// The live task, handed over (to commit).
    fn into_live(self: Box<Self>) -> Option<Live>;
}

/// A traced stub: calls are injected through ptrace, memory goes through
/// `/proc/PID/mem` and `process_vm_*`.
pub(crate) struct Live {
    pub(crate) inj: Injector,
    pub(crate) mem: RemoteMem,
}

impl Remote for Live {
    fn pid(&self) -> i32 {
        self.inj.pid()
    }
    fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64> {
        self.inj.call(what, nr, args)
    }
    fn call32(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64> {
        self.inj.call32(what, nr, args)
    }
    fn batch(&mut self, calls: &[Call]) -> sys::Result<Vec<i64>> {
        self.inj.batch(&self.mem, calls)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> sys::Result<()> {
        self.mem.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> sys::Result<()> {
        self.mem.write(addr, data)
    }
    fn live(&mut self) -> Option<&mut Live> {
        Some(self)
    }
    fn into_live(self: Box<Self>) -> Option<Live> {
        Some(*self)
    }
}

/// A task that only notes the system calls it is asked to make (number and
/// arguments) and answers each with 0, its memory reading as zeros: plan runs a
/// restore step on it to learn exactly which calls that step will make (e.g. for a
/// seccomp filter to be run on them, `kinds::task::seccomp`), without a process.
pub(crate) struct Dry {
    pid: i32,
    calls: std::rc::Rc<std::cell::RefCell<Vec<DryCall>>>,
}

/// One call a [`Dry`] task was asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DryCall {
    pub(crate) what: String,
    pub(crate) nr: u64,
    pub(crate) args: [u64; 6],
}

impl Dry {
    /// A dry task, and the list its calls go to.
    pub(crate) fn new(pid: i32) -> (Self, std::rc::Rc<std::cell::RefCell<Vec<DryCall>>>) {
        let calls = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        (
            Self {
                pid,
                calls: calls.clone(),
            },
            calls,
        )
    }

    fn note(&self, what: &str, nr: u64, args: [u64; 6]) {
        self.calls.borrow_mut().push(DryCall {
            what: what.to_string(),
            nr,
            args,
        });
    }
}

impl Remote for Dry {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn is_live(&self) -> bool {
        false
    }
    fn is_dry(&self) -> bool {
        true
    }
    fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64> {
        self.note(what, nr, args);
        Ok(0)
    }
    fn call32(&mut self, what: &str, _nr: u64, _args: [u64; 6]) -> sys::Result<u64> {
        // Only native calls are run through filters here.
        Err(not_live(what))
    }
    fn batch(&mut self, calls: &[Call]) -> sys::Result<Vec<i64>> {
        for c in calls {
            self.note(&c.what, c.nr, c.args);
        }
        Ok(vec![0; calls.len()])
    }
    fn read(&self, _addr: u64, buf: &mut [u8]) -> sys::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, _addr: u64, _data: &[u8]) -> sys::Result<()> {
        Ok(())
    }
    fn live(&mut self) -> Option<&mut Live> {
        None
    }
    fn into_live(self: Box<Self>) -> Option<Live> {
        None
    }
}

/// The error a test double gives for a step only a live task can take.
pub(crate) fn not_live(what: &str) -> SysError {
    SysError::Other(format!("{what}: needs a live traced process"))
}

#[cfg(test)]
pub(crate) use double::{Recorded, Recorder};

#[cfg(test)]
mod double {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::{Live, Remote, not_live};
    use crate::arch::native::nr;
    use crate::sys::inject::Call;
    use crate::sys::{self, SysError};

    /// One system call a [`Recorder`] saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Recorded {
        pub(crate) what: String,
        pub(crate) nr: u64,
        pub(crate) args: [u64; 6],
        /// Made through the ia32 entry.
        pub(crate) ia32: bool,
        /// Part of a batch.
        pub(crate) batched: bool,
        /// The result it was given.
        pub(crate) result: i64,
        /// The task's memory when the call was made (what its pointer arguments saw:
        /// the scratch area is reused by later calls).
        mem: BTreeMap<u64, u8>,
    }

    impl Recorded {
        /// `len` bytes at `addr` as the call saw them.
        pub(crate) fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
            (0..len as u64)
                .map(|i| self.mem.get(&(addr + i)).copied().unwrap_or(0))
                .collect()
        }
    }

    #[derive(Default)]
    struct State {
        calls: Vec<Recorded>,
        mem: BTreeMap<u64, u8>,
        next_fd: i64,
        fail: Option<(usize, i32)>,
        answers: BTreeMap<u64, i64>,
    }

    /// A task that records calls instead of making them. Memory is a sparse byte map
    /// (unwritten bytes read as zero). Calls that create descriptors get the next free
    /// number from 100 up (`pipe2` and `socketpair` write their two into memory, as the
    /// kernel does); every other call returns 0. [`Recorder::fail_at`] makes the N-th
    /// call (0-based, batches counted call by call) fail with an errno, and
    /// [`Recorder::answer`] scripts the result of a system call number.
    ///
    /// A recorder is a handle: a clone kept by the test sees what the one given to the
    /// code under test recorded.
    #[derive(Clone)]
    pub(crate) struct Recorder {
        pid: i32,
        st: Rc<RefCell<State>>,
    }

    impl Recorder {
        pub(crate) fn new(pid: i32) -> Self {
            let st = State {
                next_fd: 100,
                ..State::default()
            };
            Self {
                pid,
                st: Rc::new(RefCell::new(st)),
            }
        }

        /// The `n`-th call (0-based) fails with `errno`.
        pub(crate) fn fail_at(self, n: usize, errno: i32) -> Self {
            self.st.borrow_mut().fail = Some((n, errno));
            self
        }

        /// Calls of system call `nr` return `result`.
        pub(crate) fn answer(self, nr: u64, result: i64) -> Self {
            self.st.borrow_mut().answers.insert(nr, result);
            self
        }

        /// The calls made, in order.
        pub(crate) fn calls(&self) -> Vec<Recorded> {
            self.st.borrow().calls.clone()
        }

        /// The names of the calls made, in order.
        pub(crate) fn names(&self) -> Vec<String> {
            self.st
                .borrow()
                .calls
                .iter()
                .map(|c| c.what.clone())
                .collect()
        }

        /// `len` bytes of memory at `addr`.
        pub(crate) fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
            let st = self.st.borrow();
            (0..len as u64)
                .map(|i| st.mem.get(&(addr + i)).copied().unwrap_or(0))
                .collect()
        }

        fn put(&self, addr: u64, data: &[u8]) {
            let mut st = self.st.borrow_mut();
            for (i, b) in data.iter().enumerate() {
                st.mem.insert(addr + i as u64, *b);
            }
        }

        fn fd(&self) -> i64 {
            let mut st = self.st.borrow_mut();
            let n = st.next_fd;
            st.next_fd += 1;
            n
        }

        /// What the kernel would answer, as far as the double knows.
        fn respond(&self, nr: u64, args: &[u64; 6]) -> i64 {
            {
                let st = self.st.borrow();
                if let Some((n, errno)) = st.fail {
                    if n == st.calls.len() {
                        return -i64::from(errno);
                    }
                }
                if let Some(&r) = st.answers.get(&nr) {
                    return r;
                }
            }
            match nr {
                nr::PIPE2 | nr::SOCKETPAIR => {
                    let at = if nr == nr::PIPE2 { args[0] } else { args[3] };
                    let (a, b) = (self.fd() as i32, self.fd() as i32);
                    self.put(at, &[a.to_le_bytes(), b.to_le_bytes()].concat());
                    0
                }
                nr::SOCKET
                | nr::OPENAT
                | nr::EVENTFD2
                | nr::TIMERFD_CREATE
                | nr::SIGNALFD4
                | nr::EPOLL_CREATE1
                | nr::INOTIFY_INIT1
                | nr::FANOTIFY_INIT
                | nr::PIDFD_OPEN
                | nr::PIDFD_GETFD
                | nr::ACCEPT4
                | nr::MEMFD_CREATE
                | nr::USERFAULTFD => self.fd(),
                // F_DUPFD_CLOEXEC gives a new descriptor; other fcntls 0.
                nr::FCNTL if args[1] == libc::F_DUPFD_CLOEXEC as u64 => self.fd(),
                nr::DUP3 => args[1] as i64,
                // Writes and sends take everything.
                nr::WRITE | nr::SENDTO => args[2] as i64,
                _ => 0,
            }
        }

        fn record(&self, what: &str, nr: u64, args: [u64; 6], ia32: bool, batched: bool) -> i64 {
            let mem = self.st.borrow().mem.clone();
            let result = self.respond(nr, &args);
            self.st.borrow_mut().calls.push(Recorded {
                what: what.to_string(),
                nr,
                args,
                ia32,
                batched,
                result,
                mem,
            });
            result
        }
    }

    fn checked(what: &str, r: i64) -> sys::Result<u64> {
        if r < 0 {
            return Err(SysError::Remote {
                what: what.to_string(),
                errno: (-r) as i32,
            });
        }
        Ok(r as u64)
    }

    impl Remote for Recorder {
        fn pid(&self) -> i32 {
            self.pid
        }
        fn is_live(&self) -> bool {
            false
        }
        fn call(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64> {
            let r = self.record(what, nr, args, false, false);
            checked(what, r)
        }
        fn call32(&mut self, what: &str, nr: u64, args: [u64; 6]) -> sys::Result<u64> {
            let r = self.record(what, nr, args, true, false);
            checked(what, r)
        }
        fn batch(&mut self, calls: &[Call]) -> sys::Result<Vec<i64>> {
            let mut out = Vec::with_capacity(calls.len());
            for c in calls {
                let r = self.record(&c.what, c.nr, c.args, false, true);
                if !c.may_fail {
                    checked(&c.what, r)?;
                }
                out.push(r);
            }
            Ok(out)
        }
        fn read(&self, addr: u64, buf: &mut [u8]) -> sys::Result<()> {
            buf.copy_from_slice(&self.bytes(addr, buf.len()));
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> sys::Result<()> {
            self.put(addr, data);
            Ok(())
        }
        fn live(&mut self) -> Option<&mut Live> {
            None
        }
        fn into_live(self: Box<Self>) -> Option<Live> {
            None
        }
    }

    #[test]
    fn recorder_hands_out_descriptors_and_fails_on_demand() {
        let mut r = Recorder::new(7).fail_at(2, libc::EMFILE);
        let seen = r.clone();
        assert_eq!(r.call("socket", nr::SOCKET, [0; 6]).ok(), Some(100));
        r.call("pipe2", nr::PIPE2, [0x1000, 0, 0, 0, 0, 0])
            .expect("pipe2");
        assert_eq!(
            seen.bytes(0x1000, 8),
            [101i32.to_le_bytes(), 102i32.to_le_bytes()].concat()
        );
        let e = r.call("eventfd2", nr::EVENTFD2, [0; 6]);
        assert!(matches!(
            e,
            Err(SysError::Remote {
                errno: libc::EMFILE,
                ..
            })
        ));
        assert_eq!(seen.names(), ["socket", "pipe2", "eventfd2"]);
        assert!(r.live().is_none());
        assert!(not_live("x").to_string().contains("live"));
    }
}
