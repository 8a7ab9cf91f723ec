-- Whether a claimed fire's run has begun. A node marks its claims just before
-- it runs them; a claim left by a node that stopped or died is then handed
-- back unmarked (never run: no history row, no `recovering`), and only a
-- started run is treated as interrupted (re-run flagged or recorded
-- `node-lost`). Claims in flight when this migration runs were taken by an
-- older node that never marked them: they count as started, as before.
ALTER TABLE fires ADD COLUMN started BIGINT NOT NULL DEFAULT 0;
ALTER TABLE held_claims ADD COLUMN started BIGINT NOT NULL DEFAULT 0;
UPDATE fires SET started = 1 WHERE state = 'acquired';
UPDATE held_claims SET started = 1;
