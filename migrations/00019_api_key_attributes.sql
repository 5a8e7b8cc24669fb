-- +goose Up
-- What a stored key carries besides its scopes: the priority class of its synchronous work
-- (bulk is shed first under overload), its weight in the fair share of batch capacity, and
-- its quotas (NULL: the configured default). Existing keys get the defaults.
ALTER TABLE api_keys
    ADD COLUMN class text NOT NULL DEFAULT 'interactive' CHECK (class IN ('interactive', 'bulk')),
    ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    ADD COLUMN max_pending_rows bigint CHECK (max_pending_rows > 0),
    ADD COLUMN max_queued_jobs integer CHECK (max_queued_jobs > 0);

-- +goose Down
ALTER TABLE api_keys DROP COLUMN class, DROP COLUMN weight, DROP COLUMN max_pending_rows, DROP COLUMN max_queued_jobs;
