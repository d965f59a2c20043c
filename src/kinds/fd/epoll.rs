//! epoll instances and the descriptors they watch.
