-- Released cluster locks no longer keep their row (a run taking a million lock
-- names left hundreds of thousands of rows). Fencing tokens must still only grow
-- for a name that is taken again: every token, of a new row or a takeover, now
-- comes from one sequence, which never goes back, so a row deleted and created
-- again gets a larger token than any before it. Concurrent writers need no
-- shared row for that.
CREATE SEQUENCE IF NOT EXISTS cluster_lock_tokens;
SELECT setval('cluster_lock_tokens', COALESCE((SELECT MAX(token) FROM cluster_locks), 0) + 1, false);
DELETE FROM cluster_locks WHERE holder IS NULL;

-- A job's kv quota (`kv_max_keys`, `kv_max_bytes` in the manifest); NULL is the
-- default quota.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS kv_max_keys BIGINT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS kv_max_bytes BIGINT;
