package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

// The queue measurement is asynq doing nothing: a no-op task enqueued by 16 goroutines (the
// `bench queue-produce` process, on the load generators' core when pinning is on), then
// drained by one asynq.Server. The persist pipeline that the api feeds is measured
// in-process by a Benchmark of its package (goBenchmarks).

// typeNoop is the task type of the no-op ceiling.
const typeNoop = "bench:noop"

// persistQueue is the asynq queue the api's persist tasks go to (asynq's default queue),
// which the bench waits to be drained between HTTP rounds.
const persistQueue = "default"

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

// noopPayload is the payload of every no-op task: the size of a predict's persist task, one
// sonar row of 60 numbers and the answer's fields.
func noopPayload(rows [][]float64) ([]byte, error) {
	return json.Marshal(map[string]any{
		"id": "019b6b2e-6c00-7000-8000-000000000000", "request_id": "bench-queue-0", "user_id": "bench", "features": rows[0],
		"prediction": 0.25, "confidence": 0.75, "prediction_class": "negative", "model_version": "v2.0.0",
		"preprocessing": "standard", "confidence_threshold": 0.5, "cached": false, "latency_ms": 0.2, "created_at": time.Now().UTC(),
	})
}

// queueProduceCommand is `bench queue-produce`: enqueue -n no-op tasks from -c goroutines.
func queueProduceCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("queue-produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	redisURL := fs.String("redis", "", "queue Redis URL")
	n := fs.Int("n", 10000, "tasks to enqueue")
	conc := fs.Int("c", 16, "enqueueing goroutines")
	data := fs.String("data", "data/sonar.csv", "sonar CSV file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, err := readSonar(*data)
	if err != nil {
		return err
	}
	opt, err := asynq.ParseRedisURI(*redisURL)
	if err != nil {
		return fmt.Errorf("queue-produce: -redis: %w", err)
	}
	payload, err := noopPayload(rows)
	if err != nil {
		return err
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	enqueue := func(int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(typeNoop, payload), asynq.Queue(persistQueue))
		return err
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
		Queues:      map[string]int{persistQueue: 1},
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
