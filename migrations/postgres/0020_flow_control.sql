-- Flow control (issue 19): a job's concurrency and rate limits as JSON
-- (NULL: none), and each fire's rendered keys (NULL: its job has none).
-- A key's row in `flow_keys` is what a claim locks (FOR UPDATE SKIP LOCKED)
-- before counting the key's running fires or taking from its rate window;
-- `starts` holds the times (ms, JSON array, oldest first) of the key's
-- latest admitted starts.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS flow TEXT;
ALTER TABLE fires ADD COLUMN IF NOT EXISTS concurrency_key TEXT;
ALTER TABLE fires ADD COLUMN IF NOT EXISTS rate_key TEXT;
-- A job that folds events (`debounce`, `singleton`) keeps at most one waiting
-- fire per trigger and key: a new event of the key replaces its event and
-- counts one more in `coalesced`, by an upsert on this partial unique index.
ALTER TABLE fires ADD COLUMN IF NOT EXISTS coalesce_key TEXT;
ALTER TABLE fires ADD COLUMN IF NOT EXISTS coalesced BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS fires_coalescing ON fires (trigger_key, coalesce_key)
    WHERE state = 'scheduled' AND coalesce_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS fires_by_concurrency_key ON fires (concurrency_key, state)
    WHERE concurrency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS fires_by_rate_key ON fires (rate_key) WHERE rate_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS flow_keys (
    flow_key   TEXT   NOT NULL PRIMARY KEY,
    starts     TEXT   NOT NULL DEFAULT '[]',
    updated_ms BIGINT NOT NULL DEFAULT 0
);
-- Overlap `cancel-other`: a claim that finds the job running marks its running
-- fires with the fire that supersedes them; their nodes find the marks with
-- the partial index and ask the runs to stop.
ALTER TABLE fires ADD COLUMN IF NOT EXISTS cancel_requested TEXT;
CREATE INDEX IF NOT EXISTS fires_cancel_requested ON fires (node_id) WHERE cancel_requested IS NOT NULL;
