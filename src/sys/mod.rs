//! The only layer that talks to the kernel: ptrace, remote system calls in a stopped
//! task, /proc readers, process_vm_*, clone3. `unsafe` lives here, each block commented
//! with the invariant that makes it sound.

#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod btf;
pub(crate) mod cgroup;
pub(crate) mod deferred;
pub(crate) mod directmap;
pub(crate) mod extpidns;
pub(crate) mod file;
pub(crate) mod inetraw;
pub(crate) mod inject;
pub(crate) mod ipc;
pub(crate) mod mem;
pub(crate) mod mmseq;
pub(crate) mod mount;
pub(crate) mod netlink;
pub(crate) mod netlock;
pub(crate) mod ns;
pub(crate) mod packet;
pub(crate) mod pathfd;
pub(crate) mod probe;
pub(crate) mod proc;
pub(crate) mod process;
pub(crate) mod ptrace;
pub(crate) mod rtnl;
pub(crate) mod seqpacket;
pub(crate) mod sockdiag;
pub(crate) mod sockerr;
pub(crate) mod tcp;
pub(crate) mod tcpqueue;
pub(crate) mod tmpfile;
pub(crate) mod transient;
pub(crate) mod tty;
pub(crate) mod udp;
pub(crate) mod uffd;
pub(crate) mod userns;
pub(crate) mod wptrack;

#[cfg(test)]
mod inject_batch_tests;

use std::io;

/// An error from a system call or /proc access, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: remote system call returned {errno}", errno = errno_name(*.errno))]
    Remote { what: String, errno: i32 },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, SysError>;

impl SysError {
    pub fn os(what: impl Into<String>) -> Self {
        SysError::Os {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        SysError::Os {
            what: what.into(),
            source,
        }
    }
    /// The errno, if this error carries one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysError::Os { source, .. } => source.raw_os_error(),
            SysError::Remote { errno, .. } => Some(*errno),
            SysError::Other(_) => None,
        }
    }
}

/// A readable name for an errno value ("ENOENT (No such file or directory)").
pub fn errno_name(errno: i32) -> String {
    let msg = io::Error::from_raw_os_error(errno).to_string();
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        _ => "",
    };
    if name.is_empty() {
        msg
    } else {
        format!("{name} ({msg})")
    }
}

/// Convert a libc return value (-1 = error in errno) into a Result.
pub(crate) fn check(ret: libc::c_long, what: impl FnOnce() -> String) -> Result<libc::c_long> {
    if ret < 0 {
        Err(SysError::os(what()))
    } else {
        Ok(ret)
    }
}

/// A rustix error as the same [`SysError::Os`] a failed libc call gives.
pub(crate) fn rerr(what: impl Into<String>, e: rustix::io::Errno) -> SysError {
    SysError::io(what, io::Error::from_raw_os_error(e.raw_os_error()))
}
