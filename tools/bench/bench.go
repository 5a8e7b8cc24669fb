package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/tools/internal/proc"
)

// httpPoint is one HTTP measurement.
type httpPoint struct {
	Target string     `json:"target"` // ceiling, predict-miss, predict-hit, predict-hit-stored, predict-miss-queue, oip-miss
	Result loadResult `json:"result"`
	// DrainSeconds is how long the persist queue took to empty after the point (api only).
	DrainSeconds float64 `json:"drain_seconds,omitempty"`
	// CPUPerRequestUS is the CPU time each process spent per answered request, from the
	// start of the point until its queue was drained: api, worker, redis, postgres, ceiling,
	// and load (the load generator's own, over the point).
	CPUPerRequestUS map[string]float64 `json:"cpu_us_per_request"`
	// MachineCPUPerRequestUS is the busy CPU time of the whole machine (every process and
	// the kernel) per answered request over the same span, and IdleShare the share of the
	// machine's CPU time that was idle.
	MachineCPUPerRequestUS float64 `json:"machine_cpu_us_per_request,omitempty"`
	IdleShare              float64 `json:"idle_share,omitempty"`
	// RoundRPS is the rate of each round of the point. The rounds of every target at one
	// connection count run in turn (ceiling, misses, hits, …, then again), so that each
	// ratio to the ceiling can also be taken within a round, a few seconds apart, where the
	// host's drift between points minutes apart does not reach it.
	RoundRPS []float64 `json:"round_rps,omitempty"`
}

// queueResult is the queue measurement.
type queueResult struct {
	Tasks         int     `json:"tasks"`
	NoopEnqueuePS float64 `json:"noop_enqueue_per_s"`
	NoopProcessPS float64 `json:"noop_processed_per_s"`
}

// jobResult is the job measurement.
type jobResult struct {
	Rows          int     `json:"rows"`
	Bytes         int64   `json:"bytes"`
	UploadSeconds float64 `json:"upload_seconds"` // submit until the 202
	TotalSeconds  float64 `json:"total_seconds"`  // submit until succeeded
	RowsPS        float64 `json:"rows_per_s"`
	CopySeconds   float64 `json:"copy_seconds"`
	CopyRowsPS    float64 `json:"copy_rows_per_s"`
	// CopyCPUSeconds is the CPU the Postgres backends spent on the ceiling's COPY.
	CopyCPUSeconds float64 `json:"copy_cpu_seconds"`
	// UploadCPUSeconds and RunCPUSeconds are the CPU each process spent during the upload
	// (submit until the 202) and the run (the 202 until succeeded).
	UploadCPUSeconds map[string]float64 `json:"upload_cpu_seconds"`
	RunCPUSeconds    map[string]float64 `json:"run_cpu_seconds"`
}

// memResult is the api's peak RSS, in bytes.
type memResult struct {
	AfterHTTP   int64 `json:"after_http_hwm"`
	AfterUpload int64 `json:"after_upload_hwm"`
}

// bench holds a run's processes and settings.
type bench struct {
	opts   options
	log    func(format string, args ...any)
	pin    pinning
	self   string // this binary
	binDir string
	sonar  string // path of data/sonar.csv
	key    string
	// bulkKey is a second key, of class bulk, for the overload phase.
	bulkKey string
	env     map[string]string
	apiURL  string
	// grpcAddr is the api's gRPC host:port.
	grpcAddr string
	// key2 is a second key, for the fair share.
	key2 string
	// apiAllURL is a second api with PERSIST_CACHE_HITS=true, which stores every cache hit.
	apiAllURL string
	// apiQueueURL is a third api with PERSIST_PATH=queue: the worker stores its predictions.
	apiQueueURL string
	ceilURL     string
	dbURL       string
	redis       *localsvc.Server

	api, apiAll, apiQueue, worker, ceiling *proc.Proc
	cleanups                               []func() // run in reverse order by stop
	distinctRuns                           int64
}

