package tasks_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
)

func newWatcher(t *testing.T, b bundle) *tasks.LossWatcher {
	t.Helper()
	rdb, err := redisdb.Open(b.redis.URL, time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	w := tasks.NewLossWatcher(rdb, tasks.RedisConnOpt(b.opts, time.Second), 50*time.Millisecond, testRegistry(), b.logger)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// lostReconciles lists the ids of the reconcile tasks enqueued for lost Redis data, from
// their keys: asynq's client registers a queue in asynq:queues only once per process, so
// after a restart the Inspector no longer knows the low queue.
func lostReconciles(t *testing.T, b bundle) []string {
	t.Helper()
	keys, err := b.redis.Client(t).Keys(context.Background(), "asynq:{low}:t:"+tasks.TypeMaintenanceReconcile+":redis-lost:*").Result()
	require.NoError(t, err)
	return keys
}

// The markers are set once; a Redis that restarts empty has none, and exactly one of two
// watchers claims the loss.
func TestLossWatcherNoticesARedisThatCameBackEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, c := newWatcher(t, b), newWatcher(t, b)

	lost, err := a.Check(ctx)
	require.NoError(t, err)
	require.True(t, lost, "no marker at start: the Redis may have been lost while nobody watched")
	lost, err = c.Check(ctx)
	require.NoError(t, err)
	require.False(t, lost, "the markers are back: the second watcher has nothing to claim")
	lost, err = a.Check(ctx)
	require.NoError(t, err)
	require.False(t, lost)

	b.redis.Restart(t)
	require.Eventually(t, func() bool {
		lost, err = a.Check(ctx)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.True(t, lost, "a restarted, empty Redis lost the markers")
	lost, err = c.Check(ctx)
	require.NoError(t, err)
	require.False(t, lost)

	b.redis.Client(t).Del(ctx, tasks.MarkerKey(tasks.QueueBatch))
	lost, err = c.Check(ctx)
	require.NoError(t, err)
	require.True(t, lost, "one queue's marker gone (a flush, a failed-over shard) is a loss too")
}

// Run enqueues one reconcile without grace per loss, and none while the markers stay.
func TestLossWatcherRunEnqueuesAReconcilePerLoss(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := newWatcher(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	require.Eventually(t, func() bool { return len(lostReconciles(t, b)) == 1 }, 5*time.Second, 20*time.Millisecond)
	infos, err := b.inspector.ListPendingTasks(tasks.QueueLow)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	var p tasks.ReconcilePayload
	require.NoError(t, json.Unmarshal(infos[0].Payload, &p))
	require.True(t, p.RedisLost)
	time.Sleep(300 * time.Millisecond) // several more checks of the markers: still one task
	require.Len(t, lostReconciles(t, b), 1)

	b.redis.Restart(t) // the first task went with the data
	require.Eventually(t, func() bool { return len(lostReconciles(t, b)) == 1 }, 5*time.Second, 20*time.Millisecond,
		"a reconcile is enqueued into the new Redis")
}

// A reconcile for lost Redis data re-drives the pending chunks of a running job at once;
// the periodic one leaves a job that moved within the grace period alone.
func TestReconcileForLostRedisSkipsTheGrace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var id uuid.UUID
	require.NoError(t, b.pool.QueryRow(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing,
			confidence_threshold, chunk_size, input_format, deadline_at, status, total, chunks_total, updated_at)
		VALUES (gen_random_uuid(), 'o', 'o', 'v2.0.0', 'standard', 0.5, 10, 'ndjson', now() + interval '1 hour',
			'running', 20, 2, now() - interval '1 second') RETURNING id`).Scan(&id))
	_, err := b.pool.Exec(ctx, `INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features, status)
		VALUES ($1, 0, 0, 10, ''::bytea, 'done'), ($1, 1, 10, 10, ''::bytea, 'pending')`, id)
	require.NoError(t, err)
	jobs := tasks.NewJobClient(tasks.RedisConnOpt(b.opts, 0), b.logger)
	t.Cleanup(func() { _ = jobs.Close() })
	h := tasks.HandleReconcile(tasks.ReconcileConfig{Jobs: job.NewStore(b.pool), Enqueuer: jobs, Runner: noFail{t},
		Grace: time.Minute, Logger: b.logger})

	require.NoError(t, h.ProcessTask(ctx, asynq.NewTask(tasks.TypeMaintenanceReconcile, nil)))
	_, err = b.inspector.GetTaskInfo(tasks.QueueBatch, tasks.JobChunkTaskID(id, 1))
	require.ErrorIs(t, err, asynq.ErrQueueNotFound, "the periodic run waits for the grace period")

	lost, _ := json.Marshal(tasks.ReconcilePayload{RedisLost: true})
	require.NoError(t, h.ProcessTask(ctx, asynq.NewTask(tasks.TypeMaintenanceReconcile, lost)))
	info, err := b.inspector.GetTaskInfo(tasks.QueueBatch, tasks.JobChunkTaskID(id, 1))
	require.NoError(t, err, "the lost chunk is enqueued at once")
	require.Equal(t, asynq.TaskStatePending, info.State)

	err = h.ProcessTask(ctx, asynq.NewTask(tasks.TypeMaintenanceReconcile, []byte("{")))
	require.ErrorIs(t, err, asynq.SkipRetry, "a payload that does not decode is never retried")
}
