package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/predstore"
	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
)

// The queue measurement compares asynq doing nothing (a no-op task enqueued by 16
// goroutines, then drained by one asynq.Server) with the persist pipeline of synchronous
// predictions (one record per call from 16 goroutines through tasks.GroupCommit and
// tasks.Recorder, as the api records its answers; the real worker process writing them to
// Postgres). The producers run as
// `bench queue-produce` processes, on the load generators' core when pinning is on.

// typeNoop is the task type of the no-op ceiling.
const typeNoop = "bench:noop"

// produceResult is what `bench queue-produce` prints.
type produceResult struct {
	N       int     `json:"n"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	// StartUnixNano and EndUnixNano bracket the enqueues, for the consumer side's timing.
	StartUnixNano int64  `json:"start_unix_nano"`
	EndUnixNano   int64  `json:"end_unix_nano"`
	FirstError    string `json:"first_error,omitempty"`
}

// benchRecord is the prediction record number i, as the api records a predict of sonar row
// i mod 208.
func benchRecord(rows [][]float64, prefix string, i int) prediction.Record {
	return prediction.Record{
		RequestID: prefix + strconv.Itoa(i), UserID: "bench", Features: rows[i%len(rows)],
		Prediction: 0.25, Confidence: 0.75, PredictionClass: prediction.ClassNegative, ModelVersion: "v2.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.5, LatencyMS: 0.2, CreatedAt: time.Now().UTC(),
	}
}

// queueProduceCommand is `bench queue-produce`: enqueue -n tasks from -c goroutines, either
// no-op tasks (-mode noop) or prediction records through tasks.Recorder (-mode persist).
func queueProduceCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("queue-produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "noop", "noop or persist")
	redisURL := fs.String("redis", "", "queue Redis URL")
	dbURL := fs.String("db", "", "Postgres URL (persist: the Recorder's fallback store)")
	n := fs.Int("n", 10000, "tasks to enqueue")
	conc := fs.Int("c", 16, "enqueueing goroutines")
	prefix := fs.String("prefix", "bench-queue-", "request id prefix of persisted records")
	data := fs.String("data", "data/sonar.csv", "sonar CSV file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, err := readSonar(*data)
	if err != nil {
		return err
	}
	ropts, err := redisdb.ParseURL(*redisURL)
	if err != nil {
		return err
	}
	var enqueue func(i int) error
	switch *mode {
	case "noop":
		payload, err := json.Marshal(benchRecord(rows, *prefix, 0))
		if err != nil {
			return err
		}
		client := asynq.NewClient(tasks.RedisConnOpt(ropts, 0))
		defer client.Close()
		enqueue = func(int) error {
			_, err := client.EnqueueContext(ctx, asynq.NewTask(typeNoop, payload), asynq.Queue(tasks.QueueDefault))
			return err
		}
	case "persist":
		pool, err := postgres.Open(ctx, *dbURL, 2)
		if err != nil {
			return err
		}
		defer pool.Close()
		rec, err := tasks.NewRecorder(tasks.RecorderConfig{Redis: ropts, Store: predstore.New(pool)})
		if err != nil {
			return err
		}
		defer rec.Close()
		// As the api does: the records of concurrent calls share one enqueue.
		commits := tasks.NewGroupCommit(rec, 0, 0)
		defer commits.Close()
		enqueue = func(i int) error {
			return commits.Record(ctx, []prediction.Record{benchRecord(rows, *prefix, i)})
		}
	default:
		return fmt.Errorf("queue-produce: -mode must be noop or persist, got %q", *mode)
	}
	var (
		next, errs atomic.Int64
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	start := time.Now()
	for range *conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= *n || ctx.Err() != nil {
					return
				}
				if err := enqueue(i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	end := time.Now()
	r := produceResult{N: *n, Errors: errs.Load(), Seconds: end.Sub(start).Seconds(),
		StartUnixNano: start.UnixNano(), EndUnixNano: end.UnixNano()}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstError = e
	}
	return json.NewEncoder(stdout).Encode(r)
}

// drainNoop starts an asynq.Server with a no-op handler for typeNoop on the default queue of
// opt, waits until it has processed n tasks, and returns how long that took.
func drainNoop(ctx context.Context, opt asynq.RedisConnOpt, n, concurrency int, timeout time.Duration) (time.Duration, error) {
	var done atomic.Int64
	finished := make(chan struct{})
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: concurrency,
		Queues:      map[string]int{tasks.QueueDefault: 1},
		LogLevel:    asynq.ErrorLevel,
		Logger:      quietAsynqLogger{},
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(typeNoop, func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(finished)
		}
		return nil
	})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return 0, err
	}
	defer srv.Shutdown()
	select {
	case <-finished:
		return time.Since(start), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("no-op server processed %d of %d tasks in %s", done.Load(), n, timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// quietAsynqLogger drops asynq's own log lines.
type quietAsynqLogger struct{}

func (quietAsynqLogger) Debug(...any) {}
func (quietAsynqLogger) Info(...any)  {}
func (quietAsynqLogger) Warn(...any)  {}
func (quietAsynqLogger) Error(...any) {}
func (quietAsynqLogger) Fatal(...any) {}

// waitDrained waits until queue holds no pending, active, scheduled, retried or aggregating
// task (everything enqueued has been handled), polling every 50 ms, and returns when it
// first saw it so.
func waitDrained(ctx context.Context, insp *asynq.Inspector, queue string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		qi, err := insp.GetQueueInfo(queue)
		now := time.Now()
		switch {
		case err != nil && !queueExists(insp, queue):
			// Nothing was ever enqueued there (asynq's NOT_FOUND is an internal error type,
			// which errors.Is cannot match with asynq.ErrQueueNotFound).
			return now, nil
		case err != nil:
			return now, err
		case qi.Pending+qi.Active+qi.Scheduled+qi.Retry+qi.Aggregating == 0:
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("queue %s not drained after %s: %d pending, %d active, %d aggregating, %d retry",
				queue, timeout, qi.Pending, qi.Active, qi.Aggregating, qi.Retry)
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// queueExists reports whether asynq knows queue (it has held a task).
func queueExists(insp *asynq.Inspector, queue string) bool {
	qs, err := insp.Queues()
	return err != nil || slices.Contains(qs, queue)
}
