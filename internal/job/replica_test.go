package job

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
)

// With DATABASE_READ_URL on a streaming replica: a job just written is found (Get reads the
// primary), its results are complete even while the replica lags (they are read on the
// primary until the replica has replayed as far), and lists read the replica, lag included.
func TestReadReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rep := pgtest.NewReplicated(t)
	primary, err := postgres.Open(ctx, rep.PrimaryURL, 4)
	require.NoError(t, err)
	t.Cleanup(primary.Close)
	replica, err := postgres.Open(ctx, rep.ReplicaURL, 4)
	require.NoError(t, err)
	t.Cleanup(replica.Close)
	models := modelreg.New("../../models", nil, slog.New(slog.DiscardHandler))
	svc, err := NewService(Config{Pool: primary, ReadPool: replica, Models: models, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	reads := func(db string) float64 { return testutil.ToFloat64(svc.metrics.reads.WithLabelValues(db)) }

	insertJob := func(items int) uuid.UUID {
		t.Helper()
		id, err := uuid.NewV7()
		require.NoError(t, err)
		_, err = primary.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold,
			total, processed, chunk_size, input_format, deadline_at, finished_at)
			VALUES ($1, $2, 'a', 'succeeded', 'v1.0.0', 'standard', 0.5, $3, $3, 100, 'ndjson', now() + interval '1 hour', now())`,
			id, owner.ID, items)
		require.NoError(t, err)
		_, err = primary.Exec(ctx, `INSERT INTO job_results (job_id, item_index, prediction, confidence)
			SELECT $1, g, 0.25, 0.75 FROM generate_series(0, $2::int - 1) g`, id, items)
		require.NoError(t, err)
		return id
	}
	listed := func(id uuid.UUID) bool {
		t.Helper()
		jobs, _, err := svc.List(ctx, owner, ListFilter{Limit: 100})
		require.NoError(t, err)
		return slices.ContainsFunc(jobs, func(j Job) bool { return j.ID == id })
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// fromReplica reads results until a read is served by the replica (the primary's WAL
	// moves on by itself too, so the replica may be behind it for an instant) and returns them.
	fromReplica := func(id uuid.UUID, after int) []Result {
		t.Helper()
		var res []Result
		eventually("a results read served by the replica", func() bool {
			before := reads("replica")
			var err error
			res, _, err = svc.Results(ctx, owner, id, after, 1000)
			require.NoError(t, err)
			return reads("replica") == before+1
		})
		return res
	}

	// Caught up: results and lists come from the replica.
	a := insertJob(100)
	eventually("the replica replays job a", func() bool { return listed(a) })
	require.Len(t, fromReplica(a, -1), 100)

	// Lagging: replay paused, then a new job on the primary.
	pause(ctx, t, replica)
	primaryBefore := reads("primary")
	replicaBefore := reads("replica")
	b := insertJob(250)
	j, err := svc.Get(ctx, owner, b)
	require.NoError(t, err, "a job just written is found: Get reads the primary")
	require.Equal(t, StatusSucceeded, j.Status)
	res, _, err := svc.Results(ctx, owner, b, -1, 1000)
	require.NoError(t, err)
	require.Len(t, res, 250, "every result of the succeeded job, though the replica has none yet")
	var streamed int
	require.NoError(t, svc.StreamResults(ctx, owner, b, func(Result) error { streamed++; return nil }))
	require.Equal(t, 250, streamed)
	require.Equal(t, primaryBefore+2, reads("primary"), "both result reads went to the primary")
	require.False(t, listed(b), "the list reads the lagging replica: b is not in it yet")
	require.Equal(t, replicaBefore+1, reads("replica"))

	// Replay resumed: the replica catches up and serves b's results again.
	_, err = replica.Exec(ctx, `SELECT pg_wal_replay_resume()`)
	require.NoError(t, err)
	eventually("the replica replays job b", func() bool { return listed(b) })
	require.Len(t, fromReplica(b, 99), 150)

	// The replica gone: lists and results fall back to the primary.
	require.NoError(t, rep.Replica.Halt())
	require.True(t, listed(b))
	res, _, err = svc.Results(ctx, owner, b, -1, 10)
	require.NoError(t, err)
	require.Len(t, res, 10)
}

func pause(ctx context.Context, t *testing.T, replica *pgxpool.Pool) {
	t.Helper()
	_, err := replica.Exec(ctx, `SELECT pg_wal_replay_pause()`)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		require.NoError(t, replica.QueryRow(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&state))
		if state == "paused" {
			return
		}
		require.False(t, time.Now().After(deadline), "replay not paused within 30s")
		time.Sleep(20 * time.Millisecond)
	}
}
