//! The callback store's thread: SQLite commits (fsync) must never stall a
//! tokio worker, so one thread owns the store and answers each call over a
//! oneshot channel once its change is durably on disk. Requests, claims and
//! attempt outcomes all pass through it, in order.

use std::sync::mpsc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, Notify};

use super::backend::{self, Backend};
use crate::callback::scheduler::{RetryPolicy, Window};
use crate::callback::store::{Claimant, StoreError};
use crate::callback::{
    AttemptOutcome, Callback, CallbackId, ListFilter, NewCallback, Requested, State, StoreStats,
};
use crate::flow::interpreter::CallbackRequest;
use crate::flow::schedule::Schedule;

/// How many callbacks of a queue may be in progress; run on the store
/// thread inside the claim's transaction, so it only reads what it holds.
pub type QueueLimit = Box<dyn Fn(&str) -> usize + Send>;

enum Job {
    Request(
        NewCallback,
        DateTime<Utc>,
        oneshot::Sender<Result<Requested, String>>,
    ),
    Claim {
        now: DateTime<Utc>,
        limit: QueueLimit,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Callback>, String>>,
    },
    Progress {
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
    },
    Settle(Box<Settle>),
    State(CallbackId, oneshot::Sender<Option<State>>),
    /// The admin's list.
    List(ListFilter, oneshot::Sender<Result<Vec<Callback>, String>>),
    /// Counts by state, for the metrics.
    Stats(oneshot::Sender<Result<StoreStats, String>>),
    /// Whether the store answers, for readiness.
    Ping(oneshot::Sender<Result<(), String>>),
    /// Answered once every job before it is done.
    Flush(oneshot::Sender<()>),
}

/// An attempt's last word, kept until it is committed.
struct Settle {
    id: CallbackId,
    now: DateTime<Utc>,
    outcome: AttemptOutcome,
    policy: RetryPolicy,
    hours: Option<Schedule>,
}

/// How often settles that could not be committed (disk full, a lock held
/// too long) are tried again: until they are, the request stays `dialling`
/// and holds one of its queue's places.
const SETTLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Jobs waiting for the store thread at most. Only a store that stopped
/// answering (a disk that hangs) fills it; then new requests are refused
/// with an error the caller hears (so nothing is promised that is not
/// stored), claims and state reads fail and are tried again, progress notes
/// are dropped, and settles wait in `overflow`, which holds at most one per
/// attempt in flight.
const JOB_QUEUE: usize = 65_536;

/// Hands requests to the store thread.
#[derive(Clone)]
pub struct CallbackSink {
    tx: mpsc::SyncSender<Job>,
    /// Settles that found the queue full; the thread takes them next.
    overflow: Arc<std::sync::Mutex<Vec<Settle>>>,
    /// Woken when a request is stored or an attempt settles, so that the
    /// dialler looks at once instead of at its next poll.
    changed: Arc<Notify>,
}

