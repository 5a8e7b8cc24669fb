package job

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
)

func TestStoreReconcileQueries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := NewStore(pool)
	// newJob inserts a job in status, untouched for idle, due in due (negative: past its
	// deadline), with one chunk per status in chunks.
	newJob := func(status, idle, due string, chunks ...string) uuid.UUID {
		t.Helper()
		id := uuid.New()
		_, err := pool.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing, confidence_threshold,
				chunk_size, input_format, deadline_at, status, total, chunks_total, created_at, updated_at)
			VALUES ($1, 'o', 'o', 'v2.0.0', 'standard', 0.5, 10, 'ndjson', now() + $4::interval, $2, 10, $5,
				now() - interval '2 hours', now() - $3::interval)`, id, status, idle, due, len(chunks))
		require.NoError(t, err)
		for i, cs := range chunks {
			_, err := pool.Exec(ctx, `INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features, status)
				VALUES ($1, $2, $3, 10, ''::bytea, $4)`, id, i, i*10, cs)
			require.NoError(t, err)
		}
		return id
	}
	oldQueued := newJob("queued", "1 minute", "1 hour")
	newQueued := newJob("queued", "1 second", "1 hour")
	stalled := newJob("running", "1 minute", "1 hour", "done", "pending", "done", "pending")
	busy := newJob("running", "1 second", "1 hour", "pending")
	unfinished := newJob("running", "1 minute", "1 hour", "done", "done")
	expiredQueued := newJob("queued", "1 second", "-1 second")
	expiredRunning := newJob("running", "1 second", "-1 minute", "pending")
	newJob("succeeded", "1 minute", "-1 hour", "done")

	expired, err := s.Expired(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []uuid.UUID{expiredQueued, expiredRunning}, expired, "active jobs past their deadline; terminal ones never")

	stale, err := s.Stale(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{oldQueued}, stale, "queued jobs idle for the grace period")
	stale, err = s.Stale(ctx, 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []uuid.UUID{oldQueued, newQueued, expiredQueued}, stale, "no grace: every queued job")

	chunks, err := s.PendingChunks(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, map[uuid.UUID][]int{stalled: {1, 3}}, chunks, "pending chunks of running jobs idle for the grace period")
	chunks, err = s.PendingChunks(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, map[uuid.UUID][]int{stalled: {1, 3}, busy: {0}, expiredRunning: {0}}, chunks)

	left, err := s.Unfinished(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{unfinished}, left, "running with every chunk done")
	left, err = s.Unfinished(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{unfinished}, left)
}

func TestStoreDeleteOlderThan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := NewStore(pool)
	newJob := func(status, finishedAgo string) uuid.UUID {
		t.Helper()
		id := uuid.New()
		_, err := pool.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold,
				total, chunk_size, input_format, deadline_at, created_at, finished_at)
			VALUES ($1, 'k', 'k', $2, 'v1.0.0', 'standard', 0.5, 1, 10, 'ndjson', now(), now() - interval '30 days',
				CASE WHEN $3 = '' THEN NULL ELSE now() - $3::interval END)`, id, status, finishedAgo)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features) VALUES ($1, 0, 0, 1, '\x00')`, id)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO job_results (job_id, item_index, prediction, confidence) VALUES ($1, 0, 0.1, 0.9)`, id)
		require.NoError(t, err)
		return id
	}
	var old []uuid.UUID
	for _, status := range []string{"succeeded", "failed", "cancelled", "succeeded", "failed", "cancelled", "succeeded"} {
		old = append(old, newJob(status, "8 days"))
	}
	recent := newJob("succeeded", "1 day")
	running := newJob("running", "")

	n, err := s.DeleteOlderThan(ctx, time.Now().Add(-7*24*time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, len(old), n, "every old terminal job, over more than one batch")
	count := func(sql string, args ...any) int {
		var c int
		require.NoError(t, pool.QueryRow(ctx, sql, args...).Scan(&c))
		return c
	}
	require.Zero(t, count(`SELECT count(*) FROM jobs WHERE id = ANY($1)`, old))
	require.Zero(t, count(`SELECT count(*) FROM job_results WHERE job_id = ANY($1)`, old), "results go with their job")
	require.Equal(t, 2, count(`SELECT count(*) FROM jobs WHERE id IN ($1, $2)`, recent, running))
	require.Equal(t, 2, count(`SELECT count(*) FROM job_results`))

	n, err = s.DeleteOlderThan(ctx, time.Now())
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "a running job is never deleted")
}
