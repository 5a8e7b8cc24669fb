package tasks_test

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

// BenchmarkPredictPersistence measures a synchronous prediction through the service (cache
// miss, inline inference) with persistence off (no Recorder), per record (the Recorder
// enqueues each record into an asynq group of a real Redis) and by group commit (records of
// concurrent requests share one enqueue), from 16 goroutines: the cost that persistence adds
// to every answer.
//
//	go test -run '^$' -bench BenchmarkPredictPersistence -benchtime 20000x ./internal/tasks/
func BenchmarkPredictPersistence(b *testing.B) {
	models := modelreg.New("../../models", nil, slog.New(slog.DiscardHandler))
	require.NoError(b, models.Load(context.Background()))
	for _, mode := range []string{"off", "per-record", "group-commit"} {
		b.Run("persist="+mode, func(b *testing.B) {
			bu := setup(b)
			rdb := redis.NewClient(&redis.Options{Addr: bu.redis.Addr})
			b.Cleanup(func() { _ = rdb.Close() })
			cfg := prediction.ServiceConfig{Models: models, Cache: prediction.NewCache(rdb, time.Hour, 100*time.Millisecond, nil, nil)}
			switch mode {
			case "per-record":
				cfg.Recorder, _ = newRecorder(b, bu, nil)
			case "group-commit":
				rec, _ := newRecorder(b, bu, nil)
				gc := tasks.NewGroupCommit(rec, 0, 0)
				b.Cleanup(gc.Close)
				cfg.Recorder = gc
			}
			svc, err := prediction.NewService(cfg)
			require.NoError(b, err)
			var n atomic.Int64
			b.SetParallelism(8) // 16 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				x := make([]float64, 60)
				for pb.Next() {
					i := n.Add(1)
					for j := range x {
						x[j] = math.Mod(float64(i*(int64(j)+7)), 97) / 97 // distinct inputs: cache misses
					}
					_, err := svc.Predict(context.Background(), prediction.Input{Features: x, ConfidenceThreshold: 0.5},
						prediction.Meta{RequestID: "bench-" + strconv.FormatInt(i, 10)})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "predictions/s")
		})
	}
}
