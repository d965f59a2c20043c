//! Shared memory: shared anonymous objects (one for the tree) and System V segments
//! attached to the processes.
