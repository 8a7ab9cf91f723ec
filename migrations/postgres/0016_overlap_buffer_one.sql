-- Overlap policy `buffer-one` (and `cancel-other`, reserved for the policy
-- that cancels the running fire).
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_overlap_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_overlap_check
    CHECK (overlap IN ('allow', 'forbid', 'skip', 'buffer-one', 'cancel-other'));
