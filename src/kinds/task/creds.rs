//! Credentials: user and group IDs, supplementary groups, capabilities, securebits (per
//! thread), and what ckpt's own privileges allow.
