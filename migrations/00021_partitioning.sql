-- +goose Up
-- predictions and job_results, the tables that grow with traffic, become partitioned by day
-- (declarative range partitioning), so that retention drops a day's partition, which writes
-- almost no WAL and leaves no dead rows to vacuum, instead of deleting its rows one by one.
--
-- The partition key is the UUIDv7 key of each table: predictions.id (the server's id of a
-- prediction, 00018) and job_results.job_id (jobs get UUIDv7 ids). A UUIDv7 begins with its
-- Unix time in milliseconds and Postgres orders uuids bytewise, so the keys of UTC day D are
-- the range [D's milliseconds then zeros, D+1's milliseconds then zeros). Postgres requires a
-- unique key of a partitioned table to include the partition key: here the key is the
-- primary key, (id) and (job_id, item_index), unchanged, so the writes keep deduplicating on
-- it (ON CONFLICT (id) DO NOTHING; ON CONFLICT DO NOTHING on (job_id, item_index)) with no
-- other column, and a replay of a record lands in the same partition, since its id is the
-- same. (Partitioning on created_at would have needed created_at in the primary key, and a
-- replay with another created_at would have been a second row.)
--
-- Each day partition is named <table>_pYYYYMMDD. A default partition, <table>_default, takes a
-- key of no day partition (from the far past or future, or a UUID that is not v7, such as a
-- job inserted by hand), so that no insert fails for want of a partition. The scheduler's
-- maintenance:partitions task creates the days ahead (PARTITION_DAYS_AHEAD), and moves any
-- rows of a new day out of the default partition when it creates it
-- (internal/postgres/partition.go).
--
-- The rows move over in this migration's transaction: each table is locked against writes
-- (EXCLUSIVE: reads go on), copied into the new partitioned table, counted against the old
-- one (the migration fails, and nothing changes, if a row is missing), and dropped; the
-- indexes are built after the copy. Writes wait for the migration to commit, and none is
-- lost. Cost: every row is written once more (the size of both tables in WAL and, for the
-- time of the copy, in disk).

-- uuid of the first millisecond of day d (UTC).
-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_day_bound(d date) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM d::timestamp) * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid
$$;
-- +goose StatementEnd

-- The UTC day of a UUIDv7, or NULL for a uuid that is not one or whose day is implausible
-- (before 2000 or more than a year ahead); its rows go to the default partition.
-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_uuid_day(id uuid) RETURNS date LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN substr(id::text, 15, 1) = '7' AND d >= date '2000-01-01' AND d <= current_date + 366 THEN d END
    FROM (SELECT (to_timestamp(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0) AT TIME ZONE 'UTC')::date AS d) AS x
$$;
-- +goose StatementEnd

