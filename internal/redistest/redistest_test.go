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

func TestSentinelFailsOver(t *testing.T) {
	t.Parallel()
	g := NewSentinel(t)
	ctx := context.Background()
	c := g.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	old := g.StopMaster(t)
	require.Eventually(t, func() bool {
		a, err := g.MasterAddr(ctx)
		return err == nil && a != old
	}, 30*time.Second, 50*time.Millisecond, "a sentinel promotes the replica")
	require.Eventually(t, func() bool { return c.Set(ctx, "k2", "v", 0).Err() == nil }, 30*time.Second, 50*time.Millisecond)
}

func TestClusterServesEverySlot(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 3, 1)
	ctx := context.Background()
	cc := c.Client(t)
	masters := map[string]bool{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		require.NoError(t, cc.Set(ctx, k, "v", 0).Err())
		m, err := c.MasterOf(ctx, k)
		require.NoError(t, err)
		masters[m] = true
	}
	require.Len(t, masters, 3, "eight keys spread over the three masters")
	m, err := c.MasterOf(ctx, "a")
	require.NoError(t, err)
	c.StopNode(t, m)
	c.WaitFailover(t, m, 30*time.Second)
	require.Eventually(t, func() bool {
		err := cc.Set(ctx, "a", "w", 0).Err()
		if err != nil {
			t.Log(err)
		}
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)
	m2, err := c.MasterOf(ctx, "a")
	require.NoError(t, err)
	require.NotEqual(t, m, m2, "the replica took over the slot")
}
