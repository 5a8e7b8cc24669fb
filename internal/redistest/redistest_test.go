package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestServersAreSeparateAndStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := New(t), New(t)
	ca, cb := a.Client(t), b.Client(t)
	require.NoError(t, ca.Set(ctx, "k", "a", 0).Err())
	require.Equal(t, int64(0), cb.Exists(ctx, "k").Val())
	a.Stop()
	require.Error(t, ca.Ping(ctx).Err())
	require.NoError(t, cb.Ping(ctx).Err())
}

func TestRestartComesBackEmptyOnTheSamePort(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := New(t)
	c := s.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	before, err := c.Info(ctx, "server").Result()
	require.NoError(t, err)

	s.Restart(t)

	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 5*time.Second, 20*time.Millisecond, "the same client reconnects")
	require.Equal(t, int64(0), c.Exists(ctx, "k").Val(), "the data is gone")
	after, err := c.Info(ctx, "server").Result()
	require.NoError(t, err)
	require.NotEqual(t, runID(before), runID(after), "another server")
}

func runID(info string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
			return v
		}
	}
	return ""
}
