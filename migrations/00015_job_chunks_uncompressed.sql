-- +goose Up
-- Job inputs are float64s, which lz4 does not make smaller (a 1,000,000-row job's input
-- took the same space with and without it): store them uncompressed, out of line, so that
-- neither the submission nor the chunks spend Postgres CPU on compressing and expanding them.
ALTER TABLE job_chunks ALTER COLUMN features SET STORAGE EXTERNAL;

-- +goose Down
ALTER TABLE job_chunks ALTER COLUMN features SET STORAGE EXTENDED;
