//! UDP sockets: addresses, options, queued datagrams.
