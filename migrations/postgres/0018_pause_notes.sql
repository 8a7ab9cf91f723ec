-- Why a job is paused and until when (both optional): `job pause --note
-- TEXT --until TIME`. A job paused until a time resumes by itself then.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pause_note TEXT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS paused_until_ms BIGINT;
CREATE INDEX IF NOT EXISTS jobs_paused_until ON jobs (paused_until_ms) WHERE paused_until_ms IS NOT NULL;
