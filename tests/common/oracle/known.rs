//! [`KNOWN_LOSSES`]: the differences ckpt is known to get wrong today (issue 13).

use super::*;

/// A difference ckpt is known to lose today (issue 13): the comparison checks that it
/// is still there, so a fix makes the test fail and asks for the entry to go.
pub struct KnownLoss {
    /// The test (its `Ctx` name; `*` matches any characters) whose restore shows it.
    pub test: &'static str,
    /// In which comparison.
    pub cmp: Cmp,
    /// The entry that differs (`*` matches any characters).
    pub key: &'static str,
    pub what: &'static str,
    pub issue: &'static str,
}

/// Every difference ckpt is known to get wrong. One table: never hide a difference
/// elsewhere.
pub const KNOWN_LOSSES: &[KnownLoss] = &[
    KnownLoss {
        test: "mixed_tree_ia32_parent_of_x86_64_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "an ia32 process restored in a tree with x86-64 processes gains the 64-bit \
               [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mixed_tree_x86_64_parent_of_ia32_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "an ia32 process restored in a tree with x86-64 processes gains the 64-bit \
               [vsyscall] page it did not have",
        issue: "issue 13",
    },
];
