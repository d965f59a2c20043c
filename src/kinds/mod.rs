//! One module per kind of kernel object ckpt checkpoints, each holding its collect (dump),
//! its checks (plan) and its restore (stage) together. dump/ and restore/ only order the
//! steps; the dispatch over descriptor kinds is one match per phase, in [`fd`].

pub(crate) mod check;
pub(crate) mod fd;
pub(crate) mod mem;
pub(crate) mod task;
