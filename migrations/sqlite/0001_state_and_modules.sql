-- Per-job durable key-value state and the module registry.
-- Times are UTC, milliseconds since the Unix epoch, set from the database clock.

CREATE TABLE IF NOT EXISTS job_state (
    job_key    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_key, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS modules (
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    wit_version TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    bytes       BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE INDEX IF NOT EXISTS modules_by_digest ON modules (digest);
CREATE INDEX IF NOT EXISTS modules_by_name_created ON modules (name, created_at);
