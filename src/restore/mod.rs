//! Restore: plan -> stage -> commit.
