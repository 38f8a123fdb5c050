//! SIP: messages, transactions, dialogs and SDP.

pub mod message;
pub mod sdp;
pub mod transaction;
pub mod ua;
