-- +goose Up
-- A prediction is stored under an id of the server's: a UUIDv7 that the api makes when it
-- computes the answer, and that every write and replay of the record is idempotent on
-- (ON CONFLICT (id) DO NOTHING). The client's X-Request-ID, request_id, is no longer a key but
-- a correlation column: two predictions sent with the same one are two rows. The bigint
-- identity id goes (a prediction's id is now a UUID).
--
-- Existing rows keep every column and get the id that prediction.DerivedID computes from
-- their request id and created_at (the same bytes, below), so that a persist task enqueued
-- before this migration and replayed after it (its records carry no id, and the worker gives
-- them that id) is still skipped. Before it, the store renamed the second of two predictions
-- that shared a request id to "<request id>~<created_at in Unix µs, base 36>"; such rows get
-- their client's request id back.
--
-- The unique constraint on request_id becomes the index (user_id, request_id, created_at DESC,
-- id DESC): the reads by request id are always within one tenant (user_id) and want the
-- newest first. The two indexes that held the old id are rebuilt with the new one.
--
-- Cost: one UPDATE of every row (each row is rewritten once), then the indexes are built.
ALTER TABLE predictions DROP CONSTRAINT predictions_request_id_key;

-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_unrenamed(request_id text, created_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN m IS NOT NULL AND (
            SELECT sum((strpos('0123456789abcdefghijklmnopqrstuvwxyz', substr(m[1], i, 1)) - 1)::numeric
                       * 36::numeric ^ (length(m[1]) - i))
            FROM generate_series(1, length(m[1])) AS i
        ) = extract(epoch FROM created_at) * 1000000
        THEN left(request_id, -1 - length(m[1]))
        ELSE request_id
    END
    FROM (SELECT regexp_match(request_id, '~([0-9a-z]{1,13})$') AS m) AS x
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_derived_id(request_id text, created_at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(set_byte(set_byte(b, 6, (get_byte(b, 6) & 15) | 112), 8, (get_byte(b, 8) & 63) | 128), 'hex')::uuid
    FROM (SELECT substr(int8send(floor(extract(epoch FROM created_at) * 1000)::bigint), 3, 6)
                 || substr(sha256(convert_to(request_id || '@' || (extract(epoch FROM created_at) * 1000000)::bigint::text, 'UTF8')), 1, 10)
                 AS b) AS x
$$;
-- +goose StatementEnd

ALTER TABLE predictions ADD COLUMN server_id uuid;
UPDATE predictions SET request_id = pg_temp.predq_unrenamed(request_id, created_at),
                       server_id = pg_temp.predq_derived_id(pg_temp.predq_unrenamed(request_id, created_at), created_at);
DROP FUNCTION pg_temp.predq_derived_id(text, timestamptz);
DROP FUNCTION pg_temp.predq_unrenamed(text, timestamptz);

-- Dropping the old id drops its primary key and the indexes that hold it.
ALTER TABLE predictions DROP COLUMN id;
ALTER TABLE predictions RENAME COLUMN server_id TO id;
ALTER TABLE predictions ALTER COLUMN id SET NOT NULL;
ALTER TABLE predictions ADD CONSTRAINT predictions_pkey PRIMARY KEY (id);
CREATE INDEX predictions_created_at_idx ON predictions (created_at DESC, id DESC);
CREATE INDEX predictions_user_created_idx ON predictions (user_id, created_at DESC, id DESC);
CREATE INDEX predictions_user_request_idx ON predictions (user_id, request_id, created_at DESC, id DESC);

-- +goose Down
-- Back to a bigint identity id and a unique request_id: of the predictions that share a
-- request id, the oldest keeps it and the others are renamed as the store named them before
-- (a "~" and their created_at in Unix µs, base 36; or their new bigint id when even that is
-- taken). The UUIDs are lost.
DROP INDEX predictions_user_request_idx;
ALTER TABLE predictions ADD COLUMN old_id bigint GENERATED ALWAYS AS IDENTITY;

-- +goose StatementBegin
CREATE FUNCTION pg_temp.predq_base36(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(nullif(ltrim(string_agg(substr('0123456789abcdefghijklmnopqrstuvwxyz',
               (floor(n / 36::numeric ^ k)::bigint % 36)::int + 1, 1), '' ORDER BY k DESC), '0'), ''), '0')
    FROM generate_series(0, 12) AS k
$$;
-- +goose StatementEnd

UPDATE predictions p SET request_id = p.request_id || '~' || pg_temp.predq_base36((extract(epoch FROM p.created_at) * 1000000)::bigint)
FROM (SELECT old_id, row_number() OVER (PARTITION BY request_id ORDER BY created_at, old_id) AS nth FROM predictions) AS d
WHERE d.old_id = p.old_id AND d.nth > 1;
UPDATE predictions p SET request_id = p.request_id || '~' || p.old_id
FROM (SELECT old_id, row_number() OVER (PARTITION BY request_id ORDER BY created_at, old_id) AS nth FROM predictions) AS d
WHERE d.old_id = p.old_id AND d.nth > 1;
DROP FUNCTION pg_temp.predq_base36(bigint);

ALTER TABLE predictions DROP COLUMN id;
ALTER TABLE predictions RENAME COLUMN old_id TO id;
ALTER TABLE predictions ADD CONSTRAINT predictions_pkey PRIMARY KEY (id);
ALTER TABLE predictions ADD CONSTRAINT predictions_request_id_key UNIQUE (request_id);
CREATE INDEX predictions_created_at_idx ON predictions (created_at DESC, id DESC);
CREATE INDEX predictions_user_created_idx ON predictions (user_id, created_at DESC, id DESC);
