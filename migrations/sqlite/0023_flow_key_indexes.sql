-- The claim counts a concurrency key's running fires among the claimed ones
-- (`state = 'acquired'`, read through `fires_by_lease`): at most what the
-- cluster runs at once. An index of every fire by key made each keyed fire's
-- insert and claim write one more index entry, and was read only by the
-- hourly clean-up of idle keys, which reads the fires once instead.
DROP INDEX IF EXISTS fires_by_concurrency_key;
DROP INDEX IF EXISTS fires_by_rate_key;
