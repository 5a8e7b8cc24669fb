package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Targets of issue 8.
const (
	targetMissRatio = 0.5  // predict with cache misses / bare Echo, at targetConns
	targetMissP99MS = 5.0  // and its p99
	targetHitRatio  = 0.6  // predict with cache hits / bare Echo, at targetConns
	targetConns     = 64   //
	targetJobRatio  = 0.5  // NDJSON job rows/s / COPY rows/s
	targetRSSMB     = 150. // api peak RSS
	targetOIPRatio  = 0.9  // /v2 OIP REST infer (one row, misses) / /api/v1/predict misses, at targetConns (issue 19)

	// Issue 19: gRPC against REST (/v2) on the same load.
	targetGRPCUnaryRatio = 1.0 // one row per call, req/s
	targetGRPCBatchRatio = 2.0 // 1,000 rows per call, raw contents against JSON, rows/s
)

// Targets of issue 21.
const (
	targetOverloadGoodput = 0.9 // goodput under 4× overload / peak goodput
	targetOverloadP99     = 2.0 // admitted p99 under 4× overload / unloaded p99
)

// goBenchmarks are the measurements made in-process, as Benchmark functions of the packages
// they measure: the table names the command that gives each, and `bench gobench` (run by
// `make bench` after the table) runs them.
var goBenchmarks = []goBenchmark{
	{"inference", "inference, ns/row, of each shipped model, 1 row and a batch of 1000: PredictOne and PredictBatch (target: PredictBatch ≤ 1.5× the raw kernel) against the raw gonum kernel and a plain Go loop",
		"RawKernel|PredictOne|PredictBatch1000", "./internal/inference/"},
	{"queue", "queue: the persist pipeline of synchronous predictions (the api's Recorder by PERSIST_PATH: group commit → Postgres, or → Redis → worker → Postgres), records stored per second",
		"^BenchmarkPersist$", "./internal/prediction/"},
}

// goBenchmark is a `go test -bench` measurement: the benchmarks matching Bench in Pkg.
type goBenchmark struct{ Group, Measure, Bench, Pkg string }

// Command is the command line that runs it from the repository root.
func (g goBenchmark) Command() string {
	return fmt.Sprintf("go test -run '^$' -bench '%s' %s", g.Bench, g.Pkg)
}

// noopConcurrency is the asynq server concurrency of the no-op processing ceiling (the
// worker's default).
const noopConcurrency = 16

// loadNote names the load generator's CPU per request, when the report has it (reports
// saved before it was measured do not).
func loadNote(cpu map[string]float64) string {
	if v, ok := cpu["load"]; ok && v > 0 {
		return fmt.Sprintf("; load generator %.0f", v)
	}
	return ""
}

// cpuBound is the row that says what the machine's CPU allows the cache misses: every
// process of a miss (api, worker, Redis, Postgres and the load generator) shares the nproc
// cores, while the ceiling server is held by its own core, so misses can reach at most
// nproc × (the ceiling's CPU per request) ÷ (all the CPU per miss) of the ceiling's rate,
// and less by what the kernel spends outside these processes.
func cpuBound(miss, ceiling httpPoint, nproc int) (row, bool) {
	cpu, ceil := miss.CPUPerRequestUS, ceiling.CPUPerRequestUS["ceiling"]
	if cpu["load"] <= 0 || ceil <= 0 || nproc < 1 {
		return row{}, false
	}
	var all float64
	for _, name := range []string{"api", "worker", "redis", "postgres", "load"} {
		all += cpu[name]
	}
	note := fmt.Sprintf("the ratio this CPU allows on %d cores: at most %d × %.0f µs (the ceiling's CPU per request) ÷ %.0f µs = %.2f×",
		nproc, nproc, ceil, all, float64(nproc)*ceil/all)
	if miss.MachineCPUPerRequestUS > 0 {
		note += fmt.Sprintf("; the whole machine, kernel threads included, %.0f µs per miss, idle %.0f%% of the time",
			miss.MachineCPUPerRequestUS, 100*miss.IdleShare)
	}
	return row{Group: "http", Unit: "µs/req", Value: all,
		Measure: fmt.Sprintf("HTTP %d conns: predict, cache misses, CPU of every process per miss (api, worker, Redis, Postgres, load generator)", miss.Result.Conns),
		Note:    note}, true
}

