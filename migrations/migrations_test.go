package migrations_test

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/migrations"
)

// emptyDatabase creates a database with no tables and returns a pool on it; it is dropped at
// the end of the test.
func emptyDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := pgtest.AdminURL(t)
	name := "predq_migrations_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, err)
	pool, err := postgres.Open(ctx, postgres.WithDatabase(admin, name), 4)
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		if conn, err := pgx.Connect(context.Background(), admin); err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(context.Background())
		}
	})
	return pool
}

// upTo returns the migrations up to version, inclusive.
func upTo(t *testing.T, version int) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		require.NoError(t, err)
		if v <= version {
			b, err := fs.ReadFile(migrations.FS, e.Name())
			require.NoError(t, err)
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}

type row struct {
	id        uuid.UUID
	requestID string
	userID    string
	features  []float64
	createdAt time.Time
}

func rows(t *testing.T, pool *pgxpool.Pool) map[uuid.UUID]row {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT id, request_id, coalesce(user_id, ''), input_features, created_at FROM predictions`)
	require.NoError(t, err)
	out := map[uuid.UUID]row{}
	var r row
	_, err = pgx.ForEachRow(rs, []any{&r.id, &r.requestID, &r.userID, &r.features, &r.createdAt}, func() error {
		out[r.id] = r
		return nil
	})
	require.NoError(t, err)
	return out
}

// Migration 00018 moves every stored prediction to a server id: no row is lost, each gets the
// id that prediction.DerivedID gives its request id and created_at (what the worker gives the
// id-less record of an older persist task, so that a replay of it is skipped), the rows that the
// store renamed for a reused request id get that request id back, and request_id is no longer
// unique. Its Down goes back without losing rows.
func TestPredictionServerIDMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := emptyDatabase(t)
	require.NoError(t, postgres.Migrate(ctx, pool, upTo(t, 17), nil))

	t1 := time.Date(2026, 11, 20, 8, 0, 0, 123456000, time.UTC)
	t2 := t1.Add(1500 * time.Microsecond)
	renamed := "dup~" + strconv.FormatInt(t2.UnixMicro(), 36)
	old := []struct {
		requestID, wantRequestID, user string
		at                             time.Time
	}{
		{"plain", "plain", "k1", t1},
		{"dup", "dup", "k1", t1},
		{renamed, "dup", "k1", t2},                 // the store's rename of a reused request id
		{"tilde~zz", "tilde~zz", "k2", t2},         // a "~" of the client's own: kept
		{"dup~1", "dup~1", "", t1.Add(-time.Hour)}, // no user id
	}
	for i, o := range old {
		var user any
		if o.user != "" {
			user = o.user
		}
		_, err := pool.Exec(ctx, `INSERT INTO predictions (request_id, input_features, prediction, confidence, prediction_class,
			model_version, preprocessing, confidence_threshold, user_id, latency_ms, created_at)
			VALUES ($1, $2, 0.25, 0.75, 'negative', 'v1.0.0', 'standard', 0.5, $3, 1.5, $4)`,
			o.requestID, []float64{float64(i), 0.5}, user, o.at)
		require.NoError(t, err)
	}

	require.NoError(t, postgres.Migrate(ctx, pool, migrations.FS, nil))
	got := rows(t, pool)
	require.Len(t, got, len(old), "no row lost")
	for i, o := range old {
		id := prediction.DerivedID(o.wantRequestID, o.at)
		r, ok := got[id]
		require.True(t, ok, "row %d (%s) has the derived id %s", i, o.requestID, id)
		require.Equal(t, o.wantRequestID, r.requestID)
		require.Equal(t, o.user, r.userID)
		require.Equal(t, []float64{float64(i), 0.5}, r.features)
		require.True(t, o.at.Equal(r.createdAt))
		require.EqualValues(t, 7, r.id.Version())
	}

	// request_id is a correlation column now; the id is the key.
	store := prediction.NewStore(pool)
	n, err := store.Insert(ctx, []prediction.Record{{ID: prediction.NewID("dup", t2), RequestID: "dup", UserID: "k1",
		Features: []float64{9}, Prediction: 0.9, Confidence: 0.9, PredictionClass: "positive", ModelVersion: "v1.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.5, CreatedAt: t2.Add(time.Second)}})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	newest, err := store.Get(ctx, "k1", "dup")
	require.NoError(t, err)
	require.Equal(t, []float64{9}, newest.Features)
	// The id-less record of a persist task enqueued before the migration is the row it became.
	n, err = store.Insert(ctx, []prediction.Record{{RequestID: "dup", UserID: "k1", Features: []float64{2, 0.5},
		Prediction: 0.25, Confidence: 0.75, PredictionClass: "negative", ModelVersion: "v1.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.5, CreatedAt: t2}})
	require.NoError(t, err)
	require.EqualValues(t, 0, n, "the replay of a record stored before the migration is skipped")

	rs, err := pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'predictions' ORDER BY 1`)
	require.NoError(t, err)
	indexes, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"predictions_created_at_idx", "predictions_pkey", "predictions_user_created_idx", "predictions_user_request_idx"}, indexes)

	// Down: a bigint id again, request ids unique again (the newer "dup" renamed), no row lost.
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.DownTo(ctx, 17)
	require.NoError(t, err)
	var total, distinct int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT request_id) FROM predictions`).Scan(&total, &distinct))
	require.Equal(t, len(old)+1, total)
	require.Equal(t, total, distinct)
	var oldest []float64
	require.NoError(t, pool.QueryRow(ctx, `SELECT input_features FROM predictions WHERE request_id = 'dup'`).Scan(&oldest))
	require.Equal(t, []float64{1, 0.5}, oldest, "the oldest keeps the request id")
	var renamedBack int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM predictions WHERE request_id = $1`, renamed).Scan(&renamedBack))
	require.Equal(t, 1, renamedBack, "the second is renamed as the store named it")
}
