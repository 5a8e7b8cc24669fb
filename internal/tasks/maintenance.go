package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/predq/predq/internal/maintenance"
)

// Periodic maintenance task types, enqueued by the scheduler on the low queue.
const (
	TypeMaintenanceReconcile  = "maintenance:reconcile"
	TypeMaintenanceRetention  = "maintenance:retention"
	TypeMaintenanceModelSync  = "maintenance:model-sync"
	TypeMaintenancePartitions = "maintenance:partitions"
)

// SlotTaskID is the TaskID of a periodic task for the time slot that contains at: the task
// type and the slot's start in unix seconds. Every scheduler computes the same id for the
// same slot, so a second scheduler's enqueue is a conflict, not a second task.
func SlotTaskID(taskType string, every time.Duration, at time.Time) string {
	slot := at.Truncate(every)
	return taskType + ":" + strconv.FormatInt(slot.Unix(), 10)
}

// Periodic is one task the scheduler enqueues every Every.
type Periodic struct {
	Type    string
	Every   time.Duration
	Timeout time.Duration
}

// Scheduler enqueues periodic tasks with a TaskID per time slot. It is asynq's enqueue with a
// deterministic id rather than asynq.Scheduler, whose entries carry fixed task options and
// so cannot give each run a slot-derived id. A finished task is retained for two slots, so
// that a scheduler that comes late to a slot (after the task already ran) still conflicts.
type Scheduler struct {
	client   *asynq.Client
	tasks    []Periodic
	logger   *slog.Logger
	enqueued *prometheus.CounterVec
	now      func() time.Time
}

// NewScheduler returns a scheduler of tasks on the queue Redis.
func NewScheduler(opt asynq.RedisConnOpt, tasks []Periodic, reg prometheus.Registerer, logger *slog.Logger) *Scheduler {
	s := &Scheduler{
		client: asynq.NewClient(opt),
		tasks:  tasks,
		logger: logger,
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scheduler_enqueues_total",
			Help: "Periodic task enqueues by task type and result (enqueued, duplicate: another scheduler had it, error).",
		}, []string{"task", "result"}),
		now: time.Now,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if reg != nil {
		reg.MustRegister(s.enqueued)
	}
	return s
}

// Close closes the Redis connection.
func (s *Scheduler) Close() error { return s.client.Close() }

// EnqueueSlot enqueues p's task for the slot containing at. It reports whether this call
// created the task (false: it existed already).
func (s *Scheduler) EnqueueSlot(ctx context.Context, p Periodic, at time.Time) (bool, error) {
	id := SlotTaskID(p.Type, p.Every, at)
	t := asynq.NewTask(p.Type, nil, asynq.Queue(QueueLow), asynq.TaskID(id), asynq.MaxRetry(0),
		asynq.Timeout(max(p.Timeout, time.Minute)), asynq.Retention(2*p.Every))
	_, err := s.client.EnqueueContext(ctx, t)
	switch {
	case err == nil:
		s.enqueued.WithLabelValues(p.Type, "enqueued").Inc()
		return true, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s.enqueued.WithLabelValues(p.Type, "duplicate").Inc()
		return false, nil
	default:
		s.enqueued.WithLabelValues(p.Type, "error").Inc()
		return false, err
	}
}

// Run enqueues each task at the start of each of its slots (and once at start-up for the
// current slot) until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	for _, p := range s.tasks {
		go s.loop(ctx, p)
	}
	<-ctx.Done()
}

func (s *Scheduler) loop(ctx context.Context, p Periodic) {
	for {
		now := s.now()
		if created, err := s.EnqueueSlot(ctx, p, now); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "periodic task not enqueued; next slot will try again", "task", p.Type, "error", err)
		} else if created {
			s.logger.DebugContext(ctx, "periodic task enqueued", "task", p.Type, "slot", SlotTaskID(p.Type, p.Every, now))
		}
		next := now.Truncate(p.Every).Add(p.Every)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// ReconcileConfig configures the reconciler.
type ReconcileConfig struct {
	// Jobs lists the jobs whose work may be lost (job.Store).
	Jobs ReconcileJobs
	// Deliveries lists the pending webhook deliveries and marks them enqueued (webhook.Store).
	Deliveries ReconcileDeliveries
	// Enqueuer enqueues what they list (a JobClient).
	Enqueuer *JobClient
	// Runner fails the jobs past their deadline (job.Service).
	Runner interface {
		Fail(ctx context.Context, id uuid.UUID, reason string) error
	}
	// Grace is how long a queued job, a running job's idle chunks or a pending delivery may
	// wait before the reconciler enqueues them again (default 30 s). A run for lost Redis
	// data (ReconcilePayload.RedisLost) uses no grace.
	Grace  time.Duration
	Logger *slog.Logger
}

// ReconcileJobs is what the reconciler reads of the job feature (*job.Store).
type ReconcileJobs interface {
	Expired(ctx context.Context) ([]uuid.UUID, error)
	Stale(ctx context.Context, grace time.Duration) ([]uuid.UUID, error)
	PendingChunks(ctx context.Context, grace time.Duration) (map[uuid.UUID][]int, error)
	Unfinished(ctx context.Context, grace time.Duration) ([]uuid.UUID, error)
}

// ReconcileDeliveries is what the reconciler reads and writes of the webhook feature
// (*webhook.Store).
type ReconcileDeliveries interface {
	Pending(ctx context.Context, olderThan time.Duration, limit int) ([]uuid.UUID, error)
	MarkEnqueued(ctx context.Context, id uuid.UUID) error
}

