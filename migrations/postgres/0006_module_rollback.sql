-- Rollback: a version newer than the one a name should mean is withdrawn, so
-- jobs following the name skip it. Pinned references (NAME@VERSION, sha256:)
-- still find it; pushing it again restores it.
ALTER TABLE modules ADD COLUMN IF NOT EXISTS withdrawn BIGINT NOT NULL DEFAULT 0;
