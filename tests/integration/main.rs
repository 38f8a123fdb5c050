//! Integration tests: the shipped flows, the broken-flow corpus, simulated
//! caller journeys, the command line, SIPp end to end and the callback
//! dialler.

mod admin;
mod bridge;
mod broken_corpus;
mod cli;
mod common;
mod dialler;
mod dispatcher;
mod dns;
mod fuzz_corpus;
mod journeys;
mod kamailio;
mod postgres;
mod register;
mod report;
mod rfc4475;
mod shipped_flows;
mod sipp;
mod tcp;
mod tls;
mod trunks;
