package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/webhook"
)

// Limits of the job and webhook tasks.
const (
	JobRunMaxRetry = 10
	JobRunTimeout  = 5 * time.Minute
	// JobChunkMaxRetry: a token is retried while the chunk it claimed fails (the chunk's
	// own attempts are bounded by job.Config.ChunkAttempts); one archived is enqueued again
	// by the reconciler.
	JobChunkMaxRetry = 5
	JobChunkTimeout  = 5 * time.Minute
	// WebhookMaxRetry gives a receiver about a day of exponential back-off (capped at 10 min).
	WebhookMaxRetry = 20
	WebhookTimeout  = 30 * time.Second
	// LeaseExpiredRetryDelay is how long a task recovered from a dead worker waits.
	LeaseExpiredRetryDelay = time.Second
)

// JobRunTaskID is the TaskID of a job's job:run task: the job id, so that a second enqueue
// (the reconciler's) is a harmless conflict.
func JobRunTaskID(id uuid.UUID) string { return TypeJobRun + ":" + id.String() }

// JobChunkTaskID is the TaskID of one chunk task.
func JobChunkTaskID(id uuid.UUID, chunk int) string {
	return fmt.Sprintf("%s:%s:%d", TypeJobChunk, id, chunk)
}

// WebhookTaskID is the TaskID of a delivery's task.
func WebhookTaskID(id uuid.UUID) string { return TypeWebhookDeliver + ":" + id.String() }

// JobPayload is the payload of job:run and job:chunk: ids and a range, never the rows.
type JobPayload struct {
	JobID uuid.UUID `json:"job_id"`
	Chunk int       `json:"chunk,omitempty"`
}

// WebhookPayload is the payload of webhook:deliver.
type WebhookPayload struct {
	DeliveryID uuid.UUID `json:"delivery_id"`
}

// JobClient enqueues the tasks of batch jobs; it implements job.Enqueuer. Every enqueue uses
// a deterministic TaskID, and a conflict (the task exists already) counts as success.
type JobClient struct {
	client     *asynq.Client
	inspector  *asynq.Inspector
	propagator propagation.TextMapPropagator
	logger     *slog.Logger
	shards     int // of the batch queue (BatchQueues)
}

var _ job.Enqueuer = (*JobClient)(nil)

// NewJobClient returns a JobClient on the queue Redis.
func NewJobClient(opt asynq.RedisConnOpt, logger *slog.Logger) *JobClient {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &JobClient{client: asynq.NewClient(opt), inspector: asynq.NewInspector(opt),
		propagator: propagation.TraceContext{}, logger: logger}
}

// WithBatchShards spreads the job tasks over n shards of the batch queue (BatchQueue); 1, the
// default, keeps the one queue "batch". It returns c.
func (c *JobClient) WithBatchShards(n int) *JobClient {
	c.shards = n
	return c
}

// Close closes the Redis connections.
func (c *JobClient) Close() error {
	return errors.Join(c.client.Close(), c.inspector.Close())
}

func (c *JobClient) headers(ctx context.Context) map[string]string {
	h := map[string]string{}
	c.propagator.Inject(ctx, propagation.MapCarrier(h))
	return h
}

// enqueue enqueues t; a TaskID conflict is success. An archived task of the same id (a task
// that ran out of retries while its work is still pending in Postgres) is deleted and the
// task enqueued again, so that the reconciler can re-drive it.
func (c *JobClient) enqueue(ctx context.Context, t *asynq.Task, queue, id string) error {
	_, err := c.client.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		info, ierr := c.inspector.GetTaskInfo(queue, id)
		if ierr != nil || info.State != asynq.TaskStateArchived {
			return nil // live (pending, active, scheduled, retry): nothing to do
		}
		if derr := c.inspector.DeleteTask(queue, id); derr != nil {
			return fmt.Errorf("delete archived %s: %w", id, derr)
		}
		_, err = c.client.EnqueueContext(ctx, t)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return nil
		}
	}
	return err
}

// EnqueueJobRun enqueues the job:run task of a job.
func (c *JobClient) EnqueueJobRun(ctx context.Context, id uuid.UUID) error {
	b, _ := json.Marshal(JobPayload{JobID: id})
	tid := JobRunTaskID(id)
	q := BatchQueue(c.shards, id, -1)
	t := asynq.NewTaskWithHeaders(TypeJobRun, b, c.headers(ctx), asynq.Queue(q), asynq.TaskID(tid),
		asynq.MaxRetry(JobRunMaxRetry), asynq.Timeout(JobRunTimeout))
	return c.enqueue(ctx, t, q, tid)
}

// EnqueueChunks enqueues one job:chunk task per chunk, a few at a time.
func (c *JobClient) EnqueueChunks(ctx context.Context, id uuid.UUID, chunks []int) error {
	headers := c.headers(ctx)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, chunk := range chunks {
		g.Go(func() error {
			b, _ := json.Marshal(JobPayload{JobID: id, Chunk: chunk})
			tid := JobChunkTaskID(id, chunk)
			q := BatchQueue(c.shards, id, chunk)
			t := asynq.NewTaskWithHeaders(TypeJobChunk, b, headers, asynq.Queue(q), asynq.TaskID(tid),
				asynq.MaxRetry(JobChunkMaxRetry), asynq.Timeout(JobChunkTimeout))
			return c.enqueue(ctx, t, q, tid)
		})
	}
	return g.Wait()
}

