//! Timers: interval timers and POSIX timers.
