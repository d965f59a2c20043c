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
        test: "oracle_cow_pages_shared_with_a_child",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "private pages shared copy-on-write between parent and fork child come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "check_and_restore_refuse_an_image_whose_vdso_is_not_this_kernels",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "check_refuses_an_ia32_image_on_a_host_masked_without_ia32",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "ia32_program_continues_after_restore_and_a_second_dump",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "ia32_static_program_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mixed_tree_ia32_parent_of_x86_64_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mixed_tree_x86_64_parent_of_ia32_child",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "state_of_restored_ia32_program_equals_dumped_state",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "every_restore_step_fails_in_turn_ia32",
        cmp: Cmp::Restored,
        key: "p*.smaps.ffffffffff600000-ffffffffff601000.*",
        what: "a restored ia32 process gains the 64-bit [vsyscall] page it did not have",
        issue: "issue 13",
    },
    KnownLoss {
        test: "fifo_between_two_processes_keeps_data_in_flight_and_capacity",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "file_locks_are_taken_again_at_restore_and_a_lock_taken_meanwhile_refuses_it",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_mapped_files_leave_nothing_behind",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "mapped_memfd_and_deleted_file_stay_shared_after_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_session_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "pty_pair_restores_that_fail_leave_nothing_and_a_taken_number_is_refused",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "pty_pair_inside_the_tree_keeps_its_session_settings_modes_and_number",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "session_with_two_process_groups_survives_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "zombies_are_reaped_after_restore_with_their_exit_status",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_of_a_tree_with_zombies_leave_none_of_its_processes",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "fork_tree_4_levels_sharing_anonymous_memory_continues_after_restore",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "processes_stopped_by_job_control_stay_stopped_and_continue_on_sigcont",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "shut_down_accepted_and_autobound_unix_sockets_come_back_as_they_were",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "descriptors_in_flight_that_the_tree_holds_come_back_in_flight",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "queued_unix_messages_and_bytes_keep_their_senders_credentials",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    // tests/e2e_sysv.rs
    KnownLoss {
        test: "sysv_objects_come_back_under_their_ids_with_owners_and_contents",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "postgres_is_restored_with_its_sysv_segment_and_stops_cleanly",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages the postmaster's children share copy-on-write with it come back as separate copies (seen when the oracle's snapshot finds them still shared)",
        issue: "issue 13",
    },
    KnownLoss {
        test: "failed_restores_leave_no_sysv_object_behind",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
    KnownLoss {
        test: "tree_in_*_is_restored_*",
        cmp: Cmp::Restored,
        key: "p*.pages_shared_with_p*",
        what: "pages a fork child shares copy-on-write with its parent (stack, data) come back as separate copies",
        issue: "issue 13",
    },
];
