-- +goose Up
-- Ground truth: the label of a synchronous prediction or of a job row (internal/label), one
-- current label per subject with its history.
--
-- The tables are keyed like their subjects, and partitioned like them (00021): the labels of
-- a prediction on predictions.id (prediction_id), those of a job row on job_results.job_id
-- (job_id), by range of the UUIDv7, one partition per UTC day named <table>_pYYYYMMDD, and a
-- default partition. A label's partition is the day of its subject's, so retention drops it
-- with its subject's partition, in the same transaction (internal/postgres/partition.go,
-- Companions), and the scheduler creates the days ahead for all of them.
--
-- Predictions have no foreign key from their labels: a partition of a table that a foreign key
-- references cannot be dropped, and the moves of rows out of a default partition
-- (EnsurePartitions) would cascade. The retention of predictions by rows deletes their labels
-- in the same statement instead. Job labels refer to jobs (not partitioned) and go with their
-- job (ON DELETE CASCADE), as the job's results do.
--
-- A label row also holds what the quality figures need of its subject, copied when it is
-- written (the subject does not change): the model version that answered and its score (the
-- probability of the positive class; NULL for a job row that failed). label is 1 (positive)
-- or 0 (negative). revision counts the changes of label: a label written again unchanged is
-- no change (no new revision, no history row).
--
-- Each history row carries the transaction that wrote it (xid, pg_current_xact_id()) and a
-- sequence number: the quality task (00023) reads the history in (xid, seq) order past a
-- watermark, and only the rows of transactions older than every running one
-- (pg_snapshot_xmin), so that a transaction that commits late is never skipped.
CREATE SEQUENCE label_history_seq;

CREATE TABLE prediction_labels (
    prediction_id uuid             NOT NULL,
    owner         text             NOT NULL, -- the API key's id (the prediction's user_id); '' for none
    label         smallint         NOT NULL CHECK (label IN (0, 1)),
    source        text             CHECK (length(source) <= 200),
    revision      integer          NOT NULL DEFAULT 1 CHECK (revision > 0),
    model_version text             NOT NULL,
    score         double precision NOT NULL,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (prediction_id)
) PARTITION BY RANGE (prediction_id);

CREATE TABLE prediction_label_history (
    prediction_id uuid        NOT NULL,
    revision      integer     NOT NULL,
    label         smallint    NOT NULL CHECK (label IN (0, 1)),
    source        text,
    xid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq           bigint      NOT NULL DEFAULT nextval('label_history_seq'),
    at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prediction_id, revision)
) PARTITION BY RANGE (prediction_id);
CREATE INDEX prediction_label_history_xid_idx ON prediction_label_history (xid, seq);

CREATE TABLE job_labels (
    job_id        uuid             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_index    integer          NOT NULL CHECK (item_index >= 0),
    label         smallint         NOT NULL CHECK (label IN (0, 1)),
    source        text             CHECK (length(source) <= 200),
    revision      integer          NOT NULL DEFAULT 1 CHECK (revision > 0),
    model_version text             NOT NULL,
    score         double precision, -- NULL: the row failed; it counts in no figure
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_index)
) PARTITION BY RANGE (job_id);

CREATE TABLE job_label_history (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_index integer     NOT NULL,
    revision   integer     NOT NULL,
    label      smallint    NOT NULL CHECK (label IN (0, 1)),
    source     text,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq        bigint      NOT NULL DEFAULT nextval('label_history_seq'),
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_index, revision)
) PARTITION BY RANGE (job_id);
CREATE INDEX job_label_history_xid_idx ON job_label_history (xid, seq);

-- A partition of each label table for every day partition of its subject, with the same
-- bounds, and a default partition.
-- +goose StatementBegin
DO $$
DECLARE
    pair text[];
    r record;
BEGIN
    FOREACH pair SLICE 1 IN ARRAY ARRAY[
        ['predictions', 'prediction_labels'], ['predictions', 'prediction_label_history'],
        ['job_results', 'job_labels'], ['job_results', 'job_label_history']] LOOP
        FOR r IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = pair[1]::regclass AND c.relname ~ ('^' || pair[1] || '_p[0-9]{8}$') LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I %s',
                pair[2] || substr(r.relname, length(pair[1]) + 1), pair[2], r.bound);
        END LOOP;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', pair[2] || '_default', pair[2]);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE job_label_history;
DROP TABLE job_labels;
DROP TABLE prediction_label_history;
DROP TABLE prediction_labels;
DROP SEQUENCE label_history_seq;
