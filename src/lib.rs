//! ckpt: checkpoint a running Linux process tree into one image file and restart it.
//!
//! Layers (dependencies point downwards only):
//! - [`cli`] on top (lives in `main.rs` + `cli/`),
//! - [`dump`] and [`restore`] beneath it,
//! - [`model`], [`arch`] and [`sys`] beneath them,
//! - [`image`] at the bottom: the file format, knowing nothing of syscalls.

pub mod arch;
pub mod dump;
pub mod error;
pub mod image;
pub mod inspect;
pub(crate) mod kinds;
pub mod model;
pub(crate) mod remote;
pub mod restore;
pub mod sys;
