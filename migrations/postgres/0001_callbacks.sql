-- The callback store on PostgreSQL: the same tables, columns and meaning
-- as the embedded SQLite store (src/callback/schema.rs, versions 1 and 2),
-- so that the transitions read the same on both. Times are UTC
-- milliseconds since the Unix epoch.
CREATE TABLE callbacks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number          TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    -- JSON array of [key, value] pairs, in the flow's order.
    context         TEXT    NOT NULL,
    requested_at    BIGINT  NOT NULL,
    not_before      BIGINT,
    not_after       BIGINT,
    state           TEXT    NOT NULL CHECK (state IN
                        ('pending', 'dialling', 'connected', 'completed', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_error      TEXT,
    -- Who dials it now (`node#run`) and until when, unless renewed.
    claimed_by      TEXT,
    lease_until     BIGINT
);
-- One open request per number and queue, whichever node books it.
CREATE UNIQUE INDEX callbacks_one_open_per_number_queue
    ON callbacks (number, queue) WHERE state IN ('pending', 'dialling');
CREATE INDEX callbacks_pending_by_queue
    ON callbacks (queue, priority DESC, requested_at, id) WHERE state = 'pending';
CREATE INDEX callbacks_dialling ON callbacks (queue) WHERE state = 'dialling';
CREATE INDEX callbacks_pending_expiry
    ON callbacks (not_after) WHERE state = 'pending' AND not_after IS NOT NULL;
CREATE INDEX callbacks_leases ON callbacks (lease_until)
    WHERE state IN ('dialling', 'connected');

CREATE TABLE attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   BIGINT NOT NULL REFERENCES callbacks (id),
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    -- NULL while the attempt is in progress.
    result       TEXT
);
CREATE INDEX attempts_by_request ON attempts (request_id, id);
