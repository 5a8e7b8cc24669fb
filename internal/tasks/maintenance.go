package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/predq/predq/internal/maintenance"
)

// Periodic maintenance task types, enqueued by the scheduler on the low queue.
const (
	TypeMaintenanceReconcile = "maintenance:reconcile"
	TypeMaintenanceRetention = "maintenance:retention"
	TypeMaintenanceModelSync = "maintenance:model-sync"
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
	Pool   *pgxpool.Pool
	Jobs   *JobClient
	Runner interface {
		Fail(ctx context.Context, id uuid.UUID, reason string) error
	}
	// Grace is how long a queued job, a running job's idle chunks or a pending delivery may
	// wait before the reconciler enqueues them again (default 30 s).
	Grace  time.Duration
	Logger *slog.Logger
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
// finishes them), terminal jobs their pending webhooks;
// jobs past their deadline fail. Every enqueue has a deterministic TaskID, so what is still
// queued is not duplicated.
func Reconcile(ctx context.Context, cfg ReconcileConfig) (ReconcileResult, error) {
	grace := cfg.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	var res ReconcileResult
	// Past their deadline: fail.
	expired, err := ids(ctx, cfg.Pool, `SELECT id FROM jobs WHERE status IN ('queued', 'running') AND deadline_at < now() LIMIT 1000`)
	if err != nil {
		return res, err
	}
	for _, id := range expired {
		if err := cfg.Runner.Fail(ctx, id, "the job exceeded its deadline (JOB_TIMEOUT) before finishing"); err != nil {
			return res, err
		}
		res.Expired++
	}
	// Queued for longer than the grace period: job:run again.
	queued, err := ids(ctx, cfg.Pool, `SELECT id FROM jobs WHERE status = 'queued' AND updated_at < now() - $1::interval
		ORDER BY created_at LIMIT 1000`, grace.String())
	if err != nil {
		return res, err
	}
	for _, id := range queued {
		if err := cfg.Jobs.EnqueueJobRun(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile job %s: %w", id, err)
		}
		res.QueuedJobs++
	}
	// Running, with pending chunks: enqueue them (the ones still queued conflict).
	rows, err := cfg.Pool.Query(ctx, `SELECT c.job_id, array_agg(c.chunk_index ORDER BY c.chunk_index)
		FROM job_chunks c JOIN jobs j ON j.id = c.job_id
		WHERE j.status = 'running' AND c.status = 'pending' AND j.updated_at < now() - $1::interval
		GROUP BY c.job_id LIMIT 1000`, grace.String())
	if err != nil {
		return res, fmt.Errorf("reconcile: pending chunks: %w", err)
	}
	type pending struct {
		id     uuid.UUID
		chunks []int32
	}
	var todo []pending
	var p pending
	if _, err := pgx.ForEachRow(rows, []any{&p.id, &p.chunks}, func() error {
		todo = append(todo, pending{p.id, append([]int32(nil), p.chunks...)})
		return nil
	}); err != nil {
		return res, fmt.Errorf("reconcile: pending chunks: %w", err)
	}
	for _, t := range todo {
		chunks := make([]int, len(t.chunks))
		for i, c := range t.chunks {
			chunks[i] = int(c)
		}
		if err := cfg.Jobs.EnqueueChunks(ctx, t.id, chunks); err != nil {
			return res, fmt.Errorf("reconcile job %s chunks: %w", t.id, err)
		}
		res.Chunks += len(chunks)
	}
	// Running with no chunk pending, untouched for the grace period: the worker of the last
	// chunk stopped between its commit and finishing the job, and its task is lost. job:run
	// again finishes it (it finds no chunk to enqueue).
	stalled, err := ids(ctx, cfg.Pool, `SELECT id FROM jobs j WHERE status = 'running' AND updated_at < now() - $1::interval
		AND NOT EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.status = 'pending')
		ORDER BY created_at LIMIT 1000`, grace.String())
	if err != nil {
		return res, err
	}
	for _, id := range stalled {
		if err := cfg.Jobs.EnqueueJobRun(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile job %s: %w", id, err)
		}
		res.UnfinishedJobs++
	}
	// Deliveries still pending and not enqueued within the grace period.
	deliveries, err := ids(ctx, cfg.Pool, `SELECT id FROM webhook_deliveries WHERE status = 'pending'
		AND (enqueued_at IS NULL OR enqueued_at < now() - $1::interval) ORDER BY created_at LIMIT 1000`, grace.String())
	if err != nil {
		return res, err
	}
	for _, id := range deliveries {
		if err := cfg.Jobs.EnqueueWebhook(ctx, id); err != nil {
			return res, fmt.Errorf("reconcile delivery %s: %w", id, err)
		}
		res.Webhooks++
	}
	return res, nil
}

func ids(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) ([]uuid.UUID, error) {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	return out, nil
}

// HandleReconcile returns the maintenance:reconcile handler.
func HandleReconcile(cfg ReconcileConfig) asynq.HandlerFunc {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		res, err := Reconcile(ctx, cfg)
		if err != nil {
			return err
		}
		if res != (ReconcileResult{}) {
			cfg.Logger.InfoContext(ctx, "reconciled", "queued_jobs", res.QueuedJobs, "chunks", res.Chunks, "unfinished_jobs", res.UnfinishedJobs,
				"expired_jobs", res.Expired, "webhooks", res.Webhooks)
		}
		return nil
	}
}

// HandleRetention returns the maintenance:retention handler.
func HandleRetention(pool *pgxpool.Pool, r maintenance.Retention, logger *slog.Logger) asynq.HandlerFunc {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		d, err := maintenance.RunRetention(ctx, pool, r)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "retention", "predictions", d.Predictions, "jobs", d.Jobs,
			"idempotency_keys", d.IdempotencyKeys, "webhook_deliveries", d.Deliveries)
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
