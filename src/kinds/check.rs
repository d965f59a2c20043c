//! Helpers shared by the plan checks of the kinds: recording a problem, showing a path.

use crate::error::Problem;

/// Record a problem.
pub(crate) fn p(problems: &mut Vec<Problem>, code: &'static str, message: String) {
    problems.push(Problem { code, message });
}

/// Bytes (a path, a name) as text.
pub(crate) fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
