-- Each job's kv usage (keys, bytes of values), kept by triggers on every write
-- of `job_state`, so a write's quota check reads one row instead of summing
-- every value the job holds (which let one job's kv writes take the whole
-- database: 10,000 writes of a job at its quota scanned 100 GB).
CREATE TABLE IF NOT EXISTS job_state_usage (
    job_key TEXT PRIMARY KEY,
    keys    INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO job_state_usage (job_key, keys, bytes)
    SELECT job_key, COUNT(*), COALESCE(SUM(length(value)), 0) FROM job_state GROUP BY job_key
    ON CONFLICT (job_key) DO NOTHING;

CREATE TRIGGER IF NOT EXISTS job_state_usage_insert AFTER INSERT ON job_state
BEGIN
    INSERT OR IGNORE INTO job_state_usage (job_key, keys, bytes) VALUES (NEW.job_key, 0, 0);
    UPDATE job_state_usage SET keys = keys + 1, bytes = bytes + length(NEW.value)
        WHERE job_key = NEW.job_key;
END;

CREATE TRIGGER IF NOT EXISTS job_state_usage_update AFTER UPDATE OF value ON job_state
    WHEN length(NEW.value) <> length(OLD.value)
BEGIN
    UPDATE job_state_usage SET bytes = bytes + length(NEW.value) - length(OLD.value)
        WHERE job_key = NEW.job_key;
END;

CREATE TRIGGER IF NOT EXISTS job_state_usage_delete AFTER DELETE ON job_state
BEGIN
    UPDATE job_state_usage SET keys = keys - 1, bytes = bytes - length(OLD.value)
        WHERE job_key = OLD.job_key;
END;
