//! The task: everything a process or thread is besides its memory and descriptors.

pub(crate) mod attrs;
pub(crate) mod creds;
pub(crate) mod extpidns;
pub(crate) mod padding;
pub(crate) mod pidns;
pub(crate) mod query;
pub(crate) mod seccomp;
pub(crate) mod share;
pub(crate) mod signals;
#[cfg(test)]
mod tests;
pub(crate) mod threads;
pub(crate) mod timers;
pub(crate) mod tree;
