package maintenance

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
)

// v7At returns a UUIDv7 of time at (random bits after its milliseconds).
func v7At(at time.Time) uuid.UUID {
	var id uuid.UUID
	_, _ = rand.Read(id[:])
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(at.UnixMilli()))
	copy(id[:6], ms[2:])
	id[6] = id[6]&0x0f | 0x70
	id[8] = id[8]&0x3f | 0x80
	return id
}

func insertPrediction(t *testing.T, pool *pgxpool.Pool, id uuid.UUID, at time.Time) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO predictions (id, request_id, input_features, prediction, confidence,
		prediction_class, model_version, preprocessing, confidence_threshold, latency_ms, created_at)
		VALUES ($1, $3, '{1}', 0.5, 0.5, 'negative', 'v1.0.0', 'standard', 0.5, 1, $2)`, id, at, id.String())
	require.NoError(t, err)
}

func partitionOf(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) string {
	t.Helper()
	var name string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT tableoid::regclass::text FROM predictions WHERE id = $1`, id).Scan(&name))
	return name
}

func partitionExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok))
	return ok
}

// EnsurePartitions creates the missing days, and moves the rows that the default partition
// took for want of one into their day's partition, none lost.
func TestEnsurePartitionsCreatesDaysAheadAndMovesDefaultRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	now := time.Now().UTC()
	far := now.AddDate(0, 0, 20) // beyond the days the migration created
	farID := v7At(far)
	insertPrediction(t, pool, farID, far)
	require.Equal(t, "predictions_default", partitionOf(t, pool, farID), "no partition yet: the default one takes it")
	oddID := uuid.New() // not a v7: stays in the default partition
	insertPrediction(t, pool, oddID, now)

	n, err := EnsurePartitions(ctx, pool, now, 25)
	require.NoError(t, err)
	require.Equal(t, len(postgres.PartitionedTables)*(25-7), n, "days 8..25 ahead, of every partitioned table")
	require.Equal(t, postgres.PartitionName("predictions", far), partitionOf(t, pool, farID), "moved into its day")
	require.Equal(t, "predictions_default", partitionOf(t, pool, oddID))
	var total int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM predictions`).Scan(&total))
	require.Equal(t, 2, total)

	n, err = EnsurePartitions(ctx, pool, now, 25)
	require.NoError(t, err)
	require.Zero(t, n, "idempotent")
	for _, table := range []string{"predictions", "job_results"} {
		parts, err := postgres.Partitions(ctx, pool, table)
		require.NoError(t, err)
		require.Len(t, parts, 26)
		require.Equal(t, now.Truncate(24*time.Hour), parts[0].Day)
	}
}

// Retention drops the day partitions that hold only old rows, with one DROP TABLE each, and
// deletes by rows the old rows of the partition that straddles the cutoff and of the default
// partition; nothing younger goes. job_results' partitions go when every job of their day goes.
func TestRetentionDropsOldPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	now := time.Now().UTC()
	_, err := EnsurePartitions(ctx, pool, now.AddDate(0, 0, -40), 41)
	require.NoError(t, err)

	// Predictions: a day 35 days back (all old), the day of the cutoff (30 days back: old and
	// young rows), yesterday, and an old row in the default partition.
	cutoff := now.Add(-720 * time.Hour)
	oldDay := now.AddDate(0, 0, -35)
	for range 50 {
		insertPrediction(t, pool, v7At(oldDay), oldDay)
	}
	edge := cutoff.Truncate(24 * time.Hour)
	before, after := edge.Add(time.Minute), edge.Add(24*time.Hour-time.Minute)
	if !before.Before(cutoff) || !after.After(cutoff) {
		t.Fatalf("test setup: %v and %v do not straddle %v", before, after, cutoff)
	}
	insertPrediction(t, pool, v7At(before), before)
	young := v7At(after)
	insertPrediction(t, pool, young, after)
	insertPrediction(t, pool, v7At(now.AddDate(0, 0, -1)), now.AddDate(0, 0, -1))
	insertPrediction(t, pool, uuid.New(), now.AddDate(0, 0, -31))

	// Jobs: day A (10 days back) has one old finished job, day B (9 days back) an old finished
	// job and a running one (its day stays).
	job := func(at time.Time, status string) uuid.UUID {
		id := v7At(at)
		_, err := pool.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold,
			total, processed, chunk_size, input_format, deadline_at, created_at, finished_at)
			VALUES ($1, 'k', 'k', $2, 'v1.0.0', 'standard', 0.5, 100, 0, 10, 'ndjson', now(), $3,
			CASE WHEN $2 = 'running' THEN NULL ELSE $3::timestamptz + interval '1 minute' END)`, id, status, at)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO job_results (job_id, item_index, prediction, confidence) SELECT $1, g, 0.1, 0.9 FROM generate_series(0, 99) g`, id)
		require.NoError(t, err)
		return id
	}
	dayA, dayB := now.AddDate(0, 0, -10), now.AddDate(0, 0, -9)
	job(dayA, "succeeded")
	job(dayB, "failed")
	running := job(dayB, "running")

	d, err := RunRetention(ctx, stores(pool), Retention{})
	require.NoError(t, err)
	require.Equal(t, int64(50+1+1), d.Predictions, "the old day, the old row of the cutoff's day, the old default row")
	require.Equal(t, int64(2), d.Jobs)

	require.False(t, partitionExists(t, pool, postgres.PartitionName("predictions", oldDay)), "the old day's partition is dropped")
	require.True(t, partitionExists(t, pool, postgres.PartitionName("predictions", edge)), "the cutoff's day stays")
	require.Equal(t, postgres.PartitionName("predictions", edge), partitionOf(t, pool, young))
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM predictions`).Scan(&left))
	require.Equal(t, 2, left, "the young row of the cutoff's day and yesterday's")

	require.False(t, partitionExists(t, pool, postgres.PartitionName("job_results", dayA)), "day A's results are dropped")
	require.True(t, partitionExists(t, pool, postgres.PartitionName("job_results", dayB)), "day B has an active job")
	var results int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM job_results`).Scan(&results))
	require.Equal(t, 100, results, "the running job's results only")
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM job_results WHERE job_id = $1`, running).Scan(&results))
	require.Equal(t, 100, results)

	// Inserts for a dropped day still succeed: the default partition takes them.
	id := v7At(oldDay)
	insertPrediction(t, pool, id, now)
	require.Equal(t, "predictions_default", partitionOf(t, pool, id))
}
