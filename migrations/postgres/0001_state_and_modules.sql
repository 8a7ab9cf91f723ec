-- Per-job durable key-value state and the module registry.
-- Times are UTC, milliseconds since the Unix epoch (BIGINT), set from the database clock.

CREATE TABLE IF NOT EXISTS job_state (
    job_key    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      BYTEA   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (job_key, key)
);

CREATE TABLE IF NOT EXISTS modules (
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    wit_version TEXT    NOT NULL,
    size        BIGINT NOT NULL,
    bytes       BYTEA   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE INDEX IF NOT EXISTS modules_by_digest ON modules (digest);
CREATE INDEX IF NOT EXISTS modules_by_name_created ON modules (name, created_at);