// benchmark runs every measurement and returns the report.
func benchmark(ctx context.Context, opts options, getenv func(string) string, stderr io.Writer) (rep report, err error) {
	began := time.Now()
	b := &bench{opts: opts, pin: detectPinning(opts.NoPin), sonar: filepath.Join(opts.Root, "data", "sonar.csv")}
	b.log = func(format string, args ...any) {
		fmt.Fprintf(stderr, "bench %6.1fs: %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	rep = report{Machine: describeMachine(), Mode: "full", Pinned: b.pin.On, Pinning: b.pin.describe(), Command: opts.Command}
	if opts.Smoke {
		rep.Mode = "smoke"
	}
	if b.self, err = os.Executable(); err != nil {
		return rep, err
	}
	if _, err := readSonar(b.sonar); err != nil {
		return rep, err
	}

	tmp, err := os.MkdirTemp("", "predq-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	b.binDir = tmp
	b.log("building api and worker")
	if err := buildBinaries(ctx, opts.Root, tmp); err != nil {
		return rep, err
	}

	if !opts.Phases["http"] && !opts.Phases["queue"] && !opts.Phases["job"] && !opts.Phases["overload"] && !opts.Phases["grpc"] && !opts.Phases["smalljob"] {
		rep.Seconds = time.Since(began).Seconds()
		rep.Rows = buildRows(rep, opts)
		return rep, nil
	}

	if err := b.start(ctx, getenv); err != nil {
		err = b.withLogs(err)
		b.stop()
		return rep, err
	}
	defer b.stop()
	defer func() {
		if err != nil {
			err = b.withLogs(err)
		}
	}()

	// The api's peak RSS can only grow: the HTTP load first, then the upload.
	var mem memResult
	if opts.Phases["http"] {
		if rep.HTTP, err = b.httpPhase(ctx); err != nil {
			return rep, err
		}
		if mem.AfterHTTP, _, err = proc.PeakRSS(b.api.PID()); err != nil {
			return rep, err
		}
		b.log("api peak RSS after HTTP: %.1f MB", float64(mem.AfterHTTP)/1e6)
	}
	if opts.Phases["queue"] {
		if rep.Queue, err = b.queuePhase(ctx); err != nil {
			return rep, err
		}
	}
	if opts.Phases["smalljob"] {
		if rep.SmallJob, err = b.smallJobPhase(ctx); err != nil {
			return rep, err
		}
	}
	if opts.Phases["job"] {
		if rep.Job, err = b.jobPhase(ctx); err != nil {
			return rep, err
		}
		if mem.AfterUpload, _, err = proc.PeakRSS(b.api.PID()); err != nil {
			return rep, err
		}
		b.log("api peak RSS after the job: %.1f MB", float64(mem.AfterUpload)/1e6)
	}
	if opts.Phases["overload"] {
		if rep.Overload, err = b.overloadPhase(ctx); err != nil {
			return rep, err
		}
	}
	if opts.Phases["grpc"] {
		if rep.GRPC, err = b.grpcPhase(ctx); err != nil {
			return rep, err
		}
	}
	if mem != (memResult{}) {
		rep.Memory = &mem
	}
	for _, p := range []*proc.Proc{b.api, b.apiAll, b.apiQueue, b.worker, b.ceiling} {
		if p.Exited() {
			return rep, fmt.Errorf("%s exited during the run: %s", p.Name, tail(p))
		}
	}
	rep.Seconds = time.Since(began).Seconds()
	rep.Rows = buildRows(rep, opts)
	rep.Notes = notes(rep, opts)
	return rep, nil
}

// start brings up Postgres (a fresh database), Redis, the api, the worker and the ceiling.
func (b *bench) start(ctx context.Context, getenv func(string) string) error {
	admin, stopPG, err := postgresServer(ctx, getenv)
	if err != nil {
		return err
	}
	db, err := createDatabase(ctx, admin)
	if err != nil {
		if stopPG != nil {
			stopPG()
		}
		return err
	}
	b.dbURL = withDatabase(admin, db)
	b.log("database %s on %s", db, redactURL(admin))
	b.cleanups = append(b.cleanups, func() {
		if err := dropDatabase(admin, db); err != nil {
			b.log("drop database %s: %v", db, err)
		}
		if stopPG != nil {
			stopPG()
		}
	})
	if b.redis, err = localsvc.StartRedis(ctx); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() { _ = b.redis.Stop() })

	var ports [6]int
	for i := range ports {
		if ports[i], err = localsvc.FreePort(); err != nil {
			return err
		}
	}
	apiPort, workerPort, ceilPort, apiQueuePort, apiAllPort, grpcPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	b.key = "bench-" + randomHex(16)
	b.bulkKey = "bench-bulk-" + randomHex(16)
	b.key2 = "bench-" + randomHex(16) // a second key, for the fair share
	b.env = map[string]string{
		"DATABASE_URL": b.dbURL,
		"REDIS_URL":    b.redis.URL,
		"MODEL_PATH":   filepath.Join(b.opts.Root, "models"),
		"API_KEYS":     "bench:" + b.key + ",bench2:" + b.key2 + ",bench-bulk:" + b.bulkKey + "::class=bulk",
		// Off for the pipeline's points; the overload phase runs an api with it on.
		"ADMISSION_CONTROL": "false",
		// The small jobs' webhooks go to the bench's own receiver on loopback.
		"WEBHOOK_SECRET":        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"WEBHOOK_ALLOW_PRIVATE": "true",
		"LOG_LEVEL":             "warn",
		"RATE_LIMIT":            "0",
		"PORT":                  strconv.Itoa(apiPort),
		"GRPC_PORT":             strconv.Itoa(grpcPort),
		"WORKER_METRICS_PORT":   strconv.Itoa(workerPort),
	}
	b.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	b.grpcAddr = fmt.Sprintf("127.0.0.1:%d", grpcPort)
	b.ceilURL = fmt.Sprintf("http://127.0.0.1:%d", ceilPort)
	b.apiAllURL = fmt.Sprintf("http://127.0.0.1:%d", apiAllPort)
	b.apiQueueURL = fmt.Sprintf("http://127.0.0.1:%d", apiQueuePort)

	migrate := exec.CommandContext(ctx, filepath.Join(b.binDir, "api"), "migrate")
	migrate.Dir, migrate.Env = b.binDir, minimalEnv(b.env)
	if out, err := migrate.CombinedOutput(); err != nil {
		return fmt.Errorf("api migrate: %w: %s", err, out)
	}

	b.log("starting api (%s), worker and ceiling server", b.apiURL)
	apiEnv, workerEnv := minimalEnv(b.env), minimalEnv(b.env)
	if b.opts.Pprof {
		for _, p := range []struct {
			name string
			env  *[]string
		}{{"api", &apiEnv}, {"worker", &workerEnv}} {
			port, err := localsvc.FreePort()
			if err != nil {
				return err
			}
			*p.env = append(*p.env, fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", port))
			b.log("%s pprof: http://127.0.0.1:%d/debug/pprof/", p.name, port)
		}
	}
	cmd := b.pin.command(ctx, b.pin.Server, filepath.Join(b.binDir, "api"))
	cmd.Dir, cmd.Env = b.binDir, apiEnv
	if b.api, err = proc.Start("api", cmd, 64<<10); err != nil {
		return err
	}
	// The same api storing every cache hit, idle but for its own points.
	cmd = b.pin.command(ctx, b.pin.Server, filepath.Join(b.binDir, "api"))
	cmd.Dir, cmd.Env = b.binDir, append(minimalEnv(b.env), "PORT="+strconv.Itoa(apiAllPort), "GRPC_PORT=0", "PERSIST_CACHE_HITS=true")
	if b.apiAll, err = proc.Start("api-all-hits", cmd, 64<<10); err != nil {
		return err
	}
	// And one persisting through the queue (the worker writes), for its own points.
	cmd = b.pin.command(ctx, b.pin.Server, filepath.Join(b.binDir, "api"))
	cmd.Dir, cmd.Env = b.binDir, append(minimalEnv(b.env), "PORT="+strconv.Itoa(apiQueuePort), "GRPC_PORT=0", "PERSIST_PATH=queue")
	if b.apiQueue, err = proc.Start("api-queue", cmd, 64<<10); err != nil {
		return err
	}
	cmd = proc.CommandContext(ctx, filepath.Join(b.binDir, "worker"))
	cmd.Dir, cmd.Env = b.binDir, workerEnv
	if b.worker, err = proc.Start("worker", cmd, 64<<10); err != nil {
		return err
	}
	cmd = b.pin.command(ctx, b.pin.Server, b.self, "serve-ceiling", "-addr", fmt.Sprintf("127.0.0.1:%d", ceilPort))
	cmd.Dir, cmd.Env = b.binDir, minimalEnv(nil)
	if b.ceiling, err = proc.Start("ceiling", cmd, 64<<10); err != nil {
		return err
	}
	if err := b.api.WaitHTTP(ctx, b.apiURL+"/health/ready", 60*time.Second); err != nil {
		return err
	}
	if err := b.apiAll.WaitHTTP(ctx, b.apiAllURL+"/health/ready", 60*time.Second); err != nil {
		return err
	}
	if err := b.apiQueue.WaitHTTP(ctx, b.apiQueueURL+"/health/ready", 60*time.Second); err != nil {
		return err
	}
	if err := b.worker.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/health/ready", workerPort), 60*time.Second); err != nil {
		return err
	}
	return b.ceiling.WaitHTTP(ctx, b.ceilURL+"/health/live", 30*time.Second)
}

// withLogs adds the end of the api's and the worker's output to err, for a failed run.
func (b *bench) withLogs(err error) error {
	for _, p := range []*proc.Proc{b.api, b.apiAll, b.apiQueue, b.worker} {
		if p != nil {
			if t := tail(p); t != "" {
				err = fmt.Errorf("%w\n--- %s output (end) ---\n%s", err, p.Name, t)
			}
		}
	}
	return err
}

// stop ends the processes and runs the cleanups in reverse order.
func (b *bench) stop() {
	for _, p := range []*proc.Proc{b.api, b.apiAll, b.apiQueue, b.worker, b.ceiling} {
		p.Stop()
	}
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// runJSON runs one of our subcommands on cpus and decodes its JSON output into v.
func (b *bench) runJSON(ctx context.Context, cpus string, v any, args ...string) error {
	cmd := b.pin.command(ctx, cpus, b.self, args...)
	cmd.Env = minimalEnv(nil)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench %s: %w: %s", args[0], err, errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		return fmt.Errorf("bench %s: output: %w: %s", args[0], err, out.String())
	}
	return nil
}

// load runs one load point against target.
func (b *bench) load(ctx context.Context, target string, conns int, d time.Duration) (loadResult, error) {
	args := []string{"load", "-conns", strconv.Itoa(conns), "-duration", d.String(), "-data", b.sonar, "-latencies"}
	switch target {
	case "ceiling":
		args = append(args, "-addr", b.ceilURL[len("http://"):], "-bodies", "distinct", "-start", strconv.FormatInt(b.nextStart(), 10))
	case "predict-miss":
		args = append(args, "-addr", b.apiURL[len("http://"):], "-key", b.key, "-bodies", "distinct", "-start", strconv.FormatInt(b.nextStart(), 10))
	case "predict-hit":
		args = append(args, "-addr", b.apiURL[len("http://"):], "-key", b.key, "-bodies", "same")
	case "predict-hit-stored":
		args = append(args, "-addr", b.apiAllURL[len("http://"):], "-key", b.key, "-bodies", "same")
	case "predict-miss-queue":
		args = append(args, "-addr", b.apiQueueURL[len("http://"):], "-key", b.key, "-bodies", "distinct", "-start", strconv.FormatInt(b.nextStart(), 10))
	case "oip-miss":
		args = append(args, "-addr", b.apiURL[len("http://"):], "-key", b.key, "-path", "/v2/models/sonar/infer",
			"-bodies", "distinct-oip", "-start", strconv.FormatInt(b.nextStart(), 10))
	}
	var r loadResult
	err := b.runJSON(ctx, b.pin.Load, &r, args...)
	return r, err
}

// nextStart numbers the distinct bodies of each run apart, so that no input repeats.
func (b *bench) nextStart() int64 {
	b.distinctRuns++
	return b.distinctRuns * 100_000_000
}

// httpTargets are the HTTP measures, in the order of a run.
var httpTargets = []string{"ceiling", "predict-miss", "predict-hit", "predict-hit-stored", "predict-miss-queue", "oip-miss"}

// httpPhase measures the ceiling, cache misses and cache hits at each connection count, cache
// hits again on the api that stores every hit (PERSIST_CACHE_HITS=true), and cache misses
// again on the api that persists through the queue (PERSIST_PATH=queue). Each point is
// measured in opts.Rounds rounds that take turns with the other targets' (each round after
// its own share of the warm-up), and the rounds are merged.
func (b *bench) httpPhase(ctx context.Context) ([]httpPoint, error) {
	insp := asynq.NewInspector(b.asynqOpt(0))
	defer insp.Close()
	meter := b.meter()
	rounds := max(b.opts.Rounds, 1)
	warmup, d := b.opts.Warmup/time.Duration(rounds), b.opts.Duration/time.Duration(rounds)
	var points []httpPoint
	for _, conns := range b.opts.Conns {
		acc := make([]roundsAcc, len(b.opts.Targets))
		for round := range rounds {
			for i, target := range b.opts.Targets {
				// When a measurement starts, for profiles taken during it (-pprof).
				b.log("http %-12s %3d conns: round %d of %d, %s after a %s warm-up", target, conns, round+1, rounds, d, warmup)
				if err := b.round(ctx, insp, meter, target, conns, warmup, d, &acc[i]); err != nil {
					return nil, err
				}
			}
		}
		for i, target := range b.opts.Targets {
			p := acc[i].point(target)
			cpu := p.CPUPerRequestUS
			b.log("http %-12s %3d conns: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d requests in %d rounds, drain %.1f s; CPU µs/req: api %.0f, ceiling %.0f, worker %.0f, redis %.0f, postgres %.0f, load %.0f; machine %.0f, idle %.0f%%)",
				target, conns, p.Result.RPS, p.Result.P50MS, p.Result.P99MS, p.Result.Requests, len(p.RoundRPS), p.DrainSeconds, cpu["api"], cpu["ceiling"], cpu["worker"], cpu["redis"], cpu["postgres"], cpu["load"],
				p.MachineCPUPerRequestUS, 100*p.IdleShare)
			points = append(points, p)
		}
	}
	return points, nil
}

// roundsAcc gathers the rounds of one point.
type roundsAcc struct {
	results    []loadResult
	cpu        map[string]time.Duration // per process, summed over the rounds
	busy, idle time.Duration            // the machine's, summed over the rounds
	drain      time.Duration
}

// round measures one round of target after a warm-up and adds it to acc.
func (b *bench) round(ctx context.Context, insp *asynq.Inspector, meter cpuMeter, target string, conns int, warmup, d time.Duration, acc *roundsAcc) error {
	if _, err := b.load(ctx, target, conns, warmup); err != nil {
		return err
	}
	cpu0 := meter.sample()
	busy0, idle0 := proc.MachineCPU()
	r, err := b.load(ctx, target, conns, d)
	if err != nil {
		return err
	}
	if r.Errors > 0 {
		return fmt.Errorf("%s at %d connections: %d errors, the first: %s", target, conns, r.Errors, r.FirstError)
	}
	if (target == "predict-miss" || target == "predict-miss-queue") && r.Cached > 0 {
		return fmt.Errorf("%s at %d connections: %d answers were cache hits", target, conns, r.Cached)
	}
	if target != "ceiling" {
		// Persistence is on: wait until the worker has stored every record, so that the next
		// round starts with an empty queue, and count the CPU it took.
		t0 := time.Now()
		if _, err := waitDrained(ctx, insp, persistQueue, 5*time.Minute); err != nil {
			return err
		}
		acc.drain += time.Since(t0)
	}
	cpu1 := meter.sample()
	busy1, idle1 := proc.MachineCPU()
	if acc.cpu == nil {
		acc.cpu = map[string]time.Duration{}
	}
	for name, v := range cpu1 {
		acc.cpu[name] += v - cpu0[name]
	}
	if busy1 > busy0 {
		acc.busy += busy1 - busy0
		acc.idle += idle1 - idle0
	}
	acc.results = append(acc.results, r)
	return nil
}

// point is the merged measurement of the rounds.
func (a *roundsAcc) point(target string) httpPoint {
	r := mergeRounds(a.results)
	p := httpPoint{Target: target, Result: r, DrainSeconds: a.drain.Seconds()} // 0 for the ceiling: nothing to drain
	for _, rr := range a.results {
		p.RoundRPS = append(p.RoundRPS, rr.RPS)
	}
	p.CPUPerRequestUS = perRequestUS(nil, a.cpu, r.Requests) // a.cpu holds differences already
	if a.busy > 0 && r.Requests > 0 {
		p.MachineCPUPerRequestUS = float64(a.busy.Microseconds()) / float64(r.Requests)
		p.IdleShare = float64(a.idle) / float64(a.busy+a.idle)
	}
	cpu := p.CPUPerRequestUS
	cpu["load"] = r.CPUPerRequestUS
	switch target { // the api of these points is another one
	case "predict-hit-stored":
		cpu["api"] = cpu["api-all-hits"]
	case "predict-miss-queue":
		cpu["api"] = cpu["api-queue"]
	}
	delete(cpu, "api-all-hits")
	delete(cpu, "api-queue")
	return p
}

// meter measures the CPU of the api, the worker, the ceiling server, the Redis server and
// the Postgres backends connected to the bench's database.
func (b *bench) meter() cpuMeter {
	redisPID := proc.FindPIDs("redis-server", fmt.Sprintf(":%d", b.redis.Port))
	if len(redisPID) == 0 {
		redisPID = proc.FindPIDs("redis-server", strconv.Itoa(b.redis.Port))
	}
	db := b.dbURL[strings.LastIndex(b.dbURL, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	return cpuMeter{
		"api": pids(b.api.PID()), "api-all-hits": pids(b.apiAll.PID()), "api-queue": pids(b.apiQueue.PID()),
		"worker": pids(b.worker.PID()), "ceiling": pids(b.ceiling.PID()),
		"redis":    func() []int { return redisPID },
		"postgres": func() []int { return proc.FindPIDs("postgres: ", " "+db+" ") },
	}
}

// asynqOpt is the queue Redis with database db.
func (b *bench) asynqOpt(db int) asynq.RedisConnOpt {
	return asynq.RedisClientOpt{Addr: fmt.Sprintf("127.0.0.1:%d", b.redis.Port), DB: db}
}

// queuePhase measures asynq itself: no-op tasks enqueued by 16 goroutines and processed by
// one server, on Redis database 1, which the worker does not read. (The persist pipeline
// is measured in-process: goBenchmarks.)
func (b *bench) queuePhase(ctx context.Context) (*queueResult, error) {
	n := b.opts.QueueTasks
	q := &queueResult{Tasks: n}
	b.log("queue: %s no-op tasks", itoa(int64(n)))
	var pr produceResult
	noopURL := fmt.Sprintf("redis://127.0.0.1:%d/1", b.redis.Port)
	if err := b.runJSON(ctx, b.pin.Load, &pr, "queue-produce", "-redis", noopURL, "-n", strconv.Itoa(n), "-c", "16", "-data", b.sonar); err != nil {
		return nil, err
	}
	if pr.Errors > 0 {
		return nil, fmt.Errorf("no-op enqueue: %d errors, the first: %s", pr.Errors, pr.FirstError)
	}
	q.NoopEnqueuePS = float64(n) / pr.Seconds
	took, err := drainNoop(ctx, b.asynqOpt(1), n, noopConcurrency, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	q.NoopProcessPS = float64(n) / took.Seconds()
	b.log("queue: no-op enqueue %.0f/s, processed %.0f/s", q.NoopEnqueuePS, q.NoopProcessPS)

	return q, nil
}

// jobPhase measures the COPY ceiling, then the NDJSON job through the api and the worker.
func (b *bench) jobPhase(ctx context.Context) (*jobResult, error) {
	n := b.opts.JobRows
	j := &jobResult{Rows: n}
	conn, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)

	// The ceiling: one CopyFrom of n result rows, for a job row of their own.
	var jobID string
	if err := conn.QueryRow(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing, confidence_threshold,
			chunk_size, input_format, deadline_at, status)
		VALUES (gen_random_uuid(), 'bench', 'bench', 'v0.0.0', 'standard', 0.5, 5000, 'ndjson', now() + interval '1 hour', 'succeeded')
		RETURNING id::text`).Scan(&jobID); err != nil {
		return nil, fmt.Errorf("copy ceiling: job row: %w", err)
	}
	b.log("job: COPY ceiling, %s result rows", itoa(int64(n)))
	meter := b.meter()
	cpu0 := meter.sample()
	took, err := copyCeiling(ctx, b.dbURL, jobID, n)
	if err != nil {
		return nil, err
	}
	j.CopyCPUSeconds = cpuSeconds(cpu0, meter.sample())["postgres"]
	j.CopySeconds, j.CopyRowsPS = took.Seconds(), float64(n)/took.Seconds()
	b.log("job: COPY ceiling %.0f rows/s (%.2f s; postgres CPU %.1f s)", j.CopyRowsPS, j.CopySeconds, j.CopyCPUSeconds)
	_, _ = conn.Exec(ctx, "CHECKPOINT") // best effort: the job does not pay for the ceiling's dirty pages

	b.log("job: uploading %s NDJSON rows", itoa(int64(n)))
	cpu0 = meter.sample()
	var up uploadResult
	if err := b.runJSON(ctx, b.pin.Load, &up, "upload", "-url", b.apiURL, "-key", b.key, "-rows", strconv.Itoa(n), "-data", b.sonar); err != nil {
		return nil, err
	}
	if up.JobID == "" {
		return nil, fmt.Errorf("job upload answered %d: %s", up.Status, up.Body)
	}
	j.Bytes, j.UploadSeconds = up.Bytes, up.Seconds
	cpu1 := meter.sample()
	j.UploadCPUSeconds = cpuSeconds(cpu0, cpu1)
	b.log("job: %s accepted after %.2f s (%.0f MB; CPU s: %s); waiting", up.JobID, up.Seconds, float64(up.Bytes)/1e6, formatCPU(j.UploadCPUSeconds))
	st, end, err := waitJob(ctx, b.apiURL, b.key, up.JobID, 30*time.Minute)
	if err != nil {
		return nil, err
	}
	if st.Status != "succeeded" || st.Processed != n {
		msg := ""
		if st.Error != nil {
			msg = *st.Error
		}
		return nil, fmt.Errorf("job %s ended %s with %d/%d processed, %d failed: %s", up.JobID, st.Status, st.Processed, n, st.Failed, msg)
	}
	j.RunCPUSeconds = cpuSeconds(cpu1, meter.sample())
	j.TotalSeconds = end.Sub(time.Unix(0, up.StartUnixNano)).Seconds()
	j.RowsPS = float64(n) / j.TotalSeconds
	b.log("job: succeeded, %.0f rows/s (%.2f s; run CPU s: %s)", j.RowsPS, j.TotalSeconds, formatCPU(j.RunCPUSeconds))
	return j, nil
}

// redactURL drops the password of a URL for the log.
func redactURL(raw string) string {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return "postgres"
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}
