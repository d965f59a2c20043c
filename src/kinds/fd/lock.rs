//! File locks: POSIX, OFD and flock locks held by the processes.
