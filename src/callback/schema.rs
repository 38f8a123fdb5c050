//! The callback database's connection settings and schema migrations.
//!
//! Migrations are numbered by their place in [`MIGRATIONS`] and recorded in
//! `schema_version`, one row per applied version, so that a newer server can
//! upgrade an older file and an older server refuses a newer file instead of
//! misreading it.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::store::StoreError;

/// How long a writer waits for another connection's write lock before
/// failing: long enough for the admin CLI and the server to take turns on
/// one file, short enough that a stuck lock shows up as an error.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Version N is `MIGRATIONS[N - 1]`; append, never edit a shipped entry.
///
/// Times are UTC milliseconds since the Unix epoch: they compare as
/// integers in indexes and carry no time zone to misread.
const MIGRATIONS: &[&str] = &[
    // 1: requests and their attempts.
    r#"
    CREATE TABLE callbacks (
        -- AUTOINCREMENT so that an id is never reused after a delete.
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        number          TEXT    NOT NULL,
        queue           TEXT    NOT NULL,
        priority        INTEGER NOT NULL,
        -- JSON array of [key, value] pairs, in the flow's order.
        context         TEXT    NOT NULL,
        requested_at    INTEGER NOT NULL,
        not_before      INTEGER,
        not_after       INTEGER,
        state           TEXT    NOT NULL CHECK (state IN
                            ('pending', 'dialling', 'connected', 'completed', 'failed', 'cancelled')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_error      TEXT
    );
    -- The database itself enforces one open request per number and queue,
    -- so no interleaving of processes can book two.
    CREATE UNIQUE INDEX callbacks_one_open_per_number_queue
        ON callbacks (number, queue) WHERE state IN ('pending', 'dialling');
    -- claim_due walks each queue's pending requests in dialling order.
    CREATE INDEX callbacks_pending_by_queue
        ON callbacks (queue, priority DESC, requested_at, id) WHERE state = 'pending';
    -- Pacing counts in-flight requests per queue; recover() finds them.
    CREATE INDEX callbacks_dialling ON callbacks (queue) WHERE state = 'dialling';
    -- claim_due expires pending requests past their window on every tick.
    CREATE INDEX callbacks_pending_expiry
        ON callbacks (not_after) WHERE state = 'pending' AND not_after IS NOT NULL;
    -- No general (state, queue) index: without statistics SQLite prefers it
    -- over the partial ones above and scans every pending row per tick.

    CREATE TABLE attempts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id   INTEGER NOT NULL REFERENCES callbacks (id),
        started_at   INTEGER NOT NULL,
        ended_at     INTEGER,
        -- NULL while the attempt is in progress.
        result       TEXT
    );
    CREATE INDEX attempts_by_request ON attempts (request_id, id);
    "#,
    // 2: claims carry who holds them and until when, so that with several
    // processes on one store a dead one's claims are taken back by the
    // others once the lease runs out, and a late word from a process that
    // lost its claim is refused.
    r#"
    ALTER TABLE callbacks ADD COLUMN claimed_by TEXT;
    ALTER TABLE callbacks ADD COLUMN lease_until INTEGER;
    CREATE INDEX callbacks_leases ON callbacks (lease_until)
        WHERE state IN ('dialling', 'connected');
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Sets the connection up for durability and sharing, then migrates.
///
/// `file` is false for in-memory databases, where WAL does not exist.
pub(crate) fn prepare(conn: &mut Connection, file: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        // WAL lets the admin CLI read while the server writes; the mode is
        // stored in the file, so every later connection gets it too.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
    }
    // FULL syncs the WAL at every commit: a commit survives power loss, not
    // only a killed process (NORMAL would lose the last commits on power loss).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: two processes opening a fresh file at once must not both
    // run migration 1.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY
         )",
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    if current > latest_version() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest_version(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [index as i64 + 1],
        )?;
    }
    tx.commit()?;
    Ok(())
}
