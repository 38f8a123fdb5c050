//! Whole calls driven against the Endpoint with no sockets.
