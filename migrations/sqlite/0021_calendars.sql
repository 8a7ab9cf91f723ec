-- Exclusion calendars: a name and its definition (kind, zone, base, rule) as
-- JSON, read whole by the claim when a due trigger names one.
CREATE TABLE IF NOT EXISTS calendars (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    updated_at INTEGER NOT NULL
);
-- The calendars a trigger honours, as a JSON array of names (NULL: none), so
-- a trigger without one reads as it did.
ALTER TABLE triggers ADD COLUMN calendars TEXT;
