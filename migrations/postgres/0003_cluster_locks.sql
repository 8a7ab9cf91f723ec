-- Named cluster locks (the reference's cluster lock) with a lease and a fencing
-- token. A row stays after release, so the token only ever grows.
CREATE TABLE IF NOT EXISTS cluster_locks (
    name           TEXT    NOT NULL PRIMARY KEY,
    holder         TEXT,
    token          BIGINT NOT NULL,
    acquired_ms    BIGINT,
    lease_until_ms BIGINT
);
