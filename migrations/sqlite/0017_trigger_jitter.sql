-- A trigger's jitter: each fire is due up to this many milliseconds after its
-- scheduled time (NULL: none).
ALTER TABLE triggers ADD COLUMN jitter_ms INTEGER;
