-- +goose Up
-- Batch jobs. Postgres is the source of truth: every state a job can be in, every chunk's
-- progress and every webhook delivery is here, so that the reconciler can drive them again
-- after any loss of queue data.
CREATE TABLE jobs (
    id                   uuid PRIMARY KEY,
    owner                text             NOT NULL, -- the API key's id (jobs are visible to it only)
    owner_name           text             NOT NULL, -- the API key's name
    status               text             NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    model_version        text             NOT NULL, -- concrete version resolved at submission
    preprocessing        text             NOT NULL,
    confidence_threshold double precision NOT NULL,
    total                integer          NOT NULL DEFAULT 0 CHECK (total >= 0),
    processed            integer          NOT NULL DEFAULT 0,
    failed               integer          NOT NULL DEFAULT 0,
    low_confidence       integer          NOT NULL DEFAULT 0,
    chunk_size           integer          NOT NULL CHECK (chunk_size > 0),
    chunks_total         integer          NOT NULL DEFAULT 0,
    chunks_done          integer          NOT NULL DEFAULT 0,
    metadata             jsonb            NOT NULL DEFAULT '{}',
    webhook_url          text,
    error                text,
    input_format         text             NOT NULL, -- json, ndjson or csv
    created_at           timestamptz      NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    deadline_at          timestamptz      NOT NULL,
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    CHECK (processed + failed <= total)
);
CREATE INDEX jobs_owner_created_idx ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_active_idx ON jobs (status, updated_at) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Inputs are stored a chunk per row: the rows of one chunk as little-endian float64s
-- (rows x input_size). A chunk row is also the unit of work and of progress: status moves
-- pending -> done (or skipped when the job was cancelled) exactly once.
CREATE TABLE job_chunks (
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    chunk_index integer     NOT NULL,
    start_index integer     NOT NULL,
    rows        integer     NOT NULL CHECK (rows > 0),
    features    bytea       NOT NULL,
    status      text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'skipped')),
    done_at     timestamptz,
    PRIMARY KEY (job_id, chunk_index)
);
CREATE INDEX job_chunks_pending_idx ON job_chunks (job_id) WHERE status = 'pending';

-- Results, keyed by item: a chunk that runs twice writes nothing twice.
CREATE TABLE job_results (
    job_id         uuid             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_index     integer          NOT NULL,
    prediction     double precision,
    confidence     double precision,
    low_confidence boolean          NOT NULL DEFAULT false,
    error          text,
    PRIMARY KEY (job_id, item_index)
);

-- Webhook deliveries: one per terminal event of a job; every attempt is recorded.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    job_id          uuid        REFERENCES jobs (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    url             text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    enqueued_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    status_code integer,
    error       text,
    duration_ms double precision NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);

-- Idempotency keys (Stripe semantics), scoped to the API key.
CREATE TABLE idempotency_keys (
    owner           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea,
    status          text        NOT NULL DEFAULT 'in_flight' CHECK (status IN ('in_flight', 'done')),
    response_status integer,
    response_body   bytea,
    resource_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE job_results;
DROP TABLE job_chunks;
DROP TABLE jobs;
