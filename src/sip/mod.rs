//! SIP: messages, transactions, dialogs (the user agent), SDP and digest authentication.

pub mod admission;
pub mod auth;
pub mod dispatch;
pub mod locate;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod ua;
pub mod uui;
