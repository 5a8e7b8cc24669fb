package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// ErrRetry is matched (errors.Is) by the error of Deliverer.Deliver when the attempt failed in
// a way worth retrying (network error, timeout, 408, 429, 5xx): the task should be retried
// after RetryDelay. The concrete error is a *RetryError.
var ErrRetry = errors.New("webhook delivery will be retried")

// RetryError is a retryable failure of one attempt. It matches ErrRetry and wraps the cause.
type RetryError struct {
	DeliveryID uuid.UUID
	Attempt    int
	StatusCode int           // 0 when there was no response
	RetryAfter time.Duration // the receiver's Retry-After, 0 when none
	Err        error
}

// Error describes the failed attempt.
func (e *RetryError) Error() string {
	return fmt.Sprintf("webhook delivery %s attempt %d: %v (will retry)", e.DeliveryID, e.Attempt, e.Err)
}

// Unwrap returns ErrRetry and the cause.
func (e *RetryError) Unwrap() []error { return []error{ErrRetry, e.Err} }

// Backoff bounds: the first retry waits up to BackoffBase, each next one up to twice as long,
// never more than BackoffMax.
const (
	BackoffBase = time.Second
	BackoffMax  = 10 * time.Minute
)

// Backoff returns the delay before retry n (0 for the first retry, as asynq's RetryDelayFunc
// counts): exponential with full jitter, a uniformly random duration in
// [0, min(BackoffMax, BackoffBase·2ⁿ)).
func Backoff(n int) time.Duration { return BackoffWith(n, BackoffBase, BackoffMax) }

// BackoffWith is Backoff with another base and ceiling (tests scale it down).
func BackoffWith(n int, base, ceiling time.Duration) time.Duration {
	if base <= 0 || ceiling <= 0 {
		return 0
	}
	n = min(max(n, 0), 62)
	limit := ceiling
	if n < 62 && base <= ceiling>>n {
		limit = base << n
	}
	return time.Duration(rand.Int64N(int64(limit)))
}

// RetryDelay is the delay before retry n of a task whose Deliver returned err: Backoff(n), or
// the receiver's Retry-After when that is longer (capped at BackoffMax). Use it as the
// webhook task's asynq RetryDelayFunc.
func RetryDelay(n int, err error) time.Duration {
	d := Backoff(n)
	var re *RetryError
	if errors.As(err, &re) && re.RetryAfter > d {
		d = min(re.RetryAfter, BackoffMax)
	}
	return d
}

// Deliverer runs the webhook:deliver step: load, send one attempt, record it.
type Deliverer struct {
	store  *Store
	sender *Sender
	logger *slog.Logger
}

// NewDeliverer returns a Deliverer over store and sender; logger (nil: discarded) receives a
// line per delivered or failed delivery.
func NewDeliverer(store *Store, sender *Sender, logger *slog.Logger) *Deliverer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Deliverer{store: store, sender: sender, logger: logger}
}

// recordTimeout bounds the recording of an attempt, which survives the cancellation of ctx.
const recordTimeout = 10 * time.Second

// Deliver makes attempt number attempt (1 for the first; asynq's retry count + 1) of delivery
// id; final says that no attempt is allowed after this one (retry count = max retry). It:
//   - loads the delivery: a missing one returns an error matching ErrNotFound, which will
//     never succeed (the task should not be retried: asynq.SkipRetry);
//   - returns nil without sending when the delivery is already delivered or failed;
//   - when this attempt number is already recorded (a replayed task), sends nothing again and
//     returns what was recorded: nil, or a *RetryError when the delivery is still pending;
//   - sends one attempt (Sender.Send) and records it (Store.RecordAttempt, even when ctx was
//     cancelled meanwhile);
//   - returns nil when the delivery is delivered or failed for good (a permanent failure, or
//     a retryable one on the final attempt, which marks it failed), and a *RetryError
//     (matching ErrRetry) when the attempt should be retried.
//
// Any other error (Postgres unavailable, …) is an infrastructure failure: retry the task. When
// the attempt was sent but could not be recorded, the next attempt sends it again; receivers
// drop the duplicate by its webhook-id.
func (dl *Deliverer) Deliver(ctx context.Context, id uuid.UUID, attempt int, final bool) error {
	if attempt < 1 {
		return fmt.Errorf("webhook deliver %s: attempt %d: attempt numbers start at 1", id, attempt)
	}
	d, recorded, err := dl.store.load(ctx, id, attempt)
	if err != nil {
		return fmt.Errorf("webhook deliver: %w", err)
	}
	log := dl.logger.With("delivery_id", id, "attempt", attempt)
	if d.JobID != uuid.Nil {
		log = log.With("job_id", d.JobID)
	}
	if d.Status != StatusPending {
		log.DebugContext(ctx, "webhook delivery already finished", "status", d.Status)
		return nil
	}
	if recorded {
		log.DebugContext(ctx, "webhook attempt already recorded")
		return &RetryError{DeliveryID: id, Attempt: attempt, StatusCode: d.LastStatus, Err: fmt.Errorf("attempt already recorded: %s", d.LastError)}
	}

	res := dl.sender.send(ctx, d, final, nil)

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := dl.store.RecordAttempt(rctx, id, attempt, res); err != nil {
		return fmt.Errorf("webhook deliver: %w", err)
	}
	switch res.Outcome {
	case OutcomeDelivered:
		log.InfoContext(ctx, "webhook delivered", "status_code", res.StatusCode, "duration_ms", res.Duration.Milliseconds())
		return nil
	case OutcomeFailed:
		log.WarnContext(ctx, "webhook delivery failed", "status_code", res.StatusCode, "error", res.Err.Error())
		return nil
	default:
		return &RetryError{DeliveryID: id, Attempt: attempt, StatusCode: res.StatusCode, RetryAfter: res.RetryAfter, Err: res.Err}
	}
}
