package auth

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func TestStaticKeys(t *testing.T) {
	t.Parallel()
	k := NewKeys([]string{"ops:0123456789abcdef0123", "fedcba9876543210fedc"}, nil)
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

	k := NewKeys(nil, pool)
	p, err := k.Authenticate(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "analytics", p.Name)
	_, err = k.Authenticate(ctx, key+"x")
	require.ErrorIs(t, err, ErrUnauthorized)

	_, err = pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now()`)
	require.NoError(t, err)
	_, err = NewKeys(nil, pool).Authenticate(ctx, key)
	require.ErrorIs(t, err, ErrUnauthorized, "a revoked key is refused")

	_, err = Create(ctx, pool, "  ")
	require.Error(t, err)
}
