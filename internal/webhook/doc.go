// Package webhook delivers the signed webhooks of finished batch jobs (DESIGN section 7).
//
// The pieces, from the job's terminal transaction to the receiver:
//
//	jobs code, inside the terminal transaction:
//	    Store.Create(ctx, tx, Delivery{ID: DeliveryID(jobID, type), …})  (ON CONFLICT DO NOTHING)
//	    then, after the commit, enqueue webhook:deliver with TaskID = the delivery id and
//	    Store.MarkEnqueued; the reconciler re-enqueues what Store.Pending lists.
//	webhook:deliver task handler (internal/tasks):
//	    Deliverer.Deliver(ctx, id, attempt, final) → nil (done) or an error wrapping ErrRetry
//	    (retry after RetryDelay / Backoff) or ErrNotFound (never retry).
//	Deliverer.Deliver: load → skip finished → Sender.Send (one signed POST through the
//	    SSRF-guarded client) → Store.RecordAttempt (one webhook_attempts row per attempt
//	    number, replay-safe) → classify.
//	job submission: ValidateURL refuses callback URLs that are malformed or that resolve to
//	    a non-public address (ErrForbiddenURL).
//
// Requests are signed per the Standard Webhooks specification (webhook-id, webhook-timestamp,
// webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>") with the reference
// library. The webhook-id is the delivery id, the same on every attempt, so that receivers
// can drop duplicates; the timestamp is the time of the attempt.
//
// Postgres is the source of truth: a delivery's status moves pending → delivered or
// pending → failed exactly once, and every attempt is a row of webhook_attempts keyed by
// (delivery_id, attempt), so a replayed task records nothing twice.
package webhook
