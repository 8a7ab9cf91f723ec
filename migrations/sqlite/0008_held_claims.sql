-- A fire of an `allow` job claimed in the transaction that makes it due is held
-- as a `held_claims` row, one per trigger, instead of a `fires` row: a narrow
-- table under its key alone, where `fires` keeps six B-trees, written and
-- deleted once per fire. The store never holds (trigger, time) while a `fires`
-- row has it, nor makes a `fires` row of a time held. A held fire that is
-- retried, released or recovered becomes a `fires` row with the same id.
-- Rows live as long as their runs: the table is as small as the work in flight.

CREATE TABLE IF NOT EXISTS held_claims (
    trigger_key    TEXT    NOT NULL PRIMARY KEY,
    fire_id        TEXT    NOT NULL,
    job_key        TEXT    NOT NULL,
    scheduled_ms   INTEGER NOT NULL,
    priority       INTEGER NOT NULL,
    node_id        TEXT    NOT NULL,
    fencing        INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL
) WITHOUT ROWID;
