-- +goose Up
-- Fair share of batch capacity across API keys (README, "Fair share of batch capacity").
--
-- A job's priority orders the chunks of its own key: high before normal before low.
ALTER TABLE jobs ADD COLUMN priority text NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('high', 'normal', 'low'));

-- Whether a job's work tokens (one job:chunk task per chunk) were enqueued. A token runs
-- whichever chunk is next by fair order, so other jobs' tokens may run this job's chunks,
-- even all of them, before its job:run; its tokens must still be enqueued once (they then
-- run other jobs' chunks), or the tokens would fall short of the chunks.
ALTER TABLE jobs ADD COLUMN tokens_enqueued boolean NOT NULL DEFAULT false;
UPDATE jobs SET tokens_enqueued = true WHERE status <> 'queued';

-- A chunk is claimed by a worker for a lease (a crashed worker's claim lapses by itself) and
-- counts its attempts: past the worker's limit its items are recorded as failed.
ALTER TABLE job_chunks
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN attempts    integer NOT NULL DEFAULT 0;

-- One row per key that has submitted jobs: its weight (from the key, at its last submission)
-- and its virtual time, the rows claimed for it divided by its weight. The next chunk to run
-- is the first chunk of the key with the smallest virtual time; a key that comes back after
-- being idle starts at the smallest virtual time of the keys with work (no saved-up credit).
CREATE TABLE fair_tenants (
    owner      text PRIMARY KEY,
    weight     integer          NOT NULL DEFAULT 1 CHECK (weight >= 1),
    vtime      double precision NOT NULL DEFAULT 0,
    updated_at timestamptz      NOT NULL DEFAULT now()
);
INSERT INTO fair_tenants (owner)
SELECT DISTINCT owner FROM jobs WHERE status IN ('queued', 'running');

-- +goose Down
DROP TABLE fair_tenants;
ALTER TABLE job_chunks DROP COLUMN lease_until, DROP COLUMN attempts;
ALTER TABLE jobs DROP COLUMN priority, DROP COLUMN tokens_enqueued;