impl CallbackSink {
    /// Opens the store at `location` (a SQLite file, or a PostgreSQL URL),
    /// puts requests left `dialling` by this node's last run (or by any
    /// node whose lease ran out) back to pending (they are dialled again:
    /// at least once), and starts the thread, which claims as `claimant`
    /// and renews its claims every third of their lease.
    pub fn start(location: &str, claimant: Claimant, now: DateTime<Utc>) -> Result<Self, String> {
        // A URL may hold a password: name the store without it.
        let shown = if backend::is_postgres(location) {
            "the PostgreSQL callback store".to_string()
        } else {
            location.to_string()
        };
        let renew_every = (claimant.lease / 3).max(std::time::Duration::from_millis(100));
        let location = location.to_string();
        // Opened on the store's own thread: PostgreSQL's client runs on a
        // runtime of its own there, which must not be started from within
        // the server's.
        let (opened_tx, opened) = mpsc::sync_channel::<Result<usize, String>>(1);
        let changed = Arc::new(Notify::new());
        let (tx, rx) = mpsc::sync_channel::<Job>(JOB_QUEUE);
        let notify = Arc::clone(&changed);
        let overflow: Arc<std::sync::Mutex<Vec<Settle>>> = Arc::default();
        let overflowed = Arc::clone(&overflow);
        std::thread::Builder::new()
            .name("callbacks".into())
            .spawn(move || {
                let opened = Backend::open(&location).and_then(|mut store| {
                    store.set_claimant(claimant);
                    let recovered = store.recover(now)?;
                    Ok((store, recovered))
                });
                let mut store = match opened {
                    Ok((store, recovered)) => {
                        let _ = opened_tx.send(Ok(recovered));
                        store
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut unsettled: Vec<Settle> = Vec::new();
                let mut renewed = super::now();
                loop {
                    let next = rx.recv_timeout(SETTLE_RETRY.min(renew_every));
                    if renewed.elapsed() >= renew_every {
                        renewed = super::now();
                        if let Err(e) = store.renew(super::wall_now()) {
                            tracing::error!("cannot renew the callback claims' leases: {e}");
                        }
                    }
                    // Settles that found the queue full were handed over
                    // before whatever came next (a flush, say): first.
                    let waiting =
                        std::mem::take(&mut *overflowed.lock().unwrap_or_else(|p| p.into_inner()));
                    for s in waiting {
                        run(
                            &mut store,
                            Job::Settle(Box::new(s)),
                            &notify,
                            &mut unsettled,
                        );
                    }
                    match next {
                        Ok(job) => run(&mut store, job, &notify, &mut unsettled),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    for s in std::mem::take(&mut unsettled) {
                        run(
                            &mut store,
                            Job::Settle(Box::new(s)),
                            &notify,
                            &mut unsettled,
                        );
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        // Start-up waits for the store: nothing is promised before it is
        // there.
        let recovered = opened
            .recv()
            .map_err(|_| format!("{shown}: the store thread stopped"))?
            .map_err(|e| format!("{shown}: {e}"))?;
        if recovered > 0 {
            tracing::warn!(recovered, "callbacks interrupted by a crash are due again");
        }
        Ok(Self {
            tx,
            overflow,
            changed,
        })
    }

    /// What the dialler waits on between polls.
    pub fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
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
        match self.tx.try_send(Job::Request(new, at, reply)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(Job::Request(_, _, reply))) => {
                tracing::error!("the callback store is {JOB_QUEUE} jobs behind; request refused");
                let _ = reply.send(Err("the callback store is too busy".into()));
            }
            Err(mpsc::TrySendError::Disconnected(Job::Request(_, _, reply))) => {
                let _ = reply.send(Err("the callback store is not running".into()));
            }
            Err(_) => {}
        }
        answer
    }

    /// Claims up to `max` due requests for dialling (see
    /// [`CallbackStore::claim_due`]).
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: QueueLimit,
        max: usize,
    ) -> Result<Vec<Callback>, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Job::Claim {
            now,
            limit,
            max,
            reply,
        })?;
        answer
            .await
            .unwrap_or_else(|_| Err("the callback store stopped".into()))
    }

    /// Records how an attempt is going (answered, connected), leaving the
    /// request in flight.
    pub fn progress(&self, id: CallbackId, now: DateTime<Utc>, outcome: AttemptOutcome) {
        if let Err(mpsc::TrySendError::Full(_)) =
            self.tx.try_send(Job::Progress { id, now, outcome })
        {
            tracing::warn!(
                id,
                "the callback store is too busy; a progress note is dropped"
            );
        }
    }

    /// Records an attempt's last word and applies the retry rules to it in
    /// one commit. Nothing waits for it: the store logs its decision, and a
    /// crash before the commit leaves the request `dialling`, which the next
    /// start dials again.
    pub fn settle(
        &self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
        policy: RetryPolicy,
        hours: Option<Schedule>,
    ) {
        let job = Job::Settle(Box::new(Settle {
            id,
            now,
            outcome,
            policy,
            hours,
        }));
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(Job::Settle(settle))) => self
                .overflow
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(*settle),
            Err(_) => tracing::error!(
                id,
                "the callback store is not running; the attempt is settled at the next start"
            ),
        }
    }

