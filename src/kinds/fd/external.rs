//! External resources: descriptors leading outside the tree, given back at restore
//! with --inherit-fd.

use crate::error::Problem;
use crate::error::{RestoreError, RestoreResult};
use crate::kinds::check;
use crate::model::{Checkpoint, Fd, FdKind, Process};
use crate::remote::{Ctx, take_remote_fd};
use crate::sys;

// ---- collect (dump) ----

/// Record descriptor `f`, which leads outside the dumped tree (`--external`), as the
/// external resource `key` (`pipe:[N]`, `socket:[N]`): restore takes it from
/// `--inherit-fd FD:key`.
pub(crate) fn mark_external(f: &mut Fd, key: String, flags: u32) {
    f.kind = FdKind::External { key, flags };
}

// ---- checks (plan) ----

/// An external resource's key is a short /proc name, and its descriptor is no copy.
pub(crate) fn check_record(f: &Fd, key: &str, problems: &mut Vec<Problem>) {
    if key.is_empty() || key.len() > 256 || f.shared_with.is_some() {
        check::p(
            problems,
            "malformed",
            format!("file descriptor {} is an invalid external resource", f.fd),
        );
    }
}

/// Every external resource of the process must be given with `--inherit-fd N:KEY`, with
/// N open in ckpt.
pub(crate) fn check_external(
    proc_: &Process,
    inherit: &[(i32, String)],
    problems: &mut Vec<Problem>,
) {
    for f in &proc_.fds {
        let FdKind::External { key, .. } = &f.kind else {
            continue;
        };
        match inherit.iter().find(|(_, k)| k == key) {
            None => check::p(
                problems,
                "external-fd",
                format!(
                    "descriptor {} of process {} is {key}, which led outside the dumped tree; \
                     give a descriptor of ckpt restore in its place with --inherit-fd N:{key} \
                     (e.g. --inherit-fd {}:{key} with that descriptor open)",
                    f.fd, proc_.pid, f.fd
                ),
            ),
            Some((n, _)) => {
                if !sys::process::own_fd_open(*n) {
                    check::p(
                        problems,
                        "external-fd",
                        format!(
                            "--inherit-fd {n}:{key} (for descriptor {} of process {}): ckpt \
                             has no descriptor {n} open",
                            f.fd, proc_.pid
                        ),
                    );
                }
            }
        }
    }
}

/// Every `--inherit-fd N:KEY` names an external resource of the image.
pub(crate) fn check_inherit_used(
    ckpt: &Checkpoint,
    inherit: &[(i32, String)],
    problems: &mut Vec<Problem>,
) {
    // (The key of an external PID namespace: `kinds::task::extpidns`.)
    for (n, key) in inherit
        .iter()
        .filter(|(_, k)| !crate::kinds::task::extpidns::is_key(ckpt, k))
    {
        let used = ckpt
            .processes
            .iter()
            .flat_map(|q| q.fds.iter())
            .any(|f| matches!(&f.kind, FdKind::External { key: k, .. } if k == key));
        if !used {
            check::p(
                problems,
                "inherit-fd-unused",
                format!(
                    "--inherit-fd {n}:{key}: the image has no external resource {key} \
                     (`ckpt inspect` lists them)"
                ),
            );
        }
    }
}

/// What `inspect` says of an external resource.
pub(crate) fn describe(key: &str) -> String {
    format!("external {key} (restore with --inherit-fd N:{key})")
}

// ---- restore (stage) ----

/// ckpt's own descriptor given with --inherit-fd for external resource `key` (checked
/// by plan), taken into the process for descriptor `f`; returns its number there.
pub(crate) fn take_external(
    cx: &mut Ctx<'_>,
    f: &crate::model::Fd,
    key: &str,
    inherit: &[(i32, String)],
) -> RestoreResult<u64> {
    let n = inherit
        .iter()
        .find(|(_, k)| k == key)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            RestoreError::Stage(format!("descriptor {}: no --inherit-fd for {key}", f.fd))
        })?;
    let me = std::process::id() as i32;
    let what = format!("take --inherit-fd {n}:{key} for descriptor {}", f.fd);
    take_remote_fd(cx, me, n as u64, &what)
}