-- Creates a partition of tbl for each day of days.
-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_create_days(tbl text, days date[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d date;
BEGIN
    FOREACH d IN ARRAY days LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            tbl || '_p' || to_char(d, 'YYYYMMDD'), tbl, pg_temp.predq_day_bound(d), pg_temp.predq_day_bound(d + 1));
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
END
$$;
-- +goose StatementEnd

-- Fails when the two tables hold different numbers of rows.
-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_same_count(a text, b text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    na bigint;
    nb bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', a) INTO na;
    EXECUTE format('SELECT count(*) FROM %I', b) INTO nb;
    IF na <> nb THEN
        RAISE EXCEPTION '%: % rows, but % has %', a, na, b, nb;
    END IF;
END
$$;
-- +goose StatementEnd

-- predictions
LOCK TABLE predictions IN EXCLUSIVE MODE;
CREATE TABLE predictions_partitioned (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
    PARTITION BY RANGE (id);
SELECT pg_temp.predq_create_days('predictions_partitioned', ARRAY(
    SELECT DISTINCT pg_temp.predq_uuid_day(id) FROM predictions WHERE pg_temp.predq_uuid_day(id) IS NOT NULL
    UNION SELECT (now() AT TIME ZONE 'UTC')::date + i FROM generate_series(0, 7) AS i ORDER BY 1));
INSERT INTO predictions_partitioned SELECT * FROM predictions;
SELECT pg_temp.predq_same_count('predictions', 'predictions_partitioned');
DROP TABLE predictions;
ALTER TABLE predictions_partitioned RENAME TO predictions;
-- +goose StatementBegin
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'predictions'::regclass LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', r.relname, replace(r.relname, 'predictions_partitioned_', 'predictions_'));
    END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE predictions ADD CONSTRAINT predictions_pkey PRIMARY KEY (id);
CREATE INDEX predictions_created_at_idx ON predictions (created_at DESC, id DESC);
CREATE INDEX predictions_user_created_idx ON predictions (user_id, created_at DESC, id DESC);
CREATE INDEX predictions_user_request_idx ON predictions (user_id, request_id, created_at DESC, id DESC);

-- job_results
LOCK TABLE job_results IN EXCLUSIVE MODE;
CREATE TABLE job_results_partitioned (LIKE job_results INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
    PARTITION BY RANGE (job_id);
SELECT pg_temp.predq_create_days('job_results_partitioned', ARRAY(
    SELECT pg_temp.predq_uuid_day(id) FROM jobs WHERE pg_temp.predq_uuid_day(id) IS NOT NULL
        AND EXISTS (SELECT 1 FROM job_results r WHERE r.job_id = jobs.id)
    UNION SELECT (now() AT TIME ZONE 'UTC')::date + i FROM generate_series(0, 7) AS i ORDER BY 1));
INSERT INTO job_results_partitioned SELECT * FROM job_results;
SELECT pg_temp.predq_same_count('job_results', 'job_results_partitioned');
DROP TABLE job_results;
ALTER TABLE job_results_partitioned RENAME TO job_results;
-- +goose StatementBegin
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'job_results'::regclass LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', r.relname, replace(r.relname, 'job_results_partitioned_', 'job_results_'));
    END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE job_results ADD CONSTRAINT job_results_pkey PRIMARY KEY (job_id, item_index);
ALTER TABLE job_results ADD CONSTRAINT job_results_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;

DROP FUNCTION pg_temp.predq_same_count(text, text);
DROP FUNCTION pg_temp.predq_create_days(text, date[]);
DROP FUNCTION pg_temp.predq_uuid_day(uuid);
DROP FUNCTION pg_temp.predq_day_bound(date);

-- +goose Down
-- Back to plain tables, every row copied (and counted) as on the way up.
-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_same_count(a text, b text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    na bigint;
    nb bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I', a) INTO na;
    EXECUTE format('SELECT count(*) FROM %I', b) INTO nb;
    IF na <> nb THEN
        RAISE EXCEPTION '%: % rows, but % has %', a, na, b, nb;
    END IF;
END
$$;
-- +goose StatementEnd

LOCK TABLE predictions IN EXCLUSIVE MODE;
CREATE TABLE predictions_plain (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);
INSERT INTO predictions_plain SELECT * FROM predictions;
SELECT pg_temp.predq_same_count('predictions', 'predictions_plain');
DROP TABLE predictions;
ALTER TABLE predictions_plain RENAME TO predictions;
ALTER TABLE predictions ADD CONSTRAINT predictions_pkey PRIMARY KEY (id);
CREATE INDEX predictions_created_at_idx ON predictions (created_at DESC, id DESC);
CREATE INDEX predictions_user_created_idx ON predictions (user_id, created_at DESC, id DESC);
CREATE INDEX predictions_user_request_idx ON predictions (user_id, request_id, created_at DESC, id DESC);

LOCK TABLE job_results IN EXCLUSIVE MODE;
CREATE TABLE job_results_plain (LIKE job_results INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);
INSERT INTO job_results_plain SELECT * FROM job_results;
SELECT pg_temp.predq_same_count('job_results', 'job_results_plain');
DROP TABLE job_results;
ALTER TABLE job_results_plain RENAME TO job_results;
ALTER TABLE job_results ADD CONSTRAINT job_results_pkey PRIMARY KEY (job_id, item_index);
ALTER TABLE job_results ADD CONSTRAINT job_results_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;
DROP FUNCTION pg_temp.predq_same_count(text, text);
