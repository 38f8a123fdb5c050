//! The callback store's thread: SQLite commits (fsync) must never stall a
//! tokio worker, so one thread owns the store and answers each call over a
//! oneshot channel once its request is durably on disk.

use std::path::PathBuf;
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::callback::store::CallbackStore;
use crate::callback::{NewCallback, Requested};
use crate::flow::interpreter::CallbackRequest;

type Job = (
    NewCallback,
    DateTime<Utc>,
    oneshot::Sender<Result<Requested, String>>,
);

/// Hands requests to the store thread.
#[derive(Clone)]
pub struct CallbackSink {
    tx: mpsc::Sender<Job>,
}

impl CallbackSink {
    /// Opens the store at `path`, puts requests left `dialling` by a crash
    /// back to pending (they are dialled again: at least once), and starts
    /// the thread.
    pub fn start(path: PathBuf, now: DateTime<Utc>) -> Result<Self, String> {
        let mut store =
            CallbackStore::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let recovered = store
            .recover(now)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if recovered > 0 {
            tracing::warn!(recovered, "callbacks interrupted by a crash are due again");
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("callbacks".into())
            .spawn(move || {
                for (new, at, reply) in rx {
                    let result = store.request(new, at).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!("cannot store a callback request: {e}");
                    }
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { tx })
    }

    /// Queues `request` (filed at `at`); the receiver answers once it is
    /// committed, or with why it could not be.
    pub fn request(
        &self,
        request: CallbackRequest,
        priority: i32,
        at: DateTime<Utc>,
    ) -> oneshot::Receiver<Result<Requested, String>> {
        let (reply, answer) = oneshot::channel();
        let new = NewCallback {
            not_before: request.not_before,
            number: request.number,
            queue: request.queue,
            priority,
            context: request.context,
            not_after: None,
        };
        if let Err(mpsc::SendError((_, _, reply))) = self.tx.send((new, at, reply)) {
            let _ = reply.send(Err("the callback store is not running".into()));
        }
        answer
    }
}
