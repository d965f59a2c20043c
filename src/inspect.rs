//! What `ckpt inspect` says of an image's contents, described from the model: each
//! kind describes its own (`kinds::*`), this module is the public entry point the
//! command line prints from.

use crate::model::{Checkpoint, Fd, Vma};

/// One descriptor as `inspect` shows it: what it is, then its locks.
pub fn describe_fd(ckpt: &Checkpoint, f: &Fd) -> String {
    crate::kinds::fd::describe(ckpt, f)
}

/// A memory area's kind as `inspect` shows it ("anon", "file", "vdso"...).
pub fn describe_vma_kind(v: &Vma) -> &'static str {
    crate::kinds::mem::describe_kind(v)
}

/// Securebits by name, as `setpriv --securebits` spells them.
pub fn securebits_names(bits: u32) -> String {
    crate::kinds::task::creds::secbits_names(bits)
}
