-- A job's grants (outbound HTTP, config, emits, secret injections) as JSON,
-- kept beside `jobs` rather than in it: a job without a row here is granted
-- nothing. Every write of a job writes (or deletes) its row.
CREATE TABLE IF NOT EXISTS job_grants (
    job_key    TEXT PRIMARY KEY,
    grants     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Secrets, encrypted (ChaCha20-Poly1305) with the node's secret key; the
-- plaintext is never stored. `key_id` names the key that sealed the value,
-- so a rotated key can still open values sealed before the rotation.
CREATE TABLE IF NOT EXISTS secrets (
    name       TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
