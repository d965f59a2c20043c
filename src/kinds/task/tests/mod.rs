//! Unit tests of the task checks (plan): the tree, threads, credentials, attributes and
//! signals of processes built in memory; host checks on PIDs no host has, this test's
//! own PID and temporary directories.

mod attrs;
mod creds;
mod signals;
mod threads;
mod tree;
