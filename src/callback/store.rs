//! The durable store of callback requests, in SQLite.
//!
//! Every method that changes something runs one `IMMEDIATE` transaction and
//! returns only after its commit, and commits are synced (`synchronous=FULL`
//! in WAL mode): when a method returns `Ok`, its change survives a killed
//! process and a power cut. `IMMEDIATE` takes the write lock up front, so two
//! processes on one file (the server and the admin CLI, or two servers)
//! serialise instead of both reading the same pending row and dialling it.
//!
//! The API is synchronous; the server calls it from `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::row::{millis, RawCallback, CALLBACK_COLUMNS};
use super::scheduler::Next;
use super::schema;
use super::transition::{apply_in, get_in, record_outcome};
use super::{AttemptOutcome, Callback, CallbackId, NewCallback, Requested, State};

/// What went wrong in the callback store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or set up.
    #[error("cannot open the callback database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// SQLite failed (disk full, I/O error, lock held beyond the busy timeout).
    #[error("callback database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The context could not be written as JSON.
    #[error("the callback context cannot be stored as JSON: {0}")]
    Context(#[from] serde_json::Error),
    /// The number has something other than digits, or none.
    #[error("`{0}` is not a number to call; write digits only")]
    InvalidNumber(String),
    /// The queue name is empty.
    #[error("a callback needs a queue; the queue name is empty")]
    EmptyQueue,
    /// No request has this id.
    #[error("callback {0} does not exist")]
    NotFound(CallbackId),
    /// The request's state does not allow the action (e.g. cancelling a
    /// completed request).
    #[error("callback {id} is {state}; it cannot be {action}")]
    WrongState {
        /// The request.
        id: CallbackId,
        /// Its current state.
        state: State,
        /// What was refused, as a past participle ("cancelled", "retried").
        action: &'static str,
    },
    /// A retry would make a second open request for the same number and
    /// queue.
    #[error("callback {id} cannot be retried: callback {existing} for the same number and queue is still open")]
    AlreadyOpen {
        /// The request to retry.
        id: CallbackId,
        /// The open request that blocks it.
        existing: CallbackId,
    },
    /// An outcome was reported for a request that was never claimed.
    #[error("callback {0} has no attempt to record an outcome for")]
    NoAttempt(CallbackId),
    /// The file was written by a newer callflow.
    #[error("the callback database has schema version {found}, newer than the {known} this callflow knows; upgrade callflow")]
    SchemaTooNew {
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// SQLite refused WAL mode (e.g. on a network file system), which
    /// sharing the file with the admin CLI needs.
    #[error("the callback database cannot use WAL mode (journal mode stays `{0}`); put it on a local file system")]
    NotWal(String),
    /// The request is being dialled by another process now: this one's
    /// claim ran out (its lease expired and another took it over).
    #[error("callback {id} is claimed by {by} now; this attempt's word is dropped")]
    LostClaim {
        /// The request.
        id: CallbackId,
        /// Who holds it.
        by: String,
    },
    /// The store cannot be reached or started.
    #[error("callback database: {0}")]
    Unavailable(String),
    /// PostgreSQL failed (connection lost, a constraint, a timeout).
    #[error("callback database (PostgreSQL): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored value cannot be read back (edited by hand, or damaged).
    #[error("callback {id}: the stored {what} is unreadable")]
    Corrupt {
        /// The request.
        id: CallbackId,
        /// Which value, and what it held.
        what: String,
    },
}

/// The durable store of callback requests (one SQLite connection).
///
/// Open one per thread or process; SQLite's locks make them safe together.
#[derive(Debug)]
pub struct CallbackStore {
    pub(super) conn: Connection,
    /// Who claims: see [`Claimant`].
    pub(super) claimant: Claimant,
}

/// Who claims requests in a store, and for how long a claim holds
/// without being renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// The node's name.
    pub node: String,
    /// This run of it (a restarted node is a new run, whose claims the
    /// old run's never were).
    pub run: String,
    /// How long a claim holds unless renewed.
    pub lease: std::time::Duration,
}

/// The lease of a claim unless configured: long enough for renewals every
/// third of it to survive a slow disk or a brief database outage.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Claimant {
    fn default() -> Self {
        Claimant {
            node: "local".into(),
            run: "0".into(),
            lease: DEFAULT_LEASE,
        }
    }
}

impl Claimant {
    /// What `claimed_by` holds: `node#run`.
    pub fn id(&self) -> String {
        format!("{}#{}", self.node, self.run)
    }

    /// What every run of this node's `claimed_by` starts with.
    pub fn node_prefix(&self) -> String {
        format!("{}#", self.node)
    }

