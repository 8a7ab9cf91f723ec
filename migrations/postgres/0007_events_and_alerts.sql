-- Event triggers and failure alerts (see the SQLite twin for the reasoning).
-- A fire is unique on (trigger, scheduled time, event): event_id is '' for
-- every trigger but an event subscription.

ALTER TABLE triggers DROP CONSTRAINT IF EXISTS triggers_kind_check;
ALTER TABLE triggers ADD CONSTRAINT triggers_kind_check
    CHECK (kind IN ('cron', 'every', 'at', 'on-start', 'once', 'event'));
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS event_name TEXT;
CREATE INDEX IF NOT EXISTS triggers_by_event ON triggers (event_name) WHERE kind = 'event';

ALTER TABLE fires ADD COLUMN IF NOT EXISTS event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE fires ADD COLUMN IF NOT EXISTS depth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE fires DROP CONSTRAINT IF EXISTS fires_trigger_key_scheduled_ms_key;
CREATE UNIQUE INDEX IF NOT EXISTS fires_once ON fires (trigger_key, scheduled_ms, event_id);

CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT   NOT NULL PRIMARY KEY,
    name        TEXT   NOT NULL,
    idem_key    TEXT,
    payload     TEXT   NOT NULL,
    depth       BIGINT NOT NULL,
    source_job  TEXT,
    source_fire TEXT,
    fires       BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    UNIQUE (name, idem_key)
);
CREATE INDEX IF NOT EXISTS events_by_created ON events (created_ms);

CREATE TABLE IF NOT EXISTS alert_rules (
    name        TEXT   NOT NULL PRIMARY KEY,
    condition   TEXT   NOT NULL CHECK (condition IN ('permanent-failure', 'consecutive-failures', 'misfire', 'noop-skip')),
    job_pattern TEXT,
    threshold   BIGINT NOT NULL,
    webhook     TEXT   NOT NULL,
    source      TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery_id  TEXT   NOT NULL PRIMARY KEY,
    rule         TEXT   NOT NULL,
    dedup_key    TEXT   NOT NULL UNIQUE,
    job_key      TEXT,
    history_id   TEXT,
    payload      TEXT   NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts     BIGINT NOT NULL,
    next_at_ms   BIGINT NOT NULL,
    last_status  BIGINT,
    last_error   TEXT,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_at_ms) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alert_deliveries_by_created ON alert_deliveries (created_ms);

CREATE TABLE IF NOT EXISTS alert_cursor (
    name     TEXT   NOT NULL PRIMARY KEY,
    ended_ms BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS history_alertable ON task_history (ended_ms)
    WHERE status IN ('failed', 'retried', 'timeout', 'skipped', 'misfired');
