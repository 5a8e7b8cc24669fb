-- +goose Up
-- Model registry: one row per artifact version, aliases that point at versions.
CREATE TABLE model_versions (
    version        text PRIMARY KEY,
    kind           text        NOT NULL,
    input_size     integer     NOT NULL CHECK (input_size > 0),
    preprocessings text[]      NOT NULL,
    metrics        jsonb       NOT NULL,
    dataset_sha256 text        NOT NULL,
    checksum       text        NOT NULL,
    artifact_file  text        NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- An alias points at a version. pinned is true once an operator promoted a version to it;
-- an unpinned "latest" follows the highest registered version.
CREATE TABLE model_aliases (
    alias      text PRIMARY KEY CHECK (alias ~ '^[a-z][a-z0-9_-]{0,62}$'),
    version    text        NOT NULL REFERENCES model_versions (version),
    pinned     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- API keys: only a SHA-256 hash of each key is stored.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash     bytea       NOT NULL UNIQUE,
    prefix       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Answered synchronous predictions (the seed's columns and indexes).
CREATE TABLE predictions (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id           text             NOT NULL,
    input_features       double precision[] NOT NULL,
    prediction           double precision NOT NULL,
    confidence           double precision NOT NULL,
    prediction_class     text             NOT NULL,
    model_version        text             NOT NULL,
    preprocessing        text             NOT NULL,
    confidence_threshold double precision NOT NULL,
    cached               boolean          NOT NULL DEFAULT false,
    user_id              text,
    latency_ms           double precision NOT NULL,
    status               text             NOT NULL DEFAULT 'completed',
    created_at           timestamptz      NOT NULL DEFAULT now(),
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT predictions_request_id_key UNIQUE (request_id)
);
CREATE INDEX predictions_created_at_idx ON predictions (created_at DESC, id DESC);
CREATE INDEX predictions_model_version_idx ON predictions (model_version, created_at DESC);
CREATE INDEX predictions_user_id_idx ON predictions (user_id);
CREATE INDEX predictions_status_idx ON predictions (status);

-- +goose Down
DROP TABLE predictions;
DROP TABLE api_keys;
DROP TABLE model_aliases;
DROP TABLE model_versions;
