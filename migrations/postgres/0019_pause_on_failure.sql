-- A job's pause_on_failure: paused after this many failed runs in a row (NULL: never).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pause_on_failure BIGINT;