// EnqueueWebhook enqueues the webhook:deliver task of a delivery. Recording that it was
// enqueued is the webhook feature's (webhook.Store.MarkEnqueued, called by its caller).
func (c *JobClient) EnqueueWebhook(ctx context.Context, id uuid.UUID) error {
	b, _ := json.Marshal(WebhookPayload{DeliveryID: id})
	tid := WebhookTaskID(id)
	t := asynq.NewTaskWithHeaders(TypeWebhookDeliver, b, c.headers(ctx), asynq.Queue(QueueCritical), asynq.TaskID(tid),
		asynq.MaxRetry(WebhookMaxRetry), asynq.Timeout(WebhookTimeout))
	return c.enqueue(ctx, t, QueueCritical, tid)
}

// EnqueueJobAlert enqueues the one low-confidence summary of a finished job.
func (c *JobClient) EnqueueJobAlert(ctx context.Context, s job.Summary) error {
	p := AlertPayload{
		RequestID: "job:" + s.JobID.String(), JobID: s.JobID.String(), ModelVersion: s.ModelVersion,
		Threshold: s.Threshold, Items: s.Total, LowConfidenceItems: s.LowConfidence, CreatedAt: time.Now().UTC(),
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tid := AlertTaskID(p.RequestID)
	t := asynq.NewTaskWithHeaders(TypeAlertLowConfidence, b, c.headers(ctx), asynq.Queue(QueueCritical),
		asynq.TaskID(tid), asynq.MaxRetry(AlertMaxRetry), asynq.Timeout(AlertTimeout))
	return c.enqueue(ctx, t, QueueCritical, tid)
}

// JobRunner is what the job handlers need of the job feature (*job.Service).
type JobRunner interface {
	Enqueue(ctx context.Context, id uuid.UUID) error
	RunNext(ctx context.Context) (bool, error)
}

func parseJobPayload(t *asynq.Task) (JobPayload, error) {
	var p JobPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.JobID == uuid.Nil || p.Chunk < 0 {
		return p, fmt.Errorf("%s: %w: %v: %w", t.Type(), ErrBadPayload, err, asynq.SkipRetry) //nolint:errorlint // err is nil when only a field is missing; the task is refused either way
	}
	return p, nil
}

// HandleJobRun returns the job:run handler: it marks the job running and enqueues its pending
// chunks (again, harmlessly, when delivered twice).
func HandleJobRun(jobs JobRunner) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		p, err := parseJobPayload(t)
		if err != nil {
			return err
		}
		if err := jobs.Enqueue(ctx, p.JobID); err != nil {
			if errors.Is(err, job.ErrNotFound) {
				return fmt.Errorf("%s %s: %w: %w", TypeJobRun, p.JobID, err, asynq.SkipRetry)
			}
			return err
		}
		return nil
	}
}

// isFinalAttempt reports whether the running task has no retry left.
func isFinalAttempt(ctx context.Context) bool {
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}

// HandleJobChunk returns the job:chunk handler. A job:chunk task is a work token: it runs
// the next chunk by fair order across keys (job.Service.RunNext), which need not be the
// chunk its payload names; the payload's job and chunk only make its TaskID, so that
// job:run and the reconciler enqueue one token per pending chunk, once. A token that finds
// nothing to claim (other tokens took every chunk) ends. A chunk's attempts are counted in
// Postgres: its last failed attempt records its items as failed.
func HandleJobChunk(jobs JobRunner) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		if _, err := parseJobPayload(t); err != nil {
			return err
		}
		_, err := jobs.RunNext(ctx)
		return err
	}
}

// Deliverer is what the webhook handler needs (*webhook.Deliverer).
type Deliverer interface {
	Deliver(ctx context.Context, id uuid.UUID, attempt int, final bool) error
}

// HandleWebhookDeliver returns the webhook:deliver handler: one signed attempt per delivery
// of the task; a retryable failure is returned so that asynq retries it with
// WebhookRetryDelay.
func HandleWebhookDeliver(d Deliverer) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		var p WebhookPayload
		if err := json.Unmarshal(t.Payload(), &p); err != nil || p.DeliveryID == uuid.Nil {
			return fmt.Errorf("%s: %w: %v: %w", TypeWebhookDeliver, ErrBadPayload, err, asynq.SkipRetry) //nolint:errorlint // err is nil when only a field is missing; the task is refused either way
		}
		retried, _ := asynq.GetRetryCount(ctx)
		err := d.Deliver(ctx, p.DeliveryID, retried+1, isFinalAttempt(ctx))
		if errors.Is(err, webhook.ErrNotFound) {
			return fmt.Errorf("%s %s: %w: %w", TypeWebhookDeliver, p.DeliveryID, err, asynq.SkipRetry)
		}
		return err
	}
}

// RetryDelay is the worker's RetryDelayFunc: webhook deliveries back off exponentially with
// full jitter (honouring a receiver's Retry-After); a task whose worker died (asynq's recoverer
// found its lease expired) is run again after LeaseExpiredRetryDelay, since nothing about the
// task failed; other tasks use asynq's default.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	if errors.Is(err, asynq.ErrLeaseExpired) {
		return LeaseExpiredRetryDelay
	}
	if t.Type() == TypeWebhookDeliver {
		return webhook.RetryDelay(n, err)
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}
