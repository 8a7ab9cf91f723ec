-- Event triggers and failure alerts.
--
-- Triggers gain the kind `event` (a subscription: `event_name`, never due by the
-- clock), and fires the event that caused them: a fire is then unique on
-- (trigger, scheduled time, event), so two events in the same millisecond each
-- fire every subscriber, while a clock trigger (event_id '') still fires once per
-- scheduled time. SQLite cannot alter a CHECK or UNIQUE constraint, so both
-- tables are rebuilt (nothing references them).

CREATE TABLE triggers_v7 (
    trigger_key  TEXT    NOT NULL PRIMARY KEY,
    job_key      TEXT    NOT NULL REFERENCES jobs (job_key) ON DELETE CASCADE,
    kind         TEXT    NOT NULL CHECK (kind IN ('cron', 'every', 'at', 'on-start', 'once', 'event')),
    cron         TEXT,
    tz           TEXT,
    period_ms    INTEGER,
    repeat_count INTEGER,
    at_ms        INTEGER,
    misfire      TEXT    NOT NULL CHECK (misfire IN ('fire-now', 'skip', 'fire-once')),
    start_ms     INTEGER,
    end_ms       INTEGER,
    priority     INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('WAITING', 'PAUSED', 'ERROR', 'COMPLETE')),
    next_fire_ms INTEGER,
    error        TEXT,
    updated_at   INTEGER NOT NULL,
    event_name   TEXT
);
INSERT INTO triggers_v7 (trigger_key, job_key, kind, cron, tz, period_ms, repeat_count, at_ms, misfire,
    start_ms, end_ms, priority, state, next_fire_ms, error, updated_at)
SELECT trigger_key, job_key, kind, cron, tz, period_ms, repeat_count, at_ms, misfire,
    start_ms, end_ms, priority, state, next_fire_ms, error, updated_at FROM triggers;
DROP TABLE triggers;
ALTER TABLE triggers_v7 RENAME TO triggers;
CREATE INDEX triggers_due ON triggers (state, next_fire_ms, priority DESC);
CREATE INDEX triggers_by_job ON triggers (job_key);
CREATE INDEX triggers_by_event ON triggers (event_name) WHERE kind = 'event';

CREATE TABLE fires_v7 (
    fire_id        TEXT    NOT NULL PRIMARY KEY,
    trigger_key    TEXT    NOT NULL,
    job_key        TEXT    NOT NULL,
    scheduled_ms   INTEGER NOT NULL,
    due_ms         INTEGER NOT NULL,
    priority       INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('scheduled', 'acquired')),
    recovering     INTEGER NOT NULL,
    node_id        TEXT,
    lease_until_ms INTEGER,
    fencing        INTEGER NOT NULL,
    -- The event that caused the fire, '' for every other trigger.
    event_id       TEXT    NOT NULL DEFAULT '',
    -- The depth of that event: a job's emits from this fire are one deeper.
    depth          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (trigger_key, scheduled_ms, event_id)
);
INSERT INTO fires_v7 (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state,
    recovering, node_id, lease_until_ms, fencing)
SELECT fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state,
    recovering, node_id, lease_until_ms, fencing FROM fires;
DROP TABLE fires;
ALTER TABLE fires_v7 RENAME TO fires;
CREATE INDEX fires_due ON fires (state, due_ms, priority DESC);
CREATE INDEX fires_by_job ON fires (job_key, state);
CREATE INDEX fires_by_lease ON fires (state, lease_until_ms);

-- Accepted events. An idempotency key is unique per event name (NULL keys never
-- collide); the fires of an event are written in the same transaction.
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    idem_key    TEXT,
    payload     TEXT    NOT NULL,
    depth       INTEGER NOT NULL,
    source_job  TEXT,
    source_fire TEXT,
    fires       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (name, idem_key)
);
CREATE INDEX IF NOT EXISTS events_by_created ON events (created_ms);

-- Alert rules: per job (a key or a `group/*` pattern) or global (job_pattern NULL).
CREATE TABLE IF NOT EXISTS alert_rules (
    name        TEXT    NOT NULL PRIMARY KEY,
    condition   TEXT    NOT NULL CHECK (condition IN ('permanent-failure', 'consecutive-failures', 'misfire', 'noop-skip')),
    job_pattern TEXT,
    threshold   INTEGER NOT NULL,
    webhook     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per alert to deliver, unique per rule and triggering condition, so a
-- condition seen twice (two nodes, a re-scan) is delivered once.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery_id  TEXT    NOT NULL PRIMARY KEY,
    rule         TEXT    NOT NULL,
    dedup_key    TEXT    NOT NULL UNIQUE,
    job_key      TEXT,
    history_id   TEXT,
    payload      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts     INTEGER NOT NULL,
    next_at_ms   INTEGER NOT NULL,
    last_status  INTEGER,
    last_error   TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_at_ms) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alert_deliveries_by_created ON alert_deliveries (created_ms);

-- Where the alert scan of task history has got to (one row per scan).
CREATE TABLE IF NOT EXISTS alert_cursor (
    name     TEXT    NOT NULL PRIMARY KEY,
    ended_ms INTEGER NOT NULL
);

-- History rows an alert can be about; successes (nearly every row) are not indexed.
CREATE INDEX IF NOT EXISTS history_alertable ON task_history (ended_ms)
    WHERE status IN ('failed', 'retried', 'timeout', 'skipped', 'misfired');
