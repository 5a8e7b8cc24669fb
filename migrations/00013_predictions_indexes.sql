-- +goose Up
-- The indexes of predictions serve the queries the service runs, and no others: every row
-- written pays for each index (six made up most of Postgres's CPU per persisted prediction).
-- The listing is always scoped to an API key (user_id) and ordered by (created_at, id), with an
-- optional model_version filter; retention deletes by created_at; lookups go by id or
-- request_id. status is constant ('completed') and nothing filters on it.
DROP INDEX IF EXISTS predictions_status_idx;
DROP INDEX IF EXISTS predictions_user_id_idx;
DROP INDEX IF EXISTS predictions_model_version_idx;
CREATE INDEX IF NOT EXISTS predictions_user_created_idx ON predictions (user_id, created_at DESC, id DESC);

-- +goose Down
DROP INDEX IF EXISTS predictions_user_created_idx;
CREATE INDEX IF NOT EXISTS predictions_model_version_idx ON predictions (model_version, created_at DESC);
CREATE INDEX IF NOT EXISTS predictions_user_id_idx ON predictions (user_id);
CREATE INDEX IF NOT EXISTS predictions_status_idx ON predictions (status);
