//! Durable callback requests: the promise "we will call you back" is kept.
//!
//! Two halves, split so that the rules can be tested without a database and
//! the database without a clock:
//! - [`store::CallbackStore`] keeps requests in SQLite (WAL, `synchronous=FULL`):
//!   a request is on disk before [`store::CallbackStore::request`] returns, and
//!   [`store::CallbackStore::claim_due`] hands each due request to exactly one
//!   dialler, even across processes sharing the file. [`crate::server::postgres::PgStore`]
//!   keeps them in PostgreSQL, with the same schema and transitions, for
//!   several nodes; claims are leased, and a dead node's are taken back by
//!   the others when the lease runs out.
//! - [`scheduler::RetryPolicy`] decides, as a pure function of the attempt, its
//!   outcome, the current time and the dialling [`scheduler::Window`], whether
//!   to retry (and when), to complete or to give up.
//!
//! The life of a request, driven by the server (an IO edge, which reads the
//! clock and passes `now` in):
//! ```text
//! request() ──> pending ──claim_due()──> dialling ──Connected──> connected ──Completed──> completed
//!                 ▲  ▲                      │ Busy / NoAnswer / Failed / Answered-only
//!                 │  └──── RetryAt ─────────┤ (RetryPolicy::next_after)
//!   retry() ──────┘        (recover()       └──── Fail ───> failed
//!                           after a crash)        cancel() ─> cancelled
//! ```

pub mod limits;
pub mod scheduler;
pub mod store;

mod admin;
mod model;
pub(crate) mod row;
mod schema;
mod transition;

pub use model::{
    Attempt, AttemptOutcome, Callback, CallbackId, ListFilter, NewCallback, Requested, State,
    StoreStats, UnknownState,
};

#[cfg(test)]
mod claim_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod store_tests;
