package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/tools/internal/proc"
)

// balancer is the load balancer in front of the api replicas: round robin over the apis whose
// process is alive (a passive health check, as nginx's max_fails would mark a dead upstream).
type balancer struct {
	srv      *httptest.Server
	backends []*url.URL
	alive    func(i int) bool
	next     atomic.Uint64
}

func newBalancer(t *testing.T, alive func(int) bool, backends ...string) *balancer {
	t.Helper()
	b := &balancer{alive: alive}
	for _, raw := range backends {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		b.backends = append(b.backends, u)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(b.pick())
			r.Out.Host = r.In.Host
		},
		FlushInterval: -1, // event streams pass at once
	}
	b.srv = httptest.NewServer(rp)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *balancer) pick() *url.URL {
	for range len(b.backends) {
		i := int(b.next.Add(1) % uint64(len(b.backends)))
		if b.alive(i) {
			return b.backends[i]
		}
	}
	return b.backends[0]
}

// replicas is a stack of two of each process behind a balancer.
type replicas struct {
	*stack
	apis []*stack // each api on its own, sharing the stack's processes
	lb   *balancer
}

// startReplicas starts api, api2, worker, worker2, scheduler and scheduler2 (as far as the
// options ask) on one Postgres database and one Redis; the stack's base is the balancer.
func startReplicas(t *testing.T, o stackOpts) *replicas {
	t.Helper()
	s := startStack(t, o)
	r := &replicas{stack: s}
	api1 := *s
	r.apis = append(r.apis, &api1)
	r.apis = append(r.apis, s.startAPIReplica("api2"))
	if !o.noWorker {
		s.startReplica("worker2", "WORKER_METRICS_PORT")
	}
	if o.scheduler {
		s.startReplica("scheduler2", "SCHEDULER_METRICS_PORT")
	}
	names := []string{"api", "api2"}
	r.lb = newBalancer(t, func(i int) bool { return !s.procs[names[i]].Exited() }, r.apis[0].base, r.apis[1].base)
	s.base = r.lb.srv.URL
	return r
}

// startReplica starts a second process of a binary on a port of its own, stored in env as
// name+"_"+portKey, and waits until it answers on /health/live.
func (s *stack) startReplica(name, portKey string) string {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		port := strconv.Itoa(freePort(s.t))
		env := []string{portKey + "=" + port}
		if portKey == "PORT" {
			env = append(env, "GRPC_PORT=0") // a free port: the first api holds the stack's
		}
		p := s.start(name, env...)
		err := p.WaitHTTP(context.Background(), "http://127.0.0.1:"+port+"/health/live", 30*time.Second)
		if err == nil {
			s.env[name+"_"+portKey] = port
			return port
		}
		if errors.Is(err, proc.ErrExited) && attempt < 5 && strings.Contains(p.Log(), "address already in use") {
			continue
		}
		s.t.Fatalf("%s did not start: %v\n%s", name, err, p.Tail(4096))
	}
}

// startAPIReplica starts another api and returns a stack whose calls go to it alone.
func (s *stack) startAPIReplica(name string) *stack {
	port := s.startReplica(name, "PORT")
	other := *s
	other.base = "http://127.0.0.1:" + port
	return &other
}

// kill9 kills a process with SIGKILL (no shutdown of its own) and waits for its end.
func (s *stack) kill9(name string) {
	s.t.Helper()
	p := s.procs[name]
	require.NoError(s.t, p.Cmd.Process.Signal(syscall.SIGKILL))
	<-p.Done()
}

