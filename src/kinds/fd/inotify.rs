//! inotify instances and their watches.
