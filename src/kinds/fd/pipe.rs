//! Pipes: both ends, data in flight.
