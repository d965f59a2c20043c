//! ckpt: checkpoint a running Linux process tree into one image file and restart it.
//!
//! The public API is what a program embedding ckpt (a container runtime, a job
//! scheduler, the `ckpt` command itself) needs:
//! - [`dump`]: [`dump::dump`] a process tree into an image ([`dump::DumpOptions`],
//!   [`dump::Output`], [`dump::DumpStats`]);
//! - [`restore`]: [`restore::check`] an image against this host, or
//!   [`restore::prepare`] it and [`restore::Prepared::launch`] the tree, then wait for
//!   it ([`restore::Launched`], [`restore::exit_code`]); [`restore::unlock`] gives up on
//!   an image's TCP connections;
//! - [`image`] (the file format), [`model`] (the image's data), [`arch`] (CPU rules and
//!   the [`arch::CpuPolicy`] restore applies) and [`inspect`] (descriptions of an
//!   image's contents);
//! - [`host`]: what a front end does to its own process around them (signals,
//!   inherited descriptors);
//! - [`criu`]: the `criu`-compatible front end (ckpt run as `criu`, for runc, crun,
//!   containerd and CRaC), translating CRIU's command line and RPC into the above;
//! - [`error`]: the errors of both.
//!
//! Layers (dependencies point downwards only):
//! - the `ckpt` binary on top (`main.rs` + `cli/`), using only the public API above,
//! - [`dump`] and [`restore`] beneath it, ordering the steps of the kinds of kernel
//!   object (`kinds`, crate-private),
//! - [`model`], [`arch`] and `sys` (the kernel calls, crate-private) beneath them,
//! - [`image`] at the bottom: the file format, knowing nothing of syscalls.

pub mod arch;
pub mod criu;
pub mod dump;
pub mod error;
pub mod host;
pub mod image;
pub mod inspect;
pub(crate) mod kinds;
pub mod migrate;
pub mod model;
pub(crate) mod remote;
pub mod restore;
pub(crate) mod sys;
