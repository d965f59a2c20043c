//! Unit tests of the descriptor checks (plan): pure structure checks on records built in
//! memory, host checks on temporary files and sockets the tests own.

mod belownet;
mod epoll_inotify;
mod external;
mod fanotify;
mod file;
mod inet;
mod inflight;
mod lock;
mod pipe_fifo;
mod table;
mod tty;
mod unix;
mod uring;
