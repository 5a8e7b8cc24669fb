package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
)

// countingPool counts the statements run through Exec.
type countingPool struct {
	*pgxpool.Pool
	execs int
}

func (p *countingPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.execs++
	return p.Pool.Exec(ctx, sql, args...)
}

// DeleteInBatches runs its statement until a batch comes back short: 7 old rows in batches
// of 2 take 4 statements, and the new rows stay.
func TestDeleteInBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	_, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (owner, key, created_at)
		SELECT 'k', 'old-' || g, now() - interval '2 days' FROM generate_series(1, 7) g
		UNION ALL SELECT 'k', 'new-' || g, now() FROM generate_series(1, 3) g`)
	require.NoError(t, err)
	db := &countingPool{Pool: pool}

	n, err := postgres.DeleteInBatches(ctx, db, `DELETE FROM idempotency_keys WHERE (owner, key) IN (
		SELECT owner, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)`, time.Now().Add(-24*time.Hour), 2)
	require.NoError(t, err)
	require.EqualValues(t, 7, n)
	require.Equal(t, 4, db.execs, "batches of 2: 2+2+2+1")
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&left))
	require.Equal(t, 3, left)
}
