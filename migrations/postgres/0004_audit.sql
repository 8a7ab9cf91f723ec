-- The audit log of the admin API: who did what to which object, when, and how
-- it ended. Rows are only ever inserted.
CREATE TABLE IF NOT EXISTS audit_log (
    id      TEXT    NOT NULL PRIMARY KEY,
    at_ms   BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    status  BIGINT  NOT NULL,
    summary TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (at_ms DESC, id DESC);

-- Paused jobs are few: the metrics' trigger-state gauge finds their triggers
-- from this index instead of reading every job.
CREATE INDEX IF NOT EXISTS jobs_paused ON jobs (job_key) WHERE paused = 1;
