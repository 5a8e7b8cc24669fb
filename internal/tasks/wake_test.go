package tasks_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redisdb"
	"github.com/predq/predq/internal/tasks"
)

// A wake-up entry runs one chunk at once in a lane, without waiting for the queue's polling;
// the lanes stop when their context ends.
func TestWakeLanes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rdb, err := redisdb.Open(b.redis.URL, time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })

	var ran atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tasks.Lanes(ctx, rdb, 2, func(context.Context) (bool, error) { ran.Add(1); return true, nil }, b.logger)
	}()

	w := tasks.NewWaker(rdb)
	start := time.Now()
	require.NoError(t, w.Wake(context.Background(), uuid.New(), 3))
	require.Eventually(t, func() bool { return ran.Load() == 3 }, 5*time.Second, time.Millisecond)
	t.Logf("three wake-ups ran within %v", time.Since(start))
	n, err := rdb.LLen(context.Background(), tasks.WakeKey).Result()
	require.NoError(t, err)
	require.Zero(t, n, "every entry taken")

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("lanes did not stop")
	}
}
