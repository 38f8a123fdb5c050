//! Media: what the caller hears and the keys they press.
//!
//! Everything here is a pure function or a sans-IO state machine; the IO
//! edge owns the UDP socket and the timers.
//!
//! - [`g711`]: μ-law (PCMU) and A-law (PCMA) companding.
//! - [`prompts`]: the prompt cache, WAV files converted and encoded once at
//!   load so that a call only shares references to them.
//! - [`rtp`]: RTP packetisation and 20 ms pacing of prompts (RFC 3550).
//! - [`dtmf`]: RFC 4733 telephone-event reception.
//! - [`latch`]: which inbound RTP a call accepts (RFC 4961 latching).

pub mod dtmf;
pub mod g711;
pub mod latch;
pub mod prompts;
mod resample;
pub mod rtp;

pub use dtmf::DtmfReceiver;
pub use g711::Codec;
pub use prompts::{MediaError, PromptCache};
pub use rtp::{PacketInfo, RtpSender};
