//! External resources and `--inherit-fd`.

use crate::kinds::fd::external::{check_external, check_inherit_used};
use crate::kinds::testutil::*;
use crate::model::{FdKind, Process};

fn ext(key: &str) -> FdKind {
    FdKind::External {
        key: key.into(),
        flags: 0,
    }
}

/// A descriptor number ckpt cannot have open (above the highest accepted limit).
const CLOSED: i32 = i32::MAX - 1;

#[test]
fn external_fds_need_inherit_fd() {
    let p = Process {
        fds: vec![fd(3, eventfd()), fd(4, ext("pipe:[100]"))],
        ..process(10)
    };
    let v = run(|v| check_external(&p, &[], v));
    assert_one(
        &v,
        "external-fd",
        &[
            "descriptor 4 of process 10 is pipe:[100], which led outside the dumped tree",
            "--inherit-fd 4:pipe:[100]",
        ],
    );
    let v = run(|v| check_external(&p, &[(5, "pipe:[999]".into())], v));
    assert_one(&v, "external-fd", &["--inherit-fd N:pipe:[100]"]);
}

#[test]
fn inherit_fd_must_be_open_in_ckpt() {
    let p = Process {
        fds: vec![fd(4, ext("socket:[7]"))],
        ..process(10)
    };
    let v = run(|v| check_external(&p, &[(CLOSED, "socket:[7]".into())], v));
    assert_one(
        &v,
        "external-fd",
        &[&format!(
            "--inherit-fd {CLOSED}:socket:[7] (for descriptor 4 of process 10): ckpt has no descriptor {CLOSED} open"
        )],
    );
    let d = TempDir::new();
    let f = std::fs::File::open(d.file("f", b"")).expect("open");
    let n = std::os::fd::AsRawFd::as_raw_fd(&f);
    assert_none(&run(|v| check_external(&p, &[(n, "socket:[7]".into())], v)));
}

#[test]
fn every_inherit_fd_is_used() {
    let p = Process {
        fds: vec![fd(4, ext("socket:[7]"))],
        ..process(10)
    };
    let ck = checkpoint(vec![process(9), p]);
    assert_none(&run(|v| {
        check_inherit_used(&ck, &[(0, "socket:[7]".into())], v)
    }));
    assert_none(&run(|v| check_inherit_used(&ck, &[], v)));
    let v =
        run(|v| check_inherit_used(&ck, &[(0, "socket:[7]".into()), (1, "pipe:[8]".into())], v));
    assert_one(
        &v,
        "inherit-fd-unused",
        &["--inherit-fd 1:pipe:[8]: the image has no external resource pipe:[8]"],
    );
}
