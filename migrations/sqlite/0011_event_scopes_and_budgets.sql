-- Event keys per source, and the bounds on a chain's and a job's fan-out.
--
-- An idempotency key is unique per event name *and source* (`key_scope`: the
-- emitting job's key, '' for the operator and the API), so a guest cannot take
-- a key the operator will use, nor one job another's. SQLite cannot drop a
-- UNIQUE constraint, so `events` is rebuilt (nothing references it).
--
-- `root_id` names the first event of the chain an event descends from (NULL:
-- the event is a root), and a root's `chain_events` counts the events accepted
-- below it, so one conditional UPDATE reserves a place in the chain's budget.
-- `fires.source_job` names the job whose event started a fire, so the fires a
-- job's events have waiting are counted from a partial index.

CREATE TABLE events_v11 (
    event_id     TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL,
    idem_key     TEXT,
    key_scope    TEXT    NOT NULL DEFAULT '',
    payload      TEXT    NOT NULL,
    depth        INTEGER NOT NULL,
    source_job   TEXT,
    source_fire  TEXT,
    fires        INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    root_id      TEXT,
    chain_events INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name, key_scope, idem_key)
);
INSERT INTO events_v11 (event_id, name, idem_key, key_scope, payload, depth, source_job, source_fire, fires, created_ms)
SELECT event_id, name, idem_key, COALESCE(source_job, ''), payload, depth, source_job, source_fire, fires, created_ms FROM events;
DROP TABLE events;
ALTER TABLE events_v11 RENAME TO events;
CREATE INDEX IF NOT EXISTS events_by_created ON events (created_ms);

ALTER TABLE fires ADD COLUMN source_job TEXT;
CREATE INDEX IF NOT EXISTS fires_by_source_job ON fires (source_job) WHERE source_job IS NOT NULL;
