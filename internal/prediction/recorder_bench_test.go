package prediction_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/predq/predq/internal/prediction"
)

// BenchmarkPersist measures the persist pipeline of synchronous predictions: b.N records, one
// per Record call as single predicts make them, from 16 goroutines through the group commit
// of each path's Recorder, against real Postgres and Redis, until every record is a row of
// predictions (with PERSIST_PATH=queue a worker stores them). It reports records stored per
// second end to end, calls per second, and the time from the last call's return until the
// last row (drain-ms):
//
//	go test -run '^$' -bench BenchmarkPersist -benchtime 20000x ./internal/prediction/
func BenchmarkPersist(b *testing.B) {
	for _, path := range []string{prediction.PathPostgres, prediction.PathQueue} {
		b.Run("path="+path, func(b *testing.B) {
			bu := setup(b)
			bu.logger = slog.New(slog.DiscardHandler)
			if path == prediction.PathQueue {
				startWorker(b, bu)
			}
			rec, _ := newRecorder(b, bu, path, nil)
			runPersistBench(b, bu, rec)
		})
	}
}

// persistConcurrency is the number of goroutines that record, as concurrent requests would.
const persistConcurrency = 16

func runPersistBench(b *testing.B, bu bundle, rec prediction.Recorder) {
	n := b.N
	recs := make([]prediction.Record, n)
	for i := range recs {
		recs[i] = record("bench", i, 0.9)
	}
	ctx := context.Background()
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Value
	)
	b.ResetTimer()
	start := time.Now()
	for range persistConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := rec.Record(ctx, recs[i:i+1]); err != nil {
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
	for countRows(b, bu.pool) < int64(n) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("only %d of %d rows after 5 minutes", countRows(b, bu.pool), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	total := time.Since(start)
	b.StopTimer()
	if got := countRows(b, bu.pool); got != int64(n) {
		b.Fatalf("rows: got %d, want %d", got, n)
	}
	b.ReportMetric(float64(n)/total.Seconds(), "rec/s")
	b.ReportMetric(float64(n)/callsDone.Seconds(), "calls/s")
	b.ReportMetric(float64((total - callsDone).Milliseconds()), "drain-ms")
	b.ReportMetric(0, "ns/op")
}
