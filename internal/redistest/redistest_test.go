package redistest

import (
	"context"
	"testing"

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
