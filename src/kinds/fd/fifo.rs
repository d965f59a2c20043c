//! FIFOs (named pipes): ends, data in flight.
