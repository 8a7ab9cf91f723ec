-- What each node can run, and what each job needs, so a fire is claimed only by a
-- node able to run it. A contract version `MAJOR.MINOR` is ranked
-- MAJOR * 1000000 + MINOR: a node implementing it runs the ranks from
-- MAJOR * 1000000 up to its own, i.e. one range check per fire.

ALTER TABLE modules ADD COLUMN IF NOT EXISTS wit_rank BIGINT;
UPDATE modules SET wit_rank = split_part(wit_version, '.', 1)::bigint * 1000000
    + split_part(wit_version, '.', 2)::bigint
WHERE wit_rank IS NULL AND wit_version ~ '^[0-9]+\.[0-9]+\.';

-- The rank of the module a job's reference resolves to now (NULL: no such module,
-- which any node turns into a NoOp). Kept by job and module writes.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS wit_need BIGINT;
UPDATE jobs SET wit_need = (
    SELECT m.wit_rank FROM modules m
    WHERE m.name = jobs.module OR m.name || '@' || m.version = jobs.module OR 'sha256:' || m.digest = jobs.module
    ORDER BY m.created_at DESC, m.version DESC LIMIT 1
);

ALTER TABLE nodes ADD COLUMN IF NOT EXISTS wit_lo BIGINT;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS wit_hi BIGINT;
-- Digests of the modules the node has compiled, comma-separated.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS modules TEXT NOT NULL DEFAULT '';