    /// The request's state as stored now (`None` if it cannot be read).
    pub fn state(&self, id: CallbackId) -> oneshot::Receiver<Option<State>> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::TrySendError::Full(Job::State(_, reply)))
        | Err(mpsc::TrySendError::Disconnected(Job::State(_, reply))) =
            self.tx.try_send(Job::State(id, reply))
        {
            let _ = reply.send(None);
        }
        answer
    }

    /// The requests matching `filter`, for the admin.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Callback>, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Job::List(filter, reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err("the callback store stopped".into()))
    }

    /// How many requests are in each state (reads every row: for scrapes,
    /// not for polling).
    pub async fn stats(&self) -> Result<StoreStats, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Job::Stats(reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err("the callback store stopped".into()))
    }

    /// Whether the store thread and its database answer.
    pub async fn ping(&self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Job::Ping(reply))?;
        answer
            .await
            .unwrap_or_else(|_| Err("the callback store stopped".into()))
    }

    /// Queues a job whose answer someone waits for, or says why not.
    fn ask(&self, job: Job) -> Result<(), String> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => "the callback store is too busy".to_string(),
            mpsc::TrySendError::Disconnected(_) => "the callback store is not running".to_string(),
        })
    }

    /// Returns once everything handed to the store before is committed (or
    /// has failed): the last thing `serve` does, so that no settled attempt
    /// is lost to the process exiting.
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        // May wait for room in the queue, so off the runtime's threads.
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Job::Flush(reply)).is_ok()).await;
        if sent.unwrap_or(false) {
            let _ = done.await;
        }
    }
}

fn run(store: &mut Backend, job: Job, changed: &Notify, unsettled: &mut Vec<Settle>) {
    match job {
        Job::Request(new, at, reply) => {
            let result = store.request(new, at).map_err(|e| e.to_string());
            match &result {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::error!("cannot store a callback request: {e}"),
            }
            let _ = reply.send(result);
        }
        Job::Claim {
            now,
            limit,
            max,
            reply,
        } => {
            let result = store.claim_due(now, &*limit, max).map_err(|e| {
                tracing::error!("cannot claim due callbacks: {e}");
                e.to_string()
            });
            let _ = reply.send(result);
        }
        Job::Progress { id, now, outcome } => {
            if let Err(e) = store.finish_attempt(id, now, &outcome) {
                tracing::error!(id, %outcome, "cannot record a callback attempt: {e}");
            }
        }
        Job::Settle(settle) => {
            let Settle {
                id,
                now,
                outcome,
                policy,
                hours,
            } = &*settle;
            let result = store.get(*id).and_then(|callback| {
                let window = Window::of(&callback, hours.as_ref());
                let next = policy.next_after(callback.attempts, outcome, *now, &window);
                tracing::info!(id, %outcome, ?next, "callback attempt settled");
                store.settle_attempt(*id, *now, outcome, &next)
            });
            match result {
                Ok(state) => tracing::info!(id, %state, "callback is now {state}"),
                // A request gone, in a state that takes no decision, or
                // taken over by another node will not change by retrying;
                // anything else (IO, locks) may.
                Err(
                    e @ (StoreError::NotFound(_)
                    | StoreError::WrongState { .. }
                    | StoreError::LostClaim { .. }),
                ) => {
                    tracing::error!(id, %outcome, "cannot settle a callback attempt: {e}");
                }
                Err(e) => {
                    tracing::error!(id, %outcome, "cannot settle a callback attempt yet, will retry: {e}");
                    unsettled.push(*settle);
                }
            }
            changed.notify_one();
        }
        Job::State(id, reply) => {
            let _ = reply.send(store.get(id).ok().map(|c| c.state));
        }
        Job::List(filter, reply) => {
            let _ = reply.send(store.list(&filter).map_err(|e| e.to_string()));
        }
        Job::Stats(reply) => {
            let _ = reply.send(store.stats().map_err(|e| e.to_string()));
        }
        Job::Ping(reply) => {
            let _ = reply.send(store.ping().map_err(|e| e.to_string()));
        }
        Job::Flush(reply) => {
            let _ = reply.send(());
        }
    }
}
