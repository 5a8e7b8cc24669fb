package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
)

// Issue 22, item 3: predq on a Redis Cluster of three masters and three replicas, two of each
// process: queues, the cache, pub/sub for promotions, the shared rate limit, the Redis-loss
// markers and asynqmon all work.
func TestClusterFeatures(t *testing.T) {
	t.Parallel()
	const user, pass = "ops", "monitoring-secret-1"
	const rate, burst = 50.0, 50
	c := redistest.NewCluster(t, 3, 1)
	r := startReplicas(t, stackOpts{redisURL: c.URL, scheduler: true, env: map[string]string{
		"JOB_CHUNK_SIZE":      "500",
		"RECONCILE_INTERVAL":  "1s",
		"MONITORING_USER":     user,
		"MONITORING_PASSWORD": pass,
		"RATE_LIMIT":          fmt.Sprint(rate),
		"RATE_BURST":          fmt.Sprint(burst),
	}})
	a1, a2 := r.apis[0], r.apis[1]
	xs, _ := sonar(t)
	rdb := c.Client(t)
	ctx := context.Background()

	t.Run("a job runs through the queues", func(t *testing.T) {
		const n = 5000
		resp := r.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, n)), map[string]string{"Content-Type": "application/x-ndjson"})
		require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
		var j jobObject
		resp.decode(t, &j)
		j = r.waitJob(j.ID, 90*time.Second)
		require.Equal(t, "succeeded", j.Status, "%+v", j)
		require.Equal(t, n, j.Processed)
		require.Equal(t, n, countRows(t, r.dbURL, `SELECT count(DISTINCT item_index) FROM job_results WHERE job_id = $1`, j.ID))
	})

	t.Run("the cache answers the second request, on either api", func(t *testing.T) {
		x := distinct(xs, 9001)
		require.False(t, a1.predict(x, 0, "cluster-cache-1").Cached)
		require.True(t, a2.predict(x, 0, "cluster-cache-2").Cached)
	})

	t.Run("a promotion on one api reaches the other through pub/sub", func(t *testing.T) {
		latest := func(api *stack, i int) string {
			resp := api.call("POST", "/api/v1/predict", map[string]any{"features": distinct(xs, i)}, nil)
			require.Equal(t, http.StatusOK, resp.status, string(resp.body))
			var out predictOut
			resp.decode(t, &out)
			return out.ModelVersion
		}
		require.Equal(t, "v2.0.0", latest(a2, 100))
		require.Equal(t, http.StatusOK, a1.call("POST", "/api/v1/models/v1.0.0/promote", nil, nil).status)
		i := 200
		require.Eventually(t, func() bool { i++; return latest(a2, i) == "v1.0.0" }, time.Second, 10*time.Millisecond)
		require.Equal(t, http.StatusOK, a2.call("POST", "/api/v1/models/v2.0.0/promote", nil, nil).status)
		require.Eventually(t, func() bool { i++; return latest(a1, i) == "v2.0.0" }, time.Second, 10*time.Millisecond)
	})

	t.Run("the rate limit is shared by both apis", func(t *testing.T) {
		allowed, limited := 0, 0
		start := time.Now()
		for i := range 150 {
			api := r.apis[i%2]
			req, err := http.NewRequest("POST", api.base+"/api/v1/predict", strings.NewReader(`{"features":`+jsonFloats(distinct(xs, 5000+i))+`}`))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+otherKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				allowed++
			case http.StatusTooManyRequests:
				limited++
			default:
				t.Fatalf("predict: %d", resp.StatusCode)
			}
		}
		took := time.Since(start)
		t.Logf("150 requests over two apis in %.2f s: %d allowed, %d limited (limit %g/s, burst %d)", took.Seconds(), allowed, limited, rate, burst)
		require.Positive(t, limited)
		require.LessOrEqual(t, float64(allowed), float64(burst)+rate*took.Seconds()+1, "one allowance for both apis")
		for _, api := range r.apis {
			text := scrape(t, api.base+"/metrics")
			require.Zero(t, metricValue(text, "predq_ratelimit_fallbacks_total"), "the limiter never fell back to local buckets")
		}
	})

	t.Run("the Redis-loss markers live on the cluster", func(t *testing.T) {
		for _, q := range []string{tasks.QueueCritical, tasks.QueueDefault, tasks.QueueBatch, tasks.QueueLow} {
			require.Eventually(t, func() bool { return rdb.Exists(ctx, tasks.MarkerKey(q)).Val() == 1 }, 10*time.Second, 50*time.Millisecond, q)
		}
	})

	t.Run("asynqmon lists the queues", func(t *testing.T) {
		var queues []string
		var last string
		require.Eventually(t, func() bool {
			req, _ := http.NewRequest("GET", a1.base+"/monitoring/api/queues", nil)
			req.SetBasicAuth(user, pass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			last = string(b)
			var body struct {
				Queues []struct {
					Queue string `json:"queue"`
				} `json:"queues"`
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &body) != nil {
				return false
			}
			queues = queues[:0]
			for _, q := range body.Queues {
				queues = append(queues, q.Queue)
			}
			return slices.Contains(queues, "batch") && slices.Contains(queues, "low")
		}, 20*time.Second, 100*time.Millisecond, "queues: %v (%s)", queues, last)
		req, _ := http.NewRequest("GET", a1.base+"/monitoring/api/redis_info", nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	})
}

// Issue 22, item 3: the batch queue in three shards, one per master; the master holding
// shard 0 dies mid-job; its replica takes over and the job succeeds exactly, predictions keep
// answering; the outage is reported, and every shard ran chunks.
func TestClusterMasterFailover(t *testing.T) {
	t.Parallel()
	c := redistest.NewCluster(t, 3, 1)
	shards := tasks.BatchQueues(3)
	s := startStack(t, stackOpts{redisURL: c.URL, scheduler: true, env: map[string]string{
		"BATCH_SHARDS":       "3",
		"JOB_CHUNK_SIZE":     "1000",
		"WORKER_CONCURRENCY": "4",
		"RECONCILE_INTERVAL": "2s",
		"RECONCILE_GRACE":    "10s",
		"REDIS_TIMEOUT":      "100ms",
	}})
	checkFailover(t, s, func() {
		m, err := c.MasterOf(context.Background(), "asynq:{"+shards[0]+"}:pending")
		require.NoError(t, err)
		t.Logf("stopping %s, the master of %s", m, shards[0])
		c.StopNode(t, m)
	}, c.Client(t))
	insp := asynq.NewInspector(tasks.ClusterConnOpt{Options: &redis.ClusterOptions{Addrs: c.Live()}})
	defer insp.Close()
	for _, q := range shards {
		info, err := insp.GetQueueInfo(q)
		require.NoError(t, err, q)
		t.Logf("%s: %d tasks processed", q, info.ProcessedTotal)
		require.Positive(t, info.ProcessedTotal, "every shard ran chunks")
	}
}
