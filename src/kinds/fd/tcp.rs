//! TCP sockets: listeners and established connections (TCP_REPAIR).
