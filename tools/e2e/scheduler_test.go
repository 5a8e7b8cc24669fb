package e2e

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Issue 5: Redis loses everything (FLUSHALL) while jobs are queued and running; with the
// scheduler on, every job still reaches succeeded, with exact counts and no duplicate result.
func TestJobsSurviveRedisDataLoss(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{scheduler: true, env: map[string]string{
		"JOB_CHUNK_SIZE":     "200",
		"WORKER_CONCURRENCY": "2",
		"RECONCILE_INTERVAL": "1s",
		"RECONCILE_GRACE":    "2s",
	}})
	xs, _ := sonar(t)
	sizes := []int{3000, 5000, 4000}
	var ids []string
	for _, n := range sizes {
		r := s.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, n)), map[string]string{"Content-Type": "application/x-ndjson"})
		require.Equal(t, http.StatusAccepted, r.status, string(r.body))
		var j jobObject
		r.decode(t, &j)
		ids = append(ids, j.ID)
	}
	// Wait until work is under way (some chunks done), then lose every queue.
	require.Eventually(t, func() bool { return s.job(ids[0]).Processed > 0 }, 30*time.Second, 10*time.Millisecond)
	rdb := s.redis.Client(t)
	require.NoError(t, rdb.FlushAll(context.Background()).Err())
	before := []jobObject{s.job(ids[0]), s.job(ids[1]), s.job(ids[2])}
	t.Logf("after FLUSHALL: %d/%d, %d/%d, %d/%d processed", before[0].Processed, sizes[0], before[1].Processed, sizes[1], before[2].Processed, sizes[2])
	require.True(t, before[2].Status != "succeeded" || before[1].Status != "succeeded", "some work must be left when Redis is flushed")

	for i, id := range ids {
		j := s.waitJob(id, 90*time.Second)
		require.Equal(t, "succeeded", j.Status, "%+v", j)
		require.Equal(t, sizes[i], j.Total)
		require.Equal(t, sizes[i], j.Processed)
		require.Zero(t, j.Failed)
		require.Equal(t, sizes[i], countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, id))
		require.Equal(t, sizes[i]-1, countRows(t, s.dbURL, `SELECT max(item_index) FROM job_results WHERE job_id = $1`, id))
	}
}

// Issue 18: Redis restarts empty under a running job. The scheduler notices that the queues'
// markers are gone and enqueues a reconcile without grace, so the job finishes within
// seconds; the periodic reconcile (an hour here) would not come in time.
func TestJobFinishesSoonAfterRedisRestartsEmpty(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{scheduler: true, env: map[string]string{
		"JOB_CHUNK_SIZE":     "50",
		"WORKER_CONCURRENCY": "2",
		"RECONCILE_INTERVAL": "1h",
		"RECONCILE_GRACE":    "30s",
	}})
	xs, _ := sonar(t)
	const rows = 20_000
	r := s.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, rows)), map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	require.Eventually(t, func() bool { return s.job(j.ID).Processed > 0 }, 30*time.Second, 10*time.Millisecond)

	s.redis.Restart(t)
	restarted := time.Now()
	pending := countRows(t, s.dbURL, `SELECT count(*) FROM job_chunks WHERE job_id = $1 AND status = 'pending'`, j.ID)
	t.Logf("Redis restarted empty with %d of %d chunks pending", pending, rows/50)
	require.Positive(t, pending, "work must be left when Redis restarts")

	got := s.waitJob(j.ID, 20*time.Second)
	t.Logf("job finished %.1f s after Redis came back", time.Since(restarted).Seconds())
	require.Equal(t, "succeeded", got.Status, "%+v", got)
	require.Equal(t, rows, got.Processed)
	require.Zero(t, got.Failed)
	require.Equal(t, rows, countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
	require.Contains(t, s.logs("scheduler"), "queue Redis lost its data")
}

// Issue 5: two schedulers at once enqueue each periodic task once per time slot.
func TestTwoSchedulersEnqueueEachSlotOnce(t *testing.T) {
	t.Parallel()
	// No worker: the tasks stay in the low queue where they can be counted.
	s := startStack(t, stackOpts{noWorker: true, scheduler: true, env: map[string]string{
		"RECONCILE_INTERVAL":  "1s",
		"RETENTION_INTERVAL":  "1h",
		"MODEL_SYNC_INTERVAL": "1h",
	}})
	second := s.start("scheduler2", "SCHEDULER_METRICS_PORT=0")
	require.Eventually(t, func() bool { return strings.Contains(second.Log(), `"scheduling"`) }, 10*time.Second, 20*time.Millisecond)

	rdb := s.redis.Client(t)
	ctx := context.Background()
	slots := func() []string {
		keys, err := rdb.Keys(ctx, "asynq:{low}:t:maintenance:reconcile:*").Result()
		require.NoError(t, err)
		return keys
	}
	// Let both run through several one-second slots.
	require.Eventually(t, func() bool { return len(slots()) >= 5 }, 20*time.Second, 100*time.Millisecond)
	s.stop("scheduler")
	s.stop("scheduler2")

	keys := slots()
	pending, err := rdb.LRange(ctx, "asynq:{low}:pending", 0, -1).Result()
	require.NoError(t, err)
	reconciles := 0
	for _, id := range pending {
		if strings.HasPrefix(id, "maintenance:reconcile:") {
			reconciles++
		}
	}
	require.Equal(t, len(keys), reconciles, "one pending task per slot, however many schedulers")
	// Each scheduler enqueued the start-up slot of retention, model sync and partitions too:
	// once each.
	for _, typ := range []string{"maintenance:retention:", "maintenance:model-sync:", "maintenance:partitions:"} {
		n := 0
		for _, id := range pending {
			if strings.HasPrefix(id, typ) {
				n++
			}
		}
		require.Equal(t, 1, n, typ)
	}
}

// Issue 4/5: a job past JOB_TIMEOUT fails with a clear error, and its counts stay exact.
func TestJobPastItsDeadlineFails(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{scheduler: true, env: map[string]string{
		"JOB_TIMEOUT": "1s", "JOB_CHUNK_SIZE": "100", "WORKER_CONCURRENCY": "1", "RECONCILE_INTERVAL": "1s",
	}})
	xs, _ := sonar(t)
	r := s.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, 60_000)), map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	j = s.waitJob(j.ID, 30*time.Second)
	require.Equal(t, "failed", j.Status)
	require.NotNil(t, j.Error)
	require.Contains(t, *j.Error, "deadline")
	require.Less(t, j.Processed, j.Total)
	require.Equal(t, j.Processed, countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
}
