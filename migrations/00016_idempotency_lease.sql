-- +goose Up
-- An in-flight Idempotency-Key claim holds a lease that its process renews while the request
-- runs; once the lease lapses (the process died), the next request with the key takes the
-- claim over. claim_token fences the holder: renewals and answers of a claim that was taken
-- over change nothing. The default keeps claims made by a process of the previous release
-- (and those in flight now) as long as that release waited before taking one over.
ALTER TABLE idempotency_keys
    ADD COLUMN lease_expires timestamptz NOT NULL DEFAULT now() + interval '10 minutes',
    ADD COLUMN claim_token   uuid;
-- The stored answer keeps its Location header rather than a job id.
ALTER TABLE idempotency_keys RENAME COLUMN resource_id TO response_location;
UPDATE idempotency_keys SET response_location = '/api/v1/jobs/' || response_location WHERE response_location IS NOT NULL;

-- +goose Down
UPDATE idempotency_keys SET response_location = substr(response_location, length('/api/v1/jobs/') + 1)
    WHERE response_location LIKE '/api/v1/jobs/%';
ALTER TABLE idempotency_keys RENAME COLUMN response_location TO resource_id;
ALTER TABLE idempotency_keys DROP COLUMN claim_token, DROP COLUMN lease_expires;
