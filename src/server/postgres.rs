//! The callback store on PostgreSQL, for several nodes sharing one store:
//! the schema and the transitions of the SQLite store, with claims taken
//! by `SELECT ... FOR UPDATE SKIP LOCKED` (so that two nodes never claim
//! one request, and neither waits for the other's rows) under a per-queue
//! advisory lock (so that the queue's pacing holds across nodes), and
//! leases that the other nodes take back when a node dies mid-dial.
//!
//! The driver is tokio-postgres. The store runs on the callback store's
//! own thread (as SQLite does, so that nothing here ever waits on a
//! runtime worker), driving the client on a runtime of its own; a lost
//! connection is opened again at the next call.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, NoTls, Transaction};

use crate::callback::row::{millis, RawCallback, CALLBACK_COLUMNS};
use crate::callback::scheduler::Next;
use crate::callback::store::{validate, Claimant, StoreError};
use crate::callback::{
    Attempt, AttemptOutcome, Callback, CallbackId, ListFilter, NewCallback, Requested, State,
    StoreStats,
};

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`. Kept as
/// SQL files in `migrations/postgres`; append, never edit a shipped one.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_callbacks.sql")];

/// The advisory lock key under which migrations run, so that two nodes
/// starting on an empty database do not both create the tables.
const MIGRATION_LOCK: i64 = 0x63_616c_6c66_6c6f; // "callflo"

/// How long connecting may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The callback store on a PostgreSQL database.
pub struct PgStore {
    runtime: tokio::runtime::Runtime,
    url: String,
    client: Option<Client>,
    claimant: Claimant,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PgStore")
            .field("claimant", &self.claimant)
            .finish()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host/db`, or the
    /// key=value form) and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start its runtime: {e}")))?;
        let mut store = PgStore {
            runtime,
            url: url.to_string(),
            client: None,
            claimant: Claimant::default(),
        };
        store.with(|rt, client| rt.block_on(migrate(client)))?;
        Ok(store)
    }

    /// Claims from now on are `claimant`'s.
    pub fn set_claimant(&mut self, claimant: Claimant) {
        self.claimant = claimant;
    }

    /// Runs `work` with a connected client, connecting first if there is
    /// none (or the last one broke).
    fn with<T>(
        &mut self,
        work: impl FnOnce(&tokio::runtime::Runtime, &mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut config: tokio_postgres::Config = self.url.parse()?;
            if config.get_connect_timeout().is_none() {
                // An unreachable database must not hold the store thread
                // for the kernel's minutes-long connect timeout.
                config.connect_timeout(CONNECT_TIMEOUT);
            }
            // A half-open connection is found in seconds, not hours.
            config.keepalives(true);
            config.keepalives_idle(std::time::Duration::from_secs(10));
            // Nothing may hold the store thread (which also renews the
            // leases) for long: a statement or a lock wait gives up, and
            // a transaction a broken client left open is ended by the
            // server.
            config.options(
                "-c statement_timeout=5000 -c lock_timeout=5000 \
                 -c idle_in_transaction_session_timeout=30000",
            );
            let (client, connection) = self.runtime.block_on(config.connect(NoTls))?;
            self.runtime.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!("callback database (PostgreSQL) connection: {e}");
                }
            });
            self.client = Some(client);
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        let result = work(&self.runtime, client);
        if result.is_err() {
            // A transaction dropped on an error only queues its ROLLBACK,
            // and this runtime runs only inside `block_on`: without a round
            // trip now, its row locks would be held until the next call
            // (other nodes waiting on them meanwhile). Outside a
            // transaction, ROLLBACK is a mere warning.
            let _ = self.runtime.block_on(client.batch_execute("ROLLBACK"));
        }
        result
    }

    /// See [`crate::callback::store::CallbackStore::request`].
    pub fn request(
        &mut self,
        new: NewCallback,
        now: DateTime<Utc>,
    ) -> Result<Requested, StoreError> {
        let new = validate(new)?;
        let context = serde_json::to_string(&new.context)?;
        let now_ms = millis(now);
        let due = millis(new.not_before.map_or(now, |nb| nb.max(now)));
        let requested = self.with(|rt, client| {
            rt.block_on(async {
                // One statement: two nodes booking the same number at once
                // meet in the unique index, and the second merges.
                let row = client
                    .query_one(
                        "INSERT INTO callbacks (number, queue, priority, context, requested_at,
                             not_before, not_after, state, attempts, next_attempt_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $5)
                         ON CONFLICT (number, queue) WHERE state IN ('pending', 'dialling')
                         DO UPDATE SET requested_at = LEAST(callbacks.requested_at, EXCLUDED.requested_at),
                             priority = GREATEST(callbacks.priority, EXCLUDED.priority),
                             context = EXCLUDED.context, updated_at = EXCLUDED.updated_at
                         RETURNING id, (xmax = 0) AS inserted",
                        &[
                            &new.number,
                            &new.queue,
                            &new.priority,
                            &context,
                            &now_ms,
                            &new.not_before.map(millis),
                            &new.not_after.map(millis),
                            &due,
                        ],
                    )
                    .await?;
                let id: i64 = row.try_get(0)?;
                let inserted: bool = row.try_get(1)?;
                Ok::<_, StoreError>(if inserted {
                    Requested::Created(id)
                } else {
                    Requested::Merged(id)
                })
            })
        })?;
        tracing::info!(id = requested.id(), queue = %new.queue, ?requested, "callback requested");
        Ok(requested)
    }

    /// See [`crate::callback::store::CallbackStore::claim_due`]. Each queue's claim
    /// runs under its advisory lock: nodes claiming for one queue take
    /// turns, so its pacing limit holds across them; rows another
    /// transaction holds are skipped, not waited for.
    pub fn claim_due(
        &mut self,
        now: DateTime<Utc>,
        limit_per_queue: &dyn Fn(&str) -> usize,
        max: usize,
    ) -> Result<Vec<Callback>, StoreError> {
        let now_ms = millis(now);
        let (owner, lease_until) = (self.claimant.id(), self.claimant.lease_until(now));
        let picked = self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                take_back(&tx, now_ms, "lease_until < $1", None, "lease expired").await?;
                let expired = tx
                    .execute(
                        "UPDATE callbacks SET state = 'failed', updated_at = $1,
                             last_error = 'expired: not dialled before not_after'
                         WHERE state = 'pending' AND not_after < $1",
                        &[&now_ms],
                    )
                    .await?;
                if expired > 0 {
                    tracing::info!(expired, "callbacks expired undialled");
                }
                let mut picked = Vec::new();
                if max > 0 {
                    let queues: Vec<String> = tx
                        .query(
                            "SELECT DISTINCT queue FROM callbacks WHERE state = 'pending' ORDER BY queue",
                            &[],
                        )
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                    for queue in &queues {
                        let limit = limit_per_queue(queue);
                        if limit == 0 {
                            continue;
                        }
                        // Another node claiming for this queue now: skip it
                        // this tick rather than wait (the store thread also
                        // renews leases, and must not stall).
                        let locked: bool = tx
                            .query_one(
                                "SELECT pg_try_advisory_xact_lock(hashtext('callflow queue ' || $1))",
                                &[queue],
                            )
                            .await?
                            .try_get(0)?;
                        if !locked {
                            continue;
                        }
                        let busy: i64 = tx
                            .query_one(
                                "SELECT COUNT(*) FROM callbacks WHERE state = 'dialling' AND queue = $1",
                                &[queue],
                            )
                            .await?
                            .try_get(0)?;
                        let free = limit
                            .saturating_sub(usize::try_from(busy).unwrap_or(usize::MAX))
                            .min(max);
                        if free == 0 {
                            continue;
                        }
                        let rows = tx
                            .query(
                                &format!(
                                    "SELECT {CALLBACK_COLUMNS} FROM callbacks
                                     WHERE state = 'pending' AND queue = $1 AND next_attempt_at <= $2
                                       AND (not_before IS NULL OR not_before <= $2)
                                       AND (not_after IS NULL OR not_after >= $2)
                                     ORDER BY priority DESC, requested_at, id LIMIT $3
                                     FOR UPDATE SKIP LOCKED"
                                ),
                                &[queue, &now_ms, &(free as i64)],
                            )
                            .await?;
                        for row in &rows {
                            picked.push(RawCallback::from_pg(row)?);
                        }
                    }
                    picked.sort_by_key(RawCallback::dialling_order);
                    picked.truncate(max);
                }
                for raw in &picked {
                    tx.execute(
                        "UPDATE callbacks SET state = 'dialling', attempts = attempts + 1,
                             updated_at = $2, claimed_by = $3, lease_until = $4
                         WHERE id = $1 AND state = 'pending'",
                        &[&raw.id(), &now_ms, &owner, &lease_until],
                    )
                    .await?;
                    tx.execute(
                        "INSERT INTO attempts (request_id, started_at) VALUES ($1, $2)",
                        &[&raw.id(), &now_ms],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, StoreError>(picked)
            })
        })?;
        let mut claimed = Vec::with_capacity(picked.len());
        for raw in picked {
            let mut callback = raw.into_callback()?;
            callback.state = State::Dialling;
            callback.attempts += 1;
            callback.updated_at = now;
            tracing::info!(id = callback.id, queue = %callback.queue, attempt = callback.attempts, "callback claimed for dialling");
            claimed.push(callback);
        }
        Ok(claimed)
    }

    /// See [`crate::callback::store::CallbackStore::finish_attempt`].
    pub fn finish_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> Result<Callback, StoreError> {
        let owner = self.claimant.id();
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                record_outcome(&tx, id, now, outcome, &owner).await?;
                let callback = get_in(&tx, id).await?;
                tx.commit().await?;
                Ok(callback)
            })
        })
    }

    /// See [`crate::callback::store::CallbackStore::settle_attempt`].
    pub fn settle_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
        next: &Next,
    ) -> Result<State, StoreError> {
        let owner = self.claimant.id();
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                record_outcome(&tx, id, now, outcome, &owner).await?;
                let state = apply_in(&tx, id, now, next, &owner).await?;
                tx.commit().await?;
                Ok(state)
            })
        })
    }

    /// One request.
    pub fn get(&mut self, id: CallbackId) -> Result<Callback, StoreError> {
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                let callback = get_in(&tx, id).await?;
                tx.commit().await?;
                Ok(callback)
            })
        })
    }

    /// A request's attempts, first first.
    pub fn attempts(&mut self, id: CallbackId) -> Result<Vec<Attempt>, StoreError> {
        let rows = self.with(|rt, client| {
            rt.block_on(async {
                Ok(client
                    .query(
                        "SELECT request_id, started_at, ended_at, result FROM attempts
                         WHERE request_id = $1 ORDER BY id",
                        &[&id],
                    )
                    .await?)
            })
        })?;
        rows.iter()
            .map(|r| {
                crate::callback::row::into_attempt((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                ))
            })
            .collect()
    }

    /// See [`crate::callback::store::CallbackStore::list`].
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<Callback>, StoreError> {
        let state = filter.state.map(State::as_str);
        let limit = filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = self.with(|rt, client| {
            rt.block_on(async {
                Ok(client
                    .query(
                        &format!(
                            "SELECT {CALLBACK_COLUMNS} FROM callbacks
                             WHERE ($1::TEXT IS NULL OR state = $1) AND ($2::TEXT IS NULL OR queue = $2)
                             ORDER BY id LIMIT $3"
                        ),
                        &[&state, &filter.queue, &limit],
                    )
                    .await?)
            })
        })?;
        rows.iter()
            .map(|r| RawCallback::from_pg(r)?.into_callback())
            .collect()
    }

    /// See [`crate::callback::store::CallbackStore::stats`].
    pub fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let (rows, oldest) = self.with(|rt, client| {
            rt.block_on(async {
                let rows = client
                    .query("SELECT state, COUNT(*) FROM callbacks GROUP BY state", &[])
                    .await?;
                let oldest: Option<i64> = client
                    .query_one(
                        "SELECT MIN(requested_at) FROM callbacks WHERE state = 'pending'",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                Ok((rows, oldest))
            })
        })?;
        let mut counts: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (state, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(c) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
                c.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(StoreStats {
            by_state: counts,
            oldest_pending: oldest.and_then(DateTime::<Utc>::from_timestamp_millis),
        })
    }

    /// See [`crate::callback::store::CallbackStore::cancel`].
    pub fn cancel(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                let (state, _) = lock(&tx, id).await?;
                allowed(id, state, &[State::Pending, State::Dialling], "cancelled")?;
                tx.execute(
                    "UPDATE callbacks SET state = 'cancelled', updated_at = $2 WHERE id = $1",
                    &[&id, &millis(now)],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })?;
        tracing::info!(id, "callback cancelled");
        Ok(())
    }

    /// See [`crate::callback::store::CallbackStore::retry`].
    pub fn retry(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                let (state, _) = lock(&tx, id).await?;
                let ok = [State::Failed, State::Cancelled, State::Pending];
                allowed(id, state, &ok, "retried")?;
                let other = tx
                    .query_opt(
                        "SELECT b.id FROM callbacks a JOIN callbacks b
                           ON b.number = a.number AND b.queue = a.queue AND b.id != a.id
                         WHERE a.id = $1 AND b.state IN ('pending', 'dialling')",
                        &[&id],
                    )
                    .await?;
                if let Some(row) = other {
                    return Err(StoreError::AlreadyOpen {
                        id,
                        existing: row.try_get(0)?,
                    });
                }
                tx.execute(
                    "UPDATE callbacks SET state = 'pending', attempts = 0, next_attempt_at = $2,
                         updated_at = $2, last_error = NULL
                     WHERE id = $1",
                    &[&id, &millis(now)],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
        })?;
        tracing::info!(id, "callback retried by an admin");
        Ok(())
    }

    /// Whether the database answers.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.with(|rt, client| {
            rt.block_on(async {
                client.simple_query("SELECT 1").await?;
                Ok(())
            })
        })
    }

    /// See [`crate::callback::store::CallbackStore::recover`]: this node's earlier
    /// runs' claims, and any lapsed lease.
    pub fn recover(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now_ms = millis(now);
        let mine = self.claimant.node_prefix();
        self.with(|rt, client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                let n = take_back(
                    &tx,
                    now_ms,
                    "claimed_by IS NULL OR starts_with(claimed_by, $2) OR lease_until < $1",
                    Some(&mine),
                    "restart",
                )
                .await?;
                tx.commit().await?;
                Ok(n)
            })
        })
    }

    /// See [`crate::callback::store::CallbackStore::renew`].
    pub fn renew(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let (owner, until) = (self.claimant.id(), self.claimant.lease_until(now));
        self.with(|rt, client| {
            rt.block_on(async {
                let n = client
                    .execute(
                        "UPDATE callbacks SET lease_until = $2
                         WHERE claimed_by = $1 AND state IN ('dialling', 'connected')",
                        &[&owner, &until],
                    )
                    .await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        .await?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(current),
            known: i64::from(known),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(index as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn get_in(tx: &Transaction<'_>, id: CallbackId) -> Result<Callback, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
    RawCallback::from_pg(&row)?.into_callback()
}

/// The request's state and holder, the row locked for the transaction.
async fn lock(tx: &Transaction<'_>, id: CallbackId) -> Result<(State, Option<String>), StoreError> {
    let row = tx
        .query_opt(
            "SELECT state, claimed_by FROM callbacks WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let text: String = row.try_get(0)?;
    let state = text.parse::<State>().map_err(|_| StoreError::Corrupt {
        id,
        what: format!("state `{text}`"),
    })?;
    Ok((state, row.try_get(1)?))
}

/// Refuses `owner`'s word on a request in flight that another holds.
fn fence(
    id: CallbackId,
    state: State,
    holder: Option<String>,
    owner: &str,
) -> Result<(), StoreError> {
    match holder {
        Some(by) if by != owner && matches!(state, State::Dialling | State::Connected) => {
            Err(StoreError::LostClaim { id, by })
        }
        _ => Ok(()),
    }
}

fn allowed(
    id: CallbackId,
    state: State,
    allowed: &[State],
    action: &'static str,
) -> Result<(), StoreError> {
    if allowed.contains(&state) {
        Ok(())
    } else {
        Err(StoreError::WrongState { id, state, action })
    }
}

async fn record_outcome(
    tx: &Transaction<'_>,
    id: CallbackId,
    now: DateTime<Utc>,
    outcome: &AttemptOutcome,
    owner: &str,
) -> Result<(), StoreError> {
    let (state, holder) = lock(tx, id).await?;
    // The dialler's word: only while this run still holds the claim.
    match holder {
        Some(by) if by == owner => {}
        Some(by) => return Err(StoreError::LostClaim { id, by }),
        None => {
            let attempted: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM attempts WHERE request_id = $1)",
                    &[&id],
                )
                .await?
                .try_get(0)?;
            return Err(if attempted {
                StoreError::LostClaim {
                    id,
                    by: "no one".to_string(),
                }
            } else {
                StoreError::NoAttempt(id)
            });
        }
    }
    let now_ms = millis(now);
    let updated = tx
        .execute(
            "UPDATE attempts SET result = $2, ended_at = $3
             WHERE id = (SELECT MAX(id) FROM attempts WHERE request_id = $1)",
            &[&id, &outcome.result_text(), &now_ms],
        )
        .await?;
    if updated == 0 {
        return Err(StoreError::NoAttempt(id));
    }
    let to = match outcome {
        AttemptOutcome::Connected => State::Connected,
        AttemptOutcome::Completed => State::Completed,
        _ => state,
    };
    if to != state && matches!(state, State::Dialling | State::Connected) {
        tx.execute(
            "UPDATE callbacks SET state = $2, updated_at = $3,
                 claimed_by = CASE WHEN $2 = 'connected' THEN claimed_by END,
                 lease_until = CASE WHEN $2 = 'connected' THEN lease_until END
             WHERE id = $1",
            &[&id, &to.as_str(), &now_ms],
        )
        .await?;
    }
    tracing::info!(id, outcome = %outcome, "callback attempt outcome");
    Ok(())
}

async fn apply_in(
    tx: &Transaction<'_>,
    id: CallbackId,
    now: DateTime<Utc>,
    next: &Next,
    owner: &str,
) -> Result<State, StoreError> {
    let (state, holder) = lock(tx, id).await?;
    fence(id, state, holder, owner)?;
    let now_ms = millis(now);
    if state == State::Cancelled {
        tracing::info!(id, ?next, "callback was cancelled; decision dropped");
        return Ok(State::Cancelled);
    }
    let in_flight = [State::Dialling, State::Connected];
    let state = match next {
        Next::RetryAt(at) => {
            allowed(id, state, &in_flight, "rescheduled")?;
            tx.execute(
                "UPDATE callbacks SET state = 'pending', next_attempt_at = $2, updated_at = $3,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&id, &millis(*at), &now_ms],
            )
            .await?;
            State::Pending
        }
        Next::Complete => {
            let ok = [State::Dialling, State::Connected, State::Completed];
            allowed(id, state, &ok, "completed")?;
            tx.execute(
                "UPDATE callbacks SET state = 'completed', updated_at = $2,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&id, &now_ms],
            )
            .await?;
            State::Completed
        }
        Next::Fail(reason) => {
            let ok = [State::Pending, State::Dialling, State::Connected];
            allowed(id, state, &ok, "failed")?;
            tx.execute(
                "UPDATE callbacks SET state = 'failed', last_error = $2, updated_at = $3,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&id, reason, &now_ms],
            )
            .await?;
            State::Failed
        }
    };
    tracing::info!(id, ?next, "callback decision applied");
    Ok(state)
}

/// Takes back the in-flight requests matching `which` (SQL over `$1`, now,
/// and `$2`, `arg`, if given), as the SQLite store's `take_back` does.
async fn take_back(
    tx: &Transaction<'_>,
    now_ms: i64,
    which: &str,
    arg: Option<&String>,
    why: &str,
) -> Result<usize, StoreError> {
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&now_ms];
    if let Some(arg) = arg {
        args.push(arg);
    }
    tx.execute(
        &format!(
            "UPDATE attempts SET ended_at = $1,
                 result = CASE WHEN result IS NULL THEN 'interrupted'
                               ELSE result || ', interrupted' END
             WHERE (result IS NULL OR result = 'answered')
               AND id IN (SELECT MAX(a.id) FROM attempts a
                          JOIN callbacks c ON c.id = a.request_id
                          WHERE c.state = 'dialling' AND ({which}) GROUP BY a.request_id)"
        ),
        &args,
    )
    .await?;
    let recovered = tx
        .execute(
            &format!(
                "UPDATE callbacks SET state = 'pending', next_attempt_at = $1, updated_at = $1,
                     claimed_by = NULL, lease_until = NULL
                 WHERE state = 'dialling' AND ({which})"
            ),
            &args,
        )
        .await?;
    let handed_over = tx
        .execute(
            &format!(
                "UPDATE callbacks SET state = 'completed', updated_at = $1,
                     claimed_by = NULL, lease_until = NULL,
                     last_error = 'transfer accepted; its end was not seen ({why})'
                 WHERE state = 'connected' AND ({which})"
            ),
            &args,
        )
        .await?;
    let (recovered, handed_over) = (
        usize::try_from(recovered).unwrap_or(usize::MAX),
        usize::try_from(handed_over).unwrap_or(usize::MAX),
    );
    crate::callback::store::log_take_back(recovered, handed_over, why);
    Ok(recovered)
}
