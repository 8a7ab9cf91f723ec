-- Released cluster locks no longer keep their row (a run taking a million lock
-- names left hundreds of thousands of rows). Fencing tokens must still only grow
-- for a name that is taken again, so the row named '' (no lock has that name)
-- keeps the highest token of every deleted row, and a new row's token starts
-- above it. SQLite has one writer, so the two statements of a release cannot
-- interleave with an acquire.
INSERT INTO cluster_locks (name, holder, token)
    SELECT '', NULL, COALESCE(MAX(token), 0) FROM cluster_locks WHERE true
    ON CONFLICT (name) DO NOTHING;
DELETE FROM cluster_locks WHERE holder IS NULL AND name <> '';

-- A job's kv quota (`kv_max_keys`, `kv_max_bytes` in the manifest); NULL is the
-- default quota.
ALTER TABLE jobs ADD COLUMN kv_max_keys INTEGER;
ALTER TABLE jobs ADD COLUMN kv_max_bytes INTEGER;
