//! Integration tests: the shipped flows, the broken-flow corpus, simulated
//! caller journeys and the command line.

mod broken_corpus;
mod cli;
mod common;
mod journeys;
mod shipped_flows;
mod sipp;
