package idempotency

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := NewStore(pool, 0)

	a, st, err := s.Claim(ctx, "key-a", "k1")
	require.NoError(t, err)
	require.Nil(t, st, "a new key is ours")
	require.NotNil(t, a)

	_, _, err = s.Claim(ctx, "key-a", "k1")
	require.ErrorIs(t, err, ErrInFlight)
	b, st, err := s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st, "keys are scoped to the API key")

	h := NewHasher("POST", "/api/v1/jobs", "", "application/json")
	require.NoError(t, h.Drain(strings.NewReader(`{"samples":[]}`)))
	sum := h.Sum()
	require.NoError(t, a.Complete(ctx, sum, Response{Status: 202, Body: []byte(`{"id":"x"}`), Location: "/api/v1/jobs/x"}))

	c, st, err := s.Claim(ctx, "key-a", "k1")
	require.NoError(t, err)
	require.Nil(t, c)
	require.NotNil(t, st)
	resp, err := st.Replay(sum)
	require.NoError(t, err)
	require.Equal(t, 202, resp.Status)
	require.Equal(t, `{"id":"x"}`, string(resp.Body))
	require.Equal(t, "/api/v1/jobs/x", resp.Location)

	other := NewHasher("POST", "/api/v1/jobs", "", "application/json")
	require.NoError(t, other.Drain(strings.NewReader(`{"samples":[1]}`)))
	_, err = st.Replay(other.Sum())
	require.ErrorIs(t, err, ErrMismatch)

	// A released key can be claimed again.
	require.NoError(t, b.Release(ctx))
	b, st, err = s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st)

	// An abandoned in-flight claim (its lease lapsed) is taken over; the old holder can
	// neither renew, answer nor release it any more.
	_, err = pool.Exec(ctx, `UPDATE idempotency_keys SET lease_expires = now() - interval '1 second' WHERE owner = 'key-b'`)
	require.NoError(t, err)
	taken, st, err := s.Claim(ctx, "key-b", "k1")
	require.NoError(t, err)
	require.Nil(t, st)
	require.NotNil(t, taken)
	require.ErrorIs(t, b.Renew(ctx), ErrLeaseLost)
	require.ErrorIs(t, b.Complete(ctx, sum, Response{Status: 200, Body: []byte(`{}`)}), ErrLeaseLost)
	require.NoError(t, b.Release(ctx))
	_, _, err = s.Claim(ctx, "key-b", "k1")
	require.ErrorIs(t, err, ErrInFlight, "the old holder's release leaves the new claim alone")
	require.NoError(t, taken.Renew(ctx))
}

func TestLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)

	t.Run("DefaultAndBound", func(t *testing.T) {
		require.Equal(t, DefaultLease, NewStore(pool, 0).Lease())
		require.Equal(t, MaxLease, NewStore(pool, time.Hour).Lease())
	})

	t.Run("HeldClaimOutlivesItsLease", func(t *testing.T) {
		s := NewStore(pool, time.Second)
		c, _, err := s.Claim(ctx, "o", "held")
		require.NoError(t, err)
		held, stop := c.Hold(ctx)
		// Past several leases the key is still in flight, because Hold renews it.
		deadline := time.Now().Add(3500 * time.Millisecond)
		for time.Now().Before(deadline) {
			_, _, err := s.Claim(ctx, "o", "held")
			require.ErrorIs(t, err, ErrInFlight)
			require.NoError(t, held.Err())
			time.Sleep(50 * time.Millisecond)
		}
		require.False(t, stop(), "the lease was not lost")
		require.NoError(t, c.Complete(ctx, []byte("h"), Response{Status: 200, Body: []byte("{}")}))
	})

	t.Run("UnrenewedClaimIsTakenOver", func(t *testing.T) {
		s := NewStore(pool, time.Second)
		_, _, err := s.Claim(ctx, "o", "dead") // its process died: nobody renews it
		require.NoError(t, err)
		_, _, err = s.Claim(ctx, "o", "dead")
		require.ErrorIs(t, err, ErrInFlight, "within the lease")
		var c *Claim
		require.Eventually(t, func() bool {
			c, _, err = s.Claim(ctx, "o", "dead")
			return err == nil && c != nil
		}, 5*time.Second, 20*time.Millisecond, "taken over once the lease lapsed")
	})

	t.Run("HolderLearnsItLostTheKey", func(t *testing.T) {
		s := NewStore(pool, time.Second)
		c, _, err := s.Claim(ctx, "o", "lost")
		require.NoError(t, err)
		held, stop := c.Hold(ctx)
		// Another process takes the key over (as it would after a pause of this one).
		_, err = pool.Exec(ctx, `UPDATE idempotency_keys SET claim_token = gen_random_uuid() WHERE owner = 'o' AND key = 'lost'`)
		require.NoError(t, err)
		select {
		case <-held.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the request's context was not cancelled")
		}
		require.ErrorIs(t, context.Cause(held), ErrLeaseLost)
		require.True(t, stop())
	})
}

func TestDeleteOlderThan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := NewStore(pool, 0)
	_, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (owner, key, created_at) VALUES
		('k', 'old', now() - interval '25 hours'), ('k', 'old-done', now() - interval '2 days'), ('k', 'new', now())`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE idempotency_keys SET status = 'done' WHERE key = 'old-done'`)
	require.NoError(t, err)

	n, err := s.DeleteOlderThan(ctx, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "answered or not")
	var keys []string
	rows, err := pool.Query(ctx, `SELECT key FROM idempotency_keys`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"new"}, keys)
}