// Issue 22, item 1: two of each process against one Postgres and one Redis, behind a load
// balancer. Every claim of "scale by adding replicas" in one run: idempotency, cross-replica
// reads, promotion, periodic tasks, and kill -9 of each kind of process.
func TestReplicas(t *testing.T) {
	t.Parallel()
	r := startReplicas(t, stackOpts{scheduler: true, env: map[string]string{
		"JOB_CHUNK_SIZE":      "200",
		"WORKER_CONCURRENCY":  "2",
		"IDEMPOTENCY_LEASE":   "2s",
		"RECONCILE_INTERVAL":  "1s",
		"RECONCILE_GRACE":     "3s",
		"RETENTION_INTERVAL":  "1h",
		"MODEL_SYNC_INTERVAL": "1h",
	}})
	a1, a2 := r.apis[0], r.apis[1]
	xs, _ := sonar(t)
	ndjson := map[string]string{"Content-Type": "application/x-ndjson"}
	withKey := func(k string) map[string]string {
		return map[string]string{"Content-Type": "application/x-ndjson", "Idempotency-Key": k}
	}

	t.Run("same Idempotency-Key to both apis at once gives one job and one answer", func(t *testing.T) {
		body := ndjsonRows(xs, 20_000)
		var wg sync.WaitGroup
		got := make([]response, 2)
		for i, api := range []*stack{a1, a2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = api.call("POST", "/api/v1/jobs", body, withKey("replicas-1"))
			}()
		}
		wg.Wait()
		statuses := []int{got[0].status, got[1].status}
		require.Contains(t, statuses, http.StatusAccepted, "%s | %s", got[0].body, got[1].body)
		require.Subset(t, []int{http.StatusAccepted, http.StatusConflict}, statuses)
		require.Equal(t, 1, countRows(t, r.dbURL, `SELECT count(*) FROM jobs`))
		// Once the first is answered, both apis replay the same answer.
		var first jobObject
		for _, g := range got {
			if g.status == http.StatusAccepted {
				g.decode(t, &first)
			}
		}
		for _, api := range []*stack{a1, a2} {
			again := api.call("POST", "/api/v1/jobs", body, withKey("replicas-1"))
			require.Equal(t, http.StatusAccepted, again.status, string(again.body))
			require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
			var j jobObject
			again.decode(t, &j)
			require.Equal(t, first.ID, j.ID)
		}
		j := r.waitJob(first.ID, 90*time.Second)
		require.Equal(t, "succeeded", j.Status, "%+v", j)
		require.Equal(t, 20_000, j.Processed)
		require.Equal(t, 1, countRows(t, r.dbURL, `SELECT count(*) FROM jobs`))
	})

	t.Run("a job submitted through one api streams and pages through the other", func(t *testing.T) {
		const n = 3000
		resp := a1.call("POST", "/api/v1/jobs", ndjsonRows(xs, n), ndjson)
		require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
		var j jobObject
		resp.decode(t, &j)
		events := readEvents(t, a2, j.ID, "")
		require.NotEmpty(t, events)
		last := events[len(events)-1]
		require.Equal(t, "status", last.event)
		require.Contains(t, last.data, `"succeeded"`)
		seen, cursor := 0, ""
		for {
			page := a2.call("GET", "/api/v1/jobs/"+j.ID+"/results?limit=700&cursor="+cursor, nil, nil)
			require.Equal(t, http.StatusOK, page.status, string(page.body))
			var p struct {
				Results    []resultRow `json:"results"`
				NextCursor string      `json:"next_cursor"`
			}
			page.decode(t, &p)
			for _, res := range p.Results {
				require.Equal(t, seen, res.Index)
				seen++
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		require.Equal(t, n, seen)
	})

	t.Run("a promotion on one api is served by both within a second", func(t *testing.T) {
		latest := func(api *stack, i int) string {
			resp := api.call("POST", "/api/v1/predict", map[string]any{"features": distinct(xs, i)}, nil)
			require.Equal(t, http.StatusOK, resp.status, string(resp.body))
			var out predictOut
			resp.decode(t, &out)
			return out.ModelVersion
		}
		require.Equal(t, "v2.0.0", latest(a1, 0))
		require.Equal(t, "v2.0.0", latest(a2, 1))
		resp := a1.call("POST", "/api/v1/models/v1.0.0/promote", nil, nil)
		require.Equal(t, http.StatusOK, resp.status, string(resp.body))
		promoted := time.Now()
		i := 2
		require.Eventually(t, func() bool {
			i += 2
			return latest(a1, i) == "v1.0.0" && latest(a2, i+1) == "v1.0.0"
		}, time.Second, 10*time.Millisecond, "both apis serve the promoted version within a second")
		t.Logf("promotion served by both apis %d ms after its answer", time.Since(promoted).Milliseconds())
		// Back, so that the rest runs on the default.
		require.Equal(t, http.StatusOK, a2.call("POST", "/api/v1/models/v2.0.0/promote", nil, nil).status)
		require.Eventually(t, func() bool { i += 2; return latest(a1, i) == "v2.0.0" && latest(a2, i+1) == "v2.0.0" },
			time.Second, 10*time.Millisecond)
	})

	reconciles := func() (processed, enqueued, duplicate float64) {
		for _, port := range []string{r.env["WORKER_METRICS_PORT"], r.env["worker2_WORKER_METRICS_PORT"]} {
			processed += metricWith(scrape(t, "http://127.0.0.1:"+port+"/metrics"), "worker_tasks_processed_total", `task_type="maintenance:reconcile"`)
		}
		for _, port := range []string{r.env["SCHEDULER_METRICS_PORT"], r.env["scheduler2_SCHEDULER_METRICS_PORT"]} {
			text := scrape(t, "http://127.0.0.1:"+port+"/metrics")
			enqueued += metricWith(text, "scheduler_enqueues_total", `task="maintenance:reconcile"`, `result="enqueued"`)
			duplicate += metricWith(text, "scheduler_enqueues_total", `task="maintenance:reconcile"`, `result="duplicate"`)
		}
		return
	}

	t.Run("two schedulers run each periodic slot once", func(t *testing.T) {
		p0, e0, d0 := reconciles()
		start := time.Now()
		require.Eventually(t, func() bool { _, e, _ := reconciles(); return e-e0 >= 5 }, 30*time.Second, 200*time.Millisecond)
		// Let the last enqueued slots be run.
		require.Eventually(t, func() bool { p, e, _ := reconciles(); return p-p0 >= e-e0 }, 30*time.Second, 200*time.Millisecond)
		p1, e1, d1 := reconciles()
		slots := time.Since(start).Seconds() + 1
		t.Logf("over %.1f s: %.0f reconcile slots enqueued, %.0f duplicates refused, %.0f runs", slots-1, e1-e0, d1-d0, p1-p0)
		require.Positive(t, d1-d0, "both schedulers are at work: each slot was offered twice")
		require.LessOrEqual(t, e1-e0, slots+1, "no more enqueues than one-second slots")
		require.LessOrEqual(t, p1-p0, e1-e0+1, "each enqueued slot runs once")
	})

	t.Run("kill -9 of a scheduler: the other carries on", func(t *testing.T) {
		r.kill9("scheduler")
		text := scrape(t, "http://127.0.0.1:"+r.env["scheduler2_SCHEDULER_METRICS_PORT"]+"/metrics")
		before := metricWith(text, "scheduler_enqueues_total", `task="maintenance:reconcile"`, `result="enqueued"`)
		require.Eventually(t, func() bool {
			text := scrape(t, "http://127.0.0.1:"+r.env["scheduler2_SCHEDULER_METRICS_PORT"]+"/metrics")
			return metricWith(text, "scheduler_enqueues_total", `task="maintenance:reconcile"`, `result="enqueued"`) >= before+3
		}, 20*time.Second, 200*time.Millisecond, "the surviving scheduler enqueues the slots alone")
	})

	t.Run("kill -9 of an api during an upload: the retry gives one job, counted once", func(t *testing.T) {
		const n = 100_000
		jobsBefore := countRows(t, r.dbURL, `SELECT count(*) FROM jobs`)
		body := ndjsonRows(xs, n)
		// Send the upload slowly to api 1, and kill it when half the body is through.
		pr := &slowReader{b: body, chunk: 64 << 10, half: make(chan struct{})}
		req, err := http.NewRequest("POST", a1.base+"/api/v1/jobs", pr)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Idempotency-Key", "replicas-upload")
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("the upload was answered %d", resp.StatusCode)
			}
			done <- err
		}()
		<-pr.half
		r.kill9("api")
		require.Error(t, <-done, "the killed api answers nothing")
		require.Equal(t, jobsBefore, countRows(t, r.dbURL, `SELECT count(*) FROM jobs`), "nothing half-written")

		// The client retries through the balancer; the key is free once the dead claim's
		// lease (2 s here) lapsed: until then the survivor answers 409.
		var resp response
		require.Eventually(t, func() bool {
			resp = r.call("POST", "/api/v1/jobs", body, withKey("replicas-upload"))
			return resp.status != http.StatusConflict
		}, 30*time.Second, 250*time.Millisecond)
		require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
		var j jobObject
		resp.decode(t, &j)
		j = r.waitJob(j.ID, 2*time.Minute)
		require.Equal(t, "succeeded", j.Status, "%+v", j)
		require.Equal(t, n, j.Processed)
		require.Equal(t, jobsBefore+1, countRows(t, r.dbURL, `SELECT count(*) FROM jobs`))
		require.Equal(t, n, countRows(t, r.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
	})

	t.Run("kill -9 of a worker during a job: the job succeeds exactly", func(t *testing.T) {
		const n = 20_000
		resp := r.call("POST", "/api/v1/jobs", ndjsonRows(xs, n), ndjson)
		require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
		var j jobObject
		resp.decode(t, &j)
		require.Eventually(t, func() bool { return r.job(j.ID).Processed >= 2000 }, 60*time.Second, 10*time.Millisecond)
		// The chunks the worker holds when it dies: asynq lists a task as active until it
		// is acknowledged or recovered.
		rdb := r.redis.Client(t)
		r.kill9("worker")
		killed := time.Now()
		orphans, err := rdb.LRange(context.Background(), "asynq:{batch}:active", 0, -1).Result()
		require.NoError(t, err)
		mid := r.job(j.ID)
		require.Less(t, mid.Processed, n, "work is left for the survivor")
		t.Logf("at the kill: %d tasks active in the batch queue (the dead worker's and the survivor's)", len(orphans))
		// The killed worker's active chunks come back through asynq's recoverer once their
		// lease lapsed (about a minute; README, "Scaling out").
		j = r.waitJob(j.ID, 3*time.Minute)
		t.Logf("worker killed at %d/%d rows; job finished %.1f s later; the survivor ran %.0f chunk tasks", mid.Processed, n, time.Since(killed).Seconds(),
			metricWith(scrape(t, "http://127.0.0.1:"+r.env["worker2_WORKER_METRICS_PORT"]+"/metrics"), "worker_tasks_processed_total", `task_type="job:chunk"`))
		require.Equal(t, "succeeded", j.Status, "%+v", j)
		require.Equal(t, n, j.Processed)
		require.Zero(t, j.Failed)
		require.Equal(t, n, countRows(t, r.dbURL, `SELECT count(*) FROM job_results WHERE job_id = $1`, j.ID))
		require.Equal(t, n, countRows(t, r.dbURL, `SELECT count(DISTINCT item_index) FROM job_results WHERE job_id = $1`, j.ID))
	})
}

// Issue 22, item 1: the rate limit of a key is the same with one api and with two: the
// allowance lives in Redis.
func TestReplicasShareTheRateLimit(t *testing.T) {
	t.Parallel()
	const rate, burst = 2.0, 10
	r := startReplicas(t, stackOpts{noWorker: true, env: map[string]string{
		"RATE_LIMIT": fmt.Sprint(rate), "RATE_BURST": strconv.Itoa(burst),
	}})
	xs, _ := sonar(t)
	// send fires 40 predictions as fast as they go, through the given apis in turn, with key;
	// it returns how many were allowed, and over how long.
	send := func(key string, apis ...*stack) (int, time.Duration) {
		allowed := 0
		start := time.Now()
		for i := range 40 {
			api := apis[i%len(apis)]
			req, err := http.NewRequest("POST", api.base+"/api/v1/predict",
				strings.NewReader(fmt.Sprintf(`{"features":%s}`, jsonFloats(distinct(xs, i)))))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				allowed++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("predict: %d", resp.StatusCode)
			}
		}
		return allowed, time.Since(start)
	}
	one, d1 := send(otherKey, r.apis[0])
	two, d2 := send(apiKey, r.apis[0], r.apis[1])
	t.Logf("40 requests: %d allowed by one api (%.2f s), %d by two (%.2f s); limit %g/s, burst %d", one, d1.Seconds(), two, d2.Seconds(), rate, burst)
	for _, c := range []struct {
		allowed int
		took    time.Duration
	}{{one, d1}, {two, d2}} {
		require.GreaterOrEqual(t, c.allowed, burst)
		require.LessOrEqual(t, float64(c.allowed), float64(burst)+rate*c.took.Seconds()+1,
			"a second api does not add its own allowance")
	}
}