    /// When a claim made or renewed at `now` runs out, in milliseconds.
    pub fn lease_until(&self, now: DateTime<Utc>) -> i64 {
        millis(now).saturating_add(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX))
    }
}

impl CallbackStore {
    /// Opens (creating if needed) the database file, in WAL mode with synced
    /// commits, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        schema::prepare(&mut conn, true).map_err(|e| match e {
            StoreError::Sqlite(source) => open_error(source),
            other => other,
        })?;
        Ok(CallbackStore {
            conn,
            claimant: Claimant::default(),
        })
    }

    /// Claims from now on are `claimant`'s.
    pub fn set_claimant(&mut self, claimant: Claimant) {
        self.claimant = claimant;
    }

    /// A private in-memory store, for tests and `simulate`: same rules,
    /// nothing on disk.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        schema::prepare(&mut conn, false)?;
        Ok(CallbackStore {
            conn,
            claimant: Claimant::default(),
        })
    }

    pub(super) fn begin(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Books a callback, or merges it into the one already booked for the
    /// same number and queue (pending or dialling): the merged request keeps
    /// the earliest `requested_at`, its window and its schedule, takes the
    /// higher priority and the new context (a call already in progress
    /// keeps the context it was claimed with).
    ///
    /// Returns after the commit is synced: only then may the caller hear
    /// "we will call you back".
    pub fn request(
        &mut self,
        new: NewCallback,
        now: DateTime<Utc>,
    ) -> Result<Requested, StoreError> {
        let new = validate(new)?;
        let context = serde_json::to_string(&new.context)?;
        let now_ms = millis(now);
        let tx = self.begin()?;
        let open: Option<CallbackId> = tx
            .query_row(
                "SELECT id FROM callbacks
                 WHERE number = ?1 AND queue = ?2 AND state IN ('pending', 'dialling')",
                params![new.number, new.queue],
                |r| r.get(0),
            )
            .optional()?;
        let requested = match open {
            Some(id) => {
                tx.execute(
                    "UPDATE callbacks SET requested_at = MIN(requested_at, ?2),
                         priority = MAX(priority, ?3), context = ?4, updated_at = ?5
                     WHERE id = ?1",
                    params![id, now_ms, new.priority, context, now_ms],
                )?;
                Requested::Merged(id)
            }
            None => {
                let due = new.not_before.map_or(now, |nb| nb.max(now));
                tx.execute(
                    "INSERT INTO callbacks (number, queue, priority, context, requested_at,
                         not_before, not_after, state, attempts, next_attempt_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?5)",
                    params![
                        new.number,
                        new.queue,
                        new.priority,
                        context,
                        now_ms,
                        new.not_before.map(millis),
                        new.not_after.map(millis),
                        millis(due),
                    ],
                )?;
                Requested::Created(tx.last_insert_rowid())
            }
        };
        tx.commit()?;
        tracing::info!(id = requested.id(), queue = %new.queue, ?requested, "callback requested");
        Ok(requested)
    }

    /// Claims the due pending requests for dialling: at most `max`, best
    /// first (priority, then age), and per queue no more than
    /// `limit_per_queue(queue)` dialling at once, those already dialling
    /// included. Each claimed request is `dialling`, has one more attempt
    /// counted and an open attempt row, all in one transaction: no two
    /// claimers, in this process or another, ever get the same request.
    ///
    /// Due means `next_attempt_at <= now` and inside `not_before` ..
    /// `not_after`. Opening hours are the caller's: return 0 from
    /// `limit_per_queue` for a closed queue. The function runs inside the
    /// transaction, so it must be quick and must not use the store.
    /// Pending requests past their `not_after` fail here as expired.
    pub fn claim_due(
        &mut self,
        now: DateTime<Utc>,
        limit_per_queue: &dyn Fn(&str) -> usize,
        max: usize,
    ) -> Result<Vec<Callback>, StoreError> {
        let now_ms = millis(now);
        let (owner, lease_until) = (self.claimant.id(), self.claimant.lease_until(now));
        let tx = self.begin()?;
        take_back_expired(&tx, now_ms)?;
        let expired = tx.execute(
            "UPDATE callbacks SET state = 'failed', updated_at = ?1,
                 last_error = 'expired: not dialled before not_after'
             WHERE state = 'pending' AND not_after < ?1",
            [now_ms],
        )?;
        if expired > 0 {
            tracing::info!(expired, "callbacks expired undialled");
        }
        let mut picked = Vec::new();
        if max > 0 {
            let dialling: HashMap<String, usize> = tx
                .prepare_cached(
                    "SELECT queue, COUNT(*) FROM callbacks WHERE state = 'dialling' GROUP BY queue",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
                .collect::<Result<_, _>>()?;
            // Hops from one queue to the next in the pending index instead
            // of reading every pending row as DISTINCT would.
            let queues: Vec<String> = tx
                .prepare_cached(
                    "WITH RECURSIVE q(queue) AS (
                         SELECT MIN(queue) FROM callbacks WHERE state = 'pending'
                         UNION ALL
                         SELECT (SELECT MIN(queue) FROM callbacks
                                 WHERE state = 'pending' AND queue > q.queue)
                         FROM q WHERE q.queue IS NOT NULL)
                     SELECT queue FROM q WHERE queue IS NOT NULL",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut due = tx.prepare_cached(&format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks
                 WHERE state = 'pending' AND queue = ?1 AND next_attempt_at <= ?2
                   AND (not_before IS NULL OR not_before <= ?2)
                   AND (not_after IS NULL OR not_after >= ?2)
                 ORDER BY priority DESC, requested_at, id LIMIT ?3"
            ))?;
            for queue in &queues {
                let busy = dialling.get(queue).copied().unwrap_or(0);
                let free = limit_per_queue(queue).saturating_sub(busy).min(max);
                if free == 0 {
                    continue;
                }
                let rows = due.query_map(params![queue, now_ms, free as i64], RawCallback::read)?;
                for raw in rows {
                    picked.push(raw?);
                }
            }
            // Each queue's best are in; now the best of all, across queues.
            picked.sort_by_key(RawCallback::dialling_order);
            picked.truncate(max);
        }
        let mut claimed = Vec::with_capacity(picked.len());
        {
            let mut mark = tx.prepare_cached(
                "UPDATE callbacks SET state = 'dialling', attempts = attempts + 1, updated_at = ?2,
                     claimed_by = ?3, lease_until = ?4
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            let mut attempt =
                tx.prepare_cached("INSERT INTO attempts (request_id, started_at) VALUES (?1, ?2)")?;
            for raw in picked {
                mark.execute(params![raw.id(), now_ms, owner, lease_until])?;
                attempt.execute(params![raw.id(), now_ms])?;
                let mut callback = raw.into_callback()?;
                callback.state = State::Dialling;
                callback.attempts += 1;
                callback.updated_at = now;
                claimed.push(callback);
            }
        }
        tx.commit()?;
        for callback in &claimed {
            tracing::info!(id = callback.id, queue = %callback.queue, attempt = callback.attempts, "callback claimed for dialling");
        }
        Ok(claimed)
    }

    /// Records how the request's current attempt went (the latest word
    /// wins: `Answered`, then `Connected`, then `Completed`) and returns the
    /// request as it now is.
    ///
    /// `Connected` moves a dialling request to `connected` and `Completed`
    /// moves it to `completed`; the other outcomes leave it `dialling` for
    /// the scheduler's decision ([`Self::apply`]), or use
    /// [`Self::settle_attempt`] to do both in one commit. A request that was
    /// cancelled meanwhile keeps its state; the outcome is still recorded.
    pub fn finish_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> Result<Callback, StoreError> {
        let owner = self.claimant.id();
        let tx = self.begin()?;
        record_outcome(&tx, id, now, outcome, &owner)?;
        let callback = get_in(&tx, id)?;
        tx.commit()?;
        Ok(callback)
    }

    /// Applies a scheduler decision to a request that was being dialled and
    /// returns its state after.
    ///
    /// A request an admin cancelled meanwhile stays cancelled (the admin's
    /// word wins over the dialler's) and `Ok(State::Cancelled)` tells the
    /// dialler so; other states that were not in flight are refused.
    pub fn apply(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        next: &Next,
    ) -> Result<State, StoreError> {
        let owner = self.claimant.id();
        let tx = self.begin()?;
        let state = apply_in(&tx, id, now, next, &owner)?;
        tx.commit()?;
        Ok(state)
    }

    /// [`Self::finish_attempt`] and [`Self::apply`] in one commit, so a crash
    /// between them cannot leave a finished attempt without its decision.
    pub fn settle_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
        next: &Next,
    ) -> Result<State, StoreError> {
        let owner = self.claimant.id();
        let tx = self.begin()?;
        record_outcome(&tx, id, now, outcome, &owner)?;
        let state = apply_in(&tx, id, now, next, &owner)?;
        tx.commit()?;
        Ok(state)
    }

    /// Puts a dialling (or connected) request back to pending, due at `at`.
    pub fn reschedule(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<State, StoreError> {
        self.apply(id, now, &Next::RetryAt(at))
    }

    /// Marks a dialling or connected request completed.
    pub fn complete(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<State, StoreError> {
        self.apply(id, now, &Next::Complete)
    }

    /// Marks a pending, dialling or connected request failed, for `reason`.
    pub fn fail(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<State, StoreError> {
        self.apply(id, now, &Next::Fail(reason.to_string()))
    }

    /// At start-up, before dialling: every request left `dialling` by an
    /// earlier run of this node (or by any process whose lease ran out)
    /// goes back to `pending`, due at `now`, and its open attempt is
    /// recorded as `interrupted`. Returns how many.
    ///
    /// This makes dialling at-least-once: a request whose call was ringing
    /// when the process died is dialled again. A request `connected` (its
    /// transfer accepted by the ACD) is completed instead: the callee was
    /// already handed to an agent. Claims of other live processes (other
    /// nodes sharing the store) are left to their leases.
    pub fn recover(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now_ms = millis(now);
        let mine = self.claimant.node_prefix();
        let tx = self.begin()?;
        let recovered = take_back(
            &tx,
            now_ms,
            // An exact prefix: LIKE ignores case in SQLite.
            "claimed_by IS NULL OR substr(claimed_by, 1, length(?2)) = ?2 OR lease_until < ?1",
            &mine,
            "restart",
        )?;
        tx.commit()?;
        Ok(recovered)
    }

    /// Renews the leases of this run's claims (the store thread does it
    /// every third of a lease). Returns how many it holds.
    pub fn renew(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let n = self.conn.execute(
            "UPDATE callbacks SET lease_until = ?2
             WHERE claimed_by = ?1 AND state IN ('dialling', 'connected')",
            params![self.claimant.id(), self.claimant.lease_until(now)],
        )?;
        Ok(n)
    }
}

/// Refuses what could never be dialled: a number that is not digits, or
/// no queue.
pub(crate) fn validate(new: NewCallback) -> Result<NewCallback, StoreError> {
    if new.number.is_empty() || !new.number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::InvalidNumber(new.number));
    }
    if new.queue.trim().is_empty() {
        return Err(StoreError::EmptyQueue);
    }
    Ok(new)
}

