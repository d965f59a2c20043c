//! Threads: registers (through arch/), rseq, robust lists, scheduling, thread creation.
