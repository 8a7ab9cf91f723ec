-- Each job's kv usage (keys, bytes of values), kept by a trigger on every
-- write of `job_state`, so a write's quota check reads one row instead of
-- summing every value the job holds (which let one job's kv writes take the
-- whole database: 10,000 writes of a job at its quota scanned 100 GB).
CREATE TABLE IF NOT EXISTS job_state_usage (
    job_key TEXT PRIMARY KEY,
    keys    BIGINT NOT NULL,
    bytes   BIGINT NOT NULL
);
INSERT INTO job_state_usage (job_key, keys, bytes)
    SELECT job_key, COUNT(*), COALESCE(SUM(length(value)), 0) FROM job_state GROUP BY job_key
    ON CONFLICT (job_key) DO NOTHING;

CREATE OR REPLACE FUNCTION job_state_usage_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_state_usage AS u (job_key, keys, bytes)
            VALUES (NEW.job_key, 1, length(NEW.value))
            ON CONFLICT (job_key) DO UPDATE SET keys = u.keys + 1, bytes = u.bytes + length(NEW.value);
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE job_state_usage SET bytes = bytes + length(NEW.value) - length(OLD.value)
            WHERE job_key = NEW.job_key;
    ELSE
        UPDATE job_state_usage SET keys = keys - 1, bytes = bytes - length(OLD.value)
            WHERE job_key = OLD.job_key;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS job_state_usage_rows ON job_state;
CREATE TRIGGER job_state_usage_rows AFTER INSERT OR DELETE ON job_state
    FOR EACH ROW EXECUTE FUNCTION job_state_usage_track();
DROP TRIGGER IF EXISTS job_state_usage_update ON job_state;
CREATE TRIGGER job_state_usage_update AFTER UPDATE OF value ON job_state
    FOR EACH ROW WHEN (length(NEW.value) <> length(OLD.value))
    EXECUTE FUNCTION job_state_usage_track();