// latencyBound is the row that says what latency the cache-miss target allows. A closed
// loop keeps every connection busy, so its mean latency is connections ÷ throughput
// (Little's law): at the target ratio of the ceiling's rate that mean is fixed by the ceiling
// alone. When it is above the p99 target, p99 ≤ target leaves the slowest 1% of requests to
// carry the difference: their mean is at least (mean − 0.99 × target) ÷ 0.01. When it is
// below, the p99 may be at most target ÷ mean times the mean. With the api pinned to one
// core, its CPU per miss also caps the throughput, and so bounds the mean from below.
func latencyBound(miss, ceiling httpPoint, pinned bool) (row, bool) {
	conns, ceil := float64(miss.Result.Conns), ceiling.Result.RPS
	if ceil <= 0 || conns <= 0 {
		return row{}, false
	}
	mean := 1000 * conns / (targetMissRatio * ceil) // ms
	need := 1000 * conns / targetMissP99MS          // req/s for a mean of targetMissP99MS
	note := fmt.Sprintf("a closed loop's mean latency is connections ÷ throughput: at %.1f× of the ceiling's %s req/s, %d connections wait %.2f ms on average",
		targetMissRatio, itoa(int64(math.Round(ceil))), miss.Result.Conns, mean)
	if mean > targetMissP99MS {
		note += fmt.Sprintf(", so p99 ≤ %g ms would need the slowest 1%% of requests to average at least %s ms", targetMissP99MS, itoa(int64(math.Round((mean-0.99*targetMissP99MS)/0.01))))
	} else {
		note += fmt.Sprintf(", so p99 ≤ %g ms allows a p99 of at most %.2f× the mean", targetMissP99MS, targetMissP99MS/mean)
	}
	note += fmt.Sprintf("; a mean of %g ms takes %s req/s, %.2f× of the ceiling", targetMissP99MS, itoa(int64(math.Round(need))), need/ceil)
	if api := miss.CPUPerRequestUS["api"]; pinned && api > 0 {
		most := 1e6 / api
		note += fmt.Sprintf("; the api, pinned to one core at %.0f µs of CPU per miss, serves at most %s req/s (%.2f× of the ceiling), a mean of at least %.2f ms",
			api, itoa(int64(math.Round(most))), most/ceil, 1000*conns/most)
	}
	return row{Group: "http", Unit: "ms", Value: mean,
		Measure: fmt.Sprintf("HTTP %d conns: predict, cache misses, mean latency at %.1f× of the ceiling (Little's law)", miss.Result.Conns, targetMissRatio),
		Note:    note}, true
}

