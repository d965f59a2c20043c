//! The arch header and the checks that compare it with this host before anything is
//! created: word size, xsave components, CPU features, debug registers, and the
//! machine-readable requirements manifest (`ckpt check --json`).
//!
//! [`check_host`] runs one named step per kind of requirement (machine, ia32, the
//! header's consistency, xsave components, AMX permission, CPU features);
//! [`check_thread`] checks each thread's saved state, [`check_arch`] both. The tests,
//! on synthetic CPUs, are in `check/tests.rs`.
//!
//! # Policy
//!
//! [`CpuPolicy`] decides how much of the dump host's CPU the restore host must have.
//! What each kind of requirement does under each policy:
//!
//! | requirement                                   | strict | compatible (default) | ignore |
//! |-----------------------------------------------|--------|----------------------|--------|
//! | machine is x86_64                             | refuse | refuse               | refuse |
//! | ia32 emulation, when a task is 32-bit         | refuse | refuse               | refuse |
//! | xsave components in use (non-init state)      | refuse | refuse               | refuse |
//! | xsave components enabled but not in use       | refuse | allow (left in init state) | allow |
//! | component size differs (state not convertible)| refuse | refuse               | refuse |
//! | MXCSR bits this CPU lacks                     | refuse | refuse               | refuse |
//! | critical CPU features of the dump host        | refuse | refuse               | allow  |
//! | AMX permission granted, tile data not in use  | refuse | refuse               | allow (not granted) |
//! | informational CPU features of the dump host   | refuse | allow                | allow  |
//! | debug register the kernel would reject        | refuse | refuse               | refuse |
//!
//! Critical features ([`super::cpu::FeatureClass::Critical`]) are the instruction-set
//! extensions a program can execute — SSE3..SSE4.2, AVX, AVX2, FMA, BMI1/2, AVX-512*, AMX,
//! SHA, VAES, RTM, XSAVEC... — because glibc, ld.so (its lazy-binding trampoline uses
//! XSAVEC when present) and many libraries choose their code once, at startup, from
//! CPUID; on a host without them the restored program would later die of SIGILL.
//! Informational ones (ERMS, FSRM, XSAVES, LA57...) are performance hints or kernel-only.
//! An xsave component whose saved content is all zeros is in its architectural init state
//! and does not count as in use: it is simply left in that state here.
//!
//! AMX permission: a process that asked for AMX tile data (`ARCH_REQ_XCOMP_PERM`,
//! recorded in the header's `xcomp_perm`) is asked again at restore, which only a host
//! whose kernel enabled AMX (XCR0 bits 17-18) grants. Like a critical CPU feature, a
//! permission this host cannot grant is refused unless `--cpu-policy=ignore`, under
//! which the process is restored without it (an AMX instruction would then kill it
//! with SIGILL). Tile data *in use* is an xsave component in use: refused under every
//! policy.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Value, json};

use super::cpu::{self, HostCaps};
use super::debugreg::check_debugregs_with_limit;
use super::x86::{Abi, ArchHeader, ThreadArchState};
use super::xsave::{
    self, XFEATURE_AMX_TILEDATA, XsaveLayout, component_description, component_list,
    component_name, components_in_use, convert_xsave, missing_components_problem,
};

