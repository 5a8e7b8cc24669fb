package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

// failoverRows is the size of the job that runs through a failover: the 200,000, or
// E2E_FAILOVER_ROWS (a smaller figure for a slow machine, a larger one for a measurement).
func failoverRows(t *testing.T) int {
	n := 200_000
	if v := os.Getenv("E2E_FAILOVER_ROWS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "E2E_FAILOVER_ROWS")
	}
	return n
}

// traffic sends steady predictions from a few clients until stopped, and records what the
// clients saw: every answer's status and latency, and the request ids answered 200.
type traffic struct {
	mu       sync.Mutex
	answered []string // request ids answered 200
	failed   map[int]int
	lastOK   time.Time
	worstGap time.Duration // longest time without any 200 answer
	slowest  time.Duration
	sent     atomic.Int64
	stop     chan struct{}
	done     sync.WaitGroup
}

func startTraffic(t *testing.T, s *stack, clients int) *traffic {
	t.Helper()
	xs, _ := sonar(t)
	tr := &traffic{failed: map[int]int{}, lastOK: time.Now(), stop: make(chan struct{})}
	hc := &http.Client{Timeout: 30 * time.Second}
	base := s.base
	for c := range clients {
		tr.done.Add(1)
		go func() {
			defer tr.done.Done()
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				n := int(tr.sent.Add(1))
				id := fmt.Sprintf("failover-%d-%d", c, i)
				body := `{"features":` + jsonFloats(distinct(xs, n)) + `}`
				req, _ := http.NewRequest("POST", base+"/api/v1/predict", bytes.NewReader([]byte(body)))
				req.Header.Set("Authorization", "Bearer "+apiKey)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Request-ID", id)
				start := time.Now()
				resp, err := hc.Do(req)
				took := time.Since(start)
				status := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				now := time.Now()
				tr.mu.Lock()
				tr.slowest = max(tr.slowest, took)
				if status == http.StatusOK {
					tr.worstGap = max(tr.worstGap, now.Sub(tr.lastOK))
					tr.lastOK = now
					tr.answered = append(tr.answered, id)
				} else {
					tr.failed[status]++
				}
				tr.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return tr
}

// Stop stops the clients and waits for their last answers.
func (tr *traffic) Stop() {
	close(tr.stop)
	tr.done.Wait()
}

// redisProbe writes a key through a client of its own every 10 ms and records the longest
// time during which no write succeeded: the outage a Redis client sees.
type redisProbe struct {
	mu      sync.Mutex
	lastOK  time.Time
	worst   time.Duration
	stop    chan struct{}
	stopped chan struct{}
}

func startRedisProbe(c redis.UniversalClient) *redisProbe {
	p := &redisProbe{lastOK: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Set(ctx, "probe:{"+strconv.Itoa(i%16)+"}", i, time.Minute).Err()
			cancel()
			if err == nil {
				now := time.Now()
				p.mu.Lock()
				p.worst = max(p.worst, now.Sub(p.lastOK))
				p.lastOK = now
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// Stop stops the probe and returns the longest time without a successful write.
func (p *redisProbe) Stop() time.Duration {
	close(p.stop)
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.worst, time.Since(p.lastOK))
}

// jobProgress polls a job's processed count every 100 ms and records the longest time in
// which it did not move (while the job ran).
type jobProgress struct {
	stall   time.Duration
	stop    chan struct{}
	stopped chan struct{}
}

func watchProgress(s *stack, id string) *jobProgress {
	jp := &jobProgress{stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(jp.stopped)
		last, since := -1, time.Now()
		for {
			select {
			case <-jp.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			resp, err := http.DefaultClient.Do(mustRequest(s, "GET", "/api/v1/jobs/"+id))
			if err != nil {
				continue
			}
			var j jobObject
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if json.Unmarshal(b, &j) != nil {
				continue
			}
			if j.Processed != last {
				last, since = j.Processed, time.Now()
			} else if j.Status == "running" || j.Status == "queued" {
				jp.stall = max(jp.stall, time.Since(since))
			}
			if j.Status == "succeeded" || j.Status == "failed" || j.Status == "cancelled" {
				return
			}
		}
	}()
	return jp
}

// Stop returns the longest stall seen.
func (jp *jobProgress) Stop() time.Duration {
	close(jp.stop)
	<-jp.stopped
	return jp.stall
}

// Issue 22, item 2: predq on a Sentinel group (a master, a replica, three sentinels). The
// master dies during steady predictions and a running job: the job still succeeds exactly,
// every prediction is answered (inference while the cache is away) and stored, and the
// outage each kind of client saw is reported.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	g := redistest.NewSentinel(t)
	s := startStack(t, stackOpts{redisURL: g.URL, scheduler: true, env: map[string]string{
		"JOB_CHUNK_SIZE":     "1000",
		"WORKER_CONCURRENCY": "4",
		"RECONCILE_INTERVAL": "2s",
		"RECONCILE_GRACE":    "10s",
		"REDIS_TIMEOUT":      "100ms",
	}})
	checkFailover(t, s, func() { g.StopMaster(t) }, g.Client(t))
}

// checkFailover runs a large job and steady predictions, calls kill once the job is under
// way, and checks and reports what the clients saw. probe is a Redis client of the test's.
func checkFailover(t *testing.T, s *stack, kill func(), probe redis.UniversalClient) {
	t.Helper()
	xs, _ := sonar(t)
	n := failoverRows(t)
	resp := s.call("POST", "/api/v1/jobs", bytes.NewReader(ndjsonRows(xs, n)), map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
	var j jobObject
	resp.decode(t, &j)
	tr := startTraffic(t, s, 4)
	pr := startRedisProbe(probe)
	require.Eventually(t, func() bool { return s.job(j.ID).Processed >= n/10 }, 2*time.Minute, 20*time.Millisecond)
	progress := watchProgress(s, j.ID)
	// A steady second of traffic before the kill, so that the gaps below are the failover's.
	time.Sleep(time.Second)
	before := s.job(j.ID).Processed
	killed := time.Now()
	kill()
	j = s.waitJob(j.ID, 3*time.Minute)
	finished := time.Since(killed)
	// Traffic goes on a few seconds after the job, through the new master.
	time.Sleep(3 * time.Second)
	tr.Stop()
	outage := pr.Stop()
	stall := progress.Stop()

	t.Logf("master killed at %d/%d rows; job succeeded %.1f s later; its progress stalled at most %.1f s",
		before, n, finished.Seconds(), stall.Seconds())
	t.Logf("Redis writes (a client of the test's): longest time without a successful write %.2f s", outage.Seconds())
	t.Logf("predictions: %d answered, failures by status %v, longest time without an answer %.2f s, slowest answer %.2f s",
		len(tr.answered), tr.failed, tr.worstGap.Seconds(), tr.slowest.Seconds())

	require.Equal(t, "succeeded", j.Status, "%+v", j)
	require.Equal(t, n, j.Total)
	require.Equal(t, n, j.Processed)
	require.Zero(t, j.Failed)
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
	require.Equal(t, n, countRows(t, s.dbURL, `SELECT count(DISTINCT item_index) FROM job_results WHERE job_id = $1`, j.ID))
	require.Empty(t, tr.failed, "every prediction is answered while Redis fails over")
	require.Equal(t, len(tr.answered), countRows(t, s.dbURL, `SELECT count(*) FROM predictions WHERE request_id = ANY($1)`, tr.answered),
		"every answered prediction is stored")
}

func mustRequest(s *stack, method, path string) *http.Request {
	req, err := http.NewRequest(method, s.base+path, nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	return req
}
