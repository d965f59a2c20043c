//! Terminals: settings, window size, controlling terminal.