/// What a problem is about, for scripts (`ckpt check --json`).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemCode {
    /// The image was made on another kind of machine.
    MachineMismatch,
    /// A task is 32-bit and this kernel cannot run 32-bit programs.
    Ia32Unsupported,
    /// This kernel has not enabled XSAVE at all.
    XsaveUnavailable,
    /// An xsave component the task uses (or, under `strict`, had) is absent here.
    XsaveComponentMissing,
    /// A component's size differs between the hosts: the state cannot be converted.
    XsaveLayoutMismatch,
    /// A saved xsave area is malformed.
    XsaveCorrupt,
    /// MXCSR has bits this CPU does not support.
    MxcsrUnsupported,
    /// CPU features of the dump host are missing here.
    CpuFeatureMissing,
    /// The arch header contradicts itself.
    HeaderCorrupt,
    /// The tasks were granted AMX permission, which this host cannot grant.
    AmxPermissionUnavailable,
    /// A debug register slot has an invalid type (I/O).
    DebugregType,
    /// A debug register slot has an invalid length.
    DebugregLength,
    /// A watchpoint address is not aligned to its length.
    DebugregAlignment,
    /// A watchpoint address is not a user-space address.
    DebugregAddress,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::MachineMismatch => "machine-mismatch",
            ProblemCode::Ia32Unsupported => "ia32-unsupported",
            ProblemCode::XsaveUnavailable => "xsave-unavailable",
            ProblemCode::XsaveComponentMissing => "xsave-component-missing",
            ProblemCode::XsaveLayoutMismatch => "xsave-layout-mismatch",
            ProblemCode::XsaveCorrupt => "xsave-corrupt",
            ProblemCode::MxcsrUnsupported => "mxcsr-unsupported",
            ProblemCode::CpuFeatureMissing => "cpu-feature-missing",
            ProblemCode::HeaderCorrupt => "header-corrupt",
            ProblemCode::AmxPermissionUnavailable => "amx-permission-unavailable",
            ProblemCode::DebugregType => "debugreg-type",
            ProblemCode::DebugregLength => "debugreg-length",
            ProblemCode::DebugregAlignment => "debugreg-alignment",
            ProblemCode::DebugregAddress => "debugreg-address",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason the image cannot be restored here.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ProblemCode,
    /// For people: says what, in words a user understands, and what to do where possible.
    pub message: String,
    /// For scripts: the things involved (feature names, component names, registers).
    pub items: Vec<String>,
}

impl Problem {
    pub fn new(code: ProblemCode, message: String, items: Vec<String>) -> Problem {
        Problem {
            code,
            message,
            items,
        }
    }

    /// The same problem, said of thread `tid`.
    pub fn in_thread(mut self, tid: i32) -> Problem {
        self.message = format!("thread {tid}: {}", self.message);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// How much of the dump host's CPU the restore host must have (`--cpu-policy`). See the
/// module documentation for what each policy refuses.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CpuPolicy {
    /// Every CPU feature and every xsave component the dump host had must exist here:
    /// glibc's ifunc choices (and any program's own CPUID dispatch) were made from them.
    Strict,
    /// Refuse when an xsave component in use is missing, or a *critical* CPU feature the
    /// dump host had (AVX, AVX2, AVX-512*, AMX, FMA, BMI...: code a program may have
    /// selected at startup and would run later); ignore informational features.
    #[default]
    Compatible,
    /// Only the xsave components in use (the state itself) must exist here; the user
    /// takes responsibility for code paths that need missing CPU features.
    Ignore,
}

impl CpuPolicy {
    pub const ALL: [CpuPolicy; 3] = [CpuPolicy::Strict, CpuPolicy::Compatible, CpuPolicy::Ignore];

    pub fn as_str(self) -> &'static str {
        match self {
            CpuPolicy::Strict => "strict",
            CpuPolicy::Compatible => "compatible",
            CpuPolicy::Ignore => "ignore",
        }
    }
}

impl fmt::Display for CpuPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `--cpu-policy` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CPU policy `{0}` (expected strict, compatible or ignore)")]
pub struct BadCpuPolicy(pub String);

impl FromStr for CpuPolicy {
    type Err = BadCpuPolicy;

    fn from_str(s: &str) -> Result<CpuPolicy, BadCpuPolicy> {
        CpuPolicy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BadCpuPolicy(s.to_string()))
    }
}

