-- A claim locks the rows of its candidates' flow keys (issue 19) and then
-- counts their running fires. The count must be read after the locks are held:
-- one statement reads as of its start, before its locks, and would miss the
-- claims that a node holding a key a moment before committed in between.
-- This function does both in one call, so a claim pays one round trip: in
-- READ COMMITTED each statement of a VOLATILE function reads as of its own
-- start. Returns a JSON array of [key, starts, running fires] per locked key
-- (keys another claim holds are skipped), NULL when none is locked.
CREATE OR REPLACE FUNCTION flow_keys_lock(keys TEXT) RETURNS TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked TEXT[];
    windows TEXT[];
BEGIN
    WITH l AS MATERIALIZED (
        SELECT flow_key, starts FROM flow_keys
        WHERE flow_key IN (SELECT json_array_elements_text(CAST(keys AS json)))
        ORDER BY flow_key FOR UPDATE SKIP LOCKED)
    SELECT array_agg(flow_key), array_agg(starts) INTO locked, windows FROM l;
    IF locked IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT CAST(json_agg(json_build_array(u.k, u.s, COALESCE(c.n, 0))) AS TEXT)
            FROM unnest(locked, windows) AS u(k, s)
            LEFT JOIN (SELECT concurrency_key AS ck, COUNT(*) AS n FROM fires
                       WHERE state = 'acquired' AND concurrency_key = ANY(locked)
                       GROUP BY concurrency_key) c ON c.ck = u.k);
END
$$;
