-- +goose Up
-- How a chunk's features are encoded: 0, float64s; 1, decimals (internal/job/chunk.go).
ALTER TABLE job_chunks ADD COLUMN encoding smallint NOT NULL DEFAULT 0;

-- Each chunk's counts, written with its results in the chunk's own transaction. The counts
-- of an active job are summed from its chunks when read, and stored on the job when it
-- ends, so that the chunks of a job never update the job's row while they run: that row
-- is the target of job_results' foreign key, and every update of it made every chunk's
-- result rows check the key against a longer chain of row versions, and made the chunks
-- commit one at a time behind the row's lock.
ALTER TABLE job_chunks
    ADD COLUMN processed      integer NOT NULL DEFAULT 0,
    ADD COLUMN failed         integer NOT NULL DEFAULT 0,
    ADD COLUMN low_confidence integer NOT NULL DEFAULT 0;

-- Chunks already done in jobs still active get their counts from their results.
UPDATE job_chunks c SET processed = r.processed, failed = r.failed, low_confidence = r.low_confidence
FROM (
    SELECT d.job_id, d.chunk_index,
           count(*) FILTER (WHERE r.error IS NULL)::int AS processed,
           count(*) FILTER (WHERE r.error IS NOT NULL)::int AS failed,
           count(*) FILTER (WHERE r.low_confidence)::int AS low_confidence
    FROM job_chunks d
    JOIN jobs j ON j.id = d.job_id
    JOIN job_results r ON r.job_id = d.job_id AND r.item_index >= d.start_index AND r.item_index < d.start_index + d.rows
    WHERE j.status IN ('queued', 'running') AND d.status = 'done'
    GROUP BY d.job_id, d.chunk_index) r
WHERE c.job_id = r.job_id AND c.chunk_index = r.chunk_index;

-- +goose Down
-- Code before this migration reads every chunk as float64s.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM job_chunks WHERE status = 'pending' AND encoding <> 0) THEN
        RAISE EXCEPTION 'job_chunks: pending chunks in encoding 1; let their jobs finish or cancel them first';
    END IF;
END
$$;
-- +goose StatementEnd
-- Active jobs keep their counts on their row again.
UPDATE jobs j SET processed = c.processed, failed = c.failed, low_confidence = c.low_confidence, chunks_done = c.done
FROM (SELECT job_id, sum(processed)::int AS processed, sum(failed)::int AS failed,
             sum(low_confidence)::int AS low_confidence, count(*)::int AS done
      FROM job_chunks WHERE status = 'done' GROUP BY job_id) c
WHERE j.id = c.job_id AND j.status IN ('queued', 'running');
ALTER TABLE job_chunks DROP COLUMN processed, DROP COLUMN failed, DROP COLUMN low_confidence, DROP COLUMN encoding;
