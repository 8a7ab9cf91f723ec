-- What each node can run, and what each job needs, so a fire is claimed only by a
-- node able to run it. A contract version `MAJOR.MINOR` is ranked
-- MAJOR * 1000000 + MINOR: a node implementing it runs the ranks from
-- MAJOR * 1000000 up to its own, i.e. one range check per fire.
-- (SQLite has no ADD COLUMN IF NOT EXISTS; sqlx runs this file once, and
-- migrations of one file are serialized across processes by a lock file.)

ALTER TABLE modules ADD COLUMN wit_rank BIGINT;
-- CAST reads the leading integer: '1.2.3' -> 1; after the first dot, '2.3' -> 2.
UPDATE modules SET wit_rank = CAST(wit_version AS INTEGER) * 1000000
    + CAST(substr(wit_version, instr(wit_version, '.') + 1) AS INTEGER)
WHERE wit_rank IS NULL AND instr(wit_version, '.') > 0;

-- The rank of the module a job's reference resolves to now (NULL: no such module,
-- which any node turns into a NoOp). Kept by job and module writes.
ALTER TABLE jobs ADD COLUMN wit_need BIGINT;
UPDATE jobs SET wit_need = (
    SELECT m.wit_rank FROM modules m
    WHERE m.name = jobs.module OR m.name || '@' || m.version = jobs.module OR 'sha256:' || m.digest = jobs.module
    ORDER BY m.created_at DESC, m.version DESC LIMIT 1
);

ALTER TABLE nodes ADD COLUMN wit_lo BIGINT;
ALTER TABLE nodes ADD COLUMN wit_hi BIGINT;
-- Digests of the modules the node has compiled, comma-separated.
ALTER TABLE nodes ADD COLUMN modules TEXT NOT NULL DEFAULT '';
