package prediction

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/redistest"
)

// countPipelines counts the pipelines a client sends.
type countPipelines struct{ n atomic.Int64 }

func (h *countPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *countPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *countPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// Concurrent calls share pipelines, and every caller still gets its own answers: its hits,
// its misses, and its writes readable once SetMany returns.
func TestCacheBatchesConcurrentCallsAndAnswersEachCaller(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t).Client(t)
	hook := &countPipelines{}
	rdb.AddHook(hook)
	c := NewCache(rdb, time.Minute, 2*time.Second, nil, nil)
	ctx := context.Background()

	const callers = 200
	key := func(i int) string { return fmt.Sprintf("predq:test:%d", i) }
	// Even callers' keys exist beforehand.
	for i := 0; i < callers; i += 2 {
		if err := rdb.Set(ctx, key(i), fmt.Sprint(float64(i)/1000), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	before := hook.n.Load()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			hits := c.GetMany(ctx, []string{key(i), key(i + 10_000)})
			if len(hits) != 2 || hits[1].OK {
				errs <- fmt.Errorf("caller %d: %+v, want two answers, the second a miss", i, hits)
				return
			}
			if want := i%2 == 0; hits[0].OK != want || (want && hits[0].Value != float64(i)/1000) {
				errs <- fmt.Errorf("caller %d: got %+v, want hit=%v value %v", i, hits[0], want, float64(i)/1000)
				return
			}
			if !hits[0].OK {
				c.SetMany(ctx, []string{key(i)}, []float64{0.25})
				// Written once SetMany returns.
				if v, err := rdb.Get(ctx, key(i)).Result(); err != nil || v != "0.25" {
					errs <- fmt.Errorf("caller %d: after SetMany the key holds %q, %v", i, v, err) //nolint:errorlint // err may be nil here; the message only reports it
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pipelines := hook.n.Load() - before
	t.Logf("%d callers (300 calls) took %d pipelines", callers, pipelines)
	if pipelines >= 300 {
		t.Errorf("%d pipelines for 300 concurrent calls: the calls were not batched", pipelines)
	}
	// A caller alone still gets its answer.
	if h := c.GetMany(ctx, []string{key(1)}); !h[0].OK || h[0].Value != 0.25 {
		t.Errorf("alone: %+v, want the value written above", h)
	}
}

// A dead Redis makes every call a miss within the timeout, then bypasses the cache.
func TestCacheMissesWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	srv := redistest.New(t)
	rdb := srv.Client(t)
	c := NewCache(rdb, time.Minute, 200*time.Millisecond, nil, nil)
	ctx := context.Background()
	c.SetMany(ctx, []string{"k"}, []float64{0.5})
	if h := c.GetMany(ctx, []string{"k"}); !h[0].OK {
		t.Fatalf("before the stop: %+v, want a hit", h)
	}
	srv.Stop()
	start := time.Now()
	if h := c.GetMany(ctx, []string{"k"}); h[0].OK {
		t.Fatalf("Redis stopped: %+v, want a miss", h)
	}
	if c.available() {
		t.Error("the cache is not bypassed after a failed call")
	}
	if h := c.GetMany(ctx, []string{"k"}); h[0].OK {
		t.Fatalf("bypassed: %+v, want a miss", h)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("two calls on a dead Redis took %v", took)
	}
}
