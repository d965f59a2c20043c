//! Unix sockets: pairs, listeners, datagram sockets, queued messages, names.
