//! callflow: an IVR and call-flow engine.
//!
//! Admins write call flows in YAML ([`flow::model`]); [`flow::load`] checks
//! them into a graph, reporting every problem with file, line and column; the
//! [`flow::interpreter`] runs one call through the graph as a pure state
//! machine: it is fed events with the current time and answers with actions,
//! and never reads a clock or touches a socket itself.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod call;
pub mod callback;
pub mod diagnostic;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod report;
pub mod server;
pub mod simulate;
pub mod sip;
