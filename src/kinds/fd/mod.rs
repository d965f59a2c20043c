//! Descriptors: the table of each process, descriptors shared between processes, and the
//! one dispatch per phase over [`FdKind`](crate::model::FdKind).

pub(crate) mod anon;
pub(crate) mod epoll;
pub(crate) mod external;
pub(crate) mod fifo;
pub(crate) mod file;
pub(crate) mod inotify;
pub(crate) mod lock;
pub(crate) mod pipe;
pub(crate) mod tcp;
pub(crate) mod tty;
pub(crate) mod udp;
pub(crate) mod unix;
