package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Finished deliveries past the age go with their attempts; pending ones (the reconciler
// still drives them) and recent ones stay.
func TestStoreDeleteOlderThan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := setupStore(t)
	insert := func(status, ago string) uuid.UUID {
		t.Helper()
		id := uuid.New()
		_, err := b.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, event_type, url, payload, status, created_at)
			VALUES ($1, 'job.succeeded', 'https://hooks.example.com/a', '{}', $2, now() - $3::interval)`, id, status, ago)
		require.NoError(t, err)
		_, err = b.pool.Exec(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, duration_ms, at) VALUES ($1, 1, 1, now())`, id)
		require.NoError(t, err)
		return id
	}
	oldDelivered, oldFailed := insert("delivered", "8 days"), insert("failed", "8 days")
	oldPending := insert("pending", "8 days")
	recent := insert("delivered", "1 day")

	n, err := s.DeleteOlderThan(ctx, time.Now().Add(-7*24*time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	var left []uuid.UUID
	rows, err := b.pool.Query(ctx, `SELECT id FROM webhook_deliveries`)
	require.NoError(t, err)
	for rows.Next() {
		var id uuid.UUID
		require.NoError(t, rows.Scan(&id))
		left = append(left, id)
	}
	require.NoError(t, rows.Err())
	require.ElementsMatch(t, []uuid.UUID{oldPending, recent}, left)
	var attempts int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_attempts WHERE delivery_id IN ($1, $2)`, oldDelivered, oldFailed).Scan(&attempts))
	require.Zero(t, attempts, "attempts go with their delivery")
}
