//! The only layer that talks to the kernel: ptrace, remote system calls in a stopped
//! task, /proc readers, process_vm_*, clone3. `unsafe` lives here, each block commented
//! with the invariant that makes it sound.
