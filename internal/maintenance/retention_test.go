package maintenance

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/webhook"
)

// stores are the feature stores that the worker hands to retention.
func stores(pool *pgxpool.Pool) Stores {
	return Stores{Predictions: prediction.NewStore(pool), Jobs: job.NewStore(pool),
		Idempotency: idempotency.NewStore(pool, 0), Deliveries: webhook.NewStore(pool, nil)}
}

func TestRetentionDeletesWhatIsOldAndNothingElse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	// Predictions: 7 old, 3 new.
	for i := range 10 {
		age := "1 day"
		if i < 7 {
			age = "31 days"
		}
		exec(`INSERT INTO predictions (id, request_id, input_features, prediction, confidence, prediction_class, model_version,
			preprocessing, confidence_threshold, latency_ms, created_at)
			VALUES ($1, $2, '{1}', 0.5, 0.5, 'negative', 'v1.0.0', 'standard', 0.5, 1, now() - $3::interval)`, uuid.Must(uuid.NewV7()), uuid.NewString(), age)
	}
	// Jobs: an old finished one (with a chunk, results and a delivery), a new finished one,
	// and an old one still running (never deleted).
	job := func(status, finishedAgo string) uuid.UUID {
		id := uuid.New()
		exec(`INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold, total,
			processed, chunk_size, input_format, deadline_at, created_at, finished_at)
			VALUES ($1, 'k', 'k', $2, 'v1.0.0', 'standard', 0.5, 1, 0, 10, 'ndjson', now(), now() - interval '30 days',
			CASE WHEN $3 = '' THEN NULL ELSE now() - $3::interval END)`, id, status, finishedAgo)
		exec(`INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features) VALUES ($1, 0, 0, 1, '\x00')`, id)
		exec(`INSERT INTO job_results (job_id, item_index, prediction, confidence) VALUES ($1, 0, 0.1, 0.9)`, id)
		exec(`INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, status) VALUES ($1, $2, 'job.succeeded', 'http://x', '{}', 'delivered')`, uuid.New(), id)
		return id
	}
	oldDone := job("succeeded", "8 days")
	newDone := job("failed", "1 day")
	running := job("running", "")
	// Idempotency keys: one old, one new.
	exec(`INSERT INTO idempotency_keys (owner, key, created_at) VALUES ('k', 'old', now() - interval '25 hours'), ('k', 'new', now())`)

	d, err := RunRetention(ctx, stores(pool), Retention{})
	require.NoError(t, err)
	require.Equal(t, Deleted{Predictions: 7, Jobs: 1, IdempotencyKeys: 1}, d)

	count := func(sql string, args ...any) int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, sql, args...).Scan(&n))
		return n
	}
	require.Equal(t, 3, count(`SELECT count(*) FROM predictions`))
	require.Zero(t, count(`SELECT count(*) FROM jobs WHERE id = $1`, oldDone))
	require.Zero(t, count(`SELECT count(*) FROM job_results WHERE job_id = $1`, oldDone), "results go with their job")
	require.Zero(t, count(`SELECT count(*) FROM webhook_deliveries WHERE job_id = $1`, oldDone))
	require.Equal(t, 2, count(`SELECT count(*) FROM jobs WHERE id IN ($1, $2)`, newDone, running))
	require.Equal(t, 2, count(`SELECT count(*) FROM job_results`))
	require.Equal(t, 1, count(`SELECT count(*) FROM idempotency_keys WHERE key = 'new'`))

	d, err = RunRetention(ctx, stores(pool), Retention{Predictions: time.Hour})
	require.NoError(t, err)
	require.Equal(t, int64(3), d.Predictions, "a shorter age deletes the rest")
}
