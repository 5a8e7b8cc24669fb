package tasks_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

// The persistence benchmarks write b.N records, one per call as single predicts do, from
// benchConcurrency goroutines, against real Postgres and Redis, and report records persisted
// per second, end to end (first call until the last row is in Postgres). Run them in one go
// with a fixed count, so that each sees the same load:
//
//	go test -run '^$' -bench BenchmarkPersist -benchtime 20000x ./internal/tasks/
const benchConcurrency = 16

// BenchmarkPersistGrouped: Recorder → one task per record in asynq groups → the worker's
// aggregator → one prediction.Insert per batch (the path of the issue, default settings).
func BenchmarkPersistGrouped(b *testing.B) {
	bb := setup(b)
	bb.logger = quietLogger()
	startWorker(b, bb, func(c *tasks.WorkerConfig) { c.Concurrency = tasks.DefaultConcurrency })
	rec, _ := newRecorder(b, bb, nil)
	runPersistBench(b, bb, func(ctx context.Context, r prediction.Record) error {
		return rec.Record(ctx, []prediction.Record{r})
	})
}

// BenchmarkPersistOneTaskPerRecord: one ungrouped asynq task per record, each written by the
// worker with its own INSERT (what grouping avoids).
func BenchmarkPersistOneTaskPerRecord(b *testing.B) {
	bb := setup(b)
	bb.logger = quietLogger()
	startWorker(b, bb, func(c *tasks.WorkerConfig) { c.Concurrency = tasks.DefaultConcurrency })
	runPersistBench(b, bb, func(ctx context.Context, r prediction.Record) error {
		t, err := tasks.NewPredictionPersistTask(r, "unused", nil)
		if err != nil {
			return err
		}
		_, err = bb.client.EnqueueContext(ctx, asynq.NewTask(t.Type(), t.Payload()), asynq.Queue(tasks.QueueDefault))
		return err
	})
}

// BenchmarkPersistOneInsertPerRecord: no queue; each call INSERTs its record into Postgres
// (autocommit), as the seed did.
func BenchmarkPersistOneInsertPerRecord(b *testing.B) {
	bb := setup(b)
	runPersistBench(b, bb, func(ctx context.Context, r prediction.Record) error {
		_, err := bb.store.Insert(ctx, []prediction.Record{r})
		return err
	})
}

func runPersistBench(b *testing.B, bb bundle, call func(context.Context, prediction.Record) error) {
	n := b.N
	recs := make([]prediction.Record, n)
	for i := range recs {
		recs[i] = record("bench", i, 0.9)
	}
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range benchConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := call(ctx, recs[i]); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	callsDone := time.Since(start)
	for countRows(b, bb.pool) < int64(n) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("only %d of %d rows after 5 minutes", countRows(b, bb.pool), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	total := time.Since(start)
	b.StopTimer()
	if got := countRows(b, bb.pool); got != int64(n) {
		b.Fatalf("rows: got %d, want %d", got, n)
	}
	b.ReportMetric(float64(n)/total.Seconds(), "rec/s")
	b.ReportMetric(float64(n)/callsDone.Seconds(), "calls/s")
	b.ReportMetric(float64(callsDone.Microseconds())/float64(n)*benchConcurrency, "µs/call")
	b.ReportMetric(float64((total - callsDone).Milliseconds()), "drain-ms")
	b.ReportMetric(0, "ns/op")
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkRecordBatch measures Recorder.Record of one batch predict of 1,000 records by the
// number of concurrent enqueues (asynq has no batch enqueue: each record is one Lua script
// call, so concurrency is the only way to overlap the round trips).
//
//	go test -run '^$' -bench BenchmarkRecordBatch ./internal/tasks/
func BenchmarkRecordBatch(b *testing.B) {
	bb := setup(b)
	bb.logger = quietLogger()
	for _, workers := range []int{1, 4, 16, 64} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) {
			rec, _ := newRecorder(b, bb, func(c *tasks.RecorderConfig) { c.EnqueueWorkers = workers })
			seq := 0
			for b.Loop() {
				seq++
				recs := make([]prediction.Record, 1000)
				for i := range recs {
					recs[i] = record("w"+strconv.Itoa(workers)+"-"+strconv.Itoa(seq), i, 0.9)
				}
				if err := rec.Record(context.Background(), recs); err != nil {
					b.Fatal(err)
				}
			}
			// Each iteration fills the groups (no worker drains them); empty Redis between runs.
			b.StopTimer()
			_ = bb.redis.Client(b).FlushAll(context.Background()).Err()
			b.StartTimer()
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "rec/s")
		})
	}
}