// slowReader yields b in chunks of chunk bytes, pausing between them, and closes half when
// half of b was read.
type slowReader struct {
	b     []byte
	off   int
	chunk int
	half  chan struct{}
	once  sync.Once
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, errors.New("slowReader: the whole body was sent before the api was killed")
	}
	if r.off >= len(r.b)/2 {
		r.once.Do(func() { close(r.half) })
		time.Sleep(50 * time.Millisecond) // a slow client: the kill comes while it sends
	}
	n := copy(p[:min(len(p), r.chunk)], r.b[r.off:])
	r.off += n
	return n, nil
}

func jsonFloats(x []float64) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, v := range x {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	b.WriteByte(']')
	return b.String()
}

// metricWith sums the samples of the metric family name whose labels contain every one of
// labels (each written as name="value").
func metricWith(text, name string, labels ...string) float64 {
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}

// The job quotas are shared too: they are counted in Postgres under a per-key lock, so a key
// allowed two queued jobs gets two across both apis, not two each.
func TestReplicasShareTheQuotas(t *testing.T) {
	t.Parallel()
	r := startReplicas(t, stackOpts{noWorker: true, env: map[string]string{
		"API_KEYS": "e2e:" + apiKey + ":predict+jobs:max_queued_jobs=2,other:" + otherKey,
	}})
	xs, _ := sonar(t)
	body := ndjsonRows(xs, 10)
	r.apis[0].mustSubmitAs(apiKey, body)
	r.apis[1].mustSubmitAs(apiKey, body)
	for i, api := range r.apis {
		status, header, b, err := api.submitAs(apiKey, body, "")
		require.NoError(t, err)
		require.Equal(t, http.StatusTooManyRequests, status, "api %d: %s", i, b)
		require.NotEmpty(t, header.Get("Retry-After"))
		require.Contains(t, string(b), `"quota":"queued_jobs"`)
	}
	r.apis[1].mustSubmitAs(otherKey, body) // another key is unaffected
}
