//! The process tree: parents and children, sessions and process groups, zombies,
//! controlling terminals, PID namespaces.
