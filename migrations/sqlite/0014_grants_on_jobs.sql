-- A job's grants move into its own row: the claim that reads a job to run it
-- reads its grants with it, so no run costs a statement of its own for them,
-- and a job and its grants are written in one statement (a fire can never
-- see a new job with old grants). NULL is nothing granted.
ALTER TABLE jobs ADD COLUMN grants TEXT;
UPDATE jobs SET grants = (SELECT g.grants FROM job_grants g WHERE g.job_key = jobs.job_key);
DROP TABLE job_grants;
