//! Per-architecture state and rules: the register set and its ABI, the xsave area, debug
//! registers, the arch header that records what a task used, and how a stopped task is
//! made to run a system call or resume an interrupted one.
//!
//! Everything arch-specific that `dump` and `restore` need goes through the items
//! re-exported here, so another architecture is an addition (a sibling of `x86`), not a
//! rewrite. Only x86-64 (with ia32 tasks) exists today.

pub mod check;
pub mod cpu;
pub mod debugreg;
pub mod sigframe;
pub mod x86;
pub mod xsave;

/// The architecture this ckpt is built for. Everything outside arch/ names its items
/// through `arch::native` (`arch::native::nr::OPENAT`, `arch::native::BATCH_CODE`...),
/// never `arch::x86`: a port adds a sibling module and one `cfg` line here.
#[cfg(target_arch = "x86_64")]
pub use x86 as native;

pub use check::{
    BadCpuPolicy, CpuPolicy, Problem, ProblemCode, amx_permission_grantable, build_arch_header,
    check_arch, check_host, check_thread, requirements_manifest,
};
pub use cpu::{HOST_MASK_ENV, HostCaps, MaskError};
pub use debugreg::{Watchpoint, check_debugregs, check_debugregs_with_limit, watchpoints};
/// The native register set (`user_regs_struct`), by its port-neutral name.
pub use x86::X86Regs as Regs;
pub use x86::{Abi, ArchHeader, ThreadArchState, X86Regs};
pub use xsave::{XsaveLayout, components_in_use, convert_xsave};
