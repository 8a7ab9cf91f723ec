-- Per-job durable key-value state and the module registry.
-- Times are UTC (timestamptz), set from the database clock.

CREATE TABLE IF NOT EXISTS job_state (
    job_key    TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    value      BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_key, key)
);

CREATE TABLE IF NOT EXISTS modules (
    name        TEXT        NOT NULL,
    version     TEXT        NOT NULL,
    digest      TEXT        NOT NULL,
    wit_version TEXT        NOT NULL,
    size        BIGINT      NOT NULL,
    bytes       BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, version)
);

CREATE INDEX IF NOT EXISTS modules_by_digest ON modules (digest);
CREATE INDEX IF NOT EXISTS modules_by_name_created ON modules (name, created_at);
