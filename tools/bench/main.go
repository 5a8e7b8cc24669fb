// Command bench measures predq against the ceilings of the machine it runs on, in the same
// run, and prints one markdown table (JSON with -json). `make bench` runs it in full, then
// the in-process `go test -bench` measurements the table names; `make bench-smoke` runs a
// seconds-long version that only checks that the tool works.
//
// It drives the service as a black box. It builds the api and worker from the repository
// (go build), starts a throwaway Redis, creates a fresh database predq_bench_<random> on the
// Postgres at DATABASE_URL (else 127.0.0.1:5432, else a throwaway server), migrates it with
// `api migrate`, starts the api and the worker as real processes (LOG_LEVEL=warn, rate limit
// off, one API key), measures over HTTP, Redis and Postgres, stops everything and drops the
// database. Measured:
//
//   - HTTP at 16, 64 and 256 connections, req/s and p50/p99, from a closed-loop load
//     generator: (a) a bare Echo server that decodes the same JSON body as strictly as the
//     api and answers a constant (the ceiling, its own process: `bench serve-ceiling`); (b)
//     POST /api/v1/predict with a distinct input per request (cache misses, persistence on);
//     (c) the same input repeated (cache hits); (d) POST /v2/models/sonar/infer, one row, a distinct
//     input per request (the Open Inference Protocol, cache misses). With taskset, the servers under test run on
//     core 0 and the load generator on core 1. Each point is measured in -rounds rounds that
//     take turns with the other targets', so that the host's drift reaches them alike.
//   - Queue: asynq enqueueing and processing no-op tasks.
//   - Jobs: an NDJSON job, submit to succeeded, against a pgx CopyFrom of as many result rows.
//   - Overload: an api with admission control on, driven at 4× the clients of its peak
//     point, paced to 4× the peak's goodput, half on a bulk key (tools/internal/overload):
//     goodput against the peak and admitted p99 against the unloaded p99, in the same run.
//   - Memory: the api's peak RSS (VmHWM) after the HTTP load and after the upload.
//
// Inference and the persist pipeline are measured in-process by Benchmark functions of their
// packages; the table names the commands (goBenchmarks).
//
// Usage (from tools/, or with -root):
//
//	bench [-smoke] [-json] [-root DIR] [-duration 10s] [-rounds 5] [-conns 16,64,256] [-job-rows 1000000]
//	      [-queue-tasks 100000] [-no-pin] [-phases http,queue,smalljob,job,overload,grpc] [-grpc-channels 4]
//	      [-targets predict-miss,predict-hit,predict-hit-stored,predict-miss-queue,oip-miss] [-pprof]
//	bench -render report.json      print the table of a report saved with -json
//	bench gobench [-benchtime 1x]  run the in-process measurements the table names (go test -bench)
//
// Subcommands used by the bench itself (each is a separate process):
//
//	bench serve-ceiling -addr 127.0.0.1:PORT     the bare Echo ceiling server
//	bench load -addr … -conns N -duration D …     one closed-loop HTTP measurement point
//	bench upload -url … -rows N                   stream an NDJSON job to the api
//	bench queue-produce -redis URL -n N …         enqueue no-op tasks from 16 goroutines
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 1 {
		switch args[1] {
		case "serve-ceiling":
			return serveCeilingCommand(ctx, args[2:], stderr)
		case "load":
			return loadCommand(args[2:], stdout, stderr)
		case "grpc-load":
			return grpcLoadCommand(ctx, args[2:], stdout, stderr)
		case "upload":
			return uploadCommand(ctx, args[2:], stdout, stderr)
		case "queue-produce":
			return queueProduceCommand(ctx, args[2:], stdout, stderr)
		case "gobench":
			return goBenchCommand(ctx, args[2:], stdout, stderr)
		}
	}
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	var rep report
	if opts.Render != "" {
		b, err := os.ReadFile(opts.Render)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("-render %s: %w", opts.Render, err)
		}
		// The rows are made again from the saved measurements, so that a saved report gets
		// the rows this version derives from them (bounds, notes) as a new run would.
		rep.Rows = buildRows(rep, options{Smoke: rep.Mode == "smoke"})
	} else if rep, err = benchmark(ctx, opts, getenv, stderr); err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, rep)
	}
	writeMarkdown(stdout, rep)
	return nil
}

