package auth

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func TestStaticKeys(t *testing.T) {
	t.Parallel()
	k := NewKeys([]string{"ops:0123456789abcdef0123", "fedcba9876543210fedc"}, nil, nil)
	p, err := k.Authenticate(context.Background(), "0123456789abcdef0123")
	require.NoError(t, err)
	require.Equal(t, "ops", p.Name)
	p, err = k.Authenticate(context.Background(), "fedcba9876543210fedc")
	require.NoError(t, err)
	require.Equal(t, "static", p.Name)
	for _, bad := range []string{"", "0123456789abcdef012", "ops:0123456789abcdef0123", "x"} {
		_, err := k.Authenticate(context.Background(), bad)
		require.ErrorIs(t, err, ErrUnauthorized, bad)
	}
}

func TestStoredKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	key, err := Create(ctx, pool, "analytics")
	require.NoError(t, err)
	require.Regexp(t, `^pq_[A-Za-z0-9_-]{43}$`, key)

	var stored []byte
	require.NoError(t, pool.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE name = 'analytics'`).Scan(&stored))
	require.NotContains(t, string(stored), key, "only a hash is stored")

	k := NewKeys(nil, pool, nil)
	p, err := k.Authenticate(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "analytics", p.Name)
	_, err = k.Authenticate(ctx, key+"x")
	require.ErrorIs(t, err, ErrUnauthorized)

	_, err = pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now()`)
	require.NoError(t, err)
	_, err = NewKeys(nil, pool, nil).Authenticate(ctx, key)
	require.ErrorIs(t, err, ErrUnauthorized, "a revoked key is refused")

	_, err = Create(ctx, pool, "  ")
	require.Error(t, err)
}

func TestUnknownKeysAreBoundedAndCoalesced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	reg := prometheus.NewRegistry()
	k := NewKeys(nil, pool, reg)
	lookups := func(result string) float64 { return testutil.ToFloat64(k.lookups.WithLabelValues(result)) }

	t.Run("concurrent callers of one key share a lookup, and it is remembered", func(t *testing.T) {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				<-start
				_, err := k.Authenticate(ctx, "unknown-key-shared-by-all")
				require.ErrorIs(t, err, ErrUnauthorized)
			})
		}
		close(start)
		wg.Wait()
		_, err := k.Authenticate(ctx, "unknown-key-shared-by-all")
		require.ErrorIs(t, err, ErrUnauthorized)
		require.Equal(t, 1.0, lookups("unknown"))
	})

	t.Run("the unknown keys remembered stay under the cap", func(t *testing.T) {
		n := MaxUnknownKeys + 500
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					_, err := k.Authenticate(ctx, fmt.Sprintf("random-key-%08d", i))
					require.ErrorIs(t, err, ErrUnauthorized)
				}
			})
		}
		wg.Wait()
		require.Equal(t, MaxUnknownKeys, k.unknownKeys())
		require.Equal(t, float64(n+1), lookups("unknown"))
		require.Equal(t, 0.0, lookups("error"))
	})
}
