-- Event keys per source, and the bounds on a chain's and a job's fan-out (see
-- the SQLite twin for the reasoning). An idempotency key is unique per name and
-- `key_scope` (the emitting job, '' for the operator); a root event's
-- `chain_events` counts the events accepted below it; `fires.source_job` names
-- the job whose event started a fire.

ALTER TABLE events ADD COLUMN IF NOT EXISTS key_scope TEXT NOT NULL DEFAULT '';
UPDATE events SET key_scope = source_job WHERE source_job IS NOT NULL AND key_scope = '';
ALTER TABLE events ADD COLUMN IF NOT EXISTS root_id TEXT;
ALTER TABLE events ADD COLUMN IF NOT EXISTS chain_events BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_name_idem_key_key;
CREATE UNIQUE INDEX IF NOT EXISTS events_key_once ON events (name, key_scope, idem_key);

ALTER TABLE fires ADD COLUMN IF NOT EXISTS source_job TEXT;
CREATE INDEX IF NOT EXISTS fires_by_source_job ON fires (source_job) WHERE source_job IS NOT NULL;
