-- +goose Up
-- Replay (POST /api/v1/jobs/{id}/replay): a job made over the stored inputs of a finished
-- job, run by another model version. replay_of names the job it replays (no foreign key:
-- retention may delete the original first; the comparison then says it is gone).
--
-- From this version on a chunk keeps its features when it is done or skipped (they used to
-- be emptied), so that a finished job's inputs stay until retention deletes the job. Chunks
-- emptied before this migration have octet_length(features) = 0: their jobs cannot be
-- replayed (409).
ALTER TABLE jobs ADD COLUMN replay_of uuid;
CREATE INDEX jobs_replay_of_idx ON jobs (replay_of) WHERE replay_of IS NOT NULL;

-- +goose Down
DROP INDEX jobs_replay_of_idx;
ALTER TABLE jobs DROP COLUMN replay_of;
