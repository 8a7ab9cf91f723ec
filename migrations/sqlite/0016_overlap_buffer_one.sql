-- Overlap policy `buffer-one` (and `cancel-other`, reserved for the policy
-- that cancels the running fire). SQLite cannot change a CHECK constraint in
-- place: the column is renamed, a new one with the wider CHECK added and
-- filled, and the old one dropped (allowed: its only use is its own CHECK).
ALTER TABLE jobs RENAME COLUMN overlap TO overlap_before_0016;
ALTER TABLE jobs ADD COLUMN overlap TEXT NOT NULL DEFAULT 'allow'
    CHECK (overlap IN ('allow', 'forbid', 'skip', 'buffer-one', 'cancel-other'));
UPDATE jobs SET overlap = overlap_before_0016;
ALTER TABLE jobs DROP COLUMN overlap_before_0016;
