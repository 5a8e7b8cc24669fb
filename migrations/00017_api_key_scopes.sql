-- +goose Up
-- What each stored key may do. Keys stored before scopes existed get predict and jobs, the
-- default of `api keys create`: promoting a model now needs admin, which no old key gets
-- by itself.
ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{predict,jobs}'
    CHECK (cardinality(scopes) > 0 AND scopes <@ '{predict,jobs,admin,review}'::text[]);

-- +goose Down
ALTER TABLE api_keys DROP COLUMN scopes;