// options are the flags of a bench run.
type options struct {
	Smoke      bool
	JSON       bool
	Root       string
	Duration   time.Duration // per HTTP point
	Warmup     time.Duration // before each HTTP point, shared by its rounds
	Rounds     int           // each HTTP point is measured in this many rounds, in turn with the other targets'
	Conns      []int
	JobRows    int
	QueueTasks int
	NoPin      bool
	Pprof      bool            // api and worker serve net/http/pprof (PPROF_ADDR), addresses logged
	Phases     map[string]bool // http, queue, job, grpc
	Targets    []string        // the HTTP targets measured, in order; the ceiling is always first
	Render     string          // a -json report to print again, instead of measuring
	Command    string
	// GRPCChannels is how many gRPC client connections the unary gRPC point's workers share.
	GRPCChannels int
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "a seconds-long run that checks the tool works (16 connections, 1 s points, small job)")
	jsonOut := fs.Bool("json", false, "print JSON instead of the markdown table")
	root := fs.String("root", "", "the repository root (data/, models/, cmd/; default . or .., whichever it is)")
	duration := fs.Duration("duration", 0, "per HTTP point (default 10s, smoke 1s)")
	rounds := fs.Int("rounds", 0, "rounds of each HTTP point, taking turns with the other targets' (default 5, smoke 2)")
	conns := fs.String("conns", "", "HTTP connection counts (default 16,64,256, smoke 16)")
	jobRows := fs.Int("job-rows", 0, "rows of the NDJSON job (default 1000000, smoke 20000)")
	queueTasks := fs.Int("queue-tasks", 0, "tasks of the queue measurements (default 100000, smoke 5000)")
	noPin := fs.Bool("no-pin", false, "do not pin processes to cores even when taskset works")
	grpcChannels := fs.Int("grpc-channels", defaultGRPCChannels, "gRPC client connections the unary point's workers share (at most its connection count: one each)")
	pprof := fs.Bool("pprof", false, "let the api and the worker serve net/http/pprof on free loopback ports (logged), to profile a run")
	render := fs.String("render", "", "print the table of a report saved with -json, without measuring")
	phases := fs.String("phases", "http,queue,smalljob,job,overload,grpc", "the measurements to run (a subset, for profiling)")
	targets := fs.String("targets", strings.Join(httpTargets, ","), "the HTTP targets to measure (a subset, for quicker comparisons); the ceiling is measured always")
	if err := fs.Parse(args[1:]); err != nil {
		return options{}, err
	}
	o := options{Smoke: *smoke, JSON: *jsonOut, Root: *root, NoPin: *noPin, Pprof: *pprof, GRPCChannels: *grpcChannels, Render: *render,
		Duration: 10 * time.Second, Warmup: 2 * time.Second, Rounds: 5, Conns: []int{16, 64, 256},
		JobRows: 1_000_000, QueueTasks: 100_000,
		Command: strings.Join(append([]string{"bench"}, args[1:]...), " ")}
	if o.Smoke {
		o.Duration, o.Warmup, o.Rounds, o.Conns, o.JobRows, o.QueueTasks = time.Second, 300*time.Millisecond, 2, []int{16}, 20_000, 5_000
	}
	if *duration > 0 {
		o.Duration = *duration
	}
	if *rounds < 0 || *rounds > 100 {
		return options{}, fmt.Errorf("-rounds: %d is not a number of rounds (1..100)", *rounds)
	}
	if *rounds > 0 {
		o.Rounds = *rounds
	}
	if *conns != "" {
		o.Conns = nil
		for _, s := range strings.Split(*conns, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 || n > 4096 {
				return options{}, fmt.Errorf("-conns: %q is not a connection count (1..4096)", s)
			}
			o.Conns = append(o.Conns, n)
		}
	}
	o.Phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "http", "queue", "smalljob", "job", "overload", "grpc":
			o.Phases[p] = true
		default:
			return options{}, fmt.Errorf("-phases: unknown phase %q (want http, queue, smalljob, job, overload, grpc)", p)
		}
	}
	o.Targets = []string{"ceiling"}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(httpTargets, t) {
			return options{}, fmt.Errorf("-targets: unknown target %q (want some of %s)", t, strings.Join(httpTargets, ", "))
		}
		if !slices.Contains(o.Targets, t) {
			o.Targets = append(o.Targets, t)
		}
	}
	if *jobRows > 0 {
		o.JobRows = *jobRows
	}
	if *queueTasks > 0 {
		o.QueueTasks = *queueTasks
	}
	abs, err := findRoot(o.Root)
	if err != nil {
		return options{}, err
	}
	o.Root = abs
	return o, nil
}

// isRoot reports why dir is not the repository root: what the bench needs there.
func isRoot(dir string) error {
	for _, p := range []string{"data/sonar.csv", "models", "cmd/api"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	return nil
}