// ReconcileResult counts what one run re-drove.
type ReconcileResult struct {
	QueuedJobs     int
	Chunks         int
	UnfinishedJobs int // running, every chunk done, not finished
	Expired        int
	Webhooks       int
}

// Reconcile drives every job and delivery that Postgres says is unfinished back into the
// queues (after Redis lost data, or an enqueue failed after a commit): queued jobs get their
// job:run again, running jobs their pending chunks (or, with none left, job:run, which
// finishes them), terminal jobs their pending webhooks; jobs past their deadline fail. Work
// untouched for less than grace is left alone (its task is likely still queued); grace 0
// takes everything. Every enqueue has a deterministic TaskID, so what is still queued is not
// duplicated.
func Reconcile(ctx context.Context, cfg ReconcileConfig, grace time.Duration) (ReconcileResult, error) {
	var res ReconcileResult
	expired, err := cfg.Jobs.Expired(ctx)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, id := range expired {
		if err := cfg.Runner.Fail(ctx, id, "the job exceeded its deadline (JOB_TIMEOUT) before finishing"); err != nil {
			return res, err
		}
		res.Expired++
	}
	queued, err := cfg.Jobs.Stale(ctx, grace)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, id := range queued {
		if err := cfg.Enqueuer.EnqueueJobRun(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile job %s: %w", id, err)
		}
		res.QueuedJobs++
	}
	pending, err := cfg.Jobs.PendingChunks(ctx, grace)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for id, chunks := range pending {
		if err := cfg.Enqueuer.EnqueueChunks(ctx, id, chunks); err != nil {
			return res, fmt.Errorf("reconcile job %s chunks: %w", id, err)
		}
		res.Chunks += len(chunks)
	}
	unfinished, err := cfg.Jobs.Unfinished(ctx, grace)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, id := range unfinished {
		if err := cfg.Enqueuer.EnqueueJobRun(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile job %s: %w", id, err)
		}
		res.UnfinishedJobs++
	}
	if cfg.Deliveries == nil {
		return res, nil
	}
	deliveries, err := cfg.Deliveries.Pending(ctx, grace, reconcileLimit)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, id := range deliveries {
		if err := cfg.Enqueuer.EnqueueWebhook(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile delivery %s: %w", id, err)
		}
		if err := cfg.Deliveries.MarkEnqueued(ctx, id); err != nil {
			cfg.Logger.WarnContext(ctx, "delivery enqueued but not marked", "delivery_id", id, "error", err)
		}
		res.Webhooks++
	}
	return res, nil
}

// reconcileLimit bounds the deliveries one run enqueues; the next run takes the rest.
const reconcileLimit = 1000

// ReconcilePayload is the payload of maintenance:reconcile. The scheduler's periodic task has
// none; the one it enqueues on noticing that Redis lost its data has RedisLost set.
type ReconcilePayload struct {
	// RedisLost: the queue Redis lost its data, so every task of unfinished work is gone and
	// the grace period, which exists to leave queued tasks alone, is skipped.
	RedisLost bool `json:"redis_lost,omitempty"`
}

// HandleReconcile returns the maintenance:reconcile handler.
func HandleReconcile(cfg ReconcileConfig) asynq.HandlerFunc {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	grace := cfg.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	return func(ctx context.Context, t *asynq.Task) error {
		var p ReconcilePayload
		if len(t.Payload()) > 0 {
			if err := json.Unmarshal(t.Payload(), &p); err != nil {
				return fmt.Errorf("%s: %w: %w: %w", TypeMaintenanceReconcile, ErrBadPayload, err, asynq.SkipRetry)
			}
		}
		g := grace
		if p.RedisLost {
			g = 0
		}
		res, err := Reconcile(ctx, cfg, g)
		if err != nil {
			return err
		}
		if res != (ReconcileResult{}) || p.RedisLost {
			cfg.Logger.InfoContext(ctx, "reconciled", "redis_lost", p.RedisLost, "queued_jobs", res.QueuedJobs, "chunks", res.Chunks,
				"unfinished_jobs", res.UnfinishedJobs, "expired_jobs", res.Expired, "webhooks", res.Webhooks)
		}
		return nil
	}
}

// HandleRetention returns the maintenance:retention handler.
func HandleRetention(stores maintenance.Stores, r maintenance.Retention, logger *slog.Logger) asynq.HandlerFunc {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		d, err := maintenance.RunRetention(ctx, stores, r)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "retention", "predictions", d.Predictions, "jobs", d.Jobs,
			"idempotency_keys", d.IdempotencyKeys, "webhook_deliveries", d.Deliveries)
		return nil
	}
}

// HandlePartitions returns the maintenance:partitions handler: ensure creates the day
// partitions ahead (maintenance.EnsurePartitions) and reports how many it created.
func HandlePartitions(ensure func(context.Context) (int, error), logger *slog.Logger) asynq.HandlerFunc {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		n, err := ensure(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			logger.InfoContext(ctx, "partitions created", "partitions", n)
		}
		return nil
	}
}

// HandleModelSync returns the maintenance:model-sync handler: sync registers artifacts that
// appeared under MODEL_PATH and moves an unpinned latest; then every process is told.
func HandleModelSync(sync func(context.Context) error, announce func(context.Context) error) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		if err := sync(ctx); err != nil {
			return err
		}
		return announce(ctx)
	}
}
