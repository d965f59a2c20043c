//! Anonymous-inode descriptors: eventfd, timerfd, signalfd and the others without a
//! module of their own.
