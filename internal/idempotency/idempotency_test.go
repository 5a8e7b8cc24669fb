package idempotency

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := NewStore(pool)

	st, err := s.Claim(ctx, "key-a", "k1")
	require.NoError(t, err)
	require.Nil(t, st, "a new key is ours")

	_, err = s.Claim(ctx, "key-a", "k1")
	require.ErrorIs(t, err, ErrInFlight)
	st, err = s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st, "keys are scoped to the API key")

	h := NewHasher("POST", "/api/v1/jobs", "", "application/json")
	require.NoError(t, h.Drain(strings.NewReader(`{"samples":[]}`)))
	sum := h.Sum()
	require.NoError(t, s.Complete(ctx, "key-a", "k1", sum, Response{Status: 202, Body: []byte(`{"id":"x"}`), ResourceID: "x"}))

	st, err = s.Claim(ctx, "key-a", "k1")
	require.NoError(t, err)
	require.NotNil(t, st)
	resp, err := st.Replay(sum)
	require.NoError(t, err)
	require.Equal(t, 202, resp.Status)
	require.Equal(t, `{"id":"x"}`, string(resp.Body))

	other := NewHasher("POST", "/api/v1/jobs", "", "application/json")
	require.NoError(t, other.Drain(strings.NewReader(`{"samples":[1]}`)))
	_, err = st.Replay(other.Sum())
	require.ErrorIs(t, err, ErrMismatch)

	// A released key can be claimed again.
	require.NoError(t, s.Release(ctx, "key-b", "k1"))
	st, err = s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st)

	// An abandoned in-flight claim is taken over.
	_, err = pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '11 minutes' WHERE owner = 'key-b'`)
	require.NoError(t, err)
	st, err = s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st)
}