/// Takes back the claims whose lease ran out: their holder is gone.
fn take_back_expired(tx: &Transaction<'_>, now_ms: i64) -> Result<usize, StoreError> {
    take_back(tx, now_ms, "lease_until < ?1", "", "lease expired")
}

/// Takes back the in-flight requests matching `which` (SQL over `?1`, now,
/// and `?2`, `arg`): dialling ones are due again at once, their open
/// attempt `interrupted`; connected ones are completed. Returns how many
/// are due again.
fn take_back(
    tx: &Transaction<'_>,
    now_ms: i64,
    which: &str,
    arg: &str,
    why: &str,
) -> Result<usize, StoreError> {
    // SQLite wants exactly the parameters the statement names.
    let both = params![now_ms, arg];
    let args = if which.contains("?2") {
        both
    } else {
        &both[..1]
    };
    // An attempt that got as far as an answer says so; the result of
    // one whose decision was lost (`busy`, ...) is already true.
    tx.execute(
        &format!(
            "UPDATE attempts SET ended_at = ?1,
                 result = CASE WHEN result IS NULL THEN 'interrupted'
                               ELSE result || ', interrupted' END
             WHERE (result IS NULL OR result = 'answered')
               AND id IN (SELECT MAX(a.id) FROM attempts a
                          JOIN callbacks c ON c.id = a.request_id
                          WHERE c.state = 'dialling' AND ({which}) GROUP BY a.request_id)"
        ),
        args,
    )?;
    let recovered = tx.execute(
        &format!(
            "UPDATE callbacks SET state = 'pending', next_attempt_at = ?1, updated_at = ?1,
                 claimed_by = NULL, lease_until = NULL
             WHERE state = 'dialling' AND ({which})"
        ),
        args,
    )?;
    // Connected: the ACD accepted the transfer (202) and the callee was
    // on their way to an agent. Dialling them again could ring a
    // customer who is talking to that agent, so the promise counts as
    // kept, with a note of the unknown end.
    let handed_over = tx.execute(
        &format!(
            "UPDATE callbacks SET state = 'completed', updated_at = ?1,
                 claimed_by = NULL, lease_until = NULL,
                 last_error = 'transfer accepted; its end was not seen ({why})'
             WHERE state = 'connected' AND ({which})"
        ),
        args,
    )?;
    log_take_back(recovered, handed_over, why);
    Ok(recovered)
}

/// Says what taking claims back did (both stores).
pub(crate) fn log_take_back(recovered: usize, handed_over: usize, why: &str) {
    if handed_over > 0 {
        tracing::warn!(
            handed_over,
            why,
            "callbacks transferred when their dialler stopped are taken as completed"
        );
    }
    if recovered > 0 {
        tracing::warn!(
            recovered,
            why,
            "callbacks interrupted will be dialled again"
        );
    }
}
