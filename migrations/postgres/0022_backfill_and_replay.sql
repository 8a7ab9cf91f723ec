-- Where a fire came from, when not from its trigger's own schedule ('' for
-- those, and for run-now and events): 'backfill:allow', 'backfill:buffer',
-- 'backfill:skip' (an operator's backfill, with its overlap mode) or
-- 'replay:FIRE_ID' (a re-run of a failed fire). The claim, the runs and
-- history read it with the fire; the claim reads it in the row it reads anyway.
ALTER TABLE fires ADD COLUMN IF NOT EXISTS origin TEXT NOT NULL DEFAULT '';

-- Which fires have been replayed, one row per fire (its first fire, for a
-- replay of a replay): a second replay of the same history starts none.
CREATE TABLE IF NOT EXISTS fire_replays (
    source_fire_id TEXT   NOT NULL PRIMARY KEY,
    fire_id        TEXT   NOT NULL,
    job_key        TEXT   NOT NULL,
    created_ms     BIGINT NOT NULL
);
