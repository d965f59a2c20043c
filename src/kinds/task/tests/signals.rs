//! Signal dispositions and pending signals.

use crate::kinds::task::signals::{check_actions, check_pending};
use crate::kinds::testutil::*;
use crate::model::{PendingSignal, Process, SigAction};

#[test]
fn dispositions_only_for_signals_that_have_one() {
    let with = |signos: &[u32]| Process {
        sigactions: signos
            .iter()
            .map(|&signo| SigAction {
                signo,
                handler: 1,
                ..Default::default()
            })
            .collect(),
        ..process(10)
    };
    let p = with(&[1, 2, 8, 10, 18, 20, 64]);
    assert_none(&run(|v| check_actions(&p, v)));
    for bad in [0, 9, 19, 65] {
        let p = with(&[2, bad]);
        let v = run(|v| check_actions(&p, v));
        assert_one(&v, "malformed", &[&format!("invalid signal number {bad}")]);
    }
}

#[test]
fn pending_signals() {
    let sig = |signo, len| PendingSignal {
        signo,
        siginfo: vec![0; len],
    };
    assert_none(&run(|v| check_pending(&[sig(1, 128), sig(64, 128)], v)));
    for bad in [sig(0, 128), sig(65, 128), sig(10, 127), sig(10, 129)] {
        let v = run(|v| check_pending(&[sig(2, 128), bad], v));
        assert_one(&v, "malformed", &["invalid pending signal"]);
    }
}