/// The arch header for a dump of `threads` on `host`: ABIs, the dump host's XCR0, xsave
/// layout and CPU features, and the xsave components the threads use. `vdso_*`,
/// `vvar_size` and `xcomp_perm` are left zero for dump to fill.
///
/// `host` should be unmasked ([`HostCaps::detect`]); the header records the dump host's
/// real XCR0 and feature set (masked features included) since the task may have used them.
pub fn build_arch_header(threads: &[&ThreadArchState], host: &HostCaps) -> ArchHeader {
    let mut abis = Vec::new();
    for t in threads {
        if !abis.contains(&t.abi()) {
            abis.push(t.abi());
        }
    }
    let layout = XsaveLayout::of_host(host);
    let xfeatures_used = threads.iter().fold(0u64, |acc, t| {
        if t.xsave.is_empty() {
            return acc;
        }
        acc | components_in_use(&t.xsave, &layout).unwrap_or_else(|_| t.xstate_bv())
    });
    let mut cpu_features: Vec<String> = host
        .features
        .iter()
        .chain(host.masked_features.iter())
        .map(|s| s.to_string())
        .collect();
    cpu_features.sort();
    cpu_features.dedup();
    ArchHeader {
        machine: host.machine.clone(),
        abis,
        xcr0: host.kernel_xcr0,
        xfeatures_used,
        xsave_size: host.xsave_size,
        xsave_layout: host.xsave_layout.clone(),
        vdso_size: 0,
        vdso_hash: 0,
        vvar_size: 0,
        cpu_features,
        xsave_align64: host.xsave_align64,
        xcomp_perm: 0,
    }
}

