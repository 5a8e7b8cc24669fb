package predstore_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/predstore"
)

// BenchmarkInsert compares the two write paths of Store.Insert by batch size, one batch per
// iteration, and reports rows per second. It chose DefaultCopyThreshold.
//
//	go test -run '^$' -bench BenchmarkInsert -benchtime 2s ./internal/predstore/
func BenchmarkInsert(b *testing.B) {
	pool := pgtest.New(b)
	paths := []struct {
		name      string
		threshold int
	}{{"unnest", 1 << 30}, {"copy", 1}}
	seq := 0
	for _, size := range []int{1, 10, 50, 100, 200, 500, 2000} {
		for _, p := range paths {
			b.Run(p.name+"/rows="+strconv.Itoa(size), func(b *testing.B) {
				store := predstore.New(pool, predstore.WithCopyThreshold(p.threshold))
				ctx := context.Background()
				batches := make([][]prediction.Record, b.N)
				for i := range batches {
					seq++
					batches[i] = records("b"+strconv.Itoa(seq), size)
				}
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					if _, err := store.Insert(ctx, batches[i]); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
			})
		}
	}
}
