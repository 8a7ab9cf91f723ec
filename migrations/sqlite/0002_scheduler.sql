-- Jobs, triggers, fires in flight, task history, nodes.
-- Times are UTC milliseconds since the Unix epoch, from the database clock.
-- Booleans are 0/1 integers, so both dialects share their SQL.

CREATE TABLE IF NOT EXISTS jobs (
    job_key            TEXT    NOT NULL PRIMARY KEY,
    module             TEXT    NOT NULL,
    data               TEXT    NOT NULL,
    overlap            TEXT    NOT NULL CHECK (overlap IN ('allow', 'forbid', 'skip')),
    max_attempts       INTEGER NOT NULL,
    backoff            TEXT    NOT NULL CHECK (backoff IN ('immediate', 'exponential')),
    backoff_initial_ms INTEGER NOT NULL,
    backoff_max_ms     INTEGER NOT NULL,
    jitter             REAL    NOT NULL,
    timeout_ms         INTEGER NOT NULL,
    max_memory         INTEGER NOT NULL,
    requests_recovery  INTEGER NOT NULL,
    priority           INTEGER NOT NULL,
    paused             INTEGER NOT NULL,
    source             TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS triggers (
    trigger_key  TEXT    NOT NULL PRIMARY KEY,
    job_key      TEXT    NOT NULL REFERENCES jobs (job_key) ON DELETE CASCADE,
    kind         TEXT    NOT NULL CHECK (kind IN ('cron', 'every', 'at', 'on-start', 'once')),
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
    updated_at   INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS triggers_due ON triggers (state, next_fire_ms, priority DESC);
CREATE INDEX IF NOT EXISTS triggers_by_job ON triggers (job_key);

-- One row per fire from the moment it is due until it is completed: the store
-- itself makes a double fire impossible through the unique key.
CREATE TABLE IF NOT EXISTS fires (
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
    UNIQUE (trigger_key, scheduled_ms)
);

CREATE INDEX IF NOT EXISTS fires_due ON fires (state, due_ms, priority DESC);
CREATE INDEX IF NOT EXISTS fires_by_job ON fires (job_key, state);
CREATE INDEX IF NOT EXISTS fires_by_lease ON fires (state, lease_until_ms);

CREATE TABLE IF NOT EXISTS task_history (
    id           TEXT    NOT NULL PRIMARY KEY,
    fire_id      TEXT,
    job_key      TEXT    NOT NULL,
    trigger_key  TEXT,
    status       TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    node_id      TEXT,
    scheduled_ms INTEGER,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    details      TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS history_by_job ON task_history (job_key, started_ms);
CREATE INDEX IF NOT EXISTS history_by_started ON task_history (started_ms);

-- `once` triggers run once per store for each module version of their job.
CREATE TABLE IF NOT EXISTS once_runs (
    job_key TEXT    NOT NULL,
    module  TEXT    NOT NULL,
    ran_at  INTEGER NOT NULL,
    PRIMARY KEY (job_key, module)
);

CREATE TABLE IF NOT EXISTS nodes (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    wit_versions TEXT    NOT NULL
);