fn join_words(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Compare the image's arch header with this host under `policy`; every problem found,
/// none when the image's tasks can run here. See the module documentation for the policy.
/// The steps, in this order: machine (nothing else is checked on another one), ia32,
/// the header's own consistency, xsave components, AMX permission, CPU features.
pub fn check_host(hdr: &ArchHeader, host: &HostCaps, policy: CpuPolicy) -> Vec<Problem> {
    if let Some(p) = machine_problem(hdr, host) {
        return vec![p];
    }
    let mut out = Vec::new();
    out.extend(ia32_problem(hdr, host));
    let layout = XsaveLayout::for_image(hdr, host);
    out.extend(header_layout_problems(hdr, &layout));
    out.extend(xsave_problems(hdr, host, policy, &layout));
    out.extend(amx_permission_problem(hdr, host, policy));
    out.extend(cpu_feature_problems(hdr, host, policy));
    out
}

/// The image was made on another kind of machine.
fn machine_problem(hdr: &ArchHeader, host: &HostCaps) -> Option<Problem> {
    if hdr.machine == "x86_64" {
        return None;
    }
    Some(Problem::new(
        ProblemCode::MachineMismatch,
        format!(
            "the image was made on a {} machine; this host is {}",
            if hdr.machine.is_empty() {
                "unknown"
            } else {
                &hdr.machine
            },
            host.machine
        ),
        vec![hdr.machine.clone()],
    ))
}

/// The image has a 32-bit task and this host cannot run one.
fn ia32_problem(hdr: &ArchHeader, host: &HostCaps) -> Option<Problem> {
    if !hdr.abis.contains(&Abi::Ia32) || host.ia32_supported {
        return None;
    }
    let why = if host.masked_ia32 {
        "this host's CPU mask says it cannot run them"
    } else {
        "this kernel cannot run them (IA32 emulation is not built in, or is switched off with ia32_emulation=0)"
    };
    Some(Problem::new(
        ProblemCode::Ia32Unsupported,
        format!("the image has a 32-bit (ia32) task; {why}"),
        vec!["ia32".to_string()],
    ))
}

/// The header must describe where every component in use was saved, inside its area.
fn header_layout_problems(hdr: &ArchHeader, layout: &XsaveLayout) -> Vec<Problem> {
    let mut out = Vec::new();
    let used = hdr.xfeatures_used;
    let undescribed: Vec<u32> = (2..64u32)
        .filter(|&i| used & (1 << i) != 0 && layout.get(i).is_none())
        .collect();
    if !undescribed.is_empty() {
        out.push(Problem::new(
            ProblemCode::HeaderCorrupt,
            format!(
                "the image's arch header is inconsistent: {} in use but not in its xsave layout",
                component_list(undescribed.iter().fold(0, |m, i| m | (1 << i)))
            ),
            undescribed.iter().map(|&i| component_name(i)).collect(),
        ));
    }
    for &(i, o, s) in &hdr.xsave_layout {
        if u64::from(o) + u64::from(s) > u64::from(hdr.xsave_size) {
            out.push(Problem::new(
                ProblemCode::HeaderCorrupt,
                format!(
                    "the image's arch header is inconsistent: xsave component {i} ends at byte {} of a {}-byte area",
                    u64::from(o) + u64::from(s),
                    hdr.xsave_size
                ),
                vec![component_name(i)],
            ));
        }
    }
    out
}

/// The xsave components the image's tasks used (and, under `strict`, those its dump
/// host had enabled) must be enabled here, each the same size.
fn xsave_problems(
    hdr: &ArchHeader,
    host: &HostCaps,
    policy: CpuPolicy,
    layout: &XsaveLayout,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let used = hdr.xfeatures_used;
    if host.kernel_xcr0 == 0 {
        if used != 0 || hdr.xcr0 != 0 {
            out.push(Problem::new(
                ProblemCode::XsaveUnavailable,
                "this CPU or kernel does not support XSAVE, so the task's FPU and vector state cannot be restored".to_string(),
                vec!["xsave".to_string()],
            ));
        }
    } else {
        let missing_used = used & !host.xcr0 & !3;
        if missing_used != 0 {
            out.push(missing_components_problem(
                missing_used,
                host,
                "the image's task used",
            ));
        }
        if policy == CpuPolicy::Strict {
            let missing_enabled = hdr.xcr0 & !used & !host.xcr0 & !3;
            if missing_enabled != 0 {
                let mut p =
                    missing_components_problem(missing_enabled, host, "the image's dump host had");
                p.message.push_str(
                    " (the task does not use them; --cpu-policy=compatible would restore it)",
                );
                out.push(p);
            }
        }
        for i in 2..64u32 {
            if used & (1 << i) == 0 || host.xcr0 & (1 << i) == 0 {
                continue;
            }
            if let (Some((_, s)), Some((_, hs))) = (layout.get(i), host.component(i)) {
                if s != hs {
                    out.push(Problem::new(
                        ProblemCode::XsaveLayoutMismatch,
                        format!(
                            "{} (xsave component {i}) is {s} bytes in the image but {hs} bytes on this CPU; the state cannot be converted",
                            component_description(i)
                        ),
                        vec![component_name(i)],
                    ));
                }
            }
        }
    }
    out
}

/// AMX permission: asked again at restore; tile data in use is an xsave component
/// ([`xsave_problems`]).
fn amx_permission_problem(hdr: &ArchHeader, host: &HostCaps, policy: CpuPolicy) -> Option<Problem> {
    if policy == CpuPolicy::Ignore || amx_permission_grantable(hdr, host) {
        return None;
    }
    let why = if host.masked_xcr0 & (1 << XFEATURE_AMX_TILEDATA) != 0 {
        "this host's CPU mask hides AMX"
    } else {
        "this CPU or kernel does not offer AMX"
    };
    Some(Problem::new(
        ProblemCode::AmxPermissionUnavailable,
        format!(
            "the image's processes were granted AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM)), \
             which this host cannot grant: {why}; a program that asked for AMX would die of an \
             illegal instruction when it uses it (use --cpu-policy=ignore to restore without \
             the permission)"
        ),
        vec![component_name(XFEATURE_AMX_TILEDATA)],
    ))
}

/// The dump host's CPU features this host lacks: critical ones unless `ignore`,
/// informational ones under `strict`.
fn cpu_feature_problems(hdr: &ArchHeader, host: &HostCaps, policy: CpuPolicy) -> Vec<Problem> {
    let mut out = Vec::new();
    if policy == CpuPolicy::Ignore {
        return out;
    }
    let missing: Vec<&String> = hdr.cpu_features.iter().filter(|f| !host.has(f)).collect();
    let (critical, informational): (Vec<&String>, Vec<&String>) =
        missing.into_iter().partition(|f| cpu::is_critical(f));
    if !critical.is_empty() {
        let (msg, items) = describe_missing_features(&critical, host);
        out.push(Problem::new(
            ProblemCode::CpuFeatureMissing,
            format!(
                "{msg}; programs and libraries such as glibc choose code paths from these features when they start, so the restored program would likely die of an illegal instruction (use --cpu-policy=ignore to restore anyway)"
            ),
            items,
        ));
    }
    if policy == CpuPolicy::Strict && !informational.is_empty() {
        let (msg, items) = describe_missing_features(&informational, host);
        out.push(Problem::new(
            ProblemCode::CpuFeatureMissing,
            format!(
                "{msg}; --cpu-policy=strict requires every CPU feature the dump host had (--cpu-policy=compatible checks only the ones programs rely on)"
            ),
            items,
        ));
    }
    out
}

/// The message and items of a problem for the missing features `names`: their pretty
/// names, and whether this CPU lacks them or this host's CPU mask hides them.
fn describe_missing_features(names: &[&String], host: &HostCaps) -> (String, Vec<String>) {
    let pretty: Vec<String> = names
        .iter()
        .map(|n| cpu::pretty_name(n).to_string())
        .collect();
    let masked: Vec<String> = names
        .iter()
        .filter(|n| cpu::feature(n).is_some_and(|f| host.masked_features.contains(f.name)))
        .map(|n| cpu::pretty_name(n).to_string())
        .collect();
    let lacks = if masked.len() == names.len() {
        "which this host's CPU mask hides".to_string()
    } else if !masked.is_empty() {
        format!(
            "which this CPU lacks ({} hidden by this host's CPU mask)",
            join_words(&masked)
        )
    } else {
        "which this CPU lacks".to_string()
    };
    (
        format!(
            "the image was made on a CPU with {}, {lacks}",
            join_words(&pretty)
        ),
        names.iter().map(|s| s.to_string()).collect(),
    )
}

/// Whether restore can ask for every AMX permission the image's processes had: none was
/// granted, or this host (as masked) has AMX tile data enabled. When false, a restore
/// (possible only under `--cpu-policy=ignore`) does not ask for it.
pub fn amx_permission_grantable(hdr: &ArchHeader, host: &HostCaps) -> bool {
    let bit = 1u64 << XFEATURE_AMX_TILEDATA;
    hdr.xcomp_perm & bit == 0 || host.xcr0 & bit != 0
}

/// The problems of one thread's saved arch state on this host: its xsave area must
/// convert ([`convert_xsave`]) and its debug registers must be acceptable to this kernel.
pub fn check_thread(t: &ThreadArchState, hdr: &ArchHeader, host: &HostCaps) -> Vec<Problem> {
    let mut out = Vec::new();
    if !t.xsave.is_empty() && host.kernel_xcr0 != 0 {
        if let Err(p) = convert_xsave(&t.xsave, &XsaveLayout::for_image(hdr, host), host) {
            out.push(p);
        }
    }
    out.extend(check_debugregs_with_limit(
        &t.debugregs,
        t.abi(),
        host.task_size_max,
    ));
    out
}

/// Every arch problem of an image on this host: [`check_host`] on the header, then
/// [`check_thread`] on each (tid, thread) — without repeating, for a thread, a missing
/// xsave component the header check already reported.
pub fn check_arch(
    hdr: &ArchHeader,
    threads: &[(i32, &ThreadArchState)],
    host: &HostCaps,
    policy: CpuPolicy,
) -> Vec<Problem> {
    let mut out = check_host(hdr, host, policy);
    if out.iter().any(|p| p.code == ProblemCode::MachineMismatch) {
        return out;
    }
    let reported: Vec<String> = out
        .iter()
        .filter(|p| p.code == ProblemCode::XsaveComponentMissing)
        .flat_map(|p| p.items.iter().cloned())
        .collect();
    for &(tid, t) in threads {
        for p in check_thread(t, hdr, host) {
            if p.code == ProblemCode::XsaveComponentMissing
                && p.items.iter().all(|i| reported.contains(i))
            {
                continue;
            }
            out.push(p.in_thread(tid));
        }
    }
    out
}

/// What a host needs to run the image, for schedulers (`ckpt check --json`):
///
/// ```json
/// { "machine": "x86_64", "abis": ["x86_64"], "word_sizes": [64],
///   "xsave": { "components": [{"index": 2, "name": "avx", "description": "..."}],
///              "xfeatures_used": "0x7", "dump_host_xcr0": "0x7", "dump_host_xsave_size": 832 },
///   "cpu_features": ["avx", "avx2", ...],          // required under --cpu-policy=compatible
///   "cpu_features_strict": ["avx", "erms", ...],   // required under --cpu-policy=strict
///   "kernel": [{"name": "ia32-emulation", "why": "..."}],
///   "vdso": {"size": 8192, "xxh3": "0x..."} }
/// ```
pub fn requirements_manifest(hdr: &ArchHeader) -> Value {
    let components: Vec<Value> = (0..64u32)
        .filter(|i| hdr.xfeatures_used & (1 << i) != 0)
        .map(|i| {
            json!({
                "index": i,
                "name": component_name(i),
                "description": component_description(i),
            })
        })
        .collect();
    let critical: Vec<&String> = hdr
        .cpu_features
        .iter()
        .filter(|f| cpu::is_critical(f))
        .collect();
    let word_sizes: Vec<u32> = hdr
        .abis
        .iter()
        .map(|a| match a {
            Abi::X86_64 => 64,
            Abi::Ia32 => 32,
        })
        .collect();
    let abis: Vec<&str> = hdr
        .abis
        .iter()
        .map(|a| match a {
            Abi::X86_64 => "x86_64",
            Abi::Ia32 => "ia32",
        })
        .collect();
    let mut kernel = Vec::new();
    if hdr.abis.contains(&Abi::Ia32) {
        kernel.push(json!({
            "name": "ia32-emulation",
            "why": "the image has 32-bit tasks (CONFIG_IA32_EMULATION, not disabled by ia32_emulation=0)",
        }));
    }
    if hdr.xfeatures_used & !3 != 0 {
        kernel.push(json!({
            "name": "xsave",
            "why": format!("the tasks use {}", xsave::describe_components(hdr.xfeatures_used & !3)
                .iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")),
        }));
    }
    if (hdr.xfeatures_used | hdr.xcomp_perm) & (1 << XFEATURE_AMX_TILEDATA) != 0 {
        kernel.push(json!({
            "name": "amx-permission",
            "why": "the tasks use AMX tile data, which needs arch_prctl(ARCH_REQ_XCOMP_PERM)",
        }));
    }
    json!({
        "machine": hdr.machine,
        "abis": abis,
        "word_sizes": word_sizes,
        "xsave": {
            "components": components,
            "xfeatures_used": format!("{:#x}", hdr.xfeatures_used),
            "dump_host_xcr0": format!("{:#x}", hdr.xcr0),
            "dump_host_xsave_size": hdr.xsave_size,
        },
        "cpu_features": critical,
        "cpu_features_strict": hdr.cpu_features,
        "kernel": kernel,
        "vdso": {
            "size": hdr.vdso_size,
            "xxh3": format!("{:#018x}", hdr.vdso_hash),
        },
    })
}

#[cfg(test)]
mod tests;