// roundRatios describes the ratios of p to the ceiling taken round by round (each round of p
// against the ceiling's round just before it), or "" when the report has no rounds.
func roundRatios(p, ceiling httpPoint) string {
	n := min(len(p.RoundRPS), len(ceiling.RoundRPS))
	if n < 2 {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range n {
		if ceiling.RoundRPS[i] <= 0 {
			return ""
		}
		r := p.RoundRPS[i] / ceiling.RoundRPS[i]
		lo, hi = min(lo, r), max(hi, r)
	}
	return fmt.Sprintf("ratio within each of the %d rounds %.2f–%.2f×", n, lo, hi)
}

// joinNotes joins the non-empty notes with "; ".
func joinNotes(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// buildRows turns the measurements into the table's rows.
func buildRows(rep report, opts options) []row {
	var rows []row
	ceilings, misses := map[int]httpPoint{}, map[int]httpPoint{}
	for _, p := range rep.HTTP {
		switch p.Target {
		case "ceiling":
			ceilings[p.Result.Conns] = p
		case "predict-miss":
			misses[p.Result.Conns] = p
		}
	}
	for _, p := range rep.HTTP {
		r := p.Result
		c := r.Conns
		base := row{Group: "http", Value: r.RPS, Unit: "req/s", P50MS: ptr(r.P50MS), P99MS: ptr(r.P99MS)}
		cpu := p.CPUPerRequestUS
		switch p.Target {
		case "ceiling":
			base.Measure = fmt.Sprintf("HTTP %d conns: bare Echo (decode, constant answer)", c)
			if cpu != nil {
				base.Note = fmt.Sprintf("CPU %.0f µs/req%s", cpu["ceiling"], loadNote(cpu))
			}
		case "predict-miss":
			base.Measure = fmt.Sprintf("HTTP %d conns: predict, cache misses", c)
			base = base.withCeiling("bare Echo", ceilings[c].Result.RPS)
			if c == targetConns {
				base = base.atLeast(targetMissRatio, fmt.Sprintf("p99 ≤ %g ms", targetMissP99MS), r.P99MS <= targetMissP99MS)
			}
		case "predict-hit":
			base.Measure = fmt.Sprintf("HTTP %d conns: predict, cache hits", c)
			base = base.withCeiling("bare Echo", ceilings[c].Result.RPS)
			if c == targetConns {
				base = base.atLeast(targetHitRatio, "", true)
			}
		case "predict-hit-stored":
			base.Measure = fmt.Sprintf("HTTP %d conns: predict, cache hits, every hit stored (PERSIST_CACHE_HITS=true)", c)
			base = base.withCeiling("bare Echo", ceilings[c].Result.RPS)
		case "predict-miss-queue":
			base.Measure = fmt.Sprintf("HTTP %d conns: predict, cache misses, persisted through the queue (PERSIST_PATH=queue)", c)
			base = base.withCeiling("bare Echo", ceilings[c].Result.RPS)
		case "oip-miss":
			base.Measure = fmt.Sprintf("HTTP %d conns: /v2 OIP REST infer, one row, cache misses", c)
			if m, ok := misses[c]; ok {
				base = base.withCeiling("/api/v1/predict, cache misses", m.Result.RPS)
				if c == targetConns {
					base = base.atLeast(targetOIPRatio, "", true)
				}
			} else {
				base = base.withCeiling("bare Echo", ceilings[c].Result.RPS)
			}
		}
		if p.Target != "ceiling" && cpu != nil {
			base.Note = fmt.Sprintf("CPU µs/req: api %.0f, worker %.0f, Redis %.0f, Postgres %.0f%s", cpu["api"], cpu["worker"], cpu["redis"], cpu["postgres"], loadNote(cpu))
		}
		if p.Target != "ceiling" {
			base.Note = joinNotes(base.Note, roundRatios(p, ceilings[c]))
		}
		if p.Target == "predict-miss" && c == targetConns && ceilings[c].Result.P99MS > 0 {
			// The p99 bound holds the bare handler to it too.
			base.Note = joinNotes(base.Note, fmt.Sprintf("the bare Echo ceiling's own p99 at %d connections: %.2f ms", c, ceilings[c].Result.P99MS))
		}
		rows = append(rows, base)
		if p.Target == "predict-miss" {
			if b, ok := cpuBound(p, ceilings[c], rep.Machine.NProc); ok {
				rows = append(rows, b)
			}
			if c == targetConns {
				if b, ok := latencyBound(p, ceilings[c], rep.Pinned); ok {
					rows = append(rows, b)
				}
			}
		}
	}

	if q := rep.Queue; q != nil {
		rows = append(rows,
			row{Group: "queue", Measure: "queue: asynq no-op enqueue, 16 goroutines", Value: q.NoopEnqueuePS, Unit: "tasks/s"},
			row{Group: "queue", Measure: fmt.Sprintf("queue: asynq no-op processing, one server, concurrency %d", noopConcurrency), Value: q.NoopProcessPS, Unit: "tasks/s"},
		)
	}

	if j := rep.Job; j != nil {
		rows = append(rows, row{Group: "job", Measure: fmt.Sprintf("job: %s-row NDJSON, submit → succeeded", itoa(int64(j.Rows))), Value: j.RowsPS, Unit: "rows/s",
			Note: fmt.Sprintf("%.1f s: upload %.1f s of %.0f MB, run %.1f s", j.TotalSeconds, j.UploadSeconds, float64(j.Bytes)/1e6, j.TotalSeconds-j.UploadSeconds)}.
			withCeiling(fmt.Sprintf("one pgx CopyFrom of %s result rows", itoa(int64(j.Rows))), j.CopyRowsPS).atLeast(targetJobRatio, "", true))
	}

	if o := rep.Overload; o != nil {
		rows = append(rows, overloadRows(o)...)
	}
	if g := rep.GRPC; g != nil {
		rows = append(rows, grpcRows(g)...)
	}
	if sj := rep.SmallJob; sj != nil {
		rows = append(rows, smallJobTableRows(sj)...)
	}

	if m := rep.Memory; m != nil {
		rss := func(measure string, b int64) row {
			mb := float64(b) / 1e6
			return row{Group: "memory", Measure: measure, Value: mb, Unit: "MB", Target: "≤ " + strconv.FormatFloat(targetRSSMB, 'f', -1, 64) + " MB", Met: ptr(mb <= targetRSSMB)}
		}
		if m.AfterHTTP > 0 {
			rows = append(rows, rss("api peak RSS (VmHWM) after the HTTP load", m.AfterHTTP))
		}
		if m.AfterUpload > 0 && rep.Job != nil {
			rows = append(rows, rss(fmt.Sprintf("api peak RSS (VmHWM) after the %s-row upload and job", itoa(int64(rep.Job.Rows))), m.AfterUpload))
		}
	}
	for _, g := range goBenchmarks {
		rows = append(rows, row{Group: g.Group, Measure: g.Measure, Note: "`" + g.Command() + "` (printed after this table by `make bench`)"})
	}
	if opts.Smoke {
		// Too small to judge: the smoke run only checks that every measurement works.
		for i := range rows {
			rows[i].Met = nil
		}
	}
	return rows
}

// httpTiming says how long each HTTP point ran.
func httpTiming(opts options) string {
	if opts.Rounds > 1 {
		return fmt.Sprintf("%s per point in %d rounds of %s, each after a %s warm-up, taking turns with the other targets' rounds (ceiling, misses, hits, …, then again)",
			opts.Duration, opts.Rounds, opts.Duration/time.Duration(opts.Rounds), opts.Warmup/time.Duration(opts.Rounds))
	}
	return fmt.Sprintf("%s per point after a %s warm-up", opts.Duration, opts.Warmup)
}

// notes are the lines printed under the table.
func notes(rep report, opts options) []string {
	n := []string{
		"HTTP: closed loop, each connection sends its next request when the answer is read; " +
			httpTiming(opts) + "; predict uses the latest model (MLP) and stores every computed answer " +
			"(cache hits too on the api with PERSIST_CACHE_HITS=true): the api writes it to Postgres before answering (PERSIST_PATH=postgres), or the worker does (the api with PERSIST_PATH=queue), and the worker drains the persist queue between rounds. Cache misses: sonar row i mod 208 with its first feature moved by (1+i/208)·1e-9, so no input repeats. " +
			"CPU µs/req: CPU time of each process (Postgres: the backends of the bench's database) summed over the rounds of the point, each from its start until the persist queue is empty, per answered request; the load generator measures its own (getrusage), the whole machine's busy and idle time comes from /proc/stat.",
	}
	if rep.Overload != nil {
		n = append(n, "Overload: a fourth api with admission control on ("+strings.Join(overloadEnv, " ")+"; the other apis run with ADMISSION_CONTROL=false): "+
			"one connection (unloaded), 8 (peak), then 32 clients paced together to 4× the peak's goodput, every second one on a key of class bulk, ignoring Retry-After; "+
			"distinct inputs; p99 of the 200s only. tools/e2e TestOverloadShedsBulkFirstAndLosesNothing runs the same load and asserts the answers' contract, bulk shed first, nothing lost.")
	}
	if rep.GRPC != nil {
		n = append(n, fmt.Sprintf("gRPC: closed loop like HTTP, as many calls in flight as the REST point has connections; the one-row point's workers share %d grpc-go client connections (HTTP/2 multiplexes calls; one connection per call in flight costs grpc-go's client more CPU per call), each batch worker has its own; %s per point after a %s warm-up, inputs distinct as for the HTTP misses, every computed answer stored, the persist queue drained between points. "+
			"REST is the protocol's REST binding, POST /v2/models/sonar/infer: one row at the same connection count; the %d-row point sends the same rows as JSON (one FP64 tensor [N, 60], data flat) at %d connections, against ModelInfer with raw_input_contents (little-endian FP64). "+
			"The calls per api CPU-second rows are the server's side alone: the load generators share the machine, and grpc-go's client costs more CPU per call than the raw HTTP/1.1 one.",
			rep.GRPC.Channels, opts.Duration, opts.Warmup, rep.GRPC.BatchRows, rep.GRPC.BatchConns))
	}
	if opts.Smoke {
		n = append(n, "Smoke run: sizes are too small for the targets to mean anything; it checks that every measurement still works.")
	}
	return n
}

// grpcRows are the gRPC phase's rows: the throughput of each point against REST's, judged on
// the targets, then the same points' server-side cost, the answers per CPU-second of the
// api, against REST's: on a machine that the load generator shares, its own cost (grpc-go's
// client costs more per call than the raw HTTP/1.1 generator) moves the throughput and not
// the api's cost per call.
func grpcRows(g *grpcResult) []row {
	u, ur := g.UnaryGRPC, g.UnaryREST
	b, br := g.BatchGRPC, g.BatchREST
	n := float64(g.BatchRows)
	cpu := func(point, proc string) float64 { return g.CPUPerCallUS[point][proc] }
	conns := fmt.Sprintf("%d calls in flight on %d connections", u.Conns, g.Channels)
	if g.Channels == 0 || g.Channels == u.Conns {
		conns = fmt.Sprintf("%d conns", u.Conns)
	}
	rows := []row{
		row{Group: "grpc", Unit: "req/s", Value: u.RPS, P50MS: ptr(u.P50MS), P99MS: ptr(u.P99MS),
			Measure: fmt.Sprintf("gRPC %s: ModelInfer, one row (fp64_contents), cache misses", conns),
			Note: fmt.Sprintf("REST p50 %.2f ms, p99 %.2f ms; CPU µs/call, gRPC against REST: api %.0f / %.0f, load generator (grpc-go client; raw HTTP/1.1) %.0f / %.0f",
				ur.P50MS, ur.P99MS, cpu("unary_grpc", "api"), cpu("unary_rest", "api"), u.CPUPerRequestUS, ur.CPUPerRequestUS)}.
			withCeiling(fmt.Sprintf("REST /v2 infer, %d conns", ur.Conns), ur.RPS).atLeast(targetGRPCUnaryRatio, "", true),
		row{Group: "grpc", Unit: "rows/s", Value: b.RPS * n, P50MS: ptr(b.P50MS), P99MS: ptr(b.P99MS),
			Measure: fmt.Sprintf("gRPC %d conns: ModelInfer, %s rows per call in raw_input_contents, cache misses", b.Conns, itoa(int64(g.BatchRows))),
			Note: fmt.Sprintf("REST p50 %.2f ms, p99 %.2f ms; CPU µs/call, gRPC against REST: api %.0f / %.0f, load generator %.0f / %.0f, Redis %.0f / %.0f, Postgres %.0f / %.0f",
				br.P50MS, br.P99MS, cpu("batch_grpc", "api"), cpu("batch_rest", "api"), b.CPUPerRequestUS, br.CPUPerRequestUS,
				cpu("batch_grpc", "redis"), cpu("batch_rest", "redis"), cpu("batch_grpc", "postgres"), cpu("batch_rest", "postgres"))}.
			withCeiling(fmt.Sprintf("REST /v2 infer, the same %s rows as JSON", itoa(int64(g.BatchRows))), br.RPS*n).
			atLeast(targetGRPCBatchRatio, "", true),
	}
	perCPU := func(point string, per float64) float64 {
		if us := cpu(point, "api"); us > 0 {
			return per * 1e6 / us
		}
		return 0
	}
	if v, c := perCPU("unary_grpc", 1), perCPU("unary_rest", 1); v > 0 && c > 0 {
		rows = append(rows, row{Group: "grpc", Unit: "calls/api-CPU-s", Value: v,
			Measure: "gRPC server-side cost: one-row calls answered per CPU-second of the api, the point above",
			Note:    "from the api's CPU time over the point until the persist queue drained"}.
			withCeiling("REST /v2 infer, same point", c))
	}
	if v, c := perCPU("batch_grpc", n), perCPU("batch_rest", n); v > 0 && c > 0 {
		rows = append(rows, row{Group: "grpc", Unit: "rows/api-CPU-s", Value: v,
			Measure: fmt.Sprintf("gRPC server-side cost: rows answered per CPU-second of the api, %s rows per call in raw_input_contents", itoa(int64(g.BatchRows))),
			Note:    "from the api's CPU time over the point until the persist queue drained; Redis and Postgres, the same work for both doors, are in the row above"}.
			withCeiling("REST /v2 infer, the same rows as JSON", c))
	}
	return rows
}
