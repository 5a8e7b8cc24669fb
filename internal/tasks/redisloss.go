package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultLossCheckInterval is how often a LossWatcher looks at its marker keys.
const DefaultLossCheckInterval = time.Second

// MarkerKey is the marker key of a queue: it lives in the queue's hash slot ({queue}, as
// asynq's own keys do), so that on a Redis Cluster it goes with the shard that holds the
// queue. A LossWatcher sets it without expiry; a Redis that restarted empty, was flushed or
// failed over to a replica that had not yet received it no longer has it.
func MarkerKey(queue string) string { return "predq:alive:{" + queue + "}" }

// LossWatcher notices that the queue Redis lost its data and enqueues, at once, a
// maintenance:reconcile without grace (ReconcilePayload.RedisLost): every task of work that
// Postgres calls unfinished is then provably gone, so the reconciler need not wait for the
// periodic run and its grace period to drive it again.
//
// It checks one marker key per queue (MarkerKey) every interval. A missing marker is set
// again with SET NX: the watcher whose SET creates it enqueues the reconcile, so two
// schedulers watching the same Redis enqueue it once. A marker missing at start-up counts
// as a loss too (the Redis may have been lost while no watcher ran); on a fresh Redis the
// reconcile then finds nothing to do.
type LossWatcher struct {
	rdb      redis.UniversalClient
	client   *asynq.Client
	queues   []string
	every    time.Duration
	owner    string
	logger   *slog.Logger
	detected prometheus.Counter
	now      func() time.Time
}

// NewLossWatcher returns a watcher of the queue Redis: rdb reads and sets the markers,
// opt enqueues the reconcile. every ≤ 0 is DefaultLossCheckInterval; reg may be nil.
func NewLossWatcher(rdb redis.UniversalClient, opt asynq.RedisConnOpt, every time.Duration, reg prometheus.Registerer, logger *slog.Logger) *LossWatcher {
	if every <= 0 {
		every = DefaultLossCheckInterval
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	w := &LossWatcher{
		rdb: rdb, client: asynq.NewClient(opt), every: every, logger: logger, now: time.Now,
		queues: []string{QueueCritical, QueueDefault, QueueBatch, QueueLow},
		owner:  host + ":" + strconv.Itoa(os.Getpid()),
		detected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scheduler_redis_data_lost_total",
			Help: "Times the scheduler found the queue Redis without its marker keys (restarted empty, flushed, failed over) and enqueued a reconcile without grace.",
		}),
	}
	if reg != nil {
		reg.MustRegister(w.detected)
	}
	return w
}

// WithBatchShards watches the markers of the batch queue's n shards (BatchQueues) in place
// of the one batch queue's. It returns w.
func (w *LossWatcher) WithBatchShards(n int) *LossWatcher {
	w.queues = append([]string{QueueCritical, QueueDefault, QueueLow}, BatchQueues(n)...)
	return w
}

// Close closes the enqueue connection (rdb is the caller's).
func (w *LossWatcher) Close() error { return w.client.Close() }

// Run checks every interval until ctx ends.
func (w *LossWatcher) Run(ctx context.Context) {
	owed := false // a loss was noticed but its reconcile not yet enqueued
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		lost, err := w.Check(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			// Redis away: nothing to enqueue into; a loss shows once it is back.
			w.logger.DebugContext(ctx, "redis marker check failed", "error", err)
		case lost:
			owed = true
			w.detected.Inc()
			w.logger.WarnContext(ctx, "queue Redis lost its data; reconciling now")
		}
		if owed {
			if err := w.EnqueueReconcile(ctx); err != nil {
				if ctx.Err() == nil {
					w.logger.WarnContext(ctx, "reconcile after Redis data loss not enqueued; trying again", "error", err)
				}
			} else {
				owed = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check reports whether a marker key was missing and this call set it again (the caller
// then owns the reconcile). It returns an error when Redis does not answer.
func (w *LossWatcher) Check(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max(w.every, time.Second))
	defer cancel()
	cmds := make([]*redis.IntCmd, len(w.queues))
	if _, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range w.queues {
			cmds[i] = p.Exists(ctx, MarkerKey(q))
		}
		return nil
	}); err != nil {
		return false, fmt.Errorf("redis markers: %w", err)
	}
	lost := false
	value := w.owner + "@" + w.now().UTC().Format(time.RFC3339)
	for i, c := range cmds {
		if c.Val() == 1 {
			continue
		}
		set, err := w.rdb.SetNX(ctx, MarkerKey(w.queues[i]), value, 0).Result()
		if err != nil {
			return lost, fmt.Errorf("redis marker %s: %w", w.queues[i], err)
		}
		lost = lost || set
	}
	return lost, nil
}

// EnqueueReconcile enqueues a maintenance:reconcile with RedisLost set.
func (w *LossWatcher) EnqueueReconcile(ctx context.Context) error {
	b, _ := json.Marshal(ReconcilePayload{RedisLost: true})
	id := TypeMaintenanceReconcile + ":redis-lost:" + strconv.FormatInt(w.now().UnixNano(), 10)
	_, err := w.client.EnqueueContext(ctx, asynq.NewTask(TypeMaintenanceReconcile, b), asynq.Queue(QueueLow),
		asynq.TaskID(id), asynq.MaxRetry(3), asynq.Timeout(5*time.Minute))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}
